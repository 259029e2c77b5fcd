//! Issue #17 end to end: operating live resources with the real `adxexporter run` binary in
//! manifests mode against duckdb-kql, Prometheus (with and without `out_of_order_time_window`),
//! VictoriaMetrics and the OTLP decoder.
//!
//! - `spec.backfill` re-exports a past range beside the live windows, exactly once across a kill -9,
//!   at every receiver that takes older samples;
//! - a receiver that refuses older samples stops the backfill for that output only (`Failed`, no
//!   dead letters), whether it refuses while the backfill runs or after its windows are all in the WAL;
//! - a new `requestId` restarts the backfill, removing `spec.backfill` cancels it;
//! - `spec.suspend` queries nothing and resumes from the watermark without a gap.
//!
//! Kusto is reached through a recording proxy (`chaos_support/http_fault.rs`) in front of
//! duckdb-kql: every query duckdb-kql answered is kept with its text, so a test counts the queries
//! of each window (live or backfill) exactly, and can slow answers down so that a backfill lasts
//! long enough to be seen running (status.json is written every 2 s).
//!
//! Every dataset reaches into the future (`Rig::new(interval, past, future)`), so live windows carry
//! data too and every window up to the final watermark has an oracle value.

mod common;
#[allow(dead_code)] // the proxy's other rules serve the chaos suite
#[path = "chaos_support/http_fault.rs"]
mod http_fault;
mod run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use adxexporter::time::Ticks;
use common::{Peer, duckdb_kql, http_get};
use http_fault::{HttpFault, HttpRule};
use run_support::*;

/// Bound for every wait on the system under test.
const LIMIT: Duration = Duration::from_secs(90);
/// The pacer's metric in the suspend test.
const PACER_METRIC: &str = "e2e_pacer";

/// `spec.backfill` of a test resource.
#[derive(Clone, Debug)]
struct BackfillSpec {
    request_id: &'static str,
    start_ms: i64,
    end_ms: i64,
    max_in_flight: u32,
}

impl BackfillSpec {
    /// `request_id` over every data window before `end_ms` (the live start).
    fn before(
        rig: &Rig,
        end_ms: i64,
        request_id: &'static str,
        max_in_flight: u32,
    ) -> BackfillSpec {
        BackfillSpec {
            request_id,
            start_ms: rig.data.first_start_ms,
            end_ms,
            max_in_flight,
        }
    }

    /// `status.backfill.windowsTotal` it must report.
    fn windows(&self, rig: &Rig) -> u64 {
        rig.windows(self.start_ms, self.end_ms).len() as u64
    }
}

/// A MetricsExporter over `Samples` (see `run_support`), with the fields #17 added.
#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    metric: &'static str,
    interval_s: i64,
    /// `None`: no `startTime` (the first window is the newest complete one).
    start_ms: Option<i64>,
    suspend: bool,
    backfill: Option<BackfillSpec>,
}

impl Spec {
    /// A live resource: no `startTime`, not suspended, no backfill.
    fn live(name: &'static str, interval_s: i64) -> Spec {
        Spec {
            name,
            metric: METRIC,
            interval_s,
            start_ms: None,
            suspend: false,
            backfill: None,
        }
    }

    fn with_backfill(&self, backfill: BackfillSpec) -> Spec {
        Spec {
            backfill: Some(backfill),
            ..self.clone()
        }
    }

    fn yaml(&self) -> String {
        let mut spec = format!("  database: memory\n  interval: {}s\n", self.interval_s);
        if let Some(ms) = self.start_ms {
            spec.push_str(&format!("  startTime: \"{}\"\n", rfc3339(ms)));
        }
        if self.suspend {
            spec.push_str("  suspend: true\n");
        }
        if let Some(b) = &self.backfill {
            spec.push_str(&format!(
                "  backfill:\n    requestId: {}\n    startTime: \"{}\"\n    endTime: \"{}\"\n    maxInFlight: {}\n",
                b.request_id,
                rfc3339(b.start_ms),
                rfc3339(b.end_ms),
                b.max_in_flight
            ));
        }
        let body: String = GOOD_BODY.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: {}
  namespace: e2e
spec:
{spec}  body: |
{body}  transform:
    defaultMetricName: {}
    valueColumns: [V]
    timestampColumn: Timestamp
    labelColumns: [Host]
",
            self.name, self.metric
        )
    }
}

/// duckdb-kql behind the recording Kusto proxy, the OTLP sink and a manifests directory.
struct Rig {
    data: Dataset,
    work: tempfile::TempDir,
    kusto: Peer,
    /// In front of duckdb-kql: records every query it answered, can slow answers down.
    kusto_proxy: HttpFault,
    otlp: OtlpSink,
    /// Runs the proxies.
    rt: tokio::runtime::Runtime,
}

