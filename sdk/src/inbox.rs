//! The consumer inbox: idempotency keys processed within a window, persisted in sled so that
//! a restarted consumer still skips what it already handled. Bounded by a key count; the
//! oldest keys go first. Time is a parameter (`now_ms`) so the rules are tested without
//! waiting.
//!
//! # Storage: one tree, one batch per change
//!
//! A key is stored twice: under `k ‖ key` (its time, what [`Inbox::seen`] reads) and under
//! `t ‖ time ‖ key` (empty; the time-ordered index that expiry and eviction walk). Both live
//! in ONE sled tree, so each change (a record, an expiry or eviction step) is one
//! [`sled::Tree::apply_batch`]: sled seals a batch so that recovery replays all of it or none
//! of it, and readers never see half of one. Two trees written one after the other (the
//! earlier layout: `keys` and `by_time`) left a key without its index entry (never expired
//! nor evicted: the bound stopped holding) or an index entry naming a key recorded since (its
//! eviction dropped a live key early) when a crash or an error fell between the writes.
//!
//! Why a batch rather than a multi-tree sled transaction: transactional trees cannot iterate,
//! so expiry and eviction would read the oldest entries outside the transaction and check
//! them again inside it, and optimistic conflicts between concurrent records would retry; the
//! batch gives the same crash atomicity (the same sealed log batch), and the read that builds
//! each batch is kept consistent by the writer lock, which all writes of one inbox take (the
//! directory is locked to one open instance, so no other process writes it). The cost is a
//! layout change: a store in the earlier layout is migrated when opened (see
//! [`Inbox::open`]).
//!
//! # Claims: one handling per key at a time
//!
//! "Seen?" then "handle" then "record" lets two records with one idempotency key that are
//! handled at once (keyless records land on lanes by offset, so duplicates can run on two
//! lanes; an inbox may also serve several consumers) both pass the check. [`Inbox::claim`]
//! takes the key first: a second claimer waits while the first is handled, then finds the key
//! recorded (skipped) or, if the first failed and dropped its claim, gets the claim itself.
//! Claims live in memory only: they belong to handlers running in this process, which a
//! crash ends too, and a claim persisted in sled would outlive its crashed holder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Inbox defaults: a 30-minute window (longer than any retry or redelivery horizon).
pub const INBOX_WINDOW_MS_DEFAULT: i64 = 30 * 60 * 1000;
/// Keys remembered at most.
pub const INBOX_KEYS_MAX_DEFAULT: usize = 1_000_000;
/// Keys claimed (being handled) at once, at most; a claimer beyond it waits for a release.
/// A consumer claims at most one key per lane (`CONCURRENCY_MAX` is 256), so this leaves
/// room for 16 consumers at full concurrency sharing one inbox; it bounds the memory a
/// caller that never releases its claims could pin.
pub const INBOX_CLAIMS_MAX: usize = 4096;

/// The single tree of the current layout.
const ENTRIES_TREE: &str = "entries";
/// The earlier layout's trees, migrated into [`ENTRIES_TREE`] when opened.
const LEGACY_KEYS_TREE: &str = "keys";
const LEGACY_BY_TIME_TREE: &str = "by_time";
/// Tag of a key's entry: `k ‖ key` → its time (8 bytes, big-endian).
const KEY_TAG: u8 = b'k';
/// Tag of a key's index entry: `t ‖ time (order-preserving) ‖ key` → empty.
const TIME_TAG: u8 = b't';
/// Entries removed (or migrated) per batch: a long-idle inbox expiring many keys, or a large
/// earlier-layout store, is changed in bounded steps (each a consistent batch), not in one
/// batch held whole in memory.
const BATCH_KEYS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("inbox storage: {0}")]
pub struct InboxError(#[from] sled::Error);

pub struct Inbox {
    entries: sled::Tree,
    db: sled::Db,
    /// Taken by every write: a batch is built from reads (a key's previous time, the oldest
    /// index entries) that must still hold when it is applied. Holds the number of keys,
    /// exact because only writers change it (counted when opened).
    writer: Mutex<usize>,
    claims: Claims,
    window_ms: i64,
    keys_max: usize,
}

/// What [`Inbox::claim`] found.
#[derive(Debug)]
#[must_use = "a claimed key is released, unrecorded, when its claim is dropped"]
pub enum Admission<'a> {
    /// The key was processed within the window: skip the record.
    Processed,
    /// The key is this caller's: handle the record, then [`InboxClaim::record`] on success;
    /// dropping the claim instead (a failure) lets the next claimer handle its record.
    Claimed(InboxClaim<'a>),
}

/// A key being handled. Dropping it releases the key unrecorded; [`InboxClaim::record`]
/// records it, then releases it, so a waiting claimer finds it processed.
#[derive(Debug)]
#[must_use = "dropping a claim releases the key unrecorded"]
pub struct InboxClaim<'a> {
    inbox: &'a Inbox,
    /// The same allocation as the key's entry in the claimed set (copied once, at the claim).
    key: Arc<[u8]>,
}

