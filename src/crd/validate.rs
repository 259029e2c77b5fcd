//! Validation: the one place that turns a spec's text fields into typed values ([`ValidatedSpec`]),
//! reporting every problem at once, each naming its field and the fix. It is also the one home of the
//! label-name rule, so a resource `check` accepts is one `run` and `preview` can map as it is.

use std::collections::{BTreeMap, BTreeSet};

use super::names::{is_reserved_label_name, sanitize_label_name, sanitize_name_chars};
use crate::criteria::expression::{CriteriaExpression, FIELD as EXPRESSION_FIELD};
use crate::time::{Span, Ticks};

use super::{DEFAULT_MAX_ROWS, MAX_SPAN, MIN_INTERVAL, MetricsExporterSpec, TransformSpec};

/// One thing wrong with a spec: the field (`spec.interval`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec whose every field has been checked and typed; all later stages use this.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSpec {
    pub database: String,
    /// The query as written (the query text trims it).
    pub body: String,
    /// At least [`MIN_INTERVAL`].
    pub interval: Span,
    /// Zero or positive.
    pub ingestion_delay: Span,
    pub start_time: Option<Ticks>,
    /// At least 1.
    pub max_rows: u64,
    pub criteria: BTreeMap<String, Vec<String>>,
    /// Compiled once here; `None` when absent or blank (no constraint).
    pub criteria_expression: Option<CriteriaExpression>,
    pub transform: ValidatedTransform,
    /// `None`: every configured output.
    pub outputs: Option<Vec<String>>,
}

/// The transform settings, checked: at least one value column, no two value columns giving the same
/// metric name suffix, every label name final. [`Mapping::new`](crate::transform::Mapping::new)
/// builds the transform's mapping from this as it is, without checking anything again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedTransform {
    /// `valueColumns` then `valueColumn`, duplicates removed, order kept; never empty.
    pub value_columns: Vec<String>,
    pub timestamp_column: String,
    pub metric_name_column: Option<String>,
    pub default_metric_name: Option<String>,
    pub metric_name_prefix: Option<String>,
    /// Each label column with its sanitised label name; names are unique and not reserved.
    pub label_columns: Vec<LabelColumn>,
}

/// A result column that becomes a label, and the label's (sanitised) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelColumn {
    pub column: String,
    pub label: String,
}

struct Problems(Vec<SpecProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// A present, non-blank string.
fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

impl MetricsExporterSpec {
    /// Checks every field and returns the typed spec, or every problem found (never just the first).
    pub fn validate(&self) -> Result<ValidatedSpec, Vec<SpecProblem>> {
        let mut p = Problems(Vec::new());
        let database = non_blank(&self.database).map(str::to_owned);
        if database.is_none() {
            p.add("spec.database", "missing: set the Kusto database name");
        }
        let body = non_blank(&self.body).map(str::to_owned);
        if body.is_none() {
            p.add("spec.body", "missing: set the KQL query");
        }
        let interval = validate_interval(self.interval.as_deref(), &mut p);
        let ingestion_delay = validate_delay(self.ingestion_delay.as_deref(), &mut p);
        let start_time = match self.start_time.as_deref() {
            None => None,
            Some(s) => match Ticks::parse(s.trim()) {
                Ok(t) => Some(t),
                Err(_) => {
                    p.add(
                        "spec.startTime",
                        format!("{s:?} is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z"),
                    );
                    None
                }
            },
        };
        let max_rows = self.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
        if max_rows == 0 {
            p.add(
                "spec.maxRows",
                "0 rows allows no result: use at least 1 (default 500000)",
            );
        }
        validate_criteria(&self.criteria, &mut p);
        let criteria_expression = match non_blank(&self.criteria_expression) {
            None => None,
            Some(source) => match CriteriaExpression::compile(source) {
                Ok(compiled) => Some(compiled),
                Err(e) => {
                    p.add(EXPRESSION_FIELD, e.to_string());
                    None
                }
            },
        };
        validate_outputs(self.outputs.as_deref(), &mut p);
        let transform = match &self.transform {
            Some(t) => validate_transform(t, &mut p),
            None => {
                p.add(
                    "spec.transform",
                    "missing: set at least timestampColumn and valueColumns",
                );
                None
            }
        };
        match (database, body, interval, ingestion_delay, transform) {
            (
                Some(database),
                Some(body),
                Some(interval),
                Some(ingestion_delay),
                Some(transform),
            ) if p.0.is_empty() => Ok(ValidatedSpec {
                database,
                body,
                interval,
                ingestion_delay,
                start_time,
                max_rows,
                criteria: self.criteria.clone(),
                criteria_expression,
                transform,
                outputs: self.outputs.clone(),
            }),
            _ => Err(p.0),
        }
    }
}

fn validate_interval(text: Option<&str>, p: &mut Problems) -> Option<Span> {
    let Some(text) = text else {
        p.add(
            "spec.interval",
            "missing: set a duration such as 30s, 5m or 1h",
        );
        return None;
    };
    match Span::parse_duration(text.trim()) {
        Err(_) => {
            p.add(
                "spec.interval",
                format!("{text:?} is not a duration: use e.g. 30s, 5m, 1h30m (units h, m, s, ms)"),
            );
            None
        }
        Ok(span) if span < MIN_INTERVAL => {
            p.add(
                "spec.interval",
                format!("{text:?} is too short: use at least 1s"),
            );
            None
        }
        Ok(span) if span > MAX_SPAN => {
            p.add(
                "spec.interval",
                format!("{text:?} is too long: use at most 8784h (366 days)"),
            );
            None
        }
        Ok(span) => Some(span),
    }
}

fn validate_delay(text: Option<&str>, p: &mut Problems) -> Option<Span> {
    let Some(text) = text else {
        return Some(Span::ZERO);
    };
    match Span::parse_duration(text.trim()) {
        Err(_) => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is not a duration: use e.g. 0s, 90s, 5m"),
            );
            None
        }
        Ok(span) if span < Span::ZERO => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is negative: use 0s or more"),
            );
            None
        }
        Ok(span) if span > MAX_SPAN => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is too long: use at most 8784h (366 days)"),
            );
            None
        }
        Ok(span) => Some(span),
    }
}

