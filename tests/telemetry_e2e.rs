//! Self-observability end to end (issue #6 items 1–3): the real `adxexporter run` binary in
//! standalone mode against duckdb-kql and the Python OTLP sink. `/metrics` is scraped and every
//! family checked against what the run did (the oracle's sample count, the status file's watermark,
//! the sink's scripted failures); the probes are checked against real state; logs are checked for
//! the window fields in JSON and for a Kusto token at `trace` level.

mod common;
mod run_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use adxexporter::telemetry::metrics::{self as m, ALL};
use common::{duckdb_kql, free_port, http_get};
use run_support::*;

/// Bound for every wait on the system under test.
const LIMIT: Duration = Duration::from_secs(90);

/// One scraped sample: labels and value.
type Series = Vec<(BTreeMap<String, String>, f64)>;

/// `/metrics` parsed into family-or-series name → samples, plus the `# TYPE` lines.
struct Scrape {
    series: BTreeMap<String, Series>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn get(port: u16) -> Scrape {
        let (code, text) = http_get(port, "/metrics").expect("/metrics answers");
        assert_eq!(code, 200, "{text}");
        let mut series: BTreeMap<String, Series> = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            series
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Scrape {
            series,
            types,
            text,
        }
    }

    /// Sum of the samples of `name` whose labels include every pair of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = (self.series.get(name)?.iter())
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics:\n{}", self.text))
    }
}

/// POSTs a JSON body (the OTLP sink's `/control`).
fn http_post_json(port: u16, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A resource that adds a string column `W` as a second value column: every row skips one cell.
fn text_value_yaml(start_ms: i64) -> String {
    resource_yaml(
        "text",
        "1m",
        start_ms,
        &format!("{GOOD_BODY}\n| extend W = Host"),
    )
    .replace("valueColumns: [V]", "valueColumns: [V, W]")
}

/// A resource whose criteria no instance without cluster labels matches.
fn elsewhere_yaml(start_ms: i64) -> String {
    resource_yaml("elsewhere", "1m", start_ms, GOOD_BODY)
        .replace("spec:\n", "spec:\n  criteria:\n    region: [nowhere]\n")
}

const BROKEN_BODY: &str = "Samples
| where Timestamp between (_startTime .. _endTime)
| summarize V = avg(NoSuchColumn) by Host
| extend Timestamp = _startTime";

struct Setup {
    data: Dataset,
    work: tempfile::TempDir,
    kusto: common::Peer,
    otlp: OtlpSink,
}

impl Setup {
    fn new() -> Setup {
        let data = Dataset::ending_now(60, 5);
        let work = tempfile::Builder::new()
            .prefix("adxexporter-telemetry-")
            .tempdir()
            .unwrap();
        let init = write_init_sql(work.path(), &data);
        let kusto = duckdb_kql(&init);
        let otlp = OtlpSink::start();
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        Setup {
            data,
            work,
            kusto,
            otlp,
        }
    }

    fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.manifests().join(file), yaml).unwrap();
    }

    fn write_good(&self) {
        self.write(
            "cpu.yaml",
            &resource_yaml("cpu", "1m", self.data.first_start_ms, GOOD_BODY),
        );
    }
}

