//! The life of one exporter task: resume, then one window after another until cancelled — query,
//! transform, WAL append — never skipping one (docs/design.md#windows). Each step ends in one `Outcome`, and
//! `Task::report` turns it into the metric, the log line and the status board entry, side by side.
//!
//! - Resume point: the newer of the WAL's watermark and the resource's status watermark (or adx-mon's
//!   `LastSuccessfulExecution` condition), else `startTime`, else the newest complete window. The
//!   status is newer only after another replica exported windows (a rescale handed the resource
//!   over and back); those must not be exported again.
//! - A window runs once it is complete (`end <= now − ingestionDelay`). Missed windows run back to
//!   back, oldest first, one in flight per exporter; `--max-concurrent-queries` bounds all of them.
//! - The watermark only moves inside [`Wal::append_encoded`], in the same transaction as the
//!   window's record, so a crash at any point either keeps the window (it will be pushed) or
//!   re-queries it.
//! - A failing window is retried with backoff, never skipped: transient failures quickly (up to a
//!   minute apart), permanent ones (bad query, schema mismatch) slowly (up to five minutes apart)
//!   with `QueryHealthy=False` carrying Kusto's message until the spec or the data changes.
//! - A full WAL pauses querying (the watermark holds; Kusto still has the data) until the drain
//!   loops free space.
//! - Cancellation (spec change, resource removed, shutdown) interrupts waits and queries, never an
//!   append: an append that started completes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::window::{Window, first_window, is_due, next_window, query_text};
use crate::backoff;
use crate::crd::LastQueryStatus;
use crate::query::{
    KustoClient, MemoryBudget, QueryError, QueryLimits, Reservation, no_endpoint_message,
};
use crate::registry::Exporter;
use crate::status::{Board, Problem};
use crate::telemetry::Health;
use crate::telemetry::metrics::{
    QUERIES, QUERY_DURATION, ROWS_READ, SAMPLES_PRODUCED, SAMPLES_SKIPPED,
};
use crate::time::Ticks;
use crate::transform::{ForWal, TransformError, TransformStats, transform_for_wal};
use crate::wal::{RecordHeader, Wal, WalError, blocking};

/// Backoff for transient query failures.
const TRANSIENT_BASE: Duration = Duration::from_secs(1);
const TRANSIENT_CAP: Duration = Duration::from_secs(60);
/// Backoff for permanent query failures: the spec or the data has to change first.
const PERMANENT_BASE: Duration = Duration::from_secs(30);
const PERMANENT_CAP: Duration = Duration::from_secs(300);
/// How long a paused (WAL full) exporter waits before checking again without a WAL change.
const FULL_RECHECK: Duration = Duration::from_secs(5);
/// A failed append is retried at most this far apart: the WAL reopens by itself once its volume
/// accepts writes again, and querying should follow within seconds, not a minute.
const APPEND_RETRY_CAP: Duration = Duration::from_secs(10);

/// What every exporter task shares.
pub(crate) struct SchedulerContext {
    pub wal: Wal,
    /// Kusto clients by database name (`--kusto-endpoint DB=URL`).
    pub clients: BTreeMap<String, Arc<KustoClient>>,
    pub cluster_labels: BTreeMap<String, String>,
    /// `--max-concurrent-queries`: the live windows' query slots.
    pub queries: Arc<Semaphore>,
    /// How many slots `queries` has (a backfill's `maxInFlight` is capped to it).
    pub query_slots: usize,
    /// `--query-memory-budget`: response bodies and decoded rows of the queries in flight.
    pub memory: MemoryBudget,
    /// Bound on a decompressed Kusto response body.
    pub max_response_bytes: usize,
    /// A query running longer than this is reported, and again after each further period, so
    /// status does not say "the last query succeeded" while one hangs for minutes (a quarter of
    /// `--kusto-server-timeout`: 60 s by default).
    pub slow_query: Duration,
    pub board: Arc<Board>,
    pub health: Arc<Health>,
}

/// Why one window could not be turned into samples.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WindowError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the query returned no result table: end the query with the table to export")]
    NoResultTable,
    #[error(transparent)]
    Transform(#[from] TransformError),
}

