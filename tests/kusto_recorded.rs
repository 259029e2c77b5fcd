//! The project's own Kusto response fixtures (`tests/fixtures/kusto/`, see its README): answers recorded
//! from duckdb-kql and the shapes derived from them that only real Kusto sends. Every file the manifest
//! lists decodes to its expected outcome; then each is checked value by value: every type and null,
//! every frame shape, every partial-failure channel, truncation, row and byte limits, key order, HTTP
//! error bodies, and the same bytes served over HTTP (plain and gzip) through `KustoClient` on 127.0.0.1.
//! Needs nothing outside the repository (the generator check needs the test venv, as every peer test).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use adxexporter::query::{
    ColumnType, DataSet, KustoAuth, KustoClient, KustoConfig, KustoErrorInfo, QueryError,
    QueryLimits, Table, TableKind, Value, decode_v1, decode_v2, http_error,
};
use adxexporter::time::{Span, TICKS_PER_SECOND, Ticks, UNIX_EPOCH_TICKS};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kusto")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn limits() -> QueryLimits {
    QueryLimits {
        max_rows: 10_000,
        max_bytes: 1 << 20,
    }
}

fn rows_limit(max_rows: usize) -> QueryLimits {
    QueryLimits {
        max_rows,
        ..limits()
    }
}

fn v2(name: &str) -> Result<DataSet, QueryError> {
    decode_v2(&read(name), &limits())
}

fn v1(name: &str) -> Result<DataSet, QueryError> {
    decode_v1(&read(name), &limits())
}

fn primary(set: &DataSet) -> &Table {
    set.primary().expect("a primary table")
}

fn primaries(set: &DataSet) -> Vec<&Table> {
    set.primary_tables().collect()
}

/// Equality through `Debug`: NaN equals NaN, and a failure shows both sides.
#[track_caller]
fn assert_same<A: std::fmt::Debug, B: std::fmt::Debug>(a: A, b: B) {
    assert_eq!(format!("{a:#?}"), format!("{b:#?}"));
}

/// Columns and rows (not the table name) are equal.
#[track_caller]
fn assert_same_table(a: &Table, b: &Table) {
    assert_eq!(a.columns, b.columns);
    assert_same(a.rows().collect::<Vec<_>>(), b.rows().collect::<Vec<_>>());
}

// ---------- manifest ----------

struct Entry {
    file: String,
    api: String,
    status: u16,
    headers: Vec<(String, String)>,
    /// `None` = decodes; `Some((kind, permanent))` = that error.
    expect: Option<(String, bool)>,
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("manifest.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    doc["fixtures"]
        .as_array()
        .expect("fixtures")
        .iter()
        .map(|f| Entry {
            file: f["file"].as_str().unwrap().to_owned(),
            api: f["api"].as_str().unwrap().to_owned(),
            status: f["status"].as_u64().unwrap() as u16,
            headers: f["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            expect: f["expect"].get("error").map(|kind| {
                (
                    kind.as_str().unwrap().to_owned(),
                    f["expect"]["permanent"].as_bool().unwrap(),
                )
            }),
        })
        .collect()
}

fn retry_after(e: &Entry) -> Option<Duration> {
    e.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| Duration::from_secs(v.parse().unwrap()))
}

/// What the client makes of this fixture: the decoded 200 body, or the error for its status.
fn outcome(e: &Entry, auth: &str) -> Result<DataSet, QueryError> {
    let body = read(&e.file);
    match e.api.as_str() {
        "v2" => decode_v2(&body, &limits()),
        "v1" => decode_v1(&body, &limits()),
        "http" => Err(http_error(e.status, retry_after(e), &body, auth, "memory")),
        other => panic!("{}: unknown api {other}", e.file),
    }
}

fn files_under(root: &Path, rel: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(root.join(rel)).unwrap().flatten() {
        let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            files_under(root, &name, out);
        } else {
            out.push(name);
        }
    }
}

#[test]
fn the_manifest_lists_every_fixture_file_and_only_those() {
    let mut on_disk = Vec::new();
    files_under(&dir(), "recorded", &mut on_disk);
    files_under(&dir(), "derived", &mut on_disk);
    on_disk.sort();
    let mut listed: Vec<String> = manifest().into_iter().map(|e| e.file).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    assert!(listed.len() >= 35, "{} fixtures", listed.len());
    // Every API, both provenances, and at least one failure of each channel's kind.
    for needle in [
        "recorded/v2/",
        "recorded/v1/",
        "recorded/http/",
        "derived/v2/",
        "derived/v1/",
    ] {
        assert!(listed.iter().any(|f| f.starts_with(needle)), "{needle}");
    }
}

