//! Metric types end to end (issue #16): the real `adxexporter run` binary against duckdb-kql with
//! `type: counter` and `type: histogram` resources, checked against real peers with an exact oracle:
//! Prometheus (remote write; `increase()`, `resets()` and `histogram_quantile()` over what it
//! stored, across a kill -9 mid catch-up, a receiver outage and a kill -9 during the outage), the
//! Python OTLP decoder on the official `opentelemetry-proto` package (Sum and Histogram points,
//! temporality, start times, description, unit), the scrape page scraped by a real Prometheus
//! (`# HELP`/`# TYPE` and its metadata API), and the remote-write request itself decoded from
//! upstream's field numbers (metadata: type, help, unit), because no receiver installed here keeps
//! remote-write 1.0 metadata: Prometheus 2.42's write handler appends samples only and its
//! `/api/v1/metadata` serves scraped targets' metadata only; VictoriaMetrics 1.79 has no metadata
//! API.
//!
//! The dataset: table `Events(Timestamp, Host, Latency)`, for every 5 s window `w` and host `h`
//! the events of [`latencies`] (every latency once in window 0, then 1–4 events per window cycling
//! through the latencies, so most windows leave some histogram buckets empty: the query returns
//! no row for them, as any `summarize … by le` does). Latencies are exact in binary floating
//! point, so counts, sums and running totals are exact and compared bit for bit.

mod common;
mod run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{duckdb_kql, free_port, http_get};
use run_support::{
    Dataset, Exporter, HOSTS, OtlpSink, Prometheus, backlog_windows, condition, eventually, now_ms,
    rfc3339, watermark_ms,
};

/// Bound for every wait on the system under test.
const LIMIT: Duration = Duration::from_secs(90);
const INTERVAL_S: i64 = 5;
/// Event latencies (seconds): exact in binary floating point.
const LATENCIES: [f64; 5] = [0.125, 0.5, 0.75, 2.0, 4.0];
/// The histogram's finite bucket bounds (the query's `case`), and their `le` texts with `+Inf`.
const BOUNDS: [f64; 3] = [0.25, 1.0, 2.5];
const LES: [&str; 4] = ["0.25", "1", "2.5", "+Inf"];

const COUNTER: &str = "e2e_requests";
const HISTOGRAM: &str = "e2e_latency_seconds";

const COUNTER_BODY: &str = "Events
| where Timestamp between (_startTime .. _endTime)
| summarize Count = count() by Host
| extend ts = _startTime";

const HISTOGRAM_BODY: &str = "Events
| where Timestamp between (_startTime .. _endTime)
| extend le = case(Latency <= 0.25, 0.25, Latency <= 1.0, 1.0, Latency <= 2.5, 2.5, real(+inf))
| summarize Count = count(), Total = sum(Latency) by Host, le
| extend ts = _startTime";

/// The latencies of the events of window `w` for host `h`.
fn latencies(w: i64, h: usize) -> Vec<f64> {
    if w == 0 {
        return LATENCIES.to_vec();
    }
    let w = w as usize;
    let n = 1 + (w * 3 + h) % 4;
    (0..n).map(|i| LATENCIES[(w * 2 + h + i) % 5]).collect()
}

/// duckdb-kql init SQL: the events, half a second apart from each window's start.
fn init_sql(data: &Dataset) -> String {
    let mut rows = Vec::new();
    for w in 0..data.windows {
        for (h, host) in HOSTS.iter().enumerate() {
            for (i, latency) in latencies(w, h).into_iter().enumerate() {
                let at_us = (data.window_start(w) + i as i64 * 500) * 1000;
                rows.push(format!("(make_timestamp({at_us}), '{host}', {latency:?})"));
            }
        }
    }
    format!(
        "CREATE TABLE Events (Timestamp TIMESTAMP, Host VARCHAR, Latency DOUBLE);\nINSERT INTO Events VALUES\n{};\n",
        rows.join(",\n")
    )
}

/// Index of the bucket (in [`LES`]) a latency falls in.
fn bucket_of(latency: f64) -> usize {
    BOUNDS
        .iter()
        .position(|b| latency <= *b)
        .unwrap_or(BOUNDS.len())
}

/// Running totals of one host after window `w`: the event count, each bucket's own count (not
/// cumulative over `le`) and the sum of latencies, over windows `0..=w`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    count: f64,
    own: [f64; 4],
    sum: f64,
}

