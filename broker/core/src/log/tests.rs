//! Model-based and simulation tests: after any sequence of appends, rolls, retention runs,
//! crashes (unsynced tails lost or torn) and reopenings, the log reads back as a prefix-free
//! window of a plain `Vec` of records.

use herald_wire::batch::{batches, BatchBuilder, Record};
use proptest::prelude::*;

use super::*;
use crate::storage::MemoryStorage;

pub(super) const DIR: &str = "topic/0";

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        segment_age_ms: 10_000,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 150,
        producer_expiry_ms: 1_000_000,
        dedup_window_ms: None,
    }
}

pub(super) fn batch_of(values: &[u64], timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, value) in values.iter().enumerate() {
        builder.push(Record {
            timestamp_ms: timestamp_ms + i as i64,
            key: None,
            value: Some(value.to_be_bytes().to_vec()),
            headers: Vec::new(),
        });
    }
    builder.encode().expect("valid batch")
}

/// Every record from `from` on, as (offset, value), checking CRCs and offsets on the way.
pub(super) fn read_all<S: Storage>(log: &PartitionLog<S>, from: i64) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        if offset >= log.high_watermark() {
            return out;
        }
        let read = log.read(offset, 512).expect("readable");
        if read.bytes.is_empty() {
            return out;
        }
        for view in batches(&read.bytes) {
            let view = view.expect("stored batches are valid");
            for (i, record) in view.records().enumerate() {
                let record = record.expect("valid record");
                let record_offset = view.base_offset() + i as i64;
                if record_offset >= offset {
                    let value = record.value.expect("value");
                    out.push((
                        record_offset,
                        u64::from_be_bytes(value.try_into().expect("8 bytes")),
                    ));
                }
            }
            offset = view.next_offset();
        }
    }
}

#[test]
fn append_read_roll_and_reopen() {
    let storage = MemoryStorage::new();
    let (mut log, recovery) =
        PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    assert_eq!(recovery.truncated_bytes, 0);
    for n in 0..30u64 {
        let appended = log
            .append(
                &batch_of(&[n * 2, n * 2 + 1], 1000 + n as i64 * 10),
                5_000 + n as i64,
            )
            .expect("append");
        assert_eq!(appended.base_offset, n as i64 * 2);
    }
    assert!(
        log.segment_count() > 3,
        "small segments roll: {}",
        log.segment_count()
    );
    let expected: Vec<(i64, u64)> = (0..60).map(|n| (n as i64, n)).collect();
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(
        read_all(&log, 37),
        expected[37..].to_vec(),
        "reads start inside a batch"
    );
    assert_eq!(
        log.offset_for_timestamp(1000 + 150).expect("ok"),
        Some((30, 1150))
    );
    assert_eq!(
        log.offset_for_timestamp(1000 + 151).expect("ok"),
        Some((31, 1151))
    );
    assert_eq!(log.offset_for_timestamp(99_999).expect("ok"), None);
    assert_eq!(log.offset_for_timestamp(0).expect("ok"), Some((0, 1000)));
    assert!(matches!(
        log.read(61, 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(60, 100).expect("at the end").bytes.is_empty());
    drop(log);
    let (log, recovery) = PartitionLog::open(storage, DIR, small_config()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(log.high_watermark(), 60);
}

#[test]
fn a_batch_larger_than_max_bytes_is_served_whole() {
    let (mut log, _) =
        PartitionLog::open(MemoryStorage::new(), DIR, LogConfig::default()).expect("open");
    log.append(&batch_of(&(0..50).collect::<Vec<_>>(), 1), 1)
        .expect("append");
    let read = log.read(0, 10).expect("read");
    assert_eq!(batches(&read.bytes).count(), 1);
    assert_eq!(read_all(&log, 0).len(), 50);
}

#[test]
fn invalid_batches_are_refused_and_nothing_is_written() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut bad = batch_of(&[1], 1);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        log.append(&bad, 1),
        Err(AppendError::Batch(BatchError::CrcMismatch { .. }))
    ));
    let mut trailing = batch_of(&[1], 1);
    trailing.push(0);
    assert!(log.append(&trailing, 1).is_err());
    // The attributes byte (25, under the CRC) is the broker's to set: a producer that sets a
    // bit, with a CRC that matches, is refused and the error names the bits.
    let mut flagged = batch_of(&[1], 1);
    flagged[25] = 0x20;
    let crc = crc32c::crc32c(&flagged[24..]);
    flagged[20..24].copy_from_slice(&crc.to_be_bytes());
    let refused = log.append(&flagged, 1).expect_err("reserved attributes");
    assert!(
        matches!(
            refused,
            AppendError::Batch(BatchError::ReservedAttributes(0x20))
        ),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("attributes 0x20"), "{refused}");
    assert_eq!(log.high_watermark(), 0);
    assert_eq!(storage.file_len(DIR, &file_name(0, "log")), Some(0));
}

#[test]
fn recovery_truncates_a_torn_and_a_corrupt_tail() {
    let storage = MemoryStorage::new();
    let (mut log, _) =
        PartitionLog::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    for n in 0..5u64 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    for n in 5..8u64 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
    }
    drop(log);
    // A torn tail: half of the unsynced bytes survive.
    storage.crash(|unsynced| unsynced / 2);
    let (log, recovery) =
        PartitionLog::open(storage.clone(), DIR, LogConfig::default()).expect("reopen");
    assert!(recovery.truncated_bytes > 0, "{recovery:?}");
    let records = read_all(&log, 0);
    assert!(records.len() >= 5 && records.len() < 8, "{records:?}");
    assert_eq!(
        records,
        (0..records.len() as u64)
            .map(|n| (n as i64, n))
            .collect::<Vec<_>>()
    );
    drop(log);
    // Garbage in the middle of the third batch: everything from it on is cut.
    let one = batch_of(&[0], 1).len();
    storage.corrupt(DIR, &file_name(0, "log"), one * 2 + 70, &[0xde, 0xad]);
    let (log, recovery) = PartitionLog::open(storage, DIR, LogConfig::default()).expect("reopen");
    assert!(
        recovery
            .truncated_because
            .as_deref()
            .unwrap_or_default()
            .contains("corrupt"),
        "{recovery:?}"
    );
    assert_eq!(read_all(&log, 0), vec![(0, 0), (1, 1)]);
    assert_eq!(log.high_watermark(), 2);
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    for n in 0..40u64 {
        log.append(&batch_of(&[n], 100 + n as i64), 1)
            .expect("append");
    }
    let expected = read_all(&log, 0);
    drop(log);
    storage.remove(DIR, &file_name(0, "index")).expect("remove");
    storage.corrupt(DIR, &file_name(0, "timeindex"), 0, &[0xff; 4]);
    let second_base = {
        let mut names = storage.list(DIR).expect("list");
        names.sort();
        names
            .iter()
            .filter_map(|n| n.strip_suffix(".log"))
            .nth(1)
            .expect("second segment")
            .parse::<i64>()
            .expect("base")
    };
    storage.corrupt(DIR, &file_name(second_base, "index"), 4, &[0, 0, 0, 99]);
    let (log, recovery) = PartitionLog::open(storage, DIR, small_config()).expect("reopen");
    assert!(recovery.indexes_rebuilt >= 3, "{recovery:?}");
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(read_all(&log, 17), expected[17..].to_vec());
    assert_eq!(log.offset_for_timestamp(120).expect("ok"), Some((20, 120)));
}

