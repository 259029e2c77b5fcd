//! The WAL's on-disk values: hand-written prost messages (field numbers are the format; never reuse
//! one) and the payload codec. Pure: no IO, so every byte layout is unit-tested here.
//!
//! Payload = the prost-encoded `prompb::WriteRequest`, compressed with snappy raw (block) format —
//! the exact body Prometheus remote write POSTs — or kept plain when snappy saves less than 10%
//! (the envelope's `compression` says which), and guarded by a CRC-32 because redb verifies its
//! page checksums only when it repairs a file, not on every read.

use std::borrow::Cow;

use prost::Message;

use crate::prompb::WriteRequest;

/// Version of [`RecordEnvelope`] / [`DeadLetterEnvelope`] this code writes and understands.
pub(crate) const RECORD_VERSION: u32 = 1;

/// Refuse to inflate a payload claiming more than this: a corrupt length must not allocate the heap away.
const MAX_DECOMPRESSED_BYTES: usize = 1 << 30;

/// How the payload bytes are compressed (envelope field 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Compression {
    /// The payload is the plain protobuf: written when snappy saves less than 10%.
    None = 0,
    /// Snappy block format (`snap::raw`), as remote write sends it.
    SnappyRaw = 1,
}

/// Header of one record, table `records`. The payload bytes live in table `payloads` (chunked, same
/// uid and window) so scans (stats, next_pending) never read payload pages.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RecordEnvelope {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(string, tag = "2")]
    pub exporter_uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(int64, tag = "5")]
    pub generation: i64,
    /// Kusto ticks, inclusive.
    #[prost(int64, tag = "6")]
    pub window_start: i64,
    /// Kusto ticks, exclusive.
    #[prost(int64, tag = "7")]
    pub window_end: i64,
    /// Kusto ticks when the record was appended.
    #[prost(int64, tag = "8")]
    pub created: i64,
    #[prost(enumeration = "Compression", tag = "9")]
    pub compression: i32,
    /// Outputs this record must reach; it leaves the WAL when none of them still has it pending.
    #[prost(string, repeated, tag = "10")]
    pub outputs: Vec<String>,
    /// Length of the stored (compressed) payload.
    #[prost(uint64, tag = "11")]
    pub payload_len: u64,
    /// CRC-32 (IEEE) of the stored payload.
    #[prost(fixed32, tag = "12")]
    pub payload_crc32: u32,
    /// Samples in the payload, so remote write can send the stored bytes without decoding them and
    /// still count what it delivered (added compatibly in v1: absent = 0 = unknown).
    #[prost(uint64, tag = "13")]
    pub samples: u64,
    /// A counter or histogram window: the payload holds adxexporter's `cumulative` field, so it is
    /// never sent as stored (added compatibly in v1: absent = false).
    #[prost(bool, tag = "14")]
    pub cumulative: bool,
}

/// Delivery state of one (output, record) still to be delivered, table `pending`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PendingState {
    #[prost(uint32, tag = "1")]
    pub attempts: u32,
    /// Kusto ticks; the drain loop leaves the record alone before this instant.
    #[prost(int64, tag = "2")]
    pub next_attempt_at: i64,
    #[prost(string, tag = "3")]
    pub last_error: String,
    /// Requests of the window this output already accepted (added compatibly in v1: absent = 0).
    #[prost(uint32, tag = "4")]
    pub resume_from: u32,
}

/// One dead letter, table `dead_letters`; its payload copy lives in `payloads` under scope = output.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeadLetterEnvelope {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(string, tag = "2")]
    pub output: String,
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Response body of the refusing endpoint, capped at [`MAX_BODY_BYTES`].
    #[prost(string, tag = "4")]
    pub body: String,
    #[prost(int64, tag = "5")]
    pub dead_lettered_at: i64,
    #[prost(uint32, tag = "6")]
    pub attempts: u32,
    #[prost(message, optional, tag = "7")]
    pub record: Option<RecordEnvelope>,
    /// The request the output refused; the ones before it were accepted, so a requeue resumes here
    /// (added compatibly in v1: absent = 0, the whole window again).
    #[prost(uint32, tag = "8")]
    pub failed_request: u32,
}

