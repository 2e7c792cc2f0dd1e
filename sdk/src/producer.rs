//! `RawProducer`: bytes in, offsets out, for one topic. Records are batched per partition
//! (linger, batch bytes), keyed records follow Kafka's murmur2 partitioner, every batch is
//! idempotent (producer id, epoch, per-partition sequence, so a retry is never stored twice),
//! transient failures are retried with full-jitter backoff within the delivery timeout and a
//! retry budget, and a circuit breaker fails sends fast while the broker is unreachable. The
//! buffer is bounded: `send` waits for room.
//!
//! Each partition keeps up to [`IN_FLIGHT_MAX`] batches in flight on one ordered pipeline;
//! after a transient failure all of them are resent in order (the broker deduplicates), so
//! ordering and exactly-once storage hold across retries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_broker_client::{BrokerClient, Pipeline, RequestError, REQUEST_TIMEOUT};
use herald_wire::batch::{restamp_producer, BatchWriter, Header, BATCH_HEADER_BYTES};
use herald_wire::limits::BATCH_BYTES_MAX;
use herald_wire::messages::{Durability, Request, Response};
use herald_wire::{Api, ErrorCode};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::partitioner::partition_for_key;
use crate::policy::backoff::{RetryDecision, RetryPolicy};
use crate::policy::breaker::{BreakerConfig, Permission, SharedBreaker};
use crate::policy::budget::{BudgetConfig, RetryBudget, RetryKind};

/// Batches queued per partition before `send` waits (besides the byte budget).
pub const PARTITION_QUEUE_MAX: usize = 64;

/// The largest record `send` takes, by its size estimate (half the wire's batch limit: a
/// batch below its size cap plus one such record always fits in one batch).
pub const RECORD_BYTES_MAX: usize = BATCH_BYTES_MAX / 2 - BATCH_HEADER_BYTES;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's batch waits for more records (default 5 ms).
    pub linger: Duration,
    /// A batch is sent once this big (default 256 KiB: big enough to amortise a request,
    /// small enough to stay in cache while it is framed and sent; at most half the wire's
    /// batch limit).
    pub batch_bytes_max: usize,
    /// Bytes of records accepted but not yet acknowledged (32 MiB); beyond, `send` waits or
    /// fails as `buffer_full` says.
    pub buffer_bytes_max: usize,
    pub buffer_full: BufferFull,
    pub durability: Durability,
    pub retry: RetryPolicy,
    pub budget: BudgetConfig,
    pub breaker: BreakerConfig,
    /// Name for a stable producer id across restarts (each new instance fences the old one);
    /// empty for an anonymous producer.
    pub producer_name: String,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_bytes_max: 256 * 1024,
            buffer_bytes_max: 32 * 1024 * 1024,
            buffer_full: BufferFull::Wait,
            durability: Durability::Memory,
            retry: RetryPolicy::PRODUCER,
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            producer_name: String::new(),
        }
    }
}

/// What `send` does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BufferFull {
    /// Wait for acknowledgements to make room (backpressure).
    #[default]
    Wait,
    /// Fail at once with [`ProduceError::BufferFull`].
    Fail,
}

/// Why a record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("record is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("the broker refused the batch: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("not delivered within the delivery timeout after {attempts} attempts: {last}")]
    Timeout { attempts: u32, last: String },
    #[error("the retry budget is spent (the broker has been failing for everyone): {last}")]
    BudgetExhausted { last: String },
    #[error("circuit open: the broker is failing; retry after {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    #[error("the producer's buffer of {limit} bytes is full (records wait for acknowledgements)")]
    BufferFull { limit: usize },
    #[error("the producer is closed")]
    Closed,
    #[error("cannot start the producer: {0}")]
    Setup(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error(transparent)]
    Encode(crate::codec::CodecError),
}

impl ProduceError {
    /// Whether sending the record again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProduceError::Timeout { .. }
                | ProduceError::BudgetExhausted { .. }
                | ProduceError::CircuitOpen { .. }
                | ProduceError::BufferFull { .. }
        )
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: u32,
    pub offset: i64,
}

