//! From a validated transform ([`ValidatedTransform`]) to a [`Mapping`]: the metric-name prefix, the
//! default name and each value column's name built once, per name style (docs/design.md#metric-names);
//! the labels and where their values come from; the metadata of a family. Where its columns sit in
//! a window's result is `schema.rs`'s.

use crate::crd::names::{adxmon_name, adxmon_normalize, push_name_chars, sanitize_name_chars};
use crate::crd::{LabelColumn, MetricKind, NameStyle, Temporality, ValidatedTransform};
use crate::prompb::{BUCKET_LABEL, MetricMetadata, MetricType};
use crate::time::Span;

/// A [`ValidatedTransform`] with every name part pre-built, ready to run on many windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// `prometheus` style: sanitised `cli_metricNamePrefix_` (one `_` after each part), or empty;
    /// `adxmon` style: the two joined by `_` and normalised as a whole, without a trailing `_`.
    pub(super) name_prefix: String,
    pub(super) style: NameStyle,
    pub(super) metric_name_column: Option<String>,
    /// Sanitised (`prometheus`: no leading-digit fix, it is applied to the whole name) or
    /// normalised (`adxmon`), or `None`.
    pub(super) default_base: Option<String>,
    pub(super) value_columns: Vec<ValueColumn>,
    pub(super) timestamp_column: String,
    /// Every label of a sample but `__name__`: label columns as validated (names final), static
    /// labels, and a histogram's `le`; where each value comes from is in `label_values`.
    pub(super) labels: Vec<LabelColumn>,
    pub(super) label_values: Vec<LabelValue>,
    pub(super) kind: MetricKind,
    pub(super) temporality: Temporality,
    /// `_total` for a counter (not added to a name that already ends with it), else empty.
    pub(super) type_suffix: &'static str,
    pub(super) description: Option<String>,
    pub(super) unit: Option<String>,
    /// A counter's or histogram's series restarts from 0 after this long unseen.
    pub reset_after_idle: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueColumn {
    pub(super) column: String,
    pub(super) name: ColumnName,
}

/// How one value column's metric name is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ColumnName {
    /// From the row's base name: `_<sanitised column>` (`prometheus`, several value columns),
    /// the normalised column (`adxmon`, always), or empty.
    Derived { suffix: String },
    /// `metricNames`: the whole name, prefix and type suffix included.
    Fixed(String),
}

/// Where a label's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LabelValue {
    /// A result column; `role` is the transform field that names it (for a missing column).
    Column {
        column: String,
        role: &'static str,
    },
    Static(String),
    /// A histogram's `bucketColumn`: the `le` label, the bound printed as Prometheus prints it.
    Bucket {
        column: String,
    },
}

/// Memory the transform needs per sample while it runs (the sample in its series, the series index,
/// the encoded bytes), for the query memory budget: an upper estimate from the transform bench's
/// workload (docs/deploy.md#memory-sizing).
pub(super) const WORKING_BYTES_PER_SAMPLE: u64 = 64;

impl Mapping {
    /// Estimated memory the transform of one input row needs (one sample per value column; a
    /// histogram row also gives its share of the count, sum and `+Inf` series).
    pub fn working_bytes_per_row(&self) -> u64 {
        let per_row = match self.kind {
            MetricKind::Histogram { .. } => 4,
            _ => self.value_columns.len() as u64,
        };
        per_row * WORKING_BYTES_PER_SAMPLE
    }

