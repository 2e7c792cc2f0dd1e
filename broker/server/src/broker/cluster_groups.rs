//! Consumer groups of a cluster: kept by the internal topic [`GROUPS_TOPIC`], replicated like
//! any other (Kafka's `__consumer_offsets` shape), so a coordinator failover keeps every
//! commit.
//!
//! - A group belongs to one partition of the topic ([`group_partition`]: CRC-32C of its name),
//!   and its coordinator is that partition's leader. Commits and deletions are records of
//!   that partition ([`GroupRecord`]), acknowledged once committed; every replica folds the
//!   committed records into a file-less [`Coordinator`] (one per partition, a [`Shard`]).
//! - Membership is replicated the same way: a request that changes a group's members, epochs
//!   or assignment (a join, a leave, an expiry, a rebalance) is answered once a
//!   [`GroupRecord::Members`] record with the whole new membership is committed. A new
//!   coordinator commits a barrier record first (so that it has folded every record before
//!   it answers), then takes every group over from its last replicated membership — not from
//!   what it remembers of an earlier lead — so members keep their ids, epochs and partitions
//!   across a failover or a lead handed back by the balancer (as Kafka's KIP-848 coordinator
//!   does); heartbeats that change nothing write nothing.
//! - Any node answers a group request: one that does not lead the group's partition hands it
//!   to the node that does over the node link ([`Peers::request`]) and hands the answer
//!   back, so clients need not know where coordinators are.
//!
//! - The topic stays bounded: once a partition's log passes
//!   [`GROUPS_CHECKPOINT_SEGMENTS`] segments (and twice its last restatement), its
//!   coordinator restates every group's committed offsets and membership (no change in
//!   between), then a
//!   checkpoint record naming where the restatement starts; every replica purges the whole
//!   segments before that point through Raft (`PartitionGroup::purge_before`), so a new
//!   coordinator reads little.
//!
//! Why a partitioned topic and not the controller: commits are frequent and per group; a
//! topic spreads them over as many leaders as it has partitions, and the controller's log
//! stays small.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_raft::node::{
    read_committed, record_proposal, records_proposal, Committed, PartitionGroup, ProposeError,
};
use herald_wire::groups::{GroupDescription, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Request, TopicConfig};
use herald_wire::Api;
use herald_wire::{ErrorCode, Response};

use super::cluster::Cluster;
use super::{error, throttled, Broker};
use crate::clock::now_ms;
use crate::coordinator::{Coordinator, GroupRecord, TopicIds};
use crate::fs::FileStorage;

/// The internal topic that keeps a cluster's consumer groups.
pub const GROUPS_TOPIC: &str = "__groups";
/// Partitions of [`GROUPS_TOPIC`]: as many coordinators, spread over the nodes. Fixed when
/// the topic is created: groups are placed by it.
pub const GROUPS_TOPIC_PARTITIONS: u32 = 6;
/// How long a node waits for the coordinator it handed a request to: longer than the
/// coordinator works on one (`HANDED_ON_REQUEST_TIMEOUT`), which is longer than the most a
/// request waits for its records (a barrier, then one proposal carrying its membership and
/// commit records, [`GROUP_RECORD_COMMIT_WAIT`] each).
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times one request may be handed on: a node holding no replica of the group's
/// partition hands it to a replica, which hands it to the leader if it is not that.
const FORWARD_HOPS_MAX: u8 = 2;
/// Longest a coordinator waits for one of its records (a commit, a deletion, its barrier)
/// to commit: a leader cut off from its followers commits nothing, and its callers get a
/// retryable answer instead of waiting until it learns it lost the lead.
pub(super) const GROUP_RECORD_COMMIT_WAIT: Duration = Duration::from_secs(5);
/// A partition of the groups topic whose log holds this many segments' worth of bytes (and
/// at least twice its last restatement) is checkpointed (its groups restated, the segments
/// before purged).
pub(super) const GROUPS_CHECKPOINT_SEGMENTS: u64 = 4;
/// At most one checkpoint of a partition per this interval (a restatement larger than the
/// threshold does not start another at once).
pub(super) const GROUPS_CHECKPOINT_INTERVAL_MIN: Duration = Duration::from_secs(60);
/// Most bytes of restating records one proposal carries.
const RESTATEMENT_BATCH_BYTES: usize = 1024 * 1024;
/// How often a node deletes the groups it coordinates whose offsets retention passed.
pub(super) const GROUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// The partition of [`GROUPS_TOPIC`] (of `partitions`) that keeps `group`. Never change it:
/// groups already placed would lose their offsets.
pub fn group_partition(group: &str, partitions: u32) -> u32 {
    crc32c::crc32c(group.as_bytes()) % partitions.max(1)
}

