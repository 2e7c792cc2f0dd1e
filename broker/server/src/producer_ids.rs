//! Idempotent-producer ids: a persistent counter plus the id and epoch of every named
//! producer, so a named producer keeps its id across restarts and each new instance fences the
//! previous one with a higher epoch. Stored in `producers.meta` (a versioned [`crate::meta`]
//! envelope; files from before it, TSV, are still read), rewritten atomically before an id is
//! handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::meta::{self, MetaError};

const FILE: &str = "producers.meta";
/// The kind and format version of `producers.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "producers",
    version: 1,
};
/// Named producers remembered.
pub const NAMED_PRODUCERS_MAX: usize = 100_000;
/// Named producers one principal may own (with authentication on): one user cannot use up
/// [`NAMED_PRODUCERS_MAX`] for everyone.
pub const NAMED_PRODUCERS_PER_PRINCIPAL_MAX: usize = 1000;
/// Producer ids whose owner is remembered; beyond, the oldest (smallest) ids are forgotten
/// (an id whose owner is forgotten may be used by anyone allowed to write its topic).
pub const OWNED_IDS_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: producer-id format version {version} is newer than this broker reads (up to version {supported}); run a newer broker or restore the file from a backup")]
    UnsupportedVersion {
        path: String,
        version: u32,
        supported: u32,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot persist producer ids: {0}")]
    Write(std::io::Error),
    #[error("invalid producer name: {0}")]
    InvalidName(String),
    #[error("the broker already remembers {NAMED_PRODUCERS_MAX} named producers")]
    TooMany,
    #[error("producer name '{name}' belongs to {owner}")]
    NotOwner { name: String, owner: String },
    #[error("User:{0} already owns {NAMED_PRODUCERS_PER_PRINCIPAL_MAX} named producers")]
    TooManyForPrincipal(String),
}

impl From<MetaError> for ProducerIdError {
    fn from(error: MetaError) -> Self {
        match error {
            MetaError::UnsupportedVersion {
                path,
                found,
                supported,
                ..
            } => ProducerIdError::UnsupportedVersion {
                path,
                version: found,
                supported,
            },
            MetaError::Corrupt { path, reason } => ProducerIdError::Corrupt { path, reason },
        }
    }
}

/// A named producer's id and current epoch, and the principal it belongs to (with
/// authentication on: the first that used the name; kept as long as the name is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Named {
    id: i64,
    epoch: i16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// The ids; also the version 1 payload of `producers.meta` (a change of shape needs a new
/// version in [`KIND`]; `owners` was added compatibly: absent in older files).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Table {
    next_id: i64,
    named: BTreeMap<String, Named>,
    /// The principal each id was handed to (with authentication on), by id: a named producer
    /// belongs to the principal that first used its name, and nobody else may fence it or
    /// write under its id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    owners: BTreeMap<i64, String>,
}

impl Table {
    /// The contents of `producers.meta` at `path`: the envelope, or the TSV written before it
    /// (`next_id`, then `id<TAB>epoch<TAB>name` lines).
    fn read(path: &Path, bytes: &[u8]) -> Result<Self, ProducerIdError> {
        if let Some(table) = meta::decode::<Table>(path, bytes, KIND)? {
            return Ok(table);
        }
        std::str::from_utf8(bytes)
            .ok()
            .and_then(Self::decode_tsv)
            .ok_or_else(|| ProducerIdError::Read {
                path: path.display().to_string(),
                reason: "malformed".to_owned(),
            })
    }

    fn decode_tsv(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let next_id = lines.next()?.trim().parse().ok()?;
        let mut named = BTreeMap::new();
        for line in lines {
            let mut fields = line.splitn(3, '\t');
            let id = fields.next()?.parse().ok()?;
            let epoch = fields.next()?.parse().ok()?;
            named.insert(
                fields.next()?.to_owned(),
                Named {
                    id,
                    epoch,
                    owner: None,
                },
            );
        }
        Some(Self {
            next_id,
            named,
            owners: BTreeMap::new(),
        })
    }
}

/// Whom a producer id was handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerOwner {
    /// No such id was handed out yet: a batch claiming it is forged.
    NeverIssued,
    /// Handed out without authentication, or its owner was forgotten.
    Unknown,
    /// The principal (user name) it was handed to.
    Principal(String),
}

