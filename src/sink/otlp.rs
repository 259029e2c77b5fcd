//! OTLP/HTTP metrics output (docs/design.md#otlp-http): a window becomes `ExportMetricsServiceRequest`s with one
//! resource (cluster labels overlaid by `--add-resource-attributes`, given here as one map), one scope
//! (`adxexporter`/crate version) and one Gauge `Metric` per metric name holding all its points.
//! Each point: attributes = the series' labels except `__name__` (in label order), `time_unix_nano` =
//! sample ms × 10⁶ (negative ms clamp to 0), `as_double` = the value (NaN/±Inf pass through).
//!
//! Series are grouped by name in order of first appearance, then packed into requests of at most
//! `max_request_bytes` uncompressed (an upper-bound estimate: the real size is never larger), never
//! splitting a series; a metric whose series span two requests appears in both. Bodies are gzip'ed
//! (level configurable, default 1: encode+gzip 3-5× faster than level 6 for a ~14 % larger body, see
//! `benches/encode.rs`) and POSTed to the
//! endpoint exactly as given. Any 2xx succeeds; a `partial_success` in the answer is counted and logged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;
use prost::encoding::encoded_len_varint;

use super::auth::OutputAuthConfig;
use super::http::{Poster, Request, Security, Sent, send_window};
use super::otlp_proto::unix_nanos;
use super::otlp_proto::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, Gauge, InstrumentationScope,
    KeyValue, Metric, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics,
};
use super::otlp_typed;
use super::retry::Protocol;
use super::split::{Chunk, pack};
use super::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT, PushResult, Sink, SinkError};
use crate::prompb::{METRIC_NAME_LABEL, TimeSeries, WriteRequest};
use crate::tls::TlsConfig;

/// The instrumentation scope name on every request.
pub(crate) const SCOPE_NAME: &str = "adxexporter";
/// Default gzip level (see the module docs).
pub(crate) const DEFAULT_GZIP_LEVEL: u32 = 1;
/// Upper bound of a length-delimited field's tag + length prefix.
const WRAPPER: usize = 1 + 10;

/// Settings of the OTLP/HTTP output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Full URL, used as given (no `/v1/metrics` appended).
    pub endpoint: url::Url,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    /// Resource attributes: cluster labels already overlaid by `--add-resource-attributes`.
    pub resource_attributes: BTreeMap<String, String>,
    /// gzip level 0..=9.
    pub gzip_level: u32,
    /// Extra headers and credential.
    pub auth: OutputAuthConfig,
    pub tls: TlsConfig,
}

