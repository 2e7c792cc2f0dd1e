//! Which schema IDs a topic accepts, cached so that a warm produce path makes no HTTP call.
//!
//! Entries are per (topic, subject strategy, key/value, schema ID). The strategy is part of
//! the key because it decides the subject an ID must be registered under: a topic deleted and
//! created again with another strategy must not be served verdicts made under the old one. A
//! positive answer is kept for `POSITIVE_TTL` (a subject's versions can be deleted), a
//! negative one for `NEGATIVE_TTL` (a producer may register the schema a moment later).
//!
//! The cache is bounded by entries and evicts the least recently used one when full
//! ([`herald_wire::lru`]): the IDs the live producers use are read on every produce and stay,
//! while a client that sprays unknown IDs only pushes out other cold entries (clearing the
//! whole cache, as it once did, sent every producer back to the registry at once). Recency is
//! approximate so that a hit, taken under the cache's one lock on every produce, is a hash
//! lookup: an entry is re-stamped only when its stamp is half a capacity of inserts old, and
//! an entry used within the last half a capacity of inserts is never the one evicted.
//!
//! Lookups are coalesced: produces that need the same unknown (topic, strategy, part, ID) at
//! the same time make one registry call, the first one's, and all get its answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herald_broker_core::validation::{record_subject, topic_subject, Part, Verdict};
use herald_registry_client::{ClientError, RegistryClient, Version};
use herald_schema::{ParsedSchema, ResolvedReference};
use herald_wire::lru::Lru;
use herald_wire::messages::SubjectStrategy;
use tokio::sync::watch;

/// Most cached verdicts (the least recently used one is evicted beyond).
pub const SCHEMA_CACHE_ENTRIES_MAX: usize = 100_000;
pub const POSITIVE_TTL: Duration = Duration::from_secs(300);
/// How long "not registered" is remembered. Short, because a producer may register the
/// schema a moment later (the e2e test waits it out); long enough that a client repeating an
/// unregistered ID, batch after batch, costs at most one registry call per ID per
/// `NEGATIVE_TTL` instead of one per batch. A client rotating fresh bad IDs is bounded by the
/// produce path instead: it refuses a batch at its first unregistered ID, one lookup.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most distinct (topic, strategy, part, ID) lookups in flight at once. Lookups of the same
/// key share one entry, and a produce has at most one lookup in flight (it looks IDs up one
/// after another), but the broker's request limits still let through far more concurrent
/// produces (connections × in-flight requests) than a registry should see distinct calls;
/// producers use a few IDs, so thousands of distinct keys at once is a client spraying IDs.
/// Beyond the bound a lookup fails as `LookupError::Busy` and its produce is throttled
/// (retried later), rather than growing the in-flight map and fanning out to the registry
/// without bound.
pub const LOOKUPS_IN_FLIGHT_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("topic validates schema IDs but the broker has no registry URL")]
    NoRegistry,
    #[error("schema registry unavailable: {0}")]
    Registry(#[from] ClientError),
    #[error("schema {id} cannot be parsed to find its record name: {reason}")]
    Unparsable { id: u32, reason: String },
    #[error("{limit} schema lookups are already in flight; retry")]
    Busy { limit: usize },
    /// The failure of a lookup this one was coalesced with (every waiter gets the same one).
    #[error(transparent)]
    Shared(Arc<LookupError>),
}

/// What a verdict is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The topic's name, one allocation shared by all the topic's entries (see
    /// `Verdicts::topics`).
    topic: Arc<str>,
    /// The topic's subject strategy, as `strategy_tag` numbers it.
    strategy: u8,
    part: Part,
    id: u32,
}

/// What a lookup in flight is keyed by: the verdict's key, with the topic's name owned. A
/// lookup is rare enough to copy the name, and keeping the shared names out of this map lets
/// `Verdicts` drop a name with its last entry.
type FlightKey = (String, u8, Part, u32);

/// `strategy` as part of a key (the wire type derives no `Hash`).
fn strategy_tag(strategy: SubjectStrategy) -> u8 {
    match strategy {
        SubjectStrategy::TopicName => 0,
        SubjectStrategy::RecordName => 1,
        SubjectStrategy::TopicRecordName => 2,
    }
}

