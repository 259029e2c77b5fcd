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

pub mod events;
pub mod kube_requests;
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
    touch_at_start();
    Ok(handle)
}

/// Puts the families whose label values are known at start-up into `/metrics` at once, counters at
/// 0, so `rate()`, `increase()` and the alerts see the first event and a healthy instance never
/// reads as "no data". Families keyed by output are touched by each drain loop, those keyed by
/// exporter when the exporter appears (`status::gauges`); [`with_every_family`] lists the rest.
pub(crate) fn touch_at_start() {
    use metrics as m;
    ::metrics::counter!(m::EXPORTER_RESTARTS).increment(0);
    for (verb, resource, code) in m::KUBE_REQUESTS_AT_START {
        ::metrics::counter!(m::KUBE_REQUESTS, "verb" => verb, "resource" => resource, "code" => code)
            .increment(0);
    }
    for outcome in m::STATUS_PATCH_OUTCOMES {
        ::metrics::counter!(m::STATUS_PATCHES, "outcome" => outcome).increment(0);
    }
    ::metrics::counter!(m::STATUS_PRUNED).increment(0);
    for outcome in m::KUBE_EVENT_OUTCOMES {
        ::metrics::counter!(m::KUBE_EVENTS, "outcome" => outcome).increment(0);
    }
    ::metrics::gauge!(m::STATUS_PATCH_BACKLOG).set(0.0);
    // 0 until the Kubernetes source counts otherwise, so its alert never reads "no data" as fine.
    ::metrics::gauge!(m::EXPORTERS_STALE).set(0.0);
    for state in m::EXPORTER_STATES {
        ::metrics::gauge!(m::EXPORTERS, "state" => state).set(0.0);
    }
    refresh_process_gauges();
}

/// Whether `--tls-insecure-skip-verify` is on, for [`refresh_process_gauges`].
static TLS_INSECURE: AtomicBool = AtomicBool::new(false);

/// Sets the gauges that describe the process itself. Called at start-up and by every gauge refresh:
/// the recorder drops a gauge not set for [`GAUGE_IDLE`], and these never change.
pub(crate) fn refresh_process_gauges() {
    ::metrics::gauge!(metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let insecure = TLS_INSECURE.load(Ordering::Relaxed);
    ::metrics::gauge!(metrics::TLS_INSECURE_SKIP_VERIFY).set(if insecure { 1.0 } else { 0.0 });
}

/// `text` (a rendered `/metrics`) with `# HELP` and `# TYPE` lines added for every family of
/// [`metrics::ALL`] that has no series yet (one keyed by exporter while no exporter exists), so
/// every family is in `/metrics` from start-up with its type and help.
pub(crate) fn with_every_family(mut text: String) -> String {
    for m in metrics::ALL {
        if text.contains(&format!("# TYPE {} ", m.name)) {
            continue;
        }
        let kind = match m.kind {
            metrics::Kind::Counter => "counter",
            metrics::Kind::Gauge => "gauge",
            metrics::Kind::Histogram => "histogram",
        };
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n\n",
            name = m.name,
            help = m.help
        ));
    }
    text
}

/// Makes `--tls-insecure-skip-verify` impossible to miss: a warning at start-up and a gauge that
/// stays 1 in `/metrics` (0 otherwise, so an alert can be written on it).
pub(crate) fn tls_insecure_warning(insecure: bool) {
    TLS_INSECURE.store(insecure, Ordering::Relaxed);
    refresh_process_gauges();
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
            (StatusCode::OK, with_every_family(h.render()))
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

/// Unit tests' view of the metrics their code records: a recorder configured like the real one,
/// installed for the current thread (a `#[tokio::test]` runs every task there).
#[cfg(test)]
pub(crate) struct TestMetrics {
    handle: PrometheusHandle,
    _guard: ::metrics::LocalRecorderGuard<'static>,
}

#[cfg(test)]
impl TestMetrics {
    pub(crate) fn install() -> TestMetrics {
        let recorder: &'static metrics_exporter_prometheus::PrometheusRecorder = Box::leak(
            Box::new(recorder_builder().expect("recorder").build_recorder()),
        );
        TestMetrics {
            handle: recorder.handle(),
            _guard: ::metrics::set_default_local_recorder(recorder),
        }
    }

    /// The rendered `/metrics` text.
    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }

    /// Sum of the samples of `name` whose labels include every pair of `labels`; `None` if none.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.render();
        let mut found = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series, label_text) = match head.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (head, ""),
            };
            let matches = series == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            if matches && let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{ALL, Kind};

    #[test]
    fn every_family_is_in_metrics_from_start_up() {
        let text = with_every_family(render_with(|| {
            metrics::describe_all();
            touch_at_start();
        }));
        for m in ALL {
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert_eq!(
                text.matches(&format!("# TYPE {} {kind}\n", m.name)).count(),
                1,
                "{} missing, or listed twice:\n{text}",
                m.name
            );
        }
        // What start-up knows is there as a series, at 0.
        for line in [
            "adxexporter_status_patches_total{outcome=\"rejected\"} 0",
            "adxexporter_kube_requests_total{verb=\"patch\",resource=\"metricsexporters/status\",code=\"200\"} 0",
            "adxexporter_status_pruned_total 0",
            "adxexporter_kube_events_total{outcome=\"created\"} 0",
            "adxexporter_exporter_restarts_total 0",
            "adxexporter_status_patch_backlog 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

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
