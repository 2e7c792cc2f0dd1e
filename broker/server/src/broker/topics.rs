//! Topics: create, delete, list and describe; the `topic.meta` file (written last and
//! atomically on create, removed first on delete, read back by `Broker::open` through
//! [`load_topic_meta`]); `open_topic`, which opens and recovers a topic's partitions.
//!
//! `topic.meta` is a versioned [`crate::meta`] envelope around [`TopicMetaV1`]. Files from
//! before it hold a `CreateTopic` wire body: they are still read, and rewritten as an envelope
//! when loaded.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_core::log::{LogConfig, PartitionLog, SEGMENT_BYTES_MAX};
use herald_broker_core::storage::Storage as _;
use herald_metrics::Metrics;
use herald_wire::limits::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX};
use herald_wire::messages::{
    PartitionDescription, SchemaValidation, SubjectStrategy, TopicConfig, TopicDescription, TopicId,
};
use herald_wire::{Api, ErrorCode, Request, Response};
use serde::{Deserialize, Serialize};

use super::{error, throttled, Broker, Partition, Topic};
use crate::fs::FileStorage;
use crate::meta::{self, MetaError};
use crate::metrics::{PartitionGauges, TopicMetrics};

/// Smallest segment a topic may configure (smaller only makes sense in tests).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Most topics one broker holds.
pub const TOPICS_MAX: usize = 10_000;
/// Name of the file holding a topic's configuration, inside the topic's directory.
pub(super) const TOPIC_META_FILE: &str = "topic.meta";
/// The kind and format version of `topic.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "topic",
    version: 1,
};

/// Version 1 payload of `topic.meta`: every field of [`TopicConfig`], durations in
/// milliseconds (as on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TopicMetaV1 {
    /// The topic's name when it was written; the directory name is what counts.
    name: String,
    /// The topic's incarnation ([`TopicId`], hyphenated); absent in files written before
    /// topics had one (an id is then given and the file rewritten at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: u64,
    segment_age_ms: u64,
    validation: ValidationV1,
    dedup_window_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ValidationV1 {
    key: bool,
    value: bool,
    strategy: StrategyV1,
}

/// Named as Confluent names the strategies (the stored names are part of the format).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyV1 {
    TopicName,
    RecordName,
    TopicRecordName,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl TopicMetaV1 {
    fn new(name: &str, id: TopicId, config: &TopicConfig) -> Self {
        TopicMetaV1 {
            name: name.to_owned(),
            id: Some(id.to_string()),
            partitions: config.partitions,
            retention_ms: config.retention.map(millis),
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
            segment_age_ms: millis(config.segment_age),
            validation: ValidationV1 {
                key: config.validation.key,
                value: config.validation.value,
                strategy: match config.validation.strategy {
                    SubjectStrategy::TopicName => StrategyV1::TopicName,
                    SubjectStrategy::RecordName => StrategyV1::RecordName,
                    SubjectStrategy::TopicRecordName => StrategyV1::TopicRecordName,
                },
            },
            dedup_window_ms: config.dedup_window.map(millis),
        }
    }

    /// The configuration, checked as the wire decoder checks a `CreateTopic` body.
    fn config(&self, path: &Path) -> Result<TopicConfig, MetaError> {
        if self.partitions == 0 || self.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(MetaError::corrupt(
                path,
                format!(
                    "partitions {} is not within 1..={PARTITIONS_PER_TOPIC_MAX}",
                    self.partitions
                ),
            ));
        }
        if self.dedup_window_ms == Some(0) {
            return Err(MetaError::corrupt(
                path,
                "a dedup window of 0 ms (no window turns dedup off)",
            ));
        }
        Ok(TopicConfig {
            partitions: self.partitions,
            retention: self.retention_ms.map(Duration::from_millis),
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_age_ms),
            validation: SchemaValidation {
                key: self.validation.key,
                value: self.validation.value,
                strategy: match self.validation.strategy {
                    StrategyV1::TopicName => SubjectStrategy::TopicName,
                    StrategyV1::RecordName => SubjectStrategy::RecordName,
                    StrategyV1::TopicRecordName => SubjectStrategy::TopicRecordName,
                },
            },
            dedup_window: self.dedup_window_ms.map(Duration::from_millis),
        })
    }
}

