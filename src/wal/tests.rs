//! Unit tests of the store; the model, crash and tool tests are `tests/wal_*.rs`.

use std::path::Path;

use prost::Message;

use super::file;
use super::tables::{EXPORTERS, store};
use super::*;
use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};

const START: i64 = 638_000_000_000_000_000;
const INTERVAL: i64 = 600_000_000;

fn open(dir: &Path) -> Wal {
    Wal::open(dir, WalConfig::new(1 << 30, ["remote_write", "otlp"])).unwrap()
}

fn header(outputs: &[&str]) -> RecordHeader {
    RecordHeader {
        exporter: ExporterRef::new("uid-0", "ns", "cpu"),
        generation: 1,
        window_start: Ticks(START),
        window_end: Ticks(START + INTERVAL),
        created: Ticks(START),
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
    }
}

fn request(value: f64) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "cpu")],
            samples: vec![Sample {
                value,
                timestamp: 0,
            }],
        }],
        ..Default::default()
    }
}

/// A volume with less free space than `min_free_bytes` counts as full (querying pauses) before
/// redb could hit ENOSPC; with no reserve only `max_bytes` decides.
#[test]
fn a_low_volume_counts_as_full() {
    let dir = tempfile::tempdir().unwrap();
    let free = volume_free_bytes(dir.path()).expect("statvfs of a temp dir");
    let with_reserve = |min_free_bytes: u64| {
        let mut config = WalConfig::new(1 << 30, ["remote_write"]);
        config.min_free_bytes = min_free_bytes;
        let wal = Wal::open(dir.path(), config).unwrap();
        wal.is_full().unwrap()
    };
    assert!(!with_reserve(0));
    assert!(with_reserve(free.saturating_mul(2).max(1 << 40)));
}

/// Regression (chaos suite, StatefulSet rescale 1 → 2 → 1): a replica that gets a resource back
/// must not resume from its own stale watermark when the status shows another replica went on.
#[test]
fn raise_watermark_only_moves_forward() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let ex = header(&[]).exporter;
    let at = |w: i64| Ticks(START + w * INTERVAL);
    assert_eq!(wal.raise_watermark(&ex, at(2)).unwrap(), at(2));
    assert_eq!(wal.raise_watermark(&ex, at(7)).unwrap(), at(7));
    assert_eq!(wal.raise_watermark(&ex, at(3)).unwrap(), at(7));
    assert_eq!(wal.watermark(&ex.uid).unwrap(), Some(at(7)));
    let mut before = header(&[]);
    before.window_start = at(5);
    before.window_end = at(6);
    let err = wal.append(&before, &request(1.0)).unwrap_err();
    assert!(err.to_string().contains("scheduler bug"), "{err}");
}

#[test]
fn payload_snappy_cannot_shrink_is_stored_plain_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: String = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    let mut noisy = request(1.0);
    noisy.timeseries[0].labels.push(Label::new("noise", noise));
    let id = wal.append(&header(&[]), &noisy).unwrap();
    let stored = wal.read_encoded(&id).unwrap();
    assert_eq!(stored.compression, Compression::None);
    assert_eq!(stored.bytes, noisy.encode_to_vec());
    assert_eq!(stored.samples, 1);
    assert_eq!(wal.read_payload(&id).unwrap(), noisy);
}

#[test]
fn duplicate_append_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let id = wal.append(&header(&[]), &request(1.0)).unwrap();
    let used = wal.used_bytes().unwrap();
    // Only reachable when the watermark row is gone (a store written before watermarks outlived records).
    wal.write(|tx| {
        let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
        exporters.remove("uid-0").map_err(store)?;
        Ok(())
    })
    .unwrap();
    let err = wal.append(&header(&["otlp"]), &request(2.0)).unwrap_err();
    assert!(matches!(err, WalError::DuplicateRecord { .. }), "{err}");
    assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
    assert_eq!(wal.used_bytes().unwrap(), used);
    assert_eq!(wal.watermark("uid-0").unwrap(), None);
}