/// Segment size of the groups topic: what a checkpoint's purge deletes at a time.
pub(super) const GROUPS_SEGMENT_BYTES: u64 = 1024 * 1024;

/// The groups topic's configuration: no retention by age or size (a group's offsets go with
/// a deletion record, and old records with a checkpoint, see the module documentation).
pub(super) fn groups_topic_config() -> TopicConfig {
    TopicConfig {
        partitions: GROUPS_TOPIC_PARTITIONS,
        retention: None,
        segment_bytes: GROUPS_SEGMENT_BYTES,
        ..TopicConfig::default()
    }
}

/// The groups of one partition of [`GROUPS_TOPIC`], on a node holding a replica of it.
pub(super) struct Shard {
    coordinator: Coordinator,
    state: tokio::sync::Mutex<ShardState>,
    /// Shared by the requests that change groups (joins, leaves, commits, deletions), from
    /// before they change the coordinator's state until their records are committed; held
    /// alone by a checkpoint (no change falls between the state it restates and its
    /// checkpoint record) and by a take-over (no change made under an earlier term is lost
    /// when the groups are restored from their records).
    writes: tokio::sync::RwLock<()>,
}

#[derive(Default)]
struct ShardState {
    /// The next offset of the partition to fold.
    folded: i64,
    /// The term in which this node, leading, committed its barrier and took its groups over
    /// from their records; `None` until it did.
    ready_term: Option<u64>,
    /// Where the last checkpoint folded here restates the groups from: the records before
    /// may be purged.
    checkpoint: Option<i64>,
    /// When this node last wrote a checkpoint, and how many bytes it restated.
    checkpointed_at: Option<std::time::Instant>,
    restated_bytes: u64,
}

impl Shard {
    pub(super) fn new(coordinator: Coordinator) -> Self {
        Self {
            coordinator,
            state: tokio::sync::Mutex::new(ShardState::default()),
            writes: tokio::sync::RwLock::new(()),
        }
    }

    /// Folds the partition's committed records not folded yet.
    fn fold(&self, group: &PartitionGroup<FileStorage>, state: &mut ShardState) {
        state.folded = read_committed(&group.replica, state.folded, |offset, committed| {
            let Committed::Record(record) = committed else {
                return;
            };
            match record.value.map(GroupRecord::decode) {
                Some(Ok(GroupRecord::Checkpoint { cut })) => state.checkpoint = Some(cut),
                Some(Ok(record)) => {
                    if let Err((_, failure)) = self.coordinator.apply(&record) {
                        tracing::warn!(offset, %failure, "a consumer group record did not apply");
                    }
                }
                _ => tracing::warn!(offset, "an unreadable consumer group record is passed"),
            }
        });
    }

    /// Brings this coordinator up to date before it answers: on the first request of a lead,
    /// a barrier committed (every earlier record is then committed and folded here) and the
    /// groups taken over from their replicated memberships, with no change in flight; and
    /// every committed record folded.
    async fn ready(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
    ) -> Result<(), Response> {
        let due = self.state.lock().await.ready_term != Some(group.status().term);
        if due {
            let _alone = self.writes.write().await;
            self.take_over_if_due(cluster, group, partition).await?;
        }
        self.fold(group, &mut *self.state.lock().await);
        Ok(())
    }

    /// [`Shard::ready`]'s take-over, for a caller holding [`Shard::writes`] alone.
    async fn take_over_if_due(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
    ) -> Result<(), Response> {
        let mut state = self.state.lock().await;
        let term = group.status().term;
        if state.ready_term != Some(term) {
            let barrier = record_proposal(b"", &GroupRecord::Barrier.encode())
                .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
            propose(cluster, group, partition, barrier).await?;
            self.fold(group, &mut state);
            self.coordinator.take_over(now_ms(), term);
            state.ready_term = Some(term);
        }
        self.fold(group, &mut state);
        Ok(())
    }

