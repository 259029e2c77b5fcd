//! The scheduler: one task per exporter walks its windows in order — query, transform, WAL append —
//! and never skips one (SPEC §3).
//!
//! - Resume point: the newer of the WAL's watermark and the resource's status watermark (or adx-mon's
//!   `LastSuccessfulExecution` condition), else `startTime`, else the newest complete window. The
//!   status is newer only after another replica exported windows (a rescale handed the resource
//!   over and back); those must not be exported again.
//! - A window runs once it is complete (`end <= now − ingestionDelay`). Missed windows run back to
//!   back, oldest first, one in flight per exporter; `--max-concurrent-queries` bounds all of them.
//! - The watermark only moves inside [`Wal::append`], in the same transaction as the window's record,
//!   so a crash at any point either keeps the window (it will be pushed) or re-queries it.
//! - A failing window is retried with backoff, never skipped: transient failures quickly (up to a
//!   minute apart), permanent ones (bad query, schema mismatch) slowly (up to five minutes apart)
//!   with `QueryHealthy=False` carrying Kusto's message until the spec or the data changes.
//! - A full WAL pauses querying (the watermark holds; Kusto still has the data) until the drain
//!   loops free space.
//! - Cancellation (spec change, resource removed, shutdown) interrupts waits and queries, never an
//!   append: an append that started completes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::window::{Window, is_due, pending_window, query_text};
use crate::backoff;
use crate::crd::LastQueryStatus;
use crate::query::{KustoClient, QueryError, QueryLimits};
use crate::registry::Snapshot;
use crate::registry::{Desired, Exporter, diff};
use crate::status::{Board, Problem};
use crate::telemetry::Health;
use crate::telemetry::metrics::{
    QUERIES, QUERY_DURATION, ROWS_READ, SAMPLES_PRODUCED, SAMPLES_SKIPPED,
};
use crate::time::Ticks;
use crate::transform::{EncodedTransform, TransformError, transform_encoded};
use crate::wal::{RecordHeader, Wal, WalError};

/// Backoff for transient query failures.
const TRANSIENT_BASE: Duration = Duration::from_secs(1);
const TRANSIENT_CAP: Duration = Duration::from_secs(60);
/// Backoff for permanent query failures: the spec or the data has to change first.
const PERMANENT_BASE: Duration = Duration::from_secs(30);
const PERMANENT_CAP: Duration = Duration::from_secs(300);
/// How long a paused (WAL full) exporter waits before checking again without a WAL change.
const FULL_RECHECK: Duration = Duration::from_secs(5);
/// Heartbeat period for `/healthz`.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What every exporter task shares.
pub struct SchedulerContext {
    pub wal: Wal,
    /// Kusto clients by database name (`--kusto-endpoint DB=URL`).
    pub clients: BTreeMap<String, Arc<KustoClient>>,
    pub cluster_labels: BTreeMap<String, String>,
    /// `--max-concurrent-queries`.
    pub queries: Arc<Semaphore>,
    /// Bound on a decompressed Kusto response body.
    pub max_response_bytes: usize,
    pub board: Arc<Board>,
    pub health: Arc<Health>,
}

/// Why one window could not be turned into samples.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
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
}

/// Starts, restarts and stops exporter tasks as the desired set changes.
pub struct Scheduler {
    ctx: Arc<SchedulerContext>,
}

struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Scheduler {
    pub fn new(ctx: SchedulerContext) -> Scheduler {
        Scheduler { ctx: Arc::new(ctx) }
    }

    /// Runs until `shutdown`, then stops every exporter task and waits for in-flight appends.
    pub async fn run(
        self,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tasks: HashMap<String, Running> = HashMap::new();
        let mut current = Desired::new();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            let desired = snapshots.borrow_and_update().desired.clone();
            let changes = diff(&current, &desired);
            for uid in &changes.stop {
                if let Some(task) = tasks.remove(uid) {
                    stop(task).await;
                }
                self.ctx.board.remove(uid);
                tracing::info!(exporter = %uid, "stopped: no longer desired; its WAL backlog is still delivered");
            }
            for exporter in changes.start {
                if let Some(task) = tasks.remove(&exporter.id.uid) {
                    // One task per exporter: the old one must be gone before the new one appends.
                    stop(task).await;
                }
                let cancel = shutdown.child_token();
                let handle = tokio::spawn(run_exporter(
                    exporter.clone(),
                    self.ctx.clone(),
                    cancel.clone(),
                ));
                tasks.insert(exporter.id.uid.clone(), Running { cancel, handle });
            }
            current = desired;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = snapshots.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => self.ctx.health.heartbeat(),
            }
        }
        for (_, task) in tasks.drain() {
            stop(task).await;
        }
        Ok(())
    }
}

