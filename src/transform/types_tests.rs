//! Metric types, metadata, static labels and naming control (docs/design.md#metric-types,
//! docs/design.md#metric-names): one test per rule; every case also checks that the encoded path
//! writes prost's bytes (through `run`).

use super::tests::{TS, TS_MS, flat, mapping, run, run_prefixed, s, skipped, spec, table, ts};
use super::*;
use crate::crd::TransformSpec;
use crate::crd::names::adxmon_normalize;
use crate::exposition::to_text;
use crate::prompb::{MetricMetadata, MetricType};
use crate::query::{ColumnType, Value};

fn typed(kind: &str, values: &[&str], labels: &[&str]) -> TransformSpec {
    TransformSpec {
        type_: Some(kind.into()),
        default_metric_name: Some("requests".into()),
        ..spec(values, labels)
    }
}

fn counter_table(rows: Vec<(&str, Value)>) -> Table {
    table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("host", ColumnType::String),
            ("n", ColumnType::Real),
        ],
        rows.into_iter()
            .map(|(host, v)| vec![ts(TS), s(host), v])
            .collect(),
    )
}

#[test]
fn a_counter_is_named_total_once_and_skips_negative_nan_and_infinite_increases() {
    let t = counter_table(vec![
        ("a", Value::Real(3.0)),
        ("b", Value::Real(-1.0)),
        ("c", Value::Real(f64::NAN)),
        ("d", Value::Real(f64::INFINITY)),
        ("e", Value::Long(0)),
    ]);
    let out = run(&t, typed("counter", &["n"], &["host"]));
    let names: Vec<(String, f64)> = flat(&out).into_iter().map(|f| (f.0, f.2)).collect();
    assert_eq!(
        names,
        [
            ("requests_total".into(), 3.0),
            ("requests_total".into(), 0.0)
        ]
    );
    assert_eq!(skipped(&out, SkipReason::InvalidIncrease), 3);
    assert_eq!(
        out.request.metadata,
        [MetricMetadata {
            r#type: MetricType::Counter as i32,
            metric_family_name: "requests_total".into(),
            help: String::new(),
            unit: String::new(),
        }]
    );
    let mut sp = typed("counter", &["n"], &["host"]);
    sp.default_metric_name = Some("http_requests_total".into());
    assert_eq!(flat(&run(&t, sp))[0].0, "http_requests_total");
}

#[test]
fn description_and_unit_give_help_and_type_lines_and_a_plain_gauge_gives_none() {
    let t = counter_table(vec![("a", Value::Real(3.0))]);
    let mut sp = typed("counter", &["n"], &["host"]);
    sp.description = Some("Requests served.\nPer host.".into());
    sp.unit = Some("requests".into());
    assert_eq!(
        to_text(&run(&t, sp).request),
        format!(
            "# HELP requests_total Requests served.\\nPer host.\n# TYPE requests_total counter\nrequests_total{{host=\"a\"}} 3 {TS_MS}\n"
        )
    );
    let mut gauge = typed("gauge", &["n"], &["host"]);
    gauge.unit = Some("seconds".into());
    let out = run(&t, gauge.clone());
    assert_eq!(out.request.metadata[0].r#type, MetricType::Gauge as i32);
    assert_eq!(out.request.metadata[0].unit, "seconds");
    gauge.unit = None;
    let plain = run(&t, gauge);
    assert!(plain.request.metadata.is_empty());
    assert_eq!(
        to_text(&plain.request),
        format!("requests{{host=\"a\"}} 3 {TS_MS}\n")
    );
}

fn histogram_table(rows: Vec<(i64, &str, Value, Value, f64)>) -> Table {
    table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("route", ColumnType::String),
            ("le", ColumnType::Real),
            ("n", ColumnType::Long),
            ("total", ColumnType::Real),
        ],
        rows.into_iter()
            .map(|(sec, route, le, n, sum)| {
                let t = crate::time::Ticks::parse(TS).unwrap().0 + sec * 10_000_000;
                vec![
                    Value::DateTime(crate::time::Ticks(t)),
                    s(route),
                    le,
                    n,
                    Value::Real(sum),
                ]
            })
            .collect(),
    )
}