#[test]
fn metrics_report_what_the_pipeline_did() {
    let s = Setup::new();
    let start = s.data.first_start_ms;
    s.write_good();
    s.write("text.yaml", &text_value_yaml(start));
    s.write(
        "broken.yaml",
        &resource_yaml("broken-query", "1m", start, BROKEN_BODY),
    );
    s.write("elsewhere.yaml", &elsewhere_yaml(start));
    s.write(
        "zero.yaml",
        &resource_yaml("zero-interval", "0s", start, GOOD_BODY),
    );
    // The first pushes: one retryable failure, one refusal for good, one partial success.
    let script = r#"{"script": [{"status": 429, "retry_after": "0"}, {"status": 400, "body": "bad"}, {"status": 200, "partial_rejected": 3, "message": "x"}]}"#;
    assert_eq!(http_post_json(s.otlp.port, "/control", script), 200);
    let max_bytes = (64u64 << 20).to_string();
    let mut exporter = Exporter::start(
        s.work.path(),
        &s.kusto.url,
        &s.manifests(),
        &[
            "--otlp-endpoint".into(),
            s.otlp.url(),
            "--wal-max-bytes".into(),
            max_bytes.clone(),
        ],
    );
    exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    exporter.wait_caught_up("text", s.data.end_ms(), LIMIT);
    let cpu = eventually(
        "the broken resource failing",
        LIMIT,
        || {
            let st = exporter.status()?;
            condition(st.get("e2e/broken-query")?, "QueryHealthy").filter(|c| c.0 == "False")?;
            st.get("e2e/cpu").cloned()
        },
        || exporter.log_tail(),
    );
    let status_watermark = watermark_ms(&cpu).unwrap() as f64 / 1000.0;

    // The gauges refresh periodically: wait for a scrape that has seen the delivered state.
    let wm = [("exporter", "e2e/cpu")];
    let scrape = eventually(
        "gauges reflecting the delivered WAL",
        LIMIT,
        || {
            let sc = Scrape::get(exporter.metrics_port);
            let settled = sc.sum(m::WAL_RECORDS, &[]) == Some(0.0)
                && sc.sum(m::WATERMARK, &wm) == Some(status_watermark)
                && sc.sum(m::EXPORTERS, &[("state", "failing")]) == Some(1.0);
            settled.then_some(sc)
        },
        || {
            format!(
                "{}\n{}",
                Scrape::get(exporter.metrics_port).text,
                exporter.log_tail()
            )
        },
    );
    eprintln!("{}", scrape.text);

    // Every family is exported, with its declared type.
    for def in ALL {
        let kind = match def.kind {
            m::Kind::Counter => "counter",
            m::Kind::Gauge => "gauge",
            m::Kind::Histogram => "histogram",
        };
        assert_eq!(
            scrape.types.get(def.name).map(String::as_str),
            Some(kind),
            "{} missing or of the wrong type:\n{}",
            def.name,
            scrape.text
        );
    }

    // Queries, rows and samples against the oracle.
    let expected = s.data.expected().len() as f64;
    let windows = s.data.windows as f64;
    assert_eq!(scrape.value(m::SAMPLES_PRODUCED, &wm), expected);
    assert_eq!(scrape.value(m::ROWS_READ, &wm), expected);
    let ok = [("exporter", "e2e/cpu"), ("outcome", "ok")];
    // A window that completes during the test adds a query with no rows.
    assert!(scrape.value(m::QUERIES, &ok) >= windows);
    let count = format!("{}_count", m::QUERY_DURATION);
    assert_eq!(scrape.value(&count, &wm), scrape.value(m::QUERIES, &wm));
    let inf = [("exporter", "e2e/cpu"), ("le", "+Inf")];
    let bucket = format!("{}_bucket", m::QUERY_DURATION);
    assert_eq!(scrape.value(&bucket, &inf), scrape.value(&count, &wm));
    let broken = [("exporter", "e2e/broken-query")];
    // Present from the exporter's start, at 0: no query of it ever succeeded.
    assert_eq!(
        scrape.sum(
            m::QUERIES,
            &[("exporter", "e2e/broken-query"), ("outcome", "ok")]
        ),
        Some(0.0)
    );
    assert!(scrape.value(m::QUERIES, &broken) >= 1.0);
    let skipped = [("exporter", "e2e/text"), ("reason", "non_numeric_value")];
    assert_eq!(scrape.value(m::SAMPLES_SKIPPED, &skipped), expected);

    // Watermark and lag.
    let lag = scrape.value(m::WATERMARK_LAG, &wm);
    let now = now_ms() as f64 / 1000.0;
    assert!(
        lag >= 0.0 && lag <= now - status_watermark + 1.0,
        "lag {lag} with watermark {status_watermark} at {now}"
    );
    // Its start is stored as its watermark before the first query (so a failing first window is
    // retried, not skipped: schedule::exporter::resume_point), and stays there while it fails.
    assert_eq!(
        scrape.sum(m::WATERMARK, &broken),
        Some(start as f64 / 1000.0),
        "the start, nothing past it"
    );

    // Exporters by state.
    for (state, n) in [
        ("active", 2.0),
        ("failing", 1.0),
        ("skipped_criteria", 1.0),
        ("invalid", 1.0),
        ("not_owned", 0.0),
    ] {
        assert_eq!(
            scrape.value(m::EXPORTERS, &[("state", state)]),
            n,
            "{state}"
        );
    }

    // The WAL after delivery.
    assert_eq!(scrape.value(m::WAL_RECORDS, &[]), 0.0);
    assert_eq!(scrape.value(m::WAL_OLDEST_RECORD_AGE, &[]), 0.0);
    assert_eq!(
        scrape.value(m::WAL_MAX_BYTES, &[]),
        max_bytes.parse::<f64>().unwrap()
    );
    assert!(scrape.value(m::WAL_FILE_BYTES, &[]) > 0.0);
    assert!(scrape.value(m::WAL_VOLUME_FREE_BYTES, &[]) > 0.0);
    let otlp = [("output", "otlp")];
    assert_eq!(scrape.value(m::WAL_DEAD_LETTERS, &otlp), 1.0);
    let backlog = [("exporter", "e2e/cpu"), ("output", "otlp")];
    assert_eq!(scrape.value(m::BACKLOG_WINDOWS, &backlog), 0.0);

    // Pushes against the sink's script: one retry, one dead letter, three rejected points.
    assert_eq!(scrape.value(m::PUSH_RETRIES, &otlp), 1.0);
    let dead = [("output", "otlp"), ("reason", "rejected")];
    assert_eq!(scrape.value(m::DEAD_LETTERS, &dead), 1.0);
    assert_eq!(scrape.value(m::POINTS_REJECTED, &otlp), 3.0);
    assert_eq!(
        scrape.value(m::PUSHES, &[("output", "otlp"), ("status", "4xx")]),
        2.0
    );
    let delivered = scrape.value(
        m::PUSHES,
        &[("output", "otlp"), ("outcome", "ok"), ("status", "2xx")],
    );
    assert!(delivered >= 2.0 * windows - 1.0, "{delivered}");
    let pushes = format!("{}_count", m::PUSH_DURATION);
    assert_eq!(scrape.value(&pushes, &otlp), scrape.value(m::PUSHES, &otlp));
    // Both data exporters' samples, less the dead-lettered window (three hosts).
    assert_eq!(scrape.value(m::SAMPLES_PUSHED, &otlp), 2.0 * expected - 3.0);

    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(scrape.value(m::BUILD_INFO, &version), 1.0);

    // The probes on the health port.
    assert_eq!(http_get(exporter.health_port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(exporter.health_port, "/healthz").unwrap().0, 200);
    exporter.assert_running();
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
}

#[test]
fn a_wal_held_by_another_process_fails_start_up_clearly() {
    let s = Setup::new();
    s.write_good();
    let outputs = ["--otlp-endpoint".to_owned(), s.otlp.url()];
    let mut first = Exporter::start(s.work.path(), &s.kusto.url, &s.manifests(), &outputs);
    first.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    assert_eq!(http_get(first.health_port, "/readyz").unwrap().0, 200);

    let second = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["run", "--manifests"])
        .arg(s.manifests())
        .arg("--kusto-endpoint")
        .arg(format!("memory={}", s.kusto.url))
        .args(["--kusto-auth", "none", "--otlp-endpoint", &s.otlp.url()])
        .arg("--wal-dir")
        .arg(&first.wal_dir)
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--health-probe-port", &free_port().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    eprintln!("{stderr}");
    assert!(!second.status.success(), "{stderr}");
    let text = stderr.to_lowercase();
    assert!(
        text.contains("wal") && (text.contains("another") || text.contains("already open")),
        "the error must say the WAL is held elsewhere: {stderr}"
    );
    first.assert_running();
}

