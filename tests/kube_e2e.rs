//! End to end in Kubernetes mode: the real `adxexporter run` binary (no `--manifests`, `KUBECONFIG`
//! pointing at the in-process fake API server of `tests/kube_support`) against duckdb-kql with live data,
//! a real Prometheus and the Python OTLP sink. Resources are created, edited and deleted through the
//! fake; the tests read what arrived at the receivers and the status the binary patched.
//!
//! Live data (`Live` table): one row every 10 s for series `s1`…`s8`, from two hours before start-up to
//! two hours after, with `V = (unix_seconds / 10) % 100000 + series * 0.25`, so every sample's exact value
//! follows from its timestamp. Every resource has a 10 s interval and exports one series as metric
//! `kt_<name>{Series}`, stamped with the window start.

mod common;
mod kube_support;
mod sink_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Peer, free_port};
use kube_support::{FakeApi, exporter};
use serde_json::{Value, json};
use sink_support::{get_json, otlp_points, otlp_sink, received};

const INTERVAL_MS: i64 = 10_000;
/// Longest wait for any one expected outcome.
const DEADLINE: Duration = Duration::from_secs(45);
const NS: &str = "team-a";
/// How long after a delete a window may still start being queried (the DELETED event in flight).
const DELETE_SLACK_MS: i64 = 2_000;

