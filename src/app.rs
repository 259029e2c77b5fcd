//! The only wiring: open the WAL, build the Kusto clients and the outputs, and run the source, the
//! scheduler, one drain loop per output, the status writer and the admin endpoints until SIGTERM.
//! With `--manifests` the source is the directory and status goes to `status.json`; without it the
//! source is the Kubernetes watch and status is patched onto each resource.
//!
//! Shutdown (SIGTERM or Ctrl-C): stop querying (an in-flight append completes), let the drain loops
//! push what they can within `--shutdown-grace`, write the status once more, exit 0. Appended
//! records are never lost: what was not pushed stays in the WAL for the next start. Any task that
//! ends on its own (an error) stops the process with that error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{OutputSettings, RunConfig};
use crate::query::MemoryBudget;
use crate::query::budget::{human_bytes, resolve_budget};
use crate::registry::Snapshot;
use crate::schedule::exporter::SchedulerContext;
use crate::schedule::scheduler::Scheduler;
use crate::shard::Membership;
use crate::sink::drain::Drain;
use crate::sink::{
    OtlpGrpcSink, OtlpSink, Output, RemoteWriteSink, ScrapePages, ScrapeSink, Sink, scrape,
};
use crate::source::kube::{Filter, KubeSource};
use crate::source::manifests::ManifestSource;
use crate::status::events::EventPublisher;
use crate::status::kube::{KubeStatusConfig, KubeStatusWriter};
use crate::status::limit::RateLimiter;
use crate::status::{Board, StatusWriter};
use crate::telemetry::events::EventQueue;
use crate::telemetry::kube_requests::CountRequestsLayer;
use crate::telemetry::metrics::{
    MEMORY_WAITS, QUERY_MEMORY_BUDGET, QUERY_MEMORY_RESERVED, QUERY_MEMORY_WAITS,
};
use crate::telemetry::{self, Health};
use crate::wal::{Wal, WalConfig};

