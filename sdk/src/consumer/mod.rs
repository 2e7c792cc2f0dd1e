//! `RawConsumer`: group membership and at-least-once processing for raw records.
//!
//! `run(handler)` joins the group, consumes the partitions it is granted from the committed
//! offset (or the reset policy's offset when nothing is committed), calls the handler record
//! by record (so per-key order is kept), retries a failing record with full-jitter backoff,
//! sends a record that still fails — or fails fatally — to the dead-letter topic with the
//! failure headers, and commits after the handler succeeded (or the record was
//! dead-lettered). While the handler's failure rate trips the circuit breaker, consumption
//! pauses (heartbeats go on) until half-open probes pass.
//!
//! Heartbeats run in their own task, at the interval the coordinator asks for, however long
//! the handler takes: a slow handler keeps its partitions (a partition moves only once its
//! owner let it go, so while the network is sound no partition is handled by two live
//! members). That is not a guarantee of exclusive handling: a member cut off from the
//! coordinator expires while its handler may still be at work, and a handler still running
//! after its member left for `max_poll_interval` finishes its record; meanwhile the
//! partition's new owner may handle the same records from the last commit (at-least-once).
//! A handler slower than `max_poll_interval` over one fetch is taken for stuck: the member
//! leaves, its partitions move on, and it rejoins once the handler returns (Kafka's
//! `max.poll.interval.ms`; noticed at most one heartbeat interval late when the limit is
//! shorter than the heartbeat interval).
//! Transient failures (a lost connection, a throttled or failing broker) never end a run:
//! requests are retried with full-jitter backoff up to `reconnect_backoff_max` (a commit that
//! got no answer is sent again), a failed connection is replaced (with a [`Connector`], see
//! [`RawConsumer::with_reconnect`]), the member rejoins and resumes from the committed
//! offsets. Only fatal errors end it; a fatal error of the heartbeat task lets the record
//! being handled finish first (for at most `max_poll_interval`), see [`RawConsumer::run`].
//! At the end of a run the heartbeat task is stopped, a join in flight answered first, and
//! the run leaves the group as the member the coordinator knows.
//!
//! A fetched batch that cannot be read — it fails its checksum, does not parse (a record, the
//! record count, a batch cut short: the broker sends whole batches only, so a short one is
//! damage, not a partial read), or its offsets do not follow on from the fetch position or
//! the batch before it — is never skipped silently nor fetched again and again. The records
//! before it are handled and committed; then, by [`ConsumerConfig::on_corrupt_batch`]:
//!
//! - [`CorruptBatchPolicy::Stop`] (the default): the run ends with
//!   [`ConsumeError::CorruptBatch`], naming the topic, partition and first offset that could
//!   not be read, and why. A restarted consumer meets the same batch again (nothing is skipped
//!   unless asked).
//! - [`CorruptBatchPolicy::SkipToDeadLetter`]: the batch's raw bytes go to the dead-letter
//!   topic (error kind [`CORRUPT_BATCH_ERROR_KIND`], headers naming the source topic,
//!   partition and the offsets skipped), and consuming goes on after it. Only when its range
//!   can be relied on (a whole header whose offsets follow on, and a next batch starting
//!   where it ends) and dead-lettering is not disabled; otherwise the run stops as above.
//!
//! Either way the batch is counted under `herald_consumer_corrupt_batches_total`, and one
//! skipped is counted in [`RunSummary::corrupt_batches`].
//!
//! Where things live:
//!
//! - `config`: [`ConsumerConfig`], [`ResetPolicy`], [`DeadLetter`], [`Connector`] and the
//!   consumer's limits;
//! - `core`: [`ConsumerCore`], the decisions without I/O — membership state, positions,
//!   the committable offset per partition, which commits to send (only increasing) and when
//!   to heartbeat — driven by `now` and events (the run loop and the heartbeat task report
//!   to it; a seeded simulation in `tests/consumer_simulation.rs` drives it against
//!   `herald-broker-core`);
//! - `fetched`: the records of a fetch ([`FetchedBuffer`], [`ConsumedRecord`],
//!   [`RecordHeaders`]) and the iterator reading them, which checks the batches and notes
//!   the first corrupt one;
//! - `membership`: the connection (replaced after it failed) and how failed requests are
//!   recovered from; the heartbeat task (joining, rejoining, the processing-time limit) and
//!   what it and the run loop tell each other; start positions, commits and leaving;
//! - `run`: the run loop ([`RawConsumer::run`]), consuming one partition, prefetching, and
//!   processing one record (inbox, breaker, retries);
//! - `lanes`: handing a fetch's records to the handler, on one lane or on concurrent key lanes;
//! - `dead_letter`: sending a record that cannot be processed to the dead-letter topic, and
//!   acting on a corrupt batch (stopping, or sending its bytes there and moving past it).
//!
//! This file holds the handler's and the run's public types and [`RawConsumer`] itself.