impl InboxClaim<'_> {
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Records the key as processed, durably (as [`Inbox::record`]), then releases it. On an
    /// error the key is released unrecorded: the next record with it may be handled.
    pub fn record(self, now_ms: i64) -> Result<(), InboxError> {
        self.inbox.record(&self.key, now_ms)
        // `self` drops here, after the record: the release comes second.
    }
}

impl Drop for InboxClaim<'_> {
    fn drop(&mut self) {
        self.inbox.claims.release(&self.key);
    }
}

impl Inbox {
    /// Opens (or creates) the inbox at `path`. While the directory is still locked by an
    /// instance that is closing, waits up to [`herald_sled::LOCK_WAIT`]. A store in the
    /// earlier two-tree layout is migrated first (`migrate_legacy`).
    pub fn open(path: &Path, window_ms: i64, keys_max: usize) -> Result<Self, InboxError> {
        let db = herald_sled::open(
            &sled::Config::new()
                .path(path)
                .cache_capacity(8 * 1024 * 1024),
        )?;
        let entries = db.open_tree(ENTRIES_TREE)?;
        migrate_legacy(&db, &entries)?;
        let count = entries
            .scan_prefix([KEY_TAG])
            .try_fold(0usize, |count, item| item.map(|_| count + 1))?;
        Ok(Self {
            entries,
            db,
            writer: Mutex::new(count),
            claims: Claims::new(INBOX_CLAIMS_MAX),
            window_ms,
            keys_max: keys_max.max(1),
        })
    }

    /// Whether `key` was processed within the window.
    pub fn seen(&self, key: &[u8], now_ms: i64) -> Result<bool, InboxError> {
        Ok(self
            .entries
            .get(key_entry(key))?
            .as_deref()
            .and_then(decode_at)
            .is_some_and(|at| now_ms.saturating_sub(at) < self.window_ms))
    }

