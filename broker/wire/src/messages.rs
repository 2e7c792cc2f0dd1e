//! Requests and responses: one enum each, encoded into and decoded from frame bodies.
//!
//! A response body starts with a `u16` status: `0` for success, followed by the api's
//! success body; any other value is an [`ErrorCode`], followed by `u32 retry_after_ms` and a
//! `u16`-prefixed message.

use std::time::Duration;

use crate::codec::{put_bytes, put_string, DecodeError, Reader};
use crate::error::ErrorCode;
use crate::groups::{GroupRequest, GroupResponse};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, ERROR_MESSAGE_BYTES_MAX, FETCH_BYTES_MAX,
    PARTITIONS_PER_TOPIC_MAX, PRODUCER_NAME_BYTES_MAX, TOPICS_LISTED_MAX, TOPIC_NAME_BYTES_MAX,
};

/// Which request a frame carries. Never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    CreateTopic = 1,
    DeleteTopic = 2,
    ListTopics = 3,
    DescribeTopic = 4,
    Produce = 5,
    Fetch = 6,
    ListOffsets = 7,
    InitProducer = 8,
    GroupHeartbeat = 9,
    LeaveGroup = 10,
    CommitOffsets = 11,
    FetchOffsets = 12,
    DescribeGroup = 13,
    ListGroups = 14,
}

