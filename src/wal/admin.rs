//! The operator's changes, as `adxexporter wal requeue|purge` make them: [`Wal::requeue`] (dead
//! letters become pending again) and [`Wal::purge`] (dead letters or pending deliveries dropped).

use std::collections::BTreeSet;

use prost::Message;
use redb::ReadableTable;

use super::record::{self, PendingState, RecordEnvelope};
use super::tables::{
    LIVE, WriteTables, corrupt, key, output_key, read_envelope, read_payload_chunks, record_id,
    store, write_payload,
};
use super::{PurgeScope, RecordId, Wal, WalError, WalFilter, allocation_estimate};

impl Wal {
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
}

impl WriteTables<'_> {
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
