//! Kubernetes mode's single writer of `.status` (docs/design.md#status-writers): every [`KUBE_STATUS_INTERVAL`] it
//! computes each status with the same pure [`exporter_status`] as standalone mode and PATCHes the
//! status subresource with a JSON merge patch (field manager `adxexporter`).
//!
//! Invariants:
//! - Only resources this instance processes get a status: desired exporters and resources it
//!   rejected as invalid or whose `criteriaExpression` it cannot evaluate. Skipped ones (criteria,
//!   or owned by another replica) are never touched.
//! - At most one patch per resource per interval, and only when the status changed since the last
//!   successful patch; a condition keeps its `lastTransitionTime` while its status is unchanged,
//!   so a steady exporter costs no API calls.
//! - A merge patch leaves absent fields alone, so fields that became empty are sent as `null`.
//!   The watermark is never cleared: while this instance's WAL has none (first start, new owner
//!   after a rescale, migration from adx-mon) the resume point read from the resource is written
//!   back, so the adx-mon cursor condition, which the patch replaces with our conditions, is not lost.
//! - A resource deleted meanwhile (404) is not an error; other failures are logged once per change
//!   and retried next round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Board, DeadLetterSummary, RetryingOutput, StatusError, carry_transition_times,
    dead_letter_summaries, exporter_status, rejected_status, retrying_outputs,
};
use crate::crd::{MetricsExporter, MetricsExporterStatus};
use crate::registry::Rejected;
use crate::registry::Snapshot;
use crate::time::Ticks;
use crate::wal::{Wal, WalStats};

/// Shortest time between two patches of one resource.
pub(crate) const KUBE_STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// The field manager of every status patch.
pub(crate) const FIELD_MANAGER: &str = "adxexporter";
/// Status patches in flight at once.
const PATCH_CONCURRENCY: usize = 8;
/// Longest the last round at shutdown may take.
const FINAL_ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Optional fields inside status objects that must be sent as `null` when empty.
const CLEARABLE: &[(&str, &[&str])] = &[
    ("backlog", &["oldestWindowStart"]),
    ("deadLettered", &["lastReason"]),
    (
        "lastQuery",
        &["windowStart", "windowEnd", "rows", "durationMs", "error"],
    ),
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeStatusError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(
        "cannot patch the status of MetricsExporter {key}: {source} (check that RBAC allows patch on metricsexporters/status)"
    )]
    Patch { key: String, source: kube::Error },
}

/// One status to write, for the resource `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub namespace: String,
    pub name: String,
    pub status: MetricsExporterStatus,
}

