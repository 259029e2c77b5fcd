//! Prometheus remote-write 1.0 messages (`prometheus/prompb/remote.proto`, `types.proto`): the subset we
//! send. The 1.0 wire format is frozen, so hand-written prost structs are simpler than codegen and keep
//! a second protobuf stack out of the tree. Field numbers follow the upstream `.proto` files exactly.
//!
//! A `WriteRequest` is the unit that flows from the transform through the WAL to every sink: labels of a
//! series sorted by name with `__name__` included, samples of a series in time order.

pub mod encode;
pub use encode::RemoteWriteEncoder;

/// `prometheus.WriteRequest`. Field 3 (`metadata`) is never sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
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
    pub fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.samples.len()).sum()
    }
}
