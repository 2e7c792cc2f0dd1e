//! Record batches: encoded once by the producer, stamped by the broker, stored and served as
//! the same bytes.
//!
//! ```text
//! offset size field
//!  0     8    base_offset         i64  stamped by the broker (outside the CRC)
//!  8     4    batch_length        u32  bytes after this field
//! 12     8    append_time_ms      i64  stamped by the broker (outside the CRC)
//! 20     4    crc32c              u32  CRC32C of bytes 24..end
//! 24     1    magic               = 1
//! 25     1    attributes          reserved, 0
//! 26     4    record_count        u32
//! 30     8    first_timestamp_ms  i64  producer clock
//! 38     8    max_timestamp_ms    i64
//! 46     8    producer_id         i64  -1 when not idempotent
//! 54     2    producer_epoch      i16
//! 56     4    base_sequence       i32  -1 when not idempotent
//! 60     ..   records
//!
//! record:
//!   u32 record_length (bytes after this field)
//!   i64 timestamp_delta_ms (from first_timestamp_ms)
//!   i32 key_length  (-1 = no key)      key bytes
//!   i32 value_length (-1 = tombstone)  value bytes
//!   u16 header_count, then per header: u16 key_length, UTF-8 key, u32 value_length, value
//! ```

use crate::codec::{DecodeError, Reader};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX,
    HEADER_VALUE_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};

/// Bytes before `batch_length` ends: base offset + length. A log reads this much to learn a
/// batch's size.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 60;
/// Where the CRC-covered part starts.
const CRC_START: usize = 24;
/// The batch format version this code writes and reads.
pub const BATCH_MAGIC: u8 = 1;

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported batch format {0}")]
    UnsupportedMagic(u8),
    #[error("batch says {declared} records but holds {actual}")]
    RecordCountMismatch { declared: u32, actual: u32 },
    #[error("batch holds no records")]
    Empty,
}

/// A header on a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

/// A record to put in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// Builds the bytes of one batch.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<Record>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
        }
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn idempotent(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn push(&mut self, record: Record) -> &mut Self {
        self.records.push(record);
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The encoded batch (base offset 0, append time -1, CRC filled in). Fails when a limit
    /// is exceeded, so a producer learns it before sending.
    pub fn encode(&self) -> Result<Vec<u8>, BatchError> {
        let mut writer = BatchWriter::with_capacity(self.records.len() * 64);
        for record in &self.records {
            writer.push(
                record.timestamp_ms,
                record.key.as_deref(),
                record.value.as_deref(),
                record
                    .headers
                    .iter()
                    .map(|header| (header.key.as_str(), header.value.as_slice())),
            )?;
        }
        writer.finish(self.producer_id, self.producer_epoch, self.base_sequence)
    }
}

/// A batch encoded record by record as records arrive (a producer's accumulator): each
/// record is written in its final form when pushed, the header when the batch is finished.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    out: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer with room for `record_bytes` of records.
    pub fn with_capacity(record_bytes: usize) -> Self {
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + record_bytes);
        out.resize(BATCH_HEADER_BYTES, 0);
        Self {
            out,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size of the batch as finished now.
    pub fn encoded_len(&self) -> usize {
        self.out.len()
    }

    /// Appends a record. When a limit would be exceeded it fails and the batch is unchanged
    /// (so one bad record never spoils the records already in it).
    pub fn push<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'h str, &'h [u8])>,
    ) -> Result<(), BatchError> {
        if self.count >= BATCH_RECORDS_MAX {
            return Err(DecodeError::TooLarge {
                what: "batch records",
                size: self.count as usize + 1,
                limit: BATCH_RECORDS_MAX as usize,
            }
            .into());
        }
        let first_timestamp = if self.count == 0 {
            timestamp_ms
        } else {
            self.first_timestamp
        };
        let start = self.out.len();
        if let Err(error) = encode_record(
            &mut self.out,
            timestamp_ms.wrapping_sub(first_timestamp),
            key,
            value,
            headers,
        ) {
            self.out.truncate(start);
            return Err(error);
        }
        self.first_timestamp = first_timestamp;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.count += 1;
        Ok(())
    }

    /// The finished batch with these producer fields (base offset 0, append time -1, CRC
    /// filled in); fails when empty or past the batch size limit.
    pub fn finish(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<Vec<u8>, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        if self.out.len() > BATCH_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                what: "batch",
                size: self.out.len(),
                limit: BATCH_BYTES_MAX,
            }
            .into());
        }
        let length = (self.out.len() - LOG_OVERHEAD_BYTES) as u32;
        let header = &mut self.out[..BATCH_HEADER_BYTES];
        header[0..8].copy_from_slice(&0i64.to_be_bytes());
        header[8..12].copy_from_slice(&length.to_be_bytes());
        header[12..20].copy_from_slice(&(-1i64).to_be_bytes());
        header[24] = BATCH_MAGIC;
        header[25] = 0;
        header[26..30].copy_from_slice(&self.count.to_be_bytes());
        header[30..38].copy_from_slice(&self.first_timestamp.to_be_bytes());
        header[38..46].copy_from_slice(&self.max_timestamp.to_be_bytes());
        restamp_producer(&mut self.out, producer_id, producer_epoch, base_sequence);
        Ok(self.out)
    }
}

