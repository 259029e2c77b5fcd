//! Running totals of counter and histogram series (docs/design.md#counters): a window's increases
//! become cumulative values in the same transaction that appends the window, so a total advances
//! exactly once per window: kill -9, retries, replays and requeues send the stored totals again and
//! never add twice.
//!
//! Table `totals`: (exporter uid, series key) → [`RunningTotal`]. The series key is its labels
//! (`__name__` included, sorted) as `name 0xFF value 0xFE …`: UTF-8 never holds those two bytes, so
//! the key is unambiguous. Rules, per series of the window:
//! - (histogram) a bound stored with its `_count` that the window lacks is an empty bucket (a
//!   query's `summarize … by le` returns no row for it): its `_bucket` series is added with this
//!   window's cumulative count below that bound, so a series' bounds are every bound it has had;
//! - it continues from its stored total, unless it has none, was last seen more than
//!   `resetAfterIdle` before this window started, or (histogram) the window brings a bound the
//!   series never had — then it restarts from 0, with this window's start as its start;
//! - each sample adds its increase, in time order; the sample's value becomes the running total;
//! - entries of this exporter unseen for `resetAfterIdle` are deleted, so the table stays bounded.
//!
//! The arithmetic ([`cumulate`]) is pure over a [`TotalsStore`], property-tested on a map.

use std::collections::{HashMap, HashSet};

use prost::Message;
use redb::{ReadableTable, Table};

use super::WalError;
pub(super) use super::tables::TOTALS;
use super::tables::{corrupt_row, store};
use crate::prompb::{
    BUCKET_LABEL, Cumulative, Label, METRIC_NAME_LABEL, MetricType, Sample, TimeSeries,
    WriteRequest,
};
use crate::time::{Span, Ticks};

/// One series' running total.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RunningTotal {
    #[prost(double, tag = "1")]
    pub total: f64,
    /// Unix milliseconds: start of the window the total began in (OTLP's start time).
    #[prost(int64, tag = "2")]
    pub start_ms: i64,
    /// Kusto ticks: end of the last window that had this series.
    #[prost(int64, tag = "3")]
    pub last_window_end: i64,
    /// A histogram's `_count` only: CRC-32 of its bucket bounds, to see them change.
    #[prost(fixed32, tag = "4")]
    pub bounds: u32,
    /// A histogram's `_count` only: its bucket bounds (`le` texts), to add the empty ones back.
    #[prost(string, repeated, tag = "5")]
    pub les: Vec<String>,
}

/// Where running totals live: the `totals` table inside an append's transaction, or a map in tests.
pub(crate) trait TotalsStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<RunningTotal>, WalError>;
    fn put(&mut self, key: &[u8], total: &RunningTotal) -> Result<(), WalError>;
}

/// The window being appended, as the running totals see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TotalsWindow {
    pub start: Ticks,
    pub end: Ticks,
    pub reset_after_idle: Span,
    /// OTLP gets the increases (`temporality: delta`).
    pub delta: bool,
}

/// Turns the increases of `request` into running totals in place and records, in
/// `request.cumulative`, each series' start and each sample's increase.
pub(crate) fn cumulate(
    request: &mut WriteRequest,
    window: &TotalsWindow,
    totals: &mut impl TotalsStore,
) -> Result<(), WalError> {
    let fresh_start = window.start.unix_millis();
    add_empty_buckets(request, window, totals)?;
    let bounds = histogram_bounds(request);
    let mut cumulative = Cumulative {
        series_start_ms: Vec::with_capacity(request.timeseries.len()),
        increases: Vec::with_capacity(request.sample_count()),
        delta: window.delta,
        window_start_ms: fresh_start,
    };
    // Histogram series whose bounds changed restart whole: decided on their `_count` first.
    let mut restarted: HashSet<&[u8]> = HashSet::new();
    for (group, b) in &bounds {
        let stored = totals.get(&b.count_key)?;
        if stored.is_some_and(|t| t.bounds != b.fingerprint && !idle(&t, window)) {
            restarted.insert(group);
        }
    }
    let mut key = Vec::new();
    for series in &mut request.timeseries {
        series_key(series, &mut key);
        let group = histogram_group(series, &bounds);
        let restart = group
            .as_ref()
            .is_some_and(|g| restarted.contains(g.as_slice()));
        let stored = totals.get(&key)?;
        let (mut total, start_ms) = match stored {
            Some(t) if !restart && !idle(&t, window) => (t.total, t.start_ms),
            _ => (0.0, fresh_start),
        };
        for sample in &mut series.samples {
            cumulative.increases.push(sample.value);
            total += sample.value;
            sample.value = total;
        }
        cumulative.series_start_ms.push(start_ms);
        let is_count = series.metric_name().ends_with("_count");
        let group_bounds = (group.as_ref().filter(|_| is_count)).and_then(|g| bounds.get(g));
        let entry = RunningTotal {
            total,
            start_ms,
            last_window_end: window.end.0,
            bounds: group_bounds.map_or(0, |b| b.fingerprint),
            les: group_bounds.map_or_else(Vec::new, |b| b.les.clone()),
        };
        totals.put(&key, &entry)?;
    }
    request.cumulative = Some(cumulative);
    Ok(())
}

