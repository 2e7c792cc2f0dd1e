//! herald-wire: the bytes Herald's broker and its clients exchange, and nothing else.
//!
//! Pure codec: no sockets, no files, no async runtime. Depends on `bytes`, `thiserror`,
//! `crc32c` (a pure checksum) and `herald-auth` (the ACL types it carries, themselves pure). Every decoder takes untrusted bytes and answers a typed
//! [`DecodeError`] instead of panicking; every length is checked against a named limit in
//! [`limits`].
//!
//! # Frames
//!
//! Every request and response travels in one frame on a QUIC stream; a stream carries any
//! number of frames, answered in order, so a client keeps several requests in flight by
//! opening several streams.
//!
//! ```text
//! offset size field
//!  0     4    length       u32 BE: bytes after this field, <= FRAME_BYTES_MAX
//!  4     1    version      protocol version, currently 1
//!  5     1    kind         0 = request, 1 = response
//!  6     2    api          u16 BE: which request (see `Api`)
//!  8     8    request_id   u64 BE: echoed in the response
//! 16     ..   body         request body, or response envelope (error code, then body)
//! ```
//!
//! # Record batches
//!
//! A producer encodes a batch once; the broker stamps the base offset and append time (both
//! outside the CRC), stores the bytes as they are and serves them as they are. See
//! [`batch`] for the layout.
//!
//! # Schema-ID framing
//!
//! [`schema_id`] reads and writes Confluent's framing (magic byte 0, 4-byte big-endian ID,
//! Protobuf message-index path) so that payloads interoperate with Confluent serializers.

mod api;
pub mod batch;
mod codec;
pub mod dedup;
pub mod error;
pub mod frame;
pub mod groups;
pub mod headers;
pub mod limits;
pub mod lru;
pub mod messages;
pub mod schema_id;
pub mod security;

pub use api::Api;
pub use batch::{BatchBuilder, BatchError, BatchHeader, BatchView, Header, Record, RecordView};
pub use codec::{put_node_ids, put_string, seal, truncate_utf8, unseal, DecodeError, Reader};
pub use error::ErrorCode;
pub use frame::{Frame, FrameHeader, FrameKind, PROTOCOL_VERSION};
pub use messages::{Request, Response};
