//! `adxexporter check`: files' resources loaded and validated, as `ok` lines, warnings and
//! problems, optionally with whether an instance with given cluster labels would run each one.
//!
//! Beyond validation (which `run` applies too), `check` warns about unknown fields. A
//! `namespace/name` seen twice, in one file or across files, is a problem: `run --manifests`
//! rejects all but one.

use std::collections::BTreeMap;

use crate::criteria::expression::FIELD as EXPRESSION_FIELD;

use super::{ValidatedSpec, load_documents};

/// What `adxexporter check` says about one file: `ok` lines, warnings and problems, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CheckReport {
    /// `ok ns/name` (plus, with cluster labels, whether it would run here).
    pub ok: Vec<String>,
    /// `FILE: ns/name: warning: ...`; they do not fail the check.
    pub warnings: Vec<String>,
    /// `FILE: ns/name: field: problem`; any fails the check.
    pub problems: Vec<String>,
}

/// Checks files one after the other, remembering every `namespace/name` it has seen so that the
/// same one in a later document or file is reported.
#[derive(Debug)]
pub(crate) struct Checker<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    /// `namespace/name` → where it was first seen, `FILE (document N)`.
    seen: BTreeMap<String, String>,
}

/// Checks the text of one file on its own (see [`Checker::check_text`]): unit tests and fuzzing.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_text(
    file: &str,
    text: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> CheckReport {
    Checker::new(labels).check_text(file, text)
}

impl<'a> Checker<'a> {
    /// With `labels`, each `ok` line also says whether an instance with those cluster labels would
    /// run the resource.
    pub(crate) fn new(labels: Option<&'a BTreeMap<String, String>>) -> Self {
        Checker {
            labels,
            seen: BTreeMap::new(),
        }
    }

    /// Checks the text of one file; `file` is how lines name it.
    pub(crate) fn check_text(&mut self, file: &str, text: &str) -> CheckReport {
        let mut report = CheckReport::default();
        let documents = match load_documents(text) {
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
