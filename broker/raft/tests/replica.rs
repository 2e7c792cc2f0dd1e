//! A replica's Raft log over the partition log, beyond openraft's suite: what survives a
//! crash (entries synced before their flush callback, terms and vote in raft.meta), control
//! entries read back as openraft's own entries, produced batches as consumer records with
//! dense offsets, and a replica that starts over after a purge past its end.

use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::MemoryStorage;
use herald_raft::store::open_incarnation;
use herald_raft::types::{Entry, LogId, Membership, Vote};
use herald_raft::{LogStore, Proposal, Replica, StateMachine, TypeConfig};
use herald_wire::batch::{batches, BatchBuilder};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader};

mod common;

use common::stamped;

const DIR: &str = "orders/0";

fn open(storage: &MemoryStorage) -> (LogStore<MemoryStorage>, StateMachine<MemoryStorage>) {
    let replica = Replica::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    let (log, state_machine, _) = replica.into_raft_storage();
    (log, state_machine)
}

fn produced(values: &[&str], append_time_ms: i64) -> Proposal {
    Proposal::new(stamped(BatchBuilder::new(), values, append_time_ms))
}

fn entry(
    term: u64,
    index: u64,
    payload: EntryPayload<Proposal, u64, openraft::BasicNode>,
) -> Entry {
    Entry {
        log_id: LogId::new_term_index(term, index),
        payload,
    }
}

async fn append(log: &mut LogStore<MemoryStorage>, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback").expect("flushed");
}

fn membership() -> Membership {
    Membership::new_with_defaults(vec![[1, 2, 3].into_iter().collect()], [])
}

/// Entries over two terms, a vote, a crash that loses everything unsynced: every entry whose
/// append returned is there with its log id (the second term's start was in raft.meta before
/// its first batch), the vote too, and the control entries read back as what they were.
#[tokio::test]
async fn a_crash_keeps_every_flushed_entry_with_its_log_id() {
    let storage = MemoryStorage::new();
    let (mut log, _) = open(&storage);
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    append(
        &mut log,
        vec![
            entry(1, 0, EntryPayload::Membership(membership())),
            entry(1, 1, EntryPayload::Blank),
            entry(1, 2, EntryPayload::Normal(produced(&["a", "b"], 100))),
        ],
    )
    .await;
    log.save_vote(&Vote::new_committed(2, 2))
        .await
        .expect("vote");
    append(
        &mut log,
        vec![
            entry(2, 3, EntryPayload::Blank),
            entry(2, 4, EntryPayload::Normal(produced(&["c"], 200))),
        ],
    )
    .await;
    drop(log);
    storage.crash(|_| 0);

    let (mut log, _) = open(&storage);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(LogId::new_term_index(2, 4)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, 2))
    );
    let entries = log.try_get_log_entries(0..).await.expect("entries");
    let ids: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect();
    assert_eq!(ids, [(1, 0), (1, 1), (1, 2), (2, 3), (2, 4)]);
    assert!(matches!(&entries[0].payload, EntryPayload::Membership(m) if *m == membership()));
    assert!(matches!(entries[1].payload, EntryPayload::Blank));
    assert!(matches!(&entries[4].payload, EntryPayload::Normal(p) if p.batch.len() > 60));
}

/// Applying committed entries moves the high watermark past their records, control records
/// included (consumers skip those); produced records sit at dense offsets with the append
/// time the leader stamped.
#[tokio::test]
async fn applied_entries_give_their_offsets_and_the_high_watermark() {
    let storage = MemoryStorage::new();
    let (mut log, mut state_machine) = open(&storage);
    let entries = vec![
        entry(1, 0, EntryPayload::Blank),
        entry(1, 1, EntryPayload::Normal(produced(&["a", "b", "c"], 100))),
        entry(1, 2, EntryPayload::Normal(produced(&["d"], 200))),
    ];
    append(&mut log, entries.clone()).await;
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    state_machine.apply(stream).await.expect("apply");
    let (applied, _) = state_machine.applied_state().await.expect("state");
    assert_eq!(applied, Some(LogId::new_term_index(1, 2)));

    let replica = Replica::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    let read = replica.log().read(0, 1 << 20).expect("read");
    let stored: Vec<(bool, i64, i64, i64)> = batches(&read.bytes)
        .map(|view| {
            let view = view.expect("valid");
            (
                view.is_control(),
                view.base_offset(),
                view.next_offset(),
                view.append_time_ms(),
            )
        })
        .collect();
    assert_eq!(stored.len(), 3);
    assert!(stored[0].0 && !stored[1].0 && !stored[2].0);
    assert_eq!(
        stored[1..]
            .iter()
            .map(|s| (s.1, s.2, s.3))
            .collect::<Vec<_>>(),
        [(1, 4, 100), (4, 5, 200)]
    );
}

