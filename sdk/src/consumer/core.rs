//! The consumer's decisions without I/O: a state machine that takes `now` and events (an
//! assignment, a start position, records handed out and handled, a rejected or failed
//! commit, a failed heartbeat) and answers what to do next (which partitions to fetch and from where, which
//! commits to send, when to heartbeat). Like the policies and `herald-broker-core` it reads
//! no clock, spawns nothing and opens no socket, so the run loop's choices can be driven by
//! a seeded simulation (`tests/consumer_simulation.rs`) as well as by the run loop.
//!
//! Per owned partition it keeps:
//!
//! - the position: the next offset to hand out (unknown until the start position — the
//!   committed offset, or the reset policy's — is looked up);
//! - the committable offset: every record before it was handled (processed, deduplicated or
//!   dead-lettered) or skipped, so committing it loses nothing (at-least-once); records
//!   handled out of order (key lanes) wait above it until the gap closes;
//! - the committed offset: the highest commit decided (or the start position): commits only
//!   go up while the partition is owned. A commit that got no answer goes back to the one
//!   decided before it, so it is decided (and sent) again.
//!
//! Membership: joining (no member id) → member (id and epoch from the coordinator's
//! assignment) → on an unknown member (expired) or a fenced epoch, everything is dropped and
//! the consumer joins again at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use herald_wire::groups::{Commit, TopicPartition};

/// Shortest heartbeat interval honoured, whatever the coordinator asks for.
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Where the consumer stands in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipState {
    /// No member id yet (first join, or rejoining after an expiry or a fence).
    Joining,
    /// A member, at the epoch of its last assignment.
    Member,
}

/// What the next heartbeat reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// `None` to join.
    pub member_id: Option<String>,
    /// 0 when joining.
    pub member_epoch: i32,
    /// The partitions still consumed (a revoked one is no longer listed).
    pub owned: Vec<TopicPartition>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub member_epoch: i32,
    /// The partitions the member may consume now, in the coordinator's order.
    pub partitions: Vec<TopicPartition>,
    /// When to heartbeat again (at least [`HEARTBEAT_INTERVAL_MIN`]).
    pub heartbeat_interval: Duration,
}

/// Why a heartbeat was refused; either way the consumer drops everything and rejoins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatError {
    /// The member left or its session expired.
    UnknownMember,
    /// The member's epoch is stale (a newer incarnation exists).
    FencedEpoch,
}

/// Where a partition is fetched from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFrom {
    /// The start is not known: look up the committed offset (or the reset policy's offset)
    /// and report it with [`ConsumerCore::on_start_position`].
    Start,
    /// The position fell out of the log's range (retention removed it, or the committed
    /// offset is past the end of a recreated topic): look up the reset policy's offset, not
    /// the committed one, and report it with [`ConsumerCore::on_start_position`].
    Reset,
    /// Fetch from this offset.
    Offset(i64),
}

/// One fetch to make: an owned partition and where to read it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub partition: TopicPartition,
    pub from: FetchFrom,
}

/// A partition's progress once its start is known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    /// The next offset to hand out.
    position: i64,
    /// Every record before it was handled or skipped.
    committable: i64,
    /// Handled offsets above `committable` (always below `position`).
    handled_ahead: BTreeSet<i64>,
}

impl Cursor {
    fn fetched(&mut self, first_offset: i64, count: u32) {
        let end = first_offset.saturating_add(i64::from(count));
        if end <= self.position {
            return;
        }
        if first_offset > self.position {
            if self.committable == self.position {
                // Nothing outstanding: the skipped offsets are simply passed.
                self.committable = first_offset;
            } else {
                self.handled_ahead.extend(self.position..first_offset);
            }
        }
        self.position = end;
    }

    fn skipped(&mut self, next_offset: i64) {
        if next_offset <= self.position {
            return;
        }
        if self.committable == self.position {
            self.committable = next_offset;
        } else {
            self.handled_ahead.extend(self.position..next_offset);
        }
        self.position = next_offset;
    }

    fn handled(&mut self, offset: i64) {
        if offset < self.committable || offset >= self.position {
            return;
        }
        if offset == self.committable {
            self.committable += 1;
            while self.handled_ahead.remove(&self.committable) {
                self.committable += 1;
            }
        } else {
            self.handled_ahead.insert(offset);
        }
    }
}

/// One owned partition's progress, borrowed from the [`ConsumerCore`]
/// ([`ConsumerCore::partition_progress`]).
#[derive(Debug)]
pub struct PartitionProgress<'a> {
    cursor: &'a mut Cursor,
}