#[test]
fn every_fixture_has_its_expected_outcome() {
    for e in manifest() {
        let got = outcome(&e, "none");
        match (&e.expect, &got) {
            (None, Ok(set)) => {
                assert_eq!(set.tables.len(), set.kinds.len(), "{}", e.file);
                for t in &set.tables {
                    for row in t.rows() {
                        assert_eq!(row.len(), t.columns.len(), "{}", e.file);
                    }
                }
            }
            (Some((kind, permanent)), Err(err)) => {
                assert_eq!(err.kind(), kind, "{}: {err:?}", e.file);
                assert_eq!(err.is_permanent(), *permanent, "{}: {err:?}", e.file);
                assert!(!err.to_string().is_empty(), "{}", e.file);
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", e.file),
        }
    }
}

/// The committed files are byte for byte what `generate.py` makes from duckdb-kql now.
#[test]
fn committed_fixtures_are_what_the_generator_makes() {
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg(dir().join("generate.py"))
        .arg("--check")
        .output()
        .expect("run generate.py --check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------- exact values: every type and null ----------

/// 100 ns ticks since 0001-01-01 of a UTC civil time (an oracle independent of `Ticks::parse`).
fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, frac_ticks: i64) -> Value {
    // Howard Hinnant's days_from_civil: days since 1970-01-01.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Value::DateTime(Ticks(
        UNIX_EPOCH_TICKS + (days * 86_400 + h * 3600 + mi * 60 + s) * TICKS_PER_SECOND + frac_ticks,
    ))
}

