//! The retry matrix end to end: real HTTP answers scripted by `tests/peers/otlp_sink.py` (and a
//! listener that never answers, and a closed port) pushed through both sinks, checking the
//! `PushFailure`/`Delivered` the drain loop will act on.

mod common;
mod sink_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use adxexporter::prompb::WriteRequest;
use adxexporter::sink::{
    Delivered, Disposition, OtlpConfig, OtlpSink, PushFailure, PushResult, RemoteWriteConfig,
    RemoteWriteSink, Sink,
};
use serde_json::json;
use sink_support::*;

fn small_window() -> WriteRequest {
    WriteRequest {
        timeseries: vec![series(
            "adx_retry",
            &[("k", "v")],
            samples(3, now_ms(), |i| i as f64),
        )],
        ..Default::default()
    }
}

fn otlp(url: &str) -> OtlpSink {
    let mut config = OtlpConfig::new(url.parse().unwrap(), BTreeMap::new());
    config.timeout = Duration::from_secs(2);
    OtlpSink::new(config).unwrap()
}

fn remote_write(url: &str, max_request_bytes: usize) -> RemoteWriteSink {
    let mut config = RemoteWriteConfig::new(url.parse().unwrap());
    config.timeout = Duration::from_secs(2);
    config.max_request_bytes = max_request_bytes;
    RemoteWriteSink::new(config).unwrap()
}

fn retry(result: PushResult) -> (Option<u16>, Option<Duration>, &'static str) {
    match result {
        Err(PushFailure {
            disposition: Disposition::Retry { after, reason },
            status,
            ..
        }) => (status, after, reason),
        other => panic!("expected a retry, got {other:?}"),
    }
}

fn permanent(result: PushResult) -> (Option<u16>, &'static str, String) {
    match result {
        Err(PushFailure {
            disposition:
                Disposition::Permanent {
                    reason,
                    status,
                    body,
                },
            status: s,
            ..
        }) => {
            assert_eq!(status, s);
            (status, reason, body)
        }
        other => panic!("expected permanent, got {other:?}"),
    }
}