pub struct ProducerIds {
    dir: PathBuf,
    table: Mutex<Table>,
}

impl ProducerIds {
    pub fn open(dir: &Path) -> Result<Self, ProducerIdError> {
        let path = dir.join(FILE);
        let table = match std::fs::read(&path) {
            Ok(bytes) => Table::read(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table {
                next_id: 1,
                named: BTreeMap::new(),
                owners: BTreeMap::new(),
            },
            Err(e) => {
                return Err(ProducerIdError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            table: Mutex::new(table),
        })
    }

    /// A producer id and epoch for `name` (empty: an anonymous, fresh id), persisted first.
    /// With an `owner` (the asking principal, when authentication is on), a named producer
    /// already owned by someone else is refused ([`ProducerIdError::NotOwner`]), and the id
    /// handed out is recorded as the owner's.
    pub fn init(&self, name: &str, owner: Option<&str>) -> Result<(i64, i16), ProducerIdError> {
        if name.chars().any(char::is_control) {
            return Err(ProducerIdError::InvalidName(
                "control characters are not allowed".to_owned(),
            ));
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(owner), Some(named)) = (owner, table.named.get(name)) {
            if let Some(current) = &named.owner {
                if current != owner {
                    return Err(ProducerIdError::NotOwner {
                        name: name.to_owned(),
                        owner: format!("User:{current}"),
                    });
                }
            }
        }
        if let Some(owner) = owner {
            let new_name = !name.is_empty() && !table.named.contains_key(name);
            if new_name
                && table
                    .named
                    .values()
                    .filter(|named| named.owner.as_deref() == Some(owner))
                    .count()
                    >= NAMED_PRODUCERS_PER_PRINCIPAL_MAX
            {
                return Err(ProducerIdError::TooManyForPrincipal(owner.to_owned()));
            }
        }
        let mut next = table.clone();
        let answer = if name.is_empty() {
            let id = next.next_id;
            next.next_id += 1;
            (id, 0)
        } else {
            match next.named.get(name).map(|named| (named.id, named.epoch)) {
                Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1),
                // Epochs exhausted: a new id, which no zombie can share.
                Some(_) | None => {
                    if next.named.len() >= NAMED_PRODUCERS_MAX && !next.named.contains_key(name) {
                        return Err(ProducerIdError::TooMany);
                    }
                    let id = next.next_id;
                    next.next_id += 1;
                    (id, 0)
                }
            }
        };
        if !name.is_empty() {
            let (id, epoch) = answer;
            let owner = owner
                .map(str::to_owned)
                .or_else(|| next.named.get(name).and_then(|named| named.owner.clone()));
            next.named
                .insert(name.to_owned(), Named { id, epoch, owner });
        }
        if let Some(owner) = owner {
            next.owners.insert(answer.0, owner.to_owned());
            if next.owners.len() > OWNED_IDS_MAX {
                // Forget an anonymous id (named producers keep their owner with their name):
                // the asking principal's oldest first, so that one principal asking for ids
                // over and over forgets its own, not others'.
                let named: std::collections::HashSet<i64> =
                    next.named.values().map(|named| named.id).collect();
                let forget = next
                    .owners
                    .iter()
                    .find(|(id, who)| {
                        **id != answer.0 && who.as_str() == owner && !named.contains(id)
                    })
                    .or_else(|| {
                        next.owners
                            .iter()
                            .find(|(id, _)| **id != answer.0 && !named.contains(id))
                    })
                    .map(|(id, _)| *id);
                if let Some(id) = forget {
                    next.owners.remove(&id);
                }
            }
        }
        meta::write(&self.dir, FILE, KIND, &next).map_err(ProducerIdError::Write)?;
        *table = next;
        Ok(answer)
    }

    /// Whom producer id `id` was handed to.
    pub fn owner(&self, id: i64) -> ProducerOwner {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if id >= table.next_id {
            return ProducerOwner::NeverIssued;
        }
        match table.owners.get(&id) {
            Some(owner) => ProducerOwner::Principal(owner.clone()),
            None => ProducerOwner::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_producers_keep_their_id_and_bump_their_epoch_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        let (checkout, epoch) = ids.init("checkout", None).expect("init");
        assert_eq!(epoch, 0);
        let anonymous = ids.init("", None).expect("anonymous").0;
        assert_ne!(anonymous, checkout);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert_eq!(ids.init("checkout", None).expect("init"), (checkout, 1));
        assert!(
            ids.init("", None).expect("anonymous").0 > anonymous,
            "ids are never reused"
        );
        assert!(ids.init("bad\nname", None).is_err());
    }

    #[test]
    fn a_named_producer_belongs_to_the_principal_that_first_used_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        let (id, _) = ids.init("checkout", Some("alice")).expect("init");
        assert_eq!(ids.owner(id), ProducerOwner::Principal("alice".to_owned()));
        assert_eq!(ids.owner(id + 1), ProducerOwner::NeverIssued);
        assert!(matches!(
            ids.init("checkout", Some("mallory")),
            Err(ProducerIdError::NotOwner { .. })
        ));
        assert_eq!(ids.init("checkout", Some("alice")).expect("init"), (id, 1));
        let (anonymous, _) = ids.init("", Some("bob")).expect("init");
        assert_eq!(
            ids.owner(anonymous),
            ProducerOwner::Principal("bob".to_owned())
        );
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert!(
            matches!(
                ids.init("checkout", Some("mallory")),
                Err(ProducerIdError::NotOwner { .. })
            ),
            "kept across restarts"
        );
        assert_eq!(
            ids.owner(anonymous),
            ProducerOwner::Principal("bob".to_owned())
        );
    }

    #[test]
    fn one_principal_cannot_use_up_the_named_producers_for_everyone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        for n in 0..NAMED_PRODUCERS_PER_PRINCIPAL_MAX {
            ids.init(&format!("p-{n}"), Some("mallory")).expect("init");
        }
        assert!(matches!(
            ids.init("one-more", Some("mallory")),
            Err(ProducerIdError::TooManyForPrincipal(_))
        ));
        // Her own names still work (a restart bumps the epoch), and others are not affected.
        assert!(ids.init("p-0", Some("mallory")).is_ok());
        assert!(ids.init("checkout", Some("alice")).is_ok());
    }

