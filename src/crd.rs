//! The `MetricsExporter` resource (SPEC §2): spec and status types, the CRD, offline validation and
//! loading resources from YAML/JSON text. No IO.
//!
//! - Field names are exactly adx-mon's (camelCase), so resources written for the Go exporter
//!   deserialize unchanged; the fields adx-mon lacks (`ingestionDelay`, `startTime`, `maxRows`,
//!   `outputs`, `transform.valueColumn`) are optional.
//! - Required fields are `Option` in Rust but `required` in the CRD schema: the API server rejects
//!   a resource without them, while [`MetricsExporterSpec::validate`] can still report *every*
//!   problem of a hand-written file at once instead of stopping at the first missing field.
//! - [`MetricsExporterSpec::validate`] is the one place that turns the text fields into typed values
//!   ([`ValidatedSpec`]); everything downstream uses only the validated form.
//! - Unknown fields are accepted (forward compatibility); [`load_documents`] lists them so
//!   `adxexporter check` can warn.
//! - Status timestamps are kept as RFC 3339 strings so a hand-edited status never makes the whole
//!   object unreadable; the `*_ticks` helpers parse them leniently.
//! - [`sanitize_label_name`] is the single label-name rule (SPEC §6), shared with the transform.
use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::criteria::expression::{CriteriaExpression, FIELD as EXPRESSION_FIELD};
use crate::time::{Span, TICKS_PER_SECOND, Ticks};

/// API group and version of the resource.
pub const API_VERSION: &str = "adx-mon.azure.com/v1";
/// Kind of the resource.
pub const KIND: &str = "MetricsExporter";
/// adx-mon's cursor condition: its message holds the end of the last exported window (RFC 3339).
pub const LEGACY_CURSOR_CONDITION: &str =
    "metricsexporter.adx-mon.azure.com/LastSuccessfulExecution";
/// Default `spec.maxRows`.
pub const DEFAULT_MAX_ROWS: u64 = 500_000;
/// Shortest allowed `spec.interval`.
pub const MIN_INTERVAL: Span = Span(TICKS_PER_SECOND);
/// Longest allowed `spec.interval` and `spec.ingestionDelay` (366 days): keeps window arithmetic
/// far from the ends of Kusto's datetime range.
pub const MAX_SPAN: Span = Span(8784 * 3600 * TICKS_PER_SECOND);

/// A KQL query run for consecutive aligned windows whose rows become metric samples.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "adx-mon.azure.com",
    version = "v1",
    kind = "MetricsExporter",
    namespaced,
    status = "MetricsExporterStatus",
    shortname = "mexp",
    derive = "PartialEq",
    doc = "Runs a KQL query for consecutive aligned time windows and exports the rows as metrics.",
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database"}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.interval"}"#,
    printcolumn = r#"{"name":"Watermark","type":"string","jsonPath":".status.watermark"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog.windows"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MetricsExporterSpec {
    /// Kusto database the query runs in; must have an endpoint in `--kusto-endpoint`.
    #[schemars(required, length(min = 1))]
    pub database: Option<String>,
    /// The KQL query. `_startTime`, `_endTime` (inclusive, window end minus 100ns) and one
    /// `_<label>` per cluster label are defined before it.
    #[schemars(required, length(min = 1))]
    pub body: Option<String>,
    /// Window length as a Go duration (`30s`, `5m`, `1h30m`); at least 1s.
    #[schemars(
        required,
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$"),
        extend("x-kubernetes-validations" = [{
            "rule": "duration(self) >= duration('1s') && duration(self) <= duration('8784h')",
            "message": "interval must be between 1s and 8784h (366 days)"
        }])
    )]
    pub interval: Option<String>,
    /// Cluster labels this exporter runs on: every key must match one of its values
    /// (case-insensitive). Empty: runs everywhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub criteria: BTreeMap<String, Vec<String>>,
    /// CEL expression over the cluster labels (adx-mon compatible): each label is a string
    /// variable named by its key (case-sensitive); it must evaluate to a bool. With `criteria`,
    /// both must match. Example: `region in ['eastus', 'westus'] && environment == 'prod'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria_expression: Option<String>,
    /// How result columns become samples.
    #[schemars(required)]
    pub transform: Option<TransformSpec>,
    /// How long after a window ends before it is queried (late data); Go duration, default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+)$"))]
    pub ingestion_delay: Option<String>,
    /// First window to export (RFC 3339; the window containing it). Default: the newest complete
    /// window at first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// Most rows one window may return; a larger result fails the window. Default 500000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_rows: Option<u64>,
    /// Output names this exporter sends to. Default: every configured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
}

