//! Kubernetes mode: MetricsExporter resources from the API server (all namespaces, or
//! `--namespace`), through a kube-runtime watcher (list, then watch; relist on desync), and the
//! replica count from this pod's StatefulSet (a second watcher on that one object, unless
//! `--replicas` fixes it: [`Membership`]).
//!
//! Publishes the same [`Snapshot`]s as the `--manifests` source, so nothing downstream knows where
//! a resource came from. Each object is classified when it changes, in this order:
//! 1. being deleted (`metadata.deletionTimestamp`) → left out, as if already gone: the scheduler
//!    stops querying it and the WAL still delivers what it appended;
//! 2. not owned by this replica (sharding, [`crate::shard`]) → `NotOwned` (no status written);
//! 3. `criteria`, or a `criteriaExpression` that compiles, do not match `--cluster-labels` →
//!    `Skipped` (no status written, docs/design.md#criteria);
//! 4. invalid spec (a CEL syntax error included) → `Invalid` (status says why);
//! 5. a `criteriaExpression` that cannot be evaluated here (unknown label, not a bool, runtime
//!    error) → `CriteriaError` (not run; logged and counted, no status written: another instance
//!    with other labels may run it, docs/design.md#criteria);
//! 6. otherwise an [`Exporter`] with the uid, generation and resume watermark of the object.
//!
//! Steps 3–6 do not depend on the shard and are kept per resource, for every resource whoever owns
//! it: a change of the replica count only re-runs step 2 (a rescale moves ownership without a
//! restart; a resource this replica gains starts from the newest status watermark seen), and the
//! stale check ([`is_stale`]) covers every criteria-matching resource of the fleet.
//!
//! Per event the work does not grow with the number of resources (docs/design.md#scale-out):
//! - a changed object updates its own entry of the published maps;
//! - a status-only change (same uid, `metadata.generation` and deletion state) only records the
//!   new status watermark (for the stale check, and as the resume point should this replica gain
//!   the resource): it never reaches the scheduler or the status writer — no new snapshot;
//! - snapshots are published when something changed, at most once per [`PUBLISH_EVERY`], so a burst
//!   (a relist, a rollout, a rescale) is one snapshot.
//!
//! A deleted object leaves the snapshot. The first snapshot is published after the initial list and
//! once the replica count is known (then the instance is ready); during a relist the previous
//! snapshot stays in force until the new list is complete. Watch errors are logged and retried with
//! kube's default backoff: a flaky API server never stops the process. The loop ends only on the
//! process's shutdown token.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Api;
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::crd::MetricsExporter;
use crate::criteria::expression::CriteriaExpression;
use crate::criteria::{self, Placement};
use crate::registry::{Desired, Exporter, Rejected, Snapshot};
use crate::shard::{Membership, Shard};
use crate::telemetry::Health;
use crate::telemetry::metrics::EXPORTERS_STALE;
use crate::time::{Span, Ticks};

/// Events applied before the loop looks at anything else (a burst is taken in one go).
const MAX_BATCH: usize = 1024;
/// Shortest time between two published snapshots: a burst of changes becomes one snapshot, and
/// the O(resources) cost of publishing (and of the scheduler's diff) is paid at most this often.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// How often the stale check runs.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// At most one WARN line naming stale resources per this long.
const STALE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Names in that line.
const STALE_NAMES_LOGGED: usize = 10;
/// A resource is stale when its watermark is older than now − ingestionDelay − this × interval.
pub(crate) const STALE_INTERVALS: i64 = 3;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeSourceError {
    #[error("the Kubernetes watch of MetricsExporter resources ended unexpectedly")]
    WatchEnded,
    #[error("the Kubernetes watch of StatefulSet {0} ended unexpectedly")]
    MembershipEnded(String),
}

/// What decides how resources are classified, whoever owns them.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub cluster_labels: BTreeMap<String, String>,
    /// `--metric-name-prefix`.
    pub cli_prefix: String,
}

/// What a resource is on this replica: an exporter it runs, or why not.
type Outcome = Result<Arc<Exporter>, Rejected>;

/// Decides whether `resource` runs on replica `shard` (the module doc's order, deletion aside).
#[cfg(test)]
pub(crate) fn classify(
    resource: &MetricsExporter,
    filter: &Filter,
    shard: Shard,
) -> Result<Exporter, Rejected> {
    let uid = resource
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| resource.key());
    if let Some(owner) = shard.other_owner(&uid) {
        return Err(Rejected::NotOwned {
            owner,
            replicas: shard.replicas,
        });
    }
    classify_unsharded(resource, filter)
}

/// Steps 3–6 of the module doc: what `resource` is on whichever replica owns it.
fn classify_unsharded(resource: &MetricsExporter, filter: &Filter) -> Result<Exporter, Rejected> {
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

/// What the stale check needs of one criteria-matching resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaleInput {
    /// `status.watermark` (else adx-mon's cursor condition) as last seen.
    pub watermark: Option<Ticks>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Ticks>,
    pub interval: Span,
    pub ingestion_delay: Span,
}

