//! Consumer groups, server-side (in the spirit of Kafka's KIP-848): members join and
//! heartbeat with one call, the coordinator computes a sticky target assignment (range or
//! round robin) and hands partitions over incrementally — a partition moves only after its
//! previous owner stopped reporting it (revoked), left, expired, or its revoke timed out — so
//! no partition is ever owned by two live members. Member epochs fence commits from zombies;
//! static members (an instance id) keep their partitions across restarts within the session
//! timeout. Pure: time is a parameter; persistence of committed offsets is the caller's.

use herald_wire::limits::GROUP_NAME_BYTES_MAX;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use herald_wire::groups::TopicPartition;

/// Members in one group; joins beyond are refused.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Contiguous ranges of each topic's partitions per member (Kafka's range).
    #[default]
    Range,
    /// Partitions dealt to members in turn.
    RoundRobin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// A member silent this long is removed and its partitions move.
    pub session_timeout_ms: i64,
    /// A revoked partition is handed over after this long even if its owner still lists it.
    pub revoke_timeout_ms: i64,
    pub assignor: Assignor,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            revoke_timeout_ms: 30_000,
            assignor: Assignor::Range,
        }
    }
}

/// What a member sends on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// `None` to join.
    pub member_id: Option<String>,
    /// The epoch the member last received (0 when joining).
    pub member_epoch: i32,
    /// A stable id across restarts (static membership), if any.
    pub instance_id: Option<String>,
    pub topics: BTreeSet<String>,
    /// Partitions the member still consumes (it stops reporting a revoked one once done).
    pub owned: BTreeSet<TopicPartition>,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub member_id: String,
    pub member_epoch: i32,
    /// Partitions the member may consume now.
    pub partitions: BTreeSet<TopicPartition>,
    /// Partitions are assigned to the member but still held by their previous owner: it
    /// should heartbeat again soon to pick them up.
    pub waiting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member '{0}': it left or its session expired; join again")]
    UnknownMember(String),
    #[error("member '{member}' is at epoch {current}; epoch {sent} is stale")]
    FencedMember {
        member: String,
        sent: i32,
        current: i32,
    },
    #[error("the group already has {MEMBERS_PER_GROUP_MAX} members")]
    Full,
    #[error("member '{member}' does not own {topic}/{partition}")]
    NotOwner {
        member: String,
        topic: String,
        partition: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    epoch: i32,
    instance_id: Option<String>,
    topics: BTreeSet<String>,
    owned: BTreeSet<TopicPartition>,
    last_heartbeat_ms: i64,
}

/// A member as a replicated [`Membership`] keeps it (its last heartbeat is not kept: a
/// coordinator that takes the group over counts every session from then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub id: String,
    pub epoch: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub topics: BTreeSet<String>,
    /// (topic, partition) pairs the member consumes.
    pub owned: BTreeSet<(String, u32)>,
}

/// Everything of a group's state that a coordinator taking it over needs to go on where the
/// previous one was (members, epochs, target assignment, revocations in flight): what a
/// cluster replicates whenever it changes, so that members keep their ids, epochs and
/// partitions across a coordinator failover (as Kafka's KIP-848 persists member records).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    pub generation: i32,
    pub members: Vec<MemberState>,
    /// (topic, partition, owner).
    pub target: Vec<(String, u32, String)>,
    /// (topic, partition, hand-over deadline in ms since the epoch).
    pub revoking: Vec<(String, u32, i64)>,
    pub next_member: u64,
}

impl Membership {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

fn pair(partition: &TopicPartition) -> (String, u32) {
    (partition.topic.clone(), partition.partition)
}

/// A group's live state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    config: GroupConfig,
    /// Bumped whenever the target assignment changes.
    pub generation: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<TopicPartition, String>,
    /// Revoked partitions still reported by their old owner, with the hand-over deadline.
    revoking: BTreeMap<TopicPartition, i64>,
    next_member: u64,
    /// Part of every member id handed out (see [`Group::with_incarnation`]).
    incarnation: Option<String>,
}