async fn stop(task: Running) {
    task.cancel.cancel();
    let _ = task.handle.await;
}

/// Sleeps for `d` unless cancelled first; `false` when cancelled.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs blocking WAL work off the async threads. A panic inside is a bug and is propagated.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WalError> + Send + 'static,
) -> Result<T, WalError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(WalError::Io {
            path: "<WAL task>".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// The life of one exporter: resume, then one window after another until cancelled.
async fn run_exporter(ex: Arc<Exporter>, ctx: Arc<SchedulerContext>, cancel: CancellationToken) {
    let key = ex.key();
    let uid = ex.id.uid.clone();
    let Some(client) = ctx.clients.get(&ex.spec.database).cloned() else {
        let message = format!(
            "no --kusto-endpoint for database {:?}: add --kusto-endpoint {}=https://<cluster>.kusto.windows.net",
            ex.spec.database, ex.spec.database
        );
        tracing::error!(exporter = %key, "{message}");
        ctx.board.update(&uid, |r| {
            r.query_problem = Some(Problem {
                reason: "DatabaseNotConfigured",
                message,
            })
        });
        cancel.cancelled().await;
        return;
    };
    let configured = ctx.wal.outputs();
    let unknown: Vec<&String> = (ex.spec.outputs.iter().flatten())
        .filter(|o| !configured.contains(o))
        .collect();
    if !unknown.is_empty() {
        let message = format!(
            "spec.outputs names {unknown:?}, but this instance's outputs are {configured:?}: fix spec.outputs or configure the output"
        );
        tracing::error!(exporter = %key, "{message}");
        ctx.board.update(&uid, |r| {
            r.query_problem = Some(Problem {
                reason: "OutputNotConfigured",
                message,
            })
        });
        cancel.cancelled().await;
        return;
    }
    let mut watermark = match resume_point(&ex, &ctx).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(exporter = %key, "cannot read the watermark from the WAL: {e}");
            ctx.board.update(&uid, |r| {
                r.query_problem = Some(Problem {
                    reason: "WalError",
                    message: format!("cannot read the watermark: {e}"),
                })
            });
            cancel.cancelled().await;
            return;
        }
    };
    tracing::info!(exporter = %key, watermark = ?watermark.map(|w| w.to_string()), interval = %ex.spec.interval, "started");
    let (interval, delay) = (ex.spec.interval, ex.spec.ingestion_delay);
    let mut failures: u32 = 0;
    let mut changes = ctx.wal.subscribe();
    loop {
        let now = Ticks::now();
        let window = pending_window(watermark, ex.spec.start_time, now, interval, delay);
        if !is_due(&window, now, delay) {
            let due_at = Ticks(window.end.0.saturating_add(delay.0));
            if !pause(due_at.since(now).to_std(), &cancel).await {
                return;
            }
            continue;
        }
        match blocking({
            let wal = ctx.wal.clone();
            move || wal.is_full()
        })
        .await
        {
            Ok(false) => {}
            Ok(true) => {
                ctx.board.update(&uid, |r| {
                    r.query_problem = Some(Problem {
                        reason: "WalFull",
                        message: "the WAL reached --wal-max-bytes, or its volume has less than --wal-min-free-bytes free: querying paused (nothing is lost; Kusto still has the data) until outputs drain it or space returns; check the outputs and the volume (adxexporter_wal_volume_free_bytes), or raise --wal-max-bytes".into(),
                    })
                });
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(FULL_RECHECK) => {}
                }
                continue;
            }
            Err(e) => tracing::warn!(exporter = %key, "cannot check WAL size: {e}"),
        }
        let Ok(permit) = (tokio::select! {
            _ = cancel.cancelled() => return,
            p = ctx.queries.clone().acquire_owned() => p,
        }) else {
            return;
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = run_window(&ex, &ctx, &client, &window) => r,
        };
        drop(permit);
        let elapsed = started.elapsed();
        metrics::histogram!(QUERY_DURATION, "exporter" => key.clone())
            .record(elapsed.as_secs_f64());
        match outcome {
            Ok((rows, transformed)) => {
                record_transform_metrics(&key, &transformed);
                let header = RecordHeader {
                    exporter: ex.id.clone(),
                    generation: ex.generation,
                    window_start: window.start,
                    window_end: window.end,
                    created: Ticks::now(),
                    outputs: ex.spec.outputs.clone().unwrap_or_default(),
                };
                let wal = ctx.wal.clone();
                let request = transformed.write_request;
                let samples = transformed.stats.samples;
                match blocking(move || wal.append_encoded(&header, &request, samples)).await {
                    Ok(_) => {
                        watermark = Some(window.end);
                        failures = 0;
                        // The watermark and lag gauges are set by telemetry::gauges from the WAL.
                        metrics::counter!(QUERIES, "exporter" => key.clone(), "outcome" => "ok")
                            .increment(1);
                        tracing::debug!(exporter = %key, window_start = %window.start, window_end = %window.end, rows, samples = transformed.stats.samples, "window appended");
                        ctx.board.update(&uid, |r| {
                            r.query_problem = None;
                            r.last_query = Some(last_query(&window, rows, elapsed, None));
                        });
                    }
                    Err(WalError::Full { .. }) => continue,
                    Err(e) => {
                        failures += 1;
                        tracing::error!(exporter = %key, window_start = %window.start, window_end = %window.end, "WAL append failed: {e}");
                        ctx.board.update(&uid, |r| {
                            r.query_problem = Some(Problem {
                                reason: "WalError",
                                message: format!("cannot append to the WAL: {e}"),
                            })
                        });
                        let d = backoff::delay(
                            failures,
                            TRANSIENT_BASE,
                            TRANSIENT_CAP,
                            &mut backoff::fastrand01,
                        );
                        if !pause(d, &cancel).await {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                let permanent = e.is_permanent();
                metrics::counter!(QUERIES, "exporter" => key.clone(), "outcome" => e.kind())
                    .increment(1);
                let d = if permanent {
                    backoff::delay(
                        failures,
                        PERMANENT_BASE,
                        PERMANENT_CAP,
                        &mut backoff::fastrand01,
                    )
                    .max(PERMANENT_BASE)
                } else if let WindowError::Query(q) = &e
                    && let Some(after) = q.retry_after()
                {
                    after.min(TRANSIENT_CAP * 5)
                } else {
                    backoff::delay(
                        failures,
                        TRANSIENT_BASE,
                        TRANSIENT_CAP,
                        &mut backoff::fastrand01,
                    )
                };
                tracing::warn!(exporter = %key, window_start = %window.start, window_end = %window.end, permanent, retry_in = ?d, "window failed: {e}");
                let message = e.to_string();
                ctx.board.update(&uid, |r| {
                    r.last_query = Some(last_query(&window, 0, elapsed, Some(message.clone())));
                    r.query_problem = Some(Problem {
                        reason: if permanent {
                            "QueryRejected"
                        } else {
                            "QueryFailing"
                        },
                        message: format!(
                            "{message} ({}; retrying the same window, no window is skipped)",
                            if permanent {
                                "fix the query or the transform"
                            } else {
                                "transient"
                            }
                        ),
                    });
                });
                if !pause(d, &cancel).await {
                    return;
                }
            }
        }
    }
}

/// Where an exporter continues: the newer of its WAL watermark and its status watermark (recorded
/// in the WAL so both agree). The status can be ahead only when another replica exported the
/// windows in between (a StatefulSet rescale handed the resource over and back): resuming from
/// the stale local watermark would export those windows a second time.
async fn resume_point(ex: &Exporter, ctx: &SchedulerContext) -> Result<Option<Ticks>, WalError> {
    let wal = ctx.wal.clone();
    let uid = ex.id.uid.clone();
    let local = blocking(move || wal.watermark(&uid)).await?;
    let Some(from_status) = ex.status_watermark else {
        return Ok(local);
    };
    if local.is_some_and(|l| l >= from_status) {
        return Ok(local);
    }
    let wal = ctx.wal.clone();
    let id = ex.id.clone();
    Ok(Some(
        blocking(move || wal.raise_watermark(&id, from_status)).await?,
    ))
}

/// Queries one window and transforms it; returns the row count and the samples.
async fn run_window(
    ex: &Exporter,
    ctx: &SchedulerContext,
    client: &KustoClient,
    window: &Window,
) -> Result<(u64, EncodedTransform), WindowError> {
    let csl = query_text(window, &ctx.cluster_labels, &ex.spec.body);
    let limits = QueryLimits {
        max_rows: usize::try_from(ex.spec.max_rows).unwrap_or(usize::MAX),
        max_bytes: ctx.max_response_bytes,
    };
    let data = client.query(&ex.spec.database, &csl, &limits).await?;
    let table = data.into_primary().ok_or(WindowError::NoResultTable)?;
    let rows = table.row_count() as u64;
    // Straight to protobuf: the WAL stores bytes, and a `WriteRequest` would cost a heap string per label.
    let transformed = transform_encoded(&table, &ex.mapping)?;
    Ok((rows, transformed))
}

fn record_transform_metrics(key: &str, t: &EncodedTransform) {
    metrics::counter!(ROWS_READ, "exporter" => key.to_owned()).increment(t.stats.rows);
    metrics::counter!(SAMPLES_PRODUCED, "exporter" => key.to_owned()).increment(t.stats.samples);
    for (reason, n) in &t.stats.skipped {
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
