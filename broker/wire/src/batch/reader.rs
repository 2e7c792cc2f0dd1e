//! Decoding one batch: the validated [`BatchView`] and the records it holds, decoded
//! lazily and borrowing the batch's bytes.

use crate::codec::{DecodeError, Reader};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX,
    HEADER_VALUE_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};

use super::error::BatchError;
use super::header::ProducerStamp;
use super::header::{BatchHeader, BATCH_HEADER_BYTES, BATCH_MAGIC, CRC_START};
use super::writer::{Header, Record};

/// A validated view over one encoded batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> BatchView<'a> {
    /// Parses the batch at the start of `bytes` (which may hold more after it), checking
    /// its length, format and CRC. Records are checked by [`BatchView::validate_records`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let Some(header) = BatchHeader::read(bytes) else {
            return Err(DecodeError::Truncated {
                what: "batch header",
                needed: BATCH_HEADER_BYTES - bytes.len(),
            }
            .into());
        };
        let size = header.size;
        if size > BATCH_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                what: "batch",
                size,
                limit: BATCH_BYTES_MAX,
            }
            .into());
        }
        if size < BATCH_HEADER_BYTES {
            return Err(DecodeError::Invalid {
                what: "batch length",
                detail: format!("{size} is shorter than the header"),
            }
            .into());
        }
        if bytes.len() < size {
            return Err(DecodeError::Truncated {
                what: "batch",
                needed: size - bytes.len(),
            }
            .into());
        }
        let view = Self {
            bytes: &bytes[..size],
            header,
        };
        if header.magic != BATCH_MAGIC {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        let stored = view.crc();
        let computed = crc32c::crc32c(&view.bytes[CRC_START..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        if view.record_count() == 0 {
            return Err(BatchError::Empty);
        }
        if view.record_count() > BATCH_RECORDS_MAX {
            return Err(DecodeError::TooLarge {
                what: "batch records",
                size: view.record_count() as usize,
                limit: BATCH_RECORDS_MAX as usize,
            }
            .into());
        }
        Ok(view)
    }

    /// Walks every record, checking lengths and limits and that the count matches.
    pub fn validate_records(&self) -> Result<(), BatchError> {
        let mut count = 0u32;
        for record in self.records() {
            record?;
            count += 1;
        }
        if count != self.record_count() {
            return Err(BatchError::RecordCountMismatch {
                declared: self.record_count(),
                actual: count,
            });
        }
        Ok(())
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The batch's fixed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    pub fn append_time_ms(&self) -> i64 {
        self.header.append_time_ms
    }

    pub fn crc(&self) -> u32 {
        self.header.crc
    }

    /// A control batch, which consumers skip (see [`ATTRIBUTE_CONTROL`](super::ATTRIBUTE_CONTROL)).
    pub fn is_control(&self) -> bool {
        self.header().is_control()
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Offset of the last record: base + count - 1.
    pub fn last_offset(&self) -> i64 {
        self.next_offset() - 1
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.header.next_offset()
    }

    pub fn first_timestamp_ms(&self) -> i64 {
        self.header.first_timestamp_ms
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.header.max_timestamp_ms
    }

    /// The batch's idempotent producer, `None` for a batch without one.
    pub fn producer(&self) -> Option<ProducerStamp> {
        self.header.producer()
    }

    pub fn producer_id(&self) -> i64 {
        self.header.producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.header.producer_epoch
    }

    pub fn base_sequence(&self) -> i32 {
        self.header.base_sequence
    }

    /// The records, each decoded lazily; a malformed one yields an error and ends the walk.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            reader: Reader::new(&self.bytes[BATCH_HEADER_BYTES..]),
            first_timestamp: self.first_timestamp_ms(),
            failed: false,
        }
    }
}

/// One record inside a batch, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// A record's headers, validated when the record was read and decoded as they are iterated
/// (no allocation per record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    raw: &'a [u8],
    count: u16,
}

impl<'a> Headers<'a> {
    /// Headers from a record's raw header bytes and count, as [`Headers::raw`] and
    /// [`Headers::len`] gave them for an already validated record (for owners of the bytes
    /// who keep them past the view's lifetime).
    pub fn from_validated(raw: &'a [u8], count: u16) -> Self {
        Self { raw, count }
    }

    /// The encoded header section.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// (key, value) pairs in record order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut reader = Reader::new(self.raw);
        (0..self.count).map_while(move |_| read_header(&mut reader).ok())
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

fn read_header<'a>(record: &mut Reader<'a>) -> Result<(&'a str, &'a [u8]), DecodeError> {
    let key_len = record.u16("header key length")? as usize;
    if key_len > HEADER_KEY_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            what: "header key",
            size: key_len,
            limit: HEADER_KEY_BYTES_MAX,
        });
    }
    let key = std::str::from_utf8(record.take(key_len, "header key")?)
        .map_err(|_| DecodeError::InvalidUtf8 { what: "header key" })?;
    let value = record.bytes("header value", HEADER_VALUE_BYTES_MAX)?;
    Ok((key, value))
}

impl RecordView<'_> {
    pub fn to_owned_record(&self) -> Record {
        Record {
            timestamp_ms: self.timestamp_ms,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.to_owned(),
                    value: v.to_vec(),
                })
                .collect(),
        }
    }

    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.get(key)
    }
}

pub struct RecordIter<'a> {
    reader: Reader<'a>,
    first_timestamp: i64,
    failed: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.remaining() == 0 {
            return None;
        }
        let result = decode_record(&mut self.reader, self.first_timestamp);
        self.failed = result.is_err();
        Some(result.map_err(BatchError::from))
    }
}

fn decode_record<'a>(
    reader: &mut Reader<'a>,
    first_timestamp: i64,
) -> Result<RecordView<'a>, DecodeError> {
    let length = reader.u32("record length")? as usize;
    let body = reader.take(length, "record")?;
    let mut record = Reader::new(body);
    let delta = record.i64("timestamp delta")?;
    let key = optional(&mut record, "key", KEY_BYTES_MAX)?;
    let value = optional(&mut record, "value", VALUE_BYTES_MAX)?;
    let count = record.u16("header count")?;
    if count > HEADERS_PER_RECORD_MAX {
        return Err(DecodeError::TooLarge {
            what: "headers",
            size: count as usize,
            limit: HEADERS_PER_RECORD_MAX as usize,
        });
    }
    // Validated here, decoded again when iterated: the headers are what remains of the body.
    let raw = record.rest();
    for _ in 0..count {
        read_header(&mut record)?;
    }
    record.finish("record")?;
    Ok(RecordView {
        timestamp_ms: first_timestamp.wrapping_add(delta),
        key,
        value,
        headers: Headers { raw, count },
    })
}

fn optional<'a>(
    reader: &mut Reader<'a>,
    what: &'static str,
    limit: usize,
) -> Result<Option<&'a [u8]>, DecodeError> {
    let len = reader.i32(what)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > limit {
        return Err(DecodeError::TooLarge {
            what,
            size: len,
            limit,
        });
    }
    reader.take(len, what).map(Some)
}