impl WindowError {
    pub fn is_permanent(&self) -> bool {
        match self {
            WindowError::Query(e) => e.is_permanent(),
            WindowError::NoResultTable | WindowError::Transform(_) => true,
        }
    }

    /// A short, bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            WindowError::Query(e) => e.kind(),
            WindowError::NoResultTable => "no_result_table",
            WindowError::Transform(_) => "schema_mismatch",
        }
    }

    /// How long to wait before the same window is tried again (`failures` ≥ 1 in a row).
    pub(super) fn retry_in(&self, failures: u32) -> Duration {
        if self.is_permanent() {
            backoff::delay(
                failures,
                PERMANENT_BASE,
                PERMANENT_CAP,
                &mut backoff::fastrand01,
            )
            .max(PERMANENT_BASE)
        } else if let WindowError::Query(q) = self
            && let Some(after) = q.retry_after()
        {
            after.min(TRANSIENT_CAP * 5)
        } else {
            transient_delay(failures)
        }
    }
}

pub(super) fn transient_delay(failures: u32) -> Duration {
    backoff::delay(
        failures,
        TRANSIENT_BASE,
        TRANSIENT_CAP,
        &mut backoff::fastrand01,
    )
}

/// Why an exporter cannot run at all until its spec or this instance's flags change.
pub(super) enum Unrunnable {
    DatabaseNotConfigured,
    OutputNotConfigured(Vec<String>),
    Watermark(WalError),
}

/// What became of one step of an exporter: each variant has exactly one report.
pub(super) enum Outcome {
    /// The exporter cannot run; it waits for cancellation (a spec change restarts it).
    Unrunnable(Unrunnable),
    /// Resumed from `watermark` (for a new exporter: the start of its first window).
    Started { watermark: Ticks },
    /// `spec.suspend`: no queries until it changes.
    Suspended,
    /// The query of `window` has been running for `running` and goes on.
    Slow { window: Window, running: Duration },
    /// The WAL is full: querying pauses, the watermark holds.
    WalFull,
    /// The window's samples are in the WAL and the watermark moved to its end. `unusable`: the
    /// rows gave no sample for a reason the resource must fix (what to tell the operator).
    Appended {
        window: Window,
        rows: u64,
        samples: u64,
        elapsed: Duration,
        unusable: Option<String>,
        /// The most bytes of the query memory budget the window accounted at once.
        memory_peak: u64,
    },
    /// The query or the transform failed: the same window is tried again in `retry_in`.
    WindowFailed {
        window: Window,
        error: WindowError,
        elapsed: Duration,
        retry_in: Duration,
    },
    /// The samples could not be appended: the same window is queried again in `retry_in`.
    AppendFailed {
        window: Window,
        error: WalError,
        elapsed: Duration,
        retry_in: Duration,
    },
}

/// One exporter's task state.
pub(super) struct Task {
    pub(super) ex: Arc<Exporter>,
    pub(super) ctx: Arc<SchedulerContext>,
    pub(super) key: String,
}

impl Task {
    pub(super) fn new(ex: Arc<Exporter>, ctx: Arc<SchedulerContext>) -> Task {
        Task {
            key: ex.key(),
            ex,
            ctx,
        }
    }
}

