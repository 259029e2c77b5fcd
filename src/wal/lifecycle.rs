//! How rows leave, inside the write transaction of whichever operation causes it (the module docs'
//! lifecycle): a delivery leaves `pending` (acked, dead-lettered or purged), a dead letter keeps its
//! own payload copy, a record leaves once no output has it pending, and a forgotten exporter's
//! watermark row once it has neither records nor dead letters.

use prost::Message;
use redb::ReadableTable;

use super::record::{self, DeadLetterEnvelope, MAX_BODY_BYTES, PendingState, RECORD_VERSION};
use super::tables::{
    LIVE, OutputKey, WriteTables, corrupt, key, output_key, read_envelope, read_exporter,
    read_payload_chunks, remove_payload, store, write_payload,
};
use super::{RecordId, WalError, allocation_estimate};
use crate::time::Ticks;

impl WriteTables<'_> {
    pub(super) fn pending_state(
        &self,
        output: &str,
        id: &RecordId,
    ) -> Result<PendingState, WalError> {
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

    pub(super) fn take_pending(
        &mut self,
        output: &str,
        id: &RecordId,
    ) -> Result<PendingState, WalError> {
        let state = self.pending_state(output, id)?;
        self.pending.remove(output_key(output, id)).map_err(store)?;
        Ok(state)
    }

    pub(super) fn insert_dead_letter(
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

    pub(super) fn remove_dead_letter(
        &mut self,
        output: &str,
        id: &RecordId,
    ) -> Result<(), WalError> {
        self.dead.remove(output_key(output, id)).map_err(store)?;
        let removed = remove_payload(&mut self.payloads, output, id)?;
        if let Some(len) = removed {
            self.add_used(-(allocation_estimate(len) as i128))?;
        }
        Ok(())
    }

    /// Drop the record when none of its outputs has it pending; returns whether it left.
    pub(super) fn finish_if_done(&mut self, id: &RecordId) -> Result<bool, WalError> {
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

    pub(super) fn drop_exporter_if_done(&mut self, uid: &str) -> Result<(), WalError> {
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
