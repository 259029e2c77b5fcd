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

use adxexporter::time::Ticks;
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

/// The exported query with a `Pad` column of `pad` characters in every row: a larger response
/// (and, past 256 characters, one text allocation per row) for the same samples.
fn padded_body(pad: usize) -> String {
    format!("{GOOD_BODY}\n| extend Pad = strrep(\"x\", {pad})")
}

/// A window whose response alone, or response and decoded rows, pass `--query-memory-budget` fails
/// with a message naming the flag and `spec.maxRows`, as a permanent failure with its own reason;
/// the process keeps running (no OOM kill) and a resource that fits the budget delivers every
/// window.
#[test]
fn a_window_over_the_memory_budget_fails_cleanly_and_says_why() {
    let data = Dataset::ending_now(60, 4);
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let write = |name: &str, text: String| std::fs::write(manifests.join(name), text).unwrap();
    write(
        "cpu.yaml",
        resource_yaml("cpu", "1m", data.first_start_ms, GOOD_BODY),
    );
    // ~60 KB per window against a 32 KiB budget.
    write(
        "big.yaml",
        resource_yaml("big", "1m", data.first_start_ms, &padded_body(20_000)),
    );
    // ~21 KB per window fits, but its rows (one 6000-character text per row) do not fit beside it.
    write(
        "wide.yaml",
        resource_yaml("wide", "1m", data.first_start_ms, &padded_body(6_000)),
    );
    let otlp = OtlpSink::start();
    let mut exporter = Exporter::start(
        work.path(),
        &kusto.url,
        &manifests,
        &[
            "--otlp-endpoint".into(),
            otlp.url(),
            "--query-memory-budget".into(),
            "32KiB".into(),
        ],
    );
    exporter.wait_caught_up("cpu", data.end_ms(), LIMIT);
    let wide = eventually(
        "QueryHealthy=False OverMemoryBudget for the wide resource",
        LIMIT,
        || {
            let st = exporter.status_of("wide")?;
            condition(&st, "QueryHealthy")
                .filter(|c| c.1 == "OverMemoryBudget")
                .map(|_| st)
        },
        || format!("{:?}\n{}", exporter.status(), exporter.log_tail()),
    );
    let (_, _, message) = condition(&wide, "QueryHealthy").unwrap();
    assert!(
        message.contains("the Kusto response and its decoded rows need more")
            && message.contains("after decoding"),
        "{message}"
    );
    // The wide window held the whole budget when it failed; it gives it back at once, not after
    // its retry delay (at least 30 s), or every other resource would wait that long.
    eventually(
        "no budget held while the failed windows wait to be retried",
        Duration::from_secs(20),
        || {
            let (_, page) = common::http_get(exporter.metrics_port, "/metrics")?;
            (metric(&page, "adxexporter_query_memory_reserved_bytes") == Some(0.0)).then_some(())
        },
        || exporter.log_tail(),
    );
    let big = eventually(
        "QueryHealthy=False OverMemoryBudget for the big resource",
        LIMIT,
        || {
            let st = exporter.status_of("big")?;
            condition(&st, "QueryHealthy")
                .filter(|c| c.0 == "False" && c.1 == "OverMemoryBudget")
                .map(|_| st)
        },
        || format!("{:?}\n{}", exporter.status(), exporter.log_tail()),
    );
    let (_, _, message) = condition(&big, "QueryHealthy").unwrap();
    for part in [
        "does not fit in --query-memory-budget (32 KiB)",
        "the Kusto response alone is larger",
        "spec.maxRows = 500000",
        "raise --query-memory-budget",
        "retrying the same window, no window is skipped",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert_eq!(
        watermark_ms(&big),
        Some(data.first_start_ms),
        "the failing window holds the watermark: {big}"
    );
    let log = exporter.log_text();
    assert!(
        log.contains("query memory budget: 32 KiB (from --query-memory-budget)"),
        "the budget and where it came from are logged at start: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("exporter=e2e/big")
            && l.contains("permanent=true")
            && l.contains("--query-memory-budget")),
        "{log}"
    );
    let (_, page) = common::http_get(exporter.metrics_port, "/metrics").unwrap();
    let failed = "adxexporter_queries_total{exporter=\"e2e/big\",outcome=\"over_memory_budget\"}";
    assert!(metric(&page, failed).is_some_and(|n| n >= 1.0), "{page}");
    assert_eq!(
        metric(&page, "adxexporter_query_memory_budget_bytes"),
        Some(32.0 * 1024.0),
        "{page}"
    );
    exporter.assert_running();
    let expected = data.expected();
    let points = eventually(
        "every window of the resource that fits",
        LIMIT,
        || {
            let points = otlp.points();
            (points.len() >= expected.len()).then_some(points)
        },
        || exporter.log_tail(),
    );
    let dups = assert_otlp_matches(&points, &expected);
    assert!(dups.is_empty(), "{dups:?}");
}

/// A Kusto stand-in in front of duckdb-kql that answers every query with duckdb-kql's own body,
/// but without `Content-Length` (so the client streams it and grows its reservation as it reads)
/// and holding back the last bytes of each body until the gate opens. While it is closed, every
/// query holds most of its response and none can finish: if they do not fit the budget together,
/// some must wait for budget — deterministically, whatever the timing.
struct GatedKusto {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
    _rt: tokio::runtime::Runtime,
}

/// Bytes of each body held back while the gate is closed.
const HELD_BACK: usize = 64;

