//! Cutting a log's tail: [`PartitionLog::truncate_to`] removes every batch from a batch
//! boundary on, durably, and brings producer and dedup state back to what the kept batches
//! say. A replica of a replicated partition does this when its leader's log disagrees with
//! the tail of its own (Raft's `truncate_after`); nothing else cuts acknowledged batches.

use herald_wire::batch::BatchView;

use super::segment::{file_name, Segment};
use super::{PartitionLog, Recovery};
use crate::storage::{Storage, StorageError, StorageFile};

/// Why a log was not cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TruncateError {
    #[error(
        "offset {offset} is outside the log, which holds [{log_start_offset}, {high_watermark})"
    )]
    OutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("offset {offset} is inside the batch that starts at {batch_base_offset}: a log is cut between batches only")]
    InsideBatch { offset: i64, batch_base_offset: i64 },
    #[error("the batch at position {position} of segment {segment}, which the cut would keep, is corrupt: {reason}")]
    Corrupt {
        segment: i64,
        position: u64,
        reason: String,
    },
    #[error("the partition is fenced and is not cut until the broker recovers it from its log: {reason}")]
    Fenced { reason: String },
    #[error("the partition's log is quarantined at offset {damaged_at}: {reason}")]
    Quarantined { damaged_at: i64, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl<S: Storage> PartitionLog<S> {
    /// Removes every batch from `offset` on: `offset` must start a batch (or be the log's
    /// end, which changes nothing) and not lie before the log's start. Returns the bytes
    /// removed.
    ///
    /// Durable on return: segments after the cut are removed newest first and the directory
    /// synced (a crash midway leaves a shorter log, never one with a hole), then the segment
    /// holding the cut is cut (a durable truncate) and its indexes rebuilt by walking and
    /// verifying its kept batches, as recovery does. Producer snapshots past the cut are
    /// removed and the producer table and dedup window rebuilt, so a producer's retry of a
    /// removed batch is appended again, not taken for a duplicate. A failure after the first
    /// removal fences the log (reopening it recovers what the files hold).
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64, TruncateError> {
        if let Some(reason) = self.fence.reason() {
            return Err(TruncateError::Fenced {
                reason: reason.to_owned(),
            });
        }
        if let Some(quarantine) = &self.quarantine {
            return Err(TruncateError::Quarantined {
                damaged_at: quarantine.offset,
                reason: quarantine.reason.clone(),
            });
        }
        let (start, end) = (self.log_start_offset(), self.high_watermark());
        if offset < start || offset > end {
            return Err(TruncateError::OutOfRange {
                offset,
                log_start_offset: start,
                high_watermark: end,
            });
        }
        if offset == end {
            return Ok(0);
        }
        let keep = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let position = self.batch_position(&self.segments[keep], offset)?;
        self.verify_kept(&self.segments[keep], position)?;
        let size_before = self.size_bytes();
        if let Err(error) = self.cut(keep, position, offset) {
            self.fence.set(format!(
                "cutting the log at offset {offset} failed: {error}"
            ));
            return Err(error.into());
        }
        Ok(size_before.saturating_sub(self.size_bytes()))
    }

    /// Where the batch starting at `offset` is in `segment`.
    fn batch_position(
        &self,
        segment: &Segment<S::File>,
        offset: i64,
    ) -> Result<u64, TruncateError> {
        let mut position = segment.index_position(offset);
        while position < segment.size {
            let Some(head) = segment.head_at(&self.storage, &self.dir, position)? else {
                break;
            };
            if head.base_offset == offset {
                return Ok(position);
            }
            if head.next_offset() > offset {
                return Err(TruncateError::InsideBatch {
                    offset,
                    batch_base_offset: head.base_offset,
                });
            }
            if head.size == 0 {
                break;
            }
            position += head.size as u64;
        }
        Err(StorageError {
            operation: "truncate",
            path: format!("{}/{}", self.dir, file_name(segment.base_offset, "log")),
            reason: format!("no batch boundary at offset {offset} where the index points"),
        }
        .into())
    }

    /// Checks every batch of `segment` before `end` (the batches a cut there keeps): a sealed
    /// segment is not read through at open, and the rebuild after the cut would cut at
    /// damage it met, below the cut, after later segments were removed.
    fn verify_kept(&self, segment: &Segment<S::File>, end: u64) -> Result<(), TruncateError> {
        let mut position = 0u64;
        while position < end {
            let corrupt = |reason: String| TruncateError::Corrupt {
                segment: segment.base_offset,
                position,
                reason,
            };
            let head = segment
                .head_at(&self.storage, &self.dir, position)?
                .filter(|head| head.size > 0)
                .ok_or_else(|| corrupt("its header is cut short".to_owned()))?;
            let bytes = segment.read_at(&self.storage, &self.dir, position, head.size)?;
            BatchView::parse(&bytes).map_err(|error| corrupt(error.to_string()))?;
            position += head.size as u64;
        }
        Ok(())
    }

    fn cut(&mut self, keep: usize, position: u64, offset: i64) -> Result<(), StorageError> {
        // The segment holding the cut gets its files first: the last segment of a log always
        // has them, also when a removal below fails and leaves the log fenced.
        self.segments[keep].reopen(&self.storage, &self.dir)?;
        // Newest first, each segment's log file last (see `Segment::remove_named`), and out of
        // the log only once its files are gone.
        while self.segments.len() > keep + 1 {
            let base = self.active().base_offset;
            if let Err(error) = Segment::<S::File>::remove_named(&self.storage, &self.dir, base) {
                // The segment stays last (its log file is removed last, so it is still
                // there): it gets its files back, as the last segment must have them.
                let last = self.segments.len() - 1;
                if let Err(reopen) = self.segments[last].reopen(&self.storage, &self.dir) {
                    self.fence.set(format!(
                        "a truncation could not remove segment {base} ({error}) nor reopen it ({reopen})"
                    ));
                }
                return Err(error);
            }
            if let Some(mut removed) = self.segments.pop() {
                removed.seal();
            }
        }
        self.storage.sync_dir(&self.dir)?;
        self.active_serial += 1;
        let interval = self.config.index_interval_bytes;
        let (storage, dir) = (&self.storage, self.dir.as_str());
        let Some(segment) = self.segments.last_mut() else {
            return Err(StorageError {
                operation: "truncate",
                path: dir.to_owned(),
                reason: "the log has no segment left".to_owned(),
            });
        };
        segment.reopen(storage, dir)?;
        segment.files_mut()?.log.truncate(position)?;
        let mut walked = Recovery::default();
        Self::recover_active(segment, interval, &mut walked)?;
        if segment.next_offset != offset {
            return Err(StorageError {
                operation: "truncate",
                path: format!("{dir}/{}", file_name(segment.base_offset, "log")),
                reason: format!(
                    "the kept batches end at offset {} instead of {offset}: {}",
                    segment.next_offset,
                    walked.truncated_because.unwrap_or_default()
                ),
            });
        }
        self.remove_stray_snapshots()?;
        // Durable before anything is appended past the cut: a snapshot back from a crash would
        // be trusted once the log grew past it again.
        self.storage.sync_dir(&self.dir)?;
        self.restore_producers()?;
        self.restore_dedup()
    }
}
