//! `adxexporter check --kusto-endpoint DB=URL FILE…` (docs/design.md#online-check): the online
//! part. Each resource that passed the offline checks runs its query against Kusto, and the
//! result's columns are checked against its transform before anything is deployed.
//!
//! - The query text is `run`'s for the resource's newest complete window ([`query_text`]:
//!   docs/design.md#query-text, with the `--cluster-labels` as `let`s) with `| take 0` appended:
//!   Kusto returns the result's columns with their types and no row (duckdb-kql, our local engine,
//!   does the same), so nothing moves. `| take 0` rather than `| getschema`: its result is the
//!   same [`Table`] the transform sees, checked by the same code.
//! - The columns are checked by the transform's own rules ([`schema_findings`]): a missing column
//!   or a timestamp column that is neither datetime nor string fails every window of `run`; a value
//!   column that is never a number (datetime, timespan, guid) exports nothing; these are problems.
//!   A value column of text or JSON, or a string timestamp column, converts cell by cell: a warning.
//! - A query that fails, and a database no `--kusto-endpoint` names, are problems too; each line
//!   names the resource, what to fix and where.

use std::collections::BTreeMap;

use crate::cli::KustoSettings;
use crate::crd::{CheckReport, ValidResource, ValidatedSpec};
use crate::query::{KustoClient, QueryError, Table, column_type_name, no_endpoint_message};
use crate::schedule::window::{newest_complete, query_text};
use crate::time::Ticks;
use crate::transform::{Mapping, schema_findings};

/// Runs the online part of `check`, one resource after the other, with one client per database.
pub(crate) struct OnlineCheck {
    settings: KustoSettings,
    labels: BTreeMap<String, String>,
    /// Built on first use; the error line when the client cannot be built.
    clients: BTreeMap<String, Result<KustoClient, String>>,
}

impl OnlineCheck {
    pub(crate) fn new(settings: KustoSettings, labels: BTreeMap<String, String>) -> Self {
        OnlineCheck {
            settings,
            labels,
            clients: BTreeMap::new(),
        }
    }

    /// The `ok` line, warnings and problems of one resource's query against Kusto.
    pub(crate) async fn check(&mut self, resource: &ValidResource) -> CheckReport {
        let ValidResource { file, key, spec } = resource;
        let mut report = CheckReport::default();
        let table = match self.result_schema(spec).await {
            Ok(table) => table,
            Err(line) => {
                report.problems.push(format!("{file}: {key}: {line}"));
                return report;
            }
        };
        // Column checks do not depend on the metric-name prefix.
        let mapping = Mapping::new(&spec.transform, "");
        for finding in schema_findings(&table.columns, &mapping) {
            if finding.is_warning() {
                (report.warnings).push(format!("{file}: {key}: warning: {finding}"));
            } else {
                (report.problems).push(format!("{file}: {key}: {finding}"));
            }
        }
        if report.problems.is_empty() {
            let columns: Vec<String> = (table.columns.iter())
                .map(|c| format!("{} {}", c.name, column_type_name(&c.ty)))
                .collect();
            report.ok.push(format!(
                "ok {key}: online: the query's columns fit the transform ({})",
                columns.join(", ")
            ));
        }
        report
    }

    /// The (empty) result table of the resource's query, or the problem line that says why not.
    async fn result_schema(&mut self, spec: &ValidatedSpec) -> Result<Table, String> {
        let database = spec.database.as_str();
        let url = (self.settings.endpoint(database).cloned())
            .ok_or_else(|| format!("spec.database: {}", no_endpoint_message(database)))?;
        let client = (self.clients.entry(database.to_owned()))
            .or_insert_with(|| {
                (self.settings.client(&url))
                    .map_err(|e| format!("--kusto-endpoint {database}={url}: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let window = newest_complete(Ticks::now(), spec.interval, spec.ingestion_delay);
        let csl = schema_probe(&query_text(&window, &self.labels, &spec.body));
        let limits = super::resource_limits(spec);
        let data = (client.query(database, &csl, &limits).await)
            .map_err(|e| one_line(&query_problem(&e, database, url.as_str())))?;
        data.into_primary().ok_or_else(|| {
            "spec.body: the query returned no result table: end the body with a tabular expression (e.g. `T | summarize …`)".to_owned()
        })
    }
}

/// `run`'s query text with `| take 0` appended: the result's schema, no rows. On a line of its own
/// so a `//` comment ending the body cannot swallow it; a trailing `;` would end the query first.
fn schema_probe(csl: &str) -> String {
    format!(
        "{}\n| take 0",
        csl.trim_end().trim_end_matches(';').trim_end()
    )
}

/// Kusto's messages may span lines (a parser's caret diagram); a problem is one line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// A failed query as a problem line: what failed, then where the fix is, by the error's kind.
fn query_problem(e: &QueryError, database: &str, url: &str) -> String {
    match e.kind() {
        "bad_request" | "partial_failure" => format!(
            "spec.body: the query failed: {e}: fix the query (`adxexporter preview` runs it for one window)"
        ),
        "not_found" => format!(
            "spec.database: {e}: fix spec.database, or point --kusto-endpoint {database}=… at the cluster that holds it"
        ),
        "auth" => format!(
            "--kusto-auth: {e}: fix --kusto-auth or the identity's rights on database {database:?}"
        ),
        "network" | "timeout" | "config" => format!(
            "--kusto-endpoint {database}={url}: {e}: check the URL and that the cluster is reachable from here"
        ),
        "throttled" | "server" | "truncated" | "memory_busy" => {
            format!("the query failed for a passing reason: {e}: run the check again")
        }
        _ => format!("the query failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_asks_for_no_rows_whatever_ends_the_body() {
        assert_eq!(schema_probe("T | where x\n"), "T | where x\n| take 0");
        assert_eq!(schema_probe("T\n// last line"), "T\n// last line\n| take 0");
        assert_eq!(schema_probe("T | take 5 ; \n"), "T | take 5\n| take 0");
    }
}
