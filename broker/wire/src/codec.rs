//! Bounds-checked big-endian reading and writing shared by every decoder.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {what} needs {needed} more bytes")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown api {0}")]
    UnknownApi(u16),
    #[error("{trailing} unexpected bytes after {what}")]
    Trailing { what: &'static str, trailing: usize },
}

/// Bounds-checked big-endian reading of a byte string: every read says what it reads, for
/// the error if the bytes end first.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// The bytes not read yet (without consuming them).
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                what,
                needed: len - self.remaining(),
            });
        }
        let slice = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(slice)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A u32 element count, refused above `limit` (before anything is allocated for it).
    pub fn count(&mut self, what: &'static str, limit: usize) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        if count > limit {
            return Err(DecodeError::TooLarge {
                what,
                size: count,
                limit,
            });
        }
        Ok(count)
    }

    /// A u32 count (at most `limit`) and that many u64 node ids ([`put_node_ids`] writes them).
    pub fn node_ids(&mut self, what: &'static str, limit: usize) -> Result<Vec<u64>, DecodeError> {
        let count = self.count(what, limit)?;
        (0..count).map(|_| self.u64(what)).collect()
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A u16-length-prefixed UTF-8 string of at most `limit` bytes.
    pub fn string(&mut self, what: &'static str, limit: usize) -> Result<String, DecodeError> {
        let len = self.u16(what)? as usize;
        if len > limit {
            return Err(DecodeError::TooLarge {
                what,
                size: len,
                limit,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// A u32-length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > limit {
            return Err(DecodeError::TooLarge {
                what,
                size: len,
                limit,
            });
        }
        self.take(len, what)
    }

    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(DecodeError::Trailing { what, trailing }),
        }
    }
}

/// Size of a checksummed envelope's head: a 4-byte magic and the CRC-32C of the body.
const ENVELOPE_HEAD_BYTES: usize = 8;

/// A body in a checksummed envelope: `magic` (what the bytes are, and their version), the
/// CRC-32C of the body, the body. For the small state files kept beside a log (producer
/// snapshots, a replica's Raft meta), read back by [`unseal`].
pub fn seal(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEAD_BYTES + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A reader of the body [`seal`] wrapped with `magic`; an error if the magic differs or the
/// checksum does not match (damage anywhere).
pub fn unseal<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
    what: &'static str,
) -> Result<Reader<'a>, DecodeError> {
    let mut head = Reader::new(bytes);
    let found: [u8; 4] = head.array(what)?;
    let crc = head.u32(what)?;
    let body = head.rest();
    if &found != magic {
        return Err(DecodeError::Invalid {
            what,
            detail: format!("magic {found:?}, expected {magic:?}"),
        });
    }
    if crc != crc32c::crc32c(body) {
        return Err(DecodeError::Invalid {
            what,
            detail: "checksum mismatch".to_owned(),
        });
    }
    Ok(Reader::new(body))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Appends `text` as a u16-length-prefixed string ([`Reader::string`] reads it), cut at 65,535 bytes.
pub fn put_string(out: &mut Vec<u8>, text: &str) {
    let len = text.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..len]);
}

/// Appends node ids as a u32 count and u64s ([`Reader::node_ids`] reads them).
pub fn put_node_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}
