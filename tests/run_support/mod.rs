//! Shared by the run-loop end-to-end tests: a generated dataset with its oracle, the real
//! `adxexporter run` process, an OTLP sink that can be stopped and restarted on the same port, and
//! read-back of Prometheus and of `<wal-dir>/status.json`.
//!
//! The dataset: table `Samples(Timestamp, Host, X)` with, for every window `w` (of `interval`) and
//! host `h`, three rows at the window start, its middle and one second before its end, valued
//! `base − 3`, `base`, `base + 3` with `base = h·1000 + w·1.25`. Every value is exact in binary
//! floating point, so `avg(X)` is exactly `base` and the oracle is exact. The exported query emits
//! one sample per host per window, stamped with the window start.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{free_port, http_get, repo_root, venv_bin};

/// The exported metric.
pub const METRIC: &str = "e2e_cpu";
/// Hosts in the dataset.
pub const HOSTS: [&str; 3] = ["host-1", "host-2", "host-3"];

/// Unix ms now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// RFC 3339 UTC of a Unix ms instant (whole seconds are enough here).
pub fn rfc3339(ms: i64) -> String {
    adxexporter::time::Ticks::from_unix_millis(ms).to_string()
}

/// `windows` consecutive windows of `interval_s` seconds; the last one ends at the newest boundary
/// that is already in the past when the test starts (so every data window is complete).
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    pub first_start_ms: i64,
    pub interval_ms: i64,
    pub windows: i64,
}

impl Dataset {
    pub fn ending_now(interval_s: i64, windows: i64) -> Dataset {
        let interval_ms = interval_s * 1000;
        let end = now_ms() / interval_ms * interval_ms;
        Dataset {
            first_start_ms: end - windows * interval_ms,
            interval_ms,
            windows,
        }
    }

    /// `past` complete windows and `future` windows still to come, of `interval_s` seconds.
    pub fn around_now(interval_s: i64, past: i64, future: i64) -> Dataset {
        let now_boundary = Dataset::ending_now(interval_s, 1).end_ms();
        Dataset {
            first_start_ms: now_boundary - past * interval_s * 1000,
            interval_ms: interval_s * 1000,
            windows: past + future,
        }
    }

    pub fn window_start(&self, w: i64) -> i64 {
        self.first_start_ms + w * self.interval_ms
    }

    /// End of the last window holding data.
    pub fn end_ms(&self) -> i64 {
        self.window_start(self.windows)
    }

    fn base(w: i64, h: usize) -> f64 {
        (h as f64 + 1.0) * 1000.0 + w as f64 * 1.25
    }

    /// duckdb-kql init SQL (timestamps from epoch microseconds: UTC, no session time zone).
    pub fn init_sql(&self) -> String {
        let mut rows = Vec::new();
        for w in 0..self.windows {
            let start = self.window_start(w);
            for (h, host) in HOSTS.iter().enumerate() {
                let base = Self::base(w, h);
                for (offset_ms, value) in [
                    (0, base - 3.0),
                    (self.interval_ms / 2, base),
                    (self.interval_ms - 1000, base + 3.0),
                ] {
                    rows.push(format!(
                        "(make_timestamp({}), '{host}', {value:?})",
                        (start + offset_ms) * 1000
                    ));
                }
            }
        }
        format!(
            "CREATE TABLE Samples (Timestamp TIMESTAMP, Host VARCHAR, X DOUBLE);\nINSERT INTO Samples VALUES\n{};\n",
            rows.join(",\n")
        )
    }

    /// The oracle: every (host, window start ms) → value, for all data windows.
    pub fn expected(&self) -> BTreeMap<(String, i64), f64> {
        let mut out = BTreeMap::new();
        for w in 0..self.windows {
            for (h, host) in HOSTS.iter().enumerate() {
                out.insert(((*host).to_owned(), self.window_start(w)), Self::base(w, h));
            }
        }
        out
    }
}

/// A MetricsExporter resource over `Samples` (one sample per host per window).
pub fn resource_yaml(name: &str, interval: &str, start_time_ms: i64, body: &str) -> String {
    let body: String = body.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: {name}
  namespace: e2e
spec:
  database: memory
  interval: {interval}
  startTime: \"{}\"
  body: |
{body}  transform:
    defaultMetricName: {METRIC}
    valueColumns: [V]
    timestampColumn: Timestamp
    labelColumns: [Host]
",
        rfc3339(start_time_ms)
    )
}

