//! The run loop: partitions in turn, a fetch ahead, and each record processed to the end
//! (inbox, breaker, retries, dead letter), while the heartbeat task (`membership`) keeps the
//! membership alive on its own. The loop takes the task's news between partitions (a revoked
//! partition is let go before it is consumed again) and tells it what it consumes and when
//! it is handling a fetch. A failed round is recovered from (`membership::Link::recover`):
//! retried after a backoff, or over a new connection, after which nothing is consumed until a
//! heartbeat on it answered. Heartbeat timing, positions and commit decisions are the core's
//! (`core`): the loop does the I/O and reports back (a commit that got no answer is handed
//! back, to be sent again). At the end of a run the heartbeat task is stopped (a join in
//! flight answered first) and the run leaves as the member it names.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use herald_broker_client::{Fetched, RequestError};
use herald_wire::batch::next_offset_after;
use herald_wire::groups::TopicPartition;
use herald_wire::ErrorCode;
use tokio::sync::{watch, Notify};

use crate::policy::backoff::RetryDecision;
use crate::policy::breaker::{BreakerConfig, Permission, SharedBreaker};

use super::core::{ConsumerCore, FetchFrom, HeartbeatError};
use super::membership::{apply_news, Consuming, News, Recovery};
use super::{
    ConsumeError, ConsumedRecord, FetchedBuffer, HandlerError, RawConsumer, RunSummary,
    IDEMPOTENCY_KEY_HEADER,
};

/// How long an idle run loop (nothing owned, or the breaker open) waits before looking again;
/// news from the heartbeat task (the first assignment, a rebalance) wakes it at once.
const IDLE_WAIT: Duration = Duration::from_millis(50);

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The breaker and counters shared by a run's lanes (the breaker is never locked across an
/// await, and not at all per record while it is closed and steady).
pub(super) struct Progress {
    breaker: SharedBreaker,
    processed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    deduplicated: AtomicU64,
    corrupt_batches: AtomicU64,
    /// Memberships the heartbeat task lost so far (it counts one before telling the loop).
    losses: Arc<AtomicU64>,
    /// The losses the loop has applied (dropping what the lost member owned).
    losses_applied: AtomicU64,
    /// The run is ending with the heartbeat task's error: the record being handled is let
    /// finish, nothing after it is handled (nor is it retried), nothing more is fetched.
    halted: AtomicBool,
}

impl Progress {
    fn new(config: BreakerConfig, losses: Arc<AtomicU64>) -> Self {
        Self {
            breaker: SharedBreaker::new(config),
            processed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            corrupt_batches: AtomicU64::new(0),
            losses,
            losses_applied: AtomicU64::new(0),
            halted: AtomicBool::new(false),
        }
    }

    /// The run ends (the heartbeat task failed for good): handling stops after the record
    /// in hand.
    fn halt(&self) {
        self.halted.store(true, Ordering::Relaxed);
    }

    /// Whether the run is ending (see [`Progress::halt`]).
    pub(super) fn halted(&self) -> bool {
        self.halted.load(Ordering::Relaxed)
    }

    /// Whether handling stops before the next record: the member lost its partitions
    /// ([`Progress::member_gone`]) or the run is ending ([`Progress::halted`]). Relaxed loads.
    pub(super) fn should_stop(&self) -> bool {
        self.member_gone() || self.halted()
    }

    /// Whether the member lost its partitions (expired, fenced, or left for slow handling)
    /// since the loop last took the heartbeat task's news: the rest of the fetch being
    /// handled is no longer this member's to handle (its new owner gets it from the last
    /// commit), so handling stops before the next record. One relaxed load per record.
    pub(super) fn member_gone(&self) -> bool {
        self.losses.load(Ordering::Relaxed) != self.losses_applied.load(Ordering::Relaxed)
    }

    /// Whether fetching is pointless now (the breaker would refuse every record).
    fn paused(&self) -> bool {
        self.breaker.is_rejecting(Instant::now)
    }

    /// One breaker permission for a record.
    fn allow(&self, now: Instant) -> bool {
        matches!(self.breaker.allow(|| now), Permission::Allowed)
    }

