//! `adxexporter preview`: run exactly one window of one resource against Kusto and print the samples
//! that would be exported, in Prometheus text exposition format with millisecond timestamps, sorted by
//! name, labels and time. Nothing is written or pushed. A summary goes to stderr. It runs the same
//! code as `run` (query text, Kusto client, transform), so what it prints is what `run` sends.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use crate::cli::PreviewArgs;
use crate::crd::load_documents;
use crate::criteria::{self, CriteriaMatch};
use crate::exposition;
use crate::query::{KustoClient, QueryLimits};
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
    if config.kusto.config.tls.insecure_skip_verify {
        eprintln!(
            "warning: --tls-insecure-skip-verify: the Kusto server certificate is NOT verified"
        );
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
    let (_, url) = config
        .kusto
        .endpoints
        .iter()
        .find(|(db, _)| *db == spec.database)
        .ok_or_else(|| {
            anyhow!(
                "no --kusto-endpoint for database {:?}: add --kusto-endpoint {}=https://<cluster>.kusto.windows.net",
                spec.database,
                spec.database
            )
        })?;
    let client = KustoClient::new(
        url.clone(),
        config.kusto.auth.for_endpoint(url),
        config.kusto.config.clone(),
    )?;
    let csl = query_text(&window, &config.cluster_labels, &spec.body);
    let limits = QueryLimits {
        max_rows: usize::try_from(spec.max_rows).unwrap_or(usize::MAX),
        ..QueryLimits::default()
    };
    let data = client
        .query(&spec.database, &csl, &limits)
        .await
        .with_context(|| format!("{key}: query for window [{}, {})", window.start, window.end))?;
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
    eprintln!(
        "{key}: window [{}, {}): {} rows read, {} samples, {} skipped{}",
        window.start,
        window.end,
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
