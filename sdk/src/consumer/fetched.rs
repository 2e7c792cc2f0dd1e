//! The records of a fetch: one shared buffer, and records that are positions into it.
//!
//! Reading a fetch checks what the broker sent: every batch must pass its checksum and parse
//! (records and record count included), the first must hold the fetch position and each
//! next one must start where the one before it ends. The first batch failing any of this
//! ends the reading, and is noted on the buffer ([`FetchedBuffer`]'s corruption) for the run
//! loop to act on (stop, or skip it to the dead-letter topic: see the module documentation
//! of `consumer`) — never skipped silently, never read again and again.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use herald_wire::batch::{BatchHeader, BatchView, RecordIter, BATCH_HEADER_BYTES};

/// One fetch's buffer, shared by the records read from it: a record is a few positions
/// into it plus one reference count, so handing records out (and again on a retry) allocates
/// and copies nothing.
pub struct FetchedBuffer {
    topic: String,
    partition: u32,
    bytes: Bytes,
    /// The first corrupt batch a reading of this buffer met.
    corruption: OnceLock<Corruption>,
}

impl FetchedBuffer {
    pub fn new(topic: impl Into<String>, partition: u32, bytes: Bytes) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.into(),
            partition,
            bytes,
            corruption: OnceLock::new(),
        })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The corrupt batch that ended a reading of this buffer, if one did.
    pub(super) fn corruption(&self) -> Option<&Corruption> {
        self.corruption.get()
    }

    /// Where `part` (a slice of this buffer) lies in it.
    fn span(&self, part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.bytes.len()).then_some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    fn get(&self, span: Span) -> &[u8] {
        self.bytes
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }
}

/// A part of a record within its fetched buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// A batch of a fetch that could not be read: it failed its checksum, did not parse, held
/// other records than its header says, or its offsets do not follow on from the fetch
/// position or the batch before it. The broker sends whole batches only, so a batch cut
/// short at the end of a fetch is one of these too, not a partial read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Corruption {
    /// The first offset the consumer needed and could not read: where the batch starts (or
    /// the fetch position, when the batch started before it), or the offset of its first
    /// unreadable record when the records before it were read (and handed out).
    pub(super) offset: i64,
    /// What is wrong with it.
    pub(super) reason: String,
    /// The batch's bytes and offset range, when its header can be relied on to skip it;
    /// otherwise why it cannot.
    pub(super) skip: Result<CorruptRange, &'static str>,
}

/// Where a corrupt batch lies, in the partition and in the fetched buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CorruptRange {
    /// The batch's first offset (its header's base offset).
    pub(super) base_offset: i64,
    /// The offset after it (base offset + record count): where consuming goes on.
    pub(super) next_offset: i64,
    /// Its bytes in the buffer: `start..end`.
    pub(super) start: usize,
    pub(super) end: usize,
    /// Whether the batch after it in the buffer starts at `next_offset` (the record count,
    /// inside the failed checksum, is then confirmed). When it was the last batch fetched
    /// its end is still to be checked against the partition.
    pub(super) end_confirmed: bool,
}

/// The base offset of the batch at the start of `bytes` (its first 8 bytes), if there are
/// that many.
pub(super) fn base_offset_of(bytes: &[u8]) -> Option<i64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(i64::from_be_bytes(head))
}