impl OtlpConfig {
    pub fn new(endpoint: url::Url, resource_attributes: BTreeMap<String, String>) -> OtlpConfig {
        OtlpConfig {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            resource_attributes,
            gzip_level: DEFAULT_GZIP_LEVEL,
            auth: OutputAuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// The OTLP/HTTP output: one HTTP client, the resource and scope prepared once.
#[derive(Debug, Clone)]
pub struct OtlpSink {
    poster: Poster,
    max_request_bytes: usize,
    template: OtlpTemplate,
}

impl OtlpSink {
    pub fn new(config: OtlpConfig) -> Result<OtlpSink, SinkError> {
        if config.max_request_bytes < 1024 {
            return Err(SinkError::RequestLimitTooSmall {
                output: "otlp",
                got: config.max_request_bytes,
            });
        }
        let template = OtlpTemplate::new(&config.resource_attributes, config.gzip_level)?;
        let security = Security {
            auth: &config.auth,
            tls: &config.tls,
        };
        let poster = Poster::new(
            "otlp",
            config.endpoint,
            config.timeout,
            "gzip",
            &[],
            security,
        )?;
        Ok(OtlpSink {
            poster,
            max_request_bytes: config.max_request_bytes,
            template,
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        self.poster.endpoint()
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    async fn push_from(&self, window: &WriteRequest, first_request: usize) -> PushResult {
        let plan = self.template.plan(window, self.max_request_bytes);
        let mut encoder = OtlpEncoder::new(&self.template);
        let encode = |_, chunk: &Chunk| {
            let order = plan.order.get(chunk.range.clone()).unwrap_or_default();
            let series = || order.iter().filter_map(|&i| window.timeseries.get(i));
            Request {
                body: encoder.encode(window, order).map_err(|e| e.to_string()),
                samples: series().map(|s| s.samples.len()).sum(),
                first_series: series().next().map_or("", TimeSeries::metric_name),
            }
        };
        send_window(
            &self.poster,
            Protocol::Otlp,
            &plan.chunks,
            first_request,
            self.max_request_bytes,
            encode,
            rejected_points,
        )
        .await
    }
}

/// Reads `partial_success` from a 2xx answer; logs and returns the rejected count (0 if none/undecodable).
fn rejected_points(sent: &Sent) -> u64 {
    let Sent::Answered { body, .. } = sent else {
        return 0;
    };
    if body.is_empty() {
        return 0;
    }
    let Ok(response) = ExportMetricsServiceResponse::decode(body.as_slice()) else {
        tracing::debug!(
            output = "otlp",
            "2xx answer is not an ExportMetricsServiceResponse; ignored"
        );
        return 0;
    };
    let Some(partial) = response.partial_success else {
        return 0;
    };
    if partial.rejected_data_points != 0 || !partial.error_message.is_empty() {
        tracing::warn!(
            output = "otlp",
            rejected_data_points = partial.rejected_data_points,
            error_message = %partial.error_message,
            "receiver accepted the request partially; rejected points are not retried"
        );
    }
    u64::try_from(partial.rejected_data_points).unwrap_or(0)
}

/// Why an OTLP request could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("gzip failed while compressing an OTLP request: {0}")]
    Gzip(#[source] std::io::Error),
}

/// The per-output constant parts of every request, and how a window is planned into requests.
#[derive(Debug, Clone)]
pub struct OtlpTemplate {
    resource: Resource,
    scope: InstrumentationScope,
    resource_bytes: Vec<u8>,
    scope_bytes: Vec<u8>,
    /// Upper bound of every request's bytes outside its metrics.
    fixed: usize,
    level: Compression,
}

/// A window's series in request order (grouped by metric name), and the requests as ranges of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpPlan {
    pub order: Vec<usize>,
    pub chunks: Vec<Chunk>,
}

impl OtlpTemplate {
    pub fn new(
        resource_attributes: &BTreeMap<String, String>,
        gzip_level: u32,
    ) -> Result<OtlpTemplate, SinkError> {
        if gzip_level > 9 {
            return Err(SinkError::GzipLevel(gzip_level));
        }
        let resource = Resource {
            attributes: resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::string(k, v))
                .collect(),
        };
        let scope = InstrumentationScope {
            name: SCOPE_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        // request ⊃ ResourceMetrics ⊃ {resource, ScopeMetrics ⊃ {scope, metrics…}}
        let fixed =
            WRAPPER + WRAPPER + resource.encoded_len() + WRAPPER + WRAPPER + scope.encoded_len();
        Ok(OtlpTemplate {
            resource_bytes: resource.encode_to_vec(),
            scope_bytes: scope.encode_to_vec(),
            resource,
            scope,
            fixed,
            level: Compression::new(gzip_level),
        })
    }

    /// Groups series by name (first appearance order; series without samples dropped) and packs them.
    pub fn plan(&self, window: &WriteRequest, max_bytes: usize) -> OtlpPlan {
        if otlp_typed::is_typed(window) {
            return self.plan_typed(window, max_bytes);
        }
        let order = group_by_name(&window.timeseries);
        let series = |i: usize| {
            window
                .timeseries
                .get(order.get(i).copied().unwrap_or(usize::MAX))
        };
        let chunks = pack(order.len(), self.fixed, max_bytes, |i, first| {
            let Some(s) = series(i) else { return 0 };
            let opens_metric = first
                || i.checked_sub(1)
                    .and_then(series)
                    .is_none_or(|prev| prev.metric_name() != s.metric_name());
            let metric = if opens_metric {
                metric_overhead(s.metric_name())
            } else {
                0
            };
            metric.saturating_add(series_points_len(s))
        });
        OtlpPlan { order, chunks }
    }

    /// A typed window's plan: its units (a series, or a histogram's series) packed whole, each
    /// costed as its own `Metric` (an upper bound: neighbours of one metric share it).
    fn plan_typed(&self, window: &WriteRequest, max_bytes: usize) -> OtlpPlan {
        let units = otlp_typed::units(window);
        let costs: Vec<usize> = (units.iter())
            .map(|unit| {
                (otlp_typed::metrics(window, unit).iter())
                    .map(|m| field_len(m.encoded_len()))
                    .sum()
            })
            .collect();
        let unit_chunks = pack(units.len(), self.fixed, max_bytes, |i, _| {
            costs.get(i).copied().unwrap_or(0)
        });
        let mut starts = Vec::with_capacity(units.len() + 1);
        let mut at = 0;
        for unit in &units {
            starts.push(at);
            at += unit.len();
        }
        starts.push(at);
        let position = |u: usize| starts.get(u).copied().unwrap_or(at);
        let chunks = (unit_chunks.into_iter())
            .map(|c| Chunk {
                range: position(c.range.start)..position(c.range.end),
                ..c
            })
            .collect();
        OtlpPlan {
            order: units.into_iter().flatten().collect(),
            chunks,
        }
    }

    /// The request holding the series `window.timeseries[i]` for `i` in `order` (grouped by name).
    pub fn build(&self, window: &WriteRequest, order: &[usize]) -> ExportMetricsServiceRequest {
        if otlp_typed::is_typed(window) {
            return self.request(otlp_typed::metrics(window, order));
        }
        let mut metrics: Vec<Metric> = Vec::new();
        for s in order.iter().filter_map(|&i| window.timeseries.get(i)) {
            let name = s.metric_name();
            let metric = match metrics.last_mut() {
                Some(m) if m.name == name => m,
                _ => {
                    metrics.push(Metric {
                        name: name.to_owned(),
                        gauge: Some(Gauge::default()),
                        ..Metric::default()
                    });
                    let Some(m) = metrics.last_mut() else {
                        continue;
                    };
                    m
                }
            };
            let points = &mut metric.gauge.get_or_insert_with(Gauge::default).data_points;
            let attributes = attributes(s);
            points.extend(s.samples.iter().map(|sample| NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: unix_nanos(sample.timestamp),
                as_double: Some(sample.value),
                ..NumberDataPoint::default()
            }));
        }
        self.request(metrics)
    }

    fn request(&self, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope.clone()),
                    metrics,
                }],
            }],
        }
    }
}

