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