/// An HTTP date `secs` from now (negative: in the past).
fn http_date(secs: i64) -> String {
    let now = SystemTime::now();
    let at = if secs >= 0 {
        now + Duration::from_secs(secs as u64)
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// Entries shared by both protocols, pushed in this order.
fn common_script() -> serde_json::Value {
    json!([
        {"status": 429, "retry_after": "2"},
        {"status": 429, "retry_after": http_date(120)},
        {"status": 503, "retry_after": http_date(-3600)},
        {"status": 503},
        {"status": 502},
        {"status": 504},
        {"status": 400, "body": "bad"},
        {"status": 413, "body": "too big"},
        {"status": 404},
        {"status": 301},
        {"drop": true},
    ])
}

async fn assert_common_rows(sink: &impl Sink, w: &WriteRequest) {
    assert_eq!(
        retry(sink.push(w).await),
        (Some(429), Some(Duration::from_secs(2)), "throttled")
    );
    let (status, after, reason) = retry(sink.push(w).await);
    assert_eq!((status, reason), (Some(429), "throttled"));
    let after = after.expect("an HTTP-date Retry-After is honoured");
    assert!(
        after > Duration::from_secs(100) && after <= Duration::from_secs(120),
        "{after:?}"
    );
    assert_eq!(
        retry(sink.push(w).await),
        (Some(503), Some(Duration::ZERO), "unavailable"),
        "a past date means now"
    );
    assert_eq!(retry(sink.push(w).await), (Some(503), None, "unavailable"));
    assert_eq!(retry(sink.push(w).await), (Some(502), None, "unavailable"));
    assert_eq!(retry(sink.push(w).await), (Some(504), None, "unavailable"));
    assert_eq!(
        permanent(sink.push(w).await),
        (Some(400), "rejected", "bad".to_owned())
    );
    assert_eq!(
        permanent(sink.push(w).await),
        (Some(413), "too_large", "too big".to_owned())
    );
    assert_eq!(permanent(sink.push(w).await).1, "rejected");
    assert_eq!(
        permanent(sink.push(w).await).1,
        "redirect",
        "redirects are not followed"
    );
    assert_eq!(retry(sink.push(w).await), (None, None, "connection_broken"));
}

#[tokio::test]
async fn otlp_retry_matrix() {
    let peer = otlp_sink();
    let sink = otlp(&format!("{}/v1/metrics", peer.url));
    let w = small_window();
    let mut entries = common_script().as_array().unwrap().clone();
    entries.extend([
        json!({"status": 500, "body": "boom"}),
        json!({"status": 501}),
        json!({"status": 200, "partial_rejected": 3, "message": "3 points too old"}),
        json!({"status": 202}),
    ]);
    script(&peer, json!(entries)).await;
    assert_common_rows(&sink, &w).await;
    // OTLP: only 429/502/503/504 are retryable among the 5xx.
    assert_eq!(
        permanent(sink.push(&w).await),
        (Some(500), "server_error", "boom".to_owned())
    );
    assert_eq!(permanent(sink.push(&w).await).0, Some(501));
    let d = sink.push(&w).await.unwrap();
    assert_eq!(
        (d.requests, d.samples, d.rejected_points),
        (1, 3, 3),
        "partial success is delivered"
    );
    assert_eq!(
        sink.push(&w).await.unwrap().rejected_points,
        0,
        "any 2xx is success"
    );
    assert_eq!(received(&peer).await.len(), entries.len());
}

#[tokio::test]
async fn remote_write_retry_matrix() {
    let peer = otlp_sink();
    let sink = remote_write(&format!("{}/api/v1/write", peer.url), 4 << 20);
    let w = small_window();
    let mut entries = common_script().as_array().unwrap().clone();
    entries.extend([
        json!({"status": 500, "body": "label name \"a\" is not unique"}),
        json!({"status": 501}),
        json!({"status": 204}),
    ]);
    script(&peer, json!(entries)).await;
    assert_common_rows(&sink, &w).await;
    // Remote write: every 5xx is retryable (the drain loop caps attempts).
    assert_eq!(
        retry(sink.push(&w).await),
        (Some(500), None, "server_error")
    );
    assert_eq!(
        retry(sink.push(&w).await),
        (Some(501), None, "server_error")
    );
    assert_eq!(
        sink.push(&w).await.unwrap(),
        Delivered {
            requests: 1,
            window_requests: 1,
            samples: 3,
            rejected_points: 0,
            oversized_requests: 0
        }
    );
    let records = received(&peer).await;
    let h = &records.last().unwrap()["headers"];
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(
        h["user-agent"],
        format!("adxexporter/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn a_failed_request_is_resumed_without_resending_accepted_ones() {
    let peer = otlp_sink();
    let end = now_ms();
    let window = WriteRequest {
        timeseries: (0..3)
            .map(|i| {
                series(
                    "adx_resume",
                    &[("i", &i.to_string())],
                    samples(60, end, |j| j as f64),
                )
            })
            .collect(),
        ..Default::default()
    };
    let sink = remote_write(&format!("{}/api/v1/write", peer.url), 1024);
    script(&peer, json!([{"status": 204}, {"status": 503}])).await;
    let failure = sink.push(&window).await.unwrap_err();
    assert_eq!((failure.failed_request, failure.window_requests), (1, 3));
    let d = sink
        .push_from(&window, failure.failed_request)
        .await
        .unwrap();
    assert_eq!((d.requests, d.window_requests, d.samples), (2, 3, 120));
    let sizes: Vec<u64> = received(&peer)
        .await
        .iter()
        .map(|r| r["raw_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 4);
    assert_eq!(sizes[1], sizes[2], "request 1 re-sent, request 0 not");
}

#[tokio::test]
async fn connection_refused_and_timeout_are_retried() {
    let closed = format!("http://127.0.0.1:{}/v1/metrics", common::free_port());
    assert_eq!(
        retry(otlp(&closed).push(&small_window()).await),
        (None, None, "connect")
    );
    assert_eq!(
        retry(remote_write(&closed, 4096).push(&small_window()).await),
        (None, None, "connect")
    );

    // The kernel completes the handshake into the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/metrics", silent.local_addr().unwrap());
    let mut config = OtlpConfig::new(url.parse().unwrap(), BTreeMap::new());
    config.timeout = Duration::from_millis(300);
    assert_eq!(
        retry(OtlpSink::new(config).unwrap().push(&small_window()).await),
        (None, None, "timeout")
    );
}

#[tokio::test]
async fn an_oversized_answer_body_is_read_capped() {
    let peer = otlp_sink();
    let body = "x".repeat(1 << 20);
    script(&peer, json!([{"status": 400, "body": body}])).await;
    let sink = remote_write(&format!("{}/api/v1/write", peer.url), 4096);
    let (_, _, kept) = permanent(sink.push(&small_window()).await);
    assert_eq!(kept.len(), adxexporter::sink::MAX_RESPONSE_BODY);
}
