//! The cluster's metadata as a log of commands, as Kafka's KRaft keeps it: the controller
//! group replicates an internal partition whose records are [`Command`]s, and every node
//! folds the committed records, in offset order, into the same [`ClusterImage`] — nodes,
//! topics with their incarnation ids, configs and partition → replica assignment, and the
//! idempotent-producer ids ([`ProducerIdTable`]: one counter for the whole cluster, named
//! producers' epochs, owners), so ids are unique cluster-wide and every node knows whom an id
//! belongs to — the ACL entries, the same on every node (a deleted topic's literal ALLOW
//! entries go with it, as on a single broker), and the users with their SCRAM credentials.
//!
//! Pure and deterministic: [`ClusterImage::apply`] decides from the image and the command
//! alone (a refused command changes nothing and its refusal is the same on every node), so
//! no clock, no randomness, no I/O. The proposer learns what became of its command from the
//! outcome kept for its offset ([`ClusterImage::outcome`]).

use std::collections::{BTreeMap, BTreeSet};

use herald_auth::acl::{
    AclEntry, AclFilter, PatternType, Permission, ResourceType, ACLS_MAX, WILDCARD,
};

use herald_auth::scram::Credential;
use herald_auth::users::{check_name, RegistryAccess, RegistryChange, USERS_MAX};
use herald_wire::limits::{
    CREDENTIAL_TEXT_BYTES_MAX, PRODUCER_NAME_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
};
use herald_wire::messages::{put_config, read_config, TopicConfig, TopicId};
use herald_wire::security::{
    put_entries, put_filter, put_registry_change, read_entries, read_filter, read_registry_change,
};
use herald_wire::{put_node_ids, put_string, DecodeError, Reader};

use crate::producer_ids::{ProducerIdRefusal, ProducerIdTable};

/// Longest principal name a producer id's owner has.
pub const PRINCIPAL_NAME_BYTES_MAX: usize = 1024;
/// Most nodes a cluster has.
pub const NODES_MAX: usize = 64;
/// Most topics a cluster has.
pub const CLUSTER_TOPICS_MAX: usize = 10_000;
/// Outcomes kept for proposers to look up, newest; older ones are forgotten.
pub const OUTCOMES_KEPT: usize = 4_096;
/// Longest address a node registers.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// The key of every command record (its value is the command's encoding).
pub const COMMAND_KEY: &[u8] = b"herald.cluster.command";

/// A node as it registered: where clients and peers reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: u64,
    /// The client protocol's address (`host:port`).
    pub broker_addr: String,
    /// The Raft transport's address.
    pub raft_addr: String,
}

/// A change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A node joins (or changes its addresses).
    RegisterNode(NodeInfo),
    /// A topic is created with `replication_factor` replicas per partition, assigned when the
    /// command is applied.
    CreateTopic {
        name: String,
        id: TopicId,
        config: TopicConfig,
        replication_factor: u32,
    },
    /// The topic incarnation `id` of `name` is deleted.
    DeleteTopic { name: String, id: TopicId },
    /// A producer id and epoch are handed out for `name` (empty: a fresh anonymous id) to
    /// `owner` (the asking principal, with authentication on); see [`ProducerIdTable::init`].
    InitProducer { name: String, owner: Option<String> },
    /// ACL entries are added (those already there change nothing).
    AddAcls { entries: Vec<AclEntry> },
    /// The ACL entries `filter` matches are removed.
    RemoveAcls { filter: AclFilter },
    /// Partition `partition` of the topic incarnation `id` of `name` is to be held by
    /// `replicas` (the preferred leader first): a move starts. The partition's leader adds
    /// the new replicas as learners, makes the new set the group's voters, then proposes
    /// [`Command::FinishMove`].
    MovePartition {
        name: String,
        id: TopicId,
        partition: u32,
        replicas: Vec<u64>,
    },
    /// `name`'s SCRAM credential (its text form) is set, the user added if new, and its
    /// registry access changed as `registry` says.
    PutUser {
        name: String,
        credential: String,
        registry: RegistryChange,
    },
    /// The user `name` is removed.
    DeleteUser { name: String },
    /// The partition's Raft group has `replicas` as its voters: the move to them is done.
    FinishMove {
        name: String,
        id: TopicId,
        partition: u32,
        replicas: Vec<u64>,
    },
    /// Node `id` leaves the cluster for good: it must hold no replica (move them away
    /// first). The controller's leader then removes it from the controller's members,
    /// making a caught-up learner a voter in its place if the voters fall below
    /// [`CONTROLLER_VOTERS`]. Its id is never taken again.
    RemoveNode { id: u64 },
}

