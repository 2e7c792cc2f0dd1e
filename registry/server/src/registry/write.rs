//! Writes, each under the write gate (plan against the current state, commit, apply):
//! register, soft and permanent deletes, config and mode changes; and the subject name rules
//! every write checks.

use std::collections::HashMap;
use std::sync::Arc;

use herald_schema::{check, CompatibilityLevel, ParsedSchema, PreviousVersion};

use crate::error::{ReadError, WriteError};
use crate::model::{ConfigRecord, Mode, VersionRecord};
use crate::state::{State, VersionSpec};
use crate::store::Op;

use super::candidate::Candidate;
use super::{Registry, SchemaRequest};

impl Registry {
    // ---- register ------------------------------------------------------------------------

    /// Registers `request` under `subject` and returns its schema ID.
    pub async fn register(
        &self,
        subject: &str,
        request: SchemaRequest,
        normalize: bool,
    ) -> Result<u32, WriteError> {
        validate_subject(subject)?;
        let _gate = self.write_gate.lock().await;
        let (id, ops, parsed) = self.plan_register(subject, request, normalize)?;
        self.commit(ops).await?;
        // Only after the commit: a failed commit must not leave a parsed schema under an ID
        // that may later be given to other content.
        if let Some(parsed) = parsed {
            self.parsed_cache().insert(id, Arc::new(parsed));
        }
        Ok(id)
    }

