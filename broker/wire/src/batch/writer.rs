//! Encoding batches: owned [`Record`]s through a [`BatchBuilder`], or record by record
//! through a [`BatchWriter`].

use crate::codec::DecodeError;
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX,
    HEADER_VALUE_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};

use super::error::BatchError;
use super::header::{
    restamp_producer, ProducerStamp, ATTRIBUTE_CONTROL, BATCH_HEADER_BYTES, BATCH_MAGIC,
    LOG_OVERHEAD_BYTES,
};

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
        writer.finish((self.producer_id >= 0).then_some(ProducerStamp {
            id: self.producer_id,
            epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        }))
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

    /// The finished batch stamped with `producer` (none: the -1s of a non-idempotent batch;
    /// base offset 0, append time -1, CRC filled in); fails when empty or past the batch size
    /// limit.
    pub fn finish(self, producer: Option<ProducerStamp>) -> Result<Vec<u8>, BatchError> {
        self.finish_with(producer, 0)
    }

    /// The finished batch as a control batch ([`ATTRIBUTE_CONTROL`]), which only the broker
    /// writes: no producer, otherwise as [`BatchWriter::finish`].
    pub fn finish_control(self) -> Result<Vec<u8>, BatchError> {
        self.finish_with(None, ATTRIBUTE_CONTROL)
    }

    /// A control batch carrying `producer`'s stamp: a replicated partition's record that
    /// a producer's sequence moved on without storing a record (all its records were
    /// duplicates of stored ones), so every replica's producer state moves with it.
    pub fn finish_control_for(self, producer: ProducerStamp) -> Result<Vec<u8>, BatchError> {
        self.finish_with(Some(producer), ATTRIBUTE_CONTROL)
    }

    fn finish_with(
        mut self,
        producer: Option<ProducerStamp>,
        attributes: u8,
    ) -> Result<Vec<u8>, BatchError> {
        let (producer_id, producer_epoch, base_sequence) =
            producer.map_or((-1, -1, -1), |p| (p.id, p.epoch, p.base_sequence));
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
        header[25] = attributes;
        header[26..30].copy_from_slice(&self.count.to_be_bytes());
        header[30..38].copy_from_slice(&self.first_timestamp.to_be_bytes());
        header[38..46].copy_from_slice(&self.max_timestamp.to_be_bytes());
        restamp_producer(&mut self.out, producer_id, producer_epoch, base_sequence);
        Ok(self.out)
    }
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