/// Voters the controller keeps when it has the nodes: a removed voter is replaced by a
/// learner while fewer remain (three survive the loss of one).
pub const CONTROLLER_VOTERS: usize = 3;
/// Partitions a refused node removal names (of those the node still holds).
pub const HELD_PARTITIONS_NAMED_MAX: usize = 10;

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {0} does not exist (or is another incarnation)")]
    NoSuchTopic(String),
    #[error(
        "a replication factor of {requested} needs {requested} nodes; the cluster has {nodes}"
    )]
    NotEnoughNodes { requested: u32, nodes: usize },
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("the cluster has {0} topics, the most it keeps")]
    TooManyTopics(usize),
    #[error("the cluster has {NODES_MAX} nodes, the most it keeps")]
    TooManyNodes,
    #[error("node address of {0} bytes is longer than {ADDRESS_BYTES_MAX}")]
    AddressTooLong(usize),
    #[error(transparent)]
    Producer(#[from] ProducerIdRefusal),
    #[error("invalid ACL entry: {0}")]
    InvalidAcl(String),
    #[error("the cluster has {0} ACL entries; adding these would pass {ACLS_MAX}")]
    TooManyAcls(usize),
    #[error("topic {topic} has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("invalid user: {0}")]
    InvalidUser(String),
    #[error("the cluster has no user {0}")]
    NoSuchUser(String),
    #[error("the cluster has {USERS_MAX} users, the most it keeps")]
    TooManyUsers,
    #[error("node {0} is not a registered node of the cluster")]
    UnknownNode(u64),
    #[error("node {0} is named twice among the replicas")]
    ReplicaTwice(u64),
    #[error("a partition needs at least one replica and at most {NODES_MAX}")]
    ReplicaCount,
    #[error("partition {partition} of {topic} is already moving to {target:?} (move it to its current replicas to call that off)")]
    MoveUnderWay {
        topic: String,
        partition: u32,
        target: Vec<u64>,
    },
    #[error("partition {partition} of {topic} is not moving to {replicas:?}")]
    NotMovingThere {
        topic: String,
        partition: u32,
        replicas: Vec<u64>,
    },
    #[error("node {node} still holds {count} partition replicas ({}); move them to other nodes first (herald cluster move)", named.join(", "))]
    NodeHoldsReplicas {
        node: u64,
        count: usize,
        /// The first [`HELD_PARTITIONS_NAMED_MAX`] of them, as `topic/partition`.
        named: Vec<String>,
    },
    #[error("node {0} is the cluster's last node")]
    LastNode(u64),
    #[error("node {0} was removed from the cluster; its id is not taken again (start the node under a new id)")]
    NodeRemoved(u64),
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NodeRegistered,
    /// The replicas of each partition, the preferred leader first.
    TopicCreated {
        replicas: Vec<Vec<u64>>,
    },
    TopicDeleted,
    Producer {
        id: i64,
        epoch: i16,
    },
    /// How many of the entries were not there already.
    AclsAdded(u32),
    AclsRemoved(Vec<AclEntry>),
    /// The partition moves to the replicas asked for (nothing to do when it has them).
    MoveStarted,
    MoveFinished,
    /// A move under way was called off: the partition keeps its replicas.
    MoveCancelled,
    /// Whether the user is new.
    UserPut {
        added: bool,
    },
    UserDeleted,
    NodeRemoved,
    Refused(CommandError),
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub id: TopicId,
    pub config: TopicConfig,
    /// Per partition, its replicas' node ids, the preferred leader first: the voters of its
    /// Raft group (while a move is under way, those before it).
    pub replicas: Vec<Vec<u64>>,
    /// Per partition, the replicas it was created with: they (and only they) initialize the
    /// partition's group. A replica a move added joins the existing group as a learner.
    pub founders: Vec<Vec<u64>>,
    /// The partitions being moved, and the replicas each moves to.
    pub moves: BTreeMap<u32, Vec<u64>>,
}

impl TopicImage {
    /// Every node that holds or is to hold a replica of `partition`: its replicas and, while
    /// it moves, the replicas it moves to.
    pub fn holders(&self, partition: u32) -> Vec<u64> {
        let mut holders = self
            .replicas
            .get(partition as usize)
            .cloned()
            .unwrap_or_default();
        for node in self.moves.get(&partition).into_iter().flatten() {
            if !holders.contains(node) {
                holders.push(*node);
            }
        }
        holders
    }
}

/// The cluster's metadata after the commands up to [`ClusterImage::next_offset`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    nodes: BTreeMap<u64, NodeInfo>,
    topics: BTreeMap<String, TopicImage>,
    next_offset: i64,
    outcomes: BTreeMap<i64, Outcome>,
    producers: ProducerIdTable,
    acls: BTreeSet<AclEntry>,
    /// Each user's SCRAM credential (text form) and registry access.
    users: BTreeMap<String, ClusterUser>,
    /// Nodes removed from the cluster (their ids are not taken again).
    removed: BTreeSet<u64>,
}

/// A user of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUser {
    /// The SCRAM credential, in its text form.
    pub credential: String,
    /// What the user may do on a registry that reads the cluster's users; `None`: nothing.
    pub registry: Option<RegistryAccess>,
}

impl ClusterImage {
    pub fn nodes(&self) -> &BTreeMap<u64, NodeInfo> {
        &self.nodes
    }

    /// The nodes removed from the cluster.
    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    pub fn topics(&self) -> &BTreeMap<String, TopicImage> {
        &self.topics
    }

    /// Who holds which producer id.
    pub fn producers(&self) -> &ProducerIdTable {
        &self.producers
    }

    /// The cluster's ACL entries.
    pub fn acls(&self) -> &BTreeSet<AclEntry> {
        &self.acls
    }

    /// The cluster's users: their SCRAM credentials (text form) and registry access.
    pub fn users(&self) -> &BTreeMap<String, ClusterUser> {
        &self.users
    }

    /// The offset after the last command applied.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// What became of the command at `offset`, while it is among the last
    /// [`OUTCOMES_KEPT`].
    pub fn outcome(&self, offset: i64) -> Option<&Outcome> {
        self.outcomes.get(&offset)
    }

