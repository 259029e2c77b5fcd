//! `adxexporter wal ...` against a WAL built with the library: exact numbers in human and JSON
//! output, requeue and purge effects, the lock refusal, the missing-store message and an empty or
//! truncated file refused as corrupt (the other damage: tests/wal_crash.rs).
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::time::Ticks;
use adxexporter::wal::{ExporterRef, RecordHeader, RecordId, Wal, WalConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_adxexporter");
const OUTPUTS: [&str; 2] = ["remote_write", "otlp"];
const LOCKED: &str = "another adxexporter process uses the WAL";
/// Set when this test binary runs itself as the child that holds the WAL until killed.
const CHILD_ENV: &str = "WAL_TOOL_CHILD_DIR";

fn t(minute: i64) -> Ticks {
    let base = Ticks::parse("2026-01-01T00:00:00Z").unwrap();
    Ticks(base.0 + minute * 60 * 10_000_000)
}

fn append(wal: &Wal, exporter: &ExporterRef, minute: i64) -> RecordId {
    let header = RecordHeader {
        exporter: exporter.clone(),
        generation: 3,
        window_start: t(minute),
        window_end: t(minute + 1),
        created: Ticks::now(),
        outputs: vec![],
    };
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "cpu")],
            samples: vec![Sample {
                value: minute as f64,
                timestamp: 0,
            }],
        }],
        ..Default::default()
    };
    wal.append(&header, &request).unwrap()
}

/// Records left: cpu@2, mem@0, mem@1. Dead letters: otlp cpu@1, remote_write mem@0.
/// Pending: remote_write cpu@2 mem@1; otlp cpu@2 mem@0 (1 attempt) mem@1.
fn build(dir: &Path) {
    let wal = Wal::open(dir, WalConfig::new(1 << 30, OUTPUTS)).unwrap();
    let cpu = ExporterRef::new("uid-a", "monitoring", "cpu");
    let mem = ExporterRef::new("uid-b", "team", "mem");
    let a0 = append(&wal, &cpu, 0);
    let a1 = append(&wal, &cpu, 1);
    append(&wal, &cpu, 2);
    let b0 = append(&wal, &mem, 0);
    append(&wal, &mem, 1);
    wal.ack("remote_write", &a0).unwrap();
    wal.ack("otlp", &a0).unwrap();
    wal.ack("remote_write", &a1).unwrap();
    wal.dead_letter(
        "otlp",
        &a1,
        "HTTP 400 Bad Request",
        "out of order sample\nsecond line",
    )
    .unwrap();
    wal.dead_letter("remote_write", &b0, "HTTP 413", "request too large")
        .unwrap();
    wal.retry_later("otlp", &b0, t(5), "HTTP 503").unwrap();
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn wal_cmd(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("wal")
        .args(args)
        .arg("--wal-dir")
        .arg(dir)
        .env_remove("ADXEXPORTER_WAL_DIR")
        .env_remove("ADXEXPORTER_WAL_MAX_BYTES")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = wal_cmd(dir, args);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.stdout
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(dir, &args)).unwrap()
}

/// Whitespace-separated cells of the first line starting with `first`.
fn cells<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no line starting with {first:?} in\n{text}"))
        .split_whitespace()
        .collect()
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {items}"))
}

