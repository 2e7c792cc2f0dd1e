//! A partition replica as openraft storage: [`LogStore`] (the Raft log = the partition's
//! segment log) and [`StateMachine`] (what applying committed entries makes: the high
//! watermark consumers read up to, the last membership), both over one shared [`Replica`].
//!
//! Ordering rules the log store keeps (see ARCHITECTURE.md, "Replication"):
//! - the replica meta (`raft.meta`) names a new term before the first batch of that term is
//!   written, so a stored batch never reads back with a wrong log id;
//! - an append is acknowledged to openraft (its flush callback) only after the log is synced;
//! - a purge deletes the whole segments it covers (retention goes through Raft: the node's
//!   retention task snapshots, then purges up to the last entry retention lets go); one
//!   that covers the whole log starts the log over after it
//!   (`PartitionLog::reset_to`), at the offset the state machine has reached, so the next
//!   entry lands where its leader's copy is.
//!
//! Blocking storage calls run under the replica's lock inside the async trait methods: each
//! is short (one append, one read of at most [`ENTRIES_READ_BYTES_MAX`] bytes) and the
//! partition's own appends already run this way in the broker. Syncs never do: a blocking
//! task of the replica's flusher runs them (`crate::flush`).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, TryStreamExt};
use herald_broker_core::log::{LogConfig, OpenError, PartitionLog};
use herald_broker_core::replica::{self, LogPosition, MetaFileError, ReplicaMeta};
use herald_broker_core::storage::Storage;
use herald_wire::batch::batches;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot,
};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};

use crate::entry;
use crate::flush::Flusher;
use crate::types::{Applied, Entry, LogId, StoredMembership, TypeConfig, Vote};

/// Most bytes of batches one bounded read of entries gathers (a follower catching up is
/// sent its entries in rounds); at least one entry is always read.
pub const ENTRIES_READ_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Bytes of batches a replica keeps of the entries it appended last, for reads of them
/// (openraft reads each follower's entries back right after appending them): enough for the
/// entries in flight of a busy partition (32 batches of 100 KB is 3.2 MB; at 2 MiB, 32 in
/// flight were read back from the segments and the cluster's produce fell by half).
pub const RECENT_ENTRIES_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Bytes of recent entries all the replicas of one process keep together: past it, a
/// replica appending keeps only its newest entry.
pub const RECENT_ENTRIES_NODE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A replica that appended nothing for this long drops its recent entries (at the next
/// retention step): its followers read them long ago.
pub const RECENT_ENTRIES_IDLE_MS: i64 = 10_000;

/// Bytes of recent entries every replica of this process holds.
static RECENT_ENTRIES_HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The entries a replica appended last, contiguous, as they were appended (their batches
/// shared, not copied): replication reads them here instead of from the segment files.
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
    /// When the last entry was kept (the replica's clock, ms).
    pushed_ms: i64,
}

impl Drop for Recent {
    fn drop(&mut self) {
        self.clear();
    }
}

fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal.batch.len(),
        EntryPayload::Blank | EntryPayload::Membership(_) => 0,
    }
}

impl Recent {
    /// Keeps `entry`, appended after the last kept one (else the kept ones are dropped),
    /// dropping the oldest past [`RECENT_ENTRIES_BYTES_MAX`] or, while this process holds
    /// more than [`RECENT_ENTRIES_NODE_BYTES_MAX`], all but the newest.
    fn push(&mut self, entry: &Entry, now_ms: i64) {
        let follows = self
            .entries
            .back()
            .is_none_or(|last| last.log_id.index.checked_add(1) == Some(entry.log_id.index));
        if !follows {
            self.clear();
        }
        self.add(entry_bytes(entry));
        self.entries.push_back(entry.clone());
        self.pushed_ms = now_ms;
        let over_node = || {
            RECENT_ENTRIES_HELD.load(std::sync::atomic::Ordering::Relaxed)
                > RECENT_ENTRIES_NODE_BYTES_MAX
        };
        while (self.bytes > RECENT_ENTRIES_BYTES_MAX || over_node()) && self.entries.len() > 1 {
            if let Some(oldest) = self.entries.pop_front() {
                self.remove(entry_bytes(&oldest));
            }
        }
    }

    fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        RECENT_ENTRIES_HELD.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn remove(&mut self, bytes: usize) {
        self.bytes -= bytes;
        RECENT_ENTRIES_HELD.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops everything kept if nothing was pushed for [`RECENT_ENTRIES_IDLE_MS`].
    fn drop_if_idle(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.pushed_ms) >= RECENT_ENTRIES_IDLE_MS {
            self.clear();
        }
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.log_id.index;
        self.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    }

    /// Drops the kept entries from `index` on.
    fn cut_from(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|last| last.log_id.index >= index)
        {
            if let Some(cut) = self.entries.pop_back() {
                self.remove(entry_bytes(&cut));
            }
        }
    }

    /// Drops the kept entries up to `index`.
    fn drop_through(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|first| first.log_id.index <= index)
        {
            if let Some(old) = self.entries.pop_front() {
                self.remove(entry_bytes(&old));
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        let held = self.bytes;
        self.remove(held);
    }
}

/// Why a replica could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Meta(#[from] MetaFileError),
    #[error("replica directory {dir}: {source}")]
    Storage {
        dir: String,
        source: herald_broker_core::storage::StorageError,
    },
}

/// The file in a topic replica's directory naming the topic incarnation it belongs to.
pub const INCARNATION_FILE: &str = "topic.id";

/// Opens the replica in `dir` for the topic incarnation `incarnation`: a directory left by
/// another incarnation of the topic's name (deleted while this node was away, or not yet
/// removed) is emptied first, so that a topic created again starts with no records, no
/// Raft state and no membership of its predecessor. A directory from before incarnations were
/// recorded is taken as this one's.
pub fn open_incarnation<S: Storage + Clone + 'static>(
    storage: S,
    dir: &str,
    config: LogConfig,
    incarnation: &[u8; 16],
) -> Result<Replica<S>, ReplicaError> {
    let failed = |source| ReplicaError::Storage {
        dir: dir.to_owned(),
        source,
    };
    let recorded = storage
        .list(dir)
        .unwrap_or_default()
        .iter()
        .any(|name| name == INCARNATION_FILE);
    let ours = recorded
        && storage
            .read_at(dir, INCARNATION_FILE, 0, incarnation.len() + 1)
            .map_err(failed)?
            == incarnation;
    if recorded && !ours {
        tracing::info!(
            dir,
            "a replica of an earlier incarnation of the topic is removed"
        );
        storage.remove_dir(dir).map_err(failed)?;
    }
    if !ours {
        storage.create_dir(dir).map_err(failed)?;
        storage
            .replace(dir, INCARNATION_FILE, incarnation)
            .map_err(failed)?;
    }
    Replica::open(storage, dir, config)
}

/// What applying committed entries made (the state machine's state).
#[derive(Debug, Clone, Default)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The offset after the last applied entry's records: consumers read below it.
    high_watermark: i64,
    /// The last snapshot built or installed, with its encoded data.
    snapshot: Option<(Meta, Vec<u8>)>,
    /// Where the next snapshot is taken, if not at the last applied entry: the last entry
    /// retention lets go (see [`Replica::snapshot_at`]).
    snapshot_point: Option<u64>,
}

/// One partition replica: its log, its Raft bookkeeping and its applied state.
pub struct Replica<S: Storage> {
    log: PartitionLog<S>,
    meta: ReplicaMeta,
    storage: S,
    dir: String,
    applied: AppliedState,
    clock: fn() -> i64,
    /// Whether and how often the commit position is kept in `raft.meta` (see
    /// [`Replica::keep_commits`]).
    commits: CommitKeeping,
    /// When (this replica's clock, ms) the commit position was last written.
    commit_saved_ms: i64,
    /// The entries appended last (see [`Recent`]).
    recent: Recent,
}