/// What a coalesced lookup ends with, as its waiters see it.
type Outcome = Result<Verdict, Arc<LookupError>>;

pub struct SchemaCache {
    client: Option<RegistryClient>,
    verdicts: Mutex<Verdicts>,
    /// Lookups under way, by key: a produce that needs the same key waits on the receiver
    /// (`None` until the lookup ends) instead of calling the registry again. The entry is
    /// removed when the lookup ends or its future is dropped, see `InFlight`.
    in_flight: Mutex<HashMap<FlightKey, watch::Receiver<Option<Outcome>>>>,
}

impl SchemaCache {
    pub fn new(client: Option<RegistryClient>) -> Self {
        Self::with_capacity(client, SCHEMA_CACHE_ENTRIES_MAX)
    }

    /// A cache of at most `capacity` verdicts (at least one).
    pub fn with_capacity(client: Option<RegistryClient>, capacity: usize) -> Self {
        Self {
            client,
            verdicts: Mutex::new(Verdicts::new(capacity)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_registry(&self) -> bool {
        self.client.is_some()
    }

    /// What the cache knows now about `id` for `part` of `topic` validated under `strategy`,
    /// without any I/O. A hit counts as a use for eviction; it allocates nothing.
    pub fn cached(&self, topic: &str, strategy: SubjectStrategy, part: Part, id: u32) -> Verdict {
        let now = Instant::now();
        lock(&self.verdicts).get(topic, strategy, part, id, now)
    }

    /// How many verdicts are cached (expired ones not yet dropped included).
    pub fn cached_entries(&self) -> usize {
        lock(&self.verdicts).len()
    }

    /// How many registry lookups are under way.
    pub fn lookups_in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Asks the registry whether `id` is registered under the subject `strategy` demands,
    /// caches the answer and returns it (never `Verdict::Unknown`). Answers from the cache if
    /// it knows, and waits for the lookup of the same key already under way if there is one.
    pub async fn learn(
        &self,
        topic: &str,
        strategy: SubjectStrategy,
        part: Part,
        id: u32,
    ) -> Result<Verdict, LookupError> {
        let client = self.client.as_ref().ok_or(LookupError::NoRegistry)?;
        let flight: FlightKey = (topic.to_owned(), strategy_tag(strategy), part, id);
        loop {
            // Under the in-flight lock, so that a lookup that ends meanwhile is seen either
            // in flight or in the cache: it stores its verdict before leaving the map.
            let role = {
                let mut in_flight = lock(&self.in_flight);
                if let Some(receiver) = in_flight.get(&flight) {
                    Role::Wait(receiver.clone())
                } else {
                    let now = Instant::now();
                    let known = lock(&self.verdicts).get(topic, strategy, part, id, now);
                    if known != Verdict::Unknown {
                        return Ok(known);
                    }
                    if in_flight.len() >= LOOKUPS_IN_FLIGHT_MAX {
                        return Err(LookupError::Busy {
                            limit: LOOKUPS_IN_FLIGHT_MAX,
                        });
                    }
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(flight.clone(), receiver);
                    Role::Lead(sender)
                }
            };
            match role {
                Role::Lead(sender) => {
                    // Removes the map entry however this ends, the future dropped included:
                    // then `sender` is dropped too and the waiters try again themselves.
                    let _in_flight = InFlight {
                        map: &self.in_flight,
                        key: &flight,
                    };
                    let outcome = look_up(client, topic, strategy, part, id)
                        .await
                        .map_err(Arc::new);
                    if let Ok(verdict) = &outcome {
                        self.store(topic, strategy, part, id, verdict.clone());
                    }
                    sender.send_replace(Some(outcome.clone()));
                    return outcome.map_err(LookupError::Shared);
                }
                Role::Wait(mut receiver) => {
                    let outcome = receiver
                        .wait_for(|outcome| outcome.is_some())
                        .await
                        .map(|outcome| (*outcome).clone());
                    match outcome {
                        Ok(Some(outcome)) => return outcome.map_err(LookupError::Shared),
                        // The lookup's future was dropped (its produce was cancelled) before
                        // it had an answer; its entry is gone: start over, maybe as the lead.
                        Ok(None) | Err(_) => continue,
                    }
                }
            }
        }
    }

    fn store(&self, topic: &str, strategy: SubjectStrategy, part: Part, id: u32, verdict: Verdict) {
        let ttl = if verdict == Verdict::Allowed {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        let entry = Entry {
            verdict,
            expires: Instant::now() + ttl,
        };
        lock(&self.verdicts).insert(topic, strategy, part, id, entry);
    }
}

/// Whether `learn` makes the registry call or waits for another's.
enum Role {
    Lead(watch::Sender<Option<Outcome>>),
    Wait(watch::Receiver<Option<Outcome>>),
}

/// Removes a lookup's in-flight entry when the lookup ends, however it ends.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<FlightKey, watch::Receiver<Option<Outcome>>>>,
    key: &'a FlightKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.map).remove(self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry's verdict on `id` for `part` of `topic`.
async fn look_up(
    client: &RegistryClient,
    topic: &str,
    strategy: SubjectStrategy,
    part: Part,
    id: u32,
) -> Result<Verdict, LookupError> {
    let subject = match topic_subject(topic, part, strategy) {
        Some(subject) => Some(subject),
        None => record_name(client, id)
            .await?
            .map(|name| record_subject(topic, part, strategy, &name)),
    };
    let Some(subject) = subject else {
        return Ok(Verdict::Refused {
            subject: format!("(no schema with id {id})"),
        });
    };
    match client.versions_for_id(id).await {
        Ok(usages) if usages.iter().any(|usage| usage.subject == subject) => Ok(Verdict::Allowed),
        Ok(_) => Ok(Verdict::Refused { subject }),
        Err(error) if error.code() == Some(40403) => Ok(Verdict::Refused { subject }),
        Err(error) => Err(error.into()),
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

/// A cached verdict.
struct Entry {
    verdict: Verdict,
    expires: Instant,
}

/// The cached verdicts, and the topic names their keys share.
struct Verdicts {
    lru: Lru<Key, Entry>,
    /// Each topic name the entries use, held once, with how many entries use it. Keys hold a
    /// clone of the shared name, so an entry costs no copy of its topic's name (the LRU keeps
    /// two clones of every key), and a lookup borrows the name from here instead of
    /// allocating a key. A name goes with its last entry: this holds at most one name per
    /// entry.
    topics: HashMap<Arc<str>, usize>,
}

impl Verdicts {
    fn new(capacity: usize) -> Self {
        Self {
            lru: Lru::new(capacity),
            topics: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.lru.len()
    }

    /// The key of a verdict on `topic`, `None` if no entry of `topic` is cached.
    fn key(&self, topic: &str, strategy: SubjectStrategy, part: Part, id: u32) -> Option<Key> {
        let (name, _) = self.topics.get_key_value(topic)?;
        Some(Key {
            topic: name.clone(),
            strategy: strategy_tag(strategy),
            part,
            id,
        })
    }

    /// The verdict cached for the key if it has not expired at `now` (a use), else `Unknown`
    /// (an expired entry is dropped).
    fn get(
        &mut self,
        topic: &str,
        strategy: SubjectStrategy,
        part: Part,
        id: u32,
        now: Instant,
    ) -> Verdict {
        let Some(key) = self.key(topic, strategy, part, id) else {
            return Verdict::Unknown;
        };
        match self.lru.get(&key) {
            None => return Verdict::Unknown,
            Some(entry) if entry.expires > now => return entry.verdict.clone(),
            Some(_) => {}
        }
        if self.lru.remove(&key).is_some() {
            self.release(&key.topic);
        }
        Verdict::Unknown
    }

    /// Caches `entry` for the key (a use), evicting the least recently used entry if the
    /// cache is full. Expired entries are not searched for: they are dropped when read, or
    /// age out of the order like any unused entry.
    fn insert(
        &mut self,
        topic: &str,
        strategy: SubjectStrategy,
        part: Part,
        id: u32,
        entry: Entry,
    ) {
        let name = match self.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::<str>::from(topic),
        };
        let key = Key {
            topic: name.clone(),
            strategy: strategy_tag(strategy),
            part,
            id,
        };
        // Replacing a verdict is no new use of the name.
        if self.lru.peek(&key).is_none() {
            *self.topics.entry(name).or_insert(0) += 1;
        }
        if let Some((evicted, _)) = self.lru.insert(key, entry) {
            self.release(&evicted.topic);
        }
    }

    /// One entry of `topic` left the cache: the name goes with the last one.
    fn release(&mut self, topic: &str) {
        let left = match self.topics.get_mut(topic) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => return,
        };
        if left == 0 {
            self.topics.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC_NAME: SubjectStrategy = SubjectStrategy::TopicName;

    fn refused() -> Verdict {
        Verdict::Refused {
            subject: "orders-value".to_owned(),
        }
    }

    #[test]
    fn a_capacity_of_zero_still_holds_one_entry() {
        let cache = SchemaCache::with_capacity(None, 0);
        cache.store("orders", TOPIC_NAME, Part::Value, 1, Verdict::Allowed);
        assert_eq!(
            cache.cached("orders", TOPIC_NAME, Part::Value, 1),
            Verdict::Allowed
        );
        cache.store("orders", TOPIC_NAME, Part::Value, 2, Verdict::Allowed);
        assert_eq!(
            cache.cached("orders", TOPIC_NAME, Part::Value, 1),
            Verdict::Unknown
        );
        assert_eq!(cache.cached_entries(), 1);
    }

    #[test]
    fn verdicts_are_kept_per_subject_strategy() {
        // A topic deleted and created again with another strategy is not served the
        // verdicts made under the old one.
        let cache = SchemaCache::new(None);
        cache.store("orders", TOPIC_NAME, Part::Value, 1, Verdict::Allowed);
        for other in [
            SubjectStrategy::RecordName,
            SubjectStrategy::TopicRecordName,
        ] {
            assert_eq!(
                cache.cached("orders", other, Part::Value, 1),
                Verdict::Unknown
            );
        }
        cache.store(
            "orders",
            SubjectStrategy::RecordName,
            Part::Value,
            1,
            refused(),
        );
        assert_eq!(
            cache.cached("orders", TOPIC_NAME, Part::Value, 1),
            Verdict::Allowed
        );
        assert_eq!(
            cache.cached("orders", SubjectStrategy::RecordName, Part::Value, 1),
            refused()
        );
        assert_eq!(cache.cached_entries(), 2);
    }

    #[test]
    fn topic_names_are_shared_and_go_with_their_last_entry() {
        let now = Instant::now();
        let later = now + POSITIVE_TTL;
        let entry = |expires: Instant| Entry {
            verdict: Verdict::Allowed,
            expires,
        };
        let mut verdicts = Verdicts::new(2);
        verdicts.insert("orders", TOPIC_NAME, Part::Value, 1, entry(later));
        verdicts.insert("orders", TOPIC_NAME, Part::Value, 2, entry(later));
        // Replacing a verdict is no new entry.
        verdicts.insert("orders", TOPIC_NAME, Part::Value, 2, entry(later));
        assert_eq!(verdicts.topics.get("orders"), Some(&2));
        // Two entries of another topic push out the two of `orders`, and its name with them.
        verdicts.insert("payments", TOPIC_NAME, Part::Value, 1, entry(now));
        assert_eq!(verdicts.topics.get("orders"), Some(&1));
        verdicts.insert("payments", TOPIC_NAME, Part::Value, 2, entry(later));
        assert_eq!(verdicts.topics.get("orders"), None);
        assert_eq!(
            verdicts.get("orders", TOPIC_NAME, Part::Value, 1, now),
            Verdict::Unknown
        );
        // An expired entry reads as unknown and is dropped, with its use of the name.
        assert_eq!(
            verdicts.get("payments", TOPIC_NAME, Part::Value, 1, now),
            Verdict::Unknown
        );
        assert_eq!(verdicts.topics.get("payments"), Some(&1));
        assert_eq!(
            verdicts.get("payments", TOPIC_NAME, Part::Value, 2, now),
            Verdict::Allowed
        );
        assert_eq!((verdicts.len(), verdicts.topics.len()), (1, 1));
    }

    #[tokio::test]
    async fn without_a_registry_learning_fails_and_leaves_nothing_in_flight() {
        let cache = SchemaCache::new(None);
        let error = cache
            .learn("orders", TOPIC_NAME, Part::Value, 1)
            .await
            .expect_err("no registry");
        assert!(matches!(error, LookupError::NoRegistry), "{error}");
        assert_eq!(cache.lookups_in_flight(), 0);
    }
}