/// Whether a resource is stale at `now`: its watermark (or, without one, its creation time) is
/// older than now − ingestionDelay − [`STALE_INTERVALS`] × interval, i.e. no replica has moved it
/// on for three intervals more than the data needs. A resource with neither is not judged. Pure.
pub(crate) fn is_stale(input: &StaleInput, now: Ticks) -> bool {
    let Some(since) = input.watermark.or(input.created) else {
        return false;
    };
    let allowance = input
        .interval
        .0
        .saturating_mul(STALE_INTERVALS)
        .saturating_add(input.ingestion_delay.0);
    now.0.saturating_sub(since.0) > allowance
}

/// The stale resources among `inputs` (`namespace/name`, input) at `now`: their count and the
/// first `limit` names in order. Pure.
pub(crate) fn stale<'a>(
    inputs: impl Iterator<Item = (&'a str, StaleInput)>,
    now: Ticks,
    limit: usize,
) -> (usize, Vec<&'a str>) {
    let mut stale = inputs
        .filter(|(_, input)| is_stale(input, now))
        .map(|(key, _)| key);
    if limit == 0 {
        return (stale.count(), Vec::new());
    }
    let mut names: Vec<&str> = stale.by_ref().collect();
    let count = names.len();
    if limit < count {
        names.select_nth_unstable(limit);
        names.truncate(limit);
    }
    names.sort_unstable();
    (count, names)
}

/// One object as last seen, classified independently of the shard, and what is published for it.
#[derive(Debug, Clone)]
struct Slot {
    uid: String,
    generation: Option<i64>,
    deleting: bool,
    created: Option<Ticks>,
    /// The newest resume point read from the object (status watermark, else adx-mon's condition).
    resume: Option<Ticks>,
    /// Steps 3–6 of the module doc.
    base: Outcome,
    /// What the published maps hold for this object (`None`: nothing).
    shown: Option<Outcome>,
}

impl Slot {
    fn new(resource: &MetricsExporter, filter: &Filter) -> Slot {
        let meta = &resource.metadata;
        Slot {
            uid: meta.uid.clone().unwrap_or_else(|| resource.key()),
            generation: meta.generation,
            deleting: meta.deletion_timestamp.is_some(),
            created: (meta.creation_timestamp.as_ref())
                .map(|t| Ticks::from_unix_nanos(t.0.as_nanosecond())),
            resume: resource.resume_watermark(),
            base: classify_unsharded(resource, filter).map(Arc::new),
            shown: None,
        }
    }

    /// Whether `resource` differs from what this slot was built from only in its status (and
    /// metadata nothing here reads): same uid, generation and deletion state.
    fn same_but_status(&self, resource: &MetricsExporter) -> bool {
        let meta = &resource.metadata;
        meta.generation.is_some()
            && meta.generation == self.generation
            && meta.deletion_timestamp.is_some() == self.deleting
            && meta.uid.as_deref().unwrap_or_default() == self.uid
    }

    /// What to publish for this object on replica `shard`.
    fn show(&self, shard: Shard) -> Option<Outcome> {
        if self.deleting {
            return None;
        }
        if let Some(owner) = shard.other_owner(&self.uid) {
            return Some(Err(Rejected::NotOwned {
                owner,
                replicas: shard.replicas,
            }));
        }
        Some(match &self.base {
            Err(why) => Err(why.clone()),
            Ok(base) => match &self.shown {
                // Already running this very exporter: a newer status watermark changes nothing.
                Some(Ok(shown))
                    if shown.generation == base.generation
                        && shown.id == base.id
                        && shown.spec == base.spec =>
                {
                    Ok(shown.clone())
                }
                // Newly run here: resume from the newest status watermark seen.
                _ if base.status_watermark == self.resume => Ok(base.clone()),
                _ => Ok(Arc::new(Exporter {
                    status_watermark: self.resume,
                    ..(**base).clone()
                })),
            },
        })
    }

    /// The stale check's input, for a criteria-matching resource not being deleted.
    fn stale_input(&self) -> Option<StaleInput> {
        match &self.base {
            Ok(e) if !self.deleting => Some(StaleInput {
                watermark: self.resume,
                created: self.created,
                interval: e.spec.interval,
                ingestion_delay: e.spec.ingestion_delay,
            }),
            _ => None,
        }
    }
}

/// The maps the next snapshot is cloned from, kept up to date entry by entry.
#[derive(Debug, Default)]
struct Published {
    desired: Desired,
    rejected: BTreeMap<String, Rejected>,
    /// Whether they changed since the last snapshot.
    dirty: bool,
}

impl Published {
    /// Replaces what is shown for `key`; logs and marks a change. `Some(old) == new` is a no-op.
    fn replace(&mut self, key: &str, old: Option<&Outcome>, new: Option<&Outcome>) {
        if old == new {
            return;
        }
        match old {
            Some(Ok(e)) => {
                self.desired.remove(&e.id.uid);
            }
            Some(Err(_)) => {
                self.rejected.remove(key);
            }
            None => {}
        }
        match new {
            Some(Ok(e)) => {
                self.desired.insert(e.id.uid.clone(), e.clone());
            }
            Some(Err(why)) => {
                self.rejected.insert(key.to_owned(), why.clone());
            }
            None => {}
        }
        super::report_change(
            key,
            old.map(|o| o.as_ref().err()),
            new.map(|o| o.as_ref().err()),
        );
        self.dirty = true;
    }

