//! Consumer-group requests and responses (APIs 9–14), kept apart from `messages` so each file
//! stays one concept. Encoded inside the same frames and envelopes.

use std::fmt;

use crate::api::Api;
use crate::codec::{put_string, DecodeError, Reader};
use crate::limits::{
    ERROR_MESSAGE_BYTES_MAX, GROUP_ITEMS_MAX, GROUP_NAME_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
};

/// A partition of a topic. Orders by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    /// `topic/partition`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// An offset a member commits for a partition: the next record to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub partition: TopicPartition,
    pub offset: i64,
    /// Free-form, empty when the member has nothing to add.
    pub metadata: String,
}

/// A partition's committed offset as fetched back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub partition: TopicPartition,
    /// `None` when nothing was committed (-1 on the wire).
    pub offset: Option<i64>,
    pub metadata: String,
}

/// The wire's "none" for an offset or a lag.
const NONE_I64: i64 = -1;

fn put_optional_i64(out: &mut Vec<u8>, value: Option<i64>) {
    out.extend_from_slice(&value.unwrap_or(NONE_I64).to_be_bytes());
}

/// Negative values mean none.
fn optional_i64(value: i64) -> Option<i64> {
    (value >= 0).then_some(value)
}

/// Empty on the wire means none.
fn put_optional_string(out: &mut Vec<u8>, value: Option<&str>) {
    put_string(out, value.unwrap_or(""));
}

fn optional_string(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Join (no member id; empty on the wire) or heartbeat, reporting the partitions still
    /// consumed.
    Heartbeat {
        group: String,
        member_id: Option<String>,
        member_epoch: i32,
        /// A stable id across restarts (static membership), if any; empty on the wire if not.
        instance_id: Option<String>,
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
        offsets: Vec<Commit>,
    },
    FetchOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    Describe {
        group: String,
    },
    List,
    /// Deletes a group with no live members and its committed offsets.
    Delete {
        group: String,
    },
}

/// One member as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    /// Empty on the wire when the member is not static.
    pub instance_id: Option<String>,
    pub partitions: Vec<TopicPartition>,
}

/// Committed position and lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: TopicPartition,
    /// `None` when nothing was committed (-1 on the wire).
    pub committed: Option<i64>,
    pub end_offset: i64,
    pub lag_records: i64,
    /// Age of the oldest unconsumed record; `None` when there is none or it is unknown (-1 on
    /// the wire).
    pub lag_ms: Option<i64>,
    /// What is wrong with the committed position, if anything: past the log's end or before
    /// its start (the consumer applies its reset policy there), or committed to an earlier
    /// incarnation of the topic (deleted and created again). Empty on the wire when fine.
    pub problem: Option<String>,
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
    /// Committed offset and metadata per asked partition.
    Offsets(Vec<CommittedOffset>),
    Description(GroupDescription),
    Groups(Vec<String>),
    Deleted,
}

fn put_partition(out: &mut Vec<u8>, partition: &TopicPartition) {
    put_string(out, &partition.topic);
    out.extend_from_slice(&partition.partition.to_be_bytes());
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[TopicPartition]) {
    out.extend_from_slice(&(partitions.len() as u32).to_be_bytes());
    for partition in partitions {
        put_partition(out, partition);
    }
}

/// Commits and fetched offsets share one layout: partition, offset (-1: none), metadata.
fn put_offset(out: &mut Vec<u8>, partition: &TopicPartition, offset: i64, metadata: &str) {
    put_partition(out, partition);
    out.extend_from_slice(&offset.to_be_bytes());
    put_string(out, metadata);
}

fn read_offset(r: &mut Reader<'_>) -> Result<(TopicPartition, i64, String), DecodeError> {
    Ok((
        read_partition(r)?,
        r.i64("offset")?,
        r.string("metadata", ERROR_MESSAGE_BYTES_MAX)?,
    ))
}

fn put_commits(out: &mut Vec<u8>, commits: &[Commit]) {
    out.extend_from_slice(&(commits.len() as u32).to_be_bytes());
    for commit in commits {
        put_offset(out, &commit.partition, commit.offset, &commit.metadata);
    }
}

fn read_commits(r: &mut Reader<'_>) -> Result<Vec<Commit>, DecodeError> {
    let n = count(r, "offsets")?;
    let mut commits = Vec::with_capacity(n);
    for _ in 0..n {
        let (partition, offset, metadata) = read_offset(r)?;
        commits.push(Commit {
            partition,
            offset,
            metadata,
        });
    }
    Ok(commits)
}

fn put_committed(out: &mut Vec<u8>, offsets: &[CommittedOffset]) {
    out.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for committed in offsets {
        put_offset(
            out,
            &committed.partition,
            committed.offset.unwrap_or(NONE_I64),
            &committed.metadata,
        );
    }
}

