//! The Prometheus scrape output (docs/design.md#scrape-page, the design's Phase 1 "current state"): a page on its own
//! listener (`--scrape-port`, path `--scrape-path`) showing, per exporter, the newest window that the
//! drain loop delivered to it, in Prometheus text exposition ([`crate::exposition::latest_to_text`]).
//!
//! It is one more WAL output named `scrape`, fed by the same drain loop as the push outputs:
//! "delivering" a window renders it (on a blocking thread) and replaces that exporter's page, and
//! always succeeds. Invariants:
//! - memory: one rendered page per exporter, its newest delivered window (the `WriteRequest` is
//!   dropped after rendering); a page is replaced only by a window that does not end earlier, so a
//!   re-delivery after a crash never rolls the page back;
//! - a series absent from an exporter's newer window is absent from the page (Prometheus then marks it
//!   stale when samples carry no timestamps);
//! - a scrape never waits for rendering: it clones the pages' `Bytes` under a short lock and streams
//!   them, so a 100k-series page costs the scraper a copy-free stream, not the pipeline a stall;
//! - pages follow the desired resources: a deleted resource's page, or one whose `spec.outputs` no
//!   longer names `scrape`, is dropped when the source reports it ([`ScrapePages::retain`]); windows of
//!   such an exporter still in the WAL are acknowledged without being shown;
//! - after a restart the pages start empty (they are not persisted): each exporter's page reappears
//!   with its next delivered window. Windows not yet delivered at the stop are re-delivered from the
//!   WAL, so a backlog refills the page at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{Delivered, Disposition, PushFailure, PushResult, Sink};
use crate::exposition::latest_to_text;
use tokio_util::sync::CancellationToken;

use crate::prompb::WriteRequest;
use crate::registry::Snapshot;
use crate::time::Ticks;
use crate::wal::RecordHeader;

/// The output's name in the WAL, metrics and `spec.outputs`.
pub(crate) const SCRAPE_OUTPUT: &str = "scrape";
/// Default `--scrape-path`.
pub(crate) const DEFAULT_SCRAPE_PATH: &str = "/metrics";
/// Content type of the Prometheus text format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Settings of the scrape output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// Path of the page, starting with `/`.
    pub path: String,
    /// Print each sample's own timestamp (ms) after its value.
    pub timestamps: bool,
}

/// One exporter's page: its newest delivered window, rendered.
#[derive(Debug, Clone)]
struct Page {
    window_end: Ticks,
    text: Bytes,
}

/// The pages of every exporter, shared by the sink (writer) and the HTTP handler (reader).
#[derive(Debug, Default)]
pub struct ScrapePages {
    /// Keyed by exporter uid: one page per exporter, served in uid order.
    pages: RwLock<BTreeMap<String, Page>>,
    /// Exporters allowed on the page; `None` until the source's first snapshot arrives.
    shown: RwLock<Option<BTreeSet<String>>>,
}

impl ScrapePages {
    /// Replaces `uid`'s page unless the exporter is not shown, or the page already holds a newer window.
    fn replace(&self, uid: &str, window_end: Ticks, text: Bytes) {
        let shown = self.shown.read().unwrap_or_else(|e| e.into_inner());
        if shown.as_ref().is_some_and(|s| !s.contains(uid)) {
            return;
        }
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        match pages.get(uid) {
            Some(page) if page.window_end > window_end => {}
            _ => {
                pages.insert(uid.to_owned(), Page { window_end, text });
            }
        }
    }

    /// Keeps only the pages of `uids` (the exporters that exist and select this output) and shows
    /// only them from now on.
    pub(crate) fn retain(&self, uids: BTreeSet<String>) {
        let mut shown = self.shown.write().unwrap_or_else(|e| e.into_inner());
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        pages.retain(|uid, _| uids.contains(uid));
        *shown = Some(uids);
    }

    /// The current pages, in uid order (cheap: `Bytes` clones share the text).
    fn snapshot(&self) -> Vec<Bytes> {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        pages.values().map(|p| p.text.clone()).collect()
    }

