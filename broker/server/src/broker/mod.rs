//! The broker's request handling: topics, produce (validate → check schema IDs → append →
//! optional group-commit fsync), fetch with long polling, offsets. Everything here is
//! transport-agnostic: `server.rs` feeds it decoded requests from QUIC streams.
//!
//! What lives where (`impl Broker` is spread over the files):
//! - `mod.rs` (here): the `Broker`, `Topic` and `Partition` types, `Broker::open`, request
//!   dispatch (`Broker::handle`), consumer-group requests, retention and gauges, and the
//!   helpers the other files share (topic and partition lookup, error responses).
//! - `topics.rs`: create, delete, list and describe topics; the `topic.meta` file that makes a
//!   topic exist; `open_topic`, which opens (and recovers) a topic's partitions.
//! - `produce.rs`: the produce path: batch checks, schema-ID checks, append, group-commit
//!   fsync or flush-behind.
//! - `fetch.rs`: fetch with long polling, list offsets.
//!
//! The wall clock is `crate::clock::now_ms`; metadata files are written with
//! `crate::fs::write_atomically`.

mod cluster;
mod cluster_groups;
mod fetch;
mod produce;
mod topics;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use herald_broker_core::groups::GroupConfig;
use herald_broker_core::log::{Fence, PartitionLog};
use herald_broker_core::storage::{StorageError, SyncHandle};
use herald_metrics::broker::{GROUP_LAG_RECORDS, GROUP_LAG_SECONDS};
use herald_metrics::Metrics;
use herald_wire::groups::{GroupRequest, TopicPartition};
use herald_wire::messages::{TopicConfig, TopicId};
use herald_wire::{ErrorCode, Request, Response};

use crate::clock::now_ms;
use crate::coordinator::{Coordinator, TopicIds};
use crate::fs::FileStorage;
use crate::group_commit::GroupCommit;
use crate::metrics::{BrokerMetrics, PartitionGauges, TopicMetrics};
use crate::producer_ids::ProducerIds;
use crate::schema_cache::SchemaCache;

pub use cluster::{
    Cluster, ClusterConfig, ClusterError, Timing, REPLICAS_DIR, REPLICATION_FACTOR_DEFAULT,
};
pub use cluster_groups::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
pub use produce::FLUSH_BEHIND_BYTES;
use topics::{describe, load_topic_meta, open_topic, TOPIC_META_FILE};
pub use topics::{validate_topic_name, DURATION_MAX, SEGMENT_BYTES_MIN, TOPICS_MAX};

/// Idempotent-producer state idle this long is forgotten (Kafka's producer.id.expiration.ms
/// is one day; a week tolerates long-paused producers).
pub const PRODUCER_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a Throttled answer asks the client to wait.
pub const THROTTLE_RETRY_AFTER_MS: u32 = 20;

pub struct Partition {
    log: Mutex<PartitionLog<FileStorage>>,
    /// Sync handle of the active segment (by `PartitionLog::active_segment`), reused until
    /// another segment becomes active.
    sync_handle: Mutex<Option<(u64, Arc<dyn SyncHandle>)>>,
    appended: tokio::sync::Notify,
    /// Bytes appended since the last sync (or flush-behind start) of the active segment.
    unflushed_bytes: AtomicU64,
    /// A flush-behind writeback start is running (at most one per partition).
    flushing: Arc<AtomicBool>,
    /// The log's fence (a shared clone): set by the first failed sync of the partition's
    /// segment, in the log or here (group commit, flush-behind); from then on the partition
    /// acknowledges no produce, since a later sync that succeeds says nothing of the pages the
    /// failed one lost. A restart recovers from the log.
    fence: Fence,
    gauges: PartitionGauges,
}

impl Partition {
    fn log(&self) -> MutexGuard<'_, PartitionLog<FileStorage>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_handle(
        &self,
        log: &PartitionLog<FileStorage>,
    ) -> Result<Arc<dyn SyncHandle>, StorageError> {
        let mut cached = self.sync_handle.lock().unwrap_or_else(|p| p.into_inner());
        let active = log.active_segment();
        if let Some((cached_active, handle)) = cached.as_ref() {
            if *cached_active == active {
                return Ok(handle.clone());
            }
        }
        let handle = log.sync_handle()?;
        *cached = Some((active, handle.clone()));
        Ok(handle)
    }
}

pub struct Topic {
    pub name: String,
    /// This incarnation of the topic (a topic deleted and created again gets a new one).
    pub id: TopicId,
    pub config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
    metrics: TopicMetrics,
}

