//! The scrape output against a real Prometheus (Debian package, `static_configs` at our port): it
//! reads back through the query API the values of each exporter's newest window, and sees a series
//! that vanished from the newer window go stale. Also: a 100k-series page renders while the async
//! runtime keeps running, and a newer small window replaces it (memory follows the newest window).

mod common;
mod sink_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::sink::{ScrapeConfig, ScrapePages, ScrapeSink, Sink, scrape};
use adxexporter::time::Ticks;
use adxexporter::wal::{ExporterRef, RecordHeader};
use sink_support::*;
use tokio_util::sync::CancellationToken;

fn header(uid: &str, window_end_ms: i64) -> RecordHeader {
    let end = Ticks::from_unix_millis(window_end_ms);
    RecordHeader {
        exporter: ExporterRef::new(uid, "ns", uid),
        generation: 1,
        window_start: Ticks::from_unix_millis(window_end_ms - 60_000),
        window_end: end,
        created: Ticks::now(),
        outputs: vec![],
    }
}

fn window(name: &str, hosts: &[(&str, f64)], ts: i64) -> Arc<WriteRequest> {
    Arc::new(WriteRequest {
        timeseries: hosts
            .iter()
            .map(|(h, v)| TimeSeries {
                labels: vec![Label::new("__name__", name), Label::new("host", *h)],
                samples: vec![Sample {
                    value: *v,
                    timestamp: ts,
                }],
            })
            .collect(),
        ..Default::default()
    })
}

/// A scrape sink served on a free port; the listener stops with the returned token.
async fn serve(timestamps: bool) -> (ScrapeSink, u16, CancellationToken) {
    let config = ScrapeConfig {
        path: "/metrics".into(),
        timestamps,
    };
    let sink = ScrapeSink::new(&config, Arc::new(ScrapePages::default()));
    let port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = CancellationToken::new();
    adxexporter::telemetry::serve(
        addr,
        "--scrape-port",
        scrape::router(&config.path, sink.pages()),
        stop.clone(),
    )
    .await
    .unwrap();
    (sink, port, stop)
}

/// `query` at Prometheus now: host → value, for every series of the result.
async fn query(prom: &common::Peer, q: &str) -> BTreeMap<String, f64> {
    let v = get_json(&format!("{}/api/v1/query", prom.url), &[("query", q)]).await;
    assert_eq!(v["status"], "success", "{v}");
    (v["data"]["result"].as_array().unwrap().iter())
        .map(|s| {
            let host = s["metric"]["host"].as_str().unwrap_or_default().to_owned();
            (host, parse_prom_float(s["value"][1].as_str().unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_newest_window_and_drops_vanished_series() {
    let (sink, port, stop) = serve(false).await;
    let ts = now_ms() - 60_000;
    sink.deliver(
        &header("u1", ts),
        window("adx_scrape_m", &[("a", 1.5), ("b", -2.25)], ts),
        0,
    )
    .await
    .unwrap();
    sink.deliver(
        &header("u2", ts),
        window("adx_scrape_n", &[("c", 7.0)], ts),
        0,
    )
    .await
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: adxexporter\n    \
         metrics_path: /metrics\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    let prom = common::prometheus_with_config(&config);

    let first = BTreeMap::from([("a".to_owned(), 1.5), ("b".to_owned(), -2.25)]);
    eventually(
        "Prometheus to scrape window 1",
        Duration::from_secs(60),
        || async { (query(&prom, "adx_scrape_m").await == first).then_some(()) },
    )
    .await;
    assert_eq!(
        query(&prom, "adx_scrape_n").await,
        BTreeMap::from([("c".to_owned(), 7.0)])
    );

    // The newer window lacks host b: it leaves the page, and Prometheus marks it stale.
    sink.deliver(
        &header("u1", ts + 60_000),
        window("adx_scrape_m", &[("a", 3.0)], ts + 60_000),
        0,
    )
    .await
    .unwrap();
    let page = get_text(&format!("http://127.0.0.1:{port}/metrics"), &[]).await;
    assert_eq!(
        page,
        "adx_scrape_m{host=\"a\"} 3\nadx_scrape_n{host=\"c\"} 7\n"
    );
    let second = BTreeMap::from([("a".to_owned(), 3.0)]);
    eventually(
        "b to go stale in Prometheus",
        Duration::from_secs(60),
        || async { (query(&prom, "adx_scrape_m").await == second).then_some(()) },
    )
    .await;
    assert_eq!(query(&prom, "adx_scrape_n").await.len(), 1);
    let up = query(&prom, "up{job=\"adxexporter\"}").await;
    assert_eq!(
        up.values().copied().collect::<Vec<_>>(),
        [1.0],
        "scrapes succeed"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_100k_series_page_renders_without_stalling_the_runtime() {
    let (sink, port, stop) = serve(true).await;
    let n = 100_000;
    let hosts: Vec<(String, f64)> = (0..n).map(|i| (format!("host-{i}"), i as f64)).collect();
    let refs: Vec<(&str, f64)> = hosts.iter().map(|(h, v)| (h.as_str(), *v)).collect();
    let big = window("adx_scrape_big", &refs, 1_700_000_000_000);

    // On this single-threaded runtime, a render done inline would finish before the ticker ran once.
    let done = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let (done, ticks) = (done.clone(), ticks.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    };
    let deliver = async {
        let d = sink
            .deliver(&header("big", 1_700_000_000_000), big, 0)
            .await;
        done.store(true, Ordering::Relaxed);
        d
    };
    let (delivered, ()) = tokio::join!(deliver, ticker);
    assert_eq!(delivered.unwrap().samples, n);
    assert!(
        ticks.load(Ordering::Relaxed) > 0,
        "the runtime kept running"
    );

    let page = get_text(&format!("http://127.0.0.1:{port}/metrics"), &[]).await;
    assert_eq!(page.lines().count(), n);
    assert!(
        page.contains("adx_scrape_big{host=\"host-99999\"} 99999 1700000000000\n"),
        "sample timestamps are printed"
    );

    // Memory follows the newest window: a one-series window replaces the 100k-line page.
    sink.deliver(
        &header("big", 1_700_000_060_000),
        window("adx_scrape_big", &[("only", 1.0)], 1_700_000_060_000),
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        sink.pages().text(),
        "adx_scrape_big{host=\"only\"} 1 1700000060000\n"
    );
    stop.cancel();
}
