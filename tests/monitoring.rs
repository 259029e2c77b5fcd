//! `deploy/monitoring/`, checked: the alert rules pass `promtool check rules` and their unit tests
//! (`alerts_test.yaml`), every dashboard query is valid PromQL, and every `adxexporter_*` metric a
//! rule, a rule test or a panel names is one the binary exports. The exported names are read from the
//! source at test time (string literals and `const`s under `src/`), so the check follows the code.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PREFIX: &str = "adxexporter_";

/// Series a histogram renders besides its own name (`_bucket` only when buckets are configured).
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// The sections of `docs/operations.md` a runbook link may point at.
const RUNBOOK_ANCHORS: &[&str] = &[
    "backlog-growing",
    "dead-letters",
    "wal-full",
    "kusto-throttling",
    "query-failing",
    "rescale",
    "tls-verification-off",
    "exporter-restarted",
    "status-patch-rejected",
    "status-pruned",
    "status-lagging",
    "kube-api-errors",
    "exporters-stale",
];

fn monitoring_dir() -> PathBuf {
    common::repo_root().join("deploy/monitoring")
}

/// Runs promtool; returns (succeeded, stdout + stderr).
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::system_bin("promtool"))
        .args(args)
        .current_dir(common::repo_root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dashboard() -> serde_json::Value {
    let text = fs::read_to_string(monitoring_dir().join("dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("dashboard.json is valid JSON")
}

fn yaml(name: &str) -> serde_json::Value {
    let text = fs::read_to_string(monitoring_dir().join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
}

/// Every string value anywhere in a JSON/YAML document.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `adxexporter_*` metric names a PromQL expression or text mentions.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        let glued = text[..at].chars().next_back().is_some_and(is_name_char);
        if glued {
            continue;
        }
        let len = text[at..]
            .find(|c: char| !is_name_char(c))
            .unwrap_or(text.len() - at);
        names.insert(text[at..at + len].to_owned());
    }
    names
}

/// What the binary exports, as read from its source.
#[derive(Debug, Default)]
struct Exported {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
    /// Without `set_buckets*`, metrics-exporter-prometheus renders histograms as summaries: no `_bucket`.
    has_buckets: bool,
}

/// A whole string literal `"adxexporter_…"` starting at `at` (the opening quote), if that is one.
fn literal_name(text: &str, at: usize) -> Option<&str> {
    let body = text.get(at + 1..)?;
    if !body.starts_with(PREFIX) {
        return None;
    }
    let len = body.find(|c: char| !is_name_char(c))?;
    body[len..].starts_with('"').then(|| &body[..len])
}

/// Scans Rust sources for metric names: literals, `const NAME: &str = "adxexporter_…"` and the
/// names passed to `histogram!` (directly or through such a const).
fn scan_sources(texts: &[String]) -> Exported {
    let mut exported = Exported::default();
    let mut consts = BTreeMap::new();
    for text in texts {
        for (at, _) in text.match_indices('"') {
            if let Some(name) = literal_name(text, at) {
                exported.names.insert(name.to_owned());
            }
        }
        for line in text.lines() {
            let Some((_, rest)) = line.split_once("const ") else {
                continue;
            };
            let Some((ident, _)) = rest.split_once(':') else {
                continue;
            };
            if let Some(quote) = line.find("\"adxexporter_")
                && let Some(name) = literal_name(line, quote)
            {
                consts.insert(ident.trim().to_owned(), name.to_owned());
            }
        }
        exported.has_buckets |= text.contains("set_buckets");
    }
    for text in texts {
        for (at, m) in text.match_indices("histogram!(") {
            let arg = text[at + m.len()..].trim_start();
            let name = if arg.starts_with('"') {
                literal_name(arg, 0).map(str::to_owned)
            } else {
                let path_len = arg.find(|c: char| !is_name_char(c)).unwrap_or(arg.len());
                let ident = arg[..path_len].rsplit("::").next().unwrap_or_default();
                consts.get(ident).cloned()
            };
            exported.histograms.extend(name);
        }
    }
    exported
}

fn rust_sources(dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(fs::read_to_string(&path).unwrap());
        }
    }
}

fn exported_by_binary() -> Exported {
    let mut texts = Vec::new();
    rust_sources(&common::repo_root().join("src"), &mut texts);
    scan_sources(&texts)
}

/// Why `name` is not a series the binary exports, if it is not.
fn problem(name: &str, exported: &Exported) -> Option<String> {
    if exported.names.contains(name) {
        return None;
    }
    let histogram = HISTOGRAM_SUFFIXES.iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        exported
            .histograms
            .contains(base)
            .then_some((base, *suffix))
    });
    match histogram {
        Some((base, "_bucket")) if !exported.has_buckets => Some(format!(
            "{name}: histogram {base} has no buckets (no set_buckets* in src/), so it renders as a summary"
        )),
        Some(_) => None,
        None => Some(format!(
            "{name}: not exported (no string literal \"{name}\" in src/**/*.rs)"
        )),
    }
}

/// Every metric name each monitoring file mentions, with the file.
fn references() -> Vec<(String, &'static str)> {
    let docs = [
        ("dashboard.json", dashboard()),
        ("alerts.yaml", yaml("alerts.yaml")),
        ("alerts_test.yaml", yaml("alerts_test.yaml")),
    ];
    let mut refs = Vec::new();
    for (file, doc) in docs {
        let mut texts = Vec::new();
        strings(&doc, &mut texts);
        for name in texts.iter().flat_map(|t| referenced_names(t)) {
            refs.push((name, file));
        }
    }
    refs.sort();
    refs.dedup();
    refs
}

