//! The examples in `deploy/examples/` produce exactly their hand-derived `.expected.prom` output.
//!
//! For each example: start duckdb-kql with `tests/peers/demo.sql`, run the example's body with the
//! docs/design.md#windows window prefix for the window named in its `# preview window:` comment, turn the rows into a
//! [`Table`], run [`transform`] and [`exposition::to_text`], and compare with the expected file.
//!
//! The query goes through the official Python client (azure-kusto-data, from the test venv), which
//! hands us the raw v2 `Columns`/`Rows` JSON: this checks every example independently of our own
//! Kusto client. `tests/preview_examples.rs` runs the same examples through the real
//! `adxexporter preview` binary.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use adxexporter::crd::TransformSpec;
use adxexporter::exposition;
use adxexporter::query::{Column, ColumnType, Table, Value};
use adxexporter::schedule::window::{Window, query_text};
use adxexporter::time::{Span, Ticks};
use adxexporter::transform::{Mapping, transform};

/// Runs stdin as a query against `argv[1]` / database `argv[2]`; prints the primary table's raw JSON.
const QUERY_SCRIPT: &str = r#"
import json, sys
from azure.kusto.data import KustoClient, KustoConnectionStringBuilder
url, db = sys.argv[1], sys.argv[2]
client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(url))
table = client.execute(db, sys.stdin.read()).primary_results[0]
json.dump({"columns": table.raw_columns, "rows": table.raw_rows}, sys.stdout)
"#;

#[derive(serde::Deserialize)]
struct Resource {
    spec: Spec,
}

#[derive(serde::Deserialize)]
struct Spec {
    database: String,
    body: String,
    transform: TransformSpec,
}

fn examples_dir() -> PathBuf {
    common::repo_root().join("deploy/examples")
}

/// `(start, end)` from the `# preview window: --start S --end E` comment.
fn preview_window(yaml: &str) -> (Ticks, Ticks) {
    let line = (yaml.lines())
        .find_map(|l| l.strip_prefix("# preview window:"))
        .expect("the example names its preview window");
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(flag);
        Ticks::parse(words[i + 1]).expect("an RFC 3339 window bound")
    };
    (arg("--start"), arg("--end"))
}

/// The query text exactly as `run` and `preview` build it (no cluster labels).
fn window_query(body: &str, start: Ticks, end: Ticks) -> String {
    query_text(&Window { start, end }, &Default::default(), body)
}

fn run_query(url: &str, database: &str, query: &str) -> serde_json::Value {
    let mut child = Command::new(common::venv_bin("python"))
        .args(["-c", QUERY_SCRIPT, url, database])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the venv python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(query.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "query failed:\n{query}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn column_type(name: &str) -> ColumnType {
    match name {
        "bool" | "boolean" => ColumnType::Bool,
        "int" => ColumnType::Int,
        "long" => ColumnType::Long,
        "real" => ColumnType::Real,
        "decimal" => ColumnType::Decimal,
        "datetime" | "date" => ColumnType::DateTime,
        "timespan" | "time" => ColumnType::TimeSpan,
        "guid" | "uuid" | "uniqueid" => ColumnType::Guid,
        "string" => ColumnType::String,
        "dynamic" => ColumnType::Dynamic,
        other => ColumnType::Other(other.to_owned()),
    }
}

/// One v2 JSON cell as the wire format defines it for its column type.
fn cell(ty: &ColumnType, v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let text = || {
        v.as_str()
            .unwrap_or_else(|| panic!("{ty:?} cell {v} is not a string"))
    };
    match (ty, v) {
        (_, J::Null) => Value::Null,
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int, J::Number(n)) => Value::Int(n.as_i64().unwrap().try_into().unwrap()),
        (ColumnType::Long, J::Number(n)) => Value::Long(n.as_i64().unwrap()),
        (ColumnType::Real, J::Number(n)) => Value::Real(n.as_f64().unwrap()),
        (ColumnType::Real, J::String(s)) => Value::Real(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => panic!("real cell {other:?}"),
        }),
        (ColumnType::Decimal, J::Number(n)) => Value::Decimal(n.to_string().into()),
        (ColumnType::Decimal, _) => Value::Decimal(text().into()),
        (ColumnType::DateTime, _) => Value::DateTime(Ticks::parse(text()).unwrap()),
        (ColumnType::TimeSpan, _) => Value::TimeSpan(Span::parse_timespan(text()).unwrap()),
        (ColumnType::Guid, _) => Value::Guid(text().into()),
        (ColumnType::String, _) => Value::String(text().into()),
        (ColumnType::Dynamic | ColumnType::Other(_), v) => Value::Dynamic(v.to_string().into()),
        (ty, v) => panic!("unexpected {ty:?} cell {v}"),
    }
}

fn table_from_json(json: &serde_json::Value) -> Table {
    let columns: Vec<Column> = (json["columns"].as_array().unwrap().iter())
        .map(|c| Column {
            name: c["ColumnName"].as_str().unwrap().to_owned(),
            ty: column_type(c["ColumnType"].as_str().unwrap()),
        })
        .collect();
    let mut table = Table::new("PrimaryResult", columns.clone());
    for row in json["rows"].as_array().unwrap() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), columns.len(), "ragged row {row:?}");
        table.push_row(columns.iter().zip(row).map(|(c, v)| cell(&c.ty, v)));
    }
    table
}

/// The example's transform validated and mapped as `run` does it, with no `--metric-name-prefix`.
fn mapping(t: &TransformSpec) -> Mapping {
    let transform = t.validate().expect("the example's transform is valid");
    Mapping::new(&transform, "")
}

fn check_example(name: &str) {
    let yaml = std::fs::read_to_string(examples_dir().join(format!("{name}.yaml"))).unwrap();
    let expected =
        std::fs::read_to_string(examples_dir().join(format!("{name}.expected.prom"))).unwrap();
    let resource: Resource = serde_saphyr::from_str(&yaml).expect("the example parses");
    let (start, end) = preview_window(&yaml);

    let kusto = common::duckdb_kql(&common::repo_root().join("tests/peers/demo.sql"));
    let query = window_query(&resource.spec.body, start, end);
    let table = table_from_json(&run_query(&kusto.url, &resource.spec.database, &query));

    let out = transform(&table, &mapping(&resource.spec.transform)).expect("transform");
    assert!(
        out.stats.skipped.is_empty(),
        "nothing is skipped: {:?}",
        out.stats
    );
    assert_eq!(
        exposition::to_text(&out.request),
        expected,
        "{name}: preview output differs from {name}.expected.prom"
    );
}

#[test]
fn service_response_times() {
    check_example("service-response-times");
}

#[test]
fn customer_analytics() {
    check_example("customer-analytics");
}

#[test]
fn infrastructure_monitoring() {
    check_example("infrastructure-monitoring");
}

#[test]
fn global_error_rates() {
    check_example("global-error-rates");
}

#[test]
fn service_requests_counter() {
    check_example("service-requests");
}

#[test]
fn service_latency_histogram() {
    check_example("service-latency");
}

#[test]
fn every_example_has_an_expected_output() {
    let mut yamls = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            yamls += 1;
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                [
                    "service-response-times",
                    "customer-analytics",
                    "infrastructure-monitoring",
                    "global-error-rates",
                    "service-requests",
                    "service-latency"
                ]
                .contains(&stem.as_str()),
                "{stem}.yaml has no test in tests/transform_examples.rs"
            );
            assert!(
                examples_dir()
                    .join(format!("{stem}.expected.prom"))
                    .exists()
            );
        }
    }
    assert_eq!(yamls, 6);
}
