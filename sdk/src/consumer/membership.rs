//! Group membership and the connection its requests go over:
//!
//! - [`Link`]: the broker connection every request of a consumer goes over, replaced after it
//!   failed when the consumer has a connector, and how a failed request is recovered from
//!   (tried again after a backoff, over a new connection, or the end of the run);
//! - the heartbeat task ([`Beater`]): joins, heartbeats at the interval the coordinator asks
//!   for whatever the handler is doing (so a slow handler does not lose its session), rejoins
//!   after an expiry or a fence, and leaves the group when handling one fetch takes longer
//!   than `max_poll_interval`. It tells the run loop the coordinator's answers
//!   ([`Membership`], on a watch channel: only the latest matters, each assignment being
//!   whole) and learns from it what is consumed ([`Consuming`], also a watch channel), which
//!   is what its heartbeats report: a revoked partition moves on only once the run loop let
//!   it go. So while the network is sound no partition is handled by two live members; but
//!   after a member expired while cut off from the coordinator (its handler may still be at
//!   work on what it fetched), or left for `max_poll_interval` with its handler still
//!   running, the partition's new owner may handle the same records meanwhile
//!   (at-least-once, not exclusive). At the end of a run the task is stopped, not aborted: a
//!   join in flight is answered first, so the run leaves as the member it made;
//! - where a partition starts, commits, and leaving.
//!
//! The decisions are made without I/O: by a `ConsumerCore` (the heartbeat task keeps one for
//! the member's identity and heartbeat timing) and by the small functions here
//! ([`next_beat_step`], [`owned_to_report`], [`apply_news`], [`recovery_for`],
//! [`backoff_delay`]), unit-tested below.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herald_broker_client::{BrokerClient, RequestError};
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};
use herald_wire::ErrorCode;
use tokio::sync::{watch, Notify};

use crate::policy::backoff::{RetryDecision, RetryPolicy};

use super::core::{ConsumerCore, HeartbeatError, MemberAssignment};
use super::{
    Connector, ConsumeError, RawConsumer, ResetPolicy, CONNECT_TIMEOUT, UNKNOWN_TOPIC_ATTEMPTS_MAX,
};

// --- The connection ---------------------------------------------------------------------------

/// The broker connection every request of a consumer goes over (the run loop's, the heartbeat
/// task's, dead letters), replaced after it failed when the consumer has a [`Connector`].
pub(super) struct Link {
    connector: Option<Connector>,
    current: Mutex<Current>,
    /// Held while connecting: however many requests saw a connection fail (the run loop's
    /// and the heartbeat task's), it is replaced once.
    connecting: tokio::sync::Mutex<()>,
}

/// The connection in use, and its generation (bumped by every replacement).
#[derive(Clone)]
pub(super) struct Current {
    pub(super) generation: u64,
    pub(super) client: BrokerClient,
}

/// Why no new connection was made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReconnectError {
    #[error("the consumer has no connector to make a new connection with")]
    NoConnector,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no connection within {0:?}")]
    TimedOut(Duration),
}

