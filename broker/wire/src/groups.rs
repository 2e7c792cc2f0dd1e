//! Consumer-group requests and responses (APIs 9–14), kept apart from `messages` so each file
//! stays one concept. Encoded inside the same frames and envelopes.

use crate::api::Api;
use crate::codec::{put_string, DecodeError, Reader};
use crate::limits::{
    ERROR_MESSAGE_BYTES_MAX, GROUP_ITEMS_MAX, GROUP_NAME_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
};

/// A topic partition.
pub type TopicPartition = (String, u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Join (empty member id) or heartbeat, reporting the partitions still consumed.
    Heartbeat {
        group: String,
        member_id: String,
        member_epoch: i32,
        instance_id: String,
        topics: Vec<String>,
        owned: Vec<TopicPartition>,
    },
    Leave {
        group: String,
        member_id: String,
    },
    /// Offsets to resume from (the next record to consume), with optional metadata.
    Commit {
        group: String,
        member_id: String,
        member_epoch: i32,
        offsets: Vec<(TopicPartition, i64, String)>,
    },
    FetchOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    Describe {
        group: String,
    },
    List,
}

/// One member as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: String,
    pub partitions: Vec<TopicPartition>,
}

/// Committed position and lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: TopicPartition,
    /// -1 when nothing was committed.
    pub committed: i64,
    pub end_offset: i64,
    pub lag_records: i64,
    /// Age of the oldest unconsumed record, -1 when there is none.
    pub lag_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub generation: i32,
    pub members: Vec<MemberDescription>,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResponse {
    Assignment {
        member_id: String,
        member_epoch: i32,
        heartbeat_interval_ms: u32,
        partitions: Vec<TopicPartition>,
    },
    Left,
    Committed,
    /// Committed offset (-1: none) and metadata per asked partition.
    Offsets(Vec<(TopicPartition, i64, String)>),
    Description(GroupDescription),
    Groups(Vec<String>),
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[TopicPartition]) {
    out.extend_from_slice(&(partitions.len() as u32).to_be_bytes());
    for (topic, partition) in partitions {
        put_string(out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
    }
}

type CommittedOffset = (TopicPartition, i64, String);

fn put_offsets(out: &mut Vec<u8>, offsets: &[CommittedOffset]) {
    out.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for ((topic, partition), offset, metadata) in offsets {
        put_string(out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        put_string(out, metadata);
    }
}

fn read_offsets(r: &mut Reader<'_>) -> Result<Vec<CommittedOffset>, DecodeError> {
    let n = count(r, "offsets")?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        let partition = read_partition(r)?;
        offsets.push((
            partition,
            r.i64("offset")?,
            r.string("metadata", ERROR_MESSAGE_BYTES_MAX)?,
        ));
    }
    Ok(offsets)
}

fn count(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    r.count(what, GROUP_ITEMS_MAX)
}

fn read_partition(r: &mut Reader<'_>) -> Result<TopicPartition, DecodeError> {
    Ok((
        r.string("topic", TOPIC_NAME_BYTES_MAX)?,
        r.u32("partition")?,
    ))
}

fn read_partitions(r: &mut Reader<'_>) -> Result<Vec<TopicPartition>, DecodeError> {
    let n = count(r, "partitions")?;
    (0..n).map(|_| read_partition(r)).collect()
}

fn group_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.string("group", GROUP_NAME_BYTES_MAX)
}

impl GroupRequest {
    pub fn api(&self) -> Api {
        match self {
            GroupRequest::Heartbeat { .. } => Api::GroupHeartbeat,
            GroupRequest::Leave { .. } => Api::LeaveGroup,
            GroupRequest::Commit { .. } => Api::CommitOffsets,
            GroupRequest::FetchOffsets { .. } => Api::FetchOffsets,
            GroupRequest::Describe { .. } => Api::DescribeGroup,
            GroupRequest::List => Api::ListGroups,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GroupRequest::Heartbeat {
                group,
                member_id,
                member_epoch,
                instance_id,
                topics,
                owned,
            } => {
                put_string(out, group);
                put_string(out, member_id);
                out.extend_from_slice(&member_epoch.to_be_bytes());
                put_string(out, instance_id);
                out.extend_from_slice(&(topics.len() as u32).to_be_bytes());
                for topic in topics {
                    put_string(out, topic);
                }
                put_partitions(out, owned);
            }
            GroupRequest::Leave { group, member_id } => {
                put_string(out, group);
                put_string(out, member_id);
            }
            GroupRequest::Commit {
                group,
                member_id,
                member_epoch,
                offsets,
            } => {
                put_string(out, group);
                put_string(out, member_id);
                out.extend_from_slice(&member_epoch.to_be_bytes());
                put_offsets(out, offsets);
            }
            GroupRequest::FetchOffsets { group, partitions } => {
                put_string(out, group);
                put_partitions(out, partitions);
            }
            GroupRequest::Describe { group } => put_string(out, group),
            GroupRequest::List => {}
        }
    }

