//! Requests and responses: one enum each, encoded into and decoded from frame bodies.
//!
//! A response body starts with a `u16` status: `0` for success, followed by the api's
//! success body; any other value is an [`ErrorCode`](crate::ErrorCode), followed by
//! `u32 retry_after_ms` and a `u16`-prefixed message.
//!
//! What lives where:
//! - `Api` (which request a frame carries) lives in the crate's `api` module, re-exported
//!   here;
//! - `topic`: [`TopicConfig`] and what it holds ([`SchemaValidation`],
//!   [`SubjectStrategy`]), [`Durability`], [`OffsetSpec`], [`TopicDescription`] and
//!   [`PartitionDescription`], with their encoding;
//! - `request`: [`Request`], its encoding and decoding;
//! - `response`: [`Response`] and [`ErrorBody`], their encoding and decoding;
//! - `tests`: the property tests and their strategies.
//!
//! Consumer-group bodies live in [`crate::groups`].

mod request;
mod response;
mod topic;

#[cfg(test)]
mod tests;

pub use crate::api::Api;
pub use request::Request;
pub use response::{
    ErrorBody, NodeAddress, PartitionPlacement, Response, TopicMetadata, METADATA_NODES_MAX,
    METADATA_REPLICAS_MAX,
};
pub use topic::{
    put_config, read_config, Durability, FollowerLag, OffsetSpec, PartitionDescription,
    Replication, SchemaValidation, SubjectStrategy, TopicConfig, TopicDescription, TopicId,
    DEDUP_WINDOW_DEFAULT,
};
