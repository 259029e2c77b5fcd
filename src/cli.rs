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
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use url::Url;

mod secure;
pub use secure::{AuthKind, ClientCertArgs, OtlpAuthArgs, RemoteWriteAuthArgs, TlsArgs};

use crate::schedule::window::{WINDOW_VARIABLES, kql_identifier};
use crate::shard::{Shard, ShardError};
use crate::sink::auth::OutputAuthConfig;
use crate::telemetry::LogFormat;
use crate::time::{Span, Ticks};
use crate::tls::TlsConfig;

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

/// adxexporter: exports Kusto query results as metrics to OTLP and Prometheus remote write.
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
    /// Run one window of one resource against Kusto and print the samples; push nothing.
    Preview(PreviewArgs),
    /// Validate MetricsExporter files offline.
    Check(CheckArgs),
    /// Print the MetricsExporter CustomResourceDefinition as YAML.
    Crd,
    /// Inspect and repair the WAL of a stopped adxexporter (stats, list, dead-letters, requeue, purge).
    Wal(WalArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WalArgs {
    #[command(subcommand)]
    pub command: WalCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WalCommand {
    /// Backlog: records, bytes, per exporter and per output.
    Stats(WalStore),
    /// One line per record still in the WAL, with each output's delivery state.
    List(WalSelect),
    /// Deliveries an output refused for good: reason and response body.
    DeadLetters(WalDeadLettersArgs),
    /// Make matching dead letters pending again (the service retries them when next started).
    Requeue(WalSelect),
    /// Drop dead letters and/or pending deliveries (that data is not delivered); needs --yes.
    Purge(WalPurgeArgs),
}

/// Where the WAL is and how to print; shared by every `wal` subcommand.
#[derive(Debug, Clone, Args)]
pub struct WalStore {
    /// Directory of the write-ahead log, as given to `run`.
    #[arg(
        long,
        env = "ADXEXPORTER_WAL_DIR",
        default_value = "/var/lib/adxexporter"
    )]
    pub wal_dir: PathBuf,
    /// `run`'s --wal-max-bytes, shown by `stats` as the limit.
    #[arg(long, env = "ADXEXPORTER_WAL_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub wal_max_bytes: u64,
    /// Print one JSON document (fields in docs/wal.md) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The store plus which (output, record) entries to act on; no filter = all.
#[derive(Debug, Clone, Args)]
pub struct WalSelect {
    #[command(flatten)]
    pub store: WalStore,
    /// Only this output (e.g. remote_write, otlp).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// Only this MetricsExporter, NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_exporter_name)]
    pub exporter: Option<(String, String)>,
    /// Only this exporter uid.
    #[arg(long, value_name = "UID")]
    pub uid: Option<String>,
    /// Only the window starting at this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_ticks)]
    pub window_start: Option<Ticks>,
}

#[derive(Debug, Clone, Args)]
pub struct WalDeadLettersArgs {
    #[command(flatten)]
    pub select: WalSelect,
    /// Print reasons and response bodies in full instead of one truncated line each.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true)))]
pub struct WalPurgeArgs {
    #[command(flatten)]
    pub select: WalSelect,
    /// Drop dead letters.
    #[arg(long, group = "scope")]
    pub dead_letters: bool,
    /// Drop deliveries still pending: that data is never delivered to that output.
    #[arg(long, group = "scope")]
    pub pending: bool,
    /// Drop both dead letters and pending deliveries.
    #[arg(long, group = "scope")]
    pub all: bool,
    /// Really purge; without it, print what would be purged and change nothing.
    #[arg(long)]
    pub yes: bool,
}

/// `NAMESPACE/NAME` of a MetricsExporter.
fn parse_exporter_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// How to reach Kusto and who this instance is: shared by `run` and `preview`, so `preview` queries
/// exactly as `run` would.
#[derive(Debug, Clone, Args)]
pub struct KustoArgs {
    /// This instance's labels, KEY=VALUE[,KEY=VALUE...] (repeatable): matched by spec.criteria, defined as _KEY in every query, sent as resource attributes.
    #[arg(
        long,
        env = "ADXEXPORTER_CLUSTER_LABELS",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub cluster_labels: Vec<String>,
    /// Kusto endpoint per database, DB=URL[,DB=URL...] (repeatable).
    #[arg(
        long = "kusto-endpoint",
        alias = "kusto-endpoints",
        env = "ADXEXPORTER_KUSTO_ENDPOINT",
        value_name = "DB=URL",
        value_delimiter = ','
    )]
    pub kusto_endpoints: Vec<String>,
    /// How to get Kusto tokens: auto (workload identity, managed identity, client secret, Azure CLI; no token for http:// endpoints), none, or token-file:PATH.
    #[arg(long, env = "ADXEXPORTER_KUSTO_AUTH", default_value = "auto")]
    pub kusto_auth: String,
    /// Kusto server-side query timeout.
    #[arg(long, env = "ADXEXPORTER_KUSTO_SERVER_TIMEOUT", default_value = "4m", value_parser = parse_positive_duration)]
    pub kusto_server_timeout: Span,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kusto: KustoArgs,
    /// OTLP/HTTP metrics endpoint, used as given (e.g. http://collector:4318/v1/metrics).
    #[arg(long, env = "ADXEXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<Url>,
    /// Prometheus remote-write endpoint (e.g. http://prometheus:9090/api/v1/write).
    #[arg(long, env = "ADXEXPORTER_REMOTE_WRITE_ENDPOINT", value_name = "URL")]
    pub remote_write_endpoint: Option<Url>,
    /// OTLP/gRPC receiver, http://HOST:PORT (plaintext) or https://HOST:PORT (TLS), e.g. https://collector:4317.
    #[arg(long, env = "ADXEXPORTER_OTLP_GRPC_ENDPOINT", value_name = "URL")]
    pub otlp_grpc_endpoint: Option<Url>,
    /// Port (or HOST:PORT) serving the scrape output: each exporter's newest window for Prometheus to scrape (off unless set).
    #[arg(long, env = "ADXEXPORTER_SCRAPE_PORT", value_name = "PORT", value_parser = parse_listen_addr)]
    pub scrape_port: Option<SocketAddr>,
    /// Path of the scrape page.
    #[arg(long, env = "ADXEXPORTER_SCRAPE_PATH", default_value = "/metrics")]
    pub scrape_path: String,
    /// Print each sample's own timestamp on the scrape page (default: none, Prometheus stamps scrape time).
    #[arg(long, env = "ADXEXPORTER_SCRAPE_TIMESTAMPS")]
    pub scrape_timestamps: bool,
    /// Extra OTLP resource attributes, K=V[,K=V...] (repeatable); they override cluster labels.
    #[arg(
        long,
        env = "ADXEXPORTER_ADD_RESOURCE_ATTRIBUTES",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub add_resource_attributes: Vec<String>,
    /// Prefix joined with _ before every metric name.
    #[arg(long, env = "ADXEXPORTER_METRIC_NAME_PREFIX", default_value = "")]
    pub metric_name_prefix: String,
    /// Directory of the write-ahead log (a persistent volume in Kubernetes).
    #[arg(
        long,
        env = "ADXEXPORTER_WAL_DIR",
        default_value = "/var/lib/adxexporter"
    )]
    pub wal_dir: PathBuf,
    /// Most bytes the WAL may hold (e.g. 1GiB, 512MiB, 1000000); when full, querying pauses.
    #[arg(long, env = "ADXEXPORTER_WAL_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub wal_max_bytes: u64,
    /// Free space to keep on the WAL's volume (e.g. 64MiB); below it querying pauses, as when the WAL is full.
    #[arg(long, env = "ADXEXPORTER_WAL_MIN_FREE_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub wal_min_free_bytes: u64,
    /// Port (or HOST:PORT) serving /metrics.
    #[arg(long, env = "ADXEXPORTER_METRICS_PORT", default_value = "8080", value_parser = parse_listen_addr)]
    pub metrics_port: SocketAddr,
    /// Port (or :PORT, HOST:PORT) serving /healthz and /readyz.
    #[arg(long, env = "ADXEXPORTER_HEALTH_PROBE_PORT", default_value = "8081", value_parser = parse_listen_addr)]
    pub health_probe_port: SocketAddr,
    /// Standalone mode: read MetricsExporter YAML files from this directory instead of Kubernetes.
    #[arg(long, env = "ADXEXPORTER_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ADXEXPORTER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Most Kusto queries in flight at once, across exporters.
    #[arg(long, env = "ADXEXPORTER_MAX_CONCURRENT_QUERIES", default_value = "4", value_parser = parse_positive)]
    pub max_concurrent_queries: usize,
    /// Largest uncompressed push request (e.g. 4MiB); bigger windows are split.
    #[arg(long, env = "ADXEXPORTER_MAX_REQUEST_BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub max_request_bytes: u64,
    /// How long to keep pushing after SIGTERM before exiting.
    #[arg(long, env = "ADXEXPORTER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_non_negative_duration)]
    pub shutdown_grace: Span,
    /// Log format.
    #[arg(
        long,
        env = "ADXEXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Kubernetes mode: replicas sharing the resources (the StatefulSet's replica count); each runs those rendezvous hashing of the uid gives its ordinal.
    #[arg(long, env = "ADXEXPORTER_REPLICAS", default_value = "1", value_parser = parse_replicas)]
    pub replicas: u32,
    /// This pod's name (default: $HOSTNAME); with --replicas > 1 its ordinal is the number after the last -, as in a StatefulSet (adxexporter-2).
    #[arg(long, env = "ADXEXPORTER_POD_NAME")]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub remote_write_auth: RemoteWriteAuthArgs,
    #[command(flatten)]
    pub otlp_auth: OtlpAuthArgs,
    #[command(flatten)]
    pub client_cert: ClientCertArgs,
}