/// Result columns → samples (SPEC §6).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.valueColumns) && size(self.valueColumns) > 0) || has(self.valueColumn)",
    "message": "set valueColumns (or valueColumn)"
}]))]
pub struct TransformSpec {
    /// Numeric columns; each gives one sample per row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_columns: Vec<String>,
    /// One numeric column (the design's spelling); joined with `valueColumns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_column: Option<String>,
    /// The datetime column giving each sample's timestamp.
    #[schemars(required, length(min = 1))]
    pub timestamp_column: Option<String>,
    /// Column holding the metric name (falls back to `defaultMetricName` when null or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name_column: Option<String>,
    /// Metric name when there is no `metricNameColumn` or its value is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_metric_name: Option<String>,
    /// Prefix joined with `_` before every metric name of this exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name_prefix: Option<String>,
    /// Columns that become labels (names sanitised to `[a-zA-Z_][a-zA-Z0-9_]*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_columns: Vec<String>,
}

/// Written only by adxexporter, by patch to the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsExporterStatus {
    /// End of the newest window durably in the WAL (all earlier windows too), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// End of the newest window delivered to every output, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_execution: Option<String>,
    /// Windows waiting for delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogStatus>,
    /// Windows that could never be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<DeadLetterStatus>,
    /// The most recent query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_query: Option<LastQueryStatus>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `QueryHealthy`, `DeliveryHealthy` (and adx-mon's conditions, kept as read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacklogStatus {
    pub windows: u64,
    pub bytes: u64,
    /// Start of the oldest pending window, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_window_start: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterStatus {
    pub windows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastQueryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The Kusto error of a failed query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Same JSON as Kubernetes' `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl MetricsExporterStatus {
    /// The typed watermark; `None` when absent or unparseable.
    pub fn watermark_ticks(&self) -> Option<Ticks> {
        self.watermark.as_deref().and_then(|s| Ticks::parse(s).ok())
    }

    /// adx-mon's cursor (the end of its last exported window), for migration without gap or repeat.
    pub fn legacy_watermark(&self) -> Option<Ticks> {
        let condition = self
            .conditions
            .iter()
            .find(|c| c.type_ == LEGACY_CURSOR_CONDITION)?;
        Ticks::parse(condition.message.trim()).ok()
    }

    /// The condition of this type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl MetricsExporter {
    /// adx-mon's cursor from the status, if any (see [`MetricsExporterStatus::legacy_watermark`]).
    pub fn legacy_watermark(&self) -> Option<Ticks> {
        self.status.as_ref()?.legacy_watermark()
    }

    /// Where to resume: our watermark, else adx-mon's cursor.
    pub fn resume_watermark(&self) -> Option<Ticks> {
        let status = self.status.as_ref()?;
        status
            .watermark_ticks()
            .or_else(|| status.legacy_watermark())
    }

    /// `namespace/name`, with `default` for a resource read from a file without a namespace.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or("<unnamed>")
        )
    }
}

