//! Which registered schema a producer writes with, and the writer schemas a consumer reads:
//! subject name strategies, registration policies, and a bounded cache of schemas by ID.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_registry_client::{ClientError, NewSchema, RegistryClient, SchemaReference, Version};
use herald_schema::ResolvedReference;
use herald_wire::lru::Lru;
pub use herald_wire::messages::SubjectStrategy;

use crate::codec::{CodecError, WriterSchema};
use crate::message::{SchemaFormat, SchemaInfo};

/// Entries each of the SDK's schema caches keeps (a client's schemas by ID, its parsed dynamic
/// schemas, a typed consumer's writer schemas); beyond, the least recently used one is
/// evicted ([`herald_wire::lru`]). Clearing a full cache, as they once did, sent every schema
/// in use back to the registry at once.
pub const SCHEMA_CACHE_MAX: usize = 1024;
/// Deepest chain of references followed when fetching a schema: the registry's own bound
/// (one limit, one constant, shared through herald-schema).
pub use herald_schema::REFERENCE_DEPTH_MAX;

/// Which registered schema a producer writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Register the type's own schema (a no-op when it is already registered); the registry's
    /// compatibility check guards the subject.
    #[default]
    AutoRegister,
    /// Write with the subject's latest version (records are resolved to it).
    UseLatest,
    /// Write with this schema ID.
    Pinned(u32),
}

/// Why a schema could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error("schema {id} is not in the registry")]
    UnknownId { id: u32 },
    #[error("schema {id} is {found}, but {full_name} is {expected}")]
    WrongFormat {
        id: u32,
        full_name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("references nest deeper than {REFERENCE_DEPTH_MAX} levels")]
    TooDeep,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl SchemaError {
    /// Whether trying again later may succeed (the registry was unreachable).
    pub fn retryable(&self) -> bool {
        matches!(self, SchemaError::Registry(error) if error.retryable())
    }
}

#[derive(Debug)]
struct Registered {
    schema_type: String,
    text: String,
    references: Vec<ResolvedReference>,
}

/// Registry access with a bounded cache of schemas by ID, shared by a client's producers and
/// consumers.
#[derive(Debug)]
pub struct Schemas {
    registry: RegistryClient,
    /// At most [`SCHEMA_CACHE_MAX`], the least recently used evicted beyond.
    by_id: Mutex<Lru<u32, Arc<Registered>>>,
    /// Parsed dynamic schemas by (ID, Protobuf message): tools decode many records of few
    /// schemas, and parsing (a protox compile for Protobuf) is the expensive part. At most
    /// [`SCHEMA_CACHE_MAX`], the least recently used evicted beyond.
    dynamic: Mutex<Lru<DynamicKey, Arc<crate::dynamic::DynamicSchema>>>,
}

/// Schema ID and the Protobuf message picked for writing.
type DynamicKey = (u32, Option<String>);