    /// Applies the command stored at `offset` (commands are applied in offset order, each
    /// once: an offset below [`ClusterImage::next_offset`] is ignored and returns `None`).
    pub fn apply(&mut self, offset: i64, command: &Command) -> Option<&Outcome> {
        if offset < self.next_offset {
            return None;
        }
        let outcome = match self.decide(command) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        };
        self.next_offset = offset + 1;
        self.outcomes.insert(offset, outcome);
        while self.outcomes.len() > OUTCOMES_KEPT {
            self.outcomes.pop_first();
        }
        self.outcomes.get(&offset)
    }

    /// Records that the log's offsets up to `next_offset` hold no command (control records
    /// of the controller's Raft group): the image has passed them.
    pub fn pass(&mut self, next_offset: i64) {
        self.next_offset = self.next_offset.max(next_offset);
    }

    fn decide(&mut self, command: &Command) -> Result<Outcome, CommandError> {
        match command {
            Command::RegisterNode(node) => {
                for addr in [&node.broker_addr, &node.raft_addr] {
                    if addr.len() > ADDRESS_BYTES_MAX {
                        return Err(CommandError::AddressTooLong(addr.len()));
                    }
                }
                if self.removed.contains(&node.id) {
                    return Err(CommandError::NodeRemoved(node.id));
                }
                if !self.nodes.contains_key(&node.id) && self.nodes.len() >= NODES_MAX {
                    return Err(CommandError::TooManyNodes);
                }
                self.nodes.insert(node.id, node.clone());
                Ok(Outcome::NodeRegistered)
            }
            Command::CreateTopic {
                name,
                id,
                config,
                replication_factor,
            } => {
                if self.topics.contains_key(name) {
                    return Err(CommandError::TopicExists(name.clone()));
                }
                if self.topics.len() >= CLUSTER_TOPICS_MAX {
                    return Err(CommandError::TooManyTopics(self.topics.len()));
                }
                let replicas = self.assign(config.partitions, *replication_factor)?;
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        id: *id,
                        config: *config,
                        replicas: replicas.clone(),
                        founders: replicas.clone(),
                        moves: BTreeMap::new(),
                    },
                );
                Ok(Outcome::TopicCreated { replicas })
            }
            Command::DeleteTopic { name, id } => match self.topics.get(name) {
                Some(topic) if topic.id == *id => {
                    self.topics.remove(name);
                    // A topic created again under the name does not inherit its grants.
                    // Prefixed entries, `*` and DENY entries stay (removing a DENY could
                    // only open access).
                    if name != WILDCARD {
                        let grants = AclFilter {
                            resource_type: Some(ResourceType::Topic),
                            pattern_type: Some(PatternType::Literal),
                            name: Some(name.clone()),
                            permission: Some(Permission::Allow),
                            ..AclFilter::any()
                        };
                        self.acls.retain(|entry| !grants.matches(entry));
                    }
                    Ok(Outcome::TopicDeleted)
                }
                _ => Err(CommandError::NoSuchTopic(name.clone())),
            },
            Command::InitProducer { name, owner } => {
                let (id, epoch) = self.producers.init(name, owner.as_deref())?;
                Ok(Outcome::Producer { id, epoch })
            }
            Command::AddAcls { entries } => {
                for entry in entries {
                    entry
                        .validate()
                        .map_err(|e| CommandError::InvalidAcl(e.to_string()))?;
                }
                let new: BTreeSet<&AclEntry> =
                    entries.iter().filter(|e| !self.acls.contains(e)).collect();
                if self.acls.len() + new.len() > ACLS_MAX {
                    return Err(CommandError::TooManyAcls(self.acls.len()));
                }
                let added = new.len() as u32;
                self.acls.extend(new.into_iter().cloned());
                Ok(Outcome::AclsAdded(added))
            }
            Command::RemoveAcls { filter } => {
                let removed: Vec<AclEntry> = self
                    .acls
                    .iter()
                    .filter(|entry| filter.matches(entry))
                    .cloned()
                    .collect();
                for entry in &removed {
                    self.acls.remove(entry);
                }
                Ok(Outcome::AclsRemoved(removed))
            }
            Command::MovePartition {
                name,
                id,
                partition,
                replicas,
            } => {
                self.check_replicas(replicas)?;
                let topic = self.partition_of(name, *id, *partition)?;
                let current = &mut topic.replicas[*partition as usize];
                let same = same_nodes(current, replicas);
                match topic.moves.get(partition) {
                    Some(target) if target == replicas => {}
                    // Back to the replicas it has: the move is called off (the partition's
                    // leader drops the learners it added for it).
                    Some(_) if same => {
                        topic.moves.remove(partition);
                        current.clone_from(replicas);
                        return Ok(Outcome::MoveCancelled);
                    }
                    Some(target) => {
                        return Err(CommandError::MoveUnderWay {
                            topic: name.clone(),
                            partition: *partition,
                            target: target.clone(),
                        })
                    }
                    // The same replicas, perhaps another preferred leader: no data moves.
                    None if same => current.clone_from(replicas),
                    None => {
                        topic.moves.insert(*partition, replicas.clone());
                    }
                }
                Ok(Outcome::MoveStarted)
            }
            Command::PutUser {
                name,
                credential,
                registry,
            } => {
                check_name(name).map_err(|e| CommandError::InvalidUser(e.to_string()))?;
                Credential::parse(credential)
                    .map_err(|e| CommandError::InvalidUser(format!("{name}: {e}")))?;
                registry
                    .check()
                    .map_err(|e| CommandError::InvalidUser(format!("{name}: {e}")))?;
                let current = self.users.get(name);
                let added = current.is_none();
                if added && self.users.len() >= USERS_MAX {
                    return Err(CommandError::TooManyUsers);
                }
                let access = registry.apply(current.and_then(|user| user.registry.clone()));
                self.users.insert(
                    name.clone(),
                    ClusterUser {
                        credential: credential.clone(),
                        registry: access,
                    },
                );
                Ok(Outcome::UserPut { added })
            }
            Command::DeleteUser { name } => match self.users.remove(name) {
                Some(_) => Ok(Outcome::UserDeleted),
                None => Err(CommandError::NoSuchUser(name.clone())),
            },
            Command::FinishMove {
                name,
                id,
                partition,
                replicas,
            } => {
                let topic = self.partition_of(name, *id, *partition)?;
                if topic.moves.get(partition) != Some(replicas) {
                    return Err(CommandError::NotMovingThere {
                        topic: name.clone(),
                        partition: *partition,
                        replicas: replicas.clone(),
                    });
                }
                topic.moves.remove(partition);
                topic.replicas[*partition as usize].clone_from(replicas);
                Ok(Outcome::MoveFinished)
            }
            Command::RemoveNode { id } => {
                if self.removed.contains(id) {
                    return Err(CommandError::NodeRemoved(*id));
                }
                if !self.nodes.contains_key(id) {
                    return Err(CommandError::UnknownNode(*id));
                }
                if self.nodes.len() == 1 {
                    return Err(CommandError::LastNode(*id));
                }
                let held: Vec<String> = self
                    .topics
                    .iter()
                    .flat_map(|(name, topic)| {
                        (0..topic.replicas.len() as u32)
                            .filter(|p| topic.holders(*p).contains(id))
                            .map(move |p| format!("{name}/{p}"))
                    })
                    .collect();
                if !held.is_empty() {
                    return Err(CommandError::NodeHoldsReplicas {
                        node: *id,
                        count: held.len(),
                        named: held.into_iter().take(HELD_PARTITIONS_NAMED_MAX).collect(),
                    });
                }
                self.nodes.remove(id);
                self.removed.insert(*id);
                Ok(Outcome::NodeRemoved)
            }
        }
    }

    /// The topic incarnation `id` of `name`, if it has `partition`.
    fn partition_of(
        &mut self,
        name: &str,
        id: TopicId,
        partition: u32,
    ) -> Result<&mut TopicImage, CommandError> {
        let topic = self
            .topics
            .get_mut(name)
            .filter(|topic| topic.id == id)
            .ok_or_else(|| CommandError::NoSuchTopic(name.to_owned()))?;
        if partition as usize >= topic.replicas.len() {
            return Err(CommandError::NoSuchPartition {
                topic: name.to_owned(),
                partition,
                partitions: topic.replicas.len() as u32,
            });
        }
        Ok(topic)
    }

    /// Refuses a replica list that is empty, too long, names a node twice or an unknown node.
    fn check_replicas(&self, replicas: &[u64]) -> Result<(), CommandError> {
        if replicas.is_empty() || replicas.len() > NODES_MAX {
            return Err(CommandError::ReplicaCount);
        }
        let mut seen = BTreeSet::new();
        for node in replicas {
            if !seen.insert(*node) {
                return Err(CommandError::ReplicaTwice(*node));
            }
            if !self.nodes.contains_key(node) {
                return Err(CommandError::UnknownNode(*node));
            }
        }
        Ok(())
    }

    /// Replicas for `partitions` new partitions: each partition's preferred leader is the
    /// node leading the fewest partitions so far (ties: the lowest id), its followers the
    /// next nodes after it in id order, so leaders and replicas spread evenly.
    fn assign(&self, partitions: u32, factor: u32) -> Result<Vec<Vec<u64>>, CommandError> {
        if factor == 0 {
            return Err(CommandError::ZeroReplicationFactor);
        }
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        if (factor as usize) > nodes.len() {
            return Err(CommandError::NotEnoughNodes {
                requested: factor,
                nodes: nodes.len(),
            });
        }
        let mut leading: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for topic in self.topics.values() {
            for replicas in &topic.replicas {
                if let Some(count) = replicas.first().and_then(|leader| leading.get_mut(leader)) {
                    *count += 1;
                }
            }
        }
        let mut assignment = Vec::with_capacity(partitions as usize);
        for _ in 0..partitions {
            let Some((leader_at, _)) = nodes
                .iter()
                .enumerate()
                .min_by_key(|(_, node)| (leading.get(node).copied().unwrap_or(0), **node))
            else {
                return Err(CommandError::NotEnoughNodes {
                    requested: factor,
                    nodes: 0,
                });
            };
            let replicas: Vec<u64> = (0..factor as usize)
                .map(|i| nodes[(leader_at + i) % nodes.len()])
                .collect();
            if let Some(count) = leading.get_mut(&replicas[0]) {
                *count += 1;
            }
            assignment.push(replicas);
        }
        Ok(assignment)
    }
}

