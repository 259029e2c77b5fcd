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

/// Every example (`deploy/examples/*.yaml`) with the words of its preview window.
fn examples() -> Vec<(PathBuf, Vec<String>)> {
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let window = window_args(&std::fs::read_to_string(&path).unwrap());
            examples.push((path, window));
        }
    }
    examples
}

#[test]
fn every_example_prints_its_expected_samples() {
    let kql = demo_kql();
    let mut checked = 0;
    for (path, window) in examples() {
        let args: Vec<&str> = window.iter().map(String::as_str).collect();
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
        let samples = expected.lines().filter(|l| !l.starts_with('#')).count();
        assert!(
            stderr.contains(&format!("{samples} samples")),
            "{}: the summary names the sample count: {stderr}",
            path.display()
        );
        if expected.contains("# TYPE") && !expected.contains(" gauge\n") {
            assert!(
                stderr.contains("values are this window's own increases"),
                "{}: a counter's or histogram's preview says it shows increases: {stderr}",
                path.display()
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "the design's four use cases, a counter and a histogram"
    );
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

/// `preview --save-response F` then `preview --response F` (no Kusto at all) prints byte for byte
/// what the live query printed, for every example.
#[test]
fn a_saved_response_previews_exactly_as_the_live_query() {
    let kql = demo_kql();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (path, window) in examples() {
        let saved = dir
            .path()
            .join(path.with_extension("json").file_name().unwrap());
        let saved_arg = saved.display().to_string();
        let mut args: Vec<&str> = window.iter().map(String::as_str).collect();
        args.extend(["--save-response", &saved_arg]);
        let live = preview(&kql, &path, &args);
        assert!(
            live.status.success(),
            "{}",
            String::from_utf8_lossy(&live.stderr)
        );
        let body = std::fs::read(&saved).unwrap();
        assert!(
            body.starts_with(b"[{\"FrameType\": \"DataSetHeader\""),
            "the raw v2 body as duckdb-kql sent it"
        );
        let offline = preview_saved(&path, &saved, &window);
        let stderr = String::from_utf8_lossy(&offline.stderr);
        assert!(offline.status.success(), "{}: {stderr}", path.display());
        assert!(!live.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&offline.stdout),
            String::from_utf8_lossy(&live.stdout),
            "{}",
            path.display()
        );
        assert!(
            stderr.contains(&format!(
                "(given by --start/--end), response read from {}: ",
                saved.display()
            )),
            "{stderr}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// `preview --response FILE` with no Kusto endpoint at all.
fn preview_saved(file: &Path, response: &Path, window: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .arg("preview")
        .arg("-f")
        .arg(file)
        .arg("--response")
        .arg(response)
        .args(window)
        .env_remove("ADXEXPORTER_KUSTO_ENDPOINT")
        .output()
        .expect("run adxexporter preview --response")
}

#[test]
fn a_saved_response_that_is_missing_cut_or_not_kusto_is_named() {
    let kql = demo_kql();
    let dir = tempfile::tempdir().unwrap();
    let example = examples_dir().join("service-response-times.yaml");
    let window = window_args(&std::fs::read_to_string(&example).unwrap());
    let saved = dir.path().join("saved.json");
    let mut args: Vec<&str> = window.iter().map(String::as_str).collect();
    let saved_arg = saved.display().to_string();
    args.extend(["--save-response", &saved_arg]);
    assert!(preview(&kql, &example, &args).status.success());
    let body = std::fs::read(&saved).unwrap();
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, &body[..body.len() / 2]).unwrap();

    let missing = dir.path().join("missing.json");
    for (file, says) in [
        (&missing, "cannot read the saved response: No such file"),
        (&example, "not a usable Kusto v2 query response"),
        (&cut, "the Kusto response was cut short"),
    ] {
        let out = preview_saved(&example, file, &window);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout on failure");
        assert!(
            stderr.contains(&format!("adxexporter: --response {}: ", file.display())),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
