//! The durable write-ahead log between the transform and the sinks (docs/design.md#wal).
//!
//! The scheduler appends one record per (exporter, window) ([`Wal::append_encoded`]) — the window's
//! encoded `prompb::WriteRequest` plus a versioned header — and only then may anything push it. One
//! drain loop per output reads records oldest-first per exporter ([`Wal::next_pending`]), pushes them
//! and records the outcome ([`Wal::ack`], [`Wal::retry_later_from`], [`Wal::dead_letter_at`]). A
//! record leaves the WAL in the transaction where its last target output acks or dead-letters it.
//!
//! # Durability contract
//!
//! Promised once `append` (or any other mutating call) returns `Ok`:
//! - the change is committed by redb with `Durability::Immediate`: data pages, redb's XXH3 checksums
//!   and the commit slot are written and `fsync`ed before the call returns (its own commit, or the
//!   one it shares with the writes that arrived with it: [`commit`], docs/design.md#group-commit);
//! - so it survives a process crash (kill -9, OOM kill) and a power loss or kernel crash, given a disk
//!   that honours `fsync` (no lying write cache);
//! - the record, its pending marks and the exporter's advanced watermark are ONE transaction: after a
//!   crash either all are there or none is (then the window was not acknowledged to the scheduler,
//!   which re-queries it: Kusto still has the data);
//! - a commit torn by a crash fails redb's checksums and is rolled back to the previous commit on the
//!   next open (redb repairs the file; this reads the whole file once).
//!
//! Not promised:
//! - corruption the disk introduces later, beyond what redb's checksums catch on repair and what our
//!   own per-payload CRC-32 catches on read: a payload that fails its CRC is reported as
//!   [`WalError::CorruptRecord`] naming the record, never returned as data;
//! - a deleted, truncated or replaced `wal.redb`, a full file system, or two processes on one
//!   directory (refused with [`WalError::Locked`]). Only a missing `wal.redb` starts a new store:
//!   an existing one that is empty, shorter than redb's header or otherwise not a store is refused
//!   ([`WalError::CorruptStore`]), never replaced;
//! - exactly-once delivery: a record pushed but not yet acked at a crash is pushed again.
//!
//! With [`WalConfig::verify_on_open`] (default on) every writable open (the service's, and the
//! `adxexporter wal` tools' `requeue` and `purge --yes`) verifies every page checksum, so a file
//! altered while adxexporter was stopped is refused ([`WalError::CorruptStore`]) instead of trusted.
//! It costs one read of the file per start. The tools' reports (`stats`, `list`, `dead-letters`,
//! `purge` without `--yes`) verify the same way without writing: redb's read-only mode has no
//! such check, so redb opens a copy-on-write view of the file writable (`view.rs`), its writes
//! kept in memory, while a read-only handle holds the reader lock. So `run` and every `wal`
//! subcommand give the same verdict on a file. redb can also panic (assertions) on a damaged file,
//! at open or while reading: every open, and every transaction of the tools, runs under a guard
//! that reports the panic as [`WalError::CorruptStore`] naming the file, without a panic message.
//!
//! # On-disk format (schema version 1)
//!
//! One redb 4.x file, `<dir>/wal.redb`. Integers in keys are redb's native `i64` (ordered
//! numerically); windows are Kusto ticks (100 ns since 0001-01-01). Values are prost messages defined
//! in `record.rs` with documented field numbers; the tables are defined in `tables.rs`.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `format` = `adxexporter-wal`, `schema_version` = u32 LE, `used_bytes` = u64 LE |
//! | `records` | (exporter uid, window start) | `RecordEnvelope` v1: version, uid, namespace, name, generation, window start/end, created, compression, target outputs, payload length and CRC-32, sample count |
//! | `payloads` | (scope, uid, window start, chunk u32) | the `WriteRequest` protobuf, snappy raw (block) compressed (plain when snappy saves under 10%: the envelope's `compression`), in chunks of 63 KiB; scope `""` = the live record, an output name = that output's dead-letter copy |
//! | `pending` | (output, uid, window start) | `PendingState`: attempts, next_attempt_at, last_error, resume_from (requests of the window the output already accepted) |
//! | `dead_letters` | (output, uid, window start) | `DeadLetterEnvelope` v1: version, output, reason, response body (≤ 4 KiB), time, attempts (the refused push included), the record's envelope, the refused request (where a requeue resumes) |
//! | `exporters` | uid | `ExporterState`: watermark (end of the newest appended window), forgotten, namespace, name |
//!
//! An (output, record) delivery is pending while its `pending` row exists, dead-lettered while its
//! `dead_letters` row exists (its payload copy is kept under scope = output, so `requeue` can
//! re-deliver), and acked otherwise. Header and payload live in separate tables so scans (stats,
//! next_pending) never read payload pages. Schema changes are steps in `migrate.rs`,
//! one doc each under `migrations/`.
//!
//! # Capacity
//!
//! `used_bytes` = [`allocation_estimate`] of every stored payload copy (records and dead letters).
//! redb allocates a large value in a power-of-two run of 4 KiB pages, so a 4.1 MiB value would take
//! 8 MiB (and be written as such); payloads are therefore stored in 63 KiB chunks that each fill a
//! 64 KiB run, which keeps disk use and write volume at about 1× the payload. `append` refuses with
//! [`WalError::Full`] once `used_bytes >= max_bytes`; the scheduler then pauses querying. Dead letters
//! count: purge or requeue them. Freed pages are reused at once but the file shrinks only on
//! [`Wal::compact`]; [`Wal::maybe_compact`] does it when the file exceeds twice the live bytes plus
//! slack — call it when a drain loop is idle. Size the volume at about `max_bytes` plus that slack.
//!
//! # Lifecycle: exporters, outputs and record keys over time
//!
//! - A record key (exporter uid, window start) belongs to ONE append for as long as anything of it
//!   is stored (the record, a pending mark or a dead letter): `append` refuses windows before the
//!   exporter's watermark, the watermark only moves forward, and the exporter's watermark row stays
//!   while the exporter has records OR dead letters.
//! - `forget_exporter` (resource deleted): its appended records are still delivered; its watermark
//!   row goes once it has neither records nor dead letters (`purge` of its last dead letter drops
//!   it too). Until then a late append of that uid still cannot reuse a dead letter's key.
//! - `requeue` of a dead letter: when the record has left, it comes back from the dead letter's
//!   copy; when it is still in the WAL (other outputs pending), it is the same append, and the
//!   output is pending on it again. A live record under that key that is a different append
//!   (header or payload checksum differ; only in a store written before the rule above) is never
//!   overwritten nor merged: `requeue` fails with [`WalError::RequeueConflict`] and changes nothing.
//! - An output configured before but not now: on open, its pending deliveries become dead letters
//!   (reason "output X is no longer configured"), so they neither block record removal nor vanish;
//!   `requeue` restores them once the output is configured again, `purge` drops them.
//! - The `adxexporter wal` subcommands open the store themselves, so they need the exporter stopped
//!   (redb's file lock; [`WalError::Locked`] otherwise). They use [`Wal::open_existing`], which
//!   creates nothing, never migrates and skips the "output no longer configured" step above (the
//!   tool does not know the outputs): opening changes nothing (except redb's repair of a store a
//!   crash left open, or of one redb's read-only open cannot read but the service's open would
//!   repair: those get the service's writable open); only `requeue`/`purge` write.
//!
//! # Usage
//!
//! All calls block on disk IO: from async code run them on tokio's blocking pool with [`blocking`]
//! (or `tokio::task::spawn_blocking`). `Wal` is an `Arc` inside: clone it into each task.
//!
//! - Scheduler (`src/schedule/scheduler.rs`): [`Wal::watermark`], raised with
//!   [`Wal::raise_watermark`] when the status / adx-mon's condition is newer (another replica
//!   exported those windows), [`Wal::is_full`] before querying, [`Wal::append_encoded`] after the
//!   transform, which writes the protobuf bytes itself ([`Wal::append`] encodes a `WriteRequest`)
//!   ([`WalError::Full`]: pause; [`WalError::WindowBeforeWatermark`]: a bug).
//!   [`Wal::forget_exporter`] (resource deleted) and [`Wal::set_watermark_if_absent`] are not called
//!   by the service yet, only by tests: a deleted resource's watermark row stays.
//! - Drain loop per output (`src/sink/drain.rs`): `let mut changes = wal.subscribe();` then loop:
//!   [`Wal::next_pending`] `(output, Ticks::now(), n)`; for each, [`Wal::read_encoded`] (verified,
//!   not decoded: remote write POSTs the stored bytes when the window is one request, the rest is
//!   decoded with [`EncodedWindow::decode`]), push from the record's `resume_from`, then
//!   [`Wal::ack`], [`Wal::retry_later_from`] (backoff computed by the drain loop) or
//!   [`Wal::dead_letter_at`]. When the batch is empty: [`Wal::next_due`]; when nothing is pending at
//!   all, [`Wal::maybe_compact`]; then sleep until the next due time (at most 30 s) or
//!   `changes.changed()`, whichever comes first. A [`WalError::CorruptRecord`] from `read_encoded`
//!   or from decoding is dead-lettered ([`Wal::dead_letter`]), not retried. [`Wal::read_payload`]
//!   reads and decodes in one call (tests, benches).
//! - Status and metrics: [`Wal::stats`], [`Wal::dead_letters`], and [`Wal::next_pending`] with
//!   `Ticks::MAX` (each exporter's oldest pending window, to report the outputs retrying it).
//! - `adxexporter wal` (`src/cmd/wal.rs`): [`Wal::stats`], [`Wal::list`], [`Wal::dead_letters`],
//!   [`Wal::requeue`], [`Wal::purge`]. [`Wal::read_dead_letter_payload`] and [`Wal::compact`] have
//!   no caller outside tests (the drain loops compact through `maybe_compact`).
//!
//! ```
//! use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
//! use adxexporter::time::Ticks;
//! use adxexporter::wal::{ExporterRef, RecordHeader, Wal, WalConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, ["remote_write"])).unwrap();
//! let header = RecordHeader {
//!     exporter: ExporterRef::new("uid-1", "monitoring", "cpu"),
//!     generation: 1,
//!     window_start: Ticks(0),
//!     window_end: Ticks(600_000_000),
//!     created: Ticks::now(),
//!     outputs: vec![], // empty = every configured output
//! };
//! let request = WriteRequest::new(vec![TimeSeries {
//!     labels: vec![Label::new("__name__", "cpu")],
//!     samples: vec![Sample { value: 1.0, timestamp: 0 }],
//! }]);
//! let id = wal.append(&header, &request).unwrap(); // fsynced when this returns
//! assert_eq!(wal.watermark("uid-1").unwrap(), Some(Ticks(600_000_000)));
//!
//! let batch = wal.next_pending("remote_write", Ticks::now(), 16).unwrap();
//! assert_eq!(batch[0].id, id);
//! assert_eq!(wal.read_payload(&id).unwrap(), request);
//! wal.ack("remote_write", &id).unwrap(); // last output acked: the record leaves
//! assert!(wal.next_pending("remote_write", Ticks::now(), 16).unwrap().is_empty());
//! ```
//!
//! # Source files
//!
//! `Wal` is one type whose `impl` blocks are spread over files, one job each:
//!
//! - `mod.rs`: this contract, the public types and [`blocking`];
//! - `record.rs`: the stored prost messages, payload compression and CRC checks;
//! - `migrate.rs`: schema versions and the migration steps;
//! - `tables.rs`: the redb tables, their keys, payload chunks and single-row reads and writes;
//! - `handle.rs`: the `Wal` handle, its transactions, closing after an I/O error and reopening;
//! - `file.rs`: the redb file opened for writing or for a report, its failures and panics as named
//!   errors;
//! - `view.rs`: the copy-on-write view of the file through which the reports verify and read it;
//! - `open.rs`: [`Wal::open`] and [`Wal::open_existing`] (migration, outputs no longer configured);
//! - `append.rs`: appends, watermarks and window checks;
//! - `delivery.rs`: the drain loops' calls (due records, payload reads, ack, retry, dead letter);
//! - `lifecycle.rs`: when a delivery, a dead letter, a record and an exporter's watermark row leave;
//! - `totals.rs`: the running totals of counter and histogram series;
//! - `backfill.rs`: a backfill's uid (its own cursor) and the outputs that refused it;
//! - `admin.rs`: [`Wal::requeue`] and [`Wal::purge`];
//! - `report.rs`: [`Wal::stats`], [`Wal::list`], [`Wal::dead_letters`] and dead-letter payloads;
//! - `capacity.rs`: `used_bytes` accounting, [`Wal::is_full`] and compaction;
//! - `tests.rs`: unit tests (the model, crash and tool tests are `tests/wal_*.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::time::Ticks;

