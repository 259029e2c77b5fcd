//! Prometheus remote-write 1.0 messages (`prometheus/prompb/remote.proto`, `types.proto`): the subset we
//! send. The 1.0 wire format is frozen, so hand-written prost structs are simpler than codegen and keep
//! a second protobuf stack out of the tree. Field numbers follow the upstream `.proto` files exactly.
//!
//! A `WriteRequest` is the unit that flows from the transform through the WAL to every sink: labels of a
//! series sorted by name with `__name__` included, samples of a series in time order.

pub mod encode;
pub use encode::RemoteWriteEncoder;

/// The label of a histogram bucket series holding its upper bound.
pub(crate) const BUCKET_LABEL: &str = "le";

/// `prometheus.WriteRequest`, and the one field of ours the WAL keeps beside it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// One entry per metric family that has a type other than gauge, a description or a unit
    /// (docs/design.md#metric-types), sorted by family name (as the transform writes them: lookups
    /// by name are binary searches); empty otherwise, so a plain gauge window is byte for byte what
    /// it always was.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
    /// Not remote write: adxexporter's own field (a number far from upstream's), present only in a
    /// counter or histogram window stored in the WAL, and never sent to a remote-write receiver
    /// (the sink encodes fields 1 and 3 only). It holds what OTLP needs beside the running totals.
    #[prost(message, optional, tag = "1000")]
    pub cumulative: Option<Cumulative>,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`: the ones adxexporter writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
}

/// What a counter or histogram window carries besides its running totals (docs/design.md#counters),
/// for OTLP: each series' start (where its running total began) and each sample's increase in this
/// window, both in the order of `WriteRequest.timeseries` and their samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cumulative {
    /// Unix milliseconds, one per series.
    #[prost(int64, repeated, tag = "1")]
    pub series_start_ms: Vec<i64>,
    /// One per sample, all series back to back.
    #[prost(double, repeated, tag = "2")]
    pub increases: Vec<f64>,
    /// OTLP gets the increases as delta points instead of the running totals.
    #[prost(bool, tag = "3")]
    pub delta: bool,
    /// Start of the window (Unix milliseconds): a delta point's start time.
    #[prost(int64, tag = "4")]
    pub window_start_ms: i64,
}

/// `prometheus.TimeSeries`. Fields 3 (exemplars) and 4 (histograms) are never sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: value, then timestamp in Unix milliseconds.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The reserved label that carries the metric name.
pub(crate) const METRIC_NAME_LABEL: &str = "__name__";

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl TimeSeries {
    /// The value of `__name__`, or `""` when absent.
    pub fn metric_name(&self) -> &str {
        self.labels
            .iter()
            .find(|l| l.name == METRIC_NAME_LABEL)
            .map_or("", |l| l.value.as_str())
    }
}

impl WriteRequest {
    /// A window of gauges with no metadata.
    pub fn new(timeseries: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest {
            timeseries,
            ..WriteRequest::default()
        }
    }

    /// The metadata of the family `name` belongs to, if the window has any: the family `name`
    /// itself, or a histogram's whose `_bucket`, `_count` or `_sum` series it is. Called per series
    /// by the OTLP and text outputs, so a search in the sorted list, not a scan.
    pub fn metadata_of(&self, name: &str) -> Option<&MetricMetadata> {
        let histogram = ["_bucket", "_count", "_sum"].iter();
        std::iter::once(name)
            .chain(histogram.filter_map(|suffix| name.strip_suffix(suffix)))
            .filter_map(|family| {
                let at = (self.metadata)
                    .binary_search_by(|m| m.metric_family_name.as_str().cmp(family))
                    .ok()?;
                self.metadata.get(at)
            })
            .find(|m| m.covers(name))
    }

    pub fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.samples.len()).sum()
    }
}

impl MetricMetadata {
    /// Whether a series named `name` belongs to this family: the family name itself, or for a
    /// histogram its `_bucket`, `_count` and `_sum` series.
    pub fn covers(&self, name: &str) -> bool {
        match name.strip_prefix(self.metric_family_name.as_str()) {
            Some("") => true,
            Some(suffix) => {
                self.r#type == MetricType::Histogram as i32
                    && matches!(suffix, "_bucket" | "_count" | "_sum")
            }
            None => false,
        }
    }
}
