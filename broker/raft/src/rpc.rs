//! The bytes of the Raft transport's messages (see [`crate::net`]). Pure: no I/O.
//!
//! ```text
//! request:  u8 kind | u16 group length | group (UTF-8) | body
//! response: u8 status (0 answered, 1 failed) | body (JSON answer, or the failure as text)
//! append body:   u32 length | JSON {vote, prev_log_id, leader_commit}
//!                | u32 entry count | per entry: u64 term | u64 index | u8 kind
//!                  (0 produced batch, 3 the same counted as stored unsynced, 1 blank,
//!                  2 membership) | u32 length | bytes
//!                  (the batch as it is; the membership as JSON; nothing for a blank)
//! snapshot body: u32 length | JSON {vote, meta} | u32 length | data
//! vote bodies:   JSON
//! forward body:  the proposed batch (answered with the `Applied` JSON)
//! request body:  a client request another node received, as the broker encodes it (group
//!                name empty; answered with the broker's encoded response)
//! ```

use bytes::Bytes;
use herald_wire::{DecodeError, Reader};
use openraft::raft::AppendEntriesRequest;
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::net::RAFT_MESSAGE_BYTES_MAX;
use crate::types::{Entry, LogId, Proposal, TypeConfig, Vote};

/// Longest group name (a topic name and a partition number).
pub const GROUP_NAME_BYTES_MAX: usize = 512;
/// Most entries one append carries.
pub const APPEND_ENTRIES_MAX: usize = 1_000_000;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Append = 1,
    Vote = 2,
    PreVote = 3,
    Snapshot = 4,
    /// A proposal for the group's leader, from a node that is not it (body: the batch).
    Forward = 5,
    /// The leader hands the lead to this node (body: openraft's transfer request).
    TransferLeader = 6,
    /// A client request for whatever this node serves that the sending node does not (a
    /// consumer group this node coordinates), handed on with its answer handed back; the
    /// bytes are the broker's own.
    Request = 7,
}