/// `run`'s flags, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub cluster_labels: BTreeMap<String, String>,
    pub kusto_endpoints: Vec<(String, Url)>,
    pub kusto_auth: String,
    pub otlp_endpoint: Option<Url>,
    pub remote_write_endpoint: Option<Url>,
    pub otlp_grpc_endpoint: Option<Url>,
    /// Where the scrape page listens, when the scrape output is on.
    pub scrape_addr: Option<SocketAddr>,
    pub scrape: crate::sink::ScrapeConfig,
    /// Cluster labels overlaid by `--add-resource-attributes`.
    pub resource_attributes: BTreeMap<String, String>,
    pub metric_name_prefix: String,
    pub wal_dir: PathBuf,
    pub wal_max_bytes: u64,
    pub wal_min_free_bytes: u64,
    pub metrics_addr: SocketAddr,
    pub health_probe_addr: SocketAddr,
    pub manifests: Option<PathBuf>,
    pub namespace: Option<String>,
    pub max_concurrent_queries: usize,
    pub max_request_bytes: u64,
    pub shutdown_grace: Span,
    pub log_format: LogFormat,
    pub kusto_server_timeout: Span,
    /// This replica's ordinal among `--replicas` (Kubernetes mode).
    pub shard: Shard,
    pub remote_write_auth: OutputAuthConfig,
    pub otlp_auth: OutputAuthConfig,
    /// For Kusto, the outputs and token endpoints (the client certificate: outputs only).
    pub tls: TlsConfig,
}