/// How the corrupt batch at the start of `rest` (at `start` in its buffer) can be skipped:
/// its header must be whole, its bytes within the fetch, its offsets following on from
/// `expected_base` (the end of the batch before it) or, for the first batch, holding
/// `position`; and the batch after it, if any was fetched, must start where it ends.
fn skippable(
    rest: &[u8],
    start: usize,
    expected_base: Option<i64>,
    position: i64,
) -> Result<CorruptRange, &'static str> {
    let header = BatchHeader::read(rest).ok_or("its header is cut short")?;
    if header.size < BATCH_HEADER_BYTES || header.size > rest.len() {
        return Err("its length does not fit the bytes fetched");
    }
    if header.record_count == 0 {
        return Err("its header counts no records");
    }
    let next = header
        .base_offset
        .checked_add(i64::from(header.record_count))
        .ok_or("its header's offsets overflow")?;
    let follows = match expected_base {
        None => header.base_offset <= position && position < next,
        Some(expected) => header.base_offset == expected,
    };
    if !follows {
        return Err("its header's offsets do not follow on from the ones before it");
    }
    let after = rest.get(header.size..).unwrap_or_default();
    let end_confirmed = !after.is_empty();
    if end_confirmed && base_offset_of(after) != Some(next) {
        return Err("the batch after it does not start where its header says it ends");
    }
    Ok(CorruptRange {
        base_offset: header.base_offset,
        next_offset: next,
        start,
        end: start + header.size,
        end_confirmed,
    })
}

/// The batch being read.
struct Reading<'a> {
    /// Where the batch's bytes start in the buffer.
    start: usize,
    size: usize,
    base_offset: i64,
    /// The offset after its last record.
    next_offset: i64,
    /// The offset of the last record read.
    offset: i64,
    records: RecordIter<'a>,
}

/// The records of a fetch from `position` on, in order. Reading ends at the first corrupt
/// batch (or unreadable record), noted on the buffer ([`FetchedBuffer::corruption`]):
/// nothing after it is handed out.
pub(super) struct FetchedRecords<'a> {
    source: &'a Arc<FetchedBuffer>,
    position: i64,
    /// Where the next batch starts in the buffer.
    next_batch: usize,
    /// The offset the next batch must start at (the end of the one before it); `None` for
    /// the first batch, which must hold `position`.
    expected_base: Option<i64>,
    current: Option<Reading<'a>>,
    /// The buffer was read to its end, or a corrupt batch ended the reading.
    ended: bool,
    /// The end of the control batches read since the last record handed out (or since the
    /// start), not yet taken by [`FetchedRecords::take_passed_control`].
    passed_control: Option<i64>,
}

impl<'a> FetchedRecords<'a> {
    pub(super) fn new(source: &'a Arc<FetchedBuffer>, position: i64) -> Self {
        FetchedRecords {
            source,
            position,
            next_batch: 0,
            expected_base: None,
            current: None,
            ended: false,
            passed_control: None,
        }
    }

    /// Where the control batches read since the last call end, if any were: the broker's own
    /// batches of a replicated partition (a new leader's, a membership change), which hold
    /// no records for the handler. Their offsets are passed over: the caller reports them
    /// skipped (before the record the last `next` returned, which comes after them).
    pub(super) fn take_passed_control(&mut self) -> Option<i64> {
        self.passed_control.take()
    }

    /// Ends the reading at `corruption` (noted on the buffer, unless a reading noted one
    /// before).
    fn stop(&mut self, corruption: Corruption) {
        self.ended = true;
        self.current = None;
        let _ = self.source.corruption.set(corruption);
    }

    /// Ends the reading at the batch at `start` that failed as a whole (`rest`: the buffer
    /// from there).
    fn corrupt_batch(&mut self, rest: &[u8], start: usize, reason: String) {
        let offset = self.expected_base.unwrap_or(self.position);
        let skip = skippable(rest, start, self.expected_base, self.position);
        self.stop(Corruption {
            offset,
            reason,
            skip,
        })
    }

    /// Ends the reading at the record at `offset` of the batch being read (which passed its
    /// checksum, so its header is right): the records before it were handed out, the batch
    /// is skipped whole.
    fn corrupt_record(&mut self, offset: i64, reason: String) {
        let Some(reading) = &self.current else {
            self.ended = true;
            return;
        };
        let skip = Ok(CorruptRange {
            base_offset: reading.base_offset,
            next_offset: reading.next_offset,
            start: reading.start,
            end: reading.start + reading.size,
            end_confirmed: true,
        });
        let offset = offset.max(self.position);
        self.stop(Corruption {
            offset,
            reason,
            skip,
        })
    }

