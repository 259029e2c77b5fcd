//! The Rust side of `benches/peers/run`: each subcommand times one of our hot paths on a file the
//! Python peer reads too, so both sides work on the same bytes in the same run.
//!
//! - `gen-body ROWS OUT`: writes the perf-anchors §1 Kusto v2 body (the `kusto_decode` bench's).
//! - `decode BODY RUNS`: `decode_v2_reader` of the body streamed from its file 64 KiB at a time, as
//!   the client decodes it off the wire (never holding it whole), RUNS times.
//! - `otlp BODY RUNS`: decode + transform once (untimed), then the OTLP encoder over the window:
//!   protobuf only, and protobuf + gzip at level 1 (our default) and 9 (the Python exporter's).
//! - `rw-bodies TEMPLATE OUTDIR START_MS INTERVAL_MS WINDOWS EXPORTER`: the remote-write request
//!   bodies our exporter sends for WINDOWS windows of a Kusto stand-in template (`@@TS@@` = window
//!   start, `@@EXP@@` = EXPORTER, as `kusto_standin.py` fills them), so vmagent can be fed exactly
//!   the samples we deliver.
//!
//! Every timing line is one JSON object on stdout; the run script collects them. Timings use the
//! median of RUNS in-process repeats (the machine is shared; the script repeats whole processes too).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use adxexporter::crd::TransformSpec;
use adxexporter::prompb::RemoteWriteEncoder;
use adxexporter::prompb::WriteRequest;
use adxexporter::query::{QueryLimits, decode_v2, decode_v2_reader};
use adxexporter::sink::DEFAULT_MAX_REQUEST_BYTES;
use adxexporter::sink::otlp::{OtlpEncoder, OtlpTemplate};
use adxexporter::sink::remote_write::split_window;
use adxexporter::time::Ticks;
use adxexporter::transform::{Mapping, transform};
use anyhow::{Context, bail};

#[path = "../benches/workload/mod.rs"]
mod workload;

const USAGE: &str = "usage: peerbench gen-body ROWS OUT | decode BODY RUNS | otlp BODY RUNS | \
                     rw-bodies TEMPLATE OUTDIR START_MS INTERVAL_MS WINDOWS EXPORTER";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["gen-body", rows, out] => {
            let body = workload::workload_body(rows.parse().context("ROWS")?);
            std::fs::write(out, body).with_context(|| format!("write {out}"))
        }
        ["decode", body, runs] => decode(Path::new(body), runs.parse().context("RUNS")?),
        ["otlp", body, runs] => otlp(Path::new(body), runs.parse().context("RUNS")?),
        [
            "rw-bodies",
            template,
            out,
            start,
            interval,
            windows,
            exporter,
        ] => rw_bodies(
            Path::new(template),
            Path::new(out),
            start.parse().context("START_MS")?,
            interval.parse().context("INTERVAL_MS")?,
            windows.parse().context("WINDOWS")?,
            exporter,
        ),
        _ => bail!("{USAGE}"),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "read {} (run `benches/peers/run` to generate it)",
            path.display()
        )
    })
}

fn limits(body: &[u8]) -> QueryLimits {
    QueryLimits {
        max_rows: usize::MAX,
        max_bytes: body.len(),
    }
}

