//! Kubernetes mode: publishes the [`Notice`]s of the event queue (`telemetry::events`) as
//! `events.k8s.io/v1` Events on their MetricsExporter (docs/design.md#events), through
//! kube-runtime's [`Recorder`]: a repeat of the same reason on the same resource within 6 minutes is
//! not a new Event but a patch of the first one's `series` (count and last time). Two limits keep a
//! fleet of 10 000 resources from flooding the API server:
//! - per resource, client-go's spam filter: 25 events at once, then one per 5 minutes; more are
//!   dropped (`adxexporter_kube_events_total{outcome="rate_limited"}`);
//! - for the process, the `--event-qps`/`--event-burst` bucket; notices wait in the bounded queue
//!   (a full queue drops new ones, counted as `dropped`).
//!
//! A failure is counted (`failed`) and logged once until events work again; it never stops anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limit::{Bucket, RateLimiter};
use crate::crd::{API_VERSION, KIND};
use crate::telemetry::events::{Notice, Severity};
use crate::telemetry::metrics::KUBE_EVENTS;

/// The reporting controller of every Event.
pub(crate) const CONTROLLER: &str = "adxexporter";
/// Per resource: events allowed at once, then one per [`SPAM_PERIOD`] (client-go's defaults).
const SPAM_BURST: f64 = 25.0;
const SPAM_PERIOD: Duration = Duration::from_secs(300);
/// How long kube-runtime's `Recorder` keeps an Event to aggregate repeats into.
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// Longest note the Events API accepts.
const NOTE_LIMIT: usize = 1024;
/// Spam-filter buckets kept before idle (full) ones are forgotten.
const SPAM_ENTRIES: usize = 20_000;

/// Publishes notices until `shutdown`.
pub(crate) struct EventPublisher {
    client: kube::Client,
    reporter: Reporter,
    recorder: Recorder,
    limiter: Arc<RateLimiter>,
    /// Per resource uid.
    spam: HashMap<String, Bucket>,
    /// When each (resource, reason, type, action) was last published: within [`SERIES_TTL`] the
    /// Recorder aggregates, which is what the `outcome` label says.
    seen: HashMap<(String, String, Severity, &'static str), Instant>,
    /// The last failure logged.
    failing: Option<String>,
}

impl EventPublisher {
    /// `instance` names this replica in `reportingInstance` (the pod name).
    pub fn new(client: kube::Client, instance: Option<String>, limiter: Arc<RateLimiter>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance,
        };
        EventPublisher {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            limiter,
            spam: HashMap::new(),
            seen: HashMap::new(),
            failing: None,
        }
    }

    /// Publishes until `shutdown`.
    pub async fn run(mut self, mut notices: mpsc::Receiver<Notice>, shutdown: CancellationToken) {
        loop {
            let notice = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = notices.recv() => n,
            };
            let Some(notice) = notice else {
                // Every publisher is gone: nothing more can come. Run until shutdown like the
                // other tasks (one that ends early stops the process).
                shutdown.cancelled().await;
                return;
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.publish(notice) => {}
            }
        }
    }

    /// Publishes one notice (or filters it); returns the `outcome` it was counted as.
    pub async fn publish(&mut self, notice: Notice) -> &'static str {
        let now = Instant::now();
        let uid = notice.regarding.uid.clone();
        if self.spam.len() > SPAM_ENTRIES {
            let idle = |b: &Bucket| {
                let mut probe = *b;
                (0..SPAM_BURST as usize).all(|_| probe.try_take(spam_qps(), SPAM_BURST, now))
            };
            self.spam.retain(|_, b| !idle(b));
        }
        let bucket = self
            .spam
            .entry(uid.clone())
            .or_insert_with(|| Bucket::full(SPAM_BURST, now));
        if !bucket.try_take(spam_qps(), SPAM_BURST, now) {
            tracing::debug!(
                exporter = %format!("{}/{}", notice.regarding.namespace, notice.regarding.name),
                reason = %notice.reason,
                "event not published: more than {SPAM_BURST} for this resource (then one per {}s)",
                SPAM_PERIOD.as_secs()
            );
            return count("rate_limited");
        }
        self.limiter.acquire().await;
        let key = (uid, notice.reason.clone(), notice.severity, notice.action);
        let aggregated = self
            .seen
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < SERIES_TTL);
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < SERIES_TTL);
        let reference = ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some(KIND.into()),
            namespace: Some(notice.regarding.namespace.clone()),
            name: Some(notice.regarding.name.clone()),
            uid: Some(notice.regarding.uid.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: match notice.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: notice.reason.chars().take(128).collect(),
            note: Some(cut(&notice.note, NOTE_LIMIT)),
            action: notice.action.into(),
            secondary: None,
        };
        match self.recorder.publish(&event, &reference).await {
            Ok(()) => {
                self.seen.insert(key, now);
                if self.failing.take().is_some() {
                    tracing::info!("Kubernetes Events are recorded again");
                }
                count(if aggregated { "aggregated" } else { "created" })
            }
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    // The Event to aggregate into has expired on the server; the Recorder would keep
                    // patching it, so start afresh (the next repeat creates a new Event).
                    self.recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                    self.seen.clear();
                }
                let message = format!(
                    "cannot record a Kubernetes Event ({}) on MetricsExporter {}/{}: {e} (check that RBAC allows create and patch on events.events.k8s.io)",
                    notice.reason, notice.regarding.namespace, notice.regarding.name
                );
                let kind = message.split(": ").nth(1).unwrap_or_default().to_owned();
                if self.failing.as_deref() != Some(kind.as_str()) {
                    tracing::warn!("{message}");
                    self.failing = Some(kind);
                }
                count("failed")
            }
        }
    }
}

