//! `spec.backfill` (docs/design.md#backfill): a past range re-exported beside the live windows.
//!
//! - Its own cursor: the backfill is an exporter of its own in the WAL ([`backfill_uid`], one per
//!   `requestId`), whose watermark is the cursor, so its records never collide with the live
//!   ones and survive restarts; a rescale handover continues from the cursor in the resource's
//!   `status.backfill`. A new `requestId` starts over; the old backfill's cursor is forgotten (its
//!   windows already in the WAL still drain), as is every backfill's when `spec.backfill` goes.
//! - Lower priority than live windows, which never wait for it: its queries do not take the live
//!   windows' `--max-concurrent-queries` slots but its own `maxInFlight` (capped to that number).
//!   Up to `maxInFlight` windows are queried at once and appended in order; a failed window is
//!   retried with backoff before any later one is appended.
//! - The same transform, WAL and drain loops as live windows. An output that refuses a backfill
//!   window for good as out of order is dropped from the backfill (`sink::drain` records it in the
//!   WAL) instead of dead-lettering every window; with no output left the backfill is `Failed`,
//!   and so is a `Completed` one whose windows an output refuses after they were all appended.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::exporter::{Task, pause, transient_delay};
use super::window::{Window, align_down, is_due, next_window};
use crate::crd::{Backfill, BackfillStatus};
use crate::query::KustoClient;
use crate::telemetry::metrics::QUERIES;
use crate::time::{Span, Ticks};
use crate::wal::{ExporterRef, WalError, backfill_uid, blocking};

/// How often a backfill with nothing to do (WAL full, or `Completed` while an output may still
/// refuse its windows) looks again.
const RECHECK: Duration = Duration::from_secs(5);

pub(super) async fn run(task: &Task, cancel: CancellationToken) {
    let b = task.ex.spec.backfill.clone();
    let current = b
        .as_ref()
        .map(|b| backfill_uid(&task.ex.id.uid, &b.request_id));
    if let Err(e) = forget_others(task, current.as_deref()).await {
        tracing::warn!(exporter = %task.key, "cannot forget an earlier backfill's cursor: {e}");
    }
    let (Some(b), Some(uid)) = (b, current) else {
        return;
    };
    // Without an endpoint the live task reports the exporter unrunnable.
    let Some(client) = task.ctx.clients.get(&task.ex.spec.database).cloned() else {
        return;
    };
    let id = ExporterRef::new(uid, task.ex.id.namespace.clone(), task.ex.id.name.clone());
    let mut progress = Progress::new(&b, task.ex.spec.interval);
    let mut cursor = match resume(task, &b, &id, progress.first).await {
        Ok(cursor) => cursor,
        Err(e) => {
            progress.report(
                task,
                None,
                "Failed",
                format!("cannot read its cursor from the WAL: {e}"),
            );
            cancel.cancelled().await;
            return;
        }
    };
    let slots = usize::try_from(b.max_in_flight)
        .unwrap_or(usize::MAX)
        .min(task.ctx.query_slots)
        .max(1);
    let capped = match slots < b.max_in_flight as usize {
        true => format!(
            " (maxInFlight {} capped to --max-concurrent-queries {slots})",
            b.max_in_flight
        ),
        false => String::new(),
    };
    tracing::info!(exporter = %task.key, request_id = %b.request_id, cursor = %cursor, end = %b.end, "backfill started{capped}");
    let mut failures: u32 = 0;
    // The state last logged once every window was in the WAL.
    let mut done: Option<&str> = None;
    loop {
        let refused = match task.ctx.wal.backfill_failures(&id.uid) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(exporter = %task.key, "cannot read the backfill's refused outputs: {e}");
                BTreeMap::new()
            }
        };
        if cursor >= b.end || next_window(cursor, task.ex.spec.interval).start >= b.end {
            // Every window is in the WAL; an output that refused them is why it is not `Completed`.
            let (state, message) = match refused.is_empty() {
                true => ("Completed", String::new()),
                false => (
                    "Failed",
                    format!(
                        "{}; the other outputs got every window",
                        refused_message(&refused)
                    ),
                ),
            };
            if done != Some(state) {
                tracing::info!(exporter = %task.key, request_id = %b.request_id, state, "backfill done");
                done = Some(state);
            }
            progress.report(task, Some(cursor), state, message);
            // Appended is not delivered: an output may still refuse the windows (after an outage,
            // behind a backlog), which turns `Completed` into `Failed`.
            if refused.is_empty() && pause(RECHECK, &cancel).await {
                continue;
            }
            cancel.cancelled().await;
            return;
        }
        let all = (task.ex.spec.outputs.clone()).unwrap_or_else(|| task.ctx.wal.outputs().to_vec());
        let outputs: Vec<String> = all
            .into_iter()
            .filter(|o| !refused.contains_key(o))
            .collect();
        let refusals = refused_message(&refused);
        if outputs.is_empty() {
            progress.report(task, Some(cursor), "Failed", refusals);
            cancel.cancelled().await;
            return;
        }
        let windows = due_windows(task, cursor, b.end, slots);
        let Some(first) = windows.first() else {
            let next = next_window(cursor, task.ex.spec.interval);
            let due_at = Ticks(next.end.0.saturating_add(task.ex.spec.ingestion_delay.0));
            progress.report(task, Some(cursor), "Running", refusals);
            if !pause(due_at.since(Ticks::now()).to_std(), &cancel).await {
                return;
            }
            continue;
        };
        let wal = task.ctx.wal.clone();
        if blocking(move || wal.is_full()).await.unwrap_or(false) {
            if !pause(RECHECK, &cancel).await {
                return;
            }
            continue;
        }
        let first_start = first.start;
        let queries = windows.iter().map(|w| query(task, &client, *w));
        let results = tokio::select! {
            _ = cancel.cancelled() => return,
            r = futures::future::join_all(queries) => r,
        };
        // Explicit outputs once one refused the backfill; else the resource's own choice.
        let targets = match refused.is_empty() {
            true => task.ex.spec.outputs.clone().unwrap_or_default(),
            false => outputs,
        };
        let mut error = None;
        for (window, result) in windows.iter().zip(results) {
            let appended = match result {
                Ok(t) => (task.append_as(id.clone(), targets.clone(), window, t).await)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match appended {
                Ok(_) => {
                    cursor = window.end;
                    failures = 0;
                }
                Err(e) => {
                    error = Some((*window, e));
                    break;
                }
            }
        }
        let message = match &error {
            Some((w, e)) => format!(
                "window {}..{} failed, retried with backoff: {e}",
                w.start, w.end
            ),
            None => refusals,
        };
        progress.report(task, Some(cursor), "Running", message);
        if let Some((w, e)) = error {
            failures += 1;
            tracing::warn!(exporter = %task.key, request_id = %b.request_id, window_start = %w.start, first_start = %first_start, "backfill window failed: {e}");
            if !pause(transient_delay(failures), &cancel).await {
                return;
            }
        }
    }
}