    /// Starts reading the next batch; `false` when the reading ended (the buffer's end, or a
    /// corrupt batch).
    fn start_batch(&mut self) -> bool {
        let source: &'a Arc<FetchedBuffer> = self.source;
        let bytes: &'a [u8] = source.bytes();
        let start = self.next_batch;
        let rest: &'a [u8] = bytes.get(start..).unwrap_or_default();
        if rest.is_empty() {
            self.ended = true;
            return false;
        }
        let view = match BatchView::parse(rest) {
            Ok(view) => view,
            Err(error) => {
                self.corrupt_batch(rest, start, error.to_string());
                return false;
            }
        };
        let header = *view.header();
        let next = header
            .base_offset
            .checked_add(i64::from(header.record_count));
        let follows = match (self.expected_base, next) {
            (_, None) => false,
            (None, Some(next)) => header.base_offset <= self.position && self.position < next,
            (Some(expected), Some(_)) => header.base_offset == expected,
        };
        let Some(next) = next.filter(|_| follows) else {
            let reason = match self.expected_base {
                None => format!(
                    "the first batch fetched starts at offset {} with {} records: it does not \
                     hold the fetch position {}",
                    header.base_offset, header.record_count, self.position
                ),
                Some(expected) => format!(
                    "a batch starts at offset {} where offset {expected} was expected",
                    header.base_offset
                ),
            };
            self.corrupt_batch(rest, start, reason);
            return false;
        };
        self.next_batch = start + view.size();
        self.expected_base = Some(next);
        if view.is_control() {
            self.passed_control = Some(next);
            return true;
        }
        self.current = Some(Reading {
            start,
            size: view.size(),
            base_offset: header.base_offset,
            next_offset: next,
            offset: header.base_offset.saturating_sub(1),
            records: view.records(),
        });
        true
    }
}

impl Iterator for FetchedRecords<'_> {
    type Item = ConsumedRecord;

    fn next(&mut self) -> Option<ConsumedRecord> {
        loop {
            if self.ended {
                return None;
            }
            if self.current.is_none() {
                if !self.start_batch() {
                    return None;
                }
                continue;
            }
            let Some(reading) = &mut self.current else {
                return None;
            };
            // Each arm that ends the reading works out what it reports first (`reading`
            // borrows `self`).
            let (offset, reason) = match reading.records.next() {
                Some(Ok(record)) => {
                    reading.offset += 1;
                    let offset = reading.offset;
                    if offset >= reading.next_offset {
                        let declared = reading.next_offset - reading.base_offset;
                        let reason = format!(
                            "the batch at offset {} says {declared} records but holds more",
                            reading.base_offset
                        );
                        (offset, reason)
                    } else if offset < self.position {
                        continue;
                    } else {
                        match ConsumedRecord::from_view(self.source, offset, &record) {
                            Some(found) => return Some(found),
                            None => (
                                offset,
                                format!("the record at offset {offset} lies outside its fetch"),
                            ),
                        }
                    }
                }
                Some(Err(error)) => {
                    let offset = reading.offset + 1;
                    let reason = format!("the record at offset {offset} cannot be read: {error}");
                    (offset, reason)
                }
                None if reading.offset + 1 < reading.next_offset => {
                    let declared = reading.next_offset - reading.base_offset;
                    let held = reading.offset + 1 - reading.base_offset;
                    let reason = format!(
                        "the batch at offset {} says {declared} records but holds {held}",
                        reading.base_offset
                    );
                    (reading.offset + 1, reason)
                }
                None => {
                    self.current = None;
                    continue;
                }
            };
            self.corrupt_record(offset, reason);
            return None;
        }
    }
}

/// The headers of a consumed record, decoded as iterated (`get(name)`, `iter()`).
pub type RecordHeaders<'a> = herald_wire::batch::Headers<'a>;

