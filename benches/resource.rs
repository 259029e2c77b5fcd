//! Per-window and per-resource costs of the resource layer: query text, catch-up iteration,
//! criteria, validation and loading a resource file.
use std::collections::BTreeMap;
use std::hint::black_box;

use adxexporter::crd::load_documents;
use adxexporter::criteria::evaluate;
use adxexporter::schedule::window::{Window, due_windows, query_text};
use adxexporter::time::{Span, Ticks};
use criterion::{Criterion, criterion_group, criterion_main};

const RESOURCE: &str = include_str!("../tests/resources/good-adx-mon.yaml");

fn bench(c: &mut Criterion) {
    let labels: BTreeMap<String, String> = [
        ("region", "eastus"),
        ("environment", "production"),
        ("data-classification", "a\"b"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let window = Window {
        start: Ticks::parse("2026-01-01T00:00:00Z").unwrap(),
        end: Ticks::parse("2026-01-01T00:05:00Z").unwrap(),
    };
    let body = "ServiceTelemetry\n| where Timestamp between (_startTime .. _endTime)\n| summarize count() by bin(Timestamp, 5m)";
    c.bench_function("query_text (3 labels)", |b| {
        b.iter(|| query_text(black_box(&window), black_box(&labels), black_box(body)))
    });
    let now = Ticks(window.start.0 + 10_000 * 300 * 10_000_000);
    c.bench_function("due_windows (10000 windows of 5m)", |b| {
        b.iter(|| {
            due_windows(
                black_box(window.start),
                Span::from_secs(300),
                now,
                Span::ZERO,
            )
            .count()
        })
    });
    let criteria: BTreeMap<String, Vec<String>> = [
        (
            "region".to_string(),
            vec!["westus".to_string(), "EastUS".to_string()],
        ),
        ("environment".to_string(), vec!["production".to_string()]),
    ]
    .into();
    c.bench_function("criteria evaluate (2 keys)", |b| {
        b.iter(|| evaluate(black_box(&criteria), black_box(&labels)))
    });
    let loaded = load_documents(RESOURCE).unwrap().remove(0).unwrap();
    c.bench_function("spec validate", |b| {
        b.iter(|| black_box(&loaded.resource.spec).validate())
    });
    c.bench_function("load_documents (one resource)", |b| {
        b.iter(|| load_documents(black_box(RESOURCE)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
