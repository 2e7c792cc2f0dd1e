//! `RawConsumer`: group membership and at-least-once processing for raw records.
//!
//! `run(handler)` joins the group, heartbeats at the interval the broker asks for, consumes
//! the partitions it is granted from the committed offset (or the reset policy's offset when
//! nothing is committed), calls the handler record by record (so per-key order is kept),
//! retries a failing record with full-jitter backoff, sends a record that still fails — or
//! fails fatally — to the dead-letter topic with the failure headers, and commits after the
//! handler succeeded (or the record was dead-lettered). While the handler's failure rate trips
//! the circuit breaker, consumption pauses (heartbeats go on) until half-open probes pass.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use std::time::{Duration, Instant};

use herald_broker_client::{BrokerClient, Fetched, RequestError};
use herald_wire::batch::{
    batches, next_offset_after, BatchBuilder, BatchError, BatchView, Header, Record, RecordIter,
};
use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};
use herald_wire::{headers, ErrorCode};

use crate::policy::backoff::{RetryDecision, RetryPolicy};
use crate::policy::breaker::{BreakerConfig, Permission, SharedBreaker};

/// The header carrying a record's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = headers::IDEMPOTENCY_KEY;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Longest error message kept in a dead-letter header, in bytes.
pub const DLQ_MESSAGE_BYTES_MAX: usize = 4096;

/// Where records that cannot be processed go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// `<topic>.dlq`, created on first use.
    Default,
    Topic(String),
    /// Fail the run instead.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPolicy {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group: String,
    pub topic: String,
    /// Static membership: keep partitions across restarts.
    pub instance_id: Option<String>,
    pub retry: RetryPolicy,
    pub dead_letter: DeadLetter,
    pub breaker: BreakerConfig,
    pub reset: ResetPolicy,
    pub fetch_bytes_max: u32,
    pub fetch_wait: Duration,
    /// Records of one partition processed at once (default 1); records with the same key
    /// are always processed one after another, in offset order.
    pub concurrency: usize,
    /// Opt-in inbox: records whose `idempotency-key` header was processed within its window
    /// are skipped (and committed), across restarts.
    pub inbox: Option<std::sync::Arc<crate::inbox::Inbox>>,
}

impl ConsumerConfig {
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            topic: topic.into(),
            instance_id: None,
            retry: RetryPolicy::HANDLER,
            dead_letter: DeadLetter::Default,
            breaker: BreakerConfig::default(),
            reset: ResetPolicy::Earliest,
            fetch_bytes_max: 1024 * 1024,
            fetch_wait: Duration::from_millis(200),
            concurrency: 1,
            inbox: None,
        }
    }
}

/// One fetch's buffer, shared by the records read from it: a record is a few positions
/// into it plus one reference count, so handing records out (and again on a retry) allocates
/// and copies nothing.
pub struct FetchedBuffer {
    topic: String,
    partition: u32,
    bytes: Bytes,
}

impl FetchedBuffer {
    pub fn new(topic: impl Into<String>, partition: u32, bytes: Bytes) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.into(),
            partition,
            bytes,
        })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Where `part` (a slice of this buffer) lies in it.
    fn span(&self, part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.bytes.len()).then_some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    fn get(&self, span: Span) -> &[u8] {
        self.bytes
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }
}

/// A part of a record within its fetched buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// The records of a fetch from `position` on, in order; reading stops at the first corrupt
/// batch, an unreadable record is skipped.
struct FetchedRecords<'a, B> {
    source: &'a Arc<FetchedBuffer>,
    position: i64,
    batches: B,
    /// The batch being read and the offset of its last record read.
    current: Option<(i64, RecordIter<'a>)>,
}

impl<'a> FetchedRecords<'a, ()> {
    fn new(
        source: &'a Arc<FetchedBuffer>,
        position: i64,
    ) -> FetchedRecords<'a, impl Iterator<Item = Result<BatchView<'a>, BatchError>>> {
        FetchedRecords {
            source,
            position,
            batches: batches(source.bytes()),
            current: None,
        }
    }
}

