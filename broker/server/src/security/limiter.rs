//! Failed authentications, counted per source address and per (source, user name): a source
//! that fails [`FAILURES_PER_SOURCE_USER_MAX`] times for one name within [`FAILURE_WINDOW`]
//! is refused further attempts for that name until the window ends, and one that fails
//! [`FAILURES_PER_SOURCE_MAX`] times for any names is refused altogether — on any connection.
//! Guessing one user's password is slowed without locking other users out of a shared
//! address (a NAT, or loopback for the local admin). Pure: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed authentications one source address may make per window for one user name.
pub const FAILURES_PER_SOURCE_USER_MAX: u32 = 10;
/// Failed authentications one source address may make per window, all names together.
pub const FAILURES_PER_SOURCE_MAX: u32 = 100;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Windows remembered (sources and (source, name) pairs); beyond, the oldest are forgotten
/// first.
pub const FAILURE_SOURCES_MAX: usize = 10_000;

/// A source, or a source and a user name.
type Key = (IpAddr, Option<String>);

pub use herald_auth::source::source;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct FailureLimiter {
    sources: HashMap<Key, Window>,
}

impl FailureLimiter {
    /// `Err(wait)` while `source` has used up its failures, all names together or (with a
    /// `user`) for that name: how long until it may try again.
    pub fn check(&self, source: IpAddr, user: Option<&str>, now: Instant) -> Result<(), Duration> {
        self.check_key(&(source, None), FAILURES_PER_SOURCE_MAX, now)?;
        match user {
            Some(user) => self.check_key(
                &(source, Some(user.to_owned())),
                FAILURES_PER_SOURCE_USER_MAX,
                now,
            ),
            None => Ok(()),
        }
    }

    fn check_key(&self, key: &Key, most: u32, now: Instant) -> Result<(), Duration> {
        match self.sources.get(key) {
            Some(window) if window.failures >= most => {
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

    /// Counts a failure of `source` (for `user`, when the name is known).
    pub fn failed(&mut self, source: IpAddr, user: Option<&str>, now: Instant) {
        self.count((source, None), now);
        if let Some(user) = user {
            self.count((source, Some(user.to_owned())), now);
        }
    }

    fn count(&mut self, key: Key, now: Instant) {
        if !self.sources.contains_key(&key) && self.sources.len() >= FAILURE_SOURCES_MAX {
            self.sources
                .retain(|_, window| now.saturating_duration_since(window.start) < FAILURE_WINDOW);
            if self.sources.len() >= FAILURE_SOURCES_MAX {
                if let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, window)| window.start)
                    .map(|(key, _)| key.clone())
                {
                    self.sources.remove(&oldest);
                }
            }
        }
        let window = self.sources.entry(key).or_insert(Window {
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
    fn a_name_is_refused_after_its_failures_until_the_window_ends_and_others_are_not() {
        let mut limiter = FailureLimiter::default();
        let start = Instant::now();
        for i in 0..FAILURES_PER_SOURCE_USER_MAX {
            assert_eq!(
                limiter.check(source(1), Some("admin"), start),
                Ok(()),
                "attempt {i}"
            );
            limiter.failed(
                source(1),
                Some("admin"),
                start + Duration::from_secs(u64::from(i)),
            );
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            limiter.check(source(1), Some("admin"), later),
            Err(FAILURE_WINDOW - Duration::from_secs(20))
        );
        assert_eq!(
            limiter.check(source(1), Some("alice"), later),
            Ok(()),
            "another user from the same address is not locked out"
        );
        assert_eq!(
            limiter.check(source(2), Some("admin"), later),
            Ok(()),
            "nor another source"
        );
        assert_eq!(
            limiter.check(source(1), Some("admin"), start + FAILURE_WINDOW),
            Ok(())
        );
    }

    #[test]
    fn a_source_failing_for_many_names_is_refused_for_all() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for i in 0..FAILURES_PER_SOURCE_MAX {
            limiter.failed(source(1), Some(&format!("user-{i}")), now);
        }
        assert!(limiter.check(source(1), Some("fresh"), now).is_err());
        assert!(limiter.check(source(1), None, now).is_err());
        assert_eq!(limiter.check(source(2), None, now), Ok(()));
    }

    #[test]
    fn the_sources_remembered_are_bounded() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for n in 0..(FAILURE_SOURCES_MAX as u32 + 10) {
            limiter.failed(source(n), None, now);
        }
        assert_eq!(limiter.len(), FAILURE_SOURCES_MAX);
    }
}