impl Totals {
    /// The `_bucket{le}` values: cumulative over the bounds.
    fn buckets(&self) -> [f64; 4] {
        let mut out = [0.0; 4];
        let mut acc = 0.0;
        for (o, own) in out.iter_mut().zip(self.own) {
            acc += own;
            *o = acc;
        }
        out
    }
}

/// The oracle: `totals(h)[w]` for every host and data window.
fn totals(data: &Dataset, h: usize) -> Vec<Totals> {
    let mut t = Totals::default();
    (0..data.windows)
        .map(|w| {
            for latency in latencies(w, h) {
                t.count += 1.0;
                t.own[bucket_of(latency)] += 1.0;
                t.sum += latency;
            }
            t
        })
        .collect()
}

/// The events of window `w` for host `h` alone.
fn window_count(w: i64, h: usize) -> f64 {
    latencies(w, h).len() as f64
}

/// A series as receivers report it: every label, `__name__` included.
type Labels = BTreeMap<String, String>;
/// Every series' samples: labels → [(ms, value)] in time order.
type Stored = BTreeMap<Labels, Vec<(i64, f64)>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What remote write must deliver: the running totals of the counter `counter_total` (if given)
/// and of the histogram [`HISTOGRAM`] (if `histogram`), one sample per host per data window
/// (every host has events in every window), stamped with the window start.
fn expected_series(data: &Dataset, counter_total: Option<&str>, histogram: bool) -> Stored {
    let mut out = Stored::new();
    let mut push = |l: Labels, ms: i64, v: f64| out.entry(l).or_default().push((ms, v));
    for (h, host) in HOSTS.iter().enumerate() {
        for (w, t) in totals(data, h).into_iter().enumerate() {
            let ms = data.window_start(w as i64);
            if let Some(name) = counter_total {
                push(labels(&[("__name__", name), ("Host", host)]), ms, t.count);
            }
            if histogram {
                let bucket = format!("{HISTOGRAM}_bucket");
                for (le, v) in LES.iter().zip(t.buckets()) {
                    push(
                        labels(&[("__name__", &bucket), ("Host", host), ("le", le)]),
                        ms,
                        v,
                    );
                }
                let count = format!("{HISTOGRAM}_count");
                push(labels(&[("__name__", &count), ("Host", host)]), ms, t.count);
                let sum = format!("{HISTOGRAM}_sum");
                push(labels(&[("__name__", &sum), ("Host", host)]), ms, t.sum);
            }
        }
    }
    out
}

/// Asserts `got` holds exactly the `want` series and samples (bit-equal values), and that no
/// series ever decreases (a running total that restarted would).
fn assert_stored(what: &str, got: &Stored, want: &Stored) {
    for (l, samples) in got {
        for pair in samples.windows(2) {
            assert!(
                pair[1].1 >= pair[0].1 && pair[1].0 > pair[0].0,
                "{what}: {l:?} decreases (a reset) at {}: {samples:?}",
                rfc3339(pair[1].0)
            );
        }
    }
    let extra: Vec<_> = got.keys().filter(|l| !want.contains_key(*l)).collect();
    let missing: Vec<_> = want.keys().filter(|l| !got.contains_key(*l)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: missing series {missing:?}, extra series {extra:?}"
    );
    for (l, want) in want {
        let got = &got[l];
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| g.0 == w.0 && g.1.to_bits() == w.1.to_bits());
        assert!(same, "{what}: {l:?}\n got  {got:?}\n want {want:?}");
    }
}

