//! The registry service: Confluent's registration, lookup, compatibility, delete, config and
//! mode semantics over the in-memory [`State`] and the durable [`Store`].
//!
//! Every write runs under one async gate: plan against the current state (pure), commit the
//! planned ops to the store (atomic, flushed), then apply them in memory and answer. So
//! concurrent registrations of one schema produce one ID and one version, and nothing is
//! acknowledged before it is on disk. Reads never wait for the gate.
//!
//! What lives where (`impl Registry` is spread over the files):
//! - `mod.rs` (here): the request and answer types, the `Registry` itself, `Registry::open`
//!   and the helpers the other files share (the read view, `commit`, the parsed-schema cache).
//! - `write.rs`: everything that takes the write gate: register (`plan_register`), deletes,
//!   config and mode writes; subject name validation.
//! - `read.rs`: lookups by ID, subject and version, compatibility checks, config and mode
//!   reads.
//! - `candidate.rs`: a parsed `Candidate` schema and its content key, reference resolution,
//!   the content-key scheme and the one-time Protobuf rekeying at open.

mod candidate;
mod read;
mod write;

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use herald_schema::SchemaType;

use crate::cache::{ParsedCache, PARSED_CACHE_TEXT_BYTES_MAX};
use crate::error::WriteError;
use crate::model::{SchemaRecord, SchemaReference};
use crate::state::State;
use crate::store::{Op, Store, StoreError};

use candidate::{rekey_protobuf, CONTENT_KEY_SCHEME};

pub use write::validate_subject;

/// A registration, lookup or compatibility request body.
#[derive(Debug, Clone)]
pub struct SchemaRequest {
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<SchemaReference>,
    pub id: Option<u32>,
    pub version: Option<u32>,
}

/// A version of a subject as the API returns it.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub record: Arc<SchemaRecord>,
}

/// The answer of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatOutcome {
    pub is_compatible: bool,
    pub messages: Vec<String>,
}

pub struct Registry {
    state: RwLock<State>,
    store: Store,
    write_gate: tokio::sync::Mutex<()>,
    parsed: Mutex<ParsedCache>,
}

impl Registry {
    pub fn open(store: Store) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let scheme = snapshot.content_key_scheme;
        let mut state = State::from_snapshot(snapshot);
        if scheme < CONTENT_KEY_SCHEME {
            rekey_protobuf(&store, &mut state)?;
        }
        Ok(Self {
            state: RwLock::new(state),
            store,
            write_gate: tokio::sync::Mutex::new(()),
            parsed: Mutex::new(ParsedCache::new(PARSED_CACHE_TEXT_BYTES_MAX)),
        })
    }

    /// A read view of the state. Poisoning cannot leave the state half-applied (ops are
    /// applied by infallible code), so a poisoned lock is simply taken over.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(), WriteError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.store.commit(&ops).await?;
        for op in &ops {
            if let Op::DeleteSchema(id) = op {
                self.parsed_cache().remove(*id);
            }
        }
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(&ops);
        Ok(())
    }

    fn parsed_cache(&self) -> std::sync::MutexGuard<'_, ParsedCache> {
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
