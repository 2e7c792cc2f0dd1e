//! A file read again when it changes: the users file and the stored ACLs, which one process
//! (the CLI, the broker) rewrites and another (the broker, the registry) serves from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What tells a changed file: modification time, length and inode.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    // Herald's files are replaced by a rename on every change: a new inode even when the
    // size and the modification time (coarse on some file systems) are the same.
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

/// The value read from a file, read again (by `read`) when the file changes. The file is
/// looked at (one `stat`) at most once per `recheck`.
pub struct FileWatch<T> {
    path: PathBuf,
    recheck: Duration,
    checked_at: Option<Instant>,
    stamp: Option<Stamp>,
    value: Arc<T>,
    read: Reader<T>,
}

type Reader<T> = Box<dyn Fn(&Path) -> Result<T, String> + Send + Sync>;

impl<T: std::fmt::Debug> std::fmt::Debug for FileWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("path", &self.path)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl<T> FileWatch<T> {
    /// Reads `path` with `read` and watches it.
    pub fn load<E: std::fmt::Display + 'static>(
        path: &Path,
        recheck: Duration,
        read: impl Fn(&Path) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        // The stamp before the read: a change in between is seen at the next look.
        let stamp = stamp(path);
        let value = read(path)?;
        Ok(Self::new(path, value, stamp, recheck, read))
    }

    fn new<E: std::fmt::Display + 'static>(
        path: &Path,
        value: T,
        stamp: Option<Stamp>,
        recheck: Duration,
        read: impl Fn(&Path) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        Self {
            path: path.to_owned(),
            recheck,
            checked_at: None,
            stamp,
            value: Arc::new(value),
            read: Box::new(move |path| read(path).map_err(|e| e.to_string())),
        }
    }

    /// The current value (and whether it changed since the last call); a file that changed
    /// but cannot be read keeps the previous value.
    pub fn current(&mut self, now: Instant) -> (Arc<T>, bool) {
        let due = self
            .checked_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.recheck);
        if !due {
            return (self.value.clone(), false);
        }
        self.checked_at = Some(now);
        let stamp = stamp(&self.path);
        if stamp == self.stamp {
            return (self.value.clone(), false);
        }
        match (self.read)(&self.path) {
            Ok(value) => {
                self.value = Arc::new(value);
                self.stamp = stamp;
                (self.value.clone(), true)
            }
            Err(error) => {
                // Not read again until it changes again: one warning per bad version.
                self.stamp = stamp;
                tracing::warn!(path = %self.path.display(), %error, "cannot read the file again; keeping what was read before");
                (self.value.clone(), false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A file that cannot be read is tried once per change, not at every look (the broker
    /// looks at every authentication): its reader runs again only when the file changes.
    #[test]
    fn a_bad_file_is_read_once_per_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("value");
        std::fs::write(&path, "1").expect("write");
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let mut watch = FileWatch::load(&path, Duration::ZERO, move |path: &Path| {
            counted.fetch_add(1, Ordering::Relaxed);
            std::fs::read_to_string(path)?
                .trim()
                .parse::<u32>()
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .expect("load");
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        // Replaced (a new inode) by something unreadable.
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, "not a number").expect("write");
        for _ in 0..5 {
            let (value, changed) = watch.current(Instant::now());
            assert_eq!((*value, changed), (1, false));
        }
        assert_eq!(
            reads.load(Ordering::Relaxed),
            2,
            "tried once, not five times"
        );
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, "2").expect("write");
        assert_eq!(*watch.current(Instant::now()).0, 2);
    }
}