/// The binary run with a chosen environment and log format, stderr kept in a file.
struct Run {
    child: Option<Child>,
    stderr: PathBuf,
    wal_dir: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Run {
    fn start(s: &Setup, auth: &str, log_format: &str, rust_log: &str) -> Run {
        let wal_dir = s.work.path().join("wal");
        let stderr = s.work.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
            .args(["run", "--manifests"])
            .arg(s.manifests())
            .arg("--kusto-endpoint")
            .arg(format!("memory={}", s.kusto.url))
            .args(["--kusto-auth", auth, "--otlp-endpoint", &s.otlp.url()])
            .arg("--wal-dir")
            .arg(&wal_dir)
            .args(["--log-format", log_format])
            .args(["--metrics-port", &free_port().to_string()])
            .args(["--health-probe-port", &free_port().to_string()])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Run {
            child: Some(child),
            stderr,
            wal_dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn status_of(&self, key: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.wal_dir.join("status.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get(key).cloned()
    }

    /// Waits until `cpu` is delivered up to `end_ms` and `broken-query` has failed, then SIGTERMs.
    fn run_until_done(&mut self, end_ms: i64) {
        eventually(
            "cpu delivered and broken-query failing",
            LIMIT,
            || {
                let cpu = self.status_of("e2e/cpu")?;
                let done =
                    watermark_ms(&cpu).is_some_and(|w| w >= end_ms) && backlog_windows(&cpu) == 0;
                let broken = self.status_of("e2e/broken-query")?;
                let failed = condition(&broken, "QueryHealthy").is_some_and(|c| c.0 == "False");
                (done && failed).then_some(())
            },
            || self.log(),
        );
        let mut c = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = c.wait().unwrap();
        assert!(status.success(), "exit {status:?}\n{}", self.log());
    }
}

fn write_token(dir: &Path, token: &str) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    format!("token-file:{}", path.display())
}

#[test]
fn a_kusto_token_never_appears_in_the_logs_even_at_trace() {
    let s = Setup::new();
    let start = s.data.first_start_ms;
    s.write_good();
    s.write(
        "broken.yaml",
        &resource_yaml("broken-query", "1m", start, BROKEN_BODY),
    );
    let token = "eyJTOPSECRET.kusto-token-7f3a9c.do-not-log";
    let auth = write_token(s.work.path(), token);
    let mut run = Run::start(&s, &auth, "text", "trace");
    run.run_until_done(s.data.end_ms());
    let log = run.log();
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("hyper_util")),
        "trace logging of the HTTP client is on:\n{log}"
    );
    assert!(
        log.contains("window appended"),
        "the run queried windows:\n{log}"
    );
    for secret in [token, "kusto-token-7f3a9c", "TOPSECRET"] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(hits.is_empty(), "{secret} logged:\n{}", hits.join("\n"));
    }
}

