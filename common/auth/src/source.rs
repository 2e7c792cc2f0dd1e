//! Which source a peer address counts as, for limits per source (failed authentications,
//! connections): IPv4 addresses as they are (also when mapped into IPv6), other IPv6 addresses
//! by their /64 — one host usually holds a whole /64 and could otherwise move to a fresh
//! address for every attempt.

use std::net::{IpAddr, Ipv6Addr};

/// The source `address` counts as.
pub fn source(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(source(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
        let v4: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(source(v4), v4);
    }
}

/// Counts what each source holds at once (connections), up to a limit per source: a slot is
/// taken with [`SourceSlots::take`] and given back when the [`SourceSlot`] is dropped. The map
/// holds only sources with a slot taken, so it is bounded by the slots in use.
#[derive(Debug, Clone)]
pub struct SourceSlots {
    limit: usize,
    counts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
}

/// One slot of one source, given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    slots: SourceSlots,
    source: IpAddr,
}

impl SourceSlots {
    /// At most `limit` slots per source.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Default::default(),
        }
    }

    /// A slot for the source of `address`, or `None` when it holds its limit already.
    pub fn take(&self, address: IpAddr) -> Option<SourceSlot> {
        let source = source(address);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(source).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            slots: self.clone(),
            source,
        })
    }

    /// Slots the source of `address` holds.
    pub fn held(&self, address: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&source(address)).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_limit_and_gets_slots_back_when_dropped() {
        let slots = SourceSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = slots.take(a).expect("first");
        let _second = slots.take(a).expect("second");
        assert!(slots.take(a).is_none(), "a third is refused");
        assert!(slots.take(b).is_some(), "another source is not affected");
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.take(a).is_some(), "a slot given back is taken again");
    }
}

/// Refusal warnings at most once per [`REFUSALS_LOG_INTERVAL`]: a peer opening connections as
/// fast as it can must not flood the log with one line per refused connection. Free of I/O:
/// the caller passes `now` and logs when told to, with the count of refusals not logged since.
#[derive(Debug, Default)]
pub struct RefusalLog {
    state: std::sync::Mutex<RefusalLogState>,
}

#[derive(Debug, Default)]
struct RefusalLogState {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

/// How often a kind of refusal may be logged.
pub const REFUSALS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl RefusalLog {
    /// Counts one refusal at `now`. `Some(n)` when it is to be logged, `n` being the refusals
    /// not logged since the last line; `None` when it is only counted.
    pub fn refused(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= REFUSALS_LOG_INTERVAL);
        if !due {
            state.unlogged = state.unlogged.saturating_add(1);
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.unlogged))
    }
}

#[cfg(test)]
mod refusal_log_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_flood_of_refusals_logs_one_line_a_second_with_the_count_skipped() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.refused(start), Some(0));
        for n in 1..1000 {
            assert_eq!(log.refused(start + Duration::from_micros(n)), None);
        }
        assert_eq!(log.refused(start + REFUSALS_LOG_INTERVAL), Some(999));
        assert_eq!(
            log.refused(start + REFUSALS_LOG_INTERVAL + Duration::from_millis(1)),
            None
        );
        assert_eq!(log.refused(start + 3 * REFUSALS_LOG_INTERVAL), Some(1));
        // A clock that reads earlier (another thread's `now`) counts, never panics.
        assert_eq!(log.refused(start), None);
    }
}
