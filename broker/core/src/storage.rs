//! Where partition files live. The log only ever appends, reads at positions, truncates,
//! syncs, lists and removes, so that is all the trait asks for.

use std::collections::BTreeMap;
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
}

/// One open file of a partition.
pub trait StorageFile: Send {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
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
    /// Opens `dir/name`, creating it if `create`.
    fn open(&self, dir: &str, name: &str, create: bool) -> Result<Self::File, StorageError>;
    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError>;
    fn remove_dir(&self, dir: &str) -> Result<(), StorageError>;
}

#[derive(Debug, Default)]
struct MemoryFileData {
    bytes: Vec<u8>,
    synced_len: usize,
}

type Files = BTreeMap<String, Arc<Mutex<MemoryFileData>>>;

/// In-memory storage with crash simulation: [`MemoryStorage::crash`] drops what was never
/// synced, optionally leaving a torn tail, as a power cut would.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<Files>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: every file keeps its synced bytes plus `torn(unsynced_len)` of
    /// the unsynced tail (0 loses it all).
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        for file in lock(&self.files).values() {
            let mut data = lock(file);
            let unsynced = data.bytes.len() - data.synced_len;
            let keep = data.synced_len + torn(unsynced).min(unsynced);
            data.bytes.truncate(keep);
            data.synced_len = keep;
        }
    }

    /// Overwrites bytes of a file (tests of corruption).
    pub fn corrupt(&self, dir: &str, name: &str, position: usize, bytes: &[u8]) {
        if let Some(file) = lock(&self.files).get(&format!("{dir}/{name}")) {
            let mut data = lock(file);
            for (i, byte) in bytes.iter().enumerate() {
                if let Some(slot) = data.bytes.get_mut(position + i) {
                    *slot = *byte;
                }
            }
        }
    }

    pub fn file_len(&self, dir: &str, name: &str) -> Option<usize> {
        lock(&self.files)
            .get(&format!("{dir}/{name}"))
            .map(|file| lock(file).bytes.len())
    }
}

pub struct MemoryFile {
    data: Arc<Mutex<MemoryFileData>>,
}

struct MemorySync {
    data: Arc<Mutex<MemoryFileData>>,
}

impl SyncHandle for MemorySync {
    fn sync(&self) -> Result<(), StorageError> {
        let mut data = lock(&self.data);
        data.synced_len = data.bytes.len();
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
        let data = lock(&self.data);
        let start = (position as usize).min(data.bytes.len());
        let end = start.saturating_add(len).min(data.bytes.len());
        Ok(data.bytes[start..end].to_vec())
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        let mut data = lock(&self.data);
        data.bytes.truncate(len as usize);
        data.synced_len = data.synced_len.min(data.bytes.len());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        MemorySync {
            data: self.data.clone(),
        }
        .sync()
    }

    fn sync_handle(&self) -> Result<Arc<dyn SyncHandle>, StorageError> {
        Ok(Arc::new(MemorySync {
            data: self.data.clone(),
        }))
    }
}

impl Storage for MemoryStorage {
    type File = MemoryFile;

    fn create_dir(&self, _dir: &str) -> Result<(), StorageError> {
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let prefix = format!("{dir}/");
        Ok(lock(&self.files)
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|name| !name.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    fn open(&self, dir: &str, name: &str, create: bool) -> Result<MemoryFile, StorageError> {
        let path = format!("{dir}/{name}");
        let mut files = lock(&self.files);
        match files.get(&path) {
            Some(data) => Ok(MemoryFile { data: data.clone() }),
            None if create => {
                let data = Arc::new(Mutex::new(MemoryFileData::default()));
                files.insert(path, data.clone());
                Ok(MemoryFile { data })
            }
            None => Err(StorageError {
                operation: "open",
                path,
                reason: "no such file".to_owned(),
            }),
        }
    }

    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError> {
        lock(&self.files).remove(&format!("{dir}/{name}"));
        Ok(())
    }

    fn remove_dir(&self, dir: &str) -> Result<(), StorageError> {
        let prefix = format!("{dir}/");
        lock(&self.files).retain(|path, _| !path.starts_with(&prefix));
        Ok(())
    }
}