    fn plan_register(
        &self,
        subject: &str,
        mut request: SchemaRequest,
        normalize: bool,
    ) -> Result<(u32, Vec<Op>, Option<ParsedSchema>), WriteError> {
        let state = self.read();
        let mode = state.mode(subject);
        match (mode, request.id) {
            (Mode::Readonly, _) => {
                return Err(WriteError::NotPermitted(format!(
                    "Subject {subject} in context . is in read-only mode"
                )))
            }
            (Mode::Readwrite, Some(_)) => {
                return Err(WriteError::NotPermitted(format!(
                    "Subject {subject} is not in import mode"
                )))
            }
            (Mode::Import, None) => {
                return Err(WriteError::NotPermitted(format!(
                    "Subject {subject} is in import mode: a registration must give the schema id"
                )))
            }
            _ => {}
        }
        let live: Vec<(u32, VersionRecord)> = state.versions(subject, false).collect();
        if request.schema.trim().is_empty() {
            // Confluent: an empty schema re-registers the latest version's content.
            let (_, latest) = live
                .last()
                .ok_or_else(|| WriteError::InvalidSchema("Empty schema".to_owned()))?;
            let record = state.schema(latest.id)?;
            request.schema = record.text.clone();
            request.schema_type = record.schema_type;
            request.references = record.references.clone();
        }
        let normalize = normalize || state.normalize(subject);
        let candidate = Candidate::parse(&state, &request, normalize)?;

        // Same content already live under this subject: idempotent, no check, no new version.
        if let Some(&existing) = state.by_content.get(&candidate.content_key) {
            let id_fits = mode != Mode::Import || request.id == Some(existing);
            if id_fits && live.iter().any(|(_, record)| record.id == existing) {
                return Ok((existing, Vec::new(), None));
            }
        }

        let mut ops = Vec::new();
        let id = match (mode, request.id) {
            (Mode::Import, Some(given)) => {
                if let Some(record) = state.schemas.get(&given) {
                    if record.content_key != candidate.content_key {
                        return Err(WriteError::NotPermitted(format!(
                            "Overwrite new schema with id {given} is not permitted: a different schema has that id"
                        )));
                    }
                } else if let Some(&existing) = state.by_content.get(&candidate.content_key) {
                    return Err(WriteError::IdMismatch {
                        id: given,
                        existing,
                    });
                }
                if given == 0 || given > i32::MAX as u32 {
                    return Err(WriteError::InvalidSchema(format!(
                        "invalid schema id {given}"
                    )));
                }
                if given >= state.next_id {
                    ops.push(Op::NextId(given + 1));
                }
                given
            }
            _ => match state.by_content.get(&candidate.content_key) {
                Some(&existing) => existing,
                None => {
                    let id = state.next_id;
                    if id >= i32::MAX as u32 {
                        return Err(WriteError::IdsExhausted);
                    }
                    ops.push(Op::NextId(id + 1));
                    id
                }
            },
        };

        if mode != Mode::Import {
            let level = state.level(subject);
            let previous = self.previous_versions(&live)?;
            let previous_refs: Vec<PreviousVersion<'_>> = previous
                .iter()
                .map(|(version, schema)| PreviousVersion {
                    version: *version,
                    schema,
                })
                .collect();
            let report = check(&previous_refs, &candidate.parsed, level);
            if !report.is_compatible() {
                return Err(WriteError::Incompatible {
                    subject: subject.to_owned(),
                    details: report.messages(),
                });
            }
        }

        let next_version = state
            .subjects
            .get(subject)
            .and_then(|versions| versions.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let version = match (mode, request.version) {
            (Mode::Import, Some(given)) => {
                if state.subjects.get(subject).is_some_and(|versions| versions.contains_key(&given)) {
                    return Err(WriteError::NotPermitted(format!(
                        "Version {given} of subject {subject} already exists"
                    )));
                }
                given
            }
            (_, Some(given)) if given != next_version => {
                return Err(WriteError::InvalidSchema(format!(
                    "Version is not one more than previous version: expected {next_version}, got {given}"
                )))
            }
            _ => next_version,
        };
        if !state.schemas.contains_key(&id) {
            ops.push(Op::PutSchema(id, candidate.record));
        }
        ops.push(Op::PutVersion(
            subject.to_owned(),
            version,
            VersionRecord { id, deleted: false },
        ));
        Ok((id, ops, Some(candidate.parsed)))
    }

    // ---- deletes -------------------------------------------------------------------------

    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, WriteError> {
        let _gate = self.write_gate.lock().await;
        let (deleted, ops) = {
            let state = self.read();
            self.ensure_writable(&state, subject)?;
            let all: Vec<(u32, VersionRecord)> = state.versions(subject, true).collect();
            if all.is_empty() {
                return Err(ReadError::SubjectNotFound(subject.to_owned()).into());
            }
            let live: Vec<u32> = all
                .iter()
                .filter(|(_, r)| !r.deleted)
                .map(|(v, _)| *v)
                .collect();
            let mut ops = Vec::new();
            if permanent {
                if !live.is_empty() {
                    return Err(WriteError::SubjectNotSoftDeleted(subject.to_owned()));
                }
                for (version, _) in &all {
                    if !state.referrers(subject, *version, true).is_empty() {
                        return Err(WriteError::ReferenceExists {
                            subject: subject.to_owned(),
                            version: *version,
                        });
                    }
                }
                for (version, _) in &all {
                    ops.push(Op::DeleteVersion(subject.to_owned(), *version));
                }
                ops.push(Op::DeleteConfig(Some(subject.to_owned())));
                ops.push(Op::DeleteMode(Some(subject.to_owned())));
                ops.extend(orphaned_schemas(
                    &state,
                    subject,
                    &all.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
                ));
                (all.iter().map(|(v, _)| *v).collect(), ops)
            } else {
                if live.is_empty() {
                    return Err(WriteError::SubjectSoftDeleted(subject.to_owned()));
                }
                for version in &live {
                    if !state.referrers(subject, *version, false).is_empty() {
                        return Err(WriteError::ReferenceExists {
                            subject: subject.to_owned(),
                            version: *version,
                        });
                    }
                }
                for (version, record) in all.iter().filter(|(_, r)| !r.deleted) {
                    ops.push(Op::PutVersion(
                        subject.to_owned(),
                        *version,
                        VersionRecord {
                            id: record.id,
                            deleted: true,
                        },
                    ));
                }
                (live, ops)
            }
        };
        self.commit(ops).await?;
        Ok(deleted)
    }

    pub async fn delete_version(
        &self,
        subject: &str,
        version: &str,
        permanent: bool,
    ) -> Result<u32, WriteError> {
        let spec = VersionSpec::parse(version)?;
        let _gate = self.write_gate.lock().await;
        let (number, ops) = {
            let state = self.read();
            self.ensure_writable(&state, subject)?;
            // A numbered version is found even when soft-deleted (to answer 40406); a soft
            // delete of `latest` means the newest live version.
            let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
            let (number, record) = state.resolve_version(subject, spec, include_deleted)?;
            let mut ops = Vec::new();
            if permanent {
                if !record.deleted {
                    return Err(WriteError::VersionNotSoftDeleted {
                        subject: subject.to_owned(),
                        version: number,
                    });
                }
                if !state.referrers(subject, number, true).is_empty() {
                    return Err(WriteError::ReferenceExists {
                        subject: subject.to_owned(),
                        version: number,
                    });
                }
                ops.push(Op::DeleteVersion(subject.to_owned(), number));
                ops.extend(orphaned_schemas(&state, subject, &[number]));
                if state.versions(subject, true).all(|(v, _)| v == number) {
                    ops.push(Op::DeleteConfig(Some(subject.to_owned())));
                    ops.push(Op::DeleteMode(Some(subject.to_owned())));
                }
            } else {
                if record.deleted {
                    return Err(WriteError::VersionSoftDeleted {
                        subject: subject.to_owned(),
                        version: number,
                    });
                }
                if !state.referrers(subject, number, false).is_empty() {
                    return Err(WriteError::ReferenceExists {
                        subject: subject.to_owned(),
                        version: number,
                    });
                }
                ops.push(Op::PutVersion(
                    subject.to_owned(),
                    number,
                    VersionRecord {
                        id: record.id,
                        deleted: true,
                    },
                ));
            }
            (number, ops)
        };
        self.commit(ops).await?;
        Ok(number)
    }

    fn ensure_writable(&self, state: &State, subject: &str) -> Result<(), WriteError> {
        if state.mode(subject) == Mode::Readonly {
            return Err(WriteError::NotPermitted(format!(
                "Subject {subject} in context . is in read-only mode"
            )));
        }
        Ok(())
    }

    // ---- config and mode -----------------------------------------------------------------

    pub async fn set_config(
        &self,
        subject: Option<&str>,
        config: ConfigRecord,
    ) -> Result<(), WriteError> {
        if let Some(subject) = subject {
            validate_subject(subject)?;
        }
        let _gate = self.write_gate.lock().await;
        self.commit(vec![Op::PutConfig(subject.map(str::to_owned), config)])
            .await
    }

    /// Removes a config and returns what it was.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<ConfigRecord, WriteError> {
        let global_default = ConfigRecord {
            compatibility: Some(CompatibilityLevel::default()),
            normalize: None,
        };
        self.delete_scoped(
            subject,
            |state| &state.configs,
            global_default,
            Op::DeleteConfig,
        )
        .await
    }

    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<(), WriteError> {
        if let Some(subject) = subject {
            validate_subject(subject)?;
        }
        let _gate = self.write_gate.lock().await;
        if mode == Mode::Import && !force {
            let state = self.read();
            let has_live = match subject {
                Some(subject) => state.subject_exists(subject, false),
                None => state
                    .subjects
                    .keys()
                    .any(|s| state.subject_exists(s, false)),
            };
            if has_live {
                return Err(WriteError::NotPermitted(
                    "Cannot import since found existing subjects".to_owned(),
                ));
            }
        }
        self.commit(vec![Op::PutMode(subject.map(str::to_owned), mode)])
            .await
    }

