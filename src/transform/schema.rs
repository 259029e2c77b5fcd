//! The columns a [`Mapping`] needs from a query result, by role, and what each role makes of a
//! column's type (docs/design.md#transform).
//!
//! One list ([`column_uses`]) and one type rule per role ([`ColumnRole::fit`]) serve two callers:
//! the transform, which fails a window on the first finding that breaks it and otherwise resolves
//! where each column sits ([`resolve_columns`]), and `adxexporter check --kusto-endpoint`, which
//! reports every finding of a result's columns before anything runs ([`schema_findings`]). A new
//! column role (a histogram's bucket column) is a variant here and one line in [`column_uses`].

use std::fmt;

use crate::query::{Column, ColumnType, Table, column_type_name};

use super::TransformError;
use super::mapping::{LabelValue, Mapping};

/// Every result column `mapping` reads, with what for, in the order the transform resolves them.
fn column_uses(mapping: &Mapping) -> impl Iterator<Item = (ColumnRole, &str)> {
    let timestamp = std::iter::once((ColumnRole::Timestamp, mapping.timestamp_column.as_str()));
    let name = (mapping.metric_name_column.as_deref()).map(|c| (ColumnRole::MetricName, c));
    let values = (mapping.value_columns.iter()).map(|v| (ColumnRole::Value, v.column.as_str()));
    let labels = (mapping.label_values.iter()).filter_map(label_use);
    let sum = mapping.sum_column().map(|c| (ColumnRole::Sum, c));
    timestamp.chain(name).chain(values).chain(labels).chain(sum)
}

/// The column a label reads, if any (a static label reads none).
fn label_use(value: &LabelValue) -> Option<(ColumnRole, &str)> {
    match value {
        LabelValue::Column { column, .. } => Some((ColumnRole::Label, column.as_str())),
        LabelValue::Bucket { column } => Some((ColumnRole::Bucket, column.as_str())),
        LabelValue::Static(_) => None,
    }
}

/// What the transform uses a result column for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnRole {
    Timestamp,
    MetricName,
    Value,
    Label,
    /// A histogram's bucket upper bound (the `le` label).
    Bucket,
    /// A histogram's per-row sum.
    Sum,
}

impl ColumnRole {
    /// The `spec.transform` field that names the column.
    pub(crate) fn field(self) -> &'static str {
        match self {
            ColumnRole::Timestamp => "timestampColumn",
            ColumnRole::MetricName => "metricNameColumn",
            ColumnRole::Value => "valueColumns",
            ColumnRole::Label => "labelColumns",
            ColumnRole::Bucket => "bucketColumn",
            ColumnRole::Sum => "sumColumn",
        }
    }

    /// The skip reason of a cell this role cannot use.
    fn skip_reason(self) -> &'static str {
        match self {
            ColumnRole::Bucket => "bad_bucket",
            _ => "non_numeric_value",
        }
    }

    /// What this role makes of a column of type `ty`: the per-cell rules of `cells.rs` summarised
    /// for the column's type.
    pub(crate) fn fit(self, ty: &ColumnType) -> Fit {
        match self {
            // A string column is read cell by cell (adx-mon compatibility); any other type fails
            // the window (docs/design.md#transform-timestamp).
            ColumnRole::Timestamp => match ty {
                ColumnType::DateTime => Fit::Fits,
                ColumnType::String => Fit::PerCell,
                _ => Fit::Breaks,
            },
            // A bound or a sum is read as a value is.
            ColumnRole::Value | ColumnRole::Bucket | ColumnRole::Sum => value_type_fit(ty),
            // Any type is rendered as text (docs/design.md#labels, #metric-names).
            ColumnRole::MetricName | ColumnRole::Label => Fit::Fits,
        }
    }
}

