//! Opening the store: [`Wal::open`] for the service (creates, migrates, dead-letters deliveries of
//! outputs no longer configured), [`Wal::open_existing`] for the `adxexporter wal` tools (changes
//! nothing), and redb's open failures and panics turned into errors that tell the operator what to do.

use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::ReadableTable;
use tokio::sync::watch;

use super::file::{Db, guard, migrate_error, open_database, open_report};
use super::handle::Inner;
use super::migrate::{self};
use super::tables::{WriteTables, record_id, store};
use super::{WAL_FILE_NAME, Wal, WalAccess, WalConfig, WalError};

/// Page cache of a tool-opened store: it reads each row once.
const TOOL_CACHE_BYTES: usize = 8 << 20;

impl Wal {
    /// Open (or create) `<dir>/wal.redb`, apply schema migrations, and dead-letter deliveries pending
    /// for outputs that are no longer configured (see the module docs).
    pub fn open(dir: &Path, config: WalConfig) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if config.outputs.iter().any(String::is_empty) {
            return Err(WalError::EmptyOutputName);
        }
        let path = dir.join(WAL_FILE_NAME);
        let db = open_database(&path, dir, &config)?;
        let prepared =
            guard(&path, || migrate::prepare(&db))?.map_err(|e| migrate_error(&path, e))?;
        if let migrate::Prepared::Migrated { from } = prepared {
            tracing::info!(path = %path.display(), from, to = migrate::SCHEMA_VERSION, "WAL migrated");
        }
        let (changes, _) = watch::channel(0);
        let wal = Wal {
            inner: Arc::new(Inner {
                db: RwLock::new(Db::Writable(db)),
                dir: dir.to_path_buf(),
                path,
                config,
                tool: false,
                changes,
                group: Default::default(),
            }),
        };
        let abandoned = wal.abandon_unconfigured_outputs()?;
        if abandoned > 0 {
            tracing::warn!(
                path = %wal.inner.path.display(),
                abandoned,
                "deliveries pending for outputs no longer configured were dead-lettered; `adxexporter wal requeue` restores them once the output is configured again"
            );
        }
        Ok(wal)
    }

    /// Open an existing store for the `adxexporter wal` tools without changing it: nothing is created
    /// ([`WalError::NoStore`] instead), no migration runs ([`WalError::NeedsMigration`]), and pending
    /// deliveries are never dead-lettered for unconfigured outputs (the tool does not know the
    /// service's outputs; `requeue` therefore accepts any output). `max_bytes` only feeds `stats`.
    /// Only a missing file is [`WalError::NoStore`]: an empty, truncated or damaged one is
    /// [`WalError::CorruptStore`], as [`Wal::open`] refuses it. [`WalAccess::ReadOnly`] verifies every
    /// page checksum as [`Wal::open`] does and writes nothing to the file (mutating calls fail with
    /// [`WalError::ReadOnly`]), except that a store redb's read-only open refuses (not closed cleanly
    /// after a crash, or damaged) gets the writable open `run` does, which repairs a crash's store
    /// as `run` would on start and refuses a damaged one without writing.
    pub(crate) fn open_existing(
        dir: &Path,
        max_bytes: u64,
        access: WalAccess,
    ) -> Result<Wal, WalError> {
        let path = dir.join(WAL_FILE_NAME);
        // Only a missing file is "no WAL here": an empty or damaged one is refused as corrupt.
        if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err(WalError::NoStore { path });
        }
        let mut config = WalConfig::new(max_bytes, Vec::<String>::new());
        config.cache_bytes = TOOL_CACHE_BYTES;
        let db = match access {
            WalAccess::ReadOnly => open_report(&path, dir, &config)?,
            WalAccess::ReadWrite => Db::Writable(open_database(&path, dir, &config)?),
        };
        let found = guard(&path, || match &db {
            Db::Writable(db) => migrate::read_version(db),
            Db::ReadOnly { view, .. } => migrate::read_version(view),
            Db::Closed => Ok(None),
        })?
        .map_err(|e| migrate_error(&path, e))?;
        match found {
            None => return Err(WalError::NoStore { path }),
            Some(found) if found > migrate::SCHEMA_VERSION => {
                return Err(WalError::SchemaTooNew {
                    path,
                    found,
                    supported: migrate::SCHEMA_VERSION,
                });
            }
            Some(found) if found < migrate::SCHEMA_VERSION => {
                return Err(WalError::NeedsMigration {
                    path,
                    found,
                    current: migrate::SCHEMA_VERSION,
                });
            }
            Some(_) => {}
        }
        let (changes, _) = watch::channel(0);
        Ok(Wal {
            inner: Arc::new(Inner {
                db: RwLock::new(db),
                dir: dir.to_path_buf(),
                path,
                config,
                tool: true,
                changes,
                group: Default::default(),
            }),
        })
    }

    fn abandon_unconfigured_outputs(&self) -> Result<usize, WalError> {
        let configured = self.configured_outputs();
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let mut stale = Vec::new();
            for entry in t.pending.iter().map_err(store)? {
                let (k, _) = entry.map_err(store)?;
                let (output, uid, start) = k.value();
                if !configured.contains(output) {
                    stale.push((output.to_string(), record_id(uid, start)));
                }
            }
            for (output, id) in &stale {
                let state = t.take_pending(output, id)?;
                let reason = format!(
                    "output {output} is no longer configured (dead-lettered when the WAL was opened)"
                );
                t.insert_dead_letter(output, id, &reason, "", state.attempts, state.resume_from)?;
                t.finish_if_done(id)?;
            }
            Ok(stale.len())
        })
    }
}