impl Group {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Member ids this group hands out carry `incarnation` (one per coordinator run), so that
    /// a later coordinator never hands out the id of a member it does not know: that member
    /// (still running, cut off) must stay unknown, not commit as the one that took its id.
    pub fn with_incarnation(mut self, incarnation: impl Into<String>) -> Self {
        self.incarnation = Some(incarnation.into());
        self
    }

    /// The group's state as a coordinator taking it over needs it.
    pub fn membership(&self) -> Membership {
        Membership {
            generation: self.generation,
            members: self
                .members
                .iter()
                .map(|(id, member)| MemberState {
                    id: id.clone(),
                    epoch: member.epoch,
                    instance_id: member.instance_id.clone(),
                    topics: member.topics.clone(),
                    owned: member.owned.iter().map(pair).collect(),
                })
                .collect(),
            target: self
                .target
                .iter()
                .map(|(partition, owner)| {
                    (partition.topic.clone(), partition.partition, owner.clone())
                })
                .collect(),
            revoking: self
                .revoking
                .iter()
                .map(|(partition, deadline)| {
                    (partition.topic.clone(), partition.partition, *deadline)
                })
                .collect(),
            next_member: self.next_member,
        }
    }

    /// The group `membership` describes, taken over at `now_ms`: every member's session
    /// counts from then (Kafka's new coordinator does the same), so members that keep
    /// heartbeating go on with their ids, epochs and partitions.
    pub fn restore(config: GroupConfig, membership: &Membership, now_ms: i64) -> Self {
        let partition = |topic: &String, number: u32| TopicPartition::new(topic.as_str(), number);
        Self {
            config,
            generation: membership.generation,
            members: membership
                .members
                .iter()
                .map(|member| {
                    (
                        member.id.clone(),
                        Member {
                            epoch: member.epoch,
                            instance_id: member.instance_id.clone(),
                            topics: member.topics.clone(),
                            owned: member
                                .owned
                                .iter()
                                .map(|(topic, number)| partition(topic, *number))
                                .collect(),
                            last_heartbeat_ms: now_ms,
                        },
                    )
                })
                .collect(),
            target: membership
                .target
                .iter()
                .map(|(topic, number, owner)| (partition(topic, *number), owner.clone()))
                .collect(),
            revoking: membership
                .revoking
                .iter()
                .map(|(topic, number, deadline)| (partition(topic, *number), *deadline))
                .collect(),
            next_member: membership.next_member,
            incarnation: None,
        }
    }