/// Exporters pushed at once by one drain loop.
const DRAIN_CONCURRENCY: usize = 8;
/// Decompressed Kusto response bound (the row limit usually bites first).
const MAX_RESPONSE_BYTES: usize = 512 << 20;
/// Where the container's memory limit is read for the default `--query-memory-budget`.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    telemetry::init_logging(config.telemetry.log_format);
    let endpoints: Vec<String> = (config.kusto.endpoints.iter())
        .map(|(db, url)| format!("{db}={url}"))
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting; kusto endpoints: {}",
        endpoints.join(",")
    );
    // Listen before anything slow (WAL open verifies the whole file): a SIGTERM during start-up
    // must be a clean stop, not the default action that kills the process.
    let mut shutdown = ShutdownSignal::install();
    let metrics = telemetry::install_metrics()?;
    let health = Arc::new(Health::default());
    let admin_stop = CancellationToken::new();
    let router = telemetry::admin_router(Some(metrics), health.clone());
    let (metrics_addr, probe_addr) = (
        config.telemetry.metrics_addr,
        config.telemetry.health_probe_addr,
    );
    let mut admin = vec![
        telemetry::serve(
            metrics_addr,
            "--metrics-port",
            router.clone(),
            admin_stop.clone(),
        )
        .await?,
    ];
    if probe_addr != metrics_addr {
        let flag = "--health-probe-port";
        admin.push(telemetry::serve(probe_addr, flag, router, admin_stop.clone()).await?);
    }

    telemetry::tls_insecure_warning(config.telemetry.tls_insecure_skip_verify);
    let outputs = build_outputs(&config.outputs)?;
    // The scrape page gets its own listener (never the self-metrics port).
    let scrape_pages = outputs.iter().find_map(|o| match o {
        Output::Scrape(s) => Some(s.pages()),
        _ => None,
    });
    if let (Some(scrape), Some(pages)) = (&config.outputs.scrape, &scrape_pages) {
        let (addr, path) = (scrape.addr, &scrape.page.path);
        let router = scrape::router(path, pages.clone());
        admin.push(telemetry::serve(addr, "--scrape-port", router, admin_stop.clone()).await?);
        tracing::info!(%addr, path = %path, "scrape output listening");
    }
    let names: Vec<String> = outputs.iter().map(|o| o.name().to_owned()).collect();
    let wal_dir = &config.wal.dir;
    std::fs::create_dir_all(wal_dir)
        .with_context(|| format!("cannot create --wal-dir {}", wal_dir.display()))?;
    let wal = {
        let dir = wal_dir.clone();
        let wal_config = WalConfig {
            outputs: names.clone(),
            ..config.wal.config.clone()
        };
        tokio::task::spawn_blocking(move || Wal::open(&dir, wal_config)).await??
    };
    health.set_wal_open();
    tracing::info!(wal = %wal_dir.display(), outputs = ?names, "WAL open");

    let mut clients = BTreeMap::new();
    for (database, url) in &config.kusto.endpoints {
        let client = (config.kusto.client(url))
            .with_context(|| format!("--kusto-endpoint {database}={url}"))?;
        clients.insert(database.clone(), Arc::new(client));
    }

    let (budget, origin) = resolve_budget(
        config.query_memory_budget,
        std::path::Path::new(CGROUP_ROOT),
    );
    tracing::info!(
        budget_bytes = budget,
        max_concurrent_queries = config.max_concurrent_queries,
        "query memory budget: {} ({origin})",
        human_bytes(budget)
    );
    metrics::gauge!(QUERY_MEMORY_BUDGET).set(budget as f64);
    metrics::gauge!(QUERY_MEMORY_RESERVED).set(0.0);
    for wait in MEMORY_WAITS {
        metrics::counter!(QUERY_MEMORY_WAITS, "wait" => wait).increment(0);
    }

    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let board = Arc::new(Board::default());
    let query_stop = CancellationToken::new();
    let drain_stop = CancellationToken::new();
    // Two sets: the query side (source, scheduler) must have finished its in-flight appends before
    // the drain side is asked to empty the WAL, or a window appended during shutdown stays behind.
    let mut query_tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let mut tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();

    let source = &config.source;
    let kube_client = match &source.manifests {
        Some(_) => None,
        None => Some(kube_client().await?),
    };
    // Kubernetes Events about MetricsExporters (docs/design.md#events): any task may publish to
    // `events` (the source's hook for stale resources); the publisher below records them.
    let (events, notices) = match &kube_client {
        Some(_) => {
            let (queue, rx) = EventQueue::channel();
            (queue, Some(rx))
        }
        None => (EventQueue::disabled(), None),
    };
    match (&source.manifests, &kube_client) {
        (Some(dir), _) => {
            let manifests = ManifestSource::new(
                dir.clone(),
                source.cluster_labels.clone(),
                source.metric_name_prefix.clone(),
            );
            let (health, stop) = (health.clone(), query_stop.clone());
            query_tasks.spawn(async move {
                manifests.run(tx, health, stop).await?;
                Ok("source")
            });
        }
        (None, Some(client)) => {
            match &source.membership {
                Membership::Fixed(shard) => {
                    if shard.ordinal >= shard.replicas {
                        tracing::warn!(
                            "ordinal {} is not below --replicas {}: this replica runs no exporter and only drains its WAL",
                            shard.ordinal,
                            shard.replicas
                        );
                    }
                    tracing::info!(
                        namespace = source.namespace.as_deref().unwrap_or("<all>"),
                        replica = shard.ordinal,
                        replicas = shard.replicas,
                        "Kubernetes mode: watching MetricsExporter resources"
                    );
                }
                Membership::StatefulSet {
                    name,
                    namespace,
                    ordinal,
                } => tracing::info!(
                    namespace = source.namespace.as_deref().unwrap_or("<all>"),
                    replica = ordinal,
                    statefulset = %format!("{}/{name}", namespace.as_deref().unwrap_or(client.default_namespace())),
                    "Kubernetes mode: watching MetricsExporter resources; the replica count is the StatefulSet's"
                ),
            }
            let watch = KubeSource::new(
                client.clone(),
                source.namespace.as_deref(),
                Filter {
                    cluster_labels: source.cluster_labels.clone(),
                    cli_prefix: source.metric_name_prefix.clone(),
                },
                source.membership.clone(),
            )
            .with_events(events.clone());
            let (health, stop) = (health.clone(), query_stop.clone());
            query_tasks.spawn(async move {
                watch.run(tx, health, stop).await?;
                Ok("source")
            });
        }
        (None, None) => bail!("no source of MetricsExporter resources"),
    }
    let scheduler = Scheduler::new(SchedulerContext {
        wal: wal.clone(),
        clients,
        cluster_labels: source.cluster_labels.clone(),
        queries: Arc::new(Semaphore::new(config.max_concurrent_queries)),
        query_slots: config.max_concurrent_queries,
        memory: MemoryBudget::new(budget),
        max_response_bytes: MAX_RESPONSE_BYTES,
        slow_query: config.kusto.config.server_timeout / 4,
        board: board.clone(),
        health: health.clone(),
    });
    {
        let (rx, stop) = (rx.clone(), query_stop.clone());
        query_tasks.spawn(async move {
            scheduler.run(rx, stop).await?;
            Ok("scheduler")
        });
    }
    if let Some(pages) = scrape_pages {
        let (rx, stop) = (rx.clone(), drain_stop.clone());
        tasks.spawn(async move {
            scrape::follow(pages, rx, stop).await;
            Ok("scrape pages")
        });
    }
    for output in outputs {
        let drain = Drain {
            sink: Arc::new(output),
            wal: wal.clone(),
            policy: config.outputs.backoff.clone(),
            concurrency: DRAIN_CONCURRENCY,
            health: health.clone(),
        };
        let stop = drain_stop.clone();
        tasks.spawn(async move {
            drain.run(stop).await?;
            Ok("drain")
        });
    }
    {
        let (wal, rx, board, stop) = (wal.clone(), rx.clone(), board.clone(), drain_stop.clone());
        tasks.spawn(async move {
            crate::status::gauges::run(wal, rx, board, stop).await;
            Ok("metrics")
        });
    }
    {
        let stop = drain_stop.clone();
        match kube_client {
            Some(client) => {
                let kube = &config.kube;
                let publisher = EventPublisher::new(
                    client.clone(),
                    kube.pod_name.clone(),
                    Arc::new(RateLimiter::new(kube.event_qps, kube.event_burst)),
                );
                let status = KubeStatusWriter::new(
                    client,
                    wal.clone(),
                    board,
                    KubeStatusConfig {
                        qps: kube.status_patch_qps,
                        burst: kube.status_patch_burst,
                        namespace: source.namespace.clone(),
                    },
                    events,
                );
                if let Some(notices) = notices {
                    let events_stop = stop.clone();
                    tasks.spawn(async move {
                        publisher.run(notices, events_stop).await;
                        Ok("events")
                    });
                }
                tasks.spawn(async move {
                    status.run(rx, stop).await?;
                    Ok("status")
                });
            }
            None => {
                let status = StatusWriter::new(wal_dir, wal.clone(), board);
                tasks.spawn(async move {
                    status.run(rx, stop).await?;
                    Ok("status")
                });
            }
        }
    }

    let mut failure = tokio::select! {
        _ = shutdown.recv() => None,
        ended = query_tasks.join_next() => Some(unexpected_end(ended)),
        ended = tasks.join_next() => Some(unexpected_end(ended)),
    };
    tracing::info!(
        "shutting down: querying stops, outputs get up to {} to drain",
        config.shutdown_grace
    );
    query_stop.cancel();
    // An append that had started completes here, so the drain below pushes it too.
    while let Some(ended) = query_tasks.join_next().await {
        if let Ok(Err(e)) = ended {
            note_error(&mut failure, e);
        }
    }
    if failure.is_none() {
        tokio::select! {
            _ = drain_within(&wal, config.shutdown_grace.to_std()) => {}
            _ = shutdown.recv() => tracing::warn!(
                "second stop signal: stopping now; undelivered windows stay in the WAL for the next start"
            ),
        }
    }
    drain_stop.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Err(e)) = ended {
            note_error(&mut failure, e);
        }
    }
    admin_stop.cancel();
    for handle in admin {
        let _ = handle.await;
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// A task's error seen while stopping: the cause to report when the stop began with a task that
/// merely ended because of it (the scheduler ends when the source fails), else a warning.
fn note_error(failure: &mut Option<anyhow::Error>, e: anyhow::Error) {
    match failure {
        Some(f) if f.is::<StoppedTask>() => *failure = Some(e),
        _ => tracing::warn!("during shutdown: {}", crate::tls::error_chain(e.as_ref())),
    }
}

/// A task that should run until shutdown returned without an error.
#[derive(Debug, thiserror::Error)]
#[error("the {0} task stopped unexpectedly")]
struct StoppedTask(&'static str);

/// Why a task that should run until shutdown ended.
fn unexpected_end(
    ended: Option<Result<anyhow::Result<&'static str>, tokio::task::JoinError>>,
) -> anyhow::Error {
    match ended {
        Some(Ok(Ok(name))) => StoppedTask(name).into(),
        Some(Ok(Err(e))) => e,
        Some(Err(join)) => anyhow::anyhow!("a task panicked: {join}"),
        None => anyhow::anyhow!("no task running"),
    }
}

/// A client for the cluster of `KUBECONFIG` (or `~/.kube/config`), or the in-cluster service
/// account, that counts every request it makes (`adxexporter_kube_requests_total`).
async fn kube_client() -> anyhow::Result<kube::Client> {
    let needs = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "Kubernetes mode (no --manifests) needs a cluster: run in a pod with a service account or set KUBECONFIG, \
             or run standalone with --manifests DIR ({e})"
        )
    };
    let config = kube::Config::infer().await.map_err(|e| needs(&e))?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| needs(&e))?;
    Ok(builder.with_layer(&CountRequestsLayer).build())
}

