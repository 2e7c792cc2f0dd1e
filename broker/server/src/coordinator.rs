//! The group coordinator: one [`Group`] state machine per consumer group (from the core) plus
//! its committed offsets, persisted per group in `groups/<hex(group)>.offsets` (rewritten
//! atomically on every commit, so a restarted broker resumes every group from its committed
//! offsets). Membership itself is not persisted: members rejoin after a restart.
//!
//! In a cluster the same state is kept without files: one coordinator per partition of the
//! internal groups topic, whose committed offsets are folded from that partition's records
//! ([`GroupRecord`], see `broker::cluster_groups`). There membership is replicated too: every
//! change of a group's members, epochs or assignment is a record, so that a coordinator taking
//! the partition over goes on with the same members ([`Coordinator::take_over`]).
//!
//! An offsets file is a versioned [`crate::meta`] envelope; files from before it (TSV:
//! `offset<TAB>partition<TAB>hex(metadata)<TAB>topic` lines) are still read, and the group's
//! next commit rewrites them as an envelope.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use herald_broker_core::groups::{
    Group, GroupConfig, GroupError, Heartbeat, Membership, TopicPartition,
};
use herald_wire::groups::{
    Commit, CommittedOffset, GroupDescription, GroupRequest, GroupResponse, MemberDescription,
    PartitionLag,
};
use herald_wire::limits::GROUP_NAME_BYTES_MAX;
use herald_wire::messages::TopicId;
use herald_wire::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::meta::{self, MetaError};

/// A member waiting for partitions heartbeats this many times more often.
pub const WAITING_HEARTBEAT_DIVISOR: u32 = 4;
/// Groups one broker coordinates.
pub const GROUPS_MAX: usize = 10_000;
/// A group without members keeps its committed offsets this long after its last activity
/// (a member, a commit), then it is deleted — Kafka's `offsets.retention.minutes` default.
pub const OFFSETS_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// The kind and format version of the offsets files.
const KIND: meta::Kind = meta::Kind {
    name: "group-offsets",
    version: 1,
};

/// A group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    offset: i64,
    metadata: String,
    /// The topic incarnation it was committed to (`None` in files from before topic ids:
    /// taken to be the current one).
    topic_id: Option<TopicId>,
}

/// The current incarnation of each topic, by name.
pub type TopicIds = BTreeMap<String, TopicId>;

impl Position {
    /// Committed to an incarnation of the topic other than the current one (the topic was
    /// deleted — and maybe created again — since).
    fn is_stale(&self, topic: &str, ids: &TopicIds) -> bool {
        self.topic_id
            .is_some_and(|committed| ids.get(topic) != Some(&committed))
    }
}

type Committed = BTreeMap<TopicPartition, Position>;

/// Version 1 payload of an offsets file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OffsetsV1 {
    /// The group, also in the file name: checked on reading.
    group: String,
    offsets: Vec<CommittedOffsetV1>,
    /// When the file was written (ms since the epoch): where offset retention counts from
    /// after a restart. Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffsetV1 {
    topic: String,
    partition: u32,
    offset: i64,
    metadata: String,
    /// The topic incarnation (hyphenated UUID); absent in files from before topic ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic_id: Option<String>,
}

/// One change of the state a cluster keeps for its groups: a record of the internal groups
/// topic (JSON, the record's key the group name). A coordinator builds it, the group's
/// partition commits it, and every replica folds it ([`Coordinator::apply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupRecord {
    /// Offsets committed by a member of `group` (checked by the coordinator before).
    Commit {
        group: String,
        offsets: Vec<CommittedOffsetV1>,
        at_ms: i64,
    },
    /// `group` deleted (it had no live members), with its offsets — unless, when
    /// `unless_committed_after` is set, a commit later than that was applied before this
    /// record (the group came back while its expiry was on its way).
    Delete {
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unless_committed_after: Option<i64>,
    },
    /// Nothing to apply: a new coordinator commits one before it answers, so that every
    /// record before it is folded first.
    Barrier,
    /// The group's membership (members, epochs, assignment) after a change, numbered by the
    /// term of the coordinator that wrote it and its count in that term: a replica keeps the
    /// highest-numbered one it folded, which a coordinator taking the partition over
    /// restores. (A later term's coordinator folded every earlier term's records before it
    /// wrote one, so its numbers are above all of them, on every replica.)
    Members {
        group: String,
        term: u64,
        number: u64,
        membership: Membership,
    },
    /// Every group of the partition has its committed offsets restated in the records from
    /// offset `cut` on (written just before this one by the coordinator, with no commit in
    /// between): the partition's records before `cut` may be purged.
    Checkpoint { cut: i64 },
}

/// Most bytes a group's replicated membership record may take (its members' ids, instance
/// ids, topics and partitions): a join or subscription that would make it larger is refused,
/// so that every change of the group can still be replicated.
pub const MEMBERSHIP_RECORD_BYTES_MAX: usize = 3 * 1024 * 1024;
const _: () = assert!(
    MEMBERSHIP_RECORD_BYTES_MAX + GROUP_NAME_BYTES_MAX < herald_wire::limits::VALUE_BYTES_MAX
);

/// A membership record's number: (term, count in the term).
type MembersVersion = (u64, u64);

/// Most offsets one restating record holds (a group with more gets several records).
pub const RESTATED_OFFSETS_PER_RECORD_MAX: usize = 1_000;

impl GroupRecord {
    /// The group the record is about (none for a barrier).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupRecord::Commit { group, .. }
            | GroupRecord::Delete { group, .. }
            | GroupRecord::Members { group, .. } => Some(group),
            GroupRecord::Barrier | GroupRecord::Checkpoint { .. } => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // A derived serialization of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl OffsetsV1 {
    fn new(group: &str, committed: &Committed, now_ms: i64) -> Self {
        OffsetsV1 {
            group: group.to_owned(),
            committed_at_ms: Some(now_ms),
            offsets: committed
                .iter()
                .map(|(partition, position)| CommittedOffsetV1 {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: position.offset,
                    metadata: position.metadata.clone(),
                    topic_id: position.topic_id.map(|id| id.to_string()),
                })
                .collect(),
        }
    }

    fn into_committed(self) -> Committed {
        self.offsets
            .into_iter()
            .map(|o| {
                (
                    TopicPartition::new(o.topic, o.partition),
                    Position {
                        offset: o.offset,
                        metadata: o.metadata,
                        // An unreadable id reads as another incarnation's: the group starts
                        // over rather than trusting a position it cannot place.
                        topic_id: o.topic_id.map(|id| TopicId::parse(&id).unwrap_or_default()),
                    },
                )
            })
            .collect()
    }
}

#[derive(Default)]
struct Entry {
    group: Group,
    committed: Committed,
    /// The group's offsets file under an older Herald's name, removed once the offsets are
    /// written under the current one.
    legacy_file: Option<String>,
    /// Its last member or commit (ms); `None` when unknown (loaded from an older file: the
    /// first expiry sweep starts counting).
    last_active_ms: Option<i64>,
    /// When its last commit was stored (ms), as the commit record says.
    last_commit_ms: Option<i64>,
    /// In a cluster: the highest-numbered membership record folded (what a coordinator taking
    /// the group over restores), and the last number this node gave one while leading.
    replicated: Option<(MembersVersion, Membership)>,
    proposed: MembersVersion,
}

pub struct Coordinator {
    /// Where offsets files go; `None` in a cluster, whose groups topic keeps them.
    dir: Option<PathBuf>,
    config: GroupConfig,
    offsets_retention_ms: i64,
    groups: Mutex<BTreeMap<String, Entry>>,
    /// Carried by every member id handed out (see `Group::with_incarnation`): new for each
    /// coordinator opened, and again whenever it takes its groups over.
    incarnation: Mutex<String>,
    /// The term this node last took its groups over in (a cluster's coordinator): the first
    /// half of the numbers of the membership records it writes.
    term: Mutex<u64>,
}

/// A fresh coordinator incarnation: 48 random bits in hex (the tail of a UUIDv7, whose head
/// is a timestamp).
fn new_incarnation() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_owned()
}