fn span(negative: bool, days: i64, h: i64, m: i64, s: i64, frac_ticks: i64) -> Value {
    let t = ((days * 24 + h) * 3600 + m * 60 + s) * TICKS_PER_SECOND + frac_ticks;
    Value::TimeSpan(Span(if negative { -t } else { t }))
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn dynamic(x: &str) -> Value {
    Value::Dynamic(x.into())
}

fn decimal(x: &str) -> Value {
    Value::Decimal(x.into())
}

fn guid(x: &str) -> Value {
    Value::Guid(x.into())
}

fn types_columns() -> Vec<(&'static str, ColumnType)> {
    use ColumnType::*;
    vec![
        ("id", Int),
        ("b", Bool),
        ("i", Int),
        ("l", Long),
        ("r", Real),
        ("d", Decimal),
        ("ts", DateTime),
        ("span", TimeSpan),
        ("g", Guid),
        ("s", String),
        ("dyn", Dynamic),
    ]
}

/// The rows of `Types | order by id asc` (tests/fixtures/kusto/init.sql), as decoded.
fn types_rows() -> Vec<Vec<Value>> {
    use Value::*;
    vec![
        vec![
            Int(1),
            Bool(true),
            Int(i32::MAX),
            Long(i64::MAX),
            Real(1.5),
            decimal("12.3456"),
            utc(2026, 1, 1, 0, 0, 0, 0),
            span(false, 1, 2, 3, 4, 5_000_000),
            guid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            s("plain"),
            dynamic(r#"{"k":"v","n":[1,2,3]}"#),
        ],
        vec![
            Int(2),
            Bool(false),
            Int(i32::MIN),
            Long(i64::MIN),
            Real(f64::NAN),
            decimal("-0.5000"),
            utc(2026, 1, 1, 0, 4, 59, 1_234_560),
            span(true, 0, 3, 0, 0, 0),
            guid("00000000-0000-0000-0000-000000000000"),
            s("quote \" backslash \\ tab\tnewline\nend"),
            dynamic(r#""just a string""#),
        ],
        vec![
            Int(3),
            Bool(true),
            Int(0),
            Long(0),
            Real(f64::INFINITY),
            decimal("0.0000"),
            utc(2026, 1, 1, 0, 5, 0, 10),
            span(true, 2, 0, 0, 2, 20_000),
            guid("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            s("ünïcødé ✓ 𝄞 日本"),
            dynamic(r#"[1,"two",{"three":3},null,true]"#),
        ],
        vec![
            Int(4),
            Bool(false),
            Int(1),
            Long(1),
            Real(f64::NEG_INFINITY),
            decimal("99999999999999.9999"),
            utc(1999, 12, 31, 23, 59, 59, 9_999_990),
            span(false, 0, 0, 0, 0, 0),
            guid("123e4567-e89b-12d3-a456-426614174000"),
            s(""),
            dynamic("123"),
        ],
        // Nulls of every type (the JSON null of a dynamic column too).
        std::iter::once(Int(5))
            .chain(std::iter::repeat_n(Null, 10))
            .collect(),
        vec![
            Int(6),
            Bool(true),
            Int(-7),
            Long(9_007_199_254_740_993), // not an f64
            Real(2.5e-300),
            decimal("1.0001"),
            utc(1, 1, 1, 0, 0, 0, 0),
            span(false, 0, 0, 0, 0, 10),
            guid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"),
            s(r#"{"looks":"like json"}"#), // a string, not parsed
            dynamic(r#"{"nested":{"deep":{"x":-1.25}},"big":12345678901234567890}"#),
        ],
        vec![
            Int(7),
            Bool(false),
            Int(42),
            Long(-1),
            Real(0.0),
            decimal("-1.0001"),
            utc(9999, 12, 31, 23, 59, 59, 9_999_990),
            span(false, 10_000, 23, 59, 59, 9_999_990),
            guid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13"),
            s("emoji 😀 and 'single'"),
            dynamic("true"),
        ],
    ]
}

#[track_caller]
fn assert_types_table(t: &Table) {
    let columns: Vec<(&str, ColumnType)> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ty.clone()))
        .collect();
    assert_eq!(columns, types_columns());
    assert_eq!(t.row_count(), 7);
    for (i, want) in types_rows().iter().enumerate() {
        assert_same(t.row(i), want);
    }
}

#[test]
fn types_every_type_edge_values_and_nulls() {
    let set = v2("recorded/v2/types.json").unwrap();
    assert_eq!(
        set.kinds,
        [
            TableKind::QueryProperties,
            TableKind::PrimaryResult,
            TableKind::QueryCompletionInformation
        ]
    );
    let t = primary(&set);
    assert_eq!(t.name, "PrimaryResult");
    assert_types_table(t);
    // Metadata tables decode too: the visualization JSON string in a dynamic column stays a string.
    let props = &set.tables[0];
    assert_eq!(props.row(0)[0], Value::Int(1));
    assert_eq!(props.row(0)[1], s("Visualization"));
    assert!(matches!(&props.row(0)[2], Value::Dynamic(d) if d.starts_with("\"{\\\"Visualization")));
    let qci = &set.tables[2];
    let col = |name: &str| qci.column_index(name).unwrap();
    assert_eq!(qci.row(0)[col("Timestamp")], utc(2026, 1, 1, 12, 0, 0, 0));
    assert_eq!(
        qci.row(0)[col("ClientRequestId")],
        s("adxexporter;fixture-types")
    );
    assert_eq!(qci.row(0)[col("Level")], Value::Int(4));
    assert!(set.warnings.is_empty());
}

#[test]
fn empty_result_keeps_its_typed_columns() {
    let set = v2("recorded/v2/empty.json").unwrap();
    let t = primary(&set);
    assert_eq!(t.row_count(), 0);
    let types: Vec<ColumnType> = t.columns.iter().map(|c| c.ty.clone()).collect();
    let want: Vec<ColumnType> = types_columns().into_iter().map(|(_, t)| t).collect();
    assert_eq!(types, want);
    // Metadata rows never count against the row limit.
    assert!(decode_v2(&read("recorded/v2/empty.json"), &rows_limit(0)).is_ok());
}

#[test]
fn print_literals() {
    let set = v2("recorded/v2/print.json").unwrap();
    let t = primary(&set);
    use Value::*;
    assert_same(
        t.row(0),
        [
            Long(1),
            Real(2.5),
            s("x\"y"),
            span(false, 1, 2, 3, 4, 5_000_000),
            Real(f64::NAN),
            Real(f64::NEG_INFINITY),
            Real(f64::INFINITY),
            guid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Long(9_007_199_254_740_993),
            Bool(true),
            utc(2026, 1, 1, 0, 0, 0, 1_234_560),
            dynamic(r#"{"k":[1,2]}"#),
            Null,
        ],
    );
    assert_eq!(t.columns[12].ty, ColumnType::Long);
}

#[test]
fn datetimes_with_every_fraction_length() {
    let want = |n: usize| match n {
        0 => utc(2026, 3, 4, 5, 6, 7, 0),
        1 => utc(2026, 3, 4, 5, 6, 7, 1_000_000),
        2 => utc(2026, 3, 4, 5, 6, 7, 1_200_000),
        3 => utc(2026, 3, 4, 5, 6, 7, 1_230_000),
        4 => utc(2026, 3, 4, 5, 6, 7, 1_234_000),
        5 => utc(2026, 3, 4, 5, 6, 7, 1_234_500),
        6 => utc(2026, 3, 4, 5, 6, 7, 1_234_560),
        _ => utc(2026, 3, 4, 5, 6, 7, 1_200_010),
    };
    // duckdb-kql: always 6 digits.
    let recorded = v2("recorded/v2/stamps.json").unwrap();
    for (n, row) in primary(&recorded).rows().enumerate() {
        assert_eq!(row, [Value::Int(n as i32), want(n)], "row {n}");
    }
    // Kusto's form: 0..7 digits, trailing zeros trimmed (row 7: 7 digits, +300 ns).
    let text = String::from_utf8(read("derived/v2/datetime_fractions.json")).unwrap();
    for digits in [
        "07Z",
        "07.1Z",
        "07.12Z",
        "07.123Z",
        "07.1234Z",
        "07.12345Z",
        "07.123456Z",
        "07.1200013Z",
    ] {
        assert!(
            text.contains(&format!("2026-03-04T05:06:{digits}")),
            "{digits}"
        );
    }
    let kusto = v2("derived/v2/datetime_fractions.json").unwrap();
    for (n, row) in primary(&kusto).rows().enumerate() {
        let want = match (n, want(n)) {
            (7, Value::DateTime(t)) => Value::DateTime(Ticks(t.0 + 3)),
            (_, w) => w,
        };
        assert_eq!(row, [Value::Int(n as i32), want], "row {n}");
    }
    assert_eq!(
        kusto.tables[2].row(0)[0],
        utc(2026, 1, 1, 12, 0, 0, 0),
        "QCI Timestamp without fraction"
    );
}

/// `Metrics | summarize avg, count, max by bin(Timestamp, 1m), Host`, recomputed from init.sql's formula.
fn metrics_oracle() -> Vec<(Value, String, f64, i64, f64)> {
    let mut groups: std::collections::BTreeMap<(i64, u8), Vec<f64>> = Default::default();
    for i in 0..40i64 {
        let minute = i * 15 / 60;
        let host = b'a' + (i % 3) as u8;
        groups
            .entry((minute, host))
            .or_default()
            .push(((i * 37) % 100) as f64 / 100.0);
    }
    groups
        .into_iter()
        .map(|((minute, host), values)| {
            let n = values.len() as f64;
            (
                utc(2026, 1, 1, 0, minute, 0, 0),
                format!("host-{}", host as char),
                values.iter().sum::<f64>() / n,
                values.len() as i64,
                values.iter().cloned().fold(f64::MIN, f64::max),
            )
        })
        .collect()
}

#[track_caller]
fn assert_metrics_table(t: &Table) {
    let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["Timestamp", "Host", "avg_value", "samples", "max_value"]
    );
    let oracle = metrics_oracle();
    assert_eq!(t.row_count(), oracle.len());
    assert_eq!(t.row_count(), 30);
    for (row, (ts, host, avg, n, max)) in t.rows().zip(oracle) {
        assert_eq!(row[0], ts);
        assert_eq!(row[1], s(&host));
        match row[2] {
            Value::Real(x) => assert!((x - avg).abs() < 1e-12, "{x} vs {avg}"),
            ref other => panic!("{other:?}"),
        }
        assert_eq!(row[3], Value::Long(n));
        assert_eq!(row[4], Value::Real(max));
    }
}

#[test]
fn metrics_query_values() {
    let set = v2("recorded/v2/metrics.json").unwrap();
    assert_metrics_table(primary(&set));
}

// ---------- frame shapes ----------

#[test]
fn progressive_decodes_like_the_plain_answer() {
    let plain = v2("recorded/v2/metrics.json").unwrap();
    let progressive = v2("derived/v2/progressive.json").unwrap();
    assert_same(&progressive, &plain);
}

#[test]
fn data_replace_drops_the_stale_rows_and_frees_the_row_budget() {
    let body = read("derived/v2/progressive_replace.json");
    let set = decode_v2(&body, &limits()).unwrap();
    assert_same(&set, v2("recorded/v2/metrics.json").unwrap());
    // 55 rows arrive in all, 25 at the peak; the final table has 30.
    assert_eq!(
        primary(&decode_v2(&body, &rows_limit(30)).unwrap()).row_count(),
        30
    );
    assert!(matches!(
        decode_v2(&body, &rows_limit(29)),
        Err(QueryError::TooManyRows { limit: 29 })
    ));
}

#[test]
fn fragmented_two_primary_tables() {
    let set = v2("derived/v2/fragmented_two_tables.json").unwrap();
    assert_eq!(
        set.kinds,
        [
            TableKind::QueryProperties,
            TableKind::PrimaryResult,
            TableKind::PrimaryResult,
            TableKind::QueryCompletionInformation
        ]
    );
    let p = primaries(&set);
    assert_types_table(p[0]);
    assert_metrics_table(p[1]);
    // The row limit counts both primary tables.
    let body = read("derived/v2/fragmented_two_tables.json");
    assert!(decode_v2(&body, &rows_limit(37)).is_ok());
    assert!(matches!(
        decode_v2(&body, &rows_limit(36)),
        Err(QueryError::TooManyRows { limit: 36 })
    ));
}

#[test]
fn key_order_does_not_matter() {
    let text = String::from_utf8(read("derived/v2/key_order.json")).unwrap();
    assert!(text.starts_with(r#"[{"ErrorReportingPlacement": "InData""#));
    assert!(text.contains(r#"{"Rows": [[1, true, 2147483647"#));
    assert!(text.contains(r#"{"ColumnType": "int", "ColumnName": "id"}"#));
    assert_same(
        v2("derived/v2/key_order.json").unwrap(),
        v2("recorded/v2/types.json").unwrap(),
    );
}

// ---------- partial-failure channels ----------

fn partial(name: &str) -> (Vec<KustoErrorInfo>, bool, QueryError) {
    let err = v2(name).unwrap_err();
    match &err {
        QueryError::PartialFailure { errors, cancelled } => (errors.clone(), *cancelled, err),
        other => panic!("{name}: expected PartialFailure, got {other:?}"),
    }
}

#[test]
fn channel_error_object_inside_rows() {
    let (errors, cancelled, err) = partial("derived/v2/partial_in_rows.json");
    // The in-row report and DataSetCompletion's copy are one error.
    assert_eq!(
        errors,
        [KustoErrorInfo {
            code: Some("LimitsExceeded".into()),
            message: "Query execution has exceeded the allowed limits (80DA0003): the query was stopped after 5 records."
                .into(),
            permanent: Some(false),
        }]
    );
    assert!(!cancelled);
    assert!(!err.is_permanent());
    assert!(err.to_string().contains("1 error(s)"), "{err}");
}

#[test]
fn channel_table_completion() {
    let (errors, _, err) = partial("derived/v2/partial_table_completion.json");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code.as_deref(), Some("LimitsExceeded"));
    assert!(errors[0].message.contains("E_QUERY_RESULT_SET_TOO_LARGE"));
    assert_eq!(errors[0].permanent, Some(false));
    // A result-set limit cannot pass on retry, whatever @permanent says.
    assert!(err.is_permanent());
}

#[test]
fn channel_dataset_completion_with_one_api_errors() {
    let (errors, cancelled, err) = partial("derived/v2/partial_dataset_completion.json");
    assert_eq!(
        errors,
        [KustoErrorInfo {
            code: Some("LowMemoryCondition".into()),
            message: "Partial query failure: Low memory condition (E_LOW_MEMORY_CONDITION). (message: 'bad allocation', details: '')".into(),
            permanent: Some(true),
        }]
    );
    assert!(!cancelled);
    assert!(err.is_permanent());
}

#[test]
fn channel_dataset_completion_has_errors_alone() {
    let (errors, cancelled, err) = partial("derived/v2/partial_has_errors_bare.json");
    assert_eq!(
        errors,
        [KustoErrorInfo {
            code: None,
            message: "DataSetCompletion.HasErrors is true but no error was reported".into(),
            permanent: None,
        }]
    );
    assert!(!cancelled);
    assert!(!err.is_permanent());
}

#[test]
fn channel_dataset_completion_cancelled() {
    let (errors, cancelled, err) = partial("derived/v2/cancelled.json");
    assert!(cancelled);
    assert_eq!(errors[0].message, "DataSetCompletion.Cancelled is true");
    assert!(err.to_string().contains("query cancelled"), "{err}");
    assert!(!err.is_permanent());
}

#[test]
fn channel_completion_information_error_row() {
    let (errors, _, err) = partial("derived/v2/partial_deferred_qci.json");
    assert_eq!(
        errors,
        [KustoErrorInfo {
            code: Some("QueryCompletionInformation level 2".into()),
            message: r#"QueryLimitsExceeded: Query result set too large (E_QUERY_RESULT_SET_TOO_LARGE). (-2133196797): {"Count": 1, "Text": "Query result set has exceeded the internal record count limit 5"}"#.into(),
            permanent: None,
        }]
    );
    assert!(err.is_permanent());
}

#[test]
fn completion_information_warning_is_reported_and_stats_ignored() {
    let set = v2("derived/v2/qci_warning.json").unwrap();
    assert_eq!(
        set.warnings,
        [r#"QueryInfo: S_OK (0): {"Count": 1, "Text": "the query used a deprecated function"}"#]
    );
    assert_metrics_table(primary(&set));
}

// ---------- truncation ----------

#[test]
fn truncated_bodies_are_transient_truncation_errors() {
    for (name, detail) in [
        ("derived/v2/truncated_between_frames.json", "EOF"),
        ("derived/v2/truncated_in_rows.json", "EOF"),
        ("derived/v2/truncated_mid_char.json", "not UTF-8"),
        (
            "derived/v2/no_dataset_completion.json",
            "without DataSetCompletion",
        ),
    ] {
        match v2(name) {
            Err(QueryError::Truncated { detail: d }) => assert!(d.contains(detail), "{name}: {d}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(
        v1("derived/v1/truncated.json"),
        Err(QueryError::Truncated { .. })
    ));
}

/// A body cut at any byte is an error unless only trailing whitespace was cut: never a panic, never a
/// partial result; always `Truncated` (transient). Over a plain, a
/// progressive and a fragmented (one frame per line, raw UTF-8) v2 body and a v1 body.
#[test]
fn every_prefix_of_a_fixture_is_truncated() {
    for (name, v1) in [
        ("recorded/v2/empty.json", false),
        ("derived/v2/progressive.json", false),
        ("derived/v2/fragmented_two_tables.json", false),
        ("recorded/v1/types.json", true),
    ] {
        let full = read(name);
        let end = full.trim_ascii_end().len();
        for cut in 0..full.len() {
            let prefix = &full[..cut];
            let r = if v1 {
                decode_v1(prefix, &limits())
            } else {
                decode_v2(prefix, &limits())
            };
            match r {
                Ok(_) => assert!(cut >= end, "{name}: a prefix of {cut} bytes decoded"),
                Err(QueryError::Truncated { .. }) => assert!(cut < end, "{name}: {cut}"),
                Err(other) => panic!("{name}: a prefix of {cut} bytes: {other:?}"),
            }
        }
    }
}

// ---------- row limits ----------

#[test]
fn row_limits_count_primary_rows_only() {
    for (name, rows, v1) in [
        ("recorded/v2/types.json", 7, false),
        ("recorded/v2/metrics.json", 30, false),
        ("derived/v2/progressive.json", 30, false),
        ("recorded/v1/types.json", 7, true),
        ("derived/v1/query_with_toc.json", 37, true),
    ] {
        let body = read(name);
        let decode = |max| {
            if v1 {
                decode_v1(&body, &rows_limit(max))
            } else {
                decode_v2(&body, &rows_limit(max))
            }
        };
        assert!(decode(rows).is_ok(), "{name}");
        let err = decode(rows - 1).unwrap_err();
        assert!(
            matches!(err, QueryError::TooManyRows { limit } if limit == rows - 1),
            "{name}: {err:?}"
        );
        assert!(err.is_permanent());
        assert_eq!(err.kind(), "too_many_rows");
    }
}

// ---------- v1 ----------

#[test]
fn v1_types_mean_what_v2_types_mean() {
    let set = v1("recorded/v1/types.json").unwrap();
    assert_eq!(set.kinds, [TableKind::PrimaryResult]);
    assert_eq!(primary(&set).name, "Table_0");
    assert_types_table(primary(&set));
    // Older services: DataType only; bools as 0/1.
    for name in [
        "derived/v1/datatype_only.json",
        "derived/v1/bool_as_int.json",
    ] {
        assert_same(v1(name).unwrap(), &set);
    }
}

#[test]
fn v1_show_version_data_type_only() {
    let set = v1("recorded/v1/show_version.json").unwrap();
    let t = primary(&set);
    use ColumnType::*;
    let types: Vec<ColumnType> = t.columns.iter().map(|c| c.ty.clone()).collect();
    assert_eq!(types, [String, DateTime, String, String, String]);
    assert_eq!(
        t.row(0),
        [
            s("1.1.2"),
            Value::Null,
            s("Engine"),
            s("duckdb-kql 1.1.2 on DuckDB v2.0.1"),
            s("")
        ]
    );
}

#[test]
fn v1_table_of_contents_names_the_kinds() {
    let set = v1("derived/v1/query_with_toc.json").unwrap();
    assert_eq!(
        set.kinds,
        [
            TableKind::PrimaryResult,
            TableKind::PrimaryResult,
            TableKind::QueryProperties,
            TableKind::QueryCompletionInformation,
            TableKind::TableOfContents
        ]
    );
    let p = primaries(&set);
    assert_types_table(p[0]);
    assert_metrics_table(p[1]);
    let v2_metrics = v2("recorded/v2/metrics.json").unwrap();
    assert_same_table(p[1], primary(&v2_metrics));
    // The Stats row's StatusDescription is a JSON object in a string column: kept as its JSON text.
    let status = &set.tables[3];
    let desc = status.column_index("StatusDescription").unwrap();
    assert_eq!(status.row(0)[desc], s("Query completed successfully"));
    assert!(
        matches!(&status.row(1)[desc], Value::String(x) if x.starts_with(r#"{"ExecutionTime":"#))
    );
    assert!(set.warnings.is_empty());
}

#[test]
fn v1_partial_failures() {
    let err = v1("derived/v1/querystatus_error.json").unwrap_err();
    match &err {
        QueryError::PartialFailure { errors, .. } => assert_eq!(
            errors,
            &[KustoErrorInfo {
                code: Some("QueryCompletionInformation level 2".into()),
                message: "Query result set has exceeded the internal record count limit 5 (E_QUERY_RESULT_SET_TOO_LARGE)".into(),
                permanent: None,
            }]
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.is_permanent());
    let err = v1("derived/v1/partial_in_rows.json").unwrap_err();
    match &err {
        // The row's report and the top-level Exceptions are one error.
        QueryError::PartialFailure { errors, cancelled } => {
            assert_eq!(
                errors,
                &[KustoErrorInfo {
                    code: None,
                    message: "Query execution has exceeded the allowed limits (80DA0003): the query was stopped after 5 records.".into(),
                    permanent: None,
                }]
            );
            assert!(!cancelled);
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_permanent());
}

// ---------- HTTP error bodies ----------

fn http(name: &str, status: u16, retry_after: Option<Duration>) -> QueryError {
    http_error(status, retry_after, &read(name), "none", "memory")
}

#[test]
fn http_error_bodies_from_duckdb_kql() {
    match http("recorded/http/400_semantic.json", 400, None) {
        QueryError::Http { status: 400, error } => {
            assert_eq!(error.code.as_deref(), Some("General_BadRequest"));
            assert!(
                error.message.starts_with("Binder Error: ") && error.message.contains("nosuch"),
                "{}",
                error.message
            );
            assert_eq!(error.permanent, Some(true));
        }
        other => panic!("{other:?}"),
    }
    match http("recorded/http/400_syntax.json", 400, None) {
        QueryError::Http { status: 400, error } => {
            assert!(
                error.message.starts_with("could not parse KQL at 1:"),
                "{}",
                error.message
            );
            assert_eq!(error.permanent, Some(true));
        }
        other => panic!("{other:?}"),
    }
    match http("recorded/http/404_database.json", 404, None) {
        QueryError::DatabaseNotFound { database, message } => {
            assert_eq!(database, "memory");
            assert!(
                message.starts_with("General_DatabaseNotFound: database 'nodb' is not attached"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    match http("recorded/http/403_write_refused.json", 403, None) {
        QueryError::Unauthorized {
            status: 403,
            message,
            ..
        } => assert!(message.contains("writes are disabled"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_error_bodies_kusto_sends() {
    let err = http(
        "derived/http/429_throttled.json",
        429,
        Some(Duration::from_secs(7)),
    );
    match &err {
        QueryError::Throttled {
            retry_after,
            message,
        } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert!(
                message.starts_with("TooManyRequests: The request was denied due to throttling"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_permanent());
    let err = http("derived/http/504_timeout.json", 504, None);
    match &err {
        QueryError::Http { status: 504, error } => {
            assert_eq!(error.code.as_deref(), Some("RequestExecutionTimeout"));
            assert_eq!(error.permanent, Some(false));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((err.kind(), err.is_permanent()), ("server", false));
    match http("derived/http/401_empty.txt", 401, None) {
        QueryError::Unauthorized {
            status: 401,
            message,
            ..
        } => assert_eq!(message, "empty body with HTTP status 401"),
        other => panic!("{other:?}"),
    }
    let text = String::from_utf8(read("derived/http/400_plain_text.txt")).unwrap();
    match http("derived/http/400_plain_text.txt", 400, None) {
        QueryError::Http { status: 400, error } => assert_eq!(
            error,
            KustoErrorInfo {
                code: None,
                message: text.clone(),
                permanent: None
            }
        ),
        other => panic!("{other:?}"),
    }
    // The same bytes on a 200: not a frame array (v2), not JSON (v1).
    assert!(
        matches!(v2("derived/http/400_plain_text.txt"), Err(QueryError::UnexpectedBody { text: t }) if t == text)
    );
    assert!(matches!(
        v1("derived/http/400_plain_text.txt"),
        Err(QueryError::Malformed { .. })
    ));
}

// ---------- the same bytes over HTTP through KustoClient ----------

mod serve {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers one request on 127.0.0.1 with `response` verbatim, then closes.
    pub async fn once(response: Vec<u8>) -> url::Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the Content-Length body before answering.
            loop {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= p + 4 + len {
                        break;
                    }
                }
            }
            let _ = sock.write_all(&response).await;
            let _ = sock.shutdown().await;
        });
        url
    }

    pub fn response(
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        length: Option<usize>,
    ) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = length {
            r.push_str(&format!("Content-Length: {len}\r\n"));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).unwrap();
    enc.finish().unwrap()
}

async fn query(reply: Vec<u8>, limits: &QueryLimits) -> (Result<DataSet, QueryError>, String) {
    let url = serve::once(reply).await;
    let client = KustoClient::new(url, KustoAuth::None, KustoConfig::default()).unwrap();
    let result = client.query("memory", "Types", limits).await;
    (result, client.auth_description())
}

/// Served with their status (v2 bodies also gzip-encoded and without Content-Length), the fixtures come
/// out of `KustoClient::query` exactly as the decoder or `http_error` read them.
#[tokio::test]
async fn the_client_reads_every_fixture_like_the_decoder() {
    let mut served = 0;
    for e in manifest().into_iter().filter(|e| e.api != "v1") {
        let body = read(&e.file);
        let mut replies = vec![
            (
                "plain",
                serve::response(e.status, &e.headers, &body, Some(body.len())),
            ),
            (
                "close-delimited",
                serve::response(e.status, &e.headers, &body, None),
            ),
        ];
        if e.api == "v2" {
            let gz = gzip(&body);
            let mut headers = e.headers.clone();
            headers.push(("Content-Encoding".into(), "gzip".into()));
            replies.push((
                "gzip",
                serve::response(e.status, &headers, &gz, Some(gz.len())),
            ));
        }
        for (how, reply) in replies {
            let (got, auth) = query(reply, &limits()).await;
            assert_eq!(
                format!("{got:#?}"),
                format!("{:#?}", outcome(&e, &auth)),
                "{} served {how}",
                e.file
            );
            served += 1;
        }
    }
    assert!(served >= 70, "{served}");
}

#[tokio::test]
async fn byte_limit_applies_to_the_decompressed_body() {
    let body = read("recorded/v2/types.json");
    let exact = QueryLimits {
        max_bytes: body.len(),
        ..limits()
    };
    let short = QueryLimits {
        max_bytes: body.len() - 1,
        ..limits()
    };
    let gz = gzip(&body);
    assert!(gz.len() < body.len() - 1);
    let gz_headers = [("Content-Encoding".to_owned(), "gzip".to_owned())];
    for (name, reply) in [
        ("plain", serve::response(200, &[], &body, Some(body.len()))),
        ("close-delimited", serve::response(200, &[], &body, None)),
        (
            "gzip",
            serve::response(200, &gz_headers, &gz, Some(gz.len())),
        ),
    ] {
        let (ok, _) = query(reply.clone(), &exact).await;
        assert_types_table(primary(&ok.unwrap_or_else(|e| panic!("{name}: {e:?}"))));
        let (err, _) = query(reply, &short).await;
        let err = err.unwrap_err();
        assert!(
            matches!(err, QueryError::TooManyBytes { limit } if limit == body.len() - 1),
            "{name}: {err:?}"
        );
        assert!(err.is_permanent());
        assert_eq!(err.kind(), "too_large");
    }
}

/// The connection drops mid-body (fewer bytes than Content-Length): truncated, transient.
#[tokio::test]
async fn a_connection_cut_mid_body_is_truncated() {
    let body = read("recorded/v2/types.json");
    let cut = read("derived/v2/truncated_in_rows.json");
    assert!(body.starts_with(&cut));
    let (got, _) = query(serve::response(200, &[], &cut, Some(body.len())), &limits()).await;
    let err = got.unwrap_err();
    assert!(matches!(err, QueryError::Truncated { .. }), "{err:?}");
    assert!(!err.is_permanent());
}
