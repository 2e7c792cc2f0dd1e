//! A count-window circuit breaker (Resilience4j's model, with the SDK's defaults): it records
//! the outcomes of the last `window` calls; once at least `minimum_calls` are recorded and
//! the failure rate reaches the threshold it opens and rejects calls for `open_duration`;
//! then it lets `half_open_probes` calls through and closes if their failure rate is below
//! the threshold, or opens again. A consumer pauses while its breaker is open.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes remembered while closed.
    pub window: usize,
    /// Outcomes needed before the rate is judged.
    pub minimum_calls: usize,
    /// Failure rate (0..=1) at which the breaker opens.
    pub failure_rate_threshold: f64,
    pub open_duration: Duration,
    /// Calls let through while half-open before deciding.
    pub half_open_probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 100,
            minimum_calls: 20,
            failure_rate_threshold: 0.5,
            open_duration: Duration::from_secs(30),
            half_open_probes: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl BreakerState {
    /// The state as a metric value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open { .. } => 2.0,
        }
    }
}

/// The answer to "may I call now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Allowed,
    /// Fail fast; the breaker may let a probe through after `retry_after`.
    Rejected {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    outcomes: VecDeque<bool>,
    /// Failures among `outcomes`, kept as they change (the rate is read on every failure).
    failures: usize,
    probes_started: usize,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            outcomes: VecDeque::with_capacity(config.window),
            failures: 0,
            probes_started: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Closed with a full window of successes: another success changes nothing and every
    /// call is allowed (a healthy steady state callers may skip recording in).
    pub fn success_changes_nothing(&self) -> bool {
        self.state == BreakerState::Closed
            && self.config.window > 0
            && self.outcomes.len() == self.config.window
            && self.failures == 0
    }

    /// Whether calls are being refused now, without asking for (and using up) a half-open
    /// probe: for deciding whether to fetch at all.
    pub fn is_rejecting(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open { until } => now < until,
            BreakerState::HalfOpen => self.probes_started >= self.config.half_open_probes,
        }
    }

    /// Asks before a call; half-open admits at most `half_open_probes` calls.
    pub fn allow(&mut self, now: Instant) -> Permission {
        match self.state {
            BreakerState::Closed => Permission::Allowed,
            BreakerState::Open { until } if now < until => Permission::Rejected {
                retry_after: until - now,
            },
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                self.clear_outcomes();
                self.probes_started = 1;
                Permission::Allowed
            }
            BreakerState::HalfOpen if self.probes_started < self.config.half_open_probes => {
                self.probes_started += 1;
                Permission::Allowed
            }
            BreakerState::HalfOpen => Permission::Rejected {
                retry_after: Duration::ZERO,
            },
        }
    }

    pub fn on_success(&mut self, now: Instant) {
        self.record(true, now);
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.record(false, now);
    }

    fn failure_rate(&self) -> f64 {
        self.failures as f64 / self.outcomes.len().max(1) as f64
    }

    fn push_outcome(&mut self, success: bool) {
        self.outcomes.push_back(success);
        if !success {
            self.failures += 1;
        }
    }

    fn clear_outcomes(&mut self) {
        self.outcomes.clear();
        self.failures = 0;
    }

    fn record(&mut self, success: bool, now: Instant) {
        match self.state {
            // A late outcome of a call made before opening changes nothing.
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                if self.outcomes.len() == self.config.window
                    && self.outcomes.pop_front() == Some(false)
                {
                    self.failures -= 1;
                }
                self.push_outcome(success);
                // Past the minimum, a success never raises the failure rate: the rate is
                // judged on a failure, or when the minimum is first reached.
                if (!success || self.outcomes.len() == self.config.minimum_calls)
                    && self.outcomes.len() >= self.config.minimum_calls
                    && self.failure_rate() >= self.config.failure_rate_threshold
                {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => {
                self.push_outcome(success);
                if self.outcomes.len() >= self.config.half_open_probes {
                    if self.failure_rate() >= self.config.failure_rate_threshold {
                        self.open(now);
                    } else {
                        self.state = BreakerState::Closed;
                        self.clear_outcomes();
                    }
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.config.open_duration,
        };
        self.clear_outcomes();
        self.probes_started = 0;
    }
}

/// A breaker shared by the tasks of one producer or consumer: decisions are made under a
/// lock, but the per-call path takes none while it can answer without one — `allow` while
/// closed (a closed breaker allows every call and is not changed by asking), `record` of a
/// success while steady (closed with a full window of successes: a success changes
/// nothing). Both flags are set under the lock after every change.
#[derive(Debug)]
pub struct SharedBreaker {
    breaker: std::sync::Mutex<CircuitBreaker>,
    closed: std::sync::atomic::AtomicBool,
    steady: std::sync::atomic::AtomicBool,
}

impl SharedBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            breaker: std::sync::Mutex::new(CircuitBreaker::new(config)),
            closed: std::sync::atomic::AtomicBool::new(true),
            steady: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, breaker: &CircuitBreaker) {
        use std::sync::atomic::Ordering::Relaxed;
        self.closed
            .store(breaker.state == BreakerState::Closed, Relaxed);
        self.steady
            .store(breaker.success_changes_nothing(), Relaxed);
    }

    /// Permission for a call; `now` is read only when the breaker is not closed.
    pub fn allow(&self, now: impl FnOnce() -> Instant) -> Permission {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Permission::Allowed;
        }
        let mut breaker = self.lock();
        let permission = breaker.allow(now());
        self.publish(&breaker);
        permission
    }

    /// Whether every call would be refused now (without using up a half-open probe).
    pub fn is_rejecting(&self, now: impl FnOnce() -> Instant) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::Relaxed) && self.lock().is_rejecting(now())
    }

    /// Records a call's outcome; the state after it, or `None` when nothing could change (a
    /// success while steady).
    pub fn record(&self, success: bool, now: Instant) -> Option<BreakerState> {
        if success && self.steady.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut breaker = self.lock();
        if success {
            breaker.on_success(now);
        } else {
            breaker.on_failure(now);
        }
        self.publish(&breaker);
        Some(breaker.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_success_in_the_steady_state_changes_nothing(outcomes in proptest::collection::vec(proptest::bool::weighted(0.9), 0..300)) {
            let start = Instant::now();
            let config = BreakerConfig { window: 16, minimum_calls: 8, ..BreakerConfig::default() };
            let mut breaker = CircuitBreaker::new(config);
            for (i, success) in outcomes.into_iter().enumerate() {
                let now = start + Duration::from_secs(i as u64 * 100);
                if breaker.success_changes_nothing() {
                    let before = breaker.clone();
                    breaker.on_success(now);
                    proptest::prop_assert_eq!(&breaker, &before);
                    proptest::prop_assert_eq!(breaker.allow(now), Permission::Allowed);
                }
                let _ = breaker.allow(now);
                if success { breaker.on_success(now) } else { breaker.on_failure(now) }
            }
        }

        #[test]
        fn the_failure_count_matches_the_window(outcomes in proptest::collection::vec(proptest::bool::ANY, 0..400)) {
            let start = Instant::now();
            let config = BreakerConfig { window: 16, minimum_calls: 8, ..BreakerConfig::default() };
            let mut breaker = CircuitBreaker::new(config);
            let mut reference: VecDeque<bool> = VecDeque::new();
            for (i, success) in outcomes.into_iter().enumerate() {
                let now = start + Duration::from_secs(i as u64 * 100);
                if breaker.allow(now) == Permission::Allowed {
                    if breaker.state() == BreakerState::Closed {
                        if reference.len() == config.window {
                            reference.pop_front();
                        }
                        reference.push_back(success);
                        let failures = reference.iter().filter(|ok| !**ok).count();
                        let opens = reference.len() >= config.minimum_calls
                            && failures as f64 / reference.len() as f64 >= config.failure_rate_threshold;
                        breaker.record(success, now);
                        proptest::prop_assert_eq!(breaker.state() != BreakerState::Closed, opens);
                        if opens { reference.clear(); }
                    } else {
                        breaker.record(success, now);
                        if breaker.state() != BreakerState::HalfOpen { reference.clear(); }
                    }
                }
                proptest::prop_assert_eq!(breaker.failures, breaker.outcomes.iter().filter(|ok| !**ok).count());
            }
        }
    }

    #[test]
    fn asking_whether_it_rejects_uses_up_no_probe() {
        let start = Instant::now();
        let config = BreakerConfig {
            minimum_calls: 2,
            half_open_probes: 1,
            ..BreakerConfig::default()
        };
        let mut breaker = CircuitBreaker::new(config);
        breaker.on_failure(start);
        breaker.on_failure(start);
        assert!(breaker.is_rejecting(start));
        let later = start + config.open_duration;
        for _ in 0..5 {
            assert!(
                !breaker.is_rejecting(later),
                "open period over: a probe may go"
            );
        }
        assert_eq!(breaker.allow(later), Permission::Allowed);
        assert!(breaker.is_rejecting(later), "the one probe is out");
        breaker.on_success(later);
        assert!(!breaker.is_rejecting(later));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_rate_rejects_then_probes_and_closes() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for n in 0..19 {
            assert_eq!(breaker.allow(start), Permission::Allowed);
            breaker.on_failure(start + Duration::from_millis(n));
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "not judged before 20 calls"
        );
        breaker.on_failure(start);
        let opened = breaker.state();
        assert!(matches!(opened, BreakerState::Open { .. }));
        assert_eq!(
            breaker.allow(start + Duration::from_secs(10)),
            Permission::Rejected {
                retry_after: Duration::from_secs(20)
            }
        );
        let later = start + Duration::from_secs(31);
        for _ in 0..10 {
            assert_eq!(breaker.allow(later), Permission::Allowed);
        }
        assert_eq!(
            breaker.allow(later),
            Permission::Rejected {
                retry_after: Duration::ZERO
            },
            "only ten probes"
        );
        for n in 0..10 {
            if n < 3 {
                breaker.on_failure(later)
            } else {
                breaker.on_success(later)
            }
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "30 % failures among probes closes it"
        );
    }

    #[test]
    fn failing_probes_open_it_again_and_a_healthy_mix_stays_closed() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig {
            minimum_calls: 4,
            half_open_probes: 2,
            ..BreakerConfig::default()
        });
        for _ in 0..4 {
            breaker.on_failure(start);
        }
        let later = start + Duration::from_secs(30);
        assert_eq!(breaker.allow(later), Permission::Allowed);
        breaker.on_failure(later);
        breaker.on_failure(later);
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: later + Duration::from_secs(30)
            }
        );
        let mut healthy = CircuitBreaker::new(BreakerConfig::default());
        for n in 0..1_000 {
            if n % 3 == 0 {
                healthy.on_failure(start)
            } else {
                healthy.on_success(start)
            }
        }
        assert_eq!(
            healthy.state(),
            BreakerState::Closed,
            "33 % failures stay under 50 %"
        );
    }

    #[test]
    fn the_shared_breaker_answers_closed_and_steady_calls_without_its_lock_or_clock() {
        let start = Instant::now();
        let config = BreakerConfig {
            window: 4,
            minimum_calls: 4,
            ..BreakerConfig::default()
        };
        let shared = SharedBreaker::new(config);
        let no_clock = || -> Instant { panic!("a closed breaker reads no clock") };
        assert_eq!(shared.allow(no_clock), Permission::Allowed);
        assert!(!shared.is_rejecting(no_clock));
        // Filling the window changes the breaker; once full of successes, nothing does.
        for _ in 0..4 {
            assert_eq!(shared.record(true, start), Some(BreakerState::Closed));
        }
        assert_eq!(shared.record(true, start), None, "steady");
        // Failures past the threshold open it: calls are refused, and the clock is read.
        for _ in 0..4 {
            shared.record(false, start);
        }
        assert!(matches!(
            shared.allow(|| start),
            Permission::Rejected { .. }
        ));
        assert!(shared.is_rejecting(|| start));
        let later = start + config.open_duration;
        assert_eq!(
            shared.allow(|| later),
            Permission::Allowed,
            "half-open probe"
        );
    }
}