fn histogram_spec() -> TransformSpec {
    TransformSpec {
        bucket_column: Some("le".into()),
        sum_column: Some("total".into()),
        ..typed("histogram", &["n"], &["route"])
    }
}

#[test]
fn histogram_rows_become_cumulative_buckets_with_an_implied_inf_count_and_sum() {
    let t = histogram_table(vec![
        (0, "/a", Value::Real(0.5), Value::Long(2), 0.6),
        (0, "/a", Value::Real(0.1), Value::Long(1), 0.05),
        (0, "/a", Value::Real(2.0), Value::Long(4), 5.0),
        (0, "/b", Value::Real(f64::INFINITY), Value::Long(7), 70.0),
        (0, "/b", Value::Null, Value::Long(1), 1.0),
        (0, "/b", Value::Real(1.0), Value::Long(-1), 1.0),
    ]);
    let out = run(&t, histogram_spec());
    let lines = to_text(&out.request);
    assert_eq!(
        lines,
        format!(
            "# TYPE requests histogram\n\
             requests_bucket{{le=\"0.1\",route=\"/a\"}} 1 {TS_MS}\n\
             requests_bucket{{le=\"0.5\",route=\"/a\"}} 3 {TS_MS}\n\
             requests_bucket{{le=\"2\",route=\"/a\"}} 7 {TS_MS}\n\
             requests_bucket{{le=\"+Inf\",route=\"/a\"}} 7 {TS_MS}\n\
             requests_bucket{{le=\"+Inf\",route=\"/b\"}} 7 {TS_MS}\n\
             requests_count{{route=\"/a\"}} 7 {TS_MS}\n\
             requests_count{{route=\"/b\"}} 7 {TS_MS}\n\
             requests_sum{{route=\"/a\"}} 5.65 {TS_MS}\n\
             requests_sum{{route=\"/b\"}} 70 {TS_MS}\n"
        )
    );
    assert_eq!(skipped(&out, SkipReason::BadBucket), 1);
    assert_eq!(skipped(&out, SkipReason::InvalidIncrease), 1);
    assert_eq!(out.stats.samples, 9);
}

#[test]
fn a_histogram_series_has_every_bound_of_the_window_at_each_of_its_timestamps() {
    let t = histogram_table(vec![
        (0, "/a", Value::Real(1.0), Value::Long(1), 1.0),
        (60, "/a", Value::Real(5.0), Value::Long(2), 8.0),
    ]);
    let out = run(&t, histogram_spec());
    let buckets: Vec<(String, f64, i64)> = (flat(&out).into_iter())
        .filter(|f| f.0 == "requests_bucket")
        .map(|f| (f.1[0].1.clone(), f.2, f.3))
        .collect();
    let later = TS_MS + 60_000;
    assert_eq!(
        buckets,
        [
            ("+Inf".into(), 1.0, TS_MS),
            ("+Inf".into(), 2.0, later),
            ("1".into(), 1.0, TS_MS),
            ("1".into(), 0.0, later),
            ("5".into(), 1.0, TS_MS),
            ("5".into(), 2.0, later),
        ]
    );
}

