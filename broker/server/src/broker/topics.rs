//! Topics: create, delete, list and describe; the `topic.meta` file (written last and
//! atomically on create, removed first on delete, read back by `Broker::open`); `open_topic`,
//! which opens and recovers a topic's partitions.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use herald_broker_core::log::{LogConfig, PartitionLog, SEGMENT_BYTES_MAX};
use herald_metrics::Metrics;
use herald_wire::limits::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX};
use herald_wire::messages::{PartitionDescription, TopicConfig, TopicDescription};
use herald_wire::{ErrorCode, Request, Response};

use super::{error, Broker, Partition, Topic};
use crate::fs::{write_atomically, FileStorage};

/// Smallest segment a topic may configure (smaller only makes sense in tests).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Most topics one broker holds.
pub const TOPICS_MAX: usize = 10_000;
/// Name of the file holding a topic's configuration, inside the topic's directory.
pub(super) const TOPIC_META_FILE: &str = "topic.meta";

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
    pub(super) fn create_topic(
        &self,
        name: String,
        config: TopicConfig,
    ) -> Result<Response, Response> {
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

    pub(super) fn delete_topic(&self, name: &str) -> Result<Response, Response> {
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
}

pub(super) fn describe(topic: &Topic) -> TopicDescription {
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

pub(super) fn open_topic(
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