/// Where a batch's records landed.
#[derive(Debug)]
struct Landed {
    base_offset: i64,
    /// Each record's offset when not dense from `base_offset` (a dedup window dropped some).
    record_offsets: Vec<i64>,
}

impl Landed {
    fn offset(&self, index: u32) -> i64 {
        self.record_offsets
            .get(index as usize)
            .copied()
            .unwrap_or(self.base_offset + i64::from(index))
    }
}

/// The outcome of one batch (its base offset, or why it failed), shared by the delivery
/// futures of its records: one allocation per batch, not per record.
#[derive(Debug, Default)]
struct BatchOutcome {
    result: std::sync::OnceLock<Result<Landed, ProduceError>>,
    wakers: Mutex<Vec<std::task::Waker>>,
}

/// Completes a batch's outcome once; dropped without completing, it reports `Closed`.
#[derive(Debug)]
struct Completer(Arc<BatchOutcome>);

impl Completer {
    fn new() -> Self {
        Self(Arc::new(BatchOutcome::default()))
    }

    fn complete(&self, result: Result<Landed, ProduceError>) {
        if self.0.result.set(result).is_ok() {
            let wakers =
                std::mem::take(&mut *self.0.wakers.lock().unwrap_or_else(|p| p.into_inner()));
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.complete(Err(ProduceError::Closed));
    }
}

/// Resolves to where a queued record landed, or why it was not delivered.
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    partition: u32,
    index: u32,
    /// Where this future's waker sits in the batch's list once registered: a re-poll
    /// replaces it there, so the list holds at most one waker per future.
    slot: Option<usize>,
}

impl DeliveryFuture {
    fn ready(&self) -> Option<Result<Delivery, ProduceError>> {
        self.outcome.result.get().map(|result| match result {
            Ok(landed) => Ok(Delivery {
                partition: self.partition,
                offset: landed.offset(self.index),
            }),
            Err(error) => Err(error.clone()),
        })
    }
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<Delivery, ProduceError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(result) = self.ready() {
            return std::task::Poll::Ready(result);
        }
        {
            let mut wakers = self
                .outcome
                .wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match self.slot.and_then(|slot| wakers.get_mut(slot)) {
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    wakers.push(cx.waker().clone());
                    let slot = wakers.len() - 1;
                    drop(wakers);
                    self.slot = Some(slot);
                }
            }
        }
        // Completed while registering: the waker list may already have been drained.
        match self.ready() {
            Some(result) => std::task::Poll::Ready(result),
            None => std::task::Poll::Pending,
        }
    }
}

/// A batch's records (encoded as they were sent), its outcome and its buffer bytes (one
/// permit: released once).
struct Queued {
    batch: BatchWriter,
    outcome: Completer,
    permit: Option<OwnedSemaphorePermit>,
}

/// A partition's batch being filled.
struct Accumulated {
    batch: BatchWriter,
    outcome: Completer,
    permit: Option<OwnedSemaphorePermit>,
    /// Size estimates of its records (at least their encoded size).
    bytes: usize,
}

impl Accumulated {
    /// An empty batch with room for `record_bytes` (the previous batch's size: batches of a
    /// steady stream are alike, so the buffer rarely grows).
    fn new(record_bytes: usize) -> Self {
        Self {
            batch: BatchWriter::with_capacity(record_bytes),
            outcome: Completer::new(),
            permit: None,
            bytes: 0,
        }
    }
}

/// Makes a new connection to the broker (used after the current one fails).
pub type Connector = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<BrokerClient, String>> + Send>,
        > + Send
        + Sync,
>;

struct Shared {
    client: Mutex<BrokerClient>,
    connector: Option<Connector>,
    topic: String,
    config: ProducerConfig,
    producer: (i64, i16),
    breaker: SharedBreaker,
    budget: Mutex<RetryBudget>,
    metrics: crate::metrics::ProducerMetrics,
}

