//! The redb tables of the store (the module docs' on-disk format): their definitions and keys,
//! payloads split into chunks, and reading and writing single rows.

use prost::Message;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::record::{self, ExporterState, RECORD_VERSION, RecordEnvelope};
use super::{ExporterRef, RecordHeader, RecordId, WalError};
use crate::time::Ticks;

pub(super) type RecordKey = (&'static str, i64);
pub(super) type OutputKey = (&'static str, &'static str, i64);
pub(super) type PayloadKey = (&'static str, &'static str, i64, u32);

/// Payload scope of a live record (output names are never empty).
pub(super) const LIVE: &str = "";
/// Payloads are stored in chunks of this size: a chunk plus its leaf overhead fills a 64 KiB page
/// run, so a large payload takes about 1× its size on disk and in writes, not up to 2×.
pub(super) const CHUNK_BYTES: u64 = 64 * 1024 - 1024;
pub(super) const CHUNK_PAGE_RUN: u64 = 64 * 1024;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const RECORDS: TableDefinition<RecordKey, &[u8]> = TableDefinition::new("records");
/// (scope, uid, window start, chunk): scope is `LIVE` for a record's payload, the output name for
/// a dead letter's copy.
pub(super) const PAYLOADS: TableDefinition<PayloadKey, &[u8]> = TableDefinition::new("payloads");
pub(super) const PENDING: TableDefinition<OutputKey, &[u8]> = TableDefinition::new("pending");
pub(super) const DEAD_LETTERS: TableDefinition<OutputKey, &[u8]> =
    TableDefinition::new("dead_letters");
pub(super) const EXPORTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("exporters");
/// (exporter uid, series key) → running total of a counter or histogram series (`totals.rs`).
pub(super) const TOTALS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("totals");
const META_USED_BYTES: &str = "used_bytes";

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(RECORDS)?;
    tx.open_table(PAYLOADS)?;
    tx.open_table(PENDING)?;
    tx.open_table(DEAD_LETTERS)?;
    tx.open_table(EXPORTERS)?;
    tx.open_table(TOTALS)?;
    let mut meta = tx.open_table(META)?;
    if meta.get(META_USED_BYTES)?.is_none() {
        meta.insert(META_USED_BYTES, 0u64.to_le_bytes().as_slice())?;
    }
    Ok(())
}

pub(super) fn store(e: impl Into<redb::Error>) -> WalError {
    WalError::Store(e.into())
}

/// All tables of one write transaction, opened once (redb refuses to open a table twice).
pub(super) struct WriteTables<'t> {
    pub(super) meta: Table<'t, &'static str, &'static [u8]>,
    pub(super) records: Table<'t, RecordKey, &'static [u8]>,
    pub(super) payloads: Table<'t, PayloadKey, &'static [u8]>,
    pub(super) pending: Table<'t, OutputKey, &'static [u8]>,
    pub(super) dead: Table<'t, OutputKey, &'static [u8]>,
    pub(super) exporters: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    pub(super) fn open(tx: &'t WriteTransaction) -> Result<WriteTables<'t>, WalError> {
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

    pub(super) fn add_used(&mut self, delta: i128) -> Result<(), WalError> {
        let used = i128::from(self.used()?) + delta;
        let clamped = u64::try_from(used.max(0)).unwrap_or(u64::MAX);
        write_used(&mut self.meta, clamped)
    }

    pub(super) fn put_exporter(
        &mut self,
        uid: &str,
        state: &ExporterState,
    ) -> Result<(), WalError> {
        self.exporters
            .insert(uid, state.encode_to_vec().as_slice())
            .map_err(store)?;
        Ok(())
    }
}

fn payload_range<'a>(
    scope: &'a str,
    id: &'a RecordId,
) -> std::ops::RangeInclusive<(&'a str, &'a str, i64, u32)> {
    let (uid, start) = key(id);
    (scope, uid, start, 0)..=(scope, uid, start, u32::MAX)
}

pub(super) fn write_payload(
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
pub(super) fn read_payload_chunks(
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
pub(super) fn remove_payload(
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

pub(super) fn read_envelope(
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

pub(super) fn read_exporter(
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

pub(super) fn read_used(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, WalError> {
    let Some(bytes) = meta.get(META_USED_BYTES).map_err(store)? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes
        .value()
        .try_into()
        .map_err(|_| corrupt_row("meta", META_USED_BYTES.to_string(), "not 8 bytes"))?;
    Ok(u64::from_le_bytes(bytes))
}

pub(super) fn write_used(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    used: u64,
) -> Result<(), WalError> {
    meta.insert(META_USED_BYTES, used.to_le_bytes().as_slice())
        .map_err(store)?;
    Ok(())
}

pub(super) fn envelope_of(
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
        cumulative: false,
    }
}

pub(super) fn header_of(envelope: &RecordEnvelope) -> RecordHeader {
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

pub(super) fn key(id: &RecordId) -> (&str, i64) {
    (id.exporter_uid.as_str(), id.window_start.0)
}

pub(super) fn output_key<'a>(output: &'a str, id: &'a RecordId) -> (&'a str, &'a str, i64) {
    (output, id.exporter_uid.as_str(), id.window_start.0)
}

pub(super) fn record_id(uid: &str, start: i64) -> RecordId {
    RecordId {
        exporter_uid: uid.to_string(),
        window_start: Ticks(start),
    }
}

pub(super) fn corrupt(id: &RecordId, e: impl std::fmt::Display) -> WalError {
    WalError::CorruptRecord {
        id: id.clone(),
        detail: e.to_string(),
    }
}

pub(super) fn corrupt_row(table: &'static str, key: String, e: impl std::fmt::Display) -> WalError {
    WalError::CorruptRow {
        table,
        key,
        detail: e.to_string(),
    }
}

pub(super) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
