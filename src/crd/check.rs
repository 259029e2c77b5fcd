//! `adxexporter check`: files' resources loaded and validated, as `ok` lines, warnings and
//! problems, optionally with whether an instance with given cluster labels would run each one.
//!
//! Beyond validation (which `run` applies too), `check` warns about what `run` accepts but which
//! rarely does what was meant: unknown fields, a body that never uses the window
//! ([`super::kql`]: a textual check, KQL is not parsed), `_<label>` variables the cluster labels do
//! not define, and label columns that are also the value or timestamp column. A `namespace/name`
//! seen twice, in one file or across files, is a problem: `run --manifests` rejects all but one.

use std::collections::BTreeMap;

use crate::criteria::expression::FIELD as EXPRESSION_FIELD;

use super::kql::{BodyNames, scan};
use super::load::LoadedResource;
use super::names::{WINDOW_VARIABLES, kql_identifier};
use super::{CrdError, ValidatedSpec, load_documents};

/// What `adxexporter check` says about one file: `ok` lines, warnings and problems, in file order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct CheckReport {
    /// `ok ns/name` (plus, with cluster labels, whether it would run here).
    pub ok: Vec<String>,
    /// `FILE: ns/name: warning: ...` (or `note: ...`); they do not fail the check.
    pub warnings: Vec<String>,
    /// `FILE: ns/name: field: problem`; any fails the check.
    pub problems: Vec<String>,
    /// Each valid resource not seen before, in file order: what `check --kusto-endpoint` runs
    /// against Kusto.
    pub valid: Vec<ValidResource>,
}

/// A resource that passed validation, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidResource {
    pub file: String,
    /// `namespace/name`.
    pub key: String,
    pub spec: ValidatedSpec,
}

/// Checks files one after the other, remembering every `namespace/name` it has seen so that the
/// same one in a later document or file is reported.
#[derive(Debug)]
pub(crate) struct Checker<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    /// `namespace/name` → where it was first seen, `FILE (document N)`.
    seen: BTreeMap<String, String>,
}

/// Checks the text of one file on its own (see [`Checker::check_text`]): unit tests.
#[cfg(test)]
pub(crate) fn check_text(
    file: &str,
    text: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> CheckReport {
    Checker::new(labels).check_text(file, text)
}

/// [`check_text`] of a text already read by [`load_documents`]: the fuzz target checks one text
/// with and without labels, and parsing it once instead of three times tripled its speed.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_loaded(
    file: &str,
    documents: Documents,
    labels: Option<&BTreeMap<String, String>>,
) -> CheckReport {
    Checker::new(labels).check_loaded(file, documents)
}

/// What [`load_documents`] returns.
type Documents = Result<Vec<Result<LoadedResource, CrdError>>, CrdError>;

impl<'a> Checker<'a> {
    /// With `labels`, each `ok` line also says whether an instance with those cluster labels would
    /// run the resource, and the body's `_<label>` variables are checked against them.
    pub(crate) fn new(labels: Option<&'a BTreeMap<String, String>>) -> Self {
        Checker {
            labels,
            seen: BTreeMap::new(),
        }
    }

    /// Checks the text of one file; `file` is how lines name it.
    pub(crate) fn check_text(&mut self, file: &str, text: &str) -> CheckReport {
        self.check_loaded(file, load_documents(text))
    }

    /// Checks one file's documents as [`load_documents`] read them; `file` is how lines name it.
    fn check_loaded(&mut self, file: &str, documents: Documents) -> CheckReport {
        let mut report = CheckReport::default();
        let documents = match documents {
            Ok(d) => d,
            Err(e) => {
                report.problems.push(format!("{file}: {e}"));
                return report;
            }
        };
        if documents.is_empty() {
            report
                .problems
                .push(format!("{file}: no MetricsExporter in this file"));
        }
        for document in documents {
            let loaded = match document {
                Ok(l) => l,
                Err(e) => {
                    report
                        .problems
                        .extend(e.lines().into_iter().map(|l| format!("{file}: {l}")));
                    continue;
                }
            };
            let key = loaded.resource.key();
            for field in &loaded.unknown_fields {
                report
                    .warnings
                    .push(format!("{file}: {key}: warning: {field}"));
            }
            let here = format!("{file} (document {})", loaded.doc);
            let first = match self.seen.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    self.seen.insert(key.clone(), here);
                    None
                }
            };
            if let Some(first) = &first {
                report.problems.push(format!(
                    "{file}: {key}: metadata.name: {key} is also defined in {first}: `run --manifests` runs only the first by file name and reports the others as invalid: rename one (metadata.name or metadata.namespace) or delete the copy"
                ));
            }
            let spec = match loaded.resource.spec.validate() {
                Ok(spec) => spec,
                Err(problems) => {
                    report
                        .problems
                        .extend(problems.iter().map(|p| format!("{file}: {key}: {p}")));
                    continue;
                }
            };
            for (level, line) in advice(&spec, self.labels) {
                report
                    .warnings
                    .push(format!("{file}: {key}: {level}: {line}"));
            }
            if first.is_some() {
                continue;
            }
            match self.labels {
                None => report.ok.push(format!("ok {key}")),
                Some(labels) => match placement(&spec, labels) {
                    Ok(placed) => report.ok.push(format!("ok {key}: {placed}")),
                    // An instance with these labels cannot evaluate the expression: it would skip
                    // the resource and report it, so the check fails too.
                    Err(problem) => report.problems.push(format!("{file}: {key}: {problem}")),
                },
            }
            report.valid.push(ValidResource {
                file: file.to_owned(),
                key,
                spec,
            });
        }
        report
    }
}