fn median(mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn decode(path: &Path, runs: usize) -> anyhow::Result<()> {
    let open = || {
        std::fs::File::open(path).with_context(|| {
            format!(
                "open {} (run `benches/peers/run` to generate it)",
                path.display()
            )
        })
    };
    let bytes = open()?.metadata()?.len() as usize;
    let limits = QueryLimits {
        max_rows: usize::MAX,
        max_bytes: bytes,
    };
    let rows = decode_v2_reader(open()?, &limits)?
        .primary()
        .map_or(0, |t| t.row_count());
    let mut secs = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..runs {
        let file = open()?;
        let t = Instant::now();
        let set = black_box(decode_v2_reader(file, &limits)?);
        secs.push(t.elapsed().as_secs_f64());
        drop(set);
    }
    println!(
        "{}",
        serde_json::json!({"bench": "decode", "impl": "adxexporter decode_v2_reader", "rows": rows,
            "bytes": bytes, "median_s": median(secs.clone()), "runs_s": secs,
            "cpu_s_all_runs": cpu_seconds() - cpu0})
    );
    Ok(())
}

/// Labels of the perf-anchors body (`otlp`).
const ANCHOR_LABELS: &[&str] = &["ServiceName", "Region", "Host"];
/// Labels of the stand-in template, as the push bench's manifest maps them (`rw-bodies`).
const STANDIN_LABELS: &[&str] = &["ServiceName", "Region", "Host", "Exporter"];

/// The mapping the peer benches use: the perf-anchors columns, one sample per row.
fn mapping(labels: &[&str]) -> anyhow::Result<Mapping> {
    let transform = TransformSpec {
        metric_name_column: Some("metric_name".into()),
        value_columns: vec!["metric_value".into()],
        timestamp_column: Some("timestamp".into()),
        label_columns: labels.iter().map(|l| l.to_string()).collect(),
        ..TransformSpec::default()
    }
    .validate()
    .map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid transform: {}", lines.join("; "))
    })?;
    Ok(Mapping::new(&transform, ""))
}

fn window_of(body: &[u8], labels: &[&str]) -> anyhow::Result<WriteRequest> {
    let set = decode_v2(body, &limits(body))?;
    let table = set.primary().context("the body has no primary result")?;
    Ok(transform(table, &mapping(labels)?)?.request)
}

fn otlp(path: &Path, runs: usize) -> anyhow::Result<()> {
    let window = window_of(&read(path)?, ANCHOR_LABELS)?;
    let points = window.sample_count();
    let resource = BTreeMap::from([("cluster".to_owned(), "anchor".to_owned())]);
    for level in [None, Some(1), Some(9)] {
        let template = OtlpTemplate::new(&resource, level.unwrap_or(1))?;
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let plan = template.plan(&window, DEFAULT_MAX_REQUEST_BYTES);
            let mut enc = OtlpEncoder::new(&template);
            bytes = 0;
            for c in &plan.chunks {
                let order = &plan.order[c.range.clone()];
                bytes += match level {
                    None => enc.encode_raw(&window, order).len(),
                    Some(_) => enc.encode(&window, order)?.len(),
                };
            }
            secs.push(t.elapsed().as_secs_f64());
        }
        let stage = match level {
            None => "protobuf".to_owned(),
            Some(l) => format!("protobuf+gzip{l}"),
        };
        println!(
            "{}",
            serde_json::json!({"bench": "otlp", "impl": "adxexporter OtlpEncoder", "stage": stage,
                "points": points, "bytes": bytes, "median_s": median(secs.clone()), "runs_s": secs})
        );
    }
    Ok(())
}

fn rw_bodies(
    template: &Path,
    out: &Path,
    start_ms: i64,
    interval_ms: i64,
    windows: usize,
    exporter: &str,
) -> anyhow::Result<()> {
    let template = String::from_utf8(read(template)?)
        .context("the template is not UTF-8")?
        .replace("@@EXP@@", exporter);
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut enc = RemoteWriteEncoder::default();
    let (mut files, mut samples) = (0usize, 0usize);
    for w in 0..windows {
        let ms = start_ms + w as i64 * interval_ms;
        let ts = Ticks::from_unix_millis(ms).to_string();
        let window = window_of(template.replace("@@TS@@", &ts).as_bytes(), STANDIN_LABELS)?;
        samples += window.sample_count();
        for c in split_window(&window, DEFAULT_MAX_REQUEST_BYTES) {
            let body = enc.encode(&window.timeseries[c.range.clone()])?;
            let file = out.join(format!("{files:06}.bin"));
            std::fs::write(&file, &body).with_context(|| format!("write {}", file.display()))?;
            files += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({"requests": files, "samples": samples})
    );
    Ok(())
}