impl Task {
    /// The live windows: resume, then one window after another until cancelled.
    pub(super) async fn run(&self, cancel: CancellationToken) {
        let (ex, ctx) = (&self.ex, &self.ctx);
        let (client, mut watermark) = match self.preflight().await {
            Ok(ready) => ready,
            Err(why) => {
                self.report(Outcome::Unrunnable(why));
                cancel.cancelled().await;
                return;
            }
        };
        self.report(Outcome::Started { watermark });
        let (interval, delay) = (ex.spec.interval, ex.spec.ingestion_delay);
        let mut failures: u32 = 0;
        // What the next query reserves of the memory budget before it is sent: the last window's
        // peak (windows of one exporter are alike), or what a restart asked for.
        let mut reserve_first: u64 = 0;
        let mut changes = ctx.wal.subscribe();
        loop {
            let now = Ticks::now();
            let window = next_window(watermark, interval);
            if !is_due(&window, now, delay) {
                let due_at = Ticks(window.end.0.saturating_add(delay.0));
                if !pause(due_at.since(now).to_std(), &cancel).await {
                    return;
                }
                continue;
            }
            let wal = ctx.wal.clone();
            match blocking(move || wal.is_full()).await {
                Ok(false) => {}
                Ok(true) => {
                    self.report(Outcome::WalFull);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = changes.changed() => {}
                        _ = tokio::time::sleep(FULL_RECHECK) => {}
                    }
                    continue;
                }
                Err(e) => tracing::warn!(exporter = %self.key, "cannot check WAL size: {e}"),
            }
            let Ok(permit) = (tokio::select! {
                _ = cancel.cancelled() => return,
                p = ctx.queries.clone().acquire_owned() => p,
            }) else {
                return;
            };
            // Waits holding nothing: the budget's rule against deadlock (query::budget).
            let mut reservation = tokio::select! {
                _ = cancel.cancelled() => return,
                r = ctx.memory.reserve(reserve_first) => r,
            };
            let started = Instant::now();
            let result = {
                let query = self.run_window(&client, &window, &mut reservation);
                tokio::pin!(query);
                let period = ctx.slow_query.max(Duration::from_secs(1));
                let mut slow = tokio::time::interval_at((started + period).into(), period);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = &mut query => break r,
                        _ = slow.tick() => self.report(Outcome::Slow { window, running: started.elapsed() }),
                    }
                }
            };
            if let Err(WindowError::Query(QueryError::MemoryBusy { need })) = result {
                // Not a failure: the reservation is given back (so no two queries wait on each
                // other) and the same window is queried once `need` bytes are free.
                tracing::debug!(exporter = %self.key, window_start = %window.start, need, "the query memory budget is busy: the window waits for its share and is queried again");
                crate::query::budget::note_wait("requery");
                crate::query::budget::release_freed_memory(reservation.peak_bytes()).await;
                reserve_first = need;
                continue;
            }
            if result.is_ok() {
                reserve_first = reservation.peak_bytes();
            } else {
                // Never held through the retry delay.
                crate::query::budget::release_freed_memory(reservation.peak_bytes()).await;
                reservation.release_all();
            }
            drop(permit);
            let elapsed = started.elapsed();
            let outcome = match result {
                Ok((rows, transformed)) => {
                    let unusable = unusable_rows(transformed.stats());
                    let appended = self.append(&window, transformed).await;
                    drop(reservation);
                    match appended {
                        Ok(samples) => Outcome::Appended {
                            window,
                            rows,
                            samples,
                            elapsed,
                            unusable,
                            memory_peak: reserve_first,
                        },
                        Err(WalError::Full { .. }) => continue,
                        Err(error) => {
                            failures += 1;
                            Outcome::AppendFailed {
                                window,
                                error,
                                elapsed,
                                retry_in: transient_delay(failures).min(APPEND_RETRY_CAP),
                            }
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    Outcome::WindowFailed {
                        retry_in: error.retry_in(failures),
                        window,
                        error,
                        elapsed,
                    }
                }
            };
            let wait = match &outcome {
                Outcome::Appended { window, .. } => {
                    watermark = window.end;
                    failures = 0;
                    None
                }
                Outcome::WindowFailed { retry_in, .. } | Outcome::AppendFailed { retry_in, .. } => {
                    Some(*retry_in)
                }
                _ => None,
            };
            self.report(outcome);
            if let Some(d) = wait
                && !pause(d, &cancel).await
            {
                return;
            }
        }
    }

    /// The Kusto client and the resume point, or why this exporter cannot run.
    async fn preflight(&self) -> Result<(Arc<KustoClient>, Ticks), Unrunnable> {
        let (ex, ctx) = (&self.ex, &self.ctx);
        let client = (ctx.clients.get(&ex.spec.database).cloned())
            .ok_or(Unrunnable::DatabaseNotConfigured)?;
        let configured = ctx.wal.outputs();
        let unknown: Vec<String> = (ex.spec.outputs.iter().flatten())
            .filter(|o| !configured.contains(o))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(Unrunnable::OutputNotConfigured(unknown));
        }
        let watermark = resume_point(ex, &ctx.wal)
            .await
            .map_err(Unrunnable::Watermark)?;
        Ok((client, watermark))
    }

    /// Appends the window's samples; the watermark moves in the same transaction.
    async fn append(&self, window: &Window, t: ForWal) -> Result<u64, WalError> {
        let outputs = self.ex.spec.outputs.clone().unwrap_or_default();
        self.append_as(self.ex.id.clone(), outputs, window, t).await
    }

    /// [`append`](Self::append) as `exporter` (the live exporter, or its backfill) to `outputs`
    /// (empty: every configured output).
    pub(super) async fn append_as(
        &self,
        exporter: crate::wal::ExporterRef,
        outputs: Vec<String>,
        window: &Window,
        t: ForWal,
    ) -> Result<u64, WalError> {
        record_transform_metrics(&self.key, t.stats());
        let header = RecordHeader {
            exporter,
            generation: self.ex.generation,
            window_start: window.start,
            window_end: window.end,
            created: Ticks::now(),
            outputs,
        };
        let wal = self.ctx.wal.clone();
        let samples = t.stats().samples;
        let (reset_after_idle, delta) = (self.ex.mapping.reset_after_idle, self.ex.mapping.delta());
        blocking(move || match t {
            ForWal::Encoded(t) => wal.append_encoded(&header, &t.write_request, samples),
            ForWal::Increases(t) => {
                wal.append_cumulative(&header, t.request, reset_after_idle, delta)
            }
        })
        .await?;
        Ok(samples)
    }

    /// The one place an outcome becomes a metric, a log line and a status board entry.
    pub(super) fn report(&self, outcome: Outcome) {
        let key = &self.key;
        let uid = &self.ex.id.uid;
        let board = &self.ctx.board;
        let problem = |reason: &'static str, message: String| {
            board.update(uid, |r| r.query_problem = Some(Problem { reason, message }))
        };
        match outcome {
            Outcome::Unrunnable(why) => {
                let (reason, message) = match why {
                    Unrunnable::DatabaseNotConfigured => (
                        "DatabaseNotConfigured",
                        no_endpoint_message(&self.ex.spec.database),
                    ),
                    Unrunnable::OutputNotConfigured(unknown) => ("OutputNotConfigured", format!(
                        "spec.outputs names {unknown:?}, but this instance's outputs are {:?}: fix spec.outputs or configure the output",
                        self.ctx.wal.outputs()
                    )),
                    Unrunnable::Watermark(e) => {
                        ("WalError", format!("cannot read the watermark from the WAL: {e}"))
                    }
                };
                tracing::error!(exporter = %key, "{message}");
                problem(reason, message);
            }
            Outcome::Slow { window, running } => {
                let message = format!(
                    "the query of window {}..{} has been running for {}s: Kusto answers or the request fails within --kusto-server-timeout plus 30 s; check the cluster's load and the query (a query also waits while --query-memory-budget is taken by other queries: adxexporter_query_memory_reserved_bytes)",
                    window.start,
                    window.end,
                    running.as_secs()
                );
                tracing::warn!(exporter = %key, window_start = %window.start, window_end = %window.end, "{message}");
                problem("QuerySlow", message);
            }
            Outcome::Suspended => {
                tracing::info!(exporter = %key, "suspended (spec.suspend): no queries, the watermark holds, the WAL still drains");
            }
            Outcome::Started { watermark } => {
                tracing::info!(exporter = %key, watermark = %watermark, interval = %self.ex.spec.interval, "started");
            }
            Outcome::WalFull => problem(
                "WalFull",
                "the WAL reached --wal-max-bytes, or its volume has less than --wal-min-free-bytes free: querying paused (nothing is lost; Kusto still has the data) until outputs drain it or space returns; check the outputs and the volume (adxexporter_wal_volume_free_bytes), or raise --wal-max-bytes".into(),
            ),
            Outcome::Appended {
                window,
                rows,
                samples,
                elapsed,
                unusable,
                memory_peak,
            } => {
                metrics::histogram!(QUERY_DURATION, "exporter" => key.clone())
                    .record(elapsed.as_secs_f64());
                // The watermark and lag gauges are set by status::gauges from the WAL.
                metrics::counter!(QUERIES, "exporter" => key.clone(), "outcome" => "ok")
                    .increment(1);
                tracing::debug!(exporter = %key, window_start = %window.start, window_end = %window.end, rows, samples, memory_peak, "window appended");
                if let Some(message) = &unusable {
                    tracing::warn!(exporter = %key, window_start = %window.start, window_end = %window.end, "{message}");
                }
                board.count_window(samples);
                board.update(uid, |r| {
                    if let Some(p) = &r.query_problem
                        && !matches!(p.reason, "NoSamples" | "QuerySlow")
                    {
                        tracing::info!(exporter = %key, window_start = %window.start, "recovered ({}): windows are appended again", p.reason);
                    }
                    // An empty window says nothing about whether rows are usable: keep NoSamples.
                    let still_unusable = rows == 0
                        && r.query_problem.as_ref().is_some_and(|p| p.reason == "NoSamples");
                    if !still_unusable {
                        r.query_problem = unusable.map(|message| Problem {
                            reason: "NoSamples",
                            message,
                        });
                    }
                    r.last_query = Some(last_query(&window, rows, elapsed, None));
                });
            }
            Outcome::WindowFailed {
                window,
                error,
                elapsed,
                retry_in,
            } => {
                metrics::histogram!(QUERY_DURATION, "exporter" => key.clone())
                    .record(elapsed.as_secs_f64());
                metrics::counter!(QUERIES, "exporter" => key.clone(), "outcome" => error.kind())
                    .increment(1);
                let permanent = error.is_permanent();
                tracing::warn!(exporter = %key, window_start = %window.start, window_end = %window.end, permanent, retry_in = ?retry_in, "window failed: {error}");
                let message = error.to_string();
                let (reason, hint) = if let WindowError::Query(QueryError::OverMemoryBudget { .. }) = &error {
                    ("OverMemoryBudget", "permanent until the window fits")
                } else if permanent {
                    ("QueryRejected", "fix the query or the transform")
                } else {
                    ("QueryFailing", "transient")
                };
                board.update(uid, |r| {
                    r.last_query = Some(last_query(&window, 0, elapsed, Some(message.clone())));
                    r.query_problem = Some(Problem {
                        reason,
                        message: format!(
                            "{message} ({hint}; retrying the same window, no window is skipped)"
                        ),
                    });
                });
            }
            Outcome::AppendFailed {
                window,
                error,
                elapsed,
                ..
            } => {
                metrics::histogram!(QUERY_DURATION, "exporter" => key.clone())
                    .record(elapsed.as_secs_f64());
                tracing::error!(exporter = %key, window_start = %window.start, window_end = %window.end, "WAL append failed: {error}");
                problem("WalError", format!("cannot append to the WAL: {error}"));
            }
        }
    }

    /// Queries one window and transforms it; returns the row count and the samples. The response,
    /// the rows and the samples are accounted in `reservation` (left holding the samples' bytes).
    pub(super) async fn run_window(
        &self,
        client: &KustoClient,
        window: &Window,
        reservation: &mut Reservation,
    ) -> Result<(u64, ForWal), WindowError> {
        let (ex, ctx) = (&self.ex, &self.ctx);
        let csl = query_text(window, &ctx.cluster_labels, &ex.spec.body);
        let limits = QueryLimits {
            max_rows: usize::try_from(ex.spec.max_rows).unwrap_or(usize::MAX),
            max_bytes: ctx.max_response_bytes,
        };
        let keep = ex.mapping.working_bytes_per_row();
        let data =
            (client.query_within(&ex.spec.database, &csl, &limits, reservation, keep)).await?;
        let table = data.into_primary().ok_or(WindowError::NoResultTable)?;
        let rows = table.row_count() as u64;
        // A gauge goes straight to protobuf: the WAL stores bytes, and a `WriteRequest` would cost a
        // heap string per label. Counters and histograms need their labels to find running totals.
        let transformed = transform_for_wal(&table, &ex.mapping)?;
        drop(table);
        crate::query::budget::release_freed_memory(reservation.peak_bytes()).await;
        reservation.shrink_to(transformed.held_bytes());
        Ok((rows, transformed))
    }
}

