//! Kubernetes mode's single writer of `.status` (docs/design.md#status-writers): every
//! [`KUBE_STATUS_INTERVAL`] it computes each status with the same pure [`exporter_status`] as
//! standalone mode and patches the status subresource of the resources whose status changed.
//!
//! Invariants:
//! - Only resources this instance processes get a status: desired exporters and resources it
//!   rejected as invalid. Skipped ones (criteria, another replica's, a `criteriaExpression` that
//!   cannot be evaluated here) are never touched.
//! - Every patch is a JSON patch (RFC 6902) whose first operation is a `test` of `metadata.uid`: a
//!   resource deleted and created again under the same name refuses a status computed for the old
//!   one (a merge patch cannot say this: the status subresource ignores `metadata`). The second
//!   operation replaces the whole `status`, so the written status is exactly the computed one.
//! - Only changed statuses are patched, compared with what the resource holds: the last patch, or
//!   at start-up the resources' current statuses (one paged list), or one GET for a resource that
//!   appears later. A restart with nothing new patches nothing, and every condition keeps its
//!   `lastTransitionTime` while its status is unchanged (also across restarts).
//! - Patches are rate limited (`--status-patch-qps`, `--status-patch-burst`, at most 8 in flight);
//!   a round patches at most what the limit allows in one interval, the least recently written
//!   first; the rest waits for the next round (`adxexporter_status_patch_backlog`).
//! - adx-mon's cursor condition is written alongside (docs/design.md#migration-cursor), so a
//!   rollback to adx-mon, or adx-mon's CRD applied again (which prunes our fields), keeps the cursor.
//!   The watermark is never cleared: while this instance's WAL has none the resume point read from
//!   the resource is written back. An answer without the `status.watermark` that was sent means the
//!   CRD's schema prunes it: an ERROR, `adxexporter_status_pruned_total` and an alert.
//! - Outcomes are counted (`adxexporter_status_patches_total`): a 404 (deleted) and a failed uid
//!   test (re-created) are not errors; another 4xx is refused for good (logged with the fix, not
//!   sent again until the status changes or 5 minutes pass); 5xx, 409, 429 and no answer are
//!   retried next round.
//! - Condition changes become Kubernetes Events (query failing with the condition's reason,
//!   recovered, new dead letters) on the event queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limit::RateLimiter;
use super::{
    Board, DeadLetterSummary, RetryingOutput, StatusError, carry_transition_times,
    dead_letter_summaries, exporter_status, rejected_status, retrying_outputs,
};
use crate::crd::{Condition, LEGACY_CURSOR_CONDITION, MetricsExporter, MetricsExporterStatus};
use crate::registry::Rejected;
use crate::registry::Snapshot;
use crate::telemetry::events::{EventQueue, Notice, Regarding, Severity, reasons};
use crate::telemetry::metrics::{STATUS_PATCHES, STATUS_PRUNED};
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
/// A status the API server refused (4xx) is sent again only when it changes, or after this.
const REFUSED_RETRY: Duration = Duration::from_secs(300);
/// Objects per page of the start-up list.
const LIST_PAGE: u32 = 500;
/// Patch failures logged at WARN per round; the rest at DEBUG (the metric counts them all).
const WARN_LINES_PER_ROUND: usize = 10;
/// `reason` of adx-mon's cursor condition, as adx-mon writes it.
const CURSOR_REASON: &str = "ExecutionCompleted";

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeStatusError {
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// The rate limit and the scope of the status writer.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeStatusConfig {
    /// Patches (and reads) a second, on average.
    pub qps: f64,
    /// Patches at once after a quiet spell.
    pub burst: u32,
    /// The namespace watched (`None`: all), for the start-up list.
    pub namespace: Option<String>,
}

/// What kind of resource a status is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A desired exporter: the whole status is computed here.
    Exporter,
    /// A resource rejected as invalid: only the conditions are ours; the rest stays as it is.
    Rejected,
}

/// One status to write, for the resource `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub namespace: String,
    pub name: String,
    /// The uid the status was computed for; `None` for a rejected resource (looked up by name).
    pub uid: Option<String>,
    pub kind: TargetKind,
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
            uid: Some(exporter.id.uid.clone()),
            kind: TargetKind::Exporter,
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
            uid: None,
            kind: TargetKind::Rejected,
            status,
        });
    }
    out
}