/// Per-exporter state, table `exporters`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExporterState {
    /// End (exclusive, Kusto ticks) of the newest appended window.
    #[prost(int64, tag = "1")]
    pub watermark: i64,
    /// The resource was deleted: drop this row once its last record leaves.
    #[prost(bool, tag = "2")]
    pub forgotten: bool,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "4")]
    pub name: String,
    /// A backfill's outputs that refused its windows for good (output → why), added compatibly in
    /// v1 (docs/design.md#backfill).
    #[prost(btree_map = "string, string", tag = "5")]
    pub failed_outputs: std::collections::BTreeMap<String, String>,
}

/// Longest response body / error text kept, so a chatty endpoint cannot bloat the store.
pub(crate) const MAX_BODY_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("envelope does not decode: {0}")]
    Envelope(String),
    #[error(
        "envelope version {found} is newer than {RECORD_VERSION}, the newest this build understands"
    )]
    VersionTooNew { found: u32 },
    #[error("payload length {found} differs from the {expected} bytes the envelope records")]
    PayloadLength { expected: u64, found: u64 },
    #[error("payload checksum {found:#010x} differs from the envelope's {expected:#010x}")]
    PayloadChecksum { expected: u32, found: u32 },
    #[error("unknown payload compression {0}")]
    UnknownCompression(i32),
    #[error("payload does not compress: {0}")]
    Compress(String),
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("payload is not a WriteRequest: {0}")]
    WriteRequest(String),
}

/// An encoded `WriteRequest` as it is stored: compressed or not, and the CRC-32 of the stored bytes.
#[derive(Debug)]
pub(crate) struct StoredPayload<'a> {
    pub compression: Compression,
    pub bytes: Cow<'a, [u8]>,
    pub crc32: u32,
}

/// Compress an encoded `WriteRequest` for storage; kept plain ([`Compression::None`]) when snappy
/// saves less than a tenth, since such bytes cost more to inflate on every read than they save.
pub(crate) fn encode_payload(write_request: &[u8]) -> Result<StoredPayload<'_>, RecordError> {
    let compressed = snap::raw::Encoder::new()
        .compress_vec(write_request)
        .map_err(|e| RecordError::Compress(e.to_string()))?;
    let (compression, bytes) = if worth_compressing(write_request.len(), compressed.len()) {
        (Compression::SnappyRaw, Cow::Owned(compressed))
    } else {
        (Compression::None, Cow::Borrowed(write_request))
    };
    let crc32 = crc32fast::hash(&bytes);
    Ok(StoredPayload {
        compression,
        bytes,
        crc32,
    })
}

/// Snappy output at most 90% of the input.
fn worth_compressing(plain: usize, compressed: usize) -> bool {
    compressed.saturating_mul(10) <= plain.saturating_mul(9)
}

/// Check stored payload bytes against the length and CRC their envelope records.
pub(crate) fn verify_payload(envelope: &RecordEnvelope, stored: &[u8]) -> Result<(), RecordError> {
    let found_len = stored.len() as u64;
    if found_len != envelope.payload_len {
        return Err(RecordError::PayloadLength {
            expected: envelope.payload_len,
            found: found_len,
        });
    }
    let found = crc32fast::hash(stored);
    if found != envelope.payload_crc32 {
        return Err(RecordError::PayloadChecksum {
            expected: envelope.payload_crc32,
            found,
        });
    }
    Ok(())
}

/// Verify, decompress and decode stored payload bytes.
pub(crate) fn decode_payload(
    envelope: &RecordEnvelope,
    stored: &[u8],
) -> Result<WriteRequest, RecordError> {
    verified_window(envelope, stored.to_vec())?.decode()
}

