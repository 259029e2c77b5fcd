//! The [`Wal`] handle: the shared redb database and its transactions, closed after an I/O error and
//! reopened by the next call. Every mutating operation is one write transaction (`Wal::write`),
//! returning only once it is on disk: on its own `Durability::Immediate` commit, or on the one it
//! shares with the writes that arrived with it ([`commit`](super::commit)). Each either happened
//! completely and is on disk, or did not happen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::watch;

use super::commit::{Batch, CommitCounts, Turn};
use super::file::{Db, guard, open_database};
use super::tables::store;
use super::{WalConfig, WalError};

/// The durable WAL. Cheap to clone (an `Arc`); `Send + Sync`. All calls block on disk IO: call them
/// through [`blocking`](super::blocking) (or `tokio::task::spawn_blocking`) in async code.
#[derive(Clone)]
pub struct Wal {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// Read-locked by every transaction; write-locked only by `compact`, which needs `&mut Database`.
    pub(super) db: RwLock<Db>,
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
    pub(super) config: WalConfig,
    /// Opened by [`Wal::open_existing`] (the `adxexporter wal` tools): outputs are not known, so
    /// `requeue` accepts every output and nothing is re-targeted on open.
    pub(super) tool: bool,
    pub(super) changes: watch::Sender<u64>,
    pub(super) group: super::commit::Group,
}

