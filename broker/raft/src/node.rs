//! A cluster node: the controller group, the metadata image it folds from the controller's
//! committed commands, and the partition groups the image assigns to this node.
//!
//! - The controller is a partition group like any other, over the internal partition
//!   [`CONTROLLER_GROUP`], with every configured peer as a voter. Each node initializes it
//!   with the same membership (openraft allows that; the vote picks one leader).
//! - A follower task reads the controller replica's log up to its high watermark (what is
//!   committed and applied), decodes each command record, folds it into the
//!   [`ClusterImage`] and publishes the image; control records are passed over.
//!   A node started to join a running cluster ([`NodeConfig::join`]) does not initialize
//!   the controller: it registers through its peers, and the controller's leader adds every
//!   registered node that is not a voter as a learner, so it folds the same image.
//! - After each image, the node starts a group for each partition it holds (opening its
//!   replica through the node's [`ReplicaStore`], which empties a directory left by an
//!   earlier incarnation of the topic); the replicas a topic was created with initialize the
//!   group with themselves as voters, as every one of them does. Groups of deleted topics,
//!   of another incarnation and of partitions moved away stop, and their replicas are removed.
//! - Moving a partition (the steward): while the image names a partition's new replicas, its
//!   leader adds the new ones as learners, makes the new set the voters once they caught up
//!   (openraft's joint consensus; a removed leader hands its lead on), and proposes that the
//!   move finished once that membership is committed. Membership changes of a group come from
//!   its leader's one steward task, one at a time.
//! - [`Node::propose`] puts a command in the controller's log through its leader (this node,
//!   or forwarded) and waits until this node's image has applied it: its outcome.
//! - A group openraft stopped on a storage failure (a full disk, a failed fsync), a
//!   partition's or the controller's, is started again from its storage after
//!   [`GROUP_RESTART_DELAY`] (the steward), and catches up from its leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_core::cluster::{
    same_nodes, ClusterImage, Command, NodeInfo, Outcome, TopicImage, COMMAND_KEY,
    CONTROLLER_VOTERS,
};
use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::Storage;
use herald_wire::batch::{self, batches, BatchWriter};
use herald_wire::messages::{TopicConfig, TopicId};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::BasicNode;
use tokio::sync::watch;

use crate::config::{group_config, Timing};
use crate::net::{GroupNetwork, Groups, NetError, Peers};
use crate::store::{open_incarnation, Replica, ReplicaError, StateMachine};
use crate::types::TypeConfig;
use crate::Proposal;

/// The controller's group (and its replica's directory).
pub const CONTROLLER_GROUP: &str = "__cluster/0";
/// How long [`Node::propose`] keeps trying (leader elections included).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes of committed records [`read_committed`] reads at once.
const COMMITTED_READ_BYTES: usize = 1024 * 1024;
/// A partition replica writes its commit position to `raft.meta` at most this often (one
/// file replacement each): a restarted replica serves what was committed up to about this
/// long before its crash at once.
pub const COMMIT_KEEP_INTERVAL_MS: u64 = 1_000;

/// A group's Raft on this node.
pub type GroupRaft<S> = openraft::Raft<TypeConfig, StateMachine<S>>;

/// Where a node keeps its replicas, under each group's directory name (`topic/partition`,
/// or [`CONTROLLER_GROUP`]), and the log settings a topic's config gives its replicas.
pub struct ReplicaStore<S: Storage + Clone + 'static> {
    storage: S,
    log_config: LogConfigOf,
}

/// The log settings of a topic's replicas.
type LogConfigOf = Box<dyn Fn(&TopicConfig) -> LogConfig + Send + Sync>;

impl<S: Storage + Clone + 'static> ReplicaStore<S> {
    pub fn new(
        storage: S,
        log_config: impl Fn(&TopicConfig) -> LogConfig + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            storage,
            log_config: Box::new(log_config),
        })
    }

    fn open_controller(&self) -> Result<Replica<S>, ReplicaError> {
        Replica::open(self.storage.clone(), CONTROLLER_GROUP, LogConfig::default())
    }

    fn open_partition(&self, dir: &str, topic: &TopicImage) -> Result<Replica<S>, ReplicaError> {
        open_incarnation(
            self.storage.clone(),
            dir,
            (self.log_config)(&topic.config),
            &topic.id.0,
        )
    }

    /// Removes a replica this node no longer holds (its group stopped).
    fn remove(&self, dir: &str) -> Result<(), ReplicaError> {
        self.storage
            .remove_dir(dir)
            .map_err(|source| ReplicaError::Storage {
                dir: dir.to_owned(),
                source,
            })
    }
}

/// Why a node could not start or a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("invalid group configuration: {0}")]
    Config(String),
    #[error("Raft: {0}")]
    Raft(String),
    #[error("node {0} is not among the configured peers")]
    NotAPeer(u64),
    #[error("the command was not applied within {PROPOSE_TIMEOUT:?}: {0}")]
    Timeout(String),
    /// The command is committed (at `offset` of the controller's log) but this node has not
    /// applied it within the wait: its outcome is not known here yet.
    #[error("the command at offset {offset} is committed but not applied here within {PROPOSE_TIMEOUT:?}")]
    NotAppliedHere { offset: i64 },
    #[error("the proposal does not encode: {0}")]
    Encode(String),
}

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Where clients reach this node's broker.
    pub broker_addr: String,
    /// Every voter of the controller by id (this node included): its Raft address. A
    /// joining node names the nodes it reaches the cluster through, and itself.
    pub peers: BTreeMap<u64, String>,
    pub timing: Timing,
    /// This node joins a running cluster: it does not initialize the controller (its peers
    /// did), it is added to it as a learner once registered, and holds partitions moved to it.
    pub join: bool,
}

/// A partition group this node runs.
#[derive(Clone)]
pub struct PartitionGroup<S: Storage + Clone + 'static> {
    pub raft: GroupRaft<S>,
    pub replica: Arc<Mutex<Replica<S>>>,
    /// Its replicas as the image has them (the preferred leader first).
    pub replicas: Vec<u64>,
    /// The topic incarnation the replica belongs to.
    pub topic_id: TopicId,
}

/// Why a proposal to a partition group was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead the group; `leader` is who does, if known.
    #[error("this node does not lead the group (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The proposal was appended here, then discarded when this node lost the lead: it may
    /// or may not be committed by the new leader (`leader`, if known).
    #[error("the proposal was discarded when the lead changed (leader: {leader:?}); it may still commit")]
    Discarded { leader: Option<u64> },
    #[error("{0}")]
    Failed(String),
}

