//! Conformance suite, built only with `--features sdk-fixtures` (Cargo.toml `required-features`) and
//! reading the directory `$ADXEXPORTER_KUSTO_FIXTURES` names (`.ci/run` sets both): every Microsoft
//! SDK-captured response there (kept outside this repository, never copied into it) decoded and
//! checked against the values its README states, plus the
//! partial-failure channels, truncation at every cut point, row limits and key order. The project's own
//! fixtures, tested by plain `cargo test`, are in `tests/fixtures/kusto/` (`tests/kusto_recorded.rs`).

#![cfg(feature = "sdk-fixtures")]

use std::path::PathBuf;

use adxexporter::query::{
    ColumnType, DataSet, QueryError, QueryLimits, Table, TableKind, Value, decode_v1, decode_v2,
    http_error,
};
use adxexporter::time::{Span, TICKS_PER_SECOND, Ticks};
use proptest::prelude::*;

/// The SDK captures' directory: the switch's second half, so nothing here names a path outside the
/// repository.
fn fixtures() -> PathBuf {
    std::env::var_os("ADXEXPORTER_KUSTO_FIXTURES")
        .map(PathBuf::from)
        .expect("set ADXEXPORTER_KUSTO_FIXTURES to the SDK captures' directory (.ci/run does)")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the sdk-fixtures suite needs the SDK captures there)",
            path.display()
        )
    })
}

