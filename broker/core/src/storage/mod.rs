//! Where partition files live. The log only ever appends, reads at positions, truncates,
//! syncs, lists and removes, so that is all the trait asks for.
//!
//! Open files are a bounded resource (a process's descriptor limit), so the log holds a file
//! open ([`Storage::open`]) only while it writes it: the active segment. Files it only reads —
//! sealed segments — it reads by name ([`Storage::read_at`]), and the storage decides how
//! many handles to keep open for that (the file storage: a bounded cache shared by every
//! partition).
//!
//! Durability has two parts, as on a POSIX file system: a file's bytes are durable once the
//! file is synced, and its directory entry (that it exists, or that it was removed) once its
//! directory is synced ([`Storage::sync_dir`]). [`MemoryStorage`] models both, so a crash in a
//! test loses a file created since its directory was last synced and brings back one removed
//! since then. [`faults::FaultyStorage`] wraps any storage and fails chosen calls.

pub mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A storage failure: I/O error, missing file, full disk...
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {operation} {path}: {reason}")]
pub struct StorageError {
    pub operation: &'static str,
    pub path: String,
    pub reason: String,
}

/// Makes a segment file durable without holding the partition (group commit syncs many).
pub trait SyncHandle: Send + Sync {
    fn sync(&self) -> Result<(), StorageError>;
    /// Starts writing the file's dirty data back without waiting for it (flush-behind): the
    /// later sync finds less to do. Durable only after [`SyncHandle::sync`]. Where the
    /// platform cannot start writeback alone, a sync.
    fn start_writeback(&self) -> Result<(), StorageError> {
        self.sync()
    }
}

/// One open file of a partition.
pub trait StorageFile: Send {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Appends `parts` one after the other, as one append of their concatenation would
    /// (a file may write them with one call).
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StorageError> {
        parts.iter().try_for_each(|part| self.append(part))
    }
    /// Reads exactly `len` bytes at `position` (fewer only at end of file).
    fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, StorageError>;
    fn truncate(&mut self, len: u64) -> Result<(), StorageError>;
    fn sync(&mut self) -> Result<(), StorageError>;
    fn sync_handle(&self) -> Result<Arc<dyn SyncHandle>, StorageError>;
}

