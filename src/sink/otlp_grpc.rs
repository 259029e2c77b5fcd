//! OTLP/gRPC metrics output (docs/design.md#otlp-grpc, `--otlp-grpc-endpoint`): the same `ExportMetricsServiceRequest`s
//! as OTLP/HTTP — planned and encoded by [`OtlpTemplate`]/[`OtlpEncoder`], byte for byte — sent as the
//! unary call `opentelemetry.proto.collector.metrics.v1.MetricsService/Export` over one tonic
//! [`Channel`] (HTTP/2, reused, reconnecting), gzip-compressed.
//!
//! - The call is written by hand (no generated client, no `protoc`): a [`RawCodec`] writes the
//!   already-encoded request bytes and decodes the response with the hand-written prost subset.
//! - Requests go out in order; the push stops at the first failing one and names it, so a retry
//!   resumes there (same contract as the HTTP sinks, see [`crate::sink`]).
//! - The answer's gRPC status is classified by [`crate::sink::retry::classify_grpc`] (the OTLP
//!   spec's table); a `google.rpc.RetryInfo` in the status details is the server's retry delay.
//! - [`channel`] is the one place the connection is configured: `http://` is plaintext HTTP/2,
//!   `https://` is TLS (ALPN `h2`) with the process's [`TlsConfig`] — the same roots, `--tls-ca-file`,
//!   client certificate and `--tls-insecure-skip-verify` as the HTTP outputs — through a rustls
//!   connector (tonic's own TLS cannot skip verification).
//! - Every call carries the `--otlp-*` headers and credential as gRPC metadata ([`OutputAuth`]).
//!   `UNAUTHENTICATED` makes the credential renew (Azure) and the call go once more, as a 401 does
//!   for the HTTP outputs; a refusal that stands is dead-lettered naming the identity.
//! - A gRPC server's default receive limit is 4 MiB: keep `--max-request-bytes` at or below it.

use std::time::Duration;

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use hyper_util::client::legacy::connect::HttpConnector;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::auth::{OutputAuth, OutputAuthConfig};
use super::otlp::{OtlpEncoder, OtlpTemplate};
use super::otlp_proto::ExportMetricsServiceResponse;
use super::retry::{Disposition, classify_grpc, grpc_code_name};
use super::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT, Delivered, PushFailure, PushResult, Sink,
    SinkError, USER_AGENT,
};
use crate::prompb::{TimeSeries, WriteRequest};
use crate::tls::{Peer, TlsConfig, error_chain};

/// The output's name in the WAL, metrics and `spec.outputs`.
pub(crate) const OTLP_GRPC_OUTPUT: &str = "otlp_grpc";
/// The OTLP metrics export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// How long to wait for a TCP connection before the attempt counts as failed (retryable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the OTLP/gRPC output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpGrpcConfig {
    /// `http://host:port` or `https://host:port` of the receiver (a path is ignored by gRPC).
    pub endpoint: url::Url,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    /// Resource attributes: cluster labels already overlaid by `--add-resource-attributes`.
    pub resource_attributes: std::collections::BTreeMap<String, String>,
    /// gzip the request messages (gRPC message compression; receivers must accept `gzip`).
    pub gzip: bool,
    /// Metadata and credential of every call (the `--otlp-*` flags).
    pub auth: OutputAuthConfig,
    pub tls: TlsConfig,
}

impl OtlpGrpcConfig {
    pub fn new(
        endpoint: url::Url,
        resource_attributes: std::collections::BTreeMap<String, String>,
    ) -> OtlpGrpcConfig {
        OtlpGrpcConfig {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            resource_attributes,
            gzip: true,
            auth: OutputAuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// The channel to the receiver: the single place where transport settings are decided. Lazy:
/// nothing connects until the first export.
pub fn channel(config: &OtlpGrpcConfig) -> Result<Channel, SinkError> {
    let bad = |reason: String| SinkError::GrpcEndpoint {
        endpoint: config.endpoint.to_string(),
        reason,
    };
    if !matches!(config.endpoint.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not supported: use http://HOST:PORT or https://HOST:PORT",
            config.endpoint.scheme()
        )));
    }
    // tonic sets these on its own connector; ours replaces it.
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.tls.rustls_config(Peer::Output)?)
        .https_or_http()
        .enable_http2()
        .wrap_connector(tcp);
    let origin = config.endpoint.origin().ascii_serialization();
    let endpoint = Endpoint::from_shared(origin)
        .map_err(|e| bad(e.to_string()))?
        .user_agent(USER_AGENT)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.timeout);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The OTLP/gRPC output: one channel, the resource and scope prepared once.
