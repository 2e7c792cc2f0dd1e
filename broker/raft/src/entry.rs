//! A partition group's entries as stored batches, and back.
//!
//! A [`Proposal`]'s batch is stored as it is (one produced batch, one entry). openraft's own
//! entries become one-record control batches (`ATTRIBUTE_CONTROL`, which consumers skip):
//! the record's key names the kind, its value holds the membership (JSON) of a membership
//! change. Reading back, the term comes from the replica's meta and the index from the
//! batch's ordinal; neither is in the batch.

use herald_wire::batch::{self, BatchError, BatchView, BatchWriter};
use openraft::EntryPayload;

use crate::types::{Entry, LogId, Membership, Proposal};

/// The key of a blank entry's record (a new leader's first entry).
pub const BLANK_KEY: &[u8] = b"herald.raft.blank";
/// The key of a membership change's record.
pub const MEMBERSHIP_KEY: &[u8] = b"herald.raft.membership";
/// The key of a sequence marker's record: a proposal that is a one-record control batch
/// carrying an idempotent producer's stamp (its batch was all duplicates under an
/// idempotency-key window; every replica's producer state moves on with it, consumers pass
/// over it). The only control batch a proposal may be.
pub const SEQUENCE_MARKER_KEY: &[u8] = b"herald.producer.sequence";

/// An entry that cannot be a stored batch, or a stored batch that is no entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("a membership does not encode: {0}")]
    EncodeMembership(serde_json::Error),
    #[error("the stored membership of entry {index} does not decode: {error}")]
    DecodeMembership {
        index: u64,
        error: serde_json::Error,
    },
    #[error("the stored control batch of entry {index} is of no known kind ({kind:?})")]
    UnknownControl { index: u64, kind: String },
    #[error("the stored batch of entry {index} holds no record")]
    Empty { index: u64 },
}

type Payload = EntryPayload<Proposal, u64, openraft::BasicNode>;

/// The batch stored for `payload`: a proposal's own batch (shared, not copied), or a
/// control batch stamped with `now_ms` as its append time.
pub fn to_batch(payload: &Payload, now_ms: i64) -> Result<std::borrow::Cow<'_, [u8]>, EntryError> {
    use std::borrow::Cow;
    let control = |key: &[u8], value: Option<&[u8]>| -> Result<Cow<'_, [u8]>, EntryError> {
        let mut writer = BatchWriter::new();
        writer.push(now_ms, Some(key), value, std::iter::empty())?;
        let mut batch = writer.finish_control()?;
        batch::stamp(&mut batch, 0, now_ms);
        Ok(Cow::Owned(batch))
    };
    match payload {
        EntryPayload::Normal(proposal) => {
            check_proposal(proposal)?;
            Ok(Cow::Borrowed(&proposal.batch[..]))
        }
        EntryPayload::Blank => control(BLANK_KEY, None),
        EntryPayload::Membership(membership) => {
            let value = serde_json::to_vec(membership).map_err(EntryError::EncodeMembership)?;
            control(MEMBERSHIP_KEY, Some(&value))
        }
    }
}

/// Refuses a proposal that would read back as one of openraft's own entries: a control
/// batch other than a sequence marker ([`SEQUENCE_MARKER_KEY`]).
pub fn check_proposal(proposal: &Proposal) -> Result<(), EntryError> {
    match herald_wire::batch::BatchHeader::read(&proposal.batch) {
        Some(head) if head.is_control() && !is_sequence_marker(&proposal.batch) => {
            Err(BatchError::ReservedAttributes(head.attributes).into())
        }
        _ => Ok(()),
    }
}

/// Whether `bytes` is a control batch whose first record is a sequence marker's.
fn is_sequence_marker(bytes: &[u8]) -> bool {
    BatchView::parse(bytes).is_ok_and(|view| {
        view.is_control()
            && view
                .records()
                .next()
                .is_some_and(|record| record.is_ok_and(|r| r.key == Some(SEQUENCE_MARKER_KEY)))
    })
}

/// The entry `log_id` stored as the batch `bytes` (exactly one batch).
pub fn from_batch(bytes: &[u8], log_id: LogId) -> Result<Entry, EntryError> {
    let index = log_id.index;
    let view = BatchView::parse(bytes)?;
    let payload = if view.is_control() {
        let record = view.records().next().ok_or(EntryError::Empty { index })??;
        match record.key {
            Some(BLANK_KEY) => EntryPayload::Blank,
            Some(MEMBERSHIP_KEY) => {
                let membership: Membership = serde_json::from_slice(record.value.unwrap_or(&[]))
                    .map_err(|error| EntryError::DecodeMembership { index, error })?;
                EntryPayload::Membership(membership)
            }
            Some(SEQUENCE_MARKER_KEY) => {
                EntryPayload::Normal(Proposal::new(bytes::Bytes::copy_from_slice(bytes)))
            }
            key => {
                return Err(EntryError::UnknownControl {
                    index,
                    kind: String::from_utf8_lossy(key.unwrap_or_default()).into_owned(),
                })
            }
        }
    } else {
        EntryPayload::Normal(Proposal::new(bytes::Bytes::copy_from_slice(bytes)))
    };
    Ok(openraft::Entry::<_, _> { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_they_were_and_a_proposal_cannot_pose_as_a_control_entry() {
        let log_id = LogId::new_term_index(2, 7);
        let blank = to_batch(&EntryPayload::Blank, 5).expect("blank");
        assert!(matches!(
            from_batch(&blank, log_id).expect("entry").payload,
            EntryPayload::Blank
        ));
        let control = Proposal::new(blank.into_owned());
        assert!(matches!(
            to_batch(&EntryPayload::Normal(control), 5),
            Err(EntryError::Batch(BatchError::ReservedAttributes(_)))
        ));
        // A sequence marker is a proposal, and reads back as one.
        let mut writer = BatchWriter::new();
        writer
            .push(0, Some(SEQUENCE_MARKER_KEY), None, std::iter::empty())
            .expect("record");
        let marker = writer
            .finish_control_for(herald_wire::batch::ProducerStamp {
                id: 9,
                epoch: 0,
                base_sequence: 4,
            })
            .expect("marker");
        let payload = EntryPayload::Normal(Proposal::new(marker.clone()));
        let stored = to_batch(&payload, 5).expect("a marker is stored");
        match from_batch(&stored, log_id).expect("entry").payload {
            EntryPayload::Normal(proposal) => assert_eq!(&proposal.batch[..], &marker[..]),
            other => panic!("a marker read back as {other:?}"),
        }
    }
}