/// Encodes planned requests, reusing its buffers. The bytes are written directly (lengths computed
/// arithmetically, each series' attributes encoded once for all its points) and are identical to
/// prost's encoding of [`OtlpTemplate::build`] (property-tested); that avoids cloning every label for
/// every point, which made the struct path ~7× slower than the gzip after it.
pub struct OtlpEncoder<'t> {
    template: &'t OtlpTemplate,
    raw: Vec<u8>,
    /// Encoded attribute fields of every series of the current request, back to back.
    attrs: Vec<u8>,
    /// Per series of the current request: its span in `attrs` and its point body length.
    series: Vec<SeriesLayout>,
    /// Per metric of the current request.
    metrics: Vec<MetricLayout>,
}

struct SeriesLayout {
    index: usize,
    attrs: std::ops::Range<usize>,
}

struct MetricLayout {
    /// Range into `OtlpEncoder::series`.
    series: std::ops::Range<usize>,
    gauge_len: usize,
}

// Field keys (tag << 3 | wire type) of the OTLP messages we write.
const KEY_1_LEN: u8 = 1 << 3 | 2; // request.resource_metrics, rm.resource, sm.scope, metric.name, gauge.data_points, kv.key, any.string_value
const KEY_2_LEN: u8 = 2 << 3 | 2; // rm.scope_metrics, sm.metrics, kv.value
const KEY_METRIC_GAUGE: u8 = 5 << 3 | 2;
const KEY_POINT_ATTRIBUTES: u8 = 7 << 3 | 2;
const KEY_POINT_TIME: u8 = 3 << 3 | 1;
const KEY_POINT_AS_DOUBLE: u8 = 4 << 3 | 1;

