//! adxexporter turns Kusto (Azure Data Explorer) query results into metrics.
//!
//! Data flows one way:
//!
//! ```text
//!  k8s watch / --manifests ─► source ─(registry)─► schedule ─(job)─► query ─► transform ─► wal.append
//!                                                     │                                      │ notify
//!                                                     └──────(status update)──► status ◄── sink drainers ─► OTLP / remote write
//! ```
//!
//! - [`crd`]: the `MetricsExporter` resource (spec, status, validation); no IO.
//! - [`cli`]: flags, validated once into per-module configs.
//! - [`criteria`]: which resources this instance runs, from its cluster labels.
//! - [`schedule`]: window arithmetic (pure) and the query text prefix.
//! - [`query`]: the Kusto REST client, its frame parser and the `Table`/`Value` types.
//! - [`transform`]: pure `Table` → `WriteRequest`.
//! - [`prompb`]: the remote-write messages every later stage carries.
//! - [`sink`]: outputs (remote write, OTLP/HTTP, OTLP/gRPC, the scrape page), retry classification and backoff.
//! - [`wal`]: the durable store between the transform and the sinks; [`waltool`]: `adxexporter wal`.
//! - [`shard`]: which StatefulSet replica runs which resource (rendezvous hashing).
//! - [`time`]: Kusto ticks, RFC 3339, timespans and durations.
//! - [`tls`]: CA bundle, client certificate and verification for every outbound connection.
//! - [`fuzzing`]: the properties the `cargo fuzz` targets in `fuzz/` check, replayed by `cargo test`.
#![forbid(unsafe_code)]

pub mod app;
pub mod azure;
pub mod backoff;
pub mod cli;
pub mod cmd;
pub mod crd;
pub mod criteria;
pub mod exposition;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
// The one fake Kubernetes API server, shared with the integration tests; it names the crate
// `adxexporter` as they do.
#[cfg(test)]
extern crate self as adxexporter;
#[cfg(test)]
#[path = "../tests/kube_support/mod.rs"]
mod kube_support;
pub mod prompb;
pub mod query;
pub mod registry;
pub mod schedule;
pub mod shard;
pub mod sink;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod transform;
pub mod wal;
