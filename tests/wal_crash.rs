//! Crash safety of the WAL.
//!
//! - `kill_9_never_loses_an_acknowledged_append`: this test binary re-runs itself as a child
//!   (`WAL_CRASH_CHILD_DIR` set) whose writer threads (one exporter each) append and ack records,
//!   printing each id once the call returned; the parent SIGKILLs it after a random number of
//!   lines, reopens, and checks every acknowledged append is present and intact, every
//!   acknowledged ack is gone, and each watermark is at least the last acknowledged window's end.
//!   Repeated over one store, so repairs accumulate. The writers run at once, so their writes share
//!   commits (group commit); the child reports its commit counts and the parent checks sharing
//!   happened. After each kill the `adxexporter wal` reports read (a copy of) the store too.
//! - Torn and corrupt files: truncated copies and copies with flipped bytes either open with data
//!   equal to what was written, or are refused as corrupt with an error naming the file; never
//!   wrong data, never a panic.
//! - The binary on the same damaged files: `run` and every `adxexporter wal` subcommand refuse what
//!   the library refuses (a zeroed last page, flipped bytes, an empty or truncated file) with the
//!   move-aside advice, exit 2 and 1 (never a panic's 101), and leave the file as it was; the
//!   reports read the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::time::Ticks;
use adxexporter::wal::{ExporterRef, RecordHeader, RecordId, Wal, WalConfig, WalError, WalFilter};

const CHILD_ENV: &str = "WAL_CRASH_CHILD_DIR";
const INTERVAL: i64 = 600_000_000;
const BASE: i64 = 638_000_000_000_000_000;
const UID: &str = "crash-uid";
const ROUNDS: usize = 20;
/// Writer threads of the crash child, each appending windows of its own exporter.
const WRITERS: usize = 3;

fn config() -> WalConfig {
    WalConfig::new(1 << 40, ["remote_write"])
}

fn start_of(seq: i64) -> i64 {
    BASE + seq * INTERVAL
}

fn id_of(seq: i64) -> RecordId {
    id_in(0, seq)
}

/// Writer `w`'s exporter: writer 0's is [`UID`], as in the single-writer tests below.
fn uid_of(w: usize) -> String {
    if w == 0 {
        UID.to_string()
    } else {
        format!("{UID}-{w}")
    }
}

fn id_in(w: usize, seq: i64) -> RecordId {
    RecordId {
        exporter_uid: uid_of(w),
        window_start: Ticks(start_of(seq)),
    }
}

/// Payload derived from the sequence number, ~20–60 KiB, so the checker knows what must be there.
fn request(seq: i64) -> WriteRequest {
    let series = 200 + (seq as usize * 37) % 400;
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", "crash_test"),
                    Label::new("seq", seq.to_string()),
                    Label::new(
                        "i",
                        format!(
                            "{i:08x}{:016x}",
                            (seq as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
                        ),
                    ),
                ],
                samples: vec![Sample {
                    value: seq as f64 * 1000.0 + i as f64,
                    timestamp: 1_700_000_000_000 + seq,
                }],
            })
            .collect(),
        ..Default::default()
    }
}

/// The child: continue from the watermark, append forever, ack every third record.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the parent's child
    };
    let wal = Wal::open(Path::new(&dir), config()).unwrap();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let wal = &wal;
            s.spawn(move || write_until_killed(wal, w));
        }
    });
}

/// Appends windows of writer `w`'s exporter and acks every third, printing `A w seq` / `K w seq`
/// once each call returned (and, every tenth window, `C commits writes`).
fn write_until_killed(wal: &Wal, w: usize) {
    let uid = uid_of(w);
    let mut seq = wal
        .watermark(&uid)
        .unwrap()
        .map_or(0, |t| (t.0 - BASE) / INTERVAL);
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    loop {
        let header = RecordHeader {
            exporter: ExporterRef::new(&uid, "ns", "crash"),
            generation: 1,
            window_start: Ticks(start_of(seq)),
            window_end: Ticks(start_of(seq + 1)),
            created: Ticks::now(),
            outputs: vec![],
        };
        wal.append(&header, &request(seq)).unwrap();
        say(format!("A {w} {seq}"));
        if seq % 3 == 1 {
            wal.ack("remote_write", &id_in(w, seq - 1)).unwrap();
            say(format!("K {w} {}", seq - 1));
        }
        if seq % 10 == 0 {
            let counts = wal.commit_counts();
            say(format!("C {} {}", counts.commits, counts.writes));
        }
        seq += 1;
    }
}

