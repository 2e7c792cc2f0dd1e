//! Reads: schemas by ID (parsed on demand, through the cache), lookup of a schema under a
//! subject, compatibility checks, config and mode reads, versions of a subject. None of them
//! waits for the write gate.

use std::collections::HashMap;
use std::sync::Arc;

use herald_schema::{check, ParsedSchema, PreviousVersion};

use crate::error::{ReadError, WriteError};
use crate::model::{ConfigRecord, Mode, SchemaRecord, VersionRecord};
use crate::state::VersionSpec;

use super::candidate::{resolve_references, Candidate};
use super::{CompatOutcome, Registry, SchemaRequest, SubjectVersion};

impl Registry {
    // ---- schemas by ID -------------------------------------------------------------------

    pub fn schema_by_id(&self, id: u32) -> Result<Arc<SchemaRecord>, ReadError> {
        self.read().schema(id).cloned()
    }

    /// The parsed form of stored schema `id`, from the cache when possible.
    pub fn parsed(&self, id: u32) -> Result<Arc<ParsedSchema>, WriteError> {
        if let Some(found) = self.parsed_cache().get(id) {
            return Ok(found);
        }
        let record = self.schema_by_id(id)?;
        let resolved = {
            let state = self.read();
            resolve_references(&state, &record.references, 0)?.1
        };
        let parsed =
            ParsedSchema::parse(record.schema_type, &record.text, &resolved).map_err(|e| {
                WriteError::InvalidSchema(format!("stored schema {id} no longer parses: {e}"))
            })?;
        let parsed = Arc::new(parsed);
        self.parsed_cache().insert(id, parsed.clone());
        Ok(parsed)
    }

    // ---- lookup and compatibility --------------------------------------------------------

    /// `POST /subjects/{s}`: the version of `subject` holding this exact schema.
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
        include_deleted: bool,
    ) -> Result<SubjectVersion, WriteError> {
        let state = self.read();
        if !state.subject_exists(subject, include_deleted) {
            return Err(ReadError::SubjectNotFound(subject.to_owned()).into());
        }
        let candidate = Candidate::parse(&state, request, normalize || state.normalize(subject))?;
        let id = state.by_content.get(&candidate.content_key).copied();
        let found = id.and_then(|id| {
            state
                .versions(subject, include_deleted)
                .filter(|(_, record)| record.id == id)
                .last()
        });
        match found {
            Some((version, record)) => Ok(SubjectVersion {
                subject: subject.to_owned(),
                version,
                id: record.id,
                record: state.schema(record.id)?.clone(),
            }),
            None => Err(ReadError::SchemaNotFound(format!("under subject '{subject}'")).into()),
        }
    }

    /// The compatibility endpoints. `version` None runs the registration check; a version
    /// checks against that one version only (Confluent's behaviour, even when transitive).
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<&str>,
        request: &SchemaRequest,
        verbose: bool,
    ) -> Result<CompatOutcome, WriteError> {
        let spec = version.map(VersionSpec::parse).transpose()?;
        let state = self.read();
        let candidate = match Candidate::parse(&state, request, state.normalize(subject)) {
            Ok(candidate) => candidate,
            Err(error) if verbose => {
                return Ok(CompatOutcome {
                    is_compatible: false,
                    messages: vec![error.to_string()],
                })
            }
            Err(error) => return Err(error),
        };
        let level = state.level(subject);
        let live: Vec<(u32, VersionRecord)> = state.versions(subject, false).collect();
        let selected: Vec<(u32, VersionRecord)> = match spec {
            None => live,
            Some(VersionSpec::Latest) => live.last().copied().into_iter().collect(),
            Some(VersionSpec::Number(number)) => {
                let found = live.iter().find(|(version, _)| *version == number).copied();
                vec![found.ok_or_else(|| ReadError::VersionNotFound(number.to_string()))?]
            }
        };
        let previous = self.previous_versions(&selected)?;
        drop(state);
        let previous_refs: Vec<PreviousVersion<'_>> = previous
            .iter()
            .map(|(version, schema)| PreviousVersion {
                version: *version,
                schema,
            })
            .collect();
        // With a version given, `selected` holds just that one, so even a transitive level
        // compares with it alone (Confluent's behaviour for this endpoint).
        let report = check(&previous_refs, &candidate.parsed, level);
        Ok(CompatOutcome {
            is_compatible: report.is_compatible(),
            messages: if verbose {
                report.messages()
            } else {
                Vec::new()
            },
        })
    }

    /// Parsed live versions, oldest first.
    pub(super) fn previous_versions(
        &self,
        live: &[(u32, VersionRecord)],
    ) -> Result<Vec<(u32, Arc<ParsedSchema>)>, WriteError> {
        live.iter()
            .map(|(version, record)| Ok((*version, self.parsed(record.id)?)))
            .collect()
    }

    // ---- config and mode -----------------------------------------------------------------

    pub fn config(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<ConfigRecord, ReadError> {
        let state = self.read();
        let global = state.configs.get(&None).copied().unwrap_or_default();
        let global = ConfigRecord {
            compatibility: Some(global.compatibility.unwrap_or_default()),
            ..global
        };
        scoped(
            &state.configs,
            subject,
            default_to_global,
            global,
            ReadError::NoSubjectConfig,
        )
    }

    pub fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<Mode, ReadError> {
        let state = self.read();
        let global = state.modes.get(&None).copied().unwrap_or_default();
        scoped(
            &state.modes,
            subject,
            default_to_global,
            global,
            ReadError::NoSubjectMode,
        )
    }

    // ---- listings ------------------------------------------------------------------------

    pub fn subject_version(
        &self,
        subject: &str,
        version: &str,
        include_deleted: bool,
    ) -> Result<SubjectVersion, ReadError> {
        let spec = VersionSpec::parse(version)?;
        let state = self.read();
        let (version, record) = state.resolve_version(subject, spec, include_deleted)?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id: record.id,
            record: state.schema(record.id)?.clone(),
        })
    }
}

/// A global (`None`) or subject-level setting: the subject's own, else the global one when
/// asked, else `missing`.
fn scoped<T: Copy>(
    settings: &HashMap<Option<String>, T>,
    subject: Option<&str>,
    default_to_global: bool,
    global: T,
    missing: impl FnOnce(String) -> ReadError,
) -> Result<T, ReadError> {
    match subject {
        None => Ok(global),
        Some(subject) => match settings.get(&Some(subject.to_owned())) {
            Some(value) => Ok(*value),
            None if default_to_global => Ok(global),
            None => Err(missing(subject.to_owned())),
        },
    }
}
