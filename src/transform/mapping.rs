//! From the resource's transform settings to a [`Mapping`]: the metric-name prefix and value-column
//! suffixes sanitised once, the label names checked; and, per window, where the mapping's columns
//! sit in the result ([`resolve_columns`]).

use crate::query::{ColumnType, Table};

use super::TransformError;

/// The transform settings as written in the resource (plus the process-wide `--metric-name-prefix`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingSpec {
    pub cli_prefix: Option<String>,
    pub metric_name_prefix: Option<String>,
    pub metric_name_column: Option<String>,
    pub default_metric_name: Option<String>,
    pub value_columns: Vec<String>,
    pub timestamp_column: String,
    pub label_columns: Vec<String>,
}

/// A validated [`MappingSpec`] with every name part pre-sanitised, ready to run on many windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Sanitised `cli_metricNamePrefix_`, or empty.
    pub(super) name_prefix: String,
    pub(super) metric_name_column: Option<String>,
    /// Sanitised with no leading-digit fix (it is applied to the whole name), or `None`.
    pub(super) default_base: Option<String>,
    pub(super) value_columns: Vec<ValueColumn>,
    pub(super) timestamp_column: String,
    pub(super) labels: Vec<LabelColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueColumn {
    pub(super) column: String,
    /// `_<sanitised column>` when there are several value columns, else empty.
    pub(super) suffix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelColumn {
    pub(super) column: String,
    pub(super) label: String,
}

impl Mapping {
    pub fn new(spec: MappingSpec) -> Result<Mapping, TransformError> {
        if spec.value_columns.is_empty() {
            return Err(TransformError::NoValueColumns);
        }
        if spec.timestamp_column.is_empty() {
            return Err(TransformError::NoTimestampColumn);
        }
        let metric_name_column = spec.metric_name_column.filter(|c| !c.is_empty());
        let default_base = spec
            .default_metric_name
            .filter(|n| !n.is_empty())
            .map(|n| sanitize_name_chars(&n));
        if metric_name_column.is_none() && default_base.is_none() {
            return Err(TransformError::NoMetricName);
        }
        Ok(Mapping {
            name_prefix: name_prefix(
                spec.cli_prefix.as_deref(),
                spec.metric_name_prefix.as_deref(),
            ),
            metric_name_column,
            default_base,
            value_columns: value_columns(spec.value_columns)?,
            timestamp_column: spec.timestamp_column,
            labels: label_columns(spec.label_columns)?,
        })
    }
}

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
        prefix.push('_');
    }
    prefix
}

fn value_columns(columns: Vec<String>) -> Result<Vec<ValueColumn>, TransformError> {
    let several = columns.len() > 1;
    let mut out: Vec<ValueColumn> = Vec::with_capacity(columns.len());
    for column in columns {
        if column.is_empty() {
            return Err(TransformError::EmptyColumnName {
                role: "valueColumns",
            });
        }
        let suffix = if several {
            format!("_{}", sanitize_name_chars(&column))
        } else {
            String::new()
        };
        if let Some(first) = out.iter().find(|v| several && v.suffix == suffix) {
            return Err(TransformError::ValueColumnCollision {
                first: first.column.clone(),
                second: column,
                suffix: suffix[1..].to_owned(),
            });
        }
        out.push(ValueColumn { column, suffix });
    }
    Ok(out)
}

fn label_columns(columns: Vec<String>) -> Result<Vec<LabelColumn>, TransformError> {
    let mut out: Vec<LabelColumn> = Vec::with_capacity(columns.len());
    for column in columns {
        if column.is_empty() {
            return Err(TransformError::EmptyColumnName {
                role: "labelColumns",
            });
        }
        let label = sanitize_label_name(&column);
        if label.starts_with("__") {
            return Err(TransformError::ReservedLabel { column, label });
        }
        if let Some(first) = out.iter().find(|l| l.label == label) {
            return Err(TransformError::LabelCollision {
                first: first.column.clone(),
                second: column,
                label,
            });
        }
        out.push(LabelColumn { column, label });
    }
    Ok(out)
}

/// Maps every char outside `[a-zA-Z0-9_:]` to `_` (the leading-digit rule applies to whole names only).
fn sanitize_name_chars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_name_chars(&mut out, s);
    out
}

pub(super) fn push_name_chars(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return out.push_str(s);
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// A valid Prometheus metric name from arbitrary text: `[a-zA-Z0-9_:]` kept, others `_`, `_` before a digit.
pub fn sanitize_metric_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    push_name_chars(&mut out, s);
    out
}

/// A valid Prometheus label name: `[a-zA-Z0-9_]` kept, others `_`, `_` before a leading digit.
pub fn sanitize_label_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// Column positions in one table, resolved once per window.
pub(super) struct Columns {
    pub(super) timestamp: usize,
    pub(super) timestamp_is_string: bool,
    pub(super) metric_name: Option<usize>,
    pub(super) values: Vec<usize>,
    pub(super) labels: Vec<usize>,
}

pub(super) fn resolve_columns(table: &Table, mapping: &Mapping) -> Result<Columns, TransformError> {
    let find = |column: &str, role: &'static str| {
        table
            .column_index(column)
            .ok_or_else(|| TransformError::MissingColumn {
                column: column.to_owned(),
                role,
                available: table.columns.iter().map(|c| c.name.clone()).collect(),
            })
    };
    let timestamp = find(&mapping.timestamp_column, "timestampColumn")?;
    let timestamp_is_string = match table.columns.get(timestamp).map(|c| &c.ty) {
        Some(ColumnType::DateTime) => false,
        Some(ColumnType::String) => true,
        found => {
            return Err(TransformError::TimestampColumnType {
                column: mapping.timestamp_column.clone(),
                found: found.map_or_else(String::new, column_type_name),
            });
        }
    };
    let metric_name = match &mapping.metric_name_column {
        Some(c) => Some(find(c, "metricNameColumn")?),
        None => None,
    };
    let values = (mapping.value_columns.iter())
        .map(|v| find(&v.column, "valueColumns"))
        .collect::<Result<_, _>>()?;
    let labels = (mapping.labels.iter())
        .map(|l| find(&l.column, "labelColumns"))
        .collect::<Result<_, _>>()?;
    Ok(Columns {
        timestamp,
        timestamp_is_string,
        metric_name,
        values,
        labels,
    })
}

fn column_type_name(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "bool".into(),
        ColumnType::Int => "int".into(),
        ColumnType::Long => "long".into(),
        ColumnType::Real => "real".into(),
        ColumnType::Decimal => "decimal".into(),
        ColumnType::DateTime => "datetime".into(),
        ColumnType::TimeSpan => "timespan".into(),
        ColumnType::Guid => "guid".into(),
        ColumnType::String => "string".into(),
        ColumnType::Dynamic => "dynamic".into(),
        ColumnType::Other(name) => name.clone(),
    }
}