fn limits() -> QueryLimits {
    QueryLimits {
        max_rows: 10_000,
        max_bytes: 1 << 20,
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

fn cell<'a>(t: &'a Table, row: usize, col: &str) -> &'a Value {
    let c = t
        .column_index(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    &t.row(row)[c]
}

fn dt(s: &str) -> Value {
    Value::DateTime(Ticks::parse(s).unwrap())
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn dynamic(x: &str) -> Value {
    Value::Dynamic(x.into())
}

// ---------- python/ ----------

fn assert_deft(set: &DataSet) {
    assert_eq!(set.kinds.len(), 3);
    assert_eq!(set.kinds[0], TableKind::QueryProperties);
    assert_eq!(set.kinds[2], TableKind::QueryCompletionInformation);
    let t = primary(set);
    assert_eq!(t.name, "Deft");
    assert_eq!(t.row_count(), 11);
    assert_eq!(t.columns.len(), 19);
    // Row 0: nulls everywhere except string columns, which are "".
    for col in ["rownumber", "xdouble", "xbool", "xint64", "xdate", "xtime"] {
        assert_eq!(cell(t, 0, col), &Value::Null, "{col}");
    }
    assert_eq!(cell(t, 0, "xsmalltext"), &s(""));
    assert_eq!(cell(t, 0, "xdynamicWithNulls"), &dynamic("\"\""));
    // Row 1.
    assert_eq!(cell(t, 1, "rownumber"), &Value::Int(0));
    assert_eq!(cell(t, 1, "xdate"), &dt("2014-01-01T01:01:01Z"));
    assert_eq!(cell(t, 1, "xtime"), &Value::TimeSpan(Span::ZERO));
    assert_eq!(cell(t, 1, "xbool"), &Value::Bool(false));
    assert_eq!(cell(t, 1, "xint64"), &Value::Long(0));
    // Row 2: +100 ns kept; 1 day + 1.0010001 s.
    assert_eq!(cell(t, 2, "xdouble"), &Value::Real(1.0001));
    assert_eq!(cell(t, 2, "xfloat"), &Value::Real(1.01));
    assert_eq!(
        cell(t, 2, "xdate"),
        &Value::DateTime(Ticks(Ticks::parse("2015-01-01T01:01:01Z").unwrap().0 + 1))
    );
    assert_eq!(
        cell(t, 2, "xtime"),
        &Value::TimeSpan(Span(86_400 * TICKS_PER_SECOND + 10_010_001))
    );
    assert_eq!(
        cell(t, 2, "xdynamicWithNulls"),
        &dynamic(r#"{"rowId":1,"arr":[0,1]}"#)
    );
    assert_eq!(cell(t, 2, "xsmalltext"), &s("One"));
    // Row 3: the sign applies to the whole timespan.
    assert_eq!(
        cell(t, 3, "xtime"),
        &Value::TimeSpan(Span(-(2 * 86_400 * TICKS_PER_SECOND + 20_020_002)))
    );
    assert_eq!(
        t.columns[t.column_index("xdate").unwrap()].ty,
        ColumnType::DateTime
    );
    // QCI levels 4 and 6 are neither errors nor warnings.
    assert!(set.warnings.is_empty());
}

#[test]
fn deft_all_basic_types() {
    assert_deft(&v2("python/deft.json").unwrap());
}

#[test]
fn alternative_order_equals_deft() {
    let alt = v2("python/alternative_order.json").unwrap();
    assert_deft(&alt);
    assert_eq!(alt, v2("python/deft.json").unwrap());
}

#[test]
fn deft_with_stray_progress_frame_still_decodes() {
    // A TableProgress that disagrees with IsProgressive:false is just progress: frame-type driven.
    let set = v2("python/deft_with_progressive_result.json").unwrap();
    assert_deft(&set);
}

#[test]
fn dataframe_year_zero_is_a_clean_error_naming_row_and_column() {
    let err = v2("python/dataframe.json").unwrap_err();
    match &err {
        QueryError::BadCell {
            table,
            row,
            column,
            detail,
        } => {
            assert_eq!(table, "temp");
            assert_eq!(*row, 1);
            assert_eq!(column, "RecordTime");
            assert!(detail.contains("0000-01-01"), "{detail}");
        }
        other => panic!("expected BadCell, got {other:?}"),
    }
    assert!(err.is_permanent());
    assert_eq!(err.kind(), "decode");
}

/// dataframe.json with the year-0 datetime moved to year 1 and the ragged row (7) removed.
#[test]
#[allow(clippy::approx_constant)] // 3.14159 is the fixture's data, not π
fn dataframe_special_values_without_invalid_rows() {
    let text = String::from_utf8(read("python/dataframe.json")).unwrap();
    let text = text.replace("0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z");
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let frames = doc.as_array_mut().unwrap();
    let table = frames
        .iter_mut()
        .find(|f| f["TableKind"] == "PrimaryResult")
        .unwrap();
    let rows = table["Rows"].as_array_mut().unwrap();
    let ragged = rows.remove(7);
    assert_eq!(ragged.as_array().unwrap().len(), 6);
    let set = decode_v2(doc.to_string().as_bytes(), &limits()).unwrap();
    let t = primary(&set);
    assert_eq!(t.row_count(), 7);
    // Row 0 ("now").
    assert_eq!(cell(t, 0, "RecordTime"), &dt("2021-12-22T11:43:00Z"));
    assert_eq!(cell(t, 0, "RecordOffset"), &Value::TimeSpan(Span::ZERO));
    assert_eq!(cell(t, 0, "RecordLong"), &Value::Long(92233720368));
    assert_eq!(cell(t, 0, "RecordReal"), &Value::Real(3.14159));
    assert_eq!(cell(t, 0, "RecordDouble"), &Value::Real(7.89));
    assert_eq!(cell(t, 0, "RecordDecimal"), &Value::Decimal("1.2".into()));
    assert!(
        matches!(cell(t, 0, "RecordDynamic"), Value::Dynamic(d) if d.starts_with("\"{\\\"Visualization"))
    );
    // Unknown type: kept as raw JSON, column typed Other.
    let miss = t.column_index("MissingType").unwrap();
    assert_eq!(t.columns[miss].ty, ColumnType::Other("missing".into()));
    assert_eq!(cell(t, 0, "MissingType"), &dynamic("\"miss\""));
    // Row 1: "NaN" strings; decimal text kept as sent.
    assert!(matches!(cell(t, 1, "RecordReal"), Value::Real(x) if x.is_nan()));
    assert!(matches!(cell(t, 1, "RecordDouble"), Value::Real(x) if x.is_nan()));
    assert_eq!(cell(t, 1, "RecordDecimal"), &Value::Decimal("NaN".into()));
    // Row 2 ("latest"): +Infinity; row 3: -Infinity.
    assert_eq!(cell(t, 2, "RecordTime"), &dt("9999-12-31T23:59:59Z"));
    assert_eq!(cell(t, 2, "RecordReal"), &Value::Real(f64::INFINITY));
    assert_eq!(cell(t, 3, "RecordDouble"), &Value::Real(f64::NEG_INFINITY));
    assert_eq!(cell(t, 3, "RecordTime"), &dt("1677-09-21T00:12:44Z"));
    // Integer ticks and a "1.01:01:01.0" string timespan.
    assert_eq!(
        cell(t, 5, "RecordOffset"),
        &Value::TimeSpan(Span(600_000_000))
    );
    assert_eq!(
        cell(t, 6, "RecordOffset"),
        &Value::TimeSpan(Span((86_400 + 3_661) * TICKS_PER_SECOND))
    );
}

#[test]
fn dataframe_row_seven_is_a_clean_error() {
    let body = String::from_utf8(read("python/dataframe.json")).unwrap();
    let fixed = body.replace("0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z");
    // Row 7 has "" in its datetime column (and only 6 of 13 cells): the first problem is named.
    match decode_v2(fixed.as_bytes(), &limits()).unwrap_err() {
        QueryError::BadCell {
            table, row, column, ..
        } => {
            assert_eq!(
                (table.as_str(), row, column.as_str()),
                ("temp", 7, "RecordTime")
            );
        }
        other => panic!("expected BadCell, got {other:?}"),
    }
    let mut doc: serde_json::Value = serde_json::from_str(&fixed).unwrap();
    let table = doc
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["TableKind"] == "PrimaryResult")
        .unwrap();
    assert_eq!(table["Rows"][7][1], "");
    table["Rows"][7][1] = serde_json::Value::Null;
    let ragged = doc.to_string();
    match decode_v2(ragged.as_bytes(), &limits()).unwrap_err() {
        QueryError::RaggedRow {
            table,
            row,
            cells,
            columns,
        } => {
            assert_eq!((table.as_str(), row, cells, columns), ("temp", 7, 6, 13));
        }
        other => panic!("expected RaggedRow, got {other:?}"),
    }
}

#[test]
fn dynamic_encodings_kept_as_raw_json() {
    let set = v2("python/dynamic.json").unwrap();
    let t = primary(&set);
    assert_eq!(
        t.row(0),
        &[
            dynamic("123"),
            dynamic("\"123\""),
            dynamic("\"test bad json\""),
            Value::Null,
            dynamic(r#""{\"rowId\":2,\"arr\":[0,2]}""#),
            dynamic(r#"{"rowId":2,"arr":[0,2]}"#),
        ]
    );
}

#[test]
fn null_values_every_type() {
    let set = v2("python/null_values.json").unwrap();
    let t = primary(&set);
    assert_eq!(t.row_count(), 1);
    assert!(t.row(0).iter().all(|v| *v == Value::Null));
    let types: Vec<_> = t.columns.iter().map(|c| c.ty.clone()).collect();
    use ColumnType::*;
    assert_eq!(
        types,
        [
            String, Int, Bool, DateTime, Dynamic, Guid, Long, Real, TimeSpan, Decimal
        ]
    );
    // The QueryProperties row [null, null, null] too.
    assert!(set.tables[0].row(0).iter().all(|v| *v == Value::Null));
}

#[test]
fn pandas_bool_nullable() {
    let set = v2("python/pandas_bool.json").unwrap();
    let got: Vec<_> = primary(&set).rows().map(|r| r[0].clone()).collect();
    assert_eq!(got, [Value::Null, Value::Bool(true), Value::Bool(false)]);
}

#[test]
fn zero_results_is_an_empty_table() {
    let set = v2("python/zero_results.json").unwrap();
    let t = primary(&set);
    assert_eq!(t.row_count(), 0);
    assert_eq!(t.columns[0].name, "print_0");
    assert_eq!(t.columns[0].ty, ColumnType::String);
}

#[test]
fn progressive_result_header_fragment_completion() {
    let set = v2("python/progressive_result.json").unwrap();
    assert_eq!(
        set.kinds,
        [
            TableKind::QueryProperties,
            TableKind::PrimaryResult,
            TableKind::QueryCompletionInformation
        ]
    );
    let t = primary(&set);
    assert_eq!(t.columns.len(), 22);
    assert_eq!(t.row_count(), 5);
    assert_eq!(cell(t, 0, "StartTime"), &dt("2007-01-01T00:00:00Z"));
    assert_eq!(cell(t, 0, "State"), &s("NORTH CAROLINA"));
    assert_eq!(cell(t, 0, "BeginLat"), &Value::Real(35.52));
    assert_eq!(cell(t, 0, "BeginLon"), &Value::Real(-81.63));
    for row in 1..5 {
        assert_eq!(cell(t, row, "BeginLat"), &Value::Null);
    }
    assert!(matches!(cell(t, 0, "StormSummary"), Value::Dynamic(d) if d.starts_with('{')));
}

#[test]
fn partial_failure_in_rows_and_completion() {
    let err = v2("python/query_partial_results_defer_is_false.json").unwrap_err();
    match &err {
        QueryError::PartialFailure { errors, cancelled } => {
            // The in-row error and DataSetCompletion's copy are the same error.
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].code.as_deref(), Some("LimitsExceeded"));
            assert!(errors[0].message.contains("80DA0003"));
            assert_eq!(errors[0].permanent, Some(false));
            assert!(!cancelled);
        }
        other => panic!("expected PartialFailure, got {other:?}"),
    }
    assert_eq!(err.kind(), "partial_failure");
    assert!(!err.is_permanent());
}

#[test]
fn deferred_partial_failure_only_in_completion_information() {
    let err = v2("python/query_partial_results_defer_is_true.json").unwrap_err();
    match &err {
        QueryError::PartialFailure { errors, .. } => {
            assert_eq!(errors.len(), 1);
            assert!(errors[0].message.contains("E_QUERY_RESULT_SET_TOO_LARGE"));
            assert!(errors[0].message.contains("QueryLimitsExceeded"));
        }
        other => panic!("expected PartialFailure, got {other:?}"),
    }
    // Result-set-too-large cannot succeed on retry.
    assert!(err.is_permanent());
}

#[test]
fn v1_show_version() {
    let set = v1("python/versionshowcommandresult.json").unwrap();
    let t = primary(&set);
    assert_eq!(cell(t, 0, "BuildVersion"), &s("1.0.6693.14577"));
    assert_eq!(cell(t, 0, "BuildTime"), &dt("2018-04-29T08:05:54Z"));
    assert_eq!(cell(t, 0, "ServiceType"), &s("Engine"));
    assert_eq!(cell(t, 0, "ProductVersion"), &s("KustoMain_2018.04.29.5"));
}

#[test]
fn v1_admin_then_query_table_of_contents() {
    let set = v1("python/adminthenquery.json").unwrap();
    assert_eq!(
        set.kinds,
        [
            TableKind::PrimaryResult,
            TableKind::QueryProperties,
            TableKind::QueryCompletionInformation,
            TableKind::TableOfContents
        ]
    );
    assert_eq!(primary(&set).row_count(), 2);
    // The Stats row's StatusDescription is a JSON object in a string column: kept as its JSON text.
    let status = &set.tables[2];
    let desc = status.column_index("StatusDescription").unwrap();
    assert!(
        status
            .rows()
            .any(|r| matches!(&r[desc], Value::String(x) if x.starts_with('{')))
    );
}

// ---------- go/v2 ----------

fn assert_valid_row0(t: &Table) {
    let epoch_2020 = Ticks::parse("2020-03-04T14:05:01Z").unwrap().0;
    assert_eq!(
        t.row(0),
        &[
            Value::Int(1),
            Value::Decimal("2.00000000000001".into()),
            Value::DateTime(Ticks(epoch_2020 + 3_109_965)),
            Value::TimeSpan(Span((3600 + 23 * 60 + 45) * TICKS_PER_SECOND + 6_789_000)),
            dynamic(r#"{"moshe":"value"}"#),
            Value::Bool(true),
            Value::Real(0.01),
            s("asdf"),
            Value::Long(i64::MAX),
            Value::Guid("123e27de-1e4e-49d9-b579-fe0b331d3642".into()),
        ]
    );
}

#[test]
fn go_valid_frames_all_types() {
    let set = v2("go/v2/validFrames.json").unwrap();
    let t = primary(&set);
    assert_eq!(t.name, "AllDataTypes");
    assert_eq!(t.row_count(), 2);
    assert_valid_row0(t);
    let row1 = t.row(1);
    assert_eq!(row1[7], s(""));
    assert!(
        row1.iter()
            .enumerate()
            .all(|(i, v)| i == 7 || *v == Value::Null)
    );
    let qci = set
        .tables
        .iter()
        .zip(&set.kinds)
        .find(|(_, k)| **k == TableKind::QueryCompletionInformation)
        .unwrap()
        .0;
    assert_eq!(
        cell(qci, 0, "Timestamp"),
        &dt("2023-11-26T13:34:17.0731478Z")
    );
}

#[test]
fn go_aliases_decode_like_valid_frames() {
    let set = v2("go/v2/aliases.json").unwrap();
    let t = primary(&set);
    assert_valid_row0(t);
    use ColumnType::*;
    let types: Vec<_> = t.columns.iter().map(|c| c.ty.clone()).collect();
    assert_eq!(
        types,
        [
            Int, Decimal, DateTime, TimeSpan, Dynamic, Bool, Real, String, Long, Guid
        ]
    );
}

#[test]
fn go_two_primary_tables_concatenate_fragments() {
    let set = v2("go/v2/twoTables.json").unwrap();
    let prim: Vec<&Table> = set.primary_tables().collect();
    assert_eq!(prim.len(), 2);
    let a: Vec<_> = prim[0].rows().map(|r| r.to_vec()).collect();
    assert_eq!(a, [[Value::Int(1)], [Value::Int(2)], [Value::Int(3)]]);
    let b: Vec<_> = prim[1].rows().map(|r| r.to_vec()).collect();
    assert_eq!(
        b,
        [
            [s("a"), Value::Int(1)],
            [s("b"), Value::Int(2)],
            [s("c"), Value::Int(3)]
        ]
    );
}

#[test]
fn go_partial_error_at_end_of_table() {
    match v2("go/v2/partialError.json").unwrap_err() {
        QueryError::PartialFailure { errors, .. } => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].code.as_deref(), Some("LimitsExceeded"));
            assert!(errors[0].message.contains("E_QUERY_RESULT_SET_TOO_LARGE"));
        }
        other => panic!("expected PartialFailure, got {other:?}"),
    }
}