/// The CRD as YAML: what `adxexporter crd` prints and `deploy/crds/metricsexporters.yaml` holds.
pub fn crd_yaml() -> Result<String, CrdError> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&MetricsExporter::crd()).map_err(|e| CrdError::Render(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot render the CRD as YAML: {0}")]
    Render(String),
    #[error("not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error("document {doc}: {message}")]
    NotAResource { doc: usize, message: String },
    #[error("document {doc} ({key}): {message}")]
    Shape {
        doc: usize,
        key: String,
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Validation

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

/// The transform settings, checked: at least one value column, no label collisions.
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

/// The one label-name rule (SPEC §6): every character outside `[a-zA-Z0-9_]` becomes `_` (one per
/// character, no collapsing), a leading digit gets a `_` in front, and an empty name becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// A label name Prometheus reserves for itself.
pub fn is_reserved_label_name(name: &str) -> bool {
    name.starts_with("__")
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

// ---------------------------------------------------------------------------------------------
// Loading resources from text

/// One `MetricsExporter` read from a file.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    /// 1-based position of its document in the file.
    pub doc: usize,
    pub resource: MetricsExporter,
    /// Paths of spec fields this version does not know (ignored), e.g. `spec.transform.valueColum`.
    pub unknown_fields: Vec<String>,
}

/// Reads every document of a YAML (`---`-separated) or JSON text. Documents of other kinds, and
/// `kind: List` wrappers' items of other kinds, are errors; empty documents are skipped.
/// `Err` only when the text as a whole cannot be parsed.
pub fn load_documents(text: &str) -> Result<Vec<Result<LoadedResource, CrdError>>, CrdError> {
    let values = parse_values(text)?;
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let doc = i + 1;
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(ref map)
                if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                let items = map.get("items").and_then(|i| i.as_array()).cloned();
                for item in items.unwrap_or_default() {
                    out.push(load_one(doc, item));
                }
            }
            value => out.push(load_one(doc, value)),
        }
    }
    Ok(out)
}

fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, CrdError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CrdError::Syntax(e.to_string()))?;
        return Ok(match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        });
    }
    serde_saphyr::from_multiple::<serde_json::Value>(text).map_err(|e| {
        // The first line names the location; the rest is a source snippet.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        CrdError::Syntax(first.strip_prefix("error: ").unwrap_or(first).to_owned())
    })
}

fn load_one(doc: usize, value: serde_json::Value) -> Result<LoadedResource, CrdError> {
    let not_resource = |message: String| CrdError::NotAResource { doc, message };
    let map = value
        .as_object()
        .ok_or_else(|| not_resource("not a mapping: expected a MetricsExporter".into()))?;
    let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION || kind != KIND {
        return Err(not_resource(format!(
            "apiVersion {api_version:?} kind {kind:?} is not a MetricsExporter (expected apiVersion {API_VERSION}, kind {KIND})"
        )));
    }
    let key = format!(
        "{}/{}",
        map.get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or("default"),
        map.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>")
    );
    let resource: MetricsExporter =
        serde_path_to_error::deserialize(&value).map_err(|e| CrdError::Shape {
            doc,
            key: key.clone(),
            message: format!("{}: {}", e.path(), e.inner()),
        })?;
    if resource.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(CrdError::Shape {
            doc,
            key,
            message: "metadata.name: missing: name the resource".into(),
        });
    }
    let mut unknown_fields = Vec::new();
    if let (Some(original), Ok(known)) = (map.get("spec"), serde_json::to_value(&resource.spec)) {
        unknown_paths("spec", original, &known, &mut unknown_fields);
    }
    Ok(LoadedResource {
        doc,
        resource,
        unknown_fields,
    })
}