#[test]
fn a_requeued_dead_letter_resumes_at_the_refused_request() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let resume_of =
        |wal: &Wal, output: &str| wal.next_pending(output, Ticks::MAX, 10).unwrap()[0].resume_from;
    let a = wal.append(&header(&[]), &request(1.0)).unwrap();
    // Requests 0..3 accepted, request 3 refused for good.
    wal.dead_letter_at("remote_write", &a, Some(3), "400", "")
        .unwrap();
    // Resumed at 2 after a retry, then refused there.
    wal.retry_later_from("otlp", &a, Ticks(0), "503", Some(2))
        .unwrap();
    wal.dead_letter("otlp", &a, "400", "").unwrap();
    assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 2);
    assert_eq!(resume_of(&wal, "remote_write"), 3);
    assert_eq!(resume_of(&wal, "otlp"), 2);
}

#[test]
fn requeue_onto_the_same_live_record_makes_the_output_pending_again() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let id = wal.append(&header(&[]), &request(1.0)).unwrap();
    wal.dead_letter("remote_write", &id, "400", "").unwrap();
    assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 1);
    let listed = wal.list(&WalFilter::default()).unwrap();
    assert_eq!(listed[0].header.outputs, ["remote_write", "otlp"]);
    assert!(
        listed[0]
            .deliveries
            .iter()
            .all(|(_, s)| matches!(s, DeliveryState::Pending { .. }))
    );
    assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
    assert_eq!(wal.stats().unwrap().dead_letters, 0);
}

#[test]
fn requeue_refuses_a_dead_letter_colliding_with_a_different_record() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let id = wal
        .append(&header(&["remote_write"]), &request(1.0))
        .unwrap();
    wal.dead_letter("remote_write", &id, "400", "").unwrap();
    wal.forget_exporter("uid-0").unwrap();
    assert!(
        wal.watermark("uid-0").unwrap().is_some(),
        "kept while a dead letter exists"
    );
    // A store written before that rule: the watermark row is gone, so the key is appended again.
    wal.write(|tx| {
        let mut exporters = tx.open_table(EXPORTERS).map_err(store)?;
        exporters.remove("uid-0").map_err(store)?;
        Ok(())
    })
    .unwrap();
    wal.append(&header(&["otlp"]), &request(2.0)).unwrap();
    let used = wal.used_bytes().unwrap();

    let err = wal.requeue(&WalFilter::default()).unwrap_err();
    assert!(matches!(err, WalError::RequeueConflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was requeued"), "{err}");
    assert_eq!(wal.read_payload(&id).unwrap(), request(2.0));
    assert_eq!(
        wal.read_dead_letter_payload("remote_write", &id).unwrap(),
        request(1.0)
    );
    let listed = wal.list(&WalFilter::default()).unwrap();
    assert_eq!(listed[0].header.outputs, ["otlp"]);
    assert!(
        wal.next_pending("remote_write", Ticks(0), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(wal.used_bytes().unwrap(), used);

    // Once the live record is delivered, the dead letter comes back with its own payload.
    wal.ack("otlp", &id).unwrap();
    assert_eq!(wal.requeue(&WalFilter::default()).unwrap(), 1);
    assert_eq!(wal.read_payload(&id).unwrap(), request(1.0));
}

/// A store with `n` one-sample records of exporter uid-0, closed cleanly.
fn store_with_records(dir: &Path, n: i64) {
    let wal = open(dir);
    for i in 0..n {
        let mut h = header(&[]);
        h.window_start = Ticks(START + i * INTERVAL);
        h.window_end = Ticks(START + (i + 1) * INTERVAL);
        wal.append(&h, &request(i as f64)).unwrap();
    }
}

/// A panic inside `guard` is the named file's corruption, with what redb said and where.
#[test]
fn guard_turns_a_panic_into_corruption_of_the_file() {
    let path = Path::new("/data/wal.redb");
    let err = file::guard(path, || -> () { panic!("Malformed allocator state") }).unwrap_err();
    match err {
        WalError::CorruptStore { path: p, detail } => {
            assert_eq!(p, path);
            assert!(
                detail.starts_with("Malformed allocator state at "),
                "{detail}"
            );
            assert!(detail.contains("tests.rs"), "{detail}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(file::guard(path, || 7).unwrap(), 7);
}

/// The tools' reads are guarded too, not only their open: a file that goes bad under an open report
/// (here: zeroed behind redb's back) makes redb panic mid-read, which is reported as corruption.
#[test]
fn a_report_reading_a_file_damaged_after_open_fails_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_records(dir.path(), 40);
    let wal = Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadOnly).unwrap();
    let path = dir.path().join(WAL_FILE_NAME);
    // Without a page cache, so that every read after the damage reaches the file.
    let mut config = wal.inner.config.clone();
    config.cache_bytes = 0;
    let uncached = file::open_report(&path, dir.path(), &config).unwrap();
    *wal.inner.db.write().unwrap() = uncached;
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0; (len - 4096) as usize], 4096).unwrap();
    drop(file);
    let results = [
        wal.list(&WalFilter::default()).map(|_| ()),
        wal.stats().map(|_| ()),
        wal.dead_letters(&WalFilter::default()).map(|_| ()),
    ];
    for result in results {
        let err = result.expect_err("read a zeroed file");
        assert!(matches!(err, WalError::CorruptStore { .. }), "{err}");
    }
}

/// The reports verify the store as `run` does (every page checksum) though they never write it:
/// damage in pages they would not otherwise read (payloads) is refused, and the file is unchanged.
#[test]
fn a_report_refuses_damage_in_payload_pages_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    // Pseudo-random label values: snappy stores many of them verbatim (as literals), so they can be
    // found in the file.
    let value = |i: u64| {
        const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut x = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..24)
            .map(|_| {
                x ^= x >> 31;
                x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                char::from(SYMBOLS[(x >> 58) as usize])
            })
            .collect::<String>()
    };
    let big = WriteRequest {
        timeseries: (0..2000)
            .map(|i| TimeSeries {
                labels: vec![Label::new("__name__", value(i))],
                samples: vec![Sample {
                    value: i as f64,
                    timestamp: 0,
                }],
            })
            .collect(),
        ..Default::default()
    };
    wal.append(&header(&[]), &big).unwrap();
    drop(wal);
    let path = dir.path().join(WAL_FILE_NAME);
    let clean = std::fs::read(&path).unwrap();
    let at = (0..2000)
        .find_map(|i| {
            let needle = value(i);
            clean
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
        })
        .expect("a label value in the payload pages");
    let mut damaged = clean.clone();
    damaged[at] ^= 0x20;
    std::fs::write(&path, &damaged).unwrap();
    let err = Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadOnly).unwrap_err();
    assert!(matches!(err, WalError::CorruptStore { .. }), "{err}");
    assert!(std::fs::read(&path).unwrap() == damaged, "the report wrote");
    std::fs::write(&path, &clean).unwrap();
    let wal = Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadOnly).unwrap();
    assert_eq!(wal.stats().unwrap().records, 1);
    drop(wal);
    assert!(std::fs::read(&path).unwrap() == clean, "the report wrote");
}

