//! The edges where an operator finds out about a failure, or does not: each test drives the real
//! `adxexporter run` binary into one of them against real peers (duckdb-kql, the OTLP decoder) and
//! asserts that the failure is visible and that no promise (no window skipped) is broken.

mod common;
mod run_support;
#[allow(dead_code)] // the proxy's other modes serve the chaos suite
#[path = "chaos_support/tcp_fault.rs"]
mod tcp_fault;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::duckdb_kql;
use run_support::*;
use tcp_fault::{TcpFault, TcpMode};

/// Bound for every wait on the system under test.
const LIMIT: Duration = Duration::from_secs(120);

/// A resource over `Samples` without `startTime`: its first window is the newest complete one.
fn resource_without_start(name: &str, interval: &str) -> String {
    resource_yaml(name, interval, 0, GOOD_BODY)
        .lines()
        .filter(|l| !l.trim_start().starts_with("startTime:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The `window_start` of every `window failed` log line, in order.
fn failed_window_starts(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("window failed"))
        .filter_map(|l| {
            let at = l.find("window_start=")? + "window_start=".len();
            Some(l[at..].split_whitespace().next()?.to_owned())
        })
        .collect()
}

/// A new resource (no watermark, no `startTime`) while Kusto is down: the window of the first
/// attempt is retried until Kusto answers and then exported, followed by every later window —
/// none is skipped by moving on to the newest window at each retry.
#[test]
fn a_first_window_that_fails_is_retried_not_skipped() {
    let interval_ms = 2_000;
    // Data from 10 windows ago to 60 windows ahead, so every window the test can reach has rows.
    let now = now_ms() / interval_ms * interval_ms;
    let data = Dataset {
        first_start_ms: now - 10 * interval_ms,
        interval_ms,
        windows: 70,
    };
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: SocketAddr = kusto.url.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpFault::start(&rt, upstream);
    proxy.set(TcpMode::Reset);
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("cpu.yaml"),
        resource_without_start("cpu", "2s"),
    )
    .unwrap();
    let otlp = OtlpSink::start();
    let exporter = Exporter::start(
        work.path(),
        &format!("http://127.0.0.1:{}", proxy.port),
        &manifests,
        &["--otlp-endpoint".into(), otlp.url()],
    );

    // Two failed attempts, and time enough that the first window is no longer the newest.
    let first = eventually(
        "two failed attempts at the first window",
        LIMIT,
        || {
            let starts = failed_window_starts(&exporter.log_text());
            (starts.len() >= 2).then(|| starts[0].clone())
        },
        || exporter.log_tail(),
    );
    let retried = failed_window_starts(&exporter.log_text());
    assert!(
        retried.iter().all(|s| *s == first),
        "every retry is the same window: {retried:?}"
    );
    let first_ms = unix_ms(&first);
    eventually(
        "two more windows to pass",
        LIMIT,
        || (now_ms() >= first_ms + 3 * interval_ms).then_some(()),
        String::new,
    );

    proxy.set(TcpMode::Pass);
    let expected = data.expected();
    let arrived = eventually(
        "the first window and the two after it to arrive",
        LIMIT,
        || {
            let windows: BTreeSet<i64> = otlp.points().iter().map(|((_, t), _)| *t).collect();
            (0..3)
                .all(|k| windows.contains(&(first_ms + k * interval_ms)))
                .then_some(windows)
        },
        || exporter.log_tail(),
    );
    let oldest = *arrived.first().unwrap();
    assert_eq!(
        oldest, first_ms,
        "the first window attempted is the first exported"
    );
    let newest = *arrived.last().unwrap();
    let all: Vec<i64> = (0..)
        .map(|k| first_ms + k * interval_ms)
        .take_while(|t| *t <= newest)
        .collect();
    assert_eq!(
        arrived.iter().copied().collect::<Vec<_>>(),
        all,
        "no window skipped"
    );
    for ((host, t), v) in otlp.points() {
        assert_eq!(expected.get(&(host.clone(), t)), Some(&v), "{host} at {t}");
    }
    let log = exporter.log_text();
    assert!(
        log.contains("recovered (QueryFailing): windows are appended again"),
        "the recovery is logged: {log}"
    );
    drop(exporter);
}

/// An RFC 3339 timestamp of the log as Unix milliseconds.
fn unix_ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .as_millisecond()
}

