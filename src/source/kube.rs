//! Kubernetes mode: MetricsExporter resources from the API server (all namespaces, or
//! `--namespace`), through a kube-runtime watcher (list, then watch; relist on desync).
//!
//! Publishes the same [`Snapshot`]s as the `--manifests` source, so nothing downstream knows where
//! a resource came from. Each object is classified once per change, in this order:
//! 1. not owned by this replica (sharding, [`crate::shard`]) → `Skipped` (no status written);
//! 2. `criteria`, or a `criteriaExpression` that compiles, do not match `--cluster-labels` →
//!    `Skipped` (no status written, docs/design.md#criteria);
//! 3. invalid spec (a CEL syntax error included) → `Invalid` (status says why);
//! 4. a `criteriaExpression` that cannot be evaluated here (unknown label, not a bool, runtime
//!    error) → `CriteriaError` (not run; logged and counted, no status written: another instance
//!    with other labels may run it, docs/design.md#criteria);
//! 5. otherwise an [`Exporter`] with the uid, generation and resume watermark of the object.
//!
//! A deleted object leaves the snapshot: the scheduler stops querying it, and the WAL still
//! delivers what it appended. The first snapshot is published after the initial list (then the
//! instance is ready); during a relist the previous snapshot stays in force until the new list is
//! complete. Watch errors are logged and retried with kube's default backoff: a flaky API server
//! never stops the process. The loop ends only on the process's shutdown token.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::kube::Api;
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::MetricsExporter;
use crate::criteria::expression::CriteriaExpression;
use crate::criteria::{self, Placement};

use crate::registry::{Exporter, Rejected, Snapshot};
use crate::shard::Shard;
use crate::telemetry::Health;

/// Events applied before a snapshot is published (a burst becomes one snapshot).
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeSourceError {
    #[error("the Kubernetes watch of MetricsExporter resources ended unexpectedly")]
    WatchEnded,
}

/// What decides which resources run here.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub cluster_labels: BTreeMap<String, String>,
    /// `--metric-name-prefix`.
    pub cli_prefix: String,
    pub shard: Shard,
}

/// One object, classified: its `namespace/name` key and what runs (or why not).
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    outcome: Result<Arc<Exporter>, Rejected>,
}

/// Decides whether `resource` runs here (see the module doc for the order).
pub(crate) fn classify(resource: &MetricsExporter, filter: &Filter) -> Result<Exporter, Rejected> {
    let uid = resource
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| resource.key());
    if let Some(owner) = filter.shard.other_owner(&uid) {
        return Err(Rejected::NotOwned {
            owner,
            replicas: filter.shard.replicas,
        });
    }
    // Criteria first: a resource meant for other clusters is none of our business, valid or not.
    // An expression that does not compile or errors here is left to validation and reporting.
    let expression = resource
        .spec
        .criteria_expression
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .and_then(|e| CriteriaExpression::compile(e).ok());
    if let Placement::Skipped(reason) = criteria::place(
        &resource.spec.criteria,
        expression.as_ref(),
        &filter.cluster_labels,
    ) {
        return Err(Rejected::Skipped(reason));
    }
    Exporter::from_resource(resource, &filter.cluster_labels, &filter.cli_prefix)
}

/// The snapshot of a set of objects. Pure.
#[cfg(test)]
pub(crate) fn build_snapshot<'a>(
    resources: impl IntoIterator<Item = &'a MetricsExporter>,
    filter: &Filter,
) -> Snapshot {
    let entries: Vec<Entry> = resources.into_iter().map(|r| entry(r, filter)).collect();
    assemble(entries.iter())
}

fn entry(resource: &MetricsExporter, filter: &Filter) -> Entry {
    Entry {
        key: resource.key(),
        outcome: classify(resource, filter).map(Arc::new),
    }
}

fn assemble<'a>(entries: impl Iterator<Item = &'a Entry>) -> Snapshot {
    let mut snap = Snapshot::default();
    for e in entries {
        match &e.outcome {
            Ok(exporter) => {
                snap.desired
                    .insert(exporter.id.uid.clone(), exporter.clone());
            }
            Err(why) => {
                snap.rejected.insert(e.key.clone(), why.clone());
            }
        }
    }
    snap
}

/// Watches the API and publishes snapshots until `shutdown`.
pub(crate) struct KubeSource {
    api: Api<MetricsExporter>,
    filter: Filter,
}

impl KubeSource {
    /// Watches `namespace`, or every namespace when `None`.
    pub fn new(client: kube::Client, namespace: Option<&str>, filter: Filter) -> KubeSource {
        let api = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        KubeSource { api, filter }
    }

