//! The Kubernetes source at fleet size: 10,000 MetricsExporters in the fake API server of
//! `tests/kube_support` (run in a child process, so this process holds only what a replica holds),
//! one replica of three (`Membership::Fixed`, ordinal 0) watching them, and the status traffic of a
//! whole fleet: every resource's status patched (new watermark, conditions, lastQuery), round robin,
//! at `FLEET_RATE` patches per second (default 500, three times the 167/s that 10,000 resources at
//! 1-minute intervals make) for `FLEET_SECONDS` (default 20).
//!
//! Measured on the thread that runs the source (a current-thread runtime: the watch's HTTP and JSON
//! decoding included), from `/proc/self/task/TID/schedstat` (CPU nanoseconds): the initial list,
//! then CPU per status event and the share of one core during the traffic (the once-a-second stale
//! check over all 10,000 included); snapshots published during the traffic (0 expected: status-only
//! changes publish nothing; one more for the marker resource that ends the run); and the process's
//! RSS (`VmRSS`, `VmHWM`).
//!
//! `cargo bench --bench fleet` (figures in benches/README.md). `FLEET_RESOURCES` changes the count.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adxexporter::registry::Snapshot;
use adxexporter::shard::{Membership, Shard};
use adxexporter::source::kube::{Filter, run_alone};
use kube_support::{FakeApi, exporter};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NS: &str = "fleet";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("FLEET_BENCH_ROLE").as_deref() == Ok("server") {
        return server();
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need: run either way
    // only when asked for by `cargo bench` (a test build just checks that it compiles).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    measure();
}

/// A realistic resource: a few-line query, labels, two value columns.
fn spec(i: u64) -> serde_json::Value {
    json!({
        "database": "Metrics",
        "interval": "1m",
        "ingestionDelay": "30s",
        "body": format!("ServiceTelemetry\n| where Timestamp between (_startTime .. _endTime)\n| where Service == \"svc-{i}\"\n| summarize Requests = count(), Errors = countif(Status >= 500) by bin(Timestamp, 1m), Region, Host"),
        "criteria": { "region": ["eastus", "westus"] },
        "transform": {
            "defaultMetricName": format!("svc_{i}"),
            "valueColumns": ["Requests", "Errors"],
            "timestampColumn": "Timestamp",
            "labelColumns": ["Region", "Host"],
        },
    })
}

/// What a replica's status writer patches once a window: watermark, conditions, last query.
fn status(minute: u64) -> serde_json::Value {
    let t = |m: u64| {
        jiff::Timestamp::from_second(1_800_000_000 + m as i64 * 60)
            .unwrap()
            .to_string()
    };
    let condition = |kind: &str, reason: &str| {
        json!({"type": kind, "status": "True", "reason": reason, "message": "ok",
               "lastTransitionTime": t(0), "observedGeneration": 1})
    };
    json!({
        "watermark": t(minute),
        "observedGeneration": 1,
        "conditions": [condition("QueryHealthy", "QuerySucceeded"), condition("DeliveryHealthy", "Delivering"), condition("Ready", "Exporting")],
        "lastQuery": {"windowStart": t(minute - 1), "windowEnd": t(minute), "rows": 120, "durationMs": 42},
        "backlog": {"windows": 0, "bytes": 0},
    })
}

/// The child: the fake API with the resources, then the status traffic on `go`.
fn server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let n = env_or("FLEET_RESOURCES", 10_000);
    let rate = env_or("FLEET_RATE", 500);
    let seconds = env_or("FLEET_SECONDS", 20);
    let api = rt.block_on(FakeApi::start_with(kube_support::FakeOptions {
        event_retention: 50_000,
        ..Default::default()
    }));
    for i in 0..n {
        api.create(exporter(NS, &format!("svc-{i:05}"), spec(i)));
        api.set_status(NS, &format!("svc-{i:05}"), status(1));
    }
    println!("url {}", api.url);
    let stdin = std::io::stdin();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).unwrap();
    // Paced in 10 ms ticks: `rate / 100` patches each.
    let total = rate * seconds;
    let per_tick = (rate / 100).max(1);
    let t0 = Instant::now();
    let mut sent = 0;
    let mut tick = 0u64;
    while sent < total {
        for _ in 0..per_tick.min(total - sent) {
            let i = sent % n;
            api.set_status(NS, &format!("svc-{i:05}"), status(2 + sent / n));
            sent += 1;
        }
        tick += 1;
        let next = t0 + Duration::from_millis(10 * tick);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // The marker: a new resource, published in a snapshot once everything before it was read.
    api.create(exporter(NS, "zz-marker", spec(n)));
    println!("done {sent} {:.1}", t0.elapsed().as_secs_f64());
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
}