#[derive(Debug, Clone)]
pub struct OtlpGrpcSink {
    grpc: tonic::client::Grpc<Channel>,
    template: OtlpTemplate,
    max_request_bytes: usize,
    timeout: Duration,
    endpoint: url::Url,
    auth: Arc<OutputAuth>,
}

/// What one Export call came back with.
enum Answer {
    Accepted(ExportMetricsServiceResponse),
    /// A gRPC error status, and the credential generation the call carried (for a renewal).
    Refused {
        status: Status,
        generation: u64,
    },
}

impl OtlpGrpcSink {
    /// Builds the sink; the gzip level of the template is unused (gRPC compresses the message).
    pub fn new(config: OtlpGrpcConfig) -> Result<OtlpGrpcSink, SinkError> {
        if config.max_request_bytes < 1024 {
            return Err(SinkError::RequestLimitTooSmall {
                output: OTLP_GRPC_OUTPUT,
                got: config.max_request_bytes,
            });
        }
        let template = OtlpTemplate::new(&config.resource_attributes, 0)?;
        config
            .auth
            .warn_if_plaintext(OTLP_GRPC_OUTPUT, &config.endpoint);
        let auth = Arc::new(OutputAuth::new(
            OTLP_GRPC_OUTPUT,
            &config.auth,
            &config.tls,
        )?);
        let mut grpc = tonic::client::Grpc::new(channel(&config)?)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(super::MAX_RESPONSE_BODY);
        if config.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpGrpcSink {
            grpc,
            template,
            max_request_bytes: config.max_request_bytes,
            timeout: config.timeout,
            endpoint: config.endpoint,
            auth,
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    /// Exports one already-encoded request; after `UNAUTHENTICATED`, once more if the credential
    /// could be renewed. Anything but acceptance comes back classified.
    async fn send(&self, body: Bytes) -> Result<ExportMetricsServiceResponse, Disposition> {
        let mut answer = self.send_once(body.clone()).await?;
        if let Answer::Refused { status, generation } = &answer
            && status.code() == Code::Unauthenticated
            && self.auth.renew(*generation, "UNAUTHENTICATED").await
        {
            answer = self.send_once(body).await?;
        }
        match answer {
            Answer::Accepted(response) => Ok(response),
            Answer::Refused { status, .. } => Err(self.classify(&status)),
        }
    }

    /// One `Export` call with the current credentials as metadata. Credentials that cannot be read
    /// are retried later, as for the HTTP outputs.
    async fn send_once(&self, body: Bytes) -> Result<Answer, Disposition> {
        let auth = self.auth.headers().await.map_err(|e| {
            tracing::warn!(output = OTLP_GRPC_OUTPUT, "{e}");
            Disposition::Retry {
                after: None,
                reason: "credentials",
            }
        })?;
        let mut grpc = self.grpc.clone();
        if let Err(e) = grpc.ready().await {
            let status = Status::unavailable(format!("channel not ready: {e}"));
            return Ok(Answer::Refused {
                status,
                generation: auth.generation,
            });
        }
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = MetadataMap::from_headers(auth.headers);
        // Sent as `grpc-timeout`, so the server gives up when we do.
        request.set_timeout(self.timeout);
        let path = PathAndQuery::from_static(EXPORT_PATH);
        Ok(match grpc.unary(request, path, RawCodec).await {
            Ok(response) => Answer::Accepted(response.into_inner()),
            Err(status) => Answer::Refused {
                status,
                generation: auth.generation,
            },
        })
    }

    /// The retry rule for a refused call. A failure on our side of the connection (the status
    /// carries a transport error as its source: refused, TLS handshake, reset) is retried whatever
    /// code tonic gave it — some resets come as `UNKNOWN`, which the OTLP table makes permanent —
    /// and its cause is logged, which the status message alone ("transport error") does not give.
    /// A refusal of our credentials names the identity (never a secret).
    fn classify(&self, status: &Status) -> Disposition {
        let local = std::error::Error::source(status);
        if let Some(source) = local {
            tracing::warn!(
                output = OTLP_GRPC_OUTPUT,
                endpoint = %self.endpoint,
                code = grpc_code_name(status.code()),
                cause = %error_chain(source),
                "cannot reach the receiver: {}",
                status.message()
            );
        }
        match classify_grpc(
            status.code(),
            retry_delay(status.details()),
            status.message(),
        ) {
            Disposition::Permanent { .. } if local.is_some() => Disposition::Retry {
                after: None,
                reason: "connection_broken",
            },
            Disposition::Permanent {
                reason: reason @ "unauthorized",
                status: code,
                body,
            } => Disposition::Permanent {
                reason,
                status: code,
                body: format!("the receiver refused {}: {body}", self.auth.describe()),
            },
            other => other,
        }
    }
}

impl Sink for OtlpGrpcSink {
    fn name(&self) -> &'static str {
        OTLP_GRPC_OUTPUT
    }

    async fn push_from(&self, window: &WriteRequest, first_request: usize) -> PushResult {
        let plan = self.template.plan(window, self.max_request_bytes);
        let mut encoder = OtlpEncoder::new(&self.template);
        let mut delivered = Delivered {
            window_requests: plan.chunks.len(),
            ..Delivered::default()
        };
        for (k, chunk) in plan.chunks.iter().enumerate().skip(first_request) {
            let order = plan.order.get(chunk.range.clone()).unwrap_or_default();
            let series = || order.iter().filter_map(|&i| window.timeseries.get(i));
            if chunk.oversized {
                tracing::warn!(
                    output = OTLP_GRPC_OUTPUT,
                    series = series().next().map_or("", TimeSeries::metric_name),
                    bytes = chunk.bytes,
                    limit = self.max_request_bytes,
                    "one series is larger than max_request_bytes; sending it alone"
                );
                delivered.oversized_requests += 1;
            }
            let body = Bytes::copy_from_slice(encoder.encode_raw(window, order));
            let disposition = match self.send(body).await {
                Ok(response) => {
                    delivered.rejected_points += rejected_points(&response);
                    Disposition::Success
                }
                Err(disposition) => disposition,
            };
            if disposition != Disposition::Success {
                return Err(PushFailure {
                    disposition,
                    status: None,
                    failed_request: k,
                    window_requests: plan.chunks.len(),
                });
            }
            delivered.requests += 1;
            delivered.samples += series().map(|s| s.samples.len()).sum::<usize>();
        }
        Ok(delivered)
    }
}

/// Logs and returns `partial_success.rejected_data_points` (not retried, as for OTLP/HTTP).
fn rejected_points(response: &ExportMetricsServiceResponse) -> u64 {
    let Some(partial) = &response.partial_success else {
        return 0;
    };
    if partial.rejected_data_points != 0 || !partial.error_message.is_empty() {
        tracing::warn!(
            output = OTLP_GRPC_OUTPUT,
            rejected_data_points = partial.rejected_data_points,
            error_message = %partial.error_message,
            "receiver accepted the request partially; rejected points are not retried"
        );
    }
    u64::try_from(partial.rejected_data_points).unwrap_or(0)
}

/// `google.rpc.Status` (the `grpc-status-details-bin` trailer), only what we read.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `RetryInfo.retry_delay` in a status' details, if the server sent one (negative → zero).
pub fn retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(info.value.as_slice())
        .ok()?
        .retry_delay
        .unwrap_or_default();
    let seconds = u64::try_from(delay.seconds).unwrap_or(0);
    let nanos = u32::try_from(delay.nanos).unwrap_or(0).min(999_999_999);
    Some(Duration::new(seconds, nanos))
}

