//! A histogram window (docs/design.md#metric-types): the rows, folded into one series per bucket
//! (`<name>_bucket` with `le` = the row's upper bound, value = the bucket's own count, and beside
//! them the rows' sums), become classic Prometheus histogram series: per name,
//! labels and timestamp, `_bucket{le}` counts cumulative over the bounds (`le="+Inf"` always present:
//! the total, implied when no row has it), `_count` (the total) and `_sum` (the rows' sums, when
//! `sumColumn` is set). Each is this window's increase; the WAL turns them into running totals.
//!
//! A series' bounds are the union over its timestamps in the window, so every `_bucket` series of a
//! series has a sample at each of its timestamps.

use std::collections::BTreeMap;

use crate::exposition::write_value;
use crate::prompb::{BUCKET_LABEL, Label, METRIC_NAME_LABEL, Sample, TimeSeries};

pub(crate) const BUCKET_SUFFIX: &str = "_bucket";
pub(crate) const COUNT_SUFFIX: &str = "_count";
pub(crate) const SUM_SUFFIX: &str = "_sum";

/// One series of the histogram: its name and labels without `le`.
type GroupKey = (String, Vec<Label>);

#[derive(Default)]
struct Point {
    /// (upper bound, this bucket's own count).
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
}

/// The folded bucket series (each with its rows' sums) → the histogram's series, sorted by labels.
pub(super) fn assemble(folded: Vec<(TimeSeries, Vec<Sample>)>) -> Vec<TimeSeries> {
    let mut groups: BTreeMap<GroupKey, BTreeMap<i64, Point>> = BTreeMap::new();
    for (series, sums) in folded {
        let Some(family) = series.metric_name().strip_suffix(BUCKET_SUFFIX) else {
            continue;
        };
        let family = family.to_owned();
        let bound = (series.labels.iter())
            .find(|l| l.name == BUCKET_LABEL)
            .and_then(|l| parse_bound(&l.value));
        let Some(bound) = bound else { continue };
        let labels: Vec<Label> = (series.labels.into_iter())
            .filter(|l| l.name != BUCKET_LABEL && l.name != METRIC_NAME_LABEL)
            .collect();
        let points = groups.entry((family, labels)).or_default();
        for s in series.samples {
            points
                .entry(s.timestamp)
                .or_default()
                .buckets
                .push((bound, s.value));
        }
        for s in sums {
            *points
                .entry(s.timestamp)
                .or_default()
                .sum
                .get_or_insert(0.0) += s.value;
        }
    }
    let mut out = Vec::new();
    for ((family, labels), points) in groups {
        let mut bounds: Vec<f64> = (points.values())
            .flat_map(|p| p.buckets.iter().map(|b| b.0))
            .chain([f64::INFINITY])
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let mut buckets: Vec<Vec<Sample>> = vec![Vec::new(); bounds.len()];
        let (mut counts, mut sums) = (Vec::new(), Vec::new());
        for (&timestamp, point) in &points {
            let mut own = point.buckets.clone();
            own.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (mut at, mut cumulative) = (0, 0.0);
            for (bound, samples) in bounds.iter().zip(&mut buckets) {
                while let Some(&(b, count)) = own.get(at)
                    && b <= *bound
                {
                    cumulative += count;
                    at += 1;
                }
                samples.push(Sample {
                    value: cumulative,
                    timestamp,
                });
            }
            counts.push(Sample {
                value: cumulative,
                timestamp,
            });
            if let Some(sum) = point.sum {
                sums.push(Sample {
                    value: sum,
                    timestamp,
                });
            }
        }
        for (bound, samples) in bounds.iter().zip(buckets) {
            let mut le = String::new();
            write_value(&mut le, *bound);
            let extra = [(BUCKET_LABEL, le)];
            out.push(series(&family, BUCKET_SUFFIX, &labels, &extra, samples));
        }
        out.push(series(&family, COUNT_SUFFIX, &labels, &[], counts));
        if !sums.is_empty() {
            out.push(series(&family, SUM_SUFFIX, &labels, &[], sums));
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

/// A bound as the transform printed it (`write_value`: Go's `FormatFloat`, `+Inf`).
fn parse_bound(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|b| !b.is_nan())
}

fn series(
    family: &str,
    suffix: &str,
    labels: &[Label],
    extra: &[(&str, String)],
    samples: Vec<Sample>,
) -> TimeSeries {
    let mut labels: Vec<Label> = (labels.iter().cloned())
        .chain(extra.iter().map(|(n, v)| Label::new(*n, v.clone())))
        .chain([Label::new(METRIC_NAME_LABEL, format!("{family}{suffix}"))])
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries { labels, samples }
}