/// A record handed to the handler. Key, value and headers stay in the fetched buffer;
/// cloning a record (a retry hands the same record again) costs one reference count.
#[derive(Clone)]
pub struct ConsumedRecord {
    source: Arc<FetchedBuffer>,
    pub(super) offset: i64,
    timestamp_ms: i64,
    key: Option<Span>,
    value: Option<Span>,
    headers: Span,
    header_count: u16,
}

impl ConsumedRecord {
    /// The record `view` (read from `source`'s buffer) at `offset`; `None` when `view` does
    /// not point into `source`.
    pub fn from_view(
        source: &Arc<FetchedBuffer>,
        offset: i64,
        view: &herald_wire::batch::RecordView<'_>,
    ) -> Option<Self> {
        let part = |part: Option<&[u8]>| match part {
            None => Some(None),
            Some(part) => source.span(part).map(Some),
        };
        Some(Self {
            source: source.clone(),
            offset,
            timestamp_ms: view.timestamp_ms,
            key: part(view.key)?,
            value: part(view.value)?,
            headers: source.span(view.headers.raw())?,
            header_count: view.headers.len() as u16,
        })
    }

    pub fn topic(&self) -> &str {
        &self.source.topic
    }

    pub fn partition(&self) -> u32 {
        self.source.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|span| self.source.get(span))
    }

    pub fn value(&self) -> Option<&[u8]> {
        self.value.map(|span| self.source.get(span))
    }

    /// The key as a shared slice of the fetched buffer (no copy).
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key
            .map(|span| self.source.bytes.slice_ref(self.source.get(span)))
    }

    /// The value as a shared slice of the fetched buffer (no copy).
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value
            .map(|span| self.source.bytes.slice_ref(self.source.get(span)))
    }

    pub fn headers(&self) -> RecordHeaders<'_> {
        RecordHeaders::from_validated(self.source.get(self.headers), self.header_count)
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name)
    }
}

impl std::fmt::Debug for ConsumedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumedRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers().iter().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for ConsumedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.topic() == other.topic()
            && self.partition() == other.partition()
            && self.offset == other.offset
            && self.timestamp_ms == other.timestamp_ms
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers().raw() == other.headers().raw()
    }
}