/// Whether a replica keeps its commit position in `raft.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitKeeping {
    Never,
    /// At every commit.
    Always,
    /// At most once per this many milliseconds (and whenever the meta is written anyway).
    Every(i64),
}

impl<S: Storage + Clone> Replica<S> {
    /// Opens the replica stored in `dir`: its log (recovered as any partition log is) and its
    /// meta, whose terms past the log's end are dropped (a crash between a cut of the log and
    /// the meta's rewrite leaves them).
    pub fn open(storage: S, dir: &str, config: LogConfig) -> Result<Self, ReplicaError> {
        let (log, _) = PartitionLog::open(storage.clone(), dir, config)?;
        let stored = ReplicaMeta::load(&storage, dir)?.unwrap_or_default();
        let mut meta = stored.clone();
        meta.truncate_after(log.next_ordinal().checked_sub(1));
        if meta != stored {
            // Durably, before any entry is stored: an entry later written at a trimmed index
            // in the last kept term saves nothing (its term is not new), and the file's stale
            // term would name it after the next crash.
            meta.save(&storage, dir).map_err(MetaFileError::from)?;
        }
        Ok(Self {
            log,
            meta,
            storage,
            dir: dir.to_owned(),
            applied: AppliedState::default(),
            clock: wall_clock_ms,
            commits: CommitKeeping::Never,
            commit_saved_ms: i64::MIN,
            recent: Recent::default(),
        })
    }

    /// Keeps the commit position in `raft.meta` as it moves, so that after a restart the
    /// replica applies what was committed at once instead of waiting to hear from a leader.
    /// One file replacement per commit: for a group with few entries (the controller), not
    /// for a partition's.
    pub fn keep_commits(mut self) -> Self {
        self.commits = CommitKeeping::Always;
        self
    }

    /// Keeps the commit position in `raft.meta` at most once per `interval_ms`: after a
    /// restart the replica applies (and serves consumers) up to where it was at most that
    /// long before, at once, and the rest once a leader is heard. For partitions, whose
    /// commits come with every produced batch.
    pub fn keep_commits_every(mut self, interval_ms: u64) -> Self {
        self.commits = CommitKeeping::Every(i64::try_from(interval_ms).unwrap_or(i64::MAX));
        self
    }

    /// The kept commit position as far as this replica's log still holds it. A commit is
    /// an entry a quorum stored, not necessarily this node: a crash may have taken entries it
    /// named from this log (they were written, not yet synced), and the entries the log kept
    /// up to there are the committed ones (committed entries are never cut).
    fn kept_commit(&self) -> io::Result<Option<LogId>> {
        if self.commits == CommitKeeping::Never {
            return Ok(None);
        }
        let Some(kept) = self.meta.committed else {
            return Ok(None);
        };
        let kept = LogId::new_term_index(kept.term, kept.index);
        Ok(match self.log_state()?.last_log_id {
            Some(last) if last.index < kept.index => Some(last),
            Some(_) => Some(kept),
            None => None,
        })
    }

    /// The partition log (reads of records go through it).
    /// What the log's idempotency-key window decides for a produced batch, now (`None`
    /// without a window): the partition's leader proposes only the records it keeps.
    pub fn plan_dedup(
        &mut self,
        batch: &[u8],
        now_ms: i64,
    ) -> Result<Option<herald_broker_core::log::DedupPlan>, herald_broker_core::log::AppendError>
    {
        self.log.plan_dedup(batch, now_ms)
    }

    pub fn log(&self) -> &PartitionLog<S> {
        &self.log
    }