type Failure = (ErrorCode, String);

fn group_error(error: GroupError) -> Failure {
    let code = match error {
        GroupError::UnknownMember(_) => ErrorCode::UnknownMember,
        GroupError::FencedMember { .. } => ErrorCode::FencedMemberEpoch,
        GroupError::NotOwner { .. } => ErrorCode::NotPartitionOwner,
        GroupError::Full => ErrorCode::GroupFull,
    };
    (code, error.to_string())
}

fn validate_name(group: &str) -> Result<(), Failure> {
    if group.is_empty() || group.len() > GROUP_NAME_BYTES_MAX || group.chars().any(char::is_control)
    {
        return Err((ErrorCode::InvalidRequest, format!("invalid group name '{group}': 1 to {GROUP_NAME_BYTES_MAX} bytes, no control characters")));
    }
    Ok(())
}

/// The offsets file of `group`: named by a digest of the group name, so that every allowed
/// name (up to `GROUP_NAME_BYTES_MAX` bytes) fits a file name; the name itself is inside.
fn file_name(group: &str) -> String {
    use sha2::Digest;
    format!(
        "g-{}.offsets",
        hex::encode(sha2::Sha256::digest(group.as_bytes()))
    )
}

/// The name an older Herald gave the file: the group name in hex, too long for a file name
/// past 127 bytes of group name (those groups could never commit).
fn legacy_file_name(group: &str) -> String {
    format!("{}.offsets", hex::encode(group.as_bytes()))
}