    /// Commits `records` (one proposal) and folds them (with whatever came before them). The
    /// caller holds [`Shard::writes`].
    async fn commit(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
        records: &[GroupRecord],
    ) -> Result<(), Response> {
        // A record too large for a batch comes from what a client sent (its commit).
        let proposal = proposal_of(&encoded(records), ErrorCode::InvalidRequest)?;
        propose(cluster, group, partition, proposal).await?;
        self.fold(group, &mut *self.state.lock().await);
        Ok(())
    }

    /// Commits the record of `name`'s membership, if it changed here, together with `then`
    /// (a commit or a deletion checked against it) in one proposal; the caller holds
    /// [`Shard::writes`].
    async fn replicate(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
        name: &str,
        then: Option<GroupRecord>,
    ) -> Result<(), Response> {
        let records: Vec<GroupRecord> = self
            .coordinator
            .membership_record(name)
            .into_iter()
            .chain(then)
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        self.commit(cluster, group, partition, &records).await
    }

    /// Where the records of this partition may be purged up to, as the last checkpoint folded
    /// here says.
    pub(super) async fn checkpoint(&self) -> Option<i64> {
        self.state.lock().await.checkpoint
    }

    /// Checkpoints the partition this node leads if its log passed
    /// [`GROUPS_CHECKPOINT_SEGMENTS`] segments' worth of bytes and twice its last
    /// restatement (and no checkpoint was written here within
    /// [`GROUPS_CHECKPOINT_INTERVAL_MIN`]): with no commit in between, every group's
    /// committed offsets restated ([`Coordinator::restatement`]), then the checkpoint record
    /// naming the offset they start at. Whether it wrote one.
    async fn checkpoint_if_due(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
        segment_bytes: u64,
    ) -> Result<bool, Response> {
        let size = group
            .replica
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log()
            .size_bytes();
        {
            let state = self.state.lock().await;
            let threshold = GROUPS_CHECKPOINT_SEGMENTS
                .saturating_mul(segment_bytes)
                .max(state.restated_bytes.saturating_mul(2));
            if size < threshold
                || state
                    .checkpointed_at
                    .is_some_and(|at| at.elapsed() < GROUPS_CHECKPOINT_INTERVAL_MIN)
            {
                return Ok(false);
            }
        }
        let _alone = self.writes.write().await;
        self.take_over_if_due(cluster, group, partition).await?;
        let cut = group
            .replica
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .high_watermark();
        let records = encoded(&self.coordinator.restatement());
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() && (end == start || bytes < RESTATEMENT_BATCH_BYTES) {
                bytes += records[end].0.len() + records[end].1.len();
                end += 1;
            }
            let proposal = proposal_of(&records[start..end], ErrorCode::Internal)?;
            propose(cluster, group, partition, proposal).await?;
            start = end;
        }
        let marker = record_proposal(b"", &GroupRecord::Checkpoint { cut }.encode())
            .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        propose(cluster, group, partition, marker).await?;
        let mut state = self.state.lock().await;
        state.checkpointed_at = Some(std::time::Instant::now());
        state.restated_bytes = records
            .iter()
            .map(|(key, value)| (key.len() + value.len()) as u64)
            .sum();
        self.fold(group, &mut state);
        tracing::info!(
            partition,
            cut,
            restated = records.len(),
            log_bytes = size,
            "the groups topic's partition is checkpointed; the records before may be purged"
        );
        Ok(true)
    }
}

/// Each record as the groups topic stores it: (the group's name, the record's JSON).
fn encoded(records: &[GroupRecord]) -> Vec<(Vec<u8>, Vec<u8>)> {
    records
        .iter()
        .map(|record| {
            (
                record.group().unwrap_or_default().as_bytes().to_vec(),
                record.encode(),
            )
        })
        .collect()
}

/// One proposal of `records` (see [`encoded`]); one that does not make a batch is answered
/// with `code`.
fn proposal_of(
    records: &[(Vec<u8>, Vec<u8>)],
    code: ErrorCode,
) -> Result<herald_raft::Proposal, Response> {
    let batch: Vec<(&[u8], &[u8])> = records
        .iter()
        .map(|(key, value)| (key.as_slice(), value.as_slice()))
        .collect();
    records_proposal(&batch).map_err(|e| error(code, e.to_string()))
}

/// A checked record, or why it was refused (to answer once the membership is replicated).
fn split<T, E>(checked: Result<T, E>) -> (Option<T>, Result<(), E>) {
    match checked {
        Ok(record) => (Some(record), Ok(())),
        Err(refused) => (None, Err(refused)),
    }
}

