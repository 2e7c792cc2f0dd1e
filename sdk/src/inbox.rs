//! The consumer inbox: idempotency keys processed within a window, persisted in sled so that
//! a restarted consumer still skips what it already handled. Bounded by a key count; the
//! oldest keys go first. Time is a parameter (`now_ms`) so the rules are tested without
//! waiting.

use std::path::Path;

/// Inbox defaults: a 30-minute window (longer than any retry or redelivery horizon).
pub const INBOX_WINDOW_MS_DEFAULT: i64 = 30 * 60 * 1000;
/// Keys remembered at most.
pub const INBOX_KEYS_MAX_DEFAULT: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
#[error("inbox storage: {0}")]
pub struct InboxError(#[from] sled::Error);

pub struct Inbox {
    keys: sled::Tree,
    by_time: sled::Tree,
    db: sled::Db,
    window_ms: i64,
    keys_max: usize,
}

impl Inbox {
    /// Opens (or creates) the inbox at `path`. While the directory is still locked by an
    /// instance that is closing, waits up to [`herald_sled::LOCK_WAIT`].
    pub fn open(path: &Path, window_ms: i64, keys_max: usize) -> Result<Self, InboxError> {
        let db = herald_sled::open(
            &sled::Config::new()
                .path(path)
                .cache_capacity(8 * 1024 * 1024),
        )?;
        Ok(Self {
            keys: db.open_tree("keys")?,
            by_time: db.open_tree("by_time")?,
            db,
            window_ms,
            keys_max: keys_max.max(1),
        })
    }

    /// Whether `key` was processed within the window.
    pub fn seen(&self, key: &[u8], now_ms: i64) -> Result<bool, InboxError> {
        Ok(self
            .keys
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes)
            .is_some_and(|at| now_ms - at < self.window_ms))
    }

    /// Records `key` as processed (after the handler succeeded), durably.
    pub fn record(&self, key: &[u8], now_ms: i64) -> Result<(), InboxError> {
        self.expire(now_ms)?;
        if let Some(previous) = self.keys.insert(key, &now_ms.to_be_bytes())? {
            self.by_time.remove(time_key(&previous, key))?;
        }
        self.by_time
            .insert(time_key(&now_ms.to_be_bytes(), key), &[])?;
        while self.keys.len() > self.keys_max {
            let Some((oldest, _)) = self.by_time.pop_min()? else {
                break;
            };
            self.keys.remove(&oldest[8..])?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn expire(&self, now_ms: i64) -> Result<(), InboxError> {
        while let Some((entry, _)) = self.by_time.first()? {
            let at = <[u8; 8]>::try_from(&entry[..8])
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if now_ms - at < self.window_ms {
                break;
            }
            self.by_time.remove(&entry)?;
            self.keys.remove(&entry[8..])?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("keys", &self.keys.len())
            .field("window_ms", &self.window_ms)
            .field("keys_max", &self.keys_max)
            .finish()
    }
}

fn time_key(at: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = at.to_vec();
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_across_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let inbox = Inbox::open(dir.path(), 1_000, 3).expect("open");
            inbox.record(b"a", 0).expect("record");
            assert!(inbox.seen(b"a", 999).expect("seen"));
            assert!(
                !inbox.seen(b"a", 1_000).expect("seen"),
                "outside the window"
            );
        }
        let inbox = Inbox::open(dir.path(), 1_000, 3).expect("reopen");
        assert!(inbox.seen(b"a", 10).expect("seen"), "survives a restart");
        for key in [b"b", b"c", b"d"] {
            inbox.record(key, 20).expect("record");
        }
        assert_eq!(inbox.len(), 3, "bounded");
        assert!(
            !inbox.seen(b"a", 30).expect("seen"),
            "the oldest went first"
        );
        inbox.record(b"e", 5_000).expect("record");
        assert_eq!(inbox.len(), 1, "expired keys are purged");
    }
}
