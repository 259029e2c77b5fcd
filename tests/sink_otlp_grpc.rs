//! The OTLP/gRPC sink against real gRPC receivers: rotel (a Rust OTLP collector from PyPI) accepts
//! `MetricsService/Export` and relays OTLP/HTTP to the Python sink, which decodes with the official
//! `opentelemetry-proto` package; and `tests/peers/otlp_grpc_sink.py`, the official `grpcio` server
//! answering scripted gRPC statuses (with `google.rpc.RetryInfo` details) and partial successes.
//! What arrives must be exactly the window's points, with our resource and scope; each status must
//! map to the OTLP retry rule (the full table is unit-tested in `sink::retry`).

mod common;
mod sink_support;

use std::collections::BTreeMap;
use std::time::Duration;

use adxexporter::sink::{Disposition, OtlpGrpcConfig, OtlpGrpcSink, Sink};
use serde_json::json;
use sink_support::*;

fn resource() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cluster".to_owned(), "aks-west-1".to_owned()),
        ("team".to_owned(), "métriques/数据".to_owned()),
    ])
}

fn grpc(url: &str, max_request_bytes: usize) -> OtlpGrpcSink {
    let mut config = OtlpGrpcConfig::new(url.parse().unwrap(), resource());
    config.max_request_bytes = max_request_bytes;
    OtlpGrpcSink::new(config).unwrap()
}

#[tokio::test]
async fn rotel_receives_every_point_over_grpc() {
    let sink = otlp_sink();
    let rotel = common::rotel(&sink.url);
    let window = awkward_window("adx_otlp_grpc", now_ms() - 60_000);
    // Small requests: the window goes out as several Export calls, in order.
    let delivered = grpc(&rotel.grpc_url, 16 * 1024)
        .push(&window)
        .await
        .unwrap();
    assert!(delivered.requests > 1, "{delivered:?}");
    assert_eq!(delivered.requests, delivered.window_requests);
    assert_eq!(delivered.samples, window.sample_count());

    let want = expected_otlp_points(&window);
    let records = relayed(&sink, want.len(), "rotel to relay every point to the sink").await;
    for r in records
        .iter()
        .filter(|r| r["resources"].as_array().is_some_and(|a| !a.is_empty()))
    {
        let attrs: BTreeMap<String, String> =
            serde_json::from_value(r["resources"][0]["attrs"].clone()).unwrap();
        for (k, v) in resource() {
            assert_eq!(attrs.get(&k), Some(&v), "resource attribute {k}");
        }
        for scope in r["resources"][0]["scopes"].as_array().unwrap() {
            assert_eq!(scope["name"], "adxexporter");
        }
    }
    // rotel batches: requests may be merged, so compare as sorted multisets.
    let key = |p: &Point| (p.0.clone(), p.1.clone(), p.2);
    let mut got = otlp_points(&records);
    let mut want = want;
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_same_points(&got, &want);
}

#[tokio::test]
async fn no_receiver_is_retryable_at_the_first_request() {
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let window = awkward_window("adx_otlp_grpc_down", now_ms() - 60_000);
    let failure = grpc(&url, 16 * 1024).push(&window).await.unwrap_err();
    assert!(
        matches!(
            failure.disposition,
            Disposition::Retry {
                reason: "unavailable",
                ..
            }
        ),
        "{failure:?}"
    );
    assert_eq!(failure.failed_request, 0);
    assert!(failure.window_requests > 1);
}

#[tokio::test]
async fn a_retry_resumes_at_the_failed_request() {
    let sink = otlp_sink();
    let rotel = common::rotel(&sink.url);
    let window = awkward_window("adx_otlp_grpc_resume", now_ms() - 60_000);
    let out = grpc(&rotel.grpc_url, 16 * 1024);
    let total = out.push(&window).await.unwrap().window_requests;
    let _ = eventually(
        "the first push to arrive",
        Duration::from_secs(30),
        || async {
            let n = otlp_points(&received(&sink).await).len();
            (n >= window.sample_count()).then_some(())
        },
    )
    .await;
    // Resuming at request 1 sends exactly the points of requests 1.. (request 0's are not re-sent).
    let resumed = out.push_from(&window, 1).await.unwrap();
    assert_eq!(resumed.requests, total - 1);
    assert!(resumed.samples < window.sample_count());
    let want = window.sample_count() + resumed.samples;
    let _ = eventually(
        "the resumed requests to arrive",
        Duration::from_secs(30),
        || async {
            let n = otlp_points(&received(&sink).await).len();
            (n >= want).then_some(())
        },
    )
    .await;
    assert_eq!(otlp_points(&received(&sink).await).len(), want);
}

