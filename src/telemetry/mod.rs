//! Self-observability: structured logs, the Prometheus metrics recorder and the admin HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`). The data path only uses the metric names of [`metrics`] and
//! reports to [`Health`]; this module renders what the `metrics` macros recorded and the probes'
//! state. `/healthz` fails when a loop (scheduler, each drain) stops beating; `/readyz` until the WAL
//! is open and the resource list has been read.
//! [`metrics`] names every metric; `status::gauges` sets the state gauges periodically.
//!
//! Secrets: nothing here logs request headers or tokens; the Kusto token lives in a type whose
//! `Debug` hides it (`azure::BearerToken`), and the tests run at `trace` level to prove none leaks.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;

use crate::time::{Span, Ticks};

pub mod metrics;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error(
        "cannot listen on {addr} for {flag}: {source} (is another process using the port? change {flag})"
    )]
    Bind {
        addr: SocketAddr,
        /// The flag that chose the address.
        flag: &'static str,
        source: std::io::Error,
    },
}

/// How log lines are written: one JSON object per line, or human-readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), output on stderr.
pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or `kubectl logs`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder
            .with_writer(|| OneLine(std::io::stderr()))
            .try_init(),
        // Fields of the enclosing span (exporter, window) ride along in `span`.
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// A text log writer that keeps one event on one line: a Kusto or receiver message with line
/// breaks would otherwise split a log line, and `grep exporter=…` would miss its tail. The fmt layer
/// writes each event with one `write`, ending in the only newline that may stay.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&one_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `event` with every line break but a final one written as the two characters `\n`.
fn one_line(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
        return event.into();
    }
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
    out.extend_from_slice(&event[body.len()..]);
    out.into()
}

/// Gauges not set for this long (an exporter that is gone) drop out of `/metrics`.
const GAUGE_IDLE: Duration = Duration::from_secs(300);

/// The recorder's configuration: real histograms (not summaries) and idle gauges dropped.
fn recorder_builder() -> Result<PrometheusBuilder, TelemetryError> {
    let err = |e: metrics_exporter_prometheus::BuildError| TelemetryError::Recorder(e.to_string());
    PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .set_buckets_for_metric(
            Matcher::Full(metrics::QUERY_DURATION.into()),
            metrics::QUERY_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full(metrics::PUSH_DURATION.into()),
            metrics::PUSH_BUCKETS,
        )
        .map_err(err)
}

/// Installs the global metrics recorder with every metric described; its handle renders `/metrics`.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = recorder_builder()?
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    metrics::describe_all();
    ::metrics::gauge!(metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Exported from start-up (0 until the Kubernetes source counts otherwise), so an alert on it
    // never reads "no data" as fine.
    ::metrics::gauge!(metrics::EXPORTERS_STALE).set(0.0);
    Ok(handle)
}

/// Makes `--tls-insecure-skip-verify` impossible to miss: a warning at start-up and a gauge that
/// stays 1 in `/metrics` (0 otherwise, so an alert can be written on it).
pub(crate) fn tls_insecure_warning(insecure: bool) {
    ::metrics::gauge!(metrics::TLS_INSECURE_SKIP_VERIFY).set(if insecure { 1.0 } else { 0.0 });
    if insecure {
        tracing::warn!(
            "--tls-insecure-skip-verify: server certificates are NOT verified for Kusto, the outputs and token endpoints; anyone on the network path can read and change the traffic, credentials included. Use --tls-ca-file instead"
        );
    }
}

/// Liveness and readiness as the pipeline reports them.
#[derive(Debug, Default)]
pub(crate) struct Health {
    wal_open: AtomicBool,
    resources_synced: AtomicBool,
    /// Per loop: (ticks of its last beat, how long it may stay silent). A wedged loop stops beating.
    beats: Mutex<BTreeMap<&'static str, (Ticks, Span)>>,
}

/// How long the scheduler may go without a heartbeat before `/healthz` fails.
pub(crate) const SCHEDULER_SILENCE: Span = Span(120 * crate::time::TICKS_PER_SECOND);
/// How long a drain loop may go without finishing a round: a round pushes a batch of windows,
/// which can take minutes against a slow receiver, so this is generous.
pub(crate) const DRAIN_SILENCE: Span = Span(900 * crate::time::TICKS_PER_SECOND);

