//! WAL record values (`src/wal/record.rs`) under arbitrary bytes, as a torn or corrupted store could
//! hand them back. The first input byte picks the decoder, the rest is its input. For every input:
//!
//! - envelope, dead letter, pending state and exporter state decoders return (never panic); what
//!   they accept re-encodes to bytes that decode to the same value, and re-encoding is a fixed point
//!   (the value is all the bytes meant: no field is half-read);
//! - the payload decoder, given an envelope whose length and CRC match the bytes (so the fuzzer gets
//!   past the checksum into snappy and protobuf), returns; a `WriteRequest` it accepts survives
//!   [`record::encode_payload`] → [`record::decode_payload`] byte for byte; and the same bytes under a
//!   wrong length or CRC are refused as such.

use prost::Message;

use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
use crate::wal::record::{
    self, Compression, DeadLetterEnvelope, ExporterState, PendingState, RECORD_VERSION,
    RecordEnvelope, RecordError,
};

/// Input: one selector byte, then the bytes for that decoder (see the module doc).
pub fn wal_record(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Some(e) = stable(rest, record::decode_envelope) {
                assert!(e.version <= RECORD_VERSION);
            }
        }
        1 => {
            stable(rest, record::decode_dead_letter);
        }
        2 => {
            stable(rest, record::decode_pending);
        }
        3 => {
            stable(rest, record::decode_exporter);
        }
        _ => payload(rest),
    }
}

/// Decodes `bytes`; when accepted, checks the re-encoding decodes to the same value and is a fixed point.
fn stable<M: Message + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    decode: fn(&[u8]) -> Result<M, RecordError>,
) -> Option<M> {
    let value = decode(bytes).ok()?;
    let encoded = value.encode_to_vec();
    let again = decode(&encoded).unwrap_or_else(|e| panic!("{value:?} re-encoded fails: {e}"));
    assert_eq!(again, value, "re-encoded value differs");
    assert_eq!(
        again.encode_to_vec(),
        encoded,
        "re-encoding is not a fixed point"
    );
    Some(value)
}

/// Input: one byte for the envelope's compression (none, snappy, or an unknown number), then the
/// stored payload bytes.
fn payload(data: &[u8]) {
    let Some((&which, stored)) = data.split_first() else {
        return;
    };
    let compression = match which % 4 {
        0 => Compression::None as i32,
        1 => Compression::SnappyRaw as i32,
        2 => 2,
        _ => -1,
    };
    let envelope = RecordEnvelope {
        version: RECORD_VERSION,
        compression,
        payload_len: stored.len() as u64,
        payload_crc32: crc32fast::hash(stored),
        ..Default::default()
    };
    let decoded = record::decode_payload(&envelope, stored);
    if !(0..=1).contains(&compression) {
        assert_eq!(decoded, Err(RecordError::UnknownCompression(compression)));
    }
    let wrong_len = RecordEnvelope {
        payload_len: envelope.payload_len + 1,
        ..envelope.clone()
    };
    assert!(matches!(
        record::decode_payload(&wrong_len, stored),
        Err(RecordError::PayloadLength { .. })
    ));
    let wrong_crc = RecordEnvelope {
        payload_crc32: !envelope.payload_crc32,
        ..envelope
    };
    assert!(matches!(
        record::decode_payload(&wrong_crc, stored),
        Err(RecordError::PayloadChecksum { .. })
    ));
    if let Ok(request) = decoded {
        // Compare bytes, not values: a NaN sample is not equal to itself.
        let plain = request.encode_to_vec();
        let again = store_and_read(&plain);
        assert_eq!(
            again.encode_to_vec(),
            plain,
            "payload round trip changed the request"
        );
    }
}

/// What the store does with a request on append and on read.
fn store_and_read(plain: &[u8]) -> WriteRequest {
    let stored = record::encode_payload(plain).expect("a payload compresses");
    let envelope = envelope_for(&stored);
    record::decode_payload(&envelope, &stored.bytes).expect("a stored payload reads back")
}

fn envelope_for(stored: &record::StoredPayload<'_>) -> RecordEnvelope {
    RecordEnvelope {
        version: RECORD_VERSION,
        exporter_uid: "0c1d2e3f-uid".into(),
        namespace: "monitoring".into(),
        name: "requests".into(),
        generation: 3,
        window_start: 638_000_000_000_000_000,
        window_end: 638_000_000_600_000_000,
        created: 638_000_000_700_000_000,
        compression: stored.compression as i32,
        outputs: vec!["remote-write".into(), "otlp".into()],
        payload_len: stored.bytes.len() as u64,
        payload_crc32: stored.crc32,
        samples: 0,
        cumulative: false,
    }
}

fn request(series: usize) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", "http_requests"),
                    Label::new("region", if i % 2 == 0 { "eastus" } else { "westeurope" }),
                    Label::new("host", format!("host-{i}")),
                ],
                samples: vec![Sample {
                    value: i as f64 * 1.5,
                    timestamp: 1_700_000_000_000 + i as i64,
                }],
            })
            .collect(),
        ..Default::default()
    }
}

/// Seed inputs (file name, bytes) made by the WAL's own encoders: every record kind the store writes.
pub fn wal_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut push = |name: &str, selector: u8, bytes: Vec<u8>| {
        out.push((name.to_owned(), [vec![selector], bytes].concat()));
    };
    for (name, series) in [("small", 1), ("large", 50)] {
        let plain = request(series).encode_to_vec();
        let stored = record::encode_payload(&plain).expect("compresses");
        let envelope = envelope_for(&stored);
        push(&format!("envelope-{name}"), 0, envelope.encode_to_vec());
        let which = stored.compression as u8; // payload(): 0 none, 1 snappy
        push(
            &format!("payload-{name}"),
            4,
            [vec![which], stored.bytes.to_vec()].concat(),
        );
        let dead = DeadLetterEnvelope {
            version: RECORD_VERSION,
            output: "remote-write".into(),
            reason: "400 Bad Request".into(),
            body: record::cap_text("out of order sample", record::MAX_BODY_BYTES),
            dead_lettered_at: 638_000_000_900_000_000,
            attempts: 4,
            record: Some(envelope),
            failed_request: 2,
        };
        push(&format!("dead-letter-{name}"), 1, dead.encode_to_vec());
    }
    let pending = PendingState {
        attempts: 2,
        next_attempt_at: 638_000_000_800_000_000,
        last_error: "503 Service Unavailable".into(),
        resume_from: 1,
    };
    push("pending", 2, pending.encode_to_vec());
    let exporter = ExporterState {
        watermark: 638_000_000_600_000_000,
        forgotten: false,
        namespace: "monitoring".into(),
        name: "requests".into(),
        failed_outputs: Default::default(),
    };
    push("exporter", 3, exporter.encode_to_vec());
    out
}