pub struct Broker {
    topics_dir: PathBuf,
    storage: FileStorage,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Names of topics whose deletion has not finished (at most `TOPICS_MAX`): not created
    /// again until their files are gone.
    deleting: Mutex<BTreeSet<String>>,
    group_commit: GroupCommit,
    schemas: SchemaCache,
    producer_ids: ProducerIds,
    coordinator: Coordinator,
    producer_expiry_ms: i64,
    pub metrics: BrokerMetrics,
    /// Set when this broker is a node of a cluster (see `cluster`).
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::error(code, message)
}

/// The answer to an InitProducer the producer-id table refused.
fn producer_id_refused(refusal: &herald_broker_core::producer_ids::ProducerIdRefusal) -> Response {
    use herald_broker_core::producer_ids::ProducerIdRefusal;
    let code = match refusal {
        ProducerIdRefusal::NotOwner { .. } => ErrorCode::NotAuthorized,
        ProducerIdRefusal::InvalidName(_)
        | ProducerIdRefusal::TooMany
        | ProducerIdRefusal::TooManyForPrincipal(_) => ErrorCode::InvalidRequest,
    };
    error(code, refusal.to_string())
}

fn throttled(message: impl Into<String>) -> Response {
    Response::Error(herald_wire::messages::ErrorBody {
        code: ErrorCode::Throttled,
        retry_after_ms: THROTTLE_RETRY_AFTER_MS,
        message: message.into(),
    })
}