    /// Records an outcome; `gauge` is set to the breaker's state when it may have changed.
    fn record(&self, success: bool, now: Instant, gauge: &metrics::Gauge) {
        if let Some(state) = self.breaker.record(success, now) {
            gauge.set(state.gauge());
        }
    }

    fn summary(&self) -> RunSummary {
        RunSummary {
            processed: self.processed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            corrupt_batches: self.corrupt_batches.load(Ordering::Relaxed),
        }
    }
}

/// A fetch issued before its records are needed, so the broker reads and sends them while
/// the handler works through the previous fetch. At most one per run (bounded by
/// `fetch_bytes_max`); dropped unused (the partition moved, the breaker stopped processing
/// early, the run ended), it is cancelled.
struct Prefetch {
    partition: TopicPartition,
    position: i64,
    handle: tokio::task::JoinHandle<Result<Fetched, RequestError>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What consuming one partition works on: the partition, the one visited after it, and the
/// run's state.
struct PartitionRun<'a, H> {
    partition: &'a TopicPartition,
    after: &'a TopicPartition,
    core: &'a mut ConsumerCore,
    prefetch: &'a mut Option<Prefetch>,
    progress: &'a Progress,
    handler: &'a H,
    beats: &'a BeatLink,
}

/// The run loop's end of its heartbeat task: the task's news, what the loop tells it, and
/// the loop's recovery state. Both channels hold one value (the latest), so neither side can
/// fall behind the other.
struct BeatLink {
    news: watch::Receiver<News>,
    consuming: watch::Sender<Consuming>,
    beat_now: Arc<Notify>,
    /// Assignments answered on a connection older than this are stale: the loop reconnected
    /// since, and consumes again only once a heartbeat on the new connection answered.
    fresh_from: u64,
    /// Rounds failed, as the rounds since that carried something lowered the count
    /// ([`failures_after`]): the exponent of the next backoff.
    failures: u32,
    /// Rounds failed in a row, reset by any round that succeeded, idle or not: what an
    /// unknown topic is given up after ([`super::UNKNOWN_TOPIC_ATTEMPTS_MAX`]), as before the
    /// backoff's count stopped being reset by idle rounds.
    failed_in_a_row: u32,
}

impl BeatLink {
    /// Applies the heartbeat task's latest news to the core (a revoked partition is dropped,
    /// a lost membership drops everything) and tells the task what is consumed now.
    fn take_news(&mut self, core: &mut ConsumerCore, progress: &Progress) {
        if !self.news.has_changed().unwrap_or(false) {
            return;
        }
        let news = self.news.borrow_and_update().clone();
        if apply_news(core, &news.membership, self.fresh_from, Instant::now()) {
            self.report(core);
        }
        // The latest loss is applied (or, for an assignment gone stale, was dropped with
        // everything at the reconnect that made it stale).
        progress
            .losses_applied
            .store(news.losses, Ordering::Relaxed);
    }

    /// Tells the heartbeat task which member the loop consumes as, and what (only when that
    /// changed: the task beats at once to report a let-go partition).
    fn report(&self, core: &ConsumerCore) {
        let member = core
            .member_id()
            .map(|id| (id.to_owned(), core.member_epoch()));
        self.consuming.send_if_modified(|consuming| {
            if consuming.member == member && consuming.owned == core.owned() {
                return false;
            }
            consuming.member = member;
            consuming.owned = core.owned().to_vec();
            true
        });
    }

    /// Marks the start of handling a fetch, which the heartbeat task holds against
    /// `max_poll_interval`. Without waking it (this is done per fetch): it reads the mark at
    /// its next wake, at the latest its next heartbeat, so handling past the limit is noticed
    /// at most one heartbeat interval late (see `Consuming::handling_since`).
    fn handling_started(&self, since: Instant) {
        self.consuming.send_if_modified(|consuming| {
            consuming.handling_since = Some(since);
            false
        });
    }