/// A purge past the log's end (a snapshot covers everything) starts the log over after the
/// purged entry, at the offset the applied state reached: the next entry its leader sends
/// is accepted there, and all of it survives a crash.
#[tokio::test]
async fn a_purge_past_the_end_starts_the_log_over_after_it() {
    let storage = MemoryStorage::new();
    let (mut log, _) = open(&storage);
    append(
        &mut log,
        vec![
            entry(1, 0, EntryPayload::Blank),
            entry(1, 1, EntryPayload::Normal(produced(&["a"], 1))),
        ],
    )
    .await;
    log.purge(LogId::new_term_index(3, 9)).await.expect("purge");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(LogId::new_term_index(3, 9)));
    assert_eq!(state.last_log_id, Some(LogId::new_term_index(3, 9)));
    assert!(log.try_get_log_entries(0..).await.expect("read").is_empty());
    append(
        &mut log,
        vec![entry(3, 10, EntryPayload::Normal(produced(&["z"], 5)))],
    )
    .await;
    drop(log);
    storage.crash(|_| 0);
    let (mut log, _) = open(&storage);
    let entries = log.try_get_log_entries(0..).await.expect("read");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].log_id, LogId::new_term_index(3, 10));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(LogId::new_term_index(3, 10)));
    // An entry that does not follow is refused.
    let (tx, _rx) = TypeConfig::oneshot();
    let refused = log
        .append(
            vec![entry(3, 12, EntryPayload::Blank)],
            IOFlushed::signal(tx),
        )
        .await;
    assert!(refused.is_err());
}

/// A replica keeping its commits reads the last one back after a crash (so it applies what
/// was committed at once); one that does not keeps none (no file replacement per commit).
#[tokio::test]
async fn kept_commits_survive_a_crash_and_others_are_not_written() {
    for keep in [true, false] {
        let storage = MemoryStorage::new();
        let replica = Replica::open(storage.clone(), DIR, LogConfig::default()).expect("open");
        let replica = if keep {
            replica.keep_commits()
        } else {
            replica
        };
        let (mut log, _, _) = replica.into_raft_storage();
        append(&mut log, vec![entry(1, 0, EntryPayload::Blank)]).await;
        log.save_committed(Some(LogId::new_term_index(1, 0)))
            .await
            .expect("save");
        drop(log);
        storage.crash(|_| 0);
        let replica = Replica::open(storage, DIR, LogConfig::default()).expect("open");
        let replica = if keep {
            replica.keep_commits()
        } else {
            replica
        };
        let (mut log, _, _) = replica.into_raft_storage();
        let expected = keep.then(|| LogId::new_term_index(1, 0));
        assert_eq!(
            log.read_committed().await.expect("read"),
            expected,
            "keep {keep}"
        );
    }
}

/// A term the meta noted for an entry that never reached the log (a crash between the two)
/// is dropped from the file at open, not only in memory: the entry later written at that
/// index in the previous term (saving nothing, its term not being new) keeps that term after
/// the next crash (it read back in the dropped term: a fabricated log id).
#[tokio::test]
async fn a_term_noted_for_a_lost_entry_is_dropped_durably_at_open() {
    use herald_broker_core::replica::{LogPosition, ReplicaMeta};
    let storage = MemoryStorage::new();
    let (mut log, _) = open(&storage);
    let first: Vec<Entry> = (0..10)
        .map(|index| entry(1, index, EntryPayload::Blank))
        .collect();
    append(&mut log, first).await;
    drop(log);
    // Term 3 noted (and saved) for entry 10, then the crash before the entry was stored.
    let mut meta = ReplicaMeta::load(&storage, DIR)
        .expect("load")
        .expect("meta");
    assert_eq!(
        meta.note_entry(LogPosition { term: 3, index: 10 }),
        Ok(true)
    );
    meta.save(&storage, DIR).expect("save");
    let (mut log, _) = open(&storage);
    append(&mut log, vec![entry(1, 10, EntryPayload::Blank)]).await;
    drop(log);
    storage.crash(|_| 0);
    let (mut log, _) = open(&storage);
    let entries = log.try_get_log_entries(10..11).await.expect("read");
    assert_eq!(entries[0].log_id, LogId::new_term_index(1, 10));
}