/// `GET /api/v1/query?query=expr&time=…` on a Prometheus: the result, once it answered success.
fn prom_query(port: u16, expr: &str, time_ms: i64) -> serde_json::Value {
    let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let path = format!(
        "/api/v1/query?query={q}&time={}.{:03}",
        time_ms / 1000,
        time_ms % 1000
    );
    let (code, body) = http_get(port, &path).expect("Prometheus answers");
    assert_eq!(code, 200, "{expr}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].clone()
}

fn labels_of(series: &serde_json::Value) -> Labels {
    series["metric"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn prom_float(v: &serde_json::Value) -> f64 {
    match v.as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

/// Every sample of the series matching `selector` in the hour before now, as stored.
fn prom_stored(port: u16, selector: &str) -> Stored {
    let result = prom_query(port, &format!("{selector}[1h]"), now_ms() + 60_000);
    let mut out = Stored::new();
    for series in result.as_array().unwrap() {
        let samples = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let ms = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (ms, prom_float(&p[1]))
            })
            .collect();
        assert!(out.insert(labels_of(series), samples).is_none());
    }
    out
}

/// An instant vector: labels → value.
fn prom_vector(port: u16, expr: &str, time_ms: i64) -> BTreeMap<Labels, f64> {
    let result = prom_query(port, expr, time_ms);
    result
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (labels_of(s), prom_float(&s["value"][1])))
        .collect()
}

/// The value per host of an instant vector whose series carry only `Host`.
fn per_host(v: &BTreeMap<Labels, f64>) -> BTreeMap<String, f64> {
    v.iter()
        .map(|(l, v)| {
            assert_eq!(l.keys().collect::<Vec<_>>(), ["Host"], "{l:?}");
            (l["Host"].clone(), *v)
        })
        .collect()
}

/// Prometheus' `bucketQuantile` (promql/quantile.go) over classic buckets `(upper bound,
/// cumulative count)` sorted by bound, the last `+Inf`, monotonic: the rank `q·count` is found in
/// the first bucket reaching it and interpolated linearly inside it (from 0 in the first bucket);
/// a rank in the `+Inf` bucket gives the largest finite bound.
fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let last = buckets.len() - 1;
    let observations = buckets[last].1;
    let rank = q * observations;
    let b = buckets[..last]
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(last);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count, mut rank) = (0.0, buckets[b].0, buckets[b].1, rank);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Classic buckets of cumulative `_bucket` values in [`LES`] order.
fn classic(cumulative: [f64; 4]) -> Vec<(f64, f64)> {
    BOUNDS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(cumulative)
        .collect()
}

/// Equal up to rounding: the test computes Prometheus' interpolation with the same operations in
/// the same order, but Go may fuse a multiply-add where Rust does not.
fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// One test's directory (E2E_KEEP=1 keeps it: logs, WAL, status), duckdb-kql loaded with the
/// events of `data`, and an empty manifests directory.
struct Setup {
    data: Dataset,
    work: tempfile::TempDir,
    kusto: common::Peer,
}

impl Setup {
    fn new(data: Dataset) -> Setup {
        let work = tempfile::Builder::new()
            .prefix("adxexporter-types-")
            .disable_cleanup(std::env::var_os("E2E_KEEP").is_some())
            .tempdir()
            .unwrap();
        let init = work.path().join("init.sql");
        std::fs::write(&init, init_sql(&data)).unwrap();
        let kusto = duckdb_kql(&init);
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        Setup { data, work, kusto }
    }

    fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    /// Writes resource `e2e/<name>` running `body` from the first data window every 5 s;
    /// `transform` (YAML lines) is its `spec.transform`, `extra` more `spec` lines.
    fn resource(&self, name: &str, body: &str, transform: &str, extra: &str) {
        let indent = |text: &str, by: &str| -> String {
            text.lines().map(|l| format!("{by}{l}\n")).collect()
        };
        let yaml = format!(
            "apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: {name}
  namespace: e2e
spec:
  database: memory
  interval: {INTERVAL_S}s
  startTime: \"{}\"
  body: |
{}  transform:
{}{}",
            rfc3339(self.data.first_start_ms),
            indent(body, "    "),
            indent(transform, "    "),
            indent(extra, "  "),
        );
        std::fs::write(self.manifests().join(format!("{name}.yaml")), yaml).unwrap();
    }

    fn start(&self, outputs: &[&str]) -> Exporter {
        let outputs: Vec<String> = outputs.iter().map(|a| (*a).to_owned()).collect();
        Exporter::start(
            self.work.path(),
            &self.kusto.url,
            &self.manifests(),
            &outputs,
        )
    }
}

/// `spec.transform` of the counter named `name` (`<name>_total` in Prometheus), plus `more`.
fn counter_transform(name: &str, more: &str) -> String {
    format!(
        "type: counter\ndefaultMetricName: {name}\nvalueColumns: [Count]\ntimestampColumn: ts\nlabelColumns: [Host]\n{more}"
    )
}

/// `spec.transform` of the histogram [`HISTOGRAM`], plus `more`.
fn histogram_transform(more: &str) -> String {
    format!(
        "type: histogram\ndefaultMetricName: {HISTOGRAM}\nvalueColumns: [Count]\nbucketColumn: le\nsumColumn: Total\ntimestampColumn: ts\nlabelColumns: [Host]\n{more}"
    )
}

