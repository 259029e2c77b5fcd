//! The transform: one window's query result ([`Table`]) → one remote-write [`WriteRequest`] (SPEC §6).
//!
//! Pure and synchronous: no IO, no clock, no globals. It sits between `query` and `wal.append` and is
//! also what `adxexporter preview` runs. Two outputs from one core: [`transform`] builds the
//! `WriteRequest` (preview, tests), [`transform_encoded`] writes that request's protobuf bytes
//! straight from each series' key (the scheduler, which only needs bytes for the WAL), so the hot
//! path builds no heap string per label.
//!
//! Rules, in the order they apply to each row:
//! 1. Timestamp: the `timestampColumn` cell, floored to Unix milliseconds. A `datetime` column is the
//!    norm; a `string` column is accepted for adx-mon compatibility when its cells are RFC 3339 (or
//!    `YYYY-MM-DD hh:mm:ss`, read as UTC). Any other column type is a [`TransformError`] (schema
//!    mismatch, permanent). A null timestamp skips the row (`null_timestamp`), an unparsable string one
//!    skips it too (`bad_timestamp`).
//! 2. Name: `[<cli prefix>_][<metricNamePrefix>_]<base>[_<value column>]`, empty parts skipped; `base` is
//!    the `metricNameColumn` cell (null or empty → `defaultMetricName`; neither → row skipped,
//!    `no_metric_name`) or else `defaultMetricName`; the value-column suffix only when there are several
//!    value columns. Every char outside `[a-zA-Z0-9_:]` becomes `_` (no collapsing), a leading digit
//!    gets a `_` in front, case is kept.
//! 3. Labels: one per `labelColumns` column whose cell is neither null nor empty, named by the column
//!    name sanitised to `[a-zA-Z_][a-zA-Z0-9_]*`; any Kusto type is rendered as text (see
//!    [`write_label_value`]). Reserved (`__…`) and colliding names are rejected by [`Mapping::new`].
//! 4. Value, per value column: int, long, real, decimal, bool (1/0), numeric strings and dynamic JSON
//!    numbers; NaN and ±Inf pass through. Null (or an empty string) skips the sample (`null_value`),
//!    anything else non-numeric skips it too (`non_numeric_value`). A bad cell never fails the window.
//! 5. Two samples with the same name, labels and millisecond timestamp: the later row wins, the others
//!    are counted (`duplicate`).
//!
//! Output invariants: every series has its labels sorted by name (byte order) with `__name__`
//! included and no duplicate names; its samples strictly increase in time; series are sorted by labels.
//!
//! Accounting: every skip is counted in samples (a skipped row counts one per value column), so
//! `stats.samples + Σ stats.skipped == stats.rows × value columns` always holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::Range;

use crate::prompb::encode;
use crate::prompb::{Label, METRIC_NAME_LABEL, Sample, TimeSeries, WriteRequest};
use crate::query::{ColumnType, Table, Value};
use crate::time::Ticks;

/// Configuration problems ([`Mapping::new`]) and schema mismatches ([`transform`]); all permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error(
        "transform has no value column: set valueColumns (or valueColumn) to the numeric column(s) to export"
    )]
    NoValueColumns,
    #[error("transform has no timestampColumn: set it to the query's datetime column")]
    NoTimestampColumn,
    #[error("transform names no metric: set metricNameColumn or defaultMetricName")]
    NoMetricName,
    #[error("transform lists an empty column name in {role}: remove it or name the column")]
    EmptyColumnName { role: &'static str },
    #[error(
        "value columns {first:?} and {second:?} both give the metric name suffix {suffix:?}: rename one in the query (e.g. `project-rename`)"
    )]
    ValueColumnCollision {
        first: String,
        second: String,
        suffix: String,
    },
    #[error(
        "label column {column:?} becomes the reserved label name {label:?} (names starting with `__` belong to Prometheus): rename the column in the query"
    )]
    ReservedLabel { column: String, label: String },
    #[error(
        "label columns {first:?} and {second:?} both become the label name {label:?}: rename one in the query (e.g. `project-rename`) or drop it from labelColumns"
    )]
    LabelCollision {
        first: String,
        second: String,
        label: String,
    },
    #[error("the query result has no column {column:?} (the transform's {role}); it returned [{}]: fix the column name in the transform or the query", available.join(", "))]
    MissingColumn {
        column: String,
        role: &'static str,
        available: Vec<String>,
    },
    #[error(
        "timestamp column {column:?} is of type {found}, not datetime: convert it in the query (e.g. `todatetime({column})`)"
    )]
    TimestampColumnType { column: String, found: String },
}

/// Why a sample was not produced; `as_str` is the `reason` label of the skipped-samples metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    NullTimestamp,
    BadTimestamp,
    NoMetricName,
    NullValue,
    NonNumericValue,
    Duplicate,
}

impl SkipReason {
    const ALL: [SkipReason; 6] = [
        SkipReason::NullTimestamp,
        SkipReason::BadTimestamp,
        SkipReason::NoMetricName,
        SkipReason::NullValue,
        SkipReason::NonNumericValue,
        SkipReason::Duplicate,
    ];

    /// A short, stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NullTimestamp => "null_timestamp",
            SkipReason::BadTimestamp => "bad_timestamp",
            SkipReason::NoMetricName => "no_metric_name",
            SkipReason::NullValue => "null_value",
            SkipReason::NonNumericValue => "non_numeric_value",
            SkipReason::Duplicate => "duplicate",
        }
    }
}

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
    name_prefix: String,
    metric_name_column: Option<String>,
    /// Sanitised with no leading-digit fix (it is applied to the whole name), or `None`.
    default_base: Option<String>,
    value_columns: Vec<ValueColumn>,
    timestamp_column: String,
    labels: Vec<LabelColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ValueColumn {
    column: String,
    /// `_<sanitised column>` when there are several value columns, else empty.
    suffix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelColumn {
    column: String,
    label: String,
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

fn push_name_chars(out: &mut String, s: &str) {
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

/// One window's samples and what happened to the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed {
    pub request: WriteRequest,
    pub stats: TransformStats,
}

/// [`Transformed`] with the request already encoded as protobuf (see [`transform_encoded`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTransform {
    pub write_request: Vec<u8>,
    pub stats: TransformStats,
}

/// Counts for self-metrics; skips are in samples (see the module docs for the accounting identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformStats {
    pub rows: u64,
    pub samples: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
}

