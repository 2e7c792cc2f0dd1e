//! The log under storage faults: a failed or partial write leaves the log exactly as before
//! the append, a failed sync fences it, directory entries and producer snapshots stay
//! consistent through crashes — and a seeded model run through random faults and crashes
//! keeps the log equal to the acknowledged history.

use super::tests::{batch_of, dedup_config, keyed_batch, read_all, small_config, DIR};
use super::*;
use crate::storage::faults::{Call, Fault, FaultyStorage};
use crate::storage::MemoryStorage;

fn faulty(seed: u64) -> (MemoryStorage, FaultyStorage<MemoryStorage>) {
    let memory = MemoryStorage::new();
    (memory.clone(), FaultyStorage::new(memory, seed))
}

fn numbered(range: std::ops::Range<u64>) -> Vec<(i64, u64)> {
    range.map(|n| (n as i64, n)).collect()
}

/// Defect: a write cut short by a full disk left its prefix in the file; later appends went
/// after it while the log placed them where the prefix starts, so reads failed
/// ("truncated: batch needs … more bytes") and recovery cut every later record.
#[test]
fn a_partial_write_is_cut_back_and_later_offsets_do_not_shift() {
    let (memory, storage) = faulty(1);
    let (mut log, _) =
        PartitionLog::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    log.append(&batch_of(&[0, 1], 1), 1).expect("append");
    storage.fail_next(Call::Append, Fault::Partial);
    let values: Vec<u64> = (100..150).collect();
    let error = log
        .append(&batch_of(&values, 2), 2)
        .expect_err("the disk is full");
    assert!(matches!(error, AppendError::Storage(_)), "{error}");
    assert_eq!(log.high_watermark(), 2);
    // Space again: every later append lands where the log says.
    for n in 2..6u64 {
        log.append(&batch_of(&[n], 3), 3).expect("append");
    }
    assert_eq!(read_all(&log, 0), numbered(0..6));
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    memory.crash(|_| 0);
    let (log, recovery) = PartitionLog::open(memory, DIR, LogConfig::default()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(read_all(&log, 0), numbered(0..6));
}

/// The batch is written but its index entry is not: the batch is cut back too, so the log
/// and its indexes agree and the next append takes the same offset.
#[test]
fn a_failed_index_write_cuts_the_batch_back() {
    let (memory, storage) = faulty(2);
    let (mut log, _) =
        PartitionLog::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    // Append calls of a first batch: the log, then its offset-index entry.
    storage.fail_nth(Call::Append, 1, Fault::NoSpace);
    log.append(&batch_of(&[7], 1), 1)
        .expect_err("the index write fails");
    assert_eq!(log.high_watermark(), 0);
    for n in 0..3u64 {
        log.append(&batch_of(&[n], 2), 2).expect("append");
    }
    assert_eq!(read_all(&log, 0), numbered(0..3));
    drop(log);
    let (log, recovery) = PartitionLog::open(memory, DIR, LogConfig::default()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(read_all(&log, 0), numbered(0..3));
}

/// When even cutting the partial write back fails, the tail is unknown: the log is fenced,
/// refuses every append, and a reopen recovers what was acknowledged.
#[test]
fn a_failed_cut_back_fences_the_log_until_it_is_reopened() {
    let (memory, storage) = faulty(3);
    let (mut log, _) =
        PartitionLog::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    log.append(&batch_of(&[0, 1], 1), 1).expect("append");
    storage.fail_next(Call::Append, Fault::Partial);
    storage.fail_next(Call::Truncate, Fault::Io);
    log.append(&batch_of(&[9; 40], 2), 2)
        .expect_err("the disk is full");
    assert!(log.fence().reason().is_some(), "fenced");
    let refused = log.append(&batch_of(&[2], 3), 3).expect_err("fenced");
    assert!(matches!(refused, AppendError::Fenced { .. }), "{refused}");
    drop(log);
    let (mut log, _) = PartitionLog::open(memory, DIR, LogConfig::default()).expect("reopen");
    assert_eq!(read_all(&log, 0), numbered(0..2));
    log.append(&batch_of(&[2], 4), 4)
        .expect("a reopened log appends");
    assert_eq!(read_all(&log, 0), numbered(0..3));
}

/// A sync that fails while sealing a segment fences the log: nothing after it is
/// acknowledged, even once syncs work again.
#[test]
fn a_failed_sync_fences_the_log() {
    let (memory, storage) = faulty(4);
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    loop {
        let batch = batch_of(&[n], 1);
        if log.size_bytes() + batch.len() as u64 > small_config().segment_bytes {
            storage.fail_next(Call::Sync, Fault::Io);
            let error = log
                .append(&batch, 1)
                .expect_err("sealing syncs, and the sync fails");
            assert!(matches!(error, AppendError::Storage(_)), "{error}");
            break;
        }
        log.append(&batch, 1).expect("append");
        n += 1;
    }
    let refused = log.append(&batch_of(&[n], 1), 1).expect_err("fenced");
    assert!(matches!(refused, AppendError::Fenced { .. }), "{refused}");
    drop(log);
    let (log, _) = PartitionLog::open(memory, DIR, small_config()).expect("reopen");
    assert_eq!(read_all(&log, 0), numbered(0..n));
}

/// A segment created by a roll must still exist after a crash: its directory entry is made
/// durable before anything is acknowledged in it.
#[test]
fn a_new_segment_survives_a_crash() {
    let memory = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    while log.segment_count() < 3 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
        n += 1;
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    memory.crash(|_| 0);
    let (log, _) = PartitionLog::open(memory, DIR, small_config()).expect("reopen");
    assert_eq!(read_all(&log, 0), numbered(0..n));
}

/// Defect: a producer snapshot taken past the end a crash cut the log back to stayed on disk;
/// once the log grew past it again, recovery trusted it — producer state of records that are
/// gone, so a retry of a lost batch was "acknowledged" at another producer's offset.
#[test]
fn snapshots_past_a_truncated_end_are_removed() {
    let memory = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, dedup_config()).expect("open");
    log.append(&keyed_batch(&["a"], Some((1, 0, 0))), 1)
        .expect("append");
    log.sync_handle().expect("handle").sync().expect("sync");
    log.append(&keyed_batch(&["b"], Some((1, 0, 1))), 2)
        .expect("append");
    // Only duplicates: the producer's sequence advances through a snapshot at the log end.
    let all_duplicates = log
        .append(&keyed_batch(&["b"], Some((1, 0, 2))), 3)
        .expect("append");
    assert!(all_duplicates.duplicate);
    drop(log);
    // The unsynced batch is lost; the synced snapshot (at offset 2) is past the new end.
    memory.crash(|_| 0);
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, dedup_config()).expect("reopen");
    assert_eq!(log.high_watermark(), 1);
    log.append(&keyed_batch(&["c"], Some((2, 0, 0))), 4)
        .expect("append");
    log.append(&keyed_batch(&["d"], Some((2, 0, 1))), 5)
        .expect("append");
    drop(log);
    let (mut log, _) = PartitionLog::open(memory, DIR, dedup_config()).expect("reopen");
    // Producer 1's batch of sequence 1 was lost: its resend is stored, not "acknowledged"
    // at offset 1 (producer 2's record).
    let resent = log
        .append(&keyed_batch(&["b"], Some((1, 0, 1))), 6)
        .expect("append");
    assert!(!resent.duplicate, "{resent:?}");
    assert_eq!(resent.base_offset, 3);
}