/// Data windows of which Prometheus holds the counter of every host.
fn windows_in_prometheus(port: u16) -> usize {
    let stored = prom_stored(port, &format!("{COUNTER}_total"));
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for samples in stored.values() {
        for (ms, _) in samples {
            *per_window.entry(*ms).or_default() += 1;
        }
    }
    per_window.values().filter(|n| **n == HOSTS.len()).count()
}

/// Counter and histogram resources remote-written to Prometheus through a kill -9 in the middle
/// of the catch-up, a receiver outage while the rest of the catch-up waits in the WAL, and a kill
/// -9 during the outage. Prometheus ends up holding exactly the oracle's running totals (so no
/// window counted twice, none lost, no reset), and `increase()`, `resets()` and
/// `histogram_quantile()` over them give what the oracle's windows give.
#[test]
fn counter_and_histogram_in_prometheus_survive_kill_and_outage() {
    let s = Setup::new(Dataset::ending_now(INTERVAL_S, 60));
    let data = s.data;
    s.resource(
        "requests",
        COUNTER_BODY,
        &counter_transform(COUNTER, ""),
        "",
    );
    s.resource("latency", HISTOGRAM_BODY, &histogram_transform(""), "");
    let mut prom = Prometheus::start();
    let mut exporter = s.start(&["--remote-write-endpoint", &prom.write_url()]);
    let names = ["requests", "latency"];

    // 1. kill -9 once a few windows reached Prometheus (the catch-up is still going).
    eventually(
        "a few windows in Prometheus",
        LIMIT,
        || (windows_in_prometheus(prom.port) >= 5).then_some(()),
        || exporter.log_tail(),
    );
    exporter.kill9();
    let at_kill = windows_in_prometheus(prom.port);
    assert!(
        at_kill < data.windows as usize,
        "the kill was meant to land during the catch-up"
    );

    // 2. Receiver outage: the restarted process queries the rest of the catch-up into the WAL
    // while every push fails.
    prom.stop();
    exporter.restart();
    let mut backlog = BTreeMap::new();
    for name in names {
        let down = eventually(
            "the rest of the catch-up to wait in the WAL",
            LIMIT,
            || {
                exporter.status_of(name).filter(|st| {
                    watermark_ms(st).is_some_and(|w| w >= data.end_ms())
                        && (1..u64::MAX).contains(&backlog_windows(st))
                        && condition(st, "DeliveryHealthy").is_some_and(|c| c.0 == "False")
                })
            },
            || format!("{:?}\n{}", exporter.status_of(name), exporter.log_tail()),
        );
        backlog.insert(name, backlog_windows(&down));
    }

    // 3. kill -9 while those windows wait: their running totals are already advanced, so the
    // restarted process must push them as stored, not query and count them again.
    exporter.kill9();
    exporter.restart();
    prom.restart();
    for name in names {
        let status = exporter.wait_caught_up(name, data.end_ms(), LIMIT);
        assert_eq!(status["deadLettered"]["windows"], 0, "{name}: {status}");
    }
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    eprintln!(
        "kill at {at_kill} of {} windows in Prometheus, backlog during the outage {backlog:?}",
        data.windows
    );

    // Exactly the oracle's running totals, no sample decreasing.
    let stored = prom_stored(prom.port, "{__name__=~\"e2e_.*\"}");
    let want = expected_series(&data, Some(&format!("{COUNTER}_total")), true);
    assert_stored("Prometheus", &stored, &want);

    // `increase()` over [t_a, t_b], both window starts: Prometheus 2.x selects the samples of
    // the closed range, the first at its start and the last at its end, so it extrapolates
    // nothing and returns total(b) − total(a) exactly: the events of windows a+1..=b.
    let (a, b) = (data.windows / 4, data.windows - 1);
    let (t_a, t_b) = (data.window_start(a), data.window_start(b));
    let range = format!("[{}s]", (t_b - t_a) / 1000);
    let increase = per_host(&prom_vector(
        prom.port,
        &format!("increase({COUNTER}_total{range})"),
        t_b,
    ));
    let mut all = 0.0;
    for (h, host) in HOSTS.iter().enumerate() {
        let want: f64 = (a + 1..=b).map(|w| window_count(w, h)).sum();
        assert_eq!(increase.get(*host), Some(&want), "increase() of {host}");
        all += want;
    }
    let summed = prom_vector(
        prom.port,
        &format!("sum(increase({COUNTER}_total{range}))"),
        t_b,
    );
    assert_eq!(
        summed.values().collect::<Vec<_>>(),
        [&all],
        "sum(increase())"
    );
    // Prometheus itself sees no counter reset in any series.
    let mut series = 0;
    for name in [
        format!("{COUNTER}_total"),
        format!("{HISTOGRAM}_bucket"),
        format!("{HISTOGRAM}_count"),
        format!("{HISTOGRAM}_sum"),
    ] {
        let resets = prom_vector(prom.port, &format!("resets({name}[1h])"), t_b);
        assert!(resets.values().all(|r| *r == 0.0), "{name}: {resets:?}");
        series += resets.len();
    }
    assert_eq!(series, want.len());

    // histogram_quantile() over the running totals at the last window (each host's whole
    // history), and over the windows a+1..=b of every host together.
    let all_totals: Vec<Vec<Totals>> = (0..HOSTS.len()).map(|h| totals(&data, h)).collect();
    let mut quantiles = Vec::new();
    for q in [0.25, 0.5, 0.75, 0.9, 0.99] {
        let got = per_host(&prom_vector(
            prom.port,
            &format!("histogram_quantile({q}, {HISTOGRAM}_bucket)"),
            t_b,
        ));
        assert_eq!(got.len(), HOSTS.len(), "{got:?}");
        for (h, host) in HOSTS.iter().enumerate() {
            let want = bucket_quantile(q, &classic(all_totals[h][b as usize].buckets()));
            assert_close(&format!("quantile {q} of {host}"), got[*host], want);
        }
        let got = prom_vector(
            prom.port,
            &format!("histogram_quantile({q}, sum by (le) (increase({HISTOGRAM}_bucket{range})))"),
            t_b,
        );
        let mut window_buckets = [0.0; 4];
        for t in &all_totals {
            let (end, start) = (t[b as usize].buckets(), t[a as usize].buckets());
            for i in 0..4 {
                window_buckets[i] += end[i] - start[i];
            }
        }
        let want = bucket_quantile(q, &classic(window_buckets));
        assert_eq!(got.len(), 1, "{got:?}");
        let got = *got.values().next().unwrap();
        assert_close(
            &format!("quantile {q} of windows {}..={b}", a + 1),
            got,
            want,
        );
        quantiles.push((q, got));
    }
    eprintln!(
        "histogram_quantile over windows {}..={b} of all hosts: {quantiles:?}",
        a + 1
    );
}

