//! The remote-write sink against real receivers: Prometheus 2.42 (strict) and VictoriaMetrics 1.79
//! (lenient). Data is read back through their query APIs and compared exactly (names, labels, values
//! including NaN/±Inf, timestamps).

mod common;
mod sink_support;

use std::collections::BTreeMap;
use std::time::Duration;

use adxexporter::prompb::{Sample, WriteRequest};
use adxexporter::sink::{Disposition, RemoteWriteConfig, RemoteWriteSink, Sink};
use sink_support::*;

fn sink(peer: &common::Peer, max_request_bytes: usize) -> RemoteWriteSink {
    let mut config = RemoteWriteConfig::new(format!("{}/api/v1/write", peer.url).parse().unwrap());
    config.max_request_bytes = max_request_bytes;
    RemoteWriteSink::new(config).unwrap()
}

type Stored = BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>;

/// Every raw sample Prometheus holds for names matching `regex` in the last hour.
async fn prometheus_samples(peer: &common::Peer, regex: &str) -> Stored {
    let query = format!("{{__name__=~\"{regex}\"}}[1h]");
    let time = format!("{}", now_ms() as f64 / 1000.0 + 1.0);
    let body = get_json(
        &format!("{}/api/v1/query", peer.url),
        &[("query", &query), ("time", &time)],
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    let mut out = Stored::new();
    for r in body["data"]["result"].as_array().unwrap() {
        let labels = serde_json::from_value(r["metric"].clone()).unwrap();
        let values = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    (v[0].as_f64().unwrap() * 1000.0).round() as i64,
                    parse_prom_float(v[1].as_str().unwrap()),
                )
            })
            .collect();
        out.insert(labels, values);
    }
    out
}

/// Every sample VictoriaMetrics exports for names matching `regex` (after a forced flush).
async fn vm_samples(peer: &common::Peer, regex: &str) -> Stored {
    let flush = client()
        .get(format!("{}/internal/force_flush", peer.url))
        .send()
        .await
        .unwrap();
    assert!(flush.status().is_success());
    let matcher = format!("{{__name__=~\"{regex}\"}}");
    let text = get_text(
        &format!("{}/api/v1/export", peer.url),
        &[("match[]", &matcher)],
    )
    .await;
    let mut out = Stored::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // VM writes non-finite values as bare `+Inf`/`-Inf`/`NaN`, which is not JSON.
        let line = line
            .replace("+Inf", "\"+Inf\"")
            .replace("-Inf", "\"-Inf\"")
            .replace("NaN", "\"NaN\"");
        let r: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let labels = serde_json::from_value(r["metric"].clone()).unwrap();
        let values = r["values"].as_array().unwrap().iter().map(|v| match v {
            serde_json::Value::String(s) => parse_prom_float(s),
            v => v.as_f64().unwrap_or(f64::NAN),
        });
        let ts = r["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap());
        out.entry(labels).or_default().extend(ts.zip(values));
    }
    for v in out.values_mut() {
        v.sort_by_key(|(t, _)| *t);
    }
    out
}

fn expected(window: &WriteRequest) -> Stored {
    window
        .timeseries
        .iter()
        .map(|s| {
            (
                label_map(s),
                s.samples.iter().map(|p| (p.timestamp, p.value)).collect(),
            )
        })
        .collect()
}

fn assert_stored(got: &Stored, want: &Stored) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (labels, want) in want {
        let got = &got[labels];
        assert_eq!(got.len(), want.len(), "{labels:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.0 == w.0 && same_value(g.1, w.1),
                "{labels:?}: got {g:?}, want {w:?}"
            );
        }
    }
}

#[tokio::test]
async fn prometheus_stores_exactly_what_we_sent() {
    let prom = common::prometheus();
    let window = awkward_window("adx_rw_prom", now_ms() - 20 * 60_000);
    let delivered = sink(&prom, 4 << 20).push(&window).await.unwrap();
    assert_eq!(delivered.requests, 1);
    assert_eq!(delivered.samples, window.sample_count());
    // Prometheus appends before it answers: no polling needed.
    assert_stored(
        &prometheus_samples(&prom, "adx_rw_prom_.*").await,
        &expected(&window),
    );
}

