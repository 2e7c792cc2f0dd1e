//! File storage for partition logs: plain files under the data directory, positional reads,
//! `fdatasync` for durability. A sync handle is a second descriptor of the same file, so
//! group commit can sync without holding the partition.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_broker_core::storage::{Storage, StorageError, StorageFile, SyncHandle};

#[derive(Debug, Clone)]
pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, dir: &str, name: &str) -> PathBuf {
        self.root.join(dir).join(name)
    }
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

    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError> {
        let path = self.path(dir, name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error("remove", &path, e)),
            _ => Ok(()),
        }
    }

    fn remove_dir(&self, dir: &str) -> Result<(), StorageError> {
        let path = self.root.join(dir);
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
}

/// Makes the entries of a directory durable (files created, renamed or removed in it).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, synced, renamed over `name`,
/// then the directory synced. Used for `topic.meta`, `producers.meta` and group offsets.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}
