//! `RawProducer`: bytes in, offsets out, for one topic. Records are batched per partition
//! (linger, batch bytes), keyed records follow Kafka's murmur2 partitioner, every batch is
//! idempotent (producer id, epoch, per-partition sequence, so a retry is never stored twice),
//! transient failures are retried with full-jitter backoff within the delivery timeout and a
//! retry budget, and a circuit breaker fails sends fast while the broker is unreachable. The
//! buffer is bounded: `send` waits for room.
//!
//! This first version keeps one batch in flight per partition (ordering is then trivially
//! kept across retries); the protocol allows more (see `BrokerClient::pipeline`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_broker_client::{BrokerClient, RequestError};
use herald_wire::batch::{BatchBuilder, Header, Record};
use herald_wire::messages::Durability;
use herald_wire::ErrorCode;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::partitioner::partition_for_key;
use crate::policy::backoff::{RetryDecision, RetryPolicy};
use crate::policy::breaker::{BreakerConfig, CircuitBreaker, Permission};
use crate::policy::budget::{BudgetConfig, RetryBudget, RetryKind};

/// Batches queued per partition before `send` waits (besides the byte budget).
pub const PARTITION_QUEUE_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's batch waits for more records (default 5 ms).
    pub linger: Duration,
    /// A batch is sent once this big (default 1 MiB).
    pub batch_bytes_max: usize,
    /// Bytes of records accepted but not yet acknowledged; `send` waits beyond (32 MiB).
    pub buffer_bytes_max: usize,
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
            batch_bytes_max: 1024 * 1024,
            buffer_bytes_max: 32 * 1024 * 1024,
            durability: Durability::Memory,
            retry: RetryPolicy::PRODUCER,
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            producer_name: String::new(),
        }
    }
}

/// Why a record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("record is {size} bytes, more than the buffer of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the broker refused the batch: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("not delivered within the delivery timeout after {attempts} attempts: {last}")]
    Timeout { attempts: u32, last: String },
    #[error("the retry budget is spent (the broker has been failing for everyone): {last}")]
    BudgetExhausted { last: String },
    #[error("circuit open: the broker is failing; retry after {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
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
        )
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: u32,
    pub offset: i64,
}

/// Resolves to where a queued record landed, or why it was not delivered.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<Delivery, ProduceError>>);

impl std::future::Future for DeliveryFuture {
    type Output = Result<Delivery, ProduceError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ProduceError::Closed)))
    }
}

struct Pending {
    record: Record,
    done: oneshot::Sender<Result<Delivery, ProduceError>>,
    _permit: OwnedSemaphorePermit,
}

struct Accumulated {
    records: Vec<Pending>,
    bytes: usize,
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
    breaker: Mutex<CircuitBreaker>,
    budget: Mutex<RetryBudget>,
}

