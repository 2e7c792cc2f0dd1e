//! Topic configuration and description: what a topic is created with and how it is described
//! to clients, and their encoding inside request and response bodies.

use std::time::Duration;

use super::response::METADATA_REPLICAS_MAX;
use crate::codec::{put_string, DecodeError, Reader};
use crate::limits::{ERROR_MESSAGE_BYTES_MAX, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX};

/// How a subject name is derived for schema-ID validation (Confluent's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `<topic>-key` / `<topic>-value`.
    #[default]
    TopicName,
    /// The record's fully-qualified name.
    RecordName,
    /// `<topic>-<record name>`.
    TopicRecordName,
}

impl SubjectStrategy {
    /// The subject of a schema whose record is `record_name`, used for the record `part`
    /// (`"key"` or `"value"`) of `topic`.
    pub fn subject(self, topic: &str, part: &str, record_name: &str) -> String {
        match self {
            SubjectStrategy::TopicName => format!("{topic}-{part}"),
            SubjectStrategy::RecordName => record_name.to_owned(),
            SubjectStrategy::TopicRecordName => format!("{topic}-{record_name}"),
        }
    }
}

/// Which parts of a record must carry a registered schema ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchemaValidation {
    pub key: bool,
    pub value: bool,
    pub strategy: SubjectStrategy,
}

/// A topic's configuration, given at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: u32,
    /// Segments whose newest record is older are deleted; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Oldest segments are deleted while a partition is larger; `None` is unbounded.
    pub retention_bytes: Option<u64>,
    /// A segment rolls when it reaches this size.
    pub segment_bytes: u64,
    /// A segment rolls when its first record is this old.
    pub segment_age: Duration,
    pub validation: SchemaValidation,
    /// Broker-side dedup on the `idempotency-key` header: a record whose key was stored
    /// within this window is acknowledged without being stored again. `None`: off.
    pub dedup_window: Option<Duration>,
}

/// The dedup window `herald topic create --dedup` turns on (NATS's default duplicate window).
pub const DEDUP_WINDOW_DEFAULT: Duration = Duration::from_secs(120);

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            segment_bytes: 256 * 1024 * 1024,
            segment_age: Duration::from_secs(24 * 3600),
            validation: SchemaValidation::default(),
            dedup_window: None,
        }
    }
}

/// When a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once written to the page cache.
    #[default]
    Memory,
    /// After an fdatasync that covers the batch (group commit).
    Fsync,
}

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A topic's incarnation: 16 random bytes fixed when the topic is created (as Kafka's topic
/// IDs). A topic deleted and created again under the same name is a new incarnation, so
/// positions committed to the old one are not taken for positions in the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// Parses the hyphenated form `Display` writes (32 hex digits, hyphens anywhere).
    pub fn parse(text: &str) -> Option<Self> {
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        if digits.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(text, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One partition as described to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub segments: u32,
    pub size_bytes: u64,
    /// Why the partition is not fully served, if it is not: quarantined past damage found in
    /// its log, or fenced after a failed write or sync (empty on the wire when healthy; at
    /// most `ERROR_MESSAGE_BYTES_MAX` bytes).
    pub problem: Option<String>,
    /// On a cluster: where the partition is replicated, as the answering node knows it.
    pub replication: Option<Replication>,
}

/// A replicated partition's placement and progress ([`PartitionDescription::replication`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replication {
    /// The node leading the partition, as the answering node knows it.
    pub leader: Option<u64>,
    /// The Raft term the answering node is in.
    pub term: u64,
    /// The nodes holding a replica, the preferred leader first (at most
    /// [`super::METADATA_REPLICAS_MAX`]).
    pub replicas: Vec<u64>,
    /// How far each follower is behind the leader's log, in batches (Raft entries); only
    /// when the answering node leads the partition (at most [`super::METADATA_REPLICAS_MAX`]).
    pub followers: Vec<FollowerLag>,
}

/// One follower's distance from the leader's log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    pub node: u64,
    /// Batches the leader holds that the follower has not acknowledged; `None` while the
    /// leader has not matched the follower's log yet (just elected, or the follower is down).
    pub batches_behind: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub id: TopicId,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionDescription>,
}

pub(super) fn topic_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.string("topic name", TOPIC_NAME_BYTES_MAX)
}

fn put_optional_u64(out: &mut Vec<u8>, value: Option<u64>) {
    out.extend_from_slice(
        &value
            .map_or(-1i64, |v| v.min(i64::MAX as u64) as i64)
            .to_be_bytes(),
    );
}

