//! The redb-backed [`Wal`]: tables, transactions and the operations the scheduler, the drain loops and
//! the `adxexporter wal` subcommands call. Every mutating operation is one `Durability::Immediate`
//! write transaction, so each either happened completely and is on disk, or did not happen.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use prost::Message;
use redb::{
    Builder, Database, DatabaseError, Durability, ReadOnlyDatabase, ReadableDatabase,
    ReadableTable, StorageError, Table, TableDefinition, WriteTransaction,
};
use tokio::sync::watch;

use super::migrate::{self, MigrateError};
use super::record::{
    self, DeadLetterEnvelope, EncodedWindow, ExporterState, MAX_BODY_BYTES, PendingState,
    RECORD_VERSION, RecordEnvelope,
};
use super::{
    DeadLetter, DeliveryState, ExporterRef, ExporterStats, ListedRecord, OutputStats,
    PendingRecord, PurgeScope, RecordHeader, RecordId, WAL_FILE_NAME, WalAccess, WalConfig,
    WalError, WalFilter, WalStats,
};
use crate::prompb::RemoteWriteEncoder;
use crate::prompb::WriteRequest;
use crate::time::Ticks;

type RecordKey = (&'static str, i64);
type OutputKey = (&'static str, &'static str, i64);
type PayloadKey = (&'static str, &'static str, i64, u32);

/// Payload scope of a live record (output names are never empty).
const LIVE: &str = "";
/// Payloads are stored in chunks of this size: a chunk plus its leaf overhead fills a 64 KiB page
/// run, so a large payload takes about 1× its size on disk and in writes, not up to 2×.
const CHUNK_BYTES: u64 = 64 * 1024 - 1024;
const CHUNK_PAGE_RUN: u64 = 64 * 1024;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<RecordKey, &[u8]> = TableDefinition::new("records");
/// (scope, uid, window start, chunk): scope is `LIVE` for a record's payload, the output name for
/// a dead letter's copy.
const PAYLOADS: TableDefinition<PayloadKey, &[u8]> = TableDefinition::new("payloads");
const PENDING: TableDefinition<OutputKey, &[u8]> = TableDefinition::new("pending");
const DEAD_LETTERS: TableDefinition<OutputKey, &[u8]> = TableDefinition::new("dead_letters");
const EXPORTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("exporters");
const META_USED_BYTES: &str = "used_bytes";

/// redb page size: the smallest allocation a large value takes.
const PAGE_BYTES: u64 = 4096;
/// Leaf header, key and offsets stored next to a large value (an estimate).
const VALUE_OVERHEAD_BYTES: u64 = 128;
/// Page cache of a tool-opened store: it reads each row once.
const TOOL_CACHE_BYTES: usize = 8 << 20;
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

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(RECORDS)?;
    tx.open_table(PAYLOADS)?;
    tx.open_table(PENDING)?;
    tx.open_table(DEAD_LETTERS)?;
    tx.open_table(EXPORTERS)?;
    let mut meta = tx.open_table(META)?;
    if meta.get(META_USED_BYTES)?.is_none() {
        meta.insert(META_USED_BYTES, 0u64.to_le_bytes().as_slice())?;
    }
    Ok(())
}

fn store(e: impl Into<redb::Error>) -> WalError {
    WalError::Store(e.into())
}

/// The durable WAL. Cheap to clone (an `Arc`); `Send + Sync`. All calls block on disk IO: call them
/// from `tokio::task::spawn_blocking` in async code.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read-locked by every transaction; write-locked only by `compact`, which needs `&mut Database`.
    db: RwLock<Db>,
    dir: PathBuf,
    path: PathBuf,
    config: WalConfig,
    /// Opened by [`Wal::open_existing`] (the `adxexporter wal` tools): outputs are not known, so
    /// `requeue` accepts every output and nothing is re-targeted on open.
    tool: bool,
    changes: watch::Sender<u64>,
}

