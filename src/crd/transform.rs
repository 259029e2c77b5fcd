//! `spec.transform`, checked ([`ValidatedTransform`]): value, timestamp and name columns, the one
//! label-name rule, the metric type and its columns (docs/design.md#metric-types), metadata, static
//! labels and naming control (docs/design.md#metric-names). Every problem names its field and the fix.

use std::collections::BTreeMap;

use super::TransformSpec;
use super::names::{
    adxmon_normalize, has_letter_or_digit, is_label_name, is_metric_name, is_reserved_label_name,
    sanitize_label_name, sanitize_name_chars,
};
use super::problems::{Problems, SpecProblem, non_blank};
use super::{MAX_SPAN, TICKS_PER_SECOND};
use crate::prompb::BUCKET_LABEL;
use crate::time::Span;

/// Default `spec.transform.resetAfterIdle`.
pub(crate) const DEFAULT_RESET_AFTER_IDLE: Span = Span(24 * 3600 * TICKS_PER_SECOND);

/// The transform settings, checked: at least one value column, no two value columns giving the same
/// metric name, every label name final, the type's columns present and distinct.
/// [`Mapping::new`](crate::transform::Mapping::new) builds the transform's mapping from this as it
/// is, without checking anything again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedTransform {
    /// `valueColumns` then `valueColumn`, duplicates removed, order kept; never empty (exactly one
    /// for a histogram: the bucket's count).
    pub value_columns: Vec<String>,
    pub timestamp_column: String,
    pub metric_name_column: Option<String>,
    pub default_metric_name: Option<String>,
    pub metric_name_prefix: Option<String>,
    /// Each label column with its sanitised label name; names are unique and not reserved.
    pub label_columns: Vec<LabelColumn>,
    pub kind: MetricKind,
    /// Meaningful for counters and histograms only (gauges: `Cumulative`).
    pub temporality: Temporality,
    pub reset_after_idle: Span,
    pub description: Option<String>,
    pub unit: Option<String>,
    /// Sorted by name; names valid, not reserved, not a label column's.
    pub static_labels: Vec<(String, String)>,
    /// Value column → metric name (valid), for the columns that have one.
    pub metric_names: BTreeMap<String, String>,
    pub name_style: NameStyle,
}

/// A result column that becomes a label, and the label's (sanitised) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelColumn {
    pub column: String,
    pub label: String,
}

/// `spec.transform.type` (docs/design.md#metric-types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// Each value is the series' increase during the window.
    Counter,
    /// Rows are buckets: `bucket_column` holds the upper bound, the value the bucket's count.
    Histogram {
        bucket_column: String,
        sum_column: Option<String>,
    },
}

/// `spec.transform.temporality`: what OTLP outputs get for a counter or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

/// `spec.transform.nameStyle` (docs/design.md#metric-names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStyle {
    Prometheus,
    Adxmon,
}

impl MetricKind {
    /// Whether windows carry running totals (counters and histograms).
    pub fn is_cumulative(&self) -> bool {
        !matches!(self, MetricKind::Gauge)
    }
}

impl TransformSpec {
    /// The transform settings alone, checked as [`MetricsExporterSpec::validate`] checks
    /// `spec.transform`: for callers that have no whole resource (benches, examples, tests).
    ///
    /// [`MetricsExporterSpec::validate`]: super::MetricsExporterSpec::validate
    pub fn validate(&self) -> Result<ValidatedTransform, Vec<SpecProblem>> {
        let mut p = Problems(Vec::new());
        match validate_transform(self, &mut p) {
            Some(transform) if p.0.is_empty() => Ok(transform),
            _ => Err(p.0),
        }
    }
}

