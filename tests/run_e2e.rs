//! End-to-end proof of the durable run loop (issue #4 item 6): the real `adxexporter run` binary in
//! standalone mode against duckdb-kql (a real KQL engine), Prometheus (a strict remote-write
//! receiver) and the Python OTLP decoder, with crashes, outages and bad resources. Every test
//! generates data relative to its start (Prometheus takes samples up to about an hour old) and
//! compares what the receivers hold with an exact oracle (see `run_support`).

mod common;
mod run_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{duckdb_kql, http_get};
use run_support::*;

/// Bound for every wait on the system under test.
const LIMIT: Duration = Duration::from_secs(90);

struct Setup {
    data: Dataset,
    work: tempfile::TempDir,
    kusto: common::Peer,
    prom: Prometheus,
    otlp: OtlpSink,
}

impl Setup {
    /// Peers loaded with `windows` windows of `interval_s` seconds ending at the last boundary.
    fn new(interval_s: i64, windows: i64) -> Setup {
        let data = Dataset::ending_now(interval_s, windows);
        // E2E_KEEP=1 keeps the work directory (logs, WAL, status) for a look after the run.
        let work = tempfile::Builder::new()
            .prefix("adxexporter-e2e-")
            .disable_cleanup(std::env::var_os("E2E_KEEP").is_some())
            .tempdir()
            .unwrap();
        let init = write_init_sql(work.path(), &data);
        let kusto = duckdb_kql(&init);
        let prom = Prometheus::start();
        let otlp = OtlpSink::start();
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        Setup {
            data,
            work,
            kusto,
            prom,
            otlp,
        }
    }

    fn manifests(&self) -> std::path::PathBuf {
        self.work.path().join("manifests")
    }

    /// Writes the good exporter `cpu` starting at the first data window.
    fn write_good(&self, interval: &str) {
        std::fs::write(
            self.manifests().join("cpu.yaml"),
            resource_yaml("cpu", interval, self.data.first_start_ms, GOOD_BODY),
        )
        .unwrap();
    }

    fn outputs(&self) -> Vec<String> {
        vec![
            "--remote-write-endpoint".into(),
            self.prom.write_url(),
            "--otlp-endpoint".into(),
            self.otlp.url(),
        ]
    }

    fn start(&self) -> Exporter {
        self.start_with(&[])
    }

    fn start_with(&self, extra: &[&str]) -> Exporter {
        let mut args = self.outputs();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Exporter::start(self.work.path(), &self.kusto.url, &self.manifests(), &args)
    }
}

/// Test 1: a 35-window backfill arrives exactly, once, at both outputs; status, probes and
/// metrics say so; SIGTERM exits 0.
#[test]
fn backfill_delivers_every_window_exactly() {
    let s = Setup::new(60, 35);
    s.write_good("1m");
    let mut exporter = s.start();

    let status = exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    let expected = s.data.expected();
    assert_eq!(expected.len(), 35 * HOSTS.len());
    assert_eq!(condition(&status, "Ready").unwrap().0, "True", "{status}");
    assert_eq!(
        condition(&status, "QueryHealthy").unwrap().0,
        "True",
        "{status}"
    );
    assert_eq!(
        condition(&status, "DeliveryHealthy").unwrap().0,
        "True",
        "{status}"
    );
    assert_eq!(status["deadLettered"]["windows"], 0, "{status}");

    // A later write keeps the conditions' transition times: nothing flipped.
    let ready_since = |st: &serde_json::Value| {
        st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["lastTransitionTime"].clone())
    };
    exporter.wait_status_write(LIMIT);
    let later = exporter.status_of("cpu").unwrap();
    assert_eq!(ready_since(&later), ready_since(&status), "{later}");

    let (code, _) = http_get(exporter.health_port, "/readyz").unwrap();
    assert_eq!(code, 200);
    let (code, metrics) = http_get(exporter.metrics_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("adxexporter_queries_total"), "{metrics}");
    assert!(
        metrics.contains("adxexporter_samples_pushed_total"),
        "{metrics}"
    );

    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());

    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    let dups = assert_otlp_matches(&points, &expected);
    assert!(
        dups.is_empty(),
        "no fault, yet windows arrived twice: {dups:?}"
    );
    assert_eq!(points.len(), expected.len());
    eprintln!(
        "backfill: {} windows, {} samples, {} OTLP requests",
        s.data.windows,
        expected.len(),
        s.otlp.records().len()
    );
}