/// One OTLP data point as recorded by the decoder, with its metric's fields.
#[derive(Debug)]
struct OtlpPoint {
    metric: serde_json::Value,
    point: serde_json::Value,
}

impl OtlpPoint {
    fn host(&self) -> String {
        let attrs = self.point["attrs"].as_array().unwrap();
        assert_eq!(attrs.len(), 1, "{:?}", self.point);
        assert_eq!(attrs[0][0], "Host", "{:?}", self.point);
        attrs[0][1].as_str().unwrap().to_owned()
    }

    fn ms(&self, field: &str) -> i64 {
        let ns = self.point[field].as_u64().unwrap();
        assert_eq!(ns % 1_000_000, 0, "{field}: {:?}", self.point);
        (ns / 1_000_000) as i64
    }
}

/// Every OTLP data point received, per metric name, in arrival order.
fn otlp_points(records: &[serde_json::Value]) -> BTreeMap<String, Vec<OtlpPoint>> {
    let mut out: BTreeMap<String, Vec<OtlpPoint>> = BTreeMap::new();
    for r in records.iter().filter(|r| r["path"] == "/v1/metrics") {
        assert!(r.get("decode_error").is_none(), "{r}");
        for res in r["resources"].as_array().into_iter().flatten() {
            for scope in res["scopes"].as_array().into_iter().flatten() {
                for m in scope["metrics"].as_array().into_iter().flatten() {
                    let mut metric = m.clone();
                    let points = metric["points"].take();
                    for point in points.as_array().into_iter().flatten() {
                        out.entry(m["name"].as_str().unwrap().to_owned())
                            .or_default()
                            .push(OtlpPoint {
                                metric: metric.clone(),
                                point: point.clone(),
                            });
                    }
                }
            }
        }
    }
    out
}