#[test]
fn stats_human_and_json_hold_the_exact_numbers() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let text = ok(dir.path(), &["stats"]);
    assert_eq!(cells(&text, "records"), ["records", "3"]);
    assert_eq!(cells(&text, "dead letters"), ["dead", "letters", "2"]);
    assert_eq!(cells(&text, "used bytes")[4], "1073741824");
    assert_eq!(
        cells(&text, "monitoring/cpu"),
        [
            "monitoring/cpu",
            "uid-a",
            "2026-01-01T00:03:00Z",
            "1",
            "2026-01-01T00:02:00Z"
        ]
    );
    assert_eq!(
        cells(&text, "team/mem"),
        [
            "team/mem",
            "uid-b",
            "2026-01-01T00:02:00Z",
            "2",
            "2026-01-01T00:00:00Z"
        ]
    );
    // The earliest next attempt of each output is a row that never failed: due now.
    assert_eq!(
        cells(&text, "otlp"),
        ["otlp", "3", "2026-01-01T00:00:00Z", "now", "1"]
    );
    assert_eq!(
        cells(&text, "remote_write"),
        ["remote_write", "2", "2026-01-01T00:01:00Z", "now", "1"]
    );

    let j = json(dir.path(), &["stats"]);
    assert_eq!(j["records"], 3);
    assert_eq!(j["dead_letters"], 2);
    assert_eq!(j["max_bytes"], 1u64 << 30);
    assert!(j["used_bytes"].as_u64().unwrap() > 0);
    assert!(j["file_bytes"].as_u64().unwrap() > 0);
    let cpu = find(&j["exporters"], "uid", "uid-a");
    assert_eq!(cpu["namespace"], "monitoring");
    assert_eq!(cpu["name"], "cpu");
    assert_eq!(cpu["records"], 1);
    assert_eq!(cpu["watermark"], "2026-01-01T00:03:00Z");
    assert_eq!(cpu["oldest_window"], "2026-01-01T00:02:00Z");
    assert_eq!(cpu["forgotten"], false);
    let otlp = find(&j["outputs"], "output", "otlp");
    assert_eq!(otlp["pending"], 3);
    assert_eq!(otlp["dead_letters"], 1);
    assert_eq!(otlp["oldest_pending"], "2026-01-01T00:00:00Z");
    assert_eq!(otlp["next_attempt_at"], Value::Null);
    let rw = find(&j["outputs"], "output", "remote_write");
    assert_eq!(rw["pending"], 2);
    assert_eq!(rw["dead_letters"], 1);
}