    /// The mapping of a validated transform; `cli_prefix` is `--metric-name-prefix` (empty: none).
    /// Infallible: validation has rejected every configuration problem, including two value
    /// columns with the same name, and the CLI prefix is only ever sanitised, never refused.
    pub fn new(transform: &ValidatedTransform, cli_prefix: &str) -> Mapping {
        let style = transform.name_style;
        let several = transform.value_columns.len() > 1;
        let resource_prefix = transform.metric_name_prefix.as_deref();
        let name_prefix = match style {
            NameStyle::Prometheus => name_prefix(Some(cli_prefix), resource_prefix),
            NameStyle::Adxmon => {
                let joined: Vec<&str> = [Some(cli_prefix.trim()), resource_prefix]
                    .into_iter()
                    .flatten()
                    .filter(|p| !p.is_empty())
                    .collect();
                adxmon_normalize(&joined.join("_"))
            }
        };
        let type_suffix = match transform.kind {
            MetricKind::Counter => "_total",
            _ => "",
        };
        let value_columns = (transform.value_columns.iter())
            .map(|column| {
                let name = match (transform.metric_names.get(column), style) {
                    (Some(fixed), NameStyle::Prometheus) => ColumnName::Fixed(with_type_suffix(
                        format!("{name_prefix}{fixed}"),
                        type_suffix,
                    )),
                    (Some(fixed), NameStyle::Adxmon) => ColumnName::Fixed(with_type_suffix(
                        adxmon_name([name_prefix.as_str(), fixed]),
                        type_suffix,
                    )),
                    (None, NameStyle::Prometheus) if several => ColumnName::Derived {
                        suffix: format!("_{}", sanitize_name_chars(column)),
                    },
                    (None, NameStyle::Prometheus) => ColumnName::Derived {
                        suffix: String::new(),
                    },
                    (None, NameStyle::Adxmon) => ColumnName::Derived {
                        suffix: adxmon_normalize(column),
                    },
                };
                ValueColumn {
                    column: column.clone(),
                    name,
                }
            })
            .collect();
        let default_base = (transform.default_metric_name.as_deref()).map(|d| match style {
            NameStyle::Prometheus => sanitize_name_chars(d),
            NameStyle::Adxmon => adxmon_normalize(d),
        });
        let mut labels = transform.label_columns.clone();
        let mut label_values: Vec<LabelValue> = (labels.iter())
            .map(|l| LabelValue::Column {
                column: l.column.clone(),
                role: "labelColumns",
            })
            .collect();
        for (label, value) in &transform.static_labels {
            labels.push(LabelColumn {
                column: String::new(),
                label: label.clone(),
            });
            label_values.push(LabelValue::Static(value.clone()));
        }
        if let MetricKind::Histogram { bucket_column, .. } = &transform.kind {
            labels.push(LabelColumn {
                column: bucket_column.clone(),
                label: BUCKET_LABEL.to_owned(),
            });
            label_values.push(LabelValue::Bucket {
                column: bucket_column.clone(),
            });
        }
        Mapping {
            name_prefix,
            style,
            metric_name_column: transform.metric_name_column.clone(),
            default_base,
            value_columns,
            timestamp_column: transform.timestamp_column.clone(),
            labels,
            label_values,
            kind: transform.kind.clone(),
            temporality: transform.temporality,
            type_suffix,
            description: transform.description.clone(),
            unit: transform.unit.clone(),
            reset_after_idle: transform.reset_after_idle,
        }
    }

    /// A histogram's `sumColumn`.
    pub(super) fn sum_column(&self) -> Option<&str> {
        match &self.kind {
            MetricKind::Histogram { sum_column, .. } => sum_column.as_deref(),
            _ => None,
        }
    }

    /// Whether windows of this mapping carry running totals (counter, histogram).
    pub fn is_cumulative(&self) -> bool {
        self.kind.is_cumulative()
    }

    /// Whether OTLP gets per-window deltas instead of running totals.
    pub fn delta(&self) -> bool {
        self.is_cumulative() && self.temporality == Temporality::Delta
    }

    /// Appends the metric name of `value` for a row whose base name is `base` (already sanitised
    /// or normalised for the style; empty when the row has none and no value column is `Fixed`).
    pub(super) fn push_name(&self, base: &str, value: &ValueColumn, out: &mut Vec<u8>) {
        let start = out.len();
        match (&value.name, self.style) {
            (ColumnName::Fixed(name), _) => return out.extend_from_slice(name.as_bytes()),
            (ColumnName::Derived { suffix }, NameStyle::Prometheus) => {
                out.extend_from_slice(self.name_prefix.as_bytes());
                out.extend_from_slice(base.as_bytes());
                out.extend_from_slice(suffix.as_bytes());
            }
            (ColumnName::Derived { suffix }, NameStyle::Adxmon) => out.extend_from_slice(
                adxmon_name([self.name_prefix.as_str(), base, suffix.as_str()]).as_bytes(),
            ),
        }
        // Gauges and histograms have none: skip the comparison (a call per sample otherwise).
        let suffix = self.type_suffix.as_bytes();
        if !suffix.is_empty() && !out.get(start..).unwrap_or_default().ends_with(suffix) {
            out.extend_from_slice(suffix);
        }
    }

    /// The metadata of a family (remote-write 1.0 `metadata`, `# HELP`/`# TYPE`, OTLP description
    /// and unit), or `None` for a gauge without description or unit: such windows stay byte for
    /// byte what they were before metric types existed.
    pub(super) fn metadata(&self, family: &str) -> Option<MetricMetadata> {
        let r#type = match self.kind {
            MetricKind::Gauge if self.description.is_none() && self.unit.is_none() => return None,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram { .. } => MetricType::Histogram,
        };
        Some(MetricMetadata {
            r#type: r#type as i32,
            metric_family_name: family.to_owned(),
            help: self.description.clone().unwrap_or_default(),
            unit: self.unit.clone().unwrap_or_default(),
        })
    }
}

fn with_type_suffix(mut name: String, suffix: &str) -> String {
    if !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    name
}

/// `[cli_][resource_]`, sanitised, one `_` after each part: a part that already ends with `_`
/// (`metricNamePrefix: app_`) is not given a second one, as adx-mon does.
fn name_prefix(cli: Option<&str>, resource: Option<&str>) -> String {
    let mut prefix = String::new();
    for part in [cli, resource]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
    {
        if prefix.is_empty() && part.starts_with(|c: char| c.is_ascii_digit()) {
            prefix.push('_');
        }
        push_name_chars(&mut prefix, part);
        if !prefix.ends_with('_') {
            prefix.push('_');
        }
    }
    prefix
}
