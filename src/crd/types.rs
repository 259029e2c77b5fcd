//! The resource's Rust types: the `MetricsExporter` custom resource (its spec, whose doc comments
//! and `schemars` attributes become the CRD schema), its status, and the CRD rendered as YAML.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Ticks;

use super::{CrdError, LEGACY_CURSOR_CONDITION};

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
    /// Stop querying without deleting the resource: the watermark holds, windows already in the
    /// WAL still drain; set back to false to continue from the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Re-export a past range beside the live windows, with its own cursor, at lower priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillSpec>,
}

/// `spec.backfill` (adx-mon's names, docs/design.md#backfill).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// Names this backfill: a new value restarts it from `startTime`.
    #[schemars(required, length(min = 1))]
    pub request_id: Option<String>,
    /// First window (RFC 3339; the window containing it).
    #[schemars(required, extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// End of the range, exclusive (RFC 3339).
    #[schemars(required, extend("format" = "date-time"))]
    pub end_time: Option<String>,
    /// Backfill windows queried at once (default 1, at most `--max-concurrent-queries`); they never
    /// take a live window's query slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
}

/// Result columns → samples (docs/design.md#transform).
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
    /// `gauge` (default): each value is the metric's value. `counter`: each value is the series'
    /// increase during the window; exported as a running total named `<name>_total`. `histogram`:
    /// rows are buckets (`bucketColumn`), the value is the bucket's count during the window.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["gauge", "counter", "histogram"]))]
    pub type_: Option<String>,
    /// OTLP outputs of a counter or histogram: `cumulative` running totals (default) or per-window
    /// `delta`s. Remote write and the scrape page always carry running totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["cumulative", "delta"]))]
    pub temporality: Option<String>,
    /// Histogram: the real column holding each row's bucket upper bound (`+inf` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_column: Option<String>,
    /// Histogram: the column holding the sum of the observed values of each row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_column: Option<String>,
    /// Counter or histogram: a series unseen for this long restarts its running total from 0
    /// (Go duration, default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$"))]
    pub reset_after_idle: Option<String>,
    /// Help text: OTLP description, remote-write metadata, `# HELP` on the scrape page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unit (e.g. `seconds`, `By`): OTLP unit, remote-write metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Labels added to every sample (`name: value`); names must not collide with label columns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub static_labels: BTreeMap<String, String>,
    /// The metric name of each value column (`column: name`), instead of the name column or
    /// default name and the `_<column>` suffix; prefixes still apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_names: BTreeMap<String, String>,
    /// How names are built: `prometheus` (default: characters outside `[a-zA-Z0-9_:]` become `_`,
    /// case kept) or `adxmon` (exactly as the Go exporter: snake_case, lower case, `_<column>`
    /// suffix always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["prometheus", "adxmon"]))]
    pub name_style: Option<String>,
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
    /// The backfill of `spec.backfill`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillStatus>,
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

/// Progress of `spec.backfill`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    pub request_id: String,
    /// End of the newest backfill window in the WAL (all earlier ones of the range too), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub windows_done: u64,
    pub windows_total: u64,
    /// `Running`, `Completed` or `Failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
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
    pub(crate) fn watermark_ticks(&self) -> Option<Ticks> {
        self.watermark.as_deref().and_then(|s| Ticks::parse(s).ok())
    }

    /// adx-mon's cursor (the end of its last exported window), for migration without gap or repeat.
    pub(crate) fn legacy_watermark(&self) -> Option<Ticks> {
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
    /// Where to resume: our watermark, else adx-mon's cursor.
    pub(crate) fn resume_watermark(&self) -> Option<Ticks> {
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
pub(crate) fn crd_yaml() -> Result<String, CrdError> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&MetricsExporter::crd()).map_err(|e| CrdError::Render(e.to_string()))
}