#[test]
fn list_shows_each_record_with_its_outputs_states() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let text = ok(dir.path(), &["list"]);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert_eq!(
        cells(&text, "EXPORTER"),
        [
            "EXPORTER", "UID", "WINDOW", "START", "WINDOW", "END", "STATE", "BYTES", "OUTPUTS"
        ]
    );
    let mem0 = text
        .lines()
        .find(|l| l.contains("uid-b") && l.contains("2026-01-01T00:00:00Z  "))
        .unwrap();
    assert!(
        mem0.contains("remote_write=dead-lettered(attempts=1)"),
        "{mem0}"
    );
    assert!(
        mem0.contains("otlp=pending(attempts=1,next=2026-01-01T00:05:00Z)"),
        "{mem0}"
    );
    let cpu2 = cells(&text, "monitoring/cpu  uid-a  2026-01-01T00:02:00Z");
    assert_eq!(cpu2[4], "pending");
    assert_eq!(&cpu2[6..], ["remote_write=pending", "otlp=pending"]);

    let j = json(dir.path(), &["list"]);
    let records = j["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    let mem0 = records
        .iter()
        .find(|r| r["exporter"]["uid"] == "uid-b" && r["window_start"] == "2026-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(mem0["window_end"], "2026-01-01T00:01:00Z");
    assert_eq!(mem0["generation"], 3);
    assert_eq!(mem0["state"], "pending");
    let otlp = find(&mem0["deliveries"], "output", "otlp");
    assert_eq!(otlp["state"], "pending");
    assert_eq!(otlp["attempts"], 1);
    assert_eq!(otlp["next_attempt_at"], "2026-01-01T00:05:00Z");
    assert_eq!(otlp["last_error"], "HTTP 503");
    let rw = find(&mem0["deliveries"], "output", "remote_write");
    assert_eq!(rw["state"], "dead_lettered");
    assert_eq!(rw["reason"], "HTTP 413");
    assert_eq!(rw["attempts"], 1);

    let filtered = json(
        dir.path(),
        &["list", "--exporter", "team/mem", "--output", "otlp"],
    );
    let records = filtered["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r["deliveries"].as_array().unwrap().len() == 1)
    );
    let one = json(
        dir.path(),
        &[
            "list",
            "--uid",
            "uid-a",
            "--window-start",
            "2026-01-01T00:02:00Z",
        ],
    );
    assert_eq!(one["records"].as_array().unwrap().len(), 1);
}

/// A window whose record left the WAL (remote_write acked it, otlp refused it) is still held by
/// its dead letter: `list` shows it, marked dead-lettered, not only `dead-letters`.
#[test]
fn list_shows_windows_held_only_by_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let text = ok(dir.path(), &["list"]);
    let cpu1 = cells(&text, "monitoring/cpu  uid-a  2026-01-01T00:01:00Z");
    assert_eq!(cpu1[3], "2026-01-01T00:02:00Z");
    assert_eq!(cpu1[4], "dead-lettered");
    assert_eq!(
        &cpu1[6..],
        ["remote_write=acked", "otlp=dead-lettered(attempts=1)"]
    );

    let j = json(dir.path(), &["list", "--uid", "uid-a"]);
    let records = j["records"].as_array().unwrap();
    let states: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("2026-01-01T00:01:00Z", "dead_lettered"),
            ("2026-01-01T00:02:00Z", "pending")
        ]
    );
    let cpu1 = &records[0];
    assert_eq!(cpu1["window_end"], "2026-01-01T00:02:00Z");
    assert!(cpu1["payload_bytes"].as_u64().unwrap() > 0);
    let otlp = find(&cpu1["deliveries"], "output", "otlp");
    assert_eq!(otlp["state"], "dead_lettered");
    assert_eq!(otlp["reason"], "HTTP 400 Bad Request");
    assert_eq!(otlp["attempts"], 1);
    assert_eq!(
        find(&cpu1["deliveries"], "output", "remote_write")["state"],
        "acked"
    );

    // The output filter: listed for the output that refused it, with that output only.
    let only = json(dir.path(), &["list", "--uid", "uid-a", "--output", "otlp"]);
    let cpu1 = &only["records"][0];
    assert_eq!(cpu1["state"], "dead_lettered");
    assert_eq!(cpu1["deliveries"].as_array().unwrap().len(), 1);
    let rw = json(
        dir.path(),
        &["list", "--uid", "uid-a", "--output", "remote_write"],
    );
    assert!(
        rw["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "pending"),
        "{rw}"
    );

    // Requeued, it is a pending record again; purged, it is gone from the list.
    ok(dir.path(), &["requeue", "--uid", "uid-a"]);
    let text = ok(dir.path(), &["list", "--uid", "uid-a"]);
    assert_eq!(
        cells(&text, "monitoring/cpu  uid-a  2026-01-01T00:01:00Z")[4],
        "pending"
    );
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    ok(
        dir.path(),
        &["purge", "--dead-letters", "--uid", "uid-a", "--yes"],
    );
    let j = json(dir.path(), &["list", "--uid", "uid-a"]);
    assert_eq!(j["records"].as_array().unwrap().len(), 1);
}

/// A dead letter's attempts count the refused push: 1 for a window refused at its first push, one
/// more than its failed retries otherwise.
#[test]
fn a_dead_letter_counts_the_refused_push_as_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, ["remote_write"])).unwrap();
        let cpu = ExporterRef::new("uid-a", "monitoring", "cpu");
        let once = append(&wal, &cpu, 0);
        let thrice = append(&wal, &cpu, 1);
        wal.dead_letter("remote_write", &once, "HTTP 400", "bad")
            .unwrap();
        wal.retry_later("remote_write", &thrice, t(5), "HTTP 503")
            .unwrap();
        wal.retry_later("remote_write", &thrice, t(6), "HTTP 503")
            .unwrap();
        wal.dead_letter("remote_write", &thrice, "HTTP 400", "bad")
            .unwrap();
    }
    let text = ok(dir.path(), &["dead-letters"]);
    assert_eq!(cells(&text, "OUTPUT")[4], "ATTEMPTS");
    let first = cells(&text, "remote_write  monitoring/cpu  2026-01-01T00:00:00Z");
    assert_eq!(first[3], "1", "{text}");
    let second = cells(&text, "remote_write  monitoring/cpu  2026-01-01T00:01:00Z");
    assert_eq!(second[3], "3", "{text}");
    let j = json(dir.path(), &["dead-letters"]);
    let attempts: Vec<&Value> = j["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["attempts"])
        .collect();
    assert_eq!(attempts, [1, 3]);
    let full = ok(dir.path(), &["dead-letters", "--full"]);
    assert!(full.contains("attempts:         1\n"), "{full}");
}

