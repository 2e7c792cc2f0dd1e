//! What a consumer is configured with, and its limits.

use std::time::Duration;

use herald_wire::headers;

use crate::policy::backoff::RetryPolicy;
use crate::policy::breaker::BreakerConfig;

/// The header carrying a record's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = headers::IDEMPOTENCY_KEY;

/// Longest error message kept in a dead-letter header, in bytes.
pub const DLQ_MESSAGE_BYTES_MAX: usize = 4096;

/// Most concurrent handler lanes per partition a consumer may run.
pub const CONCURRENCY_MAX: usize = 256;

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