/// Completes a computed status with what only the resource's current status (`previous`) knows,
/// so that nothing is lost by replacing the whole status and an unchanged status compares equal:
/// transition times of unchanged conditions; for an exporter, the last query and the last
/// successful execution while this process has none (after a restart, a new owner), and adx-mon's
/// cursor condition; for a rejected resource, everything but the conditions (its resume point, for
/// when the spec is fixed) and the cursor condition it had. Pure.
pub(crate) fn complete(
    kind: TargetKind,
    status: &mut MetricsExporterStatus,
    previous: Option<&MetricsExporterStatus>,
    now: Ticks,
) {
    match kind {
        TargetKind::Exporter => {
            if let Some(p) = previous {
                if status.last_query.is_none() {
                    status.last_query = p.last_query.clone();
                }
                if status.last_successful_execution.is_none() {
                    status.last_successful_execution = p.last_successful_execution.clone();
                }
                if status.watermark.is_none() {
                    status.watermark = p.watermark.clone();
                }
            }
            status
                .conditions
                .retain(|c| c.type_ != LEGACY_CURSOR_CONDITION);
            if let Some(cursor) = cursor_condition(status, now) {
                status.conditions.push(cursor);
            }
        }
        TargetKind::Rejected => {
            if let Some(p) = previous {
                let mut conditions = std::mem::take(&mut status.conditions);
                conditions.retain(|c| c.type_ != LEGACY_CURSOR_CONDITION);
                conditions.extend(p.condition(LEGACY_CURSOR_CONDITION).cloned());
                *status = MetricsExporterStatus {
                    conditions,
                    ..p.clone()
                };
            }
        }
    }
    carry_transition_times(previous, status);
}

/// adx-mon's cursor condition for `status`: its message is where adx-mon would resume without a
/// gap — every window before it has left the WAL (`lastSuccessfulExecution`), else the watermark.
fn cursor_condition(status: &MetricsExporterStatus, now: Ticks) -> Option<Condition> {
    let at = (status.last_successful_execution.as_ref()).or(status.watermark.as_ref())?;
    Some(Condition {
        type_: LEGACY_CURSOR_CONDITION.into(),
        status: "True".into(),
        reason: CURSOR_REASON.into(),
        message: at.clone(),
        last_transition_time: now.to_string(),
        observed_generation: status.observed_generation,
    })
}

/// The JSON patch that makes the status of the resource with `uid` exactly `status`, or fails
/// (422) when the resource of that name has another uid.
pub fn status_patch(uid: &str, status: &MetricsExporterStatus) -> json_patch::Patch {
    let ops = json!([
        { "op": "test", "path": "/metadata/uid", "value": uid },
        { "op": "add", "path": "/status", "value": status },
    ]);
    serde_json::from_value(ops).expect("a JSON patch of two well-formed operations")
}

/// What Events compare between two rounds: `QueryHealthy`'s status and reason, and the dead-lettered
/// windows (kept per resource instead of a whole status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    query: Option<(String, String)>,
    dead: u64,
}

impl Seen {
    pub(crate) fn of(status: &MetricsExporterStatus) -> Seen {
        Seen {
            query: (status.condition("QueryHealthy")).map(|c| (c.status.clone(), c.reason.clone())),
            dead: status.dead_lettered.as_ref().map_or(0, |d| d.windows),
        }
    }
}

/// The Events a change of a computed status deserves: `previous` is what this process computed
/// last round (none the first time it sees the resource). Pure.
pub(crate) fn transition_notices(
    regarding: &Regarding,
    previous: Option<&Seen>,
    next: &MetricsExporterStatus,
) -> Vec<Notice> {
    let notice = |severity, reason: &str, action, note: &str| Notice {
        regarding: regarding.clone(),
        severity,
        reason: reason.to_owned(),
        action,
        note: note.to_owned(),
    };
    let mut out = Vec::new();
    let before = previous.and_then(|p| p.query.as_ref());
    if let Some(now) = next.condition("QueryHealthy") {
        let was_ok = before.is_none_or(|(status, _)| status == "True");
        if now.status == "True" {
            if !was_ok {
                out.push(notice(
                    Severity::Normal,
                    reasons::QUERY_RECOVERED,
                    "Query",
                    "queries succeed again",
                ));
            }
        } else if before.is_none_or(|(status, reason)| *status != now.status || *reason != now.reason)
            // The WAL is the instance's, not the resource's: its alerts and logs say so once.
            && !matches!(now.reason.as_str(), "WalFull" | "WalError")
        {
            out.push(notice(
                Severity::Warning,
                &now.reason,
                "Query",
                &now.message,
            ));
        }
    }
    if let Some(p) = previous
        && Seen::of(next).dead > p.dead
    {
        let message = next
            .condition("DeliveryHealthy")
            .map(|c| c.message.as_str())
            .unwrap_or_default();
        out.push(notice(
            Severity::Warning,
            reasons::DEAD_LETTERED,
            "Deliver",
            message,
        ));
    }
    out
}

