//! A candidate schema ([`Candidate`]: parsed, with its stored record and content key),
//! reference resolution, and the content-key scheme with the one-time Protobuf rekeying run
//! at open.

use herald_schema::{
    ParsedSchema, ResolvedReference, SchemaType, REFERENCE_DEPTH_MAX, SCHEMA_BYTES_MAX,
};
use sha2::{Digest, Sha256};

use crate::error::WriteError;
use crate::model::{SchemaRecord, SchemaReference};
use crate::state::{State, VersionSpec};
use crate::store::{Op, Store, StoreError};

use super::SchemaRequest;

/// A candidate schema: parsed, with its stored record and content key.
/// How content keys are computed: 2 = Protobuf identity by Confluent's printed canonical
/// text (scheme 1 hashed the resolved descriptor, so `Line` and `.pkg.Msg.Line` were one
/// schema). Stores of an older scheme have their Protobuf keys recomputed at open.
pub(super) const CONTENT_KEY_SCHEME: u32 = 2;

/// Recomputes the content key of every stored Protobuf schema from its text (a one-time
/// migration from an older key scheme), so that registering a schema that is already stored
/// still answers its ID. The stored texts are kept as they are.
pub(super) fn rekey_protobuf(store: &Store, state: &mut State) -> Result<(), StoreError> {
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

pub(super) struct Candidate {
    pub(super) parsed: ParsedSchema,
    pub(super) record: SchemaRecord,
    pub(super) content_key: String,
}

impl Candidate {
    pub(super) fn parse(
        state: &State,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<Self, WriteError> {
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
        hasher.update(herald_schema::text_fingerprint(request.schema_type, &text));
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
pub(super) fn resolve_references(
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
