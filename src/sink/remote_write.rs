//! Prometheus remote write 1.0 output (SPEC §7): a window's series are split into requests of at most
//! `max_request_bytes` uncompressed protobuf (series order kept, no series split), each encoded as a
//! `prometheus.WriteRequest`, compressed with snappy **block** format (the framed format gets a 400
//! `snappy: corrupt input`), and POSTed with the remote-write 0.1.0 headers.
//!
//! Encoding borrows the window: each request's bytes are the concatenation of its series' field-1
//! encodings, which is exactly what prost would produce for a `WriteRequest` holding those series, so
//! no series is cloned. The uncompressed buffer and the snappy state are reused across a window's requests.

use std::time::Duration;

use bytes::Bytes;
use super::http::Poster;
use super::retry::{Protocol, classify};
use super::split::{Chunk, pack};
use super::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT, Delivered, Disposition, PushFailure, PushResult,
    Sink, SinkError,
};
use crate::prompb::{TimeSeries, WriteRequest};

/// The `WriteRequest.timeseries` field number.
const TIMESERIES_TAG: u32 = 1;

/// Settings of the remote-write output.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// Full URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: url::Url,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Bound on one request's uncompressed protobuf size.
    pub max_request_bytes: usize,
}

impl RemoteWriteConfig {
    pub fn new(endpoint: url::Url) -> RemoteWriteConfig {
        RemoteWriteConfig {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// The remote-write output: holds one HTTP client for connection reuse.
#[derive(Debug, Clone)]
pub struct RemoteWriteSink {
    poster: Poster,
    max_request_bytes: usize,
}

impl RemoteWriteSink {
    pub fn new(config: RemoteWriteConfig) -> Result<RemoteWriteSink, SinkError> {
        if config.max_request_bytes < 1024 {
            return Err(SinkError::RequestLimitTooSmall {
                output: "remote_write",
                got: config.max_request_bytes,
            });
        }
        let poster = Poster::new(
            "remote_write",
            config.endpoint,
            config.timeout,
            "snappy",
            &[("x-prometheus-remote-write-version", "0.1.0")],
        )?;
        Ok(RemoteWriteSink {
            poster,
            max_request_bytes: config.max_request_bytes,
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        self.poster.endpoint()
    }
}

impl Sink for RemoteWriteSink {
    fn name(&self) -> &'static str {
        "remote_write"
    }

    async fn push_from(&self, window: &WriteRequest, first_request: usize) -> PushResult {
        let chunks = split_window(window, self.max_request_bytes);
        let mut encoder = RemoteWriteEncoder::default();
        let mut delivered = Delivered {
            window_requests: chunks.len(),
            ..Delivered::default()
        };
        for (k, chunk) in chunks.iter().enumerate().skip(first_request) {
            let series = window.timeseries.get(chunk.range.clone()).unwrap_or_default();
            if chunk.oversized {
                tracing::warn!(
                    output = "remote_write",
                    series = %series.first().map_or("", TimeSeries::metric_name),
                    bytes = chunk.bytes,
                    limit = self.max_request_bytes,
                    "one series is larger than max_request_bytes; sending it alone"
                );
                delivered.oversized_requests += 1;
            }
            let failure = |disposition, status| PushFailure {
                disposition,
                status,
                failed_request: k,
                window_requests: chunks.len(),
            };
            let body = match encoder.encode(series) {
                Ok(b) => b,
                Err(e) => {
                    let reason = Disposition::Permanent {
                        reason: "encode",
                        status: None,
                        body: e.to_string(),
                    };
                    return Err(failure(reason, None));
                }
            };
            let sent = self.poster.post(body).await;
            let text = sent.body_text();
            match classify(Protocol::RemoteWrite, &sent.attempt(&text)) {
                Disposition::Success => {
                    delivered.requests += 1;
                    delivered.samples += series.iter().map(|s| s.samples.len()).sum::<usize>();
                }
                other => return Err(failure(other, sent.status())),
            }
        }
        Ok(delivered)
    }
}

/// Why a request could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("snappy cannot compress a {0}-byte request (block format limit); lower max_request_bytes")]
    Snappy(usize, #[source] snap::Error),
}

/// Splits a window into requests of at most `max_bytes` uncompressed (see [`pack`]).
pub fn split_window(window: &WriteRequest, max_bytes: usize) -> Vec<Chunk> {
    pack(window.timeseries.len(), 0, max_bytes, |i, _| {
        window
            .timeseries
            .get(i)
            .map_or(0, |s| prost::encoding::message::encoded_len(TIMESERIES_TAG, s))
    })
}

/// Encodes series into snappy-compressed `WriteRequest` bodies, reusing its buffers between calls.
pub struct RemoteWriteEncoder {
    raw: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Default for RemoteWriteEncoder {
    fn default() -> Self {
        RemoteWriteEncoder {
            raw: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }
}

impl RemoteWriteEncoder {
    /// The uncompressed `WriteRequest` bytes holding `series`, left in an internal buffer.
    pub fn encode_raw(&mut self, series: &[TimeSeries]) -> &[u8] {
        self.raw.clear();
        for s in series {
            prost::encoding::message::encode(TIMESERIES_TAG, s, &mut self.raw);
        }
        &self.raw
    }

    /// The snappy (block format) body of a `WriteRequest` holding `series`.
    pub fn encode(&mut self, series: &[TimeSeries]) -> Result<Bytes, RemoteWriteError> {
        self.encode_raw(series);
        let mut out = vec![0; snap::raw::max_compress_len(self.raw.len())];
        let n = self
            .snappy
            .compress(&self.raw, &mut out)
            .map_err(|e| RemoteWriteError::Snappy(self.raw.len(), e))?;
        out.truncate(n);
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample};
    use prost::Message;

    fn series(name: &str, n: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![Label::new("__name__", name), Label::new("job", "x")],
            samples: (0..n)
                .map(|i| Sample {
                    value: i as f64,
                    timestamp: 1_700_000_000_000 + i as i64,
                })
                .collect(),
        }
    }

    #[test]
    fn encoding_a_slice_equals_prost_encoding_of_the_request() {
        let window = WriteRequest {
            timeseries: vec![series("a", 3), series("b", 0), series("c", 50)],
        };
        let mut enc = RemoteWriteEncoder::default();
        assert_eq!(enc.encode_raw(&window.timeseries), window.encode_to_vec());
        let body = enc.encode(&window.timeseries[1..]).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let back = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(back.timeseries, window.timeseries[1..]);
    }

    #[test]
    fn split_respects_the_limit_and_keeps_order() {
        let window = WriteRequest {
            timeseries: (0..100).map(|i| series(&format!("m{i}"), i % 7 + 1)).collect(),
        };
        let chunks = split_window(&window, 300);
        assert!(chunks.len() > 1);
        let mut enc = RemoteWriteEncoder::default();
        let mut all = Vec::new();
        for c in &chunks {
            let raw = enc.encode_raw(&window.timeseries[c.range.clone()]).to_vec();
            assert_eq!(raw.len(), c.bytes, "the estimate is exact for remote write");
            assert!(raw.len() <= 300);
            all.extend(WriteRequest::decode(raw.as_slice()).unwrap().timeseries);
        }
        assert_eq!(all, window.timeseries);
    }

    #[test]
    fn a_series_larger_than_the_limit_goes_alone() {
        let window = WriteRequest {
            timeseries: vec![series("small", 1), series("huge", 500), series("small2", 1)],
        };
        let chunks = split_window(&window, 1024);
        assert_eq!(
            chunks.iter().map(|c| (c.range.clone(), c.oversized)).collect::<Vec<_>>(),
            vec![(0..1, false), (1..2, true), (2..3, false)]
        );
    }
}
