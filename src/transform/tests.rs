//! The transform's rules, one test each (adx-mon's matrix first, then where we differ), and property
//! tests of the output invariants against a naive model.

use std::collections::BTreeMap;

use super::series::push_sort_key;
use super::*;
use crate::crd::TransformSpec;
use crate::crd::names::{sanitize_label_name, sanitize_metric_name};
use crate::prompb::{Label, METRIC_NAME_LABEL, Sample};
use crate::query::{Column, ColumnType, Value};
use crate::time::{Span, Ticks};

pub(super) const TS: &str = "2023-12-25T12:00:00Z";
pub(super) const TS_MS: i64 = 1_703_505_600_000;

pub(super) fn ts(s: &str) -> Value {
    Value::DateTime(Ticks::parse(s).unwrap())
}

pub(super) fn s(v: &str) -> Value {
    Value::String(v.into())
}

pub(super) fn table(columns: &[(&str, ColumnType)], rows: Vec<Vec<Value>>) -> Table {
    let columns = (columns.iter())
        .map(|(n, ty)| Column {
            name: (*n).into(),
            ty: ty.clone(),
        })
        .collect();
    let mut t = Table::new("PrimaryResult", columns);
    for r in rows {
        t.push_row(r);
    }
    t
}

pub(super) fn spec(values: &[&str], labels: &[&str]) -> TransformSpec {
    TransformSpec {
        value_columns: values.iter().map(|v| (*v).into()).collect(),
        timestamp_column: Some("timestamp".into()),
        label_columns: labels.iter().map(|v| (*v).into()).collect(),
        ..TransformSpec::default()
    }
}

pub(super) fn with_default(mut spec: TransformSpec, name: &str) -> TransformSpec {
    spec.default_metric_name = Some(name.into());
    spec
}

pub(super) fn with_name_column(mut spec: TransformSpec, column: &str) -> TransformSpec {
    spec.metric_name_column = Some(column.into());
    spec
}

/// The mapping `run` and `preview` build: the transform validated, then mapped with the
/// `--metric-name-prefix`; or the problems validation reports, as `check` prints them.
pub(super) fn mapping(spec: &TransformSpec, cli_prefix: &str) -> Result<Mapping, Vec<String>> {
    spec.validate()
        .map(|t| Mapping::new(&t, cli_prefix))
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

pub(super) fn run(t: &Table, spec: TransformSpec) -> Transformed {
    run_prefixed(t, spec, "")
}

/// Every test (examples and property tests) also checks that the encoded path writes exactly
/// prost's bytes of the request.
pub(super) fn run_prefixed(t: &Table, spec: TransformSpec, cli_prefix: &str) -> Transformed {
    let mapping = mapping(&spec, cli_prefix).unwrap();
    let out = transform(t, &mapping).unwrap();
    let encoded = transform_encoded(t, &mapping).unwrap();
    assert_eq!(encoded.stats, out.stats);
    assert_eq!(
        encoded.write_request,
        prost::Message::encode_to_vec(&out.request),
        "transform_encoded writes prost's bytes of transform's request"
    );
    out
}

/// Every sample as `(name, [(label, value)] without __name__, value, ms)`, in output order.
pub(super) type Flat = Vec<(String, Vec<(String, String)>, f64, i64)>;

pub(super) fn flat(t: &Transformed) -> Flat {
    let mut out = Vec::new();
    for ts in &t.request.timeseries {
        let labels: Vec<(String, String)> = (ts.labels.iter())
            .filter(|l| l.name != METRIC_NAME_LABEL)
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        for s in &ts.samples {
            out.push((
                ts.metric_name().to_owned(),
                labels.clone(),
                s.value,
                s.timestamp,
            ));
        }
    }
    out
}

fn one(name: &str, labels: &[(&str, &str)], value: f64, ms: i64) -> Flat {
    let labels = (labels.iter())
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    vec![(name.to_owned(), labels, value, ms)]
}

pub(super) fn skipped(t: &Transformed, reason: SkipReason) -> u64 {
    t.stats.skipped.get(&reason).copied().unwrap_or(0)
}

fn basic_table(value: Value) -> Table {
    table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
        ],
        vec![vec![ts(TS), value]],
    )
}

