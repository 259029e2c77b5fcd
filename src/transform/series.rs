//! Rows folded into series: each row's series key (label values and metric name, built in reused
//! buffers), the index from key to series, and the finished series sorted by labels with their
//! samples sorted by time and de-duplicated.

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;

use crate::crd::LabelColumn;
use crate::prompb::{METRIC_NAME_LABEL, Sample, encode};
use crate::query::Value;

use super::cells::{
    bucket_bound, increase_value, row_base_name, row_timestamp, sample_value, write_label_value,
};
use super::histogram::BUCKET_SUFFIX;
use super::mapping::{ColumnName, LabelValue, Mapping, ValueColumn};
use super::schema::Columns;
use super::{SkipCounts, SkipReason};
use crate::crd::MetricKind;
use crate::exposition::write_value;

/// Buffers reused across rows so that a row allocates nothing unless it starts a new series.
#[derive(Default)]
pub(super) struct RowBuffers {
    /// The series key: each label value length-prefixed in labelColumns order, then the metric name.
    key: Vec<u8>,
    base: String,
    text: String,
    /// The last bucket bounds printed (bits → text): a histogram's rows repeat a few bounds, and
    /// printing a float is most of a row's cost otherwise.
    bounds: Vec<(u64, String)>,
    /// Without a metric name column the names do not change from row to row: built once.
    fixed: Option<FixedNames>,
}

/// The base name's outcome and each value column's whole name (see [`push_series_name`]).
type FixedNames = (Result<(), SkipReason>, Vec<Vec<u8>>);

impl RowBuffers {
    pub(super) fn new(columns: &Columns, mapping: &Mapping) -> RowBuffers {
        let mut buf = RowBuffers::default();
        if columns.metric_name.is_none() {
            let base = row_base_name(None, mapping, &mut buf.base, &mut buf.text);
            let names = (mapping.value_columns.iter())
                .map(|value_column| {
                    let mut name = Vec::new();
                    push_series_name(mapping, &buf.base, value_column, &mut name);
                    name
                })
                .collect();
            buf.fixed = Some((base, names));
        }
        buf
    }
}

/// The metric name of a value column's series: a histogram's rows fold into `<name>_bucket`.
fn push_series_name(mapping: &Mapping, base: &str, value_column: &ValueColumn, out: &mut Vec<u8>) {
    mapping.push_name(base, value_column, out);
    if matches!(mapping.kind, MetricKind::Histogram { .. }) {
        out.extend_from_slice(BUCKET_SUFFIX.as_bytes());
    }
}

pub(super) fn add_row(
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
    let base = match &buf.fixed {
        Some((base, _)) => *base,
        None => row_base_name(
            columns.metric_name.map(cell),
            mapping,
            &mut buf.base,
            &mut buf.text,
        ),
    };
    buf.key.clear();
    for (slot, source) in columns.labels.iter().zip(&mapping.label_values) {
        // Text cells and static values go into the key as they are; others are printed first.
        let value: &str = match (source, slot) {
            (LabelValue::Static(value), _) => value,
            (LabelValue::Bucket { .. }, Some(i)) => match bucket_bound(cell(*i)) {
                Ok(bound) => {
                    buf.text.clear();
                    push_bound(&mut buf.bounds, bound, &mut buf.text);
                    &buf.text
                }
                Err(reason) => return skipped.add(reason, per_row),
            },
            (LabelValue::Column { .. }, Some(i)) => match cell(*i) {
                Value::String(text) => text,
                other => {
                    buf.text.clear();
                    write_label_value(&mut buf.text, other);
                    &buf.text
                }
            },
            (_, None) => "",
        };
        buf.key
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.key.extend_from_slice(value.as_bytes());
    }
    let labels_len = buf.key.len();
    // A histogram row's sum goes with its count: the row is kept or skipped whole.
    let sum = match columns.sum.map(|i| sample_value(cell(i))) {
        None => None,
        Some(Ok(v)) if v.is_finite() => Some(v),
        Some(Ok(_)) => return skipped.add(SkipReason::InvalidIncrease, per_row),
        Some(Err(reason)) => return skipped.add(reason, per_row),
    };
    for (k, (value_column, &i)) in mapping
        .value_columns
        .iter()
        .zip(&columns.values)
        .enumerate()
    {
        let value = match mapping.kind {
            MetricKind::Gauge => sample_value(cell(i)),
            MetricKind::Counter | MetricKind::Histogram { .. } => increase_value(cell(i)),
        };
        let value = match (value, &base) {
            (Err(reason), _) => Err(reason),
            (Ok(_), Err(reason)) if matches!(value_column.name, ColumnName::Derived { .. }) => {
                Err(*reason)
            }
            (Ok(v), _) => Ok(v),
        };
        let value = match value {
            Ok(v) => v,
            Err(reason) => {
                skipped.add(reason, 1);
                continue;
            }
        };
        buf.key.truncate(labels_len);
        match buf.fixed.as_ref().and_then(|(_, names)| names.get(k)) {
            Some(name) => buf.key.extend_from_slice(name),
            None => push_series_name(mapping, &buf.base, value_column, &mut buf.key),
        }
        let slot = index.push(
            &buf.key,
            labels_len,
            &mapping.labels,
            Sample { value, timestamp },
        );
        // Only a histogram has a sum column.
        if let Some(sum) = sum {
            let sample = Sample {
                value: sum,
                timestamp,
            };
            index.push_sum(slot, sample);
        }
    }
}