impl Link {
    pub(super) fn new(client: BrokerClient, connector: Option<Connector>) -> Self {
        Self {
            connector,
            current: Mutex::new(Current {
                generation: 0,
                client,
            }),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Never held across an await.
    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn current(&self) -> Current {
        self.lock().clone()
    }

    /// The connection in use (a clone: cheap, and nothing is locked while it is used).
    pub(super) fn connection(&self) -> BrokerClient {
        self.lock().client.clone()
    }

    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) async fn group(&self, request: GroupRequest) -> Result<GroupResponse, RequestError> {
        self.connection().group(request).await
    }

    pub(super) async fn produce(
        &self,
        topic: &str,
        partition: u32,
        durability: Durability,
        batch: Vec<u8>,
    ) -> Result<(i64, i64), RequestError> {
        self.connection()
            .produce(topic, partition, durability, batch)
            .await
    }

    pub(super) async fn create_topic(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<(), RequestError> {
        self.connection().create_topic(name, config).await
    }

    pub(super) async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(i64, i64), RequestError> {
        self.connection().list_offsets(topic, partition, spec).await
    }

    /// Replaces the connection of generation `failed` with a new one from the connector,
    /// unless it was replaced already (by the other task that saw it fail); the generation in
    /// use after.
    pub(super) async fn reconnect(&self, failed: u64) -> Result<u64, ReconnectError> {
        let _connecting = self.connecting.lock().await;
        let generation = self.generation();
        if generation != failed {
            return Ok(generation);
        }
        let Some(connector) = &self.connector else {
            return Err(ReconnectError::NoConnector);
        };
        let fresh = match tokio::time::timeout(CONNECT_TIMEOUT, connector(None)).await {
            Ok(Ok(client)) => client,
            Ok(Err(reason)) => return Err(ReconnectError::Connect(reason.to_string())),
            Err(_) => return Err(ReconnectError::TimedOut(CONNECT_TIMEOUT)),
        };
        let (replaced, generation) = {
            let mut current = self.lock();
            current.generation += 1;
            (
                std::mem::replace(&mut current.client, fresh),
                current.generation,
            )
        };
        // Requests still in flight on the old connection fail now, not at their timeout.
        replaced.close();
        Ok(generation)
    }

    /// Recovers from `error`, a failure of a request made on the connection of
    /// `generation`: waits a backoff (full jitter below a ceiling set by `attempt`, the
    /// failures counted so far, up to the configured cap; at least what a throttling broker
    /// asked for) and, when the connection failed, replaces it. `Err` gives the error back
    /// when it ends the run: a fatal one, a lost connection that cannot be replaced (no
    /// connector), an unknown topic that stayed unknown (`failed_in_a_row`: the failures
    /// since the last success of any kind, idle rounds included, past
    /// [`UNKNOWN_TOPIC_ATTEMPTS_MAX`]; kept apart from `attempt`, which a run loop lets grow
    /// across idle rounds, so a long outage does not count against a topic).
    pub(super) async fn recover(
        &self,
        error: ConsumeError,
        attempt: u32,
        failed_in_a_row: u32,
        generation: u64,
        policy: &RetryPolicy,
        interruptions: &Interruptions,
    ) -> Result<Recovery, ConsumeError> {
        let recovery = recovery_for(&error, self.connector.is_some());
        let gives_up = match recovery {
            Recovery::Fatal => true,
            Recovery::RetryUnknown => failed_in_a_row > UNKNOWN_TOPIC_ATTEMPTS_MAX,
            Recovery::Retry | Recovery::Reconnect => false,
        };
        if gives_up {
            return Err(error);
        }
        let retry_after = match &error {
            ConsumeError::Broker(RequestError::Broker { retry_after_ms, .. }) => {
                Duration::from_millis(u64::from(*retry_after_ms))
            }
            _ => Duration::ZERO,
        };
        if recovery == Recovery::Reconnect {
            interruptions.reconnect.increment(1);
        } else {
            interruptions.retry.increment(1);
        }
        tracing::warn!(%error, attempt, ?recovery, "consumer interrupted: retrying with backoff");
        tokio::time::sleep(backoff_delay(
            policy,
            attempt,
            retry_after,
            rand::random::<f64>(),
        ))
        .await;
        if recovery == Recovery::Reconnect {
            // A broker still down is not the end: the next request fails, and the next
            // recovery tries again after a longer backoff.
            if let Err(ReconnectError::NoConnector) = self.reconnect(generation).await {
                return Err(error);
            }
        }
        Ok(recovery)
    }
}

/// How the run goes on after a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovery {
    /// Try again after a backoff, on the same connection: the broker is busy or failing for
    /// now (throttled, storage, internal), or the membership moved under the request.
    Retry,
    /// The connection failed (lost, reset, no answer): connect again after a backoff, and
    /// consume again only once a heartbeat on the new connection confirmed the membership (a
    /// restarted broker forgot every member).
    Reconnect,
    /// The topic or partition is unknown: tried again up to [`UNKNOWN_TOPIC_ATTEMPTS_MAX`]
    /// rounds in a row.
    RetryUnknown,
    /// Ends the run (a request the broker will never accept, a record that cannot be
    /// processed with dead-lettering disabled, an answer that cannot be read).
    Fatal,
}

/// How the run recovers from `error`; `can_reconnect`: the consumer has a connector.
pub(super) fn recovery_for(error: &ConsumeError, can_reconnect: bool) -> Recovery {
    let ConsumeError::Broker(error) = error else {
        return Recovery::Fatal;
    };
    match error {
        RequestError::Connection(_) | RequestError::Stream(_) | RequestError::Timeout(_)
            if can_reconnect =>
        {
            Recovery::Reconnect
        }
        // A closed connection cannot be replaced without a connector: the run ends, as it
        // always did.
        RequestError::Connection(_) => Recovery::Fatal,
        // A failed stream or a late answer on a connection still up: the same request may
        // pass (on a closed connection, the next one fails with `Connection`).
        RequestError::Stream(_) | RequestError::Timeout(_) => Recovery::Retry,
        RequestError::Broker { code, .. } => match code {
            ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => Recovery::RetryUnknown,
            // Handled where they can happen; a stray one waits for the heartbeat's news.
            ErrorCode::UnknownMember
            | ErrorCode::FencedMemberEpoch
            | ErrorCode::NotPartitionOwner => Recovery::Retry,
            code if code.retryable() => Recovery::Retry,
            _ => Recovery::Fatal,
        },
        RequestError::Decode(_)
        | RequestError::Unexpected { .. }
        | RequestError::Authentication(_) => Recovery::Fatal,
    }
}

/// The wait before attempt `attempt + 1` (full jitter below the policy's ceiling for
/// `attempt`, with `uniform` a sample of U[0, 1)), at least `retry_after` (what a throttling
/// broker asked for).
pub(super) fn backoff_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Duration,
    uniform: f64,
) -> Duration {
    let jittered = match policy.decide(attempt.max(1), Duration::ZERO, uniform) {
        RetryDecision::RetryAfter(delay) => delay,
        RetryDecision::GiveUp(_) => policy.cap,
    };
    jittered.max(retry_after)
}