/// A producer of raw records for one topic.
pub struct RawProducer {
    shared: Arc<Shared>,
    partitions: u32,
    round_robin: AtomicU32,
    buffer: Arc<Semaphore>,
    accumulators: Mutex<HashMap<u32, Accumulated>>,
    senders: Vec<mpsc::Sender<Vec<Pending>>>,
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
            breaker: Mutex::new(CircuitBreaker::new(config.breaker)),
            budget: Mutex::new(RetryBudget::new(config.budget)),
            producer,
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
            accumulators: Mutex::new(HashMap::new()),
            senders,
            flush_locks: (0..partitions)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }))
    }

    /// Queues a record; the returned receiver yields where it landed. Waits while the buffer
    /// is full. The first record of a partition's batch starts its linger timer.
    pub async fn send(
        self: &Arc<Self>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> Result<DeliveryFuture, ProduceError> {
        let size = 64
            + key.as_ref().map_or(0, Vec::len)
            + value.as_ref().map_or(0, Vec::len)
            + headers
                .iter()
                .map(|h| h.key.len() + h.value.len() + 6)
                .sum::<usize>();
        let limit = self.shared.config.buffer_bytes_max;
        if size > limit {
            return Err(ProduceError::TooLarge { size, limit });
        }
        if let Permission::Rejected { retry_after } = self.breaker().allow(Instant::now()) {
            return Err(ProduceError::CircuitOpen { retry_after });
        }
        let permit = self
            .buffer
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| ProduceError::Closed)?;
        let partition = match &key {
            Some(key) => partition_for_key(key, self.partitions),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.max(1),
        };
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        metrics::counter!(crate::metrics::PRODUCER_SENT, "topic" => self.shared.topic.clone())
            .increment(1);
        let (done, delivery) = oneshot::channel();
        let pending = Pending {
            record: Record {
                timestamp_ms,
                key,
                value,
                headers,
            },
            done,
            _permit: permit,
        };
        let (full, first) = {
            let mut accumulators = self.accumulators.lock().unwrap_or_else(|p| p.into_inner());
            let batch = accumulators
                .entry(partition)
                .or_insert_with(|| Accumulated {
                    records: Vec::new(),
                    bytes: 0,
                });
            let first = batch.records.is_empty();
            batch.bytes += size;
            batch.records.push(pending);
            (batch.bytes >= self.shared.config.batch_bytes_max, first)
        };
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
        Ok(DeliveryFuture(delivery))
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
            accumulators.remove(&partition)
        };
        if let Some(batch) = batch.filter(|b| !b.records.is_empty()) {
            if let Some(sender) = self.senders.get(partition as usize) {
                if let Err(mpsc::error::SendError(records)) = sender.send(batch.records).await {
                    for pending in records {
                        let _ = pending.done.send(Err(ProduceError::Closed));
                    }
                }
            }
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.shared
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends one partition's batches in order, one at a time, retrying each until it is
/// acknowledged or its delivery timeout passes. Sequences advance only on acknowledgement,
/// so a retried batch carries the same sequence and is deduplicated by the broker.
async fn partition_sender(
    shared: Arc<Shared>,
    partition: u32,
    mut batches: mpsc::Receiver<Vec<Pending>>,
) {
    let mut producer = shared.producer;
    let mut sequence: i32 = 0;
    while let Some(records) = batches.recv().await {
        let mut builder = BatchBuilder::new().idempotent(producer.0, producer.1, sequence);
        for pending in &records {
            builder.push(pending.record.clone());
        }
        let outcome = match builder.encode() {
            Ok(bytes) => deliver(&shared, partition, bytes).await,
            Err(error) => Err(ProduceError::Refused {
                code: ErrorCode::CorruptBatch,
                message: error.to_string(),
            }),
        };
        match outcome {
            Ok(base_offset) => {
                metrics::counter!(crate::metrics::PRODUCER_ACKED, "topic" => shared.topic.clone())
                    .increment(records.len() as u64);
                sequence = sequence.wrapping_add(records.len() as i32);
                for (i, pending) in records.into_iter().enumerate() {
                    let _ = pending.done.send(Ok(Delivery {
                        partition,
                        offset: base_offset + i as i64,
                    }));
                }
            }
            Err(error) => {
                metrics::counter!(crate::metrics::PRODUCER_FAILED, "topic" => shared.topic.clone())
                    .increment(records.len() as u64);
                for pending in records {
                    let _ = pending.done.send(Err(error.clone()));
                }
                // The failed batch may or may not be stored: reusing its sequence could make
                // the next batch look like its duplicate, skipping it could leave a gap. A
                // fresh producer id for this partition starts a clean sequence instead.
                if let Ok(fresh) = shared.client().init_producer("").await {
                    producer = fresh;
                    sequence = 0;
                }
            }
        }
    }
}

async fn deliver(shared: &Shared, partition: u32, batch: Vec<u8>) -> Result<i64, ProduceError> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = shared
            .client()
            .produce(
                &shared.topic,
                partition,
                shared.config.durability,
                batch.clone(),
            )
            .await;
        let now = Instant::now();
        let error = match result {
            Ok((base_offset, _)) => {
                shared.on_outcome(now, true);
                shared
                    .budget
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .on_success();
                return Ok(base_offset);
            }
            Err(error) if !error.retryable() => {
                let (code, message) = match &error {
                    RequestError::Broker { code, message, .. } => (*code, message.clone()),
                    other => (ErrorCode::Internal, other.to_string()),
                };
                return Err(ProduceError::Refused { code, message });
            }
            Err(error) => error,
        };
        shared.on_outcome(now, false);
        let kind = if matches!(error, RequestError::Timeout(_)) {
            RetryKind::Timeout
        } else {
            RetryKind::Error
        };
        if !shared
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_retry(kind)
        {
            return Err(ProduceError::BudgetExhausted {
                last: error.to_string(),
            });
        }
        let wait =
            match &error {
                RequestError::Broker { retry_after_ms, .. } if *retry_after_ms > 0 => {
                    Duration::from_millis(u64::from(*retry_after_ms))
                }
                _ => match shared.config.retry.decide(
                    attempts,
                    started.elapsed(),
                    rand::random::<f64>(),
                ) {
                    RetryDecision::RetryAfter(delay) => delay,
                    RetryDecision::GiveUp(_) => {
                        return Err(ProduceError::Timeout {
                            attempts,
                            last: error.to_string(),
                        })
                    }
                },
            };
        metrics::counter!(crate::metrics::PRODUCER_RETRIED, "topic" => shared.topic.clone())
            .increment(1);
        tokio::time::sleep(wait).await;
        let connection_lost = matches!(
            error,
            RequestError::Connection(_) | RequestError::Stream(_) | RequestError::Timeout(_)
        );
        if let (true, Some(connector)) = (connection_lost, &shared.connector) {
            // Best effort: if the broker is still down, the next attempt fails and retries.
            if let Ok(fresh) = connector().await {
                *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
        }
    }
}

impl Shared {
    fn on_outcome(&self, now: Instant, success: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            breaker.on_success(now);
        } else {
            breaker.on_failure(now);
        }
        metrics::gauge!(crate::metrics::PRODUCER_BREAKER_STATE, "topic" => self.topic.clone())
            .set(breaker.state().gauge());
    }

    fn client(&self) -> BrokerClient {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