/// Appends the `le` text of `bound` (Prometheus' float text), from a small cache of the bounds seen.
fn push_bound(cache: &mut Vec<(u64, String)>, bound: f64, out: &mut String) {
    const KEEP: usize = 64;
    let bits = bound.to_bits();
    if let Some((_, text)) = cache.iter().find(|(b, _)| *b == bits) {
        return out.push_str(text);
    }
    let mut text = String::new();
    write_value(&mut text, bound);
    out.push_str(&text);
    if cache.len() == KEEP {
        cache.remove(0);
    }
    cache.push((bits, text));
}

/// Series by key, in first-seen order.
pub(super) struct SeriesIndex {
    /// Each series' key hash, where its key is in `keys` (start, length) and its slot in `series`:
    /// the key's place is kept here too, so a lookup compares keys without reading the series.
    slots: HashTable<(u64, usize, u32, u32)>,
    /// foldhash (randomly seeded) rather than SipHash: hashing every row's key is on the hot path.
    hasher: foldhash::fast::RandomState,
    /// Every series' key back to back: one buffer for the window, not an allocation per series.
    keys: Vec<u8>,
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
    /// The series the index is sized for.
    hint: usize,
}

/// The most series an index is sized for up front: a window of many rows per series (1M rows of
/// 10,000 series) must not reserve for a million.
const SIZE_HINT_MAX: usize = 1 << 16;

/// The most bytes reserved up front for a window's keys (beyond, they grow as they come).
const KEYS_RESERVE_MAX: usize = 16 << 20;

/// A series being built. Its labels live in its key (see [`RowBuffers::key`]), read on output.
pub(super) struct SeriesBuilder {
    /// Where its key is in [`Series::keys`].
    key: Range<usize>,
    labels_len: usize,
    /// Its labels' length in a remote-write `TimeSeries`, counted with the sort key: the encoder
    /// sizes its output without reading every series' labels a second time.
    pub(super) encoded_labels: usize,
    /// The first sample, inline: most series of a window have one, and a `Vec` of their own was a
    /// malloc per series (6 % of the durable push's CPU, benches/README.md#durable-push-3).
    first: Sample,
    /// All of its samples once it has more than one (the first copied in front), else empty.
    rest: Vec<Sample>,
    /// A histogram bucket series' per-row sums, by timestamp like the samples.
    pub(super) sums: Vec<Sample>,
    sort_key: Range<usize>,
}

/// The finished series, sorted by labels, samples sorted and de-duplicated.
pub(super) struct Series {
    pub(super) series: Vec<SeriesBuilder>,
    /// Their keys.
    pub(super) keys: Vec<u8>,
    pub(super) name_order: Vec<Option<usize>>,
}

impl SeriesIndex {
    /// `rows`: the window's row count, an upper bound of its series for one value column; the
    /// index is sized for that many (up to [`SIZE_HINT_MAX`]) so it does not grow and rehash
    /// series by series (7 % of the transform of a window of 10,000 series, `cargo bench --bench
    /// transform -- 10k_rows`).
    pub(super) fn new(columns: &[LabelColumn], rows: usize) -> SeriesIndex {
        let mut name_order: Vec<Option<usize>> =
            (0..columns.len()).map(Some).chain([None]).collect();
        let name = |slot: &Option<usize>| {
            slot.and_then(|i| columns.get(i))
                .map_or(METRIC_NAME_LABEL, |c| c.label.as_str())
        };
        name_order.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        let hint = rows.min(SIZE_HINT_MAX);
        SeriesIndex {
            slots: HashTable::with_capacity(hint),
            hasher: Default::default(),
            keys: Vec::new(),
            series: Vec::with_capacity(hint),
            name_order,
            sort_keys: Vec::new(),
            values: Vec::new(),
            hint,
        }
    }

