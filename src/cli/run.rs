//! `run`'s flags, grouped as `run --help` shows them (Sources, Kusto, Outputs, WAL, Kubernetes,
//! Telemetry), and their validation into [`RunConfig`], grouped by the module each part is handed
//! to. [`InstanceArgs`] and [`KustoArgs`] are shared with `preview` ([`KustoArgs`] with `check` too),
//! so they query Kusto and name metrics exactly as `run` would.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use url::Url;

use super::parse::{
    check_url, parse_cluster_labels, parse_kusto_endpoints, parse_listen_addr,
    parse_non_negative_duration, parse_pairs, parse_positive, parse_positive_duration, parse_rate,
    parse_replicas, parse_size, parse_url,
};
use super::{CliError, ClientCertArgs, OtlpAuthArgs, RemoteWriteAuthArgs, TlsArgs};
use crate::backoff::BackoffPolicy;
use crate::query::{AuthError, KustoAuth, KustoClient, KustoConfig, QueryError};
use crate::shard::{Membership, Shard};
use crate::sink::{OtlpConfig, OtlpGrpcConfig, RemoteWriteConfig, ScrapeConfig};
use crate::telemetry::LogFormat;
use crate::time::Span;
use crate::tls::TlsConfig;
use crate::wal::WalConfig;

/// Who this instance is and how it names metrics: shared by `run` and `preview`, so `preview`'s
/// query text and metric names are `run`'s.
#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    /// This instance's labels, KEY=VALUE[,KEY=VALUE...] (repeatable): matched by spec.criteria, defined as _KEY in every query, sent as resource attributes.
    #[arg(
        long,
        env = "ADXEXPORTER_CLUSTER_LABELS",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub cluster_labels: Vec<String>,
    /// Prefix joined with _ before every metric name.
    #[arg(long, env = "ADXEXPORTER_METRIC_NAME_PREFIX", default_value = "")]
    pub metric_name_prefix: String,
}

/// How to reach Kusto: shared by `run`, `preview` and `check`, so they query exactly as `run` would.
#[derive(Debug, Clone, Args)]
pub struct KustoArgs {
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
}

/// `run`'s flags, one flattened group per `--help` section. clap prints the sections in the order
/// their first flag is defined and the flags of a section in definition order, so the order of the
/// fields here (and in each group) is the order of `run --help`: the most used first.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten, next_help_heading = "Sources")]
    pub source: SourceArgs,
    #[command(flatten, next_help_heading = "Kusto")]
    pub kusto: RunKustoArgs,
    #[command(flatten, next_help_heading = "Outputs")]
    pub outputs: OutputArgs,
    #[command(flatten, next_help_heading = "WAL")]
    pub wal: RunWalArgs,
    #[command(flatten, next_help_heading = "Kubernetes")]
    pub kubernetes: KubernetesArgs,
    #[command(flatten, next_help_heading = "Telemetry")]
    pub telemetry: TelemetryArgs,
}

/// Where the MetricsExporter resources come from, and what this instance makes of them.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Standalone mode: read MetricsExporter YAML files from this directory instead of Kubernetes.
    #[arg(long, env = "ADXEXPORTER_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ADXEXPORTER_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// Kusto as `preview` reaches it, plus `run`'s own bound on queries in flight.
#[derive(Debug, Clone, Args)]
pub struct RunKustoArgs {
    #[command(flatten)]
    pub kusto: KustoArgs,
    /// Most Kusto queries in flight at once, across exporters.
    #[arg(long, env = "ADXEXPORTER_MAX_CONCURRENT_QUERIES", default_value = "4", value_parser = parse_positive)]
    pub max_concurrent_queries: usize,
    /// Memory for Kusto responses and their decoded rows across the queries in flight (e.g. 512MiB); a query waits for its share, a window that cannot fit fails (default: half the container's memory limit, else 1GiB).
    #[arg(long, env = "ADXEXPORTER_QUERY_MEMORY_BUDGET", value_name = "SIZE", value_parser = parse_memory_budget)]
    pub query_memory_budget: Option<u64>,
}

/// At least 1 KiB: the budget is counted in KiB.
fn parse_memory_budget(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    if bytes < 1024 {
        return Err(format!("{s:?} is below 1KiB"));
    }
    Ok(bytes)
}