impl<S: Storage + Clone + 'static> PartitionGroup<S> {
    /// The node leading the group, as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Proposes a produced batch (its append time stamped) and waits until it is committed
    /// and applied here: where its records are.
    pub async fn propose(&self, proposal: Proposal) -> Result<crate::Applied, ProposeError> {
        // Refused here, not by the log store, where a failed write stops the group.
        crate::entry::check_proposal(&proposal).map_err(|e| ProposeError::Failed(e.to_string()))?;
        match self.raft.client_write(proposal).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            // Appended here, then cut when another leader's log won: it may still commit
            // there, so only an idempotent resend is safe (the new leader deduplicates it).
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward))) => {
                Err(ProposeError::Discarded {
                    leader: forward.leader_id,
                })
            }
            Err(failure) => Err(ProposeError::Failed(failure.to_string())),
        }
    }

    /// Confirms this node still leads the group by its leader lease (no round trip while the
    /// lease holds: a leader cut off from its followers fails this once its lease ran out,
    /// well before it hears of a new term) and that its state machine applied everything
    /// committed when the lease was checked; else who leads, as far as it knows.
    pub async fn confirm_lead(&self) -> Result<(), Option<u64>> {
        match self
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::LeaseRead)
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => Err(self.leader().filter(|leader| *leader != self.raft_id())),
        }
    }

    fn raft_id(&self) -> u64 {
        self.raft.metrics().borrow_watched().id
    }

    /// One step of retention on this replica, through Raft (every replica of the group runs
    /// its own): where its log's retention limits would delete whole segments now, a
    /// snapshot ending there is asked for first if the last one does not reach that far
    /// (openraft purges only what a snapshot covers, and sends it to a follower that needs
    /// purged entries, which then gets every entry after it),
    /// then a purge up to the last entry of those segments, which deletes them
    /// (`Replica::purge`). Never past what this replica has applied. Also lets an idle
    /// replica's recent entries go (`Replica::drop_idle_recent`).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionStep, NodeError> {
        self.purge_through(|log| log.retention_horizon(now_ms))
            .await
    }

    /// [`PartitionGroup::enforce_retention`] up to the whole segments before `offset`
    /// (`PartitionLog::horizon_before`) instead of what the retention limits let go: for a
    /// partition whose state is restated from `offset` on.
    pub async fn purge_before(&self, offset: i64) -> Result<RetentionStep, NodeError> {
        self.purge_through(|log| log.horizon_before(offset)).await
    }

    async fn purge_through(
        &self,
        horizon: impl FnOnce(&herald_broker_core::log::PartitionLog<S>) -> Option<u64>,
    ) -> Result<RetentionStep, NodeError> {
        let (horizon, applied) = {
            let mut replica = lock(&self.replica);
            replica.drop_idle_recent();
            (horizon(replica.log()), replica.applied_index())
        };
        let (Some(horizon), Some(applied)) = (horizon, applied) else {
            return Ok(RetentionStep::Nothing);
        };
        let upto = horizon.min(applied);
        let snapshot = self
            .raft
            .metrics()
            .borrow_watched()
            .snapshot
            .map(|log_id| log_id.index);
        if snapshot.is_none_or(|index| index < upto) {
            lock(&self.replica).snapshot_at(upto);
            self.raft.trigger().snapshot().await.map_err(raft_error)?;
            return Ok(RetentionStep::Snapshot);
        }
        self.raft
            .trigger()
            .purge_log(upto)
            .await
            .map_err(raft_error)?;
        Ok(RetentionStep::Purge { upto })
    }

    /// Where the group stands, as this node knows it: the leader, the term, and on the leader
    /// how many entries each follower is behind the leader's log end (`None` until matched).
    pub fn status(&self) -> GroupStatus {
        status_of(&self.raft)
    }

    /// A watch on the group's progress here (entries applied, leaders elected): changes
    /// after this call wake [`GroupProgress::changed`].
    pub fn progress(&self) -> GroupProgress {
        GroupProgress {
            metrics: self.raft.metrics(),
        }
    }
}

/// What one step of [`PartitionGroup::enforce_retention`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionStep {
    /// Nothing is past retention (or nothing applied yet).
    Nothing,
    /// A snapshot was asked for; the purge comes at a later step.
    Snapshot,
    /// A purge up to entry `upto` was asked for.
    Purge { upto: u64 },
}

/// See [`PartitionGroup::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// Each follower and the entries it is behind (only on the leader).
    pub followers: Vec<(u64, Option<u64>)>,
    /// Why the group stopped on this node (its storage failed), until it is restarted.
    pub stopped: Option<String>,
}

/// Where `raft`'s group stands, as this node knows it (see [`PartitionGroup::status`]).
fn status_of<S: Storage + Clone + 'static>(raft: &GroupRaft<S>) -> GroupStatus {
    let metrics = raft.metrics().borrow_watched().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let followers = metrics
        .replication
        .as_ref()
        .map(|replication| {
            replication
                .iter()
                .filter(|(node, _)| **node != metrics.id)
                .map(|(node, matched)| {
                    let behind = matched
                        .as_ref()
                        .map(|matched| last.saturating_sub(matched.index));
                    (*node, behind)
                })
                .collect()
        })
        .unwrap_or_default();
    GroupStatus {
        leader: metrics.current_leader,
        term: metrics.current_term,
        followers,
        stopped: metrics
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string),
    }
}

/// See [`PartitionGroup::progress`].
pub struct GroupProgress {
    metrics: openraft::type_config::alias::WatchReceiverOf<
        TypeConfig,
        openraft::RaftMetrics<TypeConfig>,
    >,
}

impl GroupProgress {
    /// Waits until the group changed since the last call (or since the watch was taken), or
    /// `timeout` passes.
    pub async fn changed(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.metrics.changed()).await;
    }
}

struct Shared<S: Storage + Clone + 'static> {
    config: NodeConfig,
    groups: Arc<Groups<S>>,
    peers: Arc<Peers>,
    store: Arc<ReplicaStore<S>>,
    partitions: Mutex<HashMap<(String, u32), PartitionGroup<S>>>,
    /// Held while groups start or stop: the metadata follower and the steward both do, and
    /// a replica must never be opened by two groups at once.
    reconciling: tokio::sync::Mutex<()>,
    /// The controller's group on this node: replaced when it starts again after a storage
    /// failure (see [`restart_controller`]), which also counts up `controller_restarts`.
    controller: Mutex<ControllerGroup<S>>,
    controller_restarts: watch::Sender<u64>,
}