impl Broker {
    /// Opens every topic under `data_dir/topics`, recovering each partition; records into
    /// `metrics`.
    pub fn open(
        data_dir: &Path,
        schemas: SchemaCache,
        metrics: Metrics,
        groups: GroupConfig,
        producer_expiry_ms: i64,
    ) -> Result<Self, OpenError> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|source| OpenError::Io {
            path: topics_dir.display().to_string(),
            source,
        })?;
        let storage = FileStorage::new(&topics_dir);
        let metrics = BrokerMetrics::new(metrics);
        let mut topics = BTreeMap::new();
        let entries = std::fs::read_dir(&topics_dir).map_err(|source| OpenError::Io {
            path: topics_dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = entry.path().join(TOPIC_META_FILE);
            let Ok(bytes) = std::fs::read(&meta) else {
                tracing::warn!(topic = %name, "directory without topic.meta (an interrupted create or delete): removing it");
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            };
            let (config, id) = load_topic_meta(&meta, &bytes).map_err(|e| OpenError::Topic {
                topic: name.clone(),
                reason: e.to_string(),
            })?;
            let topic = open_topic(
                &storage,
                &name,
                id,
                config,
                metrics.recorder(),
                producer_expiry_ms,
            )
            .map_err(|reason| OpenError::Topic {
                topic: name.clone(),
                reason,
            })?;
            topics.insert(name, Arc::new(topic));
        }
        let producer_ids = ProducerIds::open(data_dir).map_err(|e| OpenError::Io {
            path: data_dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let coordinator = Coordinator::open(data_dir, groups).map_err(|source| OpenError::Io {
            path: data_dir.join("groups").display().to_string(),
            source,
        })?;
        Ok(Self {
            topics_dir,
            storage,
            topics: RwLock::new(topics),
            deleting: Mutex::default(),
            group_commit: GroupCommit::start(metrics.recorder()),
            schemas,
            producer_ids,
            coordinator,
            producer_expiry_ms,
            metrics,
            cluster: std::sync::OnceLock::new(),
        })
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Topic>, Arc<Partition>), Response> {
        let topic = self
            .topic(topic)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{topic}'")))?;
        let found = topic
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| {
                error(
                    ErrorCode::UnknownPartition,
                    format!(
                        "topic '{}' has {} partitions; {partition} does not exist",
                        topic.name,
                        topic.partitions.len()
                    ),
                )
            })?;
        Ok((topic, found))
    }

    pub async fn handle(&self, request: Request) -> Response {
        let request = match self.cluster.get().cloned() {
            Some(cluster) => match self.handle_in_cluster(&cluster, request).await {
                Ok(response) => return response,
                Err(request) => request,
            },
            None => request,
        };
        let result = match request {
            Request::CreateTopic { name, config } => self.create_topic(name, config),
            Request::DeleteTopic { name } => self.delete_topic(&name),
            Request::ListTopics => Ok(Response::Topics(
                self.topics
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|t| describe(t))
                    .collect(),
            )),
            Request::DescribeTopic { name } => self
                .topic(&name)
                .map(|t| Response::Topic(Box::new(describe(&t))))
                .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{name}'"))),
            Request::Produce {
                topic,
                partition,
                durability,
                batch,
            } => self.produce(&topic, partition, durability, batch).await,
            Request::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait_ms,
                min_bytes,
            } => {
                self.fetch(&topic, partition, offset, max_bytes, max_wait_ms, min_bytes)
                    .await
            }
            Request::ListOffsets {
                topic,
                partition,
                spec,
            } => self.list_offsets(&topic, partition, spec),
            Request::InitProducer { name } => Ok(self.init_producer(&name, None).await),
            // A single broker serves every partition itself.
            Request::Metadata { topic } => self
                .topic(&topic)
                .map(|t| {
                    Response::Metadata(herald_wire::messages::TopicMetadata {
                        nodes: Vec::new(),
                        partitions: (0..t.partitions.len() as u32)
                            .map(|partition| herald_wire::messages::PartitionPlacement {
                                partition,
                                leader: None,
                                replicas: Vec::new(),
                            })
                            .collect(),
                    })
                })
                .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{topic}'"))),
            Request::MovePartition { .. } => Err(error(
                ErrorCode::InvalidRequest,
                "this broker is not a cluster node: its partitions have no replicas to move",
            )),
            Request::RemoveNode { .. } => Err(error(
                ErrorCode::InvalidRequest,
                "this broker is not a cluster node: it has no other nodes to remove",
            )),
            Request::Group(request) => self.handle_group(request),
            Request::Security(request) => Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "{} is answered by the server's security layer, not the broker",
                    request.api().name()
                ),
            )),
        };
        result.unwrap_or_else(|response| response)
    }

    /// Answers the requests a cluster serves differently (topics, produce, fetch, offsets);
    /// hands any other back.
    async fn handle_in_cluster(
        &self,
        cluster: &Cluster,
        request: Request,
    ) -> Result<Response, Request> {
        let result = match request {
            Request::CreateTopic { name, config } => {
                self.cluster_create_topic(cluster, name, config).await
            }
            Request::DeleteTopic { name } => self.cluster_delete_topic(cluster, &name).await,
            Request::MovePartition {
                topic,
                partition,
                replicas,
            } => {
                self.cluster_move_partition(cluster, &topic, partition, replicas)
                    .await
            }
            Request::RemoveNode { node } => self.cluster_remove_node(cluster, node).await,
            Request::Metadata { topic } => self.cluster_metadata(cluster, &topic),
            Request::ListTopics => Ok(Response::Topics(self.cluster_topics(cluster))),
            Request::DescribeTopic { name } => self
                .cluster_topics(cluster)
                .into_iter()
                .find(|t| t.name == name)
                .map(|t| Response::Topic(Box::new(t)))
                .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic '{name}'"))),
            Request::Produce {
                topic,
                partition,
                durability,
                batch,
            } => {
                self.cluster_produce(cluster, &topic, partition, durability, batch)
                    .await
            }
            Request::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait_ms,
                min_bytes,
            } => {
                self.cluster_fetch(
                    cluster,
                    &topic,
                    partition,
                    offset,
                    max_bytes,
                    max_wait_ms,
                    min_bytes,
                )
                .await
            }
            Request::ListOffsets {
                topic,
                partition,
                spec,
            } => self.cluster_list_offsets(cluster, &topic, partition, spec),
            Request::Group(request) => self.cluster_group(cluster, request, 0).await,
            other => return Err(other),
        };
        Ok(result.unwrap_or_else(|response| response))
    }

    /// A producer id and epoch for `name`, handed to `owner` (see
    /// [`ProducerIdTable::init`](herald_broker_core::producer_ids::ProducerIdTable::init)):
    /// from this broker's `producers.meta`, or on a cluster from the controller (one counter
    /// for every node).
    pub async fn init_producer(
        &self,
        name: &str,
        owner: Option<&herald_auth::acl::Principal>,
    ) -> Response {
        use crate::producer_ids::ProducerIdError;
        if let Some(cluster) = self.cluster.get() {
            return self
                .cluster_init_producer(cluster, name, owner.map(|p| p.name()))
                .await
                .unwrap_or_else(|response| response);
        }
        match self.producer_ids.init(name, owner.map(|p| p.name())) {
            Ok((producer_id, epoch)) => Response::ProducerInit { producer_id, epoch },
            Err(ProducerIdError::Refused(refusal)) => producer_id_refused(&refusal),
            Err(e) => error(ErrorCode::Storage, e.to_string()),
        }
    }

    /// Whom producer id `id` was handed to.
    pub fn producer_owner(&self, id: i64) -> crate::producer_ids::ProducerOwner {
        if let Some(cluster) = self.cluster.get() {
            return cluster.producer_owner(id);
        }
        self.producer_ids.owner(id)
    }

    fn deleting(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.deleting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each topic's partition count and incarnation, by name.
    fn topic_shapes(&self) -> (BTreeMap<String, u32>, TopicIds) {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let counts = topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.partitions.len() as u32))
            .collect();
        let ids = topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.id))
            .collect();
        (counts, ids)
    }

    fn handle_group(&self, request: GroupRequest) -> Result<Response, Response> {
        let (partitions, ids) = self.topic_shapes();
        let now = now_ms();
        let failed = |(code, message): (ErrorCode, String)| error(code, message);
        let answered = self
            .coordinator
            .answer(request, (&partitions, &ids), now, |group| {
                self.describe_group(group, &partitions, &ids, now)
            });
        let answer = match answered.map_err(|unanswered| *unanswered) {
            Ok(answer) => answer.map_err(failed)?,
            Err(GroupRequest::Commit {
                group,
                member_id,
                member_epoch,
                offsets,
            }) => self
                .coordinator
                .commit(
                    &group,
                    (&member_id, member_epoch),
                    offsets,
                    &partitions,
                    &ids,
                    now,
                )
                .map_err(failed)?,
            Err(GroupRequest::Delete { group }) => self
                .coordinator
                .delete(&group, &partitions, now)
                .map_err(failed)?,
            Err(other) => {
                return Err(error(
                    ErrorCode::Internal,
                    format!("{} was not answered", other.api().name()),
                ))
            }
        };
        Ok(Response::Group(answer))
    }

    fn describe_group(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        ids: &TopicIds,
        now: i64,
    ) -> Result<herald_wire::groups::GroupDescription, (ErrorCode, String)> {
        let bounds = |tp: &TopicPartition| {
            let (_, found) = self.partition(&tp.topic, tp.partition).ok()?;
            let log = found.log();
            Some((log.log_start_offset(), log.high_watermark()))
        };
        let append_time = |tp: &TopicPartition, offset: i64| {
            let (_, found) = self.partition(&tp.topic, tp.partition).ok()?;
            let time = found.log().append_time_at(offset);
            time
        };
        self.coordinator
            .describe(group, partitions, ids, now, bounds, append_time)
    }

    /// Applies retention to every partition, and offset retention to groups without members;
    /// returns segments deleted.
    pub fn enforce_retention(&self) -> usize {
        let (partitions, _) = self.topic_shapes();
        for group in self.coordinator.expire_offsets(&partitions, now_ms()) {
            tracing::info!(
                group,
                "deleted a group without members past the offsets retention"
            );
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let now = now_ms();
        let mut deleted = 0;
        for topic in topics {
            for (id, partition) in topic.partitions.iter().enumerate() {
                match partition.log().enforce_retention(now) {
                    Ok(retained) => deleted += retained.segments_deleted,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = id, error = %e, "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// Refreshes gauges (segments, high watermarks, group lag, cluster replicas) before
    /// `/metrics` renders.
    pub fn update_gauges(&self) {
        let (partitions, ids) = self.topic_shapes();
        let now = now_ms();
        let recorder = self.metrics.recorder();
        let described: Vec<_> = match self.cluster() {
            Some(cluster) => {
                cluster.record_replicas(recorder);
                self.cluster_group_lags(cluster)
            }
            None => self
                .coordinator
                .group_names()
                .iter()
                .filter_map(|group| self.describe_group(group, &partitions, &ids, now).ok())
                .collect(),
        };
        for description in described {
            let group = description.group;
            for lag in description.partitions {
                let partition = lag.partition.partition.to_string();
                let labels = [
                    ("group", group.as_str()),
                    ("topic", lag.partition.topic.as_str()),
                    ("partition", partition.as_str()),
                ];
                recorder
                    .gauge(GROUP_LAG_RECORDS, &labels)
                    .set(lag.lag_records as f64);
                let seconds = lag.lag_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
                recorder.gauge(GROUP_LAG_SECONDS, &labels).set(seconds);
            }
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for topic in topics {
            for partition in &topic.partitions {
                let log = partition.log();
                let gauges = &partition.gauges;
                gauges.segments.set(log.segment_count() as f64);
                gauges.high_watermark.set(log.high_watermark() as f64);
                gauges.bytes.set(log.size_bytes() as f64);
                gauges
                    .fenced
                    .set(f64::from(u8::from(log.fence().reason().is_some())));
            }
        }
    }
}

/// What the broker's in-crate tests share: a broker over a temporary directory and a batch of
/// one record.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use herald_metrics::Metrics;
    use herald_wire::batch::{BatchBuilder, Record};

    use super::Broker;
    use crate::schema_cache::SchemaCache;

    /// A broker over `dir`, without a registry, default groups.
    pub(crate) fn broker(dir: &Path) -> Broker {
        Broker::open(
            dir,
            SchemaCache::new(None),
            Metrics::new(),
            Default::default(),
            1_000_000,
        )
        .expect("open")
    }

    /// A batch of one record holding `value`.
    pub(crate) fn one_record(value: &[u8]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        });
        builder.encode().expect("batch")
    }
}