/// A fresh incarnation id (a version 7 UUID: random, and ordered by creation time).
pub(crate) fn new_topic_id() -> TopicId {
    TopicId(uuid::Uuid::now_v7().into_bytes())
}

/// Writes `topic_dir/topic.meta` for topic `name`, atomically.
pub(super) fn write_topic_meta(
    topic_dir: &Path,
    name: &str,
    id: TopicId,
    config: &TopicConfig,
) -> std::io::Result<()> {
    meta::write(
        topic_dir,
        TOPIC_META_FILE,
        KIND,
        &TopicMetaV1::new(name, id, config),
    )
}

/// The configuration and incarnation in `bytes`, the contents of the `topic.meta` at `path`:
/// an envelope, or the `CreateTopic` wire body written before it. A file without an id (or in
/// the old format) gets one and is rewritten (a failed rewrite is logged: the old file stays
/// readable, and the topic gets another id at the next start).
pub(super) fn load_topic_meta(
    path: &Path,
    bytes: &[u8],
) -> Result<(TopicConfig, TopicId), MetaError> {
    let (name, config) = match meta::decode::<TopicMetaV1>(path, bytes, KIND)? {
        Some(payload) => {
            let config = payload.config(path)?;
            match payload.id.as_deref().map(TopicId::parse) {
                Some(Some(id)) => return Ok((config, id)),
                Some(None) => {
                    return Err(MetaError::corrupt(path, "topic id is not a UUID"));
                }
                None => (payload.name, config),
            }
        }
        None => old_topic_meta(path, bytes)?,
    };
    let id = new_topic_id();
    if let Some(dir) = path.parent() {
        match write_topic_meta(dir, &name, id, &config) {
            Ok(()) => {
                tracing::info!(path = %path.display(), %id, "gave the topic an incarnation id and rewrote topic.meta")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot rewrite topic.meta with an incarnation id: keeping the old one")
            }
        }
    }
    Ok((config, id))
}

/// A `topic.meta` from before the versioned format: a `CreateTopic` wire body.
fn old_topic_meta(path: &Path, bytes: &[u8]) -> Result<(String, TopicConfig), MetaError> {
    match Request::decode(Api::CreateTopic, bytes) {
        Ok(Request::CreateTopic { name, config }) => Ok((name, config)),
        Ok(_) => Err(MetaError::corrupt(
            path,
            "unreadable topic.meta (old wire format)",
        )),
        Err(e) => Err(MetaError::corrupt(
            path,
            format!("unreadable topic.meta (old wire format): {e}"),
        )),
    }
}