impl Api {
    pub fn from_code(code: u16) -> Result<Self, DecodeError> {
        Ok(match code {
            1 => Api::CreateTopic,
            2 => Api::DeleteTopic,
            3 => Api::ListTopics,
            4 => Api::DescribeTopic,
            5 => Api::Produce,
            6 => Api::Fetch,
            7 => Api::ListOffsets,
            8 => Api::InitProducer,
            9 => Api::GroupHeartbeat,
            10 => Api::LeaveGroup,
            11 => Api::CommitOffsets,
            12 => Api::FetchOffsets,
            13 => Api::DescribeGroup,
            14 => Api::ListGroups,
            other => return Err(DecodeError::UnknownApi(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::CreateTopic => "create_topic",
            Api::DeleteTopic => "delete_topic",
            Api::ListTopics => "list_topics",
            Api::DescribeTopic => "describe_topic",
            Api::Produce => "produce",
            Api::Fetch => "fetch",
            Api::ListOffsets => "list_offsets",
            Api::InitProducer => "init_producer",
            Api::GroupHeartbeat => "group_heartbeat",
            Api::LeaveGroup => "leave_group",
            Api::CommitOffsets => "commit_offsets",
            Api::FetchOffsets => "fetch_offsets",
            Api::DescribeGroup => "describe_group",
            Api::ListGroups => "list_groups",
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateTopic {
        name: String,
        config: TopicConfig,
    },
    DeleteTopic {
        name: String,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    Produce {
        topic: String,
        partition: u32,
        durability: Durability,
        batch: Vec<u8>,
    },
    Fetch {
        topic: String,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        max_wait_ms: u32,
        min_bytes: u32,
    },
    ListOffsets {
        topic: String,
        partition: u32,
        spec: OffsetSpec,
    },
    /// Asks for an idempotent producer id and epoch. A named producer keeps its id across
    /// restarts and gets a higher epoch each time, fencing its previous instance; an empty
    /// name gets a fresh id.
    InitProducer {
        name: String,
    },
    /// Consumer-group requests (APIs 9-14).
    Group(GroupRequest),
}

/// One partition as described to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub segments: u32,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionDescription>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For `Throttled`: when to try again.
    pub retry_after_ms: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Error(ErrorBody),
    TopicCreated,
    TopicDeleted,
    Topics(Vec<TopicDescription>),
    Topic(Box<TopicDescription>),
    Produced {
        base_offset: i64,
        append_time_ms: i64,
        /// Where each record of the batch is, when that is not `base_offset + index`: a
        /// topic's dedup window dropped some, and a dropped record is where its first copy
        /// is. Empty otherwise.
        record_offsets: Vec<i64>,
    },
    Fetched {
        high_watermark: i64,
        log_start_offset: i64,
        batches: Vec<u8>,
    },
    Offset {
        offset: i64,
        timestamp_ms: i64,
    },
    ProducerInit {
        producer_id: i64,
        epoch: i16,
    },
    Group(GroupResponse),
}

impl Request {
    pub fn api(&self) -> Api {
        match self {
            Request::CreateTopic { .. } => Api::CreateTopic,
            Request::DeleteTopic { .. } => Api::DeleteTopic,
            Request::ListTopics => Api::ListTopics,
            Request::DescribeTopic { .. } => Api::DescribeTopic,
            Request::Produce { .. } => Api::Produce,
            Request::Fetch { .. } => Api::Fetch,
            Request::ListOffsets { .. } => Api::ListOffsets,
            Request::InitProducer { .. } => Api::InitProducer,
            Request::Group(group) => group.api(),
        }
    }

    /// Roughly how many bytes [`Request::encode`] appends (exact for the bulk of a produce).
    pub fn encoded_len_hint(&self) -> usize {
        match self {
            Request::Produce { topic, batch, .. } => topic.len() + batch.len() + 16,
            _ => 64,
        }
    }

    /// The body of a `Produce` request for a batch the caller keeps (a producer that may
    /// resend it encodes from its own copy instead of handing one over).
    pub fn encode_produce(
        out: &mut Vec<u8>,
        topic: &str,
        partition: u32,
        durability: Durability,
        batch: &[u8],
    ) {
        put_string(out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
        out.push(match durability {
            Durability::Memory => 0,
            Durability::Fsync => 1,
        });
        put_bytes(out, batch);
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::CreateTopic { name, config } => {
                put_string(out, name);
                put_config(out, config);
            }
            Request::DeleteTopic { name } | Request::DescribeTopic { name } => {
                put_string(out, name)
            }
            Request::ListTopics => {}
            Request::Produce {
                topic,
                partition,
                durability,
                batch,
            } => Self::encode_produce(out, topic, *partition, *durability, batch),
            Request::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait_ms,
                min_bytes,
            } => {
                put_string(out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&max_bytes.to_be_bytes());
                out.extend_from_slice(&max_wait_ms.to_be_bytes());
                out.extend_from_slice(&min_bytes.to_be_bytes());
            }
            Request::ListOffsets {
                topic,
                partition,
                spec,
            } => {
                put_string(out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
                let (kind, timestamp) = match spec {
                    OffsetSpec::Earliest => (0u8, 0i64),
                    OffsetSpec::Latest => (1, 0),
                    OffsetSpec::Timestamp(t) => (2, *t),
                };
                out.push(kind);
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
            Request::InitProducer { name } => put_string(out, name),
            Request::Group(group) => group.encode(out),
        }
    }

    pub fn decode(api: Api, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let request = match api {
            Api::CreateTopic => Request::CreateTopic {
                name: topic_name(&mut r)?,
                config: read_config(&mut r)?,
            },
            Api::DeleteTopic => Request::DeleteTopic {
                name: topic_name(&mut r)?,
            },
            Api::ListTopics => Request::ListTopics,
            Api::DescribeTopic => Request::DescribeTopic {
                name: topic_name(&mut r)?,
            },
            Api::Produce => Request::Produce {
                topic: topic_name(&mut r)?,
                partition: r.u32("partition")?,
                durability: match r.u8("durability")? {
                    0 => Durability::Memory,
                    1 => Durability::Fsync,
                    other => {
                        return Err(DecodeError::Invalid {
                            what: "durability",
                            detail: other.to_string(),
                        })
                    }
                },
                batch: r.bytes("batch", BATCH_BYTES_MAX)?.to_vec(),
            },
            Api::Fetch => Request::Fetch {
                topic: topic_name(&mut r)?,
                partition: r.u32("partition")?,
                offset: r.i64("offset")?,
                max_bytes: r.u32("max bytes")?,
                max_wait_ms: r.u32("max wait")?,
                min_bytes: r.u32("min bytes")?,
            },
            Api::ListOffsets => {
                let topic = topic_name(&mut r)?;
                let partition = r.u32("partition")?;
                let kind = r.u8("offset spec")?;
                let timestamp = r.i64("timestamp")?;
                let spec = match kind {
                    0 => OffsetSpec::Earliest,
                    1 => OffsetSpec::Latest,
                    2 => OffsetSpec::Timestamp(timestamp),
                    other => {
                        return Err(DecodeError::Invalid {
                            what: "offset spec",
                            detail: other.to_string(),
                        })
                    }
                };
                Request::ListOffsets {
                    topic,
                    partition,
                    spec,
                }
            }
            Api::InitProducer => Request::InitProducer {
                name: r.string("producer name", PRODUCER_NAME_BYTES_MAX)?,
            },
            Api::GroupHeartbeat
            | Api::LeaveGroup
            | Api::CommitOffsets
            | Api::FetchOffsets
            | Api::DescribeGroup
            | Api::ListGroups => Request::Group(GroupRequest::decode(api, &mut r)?),
        };
        r.finish("request")?;
        Ok(request)
    }
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorBody {
            code,
            retry_after_ms: 0,
            message: message.into(),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Response::Error(error) = self {
            out.extend_from_slice(&error.code.code().to_be_bytes());
            out.extend_from_slice(&error.retry_after_ms.to_be_bytes());
            let mut message = error.message.as_str();
            if message.len() > ERROR_MESSAGE_BYTES_MAX {
                let mut cut = ERROR_MESSAGE_BYTES_MAX;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message = &message[..cut];
            }
            put_string(out, message);
            return;
        }
        out.extend_from_slice(&0u16.to_be_bytes());
        match self {
            Response::Error(_) | Response::TopicCreated | Response::TopicDeleted => {}
            Response::Topics(topics) => {
                out.extend_from_slice(&(topics.len() as u32).to_be_bytes());
                for topic in topics {
                    put_description(out, topic);
                }
            }
            Response::Topic(topic) => put_description(out, topic),
            Response::Produced {
                base_offset,
                append_time_ms,
                record_offsets,
            } => {
                out.extend_from_slice(&base_offset.to_be_bytes());
                out.extend_from_slice(&append_time_ms.to_be_bytes());
                out.extend_from_slice(&(record_offsets.len() as u32).to_be_bytes());
                for offset in record_offsets {
                    out.extend_from_slice(&offset.to_be_bytes());
                }
            }
            Response::Fetched {
                high_watermark,
                log_start_offset,
                batches,
            } => {
                out.extend_from_slice(&high_watermark.to_be_bytes());
                out.extend_from_slice(&log_start_offset.to_be_bytes());
                put_bytes(out, batches);
            }
            Response::Offset {
                offset,
                timestamp_ms,
            } => {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&timestamp_ms.to_be_bytes());
            }
            Response::ProducerInit { producer_id, epoch } => {
                out.extend_from_slice(&producer_id.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            Response::Group(group) => group.encode(out),
        }
    }

    /// Encodes into `out` everything but a trailing payload, which is returned to be sent
    /// as is: a fetch's batches go to the transport without being copied into the frame.
    pub fn encode_split(self, out: &mut Vec<u8>) -> Option<Vec<u8>> {
        match self {
            Response::Fetched {
                high_watermark,
                log_start_offset,
                batches,
            } => {
                out.extend_from_slice(&0u16.to_be_bytes());
                out.extend_from_slice(&high_watermark.to_be_bytes());
                out.extend_from_slice(&log_start_offset.to_be_bytes());
                out.extend_from_slice(&(batches.len() as u32).to_be_bytes());
                Some(batches)
            }
            other => {
                other.encode(out);
                None
            }
        }
    }

    /// Decodes an owned body; a fetch's batches are taken from it without a copy.
    pub fn decode_owned(api: Api, mut body: Vec<u8>) -> Result<Self, DecodeError> {
        const FETCHED_HEAD_BYTES: usize = 2 + 8 + 8 + 4;
        if api == Api::Fetch && body.len() >= FETCHED_HEAD_BYTES && body[..2] == [0, 0] {
            let mut r = Reader::new(&body[..FETCHED_HEAD_BYTES]);
            let _status = r.u16("status")?;
            let high_watermark = r.i64("high watermark")?;
            let log_start_offset = r.i64("log start offset")?;
            let length = r.u32("batches")? as usize;
            let limit = FETCH_BYTES_MAX + BATCH_BYTES_MAX;
            if length > limit {
                return Err(DecodeError::TooLarge {
                    what: "batches",
                    size: length,
                    limit,
                });
            }
            let available = body.len() - FETCHED_HEAD_BYTES;
            if length != available {
                return Err(if length > available {
                    DecodeError::Truncated {
                        what: "batches",
                        needed: length - available,
                    }
                } else {
                    DecodeError::Trailing {
                        what: "response",
                        trailing: available - length,
                    }
                });
            }
            body.drain(..FETCHED_HEAD_BYTES);
            return Ok(Response::Fetched {
                high_watermark,
                log_start_offset,
                batches: body,
            });
        }
        Self::decode(api, &body)
    }

    pub fn decode(api: Api, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let status = r.u16("status")?;
        if status != 0 {
            let retry_after_ms = r.u32("retry after")?;
            let message = r.string("error message", ERROR_MESSAGE_BYTES_MAX)?;
            r.finish("error response")?;
            return Ok(Response::Error(ErrorBody {
                code: ErrorCode::from_code(status),
                retry_after_ms,
                message,
            }));
        }
        let response = match api {
            Api::CreateTopic => Response::TopicCreated,
            Api::DeleteTopic => Response::TopicDeleted,
            Api::ListTopics => {
                let count = r.count("topic list", TOPICS_LISTED_MAX)?;
                let mut topics = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    topics.push(read_description(&mut r)?);
                }
                Response::Topics(topics)
            }
            Api::DescribeTopic => Response::Topic(Box::new(read_description(&mut r)?)),
            Api::Produce => {
                let base_offset = r.i64("base offset")?;
                let append_time_ms = r.i64("append time")?;
                let count = r.count("record offsets", BATCH_RECORDS_MAX as usize)?;
                let mut record_offsets = Vec::with_capacity(count.min(r.remaining() / 8));
                for _ in 0..count {
                    record_offsets.push(r.i64("record offset")?);
                }
                Response::Produced {
                    base_offset,
                    append_time_ms,
                    record_offsets,
                }
            }
            Api::Fetch => Response::Fetched {
                high_watermark: r.i64("high watermark")?,
                log_start_offset: r.i64("log start offset")?,
                batches: r
                    .bytes("batches", FETCH_BYTES_MAX + BATCH_BYTES_MAX)?
                    .to_vec(),
            },
            Api::ListOffsets => Response::Offset {
                offset: r.i64("offset")?,
                timestamp_ms: r.i64("timestamp")?,
            },
            Api::InitProducer => Response::ProducerInit {
                producer_id: r.i64("producer id")?,
                epoch: r.i16("epoch")?,
            },
            Api::GroupHeartbeat
            | Api::LeaveGroup
            | Api::CommitOffsets
            | Api::FetchOffsets
            | Api::DescribeGroup
            | Api::ListGroups => Response::Group(GroupResponse::decode(api, &mut r)?),
        };
        r.finish("response")?;
        Ok(response)
    }
}

fn topic_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
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

fn put_config(out: &mut Vec<u8>, config: &TopicConfig) {
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

fn read_config(r: &mut Reader<'_>) -> Result<TopicConfig, DecodeError> {
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

fn put_description(out: &mut Vec<u8>, topic: &TopicDescription) {
    put_string(out, &topic.name);
    put_config(out, &topic.config);
    out.extend_from_slice(&(topic.partitions.len() as u32).to_be_bytes());
    for p in &topic.partitions {
        out.extend_from_slice(&p.partition.to_be_bytes());
        out.extend_from_slice(&p.log_start_offset.to_be_bytes());
        out.extend_from_slice(&p.high_watermark.to_be_bytes());
        out.extend_from_slice(&p.segments.to_be_bytes());
        out.extend_from_slice(&p.size_bytes.to_be_bytes());
    }
}

fn read_description(r: &mut Reader<'_>) -> Result<TopicDescription, DecodeError> {
    let name = topic_name(r)?;
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
        });
    }
    Ok(TopicDescription {
        name,
        config,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::{GroupDescription, MemberDescription, PartitionLag};
    use proptest::prelude::*;

    fn config() -> impl Strategy<Value = TopicConfig> {
        (
            1u32..100,
            proptest::option::of(0u64..1u64 << 40),
            proptest::option::of(any::<u32>()),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            0u8..3,
            proptest::option::of(1u64..1u64 << 40),
        )
            .prop_map(
                |(
                    partitions,
                    retention,
                    retention_bytes,
                    segment_bytes,
                    segment_ms,
                    key,
                    value,
                    strategy,
                    dedup_ms,
                )| TopicConfig {
                    partitions,
                    retention: retention.map(Duration::from_millis),
                    retention_bytes: retention_bytes.map(u64::from),
                    segment_bytes: u64::from(segment_bytes),
                    segment_age: Duration::from_millis(u64::from(segment_ms)),
                    validation: SchemaValidation {
                        key,
                        value,
                        strategy: [
                            SubjectStrategy::TopicName,
                            SubjectStrategy::RecordName,
                            SubjectStrategy::TopicRecordName,
                        ][strategy as usize],
                    },
                    dedup_window: dedup_ms.map(Duration::from_millis),
                },
            )
    }

    fn request() -> impl Strategy<Value = Request> {
        let name = "[a-z.-]{1,20}";
        prop_oneof![
            (name, config()).prop_map(|(name, config)| Request::CreateTopic { name, config }),
            name.prop_map(|name| Request::DeleteTopic { name }),
            Just(Request::ListTopics),
            name.prop_map(|name| Request::DescribeTopic { name }),
            (
                name,
                any::<u32>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(topic, partition, fsync, batch)| Request::Produce {
                    topic,
                    partition,
                    durability: if fsync {
                        Durability::Fsync
                    } else {
                        Durability::Memory
                    },
                    batch
                }),
            (
                name,
                any::<u32>(),
                any::<i64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(
                    |(topic, partition, offset, max_bytes, max_wait_ms, min_bytes)| {
                        Request::Fetch {
                            topic,
                            partition,
                            offset,
                            max_bytes,
                            max_wait_ms,
                            min_bytes,
                        }
                    }
                ),
            (
                name,
                any::<u32>(),
                prop_oneof![
                    Just(OffsetSpec::Earliest),
                    Just(OffsetSpec::Latest),
                    any::<i64>().prop_map(OffsetSpec::Timestamp)
                ]
            )
                .prop_map(|(topic, partition, spec)| Request::ListOffsets {
                    topic,
                    partition,
                    spec
                }),
            ".{0,20}".prop_map(|name| Request::InitProducer { name }),
            group_request().prop_map(Request::Group),
        ]
    }

    fn response() -> impl Strategy<Value = (Api, Response)> {
        let description = || {
            (
                "[a-z]{1,10}",
                config(),
                proptest::collection::vec(
                    (
                        any::<u32>(),
                        any::<i64>(),
                        any::<i64>(),
                        any::<u32>(),
                        any::<u64>(),
                    ),
                    0..4,
                ),
            )
                .prop_map(|(name, config, partitions)| TopicDescription {
                    name,
                    config,
                    partitions: partitions
                        .into_iter()
                        .map(
                            |(
                                partition,
                                log_start_offset,
                                high_watermark,
                                segments,
                                size_bytes,
                            )| PartitionDescription {
                                partition,
                                log_start_offset,
                                high_watermark,
                                segments,
                                size_bytes,
                            },
                        )
                        .collect(),
                })
        };
        prop_oneof![
            (0u16..20, any::<u32>(), ".{0,40}").prop_map(|(code, retry_after_ms, message)| (
                Api::Produce,
                Response::Error(ErrorBody {
                    code: ErrorCode::from_code(code.max(1)),
                    retry_after_ms,
                    message
                })
            )),
            Just((Api::CreateTopic, Response::TopicCreated)),
            Just((Api::DeleteTopic, Response::TopicDeleted)),
            proptest::collection::vec(description(), 0..3)
                .prop_map(|topics| (Api::ListTopics, Response::Topics(topics))),
            description().prop_map(|topic| (Api::DescribeTopic, Response::Topic(Box::new(topic)))),
            (
                any::<i64>(),
                any::<i64>(),
                proptest::collection::vec(any::<i64>(), 0..5)
            )
                .prop_map(|(base_offset, append_time_ms, record_offsets)| (
                    Api::Produce,
                    Response::Produced {
                        base_offset,
                        append_time_ms,
                        record_offsets
                    }
                )),
            (
                any::<i64>(),
                any::<i64>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(high_watermark, log_start_offset, batches)| (
                    Api::Fetch,
                    Response::Fetched {
                        high_watermark,
                        log_start_offset,
                        batches
                    }
                )),
            (any::<i64>(), any::<i64>()).prop_map(|(offset, timestamp_ms)| (
                Api::ListOffsets,
                Response::Offset {
                    offset,
                    timestamp_ms
                }
            )),
            (any::<i64>(), any::<i16>()).prop_map(|(producer_id, epoch)| (
                Api::InitProducer,
                Response::ProducerInit { producer_id, epoch }
            )),
            group_response().prop_map(|(api, response)| (api, Response::Group(response))),
        ]
    }

    fn partitions() -> impl Strategy<Value = Vec<(String, u32)>> {
        proptest::collection::vec(("[a-z]{1,8}", any::<u32>()), 0..4)
    }

    fn group_request() -> impl Strategy<Value = GroupRequest> {
        prop_oneof![
            (
                "[a-z]{1,8}",
                "[a-z0-9-]{0,12}",
                any::<i32>(),
                "[a-z0-9]{0,8}",
                proptest::collection::vec("[a-z]{1,8}", 0..3),
                partitions()
            )
                .prop_map(
                    |(group, member_id, member_epoch, instance_id, topics, owned)| {
                        GroupRequest::Heartbeat {
                            group,
                            member_id,
                            member_epoch,
                            instance_id,
                            topics,
                            owned,
                        }
                    }
                ),
            ("[a-z]{1,8}", "[a-z0-9-]{1,12}")
                .prop_map(|(group, member_id)| GroupRequest::Leave { group, member_id }),
            (
                "[a-z]{1,8}",
                "[a-z0-9-]{1,12}",
                any::<i32>(),
                proptest::collection::vec(
                    (("[a-z]{1,8}", any::<u32>()), any::<i64>(), ".{0,10}"),
                    0..4
                )
            )
                .prop_map(|(group, member_id, member_epoch, offsets)| {
                    GroupRequest::Commit {
                        group,
                        member_id,
                        member_epoch,
                        offsets,
                    }
                }),
            ("[a-z]{1,8}", partitions())
                .prop_map(|(group, partitions)| GroupRequest::FetchOffsets { group, partitions }),
            "[a-z]{1,8}".prop_map(|group| GroupRequest::Describe { group }),
            Just(GroupRequest::List),
        ]
    }

    fn group_response() -> impl Strategy<Value = (Api, GroupResponse)> {
        prop_oneof![
            ("[a-z0-9-]{1,12}", any::<i32>(), any::<u32>(), partitions()).prop_map(
                |(member_id, member_epoch, heartbeat_interval_ms, partitions)| (
                    Api::GroupHeartbeat,
                    GroupResponse::Assignment {
                        member_id,
                        member_epoch,
                        heartbeat_interval_ms,
                        partitions
                    }
                )
            ),
            Just((Api::LeaveGroup, GroupResponse::Left)),
            Just((Api::CommitOffsets, GroupResponse::Committed)),
            proptest::collection::vec(
                (("[a-z]{1,8}", any::<u32>()), any::<i64>(), ".{0,10}"),
                0..4
            )
            .prop_map(|offsets| (Api::FetchOffsets, GroupResponse::Offsets(offsets))),
            (
                "[a-z]{1,8}",
                any::<i32>(),
                proptest::collection::vec(("[a-z0-9-]{1,12}", "[a-z]{0,6}", partitions()), 0..3),
                proptest::collection::vec((("[a-z]{1,8}", any::<u32>()), any::<[i64; 4]>()), 0..3)
            )
                .prop_map(|(group, generation, members, lags)| (
                    Api::DescribeGroup,
                    GroupResponse::Description(GroupDescription {
                        group,
                        generation,
                        members: members
                            .into_iter()
                            .map(|(member_id, instance_id, partitions)| MemberDescription {
                                member_id,
                                instance_id,
                                partitions
                            })
                            .collect(),
                        partitions: lags
                            .into_iter()
                            .map(
                                |(partition, [committed, end_offset, lag_records, lag_ms])| {
                                    PartitionLag {
                                        partition,
                                        committed,
                                        end_offset,
                                        lag_records,
                                        lag_ms,
                                    }
                                }
                            )
                            .collect(),
                    })
                )),
            proptest::collection::vec("[a-z]{1,8}", 0..4)
                .prop_map(|groups| (Api::ListGroups, GroupResponse::Groups(groups))),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in request()) {
            let mut body = Vec::new();
            request.encode(&mut body);
            prop_assert_eq!(Request::decode(request.api(), &body).expect("decodes"), request);
        }

        #[test]
        fn responses_round_trip((api, response) in response()) {
            let mut body = Vec::new();
            response.encode(&mut body);
            prop_assert_eq!(Response::decode(api, &body).expect("decodes"), response.clone());
            prop_assert_eq!(Response::decode_owned(api, body.clone()).expect("decodes owned"), response.clone());
            let mut split = Vec::new();
            if let Some(tail) = response.clone().encode_split(&mut split) {
                split.extend_from_slice(&tail);
            }
            prop_assert_eq!(split, body);
        }

        #[test]
        fn random_and_truncated_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), api in 1u16..15, request in request(), cut in 0usize..200) {
            let api = Api::from_code(api).expect("known api");
            let _ = Request::decode(api, &bytes);
            let _ = Response::decode(api, &bytes);
            let _ = Response::decode_owned(api, bytes.clone());
            let mut body = Vec::new();
            request.encode(&mut body);
            let cut = cut.min(body.len());
            if cut < body.len() {
                prop_assert!(Request::decode(request.api(), &body[..cut]).is_err() || matches!(request, Request::ListTopics | Request::Group(GroupRequest::List)));
            }
        }
    }
}
