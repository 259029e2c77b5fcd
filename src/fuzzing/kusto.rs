//! Kusto response bodies ([`decode_v2`], [`decode_v1`]) under arbitrary bytes. For every input:
//!
//! - the decoder returns, `Ok` or a classified error whose message renders (never a panic or an
//!   overflow), and so does the error-body reader [`http_error`];
//! - an `Ok` [`DataSet`] is well formed: one kind per table, every row exactly as wide as its
//!   columns, at most [`LIMITS`]`.max_rows` primary rows;
//! - it survives a round trip: written back as a plain v2 body (one `DataTable` per table, see
//!   [`encode_v2`]) it decodes to an equal `DataSet` (NaN equal to NaN). So nothing the decoder
//!   returns depends on wire details it then forgets (how a cell was spelled, frame order,
//!   fragments), and a v1 result means exactly what the same tables mean in v2.

use std::fmt::Write;

use crate::query::{
    DataSet, QueryLimits, Table, TableKind, Value, column_type_name, decode_v1, decode_v2,
    http_error,
};

/// Small row budget so the fuzzer reaches the limit path with short inputs.
const LIMITS: QueryLimits = QueryLimits {
    max_rows: 64,
    max_bytes: 1 << 20,
};

/// v2 body (`/v2/rest/query`): frames in any order and shape. The same bytes as an error response
/// body (any non-2xx status) go through [`http_error`].
pub fn kusto_v2(data: &[u8]) {
    match decode_v2(data, &LIMITS) {
        Ok(set) => check(&set, "v2"),
        Err(e) => drop(e.to_string()),
    }
    drop(http_error(400, None, data, "fuzz auth", "fuzzdb").to_string());
}

/// v1 body (`/v1/rest/query`, `/v1/rest/mgmt`): `{"Tables":[...]}` with a TableOfContents.
pub fn kusto_v1(data: &[u8]) {
    match decode_v1(data, &LIMITS) {
        Ok(set) => check(&set, "v1"),
        Err(e) => drop(e.to_string()),
    }
}

fn check(set: &DataSet, dialect: &str) {
    assert_eq!(set.tables.len(), set.kinds.len(), "one kind per table");
    let mut primary_rows = 0;
    for (table, kind) in set.tables.iter().zip(&set.kinds) {
        for row in table.rows() {
            assert_eq!(row.len(), table.columns.len(), "ragged row in {table:?}");
        }
        assert_eq!(table.rows().len(), table.row_count());
        if *kind == TableKind::PrimaryResult {
            primary_rows += table.row_count();
        }
    }
    assert!(
        primary_rows <= LIMITS.max_rows,
        "{primary_rows} primary rows passed a limit of {}",
        LIMITS.max_rows
    );
    let body = encode_v2(set);
    let again = decode_v2(body.as_bytes(), &LIMITS).unwrap_or_else(|e| {
        panic!("a {dialect} result written back as v2 does not decode: {e}\nbody: {body}")
    });
    assert!(
        same_data_set(set, &again),
        "a {dialect} result written back as v2 decodes differently\nfirst:  {set:?}\nsecond: {again:?}\nbody: {body}"
    );
}