impl Command {
    /// The command as a record value (the record's key is [`COMMAND_KEY`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Command::RegisterNode(node) => {
                out.push(1);
                out.extend_from_slice(&node.id.to_be_bytes());
                put_string(&mut out, &node.broker_addr);
                put_string(&mut out, &node.raft_addr);
            }
            Command::CreateTopic {
                name,
                id,
                config,
                replication_factor,
            } => {
                out.push(2);
                put_string(&mut out, name);
                out.extend_from_slice(&id.0);
                put_config(&mut out, config);
                out.extend_from_slice(&replication_factor.to_be_bytes());
            }
            Command::DeleteTopic { name, id } => {
                out.push(3);
                put_string(&mut out, name);
                out.extend_from_slice(&id.0);
            }
            Command::AddAcls { entries } => {
                out.push(6);
                put_entries(&mut out, entries);
            }
            Command::RemoveAcls { filter } => {
                out.push(7);
                put_filter(&mut out, filter);
            }
            Command::MovePartition {
                name,
                id,
                partition,
                replicas,
            } => {
                out.push(8);
                put_placement(&mut out, name, id, *partition, replicas);
            }
            Command::FinishMove {
                name,
                id,
                partition,
                replicas,
            } => {
                out.push(9);
                put_placement(&mut out, name, id, *partition, replicas);
            }
            // Keep is written as before registry access existed, so that a node not yet
            // upgraded still reads every password change.
            Command::PutUser {
                name,
                credential,
                registry: RegistryChange::Keep,
            } => {
                out.push(10);
                put_string(&mut out, name);
                put_string(&mut out, credential);
            }
            Command::PutUser {
                name,
                credential,
                registry,
            } => {
                out.push(13);
                put_string(&mut out, name);
                put_string(&mut out, credential);
                put_registry_change(&mut out, registry);
            }
            Command::DeleteUser { name } => {
                out.push(11);
                put_string(&mut out, name);
            }
            Command::RemoveNode { id } => {
                out.push(12);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Command::InitProducer { name, owner } => {
                out.push(5);
                put_string(&mut out, name);
                match owner {
                    None => out.push(0),
                    Some(owner) => {
                        out.push(1);
                        put_string(&mut out, owner);
                    }
                }
            }
        }
        out
    }

    /// Reads what [`Command::encode`] wrote; any damage or trailing byte is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let command = match r.u8("command kind")? {
            1 => Command::RegisterNode(NodeInfo {
                id: r.u64("node id")?,
                broker_addr: r.string("broker address", ADDRESS_BYTES_MAX)?,
                raft_addr: r.string("raft address", ADDRESS_BYTES_MAX)?,
            }),
            2 => Command::CreateTopic {
                name: r.string("topic name", TOPIC_NAME_BYTES_MAX)?,
                id: TopicId(r.array("topic id")?),
                config: read_config(&mut r)?,
                replication_factor: r.u32("replication factor")?,
            },
            3 => Command::DeleteTopic {
                name: r.string("topic name", TOPIC_NAME_BYTES_MAX)?,
                id: TopicId(r.array("topic id")?),
            },
            // Written by the first cluster nodes: an anonymous id.
            4 => Command::InitProducer {
                name: String::new(),
                owner: None,
            },
            5 => Command::InitProducer {
                name: r.string("producer name", PRODUCER_NAME_BYTES_MAX)?,
                owner: match r.u8("producer owner presence")? {
                    0 => None,
                    1 => Some(r.string("producer owner", PRINCIPAL_NAME_BYTES_MAX)?),
                    other => {
                        return Err(DecodeError::Invalid {
                            what: "producer owner presence",
                            detail: other.to_string(),
                        })
                    }
                },
            },
            6 => Command::AddAcls {
                entries: read_entries(&mut r, ACLS_MAX)?,
            },
            7 => Command::RemoveAcls {
                filter: read_filter(&mut r)?,
            },
            8 => {
                let (name, id, partition, replicas) = read_placement(&mut r)?;
                Command::MovePartition {
                    name,
                    id,
                    partition,
                    replicas,
                }
            }
            9 => {
                let (name, id, partition, replicas) = read_placement(&mut r)?;
                Command::FinishMove {
                    name,
                    id,
                    partition,
                    replicas,
                }
            }
            // Written before users had registry access.
            10 => Command::PutUser {
                name: r.string("user name", PRINCIPAL_NAME_BYTES_MAX)?,
                credential: r.string("credential", CREDENTIAL_TEXT_BYTES_MAX)?,
                registry: RegistryChange::Keep,
            },
            13 => Command::PutUser {
                name: r.string("user name", PRINCIPAL_NAME_BYTES_MAX)?,
                credential: r.string("credential", CREDENTIAL_TEXT_BYTES_MAX)?,
                registry: read_registry_change(&mut r)?,
            },
            11 => Command::DeleteUser {
                name: r.string("user name", PRINCIPAL_NAME_BYTES_MAX)?,
            },
            12 => Command::RemoveNode {
                id: r.u64("node id")?,
            },
            other => {
                return Err(DecodeError::Invalid {
                    what: "command kind",
                    detail: other.to_string(),
                })
            }
        };
        r.finish("command")?;
        Ok(command)
    }
}