/// Proposes one record of the groups topic's `partition`, waiting at most
/// [`GROUP_RECORD_COMMIT_WAIT`] for it to commit.
async fn propose(
    cluster: &Cluster,
    group: &PartitionGroup<FileStorage>,
    partition: u32,
    proposal: herald_raft::Proposal,
) -> Result<(), Response> {
    match tokio::time::timeout(GROUP_RECORD_COMMIT_WAIT, group.propose(proposal)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(failure)) => Err(proposal_failed(cluster, partition, failure)),
        Err(_) => Err(throttled(format!(
            "{GROUPS_TOPIC}/{partition}: not committed within {GROUP_RECORD_COMMIT_WAIT:?} (is a majority of its replicas reachable?); retry"
        ))),
    }
}

fn proposal_failed(cluster: &Cluster, partition: u32, failure: ProposeError) -> Response {
    match failure {
        ProposeError::NotLeader { leader } | ProposeError::Discarded { leader } => {
            cluster.not_leader(GROUPS_TOPIC, partition, leader)
        }
        ProposeError::Failed(failure) => error(
            ErrorCode::Storage,
            format!("{GROUPS_TOPIC}/{partition}: {failure}"),
        ),
    }
}

/// A group request handed on to another node: hops so far, the api, the request's body.
fn encode_forwarded(request: &Request, hops: u8) -> Vec<u8> {
    let mut out = vec![hops];
    out.extend_from_slice(&(request.api() as u16).to_be_bytes());
    request.encode(&mut out);
    out
}

fn decode_forwarded(bytes: &[u8]) -> Result<(u8, Api, Request), String> {
    let [hops, high, low, body @ ..] = bytes else {
        return Err("a handed-on request shorter than its head".to_owned());
    };
    let api = Api::from_code(u16::from_be_bytes([*high, *low])).map_err(|e| e.to_string())?;
    let request = Request::decode(api, body).map_err(|e| e.to_string())?;
    Ok((*hops, api, request))
}

impl Broker {
    /// Answers a group request in a cluster: here if this node coordinates the group, else
    /// handed on to the node that does (`hops`: how many times it was handed on already).
    pub(super) async fn cluster_group(
        &self,
        cluster: &Cluster,
        request: GroupRequest,
        hops: u8,
    ) -> Result<Response, Response> {
        let image = cluster.image();
        let Some(topic) = image.topics().get(GROUPS_TOPIC) else {
            return Err(throttled(format!(
                "the cluster is still setting up its consumer groups (topic '{GROUPS_TOPIC}'): retry shortly"
            )));
        };
        let Some(name) = request.group().map(str::to_owned) else {
            return Ok(self.cluster_list_groups(cluster, topic, hops).await);
        };
        let partition = group_partition(&name, topic.replicas.len() as u32);
        let held = cluster.partition(GROUPS_TOPIC, partition);
        let target = match &held {
            Some(group) => match group.leader() {
                Some(leader) if leader == cluster.id() => None,
                Some(leader) => Some(leader),
                None => return Err(cluster.not_leader(GROUPS_TOPIC, partition, None)),
            },
            // Not a replica here: a replica knows the leader. Each request goes to the next
            // replica in turn, so that a client retrying while one is down reaches another.
            None => topic.replicas.get(partition as usize).and_then(|replicas| {
                let turn = cluster.next_turn() % replicas.len().max(1);
                replicas.get(turn).copied()
            }),
        };
        match (target, held) {
            (None, Some(group)) => self.coordinate(cluster, &group, partition, request).await,
            (Some(node), _) if hops < FORWARD_HOPS_MAX => {
                let request = Request::Group(request);
                let api = request.api();
                let answer = cluster
                    .hand_on(node, encode_forwarded(&request, hops + 1), FORWARD_TIMEOUT)
                    .await
                    .map_err(|failure| {
                        throttled(format!(
                            "the coordinator of group '{name}' (node {node}) did not answer: {failure}"
                        ))
                    })?;
                Response::decode(api, &answer).map_err(|e| {
                    error(
                        ErrorCode::Internal,
                        format!(
                            "node {node} answered group '{name}' with a malformed response: {e}"
                        ),
                    )
                })
            }
            (leader, _) => Err(cluster.not_leader(GROUPS_TOPIC, partition, leader)),
        }
    }

