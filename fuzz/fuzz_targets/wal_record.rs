//! `cargo fuzz` target: the properties of [`adxexporter::fuzzing::wal_record`] over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adxexporter::fuzzing::wal_record(data));