pub(super) fn validate_transform(
    t: &TransformSpec,
    p: &mut Problems,
) -> Option<ValidatedTransform> {
    let before = p.0.len();
    let mut value_columns: Vec<String> = Vec::new();
    for (i, column) in t.value_columns.iter().enumerate() {
        if column.trim().is_empty() {
            p.add(
                format!("spec.transform.valueColumns[{i}]"),
                "empty column name",
            );
        } else if !value_columns.contains(column) {
            value_columns.push(column.clone());
        }
    }
    match t.value_column.as_deref() {
        Some(c) if c.trim().is_empty() => p.add("spec.transform.valueColumn", "empty column name"),
        Some(c) if !value_columns.iter().any(|v| v == c) => value_columns.push(c.to_owned()),
        _ => {}
    }
    if value_columns.is_empty() && p.0.len() == before {
        p.add("spec.transform", "set valueColumns (or valueColumn)");
    }
    let name_style = match non_blank(&t.name_style) {
        None | Some("prometheus") => NameStyle::Prometheus,
        Some("adxmon") => NameStyle::Adxmon,
        Some(other) => {
            p.add(
                "spec.transform.nameStyle",
                format!("{other:?} is not a name style: use prometheus (the default) or adxmon"),
            );
            NameStyle::Prometheus
        }
    };
    let metric_names = validate_metric_names(&t.metric_names, &value_columns, p);
    validate_value_suffixes(&value_columns, &metric_names, name_style, p);
    let timestamp_column = non_blank(&t.timestamp_column).map(str::to_owned);
    match &timestamp_column {
        None => p.add(
            "spec.transform.timestampColumn",
            "missing: name the datetime column that gives each sample's time",
        ),
        Some(ts) if value_columns.contains(ts) => p.add(
            "spec.transform.valueColumns",
            format!("{ts:?} is also the timestampColumn: a datetime cannot be a value"),
        ),
        Some(_) => {}
    }
    let metric_name_column = non_blank(&t.metric_name_column).map(str::to_owned);
    let default_metric_name = non_blank(&t.default_metric_name).map(str::to_owned);
    let every_column_named =
        !value_columns.is_empty() && value_columns.iter().all(|c| t.metric_names.contains_key(c));
    if metric_name_column.is_none() && default_metric_name.is_none() && !every_column_named {
        p.add(
            "spec.transform",
            "no metric name: set metricNameColumn, defaultMetricName or metricNames",
        );
    }
    if let Some(name) = &metric_name_column
        && value_columns.contains(name)
    {
        p.add(
            "spec.transform.metricNameColumn",
            format!("{name:?} is also a value column: the name column holds text"),
        );
    }
    let metric_name_prefix = non_blank(&t.metric_name_prefix).map(str::to_owned);
    for (field, part) in [
        ("metricNamePrefix", &metric_name_prefix),
        ("defaultMetricName", &default_metric_name),
    ] {
        if let Some(part) = part
            && !has_letter_or_digit(part)
        {
            p.add(
                format!("spec.transform.{field}"),
                format!(
                    "{part:?} has no letter or digit, so every name would start with `_`s: use e.g. `app`"
                ),
            );
        }
    }
    let label_columns = validate_label_columns(&t.label_columns, p);
    let kind = validate_kind(t, &value_columns, p);
    let reserved_le = matches!(kind, Some(MetricKind::Histogram { .. }));
    if reserved_le && let Some(l) = label_columns.iter().find(|l| l.label == BUCKET_LABEL) {
        p.add(
            "spec.transform.labelColumns",
            format!(
                "{:?} becomes label \"le\", which a histogram's bucket series carry: rename the column in the query",
                l.column
            ),
        );
    }
    let used_columns: Vec<(&str, &str)> =
        (value_columns.iter().map(|c| ("valueColumns", c.as_str())))
            .chain(timestamp_column.as_deref().map(|c| ("timestampColumn", c)))
            .chain(
                metric_name_column
                    .as_deref()
                    .map(|c| ("metricNameColumn", c)),
            )
            .chain(
                label_columns
                    .iter()
                    .map(|l| ("labelColumns", l.column.as_str())),
            )
            .collect();
    if let Some(MetricKind::Histogram {
        bucket_column,
        sum_column,
    }) = &kind
    {
        for (field, column) in [
            ("bucketColumn", Some(bucket_column)),
            ("sumColumn", sum_column.as_ref()),
        ] {
            if let Some(column) = column
                && let Some((other, _)) = used_columns.iter().find(|(_, c)| c == column)
            {
                p.add(
                    format!("spec.transform.{field}"),
                    format!("{column:?} is also in {other}: each column has one role"),
                );
            }
        }
        if sum_column.as_ref() == Some(bucket_column) {
            p.add(
                "spec.transform.sumColumn",
                format!("{bucket_column:?} is also the bucketColumn: each column has one role"),
            );
        }
    }
    let static_labels = validate_static_labels(&t.static_labels, &label_columns, reserved_le, p);
    let cumulative = kind.as_ref().is_some_and(MetricKind::is_cumulative);
    let temporality = match non_blank(&t.temporality) {
        None | Some("cumulative") => Temporality::Cumulative,
        Some("delta") => Temporality::Delta,
        Some(other) => {
            p.add(
                "spec.transform.temporality",
                format!("{other:?} is not a temporality: use cumulative (the default) or delta"),
            );
            Temporality::Cumulative
        }
    };
    if t.temporality.is_some() && kind.is_some() && !cumulative {
        p.add(
            "spec.transform.temporality",
            "applies to type: counter or histogram only: remove it, or set the type",
        );
    }
    let reset_after_idle = validate_reset_after_idle(t.reset_after_idle.as_deref(), p);
    if t.reset_after_idle.is_some() && kind.is_some() && !cumulative {
        p.add(
            "spec.transform.resetAfterIdle",
            "applies to type: counter or histogram only: remove it, or set the type",
        );
    }
    if p.0.len() != before {
        return None;
    }
    Some(ValidatedTransform {
        value_columns,
        timestamp_column: timestamp_column?,
        metric_name_column,
        default_metric_name,
        metric_name_prefix,
        label_columns,
        kind: kind?,
        temporality,
        reset_after_idle: reset_after_idle?,
        description: non_blank(&t.description).map(|s| s.trim().to_owned()),
        unit: non_blank(&t.unit).map(|s| s.trim().to_owned()),
        static_labels,
        metric_names,
        name_style,
    })
}