    #[test]
    fn an_old_tsv_file_is_read_unchanged_and_rewritten_as_an_envelope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        // Exactly what the TSV writer produced: next id, then id, epoch, name by name.
        std::fs::write(&path, "5\n3\t0\tbilling\n1\t2\tcheckout\n").expect("write");
        let ids = ProducerIds::open(dir.path()).expect("open old file");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"5\n3\t0\tbilling\n1\t2\tcheckout\n",
            "opening does not rewrite"
        );
        assert_eq!(ids.init("checkout", None).expect("init"), (1, 3));
        let bytes = std::fs::read(&path).expect("read");
        assert!(meta::is_versioned(&bytes), "rewritten as an envelope");
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert_eq!(ids.init("billing", None).expect("init"), (3, 1));
        assert_eq!(ids.init("checkout", None).expect("init"), (1, 4));
        assert_eq!(ids.init("", None).expect("anonymous"), (5, 0));
    }

    #[test]
    fn a_damaged_file_is_refused_with_a_checksum_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        ids.init("checkout", None).expect("init");
        drop(ids);
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"checkout\""), "{text}");
        std::fs::write(&path, text.replace("\"checkout\"", "\"checkous\"")).expect("write");
        let Err(error) = ProducerIds::open(dir.path()) else {
            panic!("a damaged producers.meta was accepted");
        };
        let message = error.to_string();
        assert!(
            matches!(error, ProducerIdError::Corrupt { .. }),
            "{message}"
        );
        assert!(message.contains("producers.meta"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
    }

    #[test]
    fn a_newer_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let newer = meta::Kind {
            name: "producers",
            version: 2,
        };
        let bytes = meta::encode(newer, &Table::default()).expect("encode");
        std::fs::write(dir.path().join(FILE), bytes).expect("write");
        let Err(error) = ProducerIds::open(dir.path()) else {
            panic!("a newer producers.meta was accepted");
        };
        let message = error.to_string();
        assert!(
            matches!(
                error,
                ProducerIdError::UnsupportedVersion {
                    version: 2,
                    supported: 1,
                    ..
                }
            ),
            "{message}"
        );
        assert!(message.contains("producers.meta"), "{message}");
        assert!(message.contains("version 2"), "{message}");
    }
}