    pub(crate) fn decode(api: Api, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            Api::GroupHeartbeat => {
                let group = group_name(r)?;
                let member_id = r.string("member id", GROUP_NAME_BYTES_MAX)?;
                let member_epoch = r.i32("member epoch")?;
                let instance_id = r.string("instance id", GROUP_NAME_BYTES_MAX)?;
                let n = count(r, "topics")?;
                let topics = (0..n)
                    .map(|_| r.string("topic", TOPIC_NAME_BYTES_MAX))
                    .collect::<Result<_, _>>()?;
                let owned = read_partitions(r)?;
                GroupRequest::Heartbeat {
                    group,
                    member_id,
                    member_epoch,
                    instance_id,
                    topics,
                    owned,
                }
            }
            Api::LeaveGroup => GroupRequest::Leave {
                group: group_name(r)?,
                member_id: r.string("member id", GROUP_NAME_BYTES_MAX)?,
            },
            Api::CommitOffsets => {
                let group = group_name(r)?;
                let member_id = r.string("member id", GROUP_NAME_BYTES_MAX)?;
                let member_epoch = r.i32("member epoch")?;
                let offsets = read_offsets(r)?;
                GroupRequest::Commit {
                    group,
                    member_id,
                    member_epoch,
                    offsets,
                }
            }
            Api::FetchOffsets => GroupRequest::FetchOffsets {
                group: group_name(r)?,
                partitions: read_partitions(r)?,
            },
            Api::DescribeGroup => GroupRequest::Describe {
                group: group_name(r)?,
            },
            Api::ListGroups => GroupRequest::List,
            other => return Err(DecodeError::UnknownApi(other as u16)),
        })
    }
}

impl GroupResponse {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GroupResponse::Assignment {
                member_id,
                member_epoch,
                heartbeat_interval_ms,
                partitions,
            } => {
                put_string(out, member_id);
                out.extend_from_slice(&member_epoch.to_be_bytes());
                out.extend_from_slice(&heartbeat_interval_ms.to_be_bytes());
                put_partitions(out, partitions);
            }
            GroupResponse::Left | GroupResponse::Committed => {}
            GroupResponse::Offsets(offsets) => {
                put_offsets(out, offsets);
            }
            GroupResponse::Description(description) => {
                put_string(out, &description.group);
                out.extend_from_slice(&description.generation.to_be_bytes());
                out.extend_from_slice(&(description.members.len() as u32).to_be_bytes());
                for member in &description.members {
                    put_string(out, &member.member_id);
                    put_string(out, &member.instance_id);
                    put_partitions(out, &member.partitions);
                }
                out.extend_from_slice(&(description.partitions.len() as u32).to_be_bytes());
                for lag in &description.partitions {
                    put_string(out, &lag.partition.0);
                    out.extend_from_slice(&lag.partition.1.to_be_bytes());
                    for value in [lag.committed, lag.end_offset, lag.lag_records, lag.lag_ms] {
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                }
            }
            GroupResponse::Groups(groups) => {
                out.extend_from_slice(&(groups.len() as u32).to_be_bytes());
                for group in groups {
                    put_string(out, group);
                }
            }
        }
    }

    pub(crate) fn decode(api: Api, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            Api::GroupHeartbeat => GroupResponse::Assignment {
                member_id: r.string("member id", GROUP_NAME_BYTES_MAX)?,
                member_epoch: r.i32("member epoch")?,
                heartbeat_interval_ms: r.u32("heartbeat interval")?,
                partitions: read_partitions(r)?,
            },
            Api::LeaveGroup => GroupResponse::Left,
            Api::CommitOffsets => GroupResponse::Committed,
            Api::FetchOffsets => {
                let offsets = read_offsets(r)?;
                GroupResponse::Offsets(offsets)
            }
            Api::DescribeGroup => {
                let group = group_name(r)?;
                let generation = r.i32("generation")?;
                let n = count(r, "members")?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    members.push(MemberDescription {
                        member_id: r.string("member id", GROUP_NAME_BYTES_MAX)?,
                        instance_id: r.string("instance id", GROUP_NAME_BYTES_MAX)?,
                        partitions: read_partitions(r)?,
                    });
                }
                let n = count(r, "partitions")?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    let partition = read_partition(r)?;
                    partitions.push(PartitionLag {
                        partition,
                        committed: r.i64("committed")?,
                        end_offset: r.i64("end offset")?,
                        lag_records: r.i64("lag")?,
                        lag_ms: r.i64("lag ms")?,
                    });
                }
                GroupResponse::Description(GroupDescription {
                    group,
                    generation,
                    members,
                    partitions,
                })
            }
            Api::ListGroups => {
                let n = count(r, "groups")?;
                GroupResponse::Groups((0..n).map(|_| group_name(r)).collect::<Result<_, _>>()?)
            }
            other => return Err(DecodeError::UnknownApi(other as u16)),
        })
    }
}
