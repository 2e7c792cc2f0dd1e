//! Cluster mode: a broker that is one node of a replicated cluster (`--node-id`, `--peers`).
//! Topics are the cluster's (created and deleted through the controller, described from the
//! metadata image); a partition's records go through its Raft group: produced on its leader
//! (any other node answers `NotLeader` naming it), fetched from any replica up to that
//! replica's high watermark (what is committed: no consumer sees a record a failover can
//! undo).
//!
//! Consumer groups are kept by the internal groups topic (`cluster_groups`).
//!
//! Schema IDs are validated by the leader before it proposes a batch, and an idempotency-key
//! window decides on the leader which records are proposed. Produce and fetch are counted
//! in the same per-topic metrics as on a single broker (`Cluster::topic_metrics`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_broker_core::cluster::{Command, CommandError, Outcome};
use herald_broker_core::log::{validate_produced, ReadError};
use herald_broker_core::producers::SequenceCheck;
use herald_metrics::Metrics;
pub use herald_raft::config::Timing;
use herald_raft::net::{self, Groups, NodeTls, Peers};
use herald_raft::node::{Node, NodeConfig, PartitionGroup, ProposeError, ReplicaStore};
use herald_raft::Proposal;
use herald_wire::batch;
use herald_wire::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};
use herald_wire::messages::{
    Durability, ErrorBody, FollowerLag, NodeAddress, OffsetSpec, PartitionDescription,
    PartitionPlacement, Replication, TopicConfig, TopicDescription, TopicMetadata,
};
use herald_wire::{ErrorCode, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::topics::{log_config, new_topic_id};
use super::{error, throttled, Broker};
use crate::clock::now_ms;
use crate::fs::FileStorage;
use crate::metrics::{Reject, TopicMetrics};

/// Most replicas a partition gets (fewer when the cluster has fewer nodes).
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;
/// Whether `topic` is one of the cluster's own (`__groups`, ...): clients neither produce to,
/// read, nor delete it.
pub(super) fn is_internal_topic(topic: &str) -> bool {
    topic.starts_with("__")
}

/// Where replicas live under the data directory.
pub const REPLICAS_DIR: &str = "replicas";

/// How a broker joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Every node's Raft address by id, this one included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Where this node's Raft endpoint listens (its own entry of `peers` by default).
    pub raft_listen: SocketAddr,
    /// PEM files: the cluster CA's certificate, this node's certificate (signed by it, naming
    /// `herald-node`) and key.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub timing: Timing,
    /// This node joins a running cluster through `peers` (the nodes it first reaches, and
    /// itself) instead of founding it with them: it is added as a learner of the
    /// controller and holds the partitions moved onto it.
    pub join: bool,
    /// Where clients reach this node's broker (HOST:PORT), as metadata names it to them:
    /// needed when the broker listens on an unspecified address (0.0.0.0, ::) or behind a
    /// translated one; the address it listens on by default.
    pub advertise: Option<String>,
}

/// The address metadata names for a node whose broker listens on `bound`: `advertise` if
/// given, else `bound`, which must then be one a client can dial.
pub(crate) fn advertised_addr(
    advertise: Option<&str>,
    bound: SocketAddr,
) -> Result<String, ClusterError> {
    let bad = |addr: &str, why: &str| {
        Err(ClusterError::Advertise(format!(
            "'{addr}' {why}: give HOST:PORT (an IPv6 address in brackets)"
        )))
    };
    match advertise.map(str::trim) {
        Some(addr) if addr.len() > herald_broker_core::cluster::ADDRESS_BYTES_MAX => bad(
            addr,
            &format!(
                "is longer than {} bytes",
                herald_broker_core::cluster::ADDRESS_BYTES_MAX
            ),
        ),
        Some(addr) => {
            let Some((host, port)) = addr.rsplit_once(':') else {
                return bad(addr, "has no port");
            };
            let bracketed = host.starts_with('[') && host.ends_with(']');
            if host.is_empty() || (host.contains(':') && !bracketed) {
                return bad(addr, "has no host, or an IPv6 host without brackets");
            }
            match port.parse::<u16>() {
                Ok(port) if port > 0 => Ok(addr.to_owned()),
                _ => bad(addr, "has no valid port (1-65535)"),
            }
        }
        None if bound.ip().is_unspecified() => Err(ClusterError::Advertise(format!(
            "the broker listens on {bound}, which no client can dial: give the address clients reach this node at (--advertise HOST:PORT, or advertise in --config)"
        ))),
        None => Ok(bound.to_string()),
    }
}

