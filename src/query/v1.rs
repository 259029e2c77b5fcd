//! The v1 response decoder (`/v1/rest/mgmt`, `/v1/rest/query`): `{"Tables":[...],"Exceptions":[...]}`.
//!
//! Columns may carry only the .NET `DataType` (older services); bools may be `0`/`1`; string columns may
//! hold JSON objects (QueryStatus). Table kinds come from the trailing TableOfContents when there are
//! more than two tables, else table 0 is the primary result (the Python SDK's rule). Row-level
//! `{"Exceptions":[...]}`, top-level `Exceptions` and QueryStatus rows with Severity ≤ 2 are partial failures.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::cells::{Dialect, RowsCtx, Sideband, decode_raw_rows};
use super::error::{KustoErrorInfo, QueryError};
use super::table::{Table, Value};
use super::v2::{WireColumn, check_partial, json_error};
use super::{DataSet, QueryLimits, TableKind};

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "Tables", borrow)]
    tables: Vec<WireTable<'a>>,
    #[serde(rename = "Exceptions", default)]
    exceptions: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireTable<'a> {
    #[serde(rename = "TableName", default)]
    name: String,
    #[serde(rename = "Columns")]
    columns: Vec<WireColumn>,
    #[serde(rename = "Rows", borrow)]
    rows: &'a RawValue,
}

/// Decodes a v1 body. Pure: no IO.
pub fn decode_v1(body: &[u8], limits: &QueryLimits) -> Result<DataSet, QueryError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| json_error(e, body))?;
    let mut side = Sideband::default();
    let count = body.tables.len();
    let mut tables: Vec<Option<Table>> = vec![None; count];
    let mut kinds = vec![TableKind::Other(String::new()); count];
    // The TableOfContents (last, when there are more than two tables) names the others' kinds.
    let mut order: Vec<usize> = (0..count).collect();
    if count > 2 {
        order.rotate_right(1);
        kinds[count - 1] = TableKind::TableOfContents;
    } else if count > 0 {
        kinds[0] = TableKind::PrimaryResult;
        if count == 2 {
            kinds[1] = TableKind::QueryProperties;
        }
    }
    let mut wire: Vec<Option<WireTable>> = body.tables.into_iter().map(Some).collect();
    for i in order {
        let Some(w) = wire.get_mut(i).and_then(Option::take) else {
            continue;
        };
        let columns = w.columns.into_iter().map(WireColumn::into_column).collect();
        let mut table = Table::new(w.name, columns);
        let ctx = RowsCtx {
            label: table.name.clone(),
            dialect: Dialect::V1,
            max_rows: (kinds[i] == TableKind::PrimaryResult).then_some(limits.max_rows),
        };
        decode_raw_rows(w.rows, &mut table, &ctx, &mut side)?;
        if kinds[i] == TableKind::TableOfContents {
            apply_table_of_contents(&table, &mut kinds[..i]);
        }
        tables[i] = Some(table);
    }
    let mut set = DataSet {
        tables: tables.into_iter().flatten().collect(),
        kinds,
        warnings: Vec::new(),
    };
    let mut errors = side.partial;
    if let Some(ex) = &body.exceptions {
        errors.extend(KustoErrorInfo::list_from_json(ex));
    }
    let (status_errors, warnings) = set.completion_events();
    errors.extend(status_errors);
    set.warnings = warnings;
    check_partial(set, errors, false)
}

/// TableOfContents rows, in table order: `Kind` QueryResult / QueryProperties / QueryStatus.
fn apply_table_of_contents(toc: &Table, kinds: &mut [TableKind]) {
    let Some(kind_col) = toc.column_index("Kind") else {
        return;
    };
    for (kind, row) in kinds.iter_mut().zip(toc.rows()) {
        if let Some(Value::String(k)) = row.get(kind_col) {
            *kind = match k.as_ref() {
                "QueryResult" => TableKind::PrimaryResult,
                "QueryProperties" => TableKind::QueryProperties,
                "QueryStatus" => TableKind::QueryCompletionInformation,
                // Not `Other(..)` directly: a v2 kind name must mean that kind, as it does in v2.
                other => TableKind::parse(other),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `kusto_v1` fuzz property (a v1 result must mean what the same tables mean in
    /// v2): a TableOfContents naming a v2 kind gave `Other("PrimaryResult")`, a table no consumer
    /// treated as primary, and one that a v2 body with the same kind would have made primary.
    #[test]
    fn table_of_contents_kind_names_map_to_their_kind() {
        let body = br#"{"Tables":[
            {"TableName":"a","Columns":[{"ColumnName":"x","DataType":"Int32"}],"Rows":[[1]]},
            {"TableName":"b","Columns":[{"ColumnName":"x","DataType":"Int32"}],"Rows":[]},
            {"TableName":"toc","Columns":[{"ColumnName":"Kind","DataType":"String"}],
             "Rows":[["PrimaryResult"],["SomethingElse"]]}]}"#;
        let set = decode_v1(body, &QueryLimits::default()).unwrap();
        assert_eq!(
            set.kinds,
            vec![
                TableKind::PrimaryResult,
                TableKind::Other("SomethingElse".into()),
                TableKind::TableOfContents
            ]
        );
        // …and so the row limit applies to it.
        let limits = QueryLimits {
            max_rows: 0,
            ..QueryLimits::default()
        };
        assert!(matches!(
            decode_v1(body, &limits),
            Err(QueryError::TooManyRows { .. })
        ));
    }
}
