//! Who holds which idempotent-producer id: a counter plus the id and epoch of every named
//! producer, so a named producer keeps its id and each new instance fences the previous one
//! with a higher epoch, and (with authentication on) the principal each id was handed to.
//!
//! Pure: a single broker persists the table in `producers.meta` before answering; a cluster
//! holds it in its metadata image, changed only by committed controller commands, so ids are
//! unique cluster-wide and every node knows whom an id belongs to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named producers remembered.
pub const NAMED_PRODUCERS_MAX: usize = 100_000;
/// Named producers one principal may own (with authentication on): one user cannot use up
/// [`NAMED_PRODUCERS_MAX`] for everyone.
pub const NAMED_PRODUCERS_PER_PRINCIPAL_MAX: usize = 1000;
/// Producer ids whose owner is remembered; beyond, the oldest (smallest) ids are forgotten
/// (an id whose owner is forgotten may be used by anyone allowed to write its topic).
pub const OWNED_IDS_MAX: usize = 100_000;

/// Why no producer id was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerIdRefusal {
    #[error("invalid producer name: {0}")]
    InvalidName(String),
    #[error("the broker already remembers {NAMED_PRODUCERS_MAX} named producers")]
    TooMany,
    #[error("producer name '{name}' belongs to {owner}")]
    NotOwner { name: String, owner: String },
    #[error("User:{0} already owns {NAMED_PRODUCERS_PER_PRINCIPAL_MAX} named producers")]
    TooManyForPrincipal(String),
}

/// Whom a producer id was handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerOwner {
    /// No such id was handed out yet: a batch claiming it is forged.
    NeverIssued,
    /// Not handed out as far as this cluster node has applied the controller's log, which
    /// it may lag by a moment: a refusal should be retryable.
    NotYetKnown,
    /// Handed out without authentication, or its owner was forgotten.
    Unknown,
    /// The principal (user name) it was handed to.
    Principal(String),
}

/// A named producer's id and current epoch, and the principal it belongs to (with
/// authentication on: the first that used the name; kept as long as the name is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub id: i64,
    pub epoch: i16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The ids (also the version 1 payload of a single broker's `producers.meta`: a change of
/// shape needs a new version there; `owners` was added compatibly, absent in older files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdTable {
    pub next_id: i64,
    pub named: BTreeMap<String, Named>,
    /// The principal each id was handed to (with authentication on), by id: a named producer
    /// belongs to the principal that first used its name, and nobody else may fence it or
    /// write under its id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owners: BTreeMap<i64, String>,
}