/// A producer of raw records for one topic.
pub struct RawProducer {
    shared: Arc<Shared>,
    partitions: u32,
    round_robin: AtomicU32,
    buffer: Arc<Semaphore>,
    /// One batch being filled per partition (indexed by partition).
    accumulators: Mutex<Vec<Accumulated>>,
    senders: Vec<mpsc::Sender<Queued>>,
    /// Held from taking a partition's batch until it is queued, so batches are queued in
    /// the order they were taken (a linger timer and a full batch can race).
    flush_locks: Vec<tokio::sync::Mutex<()>>,
}

impl RawProducer {
    /// Starts a producer for `topic`: learns its partitions and gets a producer id.
    pub async fn new(
        client: BrokerClient,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        Self::start(client, None, topic, config).await
    }

    /// Like [`RawProducer::new`], reconnecting with `connector` whenever the connection fails
    /// (a broker restart), so sends survive it.
    pub async fn with_reconnect(
        connector: Connector,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        let client = connector().await.map_err(ProduceError::Setup)?;
        Self::start(client, Some(connector), topic, config).await
    }

    async fn start(
        client: BrokerClient,
        connector: Option<Connector>,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        let description = client
            .describe_topic(topic)
            .await
            .map_err(|e| ProduceError::Setup(e.to_string()))?;
        let producer = client
            .init_producer(&config.producer_name)
            .await
            .map_err(|e| ProduceError::Setup(e.to_string()))?;
        let partitions = description.partitions.len() as u32;
        let shared = Arc::new(Shared {
            client: Mutex::new(client),
            connector,
            topic: topic.to_owned(),
            breaker: SharedBreaker::new(config.breaker),
            budget: Mutex::new(RetryBudget::new(config.budget)),
            producer,
            metrics: crate::metrics::ProducerMetrics::new(topic),
            config: config.clone(),
        });
        let mut senders = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let (sender, receiver) = mpsc::channel(PARTITION_QUEUE_MAX);
            tokio::spawn(partition_sender(shared.clone(), partition, receiver));
            senders.push(sender);
        }
        let buffer = Arc::new(Semaphore::new(config.buffer_bytes_max));
        Ok(Arc::new(Self {
            shared,
            partitions,
            round_robin: AtomicU32::new(0),
            buffer,
            accumulators: Mutex::new((0..partitions).map(|_| Accumulated::new(0)).collect()),
            senders,
            flush_locks: (0..partitions)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }))
    }

    /// Queues a record; the returned future yields where it landed. Waits while the buffer
    /// is full. The first record of a partition's batch starts its linger timer.
    pub async fn send(
        self: &Arc<Self>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> Result<DeliveryFuture, ProduceError> {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect();
        self.send_parts(key.as_deref(), value.as_deref(), &headers)
            .await
    }

    /// Like [`RawProducer::send`] for borrowed parts: they are copied once, into the batch
    /// (encoded in place as it fills).
    pub async fn send_parts(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<DeliveryFuture, ProduceError> {
        let size = 64
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|(key, value)| key.len() + value.len() + 6)
                .sum::<usize>();
        let limit = self.shared.config.buffer_bytes_max.min(RECORD_BYTES_MAX);
        if size > limit {
            return Err(ProduceError::TooLarge { size, limit });
        }
        // Closed (nearly always): no lock, no clock read.
        if let Permission::Rejected { retry_after } = self.shared.breaker.allow(Instant::now) {
            return Err(ProduceError::CircuitOpen { retry_after });
        }
        let permit = match self.shared.config.buffer_full {
            BufferFull::Wait => self
                .buffer
                .clone()
                .acquire_many_owned(size as u32)
                .await
                .map_err(|_| ProduceError::Closed)?,
            BufferFull::Fail => match self.buffer.clone().try_acquire_many_owned(size as u32) {
                Ok(permit) => permit,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    return Err(ProduceError::BufferFull {
                        limit: self.shared.config.buffer_bytes_max,
                    });
                }
                Err(tokio::sync::TryAcquireError::Closed) => return Err(ProduceError::Closed),
            },
        };
        let partition = match key {
            Some(key) => partition_for_key(key, self.partitions),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.max(1),
        };
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch_bytes_max = self.shared.config.batch_bytes_max.min(BATCH_BYTES_MAX / 2);
        let (full, first, delivery) = {
            let mut accumulators = self.accumulators.lock().unwrap_or_else(|p| p.into_inner());
            let Some(batch) = accumulators.get_mut(partition as usize) else {
                return Err(ProduceError::Closed);
            };
            batch
                .batch
                .push(timestamp_ms, key, value, headers.iter().copied())
                .map_err(|e| ProduceError::InvalidRecord(e.to_string()))?;
            let first = batch.batch.len() == 1;
            match &mut batch.permit {
                Some(held) => held.merge(permit),
                None => batch.permit = Some(permit),
            }
            batch.bytes += size;
            let delivery = DeliveryFuture {
                outcome: batch.outcome.0.clone(),
                partition,
                index: batch.batch.len() - 1,
                slot: None,
            };
            (batch.bytes >= batch_bytes_max, first, delivery)
        };
        self.shared.metrics.sent.increment(1);
        if full {
            self.flush_partition(partition).await;
        } else if first {
            let producer = self.clone();
            let linger = self.shared.config.linger;
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                producer.flush_partition(partition).await;
            });
        }
        Ok(delivery)
    }

    /// Sends every partition's pending batch now.
    pub async fn flush(&self) {
        for partition in 0..self.partitions {
            self.flush_partition(partition).await;
        }
    }

    async fn flush_partition(&self, partition: u32) {
        let Some(flush_lock) = self.flush_locks.get(partition as usize) else {
            return;
        };
        let _ordered = flush_lock.lock().await;
        let batch = {
            let mut accumulators = self.accumulators.lock().unwrap_or_else(|p| p.into_inner());
            accumulators
                .get_mut(partition as usize)
                .filter(|batch| !batch.batch.is_empty())
                .map(|batch| {
                    let size = batch.batch.encoded_len();
                    std::mem::replace(batch, Accumulated::new(size))
                })
        };
        if let Some(batch) = batch {
            if let Some(sender) = self.senders.get(partition as usize) {
                let queued = Queued {
                    batch: batch.batch,
                    outcome: batch.outcome,
                    permit: batch.permit,
                };
                // A closed channel drops the batch: its outcome reports `Closed`.
                let _ = sender.send(queued).await;
            }
        }
    }
}

