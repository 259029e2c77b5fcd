//! Prometheus remote write 1.0 output (docs/design.md#remote-write): a window's series are split into requests of at most
//! `max_request_bytes` uncompressed protobuf (series order kept, no series split), each encoded as a
//! `prometheus.WriteRequest`, compressed with snappy **block** format (the framed format gets a 400
//! `snappy: corrupt input`), and POSTed with the remote-write 0.1.0 headers.
//!
//! Encoding borrows the window: each request's bytes are the concatenation of its series' field-1
//! encodings, written by a small direct encoder that produces exactly prost's bytes for a `WriteRequest`
//! holding those series (property-tested) at about 3× prost's speed, since lengths are plain arithmetic
//! instead of nested `encoded_len` walks. No series is cloned. The uncompressed buffer and the snappy
//! state are reused across a window's requests.
//!
//! The common case skips all of that: the WAL stores a window as the snappy block of this same
//! encoding, so when the whole window is one request (its plain size, read from the snappy header,
//! is within `max_request_bytes`, and the push starts at request 0) the stored bytes are POSTed as
//! they are ([`RemoteWriteSink::deliver_encoded`]). That is exactly the case where [`split_window`]
//! gives a single chunk, since a chunk's size is the sum of its series' exact encoded sizes; any
//! other window (split, resumed, or an old record without a sample count) is decoded and split as
//! before, so request boundaries and resume points keep their meaning.

use std::time::Duration;

use super::auth::OutputAuthConfig;
use super::http::{Poster, Request, Security, send_window};
use super::retry::Protocol;
use super::split::{Chunk, pack};
use super::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT, PushResult, Sink, SinkError};
use crate::prompb::encode::{metadata_len, nested_len, series_body_len};
use crate::prompb::{RemoteWriteEncoder, TimeSeries, WriteRequest};
use crate::tls::TlsConfig;
use crate::wal::{Compression, EncodedWindow, RecordHeader};
use bytes::Bytes;

/// Settings of the remote-write output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWriteConfig {
    /// Full URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: url::Url,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Bound on one request's uncompressed protobuf size.
    pub max_request_bytes: usize,
    /// Extra headers and credential.
    pub auth: OutputAuthConfig,
    pub tls: TlsConfig,
}