    /// The offset consumers may read up to: after the last applied (committed) entry.
    /// Makes the next snapshot end at entry `index` (applied already) instead of the last
    /// applied one: retention snapshots where it cuts, so that a follower sent the snapshot
    /// gets every entry after it by replication — records retention keeps are never left
    /// out of a replica.
    pub fn snapshot_at(&mut self, index: u64) {
        self.applied.snapshot_point = Some(index);
    }

    /// Where a snapshot built now ends: its last entry's id and the offset after its records.
    fn snapshot_end(&mut self) -> io::Result<(Option<LogId>, i64)> {
        let applied = self.applied.last_applied;
        let membership_index = self.applied.membership.log_id().as_ref().map(|id| id.index);
        let point = self.applied.snapshot_point.take().filter(|point| {
            applied.is_some_and(|applied| applied.index >= *point)
                && membership_index.is_none_or(|m| m <= *point)
                && *point >= self.first_index()
        });
        match point {
            Some(point) => Ok((
                Some(self.log_id(point)?),
                self.log
                    .ordinal_offset(point.saturating_add(1))
                    .map_err(io::Error::other)?,
            )),
            None => Ok((applied, self.applied.high_watermark)),
        }
    }

    /// Drops the entries kept for replication if this replica appended nothing for
    /// [`RECENT_ENTRIES_IDLE_MS`] (by its own clock).
    pub fn drop_idle_recent(&mut self) {
        let now = (self.clock)();
        self.recent.drop_if_idle(now);
    }