    /// Marks the end of handling a fetch; wakes the heartbeat task only when `member_lost`
    /// (the member was lost meanwhile: having left for slow handling, the task waits for the
    /// handler's return to join again). Otherwise the task reads it at its next wake.
    fn handling_ended(&self, member_lost: bool) {
        self.consuming.send_if_modified(|consuming| {
            consuming.handling_since = None;
            member_lost
        });
    }

    /// A rejected commit asks the core for a heartbeat at once (to learn the new
    /// assignment): passed on to the heartbeat task (notifications coalesce).
    fn beat_if_asked(&self, core: &ConsumerCore) {
        if core.member_id().is_some() && core.next_heartbeat_at().is_none() {
            self.beat_now.notify_one();
        }
    }
}

/// What a round's fetches brought: what its success does to the count of failed rounds in a
/// row (the backoff's exponent). A round carried the most any of its fetches did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Carried {
    /// No fetch answered: an idle round (nothing owned, e.g. waiting after a reconnect for a
    /// heartbeat on the new connection; the breaker open; the run ending).
    Nothing,
    /// Fetches answered, without records.
    Answers,
    /// A fetch answered with records.
    Records,
}

/// The failures counted for the backoff after a round that succeeded carrying `carried`.
/// Records prove the connection carries work: the count starts over. Answers without records
/// halve it (the sporadic failures of an idle partition do not pile up, and the count a long
/// outage ran up is gone within a few rounds). An idle round proves nothing and leaves it:
/// it used to start the count over, so a connection that came up and failed again before
/// carrying anything was retried after the first, shortest backoff every time.
fn failures_after(failures: u32, carried: Carried) -> u32 {
    match carried {
        Carried::Nothing => failures,
        Carried::Answers => failures / 2,
        Carried::Records => 0,
    }
}

