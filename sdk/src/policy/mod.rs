//! Resilience policies as pure state machines.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod dedup;