/// Defect: a roll that failed after creating the new segment's log file left an empty file
/// named inside the old segment's range once appends went on there; reopening refused the
/// log ("segment … does not follow the previous segment").
#[test]
fn a_roll_cut_short_leaves_a_log_that_opens() {
    let (memory, storage) = faulty(5);
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    // Fill until one more single record fits, but not two.
    loop {
        let batch = batch_of(&[n], 1);
        if log.size_bytes() + 2 * batch.len() as u64 > small_config().segment_bytes {
            break;
        }
        log.append(&batch, 1).expect("append");
        n += 1;
    }
    // A big batch needs a roll; the new segment's offset index cannot be created.
    storage.fail_nth(Call::Open, 2, Fault::NoSpace);
    let big: Vec<u64> = (1000..1010).collect();
    log.append(&batch_of(&big, 1), 1)
        .expect_err("the roll fails");
    assert_eq!(log.segment_count(), 1);
    // A single record still fits in the old segment.
    log.append(&batch_of(&[n], 1), 1).expect("append");
    n += 1;
    drop(log);
    let (mut log, _) = PartitionLog::open(memory, DIR, small_config()).expect("reopen");
    assert_eq!(read_all(&log, 0), numbered(0..n));
    log.append(&batch_of(&[n], 1), 1).expect("append");
    assert_eq!(read_all(&log, 0), numbered(0..n + 1));
}