impl RawConsumer {
    /// Consumes until `stop` completes, then commits what was handled and leaves the group.
    /// Transient failures are recovered from (see the module documentation); the run ends
    /// early only with a fatal error (after leaving the group, without the final commits).
    ///
    /// When the heartbeat task fails for good (a fatal error), the record being handled is
    /// let finish rather than cancelled mid-way: no record after it is handled, it is not
    /// retried, nothing more is fetched, and the handler gets at most `max_poll_interval`
    /// (or until `stop` completes) to return; a handler not back by then is dropped. Then
    /// the run ends with the heartbeat task's error. A `stop` still cuts a handler short.
    pub async fn run<H, F>(
        &self,
        handler: H,
        stop: impl Future<Output = ()>,
    ) -> Result<RunSummary, ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        tokio::pin!(stop);
        let mut core = ConsumerCore::new();
        let mut prefetch: Option<Prefetch> = None;
        let losses = Arc::new(AtomicU64::new(0));
        let progress = Progress::new(self.config.breaker, losses.clone());
        let (consuming, consuming_rx) = watch::channel(Consuming::default());
        let (news_tx, news) = watch::channel(News::joining());
        let beat_now = Arc::new(Notify::new());
        // Heartbeats go on in their own task whatever the handler does; it is stopped when
        // the run ends (aborted if this future is dropped).
        let mut heartbeats = self.heartbeats(consuming_rx, news_tx, beat_now.clone(), losses);
        let mut beats = BeatLink {
            news,
            consuming,
            beat_now,
            fresh_from: 0,
            failures: 0,
            failed_in_a_row: 0,
        };
        let ended = loop {
            let work = async {
                let generation = self.client.generation();
                match self
                    .round(&mut core, &mut prefetch, &progress, &handler, &mut beats)
                    .await
                {
                    Ok(carried) => {
                        beats.failures = failures_after(beats.failures, carried);
                        beats.failed_in_a_row = 0;
                        Ok(())
                    }
                    // The run is ending (the heartbeat task failed): nothing to recover for.
                    Err(error) if progress.halted() => Err(error),
                    Err(error) => {
                        beats.failures = beats.failures.saturating_add(1);
                        beats.failed_in_a_row = beats.failed_in_a_row.saturating_add(1);
                        self.recover_round(error, generation, &mut core, &mut prefetch, &mut beats)
                            .await
                    }
                }
            };
            tokio::pin!(work);
            tokio::select! {
                _ = &mut stop => break Ok(()),
                error = heartbeats.failed() => {
                    // The record in hand is let finish (see above), bounded by
                    // `max_poll_interval`; its result does not matter any more.
                    progress.halt();
                    tokio::select! {
                        _ = &mut stop => {}
                        _ = tokio::time::timeout(self.config.max_poll_interval, &mut work) => {}
                    }
                    break Err(error);
                }
                result = &mut work => {
                    if let Err(error) = result {
                        break Err(error);
                    }
                }
            }
        };
        // Handling is over: the final commits are not held against `max_poll_interval`.
        beats.handling_ended(false);
        drop(prefetch);
        // What was handled before the stop is committed before leaving (a stop in the middle
        // of a fetch drops the commit that would have followed it; a commit in flight at the
        // stop, or one that failed in the last round, was handed back to the core and is sent
        // here); a commit that fails for another reason than a moved partition is the run's
        // error, after leaving.
        let committed = match ended {
            Ok(()) => {
                let mut committed = Ok(());
                for partition in core.owned().to_vec() {
                    if let Err(error) = self.commit_decided(&partition, &mut core).await {
                        committed = Err(error);
                        break;
                    }
                }
                committed
            }
            Err(error) => Err(error),
        };
        // The heartbeat task is stopped, not aborted: a join in flight is answered first, so
        // the member it made is the one left (not a ghost holding partitions until its
        // session expires). It heartbeats no more: nothing after the leave. The core's member
        // is a fallback for a task cancelled by the runtime (a stale one is refused, harmless).
        let member = heartbeats
            .stop()
            .await
            .or_else(|| core.member_id().map(str::to_owned));
        self.leave(member.as_deref()).await;
        committed?;
        let summary = progress.summary();
        Ok(summary)
    }

    /// Sends the commit the core decides for `partition`, if any; one that gets no answer is
    /// handed back to the core (see [`RawConsumer::commit`]), to be sent again.
    async fn commit_decided(
        &self,
        partition: &TopicPartition,
        core: &mut ConsumerCore,
    ) -> Result<(), ConsumeError> {
        let previous = core.committed(partition);
        match core.take_commit(partition) {
            Some(offset) => self.commit(partition, offset, previous, core).await,
            None => Ok(()),
        }
    }

    /// One round: every owned partition in turn, the heartbeat task's news taken before each
    /// (so a revoked partition is let go before it is consumed again, and a lost membership
    /// stops the round); idle for a moment when there is nothing to consume. Nothing is
    /// fetched once the run is ending ([`Progress::halted`]).
    async fn round<H, F>(
        &self,
        core: &mut ConsumerCore,
        prefetch: &mut Option<Prefetch>,
        progress: &Progress,
        handler: &H,
        beats: &mut BeatLink,
    ) -> Result<Carried, ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        beats.take_news(core, progress);
        beats.beat_if_asked(core);
        if progress.halted() {
            return Ok(Carried::Nothing);
        }
        if progress.paused() || core.owned().is_empty() {
            match tokio::time::timeout(IDLE_WAIT, beats.news.changed()).await {
                // Taken at the start of the next round.
                Ok(Ok(())) => beats.news.mark_changed(),
                // The heartbeat task ended: the run learns why from its handle.
                Ok(Err(_)) => tokio::time::sleep(IDLE_WAIT).await,
                Err(_) => {}
            }
            return Ok(Carried::Nothing);
        }
        let owned = core.owned().to_vec();
        let mut carried = Carried::Nothing;
        for (index, partition) in owned.iter().enumerate() {
            if progress.halted() {
                break;
            }
            if index > 0 {
                beats.take_news(core, progress);
                beats.beat_if_asked(core);
            }
            // The partition visited after this one (itself when it is the only one).
            let after = owned.get((index + 1) % owned.len()).unwrap_or(partition);
            let fetched = self
                .consume_partition(PartitionRun {
                    partition,
                    after,
                    core: &mut *core,
                    prefetch: &mut *prefetch,
                    progress,
                    handler,
                    beats: &*beats,
                })
                .await?;
            carried = carried.max(fetched);
        }
        Ok(carried)
    }

    /// After a failed round (`generation`: the connection it started on): the fetch issued
    /// ahead is dropped, the failure recovered from (a backoff, a new connection) or the
    /// run's error. Over a new connection, whether the member survived is only known from a
    /// heartbeat on it (a restarted broker forgot every member): until one answers nothing
    /// is consumed, and what was owned starts again from its committed offset.
    async fn recover_round(
        &self,
        error: ConsumeError,
        generation: u64,
        core: &mut ConsumerCore,
        prefetch: &mut Option<Prefetch>,
        beats: &mut BeatLink,
    ) -> Result<(), ConsumeError> {
        *prefetch = None;
        let recovery = self
            .client
            .recover(
                error,
                beats.failures,
                beats.failed_in_a_row,
                generation,
                &self.config.reconnect_policy(),
                &self.interruptions,
            )
            .await?;
        if recovery == Recovery::Reconnect {
            core.on_heartbeat_error(HeartbeatError::UnknownMember, Instant::now());
            beats.fresh_from = generation.saturating_add(1);
            beats.report(core);
            beats.beat_now.notify_one();
        }
        Ok(())
    }

    /// Fetches `partition` at the core's position (or takes the fetch issued ahead for it),
    /// hands its records to the handler, commits what the core decides; meanwhile the fetch
    /// for `after`, the partition visited next, is already on its way. Returns what the fetch
    /// brought.
    async fn consume_partition<H, F>(
        &self,
        run: PartitionRun<'_, H>,
    ) -> Result<Carried, ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let PartitionRun {
            partition,
            after,
            core,
            prefetch,
            progress,
            handler,
            beats,
        } = run;
        let position = match core.fetch_from(partition) {
            Some(FetchFrom::Offset(position)) => position,
            Some(FetchFrom::Start) => {
                let position = self.start_position(partition, true).await?;
                core.on_start_position(partition, position);
                position
            }
            Some(FetchFrom::Reset) => {
                let position = self.start_position(partition, false).await?;
                tracing::warn!(
                    group = %self.config.group,
                    %partition,
                    position,
                    "the consumer's position is outside the partition's log (retention, or a topic created again): restarting from the reset policy's position"
                );
                // Rare: a handle registered here, not once per partition.
                metrics::counter!(
                    crate::metrics::CONSUMER_OFFSET_RESETS,
                    "topic" => partition.topic.clone(),
                    "group" => self.config.group.clone(),
                    "partition" => partition.partition.to_string(),
                )
                .increment(1);
                core.on_start_position(partition, position);
                position
            }
            // Not owned (any more): nothing to do.
            None => return Ok(Carried::Nothing),
        };
        let wait = if core.owned().len() > 1 {
            Duration::ZERO
        } else {
            self.config.fetch_wait
        };
        let ahead = prefetch
            .take()
            .filter(|ahead| ahead.partition == *partition && ahead.position == position);
        let fetched = match ahead {
            Some(mut ahead) => match (&mut ahead.handle).await {
                Ok(fetched) => fetched,
                Err(_) => self.fetch(partition, position, wait).await,
            },
            None => self.fetch(partition, position, wait).await,
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(RequestError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                ..
            }) => {
                // Retention removed what we were at: restart from the reset policy.
                core.on_offset_out_of_range(partition);
                return Ok(Carried::Answers);
            }
            Err(error) => return Err(error.into()),
        };
        let carried = if fetched.batches.is_empty() {
            Carried::Answers
        } else {
            Carried::Records
        };
        // Ask for what comes next while these records are handled (nothing when this fetch
        // came back empty: the next one long-polls as usual).
        let ahead_position = if after == partition {
            next_offset_after(&fetched.batches)
        } else {
            core.position(after)
        };
        if let Some(ahead_position) = ahead_position {
            *prefetch = Some(self.prefetch(after, ahead_position, wait));
            // Let the prefetch's request go out before these records are checked and handled:
            // on a runtime with one worker thread it (and quinn's connection driver sending
            // it) would otherwise wait for the whole fetch's handling, and the broker would
            // idle meanwhile (the broker bench's consume phase went 1.5x faster at 1 KB).
            tokio::task::yield_now().await;
        }
        let high_watermark = fetched.high_watermark;
        let source = FetchedBuffer::new(
            partition.topic.as_str(),
            partition.partition,
            fetched.batches,
        );
        // One clock read per fetch for the breaker's permissions (see `process`), and the
        // start of the handling the heartbeat task holds against `max_poll_interval`.
        let fetched_at = Instant::now();
        beats.handling_started(fetched_at);
        let handled = self
            .process_fetch(&source, partition, core, fetched_at, progress, handler)
            .await;
        beats.handling_ended(progress.member_gone());
        // Records the handler did not get to (the breaker left them, the member lost the
        // partition, a request failed) are fetched again from the committable offset.
        core.on_fetch_finished(partition);
        handled?;
        let next = core.position(partition).unwrap_or(position);
        metrics::gauge!(
            crate::metrics::CONSUMER_LAG,
            "topic" => partition.topic.clone(),
            "group" => self.config.group.clone(),
            "partition" => partition.partition.to_string(),
        )
        .set((high_watermark - next).max(0) as f64);
        self.commit_decided(partition, core).await?;
        // A corrupt batch ended the reading, and every record before it was handled (and
        // committed, above): stop, or skip it to the dead-letter topic. Not reached (the
        // breaker left records, the member lost the partition, the run is ending), it is met
        // again by the fetch that resumes before it.
        if let Some(corruption) = source.corruption() {
            if !progress.should_stop() && core.position(partition) == Some(corruption.offset) {
                // Boxed: the rare path keeps its future out of every fetch's.
                tracing::error!(
                    group = %self.config.group,
                    %partition,
                    offset = corruption.offset,
                    "corrupt batch fetched: {}",
                    corruption.reason
                );
                Box::pin(self.corrupt_batch(partition, &source, corruption, high_watermark, core))
                    .await?;
                progress.corrupt_batches.fetch_add(1, Ordering::Relaxed);
                self.commit_decided(partition, core).await?;
            }
        }
        Ok(carried)
    }

    /// The fetch of `partition` at `position`, owning what it needs (so it can also run as
    /// a background task).
    fn fetch(
        &self,
        partition: &TopicPartition,
        position: i64,
        wait: Duration,
    ) -> impl Future<Output = Result<Fetched, RequestError>> + Send + 'static {
        let client = self.client.connection();
        let TopicPartition {
            topic,
            partition: number,
        } = partition.clone();
        let max_bytes = self.config.fetch_bytes_max;
        async move {
            client
                .fetch(&topic, number, position, max_bytes, wait, 1)
                .await
        }
    }

    /// Issues the fetch of `partition` at `position` in the background.
    fn prefetch(&self, partition: &TopicPartition, position: i64, wait: Duration) -> Prefetch {
        Prefetch {
            partition: partition.clone(),
            position,
            handle: tokio::spawn(self.fetch(partition, position, wait)),
        }
    }

    /// Processes one record to the end (handled, deduplicated or dead-lettered): `true`;
    /// `false` when the breaker refused it, or it failed and would be retried while the run
    /// is ending (left for later). `fetched_at` dates the breaker's
    /// permission and a success: a fetch is processed within moments, and only a failure
    /// (which may open the breaker) needs a fresh time to date the open period from.
    pub(super) async fn process<H, F>(
        &self,
        record: ConsumedRecord,
        fetched_at: Instant,
        progress: &Progress,
        handler: &H,
    ) -> Result<bool, ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let idempotency_key = match &self.config.inbox {
            Some(_) => record
                .header(IDEMPOTENCY_KEY_HEADER)
                .map(Bytes::copy_from_slice),
            None => None,
        };
        // The key is claimed before handling, so a record with the same key on another lane
        // waits for this one instead of being handled beside it; the claim is released when
        // this returns, recorded only on success.
        let mut claim = None;
        if let (Some(inbox), Some(key)) = (&self.config.inbox, &idempotency_key) {
            match inbox
                .claim(key, now_ms())
                .await
                .map_err(|e| self.unprocessable(&record, e.to_string()))?
            {
                crate::inbox::Admission::Processed => {
                    progress.deduplicated.fetch_add(1, Ordering::Relaxed);
                    self.metrics.deduplicated.increment(1);
                    return Ok(true);
                }
                crate::inbox::Admission::Claimed(held) => claim = Some(held),
            }
        }
        // One breaker permission per record (a half-open probe is a record), its retries
        // included.
        if !progress.allow(fetched_at) {
            return Ok(false);
        }
        let mut attempts = 0u32;
        // Retries are timed from the first failure (the clock is read on failures only).
        let mut first_failure: Option<Instant> = None;
        loop {
            attempts += 1;
            let (kind, reason) = match handler(record.clone()).await {
                Ok(()) => {
                    progress.record(true, fetched_at, &self.metrics.breaker_state);
                    progress.processed.fetch_add(1, Ordering::Relaxed);
                    self.metrics.processed.increment(1);
                    if let Some(claim) = claim.take() {
                        claim
                            .record(now_ms())
                            .map_err(|e| self.unprocessable(&record, e.to_string()))?;
                    }
                    return Ok(true);
                }
                Err(HandlerError::Retryable(reason)) => {
                    let now = Instant::now();
                    progress.record(false, now, &self.metrics.breaker_state);
                    match self.config.retry.decide(
                        attempts,
                        now - *first_failure.get_or_insert(now),
                        rand::random::<f64>(),
                    ) {
                        // The run is ending: the record is left for later (its partition's next
                        // consumer gets it from the last commit), not retried.
                        RetryDecision::RetryAfter(_) if progress.halted() => return Ok(false),
                        RetryDecision::RetryAfter(delay) => {
                            progress.retried.fetch_add(1, Ordering::Relaxed);
                            self.metrics.retried.increment(1);
                            tokio::time::sleep(delay).await;
                            if progress.halted() {
                                return Ok(false);
                            }
                            continue;
                        }
                        RetryDecision::GiveUp(_) => ("retries-exhausted", reason),
                    }
                }
                Err(
                    error @ (HandlerError::Fatal(_)
                    | HandlerError::Deserialization(_)
                    | HandlerError::UnknownSchema(_)),
                ) => {
                    let kind = error.fatal_kind().unwrap_or("fatal");
                    let (HandlerError::Fatal(reason)
                    | HandlerError::Deserialization(reason)
                    | HandlerError::UnknownSchema(reason)
                    | HandlerError::Retryable(reason)) = error;
                    (kind, reason)
                }
            };
            // Boxed: the rare path keeps its (large) future out of every record's.
            Box::pin(self.dead_letter(&record, kind, &reason, attempts)).await?;
            progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(
                crate::metrics::CONSUMER_DEAD_LETTERED,
                "topic" => self.config.topic.clone(),
                "group" => self.config.group.clone(),
                "kind" => kind,
            )
            .increment(1);
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that keeps coming up and failing again backs off longer each time: the
    /// idle rounds in between (waiting after a reconnect for a heartbeat on the new
    /// connection) do not start the count of failures over.
    #[test]
    fn only_rounds_that_carried_something_lower_the_failure_count() {
        let mut failures = 0u32;
        for _ in 0..4 {
            // A failed round, then idle ones on the new connection.
            failures = failures.saturating_add(1);
            for _ in 0..3 {
                failures = failures_after(failures, Carried::Nothing);
            }
        }
        assert_eq!(failures, 4, "idle rounds leave the count");
        assert_eq!(
            failures_after(failures, Carried::Answers),
            2,
            "answers without records halve it"
        );
        assert_eq!(failures_after(1, Carried::Answers), 0);
        let mut outage = u32::MAX;
        for _ in 0..32 {
            outage = failures_after(outage, Carried::Answers);
        }
        assert_eq!(outage, 0, "a long outage's count is gone within 32 rounds");
        assert_eq!(
            failures_after(failures, Carried::Records),
            0,
            "records start it over"
        );
        assert_eq!(
            Carried::Nothing.max(Carried::Records).max(Carried::Answers),
            Carried::Records,
            "a round carried the most any of its fetches did"
        );
    }
}