impl Rig {
    /// `past` complete windows and `future` windows still to come, of `interval_s` seconds.
    fn new(interval_s: i64, past: i64, future: i64) -> Rig {
        let data = Dataset::around_now(interval_s, past, future);
        // E2E_KEEP=1 keeps the work directory (logs, WAL, status) for a look after the run.
        let work = work_dir("adxexporter-ops-", "E2E_KEEP");
        let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
        let otlp = OtlpSink::start();
        let rt = proxy_runtime();
        let kusto_proxy = HttpFault::start(&rt, &kusto.url, 17);
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        Rig {
            data,
            work,
            kusto,
            kusto_proxy,
            otlp,
            rt,
        }
    }

    fn interval_ms(&self) -> i64 {
        self.data.interval_ms
    }

    fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    /// Writes (or replaces) the resource's manifest in one rename, so the directory watcher never
    /// reads half a file.
    fn write(&self, spec: &Spec) {
        let tmp = self.work.path().join(format!("{}.yaml.tmp", spec.name));
        std::fs::write(&tmp, spec.yaml()).unwrap();
        std::fs::rename(&tmp, self.manifests().join(format!("{}.yaml", spec.name))).unwrap();
    }

    /// `adxexporter run` reaching Kusto through the proxy, with `outputs` flags.
    fn start(&self, outputs: &[String]) -> Exporter {
        Exporter::start(
            self.work.path(),
            &self.kusto_proxy.url(""),
            &self.manifests(),
            outputs,
        )
    }

    fn otlp_flags(&self) -> Vec<String> {
        vec!["--otlp-endpoint".into(), self.otlp.url()]
    }

    /// The window start (Unix ms) of every query duckdb-kql answered, in the order answered.
    fn queried_windows(&self) -> Vec<i64> {
        self.kusto_proxy
            .accepted()
            .iter()
            .filter(|a| a.path == "/v2/rest/query")
            .map(|a| {
                let request: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
                let csl = request["csl"].as_str().unwrap();
                let start = csl
                    .strip_prefix("let _startTime=datetime(")
                    .and_then(|rest| rest.split_once(')'))
                    .unwrap_or_else(|| panic!("no window in the query text {csl:?}"))
                    .0;
                Ticks::parse(start).unwrap().unix_millis()
            })
            .collect()
    }

    /// How many times each window in `[from, to)` was queried.
    fn queries_per_window(&self, from: i64, to: i64) -> BTreeMap<i64, usize> {
        let mut n = BTreeMap::new();
        for w in self.queried_windows() {
            if (from..to).contains(&w) {
                *n.entry(w).or_insert(0) += 1;
            }
        }
        n
    }

    /// Queries duckdb-kql logged (`"POST /v2/rest/query HTTP/1.1" 200`), whoever sent them.
    fn duckdb_queries(&self) -> usize {
        std::fs::read_to_string(self.kusto.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"POST /v2/rest/query HTTP/1.1\""))
            .count()
    }

    /// The start of the first window the exporter queried: its live start when it has no
    /// `startTime` and no other resource runs.
    fn first_query(&self, exporter: &Exporter) -> i64 {
        eventually(
            "the first query",
            LIMIT,
            || self.queried_windows().first().copied(),
            || exporter.log_tail(),
        )
    }

    /// Oracle values of the windows in `[from, to)`.
    fn expected(&self, from: i64, to: i64) -> BTreeMap<(String, i64), f64> {
        self.data
            .expected()
            .into_iter()
            .filter(|((_, t), _)| (from..to).contains(t))
            .collect()
    }

    /// The window starts in `[from, to)`.
    fn windows(&self, from: i64, to: i64) -> Vec<i64> {
        (from..to).step_by(self.interval_ms() as usize).collect()
    }
}

/// `status.backfill` of `status` when it is `request_id`'s.
fn backfill_of<'a>(
    status: &'a serde_json::Value,
    request_id: &str,
) -> Option<&'a serde_json::Value> {
    status
        .get("backfill")
        .filter(|b| b["requestId"] == request_id)
}

/// Waits until `e2e/<name>`'s backfill `request_id` is in `state`; returns that status.
fn wait_backfill_state(
    exporter: &mut Exporter,
    name: &str,
    request_id: &str,
    state: &str,
) -> serde_json::Value {
    let what = format!("backfill {request_id} of e2e/{name} to be {state}");
    let status = eventually(
        &what,
        LIMIT,
        || {
            exporter
                .status_of(name)
                .filter(|s| backfill_of(s, request_id).is_some_and(|b| b["state"] == state))
        },
        || format!("{:?}\n{}", exporter.status_of(name), exporter.log_tail()),
    );
    exporter.assert_running();
    status
}

