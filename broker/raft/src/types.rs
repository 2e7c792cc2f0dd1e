//! The Raft type configuration of a partition group.

use std::fmt;

/// A produced batch proposed to a partition group: its bytes as the leader stamped them
/// (append time set; the base offset is stamped by each replica from its own log end, the
/// same everywhere). Shared, not copied, as openraft passes the entry around (the log, the
/// replication to each follower, the recent entries a replica keeps for it).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub batch: bytes::Bytes,
    /// Whether a replica counts the entry as stored only once it is synced (`Fsync`
    /// durability), or once written (`Memory`: it survives a process crash, not a machine's).
    /// Entries read back from a log are taken to need it.
    #[serde(default = "needs_sync")]
    pub sync: bool,
}

fn needs_sync() -> bool {
    true
}

impl Proposal {
    /// A batch every replica syncs before counting it as stored.
    pub fn new(batch: impl Into<bytes::Bytes>) -> Self {
        Self {
            batch: batch.into(),
            sync: true,
        }
    }

    /// The same batch, counted as stored once written (not synced).
    pub fn unsynced(mut self) -> Self {
        self.sync = false;
        self
    }
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sync = if self.sync { "" } else { ", unsynced" };
        write!(f, "Proposal({} bytes{sync})", self.batch.len())
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where an applied entry's records are in the partition: offsets `[base_offset,
/// next_offset)` (empty for openraft's own entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub base_offset: i64,
    pub next_offset: i64,
}

openraft::declare_raft_types!(
    /// A partition group: node ids are the broker node ids, log ids (term, index).
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// An entry of a partition group.
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
/// A log id (term, index) of a partition group.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote of a partition group.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A membership of a partition group.
pub type Membership = openraft::Membership<u64, openraft::BasicNode>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