impl<S: Storage + Clone + 'static> Shared<S> {
    fn controller(&self) -> ControllerGroup<S> {
        lock(&self.controller).clone()
    }
}

/// The controller's Raft on a node and its replica (which the metadata follower reads).
struct ControllerGroup<S: Storage + Clone + 'static> {
    raft: GroupRaft<S>,
    replica: Arc<Mutex<Replica<S>>>,
}

impl<S: Storage + Clone + 'static> Clone for ControllerGroup<S> {
    fn clone(&self) -> Self {
        Self {
            raft: self.raft.clone(),
            replica: self.replica.clone(),
        }
    }
}

/// Opens the controller's replica (its commits kept: a restarted node has its metadata image
/// from its own log at once) and starts its group, served through `groups`.
async fn open_controller<S: Storage + Clone + 'static>(
    config: &NodeConfig,
    groups: &Groups<S>,
    peers: &Arc<Peers>,
    store: &ReplicaStore<S>,
) -> Result<ControllerGroup<S>, NodeError> {
    let replica = store.open_controller()?.keep_commits();
    let (log, state_machine, replica) = replica.into_raft_storage();
    let raft_config = group_config(CONTROLLER_GROUP, config.timing)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let raft = GroupRaft::new(
        config.id,
        Arc::new(raft_config),
        GroupNetwork::new(CONTROLLER_GROUP, peers.clone()),
        log,
        state_machine,
    )
    .await
    .map_err(raft_error)?;
    groups.insert(CONTROLLER_GROUP, raft.clone())?;
    Ok(ControllerGroup { raft, replica })
}

/// A running cluster node (see the module documentation).
pub struct Node<S: Storage + Clone + 'static> {
    shared: Arc<Shared<S>>,
    image: watch::Receiver<Arc<ClusterImage>>,
    follower: tokio::task::JoinHandle<()>,
    balancer: tokio::task::JoinHandle<()>,
    steward: tokio::task::JoinHandle<()>,
    /// Why the cluster refused to register this node (it was removed), once it did.
    refused: watch::Receiver<Option<String>>,
}

/// How often a node checks whether it leads partitions whose preferred leader (the first
/// replica the controller assigned) could lead them instead.
pub const BALANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Hands the lead of every partition this node leads but is not the preferred leader of to
/// that preferred leader, once it has every entry (a transfer to a follower behind would
/// stall the partition while it catches up). Leaders follow election luck otherwise: after a
/// failover the restarted node leads nothing, and one node may end up leading everything.
async fn balance<S: Storage + Clone + 'static>(shared: Arc<Shared<S>>) {
    let me = shared.config.id;
    loop {
        tokio::time::sleep(BALANCE_INTERVAL).await;
        let groups: Vec<PartitionGroup<S>> = lock(&shared.partitions).values().cloned().collect();
        for group in groups {
            let Some(&preferred) = group.replicas.first() else {
                continue;
            };
            if preferred == me {
                continue;
            }
            let status = group.status();
            if status.leader != Some(me) {
                continue;
            }
            let caught_up = status
                .followers
                .iter()
                .any(|(node, behind)| *node == preferred && *behind == Some(0));
            if caught_up {
                let _ = group.raft.trigger().transfer_leader(preferred).await;
            }
        }
    }
}

