//! OTLP metrics of a window with metric types or metadata (docs/design.md#metric-types): gauges
//! with their description and unit, counters as monotonic `Sum`s, histograms as `Histogram`s.
//! Plain gauge windows never come here: they keep the byte-level encoder of `otlp.rs`.
//!
//! - A counter family `<name>_total` becomes the `Sum` named `<name>` (OTLP names carry no
//!   `_total`; Prometheus' OTLP ingestion adds it back), monotonic.
//! - A histogram family `<name>` (its `_bucket{le}`, `_count` and `_sum` series, which travel in
//!   one request) becomes one `HistogramDataPoint` per labels and timestamp: the finite `le`s as
//!   explicit bounds, each bucket's own count (the difference of neighbouring `le` totals), count and
//!   sum.
//! - Temporality comes from the window (`Cumulative.delta`): cumulative points hold the running
//!   totals with the series' start (where its total began) as start time; delta points hold the
//!   window's increases, starting at the window's start (a later point of the same series in the
//!   window starts at the one before it).

use crate::prompb::{
    BUCKET_LABEL, Cumulative, METRIC_NAME_LABEL, MetricMetadata, MetricType, TimeSeries,
    WriteRequest,
};

use super::otlp_proto::{
    Gauge, Histogram, HistogramDataPoint, KeyValue, Metric, NumberDataPoint, Sum,
    TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA, unix_nanos,
};

/// Whether a window needs this path: it has metadata or running totals.
pub(crate) fn is_typed(window: &WriteRequest) -> bool {
    !window.metadata.is_empty() || window.cumulative.is_some()
}

/// The window's series in request order, as units that must not be split across requests: one
/// series, or all series of one histogram (name and labels without `le`). Series without samples
/// are left out.
pub(crate) fn units(window: &WriteRequest) -> Vec<Vec<usize>> {
    let mut units: Vec<(UnitKey, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<UnitKey, usize> = std::collections::HashMap::new();
    for (i, s) in window.timeseries.iter().enumerate() {
        if s.samples.is_empty() {
            continue;
        }
        let key = unit_key(window, s, i);
        let at = *index.entry(key.clone()).or_insert_with(|| {
            units.push((key, Vec::new()));
            units.len() - 1
        });
        if let Some((_, members)) = units.get_mut(at) {
            members.push(i);
        }
    }
    // Group by metric (family), first appearance order, so each request holds few `Metric`s.
    let mut families: Vec<(String, Vec<Vec<usize>>)> = Vec::new();
    for ((family, _), members) in units {
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, list)) => list.push(members),
            None => families.push((family, vec![members])),
        }
    }
    families.into_iter().flat_map(|(_, list)| list).collect()
}

/// (family, histogram labels or the series' index).
type UnitKey = (String, Result<Vec<(String, String)>, usize>);

fn unit_key(window: &WriteRequest, s: &TimeSeries, i: usize) -> UnitKey {
    let name = s.metric_name();
    match window.metadata_of(name) {
        Some(m) if m.r#type == MetricType::Histogram as i32 => {
            (m.metric_family_name.clone(), Ok(attribute_pairs(s)))
        }
        _ => (name.to_owned(), Err(i)),
    }
}

