//! The OTLP/HTTP sink against independent decoders: the Python `opentelemetry-proto` package (via the
//! scriptable sink `tests/peers/otlp_sink.py`), the Rust `opentelemetry-proto` crate, and rotel (a real
//! Rust OTLP collector) relaying to the Python sink.

mod common;
mod sink_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use adxexporter::prompb::WriteRequest;
use adxexporter::sink::otlp::{OtlpEncoder, OtlpTemplate};
use adxexporter::sink::{OtlpConfig, OtlpSink, Sink};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as UpstreamRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as UpstreamValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as UpstreamPointValue;
use prost::Message;
use sink_support::*;

fn resource() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cluster".to_owned(), "aks-west-1".to_owned()),
        ("region".to_owned(), "westeurope".to_owned()),
        ("team".to_owned(), "métriques/数据".to_owned()),
    ])
}

fn otlp(url: &str, max_request_bytes: usize) -> OtlpSink {
    let mut config = OtlpConfig::new(url.parse().unwrap(), resource());
    config.max_request_bytes = max_request_bytes;
    OtlpSink::new(config).unwrap()
}

fn resource_of(record: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(record["resources"][0]["attrs"].clone()).unwrap()
}

#[tokio::test]
async fn python_decoder_sees_exactly_what_we_sent() {
    let sink = otlp_sink();
    let window = awkward_window("adx_otlp", now_ms() - 60_000);
    let delivered = otlp(&format!("{}/v1/metrics", sink.url), 4 << 20)
        .push(&window)
        .await
        .unwrap();
    assert_eq!(
        (delivered.requests, delivered.samples),
        (1, window.sample_count())
    );
    assert_eq!(delivered.rejected_points, 0);

    let records = received(&sink).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["path"], "/v1/metrics", "the endpoint is used as given");
    assert_eq!(r["headers"]["content-type"], "application/x-protobuf");
    assert_eq!(r["headers"]["content-encoding"], "gzip");
    assert_eq!(
        r["headers"]["user-agent"],
        format!("adxexporter/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(resource_of(r), resource());
    let scopes = r["resources"][0]["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0]["name"], "adxexporter");
    assert_eq!(scopes[0]["version"], env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = scopes[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["adx_otlp_special", "adx_otlp_unicode", "adx_otlp_many"],
        "one Metric per name"
    );
    assert_same_points(&otlp_points(&records), &expected_otlp_points(&window));
}

#[tokio::test]
async fn a_split_window_arrives_whole_in_requests_within_the_limit() {
    let sink = otlp_sink();
    let window = awkward_window("adx_otlp_split", now_ms() - 60_000);
    let max = 8 * 1024;
    let delivered = otlp(&format!("{}/custom/path", sink.url), max)
        .push(&window)
        .await
        .unwrap();
    assert!(delivered.requests >= 5, "{delivered:?}");
    assert_eq!(delivered.oversized_requests, 0);
    let records = received(&sink).await;
    assert_eq!(records.len(), delivered.requests);
    for r in &records {
        assert_eq!(r["path"], "/custom/path");
        assert!(
            r["raw_bytes"].as_u64().unwrap() as usize <= max,
            "{}",
            r["raw_bytes"]
        );
        assert_eq!(
            resource_of(r),
            resource(),
            "every request carries the resource"
        );
    }
    assert_same_points(&otlp_points(&records), &expected_otlp_points(&window));
}

#[test]
fn the_opentelemetry_proto_crate_decodes_our_bytes() {
    let window = awkward_window("adx_otlp_crate", 1_790_000_000_000);
    let template = OtlpTemplate::new(&resource(), 6).unwrap();
    let plan = template.plan(&window, 4 << 20);
    let mut encoder = OtlpEncoder::new(&template);
    let gz = encoder.encode(&window, &plan.order).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw, encoder.encode_raw(&window, &plan.order));

    let req = UpstreamRequest::decode(raw.as_slice()).unwrap();
    assert_eq!(req.resource_metrics.len(), 1);
    let rm = &req.resource_metrics[0];
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.clone())
    {
        Some(UpstreamValue::StringValue(s)) => s,
        other => panic!("not a string value: {other:?}"),
    };
    let attrs: BTreeMap<String, String> = rm
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect();
    assert_eq!(attrs, resource());
    let sm = &rm.scope_metrics[0];
    let scope = sm.scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("adxexporter", env!("CARGO_PKG_VERSION"))
    );
    let mut got = Vec::new();
    for m in &sm.metrics {
        let Some(Data::Gauge(g)) = &m.data else {
            panic!("{} is not a gauge", m.name)
        };
        for p in &g.data_points {
            let Some(UpstreamPointValue::AsDouble(v)) = p.value else {
                panic!("not as_double")
            };
            assert_eq!(p.start_time_unix_nano, 0);
            let attrs = p
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
            got.push((m.name.clone(), attrs, p.time_unix_nano, v));
        }
    }
    assert_same_points(&got, &expected_otlp_points(&window));
}

