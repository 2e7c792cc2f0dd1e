//! What a partition replica must remember about its Raft log that its batches do not say:
//! the vote it cast, the term of every entry (as the list of leader changes: the first index
//! of each term), and the last purged and committed entries. The batch header has no field
//! outside its CRC for a term, so the terms live here, in the partition's `raft.meta`.
//!
//! Pure: no I/O. The caller persists [`ReplicaMeta::encode`] atomically, and must do so
//! *before* writing the first batch of a new term ([`ReplicaMeta::note_entry`] says when):
//! a batch on disk whose term the file does not know would be read back with the previous
//! term, and a replica whose log ids are wrong breaks Raft's log matching silently.

/// Most leader changes one replica's log may span. Terms of purged entries are dropped, so
/// this bounds the elections within the retained log, not over the partition's life.
pub const TERMS_MAX: usize = 65_536;
const META_MAGIC: &[u8; 4] = b"HRM1";

use crate::storage::{Storage, StorageError, StorageFile};

/// A position in a replica's Raft log: an entry's term and index (a Raft log id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

/// The vote a replica cast (or, committed, the leader it follows) in `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub term: u64,
    pub node_id: u64,
    pub committed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaMetaError {
    #[error(
        "entry {index} of term {term} goes back from term {last_term}: terms only grow along a log"
    )]
    TermGoesBack {
        index: u64,
        term: u64,
        last_term: u64,
    },
    #[error("entry {index} of a new term {term} does not follow term {last_term}, which starts at {last_first_index}")]
    IndexGoesBack {
        index: u64,
        term: u64,
        last_term: u64,
        last_first_index: u64,
    },
    #[error("entry {index} of term {term} is purged already (up to {purged})")]
    Purged { index: u64, term: u64, purged: u64 },
    #[error(
        "the log spans {TERMS_MAX} terms already: purge old entries before more leader changes"
    )]
    TooManyTerms,
}

/// Why a replica's meta could not be loaded or saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaFileError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{dir}/{META_FILE} is damaged (its checksum or layout is wrong): the replica's vote and terms are unknown, so it does not take part until an operator restores or removes the replica")]
    Damaged { dir: String },
}

/// The file, in the partition's directory, that holds its [`ReplicaMeta`].
pub const META_FILE: &str = "raft.meta";

/// A replica's Raft bookkeeping besides its batches; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogPosition>,
    purged: Option<LogPosition>,
    /// (term, first index of that term), both ascending: the terms of the entries after
    /// `purged`. Entry i has the term of the last element whose first index is <= i.
    terms: Vec<(u64, u64)>,
}

impl ReplicaMeta {
    /// The last purged entry (nothing at or before it is stored any more).
    pub fn purged(&self) -> Option<LogPosition> {
        self.purged
    }

