//! `adxexporter preview` prints exactly each example's hand-derived `.expected.prom` for the window
//! named in its `# preview window:` comment, through the real binary, our Kusto client and duckdb-kql
//! (a real KQL engine) serving `tests/peers/demo.sql`. Also: how preview fails on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples_dir() -> PathBuf {
    common::repo_root().join("deploy/examples")
}

fn demo_kql() -> common::Peer {
    common::duckdb_kql(&common::repo_root().join("tests/peers/demo.sql"))
}

fn preview(kql: &common::Peer, file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .arg("preview")
        .arg("-f")
        .arg(file)
        .arg("--kusto-endpoint")
        .arg(format!("memory={}", kql.url))
        .args(["--kusto-auth", "none"])
        .args(extra)
        .output()
        .expect("run adxexporter preview")
}

/// The `--start S --end E` words of the example's `# preview window:` comment.
fn window_args(yaml: &str) -> Vec<String> {
    let line = yaml
        .lines()
        .find_map(|l| l.strip_prefix("# preview window:"))
        .expect("the example names its preview window");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn every_example_prints_its_expected_samples() {
    let kql = demo_kql();
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).unwrap();
        let args = window_args(&yaml);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = preview(&kql, &path, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        let expected = std::fs::read_to_string(path.with_extension("expected.prom")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{}: preview output differs from the expected file",
            path.display()
        );
        let samples = expected.lines().count();
        assert!(
            stderr.contains(&format!("{samples} samples")),
            "{}: the summary names the sample count: {stderr}",
            path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "the design's four use cases");
}

#[test]
fn a_query_error_exits_non_zero_with_kustos_message() {
    let kql = demo_kql();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let yaml = std::fs::read_to_string(examples_dir().join("service-response-times.yaml"))
        .unwrap()
        .replace("avg(ResponseTimeMs)", "avg(NoSuchColumn)");
    std::fs::write(&bad, yaml).unwrap();
    let out = preview(
        &kql,
        &bad,
        &[
            "--start",
            "2026-01-01T10:05:00Z",
            "--end",
            "2026-01-01T10:06:00Z",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing printed on stdout on failure"
    );
    assert!(
        stderr.contains("NoSuchColumn"),
        "Kusto's message names the column: {stderr}"
    );
}

#[test]
fn a_database_without_endpoint_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["preview", "-f"])
        .arg(examples_dir().join("service-response-times.yaml"))
        .args([
            "--kusto-endpoint",
            "other=http://127.0.0.1:9",
            "--kusto-auth",
            "none",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no --kusto-endpoint for database \"memory\""),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_kusto_is_a_clear_error() {
    let port = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["preview", "-f"])
        .arg(examples_dir().join("service-response-times.yaml"))
        .args([
            "--kusto-endpoint",
            &format!("memory=http://127.0.0.1:{port}"),
        ])
        .args([
            "--kusto-auth",
            "none",
            "--start",
            "2026-01-01T10:05:00Z",
            "--end",
            "2026-01-01T10:06:00Z",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("127.0.0.1"), "names the endpoint: {stderr}");
}