// ---- adx-mon's matrix, cases where the rules agree ----

#[test]
fn adxmon_with_metric_name_column_and_labels_and_timestamp() {
    // TestTransformWithMetricNameColumn + WithLabels + WithTimestamp + MaterializedKustoRow
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("metric_name", ColumnType::String),
            ("value", ColumnType::Real),
            ("host", ColumnType::String),
            ("service", ColumnType::String),
        ],
        vec![vec![
            ts(TS),
            s("cpu_usage"),
            Value::Real(85.5),
            s("server1"),
            s("web"),
        ]],
    );
    let out = run(
        &t,
        with_name_column(spec(&["value"], &["host", "service"]), "metric_name"),
    );
    assert_eq!(
        flat(&out),
        one(
            "cpu_usage",
            &[("host", "server1"), ("service", "web")],
            85.5,
            TS_MS
        )
    );
    assert_eq!(out.stats.samples, 1);
    assert!(out.stats.skipped.is_empty());
}

#[test]
fn adxmon_value_types_real_int_long_numeric_string() {
    // TestTransformValueTypes / TestValidateNativeValueTypes (float32 and Go int have no Kusto type).
    for (v, want) in [
        (Value::Real(42.5), 42.5),
        (Value::Int(42), 42.0),
        (Value::Long(42), 42.0),
        (s("42.5"), 42.5),
    ] {
        let out = run(
            &basic_table(v.clone()),
            with_default(spec(&["value"], &[]), "m"),
        );
        assert_eq!(flat(&out), one("m", &[], want, TS_MS), "{v:?}");
    }
}

#[test]
fn adxmon_timestamp_types_datetime_and_strings() {
    // TestTransformTimestampTypes: time.Time, RFC3339, RFC3339Nano and "2006-01-02 15:04:05" as UTC.
    let cells = [
        ts(TS),
        s("2023-12-25T12:00:00Z"),
        s("2023-12-25T12:00:00.000000000Z"),
        s("2023-12-25 12:00:00"),
    ];
    for cell in cells {
        let ty = match cell {
            Value::DateTime(_) => ColumnType::DateTime,
            _ => ColumnType::String,
        };
        let t = table(
            &[("timestamp", ty), ("value", ColumnType::Real)],
            vec![vec![cell.clone(), Value::Real(1.0)]],
        );
        let out = run(&t, with_default(spec(&["value"], &[]), "m"));
        assert_eq!(flat(&out), one("m", &[], 1.0, TS_MS), "{cell:?}");
    }
}

#[test]
fn adxmon_missing_value_column_is_an_error_naming_it_and_the_columns() {
    let err = transform(
        &basic_table(Value::Real(1.0)),
        &mapping(&with_default(spec(&["MissingColumn"], &[]), "m"), "").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransformError::MissingColumn {
            column: "MissingColumn".into(),
            role: "valueColumns",
            available: vec!["timestamp".into(), "value".into()],
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"MissingColumn\"") && msg.contains("[timestamp, value]"),
        "{msg}"
    );
}