/// The outputs: endpoints first, then their credentials and TLS, then how requests are shaped.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Prometheus remote-write endpoint (e.g. http://prometheus:9090/api/v1/write).
    #[arg(long, env = "ADXEXPORTER_REMOTE_WRITE_ENDPOINT", value_name = "URL", value_parser = parse_url)]
    pub remote_write_endpoint: Option<Url>,
    /// OTLP/HTTP metrics endpoint, used as given (e.g. http://collector:4318/v1/metrics).
    #[arg(long, env = "ADXEXPORTER_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_url)]
    pub otlp_endpoint: Option<Url>,
    /// OTLP/gRPC receiver, http://HOST:PORT (plaintext) or https://HOST:PORT (TLS), e.g. https://collector:4317.
    #[arg(long, env = "ADXEXPORTER_OTLP_GRPC_ENDPOINT", value_name = "URL", value_parser = parse_url)]
    pub otlp_grpc_endpoint: Option<Url>,
    /// Port (or HOST:PORT) serving the scrape output: each exporter's newest window for Prometheus to scrape (off unless set).
    #[arg(long, env = "ADXEXPORTER_SCRAPE_PORT", value_name = "PORT", value_parser = parse_listen_addr)]
    pub scrape_port: Option<SocketAddr>,
    /// Path of the scrape page.
    #[arg(long, env = "ADXEXPORTER_SCRAPE_PATH", default_value = crate::sink::scrape::DEFAULT_SCRAPE_PATH)]
    pub scrape_path: String,
    /// Print each sample's own timestamp on the scrape page (default: none, Prometheus stamps scrape time).
    #[arg(long, env = "ADXEXPORTER_SCRAPE_TIMESTAMPS")]
    pub scrape_timestamps: bool,
    #[command(flatten)]
    pub remote_write_auth: RemoteWriteAuthArgs,
    #[command(flatten)]
    pub otlp_auth: OtlpAuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub client_cert: ClientCertArgs,
    /// Extra OTLP resource attributes, K=V[,K=V...] (repeatable); they override cluster labels.
    #[arg(
        long,
        env = "ADXEXPORTER_ADD_RESOURCE_ATTRIBUTES",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub add_resource_attributes: Vec<String>,
    /// Largest uncompressed push request (e.g. 4MiB); bigger windows are split.
    #[arg(long, env = "ADXEXPORTER_MAX_REQUEST_BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub max_request_bytes: u64,
    /// How long to keep pushing after SIGTERM before exiting.
    #[arg(long, env = "ADXEXPORTER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_non_negative_duration)]
    pub shutdown_grace: Span,
}

/// The write-ahead log between the queries and the outputs.
#[derive(Debug, Clone, Args)]
pub struct RunWalArgs {
    /// Directory of the write-ahead log (a persistent volume in Kubernetes).
    #[arg(
        long,
        env = "ADXEXPORTER_WAL_DIR",
        default_value = super::DEFAULT_WAL_DIR
    )]
    pub wal_dir: PathBuf,
    /// Most bytes the WAL may hold (e.g. 1GiB, 512MiB, 1000000); when full, querying pauses.
    #[arg(long, env = "ADXEXPORTER_WAL_MAX_BYTES", default_value = super::DEFAULT_WAL_MAX_BYTES, value_parser = parse_size)]
    pub wal_max_bytes: u64,
    /// Free space to keep on the WAL's volume (e.g. 64MiB); below it querying pauses, as when the WAL is full.
    #[arg(long, env = "ADXEXPORTER_WAL_MIN_FREE_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub wal_min_free_bytes: u64,
}

