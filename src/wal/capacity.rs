//! Capacity: what a payload costs on disk ([`allocation_estimate`], summed in `used_bytes`), when the
//! WAL counts as full ([`Wal::is_full`], also on a nearly full volume) and giving freed pages back
//! to the file system ([`Wal::compact`]).

use std::path::Path;

use super::file::Db;
use super::tables::{CHUNK_BYTES, CHUNK_PAGE_RUN, META, read_used, store};
use super::{Wal, WalError};

/// redb page size: the smallest allocation a large value takes.
const PAGE_BYTES: u64 = 4096;
/// Leaf header, key and offsets stored next to a large value (an estimate).
const VALUE_OVERHEAD_BYTES: u64 = 128;
/// `maybe_compact` runs only when the file holds at least this much more than twice the live bytes.
const COMPACT_SLACK_BYTES: u64 = 64 << 20;

/// Disk bytes redb allocates for one stored payload copy: full chunks take one 64 KiB page run each,
/// the last partial chunk a power-of-two run (≥ 4 KiB). This is what `used_bytes` adds per copy.
pub fn allocation_estimate(stored_len: u64) -> u64 {
    let full = stored_len / CHUNK_BYTES;
    let rest = stored_len % CHUNK_BYTES;
    let tail = if rest == 0 {
        0
    } else {
        (rest + VALUE_OVERHEAD_BYTES)
            .next_power_of_two()
            .max(PAGE_BYTES)
    };
    full * CHUNK_PAGE_RUN + tail
}

impl Wal {
    /// Bytes counted against `max_bytes`: [`allocation_estimate`] of every stored payload copy
    /// (records and dead letters). Headers and delivery rows (~100 B each) are not counted.
    pub fn used_bytes(&self) -> Result<u64, WalError> {
        self.read(|tx| {
            let meta = tx.open_table(META).map_err(store)?;
            read_used(&meta)
        })
    }

    /// Length of `wal.redb` on disk; shrinks only on compaction.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.inner.path).map_or(0, |m| m.len())
    }

    /// True when `append` would refuse with [`WalError::Full`]: the scheduler stops querying.
    /// Also true when the volume has less than `min_free_bytes` free (whatever fills it).
    pub fn is_full(&self) -> Result<bool, WalError> {
        if self.used_bytes()? >= self.inner.config.max_bytes {
            return Ok(true);
        }
        let reserve = self.inner.config.min_free_bytes;
        Ok(volume_free_bytes(&self.inner.dir).is_some_and(|free| free < reserve))
    }

    /// Compact when the file holds much more than the live data (backlog drained): call it from a
    /// drain loop when idle. Waits for in-flight operations. Returns whether it compacted.
    pub(crate) fn maybe_compact(&self) -> Result<bool, WalError> {
        let slack = COMPACT_SLACK_BYTES.min(self.inner.config.max_bytes / 4);
        let threshold = self.used_bytes()?.saturating_mul(2).saturating_add(slack);
        if self.file_bytes() <= threshold {
            return Ok(false);
        }
        self.compact()
    }

    /// Give freed pages back to the file system now. Blocks every other operation meanwhile.
    pub fn compact(&self) -> Result<bool, WalError> {
        let mut guard = self
            .inner
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let db = match &mut *guard {
            Db::Writable(db) => db,
            Db::ReadOnly { .. } => return Err(WalError::ReadOnly),
            Db::Closed => return Err(self.closed()),
        };
        let before = std::fs::metadata(&self.inner.path).map_or(0, |m| m.len());
        let compacted = db.compact().map_err(store);
        drop(guard);
        let compacted = compacted.inspect_err(|e| self.close_after_io_error(e))?;
        let after = std::fs::metadata(&self.inner.path).map_or(0, |m| m.len());
        tracing::info!(path = %self.inner.path.display(), before, after, "WAL compacted");
        Ok(compacted)
    }
}

/// Free bytes for unprivileged users on the volume holding `dir`; `None` if it cannot be read.
pub(crate) fn volume_free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}
