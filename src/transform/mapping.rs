//! From a validated transform ([`ValidatedTransform`]) to a [`Mapping`]: the metric-name prefix, the
//! default name and the value-column suffixes sanitised once; the metric-name character rule; and,
//! per window, where the mapping's columns sit in the result ([`resolve_columns`]).

use crate::crd::names::{push_name_chars, sanitize_name_chars};
use crate::crd::{LabelColumn, ValidatedTransform};
use crate::query::{ColumnType, Table};

use super::TransformError;

/// A [`ValidatedTransform`] with every name part pre-sanitised, ready to run on many windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Sanitised `cli_metricNamePrefix_`, or empty.
    pub(super) name_prefix: String,
    pub(super) metric_name_column: Option<String>,
    /// Sanitised with no leading-digit fix (it is applied to the whole name), or `None`.
    pub(super) default_base: Option<String>,
    pub(super) value_columns: Vec<ValueColumn>,
    pub(super) timestamp_column: String,
    /// As validated: the label names are final (sanitised, not reserved, unique).
    pub(super) labels: Vec<LabelColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueColumn {
    pub(super) column: String,
    /// `_<sanitised column>` when there are several value columns, else empty.
    pub(super) suffix: String,
}

/// Memory the transform needs per sample while it runs (the sample in its series, the series index,
/// the encoded bytes), for the query memory budget: an upper estimate from the transform bench's
/// workload (docs/deploy.md#memory-sizing).
const WORKING_BYTES_PER_SAMPLE: u64 = 64;

impl Mapping {
    /// Estimated memory the transform of one input row needs (one sample per value column).
    pub fn working_bytes_per_row(&self) -> u64 {
        self.value_columns.len() as u64 * WORKING_BYTES_PER_SAMPLE
    }

    /// The mapping of a validated transform; `cli_prefix` is `--metric-name-prefix` (empty: none).
    /// Infallible: validation has rejected every configuration problem, including two value
    /// columns with the same suffix, and the CLI prefix is only ever sanitised, never refused.
    pub fn new(transform: &ValidatedTransform, cli_prefix: &str) -> Mapping {
        let several = transform.value_columns.len() > 1;
        let value_columns = (transform.value_columns.iter())
            .map(|column| ValueColumn {
                column: column.clone(),
                suffix: if several {
                    format!("_{}", sanitize_name_chars(column))
                } else {
                    String::new()
                },
            })
            .collect();
        Mapping {
            name_prefix: name_prefix(Some(cli_prefix), transform.metric_name_prefix.as_deref()),
            metric_name_column: transform.metric_name_column.clone(),
            default_base: (transform.default_metric_name.as_deref()).map(sanitize_name_chars),
            value_columns,
            timestamp_column: transform.timestamp_column.clone(),
            labels: transform.label_columns.clone(),
        }
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
