//! Outputs (docs/design.md#outputs): Prometheus remote write 1.0, OTLP/HTTP, OTLP/gRPC ([`otlp_grpc`]) and the
//! Prometheus scrape page ([`scrape`]), each a [`Sink`] that delivers one window's [`WriteRequest`]
//! and reports precisely what happened so the drain loop (WAL cursor, retry state, dead letters) can
//! act on it. Each is a named WAL output with its own cursor, so any combination runs at once.
//!
//! Flow inside a push: [`split`] cuts the window into requests none larger than `max_request_bytes`
//! (uncompressed protobuf), never splitting a series; each request is encoded (prompb + snappy block, or
//! OTLP + gzip), POSTed with [`http`], and the answer is classified by [`retry::classify`].
//! Requests go out in order and the push stops at the first request that does not succeed.
//!
//! Contract with the drain loop:
//! - [`Delivered`]: every request of the window was accepted (OTLP partial rejections are counted in
//!   `rejected_points`, logged, and not retried).
//! - [`PushFailure`] with [`Disposition::Retry`]: push again later (after [`crate::backoff::next_delay`]) with
//!   [`Sink::push_from`] at `failed_request`, so accepted requests are not re-sent. Re-sending them is
//!   **not** harmless on Prometheus: 2.42 accepts an identical duplicate only for a series' newest sample;
//!   any older one, even identical, is `400 out of order sample` and rolls back the whole request
//!   (measured in `tests/sink_remote_write.rs`). VictoriaMetrics and OTLP receivers accept re-sends. If the
//!   resume point is lost (crash), a whole-window resend to Prometheus will be dead-lettered although the
//!   data is stored. The drain loop never caps attempts (a retryable answer is retried until it
//!   changes, and the backlog and `adxexporter_push_retries_total` show it): Prometheus 2.42 answers
//!   500 (retryable) to some bad data (duplicate label names, `too old sample`), which then waits in
//!   the WAL until an operator purges it (see the push-failing runbook).
//! - [`PushFailure`] with [`Disposition::Permanent`]: dead-letter the window with the status and the
//!   (capped) response body; requests before `failed_request` were delivered.
//!
//! Nothing buffers unboundedly: request bodies are bounded by the split (except a single series larger
//! than the limit, which goes alone and is logged), response bodies are read up to [`MAX_RESPONSE_BODY`].

pub mod auth;
pub mod http;
pub mod otlp;
pub(crate) mod otlp_grpc;
pub(crate) mod otlp_proto;
mod otlp_typed;
pub mod remote_write;
pub mod retry;
pub mod scrape;
pub mod split;

use std::future::Future;
use std::sync::Arc;

use crate::prompb::WriteRequest;
use crate::wal::{EncodedWindow, RecordHeader};
pub use otlp::{OtlpConfig, OtlpSink};
pub use otlp_grpc::{OtlpGrpcConfig, OtlpGrpcSink};
pub use remote_write::{RemoteWriteConfig, RemoteWriteSink};
pub use retry::{Disposition, Protocol};
pub use scrape::{ScrapeConfig, ScrapePages, ScrapeSink};

/// Default bound on one request's uncompressed protobuf size.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;
/// Default per-request timeout (connect + send + response).
pub(crate) const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How much of a response body is kept (for dead-letter reasons and OTLP partial-success decoding).
pub const MAX_RESPONSE_BODY: usize = 64 << 10;
/// `User-Agent` of every push.
pub const USER_AGENT: &str = concat!("adxexporter/", env!("CARGO_PKG_VERSION"));

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot build the HTTP client for the {output} output: {source}")]
    Client {
        output: &'static str,
        source: reqwest::Error,
    },
    #[error("max_request_bytes for the {output} output must be at least 1 KiB, got {got}")]
    RequestLimitTooSmall { output: &'static str, got: usize },
    #[error("gzip level for the OTLP output must be 0..=9, got {0}")]
    GzipLevel(u32),
    #[error("--otlp-grpc-endpoint {endpoint}: {reason}")]
    GrpcEndpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::OutputAuthError),
}