/// Only a missing file is a new store: an empty or truncated one is refused by `open` and by the
/// tools' open alike, and left as it is.
#[test]
fn an_empty_or_truncated_file_is_refused_never_recreated() {
    let src = tempfile::tempdir().unwrap();
    store_with_records(src.path(), 3);
    let whole = std::fs::read(src.path().join(WAL_FILE_NAME)).unwrap();
    for len in [0, 1, 100, 319] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE_NAME);
        std::fs::write(&path, &whole[..len]).unwrap();
        let errors = [
            Wal::open(dir.path(), WalConfig::new(1 << 30, ["remote_write"])).unwrap_err(),
            Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadOnly).unwrap_err(),
            Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadWrite).unwrap_err(),
        ];
        for err in errors {
            let WalError::CorruptStore { detail, .. } = &err else {
                panic!("{len} bytes: {err}");
            };
            let expected = if len == 0 {
                "empty (0 bytes)"
            } else {
                "truncated"
            };
            assert!(detail.contains(expected), "{len} bytes: {err}");
            assert!(err.to_string().contains("move the file aside"), "{err}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), &whole[..len]);
    }
    // A missing file: a new store for `open`, "no WAL here" for the tools.
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open_existing(dir.path(), 1 << 30, WalAccess::ReadOnly).unwrap_err();
    assert!(matches!(err, WalError::NoStore { .. }), "{err}");
    assert_eq!(open(dir.path()).stats().unwrap().records, 0);
}

fn window_header(n: i64) -> RecordHeader {
    let mut h = header(&[]);
    h.window_start = Ticks(START + n * INTERVAL);
    h.window_end = Ticks(START + (n + 1) * INTERVAL);
    h
}

fn counter(increase: f64) -> WriteRequest {
    let mut r = request(increase);
    r.timeseries[0].labels = vec![Label::new("__name__", "requests_total")];
    r
}