/// A record's payload as stored, already checked against its envelope (length, CRC, known
/// compression): what the drain hands an output, which may send it as it is (remote write POSTs the
/// snappy bytes) or [`decode`](EncodedWindow::decode) it.
#[derive(Debug, Clone)]
pub struct EncodedWindow {
    pub compression: Compression,
    pub bytes: Vec<u8>,
    /// Samples in the window; 0 also for records written before the envelope recorded it.
    pub samples: u64,
    /// The payload holds running totals and adxexporter's own `cumulative` field.
    pub cumulative: bool,
}

impl EncodedWindow {
    /// The plain protobuf `WriteRequest` bytes.
    pub fn plain(&self) -> Result<Cow<'_, [u8]>, RecordError> {
        Ok(match self.compression {
            Compression::SnappyRaw => Cow::Owned(decompress(&self.bytes)?),
            Compression::None => Cow::Borrowed(&self.bytes),
        })
    }

    /// Length of the plain protobuf, read from the snappy header without inflating anything.
    pub(crate) fn plain_len(&self) -> Result<usize, RecordError> {
        match self.compression {
            Compression::SnappyRaw => snap::raw::decompress_len(&self.bytes)
                .map_err(|e| RecordError::Decompress(e.to_string())),
            Compression::None => Ok(self.bytes.len()),
        }
    }

    pub fn decode(&self) -> Result<WriteRequest, RecordError> {
        WriteRequest::decode(&*self.plain()?).map_err(|e| RecordError::WriteRequest(e.to_string()))
    }
}

/// Check stored payload bytes against their envelope and keep them with what reading them needs.
pub(crate) fn verified_window(
    envelope: &RecordEnvelope,
    stored: Vec<u8>,
) -> Result<EncodedWindow, RecordError> {
    verify_payload(envelope, &stored)?;
    let compression = Compression::try_from(envelope.compression)
        .map_err(|_| RecordError::UnknownCompression(envelope.compression))?;
    Ok(EncodedWindow {
        compression,
        bytes: stored,
        samples: envelope.samples,
        cumulative: envelope.cumulative,
    })
}