/// A message that does not decode, or a peer's failure.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("malformed Raft message: {0}")]
    Decode(#[from] DecodeError),
    #[error("malformed Raft message body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown Raft request kind {0}")]
    UnknownKind(u8),
    #[error("group name of {0} bytes is longer than {GROUP_NAME_BYTES_MAX}")]
    GroupName(usize),
    #[error("a Raft message of {0} bytes is larger than {RAFT_MESSAGE_BYTES_MAX}")]
    TooLarge(usize),
    #[error("{0}")]
    Remote(String),
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), RpcError> {
    let len = u32::try_from(bytes.len()).map_err(|_| RpcError::TooLarge(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn bounded(message: Vec<u8>) -> Result<Vec<u8>, RpcError> {
    if message.len() > RAFT_MESSAGE_BYTES_MAX {
        return Err(RpcError::TooLarge(message.len()));
    }
    Ok(message)
}

pub fn encode_request(kind: Kind, group: &str, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let mut out = request_head(kind, group, body.len())?;
    out.extend_from_slice(body);
    bounded(out)
}

/// A request's kind and group, with room for `body_len` more bytes.
fn request_head(kind: Kind, group: &str, body_len: usize) -> Result<Vec<u8>, RpcError> {
    if group.len() > GROUP_NAME_BYTES_MAX {
        return Err(RpcError::GroupName(group.len()));
    }
    let mut out = Vec::with_capacity(3 + group.len() + body_len);
    out.push(kind as u8);
    out.extend_from_slice(&(group.len() as u16).to_be_bytes());
    out.extend_from_slice(group.as_bytes());
    Ok(out)
}

pub fn decode_request(bytes: &[u8]) -> Result<(Kind, String, &[u8]), RpcError> {
    let mut reader = Reader::new(bytes);
    let kind = match reader.u8("request kind")? {
        1 => Kind::Append,
        2 => Kind::Vote,
        3 => Kind::PreVote,
        4 => Kind::Snapshot,
        5 => Kind::Forward,
        6 => Kind::TransferLeader,
        7 => Kind::Request,
        other => return Err(RpcError::UnknownKind(other)),
    };
    let group = reader.string("group", GROUP_NAME_BYTES_MAX)?;
    Ok((kind, group, reader.rest()))
}

pub fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    Ok(serde_json::to_vec(value)?)
}

pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// The response for what the local Raft answered.
pub fn encode_answer<T: Serialize, E: std::fmt::Display>(answer: Result<T, E>) -> Vec<u8> {
    match answer.map_err(|e| e.to_string()).and_then(|value| {
        serde_json::to_vec(&value).map_err(|e| format!("the answer does not encode: {e}"))
    }) {
        Ok(body) => {
            let mut out = Vec::with_capacity(1 + body.len());
            out.push(0);
            out.extend_from_slice(&body);
            out
        }
        Err(reason) => encode_failure(&reason),
    }
}

/// A response saying the request failed, and why.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + reason.len());
    out.push(1);
    out.extend_from_slice(reason.as_bytes());
    out
}

/// The answer's JSON body, or the failure the peer reported.
pub fn decode_response(bytes: &[u8]) -> Result<&[u8], RpcError> {
    match bytes.split_first() {
        Some((0, body)) => Ok(body),
        Some((1, reason)) => Err(RpcError::Remote(
            String::from_utf8_lossy(reason).into_owned(),
        )),
        Some((other, _)) => Err(RpcError::UnknownKind(*other)),
        None => Err(DecodeError::Truncated {
            what: "response",
            needed: 1,
        }
        .into()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AppendHead {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
}

/// An append request for group `group` as the chunks it is sent in (the request head and
/// the append body of the module documentation): each produced batch is a chunk of its own,
/// shared with the entry rather than copied, and the heads between them small buffers.
pub fn append_request_chunks(
    group: &str,
    request: &AppendEntriesRequest<TypeConfig>,
) -> Result<Vec<Bytes>, RpcError> {
    append_chunks(request_head(Kind::Append, group, 0)?, request)
}

/// An append body after `out` (a request's head, or nothing), as chunks.
fn append_chunks(
    mut out: Vec<u8>,
    request: &AppendEntriesRequest<TypeConfig>,
) -> Result<Vec<Bytes>, RpcError> {
    let head = serde_json::to_vec(&AppendHead {
        vote: request.vote,
        prev_log_id: request.prev_log_id,
        leader_commit: request.leader_commit,
    })?;
    let mut chunks = Vec::with_capacity(2 * request.entries.len() + 1);
    put_bytes(&mut out, &head)?;
    out.extend_from_slice(&(request.entries.len() as u32).to_be_bytes());
    let mut total = 0usize;
    for entry in &request.entries {
        out.extend_from_slice(&entry.log_id.leader_id.term.to_be_bytes());
        out.extend_from_slice(&entry.log_id.index.to_be_bytes());
        match &entry.payload {
            EntryPayload::Normal(proposal) => {
                out.push(if proposal.sync { 0 } else { 3 });
                let len = u32::try_from(proposal.batch.len())
                    .map_err(|_| RpcError::TooLarge(proposal.batch.len()))?;
                out.extend_from_slice(&len.to_be_bytes());
                total += out.len() + proposal.batch.len();
                chunks.push(Bytes::from(std::mem::take(&mut out)));
                chunks.push(proposal.batch.clone());
            }
            EntryPayload::Blank => {
                out.push(1);
                put_bytes(&mut out, &[])?;
            }
            EntryPayload::Membership(membership) => {
                out.push(2);
                put_bytes(&mut out, &serde_json::to_vec(membership)?)?;
            }
        }
        if total > RAFT_MESSAGE_BYTES_MAX {
            return Err(RpcError::TooLarge(total));
        }
    }
    total += out.len();
    if !out.is_empty() {
        chunks.push(Bytes::from(out));
    }
    if total > RAFT_MESSAGE_BYTES_MAX {
        return Err(RpcError::TooLarge(total));
    }
    Ok(chunks)
}

/// The body of an append request, in one buffer (what [`append_request_chunks`] sends after
/// the request's head, without copying the batches).
#[cfg(test)]
fn encode_append(request: &AppendEntriesRequest<TypeConfig>) -> Result<Vec<u8>, RpcError> {
    let chunks = append_chunks(Vec::new(), request)?;
    Ok(chunks.iter().flat_map(|c| c.iter().copied()).collect())
}

/// Reads an append request's body; each produced batch is a view into `body` (not copied).
pub fn decode_append(body: &Bytes) -> Result<AppendEntriesRequest<TypeConfig>, RpcError> {
    let mut reader = Reader::new(body);
    let head: AppendHead =
        serde_json::from_slice(reader.bytes("append head", RAFT_MESSAGE_BYTES_MAX)?)?;
    let count = reader.count("entries", APPEND_ENTRIES_MAX)?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let term = reader.u64("entry term")?;
        let index = reader.u64("entry index")?;
        let kind = reader.u8("entry kind")?;
        let bytes = reader.bytes("entry", RAFT_MESSAGE_BYTES_MAX)?;
        let payload = match kind {
            0 => EntryPayload::Normal(Proposal::new(body.slice_ref(bytes))),
            3 => EntryPayload::Normal(Proposal::new(body.slice_ref(bytes)).unsynced()),
            1 => EntryPayload::Blank,
            2 => EntryPayload::Membership(serde_json::from_slice(bytes)?),
            other => return Err(RpcError::UnknownKind(other)),
        };
        entries.push(Entry {
            log_id: LogId::new_term_index(term, index),
            payload,
        });
    }
    reader.finish("append")?;
    Ok(AppendEntriesRequest {
        vote: head.vote,
        prev_log_id: head.prev_log_id,
        entries,
        leader_commit: head.leader_commit,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotHead {
    vote: Vote,
    meta: SnapshotMetaOf<TypeConfig>,
}

pub fn encode_snapshot(
    vote: &Vote,
    snapshot: &SnapshotOf<TypeConfig, Vec<u8>>,
) -> Result<Vec<u8>, RpcError> {
    let head = serde_json::to_vec(&SnapshotHead {
        vote: *vote,
        meta: snapshot.meta.clone(),
    })?;
    let mut out = Vec::with_capacity(8 + head.len() + snapshot.snapshot.len());
    put_bytes(&mut out, &head)?;
    put_bytes(&mut out, &snapshot.snapshot)?;
    bounded(out)
}

pub fn decode_snapshot(body: &[u8]) -> Result<(Vote, SnapshotOf<TypeConfig, Vec<u8>>), RpcError> {
    let mut reader = Reader::new(body);
    let head: SnapshotHead =
        serde_json::from_slice(reader.bytes("snapshot head", RAFT_MESSAGE_BYTES_MAX)?)?;
    let data = reader
        .bytes("snapshot data", RAFT_MESSAGE_BYTES_MAX)?
        .to_vec();
    reader.finish("snapshot")?;
    Ok((
        head.vote,
        openraft::storage::Snapshot {
            meta: head.meta,
            snapshot: data,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Membership;

    fn request() -> AppendEntriesRequest<TypeConfig> {
        let membership =
            Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], []);
        AppendEntriesRequest {
            vote: Vote::new_committed(4, 2),
            prev_log_id: Some(LogId::new_term_index(3, 9)),
            entries: vec![
                Entry {
                    log_id: LogId::new_term_index(4, 10),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: LogId::new_term_index(4, 11),
                    payload: EntryPayload::Membership(membership),
                },
                Entry {
                    log_id: LogId::new_term_index(4, 12),
                    payload: EntryPayload::Normal(Proposal::new(vec![7; 300])),
                },
                Entry {
                    log_id: LogId::new_term_index(4, 13),
                    payload: EntryPayload::Normal(Proposal::new(vec![8; 20]).unsynced()),
                },
            ],
            leader_commit: Some(LogId::new_term_index(4, 10)),
        }
    }

    #[test]
    fn an_append_travels_whole() {
        let sent = request();
        let bytes = encode_request(
            Kind::Append,
            "orders/3",
            &encode_append(&sent).expect("encode"),
        )
        .expect("request");
        let chunks = append_request_chunks("orders/3", &sent).expect("chunks");
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, bytes, "the chunks are the request's bytes");
        let bytes = Bytes::from(bytes);
        let (kind, group, body) = decode_request(&bytes).expect("decode");
        assert_eq!((kind, group.as_str()), (Kind::Append, "orders/3"));
        let received = decode_append(&bytes.slice_ref(body)).expect("append");
        assert_eq!(received.vote, sent.vote);
        assert_eq!(received.prev_log_id, sent.prev_log_id);
        assert_eq!(received.leader_commit, sent.leader_commit);
        assert_eq!(received.entries, sent.entries);
    }

    /// Any cut or flipped kind is an error, never a panic or a different request.
    #[test]
    fn damaged_messages_are_refused() {
        let body = Bytes::from(encode_append(&request()).expect("encode"));
        for cut in 0..body.len() {
            assert!(decode_append(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(decode_append(&Bytes::from(trailing)).is_err());
        assert!(matches!(
            decode_request(&[9, 0, 0]),
            Err(RpcError::UnknownKind(9))
        ));
        assert!(encode_request(Kind::Vote, &"g".repeat(GROUP_NAME_BYTES_MAX + 1), &[]).is_err());
        assert!(
            matches!(decode_response(&encode_failure("no")), Err(RpcError::Remote(r)) if r == "no")
        );
        assert!(decode_response(&[]).is_err());
    }
}
