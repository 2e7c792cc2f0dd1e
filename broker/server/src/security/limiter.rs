//! Failed authentications, counted per source address: a source that fails
//! [`FAILURES_PER_SOURCE_MAX`] times within [`FAILURE_WINDOW`] is refused further attempts
//! until its window ends, on any connection. Pure: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed authentications one source address may make per window.
pub const FAILURES_PER_SOURCE_MAX: u32 = 10;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses remembered; beyond, the oldest windows are forgotten first.
pub const FAILURE_SOURCES_MAX: usize = 10_000;

pub use herald_auth::source::source;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct FailureLimiter {
    sources: HashMap<IpAddr, Window>,
}

impl FailureLimiter {
    /// `Err(wait)` while `source` has used up its failures: how long until it may try again.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.sources.get(&source) {
            Some(window) if window.failures >= FAILURES_PER_SOURCE_MAX => {
                let ends = window.start + FAILURE_WINDOW;
                if now < ends {
                    Err(ends - now)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure of `source`.
    pub fn failed(&mut self, source: IpAddr, now: Instant) {
        if !self.sources.contains_key(&source) && self.sources.len() >= FAILURE_SOURCES_MAX {
            self.sources
                .retain(|_, window| now.saturating_duration_since(window.start) < FAILURE_WINDOW);
            if self.sources.len() >= FAILURE_SOURCES_MAX {
                if let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, window)| window.start)
                    .map(|(source, _)| *source)
                {
                    self.sources.remove(&oldest);
                }
            }
        }
        let window = self.sources.entry(source).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.start) >= FAILURE_WINDOW {
            *window = Window {
                start: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn source(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_source_is_refused_after_its_failures_until_the_window_ends() {
        let mut limiter = FailureLimiter::default();
        let start = Instant::now();
        for i in 0..FAILURES_PER_SOURCE_MAX {
            assert_eq!(limiter.check(source(1), start), Ok(()), "attempt {i}");
            limiter.failed(source(1), start + Duration::from_secs(u64::from(i)));
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            limiter.check(source(1), later),
            Err(FAILURE_WINDOW - Duration::from_secs(20))
        );
        assert_eq!(
            limiter.check(source(2), later),
            Ok(()),
            "other sources are not affected"
        );
        assert_eq!(limiter.check(source(1), start + FAILURE_WINDOW), Ok(()));
        // A new window starts from zero.
        limiter.failed(source(1), start + FAILURE_WINDOW);
        assert_eq!(limiter.check(source(1), start + FAILURE_WINDOW), Ok(()));
    }

    #[test]
    fn the_sources_remembered_are_bounded() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for n in 0..(FAILURE_SOURCES_MAX as u32 + 10) {
            limiter.failed(source(n), now);
        }
        assert_eq!(limiter.len(), FAILURE_SOURCES_MAX);
    }
}