/// A current offsets file: the group it belongs to (checked against the file name) and its
/// offsets.
fn read_named_offsets(
    path: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(String, Committed, Option<i64>), MetaError> {
    let payload = meta::decode::<OffsetsV1>(path, bytes, KIND)?
        .ok_or_else(|| MetaError::corrupt(path, "not a versioned offsets file"))?;
    if file_name(&payload.group) != name {
        return Err(MetaError::corrupt(
            path,
            format!(
                "it holds the offsets of group '{}', whose file has another name",
                payload.group
            ),
        ));
    }
    let group = payload.group.clone();
    let committed_at_ms = payload.committed_at_ms;
    Ok((group, payload.into_committed(), committed_at_ms))
}

/// The committed offsets of `group` from its file at `path`: an envelope, or the TSV written
/// before it.
fn read_offsets(path: &Path, group: &str, bytes: &[u8]) -> Result<Committed, MetaError> {
    if let Some(payload) = meta::decode::<OffsetsV1>(path, bytes, KIND)? {
        if payload.group != group {
            return Err(MetaError::corrupt(
                path,
                format!(
                    "it holds the offsets of group '{}', not of '{group}'",
                    payload.group
                ),
            ));
        }
        return Ok(payload.into_committed());
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(decode_offsets)
        .ok_or_else(|| MetaError::corrupt(path, "malformed offsets (old TSV format)"))
}

/// The TSV offsets format written before the versioned envelope.
fn decode_offsets(text: &str) -> Option<Committed> {
    let mut committed = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(4, '\t');
        let offset = fields.next()?.parse().ok()?;
        let partition = fields.next()?.parse().ok()?;
        let metadata = String::from_utf8(hex::decode(fields.next()?).ok()?).ok()?;
        committed.insert(
            TopicPartition::new(fields.next()?, partition),
            Position {
                offset,
                metadata,
                topic_id: None,
            },
        );
    }
    Some(committed)
}

impl Coordinator {
    pub fn open(data_dir: &Path, config: GroupConfig) -> std::io::Result<Self> {
        let dir = data_dir.join("groups");
        std::fs::create_dir_all(&dir)?;
        let mut groups = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with("g-") && name.ends_with(".offsets") {
                let bytes = std::fs::read(&path)?;
                let (group, committed, committed_at_ms) =
                    read_named_offsets(&path, &name, &bytes).map_err(std::io::Error::other)?;
                // The current file wins over a legacy one left by an interrupted migration.
                let entry = groups.entry(group).or_insert_with(|| Entry {
                    group: Group::new(config),
                    ..Entry::default()
                });
                entry.committed = committed;
                entry.last_active_ms = committed_at_ms;
                continue;
            }
            let Some(group) = name
                .strip_suffix(".offsets")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if legacy_file_name(&group) != name {
                continue;
            }
            // A legacy file beside a current one is what a crash between writing the current
            // file and removing the legacy one leaves: its content is stale, not even read.
            let current_exists = dir.join(file_name(&group)).exists();
            let committed = if current_exists {
                None
            } else {
                let bytes = std::fs::read(&path)?;
                Some(read_offsets(&path, &group, &bytes).map_err(std::io::Error::other)?)
            };
            let entry = groups.entry(group).or_insert_with(|| Entry {
                group: Group::new(config),
                ..Entry::default()
            });
            if let Some(committed) = committed {
                entry.committed = committed;
            }
            entry.legacy_file = Some(name);
        }
        let coordinator = Self {
            dir: Some(dir),
            config,
            offsets_retention_ms: OFFSETS_RETENTION_MS,
            groups: Mutex::new(BTreeMap::new()),
            incarnation: Mutex::new(new_incarnation()),
            term: Mutex::new(0),
        };
        for entry in groups.values_mut() {
            entry.group = coordinator.new_group();
        }
        *coordinator.groups() = groups;
        Ok(coordinator)
    }

    /// A coordinator without files: what it keeps comes from the records folded into it
    /// ([`Coordinator::apply`]).
    pub fn replicated(config: GroupConfig) -> Self {
        Self {
            dir: None,
            config,
            offsets_retention_ms: OFFSETS_RETENTION_MS,
            groups: Mutex::new(BTreeMap::new()),
            incarnation: Mutex::new(new_incarnation()),
            term: Mutex::new(0),
        }
    }

    /// An empty group whose member ids carry this coordinator's incarnation.
    fn new_group(&self) -> Group {
        let incarnation = self
            .incarnation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Group::new(self.config).with_incarnation(incarnation)
    }

    /// A coordinator like this one (group settings, offsets retention) without files, for a
    /// partition of a cluster's groups topic.
    pub fn without_files(&self) -> Self {
        Self {
            offsets_retention_ms: self.offsets_retention_ms,
            ..Self::replicated(self.config)
        }
    }

    /// Takes the groups over as the coordinator of a cluster's group partition in `term`
    /// (after every record of earlier terms is folded): each group
    /// goes on from the membership last replicated for it (members keep their ids, epochs
    /// and partitions; sessions count from `now_ms`), whatever this node remembers from an
    /// earlier lead. Member ids handed out from now on carry a new incarnation. Every group
    /// counts as active at `now_ms`: a live group that has not committed for longer than the
    /// offsets retention is not expired before its members heartbeat again.
    pub fn take_over(&self, now_ms: i64, term: u64) {
        let incarnation = new_incarnation();
        *self.incarnation.lock().unwrap_or_else(|p| p.into_inner()) = incarnation.clone();
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = term;
        for entry in self.groups().values_mut() {
            entry.group = match &entry.replicated {
                Some((version, membership)) => {
                    entry.proposed = *version;
                    Group::restore(self.config, membership, now_ms)
                        .with_incarnation(incarnation.clone())
                }
                None => {
                    entry.proposed = (0, 0);
                    Group::new(self.config).with_incarnation(incarnation.clone())
                }
            };
            entry.last_active_ms = Some(entry.last_active_ms.map_or(now_ms, |t| t.max(now_ms)));
        }
    }

    /// The record that replicates `group`'s membership as it is here, numbered above every
    /// earlier one, if it differs from the last one folded (a join, a leave, an expiry, a new
    /// assignment) or one this node wrote is still on its way (which may differ from what is
    /// here now: the latest state must follow it). `None` when there is nothing to replicate.
    pub fn membership_record(&self, group: &str) -> Option<GroupRecord> {
        let term = *self.term.lock().unwrap_or_else(|p| p.into_inner());
        let mut groups = self.groups();
        let entry = groups.get_mut(group)?;
        let membership = entry.group.membership();
        let (folded, unchanged) = match &entry.replicated {
            Some((version, replicated)) => (*version, *replicated == membership),
            None => ((0, 0), membership.is_empty()),
        };
        if unchanged && entry.proposed <= folded {
            return None;
        }
        let last = entry.proposed.max(folded);
        entry.proposed = if last.0 == term {
            (term, last.1 + 1)
        } else {
            (term.max(last.0), 1)
        };
        Some(GroupRecord::Members {
            group: group.to_owned(),
            term: entry.proposed.0,
            number: entry.proposed.1,
            membership,
        })
    }

    /// Keeps the offsets of member-less groups this long instead of `OFFSETS_RETENTION_MS`.
    pub fn with_offsets_retention_ms(mut self, ms: i64) -> Self {
        self.offsets_retention_ms = ms;
        self
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How often members should heartbeat: a third of the session timeout.
    pub fn heartbeat_interval_ms(&self) -> u32 {
        (self.config.session_timeout_ms / 3).clamp(1, i64::from(u32::MAX)) as u32
    }

    pub fn heartbeat(
        &self,
        group: &str,
        request: Heartbeat,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupResponse, Failure> {
        validate_name(group)?;
        let mut groups = self.groups();
        // Only a join may create a group: a stray heartbeat for an unknown group must not
        // leave an empty one behind.
        if !groups.contains_key(group) {
            if let Some(member_id) = &request.member_id {
                return Err((
                    ErrorCode::UnknownMember,
                    format!("unknown member '{member_id}' in group '{group}': join again"),
                ));
            }
        }
        if !groups.contains_key(group) && groups.len() >= GROUPS_MAX {
            return Err((
                ErrorCode::GroupFull,
                format!("the broker already coordinates {GROUPS_MAX} groups"),
            ));
        }
        let entry = groups.entry(group.to_owned()).or_insert_with(|| Entry {
            group: self.new_group(),
            ..Entry::default()
        });
        entry.last_active_ms = Some(now_ms);
        // In a cluster a join or a new subscription must leave a membership that can still be
        // replicated: checked on a copy kept to go back to.
        let grows = request
            .member_id
            .as_ref()
            .is_none_or(|member| entry.group.member_topics(member) != Some(&request.topics));
        let before = (self.dir.is_none() && grows).then(|| entry.group.clone());
        let assignment = entry
            .group
            .heartbeat(request, partitions, now_ms)
            .map_err(group_error)?;
        if let Some(before) = before {
            let bytes = serde_json::to_vec(&entry.group.membership()).map_or(0, |b| b.len());
            if bytes > MEMBERSHIP_RECORD_BYTES_MAX {
                entry.group = before;
                // A refused first join leaves no group behind.
                if entry.group.is_empty()
                    && entry.committed.is_empty()
                    && entry.replicated.is_none()
                {
                    groups.remove(group);
                }
                return Err((
                    ErrorCode::GroupFull,
                    format!(
                        "group '{group}' would take {bytes} bytes to replicate its members, more than {MEMBERSHIP_RECORD_BYTES_MAX}: subscribe to fewer topics or use fewer members"
                    ),
                ));
            }
        }
        Ok(GroupResponse::Assignment {
            member_id: assignment.member_id,
            member_epoch: assignment.member_epoch,
            // A member waiting for partitions to be released comes back sooner.
            heartbeat_interval_ms: if assignment.waiting {
                (self.heartbeat_interval_ms() / WAITING_HEARTBEAT_DIVISOR).max(1)
            } else {
                self.heartbeat_interval_ms()
            },
            partitions: assignment.partitions.into_iter().collect(),
        })
    }

    pub fn leave(
        &self,
        group: &str,
        member_id: &str,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupResponse, Failure> {
        let mut groups = self.groups();
        let entry = groups
            .get_mut(group)
            .ok_or_else(|| (ErrorCode::UnknownMember, format!("unknown group '{group}'")))?;
        entry
            .group
            .leave(member_id, partitions, now_ms)
            .map_err(group_error)?;
        Ok(GroupResponse::Left)
    }

    /// Answers the group requests a coordinator answers from its own state — joins and
    /// heartbeats, leaves, committed offsets, descriptions (`describe` makes them: their
    /// partition bounds come from wherever the partitions are) and the listing — the same on
    /// a single broker and in a cluster. Commits and deletions are handed back: a single
    /// broker writes them to files, a cluster to its groups topic.
    pub fn answer(
        &self,
        request: GroupRequest,
        (partitions, ids): (&BTreeMap<String, u32>, &TopicIds),
        now_ms: i64,
        describe: impl FnOnce(&str) -> Result<GroupDescription, Failure>,
    ) -> Result<Result<GroupResponse, Failure>, Box<GroupRequest>> {
        Ok(match request {
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
                    instance_id,
                    topics: topics.into_iter().collect(),
                    owned: owned.into_iter().collect(),
                };
                self.heartbeat(&group, heartbeat, partitions, now_ms)
            }
            GroupRequest::Leave { group, member_id } => {
                self.leave(&group, &member_id, partitions, now_ms)
            }
            GroupRequest::FetchOffsets {
                group,
                partitions: asked,
            } => Ok(self.fetch_offsets(&group, asked, ids)),
            GroupRequest::Describe { group } => describe(&group).map(GroupResponse::Description),
            GroupRequest::List => Ok(self.list()),
            other @ (GroupRequest::Commit { .. } | GroupRequest::Delete { .. }) => {
                return Err(Box::new(other))
            }
        })
    }

    /// Commits offsets after checking the member owns every partition at its epoch; the file
    /// is rewritten before the answer.
    pub fn commit(
        &self,
        group: &str,
        member: (&str, i32),
        offsets: Vec<Commit>,
        partitions: &BTreeMap<String, u32>,
        ids: &TopicIds,
        now_ms: i64,
    ) -> Result<GroupResponse, Failure> {
        let mut groups = self.groups();
        let record =
            Self::commit_record(&mut groups, group, member, offsets, partitions, ids, now_ms)?;
        self.store(&mut groups, &record)?;
        Ok(GroupResponse::Committed)
    }

    /// Checks a commit as [`Coordinator::commit`] does, without storing it: the record that
    /// stores it once replicated.
    pub fn prepare_commit(
        &self,
        group: &str,
        member: (&str, i32),
        offsets: Vec<Commit>,
        partitions: &BTreeMap<String, u32>,
        ids: &TopicIds,
        now_ms: i64,
    ) -> Result<GroupRecord, Failure> {
        Self::commit_record(
            &mut self.groups(),
            group,
            member,
            offsets,
            partitions,
            ids,
            now_ms,
        )
    }

    fn commit_record(
        groups: &mut BTreeMap<String, Entry>,
        group: &str,
        (member_id, member_epoch): (&str, i32),
        offsets: Vec<Commit>,
        partitions: &BTreeMap<String, u32>,
        ids: &TopicIds,
        now_ms: i64,
    ) -> Result<GroupRecord, Failure> {
        let entry = groups
            .get_mut(group)
            .ok_or_else(|| (ErrorCode::UnknownMember, format!("unknown group '{group}'")))?;
        entry.group.expire(partitions, now_ms);
        for Commit {
            partition, offset, ..
        } in &offsets
        {
            entry
                .group
                .authorize_commit(member_id, member_epoch, partition)
                .map_err(group_error)?;
            if *offset < 0 {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("offset {offset} for {partition} is negative"),
                ));
            }
        }
        Ok(GroupRecord::Commit {
            group: group.to_owned(),
            offsets: offsets
                .into_iter()
                .map(|commit| CommittedOffsetV1 {
                    topic_id: ids.get(&commit.partition.topic).map(|id| id.to_string()),
                    topic: commit.partition.topic,
                    partition: commit.partition.partition,
                    offset: commit.offset,
                    metadata: commit.metadata,
                })
                .collect(),
            at_ms: now_ms,
        })
    }

    /// Every group's replicated membership (if it has members) and committed offsets as
    /// records (at most [`RESTATED_OFFSETS_PER_RECORD_MAX`] offsets each, stamped with the
    /// group's last commit time): folded into an empty coordinator they give the same
    /// memberships and offsets, and folded into this one they change nothing. What a checkpoint of the groups topic
    /// writes before the records it lets go are purged.
    pub fn restatement(&self) -> Vec<GroupRecord> {
        let groups = self.groups();
        let mut records = Vec::new();
        for (name, entry) in groups.iter() {
            if !entry.committed.is_empty() {
                let at_ms = entry.last_commit_ms.unwrap_or(0);
                let offsets = OffsetsV1::new(name, &entry.committed, at_ms).offsets;
                for chunk in offsets.chunks(RESTATED_OFFSETS_PER_RECORD_MAX) {
                    records.push(GroupRecord::Commit {
                        group: name.clone(),
                        offsets: chunk.to_vec(),
                        at_ms,
                    });
                }
            }
            // After the group's offsets: an empty membership of a group the folding replica
            // does not know yet would be passed over.
            if let Some(((term, number), membership)) = &entry.replicated {
                records.push(GroupRecord::Members {
                    group: name.clone(),
                    term: *term,
                    number: *number,
                    membership: membership.clone(),
                });
            }
        }
        records
    }

    /// Folds a committed record of a cluster's groups topic in (a commit may name a group
    /// this coordinator has not seen: it is created, members or not).
    pub fn apply(&self, record: &GroupRecord) -> Result<(), Failure> {
        self.store(&mut self.groups(), record)
    }

    /// Stores what `record` says: in the group's offsets file first when there are files.
    fn store(
        &self,
        groups: &mut BTreeMap<String, Entry>,
        record: &GroupRecord,
    ) -> Result<(), Failure> {
        match record {
            GroupRecord::Barrier | GroupRecord::Checkpoint { .. } => Ok(()),
            GroupRecord::Members {
                group,
                term,
                number,
                membership,
            } => {
                let version = (*term, *number);
                // A group deleted while an empty membership was on its way stays deleted.
                if !groups.contains_key(group) && membership.is_empty() {
                    return Ok(());
                }
                let entry = groups.entry(group.clone()).or_insert_with(|| Entry {
                    group: self.new_group(),
                    ..Entry::default()
                });
                if entry.replicated.as_ref().is_none_or(|(v, _)| *v < version) {
                    entry.replicated = Some((version, membership.clone()));
                }
                Ok(())
            }
            GroupRecord::Delete {
                group,
                unless_committed_after,
            } => {
                let committed_since = groups.get(group).and_then(|e| e.last_commit_ms);
                if let (Some(after), Some(last)) = (unless_committed_after, committed_since) {
                    if last > *after {
                        return Ok(());
                    }
                }
                // A member joined (as replicated before this record) while the deletion was on
                // its way: the group lives on.
                let joined = groups
                    .get(group)
                    .and_then(|e| e.replicated.as_ref())
                    .is_some_and(|(_, membership)| !membership.is_empty());
                if joined {
                    return Ok(());
                }
                let legacy = groups.get(group).and_then(|e| e.legacy_file.clone());
                self.remove_files(group, legacy.as_deref()).map_err(|e| {
                    (
                        ErrorCode::Storage,
                        format!("cannot delete the offsets of group '{group}': {e}"),
                    )
                })?;
                groups.remove(group);
                Ok(())
            }
            GroupRecord::Commit {
                group,
                offsets,
                at_ms,
            } => {
                let entry = groups.entry(group.clone()).or_insert_with(|| Entry {
                    group: self.new_group(),
                    ..Entry::default()
                });
                let mut committed = entry.committed.clone();
                committed.extend(
                    OffsetsV1 {
                        group: group.clone(),
                        offsets: offsets.clone(),
                        committed_at_ms: Some(*at_ms),
                    }
                    .into_committed(),
                );
                if let Some(dir) = &self.dir {
                    meta::write(
                        dir,
                        &file_name(group),
                        KIND,
                        &OffsetsV1::new(group, &committed, *at_ms),
                    )
                    .map_err(|e| (ErrorCode::Storage, format!("cannot persist offsets: {e}")))?;
                    if let Some(legacy) = entry.legacy_file.take() {
                        if let Err(error) = std::fs::remove_file(dir.join(&legacy)) {
                            if error.kind() != std::io::ErrorKind::NotFound {
                                tracing::warn!(group, file = legacy, %error, "cannot remove the old offsets file");
                            }
                        }
                    }
                }
                entry.committed = committed;
                // A restating record carries the time of the group's last commit: it never
                // moves the group's activity back.
                entry.last_active_ms = entry.last_active_ms.max(Some(*at_ms));
                entry.last_commit_ms = entry.last_commit_ms.max(Some(*at_ms));
                Ok(())
            }
        }
    }

    /// Committed positions; one committed to another incarnation of its topic reads as none,
    /// so the consumer starts as its reset policy says.
    pub fn fetch_offsets(
        &self,
        group: &str,
        asked: Vec<TopicPartition>,
        ids: &TopicIds,
    ) -> GroupResponse {
        let groups = self.groups();
        let committed = groups.get(group).map(|e| &e.committed);
        let answer = asked
            .into_iter()
            .map(|partition| {
                let position = committed
                    .and_then(|c| c.get(&partition))
                    .filter(|p| !p.is_stale(&partition.topic, ids));
                CommittedOffset {
                    offset: position.map(|p| p.offset),
                    metadata: position.map(|p| p.metadata.clone()).unwrap_or_default(),
                    partition,
                }
            })
            .collect();
        GroupResponse::Offsets(answer)
    }

    pub fn list(&self) -> GroupResponse {
        GroupResponse::Groups(self.groups().keys().cloned().collect())
    }

    /// Members, assignments and per-partition lag; `bounds` gives (log start, high watermark)
    /// and `append_time` the append time of the record at an offset. A committed position the
    /// consumer cannot resume from is shown with its problem: another incarnation of the topic,
    /// past the log's end, or before its start.
    pub fn describe(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        ids: &TopicIds,
        now_ms: i64,
        bounds: impl Fn(&TopicPartition) -> Option<(i64, i64)>,
        append_time: impl Fn(&TopicPartition, i64) -> Option<i64>,
    ) -> Result<GroupDescription, Failure> {
        let mut groups = self.groups();
        let entry = groups.get_mut(group).ok_or_else(|| {
            (
                ErrorCode::InvalidRequest,
                format!("unknown group '{group}'"),
            )
        })?;
        entry.group.expire(partitions, now_ms);
        let assignments = entry.group.assignments();
        let members = assignments
            .iter()
            .map(|(member_id, owned)| MemberDescription {
                member_id: member_id.clone(),
                instance_id: None,
                partitions: owned.iter().cloned().collect(),
            })
            .collect();
        let mut tracked: std::collections::BTreeSet<TopicPartition> =
            entry.committed.keys().cloned().collect();
        tracked.extend(assignments.values().flatten().cloned());
        let partitions = tracked
            .into_iter()
            .filter_map(|partition| {
                let (log_start, end_offset) = bounds(&partition)?;
                let position = entry.committed.get(&partition);
                let stale = position.is_some_and(|p| p.is_stale(&partition.topic, ids));
                let committed = position.filter(|_| !stale).map(|p| p.offset);
                let problem = if stale {
                    Some(
                        "committed to an earlier incarnation of the topic (deleted and created again): the group starts as its reset policy says"
                            .to_owned(),
                    )
                } else {
                    committed.and_then(|offset| {
                        if offset > end_offset {
                            Some(format!("committed offset {offset} is past the log's end {end_offset}: the consumer applies its reset policy"))
                        } else if offset < log_start {
                            Some(format!("committed offset {offset} is before the log's start {log_start} (removed by retention): the consumer applies its reset policy"))
                        } else {
                            None
                        }
                    })
                };
                let from = committed.map_or(log_start, |offset| offset.max(log_start));
                let lag_records = (end_offset - from).max(0);
                let lag_ms = if lag_records > 0 {
                    append_time(&partition, from).map(|t| (now_ms - t).max(0))
                } else {
                    None
                };
                Some(PartitionLag {
                    partition,
                    committed,
                    end_offset,
                    lag_records,
                    lag_ms,
                    problem,
                })
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_owned(),
            generation: entry.group.generation,
            members,
            partitions,
        })
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups().keys().cloned().collect()
    }

    /// Deletes a group without live members, with its offsets file.
    pub fn delete(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupResponse, Failure> {
        let mut groups = self.groups();
        let record = Self::delete_record(&mut groups, group, partitions, now_ms)?;
        self.store(&mut groups, &record)?;
        Ok(GroupResponse::Deleted)
    }

    /// Checks a deletion as [`Coordinator::delete`] does, without deleting: the record that
    /// deletes once replicated.
    pub fn prepare_delete(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupRecord, Failure> {
        Self::delete_record(&mut self.groups(), group, partitions, now_ms)
    }

    fn delete_record(
        groups: &mut BTreeMap<String, Entry>,
        group: &str,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupRecord, Failure> {
        let entry = groups.get_mut(group).ok_or_else(|| {
            (
                ErrorCode::InvalidRequest,
                format!("unknown group '{group}'"),
            )
        })?;
        entry.group.expire(partitions, now_ms);
        if !entry.group.is_empty() {
            return Err((
                ErrorCode::GroupNotEmpty,
                format!(
                    "group '{group}' has {} live member(s): stop its consumers (their sessions then expire) before deleting it",
                    entry.group.assignments().len()
                ),
            ));
        }
        Ok(GroupRecord::Delete {
            group: group.to_owned(),
            unless_committed_after: None,
        })
    }

    /// Deletes the groups that have had no member and no commit for the offsets retention;
    /// returns their names.
    pub fn expire_offsets(&self, partitions: &BTreeMap<String, u32>, now_ms: i64) -> Vec<String> {
        let mut groups = self.groups();
        let mut expired = self.expired_in(&mut groups, partitions, now_ms);
        expired.retain(|name| {
            let record = GroupRecord::Delete {
                group: name.clone(),
                unless_committed_after: None,
            };
            match self.store(&mut groups, &record) {
                Ok(()) => true,
                Err((_, error)) => {
                    tracing::warn!(group = name, %error, "cannot remove the offsets of an expired group");
                    false
                }
            }
        });
        expired
    }

    /// The record that deletes `group` for its offsets retention, through a cluster's groups
    /// topic: unless a commit later than its last one is applied first.
    pub fn expiry_record(&self, group: &str) -> GroupRecord {
        GroupRecord::Delete {
            group: group.to_owned(),
            unless_committed_after: Some(
                self.groups()
                    .get(group)
                    .and_then(|e| e.last_commit_ms)
                    .unwrap_or(i64::MIN),
            ),
        }
    }

    /// The groups that have had no member and no commit for the offsets retention, left in
    /// place (a cluster deletes them through its groups topic).
    pub fn expired(&self, partitions: &BTreeMap<String, u32>, now_ms: i64) -> Vec<String> {
        self.expired_in(&mut self.groups(), partitions, now_ms)
    }

    fn expired_in(
        &self,
        groups: &mut BTreeMap<String, Entry>,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Vec<String> {
        let mut expired = Vec::new();
        for (name, entry) in groups.iter_mut() {
            entry.group.expire(partitions, now_ms);
            if !entry.group.is_empty() {
                entry.last_active_ms = Some(now_ms);
                continue;
            }
            let since = *entry.last_active_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= self.offsets_retention_ms {
                expired.push(name.clone());
            }
        }
        expired
    }

    /// Removes a group's offsets files (current and legacy name), durably; nothing without
    /// files.
    fn remove_files(&self, group: &str, legacy: Option<&str>) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        for name in std::iter::once(file_name(group)).chain(legacy.map(str::to_owned)) {
            match std::fs::remove_file(dir.join(&name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        crate::fs::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Committed {
        BTreeMap::from([
            (
                TopicPartition::new("orders", 3),
                Position {
                    offset: 42,
                    metadata: "tab\tand\nnewline".to_owned(),
                    topic_id: None,
                },
            ),
            (
                TopicPartition::new("a.b-c", 0),
                Position {
                    offset: 0,
                    metadata: String::new(),
                    topic_id: None,
                },
            ),
        ])
    }

    pub(super) fn fetched(
        topic: &str,
        partition: u32,
        offset: i64,
        metadata: &str,
    ) -> CommittedOffset {
        CommittedOffset {
            partition: TopicPartition::new(topic, partition),
            offset: Some(offset),
            metadata: metadata.to_owned(),
        }
    }

    /// `committed()` exactly as the TSV writer (before the envelope) wrote it.
    const OLD_FILE: &str = "0\t0\t\ta.b-c\n42\t3\t74616209616e640a6e65776c696e65\torders\n";

    #[test]
    fn offsets_files_round_trip_any_names_and_metadata() {
        let path = Path::new("groups/672f31.offsets");
        let bytes = meta::encode(KIND, &OffsetsV1::new("g/1", &committed(), 0)).expect("encode");
        assert!(meta::is_versioned(&bytes));
        assert_eq!(read_offsets(path, "g/1", &bytes), Ok(committed()));
        let error = read_offsets(path, "g/2", &bytes).expect_err("another group's file");
        assert!(error.to_string().contains("'g/1'"), "{error}");
        assert_eq!(legacy_file_name("g/1"), "672f31.offsets");
        assert_eq!(file_name("g/1").len(), "g-.offsets".len() + 64);
    }

    /// Every allowed group name can commit: a 249-byte name made a 498-character file name
    /// (past NAME_MAX), so such a group could never commit. Its offsets survive a reopen.
    #[test]
    fn the_longest_group_name_commits_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = "g".repeat(GROUP_NAME_BYTES_MAX);
        let partitions = BTreeMap::from([("orders".to_owned(), 1)]);
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let heartbeat = Heartbeat {
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: ["orders".to_owned()].into(),
            owned: Default::default(),
        };
        let (member, epoch) = match coordinator.heartbeat(&group, heartbeat, &partitions, 0) {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                ..
            }) => (member_id, member_epoch),
            other => panic!("join: {other:?}"),
        };
        coordinator
            .commit(
                &group,
                (&member, epoch),
                vec![Commit {
                    partition: TopicPartition::new("orders", 0),
                    offset: 11,
                    metadata: String::new(),
                }],
                &partitions,
                &TopicIds::new(),
                0,
            )
            .expect("a group of the longest allowed name commits");
        drop(coordinator);
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("reopen");
        assert_eq!(
            coordinator.fetch_offsets(
                &group,
                vec![TopicPartition::new("orders", 0)],
                &TopicIds::new()
            ),
            GroupResponse::Offsets(vec![fetched("orders", 0, 11, "")])
        );
    }

    /// A crash between writing the current offsets file and removing the legacy one leaves
    /// both: the current one is read, the stale legacy one (even damaged) is not.
    #[test]
    fn a_stale_legacy_file_beside_the_current_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let groups = dir.path().join("groups");
        std::fs::create_dir_all(&groups).expect("mkdir");
        meta::write(
            &groups,
            &file_name("g"),
            KIND,
            &OffsetsV1::new("g", &committed(), 0),
        )
        .expect("write current");
        std::fs::write(groups.join(legacy_file_name("g")), b"x\ty").expect("write legacy");
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        assert_eq!(
            coordinator.fetch_offsets(
                "g",
                vec![TopicPartition::new("orders", 3)],
                &TopicIds::new()
            ),
            GroupResponse::Offsets(vec![fetched("orders", 3, 42, "tab\tand\nnewline")])
        );
    }

    #[test]
    fn old_tsv_offsets_read_unchanged() {
        let path = Path::new("groups/67.offsets");
        assert_eq!(decode_offsets(OLD_FILE), Some(committed()));
        assert_eq!(
            read_offsets(path, "g", OLD_FILE.as_bytes()),
            Ok(committed())
        );
        assert_eq!(read_offsets(path, "g", b""), Ok(BTreeMap::new()));
        assert_eq!(decode_offsets("x\ty"), None);
        assert!(matches!(
            read_offsets(path, "g", b"x\ty"),
            Err(MetaError::Corrupt { .. })
        ));
    }

    pub(super) fn join(
        coordinator: &Coordinator,
        partitions: &BTreeMap<String, u32>,
    ) -> (String, i32) {
        let heartbeat = Heartbeat {
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: ["orders".to_owned()].into(),
            owned: Default::default(),
        };
        match coordinator.heartbeat("g", heartbeat, partitions, 0) {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                ..
            }) => (member_id, member_epoch),
            other => panic!("join: {other:?}"),
        }
    }

    fn open_error(dir: &Path) -> std::io::Error {
        match Coordinator::open(dir, GroupConfig::default()) {
            Ok(_) => panic!("opened"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_old_offsets_file_is_read_and_rewritten_as_an_envelope_on_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("groups").join(legacy_file_name("g"));
        std::fs::create_dir_all(dir.path().join("groups")).expect("mkdir");
        std::fs::write(&path, OLD_FILE).expect("write");
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let asked = vec![
            TopicPartition::new("orders", 3),
            TopicPartition::new("a.b-c", 0),
        ];
        let expected = GroupResponse::Offsets(vec![
            fetched("orders", 3, 42, "tab\tand\nnewline"),
            fetched("a.b-c", 0, 0, ""),
        ]);
        assert_eq!(
            coordinator.fetch_offsets("g", asked.clone(), &TopicIds::new()),
            expected
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            OLD_FILE,
            "opening does not rewrite"
        );
        let partitions = BTreeMap::from([("orders".to_owned(), 4)]);
        let (member, epoch) = join(&coordinator, &partitions);
        coordinator
            .commit(
                "g",
                (&member, epoch),
                vec![Commit {
                    partition: TopicPartition::new("orders", 1),
                    offset: 7,
                    metadata: "m".to_owned(),
                }],
                &partitions,
                &TopicIds::new(),
                0,
            )
            .expect("commit");
        // Written under the current name; the old file is gone.
        let current = dir.path().join("groups").join(file_name("g"));
        assert!(meta::is_versioned(&std::fs::read(&current).expect("read")));
        assert!(!path.exists(), "the legacy file is removed once rewritten");
        drop(coordinator);
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("reopen");
        assert_eq!(
            coordinator.fetch_offsets("g", asked, &TopicIds::new()),
            expected
        );
        assert_eq!(
            coordinator.fetch_offsets(
                "g",
                vec![TopicPartition::new("orders", 1)],
                &TopicIds::new()
            ),
            GroupResponse::Offsets(vec![fetched("orders", 1, 7, "m")])
        );
    }

    #[test]
    fn a_damaged_offsets_file_is_refused_with_a_checksum_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("groups").join(file_name("g"));
        let bytes = meta::encode(KIND, &OffsetsV1::new("g", &committed(), 0)).expect("encode");
        std::fs::create_dir_all(dir.path().join("groups")).expect("mkdir");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains("\"orders\""), "{text}");
        std::fs::write(&path, text.replace("\"orders\"", "\"orderz\"")).expect("write");
        let message = open_error(dir.path()).to_string();
        assert!(message.contains(&file_name("g")), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
    }

    #[test]
    fn a_newer_offsets_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let newer = meta::Kind {
            name: KIND.name,
            version: 2,
        };
        let bytes = meta::encode(newer, &OffsetsV1::new("g", &committed(), 0)).expect("encode");
        std::fs::create_dir_all(dir.path().join("groups")).expect("mkdir");
        std::fs::write(dir.path().join("groups").join(file_name("g")), bytes).expect("write");
        let error = open_error(dir.path());
        let message = error.to_string();
        assert!(
            matches!(
                error.get_ref().and_then(|e| e.downcast_ref::<MetaError>()),
                Some(MetaError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                })
            ),
            "{message}"
        );
        assert!(message.contains(&file_name("g")), "{message}");
        assert!(message.contains("version 2"), "{message}");
    }
}

