//! The redb file itself: opened for writing (created when absent) or read-only, with redb's open
//! failures and panics turned into errors that name the file and tell the operator what to do.
//! Used by [`Wal::open`](super::Wal::open), the tools' open, and the reopen after an I/O error.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{Builder, Database, DatabaseError, ReadOnlyDatabase, StorageError};

use super::migrate::MigrateError;
use super::{WalConfig, WalError};

/// Open the redb file, mapping each failure to what the operator should do.
pub(super) fn open_database(
    path: &Path,
    dir: &Path,
    config: &WalConfig,
) -> Result<Database, WalError> {
    let mut builder = Builder::new();
    builder
        .set_cache_size(config.cache_bytes)
        .set_check_integrity_on_open(config.verify_on_open);
    let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    let opened = guard(path, || {
        if exists {
            builder.open(path)
        } else {
            builder.create(path)
        }
    })?;
    opened.map_err(|e| open_error(e, path, dir))
}

/// Open the redb file read-only (no write at all); `None` when it needs a repair (not closed
/// cleanly), which only a writable open does.
pub(super) fn open_read_only(
    path: &Path,
    dir: &Path,
    config: &WalConfig,
) -> Result<Option<ReadOnlyDatabase>, WalError> {
    let mut builder = Builder::new();
    builder.set_cache_size(config.cache_bytes);
    match guard(path, || builder.open_read_only(path))? {
        Ok(db) => Ok(Some(db)),
        Err(DatabaseError::RepairAborted) => Ok(None),
        Err(e) => Err(open_error(e, path, dir)),
    }
}

/// What a failed redb open means for the operator.
fn open_error(e: DatabaseError, path: &Path, dir: &Path) -> WalError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            WalError::Locked {
                dir: dir.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(version) => WalError::CorruptStore {
            path: path.to_path_buf(),
            detail: format!("written in redb file format {version}, which this build cannot read"),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => WalError::CorruptStore {
            path: path.to_path_buf(),
            detail,
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            WalError::CorruptStore {
                path: path.to_path_buf(),
                detail: io.to_string(),
            }
        }
        other => WalError::Open {
            path: path.to_path_buf(),
            source: other,
        },
    }
}

/// redb may panic (debug assertions) on a file altered behind its back: report that as corruption
/// of the named file instead of crashing the process.
pub(super) fn guard<T>(path: &Path, body: impl FnOnce() -> T) -> Result<T, WalError> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "redb panicked while reading it".to_string());
        WalError::CorruptStore {
            path: path.to_path_buf(),
            detail,
        }
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
