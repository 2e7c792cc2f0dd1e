//! What a replicated partition's log does besides [`PartitionLog::append`]: storing batches
//! exactly as its leader decided them ([`PartitionLog::append_replicated`]) and starting over
//! at a later position when a snapshot covers everything it holds
//! ([`PartitionLog::reset_to`]).

use herald_wire::batch::ATTRIBUTE_CONTROL;

use super::segment::Segment;
use super::{AppendError, Appended, PartitionLog, TruncateError, PRODUCER_EXPIRY_CHECK_MS};
use crate::producers::ProducerTable;
use crate::storage::{Storage, StorageError};

impl<S: Storage> PartitionLog<S> {
    /// Stores a batch its partition's leader decided on (a Raft entry): its length, format,
    /// CRC and attributes checked (the leader walked its records before proposing it), control batches are allowed ([`ATTRIBUTE_CONTROL`]), nothing is
    /// refused as a duplicate or out of sequence (the leader decided that before proposing
    /// it; every replica stores the same entries), and the append time is the one the leader
    /// stamped, so every replica holds the same bytes. The base offset is stamped here from
    /// this log's end, which is the same on every replica holding the same batches.
    /// Producer state follows the stored batches, as recovery rebuilds it, and producers idle
    /// for the producer expiry (in the batches' append times) are forgotten as they go.
    ///
    /// With an idempotency-key window, the keys of the stored records go into it at their
    /// offsets and the leader's append time (the leader proposes only the records its window
    /// kept, see [`PartitionLog::plan_dedup`]), so every replica's window is the same.
    pub fn append_replicated(
        &mut self,
        batch: &[u8],
        now_ms: i64,
    ) -> Result<Appended, AppendError> {
        if let Some(reason) = self.fence.reason() {
            return Err(AppendError::Fenced {
                reason: reason.to_owned(),
            });
        }
        // The leader checked the records before proposing the batch; the CRC shows these
        // are its bytes.
        let view = super::validate_frame(batch, ATTRIBUTE_CONTROL)?;
        let count = i64::from(view.record_count());
        let producer = view.producer();
        let append_time_ms = view.append_time_ms();
        let base_offset = self.store(batch, append_time_ms, now_ms)?;
        if self.dedup.is_some() {
            let view = herald_wire::batch::BatchView::parse(batch)?;
            self.remember_keys(&view, base_offset);
        }
        if let Some(producer) = producer {
            self.producers
                .record(producer, count as u32, base_offset, append_time_ms);
        }
        if append_time_ms.saturating_sub(self.producers_expired_at_ms) >= PRODUCER_EXPIRY_CHECK_MS {
            self.producers
                .expire(append_time_ms, self.config.producer_expiry_ms);
            self.producers_expired_at_ms = append_time_ms;
        }
        Ok(Appended {
            base_offset,
            last_offset: base_offset + count - 1,
            append_time_ms,
            duplicate: false,
            record_offsets: Vec::new(),
        })
    }

    /// Empties the log and starts it again at offset `offset`, numbering its batches from
    /// `ordinal`: for a replica whose log a snapshot covers entirely (it installed one, or
    /// everything it holds was purged), whose next entry has that ordinal and whose next
    /// record that offset. Producer snapshots and state go with the batches.
    ///
    /// Crash-safe: the log is first cut to nothing (see [`PartitionLog::truncate_to`]); a
    /// new first segment is then made and the old, empty one removed. A crash between the two
    /// leaves an empty segment before the last one, which opening removes, so a log opened
    /// after a crash is the old one emptied or the new one. A failure fences the log.
    pub fn reset_to(&mut self, offset: i64, ordinal: u64) -> Result<(), TruncateError> {
        if offset < 0 {
            return Err(TruncateError::OutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                high_watermark: self.high_watermark(),
            });
        }
        self.truncate_to(self.log_start_offset())?;
        let result = self.restart_at(offset, ordinal);
        if let Err(error) = &result {
            self.fence.set(format!(
                "starting the log over at offset {offset} (ordinal {ordinal}) failed: {error}"
            ));
        }
        Ok(result?)
    }

    /// The idempotent-producer table as the batches before `end` leave it, encoded: what a
    /// replicated partition's snapshot ending at `end` carries, so that a replica that
    /// installs it (and holds none of those batches) still knows every producer's last
    /// batches.
    pub fn producer_state_before(&self, end: i64) -> Result<Vec<u8>, StorageError> {
        if end < self.log_start_offset() || end > self.high_watermark() {
            return Err(StorageError {
                operation: "producer state",
                path: self.dir.clone(),
                reason: format!(
                    "offset {end} is outside the log ({}..{})",
                    self.log_start_offset(),
                    self.high_watermark()
                ),
            });
        }
        Ok(self.producers_before(end)?.encode())
    }

    /// Takes `state` (from [`PartitionLog::producer_state_before`] of the log's current end,
    /// on another replica) as the producer table of this log, which holds no batch (it was
    /// just [reset](PartitionLog::reset_to)): kept durably as the producer snapshot at the
    /// log's end, so that a restart finds it. Refused if the log holds batches or `state`
    /// does not decode.
    pub fn adopt_producer_state(&mut self, state: &[u8]) -> Result<(), StorageError> {
        let end = self.high_watermark();
        let refused = |reason: &str| StorageError {
            operation: "adopt producer state",
            path: self.dir.clone(),
            reason: reason.to_owned(),
        };
        if end != self.log_start_offset() {
            return Err(refused("the log holds batches"));
        }
        self.producers =
            ProducerTable::decode(state).ok_or_else(|| refused("it does not decode"))?;
        self.write_snapshot(end)
    }

    /// The second half of [`PartitionLog::reset_to`], on a log holding one empty segment.
    fn restart_at(&mut self, offset: i64, ordinal: u64) -> Result<(), StorageError> {
        let old = self.segments[0].base_offset;
        if old == offset {
            self.segments[0].number_from(ordinal)?;
            return self.storage.sync_dir(&self.dir);
        }
        let fresh = Segment::start(&self.storage, &self.dir, offset, ordinal)?;
        self.storage.sync_dir(&self.dir)?;
        self.segments.push(fresh);
        if let Some(mut emptied) = (self.segments.len() > 1).then(|| self.segments.remove(0)) {
            emptied.seal();
            Segment::<S::File>::remove_named(&self.storage, &self.dir, old)?;
        }
        self.active_serial += 1;
        self.remove_stray_snapshots()?;
        self.storage.sync_dir(&self.dir)?;
        self.restore_producers()?;
        self.restore_dedup()
    }
}
