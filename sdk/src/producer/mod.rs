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
//!
//! A batch is stored at most once per send, also when one fails for good. Its delivery
//! timeout (`ProducerConfig::retry.deadline`) bounds the wait for its answer too. When the
//! oldest batch in flight fails for good (its own error says why; a [`ProduceError::Timeout`]
//! after it went out may still be stored), the broker's sequence for the producer id is
//! unknown, so:
//! - each batch behind it that already went out reports [`ProduceError::Indeterminate`]: it
//!   may or may not be stored, and it is not resent, since a copy re-stamped under a fresh
//!   producer id would be stored a second time wherever the broker already holds it (one
//!   whose acknowledgement had already come completes with its offsets);
//! - the batches never sent go out under a fresh producer id, with a clean sequence (what
//!   Kafka's KIP-360 epoch bump does).
//!
//! Except when the broker refused the failed batch outright (a non-retryable code, the one
//! time it was sent): it then stored nothing behind it either (it refuses a sequence gap),
//! so all the batches behind it go out again under the fresh producer id.
//!
//! [`ProduceError::may_be_stored`] tells such an outcome (indeterminate, or a timed-out
//! send that went out), and [`ProduceError::retryable`] is false for it. To retry it without
//! risking a duplicate, send it again with the same idempotency key (the `idempotency-key`
//! header) to a topic with a dedup window: the broker drops the copy if the first one was
//! stored. Indeterminate records are counted in [`crate::metrics::PRODUCER_INDETERMINATE`],
//! not in the failed ones.
//!
//! What lives where (`impl RawProducer` is spread over two files):
//! - `mod.rs` (here): the public API: `RawProducer` (start, `send`, `send_parts`, `flush`),
//!   the `Connector` type, the state its partition senders share (the router to each
//!   partition's leader), and the re-exports.
//! - `config.rs`: `ProducerConfig`, `BufferFull`, `ProduceError` and the size limits.
//! - `delivery.rs`: `Delivery`, the `DeliveryFuture`s of a batch's records and the batch
//!   outcome (with its wakers) they share.
//! - `accumulator.rs`: the per-partition batch being filled, and flushing it (linger or
//!   full) to the partition's sender.
//! - `pipeline.rs`: each partition's sender: the in-flight window on one ordered pipeline,
//!   sequences, retries with backoff and budget, the breaker's outcomes, and after a batch
//!   fails for good, indeterminate outcomes for the batches that went out behind it and a
//!   fresh producer id for the others.

mod accumulator;
mod config;
mod delivery;
mod pipeline;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herald_broker_client::{BrokerClient, Router};
use herald_wire::batch::Header;
use herald_wire::limits::BATCH_BYTES_MAX;
use tokio::sync::{mpsc, Semaphore};

use crate::partitioner::partition_for_key;
use crate::policy::breaker::{Permission, SharedBreaker};
use crate::policy::budget::RetryBudget;

use accumulator::{Accumulated, Queued};
use pipeline::partition_sender;

pub use config::{BufferFull, ProduceError, ProducerConfig, PARTITION_QUEUE_MAX, RECORD_BYTES_MAX};
pub use delivery::{Delivery, DeliveryFuture};
pub use pipeline::IN_FLIGHT_MAX;

/// Makes connections to brokers: `None` for any broker of the bootstrap list, `Some(addr)`
/// for the node at `addr` (a partition's leader in a cluster); see
/// [`herald_broker_client::dialer`]. The one definition: the consumer's `Connector` is this
/// type. A running producer gives each dial at most [`herald_broker_client::router::DIAL_TIMEOUT`].
pub type Connector = herald_broker_client::Dial;

struct Shared {
    /// Where each partition's batches go: its leader's connection (a cluster), or the one
    /// broker's. A connection that failed is replaced once, however many partition senders
    /// saw it fail.
    router: Arc<Router>,
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
    /// Starts a producer for `topic` on one connection (no reconnection, no leader
    /// following): learns its partitions and gets a producer id.
    pub async fn new(
        client: BrokerClient,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        Self::with_router(Arc::new(Router::fixed(client)), topic, config).await
    }

    /// Like [`RawProducer::new`], connecting with `connector`: to each partition's leader in
    /// a cluster, and again whenever a connection fails (a broker restart, a failover), so
    /// sends survive it.
    pub async fn with_reconnect(
        connector: Connector,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        Self::with_router(Arc::new(Router::new(connector, None)), topic, config).await
    }

    /// Like [`RawProducer::with_reconnect`], sharing `router` (its connections and its
    /// cache of partition leaders) with other producers.
    pub async fn with_router(
        router: Arc<Router>,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Arc<Self>, ProduceError> {
        let client = router
            .any()
            .await
            .map_err(|e| ProduceError::Setup(e.to_string()))?
            .client;
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
            router,
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
}
