//! Record-header names Herald's components agree on: the SDK writes them, the CLI and
//! consumers read them. One list, so writer and readers cannot drift apart.

/// The record's idempotency key (the consumer inbox deduplicates on it).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Prefix of every dead-letter failure header; a record dead-lettered again has the old ones
/// replaced, and replay strips them.
pub const DLQ_PREFIX: &str = "herald.dlq.";
/// Original topic of a dead-lettered record.
pub const DLQ_TOPIC: &str = "herald.dlq.topic";
/// Original partition.
pub const DLQ_PARTITION: &str = "herald.dlq.partition";
/// Original offset.
pub const DLQ_OFFSET: &str = "herald.dlq.offset";
/// Original record timestamp (ms since the epoch).
pub const DLQ_TIMESTAMP: &str = "herald.dlq.timestamp";
/// Consumer group that gave up on it.
pub const DLQ_GROUP: &str = "herald.dlq.group";
/// Why: `fatal`, `retries-exhausted`, ...
pub const DLQ_ERROR_KIND: &str = "herald.dlq.error-kind";
/// The handler's error message (at most 4 KiB).
pub const DLQ_ERROR_MESSAGE: &str = "herald.dlq.error-message";
/// Handler attempts made.
pub const DLQ_ATTEMPTS: &str = "herald.dlq.attempts";