    /// Claims `key` for handling a record: waits while another claimer holds it, then
    /// [`Admission::Processed`] if it was processed within the window (as [`Inbox::seen`] at
    /// `now_ms`), else [`Admission::Claimed`]. Cancel-safe: a claim dropped while waiting
    /// holds nothing. A caller must not claim a key it already holds (it would wait on
    /// itself).
    pub async fn claim(&self, key: &[u8], now_ms: i64) -> Result<Admission<'_>, InboxError> {
        let key = loop {
            match self.claims.try_claim(key) {
                Attempt::Claimed(key) => break key,
                Attempt::Wait(released) => released.await,
            }
        };
        // The key is ours from here: the claim releases it however this ends (an error of
        // the check included).
        let claim = InboxClaim { inbox: self, key };
        if self.seen(&claim.key, now_ms)? {
            return Ok(Admission::Processed);
        }
        Ok(Admission::Claimed(claim))
    }

    /// Records `key` as processed (after the handler succeeded), durably: keys out of the
    /// window are purged first, and the oldest keys beyond the bound after.
    pub fn record(&self, key: &[u8], now_ms: i64) -> Result<(), InboxError> {
        {
            let mut count = self.writer();
            self.expire(&mut count, now_ms)?;
            let own = key_entry(key);
            let previous = self.entries.get(&own)?;
            let mut batch = sled::Batch::default();
            // The index entry of the key's previous time goes in the same batch as the new
            // pair (removed first: with an unchanged time the insert below wins).
            if let Some(at) = previous.as_deref().and_then(decode_at) {
                batch.remove(time_entry(at, key));
            }
            batch.insert(own, now_ms.to_be_bytes().to_vec());
            batch.insert(time_entry(now_ms, key), Vec::<u8>::new());
            self.entries.apply_batch(batch)?;
            if previous.is_none() {
                *count += 1;
            }
            self.evict(&mut count)?;
        }
        // Outside the writer lock: concurrent records share their syncs.
        self.db.flush()?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        *self.writer()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The writer lock. A panic while it was held (none of the code under it panics on its
    /// own) left no half-applied batch — a batch applies whole or not at all — so the state
    /// it guards is taken as it is.
    fn writer(&self) -> MutexGuard<'_, usize> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the keys out of the window at `now_ms`, oldest first, a batch at a time.
    fn expire(&self, count: &mut usize, now_ms: i64) -> Result<(), InboxError> {
        loop {
            let removed = self.remove_oldest(count, BATCH_KEYS_MAX, |at| {
                now_ms.saturating_sub(at) < self.window_ms
            })?;
            if removed < BATCH_KEYS_MAX {
                return Ok(());
            }
        }
    }

    /// Removes the oldest keys beyond the bound, a batch at a time.
    fn evict(&self, count: &mut usize) -> Result<(), InboxError> {
        while *count > self.keys_max {
            let excess = (*count - self.keys_max).min(BATCH_KEYS_MAX);
            if self.remove_oldest(count, excess, |_| false)? == 0 {
                // Keys without an index entry (not written by this layout): nothing to evict
                // them by.
                break;
            }
        }
        Ok(())
    }

    /// Removes up to `limit` of the oldest index entries, stopping at the first whose time is
    /// `live`, each with its key's entry, in one batch; `count` follows. Returns the index
    /// entries removed. Called with the writer lock held.
    fn remove_oldest(
        &self,
        count: &mut usize,
        limit: usize,
        live: impl Fn(i64) -> bool,
    ) -> Result<usize, InboxError> {
        let mut batch = sled::Batch::default();
        let (mut removed, mut keys_removed) = (0usize, 0usize);
        for item in self.entries.scan_prefix([TIME_TAG]) {
            if removed >= limit {
                break;
            }
            let (entry, _) = item?;
            match decode_time_entry(&entry) {
                Some((at, _)) if live(at) => break,
                Some((at, key)) => {
                    // The key goes only if this entry is its current one (an index entry of
                    // an earlier time, which only a damaged store holds, goes alone).
                    let own = key_entry(key);
                    if self.entries.get(&own)?.as_deref().and_then(decode_at) == Some(at) {
                        batch.remove(own);
                        keys_removed += 1;
                    }
                }
                // Unreadable: removed, it indexes nothing.
                None => {}
            }
            batch.remove(entry);
            removed += 1;
        }
        if removed > 0 {
            self.entries.apply_batch(batch)?;
            *count = count.saturating_sub(keys_removed);
        }
        Ok(removed)
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("keys", &self.len())
            .field("claimed", &self.claims.len())
            .field("window_ms", &self.window_ms)
            .field("keys_max", &self.keys_max)
            .finish()
    }
}

/// Moves a store written in the earlier layout (`keys`: key → time; `by_time`: time ‖ key)
/// into `entries`, then empties the old trees. `keys` is the authority (what `seen` read):
/// each of its keys gets both entries, and `by_time`'s entries are not carried over, so the
/// torn writes that layout could leave are repaired here. Safe to interrupt: the old trees are
/// emptied only once the migrated entries are durable, and a rerun writes the same entries
/// again (a key `entries` already holds at the same or a later time is kept as it is).
fn migrate_legacy(db: &sled::Db, entries: &sled::Tree) -> Result<(), InboxError> {
    let names = db.tree_names();
    let present = |name: &str| names.iter().any(|n| &**n == name.as_bytes());
    if !present(LEGACY_KEYS_TREE) && !present(LEGACY_BY_TIME_TREE) {
        return Ok(());
    }
    let keys = db.open_tree(LEGACY_KEYS_TREE)?;
    let by_time = db.open_tree(LEGACY_BY_TIME_TREE)?;
    if keys.is_empty() && by_time.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    for item in keys.iter() {
        let (key, value) = item?;
        // A time that does not read was not "seen" in the old layout either.
        let Some(at) = decode_at(&value) else {
            continue;
        };
        let own = key_entry(&key);
        match entries.get(&own)?.as_deref().and_then(decode_at) {
            Some(current) if current >= at => continue,
            Some(current) => batch.remove(time_entry(current, &key)),
            None => {}
        }
        batch.insert(own, value);
        batch.insert(time_entry(at, &key), Vec::<u8>::new());
        in_batch += 1;
        if in_batch >= BATCH_KEYS_MAX {
            entries.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        entries.apply_batch(batch)?;
    }
    db.flush()?;
    // `by_time` first: while `keys` still holds anything, a reopen migrates again.
    by_time.clear()?;
    keys.clear()?;
    db.flush()?;
    Ok(())
}

/// Claimed keys, each with what its waiters wait on (`None` until one waits).
type HeldKeys = HashMap<Arc<[u8]>, Option<Arc<Notify>>>;

/// The claimed keys, each with what its waiters wait on: nothing until a second claimer
/// waits for it (most keys are claimed by one record at a time, so most claims allocate no
/// `Notify`).
struct Claims {
    held: Mutex<HeldKeys>,
    /// Woken by a release that leaves room: claimers wait on it only while [`Claims::max`]
    /// keys are held, so a release of a set below its bound wakes nobody.
    released: Arc<Notify>,
    max: usize,
}

/// One try at a claim.
enum Attempt {
    /// The key is the caller's; this is the claimed set's own copy of it (shared, not copied
    /// again), for the [`InboxClaim`].
    Claimed(Arc<[u8]>),
    /// Held by another claimer, or no room: try again once this completes.
    Wait(OwnedNotified),
}

impl Claims {
    fn new(max: usize) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            released: Arc::new(Notify::new()),
            max: max.max(1),
        }
    }

    /// The claimed set. A panic while it was locked (an allocation failure) left it whole:
    /// each change is one map operation.
    fn held(&self) -> MutexGuard<'_, HeldKeys> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_claim(&self, key: &[u8]) -> Attempt {
        let mut held = self.held();
        // The waits are created under the lock, before the holder can release: a
        // `notify_waiters` reaches a notified future from its creation on, polled or not, so
        // no release slips between this check and the wait. A key's `Notify` is made by its
        // first waiter, under the same lock, so a release finds every waiter's.
        if let Some(waiters) = held.get_mut(key) {
            let notify = waiters.get_or_insert_with(|| Arc::new(Notify::new()));
            return Attempt::Wait(Arc::clone(notify).notified_owned());
        }
        if held.len() >= self.max {
            return Attempt::Wait(Arc::clone(&self.released).notified_owned());
        }
        let key: Arc<[u8]> = Arc::from(key);
        held.insert(Arc::clone(&key), None);
        Attempt::Claimed(key)
    }

    fn release(&self, key: &[u8]) {
        let mut held = self.held();
        // Claimers wait for room only while the set is full (`try_claim`), and it never grows
        // past its bound, so only a release from a full set can have any to wake.
        let was_full = held.len() >= self.max;
        let Some(waiters) = held.remove(key) else {
            return;
        };
        if let Some(notify) = waiters {
            notify.notify_waiters();
        }
        if was_full {
            self.released.notify_waiters();
        }
    }

    fn len(&self) -> usize {
        self.held().len()
    }
}

