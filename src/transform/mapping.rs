//! From a validated transform ([`ValidatedTransform`]) to a [`Mapping`]: the metric-name prefix, the
//! default name and the value-column suffixes sanitised once; the metric-name character rule. Where
//! its columns sit in a window's result is `schema.rs`'s.

use crate::crd::names::{push_name_chars, sanitize_name_chars};
use crate::crd::{LabelColumn, ValidatedTransform};

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
