//! Opening a log: listing its segments, verifying the active one batch by batch and
//! truncating a torn or corrupt tail, loading sealed segments (rebuilding damaged or
//! missing indexes), restoring producer state from snapshots, and the [`Recovery`] report.

use herald_wire::batch::{BatchView, BATCH_HEADER_BYTES};
use herald_wire::limits::BATCH_BYTES_MAX;

use super::segment::{file_name, read_head, Segment};
use super::{LogConfig, OpenError, PartitionLog, Quarantine, SEGMENT_BYTES_MAX};
use crate::producers::ProducerTable;
use crate::storage::{Storage, StorageError, StorageFile};

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
    /// Damage in a sealed segment: the log is quarantined there.
    pub quarantined: Option<Quarantine>,
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
        let mut segments: Vec<Segment<S::File>> = Vec::with_capacity(bases.len());
        let last = bases.len().saturating_sub(1);
        let mut quarantine = None;
        let mut first_unnumbered = false;
        for (i, base) in bases.into_iter().enumerate() {
            if let Some(previous) = segments.last() {
                if previous.next_offset != base {
                    quarantine = Some(Quarantine {
                        offset: previous.next_offset,
                        segment: previous.base_offset,
                        reason: format!(
                            "segment {base} does not follow the previous segment, which ends at offset {}",
                            previous.next_offset
                        ),
                    });
                    break;
                }
            }
            let mut segment = Segment::create(&storage, dir, base)?;
            let follows = segments.last().map(Segment::next_ordinal);
            match (segment.stored_base_ordinal()?, follows) {
                (Some(found), None) => segment.base_ordinal = found,
                (None, None) => {
                    // A log from before batches were numbered, or a first segment whose header
                    // went first in a removal cut short: numbered from 0 until the next
                    // segment's header says where it ends, and only then written.
                    segment.number_later()?;
                    first_unnumbered = true;
                }
                (None, Some(follows)) => segment.number_from(follows)?,
                (Some(found), Some(follows)) if found == follows => segment.base_ordinal = found,
                (Some(found), Some(_))
                    if first_unnumbered
                        && segments.len() == 1
                        && found >= segments[0].batch_count =>
                {
                    let first = found - segments[0].batch_count;
                    segments[0].renumber(&storage, dir, first)?;
                    first_unnumbered = false;
                    segment.base_ordinal = found;
                }
                (Some(found), Some(follows)) => {
                    quarantine = Some(Quarantine {
                        offset: base,
                        segment: base,
                        reason: format!(
                            "segment {base} starts at ordinal {found}, but the previous segment's batches end at ordinal {follows}"
                        ),
                    });
                    segment.seal();
                    break;
                }
            }
            if i == last {
                Self::recover_active(&mut segment, config.index_interval_bytes, &mut recovery)?;
            } else if let Some(damage) =
                Self::load_sealed(&mut segment, config.index_interval_bytes, &mut recovery)?
            {
                quarantine = Some(Quarantine {
                    offset: segment.next_offset,
                    segment: base,
                    reason: format!("segment {base}: {damage}"),
                });
                segments.push(segment);
                break;
            } else if segment.batch_count == 0 {
                // An empty segment before the last: only a restart of the log cut short
                // leaves one (`PartitionLog::reset_to`; a sealed segment was synced with its
                // batches). The log is the segments after it.
                segment.seal();
                Segment::<S::File>::remove_named(&storage, dir, base)?;
                first_unnumbered &= !segments.is_empty();
                continue;
            } else {
                // Loaded: its files are closed before the next segment's are opened, so
                // opening a log holds at most one sealed segment's files at a time.
                segment.seal();
            }
            segments.push(segment);
        }
        if first_unnumbered {
            if let Some(first) = segments.first_mut() {
                first.renumber(&storage, dir, 0)?;
            }
        }
        match segments.last_mut() {
            // The last segment always has its files open (appends go there). It is sealed
            // here only when a gap after it quarantined the log.
            Some(last) => last.reopen(&storage, dir)?,
            None => segments.push(Segment::start(&storage, dir, 0, 0)?),
        }
        let mut log = Self {
            storage,
            dir: dir.to_owned(),
            config,
            segments,
            producers: ProducerTable::default(),
            dedup: None,
            fence: super::Fence::default(),
            quarantine: None,
            active_serial: 0,
            producers_expired_at_ms: i64::MIN,
        };
        if let Some(quarantine) = quarantine {
            // Nothing is appended behind damage; the snapshots and segments past it stay on
            // disk as they are, for the operator.
            log.fence.set(format!(
                "quarantined at offset {}: {}",
                quarantine.offset, quarantine.reason
            ));
            recovery.quarantined = Some(quarantine.clone());
            log.quarantine = Some(quarantine);
        } else {
            log.remove_stray_snapshots()?;
        }
        log.restore_producers()?;
        log.restore_dedup()?;
        // Whatever opening created or removed (a first segment, index files of a segment
        // whose creation was cut short, stray snapshots) is durable before anything is
        // acknowledged on top of it.
        log.storage.sync_dir(dir)?;
        Ok((log, recovery))
    }

    /// Removes producer snapshots outside the log: past its end (taken before a crash cut the
    /// tail they describe — left there, one would be trusted once the log grows past it
    /// again, with producer state of records that are gone) or before its start (left by a
    /// retention run cut short).
    pub(super) fn remove_stray_snapshots(&mut self) -> Result<(), StorageError> {
        let (start, end) = (self.log_start_offset(), self.high_watermark());
        for name in self.storage.list(&self.dir)? {
            let offset = name
                .strip_suffix(".snapshot")
                .and_then(|offset| offset.parse::<i64>().ok());
            if offset.is_some_and(|offset| offset < start || offset > end) {
                self.storage.remove(&self.dir, &name)?;
            }
        }
        Ok(())
    }

    /// Loads the newest usable producer snapshot and replays the batches after it.
    pub(super) fn restore_producers(&mut self) -> Result<(), StorageError> {
        self.producers = self.producers_before(self.high_watermark())?;
        Ok(())
    }

    /// The producer table as the batches before `end` leave it: the newest usable producer
    /// snapshot at or before `end`, and the batches from there up to `end` replayed.
    pub(super) fn producers_before(&self, end: i64) -> Result<ProducerTable, StorageError> {
        let mut snapshots: Vec<i64> = self
            .storage
            .list(&self.dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".snapshot"))
            .filter_map(|offset| offset.parse::<i64>().ok())
            .filter(|offset| *offset >= self.log_start_offset() && *offset <= end)
            .collect();
        snapshots.sort_unstable();
        let mut from = self.log_start_offset();
        let mut producers = ProducerTable::default();
        for offset in snapshots.into_iter().rev() {
            let file = self
                .storage
                .open(&self.dir, &file_name(offset, "snapshot"), false)?;
            if let Some(table) = ProducerTable::decode(&file.read_at(0, file.len() as usize)?) {
                producers = table;
                from = offset;
                break;
            }
        }
        for segment in self
            .segments
            .iter()
            .filter(|s| s.next_offset > from && s.base_offset < end)
        {
            let mut position = if segment.base_offset >= from {
                0
            } else {
                segment.index_position(from)
            };
            while position < segment.size {
                let Some(head) = segment.head_at(&self.storage, &self.dir, position)? else {
                    break;
                };
                if (head.size as u64) == 0 || head.base_offset >= end {
                    break;
                }
                if head.base_offset >= from {
                    let count = (head.next_offset() - head.base_offset) as u32;
                    if let Some(producer) = head.producer() {
                        producers.record(producer, count, head.base_offset, head.append_time_ms);
                    }
                }
                position += head.size as u64;
            }
        }
        Ok(producers)
    }

    /// Verifies every batch of the active segment and truncates at the first bad one.
    pub(super) fn recover_active(
        segment: &mut Segment<S::File>,
        interval: u64,
        recovery: &mut Recovery,
    ) -> Result<(), StorageError> {
        let file_len = segment.log_file()?.len();
        segment.reset_indexes()?;
        let mut position = 0u64;
        let mut expected = segment.base_offset;
        let mut problem = None;
        while position < file_len {
            let Some(head) = read_head(segment.log_file()?, position)? else {
                problem = Some(format!("torn batch header at position {position}"));
                break;
            };
            if head.size > BATCH_BYTES_MAX || position + head.size as u64 > file_len {
                problem = Some(format!("torn batch at position {position}"));
                break;
            }
            let bytes = segment.log_file()?.read_at(position, head.size)?;
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
            segment.files_mut()?.log.truncate(position)?;
            recovery.truncated_bytes = file_len - position;
            recovery.truncated_because = problem;
        }
        recovery.indexes_rebuilt += 1;
        Ok(())
    }

    /// Loads a sealed segment's indexes (rebuilding them if needed) and finds its end by
    /// walking the batch headers after the last index entry. Returns what is wrong if the
    /// walk meets damage before the file's end (the segment then ends where it stopped).
    fn load_sealed(
        segment: &mut Segment<S::File>,
        interval: u64,
        recovery: &mut Recovery,
    ) -> Result<Option<String>, StorageError> {
        let file_len = segment.log_file()?.len();
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
        let mut expected = indexed
            .then(|| {
                segment
                    .offset_entries
                    .last()
                    .map(|e| segment.base_offset + i64::from(e.0))
            })
            .flatten()
            .unwrap_or(segment.base_offset);
        // What the indexes vouch for is served even if the walk below meets damage.
        segment.size = position;
        segment.next_offset = expected;
        while position < file_len {
            let Some(head) = read_head(segment.log_file()?, position)? else {
                return Ok(Some(format!("torn batch header at position {position}")));
            };
            if head.size < BATCH_HEADER_BYTES
                || head.size > BATCH_BYTES_MAX
                || position + head.size as u64 > file_len
            {
                return Ok(Some(format!(
                    "batch at position {position} claims {} bytes, which the segment does not hold",
                    head.size
                )));
            }
            if head.base_offset != expected || head.next_offset() <= head.base_offset {
                return Ok(Some(format!(
                    "batch at position {position} has offsets [{}, {}) where {expected} was expected",
                    head.base_offset,
                    head.next_offset()
                )));
            }
            expected = head.next_offset();
            if indexed {
                // Past the last index entry: advance without adding entries before the interval.
                segment.size = position + (head.size as u64);
                segment.batch_count += 1;
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
        Ok(None)
    }
}
