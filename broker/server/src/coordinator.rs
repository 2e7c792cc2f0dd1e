//! The group coordinator: one [`Group`] state machine per consumer group (from the core) plus
//! its committed offsets, persisted per group in `groups/<hex(group)>.offsets` (rewritten
//! atomically on every commit, so a restarted broker resumes every group from its committed
//! offsets). Membership itself is not persisted: members rejoin after a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use herald_broker_core::groups::{Group, GroupConfig, GroupError, Heartbeat, TopicPartition};
use herald_wire::groups::{GroupDescription, GroupResponse, MemberDescription, PartitionLag};
use herald_wire::limits::GROUP_NAME_BYTES_MAX;
use herald_wire::ErrorCode;

use crate::fs::write_atomically;

/// A member waiting for partitions heartbeats this many times more often.
pub const WAITING_HEARTBEAT_DIVISOR: u32 = 4;
/// Groups one broker coordinates.
pub const GROUPS_MAX: usize = 10_000;

#[derive(Default)]
struct Entry {
    group: Group,
    committed: BTreeMap<TopicPartition, (i64, String)>,
}

pub struct Coordinator {
    dir: PathBuf,
    config: GroupConfig,
    groups: Mutex<BTreeMap<String, Entry>>,
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

fn file_name(group: &str) -> String {
    format!("{}.offsets", hex::encode(group.as_bytes()))
}

fn encode_offsets(committed: &BTreeMap<TopicPartition, (i64, String)>) -> String {
    committed
        .iter()
        .map(|((topic, partition), (offset, metadata))| {
            format!(
                "{offset}\t{partition}\t{}\t{}\n",
                hex::encode(metadata),
                topic
            )
        })
        .collect()
}

fn decode_offsets(text: &str) -> Option<BTreeMap<TopicPartition, (i64, String)>> {
    let mut committed = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(4, '\t');
        let offset = fields.next()?.parse().ok()?;
        let partition = fields.next()?.parse().ok()?;
        let metadata = String::from_utf8(hex::decode(fields.next()?).ok()?).ok()?;
        committed.insert((fields.next()?.to_owned(), partition), (offset, metadata));
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
            let Some(group) = name
                .strip_suffix(".offsets")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(entry.path())?;
            let committed = decode_offsets(&text).ok_or_else(|| {
                std::io::Error::other(format!("malformed {}", entry.path().display()))
            })?;
            groups.insert(
                group,
                Entry {
                    group: Group::new(config),
                    committed,
                },
            );
        }
        Ok(Self {
            dir,
            config,
            groups: Mutex::new(groups),
        })
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
        if !groups.contains_key(group) && !request.member_id.is_empty() {
            return Err((
                ErrorCode::UnknownMember,
                format!(
                    "unknown member '{}' in group '{group}': join again",
                    request.member_id
                ),
            ));
        }
        if !groups.contains_key(group) && groups.len() >= GROUPS_MAX {
            return Err((
                ErrorCode::GroupFull,
                format!("the broker already coordinates {GROUPS_MAX} groups"),
            ));
        }
        let entry = groups.entry(group.to_owned()).or_insert_with(|| Entry {
            group: Group::new(self.config),
            ..Entry::default()
        });
        let assignment = entry
            .group
            .heartbeat(request, partitions, now_ms)
            .map_err(group_error)?;
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

    /// Commits offsets after checking the member owns every partition at its epoch; the file
    /// is rewritten before the answer.
    pub fn commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(TopicPartition, i64, String)>,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<GroupResponse, Failure> {
        let mut groups = self.groups();
        let entry = groups
            .get_mut(group)
            .ok_or_else(|| (ErrorCode::UnknownMember, format!("unknown group '{group}'")))?;
        entry.group.expire(partitions, now_ms);
        for (partition, offset, _) in &offsets {
            entry
                .group
                .authorize_commit(member_id, member_epoch, partition)
                .map_err(group_error)?;
            if *offset < 0 {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset {offset} for {}/{} is negative",
                        partition.0, partition.1
                    ),
                ));
            }
        }
        let mut committed = entry.committed.clone();
        for (partition, offset, metadata) in offsets {
            committed.insert(partition, (offset, metadata));
        }
        write_atomically(
            &self.dir,
            &file_name(group),
            encode_offsets(&committed).as_bytes(),
        )
        .map_err(|e| (ErrorCode::Storage, format!("cannot persist offsets: {e}")))?;
        entry.committed = committed;
        Ok(GroupResponse::Committed)
    }

    pub fn fetch_offsets(&self, group: &str, asked: Vec<TopicPartition>) -> GroupResponse {
        let groups = self.groups();
        let committed = groups.get(group).map(|e| &e.committed);
        let answer = asked
            .into_iter()
            .map(|partition| {
                let (offset, metadata) = committed
                    .and_then(|c| c.get(&partition))
                    .cloned()
                    .unwrap_or((-1, String::new()));
                (partition, offset, metadata)
            })
            .collect();
        GroupResponse::Offsets(answer)
    }

    pub fn list(&self) -> GroupResponse {
        GroupResponse::Groups(self.groups().keys().cloned().collect())
    }

    /// Members, assignments and per-partition lag; `bounds` gives (log start, high watermark)
    /// and `append_time` the append time of the record at an offset.
    pub fn describe(
        &self,
        group: &str,
        partitions: &BTreeMap<String, u32>,
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
                instance_id: String::new(),
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
                let committed = entry
                    .committed
                    .get(&partition)
                    .map_or(-1, |(offset, _)| *offset);
                let from = committed.max(log_start);
                let lag_records = (end_offset - from).max(0);
                let lag_ms = if lag_records > 0 {
                    append_time(&partition, from).map_or(-1, |t| (now_ms - t).max(0))
                } else {
                    -1
                };
                Some(PartitionLag {
                    partition,
                    committed,
                    end_offset,
                    lag_records,
                    lag_ms,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_files_round_trip_any_names_and_metadata() {
        let committed = BTreeMap::from([
            (
                ("orders".to_owned(), 3),
                (42, "tab\tand\nnewline".to_owned()),
            ),
            (("a.b-c".to_owned(), 0), (0, String::new())),
        ]);
        assert_eq!(decode_offsets(&encode_offsets(&committed)), Some(committed));
        assert_eq!(decode_offsets("x\ty"), None);
        assert_eq!(file_name("g/1"), "672f31.offsets");
    }
}

#[cfg(test)]
mod coordinator_tests {
    use super::*;

    #[test]
    fn a_stray_heartbeat_does_not_create_a_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coordinator = Coordinator::open(dir.path(), GroupConfig::default()).expect("open");
        let partitions = BTreeMap::from([("t".to_owned(), 2)]);
        let heartbeat = |member_id: &str| Heartbeat {
            member_id: member_id.to_owned(),
            member_epoch: 1,
            instance_id: None,
            topics: ["t".to_owned()].into(),
            owned: Default::default(),
        };
        let error = coordinator
            .heartbeat("ghosts", heartbeat("member-9"), &partitions, 0)
            .expect_err("unknown");
        assert_eq!(error.0, ErrorCode::UnknownMember);
        assert_eq!(
            coordinator.list(),
            GroupResponse::Groups(Vec::new()),
            "no empty group left behind"
        );
        coordinator
            .heartbeat("real", heartbeat(""), &partitions, 0)
            .expect("a join creates the group");
        assert_eq!(
            coordinator.list(),
            GroupResponse::Groups(vec!["real".to_owned()])
        );
    }
}
