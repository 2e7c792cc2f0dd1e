//! herald-registry: a Confluent-Schema-Registry-compatible REST API for Avro and Protobuf
//! schemas, stored in sled.
//!
//! Layers, outside in: [`server`] (HTTP, limits, auth, metrics) → [`api`] (thin handlers) →
//! [`registry::Registry`] (Confluent's rules) → [`state::State`] (in-memory, pure) and
//! [`store::Store`] (sled, flushed before every acknowledgement). Compatibility itself is
//! decided by `herald-schema`; this crate never re-implements it.
//!
//! What it does not do: JSON Schema (not yet), schema contexts beyond the default `.`,
//! Confluent 7.4+ data-contract metadata and rule sets (accepted and ignored).

pub mod api;
pub mod auth;
pub mod cache;
pub mod error;
mod metrics;
pub mod model;
pub mod registry;
pub mod server;
pub mod state;
pub mod store;

pub use registry::Registry;
pub use server::{app, serve, AuthSource, RegistryTls, ServerConfig};
pub use store::Store;
