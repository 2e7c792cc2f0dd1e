//! The idempotency-key dedup window: planning which records of a batch it drops
//! (`DedupPlan`, `Placement`), appending a batch as planned, and rebuilding the window
//! from the log on open.

use herald_wire::batch::{self, BatchView, ProducerStamp};
use herald_wire::dedup::{KeyWindow, DEDUP_KEYS_MAX};
use herald_wire::headers::IDEMPOTENCY_KEY;

use super::{AppendError, Appended, PartitionLog};
use crate::storage::{Storage, StorageError};

/// Where a record of a batch appended under a dedup window goes: kept (its index among the
/// kept records), or dropped onto the stored offset of its key (an earlier record of the same
/// batch with its key shares that record's placement).
#[derive(Debug, Clone, Copy)]
enum Placement {
    Kept(i64),
    Stored(i64),
}

/// What the dedup window decided for one batch.
pub struct DedupPlan {
    /// (producer id, epoch, base sequence) of the batch as sent.
    producer: Option<ProducerStamp>,
    /// Records in the batch as sent.
    count: u32,
    placements: Vec<Placement>,
    /// Idempotency keys of the kept records, in order.
    kept_keys: Vec<Option<Vec<u8>>>,
    /// The batch of the kept records, when some were dropped.
    rewritten: Option<Vec<u8>>,
}

impl DedupPlan {
    /// How many of the batch's records are kept (stored).
    pub fn kept(&self) -> usize {
        self.kept_keys.len()
    }

    /// Records in the batch as sent.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The batch of the kept records when some were dropped (`None`: all are kept, or none
    /// is): its base sequence moved up by the records dropped.
    pub fn take_rewritten(&mut self) -> Option<Vec<u8>> {
        self.rewritten.take()
    }

    /// Where each record of the batch is once the kept ones are stored at `base_offset`
    /// (empty when every record is kept: each is at `base_offset + index`).
    pub fn record_offsets(&self, base_offset: i64) -> Vec<i64> {
        if self.kept_keys.len() == self.count as usize {
            return Vec::new();
        }
        self.placements
            .iter()
            .map(|placement| match placement {
                Placement::Kept(index) => base_offset + index,
                Placement::Stored(offset) => *offset,
            })
            .collect()
    }

    /// The highest offset of a stored record a dropped one points at, if any: it must be
    /// committed before the batch is acknowledged (a replicated partition's leader may
    /// hold it uncommitted, from a previous leader).
    pub fn last_stored(&self) -> Option<i64> {
        self.placements
            .iter()
            .filter_map(|placement| match placement {
                Placement::Stored(offset) => Some(*offset),
                Placement::Kept(_) => None,
            })
            .max()
    }
}

impl<S: Storage> PartitionLog<S> {
    /// What this log's idempotency-key window decides for `batch` (already validated), now:
    /// `None` without a window. For a replicated partition's leader, which proposes what is
    /// kept (every replica's window takes the kept records' keys as it stores them, see
    /// [`PartitionLog::append_replicated`]); the window itself does not change.
    pub fn plan_dedup(
        &mut self,
        batch: &[u8],
        now_ms: i64,
    ) -> Result<Option<DedupPlan>, AppendError> {
        let Some(window) = self.dedup.as_mut() else {
            return Ok(None);
        };
        let view = batch::BatchView::parse(batch)?;
        Self::plan_deduplication(window, &view, now_ms).map(Some)
    }

    /// Puts the idempotency keys of a stored batch's records into the window (a replicated
    /// partition's batches hold only records the leader kept).
    pub(super) fn remember_keys(&mut self, view: &BatchView<'_>, base_offset: i64) {
        let Some(window) = self.dedup.as_mut() else {
            return;
        };
        for (index, record) in view.records().enumerate() {
            let Ok(record) = record else { continue };
            if let Some(key) = record.header(IDEMPOTENCY_KEY) {
                window.insert(key, base_offset + index as i64, view.append_time_ms());
            }
        }
    }

    /// Rebuilds the idempotency-key window from the last two segments' records (the window is
    /// minutes; a segment spans far more unless it is tiny), relative to the newest append.
    pub(super) fn restore_dedup(&mut self) -> Result<(), StorageError> {
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

    /// Decides, from an already validated batch, which records the idempotency-key window
    /// drops (their key was stored within the window, or earlier in the same batch) and,
    /// when some are dropped, encodes the batch of the rest: its base sequence moves up by the
    /// number dropped, so its last sequence — what the producer continues from — stays the
    /// producer's. Takes the log's window itself, so no plan is made without one.
    pub(super) fn plan_deduplication(
        window: &mut KeyWindow,
        view: &BatchView<'_>,
        now_ms: i64,
    ) -> Result<DedupPlan, AppendError> {
        let count = view.record_count() as usize;
        let mut plan = DedupPlan {
            producer: view.producer(),
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
            // The kept records end where the batch was sent: its first sequence moves up by
            // the records dropped.
            plan.rewritten = Some(writer.finish(plan.producer.map(|p| ProducerStamp {
                base_sequence: p.base_sequence.wrapping_add(dropped as i32),
                ..p
            }))?);
        }
        Ok(plan)
    }

    /// Appends a batch as `plan` says. A batch of duplicates only is acknowledged with the
    /// first one's original offset; for an idempotent producer its sequences still advance,
    /// made durable by a producer snapshot at the log end (the log itself holds nothing to
    /// replay them from).
    pub(super) fn append_deduplicated(
        &mut self,
        batch: &[u8],
        mut plan: DedupPlan,
        now_ms: i64,
    ) -> Result<Appended, AppendError> {
        let (producer, count) = (plan.producer, plan.count);
        let kept = plan.kept() as i64;
        if kept == 0 {
            // Every record is a duplicate: all placements are stored offsets.
            let record_offsets = plan.record_offsets(self.high_watermark());
            let base_offset = record_offsets
                .first()
                .copied()
                .unwrap_or_else(|| self.high_watermark());
            if let Some(producer) = producer {
                self.producers.record(producer, count, base_offset, now_ms);
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
        let base_offset = match plan.take_rewritten() {
            Some(rewritten) => self.store(&rewritten, now_ms, now_ms)?,
            None => self.store(batch, now_ms, now_ms)?,
        };
        if let Some(producer) = producer {
            self.producers.record(producer, count, base_offset, now_ms);
        }
        // A plan is only made with the window (see `append`), so it is there.
        debug_assert!(
            self.dedup.is_some(),
            "a dedup plan appended without a dedup window"
        );
        if let Some(window) = self.dedup.as_mut() {
            for (index, key) in plan.kept_keys.iter().enumerate() {
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
            record_offsets: plan.record_offsets(base_offset),
        })
    }
}
