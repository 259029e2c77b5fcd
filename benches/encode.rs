//! Encode + compress throughput of one 1M-sample window for both outputs, in the two shapes of
//! `perf-anchors.md` §1: 10k series × 100 samples and 1M series × 1 sample (5 labels each, like the
//! anchor workload). Remote write = split + prost + snappy (block); OTLP = plan + prost + gzip (level 1,
//! the sink default, and level 6 for comparison with the anchors). Sizes are printed once per shape.

use std::collections::BTreeMap;
use std::time::Duration;

use adxexporter::prompb::RemoteWriteEncoder;
use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::sink::DEFAULT_MAX_REQUEST_BYTES;
use adxexporter::sink::otlp::{OtlpEncoder, OtlpTemplate};
use adxexporter::sink::remote_write::split_window;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod workload;
use workload::{METRICS, REGIONS};

/// `series` series (10 names × hosts) with `per_series` samples each, one minute apart.
fn window(series: usize, per_series: usize) -> WriteRequest {
    let mut rng = fastrand::Rng::with_seed(20260101);
    let t0 = 1_767_225_600_000i64;
    let timeseries = (0..series)
        .map(|i| {
            let (metric, host) = (i % 10, i / 10);
            let labels = vec![
                Label::new("Host", format!("host-{host:04}")),
                Label::new("Region", REGIONS[(host / 100) % 10]),
                Label::new("ServiceName", format!("service-{:03}", host % 200)),
                Label::new("__name__", METRICS[metric]),
                Label::new("cluster", "anchor"),
            ];
            let samples = (0..per_series)
                .map(|s| Sample {
                    value: if metric < 5 {
                        rng.u32(..1_000_000_000) as f64
                    } else {
                        rng.f64() * 1000.0
                    },
                    timestamp: t0 + s as i64 * 60_000 + rng.i64(0..1000),
                })
                .collect();
            TimeSeries { labels, samples }
        })
        .collect();
    WriteRequest::new(timeseries)
}

fn remote_write(w: &WriteRequest) -> (usize, usize, usize) {
    let mut enc = RemoteWriteEncoder::default();
    let (mut raw, mut compressed) = (0, 0);
    let chunks = split_window(w, DEFAULT_MAX_REQUEST_BYTES);
    for c in &chunks {
        let series = &w.timeseries[c.range.clone()];
        raw += enc.encode_raw(series).len();
        compressed += enc.encode(series).unwrap().len();
    }
    (chunks.len(), raw, compressed)
}

fn remote_write_bodies(w: &WriteRequest) -> usize {
    let mut enc = RemoteWriteEncoder::default();
    split_window(w, DEFAULT_MAX_REQUEST_BYTES)
        .iter()
        .map(|c| enc.encode(&w.timeseries[c.range.clone()]).unwrap().len())
        .sum()
}

fn otlp_bodies(t: &OtlpTemplate, w: &WriteRequest) -> usize {
    let plan = t.plan(w, DEFAULT_MAX_REQUEST_BYTES);
    let mut enc = OtlpEncoder::new(t);
    plan.chunks
        .iter()
        .map(|c| enc.encode(w, &plan.order[c.range.clone()]).unwrap().len())
        .sum()
}

fn otlp_sizes(t: &OtlpTemplate, w: &WriteRequest) -> (usize, usize, usize) {
    let plan = t.plan(w, DEFAULT_MAX_REQUEST_BYTES);
    let mut enc = OtlpEncoder::new(t);
    let raw = plan
        .chunks
        .iter()
        .map(|c| enc.encode_raw(w, &plan.order[c.range.clone()]).len())
        .sum();
    (plan.chunks.len(), raw, otlp_bodies(t, w))
}

fn bench(c: &mut Criterion) {
    let resource = BTreeMap::from([("cluster".to_owned(), "anchor".to_owned())]);
    let l1 = OtlpTemplate::new(&resource, 1).unwrap();
    let l6 = OtlpTemplate::new(&resource, 6).unwrap();
    for (series, per) in [(10_000, 100), (1_000_000, 1)] {
        let w = window(series, per);
        let shape = format!("{series}x{per}");
        let (n, raw, comp) = remote_write(&w);
        println!(
            "remote_write {shape}: {n} requests, {raw} B raw, {comp} B snappy (ratio {:.2})",
            raw as f64 / comp as f64
        );
        for (level, t) in [(1, &l1), (6, &l6)] {
            let (n, raw, comp) = otlp_sizes(t, &w);
            println!(
                "otlp L{level} {shape}: {n} requests, {raw} B raw, {comp} B gzip (ratio {:.2})",
                raw as f64 / comp as f64
            );
        }
        let mut g = c.benchmark_group(format!("encode_{shape}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(w.sample_count() as u64));
        g.bench_function("remote_write_prost_snappy", |b| {
            b.iter(|| remote_write_bodies(&w))
        });
        g.bench_function("otlp_prost_gzip_l1", |b| b.iter(|| otlp_bodies(&l1, &w)));
        g.bench_function("otlp_prost_gzip_l6", |b| b.iter(|| otlp_bodies(&l6, &w)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