const LIVE_SQL: &str = "CREATE TABLE Live AS
SELECT make_timestamp(b * 1000000) AS Timestamp,
       's' || h AS Series,
       ((b // 10) % 100000 + h * 0.25)::DOUBLE AS V
FROM (SELECT (epoch_us(now()) // 60000000) * 60 + s AS b FROM range(-7200, 7200, 10) t(s)) q,
     range(1, 9) v(h);
";

/// The value the data holds for `series` at window start `t_ms`.
fn expected_value(series: u32, t_ms: i64) -> f64 {
    ((t_ms / 1000 / 10) % 100_000) as f64 + f64::from(series) * 0.25
}

fn now_ms() -> i64 {
    sink_support::now_ms()
}

/// Start of the 10 s window holding `ms`.
fn floor_window(ms: i64) -> i64 {
    ms - ms.rem_euclid(INTERVAL_MS)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

fn kql() -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sql");
    std::fs::write(&path, LIVE_SQL).unwrap();
    let peer = common::duckdb_kql(&path);
    drop(dir); // duckdb-kql has read the init file once it is ready
    peer
}

/// A resource exporting `series` as `kt_<name>{Series}` from `start_ms` on.
fn live_spec(name: &str, series: u32, start_ms: i64) -> Value {
    json!({
        "database": "memory",
        "interval": "10s",
        "startTime": rfc3339(start_ms),
        "body": format!(
            "Live\n| where Timestamp between (_startTime .. _endTime)\n| where Series == \"s{series}\"\n| project Timestamp, V, Series"
        ),
        "transform": {
            "defaultMetricName": format!("kt_{name}"),
            "valueColumns": ["V"],
            "timestampColumn": "Timestamp",
            "labelColumns": ["Series"],
        },
    })
}

/// One `adxexporter run` process in Kubernetes mode; killed on drop.
struct Exporter {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    label: String,
    /// Port of `/metrics`.
    metrics_port: u16,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Outputs<'a> {
    kql: &'a Peer,
    prometheus: &'a Peer,
    otlp: &'a Peer,
}

impl Exporter {
    /// Starts the binary against `api_url` with its own kubeconfig, the given WAL dir and `extra` flags.
    fn start(
        label: &str,
        api_url: &str,
        wal_dir: &Path,
        out: &Outputs,
        extra: &[&str],
    ) -> Exporter {
        Exporter::start_with(
            label,
            api_url,
            wal_dir,
            &out.kql.url,
            &format!("{}/api/v1/write", out.prometheus.url),
            &format!("{}/v1/metrics", out.otlp.url),
            extra,
        )
    }

    /// Starts the binary with no live peer at all: Kusto and both outputs are a closed port, so
    /// a due window fails its query and nothing is ever pushed.
    fn start_alone(label: &str, api_url: &str, wal_dir: &Path, extra: &[&str]) -> Exporter {
        let closed = format!("http://127.0.0.1:{}", free_port());
        Exporter::start_with(
            label,
            api_url,
            wal_dir,
            &closed,
            &format!("{closed}/api/v1/write"),
            &format!("{closed}/v1/metrics"),
            extra,
        )
    }

    fn start_with(
        label: &str,
        api_url: &str,
        wal_dir: &Path,
        kusto: &str,
        remote_write: &str,
        otlp: &str,
        extra: &[&str],
    ) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        FakeApi::write_kubeconfig(api_url, &kubeconfig);
        let log = dir.path().join("adxexporter.log");
        let file = std::fs::File::create(&log).unwrap();
        let metrics_port = free_port();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--kusto-endpoint".into(),
            format!("memory={kusto}"),
            "--kusto-auth".into(),
            "none".into(),
            "--remote-write-endpoint".into(),
            remote_write.into(),
            "--otlp-endpoint".into(),
            otlp.into(),
            "--wal-dir".into(),
            wal_dir.display().to_string(),
            "--metrics-port".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--health-probe-port".into(),
            format!("127.0.0.1:{}", free_port()),
            "--cluster-labels".into(),
            "region=test".into(),
            "--shutdown-grace".into(),
            "5s".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let child = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("ADXEXPORTER_MANIFESTS")
            // The pod name comes from the flags only: a host name ending in -<n> would make the
            // instance follow a StatefulSet.
            .env_remove("HOSTNAME")
            .env_remove("ADXEXPORTER_POD_NAME")
            .env_remove("ADXEXPORTER_REPLICAS")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start adxexporter");
        Exporter {
            child,
            log,
            _dir: dir,
            label: label.to_owned(),
            metrics_port,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "adxexporter {} exited with {status}; its log:\n{}",
                self.label,
                self.log_text()
            );
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                assert!(
                    s.success(),
                    "{} exited with {s}:\n{}",
                    self.label,
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM:\n{}",
                self.label,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Polls `probe` every 200 ms until it returns `Some`; fails after [`DEADLINE`] or if an exporter died.
async fn eventually<T, F, Fut>(what: &str, exporters: &mut [&mut Exporter], mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        for e in exporters.iter_mut() {
            e.assert_running();
        }
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = exporters
                .iter()
                .map(|e| format!("--- {} ---\n{}", e.label, e.log_text()))
                .collect();
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every sample of metric `kt_<name>` in Prometheus: labels (without `__name__`) → [(ms, value)].
async fn prom_series(
    prom: &Peer,
    name: &str,
) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
    let v = get_json(
        &format!("{}/api/v1/query", prom.url),
        &[("query", &format!("kt_{name}[3h]"))],
    )
    .await;
    assert_eq!(v["status"], "success", "{v}");
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array().unwrap() {
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(r["metric"].clone()).unwrap();
        labels.remove("__name__");
        let samples = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let ms = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (ms, sink_support::parse_prom_float(p[1].as_str().unwrap()))
            })
            .collect();
        out.insert(labels, samples);
    }
    out
}

/// All sample timestamps of `kt_<name>` in Prometheus, checking each value against the data.
async fn prom_windows(prom: &Peer, name: &str, series: u32) -> BTreeSet<i64> {
    let mut all = BTreeSet::new();
    for (labels, samples) in prom_series(prom, name).await {
        assert_eq!(
            labels.get("Series").map(String::as_str),
            Some(&*format!("s{series}"))
        );
        for (ms, v) in samples {
            assert_eq!(v, expected_value(series, ms), "kt_{name} at {ms}");
            assert_eq!(
                ms,
                floor_window(ms),
                "samples are stamped with the window start"
            );
            all.insert(ms);
        }
    }
    all
}

/// Window starts of `kt_<name>` that reached one OTLP sink (each value checked).
async fn otlp_windows(sink: &Peer, name: &str, series: u32) -> Vec<i64> {
    let records = received(sink).await;
    let mut out = Vec::new();
    for (metric, attrs, t_ns, v) in otlp_points(&records) {
        if metric == format!("kt_{name}") {
            assert!(
                attrs.contains(&("Series".to_owned(), format!("s{series}"))),
                "{attrs:?}"
            );
            let ms = (t_ns / 1_000_000) as i64;
            assert_eq!(v, expected_value(series, ms));
            out.push(ms);
        }
    }
    out
}

/// The stored status, if it has a watermark and `Ready=True`: (watermark ms, observedGeneration).
fn ready_status(api: &FakeApi, name: &str) -> Option<(i64, Option<i64>)> {
    let o = api.get(NS, name)?;
    let status = &o["status"];
    let wm = status["watermark"].as_str()?;
    let ready = status["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return None;
    }
    let wm: jiff::Timestamp = wm.parse().ok()?;
    Some((wm.as_millisecond(), status["observedGeneration"].as_i64()))
}

/// The stored status watermark (ms), whatever the conditions say.
fn watermark(api: &FakeApi, name: &str) -> Option<i64> {
    let o = api.get(NS, name)?;
    let wm: jiff::Timestamp = o["status"]["watermark"].as_str()?.parse().ok()?;
    Some(wm.as_millisecond())
}

/// Prometheus that stores replayed (out-of-order) samples within 30 min: after a rescale the new owner
/// resumes from the status watermark, which may lag the old owner's WAL by a few windows (allowed
/// duplicates), and plain Prometheus would reject those with 400 and make delivery look unhealthy.
fn prometheus_accepting_replays() -> Peer {
    common::prometheus_with_config(
        "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\nscrape_configs: []\n",
    )
}

/// Asserts `windows` is exactly the contiguous run `first, first+10s, …, last`.
fn assert_contiguous(what: &str, windows: &BTreeSet<i64>, first: i64, last: i64) {
    let want: BTreeSet<i64> = (0..)
        .map(|i| first + i * INTERVAL_MS)
        .take_while(|t| *t <= last)
        .collect();
    let missing: Vec<_> = want.difference(windows).collect();
    assert!(
        missing.is_empty(),
        "{what}: windows missing: {missing:?} (have {windows:?})"
    );
}

/// Prometheus windows of `kt_<name>` once they cover `first..=last` (else `None`, to poll again).
async fn prom_covers(
    prom: &Peer,
    name: &str,
    series: u32,
    first: i64,
    last: i64,
) -> Option<BTreeSet<i64>> {
    let w = prom_windows(prom, name, series).await;
    let want = (0..)
        .map(|i| first + i * INTERVAL_MS)
        .take_while(|t| *t <= last);
    want.into_iter().all(|t| w.contains(&t)).then_some(w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_edit_delete_and_criteria_in_kubernetes_mode() {
    let (kql, prometheus, otlp) = (kql(), common::prometheus(), otlp_sink());
    let out = Outputs {
        kql: &kql,
        prometheus: &prometheus,
        otlp: &otlp,
    };
    let api = FakeApi::start().await;
    let wal = tempfile::tempdir().unwrap();
    let start = floor_window(now_ms()) - 6 * INTERVAL_MS;

    // `a` also has a criteriaExpression (CEL) that matches --cluster-labels region=test.
    let mut a = live_spec("a", 1, start);
    a["criteriaExpression"] = json!("region.startsWith('te') && !(region in ['mars'])");
    api.create(exporter(NS, "a", a));
    api.create(exporter(NS, "gone", live_spec("gone", 2, start)));
    let mut elsewhere = live_spec("elsewhere", 3, start);
    elsewhere["criteria"] = json!({ "region": ["mars"] });
    api.create(exporter(NS, "elsewhere", elsewhere));
    let mut cel_elsewhere = live_spec("celsewhere", 4, start);
    cel_elsewhere["criteriaExpression"] = json!("region == 'mars'");
    api.create(exporter(NS, "celsewhere", cel_elsewhere));
    // Names a label this instance lacks: not run, and visible in the status.
    let mut cel_broken = live_spec("celbroken", 5, start);
    cel_broken["criteriaExpression"] = json!("zone == 'a'");
    api.create(exporter(NS, "celbroken", cel_broken));

    let mut ex = Exporter::start("replica", &api.url, wal.path(), &out, &[]);

    // Created: the six past windows arrive with exact values; status has the watermark and Ready.
    let (wm, generation) = eventually(
        "status of `a`: Ready, watermark past the backfill",
        &mut [&mut ex],
        || async { ready_status(&api, "a").filter(|(wm, _)| *wm >= start + 6 * INTERVAL_MS) },
    )
    .await;
    assert_eq!(generation, Some(1));
    let windows = eventually(
        "`a` in Prometheus up to its watermark",
        &mut [&mut ex],
        || async { prom_covers(&prometheus, "a", 1, start, wm - INTERVAL_MS).await },
    )
    .await;
    assert_eq!(
        windows.first(),
        Some(&start),
        "startTime's window comes first"
    );
    let otlp_a = eventually(
        "`a` at the OTLP sink up to its watermark",
        &mut [&mut ex],
        || async {
            let w = otlp_windows(&otlp, "a", 1).await;
            w.contains(&(wm - INTERVAL_MS)).then_some(w)
        },
    )
    .await;
    assert_eq!(otlp_a.first(), Some(&start));
    assert_contiguous(
        "a at the OTLP sink",
        &otlp_a.iter().copied().collect(),
        start,
        wm - INTERVAL_MS,
    );
    eventually("`gone` exporting", &mut [&mut ex], || async {
        ready_status(&api, "gone")
    })
    .await;
    // `celbroken` cannot be evaluated with these labels: said in the log, not in its status (an
    // instance with a `zone` label may be running it: docs/design.md#criteria).
    let log_path = ex.log.clone();
    eventually(
        "the log to say why `celbroken` does not run",
        &mut [&mut ex],
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move {
                log.lines()
                    .any(|l| {
                        l.contains("celbroken")
                            && l.contains("not run here: spec.criteriaExpression: refers to zone")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let patches_a: Vec<_> = api
        .status_patches()
        .into_iter()
        .filter(|p| p.name == "a")
        .collect();
    assert!(
        patches_a.iter().all(|p| p.code == 200 && p.namespace == NS),
        "{patches_a:?}"
    );
    // A JSON patch whose first operation tests the uid (docs/design.md#status-writers).
    let uid_a = api.get(NS, "a").unwrap()["metadata"]["uid"].clone();
    assert!(
        patches_a.iter().all(
            |p| p.content_type.starts_with("application/json-patch+json")
                && p.body[0] == json!({"op": "test", "path": "/metadata/uid", "value": uid_a})
        ),
        "{patches_a:?}"
    );

    // Edit `a` (new generation, new label) and delete `gone`, then let two windows come due.
    let mut spec = live_spec("a", 1, start);
    spec["body"] = json!(format!(
        "{}\n| extend Edited = \"yes\"",
        spec["body"].as_str().unwrap()
    ));
    spec["transform"]["labelColumns"] = json!(["Series", "Edited"]);
    let edited = api.set_spec(NS, "a", spec);
    assert_eq!(edited["metadata"]["generation"], 2);
    api.delete(NS, "gone");
    let deleted_at = now_ms();
    let deleted_instant = Instant::now();
    let (wm, _) = eventually(
        "`a` at generation 2, two windows past the delete",
        &mut [&mut ex],
        || async {
            ready_status(&api, "a").filter(|(wm, g)| {
                *g == Some(2) && *wm >= floor_window(deleted_at) + 2 * INTERVAL_MS
            })
        },
    )
    .await;
    eventually(
        "`a` in Prometheus up to its new watermark",
        &mut [&mut ex],
        || async { prom_covers(&prometheus, "a", 1, start, wm - INTERVAL_MS).await },
    )
    .await;

    // The edit continued from the watermark: every window exactly once, the new ones with the new label.
    let series = prom_series(&prometheus, "a").await;
    let mut seen = BTreeSet::new();
    for (labels, samples) in &series {
        for (ms, v) in samples {
            assert_eq!(*v, expected_value(1, *ms));
            assert!(
                seen.insert(*ms),
                "window {ms} exported twice (labels {labels:?})"
            );
        }
    }
    assert_contiguous("a after the edit", &seen, start, wm - INTERVAL_MS);
    let edited_windows: Vec<i64> = series
        .iter()
        .filter(|(l, _)| l.get("Edited").is_some_and(|e| e == "yes"))
        .flat_map(|(_, s)| s.iter().map(|(ms, _)| *ms))
        .collect();
    assert!(
        edited_windows.contains(&(wm - INTERVAL_MS)),
        "windows after the edit carry the new label"
    );
    assert!(
        edited_windows.iter().all(|t| *t > start),
        "the edit did not restart from startTime"
    );
    // Prometheus folds identical samples together; the OTLP sink records every delivery.
    let at_otlp = eventually(
        "`a` at the OTLP sink up to its new watermark",
        &mut [&mut ex],
        || async {
            let w = otlp_windows(&otlp, "a", 1).await;
            w.contains(&(wm - INTERVAL_MS)).then_some(w)
        },
    )
    .await;
    let mut once = BTreeSet::new();
    let twice: Vec<i64> = at_otlp
        .iter()
        .copied()
        .filter(|t| !once.insert(*t))
        .collect();
    assert!(
        twice.is_empty(),
        "windows of `a` delivered twice over OTLP: {twice:?}"
    );

    // The delete stopped querying: no window of `gone` that came due after it.
    let gone = prom_windows(&prometheus, "gone", 2).await;
    assert!(gone.contains(&start), "`gone` exported before its delete");
    // A window due within DELETE_SLACK after the delete may already have been in flight.
    let first_forbidden = floor_window(deleted_at + DELETE_SLACK_MS);
    let late: Vec<_> = gone.iter().filter(|t| **t >= first_forbidden).collect();
    assert!(
        late.is_empty(),
        "windows of `gone` queried after its delete: {late:?}"
    );
    let gone_patches_after: Vec<_> = api
        .status_patches()
        .into_iter()
        .filter(|p| p.name == "gone" && p.at > deleted_instant)
        .collect();
    assert!(
        gone_patches_after.len() <= 1,
        "status of `gone` still patched after its delete (one in-flight write allowed): {gone_patches_after:?}"
    );

    // Criteria that do not match --cluster-labels: never queried, never patched.
    assert!(prom_series(&prometheus, "elsewhere").await.is_empty());
    assert!(otlp_windows(&otlp, "elsewhere", 3).await.is_empty());
    assert!(
        api.status_patches().iter().all(|p| p.name != "elsewhere"),
        "`elsewhere` was status-patched"
    );
    assert!(api.get(NS, "elsewhere").unwrap().get("status").is_none());
    // A criteriaExpression that is false here behaves the same; one that cannot be evaluated
    // here is never queried either.
    for (name, series) in [("celsewhere", 4), ("celbroken", 5)] {
        assert!(prom_series(&prometheus, name).await.is_empty(), "{name}");
        assert!(otlp_windows(&otlp, name, series).await.is_empty(), "{name}");
    }
    for name in ["celsewhere", "celbroken"] {
        assert!(
            api.status_patches().iter().all(|p| p.name != name),
            "`{name}` was status-patched"
        );
    }

    // The binary listed and watched cluster-wide, as kube-rs' watcher does.
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.method == "GET"
            && r.path == "/apis/adx-mon.azure.com/v1/metricsexporters"
            && r.query.contains("watch=true")),
        "{requests:?}"
    );
    ex.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_resources_and_a_rescale_loses_no_window() {
    let (kql, prometheus) = (kql(), prometheus_accepting_replays());
    let (sink0, sink1) = (otlp_sink(), otlp_sink());
    let api = FakeApi::start().await;
    let url0 = api.add_client("adxexporter-0").await;
    let url1 = api.add_client("adxexporter-1").await;
    let (wal0, wal1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = floor_window(now_ms()) - 4 * INTERVAL_MS;
    let names: Vec<(String, u32)> = (1..=8).map(|i| (format!("r{i}"), i)).collect();
    for (name, series) in &names {
        api.create(exporter(NS, name, live_spec(name, *series, start)));
    }
    let out0 = Outputs {
        kql: &kql,
        prometheus: &prometheus,
        otlp: &sink0,
    };
    let out1 = Outputs {
        kql: &kql,
        prometheus: &prometheus,
        otlp: &sink1,
    };

    // One replica owns everything.
    let mut solo = Exporter::start(
        "adxexporter-0 (1 replica)",
        &url0,
        wal0.path(),
        &out0,
        &["--replicas", "1", "--pod-name", "adxexporter-0"],
    );
    for (name, _) in &names {
        eventually(
            &format!("{name} past its backfill on one replica"),
            &mut [&mut solo],
            || async { watermark(&api, name).filter(|wm| *wm >= start + 4 * INTERVAL_MS) },
        )
        .await;
    }
    solo.terminate();
    let rescaled_at = now_ms();
    let patches_before = api.status_patches().len();

    // Rescale to two (pod 0 restarts with the new replica count and its WAL; pod 1 is new).
    let mut r0 = Exporter::start(
        "adxexporter-0",
        &url0,
        wal0.path(),
        &out0,
        &["--replicas", "2", "--pod-name", "adxexporter-0"],
    );
    let mut r1 = Exporter::start(
        "adxexporter-1",
        &url1,
        wal1.path(),
        &out1,
        &["--replicas", "2", "--pod-name", "adxexporter-1"],
    );
    // Two windows that came due after the rescale.
    let horizon = floor_window(rescaled_at) + 2 * INTERVAL_MS;
    let mut watermarks = BTreeMap::new();
    for (name, series) in &names {
        let wm = eventually(
            &format!("{name} past the rescale"),
            &mut [&mut r0, &mut r1],
            || async { watermark(&api, name).filter(|wm| *wm >= horizon) },
        )
        .await;
        // No window missing anywhere between startTime and the watermark (duplicates allowed).
        eventually(
            &format!("{name} delivered up to its watermark"),
            &mut [&mut r0, &mut r1],
            || async {
                let mut at_sinks: BTreeSet<i64> = otlp_windows(&sink0, name, *series)
                    .await
                    .into_iter()
                    .collect();
                at_sinks.extend(otlp_windows(&sink1, name, *series).await);
                let all_otlp = (0..)
                    .map(|i| start + i * INTERVAL_MS)
                    .take_while(|t| *t < wm)
                    .all(|t| at_sinks.contains(&t));
                (all_otlp
                    && prom_covers(&prometheus, name, *series, start, wm - INTERVAL_MS)
                        .await
                        .is_some())
                .then_some(())
            },
        )
        .await;
        watermarks.insert(name.clone(), wm);
    }

    // Each resource is processed by exactly one replica: one status writer, one sink for new windows.
    let patches = api.status_patches();
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &patches[patches_before..] {
        owners
            .entry(p.name.clone())
            .or_default()
            .insert(p.client.clone());
    }
    for (name, series) in &names {
        let clients = owners.get(name).cloned().unwrap_or_default();
        assert_eq!(clients.len(), 1, "{name} status-patched by {clients:?}");
        let owner = clients.first().unwrap().as_str();
        let (mine, other) = if owner == "adxexporter-0" {
            (&sink0, &sink1)
        } else {
            (&sink1, &sink0)
        };
        let new_at_owner: Vec<i64> = otlp_windows(mine, name, *series)
            .await
            .into_iter()
            .filter(|t| *t >= floor_window(rescaled_at))
            .collect();
        let new_at_other: Vec<i64> = otlp_windows(other, name, *series)
            .await
            .into_iter()
            .filter(|t| *t >= floor_window(rescaled_at))
            .collect();
        assert!(
            new_at_owner.contains(&(watermarks[name] - INTERVAL_MS)),
            "{name}: its owner {owner}'s sink lacks the newest window: {new_at_owner:?}"
        );
        assert!(
            new_at_other.is_empty(),
            "{name}: windows {new_at_other:?} at the non-owner's sink"
        );
    }
    let mut per_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for c in owners.values().flatten() {
        *per_replica.entry(c.as_str()).or_default() += 1;
    }
    println!("resources per replica after the rescale: {per_replica:?}");
    r0.terminate();
    r1.terminate();
}

/// Control for the harness: the same live data, spec and checks through standalone mode (`--manifests`),
/// which works without the Kubernetes mode, so a failure of the tests above points at Kubernetes mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_standalone_mode_exports_the_live_data_exactly() {
    let (kql, prometheus, otlp) = (kql(), common::prometheus(), otlp_sink());
    let out = Outputs {
        kql: &kql,
        prometheus: &prometheus,
        otlp: &otlp,
    };
    let wal = tempfile::tempdir().unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let start = floor_window(now_ms()) - 6 * INTERVAL_MS;
    let o = exporter(NS, "a", live_spec("a", 1, start));
    std::fs::write(manifests.path().join("a.json"), o.to_string()).unwrap();
    let m = manifests.path().display().to_string();
    // The kubeconfig points nowhere: standalone mode must not use it.
    let mut ex = Exporter::start(
        "standalone",
        "http://127.0.0.1:1",
        wal.path(),
        &out,
        &["--manifests", &m],
    );
    let windows = eventually("backfill", &mut [&mut ex], || async {
        let w = prom_windows(&prometheus, "a", 1).await;
        (w.len() >= 7).then_some(w)
    })
    .await;
    assert_eq!(windows.first(), Some(&start));
    assert_contiguous("a", &windows, start, *windows.last().unwrap());
    let o = eventually("otlp", &mut [&mut ex], || async {
        let w = otlp_windows(&otlp, "a", 1).await;
        (w.len() >= 7).then_some(w)
    })
    .await;
    assert_eq!(o.first(), Some(&start));
    ex.terminate();
}

/// A resource whose first window lies far in the future: no query runs, so its status is stable.
fn idle_spec(name: &str) -> Value {
    live_spec(name, 1, now_ms() + 365 * 24 * 3600 * 1000)
}

/// The `(type, lastTransitionTime)` of every condition of the stored resource.
fn transition_times(api: &FakeApi, name: &str) -> Vec<(String, String)> {
    let o = api.get(NS, name).unwrap();
    (o["status"]["conditions"].as_array().unwrap().iter())
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["lastTransitionTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_patch_unchanged_statuses_or_reset_their_transition_times() {
    let api = FakeApi::start().await;
    let first_url = api.add_client("first").await;
    let second_url = api.add_client("second").await;
    let wal = tempfile::tempdir().unwrap();
    api.create(exporter(NS, "a", idle_spec("a")));
    let mut first = Exporter::start_alone("first", &first_url, wal.path(), &[]);
    eventually("the status of `a`", &mut [&mut first], || async {
        let o = api.get(NS, "a")?;
        let ready = o["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready");
        ready.then_some(())
    })
    .await;
    first.terminate();
    let before = transition_times(&api, "a");

    // A resource created while no instance ran: the restarted one must patch it (so its first
    // status round is done when that patch arrives), and must leave `a` alone.
    api.create(exporter(NS, "b", idle_spec("b")));
    let mut second = Exporter::start_alone("second", &second_url, wal.path(), &[]);
    eventually(
        "the restarted instance to patch `b`",
        &mut [&mut second],
        || async {
            let done = api
                .status_patches()
                .iter()
                .any(|p| p.client == "second" && p.name == "b" && p.code == 200);
            done.then_some(())
        },
    )
    .await;
    // The final round at shutdown has nothing new to say either.
    second.terminate();
    let by_second: Vec<_> = (api.status_patches().into_iter())
        .filter(|p| p.client == "second")
        .collect();
    let names: Vec<&str> = by_second.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.first() == Some(&"b") && names.iter().all(|n| *n == "b"),
        "unchanged `a` patched after a restart: {names:?}"
    );
    // `b` may be patched again when its status moves on (under load its exporter can report after
    // the first round), but never with what it already said.
    for pair in by_second.windows(2) {
        assert_ne!(
            pair[0].body, pair[1].body,
            "`b` patched twice with the same status"
        );
    }
    assert_eq!(transition_times(&api, "a"), before);
    // One list at start-up read the statuses: no GET per resource.
    let gets = (api.requests().into_iter())
        .filter(|r| {
            r.client == "second" && r.method == "GET" && r.path.ends_with("/metricsexporters/a")
        })
        .count();
    assert_eq!(gets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_status_refused_patches_events_and_api_requests_show_in_metrics_and_logs() {
    // adx-mon's CRD is installed: its schema prunes our status fields but keeps conditions.
    let api = FakeApi::start_with(kube_support::FakeOptions {
        pruned_status_fields: vec!["watermark", "lastSuccessfulExecution", "backlog"],
        ..kube_support::FakeOptions::default()
    })
    .await;
    let wal = tempfile::tempdir().unwrap();
    // Migrated from adx-mon: its cursor, two windows ago. Kusto is unreachable, so the first
    // window fails (QueryFailing) and is retried.
    let cursor = rfc3339(floor_window(now_ms()) - 2 * INTERVAL_MS);
    api.create(exporter(NS, "m", live_spec("m", 1, now_ms())));
    api.set_status(
        NS,
        "m",
        json!({"conditions": [{
            "type": "metricsexporter.adx-mon.azure.com/LastSuccessfulExecution",
            "status": "True", "reason": "ExecutionCompleted", "message": cursor,
            "lastTransitionTime": cursor,
        }]}),
    );
    let mut ex = Exporter::start_alone("replica", &api.url, wal.path(), &[]);
    let port = ex.metrics_port;

    // The query failure is an Event on the resource.
    let uid = api.get(NS, "m").unwrap()["metadata"]["uid"].clone();
    let event = eventually("a QueryFailing Event on `m`", &mut [&mut ex], || async {
        (api.events().into_iter())
            .find(|e| e["reason"] == "QueryFailing" && e["regarding"]["name"] == "m")
    })
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["uid"], uid);
    assert_eq!(event["regarding"]["kind"], "MetricsExporter");
    assert_eq!(event["reportingController"], "adxexporter");
    assert!(!event["note"].as_str().unwrap().is_empty(), "{event}");

    // The written watermark (the cursor, written back) was pruned: an ERROR naming the fix, a metric.
    let log_path = ex.log.clone();
    let line = eventually(
        "an ERROR about the pruned watermark",
        &mut [&mut ex],
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move {
                (log.lines())
                    .find(|l| l.contains("dropped status.watermark"))
                    .map(str::to_owned)
            }
        },
    )
    .await;
    assert!(
        line.contains("ERROR") && line.contains("adxexporter crd"),
        "{line}"
    );
    assert!(metric(port, "adxexporter_status_pruned_total", &[]) >= 1.0);
    // ... while adx-mon's cursor condition survives, for a rollback.
    let status = api.get(NS, "m").unwrap()["status"].clone();
    assert!(status.get("watermark").is_none(), "{status}");
    assert!(
        (status["conditions"].as_array().unwrap().iter()).any(|c| c["type"]
            == "metricsexporter.adx-mon.azure.com/LastSuccessfulExecution"
            && c["message"] == cursor.as_str()),
        "{status}"
    );

    // The schema refuses a status: counted as rejected and by its code.
    api.fail_status_patches(Some(422));
    api.create(exporter(NS, "n", idle_spec("n")));
    eventually(
        "the refused patch in the metrics",
        &mut [&mut ex],
        || async {
            let rejected = metric(
                port,
                "adxexporter_status_patches_total",
                &[("outcome", "rejected")],
            );
            let by_code = metric(
                port,
                "adxexporter_kube_requests_total",
                &[
                    ("verb", "patch"),
                    ("resource", "metricsexporters/status"),
                    ("code", "422"),
                ],
            );
            (rejected >= 1.0 && by_code >= 1.0).then_some(())
        },
    )
    .await;
    // Every request kind the instance makes is counted.
    for (verb, resource, code) in [
        ("list", "metricsexporters", "200"),
        ("watch", "metricsexporters", "200"),
        ("patch", "metricsexporters/status", "200"),
        ("create", "events", "201"),
    ] {
        let n = metric(
            port,
            "adxexporter_kube_requests_total",
            &[("verb", verb), ("resource", resource), ("code", code)],
        );
        assert!(n >= 1.0, "{verb} {resource} {code}: {n}");
    }
    assert!(
        metric(
            port,
            "adxexporter_kube_events_total",
            &[("outcome", "created")]
        ) >= 1.0
    );
    ex.terminate();
}

/// The sum of the samples of `name` in the `/metrics` on `port` whose labels include `labels`
/// (0 if none, or no answer).
fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some((200, text)) = common::http_get(port, "/metrics") else {
        return 0.0;
    };
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series, label_text) = match head.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (head, ""),
        };
        let wanted = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        if series == name && wanted {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// The value of an unlabelled gauge on `/metrics` at `port`, once the endpoint answers.
fn gauge(port: u16, name: &str) -> Option<f64> {
    let (code, body) = common::http_get(port, "/metrics")?;
    if code != 200 {
        return None;
    }
    body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// Windows of `kt_<name>` delivered more than once across `sinks` (OTLP records every delivery).
async fn otlp_duplicates(sinks: &[&Peer], name: &str, series: u32) -> Vec<i64> {
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    for sink in sinks {
        for t in otlp_windows(sink, name, series).await {
            *count.entry(t).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(t, _)| t)
        .collect()
}

/// Membership from the cluster: two replicas started without `--replicas` read the count from the
/// StatefulSet and share the resources; the StatefulSet is scaled to 3 and a third replica started:
/// the first two move resources without a restart, every window of every resource arrives, twice
/// only for windows in flight at the move. Then the third replica dies for good: the others count
/// its resources in `adxexporter_exporters_stale` and name them; scaling back to 2 serves them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_statefulset_rescale_without_restart_and_report_unserved_resources() {
    let (kql, prometheus) = (kql(), prometheus_accepting_replays());
    let sinks = [otlp_sink(), otlp_sink(), otlp_sink()];
    let api = FakeApi::start().await;
    let urls = [
        api.add_client("adxexporter-0").await,
        api.add_client("adxexporter-1").await,
        api.add_client("adxexporter-2").await,
    ];
    let wals = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let start = floor_window(now_ms()) - 4 * INTERVAL_MS;
    // Eight resources, and more while none falls to the third replica at the rescale below (the
    // uids are random: with eight alone, about one run in 25 had none move).
    let (mut names, mut uids) = (Vec::<(String, u32)>::new(), BTreeMap::new());
    for series in 1.. {
        let name = format!("f{series}");
        let o = api.create(exporter(NS, &name, live_spec(&name, series, start)));
        let uid = o["metadata"]["uid"].as_str().unwrap().to_owned();
        uids.insert(name.clone(), uid);
        names.push((name, series));
        let third = |(n, _): &(String, u32)| adxexporter::shard::owner(&uids[n], 3) == 2;
        if names.len() >= 8 && names.iter().any(third) {
            break;
        }
    }
    // The StatefulSet in the kubeconfig's namespace (the default of --pod-namespace).
    api.create_statefulset("default", "adxexporter", Some(2));
    let start_pod = |i: usize| {
        let out = Outputs {
            kql: &kql,
            prometheus: &prometheus,
            otlp: &sinks[i],
        };
        let pod = format!("adxexporter-{i}");
        Exporter::start(&pod, &urls[i], wals[i].path(), &out, &["--pod-name", &pod])
    };
    let owner_of = |name: &str, replicas: u32| {
        format!(
            "adxexporter-{}",
            adxexporter::shard::owner(&uids[name], replicas)
        )
    };
    /// Every resource's status patched only by its owner among `replicas`, since patch `from`.
    fn owners(api: &FakeApi, from: usize) -> BTreeMap<String, BTreeSet<String>> {
        let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in &api.status_patches()[from..] {
            owners
                .entry(p.name.clone())
                .or_default()
                .insert(p.client.clone());
        }
        owners
    }

    let mut r0 = start_pod(0);
    let mut r1 = start_pod(1);
    for (name, _) in &names {
        eventually(
            &format!("{name} past its backfill on two replicas"),
            &mut [&mut r0, &mut r1],
            || async { watermark(&api, name).filter(|wm| *wm >= start + 4 * INTERVAL_MS) },
        )
        .await;
    }
    // Both read 2 from the StatefulSet: each resource is patched by its owner of 2 only.
    for (name, clients) in owners(&api, 0) {
        assert_eq!(clients, BTreeSet::from([owner_of(&name, 2)]), "{name}");
    }
    // Nothing stale once each source has seen the statuses the backfill moved (the check runs once a
    // second on the statuses the watch delivered, so it may lag the watermarks read above).
    let live = [r0.metrics_port, r1.metrics_port];
    eventually(
        "no stale resource on either replica after the backfill",
        &mut [&mut r0, &mut r1],
        || async {
            (live.iter())
                .all(|p| gauge(*p, "adxexporter_exporters_stale") == Some(0.0))
                .then_some(())
        },
    )
    .await;

    // Scale to 3 (as `kubectl scale` does), then the new pod starts.
    let status_before: BTreeMap<String, i64> = names
        .iter()
        .map(|(n, _)| (n.clone(), watermark(&api, n).unwrap()))
        .collect();
    let rescaled_at = now_ms();
    api.scale_statefulset("default", "adxexporter", 3);
    let mut r2 = start_pod(2);
    let moved: Vec<&(String, u32)> = names
        .iter()
        .filter(|(n, _)| owner_of(n, 3) == "adxexporter-2")
        .collect();
    assert!(!moved.is_empty(), "some resource moves to the new replica");
    let horizon = floor_window(rescaled_at) + 2 * INTERVAL_MS;
    let patches_at_rescale = api.status_patches().len();
    let mut watermarks = BTreeMap::new();
    for (name, series) in &names {
        let wm = eventually(
            &format!("{name} past the rescale to 3"),
            &mut [&mut r0, &mut r1, &mut r2],
            || async { watermark(&api, name).filter(|wm| *wm >= horizon) },
        )
        .await;
        eventually(
            &format!("{name} delivered up to its watermark"),
            &mut [&mut r0, &mut r1, &mut r2],
            || async {
                let mut at: BTreeSet<i64> = BTreeSet::new();
                for sink in &sinks {
                    at.extend(otlp_windows(sink, name, *series).await);
                }
                let all = (0..)
                    .map(|i| start + i * INTERVAL_MS)
                    .take_while(|t| *t < wm)
                    .all(|t| at.contains(&t));
                (all && prom_covers(&prometheus, name, *series, start, wm - INTERVAL_MS)
                    .await
                    .is_some())
                .then_some(())
            },
        )
        .await;
        watermarks.insert(name.clone(), wm);
    }
    // The first two were not restarted: they followed the StatefulSet.
    for r in [&mut r0, &mut r1] {
        r.assert_running();
        assert!(
            r.log_text().contains("rescaled from 2 to 3 replicas"),
            "{}:\n{}",
            r.label,
            r.log_text()
        );
    }
    // Windows twice only for moved resources, and only those in flight at the move: after the
    // status watermark seen before the scale, before the scale itself.
    let sink_refs: Vec<&Peer> = sinks.iter().collect();
    for (name, series) in &names {
        let twice = otlp_duplicates(&sink_refs, name, *series).await;
        if !moved.iter().any(|(n, _)| n == name) {
            assert!(
                twice.is_empty(),
                "{name} did not move but has duplicates {twice:?}"
            );
        }
        assert!(
            twice
                .iter()
                .all(|t| *t >= status_before[name] - INTERVAL_MS && *t < rescaled_at + INTERVAL_MS),
            "{name}: windows {twice:?} delivered twice outside the move (status watermark {}, scaled at {rescaled_at})",
            status_before[name]
        );
    }
    // After the move each resource is patched by its owner of 3 only.
    let settled = api.status_patches().len();
    let later = floor_window(now_ms()) + 2 * INTERVAL_MS;
    for (name, _) in &names {
        eventually(
            &format!("{name} two more windows on three replicas"),
            &mut [&mut r0, &mut r1, &mut r2],
            || async { watermark(&api, name).filter(|wm| *wm >= later) },
        )
        .await;
    }
    let after = owners(&api, settled);
    for (name, _) in &names {
        assert_eq!(
            after.get(name).cloned().unwrap_or_default(),
            BTreeSet::from([owner_of(name, 3)]),
            "{name} (patches since the rescale: {:?})",
            owners(&api, patches_at_rescale).get(name)
        );
    }

    // The third replica dies and is not restarted; the StatefulSet still says 3. What the survivors
    // logged before (a resource between owners during the rescale may have gone stale then) is not
    // about the dead replica.
    let logged_before = [r0.log_text().len(), r1.log_text().len()];
    r2.child.kill().unwrap();
    let _ = r2.child.wait();
    let ports = [r0.metrics_port, r1.metrics_port];
    let stale = eventually(
        "the surviving replicas to count the dead one's resources as stale",
        &mut [&mut r0, &mut r1],
        || async {
            // Each resource goes stale when its own watermark is 3 intervals old: wait for all.
            let counts = ports.map(|p| gauge(p, "adxexporter_exporters_stale").unwrap_or(0.0));
            (counts.iter().all(|c| *c as usize == moved.len())).then_some(counts)
        },
    )
    .await;
    assert!(
        stale.iter().all(|c| *c as usize == moved.len()),
        "stale counts {stale:?}, resources of the dead replica {}",
        moved.len()
    );
    // The WARN line is written at most once a minute, from the first stale resource on: it names
    // stale resources of the dead replica (not necessarily all of them yet) and no other.
    for (r, before) in [&r0, &r1].into_iter().zip(logged_before) {
        let log = r.log_text();
        let log = String::from_utf8_lossy(&log.as_bytes()[before..]);
        let line = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains("whose watermark no replica has moved"))
            .unwrap_or_else(|| panic!("{} logged no stale resources:\n{log}", r.label));
        assert!(
            moved
                .iter()
                .any(|(name, _)| line.contains(&format!("{NS}/{name},"))
                    || line.contains(&format!("{NS}/{name} "))),
            "{line}"
        );
        for (name, _) in names
            .iter()
            .filter(|(n, _)| !moved.iter().any(|(m, _)| m == n))
        {
            assert!(
                !line.contains(&format!("{NS}/{name} "))
                    && !line.contains(&format!("{NS}/{name},")),
                "{line}"
            );
        }
    }
    // Scaled back to 2, the others take the dead replica's resources over: none stale any more.
    api.scale_statefulset("default", "adxexporter", 2);
    eventually(
        "no stale resource once the StatefulSet is scaled down to the live replicas",
        &mut [&mut r0, &mut r1],
        || async {
            ports
                .iter()
                .all(|p| gauge(*p, "adxexporter_exporters_stale") == Some(0.0))
                .then_some(())
        },
    )
    .await;
    drop(r2);
    r0.terminate();
    r1.terminate();
}
