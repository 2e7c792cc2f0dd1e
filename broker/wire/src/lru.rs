//! A map bounded by entry count that evicts the least recently used entry when full, shared
//! by the broker's schema cache and the SDK's schema caches (both depend on this crate, and
//! no LRU crate is in the dependency tree). Pure: std only, no I/O, no clock (a "tick" below
//! is a step of an internal counter, not time).
//!
//! A cache that clears itself whole when full sends every user back to its source at once;
//! one that evicts the least recently used entry keeps the entries in use and only pushes out
//! cold ones, so a client that sprays fresh keys costs other clients nothing.
//!
//! # Approximate recency
//!
//! Every entry carries a stamp, the tick of its last recorded use; an index of stamps finds
//! the oldest one. A hit re-stamps its entry only when the stamp is at least
//! [`Lru::stale_after`] (half the capacity) ticks old, so a hot entry costs one hash lookup
//! per hit and an index update at most once per half a capacity of ticks, instead of a
//! remove and an insert in the index on every hit. The clock ticks once per stamp handed out
//! (an insert, or a re-stamp), not per hit.
//!
//! What it keeps of exact LRU: an entry used fewer than `capacity - capacity / 2` ticks
//! before an eviction is never the one evicted (a full cache holds `capacity` distinct
//! stamps, so the evicted one is at least `capacity - 1` ticks old, while a use leaves a
//! stamp younger than `capacity / 2` ticks). Among entries not used that recently, eviction
//! follows their last stamp rather than their last use. Up to a capacity of 3 every hit on an entry other than the newest
//! re-stamps it, which is exact LRU.
//!
//! # Complexity
//!
//! With `n` entries: [`Lru::peek`] and [`Lru::len`] are O(1); [`Lru::get`] is O(1), plus
//! O(log n) when it re-stamps; [`Lru::insert`] and [`Lru::remove`] are O(log n). Memory is a
//! hash map entry plus a B-tree entry per key: the key is stored twice (`K: Clone`), so keys
//! that own large data should share it (an `Arc<str>` rather than a `String`, say). Keys are
//! hashed with std's randomly keyed SipHash: they may come from clients (schema IDs in
//! records), and a predictable hash would let a client pile them into one bucket.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map of at most `capacity` entries that evicts the least recently used one (approximately,
/// see the module documentation) to make room.
#[derive(Debug, Clone)]
pub struct Lru<K, V> {
    capacity: usize,
    /// How old (in ticks) a stamp must be for a hit to renew it: `capacity / 2`, at least 1
    /// (so the newest entry is never re-stamped).
    stale_after: u64,
    /// The last stamp handed out. A u64 ticking once per insert or re-stamp does not wrap in
    /// practice (a billion a second for 584 years).
    clock: u64,
    entries: HashMap<K, Slot<V>>,
    /// Every entry's key by its stamp, oldest first: the first one is evicted.
    by_stamp: BTreeMap<u64, K>,
}