mod config;
mod core;
mod dead_letter;
mod fetched;
mod lanes;
mod membership;
mod run;

use std::sync::Arc;

use herald_broker_client::{BrokerClient, RequestError};

use membership::{Interruptions, Link};

pub use config::{
    Connector, ConsumerConfig, CorruptBatchPolicy, DeadLetter, ResetPolicy, CONCURRENCY_MAX,
    CONNECT_TIMEOUT, CORRUPT_BATCH_ERROR_KIND, DLQ_BATCH_OFFSET_HEADER, DLQ_CHUNKS_HEADER,
    DLQ_CHUNK_HEADER, DLQ_LAST_OFFSET_HEADER, DLQ_MESSAGE_BYTES_MAX, IDEMPOTENCY_KEY_HEADER,
    RECONNECT_BACKOFF_MIN, UNKNOWN_TOPIC_ATTEMPTS_MAX,
};
pub use fetched::{ConsumedRecord, FetchedBuffer, RecordHeaders};
// `self::`: a bare `core` here would be ambiguous with the `core` crate.
pub use self::core::{
    ConsumerCore, Fetch, FetchFrom, HeartbeatError, HeartbeatRequest, MemberAssignment,
    MembershipState, PartitionProgress, HEARTBEAT_INTERVAL_MIN,
};

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
    /// A fetched batch of `topic`/`partition` cannot be read (see the module documentation):
    /// `offset` is the first offset the consumer could not read (everything before it was
    /// handled and committed), `reason` what is wrong with the batch — and, under
    /// [`CorruptBatchPolicy::SkipToDeadLetter`], why it was not skipped. Fatal: the run ends
    /// instead of fetching the batch again and again.
    #[error("corrupt batch in {topic}/{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: u32,
        offset: i64,
        reason: String,
    },
    /// The run's heartbeat task was cancelled from outside (the runtime is shutting down).
    #[error("the heartbeat task was cancelled")]
    HeartbeatCancelled,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub processed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Skipped by the inbox as already processed.
    pub deduplicated: u64,
    /// Corrupt batches sent to the dead-letter topic and skipped
    /// ([`CorruptBatchPolicy::SkipToDeadLetter`]).
    pub corrupt_batches: u64,
}

pub struct RawConsumer {
    /// The connection every request goes over (shared with the heartbeat task), replaced
    /// after it failed when the consumer has a connector.
    client: Arc<Link>,
    config: ConsumerConfig,
    metrics: crate::metrics::ConsumerMetrics,
    interruptions: Interruptions,
}

impl RawConsumer {
    /// A consumer over `client`. Without a connector a closed connection cannot be replaced,
    /// so losing it ends the run (other transient failures are retried); see
    /// [`RawConsumer::with_reconnect`].
    pub fn new(client: BrokerClient, config: ConsumerConfig) -> Self {
        Self::build(client, None, config)
    }

    /// A consumer over `client` that replaces a failed connection with one from `connector`
    /// (a broker restart, a network failure), rejoins its group and resumes from the
    /// committed offsets, instead of ending its run.
    pub fn with_reconnect(
        client: BrokerClient,
        connector: Connector,
        config: ConsumerConfig,
    ) -> Self {
        Self::build(client, Some(connector), config)
    }

    fn build(client: BrokerClient, connector: Option<Connector>, config: ConsumerConfig) -> Self {
        Self {
            client: Arc::new(Link::new(client, connector)),
            metrics: crate::metrics::ConsumerMetrics::new(&config.topic, &config.group),
            interruptions: Interruptions::new(&config.topic, &config.group),
            config,
        }
    }
}
