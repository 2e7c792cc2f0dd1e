//! File storage for partition logs: plain files under the data directory, positional reads,
//! `fdatasync` for durability. A sync handle is a second descriptor of the same file, so
//! group commit can sync without holding the partition.
//!
//! Descriptors are bounded: the log holds open only its active segment's files; sealed
//! segments are read by name ([`Storage::read_at`]) through a least-recently-used cache of
//! read handles shared by every partition of the storage, at most [`OPEN_READ_FILES_MAX`] (or
//! a quarter of the process's open-files limit, if less). Removing a file drops its cached
//! handle: an open handle keeps an unlinked file's blocks allocated. At start the broker
//! raises its soft open-files limit to the hard one ([`raise_open_files_limit`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use herald_broker_core::storage::{Storage, StorageError, StorageFile, SyncHandle};

/// Most read handles of sealed segments one [`FileStorage`] keeps open, over all its
/// partitions. A consumer catching up reads one sealed segment of a partition at a time, so
/// this keeps a thousand partitions' replays from reopening a file per fetch; a miss costs one
/// `open(2)`, about what a fetch's read costs anyway. Each handle is a descriptor, and the
/// active segments need theirs (three per partition, plus a sync handle), so the cache takes
/// at most a quarter of the process's limit ([`read_files_max`]).
pub const OPEN_READ_FILES_MAX: usize = 1024;

/// The cache of read handles takes at most 1/this of the process's open-files limit.
pub const READ_FILES_LIMIT_SHARE: u64 = 4;

const _: () = assert!(OPEN_READ_FILES_MAX >= 1);

/// How many read handles a [`FileStorage`] caches under a process limit of
/// `open_files_limit` descriptors (`None`: unlimited): [`OPEN_READ_FILES_MAX`], or a
/// [`READ_FILES_LIMIT_SHARE`]th of the limit when that is less, and at least one.
pub fn read_files_max(open_files_limit: Option<u64>) -> usize {
    let share = open_files_limit.map_or(u64::MAX, |limit| limit / READ_FILES_LIMIT_SHARE);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(1, OPEN_READ_FILES_MAX)
}

