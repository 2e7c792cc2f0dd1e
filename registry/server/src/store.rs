//! Durable storage: one sled tree, records as JSON under prefixed keys. Every change is one
//! atomic batch followed by a flush, so an acknowledged write survives a crash at any point.
//!
//! Key layout (all integers big-endian):
//! `s` id → [`SchemaRecord`]; `v` subject 0x00 version → [`VersionRecord`];
//! `c` 0x00 → global [`ConfigRecord`], `c` 0x01 subject → subject config;
//! `m` 0x00 / `m` 0x01 subject → [`Mode`]; `n` → next schema ID; `k` → how content keys
//! were computed (absent in stores written before Protobuf identity followed Confluent's
//! printed text; see `Registry::open`).

use std::path::Path;

use crate::model::{ConfigRecord, Mode, SchemaRecord, VersionRecord};

/// A storage failure (I/O, corruption). Surfaced to clients as 50001.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

/// One change to the stored registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    PutSchema(u32, SchemaRecord),
    DeleteSchema(u32),
    PutVersion(String, u32, VersionRecord),
    DeleteVersion(String, u32),
    PutConfig(Option<String>, ConfigRecord),
    DeleteConfig(Option<String>),
    PutMode(Option<String>, Mode),
    DeleteMode(Option<String>),
    NextId(u32),
    /// The content-key scheme the stored records follow.
    ContentKeyScheme(u32),
}

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub schemas: Vec<(u32, SchemaRecord)>,
    pub versions: Vec<(String, u32, VersionRecord)>,
    pub configs: Vec<(Option<String>, ConfigRecord)>,
    pub modes: Vec<(Option<String>, Mode)>,
    pub next_id: u32,
    /// 0 when the store predates the marker.
    pub content_key_scheme: u32,
}

pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // Waits for a store this process is still closing (a reopen right after a drop).
        let db = herald_sled::open(
            &sled::Config::new()
                .path(dir.join("registry.sled"))
                .mode(sled::Mode::HighThroughput),
        )?;
        Ok(Self { db })
    }

    /// A temporary store that disappears when dropped (tests and benchmarks).
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Self {
            db: sled::Config::new().temporary(true).open()?,
        })
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot {
            next_id: 1,
            ..Snapshot::default()
        };
        for entry in self.db.iter() {
            let (key, value) = entry?;
            let corrupt = |reason: String| StoreError::Corrupt {
                key: key.to_vec(),
                reason,
            };
            match key.first() {
                Some(b's') => {
                    let id = read_u32(&key[1..]).ok_or_else(|| corrupt("bad id".into()))?;
                    snapshot
                        .schemas
                        .push((id, decode(&value).map_err(corrupt)?));
                }
                Some(b'v') => {
                    let (subject, version) = split_version_key(&key[1..])
                        .ok_or_else(|| corrupt("bad version key".into()))?;
                    snapshot
                        .versions
                        .push((subject, version, decode(&value).map_err(corrupt)?));
                }
                Some(b'c') => snapshot.configs.push((
                    read_scope(&key[1..]).map_err(corrupt)?,
                    decode(&value).map_err(corrupt)?,
                )),
                Some(b'm') => snapshot.modes.push((
                    read_scope(&key[1..]).map_err(corrupt)?,
                    decode(&value).map_err(corrupt)?,
                )),
                Some(b'n') => {
                    snapshot.next_id =
                        read_u32(&value).ok_or_else(|| corrupt("bad next id".into()))?;
                }
                Some(b'k') => {
                    snapshot.content_key_scheme =
                        read_u32(&value).ok_or_else(|| corrupt("bad content key scheme".into()))?;
                }
                _ => return Err(corrupt("unknown key prefix".into())),
            }
        }
        Ok(snapshot)
    }

    /// Applies `ops` atomically and waits until they are on disk.
    pub async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.db.apply_batch(batch(ops))?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// [`Store::commit`] for callers outside a runtime (a migration at open).
    pub fn commit_blocking(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.db.apply_batch(batch(ops))?;
        self.db.flush()?;
        Ok(())
    }
}

