//! Which schema IDs a topic accepts, cached so that a warm produce path makes no HTTP call.
//!
//! Entries are per (topic, key/value, schema ID). A positive answer is kept for
//! `POSITIVE_TTL` (a subject's versions can be deleted), a negative one for `NEGATIVE_TTL`
//! (a producer may register the schema a moment later).
//!
//! The cache is bounded by entries and evicts the least recently used one when full: the IDs
//! the live producers use are read on every produce and stay, while a client that sprays
//! unknown IDs only pushes out other cold entries (clearing the whole cache, as it once did,
//! sent every producer back to the registry at once).
//!
//! Lookups are coalesced: produces that need the same unknown (topic, part, ID) at the same
//! time make one registry call, the first one's, and all get its answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herald_broker_core::validation::{record_subject, topic_subject, Part, Verdict};
use herald_registry_client::{ClientError, RegistryClient, Version};
use herald_schema::{ParsedSchema, ResolvedReference};
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
/// Most distinct (topic, part, ID) lookups in flight at once. Lookups of the same key share
/// one entry, and a produce has at most one lookup in flight (it looks IDs up one after
/// another), but the broker's request limits still let through far more concurrent produces
/// (connections × in-flight requests) than a registry should see distinct calls; producers
/// use a few IDs, so thousands of distinct keys at once is a client spraying IDs. Beyond the
/// bound a lookup fails as `LookupError::Busy` and its produce is throttled (retried later),
/// rather than growing the in-flight map and fanning out to the registry without bound.
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

type Key = (String, Part, u32);

/// What a coalesced lookup ends with, as its waiters see it.
type Outcome = Result<Verdict, Arc<LookupError>>;

pub struct SchemaCache {
    client: Option<RegistryClient>,
    entries: Mutex<Lru>,
    /// Lookups under way, by key: a produce that needs the same key waits on the receiver
    /// (`None` until the lookup ends) instead of calling the registry again. The entry is
    /// removed when the lookup ends or its future is dropped, see `InFlight`.
    in_flight: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
}

impl SchemaCache {
    pub fn new(client: Option<RegistryClient>) -> Self {
        Self::with_capacity(client, SCHEMA_CACHE_ENTRIES_MAX)
    }

