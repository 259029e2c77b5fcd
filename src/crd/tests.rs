//! Validation, loading, status helpers and the rendered CRD.

use std::collections::BTreeMap;

use super::*;
use crate::crd::names::sanitize_label_name;
use crate::time::Ticks;

fn spec() -> MetricsExporterSpec {
    MetricsExporterSpec {
        database: Some("db".into()),
        body: Some("T | project ts, v".into()),
        interval: Some("5m".into()),
        transform: Some(TransformSpec {
            value_columns: vec!["v".into()],
            timestamp_column: Some("ts".into()),
            default_metric_name: Some("m".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn problems(s: &MetricsExporterSpec) -> Vec<String> {
    s.validate()
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_minimal_spec_validates_with_defaults() {
    let v = spec().validate().unwrap();
    assert_eq!(v.interval, Span::from_secs(300));
    assert_eq!(v.ingestion_delay, Span::ZERO);
    assert_eq!(v.max_rows, DEFAULT_MAX_ROWS);
    assert_eq!(v.start_time, None);
    assert_eq!(v.transform.value_columns, vec!["v"]);
}

#[test]
fn value_column_and_value_columns_are_joined_without_duplicates() {
    let mut s = spec();
    let t = s.transform.as_mut().unwrap();
    t.value_columns = vec!["a".into(), "b".into(), "a".into()];
    t.value_column = Some("b".into());
    assert_eq!(
        s.validate().unwrap().transform.value_columns,
        vec!["a", "b"]
    );
    let t = s.transform.as_mut().unwrap();
    t.value_columns.clear();
    t.value_column = Some("c".into());
    assert_eq!(s.validate().unwrap().transform.value_columns, vec!["c"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut s = spec();
    s.interval = Some("0s".into());
    s.body = None;
    s.start_time = Some("yesterday".into());
    s.max_rows = Some(0);
    assert_eq!(
        problems(&s),
        vec![
            "spec.body: missing: set the KQL query",
            "spec.interval: \"0s\" is too short: use at least 1s",
            "spec.startTime: \"yesterday\" is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z",
            "spec.maxRows: 0 rows allows no result: use at least 1 (default 500000)",
        ]
    );
}

#[test]
fn intervals_below_one_second_or_unparseable_are_rejected() {
    for (text, ok) in [
        ("1s", true),
        ("1500ms", true),
        ("1h30m", true),
        ("999ms", false),
        ("-5m", false),
        ("5 minutes", false),
        ("1d", false),
        ("8784h", true),
        ("8785h", false),
    ] {
        let mut s = spec();
        s.interval = Some(text.into());
        assert_eq!(s.validate().is_ok(), ok, "{text}");
    }
}

#[test]
fn negative_or_bad_ingestion_delay_is_rejected() {
    let mut s = spec();
    s.ingestion_delay = Some("90s".into());
    assert_eq!(s.validate().unwrap().ingestion_delay, Span::from_secs(90));
    s.ingestion_delay = Some("-1s".into());
    assert_eq!(
        problems(&s),
        vec!["spec.ingestionDelay: \"-1s\" is negative: use 0s or more"]
    );
}

#[test]
fn transform_needs_a_value_column_and_a_name() {
    let mut s = spec();
    let t = s.transform.as_mut().unwrap();
    t.value_columns.clear();
    t.default_metric_name = None;
    assert_eq!(
        problems(&s),
        vec![
            "spec.transform: set valueColumns (or valueColumn)",
            "spec.transform: no metric name: set metricNameColumn, defaultMetricName or metricNames",
        ]
    );
}

#[test]
fn timestamp_column_cannot_be_a_value() {
    let mut s = spec();
    s.transform
        .as_mut()
        .unwrap()
        .value_columns
        .push("ts".into());
    assert_eq!(
        problems(&s),
        vec![
            "spec.transform.valueColumns: \"ts\" is also the timestampColumn: a datetime cannot be a value"
        ]
    );
}

#[test]
fn label_collisions_and_reserved_names_are_rejected() {
    let mut s = spec();
    s.transform.as_mut().unwrap().label_columns =
        vec!["a-b".into(), "a_b".into(), "__name__".into(), "ok".into()];
    assert_eq!(
        problems(&s),
        vec![
            "spec.transform.labelColumns: \"a-b\" and \"a_b\" both become label \"a_b\": rename one in the query",
            "spec.transform.labelColumns: \"__name__\" becomes label \"__name__\", and names starting with __ are reserved: rename the column in the query",
        ]
    );
}

#[test]
fn label_columns_carry_their_sanitised_names() {
    let mut s = spec();
    s.transform.as_mut().unwrap().label_columns = vec!["Region".into(), "5xx".into()];
    let labels = s.validate().unwrap().transform.label_columns;
    assert_eq!(
        labels,
        vec![
            LabelColumn {
                column: "Region".into(),
                label: "Region".into()
            },
            LabelColumn {
                column: "5xx".into(),
                label: "_5xx".into()
            },
        ]
    );
}

#[test]
fn empty_or_blank_label_columns_are_an_error_naming_the_field() {
    // The one label-name rule: an empty column never becomes a label (not even `_`).
    let mut s = spec();
    s.transform.as_mut().unwrap().label_columns = vec!["host".into(), "".into(), "  ".into()];
    assert_eq!(
        problems(&s),
        vec![
            "spec.transform.labelColumns[1]: empty column name",
            "spec.transform.labelColumns[2]: empty column name",
        ]
    );
}

#[test]
fn value_columns_giving_the_same_metric_name_suffix_are_rejected() {
    let mut s = spec();
    let t = s.transform.as_mut().unwrap();
    t.value_columns = vec!["a-b".into(), "c".into()];
    t.value_column = Some("a_b".into());
    assert_eq!(
        problems(&s),
        vec![
            "spec.transform.valueColumns: \"a-b\" and \"a_b\" both give the metric name suffix \"a_b\": rename one in the query (e.g. `project-rename`) or in metricNames"
        ]
    );
    // A single value column gives no suffix, whatever its name.
    let t = s.transform.as_mut().unwrap();
    t.value_columns = vec!["a-b".into()];
    t.value_column = None;
    assert!(s.validate().is_ok());
}

#[test]
fn sanitize_label_name_follows_the_single_rule() {
    assert_eq!(sanitize_label_name("a-b.c"), "a_b_c");
    assert_eq!(sanitize_label_name("9lives"), "_9lives");
    assert_eq!(sanitize_label_name("é"), "_");
    // The result is always a valid name; an empty *column* is refused before it gets here.
    assert_eq!(sanitize_label_name(""), "_");
    assert_eq!(sanitize_label_name("Host_Name1"), "Host_Name1");
}

proptest::proptest! {
    #[test]
    fn sanitized_label_names_are_always_valid(name in ".{0,20}") {
        let out = sanitize_label_name(&name);
        let mut chars = out.chars();
        let first = chars.next().unwrap();
        proptest::prop_assert!(first.is_ascii_alphabetic() || first == '_');
        proptest::prop_assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
        proptest::prop_assert_eq!(sanitize_label_name(&out), out.clone());
    }
}

#[test]
fn legacy_cursor_is_read_from_adx_mon_condition() {
    let mut status = MetricsExporterStatus::default();
    assert_eq!(status.legacy_watermark(), None);
    status.conditions.push(Condition {
        type_: LEGACY_CURSOR_CONDITION.into(),
        status: "True".into(),
        reason: "ExecutionCompleted".into(),
        message: "2026-01-01T12:05:00Z".into(),
        ..Default::default()
    });
    assert_eq!(
        status.legacy_watermark(),
        Some(Ticks::parse("2026-01-01T12:05:00Z").unwrap())
    );
    status.conditions[0].message = "garbage".into();
    assert_eq!(status.legacy_watermark(), None);
}

#[test]
fn resume_prefers_our_watermark_over_adx_mon_cursor() {
    let mut me = MetricsExporter::new("x", spec());
    let mut status = MetricsExporterStatus::default();
    status.conditions.push(Condition {
        type_: LEGACY_CURSOR_CONDITION.into(),
        message: "2026-01-01T00:00:00Z".into(),
        ..Default::default()
    });
    me.status = Some(status.clone());
    assert_eq!(
        me.resume_watermark(),
        Ticks::parse("2026-01-01T00:00:00Z").ok()
    );
    status.watermark = Some("2026-02-01T00:00:00Z".into());
    me.status = Some(status);
    assert_eq!(
        me.resume_watermark(),
        Ticks::parse("2026-02-01T00:00:00Z").ok()
    );
}

#[test]
fn adx_mon_resource_deserializes_and_unknown_fields_are_listed() {
    let text = r#"
apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {name: m, namespace: ns}
spec:
  database: Metrics
  interval: 5m
  body: T
  criteria: {region: [eastus]}
  transform:
    valueColumns: [v]
    timestampColumn: ts
    metricNamePrefix: team
    defaultMetricName: m
    valueColum: typo
status:
  conditions:
  - type: metricsexporter.adx-mon.azure.com/LastSuccessfulExecution
    status: "True"
    reason: ExecutionCompleted
    message: "2026-01-01T00:05:00Z"
    lastTransitionTime: "2026-01-01T00:05:01Z"
---
"#;
    let docs = load_documents(text).unwrap();
    assert_eq!(docs.len(), 1);
    let loaded = docs.into_iter().next().unwrap().unwrap();
    assert_eq!(loaded.resource.key(), "ns/m");
    let unknown: Vec<String> = loaded
        .unknown_fields
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(
        unknown,
        vec![
            "spec.transform.valueColum: unknown field, ignored: did you mean spec.transform.valueColumn?"
        ]
    );
    assert!(loaded.resource.spec.validate().is_ok());
    assert_eq!(
        loaded
            .resource
            .status
            .as_ref()
            .and_then(|s| s.legacy_watermark()),
        Ticks::parse("2026-01-01T00:05:00Z").ok()
    );
}

#[test]
fn wrong_kind_and_wrong_types_name_the_document_and_path() {
    let text = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: m}\nspec: {maxRows: many}\n";
    let docs = load_documents(text).unwrap();
    let errors: Vec<String> = docs
        .into_iter()
        .map(|d| d.unwrap_err().to_string())
        .collect();
    assert!(
        errors[0].starts_with(
            "document 1: apiVersion \"v1\" kind \"ConfigMap\" is not a MetricsExporter"
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("document 2 (default/m): spec.maxRows: invalid type"),
        "{}",
        errors[1]
    );
}

#[test]
fn json_and_lists_are_accepted() {
    let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"adx-mon.azure.com/v1","kind":"MetricsExporter","metadata":{"name":"a"},"spec":{"database":"d","body":"b","interval":"1m","transform":{"valueColumn":"v","timestampColumn":"t","defaultMetricName":"m"}}}]}"#;
    let docs = load_documents(text).unwrap();
    assert_eq!(docs.len(), 1);
    assert!(docs[0].as_ref().unwrap().resource.spec.validate().is_ok());
}

#[test]
fn broken_yaml_is_a_syntax_error() {
    let err = load_documents("spec: [unclosed\n  a: b").unwrap_err();
    assert!(matches!(err, CrdError::Syntax(_)), "{err}");
}

#[test]
fn crd_has_required_fields_patterns_and_columns() {
    let yaml = crd_yaml().unwrap();
    for needle in [
        "shortNames:",
        "- mexp",
        "additionalPrinterColumns:",
        "name: Watermark",
        "duration(self) >= duration('1s') && duration(self) <= duration('8784h')",
        "format: date-time",
        "subresources:",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle}:\n{yaml}");
    }
}

/// A valid resource file with `body` (YAML block scalar) and `transform` (flow mapping) as given.
fn resource_yaml(name: &str, body: &str, transform: &str) -> String {
    let body: String = body.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec:\n  database: db\n  interval: 5m\n  body: |\n{body}  transform: {transform}\n"
    )
}

const TRANSFORM: &str = "{valueColumns: [v], timestampColumn: ts, defaultMetricName: m}";
const WINDOWED: &str = "T | where ts between (_startTime .. _endTime)";

#[test]
fn a_body_that_never_uses_the_window_is_warned_textually() {
    let r = check_text("f.yaml", &resource_yaml("a", WINDOWED, TRANSFORM), None);
    assert_eq!(
        (r.ok, r.warnings, r.problems),
        (vec!["ok ns/a".to_owned()], vec![], vec![])
    );

    // In a comment or a string literal it does not count.
    let body =
        "T // between (_startTime .. _endTime)\n| where s == '_startTime' and t == @\"_endTime\"";
    let r = check_text("f.yaml", &resource_yaml("a", body, TRANSFORM), None);
    assert_eq!(r.ok, ["ok ns/a"], "a warning, not a problem");
    assert_eq!(
        r.warnings,
        [
            "f.yaml: ns/a: warning: spec.body: never uses _startTime or _endTime, so every window queries the whole table: each window exports every row again, which receivers refuse as duplicate or out-of-order samples (dead letters): filter on the window, e.g. `| where Timestamp between (_startTime .. _endTime)` (a textual check: comments and string literals are ignored, KQL is not parsed)"
        ]
    );

    let r = check_text(
        "f.yaml",
        &resource_yaml("a", "T | where ts >= _startTime", TRANSFORM),
        None,
    );
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].starts_with("f.yaml: ns/a: warning: spec.body: uses _startTime but never _endTime, so every window also returns the rows after its end"),
        "{}",
        r.warnings[0]
    );
    let r = check_text(
        "f.yaml",
        &resource_yaml("a", "T | where ts <= _endTime", TRANSFORM),
        None,
    );
    assert!(
        r.warnings[0].contains("uses _endTime but never _startTime"),
        "{:?}",
        r.warnings
    );
}

#[test]
fn the_body_scan_skips_comments_strings_numbers_and_members() {
    let names = kql::scan(
        "let _a = 1;\n\
         T | where x == _b // _c\n\
         | extend s = \"_d\\\"_e\", v = @'_f''_g', m = ```\n_h\n```, n = Props._i, r = 5m, q = 1.5_j\n\
         | where ts between (_startTime .. _endTime) and y == _k and _l != 1\n\
         | summarize _m = count() by _n\n\
         | invoke f(_o: string)",
    );
    let expected: Vec<&str> = names.underscore_names().collect();
    assert_eq!(expected, ["_b", "_startTime", "_endTime", "_k", "_l", "_n"]);
    assert!(names.uses("_startTime") && names.uses("_endTime") && !names.uses("_c"));
}

#[test]
fn a_label_column_that_is_also_the_value_or_timestamp_column_is_warned() {
    let transform = "{valueColumns: [v, w], timestampColumn: ts, defaultMetricName: m, labelColumns: [host, w, ts]}";
    let r = check_text("f.yaml", &resource_yaml("a", WINDOWED, transform), None);
    assert_eq!(r.ok, ["ok ns/a"], "run accepts it, so a warning");
    assert_eq!(
        r.warnings,
        [
            "f.yaml: ns/a: warning: spec.transform.labelColumns: \"w\" is also a value column, so every distinct value becomes its own series with one sample (`run` accepts it: the label holds the value as text, and the series count grows with every new value): remove \"w\" from labelColumns",
            "f.yaml: ns/a: warning: spec.transform.labelColumns: \"ts\" is also the timestampColumn, so every timestamp becomes its own series with one sample (`run` accepts it: the label holds the time as text, and every window starts new series): remove \"ts\" from labelColumns",
        ]
    );
}

#[test]
fn the_same_resource_twice_is_a_problem_naming_both_places() {
    let a = resource_yaml("a", WINDOWED, TRANSFORM);
    let mut checker = Checker::new(None);
    let first = checker.check_text("one.yaml", &a);
    assert_eq!(first.ok, ["ok ns/a"]);
    let second = checker.check_text(
        "two.yaml",
        &format!("{}---\n{a}", resource_yaml("b", WINDOWED, TRANSFORM)),
    );
    assert_eq!(second.ok, ["ok ns/b"]);
    assert_eq!(
        second.problems,
        [
            "two.yaml: ns/a: metadata.name: ns/a is also defined in one.yaml (document 1): `run --manifests` runs only the first by file name and reports the others as invalid: rename one (metadata.name or metadata.namespace) or delete the copy"
        ]
    );
    // Twice in one file.
    let r = check_text("one.yaml", &format!("{a}---\n{a}"), None);
    assert_eq!(r.ok, ["ok ns/a"]);
    assert_eq!(r.problems.len(), 1);
    assert!(
        r.problems[0].starts_with(
            "one.yaml: ns/a: metadata.name: ns/a is also defined in one.yaml (document 1): "
        ),
        "{:?}",
        r.problems
    );
}

#[test]
fn label_variables_of_the_body_are_checked_against_the_cluster_labels() {
    let body = "T | where ts between (_startTime .. _endTime)\n| where Region == _region and Env == _environment and Class == _data_classification\n| extend _mine = 1 | where _mine == 1";
    let yaml = resource_yaml("a", body, TRANSFORM);
    let r = check_text("f.yaml", &yaml, None);
    assert_eq!(r.ok, ["ok ns/a"]);
    assert_eq!(
        r.warnings,
        [
            "f.yaml: ns/a: note: spec.body: uses _region, _environment, _data_classification, which only cluster labels define (region=…, environment=…, data_classification=…): on an instance without them the query fails with \"column not found\" (unless they are columns of the table or defined in the body); give check --cluster-labels to verify (a textual check: comments and string literals are ignored, KQL is not parsed)"
        ]
    );
    // Label keys become identifiers as the query prefix makes them (`data-classification` →
    // `_data_classification`); `Environment` gives `_Environment`, not `_environment`.
    let labels = BTreeMap::from([
        ("region".to_owned(), "eastus".to_owned()),
        ("data-classification".to_owned(), "x".to_owned()),
        ("Environment".to_owned(), "prod".to_owned()),
    ]);
    let r = check_text("f.yaml", &yaml, Some(&labels));
    assert_eq!(r.ok, ["ok ns/a: would run here (no criteria)"]);
    assert_eq!(
        r.warnings,
        [
            "f.yaml: ns/a: warning: spec.body: uses _environment, which these --cluster-labels do not define (the query prefix defines _startTime, _endTime, _Environment, _data_classification, _region): unless it is a column of the table or defined in the body, the query fails with \"column not found\": add the cluster label environment=… or fix the name (case-sensitive) (a textual check: comments and string literals are ignored, KQL is not parsed)"
        ]
    );
}

#[test]
fn yaml_booleans_and_numbers_in_text_fields_say_how_to_quote_them() {
    let yaml = resource_yaml(
        "a",
        WINDOWED,
        "{valueColumns: [Cpu, N], timestampColumn: ts, defaultMetricName: 5, labelColumns: [off, true]}",
    );
    let r = check_text("f.yaml", &yaml, None);
    assert_eq!(
        r.problems,
        [
            "f.yaml: document 1 (ns/a): spec.transform.defaultMetricName: 5 was read as a number, not as text: quote it: \"5\"",
            "f.yaml: document 1 (ns/a): spec.transform.labelColumns[0]: off was read as the boolean false, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"off\"",
            "f.yaml: document 1 (ns/a): spec.transform.labelColumns[1]: true was read as a boolean, not as text: quote it: \"true\"",
            "f.yaml: document 1 (ns/a): spec.transform.valueColumns[1]: N was read as the boolean false, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"N\"",
        ]
    );
    // The resource is named as written, even when its name is the boolean.
    let r = check_text("f.yaml", &resource_yaml("no", WINDOWED, TRANSFORM), None);
    assert_eq!(
        r.problems,
        [
            "f.yaml: document 1 (ns/no): metadata.name: no was read as the boolean false, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"no\""
        ]
    );
    // JSON has no such spellings, but a boolean is still not text.
    let json = r#"{"apiVersion":"adx-mon.azure.com/v1","kind":"MetricsExporter","metadata":{"name":"j"},"spec":{"database":"d","body":"b","interval":"1m","transform":{"valueColumns":[false],"timestampColumn":"t","defaultMetricName":"m"}}}"#;
    assert_eq!(
        check_text("f.json", json, None).problems,
        [
            "f.json: document 1 (default/j): spec.transform.valueColumns[0]: false was read as a boolean, not as text: quote it: \"false\""
        ]
    );
}

#[test]
fn unknown_fields_name_the_closest_known_field() {
    let yaml = resource_yaml(
        "a",
        WINDOWED,
        "{valueColumns: [v], timestampColumn: ts, defaultMetricName: m, LabelColumns: [x]}",
    )
    .replace(
        "  interval: 5m\n",
        "  interval: 5m\n  ingestDelay: 1m\n  valueColumns: [v]\n  colour: red\n",
    );
    let r = check_text("f.yaml", &yaml, None);
    assert_eq!(
        r.warnings,
        [
            "f.yaml: ns/a: warning: spec.colour: unknown field, ignored (check the spelling)",
            "f.yaml: ns/a: warning: spec.ingestDelay: unknown field, ignored: did you mean spec.ingestionDelay?",
            "f.yaml: ns/a: warning: spec.transform.LabelColumns: unknown field, ignored: did you mean spec.transform.labelColumns?",
            "f.yaml: ns/a: warning: spec.valueColumns: unknown field, ignored: did you mean spec.transform.valueColumns?",
        ]
    );
}

#[test]
fn backfill_and_suspend_validate_every_field() {
    let mut s = spec();
    s.suspend = Some(true);
    s.backfill = Some(BackfillSpec {
        request_id: Some("fix-1".into()),
        start_time: Some("2026-03-01T00:00:00Z".into()),
        end_time: Some("2026-03-02T00:00:00Z".into()),
        max_in_flight: None,
    });
    let v = s.validate().unwrap();
    assert!(v.suspend);
    let b = v.backfill.unwrap();
    assert_eq!(
        (b.request_id.as_str(), b.start, b.end, b.max_in_flight),
        (
            "fix-1",
            Ticks::parse("2026-03-01T00:00:00Z").unwrap(),
            Ticks::parse("2026-03-02T00:00:00Z").unwrap(),
            1
        )
    );
    s.backfill = Some(BackfillSpec {
        request_id: Some(" ".into()),
        start_time: Some("2026-03-02T00:00:00Z".into()),
        end_time: Some("2026-03-01T00:00:00Z".into()),
        max_in_flight: Some(0),
    });
    assert_eq!(
        problems(&s),
        [
            "spec.backfill.requestId: missing: name the backfill (a new value restarts it), e.g. fix-2026-03-01",
            "spec.backfill.endTime: 2026-03-01T00:00:00Z is not after startTime 2026-03-02T00:00:00Z: the range is [startTime, endTime)",
            "spec.backfill.maxInFlight: 0 queries never finish the backfill: use at least 1 (default 1)",
        ]
    );
    s.backfill = Some(BackfillSpec {
        request_id: Some("r".into()),
        start_time: Some("yesterday".into()),
        end_time: None,
        max_in_flight: Some(0),
    });
    assert_eq!(
        problems(&s),
        [
            "spec.backfill.startTime: \"yesterday\" is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z",
            "spec.backfill.endTime: missing: an RFC 3339 datetime, e.g. 2026-01-01T00:00:00Z",
            "spec.backfill.maxInFlight: 0 queries never finish the backfill: use at least 1 (default 1)",
        ]
    );
}