#[test]
fn dead_letters_show_reason_and_body() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let text = ok(dir.path(), &["dead-letters"]);
    let otlp = text.lines().find(|l| l.starts_with("otlp")).unwrap();
    assert!(
        otlp.contains("monitoring/cpu  2026-01-01T00:01:00Z"),
        "{otlp}"
    );
    assert!(otlp.contains("HTTP 400 Bad Request"), "{otlp}");
    assert!(otlp.contains("out of order sample second line"), "{otlp}");
    let rw = text
        .lines()
        .find(|l| l.starts_with("remote_write"))
        .unwrap();
    assert!(
        rw.contains("HTTP 413") && rw.contains("request too large"),
        "{rw}"
    );

    let full = ok(dir.path(), &["dead-letters", "--full", "--output", "otlp"]);
    assert!(
        full.contains("body:\nout of order sample\nsecond line\n"),
        "{full}"
    );
    assert!(!full.contains("request too large"), "{full}");

    let j = json(dir.path(), &["dead-letters"]);
    let otlp = find(&j["dead_letters"], "output", "otlp");
    assert_eq!(otlp["exporter"]["uid"], "uid-a");
    assert_eq!(otlp["window_start"], "2026-01-01T00:01:00Z");
    assert_eq!(otlp["reason"], "HTTP 400 Bad Request");
    assert_eq!(otlp["body"], "out of order sample\nsecond line");
    assert_eq!(otlp["attempts"], 1);
}

#[test]
fn requeue_moves_dead_letters_back_to_pending() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let text = ok(dir.path(), &["requeue", "--output", "otlp"]);
    assert!(text.contains("requeued 1 dead letter"), "{text}");
    let j = json(dir.path(), &["stats"]);
    assert_eq!(j["records"], 4);
    assert_eq!(j["dead_letters"], 1);
    assert_eq!(find(&j["outputs"], "output", "otlp")["pending"], 4);
    assert_eq!(find(&j["outputs"], "output", "otlp")["dead_letters"], 0);
    assert_eq!(
        find(&j["outputs"], "output", "remote_write")["dead_letters"],
        1
    );

    let again = json(dir.path(), &["requeue", "--output", "otlp"]);
    assert_eq!(again["requeued"], 0);

    // The requeued record comes back for otlp only; the service delivers it when next started.
    let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, OUTPUTS)).unwrap();
    let due = wal.next_pending("otlp", t(10), 16).unwrap();
    assert!(
        due.iter()
            .any(|p| p.id.window_start == t(1) && p.id.exporter_uid == "uid-a")
    );
}

#[test]
fn purge_without_yes_changes_nothing_and_with_yes_removes() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let dry = ok(dir.path(), &["purge", "--dead-letters"]);
    assert!(dry.contains("would purge 2 entries"), "{dry}");
    assert!(dry.contains("add --yes"), "{dry}");
    assert_eq!(json(dir.path(), &["stats"])["dead_letters"], 2);

    let dry = json(
        dir.path(),
        &["purge", "--dead-letters", "--output", "remote_write"],
    );
    assert_eq!(dry["confirmed"], false);
    assert_eq!(dry["matched"], 1);
    assert_eq!(dry["purged"], 0);
    assert_eq!(dry["entries"][0]["exporter"]["uid"], "uid-b");

    let done = ok(dir.path(), &["purge", "--dead-letters", "--yes"]);
    assert!(done.contains("purged 2 entries"), "{done}");
    let j = json(dir.path(), &["stats"]);
    assert_eq!(j["dead_letters"], 0);
    assert_eq!(j["records"], 3);

    let pending = json(
        dir.path(),
        &["purge", "--pending", "--uid", "uid-b", "--yes"],
    );
    assert_eq!(pending["scope"], "pending");
    assert_eq!(pending["purged"], 3);
    assert_eq!(json(dir.path(), &["stats"])["records"], 1);

    let no_scope = wal_cmd(dir.path(), &["purge", "--yes"]);
    assert_eq!(no_scope.code, 2, "{}", no_scope.stderr);
}

