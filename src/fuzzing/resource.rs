//! Resource files (`adxexporter check`, `--manifests`) under arbitrary text: `check_text` (what
//! `check` runs: [`load_documents`], then [`check_loaded`]) and [`load_documents`] (what `--manifests`
//! runs), i.e. YAML/JSON parsing, the typed `MetricsExporter` and
//! [`MetricsExporterSpec::validate`](crate::crd::MetricsExporterSpec::validate). For every input:
//!
//! - checking returns (no panic, no runaway allocation on alias bombs or deep nesting);
//! - every problem and warning line names the file, so a user can find it;
//! - cluster labels change only the `ok` lines' placement text, or turn an `ok` line into a
//!   `spec.criteriaExpression` problem (an expression those labels cannot evaluate), and the
//!   `spec.body` lines about `_<label>` variables (checked against the labels), nothing else;
//! - a resource that loaded survives a round trip: written back as JSON it loads again as the same
//!   resource with no unknown fields, and validates to the same verdict (same problems, in order).

use std::collections::BTreeMap;

use crate::crd::{check_loaded, load_documents};

const FILE: &str = "fuzz.yaml";

/// Input: the file's bytes; non-UTF-8 is skipped (the loader reads files with `read_to_string`).
pub fn resource(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Parsed once and checked twice: the YAML parse (with its error snippets) was most of each run.
    let loaded = load_documents(text);
    let report = check_loaded(FILE, loaded.clone(), None);
    for line in report.problems.iter().chain(&report.warnings) {
        assert!(
            line.starts_with(&format!("{FILE}: ")),
            "{line:?} does not name the file"
        );
    }
    let labels = BTreeMap::from([("region".to_owned(), "eastus".to_owned())]);
    let placed = check_loaded(FILE, loaded.clone(), Some(&labels));
    let (added, kept): (Vec<&String>, Vec<&String>) = placed
        .problems
        .iter()
        .partition(|p| !report.problems.contains(p));
    assert_eq!(kept, report.problems.iter().collect::<Vec<_>>());
    for line in &added {
        assert!(
            line.contains(": spec.criteriaExpression: "),
            "labels added a problem other than an expression error: {line:?}"
        );
    }
    // Without labels one note lists the `_<label>` variables; with them, a warning per undefined one.
    let not_about_labels = |lines: &[String]| -> Vec<String> {
        (lines.iter())
            .filter(|l| {
                !l.contains("cluster labels define")
                    && !l.contains("--cluster-labels do not define")
            })
            .cloned()
            .collect()
    };
    assert_eq!(
        not_about_labels(&placed.warnings),
        not_about_labels(&report.warnings)
    );
    assert_eq!(placed.ok.len() + added.len(), report.ok.len());

    let Ok(documents) = loaded else {
        return;
    };
    for loaded in documents.into_iter().flatten() {
        let json = serde_json::to_string(&loaded.resource).expect("a loaded resource serializes");
        let again = load_documents(&json)
            .unwrap_or_else(|e| panic!("{json} written back does not parse: {e}"));
        assert_eq!(again.len(), 1, "{json} written back is not one document");
        let back = match &again[0] {
            Ok(back) => back,
            Err(e) => panic!("{json} written back does not load: {e}"),
        };
        assert_eq!(
            back.resource, loaded.resource,
            "round trip changed the resource"
        );
        assert!(back.unknown_fields.is_empty(), "{:?}", back.unknown_fields);
        assert_eq!(
            verdict(&back.resource.spec),
            verdict(&loaded.resource.spec),
            "round trip changed the validation"
        );
    }
}

fn verdict(spec: &crate::crd::MetricsExporterSpec) -> Result<(), Vec<String>> {
    spec.validate()
        .map(|_| ())
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}