/// Where an exporter continues: the newer of its WAL watermark and its status watermark (recorded
/// in the WAL so both agree). The status can be ahead only when another replica exported the
/// windows in between (a StatefulSet rescale handed the resource over and back): resuming from
/// the stale local watermark would export those windows a second time.
///
/// An exporter with neither starts at its first window (`startTime`, else the newest complete
/// window), and that start is stored as its watermark before the first query: a first window that
/// fails is retried, and later windows follow it, instead of each retry moving on to the newest
/// window (which would skip the failed ones). A restart resumes from the same place.
async fn resume_point(ex: &Exporter, wal: &Wal) -> Result<Ticks, WalError> {
    let w = wal.clone();
    let uid = ex.id.uid.clone();
    let local = blocking(move || w.watermark(&uid)).await?;
    let Some(from_status) = ex.status_watermark else {
        if let Some(local) = local {
            return Ok(local);
        }
        let spec = &ex.spec;
        let first = first_window(
            spec.start_time,
            Ticks::now(),
            spec.interval,
            spec.ingestion_delay,
        );
        let (w, id) = (wal.clone(), ex.id.clone());
        return blocking(move || w.set_watermark_if_absent(&id, first.start)).await;
    };
    if let Some(local) = local
        && local >= from_status
    {
        return Ok(local);
    }
    let w = wal.clone();
    let id = ex.id.clone();
    blocking(move || w.raise_watermark(&id, from_status)).await
}