/// Batches of one partition in flight at once (Kafka's limit for idempotent producers: the
/// broker remembers the last five batches per producer, so any of them can be resent).
pub const IN_FLIGHT_MAX: usize = 5;

struct InFlight {
    /// Records in the batch.
    records: u32,
    outcome: Completer,
    _permit: Option<OwnedSemaphorePermit>,
    batch: Vec<u8>,
    started: Instant,
    attempts: u32,
    /// The broker's answer, once sent on the current pipeline.
    answer: Option<oneshot::Receiver<Result<Response, RequestError>>>,
}

/// Sends one partition's batches in order on one pipeline (an ordered stream), up to
/// [`IN_FLIGHT_MAX`] at once. Sequences are assigned when a batch is encoded; a retry resends
/// the same bytes, and after a transient failure every batch in flight is resent in order,
/// so the broker stores each exactly once (it acknowledges a resent duplicate with its
/// original offsets).
async fn partition_sender(
    shared: Arc<Shared>,
    partition: u32,
    mut batches: mpsc::Receiver<Queued>,
) {
    let mut producer = shared.producer;
    let mut next_sequence: i32 = 0;
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut pipeline: Option<Pipeline> = None;
    let mut closed = false;
    loop {
        if window.is_empty() {
            match batches.recv().await {
                Some(records) => admit(&mut window, records, producer, &mut next_sequence),
                None => return,
            }
        }
        let outcome = match send_unsent(&shared, partition, &mut pipeline, &mut window).await {
            Err(error) => Err(error),
            Ok(()) => {
                let Some(mut answer) = window.front_mut().and_then(|f| f.answer.take()) else {
                    continue;
                };
                tokio::select! {
                    biased;
                    answer = tokio::time::timeout(REQUEST_TIMEOUT, &mut answer) => produced(answer),
                    more = batches.recv(), if !closed && window.len() < IN_FLIGHT_MAX => {
                        match more {
                            Some(records) => {
                                admit(&mut window, records, producer, &mut next_sequence);
                            }
                            None => closed = true,
                        }
                        if let Some(front) = window.front_mut() {
                            front.answer = Some(answer);
                        }
                        continue;
                    }
                }
            }
        };
        let now = Instant::now();
        let error = match outcome {
            Ok(landed) => {
                shared.on_outcome(now, true);
                shared.budget().on_success();
                if let Some(done) = window.pop_front() {
                    shared.metrics.acked.increment(u64::from(done.records));
                    // Room in the buffer first, then the news: a sender woken by the
                    // acknowledgement finds the space freed.
                    let InFlight {
                        outcome, _permit, ..
                    } = done;
                    drop(_permit);
                    outcome.complete(Ok(landed));
                }
                continue;
            }
            Err(error) => error,
        };
        shared.on_outcome(now, false);
        let (attempts, started) = window
            .front()
            .map_or((1, now), |front| (front.attempts.max(1), front.started));
        let verdict = if !error.retryable() {
            let (code, message) = match &error {
                RequestError::Broker { code, message, .. } => (*code, message.clone()),
                other => (ErrorCode::Internal, other.to_string()),
            };
            Err(ProduceError::Refused { code, message })
        } else if !shared
            .budget()
            .try_retry(if matches!(error, RequestError::Timeout(_)) {
                RetryKind::Timeout
            } else {
                RetryKind::Error
            })
        {
            Err(ProduceError::BudgetExhausted {
                last: error.to_string(),
            })
        } else {
            match &error {
                RequestError::Broker { retry_after_ms, .. } if *retry_after_ms > 0 => {
                    Ok(Duration::from_millis(u64::from(*retry_after_ms)))
                }
                _ => match shared.config.retry.decide(
                    attempts,
                    started.elapsed(),
                    rand::random::<f64>(),
                ) {
                    RetryDecision::RetryAfter(delay) => Ok(delay),
                    RetryDecision::GiveUp(_) => Err(ProduceError::Timeout {
                        attempts,
                        last: error.to_string(),
                    }),
                },
            }
        };
        // Whatever happens next, the batches behind the failed one are sent again.
        pipeline = None;
        for entry in &mut window {
            entry.answer = None;
        }
        match verdict {
            Ok(delay) => {
                shared.metrics.retried.increment(1);
                tokio::time::sleep(delay).await;
                let connection_lost = matches!(
                    error,
                    RequestError::Connection(_)
                        | RequestError::Stream(_)
                        | RequestError::Timeout(_)
                );
                if let (true, Some(connector)) = (connection_lost, &shared.connector) {
                    // Best effort: if the broker is still down, the next attempt fails again.
                    if let Ok(fresh) = connector().await {
                        *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                }
            }
            Err(failure) => {
                if let Some(failed) = window.pop_front() {
                    shared.metrics.failed.increment(u64::from(failed.records));
                    let InFlight {
                        outcome, _permit, ..
                    } = failed;
                    drop(_permit);
                    outcome.complete(Err(failure));
                }
                // The failed batch may or may not be stored: reusing its sequence could make
                // the next batch look like its duplicate, skipping it could leave a gap. A
                // fresh producer id starts a clean sequence for the batches behind it.
                if let Ok(fresh) = shared.client().init_producer("").await {
                    producer = fresh;
                    next_sequence = 0;
                    for entry in &mut window {
                        restamp_producer(&mut entry.batch, producer.0, producer.1, next_sequence);
                        next_sequence = next_sequence.wrapping_add(entry.records as i32);
                    }
                }
            }
        }
    }
}

/// Finishes a queued batch with the next sequence and puts it in the window (or fails it).
fn admit(
    window: &mut VecDeque<InFlight>,
    queued: Queued,
    producer: (i64, i16),
    next_sequence: &mut i32,
) {
    let Queued {
        batch,
        outcome,
        permit,
    } = queued;
    let records = batch.len();
    match batch.finish(producer.0, producer.1, *next_sequence) {
        Ok(batch) => {
            *next_sequence = next_sequence.wrapping_add(records as i32);
            window.push_back(InFlight {
                records,
                outcome,
                _permit: permit,
                batch,
                started: Instant::now(),
                attempts: 0,
                answer: None,
            });
        }
        Err(error) => {
            outcome.complete(Err(ProduceError::Refused {
                code: ErrorCode::CorruptBatch,
                message: error.to_string(),
            }));
        }
    }
}

/// Sends, in order, every batch of the window not yet sent on the current pipeline.
async fn send_unsent(
    shared: &Shared,
    partition: u32,
    pipeline: &mut Option<Pipeline>,
    window: &mut VecDeque<InFlight>,
) -> Result<(), RequestError> {
    if window.iter().all(|entry| entry.answer.is_some()) {
        return Ok(());
    }
    if pipeline.is_none() {
        *pipeline = Some(shared.client().pipeline().await?);
    }
    let Some(open) = pipeline.as_ref() else {
        return Ok(());
    };
    for entry in window.iter_mut().filter(|entry| entry.answer.is_none()) {
        entry.attempts += 1;
        let batch = &entry.batch;
        let body_bytes = shared.topic.len() + batch.len() + 16;
        let sent = open
            .send_encoded(Api::Produce, body_bytes, |out| {
                Request::encode_produce(
                    out,
                    &shared.topic,
                    partition,
                    shared.config.durability,
                    batch,
                )
            })
            .await;
        match sent {
            Ok(answer) => entry.answer = Some(answer),
            Err(error) => {
                *pipeline = None;
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The base offset of an acknowledged batch, or why it was not.
fn produced(
    answer: Result<
        Result<Result<Response, RequestError>, oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
) -> Result<Landed, RequestError> {
    match answer {
        Err(_) => Err(RequestError::Timeout(REQUEST_TIMEOUT)),
        Ok(Err(_)) => Err(RequestError::Stream("pipeline closed".to_owned())),
        Ok(Ok(answer)) => match answer.and_then(herald_broker_client::refused)? {
            Response::Produced {
                base_offset,
                record_offsets,
                ..
            } => Ok(Landed {
                base_offset,
                record_offsets,
            }),
            other => Err(RequestError::Unexpected {
                api: "produce",
                answer: format!("{other:?}"),
            }),
        },
    }
}

impl Shared {
    fn budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_outcome(&self, now: Instant, success: bool) {
        if let Some(state) = self.breaker.record(success, now) {
            self.metrics.breaker_state.set(state.gauge());
        }
    }

    fn client(&self) -> BrokerClient {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn a_delivery_future_keeps_one_waker_however_often_it_is_polled() {
        let completer = Completer::new();
        let mut futures: Vec<DeliveryFuture> = (0..3)
            .map(|index| DeliveryFuture {
                outcome: completer.0.clone(),
                partition: 2,
                index,
                slot: None,
            })
            .collect();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..100 {
            for future in &mut futures {
                assert!(std::pin::Pin::new(future).poll(&mut cx).is_pending());
            }
        }
        assert_eq!(completer.0.wakers.lock().map(|w| w.len()).unwrap_or(0), 3);
        completer.complete(Ok(Landed {
            base_offset: 40,
            record_offsets: Vec::new(),
        }));
        let offsets: Vec<i64> = futures
            .iter_mut()
            .map(|future| match std::pin::Pin::new(future).poll(&mut cx) {
                std::task::Poll::Ready(Ok(delivery)) => delivery.offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [40, 41, 42]);
    }

    #[test]
    fn a_dropped_batch_reports_closed() {
        let completer = Completer::new();
        let mut future = DeliveryFuture {
            outcome: completer.0.clone(),
            partition: 0,
            index: 0,
            slot: None,
        };
        drop(completer);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(matches!(
            std::pin::Pin::new(&mut future).poll(&mut cx),
            std::task::Poll::Ready(Err(ProduceError::Closed))
        ));
    }
}
