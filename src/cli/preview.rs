//! `preview`'s and `check`'s flags: one window of one resource against Kusto or a saved response
//! (validated into [`PreviewConfig`]), and validation of resource files with optional cluster
//! labels, offline or, with `--kusto-endpoint`, also against Kusto ([`CheckArgs::kusto`]).
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::parse::{parse_cluster_labels, parse_ticks};
use super::{CliError, InstanceArgs, KustoArgs, KustoSettings, TlsArgs};
use crate::time::Ticks;

#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// The MetricsExporter file (YAML or JSON).
    #[arg(short = 'f', long, env = "ADXEXPORTER_FILE", value_name = "FILE")]
    pub file: PathBuf,
    /// Which resource of the file, when it holds several.
    #[arg(long, env = "ADXEXPORTER_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub kusto: KustoArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Window start (RFC 3339); with --end. Default: the newest complete window.
    #[arg(long, env = "ADXEXPORTER_START", requires = "end", value_parser = parse_ticks)]
    pub start: Option<Ticks>,
    /// Window end, exclusive (RFC 3339); with --start.
    #[arg(long, env = "ADXEXPORTER_END", requires = "start", value_parser = parse_ticks)]
    pub end: Option<Ticks>,
    /// What "now" is (tests).
    #[arg(long, env = "ADXEXPORTER_NOW", hide = true, value_parser = parse_ticks)]
    pub now: Option<Ticks>,
    /// Also write the raw Kusto response body (decompressed, exactly as received) to FILE, for a
    /// later `preview --response FILE`.
    #[arg(long, env = "ADXEXPORTER_SAVE_RESPONSE", value_name = "FILE")]
    pub save_response: Option<PathBuf>,
    /// Transform this saved Kusto v2 response body instead of querying Kusto (no --kusto-endpoint
    /// needed): e.g. one written by --save-response, to test a transform in CI with no Kusto.
    #[arg(
        long,
        env = "ADXEXPORTER_RESPONSE",
        value_name = "FILE",
        conflicts_with = "save_response"
    )]
    pub response: Option<PathBuf>,
}

/// `preview`'s flags, validated. Whether `window` is aligned to the resource's interval is for
/// the caller to check (it knows the interval): accept, but warn.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewConfig {
    pub file: PathBuf,
    pub name: Option<String>,
    /// The same Kusto settings `run` would use (no client certificate: Kusto never asks for one).
    pub kusto: KustoSettings,
    pub cluster_labels: BTreeMap<String, String>,
    pub metric_name_prefix: String,
    /// `[start, end)` from `--start`/`--end`.
    pub window: Option<(Ticks, Ticks)>,
    pub now: Option<Ticks>,
    /// Where the response comes from, and where it is kept.
    pub response: ResponseSource,
}

/// Where `preview` gets the Kusto response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseSource {
    /// Query Kusto; with a path, also write the body there (`--save-response`).
    Kusto { save: Option<PathBuf> },
    /// A saved body (`--response`).
    File(PathBuf),
}

impl PreviewArgs {
    pub fn validate(self) -> Result<PreviewConfig, CliError> {
        let window = match (self.start, self.end) {
            (Some(start), Some(end)) if start >= end => {
                return Err(CliError::EmptyWindow { start, end });
            }
            (Some(start), Some(end)) => Some((start, end)),
            _ => None,
        };
        Ok(PreviewConfig {
            file: self.file,
            name: self.name,
            kusto: self.kusto.settings(self.tls.config(None))?,
            cluster_labels: parse_cluster_labels(&self.instance.cluster_labels)?,
            metric_name_prefix: self.instance.metric_name_prefix.trim().to_owned(),
            window,
            now: self.now,
            response: match self.response {
                Some(file) => ResponseSource::File(file),
                None => ResponseSource::Kusto {
                    save: self.save_response,
                },
            },
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Cluster labels, K=V[,K=V...]: also report whether each resource would run on such an instance (online: defined as _KEY in each query, as `run` does).
    #[arg(
        long,
        env = "ADXEXPORTER_CLUSTER_LABELS",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub cluster_labels: Vec<String>,
    // With at least one --kusto-endpoint, `check` also runs each valid resource's query against
    // Kusto (see the subcommand's help in mod.rs).
    #[command(flatten, next_help_heading = "Online check")]
    pub kusto: KustoArgs,
    #[command(flatten, next_help_heading = "Online check")]
    pub tls: TlsArgs,
    /// MetricsExporter files (YAML, several documents separated by ---, or JSON), or directories
    /// (every *.yaml, *.yml, *.json file directly in it, as `run --manifests` reads them).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
}

impl CheckArgs {
    /// How to reach Kusto for the online check; `None` (offline) without any --kusto-endpoint,
    /// and then no other Kusto flag is read, so the offline check is what it always was.
    pub fn online(&self) -> Result<Option<KustoSettings>, CliError> {
        if self
            .kusto
            .kusto_endpoints
            .iter()
            .all(|s| s.trim().is_empty())
        {
            return Ok(None);
        }
        self.kusto.settings(self.tls.config(None)).map(Some)
    }

    /// The cluster labels, if any were given.
    pub fn labels(&self) -> Result<Option<BTreeMap<String, String>>, CliError> {
        if self.cluster_labels.iter().all(|s| s.trim().is_empty()) {
            return Ok(None);
        }
        parse_cluster_labels(&self.cluster_labels).map(Some)
    }
}
