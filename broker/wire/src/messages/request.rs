//! Requests: the [`Request`] enum, encoded into and decoded from request frame bodies.

use bytes::Bytes;

use crate::api::Api;
use crate::codec::{put_string, DecodeError, Reader};
use crate::groups::GroupRequest;
use crate::limits::{BATCH_BYTES_MAX, PRODUCER_NAME_BYTES_MAX};
use crate::security::SecurityRequest;

use super::response::METADATA_REPLICAS_MAX;
use super::topic::{put_config, read_config, topic_name, Durability, OffsetSpec, TopicConfig};

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
        /// Shared, not copied: a client sends it as its own chunk after the frame's head, and
        /// the broker's is a view into the frame it read (see [`Request::decode_owned`]).
        batch: Bytes,
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
    /// Where the topic's partitions are led: which node, at which address.
    Metadata {
        topic: String,
    },
    /// Moves a partition of a cluster's topic to `replicas` (node ids, the preferred leader
    /// first): answered once the move is recorded; the data follows in the background.
    MovePartition {
        topic: String,
        partition: u32,
        replicas: Vec<u64>,
    },
    /// Removes node `node` from the cluster for good: refused while it holds a replica.
    RemoveNode {
        node: u64,
    },
    /// Consumer-group requests (APIs 9-14).
    Group(GroupRequest),
    /// Authentication and ACL administration (APIs 16-19).
    Security(SecurityRequest),
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
            Request::Metadata { .. } => Api::Metadata,
            Request::MovePartition { .. } => Api::MovePartition,
            Request::RemoveNode { .. } => Api::RemoveNode,
            Request::Group(group) => group.api(),
            Request::Security(security) => security.api(),
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
        Self::encode_produce_head(out, topic, partition, durability, batch.len());
        out.extend_from_slice(batch);
    }

    /// Encodes into `out` everything but a trailing payload, which is returned to be sent
    /// after it as is: a produce's batch goes to the transport without being copied into the
    /// frame (the encoding is the same as [`Request::encode`]'s).
    pub fn encode_split(&self, out: &mut Vec<u8>) -> Option<Bytes> {
        match self {
            Request::Produce {
                topic,
                partition,
                durability,
                batch,
            } => {
                Self::encode_produce_head(out, topic, *partition, *durability, batch.len());
                Some(batch.clone())
            }
            other => {
                other.encode(out);
                None
            }
        }
    }

    /// A `Produce` body up to its batch's bytes: topic, partition, durability, batch length.
    fn encode_produce_head(
        out: &mut Vec<u8>,
        topic: &str,
        partition: u32,
        durability: Durability,
        batch_len: usize,
    ) {
        put_string(out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
        out.push(match durability {
            Durability::Memory => 0,
            Durability::Fsync => 1,
        });
        out.extend_from_slice(&(batch_len as u32).to_be_bytes());
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::CreateTopic { name, config } => {
                put_string(out, name);
                put_config(out, config);
            }
            Request::DeleteTopic { name }
            | Request::DescribeTopic { name }
            | Request::Metadata { topic: name } => put_string(out, name),
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
            Request::MovePartition {
                topic,
                partition,
                replicas,
            } => {
                put_string(out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
                crate::codec::put_node_ids(out, replicas);
            }
            Request::RemoveNode { node } => out.extend_from_slice(&node.to_be_bytes()),
            Request::Group(group) => group.encode(out),
            Request::Security(security) => security.encode(out),
        }
    }

    /// Decodes an owned body; a produce's batch is a view into it (no copy, no move), and
    /// the only holder of that buffer, so the broker can stamp it in place.
    pub fn decode_owned(api: Api, body: Vec<u8>) -> Result<Self, DecodeError> {
        if api != Api::Produce {
            return Self::decode(api, &body);
        }
        let mut r = Reader::new(&body);
        let (topic, partition, durability) = Self::decode_produce_head(&mut r)?;
        let batch_len = r.bytes("batch", BATCH_BYTES_MAX)?.len();
        r.finish("request")?;
        let start = body.len() - batch_len;
        Ok(Request::Produce {
            topic,
            partition,
            durability,
            batch: Bytes::from(body).slice(start..),
        })
    }

    fn decode_produce_head(r: &mut Reader<'_>) -> Result<(String, u32, Durability), DecodeError> {
        Ok((
            topic_name(r)?,
            r.u32("partition")?,
            match r.u8("durability")? {
                0 => Durability::Memory,
                1 => Durability::Fsync,
                other => {
                    return Err(DecodeError::Invalid {
                        what: "durability",
                        detail: other.to_string(),
                    })
                }
            },
        ))
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
            Api::Produce => {
                let (topic, partition, durability) = Self::decode_produce_head(&mut r)?;
                Request::Produce {
                    topic,
                    partition,
                    durability,
                    batch: Bytes::copy_from_slice(r.bytes("batch", BATCH_BYTES_MAX)?),
                }
            }
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
            Api::Metadata => Request::Metadata {
                topic: topic_name(&mut r)?,
            },
            Api::MovePartition => {
                let topic = topic_name(&mut r)?;
                let partition = r.u32("partition")?;
                let replicas = r.node_ids("replicas", METADATA_REPLICAS_MAX)?;
                Request::MovePartition {
                    topic,
                    partition,
                    replicas,
                }
            }
            Api::RemoveNode => Request::RemoveNode {
                node: r.u64("node id")?,
            },
            Api::GroupHeartbeat
            | Api::LeaveGroup
            | Api::CommitOffsets
            | Api::FetchOffsets
            | Api::DescribeGroup
            | Api::ListGroups
            | Api::DeleteGroup => Request::Group(GroupRequest::decode(api, &mut r)?),
            Api::Authenticate
            | Api::CreateAcls
            | Api::DescribeAcls
            | Api::DeleteAcls
            | Api::AlterUser
            | Api::DeleteUser
            | Api::ListUsers => Request::Security(SecurityRequest::decode(api, &mut r)?),
        };
        r.finish("request")?;
        Ok(request)
    }
}
