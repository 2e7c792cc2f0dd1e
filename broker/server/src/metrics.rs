//! The broker's metric handles, recorded into its own [`Metrics`] recorder (names and help
//! texts are `herald_metrics::broker`). Each is registered once and kept where what it
//! measures lives: broker-wide ones in [`BrokerMetrics`], a topic's in its `Topic`
//! ([`TopicMetrics`]), a partition's gauges in its `Partition` ([`PartitionGauges`]), group
//! commit's in its thread. A produce then updates atomics: no lock, no label formatting.
//! Group lag gauges are registered when `/metrics` is scraped (groups come and go).

use herald_metrics::broker::{
    AUTHENTICATIONS, BYTES_IN, BYTES_OUT, CONNECTIONS_REFUSED, DUPLICATE_BATCHES, FETCH_DURATION,
    FLUSH_BEHIND_ERRORS, FLUSH_BEHIND_SYNCS, HIGH_WATERMARK, PARTITION_BYTES, PARTITION_FENCED,
    PRODUCE_DURATION, RECORDS_IN, RECORDS_OUT, RECOVERY_TRUNCATED_BYTES, REJECTED_BATCHES,
    REJECT_REASONS, REQUESTS_REFUSED, RESPONSE_BYTES_OUTSTANDING, RESPONSE_WRITE_TIMEOUTS,
    RETENTION_SEGMENTS_DELETED, SEGMENTS,
};
use herald_metrics::{Counter, Gauge, Histogram, Metrics};
use herald_wire::messages::Durability;

/// Broker-wide handles, and the recorder the others are registered with.
pub struct BrokerMetrics {
    metrics: Metrics,
    pub connections_refused: Counter,
    pub authentication_successes: Counter,
    pub authentication_failures: Counter,
    pub not_authenticated: Counter,
    pub not_authorized: Counter,
    pub retention_segments_deleted: Counter,
    pub fetch_duration: Histogram,
    pub response_bytes_outstanding: Gauge,
    pub response_write_timeouts: Counter,
    produce_fsync_duration: Histogram,
    produce_memory_duration: Histogram,
}

impl BrokerMetrics {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            connections_refused: metrics.counter(CONNECTIONS_REFUSED, &[]),
            authentication_successes: metrics.counter(AUTHENTICATIONS, &[("result", "success")]),
            authentication_failures: metrics.counter(AUTHENTICATIONS, &[("result", "failure")]),
            not_authenticated: metrics
                .counter(REQUESTS_REFUSED, &[("reason", "not_authenticated")]),
            not_authorized: metrics.counter(REQUESTS_REFUSED, &[("reason", "not_authorized")]),
            retention_segments_deleted: metrics.counter(RETENTION_SEGMENTS_DELETED, &[]),
            fetch_duration: metrics.histogram(FETCH_DURATION, &[]),
            response_bytes_outstanding: metrics.gauge(RESPONSE_BYTES_OUTSTANDING, &[]),
            response_write_timeouts: metrics.counter(RESPONSE_WRITE_TIMEOUTS, &[]),
            produce_fsync_duration: metrics.histogram(PRODUCE_DURATION, &[("durability", "fsync")]),
            produce_memory_duration: metrics
                .histogram(PRODUCE_DURATION, &[("durability", "memory")]),
            metrics,
        }
    }

    /// The recorder, to register further handles with.
    pub fn recorder(&self) -> &Metrics {
        &self.metrics
    }

    /// Produce latency for `durability`.
    pub fn produce_duration(&self, durability: Durability) -> &Histogram {
        match durability {
            Durability::Fsync => &self.produce_fsync_duration,
            Durability::Memory => &self.produce_memory_duration,
        }
    }

    /// Every series in Prometheus' text format.
    pub fn render(&self) -> String {
        self.metrics.render()
    }
}

/// Why a batch was refused: the `reason` label of the rejected-batches counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Corrupt,
    Sequence,
    Fenced,
    Schema,
}

impl Reject {
    /// The `reason` label, and the counter's index in [`TopicMetrics`].
    fn index(self) -> usize {
        match self {
            Reject::Corrupt => 0,
            Reject::Sequence => 1,
            Reject::Fenced => 2,
            Reject::Schema => 3,
        }
    }
}

/// A topic's handles (label `topic`), registered when the topic is opened or created.
pub struct TopicMetrics {
    pub records_in: Counter,
    pub bytes_in: Counter,
    pub duplicate_batches: Counter,
    pub records_out: Counter,
    pub bytes_out: Counter,
    pub flush_behind_syncs: Counter,
    pub flush_behind_errors: Counter,
    pub recovery_truncated_bytes: Counter,
    /// By [`Reject::index`], in the order of `REJECT_REASONS`.
    rejected: [Counter; 4],
}

impl TopicMetrics {
    pub fn new(metrics: &Metrics, topic: &str) -> Self {
        let labels = [("topic", topic)];
        Self {
            records_in: metrics.counter(RECORDS_IN, &labels),
            bytes_in: metrics.counter(BYTES_IN, &labels),
            duplicate_batches: metrics.counter(DUPLICATE_BATCHES, &labels),
            records_out: metrics.counter(RECORDS_OUT, &labels),
            bytes_out: metrics.counter(BYTES_OUT, &labels),
            flush_behind_syncs: metrics.counter(FLUSH_BEHIND_SYNCS, &labels),
            flush_behind_errors: metrics.counter(FLUSH_BEHIND_ERRORS, &labels),
            recovery_truncated_bytes: metrics.counter(RECOVERY_TRUNCATED_BYTES, &labels),
            rejected: REJECT_REASONS.map(|reason| {
                metrics.counter(REJECTED_BATCHES, &[("topic", topic), ("reason", reason)])
            }),
        }
    }

    /// The rejected-batches counter for `reason`.
    pub fn rejected(&self, reason: Reject) -> &Counter {
        &self.rejected[reason.index()]
    }
}

/// A partition's gauges (labels `topic`, `partition`), set before `/metrics` renders.
pub struct PartitionGauges {
    pub segments: Gauge,
    pub high_watermark: Gauge,
    pub bytes: Gauge,
    pub fenced: Gauge,
}

impl PartitionGauges {
    pub fn new(metrics: &Metrics, topic: &str, partition: u32) -> Self {
        let partition = partition.to_string();
        let labels = [("topic", topic), ("partition", partition.as_str())];
        Self {
            segments: metrics.gauge(SEGMENTS, &labels),
            high_watermark: metrics.gauge(HIGH_WATERMARK, &labels),
            bytes: metrics.gauge(PARTITION_BYTES, &labels),
            fenced: metrics.gauge(PARTITION_FENCED, &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_match_their_labels() {
        let metrics = Metrics::new();
        let topic = TopicMetrics::new(&metrics, "orders");
        for (reason, label) in [
            (Reject::Corrupt, "corrupt"),
            (Reject::Sequence, "sequence"),
            (Reject::Fenced, "fenced"),
            (Reject::Schema, "schema"),
        ] {
            assert_eq!(REJECT_REASONS[reason.index()], label);
            topic.rejected(reason).increment(1);
        }
        topic.rejected(Reject::Corrupt).increment(1);
        let text = metrics.render();
        assert!(
            text.contains(
                "herald_broker_rejected_batches_total{topic=\"orders\",reason=\"corrupt\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_broker_rejected_batches_total{topic=\"orders\",reason=\"schema\"} 1\n"
            ),
            "{text}"
        );
    }
}