fn attribute_pairs(s: &TimeSeries) -> Vec<(String, String)> {
    (s.labels.iter())
        .filter(|l| l.name != METRIC_NAME_LABEL && l.name != BUCKET_LABEL)
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn attributes(s: &TimeSeries) -> Vec<KeyValue> {
    (s.labels.iter())
        .filter(|l| l.name != METRIC_NAME_LABEL && l.name != BUCKET_LABEL)
        .map(|l| KeyValue::string(&l.name, &l.value))
        .collect()
}

/// The metrics holding the series `order` (whole [`units`], in order); consecutive points of one
/// metric share its `Metric`.
pub(crate) fn metrics(window: &WriteRequest, order: &[usize]) -> Vec<Metric> {
    let points = Points::new(window);
    let series = |i: usize| window.timeseries.get(i);
    let mut out: Vec<Metric> = Vec::new();
    let mut at = 0;
    while let Some(s) = order.get(at).and_then(|&i| series(i)) {
        let metadata = window.metadata_of(s.metric_name());
        let kind = metadata.map_or(MetricType::Gauge as i32, |m| m.r#type);
        if kind == MetricType::Histogram as i32
            && let Some(m) = metadata
        {
            let labels = attribute_pairs(s);
            let len = (order.get(at..).unwrap_or_default().iter())
                .take_while(|&&i| {
                    series(i)
                        .is_some_and(|o| m.covers(o.metric_name()) && attribute_pairs(o) == labels)
                })
                .count()
                .max(1);
            let group = order.get(at..at + len).unwrap_or_default();
            let data = points.histogram(m, group, attributes(s));
            metric_for(
                &mut out,
                &m.metric_family_name,
                metadata,
                kind,
                window.cumulative.as_ref(),
            )
            .histogram
            .get_or_insert_with(Histogram::default)
            .data_points
            .extend(data);
            at += len;
            continue;
        }
        let index = order.get(at).copied().unwrap_or_default();
        let data = points.numbers(index, s, kind == MetricType::Counter as i32);
        let name = match kind == MetricType::Counter as i32 {
            true => s
                .metric_name()
                .strip_suffix("_total")
                .unwrap_or(s.metric_name()),
            false => s.metric_name(),
        };
        let metric = metric_for(&mut out, name, metadata, kind, window.cumulative.as_ref());
        match (&mut metric.sum, &mut metric.gauge) {
            (Some(sum), _) => sum.data_points.extend(data),
            (None, Some(gauge)) => gauge.data_points.extend(data),
            (None, None) => {}
        }
        at += 1;
    }
    out
}

/// The last metric when it is `name`, else a new one of the right kind.
fn metric_for<'a>(
    out: &'a mut Vec<Metric>,
    name: &str,
    metadata: Option<&MetricMetadata>,
    kind: i32,
    cumulative: Option<&Cumulative>,
) -> &'a mut Metric {
    let reuse = out.last().is_some_and(|m| m.name == name);
    if !reuse {
        let temporality = match cumulative.is_some_and(|c| c.delta) {
            true => TEMPORALITY_DELTA,
            false => TEMPORALITY_CUMULATIVE,
        };
        let mut metric = Metric {
            name: name.to_owned(),
            description: metadata.map(|m| m.help.clone()).unwrap_or_default(),
            unit: metadata.map(|m| m.unit.clone()).unwrap_or_default(),
            ..Metric::default()
        };
        if kind == MetricType::Counter as i32 {
            metric.sum = Some(Sum {
                data_points: Vec::new(),
                aggregation_temporality: temporality,
                is_monotonic: true,
            });
        } else if kind == MetricType::Histogram as i32 {
            metric.histogram = Some(Histogram {
                data_points: Vec::new(),
                aggregation_temporality: temporality,
            });
        } else {
            metric.gauge = Some(Gauge::default());
        }
        out.push(metric);
    }
    let last = out.len() - 1;
    &mut out[last]
}

/// Reads values and start times of a window's samples for either temporality.
struct Points<'w> {
    window: &'w WriteRequest,
    /// Index of each series' first sample among all samples (for `Cumulative.increases`).
    offsets: Vec<usize>,
}