#[test]
fn go_plain_text_error_bodies() {
    // On a 200, a body that is not a frame array is surfaced as text.
    let err = v2("go/v2/error.txt").unwrap_err();
    assert!(matches!(&err, QueryError::UnexpectedBody { text } if text.starts_with("Bad request")));
    // Through the error-body path (non-2xx status).
    let err = http_error(400, None, &read("go/v2/error.txt"), "none", "db");
    assert!(err.to_string().contains("Control commands"), "{err}");
    assert!(err.is_permanent());
    assert_eq!(err.kind(), "bad_request");
    let err = http_error(400, None, &read("go/v1/error.txt"), "none", "db");
    assert!(err.to_string().contains("General_BadRequest"), "{err}");
    let err = v1("go/v1/error.txt").unwrap_err();
    assert!(matches!(err, QueryError::Malformed { .. }), "{err:?}");
}

// ---------- go/v1 ----------

#[test]
fn go_v1_success_and_data_type_only_agree() {
    for name in ["go/v1/success.json", "go/v1/dataTypeOnly.json"] {
        let set = v1(name).unwrap();
        assert_eq!(
            set.kinds,
            [
                TableKind::PrimaryResult,
                TableKind::PrimaryResult,
                TableKind::QueryProperties,
                TableKind::QueryCompletionInformation,
                TableKind::TableOfContents
            ],
            "{name}"
        );
        let prim: Vec<&Table> = set.primary_tables().collect();
        let a: Vec<_> = prim[0].rows().map(|r| r[0].clone()).collect();
        assert_eq!(a, [Value::Int(1), Value::Int(2), Value::Int(3)], "{name}");
        assert_eq!(prim[1].row(2), &[s("c"), Value::Int(3)], "{name}");
    }
    assert_eq!(
        v1("go/v1/success.json").unwrap(),
        v1("go/v1/dataTypeOnly.json").unwrap()
    );
}

