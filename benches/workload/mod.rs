//! The benchmark workload shared by every bench, so their figures describe the same data: 10 metric
//! names × 1000 hosts in 10 regions (benches/README.md states the figures measured on it).
#![allow(dead_code)]

use std::fmt::Write as _;

use adxexporter::time::Ticks;

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

/// The perf-anchors §1 Kusto v2 body with `rows` primary rows (time step → host → metric order,
/// 7-digit fractions, one compact frame per line).
pub fn workload_body(rows: usize) -> Vec<u8> {
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
