//! Producer settings ([`ProducerConfig`], [`BufferFull`]), the size limits `send` enforces,
//! and [`ProduceError`].

use std::time::Duration;

use herald_wire::batch::BATCH_HEADER_BYTES;
use herald_wire::limits::BATCH_BYTES_MAX;
use herald_wire::messages::Durability;
use herald_wire::ErrorCode;

use crate::policy::backoff::RetryPolicy;
use crate::policy::breaker::BreakerConfig;
use crate::policy::budget::BudgetConfig;

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
    /// The batch was not acknowledged within the delivery timeout. If it went out, only its
    /// answer may have been lost: it may be stored (resend it as for
    /// [`ProduceError::Indeterminate`]).
    #[error("not delivered within the delivery timeout after {attempts} attempts: {last}")]
    Timeout { attempts: u32, last: String },
    /// The batch went out, but a batch sent before it on the same partition failed for good,
    /// so whether the broker stored this one is unknown: it may or may not be stored. It was
    /// not resent: a copy under a fresh producer id would be stored twice wherever the first
    /// one was (see the `herald::producer` module docs).
    ///
    /// To retry it without risking a duplicate, send it again with the same idempotency key
    /// (the `idempotency-key` header; on the typed producer `SendOptions::idempotency_key` or
    /// `Message::idempotency_key`, since a generated key differs per send) to a topic with a
    /// dedup window: the broker drops the copy if the first one was stored.
    #[error("the batch may or may not have been stored; it was not resent, so that it cannot be stored twice: {reason}")]
    Indeterminate { reason: String },
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
    /// Whether sending the record again later may succeed. After
    /// [`ProduceError::Indeterminate`] or [`ProduceError::Timeout`] the first copy may be
    /// stored: resend with the same idempotency key to a topic with a dedup window.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProduceError::Timeout { .. }
                | ProduceError::Indeterminate { .. }
                | ProduceError::BudgetExhausted { .. }
                | ProduceError::CircuitOpen { .. }
                | ProduceError::BufferFull { .. }
        )
    }
}