mod admin;
mod append;
mod backfill;
mod capacity;
mod commit;
mod delivery;
mod file;
mod handle;
mod lifecycle;
pub(crate) mod migrate;
mod open;
pub(crate) mod record;
mod report;
mod tables;
#[cfg(test)]
mod tests;
pub(crate) mod totals;
mod view;

pub(crate) use backfill::{backfill_parent, backfill_uid};
pub use capacity::allocation_estimate;
pub(crate) use capacity::volume_free_bytes;
pub use commit::CommitCounts;
pub use handle::Wal;
pub use migrate::SCHEMA_VERSION;
pub use record::Compression;
pub(crate) use record::EncodedWindow;

/// Runs blocking WAL work off the async threads, on tokio's blocking pool. A panic inside is a bug
/// and is propagated.
pub async fn blocking<T, F>(f: F) -> Result<T, WalError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, WalError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(WalError::Io {
            path: "<WAL task>".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// The store's file name inside `--wal-dir`.
pub const WAL_FILE_NAME: &str = "wal.redb";
/// Default redb page cache: redb's own default (1 GiB) would grow RSS to the backlog size.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// How to open the WAL; built once from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// `--wal-max-bytes`: `append` refuses once `used_bytes` reaches this.
    pub max_bytes: u64,
    /// Names of the configured outputs (e.g. `remote_write`, `otlp`); a record is pending for each.
    pub outputs: Vec<String>,
    /// redb page cache size.
    pub cache_bytes: usize,
    /// Verify every page checksum on open (one full read) so an altered file is refused, not trusted.
    pub verify_on_open: bool,
    /// redb 2-phase commit: two fsyncs per commit instead of one; see the bench report.
    pub two_phase_commit: bool,
    /// Free space the WAL's volume keeps: below it [`Wal::is_full`] is true and querying pauses, so
    /// acks and compaction (which write too) still fit before the disk itself is full.
    pub min_free_bytes: u64,
}

/// Default [`WalConfig::min_free_bytes`].
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

impl WalConfig {
    pub fn new<S: Into<String>>(max_bytes: u64, outputs: impl IntoIterator<Item = S>) -> WalConfig {
        WalConfig {
            max_bytes,
            outputs: outputs.into_iter().map(Into::into).collect(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            verify_on_open: true,
            two_phase_commit: false,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// Identity of a `MetricsExporter` resource; the uid keys its records and watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExporterRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl ExporterRef {
    pub fn new(
        uid: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ExporterRef {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What `append` records about a window besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub exporter: ExporterRef,
    /// `metadata.generation` of the resource that produced the window.
    pub generation: i64,
    /// Inclusive; must be at or after the exporter's watermark.
    pub window_start: Ticks,
    /// Exclusive; becomes the exporter's watermark.
    pub window_end: Ticks,
    pub created: Ticks,
    /// Outputs to deliver to; empty = every configured output. On read: the record's targets.
    pub outputs: Vec<String>,
}

impl RecordHeader {
    pub fn id(&self) -> RecordId {
        RecordId {
            exporter_uid: self.exporter.uid.clone(),
            window_start: self.window_start,
        }
    }
}

/// Key of a record: one per (exporter, window).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub exporter_uid: String,
    pub window_start: Ticks,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.exporter_uid, self.window_start)
    }
}

/// A record due for delivery on one output (`Wal::next_pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub id: RecordId,
    pub header: RecordHeader,
    /// Failed attempts so far on this output.
    pub attempts: u32,
    /// Requests of the window this output already accepted: push from here.
    pub resume_from: u32,
    pub last_error: Option<String>,
    /// Stored (compressed) payload size.
    pub payload_bytes: u64,
}

/// Where one record stands on one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    Pending {
        attempts: u32,
        next_attempt_at: Ticks,
        last_error: Option<String>,
    },
    Acked,
    DeadLettered {
        reason: String,
        /// Delivery attempts, the refused one included (see [`DeadLetter::attempts`]).
        attempts: u32,
    },
}

