//! One drain loop per output: take the oldest pending window of each exporter from the WAL, push
//! it, and record the outcome in the WAL (docs/design.md#drain, docs/design.md#wal-cursors).
//!
//! - Order: per exporter oldest first, and a window in backoff holds back that exporter's later
//!   windows on this output (receivers see each series in time order); other exporters and other
//!   outputs are not held back.
//! - Concurrency: up to `concurrency` exporters are pushed at once.
//! - Payload: read verified (length + CRC) but not decoded; an output that can send the stored bytes
//!   as they are does ([`Sink::deliver_encoded`]: remote write, for a window that is one request),
//!   otherwise it is decoded here. One that fails its checks or does not decode is dead-lettered
//!   (`corrupt_record`), never retried.
//! - Outcomes: delivered → `ack`; retryable → `retry_later` with the server's `Retry-After` or
//!   exponential backoff with full jitter (attempts are stored in the WAL, so backoff survives a
//!   restart); permanent → `dead_letter` with the reason and the receiver's body. Retryable failures
//!   retry without limit: a long outage only grows the backlog (bounded by `--wal-max-bytes`, after
//!   which querying pauses), it never drops data.
//! - Idle: sleeps until the earliest retry is due or the WAL announces a new record; compacts the
//!   store when there is little left in it.
//! - Every round beats the [`Health`] heartbeat; every line about a window is logged inside a
//!   `window` span carrying `exporter`, `window_start` and `window_end`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Disposition, Sink};
use crate::backoff::{self, BackoffPolicy};
use crate::telemetry::metrics::{
    DEAD_LETTERS, POINTS_REJECTED, PUSH_DURATION, PUSH_RETRIES, PUSHES, SAMPLES_PUSHED,
    status_class,
};
use crate::telemetry::{DRAIN_SILENCE, Health};
use crate::time::{Span, Ticks};
use crate::wal::{PendingRecord, RecordId, Wal, WalError, backfill_parent, blocking};

/// Records fetched per round.
const BATCH: usize = 64;
/// Longest idle sleep without any WAL change (a safety net; appends wake the loop at once).
const IDLE_MAX: Duration = Duration::from_secs(30);
/// Pause after a WAL error before the next round.
const WAL_ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Drains one output.
pub(crate) struct Drain<S> {
    pub sink: Arc<S>,
    pub wal: Wal,
    pub policy: BackoffPolicy,
    /// Exporters pushed at once.
    pub concurrency: usize,
    /// Where the loop reports it is not wedged.
    pub health: Arc<Health>,
}

