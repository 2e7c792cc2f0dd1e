//! The idempotency-key window: has this key been processed within the last `window`? The
//! in-memory core of the consumer inbox (the SDK persists it in sled); the same window the
//! broker applies to topics with a dedup window — one implementation, in herald-wire.

pub use herald_wire::dedup::KeyWindow;

#[cfg(test)]
mod tests {
    use super::*;

    /// The inbox's use: "seen?" then "remember", with a simulated clock in ms.
    fn check_and_record(window: &mut KeyWindow, key: &[u8], now_ms: i64) -> bool {
        if window.lookup(key, now_ms).is_some() {
            return true;
        }
        window.insert(key, 0, now_ms);
        false
    }

    #[test]
    fn duplicates_within_the_window_are_caught_and_old_keys_forgotten() {
        let mut window = KeyWindow::new(60_000, 3);
        assert!(!check_and_record(&mut window, b"a", 0));
        assert!(check_and_record(&mut window, b"a", 59_000));
        assert!(!check_and_record(&mut window, b"a", 61_000), "expired");
        for key in [b"b", b"c", b"d"] {
            assert!(!check_and_record(&mut window, key, 62_000));
        }
        assert_eq!(window.len(), 3, "bounded");
        assert!(
            !check_and_record(&mut window, b"a", 62_000),
            "the oldest was evicted to stay within capacity"
        );
    }
}