fn group_name(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

fn raft_error(error: impl std::fmt::Display) -> NodeError {
    NodeError::Raft(error.to_string())
}

impl<S: Storage + Clone + 'static> Node<S> {
    /// Starts the node: its controller replica and group (served through `groups`, reached
    /// through `peers`), the metadata follower, and its registration in the cluster (in the
    /// background: it needs a controller leader).
    pub async fn start(
        config: NodeConfig,
        groups: Arc<Groups<S>>,
        peers: Arc<Peers>,
        store: Arc<ReplicaStore<S>>,
    ) -> Result<Self, NodeError> {
        let raft_addr = config
            .peers
            .get(&config.id)
            .cloned()
            .ok_or(NodeError::NotAPeer(config.id))?;
        let controller = open_controller(&config, &groups, &peers, &store).await?;
        let members: BTreeMap<u64, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        if !config.join {
            initialize(&controller.raft, members).await?;
        }

        let shared = Arc::new(Shared {
            config,
            groups,
            peers,
            store,
            partitions: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            controller: Mutex::new(controller),
            controller_restarts: watch::Sender::new(0),
        });
        let (publish, image) = watch::channel(Arc::new(ClusterImage::default()));
        let follower = tokio::spawn(follow(shared.clone(), publish));
        let balancer = tokio::spawn(balance(shared.clone()));
        let steward = tokio::spawn(steward(Proposer {
            shared: shared.clone(),
            image: image.clone(),
        }));
        let (refusal, refused) = watch::channel(None);
        let node = Self {
            shared,
            image,
            follower,
            balancer,
            steward,
            refused,
        };
        let registration = Command::RegisterNode(NodeInfo {
            id: node.shared.config.id,
            broker_addr: node.shared.config.broker_addr.clone(),
            raft_addr,
        });
        let proposer = node.proposer();
        let id = node.shared.config.id;
        // Until it is in: clients learn this node's address (new after a restart on another
        // port) from the registration. A node removed from the cluster is refused: by the
        // controller's answer, or by its own copy of the metadata naming it removed (a
        // removed node no longer receives the controller's log, so it never learns the
        // answer to a registration it sends; one that is committed is not sent again).
        tokio::spawn(async move {
            let mut image = proposer.image.clone();
            let removed = |image: &ClusterImage| {
                image
                    .removed()
                    .contains(&id)
                    .then(|| herald_broker_core::cluster::CommandError::NodeRemoved(id).to_string())
            };
            let mut committed: Option<i64> = None;
            loop {
                let known = image.borrow_and_update().clone();
                if let Some(refused) = removed(&known) {
                    tracing::error!(%refused, "the cluster refused to register this node");
                    let _ = refusal.send(Some(refused));
                    return;
                }
                if let Some(offset) = committed {
                    match known.outcome(offset) {
                        Some(Outcome::Refused(refused)) => {
                            tracing::error!(%refused, "the cluster refused to register this node");
                            let _ = refusal.send(Some(refused.to_string()));
                            return;
                        }
                        Some(_) => return,
                        None if known.next_offset() > offset => return,
                        None => {
                            let _ = tokio::time::timeout(PROPOSE_TIMEOUT, image.changed()).await;
                            continue;
                        }
                    }
                }
                match proposer.propose(&registration).await {
                    Ok(Outcome::Refused(refused)) => {
                        tracing::error!(%refused, "the cluster refused to register this node");
                        let _ = refusal.send(Some(refused.to_string()));
                        return;
                    }
                    Ok(_) => return,
                    Err(NodeError::NotAppliedHere { offset }) => {
                        tracing::warn!(
                            offset,
                            "this node's registration is committed; waiting to learn its outcome"
                        );
                        committed = Some(offset);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "registering this node with the cluster failed; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(node)
    }

    /// Why the cluster refused to register this node (a removed node's id is never taken
    /// again), once it did: such a node must stop, it is no longer part of the cluster.
    pub fn refused(&self) -> watch::Receiver<Option<String>> {
        self.refused.clone()
    }

    /// The metadata image as this node has applied it (it changes: `changed().await`).
    pub fn image(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image.clone()
    }

    /// The group of `topic`'s `partition`, if this node holds a replica of it.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<PartitionGroup<S>> {
        lock(&self.shared.partitions)
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Every partition group this node holds a replica of, with its topic and partition.
    pub fn partitions(&self) -> Vec<(String, u32, PartitionGroup<S>)> {
        lock(&self.shared.partitions)
            .iter()
            .map(|((topic, partition), group)| (topic.clone(), *partition, group.clone()))
            .collect()
    }

    /// The controller's Raft on this node (another one after it restarted).
    pub fn controller(&self) -> GroupRaft<S> {
        self.shared.controller().raft
    }

    /// Whether the controller, as this node knows it, still counts `node` among its members
    /// (or is changing its members): a removed node is gone once this is false.
    pub fn controller_holds(&self, node: u64) -> bool {
        let controller = self.controller();
        let metrics = controller.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        membership.get_joint_config().len() > 1 || membership.nodes().any(|(id, _)| *id == node)
    }

    /// Node `node`'s Raft address: configured in this node's peers, or as it registered.
    pub fn raft_addr(&self, node: u64) -> Option<String> {
        raft_addr(&self.shared, &self.image, node)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.shared.config.id
    }

    fn proposer(&self) -> Proposer<S> {
        Proposer {
            shared: self.shared.clone(),
            image: self.image.clone(),
        }
    }

    /// Puts `command` in the controller's log and waits until this node applied it.
    pub async fn propose(&self, command: &Command) -> Result<Outcome, NodeError> {
        self.proposer().propose(command).await
    }

    /// Stops every group of this node and the metadata follower.
    pub async fn shutdown(&self) {
        self.follower.abort();
        self.balancer.abort();
        self.steward.abort();
        let partitions: Vec<_> = lock(&self.shared.partitions).drain().collect();
        for ((topic, partition), group) in partitions {
            self.shared.groups.remove(&group_name(&topic, partition));
            let _ = group.raft.shutdown().await;
        }
        self.shared.groups.remove(CONTROLLER_GROUP);
        let _ = self.shared.controller().raft.shutdown().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Initializes a group with `members` unless it was already (every replica does this with
/// the same members; openraft refuses all but the first on a node, which is fine).
async fn initialize<S: Storage + Clone + 'static>(
    raft: &GroupRaft<S>,
    members: BTreeMap<u64, BasicNode>,
) -> Result<(), NodeError> {
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(error) => Err(raft_error(error)),
    }
}

struct Proposer<S: Storage + Clone + 'static> {
    shared: Arc<Shared<S>>,
    image: watch::Receiver<Arc<ClusterImage>>,
}

impl<S: Storage + Clone + 'static> Proposer<S> {
    async fn propose(&self, command: &Command) -> Result<Outcome, NodeError> {
        let proposal = command_proposal(command)?;
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut last_failure = String::from("no controller leader");
        let mut attempts = 0usize;
        let offset = loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Timeout(last_failure));
            }
            let controller = self.shared.controller().raft;
            let leader = controller.metrics().borrow_watched().current_leader;
            attempts += 1;
            let attempt = match leader {
                Some(leader) if leader == self.shared.config.id => controller
                    .client_write(proposal.clone())
                    .await
                    .map(|written| written.data)
                    .map_err(|e| match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                            "the leader changed".to_owned()
                        }
                        other => other.to_string(),
                    }),
                Some(leader) => match self.raft_addr(leader) {
                    None => Err(format!("the address of leader {leader} is not known")),
                    Some(addr) => self
                        .shared
                        .peers
                        .forward(leader, &addr, CONTROLLER_GROUP, &proposal, PROPOSE_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string()),
                },
                // No leader heard of yet (a joining node hears of none until it is a
                // learner): the configured peers in turn; one that leads takes it.
                None => {
                    let others: Vec<(&u64, &String)> = self
                        .shared
                        .config
                        .peers
                        .iter()
                        .filter(|(id, _)| **id != self.shared.config.id)
                        .collect();
                    match others.get(attempts % others.len().max(1)) {
                        None => Err("no controller leader yet".to_owned()),
                        Some((peer, addr)) => self
                            .shared
                            .peers
                            .forward(**peer, addr, CONTROLLER_GROUP, &proposal, PROPOSE_TIMEOUT)
                            .await
                            .map_err(|e| format!("no controller leader known; peer {peer}: {e}")),
                    }
                }
            };
            match attempt {
                Ok(applied) => break applied.base_offset,
                Err(reason) => {
                    last_failure = reason;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let mut image = self.image.clone();
        loop {
            if let Some(outcome) = image.borrow_and_update().outcome(offset) {
                return Ok(outcome.clone());
            }
            if image.borrow().next_offset() > offset {
                return Err(NodeError::Timeout(format!(
                    "the outcome of the command at offset {offset} is no longer kept"
                )));
            }
            if tokio::time::timeout_at(deadline, image.changed())
                .await
                .map_or(true, |changed| changed.is_err())
            {
                return Err(NodeError::NotAppliedHere { offset });
            }
        }
    }
}

impl<S: Storage + Clone + 'static> Proposer<S> {
    /// Node `node`'s Raft address: configured, or as it registered.
    fn raft_addr(&self, node: u64) -> Option<String> {
        raft_addr(&self.shared, &self.image, node)
    }
}

/// Node `node`'s Raft address: configured, or as it registered.
fn raft_addr<S: Storage + Clone + 'static>(
    shared: &Shared<S>,
    image: &watch::Receiver<Arc<ClusterImage>>,
    node: u64,
) -> Option<String> {
    shared.config.peers.get(&node).cloned().or_else(|| {
        image
            .borrow()
            .nodes()
            .get(&node)
            .map(|info| info.raft_addr.clone())
    })
}

