//! Self-observability: structured logs, the Prometheus metrics recorder and the admin HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`). Nothing in the data path depends on this module; it only reads
//! the [`Health`] flags the pipeline sets and renders what the `metrics` macros recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::cli::LogFormat;
use crate::time::{Span, Ticks};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error(
        "cannot listen on {addr} for the admin endpoints: {source} (is another process using the port? change --metrics-port/--health-probe-port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), output on stderr.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Installs the global metrics recorder; its handle renders `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    metrics::gauge!("adxexporter_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Liveness and readiness as the pipeline reports them.
#[derive(Debug, Default)]
pub struct Health {
    wal_open: AtomicBool,
    resources_synced: AtomicBool,
    /// Ticks of the last scheduler heartbeat; a wedged scheduler stops updating it.
    heartbeat: AtomicI64,
}

/// How long the scheduler may go without a heartbeat before `/healthz` fails.
const WEDGED_AFTER: Span = Span(120 * crate::time::TICKS_PER_SECOND);

impl Health {
    pub fn set_wal_open(&self) {
        self.wal_open.store(true, Ordering::Relaxed);
    }

    pub fn set_resources_synced(&self) {
        self.resources_synced.store(true, Ordering::Relaxed);
    }

    pub fn heartbeat(&self) {
        self.heartbeat.store(Ticks::now().0, Ordering::Relaxed);
    }

    /// Ready when the WAL is open and the resource list has been read once (SPEC §9).
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.wal_open.load(Ordering::Relaxed) {
            return Err("WAL not open");
        }
        if !self.resources_synced.load(Ordering::Relaxed) {
            return Err("resource list not synced");
        }
        Ok(())
    }

    /// Alive unless the scheduler, once started, has stopped beating.
    pub fn alive(&self, now: Ticks) -> Result<(), String> {
        let beat = self.heartbeat.load(Ordering::Relaxed);
        if beat != 0 && now.since(Ticks(beat)) > WEDGED_AFTER {
            return Err(format!(
                "scheduler wedged: last heartbeat at {}",
                Ticks(beat)
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn admin_router(metrics: Option<PrometheusHandle>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, health })
}

async fn render_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => {
            h.run_upkeep();
            (StatusCode::OK, h.render())
        }
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.alive(Ticks::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Binds `addr` now (so a taken port fails start-up) and serves `router` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }))
}
