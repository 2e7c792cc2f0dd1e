//! A segment: its three files (`.log`, `.index`, `.timeindex`), the in-memory copy of its
//! indexes, creating and opening it, and index lookups.

use herald_wire::batch::{BatchHeader, BATCH_HEADER_BYTES};

use crate::storage::{Storage, StorageError, StorageFile};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

pub(super) struct Segment<F> {
    pub(super) base_offset: i64,
    pub(super) log: F,
    pub(super) offset_index: F,
    pub(super) time_index: F,
    pub(super) offset_entries: Vec<(u32, u32)>,
    pub(super) time_entries: Vec<(i64, u32)>,
    pub(super) size: u64,
    pub(super) next_offset: i64,
    pub(super) max_timestamp_ms: i64,
    pub(super) max_append_time_ms: i64,
    pub(super) first_append_time_ms: Option<i64>,
    bytes_since_index: u64,
}

/// A segment's state before an append, to put it back if the append fails.
pub(super) struct Mark {
    pub(super) size: u64,
    offset_index_len: u64,
    time_index_len: u64,
    offset_entries: usize,
    time_entries: usize,
    next_offset: i64,
    max_timestamp_ms: i64,
    max_append_time_ms: i64,
    first_append_time_ms: Option<i64>,
    bytes_since_index: u64,
}

pub(super) fn file_name(base: i64, extension: &str) -> String {
    format!("{base:020}.{extension}")
}

/// The header of the stored batch at `position`, if a whole header is there.
pub(super) fn read_head<F: StorageFile>(
    file: &F,
    position: u64,
) -> Result<Option<BatchHeader>, StorageError> {
    Ok(BatchHeader::read(
        &file.read_at(position, BATCH_HEADER_BYTES)?,
    ))
}