fn validate_criteria(criteria: &BTreeMap<String, Vec<String>>, p: &mut Problems) {
    let mut seen = BTreeMap::new();
    for (key, values) in criteria {
        if key.trim().is_empty() {
            p.add("spec.criteria", "empty key: name a cluster label");
        }
        if values.is_empty() {
            p.add(
                format!("spec.criteria.{key}"),
                "empty list never matches: list at least one value or remove the key",
            );
        }
        if let Some(first) = seen.insert(key.to_lowercase(), key) {
            p.add(
                format!("spec.criteria.{key}"),
                format!("same key as {first:?} (keys are case-insensitive): merge their values"),
            );
        }
    }
}

fn validate_outputs(outputs: Option<&[String]>, p: &mut Problems) {
    let Some(outputs) = outputs else { return };
    if outputs.is_empty() {
        p.add(
            "spec.outputs",
            "empty list sends nowhere: remove the field to use every output, or name one",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, name) in outputs.iter().enumerate() {
        if name.trim().is_empty() {
            p.add(format!("spec.outputs[{i}]"), "empty output name");
        } else if !seen.insert(name.as_str()) {
            p.add(
                format!("spec.outputs[{i}]"),
                format!("{name:?} listed twice"),
            );
        }
    }
}

impl TransformSpec {
    /// The transform settings alone, checked as [`MetricsExporterSpec::validate`] checks
    /// `spec.transform`: for callers that have no whole resource (benches, examples, tests).
    pub fn validate(&self) -> Result<ValidatedTransform, Vec<SpecProblem>> {
        let mut p = Problems(Vec::new());
        match validate_transform(self, &mut p) {
            Some(transform) if p.0.is_empty() => Ok(transform),
            _ => Err(p.0),
        }
    }
}

fn validate_transform(t: &TransformSpec, p: &mut Problems) -> Option<ValidatedTransform> {
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
    validate_value_suffixes(&value_columns, p);
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
    if metric_name_column.is_none() && default_metric_name.is_none() {
        p.add(
            "spec.transform",
            "no metric name: set metricNameColumn or defaultMetricName",
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
    let label_columns = validate_label_columns(&t.label_columns, p);
    if p.0.len() != before {
        return None;
    }
    Some(ValidatedTransform {
        value_columns,
        timestamp_column: timestamp_column?,
        metric_name_column,
        default_metric_name,
        metric_name_prefix: non_blank(&t.metric_name_prefix).map(str::to_owned),
        label_columns,
    })
}

/// With several value columns each gives the metric name suffix `_<column>`, its characters
/// sanitised by the transform's metric-name rule; two that give the same suffix would merge their
/// series, so that is a configuration error.
fn validate_value_suffixes(value_columns: &[String], p: &mut Problems) {
    if value_columns.len() < 2 {
        return;
    }
    let mut seen: Vec<(&str, String)> = Vec::with_capacity(value_columns.len());
    for column in value_columns {
        let suffix = sanitize_name_chars(column);
        match seen.iter().find(|(_, s)| *s == suffix) {
            Some((first, _)) => p.add(
                "spec.transform.valueColumns",
                format!(
                    "{first:?} and {column:?} both give the metric name suffix {suffix:?}: rename one in the query (e.g. `project-rename`)"
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
