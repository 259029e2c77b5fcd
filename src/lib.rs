//! adxexporter turns Kusto (Azure Data Explorer) query results into metrics.
//!
//! Data flows one way (design: `docs/design.md`; the layering rule: `docs/design.md#layers`,
//! checked by `tests/layers.rs`):
//!
//! ```text
//!  Kubernetes watch ─┐                    watch channel            one task per exporter
//!  --manifests dir ──┴─► source ──► registry::Snapshot ──► schedule ──► query ──► transform ──► wal
//!                                        │                    │  (Kusto)   (rows → protobuf)    │ append + watermark,
//!                                        │                    ▼                                 │ one transaction
//!                                        │              status::Board                           ▼ notify
//!                                        └──────────► status writers, gauges ◄── WAL stats ── sink drain loops
//!                                                     (status.json / PATCH)                     ─► remote write,
//!                                                                                                 OTLP/HTTP, OTLP/gRPC,
//!                                                                                                 scrape page
//! ```
//!
//! Leaves, usable by every stage:
//! - [`time`]: Kusto ticks, RFC 3339, timespans and durations.
//! - [`tls`]: CA bundle, client certificate, verification, and the one rustls crypto provider.
//! - [`azure`]: Azure AD identities and bearer tokens (Kusto and the outputs).
//! - [`backoff`]: exponential backoff with full jitter, and `Retry-After`.
//! - [`prompb`]: the remote-write messages and their encoder, which every later stage carries.
//! - [`exposition`]: Prometheus text exposition (the scrape page and `preview`).
//! - [`shard`]: which StatefulSet replica runs which resource (rendezvous hashing).
//! - [`criteria`]: which resources this instance runs, from its cluster labels (and CEL).
//! - [`crd`]: the `MetricsExporter` resource: types, validation, the naming rules, loading; no IO.
//! - [`telemetry`]: logs, metric names, `/metrics`, `/healthz`, `/readyz`.
//!
//! Stages, in the order of the flow's vocabulary:
//! - [`query`]: the Kusto REST client, its frame decoders and the `Table`/`Value` types.
//! - [`transform`]: pure `Table` → samples / `WriteRequest` bytes.
//! - [`wal`]: the durable store between the transform and the sinks.
//! - [`registry`]: the desired exporters (`Snapshot`) and why others do not run here (`Rejected`).
//! - [`source`]: the Kubernetes watch and the manifests directory, both publishing snapshots.
//! - [`status`]: the status board, the status file and Kubernetes status writers, the state gauges.
//! - [`sink`]: the outputs, their drain loops and the retry classification.
//! - [`schedule`]: window arithmetic (pure) and the supervised exporter tasks.
//!
//! Wiring: [`cli`] (flags into per-module configs), [`cmd`] (the offline subcommands), [`app`]
//! (`run`). Test-only: `fuzzing`, the properties the `cargo fuzz` targets in `fuzz/` check.
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