/// A replicated partition asks where retention would cut (the last batch ordinal of the
/// segments it lets go) and deletes through Raft's purge up to there: the same segments as
/// retention itself deletes, and a purge point inside a segment keeps that segment.
#[test]
fn the_retention_horizon_names_what_retention_deletes_and_a_purge_deletes_it() {
    let config = LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(MemoryStorage::new(), DIR, config).expect("open");
    for n in 0..20u64 {
        log.append(&batch_of(&[n], 1), n as i64 * 100)
            .expect("append");
    }
    assert_eq!(log.retention_horizon(1_000), None, "nothing old enough yet");
    let horizon = log.retention_horizon(2_500).expect("a horizon");
    let segments = log.segment_count();
    // A purge short of the horizon's segment end keeps that segment.
    let kept = log
        .remove_through_ordinal(horizon.saturating_sub(1))
        .expect("purge");
    let start_before = log.log_start_ordinal();
    let removed = log.remove_through_ordinal(horizon).expect("purge");
    assert!(removed.segments_deleted > 0);
    assert_eq!(
        log.log_start_ordinal(),
        horizon + 1,
        "starts after the horizon"
    );
    assert!(start_before <= horizon + 1);
    assert_eq!(
        log.segment_count() + kept.segments_deleted + removed.segments_deleted,
        segments
    );
    assert_eq!(
        log.retention_horizon(2_500),
        None,
        "nothing more to let go then"
    );
    // Never the active segment, whatever the ordinal.
    log.remove_through_ordinal(u64::MAX).expect("purge");
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn retention_deletes_whole_sealed_segments_by_age_and_size() {
    let config = LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(MemoryStorage::new(), DIR, config).expect("open");
    for n in 0..20u64 {
        log.append(&batch_of(&[n], 1), n as i64 * 100)
            .expect("append");
    }
    let segments = log.segment_count();
    assert_eq!(
        log.enforce_retention(1_000).expect("retention"),
        Retained::default(),
        "nothing old enough yet"
    );
    let retained = log.enforce_retention(2_500).expect("retention");
    assert!(retained.segments_deleted > 0 && log.segment_count() < segments);
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(matches!(
        log.read(0, 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start).first().map(|r| r.0), Some(start));
    let retained = log.enforce_retention(1_000_000).expect("retention");
    assert!(retained.segments_deleted > 0);
    assert_eq!(
        log.segment_count(),
        1,
        "the active segment is never deleted"
    );

    let config = LogConfig {
        retention_bytes: Some(1_000),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(MemoryStorage::new(), "t/1", config).expect("open");
    for n in 0..40u64 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
    }
    log.enforce_retention(1).expect("retention");
    assert!(
        log.size_bytes() >= 1_000 && log.size_bytes() < 1_000 + 600,
        "{}",
        log.size_bytes()
    );
}

#[test]
fn segments_roll_by_age() {
    let (mut log, _) = PartitionLog::open(
        MemoryStorage::new(),
        DIR,
        LogConfig {
            segment_age_ms: 100,
            ..LogConfig::default()
        },
    )
    .expect("open");
    log.append(&batch_of(&[1], 1), 0).expect("append");
    log.append(&batch_of(&[2], 1), 50).expect("append");
    assert_eq!(log.segment_count(), 1);
    log.append(&batch_of(&[3], 1), 100).expect("append");
    assert_eq!(log.segment_count(), 2);
}

pub(super) fn idempotent_batch(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    values: &[u64],
) -> Vec<u8> {
    let mut builder = BatchBuilder::new().idempotent(producer_id, epoch, sequence);
    for value in values {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value.to_be_bytes().to_vec()),
            headers: Vec::new(),
        });
    }
    builder.encode().expect("valid batch")
}