/// A directory of files, addressed by `dir/name` strings.
pub trait Storage: Send + Sync {
    type File: StorageFile;
    fn create_dir(&self, dir: &str) -> Result<(), StorageError>;
    fn list(&self, dir: &str) -> Result<Vec<String>, StorageError>;
    /// Opens `dir/name`, creating it if `create`. The handle is the caller's until dropped:
    /// the log keeps only the active segment's files open this way.
    fn open(&self, dir: &str, name: &str, create: bool) -> Result<Self::File, StorageError>;
    /// Reads up to `len` bytes of `dir/name` at `position` (fewer only at end of file), for a
    /// file nobody writes any more (a sealed segment). The caller holds no handle: the
    /// storage opens the file itself and may keep a bounded number of such handles open
    /// across calls; it takes its own locks, so reads of different partitions run together.
    fn read_at(
        &self,
        dir: &str,
        name: &str,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError>;
    /// Removes `dir/name`, and any handle the storage keeps open for [`read_at`](Self::read_at)
    /// (an open handle to an unlinked file keeps its space on disk).
    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError>;
    /// Removes `dir` and everything in it, durably (its parent directory is synced), with any
    /// handles kept open for reads of its files.
    fn remove_dir(&self, dir: &str) -> Result<(), StorageError>;
    /// Makes the entries of `dir` durable: files created in it since the last call survive a
    /// crash, files removed from it stay removed.
    fn sync_dir(&self, dir: &str) -> Result<(), StorageError>;
    /// Makes `bytes` the whole of `dir/name`, atomically and durably: after a crash at any
    /// point the file holds its old bytes (or is missing, if it was) or all of `bytes`, never
    /// a mix; on return the new bytes survive one. Handles open on the old file keep reading
    /// the old bytes. For small state rewritten whole (a replica's Raft meta).
    fn replace(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
}

#[derive(Debug, Default)]
struct MemoryFileData {
    bytes: Vec<u8>,
    synced_len: usize,
}

type Files = BTreeMap<String, Arc<Mutex<MemoryFileData>>>;

/// The directory entries of a [`MemoryStorage`].
#[derive(Debug, Default)]
struct Entries {
    /// Files that exist now, by `dir/name`.
    live: Files,
    /// Paths whose existence is durable (their directory was synced since they were created).
    durable: BTreeSet<String>,
    /// Removed files whose removal is not durable yet: a crash brings them back.
    unlinked: Files,
}

/// In-memory storage with crash simulation: [`MemoryStorage::crash`] drops what was never
/// synced, optionally leaving a torn tail, as a power cut would — file bytes not synced, and
/// directory entries (creations, removals) whose directory was not synced.
///
/// It counts the handles its callers hold ([`MemoryStorage::open_handles`]) as a file system
/// counts descriptors, so tests can see what a log keeps open; [`Storage::read_at`] reads
/// without one.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    entries: Arc<Mutex<Entries>>,
    /// Open files and sync handles alive, over all clones.
    open_handles: Arc<AtomicUsize>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn in_dir(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.contains('/'))
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: files created since their directory was last synced vanish, files
    /// removed since then come back, and every file keeps its synced bytes plus
    /// `torn(unsynced_len)` of the unsynced tail (0 loses it all).
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut entries = lock(&self.entries);
        let Entries {
            live,
            durable,
            unlinked,
        } = &mut *entries;
        live.retain(|path, _| durable.contains(path));
        for (path, data) in std::mem::take(unlinked) {
            live.insert(path, data);
        }
        for file in live.values() {
            let mut data = lock(file);
            let unsynced = data.bytes.len() - data.synced_len;
            let keep = data.synced_len + torn(unsynced).min(unsynced);
            data.bytes.truncate(keep);
            data.synced_len = keep;
        }
    }

    /// Overwrites bytes of a file (tests of corruption).
    pub fn corrupt(&self, dir: &str, name: &str, position: usize, bytes: &[u8]) {
        if let Some(file) = lock(&self.entries).live.get(&format!("{dir}/{name}")) {
            let mut data = lock(file);
            for (i, byte) in bytes.iter().enumerate() {
                if let Some(slot) = data.bytes.get_mut(position + i) {
                    *slot = *byte;
                }
            }
        }
    }

    pub fn file_len(&self, dir: &str, name: &str) -> Option<usize> {
        lock(&self.entries)
            .live
            .get(&format!("{dir}/{name}"))
            .map(|file| lock(file).bytes.len())
    }

    /// Files opened through [`Storage::open`] and sync handles made from them that are still
    /// alive (each would be a descriptor in a file storage).
    pub fn open_handles(&self) -> usize {
        self.open_handles.load(Ordering::SeqCst)
    }

    /// The names of the files in `dir` (those that exist now).
    pub fn names(&self, dir: &str) -> Vec<String> {
        lock(&self.entries)
            .live
            .keys()
            .filter(|path| in_dir(path, dir))
            .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
            .collect()
    }
}

/// Counts one live handle of a [`MemoryStorage`] until dropped.
#[derive(Debug)]
struct HandleCount(Arc<AtomicUsize>);