impl TransformStats {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Column positions in one table, resolved once per window.
struct Columns {
    timestamp: usize,
    timestamp_is_string: bool,
    metric_name: Option<usize>,
    values: Vec<usize>,
    labels: Vec<usize>,
}

fn resolve_columns(table: &Table, mapping: &Mapping) -> Result<Columns, TransformError> {
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

/// Turns one window's table into a `WriteRequest`. Errors only on a table that cannot match the mapping.
pub fn transform(table: &Table, mapping: &Mapping) -> Result<Transformed, TransformError> {
    let (Series { series, name_order }, stats) = run(table, mapping)?;
    let mut scratch = Vec::new();
    let timeseries = (series.into_iter())
        .map(|s| {
            let mut labels = Vec::with_capacity(name_order.len());
            s.labels(&mapping.labels, &name_order, &mut scratch, |name, value| {
                labels.push(Label::new(name, String::from_utf8_lossy(value)));
            });
            TimeSeries {
                labels,
                samples: s.samples,
            }
        })
        .collect();
    Ok(Transformed {
        request: WriteRequest { timeseries },
        stats,
    })
}

/// [`transform`] straight to the protobuf bytes of its `WriteRequest` (the bytes prost would write
/// for it, property-tested), without building one heap string per label: what the scheduler appends
/// to the WAL.
pub fn transform_encoded(
    table: &Table,
    mapping: &Mapping,
) -> Result<EncodedTransform, TransformError> {
    let (Series { series, name_order }, stats) = run(table, mapping)?;
    let (columns, mut scratch) = (&mapping.labels, Vec::new());
    // Body lengths first: they prefix each series and size the buffer exactly (no regrowth copies).
    let body_lens: Vec<usize> = (series.iter())
        .map(|s| {
            let mut len = encode::samples_len(&s.samples);
            s.labels(columns, &name_order, &mut scratch, |name, value| {
                len += encode::label_field_len(name.as_bytes(), value);
            });
            len
        })
        .collect();
    let total = body_lens.iter().map(|&len| encode::series_field_len(len));
    let mut write_request = Vec::with_capacity(total.sum());
    for (s, &body_len) in series.iter().zip(&body_lens) {
        encode::put_series_header(body_len, &mut write_request);
        s.labels(columns, &name_order, &mut scratch, |name, value| {
            encode::put_label(name.as_bytes(), value, &mut write_request);
        });
        encode::put_samples(&s.samples, &mut write_request);
    }
    Ok(EncodedTransform {
        write_request,
        stats,
    })
}

/// The rows folded into sorted, de-duplicated series, and the counts.
fn run(table: &Table, mapping: &Mapping) -> Result<(Series, TransformStats), TransformError> {
    let columns = resolve_columns(table, mapping)?;
    let mut skipped = SkipCounts::default();
    let mut index = SeriesIndex::new(&mapping.labels);
    let mut buffers = RowBuffers::default();
    for row in table.rows() {
        add_row(
            row,
            &columns,
            mapping,
            &mut buffers,
            &mut index,
            &mut skipped,
        );
    }
    let (series, duplicates) = index.finish();
    skipped.add(SkipReason::Duplicate, duplicates);
    let samples = series.series.iter().map(|s| s.samples.len() as u64).sum();
    let stats = TransformStats {
        rows: table.row_count() as u64,
        samples,
        skipped: skipped.into_map(),
    };
    Ok((series, stats))
}

/// Skip counters indexed by reason, turned into the sparse map at the end.
#[derive(Default)]
struct SkipCounts([u64; SkipReason::ALL.len()]);

impl SkipCounts {
    fn add(&mut self, reason: SkipReason, samples: usize) {
        self.0[reason as usize] += samples as u64;
    }

    fn into_map(self) -> BTreeMap<SkipReason, u64> {
        (SkipReason::ALL.into_iter())
            .filter(|r| self.0[*r as usize] > 0)
            .map(|r| (r, self.0[r as usize]))
            .collect()
    }
}

/// Buffers reused across rows so that a row allocates nothing unless it starts a new series.
#[derive(Default)]
struct RowBuffers {
    /// The series key: each label value length-prefixed in labelColumns order, then the metric name.
    key: Vec<u8>,
    base: String,
    text: String,
}

fn add_row(
    row: &[Value],
    columns: &Columns,
    mapping: &Mapping,
    buf: &mut RowBuffers,
    index: &mut SeriesIndex,
    skipped: &mut SkipCounts,
) {
    let cell = |i: usize| row.get(i).unwrap_or(&Value::Null);
    let per_row = mapping.value_columns.len();
    let timestamp = match row_timestamp(cell(columns.timestamp), columns.timestamp_is_string) {
        Ok(ms) => ms,
        Err(reason) => return skipped.add(reason, per_row),
    };
    let metric_name = columns.metric_name.map(cell);
    if !row_base_name(metric_name, mapping, &mut buf.base, &mut buf.text) {
        return skipped.add(SkipReason::NoMetricName, per_row);
    }
    buf.key.clear();
    for &i in &columns.labels {
        buf.text.clear();
        write_label_value(&mut buf.text, cell(i));
        buf.key
            .extend_from_slice(&(buf.text.len() as u32).to_le_bytes());
        buf.key.extend_from_slice(buf.text.as_bytes());
    }
    let labels_len = buf.key.len();
    for (value_column, &i) in mapping.value_columns.iter().zip(&columns.values) {
        let value = match sample_value(cell(i)) {
            Ok(v) => v,
            Err(reason) => {
                skipped.add(reason, 1);
                continue;
            }
        };
        buf.key.truncate(labels_len);
        buf.key.extend_from_slice(mapping.name_prefix.as_bytes());
        buf.key.extend_from_slice(buf.base.as_bytes());
        buf.key.extend_from_slice(value_column.suffix.as_bytes());
        let sample = Sample { value, timestamp };
        index.push(&buf.key, labels_len, &mapping.labels, sample);
    }
}

/// Series by key, in first-seen order.
struct SeriesIndex {
    /// foldhash (randomly seeded) rather than SipHash: hashing every row's key is on the hot path.
    slots: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    series: Vec<SeriesBuilder>,
    /// The label slots in label-name order (`None` is `__name__`): the same for every series of a
    /// window, so a series' labels come out of its key already sorted.
    name_order: Vec<Option<usize>>,
    /// Every series' [`push_sort_key`], back to back: sorting by these slices orders series exactly
    /// like comparing their `Vec<Label>`, with one `memcmp` over adjacent bytes per comparison
    /// instead of a walk over ten heap strings.
    sort_keys: Vec<u8>,
    /// Scratch: where each label column's value sits in the key being read.
    values: Vec<Range<usize>>,
}

/// A series being built. Its labels live in its key (see [`RowBuffers::key`]), read on output.
struct SeriesBuilder {
    key: Box<[u8]>,
    labels_len: usize,
    samples: Vec<Sample>,
    sort_key: Range<usize>,
}

/// The finished series, sorted by labels, samples sorted and de-duplicated.
struct Series {
    series: Vec<SeriesBuilder>,
    name_order: Vec<Option<usize>>,
}

impl SeriesIndex {
    fn new(columns: &[LabelColumn]) -> SeriesIndex {
        let mut name_order: Vec<Option<usize>> =
            (0..columns.len()).map(Some).chain([None]).collect();
        let name = |slot: &Option<usize>| {
            slot.and_then(|i| columns.get(i))
                .map_or(METRIC_NAME_LABEL, |c| c.label.as_str())
        };
        name_order.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        SeriesIndex {
            slots: HashMap::default(),
            series: Vec::new(),
            name_order,
            sort_keys: Vec::new(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, key: &[u8], labels_len: usize, columns: &[LabelColumn], sample: Sample) {
        let slot = match self.slots.get(key) {
            Some(&slot) => slot,
            None => {
                let slot = self.series.len();
                let start = self.sort_keys.len();
                let sort_keys = &mut self.sort_keys;
                key_labels(
                    key,
                    labels_len,
                    columns,
                    &self.name_order,
                    &mut self.values,
                    |name, value| push_sort_key(name.as_bytes(), value, sort_keys),
                );
                self.series.push(SeriesBuilder {
                    // Moved in from `slots` by `finish`: one copy of the key per series.
                    key: Box::default(),
                    labels_len,
                    samples: Vec::new(),
                    sort_key: start..self.sort_keys.len(),
                });
                self.slots.insert(key.into(), slot);
                slot
            }
        };
        if let Some(s) = self.series.get_mut(slot) {
            s.samples.push(sample);
        }
    }

    /// The series sorted by labels, samples sorted and de-duplicated; plus the duplicates dropped.
    fn finish(self) -> (Series, usize) {
        let mut series = self.series;
        for (key, slot) in self.slots {
            if let Some(s) = series.get_mut(slot) {
                s.key = key;
            }
        }
        let keys = self.sort_keys;
        series.sort_unstable_by(|a, b| {
            let key = |s: &SeriesBuilder| keys.get(s.sort_key.clone()).unwrap_or_default();
            key(a).cmp(key(b))
        });
        let duplicates = (series.iter_mut())
            .map(|s| sort_and_dedup(&mut s.samples))
            .sum();
        let series = Series {
            series,
            name_order: self.name_order,
        };
        (series, duplicates)
    }
}

impl SeriesBuilder {
    /// Calls `f(name, value)` for each of its labels in name order (`__name__` included).
    fn labels(
        &self,
        columns: &[LabelColumn],
        name_order: &[Option<usize>],
        scratch: &mut Vec<Range<usize>>,
        f: impl FnMut(&str, &[u8]),
    ) {
        key_labels(&self.key, self.labels_len, columns, name_order, scratch, f);
    }
}

/// Calls `f(name, value)` for each label of the series whose key is `key` (see [`RowBuffers::key`]),
/// in `name_order`, leaving out empty values; `values` is scratch.
fn key_labels(
    key: &[u8],
    labels_len: usize,
    columns: &[LabelColumn],
    name_order: &[Option<usize>],
    values: &mut Vec<Range<usize>>,
    mut f: impl FnMut(&str, &[u8]),
) {
    values.clear();
    let mut at = 0;
    for _ in columns {
        let len = (key.get(at..at + 4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize);
        let start = (at + 4).min(labels_len);
        at = (start + len).min(labels_len);
        values.push(start..at);
    }
    for slot in name_order {
        match slot {
            None => f(METRIC_NAME_LABEL, key.get(labels_len..).unwrap_or_default()),
            Some(i) => {
                let (Some(column), Some(range)) = (columns.get(*i), values.get(*i)) else {
                    continue;
                };
                if !range.is_empty() {
                    f(&column.label, key.get(range.clone()).unwrap_or_default());
                }
            }
        }
    }
}

/// Appends one label in an encoding whose byte order, over a series' labels in turn, is the order
/// of `Vec<Label>` (name, then value, then the next label; a prefix sorts first): each string with
/// its zero bytes escaped as `00 FF` and ended by `00 01`, which sorts below any byte that can follow
/// (a real `00` continues with `FF`).
fn push_sort_key(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    for s in [name, value] {
        for (i, part) in s.split(|&b| b == 0).enumerate() {
            if i > 0 {
                out.extend_from_slice(&[0, 0xFF]);
            }
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&[0, 1]);
    }
}

/// The row's timestamp in Unix milliseconds (floor), or why the row is skipped.
fn row_timestamp(cell: &Value, string_column: bool) -> Result<i64, SkipReason> {
    match cell {
        Value::DateTime(t) => Ok(t.unix_millis()),
        Value::Null => Err(SkipReason::NullTimestamp),
        Value::String(s) if s.is_empty() => Err(SkipReason::NullTimestamp),
        Value::String(s) if string_column => parse_timestamp_text(s)
            .map(Ticks::unix_millis)
            .ok_or(SkipReason::BadTimestamp),
        _ => Err(SkipReason::BadTimestamp),
    }
}

/// RFC 3339, or adx-mon's last fallback `YYYY-MM-DD hh:mm:ss[.f]` without a zone, read as UTC.
fn parse_timestamp_text(s: &str) -> Option<Ticks> {
    // Appending `Z` to a text that already has a zone makes it invalid, so this only adds the UTC case.
    Ticks::parse(s)
        .ok()
        .or_else(|| Ticks::parse(&format!("{s}Z")).ok())
}

/// Writes the sanitised base name into `base`; false when the row has no name.
fn row_base_name(
    cell: Option<&Value>,
    mapping: &Mapping,
    base: &mut String,
    text: &mut String,
) -> bool {
    base.clear();
    if let Some(cell) = cell {
        let name = match cell {
            Value::String(s) => s,
            other => {
                text.clear();
                write_label_value(text, other);
                text.as_str()
            }
        };
        if !name.is_empty() {
            if mapping.name_prefix.is_empty() && name.starts_with(|c: char| c.is_ascii_digit()) {
                base.push('_');
            }
            push_name_chars(base, name);
            return true;
        }
    }
    match &mapping.default_base {
        Some(default) => {
            if mapping.name_prefix.is_empty() && default.starts_with(|c: char| c.is_ascii_digit()) {
                base.push('_');
            }
            base.push_str(default);
            true
        }
        None => false,
    }
}

/// A sample value from one cell, or why it is skipped.
fn sample_value(cell: &Value) -> Result<f64, SkipReason> {
    match cell {
        Value::Real(v) => Ok(*v),
        Value::Long(v) => Ok(*v as f64),
        Value::Int(v) => Ok(f64::from(*v)),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Null => Err(SkipReason::NullValue),
        Value::String(s) if s.trim().is_empty() => Err(SkipReason::NullValue),
        Value::Decimal(s) | Value::String(s) | Value::Dynamic(s) => parse_number(s),
        Value::DateTime(_) | Value::TimeSpan(_) | Value::Guid(_) => {
            Err(SkipReason::NonNumericValue)
        }
    }
}

fn parse_number(s: &str) -> Result<f64, SkipReason> {
    match s.trim() {
        "null" => Err(SkipReason::NullValue),
        t => t.parse::<f64>().map_err(|_| SkipReason::NonNumericValue),
    }
}

/// Appends the label text of a cell; writes nothing for null (an empty value omits the label).
///
/// Strings as they are; int/long exact; decimal as Kusto's text; real shortest round-trip (plain
/// decimal for 1e-7 ≤ |v| < 1e21, else `1.5e-8`/`1e21`; `NaN`, `+Inf`, `-Inf`); datetime RFC 3339 UTC
/// with the fraction trimmed; bool `true`/`false`; guid text; timespan Kusto `[-][d.]hh:mm:ss[.f]`;
/// dynamic the compact JSON as received (JSON `null` omits the label).
pub fn write_label_value(out: &mut String, cell: &Value) {
    // fmt::Write into a String cannot fail.
    let _ = match cell {
        Value::Null => Ok(()),
        Value::String(s) | Value::Decimal(s) | Value::Guid(s) => {
            out.push_str(s);
            Ok(())
        }
        Value::Dynamic(s) if &**s == "null" => Ok(()),
        Value::Dynamic(s) => {
            out.push_str(s);
            Ok(())
        }
        Value::Long(v) => write!(out, "{v}"),
        Value::Int(v) => write!(out, "{v}"),
        Value::Real(v) => {
            write_real_label(out, *v);
            Ok(())
        }
        Value::Bool(b) => {
            out.push_str(if *b { "true" } else { "false" });
            Ok(())
        }
        Value::DateTime(t) => write!(out, "{t}"),
        Value::TimeSpan(s) => {
            out.push_str(&s.kusto_text());
            Ok(())
        }
    };
}

fn write_real_label(out: &mut String, v: f64) {
    let _ = if v.is_nan() {
        out.write_str("NaN")
    } else if v.is_infinite() {
        out.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
    } else if v == 0.0 || (1e-7..1e21).contains(&v.abs()) {
        write!(out, "{v}")
    } else {
        write!(out, "{v:e}")
    };
}

/// Sorts by time (stable, so row order breaks ties) and keeps the last of equal timestamps; returns how
/// many were dropped.
fn sort_and_dedup(samples: &mut Vec<Sample>) -> usize {
    if !samples.is_sorted_by(|a, b| a.timestamp < b.timestamp) {
        samples.sort_by_key(|s| s.timestamp);
    }
    let before = samples.len();
    samples.dedup_by(|later, kept| {
        let same = later.timestamp == kept.timestamp;
        if same {
            kept.value = later.value;
        }
        same
    });
    before - samples.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Column;
    use crate::time::Span;

    const TS: &str = "2023-12-25T12:00:00Z";
    const TS_MS: i64 = 1_703_505_600_000;

    fn ts(s: &str) -> Value {
        Value::DateTime(Ticks::parse(s).unwrap())
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn table(columns: &[(&str, ColumnType)], rows: Vec<Vec<Value>>) -> Table {
        let columns = (columns.iter())
            .map(|(n, ty)| Column {
                name: (*n).into(),
                ty: ty.clone(),
            })
            .collect();
        let mut t = Table::new("PrimaryResult", columns);
        for r in rows {
            t.push_row(r);
        }
        t
    }

    fn spec(values: &[&str], labels: &[&str]) -> MappingSpec {
        MappingSpec {
            value_columns: values.iter().map(|v| (*v).into()).collect(),
            timestamp_column: "timestamp".into(),
            label_columns: labels.iter().map(|v| (*v).into()).collect(),
            ..MappingSpec::default()
        }
    }

    fn with_default(mut spec: MappingSpec, name: &str) -> MappingSpec {
        spec.default_metric_name = Some(name.into());
        spec
    }

    fn with_name_column(mut spec: MappingSpec, column: &str) -> MappingSpec {
        spec.metric_name_column = Some(column.into());
        spec
    }

    /// Every test (examples and property tests) also checks that the encoded path writes exactly
    /// prost's bytes of the request.
    fn run(t: &Table, spec: MappingSpec) -> Transformed {
        let mapping = Mapping::new(spec).unwrap();
        let out = transform(t, &mapping).unwrap();
        let encoded = transform_encoded(t, &mapping).unwrap();
        assert_eq!(encoded.stats, out.stats);
        assert_eq!(
            encoded.write_request,
            prost::Message::encode_to_vec(&out.request),
            "transform_encoded writes prost's bytes of transform's request"
        );
        out
    }

    /// Every sample as `(name, [(label, value)] without __name__, value, ms)`, in output order.
    type Flat = Vec<(String, Vec<(String, String)>, f64, i64)>;

    fn flat(t: &Transformed) -> Flat {
        let mut out = Vec::new();
        for ts in &t.request.timeseries {
            let labels: Vec<(String, String)> = (ts.labels.iter())
                .filter(|l| l.name != METRIC_NAME_LABEL)
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for s in &ts.samples {
                out.push((
                    ts.metric_name().to_owned(),
                    labels.clone(),
                    s.value,
                    s.timestamp,
                ));
            }
        }
        out
    }

    fn one(name: &str, labels: &[(&str, &str)], value: f64, ms: i64) -> Flat {
        let labels = (labels.iter())
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        vec![(name.to_owned(), labels, value, ms)]
    }

    fn skipped(t: &Transformed, reason: SkipReason) -> u64 {
        t.stats.skipped.get(&reason).copied().unwrap_or(0)
    }

    fn basic_table(value: Value) -> Table {
        table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
            ],
            vec![vec![ts(TS), value]],
        )
    }

    // ---- adx-mon's matrix, cases where the rules agree ----

    #[test]
    fn adxmon_with_metric_name_column_and_labels_and_timestamp() {
        // TestTransformWithMetricNameColumn + WithLabels + WithTimestamp + MaterializedKustoRow
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("metric_name", ColumnType::String),
                ("value", ColumnType::Real),
                ("host", ColumnType::String),
                ("service", ColumnType::String),
            ],
            vec![vec![
                ts(TS),
                s("cpu_usage"),
                Value::Real(85.5),
                s("server1"),
                s("web"),
            ]],
        );
        let out = run(
            &t,
            with_name_column(spec(&["value"], &["host", "service"]), "metric_name"),
        );
        assert_eq!(
            flat(&out),
            one(
                "cpu_usage",
                &[("host", "server1"), ("service", "web")],
                85.5,
                TS_MS
            )
        );
        assert_eq!(out.stats.samples, 1);
        assert!(out.stats.skipped.is_empty());
    }

    #[test]
    fn adxmon_value_types_real_int_long_numeric_string() {
        // TestTransformValueTypes / TestValidateNativeValueTypes (float32 and Go int have no Kusto type).
        for (v, want) in [
            (Value::Real(42.5), 42.5),
            (Value::Int(42), 42.0),
            (Value::Long(42), 42.0),
            (s("42.5"), 42.5),
        ] {
            let out = run(
                &basic_table(v.clone()),
                with_default(spec(&["value"], &[]), "m"),
            );
            assert_eq!(flat(&out), one("m", &[], want, TS_MS), "{v:?}");
        }
    }

    #[test]
    fn adxmon_timestamp_types_datetime_and_strings() {
        // TestTransformTimestampTypes: time.Time, RFC3339, RFC3339Nano and "2006-01-02 15:04:05" as UTC.
        let cells = [
            ts(TS),
            s("2023-12-25T12:00:00Z"),
            s("2023-12-25T12:00:00.000000000Z"),
            s("2023-12-25 12:00:00"),
        ];
        for cell in cells {
            let ty = match cell {
                Value::DateTime(_) => ColumnType::DateTime,
                _ => ColumnType::String,
            };
            let t = table(
                &[("timestamp", ty), ("value", ColumnType::Real)],
                vec![vec![cell.clone(), Value::Real(1.0)]],
            );
            let out = run(&t, with_default(spec(&["value"], &[]), "m"));
            assert_eq!(flat(&out), one("m", &[], 1.0, TS_MS), "{cell:?}");
        }
    }

    #[test]
    fn adxmon_missing_value_column_is_an_error_naming_it_and_the_columns() {
        let err = transform(
            &basic_table(Value::Real(1.0)),
            &Mapping::new(with_default(spec(&["MissingColumn"], &[]), "m")).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TransformError::MissingColumn {
                column: "MissingColumn".into(),
                role: "valueColumns",
                available: vec!["timestamp".into(), "value".into()],
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"MissingColumn\"") && msg.contains("[timestamp, value]"),
            "{msg}"
        );
    }

    #[test]
    fn adxmon_missing_metric_name_column_is_an_error() {
        let err = transform(
            &basic_table(Value::Real(1.0)),
            &Mapping::new(with_name_column(spec(&["value"], &[]), "name")).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                TransformError::MissingColumn {
                    role: "metricNameColumn",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn adxmon_config_errors_no_metric_name_and_no_value_columns() {
        assert_eq!(
            Mapping::new(spec(&["value"], &[])),
            Err(TransformError::NoMetricName)
        );
        assert_eq!(
            Mapping::new(with_default(spec(&[], &[]), "m")),
            Err(TransformError::NoValueColumns)
        );
    }

    #[test]
    fn adxmon_empty_result_is_valid() {
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
            ],
            vec![],
        );
        let out = run(&t, with_default(spec(&["value"], &[]), "m"));
        assert!(out.request.timeseries.is_empty());
        assert_eq!(out.stats, TransformStats::default());
    }

    #[test]
    fn adxmon_multiple_rows_keep_every_sample() {
        // TestTransformMultipleRows: three rows → three samples.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
                ("host", ColumnType::String),
            ],
            vec![
                vec![ts(TS), Value::Real(1.0), s("a")],
                vec![ts(TS), Value::Real(2.0), s("b")],
                vec![ts("2023-12-25T12:01:00Z"), Value::Real(3.0), s("a")],
            ],
        );
        let out = run(&t, with_default(spec(&["value"], &["host"]), "m"));
        let want: Flat = [
            one("m", &[("host", "a")], 1.0, TS_MS),
            one("m", &[("host", "a")], 3.0, TS_MS + 60_000),
            one("m", &[("host", "b")], 2.0, TS_MS),
        ]
        .concat();
        assert_eq!(flat(&out), want);
    }

    #[test]
    fn adxmon_multi_value_columns_with_prefix_and_default_name() {
        // TestTransformMultiValueColumns (lower-case column names, where normalisation is a no-op).
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("metric_name", ColumnType::String),
                ("count", ColumnType::Long),
                ("error_rate", ColumnType::Real),
                ("LocationId", ColumnType::String),
            ],
            vec![vec![
                ts(TS),
                s("service_metrics"),
                Value::Long(7),
                Value::Real(0.25),
                s("dc1"),
            ]],
        );
        let mut sp = with_name_column(
            spec(&["count", "error_rate"], &["LocationId"]),
            "metric_name",
        );
        let out = run(&t, sp.clone());
        let want: Flat = [
            one(
                "service_metrics_count",
                &[("LocationId", "dc1")],
                7.0,
                TS_MS,
            ),
            one(
                "service_metrics_error_rate",
                &[("LocationId", "dc1")],
                0.25,
                TS_MS,
            ),
        ]
        .concat();
        assert_eq!(flat(&out), want);

