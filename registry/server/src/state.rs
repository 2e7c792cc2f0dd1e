//! The registry held in memory: every schema, version, config and mode, rebuilt from the store
//! at start and changed only by applying the same [`Op`]s that were just made durable. Pure:
//! no I/O, so every query is a map lookup.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use herald_schema::CompatibilityLevel;

use crate::error::ReadError;
use crate::model::{ConfigRecord, Mode, SchemaRecord, VersionRecord};
use crate::store::{Op, Snapshot};

/// Which version a path segment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(u32),
}

impl VersionSpec {
    /// Parses `latest` (any case), `-1` or a number in `1..=2^31-1`.
    pub fn parse(text: &str) -> Result<Self, ReadError> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<u32>() {
            Ok(number) if (1..=i32::MAX as u32).contains(&number) => {
                Ok(VersionSpec::Number(number))
            }
            _ => Err(ReadError::InvalidVersion(text.to_owned())),
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub schemas: HashMap<u32, Arc<SchemaRecord>>,
    /// Pre-rendered `GET /schemas/ids/{id}` bodies: the hot path of every deserializer.
    pub id_responses: HashMap<u32, Bytes>,
    pub by_content: HashMap<String, u32>,
    pub subjects: BTreeMap<String, BTreeMap<u32, VersionRecord>>,
    pub configs: HashMap<Option<String>, ConfigRecord>,
    pub modes: HashMap<Option<String>, Mode>,
    pub next_id: u32,
}

impl State {
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut state = State {
            next_id: snapshot.next_id.max(1),
            ..State::default()
        };
        for (id, record) in snapshot.schemas {
            state.insert_schema(id, record);
        }
        for (subject, version, record) in snapshot.versions {
            state
                .subjects
                .entry(subject)
                .or_default()
                .insert(version, record);
        }
        state.configs.extend(snapshot.configs);
        state.modes.extend(snapshot.modes);
        state
    }

    pub fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::PutSchema(id, record) => self.insert_schema(*id, record.clone()),
                Op::DeleteSchema(id) => {
                    self.id_responses.remove(id);
                    if let Some(record) = self.schemas.remove(id) {
                        self.by_content.remove(&record.content_key);
                    }
                }
                Op::PutVersion(subject, version, record) => {
                    self.subjects
                        .entry(subject.clone())
                        .or_default()
                        .insert(*version, *record);
                }
                Op::DeleteVersion(subject, version) => {
                    if let Some(versions) = self.subjects.get_mut(subject) {
                        versions.remove(version);
                        if versions.is_empty() {
                            self.subjects.remove(subject);
                        }
                    }
                }
                Op::PutConfig(scope, record) => {
                    self.configs.insert(scope.clone(), *record);
                }
                Op::DeleteConfig(scope) => {
                    self.configs.remove(scope);
                }
                Op::PutMode(scope, mode) => {
                    self.modes.insert(scope.clone(), *mode);
                }
                Op::DeleteMode(scope) => {
                    self.modes.remove(scope);
                }
                Op::NextId(id) => self.next_id = *id,
                Op::ContentKeyScheme(_) => {}
            }
        }
    }

    fn insert_schema(&mut self, id: u32, record: SchemaRecord) {
        self.by_content.insert(record.content_key.clone(), id);
        self.id_responses
            .insert(id, Bytes::from(record.id_response_json()));
        self.schemas.insert(id, Arc::new(record));
    }

    /// Versions of `subject`, oldest first, soft-deleted ones only when asked.
    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> impl Iterator<Item = (u32, VersionRecord)> + '_ {
        self.subjects
            .get(subject)
            .into_iter()
            .flat_map(|versions| versions.iter())
            .filter(move |(_, record)| include_deleted || !record.deleted)
            .map(|(version, record)| (*version, *record))
    }

    pub fn subject_exists(&self, subject: &str, include_deleted: bool) -> bool {
        self.versions(subject, include_deleted).next().is_some()
    }

    /// The version `spec` names, with Confluent's error precedence: unknown subject first.
    pub fn resolve_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<(u32, VersionRecord), ReadError> {
        if !self.subject_exists(subject, include_deleted) {
            return Err(ReadError::SubjectNotFound(subject.to_owned()));
        }
        let found = match spec {
            VersionSpec::Latest => self.versions(subject, include_deleted).last(),
            VersionSpec::Number(number) => self
                .versions(subject, include_deleted)
                .find(|(version, _)| *version == number),
        };
        found.ok_or_else(|| {
            ReadError::VersionNotFound(match spec {
                VersionSpec::Latest => "latest".to_owned(),
                VersionSpec::Number(number) => number.to_string(),
            })
        })
    }

    pub fn schema(&self, id: u32) -> Result<&Arc<SchemaRecord>, ReadError> {
        self.schemas
            .get(&id)
            .ok_or_else(|| ReadError::SchemaNotFound(id.to_string()))
    }

    /// The level in force for `subject`: its own, else the global one, else BACKWARD.
    pub fn level(&self, subject: &str) -> CompatibilityLevel {
        self.configs
            .get(&Some(subject.to_owned()))
            .and_then(|config| config.compatibility)
            .or_else(|| {
                self.configs
                    .get(&None)
                    .and_then(|config| config.compatibility)
            })
            .unwrap_or_default()
    }

    /// Whether `normalize` is configured for `subject` (or globally).
    pub fn normalize(&self, subject: &str) -> bool {
        self.configs
            .get(&Some(subject.to_owned()))
            .and_then(|config| config.normalize)
            .or_else(|| self.configs.get(&None).and_then(|config| config.normalize))
            .unwrap_or(false)
    }

    pub fn mode(&self, subject: &str) -> Mode {
        self.modes
            .get(&Some(subject.to_owned()))
            .or_else(|| self.modes.get(&None))
            .copied()
            .unwrap_or_default()
    }

    /// IDs of schemas whose references name `subject` at `version` (live referrers only
    /// unless `include_deleted`).
    pub fn referrers(&self, subject: &str, version: u32, include_deleted: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .schemas
            .iter()
            .filter(|(_, record)| {
                record.references.iter().any(|reference| {
                    reference.subject == subject && reference.version == i64::from(version)
                })
            })
            .map(|(id, _)| *id)
            .filter(|id| include_deleted || self.id_is_live(*id))
            .collect();
        ids.sort_unstable();
        ids
    }

    fn id_is_live(&self, id: u32) -> bool {
        self.subjects.values().any(|versions| {
            versions
                .values()
                .any(|record| record.id == id && !record.deleted)
        })
    }

    /// Whether any version, live or soft-deleted, still uses `id`.
    pub fn id_in_use(&self, id: u32) -> bool {
        self.subjects
            .values()
            .any(|versions| versions.values().any(|record| record.id == id))
    }

    /// `(subject, version)` pairs that use `id`.
    pub fn usages(&self, id: u32, include_deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |(_, record)| {
                        record.id == id && (include_deleted || !record.deleted)
                    })
                    .map(move |(version, _)| (subject.clone(), *version))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs_follow_confluent() {
        assert_eq!(VersionSpec::parse("latest").ok(), Some(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("LATEST").ok(), Some(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("-1").ok(), Some(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("3").ok(), Some(VersionSpec::Number(3)));
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert!(
                matches!(VersionSpec::parse(bad), Err(ReadError::InvalidVersion(_))),
                "{bad}"
            );
        }
    }
}
