//! Replication glue: the one crate that names openraft types (the rest of the broker does
//! not). A replicated partition is one Raft group whose log *is* the partition's segment log:
//!
//! - [`config`]: openraft's configuration for a group ([`config::group_config`], timing);
//! - [`types`]: the group's type configuration ([`TypeConfig`]): entries carry a produced
//!   batch ([`Proposal`]), answers say where it landed ([`Applied`]), log ids are
//!   (term, index) (`leader_id_std`);
//! - [`entry`]: an entry as a stored batch and back — a produced batch is stored as it is,
//!   openraft's own entries (a new leader's blank entry, a membership change) as one-record
//!   control batches (`herald_wire::batch::ATTRIBUTE_CONTROL`), which consumers skip;
//! - [`net`] and [`rpc`]: the transport between nodes (QUIC, mutual TLS, ALPN
//!   `herald-raft/1`, one connection per node pair for every group) and its message bytes;
//! - [`node`]: a cluster node — the controller group, the metadata image folded from its
//!   committed commands, and the partition groups the image assigns to the node;
//! - [`store`]: [`Replica`], a partition's log with its Raft bookkeeping
//!   (`herald_broker_core::replica::ReplicaMeta`, kept in `raft.meta`), and [`LogStore`] and
//!   [`StateMachine`], openraft's storage traits over one shared replica; appends return
//!   once written and a per-replica flusher (`flush`) syncs what arrived meanwhile with one
//!   fsync off the async workers, then acknowledges each append in order.
//!
//! A Raft index is the batch's ordinal in the partition log
//! (`PartitionLog::next_ordinal`); record offsets stay what consumers use. See
//! ARCHITECTURE.md, "Replication".

pub mod config;
pub mod entry;
mod flush;
pub mod net;
pub mod node;
pub mod rpc;
pub mod store;
pub mod types;

pub use store::{LogStore, Replica, StateMachine};
pub use types::{Applied, Proposal, TypeConfig};