/// The object holding the window fields of a JSON log line: the event itself or its span.
fn window_fields(line: &serde_json::Value) -> Option<&serde_json::Value> {
    if line.get("window_start").is_some() {
        return Some(line);
    }
    line.get("span").filter(|s| s.get("window_start").is_some())
}

#[test]
fn json_logs_parse_and_window_lines_carry_exporter_and_window() {
    let s = Setup::new();
    let start = s.data.first_start_ms;
    s.write_good();
    s.write(
        "broken.yaml",
        &resource_yaml("broken-query", "1m", start, BROKEN_BODY),
    );
    let mut run = Run::start(&s, "none", "json", "adxexporter=debug");
    run.run_until_done(s.data.end_ms());
    let log = run.log();
    let mut window_lines: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let message = v["message"].as_str().unwrap_or_default();
        let about_a_window = message.contains("window") || message.contains("delivered");
        match window_fields(&v) {
            Some(f) => {
                for field in ["exporter", "window_start", "window_end"] {
                    assert!(f.get(field).is_some(), "{field} missing: {line}");
                }
                *window_lines.entry(message.to_owned()).or_default() += 1;
            }
            None => assert!(
                !about_a_window || message.starts_with("shutdown grace over"),
                "a line about a window without its fields: {line}"
            ),
        }
    }
    for expected in ["window appended", "delivered"] {
        assert!(
            window_lines.keys().any(|k| k.starts_with(expected)),
            "no {expected:?} line with window fields: {window_lines:?}\n{log}"
        );
    }
    assert!(
        window_lines.keys().any(|k| k.starts_with("window failed")),
        "the broken query's failure is logged with its window: {window_lines:?}"
    );
}