/// Indexes come from the network: the largest ones are refused or handled, never an
/// arithmetic overflow (a panic in debug builds).
#[tokio::test]
async fn the_largest_indexes_do_not_overflow() {
    let storage = MemoryStorage::new();
    let (mut log, _) = open(&storage);
    append(&mut log, vec![entry(1, 0, EntryPayload::Blank)]).await;
    log.truncate_after(Some(LogId::new_term_index(1, u64::MAX)))
        .await
        .expect("nothing after the last entry to cut");
    log.purge(LogId::new_term_index(1, u64::MAX))
        .await
        .expect("purge");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(LogId::new_term_index(1, u64::MAX)));
    assert!(log.try_get_log_entries(0..).await.expect("read").is_empty());
}

/// A vote whose save failed (a full disk) is not read back as cast: the replica could
/// otherwise act on a vote a restart forgets, and vote twice in one term.
#[tokio::test]
async fn a_vote_that_failed_to_save_is_not_cast() {
    use herald_broker_core::storage::faults::{Call, Fault, FaultyStorage};
    let storage = FaultyStorage::new(MemoryStorage::new(), 3);
    let replica = Replica::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    let (mut log, _, _) = replica.into_raft_storage();
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    storage.fail_next(Call::Replace, Fault::NoSpace);
    assert!(log.save_vote(&Vote::new(2, 3)).await.is_err());
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(1, 1)));
}

/// The log of the replica in `storage`, keeping its commit positions as `keep` says.
fn open_keeping(
    storage: &MemoryStorage,
    keep: fn(Replica<MemoryStorage>) -> Replica<MemoryStorage>,
) -> LogStore<MemoryStorage> {
    let replica = Replica::open(storage.clone(), DIR, LogConfig::default()).expect("open");
    keep(replica).into_raft_storage().0
}

/// Five blank entries of term 1 (indexes 0-4), flushed.
async fn five_entries(log: &mut LogStore<MemoryStorage>) {
    append(
        log,
        (0..5)
            .map(|index| entry(1, index, EntryPayload::Blank))
            .collect(),
    )
    .await;
}

/// A kept commit position past what the log still holds after a crash (a commit is what a
/// quorum stored, not necessarily this node's disk) reads back as the log's last entry: the
/// entries kept up to there are the committed ones, and openraft re-applies up to the
/// position read at startup (one it does not hold failed the start).
#[tokio::test]
async fn a_kept_commit_past_the_log_a_crash_left_reads_back_as_its_end() {
    let storage = MemoryStorage::new();
    let mut log = open_keeping(&storage, Replica::keep_commits);
    five_entries(&mut log).await;
    log.save_committed(Some(LogId::new_term_index(1, 9)))
        .await
        .expect("save");
    drop(log);
    storage.crash(|_| 0);
    let mut log = open_keeping(&storage, Replica::keep_commits);
    assert_eq!(
        log.read_committed().await.expect("read"),
        Some(LogId::new_term_index(1, 4))
    );
}

/// A partition replica writes its commit position at most once per interval: the first at
/// once, those right after it not, the next one after the interval again (a crash shows what
/// is on disk).
#[tokio::test]
async fn commits_kept_every_interval_are_written_at_most_that_often() {
    for pause in [false, true] {
        let storage = MemoryStorage::new();
        let every = |replica: Replica<MemoryStorage>| replica.keep_commits_every(50);
        let mut log = open_keeping(&storage, every);
        five_entries(&mut log).await;
        for index in 1..=4 {
            if index == 3 && pause {
                tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            }
            log.save_committed(Some(LogId::new_term_index(1, index)))
                .await
                .expect("save");
        }
        drop(log);
        storage.crash(|_| 0);
        let mut log = open_keeping(&storage, every);
        let written = if pause { 3 } else { 1 };
        assert_eq!(
            log.read_committed().await.expect("read"),
            Some(LogId::new_term_index(1, written)),
            "pause {pause}"
        );
    }
}

