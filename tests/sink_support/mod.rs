//! Shared by the sink integration tests: window builders with awkward data, the scriptable Python OTLP
//! sink (`tests/peers/otlp_sink.py`) and float comparison that treats NaN as equal to NaN.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{Peer, repo_root, venv_bin};

/// Unix ms now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A series with labels sorted by name (`__name__` included) and the given samples.
pub fn series(name: &str, labels: &[(&str, &str)], samples: Vec<Sample>) -> TimeSeries {
    let mut labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, *v))
        .chain([Label::new("__name__", name)])
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries { labels, samples }
}

/// `n` samples every 10 s ending at `end_ms`, values from `value(i)`.
pub fn samples(n: usize, end_ms: i64, value: impl Fn(usize) -> f64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            value: value(i),
            timestamp: end_ms - (n - 1 - i) as i64 * 10_000,
        })
        .collect()
}

/// A window of awkward data ending at `end_ms` (keep it within the last ~50 min for Prometheus):
/// special floats, unicode and escape characters in label values, many samples per series.
pub fn awkward_window(prefix: &str, end_ms: i64) -> WriteRequest {
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e-300,
        1.7976931348623157e308,
        0.1 + 0.2,
    ];
    let mut timeseries = vec![
        series(
            &format!("{prefix}_special"),
            &[("host", "h1"), ("job", "sinks")],
            samples(specials.len(), end_ms, |i| specials[i]),
        ),
        series(
            &format!("{prefix}_unicode"),
            &[
                ("path", "/ä/日本語/🚀"),
                ("quote", "say \"hi\"\\n\tnew\nline"),
                ("sql", "a='b' AND c=\"d\" {x} [y]"),
            ],
            samples(50, end_ms, |i| i as f64 * 1.25 - 20.0),
        ),
    ];
    for h in 0..8 {
        timeseries.push(series(
            &format!("{prefix}_many"),
            &[("host", &format!("host-{h:02}")), ("region", "westeurope")],
            samples(120, end_ms, |i| (h * 1000 + i) as f64 / 7.0),
        ));
    }
    WriteRequest::new(timeseries)
}

/// Labels of a series as a map (the form receivers hand back).
pub fn label_map(s: &TimeSeries) -> BTreeMap<String, String> {
    s.labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// Equal as stored values: bit-equal, or both NaN, or both zero (prost, like any proto3 encoder that
/// skips default scalars, does not put `-0.0` on the wire, so it arrives as `0`).
pub fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

/// Prometheus/VM text form of a float (`NaN`, `+Inf`, `-Inf`, or a number).
pub fn parse_prom_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s
            .parse()
            .unwrap_or_else(|e| panic!("not a float: {s:?}: {e}")),
    }
}

/// The Python OTLP sink on a free port.
pub fn otlp_sink() -> Peer {
    let script = repo_root().join("tests/peers/otlp_sink.py");
    let script = script.display().to_string();
    Peer::spawn(
        "otlp-sink",
        &venv_bin("python"),
        &[&script, "{port}", "{dir}/received.jsonl"],
        "/",
    )
}

pub fn client() -> reqwest::Client {
    adxexporter::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// `GET base?query…` and the body as text (2xx required).
pub async fn get_text(base: &str, query: &[(&str, &str)]) -> String {
    let mut url: url::Url = base.parse().unwrap();
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let response = client().get(url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {base}: {}",
        response.status()
    );
    response.text().await.unwrap()
}

/// `GET base?query…` parsed as JSON.
pub async fn get_json(base: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let text = get_text(base, query).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Scripts the sink's next answers.
pub async fn script(sink: &Peer, entries: serde_json::Value) {
    control(sink, serde_json::json!({ "script": entries })).await;
}

/// Posts `body` to the sink's `/control` (script, and for the gRPC receiver `require`).
pub async fn control(sink: &Peer, body: serde_json::Value) {
    let status = client()
        .post(format!("{}/control", sink.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// Every request the sink has recorded.
pub async fn received(sink: &Peer) -> Vec<serde_json::Value> {
    serde_json::from_value(get_json(&format!("{}/received", sink.url), &[]).await).unwrap()
}

/// The sink's records once at least `points` data points arrived through a relay (rotel), polled up to 30 s.
pub async fn relayed(sink: &Peer, points: usize, what: &str) -> Vec<serde_json::Value> {
    eventually(what, Duration::from_secs(30), || async {
        let records = received(sink).await;
        (otlp_points(&records).len() >= points).then_some(records)
    })
    .await
}

/// Polls `probe` until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One OTLP data point as compared in tests: (metric name, attributes in order, time_unix_nano, value).
pub type Point = (String, Vec<(String, String)>, u64, f64);

/// The OTLP points the Python sink decoded, flattened: (metric, attrs, time_unix_nano, value).
pub fn otlp_points(records: &[serde_json::Value]) -> Vec<Point> {
    let mut out = Vec::new();
    for r in records {
        for res in r["resources"].as_array().into_iter().flatten() {
            for scope in res["scopes"].as_array().into_iter().flatten() {
                for m in scope["metrics"].as_array().into_iter().flatten() {
                    assert_eq!(m["kind"], "gauge", "{m}");
                    for p in m["points"].as_array().into_iter().flatten() {
                        assert_eq!(p["value_kind"], "as_double", "{p}");
                        let attrs = p["attrs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|kv| {
                                (
                                    kv[0].as_str().unwrap().to_owned(),
                                    kv[1].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect();
                        let value = match &p["value"] {
                            serde_json::Value::String(s) => parse_prom_float(s),
                            v => v.as_f64().unwrap(),
                        };
                        out.push((
                            m["name"].as_str().unwrap().to_owned(),
                            attrs,
                            p["time_unix_nano"].as_u64().unwrap(),
                            value,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// What an OTLP receiver should have decoded from `window`, in our request order (grouped by name).
pub fn expected_otlp_points(window: &WriteRequest) -> Vec<Point> {
    let mut names: Vec<&str> = Vec::new();
    for s in &window.timeseries {
        if !names.contains(&s.metric_name()) {
            names.push(s.metric_name());
        }
    }
    let mut out = Vec::new();
    for name in names {
        for s in window.timeseries.iter().filter(|s| s.metric_name() == name) {
            let attrs: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|l| l.name != "__name__")
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for p in &s.samples {
                out.push((
                    name.to_owned(),
                    attrs.clone(),
                    p.timestamp as u64 * 1_000_000,
                    p.value,
                ));
            }
        }
    }
    out
}

/// Asserts two point lists are equal, NaN equal to NaN.
pub fn assert_same_points(got: &[Point], want: &[Point]) {
    assert_eq!(got.len(), want.len(), "point count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2));
        assert!(same_value(g.3, w.3), "{g:?} != {w:?}");
    }
}
