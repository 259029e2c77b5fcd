//! `decode_v2` (the whole body in memory) and `decode_v2_reader` (the body read 64 KiB at a time, as
//! the client decodes it off the wire) against bare serde_json streaming parses of the same body:
//! the perf-anchors §1 workload (1M rows, 6 columns datetime/string×4/real, ~105 bytes/row, one
//! compact frame per line).
//!
//! Baselines: `ignored` walks every JSON value with `IgnoredAny`; `fold` borrows each primary row as
//! `(&str ×5, f64)`, parses the datetime and folds a checksum without storing anything.

use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use adxexporter::query::{QueryLimits, decode_v2, decode_v2_reader};
use adxexporter::time::Ticks;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

mod workload;
use workload::workload_body;

const ROWS: usize = 1_000_000;

/// Baseline "fold": walks the frames, borrows primary rows, folds a checksum.
struct Frames<'a>(&'a mut u64);
impl<'de> Visitor<'de> for Frames<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("frames")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Frame(&mut *self.0))?.is_some() {}
        Ok(())
    }
}
struct Frame<'a>(&'a mut u64);
impl<'de> DeserializeSeed<'de> for Frame<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for Frame<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("frame")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut primary = false;
        while let Some(k) = map.next_key::<&str>()? {
            match k {
                "TableKind" => primary = map.next_value::<&str>()? == "PrimaryResult",
                "Rows" if primary => map.next_value_seed(Rows(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}
struct Rows<'a>(&'a mut u64);
impl<'de> DeserializeSeed<'de> for Rows<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for Rows<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, f64);
        while let Some((ts, a, b, c, d, v)) = seq.next_element::<Row<'de>>()? {
            let ms = Ticks::parse(ts).map(|t| t.unix_millis()).unwrap_or(0);
            *self.0 = self.0.wrapping_add(
                ms as u64 ^ (a.len() + b.len() + c.len() + d.len()) as u64 ^ v.to_bits(),
            );
        }
        Ok(())
    }
}

fn fold(body: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = de.deserialize_seq(Frames(&mut sum));
    sum
}

/// The machine is shared: criterion's back-to-back groups see different neighbours. Here each round
/// runs all three once, and the minimum per contender (the least-disturbed run) gives the ratios.
fn interleaved_ratios(body: &[u8], limits: &QueryLimits) {
    let mut best = [f64::MAX; 5];
    for _ in 0..7 {
        let t = Instant::now();
        let set = black_box(decode_v2(black_box(body), limits));
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(set);
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let set = black_box(decode_v2_reader(black_box(body), limits));
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        drop(set);
        let t = Instant::now();
        black_box(serde_json::from_slice::<IgnoredAny>(black_box(body)).is_ok());
        best[3] = best[3].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(fold(black_box(body)));
        best[4] = best[4].min(t.elapsed().as_secs_f64());
    }
    let mb = body.len() as f64 / 1e6;
    let names = [
        "decode_v2 (no drop)",
        "drop of the DataSet",
        "decode_v2_reader (no drop)",
        "baseline_ignored_any",
        "baseline_fold",
    ];
    for (name, secs) in names.iter().zip(best) {
        eprintln!(
            "interleaved min of 7: {name:<27} {:>7.1} ms {:>7.1} MB/s {:>6.2} M rows/s",
            secs * 1e3,
            mb / secs,
            ROWS as f64 / secs / 1e6
        );
    }
    let with_drop = best[0] + best[1];
    eprintln!(
        "decode_v2 speed relative to ignored_any = {:.2} ({:.2} with drop), to fold = {:.2} ({:.2} with drop); decode_v2_reader relative to decode_v2 = {:.2}",
        best[3] / best[0],
        best[3] / with_drop,
        best[4] / best[0],
        best[4] / with_drop,
        best[0] / best[2]
    );
}

fn bench(c: &mut Criterion) {
    let body = workload_body(ROWS);
    let limits = QueryLimits {
        max_rows: ROWS,
        max_bytes: body.len(),
    };
    let set = decode_v2(&body, &limits).expect("the workload decodes");
    assert_eq!(set.primary().map(|t| t.row_count()), Some(ROWS));
    let streamed = decode_v2_reader(&body[..], &limits).expect("the workload streams");
    assert!(streamed == set, "decode_v2_reader and decode_v2 disagree");
    drop((set, streamed));
    eprintln!(
        "body: {} rows, {} bytes ({:.1} bytes/row)",
        ROWS,
        body.len(),
        body.len() as f64 / ROWS as f64
    );

    interleaved_ratios(&body, &limits);

    let mut g = c.benchmark_group("kusto_v2_1m");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_v2", |b| {
        b.iter(|| black_box(decode_v2(black_box(&body), &limits).map(|s| s.tables.len())))
    });
    g.bench_function("decode_v2_excluding_drop", |b| {
        b.iter_with_large_drop(|| decode_v2(black_box(&body), &limits))
    });
    g.bench_function("decode_v2_reader_excluding_drop", |b| {
        b.iter_with_large_drop(|| decode_v2_reader(black_box(&body[..]), &limits))
    });
    g.bench_function("baseline_ignored_any", |b| {
        b.iter(|| black_box(serde_json::from_slice::<IgnoredAny>(black_box(&body)).is_ok()))
    });
    g.bench_function("baseline_fold", |b| {
        b.iter(|| black_box(fold(black_box(&body))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