/// Unseen for longer than `resetAfterIdle` before this window.
fn idle(t: &RunningTotal, window: &TotalsWindow) -> bool {
    t.last_window_end.saturating_add(window.reset_after_idle.0) < window.start.0
}

/// The key of a series: its labels in order (see the module docs).
pub(crate) fn series_key(series: &TimeSeries, out: &mut Vec<u8>) {
    out.clear();
    for l in &series.labels {
        out.extend_from_slice(l.name.as_bytes());
        out.push(0xFF);
        out.extend_from_slice(l.value.as_bytes());
        out.push(0xFE);
    }
}

/// Histogram families of the window (metadata type histogram).
fn histogram_families(request: &WriteRequest) -> Vec<&str> {
    (request.metadata.iter())
        .filter(|m| m.r#type == MetricType::Histogram as i32)
        .map(|m| m.metric_family_name.as_str())
        .collect()
}

/// The key of the histogram series `series` belongs to (`family`), as if named `family<suffix>`
/// and without `le`: with `""` the group's key, with `_count` its count series' key.
fn family_key(series: &TimeSeries, family: &str, suffix: &str) -> Vec<u8> {
    let mut key = Vec::new();
    for l in series.labels.iter().filter(|l| l.name != BUCKET_LABEL) {
        key.extend_from_slice(l.name.as_bytes());
        key.push(0xFF);
        if l.name == METRIC_NAME_LABEL {
            key.extend_from_slice(family.as_bytes());
            key.extend_from_slice(suffix.as_bytes());
        } else {
            key.extend_from_slice(l.value.as_bytes());
        }
        key.push(0xFE);
    }
    key
}

/// The group of a histogram's series, if it belongs to one of the window's histograms.
fn histogram_group(series: &TimeSeries, bounds: &HashMap<Vec<u8>, Bounds>) -> Option<Vec<u8>> {
    if bounds.is_empty() {
        return None;
    }
    let name = series.metric_name();
    let family = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))?;
    let key = family_key(series, family, "");
    bounds.contains_key(&key).then_some(key)
}

/// A histogram series' bounds in this window: its `_count` key, its `le`s sorted by bound and
/// their CRC-32.
struct Bounds {
    count_key: Vec<u8>,
    fingerprint: u32,
    les: Vec<String>,
}

/// A window's `_bucket` series of histogram families, by series: group key → (its `_count` key,
/// its buckets as (bound, `le` text, index in `request.timeseries`)).
type BucketGroups = HashMap<Vec<u8>, (Vec<u8>, Vec<(f64, String, usize)>)>;

fn bucket_groups(request: &WriteRequest) -> BucketGroups {
    let families = histogram_families(request);
    let mut groups = BucketGroups::new();
    if families.is_empty() {
        return groups;
    }
    for (i, series) in request.timeseries.iter().enumerate() {
        let name = series.metric_name();
        let Some(family) = name.strip_suffix("_bucket") else {
            continue;
        };
        if !families.contains(&family) {
            continue;
        }
        let le = (series.labels.iter())
            .find(|l| l.name == BUCKET_LABEL)
            .map_or("", |l| l.value.as_str());
        let bound = le.parse::<f64>().unwrap_or(f64::NAN);
        (groups.entry(family_key(series, family, "")))
            .or_insert_with(|| (family_key(series, family, "_count"), Vec::new()))
            .1
            .push((bound, le.to_owned(), i));
    }
    groups
}

