//! herald-metrics: the metric names of Herald's servers, their descriptions, and the
//! Prometheus recorder each server records into and renders `/metrics` from.
//!
//! Servers record through the `metrics` facade's handles ([`Counter`], [`Gauge`],
//! [`Histogram`]), registered once per topic, partition or route and kept where those live, so
//! a hot path (a produce) is an atomic add: no lock, no label formatting. Rendering is
//! `metrics-exporter-prometheus`.
//!
//! Each server instance records into its own recorder ([`Metrics`]), not the process-global
//! one: a test process runs a registry and a broker side by side (a global recorder can be
//! installed once per process), and an application embedding the SDK installs its own. Label
//! sets are bounded by what the servers name (routes, topics, partitions, groups, reasons),
//! never by request content.

use std::sync::{Arc, Weak};
use std::time::Duration;

pub use metrics::{Counter, Gauge, Histogram};
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

/// Latency buckets, in seconds: 100 µs to 5 s (every histogram uses them).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A gauge not set for this long is dropped at the next render. Servers set their gauges
/// right before rendering, so this removes only series nothing sets any more: a deleted
/// topic's partitions, a vanished group's lag.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`
/// (a scrape folds them too); bounds the memory samples take between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The schema registry's metrics.
pub mod registry {
    /// HTTP requests (counter; `route`, `method`, `status`).
    pub const REQUESTS: &str = "herald_registry_requests_total";
    /// Request latency in seconds (histogram; `route`).
    pub const REQUEST_DURATION: &str = "herald_registry_request_duration_seconds";
    /// Schemas stored, distinct IDs (gauge).
    pub const SCHEMAS: &str = "herald_registry_schemas";
    /// Subjects with at least one live version (gauge).
    pub const SUBJECTS: &str = "herald_registry_subjects";
}