/// Every PromQL query of the dashboard's panels, with Grafana's variables replaced by valid values.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let promql = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$exporter", ".*")
                .replace("$output", ".*");
            let id = format!(
                "panel_{}_{}",
                panel["id"],
                target["refId"].as_str().unwrap()
            );
            queries.push((id, promql));
        }
    }
    queries
}

#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, out) = promtool(&["check", "rules", "deploy/monitoring/alerts.yaml"]);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "deploy/monitoring/alerts_test.yaml"]);
    assert!(ok, "promtool test rules failed:\n{out}");
}

#[test]
fn the_rule_tests_cover_the_required_alerts() {
    let tests = yaml("alerts_test.yaml");
    let tested: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|case| !case["exp_alerts"].as_array().unwrap().is_empty())
        .map(|case| case["alertname"].as_str().unwrap())
        .collect();
    for alert in [
        "AdxExporterLagHigh",
        "AdxExporterWalNearFull",
        "AdxExporterDeadLetters",
        "AdxExporterQueryFailing",
        "AdxExporterPushFailing",
        "AdxExporterDown",
        "AdxExporterTaskRestarted",
        "AdxExporterStatusPatchRejected",
        "AdxExporterStatusPruned",
        "AdxExporterStatusLagging",
        "AdxExporterKubeApiErrors",
        "AdxExporterExportersStale",
    ] {
        assert!(
            tested.contains(alert),
            "{alert} has no firing case in alerts_test.yaml"
        );
    }
}

#[test]
fn every_alert_has_a_summary_description_and_runbook() {
    let rules = yaml("alerts.yaml");
    let mut count = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            count += 1;
            let notes = &rule["annotations"];
            for key in ["summary", "description"] {
                assert!(
                    notes[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                    "{alert} has no {key}"
                );
            }
            let runbook = notes["runbook_url"].as_str().unwrap_or_default();
            let anchor = runbook.strip_prefix("docs/operations.md#");
            assert!(
                anchor.is_some_and(|a| RUNBOOK_ANCHORS.contains(&a)),
                "{alert}: runbook_url {runbook:?} is not docs/operations.md#<one of {RUNBOOK_ANCHORS:?}>"
            );
        }
    }
    assert!(count >= 7, "only {count} alerts in alerts.yaml");
}

#[test]
fn dashboard_uses_the_datasource_and_exporter_variables() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(
        var("exporter")["definition"],
        "label_values(adxexporter_watermark_timestamp_seconds, exporter)"
    );
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {} does not use ${{datasource}}",
                panel["title"]
            );
        }
    }
    assert!(!dashboard_queries().is_empty());
}

/// promtool parses each panel query as the expression of a recording rule.
#[test]
fn dashboard_queries_are_valid_promql() {
    let rules: Vec<serde_json::Value> = dashboard_queries()
        .into_iter()
        .map(|(id, expr)| serde_json::json!({"record": format!("dashboard:{id}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard_queries.yaml");
    fs::write(&path, file.to_string()).unwrap();
    let (ok, out) = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(ok, "a dashboard query is not valid PromQL:\n{out}");
}

#[test]
fn every_metric_the_dashboard_and_rules_use_is_exported() {
    let exported = exported_by_binary();
    assert!(
        exported.names.contains("adxexporter_queries_total")
            && exported
                .histograms
                .contains("adxexporter_query_duration_seconds"),
        "the source scan found too little: {exported:?}"
    );
    let refs = references();
    assert!(refs.len() > 10, "too few references found: {refs:?}");
    let problems: Vec<String> = refs
        .iter()
        .filter_map(|(name, file)| problem(name, &exported).map(|p| format!("{file}: {p}")))
        .collect();
    assert!(
        problems.is_empty(),
        "deploy/monitoring uses metrics the binary does not export:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_misspelt_or_misused_metric_is_reported() {
    let source = r#"
        const QUERY_DURATION: &str = "adxexporter_query_duration_seconds";
        fn record() {
            metrics::counter!("adxexporter_queries_total", "outcome" => "ok").increment(1);
            metrics::histogram!(names::QUERY_DURATION).record(1.0);
            metrics::histogram!(
                "adxexporter_push_duration_seconds", "output" => o).record(1.0);
            tracing::info!("adxexporter_{x} is not a name");
        }
    "#;
    let mut exported = scan_sources(&[source.to_owned()]);
    let expected: BTreeSet<String> = [
        "adxexporter_push_duration_seconds",
        "adxexporter_queries_total",
        "adxexporter_query_duration_seconds",
    ]
    .map(String::from)
    .into();
    assert_eq!(exported.names, expected);
    assert_eq!(
        exported.histograms,
        [
            "adxexporter_push_duration_seconds",
            "adxexporter_query_duration_seconds"
        ]
        .map(String::from)
        .into()
    );
    let used = referenced_names(
        r#"sum(rate(adxexporter_querys_total[5m])) / rate(adxexporter_queries_total_count[5m])
           + histogram_quantile(0.9, rate(adxexporter_query_duration_seconds_bucket[5m]))
           + adxexporter_query_duration_seconds_count + up{job=~".*adxexporter.*"}"#,
    );
    let problems: BTreeMap<&str, Option<String>> = used
        .iter()
        .map(|n| (n.as_str(), problem(n, &exported)))
        .collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems["adxexporter_querys_total"].is_some());
    assert!(problems["adxexporter_queries_total_count"].is_some());
    assert!(problems["adxexporter_query_duration_seconds_bucket"].is_some());
    assert!(problems["adxexporter_query_duration_seconds_count"].is_none());
    exported.has_buckets = true;
    assert!(problem("adxexporter_query_duration_seconds_bucket", &exported).is_none());
}
