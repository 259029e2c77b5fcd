//! The chaos rig (issue #7 item 1): the run-loop e2e peers of `run_support` — duckdb-kql with the
//! generated dataset and its exact oracle, Prometheus, the Python OTLP decoder, the real
//! `adxexporter run` process — with a fault link in front of every peer:
//!
//! ```text
//! adxexporter ─► TcpFault (partition: blackhole/reset/delay/truncate) ─► HttpFault (429/5xx/400/slow/
//!                truncated/partial failure; records what the peer accepted) ─► peer
//! ```
//!
//! The dataset spans `past` complete windows (a catch-up) and `future` windows that complete while
//! the test runs (steady state). The verdict of a scenario is always the same: for every data window
//! before the final watermark, each output received it with the oracle's exact values; duplicates
//! are counted per window from what the receivers really accepted (the OTLP sink's log, the
//! remote-write link's record), and Prometheus must hold exactly the oracle. Each scenario writes
//! its figures to `<report dir>/<scenario>.json` *before* asserting, so a failed run still reports.
#![allow(dead_code)]

pub mod http_fault;
pub mod tcp_fault;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prost::Message;

use crate::common::{self, duckdb_kql, repo_root};
use crate::run_support::*;
use http_fault::HttpFault;
use tcp_fault::TcpFault;

/// `CHAOS_FULL=1`: the full run (`chaos/run`); otherwise the reduced CI form.
pub fn full() -> bool {
    std::env::var("CHAOS_FULL").is_ok_and(|v| v == "1")
}

/// The scenario's random seed: `CHAOS_SEED` replays one, else a fresh one (printed).
pub fn seed(scenario: &str) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{scenario}: seed {seed} (CHAOS_SEED={seed} replays it)");
    seed
}

/// Holds the machine for one scenario: the harness runs tests on parallel threads, but scenarios
/// measure recovery times and each starts several peers, so they take turns.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where scenario results go: `$CHAOS_REPORT_DIR`, else `target/chaos`.
pub fn report_dir() -> PathBuf {
    std::env::var_os("CHAOS_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/chaos"))
}

/// One peer behind its TCP and HTTP fault proxies.
pub struct Link {
    pub tcp: TcpFault,
    pub http: HttpFault,
}

impl Link {
    fn new(rt: &tokio::runtime::Runtime, upstream: &str, seed: u64) -> Link {
        let http = HttpFault::start(rt, upstream, seed);
        let tcp = TcpFault::start(rt, ([127, 0, 0, 1], http.port).into());
        Link { tcp, http }
    }

    /// The URL the exporter is given: through both proxies.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.tcp.port)
    }
}

/// Peers, fault links and the dataset of one scenario. Dropping it stops everything.
pub struct Rig {
    pub data: Dataset,
    pub work: tempfile::TempDir,
    pub kusto: Link,
    pub rw: Link,
    pub otlp_link: Link,
    pub prom: Prometheus,
    pub otlp: OtlpSink,
    kusto_peer: common::Peer,
    /// Runs the proxies (and a test's fake Kubernetes API). Last, so they stop after everything
    /// that talks through them.
    pub rt: tokio::runtime::Runtime,
}

impl Rig {
    /// `past` complete windows and `future` windows still to come, of `interval_s` seconds.
    pub fn new(interval_s: i64, past: i64, future: i64, seed: u64) -> Rig {
        let data = Dataset::around_now(interval_s, past, future);
        // CHAOS_KEEP=1 keeps the work directory (logs, WAL, status) for a look after the run.
        let work = work_dir("adxexporter-chaos-", "CHAOS_KEEP");
        let init = write_init_sql(work.path(), &data);
        let kusto_peer = duckdb_kql(&init);
        let prom = Prometheus::start();
        let otlp = OtlpSink::start();
        let rt = proxy_runtime();
        let kusto = Link::new(&rt, &kusto_peer.url, seed);
        let rw = Link::new(&rt, &format!("http://127.0.0.1:{}", prom.port), seed ^ 1);
        let otlp_link = Link::new(&rt, &format!("http://127.0.0.1:{}", otlp.port), seed ^ 2);
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        Rig {
            data,
            work,
            kusto,
            rw,
            otlp_link,
            prom,
            otlp,
            kusto_peer,
            rt,
        }
    }

