//! The Kusto REST query client (docs/design.md#kusto): the schedule hands it a database and KQL text, it returns a
//! [`DataSet`] of typed [`Table`]s for the transform, or a classified [`QueryError`].
//!
//! Layout: [`client`] does the HTTP (POST `/v2/rest/query`, bounded body read, status mapping), [`budget`]
//! is the memory budget that body and decoded rows are accounted against, `auth`
//! picks the `Authorization` header (tokens from [`crate::azure`]), [`decode_v2`]/[`decode_v1`] are pure body decoders, [`table`] holds the
//! only types the transform sees. Invariant: a `DataSet` is returned only for a complete response with no
//! partial failure in any channel and at most `QueryLimits::max_rows` primary rows.

mod auth;
pub mod budget;
mod cells;
pub mod client;
mod error;
mod stream;
pub mod table;
mod v1;
mod v2;

pub(crate) use crate::azure::AuthError;
pub use crate::azure::KustoAuth;
pub use budget::{MemoryBudget, Reservation};
pub use cells::column_type_name;
pub use client::{KustoClient, KustoConfig};
pub use error::{KustoErrorInfo, QueryError, http_error};
pub use stream::decode_v2_reader;
pub use table::{ArcStr, Column, ColumnType, Table, Value};
pub use v1::decode_v1;
pub use v2::decode_v2;

/// What `run`, `preview` and `check` say when no `--kusto-endpoint` names a resource's database.
pub(crate) fn no_endpoint_message(database: &str) -> String {
    format!(
        "no --kusto-endpoint for database {database:?}: add --kusto-endpoint {database}=https://<cluster>.kusto.windows.net"
    )
}

/// Bounds on what one query may materialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Rows across the primary result tables (the resource's `maxRows`).
    pub max_rows: usize,
    /// Decompressed response body bytes.
    pub max_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        // Kusto's own default truncation limits (500k records, 64 MiB), with headroom for JSON framing.
        QueryLimits {
            max_rows: 500_000,
            max_bytes: 256 << 20,
        }
    }
}

/// What a table is for (v2 `TableKind`; v1 derived from the TableOfContents).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TableKind {
    PrimaryResult,
    QueryCompletionInformation,
    QueryProperties,
    TableOfContents,
    QueryTraceLog,
    QueryPerfLog,
    QueryPlan,
    /// Any other kind name, or none given; never one of the names above (build it with [`TableKind::parse`]).
    Other(String),
}

impl TableKind {
    pub fn parse(s: &str) -> TableKind {
        match s {
            "PrimaryResult" => TableKind::PrimaryResult,
            "QueryCompletionInformation" => TableKind::QueryCompletionInformation,
            "QueryProperties" => TableKind::QueryProperties,
            "TableOfContents" => TableKind::TableOfContents,
            "QueryTraceLog" => TableKind::QueryTraceLog,
            "QueryPerfLog" => TableKind::QueryPerfLog,
            "QueryPlan" => TableKind::QueryPlan,
            other => TableKind::Other(other.to_owned()),
        }
    }
}

/// A decoded response: every table in wire order, with `kinds[i]` the kind of `tables[i]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataSet {
    pub tables: Vec<Table>,
    pub kinds: Vec<TableKind>,
    /// Warning-level (Level/Severity 3) QueryCompletionInformation events, as text.
    pub warnings: Vec<String>,
}

impl DataSet {
    /// The first PrimaryResult table (a query with several — batches, `fork` — has more, see
    /// [`DataSet::primary_tables`]).
    pub fn primary(&self) -> Option<&Table> {
        self.primary_tables().next()
    }

    pub fn primary_tables(&self) -> impl Iterator<Item = &Table> + '_ {
        self.tables
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == TableKind::PrimaryResult)
            .map(|(t, _)| t)
    }

    /// Takes the first PrimaryResult table out without copying its rows.
    pub(crate) fn into_primary(self) -> Option<Table> {
        self.tables
            .into_iter()
            .zip(self.kinds)
            .find(|(_, k)| *k == TableKind::PrimaryResult)
            .map(|(t, _)| t)
    }

    /// Errors (level ≤ 2) and warnings (level 3) from QueryCompletionInformation (v2 `Level`) or
    /// QueryStatus (v1 `Severity`) tables.
    fn completion_events(&self) -> (Vec<KustoErrorInfo>, Vec<String>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let status_tables = self
            .tables
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == TableKind::QueryCompletionInformation);
        for (table, _) in status_tables {
            let level = table
                .column_index("Level")
                .or_else(|| table.column_index("Severity"));
            let Some(level) = level else { continue };
            let text_cols: Vec<usize> = [
                "EventTypeName",
                "StatusCodeName",
                "StatusDescription",
                "Payload",
            ]
            .iter()
            .filter_map(|c| table.column_index(c))
            .collect();
            for row in table.rows() {
                let lvl = match row.get(level) {
                    Some(Value::Int(l)) => *l as i64,
                    Some(Value::Long(l)) => *l,
                    _ => continue,
                };
                if lvl > 3 {
                    continue;
                }
                let text = text_cols
                    .iter()
                    .filter_map(|i| match row.get(*i) {
                        Some(Value::String(s)) if !s.is_empty() => Some(s.as_ref()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(": ");
                if lvl == 3 {
                    warnings.push(text);
                } else {
                    errors.push(KustoErrorInfo {
                        code: Some(format!("QueryCompletionInformation level {lvl}")),
                        message: error::truncate_text(&text),
                        permanent: None,
                    });
                }
            }
        }
        (errors, warnings)
    }
}

/// A v2 body for tests: one primary `DataTable` of `columns` (name, Kusto type) holding `rows`
/// (each a JSON array's text), joined by `separator`.
#[cfg(test)]
pub(crate) fn test_body(columns: &[(&str, &str)], rows: &[String], separator: &str) -> Vec<u8> {
    let columns: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!(r#"{{"ColumnName":"{name}","ColumnType":"{ty}"}}"#))
        .collect();
    format!(
        r#"[{{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"}},
{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{}],"Rows":[{}]}},
{{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}}]"#,
        columns.join(","),
        rows.join(separator)
    )
    .into_bytes()
}