#[test]
fn histogram_specs_are_checked_naming_the_field_and_the_fix() {
    let mut no_bucket = histogram_spec();
    no_bucket.bucket_column = None;
    let mut two_values = histogram_spec();
    two_values.value_columns.push("m".into());
    let mut le_label = histogram_spec();
    le_label.label_columns = vec!["le2".into(), "le".into()];
    le_label.bucket_column = Some("bound".into());
    let mut same = histogram_spec();
    same.sum_column = Some("route".into());
    let mut gauge_bucket = typed("gauge", &["n"], &[]);
    gauge_bucket.bucket_column = Some("le".into());
    gauge_bucket.temporality = Some("delta".into());
    let mut unknown = typed("summary", &["n"], &[]);
    unknown.temporality = Some("sometimes".into());
    let cases = [
        (
            no_bucket,
            vec![
                "spec.transform.bucketColumn: missing: a histogram needs the column holding each row's bucket upper bound (real, +inf allowed)",
            ],
        ),
        (
            two_values,
            vec![
                "spec.transform.valueColumns: a histogram has one value column, each row's count of observations in its bucket; got 2: make one resource per histogram",
            ],
        ),
        (
            le_label,
            vec![
                "spec.transform.labelColumns: \"le\" becomes label \"le\", which a histogram's bucket series carry: rename the column in the query",
            ],
        ),
        (
            same,
            vec![
                "spec.transform.sumColumn: \"route\" is also in labelColumns: each column has one role",
            ],
        ),
        (
            gauge_bucket,
            vec![
                "spec.transform.bucketColumn: applies to type: histogram only: remove it, or set type: histogram",
                "spec.transform.temporality: applies to type: counter or histogram only: remove it, or set the type",
            ],
        ),
        (
            unknown,
            vec![
                "spec.transform.type: \"summary\" is not a metric type: use gauge (the default), counter or histogram",
                "spec.transform.temporality: \"sometimes\" is not a temporality: use cumulative (the default) or delta",
            ],
        ),
    ];
    for (sp, want) in cases {
        assert_eq!(mapping(&sp, "").unwrap_err(), want);
    }
}

#[test]
fn static_labels_are_added_sorted_and_checked() {
    let t = counter_table(vec![("a", Value::Real(1.0))]);
    let mut sp = typed("gauge", &["n"], &["host"]);
    sp.static_labels = [("team", "core"), ("az", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let out = run(&t, sp.clone());
    let names: Vec<&str> = (out.request.timeseries[0].labels.iter())
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["__name__", "az", "host", "team"]);
    assert_eq!(
        to_text(&out.request),
        format!("requests{{az=\"1\",host=\"a\",team=\"core\"}} 1 {TS_MS}\n")
    );
    sp.static_labels = [("host", "x"), ("9x", "y"), ("__x", "z"), ("ok", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        mapping(&sp, "").unwrap_err(),
        [
            "spec.transform.staticLabels.9x: \"9x\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*): use e.g. \"_9x\"",
            "spec.transform.staticLabels.__x: \"__x\" is reserved: choose another name",
            "spec.transform.staticLabels.host: label column \"host\" gives the label \"host\" too: rename one",
            "spec.transform.staticLabels.ok: empty value: an empty label is no label; remove it or set a value",
        ]
    );
}

#[test]
fn metric_names_name_each_value_column_and_keep_the_prefixes() {
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("Requests", ColumnType::Real),
            ("Errors", ColumnType::Real),
        ],
        vec![vec![ts(TS), Value::Real(10.0), Value::Real(1.0)]],
    );
    let mut sp = spec(&["Requests", "Errors"], &[]);
    sp.type_ = Some("counter".into());
    sp.metric_name_prefix = Some("app_".into());
    sp.metric_names = [
        ("Requests", "http_requests"),
        ("Errors", "http_errors_total"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let names: Vec<String> = flat(&run_prefixed(&t, sp.clone(), "adx"))
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        names,
        ["adx_app_http_errors_total", "adx_app_http_requests_total"]
    );
    sp.metric_names.insert("Nope".into(), "x".into());
    sp.metric_names
        .insert("Errors".into(), "http-errors".into());
    assert_eq!(
        mapping(&sp, "").unwrap_err(),
        [
            "spec.transform.metricNames.Errors: \"http-errors\" is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): use e.g. \"http_errors\"",
            "spec.transform.metricNames.Nope: \"Nope\" is not a value column: list it in valueColumns, or remove it",
        ]
    );
}

#[test]
fn a_prefix_ending_in_underscore_is_not_doubled() {
    let t = counter_table(vec![("a", Value::Real(1.0))]);
    let mut sp = typed("gauge", &["n"], &[]);
    sp.metric_name_prefix = Some("app_".into());
    assert_eq!(flat(&run_prefixed(&t, sp, "adx_"))[0].0, "adx_app_requests");
}

#[test]
fn a_name_cell_with_no_letter_or_digit_skips_the_row_and_is_counted() {
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("name", ColumnType::String),
            ("n", ColumnType::Real),
        ],
        vec![
            vec![ts(TS), s("@@@"), Value::Real(1.0)],
            vec![ts(TS), s("ok"), Value::Real(2.0)],
        ],
    );
    let mut sp = spec(&["n"], &[]);
    sp.metric_name_column = Some("name".into());
    let out = run(&t, sp);
    assert_eq!(flat(&out).len(), 1);
    assert_eq!(skipped(&out, SkipReason::BadMetricName), 1);
}