#[test]
fn adxmon_missing_metric_name_column_is_an_error() {
    let err = transform(
        &basic_table(Value::Real(1.0)),
        &mapping(&with_name_column(spec(&["value"], &[]), "name"), "").unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransformError::MissingColumn {
                role: "metricNameColumn",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn adxmon_config_errors_no_metric_name_and_no_value_columns() {
    assert_eq!(
        mapping(&spec(&["value"], &[]), ""),
        Err(vec![
            "spec.transform: no metric name: set metricNameColumn, defaultMetricName or metricNames".to_owned()
        ])
    );
    assert_eq!(
        mapping(&with_default(spec(&[], &[]), "m"), ""),
        Err(vec![
            "spec.transform: set valueColumns (or valueColumn)".to_owned()
        ])
    );
}

#[test]
fn adxmon_empty_result_is_valid() {
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
        ],
        vec![],
    );
    let out = run(&t, with_default(spec(&["value"], &[]), "m"));
    assert!(out.request.timeseries.is_empty());
    assert_eq!(out.stats, TransformStats::default());
}

#[test]
fn adxmon_multiple_rows_keep_every_sample() {
    // TestTransformMultipleRows: three rows → three samples.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
            ("host", ColumnType::String),
        ],
        vec![
            vec![ts(TS), Value::Real(1.0), s("a")],
            vec![ts(TS), Value::Real(2.0), s("b")],
            vec![ts("2023-12-25T12:01:00Z"), Value::Real(3.0), s("a")],
        ],
    );
    let out = run(&t, with_default(spec(&["value"], &["host"]), "m"));
    let want: Flat = [
        one("m", &[("host", "a")], 1.0, TS_MS),
        one("m", &[("host", "a")], 3.0, TS_MS + 60_000),
        one("m", &[("host", "b")], 2.0, TS_MS),
    ]
    .concat();
    assert_eq!(flat(&out), want);
}

#[test]
fn adxmon_multi_value_columns_with_prefix_and_default_name() {
    // TestTransformMultiValueColumns (lower-case column names, where normalisation is a no-op).
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("metric_name", ColumnType::String),
            ("count", ColumnType::Long),
            ("error_rate", ColumnType::Real),
            ("LocationId", ColumnType::String),
        ],
        vec![vec![
            ts(TS),
            s("service_metrics"),
            Value::Long(7),
            Value::Real(0.25),
            s("dc1"),
        ]],
    );
    let mut sp = with_name_column(
        spec(&["count", "error_rate"], &["LocationId"]),
        "metric_name",
    );
    let out = run(&t, sp.clone());
    let want: Flat = [
        one(
            "service_metrics_count",
            &[("LocationId", "dc1")],
            7.0,
            TS_MS,
        ),
        one(
            "service_metrics_error_rate",
            &[("LocationId", "dc1")],
            0.25,
            TS_MS,
        ),
    ]
    .concat();
    assert_eq!(flat(&out), want);

    sp.metric_name_prefix = Some("teama".into());
    let names: Vec<String> = flat(&run(&t, sp)).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "teama_service_metrics_count",
            "teama_service_metrics_error_rate"
        ]
    );

    let out = run(
        &t,
        with_default(spec(&["count", "error_rate"], &[]), "default_metric"),
    );
    let names: Vec<String> = flat(&out).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["default_metric_count", "default_metric_error_rate"]);
}

#[test]
fn adxmon_write_request_labels_sorted_with_name_and_millisecond_timestamp() {
    // TestToWriteRequest: `__name__`, host, region, service; ts 1703505600000.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
            ("service", ColumnType::String),
            ("host", ColumnType::String),
            ("region", ColumnType::String),
        ],
        vec![vec![ts(TS), Value::Real(1.0), s("s"), s("h"), s("r")]],
    );
    let out = run(
        &t,
        with_default(spec(&["value"], &["service", "host", "region"]), "m"),
    );
    let names: Vec<&str> = out.request.timeseries[0]
        .labels
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["__name__", "host", "region", "service"]);
    assert_eq!(
        out.request.timeseries[0].samples,
        [Sample {
            value: 1.0,
            timestamp: TS_MS
        }]
    );
}

// ---- one test per rule where we differ from adx-mon ----

#[test]
fn single_value_column_gets_no_suffix() {
    // adx-mon: `test_metric_value`.
    let out = run(
        &basic_table(Value::Real(42.0)),
        with_default(spec(&["value"], &[]), "test_metric"),
    );
    assert_eq!(flat(&out), one("test_metric", &[], 42.0, TS_MS));
}