    pub async fn delete_mode(&self, subject: Option<&str>) -> Result<Mode, WriteError> {
        self.delete_scoped(
            subject,
            |state| &state.modes,
            Mode::default(),
            Op::DeleteMode,
        )
        .await
    }

    /// Deletes a global or subject-level setting, answering what it was (the default for an
    /// unset global one; 40401 for an unset subject one).
    async fn delete_scoped<T: Copy>(
        &self,
        subject: Option<&str>,
        settings: impl Fn(&State) -> &HashMap<Option<String>, T>,
        global_default: T,
        delete: impl Fn(Option<String>) -> Op,
    ) -> Result<T, WriteError> {
        let _gate = self.write_gate.lock().await;
        let previous = {
            let state = self.read();
            match (subject, settings(&state).get(&subject.map(str::to_owned))) {
                (_, Some(value)) => *value,
                (None, None) => global_default,
                (Some(subject), None) => {
                    return Err(ReadError::SubjectNotFound(subject.to_owned()).into())
                }
            }
        };
        self.commit(vec![delete(subject.map(str::to_owned))])
            .await?;
        Ok(previous)
    }
}

/// Schema records that no version uses once `versions` of `subject` are gone.
fn orphaned_schemas(state: &State, subject: &str, versions: &[u32]) -> Vec<Op> {
    let mut ids: Vec<u32> = versions
        .iter()
        .filter_map(|version| {
            state
                .subjects
                .get(subject)
                .and_then(|all| all.get(version))
                .map(|record| record.id)
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter(|id| {
            !state.subjects.iter().any(|(other, all)| {
                all.iter().any(|(version, record)| {
                    record.id == *id && !(other == subject && versions.contains(version))
                })
            })
        })
        .map(Op::DeleteSchema)
        .collect()
}

/// Confluent's subject name rules: not empty, no control characters, not reserved.
pub fn validate_subject(subject: &str) -> Result<(), WriteError> {
    let reserved = matches!(subject, "__GLOBAL" | "__EMPTY");
    if subject.is_empty() || reserved || subject.chars().any(char::is_control) {
        return Err(WriteError::InvalidSubject(subject.to_owned()));
    }
    Ok(())
}