/// Waits until `e2e/<name>` has appended windows up to at least `end_ms`; returns its watermark.
fn wait_watermark(exporter: &Exporter, name: &str, end_ms: i64) -> i64 {
    eventually(
        &format!("e2e/{name}'s watermark to reach {}", rfc3339(end_ms)),
        LIMIT,
        || {
            let w = watermark_ms(&exporter.status_of(name)?)?;
            (w >= end_ms).then_some(w)
        },
        || format!("{:?}\n{}", exporter.status_of(name), exporter.log_tail()),
    )
}

/// SIGTERM (everything appended is pushed first); returns the final status of `e2e/<name>`, which
/// must have an empty backlog and no dead letter.
fn stop(exporter: &mut Exporter, name: &str) -> serde_json::Value {
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let status = exporter.status_of(name).unwrap();
    assert_eq!(backlog_windows(&status), 0, "drained at SIGTERM: {status}");
    assert_eq!(status["deadLettered"]["windows"], 0, "{status}");
    status
}

/// Arrivals per window start (every host of a window arrives in the same request, so equally often).
fn arrivals_per_window(points: &[Point]) -> BTreeMap<i64, usize> {
    let mut per_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for ((_, t), n) in arrivals_per_point(points) {
        per_window.entry(t).or_default().push(n);
    }
    per_window
        .into_iter()
        .map(|(t, counts)| {
            assert!(
                counts.len() == HOSTS.len() && counts.iter().all(|c| *c == counts[0]),
                "window {} arrived unevenly per host: {counts:?}",
                rfc3339(t)
            );
            (t, counts[0])
        })
        .collect()
}

/// Every sample VictoriaMetrics holds for [`METRIC`]: one entry per stored sample (duplicates kept).
fn victoria_samples(vm: &Peer) -> Vec<Point> {
    let (code, body) = http_get(vm.port, "/internal/force_flush").expect("VictoriaMetrics answers");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(vm.port, &format!("/api/v1/export?match%5B%5D={METRIC}"))
        .expect("VictoriaMetrics answers");
    assert_eq!(code, 200, "{body}");
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let series: serde_json::Value = serde_json::from_str(line).unwrap();
        let labels = series["metric"].as_object().unwrap();
        let names: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(names, BTreeSet::from(["Host", "__name__"]), "{series}");
        let host = labels["Host"].as_str().unwrap().to_owned();
        let values = series["values"].as_array().unwrap();
        let stamps = series["timestamps"].as_array().unwrap();
        assert_eq!(values.len(), stamps.len(), "{series}");
        for (t, v) in stamps.iter().zip(values) {
            out.push(((host.clone(), t.as_i64().unwrap()), v.as_f64().unwrap()));
        }
    }
    out
}

/// The remote-write receivers that take samples older than a series' newest.
enum Receiver {
    /// Prometheus 2.42 with `storage.tsdb.out_of_order_time_window: 1h`.
    PrometheusOutOfOrder(Peer),
    VictoriaMetrics(Peer),
}

impl Receiver {
    fn write_url(&self) -> String {
        match self {
            Receiver::PrometheusOutOfOrder(p) | Receiver::VictoriaMetrics(p) => {
                format!("{}/api/v1/write", p.url)
            }
        }
    }

    /// Asserts the receiver holds exactly `expected` (bit-equal values); returns the windows it
    /// stores more than once (VictoriaMetrics keeps a re-sent sample; Prometheus does not).
    fn assert_holds(&self, expected: &BTreeMap<(String, i64), f64>) -> BTreeMap<i64, usize> {
        let points = match self {
            Receiver::PrometheusOutOfOrder(p) => prometheus_samples_of(p.port, METRIC)
                .into_iter()
                .collect::<Vec<_>>(),
            Receiver::VictoriaMetrics(vm) => victoria_samples(vm),
        };
        for (k, v) in &points {
            let want = expected
                .get(k)
                .unwrap_or_else(|| panic!("the receiver holds {k:?} = {v}, not in the oracle"));
            assert_eq!(v.to_bits(), want.to_bits(), "receiver sample {k:?}");
        }
        let held: BTreeSet<&(String, i64)> = points.iter().map(|(k, _)| k).collect();
        let missing: Vec<_> = expected.keys().filter(|k| !held.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "the receiver lacks {} samples: {missing:?}",
            missing.len()
        );
        arrivals_per_window(&points)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect()
    }
}

