//! `adxexporter check --kusto-endpoint DB=URL FILE…` end to end: the real binary runs each
//! resource's query (`| take 0` appended) against duckdb-kql (a real KQL engine behind the Kusto
//! REST API) serving `tests/peers/demo.sql`, and checks the result's columns against the transform.
//! One resource per kind of schema problem, each with its exact line; good resources pass.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn demo_kql() -> common::Peer {
    common::duckdb_kql(&common::repo_root().join("tests/peers/demo.sql"))
}

/// `check ARGS…` with no `ADXEXPORTER_*` variables from the outside.
fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adxexporter"));
    cmd.arg("check").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ADXEXPORTER_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run adxexporter check")
}

fn online(kql: &common::Peer, files: &[&str]) -> Output {
    let endpoint = format!("memory={}", kql.url);
    let mut args = vec!["--kusto-endpoint", &endpoint, "--kusto-auth", "none"];
    args.extend_from_slice(files);
    check(&args, &[])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A resource querying the demo's `ServiceTelemetry` for the window; `select` is the projection
/// after the window filter, `transform` the indented `transform:` body.
fn resource(name: &str, database: &str, select: &str, transform: &str) -> String {
    format!(
        "apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: {name}
  namespace: checks
spec:
  database: {database}
  interval: 1m
  body: |
    ServiceTelemetry
    | where Timestamp between (_startTime .. _endTime)
    {select}
  transform:
{transform}
"
    )
}

const PROJECT: &str = "| project ts = Timestamp, v = ResponseTimeMs, name = \"m\", ServiceName";
const AVAILABLE: &str = "[ts, v, name, ServiceName]";

fn write(dir: &Path, file: &str, docs: &[String]) -> String {
    let path = dir.join(file);
    std::fs::write(&path, docs.join("---\n")).unwrap();
    path.display().to_string()
}

#[test]
fn every_kind_of_schema_problem_is_one_line_naming_file_resource_column_and_fix() {
    let kql = demo_kql();
    let dir = tempfile::tempdir().unwrap();
    let t = |lines: &[&str]| {
        (lines.iter())
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let good = t(&[
        "valueColumns: [v]",
        "timestampColumn: ts",
        "metricNameColumn: name",
        "labelColumns: [ServiceName]",
    ]);
    let docs = [
        resource("good", "memory", PROJECT, &good),
        resource(
            "no-value",
            "memory",
            PROJECT,
            &good.replace("[v]", "[value]"),
        ),
        resource(
            "no-timestamp",
            "memory",
            PROJECT,
            &good.replace("timestampColumn: ts", "timestampColumn: Timestamp"),
        ),
        resource(
            "no-name",
            "memory",
            PROJECT,
            &good.replace("metricNameColumn: name", "metricNameColumn: metric"),
        ),
        resource(
            "no-label",
            "memory",
            PROJECT,
            &good.replace("[ServiceName]", "[ServiceName, Region]"),
        ),
        resource(
            "time-value",
            "memory",
            &format!("{PROJECT}, at = Timestamp"),
            &good.replace("[v]", "[at]"),
        ),
        resource(
            "text-value",
            "memory",
            &format!("{PROJECT}, s = tostring(ResponseTimeMs)"),
            &good.replace("[v]", "[s]"),
        ),
        resource(
            "long-timestamp",
            "memory",
            &PROJECT.replace("ts = Timestamp", "ts = tolong(Timestamp)"),
            &good,
        ),
        resource(
            "text-timestamp",
            "memory",
            &PROJECT.replace("ts = Timestamp", "ts = tostring(Timestamp)"),
            &good,
        ),
        resource(
            "bad-query",
            "memory",
            "| project ts = Timestamp, v = NoSuchColumn",
            &good,
        ),
        resource("no-endpoint", "elsewhere", PROJECT, &good),
    ];
    let file = write(dir.path(), "checks.yaml", &docs);
    let out = online(&kql, &[&file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));

    // Offline, every resource is valid: one `ok` line each, first.
    let offline: Vec<String> = (docs.iter())
        .map(|d| d.lines().find_map(|l| l.strip_prefix("  name: ")).unwrap())
        .map(|name| format!("ok checks/{name}"))
        .collect();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..offline.len()], offline[..], "{stdout}");

    let p = |name: &str, line: &str| format!("{file}: checks/{name}: {line}");
    let missing = |column: &str, role: &str| {
        format!(
            "the query result has no column {column:?} (the transform's {role}); it returned {AVAILABLE}: fix the column name in the transform or the query"
        )
    };
    let expected = [
        "ok checks/good: online: the query's columns fit the transform (ts datetime, v real, name string, ServiceName string)".to_owned(),
        p("no-value", &missing("value", "valueColumns")),
        p("no-timestamp", &missing("Timestamp", "timestampColumn")),
        p("no-name", &missing("metric", "metricNameColumn")),
        p("no-label", &missing("Region", "labelColumns")),
        p("time-value", "column \"at\" (the transform's valueColumns) is of type datetime, which is never a number: every sample would be skipped (non_numeric_value): return a number from the query (e.g. `todouble(at)`, or `at / 1s` for a timespan in seconds)"),
        "ok checks/text-value: online: the query's columns fit the transform (ts datetime, v real, name string, ServiceName string, s string)".to_owned(),
        p("text-value", "warning: column \"s\" (the transform's valueColumns) is of type string: only cells that hold a number become samples, the others are skipped (non_numeric_value): return a number from the query (e.g. `todouble(s)`)"),
        p("long-timestamp", "timestamp column \"ts\" is of type long, neither datetime nor string: convert it in the query (e.g. `todatetime(ts)`)"),
        "ok checks/text-timestamp: online: the query's columns fit the transform (ts string, v real, name string, ServiceName string)".to_owned(),
        p("text-timestamp", "warning: timestamp column \"ts\" is of type string: rows whose text is not RFC 3339 (or `YYYY-MM-DD hh:mm:ss`) are skipped (bad_timestamp): return a datetime from the query (e.g. `todatetime(ts)`)"),
        p("no-endpoint", "spec.database: no --kusto-endpoint for database \"elsewhere\": add --kusto-endpoint elsewhere=https://<cluster>.kusto.windows.net"),
    ];
    let online_lines: Vec<&str> = (lines[offline.len()..].iter())
        .filter(|l| !l.contains("checks/bad-query:"))
        .copied()
        .collect();
    assert_eq!(online_lines, expected, "{stdout}");

    // The engine's own message, on one line, with the fix.
    let bad: Vec<&str> = (lines.iter())
        .filter(|l| l.contains("checks/bad-query:"))
        .copied()
        .collect();
    assert_eq!(bad.len(), 1, "{stdout}");
    let prefix = p(
        "bad-query",
        "spec.body: the query failed: Kusto answered HTTP 400: ",
    );
    assert!(bad[0].starts_with(&prefix), "{}", bad[0]);
    assert!(bad[0].contains("NoSuchColumn"), "{}", bad[0]);
    assert!(
        bad[0].ends_with(": fix the query (`adxexporter preview` runs it for one window)"),
        "{}",
        bad[0]
    );
}

