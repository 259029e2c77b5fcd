//! When each exporter queries which window (docs/design.md#windows).
//!
//! [`window`] holds the pure arithmetic: alignment, the first window, the next window after a
//! watermark (with the bridge window after an interval change), due checks, catch-up order and the
//! query text prefix. [`exporter`] is one exporter's task (one window in flight, retries with
//! backoff, catch-up oldest first) and `backfill.rs` its backfill's windows beside the live ones;
//! [`scheduler`] starts, stops and supervises those tasks, with
//! `--max-concurrent-queries` bounding all of them.
mod backfill;
pub mod exporter;
pub mod scheduler;
pub mod window;

pub use window::Window;