/// One window's query and transform, holding its own share of the memory budget.
async fn query(
    task: &Task,
    client: &KustoClient,
    window: Window,
) -> Result<crate::transform::ForWal, String> {
    let mut reservation = task.ctx.memory.reserve(0).await;
    let result = task.run_window(client, &window, &mut reservation).await;
    crate::query::budget::release_freed_memory(reservation.peak_bytes()).await;
    // Counted with the live queries, so the query rate an operator sees is what Kusto sees.
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics::counter!(QUERIES, "exporter" => task.key.clone(), "outcome" => outcome).increment(1);
    result.map(|(_, t)| t).map_err(|e| e.to_string())
}

/// Up to `slots` consecutive windows after `cursor` that are complete and start before `end`.
fn due_windows(task: &Task, mut cursor: Ticks, end: Ticks, slots: usize) -> Vec<Window> {
    let (interval, delay) = (task.ex.spec.interval, task.ex.spec.ingestion_delay);
    let now = Ticks::now();
    let mut windows = Vec::with_capacity(slots);
    while windows.len() < slots {
        let w = next_window(cursor, interval);
        if w.start >= end || !is_due(&w, now, delay) {
            break;
        }
        windows.push(w);
        cursor = w.end;
    }
    windows
}

/// The cursor to continue from: the newer of the WAL's and the status' (same `requestId`),
/// else the range's first window.
async fn resume(
    task: &Task,
    b: &Backfill,
    id: &ExporterRef,
    first: Ticks,
) -> Result<Ticks, WalError> {
    let from_status = (task.ex.status_backfill.as_ref())
        .filter(|s| s.request_id == b.request_id)
        .and_then(|s| s.cursor.as_deref())
        .and_then(|c| Ticks::parse(c).ok());
    let (wal, id) = (task.ctx.wal.clone(), id.clone());
    blocking(move || {
        let start = wal.set_watermark_if_absent(&id, first)?;
        match from_status {
            Some(cursor) if cursor > start => wal.raise_watermark(&id, cursor),
            _ => Ok(start),
        }
    })
    .await
}

/// Forgets the cursors of this exporter's backfills other than `keep` (their windows still drain).
async fn forget_others(task: &Task, keep: Option<&str>) -> Result<(), WalError> {
    let (wal, uid, keep) = (
        task.ctx.wal.clone(),
        task.ex.id.uid.clone(),
        keep.map(str::to_owned),
    );
    blocking(move || {
        for other in wal.backfills_of(&uid)? {
            if Some(&other) != keep.as_ref() {
                wal.forget_exporter(&other)?;
            }
        }
        Ok(())
    })
    .await
}

fn refused_message(refused: &BTreeMap<String, String>) -> String {
    (refused.iter())
        .map(|(output, why)| format!("output {output} stopped: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `status.backfill` reports.
struct Progress {
    request_id: String,
    first: Ticks,
    interval: Span,
    total: u64,
}

impl Progress {
    fn new(b: &Backfill, interval: Span) -> Progress {
        let first = align_down(b.start, interval);
        let step = interval.0.max(1);
        let total = u64::try_from((b.end.since(first).0 + step - 1) / step).unwrap_or(0);
        Progress {
            request_id: b.request_id.clone(),
            first,
            interval,
            total,
        }
    }

    fn report(&mut self, task: &Task, cursor: Option<Ticks>, state: &str, message: String) {
        let done = cursor.map_or(0, |c| {
            u64::try_from(c.since(self.first).0 / self.interval.0.max(1)).unwrap_or(0)
        });
        let status = BackfillStatus {
            request_id: self.request_id.clone(),
            cursor: cursor.map(|c| c.to_string()),
            windows_done: done.min(self.total),
            windows_total: self.total,
            state: state.to_owned(),
            message,
        };
        task.ctx
            .board
            .update(&task.ex.id.uid, |r| r.backfill = Some(status));
    }
}