/// Each histogram series' group key → its [`Bounds`].
fn histogram_bounds(request: &WriteRequest) -> HashMap<Vec<u8>, Bounds> {
    (bucket_groups(request).into_iter())
        .map(|(key, (count_key, mut les))| {
            les.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut hasher = crc32fast::Hasher::new();
            for (_, le, _) in &les {
                hasher.update(le.as_bytes());
                hasher.update(&[0xFE]);
            }
            let fingerprint = hasher.finalize();
            (
                key,
                Bounds {
                    count_key,
                    fingerprint,
                    les: les.into_iter().map(|(_, le, _)| le).collect(),
                },
            )
        })
        .collect()
}

/// Adds to each histogram series of the window the `_bucket` series of the bounds stored with its
/// `_count` (unless idle) that the window has no row for: an empty bucket, whose cumulative count
/// at each timestamp is the one of the nearest bound below it in the window (0 if none). Keeps the
/// window's series sorted by labels, as the transform left them.
fn add_empty_buckets(
    request: &mut WriteRequest,
    window: &TotalsWindow,
    totals: &mut impl TotalsStore,
) -> Result<(), WalError> {
    let groups = bucket_groups(request);
    let mut added = Vec::new();
    for (count_key, present) in groups.into_values() {
        let Some(stored) = totals.get(&count_key)? else {
            continue;
        };
        if idle(&stored, window) {
            continue;
        }
        let Some(&(_, _, template)) = present.first() else {
            continue;
        };
        for le in stored
            .les
            .iter()
            .filter(|le| !present.iter().any(|p| p.1 == **le))
        {
            let bound = le.parse::<f64>().unwrap_or(f64::NAN);
            let below = (present.iter())
                .filter(|p| p.0 < bound)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let Some(template) = request.timeseries.get(template) else {
                continue;
            };
            let samples = match below.and_then(|p| request.timeseries.get(p.2)) {
                Some(series) => series.samples.clone(),
                None => (template.samples.iter())
                    .map(|s| Sample {
                        value: 0.0,
                        timestamp: s.timestamp,
                    })
                    .collect(),
            };
            let labels = (template.labels.iter())
                .map(|l| match l.name == BUCKET_LABEL {
                    true => Label::new(BUCKET_LABEL, le.clone()),
                    false => l.clone(),
                })
                .collect();
            added.push(TimeSeries { labels, samples });
        }
    }
    if !added.is_empty() {
        request.timeseries.extend(added);
        request.timeseries.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    Ok(())
}

/// The `totals` table of one append's transaction, for one exporter.
pub(super) struct TableTotals<'a, 't> {
    pub(super) table: &'a mut Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
    pub(super) uid: &'a str,
}

impl TotalsStore for TableTotals<'_, '_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<RunningTotal>, WalError> {
        let Some(value) = self.table.get((self.uid, key)).map_err(store)? else {
            return Ok(None);
        };
        RunningTotal::decode(value.value())
            .map(Some)
            .map_err(|e| corrupt_row("totals", self.uid.to_owned(), e))
    }

    fn put(&mut self, key: &[u8], total: &RunningTotal) -> Result<(), WalError> {
        self.table
            .insert((self.uid, key), total.encode_to_vec().as_slice())
            .map_err(store)?;
        Ok(())
    }
}

impl TableTotals<'_, '_> {
    /// Deletes this exporter's totals unseen for `reset_after_idle` at `window_end`.
    pub(super) fn expire(
        &mut self,
        window_end: Ticks,
        reset_after_idle: Span,
    ) -> Result<(), WalError> {
        let cutoff = window_end.0.saturating_sub(reset_after_idle.0);
        let range = (self.uid, &[][..])..(self.uid, &[0xFF][..]);
        self.table
            .retain_in(range, |_, value| {
                RunningTotal::decode(value).is_ok_and(|t| t.last_window_end >= cutoff)
            })
            .map_err(store)
    }
}