/// The scriptable gRPC receiver (`tests/peers/otlp_grpc_sink.py`: the official `grpcio` server and
/// `opentelemetry-proto` decoder) and its gRPC URL; `peer.url` is its control endpoint.
fn grpc_receiver() -> (common::Peer, String) {
    let (peer, port) = common::otlp_grpc_receiver(&[]);
    (peer, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn grpc_status_codes_and_retry_info_from_a_real_grpc_server() {
    let (receiver, url) = grpc_receiver();
    let out = grpc(&url, 1 << 20);
    let window = awkward_window("adx_otlp_grpc_codes", now_ms() - 60_000);

    let cases = [
        (
            json!({"code": "UNAVAILABLE", "message": "restarting", "retry_delay": 2.5}),
            Disposition::Retry {
                after: Some(Duration::from_millis(2500)),
                reason: "unavailable",
            },
        ),
        (
            json!({"code": "RESOURCE_EXHAUSTED", "message": "slow down", "retry_delay": 1}),
            Disposition::Retry {
                after: Some(Duration::from_secs(1)),
                reason: "throttled",
            },
        ),
        (
            json!({"code": "RESOURCE_EXHAUSTED", "message": "quota gone"}),
            Disposition::Permanent {
                reason: "resource_exhausted",
                status: None,
                body: "gRPC RESOURCE_EXHAUSTED: quota gone".into(),
            },
        ),
        (
            json!({"code": "INVALID_ARGUMENT", "message": "bad point"}),
            Disposition::Permanent {
                reason: "rejected",
                status: None,
                body: "gRPC INVALID_ARGUMENT: bad point".into(),
            },
        ),
        (
            json!({"code": "DEADLINE_EXCEEDED"}),
            Disposition::Retry {
                after: None,
                reason: "timeout",
            },
        ),
    ];
    for (entry, want) in cases {
        script(&receiver, json!([entry.clone()])).await;
        let failure = out.push(&window).await.unwrap_err();
        assert_eq!(failure.disposition, want, "{entry}");
        assert_eq!(failure.failed_request, 0);
    }

    // Partial success: delivered, the rejected points counted.
    script(
        &receiver,
        json!([{"partial_rejected": 3, "message": "3 too old"}]),
    )
    .await;
    let delivered = out.push(&window).await.unwrap();
    assert_eq!(delivered.rejected_points, 3);

    // Every request (gzip-compressed: grpcio decompresses it before the handler) decoded to exactly
    // the window's points.
    let records = received(&receiver).await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let mut got = otlp_points(std::slice::from_ref(r));
        let mut want = expected_otlp_points(&window);
        let key = |p: &Point| (p.0.clone(), p.1.clone(), p.2);
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_same_points(&got, &want);
    }
}

/// A receiver that accepts the connection and closes it, at once or after reading the start of the
/// call (what a crashing collector does): tonic reports some of these as `UNKNOWN`, which the OTLP
/// table would dead-letter; a failure on our side of the connection must be retried instead.
#[tokio::test]
async fn a_connection_closed_mid_call_is_retried_not_dead_lettered() {
    use tokio::io::AsyncReadExt;
    let window = awkward_window("adx_otlp_grpc_reset", now_ms() - 60_000);
    for read_first in [0usize, 24, 200] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let closer = tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; read_first];
                let _ = tcp.read_exact(&mut buf).await;
                drop(tcp);
            }
        });
        let failure = grpc(&url, 1 << 20).push(&window).await.unwrap_err();
        assert!(
            matches!(failure.disposition, Disposition::Retry { .. }),
            "closed after {read_first} bytes: {:?}",
            failure.disposition
        );
        assert_eq!(failure.failed_request, 0);
        closer.abort();
    }
}