impl<'a, B: Iterator<Item = Result<BatchView<'a>, BatchError>>> Iterator for FetchedRecords<'a, B> {
    type Item = ConsumedRecord;

    fn next(&mut self) -> Option<ConsumedRecord> {
        loop {
            if let Some((offset, records)) = &mut self.current {
                match records.next() {
                    Some(record) => {
                        *offset += 1;
                        let found =
                            record
                                .ok()
                                .filter(|_| *offset >= self.position)
                                .and_then(|view| {
                                    ConsumedRecord::from_view(self.source, *offset, &view)
                                });
                        if found.is_some() {
                            return found;
                        }
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let view = self.batches.next()?.ok()?;
            if view.next_offset() > self.position {
                self.current = Some((view.base_offset() - 1, view.records()));
            }
        }
    }
}

/// The headers of a consumed record, decoded as iterated (`get(name)`, `iter()`).
pub type RecordHeaders<'a> = herald_wire::batch::Headers<'a>;

/// A record handed to the handler. Key, value and headers stay in the fetched buffer;
/// cloning a record (a retry hands the same record again) costs one reference count.
#[derive(Clone)]
pub struct ConsumedRecord {
    source: Arc<FetchedBuffer>,
    offset: i64,
    timestamp_ms: i64,
    key: Option<Span>,
    value: Option<Span>,
    headers: Span,
    header_count: u16,
}

impl ConsumedRecord {
    /// The record `view` (read from `source`'s buffer) at `offset`; `None` when `view` does
    /// not point into `source`.
    pub fn from_view(
        source: &Arc<FetchedBuffer>,
        offset: i64,
        view: &herald_wire::batch::RecordView<'_>,
    ) -> Option<Self> {
        let part = |part: Option<&[u8]>| match part {
            None => Some(None),
            Some(part) => source.span(part).map(Some),
        };
        Some(Self {
            source: source.clone(),
            offset,
            timestamp_ms: view.timestamp_ms,
            key: part(view.key)?,
            value: part(view.value)?,
            headers: source.span(view.headers.raw())?,
            header_count: view.headers.len() as u16,
        })
    }

    pub fn topic(&self) -> &str {
        &self.source.topic
    }

    pub fn partition(&self) -> u32 {
        self.source.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|span| self.source.get(span))
    }

    pub fn value(&self) -> Option<&[u8]> {
        self.value.map(|span| self.source.get(span))
    }

    /// The key as a shared slice of the fetched buffer (no copy).
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key
            .map(|span| self.source.bytes.slice_ref(self.source.get(span)))
    }

    /// The value as a shared slice of the fetched buffer (no copy).
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value
            .map(|span| self.source.bytes.slice_ref(self.source.get(span)))
    }

    pub fn headers(&self) -> RecordHeaders<'_> {
        RecordHeaders::from_validated(self.source.get(self.headers), self.header_count)
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name)
    }
}

impl std::fmt::Debug for ConsumedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumedRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers().iter().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for ConsumedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.topic() == other.topic()
            && self.partition() == other.partition()
            && self.offset == other.offset
            && self.timestamp_ms == other.timestamp_ms
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers().raw() == other.headers().raw()
    }
}

impl Eq for ConsumedRecord {}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Worth retrying (a downstream hiccup).
    Retryable(String),
    /// Never going to work (bad data): straight to the dead-letter topic.
    Fatal(String),
    /// The payload cannot be decoded: straight to the dead-letter topic.
    Deserialization(String),
    /// The payload's schema ID is not in the registry: straight to the dead-letter topic.
    UnknownSchema(String),
}

