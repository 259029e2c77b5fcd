//! Command-line flags (docs/design.md#cli), read once at start-up and validated into typed configs.
//!
//! - Subcommands: `run` (the default when none is given), `preview`, `check`, `crd`, `wal`.
//! - Every flag is also an `ADXEXPORTER_<FLAG>` environment variable; the `///` on a field is its
//!   `--help`, and defaults live on the field.
//! - List flags (`--cluster-labels`, `--kusto-endpoint`, `--add-resource-attributes`) are
//!   repeatable and comma-separated, as adx-mon's are (so a value cannot contain a comma); empty
//!   items are ignored, so an empty environment variable means "none".
//! - `K=V` and `DB=URL` split on the *first* `=`, so a URL with `=` in its query survives (adx-mon
//!   truncated it). Keys and values are trimmed; an empty key, a missing `=` or a duplicate key is
//!   an error naming the flag and the item.
//! - Cluster labels become KQL `let` statements, so two keys that map to the same KQL variable,
//!   keys that would redefine `_startTime`/`_endTime`, and control characters are rejected here.
//! - `--health-probe-port`/`--metrics-port` accept `8081`, adx-mon's `:8081`, or `HOST:PORT`.
//!
//! Layout: this file holds the command tree and [`CliError`]; `run.rs` validates `run`'s flags into
//! [`RunConfig`], `preview.rs` those of `preview` and `check`, `wal.rs` holds the `wal` subcommands'
//! flags, `parse.rs` the value parsers they share, and `secure.rs` the output credential and TLS
//! flags.
use std::net::SocketAddr;

use clap::{Parser, Subcommand};

mod parse;
mod preview;
mod run;
mod secure;
#[cfg(test)]
mod tests;
mod wal;

pub(crate) use preview::{CheckArgs, PreviewArgs, PreviewConfig, ResponseSource};
pub use run::RunArgs;
pub(crate) use run::{InstanceArgs, KustoArgs, KustoSettings, OutputSettings, RunConfig};
pub(crate) use secure::{ClientCertArgs, OtlpAuthArgs, RemoteWriteAuthArgs, TlsArgs};
pub(crate) use wal::{WalArgs, WalCommand, WalDeadLettersArgs, WalPurgeArgs, WalSelect, WalStore};

use crate::shard::ShardError;
use crate::time::Ticks;

/// `--wal-dir` and `--wal-max-bytes` defaults, the same for `run` and the `wal` tools.
pub(crate) const DEFAULT_WAL_DIR: &str = "/var/lib/adxexporter";
pub(crate) const DEFAULT_WAL_MAX_BYTES: &str = "1GiB";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("{flag}: {item:?} is not {form}")]
    NotAPair {
        flag: &'static str,
        item: String,
        form: &'static str,
    },
    #[error("{flag}: {item:?} has an empty key")]
    EmptyKey { flag: &'static str, item: String },
    #[error("{flag}: {item:?} contains a control character")]
    ControlCharacter { flag: &'static str, item: String },
    #[error("{flag}: {key:?} is given twice (keys are case-insensitive): keep one")]
    DuplicateKey { flag: &'static str, key: String },
    #[error("{flag}: {item:?}: {reason}")]
    BadUrl {
        flag: &'static str,
        item: String,
        reason: String,
    },
    #[error("--cluster-labels: {a:?} and {b:?} both become KQL variable {ident}: rename one")]
    LabelVariableClash { a: String, b: String, ident: String },
    #[error("--cluster-labels: {key:?} would redefine {ident}, which holds the window: rename it")]
    LabelRedefinesWindow { key: String, ident: String },
    #[error(
        "no output configured: set at least one of --otlp-endpoint URL (ADXEXPORTER_OTLP_ENDPOINT), --remote-write-endpoint URL (ADXEXPORTER_REMOTE_WRITE_ENDPOINT), --otlp-grpc-endpoint URL (ADXEXPORTER_OTLP_GRPC_ENDPOINT), --scrape-port PORT (ADXEXPORTER_SCRAPE_PORT)"
    )]
    NoOutput,
    #[error(
        "--manifests {}: not a directory (create it, fix the path, or leave --manifests out to watch Kubernetes)",
        .0.display()
    )]
    NoManifestsDir(std::path::PathBuf),
    #[error("--scrape-path {0:?} must start with / and contain no spaces, ? or #: e.g. /metrics")]
    BadScrapePath(String),
    #[error(
        "--scrape-port {scrape} clashes with {flag} {other}: the scrape page needs its own port"
    )]
    ScrapePortClash {
        scrape: SocketAddr,
        flag: &'static str,
        other: SocketAddr,
    },
    #[error("--start {start} must be before --end {end}")]
    EmptyWindow { start: Ticks, end: Ticks },
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{flag}: {reason}")]
    Invalid { flag: String, reason: String },
    #[error(
        "--replicas {0} shares resources between Kubernetes replicas; with --manifests every instance runs the whole directory: drop one of them"
    )]
    ReplicasWithManifests(u32),
}

/// adxexporter: exports Kusto query results as metrics to Prometheus remote write, OTLP/HTTP,
/// OTLP/gRPC and a Prometheus scrape page, any of them at once.
/// `run` is the default: `adxexporter --otlp-endpoint URL ...` is `adxexporter run --otlp-endpoint URL ...`.
#[derive(Debug, Parser)]
#[command(name = "adxexporter", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Names that select a subcommand (or top-level help) rather than `run`'s flags.
const TOP_LEVEL: [&str; 10] = [
    "run",
    "preview",
    "check",
    "crd",
    "wal",
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
];

/// Parses `args` (program name first); without a subcommand, `run` is meant. Only the chosen
/// subcommand's flags and `ADXEXPORTER_*` variables are read, so a `run` variable can never break
/// `check` or `crd`.
pub fn parse_from<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let first = args.get(1).and_then(|a| a.to_str());
    if !first.is_some_and(|f| TOP_LEVEL.contains(&f)) {
        args.insert(args.len().min(1), "run".into());
    }
    Cli::try_parse_from(args).map(|cli| cli.command)
}

/// [`parse_from`] on the process's arguments; prints help or the error and exits on failure.
pub fn parse() -> Command {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

// Parsed once at start-up, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter (the default): query every due window, store it, push it.
    Run(RunArgs),
    /// Run one window of one resource against Kusto (or transform a saved response: --response)
    /// and print the samples; push nothing.
    Preview(PreviewArgs),
    /// Validate MetricsExporter files offline; with --kusto-endpoint DB=URL, also run each valid
    /// resource's query against Kusto for its newest complete window with `| take 0` appended (no
    /// row comes back) and check the result's columns and types against the transform.
    Check(CheckArgs),
    /// Print the MetricsExporter CustomResourceDefinition as YAML.
    Crd,
    /// Inspect and repair the WAL of a stopped adxexporter (stats, list, dead-letters, requeue, purge).
    Wal(WalArgs),
}
