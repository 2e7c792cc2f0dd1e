//! A partition's log: a directory of segments named by base offset.
//!
//! Each segment is three files: `<base:020>.log` (record batches exactly as produced, with
//! base offset and append time stamped), `<base:020>.index` (sparse offset index: 8-byte
//! entries of relative offset u32 + byte position u32, one per `index_interval_bytes` of log)
//! and `<base:020>.timeindex` (12-byte entries of max timestamp i64 + relative offset u32,
//! whenever the max timestamp grows at an index point). Indexes are hints: they are rebuilt
//! from the log when missing or damaged, and never trusted past the log's end.
//!
//! Invariants: offsets are dense and increasing across segments (each segment's base offset
//! is the previous one's next offset); only the active (last) segment is appended to; on
//! open, the active segment is verified batch by batch (length, CRC, offsets) and truncated
//! at the first torn or corrupt batch.

use herald_wire::batch::{
    self, BatchError, BatchHeader, BatchView, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES,
};
use herald_wire::headers::IDEMPOTENCY_KEY;
use herald_wire::limits::BATCH_BYTES_MAX;

use crate::producers::{ProducerTable, SequenceCheck};
use crate::storage::{Storage, StorageError, StorageFile, SyncHandle};
use herald_wire::dedup::{KeyWindow, DEDUP_KEYS_MAX};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
/// Largest segment: positions in the offset index are u32.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64 - BATCH_BYTES_MAX as u64;

/// How a partition's log behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when the active segment would grow past this size.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is this old.
    pub segment_age_ms: u64,
    /// Delete sealed segments whose newest append is older; `None` keeps them.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at least this large without them.
    pub retention_bytes: Option<u64>,
    /// Bytes of log between two offset-index entries.
    pub index_interval_bytes: u64,
    /// Idempotent-producer state idle this long is forgotten.
    pub producer_expiry_ms: i64,
    /// When set, a record whose `idempotency-key` header was stored within this many ms is
    /// acknowledged without being stored again (bounded by `dedup::DEDUP_KEYS_MAX` keys).
    pub dedup_window_ms: Option<i64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 256 * 1024 * 1024,
            segment_age_ms: 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            producer_expiry_ms: 7 * 24 * 3600 * 1000,
            dedup_window_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("out of order sequence for producer {producer_id}: expected {expected}, received {received}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        received: i32,
    },
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {high_watermark})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored batch at position {position} of segment {segment} is corrupt: {error}")]
    Corrupt {
        segment: i64,
        position: u64,
        error: BatchError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "segment {base} does not follow the previous segment, which ends at offset {expected}"
    )]
    Gap { base: i64, expected: i64 },
    #[error("invalid log config: {0}")]
    Config(String),
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Bytes cut from the active segment's tail (torn or corrupt batches).
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub truncated_because: Option<String>,
    /// Indexes rebuilt because they were missing or damaged.
    pub indexes_rebuilt: usize,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub append_time_ms: i64,
    /// The batch had been stored already (an idempotent retry): nothing was written and the
    /// offsets are the original ones.
    pub duplicate: bool,
    /// Where each record of the batch is, when that is not `base_offset + index` (the dedup
    /// window dropped some: a dropped record is where its first copy is); empty otherwise.
    pub record_offsets: Vec<i64>,
}

/// Where a record of a batch appended under a dedup window goes: kept (its index among the
/// kept records), or dropped onto the stored offset of its key (an earlier record of the same
/// batch with its key shares that record's placement).
#[derive(Debug, Clone, Copy)]
enum Placement {
    Kept(i64),
    Stored(i64),
}

/// What the dedup window decided for one batch.
struct DedupPlan {
    /// (producer id, epoch, base sequence) of the batch as sent.
    producer: (i64, i16, i32),
    /// Records in the batch as sent.
    count: u32,
    placements: Vec<Placement>,
    /// Idempotency keys of the kept records, in order.
    kept_keys: Vec<Option<Vec<u8>>>,
    /// The batch of the kept records, when some were dropped.
    rewritten: Option<Vec<u8>>,
}

/// Batches read from the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub bytes: Vec<u8>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