#[test]
fn idempotent_retries_are_acknowledged_not_stored_and_survive_reopen_and_rolls() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut sequence = 0;
    for n in 0..20u64 {
        let first = log
            .append(&idempotent_batch(9, 0, sequence, &[n]), 1)
            .expect("append");
        assert!(!first.duplicate);
        let retry = log
            .append(&idempotent_batch(9, 0, sequence, &[n]), 2)
            .expect("retry");
        assert!(
            retry.duplicate && retry.base_offset == first.base_offset,
            "{retry:?} vs {first:?}"
        );
        sequence += 1;
    }
    assert!(
        log.segment_count() > 2,
        "rolls happened, writing producer snapshots"
    );
    assert_eq!(log.high_watermark(), 20);
    let gap = log
        .append(&idempotent_batch(9, 0, sequence + 1, &[99]), 3)
        .expect_err("gap");
    assert!(
        matches!(
            gap,
            AppendError::OutOfOrderSequence {
                expected: 20,
                received: 21,
                ..
            }
        ),
        "{gap}"
    );
    drop(log);
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("reopen");
    let retry = log
        .append(&idempotent_batch(9, 0, sequence - 1, &[19]), 4)
        .expect("retry after reopen");
    assert!(retry.duplicate && retry.base_offset == 19);
    let next = log
        .append(&idempotent_batch(9, 0, sequence, &[20]), 5)
        .expect("next after reopen");
    assert!(!next.duplicate && next.base_offset == 20);
    // A new epoch fences the old one.
    log.append(&idempotent_batch(9, 1, 0, &[21]), 6)
        .expect("new epoch");
    let fenced = log
        .append(&idempotent_batch(9, 0, sequence + 1, &[22]), 7)
        .expect_err("zombie");
    assert!(
        matches!(
            fenced,
            AppendError::ProducerFenced {
                current_epoch: 1,
                ..
            }
        ),
        "{fenced}"
    );
    // Damaged snapshots are skipped: replay from an older one or from the start.
    drop(log);
    for name in storage
        .list(DIR)
        .expect("list")
        .iter()
        .filter(|n| n.ends_with(".snapshot"))
    {
        storage.corrupt(DIR, name, 6, &[0xff]);
    }
    let (mut log, _) =
        PartitionLog::open(storage, DIR, small_config()).expect("reopen with damaged snapshots");
    let retry = log
        .append(&idempotent_batch(9, 1, 0, &[21]), 8)
        .expect("retry");
    assert!(retry.duplicate && retry.base_offset == 21);
    assert_eq!(
        read_all(&log, 0).len(),
        22,
        "every record stored exactly once"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Append(u8),
    Sync,
    Crash { keep_per_mille: u16 },
    Reopen,
    Retention { advance_ms: u16 },
    Truncate { pick: u16 },
    Reset { offset_gap: u8, ordinal_gap: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u8..6).prop_map(Step::Append),
        2 => Just(Step::Sync),
        1 => (0u16..1000).prop_map(|keep_per_mille| Step::Crash { keep_per_mille }),
        1 => Just(Step::Reopen),
        1 => (0u16..2000).prop_map(|advance_ms| Step::Retention { advance_ms }),
        1 => any::<u16>().prop_map(|pick| Step::Truncate { pick }),
        1 => (0u8..3, 0u8..3).prop_map(|(offset_gap, ordinal_gap)| Step::Reset { offset_gap, ordinal_gap }),
    ]
}

/// A stored batch of the model: its ordinal and base offset.
type Boundary = (u64, usize);

/// The ordinal the first batch at or after `offset` had, if one is still in the model.
fn ordinal_at(boundaries: &[Boundary], offset: usize) -> Option<u64> {
    boundaries.iter().find(|b| b.1 >= offset).map(|b| b.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The log is a window of a Vec: after crashes it holds at least every synced record and
    /// at most every appended one, always a contiguous run with dense offsets; a truncation
    /// at a batch boundary is the Vec's truncation, and survives crashes (removed segments
    /// never come back); a reset empties it durably and goes on at the offset and ordinal
    /// given. Every batch keeps its ordinal throughout.
    #[test]
    fn log_behaves_like_a_vec(steps in proptest::collection::vec(step(), 1..60)) {
        let storage = MemoryStorage::new();
        let config = LogConfig { retention_ms: Some(3_000), ..small_config() };
        let (mut log, _) = PartitionLog::open(storage.clone(), DIR, config).expect("open");
        // Values by offset (a reset past the end pads it with values never read).
        let mut model: Vec<u64> = Vec::new();
        let mut synced = 0usize;
        let mut now = 0i64;
        let mut next_value = 0u64;
        // Every stored batch still in the model, for truncations and ordinals.
        let mut boundaries: Vec<Boundary> = Vec::new();
        let mut next_ordinal = 0u64;
        for step in steps {
            match step {
                Step::Append(count) => {
                    let values: Vec<u64> = (0..count).map(|i| next_value + u64::from(i)).collect();
                    next_value += u64::from(count);
                    now += 10;
                    let appended = log.append(&batch_of(&values, now), now).expect("append");
                    prop_assert_eq!(appended.base_offset, model.len() as i64);
                    boundaries.push((next_ordinal, model.len()));
                    next_ordinal += 1;
                    model.extend(values);
                }
                Step::Sync => {
                    log.sync_handle().expect("handle").sync().expect("sync");
                    synced = model.len();
                }
                Step::Crash { keep_per_mille } => {
                    drop(log);
                    storage.crash(|unsynced| unsynced * keep_per_mille as usize / 1000);
                    let (reopened, _) = PartitionLog::open(storage.clone(), DIR, config).expect("reopen after crash");
                    log = reopened;
                    let survived = log.high_watermark() as usize;
                    prop_assert!(survived >= synced, "synced records lost: {survived} < {synced}");
                    prop_assert!(survived <= model.len());
                    model.truncate(survived);
                    next_ordinal = ordinal_at(&boundaries, survived).unwrap_or(next_ordinal);
                    boundaries.retain(|b| b.1 < survived);
                    synced = survived;
                }
                Step::Reopen => {
                    drop(log);
                    let (reopened, recovery) = PartitionLog::open(storage.clone(), DIR, config).expect("reopen");
                    prop_assert_eq!(recovery.truncated_bytes, 0);
                    log = reopened;
                }
                Step::Retention { advance_ms } => {
                    now += i64::from(advance_ms);
                    log.enforce_retention(now).expect("retention");
                }
                Step::Truncate { pick } => {
                    let start = log.log_start_offset() as usize;
                    let candidates: Vec<usize> = boundaries
                        .iter()
                        .map(|b| b.1)
                        .filter(|b| *b >= start)
                        .chain(std::iter::once(model.len()))
                        .collect();
                    let cut = candidates[usize::from(pick) % candidates.len()];
                    log.truncate_to(cut as i64).expect("truncate at a boundary");
                    model.truncate(cut);
                    next_ordinal = ordinal_at(&boundaries, cut).unwrap_or(next_ordinal);
                    boundaries.retain(|b| b.1 < cut);
                    synced = synced.min(cut);
                }
                Step::Reset { offset_gap, ordinal_gap } => {
                    let offset = model.len() + usize::from(offset_gap);
                    next_ordinal += u64::from(ordinal_gap);
                    log.reset_to(offset as i64, next_ordinal).expect("reset");
                    model.resize(offset, u64::MAX);
                    boundaries.clear();
                    synced = model.len();
                }
            }
            let start = log.log_start_offset();
            prop_assert_eq!(log.high_watermark(), model.len() as i64);
            let expected: Vec<(i64, u64)> = model.iter().enumerate().skip(start as usize).map(|(i, v)| (i as i64, *v)).collect();
            prop_assert_eq!(read_all(&log, start), expected);
            check_ordinals(&log, &boundaries, next_ordinal)?;
        }
    }
}

/// The log numbers exactly the model's batches from its start, finds each by its number (by
/// offset and by reading), and refuses numbers outside.
fn check_ordinals(
    log: &PartitionLog<MemoryStorage>,
    boundaries: &[Boundary],
    next_ordinal: u64,
) -> Result<(), TestCaseError> {
    let start = log.log_start_offset() as usize;
    let first = ordinal_at(boundaries, start).unwrap_or(next_ordinal);
    prop_assert_eq!(log.log_start_ordinal(), first);
    prop_assert_eq!(log.next_ordinal(), next_ordinal);
    for (ordinal, base) in boundaries.iter().filter(|b| b.1 >= start) {
        prop_assert_eq!(log.ordinal_offset(*ordinal), Ok(*base as i64));
        let read = log.read_ordinal(*ordinal, 100).expect("read by ordinal");
        let view = batches(&read.bytes)
            .next()
            .expect("a batch")
            .expect("valid");
        prop_assert_eq!(view.base_offset(), *base as i64);
    }
    let end = log.next_ordinal();
    prop_assert_eq!(log.ordinal_offset(end), Ok(log.high_watermark()));
    prop_assert!(log
        .read_ordinal(end, 100)
        .expect("at the end")
        .bytes
        .is_empty());
    let outside = |ordinal| {
        matches!(
            log.read_ordinal(ordinal, 100),
            Err(ReadError::OrdinalOutOfRange { .. })
        )
    };
    prop_assert!(outside(end + 1));
    prop_assert!(first == 0 || outside(first - 1));
    Ok(())
}

/// A seeded simulation: long random runs with faults; the seed is printed on failure.
#[test]
fn seeded_simulation_with_faults() {
    for seed in 1..=20u64 {
        let mut rng = seed;
        let mut next = move |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound
        };
        let storage = MemoryStorage::new();
        let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
        let mut model = Vec::new();
        let mut synced = 0;
        for round in 0..300 {
            match next(20) {
                0 => {
                    drop(log);
                    storage.crash(|unsynced| (next(unsynced as u64 + 1)) as usize);
                    log = PartitionLog::open(storage.clone(), DIR, small_config())
                        .expect("reopen")
                        .0;
                    let survived = log.high_watermark() as usize;
                    assert!(
                        survived >= synced && survived <= model.len(),
                        "seed {seed} round {round}"
                    );
                    model.truncate(survived);
                    synced = survived;
                }
                1..=3 => {
                    log.sync_handle().expect("handle").sync().expect("sync");
                    synced = model.len();
                }
                _ => {
                    let values: Vec<u64> =
                        (0..=next(4)).map(|v| model.len() as u64 * 10 + v).collect();
                    log.append(&batch_of(&values, round), round)
                        .expect("append");
                    model.extend(values);
                }
            }
        }
        let expected: Vec<(i64, u64)> = model
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, *v))
            .collect();
        assert_eq!(read_all(&log, 0), expected, "seed {seed}");
    }
}