/// Sharding between StatefulSet replicas (Kubernetes mode).
#[derive(Debug, Clone, Args)]
pub struct KubernetesArgs {
    /// Kubernetes mode: a fixed replica count instead of the StatefulSet's (no StatefulSet is read); each replica runs the resources rendezvous hashing of the uid gives its ordinal.
    #[arg(long, env = "ADXEXPORTER_REPLICAS", value_parser = parse_replicas)]
    pub replicas: Option<u32>,
    /// The StatefulSet whose spec.replicas is the replica count, followed while running (default: the pod name without its -<ordinal>); read only without --replicas.
    #[arg(long, env = "ADXEXPORTER_STATEFULSET", value_name = "NAME")]
    pub statefulset: Option<String>,
    /// The namespace of that StatefulSet (default: the Kubernetes client's namespace, in a pod its own).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub pod_namespace: Option<String>,
    /// This pod's name (default: $HOSTNAME); its ordinal is the number after the last -, as in a StatefulSet (adxexporter-2). Without an ordinal (and without --replicas or --statefulset) this instance runs every resource.
    #[arg(long, env = "ADXEXPORTER_POD_NAME")]
    pub pod_name: Option<String>,
    /// Kubernetes mode: status patches (and status reads) per second, on average, across all resources; a changed status waits its turn.
    #[arg(long, env = "ADXEXPORTER_STATUS_PATCH_QPS", default_value = "20", value_parser = parse_rate)]
    pub status_patch_qps: f64,
    /// Kubernetes mode: status patches allowed at once after a quiet spell.
    #[arg(long, env = "ADXEXPORTER_STATUS_PATCH_BURST", default_value = "50", value_parser = parse_replicas)]
    pub status_patch_burst: u32,
    /// Kubernetes mode: Kubernetes Events recorded per second, on average (each resource also gets at most 25 at once, then one per 5 minutes).
    #[arg(long, env = "ADXEXPORTER_EVENT_QPS", default_value = "5", value_parser = parse_rate)]
    pub event_qps: f64,
    /// Kubernetes mode: Kubernetes Events allowed at once after a quiet spell.
    #[arg(long, env = "ADXEXPORTER_EVENT_BURST", default_value = "25", value_parser = parse_replicas)]
    pub event_burst: u32,
}

/// Logs, `/metrics` and the probes.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(
        long,
        env = "ADXEXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Port (or HOST:PORT) serving /metrics.
    #[arg(long, env = "ADXEXPORTER_METRICS_PORT", default_value = "8080", value_parser = parse_listen_addr)]
    pub metrics_port: SocketAddr,
    /// Port (or :PORT, HOST:PORT) serving /healthz and /readyz.
    #[arg(long, env = "ADXEXPORTER_HEALTH_PROBE_PORT", default_value = "8081", value_parser = parse_listen_addr)]
    pub health_probe_port: SocketAddr,
}

/// `run`'s flags, validated, grouped by the module each group is handed to, so the wiring (`app`)
/// passes the groups on and assembles nothing itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Where resources come from and which of them this instance runs.
    pub source: SourceSettings,
    /// The Kusto clients, one per database.
    pub kusto: KustoSettings,
    /// The scheduler's bound on queries in flight, across exporters.
    pub max_concurrent_queries: usize,
    /// `--query-memory-budget` in bytes; `None`: derived at start from the cgroup memory limit.
    pub query_memory_budget: Option<u64>,
    /// The outputs and how their drain loops retry.
    pub outputs: OutputSettings,
    pub wal: WalSettings,
    /// Logs and the admin endpoints.
    pub telemetry: TelemetrySettings,
    /// How long the outputs may keep draining after SIGTERM.
    pub shutdown_grace: Span,
    /// Kubernetes mode's writes: status patches and Events.
    pub kube: KubeSettings,
}

/// Kubernetes mode's writes to the API server and their rate limits.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    pub status_patch_qps: f64,
    pub status_patch_burst: u32,
    pub event_qps: f64,
    pub event_burst: u32,
    /// `reportingInstance` of the Events: `--pod-name`, else `$HOSTNAME`.
    pub pod_name: Option<String>,
}

/// The resource source: the `--manifests` directory, or the Kubernetes watch.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Standalone mode reads this directory; `None` is Kubernetes mode.
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode: the one namespace to watch (`None`: all of them).
    pub namespace: Option<String>,
    /// Matched by `spec.criteria`; the scheduler also defines them in every query.
    pub cluster_labels: BTreeMap<String, String>,
    pub metric_name_prefix: String,
    /// This replica's ordinal and where the replica count comes from (Kubernetes mode).
    pub membership: Membership,
}