impl HandlerError {
    /// The `herald.dlq.error-kind` of a record that failed this way without retries.
    fn fatal_kind(&self) -> Option<&'static str> {
        match self {
            HandlerError::Retryable(_) => None,
            HandlerError::Fatal(_) => Some("fatal"),
            HandlerError::Deserialization(_) => Some("deserialization"),
            HandlerError::UnknownSchema(_) => Some("unknown-schema"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("broker: {0}")]
    Broker(#[from] RequestError),
    #[error("record {topic}/{partition}@{offset} failed and dead-lettering is disabled: {reason}")]
    Unprocessable {
        topic: String,
        partition: u32,
        offset: i64,
        reason: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub processed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Skipped by the inbox as already processed.
    pub deduplicated: u64,
}

/// Most concurrent handler lanes per partition a consumer may run.
pub const CONCURRENCY_MAX: usize = 256;

/// The breaker and counters shared by a run's lanes (the breaker is never locked across an
/// await, and not at all per record while it is closed and steady).
struct Progress {
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

pub struct RawConsumer {
    client: BrokerClient,
    config: ConsumerConfig,
    metrics: crate::metrics::ConsumerMetrics,
}

struct Membership {
    member_id: String,
    epoch: i32,
    owned: Vec<TopicPartition>,
    interval: Duration,
    last: Option<Instant>,
}

impl RawConsumer {
    pub fn new(client: BrokerClient, config: ConsumerConfig) -> Self {
        Self {
            client,
            metrics: crate::metrics::ConsumerMetrics::new(&config.topic, &config.group),
            config,
        }
    }

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
        let mut membership = Membership {
            member_id: String::new(),
            epoch: 0,
            owned: Vec::new(),
            interval: Duration::from_secs(1),
            last: None,
        };
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut prefetch: Option<Prefetch> = None;
        let progress = Progress::new(self.config.breaker);
        loop {
            if membership
                .last
                .is_none_or(|last| last.elapsed() >= membership.interval)
            {
                self.heartbeat(&mut membership).await?;
                positions.retain(|partition, _| membership.owned.contains(partition));
            }
            let paused = progress.paused();
            let work = async {
                if paused || membership.owned.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Ok::<_, ConsumeError>(());
                }
                let owned = membership.owned.clone();
                for (index, partition) in owned.iter().enumerate() {
                    // The partition visited after this one (itself when it is the only one).
                    let after = owned.get((index + 1) % owned.len()).unwrap_or(partition);
                    self.consume_partition(
                        partition,
                        after,
                        &mut positions,
                        &mut prefetch,
                        &mut membership,
                        &progress,
                        &handler,
                    )
                    .await?;
                }
                Ok(())
            };
            tokio::select! {
                _ = &mut stop => break,
                result = work => result?,
            }
        }
        if !membership.member_id.is_empty() {
            let _ = self
                .client
                .group(GroupRequest::Leave {
                    group: self.config.group.clone(),
                    member_id: membership.member_id.clone(),
                })
                .await;
        }
        let summary = progress.summary();
        Ok(summary)
    }

    async fn heartbeat(&self, membership: &mut Membership) -> Result<(), ConsumeError> {
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

    async fn start_position(&self, partition: &TopicPartition) -> Result<i64, ConsumeError> {
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

    /// Fetches `partition` (or takes the fetch issued ahead for it), hands its records to
    /// the handler, commits; meanwhile the fetch for `after`, the partition visited next, is
    /// already on its way.
    #[allow(clippy::too_many_arguments)]
    async fn consume_partition<H, F>(
        &self,
        partition: &TopicPartition,
        after: &TopicPartition,
        positions: &mut BTreeMap<TopicPartition, i64>,
        prefetch: &mut Option<Prefetch>,
        membership: &mut Membership,
        progress: &Progress,
        handler: &H,
    ) -> Result<(), ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let position = match positions.get(partition) {
            Some(position) => *position,
            None => self.start_position(partition).await?,
        };
        let wait = if membership.owned.len() > 1 {
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
                positions.remove(partition);
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        // Ask for what comes next while these records are handled (nothing when this fetch
        // came back empty: the next one long-polls as usual).
        let ahead_position = if after == partition {
            next_offset_after(&fetched.batches)
        } else {
            positions.get(after).copied()
        };
        if let Some(ahead_position) = ahead_position {
            *prefetch = Some(self.prefetch(after, ahead_position, wait));
        }
        let lanes_max = self.config.concurrency.clamp(1, CONCURRENCY_MAX);
        let high_watermark = fetched.high_watermark;
        let source = FetchedBuffer::new(partition.0.as_str(), partition.1, fetched.batches.into());
        // One clock read per fetch for the breaker's permissions (see `process`).
        let fetched_at = Instant::now();
        // `FetchedRecords` is a named iterator, not an adapter chain: a closure-built
        // iterator held across the handler's await made the run future fail the `Send` check
        // (a higher-ranked closure lifetime), so it could not be spawned
        // (`run_futures_can_be_spawned` guards it).
        let next = if lanes_max == 1 {
            // One lane: records in order as they are read, no lane bookkeeping.
            let mut next = position;
            for record in FetchedRecords::new(&source, position) {
                let offset = record.offset();
                if !self.process(record, fetched_at, progress, handler).await? {
                    break;
                }
                next = offset + 1;
            }
            next
        } else {
            // Records go to lanes by key (records of one key share a lane, so their order is
            // kept); lanes run concurrently, each record by record.
            let mut lanes: Vec<Vec<ConsumedRecord>> = vec![Vec::new(); lanes_max];
            let mut end = position;
            for record in FetchedRecords::new(&source, position) {
                let offset = record.offset();
                let lane = match record.key() {
                    Some(key) => {
                        (crate::partitioner::murmur2(key) & 0x7fff_ffff) as usize % lanes_max
                    }
                    None => offset.unsigned_abs() as usize % lanes_max,
                };
                end = offset + 1;
                if let Some(lane) = lanes.get_mut(lane) {
                    lane.push(record);
                }
            }
            let outcomes = futures::future::join_all(lanes.into_iter().map(|lane| async move {
                // The first offset of this lane left unprocessed (the breaker opened).
                for record in lane {
                    let offset = record.offset;
                    if !self.process(record, fetched_at, progress, handler).await? {
                        return Ok(Some(offset));
                    }
                }
                Ok::<_, ConsumeError>(None)
            }))
            .await;
            // Commit up to the first record some lane left (at-least-once: records after it
            // that other lanes processed are delivered again).
            let mut next = end;
            for outcome in outcomes {
                if let Some(stopped_at) = outcome? {
                    next = next.min(stopped_at);
                }
            }
            next
        };
        metrics::gauge!(
            crate::metrics::CONSUMER_LAG,
            "topic" => partition.0.clone(),
            "group" => self.config.group.clone(),
            "partition" => partition.1.to_string(),
        )
        .set((high_watermark - next).max(0) as f64);
        if next > position {
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
        let (topic, number) = (partition.0.clone(), partition.1);
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
    async fn process<H, F>(
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

    fn unprocessable(&self, record: &ConsumedRecord, reason: String) -> ConsumeError {
        ConsumeError::Unprocessable {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            reason,
        }
    }

    async fn dead_letter(
        &self,
        record: &ConsumedRecord,
        kind: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumeError> {
        let topic = match &self.config.dead_letter {
            DeadLetter::Disabled => return Err(self.unprocessable(record, reason.to_owned())),
            DeadLetter::Default => format!("{}.dlq", record.topic()),
            DeadLetter::Topic(topic) => topic.clone(),
        };
        let mut message = reason.to_owned();
        if message.len() > DLQ_MESSAGE_BYTES_MAX {
            let mut cut = DLQ_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        // Failure headers replace earlier ones when a dead letter is dead-lettered again.
        let mut headers: Vec<Header> = record
            .headers()
            .iter()
            .filter(|(key, _)| !key.starts_with(headers::DLQ_PREFIX))
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.to_vec(),
            })
            .collect();
        for (key, value) in [
            (headers::DLQ_TOPIC, record.topic().to_owned()),
            (headers::DLQ_PARTITION, record.partition().to_string()),
            (headers::DLQ_OFFSET, record.offset().to_string()),
            (headers::DLQ_TIMESTAMP, record.timestamp_ms().to_string()),
            (headers::DLQ_GROUP, self.config.group.clone()),
            (headers::DLQ_ERROR_KIND, kind.to_owned()),
            (headers::DLQ_ERROR_MESSAGE, message),
            (headers::DLQ_ATTEMPTS, attempts.to_string()),
        ] {
            headers.push(Header {
                key: key.to_owned(),
                value: value.into_bytes(),
            });
        }
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: record.timestamp_ms(),
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers,
        });
        let batch = builder
            .encode()
            .map_err(|e| self.unprocessable(record, e.to_string()))?;
        match self
            .client
            .produce(&topic, 0, Durability::Fsync, batch.clone())
            .await
        {
            Err(RequestError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }) => {
                match self
                    .client
                    .create_topic(&topic, TopicConfig::default())
                    .await
                {
                    Ok(())
                    | Err(RequestError::Broker {
                        code: ErrorCode::TopicAlreadyExists,
                        ..
                    }) => {}
                    Err(error) => return Err(error.into()),
                }
                self.client
                    .produce(&topic, 0, Durability::Fsync, batch)
                    .await?;
            }
            result => {
                result?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: 7,
            key: Some(b"k1".to_vec()),
            value: Some(b"v1".to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: b"x".to_vec(),
            }],
        });
        builder.push(Record {
            timestamp_ms: 8,
            key: None,
            value: None,
            headers: Vec::new(),
        });
        builder.encode().expect("encode")
    }

    #[test]
    fn a_record_reads_its_parts_from_the_shared_buffer() {
        let source = FetchedBuffer::new("orders", 3, Bytes::from(encoded()));
        let view = batches(source.bytes())
            .next()
            .expect("a batch")
            .expect("valid");
        let records: Vec<ConsumedRecord> = view
            .records()
            .enumerate()
            .map(|(i, r)| {
                ConsumedRecord::from_view(&source, 10 + i as i64, &r.expect("record"))
                    .expect("inside the buffer")
            })
            .collect();
        let [first, second] = records.as_slice() else {
            panic!("two records")
        };
        assert_eq!(
            (first.topic(), first.partition(), first.offset()),
            ("orders", 3, 10)
        );
        assert_eq!(first.timestamp_ms(), 7);
        assert_eq!(first.key(), Some(&b"k1"[..]));
        assert_eq!(first.value_bytes().as_deref(), Some(&b"v1"[..]));
        assert_eq!(first.header("h"), Some(&b"x"[..]));
        assert_eq!(first.headers().len(), 1);
        assert_eq!((second.key(), second.value()), (None, None));
        assert!(second.headers().is_empty());
        assert_eq!(first.clone(), *first);
        assert_ne!(first, second);
    }

    #[test]
    fn a_fetch_is_read_from_the_position_on_across_batches() {
        let mut bytes = Vec::new();
        for base in [10i64, 12] {
            let mut batch = encoded();
            herald_wire::batch::stamp(&mut batch, base, 0);
            bytes.extend_from_slice(&batch);
        }
        let source = FetchedBuffer::new("orders", 0, Bytes::from(bytes));
        let offsets = |position| -> Vec<i64> {
            FetchedRecords::new(&source, position)
                .map(|record| record.offset())
                .collect()
        };
        assert_eq!(offsets(10), [10, 11, 12, 13]);
        assert_eq!(offsets(11), [11, 12, 13]);
        assert_eq!(offsets(13), [13]);
        assert!(offsets(14).is_empty());
        // A damaged second batch ends the reading after the first.
        let mut damaged = source.bytes().to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let damaged = FetchedBuffer::new("orders", 0, Bytes::from(damaged));
        assert_eq!(FetchedRecords::new(&damaged, 0).count(), 2);
    }

    #[test]
    fn a_view_of_another_buffer_is_refused() {
        let source = FetchedBuffer::new("orders", 0, Bytes::from(encoded()));
        let other = encoded();
        let view = batches(&other).next().expect("a batch").expect("valid");
        let record = view.records().next().expect("a record").expect("valid");
        assert!(ConsumedRecord::from_view(&source, 0, &record).is_none());
    }
}