impl StatusTarget {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The statuses this instance owns for `snap`. Pure apart from reading the board.
pub fn targets(
    snap: &Snapshot,
    board: &Board,
    stats: &WalStats,
    dead: &BTreeMap<String, DeadLetterSummary>,
    retrying: &BTreeMap<String, Vec<RetryingOutput>>,
    now: Ticks,
) -> Vec<StatusTarget> {
    let mut out = Vec::new();
    for exporter in snap.desired.values() {
        let runtime = board.get(&exporter.id.uid);
        let d = dead.get(&exporter.id.uid).cloned().unwrap_or_default();
        let r = retrying
            .get(&exporter.id.uid)
            .map_or(&[][..], Vec::as_slice);
        let mut status = exporter_status(exporter, &runtime, stats, &d, r, now);
        if status.watermark.is_none() {
            status.watermark = exporter.status_watermark.map(|t| t.to_string());
        }
        out.push(StatusTarget {
            namespace: exporter.id.namespace.clone(),
            name: exporter.id.name.clone(),
            status,
        });
    }
    for (key, why) in &snap.rejected {
        // A criteriaExpression that cannot be evaluated with *this* instance's labels says nothing
        // about the resource: an instance with other labels may be running it. docs/design.md#criteria: status only
        // for resources this instance processes (the log and the exporters gauge say why not).
        if matches!(why, Rejected::CriteriaError(_) | Rejected::FileSkipped(_)) {
            // (A skipped file exists only in standalone mode, keyed by its path.)
            continue;
        }
        let (Some(status), Some((namespace, name))) =
            (rejected_status(why, now), key.split_once('/'))
        else {
            continue;
        };
        out.push(StatusTarget {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            status,
        });
    }
    out
}

/// The merge patch that makes the server's status equal `status` (cleared fields as `null`).
pub fn merge_patch(status: &MetricsExporterStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Value::Object(top) = &mut value {
        for (object, fields) in CLEARABLE {
            if let Some(Value::Object(inner)) = top.get_mut(*object) {
                for field in *fields {
                    inner.entry(*field).or_insert(Value::Null);
                }
            }
        }
    }
    json!({ "status": value })
}

/// Patches `.status` of every resource this instance processes, at a bounded rate.
pub(crate) struct KubeStatusWriter {
    client: kube::Client,
    wal: Wal,
    board: Arc<Board>,
    /// The last status successfully patched, by `namespace/name`.
    written: HashMap<String, MetricsExporterStatus>,
    /// The last error logged per resource (each is logged once until it changes or recovers).
    failing: HashMap<String, String>,
}

impl KubeStatusWriter {
    pub fn new(client: kube::Client, wal: Wal, board: Arc<Board>) -> KubeStatusWriter {
        KubeStatusWriter {
            client,
            wal,
            board,
            written: HashMap::new(),
            failing: HashMap::new(),
        }
    }

    /// Writes every interval until `shutdown`, then once more (bounded) with the final state.
    pub async fn run(
        mut self,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> Result<(), KubeStatusError> {
        loop {
            let snap = snapshots.borrow().clone();
            if shutdown.is_cancelled() {
                if tokio::time::timeout(FINAL_ROUND_TIMEOUT, self.round(&snap))
                    .await
                    .is_err()
                {
                    tracing::warn!("the last status update did not finish in time");
                }
                return Ok(());
            }
            self.round(&snap).await;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(KUBE_STATUS_INTERVAL) => {}
            }
        }
    }

    /// Computes every status and patches those that changed.
    async fn round(&mut self, snap: &Arc<Snapshot>) {
        let (wal, board, s) = (self.wal.clone(), self.board.clone(), snap.clone());
        let computed = tokio::task::spawn_blocking(move || {
            let stats = wal.stats().map_err(StatusError::from)?;
            let dead = dead_letter_summaries(&wal)?;
            let retrying = retrying_outputs(&wal, &stats)?;
            Ok::<_, StatusError>(targets(&s, &board, &stats, &dead, &retrying, Ticks::now()))
        })
        .await;
        let targets = match computed {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return tracing::warn!("status not updated: {e}"),
            Err(e) => return tracing::warn!("status task failed: {e}"),
        };
        let live: HashSet<String> = targets.iter().map(StatusTarget::key).collect();
        self.written.retain(|k, _| live.contains(k));
        self.failing.retain(|k, _| live.contains(k));
        let mut changed = Vec::new();
        for mut target in targets {
            let previous = self.written.get(&target.key());
            carry_transition_times(previous, &mut target.status);
            if previous != Some(&target.status) {
                changed.push(target);
            }
        }
        let client = self.client.clone();
        let results: Vec<_> = futures::stream::iter(changed)
            .map(|target| {
                let client = client.clone();
                async move {
                    let result = patch_status(client, &target).await;
                    (target, result)
                }
            })
            .buffer_unordered(PATCH_CONCURRENCY)
            .collect()
            .await;
        for (target, result) in results {
            self.record(target, result);
        }
    }

