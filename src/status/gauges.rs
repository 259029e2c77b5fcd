//! The periodic gauges: every [`GAUGE_INTERVAL`] read the WAL's stats, the current snapshot of
//! resources and the status [`Board`], and set the WAL, backlog, watermark, lag and
//! exporters-by-state gauges. Counters and histograms are recorded where things happen; these
//! describe state, so one task computes them from the same sources the status writer uses.
//!
//! Gauges of an exporter that is gone stop being set and drop out of `/metrics` after the
//! recorder's idle timeout (see [`crate::telemetry::install_metrics`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Board;
use crate::registry::Rejected;
use crate::registry::Snapshot;
use crate::telemetry::metrics as m;
use crate::time::{TICKS_PER_SECOND, Ticks};
use crate::wal::{Wal, WalStats};

/// How often the gauges are refreshed.
pub(crate) const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// The `state` label of a resource that does not run here.
fn rejected_state(why: &Rejected) -> &'static str {
    match why {
        // The shard filter's reason (source::kube); every other skip is the criteria's.
        Rejected::NotOwned { .. } => "not_owned",
        Rejected::Skipped(_) => "skipped_criteria",
        // Not run and needs a fix of the resource, like an invalid spec.
        Rejected::Invalid(_) | Rejected::CriteriaError(_) | Rejected::FileSkipped(_) => "invalid",
    }
}

/// Resources per state: every state of [`m::EXPORTER_STATES`], zero when none. Pure.
pub(crate) fn exporter_states(snap: &Snapshot, board: &Board) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> =
        m::EXPORTER_STATES.iter().map(|s| (*s, 0)).collect();
    for exporter in snap.desired.values() {
        let failing = board.get(&exporter.id.uid).query_problem.is_some();
        *counts
            .entry(if failing { "failing" } else { "active" })
            .or_default() += 1;
    }
    for why in snap.rejected.values() {
        *counts.entry(rejected_state(why)).or_default() += 1;
    }
    counts
}

/// How often the INFO summary line is written: one line a minute says the instance works, however
/// many resources it runs (a line per window would be thousands a minute); state changes of single
/// exporters (failing, recovered, slow, invalid) have lines of their own.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// The summary line: windows and samples appended since the last one, exporters by state, the
/// backlog. Takes the board's counts.
fn summary(stats: &WalStats, snap: &Snapshot, board: &Board) -> String {
    let (windows, samples) = board.take_counts();
    let states = exporter_states(snap, board);
    let pending: u64 = (stats.outputs.iter())
        .filter(|o| o.configured)
        .map(|o| o.pending)
        .sum();
    format!(
        "last {}s: {windows} windows appended ({samples} samples); exporters: {} active, {} failing, {} invalid, {} skipped, {} on other replicas; {pending} window deliveries pending, {} dead letters",
        SUMMARY_INTERVAL.as_secs(),
        states["active"],
        states["failing"],
        states["invalid"],
        states["skipped_criteria"],
        states["not_owned"],
        stats.dead_letters,
    )
}

fn seconds(t: Ticks) -> f64 {
    t.unix_millis() as f64 / 1000.0
}