impl Default for ProducerIdTable {
    fn default() -> Self {
        Self {
            next_id: 1,
            named: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }
}

impl ProducerIdTable {
    /// A producer id and epoch for `name` (empty: an anonymous, fresh id). With an `owner`
    /// (the asking principal, when authentication is on), a named producer already owned by
    /// someone else is refused ([`ProducerIdRefusal::NotOwner`]), and the id handed out is
    /// recorded as the owner's. A refusal changes nothing.
    pub fn init(
        &mut self,
        name: &str,
        owner: Option<&str>,
    ) -> Result<(i64, i16), ProducerIdRefusal> {
        if name.chars().any(char::is_control) {
            return Err(ProducerIdRefusal::InvalidName(
                "control characters are not allowed".to_owned(),
            ));
        }
        if let (Some(owner), Some(named)) = (owner, self.named.get(name)) {
            if let Some(current) = &named.owner {
                if current != owner {
                    return Err(ProducerIdRefusal::NotOwner {
                        name: name.to_owned(),
                        owner: format!("User:{current}"),
                    });
                }
            }
        }
        if let Some(owner) = owner {
            let new_name = !name.is_empty() && !self.named.contains_key(name);
            if new_name
                && self
                    .named
                    .values()
                    .filter(|named| named.owner.as_deref() == Some(owner))
                    .count()
                    >= NAMED_PRODUCERS_PER_PRINCIPAL_MAX
            {
                return Err(ProducerIdRefusal::TooManyForPrincipal(owner.to_owned()));
            }
        }
        let answer = if name.is_empty() {
            (self.take_id(), 0)
        } else {
            match self.named.get(name).map(|named| (named.id, named.epoch)) {
                Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1),
                // Epochs exhausted: a new id, which no zombie can share.
                Some(_) | None => {
                    if self.named.len() >= NAMED_PRODUCERS_MAX && !self.named.contains_key(name) {
                        return Err(ProducerIdRefusal::TooMany);
                    }
                    (self.take_id(), 0)
                }
            }
        };
        if !name.is_empty() {
            let (id, epoch) = answer;
            let owner = owner
                .map(str::to_owned)
                .or_else(|| self.named.get(name).and_then(|named| named.owner.clone()));
            self.named
                .insert(name.to_owned(), Named { id, epoch, owner });
        }
        if let Some(owner) = owner {
            self.owners.insert(answer.0, owner.to_owned());
            if self.owners.len() > OWNED_IDS_MAX {
                self.forget_an_owner(answer.0, owner);
            }
        }
        Ok(answer)
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Forgets the owner of an anonymous id (named producers keep their owner with their
    /// name), not `kept`: `owner`'s oldest first, so that one principal asking for ids over
    /// and over forgets its own, not others'.
    fn forget_an_owner(&mut self, kept: i64, owner: &str) {
        let named: std::collections::HashSet<i64> =
            self.named.values().map(|named| named.id).collect();
        let forget = self
            .owners
            .iter()
            .find(|(id, who)| **id != kept && who.as_str() == owner && !named.contains(id))
            .or_else(|| {
                self.owners
                    .iter()
                    .find(|(id, _)| **id != kept && !named.contains(id))
            })
            .map(|(id, _)| *id);
        if let Some(id) = forget {
            self.owners.remove(&id);
        }
    }

    /// Whom producer id `id` was handed to.
    pub fn owner(&self, id: i64) -> ProducerOwner {
        if id >= self.next_id {
            return ProducerOwner::NeverIssued;
        }
        match self.owners.get(&id) {
            Some(owner) => ProducerOwner::Principal(owner.clone()),
            None => ProducerOwner::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_producers_keep_their_id_and_bump_their_epoch() {
        let mut table = ProducerIdTable::default();
        let (checkout, epoch) = table.init("checkout", None).expect("init");
        assert_eq!(epoch, 0);
        let anonymous = table.init("", None).expect("anonymous").0;
        assert_ne!(anonymous, checkout);
        assert_eq!(table.init("checkout", None).expect("init"), (checkout, 1));
        assert!(table.init("", None).expect("anonymous").0 > anonymous);
        let before = table.clone();
        assert!(table.init("bad\nname", None).is_err());
        assert_eq!(table, before, "a refusal changes nothing");
    }

    #[test]
    fn a_named_producer_belongs_to_the_principal_that_first_used_it() {
        let mut table = ProducerIdTable::default();
        let (id, _) = table.init("checkout", Some("alice")).expect("init");
        assert_eq!(
            table.owner(id),
            ProducerOwner::Principal("alice".to_owned())
        );
        assert_eq!(table.owner(id + 1), ProducerOwner::NeverIssued);
        assert!(matches!(
            table.init("checkout", Some("mallory")),
            Err(ProducerIdRefusal::NotOwner { .. })
        ));
        assert_eq!(
            table.init("checkout", Some("alice")).expect("init"),
            (id, 1)
        );
        let (anonymous, _) = table.init("", Some("bob")).expect("init");
        assert_eq!(
            table.owner(anonymous),
            ProducerOwner::Principal("bob".to_owned())
        );
    }

    #[test]
    fn one_principal_cannot_use_up_the_named_producers_for_everyone() {
        let mut table = ProducerIdTable::default();
        for n in 0..NAMED_PRODUCERS_PER_PRINCIPAL_MAX {
            table
                .init(&format!("p-{n}"), Some("mallory"))
                .expect("init");
        }
        assert!(matches!(
            table.init("one-more", Some("mallory")),
            Err(ProducerIdRefusal::TooManyForPrincipal(_))
        ));
        // Her own names still work (a restart bumps the epoch), and others are not affected.
        assert!(table.init("p-0", Some("mallory")).is_ok());
        assert!(table.init("checkout", Some("alice")).is_ok());
    }
}
