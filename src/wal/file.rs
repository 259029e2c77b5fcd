//! The redb file itself: opened for writing (created only when absent), or for the tools' reports
//! as a verified view that writes nothing; redb's open failures and panics turned into errors that
//! name the file and tell the operator what to do. Used by [`Wal::open`](super::Wal::open), the
//! tools' open, and the reopen after an I/O error.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use redb::{Builder, Database, DatabaseError, ReadOnlyDatabase, StorageError};

use super::migrate::MigrateError;
use super::view::FileView;
use super::{WalConfig, WalError};

/// The redb handle of a [`Wal`](super::Wal).
pub(super) enum Db {
    /// The service's, and the tools' `requeue` and `purge --yes`.
    Writable(Database),
    /// The tools' reports ([`open_report`]): reads go through `view`, verified on open; `_lock`
    /// holds redb's reader lock on the file meanwhile. Writes are refused ([`WalError::ReadOnly`]).
    ReadOnly {
        view: Database,
        _lock: ReadOnlyDatabase,
    },
    /// Closed after an I/O error (redb refuses everything after one until reopened); the next
    /// operation reopens it, so a full or flaky volume pauses the WAL instead of ending the process.
    Closed,
}

/// redb's file header (magic number, god byte, layout, two commit slots): a shorter file is not a
/// store, whatever it held.
const REDB_HEADER_BYTES: u64 = 320;

/// Open the redb file for writing, mapping each failure to what the operator should do. Only a
/// missing file is created: an existing one, even empty, must be a store (a reset is never silent).
pub(super) fn open_database(
    path: &Path,
    dir: &Path,
    config: &WalConfig,
) -> Result<Database, WalError> {
    let mut builder = Builder::new();
    builder
        .set_cache_size(config.cache_bytes)
        .set_check_integrity_on_open(config.verify_on_open);
    let missing =
        std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    let opened = guard(path, || {
        if missing {
            builder.create(path)
        } else {
            builder.open(path)
        }
    })?;
    opened.map_err(|e| open_error(e, path, dir))
}

/// Open the store for the tools' reports, verified as `run` verifies it and without writing to it:
/// redb's read-only handle holds the reader lock (another process' writer is refused as
/// [`WalError::Locked`]); reads go through a [`FileView`] that redb opened writable with its
/// integrity check, its writes kept in memory. A store redb's read-only open refuses (left open
/// by a crash, or damaged) gets the writable open `run` does on start instead: a crash's store is
/// repaired as `run` would repair it, a damaged one refused as `run` would refuse it.
pub(super) fn open_report(path: &Path, dir: &Path, config: &WalConfig) -> Result<Db, WalError> {
    let mut builder = Builder::new();
    builder.set_cache_size(config.cache_bytes);
    let lock = match guard(path, || builder.open_read_only(path)) {
        Ok(Ok(lock)) => lock,
        Ok(Err(DatabaseError::RepairAborted)) => {
            return open_database(path, dir, config).map(Db::Writable);
        }
        Ok(Err(e)) => match open_error(e, path, dir) {
            WalError::CorruptStore { .. } => {
                return open_database(path, dir, config).map(Db::Writable);
            }
            other => return Err(other),
        },
        Err(_panicked) => return open_database(path, dir, config).map(Db::Writable),
    };
    let file = std::fs::File::open(path).map_err(|e| open_error(io_error(e), path, dir))?;
    let view = FileView::new(file).map_err(|e| open_error(io_error(e), path, dir))?;
    builder.set_check_integrity_on_open(true);
    let view =
        guard(path, || builder.create_with_backend(view))?.map_err(|e| open_error(e, path, dir))?;
    Ok(Db::ReadOnly { view, _lock: lock })
}

fn io_error(e: std::io::Error) -> DatabaseError {
    DatabaseError::Storage(StorageError::Io(e))
}

/// What a failed redb open means for the operator.
fn open_error(e: DatabaseError, path: &Path, dir: &Path) -> WalError {
    let corrupt = |detail: String| WalError::CorruptStore {
        path: path.to_path_buf(),
        detail: short_file(path).unwrap_or(detail),
    };
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            WalError::Locked {
                dir: dir.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(version) => corrupt(format!(
            "written in redb file format {version}, which this build cannot read"
        )),
        DatabaseError::Storage(StorageError::Corrupted(detail)) => corrupt(detail),
        // InvalidData: not a redb file (or an empty one); UnexpectedEof: shorter than its header
        // or its layout says.
        DatabaseError::Storage(StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            corrupt(io.to_string())
        }
        other => WalError::Open {
            path: path.to_path_buf(),
            source: other,
        },
    }
}

/// Why a file too short to be a store is not one, in the operator's words.
fn short_file(path: &Path) -> Option<String> {
    let len = std::fs::metadata(path).ok().filter(|m| m.is_file())?.len();
    match len {
        0 => Some("the file is empty (0 bytes); only a missing wal.redb is created anew".into()),
        n if n < REDB_HEADER_BYTES => Some(format!(
            "the file has only {n} bytes, fewer than a redb header's {REDB_HEADER_BYTES}: truncated"
        )),
        _ => None,
    }
}

thread_local! {
    /// Set while [`guard`] runs its body on this thread: a panic then is reported as an error.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The message and place of the last panic caught by [`guard`] on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that stays silent for panics [`guard`] catches, keeping what they
/// said for its error, and leaves every other panic to the hook it replaces.
fn quiet_hook_for_guarded_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                return previous(info);
            }
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "redb panicked while reading it".to_string());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{message}{place}")));
        }));
    });
}

/// redb may panic (assertions) on a file altered behind its back, at open or later while reading
/// it: report that as corruption of the named file instead of crashing the process, and print no
/// panic message (the error says it all).
pub(super) fn guard<T>(path: &Path, body: impl FnOnce() -> T) -> Result<T, WalError> {
    quiet_hook_for_guarded_panics();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(body));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|_| WalError::CorruptStore {
        path: path.to_path_buf(),
        detail: CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "redb panicked while reading it".to_string()),
    })
}

pub(super) fn migrate_error(path: &Path, e: MigrateError) -> WalError {
    match e {
        MigrateError::TooNew { found, supported } => WalError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        },
        MigrateError::Foreign | MigrateError::MalformedMeta { .. } => WalError::CorruptStore {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        other => WalError::Migration {
            path: path.to_path_buf(),
            source: other,
        },
    }
}