    pub async fn run(
        self,
        tx: watch::Sender<Arc<Snapshot>>,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Result<(), KubeSourceError> {
        let stream =
            watcher::watcher(self.api.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut state = WatchState::default();
        let mut last = Snapshot::default();
        let mut synced = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = stream.next() => next,
            };
            let Some(first) = next else {
                return Err(KubeSourceError::WatchEnded);
            };
            state.apply(first, &self.filter);
            // Take what is already buffered so a burst (a relist, a rollout) is one snapshot.
            for _ in 0..MAX_BATCH {
                match stream.next().now_or_never() {
                    Some(Some(event)) => state.apply(event, &self.filter),
                    Some(None) => return Err(KubeSourceError::WatchEnded),
                    None => break,
                }
            }
            if !state.listed() {
                continue;
            }
            let snap = state.snapshot();
            if snap != last || !synced {
                super::report(&snap, &last);
                tx.send_replace(Arc::new(snap.clone()));
                last = snap;
            }
            if !synced {
                synced = true;
                health.set_resources_synced();
                tracing::info!(
                    exporters = last.desired.len(),
                    rejected = last.rejected.len(),
                    "initial list of MetricsExporter resources done"
                );
            }
        }
    }
}

/// The objects seen so far, classified, and any relist in progress.
#[derive(Debug, Default)]
struct WatchState {
    /// By `namespace/name`.
    entries: BTreeMap<String, Entry>,
    /// Entries of a relist in progress (replace `entries` when it is done).
    relist: Option<BTreeMap<String, Entry>>,
    /// Whether a full list has completed at least once.
    listed_once: bool,
}

impl WatchState {
    fn apply(&mut self, event: Result<Event<MetricsExporter>, watcher::Error>, filter: &Filter) {
        match event {
            Err(e) => tracing::warn!(
                "watching MetricsExporter resources: {e} (retrying with backoff; check that the CRD is installed — `adxexporter crd | kubectl apply -f -` — and that RBAC allows list and watch on metricsexporters.adx-mon.azure.com)"
            ),
            Ok(Event::Init) => self.relist = Some(BTreeMap::new()),
            Ok(Event::InitApply(r)) => {
                let e = entry(&r, filter);
                self.relist.get_or_insert_default().insert(e.key.clone(), e);
            }
            Ok(Event::InitDone) => {
                self.entries = self.relist.take().unwrap_or_default();
                self.listed_once = true;
            }
            Ok(Event::Apply(r)) => {
                let e = entry(&r, filter);
                self.entries.insert(e.key.clone(), e);
            }
            Ok(Event::Delete(r)) => {
                self.entries.remove(&r.key());
            }
        }
    }

    /// Whether the entries are a complete view (a list finished and no relist is in progress).
    fn listed(&self) -> bool {
        self.listed_once && self.relist.is_none()
    }

    fn snapshot(&self) -> Snapshot {
        assemble(self.entries.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, uid: &str, extra: &str) -> MetricsExporter {
        let yaml = format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\n\
             metadata: {{name: {name}, namespace: ns, uid: {uid}, generation: 3}}\n\
             spec:\n  database: db\n  interval: 1m\n  body: T\n{extra}\
             \n  transform: {{valueColumns: [v], timestampColumn: ts, defaultMetricName: m}}\n"
        );
        let docs = crate::crd::load_documents(&yaml).expect("parses");
        docs.into_iter()
            .next()
            .expect("one")
            .expect("valid")
            .resource
    }

    fn filter(shard: Shard) -> Filter {
        Filter {
            cluster_labels: BTreeMap::from([("region".to_owned(), "eastus".to_owned())]),
            cli_prefix: String::new(),
            shard,
        }
    }

    #[test]
    fn objects_become_exporters_keyed_by_uid_with_their_generation() {
        let snap = build_snapshot(&[resource("a", "u-a", "")], &filter(Shard::SINGLE));
        let e = snap.desired.get("u-a").expect("desired by uid");
        assert_eq!(e.generation, 3);
        assert_eq!(e.key(), "ns/a");
        assert!(snap.rejected.is_empty());
    }

    #[test]
    fn criteria_mismatch_is_skipped_even_when_invalid() {
        let r = resource(
            "a",
            "u-a",
            "  criteria: {region: [westus]}\n  ingestionDelay: bogus",
        );
        let snap = build_snapshot([&r], &filter(Shard::SINGLE));
        assert!(matches!(
            snap.rejected.get("ns/a"),
            Some(Rejected::Skipped(_))
        ));
    }