/// A command as the one-record batch proposed to the controller.
fn command_proposal(command: &Command) -> Result<Proposal, NodeError> {
    record_proposal(COMMAND_KEY, &command.encode())
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Folds the controller's committed records into the image, publishes it, and starts or
/// stops this node's partition groups to match.
async fn follow<S: Storage + Clone + 'static>(
    shared: Arc<Shared<S>>,
    publish: watch::Sender<Arc<ClusterImage>>,
) {
    let mut image = ClusterImage::default();
    let mut restarts = shared.controller_restarts.subscribe();
    loop {
        // The controller as it runs now; again after each restart (the image goes on from
        // the offset it reached: the restarted replica holds the same log).
        let ControllerGroup { raft, replica } = shared.controller();
        let mut applied = raft.metrics();
        drop(raft);
        loop {
            if fold(&replica, &mut image) {
                publish.send_replace(Arc::new(image.clone()));
                reconcile(&shared, &image).await;
            }
            tokio::select! {
                changed = applied.changed() => {
                    // This Raft is gone: wait for the one started in its place.
                    if changed.is_err() {
                        if restarts.changed().await.is_err() {
                            return;
                        }
                        break;
                    }
                }
                restarted = restarts.changed() => {
                    if restarted.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Applies the controller's committed records after the image's offset; whether any was.
fn fold<S: Storage + Clone + 'static>(
    replica: &Mutex<Replica<S>>,
    image: &mut ClusterImage,
) -> bool {
    let from = image.next_offset();
    let next = read_committed(replica, from, |offset, record| match record {
        Committed::Control => image.pass(offset + 1),
        Committed::Record(record) => {
            let command = Some(record)
                .filter(|r| r.key == Some(COMMAND_KEY))
                .and_then(|r| r.value)
                .map(Command::decode);
            match command {
                Some(Ok(command)) => {
                    image.apply(offset, &command);
                }
                _ => {
                    tracing::warn!(offset, "an unreadable cluster metadata record is passed");
                    image.pass(offset + 1);
                }
            }
        }
        Committed::Unreadable => {
            tracing::warn!(offset, "an unreadable cluster metadata record is passed");
            image.pass(offset + 1);
        }
    });
    next > from
}

/// One committed offset as [`read_committed`] hands it over.
pub enum Committed<'a> {
    /// The last offset of a control batch (openraft's own entries: nothing to apply).
    Control,
    Record(herald_wire::batch::RecordView<'a>),
    /// A record that does not decode (passed over).
    Unreadable,
}

/// Hands every committed offset of `replica` from `from` (or its log start, if later) up to
/// its high watermark to `visit`, in order: records, and each control batch once (at its last
/// offset). The offset after the last one handed over (`from` if none).
pub fn read_committed<S: Storage + Clone + 'static>(
    replica: &Mutex<Replica<S>>,
    from: i64,
    mut visit: impl FnMut(i64, Committed<'_>),
) -> i64 {
    let mut next = from;
    loop {
        let replica = lock(replica);
        let high_watermark = replica.high_watermark();
        let start = next.max(replica.log().log_start_offset());
        if start >= high_watermark {
            return next;
        }
        let read = match replica.log().read(start, COMMITTED_READ_BYTES) {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, offset = start, "reading committed records failed");
                return next;
            }
        };
        drop(replica);
        if read.bytes.is_empty() {
            return next;
        }
        for view in batches(&read.bytes) {
            let Ok(view) = view else {
                tracing::warn!(offset = start, "a damaged batch among committed records");
                return next;
            };
            if view.base_offset() >= high_watermark {
                return next;
            }
            if view.next_offset() <= next {
                continue;
            }
            if view.is_control() {
                visit(view.next_offset() - 1, Committed::Control);
                next = view.next_offset();
                continue;
            }
            for (i, record) in view.records().enumerate() {
                let offset = view.base_offset() + i as i64;
                if offset < next {
                    continue;
                }
                match record {
                    Ok(record) => visit(offset, Committed::Record(record)),
                    Err(_) => visit(offset, Committed::Unreadable),
                }
            }
            next = view.next_offset();
        }
    }
}

/// A one-record batch (key, value) as a proposal, its append time stamped now.
pub fn record_proposal(key: &[u8], value: &[u8]) -> Result<Proposal, NodeError> {
    records_proposal(&[(key, value)])
}

/// A batch of `records` (key, value) as one proposal, its append time stamped now.
pub fn records_proposal(records: &[(&[u8], &[u8])]) -> Result<Proposal, NodeError> {
    let mut writer = BatchWriter::new();
    for (key, value) in records {
        writer
            .push(0, Some(key), Some(value), std::iter::empty())
            .map_err(|e| NodeError::Encode(e.to_string()))?;
    }
    let mut batch = writer
        .finish(None)
        .map_err(|e| NodeError::Encode(e.to_string()))?;
    batch::stamp(&mut batch, 0, wall_clock_ms());
    Ok(Proposal::new(batch))
}

/// Starts the groups of the partitions this node holds and stops (and removes the replicas
/// of) those it no longer holds: topics gone or created again, partitions moved away.
async fn reconcile<S: Storage + Clone + 'static>(shared: &Shared<S>, image: &ClusterImage) {
    let _reconciling = shared.reconciling.lock().await;
    let me = shared.config.id;
    let gone: Vec<(String, u32)> = lock(&shared.partitions)
        .iter()
        .filter(|((name, partition), group)| {
            image.topics().get(name).is_none_or(|topic| {
                topic.id != group.topic_id || !topic.holders(*partition).contains(&me)
            })
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in gone {
        let removed = lock(&shared.partitions).remove(&key);
        if let Some(group) = removed {
            let name = group_name(&key.0, key.1);
            shared.groups.remove(&name);
            let _ = group.raft.shutdown().await;
            drop(group);
            match shared.store.remove(&name) {
                Ok(()) => {
                    tracing::info!(group = %name, "a replica this node no longer holds is removed")
                }
                Err(error) => tracing::warn!(group = %name, %error, "removing a replica failed"),
            }
        }
    }
    for (name, topic) in image.topics() {
        for (partition, replicas) in topic.replicas.iter().enumerate() {
            let partition = partition as u32;
            if !topic.holders(partition).contains(&me) {
                continue;
            }
            if let Some(group) = lock(&shared.partitions).get_mut(&(name.clone(), partition)) {
                group.replicas.clone_from(replicas);
                continue;
            }
            match start_partition(shared, image, name, partition, topic).await {
                Ok((raft, replica)) => {
                    lock(&shared.partitions).insert(
                        (name.clone(), partition),
                        PartitionGroup {
                            raft,
                            replica,
                            replicas: replicas.clone(),
                            topic_id: topic.id,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(topic = %name, partition, %error, "starting a partition replica failed")
                }
            }
        }
    }
}

/// The members a partition's group is initialized with, if this node initializes it: only
/// the replicas the topic was created with, and only while the partition never moved (a
/// replica a move added, or a founder whose replica was lost since, joins the running
/// group instead).
fn founding_members(
    image: &ClusterImage,
    topic: &TopicImage,
    partition: u32,
    me: u64,
) -> Option<BTreeMap<u64, BasicNode>> {
    let founders = topic.founders.get(partition as usize)?;
    let replicas = topic.replicas.get(partition as usize)?;
    if !founders.contains(&me)
        || !same_nodes(founders, replicas)
        || topic.moves.contains_key(&partition)
    {
        return None;
    }
    founders
        .iter()
        .map(|id| {
            image
                .nodes()
                .get(id)
                .map(|node| (*id, BasicNode::new(node.raft_addr.clone())))
        })
        .collect()
}

async fn start_partition<S: Storage + Clone + 'static>(
    shared: &Shared<S>,
    image: &ClusterImage,
    name: &str,
    partition: u32,
    topic: &TopicImage,
) -> Result<(GroupRaft<S>, Arc<Mutex<Replica<S>>>), NodeError> {
    let group = group_name(name, partition);
    // After a restart the replica serves consumers up to where it was a moment before at
    // once, not from nothing until a leader is heard.
    let replica = shared
        .store
        .open_partition(&group, topic)?
        .keep_commits_every(COMMIT_KEEP_INTERVAL_MS);
    let (log, state_machine, shared_replica) = replica.into_raft_storage();
    let raft_config =
        group_config(&group, shared.config.timing).map_err(|e| NodeError::Config(e.to_string()))?;
    let raft = GroupRaft::new(
        shared.config.id,
        Arc::new(raft_config),
        GroupNetwork::new(&group, shared.peers.clone()),
        log,
        state_machine,
    )
    .await
    .map_err(raft_error)?;
    shared.groups.insert(&group, raft.clone())?;
    if let Some(members) = founding_members(image, topic, partition, shared.config.id) {
        initialize(&raft, members).await?;
    }
    Ok((raft, shared_replica))
}

/// How often the steward looks for membership work (and at once after an image change).
pub const STEWARD_INTERVAL: Duration = Duration::from_millis(500);
/// A new replica is made a voter once it is at most this many entries behind the leader.
pub const MOVE_CATCH_UP_ENTRIES: u64 = 64;

/// How long a partition group whose Raft stopped (openraft stops a group whose log store
/// failed a write or a sync: a full disk, a failed fsync) waits before it is started again
/// from its storage, and between two tries.
pub const GROUP_RESTART_DELAY: Duration = Duration::from_secs(2);

/// Membership work, on whichever groups this node leads, one change at a time: the
/// controller's leader adds every registered node that is not a member as a learner; a
/// partition's leader carries out the image's move of that partition (see
/// [`move_partition`]). Also restarts partition groups that stopped on a storage failure
/// (see [`restart_stopped`]).
async fn steward<S: Storage + Clone + 'static>(proposer: Proposer<S>) {
    let mut image = proposer.image.clone();
    let mut stopped = HashMap::new();
    let mut controller_stopped = None;
    loop {
        let _ = tokio::time::timeout(STEWARD_INTERVAL, image.changed()).await;
        let current = image.borrow_and_update().clone();
        restart_controller(&proposer.shared, &mut controller_stopped).await;
        restart_stopped(&proposer.shared, &current, &mut stopped).await;
        let me = proposer.shared.config.id;
        let controller_raft = proposer.shared.controller().raft;
        let controller = controller_raft.metrics().borrow_watched().clone();
        if controller.current_leader == Some(me) {
            let members: BTreeSet<u64> = controller
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            change_controller_members(&controller_raft, &current).await;
            for (id, node) in current.nodes() {
                if members.contains(id) {
                    continue;
                }
                match controller_raft
                    .add_learner(*id, BasicNode::new(node.raft_addr.clone()), false)
                    .await
                {
                    Ok(_) => tracing::info!(node = id, "a registered node follows the controller"),
                    Err(error) => {
                        tracing::warn!(node = id, %error, "adding a controller learner failed")
                    }
                }
            }
        }
        let groups: Vec<(String, u32, PartitionGroup<S>)> = lock(&proposer.shared.partitions)
            .iter()
            .map(|((topic, partition), group)| (topic.clone(), *partition, group.clone()))
            .collect();
        for (name, partition, group) in groups {
            let Some(topic) = current
                .topics()
                .get(&name)
                .filter(|t| t.id == group.topic_id)
            else {
                continue;
            };
            if group.leader() != Some(me) {
                continue;
            }
            let Some(target) = topic.moves.get(&partition) else {
                drop_stray_learners(&group, &topic.holders(partition), &name, partition).await;
                continue;
            };
            if let Err(error) = move_partition(
                &proposer, &current, &name, partition, topic.id, target, &group,
            )
            .await
            {
                tracing::warn!(topic = %name, partition, %error, "a partition move step failed");
            }
        }
    }
}

/// One change of the controller's members this node (its leader) makes, see
/// [`plan_controller_change`].
async fn change_controller_members<S: Storage + Clone + 'static>(
    raft: &GroupRaft<S>,
    image: &ClusterImage,
) {
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id))
        .collect();
    let caught_up: BTreeSet<u64> = status_of(raft)
        .followers
        .into_iter()
        .filter(|(_, behind)| behind.is_some_and(|b| b <= MOVE_CATCH_UP_ENTRIES))
        .map(|(node, _)| node)
        .collect();
    let joint = membership.get_joint_config().len() > 1;
    let Some(change) = plan_controller_change(&voters, &learners, image, &caught_up, joint) else {
        return;
    };
    let changing = async {
        match &change {
            ControllerChange::Voters(next) => raft.change_membership(next.clone(), false).await,
            ControllerChange::RemoveLearners(gone) => {
                raft.change_membership(openraft::ChangeMembers::RemoveNodes(gone.clone()), false)
                    .await
            }
        }
    };
    // Bounded: the steward also restarts stopped groups and carries moves on.
    match tokio::time::timeout(PROPOSE_TIMEOUT, changing).await {
        Ok(Ok(_)) => tracing::info!(?change, "the controller's members changed"),
        Ok(Err(error)) => {
            tracing::warn!(?change, %error, "changing the controller's members failed")
        }
        Err(_) => tracing::warn!(
            ?change,
            "changing the controller's members did not commit within {PROPOSE_TIMEOUT:?}"
        ),
    }
}