impl RunArgs {
    pub fn validate(self) -> Result<RunConfig, CliError> {
        let cluster_labels = parse_cluster_labels(&self.kusto.cluster_labels)?;
        let kusto_endpoints = parse_kusto_endpoints(&self.kusto.kusto_endpoints)?;
        for (flag, url) in [
            ("--otlp-endpoint", &self.otlp_endpoint),
            ("--remote-write-endpoint", &self.remote_write_endpoint),
            ("--otlp-grpc-endpoint", &self.otlp_grpc_endpoint),
        ] {
            if let Some(url) = url {
                check_url(flag, url.as_str(), url)?;
            }
        }
        if self.otlp_endpoint.is_none()
            && self.remote_write_endpoint.is_none()
            && self.otlp_grpc_endpoint.is_none()
            && self.scrape_port.is_none()
        {
            return Err(CliError::NoOutput);
        }
        let scrape_path = self.scrape_path.trim().to_owned();
        if !scrape_path.starts_with('/')
            || scrape_path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(CliError::BadScrapePath(self.scrape_path));
        }
        if let Some(scrape) = self.scrape_port {
            for (flag, other) in [
                ("--metrics-port", self.metrics_port),
                ("--health-probe-port", self.health_probe_port),
            ] {
                if other.port() == scrape.port() {
                    return Err(CliError::ScrapePortClash {
                        scrape,
                        flag,
                        other,
                    });
                }
            }
        }
        let extra = parse_pairs("--add-resource-attributes", &self.add_resource_attributes)?;
        let mut resource_attributes = cluster_labels.clone();
        resource_attributes.extend(extra);
        let pod_name = (self.pod_name.clone()).or_else(|| std::env::var("HOSTNAME").ok());
        if self.manifests.is_some() && self.replicas > 1 {
            return Err(CliError::ReplicasWithManifests(self.replicas));
        }
        let shard = Shard::from_pod_name(pod_name.as_deref(), self.replicas)?;
        let remote_write_auth = self.remote_write_auth.config()?;
        let otlp_auth = self.otlp_auth.config()?;
        let tls = self.kusto.tls.config(Some(&self.client_cert));
        Ok(RunConfig {
            cluster_labels,
            kusto_endpoints,
            kusto_auth: self.kusto.kusto_auth,
            otlp_endpoint: self.otlp_endpoint,
            remote_write_endpoint: self.remote_write_endpoint,
            otlp_grpc_endpoint: self.otlp_grpc_endpoint,
            scrape_addr: self.scrape_port,
            scrape: crate::sink::ScrapeConfig {
                path: scrape_path,
                timestamps: self.scrape_timestamps,
            },
            resource_attributes,
            metric_name_prefix: self.metric_name_prefix.trim().to_owned(),
            wal_dir: self.wal_dir,
            wal_max_bytes: self.wal_max_bytes,
            wal_min_free_bytes: self.wal_min_free_bytes,
            metrics_addr: self.metrics_port,
            health_probe_addr: self.health_probe_port,
            manifests: self.manifests,
            namespace: self.namespace.filter(|n| !n.trim().is_empty()),
            max_concurrent_queries: self.max_concurrent_queries,
            max_request_bytes: self.max_request_bytes,
            shutdown_grace: self.shutdown_grace,
            log_format: self.log_format,
            kusto_server_timeout: self.kusto.kusto_server_timeout,
            shard,
            remote_write_auth,
            otlp_auth,
            tls,
        })
    }
}

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
    /// Prefix joined with _ before every metric name.
    #[arg(long, env = "ADXEXPORTER_METRIC_NAME_PREFIX", default_value = "")]
    pub metric_name_prefix: String,
    /// Window start (RFC 3339); with --end. Default: the newest complete window.
    #[arg(long, env = "ADXEXPORTER_START", requires = "end", value_parser = parse_ticks)]
    pub start: Option<Ticks>,
    /// Window end, exclusive (RFC 3339); with --start.
    #[arg(long, env = "ADXEXPORTER_END", requires = "start", value_parser = parse_ticks)]
    pub end: Option<Ticks>,
    /// What "now" is (tests).
    #[arg(long, env = "ADXEXPORTER_NOW", hide = true, value_parser = parse_ticks)]
    pub now: Option<Ticks>,
}

