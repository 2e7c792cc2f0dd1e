//! Idempotent-producer ids: a persistent counter plus the id and epoch of every named
//! producer, so a named producer keeps its id across restarts and each new instance fences the
//! previous one with a higher epoch. Stored in `producers.meta`, rewritten atomically before
//! an id is handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fs::write_atomically;

const FILE: &str = "producers.meta";
/// Named producers remembered.
pub const NAMED_PRODUCERS_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot persist producer ids: {0}")]
    Write(std::io::Error),
    #[error("invalid producer name: {0}")]
    InvalidName(String),
    #[error("the broker already remembers {NAMED_PRODUCERS_MAX} named producers")]
    TooMany,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Table {
    next_id: i64,
    named: BTreeMap<String, (i64, i16)>,
}

impl Table {
    fn encode(&self) -> String {
        let mut out = format!("{}\n", self.next_id);
        for (name, (id, epoch)) in &self.named {
            out.push_str(&format!("{id}\t{epoch}\t{name}\n"));
        }
        out
    }

    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let next_id = lines.next()?.trim().parse().ok()?;
        let mut named = BTreeMap::new();
        for line in lines {
            let mut fields = line.splitn(3, '\t');
            let id = fields.next()?.parse().ok()?;
            let epoch = fields.next()?.parse().ok()?;
            named.insert(fields.next()?.to_owned(), (id, epoch));
        }
        Some(Self { next_id, named })
    }
}

pub struct ProducerIds {
    dir: PathBuf,
    table: Mutex<Table>,
}

impl ProducerIds {
    pub fn open(dir: &Path) -> Result<Self, ProducerIdError> {
        let path = dir.join(FILE);
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => Table::decode(&text).ok_or_else(|| ProducerIdError::Read {
                path: path.display().to_string(),
                reason: "malformed".to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table {
                next_id: 1,
                named: BTreeMap::new(),
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
    pub fn init(&self, name: &str) -> Result<(i64, i16), ProducerIdError> {
        if name.chars().any(char::is_control) {
            return Err(ProducerIdError::InvalidName(
                "control characters are not allowed".to_owned(),
            ));
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = table.clone();
        let answer = if name.is_empty() {
            let id = next.next_id;
            next.next_id += 1;
            (id, 0)
        } else {
            match next.named.get(name).copied() {
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
            next.named.insert(name.to_owned(), answer);
        }
        write_atomically(&self.dir, FILE, next.encode().as_bytes())
            .map_err(ProducerIdError::Write)?;
        *table = next;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_producers_keep_their_id_and_bump_their_epoch_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        let (checkout, epoch) = ids.init("checkout").expect("init");
        assert_eq!(epoch, 0);
        let anonymous = ids.init("").expect("anonymous").0;
        assert_ne!(anonymous, checkout);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert_eq!(ids.init("checkout").expect("init"), (checkout, 1));
        assert!(
            ids.init("").expect("anonymous").0 > anonymous,
            "ids are never reused"
        );
        assert!(ids.init("bad\nname").is_err());
    }
}
