//! Retry delays: exponential backoff with full jitter, capped, and how a server's `Retry-After`
//! overrides it. Pure functions with an injected random source, so the drain loop can persist
//! `attempts` with each WAL record and recompute the delay after a restart, and tests are deterministic.

use std::time::Duration;

/// Full-jitter delay before retry number `attempt` (0-based): uniform in `[0, min(cap, base·2^attempt))`.
/// Never overflows: a huge `attempt` or `base` saturates at `cap`. `rand01` yields values in `[0, 1)`;
/// anything outside (or NaN) is clamped.
pub fn delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    rand01: &mut impl FnMut() -> f64,
) -> Duration {
    let ceiling = exponential_ceiling(attempt, base, cap);
    let r = rand01();
    let r = if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * r).map_or(ceiling, |d| d.min(ceiling))
}

/// The delay to wait before the next attempt: the server's `Retry-After` when it sent one (capped by
/// `max_retry_after`, so a hostile or confused server cannot park an output for days), else [`delay`].
pub(crate) fn next_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    policy: &BackoffPolicy,
    rand01: &mut impl FnMut() -> f64,
) -> Duration {
    match retry_after {
        Some(after) => after.min(policy.max_retry_after),
        None => delay(attempt, policy.base, policy.cap, rand01),
    }
}

/// Backoff parameters for one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first retry waits up to this long.
    pub base: Duration,
    /// No computed delay exceeds this.
    pub cap: Duration,
    /// No server `Retry-After` is honoured beyond this.
    pub max_retry_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// The production random source for [`delay`].
pub(crate) fn fastrand01() -> f64 {
    fastrand::f64()
}

/// `min(cap, base·2^attempt)` without overflow.
fn exponential_ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    2u32.checked_pow(attempt)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut top = || 1.0;
        let got: Vec<u128> = (0..10)
            .map(|a| delay(a, BASE, CAP, &mut top).as_millis())
            .collect();
        assert_eq!(
            got,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        assert_eq!(delay(3, BASE, CAP, &mut || 0.0), Duration::ZERO);
        assert_eq!(delay(3, BASE, CAP, &mut || 0.5), Duration::from_millis(400));
        assert_eq!(delay(3, BASE, CAP, &mut || f64::NAN), Duration::ZERO);
        assert_eq!(delay(3, BASE, CAP, &mut || 7.0), Duration::from_millis(800));
        assert_eq!(delay(3, BASE, CAP, &mut || -1.0), Duration::ZERO);
    }

    #[test]
    fn huge_attempts_and_bases_saturate() {
        assert_eq!(delay(u32::MAX, BASE, CAP, &mut || 1.0), CAP);
        assert_eq!(delay(31, Duration::MAX, CAP, &mut || 1.0), CAP);
        assert_eq!(
            delay(64, Duration::MAX, Duration::MAX, &mut || 1.0),
            Duration::MAX
        );
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let policy = BackoffPolicy::default();
        let mut never = || -> f64 { panic!("jitter must not be drawn when the server said when") };
        assert_eq!(
            next_delay(9, Some(Duration::from_secs(2)), &policy, &mut never),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_delay(0, Some(Duration::from_secs(86_400)), &policy, &mut never),
            policy.max_retry_after
        );
        assert_eq!(
            next_delay(0, Some(Duration::ZERO), &policy, &mut never),
            Duration::ZERO
        );
        assert_eq!(
            next_delay(2, None, &policy, &mut || 1.0),
            Duration::from_secs(2)
        );
    }

    proptest! {
        #[test]
        fn delay_is_within_bounds(attempt in 0u32..200, base_ms in 0u64..100_000, cap_ms in 0u64..10_000_000, r in 0.0f64..1.0) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(cap_ms);
            let d = delay(attempt, base, cap, &mut || r);
            prop_assert!(d <= cap);
            let ceiling = 2u128.checked_pow(attempt).map_or(u128::MAX, |f| f.saturating_mul(base.as_nanos()));
            prop_assert!(d.as_nanos() <= ceiling);
        }

        #[test]
        fn delay_grows_with_attempt_at_fixed_jitter(attempt in 0u32..100, r in 0.0f64..1.0) {
            let a = delay(attempt, BASE, CAP, &mut || r);
            let b = delay(attempt + 1, BASE, CAP, &mut || r);
            prop_assert!(a <= b);
        }
    }
}