fn stored_value(wal: &Wal, n: i64) -> f64 {
    let id = window_header(n).id();
    wal.read_payload(&id).unwrap().timeseries[0].samples[0].value
}

const IDLE: crate::time::Span = crate::time::Span(100 * INTERVAL);

/// Running totals advance in the append's transaction: they survive a reopen, a refused append
/// leaves them as they were, and the record holds the totals with the increases beside them.
#[test]
fn counter_totals_advance_once_per_appended_window_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        wal.append_cumulative(&window_header(0), counter(2.0), IDLE, false)
            .unwrap();
        wal.append_cumulative(&window_header(1), counter(3.0), IDLE, false)
            .unwrap();
        // The same window again (a retry after a crash that did commit) is refused: no double count.
        let err =
            (wal.append_cumulative(&window_header(1), counter(3.0), IDLE, false)).unwrap_err();
        assert!(
            matches!(err, WalError::WindowBeforeWatermark { .. }),
            "{err}"
        );
        let stored = wal.read_encoded(&window_header(1).id()).unwrap();
        assert!(stored.cumulative);
        let c = wal.read_payload(&window_header(1).id()).unwrap().cumulative;
        assert_eq!(c.unwrap().increases, [3.0]);
    }
    let wal = open(dir.path());
    wal.append_cumulative(&window_header(2), counter(4.0), IDLE, false)
        .unwrap();
    assert_eq!([0, 1, 2].map(|n| stored_value(&wal, n)), [2.0, 5.0, 9.0]);
}

/// A resource handed to another replica and back, or deleted, restarts its totals from 0.
#[test]
fn a_raised_watermark_or_a_forgotten_exporter_clears_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let ex = header(&[]).exporter;
    wal.append_cumulative(&window_header(0), counter(2.0), IDLE, false)
        .unwrap();
    // Same watermark: nothing happened elsewhere, the total continues.
    wal.raise_watermark(&ex, Ticks(START + INTERVAL)).unwrap();
    wal.append_cumulative(&window_header(1), counter(1.0), IDLE, false)
        .unwrap();
    assert_eq!(stored_value(&wal, 1), 3.0);
    // Another replica exported windows 2..5: restart.
    wal.raise_watermark(&ex, Ticks(START + 5 * INTERVAL))
        .unwrap();
    wal.append_cumulative(&window_header(5), counter(1.0), IDLE, false)
        .unwrap();
    assert_eq!(stored_value(&wal, 5), 1.0);
    wal.forget_exporter(&ex.uid).unwrap();
    let rows = wal
        .read(|tx| {
            use redb::ReadableTableMetadata;
            let t = tx.open_table(totals::TOTALS).map_err(store)?;
            t.len().map_err(store)
        })
        .unwrap();
    assert_eq!(rows, 0);
}

/// A backfill's cursor is an exporter row of its own; `backfills_of` lists the kept ones, and a
/// refused output is remembered and its pending windows dropped.
#[test]
fn backfill_cursors_are_listed_until_forgotten_and_refusals_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let live = header(&[]).exporter;
    let r1 = ExporterRef::new(backfill_uid(&live.uid, "r1"), "ns", "cpu");
    let r2 = ExporterRef::new(backfill_uid(&live.uid, "r2"), "ns", "cpu");
    wal.set_watermark_if_absent(&r1, Ticks(START)).unwrap();
    wal.set_watermark_if_absent(&r2, Ticks(START)).unwrap();
    wal.set_watermark_if_absent(&live, Ticks(START)).unwrap();
    assert_eq!(backfill_parent(&r1.uid), Some(live.uid.as_str()));
    assert_eq!(backfill_parent(&live.uid), None);
    assert_eq!(
        wal.backfills_of(&live.uid).unwrap(),
        [r1.uid.clone(), r2.uid.clone()]
    );
    wal.forget_exporter(&r1.uid).unwrap();
    assert_eq!(
        wal.backfills_of(&live.uid).unwrap(),
        std::slice::from_ref(&r2.uid)
    );

    let mut h = header(&[]);
    h.exporter = r2.clone();
    wal.append(&h, &request(1.0)).unwrap();
    let dropped = wal
        .fail_backfill_output(&r2.uid, "remote_write", "out of order")
        .unwrap();
    assert_eq!(dropped, 1);
    let refused = wal.backfill_failures(&r2.uid).unwrap();
    assert_eq!(
        refused.get("remote_write").map(String::as_str),
        Some("out of order")
    );
    // The refusal survives the next append of the backfill, which (as the backfill task does)
    // names the outputs left.
    let mut next = window_header(1);
    next.exporter = r2.clone();
    next.outputs = vec!["otlp".into()];
    wal.append(&next, &request(2.0)).unwrap();
    assert_eq!(wal.backfill_failures(&r2.uid).unwrap().len(), 1);
    assert!(
        wal.next_pending("remote_write", Ticks::MAX, 16)
            .unwrap()
            .is_empty()
    );
    // The other output still has both windows, oldest first (one per exporter at a time).
    let otlp = wal.next_pending("otlp", Ticks::MAX, 16).unwrap();
    assert_eq!(otlp.len(), 1);
    assert_eq!(otlp[0].id, h.id());
}