pub(crate) fn log_config(config: &TopicConfig, producer_expiry_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes: config.segment_bytes,
        segment_age_ms: u64::try_from(config.segment_age.as_millis()).unwrap_or(u64::MAX),
        retention_ms: config
            .retention
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        retention_bytes: config.retention_bytes,
        index_interval_bytes: 4096,
        producer_expiry_ms,
        dedup_window_ms: config
            .dedup_window
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// Longest duration a topic may configure (segment age, retention, dedup window): what fits
/// in i64 milliseconds, the log's clock arithmetic.
pub const DURATION_MAX: Duration = Duration::from_millis(i64::MAX as u64);

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
    /// Checks a new topic's name and config (the registry it needs included).
    pub(super) fn check_new_topic(&self, name: &str, config: &TopicConfig) -> Result<(), Response> {
        validate_topic_name(name).map_err(|m| error(ErrorCode::InvalidRequest, m))?;
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
        // Durations are kept as milliseconds on signed clocks: larger ones would wrap.
        for (what, duration) in [
            ("segment_age", Some(config.segment_age)),
            ("retention", config.retention),
            ("dedup_window", config.dedup_window),
        ] {
            if duration.is_some_and(|d| d > DURATION_MAX) {
                return Err(error(
                    ErrorCode::InvalidTopicConfig,
                    format!(
                        "{what} must be at most {} ms (omit retention to keep data forever)",
                        DURATION_MAX.as_millis()
                    ),
                ));
            }
        }
        if (config.validation.key || config.validation.value) && !self.schemas.has_registry() {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                "schema validation needs a registry: start the broker with --registry URL",
            ));
        }
        Ok(())
    }

    pub(super) fn create_topic(
        &self,
        name: String,
        config: TopicConfig,
    ) -> Result<Response, Response> {
        self.check_new_topic(&name, &config)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(&name) {
            return Err(error(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if self.deleting().contains(&name) {
            return Err(throttled(format!(
                "topic '{name}' is being deleted; create it again once that is done"
            )));
        }
        if topics.len() >= TOPICS_MAX {
            return Err(error(
                ErrorCode::InvalidTopicConfig,
                format!("the broker already holds {TOPICS_MAX} topics"),
            ));
        }
        let storage_error = |e: String| error(ErrorCode::Storage, e);
        // Files an earlier topic of the name left (a deletion that failed half way, a crash)
        // are never opened as part of this one.
        if self.topics_dir.join(&name).exists() {
            tracing::warn!(topic = %name, "removing files an earlier topic of this name left behind");
            self.storage.remove_dir(&name).map_err(|e| {
                storage_error(format!(
                    "files of an earlier topic '{name}' remain and cannot be removed ({e}); remove {} by hand",
                    self.topics_dir.join(&name).display()
                ))
            })?;
        }
        let id = new_topic_id();
        let topic = open_topic(
            &self.storage,
            &name,
            id,
            config,
            self.metrics.recorder(),
            self.producer_expiry_ms,
        )
        .map_err(storage_error)?;
        // The meta file is written last and atomically: a topic exists once it is there.
        write_topic_meta(&self.topics_dir.join(&name), &name, id, &config)
            .map_err(|e| storage_error(e.to_string()))?;
        crate::fs::sync_dir(&self.topics_dir).map_err(|e| storage_error(e.to_string()))?;
        topics.insert(name, Arc::new(topic));
        Ok(Response::TopicCreated)
    }

    /// Deletes a topic and finishes before answering: its name is reserved until its files
    /// are gone (a create of the same name meanwhile is asked to retry), and each partition
    /// is fenced under its lock, so a produce already past the topic lookup is either done
    /// before the files go or refused — never written into a topic created after. A deletion
    /// that cannot remove the topic's meta file fails and changes nothing.
    pub(super) fn delete_topic(&self, name: &str) -> Result<Response, Response> {
        let dir = self.topics_dir.join(name);
        let meta = dir.join(TOPIC_META_FILE);
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            if !topics.contains_key(name) {
                return Err(error(
                    ErrorCode::UnknownTopic,
                    format!("unknown topic '{name}'"),
                ));
            }
            // The meta file goes first, while the topic is still in place: a deletion that
            // cannot remove it fails and leaves the topic as it was (served now, and after a
            // restart); once it is gone, a crash mid-delete leaves no half topic behind.
            match std::fs::remove_file(&meta) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(error(
                        ErrorCode::Storage,
                        format!(
                            "cannot delete topic '{name}': cannot remove {}: {e}",
                            meta.display()
                        ),
                    ))
                }
            }
            self.deleting().insert(name.to_owned());
            topics.remove(name)
        };
        for partition in topic.iter().flat_map(|topic| &topic.partitions) {
            partition
                .log()
                .fence()
                .set(format!("topic '{name}' was deleted"));
        }
        // Through the storage: its cached read handles of the topic's files go too (one left
        // open would serve the deleted segment to a topic created after). The topic is deleted
        // whatever comes of this: files left behind are removed by the next create of the
        // name (or refuse it, naming them).
        if let Err(e) = self.storage.remove_dir(name) {
            tracing::warn!(topic = name, error = %e, "topic deleted, but some of its files remain: {}", dir.display());
        }
        self.deleting().remove(name);
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
                problem: log.fence().reason().map(str::to_owned),
                replication: None,
            }
        })
        .collect();
    TopicDescription {
        name: topic.name.clone(),
        id: topic.id,
        config: topic.config,
        partitions,
    }
}