/// The value of `name{labels}` on a `/metrics` page.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A manifest with a YAML syntax error, one that is not UTF-8, and a resource whose value column
/// holds strings: each reaches status.json and the exporters gauge the shipped alert watches
/// (`AdxExporterExportersFailing`), while the good resource keeps exporting.
#[test]
fn broken_manifests_and_unusable_rows_are_visible() {
    let data = Dataset::ending_now(60, 5);
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(manifests.join(name), bytes).unwrap();
    write(
        "cpu.yaml",
        resource_yaml("cpu", "1m", data.first_start_ms, GOOD_BODY).as_bytes(),
    );
    write(
        "strings.yaml",
        resource_yaml(
            "strings",
            "1m",
            data.first_start_ms,
            &GOOD_BODY.replace("V = avg(X)", "V = strcat(\"v\", tostring(avg(X)))"),
        )
        .as_bytes(),
    );
    write(
        "syntax.yaml",
        b"apiVersion: adx-mon.azure.com/v1\nspec:\n  interval: [1m\n",
    );
    write(
        "bytes.yaml",
        b"kind: MetricsExporter\nmetadata: {name: \xff\xfe}\n",
    );
    let otlp = OtlpSink::start();
    let mut exporter = Exporter::start(
        work.path(),
        &kusto.url,
        &manifests,
        &["--otlp-endpoint".into(), otlp.url()],
    );
    exporter.wait_caught_up("cpu", data.end_ms(), LIMIT);

    let status = eventually(
        "the broken files and the string-valued resource in status.json",
        LIMIT,
        || {
            let st = exporter.status()?;
            let strings = st.get("e2e/strings")?;
            condition(strings, "QueryHealthy").filter(|c| c.1 == "NoSamples")?;
            ["syntax.yaml", "bytes.yaml"]
                .iter()
                .all(|f| st.contains_key(&manifests.join(f).display().to_string()))
                .then_some(st)
        },
        || format!("{:?}\n{}", exporter.status(), exporter.log_tail()),
    );
    for file in ["syntax.yaml", "bytes.yaml"] {
        let entry = &status[&manifests.join(file).display().to_string()];
        let (ready, reason, message) = condition(entry, "Ready").unwrap();
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", "InvalidSpec"),
            "{entry}"
        );
        assert!(
            message.contains(file) && message.contains("fix the file"),
            "{message}"
        );
    }
    let (healthy, _, message) = condition(&status["e2e/strings"], "QueryHealthy").unwrap();
    assert_eq!(healthy, "False");
    assert!(message.contains("non_numeric_value"), "{message}");
    assert_eq!(
        condition(&status["e2e/strings"], "Ready").unwrap().0,
        "False",
        "a resource that exports nothing is not Ready"
    );

    let page = eventually(
        "the exporters gauge to count the broken files and the failing resource",
        LIMIT,
        || {
            let (_, page) = common::http_get(exporter.metrics_port, "/metrics")?;
            (metric(&page, "adxexporter_exporters{state=\"invalid\"}") == Some(2.0)).then_some(page)
        },
        || exporter.log_tail(),
    );
    assert_eq!(
        metric(&page, "adxexporter_exporters{state=\"failing\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "adxexporter_exporters{state=\"active\"}"),
        Some(1.0),
        "{page}"
    );
    exporter.assert_running();
}