    /// Answers a request another node handed on (see [`Broker::cluster_group`]).
    pub(crate) async fn answer_handed_on(&self, bytes: Vec<u8>) -> Vec<u8> {
        let response = match (decode_forwarded(&bytes), self.cluster()) {
            (Err(reason), _) => error(ErrorCode::InvalidRequest, reason),
            (Ok(_), None) => error(ErrorCode::Internal, "this broker is not a cluster node"),
            (Ok((hops, _, Request::Group(request))), Some(cluster)) => self
                .cluster_group(cluster, request, hops)
                .await
                .unwrap_or_else(|response| response),
            (Ok((_, api, _)), Some(_)) => error(
                ErrorCode::InvalidRequest,
                format!("{} is not handed on between nodes", api.name()),
            ),
        };
        let mut out = Vec::new();
        response.encode(&mut out);
        out
    }

    /// Folds what the groups topic's partitions held here committed since the last fold (in
    /// the background, so that a replica that becomes coordinator has little left to read).
    pub(super) async fn cluster_fold_groups(&self, cluster: &Cluster) {
        for (partition, group) in cluster.groups_partitions() {
            let shard = cluster.shard(partition, || self.coordinator.without_files());
            let mut state = shard.state.lock().await;
            shard.fold(&group, &mut state);
        }
    }

    /// Every group of the cluster: those of the groups topic's partitions this node holds a
    /// replica of, and (unless the listing was handed on already, `hops`) those of the other
    /// partitions, asked of one of their replicas each, in turn. A partition whose replicas
    /// did not answer is missing from the listing (it is not refused).
    async fn cluster_list_groups(
        &self,
        cluster: &Cluster,
        topic: &herald_broker_core::cluster::TopicImage,
        hops: u8,
    ) -> Response {
        let mut names = BTreeSet::new();
        let held = cluster.groups_partitions();
        for (partition, group) in &held {
            let shard = cluster.shard(*partition, || self.coordinator.without_files());
            if let Ok(mut state) = shard.state.try_lock() {
                shard.fold(group, &mut state);
            }
            if let GroupResponse::Groups(found) = shard.coordinator.list() {
                names.extend(found);
            }
        }
        if hops == 0 {
            // One node asked per partition not held here; a node asked once lists every
            // partition it holds.
            let mut asked: BTreeSet<u64> = BTreeSet::new();
            let request = Request::Group(GroupRequest::List);
            for (partition, replicas) in topic.replicas.iter().enumerate() {
                if held.iter().any(|(p, _)| *p as usize == partition) || replicas.is_empty() {
                    continue;
                }
                if replicas.iter().any(|node| asked.contains(node)) {
                    continue;
                }
                let node = replicas[cluster.next_turn() % replicas.len()];
                asked.insert(node);
                let answer = cluster
                    .hand_on(node, encode_forwarded(&request, 1), FORWARD_TIMEOUT)
                    .await
                    .ok()
                    .and_then(|bytes| Response::decode(request.api(), &bytes).ok());
                if let Some(Response::Group(GroupResponse::Groups(found))) = answer {
                    names.extend(found);
                }
            }
        }
        Response::Group(GroupResponse::Groups(names.into_iter().collect()))
    }

