//! Token buckets: the client-side rate limits of Kubernetes writes (`--status-patch-qps/-burst`,
//! `--event-qps/-burst`) and the per-resource event spam filter. A bucket holds at most `burst`
//! tokens and gains `qps` a second; every request takes one. So in any span of `d` seconds at most
//! `burst + qps·d` requests start, whatever the number of resources.

use std::time::Duration;

use tokio::time::Instant;

/// The arithmetic of one bucket, for callers that hold it under their own lock. Pure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, qps: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * qps).min(burst);
        self.at = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, qps: f64, burst: f64, now: Instant) -> bool {
        self.refill(qps, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserves the next token, even one not there yet: how long to wait before using it. Waiters
    /// are served in the order they reserve.
    pub fn reserve(&mut self, qps: f64, burst: f64, now: Instant) -> Duration {
        self.refill(qps, burst, now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / qps)
        }
    }
}

/// A shared bucket that async callers wait on.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    qps: f64,
    burst: f64,
    bucket: std::sync::Mutex<Bucket>,
}

impl RateLimiter {
    /// `qps` > 0 tokens a second, at most `burst` ≥ 1 at once; starts full.
    pub fn new(qps: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps,
            burst,
            bucket: std::sync::Mutex::new(Bucket::full(burst, Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.reserve(self.qps, self.burst, Instant::now())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_burst_then_qps() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        let taken = (0..10).filter(|_| b.try_take(2.0, 3.0, t0)).count();
        assert_eq!(taken, 3, "the burst at once");
        assert!(!b.try_take(2.0, 3.0, t0 + Duration::from_millis(400)));
        assert!(b.try_take(2.0, 3.0, t0 + Duration::from_millis(500)));
        // Idle for long: refilled to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        let taken = (0..10).filter(|_| b.try_take(2.0, 3.0, later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn reservations_queue_up_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2.0, t0);
        let waits: Vec<Duration> = (0..5).map(|_| b.reserve(4.0, 2.0, t0)).collect();
        assert_eq!(
            waits,
            [0, 0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_spaces_requests_by_the_rate() {
        let limiter = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            limiter.acquire().await;
        }
        // 2 at once, then 10 more at 10 a second (the paused clock only moves by the sleeps).
        let elapsed = start.elapsed();
        assert!(
            elapsed > Duration::from_millis(999) && elapsed < Duration::from_millis(1001),
            "{elapsed:?}"
        );
    }
}