#[test]
fn good_resources_pass_online_and_a_directory_is_read_as_offline() {
    let kql = demo_kql();
    let examples = common::repo_root().join("deploy/examples");
    let out = online(&kql, &[&examples.display().to_string()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let online_ok: Vec<&str> = (stdout.lines())
        .filter(|l| l.contains(": online: the query's columns fit the transform ("))
        .collect();
    assert_eq!(online_ok.len(), 6, "{stdout}");
    assert!(
        stdout.contains(
            "ok monitoring/service-response-times: online: the query's columns fit the transform (timestamp datetime, ServiceName string, Environment string, metric_value real, metric_name string)\n"
        ),
        "{stdout}"
    );
    // Nothing but `ok` lines after the directory's own line.
    assert!(
        stdout.lines().skip(1).all(|l| l.starts_with("ok ")),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_kusto_is_a_problem_naming_the_endpoint() {
    let port = common::free_port();
    let file = common::repo_root().join("deploy/examples/service-response-times.yaml");
    let endpoint = format!("memory=http://127.0.0.1:{port}");
    let out = check(
        &[
            "--kusto-endpoint",
            &endpoint,
            "--kusto-auth",
            "none",
            &file.display().to_string(),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let prefix = format!(
        "{}: monitoring/service-response-times: --kusto-endpoint memory=http://127.0.0.1:{port}/: network error talking to Kusto",
        file.display()
    );
    assert!(
        stdout.lines().any(|l| l.starts_with(&prefix)
            && l.ends_with("check the URL and that the cluster is reachable from here")),
        "{stdout}"
    );
}

#[test]
fn without_an_endpoint_the_check_stays_offline_and_reads_no_kusto_flag() {
    let file = common::repo_root().join("deploy/examples/service-response-times.yaml");
    // A Kusto variable that would be refused online: offline, it is not even read.
    let out = check(
        &[&file.display().to_string()],
        &[("ADXEXPORTER_KUSTO_AUTH", "no-such-mode")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok monitoring/service-response-times\n");
    // Online, the same variable is read and refused, naming the flag.
    let out = check(
        &[&file.display().to_string()],
        &[
            ("ADXEXPORTER_KUSTO_AUTH", "no-such-mode"),
            ("ADXEXPORTER_KUSTO_ENDPOINT", "memory=http://127.0.0.1:9"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--kusto-auth"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_names_the_online_flags_and_the_saved_response_flags() {
    let help = text(&check(&["--help"], &[]).stdout);
    for flag in [
        "Online check",
        "--kusto-endpoint",
        "--kusto-auth",
        "--kusto-server-timeout",
        "--tls-ca-file",
        "--tls-insecure-skip-verify",
        "ADXEXPORTER_KUSTO_ENDPOINT",
        "| take 0",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from check --help:\n{help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["preview", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    for flag in [
        "--save-response",
        "--response",
        "ADXEXPORTER_SAVE_RESPONSE",
        "ADXEXPORTER_RESPONSE",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from preview --help:\n{help}"
        );
    }
}
