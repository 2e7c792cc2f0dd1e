//! Metric names the SDK reports through the `metrics` facade (install any recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost a no-op call). Every metric
//! carries a `topic` label; consumer metrics also `group`.

/// Records accepted by `send` (counter).
pub const PRODUCER_SENT: &str = "herald_producer_sent_total";
/// Records acknowledged by the broker (counter).
pub const PRODUCER_ACKED: &str = "herald_producer_acked_total";
/// Produce attempts retried after a transient failure (counter).
pub const PRODUCER_RETRIED: &str = "herald_producer_retried_total";
/// Records that failed for good (counter).
pub const PRODUCER_FAILED: &str = "herald_producer_failed_total";
/// Records whose send ended without knowing whether the broker stored them: they went out
/// behind a batch that failed for good and were not resent (counter; not in `failed`).
pub const PRODUCER_INDETERMINATE: &str = "herald_producer_indeterminate_total";
/// Producer breaker state: 0 closed, 1 half-open, 2 open (gauge).
pub const PRODUCER_BREAKER_STATE: &str = "herald_producer_breaker_state";
/// Records the handler processed successfully (counter).
pub const CONSUMER_PROCESSED: &str = "herald_consumer_processed_total";
/// Handler attempts retried (counter).
pub const CONSUMER_RETRIED: &str = "herald_consumer_retried_total";
/// Records sent to the dead-letter topic (counter, with `kind`).
pub const CONSUMER_DEAD_LETTERED: &str = "herald_consumer_dead_lettered_total";
/// Records skipped by the inbox as already processed (counter).
pub const CONSUMER_DEDUPLICATED: &str = "herald_consumer_deduplicated_total";
/// Consumer breaker state: 0 closed, 1 half-open, 2 open (gauge).
pub const CONSUMER_BREAKER_STATE: &str = "herald_consumer_breaker_state";
/// Positions that fell out of the log's range and were reset by the reset policy (counter,
/// with `partition`): retention removed them, or a committed offset is past the end of a
/// recreated topic.
pub const CONSUMER_OFFSET_RESETS: &str = "herald_consumer_offset_resets_total";
/// Corrupt batches a consumer met (a fetched batch failing its checksum or not parsing; counter,
/// with `partition` and `action`: `stopped`, the run ended with `ConsumeError::CorruptBatch`,
/// or `dead-lettered`, its bytes went to the dead-letter topic and consuming went on after
/// it). See `CorruptBatchPolicy`.
pub const CONSUMER_CORRUPT_BATCHES: &str = "herald_consumer_corrupt_batches_total";
/// Records between the consumer's position and the partition end (gauge, with `partition`).
pub const CONSUMER_LAG: &str = "herald_consumer_lag_records";
/// Interruptions a consumer recovered from without ending its run (counter, with `cause`):
/// `retry` (a broker request failed for now and is tried again after a backoff), `reconnect`
/// (the connection failed and is being replaced), `max-poll-interval` (handling one fetch took
/// longer than `max_poll_interval`: the member left its group, and rejoins once the handler is
/// back).
pub const CONSUMER_INTERRUPTIONS: &str = "herald_consumer_interruptions_total";

/// A producer's metric handles, registered once (install the recorder before creating
/// producers and consumers), so the per-record path allocates no labels.
pub(crate) struct ProducerMetrics {
    pub(crate) sent: metrics::Counter,
    pub(crate) acked: metrics::Counter,
    pub(crate) retried: metrics::Counter,
    pub(crate) failed: metrics::Counter,
    pub(crate) indeterminate: metrics::Counter,
    pub(crate) breaker_state: metrics::Gauge,
}

impl ProducerMetrics {
    pub(crate) fn new(topic: &str) -> Self {
        let labels = [("topic", topic.to_owned())];
        Self {
            sent: metrics::counter!(PRODUCER_SENT, &labels),
            acked: metrics::counter!(PRODUCER_ACKED, &labels),
            retried: metrics::counter!(PRODUCER_RETRIED, &labels),
            failed: metrics::counter!(PRODUCER_FAILED, &labels),
            indeterminate: metrics::counter!(PRODUCER_INDETERMINATE, &labels),
            breaker_state: metrics::gauge!(PRODUCER_BREAKER_STATE, &labels),
        }
    }
}

/// A consumer's metric handles (see [`ProducerMetrics`]).
pub(crate) struct ConsumerMetrics {
    pub(crate) processed: metrics::Counter,
    pub(crate) retried: metrics::Counter,
    pub(crate) deduplicated: metrics::Counter,
    pub(crate) breaker_state: metrics::Gauge,
}

impl ConsumerMetrics {
    pub(crate) fn new(topic: &str, group: &str) -> Self {
        let labels = [("topic", topic.to_owned()), ("group", group.to_owned())];
        Self {
            processed: metrics::counter!(CONSUMER_PROCESSED, &labels),
            retried: metrics::counter!(CONSUMER_RETRIED, &labels),
            deduplicated: metrics::counter!(CONSUMER_DEDUPLICATED, &labels),
            breaker_state: metrics::gauge!(CONSUMER_BREAKER_STATE, &labels),
        }
    }
}