impl<S: Sink + 'static> Drain<S> {
    /// Runs until `shutdown`; an in-flight push is abandoned then (its record stays pending).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WalError> {
        let name = self.sink.name();
        let mut changes = self.wal.subscribe();
        // Present from the start (at 0), so `rate()` and `increase()` see the first event.
        for counter in [PUSH_RETRIES, POINTS_REJECTED, SAMPLES_PUSHED] {
            metrics::counter!(counter, "output" => name).increment(0);
        }
        metrics::counter!(PUSHES, "output" => name, "outcome" => "ok", "status" => "2xx")
            .increment(0);
        metrics::counter!(DEAD_LETTERS, "output" => name, "reason" => "rejected").increment(0);
        let _ = metrics::histogram!(PUSH_DURATION, "output" => name);
        loop {
            self.health.beat(name, DRAIN_SILENCE, Ticks::now());
            if shutdown.is_cancelled() {
                return Ok(());
            }
            // A WAL error (a full or failing volume) pauses this output; it never ends the process:
            // the records stay in the WAL and the store reopens itself once the volume recovers.
            if let Err(e) = self.round(&mut changes, &shutdown).await {
                tracing::error!(
                    output = name,
                    "WAL error: {e}; retrying in {WAL_ERROR_PAUSE:?}"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(WAL_ERROR_PAUSE) => {}
                }
            }
        }
    }

    /// One round: push a batch of due windows, or sleep until something is due or appended.
    async fn round(
        &self,
        changes: &mut tokio::sync::watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) -> Result<(), WalError> {
        let name = self.sink.name();
        {
            let batch = {
                let wal = self.wal.clone();
                blocking(move || wal.next_pending(name, Ticks::now(), BATCH)).await?
            };
            if batch.is_empty() {
                let wal = self.wal.clone();
                let next_due = blocking(move || wal.next_due(name)).await?;
                let wait =
                    next_due.map_or(IDLE_MAX, |t| t.since(Ticks::now()).to_std().min(IDLE_MAX));
                if next_due.is_none() {
                    let wal = self.wal.clone();
                    if let Err(e) = blocking(move || wal.maybe_compact()).await {
                        tracing::warn!(output = name, "WAL compaction failed: {e}");
                    }
                }
                changes.borrow_and_update();
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                return Ok(());
            }
            let pushes = futures::stream::iter(batch)
                .map(|record| self.deliver(record))
                .buffer_unordered(self.concurrency.max(1));
            tokio::select! {
                _ = shutdown.cancelled() => {}
                results = pushes.collect::<Vec<_>>() => {
                    for r in results {
                        r?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Pushes one window and records the outcome, logging inside the window's span.
    async fn deliver(&self, record: PendingRecord) -> Result<(), WalError> {
        let h = &record.header;
        let span = tracing::info_span!(
            "window",
            exporter = %format_args!("{}/{}", h.exporter.namespace, h.exporter.name),
            window_start = %h.window_start,
            window_end = %h.window_end,
        );
        self.deliver_in_span(record).instrument(span).await
    }

    async fn deliver_in_span(&self, record: PendingRecord) -> Result<(), WalError> {
        let name = self.sink.name();
        let id = record.id.clone();
        let stored = {
            let wal = self.wal.clone();
            let id = id.clone();
            blocking(move || wal.read_encoded(&id)).await
        };
        let stored = match stored {
            Ok(p) => p,
            Err(e @ WalError::CorruptRecord { .. }) => return self.corrupt(&id, e).await,
            Err(e) => return Err(e),
        };
        let started = Instant::now();
        let first = usize::try_from(record.resume_from).unwrap_or(0);
        // Remote write sends a one-request window as stored; everything else is decoded first.
        let result = match self
            .sink
            .deliver_encoded(&record.header, &stored, first)
            .await
        {
            Some(result) => result,
            None => {
                let decoded = {
                    let id = id.clone();
                    blocking(move || {
                        stored.decode().map_err(|e| WalError::CorruptRecord {
                            id,
                            detail: e.to_string(),
                        })
                    })
                    .await
                };
                let window = match decoded {
                    Ok(window) => window,
                    Err(e @ WalError::CorruptRecord { .. }) => return self.corrupt(&id, e).await,
                    Err(e) => return Err(e),
                };
                (self.sink)
                    .deliver(&record.header, Arc::new(window), first)
                    .await
            }
        };
        metrics::histogram!(PUSH_DURATION, "output" => name)
            .record(started.elapsed().as_secs_f64());
        let wal = self.wal.clone();
        match result {
            Ok(delivered) => {
                metrics::counter!(PUSHES, "output" => name, "outcome" => "ok", "status" => "2xx")
                    .increment(1);
                metrics::counter!(SAMPLES_PUSHED, "output" => name)
                    .increment(delivered.samples as u64);
                if delivered.rejected_points > 0 {
                    metrics::counter!(POINTS_REJECTED, "output" => name)
                        .increment(delivered.rejected_points);
                }
                tracing::debug!(output = name, requests = delivered.requests, "delivered");
                blocking(move || wal.ack(name, &id)).await
            }
            Err(failure) => {
                let status = status_class(failure.status);
                match failure.disposition {
                    Disposition::Retry { after, reason } => {
                        let delay = backoff::next_delay(
                            record.attempts,
                            after,
                            &self.policy,
                            &mut backoff::fastrand01,
                        );
                        let next = Ticks::now()
                            .checked_add(Span::from_std(delay))
                            .unwrap_or(Ticks::MAX);
                        metrics::counter!(PUSHES, "output" => name, "outcome" => reason, "status" => status).increment(1);
                        metrics::counter!(PUSH_RETRIES, "output" => name).increment(1);
                        tracing::warn!(output = name, attempts = record.attempts + 1, retry_in = ?delay, "push failed ({reason}); will retry");
                        let resume = u32::try_from(failure.failed_request).ok();
                        blocking(move || wal.retry_later_from(name, &id, next, reason, resume))
                            .await
                    }
                    Disposition::Permanent {
                        reason,
                        status: code,
                        body,
                    } => {
                        metrics::counter!(PUSHES, "output" => name, "outcome" => reason, "status" => status).increment(1);
                        let why = match code {
                            Some(c) => format!("{reason} (HTTP {c})"),
                            None => reason.to_owned(),
                        };
                        if backfill_parent(&id.exporter_uid).is_some() && refuses_old_samples(&body)
                        {
                            return self.stop_backfill(&id, &why, &body).await;
                        }
                        metrics::counter!(DEAD_LETTERS, "output" => name, "reason" => reason)
                            .increment(1);
                        tracing::error!(
                            output = name,
                            "push refused for good: {why}: {body}; dead-lettered"
                        );
                        let failed = u32::try_from(failure.failed_request).ok();
                        blocking(move || wal.dead_letter_at(name, &id, failed, &why, &body)).await
                    }
                    Disposition::Success => blocking(move || wal.ack(name, &id)).await,
                }
            }
        }
    }

    /// A backfill window refused as out of order: every later one would be too (docs/design.md#backfill),
    /// so the backfill stops for this output — its pending windows here are dropped, not
    /// dead-lettered one by one — and its status says which receiver setting lets it through.
    async fn stop_backfill(&self, id: &RecordId, why: &str, body: &str) -> Result<(), WalError> {
        let name = self.sink.name();
        let message = format!(
            "{name} refused a backfill window as out of order ({why}: {}): the receiver must accept samples older than a series' newest — Prometheus: set storage.tsdb.out_of_order_time_window (e.g. 30d) in its configuration; VictoriaMetrics accepts them as it is — then set a new spec.backfill.requestId",
            body.chars().take(300).collect::<String>()
        );
        tracing::error!(output = name, exporter_uid = %id.exporter_uid, "{message}");
        let (wal, uid) = (self.wal.clone(), id.exporter_uid.clone());
        let dropped = blocking(move || wal.fail_backfill_output(&uid, name, &message)).await?;
        tracing::warn!(
            output = name,
            dropped,
            "the backfill's pending windows for this output were dropped"
        );
        Ok(())
    }

    /// A record whose payload cannot be read is dead-lettered, not retried: it will never get better.
    async fn corrupt(&self, id: &RecordId, e: WalError) -> Result<(), WalError> {
        let name = self.sink.name();
        tracing::error!(output = name, "{e}");
        metrics::counter!(DEAD_LETTERS, "output" => name, "reason" => "corrupt_record")
            .increment(1);
        let wal = self.wal.clone();
        let (id, text) = (id.clone(), e.to_string());
        blocking(move || wal.dead_letter(name, &id, "corrupt_record", &text)).await
    }
}

/// Whether a receiver's refusal says the samples are older than it accepts (Prometheus: `out of
/// order sample`, `too old sample`, `out of bounds`; Mimir and Cortex: `out-of-order`, `too old`).
fn refuses_old_samples(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    ["out of order", "out-of-order", "too old", "out of bounds"]
        .iter()
        .any(|s| body.contains(s))
}

#[cfg(test)]
mod tests {
    /// The refusals Prometheus, Mimir and Cortex give for samples older than they accept, and
    /// others that are not about age.
    #[test]
    fn old_sample_refusals_are_recognised() {
        for body in [
            "out of order sample",
            "err: out of bounds: sample timestamp too old",
            "the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed (err-mimir-sample-out-of-order)",
            "TOO OLD",
        ] {
            assert!(super::refuses_old_samples(body), "{body}");
        }
        for body in ["invalid label name", "duplicate sample for timestamp", ""] {
            assert!(!super::refuses_old_samples(body), "{body}");
        }
    }

    use std::sync::Mutex;

    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
    use crate::sink::{Delivered, PushFailure, PushResult};
    use crate::wal::{ExporterRef, RecordHeader, WalConfig};

    /// Fails the first push at request 1 (retryable), then accepts; records every `first_request`.
    struct FlakySink {
        calls: Mutex<Vec<usize>>,
    }

    impl Sink for FlakySink {
        fn name(&self) -> &'static str {
            "remote_write"
        }

        async fn push_from(&self, _window: &WriteRequest, first_request: usize) -> PushResult {
            let mut calls = self.calls.lock().unwrap();
            calls.push(first_request);
            if calls.len() == 1 {
                return Err(PushFailure {
                    disposition: Disposition::Retry {
                        after: Some(Duration::ZERO),
                        reason: "unavailable",
                    },
                    status: Some(503),
                    failed_request: 1,
                    window_requests: 3,
                });
            }
            Ok(Delivered {
                requests: 3 - first_request,
                window_requests: 3,
                samples: 1,
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn a_retry_resumes_after_the_requests_already_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalConfig::new(1 << 30, ["remote_write"])).unwrap();
        let header = RecordHeader {
            exporter: ExporterRef::new("u", "ns", "e"),
            generation: 1,
            window_start: Ticks(0),
            window_end: Ticks(600_000_000),
            created: Ticks::now(),
            outputs: vec![],
        };
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "m")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 0,
                }],
            }],
            ..Default::default()
        };
        wal.append(&header, &request).unwrap();
        let sink = Arc::new(FlakySink {
            calls: Mutex::new(Vec::new()),
        });
        let drain = Drain {
            sink: sink.clone(),
            wal: wal.clone(),
            policy: BackoffPolicy::default(),
            concurrency: 1,
            health: Arc::new(Health::default()),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(drain.run(stop.clone()));
        // Delivered when the record leaves the WAL; the watch channel announces nothing for acks.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while wal.stats().unwrap().records > 0 {
            assert!(std::time::Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(
            *sink.calls.lock().unwrap(),
            [0, 1],
            "the retry starts at the failed request"
        );
    }
}