/// Asserts every point of `points` has the metric fields `want` (name, kind, temporality, …).
fn assert_metric_fields(name: &str, points: &[OtlpPoint], want: serde_json::Value) {
    assert!(!points.is_empty(), "no {name} points");
    for p in points {
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&p.metric[k], v, "{name}.{k}: {:?}", p.metric);
        }
    }
}

/// Asserts each (host, window) arrived exactly once and returns the points by it.
fn by_host_and_window<'p>(
    name: &str,
    data: &Dataset,
    points: &'p [OtlpPoint],
) -> BTreeMap<(String, i64), &'p OtlpPoint> {
    let mut out = BTreeMap::new();
    for p in points {
        let key = (p.host(), p.ms("time_unix_nano"));
        assert!(
            out.insert(key.clone(), p).is_none(),
            "{name}: {key:?} twice"
        );
    }
    let want: BTreeSet<(String, i64)> = (0..data.windows)
        .flat_map(|w| HOSTS.map(|h| (h.to_owned(), data.window_start(w))))
        .collect();
    let got: BTreeSet<(String, i64)> = out.keys().cloned().collect();
    assert_eq!(got, want, "{name}: points per host and window");
    out
}

fn otlp_value(p: &OtlpPoint) -> f64 {
    assert_eq!(p.point["value_kind"], "as_double", "{:?}", p.point);
    prom_float(&p.point["value"])
}