/// Test 1: a backfill of the range before the live start, beside the live windows, with a kill -9
/// while it runs: every window arrives, exact, at the receiver and the OTLP sink; only windows in
/// flight at the kill are queried or delivered twice; the backfill ends `Completed`; live windows
/// kept being appended while it ran.
fn backfill_beside_live_windows(receiver: Receiver) {
    let rig = Rig::new(5, 48, 120);
    let interval = rig.interval_ms();
    // 500 ms per Kusto answer: about 47 windows two at a time take 12 s, long enough to see the backfill
    // running in status.json (written every 2 s), to kill it early on and to see live windows
    // (one query every 5 s) appended meanwhile.
    rig.kusto_proxy
        .set(HttpRule::Slow(Duration::from_millis(500)));
    let live = Spec::live("cpu", 5);
    rig.write(&live);
    let mut outputs = rig.otlp_flags();
    outputs.extend(["--remote-write-endpoint".into(), receiver.write_url()]);
    let mut exporter = rig.start(&outputs);

    let live_start = rig.first_query(&exporter);
    assert!(
        rig.data.first_start_ms < live_start && live_start < rig.data.end_ms(),
        "the live start {} must fall inside the data",
        rfc3339(live_start)
    );
    let at_add = wait_watermark(&exporter, "cpu", live_start + interval);

    let b = BackfillSpec::before(&rig, live_start, "r1", 2);
    let total = b.windows(&rig);
    rig.write(&live.with_backfill(b.clone()));

    // Live watermarks seen while the backfill is running.
    let mut running_watermarks = Vec::new();
    let mut watch_running = |s: &serde_json::Value| {
        if backfill_of(s, "r1").is_some_and(|b| b["state"] == "Running") {
            running_watermarks.extend(watermark_ms(s));
        }
    };
    // Killed once the cursor is past more windows than are ever in flight, so a restart from the
    // range's start would show as more re-queried windows than `maxInFlight`.
    let at_kill = eventually(
        "the backfill's cursor to move past maxInFlight windows",
        LIMIT,
        || {
            let s = exporter.status_of("cpu")?;
            watch_running(&s);
            let done = backfill_of(&s, "r1")?["windowsDone"].as_u64()?;
            (done > u64::from(b.max_in_flight)).then_some(s)
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    exporter.kill9();
    let killed_at = backfill_of(&at_kill, "r1").unwrap().clone();
    assert_eq!(killed_at["state"], "Running", "{at_kill}");
    assert_eq!(killed_at["windowsTotal"], total, "{at_kill}");
    assert!(
        killed_at["windowsDone"].as_u64().unwrap() < total,
        "killed before the backfill completed: {at_kill}"
    );

    exporter.restart();
    let done = eventually(
        "the backfill to complete after the restart",
        LIMIT,
        || {
            let s = exporter.status_of("cpu")?;
            watch_running(&s);
            backfill_of(&s, "r1")
                .is_some_and(|b| b["state"] == "Completed")
                .then_some(s)
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    exporter.assert_running();
    let backfill = backfill_of(&done, "r1").unwrap();
    assert_eq!(backfill["windowsDone"], total, "{done}");
    assert_eq!(backfill["windowsTotal"], total, "{done}");
    assert_eq!(backfill["cursor"], rfc3339(b.end_ms), "{done}");
    assert!(backfill.get("message").is_none(), "{done}");
    // The restart continued from the cursor, not from the range's start.
    let log = exporter.log_text();
    let second = log.split("===== start 2 =====").nth(1).unwrap_or_default();
    let resumed = second
        .lines()
        .find(|l| l.contains("backfill started"))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("cursor=")))
        .and_then(|c| Ticks::parse(c).ok())
        .map(Ticks::unix_millis)
        .unwrap_or_else(|| {
            panic!("no `backfill started cursor=` line after the restart:\n{second}")
        });
    assert!(
        b.start_ms < resumed && resumed < b.end_ms,
        "resumed at {} after the kill, not inside the range",
        rfc3339(resumed)
    );
    // Live never waited for the backfill: the live watermark moved on while it was running.
    let newest_live = running_watermarks.iter().copied().max().unwrap_or(at_add);
    assert!(
        newest_live > at_add,
        "no live window was appended while the backfill ran (watermark {} when it was added, seen while running: {:?})",
        rfc3339(at_add),
        running_watermarks
            .iter()
            .map(|w| rfc3339(*w))
            .collect::<Vec<_>>()
    );

    let end = watermark_ms(&stop(&mut exporter, "cpu")).unwrap();
    let expected = rig.expected(rig.data.first_start_ms, end);
    assert_eq!(
        expected.len(),
        rig.windows(rig.data.first_start_ms, end).len() * HOSTS.len()
    );

    // Queries: every window at least once; twice only those in flight at the kill.
    let queries = rig.queries_per_window(rig.data.first_start_ms, end);
    let backfill_windows = rig.windows(b.start_ms, b.end_ms);
    let live_windows = rig.windows(b.end_ms, end);
    for w in backfill_windows.iter().chain(&live_windows) {
        assert!(
            queries.contains_key(w),
            "window {} never queried",
            rfc3339(*w)
        );
    }
    let requeried = |windows: &[i64]| -> Vec<String> {
        (windows.iter())
            .filter(|w| queries[*w] > 1)
            .map(|w| format!("{}×{}", rfc3339(*w), queries[w]))
            .collect()
    };
    let (backfill_again, live_again) = (requeried(&backfill_windows), requeried(&live_windows));
    assert!(
        backfill_again.len() <= b.max_in_flight as usize
            && (backfill_windows.iter()).all(|w| queries[w] <= 2),
        "backfill windows queried again after the kill: {backfill_again:?}"
    );
    // A live query in flight when the spec changed (the task restarts) or at the kill is sent again.
    assert!(
        live_again.len() <= 2 && live_windows.iter().all(|w| queries[w] <= 3),
        "live windows queried again beyond the spec change and the kill: {live_again:?}"
    );

    // Deliveries: every window, exact; twice only a window the drain was pushing at the kill (one
    // per WAL exporter and output: the live exporter's and the backfill's).
    let points = rig.otlp.points();
    assert_otlp_matches(&points, &expected);
    let again = |arrivals: &BTreeMap<i64, usize>, windows: &[i64]| -> usize {
        windows
            .iter()
            .filter(|w| arrivals.get(*w).copied().unwrap_or(0) > 1)
            .count()
    };
    let otlp = arrivals_per_window(&points);
    assert!(
        again(&otlp, &backfill_windows) <= 1
            && again(&otlp, &live_windows) <= 1
            && otlp.values().all(|n| *n <= 2),
        "OTLP arrivals beyond the windows in flight at the kill: {otlp:?}"
    );
    let stored_twice = receiver.assert_holds(&expected);
    assert!(
        again(&stored_twice, &backfill_windows) <= 1 && again(&stored_twice, &live_windows) <= 1,
        "the receiver stores windows twice beyond those in flight at the kill: {stored_twice:?}"
    );
    eprintln!(
        "backfill of {total} windows beside live from {} to {}; killed at {} done; re-queried {backfill_again:?} {live_again:?}; OTLP again {:?}; receiver twice {stored_twice:?}",
        rfc3339(live_start),
        rfc3339(end),
        killed_at["windowsDone"],
        otlp.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>(),
    );
}

#[test]
fn backfill_beside_live_windows_prometheus_out_of_order_and_otlp() {
    let prometheus = common::prometheus_with_config(
        "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\nscrape_configs: []\n",
    );
    backfill_beside_live_windows(Receiver::PrometheusOutOfOrder(prometheus));
}

#[test]
fn backfill_beside_live_windows_victoria_metrics_and_otlp() {
    backfill_beside_live_windows(Receiver::VictoriaMetrics(common::victoria_metrics()));
}

/// Waits until `e2e/<name>`'s backfill `request_id` is `Failed` because remote write refused it as
/// out of order; checks the message names the output and the receiver setting.
fn wait_refused(exporter: &mut Exporter, request_id: &str, total: u64) -> serde_json::Value {
    let status = wait_backfill_state(exporter, "cpu", request_id, "Failed");
    let b = backfill_of(&status, request_id).unwrap();
    let message = b["message"].as_str().unwrap();
    for needle in [
        "output remote_write stopped",
        "out of order",
        "storage.tsdb.out_of_order_time_window",
        "the other outputs got every window",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert_eq!(b["windowsDone"], total, "{status}");
    assert_eq!(b["windowsTotal"], total, "{status}");
    assert_eq!(status["deadLettered"]["windows"], 0, "{status}");
    status
}

/// Test 2: Prometheus without `out_of_order_time_window` holds a live window; a backfill of older
/// windows is refused. The backfill stops for remote write with `Failed` and a message naming the
/// output and the setting, without a single dead letter, while the OTLP sink gets every window —
/// both when the refusal comes while the backfill runs (r1) and when it comes after every window
/// is already in the WAL, the receiver having been unreachable meanwhile (r2).
#[test]
fn an_out_of_order_refusal_stops_the_backfill_for_that_output_only() {
    let rig = Rig::new(5, 12, 120);
    let prometheus = Prometheus::start();
    // A gate in front of Prometheus: closed (503, retry after 1 s) while r2 fills the WAL.
    let gate = HttpFault::start(&rig.rt, &format!("http://127.0.0.1:{}", prometheus.port), 2);
    let live = Spec::live("cpu", 5);
    rig.write(&live);
    let mut outputs = rig.otlp_flags();
    outputs.extend(["--remote-write-endpoint".into(), gate.url("/api/v1/write")]);
    let mut exporter = rig.start(&outputs);
    let live_start = rig.first_query(&exporter);
    eventually(
        "the first live window in Prometheus",
        LIMIT,
        || {
            let held = prometheus_samples(prometheus.port);
            HOSTS
                .iter()
                .all(|h| held.contains_key(&((*h).to_owned(), live_start)))
                .then_some(())
        },
        || exporter.log_tail(),
    );
    let range = BackfillSpec::before(&rig, live_start, "r1", 1);
    let total = range.windows(&rig);

    // r1: queries slowed to 300 ms, so the first refusal comes while the backfill runs.
    rig.kusto_proxy
        .set(HttpRule::Slow(Duration::from_millis(300)));
    rig.write(&live.with_backfill(range.clone()));
    wait_refused(&mut exporter, "r1", total);

    // r2: every window is appended while Prometheus cannot be reached; it refuses them afterwards.
    rig.kusto_proxy.set(HttpRule::Pass);
    gate.set(HttpRule::Answer {
        status: 503,
        retry_after: Some(1),
    });
    let r2 = BackfillSpec {
        request_id: "r2",
        ..range.clone()
    };
    rig.write(&live.with_backfill(r2));
    let appended = wait_backfill_state(&mut exporter, "cpu", "r2", "Completed");
    assert_eq!(backfill_of(&appended, "r2").unwrap()["windowsDone"], total);
    gate.set(HttpRule::Pass);
    wait_refused(&mut exporter, "r2", total);

    let end = watermark_ms(&stop(&mut exporter, "cpu")).unwrap();
    let dead = std::process::Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["wal", "dead-letters", "--json", "--wal-dir"])
        .arg(&exporter.wal_dir)
        .env_remove("ADXEXPORTER_WAL_DIR")
        .output()
        .unwrap();
    assert!(dead.status.success(), "{dead:?}");
    let dead: serde_json::Value = serde_json::from_slice(&dead.stdout).unwrap();
    assert_eq!(dead["dead_letters"], serde_json::json!([]), "{dead}");

    // OTLP: the range twice (r1 and r2), every live window once, exact.
    let expected = rig.expected(rig.data.first_start_ms, end);
    let points = rig.otlp.points();
    assert_otlp_matches(&points, &expected);
    let arrivals = arrivals_per_window(&points);
    for w in rig.windows(rig.data.first_start_ms, end) {
        let want = if w < live_start { 2 } else { 1 };
        assert_eq!(
            arrivals.get(&w),
            Some(&want),
            "OTLP arrivals of {}",
            rfc3339(w)
        );
    }
    // Prometheus: the live windows only.
    let live_points = rig.expected(live_start, end);
    assert_prometheus_matches(prometheus.port, &live_points);
    eprintln!(
        "refused: {total} backfill windows twice, live {}..{}; Prometheus got {} requests through the gate",
        rfc3339(live_start),
        rfc3339(end),
        gate.requests()
    );
}

/// Test 3: r1 completes; r2 over the same range queries and delivers every window once more; r3 is
/// removed while it runs: `status.backfill` disappears, no backfill query follows, what r3 had
/// appended still drains, and the live windows go on.
#[test]
fn a_new_request_id_restarts_the_backfill_and_removal_cancels_it() {
    let rig = Rig::new(2, 20, 300);
    let interval = rig.interval_ms();
    let live = Spec::live("cpu", 2);
    rig.write(&live);
    let mut exporter = rig.start(&rig.otlp_flags());
    let live_start = rig.first_query(&exporter);
    wait_watermark(&exporter, "cpu", live_start + interval);
    let r1 = BackfillSpec::before(&rig, live_start, "r1", 2);
    let range = rig.windows(r1.start_ms, r1.end_ms);
    let range_points = rig.expected(r1.start_ms, r1.end_ms);
    let arrivals_in_range = |rig: &Rig| -> BTreeMap<i64, usize> {
        (arrivals_per_window(&rig.otlp.points()).into_iter())
            .filter(|(w, _)| *w < live_start)
            .collect()
    };
    let range_len = range.len();
    let every_range_window =
        |n: usize, a: &BTreeMap<i64, usize>| a.len() == range_len && a.values().all(|k| *k == n);

    rig.write(&live.with_backfill(r1.clone()));
    wait_backfill_state(&mut exporter, "cpu", "r1", "Completed");
    eventually(
        "r1's windows at the OTLP sink",
        LIMIT,
        || every_range_window(1, &arrivals_in_range(&rig)).then_some(()),
        || format!("{:?}\n{}", arrivals_in_range(&rig), exporter.log_tail()),
    );

    rig.write(&live.with_backfill(BackfillSpec {
        request_id: "r2",
        ..r1.clone()
    }));
    let r2 = wait_backfill_state(&mut exporter, "cpu", "r2", "Completed");
    assert_eq!(backfill_of(&r2, "r2").unwrap()["windowsDone"], range.len());
    eventually(
        "r2's windows at the OTLP sink: each a second time",
        LIMIT,
        || every_range_window(2, &arrivals_in_range(&rig)).then_some(()),
        || format!("{:?}\n{}", arrivals_in_range(&rig), exporter.log_tail()),
    );
    let queries = rig.queries_per_window(r1.start_ms, r1.end_ms);
    assert!(
        queries.len() == range.len() && queries.values().all(|n| *n == 2),
        "r1 and r2 query each window once: {queries:?}"
    );

    // r3, slowed down (700 ms a query, one at a time: 14 s in all), removed once it has appended a
    // window (seen within 2 s; the removal is read within 2 s more).
    rig.kusto_proxy
        .set(HttpRule::Slow(Duration::from_millis(700)));
    rig.write(&live.with_backfill(BackfillSpec {
        request_id: "r3",
        max_in_flight: 1,
        ..r1.clone()
    }));
    let running = eventually(
        "r3 to run",
        LIMIT,
        || {
            let s = exporter.status_of("cpu")?;
            let b = backfill_of(&s, "r3")?;
            (b["state"] == "Running" && b["windowsDone"].as_u64()? >= 1).then_some(s)
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    assert!(
        backfill_of(&running, "r3").unwrap()["windowsDone"]
            .as_u64()
            .unwrap()
            < range.len() as u64,
        "r3 was meant to be removed while running: {running}"
    );
    rig.write(&live);
    let removed = eventually(
        "status.backfill to disappear",
        LIMIT,
        || {
            exporter
                .status_of("cpu")
                .filter(|s| s.get("backfill").is_none())
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    rig.kusto_proxy.set(HttpRule::Pass);
    // A query the cancelled backfill sent just before it stopped is counted once it is answered.
    let w0 = wait_watermark(&exporter, "cpu", watermark_ms(&removed).unwrap() + interval);
    let after_removal = rig.queries_per_window(r1.start_ms, r1.end_ms);
    wait_watermark(&exporter, "cpu", w0 + 2 * interval);
    assert_eq!(
        rig.queries_per_window(r1.start_ms, r1.end_ms),
        after_removal,
        "backfill queries after spec.backfill was removed"
    );
    let r3_queries: usize = after_removal.values().sum::<usize>() - 2 * range.len();
    assert!(
        (1..range.len()).contains(&r3_queries),
        "r3 queried {r3_queries} of {} windows before it was removed",
        range.len()
    );

    let end = watermark_ms(&stop(&mut exporter, "cpu")).unwrap();
    let points = rig.otlp.points();
    assert_otlp_matches(&points, &rig.expected(rig.data.first_start_ms, end));
    // r3's windows in the WAL at the removal still drained: a prefix of the range, three times.
    let arrivals = arrivals_in_range(&rig);
    let third: Vec<i64> = (arrivals.iter())
        .filter(|(_, n)| **n == 3)
        .map(|(w, _)| *w)
        .collect();
    assert!(
        arrivals.len() == range.len() && arrivals.values().all(|n| (2..=3).contains(n)),
        "{arrivals:?}"
    );
    assert_eq!(
        third,
        range[..third.len()],
        "r3's windows form a prefix: {arrivals:?}"
    );
    assert!(
        (r3_queries.saturating_sub(1)..=r3_queries).contains(&third.len()),
        "r3 appended {} windows for {r3_queries} queries (one may have been in flight)",
        third.len()
    );
    let live_arrivals = arrivals_per_window(&points);
    for w in rig.windows(live_start, end) {
        assert_eq!(
            live_arrivals.get(&w),
            Some(&1),
            "live window {}",
            rfc3339(w)
        );
    }
    assert_eq!(range_points.len(), range.len() * HOSTS.len());
    eprintln!(
        "requestId: {} windows ×2, r3 cancelled after {r3_queries} queries ({} drained); live to {}",
        range.len(),
        third.len(),
        rfc3339(end)
    );
}

/// `adxexporter_queries_total{exporter="e2e/<name>"}` summed over outcomes (0 when absent).
fn queries_total(exporter: &Exporter, name: &str) -> Option<u64> {
    let (code, page) = http_get(exporter.metrics_port, "/metrics")?;
    assert_eq!(code, 200, "{page}");
    let label = format!("exporter=\"e2e/{name}\"");
    Some(
        page.lines()
            .filter(|l| l.starts_with("adxexporter_queries_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Test 4: a resource suspended from the start queries nothing — duckdb-kql receives exactly the
/// pacer's queries while time passes — and reports `Ready=False Suspended`; resumed, it exports
/// every window from its `startTime` exactly once.
#[test]
fn a_suspended_resource_queries_nothing_and_resumes_without_a_gap() {
    let rig = Rig::new(2, 15, 300);
    let interval = rig.interval_ms();
    let past_end = rig.data.first_start_ms + 15 * interval;
    let pacer = Spec {
        name: "pacer",
        metric: PACER_METRIC,
        start_ms: Some(rig.data.first_start_ms),
        ..Spec::live("pacer", 2)
    };
    let suspended = Spec {
        start_ms: Some(rig.data.first_start_ms),
        suspend: true,
        ..Spec::live("cpu", 2)
    };
    rig.write(&pacer);
    rig.write(&suspended);
    let mut exporter = rig.start(&rig.otlp_flags());

    let status = eventually(
        "e2e/cpu to report Suspended",
        LIMIT,
        || {
            exporter
                .status_of("cpu")
                .filter(|s| condition(s, "Ready").is_some_and(|c| c.1 == "Suspended"))
        },
        || format!("{:?}\n{}", exporter.status(), exporter.log_tail()),
    );
    let (ready, _, message) = condition(&status, "Ready").unwrap();
    assert_eq!(ready, "False", "{status}");
    assert!(message.contains("spec.suspend"), "{message}");
    // Time passes: the pacer catches up and then appends two live windows.
    wait_watermark(&exporter, "pacer", past_end + 2 * interval);
    // Every query duckdb-kql answered was the pacer's (its counter moves after duckdb-kql logs).
    let (kusto, paced) = eventually(
        "duckdb-kql's queries to equal the pacer's",
        LIMIT,
        || {
            let paced = queries_total(&exporter, "pacer")?;
            let kusto = rig.duckdb_queries();
            (kusto as u64 == paced).then_some((kusto, paced))
        },
        || {
            format!(
                "duckdb-kql {} queries, pacer {:?}\n{}",
                rig.duckdb_queries(),
                queries_total(&exporter, "pacer"),
                exporter.log_tail()
            )
        },
    );
    assert_eq!(queries_total(&exporter, "cpu"), Some(0));
    let held = exporter.status_of("cpu").unwrap();
    assert!(held.get("watermark").is_none(), "{held}");
    assert!(
        !points_of_metrics(&rig.otlp.records(), &[METRIC, PACER_METRIC]).contains_key(METRIC),
        "a suspended resource exported"
    );

    rig.write(&Spec {
        suspend: false,
        ..suspended
    });
    wait_watermark(&exporter, "cpu", past_end);
    let resumed = eventually(
        "e2e/cpu to be Ready",
        LIMIT,
        || {
            exporter
                .status_of("cpu")
                .filter(|s| condition(s, "Ready").is_some_and(|c| c.0 == "True"))
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    assert!(queries_total(&exporter, "cpu").unwrap() > 0, "{resumed}");

    let end = watermark_ms(&stop(&mut exporter, "cpu")).unwrap();
    let pacer_end = watermark_ms(&exporter.status_of("pacer").unwrap()).unwrap();
    let by_metric = points_of_metrics(&rig.otlp.records(), &[METRIC, PACER_METRIC]);
    for (metric, end) in [(METRIC, end), (PACER_METRIC, pacer_end)] {
        let points = &by_metric[metric];
        let dups = assert_otlp_matches(points, &rig.expected(rig.data.first_start_ms, end));
        assert!(dups.is_empty(), "{metric}: windows arrived twice: {dups:?}");
    }
    eprintln!(
        "suspend: {kusto} duckdb-kql queries = {paced} pacer queries while suspended; resumed to {}",
        rfc3339(end)
    );
}
