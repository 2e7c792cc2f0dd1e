//! herald-broker: Herald's QUIC log broker.
//!
//! [`server`] accepts QUIC connections (quinn, TLS 1.3, ALPN `herald/1`) and streams, and
//! feeds decoded requests to [`broker::Broker`], which owns topics and partitions
//! (`herald-broker-core` logs over [`fs::FileStorage`]), checks schema IDs through
//! [`schema_cache::SchemaCache`] and acknowledges `Fsync` produces through
//! [`group_commit::GroupCommit`]. [`tls`] generates or loads the certificate. The QUIC plumbing
//! shared with the client (ALPN, transport settings, frame-body reading, fingerprints) comes
//! from `herald-quic`.
//!
//! [`security`] authenticates connections (SCRAM-SHA-256 against `herald_auth::users`, or a client
//! certificate) and checks every request against the ACLs before the broker sees it.
//!
//! Idempotent producers get ids from [`producer_ids::ProducerIds`]; the per-partition
//! sequence state lives in the core's log. Consumer groups are coordinated by
//! [`coordinator::Coordinator`] over the core's group state machine. No replication (yet).
//!
//! [`metrics`] holds the metric handles (per broker, topic and partition), recorded into the
//! broker's own `herald_metrics::Metrics` and rendered on `/metrics`.
//!
//! Small shared pieces: `clock` is the broker's wall clock (`now_ms`); `fs` also holds
//! `write_atomically`, which writes the metadata files (topic.meta, producers.meta, group
//! offsets).

pub mod broker;
mod clock;
pub mod coordinator;
pub mod fs;
pub mod group_commit;
pub(crate) use herald_meta as meta;
pub mod metrics;
pub mod producer_ids;
pub mod schema_cache;
pub mod security;
pub mod server;
pub mod tls;

pub use herald_broker_core::groups::{Assignor, GroupConfig};
pub use security::SecurityConfig;
pub use server::{serve, Bound, BrokerConfig, ServeError};
pub use tls::TlsSource;
