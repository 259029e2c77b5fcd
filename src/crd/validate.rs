//! Validation: the one place that turns a spec's text fields into typed values ([`ValidatedSpec`]),
//! reporting every problem at once, each naming its field and the fix. It is also the one home of the
//! label-name rule, so a resource `check` accepts is one `run` and `preview` can map as it is.

use std::collections::{BTreeMap, BTreeSet};

use crate::criteria::expression::{CriteriaExpression, FIELD as EXPRESSION_FIELD};
use crate::time::{Span, Ticks};

use super::problems::{Problems, SpecProblem, non_blank};
use super::transform::{ValidatedTransform, validate_transform};
use super::{BackfillSpec, DEFAULT_MAX_ROWS, MAX_SPAN, MIN_INTERVAL, MetricsExporterSpec};

/// A spec whose every field has been checked and typed; all later stages use this.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSpec {
    pub database: String,
    /// The query as written (the query text trims it).
    pub body: String,
    /// At least [`MIN_INTERVAL`].
    pub interval: Span,
    /// Zero or positive.
    pub ingestion_delay: Span,
    pub start_time: Option<Ticks>,
    /// At least 1.
    pub max_rows: u64,
    pub criteria: BTreeMap<String, Vec<String>>,
    /// Compiled once here; `None` when absent or blank (no constraint).
    pub criteria_expression: Option<CriteriaExpression>,
    pub transform: ValidatedTransform,
    /// `None`: every configured output.
    pub outputs: Option<Vec<String>>,
    /// `spec.suspend`: no new queries.
    pub suspend: bool,
    pub backfill: Option<Backfill>,
}

/// `spec.backfill`, checked (docs/design.md#backfill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    pub request_id: String,
    /// The range `[start, end)` as given; the windows are those of the interval that meet it.
    pub start: Ticks,
    pub end: Ticks,
    /// At least 1.
    pub max_in_flight: u32,
}

impl MetricsExporterSpec {
    /// Checks every field and returns the typed spec, or every problem found (never just the first).
    pub fn validate(&self) -> Result<ValidatedSpec, Vec<SpecProblem>> {
        let mut p = Problems(Vec::new());
        let database = non_blank(&self.database).map(str::to_owned);
        if database.is_none() {
            p.add("spec.database", "missing: set the Kusto database name");
        }
        let body = non_blank(&self.body).map(str::to_owned);
        if body.is_none() {
            p.add("spec.body", "missing: set the KQL query");
        }
        let interval = validate_interval(self.interval.as_deref(), &mut p);
        let ingestion_delay = validate_delay(self.ingestion_delay.as_deref(), &mut p);
        let start_time = match self.start_time.as_deref() {
            None => None,
            Some(s) => match Ticks::parse(s.trim()) {
                Ok(t) => Some(t),
                Err(_) => {
                    p.add(
                        "spec.startTime",
                        format!("{s:?} is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z"),
                    );
                    None
                }
            },
        };
        let max_rows = self.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
        if max_rows == 0 {
            p.add(
                "spec.maxRows",
                "0 rows allows no result: use at least 1 (default 500000)",
            );
        }
        validate_criteria(&self.criteria, &mut p);
        let criteria_expression = match non_blank(&self.criteria_expression) {
            None => None,
            Some(source) => match CriteriaExpression::compile(source) {
                Ok(compiled) => Some(compiled),
                Err(e) => {
                    p.add(EXPRESSION_FIELD, e.to_string());
                    None
                }
            },
        };
        validate_outputs(self.outputs.as_deref(), &mut p);
        let backfill = self
            .backfill
            .as_ref()
            .and_then(|b| validate_backfill(b, &mut p));
        let transform = match &self.transform {
            Some(t) => validate_transform(t, &mut p),
            None => {
                p.add(
                    "spec.transform",
                    "missing: set at least timestampColumn and valueColumns",
                );
                None
            }
        };
        match (database, body, interval, ingestion_delay, transform) {
            (
                Some(database),
                Some(body),
                Some(interval),
                Some(ingestion_delay),
                Some(transform),
            ) if p.0.is_empty() => Ok(ValidatedSpec {
                database,
                body,
                interval,
                ingestion_delay,
                start_time,
                max_rows,
                criteria: self.criteria.clone(),
                criteria_expression,
                transform,
                outputs: self.outputs.clone(),
                suspend: self.suspend.unwrap_or(false),
                backfill,
            }),
            _ => Err(p.0),
        }
    }
}

