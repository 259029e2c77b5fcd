//! Each exporter's status (docs/design.md#status-writers), on the side of the flow. The scheduler reports what happened to a
//! shared [`Board`]; a writer combines it with the WAL's backlog into the CRD-shaped status — [`file`]
//! writes `<wal-dir>/status.json` (standalone), [`kube`] patches the status subresource — and
//! [`gauges`] sets the state gauges from the same sources. This file holds the pure part: the board
//! and the status a resource gets. Resources skipped by criteria get no status (docs/design.md#criteria); invalid ones
//! and those whose `criteriaExpression` cannot be evaluated here get one saying why
//! ([`rejected_status`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crd::{
    BackfillStatus, BacklogStatus, Condition, DeadLetterStatus, LastQueryStatus,
    MetricsExporterStatus,
};
use crate::registry::Snapshot;
use crate::registry::{Exporter, Rejected};
use crate::time::Ticks;
use crate::wal::{Wal, WalFilter, WalStats};

#[derive(Debug, thiserror::Error)]
pub(crate) enum StatusError {
    #[error(
        "cannot write the status file {path}: {source} (check free space and permissions of --wal-dir)"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the WAL for status: {0}")]
    Wal(#[from] crate::wal::WalError),
}

/// Why queries of an exporter are not healthy: the condition reason and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// What the scheduler last saw for one exporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExporterRuntime {
    pub last_query: Option<LastQueryStatus>,
    /// `None` while queries succeed.
    pub query_problem: Option<Problem>,
    /// The backfill's progress, as its task last reported it.
    pub backfill: Option<BackfillStatus>,
}

/// Runtime facts shared by the scheduler (writer) and the status writer (reader), keyed by uid.
#[derive(Debug, Default)]
pub struct Board {
    exporters: Mutex<BTreeMap<String, ExporterRuntime>>,
    /// Windows and samples appended since the last [`Board::take_counts`] (the INFO summary line).
    appended: Mutex<(u64, u64)>,
    /// Resources whose changed status waits for a patch (Kubernetes mode), for the gauge.
    patch_backlog: AtomicU64,
}

impl Board {
    /// How many changed statuses wait for a patch after the status writer's last round.
    pub fn set_patch_backlog(&self, n: u64) {
        self.patch_backlog.store(n, Ordering::Relaxed);
    }

    pub fn patch_backlog(&self) -> u64 {
        self.patch_backlog.load(Ordering::Relaxed)
    }

    /// Counts one appended window of `samples` samples.
    pub fn count_window(&self, samples: u64) {
        let mut c = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        c.0 += 1;
        c.1 += samples;
    }

    /// Windows and samples appended since the last call.
    pub fn take_counts(&self) -> (u64, u64) {
        std::mem::take(&mut *self.appended.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn update(&self, uid: &str, f: impl FnOnce(&mut ExporterRuntime)) {
        let mut map = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(uid.to_owned()).or_default());
    }

    pub fn get(&self, uid: &str) -> ExporterRuntime {
        let map = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        map.get(uid).cloned().unwrap_or_default()
    }

    pub fn remove(&self, uid: &str) {
        let mut map = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(uid);
    }
}

/// Dead letters of one exporter (all outputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterSummary {
    pub windows: u64,
    pub last_reason: Option<String>,
}

/// An output whose oldest pending window of one exporter has failed and waits for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryingOutput {
    pub output: String,
    pub window_start: Ticks,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The status of one exporter from the runtime facts and the WAL. Pure.