/// Keys present in `original` that the typed round trip (`known`) dropped.
fn unknown_paths(
    path: &str,
    original: &serde_json::Value,
    known: &serde_json::Value,
    out: &mut Vec<String>,
) {
    let (Some(original), Some(known)) = (original.as_object(), known.as_object()) else {
        return;
    };
    for (key, value) in original {
        let child = format!("{path}.{key}");
        match known.get(key) {
            None if !value.is_null() => out.push(child),
            None => {}
            // Criteria keys are cluster-label names, not fields.
            Some(_) if path == "spec" && key == "criteria" => {}
            Some(k) => unknown_paths(&child, value, k, out),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `adxexporter check`

/// What `adxexporter check` says about one file: `ok` lines, warnings and problems, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `ok ns/name` (plus, with cluster labels, whether it would run here).
    pub ok: Vec<String>,
    /// `FILE: ns/name: warning: ...`; they do not fail the check.
    pub warnings: Vec<String>,
    /// `FILE: ns/name: field: problem`; any fails the check.
    pub problems: Vec<String>,
}

/// Checks the text of one file. `file` is how lines name it; with `labels`, each `ok` line also
/// says whether an instance with those cluster labels would run the resource.
pub fn check_text(
    file: &str,
    text: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> CheckReport {
    let mut report = CheckReport::default();
    let documents = match load_documents(text) {
        Ok(d) => d,
        Err(e) => {
            report.problems.push(format!("{file}: {e}"));
            return report;
        }
    };
    if documents.is_empty() {
        report
            .problems
            .push(format!("{file}: no MetricsExporter in this file"));
    }
    for document in documents {
        let loaded = match document {
            Ok(l) => l,
            Err(e) => {
                report.problems.push(format!("{file}: {e}"));
                continue;
            }
        };
        let key = loaded.resource.key();
        for field in &loaded.unknown_fields {
            report.warnings.push(format!(
                "{file}: {key}: warning: {field}: unknown field, ignored (check the spelling)"
            ));
        }
        match loaded.resource.spec.validate() {
            Err(problems) => report
                .problems
                .extend(problems.iter().map(|p| format!("{file}: {key}: {p}"))),
            Ok(spec) => match labels {
                None => report.ok.push(format!("ok {key}")),
                Some(labels) => match placement(&spec, labels) {
                    Ok(placed) => report.ok.push(format!("ok {key}: {placed}")),
                    // An instance with these labels cannot evaluate the expression: it would skip
                    // the resource and report it, so the check fails too.
                    Err(problem) => report.problems.push(format!("{file}: {key}: {problem}")),
                },
            },
        }
    }
    report
}

/// Whether an instance with `labels` would run the resource, and why not; `Err` when its
/// `criteriaExpression` cannot be evaluated there.
fn placement(spec: &ValidatedSpec, labels: &BTreeMap<String, String>) -> Result<String, String> {
    use crate::criteria::Placement;
    let constrained = !spec.criteria.is_empty() || spec.criteria_expression.is_some();
    Ok(
        match crate::criteria::place(&spec.criteria, spec.criteria_expression.as_ref(), labels) {
            Placement::Runs if constrained => "would run here (criteria match)".into(),
            Placement::Runs => "would run here (no criteria)".into(),
            Placement::Skipped(reason) => format!("skipped here: {reason}"),
            Placement::Error(e) => return Err(format!("{EXPRESSION_FIELD}: {e}")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MetricsExporterSpec {
        MetricsExporterSpec {
            database: Some("db".into()),
            body: Some("T | project ts, v".into()),
            interval: Some("5m".into()),
            transform: Some(TransformSpec {
                value_columns: vec!["v".into()],
                timestamp_column: Some("ts".into()),
                default_metric_name: Some("m".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn problems(s: &MetricsExporterSpec) -> Vec<String> {
        s.validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_minimal_spec_validates_with_defaults() {
        let v = spec().validate().unwrap();
        assert_eq!(v.interval, Span::from_secs(300));
        assert_eq!(v.ingestion_delay, Span::ZERO);
        assert_eq!(v.max_rows, DEFAULT_MAX_ROWS);
        assert_eq!(v.start_time, None);
        assert_eq!(v.transform.value_columns, vec!["v"]);
    }

    #[test]
    fn value_column_and_value_columns_are_joined_without_duplicates() {
        let mut s = spec();
        let t = s.transform.as_mut().unwrap();
        t.value_columns = vec!["a".into(), "b".into(), "a".into()];
        t.value_column = Some("b".into());
        assert_eq!(
            s.validate().unwrap().transform.value_columns,
            vec!["a", "b"]
        );
        let t = s.transform.as_mut().unwrap();
        t.value_columns.clear();
        t.value_column = Some("c".into());
        assert_eq!(s.validate().unwrap().transform.value_columns, vec!["c"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut s = spec();
        s.interval = Some("0s".into());
        s.body = None;
        s.start_time = Some("yesterday".into());
        s.max_rows = Some(0);
        assert_eq!(
            problems(&s),
            vec![
                "spec.body: missing: set the KQL query",
                "spec.interval: \"0s\" is too short: use at least 1s",
                "spec.startTime: \"yesterday\" is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z",
                "spec.maxRows: 0 rows allows no result: use at least 1 (default 500000)",
            ]
        );
    }

    #[test]
    fn intervals_below_one_second_or_unparseable_are_rejected() {
        for (text, ok) in [
            ("1s", true),
            ("1500ms", true),
            ("1h30m", true),
            ("999ms", false),
            ("-5m", false),
            ("5 minutes", false),
            ("1d", false),
            ("8784h", true),
            ("8785h", false),
        ] {
            let mut s = spec();
            s.interval = Some(text.into());
            assert_eq!(s.validate().is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn negative_or_bad_ingestion_delay_is_rejected() {
        let mut s = spec();
        s.ingestion_delay = Some("90s".into());
        assert_eq!(s.validate().unwrap().ingestion_delay, Span::from_secs(90));
        s.ingestion_delay = Some("-1s".into());
        assert_eq!(
            problems(&s),
            vec!["spec.ingestionDelay: \"-1s\" is negative: use 0s or more"]
        );
    }

    #[test]
    fn transform_needs_a_value_column_and_a_name() {
        let mut s = spec();
        let t = s.transform.as_mut().unwrap();
        t.value_columns.clear();
        t.default_metric_name = None;
        assert_eq!(
            problems(&s),
            vec![
                "spec.transform: set valueColumns (or valueColumn)",
                "spec.transform: no metric name: set metricNameColumn or defaultMetricName",
            ]
        );
    }

    #[test]
    fn timestamp_column_cannot_be_a_value() {
        let mut s = spec();
        s.transform
            .as_mut()
            .unwrap()
            .value_columns
            .push("ts".into());
        assert_eq!(
            problems(&s),
            vec![
                "spec.transform.valueColumns: \"ts\" is also the timestampColumn: a datetime cannot be a value"
            ]
        );
    }

    #[test]
    fn label_collisions_and_reserved_names_are_rejected() {
        let mut s = spec();
        s.transform.as_mut().unwrap().label_columns =
            vec!["a-b".into(), "a_b".into(), "__name__".into(), "ok".into()];
        assert_eq!(
            problems(&s),
            vec![
                "spec.transform.labelColumns: \"a-b\" and \"a_b\" both become label \"a_b\": rename one in the query",
                "spec.transform.labelColumns: \"__name__\" becomes label \"__name__\", and names starting with __ are reserved: rename the column in the query",
            ]
        );
    }

    #[test]
    fn label_columns_carry_their_sanitised_names() {
        let mut s = spec();
        s.transform.as_mut().unwrap().label_columns = vec!["Region".into(), "5xx".into()];
        let labels = s.validate().unwrap().transform.label_columns;
        assert_eq!(
            labels,
            vec![
                LabelColumn {
                    column: "Region".into(),
                    label: "Region".into()
                },
                LabelColumn {
                    column: "5xx".into(),
                    label: "_5xx".into()
                },
            ]
        );
    }

    #[test]
    fn sanitize_label_name_follows_the_single_rule() {
        assert_eq!(sanitize_label_name("a-b.c"), "a_b_c");
        assert_eq!(sanitize_label_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("é"), "_");
        assert_eq!(sanitize_label_name(""), "_");
        assert_eq!(sanitize_label_name("Host_Name1"), "Host_Name1");
    }

    proptest::proptest! {
        #[test]
        fn sanitized_label_names_are_always_valid(name in ".{0,20}") {
            let out = sanitize_label_name(&name);
            let mut chars = out.chars();
            let first = chars.next().unwrap();
            proptest::prop_assert!(first.is_ascii_alphabetic() || first == '_');
            proptest::prop_assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
            proptest::prop_assert_eq!(sanitize_label_name(&out), out.clone());
        }
    }

    #[test]
    fn legacy_cursor_is_read_from_adx_mon_condition() {
        let mut status = MetricsExporterStatus::default();
        assert_eq!(status.legacy_watermark(), None);
        status.conditions.push(Condition {
            type_: LEGACY_CURSOR_CONDITION.into(),
            status: "True".into(),
            reason: "ExecutionCompleted".into(),
            message: "2026-01-01T12:05:00Z".into(),
            ..Default::default()
        });
        assert_eq!(
            status.legacy_watermark(),
            Some(Ticks::parse("2026-01-01T12:05:00Z").unwrap())
        );
        status.conditions[0].message = "garbage".into();
        assert_eq!(status.legacy_watermark(), None);
    }

    #[test]
    fn resume_prefers_our_watermark_over_adx_mon_cursor() {
        let mut me = MetricsExporter::new("x", spec());
        let mut status = MetricsExporterStatus::default();
        status.conditions.push(Condition {
            type_: LEGACY_CURSOR_CONDITION.into(),
            message: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        });
        me.status = Some(status.clone());
        assert_eq!(
            me.resume_watermark(),
            Ticks::parse("2026-01-01T00:00:00Z").ok()
        );
        status.watermark = Some("2026-02-01T00:00:00Z".into());
        me.status = Some(status);
        assert_eq!(
            me.resume_watermark(),
            Ticks::parse("2026-02-01T00:00:00Z").ok()
        );
    }

    #[test]
    fn adx_mon_resource_deserializes_and_unknown_fields_are_listed() {
        let text = r#"
apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {name: m, namespace: ns}
spec:
  database: Metrics
  interval: 5m
  body: T
  criteria: {region: [eastus]}
  transform:
    valueColumns: [v]
    timestampColumn: ts
    metricNamePrefix: team
    defaultMetricName: m
    valueColum: typo
status:
  conditions:
  - type: metricsexporter.adx-mon.azure.com/LastSuccessfulExecution
    status: "True"
    reason: ExecutionCompleted
    message: "2026-01-01T00:05:00Z"
    lastTransitionTime: "2026-01-01T00:05:01Z"
---
"#;
        let docs = load_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let loaded = docs.into_iter().next().unwrap().unwrap();
        assert_eq!(loaded.resource.key(), "ns/m");
        assert_eq!(loaded.unknown_fields, vec!["spec.transform.valueColum"]);
        assert!(loaded.resource.spec.validate().is_ok());
        assert_eq!(
            loaded.resource.legacy_watermark(),
            Ticks::parse("2026-01-01T00:05:00Z").ok()
        );
    }

    #[test]
    fn wrong_kind_and_wrong_types_name_the_document_and_path() {
        let text = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: m}\nspec: {maxRows: many}\n";
        let docs = load_documents(text).unwrap();
        let errors: Vec<String> = docs
            .into_iter()
            .map(|d| d.unwrap_err().to_string())
            .collect();
        assert!(
            errors[0].starts_with(
                "document 1: apiVersion \"v1\" kind \"ConfigMap\" is not a MetricsExporter"
            ),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("document 2 (default/m): spec.maxRows: invalid type"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn json_and_lists_are_accepted() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"adx-mon.azure.com/v1","kind":"MetricsExporter","metadata":{"name":"a"},"spec":{"database":"d","body":"b","interval":"1m","transform":{"valueColumn":"v","timestampColumn":"t","defaultMetricName":"m"}}}]}"#;
        let docs = load_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs[0].as_ref().unwrap().resource.spec.validate().is_ok());
    }

    #[test]
    fn broken_yaml_is_a_syntax_error() {
        let err = load_documents("spec: [unclosed\n  a: b").unwrap_err();
        assert!(matches!(err, CrdError::Syntax(_)), "{err}");
    }

    #[test]
    fn crd_has_required_fields_patterns_and_columns() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "shortNames:",
            "- mexp",
            "additionalPrinterColumns:",
            "name: Watermark",
            "duration(self) >= duration('1s') && duration(self) <= duration('8784h')",
            "format: date-time",
            "subresources:",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}:\n{yaml}");
        }
    }
}
