//! A partition's log: a directory of segments named by base offset.
//!
//! Each segment is four files: `<base:020>.log` (record batches exactly as produced, with
//! base offset and append time stamped), `<base:020>.index` (sparse offset index: 8-byte
//! entries of relative offset u32 + byte position u32, one per `index_interval_bytes` of log),
//! `<base:020>.timeindex` (12-byte entries of max timestamp i64 + relative offset u32,
//! whenever the max timestamp grows at an index point) and `<base:020>.ordinal` (the ordinal
//! of the segment's first batch in a checksummed header, then the relative ordinal u32 of
//! each offset-index entry's batch: see [`PartitionLog::next_ordinal`]). Indexes are hints:
//! they are rebuilt from the log when missing or damaged, and never trusted past the log's
//! end; the ordinal header is checked against the previous segment at open.
//!
//! Invariants: offsets are dense and increasing across segments (each segment's base offset
//! is the previous one's next offset); only the active (last) segment is appended to; on
//! open, the active segment is verified batch by batch (length, CRC, offsets) and truncated
//! at the first torn or corrupt batch.
//!
//! Open files: only the last segment keeps its four files open. Sealed segments keep none —
//! their indexes are in memory and their logs are read by name through
//! [`Storage::read_at`], which the file storage serves from a bounded cache of open handles
//! shared by all partitions — so a broker's descriptors grow with its partitions, not with
//! its segments.
//!
//! Where things live:
//!
//! - this file: the public types ([`LogConfig`], the errors, [`Appended`], [`Read`],
//!   [`Retained`]) and [`PartitionLog`] itself — append, read by offset and by timestamp,
//!   roll, producer snapshots, retention and deletion;
//! - `segment`: the `Segment` type — its files (open while it is active) and in-memory
//!   indexes, creating and sealing it, reading its log, loading and rebuilding its indexes,
//!   index lookups, file naming;
//! - `recovery`: opening a log ([`PartitionLog::open`]) — verifying the active segment
//!   batch by batch and truncating a torn tail, loading sealed segments and rebuilding
//!   damaged indexes, restoring producer state — and the [`Recovery`] it reports;
//! - `dedup`: the idempotency-key window — planning which records a batch drops
//!   (`DedupPlan`, `Placement`), appending as planned, and rebuilding the window on open;
//! - `tests`: model-based and simulation tests.

mod dedup;
mod recovery;
mod replicated;
mod segment;
mod truncate;

use herald_wire::batch::{self, BatchError, BatchHeader, BatchView, LOG_OVERHEAD_BYTES};
#[cfg(test)]
use herald_wire::headers::IDEMPOTENCY_KEY;
use herald_wire::limits::BATCH_BYTES_MAX;

use crate::producers::{ProducerTable, SequenceCheck};
use crate::storage::{Storage, StorageError, StorageFile, SyncHandle};
use herald_wire::dedup::KeyWindow;
use segment::{file_name, Segment};

pub use dedup::DedupPlan;
pub use recovery::Recovery;
pub use truncate::TruncateError;

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
    #[error("the partition is fenced and acknowledges nothing until the broker restarts and recovers it from its log: {reason}")]
    Fenced { reason: String },
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
    #[error("offset {offset} is past damage in the partition's log at offset {damaged_at}, which is quarantined: {reason}")]
    Quarantined {
        offset: i64,
        damaged_at: i64,
        reason: String,
    },
    #[error("batch ordinal {ordinal} is out of range: the log holds [{log_start_ordinal}, {next_ordinal})")]
    OrdinalOutOfRange {
        ordinal: u64,
        log_start_ordinal: u64,
        next_ordinal: u64,
    },
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
    #[error("invalid log config: {0}")]
    Config(String),
}

/// Damage found in a sealed segment when the log was opened (a flipped byte, a missing
/// segment file). The log serves what comes before it and refuses reads from `offset` on
/// and every append (it is fenced); the files are left as they are for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// The first offset that cannot be served.
    pub offset: i64,
    /// Base offset of the damaged segment.
    pub segment: i64,
    pub reason: String,
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

