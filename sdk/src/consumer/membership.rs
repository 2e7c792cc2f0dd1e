//! Group membership: joining and heartbeats (rejoining when expired or fenced), where a
//! partition starts, commits, and leaving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_broker_client::RequestError;
use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::OffsetSpec;
use herald_wire::ErrorCode;

use super::{ConsumeError, RawConsumer, ResetPolicy};

pub(super) struct Membership {
    pub(super) member_id: String,
    pub(super) epoch: i32,
    pub(super) owned: Vec<TopicPartition>,
    pub(super) interval: Duration,
    pub(super) last: Option<Instant>,
}

impl RawConsumer {
    pub(super) async fn heartbeat(&self, membership: &mut Membership) -> Result<(), ConsumeError> {
        let request = GroupRequest::Heartbeat {
            group: self.config.group.clone(),
            member_id: membership.member_id.clone(),
            member_epoch: membership.epoch,
            instance_id: self.config.instance_id.clone().unwrap_or_default(),
            topics: vec![self.config.topic.clone()],
            owned: membership.owned.clone(),
        };
        match self.client.group(request).await {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                heartbeat_interval_ms,
                partitions,
            }) => {
                membership.member_id = member_id;
                membership.epoch = member_epoch;
                membership.owned = partitions;
                membership.interval =
                    Duration::from_millis(u64::from(heartbeat_interval_ms.max(10)));
            }
            Ok(_) => {}
            Err(RequestError::Broker {
                code: ErrorCode::UnknownMember | ErrorCode::FencedMemberEpoch,
                ..
            }) => {
                // Expired or fenced: drop everything and rejoin on the next beat.
                *membership = Membership {
                    member_id: String::new(),
                    epoch: 0,
                    owned: Vec::new(),
                    interval: Duration::ZERO,
                    last: None,
                };
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        membership.last = Some(Instant::now());
        Ok(())
    }

    pub(super) async fn start_position(
        &self,
        partition: &TopicPartition,
    ) -> Result<i64, ConsumeError> {
        let asked = vec![partition.clone()];
        if let GroupResponse::Offsets(offsets) = self
            .client
            .group(GroupRequest::FetchOffsets {
                group: self.config.group.clone(),
                partitions: asked,
            })
            .await?
        {
            if let Some((_, offset, _)) = offsets.first().filter(|(_, offset, _)| *offset >= 0) {
                return Ok(*offset);
            }
        }
        let spec = match self.config.reset {
            ResetPolicy::Earliest => OffsetSpec::Earliest,
            ResetPolicy::Latest => OffsetSpec::Latest,
            ResetPolicy::Timestamp(ms) => OffsetSpec::Timestamp(ms),
        };
        Ok(self
            .client
            .list_offsets(&partition.0, partition.1, spec)
            .await?
            .0)
    }

    /// Commits `next` for `partition` (and remembers it as the partition's position); when
    /// the partition moved or the member was fenced, forgets the position and rejoins on the
    /// next beat.
    pub(super) async fn commit(
        &self,
        partition: &TopicPartition,
        next: i64,
        positions: &mut BTreeMap<TopicPartition, i64>,
        membership: &mut Membership,
    ) -> Result<(), ConsumeError> {
        positions.insert(partition.clone(), next);
        let commit = GroupRequest::Commit {
            group: self.config.group.clone(),
            member_id: membership.member_id.clone(),
            member_epoch: membership.epoch,
            offsets: vec![(partition.clone(), next, String::new())],
        };
        match self.client.group(commit).await {
            Ok(_) => {}
            // The partition moved or we were fenced: the new owner resumes from the last
            // commit (at-least-once); rejoin on the next beat.
            Err(RequestError::Broker {
                code:
                    ErrorCode::NotPartitionOwner
                    | ErrorCode::UnknownMember
                    | ErrorCode::FencedMemberEpoch,
                ..
            }) => {
                positions.remove(partition);
                membership.last = None;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Leaves the group (when joined), best effort.
    pub(super) async fn leave(&self, membership: &Membership) {
        if !membership.member_id.is_empty() {
            let _ = self
                .client
                .group(GroupRequest::Leave {
                    group: self.config.group.clone(),
                    member_id: membership.member_id.clone(),
                })
                .await;
        }
    }
}