impl GatedKusto {
    fn start(upstream: SocketAddr) -> GatedKusto {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, _) = tokio::sync::watch::channel(false);
        let gate = open.clone();
        rt.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(gated_answer(sock, upstream, gate.subscribe()));
            }
        });
        GatedKusto {
            port,
            open,
            _rt: rt,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One request on `sock`: relayed to `upstream`, answered close-delimited, its tail held back
/// until the gate opens. A client that hangs up early (it gave its budget back) is fine.
async fn gated_answer(
    mut sock: tokio::net::TcpStream,
    upstream: SocketAddr,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let Some(request) = read_request(&mut sock).await else {
        return;
    };
    let (status, body) = post_query(upstream, &request).await;
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n"
    );
    let cut = body.len().saturating_sub(HELD_BACK);
    if sock.write_all(head.as_bytes()).await.is_err() || sock.write_all(&body[..cut]).await.is_err()
    {
        return;
    }
    let _ = sock.flush().await;
    if gate.wait_for(|open| *open).await.is_err() {
        return;
    }
    let _ = sock.write_all(&body[cut..]).await;
    let _ = sock.shutdown().await;
}

/// The body of one HTTP/1.1 request with a `Content-Length`.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}

/// `POST /v2/rest/query` with `request` to a plain-HTTP Kusto (one connection, closed after the
/// answer): the status code and the body.
async fn post_query(upstream: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(upstream).await.unwrap();
    let head = format!(
        "POST /v2/rest/query HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status_line = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, answer[head_end..].to_vec())
}

/// Four exporters back-filling at once, each window fitting `--query-memory-budget` but not four
/// of them together: queries wait for budget (counted in `adxexporter_query_memory_waits_total`)
/// instead of allocating past it, and every window of every exporter arrives exactly once.
#[test]
fn windows_wait_for_the_memory_budget_and_none_is_lost() {
    const EXPORTERS: usize = 4;
    let data = Dataset::ending_now(60, 6);
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let upstream: SocketAddr = kusto.url.trim_start_matches("http://").parse().unwrap();
    let body = padded_body(3000);
    // One window's response, as the exporter will receive it (the query text of its first window).
    let window = adxexporter::schedule::window::Window {
        start: Ticks::from_unix_millis(data.first_start_ms),
        end: Ticks::from_unix_millis(data.window_start(1)),
    };
    let csl = adxexporter::schedule::window::query_text(&window, &Default::default(), &body);
    let request = serde_json::json!({"db": "memory", "csl": csl}).to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, answer) = rt.block_on(post_query(upstream, request.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // Room for one window (its body, its rows — one text allocation per padded cell — and its
    // samples) but not for what four queries hold while their tails are held back.
    let budget_kib = (3 * answer.len()).div_ceil(1024);
    assert!(
        EXPORTERS * (answer.len() - HELD_BACK) > budget_kib * 1024,
        "{} bytes per window, budget {budget_kib} KiB",
        answer.len()
    );
    let gate = GatedKusto::start(upstream);
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let names: Vec<String> = (0..EXPORTERS).map(|i| format!("{METRIC}_{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let yaml = resource_yaml(&format!("cpu-{i}"), "1m", data.first_start_ms, &body).replace(
            &format!("defaultMetricName: {METRIC}\n"),
            &format!("defaultMetricName: {name}\n"),
        );
        std::fs::write(manifests.join(format!("cpu-{i}.yaml")), yaml).unwrap();
    }
    let otlp = OtlpSink::start();
    let mut exporter = Exporter::start(
        work.path(),
        &gate.url(),
        &manifests,
        &[
            "--otlp-endpoint".into(),
            otlp.url(),
            "--query-memory-budget".into(),
            format!("{budget_kib}KiB"),
            "--max-concurrent-queries".into(),
            EXPORTERS.to_string(),
        ],
    );
    // With every tail held back no query can finish, so the ones that do not fit must wait.
    let waits = |page: &str| -> f64 {
        ["reserve", "grow", "requery"]
            .iter()
            .filter_map(|w| {
                metric(
                    page,
                    &format!("adxexporter_query_memory_waits_total{{wait=\"{w}\"}}"),
                )
            })
            .sum()
    };
    eventually(
        "a query to wait for the memory budget",
        LIMIT,
        || {
            let (_, page) = common::http_get(exporter.metrics_port, "/metrics")?;
            (waits(&page) >= 1.0).then_some(())
        },
        || exporter.log_tail(),
    );
    gate.open.send_replace(true);
    for i in 0..EXPORTERS {
        exporter.wait_caught_up(&format!("cpu-{i}"), data.end_ms(), LIMIT);
    }
    let (_, page) = common::http_get(exporter.metrics_port, "/metrics").unwrap();
    eprintln!(
        "budget {budget_kib} KiB, {} bytes per window; waits: {}",
        answer.len(),
        page.lines()
            .filter(|l| l.starts_with("adxexporter_query_memory_waits_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        metric(&page, "adxexporter_query_memory_reserved_bytes"),
        Some(0.0),
        "every reservation is given back once the windows are appended: {page}"
    );
    for i in 0..EXPORTERS {
        let failed = format!(
            "adxexporter_queries_total{{exporter=\"e2e/cpu-{i}\",outcome=\"over_memory_budget\"}}"
        );
        assert_eq!(metric(&page, &failed), None, "{page}");
    }
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let expected = data.expected();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let per_metric = points_of_metrics(&otlp.records(), &name_refs);
    for name in &names {
        let points = per_metric.get(name).cloned().unwrap_or_default();
        let dups = assert_otlp_matches(&points, &expected);
        assert!(dups.is_empty(), "{name}: windows arrived twice: {dups:?}");
        assert_eq!(points.len(), expected.len(), "{name}");
    }
}