    #[test]
    fn criteria_expression_decides_like_criteria() {
        let runs = resource("a", "u-a", "  criteriaExpression: region == 'eastus'");
        let other = resource("b", "u-b", "  criteriaExpression: region == 'westus'");
        let broken = resource("c", "u-c", "  criteriaExpression: zone == '1'");
        let syntax = resource("d", "u-d", "  criteriaExpression: region ==");
        let snap = build_snapshot([&runs, &other, &broken, &syntax], &filter(Shard::SINGLE));
        assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["u-a"]);
        assert!(matches!(
            snap.rejected.get("ns/b"),
            Some(Rejected::Skipped(r)) if r.contains("region == 'westus'")
        ));
        assert!(matches!(
            snap.rejected.get("ns/c"),
            Some(Rejected::CriteriaError(m)) if m.starts_with("spec.criteriaExpression: refers to zone")
        ));
        assert!(matches!(
            snap.rejected.get("ns/d"),
            Some(Rejected::Invalid(lines)) if lines[0].starts_with("spec.criteriaExpression: ")
        ));
    }

    #[test]
    fn a_false_expression_is_skipped_even_when_invalid() {
        let r = resource(
            "a",
            "u-a",
            "  criteriaExpression: region == 'westus'\n  ingestionDelay: bogus",
        );
        let snap = build_snapshot([&r], &filter(Shard::SINGLE));
        assert!(matches!(
            snap.rejected.get("ns/a"),
            Some(Rejected::Skipped(_))
        ));
    }

    #[test]
    fn each_resource_runs_on_exactly_one_replica() {
        let list: Vec<MetricsExporter> = (0..50)
            .map(|i| resource(&format!("r{i}"), &format!("uid-{i}"), ""))
            .collect();
        let mut runs = BTreeMap::<String, u32>::new();
        for ordinal in 0..3 {
            let snap = build_snapshot(
                &list,
                &filter(Shard {
                    ordinal,
                    replicas: 3,
                }),
            );
            assert_eq!(snap.desired.len() + snap.rejected.len(), 50);
            for uid in snap.desired.keys() {
                *runs.entry(uid.clone()).or_default() += 1;
            }
            for why in snap.rejected.values() {
                assert!(matches!(why, Rejected::NotOwned { .. }), "{why:?}");
            }
        }
        assert_eq!(runs.len(), 50);
        assert!(runs.values().all(|&n| n == 1));
    }

    #[test]
    fn a_relist_replaces_the_set_and_deletions_leave_it() {
        let f = filter(Shard::SINGLE);
        let mut state = WatchState::default();
        state.apply(Ok(Event::Init), &f);
        state.apply(Ok(Event::InitApply(resource("a", "u-a", ""))), &f);
        assert!(!state.listed(), "not complete before InitDone");
        state.apply(Ok(Event::InitDone), &f);
        assert!(state.listed());
        state.apply(Ok(Event::Apply(resource("b", "u-b", ""))), &f);
        assert_eq!(state.snapshot().desired.len(), 2);
        state.apply(Ok(Event::Delete(resource("a", "u-a", ""))), &f);
        let snap = state.snapshot();
        assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["u-b"]);
        // A relist in progress keeps the old view until it is done, then replaces it.
        state.apply(Ok(Event::Init), &f);
        assert!(!state.listed());
        assert_eq!(state.snapshot(), snap);
        state.apply(Ok(Event::InitApply(resource("c", "u-c", ""))), &f);
        state.apply(Ok(Event::InitDone), &f);
        assert_eq!(state.snapshot().desired.keys().collect::<Vec<_>>(), ["u-c"]);
    }

    /// Guards against a hang; never a timing assertion.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(20), f)
            .await
            .expect("the fake API server answered")
    }

    #[tokio::test]
    async fn lists_then_watches_the_api_server() {
        use crate::kube_support::{FakeApi, exporter};
        use serde_json::{Value, json};
        let spec = |criteria: Value| {
            json!({
                "database": "db", "interval": "1m", "body": "T", "criteria": criteria,
                "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"}
            })
        };
        let fake = FakeApi::start().await;
        let a = fake.create(exporter("n1", "a", spec(json!({}))));
        let uid_a = a["metadata"]["uid"].as_str().unwrap().to_owned();
        fake.set_spec("n1", "a", spec(json!({"region": ["EastUS", "westus"]})));
        fake.set_status("n1", "a", json!({"watermark": "2026-11-25T10:00:00Z"}));
        fake.create(exporter("n1", "b", spec(json!({"region": ["westus"]}))));
        let source = KubeSource::new(fake.client().await, None, filter(Shard::SINGLE));
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let health = Arc::new(Health::default());
        health.set_wal_open();
        let stop = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, health.clone(), stop.clone()));

        within(rx.changed()).await.unwrap();
        let snap = rx.borrow_and_update().clone();
        let e = snap.desired.get(&uid_a).expect("a runs");
        assert_eq!(e.generation, 2, "a spec change is a new generation");
        assert_eq!(
            e.status_watermark,
            Some(crate::time::Ticks::parse("2026-11-25T10:00:00Z").unwrap())
        );
        assert!(matches!(
            snap.rejected.get("n1/b"),
            Some(Rejected::Skipped(_))
        ));
        assert_eq!(health.ready(), Ok(()), "ready once the list is synced");

        fake.delete("n1", "a");
        within(rx.changed()).await.unwrap();
        assert!(
            rx.borrow_and_update().desired.is_empty(),
            "a deleted resource stops"
        );

        let c = fake.create(exporter("n2", "c", spec(json!({"region": ["EastUS"]}))));
        within(rx.changed()).await.unwrap();
        assert_eq!(
            rx.borrow_and_update().desired.keys().collect::<Vec<_>>(),
            [c["metadata"]["uid"].as_str().unwrap()]
        );

        stop.cancel();
        assert!(within(task).await.unwrap().is_ok());
    }
}
