//! The broker's request handling: topics, produce (validate → check schema IDs → append →
//! optional group-commit fsync), fetch with long polling, offsets. Everything here is
//! transport-agnostic: `server.rs` feeds it decoded requests from QUIC streams.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_broker_core::groups::{GroupConfig, Heartbeat};
use herald_broker_core::log::{AppendError, LogConfig, PartitionLog, ReadError, SEGMENT_BYTES_MAX};
use herald_broker_core::storage::{StorageError, SyncHandle};
use herald_broker_core::validation::{validate_batch, BatchVerdict};
use herald_metrics::Metrics;
use herald_wire::batch::BatchView;
use herald_wire::groups::{GroupRequest, GroupResponse};
use herald_wire::limits::{
    FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX,
};
use herald_wire::messages::{
    Durability, OffsetSpec, PartitionDescription, TopicConfig, TopicDescription,
};
use herald_wire::{Api, ErrorCode, Request, Response};

use crate::coordinator::Coordinator;
use crate::fs::FileStorage;
use crate::group_commit::{GroupCommit, SyncError};
use crate::producer_ids::ProducerIds;
use crate::schema_cache::SchemaCache;

/// Smallest segment a topic may configure (smaller only makes sense in tests).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Idempotent-producer state idle this long is forgotten (Kafka's producer.id.expiration.ms
/// is one day; a week tolerates long-paused producers).
pub const PRODUCER_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a Throttled answer asks the client to wait.
pub const THROTTLE_RETRY_AFTER_MS: u32 = 20;
/// Most topics one broker holds.
pub const TOPICS_MAX: usize = 10_000;
/// Name of the file holding a topic's configuration, inside the topic's directory.
const TOPIC_META_FILE: &str = "topic.meta";
/// Flush-behind: once a partition has this many bytes appended with `Memory` durability and
/// not synced, a background sync of its active segment starts (the produce does not wait for
/// it). Sealing a segment syncs it under the partition lock (recovery verifies only the active
/// segment); without flush-behind a segment written without fsync reaches that point with up
/// to a whole segment (1 GiB by default) dirty, and every produce waits for its writeback
/// (~0.8 s at 1M records/s in the fixed-rate bench).
pub const FLUSH_BEHIND_BYTES: u64 = 16 * 1024 * 1024;

pub struct Partition {
    log: Mutex<PartitionLog<FileStorage>>,
    /// Sync handle of the active segment, reused until the log rolls.
    sync_handle: Mutex<Option<(i64, Arc<dyn SyncHandle>)>>,
    appended: tokio::sync::Notify,
    /// Bytes appended since the last sync (or flush-behind start) of the active segment.
    unflushed_bytes: AtomicU64,
    /// A flush-behind sync is running (at most one per partition).
    flushing: Arc<AtomicBool>,
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
        let base = log.active_base_offset();
        if let Some((cached_base, handle)) = cached.as_ref() {
            if *cached_base == base {
                return Ok(handle.clone());
            }
        }
        let handle = log.sync_handle()?;
        *cached = Some((base, handle.clone()));
        Ok(handle)
    }
}

impl Broker {
    /// Starts a background sync of `partition`'s active segment once `FLUSH_BEHIND_BYTES`
    /// were appended without one (see the constant). Called with the log locked.
    fn flush_behind(
        &self,
        partition: &Partition,
        log: &PartitionLog<FileStorage>,
        topic: &str,
        appended: u64,
    ) {
        let pending = partition
            .unflushed_bytes
            .fetch_add(appended, Ordering::Relaxed)
            + appended;
        if pending < FLUSH_BEHIND_BYTES || partition.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        partition.unflushed_bytes.store(0, Ordering::Relaxed);
        let handle = match partition.sync_handle(log) {
            Ok(handle) => handle,
            Err(error) => {
                partition.flushing.store(false, Ordering::Release);
                tracing::warn!(topic, %error, "flush-behind: no sync handle");
                return;
            }
        };
        let flushing = partition.flushing.clone();
        let metrics = self.metrics.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = handle.sync() {
                tracing::error!(topic, %error, "flush-behind sync failed");
                metrics.counter_add(
                    "herald_broker_flush_behind_errors_total",
                    "Background syncs of Memory-durability appends that failed, by topic.",
                    &[("topic", topic.as_str())],
                    1,
                );
            }
            flushing.store(false, Ordering::Release);
        });
    }
}