    fn snapshot(&mut self) -> Snapshot {
        self.dirty = false;
        Snapshot {
            desired: self.desired.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

type Slots = HashMap<String, Slot, foldhash::fast::RandomState>;

/// The objects seen so far, classified, any relist in progress, and the published maps.
#[derive(Debug)]
struct WatchState {
    filter: Filter,
    /// `None` until the replica count is known.
    shard: Option<Shard>,
    /// By `namespace/name`.
    slots: Slots,
    /// Slots of a relist in progress (replace `slots` when it is done).
    relist: Option<Slots>,
    /// Whether a full list has completed at least once.
    listed_once: bool,
    published: Published,
}

impl WatchState {
    fn new(filter: Filter, shard: Option<Shard>) -> WatchState {
        WatchState {
            filter,
            shard,
            slots: Slots::default(),
            relist: None,
            listed_once: false,
            published: Published::default(),
        }
    }

    fn apply(&mut self, event: Result<Event<MetricsExporter>, watcher::Error>) {
        match event {
            Err(e) => tracing::warn!(
                "watching MetricsExporter resources: {e} (retrying with backoff; check that the CRD is installed — `adxexporter crd | kubectl apply -f -` — and that RBAC allows list and watch on metricsexporters.adx-mon.azure.com)"
            ),
            Ok(Event::Init) => self.relist = Some(Slots::default()),
            Ok(Event::InitApply(r)) => {
                let key = r.key();
                let slot = match self.slots.get(&key) {
                    Some(old) if old.same_but_status(&r) => Slot {
                        resume: r.resume_watermark(),
                        ..old.clone()
                    },
                    _ => Slot::new(&r, &self.filter),
                };
                self.relist.get_or_insert_default().insert(key, slot);
            }
            Ok(Event::InitDone) => {
                let new = self.relist.take().unwrap_or_default();
                let gone: Vec<String> = (self.slots.keys())
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove(&key);
                }
                for (key, slot) in new {
                    self.put(key, slot);
                }
                self.listed_once = true;
            }
            Ok(Event::Apply(r)) => self.apply_object(&r),
            Ok(Event::Delete(r)) => self.remove(&r.key()),
        }
    }

    /// One changed object: a status-only change is recorded in place, anything else reclassified.
    fn apply_object(&mut self, r: &MetricsExporter) {
        let key = r.key();
        if let Some(slot) = self.slots.get_mut(&key)
            && slot.same_but_status(r)
        {
            slot.resume = r.resume_watermark();
            return;
        }
        self.put(key, Slot::new(r, &self.filter));
    }

    /// Stores `slot` for `key` and publishes what changed.
    fn put(&mut self, key: String, mut slot: Slot) {
        let old = self.slots.remove(&key);
        slot.shown = old.as_ref().and_then(|o| o.shown.clone());
        let new = self.shard.and_then(|shard| slot.show(shard));
        (self.published).replace(&key, slot.shown.as_ref(), new.as_ref());
        slot.shown = new;
        self.slots.insert(key, slot);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.slots.remove(key) {
            self.published.replace(key, old.shown.as_ref(), None);
        }
    }

    /// A new replica count (or the first): ownership is decided again for every object.
    fn reshard(&mut self, shard: Shard) {
        if self.shard == Some(shard) {
            return;
        }
        self.shard = Some(shard);
        for (key, slot) in self.slots.iter_mut() {
            let new = slot.show(shard);
            self.published
                .replace(key, slot.shown.as_ref(), new.as_ref());
            slot.shown = new;
        }
    }

    /// Whether the objects are a complete view (a list finished and no relist is in progress)
    /// and ownership is known.
    fn complete(&self) -> bool {
        self.listed_once && self.relist.is_none() && self.shard.is_some()
    }

    /// The stale resources at `now` (see [`stale`]).
    fn stale(&self, now: Ticks, limit: usize) -> (usize, Vec<&str>) {
        let inputs =
            (self.slots.iter()).filter_map(|(key, slot)| Some((key.as_str(), slot.stale_input()?)));
        stale(inputs, now, limit)
    }

    #[cfg(test)]
    fn snapshot(&mut self) -> Snapshot {
        self.published.snapshot()
    }
}

/// Follows `spec.replicas` of one StatefulSet.
struct Members {
    /// `namespace/name`, for logs.
    what: String,
    ordinal: u32,
    /// The replica count last seen.
    replicas: Option<u32>,
    /// Whether the current (re)list has seen the object.
    seen: bool,
}

impl Members {
    /// The new shard when the replica count changed.
    fn apply(&mut self, event: Result<Event<StatefulSet>, watcher::Error>) -> Option<Shard> {
        let set = match event {
            Err(e) => {
                tracing::warn!(
                    "watching StatefulSet {}: {e} (retrying with backoff; check that RBAC allows get, list and watch on this StatefulSet — deploy/kubernetes/role.yaml — or give --replicas)",
                    self.what
                );
                return None;
            }
            Ok(Event::Init) => {
                self.seen = false;
                return None;
            }
            Ok(Event::InitDone) => {
                if !self.seen {
                    match self.replicas {
                        None => tracing::warn!(
                            "StatefulSet {} not found: this replica waits for it before running any resource (set --statefulset and --pod-namespace to the StatefulSet this pod belongs to, or give --replicas)",
                            self.what
                        ),
                        Some(n) => tracing::warn!(
                            "StatefulSet {} not found: keeping its last replica count {n}",
                            self.what
                        ),
                    }
                }
                return None;
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!(
                    "StatefulSet {} deleted: keeping its last replica count {:?}",
                    self.what,
                    self.replicas
                );
                return None;
            }
            Ok(Event::Apply(set) | Event::InitApply(set)) => set,
        };
        self.seen = true;
        // Kubernetes reads an absent spec.replicas as 1.
        let replicas = (set.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as u32;
        if self.replicas == Some(replicas) {
            return None;
        }
        let before = self.replicas.replace(replicas);
        let shard = Shard {
            ordinal: self.ordinal,
            replicas,
        };
        match before {
            None => tracing::info!(
                replica = self.ordinal,
                replicas,
                "replica count from StatefulSet {}",
                self.what
            ),
            Some(before) => tracing::info!(
                replica = self.ordinal,
                replicas,
                "StatefulSet {} rescaled from {before} to {replicas} replicas: resources move without a restart",
                self.what
            ),
        }
        if self.ordinal >= replicas {
            tracing::warn!(
                "ordinal {} is not below the StatefulSet's {replicas} replicas: this replica runs no exporter and only drains its WAL",
                self.ordinal
            );
        }
        Some(shard)
    }
}

type MemberStream = Pin<Box<dyn Stream<Item = Result<Event<StatefulSet>, watcher::Error>> + Send>>;

/// Watches the API and publishes snapshots until `shutdown`.
pub(crate) struct KubeSource {
    api: Api<MetricsExporter>,
    filter: Filter,
    /// The fixed shard, or the StatefulSet to follow and this pod's ordinal in it.
    fixed: Option<Shard>,
    members: Option<(Api<StatefulSet>, String, Members)>,
}

impl KubeSource {
    /// Watches `namespace`, or every namespace when `None`.
    pub fn new(
        client: kube::Client,
        namespace: Option<&str>,
        filter: Filter,
        membership: Membership,
    ) -> KubeSource {
        let api = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (fixed, members) = match membership {
            Membership::Fixed(shard) => (Some(shard), None),
            Membership::StatefulSet {
                name,
                namespace,
                ordinal,
            } => {
                let ns = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
                let members = Members {
                    what: format!("{ns}/{name}"),
                    ordinal,
                    replicas: None,
                    seen: false,
                };
                let api = Api::namespaced(client, &ns);
                (None, Some((api, name, members)))
            }
        };
        KubeSource {
            api,
            filter,
            fixed,
            members,
        }
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
        let (mut member_stream, mut members) = match self.members {
            Some((api, name, members)) => {
                // One object, by name: what RBAC `resourceNames` allows to list and watch.
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let s: MemberStream = Box::pin(watcher::watcher(api, config).default_backoff());
                (Some(s), Some(members))
            }
            None => (None, None),
        };
        let mut state = WatchState::new(self.filter, self.fixed);
        let mut synced = false;
        let mut last_publish = Instant::now();
        let mut stale_tick = tokio::time::interval(STALE_CHECK_EVERY);
        stale_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stale_logged: Option<Instant> = None;
        loop {
            let due = (synced && state.published.dirty).then_some(last_publish + PUBLISH_EVERY);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = stream.next() => {
                    let Some(first) = next else {
                        return Err(KubeSourceError::WatchEnded);
                    };
                    state.apply(first);
                    // Take what is already buffered so a burst (a relist, a rollout) is one pass.
                    for _ in 0..MAX_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(event)) => state.apply(event),
                            Some(None) => return Err(KubeSourceError::WatchEnded),
                            None => break,
                        }
                    }
                }
                next = next_member(&mut member_stream) => {
                    let Some(event) = next else {
                        let what = members.as_ref().map(|m| m.what.clone()).unwrap_or_default();
                        return Err(KubeSourceError::MembershipEnded(what));
                    };
                    if let Some(shard) = members.as_mut().and_then(|m| m.apply(event)) {
                        state.reshard(shard);
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
                _ = stale_tick.tick() => {
                    if state.complete() {
                        let now = Ticks::now();
                        let log_now = stale_logged.is_none_or(|t| t.elapsed() >= STALE_LOG_EVERY);
                        let (count, names) =
                            state.stale(now, if log_now { STALE_NAMES_LOGGED } else { 0 });
                        metrics::gauge!(EXPORTERS_STALE).set(count as f64);
                        if count > 0 && log_now {
                            stale_logged = Some(Instant::now());
                            tracing::warn!(
                                stale = count,
                                "MetricsExporters whose watermark no replica has moved for 3 intervals (past their ingestionDelay): {}{} (docs/operations.md#exporters-stale)",
                                names.join(", "),
                                if count > names.len() { ", …" } else { "" }
                            );
                        }
                    }
                    continue;
                }
            }
            if !state.complete() {
                continue;
            }
            if !synced {
                synced = true;
                last_publish = Instant::now();
                let snap = state.published.snapshot();
                let (exporters, rejected) = (snap.desired.len(), snap.rejected.len());
                tx.send_replace(Arc::new(snap));
                health.set_resources_synced();
                tracing::info!(
                    exporters,
                    rejected,
                    "initial list of MetricsExporter resources done"
                );
            } else if state.published.dirty && last_publish.elapsed() >= PUBLISH_EVERY {
                last_publish = Instant::now();
                tx.send_replace(Arc::new(state.published.snapshot()));
            }
        }
    }
}

/// The Kubernetes source alone (no scheduler, no status writer), publishing on `tx` until
/// `shutdown`: for `benches/fleet.rs`, which measures it against the fake API server.
#[doc(hidden)]
pub async fn run_alone(
    client: kube::Client,
    filter: Filter,
    membership: Membership,
    tx: watch::Sender<Arc<Snapshot>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let health = Arc::new(Health::default());
    let source = KubeSource::new(client, None, filter, membership);
    source
        .run(tx, health, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// The next StatefulSet event, or never without one to follow.
async fn next_member(
    stream: &mut Option<MemberStream>,
) -> Option<Result<Event<StatefulSet>, watcher::Error>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
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

    fn filter() -> Filter {
        Filter {
            cluster_labels: BTreeMap::from([("region".to_owned(), "eastus".to_owned())]),
            cli_prefix: String::new(),
        }
    }

    /// A listed state holding `resources`, on replica `shard`.
    fn listed<'a>(
        resources: impl IntoIterator<Item = &'a MetricsExporter>,
        shard: Shard,
    ) -> WatchState {
        let mut state = WatchState::new(filter(), Some(shard));
        state.apply(Ok(Event::Init));
        for r in resources {
            state.apply(Ok(Event::InitApply(r.clone())));
        }
        state.apply(Ok(Event::InitDone));
        state
    }

    /// The snapshot of a set of objects.
    fn build_snapshot<'a>(
        resources: impl IntoIterator<Item = &'a MetricsExporter>,
        shard: Shard,
    ) -> Snapshot {
        listed(resources, shard).snapshot()
    }