fn validate_interval(text: Option<&str>, p: &mut Problems) -> Option<Span> {
    let Some(text) = text else {
        p.add(
            "spec.interval",
            "missing: set a duration such as 30s, 5m or 1h",
        );
        return None;
    };
    match Span::parse_duration(text.trim()) {
        Err(_) => {
            p.add(
                "spec.interval",
                format!("{text:?} is not a duration: use e.g. 30s, 5m, 1h30m (units h, m, s, ms)"),
            );
            None
        }
        Ok(span) if span < MIN_INTERVAL => {
            p.add(
                "spec.interval",
                format!("{text:?} is too short: use at least 1s"),
            );
            None
        }
        Ok(span) if span > MAX_SPAN => {
            p.add(
                "spec.interval",
                format!("{text:?} is too long: use at most 8784h (366 days)"),
            );
            None
        }
        Ok(span) => Some(span),
    }
}

fn validate_delay(text: Option<&str>, p: &mut Problems) -> Option<Span> {
    let Some(text) = text else {
        return Some(Span::ZERO);
    };
    match Span::parse_duration(text.trim()) {
        Err(_) => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is not a duration: use e.g. 0s, 90s, 5m"),
            );
            None
        }
        Ok(span) if span < Span::ZERO => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is negative: use 0s or more"),
            );
            None
        }
        Ok(span) if span > MAX_SPAN => {
            p.add(
                "spec.ingestionDelay",
                format!("{text:?} is too long: use at most 8784h (366 days)"),
            );
            None
        }
        Ok(span) => Some(span),
    }
}

fn validate_criteria(criteria: &BTreeMap<String, Vec<String>>, p: &mut Problems) {
    let mut seen = BTreeMap::new();
    for (key, values) in criteria {
        if key.trim().is_empty() {
            p.add("spec.criteria", "empty key: name a cluster label");
        }
        if values.is_empty() {
            p.add(
                format!("spec.criteria.{key}"),
                "empty list never matches: list at least one value or remove the key",
            );
        }
        if let Some(first) = seen.insert(key.to_lowercase(), key) {
            p.add(
                format!("spec.criteria.{key}"),
                format!("same key as {first:?} (keys are case-insensitive): merge their values"),
            );
        }
    }
}

fn validate_outputs(outputs: Option<&[String]>, p: &mut Problems) {
    let Some(outputs) = outputs else { return };
    if outputs.is_empty() {
        p.add(
            "spec.outputs",
            "empty list sends nowhere: remove the field to use every output, or name one",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, name) in outputs.iter().enumerate() {
        if name.trim().is_empty() {
            p.add(format!("spec.outputs[{i}]"), "empty output name");
        } else if !seen.insert(name.as_str()) {
            p.add(
                format!("spec.outputs[{i}]"),
                format!("{name:?} listed twice"),
            );
        }
    }
}

fn validate_backfill(b: &BackfillSpec, p: &mut Problems) -> Option<Backfill> {
    let request_id = non_blank(&b.request_id).map(|s| s.trim().to_owned());
    if request_id.is_none() {
        p.add(
            "spec.backfill.requestId",
            "missing: name the backfill (a new value restarts it), e.g. fix-2026-03-01",
        );
    }
    let time = |field: &str, text: &Option<String>, p: &mut Problems| match text.as_deref() {
        None => {
            p.add(
                format!("spec.backfill.{field}"),
                "missing: an RFC 3339 datetime, e.g. 2026-01-01T00:00:00Z",
            );
            None
        }
        Some(s) => match Ticks::parse(s.trim()) {
            Ok(t) => Some(t),
            Err(_) => {
                p.add(
                    format!("spec.backfill.{field}"),
                    format!("{s:?} is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z"),
                );
                None
            }
        },
    };
    let start = time("startTime", &b.start_time, p);
    let end = time("endTime", &b.end_time, p);
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        p.add(
            "spec.backfill.endTime",
            format!("{end} is not after startTime {start}: the range is [startTime, endTime)"),
        );
    }
    let max_in_flight = b.max_in_flight.unwrap_or(1);
    if max_in_flight == 0 {
        p.add(
            "spec.backfill.maxInFlight",
            "0 queries never finish the backfill: use at least 1 (default 1)",
        );
    }
    Some(Backfill {
        request_id: request_id?,
        start: start?,
        end: end?,
        max_in_flight: max_in_flight.max(1),
    })
}