/// Where a window listed by `Wal::list` stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Its record is in the WAL: at least one output still has it pending.
    Pending,
    /// Its record left the WAL (no output has it pending); the dead letters of the outputs that
    /// refused it hold it until `requeue` or `purge`.
    DeadLettered,
}

/// One window the WAL holds (`Wal::list`): a record still pending for some output, or the dead
/// letters of one that left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecord {
    pub id: RecordId,
    pub header: RecordHeader,
    pub payload_bytes: u64,
    pub state: WindowState,
    /// Each target output's state (only the filter's output, with `WalFilter::output`). For a
    /// [`WindowState::DeadLettered`] window: its dead letters, and its other targets as acked.
    pub deliveries: Vec<(String, DeliveryState)>,
}

/// A record an output refused for good (`Wal::dead_letters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub output: String,
    pub id: RecordId,
    pub header: RecordHeader,
    pub reason: String,
    /// Response body of the endpoint, at most 4 KiB.
    pub body: String,
    pub at: Ticks,
    /// Delivery attempts on this output, the refused push included: 1 for a window refused at its
    /// first push; 0 when nothing was pushed (the output was no longer configured). Dead letters
    /// written by earlier versions did not count the refused push: they show one less.
    pub attempts: u32,
    pub payload_bytes: u64,
}

