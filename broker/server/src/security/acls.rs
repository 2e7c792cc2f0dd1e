//! The broker's ACLs: an [`Authorizer`] kept in `acls.meta` in the data directory
//! ([`herald_auth::stored_acls`], rewritten atomically before a change is applied), seeded at start
//! from an optional TOML file ([`herald_auth::acl::AclFile`]). Readers take a read lock;
//! every change bumps a generation that per-connection decision caches compare against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use herald_auth::acl::{
    AclEntry, AclError, AclFile, AclFilter, Acls, Authorizer, PatternType, Principal, ResourceType,
    ACLS_MAX,
};
use herald_auth::stored_acls::{self, StoredAclsError};
/// Largest seed file read, in bytes.
pub const ACL_SEED_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AclStoreError {
    #[error(transparent)]
    Stored(#[from] StoredAclsError),
    #[error("{path}: {reason}")]
    Seed { path: String, reason: String },
    #[error(transparent)]
    Invalid(#[from] AclError),
}

pub struct AclStore {
    dir: PathBuf,
    authorizer: RwLock<Authorizer>,
    /// Bumped by every change.
    generation: AtomicU64,
    /// One change at a time: each writes the whole set before applying it. Holds the
    /// version of the cluster's entries last followed (see [`AclStore::follow`]).
    writing: Mutex<Option<i64>>,
}

impl AclStore {
    /// Reads `data_dir/acls.meta` (none yet is an empty set), then adds the entries of `seed`
    /// that are missing (and writes them down).
    pub fn open(
        data_dir: &Path,
        super_users: BTreeSet<Principal>,
        seed: Option<&Path>,
    ) -> Result<Self, AclStoreError> {
        let stored = stored_acls::read(&stored_acls::path(data_dir))?;
        let store = Self {
            dir: data_dir.to_owned(),
            authorizer: RwLock::new(Authorizer::new(Acls::from_entries(stored)?, super_users)?),
            generation: AtomicU64::new(0),
            writing: Mutex::new(None),
        };
        if let Some(seed) = seed {
            let entries = read_seed(seed)?;
            let added = store.add(entries)?;
            tracing::info!(seed = %seed.display(), added, "ACL seed file applied");
        }
        Ok(store)
    }

    fn read(&self) -> RwLockReadGuard<'_, Authorizer> {
        self.authorizer.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the current ACLs and super users.
    pub fn with<T>(&self, f: impl FnOnce(&Authorizer) -> T) -> T {
        f(&self.read())
    }

    /// Changes with every change of the entries.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The entries `filter` matches, in order.
    pub fn list(&self, filter: &AclFilter) -> Vec<AclEntry> {
        self.read().acls().list(filter)
    }

    /// Adds `entries`; returns how many were not there already.
    pub fn add(&self, entries: Vec<AclEntry>) -> Result<u32, AclStoreError> {
        self.change(|acls| {
            let mut added = 0;
            for entry in entries {
                if acls.add(entry)? {
                    added += 1;
                }
            }
            Ok((added, added > 0))
        })
    }

    /// Removes the entries `filter` matches; returns them.
    pub fn remove(&self, filter: &AclFilter) -> Result<Vec<AclEntry>, AclStoreError> {
        self.change(|acls| {
            let removed = acls.remove_matching(filter);
            let changed = !removed.is_empty();
            Ok((removed, changed))
        })
    }

    /// Removes the literal ALLOW entries naming topic `name` (called when the topic is
    /// deleted, so that a topic created again under the name does not inherit them). Prefixed
    /// entries and `*` stay: they name no topic in particular; DENY entries stay: removing one
    /// could only open access.
    pub fn remove_topic(&self, name: &str) -> Result<Vec<AclEntry>, AclStoreError> {
        if name == herald_auth::acl::WILDCARD {
            return Ok(Vec::new());
        }
        self.remove(&AclFilter {
            resource_type: Some(ResourceType::Topic),
            pattern_type: Some(PatternType::Literal),
            name: Some(name.to_owned()),
            permission: Some(herald_auth::acl::Permission::Allow),
            ..AclFilter::any()
        })
    }

    /// Makes the entries exactly `entries`, the cluster's as of `version` (the controller
    /// log's offset they were read at): a cluster node following its controller's, no file
    /// written (the controller's log keeps them). An older version than one followed before
    /// changes nothing (two followers of one node may read the cluster's entries at different
    /// times). Whether they changed.
    pub fn follow(
        &self,
        entries: &BTreeSet<AclEntry>,
        version: i64,
    ) -> Result<bool, AclStoreError> {
        let mut followed = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if followed.is_some_and(|seen| seen >= version) {
            return Ok(false);
        }
        *followed = Some(version);
        let current: BTreeSet<AclEntry> = self.read().acls().iter().cloned().collect();
        if current == *entries {
            return Ok(false);
        }
        let acls = Acls::from_entries(entries.iter().cloned())?;
        *self
            .authorizer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .acls_mut() = acls;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Applies `edit` to a copy, writes the copy, and only then keeps it. Nothing changes (and
    /// nothing is written) when `edit` fails or says it changed nothing.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Acls) -> Result<(T, bool), AclStoreError>,
    ) -> Result<T, AclStoreError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut acls = self.read().acls().clone();
        let (answer, changed) = edit(&mut acls)?;
        if !changed {
            return Ok(answer);
        }
        let entries: Vec<AclEntry> = acls.iter().cloned().collect();
        stored_acls::write(&self.dir, &entries)?;
        *self
            .authorizer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .acls_mut() = acls;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(answer)
    }
}

/// The entries of a TOML seed file (`[[acl]]` tables; see [`AclFile`]).
pub(crate) fn read_seed(path: &Path) -> Result<Vec<AclEntry>, AclStoreError> {
    let failed = |reason: String| AclStoreError::Seed {
        path: path.display().to_string(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| failed(e.to_string()))?
        .len();
    if size > ACL_SEED_BYTES_MAX {
        return Err(failed(format!(
            "{size} bytes, more than {ACL_SEED_BYTES_MAX}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let file: AclFile = toml::from_str(&text).map_err(|e| failed(e.to_string()))?;
    if file.acl.len() > ACLS_MAX {
        return Err(failed(format!(
            "{} entries, more than {ACLS_MAX}",
            file.acl.len()
        )));
    }
    Ok(file.acl)
}

#[cfg(test)]
mod tests {
    use herald_auth::acl::{Operation, Permission};

    use super::*;

    fn alice() -> Principal {
        Principal::user("alice").expect("principal")
    }

    fn entry(name: &str, pattern_type: PatternType, operation: Operation) -> AclEntry {
        AclEntry::new(
            alice(),
            ResourceType::Topic,
            pattern_type,
            name,
            operation,
            Permission::Allow,
        )
        .expect("entry")
    }

    fn allowed(store: &AclStore, operation: Operation, topic: &str) -> bool {
        store.with(|a| a.is_allowed(&alice(), operation, ResourceType::Topic, topic))
    }

    #[test]
    fn entries_are_kept_across_opens_and_changes_bump_the_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AclStore::open(dir.path(), BTreeSet::new(), None).expect("open");
        assert!(!allowed(&store, Operation::Write, "orders"));
        let generation = store.generation();
        let added = store
            .add(vec![
                entry("orders", PatternType::Literal, Operation::Write),
                entry("orders", PatternType::Literal, Operation::Write),
                entry("team-a.", PatternType::Prefixed, Operation::Read),
            ])
            .expect("add");
        assert_eq!(added, 2, "a repeated entry is added once");
        assert!(store.generation() > generation);
        assert!(allowed(&store, Operation::Write, "orders"));
        assert!(allowed(&store, Operation::Read, "team-a.events"));

        let generation = store.generation();
        assert_eq!(
            store
                .add(vec![entry(
                    "orders",
                    PatternType::Literal,
                    Operation::Write
                )])
                .expect("add"),
            0
        );
        assert_eq!(
            store.generation(),
            generation,
            "no change, no new generation"
        );

        let reopened = AclStore::open(dir.path(), BTreeSet::new(), None).expect("reopen");
        assert_eq!(reopened.list(&AclFilter::any()).len(), 2);
        assert!(allowed(&reopened, Operation::Write, "orders"));
    }

    #[test]
    fn deleting_a_topic_removes_its_literal_grants_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AclStore::open(dir.path(), BTreeSet::new(), None).expect("open");
        let deny = AclEntry::new(
            alice(),
            ResourceType::Topic,
            PatternType::Literal,
            "orders",
            Operation::Delete,
            Permission::Deny,
        )
        .expect("entry");
        store
            .add(vec![
                entry("orders", PatternType::Literal, Operation::Write),
                entry("ord", PatternType::Prefixed, Operation::Read),
                entry("other", PatternType::Literal, Operation::Read),
                deny.clone(),
            ])
            .expect("add");
        let removed = store.remove_topic("orders").expect("remove");
        assert_eq!(
            removed,
            vec![entry("orders", PatternType::Literal, Operation::Write)]
        );
        assert!(!allowed(&store, Operation::Write, "orders"));
        assert!(
            allowed(&store, Operation::Read, "orders"),
            "the prefix stays"
        );
        assert!(allowed(&store, Operation::Read, "other"));
        let reopened = AclStore::open(dir.path(), BTreeSet::new(), None).expect("reopen");
        let left = reopened.list(&AclFilter::any());
        assert_eq!(left.len(), 3);
        assert!(
            left.contains(&deny),
            "a DENY stays: removing it could only open access"
        );
    }

    #[test]
    fn a_seed_file_adds_its_entries_once_and_a_bad_one_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("acls.toml");
        std::fs::write(
            &seed,
            "[[acl]]\nprincipal = \"User:alice\"\nresource_type = \"topic\"\nname = \"orders\"\noperation = \"write\"\npermission = \"allow\"\n",
        )
        .expect("seed");
        let store = AclStore::open(dir.path(), BTreeSet::new(), Some(&seed)).expect("open");
        assert!(allowed(&store, Operation::Write, "orders"));
        drop(store);
        let store = AclStore::open(dir.path(), BTreeSet::new(), Some(&seed)).expect("reopen");
        assert_eq!(store.list(&AclFilter::any()).len(), 1);

        std::fs::write(&seed, "[[acl]]\nprincipal = \"alice\"\n").expect("seed");
        let error = AclStore::open(dir.path(), BTreeSet::new(), Some(&seed))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("acls.toml"), "{error}");
    }

    #[test]
    fn a_damaged_acl_file_is_refused_naming_it_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(AclStore::open(dir.path(), BTreeSet::new(), None)
            .expect("no file yet")
            .list(&AclFilter::any())
            .is_empty());
        std::fs::write(stored_acls::path(dir.path()), "principal = alice").expect("write");
        let error = AclStore::open(dir.path(), BTreeSet::new(), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("acls.meta"), "{error}");
    }

    /// Following the cluster's entries: a newer version replaces them, an older one read late
    /// by another follower does not put them back.
    #[test]
    fn following_takes_newer_versions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AclStore::open(dir.path(), BTreeSet::new(), None).expect("open");
        let grant = entry("orders", PatternType::Literal, Operation::Read);
        let with: BTreeSet<AclEntry> = [grant.clone()].into();
        assert!(store.follow(&with, 5).expect("follow"));
        assert!(allowed(&store, Operation::Read, "orders"));
        assert!(
            store.follow(&BTreeSet::new(), 7).expect("follow"),
            "removed at 7"
        );
        assert!(
            !store.follow(&with, 6).expect("follow"),
            "an older read changes nothing"
        );
        assert!(!allowed(&store, Operation::Read, "orders"));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let store = AclStore::open(&data, BTreeSet::new(), None).expect("open");
        // The data directory is now a file: the write fails, and the entry is not applied.
        std::fs::remove_dir(&data).expect("rmdir");
        std::fs::write(&data, b"not a directory").expect("file");
        assert!(store
            .add(vec![entry(
                "orders",
                PatternType::Literal,
                Operation::Write
            )])
            .is_err());
        assert!(!allowed(&store, Operation::Write, "orders"));
        assert_eq!(store.generation(), 0);
    }
}
