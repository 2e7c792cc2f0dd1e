//! Opening sled databases that may still be closing: sled releases a database directory's
//! file lock from a background thread after the last handle is dropped, so reopening right
//! away in the same process (a restarted consumer's inbox, a reopened registry store) can
//! find the lock still held for a moment. [`open`] waits for it, for a bounded time.

use std::time::{Duration, Instant};

/// How long [`open`] waits for a directory lock held by an instance that is closing.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens `config`'s database, retrying while its directory is locked, up to [`LOCK_WAIT`];
/// any other error (and a lock still held after the wait) is returned as it is.
pub fn open(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_a_closing_instance_to_let_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = sled::Config::new().path(dir.path());
        let first = open(&config).expect("open");
        first.insert("k", "v").expect("insert");
        let closing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        let second = open(&config).expect("opens once the first closed");
        assert_eq!(second.get("k").expect("get").as_deref(), Some(&b"v"[..]));
        closing.join().expect("join");
    }
}