struct Segment<F> {
    base_offset: i64,
    log: F,
    offset_index: F,
    time_index: F,
    offset_entries: Vec<(u32, u32)>,
    time_entries: Vec<(i64, u32)>,
    size: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
    max_append_time_ms: i64,
    first_append_time_ms: Option<i64>,
    bytes_since_index: u64,
}

fn file_name(base: i64, extension: &str) -> String {
    format!("{base:020}.{extension}")
}

/// The header of the stored batch at `position`, if a whole header is there.
fn read_head<F: StorageFile>(file: &F, position: u64) -> Result<Option<BatchHeader>, StorageError> {
    Ok(BatchHeader::read(
        &file.read_at(position, BATCH_HEADER_BYTES)?,
    ))
}

impl<F: StorageFile> Segment<F> {
    fn create<S: Storage<File = F>>(
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

    /// Records index entries for a batch stored at `position`.
    fn index_batch(
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
    fn load_indexes(&mut self) -> Result<bool, StorageError> {
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
        // Each entry must point at a batch with the offset it claims.
        for &(relative, position) in &offsets {
            match read_head(&self.log, u64::from(position))? {
                Some(head) if head.base_offset == self.base_offset + i64::from(relative) => {}
                _ => return Ok(false),
            }
        }
        self.offset_entries = offsets;
        self.time_entries = times;
        Ok(true)
    }

    fn reset_indexes(&mut self) -> Result<(), StorageError> {
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
    fn index_position(&self, offset: i64) -> u64 {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let at = self.offset_entries.partition_point(|&(r, _)| r <= relative);
        at.checked_sub(1)
            .map_or(0, |i| u64::from(self.offset_entries[i].1))
    }

    fn remove_files<S: Storage<File = F>>(
        &self,
        storage: &S,
        dir: &str,
    ) -> Result<(), StorageError> {
        for extension in ["log", "index", "timeindex"] {
            storage.remove(dir, &file_name(self.base_offset, extension))?;
        }
        Ok(())
    }
}

/// One partition's log over a [`Storage`].
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: String,
    config: LogConfig,
    segments: Vec<Segment<S::File>>,
    producers: ProducerTable,
    dedup: Option<KeyWindow>,
}

impl<S: Storage> PartitionLog<S> {
    /// Opens the log in `dir`, creating it if empty, and recovers the active segment.
    pub fn open(storage: S, dir: &str, config: LogConfig) -> Result<(Self, Recovery), OpenError> {
        if config.segment_bytes == 0 || config.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(OpenError::Config(format!(
                "segment_bytes must be within 1..={SEGMENT_BYTES_MAX}"
            )));
        }
        if config.index_interval_bytes == 0 {
            return Err(OpenError::Config(
                "index_interval_bytes must be positive".to_owned(),
            ));
        }
        storage.create_dir(dir)?;
        let mut bases: Vec<i64> = storage
            .list(dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".log"))
            .filter_map(|base| base.parse::<i64>().ok())
            .collect();
        bases.sort_unstable();
        let mut recovery = Recovery {
            segments: bases.len().max(1),
            ..Recovery::default()
        };
        let mut segments = Vec::with_capacity(bases.len());
        let last = bases.len().saturating_sub(1);
        for (i, base) in bases.into_iter().enumerate() {
            let mut segment = Segment::create(&storage, dir, base)?;
            if let Some(previous) = segments.last() {
                let previous: &Segment<S::File> = previous;
                if previous.next_offset != base {
                    return Err(OpenError::Gap {
                        base,
                        expected: previous.next_offset,
                    });
                }
            }
            if i == last {
                Self::recover_active(&mut segment, config.index_interval_bytes, &mut recovery)?;
            } else {
                Self::load_sealed(&mut segment, config.index_interval_bytes, &mut recovery)?;
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&storage, dir, 0)?);
        }
        let mut log = Self {
            storage,
            dir: dir.to_owned(),
            config,
            segments,
            producers: ProducerTable::default(),
            dedup: None,
        };
        log.restore_producers()?;
        log.restore_dedup()?;
        Ok((log, recovery))
    }

    /// Loads the newest usable producer snapshot and replays the batches after it.
    fn restore_producers(&mut self) -> Result<(), StorageError> {
        let mut snapshots: Vec<i64> = self
            .storage
            .list(&self.dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".snapshot"))
            .filter_map(|offset| offset.parse::<i64>().ok())
            .filter(|offset| *offset >= self.log_start_offset() && *offset <= self.high_watermark())
            .collect();
        snapshots.sort_unstable();
        let mut from = self.log_start_offset();
        self.producers = ProducerTable::default();
        for offset in snapshots.into_iter().rev() {
            let file = self
                .storage
                .open(&self.dir, &file_name(offset, "snapshot"), false)?;
            if let Some(table) = ProducerTable::decode(&file.read_at(0, file.len() as usize)?) {
                self.producers = table;
                from = offset;
                break;
            }
        }
        for segment in self.segments.iter().filter(|s| s.next_offset > from) {
            let mut position = if segment.base_offset >= from {
                0
            } else {
                segment.index_position(from)
            };
            while position < segment.size {
                let Some(head) = read_head(&segment.log, position)? else {
                    break;
                };
                if (head.size as u64) == 0 {
                    break;
                }
                if head.base_offset >= from {
                    let count = (head.next_offset() - head.base_offset) as u32;
                    self.producers.record(
                        head.producer_id,
                        head.producer_epoch,
                        head.base_sequence,
                        count,
                        head.base_offset,
                        head.append_time_ms,
                    );
                }
                position += head.size as u64;
            }
        }
        Ok(())
    }

    /// Rebuilds the idempotency-key window from the last two segments' records (the window is
    /// minutes; a segment spans far more unless it is tiny), relative to the newest append.
    fn restore_dedup(&mut self) -> Result<(), StorageError> {
        let Some(window_ms) = self.config.dedup_window_ms else {
            return Ok(());
        };
        let mut window = KeyWindow::new(window_ms, DEDUP_KEYS_MAX);
        let from = self
            .segments
            .iter()
            .rev()
            .nth(1)
            .or_else(|| self.segments.first())
            .map_or(0, |s| s.base_offset)
            .max(self.log_start_offset());
        let mut offset = from;
        while offset < self.high_watermark() {
            let Ok(read) = self.read(offset, 1 << 20) else {
                break;
            };
            let mut advanced = false;
            for view in batch::batches(&read.bytes) {
                let Ok(view) = view else { break };
                let append_time = view.append_time_ms();
                for (index, record) in view.records().enumerate() {
                    let Ok(record) = record else { continue };
                    if let Some(key) = record.header(IDEMPOTENCY_KEY) {
                        window.insert(key, view.base_offset() + index as i64, append_time);
                    }
                }
                offset = view.next_offset();
                advanced = true;
            }
            if !advanced {
                break;
            }
        }
        self.dedup = Some(window);
        Ok(())
    }

    /// Verifies every batch of the active segment and truncates at the first bad one.
    fn recover_active(
        segment: &mut Segment<S::File>,
        interval: u64,
        recovery: &mut Recovery,
    ) -> Result<(), StorageError> {
        let file_len = segment.log.len();
        segment.reset_indexes()?;
        let mut position = 0u64;
        let mut expected = segment.base_offset;
        let mut problem = None;
        while position < file_len {
            let Some(head) = read_head(&segment.log, position)? else {
                problem = Some(format!("torn batch header at position {position}"));
                break;
            };
            if head.size > BATCH_BYTES_MAX || position + head.size as u64 > file_len {
                problem = Some(format!("torn batch at position {position}"));
                break;
            }
            let bytes = segment.log.read_at(position, head.size)?;
            match BatchView::parse(&bytes) {
                Ok(view) if view.base_offset() == expected => {}
                Ok(view) => {
                    problem = Some(format!(
                        "batch at position {position} has offset {} where {expected} was expected",
                        view.base_offset()
                    ));
                    break;
                }
                Err(error) => {
                    problem = Some(format!("corrupt batch at position {position}: {error}"));
                    break;
                }
            }
            segment.index_batch(position, &head, interval)?;
            expected = head.next_offset();
            position += head.size as u64;
        }
        if position < file_len {
            segment.log.truncate(position)?;
            recovery.truncated_bytes = file_len - position;
            recovery.truncated_because = problem;
        }
        recovery.indexes_rebuilt += 1;
        Ok(())
    }

    /// Loads a sealed segment's indexes (rebuilding them if needed) and finds its end.
    fn load_sealed(
        segment: &mut Segment<S::File>,
        interval: u64,
        recovery: &mut Recovery,
    ) -> Result<(), StorageError> {
        let file_len = segment.log.len();
        let (mut position, indexed) = if segment.load_indexes()? {
            let last = segment.offset_entries.last().map_or(0, |e| u64::from(e.1));
            (last, true)
        } else {
            segment.reset_indexes()?;
            recovery.indexes_rebuilt += 1;
            (0, false)
        };
        if indexed {
            // Restore the counters the walk below does not recompute for indexed batches.
            segment.max_timestamp_ms = segment.time_entries.last().map_or(i64::MIN, |e| e.0);
        }
        while position < file_len {
            let Some(head) = read_head(&segment.log, position)? else {
                break;
            };
            if position + head.size as u64 > file_len {
                break;
            }
            if indexed {
                // Past the last index entry: advance without adding entries before the interval.
                segment.size = position + (head.size as u64);
                segment.next_offset = head.next_offset();
                segment.max_timestamp_ms = segment.max_timestamp_ms.max(head.max_timestamp_ms);
                segment.max_append_time_ms = segment.max_append_time_ms.max(head.append_time_ms);
                segment
                    .first_append_time_ms
                    .get_or_insert(head.append_time_ms);
            } else {
                segment.index_batch(position, &head, interval)?;
            }
            position += head.size as u64;
        }
        Ok(())
    }

    fn active(&self) -> &Segment<S::File> {
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment<S::File> {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// The offset the next record will get (one past the last stored record).
    pub fn high_watermark(&self) -> i64 {
        self.active().next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Idempotent producers currently remembered.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Base offset of the active segment (changes when the log rolls).
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    /// A handle that makes everything appended so far to the active segment durable.
    pub fn sync_handle(&self) -> Result<std::sync::Arc<dyn SyncHandle>, StorageError> {
        self.active().log.sync_handle()
    }

    /// Validates `batch`, stamps its base offset and append time, and appends it.
    pub fn append(&mut self, batch: &mut [u8], now_ms: i64) -> Result<Appended, AppendError> {
        let view = BatchView::parse(batch)?;
        if view.size() != batch.len() {
            return Err(BatchError::Decode(herald_wire::DecodeError::Trailing {
                what: "batch",
                trailing: batch.len() - view.size(),
            })
            .into());
        }
        view.validate_records()?;
        let count = i64::from(view.record_count());
        let (producer_id, epoch, base_sequence) = (
            view.producer_id(),
            view.producer_epoch(),
            view.base_sequence(),
        );
        match self
            .producers
            .check(producer_id, epoch, base_sequence, view.record_count())
        {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate { base_offset } => {
                return Ok(Appended {
                    base_offset,
                    last_offset: base_offset + count - 1,
                    append_time_ms: now_ms,
                    duplicate: true,
                    record_offsets: Vec::new(),
                });
            }
            SequenceCheck::OutOfOrder { expected, received } => {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    received,
                })
            }
            SequenceCheck::Fenced { current_epoch } => {
                return Err(AppendError::ProducerFenced {
                    producer_id,
                    epoch,
                    current_epoch,
                })
            }
        }
        if self.dedup.is_some() {
            let plan = self.plan_deduplication(&view, now_ms)?;
            return self.append_deduplicated(batch, plan, now_ms);
        }
        let base_offset = self.store(batch, now_ms)?;
        self.producers.record(
            producer_id,
            epoch,
            base_sequence,
            count as u32,
            base_offset,
            now_ms,
        );
        Ok(Appended {
            base_offset,
            last_offset: base_offset + count - 1,
            append_time_ms: now_ms,
            duplicate: false,
            record_offsets: Vec::new(),
        })
    }

    /// Writes a validated batch at the end of the log; returns its base offset.
    fn store(&mut self, batch: &mut [u8], now_ms: i64) -> Result<i64, AppendError> {
        self.maybe_roll(batch.len() as u64, now_ms)?;
        let interval = self.config.index_interval_bytes;
        let segment = self.active_mut();
        let base_offset = segment.next_offset;
        batch::stamp(batch, base_offset, now_ms);
        let position = segment.size;
        segment.log.append(batch)?;
        // Just stamped and validated: the header is there.
        let Some(head) = BatchHeader::read(batch) else {
            return Err(AppendError::Batch(BatchError::Empty));
        };
        segment.index_batch(position, &head, interval)?;
        Ok(base_offset)
    }

    /// Decides, from an already validated batch, which records the idempotency-key window
    /// drops (their key was stored within the window, or earlier in the same batch) and,
    /// when some are dropped, encodes the batch of the rest: its base sequence moves up by the
    /// number dropped, so its last sequence — what the producer continues from — stays the
    /// producer's.
    fn plan_deduplication(
        &mut self,
        view: &BatchView<'_>,
        now_ms: i64,
    ) -> Result<DedupPlan, AppendError> {
        let window = self
            .dedup
            .as_mut()
            .ok_or(AppendError::Batch(BatchError::Empty))?;
        let count = view.record_count() as usize;
        let mut plan = DedupPlan {
            producer: (
                view.producer_id(),
                view.producer_epoch(),
                view.base_sequence(),
            ),
            count: count as u32,
            placements: Vec::with_capacity(count),
            kept_keys: Vec::with_capacity(count),
            rewritten: None,
        };
        let mut in_batch: std::collections::HashMap<Vec<u8>, Placement> =
            std::collections::HashMap::new();
        for record in view.records() {
            let record = record?;
            let key = record.header(IDEMPOTENCY_KEY).map(<[u8]>::to_vec);
            let earlier = key.as_ref().and_then(|key| {
                in_batch
                    .get(key)
                    .copied()
                    .or_else(|| window.lookup(key, now_ms).map(Placement::Stored))
            });
            let placement = earlier.unwrap_or_else(|| {
                let placement = Placement::Kept(plan.kept_keys.len() as i64);
                plan.kept_keys.push(key.clone());
                placement
            });
            if let Some(key) = key {
                in_batch.entry(key).or_insert(placement);
            }
            plan.placements.push(placement);
        }
        let dropped = plan.placements.len() - plan.kept_keys.len();
        if dropped > 0 && !plan.kept_keys.is_empty() {
            let mut writer = batch::BatchWriter::with_capacity(view.size());
            // A kept record is the first with its index; later ones share it as duplicates.
            let mut next_kept = 0;
            for (record, placement) in view.records().zip(&plan.placements) {
                if let (Ok(record), Placement::Kept(index)) = (record, placement) {
                    if *index != next_kept {
                        continue;
                    }
                    next_kept += 1;
                    let headers: Vec<(&str, &[u8])> = record.headers.iter().collect();
                    writer.push(
                        record.timestamp_ms,
                        record.key,
                        record.value,
                        headers.into_iter(),
                    )?;
                }
            }
            let (producer_id, epoch, base_sequence) = plan.producer;
            plan.rewritten = Some(if producer_id >= 0 {
                writer.finish(
                    producer_id,
                    epoch,
                    base_sequence.wrapping_add(dropped as i32),
                )?
            } else {
                writer.finish(-1, -1, -1)?
            });
        }
        Ok(plan)
    }

    /// Appends a batch as `plan` says. A batch of duplicates only is acknowledged with the
    /// first one's original offset; for an idempotent producer its sequences still advance,
    /// made durable by a producer snapshot at the log end (the log itself holds nothing to
    /// replay them from).
    fn append_deduplicated(
        &mut self,
        batch: &mut [u8],
        plan: DedupPlan,
        now_ms: i64,
    ) -> Result<Appended, AppendError> {
        let DedupPlan {
            producer: (producer_id, epoch, base_sequence),
            count,
            placements,
            kept_keys,
            rewritten,
        } = plan;
        let kept = kept_keys.len() as i64;
        let record_offsets = |base_offset: i64| -> Vec<i64> {
            if kept == i64::from(count) {
                return Vec::new();
            }
            placements
                .iter()
                .map(|placement| match placement {
                    Placement::Kept(index) => base_offset + index,
                    Placement::Stored(offset) => *offset,
                })
                .collect()
        };
        if kept == 0 {
            // Every record is a duplicate: all placements are stored offsets.
            let record_offsets = record_offsets(self.high_watermark());
            let base_offset = record_offsets
                .first()
                .copied()
                .unwrap_or_else(|| self.high_watermark());
            if producer_id >= 0 {
                self.producers.record(
                    producer_id,
                    epoch,
                    base_sequence,
                    count,
                    base_offset,
                    now_ms,
                );
                self.snapshot_producers()?;
            }
            return Ok(Appended {
                base_offset,
                last_offset: base_offset,
                append_time_ms: now_ms,
                duplicate: true,
                record_offsets,
            });
        }
        let base_offset = match rewritten {
            Some(mut rewritten) => self.store(&mut rewritten, now_ms)?,
            None => self.store(batch, now_ms)?,
        };
        self.producers.record(
            producer_id,
            epoch,
            base_sequence,
            count,
            base_offset,
            now_ms,
        );
        if let Some(window) = self.dedup.as_mut() {
            for (index, key) in kept_keys.iter().enumerate() {
                if let Some(key) = key {
                    window.insert(key, base_offset + index as i64, now_ms);
                }
            }
        }
        Ok(Appended {
            base_offset,
            last_offset: base_offset + kept - 1,
            append_time_ms: now_ms,
            duplicate: false,
            record_offsets: record_offsets(base_offset),
        })
    }

    /// Writes the producer table as a snapshot at the log end (replacing an earlier one made
    /// the same way inside the active segment).
    fn snapshot_producers(&mut self) -> Result<(), StorageError> {
        let end = self.high_watermark();
        let active_base = self.active().base_offset;
        for name in self.storage.list(&self.dir)? {
            if let Some(offset) = name
                .strip_suffix(".snapshot")
                .and_then(|o| o.parse::<i64>().ok())
            {
                if offset > active_base && offset < end {
                    self.storage.remove(&self.dir, &name)?;
                }
            }
        }
        let mut snapshot = self
            .storage
            .open(&self.dir, &file_name(end, "snapshot"), true)?;
        snapshot.truncate(0)?;
        snapshot.append(&self.producers.encode())?;
        snapshot.sync()?;
        Ok(())
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), StorageError> {
        let config = self.config;
        let active = self.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + incoming > config.segment_bytes;
        let old = active
            .first_append_time_ms
            .is_some_and(|first| now_ms.saturating_sub(first) >= config.segment_age_ms as i64);
        if !full && !old {
            return Ok(());
        }
        // Sealing makes the old segment durable: recovery only verifies the active one.
        let next = active.next_offset;
        let segment = self.active_mut();
        segment.log.sync()?;
        segment.offset_index.sync()?;
        segment.time_index.sync()?;
        // Producer state as of the new segment's start: recovery replays only what follows.
        let mut snapshot = self
            .storage
            .open(&self.dir, &file_name(next, "snapshot"), true)?;
        snapshot.truncate(0)?;
        snapshot.append(&self.producers.encode())?;
        snapshot.sync()?;
        let fresh = Segment::create(&self.storage, &self.dir, next)?;
        self.segments.push(fresh);
        Ok(())
    }

    /// Whole batches starting with the one holding `offset`, up to about `max_bytes` (always
    /// at least one batch if any exists). Reading at the high watermark returns no bytes.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Read, ReadError> {
        let high_watermark = self.high_watermark();
        let log_start_offset = self.log_start_offset();
        let done = |bytes| {
            Ok(Read {
                bytes,
                high_watermark,
                log_start_offset,
            })
        };
        if offset == high_watermark {
            return done(Vec::new());
        }
        if offset < log_start_offset || offset > high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark,
            });
        }
        let index = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let mut out = Vec::new();
        for segment in &self.segments[index..] {
            let start = if out.is_empty() {
                Self::locate(segment, offset)?
            } else {
                Some(0)
            };
            let Some(start) = start else { continue };
            // Move on to the next segment only when this one was read to its end: batches
            // must come out contiguous.
            if !Self::collect(segment, start, max_bytes, &mut out)? {
                break;
            }
        }
        done(out)
    }

    /// Position of the batch holding `offset` in `segment`, if it is there.
    fn locate(segment: &Segment<S::File>, offset: i64) -> Result<Option<u64>, ReadError> {
        let mut position = segment.index_position(offset);
        while position < segment.size {
            let Some(head) = read_head(&segment.log, position)? else {
                break;
            };
            if (head.size as u64) == 0 {
                break;
            }
            if head.next_offset() > offset {
                return Ok(Some(position));
            }
            position += head.size as u64;
        }
        Ok(None)
    }

    /// Appends whole batches from `position` until `max_bytes` would be passed; true when
    /// the segment was read to its end.
    fn collect(
        segment: &Segment<S::File>,
        position: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, ReadError> {
        let budget = max_bytes.saturating_sub(out.len());
        let available = segment.size.saturating_sub(position) as usize;
        let window = segment.log.read_at(position, budget.min(available))?;
        let mut used = 0;
        while used + LOG_OVERHEAD_BYTES <= window.len() {
            let Some(size) = batch::batch_size(&window[used..]) else {
                break;
            };
            if used + size > window.len() {
                break;
            }
            used += size;
        }
        if used == 0 && out.is_empty() && available > 0 {
            // The first batch alone is larger than max_bytes: serve it whole.
            let head = read_head(&segment.log, position)?.ok_or(ReadError::Corrupt {
                segment: segment.base_offset,
                position,
                error: BatchError::Empty,
            })?;
            let size = (head.size).min(available);
            out.extend_from_slice(&segment.log.read_at(position, size)?);
            return Ok(size == available);
        }
        out.extend_from_slice(&window[..used]);
        Ok(used == available)
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`, with that
    /// record's timestamp; `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, ReadError> {
        for segment in self
            .segments
            .iter()
            .filter(|s| s.size > 0 && s.max_timestamp_ms >= timestamp_ms)
        {
            let at = segment
                .time_entries
                .partition_point(|&(t, _)| t < timestamp_ms);
            // Start from the index point before the first entry reaching the timestamp.
            let relative = at.checked_sub(1).map_or(0, |i| segment.time_entries[i].1);
            let mut position = segment.index_position(segment.base_offset + i64::from(relative));
            while position < segment.size {
                let Some(head) = read_head(&segment.log, position)? else {
                    break;
                };
                if head.max_timestamp_ms >= timestamp_ms {
                    let bytes = segment.log.read_at(position, head.size)?;
                    let view = BatchView::parse(&bytes).map_err(|error| ReadError::Corrupt {
                        segment: segment.base_offset,
                        position,
                        error,
                    })?;
                    for (i, record) in view.records().enumerate() {
                        let record = record.map_err(|error| ReadError::Corrupt {
                            segment: segment.base_offset,
                            position,
                            error,
                        })?;
                        if record.timestamp_ms >= timestamp_ms {
                            return Ok(Some((view.base_offset() + i as i64, record.timestamp_ms)));
                        }
                    }
                }
                position += (head.size as u64).max(1);
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments past the retention limits.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<Retained, StorageError> {
        self.producers
            .expire(now_ms, self.config.producer_expiry_ms);
        self.producers
            .expire(now_ms, self.config.producer_expiry_ms);
        let mut retained = Retained::default();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let total = self.size_bytes();
            let expired = self.config.retention_ms.is_some_and(|ms| {
                oldest.max_append_time_ms != i64::MIN
                    && now_ms.saturating_sub(oldest.max_append_time_ms) >= ms as i64
            });
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|bytes| total - oldest.size >= bytes);
            if !expired && !oversized {
                break;
            }
            oldest.remove_files(&self.storage, &self.dir)?;
            // Snapshots inside the deleted segment (at its start, or taken by the dedup
            // window at a log end) now lie before the log start.
            let end = oldest.next_offset;
            for name in self.storage.list(&self.dir)? {
                let offset = name
                    .strip_suffix(".snapshot")
                    .and_then(|o| o.parse::<i64>().ok());
                if offset.is_some_and(|o| o >= oldest.base_offset && o < end) {
                    self.storage.remove(&self.dir, &name)?;
                }
            }
            retained.segments_deleted += 1;
            retained.bytes_deleted += oldest.size;
            self.segments.remove(0);
        }
        Ok(retained)
    }

    /// Removes every file of the log.
    pub fn delete(self) -> Result<(), StorageError> {
        for segment in &self.segments {
            segment.remove_files(&self.storage, &self.dir)?;
        }
        self.storage.remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests;