fn validate_kind(
    t: &TransformSpec,
    value_columns: &[String],
    p: &mut Problems,
) -> Option<MetricKind> {
    let bucket_column = non_blank(&t.bucket_column).map(str::to_owned);
    let sum_column = non_blank(&t.sum_column).map(str::to_owned);
    let kind = match non_blank(&t.type_) {
        None | Some("gauge") => MetricKind::Gauge,
        Some("counter") => MetricKind::Counter,
        Some("histogram") => {
            if value_columns.len() > 1 {
                p.add(
                    "spec.transform.valueColumns",
                    format!(
                        "a histogram has one value column, each row's count of observations in its bucket; got {}: make one resource per histogram",
                        value_columns.len()
                    ),
                );
            }
            let Some(bucket_column) = bucket_column else {
                p.add(
                    "spec.transform.bucketColumn",
                    "missing: a histogram needs the column holding each row's bucket upper bound (real, +inf allowed)",
                );
                return None;
            };
            return Some(MetricKind::Histogram {
                bucket_column,
                sum_column,
            });
        }
        Some(other) => {
            p.add(
                "spec.transform.type",
                format!(
                    "{other:?} is not a metric type: use gauge (the default), counter or histogram"
                ),
            );
            return None;
        }
    };
    for (field, set) in [("bucketColumn", bucket_column), ("sumColumn", sum_column)] {
        if set.is_some() {
            p.add(
                format!("spec.transform.{field}"),
                "applies to type: histogram only: remove it, or set type: histogram",
            );
        }
    }
    Some(kind)
}

fn validate_reset_after_idle(text: Option<&str>, p: &mut Problems) -> Option<Span> {
    let Some(text) = text else {
        return Some(DEFAULT_RESET_AFTER_IDLE);
    };
    match Span::parse_duration(text.trim()) {
        Ok(span) if span > Span::ZERO && span <= MAX_SPAN => Some(span),
        _ => {
            p.add(
                "spec.transform.resetAfterIdle",
                format!(
                    "{text:?} is not a duration between 1s and 8784h: use e.g. 24h (the default)"
                ),
            );
            None
        }
    }
}

/// `metricNames`: every key a value column, every name a valid metric name.
fn validate_metric_names(
    names: &BTreeMap<String, String>,
    value_columns: &[String],
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (column, name) in names {
        let field = format!("spec.transform.metricNames.{column}");
        if !value_columns.contains(column) {
            p.add(
                field,
                format!("{column:?} is not a value column: list it in valueColumns, or remove it"),
            );
        } else if !is_metric_name(name.trim()) {
            p.add(
                field,
                format!(
                    "{name:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): use e.g. {:?}",
                    sanitize_name_chars(name.trim())
                ),
            );
        } else {
            out.insert(column.clone(), name.trim().to_owned());
        }
    }
    out
}