    /// A cache of at most `capacity` verdicts (at least one).
    pub fn with_capacity(client: Option<RegistryClient>, capacity: usize) -> Self {
        Self {
            client,
            entries: Mutex::new(Lru::new(capacity)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_registry(&self) -> bool {
        self.client.is_some()
    }

    /// What the cache knows now, without any I/O. A hit counts as a use for eviction.
    pub fn cached(&self, topic: &str, part: Part, id: u32) -> Verdict {
        lock(&self.entries).get(&(topic.to_owned(), part, id), Instant::now())
    }

    /// How many verdicts are cached (expired ones not yet dropped included).
    pub fn cached_entries(&self) -> usize {
        lock(&self.entries).len()
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
        let key: Key = (topic.to_owned(), part, id);
        loop {
            // Under the in-flight lock, so that a lookup that ends meanwhile is seen either
            // in flight or in the cache: it stores its verdict before leaving the map.
            let role = {
                let mut in_flight = lock(&self.in_flight);
                if let Some(receiver) = in_flight.get(&key) {
                    Role::Wait(receiver.clone())
                } else {
                    let known = lock(&self.entries).get(&key, Instant::now());
                    if known != Verdict::Unknown {
                        return Ok(known);
                    }
                    if in_flight.len() >= LOOKUPS_IN_FLIGHT_MAX {
                        return Err(LookupError::Busy {
                            limit: LOOKUPS_IN_FLIGHT_MAX,
                        });
                    }
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(key.clone(), receiver);
                    Role::Lead(sender)
                }
            };
            match role {
                Role::Lead(sender) => {
                    // Removes the map entry however this ends, the future dropped included:
                    // then `sender` is dropped too and the waiters try again themselves.
                    let _in_flight = InFlight {
                        map: &self.in_flight,
                        key: &key,
                    };
                    let outcome = look_up(client, topic, strategy, part, id)
                        .await
                        .map_err(Arc::new);
                    if let Ok(verdict) = &outcome {
                        self.store(key.clone(), verdict.clone());
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

    fn store(&self, key: Key, verdict: Verdict) {
        let ttl = if verdict == Verdict::Allowed {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        lock(&self.entries).insert(key, verdict, Instant::now() + ttl);
    }
}

/// Whether `learn` makes the registry call or waits for another's.
enum Role {
    Lead(watch::Sender<Option<Outcome>>),
    Wait(watch::Receiver<Option<Outcome>>),
}

/// Removes a lookup's in-flight entry when the lookup ends, however it ends.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
    key: &'a Key,
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
    /// The tick of its last use (insert or hit), its key in `Lru::by_use`.
    used: u64,
}

/// Verdicts bounded by count, evicting the least recently used. A map plus an index of last
/// use (tick → key, oldest first): a hit or an insert is O(log n), so is an eviction. No LRU
/// crate is in the dependency tree, and this one is small.
struct Lru {
    capacity: usize,
    /// Bumped on every use; never wraps in practice (u64).
    clock: u64,
    entries: HashMap<Key, Entry>,
    by_use: BTreeMap<u64, Key>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The verdict for `key` if cached and not expired (a use), else `Unknown` (an expired
    /// entry is dropped).
    fn get(&mut self, key: &Key, now: Instant) -> Verdict {
        let Some(entry) = self.entries.get_mut(key) else {
            return Verdict::Unknown;
        };
        let previous = entry.used;
        if entry.expires <= now {
            self.entries.remove(key);
            self.by_use.remove(&previous);
            return Verdict::Unknown;
        }
        self.clock += 1;
        entry.used = self.clock;
        let verdict = entry.verdict.clone();
        let owned = self.by_use.remove(&previous).unwrap_or_else(|| key.clone());
        self.by_use.insert(self.clock, owned);
        verdict
    }

    /// Caches `verdict` for `key` until `expires` (a use), evicting the least recently used
    /// entry if the cache is full. Expired entries are not searched for: they are dropped when
    /// read, or age out of the order like any unused entry.
    fn insert(&mut self, key: Key, verdict: Verdict, expires: Instant) {
        self.clock += 1;
        let used = self.clock;
        if let Some(entry) = self.entries.get_mut(&key) {
            self.by_use.remove(&entry.used);
            entry.verdict = verdict;
            entry.expires = expires;
            entry.used = used;
            self.by_use.insert(used, key);
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.by_use.insert(used, key.clone());
        self.entries.insert(
            key,
            Entry {
                verdict,
                expires,
                used,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> Key {
        ("orders".to_owned(), Part::Value, id)
    }

    fn refused() -> Verdict {
        Verdict::Refused {
            subject: "orders-value".to_owned(),
        }
    }

    #[test]
    fn a_full_lru_evicts_the_least_recently_used_entry() {
        let now = Instant::now();
        let later = now + POSITIVE_TTL;
        let mut lru = Lru::new(3);
        for id in 1..=3 {
            lru.insert(key(id), Verdict::Allowed, later);
        }
        // 1 is used: 2 is now the least recently used.
        assert_eq!(lru.get(&key(1), now), Verdict::Allowed);
        lru.insert(key(4), refused(), later);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get(&key(2), now), Verdict::Unknown);
        assert_eq!(lru.get(&key(1), now), Verdict::Allowed);
        assert_eq!(lru.get(&key(3), now), Verdict::Allowed);
        assert_eq!(lru.get(&key(4), now), refused());
        // Replacing an entry's verdict takes no room and counts as a use: 1 is now the least
        // recently used (1, 3, 4 were read in that order above, then 3 replaced).
        lru.insert(key(3), refused(), later);
        lru.insert(key(5), Verdict::Allowed, later);
        assert_eq!(lru.get(&key(1), now), Verdict::Unknown);
        assert_eq!(lru.get(&key(3), now), refused());
        assert_eq!(lru.entries.len(), lru.by_use.len());
    }

    #[test]
    fn expired_entries_read_as_unknown_and_are_dropped() {
        let now = Instant::now();
        let mut lru = Lru::new(10);
        lru.insert(key(1), refused(), now + NEGATIVE_TTL);
        assert_eq!(lru.get(&key(1), now), refused());
        assert_eq!(lru.get(&key(1), now + NEGATIVE_TTL), Verdict::Unknown);
        assert_eq!((lru.len(), lru.by_use.len()), (0, 0));
    }

    #[test]
    fn a_capacity_of_zero_still_holds_one_entry() {
        let cache = SchemaCache::with_capacity(None, 0);
        cache.store(key(1), Verdict::Allowed);
        assert_eq!(cache.cached("orders", Part::Value, 1), Verdict::Allowed);
        cache.store(key(2), Verdict::Allowed);
        assert_eq!(cache.cached("orders", Part::Value, 1), Verdict::Unknown);
        assert_eq!(cache.cached_entries(), 1);
    }

    #[tokio::test]
    async fn without_a_registry_learning_fails_and_leaves_nothing_in_flight() {
        let cache = SchemaCache::new(None);
        let error = cache
            .learn("orders", SubjectStrategy::TopicName, Part::Value, 1)
            .await
            .expect_err("no registry");
        assert!(matches!(error, LookupError::NoRegistry), "{error}");
        assert_eq!(cache.lookups_in_flight(), 0);
    }
}