/// A batch whose records carry idempotency keys; `producer` makes it idempotent.
pub(super) fn keyed_batch(keys: &[&str], producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let mut builder = match producer {
        Some((id, epoch, sequence)) => BatchBuilder::new().idempotent(id, epoch, sequence),
        None => BatchBuilder::new(),
    };
    for key in keys {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(key.as_bytes().to_vec()),
            headers: vec![herald_wire::batch::Header {
                key: IDEMPOTENCY_KEY.into(),
                value: key.as_bytes().to_vec(),
            }],
        });
    }
    builder.encode().expect("batch")
}

/// The values stored, in offset order.
pub(super) fn stored_values(log: &PartitionLog<MemoryStorage>) -> Vec<String> {
    let read = log.read(0, 1 << 20).expect("read");
    let mut values = Vec::new();
    for view in batches(&read.bytes) {
        for record in view.expect("batch").records() {
            values.push(
                String::from_utf8_lossy(record.expect("record").value.unwrap_or_default())
                    .into_owned(),
            );
        }
    }
    values
}

pub(super) fn dedup_config() -> LogConfig {
    LogConfig {
        dedup_window_ms: Some(120_000),
        segment_bytes: 1 << 20,
        ..small_config()
    }
}

#[test]
fn the_key_window_drops_records_seen_within_it() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, dedup_config()).expect("open");
    let first = log
        .append(&keyed_batch(&["a", "b"], None), 1_000)
        .expect("append");
    assert_eq!((first.base_offset, first.duplicate), (0, false));
    assert!(first.record_offsets.is_empty(), "nothing dropped: dense");
    // "b" again, plus a repeat inside the batch: only "c" is stored; each record is reported
    // where its first copy is.
    let second = log
        .append(&keyed_batch(&["b", "c", "c"], None), 2_000)
        .expect("append");
    assert_eq!((second.base_offset, second.last_offset), (2, 2));
    assert_eq!(second.record_offsets, [1, 2, 2]);
    // Only duplicates: acknowledged with the original offsets, nothing stored.
    let third = log
        .append(&keyed_batch(&["a", "c", "a"], None), 3_000)
        .expect("append");
    assert!(third.duplicate);
    assert_eq!(third.base_offset, 0);
    assert_eq!(third.record_offsets, [0, 2, 0]);
    assert_eq!(stored_values(&log), ["a", "b", "c"]);
    // After the window the key is new again.
    let later = log
        .append(&keyed_batch(&["a"], None), 1_000 + 120_000)
        .expect("append");
    assert!(!later.duplicate);
    assert_eq!(stored_values(&log), ["a", "b", "c", "a"]);

    // The window survives a restart (rebuilt from the log).
    drop(log);
    let (mut log, _) = PartitionLog::open(storage, DIR, dedup_config()).expect("reopen");
    let again = log
        .append(&keyed_batch(&["c", "d"], None), 121_500)
        .expect("append");
    assert_eq!(again.last_offset - again.base_offset, 0, "c was dropped");
    assert_eq!(stored_values(&log), ["a", "b", "c", "a", "d"]);
}