pub(crate) fn exporter_status(
    exporter: &Exporter,
    runtime: &ExporterRuntime,
    wal: &WalStats,
    dead: &DeadLetterSummary,
    retrying: &[RetryingOutput],
    now: Ticks,
) -> MetricsExporterStatus {
    let stats = wal.exporters.iter().find(|e| e.uid == exporter.id.uid);
    let watermark = stats.and_then(|s| s.watermark);
    let (windows, oldest) = stats.map_or((0, None), |s| (s.records, s.oldest_window));
    // Every window before the oldest pending one has been delivered (or dead-lettered).
    let last_successful = if windows == 0 { watermark } else { oldest };
    // The WAL tracks bytes in total; share them by record count (an estimate, said so in the docs).
    let bytes = wal
        .used_bytes
        .saturating_mul(windows)
        .checked_div(wal.records)
        .unwrap_or(0);
    let stamp = now.to_string();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: stamp.clone(),
        observed_generation: Some(exporter.generation),
    };
    let query = match &runtime.query_problem {
        None => condition(
            "QueryHealthy",
            true,
            "QuerySucceeded",
            "the last query succeeded".into(),
        ),
        Some(p) => condition("QueryHealthy", false, p.reason, p.message.clone()),
    };
    let delivery = if dead.windows > 0 {
        condition(
            "DeliveryHealthy",
            false,
            "DeadLettered",
            format!(
                "{} window(s) were refused for good ({}): inspect with `adxexporter wal dead-letters`, fix the cause, then `adxexporter wal requeue`",
                dead.windows,
                dead.last_reason.as_deref().unwrap_or("no reason recorded")
            ),
        )
    } else if !retrying.is_empty() {
        // An output that keeps failing must show even though nothing is dropped (docs/design.md#status-writers).
        let outputs: Vec<String> = retrying
            .iter()
            .map(|r| {
                format!(
                    "{} failed {} time(s) on the window starting {} ({})",
                    r.output,
                    r.attempts,
                    r.window_start,
                    r.last_error.as_deref().unwrap_or("no error recorded")
                )
            })
            .collect();
        condition(
            "DeliveryHealthy",
            false,
            "DeliveryRetrying",
            format!(
                "{}; retrying with backoff, {windows} window(s) kept in the WAL, nothing is dropped: check that output's endpoint",
                outputs.join("; ")
            ),
        )
    } else {
        condition(
            "DeliveryHealthy",
            true,
            "Delivering",
            format!("{windows} window(s) pending delivery"),
        )
    };
    let ready_ok = query.status == "True" && delivery.status == "True";
    let ready = if exporter.spec.suspend {
        condition(
            "Ready",
            false,
            "Suspended",
            format!(
                "spec.suspend is true: no new queries, the watermark holds, {windows} window(s) in the WAL still drain; set it to false to continue from the watermark"
            ),
        )
    } else {
        condition(
            "Ready",
            ready_ok,
            if ready_ok { "Exporting" } else { "NotHealthy" },
            if ready_ok {
                "querying and delivering every window".into()
            } else {
                "see the QueryHealthy and DeliveryHealthy conditions".into()
            },
        )
    };
    MetricsExporterStatus {
        watermark: watermark.map(|t| t.to_string()),
        last_successful_execution: last_successful.map(|t| t.to_string()),
        backlog: Some(BacklogStatus {
            windows,
            bytes,
            oldest_window_start: oldest.map(|t| t.to_string()),
        }),
        dead_lettered: Some(DeadLetterStatus {
            windows: dead.windows,
            last_reason: dead.last_reason.clone(),
        }),
        last_query: runtime.last_query.clone(),
        backfill: (runtime.backfill.clone()).filter(|_| exporter.spec.backfill.is_some()),
        observed_generation: Some(exporter.generation),
        conditions: vec![ready, query, delivery],
    }
}

/// The status of a resource that was read but is invalid: `Ready=False` with every problem.
pub(crate) fn invalid_status(lines: &[String], now: Ticks) -> MetricsExporterStatus {
    MetricsExporterStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "InvalidSpec".into(),
            message: lines.join("; "),
            last_transition_time: now.to_string(),
            observed_generation: None,
        }],
        ..Default::default()
    }
}

/// The condition reason (adx-mon's, on its `Criteria` condition) of a `criteriaExpression` that
/// cannot be evaluated with this instance's cluster labels.
pub(crate) const CRITERIA_EXPRESSION_ERROR: &str = "CriteriaExpressionError";

/// The status of a resource whose `criteriaExpression` cannot be evaluated here, so it does not
/// run: `Ready=False` and adx-mon's `Criteria=False`, both with [`CRITERIA_EXPRESSION_ERROR`].
pub(crate) fn criteria_error_status(message: &str, now: Ticks) -> MetricsExporterStatus {
    let condition = |type_: &str| Condition {
        type_: type_.into(),
        status: "False".into(),
        reason: CRITERIA_EXPRESSION_ERROR.into(),
        message: message.to_owned(),
        last_transition_time: now.to_string(),
        observed_generation: None,
    };
    MetricsExporterStatus {
        conditions: vec![condition("Ready"), condition("Criteria")],
        ..Default::default()
    }
}

/// The status this instance writes for a resource it does not run; `None` for skipped ones.
pub(crate) fn rejected_status(why: &Rejected, now: Ticks) -> Option<MetricsExporterStatus> {
    match why {
        Rejected::Skipped(_) | Rejected::NotOwned { .. } => None,
        Rejected::Invalid(lines) => Some(invalid_status(lines, now)),
        Rejected::CriteriaError(message) => Some(criteria_error_status(message, now)),
        Rejected::FileSkipped(reason) => Some(file_skipped_status(reason, now)),
    }
}