impl<'t> OtlpEncoder<'t> {
    pub fn new(template: &'t OtlpTemplate) -> OtlpEncoder<'t> {
        OtlpEncoder {
            template,
            raw: Vec::new(),
            attrs: Vec::new(),
            series: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The uncompressed request bytes for `order`, left in an internal buffer.
    pub fn encode_raw(&mut self, window: &WriteRequest, order: &[usize]) -> &[u8] {
        if otlp_typed::is_typed(window) {
            // Types, metadata or running totals: prost writes the request (these windows are
            // fewer and their points are not gauges the byte-level writer below knows).
            self.raw.clear();
            let request = self.template.build(window, order);
            request.encode(&mut self.raw).unwrap_or_default();
            return &self.raw;
        }
        self.layout(window, order);
        let t = self.template;
        let metric_body = |m: &MetricLayout, window: &WriteRequest| {
            let name = self
                .series
                .get(m.series.start)
                .and_then(|s| window.timeseries.get(s.index))
                .map_or("", TimeSeries::metric_name);
            string_len(name) + field_len(m.gauge_len)
        };
        let metrics_len: usize = self
            .metrics
            .iter()
            .map(|m| field_len(metric_body(m, window)))
            .sum();
        let sm_len = field_len(t.scope_bytes.len()) + metrics_len;
        let rm_len = field_len(t.resource_bytes.len()) + field_len(sm_len);

        let mut buf = std::mem::take(&mut self.raw);
        buf.clear();
        buf.reserve(field_len(rm_len));
        put_len(&mut buf, KEY_1_LEN, rm_len);
        put_len(&mut buf, KEY_1_LEN, t.resource_bytes.len());
        buf.extend_from_slice(&t.resource_bytes);
        put_len(&mut buf, KEY_2_LEN, sm_len);
        put_len(&mut buf, KEY_1_LEN, t.scope_bytes.len());
        buf.extend_from_slice(&t.scope_bytes);
        for m in &self.metrics {
            let layouts = self.series.get(m.series.clone()).unwrap_or_default();
            let name = layouts
                .first()
                .and_then(|s| window.timeseries.get(s.index))
                .map_or("", TimeSeries::metric_name);
            put_len(&mut buf, KEY_2_LEN, metric_body(m, window));
            put_string(&mut buf, KEY_1_LEN, name);
            put_len(&mut buf, KEY_METRIC_GAUGE, m.gauge_len);
            for layout in layouts {
                let Some(s) = window.timeseries.get(layout.index) else {
                    continue;
                };
                let attrs = self.attrs.get(layout.attrs.clone()).unwrap_or_default();
                for p in &s.samples {
                    let nanos = unix_nanos(p.timestamp);
                    put_len(&mut buf, KEY_1_LEN, point_len(attrs.len(), nanos));
                    // prost writes fields in tag order: time (3), as_double (4), attributes (7).
                    if nanos != 0 {
                        buf.push(KEY_POINT_TIME);
                        buf.extend_from_slice(&nanos.to_le_bytes());
                    }
                    buf.push(KEY_POINT_AS_DOUBLE);
                    buf.extend_from_slice(&p.value.to_le_bytes());
                    buf.extend_from_slice(attrs);
                }
            }
        }
        self.raw = buf;
        &self.raw
    }

    /// Encodes every series' attributes once and computes each metric's gauge length.
    fn layout(&mut self, window: &WriteRequest, order: &[usize]) {
        self.attrs.clear();
        self.series.clear();
        self.metrics.clear();
        let mut previous_name: Option<&str> = None;
        for &index in order {
            let Some(s) = window.timeseries.get(index) else {
                continue;
            };
            let start = self.attrs.len();
            for l in s.labels.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
                put_len(
                    &mut self.attrs,
                    KEY_POINT_ATTRIBUTES,
                    key_value_len(&l.name, &l.value),
                );
                put_string(&mut self.attrs, KEY_1_LEN, &l.name);
                put_len(&mut self.attrs, KEY_2_LEN, field_len(l.value.len()));
                put_len(&mut self.attrs, KEY_1_LEN, l.value.len());
                self.attrs.extend_from_slice(l.value.as_bytes());
            }
            let attrs_len = self.attrs.len() - start;
            let gauge: usize = s
                .samples
                .iter()
                .map(|p| field_len(point_len(attrs_len, unix_nanos(p.timestamp))))
                .sum();
            let name = s.metric_name();
            let n = self.series.len();
            self.series.push(SeriesLayout {
                index,
                attrs: start..self.attrs.len(),
            });
            match self.metrics.last_mut() {
                Some(m) if previous_name == Some(name) => {
                    m.series.end = n + 1;
                    m.gauge_len += gauge;
                }
                _ => self.metrics.push(MetricLayout {
                    series: n..n + 1,
                    gauge_len: gauge,
                }),
            }
            previous_name = Some(name);
        }
    }

    /// The gzip'ed request body for `order`.
    pub fn encode(&mut self, window: &WriteRequest, order: &[usize]) -> Result<Bytes, OtlpError> {
        let level = self.template.level;
        let raw = self.encode_raw(window, order);
        let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), level);
        gz.write_all(raw).map_err(OtlpError::Gzip)?;
        gz.finish().map(Bytes::from).map_err(OtlpError::Gzip)
    }
}