fn spam_qps() -> f64 {
    1.0 / SPAM_PERIOD.as_secs_f64()
}

fn count(outcome: &'static str) -> &'static str {
    metrics::counter!(KUBE_EVENTS, "outcome" => outcome).increment(1);
    outcome
}

/// `text` cut to at most `limit` bytes on a character boundary.
fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_support::{FakeApi, exporter};
    use crate::telemetry::events::Regarding;

    fn notice(regarding: &Regarding, reason: &str, note: &str) -> Notice {
        Notice {
            regarding: regarding.clone(),
            severity: Severity::Warning,
            reason: reason.into(),
            action: "Query",
            note: note.into(),
        }
    }

    #[tokio::test]
    async fn events_are_recorded_on_the_resource_and_repeats_aggregated() {
        let metrics = crate::telemetry::TestMetrics::install();
        let fake = FakeApi::start().await;
        let created = fake.create(exporter("ns", "a", serde_json::json!({"database": "db"})));
        let a = Regarding {
            namespace: "ns".into(),
            name: "a".into(),
            uid: created["metadata"]["uid"].as_str().unwrap().into(),
        };
        let mut publisher = EventPublisher::new(
            fake.client().await,
            Some("adxexporter-0".into()),
            Arc::new(RateLimiter::new(100.0, 10)),
        );
        let long = "é".repeat(600);
        assert_eq!(
            publisher.publish(notice(&a, "QueryFailing", &long)).await,
            "created"
        );
        assert_eq!(
            publisher.publish(notice(&a, "QueryFailing", "again")).await,
            "aggregated"
        );
        assert_eq!(
            publisher.publish(notice(&a, "QueryFailing", "more")).await,
            "aggregated"
        );
        let mut recovered = notice(&a, "QueryRecovered", "ok");
        recovered.severity = Severity::Normal;
        assert_eq!(publisher.publish(recovered).await, "created");

        let events = fake.events();
        assert_eq!(events.len(), 2, "{events:?}");
        let failing = events
            .iter()
            .find(|e| e["reason"] == "QueryFailing")
            .unwrap();
        assert_eq!(failing["type"], "Warning");
        assert_eq!(failing["action"], "Query");
        assert_eq!(failing["reportingController"], CONTROLLER);
        assert_eq!(failing["reportingInstance"], "adxexporter-0");
        assert_eq!(failing["regarding"]["kind"], KIND);
        assert_eq!(failing["regarding"]["apiVersion"], API_VERSION);
        assert_eq!(failing["regarding"]["uid"], a.uid.as_str());
        assert_eq!(failing["regarding"]["name"], "a");
        assert_eq!(failing["metadata"]["namespace"], "ns");
        assert_eq!(failing["series"]["count"], 3, "two repeats aggregated");
        let note = failing["note"].as_str().unwrap();
        assert!(
            note.len() <= NOTE_LIMIT && note.starts_with('é'),
            "{}",
            note.len()
        );
        let writes: Vec<(String, u16)> = (fake.event_writes().into_iter())
            .map(|w| (w.method, w.code))
            .collect();
        assert_eq!(
            writes,
            [("POST", 201), ("PATCH", 200), ("PATCH", 200), ("POST", 201)]
                .map(|(m, c)| (m.to_owned(), c))
                .to_vec()
        );
        assert_eq!(
            metrics.value(KUBE_EVENTS, &[("outcome", "created")]),
            Some(2.0)
        );
        assert_eq!(
            metrics.value(KUBE_EVENTS, &[("outcome", "aggregated")]),
            Some(2.0)
        );
    }

    #[tokio::test]
    async fn one_resource_cannot_flood_the_api_server() {
        let metrics = crate::telemetry::TestMetrics::install();
        let fake = FakeApi::start().await;
        let a = Regarding {
            namespace: "ns".into(),
            name: "a".into(),
            uid: "u-a".into(),
        };
        let mut publisher = EventPublisher::new(
            fake.client().await,
            None,
            Arc::new(RateLimiter::new(1000.0, 100)),
        );
        let mut outcomes = Vec::new();
        for i in 0..30 {
            // Alternate reasons: no aggregation, every one a write of its own.
            let reason = if i % 2 == 0 {
                "QueryFailing"
            } else {
                "QueryRecovered"
            };
            outcomes.push(publisher.publish(notice(&a, reason, "x")).await);
        }
        let limited = outcomes.iter().filter(|o| **o == "rate_limited").count();
        assert_eq!(limited, 5, "{outcomes:?}");
        assert_eq!(fake.event_writes().len(), 25);
        assert_eq!(
            metrics.value(KUBE_EVENTS, &[("outcome", "rate_limited")]),
            Some(5.0)
        );
    }

    #[tokio::test]
    async fn a_refused_event_is_counted_not_fatal() {
        let metrics = crate::telemetry::TestMetrics::install();
        let fake = FakeApi::start().await;
        fake.fail_event_writes(Some(403));
        let a = Regarding {
            namespace: "ns".into(),
            name: "a".into(),
            uid: "u-a".into(),
        };
        let mut publisher = EventPublisher::new(
            fake.client().await,
            None,
            Arc::new(RateLimiter::new(100.0, 10)),
        );
        assert_eq!(
            publisher.publish(notice(&a, "QueryFailing", "x")).await,
            "failed"
        );
        fake.fail_event_writes(None);
        assert_eq!(
            publisher.publish(notice(&a, "QueryFailing", "x")).await,
            "created"
        );
        assert_eq!(
            metrics.value(KUBE_EVENTS, &[("outcome", "failed")]),
            Some(1.0)
        );
    }
}
