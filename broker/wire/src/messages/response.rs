//! Responses: the [`Response`] enum and its error answer, encoded into and decoded from
//! response frame bodies.

use bytes::Bytes;

use crate::api::Api;
use crate::codec::{put_bytes, put_string, DecodeError, Reader};
use crate::error::ErrorCode;
use crate::groups::GroupResponse;
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, ERROR_MESSAGE_BYTES_MAX, FETCH_BYTES_MAX,
    PARTITIONS_PER_TOPIC_MAX, TOPICS_LISTED_MAX,
};
use crate::security::SecurityResponse;

use super::topic::{put_description, read_description, TopicDescription};

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
        /// Shared, not copied: the broker hands its read buffer to the transport, and a
        /// client's answer is a view into the frame it read.
        batches: Bytes,
    },
    Offset {
        offset: i64,
        timestamp_ms: i64,
    },
    ProducerInit {
        producer_id: i64,
        epoch: i16,
    },
    Metadata(TopicMetadata),
    /// A partition move is recorded (or the partition had those replicas already).
    PartitionMoving,
    /// A node left the cluster.
    NodeRemoved,
    Group(GroupResponse),
    Security(SecurityResponse),
}

/// Most nodes a metadata answer names.
pub const METADATA_NODES_MAX: usize = 1024;
/// Most replicas a partition has in a metadata answer.
pub const METADATA_REPLICAS_MAX: usize = 64;

/// A node of a cluster and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub id: u64,
    pub addr: String,
}

/// Where one partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    pub partition: u32,
    /// The node leading it, if one is known; `None` with no replicas means the broker
    /// answering serves it itself (a single broker, not a cluster).
    pub leader: Option<u64>,
    /// Its replicas' nodes, the preferred leader first (empty on a single broker).
    pub replicas: Vec<u64>,
}

/// Where a topic's partitions are led ([`Response::Metadata`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicMetadata {
    pub nodes: Vec<NodeAddress>,
    pub partitions: Vec<PartitionPlacement>,
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
            put_string(
                out,
                crate::codec::truncate_utf8(&error.message, ERROR_MESSAGE_BYTES_MAX),
            );
            return;
        }
        out.extend_from_slice(&0u16.to_be_bytes());
        match self {
            Response::Error(_)
            | Response::TopicCreated
            | Response::TopicDeleted
            | Response::PartitionMoving
            | Response::NodeRemoved => {}
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
            Response::Metadata(metadata) => {
                out.extend_from_slice(&(metadata.nodes.len() as u32).to_be_bytes());
                for node in &metadata.nodes {
                    out.extend_from_slice(&node.id.to_be_bytes());
                    put_string(out, &node.addr);
                }
                out.extend_from_slice(&(metadata.partitions.len() as u32).to_be_bytes());
                for placement in &metadata.partitions {
                    out.extend_from_slice(&placement.partition.to_be_bytes());
                    let leader = placement
                        .leader
                        .map_or(-1i64, |l| i64::try_from(l).unwrap_or(-1));
                    out.extend_from_slice(&leader.to_be_bytes());
                    crate::codec::put_node_ids(out, &placement.replicas);
                }
            }
            Response::Group(group) => group.encode(out),
            Response::Security(security) => security.encode(out),
        }
    }

    /// Encodes into `out` everything but a trailing payload, which is returned to be sent
    /// as is: a fetch's batches go to the transport without being copied into the frame.
    pub fn encode_split(self, out: &mut Vec<u8>) -> Option<Bytes> {
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

    /// Decodes an owned body; a fetch's batches are a view into it (no copy, no move).
    pub fn decode_owned(api: Api, body: Vec<u8>) -> Result<Self, DecodeError> {
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
            return Ok(Response::Fetched {
                high_watermark,
                log_start_offset,
                batches: Bytes::from(body).slice(FETCHED_HEAD_BYTES..),
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
            Api::MovePartition => Response::PartitionMoving,
            Api::RemoveNode => Response::NodeRemoved,
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
                batches: Bytes::copy_from_slice(
                    r.bytes("batches", FETCH_BYTES_MAX + BATCH_BYTES_MAX)?,
                ),
            },
            Api::ListOffsets => Response::Offset {
                offset: r.i64("offset")?,
                timestamp_ms: r.i64("timestamp")?,
            },
            Api::InitProducer => Response::ProducerInit {
                producer_id: r.i64("producer id")?,
                epoch: r.i16("epoch")?,
            },
            Api::Metadata => {
                let count = r.count("metadata nodes", METADATA_NODES_MAX)?;
                let mut nodes = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    nodes.push(NodeAddress {
                        id: r.u64("node id")?,
                        addr: r.string("node address", 256)?,
                    });
                }
                let count = r.count("partitions", PARTITIONS_PER_TOPIC_MAX as usize)?;
                let mut partitions = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    let partition = r.u32("partition")?;
                    let leader = r.i64("leader")?;
                    let replicas = r.node_ids("replicas", METADATA_REPLICAS_MAX)?;
                    partitions.push(PartitionPlacement {
                        partition,
                        leader: u64::try_from(leader).ok(),
                        replicas,
                    });
                }
                Response::Metadata(TopicMetadata { nodes, partitions })
            }
            Api::GroupHeartbeat
            | Api::LeaveGroup
            | Api::CommitOffsets
            | Api::FetchOffsets
            | Api::DescribeGroup
            | Api::ListGroups
            | Api::DeleteGroup => Response::Group(GroupResponse::decode(api, &mut r)?),
            Api::Authenticate
            | Api::CreateAcls
            | Api::DescribeAcls
            | Api::DeleteAcls
            | Api::AlterUser
            | Api::DeleteUser
            | Api::ListUsers => Response::Security(SecurityResponse::decode(api, &mut r)?),
        };
        r.finish("response")?;
        Ok(response)
    }
}