/// Extra arrivals per window (a window's points travel in one request, so every host of a window
/// must have arrived equally often); returns window start → arrivals beyond the first.
fn extra_deliveries(points: &[((String, i64), f64)]) -> BTreeMap<i64, usize> {
    let mut per_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for ((_, t), n) in arrivals_per_point(points) {
        per_window.entry(t).or_default().push(n);
    }
    per_window
        .into_iter()
        .filter_map(|(t, counts)| {
            assert!(
                counts.iter().all(|c| *c == counts[0]),
                "window {} arrived unevenly per host: {counts:?}",
                rfc3339(t)
            );
            (counts[0] > 1).then_some((t, counts[0] - 1))
        })
        .collect()
}

/// Data windows whose points reached the OTLP sink so far.
fn otlp_windows(sink: &OtlpSink) -> usize {
    let starts: std::collections::BTreeSet<i64> =
        sink.points().into_iter().map(|((_, t), _)| t).collect();
    starts.len()
}

/// Test 2: SIGKILL at varied moments of an 88-window catch-up, restarting on the same WAL each
/// time. Nothing is missing at either output; Prometheus holds exactly the oracle; the OTLP sink
/// sees at most one extra delivery per kill (one exporter, so at most one window in flight on the
/// OTLP output at a kill); no dead letters.
#[test]
fn kill_during_catch_up_loses_nothing() {
    let s = Setup::new(30, 88);
    s.write_good("30s");
    // E2E_SEED=<n> replays a kill schedule.
    let seed = std::env::var("E2E_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill schedule seed {seed} (E2E_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut exporter = s.start();
    let mut kills = 0;
    let mut kill_points = Vec::new();
    while kills < 10 {
        let before = otlp_windows(&s.otlp);
        if before >= s.data.windows as usize - 8 {
            break;
        }
        if kills % 3 == 2 {
            // Anywhere in the first half second of a run: opening the WAL, resuming, first query.
            std::thread::sleep(Duration::from_millis(rng.u64(0..500)));
        } else {
            // After 1–3 more windows reached OTLP, plus a random moment within the next window.
            let k = rng.usize(1..=3);
            eventually(
                "catch-up progress before the next kill",
                LIMIT,
                || (otlp_windows(&s.otlp) >= before + k).then_some(()),
                || exporter.log_tail(),
            );
            std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
        }
        exporter.assert_running();
        exporter.kill9();
        kills += 1;
        kill_points.push(otlp_windows(&s.otlp));
        exporter.restart();
    }
    assert!(
        kills >= 5,
        "only {kills} kills happened during the catch-up"
    );
    assert!(
        otlp_windows(&s.otlp) < s.data.windows as usize,
        "the catch-up ended before the last kill, so not every kill hit it"
    );

    // A clean stop in the middle of the catch-up: querying stops, what was appended is pushed
    // (both receivers are up), exit 0; then the catch-up continues from the watermark. (Once its
    // port listens the process handles SIGTERM; before that, during exec, nothing can.)
    exporter.wait_listening(LIMIT);
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let at_term = exporter.status_of("cpu").unwrap();
    assert_eq!(
        backlog_windows(&at_term),
        0,
        "drained at SIGTERM: {at_term}"
    );
    let term_watermark = watermark_ms(&at_term).unwrap();
    assert!(
        term_watermark < s.data.end_ms(),
        "the SIGTERM was meant to land during the catch-up: {at_term}"
    );
    exporter.restart();

    let status = exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    assert_eq!(status["deadLettered"]["windows"], 0, "{status}");
    assert_eq!(condition(&status, "Ready").unwrap().0, "True", "{status}");
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());

    let expected = s.data.expected();
    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    assert_otlp_matches(&points, &expected);
    let extra = extra_deliveries(&points);
    let total_extra: usize = extra.values().sum();
    eprintln!(
        "kill: {} windows, {kills} kills (OTLP windows seen at each: {kill_points:?}), SIGTERM at {}, re-delivered at OTLP: {:?}",
        s.data.windows,
        rfc3339(term_watermark),
        extra.keys().map(|t| rfc3339(*t)).collect::<Vec<_>>()
    );
    assert!(
        total_extra <= kills,
        "{total_extra} extra OTLP deliveries for {kills} kills: {extra:?}"
    );
}

