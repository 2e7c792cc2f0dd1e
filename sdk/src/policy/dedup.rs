//! An idempotency-key window: has this key been processed within the last `window`? The
//! in-memory core of the consumer inbox (the SDK persists it); bounded by `capacity`, oldest
//! keys forgotten first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    seen: HashMap<Vec<u8>, Instant>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl DedupWindow {
    /// Keys are remembered for `window` (default 30 min for the inbox), at most `capacity`.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True if `key` was recorded within the window; records it otherwise.
    pub fn check_and_record(&mut self, key: &[u8], now: Instant) -> bool {
        self.expire(now);
        if self.seen.contains_key(key) {
            return true;
        }
        while self.seen.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.to_vec(), now);
        self.order.push_back((now, key.to_vec()));
        false
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_are_caught_and_old_keys_forgotten() {
        let start = Instant::now();
        let mut window = DedupWindow::new(Duration::from_secs(60), 3);
        assert!(!window.check_and_record(b"a", start));
        assert!(window.check_and_record(b"a", start + Duration::from_secs(59)));
        assert!(
            !window.check_and_record(b"a", start + Duration::from_secs(61)),
            "expired"
        );
        for key in [b"b", b"c", b"d"] {
            assert!(!window.check_and_record(key, start + Duration::from_secs(62)));
        }
        assert_eq!(window.len(), 3, "bounded");
        assert!(
            !window.check_and_record(b"a", start + Duration::from_secs(62)),
            "the oldest was evicted to stay within capacity"
        );
    }
}