/// The interruptions a consumer recovers from, counted under
/// [`crate::metrics::CONSUMER_INTERRUPTIONS`] by cause (registered once per consumer).
#[derive(Clone)]
pub(super) struct Interruptions {
    pub(super) retry: metrics::Counter,
    pub(super) reconnect: metrics::Counter,
    pub(super) max_poll_interval: metrics::Counter,
}

impl Interruptions {
    pub(super) fn new(topic: &str, group: &str) -> Self {
        let counter = |cause: &'static str| {
            metrics::counter!(
                crate::metrics::CONSUMER_INTERRUPTIONS,
                "topic" => topic.to_owned(),
                "group" => group.to_owned(),
                "cause" => cause,
            )
        };
        Self {
            retry: counter("retry"),
            reconnect: counter("reconnect"),
            max_poll_interval: counter("max-poll-interval"),
        }
    }
}

// --- The heartbeat task -----------------------------------------------------------------------

/// What the run loop tells its heartbeat task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Consuming {
    /// The member the run loop consumes as, and its epoch (`None` while it waits for an
    /// assignment).
    pub(super) member: Option<(String, i32)>,
    /// The partitions it consumes. A revoked partition stays listed until the run loop let
    /// it go (its records handled, its commit sent): only then does the coordinator hand it
    /// to its new owner (so, while the network is sound, it is not consumed by two live
    /// members; see the module documentation for when it may be).
    pub(super) owned: Vec<TopicPartition>,
    /// Since when the handler has been working through a fetch (`None` between fetches):
    /// held against `max_poll_interval`. Updated without waking the task (twice per fetch
    /// would be two wakes per fetch): it reads it at its next wake, so a handler past the
    /// limit is noticed at most one heartbeat interval late (only when `max_poll_interval`
    /// is shorter than the heartbeat interval; otherwise the task's wake at the next
    /// heartbeat sees the handling and sets its wake-up at the limit).
    pub(super) handling_since: Option<Instant>,
}

/// Where the membership stands, as the heartbeat task last heard from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Membership {
    /// Not joined yet.
    Joining,
    /// The coordinator's latest assignment, answered on the connection of `generation`.
    Assigned {
        assignment: MemberAssignment,
        generation: u64,
    },
    /// The member expired or was fenced; the task is joining again.
    Lost(HeartbeatError),
    /// Handling took longer than `max_poll_interval`: the member left; the task joins again
    /// once the handler is back.
    LeftSlow,
}

/// The heartbeat task's news for the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct News {
    pub(super) membership: Membership,
    /// Memberships lost so far (expired, fenced, left for slow handling). The task counts a
    /// loss in the shared counter before publishing it, so handling stops early (the rest
    /// of a fetch is no longer this member's to handle) while the run loop has not applied
    /// the latest loss.
    pub(super) losses: u64,
}

impl News {
    pub(super) fn joining() -> Self {
        Self {
            membership: Membership::Joining,
            losses: 0,
        }
    }
}

/// What the heartbeat task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BeatStep {
    /// Send a heartbeat now (a join when not a member).
    Beat,
    /// Handling has taken longer than `max_poll_interval`: leave the group (when a member),
    /// so the partitions move to members that make progress, and stop heartbeating.
    Leave,
    /// Left for slow handling, and the handler is back: join again.
    Rejoin,
    /// Nothing to do until then (`None`: until the run loop reports or asks for a beat).
    Wait(Option<Instant>),
}

/// The heartbeat task's next step at `now`. `membership`: its identity and timing;
/// `handling_since`: the run loop's handling of the current fetch; `left_slow_at`: when it
/// left for slow handling (`None` when it did not); `owned_changed`: the run loop's
/// partitions differ from what the last heartbeat reported (a let-go revoked partition is
/// reported at once); `forced`: the run loop asked for a heartbeat.
pub(super) fn next_beat_step(
    membership: &ConsumerCore,
    handling_since: Option<Instant>,
    left_slow_at: Option<Instant>,
    owned_changed: bool,
    forced: bool,
    max_poll_interval: Duration,
    now: Instant,
) -> BeatStep {
    if let Some(left_at) = left_slow_at {
        return match handling_since {
            Some(since) if since <= left_at => BeatStep::Wait(None),
            _ => BeatStep::Rejoin,
        };
    }
    let poll_deadline = handling_since.and_then(|since| since.checked_add(max_poll_interval));
    if poll_deadline.is_some_and(|deadline| now >= deadline) {
        return BeatStep::Leave;
    }
    let member = membership.member_id().is_some();
    if membership.heartbeat_due(now) || forced || (member && owned_changed) {
        return BeatStep::Beat;
    }
    let wake = match (membership.next_heartbeat_at(), poll_deadline) {
        (Some(beat), Some(deadline)) => Some(beat.min(deadline)),
        (beat, deadline) => beat.or(deadline),
    };
    BeatStep::Wait(wake)
}

/// The partitions a heartbeat reports as consumed: what the run loop consumes when it
/// consumes as this very member; nothing otherwise (joining, or the run loop still holds what
/// an earlier incarnation was given, which is not this member's). Borrowed: the task copies
/// it only when a heartbeat reports something new, not at every wake.
pub(super) fn owned_to_report<'a>(
    membership: &ConsumerCore,
    consuming: &'a Consuming,
) -> &'a [TopicPartition] {
    let same_member = match (&consuming.member, membership.member_id()) {
        (Some((consumed_as, epoch)), Some(member)) => {
            consumed_as.as_str() == member && *epoch == membership.member_epoch()
        }
        _ => false,
    };
    if same_member {
        &consuming.owned
    } else {
        &[]
    }
}