    /// The index of the last entry applied, if any.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied.last_applied.map(|log_id| log_id.index)
    }

    pub fn high_watermark(&self) -> i64 {
        self.applied.high_watermark
    }

    /// The index of the first entry still readable: after the log's start and the purged
    /// entry.
    fn first_index(&self) -> u64 {
        let after_purged = self.meta.purged().map_or(0, |p| p.index.saturating_add(1));
        self.log.log_start_ordinal().max(after_purged)
    }

    fn log_id(&self, index: u64) -> io::Result<LogId> {
        let term = self.meta.term_of(index).ok_or_else(|| {
            io::Error::other(format!(
                "{}: the term of entry {index} is not known (raft.meta does not cover it)",
                self.dir
            ))
        })?;
        Ok(LogId::new_term_index(term, index))
    }

    /// The entries `[start, end)` that the log holds, up to about `max_bytes` of batches (at
    /// least one entry when any is there).
    fn entries(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        let start = start.max(self.first_index());
        let end = end.min(self.log.next_ordinal());
        let mut out = Vec::new();
        let mut index = start;
        let mut bytes = 0usize;
        while index < end && (out.is_empty() || bytes < max_bytes) {
            if let Some(recent) = self.recent.get(index) {
                bytes += entry_bytes(recent);
                out.push(recent.clone());
                index += 1;
                continue;
            }
            let read = self
                .log
                // In rounds: a read of one entry (openraft asks for `i..=i` to learn a log
                // id) must not read the rest of the log.
                .read_ordinal(
                    index,
                    max_bytes
                        .saturating_sub(bytes)
                        .clamp(1, ENTRIES_READ_BYTES_MAX),
                )
                .map_err(io::Error::other)?;
            if read.bytes.is_empty() {
                break;
            }
            bytes += read.bytes.len();
            for view in batches(&read.bytes) {
                if index >= end {
                    break;
                }
                let view = view.map_err(io::Error::other)?;
                let entry = entry::from_batch(view.as_bytes(), self.log_id(index)?)
                    .map_err(io::Error::other)?;
                out.push(entry);
                index += 1;
            }
        }
        Ok(out)
    }

    fn log_state(&self) -> io::Result<LogState<TypeConfig>> {
        let purged = self
            .meta
            .purged()
            .map(|p| LogId::new_term_index(p.term, p.index));
        let next = self.log.next_ordinal();
        let last = if next > self.first_index() {
            Some(self.log_id(next - 1)?)
        } else {
            purged
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    fn save_meta(&self) -> io::Result<()> {
        self.meta
            .save(&self.storage, &self.dir)
            .map_err(io::Error::other)
    }

    /// Stores one entry at the log's end.
    fn append_entry(&mut self, entry: &Entry) -> io::Result<()> {
        let index = entry.log_id.index;
        let term = entry.log_id.leader_id.term;
        let next = self.log.next_ordinal();
        if index != next {
            // An empty log (nothing stored since its start, or everything purged) starts
            // where the entries it is sent start.
            if index > next && self.first_index() >= next {
                let offset = self.log.high_watermark().max(self.applied.high_watermark);
                self.recent.clear();
                self.log.reset_to(offset, index).map_err(io::Error::other)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: entry {index} does not follow the log, whose next entry is {next}",
                        self.dir
                    ),
                ));
            }
        }
        if self
            .meta
            .note_entry(LogPosition { term, index })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        {
            self.save_meta()?;
        }
        let now = (self.clock)();
        let batch = entry::to_batch(&entry.payload, now).map_err(io::Error::other)?;
        self.log
            .append_replicated(&batch, now)
            .map_err(io::Error::other)?;
        self.recent.push(entry, now);
        Ok(())
    }

    fn truncate_after(&mut self, last: Option<&LogId>) -> io::Result<()> {
        let keep_until = match last {
            Some(last) => last.index.saturating_add(1),
            None => self.first_index(),
        };
        if keep_until < self.log.next_ordinal() {
            if keep_until < self.first_index() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: a cut after entry {} would remove purged entries (up to {})",
                        self.dir,
                        keep_until.saturating_sub(1),
                        self.first_index().saturating_sub(1)
                    ),
                ));
            }
            let offset = self
                .log
                .ordinal_offset(keep_until)
                .map_err(io::Error::other)?;
            self.recent.cut_from(keep_until);
            self.log.truncate_to(offset).map_err(io::Error::other)?;
        }
        self.meta.truncate_after(keep_until.checked_sub(1));
        self.save_meta()
    }

    fn purge(&mut self, upto: &LogId) -> io::Result<()> {
        self.recent.drop_through(upto.index);
        self.meta.purge(LogPosition {
            term: upto.leader_id.term,
            index: upto.index,
        });
        self.save_meta()?;
        // Whole segments up to the purged entry go (retention through Raft); the rest of
        // the purged entries stay on disk, unread, until their segment is whole.
        self.log
            .remove_through_ordinal(upto.index)
            .map_err(io::Error::other)?;
        if upto.index.saturating_add(1) >= self.log.next_ordinal() {
            // Nothing left: the log starts over after the purged entry, where the applied
            // state (a snapshot installed, or entries applied) has its next offset.
            let offset = self.log.high_watermark().max(self.applied.high_watermark);
            self.log
                .reset_to(offset, upto.index.saturating_add(1))
                .map_err(io::Error::other)?;
            // The producers of the purged batches: as the snapshot ending here has them.
            if let Some(state) = self.snapshot_producers_at(offset) {
                self.log
                    .adopt_producer_state(&state)
                    .map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    /// The producer state of the last snapshot, if it ends at `offset`.
    fn snapshot_producers_at(&self, offset: i64) -> Option<Vec<u8>> {
        let (_, data) = self.applied.snapshot.as_ref()?;
        let data: SnapshotData = serde_json::from_slice(data).ok()?;
        (data.high_watermark == offset)
            .then_some(data.producers)
            .flatten()
    }

    fn vote(&self) -> Option<Vote> {
        self.meta.vote.map(|vote| {
            if vote.committed {
                Vote::new_committed(vote.term, vote.node_id)
            } else {
                Vote::new(vote.term, vote.node_id)
            }
        })
    }

    /// Applies one committed entry: the high watermark moves past its records.
    fn apply(&mut self, entry: &Entry) -> Applied {
        let index = entry.log_id.index;
        let before = self.applied.high_watermark;
        let base_offset = self.log.ordinal_offset(index).unwrap_or(before);
        let next_offset = self
            .log
            .ordinal_offset(index.saturating_add(1))
            .unwrap_or(base_offset)
            .max(base_offset);
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
        }
        self.applied.last_applied = Some(entry.log_id);
        self.applied.high_watermark = before.max(next_offset);
        Applied {
            base_offset,
            next_offset,
        }
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<S: Storage>(replica: &Mutex<Replica<S>>) -> MutexGuard<'_, Replica<S>> {
    replica
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// The replica's Raft log (and, cloned, a reader of it).
pub struct LogStore<S: Storage> {
    replica: Arc<Mutex<Replica<S>>>,
    flusher: Flusher,
}

impl<S: Storage> Clone for LogStore<S> {
    fn clone(&self) -> Self {
        Self {
            replica: self.replica.clone(),
            flusher: self.flusher.clone(),
        }
    }
}

/// The replica's state machine.
pub struct StateMachine<S: Storage> {
    replica: Arc<Mutex<Replica<S>>>,
}

impl<S: Storage> Clone for StateMachine<S> {
    fn clone(&self) -> Self {
        Self {
            replica: self.replica.clone(),
        }
    }
}

impl<S: Storage + Clone + 'static> Replica<S> {
    /// The replica as openraft's log store and state machine, sharing it.
    pub fn into_raft_storage(self) -> (LogStore<S>, StateMachine<S>, Arc<Mutex<Replica<S>>>) {
        let flusher = Flusher::new(self.log.fence().clone());
        let replica = Arc::new(Mutex::new(self));
        (
            LogStore {
                replica: replica.clone(),
                flusher,
            },
            StateMachine {
                replica: replica.clone(),
            },
            replica,
        )
    }
}

impl<S: Storage + Clone + 'static> RaftLogReader<TypeConfig> for LogStore<S> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_bounds(&range);
        lock(&self.replica).entries(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        lock(&self.replica).entries(start, end, ENTRIES_READ_BYTES_MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.replica).vote())
    }
}

