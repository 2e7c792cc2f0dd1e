//! The idempotency-key window both ends apply to the `idempotency-key` header: a broker
//! topic's optional duplicate window (NATS's, per partition: a record whose key was stored
//! within the window is acknowledged without being stored again) and the core of the SDK
//! consumer's inbox. Pure: time is a parameter (ms), so it is tested with a simulated clock.
//! Bounded: beyond `keys_max` the oldest keys are forgotten first.

use std::collections::{HashMap, VecDeque};

/// Keys a broker partition's window remembers at most.
pub const DEDUP_KEYS_MAX: usize = 100_000;
/// Longest idempotency key considered, in bytes (longer keys are not deduplicated).
pub const DEDUP_KEY_BYTES_MAX: usize = 256;

/// Keys seen within the window, each with a value (the broker: the offset it was stored at).
#[derive(Debug, Clone)]
pub struct KeyWindow {
    window_ms: i64,
    keys_max: usize,
    seen: HashMap<Vec<u8>, (i64, i64)>,
    /// (stored at ms, key) in insertion order, for expiry.
    order: VecDeque<(i64, Vec<u8>)>,
}

impl KeyWindow {
    pub fn new(window_ms: i64, keys_max: usize) -> Self {
        Self {
            window_ms,
            keys_max: keys_max.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < self.window_ms && self.order.len() <= self.keys_max {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // Only the entry this queue slot describes: a re-insert refreshed the key.
                if self.seen.get(&key).is_some_and(|(_, stored)| *stored == at) {
                    self.seen.remove(&key);
                }
            }
        }
    }

    /// The value recorded with `key`, if that was within the window.
    pub fn lookup(&mut self, key: &[u8], now_ms: i64) -> Option<i64> {
        self.expire(now_ms);
        self.seen.get(key).map(|(offset, _)| *offset)
    }

    /// Remembers `key` with `offset` (any value the caller wants back) at `now_ms`.
    pub fn insert(&mut self, key: &[u8], offset: i64, now_ms: i64) {
        if key.len() > DEDUP_KEY_BYTES_MAX {
            return;
        }
        self.seen.insert(key.to_vec(), (offset, now_ms));
        self.order.push_back((now_ms, key.to_vec()));
        self.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_after_the_window_and_beyond_the_bound() {
        let mut window = KeyWindow::new(1000, 3);
        window.insert(b"a", 10, 0);
        assert_eq!(window.lookup(b"a", 999), Some(10));
        assert_eq!(window.lookup(b"a", 1000), None, "window is half-open");
        for (i, key) in [b"b", b"c", b"d", b"e"].iter().enumerate() {
            window.insert(*key, i as i64, 2000);
        }
        assert_eq!(window.len(), 3, "bounded");
        assert_eq!(window.lookup(b"b", 2000), None, "the oldest went first");
        assert_eq!(window.lookup(b"e", 2000), Some(3));
        // Re-inserting refreshes the key's time.
        window.insert(b"e", 3, 2900);
        assert_eq!(window.lookup(b"e", 3500), Some(3));
        window.insert(&[0; DEDUP_KEY_BYTES_MAX + 1], 1, 3500);
        assert_eq!(window.lookup(&[0; DEDUP_KEY_BYTES_MAX + 1], 3500), None);
    }
}
