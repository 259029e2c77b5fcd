//! A backfill's own cursor and its refused outputs (docs/design.md#backfill). A backfill is kept as
//! an exporter of its own in the store, [`backfill_uid`]: its records, pending deliveries and
//! watermark (the backfill's cursor) live beside the live exporter's and never collide with them,
//! and the drain loops deliver them like any other.

use super::tables::{WriteTables, read_exporter, store};
use super::{PurgeScope, Wal, WalError, WalFilter};

/// Separates an exporter's uid from its backfill's `requestId` in the backfill's uid.
const BACKFILL_MARK: &str = "#backfill:";

/// The store's uid of `request_id`'s backfill of the exporter `uid`.
pub(crate) fn backfill_uid(uid: &str, request_id: &str) -> String {
    format!("{uid}{BACKFILL_MARK}{request_id}")
}

/// The exporter uid of a backfill's uid; `None` for a live exporter's.
pub(crate) fn backfill_parent(uid: &str) -> Option<&str> {
    uid.split_once(BACKFILL_MARK).map(|(parent, _)| parent)
}

impl Wal {
    /// `output` refused a backfill's window for good (an out-of-order sample): the backfill stops
    /// for that output — its pending windows there are dropped instead of dead-lettered one by one,
    /// and `why` is kept so the backfill skips the output from now on and its status says so.
    pub(crate) fn fail_backfill_output(
        &self,
        backfill_uid: &str,
        output: &str,
        why: &str,
    ) -> Result<usize, WalError> {
        let filter = WalFilter {
            output: Some(output.to_owned()),
            exporter_uid: Some(backfill_uid.to_owned()),
            ..WalFilter::default()
        };
        let dropped = self.purge(&filter, PurgeScope::Pending)?;
        self.write(|tx| {
            let mut t = WriteTables::open(tx)?;
            if let Some(mut state) = read_exporter(&t.exporters, backfill_uid)? {
                state
                    .failed_outputs
                    .insert(output.to_owned(), why.to_owned());
                t.put_exporter(backfill_uid, &state)?;
            }
            Ok(())
        })?;
        Ok(dropped)
    }

    /// The uids of `uid`'s backfills whose cursor is still kept (not forgotten): one range read
    /// of the exporters table, cheap enough for every exporter task's start.
    pub(crate) fn backfills_of(&self, uid: &str) -> Result<Vec<String>, WalError> {
        let prefix = format!("{uid}{BACKFILL_MARK}");
        self.read(|tx| {
            let exporters = tx.open_table(super::tables::EXPORTERS).map_err(store)?;
            let mut out = Vec::new();
            for entry in exporters.range(prefix.as_str()..).map_err(store)? {
                let (key, value) = entry.map_err(store)?;
                let key = key.value();
                if !key.starts_with(&prefix) {
                    break;
                }
                let forgotten = super::record::decode_exporter(value.value())
                    .map(|s| s.forgotten)
                    .unwrap_or(false);
                if !forgotten {
                    out.push(key.to_owned());
                }
            }
            Ok(out)
        })
    }

    /// The outputs that refused a backfill for good, with why.
    pub(crate) fn backfill_failures(
        &self,
        backfill_uid: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, WalError> {
        self.read(|tx| {
            let exporters = tx.open_table(super::tables::EXPORTERS).map_err(store)?;
            Ok(read_exporter(&exporters, backfill_uid)?
                .map(|s| s.failed_outputs)
                .unwrap_or_default())
        })
    }
}