    pub fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    /// Writes exporter `name` over the dataset, from its first window, emitting `metric`.
    pub fn write_exporter(&self, name: &str, metric: &str) {
        let interval = format!("{}s", self.data.interval_ms / 1000);
        let yaml = resource_yaml(name, &interval, self.data.first_start_ms, GOOD_BODY).replace(
            &format!("defaultMetricName: {METRIC}"),
            &format!("defaultMetricName: {metric}"),
        );
        std::fs::write(self.manifests().join(format!("{name}.yaml")), yaml).unwrap();
    }

    /// Starts `adxexporter run` through the links, with `extra` flags and `env`.
    pub fn start(&self, extra: &[&str], env: &[(&str, String)]) -> Exporter {
        let mut args = vec![
            "--remote-write-endpoint".to_owned(),
            self.rw.url("/api/v1/write"),
            "--otlp-endpoint".to_owned(),
            self.otlp_link.url("/v1/metrics"),
            // A blackholed query fails after 2 s + 30 s instead of 4.5 minutes.
            "--kusto-server-timeout".to_owned(),
            "2s".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Exporter::start_with_env(
            self.work.path(),
            &self.kusto.url(""),
            Some(&self.manifests()),
            &args,
            env,
        )
    }

    /// Starts `adxexporter run` in Kubernetes mode (`env` carries `KUBECONFIG`) with its WAL and
    /// log in `dir`, through the links.
    pub fn start_kube(
        &self,
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Exporter {
        let mut args = vec![
            "--remote-write-endpoint".to_owned(),
            self.rw.url("/api/v1/write"),
            "--otlp-endpoint".to_owned(),
            self.otlp_link.url("/v1/metrics"),
            "--shutdown-grace".to_owned(),
            "5s".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Exporter::start_with_env(dir, &self.kusto.url(""), None, &args, env)
    }

    /// Restarts Prometheus (same port and TSDB) accepting samples up to 30 min out of order.
    pub fn prom_accepting_replays(&mut self) {
        self.prom.stop();
        std::fs::write(
            self.prom.dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\nscrape_configs: []\n",
        )
        .unwrap();
        self.prom.restart();
    }

    /// Start of the newest window that has ended by now.
    pub fn last_ended_window_end(&self) -> i64 {
        now_ms() / self.data.interval_ms * self.data.interval_ms
    }

    /// Arrivals per data window at the OTLP sink (all hosts of a window travel together).
    pub fn otlp_arrivals(&self) -> BTreeMap<i64, usize> {
        per_window(&self.otlp.points())
    }

    /// Arrivals per data window that Prometheus accepted (as recorded by the remote-write link).
    pub fn rw_arrivals(&self) -> BTreeMap<i64, usize> {
        per_window(&rw_points(&self.rw.http, METRIC))
    }

    /// Waits until both outputs hold every data window ending at or before `end_ms`; returns how
    /// long that took (a recovery time when called right after a fault heals).
    pub fn wait_delivered(
        &self,
        exporter: &mut Exporter,
        end_ms: i64,
        limit: Duration,
    ) -> Duration {
        let t0 = Instant::now();
        let want: BTreeSet<i64> = (0..self.data.windows)
            .map(|w| self.data.window_start(w))
            .filter(|s| s + self.data.interval_ms <= end_ms)
            .collect();
        let deadline = t0 + limit;
        loop {
            exporter.assert_running();
            let (o, r) = (self.otlp_arrivals(), self.rw_arrivals());
            if want.iter().all(|w| o.contains_key(w) && r.contains_key(w)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "both outputs must hold all {} windows so far within {limit:?}: OTLP has {}, remote write {}\n{}",
                want.len(),
                o.len(),
                r.len(),
                exporter.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    }

    /// The verdict after the exporter stopped: every data window before the final watermark of
    /// `exporter` `name`, compared with the oracle at both outputs.
    pub fn verdict(&self, exporter: &Exporter, name: &str) -> Verdict {
        let status = exporter.status_of(name).unwrap_or_default();
        let watermark = watermark_ms(&status).unwrap_or(self.data.first_start_ms);
        self.verdict_of(METRIC, watermark, &self.otlp.points())
    }

    /// The verdict for one exporter emitting `metric`, up to `watermark`, given the OTLP points of
    /// that metric.
    pub fn verdict_of(
        &self,
        metric: &str,
        watermark: i64,
        otlp_points: &[((String, i64), f64)],
    ) -> Verdict {
        let expected: BTreeMap<(String, i64), f64> = self
            .data
            .expected()
            .into_iter()
            .filter(|((_, t), _)| *t + self.data.interval_ms <= watermark)
            .collect();
        let windows: BTreeSet<i64> = expected.keys().map(|(_, t)| *t).collect();
        let mut problems = Vec::new();
        let otlp = tally(
            &format!("{metric} otlp"),
            otlp_points,
            &expected,
            &windows,
            &mut problems,
        );
        let remote_write = tally(
            &format!("{metric} remote_write"),
            &rw_points(&self.rw.http, metric),
            &expected,
            &windows,
            &mut problems,
        );
        // Prometheus itself: exactly the oracle up to the watermark (it folds duplicates).
        let held = prometheus_samples_of(self.prom.port, metric);
        let extra = held.keys().filter(|k| !expected.contains_key(*k)).count();
        let wrong = expected
            .iter()
            .filter(|(k, v)| held.get(*k).is_none_or(|h| h.to_bits() != v.to_bits()))
            .count();
        if extra + wrong > 0 {
            problems.push(format!(
                "Prometheus {metric}: holds {extra} samples beyond the oracle and lacks or differs on {wrong}"
            ));
        }
        Verdict {
            windows_expected: windows.len(),
            watermark_ms: watermark,
            otlp,
            remote_write,
            problems,
        }
    }
}

/// The verdicts of several exporters as one: counts added, problems joined.
pub fn combine(verdicts: Vec<Verdict>) -> Verdict {
    let add = |a: &Tally, b: &Tally| Tally {
        delivered: a.delivered + b.delivered,
        duplicated_windows: a.duplicated_windows + b.duplicated_windows,
        extra_arrivals: a.extra_arrivals + b.extra_arrivals,
        lost: a.lost + b.lost,
    };
    let mut all = Verdict {
        windows_expected: 0,
        watermark_ms: 0,
        otlp: Tally::default(),
        remote_write: Tally::default(),
        problems: Vec::new(),
    };
    for v in verdicts {
        all.windows_expected += v.windows_expected;
        all.watermark_ms = all.watermark_ms.max(v.watermark_ms);
        all.otlp = add(&all.otlp, &v.otlp);
        all.remote_write = add(&all.remote_write, &v.remote_write);
        all.problems.extend(v.problems);
    }
    all
}

/// Per-output figures of a verdict.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    /// Distinct windows that arrived with every host and the oracle's values.
    pub delivered: usize,
    /// Windows that arrived more than once.
    pub duplicated_windows: usize,
    /// Arrivals beyond the first, summed over windows.
    pub extra_arrivals: usize,
    /// Windows that never arrived (complete).
    pub lost: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub windows_expected: usize,
    pub watermark_ms: i64,
    pub otlp: Tally,
    pub remote_write: Tally,
    /// Everything wrong beyond the counts (wrong values, unknown points, uneven hosts).
    pub problems: Vec<String>,
}

/// Counts one output's arrivals against the oracle, noting every mismatch in `problems`.
fn tally(
    output: &str,
    points: &[((String, i64), f64)],
    expected: &BTreeMap<(String, i64), f64>,
    windows: &BTreeSet<i64>,
    problems: &mut Vec<String>,
) -> Tally {
    let mut counts: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (k, v) in points {
        match expected.get(k) {
            Some(want) if want.to_bits() == v.to_bits() => {
                *counts.entry(k.clone()).or_default() += 1
            }
            Some(want) => problems.push(format!("{output}: {k:?} = {v}, the oracle says {want}")),
            // Windows past the final watermark may have arrived before the stop; they are not judged.
            None if k.1 >= *windows.last().unwrap_or(&i64::MIN) => {}
            None => problems.push(format!("{output}: {k:?} = {v} is not in the oracle")),
        }
    }
    let mut t = Tally::default();
    for w in windows {
        let per_host: Vec<usize> = HOSTS
            .iter()
            .map(|h| counts.get(&((*h).to_owned(), *w)).copied().unwrap_or(0))
            .collect();
        let least = *per_host.iter().min().unwrap();
        let most = *per_host.iter().max().unwrap();
        if least != most {
            problems.push(format!(
                "{output}: window {} arrived unevenly per host: {per_host:?}",
                rfc3339(*w)
            ));
        }
        if least == 0 {
            t.lost += 1;
        } else {
            t.delivered += 1;
            if most > 1 {
                t.duplicated_windows += 1;
                t.extra_arrivals += most - 1;
            }
        }
    }
    if t.lost > 0 {
        problems.push(format!("{output}: {} windows lost", t.lost));
    }
    t
}

/// Arrivals per window start, from per-point arrivals (the most of any host).
fn per_window(points: &[((String, i64), f64)]) -> BTreeMap<i64, usize> {
    let mut out: BTreeMap<i64, usize> = BTreeMap::new();
    for ((_, t), n) in arrivals_per_point(points) {
        let e = out.entry(t).or_default();
        *e = (*e).max(n);
    }
    out
}

/// Every `metric` sample in the remote-write requests Prometheus accepted: ((Host, ms), value).
pub fn rw_points(link: &HttpFault, metric: &str) -> Vec<((String, i64), f64)> {
    let mut out = Vec::new();
    for a in link.accepted() {
        let Ok(req) = adxexporter::prompb::WriteRequest::decode(a.body.as_ref()) else {
            continue;
        };
        for ts in req.timeseries {
            let label = |n: &str| {
                ts.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            if label("__name__").as_deref() != Some(metric) {
                continue;
            }
            let host = label("Host").unwrap_or_default();
            for s in &ts.samples {
                out.push(((host.clone(), s.timestamp), s.value));
            }
        }
    }
    out
}

/// What one scenario reports (one row of `chaos/REPORT.md`).
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub mode: &'static str,
    pub seed: u64,
    /// Faults injected, e.g. "12 SIGKILL" or "blackhole remote write 120 s".
    pub faults: Vec<String>,
    /// The most duplicated windows the criterion allows per output.
    pub allowed_duplicated_windows: usize,
    /// Seconds from each fault's end until both outputs held everything due.
    pub recover_s: Vec<f64>,
    pub duration_s: f64,
    pub verdict: Verdict,
    pub passed: bool,
}

impl Report {
    /// Writes the report, then asserts the scenario's criterion: nothing lost, exact values, at
    /// most `allowed_duplicated_windows` windows duplicated per output.
    pub fn finish(mut self) {
        let v = &self.verdict;
        let mut problems = v.problems.clone();
        for (name, t) in [("otlp", &v.otlp), ("remote_write", &v.remote_write)] {
            if t.duplicated_windows > self.allowed_duplicated_windows {
                problems.push(format!(
                    "{name}: {} windows duplicated, at most {} were in flight at a fault",
                    t.duplicated_windows, self.allowed_duplicated_windows
                ));
            }
        }
        if v.windows_expected == 0 {
            problems.push("no window was judged".into());
        }
        self.passed = problems.is_empty();
        let dir = report_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(&self).unwrap()).unwrap();
        eprintln!("{}", serde_json::to_string(&self).unwrap());
        assert!(problems.is_empty(), "{}: {problems:#?}", self.scenario);
    }
}

/// Seconds as a float, for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