/// Value columns without an explicit name give the metric name suffix `_<column>` (with several
/// value columns, or always with `nameStyle: adxmon`); two that give the same suffix, or the same
/// explicit name, would merge their series, so that is a configuration error. With `adxmon`, a
/// column that normalises to nothing is an error too (the Go exporter fails every window on it).
fn validate_value_suffixes(
    value_columns: &[String],
    metric_names: &BTreeMap<String, String>,
    style: NameStyle,
    p: &mut Problems,
) {
    let mut seen: Vec<(&str, String)> = Vec::with_capacity(value_columns.len());
    for column in value_columns {
        let (what, suffix) = match (metric_names.get(column), style) {
            (Some(name), _) => ("metric name", name.clone()),
            (None, NameStyle::Prometheus) if value_columns.len() < 2 => continue,
            (None, NameStyle::Prometheus) => ("metric name suffix", sanitize_name_chars(column)),
            (None, NameStyle::Adxmon) => {
                let normalized = adxmon_normalize(column);
                if normalized.is_empty() {
                    p.add(
                        "spec.transform.valueColumns",
                        format!(
                            "{column:?} has no letter or digit, so it gives no name suffix: rename it in the query"
                        ),
                    );
                    continue;
                }
                ("metric name suffix", normalized)
            }
        };
        match seen.iter().find(|(_, s)| *s == suffix) {
            Some((first, _)) => p.add(
                "spec.transform.valueColumns",
                format!(
                    "{first:?} and {column:?} both give the {what} {suffix:?}: rename one in the query (e.g. `project-rename`) or in metricNames"
                ),
            ),
            None => seen.push((column, suffix)),
        }
    }
}

/// The one label-name rule (docs/design.md#labels), applied to `labelColumns`: an empty or blank column is an
/// error naming its index, the others are sanitised ([`super::names::sanitize_label_name`]), and a name reserved
/// by Prometheus (`__…`) or given by two columns is an error naming both.
fn validate_label_columns(columns: &[String], p: &mut Problems) -> Vec<LabelColumn> {
    let mut out: Vec<LabelColumn> = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let field = "spec.transform.labelColumns";
        if column.trim().is_empty() {
            p.add(format!("{field}[{i}]"), "empty column name");
            continue;
        }
        let label = sanitize_label_name(column);
        if is_reserved_label_name(&label) {
            p.add(
                field,
                format!(
                    "{column:?} becomes label {label:?}, and names starting with __ are reserved: rename the column in the query"
                ),
            );
            continue;
        }
        if let Some(other) = out.iter().find(|l| l.label == label) {
            let message = if other.column == *column {
                format!("{column:?} is listed twice")
            } else {
                format!(
                    "{:?} and {column:?} both become label {label:?}: rename one in the query",
                    other.column
                )
            };
            p.add(field, message);
            continue;
        }
        out.push(LabelColumn {
            column: column.clone(),
            label,
        });
    }
    out
}

/// `staticLabels`: names already valid (they are typed, not read from a result), not reserved, not
/// a label column's, not `le` on a histogram; values non-empty (an empty value is no label).
fn validate_static_labels(
    labels: &BTreeMap<String, String>,
    columns: &[LabelColumn],
    histogram: bool,
    p: &mut Problems,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        let field = format!("spec.transform.staticLabels.{name}");
        if !is_label_name(name) {
            p.add(
                field,
                format!(
                    "{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*): use e.g. {:?}",
                    sanitize_label_name(name)
                ),
            );
        } else if is_reserved_label_name(name) || (histogram && name == BUCKET_LABEL) {
            p.add(field, format!("{name:?} is reserved: choose another name"));
        } else if let Some(column) = columns.iter().find(|c| c.label == *name) {
            p.add(
                field,
                format!(
                    "label column {:?} gives the label {name:?} too: rename one",
                    column.column
                ),
            );
        } else if value.is_empty() {
            p.add(
                field,
                "empty value: an empty label is no label; remove it or set a value",
            );
        } else {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}