impl Health {
    pub(crate) fn set_wal_open(&self) {
        self.wal_open.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_resources_synced(&self) {
        self.resources_synced.store(true, Ordering::Relaxed);
    }

    /// The scheduler's heartbeat.
    pub fn heartbeat(&self) {
        self.beat("scheduler", SCHEDULER_SILENCE, Ticks::now());
    }

    /// Loop `name` is alive at `now` and will beat again within `silence`.
    pub(crate) fn beat(&self, name: &'static str, silence: Span, now: Ticks) {
        let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.insert(name, (now, silence));
    }

    /// Ready when the WAL is open and the resource list has been read once (docs/design.md#health).
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.wal_open.load(Ordering::Relaxed) {
            return Err("WAL not open");
        }
        if !self.resources_synced.load(Ordering::Relaxed) {
            return Err("resource list not synced");
        }
        Ok(())
    }

    /// Alive unless a loop that has beaten once has stayed silent longer than it said it would.
    pub fn alive(&self, now: Ticks) -> Result<(), String> {
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        let wedged: Vec<String> = (beats.iter())
            .filter(|(_, (last, silence))| now.since(*last) > *silence)
            .map(|(name, (last, _))| format!("{name} wedged: last heartbeat at {last}"))
            .collect();
        if wedged.is_empty() {
            Ok(())
        } else {
            Err(wedged.join("; "))
        }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub(crate) fn admin_router(metrics: Option<PrometheusHandle>, health: Arc<Health>) -> Router {
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

/// Binds `addr` now (so a taken port fails start-up, naming `flag`) and serves `router` until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    flag: &'static str,
    router: Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, flag, source })?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{ALL, Kind};

    /// Renders what `record` recorded through a recorder configured like the real one.
    fn render_with(record: impl FnOnce()) -> String {
        let recorder = recorder_builder().unwrap().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    #[test]
    fn a_text_log_event_stays_on_one_line() {
        assert_eq!(&*one_line(b"INFO plain\n"), b"INFO plain\n");
        assert_eq!(
            &*one_line(b"WARN window failed: Semantic error:\r\n  line 2\n"),
            b"WARN window failed: Semantic error:\\r\\n  line 2\n"
        );
        assert_eq!(&*one_line(b"no newline at all"), b"no newline at all");
    }

    #[test]
    fn every_metric_is_described_and_rendered_with_its_type() {
        let text = render_with(|| {
            metrics::describe_all();
            for m in ALL {
                let labels: Vec<(&'static str, &'static str)> =
                    m.labels.iter().map(|l| (*l, "x")).collect();
                match m.kind {
                    Kind::Counter => ::metrics::counter!(m.name, &labels).increment(1),
                    Kind::Gauge => ::metrics::gauge!(m.name, &labels).set(1.0),
                    Kind::Histogram => ::metrics::histogram!(m.name, &labels).record(0.5),
                }
            }
        });
        for m in ALL {
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert!(
                text.contains(&format!("# HELP {} {}", m.name, m.help)),
                "{} has no help text:\n{text}",
                m.name
            );
            assert!(
                text.contains(&format!("# TYPE {} {kind}", m.name)),
                "{} is not rendered as a {kind}:\n{text}",
                m.name
            );
        }
    }

    #[test]
    fn healthz_fails_only_when_a_loop_stays_silent_too_long() {
        let health = Health::default();
        let t0 = Ticks::parse("2026-01-01T00:00:00Z").unwrap();
        let at = |s: i64| t0.checked_add(Span::from_secs(s)).unwrap();
        assert!(
            health.alive(at(10_000)).is_ok(),
            "alive before any loop ran"
        );
        health.beat("scheduler", SCHEDULER_SILENCE, t0);
        health.beat("otlp", DRAIN_SILENCE, t0);
        assert!(health.alive(at(120)).is_ok());
        let why = health.alive(at(121)).unwrap_err();
        assert!(why.starts_with("scheduler wedged"), "{why}");
        health.beat("scheduler", SCHEDULER_SILENCE, at(900));
        assert!(health.alive(at(900)).is_ok());
        let why = health.alive(at(901)).unwrap_err();
        assert!(why.starts_with("otlp wedged"), "{why}");
    }

    #[tokio::test]
    async fn the_probes_answer_503_until_the_state_is_right() {
        let health = Arc::new(Health::default());
        let state = || AdminState {
            metrics: None,
            health: health.clone(),
        };
        let ready = || async { readyz(State(state())).await.into_response().status() };
        assert_eq!(
            ready().await,
            StatusCode::SERVICE_UNAVAILABLE,
            "WAL not open"
        );
        health.set_wal_open();
        assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE, "not synced");
        health.set_resources_synced();
        assert_eq!(ready().await, StatusCode::OK);

        let alive = || async { healthz(State(state())).await.into_response().status() };
        assert_eq!(alive().await, StatusCode::OK);
        let long_ago = Ticks::now().checked_add(Span::from_secs(-3600)).unwrap();
        health.beat("scheduler", SCHEDULER_SILENCE, long_ago);
        assert_eq!(alive().await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
