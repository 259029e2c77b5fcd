//! Metric types against the gauge path (issue #16's figure): one window of the transform bench's
//! workload shape — 1M rows, 10,000 series — taken from its table to a durable WAL record, the way
//! the scheduler does it:
//! - gauge: `transform_encoded` (protobuf straight from the rows) + `Wal::append_encoded`;
//! - counter: `transform` (the window's increases) + `Wal::append_cumulative`, which reads and
//!   advances 10,000 running totals in the append's transaction and encodes the totals;
//! - histogram: 1M bucket rows (1,000 hosts × 10 bounds × 100 steps) → 12,000 series of
//!   `_bucket`/`_count`/`_sum` (1.2M output samples), then the same cumulative append.
//!
//! The WAL lives on tmpfs (`/dev/shm` when there is one), where an fsync costs nothing: the figures
//! are the CPU of transform + encode + snappy + the WAL transaction (for counters and histograms:
//! reading and advancing the running totals), not the disk's, which on this shared machine varies
//! by 10× between minutes and would hide the difference being measured. Throughput is in input
//! rows/s; the ratio the issue asks for (≥ 0.7× the gauge path's samples/s) is computed from these
//! medians in benches/README.md.

use std::cell::Cell;
use std::hint::black_box;

use adxexporter::crd::TransformSpec;
use adxexporter::query::{Column, ColumnType, Table, Value};
use adxexporter::time::{Span, TICKS_PER_SECOND, Ticks};
use adxexporter::transform::{Mapping, transform, transform_encoded};
use adxexporter::wal::{ExporterRef, RecordHeader, Wal, WalConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 1_000_000;
const BOUNDS: [f64; 10] = [
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    50.0,
    f64::INFINITY,
];

fn column(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
    }
}

/// 100 one-minute steps × 1,000 hosts × 10 (metric names, or bucket bounds).
fn workload(histogram: bool) -> Table {
    let mut table = Table::new(
        "PrimaryResult",
        vec![
            column("timestamp", ColumnType::DateTime),
            column("metric_name", ColumnType::String),
            column("le", ColumnType::Real),
            column("Host", ColumnType::String),
            column("n", ColumnType::Real),
            column("s", ColumnType::Real),
        ],
    );
    table.reserve_rows(ROWS);
    let mut rng = fastrand::Rng::with_seed(20261206);
    let start = Ticks::parse("2026-01-01T00:00:00Z").unwrap().0;
    for i in 0..ROWS {
        let (step, host, k) = (i / 10_000, i / 10 % 1000, i % 10);
        let n = f64::from(rng.u32(0..1000));
        table.push_row([
            Value::DateTime(Ticks(start + step as i64 * 60 * TICKS_PER_SECOND)),
            Value::String(format!("requests_{k}").into()),
            Value::Real(if histogram { BOUNDS[k] } else { 0.0 }),
            Value::String(format!("host-{host:04}").into()),
            Value::Real(n),
            Value::Real(n * 0.25),
        ]);
    }
    table
}

fn spec(kind: &str) -> TransformSpec {
    let histogram = kind == "histogram";
    TransformSpec {
        type_: Some(kind.into()),
        metric_name_column: (!histogram).then(|| "metric_name".into()),
        default_metric_name: Some("latency".into()),
        value_columns: vec!["n".into()],
        timestamp_column: Some("timestamp".into()),
        label_columns: vec!["Host".into()],
        bucket_column: histogram.then(|| "le".into()),
        sum_column: histogram.then(|| "s".into()),
        ..TransformSpec::default()
    }
}

/// A WAL and consecutive window headers for one exporter.
struct Target {
    _dir: tempfile::TempDir,
    wal: Wal,
    next: Cell<i64>,
}

impl Target {
    fn new() -> Target {
        let shm = std::path::Path::new("/dev/shm");
        let dir = match shm.is_dir() {
            true => tempfile::tempdir_in(shm),
            false => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
        }
        .unwrap();
        let wal = Wal::open(dir.path(), WalConfig::new(u64::MAX, ["remote_write"])).unwrap();
        Target {
            _dir: dir,
            wal,
            next: Cell::new(0),
        }
    }

    fn header(&self) -> RecordHeader {
        let n = self.next.get();
        self.next.set(n + 1);
        let hour = 3600 * TICKS_PER_SECOND;
        let start = Ticks::parse("2026-01-01T00:00:00Z").unwrap().0 + n * hour;
        RecordHeader {
            exporter: ExporterRef::new("uid-bench", "bench", "types"),
            generation: 1,
            window_start: Ticks(start),
            window_end: Ticks(start + hour),
            created: Ticks(start),
            outputs: vec![],
        }
    }
}

fn bench(c: &mut Criterion) {
    let gauge_table = workload(false);
    let histogram_table = workload(true);
    let mapping = |kind: &str| Mapping::new(&spec(kind).validate().unwrap(), "");
    let (gauge, counter, histogram) = (mapping("gauge"), mapping("counter"), mapping("histogram"));
    assert_eq!(
        transform(&gauge_table, &counter).unwrap().stats.samples,
        ROWS as u64
    );
    let h = transform(&histogram_table, &histogram).unwrap();
    assert_eq!(h.request.timeseries.len(), 12_000);
    assert_eq!(h.stats.samples, 1_200_000);
    let idle = Span(24 * 3600 * TICKS_PER_SECOND);

    let mut group = c.benchmark_group("types");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    let target = Target::new();
    group.bench_function("gauge_1M_rows_to_wal", |b| {
        b.iter(|| {
            let t = transform_encoded(black_box(&gauge_table), &gauge).unwrap();
            let header = target.header();
            (target.wal)
                .append_encoded(&header, &t.write_request, t.stats.samples)
                .unwrap()
        })
    });
    let target = Target::new();
    group.bench_function("counter_1M_rows_to_wal", |b| {
        b.iter(|| {
            let t = transform(black_box(&gauge_table), &counter).unwrap();
            let header = target.header();
            (target.wal)
                .append_cumulative(&header, t.request, idle, false)
                .unwrap()
        })
    });
    let target = Target::new();
    group.bench_function("histogram_1M_rows_to_wal", |b| {
        b.iter(|| {
            let t = transform(black_box(&histogram_table), &histogram).unwrap();
            let header = target.header();
            (target.wal)
                .append_cumulative(&header, t.request, idle, false)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
