//! The scheduler: starts, restarts and stops one task per exporter as the desired set changes
//! ([`super::exporter`] is the task), and supervises them: a task that panics is logged, counted,
//! reported in status and restarted from its watermark after a backoff, never silently gone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backfill;
use super::exporter::{Outcome, SchedulerContext, Task, pause};
use crate::backoff;
use crate::registry::{Desired, Exporter, Snapshot, diff};
use crate::status::{Board, Problem};
use crate::telemetry::metrics::EXPORTER_RESTARTS;

/// Heartbeat period for `/healthz`.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Backoff between restarts of an exporter task that panicked.
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_CAP: Duration = Duration::from_secs(300);

/// The life of one exporter: its live windows and beside them its backfill's, if it has one;
/// nothing while it is suspended.
async fn run_exporter(ex: Arc<Exporter>, ctx: Arc<SchedulerContext>, cancel: CancellationToken) {
    let task = Task::new(ex, ctx);
    if task.ex.spec.suspend {
        // A spec change (suspend: false) restarts the task, which resumes from the watermark.
        task.report(Outcome::Suspended);
        cancel.cancelled().await;
        return;
    }
    tokio::join!(task.run(cancel.clone()), backfill::run(&task, cancel));
}

/// Starts, restarts and stops exporter tasks as the desired set changes.
pub(crate) struct Scheduler {
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
        // The family exists from start-up, so an alert on it never reads "no data".
        metrics::counter!(EXPORTER_RESTARTS).increment(0);
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
                let (ex, ctx, stop) = (exporter.clone(), self.ctx.clone(), cancel.clone());
                let handle = tokio::spawn(supervise(
                    exporter.key(),
                    exporter.id.uid.clone(),
                    self.ctx.board.clone(),
                    cancel.clone(),
                    move || run_exporter(ex.clone(), ctx.clone(), stop.clone()),
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

/// Runs one exporter's task until `cancel`, starting it again after a panic: a bug on one
/// resource's path must neither stop that exporter silently nor take the others down. A restart
/// resumes from the watermark, like a spec change, so nothing is skipped or exported twice. Also
/// restarts a task that returned while not cancelled (it only returns on cancellation).
async fn supervise<F, Fut>(
    key: String,
    uid: String,
    board: Arc<Board>,
    cancel: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut restarts: u32 = 0;
    loop {
        let ended = tokio::spawn(start()).await;
        if cancel.is_cancelled() {
            return;
        }
        let what = match ended {
            Ok(()) => "returned while still desired".to_owned(),
            Err(e) => match e.try_into_panic() {
                Ok(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
                Err(e) => format!("stopped: {e}"),
            },
        };
        restarts = restarts.saturating_add(1);
        metrics::counter!(EXPORTER_RESTARTS).increment(1);
        let delay = backoff::delay(
            restarts,
            RESTART_BASE,
            RESTART_CAP,
            &mut backoff::fastrand01,
        );
        let message = format!(
            "the exporter task {what}; restart {restarts} from the watermark in {delay:?} (a bug in adxexporter: please report it with this log line)"
        );
        tracing::error!(exporter = %key, "{message}");
        board.update(&uid, |r| {
            r.query_problem = Some(Problem {
                reason: "ExporterRestarting",
                message,
            })
        });
        if !pause(delay, &cancel).await {
            return;
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A task that panics is restarted and reported, never silently gone; cancellation ends it.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_exporter_task_is_restarted_and_reported() {
        let board = Arc::new(Board::default());
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (started, mut second_run) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise(
            "ns/a".into(),
            "u-a".into(),
            board.clone(),
            cancel.clone(),
            {
                let (runs, cancel) = (runs.clone(), cancel.clone());
                move || {
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    let (cancel, started) = (cancel.clone(), started.clone());
                    async move {
                        if n == 0 {
                            panic!("boom in window 13:26");
                        }
                        started.send(n).unwrap();
                        cancel.cancelled().await;
                    }
                }
            },
        ));
        assert_eq!(
            second_run.recv().await,
            Some(1),
            "restarted after the panic"
        );
        let problem = board.get("u-a").query_problem.expect("reported in status");
        assert_eq!(problem.reason, "ExporterRestarting");
        assert!(
            problem.message.contains("panicked: boom in window 13:26"),
            "{}",
            problem.message
        );
        cancel.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "not restarted after cancellation"
        );
    }
}