/// A change of the controller's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerChange {
    /// These become the voters (a removed voter leaves the members).
    Voters(BTreeSet<u64>),
    /// These learners (removed nodes) leave the members.
    RemoveLearners(BTreeSet<u64>),
}

/// What the controller's leader changes next in the controller's members, given its
/// `voters` and `learners`, the learners `caught_up` with it and whether a change is under
/// way (`joint`: then nothing). Removed nodes leave; while fewer than [`CONTROLLER_VOTERS`]
/// voters remain and registered learners caught up, the lowest ids among them become voters.
/// Founding voters not registered yet stay (only a removal takes a voter out), and the
/// voters never become empty.
pub fn plan_controller_change(
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
    image: &ClusterImage,
    caught_up: &BTreeSet<u64>,
    joint: bool,
) -> Option<ControllerChange> {
    if joint {
        return None;
    }
    let removed = image.removed();
    let mut next: BTreeSet<u64> = voters.difference(removed).copied().collect();
    let wanted = CONTROLLER_VOTERS.min(image.nodes().len());
    let registered = |id: &&u64| image.nodes().contains_key(id);
    let candidates = learners
        .iter()
        .filter(registered)
        .filter(|id| caught_up.contains(id));
    for id in candidates {
        if next.len() >= wanted {
            break;
        }
        next.insert(*id);
    }
    // A removed voter leaves only with its replacement (a registered learner that has not
    // caught up yet is waited for): fewer voters would leave the controller one failure
    // from losing its majority. With no learner to take the place, it leaves alone.
    let replacement_pending = next.len() < wanted
        && learners
            .iter()
            .filter(registered)
            .any(|id| !next.contains(id));
    if replacement_pending && next.len() < voters.len() {
        return None;
    }
    if !next.is_empty() && next != *voters {
        return Some(ControllerChange::Voters(next));
    }
    let gone: BTreeSet<u64> = learners.intersection(removed).copied().collect();
    (!gone.is_empty()).then_some(ControllerChange::RemoveLearners(gone))
}

