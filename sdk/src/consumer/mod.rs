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
//! owner let it go, so no partition is handled by two live members). A handler slower than
//! `max_poll_interval` over one fetch is taken for stuck: the member leaves, its partitions
//! move on, and it rejoins once the handler returns (Kafka's `max.poll.interval.ms`).
//! Transient failures (a lost connection, a throttled or failing broker) never end a run:
//! requests are retried with full-jitter backoff up to `reconnect_backoff_max`, a failed
//! connection is replaced (with a [`Connector`], see [`RawConsumer::with_reconnect`]), the
//! member rejoins and resumes from the committed offsets. Only fatal errors end it.
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
//!   [`RecordHeaders`]) and the iterator reading them;
//! - `membership`: the connection (replaced after it failed) and how failed requests are
//!   recovered from; the heartbeat task (joining, rejoining, the processing-time limit) and
//!   what it and the run loop tell each other; start positions, commits and leaving;
//! - `run`: the run loop ([`RawConsumer::run`]), consuming one partition, prefetching, and
//!   processing one record (inbox, breaker, retries);
//! - `lanes`: handing a fetch's records to the handler, on one lane or on concurrent key lanes;
//! - `dead_letter`: sending a record that cannot be processed to the dead-letter topic.
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
    Connector, ConsumerConfig, DeadLetter, ResetPolicy, CONCURRENCY_MAX, CONNECT_TIMEOUT,
    DLQ_MESSAGE_BYTES_MAX, IDEMPOTENCY_KEY_HEADER, RECONNECT_BACKOFF_MIN,
    UNKNOWN_TOPIC_ATTEMPTS_MAX,
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