impl<'w> Points<'w> {
    fn new(window: &'w WriteRequest) -> Points<'w> {
        let mut offsets = Vec::with_capacity(window.timeseries.len());
        let mut at = 0;
        for s in &window.timeseries {
            offsets.push(at);
            at += s.samples.len();
        }
        Points { window, offsets }
    }

    /// Sample `k` of series `i`: its value for this temporality and its start time (Unix ms).
    fn sample(&self, i: usize, k: usize) -> Option<(f64, i64, i64)> {
        let s = self.window.timeseries.get(i)?;
        let sample = s.samples.get(k)?;
        let Some(c) = &self.window.cumulative else {
            return Some((sample.value, 0, sample.timestamp));
        };
        if c.delta {
            let at = self.offsets.get(i)? + k;
            let increase = c.increases.get(at).copied().unwrap_or(0.0);
            let start = match k.checked_sub(1).and_then(|p| s.samples.get(p)) {
                Some(previous) => previous.timestamp,
                None => c.window_start_ms,
            };
            Some((increase, start, sample.timestamp))
        } else {
            let start = c.series_start_ms.get(i).copied().unwrap_or(0);
            Some((sample.value, start, sample.timestamp))
        }
    }

    fn numbers(&self, i: usize, s: &TimeSeries, with_start: bool) -> Vec<NumberDataPoint> {
        let attributes = attributes(s);
        (0..s.samples.len())
            .filter_map(|k| self.sample(i, k))
            .map(|(value, start, time)| NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: if with_start { unix_nanos(start) } else { 0 },
                time_unix_nano: unix_nanos(time),
                as_double: Some(value),
            })
            .collect()
    }

    /// One point per timestamp of the histogram whose series are `group`.
    fn histogram(
        &self,
        family: &MetricMetadata,
        group: &[usize],
        attributes: Vec<KeyValue>,
    ) -> Vec<HistogramDataPoint> {
        let name = &family.metric_family_name;
        let find = |suffix: &str| {
            (group.iter().copied()).find(|&i| {
                self.window
                    .timeseries
                    .get(i)
                    .is_some_and(|s| s.metric_name().strip_prefix(name.as_str()) == Some(suffix))
            })
        };
        let Some(count) = find("_count") else {
            return Vec::new();
        };
        let sum = find("_sum");
        let mut buckets: Vec<(f64, usize)> = (group.iter().copied())
            .filter_map(|i| {
                let s = self.window.timeseries.get(i)?;
                if s.metric_name().strip_prefix(name.as_str()) != Some("_bucket") {
                    return None;
                }
                let le = s.labels.iter().find(|l| l.name == BUCKET_LABEL)?;
                let bound = le.value.parse::<f64>().ok().filter(|b| !b.is_nan())?;
                Some((bound, i))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count_series = self.window.timeseries.get(count);
        let samples = count_series.map_or(&[][..], |s| s.samples.as_slice());
        let mut out = Vec::with_capacity(samples.len());
        for (k, at) in samples.iter().enumerate() {
            let Some((total, start, time)) = self.sample(count, k) else {
                continue;
            };
            let value_at = |i: usize| {
                let s = self.window.timeseries.get(i)?;
                let k = s
                    .samples
                    .binary_search_by_key(&at.timestamp, |p| p.timestamp)
                    .ok()?;
                self.sample(i, k).map(|v| v.0)
            };
            let mut bucket_counts = Vec::with_capacity(buckets.len() + 1);
            let mut explicit_bounds = Vec::with_capacity(buckets.len());
            let mut below = 0.0;
            for &(bound, i) in &buckets {
                let cumulative = value_at(i).unwrap_or(below);
                bucket_counts.push(count_of(cumulative - below));
                below = cumulative.max(below);
                if bound.is_finite() {
                    explicit_bounds.push(bound);
                }
            }
            if buckets.last().is_none_or(|b| b.0.is_finite()) {
                bucket_counts.push(count_of(total - below));
            }
            out.push(HistogramDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: unix_nanos(start),
                time_unix_nano: unix_nanos(time),
                count: count_of(total),
                sum: sum.and_then(value_at),
                bucket_counts,
                explicit_bounds,
            });
        }
        out
    }
}

/// A count as OTLP's unsigned integer: running totals of integer counts are exact in an f64.
fn count_of(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}
