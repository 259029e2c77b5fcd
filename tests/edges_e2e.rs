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
    drop(exporter);
}

/// An RFC 3339 timestamp of the log as Unix milliseconds.
fn unix_ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .as_millisecond()
}