/// Writes pre-encoded request bytes; decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportMetricsServiceResponse>, Status> {
        // An undecodable success answer is still a success (as for OTLP/HTTP): nothing rejected.
        let response = ExportMetricsServiceResponse::decode(src.copy_to_bytes(src.remaining()))
            .unwrap_or_default();
        Ok(Some(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(type_url: &str, seconds: i64, nanos: i32) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration { seconds, nanos }),
        };
        RpcStatus {
            details: vec![
                ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                    value: vec![],
                },
                ProtoAny {
                    type_url: type_url.into(),
                    value: info.encode_to_vec(),
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn retry_info_is_read_from_the_status_details() {
        let d = details("type.googleapis.com/google.rpc.RetryInfo", 3, 500_000_000);
        assert_eq!(retry_delay(&d), Some(Duration::from_millis(3500)));
        assert_eq!(
            retry_delay(&details("type.googleapis.com/google.rpc.RetryInfo", -2, -1)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_delay(&details("type.googleapis.com/google.rpc.Help", 3, 0)),
            None
        );
        assert_eq!(retry_delay(&[]), None);
        assert_eq!(retry_delay(&[0xff, 0xff]), None, "garbage is ignored");
    }

    #[test]
    fn only_http_and_https_endpoints_are_accepted() {
        let config = OtlpGrpcConfig::new(
            "unix:///run/collector.sock".parse().unwrap(),
            Default::default(),
        );
        let e = OtlpGrpcSink::new(config).unwrap_err().to_string();
        assert!(e.contains("https://HOST:PORT"), "{e}");
    }
}