/// `Wal::stats`: backlog for status, metrics and `adxexporter wal stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStats {
    pub records: u64,
    pub used_bytes: u64,
    pub max_bytes: u64,
    pub file_bytes: u64,
    pub dead_letters: u64,
    /// Every exporter with records or a watermark, by uid.
    pub exporters: Vec<ExporterStats>,
    /// Every configured output, plus any other holding rows, by name.
    pub outputs: Vec<OutputStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterStats {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub watermark: Option<Ticks>,
    pub forgotten: bool,
    pub records: u64,
    pub oldest_window: Option<Ticks>,
    /// When the oldest of its records was appended (`RecordHeader::created`).
    pub oldest_created: Option<Ticks>,
    /// Windows still pending, by output name.
    pub pending_by_output: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStats {
    pub output: String,
    pub configured: bool,
    pub pending: u64,
    /// Start of the oldest window pending for this output.
    pub oldest_pending: Option<Ticks>,
    /// Earliest `next_attempt_at` of any pending row.
    pub next_attempt_at: Option<Ticks>,
    pub dead_letters: u64,
}

impl OutputStats {
    fn new(output: &str, configured: bool) -> OutputStats {
        OutputStats {
            output: output.to_string(),
            configured,
            pending: 0,
            oldest_pending: None,
            next_attempt_at: None,
            dead_letters: 0,
        }
    }
}

/// Selects (output, record) entries for `list`, `dead_letters`, `requeue` and `purge`; `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalFilter {
    pub output: Option<String>,
    pub exporter_uid: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub window_start: Option<Ticks>,
}