/// Rewrites the producer fields of an encoded batch and its CRC: a batch re-sequenced under
/// another producer id keeps its record bytes.
pub fn restamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    batch[46..54].copy_from_slice(&producer_id.to_be_bytes());
    batch[54..56].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[56..60].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[20..24].copy_from_slice(&crc.to_be_bytes());
}

fn encode_record<'h>(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl ExactSizeIterator<Item = (&'h str, &'h [u8])>,
) -> Result<(), BatchError> {
    let too_large =
        |what, size, limit| BatchError::from(DecodeError::TooLarge { what, size, limit });
    if let Some(key) = key {
        if key.len() > KEY_BYTES_MAX {
            return Err(too_large("key", key.len(), KEY_BYTES_MAX));
        }
    }
    if let Some(value) = value {
        if value.len() > VALUE_BYTES_MAX {
            return Err(too_large("value", value.len(), VALUE_BYTES_MAX));
        }
    }
    if headers.len() > HEADERS_PER_RECORD_MAX as usize {
        return Err(too_large(
            "headers",
            headers.len(),
            HEADERS_PER_RECORD_MAX as usize,
        ));
    }
    let start = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&timestamp_delta.to_be_bytes());
    put_optional(out, key);
    put_optional(out, value);
    out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (key, value) in headers {
        if key.len() > HEADER_KEY_BYTES_MAX {
            return Err(too_large("header key", key.len(), HEADER_KEY_BYTES_MAX));
        }
        if value.len() > HEADER_VALUE_BYTES_MAX {
            return Err(too_large(
                "header value",
                value.len(),
                HEADER_VALUE_BYTES_MAX,
            ));
        }
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// The fixed header of a stored batch, read without checking the CRC: what walking a log,
/// indexing it or counting records needs. The one place that knows the header's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes of the whole batch, from its length field.
    pub size: usize,
    pub append_time_ms: i64,
    pub crc: u32,
    pub magic: u8,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

fn be<const N: usize>(header: &[u8], at: usize) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&header[at..at + N]);
    array
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`; `None` if fewer than its 60 bytes.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let h = bytes.get(..BATCH_HEADER_BYTES)?;
        Some(Self {
            base_offset: i64::from_be_bytes(be(h, 0)),
            size: LOG_OVERHEAD_BYTES + u32::from_be_bytes(be(h, 8)) as usize,
            append_time_ms: i64::from_be_bytes(be(h, 12)),
            crc: u32::from_be_bytes(be(h, 20)),
            magic: h[24],
            record_count: u32::from_be_bytes(be(h, 26)),
            first_timestamp_ms: i64::from_be_bytes(be(h, 30)),
            max_timestamp_ms: i64::from_be_bytes(be(h, 38)),
            producer_id: i64::from_be_bytes(be(h, 46)),
            producer_epoch: i16::from_be_bytes(be(h, 54)),
            base_sequence: i32::from_be_bytes(be(h, 56)),
        })
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.record_count)
    }
}

/// A validated view over one encoded batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

/// The size of the batch starting at `bytes`, from its first 12 bytes; `None` if fewer.
pub fn batch_size(bytes: &[u8]) -> Option<usize> {
    let length: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    Some(LOG_OVERHEAD_BYTES + u32::from_be_bytes(length) as usize)
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

/// Stamps the broker-assigned base offset and append time into an encoded batch. Both fields
/// are outside the CRC, so the producer's checksum stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: i64, append_time_ms: i64) {
    if bytes.len() >= BATCH_HEADER_BYTES {
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes[12..20].copy_from_slice(&append_time_ms.to_be_bytes());
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

/// Records in a buffer of consecutive stored batches, read from their headers only (no CRC
/// check; for metrics on the serving path). A torn tail is not counted.
pub fn count_records(bytes: &[u8]) -> u64 {
    batch_headers(bytes)
        .map(|header| u64::from(header.record_count))
        .sum()
}

/// The offset after the last whole batch in `bytes` (headers only, CRCs unchecked): where
/// the next fetch starts once these records are consumed.
pub fn next_offset_after(bytes: &[u8]) -> Option<i64> {
    batch_headers(bytes)
        .last()
        .map(|header| header.next_offset())
}

/// The headers of the whole batches at the start of `bytes`, without checking CRCs.
fn batch_headers(bytes: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = BatchHeader::read(rest)?;
        if header.size < BATCH_HEADER_BYTES || header.size > rest.len() {
            return None;
        }
        rest = &rest[header.size..];
        Some(header)
    })
}

/// Walks a buffer of consecutive batches (a log segment or a fetch response), yielding each
/// valid batch; stops with an error at the first torn or corrupt one.
pub fn batches(bytes: &[u8]) -> impl Iterator<Item = Result<BatchView<'_>, BatchError>> {
    let mut rest = bytes;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        match BatchView::parse(rest) {
            Ok(view) => {
                rest = &rest[view.size()..];
                Some(Ok(view))
            }
            Err(error) => {
                failed = true;
                Some(Err(error))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(i: u8) -> Record {
        Record {
            timestamp_ms: 1_700_000_000_000 + i64::from(i),
            key: Some(vec![i; 3]),
            value: if i.is_multiple_of(5) {
                None
            } else {
                Some(vec![i; 10])
            },
            headers: vec![Header {
                key: "idempotency-key".into(),
                value: vec![i],
            }],
        }
    }

    #[test]
    fn encode_parse_and_stamp() {
        let mut builder = BatchBuilder::new().idempotent(7, 1, 42);
        for i in 0..10 {
            builder.push(record(i));
        }
        let mut bytes = builder.encode().expect("encodes");
        stamp(&mut bytes, 1000, 123);
        assert_eq!(count_records(&[bytes.clone(), bytes.clone()].concat()), 20);
        assert_eq!(count_records(&bytes[..bytes.len() - 1]), 0);
        let view = BatchView::parse(&bytes).expect("valid after stamping");
        view.validate_records().expect("records valid");
        assert_eq!(
            (view.base_offset(), view.last_offset(), view.next_offset()),
            (1000, 1009, 1010)
        );
        assert_eq!(
            (
                view.producer_id(),
                view.producer_epoch(),
                view.base_sequence()
            ),
            (7, 1, 42)
        );
        assert_eq!(view.append_time_ms(), 123);
        let decoded: Vec<Record> = view
            .records()
            .map(|r| r.expect("record").to_owned_record())
            .collect();
        assert_eq!(decoded, (0..10).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_crc() {
        let mut builder = BatchBuilder::new();
        builder.push(record(1));
        let mut bytes = builder.encode().expect("encodes");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            BatchView::parse(&bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn limits_are_enforced_when_building() {
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            key: Some(vec![0; KEY_BYTES_MAX + 1]),
            ..Record::default()
        });
        assert!(matches!(
            builder.encode(),
            Err(BatchError::Decode(DecodeError::TooLarge {
                what: "key",
                ..
            }))
        ));
        assert!(matches!(
            BatchBuilder::new().encode(),
            Err(BatchError::Empty)
        ));
    }

    #[test]
    fn the_offset_after_a_fetch_comes_from_its_last_whole_batch() {
        let mut bytes = Vec::new();
        for (base, count) in [(10i64, 2usize), (12, 3)] {
            let mut builder = BatchBuilder::new();
            for _ in 0..count {
                builder.push(Record::default());
            }
            let mut batch = builder.encode().expect("encodes");
            stamp(&mut batch, base, 0);
            bytes.extend_from_slice(&batch);
        }
        assert_eq!(next_offset_after(&bytes), Some(15));
        assert_eq!(count_records(&bytes), 5);
        // A torn last batch does not count.
        assert_eq!(next_offset_after(&bytes[..bytes.len() - 1]), Some(12));
        assert_eq!(next_offset_after(&[]), None);
    }

    #[test]
    fn a_refused_push_leaves_the_batch_as_it_was() {
        let mut writer = BatchWriter::new();
        writer
            .push(5, Some(b"k"), Some(b"v"), std::iter::empty())
            .expect("first record");
        let before = writer.encoded_len();
        let huge = vec![0; VALUE_BYTES_MAX + 1];
        assert!(writer
            .push(6, None, Some(&huge), std::iter::empty())
            .is_err());
        let long_key = "k".repeat(HEADER_KEY_BYTES_MAX + 1);
        assert!(writer
            .push(6, None, None, [(long_key.as_str(), &b""[..])].into_iter())
            .is_err());
        assert_eq!((writer.len(), writer.encoded_len()), (1, before));
        let bytes = writer.finish(1, 0, 0).expect("finishes");
        let view = BatchView::parse(&bytes).expect("parses");
        view.validate_records().expect("valid");
        assert_eq!(view.record_count(), 1);
        assert!(matches!(
            BatchWriter::new().finish(1, 0, 0),
            Err(BatchError::Empty)
        ));
    }

    fn arbitrary_record() -> impl Strategy<Value = Record> {
        (
            any::<i32>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
            proptest::collection::vec(
                ("[a-z-]{0,12}", proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
        )
            .prop_map(|(t, key, value, headers)| Record {
                timestamp_ms: 1_700_000_000_000 + i64::from(t),
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in proptest::collection::vec(arbitrary_record(), 1..20), base in 0i64..1_000_000) {
            let mut builder = BatchBuilder::new();
            for record in &records {
                builder.push(record.clone());
            }
            let mut bytes = builder.encode().expect("encodes");
            stamp(&mut bytes, base, 5);
            let view = BatchView::parse(&bytes).expect("parses");
            view.validate_records().expect("valid");
            let decoded: Vec<Record> = view.records().map(|r| r.expect("record").to_owned_record()).collect();
            prop_assert_eq!(decoded, records);
        }

        #[test]
        fn a_restamped_batch_is_the_batch_encoded_with_those_fields(records in proptest::collection::vec(arbitrary_record(), 1..10), producer in any::<i64>(), epoch in any::<i16>(), sequence in any::<i32>()) {
            let mut builder = BatchBuilder::new();
            for record in &records {
                builder.push(record.clone());
            }
            let mut restamped = builder.encode().expect("encodes");
            restamp_producer(&mut restamped, producer, epoch, sequence);
            let direct = builder.clone().idempotent(producer, epoch, sequence).encode().expect("encodes");
            prop_assert_eq!(&restamped, &direct);
            let view = BatchView::parse(&restamped).expect("CRC still right");
            prop_assert_eq!((view.producer_id(), view.producer_epoch(), view.base_sequence()), (producer, epoch, sequence));
        }

        #[test]
        fn random_and_truncated_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
            if let Ok(view) = BatchView::parse(&bytes) {
                let _ = view.validate_records();
            }
            let _ = batches(&bytes).count();
            let mut builder = BatchBuilder::new();
            builder.push(Record { value: Some(bytes.clone()), ..Record::default() });
            let encoded = builder.encode().expect("encodes");
            let cut = cut.min(encoded.len());
            if let Ok(view) = BatchView::parse(&encoded[..cut]) {
                prop_assert_eq!(cut, encoded.len());
                view.validate_records().expect("complete batch is valid");
            }
        }

        /// Random record sections sealed with a correct length and CRC: whatever the bytes,
        /// validation returns (never panics), and it only accepts a section that really
        /// holds the declared number of records.
        #[test]
        fn garbage_record_sections_never_panic(garbage in proptest::collection::vec(any::<u8>(), 0..100), count in 1u32..5) {
            let mut builder = BatchBuilder::new();
            builder.push(Record::default());
            let mut bytes = builder.encode().expect("encodes");
            bytes.truncate(BATCH_HEADER_BYTES);
            bytes.extend_from_slice(&garbage);
            bytes[26..30].copy_from_slice(&count.to_be_bytes());
            reseal(&mut bytes);
            let view = BatchView::parse(&bytes).expect("length and CRC are right, so the header parses");
            if view.validate_records().is_ok() {
                prop_assert_eq!(view.records().filter(Result::is_ok).count(), count as usize);
            }
        }
    }

    // Forged record sections. `forgeable_batch` is two records; the forgeries below write at
    // fixed positions of the first one (record 0), then `reseal` recomputes the batch length
    // and the CRC, so header and CRC checks pass and only record validation can refuse.
    /// Record 0's u32 record length (the record starts right after the batch header).
    const R0: usize = BATCH_HEADER_BYTES;
    /// Record 0's i32 key length (after the length and the i64 timestamp delta); key "key".
    const R0_KEY_LEN: usize = R0 + 4 + 8;
    /// Record 0's i32 value length; value "value".
    const R0_VALUE_LEN: usize = R0_KEY_LEN + 4 + 3;
    /// Record 0's u16 header count; one header "h" = "v".
    const R0_HEADER_COUNT: usize = R0_VALUE_LEN + 4 + 5;
    /// Record 0's first header: u16 key length, then the key byte "h".
    const R0_HEADER_KEY_LEN: usize = R0_HEADER_COUNT + 2;
    /// Record 0's first header value's u32 length, then the value byte "v".
    const R0_HEADER_VALUE_LEN: usize = R0_HEADER_KEY_LEN + 2 + 1;
    /// Where record 1 starts.
    const R1: usize = R0_HEADER_VALUE_LEN + 4 + 1;
    /// Record 0's bytes after its length field.
    const R0_BODY_LEN: u32 = (R1 - R0 - 4) as u32;

    fn forgeable_batch() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (i, key) in [&b"key"[..], &b"k2"[..]].into_iter().enumerate() {
            builder.push(Record {
                timestamp_ms: 1_000 + i as i64,
                key: Some(key.to_vec()),
                value: Some(b"value".to_vec()),
                headers: vec![Header {
                    key: "h".into(),
                    value: b"v".to_vec(),
                }],
            });
        }
        let bytes = builder.encode().expect("encodes");
        // Pin the layout the forgeries assume, so a forgery never lands somewhere else.
        assert_eq!(&bytes[R0..R0 + 4], &R0_BODY_LEN.to_be_bytes());
        assert_eq!(R0_BODY_LEN, 34);
        assert_eq!(&bytes[R0_KEY_LEN..R0_KEY_LEN + 7], b"\0\0\0\x03key");
        assert_eq!(&bytes[R0_VALUE_LEN..R0_VALUE_LEN + 9], b"\0\0\0\x05value");
        assert_eq!(
            &bytes[R0_HEADER_COUNT..R0_HEADER_COUNT + 2],
            &1u16.to_be_bytes()
        );
        assert_eq!(&bytes[R0_HEADER_KEY_LEN..R0_HEADER_KEY_LEN + 3], b"\0\x01h");
        assert_eq!(
            &bytes[R0_HEADER_VALUE_LEN..R0_HEADER_VALUE_LEN + 5],
            b"\0\0\0\x01v"
        );
        assert_eq!(&bytes[R1..R1 + 4], &33u32.to_be_bytes());
        assert_eq!(bytes.len(), R1 + 4 + 33);
        bytes
    }

    /// Writes `field` at `at`.
    fn put(bytes: &mut [u8], at: usize, field: &[u8]) {
        bytes[at..at + field.len()].copy_from_slice(field);
    }

    /// Recomputes the batch length and the CRC of a forged batch.
    fn reseal(bytes: &mut [u8]) {
        let length = (bytes.len() - LOG_OVERHEAD_BYTES) as u32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[20..24].copy_from_slice(&crc.to_be_bytes());
    }

    /// The error validating `forgeable_batch()` forged by `forge` (and resealed) gives. The
    /// forged batch must still parse (header and CRC consistent), must be refused by
    /// `validate_records`, and walking its records must stop at that same error.
    fn refusal(forge: impl FnOnce(&mut Vec<u8>)) -> BatchError {
        let mut bytes = forgeable_batch();
        forge(&mut bytes);
        reseal(&mut bytes);
        let view = BatchView::parse(&bytes)
            .expect("header and CRC are consistent, so only the records are judged");
        let error = view
            .validate_records()
            .expect_err("a forged record section is refused");
        let walked: Vec<Result<RecordView<'_>, BatchError>> = view.records().collect();
        let walk_errors: Vec<&BatchError> =
            walked.iter().filter_map(|r| r.as_ref().err()).collect();
        if matches!(error, BatchError::RecordCountMismatch { .. }) {
            assert!(
                walk_errors.is_empty(),
                "every record decodes: {walk_errors:?}"
            );
        } else {
            assert_eq!(
                walk_errors,
                vec![&error],
                "the walk meets the same error once"
            );
            assert!(
                walked.last().is_some_and(Result::is_err),
                "the walk ends at the error"
            );
        }
        error
    }

    /// Each lie in a CRC-valid record section is refused with its own error (and never a
    /// panic or an out-of-bounds read). Fails if, e.g., `record.finish("record")?` is
    /// dropped from `decode_record` (bytes left inside a record would be accepted), the
    /// `len > limit` check is dropped from `optional`, or the count comparison is dropped
    /// from `validate_records`.
    #[test]
    fn forged_record_sections_are_refused() {
        let pristine = forgeable_batch();
        BatchView::parse(&pristine)
            .expect("parses")
            .validate_records()
            .expect("the unforged batch is valid, so each refusal is the forgery's doing");
        let truncated = |what, needed| BatchError::Decode(DecodeError::Truncated { what, needed });
        let too_large =
            |what, size, limit| BatchError::Decode(DecodeError::TooLarge { what, size, limit });

        // A record length pointing 10 bytes past the end of the batch.
        assert_eq!(
            refusal(|b| put(b, R0, &(R0_BODY_LEN + 4 + 33 + 10).to_be_bytes())),
            truncated("record", 10)
        );
        // A record length of u32::MAX (-1 read unsigned): refused, nothing allocated.
        assert_eq!(
            refusal(|b| put(b, R0, &u32::MAX.to_be_bytes())),
            truncated(
                "record",
                u32::MAX as usize - (R0_BODY_LEN as usize + 4 + 33)
            )
        );
        // A record length one short: the header value's byte falls outside the record.
        assert_eq!(
            refusal(|b| put(b, R0, &(R0_BODY_LEN - 1).to_be_bytes())),
            truncated("header value", 1)
        );
        // A record length 3 longer, with 3 bytes added inside the last record: leftovers
        // inside a record.
        assert_eq!(
            refusal(|b| {
                put(b, R1, &36u32.to_be_bytes());
                b.extend_from_slice(&[1, 2, 3]);
            }),
            BatchError::Decode(DecodeError::Trailing {
                what: "record",
                trailing: 3
            })
        );
        // Garbage after the last record (too short to be a record length).
        assert_eq!(
            refusal(|b| b.extend_from_slice(&[0xde, 0xad, 0xbe])),
            truncated("record length", 1)
        );
        // Garbage after the last record that reads as an empty record.
        assert_eq!(
            refusal(|b| b.extend_from_slice(&[0, 0, 0, 0])),
            truncated("timestamp delta", 8)
        );
        // A record count larger, and smaller, than the records present.
        assert_eq!(
            refusal(|b| put(b, 26, &3u32.to_be_bytes())),
            BatchError::RecordCountMismatch {
                declared: 3,
                actual: 2
            }
        );
        assert_eq!(
            refusal(|b| put(b, 26, &1u32.to_be_bytes())),
            BatchError::RecordCountMismatch {
                declared: 1,
                actual: 2
            }
        );
        // A key length past the limit, and one within the batch but beyond its record
        // (record 0 has 22 bytes left after the key length; record 1 follows it).
        assert_eq!(
            refusal(|b| put(b, R0_KEY_LEN, &(KEY_BYTES_MAX as i32 + 1).to_be_bytes())),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX)
        );
        assert_eq!(
            refusal(|b| put(b, R0_KEY_LEN, &40i32.to_be_bytes())),
            truncated("key", 18)
        );
        // A negative key length other than -1 reads as no key (as Kafka reads it), so the
        // key's bytes are read as the value length: refused, whatever the detail.
        assert!(matches!(
            refusal(|b| put(b, R0_KEY_LEN, &(-2i32).to_be_bytes())),
            BatchError::Decode(_)
        ));
        // A value length past the limit, and one beyond its record (15 bytes left).
        assert_eq!(
            refusal(|b| put(b, R0_VALUE_LEN, &(VALUE_BYTES_MAX as i32 + 1).to_be_bytes())),
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX)
        );
        assert_eq!(
            refusal(|b| put(b, R0_VALUE_LEN, &30i32.to_be_bytes())),
            truncated("value", 15)
        );
        // A header count past the limit, one more than the headers present, and one fewer
        // (the unread header is left over in the record).
        assert_eq!(
            refusal(|b| put(
                b,
                R0_HEADER_COUNT,
                &(HEADERS_PER_RECORD_MAX + 1).to_be_bytes()
            )),
            too_large(
                "headers",
                usize::from(HEADERS_PER_RECORD_MAX) + 1,
                usize::from(HEADERS_PER_RECORD_MAX)
            )
        );
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_COUNT, &2u16.to_be_bytes())),
            truncated("header key length", 2)
        );
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_COUNT, &0u16.to_be_bytes())),
            BatchError::Decode(DecodeError::Trailing {
                what: "record",
                trailing: 8
            })
        );
        // A header key length past the limit, one beyond the record (6 bytes left), and a
        // key that is not UTF-8.
        assert_eq!(
            refusal(|b| put(
                b,
                R0_HEADER_KEY_LEN,
                &(HEADER_KEY_BYTES_MAX as u16 + 1).to_be_bytes()
            )),
            too_large("header key", HEADER_KEY_BYTES_MAX + 1, HEADER_KEY_BYTES_MAX)
        );
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_KEY_LEN, &20u16.to_be_bytes())),
            truncated("header key", 14)
        );
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_KEY_LEN + 2, &[0xff])),
            BatchError::Decode(DecodeError::InvalidUtf8 { what: "header key" })
        );
        // A header value length of u32::MAX, and one beyond the record (1 byte left).
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_VALUE_LEN, &u32::MAX.to_be_bytes())),
            too_large("header value", u32::MAX as usize, HEADER_VALUE_BYTES_MAX)
        );
        assert_eq!(
            refusal(|b| put(b, R0_HEADER_VALUE_LEN, &5u32.to_be_bytes())),
            truncated("header value", 4)
        );

        // Record counts the header itself refuses (checked when parsing, after the CRC).
        let sealed = |count: u32| {
            let mut bytes = forgeable_batch();
            put(&mut bytes, 26, &count.to_be_bytes());
            reseal(&mut bytes);
            BatchView::parse(&bytes).err()
        };
        assert_eq!(sealed(0), Some(BatchError::Empty));
        assert_eq!(
            sealed(BATCH_RECORDS_MAX + 1),
            Some(too_large(
                "batch records",
                BATCH_RECORDS_MAX as usize + 1,
                BATCH_RECORDS_MAX as usize
            ))
        );
    }
}