/// Sleeps for `d` unless cancelled first; `false` when cancelled.
pub(super) async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// When a window's rows gave no sample for a reason only the resource can fix (values that are not
/// numbers, no metric name, timestamps that are not datetimes), what to tell the operator. Rows
/// that are all null are data, not a mistake: no message.
fn unusable_rows(stats: &TransformStats) -> Option<String> {
    use crate::transform::SkipReason::{
        BadBucket, BadMetricName, BadTimestamp, InvalidIncrease, NoMetricName, NonNumericValue,
    };
    let mistakes = [
        NonNumericValue,
        NoMetricName,
        BadTimestamp,
        BadMetricName,
        InvalidIncrease,
        BadBucket,
    ];
    if stats.rows == 0
        || stats.samples > 0
        || !mistakes.iter().any(|r| stats.skipped.contains_key(r))
    {
        return None;
    }
    let counts: Vec<String> = (stats.skipped.iter())
        .map(|(reason, n)| format!("{n} {}", reason.as_str()))
        .collect();
    Some(format!(
        "the window's {} rows gave no sample ({}): make spec.transform.valueColumns numbers (toreal() in the query; a counter's or histogram's counts ≥ 0, a histogram's bucketColumn a number), give every row a metric name with a letter or digit, and make timestampColumn a datetime; the window is stored empty and the next ones are queried as usual",
        stats.rows,
        counts.join(", ")
    ))
}

fn record_transform_metrics(key: &str, t: &TransformStats) {
    metrics::counter!(ROWS_READ, "exporter" => key.to_owned()).increment(t.rows);
    metrics::counter!(SAMPLES_PRODUCED, "exporter" => key.to_owned()).increment(t.samples);
    for (reason, n) in &t.skipped {
        metrics::counter!(SAMPLES_SKIPPED, "exporter" => key.to_owned(), "reason" => reason.as_str())
            .increment(*n);
    }
}

fn last_query(
    window: &Window,
    rows: u64,
    elapsed: Duration,
    error: Option<String>,
) -> LastQueryStatus {
    LastQueryStatus {
        window_start: Some(window.start.to_string()),
        window_end: Some(window.end.to_string()),
        rows: Some(rows),
        duration_ms: Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        error,
    }
}
