//! The transform: one window's query result ([`Table`]) → one remote-write [`WriteRequest`] (docs/design.md#transform).
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
//!    [`write_label_value`]). The names come from validation ([`crate::crd::ValidatedTransform`]),
//!    the one home of the label-name rule: empty, reserved (`__…`) and colliding names never get here.
//! 4. Value, per value column: int, long, real, decimal, bool (1/0), numeric strings and dynamic JSON
//!    numbers; NaN and ±Inf pass through. Null (or an empty string) skips the sample (`null_value`),
//!    anything else non-numeric skips it too (`non_numeric_value`). A bad cell never fails the window.
//! 5. Two samples with the same name, labels and millisecond timestamp: the later row wins, the others
//!    are counted (`duplicate`).
//!
//! Before any row, the result's columns are checked against the mapping (`schema.rs`: every column
//! present, the timestamp column's type); `adxexporter check --kusto-endpoint` lists the same
//! findings for a live query's columns, plus the value columns that cannot (or may not) hold numbers.
//!
//! Output invariants: every series has its labels sorted by name (byte order) with `__name__`
//! included and no duplicate names; its samples strictly increase in time; series are sorted by labels.
//!
//! Accounting: every skip is counted in samples (a skipped row counts one per value column), so
//! `stats.samples + Σ stats.skipped == stats.rows × value columns` always holds.

mod cells;
mod histogram;
mod mapping;
mod schema;
mod series;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod types_tests;

use std::collections::BTreeMap;

use crate::crd::MetricKind;
use crate::prompb::encode;
use crate::prompb::{Label, MetricMetadata, RemoteWriteEncoder, TimeSeries, WriteRequest};
use crate::query::Table;

pub use mapping::Mapping;
pub(crate) use schema::schema_findings;

use schema::resolve_columns;
use series::{RowBuffers, Series, SeriesIndex, add_row};

/// Schema mismatches between a window's result and the mapping ([`transform`]); permanent. There
/// are no configuration errors here: those are validation's ([`crate::crd::SpecProblem`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the query result has no column {column:?} (the transform's {role}); it returned [{}]: fix the column name in the transform or the query", available.join(", "))]
    MissingColumn {
        column: String,
        role: &'static str,
        available: Vec<String>,
    },
    #[error(
        "timestamp column {column:?} is of type {found}, neither datetime nor string: convert it in the query (e.g. `todatetime({column})`)"
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
    /// A name cell with no letter or digit (it would sanitise to `_`s only).
    BadMetricName,
    /// A counter's increase or a bucket's count that is negative, NaN or infinite, or a NaN or
    /// infinite histogram sum.
    InvalidIncrease,
    /// A histogram row whose bucket bound is null, NaN or not a number.
    BadBucket,
}

impl SkipReason {
    const ALL: [SkipReason; 9] = [
        SkipReason::NullTimestamp,
        SkipReason::BadTimestamp,
        SkipReason::NoMetricName,
        SkipReason::NullValue,
        SkipReason::NonNumericValue,
        SkipReason::Duplicate,
        SkipReason::BadMetricName,
        SkipReason::InvalidIncrease,
        SkipReason::BadBucket,
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
            SkipReason::BadMetricName => "bad_metric_name",
            SkipReason::InvalidIncrease => "invalid_increase",
            SkipReason::BadBucket => "bad_bucket",
        }
    }
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

/// A window as the scheduler appends it (docs/design.md#metric-types): a gauge window's bytes, or
/// a counter's or histogram's increases, which the WAL turns into running totals as it appends.
#[derive(Debug, Clone, PartialEq)]
pub enum ForWal {
    Encoded(EncodedTransform),
    Increases(Transformed),
}

impl ForWal {
    pub fn stats(&self) -> &TransformStats {
        match self {
            ForWal::Encoded(t) => &t.stats,
            ForWal::Increases(t) => &t.stats,
        }
    }

    /// Memory the window holds until it is appended (an estimate for increases).
    pub fn held_bytes(&self) -> u64 {
        match self {
            ForWal::Encoded(t) => t.write_request.len() as u64,
            ForWal::Increases(t) => t.stats.samples * mapping::WORKING_BYTES_PER_SAMPLE,
        }
    }
}