/// This process's soft limit on open files (`None`: unlimited, or unknown on this platform).
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises this process's soft limit on open files to its hard limit, logging both. The soft
/// default (often 1024) is a compatibility setting for `select(2)`, which nothing here uses;
/// the hard limit is the administrator's policy. A broker holds a few descriptors per
/// partition, so the soft default runs out at a few hundred partitions. Failing to raise it
/// is a warning, not an error: the broker runs within the soft limit, with a smaller read
/// cache ([`read_files_max`]).
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let describe = |limit: Option<u64>| limit.map_or("unlimited".to_owned(), |n| n.to_string());
        let old = getrlimit(Resource::Nofile);
        if old.current == old.maximum {
            tracing::info!(
                limit = %describe(old.current),
                "open-files limit already at its hard limit"
            );
            return;
        }
        let new = Rlimit {
            current: old.maximum,
            maximum: old.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => tracing::info!(
                old = %describe(old.current),
                new = %describe(new.current),
                "raised the open-files limit to its hard limit"
            ),
            Err(error) => tracing::warn!(
                %error,
                soft = %describe(old.current),
                hard = %describe(old.maximum),
                "cannot raise the open-files limit to its hard limit; running within the soft limit"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileStorage {
    root: PathBuf,
    /// Shared by clones: every partition of the broker reads through one cache.
    read_files: Arc<Mutex<ReadFiles>>,
}

impl FileStorage {
    /// A storage under `root`, caching as many read handles as the process's open-files limit
    /// allows ([`read_files_max`]): create it after [`raise_open_files_limit`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_read_files_max(root, read_files_max(open_files_limit()))
    }

    /// A storage under `root` caching at most `read_files_max` read handles (at least one).
    pub fn with_read_files_max(root: impl Into<PathBuf>, read_files_max: usize) -> Self {
        Self {
            root: root.into(),
            read_files: Arc::new(Mutex::new(ReadFiles::new(read_files_max))),
        }
    }

    /// Read handles cached now (at most the bound it was created with).
    pub fn cached_read_files(&self) -> usize {
        lock(&self.read_files).open.len()
    }

    fn path(&self, dir: &str, name: &str) -> PathBuf {
        self.root.join(dir).join(name)
    }

    /// The read handle of `path`: cached, or opened (outside the cache's lock, so one
    /// partition's `open(2)` does not stall every other partition's reads) and cached.
    fn read_file(&self, path: &Path) -> Result<Arc<ReadHandle>, StorageError> {
        let removals = {
            let mut cache = lock(&self.read_files);
            if let Some(handle) = cache.get(path) {
                return Ok(handle);
            }
            cache.removals
        };
        let file = File::open(path).map_err(|e| error("open", path, e))?;
        let len = file.metadata().map_err(|e| error("stat", path, e))?.len();
        let handle = ReadHandle {
            file: Mutex::new(file),
            len,
        };
        Ok(lock(&self.read_files).insert(path, handle, removals))
    }
}

/// The read handles a [`FileStorage`] keeps open, least recently used evicted first.
#[derive(Debug)]
struct ReadFiles {
    capacity: usize,
    open: HashMap<PathBuf, CachedFile>,
    /// Advances at every use: the least recently used handle has the smallest stamp.
    clock: u64,
    /// Advances at every removal: a handle opened while one ran may be of a removed file, and
    /// is used once instead of being cached.
    removals: u64,
}

#[derive(Debug)]
struct CachedFile {
    handle: Arc<ReadHandle>,
    used: u64,
}

/// An open file nobody writes any more.
#[derive(Debug)]
struct ReadHandle {
    /// Locked for a seek and a read: uncontended, as a file belongs to one partition, whose
    /// reads take the partition's lock.
    file: Mutex<File>,
    /// Its length when opened: a read allocates no more than the file holds, whatever length
    /// it asks for (a damaged batch header can claim gigabytes).
    len: u64,
}

impl ReadFiles {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            open: HashMap::new(),
            clock: 0,
            removals: 0,
        }
    }

    fn get(&mut self, path: &Path) -> Option<Arc<ReadHandle>> {
        self.clock += 1;
        let clock = self.clock;
        self.open.get_mut(path).map(|cached| {
            cached.used = clock;
            cached.handle.clone()
        })
    }

    /// Caches `handle`, opened at `path` when the removal count was `removals`, evicting the
    /// least recently used handle if full; returns the handle to read through. An evicted
    /// handle closes when its last read ends, so descriptors stay within the capacity plus
    /// the reads running.
    fn insert(&mut self, path: &Path, handle: ReadHandle, removals: u64) -> Arc<ReadHandle> {
        if let Some(cached) = self.get(path) {
            // Another read opened it meanwhile: one handle is enough.
            return cached;
        }
        let handle = Arc::new(handle);
        if removals != self.removals {
            return handle;
        }
        if self.open.len() >= self.capacity {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(oldest_path, _)| oldest_path.clone());
            // A linear scan: a miss pays an open(2), next to which scanning a thousand
            // entries is noise, and hits stay free of bookkeeping.
            if let Some(oldest) = oldest {
                self.open.remove(&oldest);
            }
        }
        self.clock += 1;
        self.open.insert(
            path.to_path_buf(),
            CachedFile {
                handle: handle.clone(),
                used: self.clock,
            },
        );
        handle
    }

    /// Drops the handles of `path` and of everything under it.
    fn evict(&mut self, path: &Path) {
        self.removals += 1;
        self.open
            .retain(|open_path, _| !open_path.starts_with(path));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Up to `len` bytes of the handle's file at `position`, fewer only at its end.
fn read_handle_at(handle: &ReadHandle, position: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let expected = handle.len.saturating_sub(position).min(len as u64);
    // As `FsFile::read_at`: read_to_end fills spare capacity without zeroing it first.
    let mut buffer = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut guard = lock(&handle.file);
    let file: &mut File = &mut guard;
    file.seek(SeekFrom::Start(position))?;
    file.take(len as u64).read_to_end(&mut buffer)?;
    Ok(buffer)
}

fn error(operation: &'static str, path: &std::path::Path, e: std::io::Error) -> StorageError {
    StorageError {
        operation,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

pub struct FsFile {
    file: File,
    path: PathBuf,
    len: u64,
}

struct FsSync {
    file: File,
    path: PathBuf,
}

impl SyncHandle for FsSync {
    fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| error("fdatasync", &self.path, e))
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole file: submits the dirty pages
    /// not yet under writeback and returns without waiting for them, and, unlike fdatasync,
    /// forces no journal commit, which stalls the appends running beside it. Pages already
    /// clean or in flight are skipped, so asking for the whole file costs no more than the
    /// new tail.
    #[cfg(target_os = "linux")]
    fn start_writeback(&self) -> Result<(), StorageError> {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range takes no pointers; the descriptor belongs to `self.file`,
        // which stays open for the whole call. Offset 0 with length 0 means "to the end".
        #[allow(unsafe_code)]
        let started = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
        if started == 0 {
            Ok(())
        } else {
            Err(error(
                "sync_file_range",
                &self.path,
                std::io::Error::last_os_error(),
            ))
        }
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file
            .write_all(bytes)
            .map_err(|e| error("append", &self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// One `writev` for all parts (more only where the kernel writes less than asked).
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StorageError> {
        // What went before a failure is on the file: the caller cuts it back.
        write_parts(&mut self.file, parts).map_err(|e| error("append", &self.path, e))?;
        self.len += parts.iter().map(|part| part.len() as u64).sum::<u64>();
        Ok(())
    }

    fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        // seek + read_to_end fills spare capacity without zeroing it first (a 4 MiB fetch
        // would otherwise pay for zeroing and faulting in a fresh buffer). The cursor is
        // shared with nothing that cares: appends go to the end (O_APPEND) and reads of one
        // partition are serialised by its lock.
        let available = self.len.saturating_sub(position).min(len as u64) as usize;
        let mut buffer = Vec::with_capacity(available);
        let mut file = &self.file;
        file.seek(SeekFrom::Start(position))
            .map_err(|e| error("seek", &self.path, e))?;
        file.take(available as u64)
            .read_to_end(&mut buffer)
            .map_err(|e| error("read", &self.path, e))?;
        if buffer.len() != available {
            return Err(error(
                "read",
                &self.path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        Ok(buffer)
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        self.file
            .set_len(len)
            .map_err(|e| error("truncate", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| error("fdatasync", &self.path, e))?;
        self.len = len;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| error("fdatasync", &self.path, e))
    }

    fn sync_handle(&self) -> Result<Arc<dyn SyncHandle>, StorageError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| error("dup", &self.path, e))?;
        Ok(Arc::new(FsSync {
            file,
            path: self.path.clone(),
        }))
    }
}

impl Storage for FileStorage {
    type File = FsFile;

    fn create_dir(&self, dir: &str) -> Result<(), StorageError> {
        let path = self.root.join(dir);
        if path.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&path).map_err(|e| error("mkdir", &path, e))?;
        // Each directory created must survive a crash: sync it and every parent up to the
        // root (rare: once per partition).
        for ancestor in path.ancestors() {
            sync_dir(ancestor).map_err(|e| error("fsync", ancestor, e))?;
            if ancestor == self.root {
                break;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let path = self.root.join(dir);
        let entries = std::fs::read_dir(&path).map_err(|e| error("list", &path, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| error("list", &path, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, dir: &str, name: &str, create: bool) -> Result<FsFile, StorageError> {
        let path = self.path(dir, name);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(&path)
            .map_err(|e| error("open", &path, e))?;
        let len = file.metadata().map_err(|e| error("stat", &path, e))?.len();
        Ok(FsFile { file, path, len })
    }

    fn read_at(
        &self,
        dir: &str,
        name: &str,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let path = self.path(dir, name);
        let handle = self.read_file(&path)?;
        read_handle_at(&handle, position, len).map_err(|e| error("read", &path, e))
    }

    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError> {
        let path = self.path(dir, name);
        // Before the unlink: a cached handle would keep the file's blocks allocated.
        lock(&self.read_files).evict(&path);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error("remove", &path, e)),
            _ => Ok(()),
        }
    }

    fn remove_dir(&self, dir: &str) -> Result<(), StorageError> {
        let path = self.root.join(dir);
        lock(&self.read_files).evict(&path);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(error("rmdir", &path, e))
            }
            _ => {}
        }
        match path.parent() {
            Some(parent) => sync_dir(parent).map_err(|e| error("fsync", parent, e)),
            None => Ok(()),
        }
    }

    fn sync_dir(&self, dir: &str) -> Result<(), StorageError> {
        let path = self.root.join(dir);
        sync_dir(&path).map_err(|e| error("fsync", &path, e))
    }

    fn replace(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(dir, name);
        let written = herald_meta::write_atomically(&self.root.join(dir), name, bytes)
            .map_err(|e| error("replace", &path, e));
        // After the rename: a read handle cached for the old file (also one a read racing the
        // replacement opened) would go on serving its bytes.
        lock(&self.read_files).evict(&path);
        written
    }
}

pub(crate) use herald_meta::{sync_dir, write_private};

/// Writes every part, in order, in as few vectored writes as `writer` takes: a short write
/// goes on from where it stopped, an interrupted one is tried again, and a writer that takes
/// nothing is an error (`WriteZero`).
fn write_parts(writer: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = parts
        .iter()
        .map(|part| std::io::IoSlice::new(part))
        .collect();
    let mut rest = &mut slices[..];
    // Empty parts are dropped first: a writer given only empty slices writes 0 bytes.
    std::io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match writer.write_vectored(rest) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(written) => std::io::IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use herald_broker_core::log::{LogConfig, PartitionLog};
    use herald_wire::batch::{batches, BatchBuilder, Record};

    use super::*;

    const DIR: &str = "t/0";

    /// A writer that takes at most `step` bytes per call (of the first slice only) and is
    /// interrupted every third call.
    struct Dribble {
        written: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let taken = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Short and interrupted writes go on where they stopped: every byte once, in order;
    /// empty parts write nothing; a writer that takes nothing is an error.
    #[test]
    fn parts_are_written_whole_through_short_and_interrupted_writes() {
        let parts: [&[u8]; 5] = [b"", b"header--", b"", b"body of the batch", b"!"];
        let whole: Vec<u8> = parts.concat();
        for step in [1, 2, 3, 7, 64] {
            let mut dribble = Dribble {
                written: Vec::new(),
                step,
                calls: 0,
            };
            write_parts(&mut dribble, &parts).expect("written");
            assert_eq!(dribble.written, whole, "{step} bytes a call");
        }
        let mut none = Dribble {
            written: Vec::new(),
            step: 1,
            calls: 0,
        };
        write_parts(&mut none, &[b"", b""]).expect("nothing to write");
        assert_eq!(none.calls, 0);
        let mut full = Dribble {
            written: Vec::new(),
            step: 0,
            calls: 0,
        };
        let refused = write_parts(&mut full, &[b"x"]).expect_err("takes nothing");
        assert_eq!(refused.kind(), std::io::ErrorKind::WriteZero);
    }

    fn write(storage: &FileStorage, name: &str, bytes: &[u8]) {
        let mut file = storage.open(DIR, name, true).expect("open");
        file.truncate(0).expect("truncate");
        file.append(bytes).expect("append");
    }

    fn is_cached(storage: &FileStorage, name: &str) -> bool {
        lock(&storage.read_files)
            .open
            .contains_key(&storage.path(DIR, name))
    }

    /// Descriptors of this process open on files under `root` (other tests use other
    /// directories, so running in parallel does not disturb the count).
    #[cfg(target_os = "linux")]
    fn descriptors_under(root: &Path) -> usize {
        // The links name canonical paths.
        let root = root.canonicalize().expect("canonical root");
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.starts_with(&root))
            .count()
    }

    /// Parts appended with one vectored write land whole and in order, and the length counts
    /// them all.
    #[test]
    fn appended_parts_read_back_as_one_append() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 3);
        storage.create_dir(DIR).expect("mkdir");
        let mut file = storage.open(DIR, "segment", true).expect("open");
        file.append(b"before").expect("append");
        let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        file.append_parts(&[b"head", &[], &big, b"tail"])
            .expect("parts");
        let expected = [&b"before"[..], b"head", &big, b"tail"].concat();
        assert_eq!(file.len(), expected.len() as u64);
        assert_eq!(file.read_at(0, expected.len()).expect("read"), expected);
    }

    /// Flush-behind starts the writeback of a segment through its sync handle, and a failure
    /// to start it is reported (the partition is then fenced), not swallowed.
    #[cfg(target_os = "linux")]
    #[test]
    fn starting_writeback_succeeds_on_a_segment_and_reports_a_failure() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 3);
        storage.create_dir(DIR).expect("mkdir");
        let mut file = storage.open(DIR, "segment", true).expect("open");
        file.append(&vec![7u8; 2 * 1024 * 1024]).expect("append");
        let handle = file.sync_handle().expect("handle");
        handle.start_writeback().expect("writeback starts");
        handle.sync().expect("sync after it");
        // A descriptor that is no file (a pipe): the kernel refuses, and the error names it.
        let (_reader, writer) = std::io::pipe().expect("pipe");
        let not_a_file = FsSync {
            file: File::from(std::os::fd::OwnedFd::from(writer)),
            path: PathBuf::from("pipe"),
        };
        let refused = not_a_file
            .start_writeback()
            .expect_err("a pipe has no pages");
        assert_eq!(refused.operation, "sync_file_range");
        assert_eq!(refused.path, "pipe");
    }

    /// A replaced file reads back whole and new, also through the read cache (a handle cached
    /// on the old file would go on serving its bytes), and leaves no temporary behind.
    #[test]
    fn a_replaced_file_reads_back_new_through_the_read_cache() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 3);
        storage.create_dir(DIR).expect("mkdir");
        storage
            .replace(DIR, "raft.meta", b"first")
            .expect("replace");
        assert_eq!(
            storage.read_at(DIR, "raft.meta", 0, 64).expect("read"),
            b"first"
        );
        assert!(is_cached(&storage, "raft.meta"));
        storage
            .replace(DIR, "raft.meta", b"second, longer")
            .expect("replace");
        assert_eq!(
            storage.read_at(DIR, "raft.meta", 0, 64).expect("read"),
            b"second, longer"
        );
        let mut names = storage.list(DIR).expect("list");
        names.sort();
        assert_eq!(names, ["raft.meta"]);
    }

    #[test]
    fn the_read_cache_is_bounded_and_evicts_the_least_recently_used() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 3);
        storage.create_dir(DIR).expect("mkdir");
        for n in 0..5u8 {
            write(&storage, &format!("{n}"), &[n; 10]);
        }
        for n in 0..3u8 {
            let read = storage.read_at(DIR, &format!("{n}"), 2, 4).expect("read");
            assert_eq!(read, vec![n; 4]);
        }
        // Touch 0, so that 1 is the least recently used when 3 needs a handle.
        assert_eq!(storage.read_at(DIR, "0", 8, 100).expect("read"), vec![0; 2]);
        assert_eq!(storage.read_at(DIR, "3", 0, 10).expect("read"), vec![3; 10]);
        assert_eq!(storage.cached_read_files(), 3);
        assert!(
            !is_cached(&storage, "1"),
            "the least recently used is evicted"
        );
        assert!(is_cached(&storage, "0") && is_cached(&storage, "2") && is_cached(&storage, "3"));
        // An evicted file is opened again when read.
        assert_eq!(storage.read_at(DIR, "1", 0, 1).expect("read"), vec![1]);
        assert_eq!(storage.cached_read_files(), 3);
        assert!(storage.read_at(DIR, "missing", 0, 1).is_err());
    }

    /// A cached handle of a removed file would keep its blocks allocated, and serve the old
    /// bytes if a file of the same name came back (a topic deleted and created again).
    #[test]
    fn removing_a_file_or_its_directory_drops_its_cached_handle() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 8);
        storage.create_dir(DIR).expect("mkdir");
        write(&storage, "a", b"old");
        write(&storage, "b", b"bbb");
        assert_eq!(storage.read_at(DIR, "a", 0, 3).expect("read"), b"old");
        assert_eq!(storage.read_at(DIR, "b", 0, 3).expect("read"), b"bbb");
        storage.remove(DIR, "a").expect("remove");
        assert!(!is_cached(&storage, "a"));
        assert!(is_cached(&storage, "b"));
        write(&storage, "a", b"new");
        assert_eq!(storage.read_at(DIR, "a", 0, 3).expect("read"), b"new");
        storage.remove_dir(DIR).expect("rmdir");
        assert_eq!(storage.cached_read_files(), 0);
        #[cfg(target_os = "linux")]
        assert_eq!(
            descriptors_under(root.path()),
            0,
            "nothing removed stays open"
        );
    }

    #[test]
    fn the_cache_takes_a_quarter_of_a_small_open_files_limit() {
        assert_eq!(read_files_max(None), OPEN_READ_FILES_MAX);
        assert_eq!(read_files_max(Some(1 << 20)), OPEN_READ_FILES_MAX);
        assert_eq!(read_files_max(Some(256)), 64);
        assert_eq!(read_files_max(Some(2)), 1);
    }

    /// A log of many segments over files holds open its active segment's four files and at
    /// most the cache's bound of read handles, and reads every record, before and after a
    /// reopen. (Every segment held its files open for its life: "Too many open files".)
    #[test]
    fn a_log_of_many_segments_holds_few_descriptors() {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::with_read_files_max(root.path(), 4);
        let config = LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 150,
            ..LogConfig::default()
        };
        let batch = |n: u64| {
            let mut builder = BatchBuilder::new();
            builder.push(Record {
                timestamp_ms: n as i64,
                key: None,
                value: Some(n.to_be_bytes().to_vec()),
                headers: Vec::new(),
            });
            builder.encode().expect("valid batch")
        };
        let read_all = |log: &PartitionLog<FileStorage>| -> Vec<u64> {
            let mut values = Vec::new();
            let mut offset = 0;
            while offset < log.high_watermark() {
                let read = log.read(offset, 300).expect("readable");
                for view in batches(&read.bytes) {
                    let view = view.expect("valid batch");
                    for record in view.records() {
                        let value = record.expect("valid record").value.expect("value");
                        values.push(u64::from_be_bytes(value.try_into().expect("8 bytes")));
                    }
                    offset = view.next_offset();
                }
            }
            values
        };
        let (mut log, _) = PartitionLog::open(storage.clone(), DIR, config).expect("open");
        let mut n = 0u64;
        while log.segment_count() < 30 {
            log.append(&batch(n), n as i64).expect("append");
            n += 1;
        }
        let expected: Vec<u64> = (0..n).collect();
        assert_eq!(read_all(&log), expected);
        assert!(storage.cached_read_files() <= 4);
        #[cfg(target_os = "linux")]
        assert!(
            descriptors_under(root.path()) <= 4 + 4,
            "{} descriptors open",
            descriptors_under(root.path())
        );
        drop(log);
        let (log, _) = PartitionLog::open(storage.clone(), DIR, config).expect("reopen");
        assert_eq!(read_all(&log), expected);
        #[cfg(target_os = "linux")]
        assert!(descriptors_under(root.path()) <= 4 + 4);
    }
}