/// What the parent heard from one writer of the child.
#[derive(Default)]
struct Heard {
    appended: BTreeSet<i64>,
    acked: BTreeSet<i64>,
    /// (was an append, seq) of its last line.
    last: Option<(bool, i64)>,
}

#[test]
fn kill_9_never_loses_an_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut heard: Vec<Heard> = (0..WRITERS).map(|_| Heard::default()).collect();
    let mut shared_commits = false;
    for round in 0..ROUNDS {
        let kill_after = 1 + fastrand::usize(..25 * WRITERS);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = 0;
        for h in &mut heard {
            h.last = None;
        }
        // Read to EOF: after the kill, the rest of the pipe still holds every op that returned.
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let parts: Vec<&str> = line.split(' ').collect();
            let numbers: Vec<u64> = parts
                .iter()
                .skip(1)
                .filter_map(|p| p.parse().ok())
                .collect();
            match (parts.first().copied(), numbers.as_slice()) {
                (Some("C"), &[commits, writes]) => {
                    shared_commits |= writes > commits;
                    continue;
                }
                (Some(op @ ("A" | "K")), &[w, seq]) => {
                    let (h, seq) = (&mut heard[w as usize], seq as i64);
                    if op == "A" {
                        h.appended.insert(seq);
                    } else {
                        h.acked.insert(seq);
                    }
                    h.last = Some((op == "A", seq));
                }
                _ => continue,
            }
            lines += 1;
            if lines == kill_after {
                child.kill().unwrap(); // SIGKILL, mid-way through whatever comes next
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must have been killed"
        );
        tools_read_a_crashed_store(dir.path(), round);
        for (w, h) in heard.iter_mut().enumerate() {
            // An ack follows "A s" when s % 3 == 1: if that was the writer's last line, the ack of
            // s - 1 was in flight at the kill and may or may not have committed.
            let in_flight_ack = match h.last {
                Some((true, seq)) if seq % 3 == 1 => Some(seq - 1),
                _ => None,
            };
            verify_after_crash(dir.path(), w, h, in_flight_ack, round);
            if let Some(seq) = in_flight_ack
                && !record_present(dir.path(), w, seq)
            {
                h.acked.insert(seq); // it did commit
            }
        }
    }
    let appended: usize = heard.iter().map(|h| h.appended.len()).sum();
    let acked: usize = heard.iter().map(|h| h.acked.len()).sum();
    assert!(appended >= ROUNDS, "every round appended something");
    assert!(
        shared_commits,
        "{WRITERS} writers at once never shared a commit: group commit did not batch"
    );
    eprintln!("{ROUNDS} kills: {appended} appends and {acked} acks acknowledged, all verified");
}

/// The `wal` reports read a store a kill left open (on a copy, so the check below still sees the
/// crash): exit 0, no panic.
fn tools_read_a_crashed_store(dir: &Path, round: usize) {
    let copy = copy_to_fresh_dir(&dir.join("wal.redb"));
    for tool in [&["stats", "--json"][..], &["list"], &["dead-letters"]] {
        let out = adxexporter(&tool_args(tool, copy.path()));
        assert_eq!(
            out.code,
            Some(0),
            "round {round}: wal {tool:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "round {round}: {}",
            out.stderr
        );
    }
}

fn record_present(dir: &Path, w: usize, seq: i64) -> bool {
    let wal = Wal::open(dir, config()).unwrap();
    wal.read_payload(&id_in(w, seq)).is_ok()
}

fn verify_after_crash(
    dir: &Path,
    w: usize,
    heard: &Heard,
    in_flight_ack: Option<i64>,
    round: usize,
) {
    let wal = Wal::open(dir, config()).unwrap();
    let uid = uid_of(w);
    if let Some(last) = heard.appended.last() {
        let watermark = wal.watermark(&uid).unwrap().unwrap();
        assert!(
            watermark >= Ticks(start_of(last + 1)),
            "round {round}: {uid}'s watermark {watermark} behind its last acknowledged append {last}"
        );
    }
    let present: BTreeSet<i64> = wal
        .list(&WalFilter::default())
        .unwrap()
        .iter()
        .filter(|r| r.id.exporter_uid == uid)
        .map(|r| (r.id.window_start.0 - BASE) / INTERVAL)
        .collect();
    for seq in heard.appended.difference(&heard.acked) {
        if Some(*seq) == in_flight_ack && !present.contains(seq) {
            continue; // its ack committed just before the kill
        }
        assert!(
            present.contains(seq),
            "round {round}: acknowledged append {uid} {seq} lost"
        );
        assert_eq!(
            wal.read_payload(&id_in(w, *seq)).unwrap(),
            request(*seq),
            "round {round}: record {uid} {seq} altered"
        );
    }
    for seq in &heard.acked {
        assert!(
            !present.contains(seq),
            "round {round}: acknowledged ack of {uid} {seq} undone"
        );
    }
    // Anything else present is a record whose append was in flight at the kill: intact too.
    for seq in &present {
        assert_eq!(wal.read_payload(&id_in(w, *seq)).unwrap(), request(*seq));
    }
}

