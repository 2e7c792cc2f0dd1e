//! herald: the crate applications depend on to produce and consume Herald events.
//!
//! What lives where:
//!
//! - [`client`]: `Client::connect` and the typed `Producer<T>` / `Consumer<T>` over the raw
//!   layer, with schema registration ([`schemas`]) and payload framing ([`codec`]);
//! - [`producer`]: `RawProducer` (per-partition batching, idempotent pipelines, delivery
//!   futures, retries, breaker, bounded buffer);
//! - [`consumer`]: `RawConsumer` (group membership, at-least-once handling, key lanes,
//!   retries, dead letters, inbox dedup);
//! - [`policy`]: the resilience policies both compose, each a small pure state machine that
//!   takes `now` (and, where randomness is needed, a uniform sample) as parameters, so it is
//!   tested by feeding instants rather than by sleeping: [`policy::backoff`] (exponential
//!   backoff with full jitter), [`policy::budget`] (a retry budget), [`policy::breaker`] (a
//!   count-window circuit breaker), [`policy::dedup`] (the idempotency-key window of the
//!   [`inbox`]);
//! - [`partitioner`] (Kafka's murmur2 mapping), [`message`] (the `Message` trait codegen
//!   implements), [`dynamic`] (schemas known only at run time, for tools), [`metrics`] (the
//!   `metrics` facade handles), [`codegen`] (what generated code names).
//!
//! Defaults follow `reference/sdk-defaults.md` §9.

pub mod client;
pub mod codec;
pub mod codegen;
pub mod consumer;
pub mod dynamic;
pub mod inbox;
pub mod message;
pub mod metrics;
pub mod partitioner;
pub mod policy;
pub mod producer;
pub mod schema_info;
pub mod schemas;

pub use client::{Client, ClientConfig, Consumer, Event, Producer, ProducerOptions, SendOptions};
pub use consumer::{HandlerError, RawConsumer};
pub use herald_auth::local::LOCAL_CREDENTIALS_FILE;
pub use herald_broker_client::{Credentials, Trust};
pub use message::{Message, SchemaDependency, SchemaFormat, SchemaInfo};
pub use producer::{Delivery, RawProducer};
pub use schemas::{Registration, SubjectStrategy};