/// Sets every state gauge from one reading of the sources.
pub fn record(stats: &WalStats, snap: &Snapshot, board: &Board, free: Option<u64>, now: Ticks) {
    crate::telemetry::refresh_process_gauges();
    metrics::gauge!(m::STATUS_PATCH_BACKLOG).set(board.patch_backlog() as f64);
    metrics::gauge!(m::WAL_RECORDS).set(stats.records as f64);
    metrics::gauge!(m::WAL_USED_BYTES).set(stats.used_bytes as f64);
    metrics::gauge!(m::WAL_MAX_BYTES).set(stats.max_bytes as f64);
    metrics::gauge!(m::WAL_FILE_BYTES).set(stats.file_bytes as f64);
    if let Some(free) = free {
        metrics::gauge!(m::WAL_VOLUME_FREE_BYTES).set(free as f64);
    }
    let oldest = stats
        .exporters
        .iter()
        .filter_map(|e| e.oldest_created)
        .min();
    let age = oldest.map_or(0.0, |t| {
        now.since(t).0.max(0) as f64 / TICKS_PER_SECOND as f64
    });
    metrics::gauge!(m::WAL_OLDEST_RECORD_AGE).set(age);
    for o in &stats.outputs {
        metrics::gauge!(m::WAL_DEAD_LETTERS, "output" => o.output.clone())
            .set(o.dead_letters as f64);
    }
    for (state, n) in exporter_states(snap, board) {
        metrics::gauge!(m::EXPORTERS, "state" => state).set(n as f64);
    }
    let configured: Vec<&str> = (stats.outputs.iter())
        .filter(|o| o.configured)
        .map(|o| o.output.as_str())
        .collect();
    // A backfill's windows (an exporter of its own in the WAL) count in its resource's backlog.
    let mut backlog: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for e in &stats.exporters {
        let uid = crate::wal::backfill_parent(&e.uid).unwrap_or(&e.uid);
        if !snap.desired.contains_key(uid) && e.records == 0 {
            continue;
        }
        let key = format!("{}/{}", e.namespace, e.name);
        for output in &configured {
            let n = e.pending_by_output.get(*output).copied().unwrap_or(0);
            *backlog.entry((key.clone(), *output)).or_default() += n;
        }
    }
    for ((key, output), n) in backlog {
        metrics::gauge!(m::BACKLOG_WINDOWS, "exporter" => key, "output" => output.to_owned())
            .set(n as f64);
    }
    for e in &stats.exporters {
        let running = snap.desired.contains_key(&e.uid);
        let key = format!("{}/{}", e.namespace, e.name);
        if let (true, Some(w)) = (running, e.watermark) {
            metrics::gauge!(m::WATERMARK, "exporter" => key.clone()).set(seconds(w));
            let lag = now.since(w).0 as f64 / TICKS_PER_SECOND as f64;
            metrics::gauge!(m::WATERMARK_LAG, "exporter" => key).set(lag);
        }
    }
}

pub(crate) use crate::wal::volume_free_bytes as free_bytes;

/// Puts the counters and the histogram of an exporter that just appeared into `/metrics` at 0
/// (`queries_total{outcome="ok"}`, rows, samples, query duration), so its first query shows in
/// `rate()` and a quiet exporter reads 0, not "no data". Skip reasons appear when they happen.
fn touch_exporter(key: &str) {
    let exporter = || key.to_owned();
    metrics::counter!(m::QUERIES, "exporter" => exporter(), "outcome" => "ok").increment(0);
    metrics::counter!(m::ROWS_READ, "exporter" => exporter()).increment(0);
    metrics::counter!(m::SAMPLES_PRODUCED, "exporter" => exporter()).increment(0);
    // Registering the histogram renders it with zero counts.
    let _ = metrics::histogram!(m::QUERY_DURATION, "exporter" => exporter());
}