        sp.metric_name_prefix = Some("teama".into());
        let names: Vec<String> = flat(&run(&t, sp)).into_iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "teama_service_metrics_count",
                "teama_service_metrics_error_rate"
            ]
        );

        let out = run(
            &t,
            with_default(spec(&["count", "error_rate"], &[]), "default_metric"),
        );
        let names: Vec<String> = flat(&out).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["default_metric_count", "default_metric_error_rate"]);
    }

    #[test]
    fn adxmon_write_request_labels_sorted_with_name_and_millisecond_timestamp() {
        // TestToWriteRequest: `__name__`, host, region, service; ts 1703505600000.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
                ("service", ColumnType::String),
                ("host", ColumnType::String),
                ("region", ColumnType::String),
            ],
            vec![vec![ts(TS), Value::Real(1.0), s("s"), s("h"), s("r")]],
        );
        let out = run(
            &t,
            with_default(spec(&["value"], &["service", "host", "region"]), "m"),
        );
        let names: Vec<&str> = out.request.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["__name__", "host", "region", "service"]);
        assert_eq!(
            out.request.timeseries[0].samples,
            [Sample {
                value: 1.0,
                timestamp: TS_MS
            }]
        );
    }

    // ---- one test per rule where we differ from adx-mon ----

    #[test]
    fn single_value_column_gets_no_suffix() {
        // adx-mon: `test_metric_value`.
        let out = run(
            &basic_table(Value::Real(42.0)),
            with_default(spec(&["value"], &[]), "test_metric"),
        );
        assert_eq!(flat(&out), one("test_metric", &[], 42.0, TS_MS));
    }

    #[test]
    fn names_are_sanitised_per_char_with_case_kept_and_prefixes_joined() {
        // adx-mon lower-cases, splits camel case and collapses `_`; we only replace invalid chars.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("name", ColumnType::String),
                ("Numerator", ColumnType::Long),
                ("Avg-Latency", ColumnType::Real),
            ],
            vec![
                vec![
                    ts(TS),
                    s("CustomerSuccess.Rate"),
                    Value::Long(1),
                    Value::Real(2.0),
                ],
                vec![ts(TS), s("métrïc"), Value::Long(3), Value::Null],
            ],
        );
        let mut sp = with_name_column(spec(&["Numerator", "Avg-Latency"], &[]), "name");
        sp.cli_prefix = Some("team-a".into());
        sp.metric_name_prefix = Some("Team.B".into());
        let names: Vec<String> = flat(&run(&t, sp)).into_iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "team_a_Team_B_CustomerSuccess_Rate_Avg_Latency",
                "team_a_Team_B_CustomerSuccess_Rate_Numerator",
                "team_a_Team_B_m_tr_c_Numerator",
            ]
        );
    }

    #[test]
    fn leading_digit_gets_an_underscore_only_at_the_start_of_the_name() {
        // adx-mon's Trim("_") quirk produces an invalid `5xx`; we produce `_5xx`.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("name", ColumnType::String),
                ("value", ColumnType::Real),
            ],
            vec![vec![ts(TS), s("5xx"), Value::Real(1.0)]],
        );
        let out = run(&t, with_name_column(spec(&["value"], &[]), "name"));
        assert_eq!(flat(&out)[0].0, "_5xx");
        let mut sp = with_name_column(spec(&["value"], &[]), "name");
        sp.metric_name_prefix = Some("api".into());
        assert_eq!(flat(&run(&t, sp))[0].0, "api_5xx");
        let mut sp = with_name_column(spec(&["value"], &[]), "name");
        sp.cli_prefix = Some("9team".into());
        assert_eq!(flat(&run(&t, sp))[0].0, "_9team_5xx");
        // adx-mon rejects `---` as a prefix; it is just `___` here.
        let mut sp = with_default(spec(&["value"], &[]), "m");
        sp.metric_name_prefix = Some("---".into());
        assert_eq!(flat(&run(&basic_table(Value::Real(1.0)), sp))[0].0, "____m");
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(sanitize_label_name("LocationId"), "LocationId");
        assert_eq!(sanitize_label_name("Success Rate"), "Success_Rate");
        assert_eq!(sanitize_label_name("a:b.c-d"), "a_b_c_d");
        assert_eq!(sanitize_label_name("95th"), "_95th");
        assert_eq!(sanitize_label_name("latência"), "lat_ncia");
        assert_eq!(sanitize_metric_name("a:b.c"), "a:b_c");
        assert_eq!(sanitize_metric_name("1m"), "_1m");
    }

    #[test]
    fn reserved_and_colliding_label_names_are_rejected_naming_both_columns() {
        let err = Mapping::new(with_default(spec(&["v"], &["__name__"]), "m")).unwrap_err();
        assert!(
            matches!(&err, TransformError::ReservedLabel { column, .. } if column == "__name__")
        );
        let err = Mapping::new(with_default(spec(&["v"], &["_.x"]), "m")).unwrap_err();
        assert!(
            matches!(&err, TransformError::ReservedLabel { label, .. } if label == "__x"),
            "{err}"
        );
        let err =
            Mapping::new(with_default(spec(&["v"], &["host", "a-b", "a.b"]), "m")).unwrap_err();
        assert_eq!(
            err,
            TransformError::LabelCollision {
                first: "a-b".into(),
                second: "a.b".into(),
                label: "a_b".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"a-b\"") && msg.contains("\"a.b\"") && msg.contains("rename"),
            "{msg}"
        );
        let err = Mapping::new(with_default(spec(&["a-b", "a_b"], &[]), "m")).unwrap_err();
        assert!(
            matches!(err, TransformError::ValueColumnCollision { .. }),
            "{err}"
        );
    }

    #[test]
    fn any_column_type_is_a_label_with_a_stable_text_form() {
        // adx-mon fails the whole run on a non-string label.
        let cols = [
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
            ("b", ColumnType::Bool),
            ("i", ColumnType::Int),
            ("l", ColumnType::Long),
            ("r", ColumnType::Real),
            ("d", ColumnType::Decimal),
            ("dt", ColumnType::DateTime),
            ("sp", ColumnType::TimeSpan),
            ("g", ColumnType::Guid),
            ("dy", ColumnType::Dynamic),
            ("nan", ColumnType::Real),
            ("big", ColumnType::Real),
        ];
        let row = vec![
            ts(TS),
            Value::Real(1.0),
            Value::Bool(true),
            Value::Int(-7),
            Value::Long(9_007_199_254_740_993),
            Value::Real(0.1),
            Value::Decimal("1974.500".into()),
            ts("2022-01-01T10:05:00.1200000Z"),
            Value::TimeSpan(Span::parse_timespan("1.02:03:04.5").unwrap()),
            Value::Guid("74be27de-1e4e-49d9-b579-fe0b331d3642".into()),
            Value::Dynamic(r#"{"a":[1,"x"]}"#.into()),
            Value::Real(f64::NAN),
            Value::Real(1e21),
        ];
        let names: Vec<&str> = cols[2..].iter().map(|c| c.0).collect();
        let out = run(
            &table(&cols, vec![row]),
            with_default(spec(&["value"], &names), "m"),
        );
        let want = [
            ("b", "true"),
            ("big", "1e21"),
            ("d", "1974.500"),
            ("dt", "2022-01-01T10:05:00.12Z"),
            ("dy", r#"{"a":[1,"x"]}"#),
            ("g", "74be27de-1e4e-49d9-b579-fe0b331d3642"),
            ("i", "-7"),
            ("l", "9007199254740993"),
            ("nan", "NaN"),
            ("r", "0.1"),
            ("sp", "1.02:03:04.5000000"),
        ];
        let sp_text = Span::parse_timespan("1.02:03:04.5").unwrap().kusto_text();
        let want: Vec<(&str, String)> = (want.iter())
            .map(|(n, v)| {
                (
                    *n,
                    if *n == "sp" {
                        sp_text.clone()
                    } else {
                        (*v).to_owned()
                    },
                )
            })
            .collect();
        let flat = flat(&out);
        let got: Vec<(&str, String)> = (flat[0].1.iter())
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn null_and_empty_labels_are_omitted() {
        // adx-mon fails the run on a null label.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
                ("host", ColumnType::String),
                ("n", ColumnType::Long),
            ],
            vec![vec![ts(TS), Value::Real(1.0), s(""), Value::Null]],
        );
        let out = run(&t, with_default(spec(&["value"], &["host", "n"]), "m"));
        assert_eq!(flat(&out), one("m", &[], 1.0, TS_MS));
    }

    #[test]
    fn null_and_non_numeric_values_skip_the_sample_and_are_counted() {
        // adx-mon fails the whole window.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("a", ColumnType::Dynamic),
                ("b", ColumnType::String),
            ],
            vec![
                vec![ts(TS), Value::Null, s("abc")],
                vec![ts(TS), Value::Dynamic("[1]".into()), s("")],
                vec![ts(TS), Value::Dynamic("7".into()), s("1e3")],
            ],
        );
        let out = run(&t, with_default(spec(&["a", "b"], &[]), "m"));
        assert_eq!(
            flat(&out),
            [one("m_a", &[], 7.0, TS_MS), one("m_b", &[], 1000.0, TS_MS)].concat()
        );
        assert_eq!(skipped(&out, SkipReason::NullValue), 2);
        assert_eq!(skipped(&out, SkipReason::NonNumericValue), 2);
        assert_eq!(out.stats.samples + out.stats.skipped_total(), 3 * 2);
    }

    #[test]
    fn decimal_bool_and_special_reals_are_values() {
        // adx-mon rejects decimal and bool.
        for (v, want) in [
            (Value::Decimal("1974.25".into()), 1974.25),
            (Value::Bool(true), 1.0),
            (Value::Bool(false), 0.0),
            (Value::Real(f64::INFINITY), f64::INFINITY),
            (s("-Inf"), f64::NEG_INFINITY),
        ] {
            let out = run(
                &basic_table(v.clone()),
                with_default(spec(&["value"], &[]), "m"),
            );
            assert_eq!(flat(&out), one("m", &[], want, TS_MS), "{v:?}");
        }
        let out = run(
            &basic_table(Value::Real(f64::NAN)),
            with_default(spec(&["value"], &[]), "m"),
        );
        assert!(out.request.timeseries[0].samples[0].value.is_nan());
    }

    #[test]
    fn null_timestamp_and_missing_name_skip_the_row_and_are_counted() {
        // adx-mon fails the window on a null timestamp, a null or an empty name.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("name", ColumnType::String),
                ("a", ColumnType::Real),
                ("b", ColumnType::Real),
            ],
            vec![
                vec![Value::Null, s("x"), Value::Real(1.0), Value::Real(2.0)],
                vec![ts(TS), s(""), Value::Real(3.0), Value::Real(4.0)],
                vec![ts(TS), Value::Null, Value::Real(5.0), Value::Real(6.0)],
                vec![ts(TS), s("x"), Value::Real(7.0), Value::Null],
            ],
        );
        let out = run(&t, with_name_column(spec(&["a", "b"], &[]), "name"));
        assert_eq!(flat(&out), one("x_a", &[], 7.0, TS_MS));
        assert_eq!(skipped(&out, SkipReason::NullTimestamp), 2);
        assert_eq!(skipped(&out, SkipReason::NoMetricName), 4);
        assert_eq!(skipped(&out, SkipReason::NullValue), 1);
        // With a default, a null or empty name falls back to it.
        let out = run(
            &t,
            with_default(with_name_column(spec(&["a", "b"], &[]), "name"), "dflt"),
        );
        let names: Vec<String> = flat(&out).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["dflt_a", "dflt_b", "x_a"]);
        assert_eq!(
            flat(&out)[0].2,
            5.0,
            "the later row wins for the duplicate dflt_a"
        );
        assert_eq!(skipped(&out, SkipReason::Duplicate), 2);
    }

    #[test]
    fn unparsable_string_timestamp_skips_the_row() {
        let t = table(
            &[
                ("timestamp", ColumnType::String),
                ("value", ColumnType::Real),
            ],
            vec![
                vec![s("yesterday"), Value::Real(1.0)],
                vec![s(TS), Value::Real(2.0)],
            ],
        );
        let out = run(&t, with_default(spec(&["value"], &[]), "m"));
        assert_eq!(flat(&out), one("m", &[], 2.0, TS_MS));
        assert_eq!(skipped(&out, SkipReason::BadTimestamp), 1);
    }

    #[test]
    fn timestamp_column_of_another_type_is_a_schema_error() {
        let t = table(
            &[("timestamp", ColumnType::Long), ("value", ColumnType::Real)],
            vec![],
        );
        let err = transform(
            &t,
            &Mapping::new(with_default(spec(&["value"], &[]), "m")).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TransformError::TimestampColumnType {
                column: "timestamp".into(),
                found: "long".into()
            }
        );
    }

    #[test]
    fn missing_label_column_is_an_error() {
        // adx-mon silently drops it.
        let err = transform(
            &basic_table(Value::Real(1.0)),
            &Mapping::new(with_default(spec(&["value"], &["host"]), "m")).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                TransformError::MissingColumn {
                    role: "labelColumns",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn duplicates_keep_the_last_row_and_samples_are_sorted_by_time() {
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
            ],
            vec![
                vec![ts("2023-12-25T12:00:01Z"), Value::Real(1.0)],
                vec![ts("2023-12-25T12:00:00.0001Z"), Value::Real(2.0)],
                // same millisecond as the row above (100 µs vs 900 µs, floored)
                vec![ts("2023-12-25T12:00:00.0009Z"), Value::Real(3.0)],
                vec![ts("2023-12-25T12:00:01Z"), Value::Real(4.0)],
            ],
        );
        let out = run(&t, with_default(spec(&["value"], &[]), "m"));
        assert_eq!(
            out.request.timeseries[0].samples,
            [
                Sample {
                    value: 3.0,
                    timestamp: TS_MS
                },
                Sample {
                    value: 4.0,
                    timestamp: TS_MS + 1000
                }
            ]
        );
        assert_eq!(skipped(&out, SkipReason::Duplicate), 2);
    }

    #[test]
    fn upper_case_labels_sort_before_the_name_label() {
        // adx-mon always puts `__name__` first, which remote write rejects for `LocationId`.
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("value", ColumnType::Real),
                ("zone", ColumnType::String),
                ("LocationId", ColumnType::String),
            ],
            vec![vec![ts(TS), Value::Real(1.0), s("z"), s("dc")]],
        );
        let out = run(
            &t,
            with_default(spec(&["value"], &["zone", "LocationId"]), "m"),
        );
        let names: Vec<&str> = out.request.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["LocationId", "__name__", "zone"]);
    }

    #[test]
    fn skip_reason_labels_are_stable() {
        let labels: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "null_timestamp",
                "bad_timestamp",
                "no_metric_name",
                "null_value",
                "non_numeric_value",
                "duplicate"
            ]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn value_cell() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<f64>().prop_map(Value::Real),
                (-5i64..5).prop_map(Value::Long),
                any::<bool>().prop_map(Value::Bool),
                prop::sample::select(vec!["1.5", "x", "", "NaN", "-2"]).prop_map(s),
            ]
        }

        fn row() -> impl Strategy<Value = Vec<Value>> {
            (
                prop::option::weighted(0.9, (0i64..3, 0i64..3)),
                prop::sample::select(vec!["cpu", "Mem.Used", "9x", "", "é"]),
                any::<bool>(),
                prop::sample::select(vec!["", "h1", "h\"2"]),
                prop::option::of(0i64..2),
                value_cell(),
                value_cell(),
            )
                .prop_map(|(t, name, name_null, host, n, v1, v2)| {
                    vec![
                        t.map_or(Value::Null, |(min, ms)| {
                            Value::DateTime(Ticks(
                                Ticks::parse(TS).unwrap().0
                                    + min * 60 * 10_000_000
                                    + ms * 10_000
                                    + 3,
                            ))
                        }),
                        if name_null { Value::Null } else { s(name) },
                        s(host),
                        n.map_or(Value::Null, Value::Long),
                        v1,
                        v2,
                    ]
                })
        }

        fn columns() -> Vec<(&'static str, ColumnType)> {
            vec![
                ("timestamp", ColumnType::DateTime),
                ("name", ColumnType::String),
                ("host", ColumnType::String),
                ("n", ColumnType::Long),
                ("v1", ColumnType::Dynamic),
                ("v-2", ColumnType::Dynamic),
            ]
        }

        /// The rules restated naively: whole-string sanitising, a map where later rows overwrite.
        fn model(t: &Table, sp: &MappingSpec) -> BTreeMap<(Vec<Label>, i64), u64> {
            let mut out = BTreeMap::new();
            for row in t.rows() {
                let Value::DateTime(time) = &row[0] else {
                    continue;
                };
                let base = match &row[1] {
                    Value::String(n) if !n.is_empty() => n.to_string(),
                    _ => match &sp.default_metric_name {
                        Some(d) => d.clone(),
                        None => continue,
                    },
                };
                let mut labels = Vec::new();
                if let Value::String(h) = &row[2]
                    && !h.is_empty()
                {
                    labels.push(Label::new("host", h.to_string()));
                }
                if let Value::Long(n) = &row[3] {
                    labels.push(Label::new("n", n.to_string()));
                }
                for (i, col) in sp.value_columns.iter().enumerate() {
                    let v = match &row[4 + i] {
                        Value::Real(v) => *v,
                        Value::Long(v) => *v as f64,
                        Value::Bool(b) => f64::from(u8::from(*b)),
                        Value::String(x) => match x.parse::<f64>() {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                        _ => continue,
                    };
                    let mut parts: Vec<String> = sp.cli_prefix.iter().cloned().collect();
                    parts.push(base.clone());
                    if sp.value_columns.len() > 1 {
                        parts.push(col.clone());
                    }
                    let mut l = labels.clone();
                    l.push(Label::new(
                        METRIC_NAME_LABEL,
                        sanitize_metric_name(&parts.join("_")),
                    ));
                    l.sort();
                    out.insert((l, time.unix_millis()), v.to_bits());
                }
            }
            out
        }

        fn valid(name: &str, extra: char) -> bool {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == extra)
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == extra)
        }

        proptest! {
            #[test]
            fn sort_keys_order_label_sets_like_vec_label(
                a in prop::collection::vec(("[a\\x00b]{0,3}", "[a\\x00\\x01b\\xff]{0,3}"), 0..4),
                b in prop::collection::vec(("[a\\x00b]{0,3}", "[a\\x00\\x01b\\xff]{0,3}"), 0..4),
            ) {
                let labels = |v: Vec<(String, String)>| -> Vec<Label> {
                    v.into_iter().map(|(n, v)| Label::new(n, v)).collect()
                };
                let (a, b) = (labels(a), labels(b));
                let key = |labels: &[Label]| {
                    let mut out = Vec::new();
                    for l in labels {
                        push_sort_key(l.name.as_bytes(), l.value.as_bytes(), &mut out);
                    }
                    out
                };
                let (ka, kb) = (key(&a), key(&b));
                prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            }

            #[test]
            fn output_is_valid_sorted_accounted_and_matches_the_model(
                rows in prop::collection::vec(row(), 0..40),
                two_values in any::<bool>(),
                default in prop::option::of(Just("dflt".to_owned())),
                cli_prefix in prop::option::of(prop::sample::select(vec!["team", "7up"]).prop_map(String::from)),
            ) {
                let t = table(&columns(), rows);
                let values: &[&str] = if two_values { &["v1", "v-2"] } else { &["v1"] };
                let mut sp = with_name_column(spec(values, &["host", "n"]), "name");
                sp.default_metric_name = default;
                sp.cli_prefix = cli_prefix;
                let out = run(&t, sp.clone());

                let series = &out.request.timeseries;
                for ts in series {
                    prop_assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "{:?}", ts.labels);
                    prop_assert!(valid(ts.metric_name(), ':'), "{}", ts.metric_name());
                    for l in ts.labels.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
                        prop_assert!(valid(&l.name, '_') && !l.name.starts_with("__") && !l.value.is_empty());
                    }
                    prop_assert!(!ts.samples.is_empty());
                    prop_assert!(ts.samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
                }
                prop_assert!(series.windows(2).all(|w| w[0].labels < w[1].labels));
                prop_assert_eq!(out.stats.rows, t.row_count() as u64);
                prop_assert_eq!(out.stats.samples, out.request.sample_count() as u64);
                prop_assert_eq!(
                    out.stats.samples + out.stats.skipped_total(),
                    out.stats.rows * values.len() as u64
                );

                let got: BTreeMap<(Vec<Label>, i64), u64> = (series.iter())
                    .flat_map(|ts| ts.samples.iter().map(|s| ((ts.labels.clone(), s.timestamp), s.value.to_bits())))
                    .collect();
                prop_assert_eq!(got, model(&t, &sp));
            }
        }
    }
}