/// Set once a partition's log can no longer promise that what it acknowledges is stored
/// where it says: a sync failed (the kernel reports a lost writeback once, so a later sync
/// that succeeds proves nothing about those pages — the "fsyncgate" lesson), or an append
/// failed and cutting its partial write back failed too. A fenced log refuses every append;
/// reopening it (a broker restart) recovers from what the files hold. Clones share the state,
/// so syncs made outside the log (group commit, flush-behind) fence it too.
#[derive(Debug, Clone, Default)]
pub struct Fence(std::sync::Arc<std::sync::OnceLock<String>>);

impl Fence {
    /// Fences with `reason`; the first reason stays.
    pub fn set(&self, reason: impl Into<String>) {
        let _ = self.0.set(reason.into());
    }

    /// Why the log is fenced, if it is.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Checks a batch as a producer sent it: one whole batch (nothing after it), its CRC and
/// every record readable, attributes 0 (the bits are the broker's).
pub fn validate_produced(batch: &[u8]) -> Result<BatchView<'_>, BatchError> {
    validate_whole(batch, 0)
}

/// One whole batch (nothing after it) with a valid CRC and readable records, and no
/// attribute bit outside `allowed`.
pub(super) fn validate_whole(batch: &[u8], allowed: u8) -> Result<BatchView<'_>, BatchError> {
    let view = validate_frame(batch, allowed)?;
    view.validate_records()?;
    Ok(view)
}

/// [`validate_whole`] without walking the records: the length, format, CRC and attributes.
/// For a batch whose records were checked where it entered the cluster (a replicated
/// batch: its leader validated it whole before proposing it, and the CRC shows these are
/// the same bytes).
pub(super) fn validate_frame(batch: &[u8], allowed: u8) -> Result<BatchView<'_>, BatchError> {
    let view = BatchView::parse(batch)?;
    if view.size() != batch.len() {
        return Err(BatchError::Decode(herald_wire::DecodeError::Trailing {
            what: "batch",
            trailing: batch.len() - view.size(),
        }));
    }
    let attributes = view.header().attributes;
    if attributes & !allowed != 0 {
        return Err(BatchError::ReservedAttributes(attributes));
    }
    Ok(view)
}

/// Most unused capacity a fetch answer may keep when the read window itself becomes the
/// answer (see `collect`); past it the used part is copied into a buffer of its own size.
pub const READ_WINDOW_SLACK_BYTES: usize = 64 * 1024;

/// One partition's log over a [`Storage`].
///
/// A failed append leaves the log exactly as before it: a partial write is cut back to the
/// last whole batch (if that fails too, the log is fenced). A failed sync fences the log
/// (see [`Fence`]). Either way, no offset after a failure ever shifts.
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: String,
    config: LogConfig,
    segments: Vec<Segment<S::File>>,
    producers: ProducerTable,
    dedup: Option<KeyWindow>,
    fence: Fence,
    quarantine: Option<Quarantine>,
    /// Counts the segments made active (rolls, truncations): see [`PartitionLog::active_segment`].
    active_serial: u64,
    /// The append time (the leader's) at which a replicated log last expired idle producers
    /// (see [`PRODUCER_EXPIRY_CHECK_MS`]).
    producers_expired_at_ms: i64,
}

/// How often, in the append times of the batches it stores, a replicated log forgets idle
/// producers: by the times its leader stamped, so every replica forgets the same producers
/// at about the same batch (a single broker does it on its retention sweep).
pub const PRODUCER_EXPIRY_CHECK_MS: i64 = 10_000;

impl<S: Storage> PartitionLog<S> {
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

    /// An id of the active segment, different for every segment this log has made active
    /// (a roll, a truncation), so a cached [`PartitionLog::sync_handle`] can be told stale.
    /// A base offset is not enough: after a truncation a roll can make a new segment active
    /// at the base of one removed.
    pub fn active_segment(&self) -> u64 {
        self.active_serial
    }

    /// A handle that makes everything appended so far to the active segment durable. Whoever
    /// syncs through it must [`Fence::set`] the log's [`fence`](Self::fence) if the sync fails.
    pub fn sync_handle(&self) -> Result<std::sync::Arc<dyn SyncHandle>, StorageError> {
        self.active().log_file()?.sync_handle()
    }