pub struct Topic {
    pub name: String,
    pub config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

pub struct Broker {
    topics_dir: PathBuf,
    storage: FileStorage,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    group_commit: GroupCommit,
    schemas: SchemaCache,
    producer_ids: ProducerIds,
    coordinator: Coordinator,
    producer_expiry_ms: i64,
    pub metrics: Arc<Metrics>,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn log_config(config: &TopicConfig, producer_expiry_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes: config.segment_bytes,
        segment_age_ms: config.segment_age.as_millis() as u64,
        retention_ms: config.retention.map(|d| d.as_millis() as u64),
        retention_bytes: config.retention_bytes,
        index_interval_bytes: 4096,
        producer_expiry_ms,
        dedup_window_ms: config.dedup_window.map(|d| d.as_millis() as i64),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::error(code, message)
}

fn throttled(message: impl Into<String>) -> Response {
    Response::Error(herald_wire::messages::ErrorBody {
        code: ErrorCode::Throttled,
        retry_after_ms: THROTTLE_RETRY_AFTER_MS,
        message: message.into(),
    })
}

/// Kafka's topic-name rule: ASCII letters, digits, `.`, `_`, `-`; not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > TOPIC_NAME_BYTES_MAX
        || !valid_chars
        || name == "."
        || name == ".."
    {
        return Err(format!("invalid topic name '{name}': use 1 to {TOPIC_NAME_BYTES_MAX} of [A-Za-z0-9._-], not '.' or '..'"));
    }
    Ok(())
}

impl Broker {
    /// Opens every topic under `data_dir/topics`, recovering each partition.
    pub fn open(
        data_dir: &Path,
        schemas: SchemaCache,
        metrics: Arc<Metrics>,
        groups: GroupConfig,
        producer_expiry_ms: i64,
    ) -> Result<Self, OpenError> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|source| OpenError::Io {
            path: topics_dir.display().to_string(),
            source,
        })?;
        let storage = FileStorage::new(&topics_dir);
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
            let config = match Request::decode(Api::CreateTopic, &bytes) {
                Ok(Request::CreateTopic { config, .. }) => config,
                _ => {
                    return Err(OpenError::Topic {
                        topic: name,
                        reason: "unreadable topic.meta".to_owned(),
                    })
                }
            };
            let topic = open_topic(&storage, &name, config, &metrics, producer_expiry_ms).map_err(
                |reason| OpenError::Topic {
                    topic: name.clone(),
                    reason,
                },
            )?;
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
            group_commit: GroupCommit::start(metrics.clone()),
            schemas,
            producer_ids,
            coordinator,
            producer_expiry_ms,
            metrics,
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
            Request::InitProducer { name } => match self.producer_ids.init(&name) {
                Ok((producer_id, epoch)) => Ok(Response::ProducerInit { producer_id, epoch }),
                Err(e @ crate::producer_ids::ProducerIdError::InvalidName(_)) => {
                    Err(error(ErrorCode::InvalidRequest, e.to_string()))
                }
                Err(e) => Err(error(ErrorCode::Storage, e.to_string())),
            },
            Request::Group(request) => self.handle_group(request),
        };
        result.unwrap_or_else(|response| response)
    }

    fn create_topic(&self, name: String, config: TopicConfig) -> Result<Response, Response> {
        validate_topic_name(&name).map_err(|m| error(ErrorCode::InvalidRequest, m))?;
        if config.partitions == 0 || config.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                format!("partitions must be within 1..={PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                format!("segment_bytes must be within {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"),
            ));
        }
        if config.segment_age.is_zero() {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                "segment_age must be positive",
            ));
        }
        if (config.validation.key || config.validation.value) && !self.schemas.has_registry() {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                "schema validation needs a registry: start the broker with --registry URL",
            ));
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(&name) {
            return Err(error(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if topics.len() >= TOPICS_MAX {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                format!("the broker already holds {TOPICS_MAX} topics"),
            ));
        }
        let storage_error = |e: String| error(ErrorCode::Storage, e);
        let topic = open_topic(
            &self.storage,
            &name,
            config,
            &self.metrics,
            self.producer_expiry_ms,
        )
        .map_err(storage_error)?;
        // The meta file is written last and atomically: a topic exists once it is there.
        let mut body = Vec::new();
        Request::CreateTopic {
            name: name.clone(),
            config,
        }
        .encode(&mut body);
        write_atomically(&self.topics_dir.join(&name), TOPIC_META_FILE, &body)
            .map_err(|e| storage_error(e.to_string()))?;
        topics.insert(name, Arc::new(topic));
        Ok(Response::TopicCreated)
    }

    fn delete_topic(&self, name: &str) -> Result<Response, Response> {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let Some(_topic) = removed else {
            return Err(error(
                ErrorCode::UnknownTopic,
                format!("unknown topic '{name}'"),
            ));
        };
        let dir = self.topics_dir.join(name);
        // The meta file goes first so that a crash mid-delete leaves no half topic behind.
        let _ = std::fs::remove_file(dir.join(TOPIC_META_FILE));
        std::fs::remove_dir_all(&dir).map_err(|e| {
            error(
                ErrorCode::Storage,
                format!("cannot delete {}: {e}", dir.display()),
            )
        })?;
        Ok(Response::TopicDeleted)
    }

    async fn produce(
        &self,
        topic_name: &str,
        partition_id: u32,
        durability: Durability,
        mut batch: Vec<u8>,
    ) -> Result<Response, Response> {
        let started = Instant::now();
        let (topic, partition) = self.partition(topic_name, partition_id)?;
        let record_count;
        {
            let view = BatchView::parse(&batch).map_err(|e| {
                self.reject(
                    topic_name,
                    "corrupt",
                    error(ErrorCode::CorruptBatch, e.to_string()),
                )
            })?;
            if view.size() != batch.len() {
                return Err(self.reject(
                    topic_name,
                    "corrupt",
                    error(ErrorCode::CorruptBatch, "bytes after the batch"),
                ));
            }
            view.validate_records().map_err(|e| {
                self.reject(
                    topic_name,
                    "corrupt",
                    error(ErrorCode::CorruptBatch, e.to_string()),
                )
            })?;
            record_count = view.record_count();
            self.check_schemas(&topic, &view).await?;
        }
        let (appended, handle) = {
            let mut log = partition.log();
            let appended = log.append(&mut batch, now_ms()).map_err(|e| match e {
                AppendError::OutOfOrderSequence { .. } => self.reject(
                    topic_name,
                    "sequence",
                    error(ErrorCode::OutOfOrderSequence, e.to_string()),
                ),
                AppendError::ProducerFenced { .. } => self.reject(
                    topic_name,
                    "fenced",
                    error(ErrorCode::ProducerFenced, e.to_string()),
                ),
                AppendError::Batch(_) => self.reject(
                    topic_name,
                    "corrupt",
                    error(ErrorCode::CorruptBatch, e.to_string()),
                ),
                AppendError::Storage(_) => error(ErrorCode::Storage, e.to_string()),
            })?;
            if appended.duplicate {
                self.metrics.counter_add(
                    "herald_broker_duplicate_batches_total",
                    "Idempotent retries acknowledged without storing, by topic.",
                    &[("topic", topic_name)],
                    1,
                );
            }
            let handle = match durability {
                Durability::Fsync => {
                    partition.unflushed_bytes.store(0, Ordering::Relaxed);
                    Some(
                        partition
                            .sync_handle(&log)
                            .map_err(|e| error(ErrorCode::Storage, e.to_string()))?,
                    )
                }
                Durability::Memory => {
                    self.flush_behind(&partition, &log, topic_name, batch.len() as u64);
                    None
                }
            };
            (appended, handle)
        };
        partition.appended.notify_waiters();
        if let Some(handle) = handle {
            self.group_commit.sync(handle).await.map_err(|e| match e {
                SyncError::QueueFull => throttled(e.to_string()),
                other => error(ErrorCode::Storage, other.to_string()),
            })?;
        }
        let labels = [("topic", topic_name)];
        self.metrics.counter_add(
            "herald_broker_records_in_total",
            "Records appended, by topic.",
            &labels,
            u64::from(record_count),
        );
        self.metrics.counter_add(
            "herald_broker_bytes_in_total",
            "Batch bytes appended, by topic.",
            &labels,
            batch.len() as u64,
        );
        let durability_label = if durability == Durability::Fsync {
            "fsync"
        } else {
            "memory"
        };
        self.metrics.observe_seconds(
            "herald_broker_produce_duration_seconds",
            "Produce latency, by durability.",
            &[("durability", durability_label)],
            started.elapsed().as_secs_f64(),
        );
        Ok(Response::Produced {
            base_offset: appended.base_offset,
            append_time_ms: appended.append_time_ms,
            record_offsets: appended.record_offsets,
        })
    }

    fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, topic)| (name.clone(), topic.partitions.len() as u32))
            .collect()
    }

    fn handle_group(&self, request: GroupRequest) -> Result<Response, Response> {
        let partitions = self.partition_counts();
        let now = now_ms();
        let failed = |(code, message): (ErrorCode, String)| error(code, message);
        let answer = match request {
            GroupRequest::Heartbeat {
                group,
                member_id,
                member_epoch,
                instance_id,
                topics,
                owned,
            } => {
                let heartbeat = Heartbeat {
                    member_id,
                    member_epoch,
                    instance_id: (!instance_id.is_empty()).then_some(instance_id),
                    topics: topics.into_iter().collect(),
                    owned: owned.into_iter().collect(),
                };
                self.coordinator
                    .heartbeat(&group, heartbeat, &partitions, now)
                    .map_err(failed)?
            }
            GroupRequest::Leave { group, member_id } => self
                .coordinator
                .leave(&group, &member_id, &partitions, now)
                .map_err(failed)?,
            GroupRequest::Commit {
                group,
                member_id,
                member_epoch,
                offsets,
            } => self
                .coordinator
                .commit(&group, &member_id, member_epoch, offsets, &partitions, now)
                .map_err(failed)?,
            GroupRequest::FetchOffsets { group, partitions } => {
                self.coordinator.fetch_offsets(&group, partitions)
            }
            GroupRequest::Describe { group } => GroupResponse::Description(
                self.describe_group(&group, &partitions, now)
                    .map_err(failed)?,
            ),
            GroupRequest::List => self.coordinator.list(),
        };
        Ok(Response::Group(answer))
    }

    fn describe_group(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        now: i64,
    ) -> Result<herald_wire::groups::GroupDescription, (ErrorCode, String)> {
        let bounds = |(topic, partition): &(String, u32)| {
            let (_, found) = self.partition(topic, *partition).ok()?;
            let log = found.log();
            Some((log.log_start_offset(), log.high_watermark()))
        };
        let append_time = |(topic, partition): &(String, u32), offset: i64| {
            let (_, found) = self.partition(topic, *partition).ok()?;
            let read = found.log().read(offset, 1).ok()?;
            BatchView::parse(&read.bytes)
                .ok()
                .map(|view| view.append_time_ms())
        };
        self.coordinator
            .describe(group, partitions, now, bounds, append_time)
    }

    fn reject(&self, topic: &str, reason: &str, response: Response) -> Response {
        self.metrics.counter_add(
            "herald_broker_rejected_batches_total",
            "Batches refused, by topic and reason.",
            &[("topic", topic), ("reason", reason)],
            1,
        );
        response
    }

    async fn check_schemas(&self, topic: &Topic, view: &BatchView<'_>) -> Result<(), Response> {
        let validation = &topic.config.validation;
        // Two rounds at most: learn what the cache lacks, then decide.
        for _ in 0..2 {
            match validate_batch(view, validation, |part, id| {
                self.schemas.cached(&topic.name, part, id)
            }) {
                BatchVerdict::Accepted => return Ok(()),
                BatchVerdict::Refused(failure) => {
                    let message = format!("batch refused: {failure}");
                    return Err(self.reject(
                        &topic.name,
                        "schema",
                        error(ErrorCode::SchemaValidationFailed, message),
                    ));
                }
                BatchVerdict::NeedLookups(missing) => {
                    for (part, id) in missing {
                        self.schemas
                            .learn(&topic.name, validation.strategy, part, id)
                            .await
                            .map_err(|e| error(ErrorCode::RegistryUnavailable, e.to_string()))?;
                    }
                }
            }
        }
        // Entries expired between learning and checking: ask the caller to retry.
        Err(throttled("schema cache is churning; retry"))
    }

    async fn fetch(
        &self,
        topic_name: &str,
        partition_id: u32,
        offset: i64,
        max_bytes: u32,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> Result<Response, Response> {
        let started = Instant::now();
        let (_, partition) = self.partition(topic_name, partition_id)?;
        let max_bytes = (max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(max_wait_ms.min(FETCH_WAIT_MS_MAX)));
        let wanted = (min_bytes as usize).max(1);
        loop {
            let notified = partition.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let read = partition
                .log()
                .read(offset, max_bytes)
                .map_err(|e| match e {
                    ReadError::OffsetOutOfRange { .. } => {
                        error(ErrorCode::OffsetOutOfRange, e.to_string())
                    }
                    other => error(ErrorCode::Storage, other.to_string()),
                })?;
            let now = Instant::now();
            if read.bytes.len() >= wanted || now >= deadline {
                let labels = [("topic", topic_name)];
                self.metrics.counter_add(
                    "herald_broker_records_out_total",
                    "Records served by fetches, by topic.",
                    &labels,
                    herald_wire::batch::count_records(&read.bytes),
                );
                self.metrics.counter_add(
                    "herald_broker_bytes_out_total",
                    "Batch bytes served by fetches, by topic.",
                    &labels,
                    read.bytes.len() as u64,
                );
                self.metrics.observe_seconds(
                    "herald_broker_fetch_duration_seconds",
                    "Fetch latency including long-poll waits.",
                    &[],
                    started.elapsed().as_secs_f64(),
                );
                return Ok(Response::Fetched {
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    batches: read.bytes,
                });
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    fn list_offsets(
        &self,
        topic_name: &str,
        partition_id: u32,
        spec: OffsetSpec,
    ) -> Result<Response, Response> {
        let (_, partition) = self.partition(topic_name, partition_id)?;
        let log = partition.log();
        let (offset, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (log.log_start_offset(), -1),
            OffsetSpec::Latest => (log.high_watermark(), -1),
            OffsetSpec::Timestamp(ts) => log
                .offset_for_timestamp(ts)
                .map_err(|e| error(ErrorCode::Storage, e.to_string()))?
                .unwrap_or((log.high_watermark(), -1)),
        };
        Ok(Response::Offset {
            offset,
            timestamp_ms,
        })
    }

    /// Applies retention to every partition; returns segments deleted.
    pub fn enforce_retention(&self) -> usize {
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

    /// Refreshes gauges (segments, high watermarks, group lag) before `/metrics` renders.
    pub fn update_gauges(&self) {
        let partitions = self.partition_counts();
        let now = now_ms();
        for group in self.coordinator.group_names() {
            let Ok(description) = self.describe_group(&group, &partitions, now) else {
                continue;
            };
            for lag in description.partitions {
                let partition = lag.partition.1.to_string();
                let labels = [
                    ("group", group.as_str()),
                    ("topic", lag.partition.0.as_str()),
                    ("partition", partition.as_str()),
                ];
                self.metrics.gauge_set(
                    "herald_broker_group_lag_records",
                    "Records not yet committed by a group, per partition.",
                    &labels,
                    lag.lag_records as f64,
                );
                let seconds = if lag.lag_ms < 0 {
                    0.0
                } else {
                    lag.lag_ms as f64 / 1000.0
                };
                self.metrics.gauge_set(
                    "herald_broker_group_lag_seconds",
                    "Age of the oldest record a group has not committed, per partition.",
                    &labels,
                    seconds,
                );
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
            let description = describe(&topic);
            for p in description.partitions {
                let partition = p.partition.to_string();
                let labels = [
                    ("topic", topic.name.as_str()),
                    ("partition", partition.as_str()),
                ];
                self.metrics.gauge_set(
                    "herald_broker_segments",
                    "Segments per partition.",
                    &labels,
                    f64::from(p.segments),
                );
                self.metrics.gauge_set(
                    "herald_broker_high_watermark",
                    "Next offset per partition.",
                    &labels,
                    p.high_watermark as f64,
                );
                self.metrics.gauge_set(
                    "herald_broker_partition_bytes",
                    "Stored bytes per partition.",
                    &labels,
                    p.size_bytes as f64,
                );
            }
        }
    }
}

fn describe(topic: &Topic) -> TopicDescription {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(id, partition)| {
            let log = partition.log();
            PartitionDescription {
                partition: id as u32,
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
                segments: log.segment_count() as u32,
                size_bytes: log.size_bytes(),
            }
        })
        .collect();
    TopicDescription {
        name: topic.name.clone(),
        config: topic.config,
        partitions,
    }
}

fn open_topic(
    storage: &FileStorage,
    name: &str,
    config: TopicConfig,
    metrics: &Metrics,
    producer_expiry_ms: i64,
) -> Result<Topic, String> {
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    for id in 0..config.partitions {
        let dir = format!("{name}/{id}");
        let (log, recovery) = PartitionLog::open(
            storage.clone(),
            &dir,
            log_config(&config, producer_expiry_ms),
        )
        .map_err(|e| e.to_string())?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(topic = name, partition = id, bytes = recovery.truncated_bytes, because = ?recovery.truncated_because, "recovery truncated a torn tail");
            metrics.counter_add(
                "herald_broker_recovery_truncated_bytes_total",
                "Bytes cut from torn or corrupt log tails at start.",
                &[("topic", name)],
                recovery.truncated_bytes,
            );
        }
        partitions.push(Arc::new(Partition {
            log: Mutex::new(log),
            sync_handle: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            unflushed_bytes: AtomicU64::new(0),
            flushing: Arc::new(AtomicBool::new(false)),
        }));
    }
    Ok(Topic {
        name: name.to_owned(),
        config,
        partitions,
    })
}

pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