impl Drop for Inner {
    /// redb's close reads the file too (it records the allocator state): for the tools, under
    /// [`guard`] like every other read, so a file gone bad meanwhile cannot end in a panic. A
    /// failure there is dropped: the subcommand's answer is out and nothing is left half-written.
    fn drop(&mut self) {
        if self.tool {
            let db = std::mem::replace(
                self.db
                    .get_mut()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Db::Closed,
            );
            let _ = guard(&self.path, || drop(db));
        }
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Wal {
    /// The store file, `<dir>/wal.redb`.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The directory holding the store (for messages).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configured output names.
    pub fn outputs(&self) -> &[String] {
        &self.inner.config.outputs
    }

    /// The configured output names, as a set.
    pub(super) fn configured_outputs(&self) -> BTreeSet<&str> {
        self.inner
            .config
            .outputs
            .iter()
            .map(String::as_str)
            .collect()
    }

    pub(super) fn resolve_outputs(&self, requested: &[String]) -> Result<Vec<String>, WalError> {
        let configured = &self.inner.config.outputs;
        let wanted = if requested.is_empty() {
            configured
        } else {
            requested
        };
        let mut outputs: Vec<String> = Vec::with_capacity(wanted.len());
        for output in wanted {
            self.check_output(output)?;
            if !outputs.contains(output) {
                outputs.push(output.clone());
            }
        }
        if outputs.is_empty() {
            return Err(WalError::NoOutputs);
        }
        Ok(outputs)
    }

    pub(super) fn check_output(&self, output: &str) -> Result<(), WalError> {
        if self.inner.config.outputs.iter().any(|o| o == output) {
            return Ok(());
        }
        Err(WalError::UnknownOutput {
            output: output.to_string(),
            configured: self.inner.config.outputs.clone(),
        })
    }

    pub(super) fn notify(&self) {
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn db(&self) -> RwLockReadGuard<'_, Db> {
        // A panic elsewhere cannot leave the store half-written (transactions), so poison is moot.
        let read = || (self.inner.db.read()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*read(), Db::Closed) {
            self.reopen();
        }
        read()
    }

    /// Runs `body` in a write transaction and returns once what it wrote is durable.
    pub(super) fn write<T>(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let group = &self.inner.group;
        let ticket = group.begin();
        let alone = ticket.alone;
        let committed = self.with_writable(|db| {
            let mut tx = db.begin_write().map_err(store)?;
            let durability = if alone {
                Durability::Immediate
            } else {
                Durability::None
            };
            tx.set_durability(durability).map_err(store)?;
            tx.set_two_phase_commit(self.inner.config.two_phase_commit);
            match body(&tx) {
                Ok(value) => {
                    let batch = (!alone).then(|| group.join());
                    tx.commit().map_err(store)?;
                    Ok((value, batch))
                }
                Err(e) => {
                    tx.abort().map_err(store)?;
                    Err(e)
                }
            }
        });
        ticket.end(alone && committed.is_ok());
        let (value, batch) = committed?;
        if let Some(batch) = batch {
            self.await_durable(&batch)?;
        }
        Ok(value)
    }

    /// Waits until `batch` is durable, leading its commit when no other writer does.
    fn await_durable(&self, batch: &Batch) -> Result<(), WalError> {
        let group = &self.inner.group;
        loop {
            match group.await_turn(batch) {
                Turn::Done(Ok(())) => return Ok(()),
                Turn::Done(Err(cause)) => {
                    return Err(WalError::CommitFailed {
                        path: self.inner.path.clone(),
                        cause: cause.to_string(),
                    });
                }
                Turn::Lead(mut leader) => {
                    // One empty durable commit persists every non-durable one before it.
                    let outcome = self.with_writable(|db| {
                        let mut tx = db.begin_write().map_err(store)?;
                        leader.close_open();
                        tx.set_two_phase_commit(self.inner.config.two_phase_commit);
                        tx.commit().map_err(store)
                    });
                    leader.finish(outcome.map_err(|e| Arc::from(e.to_string())));
                }
            }
        }
    }

    /// How many durable commits this handle made, and how many writes they carried.
    pub fn commit_counts(&self) -> CommitCounts {
        self.inner.group.counts()
    }

    /// Runs `body` on the writable database; an I/O error closes it (see `close_after_io_error`).
    fn with_writable<T>(
        &self,
        body: impl FnOnce(&Database) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let result = {
            let guard = self.db();
            let db = match &*guard {
                Db::Writable(db) => db,
                Db::ReadOnly { .. } => return Err(WalError::ReadOnly),
                Db::Closed => return Err(self.closed()),
            };
            self.guarded(|| body(db))
        };
        result.inspect_err(|e| self.close_after_io_error(e))
    }

    pub(super) fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let result = {
            let guard = self.db();
            let db: &dyn ReadableDatabase = match &*guard {
                Db::Writable(db) => db,
                Db::ReadOnly { view, .. } => view,
                Db::Closed => return Err(self.closed()),
            };
            self.guarded(|| db.begin_read().map_err(store).and_then(|tx| body(&tx)))
        };
        result.inspect_err(|e| self.close_after_io_error(e))
    }

    /// Runs a transaction. The `adxexporter wal` tools run theirs under [`guard`]: a panic of redb
    /// reading a damaged file is reported as [`WalError::CorruptStore`] naming it, never a crash.
    /// (The service's are verified on open and a panic in one is a bug its supervisor reports.)
    fn guarded<T>(&self, body: impl FnOnce() -> Result<T, WalError>) -> Result<T, WalError> {
        if self.inner.tool {
            guard(&self.inner.path, body)?
        } else {
            body()
        }
    }

    /// After an I/O error redb answers every later call with `PreviousIo` until the database is
    /// closed and reopened: close it now (what was committed is on disk; the failed transaction
    /// was not), and let the next operation reopen it.
    pub(super) fn close_after_io_error(&self, e: &WalError) {
        if !matches!(
            e,
            WalError::Store(redb::Error::Io(_) | redb::Error::PreviousIo)
        ) {
            return;
        }
        let mut guard = (self.inner.db.write()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*guard, Db::Writable(_)) {
            tracing::error!(path = %self.inner.path.display(), "WAL I/O error ({e}); closing the store, it is reopened on the next operation (is the volume full?)");
            *guard = Db::Closed;
            // Still holding the store: no write can join the batch its close loses.
            self.inner.group.lose_open(&e.to_string());
        }
    }

    /// Reopens a store closed by [`Wal::close_after_io_error`]; stays closed if it still fails.
    fn reopen(&self) {
        let mut guard = (self.inner.db.write()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(*guard, Db::Closed) {
            return;
        }
        match open_database(&self.inner.path, &self.inner.dir, &self.inner.config) {
            Ok(db) => {
                tracing::warn!(path = %self.inner.path.display(), "WAL reopened after an I/O error");
                *guard = Db::Writable(db);
            }
            Err(e) => tracing::warn!(path = %self.inner.path.display(), "WAL still closed: {e}"),
        }
    }

    pub(super) fn closed(&self) -> WalError {
        WalError::Closed {
            path: self.inner.path.clone(),
        }
    }
}