    fn with_watermark(mut r: MetricsExporter, watermark: &str) -> MetricsExporter {
        r.status = Some(crate::crd::MetricsExporterStatus {
            watermark: Some(watermark.to_owned()),
            ..Default::default()
        });
        r
    }

    fn ticks(s: &str) -> Ticks {
        Ticks::parse(s).unwrap()
    }

    #[test]
    fn objects_become_exporters_keyed_by_uid_with_their_generation() {
        let snap = build_snapshot(&[resource("a", "u-a", "")], Shard::SINGLE);
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
        let snap = build_snapshot([&r], Shard::SINGLE);
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
        let snap = build_snapshot([&runs, &other, &broken, &syntax], Shard::SINGLE);
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
        let snap = build_snapshot([&r], Shard::SINGLE);
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
            let shard = Shard {
                ordinal,
                replicas: 3,
            };
            let snap = build_snapshot(&list, shard);
            assert_eq!(snap.desired.len() + snap.rejected.len(), 50);
            for uid in snap.desired.keys() {
                *runs.entry(uid.clone()).or_default() += 1;
            }
            for (key, why) in &snap.rejected {
                assert!(matches!(why, Rejected::NotOwned { .. }), "{why:?}");
                let r = list.iter().find(|r| &r.key() == key).unwrap();
                assert_eq!(classify(r, &filter(), shard), Err(why.clone()));
            }
        }
        assert_eq!(runs.len(), 50);
        assert!(runs.values().all(|&n| n == 1));
    }

    #[test]
    fn a_relist_replaces_the_set_and_deletions_leave_it() {
        let mut state = WatchState::new(filter(), Some(Shard::SINGLE));
        state.apply(Ok(Event::Init));
        state.apply(Ok(Event::InitApply(resource("a", "u-a", ""))));
        assert!(!state.complete(), "not complete before InitDone");
        state.apply(Ok(Event::InitDone));
        assert!(state.complete());
        state.apply(Ok(Event::Apply(resource("b", "u-b", ""))));
        assert_eq!(state.snapshot().desired.len(), 2);
        state.apply(Ok(Event::Delete(resource("a", "u-a", ""))));
        let snap = state.snapshot();
        assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["u-b"]);
        // A relist in progress keeps the old view until it is done, then replaces it.
        state.apply(Ok(Event::Init));
        assert!(!state.complete());
        state.apply(Ok(Event::InitApply(resource("c", "u-c", ""))));
        assert!(!state.published.dirty);
        assert_eq!(state.snapshot(), snap);
        state.apply(Ok(Event::InitDone));
        assert_eq!(state.snapshot().desired.keys().collect::<Vec<_>>(), ["u-c"]);
    }

    #[test]
    fn ownership_waits_for_the_replica_count() {
        let mut state = WatchState::new(filter(), None);
        state.apply(Ok(Event::Init));
        state.apply(Ok(Event::InitApply(resource("a", "u-a", ""))));
        state.apply(Ok(Event::InitDone));
        assert!(!state.complete(), "no snapshot before the replica count");
        assert!(state.published.desired.is_empty());
        state.reshard(Shard::SINGLE);
        assert!(state.complete());
        assert_eq!(state.snapshot().desired.keys().collect::<Vec<_>>(), ["u-a"]);
    }

    #[test]
    fn a_status_only_change_publishes_no_snapshot() {
        let a = resource("a", "u-a", "");
        let b = resource("b", "u-b", "");
        let mut state = listed([&a, &b], Shard::SINGLE);
        let before = state.snapshot();
        // Every replica's status writer patches status: same generation, new watermark.
        let patched = with_watermark(a.clone(), "2026-11-25T10:00:00Z");
        state.apply(Ok(Event::Apply(patched.clone())));
        assert!(
            !state.published.dirty,
            "a status patch must not make a new snapshot"
        );
        assert!(Arc::ptr_eq(
            &state.published.desired["u-a"],
            &before.desired["u-a"]
        ));
        // ... but the source keeps the newest watermark (stale check, resume point).
        let slot = &state.slots["ns/a"];
        assert_eq!(slot.resume, Some(ticks("2026-11-25T10:00:00Z")));
        assert_eq!(
            slot.stale_input().unwrap().watermark,
            Some(ticks("2026-11-25T10:00:00Z"))
        );
        // The same during a relist.
        state.apply(Ok(Event::Init));
        state.apply(Ok(Event::InitApply(with_watermark(
            a.clone(),
            "2026-11-25T10:01:00Z",
        ))));
        state.apply(Ok(Event::InitApply(b.clone())));
        state.apply(Ok(Event::InitDone));
        assert!(!state.published.dirty, "a relist with new statuses only");
        assert_eq!(
            state.slots["ns/a"].resume,
            Some(ticks("2026-11-25T10:01:00Z"))
        );
        // A spec change (a new generation) does.
        let mut edited = patched;
        edited.metadata.generation = Some(4);
        edited.spec.body = Some("T | take 1".into());
        state.apply(Ok(Event::Apply(edited)));
        assert!(state.published.dirty);
        let after = state.snapshot();
        assert_eq!(after.desired["u-a"].generation, 4);
        assert_eq!(after.desired["u-a"].spec.body, "T | take 1");
    }

    #[test]
    fn a_resource_being_deleted_stops_running() {
        let a = resource("a", "u-a", "");
        let mut state = listed([&a], Shard::SINGLE);
        assert_eq!(state.snapshot().desired.len(), 1);
        // kubectl delete with a finalizer in place: deletionTimestamp set, a new generation.
        let mut deleting = a.clone();
        deleting.metadata.generation = Some(4);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-25T10:00:00Z".parse().unwrap(),
            ));
        state.apply(Ok(Event::Apply(deleting.clone())));
        let snap = state.snapshot();
        assert!(snap.desired.is_empty(), "no longer desired: stops querying");
        assert!(snap.rejected.is_empty(), "and no status is written for it");
        assert_eq!(state.stale(ticks("2030-01-01T00:00:00Z"), 10).0, 0);
        // A status patch meanwhile changes nothing; the final delete neither.
        state.apply(Ok(Event::Apply(with_watermark(
            deleting.clone(),
            "2026-11-25T10:00:00Z",
        ))));
        assert!(!state.published.dirty);
        state.apply(Ok(Event::Delete(deleting)));
        assert!(!state.published.dirty);
        assert!(state.slots.is_empty());
    }

    #[test]
    fn a_rescale_moves_ownership_and_a_gained_resource_resumes_from_the_newest_status() {
        let list: Vec<MetricsExporter> = (0..60)
            .map(|i| resource(&format!("r{i}"), &format!("uid-{i}"), ""))
            .collect();
        let two = |ordinal| Shard {
            ordinal,
            replicas: 2,
        };
        let mut states: Vec<WatchState> = (0..2).map(|o| listed(&list, two(o))).collect();
        let before: Vec<Snapshot> = states.iter_mut().map(WatchState::snapshot).collect();
        // Every resource moves on meanwhile (status patches, not snapshots).
        for state in &mut states {
            for r in &list {
                state.apply(Ok(Event::Apply(with_watermark(
                    r.clone(),
                    "2026-11-25T10:00:00Z",
                ))));
            }
            assert!(!state.published.dirty);
        }
        // 2 → 3: the two running replicas re-classify; a third one starts.
        for (o, state) in states.iter_mut().enumerate() {
            state.reshard(Shard {
                ordinal: o as u32,
                replicas: 3,
            });
        }
        let mut third = listed(
            &list,
            Shard {
                ordinal: 2,
                replicas: 3,
            },
        );
        let after: Vec<Snapshot> = states
            .iter_mut()
            .map(WatchState::snapshot)
            .chain([third.snapshot()])
            .collect();
        let mut owners = BTreeMap::<&str, usize>::new();
        for (o, snap) in after.iter().enumerate() {
            for uid in snap.desired.keys() {
                *owners.entry(uid).or_default() += 1;
                if o < 2 {
                    assert!(
                        before[o].desired.contains_key(uid),
                        "{uid} moved between old replicas"
                    );
                    // Still running here: the very same exporter, not restarted.
                    assert!(Arc::ptr_eq(&before[o].desired[uid], &snap.desired[uid]));
                }
            }
        }
        assert_eq!(owners.len(), 60);
        assert!(owners.values().all(|&n| n == 1));
        assert!(!after[2].desired.is_empty());
        // A resource gained on a rescale resumes from the newest status watermark seen.
        let mut gained = listed(
            &list,
            Shard {
                ordinal: 1,
                replicas: 3,
            },
        );
        let owned_by_2: Vec<String> = after[2].desired.keys().cloned().collect();
        for r in &list {
            gained.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2026-11-25T11:00:00Z",
            ))));
        }
        gained.reshard(Shard {
            ordinal: 1,
            replicas: 2,
        });
        let snap = gained.snapshot();
        for uid in &owned_by_2 {
            if let Some(e) = snap.desired.get(uid) {
                assert_eq!(e.status_watermark, Some(ticks("2026-11-25T11:00:00Z")));
            }
        }
    }

    #[test]
    fn staleness_is_the_watermark_behind_three_intervals_past_the_delay() {
        let minute = Span::from_secs(60);
        let input = |watermark: Option<&str>, created: Option<&str>| StaleInput {
            watermark: watermark.map(ticks),
            created: created.map(ticks),
            interval: minute,
            ingestion_delay: Span::from_secs(30),
        };
        let now = ticks("2026-11-25T10:00:00Z");
        // Allowance: 30 s + 3 × 1 min = 3m30s.
        assert!(!is_stale(&input(Some("2026-11-25T09:56:30Z"), None), now));
        assert!(is_stale(&input(Some("2026-11-25T09:56:29Z"), None), now));
        // Without a watermark the creation time counts; with one it does not.
        assert!(is_stale(&input(None, Some("2026-11-25T09:00:00Z")), now));
        assert!(!is_stale(&input(None, Some("2026-11-25T09:59:00Z")), now));
        assert!(!is_stale(
            &input(Some("2026-11-25T09:59:00Z"), Some("2020-01-01T00:00:00Z")),
            now
        ));
        assert!(!is_stale(&input(None, None), now), "nothing to judge by");
        // A watermark in the future (clock skew) is not stale.
        assert!(!is_stale(&input(Some("2026-11-25T11:00:00Z"), None), now));

        let names: Vec<String> = (0..25).map(|i| format!("ns/r{i:02}")).collect();
        let inputs = names.iter().enumerate().map(|(i, n)| {
            let w = if i % 2 == 0 {
                "2026-11-25T09:00:00Z"
            } else {
                "2026-11-25T09:59:00Z"
            };
            (n.as_str(), input(Some(w), None))
        });
        let (count, listed) = stale(inputs.clone(), now, 10);
        assert_eq!(count, 13);
        assert_eq!(listed.len(), 10);
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
        assert!(listed.iter().all(|n| {
            let i: usize = n[4..].parse().unwrap();
            i.is_multiple_of(2)
        }));
        assert_eq!(stale(inputs, now, 0), (13, vec![]));
    }

    #[test]
    fn every_replica_checks_every_criteria_matching_resource() {
        let list = [
            resource("a", "u-a", ""),
            resource("b", "u-b", ""),
            resource("c", "u-c", "  criteria: {region: [westus]}"),
            resource("d", "u-d", "  ingestionDelay: bogus"),
        ];
        let later = ticks("2030-01-01T00:00:00Z");
        for ordinal in 0..3 {
            let state = listed(
                &list,
                Shard {
                    ordinal,
                    replicas: 3,
                },
            );
            // Created long ago (the test objects' creationTimestamp is unset: the watermark is).
            let mut state = state;
            for r in &list {
                state.apply(Ok(Event::Apply(with_watermark(
                    r.clone(),
                    "2026-11-25T10:00:00Z",
                ))));
            }
            let (count, names) = state.stale(later, 10);
            assert_eq!(
                (count, names),
                (2, vec!["ns/a", "ns/b"]),
                "replica {ordinal}"
            );
        }
    }

    /// Guards against a hang; never a timing assertion.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(20), f)
            .await
            .expect("the fake API server answered")
    }

    fn spec(criteria: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "database": "db", "interval": "1m", "body": "T", "criteria": criteria,
            "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"}
        })
    }

    #[tokio::test]
    async fn lists_then_watches_the_api_server() {
        use crate::kube_support::{FakeApi, exporter};
        use serde_json::json;
        let fake = FakeApi::start().await;
        let a = fake.create(exporter("n1", "a", spec(json!({}))));
        let uid_a = a["metadata"]["uid"].as_str().unwrap().to_owned();
        fake.set_spec("n1", "a", spec(json!({"region": ["EastUS", "westus"]})));
        fake.set_status("n1", "a", json!({"watermark": "2026-11-25T10:00:00Z"}));
        fake.create(exporter("n1", "b", spec(json!({"region": ["westus"]}))));
        let source = KubeSource::new(
            fake.client().await,
            None,
            filter(),
            Membership::Fixed(Shard::SINGLE),
        );
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

        // A status patch publishes nothing: the next snapshot (made by a new resource, watched
        // after the patch) still holds the very same exporter for `a`.
        fake.set_status("n1", "a", json!({"watermark": "2026-11-25T10:05:00Z"}));
        let c = fake.create(exporter("n2", "c", spec(json!({"region": ["EastUS"]}))));
        let uid_c = c["metadata"]["uid"].as_str().unwrap().to_owned();
        within(rx.changed()).await.unwrap();
        let next = rx.borrow_and_update().clone();
        assert!(next.desired.contains_key(&uid_c));
        assert!(Arc::ptr_eq(&next.desired[&uid_a], &snap.desired[&uid_a]));

        fake.delete("n1", "a");
        within(rx.changed()).await.unwrap();
        assert_eq!(
            rx.borrow_and_update().desired.keys().collect::<Vec<_>>(),
            [&uid_c],
            "a deleted resource stops"
        );

        stop.cancel();
        assert!(within(task).await.unwrap().is_ok());
    }

    /// Starts the source of replica `ordinal` following StatefulSet `team/fleet`.
    async fn replica(
        fake: &crate::kube_support::FakeApi,
        ordinal: u32,
        stop: &CancellationToken,
    ) -> (watch::Receiver<Arc<Snapshot>>, Arc<Health>) {
        let membership = Membership::StatefulSet {
            name: "fleet".into(),
            namespace: Some("team".into()),
            ordinal,
        };
        let source = KubeSource::new(fake.client().await, None, filter(), membership);
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let health = Arc::new(Health::default());
        health.set_wal_open();
        tokio::spawn(source.run(tx, health.clone(), stop.clone()));
        (rx, health)
    }

    #[tokio::test]
    async fn replicas_follow_the_statefulset_and_a_rescale_moves_resources_without_a_restart() {
        use crate::kube_support::{FakeApi, exporter};
        use serde_json::json;
        let fake = FakeApi::start().await;
        let mut uids = Vec::new();
        for i in 0..30 {
            let o = fake.create(exporter("n1", &format!("r{i}"), spec(json!({}))));
            uids.push(o["metadata"]["uid"].as_str().unwrap().to_owned());
        }
        let stop = CancellationToken::new();
        let (mut rx0, health0) = replica(&fake, 0, &stop).await;
        let (mut rx1, _) = replica(&fake, 1, &stop).await;
        // No StatefulSet yet: not ready, nothing runs.
        fake.create(exporter("n1", "marker", spec(json!({"region": ["mars"]}))));
        assert!(health0.ready().is_err());
        assert!(rx0.borrow().desired.is_empty() && !rx0.has_changed().unwrap());

        fake.create_statefulset("team", "fleet", Some(2));
        within(rx0.changed()).await.unwrap();
        within(rx1.changed()).await.unwrap();
        assert_eq!(health0.ready(), Ok(()));
        let s0 = rx0.borrow_and_update().clone();
        let s1 = rx1.borrow_and_update().clone();
        assert_eq!(s0.desired.len() + s1.desired.len(), 30);
        assert!(s0.desired.keys().all(|u| !s1.desired.contains_key(u)));

        fake.scale_statefulset("team", "fleet", 3);
        within(rx0.changed()).await.unwrap();
        within(rx1.changed()).await.unwrap();
        let (mut rx2, _) = replica(&fake, 2, &stop).await;
        within(rx2.changed()).await.unwrap();
        let t0 = rx0.borrow_and_update().clone();
        let t1 = rx1.borrow_and_update().clone();
        let t2 = rx2.borrow_and_update().clone();
        assert_eq!(t0.desired.len() + t1.desired.len() + t2.desired.len(), 30);
        assert!(!t2.desired.is_empty());
        for (before, after) in [(&s0, &t0), (&s1, &t1)] {
            for (uid, e) in &after.desired {
                // Kept ones are the same exporter (the scheduler does not restart them).
                assert!(
                    Arc::ptr_eq(e, &before.desired[uid]),
                    "{uid} moved between old replicas"
                );
            }
        }
        for uid in &uids {
            let n = [&t0, &t1, &t2]
                .iter()
                .filter(|s| s.desired.contains_key(uid))
                .count();
            assert_eq!(n, 1, "{uid}");
        }
        // The watch asked for that one StatefulSet only (what RBAC resourceNames allows).
        let sts: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("statefulsets"))
            .collect();
        assert!(!sts.is_empty());
        assert!(
            sts.iter()
                .all(|r| r.path == "/apis/apps/v1/namespaces/team/statefulsets"
                    && r.query.contains("fieldSelector=metadata.name%3Dfleet")),
            "{sts:?}"
        );
        stop.cancel();
    }
}