/// Why cluster mode did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster TLS: {0}")]
    Tls(String),
    #[error("cannot listen for Raft on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("advertised address: {0}")]
    Advertise(String),
    #[error("the cluster refused this node: {0}")]
    Refused(String),
    #[error(transparent)]
    Net(#[from] herald_raft::net::NetError),
    #[error(transparent)]
    Node(#[from] herald_raft::node::NodeError),
}

/// A running cluster node inside a broker.
/// How soon a client told `NotLeader` with the leader's name should retry (after looking the
/// leader up again).
const NOT_LEADER_RETRY_AFTER_MS: u32 = 20;
/// How soon a client told `NotLeader` during an election should retry.
const ELECTION_RETRY_AFTER_MS: u32 = 200;
/// How long a node removal is answered within, its proposal included, while it waits for
/// the controller to let the node go (see `cluster_remove_node`): well within a client's
/// 30 s request timeout, so the client hears "ask again" rather than nothing.
const REMOVE_NODE_WAIT: Duration = Duration::from_secs(20);

/// Longest a resend of a batch already in the leader's log waits for that batch to commit.
pub(crate) const DUPLICATE_COMMIT_WAIT: Duration = Duration::from_secs(5);

pub struct Cluster {
    node: Node<FileStorage>,
    /// Nodes configured (`--peers`).
    size: u32,
    endpoint: quinn::Endpoint,
    /// One idempotent proposal at a time per partition: the producer check before a
    /// proposal sees every batch proposed before it (batches without a producer id are
    /// proposed at once).
    proposing: Mutex<HashMap<(String, u32), Turn>>,
    /// The node link, for requests handed on to another node.
    peers: Arc<Peers>,
    /// Where requests handed on by other nodes are answered (set once the broker is known).
    groups: Arc<Groups<FileStorage>>,
    /// The consumer groups of the groups topic's partitions this node holds.
    shards: super::cluster_groups::Shards,
    shutting_down: std::sync::atomic::AtomicBool,
    /// The partitions whose followers' lag this node reported at the last scrape (it led
    /// them): see `metrics::followers_to_report`.
    lag_reported: Mutex<std::collections::HashSet<(String, u32)>>,
    /// Turns taken among the replicas a request is handed to (see `Cluster::next_turn`).
    turns: std::sync::atomic::AtomicUsize,
    /// Each topic's produce and fetch counters, as a single broker keeps them (registered
    /// on first use; at most the topics the cluster has, see `Cluster::topic_metrics`).
    topic_metrics: Mutex<HashMap<String, Arc<TopicMetrics>>>,
}

/// How often a node checks that the groups topic exists (and whether expired groups are due).
const GROUPS_UPKEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A partition's turn to propose (see `Cluster::proposing`).
type Turn = Arc<tokio::sync::Mutex<()>>;

fn load_tls(config: &ClusterConfig) -> Result<NodeTls, ClusterError> {
    let read = |path: &Path| -> Result<Vec<CertificateDer<'static>>, ClusterError> {
        let certificates: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ClusterError::Tls(format!("{}: {e}", path.display())))?
            .collect();
        certificates.map_err(|e| ClusterError::Tls(format!("{}: {e}", path.display())))
    };
    Ok(NodeTls {
        chain: read(&config.cert)?,
        key: PrivateKeyDer::from_pem_file(&config.key)
            .map_err(|e| ClusterError::Tls(format!("{}: {e}", config.key.display())))?,
        cluster_ca: read(&config.ca)?,
    })
}