impl PartitionProgress<'_> {
    /// As [`ConsumerCore::on_fetched`].
    pub fn fetched(&mut self, first_offset: i64, count: u32) {
        self.cursor.fetched(first_offset, count);
    }

    /// As [`ConsumerCore::on_handled`].
    pub fn handled(&mut self, offset: i64) {
        self.cursor.handled(offset);
    }

    /// As [`ConsumerCore::on_skipped`].
    pub fn skipped(&mut self, next_offset: i64) {
        self.cursor.skipped(next_offset);
    }
}

/// What the consumer knows of one owned partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PartitionState {
    /// `None` until the start position is known (again).
    cursor: Option<Cursor>,
    /// The highest commit decided, or the start position; never decreases while owned
    /// (except after a reset: the log it was decided against is gone; and a commit that got
    /// no answer, which goes back to the one decided before it).
    committed: Option<i64>,
    /// The position went out of range: the next start applies the reset policy.
    reset: bool,
}

/// The consumer's membership, positions and commit decisions, without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCore {
    /// `None` while joining.
    member_id: Option<String>,
    member_epoch: i32,
    /// Owned partitions in the coordinator's order (the order they are consumed in).
    owned: Vec<TopicPartition>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    heartbeat_interval: Duration,
    /// `None`: a heartbeat is due now.
    next_heartbeat_at: Option<Instant>,
}

impl Default for ConsumerCore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsumerCore {
    /// A consumer that has not joined yet: its first heartbeat (the join) is due now.
    pub fn new() -> Self {
        Self {
            member_id: None,
            member_epoch: 0,
            owned: Vec::new(),
            partitions: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(1),
            next_heartbeat_at: None,
        }
    }

    // --- What the consumer is -------------------------------------------------------------

    pub fn state(&self) -> MembershipState {
        match self.member_id {
            None => MembershipState::Joining,
            Some(_) => MembershipState::Member,
        }
    }

    /// The member id (`None` while joining).
    pub fn member_id(&self) -> Option<&str> {
        self.member_id.as_deref()
    }

    /// The epoch of the last assignment (0 while joining).
    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// The partitions owned, in the coordinator's order.
    pub fn owned(&self) -> &[TopicPartition] {
        &self.owned
    }

    pub fn owns(&self, partition: &TopicPartition) -> bool {
        self.partitions.contains_key(partition)
    }