/// `cells::sample_value` summarised for a column's type (docs/design.md#transform-value): numbers
/// and bools always convert, text and JSON only when a cell holds a number, datetime, timespan
/// and guid never (kept in step with `sample_value` by a test below).
fn value_type_fit(ty: &ColumnType) -> Fit {
    match ty {
        ColumnType::Int
        | ColumnType::Long
        | ColumnType::Real
        | ColumnType::Decimal
        | ColumnType::Bool => Fit::Fits,
        // An unknown type's cells are kept as raw JSON text, read like dynamic ones.
        ColumnType::String | ColumnType::Dynamic | ColumnType::Other(_) => Fit::PerCell,
        ColumnType::DateTime | ColumnType::TimeSpan | ColumnType::Guid => Fit::Never,
    }
}

/// How a column of some type serves a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Every non-null cell converts.
    Fits,
    /// Each cell converts on its own; the ones that do not are skipped and counted.
    PerCell,
    /// No cell ever converts: every sample is skipped (the window exports nothing).
    Never,
    /// The transform refuses the whole window (a permanent schema mismatch).
    Breaks,
}

/// One way a result's columns do not suit the mapping, found before any row is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaFinding {
    pub(crate) role: ColumnRole,
    pub(crate) column: String,
    pub(crate) kind: FindingKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FindingKind {
    /// No such column; `available` is what the result has.
    Missing { available: Vec<String> },
    /// A type that fits the role less than fully ([`Fit::PerCell`], [`Fit::Never`], [`Fit::Breaks`]).
    Type { found: String, fit: Fit },
}

impl SchemaFinding {
    /// Only a warning: the transform runs, converting cell by cell.
    pub(crate) fn is_warning(&self) -> bool {
        matches!(
            self.kind,
            FindingKind::Type {
                fit: Fit::PerCell,
                ..
            }
        )
    }

    /// The error the transform fails a window with, for the findings that fail one.
    pub(crate) fn window_error(&self) -> Option<TransformError> {
        match &self.kind {
            FindingKind::Missing { available } => Some(TransformError::MissingColumn {
                column: self.column.clone(),
                role: self.role.field(),
                available: available.clone(),
            }),
            // Only the timestamp role has types that break a window (`ColumnRole::fit`); a role
            // that gains some needs its own `TransformError` here.
            FindingKind::Type {
                found,
                fit: Fit::Breaks,
            } => Some(TransformError::TimestampColumnType {
                column: self.column.clone(),
                found: found.clone(),
            }),
            FindingKind::Type { .. } => None,
        }
    }
}

/// The message names the column, its role and the fix; a finding that fails a window says exactly
/// what the window's `QueryHealthy` condition would.
impl fmt::Display for SchemaFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (column, field) = (&self.column, self.role.field());
        match (&self.kind, self.role) {
            (
                FindingKind::Type {
                    found,
                    fit: Fit::PerCell,
                },
                ColumnRole::Timestamp,
            ) => write!(
                f,
                "timestamp column {column:?} is of type {found}: rows whose text is not RFC 3339 (or `YYYY-MM-DD hh:mm:ss`) are skipped (bad_timestamp): return a datetime from the query (e.g. `todatetime({column})`)"
            ),
            (
                FindingKind::Type {
                    found,
                    fit: Fit::Never,
                },
                _,
            ) => write!(
                f,
                "column {column:?} (the transform's {field}) is of type {found}, which is never a number: every sample would be skipped ({}): return a number from the query (e.g. `todouble({column})`, or `{column} / 1s` for a timespan in seconds)",
                self.role.skip_reason()
            ),
            (
                FindingKind::Type {
                    found,
                    fit: Fit::PerCell,
                },
                _,
            ) => write!(
                f,
                "column {column:?} (the transform's {field}) is of type {found}: only cells that hold a number become samples, the others are skipped ({}): return a number from the query (e.g. `todouble({column})`)",
                self.role.skip_reason()
            ),
            (FindingKind::Missing { .. } | FindingKind::Type { .. }, _) => {
                match self.window_error() {
                    Some(e) => e.fmt(f),
                    None => write!(
                        f,
                        "column {column:?} (the transform's {field}) does not fit"
                    ),
                }
            }
        }
    }
}