/// The broker's metrics.
pub mod broker {
    /// Connections refused at the limit (counter).
    pub const CONNECTIONS_REFUSED: &str = "herald_broker_connections_refused_total";
    /// Authentication exchanges by `result`: `success` or `failure` (counter).
    pub const AUTHENTICATIONS: &str = "herald_broker_authentications_total";
    /// Requests refused because the principal lacked a permission, or had not authenticated
    /// (counter; `reason`: `not_authorized` or `not_authenticated`).
    pub const REQUESTS_REFUSED: &str = "herald_broker_requests_refused_total";
    /// Segments deleted by retention (counter).
    pub const RETENTION_SEGMENTS_DELETED: &str = "herald_broker_retention_segments_deleted_total";
    /// Records appended (counter; `topic`).
    pub const RECORDS_IN: &str = "herald_broker_records_in_total";
    /// Batch bytes appended (counter; `topic`).
    pub const BYTES_IN: &str = "herald_broker_bytes_in_total";
    /// Idempotent retries acknowledged without storing (counter; `topic`).
    pub const DUPLICATE_BATCHES: &str = "herald_broker_duplicate_batches_total";
    /// Batches refused (counter; `topic`, `reason`: see [`REJECT_REASONS`]).
    pub const REJECTED_BATCHES: &str = "herald_broker_rejected_batches_total";
    /// Every `reason` of [`REJECTED_BATCHES`].
    pub const REJECT_REASONS: [&str; 4] = ["corrupt", "sequence", "fenced", "schema"];
    /// Background writebacks of `Memory`-durability appends started (counter; `topic`).
    pub const FLUSH_BEHIND_SYNCS: &str = "herald_broker_flush_behind_syncs_total";
    /// Background writebacks of `Memory`-durability appends that failed to start (counter; `topic`).
    pub const FLUSH_BEHIND_ERRORS: &str = "herald_broker_flush_behind_errors_total";
    /// Bytes cut from torn or corrupt log tails at start (counter; `topic`).
    pub const RECOVERY_TRUNCATED_BYTES: &str = "herald_broker_recovery_truncated_bytes_total";
    /// Produce latency in seconds (histogram; `durability`: `fsync` or `memory`).
    pub const PRODUCE_DURATION: &str = "herald_broker_produce_duration_seconds";
    /// Records served by fetches (counter; `topic`).
    pub const RECORDS_OUT: &str = "herald_broker_records_out_total";
    /// Batch bytes served by fetches (counter; `topic`).
    pub const BYTES_OUT: &str = "herald_broker_bytes_out_total";
    /// Fetch latency in seconds, long-poll waits included (histogram).
    pub const FETCH_DURATION: &str = "herald_broker_fetch_duration_seconds";
    /// Duration of one group commit in seconds (histogram).
    pub const FSYNC_DURATION: &str = "herald_broker_fsync_duration_seconds";
    /// Produce requests acknowledged by group commit (counter).
    pub const FSYNC_REQUESTS: &str = "herald_broker_fsync_requests_total";
    /// Segments (gauge; `topic`, `partition`).
    pub const SEGMENTS: &str = "herald_broker_segments";
    /// Next offset (gauge; `topic`, `partition`).
    pub const HIGH_WATERMARK: &str = "herald_broker_high_watermark";
    /// Stored bytes (gauge; `topic`, `partition`).
    pub const PARTITION_BYTES: &str = "herald_broker_partition_bytes";
    /// Response bytes held against the broker-wide response budget: encoded, not yet taken
    /// by the transport (gauge; set when `/metrics` is scraped).
    pub const RESPONSE_BYTES_OUTSTANDING: &str = "herald_broker_response_bytes_outstanding";
    /// Response streams reset because the client read nothing of the answer for the write
    /// timeout (counter).
    pub const RESPONSE_WRITE_TIMEOUTS: &str = "herald_broker_response_write_timeouts_total";
    /// 1 while a partition acknowledges no produce — fenced after a failed write or sync, or
    /// quarantined past damage in its log — else 0 (gauge; `topic`, `partition`).
    pub const PARTITION_FENCED: &str = "herald_broker_partition_fenced";
    /// Records a group has not committed (gauge; `group`, `topic`, `partition`).
    pub const GROUP_LAG_RECORDS: &str = "herald_broker_group_lag_records";
    /// Age in seconds of the oldest record a group has not committed (gauge; `group`, `topic`,
    /// `partition`).
    pub const GROUP_LAG_SECONDS: &str = "herald_broker_group_lag_seconds";
    /// The node this replica knows as its partition's leader, 0 while none is known (gauge;
    /// `topic`, `partition`; cluster nodes).
    pub const REPLICA_LEADER: &str = "herald_broker_replica_leader";
    /// The Raft term of a replica's partition group: every election raises it by one, so its
    /// increase counts elections (gauge; `topic`, `partition`).
    pub const REPLICA_TERM: &str = "herald_broker_replica_term";
    /// On a partition's leader, the batches (Raft entries) each follower is behind; -1 while
    /// the leader has not matched the follower's log yet (gauge; `topic`, `partition`,
    /// `follower`). A node that stops leading stops updating these; the exporter drops them
    /// after [`GAUGE_IDLE_TIMEOUT`](crate::GAUGE_IDLE_TIMEOUT).
    pub const REPLICA_FOLLOWER_LAG: &str = "herald_broker_replica_follower_lag_batches";
    /// The offset consumers of this replica may read up to: after the last committed batch
    /// it applied (gauge; `topic`, `partition`).
    pub const REPLICA_HIGH_WATERMARK: &str = "herald_broker_replica_high_watermark";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's name, kind and help text (the `# HELP` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn described(name: &'static str, kind: Kind, help: &'static str) -> Description {
    Description { name, kind, help }
}

