//! Appending windows and the exporters' watermarks: [`Wal::append`], reading, seeding and raising a
//! watermark, [`Wal::forget_exporter`], and the window checks that keep a record key to one append.

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use super::record::{self, ExporterState, PendingState, RecordEnvelope, StoredPayload};
use super::tables::{
    EXPORTERS, LIVE, META, PAYLOADS, PENDING, RECORDS, WriteTables, corrupt, envelope_of, key,
    output_key, read_exporter, read_used, store, write_payload, write_used,
};
use super::totals::{TOTALS, TableTotals, TotalsWindow, clear as clear_totals, cumulate};
use super::{ExporterRef, RecordHeader, RecordId, Wal, WalError, allocation_estimate};
use crate::prompb::RemoteWriteEncoder;
use crate::prompb::WriteRequest;
use crate::time::{Span, Ticks};

impl Wal {
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
        let envelope = envelope_of(header, outputs, &payload, samples);
        let max = self.inner.config.max_bytes;
        self.write(|tx| insert_window(tx, header, &envelope, &payload, max))?;
        self.notify();
        Ok(id)
    }

    /// `append` of a counter or histogram window (docs/design.md#counters): `request` holds this
    /// window's increases; in the same transaction they become the series' running totals (read
    /// and advanced in table `totals`), which are what the record stores, with each series' start
    /// and each sample's increase beside them for OTLP.
    pub fn append_cumulative(
        &self,
        header: &RecordHeader,
        mut request: WriteRequest,
        reset_after_idle: Span,
        delta: bool,
    ) -> Result<RecordId, WalError> {
        validate_window(header)?;
        let outputs = self.resolve_outputs(&header.outputs)?;
        let id = header.id();
        let max = self.inner.config.max_bytes;
        let window = TotalsWindow {
            start: header.window_start,
            end: header.window_end,
            reset_after_idle,
            delta,
        };
        self.write(|tx| {
            // Refused windows never reach the totals (the transaction would be aborted anyway).
            check_window(&tx.open_table(EXPORTERS).map_err(store)?, header)?;
            {
                let mut table = tx.open_table(TOTALS).map_err(store)?;
                let mut totals = TableTotals {
                    table: &mut table,
                    uid: &header.exporter.uid,
                };
                cumulate(&mut request, &window, &mut totals)?;
                totals.expire(header.window_end, reset_after_idle)?;
            }
            let plain = RemoteWriteEncoder::default().encode_window(&request);
            let payload = record::encode_payload(&plain).map_err(|e| corrupt(&id, e))?;
            // Counted after `cumulate`, which adds the series of a histogram's empty buckets.
            let samples = request.sample_count() as u64;
            let mut envelope = envelope_of(header, outputs, &payload, samples);
            envelope.cumulative = true;
            insert_window(tx, header, &envelope, &payload, max)
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
    pub(crate) fn raise_watermark(
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
                    let merged = merge(state.watermark, watermark.0);
                    if merged > state.watermark {
                        // Another replica exported the windows in between, with its own running
                        // totals: ours restart from 0 (docs/design.md#counters).
                        clear_totals(&mut tx.open_table(TOTALS).map_err(store)?, &exporter.uid)?;
                    }
                    state.watermark = merged;
                    state
                }
                None => ExporterState {
                    watermark: watermark.0,
                    forgotten: false,
                    namespace: exporter.namespace.clone(),
                    name: exporter.name.clone(),
                    failed_outputs: Default::default(),
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
            clear_totals(&mut tx.open_table(TOTALS).map_err(store)?, exporter_uid)?;
            t.drop_exporter_if_done(exporter_uid)
        })
    }
}

/// Inserts a record, marks it pending for its outputs and advances the exporter's watermark to its
/// end, inside `tx`; refuses a full store, a window before the watermark and a duplicate key.
fn insert_window(
    tx: &WriteTransaction,
    header: &RecordHeader,
    envelope: &RecordEnvelope,
    payload: &StoredPayload<'_>,
    max: u64,
) -> Result<(), WalError> {
    let id = header.id();
    let allocated = allocation_estimate(payload.bytes.len() as u64);
    let mut exporter = ExporterState {
        watermark: header.window_end.0,
        forgotten: false,
        namespace: header.exporter.namespace.clone(),
        name: header.exporter.name.clone(),
        failed_outputs: Default::default(),
    };
    // Only the five tables an append touches, each opened once; `used` is read once.
    let mut meta = tx.open_table(META).map_err(store)?;
    let used = read_used(&meta)?;
    if used >= max {
        return Err(WalError::Full { used, max });
    }
    let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
    check_window(&exporters, header)?;
    if let Some(stored) = read_exporter(&exporters, &header.exporter.uid)? {
        exporter.failed_outputs = stored.failed_outputs;
    }
    let mut records = tx.open_table(RECORDS).map_err(store)?;
    let replaced = records
        .insert(key(&id), envelope.encode_to_vec().as_slice())
        .map_err(store)?
        .is_some();
    if replaced {
        // `write` aborts the transaction: the old record stays as it was.
        return Err(WalError::DuplicateRecord { id });
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