    fn record(&mut self, target: StatusTarget, result: Result<(), KubeStatusError>) {
        let key = target.key();
        match result {
            Ok(()) => {
                if self.failing.remove(&key).is_some() {
                    tracing::info!(exporter = %key, "status updates work again");
                }
                self.written.insert(key, target.status);
            }
            Err(KubeStatusError::Patch { source, .. }) if is_not_found(&source) => {
                tracing::debug!(exporter = %key, "not patched: the resource was deleted");
                self.written.remove(&key);
            }
            Err(e) => {
                let message = e.to_string();
                if self.failing.get(&key) != Some(&message) {
                    tracing::warn!(exporter = %key, "{message}; retrying every {}s", KUBE_STATUS_INTERVAL.as_secs());
                    self.failing.insert(key, message);
                }
            }
        }
    }
}

async fn patch_status(client: kube::Client, target: &StatusTarget) -> Result<(), KubeStatusError> {
    let api: Api<MetricsExporter> = Api::namespaced(client, &target.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let body = merge_patch(&target.status);
    api.patch_status(&target.name, &params, &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(|source| KubeStatusError::Patch {
            key: target.key(),
            source,
        })
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BacklogStatus, Condition, LastQueryStatus};
    use crate::registry::Rejected;

    #[test]
    fn cleared_nested_fields_are_sent_as_null_and_absent_top_level_fields_are_left_alone() {
        let status = MetricsExporterStatus {
            backlog: Some(BacklogStatus::default()),
            last_query: Some(LastQueryStatus {
                rows: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = merge_patch(&status);
        let s = &patch["status"];
        assert_eq!(s["lastQuery"]["error"], Value::Null);
        assert!(s["lastQuery"].as_object().unwrap().contains_key("error"));
        assert_eq!(s["lastQuery"]["rows"], 3);
        assert!(
            s["backlog"]
                .as_object()
                .unwrap()
                .contains_key("oldestWindowStart")
        );
        assert!(!s.as_object().unwrap().contains_key("watermark"));
    }

    fn condition(type_: &str, status: &str, at: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            last_transition_time: at.into(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_times_stay_while_a_condition_is_unchanged() {
        let before = MetricsExporterStatus {
            conditions: vec![
                condition("Ready", "True", "t1"),
                condition("QueryHealthy", "True", "t1"),
            ],
            ..Default::default()
        };
        let mut next = MetricsExporterStatus {
            conditions: vec![
                condition("Ready", "True", "t2"),
                condition("QueryHealthy", "False", "t2"),
            ],
            ..Default::default()
        };
        carry_transition_times(Some(&before), &mut next);
        assert_eq!(next.conditions[0].last_transition_time, "t1");
        assert_eq!(next.conditions[1].last_transition_time, "t2");
        let mut same = before.clone();
        same.conditions[0].last_transition_time = "t3".into();
        carry_transition_times(Some(&before), &mut same);
        assert_eq!(same, before, "an unchanged status is not patched again");
    }

    #[test]
    fn only_processed_resources_get_a_status() {
        let mut snap = Snapshot::default();
        snap.rejected.insert(
            "ns/skipped".into(),
            Rejected::NotOwned {
                owner: 1,
                replicas: 2,
            },
        );
        snap.rejected.insert(
            "ns/bad".into(),
            Rejected::Invalid(vec!["spec.interval: x".into()]),
        );
        snap.rejected.insert(
            "ns/cel".into(),
            Rejected::CriteriaError("spec.criteriaExpression: refers to zone".into()),
        );
        let t = targets(
            &snap,
            &Board::default(),
            &empty_stats(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            Ticks::UNIX_EPOCH,
        );
        // The CEL error depends on this instance's labels: another instance may run `ns/cel`.
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key(), "ns/bad");
        assert_eq!(t[0].status.conditions[0].reason, "InvalidSpec");
    }

    fn empty_stats() -> WalStats {
        WalStats {
            records: 0,
            used_bytes: 0,
            max_bytes: 1 << 30,
            file_bytes: 0,
            dead_letters: 0,
            exporters: vec![],
            outputs: vec![],
        }
    }

    #[test]
    fn without_a_wal_watermark_the_resources_resume_point_is_kept() {
        let yaml = [
            "apiVersion: adx-mon.azure.com/v1",
            "kind: MetricsExporter",
            "metadata: {name: a, namespace: ns, uid: u-a}",
            "spec:",
            "  database: db",
            "  interval: 1m",
            "  body: T",
            "  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}",
            "status:",
            "  conditions:",
            "  - type: metricsexporter.adx-mon.azure.com/LastSuccessfulExecution",
            "    status: 'True'",
            "    reason: Ok",
            "    message: '2026-11-25T10:00:00Z'",
            "    lastTransitionTime: '2026-11-25T10:00:00Z'",
        ]
        .join("\n");
        let resource = crate::crd::load_documents(&yaml)
            .unwrap()
            .remove(0)
            .unwrap()
            .resource;
        let exporter =
            crate::registry::Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
        let mut snap = Snapshot::default();
        snap.desired.insert("u-a".into(), Arc::new(exporter));
        let t = targets(
            &snap,
            &Board::default(),
            &empty_stats(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            Ticks::UNIX_EPOCH,
        );
        assert_eq!(t[0].key(), "ns/a");
        assert_eq!(
            t[0].status.watermark.as_deref(),
            Some("2026-11-25T10:00:00Z")
        );
        assert_eq!(t[0].status.observed_generation, Some(0));
    }

    #[tokio::test]
    async fn patches_the_status_subresource_by_merge_patch_only_when_changed() {
        use crate::kube_support::{FakeApi, exporter};
        // ns/a exists; ns/gone was deleted (its patch gets 404).
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", serde_json::json!({"database": "db"})));
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(
            dir.path(),
            crate::wal::WalConfig::new(1 << 20, ["remote_write"]),
        )
        .unwrap();
        let yaml = [
            "apiVersion: adx-mon.azure.com/v1",
            "kind: MetricsExporter",
            "metadata: {name: a, namespace: ns, uid: u-a, generation: 4}",
            "spec:",
            "  database: db",
            "  interval: 1m",
            "  body: T",
            "  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}",
        ]
        .join("\n");
        let resource = crate::crd::load_documents(&yaml)
            .unwrap()
            .remove(0)
            .unwrap()
            .resource;
        let exporter =
            crate::registry::Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
        let mut snap = Snapshot::default();
        snap.desired.insert("u-a".into(), Arc::new(exporter));
        snap.rejected.insert(
            "ns/gone".into(),
            Rejected::Invalid(vec!["spec.body: missing".into()]),
        );
        snap.rejected.insert(
            "ns/other".into(),
            Rejected::NotOwned {
                owner: 1,
                replicas: 2,
            },
        );
        let snap = Arc::new(snap);
        let mut writer =
            KubeStatusWriter::new(fake.client().await, wal, Arc::new(Board::default()));

        writer.round(&snap).await;
        let mut got = fake.status_patches();
        got.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(got.len(), 2, "{got:?}");
        let a = &got[0];
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("ns", "a"));
        assert_eq!(a.content_type, "application/merge-patch+json");
        let request = (fake.requests().into_iter())
            .find(|r| r.method == "PATCH" && r.path.ends_with("/metricsexporters/a/status"))
            .expect("the PATCH of ns/a was recorded");
        assert!(
            request.query.contains("fieldManager=adxexporter"),
            "{}",
            request.query
        );
        assert_eq!(a.body["status"]["observedGeneration"], 4);
        let types: Vec<&str> = (a.body["status"]["conditions"].as_array().unwrap().iter())
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "QueryHealthy", "DeliveryHealthy"]);
        assert_eq!((got[1].name.as_str(), got[1].code), ("gone", 404));
        assert!(writer.written.contains_key("ns/a"));
        assert!(
            !writer.written.contains_key("ns/gone"),
            "404 is forgotten, not an error"
        );
        assert!(writer.failing.is_empty());

        // Nothing changed for ns/a: no second patch (the deleted one is tried until it leaves the snapshot).
        writer.round(&snap).await;
        let again: Vec<String> = (fake.status_patches().into_iter().skip(2))
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        assert!(again.iter().all(|p| p != "ns/a"), "{again:?}");
    }
}