impl<S: Storage + Clone + 'static> RaftLogStorage<TypeConfig> for LogStore<S> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        lock(&self.replica).log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut replica = lock(&self.replica);
        // Saved first, then taken: a vote that failed to save is not read back as cast.
        let mut meta = replica.meta.clone();
        meta.vote = Some(replica::Vote {
            term: vote.leader_id.term,
            node_id: vote.leader_id.voted_for,
            committed: vote.committed,
        });
        meta.save(&replica.storage, &replica.dir)
            .map_err(io::Error::other)?;
        replica.meta = meta;
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut must_sync = false;
        let handle = {
            let mut replica = lock(&self.replica);
            for entry in entries {
                // openraft's own entries (blank, membership) are always synced.
                must_sync |= !matches!(&entry.payload, EntryPayload::Normal(p) if !p.sync);
                replica.append_entry(&entry)?;
            }
            replica.log.sync_handle().map_err(io::Error::other)?
        };
        // Durable later, off this task: the entries are readable now, and openraft counts
        // them as stored (votes, commits) only once the callback says they are synced (or,
        // for `Memory` batches, written).
        self.flusher.flush(handle, callback, must_sync).await;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut replica = lock(&self.replica);
        let now = (replica.clock)();
        let due = match replica.commits {
            CommitKeeping::Never => return Ok(()),
            CommitKeeping::Always => true,
            CommitKeeping::Every(interval) => {
                now.saturating_sub(replica.commit_saved_ms) >= interval
            }
        };
        replica.meta.committed = committed.map(|c| LogPosition {
            term: c.leader_id.term,
            index: c.index,
        });
        if due {
            replica.save_meta()?;
            replica.commit_saved_ms = now;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        lock(&self.replica).kept_commit()
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        lock(&self.replica).truncate_after(last_log_id.as_ref())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        lock(&self.replica).purge(&log_id)
    }
}

