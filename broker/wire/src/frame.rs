//! Frames: the length-prefixed, versioned envelope of every request and response.

use bytes::Bytes;

use crate::codec::{DecodeError, Reader};
use crate::limits::FRAME_BYTES_MAX;

/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length prefix plus fixed header.
pub const FRAME_HEADER_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Request,
    Response,
}

/// The fixed part of a frame after its length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub api: u16,
    pub request_id: u64,
}

/// A decoded frame: header plus body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Vec<u8>,
}

impl Frame {
    /// Encodes header and `body` with the length prefix.
    pub fn encode(header: FrameHeader, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Self::encode_with(header, body.len(), |out| out.extend_from_slice(body))
    }

    /// Encodes header and the body `write_body` appends, in one buffer (the body is written
    /// in place, not copied); `body_bytes_hint` sizes the buffer.
    pub fn encode_with(
        header: FrameHeader,
        body_bytes_hint: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body_bytes_hint);
        out.resize(FRAME_HEADER_BYTES, 0);
        write_body(&mut out);
        let head = Self::encode_header(header, out.len() - FRAME_HEADER_BYTES)?;
        out[..FRAME_HEADER_BYTES].copy_from_slice(&head);
        Ok(out)
    }

    /// Encodes a frame whose body is what `write_head` appends followed by the payload it
    /// returns, if any: the payload (a produce's batch, a fetch's batches) is not copied into
    /// the frame but handed back, to be sent after it as its own chunk.
    pub fn encode_with_tail(
        header: FrameHeader,
        write_head: impl FnOnce(&mut Vec<u8>) -> Option<Bytes>,
    ) -> Result<(Vec<u8>, Option<Bytes>), DecodeError> {
        let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + 64);
        out.resize(FRAME_HEADER_BYTES, 0);
        let tail = write_head(&mut out);
        let body_len = out.len() - FRAME_HEADER_BYTES + tail.as_ref().map_or(0, Bytes::len);
        let head = Self::encode_header(header, body_len)?;
        out[..FRAME_HEADER_BYTES].copy_from_slice(&head);
        Ok((out, tail))
    }

    /// Rewrites the request ID of an encoded frame (an ID assigned after encoding).
    pub fn set_request_id(frame: &mut [u8], request_id: u64) {
        if let Some(field) = frame.get_mut(8..FRAME_HEADER_BYTES) {
            field.copy_from_slice(&request_id.to_be_bytes());
        }
    }

    /// The 16 bytes that precede a body of `body_len` bytes.
    pub fn encode_header(
        header: FrameHeader,
        body_len: usize,
    ) -> Result<[u8; FRAME_HEADER_BYTES], DecodeError> {
        let length = FRAME_HEADER_BYTES - 4 + body_len;
        if length > FRAME_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                what: "frame",
                size: length,
                limit: FRAME_BYTES_MAX,
            });
        }
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out[..4].copy_from_slice(&(length as u32).to_be_bytes());
        out[4] = PROTOCOL_VERSION;
        out[5] = match header.kind {
            FrameKind::Request => 0,
            FrameKind::Response => 1,
        };
        out[6..8].copy_from_slice(&header.api.to_be_bytes());
        out[8..16].copy_from_slice(&header.request_id.to_be_bytes());
        Ok(out)
    }

    /// Decodes the 16 bytes that start a frame: the body length that follows them (checked
    /// against the limit) and the header. A reader takes these first and then the body into
    /// a buffer of its own, which the body's decoding can keep without moving it.
    pub fn decode_head(
        head: [u8; FRAME_HEADER_BYTES],
    ) -> Result<(usize, FrameHeader), DecodeError> {
        let length = Self::announced_length([head[0], head[1], head[2], head[3]])?;
        let header = Self::decode_header(&head[4..])?;
        Ok((length - (FRAME_HEADER_BYTES - 4), header))
    }

    /// The length announced by a 4-byte prefix, checked against the limit.
    pub fn announced_length(prefix: [u8; 4]) -> Result<usize, DecodeError> {
        let length = u32::from_be_bytes(prefix) as usize;
        if length > FRAME_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                what: "frame",
                size: length,
                limit: FRAME_BYTES_MAX,
            });
        }
        if length < FRAME_HEADER_BYTES - 4 {
            return Err(DecodeError::Invalid {
                what: "frame length",
                detail: format!("{length} is shorter than the header"),
            });
        }
        Ok(length)
    }

    /// Decodes the bytes after the length prefix.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header = Self::decode_header(bytes)?;
        let body = bytes[FRAME_HEADER_BYTES - 4..].to_vec();
        Ok(Self { header, body })
    }

    /// The header at the start of `bytes` (after the length prefix).
    fn decode_header(bytes: &[u8]) -> Result<FrameHeader, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("frame version")?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = match reader.u8("frame kind")? {
            0 => FrameKind::Request,
            1 => FrameKind::Response,
            other => {
                return Err(DecodeError::Invalid {
                    what: "frame kind",
                    detail: other.to_string(),
                })
            }
        };
        let api = reader.u16("api")?;
        let request_id = reader.u64("request id")?;
        Ok(FrameHeader {
            kind,
            api,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip(api in any::<u16>(), request_id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..100), response in any::<bool>()) {
            let header = FrameHeader { kind: if response { FrameKind::Response } else { FrameKind::Request }, api, request_id };
            let bytes = Frame::encode(header, &body).expect("encodes");
            let length = Frame::announced_length([bytes[0], bytes[1], bytes[2], bytes[3]]).expect("length");
            prop_assert_eq!(length, bytes.len() - 4);
            let frame = Frame::decode(&bytes[4..]).expect("decodes");
            prop_assert_eq!(&frame, &Frame { header, body: body.clone() });
            let head: [u8; FRAME_HEADER_BYTES] = bytes[..FRAME_HEADER_BYTES].try_into().expect("head");
            prop_assert_eq!(Frame::decode_head(head).expect("decodes the head"), (body.len(), header));
            // Encoded with a late request ID: the same frame.
            let mut late = Frame::encode_with(FrameHeader { request_id: 0, ..header }, 0, |out| out.extend_from_slice(&body)).expect("encodes");
            Frame::set_request_id(&mut late, request_id);
            prop_assert_eq!(late, bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), prefix in any::<[u8; 4]>()) {
            let _ = Frame::decode(&bytes);
            if let Ok(head) = <[u8; FRAME_HEADER_BYTES]>::try_from(bytes.get(..FRAME_HEADER_BYTES).unwrap_or(&[])) {
                let _ = Frame::decode_head(head);
            }
            let _ = Frame::announced_length(prefix);
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        assert!(Frame::announced_length(((FRAME_BYTES_MAX + 1) as u32).to_be_bytes()).is_err());
        assert!(Frame::decode(&[9, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