/// Test 3: the OTLP receiver is down for part of the catch-up. Remote write keeps flowing to the
/// end meanwhile; the OTLP backlog shows in status; after the receiver returns on the same port
/// every window arrives, with at most one re-delivery (the request it died answering).
#[test]
fn receiver_outage_grows_backlog_then_recovers() {
    let mut s = Setup::new(30, 88);
    s.write_good("30s");
    let mut exporter = s.start();
    eventually(
        "a few windows at OTLP before the outage",
        LIMIT,
        || (otlp_windows(&s.otlp) >= 5).then_some(()),
        || exporter.log_tail(),
    );
    s.otlp.stop();
    let delivered_before = otlp_windows(&s.otlp);
    let expected = s.data.expected();

    // Remote write reaches the end while OTLP is down.
    eventually(
        "Prometheus to hold every window while OTLP is down",
        LIMIT,
        || (prometheus_samples(s.prom.port).len() == expected.len()).then_some(()),
        || exporter.log_tail(),
    );
    assert_prometheus_matches(s.prom.port, &expected);
    let missing_at_otlp = s.data.windows as u64 - delivered_before as u64;
    let down = eventually(
        "status to show the OTLP backlog",
        LIMIT,
        || {
            exporter.status_of("cpu").filter(|st| {
                watermark_ms(st).is_some_and(|w| w >= s.data.end_ms())
                    && backlog_windows(st) >= missing_at_otlp
                    && condition(st, "DeliveryHealthy").is_some_and(|c| c.0 == "False")
            })
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    let backlog_down = backlog_windows(&down);
    assert!(backlog_down < u64::MAX);
    let last_ok = down["lastSuccessfulExecution"].as_str().unwrap();
    let last_ok_ms = adxexporter::time::Ticks::parse(last_ok)
        .unwrap()
        .unix_millis();
    assert!(
        last_ok_ms < s.data.end_ms(),
        "lastSuccessfulExecution must stay behind while OTLP is down: {down}"
    );
    assert_eq!(down["deadLettered"]["windows"], 0, "{down}");
    // The failing output is named, with its error, while nothing is dropped.
    let (_, reason, message) = condition(&down, "DeliveryHealthy").unwrap();
    assert_eq!(reason, "DeliveryRetrying", "{down}");
    assert!(message.contains("otlp"), "{message}");
    assert_eq!(condition(&down, "Ready").unwrap().0, "False", "{down}");
    eprintln!("while OTLP is down: {message}");
    exporter.assert_running();

    s.otlp.restart();
    let status = exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    assert_eq!(
        condition(&status, "DeliveryHealthy").unwrap().0,
        "True",
        "{status}"
    );
    assert_eq!(condition(&status, "Ready").unwrap().0, "True", "{status}");
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());

    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    assert_otlp_matches(&points, &expected);
    let extra = extra_deliveries(&points);
    eprintln!(
        "outage: {} windows, OTLP down after {delivered_before}, backlog while down {backlog_down}, re-delivered {extra:?}",
        s.data.windows
    );
    assert!(extra.values().sum::<usize>() <= 1, "{extra:?}");
}

/// Test 4: an invalid resource and one whose query Kusto rejects sit beside a good one: the good
/// one delivers everything, the others are visible in status, the process keeps running.
#[test]
fn bad_resources_stay_visible_and_never_stop_the_good_one() {
    let s = Setup::new(60, 10);
    s.write_good("1m");
    std::fs::write(
        s.manifests().join("zero.yaml"),
        resource_yaml("zero-interval", "0s", s.data.first_start_ms, GOOD_BODY),
    )
    .unwrap();
    std::fs::write(
        s.manifests().join("broken.yaml"),
        resource_yaml(
            "broken-query",
            "1m",
            s.data.first_start_ms,
            "Samples
| where Timestamp between (_startTime .. _endTime)
| summarize V = avg(NoSuchColumn) by Host
| extend Timestamp = _startTime",
        ),
    )
    .unwrap();
    let mut exporter = s.start();
    exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    let (invalid, broken) = eventually(
        "status of the bad resources",
        LIMIT,
        || {
            let st = exporter.status()?;
            let broken = st.get("e2e/broken-query")?.clone();
            condition(&broken, "QueryHealthy").filter(|c| c.0 == "False")?;
            Some((st.get("e2e/zero-interval")?.clone(), broken))
        },
        || format!("{:?}\n{}", exporter.status(), exporter.log_tail()),
    );
    let (ready, reason, message) = condition(&invalid, "Ready").unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "InvalidSpec"),
        "{invalid}"
    );
    assert!(message.contains("interval"), "{message}");
    eprintln!("invalid: {message}");
    let (_, reason, message) = condition(&broken, "QueryHealthy").unwrap();
    assert_eq!(reason, "QueryRejected", "{broken}");
    // duckdb-kql's own error text, passed through.
    assert!(
        message.contains("Referenced column \"NoSuchColumn\" not found"),
        "{message}"
    );
    assert_eq!(condition(&broken, "Ready").unwrap().0, "False", "{broken}");
    // A new exporter's first window is pinned as its watermark before the first query; a failing
    // window holds it there.
    assert_eq!(
        watermark_ms(&broken),
        Some(s.data.first_start_ms),
        "a failing window must hold the watermark at its start: {broken}"
    );
    eprintln!("query rejected: {message}");
    exporter.assert_running();
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());

    let expected = s.data.expected();
    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    let dups = assert_otlp_matches(&points, &expected);
    assert!(dups.is_empty(), "{dups:?}");
}