#[test]
fn names_are_sanitised_per_char_with_case_kept_and_prefixes_joined() {
    // adx-mon lower-cases, splits camel case and collapses `_`; we only replace invalid chars.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("name", ColumnType::String),
            ("Numerator", ColumnType::Long),
            ("Avg-Latency", ColumnType::Real),
        ],
        vec![
            vec![
                ts(TS),
                s("CustomerSuccess.Rate"),
                Value::Long(1),
                Value::Real(2.0),
            ],
            vec![ts(TS), s("métrïc"), Value::Long(3), Value::Null],
        ],
    );
    let mut sp = with_name_column(spec(&["Numerator", "Avg-Latency"], &[]), "name");
    sp.metric_name_prefix = Some("Team.B".into());
    let names: Vec<String> = flat(&run_prefixed(&t, sp, "team-a"))
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        names,
        [
            "team_a_Team_B_CustomerSuccess_Rate_Avg_Latency",
            "team_a_Team_B_CustomerSuccess_Rate_Numerator",
            "team_a_Team_B_m_tr_c_Numerator",
        ]
    );
}

#[test]
fn leading_digit_gets_an_underscore_only_at_the_start_of_the_name() {
    // adx-mon's Trim("_") quirk produces an invalid `5xx`; we produce `_5xx`.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("name", ColumnType::String),
            ("value", ColumnType::Real),
        ],
        vec![vec![ts(TS), s("5xx"), Value::Real(1.0)]],
    );
    let out = run(&t, with_name_column(spec(&["value"], &[]), "name"));
    assert_eq!(flat(&out)[0].0, "_5xx");
    let mut sp = with_name_column(spec(&["value"], &[]), "name");
    sp.metric_name_prefix = Some("api".into());
    assert_eq!(flat(&run(&t, sp))[0].0, "api_5xx");
    let sp = with_name_column(spec(&["value"], &[]), "name");
    assert_eq!(flat(&run_prefixed(&t, sp, "9team"))[0].0, "_9team_5xx");
    // A prefix with no letter or digit (`---`) is refused, as adx-mon refuses it.
    let mut sp = with_default(spec(&["value"], &[]), "m");
    sp.metric_name_prefix = Some("---".into());
    assert_eq!(
        mapping(&sp, "").unwrap_err(),
        [
            "spec.transform.metricNamePrefix: \"---\" has no letter or digit, so every name would start with `_`s: use e.g. `app`"
        ]
    );
}

#[test]
fn label_names_are_sanitised() {
    assert_eq!(sanitize_label_name("LocationId"), "LocationId");
    assert_eq!(sanitize_label_name("Success Rate"), "Success_Rate");
    assert_eq!(sanitize_label_name("a:b.c-d"), "a_b_c_d");
    assert_eq!(sanitize_label_name("95th"), "_95th");
    assert_eq!(sanitize_label_name("latência"), "lat_ncia");
    assert_eq!(sanitize_metric_name("a:b.c"), "a:b_c");
    assert_eq!(sanitize_metric_name("1m"), "_1m");
}

#[test]
fn reserved_and_colliding_label_names_are_rejected_naming_both_columns() {
    // Validation's one label-name rule rejects them before a Mapping exists.
    let err = mapping(&with_default(spec(&["v"], &["__name__"]), "m"), "").unwrap_err();
    assert_eq!(
        err,
        [
            "spec.transform.labelColumns: \"__name__\" becomes label \"__name__\", and names starting with __ are reserved: rename the column in the query"
        ]
    );
    let err = mapping(&with_default(spec(&["v"], &["_.x"]), "m"), "").unwrap_err();
    assert_eq!(
        err,
        [
            "spec.transform.labelColumns: \"_.x\" becomes label \"__x\", and names starting with __ are reserved: rename the column in the query"
        ]
    );
    let err = mapping(
        &with_default(spec(&["v"], &["host", "a-b", "a.b"]), "m"),
        "",
    )
    .unwrap_err();
    assert_eq!(
        err,
        [
            "spec.transform.labelColumns: \"a-b\" and \"a.b\" both become label \"a_b\": rename one in the query"
        ]
    );
    let msg = &err[0];
    assert!(
        msg.contains("\"a-b\"") && msg.contains("\"a.b\"") && msg.contains("rename"),
        "{msg}"
    );
    let err = mapping(&with_default(spec(&["a-b", "a_b"], &[]), "m"), "").unwrap_err();
    assert_eq!(
        err,
        [
            "spec.transform.valueColumns: \"a-b\" and \"a_b\" both give the metric name suffix \"a_b\": rename one in the query (e.g. `project-rename`) or in metricNames"
        ]
    );
}