/// The body every good exporter runs.
pub const GOOD_BODY: &str = "Samples
| where Timestamp between (_startTime .. _endTime)
| summarize V = avg(X) by Host
| extend Timestamp = _startTime";

/// A fresh work directory `<prefix>…` for one test, kept after the run when `$keep_var` is set.
pub fn work_dir(prefix: &str, keep_var: &str) -> tempfile::TempDir {
    let keep = std::env::var_os(keep_var).is_some();
    let builder = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir();
    builder.expect("create a work directory")
}

/// The one-thread runtime a test's fault proxies run on, beside the process under test.
pub fn proxy_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("start the proxies' runtime")
}

/// Writes `init.sql` for duckdb-kql into `dir` and returns its path.
pub fn write_init_sql(dir: &Path, data: &Dataset) -> PathBuf {
    let path = dir.join("init.sql");
    std::fs::write(&path, data.init_sql()).unwrap();
    path
}

/// Polls `probe` every 50 ms until it returns `Some`, failing after `limit` with `what` and `context()`.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `adxexporter run` process under test (killed on drop).
pub struct Exporter {
    child: Option<Child>,
    pub wal_dir: PathBuf,
    pub manifests: PathBuf,
    pub metrics_port: u16,
    pub health_port: u16,
    pub log: PathBuf,
    args: Vec<String>,
    /// Extra environment of every start (e.g. `LD_PRELOAD` for libfaketime).
    env: Vec<(String, String)>,
    /// Starts so far (the log of each is kept, numbered).
    pub starts: usize,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Exporter {
    /// Starts the binary in standalone mode. `outputs`: extra flags such as `--otlp-endpoint URL`.
    pub fn start(work: &Path, kusto_url: &str, manifests: &Path, outputs: &[String]) -> Exporter {
        Exporter::start_with_env(work, kusto_url, Some(manifests), outputs, &[])
    }

    /// As [`Exporter::start`], with extra environment variables for every (re)start; without
    /// `manifests` the process runs in Kubernetes mode (give it `KUBECONFIG` in `env`).
    pub fn start_with_env(
        work: &Path,
        kusto_url: &str,
        manifests: Option<&Path>,
        outputs: &[String],
        env: &[(&str, String)],
    ) -> Exporter {
        let wal_dir = work.join("wal");
        let mut args: Vec<String> = vec!["run".into()];
        if let Some(m) = manifests {
            args.extend(["--manifests".into(), m.display().to_string()]);
        }
        args.extend([
            "--kusto-endpoint".into(),
            format!("memory={kusto_url}"),
            "--kusto-auth".into(),
            "none".into(),
            "--wal-dir".into(),
            wal_dir.display().to_string(),
        ]);
        args.extend(outputs.iter().cloned());
        let mut e = Exporter {
            child: None,
            wal_dir,
            manifests: manifests.map(Path::to_owned).unwrap_or_default(),
            metrics_port: 0,
            health_port: 0,
            log: work.join("adxexporter.log"),
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            starts: 0,
        };
        e.restart();
        e
    }

    /// (Re)starts the process on the same WAL with fresh admin ports.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "the previous process is still running"
        );
        self.metrics_port = free_port();
        self.health_port = free_port();
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        use std::io::Write;
        writeln!(&log, "===== start {} =====", self.starts).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
            .args(&self.args)
            .args([
                "--metrics-port".to_owned(),
                self.metrics_port.to_string(),
                "--health-probe-port".to_owned(),
                self.health_port.to_string(),
            ])
            .env("RUST_LOG", "adxexporter=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start adxexporter");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. `HUP`, `TERM`) and returns at once.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// SIGKILL: a crash at whatever point the process happens to be.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit (bounded) and returns its status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "adxexporter did not exit within {limit:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait().unwrap()
        {
            panic!("adxexporter exited with {status}\n{}", self.log_tail());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 60 log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `<wal-dir>/status.json`, parsed (`None` until first written).
    pub fn status(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = std::fs::read(self.wal_dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The status of `e2e/<name>`.
    pub fn status_of(&self, name: &str) -> Option<serde_json::Value> {
        self.status()?.get(&format!("e2e/{name}")).cloned()
    }

    /// Waits (polling every millisecond) until the health port accepts connections: from then on
    /// the process handles SIGTERM (the handler is installed before the admin ports open).
    pub fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while std::net::TcpStream::connect(("127.0.0.1", self.health_port)).is_err() {
            self.assert_running();
            assert!(Instant::now() < deadline, "the health port never listened");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the next write of `status.json` (its modification time moves).
    pub fn wait_status_write(&self, limit: Duration) {
        let path = self.wal_dir.join("status.json");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let before = mtime(&path);
        eventually(
            "the next status.json write",
            limit,
            || (mtime(&path) != before).then_some(()),
            || self.log_tail(),
        );
    }

    /// Waits until `e2e/<name>` has watermark ≥ `end_ms` and an empty backlog; returns its status.
    pub fn wait_caught_up(
        &mut self,
        name: &str,
        end_ms: i64,
        limit: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_running();
            if let Some(s) = self.status_of(name)
                && watermark_ms(&s).is_some_and(|w| w >= end_ms)
                && backlog_windows(&s) == 0
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "e2e/{name} not caught up to {} within {limit:?}; status: {:?}\n{}",
                rfc3339(end_ms),
                self.status_of(name),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `status.watermark` in Unix ms.
pub fn watermark_ms(status: &serde_json::Value) -> Option<i64> {
    let text = status.get("watermark")?.as_str()?;
    Some(adxexporter::time::Ticks::parse(text).ok()?.unix_millis())
}

pub fn backlog_windows(status: &serde_json::Value) -> u64 {
    status["backlog"]["windows"].as_u64().unwrap_or(u64::MAX)
}

/// The condition `type_` of a status: (status, reason, message).
pub fn condition(status: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The Python OTLP sink on a fixed port, logging every request to a file that outlives restarts.
pub struct OtlpSink {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Extra arguments of every start (e.g. `--decode-remote-write`).
    args: Vec<String>,
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

impl OtlpSink {
    pub fn start() -> OtlpSink {
        OtlpSink::start_with(&[])
    }

    /// As [`OtlpSink::start`], with extra arguments for `otlp_sink.py` on every (re)start.
    pub fn start_with(args: &[&str]) -> OtlpSink {
        let mut s = OtlpSink {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metrics", self.port)
    }

    /// The sink's remote-write URL (recorded by size, decoded with `--decode-remote-write`).
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Kills the sink (an outage: connections are refused until [`OtlpSink::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the sink on its port, waiting until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let script = repo_root().join("tests/peers/otlp_sink.py");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let mut child = Command::new(venv_bin("python"))
            .arg(&script)
            .arg(self.port.to_string())
            .arg(self.dir.path().join("received.jsonl"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start otlp_sink.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(self.port, "/").is_none_or(|(c, _)| c != 200) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "otlp_sink exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "otlp_sink not ready on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Every request recorded so far, across restarts.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("received.jsonl")).unwrap_or_default();
        // The sink may be writing a line right now: only complete lines count.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every data point received, as ((host, ms), value), one entry per arrival (duplicates kept).
    pub fn points(&self) -> Vec<((String, i64), f64)> {
        points_of(&self.records())
    }
}

/// Flattens recorded OTLP requests to ((host, ms), value); asserts the shape the exporter promises.
pub fn points_of(records: &[serde_json::Value]) -> Vec<((String, i64), f64)> {
    points_of_metrics(records, &[METRIC])
        .remove(METRIC)
        .unwrap_or_default()
}

/// One arrival of a data point: ((host, window start ms), value).
pub type Point = ((String, i64), f64);

/// As [`points_of`], for each of `metrics` (asserting no other metric arrived).
pub fn points_of_metrics(
    records: &[serde_json::Value],
    metrics: &[&str],
) -> BTreeMap<String, Vec<Point>> {
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for r in records {
        assert!(r.get("decode_error").is_none(), "{r}");
        for res in r["resources"].as_array().into_iter().flatten() {
            for scope in res["scopes"].as_array().into_iter().flatten() {
                assert_eq!(scope["name"], "adxexporter");
                for m in scope["metrics"].as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or_default();
                    assert!(metrics.contains(&name), "{m}");
                    assert_eq!(m["kind"], "gauge", "{m}");
                    for p in m["points"].as_array().into_iter().flatten() {
                        let attrs = p["attrs"].as_array().unwrap();
                        assert_eq!(attrs.len(), 1, "{p}");
                        assert_eq!(attrs[0][0], "Host", "{p}");
                        let host = attrs[0][1].as_str().unwrap().to_owned();
                        let ns = p["time_unix_nano"].as_u64().unwrap();
                        assert_eq!(ns % 1_000_000, 0, "{p}");
                        let value: f64 = p["value"].as_str().unwrap().parse().unwrap();
                        out.entry(name.to_owned())
                            .or_default()
                            .push(((host, (ns / 1_000_000) as i64), value));
                    }
                }
            }
        }
    }
    out
}

/// Every sample Prometheus holds for [`METRIC`] in the last hour: (host, ms) → value, asserting
/// each series has exactly the labels `__name__` and `Host` and no timestamp twice.
pub fn prometheus_samples(port: u16) -> BTreeMap<(String, i64), f64> {
    prometheus_samples_of(port, METRIC)
}

/// As [`prometheus_samples`], for any metric with the same shape.
pub fn prometheus_samples_of(port: u16, metric: &str) -> BTreeMap<(String, i64), f64> {
    let time = now_ms() / 1000 + 60;
    let path = format!("/api/v1/query?query={metric}%5B1h%5D&time={time}");
    let (code, body) = http_get(port, &path).expect("Prometheus answers");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    let mut out = BTreeMap::new();
    for series in v["data"]["result"].as_array().unwrap() {
        let labels = series["metric"].as_object().unwrap();
        let names: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(names, BTreeSet::from(["Host", "__name__"]), "{series}");
        let host = labels["Host"].as_str().unwrap().to_owned();
        for pair in series["values"].as_array().unwrap() {
            let ms = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = pair[1].as_str().unwrap().parse().unwrap();
            assert!(
                out.insert((host.clone(), ms), value).is_none(),
                "Prometheus holds {host}@{ms} twice"
            );
        }
    }
    out
}

/// Counts arrivals per window start: how many times each window's points arrived (a window's
/// points all arrive in one request, so a re-delivery counts every point again).
pub fn arrivals_per_point(points: &[((String, i64), f64)]) -> BTreeMap<(String, i64), usize> {
    let mut n = BTreeMap::new();
    for (k, _) in points {
        *n.entry(k.clone()).or_insert(0) += 1;
    }
    n
}

/// Asserts every received point carries the oracle's value and every oracle point arrived; returns
/// the window starts (ms) that arrived more than once.
pub fn assert_otlp_matches(
    points: &[((String, i64), f64)],
    expected: &BTreeMap<(String, i64), f64>,
) -> BTreeSet<i64> {
    for (k, v) in points {
        let want = expected
            .get(k)
            .unwrap_or_else(|| panic!("OTLP point {k:?} = {v} is not in the oracle"));
        assert_eq!(v.to_bits(), want.to_bits(), "OTLP point {k:?}");
    }
    let counts = arrivals_per_point(points);
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !counts.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "OTLP never received {} points: {missing:?}",
        missing.len()
    );
    counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((_, t), _)| *t)
        .collect()
}

/// Asserts Prometheus holds exactly the oracle's samples (labels, ms timestamps, bit-equal values).
pub fn assert_prometheus_matches(port: u16, expected: &BTreeMap<(String, i64), f64>) {
    let got = prometheus_samples(port);
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "Prometheus: {} missing {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
    for (k, want) in expected {
        assert_eq!(got[k].to_bits(), want.to_bits(), "Prometheus sample {k:?}");
    }
}

/// Prometheus as a strict remote-write receiver that can be stopped and restarted on the same
/// port and TSDB directory (a receiver outage, not a data loss).
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Prometheus {
    pub fn start() -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
        )
        .unwrap();
        let mut p = Prometheus {
            child: None,
            port: free_port(),
            dir,
        };
        p.restart();
        p
    }

    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// SIGTERM (a clean stop, so no acknowledged sample is lost on the receiver's side);
    /// connections are refused until [`Prometheus::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("log"))
            .unwrap();
        let mut child = Command::new(crate::common::system_bin("prometheus"))
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(self.port, "/-/ready").is_none_or(|(c, _)| c != 200) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "prometheus exited with {status}: {}",
                    std::fs::read_to_string(d.join("log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}