/// A window fully delivered (from `first_request` on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP requests this push sent (all accepted).
    pub requests: usize,
    /// How many requests the whole window splits into.
    pub window_requests: usize,
    /// Samples (OTLP: data points) this push sent.
    pub samples: usize,
    /// OTLP `partial_success.rejected_data_points` summed over the requests (always 0 for remote write).
    pub rejected_points: u64,
    /// Requests that exceed `max_request_bytes` because they hold one series larger than the limit.
    pub oversized_requests: usize,
}

/// A window not (fully) delivered: what to do with it, and where the push stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct PushFailure {
    /// [`Disposition::Retry`] or [`Disposition::Permanent`], never `Success`.
    pub disposition: Disposition,
    /// The HTTP status of the failing answer (`None` for transport and local failures), for metrics.
    pub status: Option<u16>,
    /// 0-based index of the request that failed; the ones before it were accepted.
    pub failed_request: usize,
    /// How many requests the whole window splits into.
    pub window_requests: usize,
}

/// The result of pushing one window.
pub type PushResult = Result<Delivered, PushFailure>;

/// One output. A trait so the drain loop can be tested with a fake sink.
pub trait Sink: Send + Sync {
    /// Short name for metrics labels and logs: `remote_write`, `otlp`.
    fn name(&self) -> &'static str;

    /// Pushes requests `first_request..` of one window (labels sorted by name, samples of a series in
    /// time order). The split is deterministic for a given window and `max_request_bytes`, so a retry
    /// can resume at [`PushFailure::failed_request`] instead of re-sending accepted requests.
    fn push_from(
        &self,
        window: &WriteRequest,
        first_request: usize,
    ) -> impl Future<Output = PushResult> + Send;

    /// Pushes a whole window.
    fn push(&self, window: &WriteRequest) -> impl Future<Output = PushResult> + Send {
        self.push_from(window, 0)
    }

    /// What the drain loop calls: the WAL record's header (which exporter, which window) and the
    /// window, owned so a sink can hand it to a blocking thread. Push outputs ignore the header; the
    /// scrape page keys its state by exporter.
    fn deliver(
        &self,
        header: &RecordHeader,
        window: Arc<WriteRequest>,
        first_request: usize,
    ) -> impl Future<Output = PushResult> + Send {
        let _ = header;
        async move { self.push_from(&window, first_request).await }
    }

    /// What the drain loop tries first: push requests `first_request..` of the window straight from
    /// its stored bytes, without decoding them. `None` means "decode it and call [`Sink::deliver`]":
    /// the default, and remote write's answer unless the stored bytes are exactly its one request.
    fn deliver_encoded(
        &self,
        header: &RecordHeader,
        window: &EncodedWindow,
        first_request: usize,
    ) -> impl Future<Output = Option<PushResult>> + Send {
        let _ = (header, window, first_request);
        async { None }
    }
}

/// The configured outputs, as one concrete type the wiring can hold in a `Vec`.
pub enum Output {
    RemoteWrite(RemoteWriteSink),
    Otlp(OtlpSink),
    OtlpGrpc(OtlpGrpcSink),
    Scrape(ScrapeSink),
}

impl Sink for Output {
    fn name(&self) -> &'static str {
        match self {
            Output::RemoteWrite(s) => s.name(),
            Output::Otlp(s) => s.name(),
            Output::OtlpGrpc(s) => s.name(),
            Output::Scrape(s) => s.name(),
        }
    }

    async fn push_from(&self, window: &WriteRequest, first_request: usize) -> PushResult {
        match self {
            Output::RemoteWrite(s) => s.push_from(window, first_request).await,
            Output::Otlp(s) => s.push_from(window, first_request).await,
            Output::OtlpGrpc(s) => s.push_from(window, first_request).await,
            Output::Scrape(s) => s.push_from(window, first_request).await,
        }
    }

    async fn deliver(
        &self,
        header: &RecordHeader,
        window: Arc<WriteRequest>,
        first_request: usize,
    ) -> PushResult {
        match self {
            Output::Scrape(s) => s.deliver(header, window, first_request).await,
            other => other.push_from(&window, first_request).await,
        }
    }

    async fn deliver_encoded(
        &self,
        header: &RecordHeader,
        window: &EncodedWindow,
        first_request: usize,
    ) -> Option<PushResult> {
        match self {
            Output::RemoteWrite(s) => s.deliver_encoded(header, window, first_request).await,
            Output::Otlp(_) | Output::OtlpGrpc(_) | Output::Scrape(_) => None,
        }
    }
}
pub mod drain;