#[test]
fn any_column_type_is_a_label_with_a_stable_text_form() {
    // adx-mon fails the whole run on a non-string label.
    let cols = [
        ("timestamp", ColumnType::DateTime),
        ("value", ColumnType::Real),
        ("b", ColumnType::Bool),
        ("i", ColumnType::Int),
        ("l", ColumnType::Long),
        ("r", ColumnType::Real),
        ("d", ColumnType::Decimal),
        ("dt", ColumnType::DateTime),
        ("sp", ColumnType::TimeSpan),
        ("g", ColumnType::Guid),
        ("dy", ColumnType::Dynamic),
        ("nan", ColumnType::Real),
        ("big", ColumnType::Real),
    ];
    let row = vec![
        ts(TS),
        Value::Real(1.0),
        Value::Bool(true),
        Value::Int(-7),
        Value::Long(9_007_199_254_740_993),
        Value::Real(0.1),
        Value::Decimal("1974.500".into()),
        ts("2022-01-01T10:05:00.1200000Z"),
        Value::TimeSpan(Span::parse_timespan("1.02:03:04.5").unwrap()),
        Value::Guid("74be27de-1e4e-49d9-b579-fe0b331d3642".into()),
        Value::Dynamic(r#"{"a":[1,"x"]}"#.into()),
        Value::Real(f64::NAN),
        Value::Real(1e21),
    ];
    let names: Vec<&str> = cols[2..].iter().map(|c| c.0).collect();
    let out = run(
        &table(&cols, vec![row]),
        with_default(spec(&["value"], &names), "m"),
    );
    let want = [
        ("b", "true"),
        ("big", "1e21"),
        ("d", "1974.500"),
        ("dt", "2022-01-01T10:05:00.12Z"),
        ("dy", r#"{"a":[1,"x"]}"#),
        ("g", "74be27de-1e4e-49d9-b579-fe0b331d3642"),
        ("i", "-7"),
        ("l", "9007199254740993"),
        ("nan", "NaN"),
        ("r", "0.1"),
        ("sp", "1.02:03:04.5000000"),
    ];
    let sp_text = Span::parse_timespan("1.02:03:04.5").unwrap().kusto_text();
    let want: Vec<(&str, String)> = (want.iter())
        .map(|(n, v)| {
            (
                *n,
                if *n == "sp" {
                    sp_text.clone()
                } else {
                    (*v).to_owned()
                },
            )
        })
        .collect();
    let flat = flat(&out);
    let got: Vec<(&str, String)> = (flat[0].1.iter())
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn null_and_empty_labels_are_omitted() {
    // adx-mon fails the run on a null label.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
            ("host", ColumnType::String),
            ("n", ColumnType::Long),
        ],
        vec![vec![ts(TS), Value::Real(1.0), s(""), Value::Null]],
    );
    let out = run(&t, with_default(spec(&["value"], &["host", "n"]), "m"));
    assert_eq!(flat(&out), one("m", &[], 1.0, TS_MS));
}

#[test]
fn null_and_non_numeric_values_skip_the_sample_and_are_counted() {
    // adx-mon fails the whole window.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("a", ColumnType::Dynamic),
            ("b", ColumnType::String),
        ],
        vec![
            vec![ts(TS), Value::Null, s("abc")],
            vec![ts(TS), Value::Dynamic("[1]".into()), s("")],
            vec![ts(TS), Value::Dynamic("7".into()), s("1e3")],
        ],
    );
    let out = run(&t, with_default(spec(&["a", "b"], &[]), "m"));
    assert_eq!(
        flat(&out),
        [one("m_a", &[], 7.0, TS_MS), one("m_b", &[], 1000.0, TS_MS)].concat()
    );
    assert_eq!(skipped(&out, SkipReason::NullValue), 2);
    assert_eq!(skipped(&out, SkipReason::NonNumericValue), 2);
    assert_eq!(out.stats.samples + out.stats.skipped_total(), 3 * 2);
}