/// The state machine's snapshot: where its records end, and the idempotent-producer table
/// as the records before that leave it (encoded as the log keeps it), which a replica that
/// installs the snapshot and starts its log over after it adopts: it knows every producer's
/// last batches without holding them, so a producer's retry is still a duplicate there.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotData {
    high_watermark: i64,
    /// Absent from snapshots of replicas before producer state was kept in them.
    #[serde(default)]
    producers: Option<Vec<u8>>,
}

type Meta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
type SnapshotOf = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

impl<S: Storage + Clone + 'static> RaftSnapshotBuilder<TypeConfig> for StateMachine<S> {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf, io::Error> {
        let mut replica = lock(&self.replica);
        let (last_log_id, high_watermark) = replica.snapshot_end()?;
        let meta = Meta {
            last_log_id,
            last_membership: replica.applied.membership.clone(),
        };
        let producers = match replica.log.producer_state_before(high_watermark) {
            Ok(state) => Some(state),
            // A log that starts after the snapshot's end (it started over at a later
            // snapshot) has the state of that one.
            Err(_) => replica.snapshot_producers_at(high_watermark),
        };
        let data = serde_json::to_vec(&SnapshotData {
            high_watermark,
            producers,
        })
        .map_err(io::Error::other)?;
        replica.applied.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl<S: Storage + Clone + 'static> RaftStateMachine<TypeConfig> for StateMachine<S> {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let replica = lock(&self.replica);
        Ok((
            replica.applied.last_applied,
            replica.applied.membership.clone(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = lock(&self.replica).apply(&entry);
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let data: SnapshotData = serde_json::from_slice(&snapshot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut replica = lock(&self.replica);
        replica.applied.last_applied = meta.last_log_id;
        replica.applied.membership = meta.last_membership.clone();
        replica.applied.high_watermark = data.high_watermark;
        replica.applied.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf>, io::Error> {
        Ok(lock(&self.replica)
            .applied
            .snapshot
            .clone()
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new_term_index(1, index),
            payload: EntryPayload::Normal(crate::Proposal::new(vec![0u8; bytes])),
        }
    }

    /// Recent entries stay within their per-replica bound, count towards the process's
    /// total while kept (and no longer once dropped), and an idle replica drops them.
    #[test]
    fn recent_entries_are_bounded_counted_and_dropped_when_idle() {
        let before = RECENT_ENTRIES_HELD.load(Ordering::Relaxed);
        let mut recent = Recent::default();
        let size = RECENT_ENTRIES_BYTES_MAX / 4;
        for index in 0..10 {
            recent.push(&entry(index, size), 1_000);
        }
        assert!(recent.bytes <= RECENT_ENTRIES_BYTES_MAX, "{}", recent.bytes);
        assert_eq!(
            recent.get(9).map(|e| e.log_id.index),
            Some(9),
            "the newest kept"
        );
        assert!(recent.get(0).is_none(), "the oldest dropped");
        assert_eq!(
            RECENT_ENTRIES_HELD.load(Ordering::Relaxed) - before,
            recent.bytes,
            "counted while kept"
        );
        recent.drop_if_idle(1_000 + RECENT_ENTRIES_IDLE_MS - 1);
        assert!(recent.get(9).is_some(), "not idle yet");
        recent.drop_if_idle(1_000 + RECENT_ENTRIES_IDLE_MS);
        assert!(recent.get(9).is_none(), "dropped when idle");
        assert_eq!(RECENT_ENTRIES_HELD.load(Ordering::Relaxed), before);
        recent.push(&entry(10, size), 2_000);
        drop(recent);
        assert_eq!(
            RECENT_ENTRIES_HELD.load(Ordering::Relaxed),
            before,
            "a dropped replica's entries no longer count"
        );
    }
}
