//! herald: the crate applications depend on to produce and consume Herald events.
//!
//! This first layer holds the resilience policies every producer and consumer composes, each a
//! small pure state machine that takes `now` (and, where randomness is needed, a uniform
//! sample) as parameters, so it is tested by feeding instants rather than by sleeping:
//!
//! - [`policy::backoff`]: exponential backoff with full jitter, bounded by attempts and a
//!   delivery deadline;
//! - [`policy::budget`]: a retry budget (token bucket) that stops retry storms;
//! - [`policy::breaker`]: a count-window circuit breaker (closed, open, half-open);
//! - [`policy::dedup`]: an idempotency-key window, the in-memory core of the consumer inbox.
//!
//! Producers, consumers, serializers and the dead-letter topic build on these (see the SDK
//! issue); defaults follow `reference/sdk-defaults.md` §9.

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
pub mod schemas;

pub use client::{Client, ClientConfig, Consumer, Event, Producer, ProducerOptions, SendOptions};
pub use consumer::{HandlerError, RawConsumer};
pub use herald_broker_client::Trust;
pub use message::{Message, SchemaDependency, SchemaFormat, SchemaInfo};
pub use producer::{Delivery, RawProducer};
pub use schemas::{Registration, SubjectStrategy};
