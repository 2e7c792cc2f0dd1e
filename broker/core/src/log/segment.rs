//! A segment: its four files (`.log`, `.index`, `.timeindex`, `.ordinal`), the in-memory copy
//! of its indexes, creating and opening it, sealing it, reading its log, and index lookups.
//!
//! Batches are numbered across the whole log by *ordinal*: the log's n-th batch ever stored
//! has ordinal n, and a replicated partition uses it as the batch's Raft index (one batch,
//! one entry). A segment knows the ordinal of its first batch (the `.ordinal` file's sealed
//! header, written and synced before the segment takes a batch) and keeps a sparse ordinal
//! index beside its offset index: the `.ordinal` file holds, after the header, the relative
//! ordinal (u32) of the batch each offset-index entry points at. Like the other indexes the
//! entries are a hint, rebuilt from the log; the header is not (the ordinals of the batches
//! before the segment may be gone with retention), so it is checked against the previous
//! segment at open.
//!
//! Only the active segment holds its files open ([`ActiveFiles`]): it is appended to, and a
//! failed append is cut back in all three. A sealed segment holds none — its indexes are in
//! memory, its index files are never read again until the log is reopened, and its log is read
//! by name through [`Storage::read_at`], which the file storage serves from a bounded cache of
//! open handles. (Every segment holding three descriptors for its whole life ran a broker with
//! many partitions of many segments out of them: "Too many open files".)

use herald_wire::batch::{BatchHeader, BATCH_HEADER_BYTES};
use herald_wire::{seal, unseal};

use crate::storage::{Storage, StorageError, StorageFile};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
const ORDINAL_ENTRY_BYTES: usize = 4;
/// The `.ordinal` file's header: magic, CRC-32C, the segment's first ordinal (u64).
const ORDINAL_MAGIC: &[u8; 4] = b"HORD";
pub(super) const ORDINAL_HEADER_BYTES: usize = 16;

pub(super) struct Segment<F> {
    pub(super) base_offset: i64,
    /// The open files while the segment is active (or being loaded); `None` once sealed.
    files: Option<ActiveFiles<F>>,
    pub(super) offset_entries: Vec<(u32, u32)>,
    /// The relative ordinal of the batch each offset entry points at (same length).
    pub(super) ordinal_entries: Vec<u32>,
    pub(super) time_entries: Vec<(i64, u32)>,
    /// Ordinal of the segment's first batch (see the module docs).
    pub(super) base_ordinal: u64,
    /// Whole, verified batches the segment holds (up to `size`).
    pub(super) batch_count: u64,
    /// Bytes of the log that hold whole, verified batches: reads never go past it, so a sealed
    /// segment knows its end without a handle.
    pub(super) size: u64,
    pub(super) next_offset: i64,
    pub(super) max_timestamp_ms: i64,
    pub(super) max_append_time_ms: i64,
    pub(super) first_append_time_ms: Option<i64>,
    bytes_since_index: u64,
}

/// The open files of the active segment.
pub(super) struct ActiveFiles<F> {
    pub(super) log: F,
    pub(super) offset_index: F,
    pub(super) time_index: F,
    pub(super) ordinal_index: F,
}

/// A segment's state before an append, to put it back if the append fails.
pub(super) struct Mark {
    pub(super) size: u64,
    offset_index_len: u64,
    time_index_len: u64,
    ordinal_index_len: u64,
    offset_entries: usize,
    time_entries: usize,
    batch_count: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
    max_append_time_ms: i64,
    first_append_time_ms: Option<i64>,
    bytes_since_index: u64,
}

pub(super) fn file_name(base: i64, extension: &str) -> String {
    format!("{base:020}.{extension}")
}

/// The header of the stored batch at `position` of an open file, if a whole header is there.
pub(super) fn read_head<F: StorageFile>(
    file: &F,
    position: u64,
) -> Result<Option<BatchHeader>, StorageError> {
    Ok(BatchHeader::read(
        &file.read_at(position, BATCH_HEADER_BYTES)?,
    ))
}

/// The error for a write to a sealed segment. Only the last segment of a log is written, and
/// it always has its files (see `PartitionLog::open`), so this is a broken invariant reported
/// as a failed write rather than a panic.
fn sealed(base_offset: i64) -> StorageError {
    debug_assert!(false, "segment {base_offset} is sealed but was written to");
    StorageError {
        operation: "write",
        path: file_name(base_offset, "log"),
        reason: "the segment is sealed: only the active segment is written".to_owned(),
    }
}

