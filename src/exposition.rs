//! Prometheus text exposition of a [`WriteRequest`]: what `adxexporter preview` prints ([`to_text`]),
//! and the scrape output's "current state" page of one window ([`latest_to_text`]).
//!
//! One line per sample, `name{a="x",b="y"} value timestamp_ms`. A family the window has metadata
//! for (a counter, a histogram, or a gauge with a description or unit: docs/design.md#metric-types)
//! is preceded by its `# HELP` (when described) and `# TYPE` lines; plain gauges have none, as
//! before metric types existed. The output is stable so it can be diffed against checked-in
//! expectations:
//! - lines sorted by family, then metric name, then by the other labels (name, then value, byte
//!   order; a histogram's `le` by its number), then time;
//! - labels in name order without `__name__`, braces omitted when there are none;
//! - label values escaped as the format requires: `\` → `\\`, `"` → `\"`, newline → `\n`;
//! - values as Prometheus's own `expfmt` writes them (Go `strconv.FormatFloat(v, 'g', -1, 64)`):
//!   shortest round-trip digits, exponent form when the decimal exponent is < −4 or ≥ 6
//!   (`1.5e+06`, `1e-05`), `NaN`, `+Inf`, `-Inf`, and `0` for both zeros.

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::prompb::{
    BUCKET_LABEL, Label, METRIC_NAME_LABEL, MetricMetadata, MetricType, Sample, TimeSeries,
    WriteRequest,
};

/// The whole request as exposition text, one `\n`-terminated line per sample, each family's lines
/// after its `# HELP`/`# TYPE` lines when the window has metadata for it.
pub fn to_text(req: &WriteRequest) -> String {
    let mut series: Vec<Line<'_>> = (req.timeseries.iter().enumerate())
        .map(|(i, ts)| Line::new(req, ts, i))
        .collect();
    series.sort_by(Line::cmp);

    let mut out = String::with_capacity(req.sample_count() * 64);
    let mut prefix = String::new();
    let mut family = None;
    for line in series {
        write_family_header(&mut out, &mut family, &line);
        prefix.clear();
        write_series_prefix(&mut prefix, line.name, &line.labels);
        let mut samples = req.timeseries[line.index].samples.clone();
        samples.sort_by_key(|s| s.timestamp);
        for s in samples {
            out.push_str(&prefix);
            out.push(' ');
            write_value(&mut out, s.value);
            let _ = writeln!(out, " {}", s.timestamp);
        }
    }
    out
}

/// The scrape page of one window: one line per series holding its newest sample (the series'
/// current state), sorted like [`to_text`], with the sample's timestamp only when `timestamps`.
/// A series listed twice in the window (not produced by the transform) appears once, newest sample.
pub(crate) fn latest_to_text(req: &WriteRequest, timestamps: bool) -> String {
    let mut series: Vec<(Line<'_>, &Sample)> = (req.timeseries.iter().enumerate())
        .filter_map(|(i, ts)| {
            // max_by_key keeps the last of equal timestamps: the transform keeps the last too.
            let newest = ts.samples.iter().max_by_key(|s| s.timestamp)?;
            Some((Line::new(req, ts, i), newest))
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.timestamp.cmp(&b.1.timestamp)));
    // After the sort, duplicates of one series are adjacent with the newest last.
    series.dedup_by(|later, earlier| {
        let same = later.0.cmp(&earlier.0).is_eq();
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });

    let mut out = String::with_capacity(series.len() * 64);
    let mut family = None;
    for (line, sample) in series {
        write_family_header(&mut out, &mut family, &line);
        write_series_prefix(&mut out, line.name, &line.labels);
        out.push(' ');
        write_value(&mut out, sample.value);
        if timestamps {
            let _ = write!(out, " {}", sample.timestamp);
        }
        out.push('\n');
    }
    out
}

/// One series as a text line: its family (for `# HELP`/`# TYPE`), name and other labels.
struct Line<'a> {
    family: &'a str,
    metadata: Option<&'a MetricMetadata>,
    name: &'a str,
    labels: Vec<&'a Label>,
    index: usize,
}