/// `preview`'s flags, validated. Whether `window` is aligned to the resource's interval is for
/// the caller to check (it knows the interval): accept, but warn.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewConfig {
    pub file: PathBuf,
    pub name: Option<String>,
    pub kusto_endpoints: Vec<(String, Url)>,
    pub kusto_auth: String,
    pub cluster_labels: BTreeMap<String, String>,
    pub metric_name_prefix: String,
    /// `[start, end)` from `--start`/`--end`.
    pub window: Option<(Ticks, Ticks)>,
    pub now: Option<Ticks>,
    pub kusto_server_timeout: Span,
    pub tls: TlsConfig,
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
            kusto_endpoints: parse_kusto_endpoints(&self.kusto.kusto_endpoints)?,
            kusto_auth: self.kusto.kusto_auth,
            cluster_labels: parse_cluster_labels(&self.kusto.cluster_labels)?,
            metric_name_prefix: self.metric_name_prefix.trim().to_owned(),
            window,
            now: self.now,
            kusto_server_timeout: self.kusto.kusto_server_timeout,
            tls: self.kusto.tls.config(None),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Cluster labels, K=V[,K=V...]: also report whether each resource would run on such an instance.
    #[arg(
        long,
        env = "ADXEXPORTER_CLUSTER_LABELS",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub cluster_labels: Vec<String>,
    /// MetricsExporter files (YAML, several documents separated by ---, or JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl CheckArgs {
    /// The cluster labels, if any were given.
    pub fn labels(&self) -> Result<Option<BTreeMap<String, String>>, CliError> {
        if self.cluster_labels.iter().all(|s| s.trim().is_empty()) {
            return Ok(None);
        }
        parse_cluster_labels(&self.cluster_labels).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsers

/// `K=V` items into a map: split on the first `=`, trimmed, empty items skipped, duplicate keys
/// (case-insensitive) and control characters rejected.
pub fn parse_pairs(
    flag: &'static str,
    items: &[String],
) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (key, value) = split_pair(flag, item, "KEY=VALUE")?;
        if out
            .keys()
            .any(|k: &String| k.to_lowercase() == key.to_lowercase())
        {
            return Err(CliError::DuplicateKey {
                flag,
                key: key.to_owned(),
            });
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

fn split_pair<'a>(
    flag: &'static str,
    item: &'a str,
    form: &'static str,
) -> Result<(&'a str, &'a str), CliError> {
    let Some((key, value)) = item.split_once('=') else {
        return Err(CliError::NotAPair {
            flag,
            item: item.to_owned(),
            form,
        });
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(CliError::EmptyKey {
            flag,
            item: item.to_owned(),
        });
    }
    if item
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err(CliError::ControlCharacter {
            flag,
            item: item.to_owned(),
        });
    }
    Ok((key, value))
}

