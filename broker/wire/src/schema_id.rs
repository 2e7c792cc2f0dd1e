//! Confluent's schema-ID framing of record keys and values:
//! magic byte `0`, a 4-byte big-endian schema ID, then (Protobuf only) the message-index path
//! as zig-zag varints (count, then indexes; `[0]` is written as the single byte `0`), then
//! the payload.

use crate::codec::DecodeError;

/// The magic byte of Confluent's framing.
pub const MAGIC_BYTE: u8 = 0;
/// Deepest message-index path accepted (nesting of Protobuf messages).
pub const MESSAGE_INDEXES_MAX: usize = 64;

/// Why bytes do not carry registry framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("payload is {0} bytes, too short for the 5-byte schema-ID prefix")]
    TooShort(usize),
    #[error("payload starts with byte {0:#04x}, not the magic byte 0")]
    BadMagic(u8),
    #[error("schema ID {0} is not positive")]
    BadId(i32),
    #[error(transparent)]
    Indexes(#[from] DecodeError),
}

/// The schema ID a framed payload carries, checking magic byte and length only.
pub fn read_schema_id(payload: &[u8]) -> Result<u32, FramingError> {
    let prefix: [u8; 5] = payload
        .get(..5)
        .and_then(|p| p.try_into().ok())
        .ok_or(FramingError::TooShort(payload.len()))?;
    if prefix[0] != MAGIC_BYTE {
        return Err(FramingError::BadMagic(prefix[0]));
    }
    let id = i32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if id <= 0 {
        return Err(FramingError::BadId(id));
    }
    Ok(id as u32)
}

/// Writes the 5-byte prefix.
pub fn write_schema_id(out: &mut Vec<u8>, id: u32) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Writes a Protobuf message-index path (after the ID prefix).
pub fn write_message_indexes(out: &mut Vec<u8>, indexes: &[i32]) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_varint(out, indexes.len() as i64);
    for &index in indexes {
        write_varint(out, i64::from(index));
    }
}

/// Reads a Protobuf message-index path from `bytes` (the bytes after the ID prefix); returns
/// the path and how many bytes it took.
pub fn read_message_indexes(bytes: &[u8]) -> Result<(Vec<i32>, usize), DecodeError> {
    let mut position = 0;
    let count = read_varint(bytes, &mut position)?;
    if count == 0 {
        return Ok((vec![0], position));
    }
    if count < 0 || count as usize > MESSAGE_INDEXES_MAX {
        return Err(DecodeError::Invalid {
            what: "message index count",
            detail: count.to_string(),
        });
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let index = read_varint(bytes, &mut position)?;
        let index = i32::try_from(index).map_err(|_| DecodeError::Invalid {
            what: "message index",
            detail: index.to_string(),
        })?;
        indexes.push(index);
    }
    Ok((indexes, position))
}

fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn read_varint(bytes: &[u8], position: &mut usize) -> Result<i64, DecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*position).ok_or(DecodeError::Truncated {
            what: "varint",
            needed: 1,
        })?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(DecodeError::Invalid {
        what: "varint",
        detail: "longer than 10 bytes".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn confluent_examples() {
        let mut out = Vec::new();
        write_schema_id(&mut out, 258);
        assert_eq!(out, [0, 0, 0, 1, 2]);
        assert_eq!(read_schema_id(&out), Ok(258));
        let mut indexes = Vec::new();
        write_message_indexes(&mut indexes, &[0]);
        assert_eq!(indexes, [0]);
        indexes.clear();
        write_message_indexes(&mut indexes, &[1]);
        assert_eq!(
            indexes,
            [2, 2],
            "second top-level message: count 1, index 1, zig-zag"
        );
        assert_eq!(read_message_indexes(&[2, 2, 99]), Ok((vec![1], 2)));
        assert_eq!(
            read_schema_id(&[1, 0, 0, 0, 1]),
            Err(FramingError::BadMagic(1))
        );
        assert_eq!(read_schema_id(&[0, 0]), Err(FramingError::TooShort(2)));
        assert_eq!(
            read_schema_id(&[0, 0, 0, 0, 0]),
            Err(FramingError::BadId(0))
        );
    }

    proptest! {
        #[test]
        fn indexes_round_trip(indexes in proptest::collection::vec(0i32..10_000, 1..8)) {
            let mut out = Vec::new();
            write_message_indexes(&mut out, &indexes);
            let (read, used) = read_message_indexes(&out).expect("decodes");
            prop_assert_eq!(read, indexes);
            prop_assert_eq!(used, out.len());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = read_schema_id(&bytes);
            let _ = read_message_indexes(&bytes);
        }
    }
}
