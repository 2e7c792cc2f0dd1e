//! Which schema IDs a topic accepts, cached so that a warm produce path makes no HTTP call.
//!
//! Entries are per (topic, key/value, schema ID). A positive answer is kept for
//! `POSITIVE_TTL` (a subject's versions can be deleted), a negative one for `NEGATIVE_TTL`
//! (a producer may register the schema a moment later). The cache is bounded; when full it
//! drops the expired entries, then starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_broker_core::validation::{record_subject, topic_subject, Part, Verdict};
use herald_registry_client::{ClientError, RegistryClient, Version};
use herald_schema::{ParsedSchema, ResolvedReference};
use herald_wire::messages::SubjectStrategy;

pub const SCHEMA_CACHE_ENTRIES_MAX: usize = 100_000;
pub const POSITIVE_TTL: Duration = Duration::from_secs(300);
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("topic validates schema IDs but the broker has no registry URL")]
    NoRegistry,
    #[error("schema registry unavailable: {0}")]
    Registry(#[from] ClientError),
    #[error("schema {id} cannot be parsed to find its record name: {reason}")]
    Unparsable { id: u32, reason: String },
}

type Key = (String, Part, u32);

pub struct SchemaCache {
    client: Option<RegistryClient>,
    entries: Mutex<HashMap<Key, (Verdict, Instant)>>,
}

impl SchemaCache {
    pub fn new(client: Option<RegistryClient>) -> Self {
        Self {
            client,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_registry(&self) -> bool {
        self.client.is_some()
    }

    /// What the cache knows now, without any I/O.
    pub fn cached(&self, topic: &str, part: Part, id: u32) -> Verdict {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&(topic.to_owned(), part, id)) {
            Some((verdict, expires)) if *expires > Instant::now() => verdict.clone(),
            _ => Verdict::Unknown,
        }
    }

    /// Asks the registry whether `id` is registered under the subject `strategy` demands.
    pub async fn learn(
        &self,
        topic: &str,
        strategy: SubjectStrategy,
        part: Part,
        id: u32,
    ) -> Result<(), LookupError> {
        let client = self.client.as_ref().ok_or(LookupError::NoRegistry)?;
        let subject = match topic_subject(topic, part, strategy) {
            Some(subject) => Ok(Some(subject)),
            None => record_name(client, id)
                .await
                .map(|name| name.map(|name| record_subject(topic, part, strategy, &name))),
        };
        let verdict = match subject {
            Ok(Some(subject)) => match client.versions_for_id(id).await {
                Ok(usages) if usages.iter().any(|usage| usage.subject == subject) => {
                    Verdict::Allowed
                }
                Ok(_) => Verdict::Refused { subject },
                Err(error) if error.code() == Some(40403) => Verdict::Refused { subject },
                Err(error) => return Err(error.into()),
            },
            Ok(None) => Verdict::Refused {
                subject: format!("(no schema with id {id})"),
            },
            Err(error) => return Err(error),
        };
        let ttl = if verdict == Verdict::Allowed {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= SCHEMA_CACHE_ENTRIES_MAX {
                entries.clear();
            }
        }
        entries.insert((topic.to_owned(), part, id), (verdict, now + ttl));
        Ok(())
    }
}

/// The record name of schema `id` (first record / top-level message), `None` if no such ID.
async fn record_name(client: &RegistryClient, id: u32) -> Result<Option<String>, LookupError> {
    let schema = match client.schema_by_id(id).await {
        Ok(schema) => schema,
        Err(error) if error.code() == Some(40403) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut references = Vec::new();
    for reference in &schema.references {
        let version = u32::try_from(reference.version)
            .map(Version::Number)
            .unwrap_or(Version::Latest);
        let found = client.version(&reference.subject, version).await?;
        references.push(ResolvedReference {
            name: reference.name.clone(),
            schema: found.schema,
        });
    }
    let schema_type =
        schema
            .schema_type
            .parse()
            .map_err(
                |e: herald_schema::UnknownSchemaType| LookupError::Unparsable {
                    id,
                    reason: e.to_string(),
                },
            )?;
    let parsed = ParsedSchema::parse(schema_type, &schema.schema, &references).map_err(|e| {
        LookupError::Unparsable {
            id,
            reason: e.to_string(),
        }
    })?;
    Ok(parsed.record_names().into_iter().next())
}
