//! Group membership's requests: heartbeats (joining, and rejoining when expired or fenced),
//! where a partition starts, commits, and leaving. What to send and when is the core's
//! decision (`core`); the answers are reported back to it.

use std::time::{Duration, Instant};

use herald_broker_client::RequestError;
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::OffsetSpec;
use herald_wire::ErrorCode;

use super::core::{ConsumerCore, HeartbeatError, MemberAssignment};
use super::{ConsumeError, RawConsumer, ResetPolicy};

impl RawConsumer {
    /// Sends the heartbeat the core asks for and reports the answer to it (an expiry or a
    /// fence drops everything and rejoins on the next beat).
    pub(super) async fn heartbeat(&self, core: &mut ConsumerCore) -> Result<(), ConsumeError> {
        let beat = core.heartbeat_request();
        let request = GroupRequest::Heartbeat {
            group: self.config.group.clone(),
            member_id: beat.member_id,
            member_epoch: beat.member_epoch,
            instance_id: self.config.instance_id.clone(),
            topics: vec![self.config.topic.clone()],
            owned: beat.owned,
        };
        match self.client.group(request).await {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                heartbeat_interval_ms,
                partitions,
            }) => core.on_assignment(
                MemberAssignment {
                    member_id,
                    member_epoch,
                    partitions,
                    heartbeat_interval: Duration::from_millis(u64::from(heartbeat_interval_ms)),
                },
                Instant::now(),
            ),
            Ok(_) => core.on_heartbeat_acknowledged(Instant::now()),
            Err(RequestError::Broker {
                code: ErrorCode::UnknownMember,
                ..
            }) => core.on_heartbeat_error(HeartbeatError::UnknownMember, Instant::now()),
            Err(RequestError::Broker {
                code: ErrorCode::FencedMemberEpoch,
                ..
            }) => core.on_heartbeat_error(HeartbeatError::FencedEpoch, Instant::now()),
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Where `partition` starts: its committed offset (when `use_committed`) or else the
    /// reset policy's offset.
    pub(super) async fn start_position(
        &self,
        partition: &TopicPartition,
        use_committed: bool,
    ) -> Result<i64, ConsumeError> {
        if use_committed {
            let asked = vec![partition.clone()];
            if let GroupResponse::Offsets(offsets) = self
                .client
                .group(GroupRequest::FetchOffsets {
                    group: self.config.group.clone(),
                    partitions: asked,
                })
                .await?
            {
                if let Some(offset) = offsets.first().and_then(|committed| committed.offset) {
                    return Ok(offset);
                }
            }
        }
        let spec = match self.config.reset {
            ResetPolicy::Earliest => OffsetSpec::Earliest,
            ResetPolicy::Latest => OffsetSpec::Latest,
            ResetPolicy::Timestamp(ms) => OffsetSpec::Timestamp(ms),
        };
        Ok(self
            .client
            .list_offsets(&partition.topic, partition.partition, spec)
            .await?
            .0)
    }

    /// Commits `next` for `partition` (a commit the core decided); when the partition moved
    /// or the member was fenced, the core forgets the position and rejoins on the next beat.
    pub(super) async fn commit(
        &self,
        partition: &TopicPartition,
        next: i64,
        core: &mut ConsumerCore,
    ) -> Result<(), ConsumeError> {
        let commit = GroupRequest::Commit {
            group: self.config.group.clone(),
            member_id: core.member_id().unwrap_or_default().to_owned(),
            member_epoch: core.member_epoch(),
            offsets: vec![Commit {
                partition: partition.clone(),
                offset: next,
                metadata: String::new(),
            }],
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
            }) => core.on_commit_rejected(partition),
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Leaves the group (when joined), best effort.
    pub(super) async fn leave(&self, core: &ConsumerCore) {
        if let Some(member_id) = core.member_id() {
            let _ = self
                .client
                .group(GroupRequest::Leave {
                    group: self.config.group.clone(),
                    member_id: member_id.to_owned(),
                })
                .await;
        }
    }
}