impl<'a> Line<'a> {
    fn new(req: &'a WriteRequest, ts: &'a TimeSeries, index: usize) -> Line<'a> {
        let name = ts.metric_name();
        let metadata = req.metadata_of(name);
        Line {
            family: metadata.map_or(name, |m| m.metric_family_name.as_str()),
            metadata,
            name,
            labels: (ts.labels.iter())
                .filter(|l| l.name != METRIC_NAME_LABEL)
                .collect(),
            index,
        }
    }

    /// By family, then name, then labels (name, then value, byte order; a histogram's `le` by
    /// its number, so buckets read from low to high).
    fn cmp(&self, other: &Line<'_>) -> Ordering {
        (self.family, self.name)
            .cmp(&(other.family, other.name))
            .then_with(|| {
                for (a, b) in self.labels.iter().zip(&other.labels) {
                    let order = a
                        .name
                        .cmp(&b.name)
                        .then_with(|| match a.name == BUCKET_LABEL {
                            true => bound(&a.value).total_cmp(&bound(&b.value)),
                            false => a.value.cmp(&b.value),
                        });
                    if order.is_ne() {
                        return order;
                    }
                }
                self.labels.len().cmp(&other.labels.len())
            })
    }
}

fn bound(le: &str) -> f64 {
    le.parse().unwrap_or(f64::NAN)
}

/// `# HELP` (when there is a description) and `# TYPE` before the first line of a family that has
/// metadata.
fn write_family_header<'a>(out: &mut String, current: &mut Option<&'a str>, line: &Line<'a>) {
    let Some(m) = line.metadata else { return };
    if *current == Some(line.family) {
        return;
    }
    *current = Some(line.family);
    if !m.help.is_empty() {
        let _ = write!(out, "# HELP {} ", line.family);
        for c in m.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    let kind = match MetricType::try_from(m.r#type) {
        Ok(MetricType::Counter) => "counter",
        Ok(MetricType::Histogram) => "histogram",
        Ok(MetricType::Gauge) => "gauge",
        _ => "untyped",
    };
    let _ = writeln!(out, "# TYPE {} {kind}", line.family);
}

fn write_series_prefix(out: &mut String, name: &str, labels: &[&Label]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&l.name);
        out.push_str("=\"");
        write_escaped(out, &l.value);
        out.push('"');
    }
    out.push('}');
}

/// Label-value escaping of the text format.
fn write_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value exactly as Go's `strconv.FormatFloat(v, 'g', -1, 64)` (and so Prometheus) prints it.
pub(crate) fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == 0.0 {
        out.push('0');
    } else {
        write_finite_nonzero(out, v);
    }
}

fn write_finite_nonzero(out: &mut String, v: f64) {
    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e<exp>`; Go picks the form from the exponent.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        out.push_str(&sci);
        return;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(
            out,
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Sample, TimeSeries};

    fn value(v: f64) -> String {
        let mut s = String::new();
        write_value(&mut s, v);
        s
    }

    #[test]
    fn values_print_like_go_format_float_g() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (42.5, "42.5"),
            (245.75, "245.75"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456"),
            (999999.0, "999999"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (947595402.0, "9.47595402e+08"),
            (1e21, "1e+21"),
            (1.5e-300, "1.5e-300"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-7, "-2.5e-07"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(value(v), want, "{v:?}");
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            samples: (samples.iter())
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn lines_are_sorted_by_name_then_labels_then_time() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "b"), ("x", "2")], &[(2.0, 20), (1.0, 10)]),
                series(&[("Z", "z"), ("__name__", "b")], &[(3.0, 5)]),
                series(&[("__name__", "a")], &[(0.5, 30)]),
            ],
            ..Default::default()
        };
        assert_eq!(
            to_text(&req),
            "a 0.5 30\n\
             b{Z=\"z\"} 3 5\n\
             b{x=\"2\"} 1 10\n\
             b{x=\"2\"} 2 20\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let req = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "m"), ("v", "a\\b\"c\nd")],
                &[(1.0, 1)],
            )],
            ..Default::default()
        };
        assert_eq!(to_text(&req), "m{v=\"a\\\\b\\\"c\\nd\"} 1 1\n");
    }

    #[test]
    fn the_scrape_page_holds_each_series_newest_sample_once() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "b"), ("x", "2")], &[(2.0, 20), (1.0, 10)]),
                series(&[("__name__", "a")], &[(0.5, 30)]),
                series(&[("__name__", "c")], &[]),
                // The same series twice: the newer sample wins wherever it is listed.
                series(&[("__name__", "b"), ("x", "2")], &[(7.0, 15)]),
            ],
            ..Default::default()
        };
        assert_eq!(latest_to_text(&req, false), "a 0.5\nb{x=\"2\"} 2\n");
        assert_eq!(latest_to_text(&req, true), "a 0.5 30\nb{x=\"2\"} 2 20\n");
    }

    #[test]
    fn empty_request_prints_nothing() {
        assert_eq!(to_text(&WriteRequest::default()), "");
    }
}