pub(super) fn open_topic(
    storage: &FileStorage,
    name: &str,
    id: TopicId,
    config: TopicConfig,
    metrics: &Metrics,
    producer_expiry_ms: i64,
) -> Result<Topic, String> {
    let topic_metrics = TopicMetrics::new(metrics, name);
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
            topic_metrics
                .recovery_truncated_bytes
                .increment(recovery.truncated_bytes);
        }
        if let Some(quarantine) = &recovery.quarantined {
            tracing::error!(
                topic = name,
                partition = id,
                offset = quarantine.offset,
                reason = %quarantine.reason,
                "partition quarantined: its log is damaged; offsets from here on are not served and produces are refused until an operator repairs or deletes it"
            );
        }
        let fence = log.fence().clone();
        partitions.push(Arc::new(Partition {
            log: Mutex::new(log),
            sync_handle: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            unflushed_bytes: AtomicU64::new(0),
            flushing: Arc::new(AtomicBool::new(false)),
            fence,
            gauges: PartitionGauges::new(metrics, name, id),
        }));
    }
    Ok(Topic {
        name: name.to_owned(),
        id,
        config,
        partitions,
        metrics: topic_metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TopicConfig {
        TopicConfig {
            partitions: 3,
            retention: None,
            retention_bytes: Some(1 << 30),
            segment_bytes: 8 * 1024 * 1024,
            segment_age: Duration::from_secs(3600),
            validation: SchemaValidation {
                key: true,
                value: true,
                strategy: SubjectStrategy::TopicRecordName,
            },
            dedup_window: Some(Duration::from_secs(120)),
        }
    }

    /// `config()` of topic `orders` exactly as `topic.meta` was written before the envelope:
    /// a `CreateTopic` wire body.
    fn old_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&6u16.to_be_bytes());
        bytes.extend_from_slice(b"orders");
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&(-1i64).to_be_bytes()); // retention: forever
        bytes.extend_from_slice(&(1i64 << 30).to_be_bytes()); // retention bytes
        bytes.extend_from_slice(&(8u64 * 1024 * 1024).to_be_bytes()); // segment bytes
        bytes.extend_from_slice(&3_600_000u64.to_be_bytes()); // segment age
        bytes.push(0b111); // key and value validated, dedup window present
        bytes.push(2); // TopicRecordName
        bytes.extend_from_slice(&120_000u64.to_be_bytes()); // dedup window
        bytes
    }

    fn load(path: &Path) -> Result<TopicConfig, MetaError> {
        load_topic_meta(path, &std::fs::read(path).expect("read")).map(|(config, _)| config)
    }

    const ID: TopicId = TopicId([7; 16]);

    #[test]
    fn the_hand_written_old_bytes_are_what_the_old_writer_produced() {
        let mut body = Vec::new();
        Request::CreateTopic {
            name: "orders".to_owned(),
            config: config(),
        }
        .encode(&mut body);
        assert_eq!(body, old_bytes());
    }

    #[test]
    fn topic_meta_round_trips_every_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        for config in [config(), TopicConfig::default()] {
            write_topic_meta(dir.path(), "orders", ID, &config).expect("write");
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                bytes.starts_with(br#"{"kind":"topic","version":1,"#),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(load_topic_meta(&path, &bytes), Ok((config, ID)));
        }
    }

    #[test]
    fn an_old_wire_body_is_read_unchanged_and_rewritten_as_an_envelope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        std::fs::write(&path, old_bytes()).expect("write");
        let (loaded, id) = load_topic_meta(&path, &old_bytes()).expect("old body");
        assert_eq!(loaded, config());
        let bytes = std::fs::read(&path).expect("read");
        assert!(meta::is_versioned(&bytes), "rewritten as an envelope");
        assert_eq!(
            load_topic_meta(&path, &bytes),
            Ok((config(), id)),
            "the id given at the rewrite is kept"
        );
        // A damaged old body is refused, naming the file.
        let mut damaged = old_bytes();
        damaged.truncate(10);
        let error = load_topic_meta(&path, &damaged).expect_err("truncated");
        assert!(error.to_string().contains("topic.meta"), "{error}");
    }

    #[test]
    fn a_damaged_topic_meta_is_refused_with_a_checksum_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        write_topic_meta(dir.path(), "orders", ID, &config()).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(r#""partitions":3"#), "{text}");
        std::fs::write(
            &path,
            text.replace(r#""partitions":3"#, r#""partitions":4"#),
        )
        .expect("write");
        let error = load(&path).expect_err("damaged");
        let message = error.to_string();
        assert!(matches!(error, MetaError::Corrupt { .. }), "{message}");
        assert!(message.contains("topic.meta"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
    }

    #[test]
    fn a_newer_topic_meta_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        let newer = meta::Kind {
            name: "topic",
            version: 2,
        };
        let bytes =
            meta::encode(newer, &TopicMetaV1::new("orders", ID, &config())).expect("encode");
        let error = load_topic_meta(&path, &bytes).expect_err("newer");
        let message = error.to_string();
        assert!(
            matches!(
                error,
                MetaError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{message}"
        );
        assert!(message.contains("topic.meta"), "{message}");
        assert!(message.contains("version 2"), "{message}");
    }

    #[test]
    fn an_envelope_keeps_the_old_limits() {
        let path = Path::new("topics/orders/topic.meta");
        let mut payload = TopicMetaV1::new("orders", ID, &config());
        payload.partitions = 0;
        let bytes = meta::encode(KIND, &payload).expect("encode");
        assert!(matches!(
            load_topic_meta(path, &bytes),
            Err(MetaError::Corrupt { .. })
        ));
        let mut payload = TopicMetaV1::new("orders", ID, &config());
        payload.dedup_window_ms = Some(0);
        let bytes = meta::encode(KIND, &payload).expect("encode");
        assert!(matches!(
            load_topic_meta(path, &bytes),
            Err(MetaError::Corrupt { .. })
        ));
    }
}

#[cfg(test)]
mod incarnation_tests {
    use super::*;

    /// A topic.meta written before topics had ids gets one, written back, and keeps it.
    #[test]
    fn a_topic_meta_without_an_id_gets_one_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        let mut payload = TopicMetaV1::new("orders", TopicId::default(), &TopicConfig::default());
        payload.id = None;
        let bytes = meta::encode(KIND, &payload).expect("encode");
        let (_, id) = load_topic_meta(&path, &bytes).expect("load");
        assert_ne!(id, TopicId::default());
        let rewritten = std::fs::read(&path).expect("rewritten");
        assert_eq!(load_topic_meta(&path, &rewritten).expect("load").1, id);
        assert_ne!(new_topic_id(), new_topic_id());
    }
}

#[cfg(test)]
mod deletion_tests {
    use herald_wire::messages::Durability;

    use super::*;
    use crate::broker::test_support;

    fn batch() -> Vec<u8> {
        test_support::one_record(b"old")
    }

    /// A produce that found the partition before the topic was deleted must not write into
    /// the topic created after under the same name: deletion fences every partition, under
    /// its lock, before the files go.
    #[tokio::test]
    async fn a_produce_in_flight_at_deletion_never_lands_in_the_recreated_topic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = test_support::broker(dir.path());
        let create = || Request::CreateTopic {
            name: "t".into(),
            config: TopicConfig::default(),
        };
        assert!(matches!(
            broker.handle(create()).await,
            Response::TopicCreated
        ));
        // A produce past its topic lookup: it holds the old partition.
        let (_, old) = broker.partition("t", 0).expect("partition");
        let deleted = broker
            .handle(Request::DeleteTopic { name: "t".into() })
            .await;
        assert!(matches!(deleted, Response::TopicDeleted), "{deleted:?}");
        assert!(matches!(
            broker.handle(create()).await,
            Response::TopicCreated
        ));
        let refused = old.log().append(&batch(), 1);
        assert!(
            matches!(
                refused,
                Err(herald_broker_core::log::AppendError::Fenced { .. })
            ),
            "{refused:?}"
        );
        let produced = broker
            .handle(Request::Produce {
                topic: "t".into(),
                partition: 0,
                durability: Durability::Memory,
                batch: batch().into(),
            })
            .await;
        assert!(
            matches!(produced, Response::Produced { base_offset: 0, .. }),
            "the new topic starts empty: {produced:?}"
        );
    }

    /// A topic of small segments: every ~3 KB record fills one.
    fn small_segments() -> TopicConfig {
        TopicConfig {
            segment_bytes: SEGMENT_BYTES_MIN,
            ..TopicConfig::default()
        }
    }

    /// Creates topic `t` of small segments.
    async fn create_small(broker: &crate::broker::Broker) {
        let created = broker
            .handle(Request::CreateTopic {
                name: "t".into(),
                config: small_segments(),
            })
            .await;
        assert!(matches!(created, Response::TopicCreated), "{created:?}");
    }

    async fn delete(broker: &crate::broker::Broker) {
        let deleted = broker
            .handle(Request::DeleteTopic { name: "t".into() })
            .await;
        assert!(matches!(deleted, Response::TopicDeleted), "{deleted:?}");
    }

    async fn produce_three(broker: &crate::broker::Broker, fill: u8) {
        for _ in 0..3 {
            let produced = broker
                .handle(Request::Produce {
                    topic: "t".into(),
                    partition: 0,
                    durability: Durability::Memory,
                    batch: test_support::one_record(&[fill; 3000]).into(),
                })
                .await;
            assert!(
                matches!(produced, Response::Produced { .. }),
                "{produced:?}"
            );
        }
    }

    async fn first_batch(broker: &crate::broker::Broker) -> Vec<u8> {
        match broker
            .handle(Request::Fetch {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 4096,
                max_wait_ms: 0,
                min_bytes: 0,
            })
            .await
        {
            Response::Fetched { batches, .. } => batches.to_vec(),
            other => panic!("fetch: {other:?}"),
        }
    }

    /// A sealed segment read before its topic was deleted must not be served again from a
    /// cached read handle once a topic of the same name has a segment of the same name.
    #[tokio::test]
    async fn a_recreated_topic_never_serves_the_deleted_ones_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = test_support::broker(dir.path());
        create_small(&broker).await;
        produce_three(&broker, b'o').await;
        let old = first_batch(&broker).await;
        assert!(
            old.windows(3000).any(|w| w == [b'o'; 3000]),
            "read the old segment"
        );
        delete(&broker).await;
        create_small(&broker).await;
        produce_three(&broker, b'n').await;
        let new = first_batch(&broker).await;
        assert!(
            new.windows(3000).any(|w| w == [b'n'; 3000]),
            "offset 0 of the new topic holds its own record, not the deleted topic's"
        );
    }

    /// A deletion that cannot remove the topic's meta file fails and leaves the topic as it
    /// was, served: it used to drop the topic from the running broker (fencing its
    /// partitions) while the meta file that brings it back at the next start stayed.
    #[tokio::test]
    async fn a_deletion_that_cannot_remove_the_meta_file_leaves_the_topic_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = test_support::broker(dir.path());
        create_small(&broker).await;
        produce_three(&broker, b'o').await;
        // A meta "file" that cannot be removed as a file, whoever runs the test (root too).
        let meta = broker.topics_dir.join("t").join(TOPIC_META_FILE);
        let saved = std::fs::read(&meta).expect("meta");
        std::fs::remove_file(&meta).expect("remove");
        std::fs::create_dir_all(meta.join("in-the-way")).expect("a directory in its place");
        let refused = broker
            .handle(Request::DeleteTopic { name: "t".into() })
            .await;
        assert!(
            matches!(&refused, Response::Error(body) if body.code == ErrorCode::Storage && body.message.contains("topic.meta")),
            "{refused:?}"
        );
        produce_three(&broker, b'n').await;
        assert!(!first_batch(&broker).await.is_empty(), "still served");
        // Once the meta file can go, the deletion goes through.
        std::fs::remove_dir_all(&meta).expect("clear");
        std::fs::write(&meta, saved).expect("meta back");
        delete(&broker).await;
    }

    /// Files a deletion could not remove (or a crash left) are never opened as part of a
    /// topic created later under the name: the create removes them first, or is refused.
    #[tokio::test]
    async fn leftover_files_of_a_deleted_topic_never_join_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = test_support::broker(dir.path());
        create_small(&broker).await;
        produce_three(&broker, b'o').await;
        let topic_dir = broker.topics_dir.join("t");
        let kept = dir.path().join("kept");
        // What a deletion that failed half way leaves: the segments, no topic.meta.
        copy_dir(&topic_dir, &kept);
        delete(&broker).await;
        copy_dir(&kept, &topic_dir);
        std::fs::remove_file(topic_dir.join(TOPIC_META_FILE)).expect("no meta");
        create_small(&broker).await;
        let fetched = first_batch(&broker).await;
        assert!(
            fetched.is_empty(),
            "the new topic starts empty, not with the leftover records"
        );
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
}