    /// Joins, heartbeats or rejoins. `partitions` gives every partition count by topic.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<Assignment, GroupError> {
        self.expire(partitions, now_ms);
        let member_id = match &request.member_id {
            None => self.join(&request, now_ms)?,
            Some(member_id) => {
                let member = self
                    .members
                    .get(member_id)
                    .ok_or_else(|| GroupError::UnknownMember(member_id.clone()))?;
                if request.member_epoch != member.epoch {
                    return Err(GroupError::FencedMember {
                        member: member_id.clone(),
                        sent: request.member_epoch,
                        current: member.epoch,
                    });
                }
                member_id.clone()
            }
        };
        let topics_changed = {
            let member = self
                .members
                .get_mut(&member_id)
                .ok_or_else(|| GroupError::UnknownMember(member_id.clone()))?;
            member.last_heartbeat_ms = now_ms;
            member.owned = request.owned.clone();
            let changed = member.topics != request.topics;
            member.topics = request.topics.clone();
            changed
        };
        if topics_changed || request.member_id.is_none() {
            self.rebalance(partitions, now_ms);
        }
        self.settle_revocations(partitions, now_ms);
        let partitions = self.grantable(&member_id);
        let member = self
            .members
            .get_mut(&member_id)
            .ok_or_else(|| GroupError::UnknownMember(member_id.clone()))?;
        // What was just granted counts as owned until the member reports otherwise: moving it
        // elsewhere needs a revocation first.
        member.owned.extend(partitions.iter().cloned());
        let member_epoch = member.epoch;
        let waiting = self
            .target
            .values()
            .filter(|owner| **owner == member_id)
            .count()
            > partitions.len();
        Ok(Assignment {
            member_id: member_id.clone(),
            member_epoch,
            partitions,
            waiting,
        })
    }

    fn join(&mut self, request: &Heartbeat, now_ms: i64) -> Result<String, GroupError> {
        // A static member coming back replaces its previous incarnation in place.
        if let Some(instance) = &request.instance_id {
            if let Some((old_id, _)) = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
            {
                let old_id = old_id.clone();
                if let Some(member) = self.members.get_mut(&old_id) {
                    member.epoch += 1;
                    member.owned.clear();
                    member.last_heartbeat_ms = now_ms;
                }
                return Ok(old_id);
            }
        }
        if self.members.len() >= MEMBERS_PER_GROUP_MAX {
            return Err(GroupError::Full);
        }
        self.next_member += 1;
        let number = match &self.incarnation {
            Some(incarnation) => format!("{incarnation}-{}", self.next_member),
            None => self.next_member.to_string(),
        };
        // A member id travels as a group name does: a long instance id is cut so that its
        // member id still fits.
        let member_id = match &request.instance_id {
            Some(instance) => {
                let room = GROUP_NAME_BYTES_MAX.saturating_sub(number.len() + 1);
                format!("{}-{number}", herald_wire::truncate_utf8(instance, room))
            }
            None => format!("member-{number}"),
        };
        self.members.insert(
            member_id.clone(),
            Member {
                epoch: 1,
                instance_id: request.instance_id.clone(),
                topics: request.topics.clone(),
                owned: BTreeSet::new(),
                last_heartbeat_ms: now_ms,
            },
        );
        Ok(member_id)
    }

    /// Removes a member; its partitions become free at once.
    pub fn leave(
        &mut self,
        member_id: &str,
        partitions: &BTreeMap<String, u32>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.members
            .remove(member_id)
            .ok_or_else(|| GroupError::UnknownMember(member_id.to_owned()))?;
        self.rebalance(partitions, now_ms);
        Ok(())
    }

    /// Drops members whose session expired.
    pub fn expire(&mut self, partitions: &BTreeMap<String, u32>, now_ms: i64) -> usize {
        let timeout = self.config.session_timeout_ms;
        let before = self.members.len();
        self.members
            .retain(|_, m| now_ms.saturating_sub(m.last_heartbeat_ms) < timeout);
        let expired = before - self.members.len();
        if expired > 0 {
            self.rebalance(partitions, now_ms);
        }
        expired
    }

    /// Checks that `member_id` at `member_epoch` may commit for `partition`.
    pub fn authorize_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        partition: &TopicPartition,
    ) -> Result<(), GroupError> {
        let member = self
            .members
            .get(member_id)
            .ok_or_else(|| GroupError::UnknownMember(member_id.to_owned()))?;
        if member.epoch != member_epoch {
            return Err(GroupError::FencedMember {
                member: member_id.to_owned(),
                sent: member_epoch,
                current: member.epoch,
            });
        }
        // The current owner may commit, and so may a member finishing a revoked partition.
        let owns = self.grantable(member_id).contains(partition)
            || (member.owned.contains(partition) && self.revoking.contains_key(partition));
        if !owns {
            return Err(GroupError::NotOwner {
                member: member_id.to_owned(),
                topic: partition.topic.clone(),
                partition: partition.partition,
            });
        }
        Ok(())
    }

    /// Members and what each may consume now.
    pub fn assignments(&self) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        self.members
            .keys()
            .map(|id| (id.clone(), self.grantable(id)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The topics `member_id` subscribes to, if it is a member.
    pub fn member_topics(&self, member_id: &str) -> Option<&BTreeSet<String>> {
        self.members.get(member_id).map(|member| &member.topics)
    }

    /// The partitions `member_id` may consume: its target partitions that no other live
    /// member still reports owning.
    fn grantable(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.target
            .iter()
            .filter(|(_, owner)| owner.as_str() == member_id)
            .map(|(partition, _)| partition)
            .filter(|partition| {
                !self.members.iter().any(|(other, m)| {
                    other != member_id
                        && m.owned.contains(*partition)
                        && self.revoking.contains_key(*partition)
                })
            })
            .cloned()
            .collect()
    }

    /// Hands over revoked partitions whose old owner stopped reporting them. An owner that
    /// still holds a revoked partition at the revoke deadline is removed from the group (as
    /// KIP-848 fences a member that misses its rebalance timeout): it must rejoin, and its
    /// commits are refused meanwhile.
    fn settle_revocations(&mut self, partitions: &BTreeMap<String, u32>, now_ms: i64) {
        let mut stuck_owners = BTreeSet::new();
        let members = &self.members;
        let target = &self.target;
        self.revoking.retain(|partition, deadline| {
            let holders: Vec<&String> = members
                .iter()
                .filter(|(id, m)| m.owned.contains(partition) && target.get(partition) != Some(*id))
                .map(|(id, _)| id)
                .collect();
            if !holders.is_empty() && now_ms >= *deadline {
                stuck_owners.extend(holders.into_iter().cloned());
                return false;
            }
            !holders.is_empty()
        });
        if !stuck_owners.is_empty() {
            self.members.retain(|id, _| !stuck_owners.contains(id));
            self.rebalance(partitions, now_ms);
        }
    }

    /// Recomputes the sticky target assignment and marks moved partitions as revoking.
    fn rebalance(&mut self, partitions: &BTreeMap<String, u32>, now_ms: i64) {
        let new_target = assign(
            self.config.assignor,
            &self.members,
            partitions,
            &self.target,
        );
        if new_target == self.target {
            return;
        }
        for (partition, owner) in &self.target {
            let moved = new_target.get(partition) != Some(owner);
            let still_owned = self
                .members
                .get(owner)
                .is_some_and(|m| m.owned.contains(partition));
            if moved && still_owned {
                self.revoking.insert(
                    partition.clone(),
                    now_ms.saturating_add(self.config.revoke_timeout_ms),
                );
            }
        }
        self.target = new_target;
        self.generation += 1;
    }
}

/// A sticky assignment: partitions keep their owner while it stays subscribed and within its
/// fair share; the rest are dealt by the chosen assignor. Members beyond the partition count
/// get nothing (they stay idle, not failing).
fn assign(
    assignor: Assignor,
    members: &BTreeMap<String, Member>,
    partitions: &BTreeMap<String, u32>,
    previous: &BTreeMap<TopicPartition, String>,
) -> BTreeMap<TopicPartition, String> {
    let mut target = BTreeMap::new();
    let topics: BTreeSet<&String> = members.values().flat_map(|m| m.topics.iter()).collect();
    for topic in topics {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribers.is_empty() || count == 0 {
            continue;
        }
        // Balanced quotas: every member gets `base` partitions, `extra` of them one more.
        let base = count as usize / subscribers.len();
        let mut extra = count as usize % subscribers.len();
        let can_take = |load: usize, extra: usize| load < base || (load == base && extra > 0);
        let mut load: BTreeMap<&String, usize> = subscribers.iter().map(|id| (*id, 0)).collect();
        let mut unassigned = Vec::new();
        for partition in 0..count {
            let key = TopicPartition::new(topic.as_str(), partition);
            let sticky_owner = previous
                .get(&key)
                .and_then(|owner| load.get_key_value(owner).map(|(k, n)| (*k, *n)));
            match sticky_owner {
                Some((owner, taken)) if can_take(taken, extra) => {
                    if taken == base {
                        extra -= 1;
                    }
                    load.insert(owner, taken + 1);
                    target.insert(key, owner.clone());
                }
                _ => unassigned.push(key),
            }
        }
        let mut last_owner: Option<&String> = None;
        for key in unassigned {
            let least_loaded = load
                .iter()
                .filter(|(_, n)| can_take(**n, extra))
                .min_by_key(|(id, n)| (**n, **id))
                .map(|(id, _)| *id);
            let owner = match assignor {
                // Range: keep filling the same member while it has room, for contiguous runs.
                Assignor::Range => last_owner
                    .filter(|o| can_take(load[o], extra))
                    .or(least_loaded),
                Assignor::RoundRobin => least_loaded,
            };
            let Some(owner) = owner else { break };
            let taken = load[owner];
            if taken == base {
                extra -= 1;
            }
            load.insert(owner, taken + 1);
            target.insert(key, owner.clone());
            last_owner = Some(owner);
        }
    }
    target
}

#[cfg(test)]
mod tests;
