//! What a consumer is configured with, and its limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_broker_client::BrokerClient;
use herald_wire::headers;

use crate::policy::backoff::RetryPolicy;
use crate::policy::breaker::BreakerConfig;

/// The header carrying a record's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = headers::IDEMPOTENCY_KEY;

/// Longest error message kept in a dead-letter header, in bytes.
pub const DLQ_MESSAGE_BYTES_MAX: usize = 4096;

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
/// restart, a network failure) instead of ending its run. The same type as
/// `crate::producer::Connector`, so `Client::connector` makes one for both.
pub type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<BrokerClient, String>> + Send>> + Send + Sync,
>;

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
    /// Longest the handler may work through one fetch (from receiving its records to asking
    /// for the next), as Kafka's `max.poll.interval.ms` (default 300 s). Heartbeats go on
    /// while the handler works, so a slow handler keeps its partitions; one slower than this
    /// is taken for stuck: the member leaves its group, so its partitions move to members
    /// that make progress, stops handling the rest of that fetch, and rejoins once the
    /// handler returns. What it handled in that round is not committed (its commits are
    /// refused) and is delivered again to the partitions' next owner (at-least-once).
    pub max_poll_interval: Duration,
    /// Ceiling of the first backoff after a failed broker request (a lost connection, a
    /// throttled or failing broker), doubled per failure in a row up to
    /// `reconnect_backoff_max`, with full jitter (Kafka's `reconnect.backoff.ms`, 50 ms).
    pub reconnect_backoff: Duration,
    /// Longest backoff between two attempts (Kafka's `reconnect.backoff.max.ms`, 1 s). As in
    /// Kafka, transient failures are retried for as long as the run goes on: they never end
    /// it; each attempt is counted under `herald_consumer_interruptions_total`.
    pub reconnect_backoff_max: Duration,
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