/// Applies the heartbeat task's news to the run loop's core at `now`; `false` when nothing
/// changed (nothing new, or an assignment answered on a connection older than `fresh_from`:
/// the run loop reconnected since, and waits for an answer on the new one). An assignment
/// to another member or epoch than the one consumed as (it expired, was fenced or left, and
/// joined again) drops everything first: the positions of an earlier incarnation do not
/// carry over, the partitions start again from their committed offsets.
pub(super) fn apply_news(
    core: &mut ConsumerCore,
    membership: &Membership,
    fresh_from: u64,
    now: Instant,
) -> bool {
    match membership {
        Membership::Joining => false,
        Membership::Assigned {
            assignment,
            generation,
        } => {
            if *generation < fresh_from {
                return false;
            }
            let same_member = core.member_id() == Some(assignment.member_id.as_str())
                && core.member_epoch() == assignment.member_epoch;
            if !same_member && core.member_id().is_some() {
                core.on_heartbeat_error(HeartbeatError::UnknownMember, now);
            }
            core.on_assignment(assignment.clone(), now);
            true
        }
        Membership::Lost(kind) => {
            core.on_heartbeat_error(*kind, now);
            true
        }
        Membership::LeftSlow => {
            core.on_heartbeat_error(HeartbeatError::UnknownMember, now);
            true
        }
    }
}

/// The heartbeat task of a run, with what it owns (it runs on its own, so a handler however
/// slow does not hold its heartbeats back).
pub(super) struct Beater {
    link: Arc<Link>,
    group: String,
    topic: String,
    instance_id: Option<String>,
    max_poll_interval: Duration,
    backoff: RetryPolicy,
    interruptions: Interruptions,
    consuming: watch::Receiver<Consuming>,
    news: watch::Sender<News>,
    beat_now: Arc<Notify>,
    /// Memberships lost so far, shared with the run loop's handling.
    losses: Arc<AtomicU64>,
}

/// How a heartbeat task ended.
#[derive(Debug)]
pub(super) struct BeatEnd {
    /// The member the coordinator knows this consumer as, to leave as (`None`: not a member:
    /// not joined yet, lost, or left for slow handling).
    pub(super) member_id: Option<String>,
    /// Why it ended on its own (the error that ends the run); `None` when the run stopped it.
    pub(super) error: Option<ConsumeError>,
}

