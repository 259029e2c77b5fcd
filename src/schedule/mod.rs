//! When each exporter queries which window (SPEC §3).
//!
//! [`window`] holds the pure arithmetic: alignment, the first window, the next window after a
//! watermark (with the bridge window after an interval change), due checks, catch-up order and the
//! query text prefix. The scheduler loop built on it (one window in flight per exporter, retries
//! with backoff, catch-up oldest first, bounded concurrency across exporters) is to come.
pub mod window;

pub use window::Window;
pub mod scheduler;
