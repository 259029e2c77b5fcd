//! `cargo fuzz` target: the properties of [`adxexporter::fuzzing::resource`] over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adxexporter::fuzzing::resource(data));