/// OTLP: a counter is a monotonic Sum, cumulative by default (running totals, start time the first
/// window's start) or `temporality: delta` (each window's increase, starting at the window's
/// start); a histogram is Histogram points (explicit bounds, per-bucket counts, count, sum) with
/// the series' start; description and unit travel with both. The same run remote-writes to the
/// decoder too: each request carries the metadata (type, help, unit) of the families it holds, the
/// samples are the running totals, and our WAL-only field never leaves the process.
#[test]
fn otlp_sums_and_histograms_and_remote_write_metadata() {
    let s = Setup::new(Dataset::ending_now(INTERVAL_S, 6));
    let data = s.data;
    let delta = "e2e_requests_delta";
    s.resource(
        "requests",
        COUNTER_BODY,
        &counter_transform(
            COUNTER,
            "description: Requests served.\nunit: \"{request}\"\n",
        ),
        "",
    );
    s.resource(
        "requests-delta",
        COUNTER_BODY,
        &counter_transform(delta, "temporality: delta\n"),
        "",
    );
    s.resource(
        "latency",
        HISTOGRAM_BODY,
        &histogram_transform("description: Request latency.\nunit: s\n"),
        "",
    );
    let sink = OtlpSink::start_with(&["--decode-remote-write"]);
    let mut exporter = s.start(&[
        "--otlp-endpoint",
        &sink.url(),
        "--remote-write-endpoint",
        &sink.write_url(),
    ]);
    for name in ["requests", "requests-delta", "latency"] {
        exporter.wait_caught_up(name, data.end_ms(), LIMIT);
    }
    let exit = exporter.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}\n{}", exporter.log_tail());
    let records = sink.records();
    let points = otlp_points(&records);
    assert_eq!(
        points.keys().collect::<Vec<_>>(),
        [HISTOGRAM, COUNTER, delta],
        "OTLP metric names (a counter's carry no _total)"
    );
    let first_ms = data.window_start(0);
    let all_totals: Vec<Vec<Totals>> = (0..HOSTS.len()).map(|h| totals(&data, h)).collect();
    let host_index = |host: &str| HOSTS.iter().position(|h| *h == host).unwrap();
    let window_of = |ms: i64| (ms - first_ms) / data.interval_ms;

    // Cumulative Sum: running totals since the first window.
    assert_metric_fields(
        COUNTER,
        &points[COUNTER],
        serde_json::json!({"kind": "sum", "monotonic": true, "temporality": "cumulative",
            "description": "Requests served.", "unit": "{request}"}),
    );
    for ((host, ms), p) in by_host_and_window(COUNTER, &data, &points[COUNTER]) {
        let t = all_totals[host_index(&host)][window_of(ms) as usize];
        assert_eq!(otlp_value(p), t.count, "{host} at {}", rfc3339(ms));
        assert_eq!(p.ms("start_time_unix_nano"), first_ms, "{:?}", p.point);
    }

    // Delta Sum: each window's own count, starting at the window's start.
    assert_metric_fields(
        delta,
        &points[delta],
        serde_json::json!({"kind": "sum", "monotonic": true, "temporality": "delta",
            "description": "", "unit": ""}),
    );
    for ((host, ms), p) in by_host_and_window(delta, &data, &points[delta]) {
        let want = window_count(window_of(ms), host_index(&host));
        assert_eq!(otlp_value(p), want, "{host} at {}", rfc3339(ms));
        assert_eq!(p.ms("start_time_unix_nano"), ms, "{:?}", p.point);
    }

    // Histogram: explicit bounds, each bucket's own running count, count and sum.
    assert_metric_fields(
        HISTOGRAM,
        &points[HISTOGRAM],
        serde_json::json!({"kind": "histogram", "temporality": "cumulative",
            "description": "Request latency.", "unit": "s"}),
    );
    for ((host, ms), p) in by_host_and_window(HISTOGRAM, &data, &points[HISTOGRAM]) {
        let t = all_totals[host_index(&host)][window_of(ms) as usize];
        let bounds: Vec<f64> = (p.point["explicit_bounds"].as_array().unwrap().iter())
            .map(prom_float)
            .collect();
        assert_eq!(bounds, BOUNDS, "{:?}", p.point);
        let counts: Vec<f64> = (p.point["bucket_counts"].as_array().unwrap().iter())
            .map(|c| c.as_u64().unwrap() as f64)
            .collect();
        assert_eq!(counts, t.own, "{host} at {}: {:?}", rfc3339(ms), p.point);
        assert_eq!(p.point["count"].as_u64().unwrap() as f64, t.count);
        assert_eq!(prom_float(&p.point["sum"]).to_bits(), t.sum.to_bits());
        assert_eq!(p.ms("start_time_unix_nano"), first_ms, "{:?}", p.point);
    }

    // Remote write: fields 1 (timeseries) and 3 (metadata) only, every request self-described.
    let writes: Vec<&serde_json::Value> = (records.iter())
        .filter(|r| r["path"] == "/api/v1/write")
        .map(|r| &r["remote_write"])
        .collect();
    assert!(!writes.is_empty(), "no remote-write request decoded");
    let mut stored = Stored::new();
    let mut metadata = BTreeSet::new();
    for w in &writes {
        let fields: BTreeSet<u64> = (w["fields"].as_array().unwrap().iter())
            .map(|f| f.as_u64().unwrap())
            .collect();
        assert!(
            fields.is_subset(&BTreeSet::from([1, 3])),
            "fields {fields:?}"
        );
        let families: Vec<(String, String, String, String)> = (w["metadata"].as_array().unwrap())
            .iter()
            .map(|m| {
                let field = |k: &str| m[k].as_str().unwrap().to_owned();
                (field("family"), field("type"), field("help"), field("unit"))
            })
            .collect();
        for ts in w["timeseries"].as_array().unwrap() {
            let l: Labels = (ts["labels"].as_array().unwrap().iter())
                .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                .collect();
            let name = &l["__name__"];
            let family = families.iter().find(|f| {
                *name == f.0 || (f.1 == "HISTOGRAM" && name.starts_with(&format!("{}_", f.0)))
            });
            assert!(family.is_some(), "{name} without metadata in {families:?}");
            let samples = stored.entry(l).or_default();
            for p in ts["samples"].as_array().unwrap() {
                samples.push((p[0].as_i64().unwrap(), prom_float(&p[1])));
            }
        }
        metadata.extend(families);
    }
    let meta = |family: &str, kind: &str, help: &str, unit: &str| {
        (family.into(), kind.into(), help.into(), unit.into())
    };
    assert_eq!(
        metadata,
        BTreeSet::from([
            meta(
                &format!("{COUNTER}_total"),
                "COUNTER",
                "Requests served.",
                "{request}"
            ),
            meta(&format!("{delta}_total"), "COUNTER", "", ""),
            meta(HISTOGRAM, "HISTOGRAM", "Request latency.", "s"),
        ])
    );
    // Remote write always carries running totals, whatever OTLP's temporality.
    let mut want = expected_series(&data, Some(&format!("{COUNTER}_total")), true);
    want.extend(expected_series(
        &data,
        Some(&format!("{delta}_total")),
        false,
    ));
    for samples in stored.values_mut() {
        samples.sort_by_key(|p| p.0);
    }
    assert_stored("remote-write requests", &stored, &want);
}

