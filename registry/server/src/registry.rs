//! The registry service: Confluent's registration, lookup, compatibility, delete, config and
//! mode semantics over the in-memory [`State`] and the durable [`Store`].
//!
//! Every write runs under one async gate: plan against the current state (pure), commit the
//! planned ops to the store (atomic, flushed), then apply them in memory and answer. So
//! concurrent registrations of one schema produce one ID and one version, and nothing is
//! acknowledged before it is on disk. Reads never wait for the gate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use herald_schema::{
    check, CompatibilityLevel, ParsedSchema, PreviousVersion, ResolvedReference, SchemaType,
    REFERENCE_DEPTH_MAX, SCHEMA_BYTES_MAX,
};
use sha2::{Digest, Sha256};

use crate::cache::{ParsedCache, PARSED_CACHE_TEXT_BYTES_MAX};
use crate::error::{ReadError, WriteError};
use crate::model::{ConfigRecord, Mode, SchemaRecord, SchemaReference, VersionRecord};
use crate::state::{State, VersionSpec};
use crate::store::{Op, Store, StoreError};

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

    fn parsed_cache(&self) -> std::sync::MutexGuard<'_, ParsedCache> {
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

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

    /// Parsed live versions, oldest first.
    fn previous_versions(
        &self,
        live: &[(u32, VersionRecord)],
    ) -> Result<Vec<(u32, Arc<ParsedSchema>)>, WriteError> {
        live.iter()
            .map(|(version, record)| Ok((*version, self.parsed(record.id)?)))
            .collect()
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

/// A candidate schema: parsed, with its stored record and content key.
/// How content keys are computed: 2 = Protobuf identity by Confluent's printed canonical
/// text (scheme 1 hashed the resolved descriptor, so `Line` and `.pkg.Msg.Line` were one
/// schema). Stores of an older scheme have their Protobuf keys recomputed at open.
const CONTENT_KEY_SCHEME: u32 = 2;

/// Recomputes the content key of every stored Protobuf schema from its text (a one-time
/// migration from an older key scheme), so that registering a schema that is already stored
/// still answers its ID. The stored texts are kept as they are.
fn rekey_protobuf(store: &Store, state: &mut State) -> Result<(), StoreError> {
    let mut ops = Vec::new();
    let mut ids: Vec<u32> = state.schemas.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let Some(record) = state.schemas.get(&id).cloned() else {
            continue;
        };
        if record.schema_type != SchemaType::Protobuf {
            continue;
        }
        let request = SchemaRequest {
            schema: record.text.clone(),
            schema_type: record.schema_type,
            references: record.references.clone(),
            id: None,
            version: None,
        };
        match Candidate::parse(state, &request, false) {
            Ok(candidate) if candidate.content_key != record.content_key => {
                let mut updated = (*record).clone();
                updated.content_key = candidate.content_key;
                ops.push(Op::PutSchema(id, updated));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(id, %error, "stored Protobuf schema does not parse; its content key is kept");
            }
        }
    }
    ops.push(Op::ContentKeyScheme(CONTENT_KEY_SCHEME));
    store.commit_blocking(&ops)?;
    // Drop the old keys before the new ones go in (an old key may equal no new one).
    for op in &ops {
        if let Op::PutSchema(id, _) = op {
            if let Some(old) = state.schemas.get(id) {
                let old_key = old.content_key.clone();
                state.by_content.remove(&old_key);
            }
        }
    }
    state.apply(&ops);
    Ok(())
}

struct Candidate {
    parsed: ParsedSchema,
    record: SchemaRecord,
    content_key: String,
}

impl Candidate {
    fn parse(state: &State, request: &SchemaRequest, normalize: bool) -> Result<Self, WriteError> {
        if request.schema.len() > SCHEMA_BYTES_MAX {
            return Err(WriteError::SchemaTooLarge {
                size_bytes: request.schema.len(),
                limit_bytes: SCHEMA_BYTES_MAX,
            });
        }
        let (references, resolved) = resolve_references(state, &request.references, 0)?;
        let parsed = ParsedSchema::parse(request.schema_type, &request.schema, &resolved)
            .map_err(|e| WriteError::InvalidSchema(e.to_string()))?;
        let text = if normalize {
            parsed.normalized_text()
        } else {
            parsed.canonical_text().to_owned()
        };
        // Identity is the stored text, as Confluent compares `canonicalString()`s: with
        // `normalize` the incoming schema is normalised first (stored versions are not), so
        // it matches a version whose text is already in normal form.
        let mut hasher = Sha256::new();
        hasher.update(if normalize {
            parsed.normalized_fingerprint()
        } else {
            parsed.fingerprint()
        });
        for reference in &references {
            hasher.update(reference.name.as_bytes());
            hasher.update([0]);
            hasher.update(reference.subject.as_bytes());
            hasher.update([0]);
            hasher.update(reference.version.to_be_bytes());
        }
        let content_key = hex::encode(hasher.finalize());
        Ok(Self {
            record: SchemaRecord {
                schema_type: request.schema_type,
                text,
                references,
                content_key: content_key.clone(),
            },
            parsed,
            content_key,
        })
    }
}

/// Resolves `references` (version -1 = latest live) to concrete versions, and collects the
/// schema texts of the whole reference graph for the parser.
fn resolve_references(
    state: &State,
    references: &[SchemaReference],
    depth: usize,
) -> Result<(Vec<SchemaReference>, Vec<ResolvedReference>), WriteError> {
    if depth > REFERENCE_DEPTH_MAX {
        return Err(WriteError::InvalidSchema(format!(
            "references nest deeper than {REFERENCE_DEPTH_MAX} levels"
        )));
    }
    let mut concrete = Vec::with_capacity(references.len());
    let mut resolved: Vec<ResolvedReference> = Vec::new();
    for reference in references {
        if reference.name.is_empty() || reference.subject.is_empty() {
            return Err(WriteError::InvalidSchema(
                "Invalid reference: name and subject are required".to_owned(),
            ));
        }
        let spec = if reference.version == -1 {
            VersionSpec::Latest
        } else {
            u32::try_from(reference.version)
                .ok()
                .filter(|v| *v >= 1)
                .map(VersionSpec::Number)
                .ok_or_else(|| {
                    WriteError::InvalidSchema(format!(
                        "Invalid reference version {}",
                        reference.version
                    ))
                })?
        };
        let (version, record) = state
            .resolve_version(&reference.subject, spec, false)
            .map_err(|_| {
                WriteError::InvalidSchema(format!(
                    "No schema reference found for subject \"{}\" and version {}",
                    reference.subject, reference.version
                ))
            })?;
        let schema = state.schema(record.id)?;
        let (_, nested) = resolve_references(state, &schema.references, depth + 1)?;
        for item in nested {
            if !resolved.iter().any(|known| known.name == item.name) {
                resolved.push(item);
            }
        }
        if !resolved.iter().any(|known| known.name == reference.name) {
            resolved.push(ResolvedReference {
                name: reference.name.clone(),
                schema: schema.text.clone(),
            });
        }
        concrete.push(SchemaReference {
            name: reference.name.clone(),
            subject: reference.subject.clone(),
            version: i64::from(version),
        });
    }
    Ok((concrete, resolved))
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