#[test]
fn an_idempotent_producer_keeps_its_sequence_through_dropped_records() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, dedup_config()).expect("open");
    let producer = |sequence| Some((7, 0, sequence));
    log.append(&keyed_batch(&["a", "b"], producer(0)), 1)
        .expect("append");
    // Sequences 2..=4; "a" is dropped, the stored batch keeps the last sequence (4).
    let partial = keyed_batch(&["a", "c", "d"], producer(2));
    let stored = log.append(&partial.clone(), 2).expect("append");
    assert!(!stored.duplicate);
    // A retry of that batch is recognised as a duplicate, not a gap.
    let retry = log.append(&partial, 3).expect("retry");
    assert!(retry.duplicate);
    // Sequences 5..=6 all duplicates: nothing stored, but the sequence advances...
    let all_seen = log
        .append(&keyed_batch(&["c", "d"], producer(5)), 4)
        .expect("append");
    assert!(all_seen.duplicate);
    // ...so the producer continues at 7, also after a restart (snapshot at the log end).
    drop(log);
    let (mut log, _) = PartitionLog::open(storage, DIR, dedup_config()).expect("reopen");
    let next = log
        .append(&keyed_batch(&["e"], producer(7)), 5)
        .expect("append");
    assert!(!next.duplicate);
    assert_eq!(stored_values(&log), ["a", "b", "c", "d", "e"]);
    assert!(matches!(
        log.append(&keyed_batch(&["f"], producer(9)), 6),
        Err(AppendError::OutOfOrderSequence { expected: 8, .. })
    ));
}

/// Durations past i64 milliseconds must not wrap negative: a segment age of u64::MAX ms never
/// rolls a segment by age, and a retention of u64::MAX ms never deletes one.
#[test]
fn huge_durations_do_not_wrap_into_roll_or_delete_everything() {
    let storage = MemoryStorage::new();
    let config = LogConfig {
        segment_bytes: 600,
        segment_age_ms: u64::MAX,
        retention_ms: Some(u64::MAX),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(storage, DIR, config).expect("open");
    log.append(&batch_of(&[1], 1000), 1000).expect("append");
    log.append(&batch_of(&[2], 1001), 2000).expect("append");
    assert_eq!(log.segment_count(), 1, "no roll by age");
    // Fill a few segments by size, then run retention much later.
    for n in 0..30u64 {
        log.append(&batch_of(&[n, n + 1], 3000), 3000 + n as i64)
            .expect("append");
    }
    let segments = log.segment_count();
    assert!(segments > 2);
    log.enforce_retention(10_000_000).expect("retention");
    assert_eq!(log.segment_count(), segments, "nothing deleted by age");
    assert_eq!(read_all(&log, 0).len(), 62);
}

/// Defect (issue 14): every segment held its three files open for the log's whole life, so a
/// broker with many partitions of many segments ran out of descriptors ("Too many open
/// files"). Only the active segment holds files now; sealed segments are read by name through
/// the storage. Counted with the memory storage's handle count through appends and rolls,
/// reads by offset and by time, a reopen, a crash and retention.
#[test]
fn only_the_active_segment_holds_open_files() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    while log.segment_count() < 40 {
        // Record v has timestamp 1000 + v.
        log.append(&batch_of(&[n, n + 1], 1000 + n as i64), 1 + n as i64)
            .expect("append");
        n += 2;
        assert_eq!(
            storage.open_handles(),
            4,
            "{} segments: the active segment's log and indexes only",
            log.segment_count()
        );
    }
    let expected: Vec<(i64, u64)> = (0..n).map(|v| (v as i64, v)).collect();
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(read_all(&log, 37), expected[37..].to_vec());
    assert_eq!(
        log.offset_for_timestamp(1037).expect("ok"),
        Some((37, 1037))
    );
    assert_eq!(
        storage.open_handles(),
        4,
        "reads of sealed segments keep none"
    );
    let handle = log.sync_handle().expect("handle");
    handle.sync().expect("sync");
    assert_eq!(storage.open_handles(), 5, "a sync handle is one more");
    drop(handle);
    drop(log);
    assert_eq!(storage.open_handles(), 0);

    let (log, recovery) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(
        storage.open_handles(),
        4,
        "loading a sealed segment closes its files"
    );
    assert_eq!(read_all(&log, 0), expected);
    drop(log);

    storage.crash(|_| 0);
    let config = LogConfig {
        retention_bytes: Some(2_000),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, config).expect("reopen");
    assert_eq!(storage.open_handles(), 4);
    assert_eq!(read_all(&log, 0), expected, "everything was synced");
    let retained = log.enforce_retention(1_000_000).expect("retention");
    assert!(retained.segments_deleted > 0, "{retained:?}");
    let start = log.log_start_offset();
    assert_eq!(read_all(&log, start), expected[start as usize..].to_vec());
    assert_eq!(storage.open_handles(), 4);
}

/// A cut is refused where it would split a batch or lies outside the log (nothing changes);
/// at a boundary it removes whole later segments and the tail of the one holding it, survives
/// a crash, and the producer table forgets the removed batches: their retries are stored
/// again, not answered as duplicates, while a retry of a kept batch still is.
#[test]
fn truncation_cuts_between_batches_durably_and_forgets_removed_batches() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    // 20 batches of 3 records from producer 9 (offsets 0..60), over several 600-byte segments.
    for n in 0..20u64 {
        let values = [3 * n, 3 * n + 1, 3 * n + 2];
        log.append(&idempotent_batch(9, 0, 3 * n as i32, &values), 1)
            .expect("append");
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    let segments_before = log.segment_count();
    assert!(segments_before >= 4, "{segments_before} segments");

    assert_eq!(
        log.truncate_to(31),
        Err(TruncateError::InsideBatch {
            offset: 31,
            batch_base_offset: 30
        })
    );
    assert!(matches!(
        log.truncate_to(61),
        Err(TruncateError::OutOfRange { offset: 61, .. })
    ));
    assert!(matches!(
        log.truncate_to(-1),
        Err(TruncateError::OutOfRange { .. })
    ));
    assert_eq!(log.high_watermark(), 60);
    assert_eq!(log.truncate_to(60), Ok(0));

    let removed = log.truncate_to(30).expect("cut at a boundary");
    assert!(removed > 0);
    assert_eq!(log.high_watermark(), 30);
    assert!(log.segment_count() < segments_before);
    assert_eq!(
        read_all(&log, 0),
        (0..30).map(|v| (v as i64, v)).collect::<Vec<_>>()
    );

    // The producer's retry of a kept batch is a duplicate; of the first removed one, new.
    let kept = log
        .append(&idempotent_batch(9, 0, 27, &[27, 28, 29]), 2)
        .expect("retry of a kept batch");
    assert!(kept.duplicate && kept.base_offset == 27);
    let again = log
        .append(&idempotent_batch(9, 0, 30, &[30, 31, 32]), 2)
        .expect("retry of a removed batch");
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 30);

    // A power cut after that: the removed segments do not come back.
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    storage.crash(|unsynced| unsynced);
    let (mut log, recovery) =
        PartitionLog::open(storage.clone(), DIR, small_config()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(
        read_all(&log, 0),
        (0..33).map(|v| (v as i64, v)).collect::<Vec<_>>()
    );

    // Down to the very start: one empty segment stays, and appends go on from 0.
    log.truncate_to(0).expect("cut everything");
    assert_eq!((log.high_watermark(), log.segment_count()), (0, 1));
    let first = log.append(&batch_of(&[7], 3), 3).expect("append");
    assert_eq!(first.base_offset, 0);
}