impl RemoteWriteConfig {
    pub fn new(endpoint: url::Url) -> RemoteWriteConfig {
        RemoteWriteConfig {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            auth: OutputAuthConfig::default(),
            tls: TlsConfig::default(),
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
            Security {
                auth: &config.auth,
                tls: &config.tls,
            },
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
        let encode = |_, chunk: &Chunk| {
            let series = window
                .timeseries
                .get(chunk.range.clone())
                .unwrap_or_default();
            Request {
                body: (encoder.encode_with_metadata(series, &window.metadata))
                    .map_err(|e| e.to_string()),
                samples: series.iter().map(|s| s.samples.len()).sum(),
                first_series: series.first().map_or("", TimeSeries::metric_name),
            }
        };
        send_window(
            &self.poster,
            Protocol::RemoteWrite,
            &chunks,
            first_request,
            self.max_request_bytes,
            encode,
            |_| 0,
        )
        .await
    }

    async fn deliver_encoded(
        &self,
        _header: &RecordHeader,
        window: &EncodedWindow,
        first_request: usize,
    ) -> Option<PushResult> {
        let (chunk, body) = self.stored_request(window, first_request)?;
        let request = |_, _: &Chunk| Request {
            body: body.clone(),
            samples: window.samples as usize,
            first_series: "",
        };
        Some(
            send_window(
                &self.poster,
                Protocol::RemoteWrite,
                std::slice::from_ref(&chunk),
                0,
                self.max_request_bytes,
                request,
                |_| 0,
            )
            .await,
        )
    }
}

impl RemoteWriteSink {
    /// The window's only request, built from its stored bytes, when [`split_window`] would make it
    /// exactly one request and the push starts there; `None` when it must be decoded and split.
    fn stored_request(
        &self,
        window: &EncodedWindow,
        first_request: usize,
    ) -> Option<(Chunk, Result<Bytes, String>)> {
        // No sample count (a record from before the envelope had one), an empty window, or one that
        // holds adxexporter's own `cumulative` field (never sent): decode.
        if first_request != 0 || window.samples == 0 || window.cumulative {
            return None;
        }
        let len = window.plain_len().ok()?;
        if len == 0 || len > self.max_request_bytes {
            return None;
        }
        let body = match window.compression {
            Compression::SnappyRaw => Ok(Bytes::copy_from_slice(&window.bytes)),
            Compression::None => RemoteWriteEncoder::default()
                .compress(&window.bytes)
                .map_err(|e| e.to_string()),
        };
        let chunk = Chunk {
            range: 0..0,
            bytes: len,
            oversized: false,
        };
        Some((chunk, body))
    }
}

/// Splits a window into requests of at most `max_bytes` uncompressed (see [`pack`]); every request
/// carries the window's metadata.
pub fn split_window(window: &WriteRequest, max_bytes: usize) -> Vec<Chunk> {
    let fixed = metadata_len(&window.metadata);
    pack(window.timeseries.len(), fixed, max_bytes, |i, _| {
        window
            .timeseries
            .get(i)
            .map_or(0, |s| nested_len(series_body_len(s)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample};
    use proptest::prelude::*;
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
            ..Default::default()
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
            timeseries: (0..100)
                .map(|i| series(&format!("m{i}"), i % 7 + 1))
                .collect(),
            ..Default::default()
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
            ..Default::default()
        };
        let chunks = split_window(&window, 1024);
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.range.clone(), c.oversized))
                .collect::<Vec<_>>(),
            vec![(0..1, false), (1..2, true), (2..3, false)]
        );
    }

    /// The window as the WAL stores it (`Wal::append`): snappy block of the encoding, or plain.
    fn stored(window: &WriteRequest) -> EncodedWindow {
        let plain = RemoteWriteEncoder::default()
            .encode_raw(&window.timeseries)
            .to_vec();
        let payload = crate::wal::record::encode_payload(&plain).unwrap();
        EncodedWindow {
            compression: payload.compression,
            bytes: payload.bytes.into_owned(),
            samples: window.sample_count() as u64,
            cumulative: false,
        }
    }

    fn sink(max_request_bytes: usize) -> RemoteWriteSink {
        let mut config = RemoteWriteConfig::new("http://127.0.0.1:9/api/v1/write".parse().unwrap());
        config.max_request_bytes = max_request_bytes;
        RemoteWriteSink::new(config).unwrap()
    }

    #[test]
    fn a_one_request_window_is_sent_as_stored_byte_for_byte() {
        let window = WriteRequest {
            timeseries: (0..50).map(|i| series(&format!("m{i}"), 3)).collect(),
            ..Default::default()
        };
        let stored = stored(&window);
        assert_eq!(stored.compression, Compression::SnappyRaw);
        let len = window.encoded_len();
        let (chunk, body) = sink(len).stored_request(&stored, 0).unwrap();
        assert_eq!(chunk.bytes, len);
        assert_eq!(split_window(&window, len).len(), 1);
        let want = RemoteWriteEncoder::default()
            .encode(&window.timeseries)
            .unwrap();
        assert_eq!(
            body.unwrap(),
            want,
            "the stored bytes are the encoder's body"
        );
    }

    #[test]
    fn a_plain_stored_window_is_compressed_like_the_encoder_does() {
        let window = WriteRequest {
            timeseries: vec![series("a", 1)],
            ..Default::default()
        };
        let stored = stored(&window);
        assert_eq!(stored.compression, Compression::None);
        let (_, body) = sink(1024).stored_request(&stored, 0).unwrap();
        let want = RemoteWriteEncoder::default()
            .encode(&window.timeseries)
            .unwrap();
        assert_eq!(body.unwrap(), want);
    }

    #[test]
    fn windows_that_split_resume_or_lack_a_count_are_decoded() {
        let window = WriteRequest {
            timeseries: (0..50).map(|i| series(&format!("m{i}"), 3)).collect(),
            ..Default::default()
        };
        let stored = stored(&window);
        let len = window.encoded_len();
        assert!(split_window(&window, len - 1).len() > 1);
        assert!(sink(len - 1).stored_request(&stored, 0).is_none(), "split");
        assert!(sink(len).stored_request(&stored, 1).is_none(), "resumed");
        let old = EncodedWindow {
            samples: 0,
            ..stored.clone()
        };
        assert!(sink(len).stored_request(&old, 0).is_none(), "no count");
        let running_totals = EncodedWindow {
            cumulative: true,
            ..stored.clone()
        };
        assert!(
            sink(len).stored_request(&running_totals, 0).is_none(),
            "a counter window holds our own field: never sent as stored"
        );
        let empty = self::stored(&WriteRequest::default());
        assert!(sink(len).stored_request(&empty, 0).is_none(), "empty");
    }

    fn arb_series() -> impl Strategy<Value = TimeSeries> {
        let label = ("[a-z_]{0,6}", "\\PC{0,8}").prop_map(|(n, v)| Label::new(n, v));
        let value = prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            any::<f64>()
        ];
        let timestamp = prop_oneof![Just(0i64), Just(-1i64), any::<i64>()];
        let sample = (value, timestamp).prop_map(|(value, timestamp)| Sample { value, timestamp });
        (
            proptest::collection::vec(label, 0..5),
            proptest::collection::vec(sample, 0..5),
        )
            .prop_map(|(labels, samples)| TimeSeries { labels, samples })
    }

    proptest! {
        #[test]
        fn direct_encoding_is_byte_identical_to_prost(series in proptest::collection::vec(arb_series(), 0..6)) {
            let window = WriteRequest::new(series);
            let mut enc = RemoteWriteEncoder::default();
            let want = window.encode_to_vec();
            prop_assert_eq!(enc.encode_raw(&window.timeseries), want.as_slice());
            let chunks = split_window(&window, usize::MAX);
            prop_assert_eq!(chunks.iter().map(|c| c.bytes).sum::<usize>(), window.encoded_len());
        }
    }
}