fn read_committed(r: &mut Reader<'_>) -> Result<Vec<CommittedOffset>, DecodeError> {
    let n = count(r, "offsets")?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        let (partition, offset, metadata) = read_offset(r)?;
        offsets.push(CommittedOffset {
            partition,
            offset: optional_i64(offset),
            metadata,
        });
    }
    Ok(offsets)
}

fn count(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    r.count(what, GROUP_ITEMS_MAX)
}

fn read_partition(r: &mut Reader<'_>) -> Result<TopicPartition, DecodeError> {
    Ok(TopicPartition {
        topic: r.string("topic", TOPIC_NAME_BYTES_MAX)?,
        partition: r.u32("partition")?,
    })
}

fn read_partitions(r: &mut Reader<'_>) -> Result<Vec<TopicPartition>, DecodeError> {
    let n = count(r, "partitions")?;
    (0..n).map(|_| read_partition(r)).collect()
}

fn group_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.string("group", GROUP_NAME_BYTES_MAX)
}

impl GroupRequest {
    /// The group the request is about (`None` for a listing).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupRequest::Heartbeat { group, .. }
            | GroupRequest::Leave { group, .. }
            | GroupRequest::Commit { group, .. }
            | GroupRequest::FetchOffsets { group, .. }
            | GroupRequest::Describe { group }
            | GroupRequest::Delete { group } => Some(group),
            GroupRequest::List => None,
        }
    }

    pub fn api(&self) -> Api {
        match self {
            GroupRequest::Heartbeat { .. } => Api::GroupHeartbeat,
            GroupRequest::Leave { .. } => Api::LeaveGroup,
            GroupRequest::Commit { .. } => Api::CommitOffsets,
            GroupRequest::FetchOffsets { .. } => Api::FetchOffsets,
            GroupRequest::Describe { .. } => Api::DescribeGroup,
            GroupRequest::List => Api::ListGroups,
            GroupRequest::Delete { .. } => Api::DeleteGroup,
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
                put_optional_string(out, member_id.as_deref());
                out.extend_from_slice(&member_epoch.to_be_bytes());
                put_optional_string(out, instance_id.as_deref());
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
                put_commits(out, offsets);
            }
            GroupRequest::FetchOffsets { group, partitions } => {
                put_string(out, group);
                put_partitions(out, partitions);
            }
            GroupRequest::Describe { group } | GroupRequest::Delete { group } => {
                put_string(out, group)
            }
            GroupRequest::List => {}
        }
    }

    pub(crate) fn decode(api: Api, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            Api::GroupHeartbeat => {
                let group = group_name(r)?;
                let member_id = optional_string(r.string("member id", GROUP_NAME_BYTES_MAX)?);
                let member_epoch = r.i32("member epoch")?;
                let instance_id = optional_string(r.string("instance id", GROUP_NAME_BYTES_MAX)?);
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
                let offsets = read_commits(r)?;
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
            Api::DeleteGroup => GroupRequest::Delete {
                group: group_name(r)?,
            },
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
            GroupResponse::Left | GroupResponse::Committed | GroupResponse::Deleted => {}
            GroupResponse::Offsets(offsets) => {
                put_committed(out, offsets);
            }
            GroupResponse::Description(description) => {
                put_string(out, &description.group);
                out.extend_from_slice(&description.generation.to_be_bytes());
                out.extend_from_slice(&(description.members.len() as u32).to_be_bytes());
                for member in &description.members {
                    put_string(out, &member.member_id);
                    put_optional_string(out, member.instance_id.as_deref());
                    put_partitions(out, &member.partitions);
                }
                out.extend_from_slice(&(description.partitions.len() as u32).to_be_bytes());
                for lag in &description.partitions {
                    put_partition(out, &lag.partition);
                    put_optional_i64(out, lag.committed);
                    out.extend_from_slice(&lag.end_offset.to_be_bytes());
                    out.extend_from_slice(&lag.lag_records.to_be_bytes());
                    put_optional_i64(out, lag.lag_ms);
                    put_optional_string(
                        out,
                        lag.problem
                            .as_deref()
                            .map(|p| crate::codec::truncate_utf8(p, ERROR_MESSAGE_BYTES_MAX)),
                    );
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
            Api::DeleteGroup => GroupResponse::Deleted,
            Api::FetchOffsets => {
                let offsets = read_committed(r)?;
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
                        instance_id: optional_string(
                            r.string("instance id", GROUP_NAME_BYTES_MAX)?,
                        ),
                        partitions: read_partitions(r)?,
                    });
                }
                let n = count(r, "partitions")?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    let partition = read_partition(r)?;
                    partitions.push(PartitionLag {
                        partition,
                        committed: optional_i64(r.i64("committed")?),
                        end_offset: r.i64("end offset")?,
                        lag_records: r.i64("lag")?,
                        lag_ms: optional_i64(r.i64("lag ms")?),
                        problem: optional_string(r.string("problem", ERROR_MESSAGE_BYTES_MAX)?),
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