impl<F: StorageFile> Segment<F> {
    pub(super) fn create<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        base_offset: i64,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            base_offset,
            log: storage.open(dir, &file_name(base_offset, "log"), true)?,
            offset_index: storage.open(dir, &file_name(base_offset, "index"), true)?,
            time_index: storage.open(dir, &file_name(base_offset, "timeindex"), true)?,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            size: 0,
            next_offset: base_offset,
            max_timestamp_ms: i64::MIN,
            max_append_time_ms: i64::MIN,
            first_append_time_ms: None,
            bytes_since_index: 0,
        })
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            size: self.size,
            offset_index_len: self.offset_index.len(),
            time_index_len: self.time_index.len(),
            offset_entries: self.offset_entries.len(),
            time_entries: self.time_entries.len(),
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            max_append_time_ms: self.max_append_time_ms,
            first_append_time_ms: self.first_append_time_ms,
            bytes_since_index: self.bytes_since_index,
        }
    }

    /// Puts the segment back as it was at `mark`: every file cut to its old length (a failed
    /// write may have left part of its bytes), the in-memory state restored.
    pub(super) fn roll_back(&mut self, mark: &Mark) -> Result<(), StorageError> {
        self.log.truncate(mark.size)?;
        self.offset_index.truncate(mark.offset_index_len)?;
        self.time_index.truncate(mark.time_index_len)?;
        self.offset_entries.truncate(mark.offset_entries);
        self.time_entries.truncate(mark.time_entries);
        self.size = mark.size;
        self.next_offset = mark.next_offset;
        self.max_timestamp_ms = mark.max_timestamp_ms;
        self.max_append_time_ms = mark.max_append_time_ms;
        self.first_append_time_ms = mark.first_append_time_ms;
        self.bytes_since_index = mark.bytes_since_index;
        Ok(())
    }

    /// Records index entries for a batch stored at `position`.
    pub(super) fn index_batch(
        &mut self,
        position: u64,
        head: &BatchHeader,
        interval: u64,
    ) -> Result<(), StorageError> {
        let relative = (head.base_offset - self.base_offset) as u32;
        if self.offset_entries.is_empty() || self.bytes_since_index >= interval {
            let entry = (relative, position as u32);
            let mut bytes = [0u8; OFFSET_ENTRY_BYTES];
            bytes[..4].copy_from_slice(&entry.0.to_be_bytes());
            bytes[4..].copy_from_slice(&entry.1.to_be_bytes());
            self.offset_index.append(&bytes)?;
            self.offset_entries.push(entry);
            self.bytes_since_index = 0;
            if head.max_timestamp_ms > self.time_entries.last().map_or(i64::MIN, |e| e.0) {
                let mut bytes = [0u8; TIME_ENTRY_BYTES];
                bytes[..8].copy_from_slice(&head.max_timestamp_ms.to_be_bytes());
                bytes[8..].copy_from_slice(&relative.to_be_bytes());
                self.time_index.append(&bytes)?;
                self.time_entries.push((head.max_timestamp_ms, relative));
            }
        }
        self.bytes_since_index += head.size as u64;
        self.size = position + (head.size as u64);
        self.next_offset = head.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(head.max_timestamp_ms);
        self.max_append_time_ms = self.max_append_time_ms.max(head.append_time_ms);
        self.first_append_time_ms.get_or_insert(head.append_time_ms);
        Ok(())
    }

    /// Loads the index files; `false` when they are missing, damaged or inconsistent.
    pub(super) fn load_indexes(&mut self) -> Result<bool, StorageError> {
        let offset_bytes = self
            .offset_index
            .read_at(0, self.offset_index.len() as usize)?;
        let time_bytes = self.time_index.read_at(0, self.time_index.len() as usize)?;
        if offset_bytes.is_empty()
            || offset_bytes.len() % OFFSET_ENTRY_BYTES != 0
            || time_bytes.len() % TIME_ENTRY_BYTES != 0
        {
            return Ok(false);
        }
        let offsets: Vec<(u32, u32)> = offset_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|c| {
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let times: Vec<(i64, u32)> = time_bytes
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|c| {
                (
                    i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                )
            })
            .collect();
        let monotonic = offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && times
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let in_bounds = offsets
            .iter()
            .all(|&(_, position)| u64::from(position) < self.log.len())
            && offsets.first() == Some(&(0, 0));
        if !monotonic || !in_bounds {
            return Ok(false);
        }
        // Each entry must point at a batch with the offset it claims, and a size the file
        // holds (else the walk from the start finds what is wrong).
        for &(relative, position) in &offsets {
            match read_head(&self.log, u64::from(position))? {
                Some(head)
                    if head.base_offset == self.base_offset + i64::from(relative)
                        && head.size >= BATCH_HEADER_BYTES
                        && u64::from(position) + head.size as u64 <= self.log.len() => {}
                _ => return Ok(false),
            }
        }
        self.offset_entries = offsets;
        self.time_entries = times;
        Ok(true)
    }

    pub(super) fn reset_indexes(&mut self) -> Result<(), StorageError> {
        self.offset_index.truncate(0)?;
        self.time_index.truncate(0)?;
        self.offset_entries.clear();
        self.time_entries.clear();
        self.bytes_since_index = 0;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp_ms = i64::MIN;
        self.max_append_time_ms = i64::MIN;
        self.first_append_time_ms = None;
        Ok(())
    }

    /// The byte position to start scanning at for `offset`: the last index entry at or below.
    pub(super) fn index_position(&self, offset: i64) -> u64 {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let at = self.offset_entries.partition_point(|&(r, _)| r <= relative);
        at.checked_sub(1)
            .map_or(0, |i| u64::from(self.offset_entries[i].1))
    }

    pub(super) fn remove_files<S: Storage<File = F>>(
        &self,
        storage: &S,
        dir: &str,
    ) -> Result<(), StorageError> {
        Self::remove_named(storage, dir, self.base_offset)
    }

    /// Removes the files of the segment based at `base_offset`, if there.
    pub(super) fn remove_named<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        base_offset: i64,
    ) -> Result<(), StorageError> {
        // The log file last: a removal cut short leaves a segment whose indexes are rebuilt,
        // never index files without their log.
        for extension in ["index", "timeindex", "log"] {
            storage.remove(dir, &file_name(base_offset, extension))?;
        }
        Ok(())
    }
}