/// The harness: seeded runs of appends, syncs, retention, crashes and reopenings while
/// storage calls fail at random (ENOSPC, EIO, partial writes). After every step the log holds
/// exactly the acknowledged records (no failed append leaves a trace or shifts an offset);
/// after a crash it holds at least every synced one. A fenced log is reopened, as the broker
/// is restarted. The seed is printed on failure.
#[test]
fn the_log_equals_the_acknowledged_history_under_storage_faults() {
    for seed in 1..=40u64 {
        run_with_faults(seed);
    }
}

fn run_with_faults(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let config = LogConfig {
        retention_ms: Some(3_000),
        ..small_config()
    };
    let (memory, storage) = faulty(seed);
    let fault_calls = [
        Call::Append,
        Call::Truncate,
        Call::Sync,
        Call::Open,
        Call::List,
        Call::Remove,
        Call::SyncDir,
    ];
    let set_faults = |per_million: u32| {
        for call in fault_calls {
            storage.fail_rate(call, per_million);
        }
    };
    let open = |storage: &FaultyStorage<MemoryStorage>| {
        for _ in 0..50 {
            if let Ok((log, _)) = PartitionLog::open(storage.clone(), DIR, config) {
                return log;
            }
        }
        storage.heal();
        PartitionLog::open(storage.clone(), DIR, config)
            .unwrap_or_else(|e| panic!("seed {seed}: open without faults failed: {e}"))
            .0
    };
    let mut log = open(&storage);
    let mut acknowledged: Vec<u64> = Vec::new();
    // The records of an append that failed and fenced the log (its bytes could not be cut
    // back): a reopen may find the batch whole and keep it, as Kafka would. Its producer was
    // told it failed, so it is in doubt, never silently doubled: an idempotent retry is
    // recognised from the recovered producer state.
    let mut in_doubt: Option<Vec<u64>> = None;
    let settle = |log: &PartitionLog<FaultyStorage<MemoryStorage>>,
                  acknowledged: &mut Vec<u64>,
                  in_doubt: &mut Option<Vec<u64>>| {
        if let Some(values) = in_doubt.take() {
            if log.high_watermark() as usize == acknowledged.len() + values.len() {
                acknowledged.extend(values);
            }
        }
    };
    let mut synced = 0usize;
    let mut now = 0i64;
    let mut failures = 0;
    for round in 0..400 {
        set_faults(if next(4) == 0 { 0 } else { 60_000 });
        let context = format!("seed {seed} round {round}");
        match next(24) {
            0 | 1 => {
                // A crash: unsynced bytes lost or torn, directory entries not synced undone.
                drop(log);
                memory.crash(|unsynced| next(unsynced as u64 + 1) as usize);
                log = open(&storage);
                settle(&log, &mut acknowledged, &mut in_doubt);
                let survived = log.high_watermark() as usize;
                assert!(
                    survived >= synced && survived <= acknowledged.len(),
                    "{context}: {survived} records survived, synced {synced}, acknowledged {} ({:?})",
                    acknowledged.len(),
                    log.quarantine()
                );
                acknowledged.truncate(survived);
                synced = survived;
            }
            2..=4 => {
                let synced_now = log
                    .sync_handle()
                    .and_then(|handle| handle.sync())
                    .inspect_err(|error| log.fence().set(format!("test sync: {error}")));
                if synced_now.is_ok() {
                    synced = acknowledged.len();
                }
            }
            5 => {
                now += next(2_000) as i64;
                if log.enforce_retention(now).is_err() {
                    failures += 1;
                }
            }
            _ => {
                now += 10;
                let values: Vec<u64> = (0..=next(4))
                    .map(|v| acknowledged.len() as u64 * 10 + v)
                    .collect();
                match log.append(&batch_of(&values, now), now) {
                    Ok(appended) => {
                        assert_eq!(appended.base_offset, acknowledged.len() as i64, "{context}");
                        acknowledged.extend(values);
                    }
                    Err(AppendError::Fenced { .. }) => {
                        // The operator restarts the broker: no power loss, a reopen.
                        drop(log);
                        log = open(&storage);
                        settle(&log, &mut acknowledged, &mut in_doubt);
                        assert_eq!(
                            log.high_watermark() as usize,
                            acknowledged.len(),
                            "{context}: a reopen after a fence"
                        );
                    }
                    Err(AppendError::Storage(_)) => {
                        failures += 1;
                        if log.fence().reason().is_some() {
                            in_doubt = Some(values);
                        }
                    }
                    Err(other) => panic!("{context}: {other}"),
                }
            }
        }
        // Check with the disk healthy (reads are not what is under test here).
        set_faults(0);
        assert_eq!(log.high_watermark(), acknowledged.len() as i64, "{context}");
        let start = log.log_start_offset();
        let expected: Vec<(i64, u64)> = acknowledged
            .iter()
            .enumerate()
            .skip(start as usize)
            .map(|(i, v)| (i as i64, *v))
            .collect();
        assert_eq!(read_all(&log, start), expected, "{context}");
    }
    assert!(failures > 0, "seed {seed}: no fault was injected");
}