/// Every metric of both servers, with its help text.
pub const DESCRIPTIONS: [Description; 33] = [
    described(
        registry::REQUESTS,
        Kind::Counter,
        "HTTP requests by route, method and status.",
    ),
    described(
        registry::REQUEST_DURATION,
        Kind::Histogram,
        "Request latency by route.",
    ),
    described(
        registry::SCHEMAS,
        Kind::Gauge,
        "Schemas stored (distinct IDs).",
    ),
    described(
        registry::SUBJECTS,
        Kind::Gauge,
        "Subjects with at least one live version.",
    ),
    described(
        broker::CONNECTIONS_REFUSED,
        Kind::Counter,
        "Connections refused at the limit.",
    ),
    described(
        broker::AUTHENTICATIONS,
        Kind::Counter,
        "Authentication exchanges by result (success or failure).",
    ),
    described(
        broker::REQUESTS_REFUSED,
        Kind::Counter,
        "Requests refused for want of authentication or permission, by reason.",
    ),
    described(
        broker::RETENTION_SEGMENTS_DELETED,
        Kind::Counter,
        "Segments deleted by retention.",
    ),
    described(
        broker::RECORDS_IN,
        Kind::Counter,
        "Records appended, by topic.",
    ),
    described(
        broker::BYTES_IN,
        Kind::Counter,
        "Batch bytes appended, by topic.",
    ),
    described(
        broker::DUPLICATE_BATCHES,
        Kind::Counter,
        "Idempotent retries acknowledged without storing, by topic.",
    ),
    described(
        broker::REJECTED_BATCHES,
        Kind::Counter,
        "Batches refused, by topic and reason.",
    ),
    described(
        broker::FLUSH_BEHIND_SYNCS,
        Kind::Counter,
        "Background writebacks of Memory-durability appends started (flush-behind), by topic.",
    ),
    described(
        broker::FLUSH_BEHIND_ERRORS,
        Kind::Counter,
        "Background writebacks of Memory-durability appends that failed to start, by topic.",
    ),
    described(
        broker::RECOVERY_TRUNCATED_BYTES,
        Kind::Counter,
        "Bytes cut from torn or corrupt log tails at start.",
    ),
    described(
        broker::PRODUCE_DURATION,
        Kind::Histogram,
        "Produce latency, by durability.",
    ),
    described(
        broker::RECORDS_OUT,
        Kind::Counter,
        "Records served by fetches, by topic.",
    ),
    described(
        broker::BYTES_OUT,
        Kind::Counter,
        "Batch bytes served by fetches, by topic.",
    ),
    described(
        broker::FETCH_DURATION,
        Kind::Histogram,
        "Fetch latency including long-poll waits.",
    ),
    described(
        broker::FSYNC_DURATION,
        Kind::Histogram,
        "Duration of one group commit (all files synced).",
    ),
    described(
        broker::FSYNC_REQUESTS,
        Kind::Counter,
        "Produce requests acknowledged by group commit.",
    ),
    described(broker::SEGMENTS, Kind::Gauge, "Segments per partition."),
    described(
        broker::HIGH_WATERMARK,
        Kind::Gauge,
        "Next offset per partition.",
    ),
    described(
        broker::PARTITION_BYTES,
        Kind::Gauge,
        "Stored bytes per partition.",
    ),
    described(
        broker::RESPONSE_BYTES_OUTSTANDING,
        Kind::Gauge,
        "Response bytes encoded and not yet taken by the transport, against the broker-wide budget.",
    ),
    described(
        broker::RESPONSE_WRITE_TIMEOUTS,
        Kind::Counter,
        "Response streams reset because the client read nothing for the write timeout.",
    ),
    described(
        broker::PARTITION_FENCED,
        Kind::Gauge,
        "1 while a partition refuses produces (fenced after a failed write or sync, or quarantined past damage in its log).",
    ),
    described(
        broker::GROUP_LAG_RECORDS,
        Kind::Gauge,
        "Records not yet committed by a group, per partition.",
    ),
    described(
        broker::GROUP_LAG_SECONDS,
        Kind::Gauge,
        "Age of the oldest record a group has not committed, per partition.",
    ),
    described(
        broker::REPLICA_LEADER,
        Kind::Gauge,
        "The node a replica knows as its partition's leader (0: none known).",
    ),
    described(
        broker::REPLICA_TERM,
        Kind::Gauge,
        "A replica's Raft term; each election raises it by one.",
    ),
    described(
        broker::REPLICA_FOLLOWER_LAG,
        Kind::Gauge,
        "On the leader, batches each follower is behind (-1: not matched yet).",
    ),
    described(
        broker::REPLICA_HIGH_WATERMARK,
        Kind::Gauge,
        "The offset a replica's consumers may read up to (after its last applied commit).",
    ),
];