#[cfg(test)]
mod coordinator_tests {
    use super::tests::{fetched, join};
    use super::*;

    /// A member joins group `g` (at 0) and commits `offset` of `orders` partition 0 (no
    /// metadata), made to the topic incarnations `ids`, at `now_ms`.
    fn join_and_commit(
        coordinator: &Coordinator,
        partitions: &BTreeMap<String, u32>,
        offset: i64,
        ids: &TopicIds,
        now_ms: i64,
    ) {
        let (member, epoch) = join(coordinator, partitions);
        coordinator
            .commit(
                "g",
                (&member, epoch),
                vec![Commit {
                    partition: TopicPartition::new("orders", 0),
                    offset,
                    metadata: String::new(),
                }],
                partitions,
                ids,
                now_ms,
            )
            .expect("commit");
    }

    /// A member of an earlier coordinator (before a restart, or before a cluster's
    /// coordinator moved) is unknown to the next one: the ids the next one hands out are
    /// others, so such a member cannot commit as the member that took its place.
    #[test]
    fn member_ids_are_not_handed_out_again_by_a_later_coordinator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partitions = BTreeMap::from([("orders".to_owned(), 2)]);
        let first = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let (before, epoch) = join(&first, &partitions);
        drop(first);
        let restarted = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let (after, _) = join(&restarted, &partitions);
        assert_ne!(
            before, after,
            "a restarted coordinator handed out an old member id"
        );
        let offsets = vec![Commit {
            partition: TopicPartition::new("orders", 0),
            offset: 1,
            metadata: String::new(),
        }];
        let stale = restarted
            .commit(
                "g",
                (&before, epoch),
                offsets,
                &partitions,
                &TopicIds::new(),
                0,
            )
            .expect_err("an earlier member");
        assert_eq!(stale.0, ErrorCode::UnknownMember);

