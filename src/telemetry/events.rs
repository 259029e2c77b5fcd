//! Kubernetes Events about MetricsExporter resources, for what a person acts on (docs/design.md#events):
//! the vocabulary and the queue. Any stage may hold an [`EventQueue`] and [`EventQueue::publish`] a
//! [`Notice`]; it never blocks and never fails (a full queue drops the notice and counts it). In
//! Kubernetes mode `status::events` drains the queue into `events.k8s.io/v1` Events, aggregated and
//! rate limited; in standalone mode the queue is [`EventQueue::disabled`] and notices go nowhere.
//!
//! Who publishes what: the status writer turns condition changes into notices (query failing with
//! the condition's reason — a budget suspension included —, recovered, dead letters); the source may
//! publish [`reasons::STALE`] for resources it finds stale (the hook: hand it a clone of the queue).

use tokio::sync::mpsc;

use super::metrics::KUBE_EVENTS;

/// Notices waiting for the publisher; more are dropped (and counted) rather than held in memory.
pub const QUEUE_CAPACITY: usize = 1024;

/// Event reasons adxexporter uses besides the `QueryHealthy` condition reasons it forwards.
pub mod reasons {
    /// `QueryHealthy` became `True` again.
    pub const QUERY_RECOVERED: &str = "QueryRecovered";
    /// Windows of the resource were dead-lettered (refused for good by an output).
    pub const DEAD_LETTERED: &str = "DeadLettered";
    /// The source found the resource stale (published by the source; see the module doc).
    pub const STALE: &str = "Stale";
}

/// The resource an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `Normal` or `Warning`, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Normal,
    Warning,
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub regarding: Regarding,
    pub severity: Severity,
    /// Short `PascalCase` reason (at most 128 characters), e.g. `QueryFailing`.
    pub reason: String,
    /// What adxexporter was doing (`PascalCase`): `Query`, `Deliver`, `Watch`.
    pub action: &'static str,
    /// What happened and what to do (cut to 1 KiB by the publisher).
    pub note: String,
}

/// Where notices go; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventQueue {
    tx: Option<mpsc::Sender<Notice>>,
}

impl EventQueue {
    /// A queue whose notices go nowhere (standalone mode, tests).
    pub fn disabled() -> EventQueue {
        EventQueue { tx: None }
    }

    /// A queue of [`QUEUE_CAPACITY`] and its receiving end.
    pub fn channel() -> (EventQueue, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (EventQueue { tx: Some(tx) }, rx)
    }

    /// Queues `notice`; when the queue is full it is dropped and counted (`outcome="dropped"`).
    pub fn publish(&self, notice: Notice) {
        let Some(tx) = &self.tx else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(n)) = tx.try_send(notice) {
            tracing::debug!(
                exporter = %format!("{}/{}", n.regarding.namespace, n.regarding.name),
                reason = %n.reason,
                "event dropped: the event queue is full"
            );
            metrics::counter!(KUBE_EVENTS, "outcome" => "dropped").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(i: usize) -> Notice {
        Notice {
            regarding: Regarding {
                namespace: "ns".into(),
                name: format!("r{i}"),
                uid: format!("u{i}"),
            },
            severity: Severity::Warning,
            reason: "QueryFailing".into(),
            action: "Query",
            note: String::new(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let metrics = crate::telemetry::TestMetrics::install();
        let (queue, mut rx) = EventQueue::channel();
        for i in 0..QUEUE_CAPACITY + 3 {
            queue.publish(notice(i));
        }
        assert_eq!(
            metrics.value(KUBE_EVENTS, &[("outcome", "dropped")]),
            Some(3.0)
        );
        assert_eq!(rx.recv().await, Some(notice(0)));
        EventQueue::disabled().publish(notice(0));
    }
}
