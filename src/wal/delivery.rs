//! What the drain loops call: the records due on an output ([`Wal::next_pending`],
//! [`Wal::next_due`], [`Wal::subscribe`]), their payloads ([`Wal::read_encoded`],
//! [`Wal::read_payload`]) and the outcome of a push ([`Wal::ack`], [`Wal::retry_later`],
//! [`Wal::dead_letter`]).

use std::ops::Bound;

use prost::Message;
use redb::ReadableTable;
use tokio::sync::watch;

use super::record::{self, EncodedWindow, MAX_BODY_BYTES, PendingState, RecordEnvelope};
use super::tables::{
    LIVE, OutputKey, PAYLOADS, PENDING, RECORDS, WriteTables, corrupt, header_of, non_empty,
    output_key, read_envelope, read_payload_chunks, record_id, store,
};
use super::{PendingRecord, RecordId, Wal, WalError};
use crate::prompb::WriteRequest;
use crate::time::Ticks;

impl Wal {
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
    pub(crate) fn read_encoded(&self, id: &RecordId) -> Result<EncodedWindow, WalError> {
        let (envelope, stored) = self.read_stored(id)?;
        record::verified_window(&envelope, stored).map_err(|e| corrupt(id, e))
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
    pub(crate) fn retry_later_from(
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
    /// them as out of order, and the window would be dead-lettered once more). The dead letter's
    /// attempts are the failed attempts so far plus this refused one.
    pub(crate) fn dead_letter_at(
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
            let attempts = state.attempts.saturating_add(1);
            t.insert_dead_letter(output, id, reason, body, attempts, failed)?;
            t.finish_if_done(id)?;
            Ok(())
        })
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