impl WalFilter {
    fn matches(&self, output: &str, envelope: &record::RecordEnvelope) -> bool {
        self.output.as_deref().is_none_or(|o| o == output) && self.matches_record(envelope)
    }

    fn matches_record(&self, envelope: &record::RecordEnvelope) -> bool {
        self.exporter_uid
            .as_deref()
            .is_none_or(|u| u == envelope.exporter_uid)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| n == envelope.namespace)
            && self.name.as_deref().is_none_or(|n| n == envelope.name)
            && self
                .window_start
                .is_none_or(|w| w.0 == envelope.window_start)
    }
}

/// How [`Wal::open_existing`] (the `adxexporter wal` tools) opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalAccess {
    /// Reports: verified as the service's open verifies it, through a view that writes nothing to
    /// the file (see the module docs).
    ReadOnly,
    /// `requeue` and `purge`.
    ReadWrite,
}

/// What `purge` drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeScope {
    DeadLetters,
    /// Deliveries still pending: that data will not be delivered to that output.
    Pending,
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(
        "the WAL is full ({used} of {max} bytes used): new windows wait until outputs drain it; raise --wal-max-bytes or purge dead letters (`adxexporter wal purge`)"
    )]
    Full { used: u64, max: u64 },
    #[error(
        "another adxexporter process uses the WAL in {}: stop it first (one process per --wal-dir)",
        dir.display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "{} has schema version {found} but this adxexporter understands up to {supported}: upgrade adxexporter or restore a backup; never deleted automatically",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{} is not a readable adxexporter WAL ({detail}): stop adxexporter, move the file aside (keep it for inspection) and start again with an empty WAL",
        path.display()
    )]
    CorruptStore { path: PathBuf, detail: String },
    #[error(
        "no adxexporter WAL at {}: check --wal-dir (ADXEXPORTER_WAL_DIR); nothing was created",
        path.display()
    )]
    NoStore { path: PathBuf },
    #[error(
        "{} has schema version {found}, older than this adxexporter's {current}: the wal tools never migrate; run `adxexporter run` once (it migrates on start) or use the adxexporter that wrote it",
        path.display()
    )]
    NeedsMigration {
        path: PathBuf,
        found: u32,
        current: u32,
    },
    #[error(
        "the WAL was opened read-only (an `adxexporter wal` report) and cannot be changed through this handle (bug)"
    )]
    ReadOnly,
    #[error("cannot open the WAL {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot create the WAL directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migrating the WAL {} failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        source: migrate::MigrateError,
    },
    #[error(
        "window starting {window_start} of exporter {exporter_uid} is before its watermark {watermark}: windows must be appended in order (scheduler bug)"
    )]
    WindowBeforeWatermark {
        exporter_uid: String,
        window_start: Ticks,
        watermark: Ticks,
    },
    #[error(
        "window [{window_start}, {window_end}) of exporter {exporter_uid:?} is invalid: needs a uid and MIN <= start < end <= MAX"
    )]
    InvalidWindow {
        exporter_uid: String,
        window_start: Ticks,
        window_end: Ticks,
    },
    #[error("record {id} is already in the WAL")]
    DuplicateRecord { id: RecordId },
    #[error("output {output:?} is not configured (configured: {configured:?})")]
    UnknownOutput {
        output: String,
        configured: Vec<String>,
    },
    #[error("an output name is empty: name every output (e.g. remote_write, otlp)")]
    EmptyOutputName,
    #[error("no output configured: a record would have nowhere to go")]
    NoOutputs,
    #[error(
        "record {id} is not pending for output {output} (already acked, dead-lettered or purged)"
    )]
    NotPending { output: String, id: RecordId },
    #[error("record {id} is not dead-lettered for output {output}")]
    NotDeadLettered { output: String, id: RecordId },
    #[error(
        "dead letter {id} of output {output} cannot be requeued: a different record with the same exporter and window is in the WAL (a store written before WAL watermarks outlived dead letters); nothing was requeued: narrow the filter to skip it, requeue it once that record is delivered, or purge it"
    )]
    RequeueConflict { output: String, id: RecordId },
    #[error("record {id} is not in the WAL (delivered or purged)")]
    NotFound { id: RecordId },
    #[error(
        "WAL record {id} is corrupt ({detail}): it cannot be delivered; dead-letter or purge it (`adxexporter wal purge`)"
    )]
    CorruptRecord { id: RecordId, detail: String },
    #[error(
        "WAL table {table} row {key} does not decode ({detail}): the store is damaged; stop adxexporter and move wal.redb aside"
    )]
    CorruptRow {
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("WAL store error: {0}")]
    Store(#[from] redb::Error),
    #[error(
        "the WAL store {} is closed after an I/O error (volume full?): it is reopened automatically once the volume accepts writes; free space on it or grow it",
        path.display()
    )]
    Closed { path: PathBuf },
    #[error(
        "the WAL {} did not keep this write: the commit it shared with other writes failed ({cause}); it is retried like any failed write (volume full? free space on it or grow it)",
        path.display()
    )]
    CommitFailed { path: PathBuf, cause: String },
}
