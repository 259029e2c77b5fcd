//! Sources of MetricsExporter resources. Each publishes [`Snapshot`](crate::registry::Snapshot)s of the desired set on a
//! `watch` channel; the scheduler and the status writer read them and never learn where a resource
//! came from. Standalone mode reads a directory ([`manifests`]); Kubernetes mode ([`kube`]) watches
//! the API server and publishes the same snapshots.

pub mod kube;
pub mod manifests;

use crate::registry::{Rejected, Snapshot};

/// Logs what changed in the rejected set (the scheduler logs every exporter it starts).
pub(crate) fn report(now: &Snapshot, before: &Snapshot) {
    for (key, why) in &now.rejected {
        if before.rejected.get(key) != Some(why) {
            log_rejected(key, why);
        }
    }
    let running: std::collections::HashSet<String> =
        now.desired.values().map(|e| e.key()).collect();
    for key in before.rejected.keys() {
        if !now.rejected.contains_key(key) && !running.contains(key) {
            tracing::info!(exporter = %key, "removed");
        }
    }
}

/// Logs one resource's change, as [`report`] does for whole snapshots: `None` is not shown at all,
/// `Some(None)` runs here, `Some(Some(why))` is rejected.
pub(crate) fn report_change(
    key: &str,
    before: Option<Option<&Rejected>>,
    now: Option<Option<&Rejected>>,
) {
    match now {
        Some(Some(why)) if before != now => log_rejected(key, why),
        None if before.is_some() => tracing::info!(exporter = %key, "removed"),
        _ => {}
    }
}

fn log_rejected(key: &str, why: &Rejected) {
    match why {
        // Sharding skips are most resources on every replica: not worth an info line each.
        Rejected::NotOwned { owner, replicas } => {
            tracing::debug!(exporter = %key, "skipped: owned by replica {owner} of {replicas}")
        }
        Rejected::Skipped(reason) => tracing::info!(exporter = %key, "skipped: {reason}"),
        Rejected::Invalid(lines) => {
            for line in lines {
                tracing::error!(exporter = %key, "invalid resource: {line}");
            }
        }
        Rejected::CriteriaError(message) => {
            tracing::error!(exporter = %key, "not run here: {message}")
        }
        Rejected::FileSkipped(reason) => tracing::warn!(file = %key, "not read: {reason}"),
    }
}