    /// Answers `request` as the coordinator of its group (this node leads `partition`).
    async fn coordinate(
        &self,
        cluster: &Cluster,
        group: &PartitionGroup<FileStorage>,
        partition: u32,
        request: GroupRequest,
    ) -> Result<Response, Response> {
        let shard = cluster.shard(partition, || self.coordinator.without_files());
        shard.ready(cluster, group, partition).await?;
        // A leader cut off from its followers must not answer from its memory (members,
        // offsets) after another node may have taken over.
        group
            .confirm_lead()
            .await
            .map_err(|leader| cluster.not_leader(GROUPS_TOPIC, partition, leader))?;
        let coordinator = &shard.coordinator;
        let (partitions, ids) = cluster_topic_shapes(cluster);
        let now = now_ms();
        let failed = |(code, message): (ErrorCode, String)| error(code, message);
        let name = request.group().unwrap_or_default().to_owned();
        let joining = matches!(
            &request,
            GroupRequest::Heartbeat {
                member_id: None,
                ..
            }
        );
        // From the change of the coordinator's state until its record is committed.
        let _changing = shard.writes.read().await;
        let answered = coordinator.answer(request, (&partitions, &ids), now, |name| {
            describe(cluster, coordinator, name, (&partitions, &ids), now)
        });
        let answer = match answered.map_err(|unanswered| *unanswered) {
            Ok(answer) => {
                // A join, a leave or an expiry seen on the way is replicated before the
                // answer (a refusal included: it may have expired members first).
                let replicated = shard
                    .replicate(cluster, group, partition, &name, None)
                    .await;
                if let (Err(_), true, Ok(GroupResponse::Assignment { member_id, .. })) =
                    (&replicated, joining, &answer)
                {
                    // The member never learns its id: it must not hold partitions until its
                    // session ends.
                    let _ = coordinator.leave(&name, member_id, &partitions, now);
                }
                replicated?;
                answer.map_err(failed)?
            }
            Err(GroupRequest::Commit {
                group: name,
                member_id,
                member_epoch,
                offsets,
            }) => {
                let record = coordinator.prepare_commit(
                    &name,
                    (&member_id, member_epoch),
                    offsets,
                    &partitions,
                    &ids,
                    now,
                );
                let (record, refused) = split(record);
                shard
                    .replicate(cluster, group, partition, &name, record)
                    .await?;
                refused.map_err(failed)?;
                GroupResponse::Committed
            }
            Err(GroupRequest::Delete { group: name }) => {
                let record = coordinator.prepare_delete(&name, &partitions, now);
                let (record, refused) = split(record);
                shard
                    .replicate(cluster, group, partition, &name, record)
                    .await?;
                refused.map_err(failed)?;
                GroupResponse::Deleted
            }
            Err(other) => {
                return Err(error(
                    ErrorCode::Internal,
                    format!("{} was not answered", other.api().name()),
                ))
            }
        };
        Ok(Response::Group(answer))
    }

    /// Checkpoints each partition of the groups topic this node leads whose log is due
    /// (see `Shard::checkpoint_if_due`); how many it checkpointed.
    pub(super) async fn cluster_checkpoint_groups(&self, cluster: &Cluster) -> usize {
        let segment_bytes = cluster
            .image()
            .topics()
            .get(GROUPS_TOPIC)
            .map_or(GROUPS_SEGMENT_BYTES, |topic| topic.config.segment_bytes);
        let mut written = 0;
        for (partition, group) in cluster.groups_partitions() {
            if group.leader() != Some(cluster.id()) {
                continue;
            }
            let shard = cluster.shard(partition, || self.coordinator.without_files());
            match shard
                .checkpoint_if_due(cluster, &group, partition, segment_bytes)
                .await
            {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(_) => tracing::warn!(partition, "checkpointing the groups topic failed"),
            }
        }
        written
    }

    /// Deletes, through the groups topic, the groups this node coordinates that have had no
    /// member and no commit for the offsets retention; how many.
    pub(super) async fn cluster_expire_groups(&self, cluster: &Cluster) -> usize {
        let (partitions, _) = cluster_topic_shapes(cluster);
        let mut deleted = 0;
        for (partition, group) in cluster.groups_partitions() {
            if group.leader() != Some(cluster.id()) {
                continue;
            }
            let shard = cluster.shard(partition, || self.coordinator.without_files());
            if shard.ready(cluster, &group, partition).await.is_err() {
                continue;
            }
            let _changing = shard.writes.read().await;
            let expired = shard.coordinator.expired(&partitions, now_ms());
            // Members whose sessions ended are dropped from the replicated memberships too
            // (a coordinator taking over would count their sessions again); an expired
            // group's deletion goes with its membership.
            for name in shard.coordinator.group_names() {
                let deletion = expired
                    .contains(&name)
                    .then(|| shard.coordinator.expiry_record(&name));
                let deleting = deletion.is_some();
                match shard
                    .replicate(cluster, &group, partition, &name, deletion)
                    .await
                {
                    Ok(()) => deleted += usize::from(deleting),
                    // Most likely the lead is gone: the next sweep goes on.
                    Err(_) => break,
                }
            }
        }
        deleted
    }
}

/// `name` described by `coordinator`, with each partition's bounds and append times from this
/// node's replica (a partition it holds no replica of is left out).
fn describe(
    cluster: &Cluster,
    coordinator: &Coordinator,
    name: &str,
    (partitions, ids): (&BTreeMap<String, u32>, &TopicIds),
    now: i64,
) -> Result<GroupDescription, (ErrorCode, String)> {
    let bounds = |tp: &TopicPartition| {
        let found = cluster.partition(&tp.topic, tp.partition)?;
        let replica = found.replica.lock().unwrap_or_else(|p| p.into_inner());
        Some((replica.log().log_start_offset(), replica.high_watermark()))
    };
    let append_time = |tp: &TopicPartition, offset: i64| {
        let found = cluster.partition(&tp.topic, tp.partition)?;
        let replica = found.replica.lock().unwrap_or_else(|p| p.into_inner());
        replica.log().append_time_at(offset)
    };
    coordinator.describe(name, partitions, ids, now, bounds, append_time)
}

