//! The run loop: membership, partitions in turn, a fetch ahead, and each record processed
//! to the end (inbox, breaker, retries, dead letter). Heartbeat timing, positions and
//! commit decisions are the core's (`core`): the loop does the I/O and reports back.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use herald_broker_client::{Fetched, RequestError};
use herald_wire::batch::next_offset_after;
use herald_wire::groups::TopicPartition;
use herald_wire::ErrorCode;

use crate::policy::backoff::RetryDecision;
use crate::policy::breaker::{BreakerConfig, Permission, SharedBreaker};

use super::core::{ConsumerCore, FetchFrom};
use super::{
    ConsumeError, ConsumedRecord, FetchedBuffer, HandlerError, RawConsumer, RunSummary,
    IDEMPOTENCY_KEY_HEADER,
};

fn now_ms() -> i64 {
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
}

impl Progress {
    fn new(config: BreakerConfig) -> Self {
        Self {
            breaker: SharedBreaker::new(config),
            processed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
        }
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
}

impl RawConsumer {
    /// Consumes until `stop` completes, then leaves the group.
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
        let progress = Progress::new(self.config.breaker);
        loop {
            if core.heartbeat_due(Instant::now()) {
                // The core drops the positions of partitions no longer owned.
                self.heartbeat(&mut core).await?;
            }
            let paused = progress.paused();
            let work = async {
                if paused || core.owned().is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Ok::<_, ConsumeError>(());
                }
                let owned = core.owned().to_vec();
                for (index, partition) in owned.iter().enumerate() {
                    // The partition visited after this one (itself when it is the only one).
                    let after = owned.get((index + 1) % owned.len()).unwrap_or(partition);
                    self.consume_partition(PartitionRun {
                        partition,
                        after,
                        core: &mut core,
                        prefetch: &mut prefetch,
                        progress: &progress,
                        handler: &handler,
                    })
                    .await?;
                }
                Ok(())
            };
            tokio::select! {
                _ = &mut stop => break,
                result = work => result?,
            }
        }
        // What was handled before the stop is committed before leaving (a stop in the middle
        // of a fetch drops the commit that would have followed it); a commit that fails for
        // another reason than a moved partition is the run's error, after leaving.
        let mut committed = Ok(());
        for commit in core.take_commits() {
            if let Err(error) = self
                .commit(&commit.partition, commit.offset, &mut core)
                .await
            {
                committed = Err(error);
                break;
            }
        }
        self.leave(&core).await;
        committed?;
        let summary = progress.summary();
        Ok(summary)
    }

    /// Fetches `partition` at the core's position (or takes the fetch issued ahead for it),
    /// hands its records to the handler, commits what the core decides; meanwhile the fetch
    /// for `after`, the partition visited next, is already on its way.
    async fn consume_partition<H, F>(&self, run: PartitionRun<'_, H>) -> Result<(), ConsumeError>
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
            None => return Ok(()),
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
                return Ok(());
            }
            Err(error) => return Err(error.into()),
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
        }
        let high_watermark = fetched.high_watermark;
        let source = FetchedBuffer::new(
            partition.topic.as_str(),
            partition.partition,
            fetched.batches.into(),
        );
        // One clock read per fetch for the breaker's permissions (see `process`).
        let fetched_at = Instant::now();
        self.process_fetch(&source, partition, core, fetched_at, progress, handler)
            .await?;
        // Records the handler did not get to are fetched again from the committable offset.
        core.on_fetch_finished(partition);
        let next = core.position(partition).unwrap_or(position);
        metrics::gauge!(
            crate::metrics::CONSUMER_LAG,
            "topic" => partition.topic.clone(),
            "group" => self.config.group.clone(),
            "partition" => partition.partition.to_string(),
        )
        .set((high_watermark - next).max(0) as f64);
        if let Some(offset) = core.take_commit(partition) {
            self.commit(partition, offset, core).await?;
        }
        Ok(())
    }

    /// The fetch of `partition` at `position`, owning what it needs (so it can also run as
    /// a background task).
    fn fetch(
        &self,
        partition: &TopicPartition,
        position: i64,
        wait: Duration,
    ) -> impl Future<Output = Result<Fetched, RequestError>> + Send + 'static {
        let client = self.client.clone();
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
    /// `false` when the breaker refused it (left for later). `fetched_at` dates the breaker's
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
        if let (Some(inbox), Some(key)) = (&self.config.inbox, &idempotency_key) {
            if inbox
                .seen(key, now_ms())
                .map_err(|e| self.unprocessable(&record, e.to_string()))?
            {
                progress.deduplicated.fetch_add(1, Ordering::Relaxed);
                self.metrics.deduplicated.increment(1);
                return Ok(true);
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
                    if let (Some(inbox), Some(key)) = (&self.config.inbox, &idempotency_key) {
                        inbox
                            .record(key, now_ms())
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
                        RetryDecision::RetryAfter(delay) => {
                            progress.retried.fetch_add(1, Ordering::Relaxed);
                            self.metrics.retried.increment(1);
                            tokio::time::sleep(delay).await;
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