#[test]
fn go_v1_bool_as_int() {
    let set = v1("go/v1/booleanInt.json").unwrap();
    let got: Vec<_> = primary(&set).rows().map(|r| r[0].clone()).collect();
    use Value::*;
    assert_eq!(
        got,
        [Bool(false), Bool(false), Bool(true), Bool(true), Null]
    );
}

#[test]
fn go_v1_partial_error() {
    let err = v1("go/v1/partialError.json").unwrap_err();
    assert!(matches!(err, QueryError::PartialFailure { .. }));
    assert!(
        err.to_string()
            .contains("Query execution has exceeded the allowed limits")
    );
}

// ---------- channels, limits, truncation (synthetic bodies) ----------

const HEADER: &str = r#"{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"}"#;
const DONE: &str = r#"{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}"#;

fn body(frames: &[&str]) -> String {
    format!("[{}]", frames.join(",\n"))
}

fn primary_frame(rows: &str) -> String {
    format!(
        r#"{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{{"ColumnName":"n","ColumnType":"long"}},{{"ColumnName":"s","ColumnType":"string"}}],"Rows":{rows}}}"#
    )
}

fn decode_str(b: &str) -> Result<DataSet, QueryError> {
    decode_v2(b.as_bytes(), &limits())
}

#[test]
fn small_body_decodes() {
    let b = body(&[
        HEADER,
        &primary_frame(r#"[[1,"a"],[2,"b\"q\u00e9"]]"#),
        DONE,
    ]);
    let set = decode_str(&b).unwrap();
    assert_eq!(primary(&set).row(1), &[Value::Long(2), s("b\"qé")]);
}

#[test]
fn rows_before_columns_are_buffered() {
    let frame = r#"{"Rows":[[7,"x"]],"TableName":"T","FrameType":"DataTable","Columns":[{"ColumnType":"long","ColumnName":"n"},{"ColumnName":"s","ColumnType":"string"}],"TableKind":"PrimaryResult","TableId":1}"#;
    let set = decode_str(&body(&[HEADER, frame, DONE])).unwrap();
    assert_eq!(primary(&set).name, "T");
    assert_eq!(primary(&set).row(0), &[Value::Long(7), s("x")]);
}

#[test]
fn fragments_with_replace_and_out_of_order_keys() {
    let cols = r#"[{"ColumnName":"n","ColumnType":"int"}]"#;
    let head = format!(
        r#"{{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","TableName":"P","Columns":{cols}}}"#
    );
    let b = body(&[
        HEADER,
        &head,
        r#"{"FrameType":"TableFragment","TableId":1,"TableFragmentType":"DataAppend","Rows":[[1],[2]]}"#,
        r#"{"FrameType":"TableProgress","TableId":1,"TableProgress":50.0}"#,
        // Rows before TableFragmentType: buffered, then the replace applies.
        r#"{"Rows":[[10]],"FrameType":"TableFragment","TableFragmentType":"DataReplace","TableId":1}"#,
        r#"{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":1,"Rows":[[11]]}"#,
        r#"{"FrameType":"TableFragment","TableFragmentType":"DataReplace","TableId":1,"Rows":[[20],[21]]}"#,
        r#"{"FrameType":"TableCompletion","TableId":1,"RowCount":2}"#,
        DONE,
    ]);
    let set = decode_str(&b).unwrap();
    let got: Vec<_> = primary(&set).rows().map(|r| r[0].clone()).collect();
    assert_eq!(got, [Value::Int(20), Value::Int(21)]);
}

#[test]
fn replace_frees_row_budget() {
    let cols = r#"[{"ColumnName":"n","ColumnType":"int"}]"#;
    let head = format!(
        r#"{{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","TableName":"P","Columns":{cols}}}"#
    );
    let b = body(&[
        HEADER,
        &head,
        r#"{"FrameType":"TableFragment","TableId":1,"TableFragmentType":"DataAppend","Rows":[[1],[2]]}"#,
        r#"{"FrameType":"TableFragment","TableId":1,"TableFragmentType":"DataReplace","Rows":[[3],[4]]}"#,
        r#"{"FrameType":"TableCompletion","TableId":1,"RowCount":2}"#,
        DONE,
    ]);
    let tight = QueryLimits {
        max_rows: 2,
        max_bytes: 1 << 20,
    };
    assert_eq!(
        primary(&decode_v2(b.as_bytes(), &tight).unwrap()).row_count(),
        2
    );
}

#[test]
fn fragment_without_header_is_a_protocol_error() {
    let b = body(&[
        HEADER,
        r#"{"FrameType":"TableFragment","TableId":9,"TableFragmentType":"DataAppend","Rows":[[1]]}"#,
        DONE,
    ]);
    assert!(matches!(decode_str(&b), Err(QueryError::Protocol { .. })));
}

#[test]
fn header_without_completion_is_an_error() {
    let b = body(&[
        HEADER,
        r#"{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","TableName":"P","Columns":[]}"#,
        DONE,
    ]);
    assert!(matches!(decode_str(&b), Err(QueryError::Protocol { .. })));
}

#[test]
fn channel_in_row_error_object() {
    let rows = r#"[[1,"a"],{"OneApiErrors":[{"error":{"code":"X","message":"m","@message":"detail","@permanent":true}}]}]"#;
    let err = decode_str(&body(&[HEADER, &primary_frame(rows), DONE])).unwrap_err();
    match &err {
        QueryError::PartialFailure { errors, .. } => {
            assert_eq!(errors[0].code.as_deref(), Some("X"));
            assert_eq!(errors[0].message, "detail");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_permanent());
}

#[test]
fn channel_table_completion() {
    let b = body(&[
        HEADER,
        r#"{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","TableName":"P","Columns":[{"ColumnName":"n","ColumnType":"int"}]}"#,
        r#"{"FrameType":"TableCompletion","TableId":1,"RowCount":0,"OneApiErrors":[{"error":{"code":"C","@message":"end of table"}}]}"#,
        DONE,
    ]);
    let err = decode_str(&b).unwrap_err();
    assert!(err.to_string().contains("end of table"), "{err}");
}

#[test]
fn channel_dataset_completion_has_errors_and_cancelled() {
    let b = body(&[
        HEADER,
        &primary_frame("[]"),
        r#"{"FrameType":"DataSetCompletion","HasErrors":true,"Cancelled":false}"#,
    ]);
    assert!(matches!(
        decode_str(&b),
        Err(QueryError::PartialFailure { .. })
    ));
    let b = body(&[
        HEADER,
        &primary_frame("[]"),
        r#"{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":true}"#,
    ]);
    match decode_str(&b).unwrap_err() {
        QueryError::PartialFailure { cancelled, .. } => assert!(cancelled),
        other => panic!("{other:?}"),
    }
    let b = body(&[
        HEADER,
        &primary_frame("[]"),
        r#"{"FrameType":"DataSetCompletion","HasErrors":true,"Cancelled":false,"OneApiErrors":[{"error":{"code":"D","@message":"dataset level"}}]}"#,
    ]);
    assert!(
        decode_str(&b)
            .unwrap_err()
            .to_string()
            .contains("dataset level")
    );
}

#[test]
fn channel_completion_information_levels() {
    let qci = |level: i32| {
        format!(
            r#"{{"FrameType":"DataTable","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":[{{"ColumnName":"Level","ColumnType":"int"}},{{"ColumnName":"StatusCodeName","ColumnType":"string"}}],"Rows":[[{level},"something happened"]]}}"#
        )
    };
    let err = decode_str(&body(&[HEADER, &primary_frame("[]"), &qci(2), DONE])).unwrap_err();
    assert!(err.to_string().contains("something happened"));
    let set = decode_str(&body(&[HEADER, &primary_frame("[]"), &qci(3), DONE])).unwrap();
    assert_eq!(set.warnings, ["something happened"]);
    assert!(
        decode_str(&body(&[HEADER, &primary_frame("[]"), &qci(4), DONE]))
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn row_limit_names_the_limit() {
    let b = body(&[HEADER, &primary_frame(r#"[[1,"a"],[2,"b"],[3,"c"]]"#), DONE]);
    let ok = QueryLimits {
        max_rows: 3,
        max_bytes: 1 << 20,
    };
    assert_eq!(
        primary(&decode_v2(b.as_bytes(), &ok).unwrap()).row_count(),
        3
    );
    let tight = QueryLimits {
        max_rows: 2,
        max_bytes: 1 << 20,
    };
    let err = decode_v2(b.as_bytes(), &tight).unwrap_err();
    assert!(matches!(err, QueryError::TooManyRows { limit: 2 }));
    assert!(err.to_string().contains("maxRows"));
    assert!(err.is_permanent());
    assert_eq!(err.kind(), "too_many_rows");
    // Non-primary tables do not count.
    let set = decode_v2(
        read("python/deft.json").as_slice(),
        &QueryLimits {
            max_rows: 11,
            max_bytes: 1 << 20,
        },
    );
    assert!(set.is_ok());
}

#[test]
fn type_mismatches_name_table_row_and_column() {
    for (rows, detail) in [
        (r#"[[1,"a"],["x","b"]]"#, "expected long"),
        (r#"[[1,"a"],[1.5,"b"]]"#, "expected long"),
        (r#"[[1,"a"],[1,{"o":1}]]"#, "expected string"),
        (r#"[[1,"a"],[9223372036854775808,"b"]]"#, "long range"),
    ] {
        match decode_str(&body(&[HEADER, &primary_frame(rows), DONE])).unwrap_err() {
            QueryError::BadCell {
                table,
                row,
                detail: d,
                ..
            } => {
                assert_eq!((table.as_str(), row), ("PrimaryResult", 1));
                assert!(d.contains(detail), "{d}");
            }
            other => panic!("{rows}: {other:?}"),
        }
    }
    match decode_str(&body(&[
        HEADER,
        &primary_frame(r#"[[1,"a","extra"]]"#),
        DONE,
    ]))
    .unwrap_err()
    {
        QueryError::RaggedRow {
            cells: 3,
            columns: 2,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_is_exact_and_reals_accept_integers() {
    let frame = r#"{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"P","Columns":[{"ColumnName":"l","ColumnType":"long"},{"ColumnName":"r","ColumnType":"real"},{"ColumnName":"d","ColumnType":"decimal"}],"Rows":[[-9223372036854775808,5,"1e400"],[9007199254740993,"NaN",12.50]]}"#;
    let set = decode_str(&body(&[HEADER, frame, DONE])).unwrap();
    let t = primary(&set);
    assert_eq!(t.row(0)[0], Value::Long(i64::MIN));
    assert_eq!(t.row(0)[1], Value::Real(5.0));
    assert_eq!(t.row(0)[2], Value::Decimal("1e400".into()));
    assert_eq!(t.row(1)[0], Value::Long(9_007_199_254_740_993));
    assert!(matches!(t.row(1)[1], Value::Real(x) if x.is_nan()));
    assert_eq!(t.row(1)[2], Value::Decimal("12.50".into()));
}

#[test]
fn pretty_printed_dynamic_is_compacted() {
    let frame = "{\"FrameType\":\"DataTable\",\"TableId\":1,\"TableKind\":\"PrimaryResult\",\"TableName\":\"P\",\"Columns\":[{\"ColumnName\":\"d\",\"ColumnType\":\"dynamic\"}],\"Rows\":[[ { \"a b\" : [ 1, 2 ] } ]]}";
    let set = decode_str(&body(&[HEADER, frame, DONE])).unwrap();
    assert_eq!(primary(&set).row(0)[0], dynamic(r#"{"a b":[1,2]}"#));
}

#[test]
fn repeated_text_cells_share_one_allocation() {
    let b = body(&[
        HEADER,
        &primary_frame(r#"[[1,"a"],[2,"b"],[3,"a"],[4,"x\"q"],[5,"x\"q"],[6,""],[7,""]]"#),
        DONE,
    ]);
    let set = decode_str(&b).unwrap();
    let t = primary(&set);
    let texts: Vec<&Value> = t.rows().map(|r| &r[1]).collect();
    assert_eq!(
        texts,
        [
            &s("a"),
            &s("b"),
            &s("a"),
            &s("x\"q"),
            &s("x\"q"),
            &s(""),
            &s("")
        ]
    );
    let shared = |a: usize, b: usize| match (&t.row(a)[1], &t.row(b)[1]) {
        (Value::String(x), Value::String(y)) => arcstr::ArcStr::ptr_eq(x, y),
        other => panic!("{other:?}"),
    };
    assert!(shared(0, 2), "a value seen earlier in the column is shared");
    assert!(shared(3, 4), "an escaped value is shared too");
    assert!(shared(5, 6));
}

#[test]
fn a_column_of_distinct_values_decodes_exactly() {
    // More distinct values than the interning cache holds or tries, with repeats in between.
    let rows: Vec<String> = (0..10_000)
        .map(|i| format!(r#"[{i},"v{}"]"#, (i * 7919) % 8_000))
        .collect();
    let b = body(&[
        HEADER,
        &primary_frame(&format!("[{}]", rows.join(","))),
        DONE,
    ]);
    let set = decode_str(&b).unwrap();
    let t = primary(&set);
    assert_eq!(t.row_count(), 10_000);
    for (i, row) in t.rows().enumerate() {
        assert_eq!(row[1], s(&format!("v{}", (i * 7919) % 8_000)));
    }
}

#[test]
fn a_body_that_is_not_utf8_is_malformed_or_truncated() {
    let ok = body(&[HEADER, &primary_frame(r#"[[1,"é"]]"#), DONE]).into_bytes();
    let at = ok.iter().position(|&b| b == 0xC3).unwrap();
    let mut bad = ok.clone();
    bad[at + 1] = b'x';
    let err = decode_v2(&bad, &limits()).unwrap_err();
    assert!(matches!(err, QueryError::Malformed { .. }), "{err:?}");
    let err = decode_v2(&ok[..=at], &limits()).unwrap_err();
    assert!(matches!(err, QueryError::Truncated { .. }), "{err:?}");
}

#[test]
fn missing_completion_is_truncated_and_transient() {
    let b = body(&[HEADER, &primary_frame(r#"[[1,"a"]]"#)]);
    let err = decode_str(&b).unwrap_err();
    assert!(matches!(err, QueryError::Truncated { .. }), "{err:?}");
    assert!(!err.is_permanent());
    assert!(matches!(decode_str(""), Err(QueryError::Truncated { .. })));
}

#[test]
fn every_fixture_prefix_is_an_error_never_a_panic() {
    let full = read("go/v2/twoTables.json");
    let end = full.len()
        - (full
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count());
    for cut in 0..end {
        let r = decode_v2(&full[..cut], &limits());
        assert!(r.is_err(), "prefix of {cut} bytes decoded");
    }
    assert!(decode_v2(&full[..end], &limits()).is_ok());
}

proptest! {
    /// A body cut anywhere decodes only if nothing but trailing whitespace was cut.
    #[test]
    fn prefixes_are_ok_only_when_complete(cut in 0usize..2000) {
        let full = body(&[HEADER, &primary_frame(r#"[[1,"a"],[2,"b\u00e9\"c"],[3,null]]"#), DONE]) + "\n";
        let cut = cut.min(full.len());
        let complete = full[..cut].trim_end() == full.trim_end();
        let r = decode_v2(&full.as_bytes()[..cut], &limits());
        prop_assert_eq!(r.is_ok(), complete);
        if let Err(e) = r {
            prop_assert!(matches!(e, QueryError::Truncated { .. }), "{:?}", e);
        }
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_v2(&bytes, &limits());
        let _ = decode_v1(&bytes, &limits());
    }
}