fn read_optional_u64(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u64>, DecodeError> {
    let value = r.i64(what)?;
    Ok((value >= 0).then_some(value as u64))
}

/// Appends the encoding of `config` (as requests carry it).
pub fn put_config(out: &mut Vec<u8>, config: &TopicConfig) {
    out.extend_from_slice(&config.partitions.to_be_bytes());
    put_optional_u64(out, config.retention.map(|d| d.as_millis() as u64));
    put_optional_u64(out, config.retention_bytes);
    out.extend_from_slice(&config.segment_bytes.to_be_bytes());
    out.extend_from_slice(&(config.segment_age.as_millis() as u64).to_be_bytes());
    let flags = u8::from(config.validation.key)
        | (u8::from(config.validation.value) << 1)
        | (u8::from(config.dedup_window.is_some()) << 2);
    out.push(flags);
    out.push(match config.validation.strategy {
        SubjectStrategy::TopicName => 0,
        SubjectStrategy::RecordName => 1,
        SubjectStrategy::TopicRecordName => 2,
    });
    // Only present when the flag says so: configs written before the field read unchanged.
    if let Some(window) = config.dedup_window {
        out.extend_from_slice(&(window.as_millis() as u64).to_be_bytes());
    }
}

/// Reads what [`put_config`] wrote, refusing out-of-range values.
pub fn read_config(r: &mut Reader<'_>) -> Result<TopicConfig, DecodeError> {
    let partitions = r.u32("partitions")?;
    if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(DecodeError::Invalid {
            what: "partitions",
            detail: format!("{partitions} is not within 1..={PARTITIONS_PER_TOPIC_MAX}"),
        });
    }
    let retention = read_optional_u64(r, "retention")?.map(Duration::from_millis);
    let retention_bytes = read_optional_u64(r, "retention bytes")?;
    let segment_bytes = r.u64("segment bytes")?;
    let segment_age = Duration::from_millis(r.u64("segment age")?);
    let flags = r.u8("validation flags")?;
    let strategy = match r.u8("subject strategy")? {
        0 => SubjectStrategy::TopicName,
        1 => SubjectStrategy::RecordName,
        2 => SubjectStrategy::TopicRecordName,
        other => {
            return Err(DecodeError::Invalid {
                what: "subject strategy",
                detail: other.to_string(),
            })
        }
    };
    let dedup_window = if flags & 4 != 0 {
        let ms = r.u64("dedup window")?;
        if ms == 0 {
            return Err(DecodeError::Invalid {
                what: "dedup window",
                detail: "0 ms (omit the window to turn dedup off)".to_owned(),
            });
        }
        Some(Duration::from_millis(ms))
    } else {
        None
    };
    Ok(TopicConfig {
        partitions,
        retention,
        retention_bytes,
        segment_bytes,
        segment_age,
        validation: SchemaValidation {
            key: flags & 1 != 0,
            value: flags & 2 != 0,
            strategy,
        },
        dedup_window,
    })
}

pub(super) fn put_description(out: &mut Vec<u8>, topic: &TopicDescription) {
    put_string(out, &topic.name);
    out.extend_from_slice(&topic.id.0);
    put_config(out, &topic.config);
    out.extend_from_slice(&(topic.partitions.len() as u32).to_be_bytes());
    for p in &topic.partitions {
        out.extend_from_slice(&p.partition.to_be_bytes());
        out.extend_from_slice(&p.log_start_offset.to_be_bytes());
        out.extend_from_slice(&p.high_watermark.to_be_bytes());
        out.extend_from_slice(&p.segments.to_be_bytes());
        out.extend_from_slice(&p.size_bytes.to_be_bytes());
        let problem = p.problem.as_deref().unwrap_or("");
        put_string(
            out,
            crate::codec::truncate_utf8(problem, ERROR_MESSAGE_BYTES_MAX),
        );
        put_replication(out, p.replication.as_ref());
    }
}

/// A presence byte, then leader (0: none; node ids start at 1), term, replicas, followers
/// (each: node, batches behind or -1).
fn put_replication(out: &mut Vec<u8>, replication: Option<&Replication>) {
    let Some(replication) = replication else {
        out.push(0);
        return;
    };
    out.push(1);
    out.extend_from_slice(&replication.leader.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&replication.term.to_be_bytes());
    let replicas = &replication.replicas[..replication.replicas.len().min(METADATA_REPLICAS_MAX)];
    out.extend_from_slice(&(replicas.len() as u32).to_be_bytes());
    for node in replicas {
        out.extend_from_slice(&node.to_be_bytes());
    }
    let followers =
        &replication.followers[..replication.followers.len().min(METADATA_REPLICAS_MAX)];
    out.extend_from_slice(&(followers.len() as u32).to_be_bytes());
    for follower in followers {
        out.extend_from_slice(&follower.node.to_be_bytes());
        let behind = follower
            .batches_behind
            .map_or(-1, |behind| i64::try_from(behind).unwrap_or(i64::MAX));
        out.extend_from_slice(&behind.to_be_bytes());
    }
}

fn read_replication(r: &mut Reader<'_>) -> Result<Option<Replication>, DecodeError> {
    match r.u8("replication presence")? {
        0 => return Ok(None),
        1 => {}
        other => {
            return Err(DecodeError::Invalid {
                what: "replication presence",
                detail: other.to_string(),
            })
        }
    }
    let leader = Some(r.u64("leader")?).filter(|id| *id != 0);
    let term = r.u64("term")?;
    let count = r.count("replicas", METADATA_REPLICAS_MAX)?;
    let mut replicas = Vec::with_capacity(count);
    for _ in 0..count {
        replicas.push(r.u64("replica")?);
    }
    let count = r.count("followers", METADATA_REPLICAS_MAX)?;
    let mut followers = Vec::with_capacity(count);
    for _ in 0..count {
        followers.push(FollowerLag {
            node: r.u64("follower")?,
            batches_behind: u64::try_from(r.i64("batches behind")?).ok(),
        });
    }
    Ok(Some(Replication {
        leader,
        term,
        replicas,
        followers,
    }))
}

pub(super) fn read_description(r: &mut Reader<'_>) -> Result<TopicDescription, DecodeError> {
    let name = topic_name(r)?;
    let id = TopicId(r.array("topic id")?);
    let config = read_config(r)?;
    let count = r.count("partitions", PARTITIONS_PER_TOPIC_MAX as usize)?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push(PartitionDescription {
            partition: r.u32("partition")?,
            log_start_offset: r.i64("log start offset")?,
            high_watermark: r.i64("high watermark")?,
            segments: r.u32("segments")?,
            size_bytes: r.u64("size")?,
            problem: Some(r.string("partition problem", ERROR_MESSAGE_BYTES_MAX)?)
                .filter(|problem| !problem.is_empty()),
            replication: read_replication(r)?,
        });
    }
    Ok(TopicDescription {
        name,
        id,
        config,
        partitions,
    })
}