impl Broker {
    /// The groups this node coordinates (it leads their partition of the groups topic), each
    /// described: for the lag gauges.
    pub(super) fn cluster_group_lags(&self, cluster: &Cluster) -> Vec<GroupDescription> {
        let (partitions, ids) = cluster_topic_shapes(cluster);
        let now = now_ms();
        let mut described = Vec::new();
        for (partition, group) in cluster.groups_partitions() {
            if group.leader() != Some(cluster.id()) {
                continue;
            }
            let shard = cluster.shard(partition, || self.coordinator.without_files());
            for name in shard.coordinator.group_names() {
                if let Ok(description) =
                    describe(cluster, &shard.coordinator, &name, (&partitions, &ids), now)
                {
                    described.push(description);
                }
            }
        }
        described
    }
}

/// Each topic's partition count and incarnation, by name, as the cluster knows them.
fn cluster_topic_shapes(cluster: &Cluster) -> (BTreeMap<String, u32>, TopicIds) {
    let image = cluster.image();
    let counts = image
        .topics()
        .iter()
        .map(|(name, topic)| (name.clone(), topic.replicas.len() as u32))
        .collect();
    let ids = image
        .topics()
        .iter()
        .map(|(name, topic)| (name.clone(), topic.id))
        .collect();
    (counts, ids)
}

/// The shards a node keeps, by partition of the groups topic.
#[derive(Default)]
pub(super) struct Shards {
    shards: Mutex<HashMap<u32, Arc<Shard>>>,
}

impl Shards {
    pub(super) fn get_or(&self, partition: u32, make: impl FnOnce() -> Coordinator) -> Arc<Shard> {
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_insert_with(|| Arc::new(Shard::new(make())))
            .clone()
    }

    /// The shard of `partition`, if this node made one.
    pub(super) fn get(&self, partition: u32) -> Option<Arc<Shard>> {
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_wire::groups::Commit;

    /// A request handed on is waited for longer than the coordinator works on it, which is
    /// longer than the most it waits for its records (a barrier and a commit).
    #[test]
    fn waits_nest() {
        assert!(FORWARD_TIMEOUT > herald_raft::net::HANDED_ON_REQUEST_TIMEOUT);
        // A barrier, then one proposal (a membership record with the commit or deletion).
        assert!(herald_raft::net::HANDED_ON_REQUEST_TIMEOUT > GROUP_RECORD_COMMIT_WAIT * 2);
    }

    #[test]
    fn groups_are_placed_by_a_fixed_hash_of_their_name() {
        // The placement is part of the stored format: these must never change.
        assert_eq!(group_partition("orders", 6), crc32c::crc32c(b"orders") % 6);
        assert_eq!(group_partition("", 6), 0);
        assert_eq!(group_partition("anything", 1), 0);
        assert_eq!(group_partition("anything", 0), 0);
        let spread: BTreeSet<u32> = (0..100)
            .map(|i| group_partition(&format!("group-{i}"), GROUPS_TOPIC_PARTITIONS))
            .collect();
        assert_eq!(spread.len(), GROUPS_TOPIC_PARTITIONS as usize);
    }

    #[test]
    fn a_handed_on_request_round_trips_and_a_short_one_is_refused() {
        let request = Request::Group(GroupRequest::Commit {
            group: "g".to_owned(),
            member_id: "m".to_owned(),
            member_epoch: 3,
            offsets: vec![Commit {
                partition: TopicPartition::new("orders", 1),
                offset: 42,
                metadata: "x".to_owned(),
            }],
        });
        let (hops, api, decoded) =
            decode_forwarded(&encode_forwarded(&request, 1)).expect("decodes");
        assert_eq!((hops, api), (1, Api::CommitOffsets));
        assert_eq!(decoded, request);
        assert!(decode_forwarded(&[1, 0]).is_err());
        assert!(decode_forwarded(&[1, 0xff, 0xff]).is_err());
    }
}