/// [`transform_encoded`] for a gauge, [`transform`] for a counter or histogram.
pub fn transform_for_wal(table: &Table, mapping: &Mapping) -> Result<ForWal, TransformError> {
    Ok(if mapping.is_cumulative() {
        ForWal::Increases(transform(table, mapping)?)
    } else {
        ForWal::Encoded(transform_encoded(table, mapping)?)
    })
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

/// Turns one window's table into a `WriteRequest`. Errors only on a table that cannot match the mapping.
/// A counter's or histogram's samples are this window's increases (docs/design.md#metric-types).
pub fn transform(table: &Table, mapping: &Mapping) -> Result<Transformed, TransformError> {
    let (
        Series {
            series,
            keys,
            name_order,
        },
        mut stats,
    ) = run(table, mapping)?;
    let mut scratch = Vec::new();
    let folded = (series.into_iter()).map(|s| {
        let mut labels = Vec::with_capacity(name_order.len());
        s.labels(
            &keys,
            &mapping.labels,
            &name_order,
            &mut scratch,
            |name, value| {
                labels.push(Label::new(name, String::from_utf8_lossy(value)));
            },
        );
        let (samples, sums) = s.into_samples_and_sums();
        (TimeSeries { labels, samples }, sums)
    });
    let timeseries: Vec<TimeSeries> = match mapping.kind {
        MetricKind::Histogram { .. } => {
            let assembled = histogram::assemble(folded.collect());
            stats.samples = assembled.iter().map(|s| s.samples.len() as u64).sum();
            assembled
        }
        _ => folded.map(|(series, _)| series).collect(),
    };
    let metadata = metadata(
        mapping,
        timeseries.iter().map(|s| s.metric_name().as_bytes()),
    );
    Ok(Transformed {
        request: WriteRequest {
            timeseries,
            metadata,
            cumulative: None,
        },
        stats,
    })
}

/// [`transform`] straight to the protobuf bytes of its `WriteRequest` (the bytes prost would write
/// for it, property-tested), without building one heap string per label: what the scheduler appends
/// to the WAL for a gauge.
pub fn transform_encoded(
    table: &Table,
    mapping: &Mapping,
) -> Result<EncodedTransform, TransformError> {
    if let MetricKind::Histogram { .. } = mapping.kind {
        let t = transform(table, mapping)?;
        let write_request = RemoteWriteEncoder::default().encode_window(&t.request);
        return Ok(EncodedTransform {
            write_request,
            stats: t.stats,
        });
    }
    let (
        Series {
            series,
            keys,
            name_order,
        },
        stats,
    ) = run(table, mapping)?;
    let (columns, mut scratch) = (&mapping.labels, Vec::new());
    // Body lengths first: they prefix each series and size the buffer exactly (no regrowth copies).
    let body_lens: Vec<usize> = (series.iter())
        .map(|s| s.encoded_labels + encode::samples_len(s.samples()))
        .collect();
    let total = body_lens.iter().map(|&len| encode::series_field_len(len));
    let mut write_request = Vec::with_capacity(total.sum());
    for (s, &body_len) in series.iter().zip(&body_lens) {
        encode::put_series_header(body_len, &mut write_request);
        s.labels(&keys, columns, &name_order, &mut scratch, |name, value| {
            encode::put_label(name.as_bytes(), value, &mut write_request);
        });
        encode::put_samples(s.samples(), &mut write_request);
    }
    let metadata = metadata(mapping, series.iter().map(|s| s.name(&keys)));
    encode::put_metadata(&metadata, &mut write_request);
    Ok(EncodedTransform {
        write_request,
        stats,
    })
}

/// One metadata entry per family in the window, sorted by name; none for a plain gauge.
fn metadata<'a>(mapping: &Mapping, names: impl Iterator<Item = &'a [u8]>) -> Vec<MetricMetadata> {
    if mapping.metadata("").is_none() {
        return Vec::new();
    }
    let histogram = matches!(mapping.kind, MetricKind::Histogram { .. });
    let mut families: Vec<&[u8]> = names
        .map(|name| match histogram {
            true => [
                histogram::BUCKET_SUFFIX,
                histogram::COUNT_SUFFIX,
                histogram::SUM_SUFFIX,
            ]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix.as_bytes()))
            .unwrap_or(name),
            false => name,
        })
        .collect();
    families.sort_unstable();
    families.dedup();
    (families.into_iter())
        .filter_map(|f| mapping.metadata(&String::from_utf8_lossy(f)))
        .collect()
}

/// The rows folded into sorted, de-duplicated series, and the counts.
fn run(table: &Table, mapping: &Mapping) -> Result<(Series, TransformStats), TransformError> {
    let columns = resolve_columns(table, mapping)?;
    let mut skipped = SkipCounts::default();
    let mut index = SeriesIndex::new(&mapping.labels, table.row_count());
    let mut buffers = RowBuffers::new(&columns, mapping);
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
    let samples = series.series.iter().map(|s| s.samples().len() as u64).sum();
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