/// Whether an instance with `labels` would run the resource, and why not; `Err` when its
/// `criteriaExpression` cannot be evaluated there.
fn placement(spec: &ValidatedSpec, labels: &BTreeMap<String, String>) -> Result<String, String> {
    use crate::criteria::Placement;
    let constrained = !spec.criteria.is_empty() || spec.criteria_expression.is_some();
    Ok(
        match crate::criteria::place(&spec.criteria, spec.criteria_expression.as_ref(), labels) {
            Placement::Runs if constrained => "would run here (criteria match)".into(),
            Placement::Runs => "would run here (no criteria)".into(),
            Placement::Skipped(reason) => format!("skipped here: {reason}"),
            Placement::Error(e) => return Err(format!("{EXPRESSION_FIELD}: {e}")),
        },
    )
}

/// Says so in every line about the body: it is read as text, not parsed.
const TEXTUAL: &str =
    "a textual check: comments and string literals are ignored, KQL is not parsed";

/// What a valid resource may not mean: `("warning" | "note", "field: message: fix")` lines.
fn advice(
    spec: &ValidatedSpec,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let body = scan(&spec.body);
    if let Some(line) = window_advice(&body) {
        out.push(("warning", line));
    }
    out.extend(label_variable_advice(&body, labels));
    let t = &spec.transform;
    for label in &t.label_columns {
        let column = &label.column;
        if t.value_columns.contains(column) {
            out.push((
                "warning",
                format!(
                    "spec.transform.labelColumns: {column:?} is also a value column, so every distinct value becomes its own series with one sample (`run` accepts it: the label holds the value as text, and the series count grows with every new value): remove {column:?} from labelColumns"
                ),
            ));
        }
        if *column == t.timestamp_column {
            out.push((
                "warning",
                format!(
                    "spec.transform.labelColumns: {column:?} is also the timestampColumn, so every timestamp becomes its own series with one sample (`run` accepts it: the label holds the time as text, and every window starts new series): remove {column:?} from labelColumns"
                ),
            ));
        }
    }
    out
}

/// The body should use both window variables; without them each window queries more than itself.
fn window_advice(body: &BodyNames) -> Option<String> {
    let example = "e.g. `| where Timestamp between (_startTime .. _endTime)`";
    let [start, end] = WINDOW_VARIABLES;
    match (body.uses(start), body.uses(end)) {
        (true, true) => None,
        (false, false) => Some(format!(
            "spec.body: never uses {start} or {end}, so every window queries the whole table: each window exports every row again, which receivers refuse as duplicate or out-of-order samples (dead letters): filter on the window, {example} ({TEXTUAL})"
        )),
        (true, false) => Some(format!(
            "spec.body: uses {start} but never {end}, so every window also returns the rows after its end, which later windows export again (refused as duplicates, dead letters): bound the window on both sides, {example} ({TEXTUAL})"
        )),
        (false, true) => Some(format!(
            "spec.body: uses {end} but never {start}, so every window also returns every row before its start, exported again by each window (refused as duplicates, dead letters): bound the window on both sides, {example} ({TEXTUAL})"
        )),
    }
}

/// `_name` variables of the body that only a cluster label can define. With `labels`: a warning
/// per name these labels do not define (as the query prefix would: [`kql_identifier`]); without:
/// one note listing the names the body expects from cluster labels.
fn label_variable_advice(
    body: &BodyNames,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<(&'static str, String)> {
    let expected: Vec<&str> = body
        .underscore_names()
        .filter(|n| !WINDOW_VARIABLES.contains(n))
        .collect();
    if expected.is_empty() {
        return Vec::new();
    }
    let Some(labels) = labels else {
        let names = expected.join(", ");
        let keys: Vec<String> = expected
            .iter()
            .map(|n| format!("{}=…", label_key(n)))
            .collect();
        return vec![(
            "note",
            format!(
                "spec.body: uses {names}, which only cluster labels define ({}): on an instance without them the query fails with \"column not found\" (unless they are columns of the table or defined in the body); give check --cluster-labels to verify ({TEXTUAL})",
                keys.join(", ")
            ),
        )];
    };
    let defined: Vec<String> = (WINDOW_VARIABLES.iter().map(|v| (*v).to_owned()))
        .chain(labels.keys().map(|k| kql_identifier(k)))
        .collect();
    expected
        .into_iter()
        .filter(|n| !defined.iter().any(|d| d == n))
        .map(|name| {
            (
                "warning",
                format!(
                    "spec.body: uses {name}, which these --cluster-labels do not define (the query prefix defines {}): unless it is a column of the table or defined in the body, the query fails with \"column not found\": add the cluster label {}=… or fix the name (case-sensitive) ({TEXTUAL})",
                    defined.join(", "),
                    label_key(name)
                ),
            )
        })
        .collect()
}

/// The cluster-label key that gives the KQL variable `name` (`_region` ← `region`).
fn label_key(name: &str) -> &str {
    name.strip_prefix('_').unwrap_or(name)
}
