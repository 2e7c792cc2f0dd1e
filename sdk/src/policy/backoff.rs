//! Exponential backoff with full jitter: the delay before retry `n` (1-based) is uniform in
//! `[0, min(cap, base * 2^(n-1))]` — what the AWS SDKs ship and the fewest-calls choice in
//! AWS's analysis. A retry is refused once attempts run out or when waiting would pass the
//! delivery deadline.

use std::time::Duration;

/// Backoff and limits for one kind of retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
    /// Attempts in total, the first included; `None` retries until the deadline.
    pub max_attempts: Option<u32>,
    /// Time from the first attempt after which nothing is retried (Kafka's
    /// `delivery.timeout.ms`); `None` has no deadline.
    pub deadline: Option<Duration>,
}

impl RetryPolicy {
    /// Producer sends: base 100 ms, cap 10 s, until a 120 s delivery timeout.
    pub const PRODUCER: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
        max_attempts: None,
        deadline: Some(Duration::from_secs(120)),
    };
    /// Consumer in-handler retries: 3 attempts in total, base 200 ms, cap 5 s.
    pub const HANDLER: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(5),
        max_attempts: Some(3),
        deadline: None,
    };
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    AttemptsExhausted { attempts: u32 },
    DeadlinePassed { elapsed: Duration },
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    GiveUp(GiveUp),
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << shift)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// After `attempts` failed attempts, `elapsed` since the first one, with `uniform` a
    /// sample of U[0, 1): retry after a full-jitter delay, or give up.
    pub fn decide(&self, attempts: u32, elapsed: Duration, uniform: f64) -> RetryDecision {
        if let Some(max) = self.max_attempts {
            if attempts >= max {
                return RetryDecision::GiveUp(GiveUp::AttemptsExhausted { attempts });
            }
        }
        let delay = self.ceiling(attempts).mul_f64(uniform.clamp(0.0, 1.0));
        if let Some(deadline) = self.deadline {
            if elapsed + delay >= deadline {
                return RetryDecision::GiveUp(GiveUp::DeadlinePassed { elapsed });
            }
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let policy = RetryPolicy::PRODUCER;
        let ceilings: Vec<u128> = (1..=9).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(
            ceilings,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(
            policy.ceiling(1_000),
            Duration::from_secs(10),
            "no overflow"
        );
    }

    #[test]
    fn attempts_and_deadlines_end_retries() {
        let handler = RetryPolicy::HANDLER;
        assert!(matches!(
            handler.decide(1, Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(_)
        ));
        assert!(matches!(
            handler.decide(2, Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            handler.decide(3, Duration::ZERO, 0.5),
            RetryDecision::GiveUp(GiveUp::AttemptsExhausted { attempts: 3 })
        );
        let producer = RetryPolicy::PRODUCER;
        assert_eq!(
            producer.decide(1, Duration::from_secs(10), 0.0),
            RetryDecision::RetryAfter(Duration::ZERO)
        );
        assert!(
            matches!(
                producer.decide(20, Duration::from_millis(115_000), 0.9),
                RetryDecision::GiveUp(GiveUp::DeadlinePassed { .. })
            ),
            "a wait past the delivery timeout is not taken"
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_full_jitter_bounds(attempt in 1u32..40, uniform in 0.0f64..1.0) {
            let policy = RetryPolicy::PRODUCER;
            if let RetryDecision::RetryAfter(delay) = policy.decide(attempt, Duration::ZERO, uniform) {
                prop_assert!(delay <= policy.ceiling(attempt));
                prop_assert!(delay <= policy.cap);
            }
        }
    }
}