/// Starts the controller's group again, from its storage, once its Raft stopped (a storage
/// failure: a full disk, a failed fsync) at least [`GROUP_RESTART_DELAY`] ago (`stopped`:
/// when it was first seen stopped), and again after each delay while it cannot be opened.
/// The group catches up from its leader; the metadata follower reads the new replica from
/// where its image is.
async fn restart_controller<S: Storage + Clone + 'static>(
    shared: &Shared<S>,
    stopped: &mut Option<tokio::time::Instant>,
) {
    let current = shared.controller();
    if current
        .raft
        .metrics()
        .borrow_watched()
        .running_state
        .is_ok()
    {
        *stopped = None;
        return;
    }
    let now = tokio::time::Instant::now();
    let since = *stopped.get_or_insert(now);
    if now.duration_since(since) < GROUP_RESTART_DELAY {
        return;
    }
    tracing::warn!(
        "the controller replica stopped on a storage failure: starting it again from its storage"
    );
    // Under the lock groups start and stop by; the controller's entry in the routing table
    // is replaced by the new group's, never removed (a table full of partition groups would
    // then refuse it back).
    let _reconciling = shared.reconciling.lock().await;
    let _ = current.raft.shutdown().await;
    drop(current);
    match open_controller(&shared.config, &shared.groups, &shared.peers, &shared.store).await {
        Ok(group) => {
            *lock(&shared.controller) = group;
            shared.controller_restarts.send_modify(|count| *count += 1);
            *stopped = None;
        }
        Err(error) => {
            tracing::warn!(%error, "starting the controller replica again failed; trying again");
            *stopped = Some(now);
        }
    }
}

/// Starts again, from its storage, each partition group whose Raft stopped at least
/// [`GROUP_RESTART_DELAY`] ago (`stopped`: when each was first seen stopped), and every
/// partition this node holds whose group is not running (a start that failed, as on a disk
/// still full), at most once per delay. Reopening recovers the log (a torn tail is cut, the
/// fence a failed write set is gone) and the group catches up from its leader: a disk freed
/// up brings the replica back without a process restart.
async fn restart_stopped<S: Storage + Clone + 'static>(
    shared: &Shared<S>,
    image: &ClusterImage,
    stopped: &mut HashMap<(String, u32), tokio::time::Instant>,
) {
    let now = tokio::time::Instant::now();
    let dead: Vec<(String, u32)> = lock(&shared.partitions)
        .iter()
        .filter(|(_, group)| group.raft.metrics().borrow_watched().running_state.is_err())
        .map(|(key, _)| key.clone())
        .collect();
    stopped.retain(|key, _| dead.contains(key) || !lock(&shared.partitions).contains_key(key));
    let mut due = false;
    let reconciling = shared.reconciling.lock().await;
    for key in dead {
        let since = *stopped.entry(key.clone()).or_insert(now);
        if now.duration_since(since) < GROUP_RESTART_DELAY {
            continue;
        }
        let Some(group) = lock(&shared.partitions).remove(&key) else {
            continue;
        };
        let name = group_name(&key.0, key.1);
        tracing::warn!(group = %name, "a partition replica stopped on a storage failure: starting it again from its storage");
        shared.groups.remove(&name);
        let _ = group.raft.shutdown().await;
        stopped.insert(key, now);
        due = true;
    }
    drop(reconciling);
    let me = shared.config.id;
    let missing = image.topics().iter().any(|(name, topic)| {
        (0..topic.replicas.len() as u32).any(|partition| {
            topic.holders(partition).contains(&me)
                && !lock(&shared.partitions).contains_key(&(name.clone(), partition))
                && stopped
                    .get(&(name.clone(), partition))
                    .is_none_or(|at| now.duration_since(*at) >= GROUP_RESTART_DELAY)
        })
    });
    if due || missing {
        reconcile(shared, image).await;
        let running = lock(&shared.partitions);
        for (key, at) in stopped.iter_mut() {
            if !running.contains_key(key) {
                *at = now;
            }
        }
    }
}

