//! The `MetricsExporter` resource (docs/design.md#resource): spec and status types, the CRD, offline validation and
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
//! - Unknown fields are accepted (forward compatibility); [`load_documents`] lists them, with the
//!   known field each most likely meant, so `adxexporter check` and `run --manifests` can warn.
//! - A text field given a YAML boolean or number (`valueColumns: [Cpu, N]`: `N` is `false` in
//!   YAML 1.1) is an error that says so and how to quote it, for every such field at once.
//! - Status timestamps are kept as RFC 3339 strings so a hand-edited status never makes the whole
//!   object unreadable; the `*_ticks` helpers parse them leniently.
//! - Validation is the one home of the label-name rule (docs/design.md#transform): empty columns, sanitising
//!   ([`names::sanitize_label_name`]), reserved `__` names and collisions. The transform takes the label
//!   names from [`ValidatedTransform`] as they are and checks nothing again.

mod check;
mod kql;
mod load;
pub mod names;
mod problems;
#[cfg(test)]
mod tests;
mod transform;
mod types;
mod validate;

use crate::time::{Span, TICKS_PER_SECOND};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use check::check_loaded;
#[cfg(test)]
pub(crate) use check::check_text;
pub(crate) use check::{CheckReport, Checker, ValidResource};
pub use load::load_documents;
pub(crate) use transform::{LabelColumn, MetricKind, NameStyle, Temporality, ValidatedTransform};
pub use types::MetricsExporter;
pub(crate) use types::{
    BackfillSpec, BackfillStatus, BacklogStatus, Condition, DeadLetterStatus, LastQueryStatus,
    MetricsExporterSpec, crd_yaml,
};
pub use types::{MetricsExporterStatus, TransformSpec};
pub(crate) use validate::{Backfill, ValidatedSpec};

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

/// Why a file's text holds no usable resource, or why the CRD cannot be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CrdError {
    #[error("cannot render the CRD as YAML: {0}")]
    Render(String),
    #[error("not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error("document {doc}: {message}")]
    NotAResource { doc: usize, message: String },
    /// One message per field that does not have the expected type.
    #[error("document {doc} ({key}): {}", messages.join("; "))]
    Shape {
        doc: usize,
        key: String,
        messages: Vec<String>,
    },
}

impl CrdError {
    /// The error as lines, one per problem (a [`CrdError::Shape`] can name several fields), each
    /// naming the document: what `check` prints and `--manifests` reports.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CrdError::Shape { doc, key, messages } => (messages.iter())
                .map(|m| format!("document {doc} ({key}): {m}"))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}
