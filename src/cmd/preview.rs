//! `adxexporter preview`: run exactly one window of one resource against Kusto and print the samples
//! that would be exported, in Prometheus text exposition format with millisecond timestamps, sorted by
//! name, labels and time. Nothing is pushed. A summary goes to stderr. It runs the same code as `run`
//! (query text, Kusto client, decoder, transform), so what it prints is what `run` sends.
//!
//! `--save-response FILE` also keeps the raw response body; `--response FILE` transforms such a
//! body instead of querying, so a transform can be tested with no Kusto (the window is then only
//! named in the summary: a raw Kusto response does not record it).

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use crate::cli::{PreviewArgs, PreviewConfig, ResponseSource};
use crate::crd::{ValidatedSpec, load_documents};
use crate::criteria::{self, CriteriaMatch};
use crate::exposition;
use crate::query::{QueryLimits, decode_v2, no_endpoint_message};
use crate::schedule::window::{Window, align_down, newest_complete, query_text};
use crate::time::Ticks;
use crate::transform::{Mapping, transform};

pub async fn run(args: PreviewArgs) -> anyhow::Result<ExitCode> {
    let config = args.validate()?;
    let path = config.file.display().to_string();
    let text =
        std::fs::read_to_string(&config.file).with_context(|| format!("cannot read {path}"))?;
    let docs = load_documents(&text).map_err(|e| anyhow!("{path}: {e}"))?;
    let mut resources = Vec::new();
    for doc in docs {
        resources.push(doc.map_err(|e| anyhow!("{path}: {e}"))?.resource);
    }
    let resource = match (&config.name, resources.len()) {
        (_, 0) => bail!("{path} holds no MetricsExporter"),
        (None, 1) => resources.remove(0),
        (None, n) => bail!("{path} holds {n} resources: choose one with --name"),
        (Some(name), _) => resources
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| anyhow!("{path} has no MetricsExporter named {name:?}"))?,
    };
    let key = resource.key();
    let spec = resource.spec.validate().map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{path}: {key}: {p}"))
            .collect();
        anyhow!("invalid resource:\n{}", lines.join("\n"))
    })?;
    if matches!(config.response, ResponseSource::Kusto { .. }) {
        super::warn_if_unverified(&config.kusto);
    }
    if let CriteriaMatch::NoMatch { reason } =
        criteria::evaluate(&spec.criteria, &config.cluster_labels)
    {
        eprintln!(
            "note: `run` would skip {key} on an instance with these cluster labels: {reason}"
        );
    }
    let mapping = Mapping::new(&spec.transform, &config.metric_name_prefix);
    let window = match config.window {
        Some((start, end)) => {
            let w = Window { start, end };
            if align_down(start, spec.interval) != start || w.len() != spec.interval {
                eprintln!(
                    "note: [{start}, {end}) is not one aligned {} window; `run` would never query it",
                    spec.interval
                );
            }
            w
        }
        None => newest_complete(
            config.now.unwrap_or_else(Ticks::now),
            spec.interval,
            spec.ingestion_delay,
        ),
    };
    let limits = super::resource_limits(&spec);
    let window_text = format!("window [{}, {})", window.start, window.end);
    let body = match &config.response {
        ResponseSource::Kusto { save } => {
            let body = (query_kusto(&config, &spec, &window, &limits).await)
                .with_context(|| format!("{key}: query for {window_text}"))?;
            if let Some(save) = save {
                save_response(save, &body)?;
            }
            body
        }
        ResponseSource::File(file) => read_response(file, &limits)?,
    };
    // Live or saved, the body goes through the one decoder (`decode_v2`, with the same limits),
    // so `--response` prints what the live query printed.
    let data = decode_v2(&body, &limits).with_context(|| match &config.response {
        ResponseSource::Kusto { .. } => format!("{key}: query for {window_text}"),
        ResponseSource::File(file) => format!(
            "--response {}: not a usable Kusto v2 query response (save one with `preview --save-response FILE`)",
            file.display()
        ),
    })?;
    drop(body); // decoded: free it before the transform allocates
    let table = data
        .into_primary()
        .ok_or_else(|| anyhow!("{key}: the query returned no result table"))?;
    let out = transform(&table, &mapping).with_context(|| format!("{key}: transform"))?;
    print!("{}", exposition::to_text(&out.request));
    let skipped: Vec<String> = out
        .stats
        .skipped
        .iter()
        .map(|(reason, n)| format!("{}={n}", reason.as_str()))
        .collect();
    let source = match (&config.response, config.window) {
        (ResponseSource::Kusto { .. }, _) => window_text,
        (ResponseSource::File(file), Some(_)) => format!(
            "{window_text} (given by --start/--end), response read from {}",
            file.display()
        ),
        (ResponseSource::File(file), None) => format!(
            "{window_text} (assumed: the newest complete window; a saved response does not record its window, give --start/--end), response read from {}",
            file.display()
        ),
    };
    eprintln!(
        "{key}: {source}: {} rows read, {} samples, {} skipped{}",
        out.stats.rows,
        out.stats.samples,
        out.stats.skipped_total(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join(", "))
        }
    );
    if mapping.is_cumulative() {
        eprintln!(
            "{key}: values are this window's own increases: `run` exports running totals, advanced once per window (preview holds no state)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The raw body of the resource's query for `window`, from the endpoint its database is given.
async fn query_kusto(
    config: &PreviewConfig,
    spec: &ValidatedSpec,
    window: &Window,
    limits: &QueryLimits,
) -> anyhow::Result<Vec<u8>> {
    let url = (config.kusto.endpoint(&spec.database))
        .ok_or_else(|| anyhow!(no_endpoint_message(&spec.database)))?;
    let client = config.kusto.client(url)?;
    let csl = query_text(window, &config.cluster_labels, &spec.body);
    Ok(client.query_body(&spec.database, &csl, limits).await?)
}

fn save_response(file: &Path, body: &[u8]) -> anyhow::Result<()> {
    std::fs::write(file, body).with_context(|| {
        format!(
            "--save-response {}: cannot write the response",
            file.display()
        )
    })?;
    eprintln!(
        "saved the Kusto response ({} bytes) to {}",
        body.len(),
        file.display()
    );
    Ok(())
}

/// The saved body, read no further than one byte past `limits.max_bytes` (the decoder refuses a
/// body over the limit, as the client refuses one on the wire).
fn read_response(file: &Path, limits: &QueryLimits) -> anyhow::Result<Vec<u8>> {
    let cannot = || {
        format!(
            "--response {}: cannot read the saved response",
            file.display()
        )
    };
    let mut body = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(limits.max_bytes as u64 + 1).read_to_end(&mut body))
        .with_context(cannot)?;
    Ok(body)
}
