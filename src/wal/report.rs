//! Reports for status, metrics and `adxexporter wal`: [`Wal::stats`], [`Wal::list`],
//! [`Wal::dead_letters`] and [`Wal::read_dead_letter_payload`]. They read headers and delivery rows,
//! and no payload but the dead letter's asked for.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::record;
use super::tables::{
    DEAD_LETTERS, EXPORTERS, META, OutputKey, PAYLOADS, PENDING, RECORDS, corrupt, corrupt_row,
    header_of, non_empty, output_key, read_payload_chunks, read_used, record_id, store,
};
use super::{
    DeadLetter, DeliveryState, ExporterStats, ListedRecord, OutputStats, RecordId, Wal, WalError,
    WalFilter, WalStats, WindowState,
};
use crate::prompb::WriteRequest;
use crate::time::Ticks;

impl Wal {
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

    /// Every window the WAL holds matching `filter`, by exporter uid then window start: each record
    /// still in the WAL with each target output's state ([`WindowState::Pending`]), and each window
    /// whose record left but whose dead letters remain ([`WindowState::DeadLettered`]; with
    /// `filter.output`, only if that output dead-lettered it).
    pub fn list(&self, filter: &WalFilter) -> Result<Vec<ListedRecord>, WalError> {
        self.read(|tx| {
            let records = tx.open_table(RECORDS).map_err(store)?;
            let pending = tx.open_table(PENDING).map_err(store)?;
            let dead = tx.open_table(DEAD_LETTERS).map_err(store)?;
            let mut out: BTreeMap<RecordId, ListedRecord> = BTreeMap::new();
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
                out.insert(
                    id.clone(),
                    ListedRecord {
                        id,
                        header,
                        payload_bytes: envelope.payload_len,
                        state: WindowState::Pending,
                        deliveries,
                    },
                );
            }
            // Windows that left the WAL but are still held by dead letters.
            for entry in dead.iter().map_err(store)? {
                let (k, value) = entry.map_err(store)?;
                let (output, uid, start) = k.value();
                let id = record_id(uid, start);
                if records.get((uid, start)).map_err(store)?.is_some() {
                    continue; // a live record: listed above (or filtered out) with its states
                }
                let letter =
                    record::decode_dead_letter(value.value()).map_err(|e| corrupt(&id, e))?;
                let Some(envelope) = &letter.record else {
                    return Err(corrupt_row(
                        "dead_letters",
                        id.to_string(),
                        "no record header",
                    ));
                };
                if !filter.matches(output, envelope) {
                    continue;
                }
                let listed = out.entry(id.clone()).or_insert_with(|| ListedRecord {
                    id: id.clone(),
                    header: header_of(envelope),
                    payload_bytes: envelope.payload_len,
                    state: WindowState::DeadLettered,
                    deliveries: Vec::new(),
                });
                listed.deliveries.push((
                    output.to_string(),
                    DeliveryState::DeadLettered {
                        reason: letter.reason.clone(),
                        attempts: letter.attempts,
                    },
                ));
            }
            // Their other targets: delivered (or purged), as for a live record.
            for listed in out.values_mut() {
                if listed.state != WindowState::DeadLettered {
                    continue;
                }
                let mut deliveries = Vec::new();
                for target in &listed.header.outputs {
                    if filter.output.as_ref().is_some_and(|o| o != target) {
                        continue;
                    }
                    let at = listed.deliveries.iter().position(|(o, _)| o == target);
                    deliveries.push(match at {
                        Some(at) => listed.deliveries.swap_remove(at),
                        None => (target.clone(), DeliveryState::Acked),
                    });
                }
                deliveries.append(&mut listed.deliveries);
                listed.deliveries = deliveries;
            }
            Ok(out.into_values().collect())
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
            attempts: letter.attempts,
        });
    }
    Ok(DeliveryState::Acked)
}

fn min_opt(current: Option<Ticks>, candidate: Ticks) -> Option<Ticks> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}
