//! Walking a buffer of consecutive batches (a log segment or a fetch response): validated
//! batch by batch, or by their headers only.

use super::error::BatchError;
use super::header::{BatchHeader, BATCH_HEADER_BYTES};
use super::reader::BatchView;

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

/// How many bytes at the start of `bytes` are whole batches whose records all lie before
/// `end_offset` (headers only, CRCs unchecked: a replica serves what it committed as it is,
/// and consumers check each batch).
pub fn prefix_before(bytes: &[u8], end_offset: i64) -> usize {
    batch_headers(bytes)
        .take_while(|header| header.next_offset() <= end_offset)
        .map(|header| header.size)
        .sum()
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
