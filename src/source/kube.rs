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

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::telemetry::events::{EventQueue, Notice, Regarding, Severity, reasons};
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
    /// Resources found stale and not fresh since (their Event is recorded once per episode).
    stale_noticed: HashSet<String>,
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
            stale_noticed: HashSet::new(),
        }
    }

    /// The Events for resources that became stale since the last call: one per episode, from one
    /// replica only — the rendezvous backup of the resource ([`crate::shard::backup`]), the replica
    /// that would own it next — so a fleet records one Event, not one per replica.
    fn stale_notices(&mut self, now: Ticks) -> Vec<Notice> {
        let Some(shard) = self.shard else {
            return Vec::new();
        };
        let mut notices = Vec::new();
        let mut still = HashSet::new();
        for (key, slot) in &self.slots {
            let Some(input) = slot.stale_input() else {
                continue;
            };
            if !is_stale(&input, now) {
                continue;
            }
            still.insert(key.clone());
            if self.stale_noticed.contains(key)
                || crate::shard::backup(&slot.uid, shard.replicas) != shard.ordinal
            {
                continue;
            }
            let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
            notices.push(Notice {
                regarding: Regarding {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: slot.uid.clone(),
                },
                severity: Severity::Warning,
                reason: reasons::STALE.to_owned(),
                action: "Watch",
                note: "no replica has moved this resource's watermark for 3 intervals past its ingestionDelay: its owner is down or failing (docs/operations.md#exporters-stale)".into(),
            });
        }
        self.stale_noticed = still;
        notices
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
    /// Where stale resources' Events go (disabled unless [`KubeSource::with_events`]).
    events: EventQueue,
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
            events: EventQueue::disabled(),
        }
    }

    /// Records an Event on each resource found stale (see [`WatchState::stale_notices`]).
    pub fn with_events(mut self, events: EventQueue) -> KubeSource {
        self.events = events;
        self
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
                        for notice in state.stale_notices(now) {
                            self.events.publish(notice);
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
mod tests;
