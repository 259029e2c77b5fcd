//! `decode_v2` against bare serde_json streaming parses of the same body: the perf-anchors §1 workload
//! (1M rows, 6 columns datetime/string×4/real, ~105 bytes/row, one compact frame per line).
//!
//! Baselines: `ignored` walks every JSON value with `IgnoredAny`; `fold` borrows each primary row as
//! `(&str ×5, f64)`, parses the datetime and folds a checksum without storing anything.

use std::fmt;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use adxexporter::query::{QueryLimits, decode_v2};
use adxexporter::time::Ticks;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

mod workload;
use workload::{METRICS, REGIONS};

const ROWS: usize = 1_000_000;

/// Deterministic xorshift; the exact sequence does not matter, the shape does.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn workload_body(rows: usize) -> Vec<u8> {
    let mut rng = Rng(20260101);
    let mut b = String::with_capacity(rows * 110);
    b.push_str(r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0","IsFragmented":false,"ErrorReportingPlacement":"InData"}"#);
    b.push_str(",\n");
    b.push_str(r#"{"FrameType":"DataTable","TableId":0,"TableKind":"QueryProperties","TableName":"@ExtendedProperties","Columns":[{"ColumnName":"TableId","ColumnType":"int"},{"ColumnName":"Key","ColumnType":"string"},{"ColumnName":"Value","ColumnType":"dynamic"}],"Rows":[[1,"Visualization","{\"Visualization\":null,\"Title\":null}"]]}"#);
    b.push_str(",\n");
    b.push_str(r#"{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"timestamp","ColumnType":"datetime"},{"ColumnName":"metric_name","ColumnType":"string"},{"ColumnName":"ServiceName","ColumnType":"string"},{"ColumnName":"Region","ColumnType":"string"},{"ColumnName":"Host","ColumnType":"string"},{"ColumnName":"metric_value","ColumnType":"real"}],"Rows":["#);
    let start = Ticks::parse("2026-01-01T00:00:00Z").expect("valid");
    for i in 0..rows {
        let step = (i / 10_000) as i64;
        let host = (i / 10) % 1000;
        let metric = i % 10;
        let jitter = (rng.next() % 10_000_000) as i64;
        let ts = Ticks(start.0 + step * 60 * 10_000_000 + jitter);
        let text = ts.to_string();
        // Always 7 fraction digits, like the generator.
        let (secs, frac) = text
            .trim_end_matches('Z')
            .split_once('.')
            .unwrap_or((&text[..19], ""));
        let value = if metric < 5 {
            format!("{:.1}", (rng.next() % 1_000_000_000) as f64)
        } else {
            format!(
                "{}",
                (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
            )
        };
        if i > 0 {
            b.push(',');
        }
        let _ = write!(
            b,
            r#"["{secs}.{frac:0<7}Z","{}","service-{:03}","{}","host-{host:04}",{value}]"#,
            METRICS[metric],
            host % 200,
            REGIONS[host / 100],
        );
    }
    b.push_str("]}");
    b.push_str(",\n");
    b.push_str(r#"{"FrameType":"DataTable","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":[{"ColumnName":"Level","ColumnType":"int"},{"ColumnName":"LevelName","ColumnType":"string"}],"Rows":[[4,"Info"],[6,"Stats"]]}"#);
    b.push_str(",\n");
    b.push_str(r#"{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#);
    b.push('\n');
    b.into_bytes()
}

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
    let mut best = [f64::MAX; 4];
    for _ in 0..7 {
        let t = Instant::now();
        let set = black_box(decode_v2(black_box(body), limits));
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(set);
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(serde_json::from_slice::<IgnoredAny>(black_box(body)).is_ok());
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(fold(black_box(body)));
        best[3] = best[3].min(t.elapsed().as_secs_f64());
    }
    let mb = body.len() as f64 / 1e6;
    let names = [
        "decode_v2 (no drop)",
        "drop of the DataSet",
        "baseline_ignored_any",
        "baseline_fold",
    ];
    for (name, secs) in names.iter().zip(best) {
        eprintln!(
            "interleaved min of 7: {name:<24} {:>7.1} ms {:>7.1} MB/s {:>6.2} M rows/s",
            secs * 1e3,
            mb / secs,
            ROWS as f64 / secs / 1e6
        );
    }
    let with_drop = best[0] + best[1];
    eprintln!(
        "decode_v2 speed relative to ignored_any = {:.2} ({:.2} with drop), to fold = {:.2} ({:.2} with drop)",
        best[2] / best[0],
        best[2] / with_drop,
        best[3] / best[0],
        best[3] / with_drop
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
    drop(set);
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