// ---------------------------------------------------------------------------------------------
// Torn and corrupt files

/// A store holding records 0..8 (4 of them acked), one dead letter, closed cleanly.
fn written_store(dir: &Path) -> BTreeMap<i64, WriteRequest> {
    let wal = Wal::open(dir, WalConfig::new(1 << 40, ["remote_write", "otlp"])).unwrap();
    let mut expected = BTreeMap::new();
    for seq in 0..8 {
        let header = RecordHeader {
            exporter: ExporterRef::new(UID, "ns", "crash"),
            generation: 1,
            window_start: Ticks(start_of(seq)),
            window_end: Ticks(start_of(seq + 1)),
            created: Ticks(BASE),
            outputs: vec![],
        };
        wal.append(&header, &request(seq)).unwrap();
        expected.insert(seq, request(seq));
    }
    for seq in 0..4 {
        wal.ack("remote_write", &id_of(seq)).unwrap();
        wal.ack("otlp", &id_of(seq)).unwrap();
        expected.remove(&seq);
    }
    wal.dead_letter("otlp", &id_of(5), "400", "bad").unwrap();
    expected
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Refused,
    OpenedIntact,
}

/// Open a damaged copy and read everything; any data returned must equal what was written.
fn open_damaged(dir: &Path, expected: &BTreeMap<i64, WriteRequest>) -> Outcome {
    let result = std::panic::catch_unwind(|| {
        let wal = match Wal::open(dir, WalConfig::new(1 << 40, ["remote_write", "otlp"])) {
            Ok(wal) => wal,
            Err(e) => {
                let text = e.to_string();
                let named = text.contains("wal.redb") && matches!(e, WalError::CorruptStore { .. });
                assert!(named, "error does not name the file as corrupt: {text}");
                return Outcome::Refused;
            }
        };
        let listed = match wal.list(&WalFilter::default()) {
            Ok(listed) => listed,
            Err(_) => return Outcome::Refused,
        };
        for record in listed {
            let seq = (record.id.window_start.0 - BASE) / INTERVAL;
            match wal.read_payload(&record.id) {
                Ok(payload) => {
                    assert_eq!(Some(&payload), expected.get(&seq), "wrong data for {seq}")
                }
                Err(e) => assert!(
                    matches!(e, WalError::CorruptRecord { .. } | WalError::Store(_)),
                    "{e}"
                ),
            }
        }
        for dead in wal.dead_letters(&WalFilter::default()).unwrap_or_default() {
            if let Ok(payload) = wal.read_dead_letter_payload(&dead.output, &dead.id) {
                assert_eq!(payload, request(5));
            }
        }
        Outcome::OpenedIntact
    });
    match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                text.contains("wrong data") || text.contains("error does not name"),
                "panicked on a damaged file: {text}"
            );
            panic!("{text}");
        }
    }
}

fn copy_to_fresh_dir(original: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(original, dir.path().join("wal.redb")).unwrap();
    dir
}

#[test]
fn truncated_store_is_refused_or_intact() {
    let src = tempfile::tempdir().unwrap();
    let expected = written_store(src.path());
    let original = src.path().join("wal.redb");
    let len = std::fs::metadata(&original).unwrap().len();
    let mut outcomes = BTreeMap::new();
    for cut in [1, 100, 511, 4096, len / 3, len / 2, len - 4096, len - 1] {
        let copy = copy_to_fresh_dir(&original);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join("wal.redb"))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        outcomes.insert(cut, open_damaged(copy.path(), &expected));
    }
    eprintln!("truncations (cut → outcome): {outcomes:?}");
    assert!(
        outcomes.values().any(|o| *o == Outcome::Refused),
        "{outcomes:?}"
    );
}