#[test]
fn decimal_bool_and_special_reals_are_values() {
    // adx-mon rejects decimal and bool.
    for (v, want) in [
        (Value::Decimal("1974.25".into()), 1974.25),
        (Value::Bool(true), 1.0),
        (Value::Bool(false), 0.0),
        (Value::Real(f64::INFINITY), f64::INFINITY),
        (s("-Inf"), f64::NEG_INFINITY),
    ] {
        let out = run(
            &basic_table(v.clone()),
            with_default(spec(&["value"], &[]), "m"),
        );
        assert_eq!(flat(&out), one("m", &[], want, TS_MS), "{v:?}");
    }
    let out = run(
        &basic_table(Value::Real(f64::NAN)),
        with_default(spec(&["value"], &[]), "m"),
    );
    assert!(out.request.timeseries[0].samples[0].value.is_nan());
}

#[test]
fn null_timestamp_and_missing_name_skip_the_row_and_are_counted() {
    // adx-mon fails the window on a null timestamp, a null or an empty name.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("name", ColumnType::String),
            ("a", ColumnType::Real),
            ("b", ColumnType::Real),
        ],
        vec![
            vec![Value::Null, s("x"), Value::Real(1.0), Value::Real(2.0)],
            vec![ts(TS), s(""), Value::Real(3.0), Value::Real(4.0)],
            vec![ts(TS), Value::Null, Value::Real(5.0), Value::Real(6.0)],
            vec![ts(TS), s("x"), Value::Real(7.0), Value::Null],
        ],
    );
    let out = run(&t, with_name_column(spec(&["a", "b"], &[]), "name"));
    assert_eq!(flat(&out), one("x_a", &[], 7.0, TS_MS));
    assert_eq!(skipped(&out, SkipReason::NullTimestamp), 2);
    assert_eq!(skipped(&out, SkipReason::NoMetricName), 4);
    assert_eq!(skipped(&out, SkipReason::NullValue), 1);
    // With a default, a null or empty name falls back to it.
    let out = run(
        &t,
        with_default(with_name_column(spec(&["a", "b"], &[]), "name"), "dflt"),
    );
    let names: Vec<String> = flat(&out).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["dflt_a", "dflt_b", "x_a"]);
    assert_eq!(
        flat(&out)[0].2,
        5.0,
        "the later row wins for the duplicate dflt_a"
    );
    assert_eq!(skipped(&out, SkipReason::Duplicate), 2);
}

#[test]
fn unparsable_string_timestamp_skips_the_row() {
    let t = table(
        &[
            ("timestamp", ColumnType::String),
            ("value", ColumnType::Real),
        ],
        vec![
            vec![s("yesterday"), Value::Real(1.0)],
            vec![s(TS), Value::Real(2.0)],
        ],
    );
    let out = run(&t, with_default(spec(&["value"], &[]), "m"));
    assert_eq!(flat(&out), one("m", &[], 2.0, TS_MS));
    assert_eq!(skipped(&out, SkipReason::BadTimestamp), 1);
}

#[test]
fn timestamp_column_of_another_type_is_a_schema_error() {
    let t = table(
        &[("timestamp", ColumnType::Long), ("value", ColumnType::Real)],
        vec![],
    );
    let err = transform(
        &t,
        &mapping(&with_default(spec(&["value"], &[]), "m"), "").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransformError::TimestampColumnType {
            column: "timestamp".into(),
            found: "long".into()
        }
    );
}