/// The redb handle: writable for the service and the tools' changes, read-only for the tools'
/// reports (a read-only open writes nothing, not even redb's shutdown bookkeeping).
enum Db {
    Writable(Database),
    ReadOnly(ReadOnlyDatabase),
    /// Closed after an I/O error (redb refuses everything after one until reopened); the next
    /// operation reopens it, so a full or flaky volume pauses the WAL instead of ending the process.
    Closed,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("path", &self.inner.path)
            .finish()
    }
}

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
    /// [`WalAccess::ReadOnly`] writes nothing to the file (mutating calls fail with
    /// [`WalError::ReadOnly`]), except that a store not closed cleanly (crash) is opened writable
    /// so redb can repair it, as `run` would on start.
    pub fn open_existing(dir: &Path, max_bytes: u64, access: WalAccess) -> Result<Wal, WalError> {
        let path = dir.join(WAL_FILE_NAME);
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Err(WalError::NoStore { path });
        }
        let mut config = WalConfig::new(max_bytes, Vec::<String>::new());
        config.cache_bytes = TOOL_CACHE_BYTES;
        let db = match access {
            WalAccess::ReadOnly => match open_read_only(&path, dir, &config)? {
                Some(db) => Db::ReadOnly(db),
                None => Db::Writable(open_database(&path, dir, &config)?),
            },
            WalAccess::ReadWrite => Db::Writable(open_database(&path, dir, &config)?),
        };
        let found = guard(&path, || match &db {
            Db::Writable(db) => migrate::read_version(db),
            Db::ReadOnly(db) => migrate::read_version(db),
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
            }),
        })
    }

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

    /// Make `header`'s window durable: insert the record, mark it pending for its outputs and advance
    /// the exporter's watermark to `window_end`, in one fsynced transaction. Returns once on disk.
    pub fn append(
        &self,
        header: &RecordHeader,
        request: &WriteRequest,
    ) -> Result<RecordId, WalError> {
        // The remote-write encoder writes prost's exact bytes (property-tested) at a fraction of the
        // cost of prost's nested `encoded_len` walks.
        let mut encoder = RemoteWriteEncoder::default();
        let plain = encoder.encode_raw(&request.timeseries);
        self.append_encoded(header, plain, request.sample_count() as u64)
    }

    /// `append` for a `WriteRequest` already encoded as protobuf (not compressed) holding `samples`
    /// samples (recorded so remote write can send the stored bytes without decoding them).
    pub fn append_encoded(
        &self,
        header: &RecordHeader,
        write_request: &[u8],
        samples: u64,
    ) -> Result<RecordId, WalError> {
        validate_window(header)?;
        let outputs = self.resolve_outputs(&header.outputs)?;
        let id = header.id();
        let payload = record::encode_payload(write_request).map_err(|e| corrupt(&id, e))?;
        let allocated = allocation_estimate(payload.bytes.len() as u64);
        let envelope = envelope_of(header, outputs, &payload, samples);
        let exporter = ExporterState {
            watermark: header.window_end.0,
            forgotten: false,
            namespace: header.exporter.namespace.clone(),
            name: header.exporter.name.clone(),
        };
        let max = self.inner.config.max_bytes;
        // Only the five tables an append touches, each opened once; `used` is read once.
        self.write(|tx| {
            let mut meta = tx.open_table(META).map_err(store)?;
            let used = read_used(&meta)?;
            if used >= max {
                return Err(WalError::Full { used, max });
            }
            let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
            check_window(&exporters, header)?;
            let mut records = tx.open_table(RECORDS).map_err(store)?;
            let replaced = records
                .insert(key(&id), envelope.encode_to_vec().as_slice())
                .map_err(store)?
                .is_some();
            if replaced {
                // `write` aborts the transaction: the old record stays as it was.
                return Err(WalError::DuplicateRecord { id: id.clone() });
            }
            let mut payloads = tx.open_table(PAYLOADS).map_err(store)?;
            write_payload(&mut payloads, LIVE, &id, &payload.bytes)?;
            let mut pending = tx.open_table(PENDING).map_err(store)?;
            let due = PendingState::default().encode_to_vec();
            for output in &envelope.outputs {
                pending
                    .insert(output_key(output, &id), due.as_slice())
                    .map_err(store)?;
            }
            write_used(&mut meta, used.saturating_add(allocated))?;
            exporters
                .insert(
                    header.exporter.uid.as_str(),
                    exporter.encode_to_vec().as_slice(),
                )
                .map_err(store)?;
            Ok(())
        })?;
        self.notify();
        Ok(id)
    }

    /// End of the newest appended window of this exporter, if the store knows it.
    pub fn watermark(&self, exporter_uid: &str) -> Result<Option<Ticks>, WalError> {
        self.read(|tx| {
            let exporters = tx.open_table(EXPORTERS).map_err(store)?;
            Ok(read_exporter(&exporters, exporter_uid)?.map(|s| Ticks(s.watermark)))
        })
    }

    /// Seed the watermark (from status or adx-mon's condition) when the store has none; returns the
    /// watermark in effect afterwards. Also clears a pending `forget_exporter`.
    pub fn set_watermark_if_absent(
        &self,
        exporter: &ExporterRef,
        watermark: Ticks,
    ) -> Result<Ticks, WalError> {
        self.merge_watermark(exporter, watermark, |stored, _| stored)
    }

    /// Raise the watermark to `watermark` when the store has none or an older one (another replica
    /// exported the windows in between: its status says so, its own WAL delivers them); returns the
    /// watermark in effect afterwards. Never lowers it. Also clears a pending `forget_exporter`.
    pub fn raise_watermark(
        &self,
        exporter: &ExporterRef,
        watermark: Ticks,
    ) -> Result<Ticks, WalError> {
        self.merge_watermark(exporter, watermark, i64::max)
    }

    /// Stores `watermark` for an exporter the store does not know, else `merge(stored, watermark)`.
    fn merge_watermark(
        &self,
        exporter: &ExporterRef,
        watermark: Ticks,
        merge: impl FnOnce(i64, i64) -> i64,
    ) -> Result<Ticks, WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let state = match read_exporter(&t.exporters, &exporter.uid)? {
                Some(mut state) => {
                    state.forgotten = false;
                    state.watermark = merge(state.watermark, watermark.0);
                    state
                }
                None => ExporterState {
                    watermark: watermark.0,
                    forgotten: false,
                    namespace: exporter.namespace.clone(),
                    name: exporter.name.clone(),
                },
            };
            t.put_exporter(&exporter.uid, &state)?;
            Ok(Ticks(state.watermark))
        })
    }

    /// The resource was deleted: its records already appended are still delivered; its watermark is
    /// dropped once it has neither records nor dead letters (at once when none is left).
    pub fn forget_exporter(&self, exporter_uid: &str) -> Result<(), WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let Some(mut state) = read_exporter(&t.exporters, exporter_uid)? else {
                return Ok(());
            };
            state.forgotten = true;
            t.put_exporter(exporter_uid, &state)?;
            t.drop_exporter_if_done(exporter_uid)
        })
    }

    /// For each exporter, its oldest record pending for `output`, if due at `now` (a record in backoff
    /// holds back that exporter's later windows on this output only). Oldest windows first, at most
    /// `limit`.
    pub fn next_pending(
        &self,
        output: &str,
        now: Ticks,
        limit: usize,
    ) -> Result<Vec<PendingRecord>, WalError> {
        self.check_output(output)?;
        self.read(|tx| {
            let pending = tx.open_table(PENDING).map_err(store)?;
            let records = tx.open_table(RECORDS).map_err(store)?;
            let mut due: Vec<Head> = heads(&pending, output)?
                .into_iter()
                .filter(|h| h.state.next_attempt_at <= now.0)
                .collect();
            due.sort_by(|a, b| (a.start, &a.uid).cmp(&(b.start, &b.uid)));
            due.truncate(limit);
            due.into_iter()
                .map(|head| {
                    let id = RecordId {
                        exporter_uid: head.uid,
                        window_start: Ticks(head.start),
                    };
                    let envelope =
                        read_envelope(&records, &id)?.ok_or_else(|| WalError::CorruptRecord {
                            id: id.clone(),
                            detail: format!("pending for {output} but its header is missing"),
                        })?;
                    Ok(PendingRecord {
                        payload_bytes: envelope.payload_len,
                        header: header_of(&envelope),
                        id,
                        attempts: head.state.attempts,
                        resume_from: head.state.resume_from,
                        last_error: non_empty(head.state.last_error),
                    })
                })
                .collect()
        })
    }

    /// Earliest `next_attempt_at` among the records `next_pending` could return for `output`: the
    /// drain loop sleeps until then (or until [`Wal::subscribe`] fires). `None` = nothing pending.
    pub fn next_due(&self, output: &str) -> Result<Option<Ticks>, WalError> {
        self.check_output(output)?;
        self.read(|tx| {
            let pending = tx.open_table(PENDING).map_err(store)?;
            Ok(heads(&pending, output)?
                .iter()
                .map(|h| Ticks(h.state.next_attempt_at))
                .min())
        })
    }

    /// Changes whenever a record becomes pending (append, requeue): drain loops `changed().await`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Decode a record's `WriteRequest`, verifying its checksum.
    pub fn read_payload(&self, id: &RecordId) -> Result<WriteRequest, WalError> {
        self.read_encoded(id)?.decode().map_err(|e| corrupt(id, e))
    }

    /// The stored payload, verified (length, CRC, compression) but not decoded: the snappy
    /// block-compressed `WriteRequest`, which Prometheus remote write can POST as it is, or the plain
    /// protobuf when snappy saved under 10% (see [`record::Compression`]).
    pub fn read_encoded(&self, id: &RecordId) -> Result<EncodedWindow, WalError> {
        let (envelope, stored) = self.read_stored(id)?;
        record::verified_window(&envelope, stored).map_err(|e| corrupt(id, e))
    }

    /// `output` delivered the record; it leaves the WAL when no output has it pending any more.
    pub fn ack(&self, output: &str, id: &RecordId) -> Result<(), WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            t.take_pending(output, id)?;
            t.finish_if_done(id)?;
            Ok(())
        })
    }

    /// `output` failed transiently: count the attempt and keep the record until `next_attempt_at`.
    pub fn retry_later(
        &self,
        output: &str,
        id: &RecordId,
        next_attempt_at: Ticks,
        error: &str,
    ) -> Result<(), WalError> {
        self.retry_later_from(output, id, next_attempt_at, error, None)
    }

    /// [`Wal::retry_later`], also recording how many of the window's requests the output already
    /// accepted (`Some`), so the next attempt resumes there instead of re-sending them: Prometheus
    /// refuses an identical re-send of an older sample as out of order. `None` keeps the stored point.
    pub fn retry_later_from(
        &self,
        output: &str,
        id: &RecordId,
        next_attempt_at: Ticks,
        error: &str,
        resume_from: Option<u32>,
    ) -> Result<(), WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let mut state = t.pending_state(output, id)?;
            state.attempts = state.attempts.saturating_add(1);
            if let Some(r) = resume_from {
                state.resume_from = r;
            }
            state.next_attempt_at = next_attempt_at.0;
            state.last_error = record::cap_text(error, MAX_BODY_BYTES);
            t.pending
                .insert(output_key(output, id), state.encode_to_vec().as_slice())
                .map_err(store)?;
            Ok(())
        })
    }

    /// `output` refused the record for good at its current resume point: see [`Wal::dead_letter_at`].
    pub fn dead_letter(
        &self,
        output: &str,
        id: &RecordId,
        reason: &str,
        body: &str,
    ) -> Result<(), WalError> {
        self.dead_letter_at(output, id, None, reason, body)
    }

    /// `output` refused request `failed_request` of the record for good (`None`: the one its resume
    /// point names): keep the record (payload included) as a dead letter of that output, then drop
    /// the record if no output has it pending any more. A requeue resumes at the refused request,
    /// so the requests the receiver already accepted are not sent again (Prometheus would refuse
    /// them as out of order, and the window would be dead-lettered once more).
    pub fn dead_letter_at(
        &self,
        output: &str,
        id: &RecordId,
        failed_request: Option<u32>,
        reason: &str,
        body: &str,
    ) -> Result<(), WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let state = t.take_pending(output, id)?;
            let failed = failed_request.unwrap_or(state.resume_from);
            t.insert_dead_letter(output, id, reason, body, state.attempts, failed)?;
            t.finish_if_done(id)?;
            Ok(())
        })
    }

    /// Dead letters matching `filter` become pending again (attempts reset) for their output.
    /// Dead letters of outputs not configured now are skipped (opened by [`Wal::open_existing`]:
    /// none are). Returns how many were requeued.
    /// All or nothing: [`WalError::RequeueConflict`] when one collides with a different record.
    pub fn requeue(&self, filter: &WalFilter) -> Result<usize, WalError> {
        let tool = self.inner.tool;
        if let Some(output) = filter.output.as_ref().filter(|_| !tool) {
            self.check_output(output)?;
        }
        let configured = self.configured_outputs();
        let count = self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let matching = t.matching_dead_letters(filter)?;
            let mut count = 0;
            for (output, id) in matching {
                if !tool && !configured.contains(output.as_str()) {
                    continue;
                }
                t.requeue_one(&output, &id)?;
                count += 1;
            }
            Ok(count)
        })?;
        if count > 0 {
            self.notify();
        }
        Ok(count)
    }

    /// Drop dead letters and/or pending deliveries matching `filter` (an operator's explicit choice:
    /// that data is not delivered). Returns how many (output, record) entries were removed.
    pub fn purge(&self, filter: &WalFilter, scope: PurgeScope) -> Result<usize, WalError> {
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            let mut count = 0;
            if matches!(scope, PurgeScope::DeadLetters | PurgeScope::All) {
                let mut uids = BTreeSet::new();
                for (output, id) in t.matching_dead_letters(filter)? {
                    t.remove_dead_letter(&output, &id)?;
                    uids.insert(id.exporter_uid);
                    count += 1;
                }
                for uid in &uids {
                    t.drop_exporter_if_done(uid)?;
                }
            }
            if matches!(scope, PurgeScope::Pending | PurgeScope::All) {
                for (output, id) in t.matching_pending(filter)? {
                    t.take_pending(&output, &id)?;
                    t.finish_if_done(&id)?;
                    count += 1;
                }
            }
            Ok(count)
        })
    }

    /// Counts for status, metrics and `adxexporter wal stats`. Reads headers only, never payloads.
    pub fn stats(&self) -> Result<WalStats, WalError> {
        let file_bytes = self.file_bytes();
        self.read(|tx| {
            let (records, mut exporters) = exporter_stats(tx)?;
            let (dead_letters, outputs) =
                output_stats(tx, &self.inner.config.outputs, &mut exporters)?;
            let meta = tx.open_table(META).map_err(store)?;
            Ok(WalStats {
                records,
                used_bytes: read_used(&meta)?,
                max_bytes: self.inner.config.max_bytes,
                file_bytes,
                dead_letters,
                exporters,
                outputs,
            })
        })
    }

    /// Every record still in the WAL matching `filter`, oldest first per exporter, with each target
    /// output's state.
    pub fn list(&self, filter: &WalFilter) -> Result<Vec<ListedRecord>, WalError> {
        self.read(|tx| {
            let records = tx.open_table(RECORDS).map_err(store)?;
            let pending = tx.open_table(PENDING).map_err(store)?;
            let dead = tx.open_table(DEAD_LETTERS).map_err(store)?;
            let mut out = Vec::new();
            for entry in records.iter().map_err(store)? {
                let (_, value) = entry.map_err(store)?;
                let envelope = record::decode_envelope(value.value())
                    .map_err(|e| corrupt_row("records", "(list)".to_string(), e))?;
                if !filter.matches_record(&envelope) {
                    continue;
                }
                let header = header_of(&envelope);
                let id = header.id();
                let mut deliveries = Vec::new();
                for output in &envelope.outputs {
                    if filter.output.as_ref().is_some_and(|o| o != output) {
                        continue;
                    }
                    let state = delivery_state(&pending, &dead, output, &id)?;
                    deliveries.push((output.clone(), state));
                }
                out.push(ListedRecord {
                    id,
                    header,
                    payload_bytes: envelope.payload_len,
                    deliveries,
                });
            }
            Ok(out)
        })
    }

    /// Dead letters matching `filter`, by output then exporter then window.
    pub fn dead_letters(&self, filter: &WalFilter) -> Result<Vec<DeadLetter>, WalError> {
        self.read(|tx| {
            let dead = tx.open_table(DEAD_LETTERS).map_err(store)?;
            let mut out = Vec::new();
            for entry in dead.iter().map_err(store)? {
                let (_, value) = entry.map_err(store)?;
                let letter = record::decode_dead_letter(value.value())
                    .map_err(|e| corrupt_row("dead_letters", "(list)".to_string(), e))?;
                let Some(envelope) = &letter.record else {
                    return Err(corrupt_row(
                        "dead_letters",
                        letter.output.clone(),
                        "no record header",
                    ));
                };
                if !filter.matches(&letter.output, envelope) {
                    continue;
                }
                let header = header_of(envelope);
                out.push(DeadLetter {
                    id: header.id(),
                    output: letter.output.clone(),
                    header,
                    reason: letter.reason.clone(),
                    body: letter.body.clone(),
                    at: Ticks(letter.dead_lettered_at),
                    attempts: letter.attempts,
                    payload_bytes: envelope.payload_len,
                });
            }
            Ok(out)
        })
    }

    /// Decode a dead letter's payload copy (for inspection), verifying its checksum.
    pub fn read_dead_letter_payload(
        &self,
        output: &str,
        id: &RecordId,
    ) -> Result<WriteRequest, WalError> {
        self.read(|tx| {
            let dead = tx.open_table(DEAD_LETTERS).map_err(store)?;
            let payloads = tx.open_table(PAYLOADS).map_err(store)?;
            let letter = dead
                .get(output_key(output, id))
                .map_err(store)?
                .ok_or_else(|| WalError::NotDeadLettered {
                    output: output.to_string(),
                    id: id.clone(),
                })?;
            let letter = record::decode_dead_letter(letter.value()).map_err(|e| corrupt(id, e))?;
            let envelope = letter
                .record
                .ok_or_else(|| corrupt(id, "dead letter without its record header"))?;
            let stored = read_payload_chunks(&payloads, output, id)?;
            record::decode_payload(&envelope, &stored).map_err(|e| corrupt(id, e))
        })
    }

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
    pub fn maybe_compact(&self) -> Result<bool, WalError> {
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
            Db::ReadOnly(_) => return Err(WalError::ReadOnly),
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

    /// The configured output names, as a set.
    fn configured_outputs(&self) -> BTreeSet<&str> {
        self.inner
            .config
            .outputs
            .iter()
            .map(String::as_str)
            .collect()
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

    fn read_stored(&self, id: &RecordId) -> Result<(RecordEnvelope, Vec<u8>), WalError> {
        self.read(|tx| {
            let records = tx.open_table(RECORDS).map_err(store)?;
            let payloads = tx.open_table(PAYLOADS).map_err(store)?;
            let envelope = read_envelope(&records, id)?
                .ok_or_else(|| WalError::NotFound { id: id.clone() })?;
            let stored = read_payload_chunks(&payloads, LIVE, id)?;
            Ok((envelope, stored))
        })
    }

    fn resolve_outputs(&self, requested: &[String]) -> Result<Vec<String>, WalError> {
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

    fn check_output(&self, output: &str) -> Result<(), WalError> {
        if self.inner.config.outputs.iter().any(|o| o == output) {
            return Ok(());
        }
        Err(WalError::UnknownOutput {
            output: output.to_string(),
            configured: self.inner.config.outputs.clone(),
        })
    }

    fn notify(&self) {
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

    fn write<T>(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let result = {
            let guard = self.db();
            let db = match &*guard {
                Db::Writable(db) => db,
                Db::ReadOnly(_) => return Err(WalError::ReadOnly),
                Db::Closed => return Err(self.closed()),
            };
            (|| {
                let mut tx = db.begin_write().map_err(store)?;
                tx.set_durability(Durability::Immediate).map_err(store)?;
                tx.set_two_phase_commit(self.inner.config.two_phase_commit);
                match body(&tx) {
                    Ok(value) => {
                        tx.commit().map_err(store)?;
                        Ok(value)
                    }
                    Err(e) => {
                        tx.abort().map_err(store)?;
                        Err(e)
                    }
                }
            })()
        };
        result.inspect_err(|e| self.close_after_io_error(e))
    }

    fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let result = {
            let guard = self.db();
            let tx = match &*guard {
                Db::Writable(db) => db.begin_read(),
                Db::ReadOnly(db) => db.begin_read(),
                Db::Closed => return Err(self.closed()),
            };
            tx.map_err(store).and_then(|tx| body(&tx))
        };
        result.inspect_err(|e| self.close_after_io_error(e))
    }

    /// After an I/O error redb answers every later call with `PreviousIo` until the database is
    /// closed and reopened: close it now (what was committed is on disk; the failed transaction
    /// was not), and let the next operation reopen it.
    fn close_after_io_error(&self, e: &WalError) {
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

    fn closed(&self) -> WalError {
        WalError::Closed {
            path: self.inner.path.clone(),
        }
    }
}

/// Free bytes for unprivileged users on the volume holding `dir`; `None` if it cannot be read.
pub fn volume_free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Open the redb file, mapping each failure to what the operator should do.
fn open_database(path: &Path, dir: &Path, config: &WalConfig) -> Result<Database, WalError> {
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
fn open_read_only(
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
fn guard<T>(path: &Path, body: impl FnOnce() -> T) -> Result<T, WalError> {
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

fn migrate_error(path: &Path, e: MigrateError) -> WalError {
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

/// All tables of one write transaction, opened once (redb refuses to open a table twice).
struct WriteTables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    records: Table<'t, RecordKey, &'static [u8]>,
    payloads: Table<'t, PayloadKey, &'static [u8]>,
    pending: Table<'t, OutputKey, &'static [u8]>,
    dead: Table<'t, OutputKey, &'static [u8]>,
    exporters: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<WriteTables<'t>, WalError> {
        Ok(WriteTables {
            meta: tx.open_table(META).map_err(store)?,
            records: tx.open_table(RECORDS).map_err(store)?,
            payloads: tx.open_table(PAYLOADS).map_err(store)?,
            pending: tx.open_table(PENDING).map_err(store)?,
            dead: tx.open_table(DEAD_LETTERS).map_err(store)?,
            exporters: tx.open_table(EXPORTERS).map_err(store)?,
        })
    }

    fn used(&self) -> Result<u64, WalError> {
        read_used(&self.meta)
    }

    fn add_used(&mut self, delta: i128) -> Result<(), WalError> {
        let used = i128::from(self.used()?) + delta;
        let clamped = u64::try_from(used.max(0)).unwrap_or(u64::MAX);
        write_used(&mut self.meta, clamped)
    }

    fn put_exporter(&mut self, uid: &str, state: &ExporterState) -> Result<(), WalError> {
        self.exporters
            .insert(uid, state.encode_to_vec().as_slice())
            .map_err(store)?;
        Ok(())
    }

    fn pending_state(&self, output: &str, id: &RecordId) -> Result<PendingState, WalError> {
        let bytes = self
            .pending
            .get(output_key(output, id))
            .map_err(store)?
            .ok_or_else(|| WalError::NotPending {
                output: output.to_string(),
                id: id.clone(),
            })?;
        record::decode_pending(bytes.value()).map_err(|e| corrupt(id, e))
    }

    fn take_pending(&mut self, output: &str, id: &RecordId) -> Result<PendingState, WalError> {
        let state = self.pending_state(output, id)?;
        self.pending.remove(output_key(output, id)).map_err(store)?;
        Ok(state)
    }

    fn insert_dead_letter(
        &mut self,
        output: &str,
        id: &RecordId,
        reason: &str,
        body: &str,
        attempts: u32,
        failed_request: u32,
    ) -> Result<(), WalError> {
        let envelope = read_envelope(&self.records, id)?
            .ok_or_else(|| corrupt(id, "pending but its header is missing"))?;
        let stored = read_payload_chunks(&self.payloads, LIVE, id)?;
        if self
            .dead
            .get(output_key(output, id))
            .map_err(store)?
            .is_some()
        {
            self.remove_dead_letter(output, id)?;
        }
        let letter = DeadLetterEnvelope {
            version: RECORD_VERSION,
            output: output.to_string(),
            reason: record::cap_text(reason, MAX_BODY_BYTES),
            body: record::cap_text(body, MAX_BODY_BYTES),
            dead_lettered_at: Ticks::now().0,
            attempts,
            record: Some(envelope),
            failed_request,
        };
        self.dead
            .insert(output_key(output, id), letter.encode_to_vec().as_slice())
            .map_err(store)?;
        write_payload(&mut self.payloads, output, id, &stored)?;
        self.add_used(allocation_estimate(stored.len() as u64) as i128)
    }

    fn remove_dead_letter(&mut self, output: &str, id: &RecordId) -> Result<(), WalError> {
        self.dead.remove(output_key(output, id)).map_err(store)?;
        let removed = remove_payload(&mut self.payloads, output, id)?;
        if let Some(len) = removed {
            self.add_used(-(allocation_estimate(len) as i128))?;
        }
        Ok(())
    }

    /// Dead letter → pending again; the record (header + payload) comes back if it had left. A live
    /// record under the same key must be the same append (see the module docs' lifecycle), else
    /// [`WalError::RequeueConflict`]: neither copy is overwritten.
    fn requeue_one(&mut self, output: &str, id: &RecordId) -> Result<(), WalError> {
        let letter = self
            .dead
            .get(output_key(output, id))
            .map_err(store)?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| WalError::NotDeadLettered {
                output: output.to_string(),
                id: id.clone(),
            })?;
        let letter = record::decode_dead_letter(&letter).map_err(|e| corrupt(id, e))?;
        let mut envelope = letter
            .record
            .ok_or_else(|| corrupt(id, "dead letter without its record header"))?;
        match read_envelope(&self.records, id)? {
            None => {
                let stored = read_payload_chunks(&self.payloads, output, id)?;
                record::verify_payload(&envelope, &stored).map_err(|e| corrupt(id, e))?;
                add_output(&mut envelope, output);
                self.records
                    .insert(key(id), envelope.encode_to_vec().as_slice())
                    .map_err(store)?;
                write_payload(&mut self.payloads, LIVE, id, &stored)?;
                self.add_used(allocation_estimate(stored.len() as u64) as i128)?;
            }
            Some(mut live) if same_append(&live, &envelope) => {
                if add_output(&mut live, output) {
                    self.records
                        .insert(key(id), live.encode_to_vec().as_slice())
                        .map_err(store)?;
                }
            }
            Some(_) => {
                return Err(WalError::RequeueConflict {
                    output: output.to_string(),
                    id: id.clone(),
                });
            }
        }
        self.remove_dead_letter(output, id)?;
        let state = PendingState {
            resume_from: letter.failed_request,
            ..PendingState::default()
        };
        self.pending
            .insert(output_key(output, id), state.encode_to_vec().as_slice())
            .map_err(store)?;
        Ok(())
    }

    /// Drop the record when none of its outputs has it pending; returns whether it left.
    fn finish_if_done(&mut self, id: &RecordId) -> Result<bool, WalError> {
        let Some(envelope) = read_envelope(&self.records, id)? else {
            return Ok(false);
        };
        for output in &envelope.outputs {
            if self
                .pending
                .get(output_key(output, id))
                .map_err(store)?
                .is_some()
            {
                return Ok(false);
            }
        }
        self.records.remove(key(id)).map_err(store)?;
        let removed = remove_payload(&mut self.payloads, LIVE, id)?;
        if let Some(len) = removed {
            self.add_used(-(allocation_estimate(len) as i128))?;
        }
        self.drop_exporter_if_done(&id.exporter_uid)?;
        Ok(true)
    }

    fn drop_exporter_if_done(&mut self, uid: &str) -> Result<(), WalError> {
        let Some(state) = read_exporter(&self.exporters, uid)? else {
            return Ok(());
        };
        if !state.forgotten {
            return Ok(());
        }
        let has_records = self
            .records
            .range((uid, i64::MIN)..=(uid, i64::MAX))
            .map_err(store)?
            .next()
            .is_some();
        // A dead letter can be requeued: its window must stay before the watermark, so that no
        // append ever reuses its key.
        if !has_records && !has_dead_letters(&self.dead, uid)? {
            self.exporters.remove(uid).map_err(store)?;
        }
        Ok(())
    }

    fn matching_dead_letters(
        &self,
        filter: &WalFilter,
    ) -> Result<Vec<(String, RecordId)>, WalError> {
        let mut out = Vec::new();
        for entry in self.dead.iter().map_err(store)? {
            let (k, value) = entry.map_err(store)?;
            let (output, uid, start) = k.value();
            let id = record_id(uid, start);
            let letter = record::decode_dead_letter(value.value()).map_err(|e| corrupt(&id, e))?;
            let matches = letter
                .record
                .as_ref()
                .is_some_and(|envelope| filter.matches(output, envelope));
            if matches {
                out.push((output.to_string(), id));
            }
        }
        Ok(out)
    }

    fn matching_pending(&self, filter: &WalFilter) -> Result<Vec<(String, RecordId)>, WalError> {
        let mut out = Vec::new();
        for entry in self.pending.iter().map_err(store)? {
            let (k, _) = entry.map_err(store)?;
            let (output, uid, start) = k.value();
            let id = record_id(uid, start);
            let Some(envelope) = read_envelope(&self.records, &id)? else {
                continue;
            };
            if filter.matches(output, &envelope) {
                out.push((output.to_string(), id));
            }
        }
        Ok(out)
    }
}

/// The oldest pending row of one exporter for one output.
struct Head {
    uid: String,
    start: i64,
    state: PendingState,
}

/// One seek per exporter: the first pending row of each uid for `output`.
fn heads(
    pending: &impl ReadableTable<OutputKey, &'static [u8]>,
    output: &str,
) -> Result<Vec<Head>, WalError> {
    let mut out: Vec<Head> = Vec::new();
    loop {
        let lower = match out.last() {
            None => Bound::Included((output, "", i64::MIN)),
            Some(prev) => Bound::Excluded((output, prev.uid.as_str(), i64::MAX)),
        };
        let mut range = pending
            .range::<(&str, &str, i64)>((lower, Bound::Unbounded))
            .map_err(store)?;
        let Some(entry) = range.next() else {
            break;
        };
        let (k, value) = entry.map_err(store)?;
        let (found_output, uid, start) = k.value();
        if found_output != output {
            break;
        }
        let id = record_id(uid, start);
        let state = record::decode_pending(value.value()).map_err(|e| corrupt(&id, e))?;
        out.push(Head {
            uid: uid.to_string(),
            start,
            state,
        });
    }
    Ok(out)
}

/// Whether `uid` has a dead letter on any output: one seek per output name in the table.
fn has_dead_letters(
    dead: &impl ReadableTable<OutputKey, &'static [u8]>,
    uid: &str,
) -> Result<bool, WalError> {
    let mut from = String::new();
    loop {
        let mut range = dead
            .range::<(&str, &str, i64)>((from.as_str(), "", i64::MIN)..)
            .map_err(store)?;
        let Some(entry) = range.next() else {
            return Ok(false);
        };
        let output = entry.map_err(store)?.0.value().0.to_string();
        let found = dead
            .range::<(&str, &str, i64)>(
                (output.as_str(), uid, i64::MIN)..=(output.as_str(), uid, i64::MAX),
            )
            .map_err(store)?
            .next()
            .is_some();
        if found {
            return Ok(true);
        }
        // The smallest name after `output`: skips the rest of its rows.
        from = output + "\0";
    }
}

/// Whether two envelopes describe the same append (target outputs aside): header and payload
/// checksum equal.
fn same_append(live: &RecordEnvelope, letter: &RecordEnvelope) -> bool {
    RecordEnvelope {
        outputs: Vec::new(),
        ..live.clone()
    } == RecordEnvelope {
        outputs: Vec::new(),
        ..letter.clone()
    }
}

/// Add `output` to the record's targets; returns whether it was missing.
fn add_output(envelope: &mut RecordEnvelope, output: &str) -> bool {
    if envelope.outputs.iter().any(|o| o == output) {
        return false;
    }
    envelope.outputs.push(output.to_string());
    true
}

/// (record count, per-exporter stats) from the `records` headers and the `exporters` rows.
fn exporter_stats(tx: &redb::ReadTransaction) -> Result<(u64, Vec<ExporterStats>), WalError> {
    let mut exporters: BTreeMap<String, ExporterStats> = BTreeMap::new();
    let records = tx.open_table(RECORDS).map_err(store)?;
    let mut count = 0;
    for entry in records.iter().map_err(store)? {
        let (k, value) = entry.map_err(store)?;
        let (uid, start) = k.value();
        let envelope = record::decode_envelope(value.value())
            .map_err(|e| corrupt_row("records", format!("{uid}@{}", Ticks(start)), e))?;
        count += 1;
        let stats = exporters
            .entry(envelope.exporter_uid.clone())
            .or_insert_with(|| ExporterStats {
                uid: envelope.exporter_uid.clone(),
                namespace: envelope.namespace.clone(),
                name: envelope.name.clone(),
                ..ExporterStats::default()
            });
        stats.records += 1;
        // Keys iterate oldest window first within an exporter.
        stats
            .oldest_window
            .get_or_insert(Ticks(envelope.window_start));
        stats.oldest_created = min_opt(stats.oldest_created, Ticks(envelope.created));
    }
    let table = tx.open_table(EXPORTERS).map_err(store)?;
    for entry in table.iter().map_err(store)? {
        let (uid, value) = entry.map_err(store)?;
        let uid = uid.value();
        let state = record::decode_exporter(value.value())
            .map_err(|e| corrupt_row("exporters", uid.to_string(), e))?;
        let stats = exporters
            .entry(uid.to_string())
            .or_insert_with(|| ExporterStats {
                uid: uid.to_string(),
                ..ExporterStats::default()
            });
        stats.namespace = state.namespace;
        stats.name = state.name;
        stats.watermark = Some(Ticks(state.watermark));
        stats.forgotten = state.forgotten;
    }
    Ok((count, exporters.into_values().collect()))
}

/// (dead-letter count, per-output stats) for the configured outputs and any other holding rows.
/// Also counts each exporter's pending windows per output into `exporters`.
fn output_stats(
    tx: &redb::ReadTransaction,
    configured: &[String],
    exporters: &mut [ExporterStats],
) -> Result<(u64, Vec<OutputStats>), WalError> {
    let mut outputs: BTreeMap<String, OutputStats> = configured
        .iter()
        .map(|o| (o.clone(), OutputStats::new(o, true)))
        .collect();
    let pending = tx.open_table(PENDING).map_err(store)?;
    for entry in pending.iter().map_err(store)? {
        let (k, value) = entry.map_err(store)?;
        let (output, uid, start) = k.value();
        let state = record::decode_pending(value.value())
            .map_err(|e| corrupt(&record_id(uid, start), e))?;
        let stats = outputs
            .entry(output.to_string())
            .or_insert_with(|| OutputStats::new(output, false));
        stats.pending += 1;
        stats.oldest_pending = min_opt(stats.oldest_pending, Ticks(start));
        // `exporters` is sorted by uid (it comes from a BTreeMap).
        if let Ok(i) = exporters.binary_search_by(|e| e.uid.as_str().cmp(uid)) {
            *exporters[i]
                .pending_by_output
                .entry(output.to_string())
                .or_default() += 1;
        }
        stats.next_attempt_at = min_opt(stats.next_attempt_at, Ticks(state.next_attempt_at));
    }
    let dead = tx.open_table(DEAD_LETTERS).map_err(store)?;
    let mut count = 0;
    for entry in dead.iter().map_err(store)? {
        let (k, _) = entry.map_err(store)?;
        let (output, _, _) = k.value();
        count += 1;
        outputs
            .entry(output.to_string())
            .or_insert_with(|| OutputStats::new(output, false))
            .dead_letters += 1;
    }
    Ok((count, outputs.into_values().collect()))
}

fn payload_range<'a>(
    scope: &'a str,
    id: &'a RecordId,
) -> std::ops::RangeInclusive<(&'a str, &'a str, i64, u32)> {
    let (uid, start) = key(id);
    (scope, uid, start, 0)..=(scope, uid, start, u32::MAX)
}

fn write_payload(
    payloads: &mut Table<'_, PayloadKey, &'static [u8]>,
    scope: &str,
    id: &RecordId,
    stored: &[u8],
) -> Result<(), WalError> {
    let (uid, start) = key(id);
    for (index, chunk) in stored.chunks(CHUNK_BYTES as usize).enumerate() {
        let index = u32::try_from(index).map_err(|_| corrupt(id, "payload has too many chunks"))?;
        payloads
            .insert((scope, uid, start, index), chunk)
            .map_err(store)?;
    }
    Ok(())
}

/// The payload's chunks, concatenated; empty when there are none (the envelope's length check
/// then reports a missing payload).
fn read_payload_chunks(
    payloads: &impl ReadableTable<PayloadKey, &'static [u8]>,
    scope: &str,
    id: &RecordId,
) -> Result<Vec<u8>, WalError> {
    let mut out = Vec::new();
    for entry in payloads.range(payload_range(scope, id)).map_err(store)? {
        let (_, chunk) = entry.map_err(store)?;
        out.extend_from_slice(chunk.value());
    }
    Ok(out)
}

/// Remove every chunk; returns the payload length removed, `None` when there was none.
fn remove_payload(
    payloads: &mut Table<'_, PayloadKey, &'static [u8]>,
    scope: &str,
    id: &RecordId,
) -> Result<Option<u64>, WalError> {
    let mut chunks = Vec::new();
    for entry in payloads.range(payload_range(scope, id)).map_err(store)? {
        let (k, chunk) = entry.map_err(store)?;
        chunks.push((k.value().3, chunk.value().len() as u64));
    }
    let (uid, start) = key(id);
    for (index, _) in &chunks {
        payloads
            .remove((scope, uid, start, *index))
            .map_err(store)?;
    }
    Ok((!chunks.is_empty()).then(|| chunks.iter().map(|(_, len)| len).sum()))
}

fn delivery_state(
    pending: &impl ReadableTable<OutputKey, &'static [u8]>,
    dead: &impl ReadableTable<OutputKey, &'static [u8]>,
    output: &str,
    id: &RecordId,
) -> Result<DeliveryState, WalError> {
    if let Some(bytes) = pending.get(output_key(output, id)).map_err(store)? {
        let state = record::decode_pending(bytes.value()).map_err(|e| corrupt(id, e))?;
        return Ok(DeliveryState::Pending {
            attempts: state.attempts,
            next_attempt_at: Ticks(state.next_attempt_at),
            last_error: non_empty(state.last_error),
        });
    }
    if let Some(bytes) = dead.get(output_key(output, id)).map_err(store)? {
        let letter = record::decode_dead_letter(bytes.value()).map_err(|e| corrupt(id, e))?;
        return Ok(DeliveryState::DeadLettered {
            reason: letter.reason,
        });
    }
    Ok(DeliveryState::Acked)
}

fn read_envelope(
    records: &impl ReadableTable<RecordKey, &'static [u8]>,
    id: &RecordId,
) -> Result<Option<RecordEnvelope>, WalError> {
    let Some(bytes) = records.get(key(id)).map_err(store)? else {
        return Ok(None);
    };
    record::decode_envelope(bytes.value())
        .map(Some)
        .map_err(|e| corrupt(id, e))
}

fn read_exporter(
    exporters: &impl ReadableTable<&'static str, &'static [u8]>,
    uid: &str,
) -> Result<Option<ExporterState>, WalError> {
    let Some(bytes) = exporters.get(uid).map_err(store)? else {
        return Ok(None);
    };
    record::decode_exporter(bytes.value())
        .map(Some)
        .map_err(|e| corrupt_row("exporters", uid.to_string(), e))
}

fn read_used(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, WalError> {
    let Some(bytes) = meta.get(META_USED_BYTES).map_err(store)? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes
        .value()
        .try_into()
        .map_err(|_| corrupt_row("meta", META_USED_BYTES.to_string(), "not 8 bytes"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn write_used(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    used: u64,
) -> Result<(), WalError> {
    meta.insert(META_USED_BYTES, used.to_le_bytes().as_slice())
        .map_err(store)?;
    Ok(())
}

/// Refuse a window before the exporter's watermark: its key may still belong to an earlier append.
fn check_window(
    exporters: &impl ReadableTable<&'static str, &'static [u8]>,
    header: &RecordHeader,
) -> Result<(), WalError> {
    let Some(state) = read_exporter(exporters, &header.exporter.uid)? else {
        return Ok(());
    };
    if header.window_start.0 < state.watermark {
        return Err(WalError::WindowBeforeWatermark {
            exporter_uid: header.exporter.uid.clone(),
            window_start: header.window_start,
            watermark: Ticks(state.watermark),
        });
    }
    Ok(())
}

fn validate_window(header: &RecordHeader) -> Result<(), WalError> {
    let (start, end) = (header.window_start, header.window_end);
    if header.exporter.uid.is_empty() || start < Ticks::MIN || end > Ticks::MAX || end <= start {
        return Err(WalError::InvalidWindow {
            exporter_uid: header.exporter.uid.clone(),
            window_start: start,
            window_end: end,
        });
    }
    Ok(())
}

fn envelope_of(
    header: &RecordHeader,
    outputs: Vec<String>,
    payload: &record::StoredPayload<'_>,
    samples: u64,
) -> RecordEnvelope {
    RecordEnvelope {
        version: RECORD_VERSION,
        exporter_uid: header.exporter.uid.clone(),
        namespace: header.exporter.namespace.clone(),
        name: header.exporter.name.clone(),
        generation: header.generation,
        window_start: header.window_start.0,
        window_end: header.window_end.0,
        created: header.created.0,
        compression: payload.compression as i32,
        outputs,
        payload_len: payload.bytes.len() as u64,
        payload_crc32: payload.crc32,
        samples,
    }
}

fn header_of(envelope: &RecordEnvelope) -> RecordHeader {
    RecordHeader {
        exporter: ExporterRef {
            uid: envelope.exporter_uid.clone(),
            namespace: envelope.namespace.clone(),
            name: envelope.name.clone(),
        },
        generation: envelope.generation,
        window_start: Ticks(envelope.window_start),
        window_end: Ticks(envelope.window_end),
        created: Ticks(envelope.created),
        outputs: envelope.outputs.clone(),
    }
}

fn key(id: &RecordId) -> (&str, i64) {
    (id.exporter_uid.as_str(), id.window_start.0)
}

fn output_key<'a>(output: &'a str, id: &'a RecordId) -> (&'a str, &'a str, i64) {
    (output, id.exporter_uid.as_str(), id.window_start.0)
}

fn record_id(uid: &str, start: i64) -> RecordId {
    RecordId {
        exporter_uid: uid.to_string(),
        window_start: Ticks(start),
    }
}

fn corrupt(id: &RecordId, e: impl std::fmt::Display) -> WalError {
    WalError::CorruptRecord {
        id: id.clone(),
        detail: e.to_string(),
    }
}

fn corrupt_row(table: &'static str, key: String, e: impl std::fmt::Display) -> WalError {
    WalError::CorruptRow {
        table,
        key,
        detail: e.to_string(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn min_opt(current: Option<Ticks>, candidate: Ticks) -> Option<Ticks> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries};
    use crate::wal::Compression;

    const START: i64 = 638_000_000_000_000_000;
    const INTERVAL: i64 = 600_000_000;

    fn open(dir: &Path) -> Wal {
        Wal::open(dir, WalConfig::new(1 << 30, ["remote_write", "otlp"])).unwrap()
    }

    fn header(outputs: &[&str]) -> RecordHeader {
        RecordHeader {
            exporter: ExporterRef::new("uid-0", "ns", "cpu"),
            generation: 1,
            window_start: Ticks(START),
            window_end: Ticks(START + INTERVAL),
            created: Ticks(START),
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn request(value: f64) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "cpu")],
                samples: vec![Sample {
                    value,
                    timestamp: 0,
                }],
            }],
        }
    }

    /// A volume with less free space than `min_free_bytes` counts as full (querying pauses) before
    /// redb could hit ENOSPC; with no reserve only `max_bytes` decides.
    #[test]
    fn a_low_volume_counts_as_full() {
        let dir = tempfile::tempdir().unwrap();
        let free = volume_free_bytes(dir.path()).expect("statvfs of a temp dir");
        let with_reserve = |min_free_bytes: u64| {
            let mut config = WalConfig::new(1 << 30, ["remote_write"]);
            config.min_free_bytes = min_free_bytes;
            let wal = Wal::open(dir.path(), config).unwrap();
            wal.is_full().unwrap()
        };
        assert!(!with_reserve(0));
        assert!(with_reserve(free.saturating_mul(2).max(1 << 40)));
    }

    /// Regression (chaos suite, StatefulSet rescale 1 → 2 → 1): a replica that gets a resource back
    /// must not resume from its own stale watermark when the status shows another replica went on.
    #[test]
    fn raise_watermark_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let ex = header(&[]).exporter;
        let at = |w: i64| Ticks(START + w * INTERVAL);
        assert_eq!(wal.raise_watermark(&ex, at(2)).unwrap(), at(2));
        assert_eq!(wal.raise_watermark(&ex, at(7)).unwrap(), at(7));
        assert_eq!(wal.raise_watermark(&ex, at(3)).unwrap(), at(7));
        assert_eq!(wal.watermark(&ex.uid).unwrap(), Some(at(7)));
        let mut before = header(&[]);
        before.window_start = at(5);
        before.window_end = at(6);
        let err = wal.append(&before, &request(1.0)).unwrap_err();
        assert!(err.to_string().contains("scheduler bug"), "{err}");
    }

    #[test]
    fn payload_snappy_cannot_shrink_is_stored_plain_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: String = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
        let mut noisy = request(1.0);
        noisy.timeseries[0].labels.push(Label::new("noise", noise));
        let id = wal.append(&header(&[]), &noisy).unwrap();
        let stored = wal.read_encoded(&id).unwrap();
        assert_eq!(stored.compression, Compression::None);
        assert_eq!(stored.bytes, noisy.encode_to_vec());
        assert_eq!(stored.samples, 1);
        assert_eq!(wal.read_payload(&id).unwrap(), noisy);
    }

    #[test]
    fn duplicate_append_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let id = wal.append(&header(&[]), &request(1.0)).unwrap();
        let used = wal.used_bytes().unwrap();
        // Only reachable when the watermark row is gone (a store written before watermarks outlived records).
        wal.write(|tx| {
            let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
            exporters.remove("uid-0").map_err(store)?;
            Ok(())
        })
        .unwrap();
        let err = wal.append(&header(&["otlp"]), &request(2.0)).unwrap_err();
        assert!(matches!(err, WalError::DuplicateRecord { .. }), "{err}");
        assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
        assert_eq!(wal.used_bytes().unwrap(), used);
        assert_eq!(wal.watermark("uid-0").unwrap(), None);
    }

    #[test]
    fn a_requeued_dead_letter_resumes_at_the_refused_request() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let resume_of = |wal: &Wal, output: &str| {
            wal.next_pending(output, Ticks::MAX, 10).unwrap()[0].resume_from
        };
        let a = wal.append(&header(&[]), &request(1.0)).unwrap();
        // Requests 0..3 accepted, request 3 refused for good.
        wal.dead_letter_at("remote_write", &a, Some(3), "400", "")
            .unwrap();
        // Resumed at 2 after a retry, then refused there.
        wal.retry_later_from("otlp", &a, Ticks(0), "503", Some(2))
            .unwrap();
        wal.dead_letter("otlp", &a, "400", "").unwrap();
        assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 2);
        assert_eq!(resume_of(&wal, "remote_write"), 3);
        assert_eq!(resume_of(&wal, "otlp"), 2);
    }

    #[test]
    fn requeue_onto_the_same_live_record_makes_the_output_pending_again() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let id = wal.append(&header(&[]), &request(1.0)).unwrap();
        wal.dead_letter("remote_write", &id, "400", "").unwrap();
        assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 1);
        let listed = wal.list(&WalFilter::default()).unwrap();
        assert_eq!(listed[0].header.outputs, ["remote_write", "otlp"]);
        assert!(
            listed[0]
                .deliveries
                .iter()
                .all(|(_, s)| matches!(s, DeliveryState::Pending { .. }))
        );
        assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
        assert_eq!(wal.stats().unwrap().dead_letters, 0);
    }

    #[test]
    fn requeue_refuses_a_dead_letter_colliding_with_a_different_record() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path());
        let id = wal
            .append(&header(&["remote_write"]), &request(1.0))
            .unwrap();
        wal.dead_letter("remote_write", &id, "400", "").unwrap();
        wal.forget_exporter("uid-0").unwrap();
        assert!(
            wal.watermark("uid-0").unwrap().is_some(),
            "kept while a dead letter exists"
        );
        // A store written before that rule: the watermark row is gone, so the key is appended again.
        wal.write(|tx| {
            let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
            exporters.remove("uid-0").map_err(store)?;
            Ok(())
        })
        .unwrap();
        wal.append(&header(&["otlp"]), &request(2.0)).unwrap();
        let used = wal.used_bytes().unwrap();

        let err = wal.requeue(&WalFilter::default()).unwrap_err();
        assert!(matches!(err, WalError::RequeueConflict { .. }), "{err}");
        assert!(err.to_string().contains("nothing was requeued"), "{err}");
        assert_eq!(wal.read_payload(&id).unwrap(), request(2.0));
        assert_eq!(
            wal.read_dead_letter_payload("remote_write", &id).unwrap(),
            request(1.0)
        );
        let listed = wal.list(&WalFilter::default()).unwrap();
        assert_eq!(listed[0].header.outputs, ["otlp"]);
        assert!(
            wal.next_pending("remote_write", Ticks(0), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(wal.used_bytes().unwrap(), used);

        // Once the live record is delivered, the dead letter comes back with its own payload.
        wal.ack("otlp", &id).unwrap();
        assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 1);
        assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
    }
}