/// Completes once the run asked its heartbeat task to stop, or is gone (the channel closed:
/// as good as asked).
async fn stop_asked(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Beater {
    /// Heartbeats until the run stops it through `stop` (or aborts it): it then ends with
    /// the member it is, to leave as. A join in flight is answered first (it makes a member:
    /// abandoned, the member would hold partitions until its session expired; so a stop
    /// waits for it, at most the request timeout); a heartbeat in flight, a leave for slow
    /// handling or a backoff after a failed request is cut short (the member is the same
    /// whatever their outcome). Otherwise it ends only with the error that ends the run.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) -> BeatEnd {
        // The membership as the coordinator answered: identity and heartbeat timing (its
        // partitions are the latest assignment, not what the run loop consumes).
        let mut membership = ConsumerCore::new();
        // What the last heartbeat reported as consumed.
        let mut reported: Option<Vec<TopicPartition>> = None;
        let mut left_slow_at: Option<Instant> = None;
        let mut forced = false;
        let mut failures = 0u32;
        loop {
            if *stop.borrow() || stop.is_closed() {
                return BeatEnd {
                    member_id: membership.member_id().map(str::to_owned),
                    error: None,
                };
            }
            let now = Instant::now();
            // Decided while what the run loop reports is borrowed (never across an await);
            // it is copied only for a heartbeat reporting something new.
            let (step, fresh) = {
                let consuming = self.consuming.borrow_and_update();
                let owned = owned_to_report(&membership, &consuming);
                let owned_changed = reported.as_deref() != Some(owned);
                let step = next_beat_step(
                    &membership,
                    consuming.handling_since,
                    left_slow_at,
                    owned_changed,
                    forced,
                    self.max_poll_interval,
                    now,
                );
                let fresh = (step == BeatStep::Beat && owned_changed).then(|| owned.to_vec());
                (step, fresh)
            };
            match step {
                BeatStep::Leave => {
                    self.interruptions.max_poll_interval.increment(1);
                    tracing::warn!(
                        group = %self.group,
                        max_poll_interval = ?self.max_poll_interval,
                        "handling took longer than max_poll_interval: leaving the group so its partitions move; rejoining when the handler returns"
                    );
                    if let Some(member_id) = membership.member_id() {
                        let leave = GroupRequest::Leave {
                            group: self.group.clone(),
                            member_id: member_id.to_owned(),
                        };
                        // Best effort: a member no longer heard from expires anyway. A stop
                        // meanwhile ends the task as this member (the run leaves as it).
                        tokio::select! {
                            _ = self.link.group(leave) => {}
                            () = stop_asked(&mut stop) => continue,
                        }
                    }
                    membership = ConsumerCore::new();
                    reported = None;
                    left_slow_at = Some(now);
                    self.publish_loss(Membership::LeftSlow);
                }
                BeatStep::Rejoin => {
                    // `membership` is new since the leave: its first heartbeat (the join) is
                    // due now.
                    left_slow_at = None;
                }
                BeatStep::Beat => {
                    forced = false;
                    let generation = self.link.generation();
                    let joining = membership.member_id().is_none();
                    // What is consumed: new (`fresh`), or as last reported.
                    let owned = fresh.as_deref().or(reported.as_deref()).unwrap_or_default();
                    let beat = self.beat(&mut membership, owned);
                    let answered = if joining {
                        // Answered even when the run stops meanwhile: the run must leave as
                        // the member it makes.
                        beat.await
                    } else {
                        tokio::select! {
                            answered = beat => answered,
                            // The member is the same whatever the answer: the run leaves as
                            // it.
                            () = stop_asked(&mut stop) => continue,
                        }
                    };
                    match answered {
                        Ok(()) => {
                            failures = 0;
                            if let Some(fresh) = fresh {
                                reported = Some(fresh);
                            }
                        }
                        Err(error) => {
                            failures = failures.saturating_add(1);
                            let recovered = tokio::select! {
                                recovered = self.link.recover(
                                    error.into(),
                                    failures,
                                    failures,
                                    generation,
                                    &self.backoff,
                                    &self.interruptions,
                                ) => recovered,
                                // The run is ending: nothing to recover for (the member is
                                // as before the failed request).
                                () = stop_asked(&mut stop) => continue,
                            };
                            if let Err(error) = recovered {
                                return BeatEnd {
                                    member_id: membership.member_id().map(str::to_owned),
                                    error: Some(error),
                                };
                            }
                        }
                    }
                }
                BeatStep::Wait(until) => {
                    let wake = async move {
                        match until {
                            Some(at) => {
                                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        () = wake => {}
                        () = self.beat_now.notified() => forced = true,
                        changed = self.consuming.changed() => {
                            if changed.is_err() {
                                // The run is gone (and aborts this task): nothing to do.
                                std::future::pending::<()>().await;
                            }
                        }
                        // Ends the task at the top of the loop.
                        () = stop_asked(&mut stop) => {}
                    }
                }
            }
        }
    }

    /// Sends one heartbeat (a join when not a member) reporting `owned`, and takes the
    /// answer: an assignment, an expiry or a fence is news for the run loop. `Err`: the
    /// request failed.
    async fn beat(
        &self,
        membership: &mut ConsumerCore,
        owned: &[TopicPartition],
    ) -> Result<(), RequestError> {
        let request = membership.heartbeat_request();
        let current = self.link.current();
        let answer = current
            .client
            .group(GroupRequest::Heartbeat {
                group: self.group.clone(),
                member_id: request.member_id,
                member_epoch: request.member_epoch,
                instance_id: self.instance_id.clone(),
                topics: vec![self.topic.clone()],
                owned: owned.to_vec(),
            })
            .await;
        let now = Instant::now();
        let lost = match answer {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                heartbeat_interval_ms,
                partitions,
            }) => {
                let assignment = MemberAssignment {
                    member_id,
                    member_epoch,
                    partitions,
                    heartbeat_interval: Duration::from_millis(u64::from(heartbeat_interval_ms)),
                };
                membership.on_assignment(assignment.clone(), now);
                let losses = self.losses.load(Ordering::Relaxed);
                self.news.send_replace(News {
                    membership: Membership::Assigned {
                        assignment,
                        generation: current.generation,
                    },
                    losses,
                });
                return Ok(());
            }
            Ok(_) => {
                membership.on_heartbeat_acknowledged(now);
                return Ok(());
            }
            Err(RequestError::Broker {
                code: ErrorCode::UnknownMember,
                ..
            }) => HeartbeatError::UnknownMember,
            Err(RequestError::Broker {
                code: ErrorCode::FencedMemberEpoch,
                ..
            }) => HeartbeatError::FencedEpoch,
            Err(error) => return Err(error),
        };
        // Expired or fenced: everything is dropped, and the join is due at once.
        membership.on_heartbeat_error(lost, now);
        self.publish_loss(Membership::Lost(lost));
        Ok(())
    }

    /// Counts a lost membership (first, so handling stops early), then tells the run loop.
    fn publish_loss(&self, membership: Membership) {
        let losses = self
            .losses
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.news.send_replace(News { membership, losses });
    }
}

/// A run's heartbeat task. The run stops it at its end ([`Heartbeats::stop`]), to learn the
/// member to leave as; dropped (the run's future was dropped), it is aborted: a run that is
/// gone must not keep its member alive.
pub(super) struct Heartbeats {
    handle: tokio::task::JoinHandle<BeatEnd>,
    stop: watch::Sender<bool>,
    /// Set once the task ended on its own (its handle is not awaited again): the member it
    /// ended as.
    ended_as: Option<Option<String>>,
}

