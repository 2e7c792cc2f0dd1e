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
    REJECT_REASONS, REPLICA_FOLLOWER_LAG, REPLICA_HIGH_WATERMARK, REPLICA_LEADER, REPLICA_TERM,
    REQUESTS_REFUSED, RESPONSE_BYTES_OUTSTANDING, RESPONSE_WRITE_TIMEOUTS,
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

/// A replica's place in its partition group, as [`record_replica`] records it.
pub struct ReplicaState<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub leader: Option<u64>,
    pub term: u64,
    /// On the leader: each follower and the batches it is behind (`None`: not matched yet).
    pub followers: &'a [(u64, Option<u64>)],
    pub high_watermark: i64,
}

/// The followers' lag a replica's gauges show (see [`ReplicaState::followers`]): on the
/// leader, what it measured; on a node that led the partition at the last scrape
/// (`reported_before`) but no longer does, every other replica as unknown (-1), so that its
/// last figures do not linger as if current; else none.
pub fn followers_to_report(
    measured: &[(u64, Option<u64>)],
    leads: bool,
    reported_before: bool,
    replicas: &[u64],
    me: u64,
) -> Vec<(u64, Option<u64>)> {
    if leads {
        return measured.to_vec();
    }
    if !reported_before {
        return Vec::new();
    }
    replicas
        .iter()
        .filter(|replica| **replica != me)
        .map(|replica| (*replica, None))
        .collect()
}

/// Sets a cluster replica's gauges (leader, term, followers' lag, high watermark) in
/// `metrics`, before `/metrics` renders.
pub fn record_replica(metrics: &Metrics, replica: &ReplicaState<'_>) {
    let partition = replica.partition.to_string();
    let labels = [("topic", replica.topic), ("partition", partition.as_str())];
    metrics
        .gauge(REPLICA_LEADER, &labels)
        .set(replica.leader.unwrap_or(0) as f64);
    metrics
        .gauge(REPLICA_TERM, &labels)
        .set(replica.term as f64);
    metrics
        .gauge(REPLICA_HIGH_WATERMARK, &labels)
        .set(replica.high_watermark as f64);
    for (follower, behind) in replica.followers {
        let follower = follower.to_string();
        let labels = [
            ("topic", replica.topic),
            ("partition", partition.as_str()),
            ("follower", follower.as_str()),
        ];
        metrics
            .gauge(REPLICA_FOLLOWER_LAG, &labels)
            .set(behind.map_or(-1.0, |behind| behind as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that stops leading shows its former followers' lag as unknown once (not the
    /// last figures it measured), and nothing after that; the leader shows what it measured.
    #[test]
    fn a_former_leader_reports_its_followers_lag_as_unknown() {
        let measured = [(2, Some(5)), (3, None)];
        assert_eq!(
            followers_to_report(&measured, true, false, &[1, 2, 3], 1),
            measured.to_vec()
        );
        assert_eq!(
            followers_to_report(&[], false, true, &[1, 2, 3], 1),
            vec![(2, None), (3, None)]
        );
        assert!(followers_to_report(&[], false, false, &[1, 2, 3], 1).is_empty());
    }

    #[test]
    fn a_replica_shows_its_leader_term_high_watermark_and_followers_lag() {
        let metrics = Metrics::new();
        record_replica(
            &metrics,
            &ReplicaState {
                topic: "orders",
                partition: 2,
                leader: Some(3),
                term: 7,
                followers: &[(1, Some(0)), (2, None)],
                high_watermark: 4_000,
            },
        );
        let text = metrics.render();
        for line in [
            "herald_broker_replica_leader{topic=\"orders\",partition=\"2\"} 3\n",
            "herald_broker_replica_term{topic=\"orders\",partition=\"2\"} 7\n",
            "herald_broker_replica_high_watermark{topic=\"orders\",partition=\"2\"} 4000\n",
            "herald_broker_replica_follower_lag_batches{topic=\"orders\",partition=\"2\",follower=\"1\"} 0\n",
            "herald_broker_replica_follower_lag_batches{topic=\"orders\",partition=\"2\",follower=\"2\"} -1\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // No leader known: 0.
        record_replica(
            &metrics,
            &ReplicaState {
                topic: "orders",
                partition: 2,
                leader: None,
                term: 8,
                followers: &[],
                high_watermark: 4_000,
            },
        );
        let text = metrics.render();
        assert!(text.contains("herald_broker_replica_leader{topic=\"orders\",partition=\"2\"} 0\n"));
        assert!(text.contains("herald_broker_replica_term{topic=\"orders\",partition=\"2\"} 8\n"));
    }

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