#[test]
fn flipped_bytes_are_refused_or_harmless() {
    let src = tempfile::tempdir().unwrap();
    let expected = written_store(src.path());
    let original = src.path().join("wal.redb");
    let bytes = std::fs::read(&original).unwrap();
    let mut refused = 0;
    let step = (bytes.len() / 150).max(1);
    for offset in (0..bytes.len()).step_by(step) {
        let copy = copy_to_fresh_dir(&original);
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x5a;
        std::fs::write(copy.path().join("wal.redb"), &damaged).unwrap();
        if open_damaged(copy.path(), &expected) == Outcome::Refused {
            refused += 1;
        }
    }
    let tried = bytes.len().div_ceil(step);
    eprintln!("{tried} single-byte flips: {refused} refused, the rest opened with intact data");
    assert!(refused > 0, "some flips hit live pages and must be refused");
}

// ---------------------------------------------------------------------------------------------
// The binary on the same damaged files: `run` and every `adxexporter wal` subcommand

const BIN: &str = env!("CARGO_BIN_EXE_adxexporter");
/// What `WalError::CorruptStore` tells the operator to do.
const ADVICE: &str =
    "move the file aside (keep it for inspection) and start again with an empty WAL";
const PAGE: usize = 4096;

/// Every `wal` subcommand, in each output form; the writing ones too.
const TOOLS: &[&[&str]] = &[
    &["stats"],
    &["stats", "--json"],
    &["list"],
    &["list", "--json"],
    &["dead-letters"],
    &["dead-letters", "--full"],
    &["dead-letters", "--json"],
    &["requeue"],
    &["purge", "--all"],
    &["purge", "--all", "--yes"],
];

struct Exit {
    code: Option<i32>,
    stderr: String,
}

/// Run the binary with a bound on its life; `None` code = still running at the deadline (killed).
fn adxexporter(args: &[String]) -> Exit {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("ADXEXPORTER_WAL_DIR")
        .env_remove("ADXEXPORTER_WAL_MAX_BYTES")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Exit {
        code,
        stderr: std::fs::read_to_string(log.path()).unwrap(),
    }
}