impl Heartbeats {
    /// Waits for the task to end on its own, which it does only with an error that ends the
    /// run (a panic in it goes on in the run). Cancel safe; once it returned, it never
    /// completes again.
    pub(super) async fn failed(&mut self) -> ConsumeError {
        if self.ended_as.is_some() {
            return std::future::pending().await;
        }
        let end = joined((&mut self.handle).await);
        self.ended_as = Some(end.member_id);
        // Only `stop` asks it to end without an error: ending so here is a cancellation.
        end.error.unwrap_or(ConsumeError::HeartbeatCancelled)
    }

    /// Stops the task and waits for it to end (see [`Beater::run`]: a join in flight is
    /// answered first), and returns the member the coordinator knows this consumer as
    /// (`None`: none), to leave as. No heartbeat is sent after it returned.
    pub(super) async fn stop(mut self) -> Option<String> {
        if let Some(member_id) = self.ended_as.take() {
            return member_id;
        }
        self.stop.send_replace(true);
        joined((&mut self.handle).await).member_id
    }
}

/// The end of a heartbeat task from its join: a panic goes on in the caller, a cancellation
/// (the runtime shutting down) ends it without a member.
fn joined(joined: Result<BeatEnd, tokio::task::JoinError>) -> BeatEnd {
    match joined {
        Ok(end) => end,
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => BeatEnd {
                member_id: None,
                error: Some(ConsumeError::HeartbeatCancelled),
            },
        },
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

// --- The requests -----------------------------------------------------------------------------

/// A commit sent and not answered yet: dropped so (the request failed, or the run stopped
/// while it was in flight), it is handed back to the core
/// ([`ConsumerCore::on_commit_failed`]), to be sent again.
struct Unanswered<'a> {
    core: &'a mut ConsumerCore,
    partition: &'a TopicPartition,
    offset: i64,
    previous: Option<i64>,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.core
                .on_commit_failed(self.partition, self.offset, self.previous);
        }
    }
}

