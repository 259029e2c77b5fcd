//! One cell at a time: a row's timestamp, its metric base name, a sample value, a label value. Each
//! returns why a bad cell is skipped instead of failing the window.

use std::fmt::Write as _;

use crate::query::Value;
use crate::time::Ticks;

use super::SkipReason;
use super::mapping::Mapping;
use crate::crd::NameStyle;
use crate::crd::names::{adxmon_normalize, has_letter_or_digit, push_name_chars};

/// The row's timestamp in Unix milliseconds (floor), or why the row is skipped.
pub(super) fn row_timestamp(cell: &Value, string_column: bool) -> Result<i64, SkipReason> {
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

/// Writes the row's base name into `base`, sanitised or normalised for the mapping's name style
/// (docs/design.md#metric-names): the name cell, or when it is null or empty the default name. Why
/// there is none otherwise: no name at all, or a name cell with no letter or digit (it would
/// sanitise to `_`s only).
pub(super) fn row_base_name(
    cell: Option<&Value>,
    mapping: &Mapping,
    base: &mut String,
    text: &mut String,
) -> Result<(), SkipReason> {
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
            if !has_letter_or_digit(name) {
                return Err(SkipReason::BadMetricName);
            }
            match mapping.style {
                NameStyle::Prometheus => {
                    if mapping.name_prefix.is_empty()
                        && name.starts_with(|c: char| c.is_ascii_digit())
                    {
                        base.push('_');
                    }
                    push_name_chars(base, name);
                }
                NameStyle::Adxmon => base.push_str(&adxmon_normalize(name)),
            }
            return Ok(());
        }
    }
    match &mapping.default_base {
        Some(default) => {
            if mapping.style == NameStyle::Prometheus
                && mapping.name_prefix.is_empty()
                && default.starts_with(|c: char| c.is_ascii_digit())
            {
                base.push('_');
            }
            base.push_str(default);
            Ok(())
        }
        None => Err(SkipReason::NoMetricName),
    }
}

/// A counter's increase or a bucket's count from one cell: a sample value that is finite and not
/// negative, or why it is skipped.
pub(super) fn increase_value(cell: &Value) -> Result<f64, SkipReason> {
    let v = sample_value(cell)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(SkipReason::InvalidIncrease)
    }
}

/// A histogram row's bucket upper bound: any number but NaN (`+inf` is the last bucket), or why
/// the row is skipped.
pub(super) fn bucket_bound(cell: &Value) -> Result<f64, SkipReason> {
    match sample_value(cell) {
        Ok(v) if !v.is_nan() => Ok(v),
        _ => Err(SkipReason::BadBucket),
    }
}

/// A sample value from one cell, or why it is skipped.
pub(super) fn sample_value(cell: &Value) -> Result<f64, SkipReason> {
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
pub(crate) fn write_label_value(out: &mut String, cell: &Value) {
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