        let replicated = Coordinator::replicated(GroupConfig::default());
        let (led, _) = join(&replicated, &partitions);
        replicated.take_over(0, 1);
        let (next, _) = join(&replicated, &partitions);
        assert_ne!(led, next, "a new lead handed out an old member id");
    }

    /// A group whose last commit is older than the offsets retention but whose members were
    /// live under the previous coordinator is not expired by the next one before they could
    /// rejoin: forgetting the members counts as activity.
    #[test]
    fn a_new_coordinator_does_not_expire_groups_whose_members_it_forgot() {
        let day = 24 * 3600 * 1000;
        let coordinator = Coordinator::replicated(GroupConfig::default());
        coordinator
            .apply(&GroupRecord::Commit {
                group: "quiet".to_owned(),
                offsets: Vec::new(),
                at_ms: 0,
            })
            .expect("applied");
        let partitions = BTreeMap::new();
        let now = 8 * day;
        coordinator.take_over(now, 1);
        assert!(coordinator.expired(&partitions, now + 1).is_empty());
        assert_eq!(
            coordinator.expired(&partitions, now + OFFSETS_RETENTION_MS),
            vec!["quiet".to_owned()],
            "still expires a retention after"
        );
    }

    /// A cluster's coordinator replicates each membership change as a record; a replica that
    /// folded them and takes the partition over knows the members (they commit with their
    /// ids and epochs) and ignores an older record folded late; a node that led before and
    /// takes over again goes by the records, not by its memory; a later term's records win
    /// over an earlier term's whatever their count. Nothing changed: no record.
    #[test]
    fn a_coordinator_taking_over_goes_on_with_the_replicated_members() {
        let partitions = BTreeMap::from([("orders".to_owned(), 2)]);
        let ids = TopicIds::new();
        let leader = Coordinator::replicated(GroupConfig::default());
        let follower = Coordinator::replicated(GroupConfig::default());
        leader.take_over(0, 3);
        let (first, epoch) = join(&leader, &partitions);
        let joined = leader.membership_record("g").expect("a join is a change");
        assert!(leader.membership_record("zzz").is_none(), "no such group");
        let (second, _) = join(&leader, &partitions);
        let both = leader.membership_record("g").expect("a second join");
        let numbers = |record: &GroupRecord| match record {
            GroupRecord::Members { term, number, .. } => (*term, *number),
            other => panic!("not a membership record: {other:?}"),
        };
        assert_eq!((numbers(&joined), numbers(&both)), ((3, 1), (3, 2)));
        // Folded out of order on the follower: the later one wins.
        for record in [&both, &joined] {
            let decoded = GroupRecord::decode(&record.encode()).expect("round trip");
            follower.apply(&decoded).expect("applied");
        }
        for record in [&joined, &both] {
            leader.apply(record).expect("applied");
        }
        assert!(
            leader.membership_record("g").is_none(),
            "nothing changed since the last record folded"
        );
        follower.take_over(10, 4);
        let commit = |coordinator: &Coordinator, member: &str, partition: u32| {
            coordinator.commit(
                "g",
                (member, epoch),
                vec![Commit {
                    partition: TopicPartition::new("orders", partition),
                    offset: 7,
                    metadata: String::new(),
                }],
                &partitions,
                &ids,
                10,
            )
        };
        // Range assignment, sticky: the first member keeps partition 0.
        commit(&follower, &first, 0).expect("the first member is known after the take-over");
        let refused = commit(&follower, &second, 0).expect_err("not the second one's");
        assert_eq!(refused.0, ErrorCode::NotPartitionOwner, "{refused:?}");
        // The first member leaves under the follower's lead (term 4, count 1): a count below
        // the leader's earlier records, and still the later change.
        follower.leave("g", &first, &partitions, 20).expect("left");
        let left = follower
            .membership_record("g")
            .expect("a leave is a change");
        assert_eq!(numbers(&left), (4, 1));
        for coordinator in [&leader, &follower] {
            coordinator.apply(&left).expect("applied");
        }
        // The old leader leads again: it remembers the first member, the records do not.
        leader.take_over(30, 5);
        let gone = commit(&leader, &first, 0).expect_err("it left");
        assert_eq!(gone.0, ErrorCode::UnknownMember, "{gone:?}");
        let (third, _) = join(&leader, &partitions);
        assert!(third.ends_with("-3"), "ids go on counting: {third}");
    }

    /// A join in flight (its record not committed) and a leave that brings the group back to
    /// what was folded: the leave is replicated too, or the join would be restored.
    #[test]
    fn a_change_undone_before_its_record_commits_is_replicated_as_well() {
        let partitions = BTreeMap::from([("orders".to_owned(), 2)]);
        let coordinator = Coordinator::replicated(GroupConfig::default());
        coordinator.take_over(0, 1);
        let (member, _) = join(&coordinator, &partitions);
        let joined = coordinator.membership_record("g").expect("a join");
        coordinator
            .leave("g", &member, &partitions, 1)
            .expect("left");
        let left = coordinator
            .membership_record("g")
            .expect("a leave while the join is on its way");
        for record in [&joined, &left] {
            coordinator.apply(record).expect("applied");
        }
        assert!(coordinator.membership_record("g").is_none());
        coordinator.take_over(2, 2);
        assert!(coordinator.groups()["g"].group.is_empty(), "the leave won");
    }

    /// A checkpoint restates every membership, an empty one too, after the group's offsets:
    /// a replica rebuilt from it numbers nothing below what its peers hold; a deletion on its
    /// way does not remove a group a member joined meanwhile.
    #[test]
    fn memberships_are_restated_and_a_joined_group_is_not_deleted() {
        let partitions = BTreeMap::from([("orders".to_owned(), 2)]);
        let source = Coordinator::replicated(GroupConfig::default());
        source.take_over(0, 7);
        let (member, epoch) = join(&source, &partitions);
        source
            .apply(&source.membership_record("g").expect("joined"))
            .expect("applied");
        let record = source
            .prepare_commit(
                "g",
                (&member, epoch),
                vec![Commit {
                    partition: TopicPartition::new("orders", 0),
                    offset: 3,
                    metadata: String::new(),
                }],
                &partitions,
                &TopicIds::new(),
                5,
            )
            .expect("commit");
        source.apply(&record).expect("applied");
        source.leave("g", &member, &partitions, 6).expect("left");
        source
            .apply(&source.membership_record("g").expect("left"))
            .expect("applied");
        let restated = source.restatement();
        assert!(
            matches!(restated.last(), Some(GroupRecord::Members { membership, term: 7, number: 2, .. }) if membership.is_empty()),
            "{restated:?}"
        );
        let rebuilt = Coordinator::replicated(GroupConfig::default());
        for record in &restated {
            rebuilt.apply(record).expect("applied");
        }
        assert_eq!(
            rebuilt.groups()["g"].replicated,
            source.groups()["g"].replicated
        );
        // A deletion checked while the group was empty, folded after a member's join.
        let deletion = source
            .prepare_delete("g", &partitions, 7)
            .expect("an empty group");
        source.take_over(8, 8);
        join(&source, &partitions);
        source
            .apply(&source.membership_record("g").expect("joined"))
            .expect("applied");
        source.apply(&deletion).expect("applied");
        assert_eq!(source.group_names(), vec!["g".to_owned()], "it lives on");
    }

    /// A join that would make the group's membership too large to replicate is refused and
    /// changes nothing; a single broker (nothing to replicate) takes it.
    #[test]
    fn a_membership_too_large_to_replicate_is_refused() {
        let partitions = BTreeMap::from([("orders".to_owned(), 2)]);
        let coordinator = Coordinator::replicated(GroupConfig::default());
        let topics: Vec<String> = (0..1_000).map(|n| format!("{n:0>240}")).collect();
        let heartbeat = |topics: &[String]| Heartbeat {
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: topics.iter().cloned().collect(),
            owned: Default::default(),
        };
        let mut joined = 0;
        let refusal = loop {
            match coordinator.heartbeat("wide", heartbeat(&topics), &partitions, 0) {
                Ok(_) => joined += 1,
                Err(refusal) => break refusal,
            }
            assert!(joined < 100, "never refused");
        };
        assert_eq!(refusal.0, ErrorCode::GroupFull, "{refusal:?}");
        assert!(refusal.1.contains("bytes to replicate"), "{}", refusal.1);
        let record = coordinator.membership_record("wide").expect("members");
        assert!(record.encode().len() <= MEMBERSHIP_RECORD_BYTES_MAX + GROUP_NAME_BYTES_MAX);
        assert_eq!(
            coordinator.groups()["wide"].group.assignments().len(),
            joined
        );
        // The first join alone too large: no group is left behind.
        let huge: Vec<String> = (0..14_000).map(|n| format!("{n:0>240}")).collect();
        assert!(coordinator
            .heartbeat("huge", heartbeat(&huge), &partitions, 0)
            .is_err());
        assert!(!coordinator.group_names().contains(&"huge".to_owned()));
        let dir = tempfile::tempdir().expect("tempdir");
        let single = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        single
            .heartbeat("huge", heartbeat(&huge), &partitions, 0)
            .expect("nothing to replicate on a single broker");
    }

    /// A checkpoint's restatement: folded into an empty coordinator it gives every group's
    /// offsets (overwritten ones as last committed, deleted groups gone, a group with more
    /// offsets than one record holds in several records), and folded into the coordinator it
    /// came from it changes nothing, activity times included.
    #[test]
    fn a_restatement_rebuilds_every_groups_offsets_and_changes_nothing_here() {
        let offset = |topic: &str, partition: u32, offset: i64| CommittedOffsetV1 {
            topic: topic.to_owned(),
            partition,
            offset,
            metadata: format!("m{offset}"),
            topic_id: None,
        };
        let commit = |group: &str, offsets: Vec<CommittedOffsetV1>, at_ms| GroupRecord::Commit {
            group: group.to_owned(),
            offsets,
            at_ms,
        };
        let source = Coordinator::replicated(GroupConfig::default());
        let many: Vec<CommittedOffsetV1> = (0..(RESTATED_OFFSETS_PER_RECORD_MAX as u32 + 5))
            .map(|p| offset("wide", p, i64::from(p)))
            .collect();
        for record in [
            commit("a", vec![offset("t", 0, 5), offset("t", 1, 7)], 10),
            commit("a", vec![offset("t", 0, 9)], 20),
            commit("b", vec![offset("u", 0, 1)], 30),
            GroupRecord::Delete {
                group: "b".to_owned(),
                unless_committed_after: None,
            },
            commit("c", many, 40),
        ] {
            source.apply(&record).expect("applied");
        }
        source.take_over(1_000, 1);
        let snapshot =
            |coordinator: &Coordinator| -> Vec<(String, Committed, Option<i64>, Option<i64>)> {
                coordinator
                    .groups()
                    .iter()
                    .map(|(name, entry)| {
                        (
                            name.clone(),
                            entry.committed.clone(),
                            entry.last_commit_ms,
                            entry.last_active_ms,
                        )
                    })
                    .collect()
            };
        let before = snapshot(&source);
        let restated = source.restatement();
        assert_eq!(restated.len(), 3, "a once, c in two records");
        let rebuilt = Coordinator::replicated(GroupConfig::default());
        for record in &restated {
            let decoded = GroupRecord::decode(&record.encode()).expect("round trip");
            rebuilt.apply(&decoded).expect("applied");
            source.apply(&decoded).expect("applied");
        }
        assert_eq!(
            snapshot(&source),
            before,
            "nothing changed where it came from"
        );
        let offsets_only = |all: Vec<(String, Committed, Option<i64>, Option<i64>)>| {
            all.into_iter()
                .map(|(n, c, at, _)| (n, c, at))
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets_only(snapshot(&rebuilt)), offsets_only(before));
        assert_eq!(
            GroupRecord::decode(&GroupRecord::Checkpoint { cut: 42 }.encode()).expect("marker"),
            GroupRecord::Checkpoint { cut: 42 }
        );
    }

    /// An expiry on its way does not delete a group that committed meanwhile.
    #[test]
    fn an_expiry_record_spares_a_group_that_committed_since() {
        let coordinator = Coordinator::replicated(GroupConfig::default());
        let commit = |at_ms| GroupRecord::Commit {
            group: "g".to_owned(),
            offsets: Vec::new(),
            at_ms,
        };
        coordinator.apply(&commit(0)).expect("applied");
        let expiry = coordinator.expiry_record("g");
        coordinator.apply(&commit(5)).expect("applied");
        coordinator.apply(&expiry).expect("applied");
        assert_eq!(coordinator.group_names(), vec!["g".to_owned()], "spared");
        let expiry = coordinator.expiry_record("g");
        coordinator.apply(&expiry).expect("applied");
        assert!(
            coordinator.group_names().is_empty(),
            "deleted when nothing came since"
        );
        let record = GroupRecord::decode(&expiry.encode()).expect("round trip");
        assert_eq!(record, expiry);
        let old = GroupRecord::decode(br#"{"kind":"delete","group":"g"}"#).expect("older form");
        assert_eq!(
            old,
            GroupRecord::Delete {
                group: "g".to_owned(),
                unless_committed_after: None
            }
        );
    }

    #[test]
    fn a_stray_heartbeat_does_not_create_a_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let partitions = BTreeMap::from([("t".to_owned(), 2)]);
        let heartbeat = |member_id: Option<&str>| Heartbeat {
            member_id: member_id.map(str::to_owned),
            member_epoch: 1,
            instance_id: None,
            topics: ["t".to_owned()].into(),
            owned: Default::default(),
        };
        let error = coordinator
            .heartbeat("ghosts", heartbeat(Some("member-9")), &partitions, 0)
            .expect_err("unknown");
        assert_eq!(error.0, ErrorCode::UnknownMember);
        assert_eq!(
            coordinator.list(),
            GroupResponse::Groups(Vec::new()),
            "no empty group left behind"
        );
        coordinator
            .heartbeat("real", heartbeat(None), &partitions, 0)
            .expect("a join creates the group");
        assert_eq!(
            coordinator.list(),
            GroupResponse::Groups(vec!["real".to_owned()])
        );
    }

    /// A commit remembers the topic incarnation it was made to: served while that incarnation
    /// lives, read as none once the topic was created again, and kept in the file.
    #[test]
    fn a_commit_to_an_earlier_incarnation_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let partitions = BTreeMap::from([("orders".to_owned(), 1)]);
        let first = TopicIds::from([("orders".to_owned(), TopicId([1; 16]))]);
        let second = TopicIds::from([("orders".to_owned(), TopicId([2; 16]))]);
        join_and_commit(&coordinator, &partitions, 6, &first, 0);
        let asked = || vec![TopicPartition::new("orders", 0)];
        assert_eq!(
            coordinator.fetch_offsets("g", asked(), &first),
            GroupResponse::Offsets(vec![fetched("orders", 0, 6, "")])
        );
        drop(coordinator);
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("reopen");
        assert_eq!(
            coordinator.fetch_offsets("g", asked(), &first),
            GroupResponse::Offsets(vec![fetched("orders", 0, 6, "")]),
            "the incarnation is kept in the file"
        );
        let GroupResponse::Offsets(offsets) = coordinator.fetch_offsets("g", asked(), &second)
        else {
            panic!("offsets")
        };
        assert_eq!(offsets[0].offset, None);
        let description = coordinator
            .describe("g", &partitions, &second, 0, |_| Some((0, 3)), |_, _| None)
            .expect("describe");
        let lag = &description.partitions[0];
        assert_eq!((lag.committed, lag.lag_records), (None, 3));
        assert!(lag.problem.is_some(), "{lag:?}");
    }

    /// `herald group delete`: refused while a member lives, then the group and its file go.
    #[test]
    fn a_group_is_deleted_only_without_live_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = GroupConfig {
            session_timeout_ms: 1_000,
            ..GroupConfig::default()
        };
        let coordinator = Coordinator::open(dir.path(), config).expect("open");
        let partitions = BTreeMap::from([("orders".to_owned(), 1)]);
        join_and_commit(&coordinator, &partitions, 3, &TopicIds::new(), 0);
        let (code, message) = coordinator
            .delete("g", &partitions, 10)
            .expect_err("a live member");
        assert_eq!(code, ErrorCode::GroupNotEmpty, "{message}");
        // The member's session ends.
        assert_eq!(
            coordinator.delete("g", &partitions, 5_000),
            Ok(GroupResponse::Deleted)
        );
        assert!(coordinator.group_names().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("groups"))
                .expect("dir")
                .count(),
            0
        );
        drop(coordinator);
        let coordinator = Coordinator::open(dir.path(), config).expect("reopen");
        assert!(coordinator.group_names().is_empty(), "deleted for good");
        assert_eq!(
            coordinator.delete("g", &partitions, 5_000).map_err(|e| e.0),
            Err(ErrorCode::InvalidRequest)
        );
    }

    /// Offsets of a group without members expire after the retention, counted from its last
    /// activity — also across a restart (the file says when it was written).
    #[test]
    fn offsets_of_an_empty_group_expire_after_the_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = GroupConfig {
            session_timeout_ms: 1_000,
            ..GroupConfig::default()
        };
        let retention = 60_000;
        let coordinator = Coordinator::open(dir.path(), config)
            .expect("open")
            .with_offsets_retention_ms(retention);
        let partitions = BTreeMap::from([("orders".to_owned(), 1)]);
        join_and_commit(&coordinator, &partitions, 3, &TopicIds::new(), 100);
        assert!(coordinator.expire_offsets(&partitions, 30_000).is_empty());
        drop(coordinator);
        let coordinator = Coordinator::open(dir.path(), config)
            .expect("reopen")
            .with_offsets_retention_ms(retention);
        assert!(
            coordinator.expire_offsets(&partitions, 50_000).is_empty(),
            "within the retention of the last commit"
        );
        assert_eq!(
            coordinator.expire_offsets(&partitions, 60_100),
            vec!["g".to_owned()]
        );
        assert!(coordinator.group_names().is_empty());
        let GroupResponse::Offsets(offsets) = coordinator.fetch_offsets(
            "g",
            vec![TopicPartition::new("orders", 0)],
            &TopicIds::new(),
        ) else {
            panic!("offsets")
        };
        assert_eq!(offsets[0].offset, None);
    }
}