fn decompress(stored: &[u8]) -> Result<Vec<u8>, RecordError> {
    let len =
        snap::raw::decompress_len(stored).map_err(|e| RecordError::Decompress(e.to_string()))?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(RecordError::Decompress(format!(
            "claims {len} bytes, more than the {MAX_DECOMPRESSED_BYTES} allowed"
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(stored)
        .map_err(|e| RecordError::Decompress(e.to_string()))
}

pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<RecordEnvelope, RecordError> {
    let envelope =
        RecordEnvelope::decode(bytes).map_err(|e| RecordError::Envelope(e.to_string()))?;
    check_version(envelope.version)?;
    Ok(envelope)
}

pub(crate) fn decode_dead_letter(bytes: &[u8]) -> Result<DeadLetterEnvelope, RecordError> {
    let dead =
        DeadLetterEnvelope::decode(bytes).map_err(|e| RecordError::Envelope(e.to_string()))?;
    check_version(dead.version)?;
    if let Some(record) = &dead.record {
        check_version(record.version)?;
    }
    Ok(dead)
}

pub(crate) fn decode_pending(bytes: &[u8]) -> Result<PendingState, RecordError> {
    PendingState::decode(bytes).map_err(|e| RecordError::Envelope(e.to_string()))
}

pub(crate) fn decode_exporter(bytes: &[u8]) -> Result<ExporterState, RecordError> {
    ExporterState::decode(bytes).map_err(|e| RecordError::Envelope(e.to_string()))
}

fn check_version(found: u32) -> Result<(), RecordError> {
    if found > RECORD_VERSION {
        return Err(RecordError::VersionTooNew { found });
    }
    Ok(())
}

/// Cut `text` to at most `max` bytes on a char boundary (response bodies, error texts).
pub(crate) fn cap_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries};

    fn request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            }],
            ..Default::default()
        }
    }

    fn envelope_for(stored: &StoredPayload<'_>) -> RecordEnvelope {
        RecordEnvelope {
            version: RECORD_VERSION,
            compression: stored.compression as i32,
            payload_len: stored.bytes.len() as u64,
            payload_crc32: stored.crc32,
            ..Default::default()
        }
    }

    /// Many series with repeated label names: snappy shrinks it well below 90%.
    fn compressible_request() -> WriteRequest {
        WriteRequest {
            timeseries: (0..100).flat_map(|_| request().timeseries).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn payload_round_trips_through_snappy() {
        let plain = compressible_request().encode_to_vec();
        let stored = encode_payload(&plain).unwrap();
        assert_eq!(stored.compression, Compression::SnappyRaw);
        let envelope = envelope_for(&stored);
        assert_eq!(
            decode_payload(&envelope, &stored.bytes).unwrap(),
            compressible_request()
        );
        // The stored bytes are exactly a remote-write body: snappy block of the protobuf.
        let inflated = snap::raw::Decoder::new()
            .decompress_vec(&stored.bytes)
            .unwrap();
        assert_eq!(inflated, plain);
    }

    #[test]
    fn payload_snappy_cannot_shrink_is_stored_plain() {
        // One tiny series: snappy's own header makes it no smaller.
        let plain = request().encode_to_vec();
        let stored = encode_payload(&plain).unwrap();
        assert_eq!(stored.compression, Compression::None);
        assert_eq!(&*stored.bytes, plain.as_slice());
        let envelope = envelope_for(&stored);
        assert_eq!(decode_payload(&envelope, &stored.bytes).unwrap(), request());
    }

    #[test]
    fn compression_must_save_a_tenth() {
        assert!(worth_compressing(1000, 900));
        assert!(!worth_compressing(1000, 901));
        assert!(!worth_compressing(0, 1));
    }

    #[test]
    fn flipped_payload_byte_is_detected() {
        let plain = compressible_request().encode_to_vec();
        let stored = encode_payload(&plain).unwrap();
        let envelope = envelope_for(&stored);
        let mut stored = stored.bytes.into_owned();
        stored[3] ^= 0x40;
        assert!(matches!(
            decode_payload(&envelope, &stored),
            Err(RecordError::PayloadChecksum { .. })
        ));
        stored.pop();
        assert!(matches!(
            decode_payload(&envelope, &stored),
            Err(RecordError::PayloadLength { .. })
        ));
    }

    #[test]
    fn newer_envelope_version_is_refused() {
        let envelope = RecordEnvelope {
            version: RECORD_VERSION + 1,
            ..Default::default()
        };
        assert_eq!(
            decode_envelope(&envelope.encode_to_vec()),
            Err(RecordError::VersionTooNew {
                found: RECORD_VERSION + 1
            })
        );
    }

    #[test]
    fn unknown_compression_is_refused() {
        let envelope = RecordEnvelope {
            compression: 7,
            ..Default::default()
        };
        assert_eq!(
            decode_payload(&envelope, &[]),
            Err(RecordError::UnknownCompression(7))
        );
    }

    #[test]
    fn envelope_field_numbers_are_stable() {
        // Golden bytes: a field renumbering would break every store on disk.
        let envelope = RecordEnvelope {
            version: 1,
            exporter_uid: "u".into(),
            window_start: 2,
            compression: Compression::SnappyRaw as i32,
            outputs: vec!["o".into()],
            payload_crc32: 1,
            ..Default::default()
        };
        assert_eq!(
            envelope.encode_to_vec(),
            vec![
                8, 1, 18, 1, b'u', 48, 2, 72, 1, 82, 1, b'o', 101, 1, 0, 0, 0
            ]
        );
    }

    #[test]
    fn cap_text_respects_char_boundaries() {
        assert_eq!(cap_text("héllo", 2), "h");
        assert_eq!(cap_text("abc", 10), "abc");
    }
}
