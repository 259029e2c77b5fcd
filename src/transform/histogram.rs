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

/// One bucket series of a histogram series: its bound, counts and sums, each sorted by time.
struct Bucket {
    bound: f64,
    counts: Vec<Sample>,
    sums: Vec<Sample>,
}

/// The folded bucket series (each with its rows' sums) → the histogram's series, sorted by labels.
pub(super) fn assemble(folded: Vec<(TimeSeries, Vec<Sample>)>) -> Vec<TimeSeries> {
    let mut groups: BTreeMap<GroupKey, Vec<Bucket>> = BTreeMap::new();
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
        groups.entry((family, labels)).or_default().push(Bucket {
            bound,
            counts: series.samples,
            sums,
        });
    }
    let mut out = Vec::new();
    for ((family, labels), members) in groups {
        let mut bounds: Vec<f64> = (members.iter().map(|m| m.bound))
            .chain([f64::INFINITY])
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let mut times: Vec<i64> = (members.iter())
            .flat_map(|m| m.counts.iter().chain(&m.sums).map(|s| s.timestamp))
            .collect();
        times.sort_unstable();
        times.dedup();
        // Counts add up in bound order (a stable sort: equal bounds keep the series' order), sums
        // in the series' order.
        let mut by_bound: Vec<usize> = (0..members.len()).collect();
        by_bound.sort_by(|&a, &b| {
            let bound = |i: usize| members.get(i).map_or(f64::NAN, |m| m.bound);
            bound(a).total_cmp(&bound(b))
        });
        let (mut next_count, mut next_sum) = (vec![0; members.len()], vec![0; members.len()]);
        // The sample of member `m` at `t`, if any, moving its cursor past it.
        let take = |m: usize, t: i64, samples: &[Sample], next: &mut [usize]| {
            let at = next.get_mut(m)?;
            let s = samples.get(*at).filter(|s| s.timestamp == t)?;
            *at += 1;
            Some(s.value)
        };
        let mut buckets: Vec<Vec<Sample>> = vec![Vec::with_capacity(times.len()); bounds.len()];
        let (mut counts, mut sums) = (Vec::with_capacity(times.len()), Vec::new());
        for &timestamp in &times {
            let (mut at, mut cumulative) = (0, 0.0);
            for (bound, samples) in bounds.iter().zip(&mut buckets) {
                while let Some(&m) = by_bound.get(at)
                    && let Some(member) = members.get(m)
                    && member.bound <= *bound
                {
                    if let Some(count) = take(m, timestamp, &member.counts, &mut next_count) {
                        cumulative += count;
                    }
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
            let mut sum = None;
            for (m, member) in members.iter().enumerate() {
                if let Some(v) = take(m, timestamp, &member.sums, &mut next_sum) {
                    *sum.get_or_insert(0.0) += v;
                }
            }
            if let Some(value) = sum {
                sums.push(Sample { value, timestamp });
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