/// How to reach Kusto, for `run`, `preview` and `check` alike.
#[derive(Debug, Clone, PartialEq)]
pub struct KustoSettings {
    /// `(database, cluster URL)`, one per database.
    pub endpoints: Vec<(String, Url)>,
    /// `--kusto-auth`, parsed here so a bad value stops `run` before anything (the WAL) is created.
    pub auth: KustoAuth,
    /// Every client's settings (server timeout, TLS).
    pub config: KustoConfig,
}

impl KustoSettings {
    /// The cluster URL `--kusto-endpoint` gives for `database`.
    pub(crate) fn endpoint(&self, database: &str) -> Option<&Url> {
        (self.endpoints.iter()).find_map(|(db, url)| (db == database).then_some(url))
    }

    /// The client for one endpoint, built as `run` builds it (auth for that URL, timeouts, TLS).
    pub(crate) fn client(&self, url: &Url) -> Result<KustoClient, QueryError> {
        KustoClient::new(
            url.clone(),
            self.auth.for_endpoint(url),
            self.config.clone(),
        )
    }
}

/// Every configured output, each already in its sink's own config type.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSettings {
    pub remote_write: Option<RemoteWriteConfig>,
    pub otlp: Option<OtlpConfig>,
    pub otlp_grpc: Option<OtlpGrpcConfig>,
    pub scrape: Option<ScrapeSettings>,
    /// Retry delays of every drain loop (built in: no flag sets them).
    pub backoff: BackoffPolicy,
}

/// The scrape output: the page and the listener of its own that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeSettings {
    pub addr: SocketAddr,
    pub page: ScrapeConfig,
}

/// Where the WAL lives and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSettings {
    pub dir: PathBuf,
    /// `outputs` is left empty: the wiring fills in the names of the outputs it builds, so they are
    /// the sinks' own names and cannot drift from them.
    pub config: WalConfig,
}

/// Logs, `/metrics` and the probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub metrics_addr: SocketAddr,
    /// The same address as `metrics_addr` means one listener serves both.
    pub health_probe_addr: SocketAddr,
    /// Whether `--tls-insecure-skip-verify` is on, for the start-up warning and its gauge.
    pub tls_insecure_skip_verify: bool,
}

impl KustoArgs {
    /// The endpoints and client settings; `tls` is the caller's, since `run` and `preview` differ in
    /// whether a client certificate is configured at all.
    pub(super) fn settings(&self, tls: TlsConfig) -> Result<KustoSettings, CliError> {
        Ok(KustoSettings {
            endpoints: parse_kusto_endpoints(&self.kusto_endpoints)?,
            auth: self
                .kusto_auth
                .parse()
                .map_err(|e: AuthError| CliError::Invalid {
                    flag: "--kusto-auth".into(),
                    reason: e.to_string(),
                })?,
            config: KustoConfig {
                server_timeout: self.kusto_server_timeout.to_std(),
                tls,
                ..KustoConfig::default()
            },
        })
    }
}