/// `criteriaExpression` (CEL over `--cluster-labels`, adx-mon compatible): a matching exporter
/// delivers everything, a non-matching one is never queried (no status, no samples), and one whose
/// expression names a label this instance lacks is skipped visibly (status, log, gauge).
#[test]
fn criteria_expression_decides_where_resources_run() {
    let s = Setup::new(60, 6);
    let with_expression = |name: &str, metric: &str, expression: &str| {
        resource_yaml(name, "1m", s.data.first_start_ms, GOOD_BODY)
            .replace(
                "spec:\n",
                &format!("spec:\n  criteriaExpression: {expression}\n"),
            )
            .replace(METRIC, metric)
    };
    let write = |file: &str, text: String| std::fs::write(s.manifests().join(file), text).unwrap();
    write(
        "cpu.yaml",
        with_expression(
            "cpu",
            METRIC,
            "\"region in ['eastus', 'westus'] && env.startsWith('prod')\"",
        ),
    );
    write(
        "elsewhere.yaml",
        with_expression("elsewhere", "e2e_elsewhere", "\"region == 'westus'\""),
    );
    write(
        "typo.yaml",
        with_expression("typo", "e2e_typo", "\"Region == 'eastus'\""),
    );
    let mut exporter = s.start_with(&["--cluster-labels", "region=eastus,env=production"]);

    exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    let typo = eventually(
        "the status of the resource whose expression cannot be evaluated",
        LIMIT,
        || exporter.status_of("typo"),
        || exporter.log_tail(),
    );
    for type_ in ["Ready", "Criteria"] {
        let (status, reason, message) = condition(&typo, type_).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "CriteriaExpressionError"),
            "{typo}"
        );
        assert!(
            message.starts_with("spec.criteriaExpression: refers to Region, which is not a cluster label of this instance (it has: env, region)"),
            "{message}"
        );
    }
    assert!(typo.get("watermark").is_none_or(|w| w.is_null()), "{typo}");
    assert_eq!(
        exporter.status_of("elsewhere"),
        None,
        "a resource meant for other instances gets no status here"
    );
    let log = exporter.log_text();
    assert!(
        log.contains("skipped: criteriaExpression region == 'westus' is false"),
        "{}",
        exporter.log_tail()
    );
    assert!(log.contains("not run here: spec.criteriaExpression: refers to Region"));
    let (_, metrics) = http_get(exporter.metrics_port, "/metrics").unwrap();
    for state in [
        "adxexporter_exporters{state=\"active\"} 1",
        "adxexporter_exporters{state=\"skipped_criteria\"} 1",
        "adxexporter_exporters{state=\"invalid\"} 1",
    ] {
        assert!(metrics.contains(state), "{state} in {metrics}");
    }
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());

    let expected = s.data.expected();
    assert_prometheus_matches(s.prom.port, &expected);
    for never in ["e2e_elsewhere", "e2e_typo"] {
        assert!(
            prometheus_samples_of(s.prom.port, never).is_empty(),
            "{never}"
        );
    }
    // `points` also asserts that no metric other than the matching exporter's arrived.
    let dups = assert_otlp_matches(&s.otlp.points(), &expected);
    assert!(dups.is_empty(), "{dups:?}");
}

