//! Outputs: Prometheus remote write and OTLP/HTTP (SPEC §7).