/// A small answer read from a large window does not keep the window's capacity: answers are
/// charged to the broker's response budgets by their length (one small batch before a 1 MiB
/// one, read with room for both, returns only the small one).
#[test]
fn a_small_answer_does_not_keep_a_large_read_window() {
    let storage = MemoryStorage::new();
    let config = LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(storage, DIR, config).expect("open");
    log.append(&batch_of(&[1], 1), 1).expect("small");
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: 2,
        key: None,
        value: Some(vec![7u8; 1024 * 1024]),
        headers: Vec::new(),
    });
    log.append(&builder.encode().expect("batch"), 2)
        .expect("large");
    let small_len = batch_of(&[1], 1).len();
    let read = log.read(0, small_len + 1000 * 1024).expect("read");
    assert_eq!(read.bytes.len(), small_len, "only the small batch fits");
    assert!(
        read.bytes.capacity() <= small_len + READ_WINDOW_SLACK_BYTES,
        "capacity {}",
        read.bytes.capacity()
    );
}

/// After a truncation removed the active segment, a roll can make a new segment active at
/// the same base offset: the active segment's id still differs, so a sync handle cached by it
/// (the broker caches one per active segment) is not taken for the new file's.
#[test]
fn a_new_segment_at_a_removed_base_has_a_new_id() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage, DIR, small_config()).expect("open");
    for n in 0..20u64 {
        log.append(&batch_of(&[3 * n, 3 * n + 1, 3 * n + 2], 1), 1)
            .expect("append");
    }
    let removed_base = log.segments[log.segments.len() - 1].base_offset;
    let removed_id = log.active_segment();
    log.truncate_to(removed_base - 3)
        .expect("cut inside the segment before");
    let kept_id = log.active_segment();
    assert_ne!(
        kept_id, removed_id,
        "the kept segment is the active one now"
    );
    let mut next = removed_base - 3;
    while log.segments[log.segments.len() - 1].base_offset < removed_base {
        log.append(
            &batch_of(&[next as u64, next as u64 + 1, next as u64 + 2], 1),
            1,
        )
        .expect("append");
        next += 3;
    }
    assert_eq!(
        log.segments[log.segments.len() - 1].base_offset,
        removed_base
    );
    assert_ne!(log.active_segment(), removed_id);
    assert_ne!(log.active_segment(), kept_id);
}

/// A log of 2-record batches over several segments with the oldest deleted by retention:
/// returns it, its batches' base offsets by ordinal (from 0, including the deleted ones) and
/// the segment bases left.
fn numbered_log(storage: &MemoryStorage) -> (PartitionLog<MemoryStorage>, Vec<i64>, Vec<i64>) {
    let config = LogConfig {
        retention_bytes: Some(1_500),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, config).expect("open");
    let mut bases = Vec::new();
    for n in 0..60u64 {
        bases.push(
            log.append(&batch_of(&[2 * n, 2 * n + 1], 1), 1)
                .expect("append")
                .base_offset,
        );
    }
    log.enforce_retention(1).expect("retention");
    assert!(log.log_start_ordinal() > 0, "retention deleted segments");
    log.sync_handle().expect("handle").sync().expect("sync");
    let mut segments: Vec<i64> = storage
        .names(DIR)
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    segments.sort_unstable();
    (log, bases, segments)
}

fn assert_numbered(log: &PartitionLog<MemoryStorage>, bases: &[i64], first: u64) {
    assert_eq!(log.log_start_ordinal(), first);
    assert_eq!(log.next_ordinal(), bases.len() as u64);
    for (ordinal, base) in bases.iter().enumerate().skip(first as usize) {
        assert_eq!(
            log.ordinal_offset(ordinal as u64),
            Ok(*base),
            "ordinal {ordinal}"
        );
    }
}

/// A log written before batches were numbered (no `.ordinal` files) opens numbered from 0,
/// and keeps those numbers from then on.
#[test]
fn a_log_without_ordinal_files_is_numbered_from_its_first_batch() {
    let storage = MemoryStorage::new();
    let (log, bases, segments) = numbered_log(&storage);
    let first = log.log_start_ordinal();
    drop(log);
    for base in &segments {
        storage
            .remove(DIR, &file_name(*base, "ordinal"))
            .expect("remove");
    }
    let (log, recovery) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    assert_eq!(recovery.quarantined, None);
    // Numbered from 0 at the first kept batch: the deleted ones are not known.
    let kept = &bases[first as usize..];
    assert_numbered(&log, kept, 0);
    drop(log);
    storage.crash(|_| 0);
    let (log, _) = PartitionLog::open(storage, DIR, small_config()).expect("reopen");
    assert_numbered(&log, kept, 0);
}