    /// The term of entry `index`, if this replica knows it: purged entries are known only
    /// for the last one. The caller knows where its log ends; past it the last term is
    /// returned.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if let Some(purged) = self.purged {
            if index < purged.index {
                return None;
            }
            if index == purged.index {
                return Some(purged.term);
            }
        }
        let at = self.terms.partition_point(|&(_, first)| first <= index);
        at.checked_sub(1).map(|i| self.terms[i].0)
    }

    /// The first entry of each term among the entries after the purged one up to
    /// `last_index` (the log's last entry), in log order: what openraft calls the key log ids,
    /// with the last entry added by the caller. The first entry after the purged one is always
    /// among them.
    pub fn term_starts(&self, last_index: u64) -> impl Iterator<Item = LogPosition> + '_ {
        let first = self
            .purged
            .map_or(1, |purged| purged.index.saturating_add(1));
        self.terms
            .iter()
            .enumerate()
            .filter_map(move |(i, &(term, start))| {
                let end = self.terms.get(i + 1).map_or(last_index, |&(_, next)| {
                    next.saturating_sub(1).min(last_index)
                });
                let index = start.max(first);
                (index <= end).then_some(LogPosition { term, index })
            })
    }

    /// Takes note of an entry about to be written at `position`, the next one of the log.
    /// Returns `true` when it starts a new term: the caller must then persist this meta
    /// before writing the entry.
    pub fn note_entry(&mut self, position: LogPosition) -> Result<bool, ReplicaMetaError> {
        let LogPosition { term, index } = position;
        if let Some(purged) = self.purged {
            if index <= purged.index {
                return Err(ReplicaMetaError::Purged {
                    index,
                    term,
                    purged: purged.index,
                });
            }
        }
        match self.terms.last().copied() {
            Some((last_term, _)) if last_term == term => Ok(false),
            Some((last_term, _)) if term < last_term => Err(ReplicaMetaError::TermGoesBack {
                index,
                term,
                last_term,
            }),
            Some((last_term, last_first_index)) if index <= last_first_index => {
                Err(ReplicaMetaError::IndexGoesBack {
                    index,
                    term,
                    last_term,
                    last_first_index,
                })
            }
            // No term recorded after the purged entry (a purge dropped it, or a cut): this
            // entry's term is recorded whatever it is, the purged entry's included.
            None if self.purged.is_some_and(|purged| term < purged.term) => {
                Err(ReplicaMetaError::TermGoesBack {
                    index,
                    term,
                    last_term: self.purged.map_or(0, |purged| purged.term),
                })
            }
            _ if self.terms.len() >= TERMS_MAX => Err(ReplicaMetaError::TooManyTerms),
            _ => {
                self.terms.push((term, index));
                Ok(true)
            }
        }
    }

    /// Forgets the terms of entries after `last_kept` (every entry after the purged one when
    /// `None`): the log was cut there.
    pub fn truncate_after(&mut self, last_kept: Option<u64>) {
        match last_kept {
            Some(index) => self.terms.retain(|&(_, first)| first <= index),
            None => self.terms.clear(),
        }
    }

    /// Records that every entry up to and including `upto` is purged, and forgets the terms
    /// that only covered those entries.
    pub fn purge(&mut self, upto: LogPosition) {
        if self.purged.is_some_and(|purged| purged.index >= upto.index) {
            return;
        }
        self.purged = Some(upto);
        // Keep a term if it still covers an entry after `upto`: it is the last one, or the
        // next term starts after `upto + 1`.
        let next = upto.index.saturating_add(1);
        let starts: Vec<u64> = self.terms.iter().map(|&(_, first)| first).collect();
        let mut kept = Vec::with_capacity(self.terms.len());
        for (i, &entry) in self.terms.iter().enumerate() {
            let covers_later = starts.get(i + 1).is_none_or(|&following| following > next);
            if covers_later {
                kept.push(entry);
            }
        }
        self.terms = kept;
    }

    /// The meta stored in `dir` ([`META_FILE`]); `None` when there is none (a replica that
    /// never voted nor stored an entry).
    pub fn load<S: Storage>(storage: &S, dir: &str) -> Result<Option<Self>, MetaFileError> {
        if !storage.list(dir)?.iter().any(|name| name == META_FILE) {
            return Ok(None);
        }
        let file = storage.open(dir, META_FILE, false)?;
        let bytes = file.read_at(0, file.len() as usize)?;
        Self::decode(&bytes)
            .map(Some)
            .ok_or(MetaFileError::Damaged {
                dir: dir.to_owned(),
            })
    }

    /// Stores the meta in `dir`, replacing what was there atomically and durably.
    pub fn save<S: Storage>(&self, storage: &S, dir: &str) -> Result<(), StorageError> {
        storage.replace(dir, META_FILE, &self.encode())
    }

    /// The bytes to persist: magic, CRC-32C of the body, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + 16 * self.terms.len());
        match self.vote {
            Some(vote) => {
                body.push(1);
                body.extend_from_slice(&vote.term.to_be_bytes());
                body.extend_from_slice(&vote.node_id.to_be_bytes());
                body.push(u8::from(vote.committed));
            }
            None => body.push(0),
        }
        for position in [self.committed, self.purged] {
            match position {
                Some(position) => {
                    body.push(1);
                    body.extend_from_slice(&position.term.to_be_bytes());
                    body.extend_from_slice(&position.index.to_be_bytes());
                }
                None => body.push(0),
            }
        }
        body.extend_from_slice(&(self.terms.len() as u32).to_be_bytes());
        for &(term, first) in &self.terms {
            body.extend_from_slice(&term.to_be_bytes());
            body.extend_from_slice(&first.to_be_bytes());
        }
        herald_wire::seal(META_MAGIC, &body)
    }

    /// Decodes what [`ReplicaMeta::encode`] wrote; `None` if the bytes are damaged in any way
    /// (wrong magic or CRC, truncated, trailing bytes, terms out of order or too many).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        const WHAT: &str = "replica meta";
        let mut body = herald_wire::unseal(META_MAGIC, bytes, WHAT).ok()?;
        let vote = match body.u8(WHAT).ok()? {
            0 => None,
            1 => Some(Vote {
                term: body.u64(WHAT).ok()?,
                node_id: body.u64(WHAT).ok()?,
                committed: match body.u8(WHAT).ok()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            }),
            _ => return None,
        };
        let committed = position(&mut body)?;
        let purged = position(&mut body)?;
        let count = body.count(WHAT, TERMS_MAX).ok()?;
        let mut terms: Vec<(u64, u64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = (body.u64(WHAT).ok()?, body.u64(WHAT).ok()?);
            if terms
                .last()
                .is_some_and(|&(term, first)| entry.0 <= term || entry.1 <= first)
            {
                return None;
            }
            terms.push(entry);
        }
        body.finish(WHAT).ok()?;
        Some(Self {
            vote,
            committed,
            purged,
            terms,
        })
    }
}