/// Test 5: after a clean stop, a restart on the same WAL resumes from the watermark: nothing old
/// is queried or pushed again.
#[test]
fn restart_resumes_without_re_export() {
    let s = Setup::new(60, 12);
    s.write_good("1m");
    let mut exporter = s.start();
    let first = exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    assert!(exporter.terminate(Duration::from_secs(30)).success());
    let stopped_at = exporter.status_of("cpu").unwrap();
    let watermark = watermark_ms(&stopped_at).unwrap();
    assert!(watermark >= watermark_ms(&first).unwrap());
    let expected = s.data.expected();
    assert_otlp_matches(&s.otlp.points(), &expected);
    let records_before = s.otlp.records().len();

    // A SIGTERM during start-up (as soon as the health port listens, while the WAL is opened) is
    // a clean stop too.
    exporter.restart();
    exporter.wait_listening(LIMIT);
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(
        exit.success(),
        "SIGTERM during start-up: {exit:?}\n{}",
        exporter.log_tail()
    );
    let kept = exporter.status_of("cpu");
    assert_eq!(
        kept.as_ref().and_then(watermark_ms),
        Some(watermark),
        "a stop during start-up must leave the status as it was: {kept:?}"
    );

    std::fs::remove_file(exporter.wal_dir.join("status.json")).unwrap();
    exporter.restart();
    // The restarted exporter has resumed once its status (rebuilt from the WAL) is written and
    // its task logged its start from the stored watermark.
    let resumed = eventually(
        "the restarted exporter's status",
        LIMIT,
        || {
            let st = exporter.status_of("cpu")?;
            let log = exporter.log_text();
            let second = log.split("===== start 3 =====").nth(1)?;
            second.contains("started").then_some(st)
        },
        || exporter.log_tail(),
    );
    assert!(watermark_ms(&resumed).unwrap() >= watermark, "{resumed}");
    let (code, _) = http_get(exporter.health_port, "/readyz").unwrap();
    assert_eq!(code, 200);
    // One more status round after the start, so a re-export would have begun.
    exporter.wait_status_write(LIMIT);
    // A spec edit while running restarts the exporter task, which continues from the watermark.
    std::fs::write(
        s.manifests().join("cpu.yaml"),
        resource_yaml(
            "cpu",
            "1m",
            s.data.first_start_ms,
            &format!("{GOOD_BODY}\n| where isnotempty(Host)"),
        ),
    )
    .unwrap();
    eventually(
        "the exporter to restart on the edited spec",
        LIMIT,
        || {
            let log = exporter.log_text();
            let second = log.split("===== start 3 =====").nth(1)?.to_owned();
            (second.matches(" started").count() >= 2).then_some(())
        },
        || exporter.log_tail(),
    );
    exporter.wait_status_write(LIMIT);
    assert!(exporter.terminate(Duration::from_secs(30)).success());

    let log = exporter.log_text();
    let second = log.split("===== start 3 =====").nth(1).unwrap();
    for line in second.lines().filter(|l| l.contains("window_start=")) {
        let start = line
            .split("window_start=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap();
        let start_ms = adxexporter::time::Ticks::parse(start)
            .unwrap()
            .unix_millis();
        assert!(
            start_ms >= watermark,
            "the restart touched an old window: {line}"
        );
    }
    let records = s.otlp.records();
    let new_points = points_of(&records[records_before..]);
    assert!(
        new_points.iter().all(|((_, t), _)| *t >= watermark),
        "old windows were pushed again after the restart: {new_points:?}"
    );
    assert_otlp_matches(&s.otlp.points(), &expected);
    assert_prometheus_matches(s.prom.port, &expected);
    eprintln!(
        "restart: watermark {}, OTLP requests before {records_before}, after {}",
        rfc3339(watermark),
        records.len()
    );
}

/// Test 3b: Prometheus is down for part of the catch-up (OTLP keeps flowing to the end); a SIGTERM
/// during the outage exits 0 after `--shutdown-grace` with the backlog kept in the WAL; after
/// Prometheus (same port, same TSDB) and adxexporter restart, remote write completes exactly.
#[test]
fn remote_write_outage_survives_a_clean_stop() {
    let mut s = Setup::new(30, 88);
    s.write_good("30s");
    let mut exporter = s.start_with(&["--shutdown-grace", "2s"]);
    eventually(
        "a few windows in Prometheus before the outage",
        LIMIT,
        || (prometheus_samples(s.prom.port).len() >= 5 * HOSTS.len()).then_some(()),
        || exporter.log_tail(),
    );
    s.prom.stop();
    let expected = s.data.expected();
    eventually(
        "OTLP to receive every window while Prometheus is down",
        LIMIT,
        || (otlp_windows(&s.otlp) == s.data.windows as usize).then_some(()),
        || exporter.log_tail(),
    );
    let down = eventually(
        "status to show the remote-write backlog",
        LIMIT,
        || {
            exporter.status_of("cpu").filter(|st| {
                watermark_ms(st).is_some_and(|w| w >= s.data.end_ms())
                    && (1..u64::MAX).contains(&backlog_windows(st))
                    && condition(st, "DeliveryHealthy")
                        .is_some_and(|c| c.0 == "False" && c.2.contains("remote_write"))
            })
        },
        || format!("{:?}\n{}", exporter.status_of("cpu"), exporter.log_tail()),
    );
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let kept = exporter.status_of("cpu").unwrap();
    assert!(
        backlog_windows(&kept) > 0,
        "the undelivered windows must stay in the WAL: {kept}"
    );
    assert_eq!(kept["deadLettered"]["windows"], 0, "{kept}");

    s.prom.restart();
    exporter.restart();
    exporter.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    assert!(exporter.terminate(Duration::from_secs(30)).success());
    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    let dups = assert_otlp_matches(&points, &expected);
    assert!(dups.is_empty(), "OTLP had no fault: {dups:?}");
    eprintln!(
        "remote-write outage: {} windows, backlog while down {}, kept at SIGTERM {}",
        s.data.windows,
        backlog_windows(&down),
        backlog_windows(&kept)
    );
}

/// Test 4b: a resource deleted while its windows wait in the WAL (OTLP down): the windows are still
/// delivered once the receiver is back, and nothing new is queried for it.
#[test]
fn deleted_resource_backlog_is_still_delivered() {
    let mut s = Setup::new(60, 10);
    s.otlp.stop();
    s.write_good("1m");
    let mut exporter = s.start();
    let expected = s.data.expected();
    eventually(
        "Prometheus to hold every window while OTLP is down",
        LIMIT,
        || (prometheus_samples(s.prom.port).len() == expected.len()).then_some(()),
        || exporter.log_tail(),
    );
    std::fs::remove_file(s.manifests().join("cpu.yaml")).unwrap();
    eventually(
        "the exporter to stop and leave the status",
        LIMIT,
        || {
            let gone = exporter.log_text().contains("no longer desired")
                && exporter
                    .status()
                    .is_some_and(|st| !st.contains_key("e2e/cpu"));
            gone.then_some(())
        },
        || exporter.log_tail(),
    );
    assert!(
        otlp_windows(&s.otlp) == 0,
        "OTLP was down, nothing can have arrived"
    );
    s.otlp.restart();
    eventually(
        "OTLP to receive the deleted exporter's backlog",
        LIMIT,
        || (otlp_windows(&s.otlp) == s.data.windows as usize).then_some(()),
        || exporter.log_tail(),
    );
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    assert_prometheus_matches(s.prom.port, &expected);
    let points = s.otlp.points();
    let dups = assert_otlp_matches(&points, &expected);
    assert!(dups.is_empty(), "{dups:?}");
}
