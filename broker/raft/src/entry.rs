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

/// The batch stored for `payload`: a proposal's own batch, or a control batch stamped with
/// `now_ms` as its append time.
pub fn to_batch(payload: &Payload, now_ms: i64) -> Result<Vec<u8>, EntryError> {
    let control = |key: &[u8], value: Option<&[u8]>| -> Result<Vec<u8>, EntryError> {
        let mut writer = BatchWriter::new();
        writer.push(now_ms, Some(key), value, std::iter::empty())?;
        let mut batch = writer.finish_control()?;
        batch::stamp(&mut batch, 0, now_ms);
        Ok(batch)
    };
    match payload {
        // A proposal is a produced batch: with the control bit it would read back as one of
        // openraft's own entries.
        EntryPayload::Normal(proposal) => {
            match herald_wire::batch::BatchHeader::read(&proposal.batch) {
                Some(head) if head.is_control() => {
                    Err(BatchError::ReservedAttributes(head.attributes).into())
                }
                _ => Ok(proposal.batch.to_vec()),
            }
        }
        EntryPayload::Blank => control(BLANK_KEY, None),
        EntryPayload::Membership(membership) => {
            let value = serde_json::to_vec(membership).map_err(EntryError::EncodeMembership)?;
            control(MEMBERSHIP_KEY, Some(&value))
        }
    }
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
        let control = Proposal::new(blank);
        assert!(matches!(
            to_batch(&EntryPayload::Normal(control), 5),
            Err(EntryError::Batch(BatchError::ReservedAttributes(_)))
        ));
    }
}
