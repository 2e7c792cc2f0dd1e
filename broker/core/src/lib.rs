//! herald-broker-core: the broker's logic with no I/O of its own.
//!
//! - [`storage`]: the [`Storage`](storage::Storage) trait a partition writes through, and
//!   [`MemoryStorage`](storage::MemoryStorage), an in-memory implementation that can
//!   simulate a crash (unsynced bytes lost or torn) for tests. The file implementation lives
//!   in `herald-broker`.
//! - [`log`]: a partition's log — segments named by base offset, sparse offset and time
//!   indexes, roll by size and age, retention by age and size, reads by offset and by
//!   timestamp, and recovery that truncates at the first torn or corrupt batch.
//! - [`groups`]: consumer groups — membership, sticky incremental assignment, epochs that
//!   fence zombie commits, static members.
//! - [`producers`]: idempotent-producer state (epochs, sequences, the last five batches)
//!   that turns a retried batch into an acknowledgement of the original offsets.
//! - [`replica`]: a replicated partition's Raft bookkeeping besides its batches (vote, terms,
//!   purged entry), kept in `raft.meta`.
//! - [`cluster`]: the cluster's metadata as a log of commands folded into an image (nodes,
//!   topics, partition → replica assignment, producer ids), the same on every node.
//! - [`validation`]: schema-ID checks of a batch against an oracle of allowed IDs, as a pure
//!   function that says which IDs it still needs to learn.
//!
//! Time is always a parameter (`now_ms`); nothing here reads a clock, spawns a task or opens a
//! socket. This crate never imports tokio, quinn or std::net.

pub mod cluster;
pub mod groups;
pub mod log;
pub mod producer_ids;
pub mod producers;
pub mod replica;
pub mod storage;
pub mod validation;