impl Schemas {
    pub fn new(registry: RegistryClient) -> Self {
        Self {
            registry,
            by_id: Mutex::new(Lru::new(SCHEMA_CACHE_MAX)),
            dynamic: Mutex::new(Lru::new(SCHEMA_CACHE_MAX)),
        }
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The schema `T` is written with on `topic` under the registration policy.
    pub async fn writer_for_produce(
        &self,
        topic: &str,
        info: &SchemaInfo,
        registration: Registration,
        strategy: SubjectStrategy,
    ) -> Result<WriterSchema, SchemaError> {
        let subject = strategy.subject(topic, "value", info.full_name);
        match registration {
            Registration::AutoRegister => {
                let mut versions: HashMap<&str, i64> = HashMap::new();
                let mut resolved = Vec::new();
                for dependency in info.dependencies {
                    let schema = new_schema(info.format, dependency.schema)
                        .with_references(references(dependency.imports, &versions));
                    self.registry.register(dependency.name, &schema).await?;
                    let found = self.registry.lookup(dependency.name, &schema).await?;
                    versions.insert(dependency.name, i64::from(found.version));
                    resolved.push(ResolvedReference {
                        name: dependency.name.to_owned(),
                        schema: dependency.schema.to_owned(),
                    });
                }
                let schema = new_schema(info.format, info.schema)
                    .with_references(references(info.imports, &versions));
                let id = self.registry.register(&subject, &schema).await?;
                Ok(WriterSchema::new(id, info, info.schema, &resolved)?)
            }
            Registration::UseLatest => {
                let latest = self.registry.version(&subject, Version::Latest).await?;
                self.writer_for_id(latest.id, info).await
            }
            Registration::Pinned(id) => self.writer_for_id(id, info).await,
        }
    }

    /// The writer schema of ID `id`, paired with `T`'s own schema.
    pub async fn writer_for_id(
        &self,
        id: u32,
        info: &SchemaInfo,
    ) -> Result<WriterSchema, SchemaError> {
        let registered = self.by_id(id).await?;
        let expected = info.format.registry_name();
        if !registered.schema_type.eq_ignore_ascii_case(expected) {
            return Err(SchemaError::WrongFormat {
                id,
                full_name: info.full_name,
                found: registered.schema_type.clone(),
                expected,
            });
        }
        Ok(WriterSchema::new(
            id,
            info,
            &registered.text,
            &registered.references,
        )?)
    }

    /// The registered schema `id` as a [`DynamicSchema`](crate::dynamic::DynamicSchema) (for
    /// tools converting JSON); `message` picks the Protobuf message to write.
    pub async fn dynamic(
        &self,
        id: u32,
        message: Option<&str>,
    ) -> Result<Arc<crate::dynamic::DynamicSchema>, SchemaError> {
        let key = (id, message.map(str::to_owned));
        if let Some(found) = lock(&self.dynamic).get(&key) {
            return Ok(found.clone());
        }
        let registered = self.by_id(id).await?;
        let kind: herald_schema::SchemaType =
            registered
                .schema_type
                .parse()
                .map_err(|e: herald_schema::UnknownSchemaType| CodecError::Schema {
                    full_name: format!("schema {id}"),
                    reason: e.to_string(),
                })?;
        let parsed =
            herald_schema::ParsedSchema::parse(kind, &registered.text, &registered.references)
                .map_err(|e| CodecError::Schema {
                    full_name: format!("schema {id}"),
                    reason: e.to_string(),
                })?;
        let schema = Arc::new(crate::dynamic::DynamicSchema::new(id, &parsed, message)?);
        lock(&self.dynamic).insert(key, schema.clone());
        Ok(schema)
    }

    async fn by_id(&self, id: u32) -> Result<Arc<Registered>, SchemaError> {
        if let Some(found) = self.cache().get(&id) {
            return Ok(found.clone());
        }
        let found = match self.registry.schema_by_id(id).await {
            Ok(found) => found,
            Err(error) if error.code() == Some(40403) => {
                return Err(SchemaError::UnknownId { id });
            }
            Err(error) => return Err(error.into()),
        };
        let mut references = Vec::new();
        let mut pending: Vec<(SchemaReference, usize)> =
            found.references.into_iter().map(|r| (r, 1)).collect();
        while let Some((reference, depth)) = pending.pop() {
            if depth > REFERENCE_DEPTH_MAX {
                return Err(SchemaError::TooDeep);
            }
            if references
                .iter()
                .any(|r: &ResolvedReference| r.name == reference.name)
            {
                continue;
            }
            let version = u32::try_from(reference.version).map_or(Version::Latest, Version::Number);
            let target = self.registry.version(&reference.subject, version).await?;
            pending.extend(target.references.into_iter().map(|r| (r, depth + 1)));
            references.push(ResolvedReference {
                name: reference.name,
                schema: target.schema,
            });
        }
        let registered = Arc::new(Registered {
            schema_type: found.schema_type,
            text: found.schema,
            references,
        });
        self.cache().insert(id, registered.clone());
        Ok(registered)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Lru<u32, Arc<Registered>>> {
        lock(&self.by_id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_schema(format: SchemaFormat, text: &str) -> NewSchema {
    match format {
        SchemaFormat::Avro => NewSchema::avro(text),
        SchemaFormat::Protobuf => NewSchema::protobuf(text),
    }
}

fn references(imports: &[&str], versions: &HashMap<&str, i64>) -> Vec<SchemaReference> {
    imports
        .iter()
        .filter_map(|name| {
            versions.get(name).map(|version| SchemaReference {
                name: (*name).to_owned(),
                subject: (*name).to_owned(),
                version: *version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_strategies_follow_confluent_names() {
        let topic = "orders";
        let name = "shop.v1.OrderCreated";
        assert_eq!(
            SubjectStrategy::TopicName.subject(topic, "value", name),
            "orders-value"
        );
        assert_eq!(
            SubjectStrategy::RecordName.subject(topic, "value", name),
            "shop.v1.OrderCreated"
        );
        assert_eq!(
            SubjectStrategy::TopicRecordName.subject(topic, "value", name),
            "orders-shop.v1.OrderCreated"
        );
    }
}