fn batch(ops: &[Op]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for op in ops {
        match op {
            Op::PutSchema(id, record) => batch.insert(schema_key(*id), encode(record)),
            Op::DeleteSchema(id) => batch.remove(schema_key(*id)),
            Op::PutVersion(subject, version, record) => {
                batch.insert(version_key(subject, *version), encode(record))
            }
            Op::DeleteVersion(subject, version) => batch.remove(version_key(subject, *version)),
            Op::PutConfig(scope, record) => batch.insert(scope_key(b'c', scope), encode(record)),
            Op::DeleteConfig(scope) => batch.remove(scope_key(b'c', scope)),
            Op::PutMode(scope, mode) => batch.insert(scope_key(b'm', scope), encode(mode)),
            Op::DeleteMode(scope) => batch.remove(scope_key(b'm', scope)),
            Op::NextId(id) => batch.insert(b"n".to_vec(), id.to_be_bytes().to_vec()),
            Op::ContentKeyScheme(scheme) => {
                batch.insert(b"k".to_vec(), scheme.to_be_bytes().to_vec())
            }
        }
    }
    batch
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// `subject 0x00 version(4 bytes)`: the version is the last four bytes (which may be zero).
fn split_version_key(rest: &[u8]) -> Option<(String, u32)> {
    let split = rest.len().checked_sub(5)?;
    if rest[split] != 0 {
        return None;
    }
    let subject = String::from_utf8(rest[..split].to_vec()).ok()?;
    Some((subject, read_u32(&rest[split + 1..])?))
}

fn read_scope(bytes: &[u8]) -> Result<Option<String>, String> {
    match bytes.split_first() {
        Some((0, [])) => Ok(None),
        Some((1, subject)) => String::from_utf8(subject.to_vec())
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Err("bad scope".to_owned()),
    }
}

fn schema_key(id: u32) -> Vec<u8> {
    let mut key = vec![b's'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn version_key(subject: &str, version: u32) -> Vec<u8> {
    let mut key = vec![b'v'];
    key.extend_from_slice(subject.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn scope_key(prefix: u8, scope: &Option<String>) -> Vec<u8> {
    match scope {
        None => vec![prefix, 0],
        Some(subject) => {
            let mut key = vec![prefix, 1];
            key.extend_from_slice(subject.as_bytes());
            key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schema::{CompatibilityLevel, SchemaType};

    #[tokio::test]
    async fn ops_round_trip_through_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = SchemaRecord {
            schema_type: SchemaType::Avro,
            text: "\"string\"".into(),
            references: Vec::new(),
            content_key: "k".into(),
        };
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit(&[
                    Op::PutSchema(7, record.clone()),
                    Op::PutVersion(
                        "a-value".into(),
                        1,
                        VersionRecord {
                            id: 7,
                            deleted: false,
                        },
                    ),
                    Op::PutConfig(
                        None,
                        ConfigRecord {
                            compatibility: Some(CompatibilityLevel::Full),
                            normalize: None,
                        },
                    ),
                    Op::PutMode(Some("a-value".into()), Mode::Readonly),
                    Op::NextId(8),
                ])
                .await
                .expect("commit");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let snapshot = store.load().expect("load");
        assert_eq!(snapshot.schemas, vec![(7, record)]);
        assert_eq!(
            snapshot.versions,
            vec![(
                "a-value".into(),
                1,
                VersionRecord {
                    id: 7,
                    deleted: false
                }
            )]
        );
        assert_eq!(
            snapshot.configs[0].1.compatibility,
            Some(CompatibilityLevel::Full)
        );
        assert_eq!(
            snapshot.modes,
            vec![(Some("a-value".into()), Mode::Readonly)]
        );
        assert_eq!(snapshot.next_id, 8);
    }

    proptest::proptest! {
        /// Whatever bytes sit on disk, loading answers Ok or a typed error, never a panic.
        #[test]
        fn loading_arbitrary_records_never_panics(
            records in proptest::collection::vec(
                (proptest::sample::select(vec![b's', b'v', b'c', b'm', b'n', b'x']),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                1..20,
            )
        ) {
            let store = Store::temporary().expect("temporary store");
            for (prefix, key, value) in records {
                let mut full = vec![prefix];
                full.extend(key);
                store.db.insert(full, value).expect("insert");
            }
            let _ = store.load();
        }
    }

    #[test]
    fn version_keys_split_even_when_the_version_has_zero_bytes() {
        for version in [1u32, 256, 65_536, u32::MAX] {
            let key = version_key("orders-value", version);
            assert_eq!(
                split_version_key(&key[1..]),
                Some(("orders-value".to_owned(), version))
            );
        }
        assert_eq!(split_version_key(b"abc"), None);
    }
}