/// What the writer knows of one resource, by uid.
#[derive(Debug, Clone)]
struct Known {
    key: String,
    /// The status the resource holds, as far as this process knows: read at start-up or by a
    /// GET, or last patched. `None`: it has none.
    server: Option<MetricsExporterStatus>,
    /// When this process last patched it.
    written_at: Option<Instant>,
    /// A status the API server refused (4xx), and when.
    refused: Option<(MetricsExporterStatus, Instant)>,
    /// What this process computed last round, for Events.
    seen: Option<Seen>,
}

impl Known {
    fn read(key: String, server: Option<MetricsExporterStatus>) -> Known {
        Known {
            key,
            server,
            written_at: None,
            refused: None,
            seen: None,
        }
    }
}

/// How one patch ended.
#[derive(Debug)]
enum Outcome {
    Ok { lost: Vec<&'static str> },
    NotFound,
    Recreated,
    Refused(kube::Error),
    Failed(kube::Error),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Recreated => "recreated",
            Outcome::Refused(_) => "rejected",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Patches `.status` of every resource this instance processes, at a bounded rate.
pub(crate) struct KubeStatusWriter {
    client: kube::Client,
    wal: Wal,
    board: Arc<Board>,
    config: KubeStatusConfig,
    limiter: Arc<RateLimiter>,
    events: EventQueue,
    /// By uid.
    known: HashMap<String, Known>,
    /// The uid of each `namespace/name` read, for rejected resources (the snapshot has no uid).
    uid_by_key: HashMap<String, String>,
    /// Whether the start-up list has been read.
    listed: bool,
    /// The last error logged per resource (each is logged once until it changes or recovers).
    failing: HashMap<String, String>,
    /// Whether answers currently lack `status.watermark` (the ERROR is logged on the change).
    pruned: bool,
}

impl KubeStatusWriter {
    pub fn new(
        client: kube::Client,
        wal: Wal,
        board: Arc<Board>,
        config: KubeStatusConfig,
        events: EventQueue,
    ) -> KubeStatusWriter {
        let limiter = Arc::new(RateLimiter::new(config.qps, config.burst));
        KubeStatusWriter {
            client,
            wal,
            board,
            config,
            limiter,
            events,
            known: HashMap::new(),
            uid_by_key: HashMap::new(),
            listed: false,
            failing: HashMap::new(),
            pruned: false,
        }
    }

    /// Writes every interval until `shutdown`, then once more (bounded) with the final state.
    pub async fn run(
        mut self,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> Result<(), KubeStatusError> {
        loop {
            // Until the source has published once (never marked seen here), the snapshot is the
            // empty placeholder: a round with it would forget the statuses read at start-up.
            let (synced, snap) = {
                let current = snapshots.borrow();
                (current.has_changed(), current.clone())
            };
            if shutdown.is_cancelled() {
                if synced
                    && tokio::time::timeout(FINAL_ROUND_TIMEOUT, self.round(&snap))
                        .await
                        .is_err()
                {
                    tracing::warn!("the last status update did not finish in time");
                }
                return Ok(());
            }
            if synced {
                self.round(&snap).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(KUBE_STATUS_INTERVAL) => {}
            }
        }
    }

    /// Patches (and reads) per round: what the rate allows in one interval, plus the burst.
    fn per_round(&self) -> usize {
        let steady = (self.config.qps * KUBE_STATUS_INTERVAL.as_secs_f64()).ceil();
        (steady + f64::from(self.config.burst)).max(1.0) as usize
    }

    fn api(&self) -> (Api<DynamicObject>, ApiResource) {
        let resource = ApiResource::erase::<MetricsExporter>(&());
        let api = match &self.config.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        (api, resource)
    }

    /// Reads every resource's uid and status once (paged), so a restart patches only what changed.
    async fn list_all(&mut self) -> Result<(), kube::Error> {
        let (api, _) = self.api();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            self.limiter.acquire().await;
            let page = api.list(&params).await?;
            for object in page.items {
                self.remember(&object);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(()),
            }
        }
    }

    /// Records what `object` holds; returns its uid.
    fn remember(&mut self, object: &DynamicObject) -> Option<String> {
        let uid = object.metadata.uid.clone()?;
        let key = format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default()
        );
        // A status that does not parse (hand-edited) counts as none: it gets replaced.
        let status = object
            .data
            .get("status")
            .filter(|s| !s.is_null())
            .and_then(|s| serde_json::from_value::<MetricsExporterStatus>(s.clone()).ok());
        self.uid_by_key.insert(key.clone(), uid.clone());
        let entry = self
            .known
            .entry(uid.clone())
            .or_insert_with(|| Known::read(key.clone(), None));
        entry.key = key;
        entry.server = status;
        Some(uid)
    }

    /// Reads one resource (a GET); `Ok(None)` when it does not exist.
    async fn read(&mut self, namespace: &str, name: &str) -> Result<Option<String>, kube::Error> {
        let resource = ApiResource::erase::<MetricsExporter>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        self.limiter.acquire().await;
        match api.get_opt(name).await? {
            Some(object) => Ok(self.remember(&object)),
            None => Ok(None),
        }
    }

    /// Computes every status and patches those that changed.
    async fn round(&mut self, snap: &Arc<Snapshot>) {
        if !self.listed {
            match self.list_all().await {
                Ok(()) => {
                    self.listed = true;
                    self.failing.remove("");
                }
                Err(e) => {
                    let message = format!(
                        "cannot list MetricsExporter resources to read their current status: {e} (check that RBAC allows list on metricsexporters.adx-mon.azure.com); status is not written until it can"
                    );
                    if self.failing.get("") != Some(&message) {
                        tracing::warn!("{message}");
                        self.failing.insert(String::new(), message);
                    }
                    return;
                }
            }
        }
        let (wal, board, s) = (self.wal.clone(), self.board.clone(), snap.clone());
        let now = Ticks::now();
        let computed = tokio::task::spawn_blocking(move || {
            let stats = wal.stats().map_err(StatusError::from)?;
            let dead = dead_letter_summaries(&wal)?;
            let retrying = retrying_outputs(&wal, &stats)?;
            Ok::<_, StatusError>(targets(&s, &board, &stats, &dead, &retrying, now))
        })
        .await;
        let targets = match computed {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return tracing::warn!("status not updated: {e}"),
            Err(e) => return tracing::warn!("status task failed: {e}"),
        };
        let budget = self.per_round();
        let mut reads = 0;
        let mut changed: Vec<(StatusTarget, String)> = Vec::new();
        let mut waiting = 0u64;
        let mut live_uids = HashSet::new();
        let mut live_keys = HashSet::new();
        for mut target in targets {
            let key = target.key();
            live_keys.insert(key.clone());
            // The uid, and what the resource holds: known, else read once.
            let known_uid = match &target.uid {
                Some(uid) => self.known.contains_key(uid).then(|| uid.clone()),
                None => self.uid_by_key.get(&key).cloned(),
            };
            let uid = match known_uid {
                Some(uid) => uid,
                None if reads >= budget => {
                    waiting += 1;
                    continue;
                }
                None => {
                    reads += 1;
                    match self.read(&target.namespace, &target.name).await {
                        Ok(Some(uid)) => uid,
                        Ok(None) => continue, // deleted meanwhile: the next snapshot drops it
                        Err(e) => {
                            self.log_failure(
                                &key,
                                format!("cannot read MetricsExporter {key}: {e}"),
                                0,
                            );
                            waiting += 1;
                            continue;
                        }
                    }
                }
            };
            if target.uid.as_ref().is_some_and(|u| *u != uid) {
                continue; // re-created under this name; the snapshot has not caught up yet
            }
            live_uids.insert(uid.clone());
            let Some(known) = self.known.get_mut(&uid) else {
                continue;
            };
            // What the resource holds; while nothing was ever read or written (a refused first
            // patch), what was refused, so transition times do not move with every retry.
            let previous = (known.server.as_ref()).or(known.refused.as_ref().map(|(s, _)| s));
            complete(target.kind, &mut target.status, previous, now);
            if target.kind == TargetKind::Exporter {
                let regarding = Regarding {
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                    uid: uid.clone(),
                };
                for notice in transition_notices(&regarding, known.seen.as_ref(), &target.status) {
                    self.events.publish(notice);
                }
            }
            known.seen = Some(Seen::of(&target.status));
            if known.server.as_ref() == Some(&target.status) {
                continue;
            }
            if let Some((refused, at)) = &known.refused
                && *refused == target.status
                && at.elapsed() < REFUSED_RETRY
            {
                waiting += 1;
                continue;
            }
            changed.push((target, uid));
        }
        // Least recently written first, so a backlog is worked off in turn.
        changed.sort_by_key(|(_, uid)| self.known.get(uid).and_then(|k| k.written_at));
        if changed.len() > budget {
            waiting += (changed.len() - budget) as u64;
            changed.truncate(budget);
        }
        let (client, limiter) = (self.client.clone(), self.limiter.clone());
        let results: Vec<_> = futures::stream::iter(changed)
            .map(|(target, uid)| {
                let (client, limiter) = (client.clone(), limiter.clone());
                async move {
                    limiter.acquire().await;
                    let outcome = patch(client, &target, &uid).await;
                    (target, uid, outcome)
                }
            })
            .buffer_unordered(PATCH_CONCURRENCY)
            .collect()
            .await;
        let mut warned = 0;
        for (target, uid, outcome) in results {
            let outcome = match outcome {
                // A 422 is also what a failed uid test gets: tell the two apart by reading it.
                Outcome::Refused(e) if is_code(&e, 422) => {
                    match self.read(&target.namespace, &target.name).await {
                        Ok(Some(now_uid)) if now_uid == uid => Outcome::Refused(e),
                        Ok(_) => Outcome::Recreated,
                        Err(_) => Outcome::Failed(e),
                    }
                }
                other => other,
            };
            if matches!(outcome, Outcome::Refused(_) | Outcome::Failed(_)) {
                waiting += 1;
            }
            self.record(target, uid, outcome, &mut warned);
        }
        if warned > WARN_LINES_PER_ROUND {
            tracing::warn!(
                "{} more status patches failed this round (logged at debug); see adxexporter_status_patches_total",
                warned - WARN_LINES_PER_ROUND
            );
        }
        self.board.set_patch_backlog(waiting);
        self.known.retain(|uid, _| live_uids.contains(uid));
        self.uid_by_key
            .retain(|key, uid| live_keys.contains(key) && live_uids.contains(uid));
        self.failing
            .retain(|key, _| key.is_empty() || live_keys.contains(key));
    }

    /// Logs a failure for `key` once until its message changes (WARN for the first few a round).
    fn log_failure(&mut self, key: &str, message: String, warned: usize) -> bool {
        if self.failing.get(key) == Some(&message) {
            return false;
        }
        if warned < WARN_LINES_PER_ROUND {
            tracing::warn!(exporter = %key, "{message}");
        } else {
            tracing::debug!(exporter = %key, "{message}");
        }
        self.failing.insert(key.to_owned(), message);
        true
    }

    fn record(&mut self, target: StatusTarget, uid: String, outcome: Outcome, warned: &mut usize) {
        let key = target.key();
        metrics::counter!(STATUS_PATCHES, "outcome" => outcome.label()).increment(1);
        match outcome {
            Outcome::Ok { lost } => {
                if self.failing.remove(&key).is_some() {
                    tracing::info!(exporter = %key, "status updates work again");
                }
                self.note_pruned(&key, &lost);
                if let Some(known) = self.known.get_mut(&uid) {
                    // What was sent, not what came back: a pruning schema must not cause a patch
                    // every round.
                    known.server = Some(target.status);
                    known.written_at = Some(Instant::now());
                    known.refused = None;
                }
            }
            Outcome::NotFound => {
                tracing::debug!(exporter = %key, "not patched: the resource was deleted");
                self.known.remove(&uid);
            }
            Outcome::Recreated => {
                tracing::info!(
                    exporter = %key,
                    "not patched: the resource was deleted and created again under this name (new uid); the old resource's status is not carried over"
                );
                self.known.remove(&uid);
                self.uid_by_key.remove(&key);
            }
            Outcome::Refused(e) => {
                let fix = match &e {
                    kube::Error::Api(s) if s.code == 403 => {
                        "RBAC must allow patch on metricsexporters/status (deploy/kubernetes/clusterrole.yaml)"
                    }
                    kube::Error::Api(s) if s.code == 422 => {
                        "the CRD's schema refuses this status: install adxexporter's CRD (`adxexporter crd | kubectl apply -f -`)"
                    }
                    _ => "the API server refuses this status",
                };
                let message = format!(
                    "cannot patch the status of MetricsExporter {key}: {e}; {fix}. Not sent again until it changes or for {} minutes",
                    REFUSED_RETRY.as_secs() / 60
                );
                if self.log_failure(&key, message, *warned) {
                    *warned += 1;
                }
                if let Some(known) = self.known.get_mut(&uid) {
                    known.refused = Some((target.status, Instant::now()));
                }
            }
            Outcome::Failed(e) => {
                let message = format!(
                    "cannot patch the status of MetricsExporter {key}: {e}; retrying every {}s",
                    KUBE_STATUS_INTERVAL.as_secs()
                );
                if self.log_failure(&key, message, *warned) {
                    *warned += 1;
                }
            }
        }
    }

    /// Counts and reports an answer that lacked fields just sent.
    fn note_pruned(&mut self, key: &str, lost: &[&'static str]) {
        if lost.contains(&"watermark") {
            metrics::counter!(STATUS_PRUNED).increment(1);
            if !self.pruned {
                self.pruned = true;
                tracing::error!(
                    exporter = %key,
                    "the API server dropped status.{} from the status just written: the installed MetricsExporter CRD does not have adxexporter's status fields (adx-mon's CRD applied over it?) and prunes them, so a new owner cannot resume from status.watermark (adx-mon's cursor condition is still written). Install adxexporter's CRD: `adxexporter crd | kubectl apply -f -` or `kubectl apply -k deploy/crds`",
                    lost.join(", status.")
                );
            }
        } else if self.pruned && lost.is_empty() {
            self.pruned = false;
            tracing::info!(exporter = %key, "status.watermark is kept again: the CRD has adxexporter's status fields");
        }
    }
}

/// Sends the status patch of `target` to the resource with `uid`.
async fn patch(client: kube::Client, target: &StatusTarget, uid: &str) -> Outcome {
    // Untyped: the answer's spec is not ours to parse (a field this version cannot read must not
    // turn a written status into a failure).
    let resource = ApiResource::erase::<MetricsExporter>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &target.namespace, &resource);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let body = status_patch(uid, &target.status);
    match api
        .patch_status(&target.name, &params, &Patch::<()>::Json(body))
        .await
    {
        Ok(object) => {
            let got = (object.data.get("status").cloned())
                .and_then(|s| serde_json::from_value::<MetricsExporterStatus>(s).ok())
                .unwrap_or_default();
            Outcome::Ok {
                lost: lost_fields(&target.status, &got),
            }
        }
        Err(e) if is_code(&e, 404) => Outcome::NotFound,
        Err(e) if is_refusal(&e) => Outcome::Refused(e),
        Err(e) => Outcome::Failed(e),
    }
}

/// The top-level status fields that were sent but are not in the answer.
fn lost_fields(sent: &MetricsExporterStatus, got: &MetricsExporterStatus) -> Vec<&'static str> {
    let pairs = [
        (
            "watermark",
            sent.watermark.is_some(),
            got.watermark.is_some(),
        ),
        (
            "lastSuccessfulExecution",
            sent.last_successful_execution.is_some(),
            got.last_successful_execution.is_some(),
        ),
        ("backlog", sent.backlog.is_some(), got.backlog.is_some()),
        (
            "deadLettered",
            sent.dead_lettered.is_some(),
            got.dead_lettered.is_some(),
        ),
        (
            "lastQuery",
            sent.last_query.is_some(),
            got.last_query.is_some(),
        ),
        (
            "observedGeneration",
            sent.observed_generation.is_some(),
            got.observed_generation.is_some(),
        ),
        (
            "conditions",
            !sent.conditions.is_empty(),
            !got.conditions.is_empty(),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, s, g)| *s && !*g)
        .map(|(name, _, _)| name)
        .collect()
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

/// A 4xx the same request would get again: not 404 (handled), 409 or 429 (transient).
fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && ![404, 409, 429].contains(&s.code))
}

#[cfg(test)]
mod tests;