    /// Adds a sample to the series of `key`; returns the series' slot (for [`Self::push_sum`]).
    pub(super) fn push(
        &mut self,
        key: &[u8],
        labels_len: usize,
        columns: &[LabelColumn],
        sample: Sample,
    ) -> usize {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        let found = self.slots.find(hash, |&(h, at, len, _)| {
            h == hash && keys.get(at..at + len as usize) == Some(key)
        });
        match found {
            Some(&(.., slot)) => {
                let slot = slot as usize;
                if let Some(s) = self.series.get_mut(slot) {
                    if s.rest.is_empty() {
                        s.rest.push(s.first);
                    }
                    s.rest.push(sample);
                }
                slot
            }
            None => {
                let slot = self.series.len();
                let start = self.sort_keys.len();
                let (sort_keys, mut encoded_labels) = (&mut self.sort_keys, 0);
                key_labels(
                    key,
                    labels_len,
                    columns,
                    &self.name_order,
                    &mut self.values,
                    |name, value| {
                        push_sort_key(name.as_bytes(), value, sort_keys);
                        encoded_labels += encode::label_field_len(name.as_bytes(), value);
                    },
                );
                if slot == 0 {
                    // Series of a window have keys of about the same length.
                    let first = self.sort_keys.len();
                    // Capped: one huge first label value must not reserve for 65,536 of it.
                    let reserve = |len: usize| len.saturating_mul(self.hint).min(KEYS_RESERVE_MAX);
                    self.sort_keys.reserve(reserve(first));
                    self.keys.reserve(reserve(key.len()));
                }
                let at = self.keys.len();
                self.keys.extend_from_slice(key);
                self.series.push(SeriesBuilder {
                    key: at..self.keys.len(),
                    labels_len,
                    encoded_labels,
                    first: sample,
                    rest: Vec::new(),
                    sums: Vec::new(),
                    sort_key: start..self.sort_keys.len(),
                });
                let entry = (hash, at, key.len() as u32, slot as u32);
                self.slots.insert_unique(hash, entry, |&(h, ..)| h);
                slot
            }
        }
    }

    /// A histogram bucket row's sum, beside its count in the series at `slot` (one lookup per row).
    pub(super) fn push_sum(&mut self, slot: usize, sample: Sample) {
        if let Some(s) = self.series.get_mut(slot) {
            s.sums.push(sample);
        }
    }

    /// The series sorted by labels, samples sorted and de-duplicated; plus the duplicates dropped.
    pub(super) fn finish(self) -> (Series, usize) {
        let mut series = self.series;
        let keys = self.sort_keys;
        series.sort_unstable_by(|a, b| {
            let key = |s: &SeriesBuilder| keys.get(s.sort_key.clone()).unwrap_or_default();
            key(a).cmp(key(b))
        });
        let duplicates = (series.iter_mut())
            .map(|s| {
                // Sums are pushed with their counts, row by row: the same rows win.
                sort_and_dedup(&mut s.sums);
                sort_and_dedup(&mut s.rest)
            })
            .sum();
        let series = Series {
            series,
            keys: self.keys,
            name_order: self.name_order,
        };
        (series, duplicates)
    }
}

impl SeriesBuilder {
    /// Its samples, sorted by time (after [`SeriesIndex::finish`]).
    pub(super) fn samples(&self) -> &[Sample] {
        match self.rest.is_empty() {
            true => std::slice::from_ref(&self.first),
            false => &self.rest,
        }
    }

    /// Its samples and its sums, owned.
    pub(super) fn into_samples_and_sums(self) -> (Vec<Sample>, Vec<Sample>) {
        match self.rest.is_empty() {
            true => (vec![self.first], self.sums),
            false => (self.rest, self.sums),
        }
    }

    /// The series' metric name (the end of its key in `keys`, [`Series::keys`]).
    pub(super) fn name<'k>(&self, keys: &'k [u8]) -> &'k [u8] {
        let key = keys.get(self.key.clone()).unwrap_or_default();
        key.get(self.labels_len..).unwrap_or_default()
    }

    /// Calls `f(name, value)` for each of its labels in name order (`__name__` included).
    pub(super) fn labels(
        &self,
        keys: &[u8],
        columns: &[LabelColumn],
        name_order: &[Option<usize>],
        scratch: &mut Vec<Range<usize>>,
        f: impl FnMut(&str, &[u8]),
    ) {
        let key = keys.get(self.key.clone()).unwrap_or_default();
        key_labels(key, self.labels_len, columns, name_order, scratch, f);
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
pub(super) fn push_sort_key(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
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
    use crate::query::{ColumnType, Value};
    use crate::transform::tests::{TS, run, s, spec, table, ts, with_default};

    /// The index reserves key space for the window's rows from its first key's length, capped: a first
    /// row with a huge label value among 65,536 rows reserved 4 MiB × 65,536 = 256 GiB and aborted.
    #[test]
    fn a_huge_first_label_value_reserves_no_more_than_the_cap() {
        let huge = "h".repeat(4 << 20);
        let rows = (0..1 << 16)
            .map(|i| {
                let host = if i == 0 {
                    huge.clone()
                } else {
                    format!("h{i}")
                };
                vec![ts(TS), s(&host), Value::Real(1.0)]
            })
            .collect();
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                ("Host", ColumnType::String),
                ("value", ColumnType::Real),
            ],
            rows,
        );
        let out = run(&t, with_default(spec(&["value"], &["Host"]), "m"));
        assert_eq!(out.request.timeseries.len(), 1 << 16);
        assert!(
            out.request
                .timeseries
                .iter()
                .any(|s| s.labels.iter().any(|l| l.value == huge))
        );
    }
}