#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    /// The tick of its last recorded use, its key in `Lru::by_stamp`.
    stamp: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty cache of at most `capacity` entries (at least one: a capacity of zero holds
    /// one entry, so that an insert is always readable right after).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            stale_after: (capacity / 2).max(1) as u64,
            clock: 0,
            entries: HashMap::new(),
            by_stamp: BTreeMap::new(),
        }
    }

    /// Most entries held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How old (in ticks) an entry's stamp must be for a hit to renew it.
    pub fn stale_after(&self) -> u64 {
        self.stale_after
    }

    /// Entries held now. O(1).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held. O(1).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, as a use: its entry is re-stamped as the newest if its stamp is
    /// [`Self::stale_after`] ticks old or more (see the module documentation). O(1), plus
    /// O(log n) when it re-stamps.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.entries.get_mut(key)?;
        if self.clock.saturating_sub(slot.stamp) >= self.stale_after {
            self.clock += 1;
            // Always found: every entry's stamp is in the index.
            if let Some(owned) = self.by_stamp.remove(&slot.stamp) {
                self.by_stamp.insert(self.clock, owned);
            }
            slot.stamp = self.clock;
        }
        Some(&slot.value)
    }

    /// The value of `key`, not counted as a use. O(1).
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// Stores `value` under `key` as the newest entry. If `key` is new and the cache is full,
    /// the least recently used entry is evicted first and returned. If `key` is present, its
    /// value is replaced (the old one dropped; [`Self::remove`] it first to keep it), nothing
    /// is evicted and `None` is returned. O(log n).
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(slot) = self.entries.get_mut(&key) {
            let owned = self.by_stamp.remove(&slot.stamp).unwrap_or(key);
            self.by_stamp.insert(stamp, owned);
            slot.value = value;
            slot.stamp = stamp;
            return None;
        }
        // One eviction is enough: the cache never holds more than `capacity` entries.
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.by_stamp.pop_first() {
                if let Some(slot) = self.entries.remove(&oldest) {
                    evicted = Some((oldest, slot.value));
                }
            }
        }
        self.by_stamp.insert(stamp, key.clone());
        self.entries.insert(key, Slot { value, stamp });
        evicted
    }

    /// Removes `key`'s entry, returning its value. O(log n).
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.entries.remove(key)?;
        self.by_stamp.remove(&slot.stamp);
        Some(slot.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys from oldest to newest stamp, and the index agreeing with the map.
    fn order<K: Hash + Eq + Clone, V>(lru: &Lru<K, V>) -> Vec<K> {
        assert_eq!(lru.entries.len(), lru.by_stamp.len());
        for (stamp, key) in &lru.by_stamp {
            assert_eq!(lru.entries.get(key).map(|slot| slot.stamp), Some(*stamp));
        }
        lru.by_stamp.values().cloned().collect()
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_entry_and_returns_it() {
        let mut lru = Lru::new(3);
        for n in 1..=3 {
            assert_eq!(lru.insert(n, n * 10), None);
        }
        // 1 is used: 2 is now the least recently used.
        assert_eq!(lru.get(&1), Some(&10));
        assert_eq!(lru.insert(4, 40), Some((2, 20)));
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.get(&1), Some(&10));
        assert_eq!(lru.get(&3), Some(&30));
        assert_eq!(lru.get(&4), Some(&40));
        // Replacing a value takes no room, evicts nothing and counts as a use: 1 is now the
        // least recently used (1, 3, 4 were read in that order, then 3 replaced).
        assert_eq!(lru.insert(3, 33), None);
        assert_eq!(lru.insert(5, 50), Some((1, 10)));
        assert_eq!(lru.get(&3), Some(&33));
        assert_eq!(order(&lru), vec![4, 5, 3]);
    }

    #[test]
    fn peek_is_not_a_use_and_remove_frees_room() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.peek("a"), Some(&1));
        // "a" was only peeked at: still the least recently used.
        assert_eq!(lru.insert("c", 3), Some(("a", 1)));
        assert_eq!(lru.remove("b"), Some(2));
        assert_eq!(lru.remove("b"), None);
        assert_eq!((lru.len(), lru.is_empty()), (1, false));
        assert_eq!(lru.insert("d", 4), None, "room was freed");
        assert_eq!(order(&lru), vec!["c", "d"]);
    }

    #[test]
    fn keys_are_looked_up_borrowed() {
        let mut lru: Lru<String, u32> = Lru::new(4);
        lru.insert("orders".to_owned(), 1);
        assert_eq!(lru.get("orders"), Some(&1));
        assert_eq!(lru.peek("orders"), Some(&1));
        assert_eq!(lru.remove("orders"), Some(1));
        assert!(lru.is_empty());
    }

    #[test]
    fn a_capacity_of_zero_holds_one_entry() {
        let mut lru = Lru::new(0);
        assert_eq!(lru.capacity(), 1);
        assert_eq!(lru.insert(1, ()), None);
        assert_eq!(lru.get(&1), Some(&()));
        assert_eq!(lru.insert(2, ()), Some((1, ())));
        assert_eq!((lru.len(), lru.get(&2)), (1, Some(&())));
    }

    #[test]
    fn a_recent_hit_does_not_touch_the_index() {
        let mut lru = Lru::new(100);
        assert_eq!(lru.stale_after(), 50);
        for n in 0..100 {
            lru.insert(n, n);
        }
        // 60 was stamped 39 ticks ago: a hit leaves it (and the clock) as they are.
        let clock = lru.clock;
        assert_eq!(lru.get(&60), Some(&60));
        assert_eq!(lru.entries.get(&60).map(|slot| slot.stamp), Some(61));
        assert_eq!(lru.clock, clock);
        // 10 was stamped 89 ticks ago: renewed as the newest.
        assert_eq!(lru.get(&10), Some(&10));
        assert_eq!(lru.entries.get(&10).map(|slot| slot.stamp), Some(clock + 1));
        assert_eq!(order(&lru).last(), Some(&10));
    }

    #[test]
    fn an_entry_hit_between_inserts_is_never_evicted() {
        // A hot key read after every insert of a stream of cold keys stays, and is re-stamped
        // about once per half a capacity of inserts, not once per hit.
        for capacity in [1, 2, 3, 4, 5, 16, 100] {
            let mut lru = Lru::new(capacity);
            lru.insert(u32::MAX, 0);
            let mut restamps = 0;
            for cold in 0..10_000 {
                let evicted = lru.insert(cold, cold);
                if capacity > 1 {
                    assert_ne!(evicted.map(|(key, _)| key), Some(u32::MAX), "{capacity}");
                    let before = lru.entries.get(&u32::MAX).map(|slot| slot.stamp);
                    assert_eq!(lru.get(&u32::MAX), Some(&0), "capacity {capacity}");
                    if lru.entries.get(&u32::MAX).map(|slot| slot.stamp) != before {
                        restamps += 1;
                    }
                }
                assert!(lru.len() <= capacity);
            }
            if capacity >= 16 {
                assert!(
                    restamps <= 10_000 / (capacity / 2 - 1),
                    "capacity {capacity}: {restamps} re-stamps"
                );
            }
            order(&lru);
        }
    }

    #[test]
    fn entries_used_within_half_the_capacity_are_never_evicted() {
        // Against exact recency: whenever an entry is evicted, it was not used within the
        // last `capacity - capacity / 2` ticks, with keys drawn from a pseudo-random mix of
        // hits and inserts (a fixed xorshift sequence).
        let capacity = 10;
        let window = (capacity - capacity / 2) as u64;
        let mut lru = Lru::new(capacity);
        // Tick of each key's last use, as the clock counted then.
        let mut used: HashMap<u32, u64> = HashMap::new();
        let mut state: u32 = 0x2545_f491;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let key = state % 40;
            if state.is_multiple_of(3) {
                if lru.get(&key).is_some() {
                    used.insert(key, lru.clock);
                }
            } else {
                let clock_before = lru.clock;
                if let Some((evicted, _)) = lru.insert(key, ()) {
                    let last_use = used.get(&evicted).copied().unwrap_or(0);
                    assert!(
                        clock_before - last_use >= window,
                        "{evicted} used at {last_use}, evicted at {clock_before}"
                    );
                }
                used.insert(key, lru.clock);
            }
        }
        order(&lru);
    }
}
