//! The benchmark workload of `../shared/notes/perf-anchors.md` §1, shared by every bench so their
//! figures describe the same data: 10 metric names × 1000 hosts in 10 regions.
#![allow(dead_code)]

/// Metric names: five `*_total` counters, then five gauges.
pub const METRICS: [&str; 10] = [
    "http_requests_total",
    "http_errors_total",
    "bytes_sent_total",
    "bytes_received_total",
    "gc_runs_total",
    "cpu_usage_percent",
    "memory_usage_bytes",
    "request_latency_ms",
    "queue_depth",
    "disk_used_ratio",
];

/// Azure regions; host `h` is in region `h / 100`.
pub const REGIONS: [&str; 10] = [
    "eastus",
    "eastus2",
    "westus",
    "westus2",
    "centralus",
    "northeurope",
    "westeurope",
    "uksouth",
    "southeastasia",
    "japaneast",
];