/// adx-mon's `TestNormalizeColumnName` table, every row.
#[test]
fn adxmon_style_normalises_exactly_as_the_go_exporter() {
    let cases = [
        ("metric", "metric"),
        ("SuccessfulRequests", "successful_requests"),
        ("AvgLatency99", "avg_latency99"),
        ("Total-Count", "total_count"),
        ("response.time", "response_time"),
        ("Success Rate", "success_rate"),
        ("Server@Health#Status!", "server_health_status"),
        (
            "metric__with___many____underscores",
            "metric_with_many_underscores",
        ),
        ("_metric_name_", "metric_name"),
        (
            "metric--with..multiple@@chars",
            "metric_with_multiple_chars",
        ),
        ("95thPercentile", "_95th_percentile"),
        ("123", "_123"),
        ("P99Latency", "p99_latency"),
        ("", ""),
        ("@#$%", ""),
        ("____", ""),
        ("A", "a"),
        ("5", "_5"),
        ("CPUUtilizationPercent", "cpu_utilization_percent"),
        (
            "container_memory_usage_bytes",
            "container_memory_usage_bytes",
        ),
        ("http_requests_total", "http_requests_total"),
        ("TotalRequestCount", "total_request_count"),
        ("API-Response.Time_ms", "api_response_time_ms"),
        ("métrïc_nåme", "m_tr_c_n_me"),
        ("latência_média", "lat_ncia_m_dia"),
        (
            "Very-Complex@Metric#Name$With%Many^Special&Characters*And(Numbers)123[Brackets]",
            "very_complex_metric_name_with_many_special_characters_and_numbers_123_brackets",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(adxmon_normalize(input), want, "{input:?}");
    }
}

/// adx-mon's `TestConstructMetricName` table (base, prefix, value column → name), through the
/// transform with `nameStyle: adxmon`.
#[test]
fn adxmon_style_builds_names_exactly_as_the_go_exporter() {
    let cases = [
        (
            "customer_success_rate",
            "teama",
            "Numerator",
            "teama_customer_success_rate_numerator",
        ),
        (
            "response_time",
            "",
            "AvgLatency",
            "response_time_avg_latency",
        ),
        ("api_response", "", "AvgLatency", "api_response_avg_latency"),
        (
            "CustomerSuccessRate",
            "teamc",
            "Numerator",
            "teamc_customer_success_rate_numerator",
        ),
        (
            "api_metrics",
            "TeamABC",
            "Count",
            "team_abc_api_metrics_count",
        ),
        (
            "service_health",
            "prod",
            "CPUUtilizationPercent",
            "prod_service_health_cpu_utilization_percent",
        ),
        (
            "API-Response.Time",
            "team-a",
            "P99_Latency",
            "team_a_api_response_time_p99_latency",
        ),
        (
            "http.requests@total",
            "monitoring_team",
            "Success-Rate",
            "monitoring_team_http_requests_total_success_rate",
        ),
        ("latency", "", "95thPercentile", "latency_95th_percentile"),
        (
            "response",
            "api",
            "99Percentile",
            "api_response_99_percentile",
        ),
        (
            "metrics",
            "team",
            "latência_média",
            "team_metrics_lat_ncia_m_dia",
        ),
        ("x", "a", "y", "a_x_y"),
        ("host_count", "app_", "value", "app_host_count_value"),
    ];
    for (base, prefix, column, want) in cases {
        let t = table(
            &[
                ("timestamp", ColumnType::DateTime),
                (column, ColumnType::Real),
            ],
            vec![vec![ts(TS), Value::Real(1.0)]],
        );
        let mut sp = spec(&[column], &[]);
        sp.default_metric_name = Some(base.into());
        sp.name_style = Some("adxmon".into());
        sp.metric_name_prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
        assert_eq!(
            flat(&run(&t, sp))[0].0,
            want,
            "{base:?} {prefix:?} {column:?}"
        );
    }
    // The CLI and resource prefixes are normalised as a whole, and a counter still ends in _total.
    let t = table(
        &[
            ("timestamp", ColumnType::DateTime),
            ("Value", ColumnType::Real),
        ],
        vec![vec![ts(TS), Value::Real(1.0)]],
    );
    let mut sp = spec(&["Value"], &[]);
    sp.default_metric_name = Some("HostCount".into());
    sp.name_style = Some("adxmon".into());
    sp.metric_name_prefix = Some("infra".into());
    sp.type_ = Some("counter".into());
    assert_eq!(
        flat(&run_prefixed(&t, sp, "ADXExporter"))[0].0,
        "adx_exporter_infra_host_count_value_total"
    );
    // A value column that normalises to nothing is refused.
    let mut bad = spec(&["@#$%"], &[]);
    bad.default_metric_name = Some("m".into());
    bad.name_style = Some("adxmon".into());
    assert_eq!(
        mapping(&bad, "").unwrap_err(),
        [
            "spec.transform.valueColumns: \"@#$%\" has no letter or digit, so it gives no name suffix: rename it in the query"
        ]
    );
}

#[test]
fn skip_reason_labels_are_stable() {
    let labels: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "null_timestamp",
            "bad_timestamp",
            "no_metric_name",
            "null_value",
            "non_numeric_value",
            "duplicate",
            "bad_metric_name",
            "invalid_increase",
            "bad_bucket"
        ]
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: [f64; 5] = [0.1, 0.5, 1.0, 10.0, f64::INFINITY];

    proptest! {
        /// Whatever the rows (bounds in any order, repeated, missing +Inf), each `_bucket{le=b}` is
        /// the sum of the counts of the rows with a bound ≤ b, `+Inf` and `_count` are the total, the
        /// buckets never decrease with `le`, and `_sum` is the sum of the rows' sums.
        #[test]
        fn histogram_buckets_are_cumulative_sums(
            rows in proptest::collection::vec((0usize..5, 0u32..50, 0u32..100), 1..20),
        ) {
            // One row per bound: a second row for the same bound is a duplicate (later wins).
            let mut last: std::collections::BTreeMap<usize, (u32, u32)> = Default::default();
            for &(b, n, s) in &rows {
                last.insert(b, (n, s));
            }
            let t = histogram_table(
                rows.iter()
                    .map(|&(b, n, s)| (0, "/a", Value::Real(BOUNDS[b]), Value::Long(i64::from(n)), f64::from(s)))
                    .collect(),
            );
            let out = run(&t, histogram_spec());
            let total: f64 = last.values().map(|(n, _)| f64::from(*n)).sum();
            let sum: f64 = last.values().map(|(_, s)| f64::from(*s)).sum();
            let mut buckets = Vec::new();
            for series in &out.request.timeseries {
                let value = series.samples[0].value;
                match series.metric_name() {
                    "requests_bucket" => {
                        let le: f64 = series.labels.iter().find(|l| l.name == "le").unwrap().value.parse().unwrap();
                        let want: f64 = (last.iter())
                            .filter(|(b, _)| BOUNDS[**b] <= le)
                            .map(|(_, (n, _))| f64::from(*n))
                            .sum();
                        prop_assert_eq!(value, want, "le {}", le);
                        buckets.push((le, value));
                    }
                    "requests_count" => prop_assert_eq!(value, total),
                    "requests_sum" => prop_assert_eq!(value, sum),
                    other => prop_assert!(false, "unexpected series {}", other),
                }
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            prop_assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{:?}", buckets);
            prop_assert_eq!(buckets.last().map(|b| (b.0, b.1)), Some((f64::INFINITY, total)));
        }
    }
}