impl RunArgs {
    pub fn validate(self) -> Result<RunConfig, CliError> {
        let RunArgs {
            source,
            kusto,
            outputs: out,
            wal,
            kubernetes,
            telemetry,
        } = self;
        let cluster_labels = parse_cluster_labels(&source.instance.cluster_labels)?;
        let tls = out.tls.config(Some(&out.client_cert));
        // Kusto gets the client certificate too, as it always has: it never presents it (tls.rs),
        // but a non-default TlsConfig is what makes its token requests use the same TLS settings.
        let kusto_settings = kusto.kusto.settings(tls.clone())?;
        for (flag, url) in [
            ("--otlp-endpoint", &out.otlp_endpoint),
            ("--remote-write-endpoint", &out.remote_write_endpoint),
            ("--otlp-grpc-endpoint", &out.otlp_grpc_endpoint),
        ] {
            if let Some(url) = url {
                check_url(flag, url.as_str(), url)?;
            }
        }
        if out.otlp_endpoint.is_none()
            && out.remote_write_endpoint.is_none()
            && out.otlp_grpc_endpoint.is_none()
            && out.scrape_port.is_none()
        {
            return Err(CliError::NoOutput);
        }
        // Checked even when the scrape output is off, so a typo shows before the port is set.
        let scrape_path = out.scrape_path.trim().to_owned();
        if !scrape_path.starts_with('/')
            || scrape_path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(CliError::BadScrapePath(out.scrape_path));
        }
        if let Some(scrape) = out.scrape_port {
            for (flag, other) in [
                ("--metrics-port", telemetry.metrics_port),
                ("--health-probe-port", telemetry.health_probe_port),
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
        let extra = parse_pairs("--add-resource-attributes", &out.add_resource_attributes)?;
        let mut resource_attributes = cluster_labels.clone();
        resource_attributes.extend(extra);
        let pod_name = (kubernetes.pod_name.clone()).or_else(|| std::env::var("HOSTNAME").ok());
        let membership = match (&source.manifests, kubernetes.replicas) {
            (Some(_), Some(replicas)) if replicas > 1 => {
                return Err(CliError::ReplicasWithManifests(replicas));
            }
            // Standalone: every instance runs the whole directory; no StatefulSet is read.
            (Some(_), _) => Membership::Fixed(Shard::SINGLE),
            (None, replicas) => Membership::resolve(
                replicas,
                kubernetes.statefulset.as_deref(),
                kubernetes.pod_namespace.as_deref(),
                pod_name.as_deref(),
            )?,
        };
        // The one check that reads the file system, after the flags themselves are known good.
        if let Some(dir) = &source.manifests
            && !dir.is_dir()
        {
            return Err(CliError::NoManifestsDir(dir.clone()));
        }
        let remote_write_auth = out.remote_write_auth.config()?;
        let otlp_auth = out.otlp_auth.config()?;

        let max_request_bytes = usize::try_from(out.max_request_bytes).unwrap_or(usize::MAX);
        let remote_write = out.remote_write_endpoint.map(|url| RemoteWriteConfig {
            max_request_bytes,
            auth: remote_write_auth,
            tls: tls.clone(),
            ..RemoteWriteConfig::new(url)
        });
        let otlp = out.otlp_endpoint.map(|url| OtlpConfig {
            max_request_bytes,
            auth: otlp_auth.clone(),
            tls: tls.clone(),
            ..OtlpConfig::new(url, resource_attributes.clone())
        });
        // The `--otlp-*` headers and credential apply to both OTLP transports.
        let otlp_grpc = out.otlp_grpc_endpoint.map(|url| OtlpGrpcConfig {
            max_request_bytes,
            auth: otlp_auth,
            tls: tls.clone(),
            ..OtlpGrpcConfig::new(url, resource_attributes)
        });
        let scrape = out.scrape_port.map(|addr| ScrapeSettings {
            addr,
            page: ScrapeConfig {
                path: scrape_path,
                timestamps: out.scrape_timestamps,
            },
        });
        let mut wal_config = WalConfig::new(wal.wal_max_bytes, Vec::<String>::new());
        wal_config.min_free_bytes = wal.wal_min_free_bytes;
        Ok(RunConfig {
            source: SourceSettings {
                manifests: source.manifests,
                namespace: source.namespace.filter(|n| !n.trim().is_empty()),
                cluster_labels,
                metric_name_prefix: source.instance.metric_name_prefix.trim().to_owned(),
                membership,
            },
            kusto: kusto_settings,
            max_concurrent_queries: kusto.max_concurrent_queries,
            query_memory_budget: kusto.query_memory_budget,
            outputs: OutputSettings {
                remote_write,
                otlp,
                otlp_grpc,
                scrape,
                backoff: BackoffPolicy::default(),
            },
            wal: WalSettings {
                dir: wal.wal_dir,
                config: wal_config,
            },
            telemetry: TelemetrySettings {
                log_format: telemetry.log_format,
                metrics_addr: telemetry.metrics_port,
                health_probe_addr: telemetry.health_probe_port,
                tls_insecure_skip_verify: tls.insecure_skip_verify,
            },
            shutdown_grace: out.shutdown_grace,
            kube: KubeSettings {
                status_patch_qps: kubernetes.status_patch_qps,
                status_patch_burst: kubernetes.status_patch_burst,
                event_qps: kubernetes.event_qps,
                event_burst: kubernetes.event_burst,
                pod_name,
            },
        })
    }
}
