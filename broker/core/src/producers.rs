//! Idempotent-producer state of one partition (Kafka's KIP-98 rules): per producer id, the
//! current epoch, the last sequence appended and the last five batches, so that a retried
//! batch is acknowledged with its original offsets instead of being stored twice.
//!
//! Rules: a batch without a producer id (`-1`) is always appended. An older epoch is fenced.
//! A newer epoch starts over at sequence 0. Within an epoch exactly the next sequence is
//! appended; a copy of one of the last five batches is a duplicate; anything else is out of
//! order (a gap), which the producer recovers from by resending from the expected sequence.
//! Entries idle longer than the expiry are forgotten.

use std::collections::{HashMap, VecDeque};

pub use herald_wire::batch::ProducerStamp;

/// Batches remembered per producer: a producer keeps at most this many in flight.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// Most producers remembered per partition; the longest idle are forgotten first beyond it.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;
const SNAPSHOT_MAGIC: &[u8; 4] = b"HPS1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    last_sequence: i32,
    batches: VecDeque<BatchMeta>,
    last_seen_ms: i64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already stored: acknowledge with the original base offset.
    Duplicate {
        base_offset: i64,
    },
    /// A gap or a reordering: the producer must resend from `expected`.
    OutOfOrder {
        expected: i32,
        received: i32,
    },
    /// The producer's epoch is older than the current one: a zombie.
    Fenced {
        current_epoch: i16,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    entries: HashMap<i64, Entry>,
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides an incoming batch of `count` records.
    pub fn check(&self, producer: ProducerStamp, count: u32) -> SequenceCheck {
        let ProducerStamp {
            id: producer_id,
            epoch,
            base_sequence,
        } = producer;
        let Some(entry) = self.entries.get(&producer_id) else {
            // Unknown (new or expired) producer: it must start a sequence.
            return if base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    received: base_sequence,
                }
            };
        };
        if epoch < entry.epoch {
            return SequenceCheck::Fenced {
                current_epoch: entry.epoch,
            };
        }
        if epoch > entry.epoch {
            return if base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    received: base_sequence,
                }
            };
        }
        let last = base_sequence.wrapping_add(count as i32 - 1);
        if let Some(batch) = entry
            .batches
            .iter()
            // A batch stored with duplicate idempotency keys dropped starts later than it
            // was sent, but ends where it was sent: its last sequence identifies it.
            .find(|b| b.last_sequence == last && b.first_sequence >= base_sequence)
        {
            return SequenceCheck::Duplicate {
                base_offset: batch.base_offset,
            };
        }
        let expected = entry.last_sequence.wrapping_add(1);
        if base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                received: base_sequence,
            }
        }
    }

    /// Records a batch that was appended at `base_offset`.
    pub fn record(&mut self, producer: ProducerStamp, count: u32, base_offset: i64, now_ms: i64) {
        let ProducerStamp {
            id: producer_id,
            epoch,
            base_sequence,
        } = producer;
        if !self.entries.contains_key(&producer_id)
            && self.entries.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            if let Some((&idlest, _)) = self.entries.iter().min_by_key(|(_, e)| e.last_seen_ms) {
                self.entries.remove(&idlest);
            }
        }
        let entry = self.entries.entry(producer_id).or_insert_with(|| Entry {
            epoch,
            last_sequence: -1,
            batches: VecDeque::new(),
            last_seen_ms: now_ms,
        });
        if epoch != entry.epoch {
            *entry = Entry {
                epoch,
                last_sequence: -1,
                batches: VecDeque::new(),
                last_seen_ms: now_ms,
            };
        }
        let last_sequence = base_sequence.wrapping_add(count as i32 - 1);
        entry.last_sequence = last_sequence;
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        entry.batches.push_back(BatchMeta {
            first_sequence: base_sequence,
            last_sequence,
            base_offset,
        });
        while entry.batches.len() > PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Forgets producers idle for `expiry_ms` or longer.
    pub fn expire(&mut self, now_ms: i64, expiry_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, entry| now_ms.saturating_sub(entry.last_seen_ms) < expiry_ms);
        before - self.entries.len()
    }

    /// A self-checking binary snapshot (CRC32C over the body).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut ids: Vec<&i64> = self.entries.keys().collect();
        ids.sort_unstable();
        body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let entry = &self.entries[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_sequence.to_be_bytes());
            body.extend_from_slice(&entry.last_seen_ms.to_be_bytes());
            body.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                body.extend_from_slice(&batch.first_sequence.to_be_bytes());
                body.extend_from_slice(&batch.last_sequence.to_be_bytes());
                body.extend_from_slice(&batch.base_offset.to_be_bytes());
            }
        }
        herald_wire::seal(SNAPSHOT_MAGIC, &body)
    }

    /// Decodes a snapshot; `None` if it is damaged in any way.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::read(bytes).ok()
    }

    fn read(bytes: &[u8]) -> Result<Self, herald_wire::DecodeError> {
        const WHAT: &str = "producer snapshot";
        let mut body = herald_wire::unseal(SNAPSHOT_MAGIC, bytes, WHAT)?;
        let count = body.count(WHAT, PRODUCERS_PER_PARTITION_MAX)?;
        let mut entries = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = body.i64(WHAT)?;
            let epoch = body.i16(WHAT)?;
            let last_sequence = body.i32(WHAT)?;
            let last_seen_ms = body.i64(WHAT)?;
            let batch_count = usize::from(body.u8(WHAT)?);
            if batch_count > PRODUCER_BATCHES_REMEMBERED {
                return Err(herald_wire::DecodeError::TooLarge {
                    what: WHAT,
                    size: batch_count,
                    limit: PRODUCER_BATCHES_REMEMBERED,
                });
            }
            let mut batches = VecDeque::with_capacity(batch_count);
            for _ in 0..batch_count {
                batches.push_back(BatchMeta {
                    first_sequence: body.i32(WHAT)?,
                    last_sequence: body.i32(WHAT)?,
                    base_offset: body.i64(WHAT)?,
                });
            }
            entries.insert(
                id,
                Entry {
                    epoch,
                    last_sequence,
                    batches,
                    last_seen_ms,
                },
            );
        }
        body.finish(WHAT)?;
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp(id: i64, epoch: i16, base_sequence: i32) -> ProducerStamp {
        ProducerStamp {
            id,
            epoch,
            base_sequence,
        }
    }

    #[test]
    fn kafka_rules() {
        let mut table = ProducerTable::default();
        assert_eq!(
            table.check(stamp(7, 0, 5), 1),
            SequenceCheck::OutOfOrder {
                expected: 0,
                received: 5
            }
        );
        assert_eq!(table.check(stamp(7, 0, 0), 3), SequenceCheck::Append);
        table.record(stamp(7, 0, 0), 3, 100, 1);
        assert_eq!(
            table.check(stamp(7, 0, 0), 3),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(table.check(stamp(7, 0, 3), 2), SequenceCheck::Append);
        assert_eq!(
            table.check(stamp(7, 0, 4), 2),
            SequenceCheck::OutOfOrder {
                expected: 3,
                received: 4
            }
        );
        for n in 0..6 {
            table.record(stamp(7, 0, 3 + n * 2), 2, 200 + i64::from(n) * 2, 2);
        }
        assert_eq!(
            table.check(stamp(7, 0, 0), 3),
            SequenceCheck::OutOfOrder {
                expected: 15,
                received: 0
            },
            "only the last five batches are remembered"
        );
        assert_eq!(
            table.check(stamp(7, 0, 13), 2),
            SequenceCheck::Duplicate { base_offset: 210 }
        );
        assert_eq!(
            table.check(stamp(7, 1, 0), 1),
            SequenceCheck::Append,
            "a new epoch starts over"
        );
        table.record(stamp(7, 1, 0), 1, 300, 3);
        assert_eq!(
            table.check(stamp(7, 0, 15), 1),
            SequenceCheck::Fenced { current_epoch: 1 }
        );
        assert_eq!(table.expire(3 + 1000, 1000), 1);
        assert!(table.is_empty());
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(ops in proptest::collection::vec((0i64..5, 0i16..3, 0i32..100, 1u32..5, 0i64..10_000), 0..50)) {
            let mut table = ProducerTable::default();
            for (id, epoch, seq, count, offset) in ops {
                table.record(stamp(id, epoch, seq), count, offset, offset);
            }
            let bytes = table.encode();
            prop_assert_eq!(ProducerTable::decode(&bytes), Some(table));
        }

        #[test]
        fn damaged_snapshots_are_refused_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ProducerTable::decode(&bytes);
            let mut table = ProducerTable::default();
            table.record(stamp(1, 0, 0), 1, 0, 0);
            let mut encoded = table.encode();
            if let Some(byte) = encoded.get_mut(bytes.len() % 30 + 8) {
                *byte ^= 0x40;
                prop_assert_eq!(ProducerTable::decode(&encoded), None);
            }
        }
    }
}