/// `--cluster-labels`: as [`parse_pairs`], and each key must give its own KQL variable.
pub fn parse_cluster_labels(items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let labels = parse_pairs("--cluster-labels", items)?;
    let mut idents: BTreeMap<String, &String> = BTreeMap::new();
    for key in labels.keys() {
        let ident = kql_identifier(key);
        if WINDOW_VARIABLES.contains(&ident.as_str()) {
            return Err(CliError::LabelRedefinesWindow {
                key: key.clone(),
                ident,
            });
        }
        if let Some(other) = idents.insert(ident.clone(), key) {
            return Err(CliError::LabelVariableClash {
                a: other.clone(),
                b: key.clone(),
                ident,
            });
        }
    }
    Ok(labels)
}

/// `--kusto-endpoint DB=URL` items: split on the first `=`, URL must be http(s), one per database.
pub fn parse_kusto_endpoints(items: &[String]) -> Result<Vec<(String, Url)>, CliError> {
    const FLAG: &str = "--kusto-endpoint";
    let mut out: Vec<(String, Url)> = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (db, url) = split_pair(FLAG, item, "DB=URL")?;
        let parsed = Url::parse(url).map_err(|e| CliError::BadUrl {
            flag: FLAG,
            item: item.to_owned(),
            reason: e.to_string(),
        })?;
        check_url(FLAG, item, &parsed)?;
        if out.iter().any(|(d, _)| d == db) {
            return Err(CliError::DuplicateKey {
                flag: FLAG,
                key: db.to_owned(),
            });
        }
        out.push((db.to_owned(), parsed));
    }
    Ok(out)
}

/// A Kusto or output URL: `http://` or `https://` with a host (for gRPC: plaintext or TLS), and no
/// credentials in it. `item` is what the user wrote, quoted back in the error.
fn check_url(flag: &'static str, item: &str, url: &Url) -> Result<(), CliError> {
    if !(matches!(url.scheme(), "http" | "https") && url.has_host()) {
        return Err(CliError::BadUrl {
            flag,
            item: item.to_owned(),
            reason: "use an http:// or https:// URL with a host".into(),
        });
    }
    no_userinfo(flag, url)
}