/// Refreshes the gauges every [`GAUGE_INTERVAL`] until `shutdown`. Never fails: a WAL read error
/// is logged and the gauges keep their previous values.
pub async fn run(
    wal: Wal,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    board: Arc<Board>,
    shutdown: CancellationToken,
) {
    let mut next_summary = tokio::time::Instant::now() + SUMMARY_INTERVAL;
    let mut touched = std::collections::HashSet::new();
    loop {
        let snap = snapshots.borrow().clone();
        for exporter in snap.desired.values() {
            if touched.insert(exporter.id.uid.clone()) {
                touch_exporter(&exporter.key());
            }
        }
        let (wal2, board2) = (wal.clone(), board.clone());
        let read = tokio::task::spawn_blocking(move || {
            let stats = wal2.stats()?;
            record(&stats, &snap, &board2, free_bytes(wal2.dir()), Ticks::now());
            if tokio::time::Instant::now() >= next_summary {
                tracing::info!("{}", summary(&stats, &snap, &board2));
            }
            Ok::<_, crate::wal::WalError>(())
        })
        .await;
        if tokio::time::Instant::now() >= next_summary {
            next_summary += SUMMARY_INTERVAL;
        }
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("metrics: cannot read WAL stats: {e}"),
            Err(e) => tracing::warn!("metrics: gauge task failed: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Problem;

    #[test]
    fn the_summary_line_counts_windows_states_and_backlog_and_resets() {
        let board = Board::default();
        board.count_window(10);
        board.count_window(5);
        let mut snap = Snapshot::default();
        snap.rejected.insert(
            "ns/x".into(),
            Rejected::Invalid(vec!["spec.interval: missing".into()]),
        );
        let stats = WalStats {
            dead_letters: 2,
            outputs: vec![crate::wal::OutputStats {
                output: "otlp".into(),
                configured: true,
                pending: 3,
                oldest_pending: None,
                next_attempt_at: None,
                dead_letters: 2,
            }],
            records: 0,
            used_bytes: 0,
            max_bytes: 0,
            file_bytes: 0,
            exporters: vec![],
        };
        let line = summary(&stats, &snap, &board);
        assert_eq!(
            line,
            "last 60s: 2 windows appended (15 samples); exporters: 0 active, 0 failing, 1 invalid, 0 skipped, 0 on other replicas; 3 window deliveries pending, 2 dead letters"
        );
        assert!(
            summary(&stats, &snap, &board).starts_with("last 60s: 0 windows appended (0 samples)")
        );
    }

    #[test]
    fn resources_are_counted_by_state() {
        let dir = tempfile::tempdir().unwrap();
        let good = "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: NAME, namespace: ns}\n\
            spec:\n  database: db\n  interval: 1m\n  body: T\n  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}\n";
        std::fs::write(dir.path().join("a.yaml"), good.replace("NAME", "a")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), good.replace("NAME", "b")).unwrap();
        let mut snap = crate::source::manifests::ManifestSource::new(
            dir.path().into(),
            BTreeMap::new(),
            String::new(),
        )
        .load()
        .unwrap();
        snap.rejected.insert(
            "ns/c".into(),
            Rejected::NotOwned {
                owner: 1,
                replicas: 2,
            },
        );
        snap.rejected.insert(
            "ns/d".into(),
            Rejected::Skipped("criteria region=[x] do not match".into()),
        );
        snap.rejected.insert(
            "ns/e".into(),
            Rejected::Invalid(vec!["spec.body: missing".into()]),
        );
        snap.rejected.insert(
            "ns/f".into(),
            Rejected::CriteriaError("spec.criteriaExpression: refers to zone".into()),
        );
        let board = Board::default();
        board.update("ns/b", |r| {
            r.query_problem = Some(Problem {
                reason: "QueryFailing",
                message: String::new(),
            })
        });
        let got = exporter_states(&snap, &board);
        let want = BTreeMap::from([
            ("active", 1),
            ("failing", 1),
            ("invalid", 2),
            ("not_owned", 1),
            ("skipped_criteria", 1),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn wal_stats_give_the_backlog_per_output_and_the_oldest_append() {
        use crate::prompb::WriteRequest;
        use crate::wal::{ExporterRef, RecordHeader, WalConfig};
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, ["a", "b"])).unwrap();
        let created = Ticks::parse("2026-01-01T00:00:00Z").unwrap();
        for (start, later) in [(0, 0), (600_000_000, 1)] {
            let header = RecordHeader {
                exporter: ExporterRef::new("u", "ns", "e"),
                generation: 1,
                window_start: Ticks(start),
                window_end: Ticks(start + 600_000_000),
                created: Ticks(created.0 + later),
                outputs: vec![],
            };
            wal.append(&header, &WriteRequest::default()).unwrap();
        }
        let first = wal.next_pending("a", Ticks::MAX, 1).unwrap().remove(0);
        wal.ack("a", &first.id).unwrap();
        let stats = wal.stats().unwrap();
        let e = &stats.exporters[0];
        assert_eq!(e.oldest_created, Some(created));
        assert_eq!(
            e.pending_by_output,
            BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
        );
    }

    #[test]
    fn free_space_of_an_existing_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some());
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