/// Label pairs a series must have.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// Dashboards and alerts never read "no data" from a healthy instance: a fresh one with no
/// resources at all (and Kusto and the output unreachable) already has every family of `ALL` in
/// `/metrics` with its type, and the series whose labels start-up knows, at 0.
#[test]
fn a_fresh_instance_with_no_resources_exports_every_family() {
    let work = tempfile::Builder::new()
        .prefix("adxexporter-families-")
        .tempdir()
        .unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut exporter = Exporter::start(
        work.path(),
        &closed,
        &manifests,
        &["--otlp-endpoint".into(), format!("{closed}/v1/metrics")],
    );
    exporter.wait_listening(LIMIT);
    let missing = |sc: &Scrape| -> Vec<&str> {
        ALL.iter()
            .filter(|def| {
                let kind = match def.kind {
                    m::Kind::Counter => "counter",
                    m::Kind::Gauge => "gauge",
                    m::Kind::Histogram => "histogram",
                };
                sc.types.get(def.name).map(String::as_str) != Some(kind)
            })
            .map(|def| def.name)
            .collect()
    };
    // The series start-up knows: the output's (touched by its drain loop), the WAL's (the gauge
    // task) and the process's.
    let otlp_ok: &[(&str, &str)] = &[("output", "otlp"), ("outcome", "ok"), ("status", "2xx")];
    let status_patch_ok: &[(&str, &str)] = &[
        ("verb", "patch"),
        ("resource", "metricsexporters/status"),
        ("code", "200"),
    ];
    let version: &[(&str, &str)] = &[("version", env!("CARGO_PKG_VERSION"))];
    let expected: Vec<(&str, Labels, f64)> = vec![
        (m::PUSHES, otlp_ok, 0.0),
        (
            m::DEAD_LETTERS,
            &[("output", "otlp"), ("reason", "rejected")],
            0.0,
        ),
        (m::PUSH_RETRIES, &[("output", "otlp")], 0.0),
        ("adxexporter_exporter_restarts_total", &[], 0.0),
        (m::STATUS_PATCHES, &[("outcome", "rejected")], 0.0),
        (m::STATUS_PRUNED, &[], 0.0),
        (m::STATUS_PATCH_BACKLOG, &[], 0.0),
        (m::KUBE_EVENTS, &[("outcome", "dropped")], 0.0),
        (m::KUBE_REQUESTS, status_patch_ok, 0.0),
        (m::EXPORTERS, &[("state", "active")], 0.0),
        (m::WAL_RECORDS, &[], 0.0),
        (m::BUILD_INFO, version, 1.0),
        ("adxexporter_tls_insecure_skip_verify", &[], 0.0),
    ];
    let scrape = eventually(
        "every family and the series start-up knows in /metrics",
        LIMIT,
        || {
            let sc = Scrape::get(exporter.metrics_port);
            let complete = missing(&sc).is_empty()
                && (expected.iter()).all(|(name, labels, _)| sc.sum(name, labels).is_some());
            complete.then_some(sc)
        },
        || {
            let sc = Scrape::get(exporter.metrics_port);
            format!(
                "missing: {:?}\n{}\n{}",
                missing(&sc),
                sc.text,
                exporter.log_tail()
            )
        },
    );
    for (name, labels, value) in &expected {
        assert_eq!(
            scrape.sum(name, labels),
            Some(*value),
            "{name}{labels:?}:\n{}",
            scrape.text
        );
    }
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
}