impl Cluster {
    /// Starts this broker's node: its Raft endpoint, the controller and the metadata image.
    pub async fn start(
        config: &ClusterConfig,
        broker_addr: SocketAddr,
        data_dir: &Path,
        producer_expiry_ms: i64,
    ) -> Result<Arc<Self>, ClusterError> {
        let advertised = advertised_addr(config.advertise.as_deref(), broker_addr)?;
        let tls = load_tls(config)?;
        let bind = |source| ClusterError::Bind {
            addr: config.raft_listen,
            source,
        };
        let (socket, _) = herald_quic::bind_udp(config.raft_listen).map_err(bind)?;
        let mut endpoint = herald_quic::endpoint(
            quinn::EndpointConfig::default(),
            Some(net::server_config(&tls)?),
            socket,
        )
        .map_err(bind)?;
        endpoint.set_default_client_config(net::client_config(&tls)?);
        let groups = Arc::new(Groups::default());
        tokio::spawn(net::serve(endpoint.clone(), groups.clone()));
        let root = data_dir.join(REPLICAS_DIR);
        std::fs::create_dir_all(&root).map_err(bind)?;
        let store = ReplicaStore::new(FileStorage::new(root), move |topic| {
            log_config(topic, producer_expiry_ms)
        });
        let peers = Peers::new(endpoint.clone());
        let node = Node::start(
            NodeConfig {
                id: config.node_id,
                broker_addr: advertised,
                peers: config
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, addr.to_string()))
                    .collect(),
                timing: config.timing,
                join: config.join,
            },
            groups.clone(),
            peers.clone(),
            store,
        )
        .await?;
        tracing::info!(node = config.node_id, raft = %config.raft_listen, "cluster node started");
        Ok(Arc::new(Self {
            node,
            size: u32::try_from(config.peers.len()).unwrap_or(u32::MAX),
            endpoint,
            proposing: Mutex::new(HashMap::new()),
            peers,
            groups,
            shards: Default::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            lag_reported: Mutex::default(),
            topic_metrics: Mutex::default(),
            turns: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// A number that goes up by one with every call: which of several equal choices to take.
    pub(super) fn next_turn(&self) -> usize {
        self.turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// This node's id.
    pub(super) fn id(&self) -> u64 {
        self.node.id()
    }

    /// The cluster's metadata as this node has applied it.
    pub fn image(&self) -> Arc<herald_broker_core::cluster::ClusterImage> {
        self.node.image().borrow().clone()
    }

    /// A watch on the cluster's metadata as this node applies it.
    pub fn image_watch(
        &self,
    ) -> tokio::sync::watch::Receiver<Arc<herald_broker_core::cluster::ClusterImage>> {
        self.node.image()
    }

    /// Adds or removes ACL entries through the controller (an ACL listing is answered from
    /// the node's copy): the answer once this node applied the change.
    /// Changes the cluster's ACLs or users through its controller: the answer a single
    /// broker's `Security::administer` would give.
    pub async fn administer(&self, request: herald_wire::security::SecurityRequest) -> Response {
        use herald_wire::limits::ACLS_LISTED_MAX;
        use herald_wire::security::{SecurityRequest, SecurityResponse};
        let command = match request {
            SecurityRequest::CreateAcls { entries } => Command::AddAcls { entries },
            SecurityRequest::DeleteAcls { filter } => {
                let matching = self
                    .image()
                    .acls()
                    .iter()
                    .filter(|entry| filter.matches(entry))
                    .count();
                if matching > ACLS_LISTED_MAX {
                    return error(
                        ErrorCode::TooLarge,
                        format!("{matching} ACL entries match, more than one answer lists ({ACLS_LISTED_MAX}); narrow the filter"),
                    );
                }
                Command::RemoveAcls { filter }
            }
            SecurityRequest::AlterUser {
                name,
                credential,
                registry,
            } => Command::PutUser {
                name,
                credential,
                registry,
            },
            SecurityRequest::DeleteUser { name } => Command::DeleteUser { name },
            other => {
                return error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} does not change the cluster's ACLs or users",
                        other.api().name()
                    ),
                )
            }
        };
        match self.node.propose(&command).await {
            Ok(Outcome::AclsAdded(added)) => {
                Response::Security(SecurityResponse::AclsCreated { added })
            }
            Ok(Outcome::AclsRemoved(removed)) => {
                Response::Security(SecurityResponse::AclsDeleted(removed))
            }
            Ok(Outcome::UserPut { .. }) => Response::Security(SecurityResponse::UserAltered),
            Ok(Outcome::UserDeleted) => Response::Security(SecurityResponse::UserDeleted),
            Ok(Outcome::Refused(refusal)) => error(ErrorCode::InvalidRequest, refusal.to_string()),
            Ok(other) => error(
                ErrorCode::Internal,
                format!("the controller answered an ACL or user change with {other:?}"),
            ),
            Err(failure) => Cluster::unavailable(failure),
        }
    }

    /// The group of a partition this node holds a replica of.
    pub(super) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Option<PartitionGroup<FileStorage>> {
        self.node.partition(topic, partition)
    }

    /// The partitions of the groups topic this node holds replicas of.
    pub(super) fn groups_partitions(&self) -> Vec<(u32, PartitionGroup<FileStorage>)> {
        self.node
            .partitions()
            .into_iter()
            .filter(|(topic, _, _)| topic == super::cluster_groups::GROUPS_TOPIC)
            .map(|(_, partition, group)| (partition, group))
            .collect()
    }

    /// The consumer groups of the groups topic's `partition` kept here (`make` gives the
    /// coordinator the first time).
    pub(super) fn shard(
        &self,
        partition: u32,
        make: impl FnOnce() -> crate::coordinator::Coordinator,
    ) -> Arc<super::cluster_groups::Shard> {
        self.shards.get_or(partition, make)
    }

    /// Hands a client request (as `Broker::answer_handed_on` reads it) to node `node`: its
    /// answer's bytes.
    pub(super) async fn hand_on(
        &self,
        node: u64,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let addr = self
            .node
            .raft_addr(node)
            .ok_or_else(|| format!("node {node} is neither a configured peer nor registered"))?;
        self.peers
            .request(node, &addr, &request, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Makes `broker` answer the requests other nodes hand on to this one, and starts the
    /// cluster's upkeep: the groups topic created once enough nodes registered, expired
    /// groups deleted, the entries of this node's ACL seed file (`acl_seed`) added to the
    /// cluster's.
    pub fn serve(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        acl_seed: Vec<herald_auth::acl::AclEntry>,
    ) {
        let weak = Arc::downgrade(broker);
        self.groups.answer_requests(Arc::new(move |bytes| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(broker) => broker.answer_handed_on(bytes).await,
                    None => {
                        let mut out = Vec::new();
                        error(ErrorCode::Throttled, "the broker is shutting down").encode(&mut out);
                        out
                    }
                }
            })
        }));
        let (cluster, broker) = (Arc::downgrade(self), Arc::downgrade(broker));
        tokio::spawn(async move {
            let mut last_expiry = Instant::now();
            let mut seed = (!acl_seed.is_empty()).then_some(acl_seed);
            loop {
                tokio::time::sleep(GROUPS_UPKEEP_INTERVAL).await;
                let (Some(cluster), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else {
                    return;
                };
                if cluster
                    .shutting_down
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return;
                }
                cluster.create_groups_topic().await;
                broker.cluster_fold_groups(&cluster).await;
                if let Some(entries) = seed.take() {
                    let command = Command::AddAcls {
                        entries: entries.clone(),
                    };
                    match cluster.node.propose(&command).await {
                        Ok(Outcome::AclsAdded(added)) => {
                            tracing::info!(added, "the ACL seed file's entries are the cluster's");
                        }
                        Ok(other) => tracing::error!(?other, "the ACL seed file was refused"),
                        Err(_) => seed = Some(entries),
                    }
                }
                broker.cluster_checkpoint_groups(&cluster).await;
                if last_expiry.elapsed() >= super::cluster_groups::GROUP_EXPIRY_INTERVAL {
                    last_expiry = Instant::now();
                    let deleted = broker.cluster_expire_groups(&cluster).await;
                    if deleted > 0 {
                        tracing::info!(
                            deleted,
                            "deleted groups without members past the offsets retention"
                        );
                    }
                }
            }
        });
    }

    /// One step of retention on every partition replica this node holds, through Raft (see
    /// `PartitionGroup::enforce_retention`): how many purges it asked for.
    pub async fn enforce_retention(&self) -> usize {
        let now = now_ms();
        let mut purges = 0;
        for (topic, partition, group) in self.node.partitions() {
            // The groups topic purges what its last checkpoint restated, nothing else.
            let step = if topic == super::cluster_groups::GROUPS_TOPIC {
                match self.shards.get(partition) {
                    Some(shard) => match shard.checkpoint().await {
                        Some(cut) => group.purge_before(cut).await,
                        None => continue,
                    },
                    None => continue,
                }
            } else {
                group.enforce_retention(now).await
            };
            match step {
                Ok(herald_raft::node::RetentionStep::Purge { upto }) => {
                    tracing::debug!(topic, partition, upto, "retention purges up to an entry");
                    purges += 1;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(topic, partition, %error, "retention through Raft failed")
                }
            }
        }
        purges
    }

    /// Proposes the groups topic unless the cluster has it, once as many nodes registered as
    /// it gets replicas.
    async fn create_groups_topic(&self) {
        use super::cluster_groups::{groups_topic_config, GROUPS_TOPIC};
        let image = self.image();
        if image.topics().contains_key(GROUPS_TOPIC) {
            return;
        }
        let factor = REPLICATION_FACTOR_DEFAULT.min(self.size.max(1));
        if (image.nodes().len() as u32) < factor {
            return;
        }
        let command = Command::CreateTopic {
            name: GROUPS_TOPIC.to_owned(),
            id: new_topic_id(),
            config: groups_topic_config(),
            replication_factor: factor,
        };
        match self.node.propose(&command).await {
            Ok(Outcome::TopicCreated { .. } | Outcome::Refused(CommandError::TopicExists(_))) => {}
            Ok(other) => tracing::warn!(?other, "the groups topic was not created"),
            Err(failure) => tracing::debug!(%failure, "the groups topic was not created yet"),
        }
    }

    /// Completes once the cluster refused to register this node (it was removed): why.
    pub async fn refused(&self) -> String {
        let mut refused = self.node.refused();
        loop {
            if let Some(reason) = refused.borrow_and_update().clone() {
                return reason;
            }
            if refused.changed().await.is_err() {
                // The registration ended without a refusal: never.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the node's groups and its Raft endpoint.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.node.shutdown().await;
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    fn unavailable(reason: impl std::fmt::Display) -> Response {
        throttled(format!("the cluster cannot take this now: {reason}"))
    }

    /// The produce and fetch counters of `topic` (one of the cluster's), registered with
    /// `recorder` on first use; the handles of topics gone from the cluster are dropped then.
    pub(super) fn topic_metrics(&self, recorder: &Metrics, topic: &str) -> Arc<TopicMetrics> {
        let mut known = self.topic_metrics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(metrics) = known.get(topic) {
            return metrics.clone();
        }
        let image = self.image();
        known.retain(|name, _| image.topics().contains_key(name));
        let metrics = Arc::new(TopicMetrics::new(recorder, topic));
        known.insert(topic.to_owned(), metrics.clone());
        metrics
    }

    /// Sets the gauges of every replica this node holds (see `metrics::record_replica`).
    pub(super) fn record_replicas(&self, metrics: &herald_metrics::Metrics) {
        let me = self.node.id();
        let partitions = self.node.partitions();
        // Partitions this node no longer holds are forgotten.
        self.lag_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(topic, partition)| {
                partitions
                    .iter()
                    .any(|(t, p, _)| t == topic && p == partition)
            });
        for (topic, partition, group) in partitions {
            let status = group.status();
            let leads = status.leader == Some(me);
            let reported_before = {
                let mut reported = self.lag_reported.lock().unwrap_or_else(|p| p.into_inner());
                let key = (topic.clone(), partition);
                if leads {
                    !reported.insert(key)
                } else {
                    reported.remove(&key)
                }
            };
            let followers = crate::metrics::followers_to_report(
                &status.followers,
                leads,
                reported_before,
                &group.replicas,
                me,
            );
            let high_watermark = group
                .replica
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .high_watermark();
            crate::metrics::record_replica(
                metrics,
                &crate::metrics::ReplicaState {
                    topic: &topic,
                    partition,
                    leader: status.leader,
                    term: status.term,
                    followers: &followers,
                    high_watermark,
                },
            );
        }
    }

    /// The current incarnation of topic `name`, or `UnknownTopic`.
    fn topic_id(&self, name: &str) -> Result<herald_wire::messages::TopicId, Response> {
        self.image()
            .topics()
            .get(name)
            .map(|t| t.id)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{name}'")))
    }

    /// The group of a partition this node holds, or why it cannot serve it here.
    fn group(&self, topic: &str, partition: u32) -> Result<PartitionGroup<FileStorage>, Response> {
        if let Some(group) = self.node.partition(topic, partition) {
            return Ok(group);
        }
        let image = self.node.image().borrow().clone();
        let Some(found) = image.topics().get(topic) else {
            return Err(error(
                ErrorCode::UnknownTopic,
                format!("unknown topic '{topic}'"),
            ));
        };
        match found.replicas.get(partition as usize) {
            None => Err(error(
                ErrorCode::UnknownPartition,
                format!(
                    "topic '{topic}' has {} partitions; {partition} does not exist",
                    found.replicas.len()
                ),
            )),
            Some(replicas) => Err(error(
                ErrorCode::NotLeader,
                format!(
                    "this node holds no replica of {topic}/{partition}; its replicas are on {}",
                    self.describe_nodes(replicas)
                ),
            )),
        }
    }

    fn describe_nodes(&self, ids: &[u64]) -> String {
        let image = self.node.image().borrow().clone();
        ids.iter()
            .map(|id| match image.nodes().get(id) {
                Some(node) => format!("node {id} at {}", node.broker_addr),
                None => format!("node {id}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `NotLeader`, naming the leader if known, with a short retry delay: the client should
    /// look the leader up again and retry soon (an election takes the election timeout at
    /// most), not back off as from an overloaded broker.
    pub(super) fn not_leader(&self, topic: &str, partition: u32, leader: Option<u64>) -> Response {
        let (hint, retry_after) = match leader {
            Some(leader) => (
                format!("its leader is {}", self.describe_nodes(&[leader])),
                NOT_LEADER_RETRY_AFTER_MS,
            ),
            None => (
                "it has no leader right now (an election is under way)".to_owned(),
                ELECTION_RETRY_AFTER_MS,
            ),
        };
        Response::Error(ErrorBody {
            code: ErrorCode::NotLeader,
            retry_after_ms: retry_after,
            message: format!("this node does not lead {topic}/{partition}: {hint}"),
        })
    }

    /// Waits until the batch at `offset` of this leader's log is committed (applied here), up
    /// to [`DUPLICATE_COMMIT_WAIT`]: a producer's resend of a batch that a previous leader
    /// appended but did not commit finds it in this leader's log, and is acknowledged only
    /// once it cannot be undone (until then the batch may still be cut, if this node loses
    /// the lead before committing it).
    async fn committed(
        &self,
        group: &PartitionGroup<FileStorage>,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<(), Response> {
        let deadline = tokio::time::Instant::now() + DUPLICATE_COMMIT_WAIT;
        let mut progress = group.progress();
        loop {
            let high_watermark = group
                .replica
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .high_watermark();
            if high_watermark > offset {
                return Ok(());
            }
            let leader = group.leader();
            if leader != Some(self.node.id()) {
                return Err(self.not_leader(topic, partition, leader));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(throttled(format!(
                    "{topic}/{partition}: the batch at offset {offset} (a resend of one already in the log) is not committed yet; retry"
                )));
            }
            progress.changed(left).await;
        }
    }

    /// Whom producer id `id` was handed to, as the committed controller log says.
    pub(crate) fn producer_owner(
        &self,
        id: i64,
    ) -> herald_broker_core::producer_ids::ProducerOwner {
        use herald_broker_core::producer_ids::ProducerOwner;
        match self.node.image().borrow().producers().owner(id) {
            ProducerOwner::NeverIssued => ProducerOwner::NotYetKnown,
            owner => owner,
        }
    }

    fn proposing(&self, topic: &str, partition: u32) -> Turn {
        self.proposing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone()
    }
}

impl Broker {
    /// Makes this broker a cluster node: topic, produce and fetch requests go to the cluster.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this broker is a node of, if it is one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    pub(super) async fn cluster_create_topic(
        &self,
        cluster: &Cluster,
        name: String,
        config: TopicConfig,
    ) -> Result<Response, Response> {
        self.check_new_topic(&name, &config)?;
        if is_internal_topic(&name) {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!("topic names starting with '__' are the cluster's own: '{name}'"),
            ));
        }
        // As many replicas as the cluster has nodes, up to the default: a topic created while
        // nodes are still registering waits for them rather than getting fewer replicas.
        let factor = REPLICATION_FACTOR_DEFAULT.min(cluster.size.max(1));
        let registered = cluster.node.image().borrow().nodes().len() as u32;
        if registered < factor {
            return Err(throttled(format!(
                "{registered} of the cluster's nodes have registered; topics get {factor} replicas: try again shortly"
            )));
        }
        let command = Command::CreateTopic {
            name: name.clone(),
            id: new_topic_id(),
            config,
            replication_factor: factor,
        };
        match cluster.node.propose(&command).await {
            Ok(Outcome::TopicCreated { .. }) => Ok(Response::TopicCreated),
            Ok(Outcome::Refused(CommandError::TopicExists(_))) => Err(error(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            )),
            Ok(Outcome::Refused(refusal)) => {
                Err(error(ErrorCode::InvalidTopicConfig, refusal.to_string()))
            }
            Ok(other) => Err(error(
                ErrorCode::Internal,
                format!("the controller answered a creation with {other:?}"),
            )),
            Err(failure) => Err(Cluster::unavailable(failure)),
        }
    }

    pub(super) async fn cluster_init_producer(
        &self,
        cluster: &Cluster,
        name: &str,
        owner: Option<&str>,
    ) -> Result<Response, Response> {
        let command = Command::InitProducer {
            name: name.to_owned(),
            owner: owner.map(str::to_owned),
        };
        match cluster.node.propose(&command).await {
            Ok(Outcome::Producer { id, epoch }) => Ok(Response::ProducerInit {
                producer_id: id,
                epoch,
            }),
            Ok(Outcome::Refused(CommandError::Producer(refusal))) => {
                Err(super::producer_id_refused(&refusal))
            }
            Ok(other) => Err(error(
                ErrorCode::Internal,
                format!("the controller answered a producer id request with {other:?}"),
            )),
            Err(failure) => Err(Cluster::unavailable(failure)),
        }
    }

    pub(super) async fn cluster_delete_topic(
        &self,
        cluster: &Cluster,
        name: &str,
    ) -> Result<Response, Response> {
        if is_internal_topic(name) {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!("topic '{name}' is the cluster's own: it cannot be deleted"),
            ));
        }
        let id = cluster.topic_id(name)?;
        let command = Command::DeleteTopic {
            name: name.to_owned(),
            id,
        };
        match cluster.node.propose(&command).await {
            Ok(Outcome::TopicDeleted) => Ok(Response::TopicDeleted),
            Ok(Outcome::Refused(refusal)) => {
                Err(error(ErrorCode::UnknownTopic, refusal.to_string()))
            }
            Ok(other) => Err(error(
                ErrorCode::Internal,
                format!("the controller answered a deletion with {other:?}"),
            )),
            Err(failure) => Err(Cluster::unavailable(failure)),
        }
    }

    /// Moves `topic`'s `partition` to `replicas` (see `Command::MovePartition`): answered once
    /// the move is recorded; the partition's leader carries it out.
    pub(super) async fn cluster_move_partition(
        &self,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<Response, Response> {
        let id = cluster.topic_id(topic)?;
        let command = Command::MovePartition {
            name: topic.to_owned(),
            id,
            partition,
            replicas,
        };
        match cluster.node.propose(&command).await {
            Ok(Outcome::MoveStarted | Outcome::MoveCancelled) => Ok(Response::PartitionMoving),
            Ok(Outcome::Refused(refusal)) => Err(error(
                match refusal {
                    CommandError::NoSuchTopic(_) => ErrorCode::UnknownTopic,
                    CommandError::NoSuchPartition { .. } => ErrorCode::UnknownPartition,
                    _ => ErrorCode::InvalidRequest,
                },
                refusal.to_string(),
            )),
            Ok(other) => Err(error(
                ErrorCode::Internal,
                format!("the controller answered a partition move with {other:?}"),
            )),
            Err(failure) => Err(Cluster::unavailable(failure)),
        }
    }

    /// Removes node `node` from the cluster for good (see `Command::RemoveNode`): refused,
    /// with what it still holds, while it holds a replica.
    pub(super) async fn cluster_remove_node(
        &self,
        cluster: &Cluster,
        node: u64,
    ) -> Result<Response, Response> {
        let deadline = Instant::now() + REMOVE_NODE_WAIT;
        if node == cluster.id() {
            // Once out of the controller it no longer learns what the controller does.
            return Err(error(
                ErrorCode::InvalidRequest,
                format!("this is node {node}: ask another node to remove it"),
            ));
        }
        // Asked again: the removal is done already, only the wait is left.
        let outcome = if cluster.image().removed().contains(&node) {
            Ok(Outcome::NodeRemoved)
        } else {
            cluster
                .node
                .propose(&Command::RemoveNode { id: node })
                .await
        };
        match outcome {
            // Answered once the controller let it go (a caught-up node took its vote), so
            // that stopping it then cannot cost the controller its majority; asking again
            // waits again.
            Ok(Outcome::NodeRemoved | Outcome::Refused(CommandError::NodeRemoved(_))) => {
                while cluster.node.controller_holds(node) {
                    if Instant::now() >= deadline {
                        return Err(throttled(format!(
                            "node {node} is removed from the cluster's metadata, but the controller has not let it go within {REMOVE_NODE_WAIT:?} (is the node to take its vote catching up?); do not stop it yet: ask again to wait"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Response::NodeRemoved)
            }
            Ok(Outcome::Refused(refusal)) => {
                Err(error(ErrorCode::InvalidRequest, refusal.to_string()))
            }
            Ok(other) => Err(error(
                ErrorCode::Internal,
                format!("the controller answered a node removal with {other:?}"),
            )),
            Err(failure) => Err(Cluster::unavailable(failure)),
        }
    }

    /// Topics as the cluster knows them; partition figures from this node's replicas (zero
    /// where it holds none), with each partition's replicas, leader and term as this node
    /// knows them, and each follower's lag where this node leads.
    pub(super) fn cluster_topics(&self, cluster: &Cluster) -> Vec<TopicDescription> {
        let image = cluster.node.image().borrow().clone();
        image
            .topics()
            .iter()
            .map(|(name, topic)| TopicDescription {
                name: name.clone(),
                id: topic.id,
                config: topic.config,
                partitions: topic
                    .replicas
                    .iter()
                    .enumerate()
                    .map(|(partition, replicas)| {
                        let partition = partition as u32;
                        let group = cluster.node.partition(name, partition);
                        let status = group.as_ref().map(PartitionGroup::status);
                        let stopped = status.as_ref().and_then(|s| s.stopped.clone());
                        let replication = Replication {
                            leader: status.as_ref().and_then(|s| s.leader),
                            term: status.as_ref().map_or(0, |s| s.term),
                            replicas: replicas.clone(),
                            followers: status
                                .map(|s| {
                                    s.followers
                                        .into_iter()
                                        .map(|(node, batches_behind)| FollowerLag {
                                            node,
                                            batches_behind,
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                        };
                        let (start, high_watermark, segments, size, fenced) =
                            group.map_or((0, 0, 0, 0, None), |g| {
                                let replica = g.replica.lock().unwrap_or_else(|p| p.into_inner());
                                (
                                    replica.log().log_start_offset(),
                                    replica.high_watermark(),
                                    replica.log().segment_count() as u32,
                                    replica.log().size_bytes(),
                                    replica.log().fence().reason().map(str::to_owned),
                                )
                            });
                        // What keeps this replica from serving, as a single broker reports a
                        // fenced log: its log fenced (a failed sync), or its group stopped
                        // (restarted from storage shortly).
                        let problem = fenced.or(stopped.map(|reason| {
                            format!("this replica stopped ({reason}); it restarts from its storage shortly")
                        }));
                        PartitionDescription {
                            partition,
                            log_start_offset: start,
                            high_watermark,
                            segments,
                            size_bytes: size,
                            problem,
                            replication: Some(replication),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Where `topic`'s partitions are led, as this node knows it, with the nodes' client
    /// addresses.
    pub(super) fn cluster_metadata(
        &self,
        cluster: &Cluster,
        topic: &str,
    ) -> Result<Response, Response> {
        let image = cluster.node.image().borrow().clone();
        let found = image
            .topics()
            .get(topic)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{topic}'")))?;
        Ok(Response::Metadata(TopicMetadata {
            nodes: image
                .nodes()
                .values()
                .map(|node| NodeAddress {
                    id: node.id,
                    addr: node.broker_addr.clone(),
                })
                .collect(),
            partitions: found
                .replicas
                .iter()
                .enumerate()
                .map(|(partition, replicas)| {
                    let partition = partition as u32;
                    // A node holding no replica of the partition (more nodes than replicas,
                    // or moved away) names its preferred leader, which the balancer keeps
                    // leading: a client sent there either is served or is told the leader.
                    // Naming none would send it back to this node, which cannot serve it.
                    let leader = match cluster.node.partition(topic, partition) {
                        Some(group) => group.leader(),
                        None => replicas.first().copied(),
                    };
                    PartitionPlacement {
                        partition,
                        leader,
                        replicas: replicas.clone(),
                    }
                })
                .collect(),
        }))
    }

    pub(super) async fn cluster_produce(
        &self,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
        durability: Durability,
        batch: Bytes,
    ) -> Result<Response, Response> {
        if is_internal_topic(topic) {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!("topic '{topic}' is the cluster's own: clients do not produce to it"),
            ));
        }
        let started = Instant::now();
        let group = cluster.group(topic, partition)?;
        let leader = group.leader();
        if leader != Some(cluster.node.id()) {
            return Err(cluster.not_leader(topic, partition, leader));
        }
        let metrics = cluster.topic_metrics(self.metrics.recorder(), topic);
        let rejected = |reason: Reject, response: Response| {
            metrics.rejected(reason).increment(1);
            response
        };
        let mut batch = BytesMut::from(batch);
        let (validation, dedup) = cluster
            .image()
            .topics()
            .get(topic)
            .map(|t| (t.config.validation, t.config.dedup_window.is_some()))
            .unwrap_or_default();
        let (producer, count) = {
            let view = validate_produced(&batch).map_err(|e| {
                rejected(
                    Reject::Corrupt,
                    error(ErrorCode::CorruptBatch, e.to_string()),
                )
            })?;
            // Checked by the leader before proposing: the replicas store what it decided.
            if validation.key || validation.value {
                self.check_schemas(topic, &validation, &view)
                    .await
                    .map_err(|refusal| match refusal {
                        super::produce::SchemaRefusal::Refused(response) => {
                            rejected(Reject::Schema, response)
                        }
                        super::produce::SchemaRefusal::Unavailable(response) => response,
                    })?;
            }
            (view.producer(), view.record_count())
        };
        // An idempotent batch's sequence is checked against every batch proposed before it,
        // and a batch under an idempotency-key window against every key proposed before it,
        // so their partition's proposals go one at a time; others go into Raft at once
        // (openraft appends and replicates what is waiting together).
        let turn = (producer.is_some() || dedup).then(|| cluster.proposing(topic, partition));
        let _turn = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        if let Some(producer) = producer {
            let check = group
                .replica
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .log()
                .producer_check(producer, count);
            match check {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate { base_offset } => {
                    drop(_turn);
                    return cluster
                        .committed(&group, topic, partition, base_offset)
                        .await
                        .map(|()| {
                            metrics.duplicate_batches.increment(1);
                            Response::Produced {
                                base_offset,
                                append_time_ms: now_ms(),
                                record_offsets: Vec::new(),
                            }
                        });
                }
                SequenceCheck::OutOfOrder { expected, received } => {
                    return Err(rejected(Reject::Sequence, error(
                        ErrorCode::OutOfOrderSequence,
                        format!("out of order sequence for producer {}: expected {expected}, received {received}", producer.id),
                    )))
                }
                SequenceCheck::Fenced { current_epoch } => {
                    return Err(rejected(Reject::Fenced, error(
                        ErrorCode::ProducerFenced,
                        format!("producer {} epoch {} is fenced by epoch {current_epoch}", producer.id, producer.epoch),
                    )))
                }
            }
        }
        let append_time_ms = now_ms();
        // The idempotency-key window: only the records it keeps are proposed (each replica's
        // window takes their keys as it stores them).
        let plan = if dedup {
            let planned = group
                .replica
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .plan_dedup(&batch, append_time_ms)
                .map_err(|e| {
                    rejected(
                        Reject::Corrupt,
                        error(ErrorCode::CorruptBatch, e.to_string()),
                    )
                })?;
            match planned {
                Some(mut plan) => {
                    // A dropped record's first copy may be uncommitted here (a previous
                    // leader's): acknowledged only once it cannot be undone.
                    if let Some(stored) = plan.last_stored() {
                        cluster.committed(&group, topic, partition, stored).await?;
                    }
                    match (plan.kept(), plan.take_rewritten(), producer) {
                        // Duplicates only, and no sequence to move on: nothing to store.
                        (0, _, None) => {
                            metrics.duplicate_batches.increment(1);
                            let record_offsets = plan.record_offsets(0);
                            return Ok(Response::Produced {
                                base_offset: record_offsets.first().copied().unwrap_or(0),
                                append_time_ms,
                                record_offsets,
                            });
                        }
                        (0, _, Some(producer)) => batch = sequence_marker(producer, count)?,
                        (_, Some(rewritten), _) => batch = BytesMut::from(&rewritten[..]),
                        (_, None, _) => {}
                    }
                    Some(plan)
                }
                None => None,
            }
        } else {
            None
        };
        batch::stamp(&mut batch, 0, append_time_ms);
        // What is stored: the records the window kept (none for a sequence marker).
        let stored_records = match &plan {
            Some(plan) => plan.kept() as u64,
            None => u64::from(count),
        };
        let stored_bytes = batch.len() as u64;
        let proposal = Proposal::new(batch.freeze());
        let proposal = match durability {
            Durability::Fsync => proposal,
            // Acknowledged once a majority holds it, synced or not.
            Durability::Memory => proposal.unsynced(),
        };
        let proposed = group.propose(proposal).await;
        if proposed.is_ok() {
            if stored_records == 0 && plan.is_some() {
                // Every record was a duplicate (a sequence marker went in its place).
                metrics.duplicate_batches.increment(1);
            }
            metrics.records_in.increment(stored_records);
            metrics.bytes_in.increment(stored_bytes);
            self.metrics
                .produce_duration(durability)
                .record(started.elapsed());
        }
        match proposed {
            Ok(applied) => Ok(match plan {
                None => Response::Produced {
                    base_offset: applied.base_offset,
                    append_time_ms,
                    record_offsets: Vec::new(),
                },
                Some(plan) => {
                    let record_offsets = plan.record_offsets(applied.base_offset);
                    Response::Produced {
                        base_offset: record_offsets
                            .first()
                            .copied()
                            .unwrap_or(applied.base_offset),
                        append_time_ms,
                        record_offsets,
                    }
                }
            }),
            // Whether it may still commit or not, the producer resends to the new leader,
            // which deduplicates an idempotent batch.
            Err(ProposeError::NotLeader { leader } | ProposeError::Discarded { leader }) => {
                Err(cluster.not_leader(topic, partition, leader))
            }
            Err(ProposeError::Failed(failure)) => Err(error(
                ErrorCode::Storage,
                format!("{topic}/{partition}: {failure}"),
            )),
        }
    }

    /// Committed batches from `offset`, from this node's replica, waiting up to
    /// `max_wait_ms` for `min_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn cluster_fetch(
        &self,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> Result<Response, Response> {
        refuse_internal_reads(topic)?;
        let started = Instant::now();
        let group = cluster.group(topic, partition)?;
        let max_bytes = (max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(max_wait_ms.min(FETCH_WAIT_MS_MAX)));
        let wanted = (min_bytes as usize).max(1);
        let mut progress = group.progress();
        loop {
            let (bytes, high_watermark, log_start_offset) = {
                let replica = group.replica.lock().unwrap_or_else(|p| p.into_inner());
                let high_watermark = replica.high_watermark();
                let log_start_offset = replica.log().log_start_offset();
                if offset < log_start_offset {
                    return Err(error(
                        ErrorCode::OffsetOutOfRange,
                        format!("offset {offset} is out of range: the log holds [{log_start_offset}, {high_watermark})"),
                    ));
                }
                if offset > high_watermark {
                    // Not out of range: this replica may not have applied it yet (a node just
                    // restarted learns the commit position from its leader), and a consumer
                    // told "out of range" would apply its reset policy and skip records.
                    return Err(throttled(format!(
                        "offset {offset} is past what this replica of {topic}/{partition} has committed ({high_watermark}) yet"
                    )));
                }
                let bytes = if offset == high_watermark {
                    Vec::new()
                } else {
                    let read = replica.log().read(offset, max_bytes).map_err(|e| match e {
                        ReadError::OffsetOutOfRange { .. } => {
                            error(ErrorCode::OffsetOutOfRange, e.to_string())
                        }
                        other => error(ErrorCode::Storage, other.to_string()),
                    })?;
                    committed_prefix(read.bytes, high_watermark)
                };
                (bytes, high_watermark, log_start_offset)
            };
            let now = Instant::now();
            if bytes.len() >= wanted || now >= deadline {
                let metrics = cluster.topic_metrics(self.metrics.recorder(), topic);
                metrics.records_out.increment(batch::count_records(&bytes));
                metrics.bytes_out.increment(bytes.len() as u64);
                self.metrics.fetch_duration.record(started.elapsed());
                return Ok(Response::Fetched {
                    high_watermark,
                    log_start_offset,
                    batches: bytes.into(),
                });
            }
            progress.changed(deadline - now).await;
        }
    }

    pub(super) fn cluster_list_offsets(
        &self,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<Response, Response> {
        refuse_internal_reads(topic)?;
        let group = cluster.group(topic, partition)?;
        let replica = group.replica.lock().unwrap_or_else(|p| p.into_inner());
        let high_watermark = replica.high_watermark();
        let (offset, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (replica.log().log_start_offset(), -1),
            OffsetSpec::Latest => (high_watermark, -1),
            OffsetSpec::Timestamp(ts) => replica
                .log()
                .offset_for_timestamp(ts)
                .map_err(|e| error(ErrorCode::Storage, e.to_string()))?
                .filter(|(offset, _)| *offset < high_watermark)
                .unwrap_or((high_watermark, -1)),
        };
        Ok(Response::Offset {
            offset,
            timestamp_ms,
        })
    }
}

/// Internal topics hold other clients' state (every group's committed offsets): not read by
/// clients, whatever their grants.
/// What a replicated partition stores for an idempotent batch whose records were all
/// duplicates: a one-record control batch stamped with the batch's last sequence (`count`
/// records from its base), so every replica's producer state moves on as the producer did;
/// consumers pass over it.
fn sequence_marker(producer: batch::ProducerStamp, count: u32) -> Result<BytesMut, Response> {
    let mut writer = batch::BatchWriter::new();
    let last = batch::ProducerStamp {
        base_sequence: producer
            .base_sequence
            .wrapping_add(count.saturating_sub(1) as i32),
        ..producer
    };
    writer
        .push(
            0,
            Some(herald_raft::entry::SEQUENCE_MARKER_KEY),
            None,
            std::iter::empty(),
        )
        .and_then(|()| writer.finish_control_for(last))
        .map(|bytes| BytesMut::from(&bytes[..]))
        .map_err(|e| error(ErrorCode::Internal, e.to_string()))
}

fn refuse_internal_reads(topic: &str) -> Result<(), Response> {
    if is_internal_topic(topic) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("topic '{topic}' is the cluster's own: clients do not read it"),
        ));
    }
    Ok(())
}

/// The whole batches of `bytes` below `high_watermark` (a batch is one Raft entry: all of it
/// is committed or none), found by their headers: served as stored, as a single broker
/// serves them (consumers check each batch's CRC; this computed the CRC of every fetched
/// byte once more, and a damaged batch cut the answer short before it, so a consumer was
/// sent nothing at that offset forever instead of being told of the damage).
fn committed_prefix(mut bytes: Vec<u8>, high_watermark: i64) -> Vec<u8> {
    let end = batch::prefix_before(&bytes, high_watermark);
    bytes.truncate(end);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_wire::batch::{BatchBuilder, Record};

    /// A node removal is answered (done, or "ask again") before a client gives up on it.
    #[test]
    fn a_removal_is_answered_within_a_clients_timeout() {
        assert!(
            REMOVE_NODE_WAIT + Duration::from_secs(5) <= herald_broker_client::REQUEST_TIMEOUT,
            "{REMOVE_NODE_WAIT:?}"
        );
    }

    /// A node names the address it was told to advertise, else the one it listens on; one
    /// listening on every interface must be told (0.0.0.0 in metadata sends clients
    /// nowhere), and an address without a port is refused.
    #[test]
    fn a_node_advertises_a_dialable_address() {
        let loopback: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:7070".parse().expect("addr");
        let any6: SocketAddr = "[::]:7070".parse().expect("addr");
        assert_eq!(
            advertised_addr(None, loopback).expect("bound"),
            "127.0.0.1:7070"
        );
        assert_eq!(
            advertised_addr(Some("broker-1.internal:9000"), any).expect("told"),
            "broker-1.internal:9000"
        );
        for unspecified in [any, any6] {
            let refused = advertised_addr(None, unspecified).expect_err("no client dials it");
            assert!(refused.to_string().contains("--advertise"), "{refused}");
        }
        for bad in [
            "",
            "  ",
            "broker-1",
            "broker-1:",
            "broker-1:abc",
            "broker-1:0",
            "broker-1:70000",
            ":7070",
            "::1:7070",
            "[::1]",
        ] {
            assert!(advertised_addr(Some(bad), loopback).is_err(), "{bad:?}");
        }
        assert_eq!(
            advertised_addr(Some("[::1]:7070"), loopback).expect("IPv6"),
            "[::1]:7070"
        );
        let long = format!("{}:7070", "h".repeat(300));
        assert!(advertised_addr(Some(&long), loopback).is_err());
    }

    #[test]
    fn only_committed_batches_are_served() {
        let mut bytes = Vec::new();
        for base in [0i64, 2, 4] {
            let mut builder = BatchBuilder::new();
            for _ in 0..2 {
                builder.push(Record::default());
            }
            let mut encoded = builder.encode().expect("batch");
            batch::stamp(&mut encoded, base, 0);
            bytes.extend_from_slice(&encoded);
        }
        let size = bytes.len() / 3;
        assert_eq!(committed_prefix(bytes.clone(), 6).len(), 3 * size);
        assert_eq!(committed_prefix(bytes.clone(), 4).len(), 2 * size);
        assert_eq!(committed_prefix(bytes.clone(), 3).len(), size);
        assert!(committed_prefix(bytes, 1).is_empty());
    }
}
