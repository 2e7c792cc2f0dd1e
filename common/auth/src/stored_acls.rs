//! The stored ACLs, `acls.meta` in the broker's data directory: a versioned [`herald_meta`]
//! envelope around the entries, rewritten atomically by the broker before a change applies
//! (`herald acl add|remove`), and read by a registry serving the same users
//! (`herald registry serve --users`), whose SUBJECT entries it enforces.

use std::path::{Path, PathBuf};

use herald_meta as meta;
use serde::{Deserialize, Serialize};

use crate::acl::AclEntry;

/// The stored ACLs' file name in a data directory.
pub const FILE: &str = "acls.meta";
/// The kind and format version of `acls.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "acls",
    version: 1,
};

#[derive(Debug, thiserror::Error)]
pub enum StoredAclsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Stored(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

#[derive(Deserialize)]
struct AclsIn {
    entries: Vec<AclEntry>,
}

#[derive(Serialize)]
struct AclsOut<'a> {
    entries: &'a [AclEntry],
}

/// Where the ACLs of the data directory `data_dir` are kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The entries stored at `path` (none when the file does not exist yet).
pub fn read(path: &Path) -> Result<Vec<AclEntry>, StoredAclsError> {
    match meta::read_enveloped::<AclsIn>(path, KIND) {
        Ok(stored) => Ok(stored.map_or_else(Vec::new, |file| file.entries)),
        Err(meta::ReadError::Io { path, source }) => Err(StoredAclsError::Read {
            path,
            reason: source.to_string(),
        }),
        Err(e) => Err(StoredAclsError::Stored(e.to_string())),
    }
}

/// Replaces the entries stored in `data_dir`, atomically and durably.
pub fn write(data_dir: &Path, entries: &[AclEntry]) -> Result<(), StoredAclsError> {
    meta::write(data_dir, FILE, KIND, &AclsOut { entries }).map_err(|e| StoredAclsError::Write {
        path: path(data_dir).display().to_string(),
        reason: e.to_string(),
    })
}