/// Credentials inside a URL would end up in logs and errors: they have their own flags.
fn no_userinfo(flag: &'static str, url: &Url) -> Result<(), CliError> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let instead = match flag {
        "--remote-write-endpoint" => {
            "use --remote-write-basic-auth-username and --remote-write-basic-auth-password-file"
        }
        "--otlp-endpoint" | "--otlp-grpc-endpoint" => {
            "use --otlp-basic-auth-username and --otlp-basic-auth-password-file"
        }
        _ => "Kusto takes Azure AD tokens: see --kusto-auth",
    };
    Err(CliError::BadUrl {
        flag,
        item: shown.to_string(),
        reason: format!("remove the user name and password from the URL: {instead}"),
    })
}

/// A byte size: `1073741824`, `1GiB`, `512MiB`, `64KiB`, `4MB` (decimal), `1.5GiB`; more than 0.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size: use e.g. 1GiB, 512MiB, 4MB or a number of bytes");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `8081`, `:8081` (adx-mon's form) or `HOST:PORT`; a bare port listens on every interface.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    t.parse()
        .map_err(|_| format!("{s:?} is not a port: use e.g. 8081, :8081 or 127.0.0.1:8081"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

fn parse_replicas(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

fn parse_non_negative_duration(s: &str) -> Result<Span, String> {
    match Span::parse_duration(s.trim()) {
        Ok(d) if d >= Span::ZERO => Ok(d),
        Ok(_) => Err(format!("{s:?} is negative")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_positive_duration(s: &str) -> Result<Span, String> {
    match parse_non_negative_duration(s)? {
        d if d > Span::ZERO => Ok(d),
        _ => Err(format!("{s:?} must be more than 0s")),
    }
}

fn parse_ticks(s: &str) -> Result<Ticks, String> {
    Ticks::parse(s.trim()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Command, clap::Error> {
        parse_from(std::iter::once("adxexporter").chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> Result<RunConfig, CliError> {
        match cli(args).unwrap() {
            Command::Run(a) => a.validate(),
            other => panic!("not run: {other:?}"),
        }
    }

    const OUT: &str = "--otlp-endpoint=http://collector:4318/v1/metrics";

    #[test]
    fn run_is_the_default_and_defaults_apply() {
        let c = run(&[OUT]).unwrap();
        assert_eq!(c.wal_dir, PathBuf::from("/var/lib/adxexporter"));
        assert_eq!(c.wal_max_bytes, 1 << 30);
        assert_eq!(c.max_request_bytes, 4 << 20);
        assert_eq!(c.metrics_addr.port(), 8080);
        assert_eq!(c.health_probe_addr.port(), 8081);
        assert_eq!(c.max_concurrent_queries, 4);
        assert_eq!(c.shutdown_grace, Span::from_secs(20));
        assert_eq!(c.kusto_server_timeout, Span::from_secs(240));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.kusto_auth, "auto");
        let explicit = match cli(&["run", OUT]).unwrap() {
            Command::Run(a) => a.validate().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(explicit, c);
    }

    #[test]
    fn replicas_take_the_ordinal_from_the_pod_name() {
        assert_eq!(run(&[OUT]).unwrap().shard, Shard::SINGLE);
        let c = run(&[OUT, "--replicas=3", "--pod-name=adxexporter-2"]).unwrap();
        assert_eq!(
            c.shard,
            Shard {
                ordinal: 2,
                replicas: 3
            }
        );
        let err = run(&[OUT, "--replicas", "3", "--pod-name", "laptop"]).unwrap_err();
        assert!(
            matches!(err, CliError::Shard(ShardError::NoOrdinal { .. })),
            "{err}"
        );
        assert!(cli(&[OUT, "--replicas=0"]).is_err());
        let err = run(&[OUT, "--replicas=2", "--manifests=/x"]).unwrap_err();
        assert_eq!(err, CliError::ReplicasWithManifests(2));
    }

    #[test]
    fn lists_are_comma_separated_and_repeatable() {
        let c = run(&[
            OUT,
            "--cluster-labels=region=eastus, env = prod",
            "--cluster-labels",
            "cloud=public",
            "--kusto-endpoint=a=https://a.kusto.windows.net,b=https://b.kusto.windows.net",
            "--kusto-endpoints",
            "c=http://127.0.0.1:8082",
        ])
        .unwrap();
        assert_eq!(
            c.cluster_labels,
            BTreeMap::from([
                ("cloud".into(), "public".into()),
                ("env".into(), "prod".into()),
                ("region".into(), "eastus".into()),
            ])
        );
        let dbs: Vec<&str> = c.kusto_endpoints.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dbs, ["a", "b", "c"]);
    }

    #[test]
    fn url_with_equals_in_its_query_survives() {
        let c = run(&[OUT, "--kusto-endpoint", "db=https://x.example/?a=b&c=d"]).unwrap();
        assert_eq!(c.kusto_endpoints[0].0, "db");
        assert_eq!(
            c.kusto_endpoints[0].1.as_str(),
            "https://x.example/?a=b&c=d"
        );
    }

    #[test]
    fn malformed_pairs_are_named() {
        assert_eq!(
            run(&[OUT, "--kusto-endpoint", "nodb"])
                .unwrap_err()
                .to_string(),
            "--kusto-endpoint: \"nodb\" is not DB=URL"
        );
        assert_eq!(
            run(&[OUT, "--cluster-labels", "region=eastus,=x"])
                .unwrap_err()
                .to_string(),
            "--cluster-labels: \"=x\" has an empty key"
        );
        assert_eq!(
            run(&[OUT, "--kusto-endpoint", "a=ftp://x"])
                .unwrap_err()
                .to_string(),
            "--kusto-endpoint: \"a=ftp://x\": use an http:// or https:// URL with a host"
        );
    }

    #[test]
    fn duplicates_are_errors() {
        assert_eq!(
            run(&[OUT, "--kusto-endpoint", "a=http://x,a=http://y"]).unwrap_err(),
            CliError::DuplicateKey {
                flag: "--kusto-endpoint",
                key: "a".into()
            }
        );
        assert_eq!(
            run(&[OUT, "--cluster-labels", "Region=a,region=b"]).unwrap_err(),
            CliError::DuplicateKey {
                flag: "--cluster-labels",
                key: "region".into()
            }
        );
    }

    #[test]
    fn cluster_labels_must_make_distinct_kql_variables() {
        assert_eq!(
            run(&[OUT, "--cluster-labels", "a-b=1,a_b=2"])
                .unwrap_err()
                .to_string(),
            "--cluster-labels: \"a-b\" and \"a_b\" both become KQL variable _a_b: rename one"
        );
        assert_eq!(
            run(&[OUT, "--cluster-labels", "startTime=x"])
                .unwrap_err()
                .to_string(),
            "--cluster-labels: \"startTime\" would redefine _startTime, which holds the window: rename it"
        );
        assert!(matches!(
            run(&[OUT, "--cluster-labels", "a=x\u{7}y"]),
            Err(CliError::ControlCharacter { .. })
        ));
    }

    #[test]
    fn an_output_is_required() {
        let err = run(&[]).unwrap_err();
        assert_eq!(err, CliError::NoOutput);
        assert!(err.to_string().contains("--otlp-endpoint"));
        assert!(run(&["--remote-write-endpoint", "http://p:9090/api/v1/write"]).is_ok());
    }

    #[test]
    fn grpc_and_scrape_are_outputs_of_their_own() {
        let c = run(&["--otlp-grpc-endpoint", "http://collector:4317"]).unwrap();
        assert_eq!(
            c.otlp_grpc_endpoint.unwrap().as_str(),
            "http://collector:4317/"
        );
        assert_eq!(c.scrape_addr, None, "scrape is off by default");
        let c = run(&["--scrape-port", "9464"]).unwrap();
        assert_eq!(c.scrape_addr.unwrap().port(), 9464);
        assert_eq!(c.scrape.path, "/metrics");
        assert!(!c.scrape.timestamps);
        let c = run(&[
            "--scrape-port=:9464",
            "--scrape-path=/kusto",
            "--scrape-timestamps",
        ])
        .unwrap();
        assert_eq!(
            (c.scrape.path.as_str(), c.scrape.timestamps),
            ("/kusto", true)
        );
        let c = run(&["--otlp-grpc-endpoint", "https://collector:4317"]).unwrap();
        assert_eq!(c.otlp_grpc_endpoint.unwrap().scheme(), "https");
        for (flag, url) in [
            ("--otlp-grpc-endpoint", "https://u:s3cret@collector:4317"),
            ("--remote-write-endpoint", "https://u:s3cret@p/api/v1/write"),
        ] {
            let e = run(&[flag, url]).unwrap_err().to_string();
            assert!(
                e.contains("basic-auth-username") && !e.contains("s3cret"),
                "{e}"
            );
        }
        let e = run(&["--otlp-grpc-endpoint", "collector:4317"]).unwrap_err();
        assert!(e.to_string().contains("--otlp-grpc-endpoint"), "{e}");
        let e = run(&["--scrape-port", "8080"]).unwrap_err();
        assert!(e.to_string().contains("--metrics-port"), "{e}");
        let e = run(&["--scrape-port", "9464", "--scrape-path", "metrics"]).unwrap_err();
        assert_eq!(e, CliError::BadScrapePath("metrics".into()));
    }

    #[test]
    fn resource_attributes_overlay_cluster_labels() {
        let c = run(&[
            OUT,
            "--cluster-labels",
            "a=1,b=2",
            "--add-resource-attributes",
            "b=3,c=4",
        ])
        .unwrap();
        assert_eq!(
            c.resource_attributes,
            BTreeMap::from([
                ("a".into(), "1".into()),
                ("b".into(), "3".into()),
                ("c".into(), "4".into())
            ])
        );
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4MB"), Ok(4_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64 kib"), Ok(65536));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
        assert!(cli(&[OUT, "--wal-max-bytes", "lots"]).is_err());
    }

    #[test]
    fn probe_ports_accept_adx_mon_form() {
        assert_eq!(parse_listen_addr(":8081").unwrap().port(), 8081);
        assert_eq!(parse_listen_addr("9000").unwrap().port(), 9000);
        assert_eq!(
            parse_listen_addr("127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_listen_addr("eighty").is_err());
        let c = run(&[OUT, "--health-probe-port", ":9091"]).unwrap();
        assert_eq!(c.health_probe_addr.port(), 9091);
    }

    #[test]
    fn numbers_and_durations_are_checked() {
        assert!(cli(&[OUT, "--max-concurrent-queries", "0"]).is_err());
        assert!(cli(&[OUT, "--shutdown-grace", "-1s"]).is_err());
        assert!(cli(&[OUT, "--kusto-server-timeout", "0s"]).is_err());
        assert!(cli(&[OUT, "--log-format", "xml"]).is_err());
        assert_eq!(
            run(&[OUT, "--log-format", "json"]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn preview_needs_both_or_neither_bound() {
        assert!(cli(&["preview", "-f", "x.yaml", "--start", "2026-01-01T00:00:00Z"]).is_err());
        let args = match cli(&[
            "preview",
            "-f",
            "x.yaml",
            "--start",
            "2026-01-01T00:05:00Z",
            "--end",
            "2026-01-01T00:00:00Z",
        ])
        .unwrap()
        {
            Command::Preview(a) => a,
            _ => unreachable!(),
        };
        assert!(matches!(args.validate(), Err(CliError::EmptyWindow { .. })));
        let args = match cli(&[
            "preview",
            "-f",
            "x.yaml",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-01T00:05:00Z",
            "--now",
            "2026-01-02T00:00:00Z",
        ])
        .unwrap()
        {
            Command::Preview(a) => a,
            _ => unreachable!(),
        };
        let p = args.validate().unwrap();
        assert_eq!(
            p.window,
            Some((
                Ticks::parse("2026-01-01T00:00:00Z").unwrap(),
                Ticks::parse("2026-01-01T00:05:00Z").unwrap()
            ))
        );
        assert_eq!(p.now, Ticks::parse("2026-01-02T00:00:00Z").ok());
    }

    #[test]
    fn check_takes_files_and_optional_labels() {
        let args = match cli(&[
            "check",
            "--cluster-labels",
            "region=eastus",
            "a.yaml",
            "b.yaml",
        ])
        .unwrap()
        {
            Command::Check(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(args.files.len(), 2);
        assert_eq!(args.labels().unwrap().unwrap()["region"], "eastus");
        assert!(cli(&["check"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