    /// What an append of `count` records from `producer` would be: new, a duplicate of a
    /// stored batch, out of sequence or fenced (a replicated partition's leader decides this
    /// before proposing the batch).
    pub fn producer_check(
        &self,
        producer: herald_wire::batch::ProducerStamp,
        count: u32,
    ) -> SequenceCheck {
        self.producers.check(producer, count)
    }

    /// The damage that keeps part of the log unserved, if any (see [`Quarantine`]).
    pub fn quarantine(&self) -> Option<&Quarantine> {
        self.quarantine.as_ref()
    }

    /// The log's fence (shared: setting a clone fences the log).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Syncs `file`, fencing the log if that fails.
    fn sync_or_fence(fence: &Fence, file: &mut impl StorageFile) -> Result<(), StorageError> {
        file.sync()
            .inspect_err(|error| fence.set(format!("a sync failed: {error}")))
    }

    /// Validates `batch`, stamps its base offset and append time, and appends it.
    pub fn append(&mut self, batch: &[u8], now_ms: i64) -> Result<Appended, AppendError> {
        if let Some(reason) = self.fence.reason() {
            return Err(AppendError::Fenced {
                reason: reason.to_owned(),
            });
        }
        let view = validate_produced(batch)?;
        let count = i64::from(view.record_count());
        // A batch without a producer (not idempotent) always appends.
        let producer = view.producer();
        if let Some(producer) = producer {
            match self.producers.check(producer, view.record_count()) {
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
                        producer_id: producer.id,
                        expected,
                        received,
                    })
                }
                SequenceCheck::Fenced { current_epoch } => {
                    return Err(AppendError::ProducerFenced {
                        producer_id: producer.id,
                        epoch: producer.epoch,
                        current_epoch,
                    })
                }
            }
        }
        if let Some(window) = self.dedup.as_mut() {
            let plan = Self::plan_deduplication(window, &view, now_ms)?;
            return self.append_deduplicated(batch, plan, now_ms);
        }
        let base_offset = self.store(batch, now_ms, now_ms)?;
        if let Some(producer) = producer {
            self.producers
                .record(producer, count as u32, base_offset, now_ms);
        }
        Ok(Appended {
            base_offset,
            last_offset: base_offset + count - 1,
            append_time_ms: now_ms,
            duplicate: false,
            record_offsets: Vec::new(),
        })
    }

    /// Writes a validated batch at the end of the log, stamped with its base offset and
    /// `append_time_ms`; returns its base offset. The stamp goes on a copy of the header,
    /// written with the rest of the batch: the batch itself is not changed (a replica's
    /// entry is shared with what replication sends). On failure the segment is put back as
    /// it was (files cut to their old lengths), or the log fenced.
    fn store(
        &mut self,
        batch: &[u8],
        append_time_ms: i64,
        now_ms: i64,
    ) -> Result<i64, AppendError> {
        self.maybe_roll(batch.len() as u64, now_ms)?;
        let interval = self.config.index_interval_bytes;
        let fence = self.fence.clone();
        let segment = self.active_mut();
        let base_offset = segment.next_offset;
        // Validated: the header is there.
        let (Some(header), Some(body)) = (
            batch.get(..batch::BATCH_HEADER_BYTES),
            batch.get(batch::BATCH_HEADER_BYTES..),
        ) else {
            debug_assert!(false, "a validated batch without a header");
            return Err(AppendError::Batch(BatchError::Empty));
        };
        let mut stamped = [0u8; batch::BATCH_HEADER_BYTES];
        stamped.copy_from_slice(header);
        batch::stamp(&mut stamped, base_offset, append_time_ms);
        let Some(head) = BatchHeader::read(&stamped) else {
            debug_assert!(false, "a stamped header that does not read");
            return Err(AppendError::Batch(BatchError::Empty));
        };
        let mark = segment.mark();
        let written = segment
            .append_log_parts(&[&stamped, body])
            .and_then(|()| segment.index_batch(mark.size, &head, interval));
        if let Err(error) = written {
            if let Err(undo) = segment.roll_back(&mark) {
                fence.set(format!(
                    "an append failed ({error}) and cutting its partial write back failed too ({undo})"
                ));
            }
            return Err(error.into());
        }
        // A validated batch holds at least one record: the log end only moves forward.
        debug_assert!(
            segment.next_offset > base_offset,
            "append moved the log end from {base_offset} to {}",
            segment.next_offset
        );
        Ok(base_offset)
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
        self.write_snapshot(end)
    }

    /// Writes the producer table as the snapshot at `offset`, durably (file and entry).
    fn write_snapshot(&mut self, offset: i64) -> Result<(), StorageError> {
        let mut snapshot = self
            .storage
            .open(&self.dir, &file_name(offset, "snapshot"), true)?;
        snapshot.truncate(0)?;
        snapshot.append(&self.producers.encode())?;
        Self::sync_or_fence(&self.fence, &mut snapshot)?;
        self.storage.sync_dir(&self.dir)
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), StorageError> {
        let config = self.config;
        let active = self.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + incoming > config.segment_bytes;
        let old = active.first_append_time_ms.is_some_and(|first| {
            now_ms.saturating_sub(first) >= saturating_ms(config.segment_age_ms)
        });
        if !full && !old {
            return Ok(());
        }
        // Sealing makes the old segment durable: recovery only verifies the active one.
        let next = active.next_offset;
        let next_ordinal = active.next_ordinal();
        let fence = self.fence.clone();
        let files = self.active_mut().files_mut()?;
        Self::sync_or_fence(&fence, &mut files.log)?;
        Self::sync_or_fence(&fence, &mut files.offset_index)?;
        Self::sync_or_fence(&fence, &mut files.time_index)?;
        Self::sync_or_fence(&fence, &mut files.ordinal_index)?;
        // Producer state as of the new segment's start: recovery replays only what follows.
        self.write_snapshot(next)?;
        // The new files must exist after a crash before anything acknowledged lands in them.
        let created = Segment::start(&self.storage, &self.dir, next, next_ordinal)
            .and_then(|fresh| self.storage.sync_dir(&self.dir).map(|()| fresh));
        match created {
            Ok(fresh) => {
                // Synced above and never written again: its files are closed (its indexes are
                // in memory; its log is read through the storage from now on). Only now — had
                // the new segment failed, appends would have gone on here.
                self.active_mut().seal();
                self.segments.push(fresh);
                self.active_serial += 1;
                Ok(())
            }
            Err(error) => {
                // Left behind, a file of the new segment would be named inside this one's
                // range once appends go on here, and the log would not open again. If it
                // cannot be removed, nothing more is appended here (its name stays the end).
                let removed = Segment::<S::File>::remove_named(&self.storage, &self.dir, next)
                    .and_then(|()| self.storage.sync_dir(&self.dir));
                if let Err(undo) = removed {
                    self.fence.set(format!(
                        "creating segment {next} failed ({error}) and removing its files failed too ({undo})"
                    ));
                }
                Err(error)
            }
        }
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
        if let Some(quarantine) = &self.quarantine {
            if offset >= quarantine.offset {
                return Err(ReadError::Quarantined {
                    offset,
                    damaged_at: quarantine.offset,
                    reason: quarantine.reason.clone(),
                });
            }
        }
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
        let (index, position) = match self.locate(&self.segments[index], offset)? {
            Some(position) => (index, position),
            // Past the end of that segment's batches: the next one starts with it.
            None => (index + 1, 0),
        };
        done(self.read_from(index, position, max_bytes)?)
    }

    /// Whole batches from `position` of segment `index` on, into the following segments,
    /// up to about `max_bytes` (at least one batch if any is there).
    fn read_from(
        &self,
        index: usize,
        mut position: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        for segment in self.segments.iter().skip(index) {
            // Move on to the next segment only when this one was read to its end: batches
            // must come out contiguous.
            if !self.collect(segment, position, max_bytes, &mut out)? {
                break;
            }
            position = 0;
        }
        Ok(out)
    }

    /// Ordinal of the log's first batch (see [`PartitionLog::next_ordinal`]).
    pub fn log_start_ordinal(&self) -> u64 {
        self.segments[0].base_ordinal
    }

    /// The ordinal the next stored batch gets. Batches are numbered in the order they are
    /// stored, across the whole log and its history: the n-th batch ever kept has ordinal n
    /// (a truncation gives the removed ordinals to the batches stored after it). A replicated
    /// partition uses the ordinal as the batch's Raft index.
    pub fn next_ordinal(&self) -> u64 {
        self.active().next_ordinal()
    }

    /// The segment, position and header of the batch numbered `ordinal`.
    fn find_ordinal(&self, ordinal: u64) -> Result<(usize, u64, BatchHeader), ReadError> {
        let (start, end) = (self.log_start_ordinal(), self.next_ordinal());
        if ordinal < start || ordinal >= end {
            return Err(ReadError::OrdinalOutOfRange {
                ordinal,
                log_start_ordinal: start,
                next_ordinal: end,
            });
        }
        let index = self
            .segments
            .partition_point(|s| s.base_ordinal <= ordinal)
            .saturating_sub(1);
        let segment = &self.segments[index];
        let (mut position, mut at) = segment.ordinal_position(ordinal);
        while position < segment.size {
            let Some(head) = segment
                .head_at(&self.storage, &self.dir, position)?
                .filter(|head| head.size > 0)
            else {
                break;
            };
            if at == ordinal {
                if let Some(quarantine) = &self.quarantine {
                    if head.base_offset >= quarantine.offset {
                        return Err(ReadError::Quarantined {
                            offset: head.base_offset,
                            damaged_at: quarantine.offset,
                            reason: quarantine.reason.clone(),
                        });
                    }
                }
                return Ok((index, position, head));
            }
            at += 1;
            position += head.size as u64;
        }
        Err(StorageError {
            operation: "read",
            path: format!("{}/{}", self.dir, file_name(segment.base_offset, "log")),
            reason: format!(
                "the segment counts {} batches from ordinal {} but ordinal {ordinal} is not where its index points",
                segment.batch_count, segment.base_ordinal
            ),
        }
        .into())
    }

    /// The base offset of the batch numbered `ordinal`; the log's end (its high watermark)
    /// for [`PartitionLog::next_ordinal`].
    pub fn ordinal_offset(&self, ordinal: u64) -> Result<i64, ReadError> {
        if ordinal == self.next_ordinal() {
            return Ok(self.high_watermark());
        }
        Ok(self.find_ordinal(ordinal)?.2.base_offset)
    }

    /// Whole batches starting with the one numbered `ordinal`, up to about `max_bytes` (at
    /// least that one), as stored; no bytes at [`PartitionLog::next_ordinal`].
    pub fn read_ordinal(&self, ordinal: u64, max_bytes: usize) -> Result<Read, ReadError> {
        let bytes = if ordinal == self.next_ordinal() {
            Vec::new()
        } else {
            let (index, position, _) = self.find_ordinal(ordinal)?;
            self.read_from(index, position, max_bytes)?
        };
        Ok(Read {
            bytes,
            high_watermark: self.high_watermark(),
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Position of the batch holding `offset` in `segment`, if it is there.
    fn locate(&self, segment: &Segment<S::File>, offset: i64) -> Result<Option<u64>, ReadError> {
        let mut position = segment.index_position(offset);
        while position < segment.size {
            let Some(head) = segment.head_at(&self.storage, &self.dir, position)? else {
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
        &self,
        segment: &Segment<S::File>,
        position: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, ReadError> {
        let budget = max_bytes.saturating_sub(out.len());
        let available = segment.size.saturating_sub(position) as usize;
        let window = segment.read_at(&self.storage, &self.dir, position, budget.min(available))?;
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
            let head =
                segment
                    .head_at(&self.storage, &self.dir, position)?
                    .ok_or(ReadError::Corrupt {
                        segment: segment.base_offset,
                        position,
                        error: BatchError::Empty,
                    })?;
            let size = (head.size).min(available);
            *out = segment.read_at(&self.storage, &self.dir, position, size)?;
            return Ok(size == available);
        }
        if out.is_empty() && window.len() - used <= READ_WINDOW_SLACK_BYTES {
            // The window becomes the answer: a second copy of up to `max_bytes` (and a second
            // buffer) per fetch was a tenth of a fetch's time at 1 MiB (bench/RESULTS.md).
            // Only when it is nearly all used: answers are charged to response budgets by
            // their length, so a small answer must not keep a large window's capacity.
            let mut window = window;
            window.truncate(used);
            *out = window;
        } else {
            out.extend_from_slice(&window[..used]);
        }
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
                let Some(head) = segment.head_at(&self.storage, &self.dir, position)? else {
                    break;
                };
                if head.max_timestamp_ms >= timestamp_ms {
                    let bytes = segment.read_at(&self.storage, &self.dir, position, head.size)?;
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

    /// The append time of the batch holding `offset`, if the log holds it (group lag by age).
    pub fn append_time_at(&self, offset: i64) -> Option<i64> {
        let read = self.read(offset, 1).ok()?;
        BatchView::parse(&read.bytes)
            .ok()
            .map(|view| view.append_time_ms())
    }

    /// Deletes whole sealed segments past the retention limits.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<Retained, StorageError> {
        self.producers
            .expire(now_ms, self.config.producer_expiry_ms);
        let due = self.segments_past_retention(now_ms);
        self.remove_oldest(due)
    }

    /// How many of the oldest segments the retention limits let go now (the active one
    /// never): expired by age, or while the log without them is still over its size limit.
    fn segments_past_retention(&self, now_ms: i64) -> usize {
        let mut total = self.size_bytes();
        let mut due = 0;
        for oldest in &self.segments[..self.segments.len().saturating_sub(1)] {
            let expired = self.config.retention_ms.is_some_and(|ms| {
                oldest.max_append_time_ms != i64::MIN
                    && now_ms.saturating_sub(oldest.max_append_time_ms) >= saturating_ms(ms)
            });
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|bytes| total - oldest.size >= bytes);
            if !expired && !oversized {
                break;
            }
            total -= oldest.size;
            due += 1;
        }
        due
    }

    /// The last batch ordinal of the segments the retention limits let go now, if any: where
    /// a replicated partition purges up to (through Raft, every replica alike), instead of
    /// deleting on its own.
    pub fn retention_horizon(&self, now_ms: i64) -> Option<u64> {
        let due = self.segments_past_retention(now_ms);
        (due > 0).then(|| self.segments[due].base_ordinal.saturating_sub(1))
    }

    /// The last batch ordinal of the sealed segments that hold only records before
    /// `offset`, if any: where a replicated partition whose state is restated from `offset`
    /// on (the groups topic after a checkpoint) purges up to.
    pub fn horizon_before(&self, offset: i64) -> Option<u64> {
        let due = self.segments[..self.segments.len().saturating_sub(1)]
            .iter()
            .take_while(|segment| segment.next_offset <= offset)
            .count();
        (due > 0).then(|| self.segments[due].base_ordinal.saturating_sub(1))
    }

    /// Deletes the oldest sealed segments whose batches all have ordinals up to `ordinal`
    /// (a replicated partition's purge; the active segment stays).
    pub fn remove_through_ordinal(&mut self, ordinal: u64) -> Result<Retained, StorageError> {
        let due = self.segments[1..]
            .iter()
            .take_while(|next| next.base_ordinal <= ordinal.saturating_add(1))
            .count();
        self.remove_oldest(due)
    }

    /// Deletes the `count` oldest segments (never the active one), with the producer
    /// snapshots inside them.
    fn remove_oldest(&mut self, count: usize) -> Result<Retained, StorageError> {
        let mut retained = Retained::default();
        for _ in 0..count.min(self.segments.len().saturating_sub(1)) {
            let oldest = &self.segments[0];
            oldest.remove_files(&self.storage, &self.dir)?;
            // Its log file is gone (removed last): the segment leaves the log now, even if
            // what follows fails — a sealed segment is read by name, so one kept without its
            // file would fail every read of it. (Not durable until the directory is synced:
            // a crash before brings the whole segment back, which is consistent too.)
            let oldest = self.segments.remove(0);
            retained.segments_deleted += 1;
            retained.bytes_deleted += oldest.size;
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
        }
        if retained.segments_deleted > 0 {
            self.storage.sync_dir(&self.dir)?;
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

/// A configured duration in milliseconds as the signed clock arithmetic needs it: past
/// `i64::MAX` it stays `i64::MAX` ("never") instead of wrapping negative ("always").
fn saturating_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