/// SIGHUP does not stop the process (it used to kill it at once, with no log and no drain); a
/// second SIGTERM ends the drain wait at once instead of waiting the whole grace, and what was not
/// pushed is delivered after the next start.
#[test]
fn sighup_is_ignored_and_a_second_sigterm_stops_at_once() {
    let data = Dataset::ending_now(60, 4);
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("cpu.yaml"),
        resource_yaml("cpu", "1m", data.first_start_ms, GOOD_BODY),
    )
    .unwrap();
    let otlp = OtlpSink::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: SocketAddr = format!("127.0.0.1:{}", otlp.port).parse().unwrap();
    let proxy = TcpFault::start(&rt, upstream);
    proxy.set(TcpMode::Reset);
    let mut exporter = Exporter::start(
        work.path(),
        &kusto.url,
        &manifests,
        &[
            "--otlp-endpoint".into(),
            format!("http://127.0.0.1:{}/v1/metrics", proxy.port),
            "--shutdown-grace".into(),
            "1h".into(),
        ],
    );
    eventually(
        "windows waiting in the WAL for the receiver",
        LIMIT,
        || {
            let st = exporter.status_of("cpu")?;
            (watermark_ms(&st) >= Some(data.end_ms()) && backlog_windows(&st) >= 4).then_some(())
        },
        || exporter.log_tail(),
    );

    exporter.signal("HUP");
    eventually(
        "the SIGHUP log line",
        LIMIT,
        || exporter.log_text().contains("SIGHUP ignored").then_some(()),
        || exporter.log_tail(),
    );
    exporter.assert_running();

    exporter.signal("TERM");
    eventually(
        "the drain wait",
        LIMIT,
        || {
            (exporter.log_text())
                .contains("waiting for outputs to drain")
                .then_some(())
        },
        || exporter.log_tail(),
    );
    // The grace is an hour: only the second signal can end the process within the limit.
    let exit = exporter.terminate(LIMIT);
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let log = exporter.log_text();
    assert!(log.contains("second stop signal: stopping now"), "{log}");
    assert_eq!(
        log.matches("waiting for outputs to drain").count(),
        1,
        "logged once, not every 250 ms: {log}"
    );
    assert!(otlp.points().is_empty(), "nothing was delivered yet");

    proxy.set(TcpMode::Pass);
    exporter.restart();
    let expected = data.expected();
    let points = eventually(
        "the kept windows delivered after the restart",
        LIMIT,
        || {
            let points = otlp.points();
            (points.len() >= expected.len()).then_some(points)
        },
        || exporter.log_tail(),
    );
    assert_otlp_matches(&points, &expected);
}

/// A query that hangs is visible while it hangs (status said "the last query succeeded" and the
/// log was silent until the client timeout): after a quarter of --kusto-server-timeout, a WARN
/// line and QueryHealthy=False with reason QuerySlow.
#[test]
fn a_hanging_query_is_reported_while_it_hangs() {
    let data = Dataset::ending_now(60, 3);
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: SocketAddr = kusto.url.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpFault::start(&rt, upstream);
    proxy.set(TcpMode::Blackhole);
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("cpu.yaml"),
        resource_yaml("cpu", "1m", data.first_start_ms, GOOD_BODY),
    )
    .unwrap();
    let otlp = OtlpSink::start();
    let exporter = Exporter::start(
        work.path(),
        &format!("http://127.0.0.1:{}", proxy.port),
        &manifests,
        &[
            "--otlp-endpoint".into(),
            otlp.url(),
            "--kusto-server-timeout".into(),
            "8s".into(),
        ],
    );
    let status = eventually(
        "QueryHealthy=False QuerySlow while the query hangs",
        LIMIT,
        || {
            let st = exporter.status_of("cpu")?;
            condition(&st, "QueryHealthy")
                .filter(|c| c.0 == "False" && c.1 == "QuerySlow")
                .map(|_| st)
        },
        || exporter.log_tail(),
    );
    let (_, _, message) = condition(&status, "QueryHealthy").unwrap();
    assert!(message.contains("has been running for"), "{message}");
    assert!(
        message.contains(&rfc3339(data.first_start_ms).replace(".000", "")),
        "names the window: {message}"
    );
    let log = exporter.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("has been running for")),
        "{log}"
    );
}