/// Retention removes a segment's `.ordinal` before its log: a removal cut short between the
/// two leaves a first segment without a header. It is numbered back from where the next
/// segment's header says it ends (before: from 0, and the log quarantined at the next
/// segment, the numbers disagreeing).
#[test]
fn a_first_segment_without_its_header_is_numbered_from_the_next_one() {
    let storage = MemoryStorage::new();
    let (log, bases, segments) = numbered_log(&storage);
    let first = log.log_start_ordinal();
    drop(log);
    storage
        .remove(DIR, &file_name(segments[0], "ordinal"))
        .expect("remove");
    let (log, recovery) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    assert_eq!(recovery.quarantined, None);
    assert_numbered(&log, &bases, first);
    drop(log);
    storage.crash(|_| 0);
    let (log, _) = PartitionLog::open(storage, DIR, small_config()).expect("reopen");
    assert_numbered(&log, &bases, first);
}

/// A segment whose (undamaged) header disagrees with where the previous segment's batches
/// end: which is wrong is not known, so the log is served up to it and quarantined there.
#[test]
fn segments_whose_numbers_disagree_quarantine_the_log() {
    let storage = MemoryStorage::new();
    let (log, _, segments) = numbered_log(&storage);
    drop(log);
    let third = segments[2];
    storage.corrupt(
        DIR,
        &file_name(third, "ordinal"),
        0,
        &herald_wire::seal(b"HORD", &7u64.to_be_bytes()),
    );
    let (log, recovery) = PartitionLog::open(storage, DIR, small_config()).expect("open");
    let quarantine = recovery.quarantined.expect("quarantined");
    assert_eq!(quarantine.offset, third);
    assert!(
        quarantine.reason.contains("starts at ordinal 7"),
        "{quarantine:?}"
    );
    assert_eq!(log.high_watermark(), third);
}

/// The sparse ordinal index is a hint like the offset index: damaged, it is rebuilt, and
/// every batch keeps its number.
#[test]
fn a_damaged_ordinal_index_is_rebuilt() {
    let storage = MemoryStorage::new();
    let (log, bases, segments) = numbered_log(&storage);
    let first = log.log_start_ordinal();
    drop(log);
    // The second entry of the first segment claims a later batch than it points at.
    storage.corrupt(DIR, &file_name(segments[0], "ordinal"), 20, &[0, 0, 0, 9]);
    let (log, recovery) = PartitionLog::open(storage, DIR, small_config()).expect("open");
    assert!(recovery.indexes_rebuilt >= 2, "{recovery:?}");
    assert_numbered(&log, &bases, first);
}

/// A batch a leader decided on is stored as it came: control batches too (never from
/// producers), its append time kept, nothing refused as a duplicate; producer state follows,
/// so a producer's retry of it sent to this replica (once it leads) is a duplicate.
#[test]
fn replicated_batches_are_stored_as_the_leader_stamped_them() {
    use herald_wire::batch::{BatchWriter, ATTRIBUTE_CONTROL};
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage, DIR, small_config()).expect("open");
    let mut control = BatchWriter::new();
    control
        .push(5, Some(b"blank"), None, std::iter::empty())
        .expect("record");
    let control = control.finish_control().expect("control batch");
    assert!(matches!(
        log.append(&control.clone(), 10),
        Err(AppendError::Batch(BatchError::ReservedAttributes(
            ATTRIBUTE_CONTROL
        )))
    ));
    let mut stamped = control.clone();
    batch::stamp(&mut stamped, 99, 1234);
    let appended = log.append_replicated(&stamped, 10).expect("control batch");
    assert_eq!((appended.base_offset, appended.append_time_ms), (0, 1234));

    let mut data = idempotent_batch(7, 0, 0, &[1, 2]);
    batch::stamp(&mut data, 0, 2000);
    assert_eq!(
        log.append_replicated(&data.clone(), 10)
            .expect("data")
            .base_offset,
        1
    );
    // The same batch again is stored again: the leader decided it is new.
    assert_eq!(
        log.append_replicated(&data, 10).expect("again").base_offset,
        3
    );
    let read = log.read(0, 4096).expect("read");
    let stored: Vec<_> = batches(&read.bytes).map(|b| b.expect("valid")).collect();
    assert_eq!(stored.len(), 3);
    assert!(stored[0].is_control() && !stored[1].is_control());
    assert_eq!(stored[1].append_time_ms(), 2000);
    // Producer 7's state follows the stored batches: its batch 0 again is a retry, its
    // next one (sequence 2) new.
    let retry = log
        .append(&idempotent_batch(7, 0, 0, &[1, 2]), 20)
        .expect("retry");
    assert!(retry.duplicate);
    let next = log
        .append(&idempotent_batch(7, 0, 2, &[3]), 20)
        .expect("next");
    assert_eq!((next.duplicate, next.base_offset), (false, 5));

    let mut reserved = control;
    reserved[25] = 0x40;
    assert!(log.append_replicated(&reserved, 10).is_err());
}

/// A replicated log forgets producers idle past the producer expiry by the append times of
/// the batches it stores (its leader's clock, the same on every replica), not only on a
/// retention sweep: the table stays bounded by activity.
#[test]
fn a_replicated_log_expires_idle_producers_by_append_time() {
    let config = LogConfig {
        producer_expiry_ms: 60_000,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(MemoryStorage::new(), DIR, config).expect("open");
    for producer in 1..=3 {
        let mut data = idempotent_batch(producer, 0, 0, &[1]);
        batch::stamp(&mut data, 0, 1_000);
        log.append_replicated(&data, 0).expect("append");
    }
    assert_eq!(log.producer_count(), 3);
    let mut later = idempotent_batch(4, 0, 0, &[2]);
    batch::stamp(&mut later, 0, 30_000);
    log.append_replicated(&later, 0).expect("append");
    assert_eq!(log.producer_count(), 4, "not idle long enough");
    let mut much_later = batch_of(&[3], 0);
    batch::stamp(&mut much_later, 0, 61_000 + PRODUCER_EXPIRY_CHECK_MS);
    log.append_replicated(&much_later, 0).expect("append");
    assert_eq!(log.producer_count(), 1, "the three idle ones are forgotten");
}

/// A reset cut short between making the new first segment and removing the old, empty one
/// leaves an empty segment before the last: opening removes it, whichever of the two comes
/// first, and the log is one of the two.
#[test]
fn a_reset_cut_short_opens_as_one_log() {
    let storage = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    for n in 0..30u64 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
    }
    log.reset_to(100, 40).expect("reset");
    assert_eq!(
        (
            log.log_start_offset(),
            log.high_watermark(),
            log.next_ordinal()
        ),
        (100, 100, 40)
    );
    assert_eq!(
        log.append(&batch_of(&[7], 1), 1)
            .expect("append")
            .base_offset,
        100
    );
    assert_eq!(log.ordinal_offset(40), Ok(100));
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    // The old first segment (base 0), emptied by the cut, still there before the new one: a
    // reset cut short between making the new segment and removing the old one.
    let mut leftover = Segment::start(&storage, DIR, 0, 0).expect("segment");
    leftover.seal();
    storage.sync_dir(DIR).expect("sync");
    let (log, recovery) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    assert_eq!(recovery.quarantined, None);
    assert_eq!((log.log_start_offset(), log.high_watermark()), (100, 101));
    assert_eq!(read_all(&log, 100), vec![(100, 7)]);
    assert!(!storage
        .names(DIR)
        .iter()
        .any(|n| n.starts_with(&format!("{:020}", 0))));
    drop(log);
    storage.crash(|_| 0);
    let (log, _) = PartitionLog::open(storage, DIR, small_config()).expect("open");
    assert_eq!(read_all(&log, 100), vec![(100, 7)]);
    assert_eq!(log.ordinal_offset(40), Ok(100));
}