/// One sink per configured output, always in this order (the WAL and the logs list them so).
fn build_outputs(config: &OutputSettings) -> anyhow::Result<Vec<Output>> {
    let mut outputs = Vec::new();
    if let Some(c) = &config.remote_write {
        outputs.push(Output::RemoteWrite(RemoteWriteSink::new(c.clone())?));
    }
    if let Some(c) = &config.otlp {
        outputs.push(Output::Otlp(OtlpSink::new(c.clone())?));
    }
    if let Some(c) = &config.otlp_grpc {
        outputs.push(Output::OtlpGrpc(OtlpGrpcSink::new(c.clone())?));
    }
    if let Some(scrape) = &config.scrape {
        let pages = Arc::new(ScrapePages::default());
        outputs.push(Output::Scrape(ScrapeSink::new(&scrape.page, pages)));
    }
    Ok(outputs)
}

/// Waits until nothing is pending for any output, or `grace` has passed.
async fn drain_within(wal: &Wal, grace: Duration) {
    let deadline = Instant::now() + grace;
    let mut changes = wal.subscribe();
    let mut said = None;
    loop {
        let w = wal.clone();
        let pending = tokio::task::spawn_blocking(move || w.stats())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| {
                s.outputs
                    .iter()
                    .filter(|o| o.configured)
                    .map(|o| o.pending)
                    .sum::<u64>()
            });
        match pending {
            Some(0) | None => return,
            // Once, then when the count changes: not four lines a second for the whole grace.
            Some(n) if said != Some(n) => {
                tracing::info!(
                    pending = n,
                    "waiting for outputs to drain (a second SIGTERM or Ctrl-C stops at once)"
                );
                said = Some(n);
            }
            Some(_) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                "shutdown grace over: undelivered windows stay in the WAL for the next start"
            );
            return;
        }
        // Acks do not notify; re-check a few times a second.
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(left.min(Duration::from_millis(250))) => {}
        }
    }
}

/// SIGTERM or Ctrl-C: the first starts the graceful stop, a second one ends the drain wait at once
/// (what is not pushed stays in the WAL). SIGHUP is not a stop: there is nothing to reload by
/// signal (the manifests directory is re-read every 2 s, credential and token files whenever they
/// change), so it is logged and ignored rather than killing the process. The handlers are
/// installed by [`ShutdownSignal::install`], so a signal that arrives before [`ShutdownSignal::recv`]
/// is awaited is kept, not fatal.
struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .inspect_err(|e| {
                    tracing::warn!("cannot listen for SIGTERM ({e}): only Ctrl-C stops cleanly")
                })
                .ok();
            let hup = signal(SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!("cannot listen for SIGHUP ({e}): it stops the process")
                })
                .ok();
            ShutdownSignal { term, hup }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignal {}
        }
    }

    /// The next SIGTERM or Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        loop {
            let hup = async {
                match self.hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let term = async {
                match self.term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup => tracing::info!(
                    "SIGHUP ignored: nothing to reload (the manifests directory is re-read every 2 s, credential files whenever they change); SIGTERM stops"
                ),
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