/// The condition reason of a `--manifests` path that is not read ([`Rejected::FileSkipped`]).
pub(crate) const FILE_SKIPPED: &str = "FileSkipped";

/// The status (keyed by its path, standalone only) of a `--manifests` path that is not read:
/// `Ready=False`, reason [`FILE_SKIPPED`], the message saying why.
fn file_skipped_status(reason: &str, now: Ticks) -> MetricsExporterStatus {
    MetricsExporterStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: FILE_SKIPPED.into(),
            message: format!("not read: {reason}"),
            last_transition_time: now.to_string(),
            observed_generation: None,
        }],
        ..Default::default()
    }
}

/// Per exporter uid, the outputs whose oldest pending window has failed at least once (blocking).
pub(crate) fn retrying_outputs(
    wal: &Wal,
    stats: &WalStats,
) -> Result<BTreeMap<String, Vec<RetryingOutput>>, StatusError> {
    let mut retrying: BTreeMap<String, Vec<RetryingOutput>> = BTreeMap::new();
    for output in stats
        .outputs
        .iter()
        .filter(|o| o.configured && o.pending > 0)
    {
        // Each exporter's oldest pending window on this output, due or in backoff.
        for head in wal
            .next_pending(&output.output, Ticks::MAX, usize::MAX)?
            .into_iter()
            .filter(|h| h.attempts > 0)
        {
            retrying
                .entry(head.id.exporter_uid.clone())
                .or_default()
                .push(RetryingOutput {
                    output: output.output.clone(),
                    window_start: head.header.window_start,
                    attempts: head.attempts,
                    last_error: head.last_error,
                });
        }
    }
    Ok(retrying)
}

/// Dead letters per exporter uid, from the WAL (blocking).
pub(crate) fn dead_letter_summaries(
    wal: &Wal,
) -> Result<BTreeMap<String, DeadLetterSummary>, StatusError> {
    let mut dead: BTreeMap<String, DeadLetterSummary> = BTreeMap::new();
    for letter in wal.dead_letters(&WalFilter::default())? {
        let d = dead.entry(letter.id.exporter_uid.clone()).or_default();
        d.windows += 1;
        d.last_reason = Some(format!("{}: {}", letter.output, letter.reason));
    }
    Ok(dead)
}

/// Keeps each condition's `lastTransitionTime` from `previous` while its status is unchanged, so
/// the time says when the condition last flipped, not when the status was last written.
pub(crate) fn carry_transition_times(
    previous: Option<&MetricsExporterStatus>,
    next: &mut MetricsExporterStatus,
) {
    let Some(previous) = previous else {
        return;
    };
    for c in &mut next.conditions {
        if let Some(p) = previous.condition(&c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
}

pub mod events;
pub mod file;
pub mod gauges;
pub mod kube;
pub(crate) mod limit;

pub(crate) use file::StatusWriter;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::file::read_status_file;
    use std::sync::Arc;

    fn status_with(conditions: &[(&str, &str, &str)]) -> MetricsExporterStatus {
        MetricsExporterStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, at)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: String::new(),
                    message: String::new(),
                    last_transition_time: (*at).into(),
                    observed_generation: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let previous = status_with(&[("Ready", "True", "t0"), ("DeliveryHealthy", "True", "t0")]);
        let mut next = status_with(&[("Ready", "True", "t1"), ("DeliveryHealthy", "False", "t1")]);
        carry_transition_times(Some(&previous), &mut next);
        let times: Vec<&str> = next
            .conditions
            .iter()
            .map(|c| c.last_transition_time.as_str())
            .collect();
        assert_eq!(times, ["t0", "t1"]);
    }

    #[test]
    fn the_status_file_keeps_transition_times_of_unchanged_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(
            &dir.path().join("wal"),
            crate::wal::WalConfig::new(1 << 20, ["otlp"]),
        )
        .unwrap();
        let writer = StatusWriter::new(dir.path(), wal, Arc::new(Board::default()));
        let lines = vec!["spec.body: missing".to_owned()];
        let earlier = Ticks::parse("2020-01-01T00:00:00Z").unwrap();
        let before = BTreeMap::from([("ns/a".to_owned(), invalid_status(&lines, earlier))]);
        std::fs::write(&writer.path, serde_json::to_vec(&before).unwrap()).unwrap();
        let mut snap = Snapshot::default();
        snap.rejected
            .insert("ns/a".into(), Rejected::Invalid(lines.clone()));
        writer.write_once(&snap).unwrap();
        let after = read_status_file(&writer.path).unwrap();
        let ready = after["ns/a"].condition("Ready").unwrap();
        assert_eq!(ready.last_transition_time, "2020-01-01T00:00:00Z");
    }
}