impl RawConsumer {
    /// Starts the heartbeat task of a run: it learns what is consumed from `consuming`,
    /// publishes the coordinator's answers on `news`, heartbeats at once when `beat_now` is
    /// notified, and counts lost memberships in `losses`; it runs until stopped
    /// ([`Heartbeats::stop`]) or dropped.
    pub(super) fn heartbeats(
        &self,
        consuming: watch::Receiver<Consuming>,
        news: watch::Sender<News>,
        beat_now: Arc<Notify>,
        losses: Arc<AtomicU64>,
    ) -> Heartbeats {
        let beater = Beater {
            link: self.client.clone(),
            group: self.config.group.clone(),
            topic: self.config.topic.clone(),
            instance_id: self.config.instance_id.clone(),
            max_poll_interval: self.config.max_poll_interval,
            backoff: self.config.reconnect_policy(),
            interruptions: self.interruptions.clone(),
            consuming,
            news,
            beat_now,
            losses,
        };
        let (stop, stop_rx) = watch::channel(false);
        Heartbeats {
            handle: tokio::spawn(beater.run(stop_rx)),
            stop,
            ended_as: None,
        }
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

    /// Commits `next` for `partition` (a commit the core decided; `previous`: the one decided
    /// before it, [`ConsumerCore::committed`] before it was taken). When the partition moved
    /// or the member was fenced, the core forgets the position and asks for a heartbeat at
    /// once (the run loop passes it on to the heartbeat task). When it gets no answer — the
    /// request failed (its error is returned) or this future is dropped mid-request (a stop)
    /// — the core goes back to `previous`, so the commit is sent again (by the next round,
    /// or by the final commits).
    pub(super) async fn commit(
        &self,
        partition: &TopicPartition,
        next: i64,
        previous: Option<i64>,
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
        let mut unanswered = Unanswered {
            core,
            partition,
            offset: next,
            previous,
            answered: false,
        };
        match self.client.group(commit).await {
            Ok(_) => unanswered.answered = true,
            // The partition moved or we were fenced (or left for slow handling): the new
            // owner resumes from the last commit (at-least-once).
            Err(RequestError::Broker {
                code:
                    ErrorCode::NotPartitionOwner
                    | ErrorCode::UnknownMember
                    | ErrorCode::FencedMemberEpoch,
                ..
            }) => {
                unanswered.answered = true;
                unanswered.core.on_commit_rejected(partition);
            }
            // Handed back to the core as `unanswered` drops.
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Leaves the group as `member_id` (when joined), best effort.
    pub(super) async fn leave(&self, member_id: Option<&str>) {
        if let Some(member_id) = member_id {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn orders(partition: u32) -> TopicPartition {
        TopicPartition::new("orders", partition)
    }

    fn assignment(member: &str, epoch: i32, partitions: &[u32]) -> MemberAssignment {
        MemberAssignment {
            member_id: member.to_owned(),
            member_epoch: epoch,
            partitions: partitions.iter().map(|p| orders(*p)).collect(),
            heartbeat_interval: Duration::from_millis(300),
        }
    }

    fn member(name: &str, partitions: &[u32], now: Instant) -> ConsumerCore {
        let mut core = ConsumerCore::new();
        core.on_assignment(assignment(name, 1, partitions), now);
        core
    }

    const MAX_POLL: Duration = Duration::from_secs(5);

    #[test]
    fn heartbeats_go_on_while_handling_until_the_processing_limit() {
        let now = Instant::now();
        let joining = ConsumerCore::new();
        assert_eq!(
            next_beat_step(&joining, None, None, false, false, MAX_POLL, now),
            BeatStep::Beat,
            "the join is due at once"
        );
        let core = member("m-1", &[0], now);
        let since = now;
        // Mid-handling, the next heartbeat comes first.
        assert_eq!(
            next_beat_step(&core, Some(since), None, false, false, MAX_POLL, now),
            BeatStep::Wait(Some(now + Duration::from_millis(300)))
        );
        let later = now + Duration::from_millis(300);
        assert_eq!(
            next_beat_step(&core, Some(since), None, false, false, MAX_POLL, later),
            BeatStep::Beat,
            "a handler at work does not hold heartbeats back"
        );
        // Past the processing limit: leave.
        let mut beaten = core.clone();
        beaten.on_heartbeat_acknowledged(since + Duration::from_millis(4_900));
        assert_eq!(
            next_beat_step(
                &beaten,
                Some(since),
                None,
                false,
                false,
                MAX_POLL,
                since + Duration::from_millis(4_950)
            ),
            BeatStep::Wait(Some(since + MAX_POLL)),
            "woken at the limit, before the next heartbeat"
        );
        assert_eq!(
            next_beat_step(
                &beaten,
                Some(since),
                None,
                false,
                false,
                MAX_POLL,
                since + MAX_POLL
            ),
            BeatStep::Leave
        );
        // Left: nothing until the handler is back, then a join.
        let left_at = since + MAX_POLL;
        let fresh = ConsumerCore::new();
        assert_eq!(
            next_beat_step(
                &fresh,
                Some(since),
                Some(left_at),
                false,
                true,
                MAX_POLL,
                left_at
            ),
            BeatStep::Wait(None)
        );
        assert_eq!(
            next_beat_step(&fresh, None, Some(left_at), false, false, MAX_POLL, left_at),
            BeatStep::Rejoin
        );
        assert_eq!(
            next_beat_step(
                &fresh,
                Some(left_at + Duration::from_millis(1)),
                Some(left_at),
                false,
                false,
                MAX_POLL,
                left_at
            ),
            BeatStep::Rejoin,
            "a newer fetch is being handled: the slow one is over"
        );
        // A huge limit never overflows.
        assert!(matches!(
            next_beat_step(&core, Some(since), None, false, false, Duration::MAX, now),
            BeatStep::Wait(Some(_))
        ));
    }

    #[test]
    fn a_let_go_partition_or_an_asked_heartbeat_beats_at_once() {
        let now = Instant::now();
        let core = member("m-1", &[0, 1], now);
        assert_eq!(
            next_beat_step(&core, None, None, true, false, MAX_POLL, now),
            BeatStep::Beat
        );
        assert_eq!(
            next_beat_step(&core, None, None, false, true, MAX_POLL, now),
            BeatStep::Beat
        );
        assert_eq!(
            next_beat_step(&core, None, None, false, false, MAX_POLL, now),
            BeatStep::Wait(Some(now + Duration::from_millis(300)))
        );
    }

    #[test]
    fn only_what_this_member_consumes_is_reported() {
        let now = Instant::now();
        let core = member("m-1", &[0, 1], now);
        let consuming = Consuming {
            member: Some(("m-1".to_owned(), 1)),
            owned: vec![orders(0), orders(1)],
            handling_since: None,
        };
        assert_eq!(
            owned_to_report(&core, &consuming).to_vec(),
            vec![orders(0), orders(1)]
        );
        assert!(
            std::ptr::eq(
                owned_to_report(&core, &consuming),
                consuming.owned.as_slice()
            ),
            "borrowed, not copied"
        );
        let earlier_incarnation = Consuming {
            member: Some(("m-0".to_owned(), 1)),
            ..consuming.clone()
        };
        assert!(owned_to_report(&core, &earlier_incarnation).is_empty());
        let stale_epoch = Consuming {
            member: Some(("m-1".to_owned(), 0)),
            ..consuming.clone()
        };
        assert!(owned_to_report(&core, &stale_epoch).is_empty());
        assert!(
            owned_to_report(&ConsumerCore::new(), &consuming).is_empty(),
            "a join reports nothing"
        );
    }

    /// A commit still in flight when its future is dropped (the run stopped) or whose
    /// request failed goes back to the core, so the next round or the final commits send it
    /// again; an answered one stays decided.
    #[test]
    fn a_commit_left_unanswered_is_handed_back_to_the_core() {
        let now = Instant::now();
        let mut core = member("m-1", &[0], now);
        core.on_start_position(&orders(0), 0);
        core.on_fetched(&orders(0), 0, 3);
        for offset in 0..3 {
            core.on_handled(&orders(0), offset);
        }
        let previous = core.committed(&orders(0));
        let offset = core.take_commit(&orders(0)).expect("a commit to send");
        drop(Unanswered {
            core: &mut core,
            partition: &orders(0),
            offset,
            previous,
            answered: false,
        });
        assert_eq!(core.take_commit(&orders(0)), Some(3), "sent again");
        drop(Unanswered {
            core: &mut core,
            partition: &orders(0),
            offset,
            previous,
            answered: true,
        });
        assert_eq!(core.take_commit(&orders(0)), None, "answered: decided");
    }

    #[test]
    fn news_of_another_incarnation_drops_the_positions() {
        let now = Instant::now();
        let mut core = member("m-1", &[0, 1], now);
        core.on_start_position(&orders(0), 7);
        // The same member, one partition revoked: the other keeps its position.
        assert!(apply_news(
            &mut core,
            &Membership::Assigned {
                assignment: assignment("m-1", 1, &[0]),
                generation: 0
            },
            0,
            now
        ));
        assert_eq!(core.position(&orders(0)), Some(7));
        assert!(!core.owns(&orders(1)));
        // Rejoined as another member (expired meanwhile): everything starts again.
        assert!(apply_news(
            &mut core,
            &Membership::Assigned {
                assignment: assignment("m-2", 1, &[0]),
                generation: 0
            },
            0,
            now
        ));
        assert_eq!(core.member_id(), Some("m-2"));
        assert_eq!(core.position(&orders(0)), None, "looked up again");
        // A new epoch of a static member, too.
        core.on_start_position(&orders(0), 9);
        assert!(apply_news(
            &mut core,
            &Membership::Assigned {
                assignment: assignment("m-2", 2, &[0]),
                generation: 0
            },
            0,
            now
        ));
        assert_eq!(core.position(&orders(0)), None);
        // Left for slow handling: nothing owned until the next assignment.
        assert!(apply_news(&mut core, &Membership::LeftSlow, 0, now));
        assert!(core.owned().is_empty());
        assert_eq!(core.member_id(), None);
    }

    #[test]
    fn answers_from_before_a_reconnect_are_stale() {
        let now = Instant::now();
        let mut core = ConsumerCore::new();
        let old = Membership::Assigned {
            assignment: assignment("m-1", 1, &[0]),
            generation: 2,
        };
        assert!(!apply_news(&mut core, &old, 3, now));
        assert!(core.owned().is_empty());
        let fresh = Membership::Assigned {
            assignment: assignment("m-1", 1, &[0]),
            generation: 3,
        };
        assert!(apply_news(&mut core, &fresh, 3, now));
        assert_eq!(core.owned(), &[orders(0)]);
        assert!(!apply_news(&mut core, &Membership::Joining, 0, now));
    }

    #[test]
    fn transient_failures_are_recovered_and_the_rest_end_the_run() {
        let broker = |code| {
            ConsumeError::Broker(RequestError::Broker {
                code,
                message: String::new(),
                retry_after_ms: 0,
            })
        };
        let stream = ConsumeError::Broker(RequestError::Stream("reset".into()));
        let timeout = ConsumeError::Broker(RequestError::Timeout(Duration::from_secs(30)));
        assert_eq!(recovery_for(&stream, true), Recovery::Reconnect);
        assert_eq!(recovery_for(&timeout, true), Recovery::Reconnect);
        assert_eq!(recovery_for(&stream, false), Recovery::Retry);
        assert_eq!(recovery_for(&timeout, false), Recovery::Retry);
        for code in [
            ErrorCode::Throttled,
            ErrorCode::Storage,
            ErrorCode::Internal,
            ErrorCode::RegistryUnavailable,
            ErrorCode::NotPartitionOwner,
        ] {
            assert_eq!(
                recovery_for(&broker(code), true),
                Recovery::Retry,
                "{code:?}"
            );
        }
        assert_eq!(
            recovery_for(&broker(ErrorCode::UnknownTopic), true),
            Recovery::RetryUnknown
        );
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::GroupFull,
            ErrorCode::TooLarge,
            ErrorCode::Unknown(999),
        ] {
            assert_eq!(
                recovery_for(&broker(code), true),
                Recovery::Fatal,
                "{code:?}"
            );
        }
        let unprocessable = ConsumeError::Unprocessable {
            topic: "orders".into(),
            partition: 0,
            offset: 1,
            reason: "poison".into(),
        };
        assert_eq!(recovery_for(&unprocessable, true), Recovery::Fatal);
    }

    #[test]
    fn backoffs_double_with_jitter_up_to_the_cap_and_honour_the_broker() {
        let policy = RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
            max_attempts: None,
            deadline: None,
        };
        assert_eq!(
            backoff_delay(&policy, 1, Duration::ZERO, 0.999_999),
            Duration::from_millis(50).mul_f64(0.999_999)
        );
        assert_eq!(
            backoff_delay(&policy, 3, Duration::ZERO, 0.5),
            Duration::from_millis(200).mul_f64(0.5),
            "the ceiling doubles per failure"
        );
        assert_eq!(
            backoff_delay(&policy, 40, Duration::ZERO, 0.5),
            Duration::from_secs(1).mul_f64(0.5),
            "capped"
        );
        assert_eq!(
            backoff_delay(&policy, 1, Duration::from_millis(700), 0.5),
            Duration::from_millis(700),
            "at least what the broker asked for"
        );
        assert_eq!(
            backoff_delay(&policy, 0, Duration::ZERO, 0.0),
            Duration::ZERO
        );
    }
}