#[test]
fn reading_leaves_the_store_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let before = std::fs::read(dir.path().join("wal.redb")).unwrap();
    for args in [["stats"], ["list"], ["dead-letters"]] {
        ok(dir.path(), &args);
    }
    ok(dir.path(), &["purge", "--all"]);
    let after = std::fs::read(dir.path().join("wal.redb")).unwrap();
    assert!(before == after, "wal.redb changed");
}

#[test]
fn tools_keep_deliveries_of_outputs_they_do_not_know() {
    // Wal::open with fewer outputs would dead-letter otlp's pending rows; the tool must not.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    ok(dir.path(), &["requeue", "--output", "remote_write"]);
    let j = json(dir.path(), &["stats"]);
    assert_eq!(find(&j["outputs"], "output", "otlp")["pending"], 3);
    assert_eq!(find(&j["outputs"], "output", "otlp")["dead_letters"], 1);
}

#[test]
fn every_subcommand_refuses_while_another_process_holds_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let held = Wal::open(dir.path(), WalConfig::new(1 << 30, OUTPUTS)).unwrap();
    for args in [
        &["stats"][..],
        &["list"],
        &["dead-letters"],
        &["requeue"],
        &["purge", "--all", "--yes"],
        &["stats", "--json"],
    ] {
        let out = wal_cmd(dir.path(), args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(LOCKED), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    assert_eq!(held.stats().unwrap().dead_letters, 2);
}

#[test]
fn a_missing_or_empty_dir_is_named_and_nothing_is_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nope");
    for dir in [missing.as_path(), parent.path()] {
        for args in [
            &["stats"][..],
            &["list", "--json"],
            &["purge", "--all", "--yes"],
        ] {
            let out = wal_cmd(dir, args);
            assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains("no adxexporter WAL at"),
                "{}",
                out.stderr
            );
            assert!(out.stderr.contains("nothing was created"), "{}", out.stderr);
        }
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn an_empty_or_truncated_wal_file_is_refused_as_corrupt_not_as_missing() {
    let src = tempfile::tempdir().unwrap();
    build(src.path());
    let whole = std::fs::read(src.path().join("wal.redb")).unwrap();
    for len in [0, 100] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.redb");
        std::fs::write(&path, &whole[..len]).unwrap();
        for args in [
            &["stats"][..],
            &["list", "--json"],
            &["purge", "--all", "--yes"],
        ] {
            let out = wal_cmd(dir.path(), args);
            assert_eq!(out.code, 1, "{len} bytes, {args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains(&format!(
                    "{} is not a readable adxexporter WAL",
                    path.display()
                )) && out.stderr.contains("move the file aside"),
                "{len} bytes, {args:?}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains("no adxexporter WAL"), "{}", out.stderr);
        }
        assert_eq!(std::fs::read(&path).unwrap(), &whole[..len]);
    }
}

#[test]
fn the_wal_dir_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let out = Command::new(BIN)
        .args(["wal", "stats", "--json"])
        .env("ADXEXPORTER_WAL_DIR", dir.path())
        .env("ADXEXPORTER_WAL_MAX_BYTES", "2GiB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["records"], 3);
    assert_eq!(j["max_bytes"], 2u64 << 30);
}

/// Child half of `a_store_left_open_by_a_killed_process_is_still_read`: no-op unless `CHILD_ENV`.
#[test]
fn hold_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    build(Path::new(&dir));
    let _wal = Wal::open(Path::new(&dir), WalConfig::new(1 << 30, OUTPUTS)).unwrap();
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap(); // blocks until the parent kills us
}

#[test]
fn a_store_left_open_by_a_killed_process_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["hold_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    assert!(stdout.lines().any(|l| l.unwrap().ends_with("ready")));
    assert_eq!(wal_cmd(dir.path(), &["stats"]).code, 1);
    child.kill().unwrap();
    child.wait().unwrap();

    let j = json(dir.path(), &["stats"]);
    assert_eq!(j["records"], 3);
    assert_eq!(j["dead_letters"], 2);
}
