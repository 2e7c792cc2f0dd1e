//! The fixed batch header: its layout constants, reading it ([`BatchHeader`]), and the
//! fields written into an encoded batch in place (broker stamp, producer restamp).

/// Bytes before `batch_length` ends: base offset + length. A log reads this much to learn a
/// batch's size.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 60;
/// Where the CRC-covered part starts.
pub(super) const CRC_START: usize = 24;
/// The batch format version this code writes and reads.
pub const BATCH_MAGIC: u8 = 1;
/// The attributes bit of a *control batch*: one the broker writes itself (a replicated
/// partition's Raft entries that carry no records for consumers: a new leader's blank entry,
/// a membership change). Its records are not data: consumers skip the batch (its offsets
/// still count). Producers cannot send one (produced batches carry attributes 0).
pub const ATTRIBUTE_CONTROL: u8 = 0x20;

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
    /// Flags of the batch as a whole. Producers send 0; the bits are reserved for batches the
    /// broker writes itself (the cluster's control batches), so a produced batch with any bit
    /// set is refused (see [`BatchError::ReservedAttributes`](super::BatchError)).
    pub attributes: u8,
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

/// The idempotent producer a batch belongs to: its id, epoch and the sequence of its first
/// record. A batch without one (the header holds -1s) has no stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl BatchHeader {
    /// A control batch (see [`ATTRIBUTE_CONTROL`]): no data for consumers.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// The batch's producer, `None` when it was not written by an idempotent producer.
    pub fn producer(&self) -> Option<ProducerStamp> {
        (self.producer_id >= 0).then_some(ProducerStamp {
            id: self.producer_id,
            epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        })
    }

    /// Reads the header at the start of `bytes`; `None` if fewer than its 60 bytes.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let h = bytes.get(..BATCH_HEADER_BYTES)?;
        Some(Self {
            base_offset: i64::from_be_bytes(be(h, 0)),
            size: LOG_OVERHEAD_BYTES + u32::from_be_bytes(be(h, 8)) as usize,
            append_time_ms: i64::from_be_bytes(be(h, 12)),
            crc: u32::from_be_bytes(be(h, 20)),
            magic: h[24],
            attributes: h[25],
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

/// The size of the batch starting at `bytes`, from its first 12 bytes; `None` if fewer.
pub fn batch_size(bytes: &[u8]) -> Option<usize> {
    let length: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    Some(LOG_OVERHEAD_BYTES + u32::from_be_bytes(length) as usize)
}

/// Stamps the broker-assigned base offset and append time into an encoded batch. Both fields
/// are outside the CRC, so the producer's checksum stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: i64, append_time_ms: i64) {
    if bytes.len() >= BATCH_HEADER_BYTES {
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes[12..20].copy_from_slice(&append_time_ms.to_be_bytes());
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