/// CPU nanoseconds of thread `tid` of this process.
fn thread_cpu_ns(tid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// `(VmRSS, VmHWM)` of this process in MiB.
fn rss_mib() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure() {
    // Watch errors (an object that does not decode, …) are WARN lines of the source.
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("FLEET_BENCH_ROLE", "server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fake API server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("url ")
        .expect("the server's URL")
        .to_owned();
    let n = env_or("FLEET_RESOURCES", 10_000);
    let (rss0, _) = rss_mib();

    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let stop = CancellationToken::new();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let source = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx
                .send(link.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                adxexporter::tls::install_crypto_provider();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("kubeconfig");
                FakeApi::write_kubeconfig(&url, &path);
                let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .unwrap();
                let client = kube::Client::try_from(config).unwrap();
                let filter = Filter {
                    cluster_labels: [("region".to_owned(), "eastus".to_owned())].into(),
                    cli_prefix: String::new(),
                };
                let shard = Shard {
                    ordinal: 0,
                    replicas: 3,
                };
                run_alone(client, filter, Membership::Fixed(shard), tx, stop).await
            })
        })
    };
    let tid = tid_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The initial list.
    let t0 = Instant::now();
    let cpu0 = thread_cpu_ns(&tid);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), rx.changed())
            .await
            .expect("the initial list within 5 minutes")
    })
    .unwrap();
    let first = rx.borrow_and_update().clone();
    let list_wall = t0.elapsed();
    let list_cpu = thread_cpu_ns(&tid) - cpu0;
    assert_eq!(
        first.desired.len() + first.rejected.len(),
        n as usize,
        "every resource classified"
    );
    let (rss_listed, _) = rss_mib();

    // The status traffic, then the marker.
    let cpu1 = thread_cpu_ns(&tid);
    let t1 = Instant::now();
    writeln!(stdin, "go").unwrap();
    let mut snapshots = 0;
    loop {
        rt.block_on(rx.changed()).unwrap();
        snapshots += 1;
        if rx
            .borrow_and_update()
            .rejected
            .contains_key(&format!("{NS}/zz-marker"))
            || rx
                .borrow()
                .desired
                .values()
                .any(|e| e.id.name == "zz-marker")
        {
            break;
        }
    }
    let traffic_wall = t1.elapsed();
    let traffic_cpu = thread_cpu_ns(&tid) - cpu1;
    line.clear();
    out.read_line(&mut line).unwrap();
    let mut done = line.split_whitespace().skip(1);
    let events: u64 = done.next().unwrap().parse().unwrap();
    let (rss, hwm) = rss_mib();
    stop.cancel();
    let _ = writeln!(stdin, "stop");
    let _ = source.join();
    let _ = child.wait();

    let per_event_us = traffic_cpu as f64 / 1e3 / events as f64;
    let core = traffic_cpu as f64 / traffic_wall.as_nanos() as f64;
    let at_one_minute = (n as f64 / 60.0) * per_event_us / 1e6;
    println!(
        "resources: {n}, this replica runs {} (ordinal 0 of 3)",
        first.desired.len()
    );
    println!(
        "initial list: {:.2} s wall, {:.2} CPU-s ({:.0} CPU-µs per resource)",
        list_wall.as_secs_f64(),
        list_cpu as f64 / 1e9,
        list_cpu as f64 / 1e3 / n as f64
    );
    println!(
        "status traffic: {events} events in {:.1} s: {:.2} CPU-s, {per_event_us:.1} CPU-µs per event (HTTP + JSON decode + apply), {:.1} % of one core at {:.0} events/s",
        traffic_wall.as_secs_f64(),
        traffic_cpu as f64 / 1e9,
        core * 100.0,
        events as f64 / traffic_wall.as_secs_f64()
    );
    println!(
        "  at 1-minute intervals ({:.0} status events/s): {:.1} % of one core by events (+ the stale check, included above)",
        n as f64 / 60.0,
        at_one_minute * 100.0
    );
    println!(
        "snapshots published during the traffic: {} (the marker's only: status-only changes publish nothing)",
        snapshots
    );
    println!(
        "RSS: {rss0:.0} MiB before the list, {rss_listed:.0} MiB after it, {rss:.0} MiB at the end, peak {hwm:.0} MiB"
    );
}