fn key_entry(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(KEY_TAG);
    out.extend_from_slice(key);
    out
}

fn time_entry(at: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(TIME_TAG);
    out.extend_from_slice(&ordered_time(at));
    out.extend_from_slice(key);
    out
}

/// `at` as bytes that sort as the times do (the sign bit flipped: a negative time, which
/// only a clock before 1970 gives, sorts before the others).
fn ordered_time(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from_ordered(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// A key entry's value: its time.
fn decode_at(value: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(value).ok().map(i64::from_be_bytes)
}

/// An index entry: its time and key.
fn decode_time_entry(entry: &[u8]) -> Option<(i64, &[u8])> {
    let (&tag, rest) = entry.split_first()?;
    if tag != TIME_TAG {
        return None;
    }
    let (at, key) = rest.split_first_chunk::<8>()?;
    Some((time_from_ordered(*at), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn remembers_within_the_window_across_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let inbox = Inbox::open(dir.path(), 1_000, 3).expect("open");
            inbox.record(b"a", 0).expect("record");
            assert!(inbox.seen(b"a", 999).expect("seen"));
            assert!(
                !inbox.seen(b"a", 1_000).expect("seen"),
                "outside the window"
            );
        }
        let inbox = Inbox::open(dir.path(), 1_000, 3).expect("reopen");
        assert!(inbox.seen(b"a", 10).expect("seen"), "survives a restart");
        for key in [b"b", b"c", b"d"] {
            inbox.record(key, 20).expect("record");
        }
        assert_eq!(inbox.len(), 3, "bounded");
        assert!(
            !inbox.seen(b"a", 30).expect("seen"),
            "the oldest went first"
        );
        inbox.record(b"e", 5_000).expect("record");
        assert_eq!(inbox.len(), 1, "expired keys are purged");
        assert_consistent(&inbox);
    }

    /// The stored pairs: every key entry has exactly its index entry and every index entry
    /// its key entry at the same time, nothing else is stored, and the count and the bound
    /// agree with them.
    fn assert_consistent(inbox: &Inbox) {
        let mut keys = BTreeMap::new();
        let mut index = BTreeMap::new();
        for item in inbox.entries.iter() {
            let (entry, value) = item.expect("iter");
            match entry.first() {
                Some(&KEY_TAG) => {
                    let at = decode_at(&value).expect("a key entry holds its time");
                    keys.insert(entry[1..].to_vec(), at);
                }
                Some(&TIME_TAG) => {
                    let (at, key) = decode_time_entry(&entry).expect("a readable index entry");
                    assert!(value.is_empty(), "index entries are empty");
                    assert!(
                        index.insert(key.to_vec(), at).is_none(),
                        "one index entry per key: {key:?}"
                    );
                }
                _ => panic!("an entry of no kind: {entry:?}"),
            }
        }
        assert_eq!(keys, index, "key entries and index entries pair up");
        assert_eq!(inbox.len(), keys.len(), "the count is the key entries'");
        assert!(keys.len() <= inbox.keys_max, "bounded");
    }

    /// Writes the earlier layout's trees as they were left by its torn writes, in a store
    /// then closed. `a` at 0: its key written, its index entry not (a crash inside `record`,
    /// `expire` or eviction). `b` recorded again at 10: its key moved on, its index still at
    /// 5 (a crash between the key's insert and the index's update). `c` at 20: whole.
    fn write_torn_legacy_store(path: &Path) {
        let db = herald_sled::open(&sled::Config::new().path(path)).expect("open");
        let keys = db.open_tree(LEGACY_KEYS_TREE).expect("keys");
        let by_time = db.open_tree(LEGACY_BY_TIME_TREE).expect("by_time");
        let legacy_time_key = |at: i64, key: &[u8]| {
            let mut out = at.to_be_bytes().to_vec();
            out.extend_from_slice(key);
            out
        };
        keys.insert(b"a", 0i64.to_be_bytes().to_vec())
            .expect("insert");
        keys.insert(b"b", 10i64.to_be_bytes().to_vec())
            .expect("insert");
        by_time
            .insert(legacy_time_key(5, &b"b"[..]), Vec::<u8>::new())
            .expect("insert");
        keys.insert(b"c", 20i64.to_be_bytes().to_vec())
            .expect("insert");
        by_time
            .insert(legacy_time_key(20, &b"c"[..]), Vec::<u8>::new())
            .expect("insert");
        db.flush().expect("flush");
    }

    /// Catches: the torn states the two-tree layout could be left in, read as they are. The
    /// earlier code, given this store, evicted `b` (its stale index entry at 5 came first)
    /// instead of the oldest key `a`, which it could never evict nor expire (no index entry),
    /// so the last two assertions on `seen` and the purge fail on it; the migration rebuilds
    /// the index from the keys.
    #[test]
    fn a_store_of_the_two_tree_layout_is_migrated_with_its_torn_writes_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_torn_legacy_store(dir.path());
        {
            let inbox = Inbox::open(dir.path(), 1_000, 3).expect("open");
            for key in [b"a", b"b", b"c"] {
                assert!(inbox.seen(key, 30).expect("seen"), "carried over: {key:?}");
            }
            assert_eq!(inbox.len(), 3);
            inbox.record(b"d", 40).expect("record");
            assert!(!inbox.seen(b"a", 50).expect("seen"), "the oldest key went");
            assert!(
                inbox.seen(b"b", 50).expect("seen"),
                "not a newer key by a stale index entry"
            );
            assert_consistent(&inbox);
            let legacy_keys = inbox.db.open_tree(LEGACY_KEYS_TREE).expect("keys");
            let legacy_index = inbox.db.open_tree(LEGACY_BY_TIME_TREE).expect("by_time");
            assert!(legacy_keys.is_empty() && legacy_index.is_empty(), "emptied");
        }
        let inbox = Inbox::open(dir.path(), 1_000, 3).expect("reopen");
        assert_consistent(&inbox);
        inbox.record(b"e", 5_000).expect("record");
        assert_eq!(inbox.len(), 1, "every earlier key expired, `a` too");
        assert_consistent(&inbox);
    }

    /// Catches: a migration that is not safe to run again. The store is as a migration
    /// interrupted after its first batch left it: the new tree already holds `b` (and holds
    /// `c` at a later time, as a newer binary recorded it after a downgrade), the old trees
    /// still hold everything.
    #[test]
    fn an_interrupted_migration_completes_on_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_torn_legacy_store(dir.path());
        {
            let db = herald_sled::open(&sled::Config::new().path(dir.path())).expect("open");
            let entries = db.open_tree(ENTRIES_TREE).expect("entries");
            let mut batch = sled::Batch::default();
            batch.insert(key_entry(b"b"), 10i64.to_be_bytes().to_vec());
            batch.insert(time_entry(10, b"b"), Vec::<u8>::new());
            batch.insert(key_entry(b"c"), 25i64.to_be_bytes().to_vec());
            batch.insert(time_entry(25, b"c"), Vec::<u8>::new());
            entries.apply_batch(batch).expect("batch");
            db.flush().expect("flush");
        }
        let inbox = Inbox::open(dir.path(), 1_000, 3).expect("open");
        assert_consistent(&inbox);
        assert_eq!(inbox.len(), 3);
        assert!(
            inbox.seen(b"c", 1_024).expect("seen"),
            "the later time of `c` kept"
        );
        assert!(!inbox.seen(b"b", 1_024).expect("seen"));
    }

    /// A small deterministic generator: the interleavings vary, the operations repeat.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Catches: key and index entries written apart, or a batch built from reads another
    /// writer changed meanwhile. Four threads record, look up, expire and evict a small set
    /// of keys at times that move both ways; after they end, and again after a reopen, every
    /// key must have exactly its index entry. With the earlier record (the key's insert, the
    /// removal of its previous index entry and the index insert as three writes with no
    /// lock), two records of one key interleave into an index entry for a time the key no
    /// longer has, which this finds; a crash between the writes leaves the same states, which
    /// one batch per change rules out.
    #[test]
    fn concurrent_records_leave_every_key_with_exactly_its_index_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let inbox = Inbox::open(dir.path(), 400, 5).expect("open");
            std::thread::scope(|scope| {
                for thread in 0..4u64 {
                    let inbox = &inbox;
                    scope.spawn(move || {
                        let mut state = 0x9E37_79B9_7F4A_7C15 ^ (thread + 1);
                        for step in 0..150i64 {
                            let key = [b'k', (next(&mut state) % 8) as u8];
                            // Mostly forward, sometimes back (another lane's older clock).
                            let jitter = (next(&mut state) % 50) as i64;
                            let now = step * 10 + jitter - 25;
                            if next(&mut state).is_multiple_of(4) {
                                inbox.seen(&key, now).expect("seen");
                            } else {
                                inbox.record(&key, now).expect("record");
                            }
                        }
                    });
                }
            });
            assert_consistent(&inbox);
        }
        let inbox = Inbox::open(dir.path(), 400, 5).expect("reopen");
        assert_consistent(&inbox);
        inbox.record(b"late", 100_000).expect("record");
        assert_eq!(inbox.len(), 1, "the rest expired");
        assert_consistent(&inbox);
    }

    /// Catches: eviction by a count that drifts from the stored keys (the count is kept in
    /// memory, from the open on). A record of a key already held does not grow it; the bound
    /// holds after a reopen with a smaller bound.
    #[test]
    fn the_count_follows_the_keys_across_rerecords_and_a_smaller_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let inbox = Inbox::open(dir.path(), 10_000, 10).expect("open");
            for at in 0..6 {
                inbox.record(b"same", at).expect("record");
            }
            assert_eq!(inbox.len(), 1, "one key, recorded again");
            for key in [b"w", b"x", b"y", b"z"] {
                inbox.record(key, 10).expect("record");
            }
            assert_eq!(inbox.len(), 5);
            assert_consistent(&inbox);
        }
        let inbox = Inbox::open(dir.path(), 10_000, 2).expect("reopen");
        assert_eq!(inbox.len(), 5, "counted when opened");
        inbox.record(b"new", 20).expect("record");
        assert_eq!(inbox.len(), 2, "evicted down to the new bound");
        assert!(!inbox.seen(b"same", 21).expect("seen"), "the oldest first");
        assert!(inbox.seen(b"new", 21).expect("seen"));
        assert_consistent(&inbox);
    }

    /// Catches: a claim set that grows past its bound, or a claimer waiting for room that
    /// misses the release.
    #[tokio::test]
    async fn a_full_claim_set_makes_the_next_claimer_wait_for_a_release() {
        let claims = Claims::new(2);
        assert!(matches!(claims.try_claim(b"a"), Attempt::Claimed(_)));
        assert!(matches!(claims.try_claim(b"b"), Attempt::Claimed(_)));
        let Attempt::Wait(room) = claims.try_claim(b"c") else {
            panic!("a third key is refused while two are held");
        };
        assert_eq!(claims.len(), 2);
        claims.release(b"a");
        tokio::time::timeout(Duration::from_secs(5), room)
            .await
            .expect("woken by the release");
        assert!(matches!(claims.try_claim(b"c"), Attempt::Claimed(_)));
        assert!(
            matches!(claims.try_claim(b"b"), Attempt::Wait(_)),
            "still held"
        );
    }

    #[test]
    fn time_entries_sort_as_their_times() {
        let times = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let entries: Vec<Vec<u8>> = times.iter().map(|&at| time_entry(at, b"k")).collect();
        assert!(entries.windows(2).all(|pair| pair[0] < pair[1]));
        for (&at, entry) in times.iter().zip(&entries) {
            assert_eq!(decode_time_entry(entry), Some((at, &b"k"[..])));
        }
    }
}