/// rotel relaying to `sink`, once its OTLP/HTTP receiver answers an empty export (it has no
/// readiness endpoint).
async fn rotel(sink_url: &str) -> common::Rotel {
    let rotel = common::rotel(sink_url);
    let url = rotel.url.clone();
    eventually("rotel to accept OTLP/HTTP", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let r = client()
                .post(url)
                .header("content-type", "application/x-protobuf")
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    rotel
}

#[tokio::test]
async fn rotel_relays_our_requests_intact() {
    let sink = otlp_sink();
    let rotel = rotel(&sink.url).await;
    let window = awkward_window("adx_otlp_rotel", now_ms() - 60_000);
    let delivered = otlp(&rotel.url, 16 * 1024).push(&window).await.unwrap();
    assert!(delivered.requests > 1);
    let want = expected_otlp_points(&window);
    let records = relayed(&sink, want.len(), "rotel to export every point to the sink").await;
    for r in records
        .iter()
        .filter(|r| r["resources"].as_array().is_some_and(|a| !a.is_empty()))
    {
        assert_eq!(r["path"], "/v1/metrics", "rotel appends the signal path");
        let agent = r["headers"]["user-agent"].as_str().unwrap_or_default();
        assert!(
            agent.starts_with("Rotel"),
            "relayed by rotel, not sent by us: {agent}"
        );
        let attrs = resource_of(r);
        for (k, v) in resource() {
            assert_eq!(
                attrs.get(&k),
                Some(&v),
                "resource attribute {k} survives rotel"
            );
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

#[test]
fn empty_window_sends_nothing() {
    let template = OtlpTemplate::new(&BTreeMap::new(), 1).unwrap();
    assert!(
        template
            .plan(&WriteRequest::default(), 4096)
            .chunks
            .is_empty()
    );
}

mod typed {
    use super::*;
    use adxexporter::prompb::{Label, MetricMetadata, MetricType, Sample, TimeSeries};
    use adxexporter::time::{Span, Ticks};
    use adxexporter::wal::{ExporterRef, RecordHeader, Wal, WalConfig};
    use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};

    const T0: i64 = 638_900_000_000_000_000;
    const MINUTE: i64 = 600_000_000;

    fn header(n: i64) -> RecordHeader {
        RecordHeader {
            exporter: ExporterRef::new("uid-typed", "ns", "typed"),
            generation: 1,
            window_start: Ticks(T0 + n * MINUTE),
            window_end: Ticks(T0 + (n + 1) * MINUTE),
            created: Ticks(T0),
            outputs: vec![],
        }
    }

    fn ms(n: i64) -> i64 {
        Ticks(T0 + n * MINUTE).unix_millis()
    }

    fn series(name: &str, labels: &[(&str, &str)], value: f64, at: i64) -> TimeSeries {
        let mut labels: Vec<Label> = (labels.iter().map(|(n, v)| Label::new(*n, *v)))
            .chain([Label::new("__name__", name)])
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: at,
            }],
        }
    }

    fn metadata(kind: MetricType, family: &str) -> Vec<MetricMetadata> {
        vec![MetricMetadata {
            r#type: kind as i32,
            metric_family_name: family.into(),
            help: "Requests served.".into(),
            unit: "{request}".into(),
        }]
    }

    /// Appends the windows' increases through the WAL (which turns them into running totals)
    /// and decodes the last window's OTLP request with the official crate.
    fn through_wal(windows: Vec<WriteRequest>, delta: bool) -> Vec<Metric> {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, ["otlp"])).unwrap();
        let last = windows.len() as i64 - 1;
        for (n, w) in windows.into_iter().enumerate() {
            let idle = Span(100 * MINUTE);
            wal.append_cumulative(&header(n as i64), w, idle, delta)
                .unwrap();
        }
        let window = wal.read_payload(&header(last).id()).unwrap();
        let template = OtlpTemplate::new(&resource(), 1).unwrap();
        let plan = template.plan(&window, 4 << 20);
        assert_eq!(plan.chunks.len(), 1);
        let raw = OtlpEncoder::new(&template)
            .encode_raw(&window, &plan.order)
            .to_vec();
        let req = UpstreamRequest::decode(raw.as_slice()).unwrap();
        req.resource_metrics[0].scope_metrics[0].metrics.clone()
    }

    fn counter(value: f64, n: i64) -> WriteRequest {
        WriteRequest {
            timeseries: vec![series("requests_total", &[("host", "a")], value, ms(n) + 1)],
            metadata: metadata(MetricType::Counter, "requests_total"),
            cumulative: None,
        }
    }

    #[test]
    fn a_counter_is_a_monotonic_sum_cumulative_from_its_first_window_or_delta() {
        for (delta, want_value, want_start, temporality) in [
            (false, 7.0, ms(0), AggregationTemporality::Cumulative),
            (true, 5.0, ms(1), AggregationTemporality::Delta),
        ] {
            let metrics = through_wal(vec![counter(2.0, 0), counter(5.0, 1)], delta);
            assert_eq!(metrics.len(), 1);
            let m = &metrics[0];
            assert_eq!(
                (m.name.as_str(), m.description.as_str(), m.unit.as_str()),
                ("requests", "Requests served.", "{request}")
            );
            let Some(Data::Sum(sum)) = &m.data else {
                panic!("not a Sum: {m:?}")
            };
            assert!(sum.is_monotonic);
            assert_eq!(sum.aggregation_temporality, temporality as i32);
            let p = &sum.data_points[0];
            assert_eq!(p.value, Some(UpstreamPointValue::AsDouble(want_value)));
            assert_eq!(p.start_time_unix_nano, want_start as u64 * 1_000_000);
            assert_eq!(p.time_unix_nano, (ms(1) as u64 + 1) * 1_000_000);
        }
    }

    fn histogram(n: i64, buckets: &[(&str, f64)], sum: f64) -> WriteRequest {
        let at = ms(n) + 1;
        let mut timeseries: Vec<TimeSeries> = (buckets.iter())
            .map(|(le, v)| series("latency_bucket", &[("le", le), ("route", "/a")], *v, at))
            .collect();
        let count = buckets.last().map_or(0.0, |b| b.1);
        timeseries.push(series("latency_count", &[("route", "/a")], count, at));
        timeseries.push(series("latency_sum", &[("route", "/a")], sum, at));
        timeseries.sort_by(|a, b| a.labels.cmp(&b.labels));
        WriteRequest {
            timeseries,
            metadata: metadata(MetricType::Histogram, "latency"),
            cumulative: None,
        }
    }

    #[test]
    fn a_histogram_is_one_point_per_series_with_bounds_counts_and_sum() {
        let windows = || {
            vec![
                histogram(0, &[("0.1", 1.0), ("1", 3.0), ("+Inf", 4.0)], 2.5),
                histogram(1, &[("0.1", 2.0), ("1", 2.0), ("+Inf", 5.0)], 9.0),
            ]
        };
        for (delta, counts, count, sum, start) in [
            (false, vec![3, 2, 4], 9, 11.5, ms(0)),
            (true, vec![2, 0, 3], 5, 9.0, ms(1)),
        ] {
            let metrics = through_wal(windows(), delta);
            assert_eq!(metrics.len(), 1);
            let Some(Data::Histogram(h)) = &metrics[0].data else {
                panic!("not a Histogram: {:?}", metrics[0])
            };
            assert_eq!(metrics[0].name, "latency");
            assert_eq!(h.data_points.len(), 1);
            let p = &h.data_points[0];
            assert_eq!(p.explicit_bounds, [0.1, 1.0]);
            assert_eq!(p.bucket_counts, counts);
            assert_eq!((p.count, p.sum), (count, Some(sum)));
            assert_eq!(p.start_time_unix_nano, start as u64 * 1_000_000);
            assert_eq!(p.attributes.len(), 1);
            assert_eq!(p.attributes[0].key, "route");
        }
    }
}
