//! What a consumer is configured with, and its limits.

use std::time::Duration;

use herald_wire::headers;

use crate::policy::backoff::RetryPolicy;
use crate::policy::breaker::BreakerConfig;

/// The header carrying a record's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = headers::IDEMPOTENCY_KEY;

/// Longest error message kept in a dead-letter header, in bytes.
pub const DLQ_MESSAGE_BYTES_MAX: usize = 4096;

/// `herald.dlq.error-kind` of a corrupt batch sent to the dead-letter topic
/// ([`CorruptBatchPolicy::SkipToDeadLetter`]): its dead letter's value is the batch's raw
/// bytes as the broker served them, not a record of the topic (not one to replay as is).
pub const CORRUPT_BATCH_ERROR_KIND: &str = "corrupt-batch";

/// Header of a corrupt batch's dead letter: the batch's base offset, where its raw bytes
/// start (`herald.dlq.offset` is the first offset skipped: the same, unless the consumer's
/// position was inside the batch or records before an unreadable one were handled).
pub const DLQ_BATCH_OFFSET_HEADER: &str = "herald.dlq.batch-offset";

/// Header of a corrupt batch's dead letter: the last offset the batch holds (skipped from
/// `herald.dlq.offset` up to this one, inclusive).
pub const DLQ_LAST_OFFSET_HEADER: &str = "herald.dlq.last-offset";

/// Header of a corrupt batch's dead letter: which piece of the batch's bytes this record
/// holds, from 0 (a batch larger than a record value may be is split over several dead
/// letters, in order).
pub const DLQ_CHUNK_HEADER: &str = "herald.dlq.chunk";

/// Header of a corrupt batch's dead letter: how many pieces the batch's bytes were split
/// into (1 for any batch up to 4 MiB).
pub const DLQ_CHUNKS_HEADER: &str = "herald.dlq.chunks";

/// Most concurrent handler lanes per partition a consumer may run.
pub const CONCURRENCY_MAX: usize = 256;

/// Rounds failing in a row on an unknown topic or partition (deleted while consumed, or not
/// created yet) after which the run ends with that error: the topic may come back (a
/// recreation), but one that stays gone is a mistake to report, not to wait out.
pub const UNKNOWN_TOPIC_ATTEMPTS_MAX: u32 = 10;

/// Longest one attempt at a new connection may take (the connector's work: a QUIC
/// handshake); past it the attempt counts as failed and the next follows the backoff.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest first backoff honoured, whatever `reconnect_backoff` says: zero would retry a
/// failing broker in a tight loop.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(1);

/// Makes a new connection to the broker, for a consumer to replace one that failed (a broker
/// restart, a network failure) instead of ending its run: the producer's type (one
/// definition), so `Client::connector` makes one for both.
pub use crate::producer::Connector;

/// Where records that cannot be processed go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// `<topic>.dlq`, created on first use.
    Default,
    Topic(String),
    /// Fail the run instead.
    Disabled,
}

/// What a consumer does with a fetched batch it cannot read: one that fails its checksum,
/// does not parse (a record, the record count, a batch cut short: the broker sends whole
/// batches only) or whose offsets do not follow on from the ones before it. Either way the
/// records before it are handled (and committed) first, the batch is counted under
/// `herald_consumer_corrupt_batches_total` (labels `partition` and `action`: `stopped` or
/// `dead-lettered`), and it is never fetched again and again: Kafka's consumer raises
/// `CorruptRecordException` on every poll without moving on; Herald stops or moves on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CorruptBatchPolicy {
    /// The run ends with [`ConsumeError::CorruptBatch`](super::ConsumeError::CorruptBatch),
    /// naming the topic, partition and first offset that could not be read (committed
    /// before: a restarted consumer meets the same batch again, until it is repaired or the
    /// committed offset is moved past it). The default: nothing is skipped unless asked.
    #[default]
    Stop,
    /// The batch's raw bytes go to the dead-letter topic (error kind `corrupt-batch`, with
    /// `herald.dlq.topic`/`partition`/`offset` and [`DLQ_BATCH_OFFSET_HEADER`] /
    /// [`DLQ_LAST_OFFSET_HEADER`] naming the offsets skipped; split over several dead letters
    /// when larger than a record value may be, see [`DLQ_CHUNK_HEADER`]), and consuming goes
    /// on after it: its offsets count as done and are committed. Only when the batch's
    /// range can be relied on: its header is whole and its offsets follow on from the ones
    /// before it, and the batch after it starts where it ends (checked with the next batch
    /// fetched, or the partition's end). Otherwise — or with [`DeadLetter::Disabled`] — the
    /// run stops as with [`CorruptBatchPolicy::Stop`], the error saying why it did not skip.
    SkipToDeadLetter,
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
    /// Longest the handler may work through one fetch (from receiving its records to asking
    /// for the next), as Kafka's `max.poll.interval.ms` (default 300 s). Heartbeats go on
    /// while the handler works, so a slow handler keeps its partitions; one slower than this
    /// is taken for stuck: the member leaves its group, so its partitions move to members
    /// that make progress, stops handling the rest of that fetch, and rejoins once the
    /// handler returns. What it handled in that round is not committed (its commits are
    /// refused) and is delivered again to the partitions' next owner (at-least-once). The
    /// heartbeat task notices the limit passed on time when it is at least the heartbeat
    /// interval, at most one heartbeat interval late otherwise (it learns of a fetch's
    /// handling at its next wake, to spare the hot path a wake per fetch). Also the longest
    /// a record being handled is let finish when the heartbeat task fails for good.
    pub max_poll_interval: Duration,
    /// Ceiling of the first backoff after a failed broker request (a lost connection, a
    /// throttled or failing broker), doubled per failure in a row up to
    /// `reconnect_backoff_max`, with full jitter (Kafka's `reconnect.backoff.ms`, 50 ms).
    pub reconnect_backoff: Duration,
    /// Longest backoff between two attempts (Kafka's `reconnect.backoff.max.ms`, 1 s). As in
    /// Kafka, transient failures are retried for as long as the run goes on: they never end
    /// it; each attempt is counted under `herald_consumer_interruptions_total`.
    pub reconnect_backoff_max: Duration,
    /// What to do with a fetched batch that cannot be read (fails its checksum, does not
    /// parse): end the run with [`ConsumeError::CorruptBatch`](super::ConsumeError::CorruptBatch)
    /// ([`CorruptBatchPolicy::Stop`], the default), or send its raw bytes to the dead-letter
    /// topic and go on after it ([`CorruptBatchPolicy::SkipToDeadLetter`], which needs a
    /// dead-letter topic and a batch header that can be relied on, and stops otherwise). The
    /// records before the batch are handled and committed first either way; the batch is
    /// never fetched again in a loop.
    pub on_corrupt_batch: CorruptBatchPolicy,
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
            max_poll_interval: Duration::from_secs(300),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            on_corrupt_batch: CorruptBatchPolicy::Stop,
        }
    }

    /// The backoff between attempts to recover from failed requests: full jitter below a
    /// ceiling doubling from `reconnect_backoff` up to `reconnect_backoff_max`, with neither
    /// an attempt limit nor a deadline (the run decides when to give up, not the policy).
    pub(super) fn reconnect_policy(&self) -> RetryPolicy {
        let base = self.reconnect_backoff.max(RECONNECT_BACKOFF_MIN);
        RetryPolicy {
            base,
            cap: self.reconnect_backoff_max.max(base),
            max_attempts: None,
            deadline: None,
        }
    }
}
