//! `adxexporter check`: a file's resources loaded and validated, as `ok` lines, warnings and
//! problems, optionally with whether an instance with given cluster labels would run each one.

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

/// Checks the text of one file. `file` is how lines name it; with `labels`, each `ok` line also
/// says whether an instance with those cluster labels would run the resource.
pub(crate) fn check_text(
    file: &str,
    text: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> CheckReport {
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
        match loaded.resource.spec.validate() {
            Err(problems) => report
                .problems
                .extend(problems.iter().map(|p| format!("{file}: {key}: {p}"))),
            Ok(spec) => match labels {
                None => report.ok.push(format!("ok {key}")),
                Some(labels) => match placement(&spec, labels) {
                    Ok(placed) => report.ok.push(format!("ok {key}: {placed}")),
                    // An instance with these labels cannot evaluate the expression: it would skip
                    // the resource and report it, so the check fails too.
                    Err(problem) => report.problems.push(format!("{file}: {key}: {problem}")),
                },
            },
        }
    }
    report
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