#[test]
fn missing_label_column_is_an_error() {
    // adx-mon silently drops it.
    let err = transform(
        &basic_table(Value::Real(1.0)),
        &mapping(&with_default(spec(&["value"], &["host"]), "m"), "").unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransformError::MissingColumn {
                role: "labelColumns",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn duplicates_keep_the_last_row_and_samples_are_sorted_by_time() {
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
        ],
        vec![
            vec![ts("2023-12-25T12:00:01Z"), Value::Real(1.0)],
            vec![ts("2023-12-25T12:00:00.0001Z"), Value::Real(2.0)],
            // same millisecond as the row above (100 µs vs 900 µs, floored)
            vec![ts("2023-12-25T12:00:00.0009Z"), Value::Real(3.0)],
            vec![ts("2023-12-25T12:00:01Z"), Value::Real(4.0)],
        ],
    );
    let out = run(&t, with_default(spec(&["value"], &[]), "m"));
    assert_eq!(
        out.request.timeseries[0].samples,
        [
            Sample {
                value: 3.0,
                timestamp: TS_MS
            },
            Sample {
                value: 4.0,
                timestamp: TS_MS + 1000
            }
        ]
    );
    assert_eq!(skipped(&out, SkipReason::Duplicate), 2);
}

#[test]
fn upper_case_labels_sort_before_the_name_label() {
    // adx-mon always puts `__name__` first, which remote write rejects for `LocationId`.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("value", ColumnType::Real),
            ("zone", ColumnType::String),
            ("LocationId", ColumnType::String),
        ],
        vec![vec![ts(TS), Value::Real(1.0), s("z"), s("dc")]],
    );
    let out = run(
        &t,
        with_default(spec(&["value"], &["zone", "LocationId"]), "m"),
    );
    let names: Vec<&str> = out.request.timeseries[0]
        .labels
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["LocationId", "__name__", "zone"]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn value_cell() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<f64>().prop_map(Value::Real),
            (-5i64..5).prop_map(Value::Long),
            any::<bool>().prop_map(Value::Bool),
            prop::sample::select(vec!["1.5", "x", "", "NaN", "-2"]).prop_map(s),
        ]
    }

    fn row() -> impl Strategy<Value = Vec<Value>> {
        (
            prop::option::weighted(0.9, (0i64..3, 0i64..3)),
            prop::sample::select(vec!["cpu", "Mem.Used", "9x", "", "é"]),
            any::<bool>(),
            prop::sample::select(vec!["", "h1", "h\"2"]),
            prop::option::of(0i64..2),
            value_cell(),
            value_cell(),
        )
            .prop_map(|(t, name, name_null, host, n, v1, v2)| {
                vec![
                    t.map_or(Value::Null, |(min, ms)| {
                        Value::DateTime(Ticks(
                            Ticks::parse(TS).unwrap().0 + min * 60 * 10_000_000 + ms * 10_000 + 3,
                        ))
                    }),
                    if name_null { Value::Null } else { s(name) },
                    s(host),
                    n.map_or(Value::Null, Value::Long),
                    v1,
                    v2,
                ]
            })
    }

    fn columns() -> Vec<(&'static str, ColumnType)> {
        vec![
            ("timestamp", ColumnType::DateTime),
            ("name", ColumnType::String),
            ("host", ColumnType::String),
            ("n", ColumnType::Long),
            ("v1", ColumnType::Dynamic),
            ("v-2", ColumnType::Dynamic),
        ]
    }

    /// The rules restated naively: whole-string sanitising, a map where later rows overwrite.
    fn model(
        t: &Table,
        sp: &TransformSpec,
        cli_prefix: Option<&str>,
    ) -> BTreeMap<(Vec<Label>, i64), u64> {
        let mut out = BTreeMap::new();
        for row in t.rows() {
            let Value::DateTime(time) = &row[0] else {
                continue;
            };
            let base = match &row[1] {
                // A name with no letter or digit skips the row (`bad_metric_name`).
                Value::String(n)
                    if !n.is_empty() && !n.bytes().any(|b| b.is_ascii_alphanumeric()) =>
                {
                    continue;
                }
                Value::String(n) if !n.is_empty() => n.to_string(),
                _ => match &sp.default_metric_name {
                    Some(d) => d.clone(),
                    None => continue,
                },
            };
            let mut labels = Vec::new();
            if let Value::String(h) = &row[2]
                && !h.is_empty()
            {
                labels.push(Label::new("host", h.to_string()));
            }
            if let Value::Long(n) = &row[3] {
                labels.push(Label::new("n", n.to_string()));
            }
            for (i, col) in sp.value_columns.iter().enumerate() {
                let v = match &row[4 + i] {
                    Value::Real(v) => *v,
                    Value::Long(v) => *v as f64,
                    Value::Bool(b) => f64::from(u8::from(*b)),
                    Value::String(x) => match x.parse::<f64>() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                let mut parts: Vec<String> = cli_prefix.iter().map(|p| p.to_string()).collect();
                parts.push(base.clone());
                if sp.value_columns.len() > 1 {
                    parts.push(col.clone());
                }
                let mut l = labels.clone();
                l.push(Label::new(
                    METRIC_NAME_LABEL,
                    sanitize_metric_name(&parts.join("_")),
                ));
                l.sort();
                out.insert((l, time.unix_millis()), v.to_bits());
            }
        }
        out
    }

    fn valid(name: &str, extra: char) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == extra)
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == extra)
    }

    proptest! {
        #[test]
        fn sort_keys_order_label_sets_like_vec_label(
            a in prop::collection::vec(("[a\\x00b]{0,3}", "[a\\x00\\x01b\\xff]{0,3}"), 0..4),
            b in prop::collection::vec(("[a\\x00b]{0,3}", "[a\\x00\\x01b\\xff]{0,3}"), 0..4),
        ) {
            let labels = |v: Vec<(String, String)>| -> Vec<Label> {
                v.into_iter().map(|(n, v)| Label::new(n, v)).collect()
            };
            let (a, b) = (labels(a), labels(b));
            let key = |labels: &[Label]| {
                let mut out = Vec::new();
                for l in labels {
                    push_sort_key(l.name.as_bytes(), l.value.as_bytes(), &mut out);
                }
                out
            };
            let (ka, kb) = (key(&a), key(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }

        #[test]
        fn output_is_valid_sorted_accounted_and_matches_the_model(
            rows in prop::collection::vec(row(), 0..40),
            two_values in any::<bool>(),
            default in prop::option::of(Just("dflt".to_owned())),
            cli_prefix in prop::option::of(prop::sample::select(vec!["team", "7up"]).prop_map(String::from)),
        ) {
            let t = table(&columns(), rows);
            let values: &[&str] = if two_values { &["v1", "v-2"] } else { &["v1"] };
            let mut sp = with_name_column(spec(values, &["host", "n"]), "name");
            sp.default_metric_name = default;
            let out = run_prefixed(&t, sp.clone(), cli_prefix.as_deref().unwrap_or_default());

            let series = &out.request.timeseries;
            for ts in series {
                prop_assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "{:?}", ts.labels);
                prop_assert!(valid(ts.metric_name(), ':'), "{}", ts.metric_name());
                for l in ts.labels.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
                    prop_assert!(valid(&l.name, '_') && !l.name.starts_with("__") && !l.value.is_empty());
                }
                prop_assert!(!ts.samples.is_empty());
                prop_assert!(ts.samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
            }
            prop_assert!(series.windows(2).all(|w| w[0].labels < w[1].labels));
            prop_assert_eq!(out.stats.rows, t.row_count() as u64);
            prop_assert_eq!(out.stats.samples, out.request.sample_count() as u64);
            prop_assert_eq!(
                out.stats.samples + out.stats.skipped_total(),
                out.stats.rows * values.len() as u64
            );

            let got: BTreeMap<(Vec<Label>, i64), u64> = (series.iter())
                .flat_map(|ts| ts.samples.iter().map(|s| ((ts.labels.clone(), s.timestamp), s.value.to_bits())))
                .collect();
            prop_assert_eq!(got, model(&t, &sp, cli_prefix.as_deref()));
        }
    }
}