/// The producer state a replicated snapshot carries is the table as of the snapshot's end,
/// not the log's: a replica that starts over there and adopts it treats a producer's retry of
/// a batch before the end as a duplicate (at its original offset) and its next batch as new,
/// knows nothing of batches after the end, and keeps the table across a reopen.
#[test]
fn a_reset_replica_adopts_the_producer_state_of_the_snapshot_end() {
    let source = MemoryStorage::new();
    let (mut leader, _) = PartitionLog::open(source, DIR, small_config()).expect("open");
    let mut first = idempotent_batch(7, 0, 0, &[1, 2]);
    batch::stamp(&mut first, 0, 2000);
    leader.append_replicated(&first, 10).expect("first");
    let mut other = idempotent_batch(8, 0, 0, &[3]);
    batch::stamp(&mut other, 0, 2001);
    leader.append_replicated(&other, 10).expect("other");
    let end = leader.high_watermark();
    let mut later = idempotent_batch(7, 0, 2, &[4]);
    batch::stamp(&mut later, 0, 2002);
    leader.append_replicated(&later, 10).expect("later");
    let state = leader.producer_state_before(end).expect("state");

    let storage = MemoryStorage::new();
    let (mut replica, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    replica.reset_to(end, 9).expect("reset");
    assert_eq!(
        replica.producer_count(),
        0,
        "a reset forgets every producer"
    );
    replica.adopt_producer_state(&state).expect("adopt");
    drop(replica);
    let (mut replica, _) = PartitionLog::open(storage, DIR, small_config()).expect("reopen");
    assert_eq!(replica.producer_count(), 2);
    let retry = replica
        .append(&idempotent_batch(7, 0, 0, &[1, 2]), 20)
        .expect("retry");
    assert_eq!((retry.duplicate, retry.base_offset), (true, 0));
    let next = replica
        .append(&idempotent_batch(7, 0, 2, &[4]), 20)
        .expect("next");
    assert_eq!(
        (next.duplicate, next.base_offset),
        (false, end),
        "the batch after the end is new here"
    );
    assert!(
        replica.adopt_producer_state(&state).is_err(),
        "a log holding batches adopts nothing"
    );
}

/// A replicated partition with an idempotency-key window: the leader plans which records
/// its window drops and proposes the kept ones; a replica storing that batch puts its keys
/// in its own window at the same offsets, so its plan for the same keys (were it to lead
/// next) drops them onto the same stored records; the answer's record offsets point the
/// dropped records there, and a batch of duplicates only keeps nothing.
#[test]
fn replicas_keep_the_same_dedup_window_as_their_leader() {
    let (mut leader, _) =
        PartitionLog::open(MemoryStorage::new(), DIR, dedup_config()).expect("open");
    let (mut follower, _) =
        PartitionLog::open(MemoryStorage::new(), DIR, dedup_config()).expect("open");
    let mut replicate = |leader: &mut PartitionLog<MemoryStorage>, batch: &[u8], now: i64| {
        let mut plan = leader
            .plan_dedup(batch, now)
            .expect("plan")
            .expect("a window");
        let mut proposed = plan.take_rewritten().unwrap_or_else(|| batch.to_vec());
        batch::stamp(&mut proposed, 0, now);
        let kept = plan.kept();
        let base = if kept == 0 {
            None
        } else {
            let on_leader = leader
                .append_replicated(&proposed.clone(), now)
                .expect("leader")
                .base_offset;
            let on_follower = follower
                .append_replicated(&proposed, now)
                .expect("follower")
                .base_offset;
            assert_eq!(on_leader, on_follower);
            Some(on_leader)
        };
        (plan, base)
    };
    let (plan, base) = replicate(&mut leader, &keyed_batch(&["a", "b", "a"], None), 1_000);
    assert_eq!(
        (plan.kept(), base),
        (2, Some(0)),
        "a repeated key in one batch is kept once"
    );
    assert_eq!(plan.record_offsets(0), vec![0, 1, 0]);
    let (plan, base) = replicate(&mut leader, &keyed_batch(&["b", "c"], None), 2_000);
    assert_eq!((plan.kept(), base), (1, Some(2)));
    assert_eq!(plan.record_offsets(2), vec![1, 2]);
    assert_eq!(plan.last_stored(), Some(1));
    let (plan, base) = replicate(&mut leader, &keyed_batch(&["a", "c"], None), 3_000);
    assert_eq!(
        (plan.kept(), base),
        (0, None),
        "only duplicates: nothing to propose"
    );
    assert_eq!(plan.record_offsets(3), vec![0, 2]);
    // The follower's own window, as it would plan once it leads: the same decisions.
    let mut own = follower
        .plan_dedup(&keyed_batch(&["c", "a", "d"], None), 4_000)
        .expect("plan")
        .expect("a window");
    assert_eq!(own.kept(), 1);
    assert_eq!(own.record_offsets(3), vec![2, 0, 3]);
    assert!(own.take_rewritten().is_some());
    // Past the window, a key is new again.
    let later = follower
        .plan_dedup(&keyed_batch(&["a"], None), 1_000 + 120_000 + 1)
        .expect("plan")
        .expect("a window");
    assert_eq!(later.kept(), 1);
}