impl HandleCount {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for HandleCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct MemoryFile {
    data: Arc<Mutex<MemoryFileData>>,
    handle: HandleCount,
}

struct MemorySync {
    data: Arc<Mutex<MemoryFileData>>,
    _handle: HandleCount,
}

fn sync_data(data: &Mutex<MemoryFileData>) {
    let mut data = lock(data);
    data.synced_len = data.bytes.len();
}

/// Up to `len` bytes of `bytes` at `position` (fewer at the end).
fn read_bytes(bytes: &[u8], position: u64, len: usize) -> Vec<u8> {
    let start = usize::try_from(position)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(len).min(bytes.len());
    bytes[start..end].to_vec()
}

impl SyncHandle for MemorySync {
    fn sync(&self) -> Result<(), StorageError> {
        sync_data(&self.data);
        Ok(())
    }
}

impl StorageFile for MemoryFile {
    fn len(&self) -> u64 {
        lock(&self.data).bytes.len() as u64
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        lock(&self.data).bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        Ok(read_bytes(&lock(&self.data).bytes, position, len))
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        let mut data = lock(&self.data);
        data.bytes.truncate(len as usize);
        data.synced_len = data.synced_len.min(data.bytes.len());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        sync_data(&self.data);
        Ok(())
    }

    fn sync_handle(&self) -> Result<Arc<dyn SyncHandle>, StorageError> {
        Ok(Arc::new(MemorySync {
            data: self.data.clone(),
            _handle: HandleCount::new(&self.handle.0),
        }))
    }
}

impl Storage for MemoryStorage {
    type File = MemoryFile;

    fn create_dir(&self, _dir: &str) -> Result<(), StorageError> {
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        Ok(self.names(dir))
    }

    fn open(&self, dir: &str, name: &str, create: bool) -> Result<MemoryFile, StorageError> {
        let path = format!("{dir}/{name}");
        let mut entries = lock(&self.entries);
        let handle = || HandleCount::new(&self.open_handles);
        match entries.live.get(&path) {
            Some(data) => Ok(MemoryFile {
                data: data.clone(),
                handle: handle(),
            }),
            None if create => {
                let data = Arc::new(Mutex::new(MemoryFileData::default()));
                entries.live.insert(path, data.clone());
                Ok(MemoryFile {
                    data,
                    handle: handle(),
                })
            }
            None => Err(StorageError {
                operation: "open",
                path,
                reason: "no such file".to_owned(),
            }),
        }
    }

    fn read_at(
        &self,
        dir: &str,
        name: &str,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let path = format!("{dir}/{name}");
        let data = lock(&self.entries).live.get(&path).cloned();
        match data {
            Some(data) => Ok(read_bytes(&lock(&data).bytes, position, len)),
            None => Err(StorageError {
                operation: "open",
                path,
                reason: "no such file".to_owned(),
            }),
        }
    }

    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError> {
        let path = format!("{dir}/{name}");
        let mut entries = lock(&self.entries);
        if let Some(data) = entries.live.remove(&path) {
            if entries.durable.contains(&path) {
                entries.unlinked.insert(path, data);
            }
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &str) -> Result<(), StorageError> {
        // Durable at once: the parent directory is synced.
        let prefix = format!("{dir}/");
        let mut entries = lock(&self.entries);
        entries.live.retain(|path, _| !path.starts_with(&prefix));
        entries.durable.retain(|path| !path.starts_with(&prefix));
        entries
            .unlinked
            .retain(|path, _| !path.starts_with(&prefix));
        Ok(())
    }

    fn replace(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        // A new file renamed over the old one, its directory synced: the old data stays with
        // the handles open on it.
        let path = format!("{dir}/{name}");
        let data = Arc::new(Mutex::new(MemoryFileData {
            bytes: bytes.to_vec(),
            synced_len: bytes.len(),
        }));
        let mut entries = lock(&self.entries);
        entries.live.insert(path.clone(), data);
        entries.unlinked.remove(&path);
        entries.durable.insert(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> Result<(), StorageError> {
        let mut entries = lock(&self.entries);
        let Entries {
            live,
            durable,
            unlinked,
        } = &mut *entries;
        durable.retain(|path| !in_dir(path, dir) || live.contains_key(path));
        durable.extend(live.keys().filter(|path| in_dir(path, dir)).cloned());
        unlinked.retain(|path, _| !in_dir(path, dir));
        Ok(())
    }
}