fn exporter_header(w: usize) -> RecordHeader {
    RecordHeader {
        exporter: ExporterRef::new(format!("uid-{w}"), "ns", "cpu"),
        ..header(&["remote_write"])
    }
}

/// Writes that arrive while another runs share one durable commit (docs/design.md#group-commit):
/// with a write held open, six appends each commit non-durably and wait; once it ends, one commit
/// makes all six durable, and each append returned only after it.
#[test]
fn writes_arriving_together_share_one_commit() {
    const WRITERS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let before = wal.commit_counts();
    let group = &wal.inner.group;
    let held = group.begin();
    assert!(
        held.alone,
        "nothing else runs: a lone write commits on its own"
    );
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let wal = &wal;
            s.spawn(move || wal.append(&exporter_header(w), &request(w as f64)).unwrap());
        }
        group.wait_until(|open_writes, running| open_writes == WRITERS as u64 && running == 1);
        assert_eq!(
            wal.commit_counts(),
            before,
            "nothing is durable while the batch waits"
        );
        held.end(false);
    });
    let after = wal.commit_counts();
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(after.writes - before.writes, WRITERS as u64);
    // A lone write again commits on its own.
    wal.ack("remote_write", &exporter_header(0).id()).unwrap();
    let lone = wal.commit_counts();
    assert_eq!(
        (lone.commits, lone.writes),
        (after.commits + 1, after.writes + 1)
    );
    drop(wal);
    let wal = open(dir.path());
    for w in 1..WRITERS {
        assert_eq!(
            wal.read_payload(&exporter_header(w).id()).unwrap(),
            request(w as f64)
        );
    }
}

/// A batch lost with the store (closed after an I/O error before its durable commit) fails every
/// write in it with an error naming the store and the cause; the next write reopens the store.
#[test]
fn a_lost_batch_fails_every_write_in_it() {
    const WRITERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let group = &wal.inner.group;
    let held = group.begin();
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let wal = &wal;
                s.spawn(move || wal.append(&exporter_header(w), &request(w as f64)))
            })
            .collect();
        group.wait_until(|open_writes, running| open_writes == WRITERS as u64 && running == 1);
        wal.close_after_io_error(&WalError::Store(redb::Error::PreviousIo));
        held.end(false);
        for writer in writers {
            let err = writer.join().unwrap().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, WalError::CommitFailed { .. }), "{text}");
            assert!(text.contains("wal.redb") && text.contains("I/O"), "{text}");
        }
    });
    let next = exporter_header(WRITERS);
    wal.append(&next, &request(9.0)).unwrap();
    assert_eq!(wal.read_payload(&next.id()).unwrap(), request(9.0));
}

/// A write that panics (a bug) still ends: later writes neither wait for it nor lose their own
/// commit.
#[test]
fn a_write_that_panics_holds_up_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wal.write(|_| -> Result<(), WalError> { panic!("a bug inside a WAL write") })
    }));
    assert!(panicked.is_err());
    assert_eq!(wal.inner.group.running(), 0);
    let before = wal.commit_counts();
    let next = exporter_header(1);
    wal.append(&next, &request(1.0)).unwrap();
    let after = wal.commit_counts();
    assert_eq!(
        (after.commits, after.writes),
        (before.commits + 1, before.writes + 1)
    );
    assert_eq!(wal.read_payload(&next.id()).unwrap(), request(1.0));
}