/// Whether `a` and `b` name the same nodes (in any order).
pub fn same_nodes(a: &[u64], b: &[u64]) -> bool {
    let set = |nodes: &[u64]| nodes.iter().copied().collect::<BTreeSet<u64>>();
    set(a) == set(b)
}

/// A partition and its replicas, as the move commands carry them.
fn put_placement(out: &mut Vec<u8>, name: &str, id: &TopicId, partition: u32, replicas: &[u64]) {
    put_string(out, name);
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&partition.to_be_bytes());
    put_node_ids(out, replicas);
}

fn read_placement(r: &mut Reader<'_>) -> Result<(String, TopicId, u32, Vec<u64>), DecodeError> {
    let name = r.string("topic name", TOPIC_NAME_BYTES_MAX)?;
    let id = TopicId(r.array("topic id")?);
    let partition = r.u32("partition")?;
    let replicas = r.node_ids("replicas", NODES_MAX)?;
    Ok((name, id, partition, replicas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: u64) -> Command {
        Command::RegisterNode(NodeInfo {
            id,
            broker_addr: format!("127.0.0.1:{}", 9000 + id),
            raft_addr: format!("127.0.0.1:{}", 9100 + id),
        })
    }

    fn producer(name: &str, owner: Option<&str>) -> Command {
        Command::InitProducer {
            name: name.to_owned(),
            owner: owner.map(str::to_owned),
        }
    }

    fn create(name: &str, partitions: u32, replication_factor: u32) -> Command {
        Command::CreateTopic {
            name: name.to_owned(),
            id: TopicId([name.len() as u8; 16]),
            config: TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
            replication_factor,
        }
    }

    /// Applies `commands` from offset 0 on; their outcomes.
    fn run(image: &mut ClusterImage, commands: &[Command]) -> Vec<Outcome> {
        let start = image.next_offset();
        commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                image
                    .apply(start + i as i64, c)
                    .expect("new offset")
                    .clone()
            })
            .collect()
    }

    #[test]
    fn commands_build_the_image_and_refusals_change_nothing() {
        let mut image = ClusterImage::default();
        let outcomes = run(
            &mut image,
            &[
                node(1),
                node(2),
                node(3),
                create("orders", 3, 3),
                create("orders", 1, 1),
            ],
        );
        assert_eq!(
            outcomes[3],
            Outcome::TopicCreated {
                replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]
            }
        );
        assert_eq!(
            outcomes[4],
            Outcome::Refused(CommandError::TopicExists("orders".to_owned()))
        );
        let before = image.clone();
        let refused = run(&mut image, &[create("audit", 1, 4)]);
        assert_eq!(
            refused[0],
            Outcome::Refused(CommandError::NotEnoughNodes {
                requested: 4,
                nodes: 3
            })
        );
        assert_eq!(image.topics(), before.topics());
        // Producer ids: one counter for the cluster; a named producer keeps its id and gets
        // the next epoch; a name owned by another principal is refused.
        let ids = run(
            &mut image,
            &[
                producer("", None),
                producer("checkout", Some("alice")),
                producer("checkout", Some("alice")),
                producer("checkout", Some("mallory")),
            ],
        );
        assert_eq!(
            ids[..3],
            [
                Outcome::Producer { id: 1, epoch: 0 },
                Outcome::Producer { id: 2, epoch: 0 },
                Outcome::Producer { id: 2, epoch: 1 },
            ]
        );
        assert!(matches!(
            ids[3],
            Outcome::Refused(CommandError::Producer(ProducerIdRefusal::NotOwner { .. }))
        ));
        assert_eq!(
            image.producers().owner(2),
            crate::producer_ids::ProducerOwner::Principal("alice".to_owned())
        );
        // Deleting needs the incarnation.
        let wrong = Command::DeleteTopic {
            name: "orders".to_owned(),
            id: TopicId([0; 16]),
        };
        let right = Command::DeleteTopic {
            name: "orders".to_owned(),
            id: TopicId([6; 16]),
        };
        let deleted = run(&mut image, &[wrong, right]);
        assert!(matches!(
            deleted[0],
            Outcome::Refused(CommandError::NoSuchTopic(_))
        ));
        assert_eq!(deleted[1], Outcome::TopicDeleted);
        assert!(image.topics().is_empty());
        // An offset applied before is not applied again.
        assert_eq!(image.apply(3, &create("again", 1, 1)), None);
        assert_eq!(
            image.outcome(6),
            Some(&Outcome::Producer { id: 1, epoch: 0 })
        );
    }

    #[test]
    fn damaged_commands_are_refused() {
        let bytes = create("orders", 3, 2).encode();
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Command::decode(&trailing).is_err());
        assert!(Command::decode(&[9]).is_err());
        let named = producer("checkout", Some("alice")).encode();
        for cut in 0..named.len() {
            assert!(Command::decode(&named[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            Command::decode(&[4]).expect("the first nodes' anonymous id command"),
            producer("", None)
        );
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (1u64..8).prop_map(node),
            ("[a-c]{1,2}", 1u32..6, 0u32..5).prop_map(|(n, p, f)| create(&n, p, f)),
            "[a-c]{1,2}".prop_map(|n| Command::DeleteTopic {
                id: TopicId([n.len() as u8; 16]),
                name: n,
            }),
            ("[a-b]{0,1}", proptest::option::of("[x-y]"))
                .prop_map(|(name, owner)| producer(&name, owner.as_deref())),
            proptest::collection::vec(("[a-c]{1,2}", any::<bool>()), 0..3).prop_map(|grants| {
                Command::AddAcls {
                    entries: grants
                        .into_iter()
                        .map(|(topic, deny)| acl(&topic, PatternType::Literal, deny))
                        .collect(),
                }
            }),
            proptest::option::of("[a-c]{1,2}").prop_map(|name| Command::RemoveAcls {
                filter: AclFilter {
                    name,
                    ..AclFilter::any()
                },
            }),
            (
                "[a-c]{1,2}",
                0u32..3,
                proptest::collection::vec(1u64..8, 0..4),
                any::<bool>()
            )
                .prop_map(|(n, p, r, finish)| move_to(&n, p, &r, finish)),
            (1u64..8).prop_map(|id| Command::RemoveNode { id }),
        ]
    }

    fn acl(topic: &str, pattern: PatternType, deny: bool) -> AclEntry {
        AclEntry::new(
            herald_auth::acl::Principal::user("alice").expect("principal"),
            ResourceType::Topic,
            pattern,
            topic,
            herald_auth::acl::Operation::Read,
            if deny {
                Permission::Deny
            } else {
                Permission::Allow
            },
        )
        .expect("entry")
    }

    /// ACL entries: added once (a second add counts nothing), removed by filter, and a
    /// deleted topic's literal ALLOW entries go with it while its DENY and prefixed entries
    /// stay.
    #[test]
    fn acl_entries_follow_their_commands_and_topic_deletions() {
        let mut image = ClusterImage::default();
        let grant = acl("orders", PatternType::Literal, false);
        let deny = acl("orders", PatternType::Literal, true);
        let prefixed = acl("ord", PatternType::Prefixed, false);
        let other = acl("payments", PatternType::Literal, false);
        let everything = vec![grant.clone(), deny.clone(), prefixed.clone(), other.clone()];
        let outcomes = run(
            &mut image,
            &[
                node(1),
                create("orders", 1, 1),
                Command::AddAcls {
                    entries: everything.clone(),
                },
                Command::AddAcls {
                    entries: vec![grant.clone()],
                },
            ],
        );
        assert_eq!(outcomes[2], Outcome::AclsAdded(4));
        assert_eq!(outcomes[3], Outcome::AclsAdded(0), "already there");
        let id = image.topics()["orders"].id;
        let outcomes = run(
            &mut image,
            &[
                Command::DeleteTopic {
                    name: "orders".to_owned(),
                    id,
                },
                Command::RemoveAcls {
                    filter: AclFilter {
                        name: Some("payments".to_owned()),
                        ..AclFilter::any()
                    },
                },
            ],
        );
        assert_eq!(outcomes[1], Outcome::AclsRemoved(vec![other]));
        assert_eq!(
            image.acls().iter().cloned().collect::<Vec<_>>(),
            {
                let mut kept = vec![deny, prefixed];
                kept.sort();
                kept
            },
            "the deleted topic's literal grant went with it"
        );
        let bytes = Command::AddAcls {
            entries: everything,
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn move_to(name: &str, partition: u32, replicas: &[u64], finish: bool) -> Command {
        let (name, id, replicas) = (
            name.to_owned(),
            TopicId([name.len() as u8; 16]),
            replicas.to_vec(),
        );
        if finish {
            Command::FinishMove {
                name,
                id,
                partition,
                replicas,
            }
        } else {
            Command::MovePartition {
                name,
                id,
                partition,
                replicas,
            }
        }
    }

    /// A node leaves only once it holds no replica (the refusal names what it holds, a
    /// partition moving onto it included), never the last node; once removed it is gone
    /// from the nodes, cannot register again under its id, is not placed on, and a second
    /// removal is refused.
    #[test]
    fn a_node_is_removed_once_it_holds_no_replica() {
        let mut image = ClusterImage::default();
        run(
            &mut image,
            &[node(1), node(2), node(3), node(4), create("orders", 1, 3)],
        );
        assert_eq!(image.topics()["orders"].replicas[0], vec![1, 2, 3]);
        let remove = |id| Command::RemoveNode { id };
        let outcomes = run(
            &mut image,
            &[
                remove(1),
                remove(9),
                move_to("orders", 0, &[4, 2, 3], false),
                remove(4),
            ],
        );
        assert_eq!(
            outcomes[0],
            Outcome::Refused(CommandError::NodeHoldsReplicas {
                node: 1,
                count: 1,
                named: vec!["orders/0".to_owned()],
            })
        );
        assert_eq!(outcomes[1], Outcome::Refused(CommandError::UnknownNode(9)));
        assert_eq!(
            outcomes[3],
            Outcome::Refused(CommandError::NodeHoldsReplicas {
                node: 4,
                count: 1,
                named: vec!["orders/0".to_owned()],
            }),
            "a partition moving onto the node is held by it"
        );
        let before = image.clone();
        let outcomes = run(
            &mut image,
            &[
                move_to("orders", 0, &[4, 2, 3], true),
                remove(1),
                remove(1),
                node(1),
                move_to("orders", 0, &[1, 2, 3], false),
                create("payments", 1, 3),
            ],
        );
        assert_ne!(image, before);
        assert_eq!(outcomes[1], Outcome::NodeRemoved);
        assert_eq!(outcomes[2], Outcome::Refused(CommandError::NodeRemoved(1)));
        assert_eq!(outcomes[3], Outcome::Refused(CommandError::NodeRemoved(1)));
        assert_eq!(outcomes[4], Outcome::Refused(CommandError::UnknownNode(1)));
        assert_eq!(image.nodes().keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(image.removed().iter().copied().collect::<Vec<_>>(), [1]);
        assert!(image.topics()["payments"].replicas[0]
            .iter()
            .all(|n| *n != 1));
        let mut last = ClusterImage::default();
        let outcomes = run(&mut last, &[node(5), remove(5)]);
        assert_eq!(outcomes[1], Outcome::Refused(CommandError::LastNode(5)));
        let bytes = remove(7).encode();
        assert_eq!(Command::decode(&bytes).expect("decodes"), remove(7));
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// A move names its target; the replicas stay the group's voters until it finishes, and
    /// meanwhile both sets hold the partition; only the creation's replicas initialize it; a
    /// second move, a finish to another target, unknown nodes, repeated nodes and missing
    /// partitions are refused and change nothing.
    #[test]
    fn a_partition_moves_to_new_replicas_in_two_steps() {
        let mut image = ClusterImage::default();
        run(
            &mut image,
            &[node(1), node(2), node(3), node(4), create("orders", 2, 3)],
        );
        let before = image.topics()["orders"].clone();
        assert_eq!(before.replicas[0], vec![1, 2, 3]);
        let outcomes = run(
            &mut image,
            &[
                move_to("orders", 0, &[4, 2, 3], false),
                move_to("orders", 0, &[4, 2, 3], false),
                move_to("orders", 0, &[1, 2, 4], false),
                move_to("orders", 0, &[1, 2, 4], true),
                move_to("orders", 1, &[5, 2, 3], false),
                move_to("orders", 1, &[2, 2, 3], false),
                move_to("orders", 1, &[], false),
                move_to("orders", 7, &[1], false),
                move_to("orders", 1, &[1], true),
            ],
        );
        assert_eq!(outcomes[0], Outcome::MoveStarted);
        assert_eq!(
            outcomes[1],
            Outcome::MoveStarted,
            "the same move again is no change"
        );
        assert!(matches!(
            outcomes[2],
            Outcome::Refused(CommandError::MoveUnderWay { .. })
        ));
        assert!(matches!(
            outcomes[3],
            Outcome::Refused(CommandError::NotMovingThere { .. })
        ));
        assert_eq!(outcomes[4], Outcome::Refused(CommandError::UnknownNode(5)));
        assert_eq!(outcomes[5], Outcome::Refused(CommandError::ReplicaTwice(2)));
        assert_eq!(outcomes[6], Outcome::Refused(CommandError::ReplicaCount));
        assert!(matches!(
            outcomes[7],
            Outcome::Refused(CommandError::NoSuchPartition { partition: 7, .. })
        ));
        assert!(matches!(
            outcomes[8],
            Outcome::Refused(CommandError::NotMovingThere { .. })
        ));
        let moving = &image.topics()["orders"];
        assert_eq!(
            moving.replicas, before.replicas,
            "voters until the move finishes"
        );
        assert_eq!(moving.holders(0), vec![1, 2, 3, 4]);
        assert_eq!(moving.holders(1), before.replicas[1]);
        let done = run(&mut image, &[move_to("orders", 0, &[4, 2, 3], true)]);
        assert_eq!(done[0], Outcome::MoveFinished);
        let moved = &image.topics()["orders"];
        assert_eq!(moved.replicas[0], vec![4, 2, 3]);
        assert!(moved.moves.is_empty());
        assert_eq!(moved.holders(0), vec![4, 2, 3]);
        assert_eq!(moved.founders, before.founders, "founders never change");
        // A move called off: back to the replicas it has.
        let mut current = image.topics()["orders"].replicas[1].clone();
        let elsewhere: Vec<u64> = (1..=4)
            .filter(|n| !current.contains(n))
            .chain([current[0]])
            .collect();
        current.reverse();
        let called_off = run(
            &mut image,
            &[
                move_to("orders", 1, &elsewhere, false),
                move_to("orders", 1, &current, false),
            ],
        );
        assert_eq!(called_off, [Outcome::MoveStarted, Outcome::MoveCancelled]);
        assert!(image.topics()["orders"].moves.is_empty());
        assert_eq!(image.topics()["orders"].replicas[1], current);
        // The same replicas in another order: the preferred leader changes, nothing moves.
        let reordered = run(&mut image, &[move_to("orders", 0, &[2, 3, 4], false)]);
        assert_eq!(reordered[0], Outcome::MoveStarted);
        assert_eq!(image.topics()["orders"].replicas[0], vec![2, 3, 4]);
        assert!(image.topics()["orders"].moves.is_empty());
        for finish in [false, true] {
            let bytes = move_to("orders", 1, &[1, 2], finish).encode();
            assert_eq!(
                Command::decode(&bytes).expect("round trip"),
                move_to("orders", 1, &[1, 2], finish)
            );
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    /// Users: put (new, then a new credential for the same name), refused with an invalid
    /// name or credential, deleted once (a second deletion is refused), round-tripped.
    #[test]
    fn users_are_put_replaced_and_deleted() {
        let credential = |password: &str| {
            herald_auth::scram::Credential::new(password, herald_auth::scram::ITERATIONS_MIN)
                .expect("credential")
                .to_text()
        };
        let (first, second) = (credential("correct horse"), credential("battery staple"));
        let put = |name: &str, credential: &str| Command::PutUser {
            name: name.to_owned(),
            credential: credential.to_owned(),
            registry: RegistryChange::Keep,
        };
        let delete = |name: &str| Command::DeleteUser {
            name: name.to_owned(),
        };
        let mut image = ClusterImage::default();
        let outcomes = run(
            &mut image,
            &[
                put("alice", &first),
                put("alice", &second),
                put("bob smith", &first),
                put("carol", "not a credential"),
                delete("alice"),
                delete("alice"),
            ],
        );
        assert_eq!(outcomes[0], Outcome::UserPut { added: true });
        assert_eq!(outcomes[1], Outcome::UserPut { added: false });
        assert!(matches!(
            outcomes[2],
            Outcome::Refused(CommandError::InvalidUser(_))
        ));
        assert!(matches!(
            outcomes[3],
            Outcome::Refused(CommandError::InvalidUser(_))
        ));
        assert_eq!(outcomes[4], Outcome::UserDeleted);
        assert_eq!(
            outcomes[5],
            Outcome::Refused(CommandError::NoSuchUser("alice".to_owned()))
        );
        assert!(image.users().is_empty());
        run(&mut image, &[put("dave", &second)]);
        assert_eq!(
            image.users().get("dave").map(|u| &u.credential),
            Some(&second)
        );
        // Registry access: set with a credential, kept by a new password, cleared.
        let writer = RegistryAccess::new(
            herald_auth::users::RegistryRole::Write,
            vec!["team-a.".to_owned()],
        )
        .expect("access");
        let with = |change: RegistryChange| Command::PutUser {
            name: "dave".to_owned(),
            credential: first.clone(),
            registry: change,
        };
        let access = |image: &ClusterImage| image.users()["dave"].registry.clone();
        run(&mut image, &[with(RegistryChange::Set(writer.clone()))]);
        assert_eq!(access(&image), Some(writer.clone()));
        run(&mut image, &[put("dave", &second)]);
        assert_eq!(
            access(&image),
            Some(writer.clone()),
            "a new password keeps it"
        );
        run(&mut image, &[with(RegistryChange::Clear)]);
        assert_eq!(access(&image), None);
        let bad = RegistryAccess {
            role: herald_auth::users::RegistryRole::Read,
            subjects: Some(vec![String::new()]),
        };
        assert!(matches!(
            run(&mut image, &[with(RegistryChange::Set(bad))])[0],
            Outcome::Refused(CommandError::InvalidUser(_))
        ));
        // A user put before registry access existed (kind 10) reads as keeping it.
        let mut old = vec![10u8];
        herald_wire::put_string(&mut old, "erin");
        herald_wire::put_string(&mut old, &first);
        assert_eq!(
            Command::decode(&old).expect("older form"),
            put("erin", &first)
        );
        // And a change that keeps the access is still written that way (a node not yet
        // upgraded reads it); only a change of access takes the new kind.
        assert_eq!(put("erin", &first).encode(), old);
        assert_eq!(with(RegistryChange::Clear).encode()[0], 13);
        for command in [
            put("dave", &second),
            with(RegistryChange::Set(writer)),
            with(RegistryChange::Clear),
            delete("dave"),
        ] {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).expect("round trip"), command);
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    proptest! {
        /// Any history: every command survives its encoding; two nodes applying the same
        /// records hold the same image; every partition has as many distinct, registered
        /// replicas as asked; preferred leaders differ by at most one partition per node
        /// when topics are only created.
        #[test]
        fn every_node_folds_the_same_image(commands in proptest::collection::vec(command(), 1..40)) {
            let mut first = ClusterImage::default();
            let mut second = ClusterImage::default();
            for (offset, command) in commands.iter().enumerate() {
                let decoded = Command::decode(&command.encode()).expect("round trip");
                prop_assert_eq!(&decoded, command);
                first.apply(offset as i64, command);
                second.apply(offset as i64, &decoded);
            }
            prop_assert_eq!(&first, &second);
            for topic in first.topics().values() {
                prop_assert_eq!(topic.replicas.len() as u32, topic.config.partitions);
                for (partition, target) in &topic.moves {
                    prop_assert!((*partition as usize) < topic.replicas.len());
                    prop_assert!(target.iter().all(|n| first.nodes().contains_key(n)));
                }
                for replicas in &topic.replicas {
                    let mut distinct = replicas.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    prop_assert_eq!(distinct.len(), replicas.len());
                    prop_assert!(replicas.iter().all(|n| first.nodes().contains_key(n)));
                }
            }
            // Without a registered node no topic can be placed.
            if !commands.iter().any(|c| matches!(c, Command::RegisterNode(_))) {
                prop_assert!(first.topics().is_empty());
            }
        }

        #[test]
        fn leaders_are_balanced(nodes in 1u64..7, topics in proptest::collection::vec(1u32..9, 1..6)) {
            let mut image = ClusterImage::default();
            let mut commands: Vec<Command> = (1..=nodes).map(node).collect();
            for (i, partitions) in topics.iter().enumerate() {
                commands.push(create(&format!("t{i}"), *partitions, 1));
            }
            run(&mut image, &commands);
            let mut leading: BTreeMap<u64, usize> = (1..=nodes).map(|n| (n, 0)).collect();
            for topic in image.topics().values() {
                for replicas in &topic.replicas {
                    *leading.entry(replicas[0]).or_default() += 1;
                }
            }
            let most = leading.values().max().copied().unwrap_or(0);
            let least = leading.values().min().copied().unwrap_or(0);
            prop_assert!(most - least <= 1, "{leading:?}");
        }
    }
}