fn segment_bases(memory: &MemoryStorage) -> Vec<i64> {
    let mut bases: Vec<i64> = memory
        .names(DIR)
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

fn log_with_segments(memory: &MemoryStorage, segments: usize) -> u64 {
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    while log.segment_count() < segments {
        log.append(&batch_of(&[n, n + 1], 1), 1).expect("append");
        n += 2;
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    n
}

/// Defect: one flipped byte in a sealed segment (here the length of its first batch) kept the
/// log from opening at all, so the broker did not start. Now the partition is quarantined:
/// what precedes the damage is served, reads from it on are refused naming it, appends too.
#[test]
fn a_flipped_byte_in_a_sealed_segment_quarantines_the_partition() {
    let memory = MemoryStorage::new();
    log_with_segments(&memory, 4);
    let damaged = segment_bases(&memory)[1];
    memory.corrupt(DIR, &file_name(damaged, "log"), 8, &[0x7f]);
    let (mut log, recovery) =
        PartitionLog::open(memory.clone(), DIR, small_config()).expect("a damaged log opens");
    let quarantine = log.quarantine().cloned().expect("quarantined");
    assert_eq!(recovery.quarantined.as_ref(), Some(&quarantine));
    assert_eq!(quarantine.offset, damaged);
    assert_eq!(quarantine.segment, damaged);
    assert!(quarantine.reason.contains("claims"), "{quarantine:?}");
    assert_eq!(read_all(&log, 0), numbered(0..damaged as u64));
    let refused = log.read(damaged, 1024).expect_err("past the damage");
    assert!(
        matches!(refused, ReadError::Quarantined { .. }),
        "{refused}"
    );
    let appended = log.append(&batch_of(&[1], 1), 1).expect_err("fenced");
    assert!(matches!(appended, AppendError::Fenced { .. }), "{appended}");
    // The files past the damage are kept for the operator.
    drop(log);
    assert_eq!(segment_bases(&memory).len(), 4);
}

/// A sealed segment whose batches skip offsets (a flipped byte in a record count) is
/// quarantined where the offsets stop following each other.
#[test]
fn offsets_that_do_not_follow_quarantine_the_partition_there() {
    let memory = MemoryStorage::new();
    log_with_segments(&memory, 3);
    let damaged = segment_bases(&memory)[0];
    // Remove the indexes so the whole segment is walked; flip the first batch's record count
    // (its CRC is not what the walk checks, its offsets are).
    memory.corrupt(DIR, &file_name(damaged, "index"), 0, &[0xff; 8]);
    memory.corrupt(DIR, &file_name(damaged, "log"), 29, &[9]);
    let (log, _) = PartitionLog::open(memory, DIR, small_config()).expect("opens");
    let quarantine = log.quarantine().expect("quarantined");
    assert!(quarantine.reason.contains("was expected"), "{quarantine:?}");
}

/// A sealed segment file missing in the middle: the log serves up to the gap.
#[test]
fn a_missing_segment_quarantines_the_partition_at_the_gap() {
    let memory = MemoryStorage::new();
    log_with_segments(&memory, 4);
    let bases = segment_bases(&memory);
    memory
        .remove(DIR, &file_name(bases[2], "log"))
        .expect("remove");
    let (log, _) = PartitionLog::open(memory, DIR, small_config()).expect("opens");
    let quarantine = log.quarantine().expect("quarantined");
    assert_eq!(quarantine.offset, bases[2]);
    assert_eq!(read_all(&log, 0), numbered(0..bases[2] as u64));
}

/// A sealed segment is read by name, which may have to open its file: a failed open (say
/// EMFILE, the descriptor limit) fails that read only; the next read and appends work.
#[test]
fn a_failed_open_for_a_read_of_a_sealed_segment_fails_only_that_read() {
    let (_memory, storage) = faulty(6);
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    let mut n = 0u64;
    while log.segment_count() < 3 {
        log.append(&batch_of(&[n], 1), 1).expect("append");
        n += 1;
    }
    storage.fail_next(Call::Open, Fault::Io);
    let error = log.read(0, 1024).expect_err("the open fails");
    assert!(matches!(error, ReadError::Storage(_)), "{error}");
    assert_eq!(read_all(&log, 0), numbered(0..n));
    log.append(&batch_of(&[n], 1), 1).expect("appends go on");
    assert_eq!(read_all(&log, 0), numbered(0..n + 1));
}

/// Producer snapshots past a truncation are removed durably: a crash after the log regrew
/// past them (without a roll, whose directory sync would hide the gap) must not bring one
/// back, or the producer table would be restored from the removed history and a retry of a
/// removed batch answered as a duplicate without being stored.
#[test]
fn snapshots_removed_by_a_truncation_stay_removed_through_a_crash() {
    use super::tests::idempotent_batch;
    let memory = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, small_config()).expect("open");
    for n in 0..20u64 {
        let values = [3 * n, 3 * n + 1, 3 * n + 2];
        log.append(&idempotent_batch(9, 0, 3 * n as i32, &values), 1)
            .expect("append");
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    let snapshots_past = |storage: &MemoryStorage, offset: i64| {
        storage
            .list(DIR)
            .expect("list")
            .iter()
            .filter_map(|name| name.strip_suffix(".snapshot")?.parse::<i64>().ok())
            .filter(|at| *at > offset)
            .count()
    };
    assert!(
        snapshots_past(&memory, 30) > 0,
        "rolls left snapshots past 30"
    );
    // Large segments from here on: the regrowth below does not roll.
    let large = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, large).expect("reopen");
    log.truncate_to(30).expect("cut");
    for n in 0..10u64 {
        log.append(&batch_of(&[1000 + 3 * n, 1001 + 3 * n, 1002 + 3 * n], 2), 2)
            .expect("regrow");
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    drop(log);
    memory.crash(|_| 0);
    assert_eq!(
        snapshots_past(&memory, 30),
        0,
        "a removed snapshot came back"
    );
    let (mut log, _) = PartitionLog::open(memory, DIR, large).expect("reopen after crash");
    let retry = log
        .append(&idempotent_batch(9, 0, 30, &[30, 31, 32]), 3)
        .expect("retry of a removed batch");
    assert!(!retry.duplicate, "answered from removed history: {retry:?}");
}

/// A truncation verifies the batches it keeps in the segment it cuts before removing
/// anything: damage there (a sealed segment, read without checks at open) is reported and
/// the log left as it was, instead of later segments removed and the damaged batch cut away
/// with everything after it.
#[test]
fn a_truncation_over_damaged_kept_batches_changes_nothing() {
    let memory = MemoryStorage::new();
    let (mut log, _) = PartitionLog::open(memory.clone(), DIR, small_config()).expect("open");
    for n in 0..20u64 {
        log.append(&batch_of(&[3 * n, 3 * n + 1, 3 * n + 2], 1), 1)
            .expect("append");
    }
    let segments = log.segment_count();
    let keep = log
        .segments
        .iter()
        .rposition(|s| s.base_offset < 30)
        .expect("a segment below 30");
    let (base, size, next) = {
        let s = &log.segments[keep];
        (s.base_offset, s.size, s.next_offset)
    };
    assert!(
        base < 30 && next > 30 && size > 0,
        "30 is inside segment {base}"
    );
    // Flip the last byte of the segment's first batch (a record byte under the CRC).
    let first_size = batch_of(&[0, 1, 2], 1).len();
    memory.corrupt(
        DIR,
        &segment::file_name(base, "log"),
        first_size - 1,
        &[0xff],
    );
    let error = log.truncate_to(30).expect_err("damaged kept batch");
    assert!(error.to_string().contains("corrupt"), "{error}");
    assert_eq!(log.high_watermark(), 60);
    assert_eq!(log.segment_count(), segments);
    assert!(
        log.fence().reason().is_none(),
        "nothing was changed to fence for"
    );
}

/// A truncation whose removals fail part way fences the log, and the log stays usable as a
/// fenced one: its last segment has its files (a sync handle is there to ask for), appends
/// are refused, and a reopen recovers a log without holes.
#[test]
fn a_truncation_that_fails_midway_fences_and_keeps_the_last_segment_open() {
    let (memory, storage) = faulty(7);
    let (mut log, _) = PartitionLog::open(storage.clone(), DIR, small_config()).expect("open");
    for n in 0..20u64 {
        log.append(&batch_of(&[3 * n, 3 * n + 1, 3 * n + 2], 1), 1)
            .expect("append");
    }
    log.sync_handle().expect("handle").sync().expect("sync");
    // The second segment removal fails (its files: index, timeindex, log; then the next).
    storage.fail_nth(Call::Remove, 4, Fault::Io);
    log.truncate_to(30).expect_err("a removal fails");
    assert!(log.fence().reason().is_some());
    log.sync_handle().expect("the last segment has its files");
    assert!(matches!(
        log.append(&batch_of(&[99], 2), 2),
        Err(AppendError::Fenced { .. })
    ));
    drop(log);
    let (log, _) = PartitionLog::open(memory, DIR, small_config()).expect("reopen");
    let end = log.high_watermark();
    assert!(end >= 30, "{end}");
    assert_eq!(read_all(&log, 0), numbered(0..end as u64));
}