impl Eq for ConsumedRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    use herald_wire::batch::{batches, BatchBuilder, Header, Record};

    fn encoded() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: 7,
            key: Some(b"k1".to_vec()),
            value: Some(b"v1".to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: b"x".to_vec(),
            }],
        });
        builder.push(Record {
            timestamp_ms: 8,
            key: None,
            value: None,
            headers: Vec::new(),
        });
        builder.encode().expect("encode")
    }

    #[test]
    fn a_record_reads_its_parts_from_the_shared_buffer() {
        let source = FetchedBuffer::new("orders", 3, Bytes::from(encoded()));
        let view = batches(source.bytes())
            .next()
            .expect("a batch")
            .expect("valid");
        let records: Vec<ConsumedRecord> = view
            .records()
            .enumerate()
            .map(|(i, r)| {
                ConsumedRecord::from_view(&source, 10 + i as i64, &r.expect("record"))
                    .expect("inside the buffer")
            })
            .collect();
        let [first, second] = records.as_slice() else {
            panic!("two records")
        };
        assert_eq!(
            (first.topic(), first.partition(), first.offset()),
            ("orders", 3, 10)
        );
        assert_eq!(first.timestamp_ms(), 7);
        assert_eq!(first.key(), Some(&b"k1"[..]));
        assert_eq!(first.value_bytes().as_deref(), Some(&b"v1"[..]));
        assert_eq!(first.header("h"), Some(&b"x"[..]));
        assert_eq!(first.headers().len(), 1);
        assert_eq!((second.key(), second.value()), (None, None));
        assert!(second.headers().is_empty());
        assert_eq!(first.clone(), *first);
        assert_ne!(first, second);
    }

    /// Batches of `encoded()` (two records each) stamped at `bases`, one after another.
    fn stamped(bases: &[i64]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for base in bases {
            let mut batch = encoded();
            herald_wire::batch::stamp(&mut batch, *base, 0);
            bytes.extend_from_slice(&batch);
        }
        bytes
    }

    /// The offsets read from `bytes` at `position`, and the corruption that ended the
    /// reading, if one did.
    fn read(bytes: &[u8], position: i64) -> (Vec<i64>, Option<Corruption>) {
        let source = FetchedBuffer::new("orders", 0, Bytes::copy_from_slice(bytes));
        let offsets = FetchedRecords::new(&source, position)
            .map(|record| record.offset())
            .collect();
        (offsets, source.corruption().cloned())
    }

    /// A one-record control batch (a replicated partition's own entry) stamped at `base`.
    fn control(base: i64) -> Vec<u8> {
        let mut writer = herald_wire::batch::BatchWriter::new();
        writer
            .push(0, Some(b"herald.raft.blank"), None, std::iter::empty())
            .expect("record");
        let mut batch = writer.finish_control().expect("control batch");
        herald_wire::batch::stamp(&mut batch, base, 0);
        batch
    }

    /// Control batches hand out nothing; where they end is reported before the record after
    /// them (or at the end), so the caller passes their offsets.
    #[test]
    fn control_batches_are_passed_over_and_reported() {
        let mut bytes = control(9);
        bytes.extend_from_slice(&stamped(&[10]));
        bytes.extend_from_slice(&control(12));
        bytes.extend_from_slice(&control(13));
        bytes.extend_from_slice(&stamped(&[14]));
        bytes.extend_from_slice(&control(16));
        let source = FetchedBuffer::new("orders", 0, Bytes::from(bytes));
        let mut records = FetchedRecords::new(&source, 9);
        let mut seen = Vec::new();
        loop {
            let record = records.next();
            seen.push((
                record.as_ref().map(|r| r.offset()),
                records.take_passed_control(),
            ));
            if record.is_none() {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                (Some(10), Some(10)),
                (Some(11), None),
                (Some(14), Some(14)),
                (Some(15), None),
                (None, Some(17)),
            ]
        );
        assert_eq!(source.corruption(), None);
    }

    #[test]
    fn a_fetch_is_read_from_the_position_on_across_batches() {
        let bytes = stamped(&[10, 12]);
        assert_eq!(read(&bytes, 10), (vec![10, 11, 12, 13], None));
        assert_eq!(read(&bytes, 11), (vec![11, 12, 13], None));
        // The broker serves from the batch holding the position.
        assert_eq!(read(&bytes[encoded().len()..], 13), (vec![13], None));
        assert_eq!(read(&[], 13), (vec![], None));
    }

    /// A batch failing its checksum ends the reading after the batches before it, and is
    /// reported with the range it can be skipped by (confirmed by the batch after it, when
    /// one was fetched).
    #[test]
    fn a_damaged_batch_ends_the_reading_and_is_reported() {
        let size = encoded().len();
        // The last byte of the second batch (its last record's header count): the CRC fails.
        let mut bytes = stamped(&[10, 12, 14]);
        bytes[2 * size - 1] ^= 0xff;
        let (offsets, corruption) = read(&bytes, 10);
        assert_eq!(offsets, [10, 11]);
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 12);
        assert!(
            corruption.reason.contains("checksum"),
            "{}",
            corruption.reason
        );
        assert_eq!(
            corruption.skip,
            Ok(CorruptRange {
                base_offset: 12,
                next_offset: 14,
                start: size,
                end: 2 * size,
                end_confirmed: true,
            })
        );
        // The last batch fetched: its end is left to check.
        bytes.truncate(2 * size);
        let (offsets, corruption) = read(&bytes, 11);
        assert_eq!(offsets, [11]);
        let skip = corruption.expect("reported").skip.expect("skippable");
        assert_eq!((skip.next_offset, skip.end_confirmed), (14, false));
        // Read from inside the damaged batch: reported at the position.
        let (offsets, corruption) = read(&bytes[size..], 13);
        assert!(offsets.is_empty());
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 13);
        assert_eq!(corruption.skip.map(|range| range.base_offset), Ok(12));
        // Cut short (the broker sends whole batches): corrupt, and not skippable.
        let (offsets, corruption) = read(&bytes[..2 * size - 1], 10);
        assert_eq!(offsets, [10, 11]);
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 12);
        assert!(corruption.skip.is_err(), "{corruption:?}");
    }

    /// A damaged header (a length running past the next batch, a count the next batch's
    /// offset contradicts) cannot be skipped by.
    #[test]
    fn a_batch_whose_header_cannot_be_relied_on_is_not_skippable() {
        let size = encoded().len();
        let mut longer = stamped(&[10, 12, 14]);
        longer[size + 11] ^= 0x01;
        let (offsets, corruption) = read(&longer, 10);
        assert_eq!(offsets, [10, 11]);
        assert!(corruption.expect("reported").skip.is_err());
        let mut recounted = stamped(&[10, 12, 14]);
        recounted[size + 29] = 3;
        let (offsets, corruption) = read(&recounted, 10);
        assert_eq!(offsets, [10, 11]);
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 12);
        assert!(corruption.skip.is_err(), "{corruption:?}");
    }

    /// Offsets must follow on: a first batch not holding the position, or a batch not
    /// starting where the one before it ended (a damaged base offset, outside the checksum),
    /// is corrupt.
    #[test]
    fn batches_whose_offsets_do_not_follow_on_are_corrupt() {
        let (offsets, corruption) = read(&stamped(&[10, 12]), 14);
        assert!(offsets.is_empty());
        assert_eq!(corruption.map(|c| c.offset), Some(14));
        let (offsets, corruption) = read(&stamped(&[10, 12]), 9);
        assert!(offsets.is_empty());
        assert_eq!(corruption.map(|c| c.offset), Some(9));
        let (offsets, corruption) = read(&stamped(&[10, 20, 22]), 10);
        assert_eq!(offsets, [10, 11]);
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 12);
        assert!(
            corruption.reason.contains("expected"),
            "{}",
            corruption.reason
        );
        assert!(corruption.skip.is_err());
    }

    /// A batch passing its checksum whose second record cannot be read: the first is handed
    /// out, the rest of the batch reported (skippable whole: the header is checksummed).
    #[test]
    fn an_unreadable_record_ends_the_reading() {
        let size = encoded().len();
        let mut bytes = stamped(&[10, 12, 14]);
        let batch = &mut bytes[size..2 * size];
        let first_length = u32::from_be_bytes(batch[60..64].try_into().expect("4 bytes"));
        let second = 64 + first_length as usize;
        batch[second..second + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        herald_wire::batch::restamp_producer(batch, -1, -1, -1);
        BatchView::parse(batch).expect("the checksum is right again");
        let (offsets, corruption) = read(&bytes, 10);
        assert_eq!(offsets, [10, 11, 12]);
        let corruption = corruption.expect("reported");
        assert_eq!(corruption.offset, 13);
        assert_eq!(
            corruption.skip,
            Ok(CorruptRange {
                base_offset: 12,
                next_offset: 14,
                start: size,
                end: 2 * size,
                end_confirmed: true,
            })
        );
    }

    #[test]
    fn a_view_of_another_buffer_is_refused() {
        let source = FetchedBuffer::new("orders", 0, Bytes::from(encoded()));
        let other = encoded();
        let view = batches(&other).next().expect("a batch").expect("valid");
        let record = view.records().next().expect("a record").expect("valid");
        assert!(ConsumedRecord::from_view(&source, 0, &record).is_none());
    }
}
