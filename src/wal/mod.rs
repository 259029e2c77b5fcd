//! The durable write-ahead log (SPEC §8).