    /// The next offset to hand out of `partition`; `None` when it is not owned or its start
    /// is not known.
    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.cursor(partition).map(|cursor| cursor.position)
    }

    /// The offset every record before which was handled or skipped; `None` when `partition`
    /// is not owned or its start is not known.
    pub fn committable(&self, partition: &TopicPartition) -> Option<i64> {
        self.cursor(partition).map(|cursor| cursor.committable)
    }

    /// The highest commit decided for `partition` (or its start position) while owned.
    pub fn committed(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(partition)
            .and_then(|state| state.committed)
    }

    fn cursor(&self, partition: &TopicPartition) -> Option<&Cursor> {
        self.partitions
            .get(partition)
            .and_then(|state| state.cursor.as_ref())
    }

    fn cursor_mut(&mut self, partition: &TopicPartition) -> Option<&mut Cursor> {
        self.partitions
            .get_mut(partition)
            .and_then(|state| state.cursor.as_mut())
    }

    // --- Heartbeats -----------------------------------------------------------------------

    /// Whether a heartbeat is due at `now`.
    pub fn heartbeat_due(&self, now: Instant) -> bool {
        self.next_heartbeat_at.is_none_or(|at| now >= at)
    }

    /// When the next heartbeat is due (`None`: now).
    pub fn next_heartbeat_at(&self) -> Option<Instant> {
        self.next_heartbeat_at
    }

    /// What the next heartbeat sends.
    pub fn heartbeat_request(&self) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            owned: self.owned.clone(),
        }
    }

    /// The coordinator answered with an assignment at `now`: partitions no longer granted
    /// are dropped with their positions, newly granted ones start unknown.
    pub fn on_assignment(&mut self, assignment: MemberAssignment, now: Instant) {
        let MemberAssignment {
            member_id,
            member_epoch,
            partitions,
            heartbeat_interval,
        } = assignment;
        self.member_id = Some(member_id);
        self.member_epoch = member_epoch;
        let mut owned: Vec<TopicPartition> = Vec::with_capacity(partitions.len());
        for partition in partitions {
            if !owned.contains(&partition) {
                owned.push(partition);
            }
        }
        self.partitions
            .retain(|partition, _| owned.contains(partition));
        for partition in &owned {
            self.partitions.entry(partition.clone()).or_default();
        }
        self.owned = owned;
        self.heartbeat_interval = heartbeat_interval.max(HEARTBEAT_INTERVAL_MIN);
        self.next_heartbeat_at = Some(now + self.heartbeat_interval);
    }

    /// The coordinator answered at `now` without an assignment: everything stays, the next
    /// heartbeat is due after the interval.
    pub fn on_heartbeat_acknowledged(&mut self, now: Instant) {
        self.next_heartbeat_at = Some(now + self.heartbeat_interval);
    }

    /// The heartbeat was refused at `now` (expired or fenced): everything is dropped (the new
    /// owners resume from the last commits) and the rejoin is due at once.
    pub fn on_heartbeat_error(&mut self, _kind: HeartbeatError, now: Instant) {
        self.member_id = None;
        self.member_epoch = 0;
        self.owned.clear();
        self.partitions.clear();
        self.heartbeat_interval = Duration::ZERO;
        self.next_heartbeat_at = Some(now);
    }

    // --- Fetching -------------------------------------------------------------------------

    /// Where to fetch `partition` from; `None` when it is not owned.
    pub fn fetch_from(&self, partition: &TopicPartition) -> Option<FetchFrom> {
        let state = self.partitions.get(partition)?;
        Some(match &state.cursor {
            Some(cursor) => FetchFrom::Offset(cursor.position),
            None if state.reset => FetchFrom::Reset,
            None => FetchFrom::Start,
        })
    }

    /// Every owned partition and where to fetch it from, in the coordinator's order.
    pub fn fetches(&self) -> Vec<Fetch> {
        self.owned
            .iter()
            .filter_map(|partition| {
                self.fetch_from(partition).map(|from| Fetch {
                    partition: partition.clone(),
                    from,
                })
            })
            .collect()
    }

    /// `partition` starts at `offset` (its committed offset, or the reset policy's). Commits
    /// still never go below one already decided while the partition is owned.
    pub fn on_start_position(&mut self, partition: &TopicPartition, offset: i64) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        state.cursor = Some(Cursor {
            position: offset,
            committable: offset,
            handled_ahead: BTreeSet::new(),
        });
        state.reset = false;
        state.committed = Some(state.committed.map_or(offset, |done| done.max(offset)));
    }

    /// Records `first_offset .. first_offset + count` of `partition` were handed to the
    /// handler. Offsets between the position and `first_offset` were skipped (never handed
    /// out: unreadable) and count as done; offsets below the position are not handed out
    /// again.
    pub fn on_fetched(&mut self, partition: &TopicPartition, first_offset: i64, count: u32) {
        if let Some(cursor) = self.cursor_mut(partition) {
            cursor.fetched(first_offset, count);
        }
    }

    /// The record at `offset` of `partition` was handled (processed, deduplicated or
    /// dead-lettered). Offsets not handed out, already passed, or of a partition no longer
    /// owned are ignored.
    pub fn on_handled(&mut self, partition: &TopicPartition, offset: i64) {
        if let Some(cursor) = self.cursor_mut(partition) {
            cursor.handled(offset);
        }
    }

    /// The records of `partition` from its position up to `next_offset` are passed over
    /// without being handed to the handler: a corrupt batch sent whole to the dead-letter
    /// topic ([`crate::consumer::CorruptBatchPolicy::SkipToDeadLetter`]). They count as done
    /// (the committable offset moves past them once nothing before them is outstanding);
    /// an offset at or below the position changes nothing.
    pub fn on_skipped(&mut self, partition: &TopicPartition, next_offset: i64) {
        if let Some(cursor) = self.cursor_mut(partition) {
            cursor.skipped(next_offset);
        }
    }

    /// The progress of `partition`, borrowed for a run of records: the same events as
    /// [`ConsumerCore::on_fetched`] / [`ConsumerCore::on_handled`] without looking the
    /// partition up per record (the one-lane loop reports each record as it goes, so a run
    /// stopped between two records has reported all it handled).
    pub fn partition_progress(
        &mut self,
        partition: &TopicPartition,
    ) -> Option<PartitionProgress<'_>> {
        self.cursor_mut(partition)
            .map(|cursor| PartitionProgress { cursor })
    }

    /// The handler is done with what was handed out of `partition`: records it did not
    /// handle (the breaker left them for later) are fetched again, so the position goes back
    /// to the committable offset (records handled after the first one left are delivered
    /// again: at-least-once).
    pub fn on_fetch_finished(&mut self, partition: &TopicPartition) {
        if let Some(cursor) = self.cursor_mut(partition) {
            cursor.position = cursor.committable;
            cursor.handled_ahead.clear();
        }
    }

    /// The position of `partition` is out of the log's range (retention removed it, or a
    /// committed offset is past the end of a recreated topic): the reset policy decides the
    /// new start (the committed offset would only lead back out of range), and commits start
    /// over from it.
    pub fn on_offset_out_of_range(&mut self, partition: &TopicPartition) {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.cursor = None;
            state.committed = None;
            state.reset = true;
        }
    }

    // --- Commits --------------------------------------------------------------------------

    /// The commit to send for `partition`, if its committable offset passed the last one
    /// decided; it counts as decided from now on (commits only go up), unless reported back
    /// with [`ConsumerCore::on_commit_failed`] when it got no answer.
    pub fn take_commit(&mut self, partition: &TopicPartition) -> Option<i64> {
        let state = self.partitions.get_mut(partition)?;
        let committable = state.cursor.as_ref()?.committable;
        if state.committed.is_some_and(|done| committable <= done) {
            return None;
        }
        state.committed = Some(committable);
        Some(committable)
    }

    /// Every commit to send (see [`ConsumerCore::take_commit`]), in the coordinator's order,
    /// without metadata.
    pub fn take_commits(&mut self) -> Vec<Commit> {
        let owned = self.owned.clone();
        owned
            .into_iter()
            .filter_map(|partition| {
                self.take_commit(&partition).map(|offset| Commit {
                    partition,
                    offset,
                    metadata: String::new(),
                })
            })
            .collect()
    }

    /// The commit of `offset` for `partition` ([`ConsumerCore::take_commit`]) got no answer
    /// (the connection failed, the broker was busy, the run stopped mid-request): it no longer
    /// counts as decided, `previous` (what [`ConsumerCore::committed`] said before it was
    /// taken) is the last one decided again, so the next [`ConsumerCore::take_commit`] (or
    /// the final [`ConsumerCore::take_commits`]) sends it again, even with nothing new handled
    /// (an idle partition would otherwise never commit it). Sending it twice is harmless: the
    /// same offset, or a higher one. Ignored when something else was decided since (the
    /// partition was looked up again, reset, rejected or is no longer owned).
    pub fn on_commit_failed(
        &mut self,
        partition: &TopicPartition,
        offset: i64,
        previous: Option<i64>,
    ) {
        if let Some(state) = self.partitions.get_mut(partition) {
            if state.committed == Some(offset) {
                state.committed = previous;
            }
        }
    }

    /// A commit of `partition` was refused (it moved, or the member expired or was fenced):
    /// the new owner resumes from the last accepted commit; here the partition's start is
    /// looked up again and a heartbeat is due at once (to learn the new assignment).
    pub fn on_commit_rejected(&mut self, partition: &TopicPartition) {
        if let Some(state) = self.partitions.get_mut(partition) {
            *state = PartitionState::default();
        }
        self.next_heartbeat_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders(partition: u32) -> TopicPartition {
        TopicPartition::new("orders", partition)
    }

    fn member(partitions: &[u32], now: Instant) -> ConsumerCore {
        let mut core = ConsumerCore::new();
        core.on_assignment(
            MemberAssignment {
                member_id: "member-1".to_owned(),
                member_epoch: 1,
                partitions: partitions.iter().map(|p| orders(*p)).collect(),
                heartbeat_interval: Duration::from_millis(100),
            },
            now,
        );
        core
    }

    /// Reporting through a borrowed partition progress is the same as through the core,
    /// whatever was handled out of order before.
    #[test]
    fn partition_progress_reports_as_the_core_does() {
        let now = Instant::now();
        for ahead in [None, Some(14), Some(30)] {
            let mut by_one = member(&[0], now);
            by_one.on_start_position(&orders(0), 10);
            by_one.on_fetched(&orders(0), 10, 25);
            let mut by_range = member(&[0], now);
            by_range.on_start_position(&orders(0), 10);
            by_range.on_fetched(&orders(0), 10, 25);
            if let Some(offset) = ahead {
                by_one.on_handled(&orders(0), offset);
                by_range.on_handled(&orders(0), offset);
            }
            for (from, to) in [(12, 20), (10, 12), (20, 27)] {
                for offset in from..to {
                    by_one.on_handled(&orders(0), offset);
                }
                let mut progress = by_range.partition_progress(&orders(0)).expect("owned");
                for offset in from..to {
                    progress.handled(offset);
                }
                assert_eq!(
                    by_range.committable(&orders(0)),
                    by_one.committable(&orders(0)),
                    "ahead {ahead:?}, range {from}..{to}"
                );
            }
        }
    }

    /// Control batches between records (offsets 12 and 13 here) are passed as done: the
    /// committable offset moves over them once the records before them are handled, not
    /// before, and the next fetch starts after them.
    #[test]
    fn passed_control_offsets_count_as_done_in_order() {
        let now = Instant::now();
        let mut core = member(&[0], now);
        core.on_start_position(&orders(0), 10);
        let mut progress = core.partition_progress(&orders(0)).expect("owned");
        progress.fetched(10, 1);
        progress.fetched(11, 1);
        progress.skipped(14);
        progress.fetched(14, 1);
        progress.handled(14);
        assert_eq!(
            core.committable(&orders(0)),
            Some(10),
            "10 and 11 outstanding"
        );
        assert_eq!(core.position(&orders(0)), Some(15));
        for offset in [10, 11] {
            core.on_handled(&orders(0), offset);
        }
        assert_eq!(core.committable(&orders(0)), Some(15));
    }

    #[test]
    fn joins_then_heartbeats_at_the_interval() {
        let now = Instant::now();
        let core = ConsumerCore::new();
        assert_eq!(core.state(), MembershipState::Joining);
        assert!(core.heartbeat_due(now));
        let core = member(&[0], now);
        assert_eq!(core.state(), MembershipState::Member);
        assert!(!core.heartbeat_due(now + Duration::from_millis(99)));
        assert!(core.heartbeat_due(now + Duration::from_millis(100)));
        assert_eq!(
            core.heartbeat_request(),
            HeartbeatRequest {
                member_id: Some("member-1".to_owned()),
                member_epoch: 1,
                owned: vec![orders(0)],
            }
        );
    }

    #[test]
    fn positions_start_unknown_and_commits_only_go_up() {
        let now = Instant::now();
        let mut core = member(&[0, 1], now);
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Start));
        assert_eq!(core.fetch_from(&orders(2)), None);
        core.on_start_position(&orders(0), 10);
        assert_eq!(core.take_commit(&orders(0)), None, "nothing new yet");
        core.on_fetched(&orders(0), 10, 3);
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Offset(13)));
        // Out of order (key lanes): 11 and 12 wait for 10.
        core.on_handled(&orders(0), 12);
        core.on_handled(&orders(0), 11);
        assert_eq!(core.committable(&orders(0)), Some(10));
        assert_eq!(core.take_commit(&orders(0)), None);
        core.on_handled(&orders(0), 10);
        assert_eq!(core.committable(&orders(0)), Some(13));
        assert_eq!(
            core.take_commits(),
            vec![Commit {
                partition: orders(0),
                offset: 13,
                metadata: String::new(),
            }]
        );
        assert!(core.take_commits().is_empty(), "sent once");
        // Out of range (the log it was decided against is gone, e.g. a recreated topic): the
        // reset policy decides the start and commits start over from it, lower or not.
        core.on_offset_out_of_range(&orders(0));
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Reset));
        core.on_start_position(&orders(0), 5);
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Offset(5)));
        core.on_fetched(&orders(0), 5, 4);
        for offset in 5..9 {
            core.on_handled(&orders(0), offset);
        }
        assert_eq!(core.take_commit(&orders(0)), Some(9));
        assert_eq!(core.take_commit(&orders(0)), None, "sent once");
    }

    #[test]
    fn records_left_for_later_are_fetched_again() {
        let now = Instant::now();
        let mut core = member(&[0], now);
        core.on_start_position(&orders(0), 0);
        core.on_fetched(&orders(0), 0, 5);
        core.on_handled(&orders(0), 0);
        core.on_handled(&orders(0), 3);
        core.on_fetch_finished(&orders(0));
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Offset(1)));
        assert_eq!(core.take_commit(&orders(0)), Some(1));
        // A skipped (unreadable) offset counts as done.
        core.on_fetched(&orders(0), 2, 1);
        core.on_handled(&orders(0), 2);
        assert_eq!(core.committable(&orders(0)), Some(3));
    }

    /// A corrupt batch skipped to the dead-letter topic counts as done: the position and the
    /// committable offset move past it, and the commit follows.
    #[test]
    fn a_skipped_batch_counts_as_done() {
        let now = Instant::now();
        let mut core = member(&[0], now);
        core.on_start_position(&orders(0), 0);
        core.on_fetched(&orders(0), 0, 3);
        for offset in 0..3 {
            core.on_handled(&orders(0), offset);
        }
        core.on_fetch_finished(&orders(0));
        assert_eq!(core.take_commit(&orders(0)), Some(3));
        core.on_skipped(&orders(0), 6);
        assert_eq!(core.fetch_from(&orders(0)), Some(FetchFrom::Offset(6)));
        assert_eq!(core.committable(&orders(0)), Some(6));
        assert_eq!(core.take_commit(&orders(0)), Some(6));
        // Backwards changes nothing.
        core.on_skipped(&orders(0), 4);
        assert_eq!(core.position(&orders(0)), Some(6));
        // With a record still outstanding, the skipped ones wait above it.
        core.on_fetched(&orders(0), 6, 1);
        core.on_skipped(&orders(0), 9);
        assert_eq!(core.committable(&orders(0)), Some(6));
        core.on_handled(&orders(0), 6);
        assert_eq!(core.committable(&orders(0)), Some(9));
        // Not owned: ignored.
        core.on_skipped(&orders(1), 5);
        assert_eq!(core.position(&orders(1)), None);
    }

    /// A commit that got no answer (a transient failure, or a stop mid-request) is decided
    /// again: the next take sends it even though nothing new was handled (an idle partition
    /// would never have committed it again), and so do the final commits of a stop.
    #[test]
    fn a_failed_commit_is_sent_again() {
        let now = Instant::now();
        let mut core = member(&[0, 1], now);
        core.on_start_position(&orders(0), 10);
        core.on_fetched(&orders(0), 10, 2);
        core.on_handled(&orders(0), 10);
        core.on_handled(&orders(0), 11);
        let previous = core.committed(&orders(0));
        assert_eq!(previous, Some(10), "the start position");
        assert_eq!(core.take_commit(&orders(0)), Some(12));
        core.on_commit_failed(&orders(0), 12, previous);
        assert_eq!(core.committed(&orders(0)), Some(10));
        assert_eq!(
            core.take_commit(&orders(0)),
            Some(12),
            "sent again, with nothing new handled"
        );
        core.on_commit_failed(&orders(0), 12, previous);
        assert_eq!(
            core.take_commits(),
            vec![Commit {
                partition: orders(0),
                offset: 12,
                metadata: String::new(),
            }],
            "and by the final commits"
        );
        assert!(core.take_commits().is_empty(), "answered: sent once");
        // A stale failure (another commit decided since) undoes nothing.
        core.on_commit_failed(&orders(0), 11, previous);
        assert_eq!(core.committed(&orders(0)), Some(12));
        assert_eq!(core.take_commit(&orders(0)), None);
        // Refused meanwhile (looked up again), or not owned: nothing to undo.
        core.on_commit_rejected(&orders(0));
        core.on_commit_failed(&orders(0), 12, previous);
        assert_eq!(core.committed(&orders(0)), None);
        core.on_commit_failed(&orders(2), 12, None);
        assert!(!core.owns(&orders(2)));
    }

    #[test]
    fn revoked_partitions_are_dropped_and_a_fence_rejoins() {
        let now = Instant::now();
        let mut core = member(&[0, 1], now);
        core.on_start_position(&orders(0), 7);
        core.on_start_position(&orders(1), 0);
        core.on_assignment(
            MemberAssignment {
                member_id: "member-1".to_owned(),
                member_epoch: 1,
                partitions: vec![orders(1)],
                heartbeat_interval: Duration::ZERO,
            },
            now,
        );
        assert!(!core.owns(&orders(0)));
        assert_eq!(core.position(&orders(1)), Some(0));
        assert!(
            core.heartbeat_due(now + HEARTBEAT_INTERVAL_MIN),
            "the interval is at least the minimum"
        );
        assert!(!core.heartbeat_due(now));
        core.on_commit_rejected(&orders(1));
        assert!(core.heartbeat_due(now), "a rejected commit beats at once");
        assert_eq!(core.fetch_from(&orders(1)), Some(FetchFrom::Start));
        core.on_heartbeat_error(HeartbeatError::FencedEpoch, now);
        assert_eq!(core.state(), MembershipState::Joining);
        assert!(core.owned().is_empty());
        assert!(core.heartbeat_due(now));
        assert_eq!(core.heartbeat_request().member_epoch, 0);
    }
}