/// An optional position: a presence byte, then term and index.
fn position(body: &mut herald_wire::Reader<'_>) -> Option<Option<LogPosition>> {
    const WHAT: &str = "replica meta position";
    match body.u8(WHAT).ok()? {
        0 => Some(None),
        1 => Some(Some(LogPosition {
            term: body.u64(WHAT).ok()?,
            index: body.u64(WHAT).ok()?,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `count` entries, in a new term when `new_term`.
        Append { count: u8, new_term: bool },
        /// Cut the log after `pick`-th kept entry (modulo), or everything.
        Truncate { pick: u16 },
        /// Purge up to the `pick`-th entry (modulo).
        Purge { pick: u16 },
        /// Persist and read back.
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u8..5, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
            1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
            1 => any::<u16>().prop_map(|pick| Op::Purge { pick }),
            1 => Just(Op::Reload),
        ]
    }

    proptest! {
        /// Against a model log (the term of every index, from 1): after any appends in growing
        /// terms, cuts, purges and reloads, every entry after the purged one has the model's
        /// term, the purged one too, the term starts are exactly the model's changes, and the
        /// meta persists exactly.
        #[test]
        fn terms_follow_a_model_log(ops in proptest::collection::vec(op(), 1..80)) {
            let mut meta = ReplicaMeta::default();
            // model[i] = term of entry i + 1; entries up to `purged` are gone.
            let mut model: Vec<u64> = Vec::new();
            let mut purged = 0u64;
            let mut term = 1u64;
            for op in ops {
                match op {
                    Op::Append { count, new_term } => {
                        if new_term {
                            term += 1;
                        }
                        for _ in 0..count {
                            let index = model.len() as u64 + 1;
                            let starts = model.last() != Some(&term);
                            let before = meta.clone();
                            let persisted = meta
                                .note_entry(LogPosition { term, index })
                                .expect("next entry");
                            // Every new term is persisted; so is any change to the meta (a
                            // term recorded again after a purge or a cut dropped it).
                            prop_assert!(!starts || persisted, "entry {} of term {}", index, term);
                            prop_assert_eq!(persisted, meta != before, "entry {} of term {}", index, term);
                            model.push(term);
                        }
                    }
                    Op::Truncate { pick } => {
                        let kept = model.len() as u64 - purged;
                        let cut = purged + u64::from(pick) % (kept + 1);
                        meta.truncate_after(Some(cut));
                        model.truncate(cut as usize);
                        // A new leader's entries may carry the last kept entry's term (or a
                        // term below the removed ones).
                        if let Some(&last) = model.last() {
                            term = last;
                        }
                    }
                    Op::Purge { pick } => {
                        let kept = model.len() as u64 - purged;
                        if kept > 0 {
                            let upto = purged + 1 + u64::from(pick) % kept;
                            meta.purge(LogPosition { term: model[upto as usize - 1], index: upto });
                            purged = upto;
                        }
                    }
                    Op::Reload => {
                        let bytes = meta.encode();
                        prop_assert_eq!(ReplicaMeta::decode(&bytes), Some(meta.clone()));
                    }
                }
                for index in purged.max(1)..=model.len() as u64 {
                    prop_assert_eq!(meta.term_of(index), Some(model[index as usize - 1]), "index {}", index);
                }
                if purged > 1 {
                    prop_assert_eq!(meta.term_of(purged - 1), None);
                }
                let expected: Vec<LogPosition> = (purged + 1..=model.len() as u64)
                    .filter(|&i| i == purged + 1 || model[i as usize - 1] != model[i as usize - 2])
                    .map(|i| LogPosition { term: model[i as usize - 1], index: i })
                    .collect();
                // Terms of purged entries are forgotten: at most the one still covering the
                // purged entry remains at or before it.
                prop_assert!(meta.terms.iter().filter(|&&(_, first)| first <= purged).count() <= 1);
                let starts: Vec<LogPosition> = meta.term_starts(model.len() as u64).collect();
                prop_assert_eq!(&starts[..], &expected[..]);
            }
        }

        /// Damaged bytes never decode into a meta (and never panic).
        #[test]
        fn damaged_meta_is_refused(flip in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
            let mut meta = ReplicaMeta {
                vote: Some(Vote { term: 7, node_id: 2, committed: true }),
                committed: Some(LogPosition { term: 6, index: 40 }),
                ..ReplicaMeta::default()
            };
            for (term, index) in [(3, 1), (5, 10), (7, 30)] {
                meta.note_entry(LogPosition { term, index }).expect("entry");
            }
            let bytes = meta.encode();
            let mut flipped = bytes.clone();
            let at = flip % flipped.len();
            flipped[at] ^= 1 << bit;
            prop_assert_eq!(ReplicaMeta::decode(&flipped), None);
            let cut = cut % bytes.len();
            prop_assert_eq!(ReplicaMeta::decode(&bytes[..cut]), None);
        }
    }

    /// The meta file is replaced whole: a crash after a save finds it, a failed save leaves
    /// the previous one, damage is reported (never read as "no meta": the vote would be lost
    /// and the replica could vote twice in one term).
    #[test]
    fn the_meta_file_is_replaced_atomically_and_damage_is_refused() {
        use crate::storage::faults::{Call, Fault, FaultyStorage};
        use crate::storage::MemoryStorage;
        const DIR: &str = "topic/0";
        let memory = MemoryStorage::new();
        let storage = FaultyStorage::new(memory.clone(), 1);
        assert_eq!(ReplicaMeta::load(&storage, DIR), Ok(None));
        let meta = ReplicaMeta {
            vote: Some(Vote {
                term: 3,
                node_id: 1,
                committed: false,
            }),
            ..ReplicaMeta::default()
        };
        meta.save(&storage, DIR).expect("save");
        memory.crash(|_| 0);
        assert_eq!(ReplicaMeta::load(&storage, DIR), Ok(Some(meta.clone())));

        let mut next = meta.clone();
        next.vote = Some(Vote {
            term: 4,
            node_id: 2,
            committed: true,
        });
        next.note_entry(LogPosition { term: 4, index: 0 })
            .expect("entry");
        storage.fail_next(Call::Replace, Fault::NoSpace);
        assert!(next.save(&storage, DIR).is_err());
        memory.crash(|_| 0);
        assert_eq!(ReplicaMeta::load(&storage, DIR), Ok(Some(meta)));
        next.save(&storage, DIR).expect("save");
        memory.crash(|_| 0);
        assert_eq!(ReplicaMeta::load(&storage, DIR), Ok(Some(next)));

        memory.corrupt(DIR, META_FILE, 9, &[0xff]);
        assert_eq!(
            ReplicaMeta::load(&storage, DIR),
            Err(MetaFileError::Damaged {
                dir: DIR.to_owned()
            })
        );
    }

    #[test]
    fn entries_that_would_rewrite_history_are_refused() {
        let mut meta = ReplicaMeta::default();
        assert_eq!(meta.note_entry(LogPosition { term: 2, index: 1 }), Ok(true));
        assert_eq!(
            meta.note_entry(LogPosition { term: 2, index: 2 }),
            Ok(false)
        );
        assert_eq!(meta.note_entry(LogPosition { term: 4, index: 3 }), Ok(true));
        let back = meta
            .note_entry(LogPosition { term: 3, index: 4 })
            .expect_err("term 3 after 4");
        assert!(back.to_string().contains("goes back from term 4"), "{back}");
        assert!(matches!(
            meta.note_entry(LogPosition { term: 5, index: 3 }),
            Err(ReplicaMetaError::IndexGoesBack { .. })
        ));
        meta.purge(LogPosition { term: 4, index: 3 });
        assert!(matches!(
            meta.note_entry(LogPosition { term: 5, index: 2 }),
            Err(ReplicaMetaError::Purged { purged: 3, .. })
        ));
        assert_eq!(meta.note_entry(LogPosition { term: 5, index: 4 }), Ok(true));
        assert_eq!(
            (meta.term_of(3), meta.term_of(4), meta.term_of(2)),
            (Some(4), Some(5), None)
        );
    }

    /// A purge drops the purged entry's term when the next term starts right after it; a cut
    /// back to the purged entry and an entry in that same term must still know its term.
    #[test]
    fn an_entry_after_a_cut_to_the_purged_one_keeps_its_term() {
        let mut meta = ReplicaMeta::default();
        meta.note_entry(LogPosition { term: 2, index: 1 })
            .expect("entry");
        meta.note_entry(LogPosition { term: 3, index: 6 })
            .expect("entry");
        meta.purge(LogPosition { term: 2, index: 5 });
        meta.truncate_after(Some(5));
        assert_eq!(meta.note_entry(LogPosition { term: 2, index: 6 }), Ok(true));
        assert_eq!(meta.term_of(6), Some(2));
        let reloaded = ReplicaMeta::decode(&meta.encode()).expect("decodes");
        assert_eq!(reloaded.term_of(6), Some(2));
        assert_eq!(
            reloaded.term_starts(6).collect::<Vec<_>>(),
            [LogPosition { term: 2, index: 6 }]
        );
    }
}
