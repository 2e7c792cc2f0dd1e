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
//! 25     1    attributes          0; ATTRIBUTE_CONTROL (0x20) on broker-written control batches
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
//!
//! What lives where:
//! - `header`: the layout constants, [`BatchHeader`], [`batch_size`], [`stamp`] and
//!   [`restamp_producer`];
//! - `error`: [`BatchError`];
//! - `writer`: [`Record`] and [`Header`], [`BatchBuilder`] and [`BatchWriter`];
//! - `reader`: [`BatchView`], [`RecordView`], [`Headers`] and [`RecordIter`];
//! - `scan`: [`batches`], [`count_records`] and [`next_offset_after`] over consecutive
//!   batches;
//! - `tests`: the unit and property tests.

mod error;
mod header;
mod reader;
mod scan;
mod writer;

#[cfg(test)]
mod tests;

pub use error::BatchError;
pub use header::{
    batch_size, restamp_producer, stamp, BatchHeader, ProducerStamp, ATTRIBUTE_CONTROL,
    BATCH_HEADER_BYTES, BATCH_MAGIC, LOG_OVERHEAD_BYTES,
};
pub use reader::{BatchView, Headers, RecordIter, RecordView};
pub use scan::{batches, count_records, next_offset_after, prefix_before};
pub use writer::{BatchBuilder, BatchWriter, Header, Record};