impl<F: StorageFile> ActiveFiles<F> {
    /// Opens (creating them if missing) the four files of the segment based at `base_offset`,
    /// the log first: a missing index is rebuilt, a missing log is not a segment.
    fn open<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        base_offset: i64,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            log: storage.open(dir, &file_name(base_offset, "log"), true)?,
            offset_index: storage.open(dir, &file_name(base_offset, "index"), true)?,
            time_index: storage.open(dir, &file_name(base_offset, "timeindex"), true)?,
            ordinal_index: storage.open(dir, &file_name(base_offset, "ordinal"), true)?,
        })
    }
}

impl<F: StorageFile> Segment<F> {
    /// Creates the segment based at `base_offset`, or opens its files if they exist (to load
    /// or recover it), with empty in-memory state.
    pub(super) fn create<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        base_offset: i64,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            base_offset,
            files: Some(ActiveFiles::open(storage, dir, base_offset)?),
            offset_entries: Vec::new(),
            ordinal_entries: Vec::new(),
            time_entries: Vec::new(),
            base_ordinal: 0,
            batch_count: 0,
            size: 0,
            next_offset: base_offset,
            max_timestamp_ms: i64::MIN,
            max_append_time_ms: i64::MIN,
            first_append_time_ms: None,
            bytes_since_index: 0,
        })
    }

    /// Creates a new, empty segment based at `base_offset` whose first batch will have
    /// `base_ordinal`, its ordinal header durable on return (the caller syncs the directory).
    pub(super) fn start<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        base_offset: i64,
        base_ordinal: u64,
    ) -> Result<Self, StorageError> {
        let mut segment = Self::create(storage, dir, base_offset)?;
        // Files a failed attempt left under this name are not part of the new segment.
        let files = segment.files_mut()?;
        for file in [
            &mut files.log,
            &mut files.offset_index,
            &mut files.time_index,
        ] {
            if !file.is_empty() {
                file.truncate(0)?;
            }
        }
        segment.write_ordinal_header(base_ordinal)?;
        Ok(segment)
    }

    /// Writes the ordinal header as the whole `.ordinal` file (its entries follow it) and
    /// syncs it.
    fn write_ordinal_header(&mut self, base_ordinal: u64) -> Result<(), StorageError> {
        let files = self.files_mut()?;
        files.ordinal_index.truncate(0)?;
        files
            .ordinal_index
            .append(&seal(ORDINAL_MAGIC, &base_ordinal.to_be_bytes()))?;
        files.ordinal_index.sync()?;
        self.base_ordinal = base_ordinal;
        self.ordinal_entries.clear();
        Ok(())
    }

    /// The first ordinal the `.ordinal` header of a segment being loaded names, if it holds
    /// a whole, undamaged one (see `PartitionLog::open` for a segment without).
    pub(super) fn stored_base_ordinal(&self) -> Result<Option<u64>, StorageError> {
        let base_offset = self.base_offset;
        let files = self.files.as_ref().ok_or_else(|| sealed(base_offset))?;
        let head = files.ordinal_index.read_at(0, ORDINAL_HEADER_BYTES)?;
        Ok((head.len() == ORDINAL_HEADER_BYTES)
            .then(|| unseal(ORDINAL_MAGIC, &head, "ordinal header").ok())
            .flatten()
            .and_then(|mut body| body.u64("first ordinal").ok()))
    }

    /// Numbers the segment (being loaded, files open) from `base_ordinal`, writing its header;
    /// its ordinal entries are rebuilt with its other indexes.
    pub(super) fn number_from(&mut self, base_ordinal: u64) -> Result<(), StorageError> {
        self.write_ordinal_header(base_ordinal)
    }

    /// Leaves the segment (being loaded, files open, no header) numbered from 0 in memory,
    /// with room for its header written by [`Segment::renumber`] once its first ordinal is
    /// known: the ordinal entries rebuilt meanwhile go after the room.
    pub(super) fn number_later(&mut self) -> Result<(), StorageError> {
        let files = self.files_mut()?;
        files.ordinal_index.truncate(0)?;
        // Not a header (no magic): a crash before the renumbering leaves it unnumbered.
        files.ordinal_index.append(&[0u8; ORDINAL_HEADER_BYTES])?;
        self.base_ordinal = 0;
        self.ordinal_entries.clear();
        Ok(())
    }

    /// Renumbers a loaded segment from `base_ordinal`: its header is replaced, its entries
    /// (relative) kept, durably.
    pub(super) fn renumber<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        dir: &str,
        base_ordinal: u64,
    ) -> Result<(), StorageError> {
        let mut file = storage.open(dir, &file_name(self.base_offset, "ordinal"), false)?;
        let entries = file.read_at(
            ORDINAL_HEADER_BYTES as u64,
            (file.len() as usize).saturating_sub(ORDINAL_HEADER_BYTES),
        )?;
        file.truncate(0)?;
        file.append(&seal(ORDINAL_MAGIC, &base_ordinal.to_be_bytes()))?;
        file.append(&entries)?;
        file.sync()?;
        self.base_ordinal = base_ordinal;
        Ok(())
    }

    /// The ordinal the segment's next batch gets.
    pub(super) fn next_ordinal(&self) -> u64 {
        self.base_ordinal + self.batch_count
    }

    /// Closes the segment's files: nothing is written to it again and its indexes are in
    /// memory; its log is read through [`Storage::read_at`] from now on. The caller has synced
    /// what it wrote (a roll does).
    pub(super) fn seal(&mut self) {
        self.files = None;
    }

    /// Opens the files of a sealed segment again, to make it the last segment of a log (which
    /// always has its files). Does nothing if they are open.
    pub(super) fn reopen<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        dir: &str,
    ) -> Result<(), StorageError> {
        if self.files.is_none() {
            self.files = Some(ActiveFiles::open(storage, dir, self.base_offset)?);
        }
        Ok(())
    }

    /// The open files of the active segment.
    pub(super) fn files_mut(&mut self) -> Result<&mut ActiveFiles<F>, StorageError> {
        let base_offset = self.base_offset;
        self.files.as_mut().ok_or_else(|| sealed(base_offset))
    }

    /// The open log file of the active segment (or of one being loaded).
    pub(super) fn log_file(&self) -> Result<&F, StorageError> {
        self.files
            .as_ref()
            .map(|files| &files.log)
            .ok_or_else(|| sealed(self.base_offset))
    }

    /// Appends `bytes` to the active segment's log file.
    /// Appends `parts` to the segment's log as one append of their concatenation.
    pub(super) fn append_log_parts(&mut self, parts: &[&[u8]]) -> Result<(), StorageError> {
        self.files_mut()?.log.append_parts(parts)
    }

    /// Reads `len` bytes of the segment's log at `position` (fewer only at the file's end):
    /// through the open file of the active segment, by name through `storage` for a sealed
    /// one.
    pub(super) fn read_at<S: Storage<File = F>>(
        &self,
        storage: &S,
        dir: &str,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        match &self.files {
            Some(files) => files.log.read_at(position, len),
            None => storage.read_at(dir, &file_name(self.base_offset, "log"), position, len),
        }
    }

    /// The header of the batch at `position` of the segment's log, if a whole header is there.
    pub(super) fn head_at<S: Storage<File = F>>(
        &self,
        storage: &S,
        dir: &str,
        position: u64,
    ) -> Result<Option<BatchHeader>, StorageError> {
        Ok(BatchHeader::read(&self.read_at(
            storage,
            dir,
            position,
            BATCH_HEADER_BYTES,
        )?))
    }

    pub(super) fn mark(&self) -> Mark {
        let (offset_index_len, time_index_len, ordinal_index_len) =
            self.files.as_ref().map_or((0, 0, 0), |files| {
                (
                    files.offset_index.len(),
                    files.time_index.len(),
                    files.ordinal_index.len(),
                )
            });
        Mark {
            size: self.size,
            offset_index_len,
            time_index_len,
            ordinal_index_len,
            offset_entries: self.offset_entries.len(),
            time_entries: self.time_entries.len(),
            batch_count: self.batch_count,
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
        let files = self.files_mut()?;
        files.log.truncate(mark.size)?;
        files.offset_index.truncate(mark.offset_index_len)?;
        files.time_index.truncate(mark.time_index_len)?;
        files.ordinal_index.truncate(mark.ordinal_index_len)?;
        self.offset_entries.truncate(mark.offset_entries);
        self.ordinal_entries.truncate(mark.offset_entries);
        self.time_entries.truncate(mark.time_entries);
        self.batch_count = mark.batch_count;
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
            let base_offset = self.base_offset;
            // The field, not `files_mut`: the entries below are pushed while it is borrowed.
            let files = self.files.as_mut().ok_or_else(|| sealed(base_offset))?;
            let entry = (relative, position as u32);
            let mut bytes = [0u8; OFFSET_ENTRY_BYTES];
            bytes[..4].copy_from_slice(&entry.0.to_be_bytes());
            bytes[4..].copy_from_slice(&entry.1.to_be_bytes());
            files.offset_index.append(&bytes)?;
            // Below 2^32: a segment holds less than 4 GiB and every batch is larger than 1 byte.
            let ordinal = self.batch_count as u32;
            files.ordinal_index.append(&ordinal.to_be_bytes())?;
            self.offset_entries.push(entry);
            self.ordinal_entries.push(ordinal);
            self.bytes_since_index = 0;
            if head.max_timestamp_ms > self.time_entries.last().map_or(i64::MIN, |e| e.0) {
                let mut bytes = [0u8; TIME_ENTRY_BYTES];
                bytes[..8].copy_from_slice(&head.max_timestamp_ms.to_be_bytes());
                bytes[8..].copy_from_slice(&relative.to_be_bytes());
                files.time_index.append(&bytes)?;
                self.time_entries.push((head.max_timestamp_ms, relative));
            }
        }
        self.bytes_since_index += head.size as u64;
        self.batch_count += 1;
        self.size = position + (head.size as u64);
        self.next_offset = head.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(head.max_timestamp_ms);
        self.max_append_time_ms = self.max_append_time_ms.max(head.append_time_ms);
        self.first_append_time_ms.get_or_insert(head.append_time_ms);
        Ok(())
    }

    /// Loads the index files (the segment's files are open: it is being loaded); `false` when
    /// they are missing, damaged or inconsistent.
    pub(super) fn load_indexes(&mut self) -> Result<bool, StorageError> {
        let base_offset = self.base_offset;
        let files = self.files.as_ref().ok_or_else(|| sealed(base_offset))?;
        let offset_bytes = files
            .offset_index
            .read_at(0, files.offset_index.len() as usize)?;
        let time_bytes = files
            .time_index
            .read_at(0, files.time_index.len() as usize)?;
        let ordinal_bytes = files.ordinal_index.read_at(
            ORDINAL_HEADER_BYTES as u64,
            (files.ordinal_index.len() as usize).saturating_sub(ORDINAL_HEADER_BYTES),
        )?;
        if offset_bytes.is_empty()
            || offset_bytes.len() % OFFSET_ENTRY_BYTES != 0
            || time_bytes.len() % TIME_ENTRY_BYTES != 0
            || ordinal_bytes.len() / ORDINAL_ENTRY_BYTES != offset_bytes.len() / OFFSET_ENTRY_BYTES
            || ordinal_bytes.len() % ORDINAL_ENTRY_BYTES != 0
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
        let ordinals: Vec<u32> = ordinal_bytes
            .chunks_exact(ORDINAL_ENTRY_BYTES)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Every batch holds at least one record: between two entries there are at least one
        // and at most as many batches as offsets.
        let ordinals_fit = ordinals.first() == Some(&0)
            && offsets.windows(2).zip(ordinals.windows(2)).all(|(o, n)| {
                n[0] < n[1] && o[1].0.checked_sub(o[0].0).is_some_and(|d| n[1] - n[0] <= d)
            });
        let monotonic = ordinals_fit
            && offsets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && times
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let in_bounds = offsets
            .iter()
            .all(|&(_, position)| u64::from(position) < files.log.len())
            && offsets.first() == Some(&(0, 0));
        if !monotonic || !in_bounds {
            return Ok(false);
        }
        // Each entry must point at a batch with the offset it claims, and a size the file
        // holds (else the walk from the start finds what is wrong).
        for &(relative, position) in &offsets {
            match read_head(&files.log, u64::from(position))? {
                Some(head)
                    if head.base_offset == base_offset + i64::from(relative)
                        && head.size >= BATCH_HEADER_BYTES
                        && u64::from(position) + head.size as u64 <= files.log.len() => {}
                _ => return Ok(false),
            }
        }
        self.offset_entries = offsets;
        // The batches from the last entry on are counted by the walk that finds the end.
        self.batch_count = ordinals.last().map_or(0, |&n| u64::from(n));
        self.ordinal_entries = ordinals;
        self.time_entries = times;
        Ok(true)
    }

    /// Empties the indexes, in memory and in their files, to rebuild them from the log (the
    /// ordinal header stays).
    pub(super) fn reset_indexes(&mut self) -> Result<(), StorageError> {
        let files = self.files_mut()?;
        files.offset_index.truncate(0)?;
        files.time_index.truncate(0)?;
        let header = files.ordinal_index.len().min(ORDINAL_HEADER_BYTES as u64);
        files.ordinal_index.truncate(header)?;
        self.offset_entries.clear();
        self.ordinal_entries.clear();
        self.batch_count = 0;
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

    /// The byte position to start scanning at for the batch with `ordinal` (inside this
    /// segment), with the ordinal of the batch there: the last index entry at or below.
    pub(super) fn ordinal_position(&self, ordinal: u64) -> (u64, u64) {
        let relative = ordinal
            .saturating_sub(self.base_ordinal)
            .min(u64::from(u32::MAX)) as u32;
        let at = self.ordinal_entries.partition_point(|&r| r <= relative);
        at.checked_sub(1).map_or((0, self.base_ordinal), |i| {
            (
                u64::from(self.offset_entries[i].1),
                self.base_ordinal + u64::from(self.ordinal_entries[i]),
            )
        })
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
        for extension in ["index", "timeindex", "ordinal", "log"] {
            storage.remove(dir, &file_name(base_offset, extension))?;
        }
        Ok(())
    }
}