/// Every finding of `columns` against `mapping`, in the order of [`column_uses`].
pub(crate) fn schema_findings(columns: &[Column], mapping: &Mapping) -> Vec<SchemaFinding> {
    let mut findings = Vec::new();
    for (role, column) in column_uses(mapping) {
        let kind = match columns.iter().find(|c| c.name == column) {
            None => FindingKind::Missing {
                available: columns.iter().map(|c| c.name.clone()).collect(),
            },
            Some(c) => match role.fit(&c.ty) {
                Fit::Fits => continue,
                fit => FindingKind::Type {
                    found: column_type_name(&c.ty).to_owned(),
                    fit,
                },
            },
        };
        findings.push(SchemaFinding {
            role,
            column: column.to_owned(),
            kind,
        });
    }
    findings
}

/// Column positions in one table, resolved once per window.
pub(super) struct Columns {
    pub(super) timestamp: usize,
    pub(super) timestamp_is_string: bool,
    pub(super) metric_name: Option<usize>,
    pub(super) values: Vec<usize>,
    /// Per label of the mapping: its column, or `None` for a static label.
    pub(super) labels: Vec<Option<usize>>,
    /// A histogram's `sumColumn`.
    pub(super) sum: Option<usize>,
}

/// Where the mapping's columns sit in `table`, or the first finding that fails the window (the
/// findings `check --kusto-endpoint` lists).
pub(super) fn resolve_columns(table: &Table, mapping: &Mapping) -> Result<Columns, TransformError> {
    let findings = schema_findings(&table.columns, mapping);
    if let Some(e) = findings.iter().find_map(SchemaFinding::window_error) {
        return Err(e);
    }
    // No finding failed the window, so every column is present; a miss here would be a bug, and
    // would still fail only this window.
    let find = |column: &str, role: ColumnRole| {
        table
            .column_index(column)
            .ok_or_else(|| TransformError::MissingColumn {
                column: column.to_owned(),
                role: role.field(),
                available: table.columns.iter().map(|c| c.name.clone()).collect(),
            })
    };
    let timestamp = find(&mapping.timestamp_column, ColumnRole::Timestamp)?;
    let metric_name = (mapping.metric_name_column.as_deref())
        .map(|c| find(c, ColumnRole::MetricName))
        .transpose()?;
    let values = (mapping.value_columns.iter())
        .map(|v| find(&v.column, ColumnRole::Value))
        .collect::<Result<_, _>>()?;
    let labels = (mapping.label_values.iter())
        .map(|l| label_use(l).map(|(role, c)| find(c, role)).transpose())
        .collect::<Result<_, _>>()?;
    let sum = (mapping.sum_column())
        .map(|c| find(c, ColumnRole::Sum))
        .transpose()?;
    Ok(Columns {
        timestamp,
        timestamp_is_string: table.columns[timestamp].ty == ColumnType::String,
        metric_name,
        values,
        labels,
        sum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TransformSpec;
    use crate::query::Value;
    use crate::time::{Span, Ticks};
    use crate::transform::cells::sample_value;

    /// The column rule agrees with the cell rule on typical cells of each type: `Fits` converts,
    /// `Never` is `non_numeric_value`, `PerCell` depends on the text.
    #[test]
    fn value_type_fit_matches_sample_value() {
        let guid = "00000000-0000-0000-0000-000000000001";
        let cases: [(ColumnType, Vec<Value>); 11] = [
            (ColumnType::Int, vec![Value::Int(-3)]),
            (ColumnType::Long, vec![Value::Long(7)]),
            (ColumnType::Real, vec![Value::Real(0.5)]),
            (ColumnType::Decimal, vec![Value::Decimal("1.25".into())]),
            (ColumnType::Bool, vec![Value::Bool(true)]),
            (ColumnType::DateTime, vec![Value::DateTime(Ticks(1))]),
            (ColumnType::TimeSpan, vec![Value::TimeSpan(Span(10))]),
            (ColumnType::Guid, vec![Value::Guid(guid.into())]),
            (
                ColumnType::String,
                vec![Value::String("1.5".into()), Value::String("up".into())],
            ),
            (
                ColumnType::Dynamic,
                vec![Value::Dynamic("2".into()), Value::Dynamic("{}".into())],
            ),
            (
                ColumnType::Other("x".into()),
                vec![Value::Dynamic("3".into()), Value::Dynamic("[]".into())],
            ),
        ];
        for (ty, cells) in cases {
            let converts: Vec<bool> = cells.iter().map(|c| sample_value(c).is_ok()).collect();
            let expected = match value_type_fit(&ty) {
                Fit::Fits => vec![true],
                Fit::Never => vec![false],
                Fit::PerCell => vec![true, false],
                Fit::Breaks => panic!("{ty:?}: a value column never fails the window"),
            };
            assert_eq!(converts, expected, "{ty:?}");
        }
    }

    fn columns(cs: &[(&str, ColumnType)]) -> Vec<Column> {
        (cs.iter())
            .map(|(name, ty)| Column {
                name: (*name).into(),
                ty: ty.clone(),
            })
            .collect()
    }

    fn mapping(values: &[&str], name: Option<&str>, labels: &[&str]) -> Mapping {
        let spec = TransformSpec {
            value_columns: values.iter().map(|v| (*v).into()).collect(),
            timestamp_column: Some("ts".into()),
            metric_name_column: name.map(Into::into),
            default_metric_name: Some("m".into()),
            label_columns: labels.iter().map(|v| (*v).into()).collect(),
            ..TransformSpec::default()
        };
        Mapping::new(&spec.validate().unwrap(), "")
    }

    #[test]
    fn a_fitting_result_has_no_finding() {
        let m = mapping(&["a", "b", "c", "d", "e"], Some("n"), &["host"]);
        let cs = columns(&[
            ("ts", ColumnType::DateTime),
            ("n", ColumnType::Long),
            ("a", ColumnType::Int),
            ("b", ColumnType::Long),
            ("c", ColumnType::Real),
            ("d", ColumnType::Decimal),
            ("e", ColumnType::Bool),
            ("host", ColumnType::Dynamic),
        ]);
        assert_eq!(schema_findings(&cs, &m), vec![]);
    }

    #[test]
    fn every_finding_is_listed_in_role_order() {
        let m = mapping(&["v", "when", "s", "gone"], Some("name"), &["host"]);
        let cs = columns(&[
            ("ts", ColumnType::Long),
            ("v", ColumnType::Real),
            ("when", ColumnType::DateTime),
            ("s", ColumnType::String),
        ]);
        let available: Vec<String> = ["ts", "v", "when", "s"].map(Into::into).to_vec();
        let found = |role, column: &str, kind| SchemaFinding {
            role,
            column: column.into(),
            kind,
        };
        let ty = |found: &str, fit| FindingKind::Type {
            found: found.into(),
            fit,
        };
        let missing = FindingKind::Missing {
            available: available.clone(),
        };
        assert_eq!(
            schema_findings(&cs, &m),
            vec![
                found(ColumnRole::Timestamp, "ts", ty("long", Fit::Breaks)),
                found(ColumnRole::MetricName, "name", missing.clone()),
                found(ColumnRole::Value, "when", ty("datetime", Fit::Never)),
                found(ColumnRole::Value, "s", ty("string", Fit::PerCell)),
                found(ColumnRole::Value, "gone", missing.clone()),
                found(ColumnRole::Label, "host", missing),
            ]
        );
    }

    #[test]
    fn only_missing_columns_and_a_wrong_timestamp_type_fail_the_window() {
        let m = mapping(&["v", "s"], None, &[]);
        let cs = columns(&[("ts", ColumnType::String), ("s", ColumnType::Guid)]);
        let findings = schema_findings(&cs, &m);
        let verdicts: Vec<(bool, bool)> = (findings.iter())
            .map(|f| (f.is_warning(), f.window_error().is_some()))
            .collect();
        // ts: string → warning; v: missing → fails; s: guid → never a number, a problem that
        // does not fail the window (each cell is skipped, docs/design.md#transform-value).
        assert_eq!(verdicts, vec![(true, false), (false, true), (false, false)]);
        assert!(findings[2].to_string().contains("never a number"));
        assert!(
            findings[0].to_string().contains("`todatetime(ts)`"),
            "{}",
            findings[0]
        );
    }
}
