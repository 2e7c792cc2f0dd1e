//! Idempotent-producer ids: a persistent counter plus the id and epoch of every named
//! producer, so a named producer keeps its id across restarts and each new instance fences the
//! previous one with a higher epoch. Stored in `producers.meta` (a versioned [`crate::meta`]
//! envelope; files from before it, TSV, are still read), rewritten atomically before an id is
//! handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use herald_broker_core::producer_ids::{Named, ProducerIdRefusal, ProducerIdTable};
pub use herald_broker_core::producer_ids::{
    ProducerOwner, NAMED_PRODUCERS_MAX, NAMED_PRODUCERS_PER_PRINCIPAL_MAX, OWNED_IDS_MAX,
};

use crate::meta::{self, MetaError};

const FILE: &str = "producers.meta";
/// The kind and format version of `producers.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "producers",
    version: 1,
};
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
    #[error(transparent)]
    Refused(#[from] ProducerIdRefusal),
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

/// The table, the version 1 payload of `producers.meta` (a change of shape needs a new
/// version in [`KIND`]).
type Table = ProducerIdTable;

/// Reading `producers.meta`.
trait ReadTable: Sized {
    fn read(path: &Path, bytes: &[u8]) -> Result<Self, ProducerIdError>;
    fn decode_tsv(text: &str) -> Option<Self>;
}

impl ReadTable for Table {
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

pub struct ProducerIds {
    dir: PathBuf,
    table: Mutex<Table>,
}

impl ProducerIds {
    pub fn open(dir: &Path) -> Result<Self, ProducerIdError> {
        let path = dir.join(FILE);
        let table = match std::fs::read(&path) {
            Ok(bytes) => Table::read(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::default(),
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

    /// A producer id and epoch for `name` (see [`ProducerIdTable::init`]), persisted first.
    pub fn init(&self, name: &str, owner: Option<&str>) -> Result<(i64, i16), ProducerIdError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = table.clone();
        let answer = next.init(name, owner)?;
        meta::write(&self.dir, FILE, KIND, &next).map_err(ProducerIdError::Write)?;
        *table = next;
        Ok(answer)
    }

    /// Whom producer id `id` was handed to.
    pub fn owner(&self, id: i64) -> ProducerOwner {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .owner(id)
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
            Err(ProducerIdError::Refused(ProducerIdRefusal::NotOwner { .. }))
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
                Err(ProducerIdError::Refused(ProducerIdRefusal::NotOwner { .. }))
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
            Err(ProducerIdError::Refused(
                ProducerIdRefusal::TooManyForPrincipal(_)
            ))
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