/// The values of every entry read from `log` in `range`, with its log id: what replication
/// sends, whether it came from the recent entries kept in memory or from the segments.
async fn read_values(
    log: &mut LogStore<MemoryStorage>,
    range: std::ops::Range<u64>,
) -> Vec<((u64, u64), Vec<String>)> {
    log.try_get_log_entries(range)
        .await
        .expect("entries")
        .into_iter()
        .map(|entry| {
            let values = match &entry.payload {
                EntryPayload::Normal(proposal) => batches(&proposal.batch)
                    .flat_map(|view| {
                        view.expect("batch")
                            .records()
                            .map(|r| {
                                let value = r.expect("record").value.expect("value").to_vec();
                                String::from_utf8(value).expect("utf-8")
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                _ => Vec::new(),
            };
            ((entry.log_id.leader_id.term, entry.log_id.index), values)
        })
        .collect()
}

/// Entries read back right after they were appended come from the recent entries a replica
/// keeps (bounded by RECENT_ENTRIES_BYTES_MAX; older ones from the segments): after a cut
/// and new entries at the cut indexes the reads give the new ones, and past the bound the
/// older entries read from the segments the same as the newer from memory.
#[tokio::test]
async fn entries_read_back_after_a_cut_and_past_the_kept_bound_are_the_stored_ones() {
    let storage = MemoryStorage::new();
    let (mut log, _) = open(&storage);
    let value = |n: u64| format!("{n}-{}", "x".repeat(700 * 1024));
    let first: Vec<Entry> = (0..6)
        .map(|n| entry(1, n, EntryPayload::Normal(produced(&[&value(n)], 10))))
        .collect();
    append(&mut log, first).await;
    log.truncate_after(Some(LogId::new_term_index(1, 2)))
        .await
        .expect("cut");
    let second: Vec<Entry> = (3..16)
        .map(|n| entry(2, n, EntryPayload::Normal(produced(&[&value(n + 100)], 20))))
        .collect();
    append(&mut log, second).await;
    let expected: Vec<((u64, u64), Vec<String>)> = (0..16)
        .map(|n| {
            let (term, shown) = if n < 3 { (1, n) } else { (2, n + 100) };
            ((term, n), vec![value(shown)])
        })
        .collect();
    // 16 entries of 700 KiB: more than RECENT_ENTRIES_BYTES_MAX, so the first come from the
    // segments and the last from memory.
    const { assert!(16 * 700 * 1024 > herald_raft::store::RECENT_ENTRIES_BYTES_MAX) };
    assert_eq!(read_values(&mut log, 0..16).await, expected);
    // Read alone too (a read that starts in memory, one that ends there).
    assert_eq!(read_values(&mut log, 14..16).await, expected[14..16]);
    assert_eq!(read_values(&mut log, 1..4).await, expected[1..4]);
}

/// A replica directory records its topic incarnation: opened again for the same one it keeps
/// its entries and Raft state; opened for another (the topic's name deleted and created again
/// while this node was away) it starts empty, with no vote and no entry of its predecessor.
#[tokio::test]
async fn a_replica_of_an_earlier_topic_incarnation_starts_over() {
    let storage = MemoryStorage::new();
    let first = [1u8; 16];
    let replica =
        open_incarnation(storage.clone(), DIR, LogConfig::default(), &first).expect("open");
    let (mut log, _, _) = replica.into_raft_storage();
    log.save_vote(&Vote::new(3, 1)).await.expect("vote");
    append(
        &mut log,
        vec![
            entry(1, 0, EntryPayload::Membership(membership())),
            entry(1, 1, EntryPayload::Normal(produced(&["a", "b"], 5))),
        ],
    )
    .await;
    drop(log);

    let again = open_incarnation(storage.clone(), DIR, LogConfig::default(), &first).expect("open");
    let (mut log, _, _) = again.into_raft_storage();
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    assert_eq!(
        log.get_log_state().await.expect("state").last_log_id,
        Some(LogId::new_term_index(1, 1))
    );
    drop(log);

    let other =
        open_incarnation(storage.clone(), DIR, LogConfig::default(), &[2u8; 16]).expect("open");
    let (mut log, _, _) = other.into_raft_storage();
    assert_eq!(log.read_vote().await.expect("vote"), None);
    assert_eq!(log.get_log_state().await.expect("state").last_log_id, None);
    assert!(log
        .try_get_log_entries(0..5)
        .await
        .expect("read")
        .is_empty());
}
