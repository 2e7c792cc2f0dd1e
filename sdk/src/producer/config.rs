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
    /// The batch was not acknowledged within the delivery timeout. If it went out (`sent`),
    /// only its answer may have been lost: it may be stored (resend it as for
    /// [`ProduceError::Indeterminate`]); if not, it is not stored.
    ///
    /// `attempts` counts every failed try: the writes of the batch, and the tries to get a
    /// fresh producer id or a pipeline for it that failed before it could be written.
    #[error(
        "not delivered within the delivery timeout after {attempts} attempts{}: {last}",
        if *.sent { " (it went out, so it may be stored)" } else { " (it never went out)" }
    )]
    Timeout {
        attempts: u32,
        /// Whether the batch went out at least once under its last stamp: see
        /// [`ProduceError::may_be_stored`].
        sent: bool,
        last: String,
    },
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
    /// Not retried because the retry budget is spent. If the batch went out (`sent`), it may
    /// be stored, as after a [`ProduceError::Timeout`].
    #[error(
        "the retry budget is spent (the broker has been failing for everyone){}: {last}",
        if *.sent { "; the batch went out, so it may be stored" } else { "" }
    )]
    BudgetExhausted {
        /// Whether the batch went out at least once under its last stamp: see
        /// [`ProduceError::may_be_stored`].
        sent: bool,
        last: String,
    },
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
    /// Whether sending the record again later, as a new send, may succeed without storing it
    /// twice: the failure was transient and this copy is certainly not stored. False whenever
    /// [`ProduceError::may_be_stored`] is true, so that a generic "if retryable, send again"
    /// loop (which gives each send a fresh idempotency key, or none) does not store a record
    /// twice; such a record is resent only as that method says.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProduceError::Timeout { .. }
                | ProduceError::BudgetExhausted { .. }
                | ProduceError::CircuitOpen { .. }
                | ProduceError::BufferFull { .. }
        ) && !self.may_be_stored()
    }

    /// Whether the broker may have stored the record although its send failed: its outcome
    /// is unknown. True for
    /// - [`ProduceError::Indeterminate`];
    /// - [`ProduceError::Timeout`] and [`ProduceError::BudgetExhausted`] of a batch that went
    ///   out (`sent`): only its answer may have been lost;
    /// - [`ProduceError::Refused`] with [`ErrorCode::Internal`] (an answer this client could
    ///   not read: the broker's own `Internal` is a retryable error, retried, never a
    ///   refusal) or with a code this client does not know: neither proves the batch was
    ///   refused before it was appended. The error does not tell whether the batch went out
    ///   (the unreadable answer may have been to the request for a fresh producer id, before
    ///   it did), so this says "may" then too: the safe side.
    ///
    /// False for every other error: the record is not stored.
    ///
    /// To send such a record again without risking a second copy, send it with the same
    /// idempotency key (the `idempotency-key` header; on the typed producer
    /// `SendOptions::idempotency_key` or `Message::idempotency_key`) to a topic with a dedup
    /// window: the broker drops the copy if the first one was stored.
    pub fn may_be_stored(&self) -> bool {
        match self {
            ProduceError::Indeterminate { .. } => true,
            ProduceError::Timeout { sent, .. } | ProduceError::BudgetExhausted { sent, .. } => {
                *sent
            }
            ProduceError::Refused { code, .. } => {
                matches!(code, ErrorCode::Internal | ErrorCode::Unknown(_))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catches: an outcome that may be stored reported as retryable, which a generic "if
    /// retryable, send again" loop (a fresh idempotency key per send) turns into a duplicate.
    #[test]
    fn an_outcome_that_may_be_stored_is_not_retryable() {
        let timeout = |sent| ProduceError::Timeout {
            attempts: 3,
            sent,
            last: "no answer".to_owned(),
        };
        let budget = |sent| ProduceError::BudgetExhausted {
            sent,
            last: "connection lost".to_owned(),
        };
        let indeterminate = ProduceError::Indeterminate {
            reason: "the batch before it timed out".to_owned(),
        };
        for error in [&indeterminate, &timeout(true), &budget(true)] {
            assert!(error.may_be_stored(), "{error}");
            assert!(!error.retryable(), "{error}");
        }
        for error in [
            timeout(false),
            budget(false),
            ProduceError::BufferFull { limit: 1 },
            ProduceError::CircuitOpen {
                retry_after: Duration::from_secs(1),
            },
        ] {
            assert!(!error.may_be_stored(), "{error}");
            assert!(error.retryable(), "{error}");
        }
        let refused = |code| ProduceError::Refused {
            code,
            message: String::new(),
        };
        assert!(!refused(ErrorCode::SchemaValidationFailed).may_be_stored());
        assert!(
            refused(ErrorCode::Internal).may_be_stored(),
            "an unreadable answer"
        );
        assert!(refused(ErrorCode::Unknown(99)).may_be_stored());
        assert!(!refused(ErrorCode::Unknown(99)).retryable());
        assert!(timeout(true).to_string().contains("may be stored"));
        assert!(!timeout(false).to_string().contains("may be stored"));
    }
}
