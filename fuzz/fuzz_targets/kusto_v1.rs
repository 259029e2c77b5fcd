//! `cargo fuzz` target: the properties of [`adxexporter::fuzzing::kusto_v1`] over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adxexporter::fuzzing::kusto_v1(data));
