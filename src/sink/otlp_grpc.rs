//! OTLP/gRPC metrics output (SPEC §7, `--otlp-grpc-endpoint`): the same `ExportMetricsServiceRequest`s
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
//! - [`channel`] is the one place the connection is configured: plaintext `http://` only for now
//!   (TLS and authentication are not implemented; `https://` is refused with a clear error).
//! - A gRPC server's default receive limit is 4 MiB: keep `--max-request-bytes` at or below it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::otlp::{OtlpEncoder, OtlpTemplate};
use super::otlp_proto::ExportMetricsServiceResponse;
use super::retry::{Disposition, classify_grpc};
use super::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT, Delivered, PushFailure, PushResult, Sink,
    SinkError, USER_AGENT,
};
use crate::prompb::{TimeSeries, WriteRequest};

/// The output's name in the WAL, metrics and `spec.outputs`.
pub const OTLP_GRPC_OUTPUT: &str = "otlp_grpc";
/// The OTLP metrics export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// How long to wait for a TCP connection before the attempt counts as failed (retryable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the OTLP/gRPC output.
#[derive(Debug, Clone)]
pub struct OtlpGrpcConfig {
    /// `http://host:port` of the receiver (the path, if any, is ignored by gRPC).
    pub endpoint: url::Url,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    /// Resource attributes: cluster labels already overlaid by `--add-resource-attributes`.
    pub resource_attributes: std::collections::BTreeMap<String, String>,
    /// gzip the request messages (gRPC message compression; receivers must accept `gzip`).
    pub gzip: bool,
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
        }
    }
}

/// The channel to the receiver: the single place where transport settings (and later TLS and
/// authentication) are decided. Lazy: nothing connects until the first export.
pub fn channel(config: &OtlpGrpcConfig) -> Result<Channel, SinkError> {
    let bad = |reason: String| SinkError::GrpcEndpoint {
        endpoint: config.endpoint.to_string(),
        reason,
    };
    if config.endpoint.scheme() != "http" {
        return Err(bad(format!(
            "scheme {:?} is not supported: TLS for OTLP/gRPC is not implemented yet, use http://HOST:PORT",
            config.endpoint.scheme()
        )));
    }
    let origin = config.endpoint.origin().ascii_serialization();
    let endpoint = Endpoint::from_shared(origin)
        .map_err(|e| bad(e.to_string()))?
        .user_agent(USER_AGENT)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.timeout);
    Ok(endpoint.connect_lazy())
}

/// The OTLP/gRPC output: one channel, the resource and scope prepared once.
#[derive(Debug, Clone)]
pub struct OtlpGrpcSink {
    grpc: tonic::client::Grpc<Channel>,
    template: OtlpTemplate,
    max_request_bytes: usize,
    timeout: Duration,
    endpoint: url::Url,
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
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    /// One `Export` call with an already-encoded request.
    async fn export(&self, body: Bytes) -> Result<ExportMetricsServiceResponse, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let mut request = tonic::Request::new(body);
        // Sent as `grpc-timeout`, so the server gives up when we do.
        request.set_timeout(self.timeout);
        let path = PathAndQuery::from_static(EXPORT_PATH);
        grpc.unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
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
            let disposition = match self.export(body).await {
                Ok(response) => {
                    delivered.rejected_points += rejected_points(&response);
                    Disposition::Success
                }
                Err(status) => classify_grpc(
                    status.code(),
                    retry_delay(status.details()),
                    status.message(),
                ),
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
    fn only_plaintext_endpoints_are_accepted_for_now() {
        let config = OtlpGrpcConfig::new(
            "https://collector:4317".parse().unwrap(),
            Default::default(),
        );
        let e = OtlpGrpcSink::new(config).unwrap_err().to_string();
        assert!(e.contains("TLS") && e.contains("http://"), "{e}");
    }
}
