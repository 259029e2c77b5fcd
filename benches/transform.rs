//! Transform throughput on the perf-anchors §1 workload: 1M rows of `timestamp, metric_name,
//! ServiceName, Region, Host, metric_value` (10 names × 1000 hosts × 100 one-minute steps), one value
//! column and three label columns, so 1M samples in 10,000 series. Throughput is reported in rows/s
//! (= samples/s here, one value column). `10k_rows_10k_series`: one window of the push bench, the
//! first 10,000 of those rows (one minute: every row its own series).

use std::hint::black_box;

use adxexporter::crd::TransformSpec;
use adxexporter::query::{Column, ColumnType, Table, Value};
use adxexporter::time::{TICKS_PER_SECOND, Ticks};
use adxexporter::transform::{Mapping, transform};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod workload;
use workload::{METRICS, REGIONS};

const ROWS: usize = 1_000_000;

/// Rows in the generator's order: step → host → metric, timestamps with sub-second jitter.
fn workload(rows: usize) -> Table {
    let col = |name: &str, ty| Column {
        name: name.into(),
        ty,
    };
    let mut table = Table::new(
        "PrimaryResult",
        vec![
            col("timestamp", ColumnType::DateTime),
            col("metric_name", ColumnType::String),
            col("ServiceName", ColumnType::String),
            col("Region", ColumnType::String),
            col("Host", ColumnType::String),
            col("metric_value", ColumnType::Real),
        ],
    );
    table.reserve_rows(rows);
    let mut rng = fastrand::Rng::with_seed(20260101);
    let start = Ticks::parse("2026-01-01T00:00:00Z").unwrap().0;
    for i in 0..rows {
        let (step, host, metric) = (i / 10_000, i / 10 % 1000, i % 10);
        let jitter = rng.i64(0..TICKS_PER_SECOND);
        let value = if metric < 5 {
            rng.u32(0..1_000_000_000) as f64
        } else {
            rng.f64() * 1000.0
        };
        table.push_row([
            Value::DateTime(Ticks(start + step as i64 * 60 * TICKS_PER_SECOND + jitter)),
            Value::String(METRICS[metric].into()),
            Value::String(format!("service-{:03}", host % 200).into()),
            Value::String(REGIONS[host / 100].into()),
            Value::String(format!("host-{host:04}").into()),
            Value::Real(value),
        ]);
    }
    table
}

fn bench(c: &mut Criterion) {
    let table = workload(ROWS);
    let transform_spec = TransformSpec {
        metric_name_column: Some("metric_name".into()),
        value_columns: vec!["metric_value".into()],
        timestamp_column: Some("timestamp".into()),
        label_columns: vec!["ServiceName".into(), "Region".into(), "Host".into()],
        ..TransformSpec::default()
    };
    let mapping = Mapping::new(&transform_spec.validate().unwrap(), "adx");
    let out = transform(&table, &mapping).unwrap();
    assert_eq!(out.stats.samples, ROWS as u64);
    assert_eq!(out.request.timeseries.len(), 10_000);

    let mut group = c.benchmark_group("transform");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("1M_rows_10k_series", |b| {
        b.iter(|| transform(black_box(&table), black_box(&mapping)).unwrap())
    });
    // One window of the push bench: every row a series of its own.
    let window = workload(10_000);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("10k_rows_10k_series", |b| {
        b.iter(|| transform(black_box(&window), black_box(&mapping)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