/// Removes from a group this node leads the learners that hold no replica of it any more
/// (a move called off): the leader stops sending them entries.
async fn drop_stray_learners<S: Storage + Clone + 'static>(
    group: &PartitionGroup<S>,
    holders: &[u64],
    name: &str,
    partition: u32,
) {
    let metrics = group.raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let stray: BTreeSet<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id) && !holders.contains(id))
        .collect();
    if stray.is_empty() {
        return;
    }
    match group
        .raft
        .change_membership(openraft::ChangeMembers::RemoveNodes(stray.clone()), false)
        .await
    {
        Ok(_) => {
            tracing::info!(topic = name, partition, learners = ?stray, "learners of a called-off move removed")
        }
        Err(error) => tracing::warn!(topic = name, partition, %error, "removing learners failed"),
    }
}

/// One step of moving a partition this node leads to `target`: once the committed
/// membership's voters are the target, the move is reported finished; else the new
/// replicas are added as learners, and once each is at most [`MOVE_CATCH_UP_ENTRIES`]
/// behind, the voters are replaced (joint consensus, returning once the final membership is
/// committed; a leader not among them hands its lead on after that).
async fn move_partition<S: Storage + Clone + 'static>(
    proposer: &Proposer<S>,
    image: &ClusterImage,
    name: &str,
    partition: u32,
    id: TopicId,
    target: &[u64],
    group: &PartitionGroup<S>,
) -> Result<(), NodeError> {
    let wanted: BTreeSet<u64> = target.iter().copied().collect();
    let finish = Command::FinishMove {
        name: name.to_owned(),
        id,
        partition,
        replicas: target.to_vec(),
    };
    let metrics = group.raft.metrics().borrow_watched().clone();
    let committed = metrics.committed_membership_config.membership().clone();
    let committed_voters: BTreeSet<u64> = committed.voter_ids().collect();
    if committed.get_joint_config().len() == 1 && committed_voters == wanted {
        proposer.propose(&finish).await?;
        return Ok(());
    }
    let members: BTreeSet<u64> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    for node in wanted.difference(&members) {
        let addr = image
            .nodes()
            .get(node)
            .map(|info| info.raft_addr.clone())
            .ok_or_else(|| NodeError::Raft(format!("node {node} is not registered")))?;
        group
            .raft
            .add_learner(*node, BasicNode::new(addr), false)
            .await
            .map_err(raft_error)?;
        tracing::info!(
            topic = name,
            partition,
            node,
            "a new replica is added as a learner"
        );
    }
    let status = group.status();
    let me = proposer.shared.config.id;
    let caught_up = wanted.iter().filter(|node| **node != me).all(|node| {
        status.followers.iter().any(|(follower, behind)| {
            follower == node && behind.is_some_and(|b| b <= MOVE_CATCH_UP_ENTRIES)
        })
    });
    if !caught_up {
        return Ok(());
    }
    group
        .raft
        .change_membership(wanted, false)
        .await
        .map_err(raft_error)?;
    tracing::info!(topic = name, partition, replicas = ?target, "the partition's voters are its new replicas");
    proposer.propose(&finish).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(registered: &[u64], removed: &[u64]) -> ClusterImage {
        let mut image = ClusterImage::default();
        let mut offset = 0;
        let mut apply = |image: &mut ClusterImage, command: Command| {
            image.apply(offset, &command);
            offset += 1;
        };
        for id in registered.iter().chain(removed) {
            let node = NodeInfo {
                id: *id,
                broker_addr: format!("127.0.0.1:{}", 9000 + id),
                raft_addr: format!("127.0.0.1:{}", 9100 + id),
            };
            apply(&mut image, Command::RegisterNode(node));
        }
        for id in removed {
            apply(&mut image, Command::RemoveNode { id: *id });
        }
        image
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Removed voters leave (a caught-up learner takes the place), learners become voters
    /// only while fewer than three vote and only once caught up, removed learners leave,
    /// nothing changes during a joint change, and voters that did not register yet stay.
    #[test]
    fn the_controller_keeps_three_voters_and_drops_removed_nodes() {
        let plan = |voters: &[u64], learners: &[u64], image: &ClusterImage, caught: &[u64]| {
            plan_controller_change(&set(voters), &set(learners), image, &set(caught), false)
        };
        let removed_1 = image(&[2, 3, 4], &[1]);
        assert_eq!(
            plan(&[1, 2, 3], &[4], &removed_1, &[2, 3, 4]),
            Some(ControllerChange::Voters(set(&[2, 3, 4])))
        );
        assert_eq!(
            plan(&[1, 2, 3], &[4], &removed_1, &[2, 3]),
            None,
            "the removed voter waits for its replacement to catch up"
        );
        assert_eq!(
            plan(&[2, 3], &[4], &removed_1, &[2, 3, 4]),
            Some(ControllerChange::Voters(set(&[2, 3, 4])))
        );
        assert_eq!(
            plan(&[1, 2, 3], &[], &image(&[2, 3], &[1]), &[2, 3]),
            Some(ControllerChange::Voters(set(&[2, 3]))),
            "with no learner to take its place a removed voter leaves alone"
        );
        assert_eq!(plan(&[2, 3, 4], &[], &removed_1, &[2, 3, 4]), None);
        let grown = image(&[1, 2, 3, 4, 5], &[]);
        assert_eq!(
            plan(&[1], &[2, 3, 4, 5], &grown, &[3, 4, 5]),
            Some(ControllerChange::Voters(set(&[1, 3, 4]))),
            "a cluster grown from one node gets three voters, lowest caught-up ids first"
        );
        assert_eq!(plan(&[1, 2, 3], &[4, 5], &grown, &[2, 3, 4, 5]), None);
        assert_eq!(
            plan(&[1, 2, 3, 4, 5], &[], &grown, &[]),
            None,
            "more founding voters stay"
        );
        let starting = image(&[1], &[]);
        assert_eq!(
            plan(&[1, 2, 3], &[], &starting, &[]),
            None,
            "founding voters that did not register yet stay"
        );
        let removed_learner = image(&[1, 2, 3], &[4]);
        assert_eq!(
            plan(&[1, 2, 3], &[4], &removed_learner, &[2, 3, 4]),
            Some(ControllerChange::RemoveLearners(set(&[4])))
        );
        assert_eq!(
            plan_controller_change(&set(&[1, 2, 3]), &set(&[4]), &removed_1, &set(&[4]), true),
            None,
            "one change at a time"
        );
    }
}