    /// The whole page as one string (tests and diagnostics; the server streams instead).
    pub fn text(&self) -> String {
        self.snapshot()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// The scrape output: renders delivered windows into [`ScrapePages`].
#[derive(Debug, Clone)]
pub struct ScrapeSink {
    pages: Arc<ScrapePages>,
    timestamps: bool,
}

impl ScrapeSink {
    pub fn new(config: &ScrapeConfig, pages: Arc<ScrapePages>) -> ScrapeSink {
        ScrapeSink {
            pages,
            timestamps: config.timestamps,
        }
    }

    /// The pages this sink writes (for the HTTP router).
    pub fn pages(&self) -> Arc<ScrapePages> {
        self.pages.clone()
    }
}

/// What a delivered window counts as: every sample "sent", in one request.
fn delivered(window: &WriteRequest) -> Delivered {
    Delivered {
        requests: 1,
        window_requests: 1,
        samples: window.sample_count(),
        ..Delivered::default()
    }
}

impl Sink for ScrapeSink {
    fn name(&self) -> &'static str {
        SCRAPE_OUTPUT
    }

    /// Without an exporter identity there is no page to replace: nothing is shown. The drain loop
    /// always calls [`Sink::deliver`].
    async fn push_from(&self, window: &WriteRequest, _first_request: usize) -> PushResult {
        Ok(delivered(window))
    }

    async fn deliver(
        &self,
        header: &RecordHeader,
        window: Arc<WriteRequest>,
        _first_request: usize,
    ) -> PushResult {
        let result = delivered(&window);
        let timestamps = self.timestamps;
        // Rendering 100k series takes tens of milliseconds: not on an async worker.
        let text =
            match tokio::task::spawn_blocking(move || latest_to_text(&window, timestamps)).await {
                Ok(text) => text,
                // A render that panicked is a bug: keep the old page and dead-letter the window, loudly.
                Err(e) => {
                    return Err(PushFailure {
                        disposition: Disposition::Permanent {
                            reason: "encode",
                            status: None,
                            body: format!("rendering the scrape page failed: {e}"),
                        },
                        status: None,
                        failed_request: 0,
                        window_requests: 1,
                    });
                }
            };
        self.pages
            .replace(&header.exporter.uid, header.window_end, Bytes::from(text));
        Ok(result)
    }
}

/// Keeps the pages in step with the desired resources until `shutdown`: after each new snapshot
/// from the source, only exporters that exist and select this output (no `spec.outputs`, or one
/// naming `scrape`) keep a page. The first (empty, unsynced) snapshot is not acted on.
pub(crate) async fn follow(
    pages: Arc<ScrapePages>,
    mut snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let shown: BTreeSet<String> = (snapshots.borrow_and_update().desired.iter())
            .filter(|(_, ex)| {
                (ex.spec.outputs.as_ref()).is_none_or(|o| o.iter().any(|n| n == SCRAPE_OUTPUT))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        pages.retain(shown);
    }
}

/// The router of the scrape listener: `GET path` answers the pages, anything else 404.
pub fn router(path: &str, pages: Arc<ScrapePages>) -> Router {
    Router::new().route(
        path,
        axum::routing::get(move || {
            let pages = pages.clone();
            async move { page_response(&pages) }
        }),
    )
}

fn page_response(pages: &ScrapePages) -> Response {
    let chunks = pages.snapshot();
    let body = Body::from_stream(futures::stream::iter(
        chunks
            .into_iter()
            .map(Ok::<Bytes, std::convert::Infallible>),
    ));
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries};
    use crate::wal::ExporterRef;

    fn header(uid: &str, end: i64) -> RecordHeader {
        RecordHeader {
            exporter: ExporterRef::new(uid, "ns", uid),
            generation: 1,
            window_start: Ticks(end - 10),
            window_end: Ticks(end),
            created: Ticks::now(),
            outputs: vec![],
        }
    }

    fn window(hosts: &[(&str, f64)]) -> Arc<WriteRequest> {
        Arc::new(WriteRequest {
            timeseries: hosts
                .iter()
                .map(|(h, v)| TimeSeries {
                    labels: vec![Label::new("__name__", "m"), Label::new("host", *h)],
                    samples: vec![Sample {
                        value: *v,
                        timestamp: 1000,
                    }],
                })
                .collect(),
            ..Default::default()
        })
    }

    fn sink() -> ScrapeSink {
        let config = ScrapeConfig {
            path: DEFAULT_SCRAPE_PATH.into(),
            timestamps: false,
        };
        ScrapeSink::new(&config, Arc::new(ScrapePages::default()))
    }

    #[tokio::test]
    async fn a_newer_window_replaces_the_page_and_drops_vanished_series() {
        let s = sink();
        s.deliver(&header("u1", 100), window(&[("a", 1.0), ("b", 2.0)]), 0)
            .await
            .unwrap();
        s.deliver(&header("u2", 100), window(&[("z", 9.0)]), 0)
            .await
            .unwrap();
        assert_eq!(
            s.pages.text(),
            "m{host=\"a\"} 1\nm{host=\"b\"} 2\nm{host=\"z\"} 9\n"
        );
        let d = s
            .deliver(&header("u1", 200), window(&[("a", 3.0)]), 0)
            .await
            .unwrap();
        assert_eq!(d.samples, 1);
        assert_eq!(s.pages.text(), "m{host=\"a\"} 3\nm{host=\"z\"} 9\n");
        // A re-delivered older window (after a crash) never rolls the page back.
        s.deliver(&header("u1", 100), window(&[("old", 0.0)]), 0)
            .await
            .unwrap();
        assert_eq!(s.pages.text(), "m{host=\"a\"} 3\nm{host=\"z\"} 9\n");
    }

    #[tokio::test]
    async fn pages_follow_the_desired_exporters() {
        let s = sink();
        s.deliver(&header("u1", 100), window(&[("a", 1.0)]), 0)
            .await
            .unwrap();
        s.deliver(&header("u2", 100), window(&[("b", 2.0)]), 0)
            .await
            .unwrap();
        s.pages.retain(BTreeSet::from(["u2".to_owned()]));
        assert_eq!(s.pages.text(), "m{host=\"b\"} 2\n");
        // A deleted exporter's remaining backlog is acknowledged but not shown.
        let d = s
            .deliver(&header("u1", 200), window(&[("a", 5.0)]), 0)
            .await;
        assert!(d.is_ok());
        assert_eq!(s.pages.text(), "m{host=\"b\"} 2\n");
    }
}