/// `run` in standalone mode with one output and nothing to query: it stops at the WAL or runs on.
fn run_args(wal_dir: &Path, manifests: &Path) -> Vec<String> {
    [
        "run",
        "--manifests",
        manifests.to_str().unwrap(),
        "--kusto-endpoint",
        "db=http://127.0.0.1:9",
        "--kusto-auth",
        "none",
        "--remote-write-endpoint",
        "http://127.0.0.1:9/api/v1/write",
        "--metrics-port",
        "127.0.0.1:0",
        "--health-probe-port",
        "127.0.0.1:0",
        "--wal-dir",
        wal_dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn tool_args(tool: &[&str], wal_dir: &Path) -> Vec<String> {
    let mut args = vec!["wal".to_string()];
    args.extend(tool.iter().map(|a| a.to_string()));
    args.extend(["--wal-dir".to_string(), wal_dir.display().to_string()]);
    args
}

/// A directory holding `bytes` as its `wal.redb`.
fn store_with(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wal.redb"), bytes).unwrap();
    dir
}

/// `run` and every `wal` subcommand refuse `bytes` as a corrupt WAL, each on its own copy: `run`
/// exits 2, a tool 1 (never a panic's 101), each naming the file and the move-aside advice, and
/// the file is left as it was.
fn assert_refused_by_binary(case: &str, bytes: &[u8]) {
    let manifests = tempfile::tempdir().unwrap();
    // `None` = `run`, which exits 2 on a start-up error; the tools exit 1.
    let commands = std::iter::once(None).chain(TOOLS.iter().map(Some));
    for tool in commands {
        let dir = store_with(bytes);
        let path = dir.path().join("wal.redb");
        let (name, args, expected) = match tool {
            None => ("run".to_string(), run_args(dir.path(), manifests.path()), 2),
            Some(tool) => (
                format!("wal {}", tool.join(" ")),
                tool_args(tool, dir.path()),
                1,
            ),
        };
        let out = adxexporter(&args);
        let text = &out.stderr;
        assert_eq!(
            out.code,
            Some(expected),
            "{case}: `{name}` exit {:?}: {text}",
            out.code
        );
        assert!(
            !text.contains("panicked"),
            "{case}: `{name}` panicked: {text}"
        );
        assert!(
            text.contains(&path.display().to_string()),
            "{case}: `{name}` does not name the file: {text}"
        );
        assert!(
            text.contains(ADVICE),
            "{case}: `{name}` gives no advice: {text}"
        );
        let after = std::fs::read(&path).unwrap();
        assert!(after == bytes, "{case}: `{name}` changed the refused file");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{case}: `{name}` left files: {left:?}");
    }
}

/// The library's verdict on `bytes` (what `run` does on start), on a copy.
fn library_refuses(bytes: &[u8]) -> bool {
    let dir = store_with(bytes);
    match Wal::open(
        dir.path(),
        WalConfig::new(1 << 40, ["remote_write", "otlp"]),
    ) {
        Ok(_) => false,
        Err(e) => {
            assert!(
                matches!(e, WalError::CorruptStore { .. }),
                "not reported as corrupt: {e}"
            );
            true
        }
    }
}

/// A store closed cleanly whose pages are all live: records 0..8 appended, none delivered, one
/// dead letter and one retry; so damage anywhere in it hits data that `run` verifies.
fn live_store(dir: &Path) {
    let wal = Wal::open(dir, WalConfig::new(1 << 40, ["remote_write", "otlp"])).unwrap();
    for seq in 0..8 {
        let header = RecordHeader {
            exporter: ExporterRef::new(UID, "ns", "crash"),
            generation: 1,
            window_start: Ticks(start_of(seq)),
            window_end: Ticks(start_of(seq + 1)),
            created: Ticks(BASE),
            outputs: vec![],
        };
        wal.append(&header, &request(seq)).unwrap();
    }
    wal.dead_letter("otlp", &id_of(5), "400", "bad").unwrap();
    wal.retry_later("remote_write", &id_of(0), Ticks(BASE), "503")
        .unwrap();
}

/// The damage an operator or a disk does while the service is stopped: each is refused by `run`
/// and by every `wal` subcommand alike, never with a panic.
#[test]
fn run_and_every_wal_subcommand_refuse_the_same_damaged_files() {
    let src = tempfile::tempdir().unwrap();
    live_store(src.path());
    let original = std::fs::read(src.path().join("wal.redb")).unwrap();
    let len = original.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();

    let mut zeroed = original.clone();
    zeroed[len - PAGE..].fill(0);
    cases.push(("last 4 KiB page zeroed".into(), zeroed));

    let mut flipped = original.clone();
    for b in &mut flipped[len / 2..len / 2 + 20] {
        *b ^= 0xa5;
    }
    cases.push(("20 bytes flipped mid-file".into(), flipped));

    cases.push(("empty file".into(), Vec::new()));
    cases.push(("cut to 1 byte".into(), original[..1].to_vec()));
    cases.push((
        "cut below the header (100 bytes)".into(),
        original[..100].to_vec(),
    ));
    cases.push(("cut to one page".into(), original[..PAGE].to_vec()));
    cases.push(("cut in half".into(), original[..len / 2].to_vec()));
    cases.push(("last page cut off".into(), original[..len - PAGE].to_vec()));

    for (case, bytes) in &cases {
        assert!(library_refuses(bytes), "{case}: Wal::open accepted it");
        assert_refused_by_binary(case, bytes);
    }
}

/// Every read-only `wal` report reads `bytes`, which `run` accepts: exit 0, no panic.
fn assert_read_by_tools(case: &str, bytes: &[u8]) {
    for tool in TOOLS
        .iter()
        .filter(|t| !t.contains(&"requeue") && !t.contains(&"--yes"))
    {
        let dir = store_with(bytes);
        let out = adxexporter(&tool_args(tool, dir.path()));
        let name = tool.join(" ");
        assert_eq!(
            out.code,
            Some(0),
            "{case}: `wal {name}` refused what run accepts: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{case}: `wal {name}`: {}",
            out.stderr
        );
    }
}

/// The damage of the torn and corrupt file tests above (cuts, and single-byte flips of a store with
/// freed pages): the tools agree with `run` on each, refusing what it refuses and reading the rest.
#[test]
fn the_tools_agree_with_run_on_cut_and_flipped_files() {
    let src = tempfile::tempdir().unwrap();
    written_store(src.path());
    let original = std::fs::read(src.path().join("wal.redb")).unwrap();
    let len = original.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [1, 100, 511, 4096, len / 3, len / 2, len - 4096, len - 1] {
        cases.push((format!("cut to {cut} bytes"), original[..cut].to_vec()));
    }
    for offset in (0..len).step_by(len / 16) {
        let mut flipped = original.clone();
        flipped[offset] ^= 0x5a;
        cases.push((format!("byte {offset} flipped"), flipped));
    }
    let mut refused = 0;
    for (case, bytes) in &cases {
        if library_refuses(bytes) {
            assert_refused_by_binary(case, bytes);
            refused += 1;
        } else {
            assert_read_by_tools(case, bytes);
        }
    }
    eprintln!(
        "{} damaged files: {refused} refused by run and every tool, the rest read by all",
        cases.len()
    );
    assert!(refused > 0);
}