#[tokio::test]
async fn prometheus_out_of_order_resend_is_permanent_with_its_body() {
    let prom = common::prometheus();
    let end = now_ms() - 10 * 60_000;
    let window = awkward_window("adx_rw_ooo", end);
    let rw = sink(&prom, 4 << 20);
    rw.push(&window).await.unwrap();
    // An identical resend of a whole window is rejected: Prometheus 2.42 accepts an identical
    // duplicate only for a series' newest sample; older ones are "out of order" (hence `push_from`).
    let failure = rw.push(&window).await.unwrap_err();
    assert_permanent_400(&failure, "out of order sample");
    // A genuinely older sample for an existing series.
    let mut older = WriteRequest {
        timeseries: vec![window.timeseries[2].clone()],
        ..Default::default()
    };
    older.timeseries[0].samples = vec![Sample {
        value: 42.0,
        timestamp: end - 5_000,
    }];
    let failure = rw.push(&older).await.unwrap_err();
    assert_permanent_400(&failure, "out of order sample");
    // A different value at a series' newest timestamp.
    older.timeseries[0].samples = vec![Sample {
        value: 42.0,
        timestamp: end,
    }];
    let failure = rw.push(&older).await.unwrap_err();
    assert_permanent_400(&failure, "duplicate sample for timestamp");
    // Nothing of the rejected requests was stored.
    assert_stored(
        &prometheus_samples(&prom, "adx_rw_ooo_.*").await,
        &expected(&window),
    );
}

fn assert_permanent_400(failure: &adxexporter::sink::PushFailure, text: &str) {
    assert_eq!((failure.status, failure.failed_request), (Some(400), 0));
    match &failure.disposition {
        Disposition::Permanent {
            reason,
            status,
            body,
        } => {
            assert_eq!((*reason, *status), ("rejected", Some(400)));
            assert!(body.contains(text), "{body:?} lacks {text:?}");
        }
        other => panic!("expected permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn a_window_split_into_many_requests_arrives_whole() {
    let prom = common::prometheus();
    let end = now_ms() - 5 * 60_000;
    let mut window = awkward_window("adx_rw_split", end);
    for h in 0..30 {
        window.timeseries.push(series(
            "adx_rw_split_more",
            &[("instance", &format!("i{h}"))],
            samples(40, end, |i| (h * i) as f64),
        ));
    }
    let delivered = sink(&prom, 4096).push(&window).await.unwrap();
    assert!(delivered.requests >= 8, "{delivered:?}");
    assert_eq!(delivered.oversized_requests, 0, "{delivered:?}");
    assert_eq!(delivered.samples, window.sample_count());
    assert_stored(
        &prometheus_samples(&prom, "adx_rw_split.*").await,
        &expected(&window),
    );
}

#[tokio::test]
async fn a_series_larger_than_the_limit_goes_alone_and_arrives() {
    let prom = common::prometheus();
    let end = now_ms() - 5 * 60_000;
    let window = WriteRequest {
        timeseries: vec![
            series(
                "adx_rw_big_small",
                &[("k", "a")],
                samples(3, end, |i| i as f64),
            ),
            series(
                "adx_rw_big_huge",
                &[("k", "b")],
                samples(200, end, |i| i as f64),
            ),
            series(
                "adx_rw_big_small",
                &[("k", "c")],
                samples(3, end, |i| i as f64),
            ),
        ],
        ..Default::default()
    };
    let delivered = sink(&prom, 1024).push(&window).await.unwrap();
    assert_eq!((delivered.requests, delivered.oversized_requests), (3, 1));
    assert_stored(
        &prometheus_samples(&prom, "adx_rw_big_.*").await,
        &expected(&window),
    );
}

#[tokio::test]
async fn victoria_metrics_stores_exactly_what_we_sent() {
    let vm = common::victoria_metrics();
    // VM stores values as decimals per block: NaN samples are dropped and values far apart in
    // magnitude lose precision (1e-300 beside 1.8e308 reads back as 0). Only exactly representable data here.
    let end = now_ms() - 20 * 60_000;
    let mut window = awkward_window("adx_rw_vm", end);
    let specials = [f64::INFINITY, f64::NEG_INFINITY, 0.25, -1.5, 1e6, 0.0];
    window.timeseries[0].samples = samples(specials.len(), end, |i| specials[i]);
    for s in &mut window.timeseries[2..] {
        for (i, p) in s.samples.iter_mut().enumerate() {
            p.value = i as f64 * 0.5;
        }
    }
    let delivered = sink(&vm, 4096).push(&window).await.unwrap();
    assert!(delivered.requests > 1);
    let want = expected(&window);
    let got = eventually(
        "VictoriaMetrics to export every sample",
        Duration::from_secs(30),
        || async {
            let got = vm_samples(&vm, "adx_rw_vm_.*").await;
            let n: usize = got.values().map(Vec::len).sum();
            (n >= window.sample_count()).then_some(got)
        },
    )
    .await;
    assert_stored(&got, &want);
}
