//! The records of a fetch: one shared buffer, and records that are positions into it.

use std::sync::Arc;

use bytes::Bytes;

use herald_wire::batch::{batches, BatchError, BatchView, RecordIter};

/// One fetch's buffer, shared by the records read from it: a record is a few positions
/// into it plus one reference count, so handing records out (and again on a retry) allocates
/// and copies nothing.
pub struct FetchedBuffer {
    topic: String,
    partition: u32,
    bytes: Bytes,
}

impl FetchedBuffer {
    pub fn new(topic: impl Into<String>, partition: u32, bytes: Bytes) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.into(),
            partition,
            bytes,
        })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
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

/// The records of a fetch from `position` on, in order; reading stops at the first corrupt
/// batch, an unreadable record is skipped.
pub(super) struct FetchedRecords<'a, B> {
    source: &'a Arc<FetchedBuffer>,
    position: i64,
    batches: B,
    /// The batch being read and the offset of its last record read.
    current: Option<(i64, RecordIter<'a>)>,
}

impl<'a> FetchedRecords<'a, ()> {
    pub(super) fn new(
        source: &'a Arc<FetchedBuffer>,
        position: i64,
    ) -> FetchedRecords<'a, impl Iterator<Item = Result<BatchView<'a>, BatchError>>> {
        FetchedRecords {
            source,
            position,
            batches: batches(source.bytes()),
            current: None,
        }
    }
}

impl<'a, B: Iterator<Item = Result<BatchView<'a>, BatchError>>> Iterator for FetchedRecords<'a, B> {
    type Item = ConsumedRecord;

    fn next(&mut self) -> Option<ConsumedRecord> {
        loop {
            if let Some((offset, records)) = &mut self.current {
                match records.next() {
                    Some(record) => {
                        *offset += 1;
                        let found =
                            record
                                .ok()
                                .filter(|_| *offset >= self.position)
                                .and_then(|view| {
                                    ConsumedRecord::from_view(self.source, *offset, &view)
                                });
                        if found.is_some() {
                            return found;
                        }
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let view = self.batches.next()?.ok()?;
            if view.next_offset() > self.position {
                self.current = Some((view.base_offset() - 1, view.records()));
            }
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

    use herald_wire::batch::{BatchBuilder, Header, Record};

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

    #[test]
    fn a_fetch_is_read_from_the_position_on_across_batches() {
        let mut bytes = Vec::new();
        for base in [10i64, 12] {
            let mut batch = encoded();
            herald_wire::batch::stamp(&mut batch, base, 0);
            bytes.extend_from_slice(&batch);
        }
        let source = FetchedBuffer::new("orders", 0, Bytes::from(bytes));
        let offsets = |position| -> Vec<i64> {
            FetchedRecords::new(&source, position)
                .map(|record| record.offset())
                .collect()
        };
        assert_eq!(offsets(10), [10, 11, 12, 13]);
        assert_eq!(offsets(11), [11, 12, 13]);
        assert_eq!(offsets(13), [13]);
        assert!(offsets(14).is_empty());
        // A damaged second batch ends the reading after the first.
        let mut damaged = source.bytes().to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let damaged = FetchedBuffer::new("orders", 0, Bytes::from(damaged));
        assert_eq!(FetchedRecords::new(&damaged, 0).count(), 2);
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