/// Deletes every running total of an exporter (deleted, or handed to another replica).
pub(super) fn clear(
    table: &mut Table<'_, (&'static str, &'static [u8]), &'static [u8]>,
    uid: &str,
) -> Result<(), WalError> {
    let range = (uid, &[][..])..(uid, &[0xFF][..]);
    table.retain_in(range, |_, _| false).map_err(store)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::prompb::{Label, MetricMetadata, Sample};

    #[derive(Default)]
    struct MapTotals(BTreeMap<Vec<u8>, RunningTotal>);

    impl TotalsStore for MapTotals {
        fn get(&mut self, key: &[u8]) -> Result<Option<RunningTotal>, WalError> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], total: &RunningTotal) -> Result<(), WalError> {
            self.0.insert(key.to_vec(), total.clone());
            Ok(())
        }
    }

    const MINUTE: i64 = 600_000_000;
    const T0: i64 = 638_000_000_000_000_000;

    fn window(n: i64, idle_minutes: i64, delta: bool) -> TotalsWindow {
        TotalsWindow {
            start: Ticks(T0 + n * MINUTE),
            end: Ticks(T0 + (n + 1) * MINUTE),
            reset_after_idle: Span(idle_minutes * MINUTE),
            delta,
        }
    }

    fn series(name: &str, extra: &[(&str, &str)], values: &[f64]) -> TimeSeries {
        let mut labels: Vec<Label> = (extra.iter().map(|(n, v)| Label::new(*n, *v)))
            .chain([Label::new(METRIC_NAME_LABEL, name)])
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        TimeSeries {
            labels,
            samples: (values.iter().enumerate())
                .map(|(i, &value)| Sample {
                    value,
                    timestamp: i as i64,
                })
                .collect(),
        }
    }

    fn values(r: &WriteRequest) -> Vec<Vec<f64>> {
        (r.timeseries.iter())
            .map(|s| s.samples.iter().map(|p| p.value).collect())
            .collect()
    }

    #[test]
    fn increases_become_running_totals_with_their_start_and_increases_beside() {
        let mut totals = MapTotals::default();
        let mut w0 = WriteRequest::new(vec![series("a_total", &[], &[1.0, 2.0])]);
        cumulate(&mut w0, &window(0, 60, false), &mut totals).unwrap();
        assert_eq!(values(&w0), [[1.0, 3.0]]);
        let mut w1 = WriteRequest::new(vec![
            series("a_total", &[], &[5.0]),
            series("b_total", &[], &[7.0]),
        ]);
        cumulate(&mut w1, &window(1, 60, true), &mut totals).unwrap();
        assert_eq!(values(&w1), [vec![8.0], vec![7.0]]);
        let c = w1.cumulative.unwrap();
        let start = |n: i64| Ticks(T0 + n * MINUTE).unix_millis();
        assert_eq!(c.series_start_ms, [start(0), start(1)]);
        assert_eq!(c.increases, [5.0, 7.0]);
        assert!(c.delta);
        assert_eq!(c.window_start_ms, start(1));
    }

    #[test]
    fn a_series_unseen_for_longer_than_reset_after_idle_restarts_from_zero() {
        let mut totals = MapTotals::default();
        let mut w = WriteRequest::new(vec![series("a_total", &[], &[4.0])]);
        cumulate(&mut w, &window(0, 10, false), &mut totals).unwrap();
        // Last seen at the end of window 0 (minute 1); window 11 starts 10 minutes later: kept.
        let mut w = WriteRequest::new(vec![series("a_total", &[], &[1.0])]);
        cumulate(&mut w, &window(11, 10, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[5.0]]);
        // Window 23 starts 11 minutes after window 11 ended: restarts, with a new start.
        let mut w = WriteRequest::new(vec![series("a_total", &[], &[1.0])]);
        cumulate(&mut w, &window(23, 10, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[1.0]]);
        let start = Ticks(T0 + 23 * MINUTE).unix_millis();
        assert_eq!(w.cumulative.unwrap().series_start_ms, [start]);
    }

    fn histogram(les: &[(&str, f64)], count: f64) -> WriteRequest {
        let mut timeseries: Vec<TimeSeries> = (les.iter())
            .map(|(le, v)| series("h_bucket", &[("le", le), ("x", "1")], &[*v]))
            .collect();
        timeseries.push(series("h_count", &[("x", "1")], &[count]));
        timeseries.push(series("h_sum", &[("x", "1")], &[count * 2.0]));
        WriteRequest {
            timeseries,
            metadata: vec![MetricMetadata {
                r#type: MetricType::Histogram as i32,
                metric_family_name: "h".into(),
                ..MetricMetadata::default()
            }],
            cumulative: None,
        }
    }

    #[test]
    fn a_histogram_whose_bounds_change_restarts_whole() {
        let mut totals = MapTotals::default();
        let mut w = histogram(&[("1", 1.0), ("+Inf", 2.0)], 2.0);
        cumulate(&mut w, &window(0, 60, false), &mut totals).unwrap();
        let mut w = histogram(&[("1", 1.0), ("+Inf", 2.0)], 2.0);
        cumulate(&mut w, &window(1, 60, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[2.0], [4.0], [4.0], [8.0]]);
        // A new bound: every series of the histogram restarts from this window's counts.
        let mut w = histogram(&[("1", 1.0), ("5", 1.0), ("+Inf", 3.0)], 3.0);
        cumulate(&mut w, &window(2, 60, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[1.0], [1.0], [3.0], [3.0], [6.0]]);
        let start = Ticks(T0 + 2 * MINUTE).unix_millis();
        assert!(
            w.cumulative
                .unwrap()
                .series_start_ms
                .iter()
                .all(|&s| s == start)
        );
    }

    #[test]
    fn a_histogram_window_without_a_row_for_a_bucket_keeps_its_bounds_and_totals() {
        let mut totals = MapTotals::default();
        let mut w = histogram(&[("1", 1.0), ("5", 2.0), ("+Inf", 3.0)], 3.0);
        cumulate(&mut w, &window(0, 60, false), &mut totals).unwrap();
        // Every observation above 5: no rows for 1 and 5, which are empty buckets, not new bounds.
        let mut w = histogram(&[("+Inf", 2.0)], 2.0);
        cumulate(&mut w, &window(1, 60, false), &mut totals).unwrap();
        let les: Vec<&str> = (w.timeseries.iter())
            .map(|s| {
                s.labels
                    .iter()
                    .find(|l| l.name == "le")
                    .map_or("", |l| &l.value)
            })
            .collect();
        assert_eq!(les, ["+Inf", "1", "5", "", ""]);
        assert_eq!(values(&w), [[5.0], [1.0], [2.0], [5.0], [10.0]]);
        let start = Ticks(T0).unix_millis();
        let c = w.cumulative.unwrap();
        assert!(c.series_start_ms.iter().all(|&s| s == start));
        assert_eq!(c.increases, [2.0, 0.0, 0.0, 2.0, 4.0]);
        // A bound the series never had restarts it, keeping the empty ones (5: 1 below it).
        let mut w = histogram(&[("1", 1.0), ("2", 1.0), ("+Inf", 1.0)], 1.0);
        cumulate(&mut w, &window(2, 60, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[1.0], [1.0], [1.0], [1.0], [1.0], [2.0]]);
        // ...and from then on continues with all four.
        let mut w = histogram(&[("+Inf", 1.0)], 1.0);
        cumulate(&mut w, &window(3, 60, false), &mut totals).unwrap();
        assert_eq!(values(&w), [[2.0], [1.0], [1.0], [1.0], [2.0], [4.0]]);
    }

    proptest! {
        /// Over any sequence of windows (series present or not, increases, idle gaps), each
        /// sample's running total is the sum of its series' increases since its last restart, and
        /// a series restarts exactly when it was unseen for longer than the idle period.
        #[test]
        fn running_totals_match_a_model(
            windows in proptest::collection::vec(
                (0i64..4, proptest::collection::vec(proptest::option::of(0u32..100), 3)),
                1..20,
            ),
        ) {
            let mut totals = MapTotals::default();
            let mut model: BTreeMap<usize, (f64, i64)> = BTreeMap::new();
            let mut n = 0;
            for (gap, present) in windows {
                n += gap;
                let w = window(n, 2, false);
                let names: Vec<(usize, f64)> = (present.iter().enumerate())
                    .filter_map(|(i, v)| v.map(|v| (i, f64::from(v))))
                    .collect();
                let mut request = WriteRequest::new(
                    (names.iter())
                        .map(|(i, v)| series(&format!("s{i}_total"), &[], &[*v]))
                        .collect(),
                );
                cumulate(&mut request, &w, &mut totals).unwrap();
                for ((i, v), s) in names.iter().zip(&request.timeseries) {
                    let (total, seen) = model.get(i).copied().unwrap_or((0.0, i64::MIN));
                    let kept = seen != i64::MIN && seen + 2 * MINUTE >= w.start.0;
                    let total = if kept { total + v } else { *v };
                    prop_assert_eq!(s.samples[0].value, total);
                    model.insert(*i, (total, w.end.0));
                }
                n += 1;
            }
        }
    }
}
