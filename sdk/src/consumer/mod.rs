//! `RawConsumer`: group membership and at-least-once processing for raw records.
//!
//! `run(handler)` joins the group, heartbeats at the interval the broker asks for, consumes
//! the partitions it is granted from the committed offset (or the reset policy's offset when
//! nothing is committed), calls the handler record by record (so per-key order is kept),
//! retries a failing record with full-jitter backoff, sends a record that still fails — or
//! fails fatally — to the dead-letter topic with the failure headers, and commits after the
//! handler succeeded (or the record was dead-lettered). While the handler's failure rate trips
//! the circuit breaker, consumption pauses (heartbeats go on) until half-open probes pass.
//!
//! Where things live:
//!
//! - `config`: [`ConsumerConfig`], [`ResetPolicy`], [`DeadLetter`] and the consumer's limits;
//! - `core`: [`ConsumerCore`], the decisions without I/O — membership state, positions,
//!   the committable offset per partition, which commits to send (only increasing) and when
//!   to heartbeat — driven by `now` and events (the run loop reports to it; a seeded
//!   simulation in `tests/consumer_simulation.rs` drives it against `herald-broker-core`);
//! - `fetched`: the records of a fetch ([`FetchedBuffer`], [`ConsumedRecord`],
//!   [`RecordHeaders`]) and the iterator reading them;
//! - `membership`: the group requests — heartbeats (joining, rejoining), start positions,
//!   commits and leaving — whose answers go to the core;
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

use herald_broker_client::{BrokerClient, RequestError};

pub use config::{
    ConsumerConfig, DeadLetter, ResetPolicy, CONCURRENCY_MAX, DLQ_MESSAGE_BYTES_MAX,
    IDEMPOTENCY_KEY_HEADER,
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
    client: BrokerClient,
    config: ConsumerConfig,
    metrics: crate::metrics::ConsumerMetrics,
}

impl RawConsumer {
    pub fn new(client: BrokerClient, config: ConsumerConfig) -> Self {
        Self {
            client,
            metrics: crate::metrics::ConsumerMetrics::new(&config.topic, &config.group),
            config,
        }
    }
}