/// The scrape page of a counter and a histogram, scraped by a real Prometheus: `# HELP` and
/// `# TYPE` before each family, Prometheus' metadata API reports the types and help texts, and the
/// scraped samples are the oracle's running totals.
#[test]
fn scrape_page_types_and_help_reach_prometheus() {
    // Data also for the next five minutes, so the page's newest window always has samples.
    let past = Dataset::ending_now(INTERVAL_S, 4);
    let s = Setup::new(Dataset {
        windows: past.windows + 60,
        ..past
    });
    let data = s.data;
    s.resource(
        "requests",
        COUNTER_BODY,
        &counter_transform(COUNTER, "description: Requests served.\n"),
        "outputs: [scrape]\n",
    );
    s.resource(
        "latency",
        HISTOGRAM_BODY,
        &histogram_transform("description: Request latency.\nunit: s\n"),
        "outputs: [scrape]\n",
    );
    let scrape_port = free_port();
    let scraper = common::prometheus_with_config(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: adxexporter\n    \
         static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
    ));
    let mut exporter = s.start(&[
        "--scrape-port",
        &scrape_port.to_string(),
        "--scrape-timestamps",
    ]);
    exporter.wait_caught_up("requests", past.end_ms(), LIMIT);
    exporter.wait_caught_up("latency", past.end_ms(), LIMIT);

    let page = eventually(
        "both families on the page",
        LIMIT,
        || {
            let (code, page) = http_get(scrape_port, "/metrics")?;
            (code == 200
                && page.contains(&format!("{COUNTER}_total{{"))
                && page.contains(&format!("{HISTOGRAM}_bucket{{")))
            .then_some(page)
        },
        || exporter.log_tail(),
    );
    // Each family: HELP, TYPE, then its samples and nothing else until the next family.
    let mut family = None;
    let mut headers = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            headers.push(rest.to_owned());
            let name = rest.split(' ').nth(1).unwrap().to_owned();
            family = Some(name);
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let f = family
            .as_deref()
            .unwrap_or_else(|| panic!("{line}: no # TYPE before it\n{page}"));
        let ok = name == f
            || [f, "_bucket"].concat() == name
            || [f, "_count"].concat() == name
            || [f, "_sum"].concat() == name;
        assert!(ok, "{line} under # TYPE {f}\n{page}");
    }
    assert_eq!(
        headers,
        [
            format!("HELP {HISTOGRAM} Request latency."),
            format!("TYPE {HISTOGRAM} histogram"),
            format!("HELP {COUNTER}_total Requests served."),
            format!("TYPE {COUNTER}_total counter"),
        ],
        "{page}"
    );

    // Prometheus read the types and help texts from the page.
    let metadata = eventually(
        "Prometheus' metadata of both families",
        LIMIT,
        || {
            let (code, body) = http_get(scraper.port, "/api/v1/metadata")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let data = v["data"].as_object()?;
            (code == 200
                && data.contains_key(HISTOGRAM)
                && data.contains_key(&format!("{COUNTER}_total")))
            .then(|| v["data"].clone())
        },
        || exporter.log_tail(),
    );
    assert_eq!(
        metadata[format!("{COUNTER}_total")],
        serde_json::json!([{"type": "counter", "help": "Requests served.", "unit": ""}]),
        "{metadata}"
    );
    assert_eq!(
        metadata[HISTOGRAM],
        serde_json::json!([{"type": "histogram", "help": "Request latency.", "unit": ""}]),
        "{metadata}"
    );

    // What Prometheus scraped (with the page's timestamps) is the running totals.
    let want = expected_series(&data, Some(&format!("{COUNTER}_total")), true);
    let scraped = eventually(
        "Prometheus to scrape a window of both families",
        LIMIT,
        || {
            let got = prom_stored(scraper.port, "{__name__=~\"e2e_.*\"}");
            (got.len() == want.len()).then_some(got)
        },
        || exporter.log_tail(),
    );
    for (l, got) in &scraped {
        let mut l = l.clone();
        assert_eq!(l.remove("job").as_deref(), Some("adxexporter"));
        assert!(l.remove("instance").is_some());
        let want: BTreeMap<i64, f64> = want
            .get(&l)
            .unwrap_or_else(|| panic!("{l:?} not in the oracle"))
            .iter()
            .copied()
            .collect();
        for (ms, v) in got {
            assert_eq!(
                want.get(ms).map(|w| w.to_bits()),
                Some(v.to_bits()),
                "{l:?} at {ms}"
            );
        }
    }
    assert!(exporter.terminate(LIMIT).success());
}