/// A proto3 string field: omitted when empty, like prost.
fn string_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

fn put_len(buf: &mut Vec<u8>, key: u8, len: usize) {
    buf.push(key);
    prost::encoding::encode_varint(len as u64, buf);
}

fn put_string(buf: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        put_len(buf, key, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
}

/// `KeyValue{key, value: AnyValue{string_value}}` body; the value is always present.
fn key_value_len(key: &str, value: &str) -> usize {
    string_len(key) + field_len(field_len(value.len()))
}

/// `NumberDataPoint` body: attributes, `time_unix_nano` unless 0, `as_double` always.
fn point_len(attrs_len: usize, nanos: u64) -> usize {
    attrs_len + if nanos != 0 { 9 } else { 0 } + 9
}

/// Series indices grouped by metric name in order of first appearance; series without samples dropped.
fn group_by_name(series: &[TimeSeries]) -> Vec<usize> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.samples.is_empty())
    {
        let g = *index.entry(s.metric_name()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(g) {
            group.push(i);
        }
    }
    groups.into_iter().flatten().collect()
}

/// The point attributes of a series: its labels without `__name__`.
fn attributes(s: &TimeSeries) -> Vec<KeyValue> {
    s.labels
        .iter()
        .filter(|l| l.name != METRIC_NAME_LABEL)
        .map(|l| KeyValue::string(&l.name, &l.value))
        .collect()
}

/// Length-delimited field of `len` bytes: tag + length varint + payload.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Upper bound of a `Metric` wrapper (tag, length, name, gauge tag and length) without its points.
fn metric_overhead(name: &str) -> usize {
    WRAPPER + field_len(name.len()) + WRAPPER
}