/// Describes every metric in [`DESCRIPTIONS`] to the current recorder (the global one, or a
/// local one set with `metrics::with_local_recorder`). [`Metrics::new`] does it for its own.
pub fn describe() {
    for description in DESCRIPTIONS {
        match description.kind {
            Kind::Counter => metrics::describe_counter!(description.name, description.help),
            Kind::Gauge => metrics::describe_gauge!(description.name, description.help),
            Kind::Histogram => metrics::describe_histogram!(description.name, description.help),
        }
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(label, value)| Label::new(label, value.to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

struct Shared {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// One server's metrics: a Prometheus recorder of its own (see the crate docs), the handles
/// registered with it, and the rendering of `/metrics`. Clones share the recorder.
///
/// Register a handle once per label set (per topic, partition, route) and keep it: every
/// `counter`/`gauge`/`histogram` call looks the series up (a hash and a shard lock), while
/// the handle it returns updates an atomic. A background thread folds histogram samples into
/// buckets every [`UPKEEP_INTERVAL`] until the last clone is dropped.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A recorder with [`LATENCY_BUCKETS_SECONDS`] for every histogram, gauges expiring after
    /// [`GAUGE_IDLE_TIMEOUT`] unset, and every metric of [`DESCRIPTIONS`] described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
            .set_buckets(&LATENCY_BUCKETS_SECONDS)
            .expect("LATENCY_BUCKETS_SECONDS is not empty (only empty buckets are refused)")
            .build_recorder();
        metrics::with_local_recorder(&recorder, describe);
        let handle = recorder.handle();
        let shared = Arc::new(Shared { recorder, handle });
        spawn_upkeep(Arc::downgrade(&shared));
        Self { shared }
    }

    /// The counter `name` with `labels` (in the order given, as rendered).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.shared
            .recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.shared
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
    }

    /// The histogram `name` with `labels`, in [`LATENCY_BUCKETS_SECONDS`].
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.shared
            .recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Every registered series in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.shared.handle.render()
    }
}

fn spawn_upkeep(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("herald-metrics".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            match shared.upgrade() {
                Some(shared) => shared.handle.run_upkeep(),
                None => break,
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histogram samples wait for a scrape");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind_with_help_and_buckets() {
        let metrics = Metrics::new();
        let requests = metrics.counter(
            registry::REQUESTS,
            &[("route", "/a"), ("method", "GET"), ("status", "200")],
        );
        requests.increment(2);
        metrics.gauge(registry::SCHEMAS, &[]).set(3.0);
        let latency = metrics.histogram(registry::REQUEST_DURATION, &[("route", "/a")]);
        latency.record(0.002);
        latency.record(0.2);
        let text = metrics.render();
        assert!(
            text.contains(
                "# HELP herald_registry_requests_total HTTP requests by route, method and status.\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE herald_registry_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_registry_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("herald_registry_schemas 3\n"), "{text}");
        assert!(
            text.contains("# TYPE herald_registry_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_registry_request_duration_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_registry_request_duration_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("herald_registry_request_duration_seconds_count{route=\"/a\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn a_handle_registered_twice_is_one_series_and_recorders_are_separate() {
        let one = Metrics::new();
        let other = Metrics::new();
        one.counter(broker::RECORDS_IN, &[("topic", "t")])
            .increment(1);
        one.counter(broker::RECORDS_IN, &[("topic", "t")])
            .increment(2);
        other
            .counter(broker::RECORDS_IN, &[("topic", "t")])
            .increment(10);
        assert!(one
            .render()
            .contains("herald_broker_records_in_total{topic=\"t\"} 3\n"));
        assert!(other
            .render()
            .contains("herald_broker_records_in_total{topic=\"t\"} 10\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics
            .gauge(broker::GROUP_LAG_RECORDS, &[("group", "a\"b\nc")])
            .set(1.0);
        let text = metrics.render();
        assert!(
            text.contains("herald_broker_group_lag_records{group=\"a\\\"b\\nc\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_name_is_described_once() {
        let mut names: Vec<&str> = DESCRIPTIONS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTIONS.len());
        for description in DESCRIPTIONS {
            assert!(description.name.starts_with("herald_"), "{description:?}");
            let counter = description.kind == Kind::Counter;
            assert_eq!(
                counter,
                description.name.ends_with("_total"),
                "{description:?}"
            );
        }
    }
}