/// A plain, non-progressive v2 body holding exactly `set`: one `DataTable` per table, in order.
pub(crate) fn encode_v2(set: &DataSet) -> String {
    let mut out = String::from(
        r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0","IsFragmented":false}"#,
    );
    for (id, (table, kind)) in set.tables.iter().zip(&set.kinds).enumerate() {
        let _ = write!(
            out,
            r#",{{"FrameType":"DataTable","TableId":{id},"TableKind":{},"TableName":{},"Columns":["#,
            json_text(kind_name(kind)),
            json_text(&table.name)
        );
        for (i, column) in table.columns.iter().enumerate() {
            let _ = write!(
                out,
                r#"{}{{"ColumnName":{},"ColumnType":{}}}"#,
                if i == 0 { "" } else { "," },
                json_text(&column.name),
                json_text(column_type_name(&column.ty))
            );
        }
        out.push_str(r#"],"Rows":["#);
        for (r, row) in table.rows().enumerate() {
            out.push_str(if r == 0 { "[" } else { ",[" });
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    out.push(',');
                }
                encode_cell(cell, &mut out);
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str(r#",{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#);
    out
}

fn kind_name(kind: &TableKind) -> &str {
    match kind {
        TableKind::PrimaryResult => "PrimaryResult",
        TableKind::QueryCompletionInformation => "QueryCompletionInformation",
        TableKind::QueryProperties => "QueryProperties",
        TableKind::TableOfContents => "TableOfContents",
        TableKind::QueryTraceLog => "QueryTraceLog",
        TableKind::QueryPerfLog => "QueryPerfLog",
        TableKind::QueryPlan => "QueryPlan",
        TableKind::Other(name) => name,
    }
}

/// A cell as Kusto sends it: reals as numbers or `"NaN"`/`"Infinity"`, decimals, datetimes and
/// timespans as strings, dynamic as its raw JSON.
fn encode_cell(cell: &Value, out: &mut String) {
    let _ = match cell {
        Value::Null => write!(out, "null"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Long(l) => write!(out, "{l}"),
        Value::Real(r) if r.is_nan() => write!(out, r#""NaN""#),
        Value::Real(r) if r.is_infinite() => {
            write!(
                out,
                "{}",
                if *r > 0.0 {
                    r#""Infinity""#
                } else {
                    r#""-Infinity""#
                }
            )
        }
        Value::Real(r) => write!(out, "{}", serde_json::Number::from_f64(*r).expect("finite")),
        Value::Decimal(s) | Value::Guid(s) | Value::String(s) => write!(out, "{}", json_text(s)),
        Value::DateTime(t) => write!(out, "{}", json_text(&t.to_string())),
        Value::TimeSpan(s) => write!(out, "{}", json_text(&s.kusto_text())),
        Value::Dynamic(raw) => write!(out, "{raw}"),
    };
}

fn json_text(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn same_data_set(a: &DataSet, b: &DataSet) -> bool {
    a.kinds == b.kinds
        && a.warnings == b.warnings
        && a.tables.len() == b.tables.len()
        && a.tables
            .iter()
            .zip(&b.tables)
            .all(|(x, y)| same_table(x, y))
}

fn same_table(a: &Table, b: &Table) -> bool {
    a.name == b.name
        && a.columns == b.columns
        && a.row_count() == b.row_count()
        && a.rows()
            .zip(b.rows())
            .all(|(x, y)| x.iter().zip(y).all(|(p, q)| same_cell(p, q)))
}

/// `==`, except that NaN equals NaN (Kusto's `"NaN"` is one value).
fn same_cell(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_v2_round_trips_every_cell_type() {
        let body = br#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},
{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"T","Columns":[
{"ColumnName":"b","ColumnType":"bool"},{"ColumnName":"i","ColumnType":"int"},{"ColumnName":"l","ColumnType":"long"},
{"ColumnName":"r","ColumnType":"real"},{"ColumnName":"d","ColumnType":"decimal"},{"ColumnName":"t","ColumnType":"datetime"},
{"ColumnName":"s","ColumnType":"timespan"},{"ColumnName":"g","ColumnType":"guid"},{"ColumnName":"x","ColumnType":"string"},
{"ColumnName":"y","ColumnType":"dynamic"},{"ColumnName":"z","ColumnType":"mystery"}],
"Rows":[[true,-1,9223372036854775807,"NaN","1.5","2020-03-04T14:05:01.3109965Z","-1.02:03:04.5","g\"1","a\nb",{ "a" : [1, 2] },[ 3 ]],
[null,null,null,0.1,2,null,600000000,null,null,"str",null]]},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        let set = decode_v2(body, &LIMITS).unwrap();
        assert_eq!(set.tables[0].row_count(), 2);
        check(&set, "v2");
        // The property catches a cell that changes: a different real is a different data set.
        let mut other = set.clone();
        other.tables[0].cells_mut()[3] = Value::Real(1.0);
        assert!(!same_data_set(&set, &other));
    }
}