/// Exact bytes of a series' points inside a `Gauge` (time counted even when 0: an upper bound).
fn series_points_len(s: &TimeSeries) -> usize {
    let attrs: usize = s
        .labels
        .iter()
        .filter(|l| l.name != METRIC_NAME_LABEL)
        .map(|l| field_len(key_value_len(&l.name, &l.value)))
        .sum();
    let point = attrs + 9 + 9;
    field_len(point).saturating_mul(s.samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample};
    use proptest::prelude::*;

    fn series(name: &str, host: &str, n: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("host", host),
                Label::new("job", "x"),
            ],
            samples: (0..n)
                .map(|i| Sample {
                    value: i as f64 * 0.5,
                    timestamp: 1_700_000_000_000 + i as i64 * 1000,
                })
                .collect(),
        }
    }

    fn template() -> OtlpTemplate {
        let attrs = BTreeMap::from([("cluster".to_owned(), "c1".to_owned())]);
        OtlpTemplate::new(&attrs, 1).unwrap()
    }

    #[test]
    fn groups_by_name_in_first_appearance_order() {
        let window = WriteRequest {
            timeseries: vec![
                series("b", "h1", 1),
                series("a", "h1", 1),
                series("b", "h2", 1),
                series("c", "h1", 0),
                series("a", "h2", 1),
            ],
            ..Default::default()
        };
        let plan = template().plan(&window, 1 << 20);
        assert_eq!(plan.order, vec![0, 2, 1, 4]);
        let req = template().build(&window, &plan.order);
        let names: Vec<_> = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.gauge.as_ref().unwrap().data_points.len()))
            .collect();
        assert_eq!(names, vec![("b", 2), ("a", 2)]);
    }

    #[test]
    fn the_size_estimate_is_an_upper_bound() {
        let window = WriteRequest {
            timeseries: (0..200)
                .map(|i| series(&format!("m{}", i % 7), &format!("host-{i}"), i % 5 + 1))
                .collect(),
            ..Default::default()
        };
        let t = template();
        for max in [1024, 3000, 20_000, 1 << 22] {
            let plan = t.plan(&window, max);
            let mut seen = Vec::new();
            for c in &plan.chunks {
                let order = &plan.order[c.range.clone()];
                let len = t.build(&window, order).encoded_len();
                assert!(len <= c.bytes, "estimate {} < real {len}", c.bytes);
                assert!(len <= max || c.oversized);
                // Tight: at most a few wrapper bytes per metric over the real size.
                assert!(
                    c.bytes - len <= 64 + 24 * order.len(),
                    "estimate {} vs {len}",
                    c.bytes
                );
                seen.extend_from_slice(order);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..200).collect::<Vec<_>>());
        }
    }

    #[test]
    fn timestamps_convert_to_nanos_without_overflow() {
        assert_eq!(unix_nanos(1_700_000_000_123), 1_700_000_000_123_000_000);
        assert_eq!(unix_nanos(-5), 0);
        assert_eq!(unix_nanos(i64::MAX), u64::MAX);
    }

    #[test]
    fn gzip_level_is_validated() {
        assert!(matches!(
            OtlpTemplate::new(&BTreeMap::new(), 10),
            Err(SinkError::GzipLevel(10))
        ));
    }

    fn arb_window() -> impl Strategy<Value = WriteRequest> {
        let label = ("[a-z_]{0,4}", "\\PC{0,6}").prop_map(|(n, v)| Label::new(n, v));
        let sample = (
            any::<f64>(),
            prop_oneof![Just(0i64), Just(-3i64), 0i64..4_000_000_000_000],
        )
            .prop_map(|(value, timestamp)| Sample { value, timestamp });
        let series = (
            prop_oneof![Just(""), Just("a"), Just("b")],
            proptest::collection::vec(label, 0..4),
            proptest::collection::vec(sample, 0..4),
        )
            .prop_map(|(name, mut labels, samples)| {
                if !name.is_empty() {
                    labels.push(Label::new(METRIC_NAME_LABEL, name));
                }
                TimeSeries { labels, samples }
            });
        proptest::collection::vec(series, 0..8).prop_map(WriteRequest::new)
    }

    proptest! {
        #[test]
        fn direct_encoding_is_byte_identical_to_prost(window in arb_window(), max in 200usize..5000) {
            let t = template();
            let plan = t.plan(&window, max);
            let mut enc = OtlpEncoder::new(&t);
            for c in &plan.chunks {
                let order = &plan.order[c.range.clone()];
                let want = t.build(&window, order).encode_to_vec();
                prop_assert_eq!(enc.encode_raw(&window, order), want.as_slice());
                prop_assert!(want.len() <= c.bytes);
            }
        }
    }
}
