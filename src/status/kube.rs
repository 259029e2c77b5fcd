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
mod tests {
    use super::*;
    use crate::crd::{BacklogStatus, DeadLetterStatus};
    use crate::kube_support::{FakeApi, FakeOptions, exporter};
    use crate::registry::{Exporter, Rejected};
    use crate::status::Problem;
    use crate::telemetry::TestMetrics;
    use crate::wal::{ExporterRef, RecordHeader, WalConfig};
    use serde_json::Value;

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
    fn the_patch_tests_the_uid_then_replaces_the_whole_status() {
        let status = MetricsExporterStatus {
            backlog: Some(BacklogStatus::default()),
            ..Default::default()
        };
        let patch = serde_json::to_value(status_patch("u-1", &status)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "u-1"},
                {"op": "add", "path": "/status", "value": {"backlog": {"windows": 0, "bytes": 0}}},
            ])
        );
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
        assert_eq!(
            (t[0].uid.as_deref(), t[0].kind),
            (None, TargetKind::Rejected)
        );
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
        let exporter = Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
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
        assert_eq!(t[0].uid.as_deref(), Some("u-a"));
        assert_eq!(
            t[0].status.watermark.as_deref(),
            Some("2026-11-25T10:00:00Z")
        );
        assert_eq!(t[0].status.observed_generation, Some(0));
    }

    #[test]
    fn a_rejected_resource_keeps_its_resume_point_and_cursor() {
        let previous = MetricsExporterStatus {
            watermark: Some("2026-01-01T00:00:00Z".into()),
            last_successful_execution: Some("2025-12-31T23:00:00Z".into()),
            backlog: Some(BacklogStatus::default()),
            observed_generation: Some(3),
            conditions: vec![
                condition("Ready", "True", "t0"),
                condition("QueryHealthy", "True", "t0"),
                condition(LEGACY_CURSOR_CONDITION, "True", "t0"),
            ],
            ..Default::default()
        };
        let mut status = MetricsExporterStatus {
            conditions: vec![condition("Ready", "False", "t1")],
            ..Default::default()
        };
        complete(
            TargetKind::Rejected,
            &mut status,
            Some(&previous),
            Ticks::UNIX_EPOCH,
        );
        assert_eq!(status.watermark, previous.watermark);
        assert_eq!(
            status.last_successful_execution,
            previous.last_successful_execution
        );
        assert_eq!(status.observed_generation, Some(3));
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", LEGACY_CURSOR_CONDITION]);
        assert_eq!(
            status.conditions[0].last_transition_time, "t1",
            "it flipped"
        );
        assert_eq!(status.conditions[1].last_transition_time, "t0");
    }

    #[test]
    fn condition_changes_become_events() {
        let r = Regarding {
            namespace: "ns".into(),
            name: "a".into(),
            uid: "u".into(),
        };
        let with = |query: (&str, &str), dead: u64| MetricsExporterStatus {
            dead_lettered: Some(DeadLetterStatus {
                windows: dead,
                last_reason: None,
            }),
            conditions: vec![
                Condition {
                    reason: query.1.into(),
                    message: format!("{} message", query.1),
                    ..condition("QueryHealthy", query.0, "t")
                },
                Condition {
                    message: "2 window(s) were refused for good".into(),
                    ..condition("DeliveryHealthy", "False", "t")
                },
            ],
            ..Default::default()
        };
        let healthy = with(("True", "QuerySucceeded"), 0);
        let failing = with(("False", "QueryFailing"), 0);
        let rejected = with(("False", "QueryRejected"), 0);
        let summary = |n: Vec<Notice>| -> Vec<(Severity, String, String)> {
            n.into_iter()
                .map(|n| (n.severity, n.reason, n.note))
                .collect()
        };
        let transition_notices =
            |r: &Regarding, p: Option<&MetricsExporterStatus>, n: &MetricsExporterStatus| {
                transition_notices(r, p.map(Seen::of).as_ref(), n)
            };
        assert!(transition_notices(&r, None, &healthy).is_empty());
        assert!(transition_notices(&r, Some(&healthy), &healthy).is_empty());
        assert_eq!(
            summary(transition_notices(&r, Some(&healthy), &failing)),
            [(
                Severity::Warning,
                "QueryFailing".into(),
                "QueryFailing message".into()
            )]
        );
        assert!(transition_notices(&r, Some(&failing), &failing).is_empty());
        assert_eq!(
            summary(transition_notices(&r, Some(&failing), &rejected)),
            [(
                Severity::Warning,
                "QueryRejected".into(),
                "QueryRejected message".into()
            )],
            "a new reason (a budget suspension, say) is news"
        );
        assert_eq!(
            summary(transition_notices(&r, Some(&rejected), &healthy)),
            [(
                Severity::Normal,
                "QueryRecovered".into(),
                "queries succeed again".into()
            )]
        );
        assert_eq!(
            summary(transition_notices(&r, None, &failing)).len(),
            1,
            "failing when first seen"
        );
        let wal_full = with(("False", "WalFull"), 0);
        assert!(transition_notices(&r, Some(&healthy), &wal_full).is_empty());
        let dead = with(("True", "QuerySucceeded"), 2);
        assert_eq!(
            summary(transition_notices(&r, Some(&healthy), &dead)),
            [(
                Severity::Warning,
                "DeadLettered".into(),
                "2 window(s) were refused for good".into()
            )]
        );
        assert!(transition_notices(&r, Some(&dead), &dead).is_empty());
        assert!(
            transition_notices(&r, None, &dead).is_empty(),
            "not again after a restart"
        );
    }

    // --- Against the fake API server ---

    fn spec() -> Value {
        json!({
            "database": "db", "interval": "1h", "body": "T",
            "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"},
        })
    }

    /// The desired exporters of these stored objects, as the source would publish them.
    fn snapshot_of(fake: &FakeApi, names: &[&str]) -> Arc<Snapshot> {
        let mut snap = Snapshot::default();
        for name in names {
            let object = fake.get("ns", name).expect("stored");
            let resource: MetricsExporter = serde_json::from_value(object).unwrap();
            let e = Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
            snap.desired.insert(e.id.uid.clone(), Arc::new(e));
        }
        Arc::new(snap)
    }

    fn uid(fake: &FakeApi, name: &str) -> String {
        fake.get("ns", name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn open_wal(dir: &tempfile::TempDir) -> Wal {
        Wal::open(dir.path(), WalConfig::new(1 << 20, ["remote_write"])).unwrap()
    }

    /// Appends the hour-long window starting `start` (RFC 3339) for the exporter with `uid`.
    fn append(wal: &Wal, uid: &str, name: &str, start: &str) {
        let start = Ticks::parse(start).unwrap();
        let header = RecordHeader {
            exporter: ExporterRef::new(uid, "ns", name),
            generation: 1,
            window_start: start,
            window_end: start
                .checked_add(crate::time::Span::from_secs(3600))
                .unwrap(),
            created: Ticks::now(),
            outputs: vec![],
        };
        wal.append(&header, &crate::prompb::WriteRequest::default())
            .unwrap();
    }

    async fn writer(
        fake: &FakeApi,
        wal: &Wal,
        board: &Arc<Board>,
        qps: f64,
        burst: u32,
    ) -> KubeStatusWriter {
        KubeStatusWriter::new(
            fake.client().await,
            wal.clone(),
            board.clone(),
            KubeStatusConfig {
                qps,
                burst,
                namespace: None,
            },
            EventQueue::disabled(),
        )
    }

    fn patches_of(fake: &FakeApi, name: &str) -> Vec<crate::kube_support::StatusPatch> {
        (fake.status_patches().into_iter())
            .filter(|p| p.name == name)
            .collect()
    }

    #[tokio::test]
    async fn patches_the_status_subresource_with_a_uid_test_only_when_changed() {
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let mut snap = (*snapshot_of(&fake, &["a"])).clone();
        // ns/gone was deleted (it is not there to read); ns/other is another replica's.
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
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;

        writer.round(&snap).await;
        let got = fake.status_patches();
        assert_eq!(got.len(), 1, "{got:?}");
        let a = &got[0];
        assert_eq!(
            (a.namespace.as_str(), a.name.as_str(), a.code),
            ("ns", "a", 200)
        );
        assert_eq!(a.content_type, "application/json-patch+json");
        assert_eq!(
            a.body[0],
            json!({"op": "test", "path": "/metadata/uid", "value": uid(&fake, "a")})
        );
        assert_eq!(
            (a.body[1]["op"].as_str(), a.body[1]["path"].as_str()),
            (Some("add"), Some("/status"))
        );
        let request = (fake.requests().into_iter())
            .find(|r| r.method == "PATCH" && r.path.ends_with("/metricsexporters/a/status"))
            .expect("the PATCH of ns/a was recorded");
        assert!(
            request.query.contains("fieldManager=adxexporter"),
            "{}",
            request.query
        );
        let status = &fake.get("ns", "a").unwrap()["status"];
        assert_eq!(status["observedGeneration"], 1);
        let types: Vec<&str> = (status["conditions"].as_array().unwrap().iter())
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "QueryHealthy", "DeliveryHealthy"]);
        assert!(writer.failing.is_empty(), "{:?}", writer.failing);

        // Nothing changed: no second patch.
        writer.round(&snap).await;
        assert_eq!(fake.status_patches().len(), 1);
        // The start-up list read every resource once; the deleted one was looked up once per round.
        let gets = (fake.requests().into_iter())
            .filter(|r| r.method == "GET" && r.path.ends_with("/metricsexporters/gone"))
            .count();
        assert_eq!(gets, 2);
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_patched_after_a_restart_and_keeps_its_transition_times() {
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        let uid_a = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
        let board = Arc::new(Board::default());
        let mut first = writer(&fake, &wal, &board, 100.0, 10).await;
        first.round(&snapshot_of(&fake, &["a"])).await;
        assert_eq!(fake.status_patches().len(), 1);
        let before = fake.get("ns", "a").unwrap()["status"].clone();
        assert_eq!(before["watermark"], "2026-01-01T01:00:00Z");

        // A new process (same WAL, an empty board) with nothing new to say patches nothing.
        drop(first);
        let board = Arc::new(Board::default());
        let mut second = writer(&fake, &wal, &board, 100.0, 10).await;
        let snap = snapshot_of(&fake, &["a"]);
        second.round(&snap).await;
        second.round(&snap).await;
        assert_eq!(
            fake.status_patches().len(),
            1,
            "{:?}",
            fake.status_patches()
        );
        assert_eq!(fake.get("ns", "a").unwrap()["status"], before);

        // Something new is patched, and conditions that did not flip keep their transition time.
        append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
        second.round(&snap).await;
        assert_eq!(fake.status_patches().len(), 2);
        let after = fake.get("ns", "a").unwrap()["status"].clone();
        assert_eq!(after["watermark"], "2026-01-01T02:00:00Z");
        assert_eq!(after["backlog"]["windows"], 2);
        let times = |s: &Value| -> Vec<(String, String)> {
            (s["conditions"].as_array().unwrap().iter())
                .map(|c| {
                    (
                        c["type"].as_str().unwrap().to_owned(),
                        c["lastTransitionTime"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        assert_eq!(times(&after), times(&before));
    }

    #[tokio::test]
    async fn a_resource_recreated_under_the_same_name_never_gets_the_old_watermark() {
        let metrics = TestMetrics::install();
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        let old_uid = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        append(&wal, &old_uid, "a", "2026-01-01T00:00:00Z");
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
        let old_snap = snapshot_of(&fake, &["a"]);
        writer.round(&old_snap).await;
        assert_eq!(
            fake.get("ns", "a").unwrap()["status"]["watermark"],
            "2026-01-01T01:00:00Z"
        );

        // Deleted and created again; the source has not seen it yet, and the old one moved on.
        fake.delete("ns", "a");
        fake.create(exporter("ns", "a", spec()));
        let new_uid = uid(&fake, "a");
        assert_ne!(new_uid, old_uid);
        append(&wal, &old_uid, "a", "2026-01-01T01:00:00Z");
        writer.round(&old_snap).await;
        let last = fake.status_patches().pop().unwrap();
        assert_eq!(last.code, 422, "the uid test failed");
        assert!(fake.get("ns", "a").unwrap().get("status").is_none());
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "recreated")]),
            Some(1.0)
        );
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
            None
        );

        // Once the source has the new resource, it gets a status of its own: no watermark.
        writer.round(&snapshot_of(&fake, &["a"])).await;
        let status = fake.get("ns", "a").unwrap()["status"].clone();
        assert_eq!(status["observedGeneration"], 1, "{status}");
        assert!(status.get("watermark").is_none(), "{status}");
        assert!(writer.failing.is_empty(), "{:?}", writer.failing);
    }

    #[tokio::test]
    async fn patches_are_rate_limited() {
        const QPS: f64 = 20.0;
        const BURST: u32 = 2;
        let fake = FakeApi::start().await;
        let names: Vec<String> = (0..30).map(|i| format!("r{i:02}")).collect();
        for name in &names {
            fake.create(exporter("ns", name, spec()));
        }
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, QPS, BURST).await;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        writer.round(&snapshot_of(&fake, &refs)).await;
        let patches = fake.status_patches();
        assert_eq!(patches.len(), names.len());
        // In any span of d seconds at most burst + qps·d requests start; the server sees them a
        // little later, so allow two more and 100 ms of jitter.
        for (i, first) in patches.iter().enumerate() {
            for (j, last) in patches.iter().enumerate().skip(i) {
                let d = last.at.duration_since(first.at).as_secs_f64();
                let bound = f64::from(BURST) + QPS * (d + 0.1) + 2.0;
                assert!(
                    (j - i + 1) as f64 <= bound,
                    "{} patches within {d:.3}s (bound {bound:.1})",
                    j - i + 1
                );
            }
        }
    }

    #[tokio::test]
    async fn a_round_patches_what_the_rate_allows_the_least_recently_written_first() {
        let fake = FakeApi::start().await;
        let names: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
        for name in &names {
            fake.create(exporter("ns", name, spec()));
        }
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let board = Arc::new(Board::default());
        // 0.2/s for 5 s plus a burst of 4: 5 a round (the limiter itself made fast for the test).
        let mut writer = writer(&fake, &wal, &board, 0.2, 4).await;
        assert_eq!(writer.per_round(), 5);
        writer.limiter = Arc::new(RateLimiter::new(1000.0, 100));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let snap = snapshot_of(&fake, &refs);
        for (patched, waiting) in [(5, 7), (10, 2), (12, 0), (12, 0)] {
            writer.round(&snap).await;
            assert_eq!(fake.status_patches().len(), patched);
            assert_eq!(board.patch_backlog(), waiting);
        }
        let once: HashSet<String> = fake.status_patches().into_iter().map(|p| p.name).collect();
        assert_eq!(once.len(), 12, "each resource in turn");
    }

    #[tokio::test]
    async fn adx_mon_cursor_condition_is_kept_and_follows_the_export() {
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        let adx_mon = json!({
            "type": LEGACY_CURSOR_CONDITION, "status": "True", "reason": "ExecutionCompleted",
            "message": "2026-01-01T00:00:00Z", "lastTransitionTime": "2025-06-01T00:00:00Z",
            "observedGeneration": 1,
        });
        fake.set_status("ns", "a", json!({"conditions": [adx_mon]}));
        let uid_a = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
        let snap = snapshot_of(&fake, &["a"]);
        let cursor = |fake: &FakeApi| {
            let status = fake.get("ns", "a").unwrap()["status"].clone();
            let c = (status["conditions"].as_array().unwrap().iter())
                .find(|c| c["type"] == LEGACY_CURSOR_CONDITION)
                .cloned()
                .unwrap_or_else(|| panic!("adx-mon's condition is gone: {status}"));
            (status, c)
        };

        // First write: the cursor is the resume point, written back as the watermark too.
        writer.round(&snap).await;
        let (status, c) = cursor(&fake);
        assert_eq!(status["watermark"], "2026-01-01T00:00:00Z");
        assert_eq!(c, adx_mon, "unchanged, transition time included");

        // The export moves on: the cursor is where adx-mon could resume without a gap.
        append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
        append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
        writer.round(&snap).await;
        let (status, c) = cursor(&fake);
        assert_eq!(status["watermark"], "2026-01-01T02:00:00Z");
        assert_eq!(status["lastSuccessfulExecution"], "2026-01-01T00:00:00Z");
        assert_eq!(
            c["message"], "2026-01-01T00:00:00Z",
            "windows still in the WAL"
        );
        let first = wal
            .next_pending("remote_write", Ticks::MAX, 1)
            .unwrap()
            .remove(0);
        wal.ack("remote_write", &first.id).unwrap();
        writer.round(&snap).await;
        let (status, c) = cursor(&fake);
        assert_eq!(c["message"], "2026-01-01T01:00:00Z");
        assert_eq!(c["message"], status["lastSuccessfulExecution"]);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("ExecutionCompleted"))
        );
        assert_eq!(c["lastTransitionTime"], "2025-06-01T00:00:00Z");
        // adx-mon reads it back (time.RFC3339Nano) and so do we.
        let back: MetricsExporterStatus = serde_json::from_value(status).unwrap();
        assert_eq!(
            back.legacy_watermark(),
            Ticks::parse("2026-01-01T01:00:00Z").ok()
        );
    }

    #[tokio::test]
    async fn a_pruned_watermark_is_detected_and_not_patched_again_and_again() {
        let metrics = TestMetrics::install();
        let fake = FakeApi::start_with(FakeOptions {
            pruned_status_fields: vec!["watermark", "lastSuccessfulExecution"],
            ..FakeOptions::default()
        })
        .await;
        fake.create(exporter("ns", "a", spec()));
        let uid_a = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
        let snap = snapshot_of(&fake, &["a"]);
        writer.round(&snap).await;
        assert_eq!(metrics.value(STATUS_PRUNED, &[]), Some(1.0));
        assert!(writer.pruned);
        let status = fake.get("ns", "a").unwrap()["status"].clone();
        assert!(status.get("watermark").is_none(), "{status}");
        // The cursor survives the pruning schema (adx-mon's CRD has conditions).
        assert!(
            (status["conditions"].as_array().unwrap().iter())
                .any(|c| c["type"] == LEGACY_CURSOR_CONDITION
                    && c["message"] == "2026-01-01T00:00:00Z"),
            "{status}"
        );
        writer.round(&snap).await;
        assert_eq!(fake.status_patches().len(), 1, "not re-sent every round");
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "ok")]),
            Some(1.0)
        );
    }

    #[tokio::test]
    async fn a_refused_status_patch_is_counted_and_not_resent_until_it_changes() {
        let metrics = TestMetrics::install();
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        fake.create(exporter("ns", "b", spec()));
        let uid_a = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
        let snap = snapshot_of(&fake, &["a", "b"]);
        fake.fail_status_patches(Some(422));
        writer.round(&snap).await;
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
            Some(2.0)
        );
        assert_eq!(board.patch_backlog(), 2);
        let message = &writer.failing["ns/a"];
        assert!(
            message.contains("is invalid") && message.contains("adxexporter crd"),
            "{message}"
        );
        writer.round(&snap).await;
        assert_eq!(fake.status_patches().len(), 2, "not retried every round");

        // RBAC refuses: also counted; a changed status is tried again, and works once allowed.
        fake.fail_status_patches(Some(403));
        append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
        writer.round(&snap).await;
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
            Some(3.0)
        );
        assert!(
            writer.failing["ns/a"].contains("RBAC"),
            "{}",
            writer.failing["ns/a"]
        );
        fake.fail_status_patches(None);
        append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
        writer.round(&snap).await;
        assert_eq!(
            metrics.value(STATUS_PATCHES, &[("outcome", "ok")]),
            Some(1.0)
        );
        assert_eq!(patches_of(&fake, "a").last().unwrap().code, 200);
        assert!(!writer.failing.contains_key("ns/a"));
        assert_eq!(board.patch_backlog(), 1, "b waits for its retry");
    }

    #[tokio::test]
    async fn query_failures_and_recoveries_are_queued_as_events() {
        let fake = FakeApi::start().await;
        fake.create(exporter("ns", "a", spec()));
        let uid_a = uid(&fake, "a");
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(&dir);
        let board = Arc::new(Board::default());
        let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
        let (queue, mut notices) = EventQueue::channel();
        writer.events = queue;
        let snap = snapshot_of(&fake, &["a"]);
        writer.round(&snap).await;
        assert!(notices.try_recv().is_err(), "healthy: nothing to say");
        board.update(&uid_a, |r| {
            r.query_problem = Some(Problem {
                reason: "QueryRejected",
                message: "Semantic error: no column V".into(),
            })
        });
        writer.round(&snap).await;
        writer.round(&snap).await;
        let n = notices.try_recv().unwrap();
        assert_eq!(
            (
                n.severity,
                n.reason.as_str(),
                n.note.as_str(),
                n.regarding.uid.as_str()
            ),
            (
                Severity::Warning,
                "QueryRejected",
                "Semantic error: no column V",
                uid_a.as_str()
            )
        );
        assert!(notices.try_recv().is_err(), "once per change");
        board.update(&uid_a, |r| r.query_problem = None);
        writer.round(&snap).await;
        assert_eq!(notices.try_recv().unwrap().reason, "QueryRecovered");
    }
}
