//! Schema-ID validation of a batch: every record's key and/or value must carry Confluent
//! framing with a schema ID registered for the topic's subject. Pure: the caller supplies an
//! oracle that knows (from its cache) whether an ID is allowed, and is told which IDs it must
//! still look up when the oracle does not know.
//!
//! The lookups a batch can cause are bounded: a round asks for at most
//! [`LOOKUPS_PER_ROUND_MAX`] IDs, the first unknown ones in record order (the caller looks them
//! up in that order and stops at the first refused one, so a batch of thousands of distinct
//! unregistered IDs costs one lookup), and a batch may carry at most
//! [`SCHEMA_IDS_PER_BATCH_MAX`] distinct IDs in all.

use herald_wire::batch::BatchView;
use herald_wire::messages::{SchemaValidation, SubjectStrategy};
use herald_wire::schema_id::read_schema_id;

/// Which part of a record is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Key,
    Value,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// What the oracle knows about one schema ID for one part of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Not registered under `subject` (the subject the strategy demands).
    Refused {
        subject: String,
    },
    /// Not in the cache: the caller must look it up and ask again.
    Unknown,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationFailure {
    pub record_index: u32,
    pub part: Part,
    pub schema_id: Option<u32>,
    pub subject: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} {}: {}",
            self.record_index,
            self.part.as_str(),
            self.reason
        )
    }
}

/// Most distinct (part, schema ID) pairs one batch may carry. A producer writes a batch with
/// one serializer per part, so real batches carry one schema ID per part, a few when a topic
/// mixes record types (RecordNameStrategy) or a batch spans a schema upgrade; 64 leaves room
/// for all of that. Without a bound a batch of 65,536 records could carry 65,536 distinct IDs,
/// each a registry round trip (and a cache entry) if the registry knows them. A batch with
/// more is refused, at the record that brings the 65th pair, after the pairs before it were
/// decided; so the registry work of one batch is at most this many lookups.
pub const SCHEMA_IDS_PER_BATCH_MAX: usize = 64;

/// Most unknown pairs [`validate_batch`] asks for in one round: the first ones in record
/// order. The caller looks them up one after another and stops at the first refused one (the
/// batch is refused then, whatever the others are), so asking for more would not cost more
/// registry calls, only re-scans of the batch saved; a few per round keeps a batch of
/// [`SCHEMA_IDS_PER_BATCH_MAX`] distinct valid IDs to a handful of rounds.
pub const LOOKUPS_PER_ROUND_MAX: usize = 8;

/// Most rounds (calls of [`validate_batch`]) a caller needs when every round learns all the
/// pairs it was asked for: each round but the last asks for at least one new pair, a full
/// round for [`LOOKUPS_PER_ROUND_MAX`], and a batch has at most [`SCHEMA_IDS_PER_BATCH_MAX`].
pub const VALIDATION_ROUNDS_MAX: usize =
    SCHEMA_IDS_PER_BATCH_MAX.div_ceil(LOOKUPS_PER_ROUND_MAX) + 1;

/// The outcome of checking a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchVerdict {
    Accepted,
    Refused(ValidationFailure),
    /// The oracle must learn these (part, schema ID) pairs first: distinct, in the order of
    /// the records that carry them (the first unknown one first), at most
    /// [`LOOKUPS_PER_ROUND_MAX`]. The records after the last of them were not checked yet.
    NeedLookups(Vec<(Part, u32)>),
}

/// The subject TopicNameStrategy demands, or `None` for the strategies that need the
/// schema's record name (which only the registry knows).
pub fn topic_subject(topic: &str, part: Part, strategy: SubjectStrategy) -> Option<String> {
    match strategy {
        SubjectStrategy::TopicName => Some(format!("{topic}-{}", part.as_str())),
        SubjectStrategy::RecordName | SubjectStrategy::TopicRecordName => None,
    }
}

/// The subject for a schema whose record is `record_name`.
pub fn record_subject(
    topic: &str,
    part: Part,
    strategy: SubjectStrategy,
    record_name: &str,
) -> String {
    strategy.subject(topic, part.as_str(), record_name)
}

/// Checks every record of `batch`. Null keys and tombstones (null values) pass: there is no
/// payload to validate. The batch's records must already be validated structurally.
///
/// The oracle is asked once per distinct (part, schema ID) pair, not once per record (a batch
/// usually repeats one ID in every record). The scan stops at the first refused record, at
/// the record that brings more than [`SCHEMA_IDS_PER_BATCH_MAX`] distinct pairs, and once it
/// has [`LOOKUPS_PER_ROUND_MAX`] unknown pairs to ask for: the caller learns those and calls
/// again.
pub fn validate_batch(
    batch: &BatchView<'_>,
    validation: &SchemaValidation,
    oracle: impl Fn(Part, u32) -> Verdict,
) -> BatchVerdict {
    if !validation.key && !validation.value {
        return BatchVerdict::Accepted;
    }
    // Pairs the oracle already answered Allowed or Unknown for (a Refused one ends the scan).
    let mut seen = SeenPairs::new();
    let mut unknown = Vec::new();
    for (index, record) in batch.records().enumerate() {
        let index = index as u32;
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                return BatchVerdict::Refused(ValidationFailure {
                    record_index: index,
                    part: Part::Value,
                    schema_id: None,
                    subject: None,
                    reason: error.to_string(),
                })
            }
        };
        let parts = [
            (Part::Key, validation.key, record.key),
            (Part::Value, validation.value, record.value),
        ];
        for (part, enabled, payload) in parts {
            let Some(payload) = payload.filter(|_| enabled) else {
                continue;
            };
            let id = match read_schema_id(payload) {
                Ok(id) => id,
                Err(error) => {
                    return BatchVerdict::Refused(ValidationFailure {
                        record_index: index,
                        part,
                        schema_id: None,
                        subject: None,
                        reason: format!("no schema-ID framing: {error}"),
                    })
                }
            };
            if seen.contains(part, id) {
                continue;
            }
            if seen.len() >= SCHEMA_IDS_PER_BATCH_MAX {
                return BatchVerdict::Refused(ValidationFailure {
                    record_index: index,
                    part,
                    schema_id: Some(id),
                    subject: None,
                    reason: format!(
                        "schema ID {id} makes more than {SCHEMA_IDS_PER_BATCH_MAX} distinct schema IDs in one batch; split the batch"
                    ),
                });
            }
            match oracle(part, id) {
                Verdict::Allowed => {
                    seen.insert(part, id);
                }
                Verdict::Unknown => {
                    seen.insert(part, id);
                    unknown.push((part, id));
                    if unknown.len() >= LOOKUPS_PER_ROUND_MAX {
                        return BatchVerdict::NeedLookups(unknown);
                    }
                }
                Verdict::Refused { subject } => {
                    let reason =
                        format!("schema ID {id} is not registered under subject '{subject}'");
                    return BatchVerdict::Refused(ValidationFailure {
                        record_index: index,
                        part,
                        schema_id: Some(id),
                        subject: Some(subject),
                        reason,
                    });
                }
            }
        }
    }
    if unknown.is_empty() {
        BatchVerdict::Accepted
    } else {
        BatchVerdict::NeedLookups(unknown)
    }
}

/// The distinct (part, schema ID) pairs of one batch that the oracle was asked about, without
/// an allocation per batch (a produce validates every batch): there are at most
/// [`SCHEMA_IDS_PER_BATCH_MAX`] (the batch is refused beyond), kept sorted in a fixed array
/// on the stack (512 bytes) and found by binary search. Before searching, the last pair found
/// or added for the part is compared, because the records of a batch mostly repeat the
/// previous record's ID: then a record costs one comparison per part.
struct SeenPairs {
    /// `pairs[..len]` is sorted and distinct; the rest is filler.
    pairs: [(Part, u32); SCHEMA_IDS_PER_BATCH_MAX],
    len: usize,
    /// The ID last found or added, per part (indexed by `part_index`).
    last: [Option<u32>; 2],
}

impl SeenPairs {
    fn new() -> Self {
        Self {
            pairs: [(Part::Key, 0); SCHEMA_IDS_PER_BATCH_MAX],
            len: 0,
            last: [None; 2],
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn contains(&mut self, part: Part, id: u32) -> bool {
        let last = &mut self.last[part_index(part)];
        if *last == Some(id) {
            return true;
        }
        let found = self.pairs[..self.len].binary_search(&(part, id)).is_ok();
        if found {
            *last = Some(id);
        }
        found
    }

    /// Adds the pair; nothing if it is already in or the set is full (the caller refuses a
    /// batch before it brings one pair more than the bound, so a full set is not reached).
    fn insert(&mut self, part: Part, id: u32) {
        let at = match self.pairs[..self.len].binary_search(&(part, id)) {
            Ok(_) => return,
            Err(at) => at,
        };
        if self.len >= SCHEMA_IDS_PER_BATCH_MAX {
            return;
        }
        self.pairs.copy_within(at..self.len, at + 1);
        self.pairs[at] = (part, id);
        self.len += 1;
        self.last[part_index(part)] = Some(id);
    }
}

fn part_index(part: Part) -> usize {
    match part {
        Part::Key => 0,
        Part::Value => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use herald_wire::batch::{BatchBuilder, Record};
    use herald_wire::schema_id::write_schema_id;

    fn framed(id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_schema_id(&mut out, id);
        out.extend_from_slice(b"payload");
        out
    }

    fn batch(values: Vec<Option<Vec<u8>>>) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(Record {
                value,
                key: Some(b"raw key".to_vec()),
                ..Record::default()
            });
        }
        builder.encode().expect("valid")
    }

    const VALUE_ONLY: SchemaValidation = SchemaValidation {
        key: false,
        value: true,
        strategy: SubjectStrategy::TopicName,
    };

    fn oracle(part: Part, id: u32) -> Verdict {
        match id {
            1 | 2 => Verdict::Allowed,
            9 => Verdict::Unknown,
            _ => Verdict::Refused {
                subject: format!("orders-{}", part.as_str()),
            },
        }
    }

    #[test]
    fn registered_ids_and_tombstones_pass() {
        let bytes = batch(vec![Some(framed(1)), None, Some(framed(2))]);
        let view = BatchView::parse(&bytes).expect("batch");
        assert_eq!(
            validate_batch(&view, &VALUE_ONLY, oracle),
            BatchVerdict::Accepted
        );
    }

    #[test]
    fn the_first_bad_record_refuses_the_whole_batch_with_index_id_and_subject() {
        let bytes = batch(vec![
            Some(framed(1)),
            Some(framed(7)),
            Some(b"no framing".to_vec()),
        ]);
        let view = BatchView::parse(&bytes).expect("batch");
        let BatchVerdict::Refused(failure) = validate_batch(&view, &VALUE_ONLY, oracle) else {
            panic!("refused expected")
        };
        assert_eq!(
            (
                failure.record_index,
                failure.schema_id,
                failure.subject.as_deref()
            ),
            (1, Some(7), Some("orders-value"))
        );
        assert!(failure.to_string().contains("record 1 value"), "{failure}");
        let bytes = batch(vec![Some(b"no framing".to_vec())]);
        let view = BatchView::parse(&bytes).expect("batch");
        let BatchVerdict::Refused(failure) = validate_batch(&view, &VALUE_ONLY, oracle) else {
            panic!("refused expected")
        };
        assert!(failure.reason.contains("magic"), "{failure}");
    }

    #[test]
    fn unknown_ids_are_asked_for_and_keys_are_checked_when_enabled() {
        let bytes = batch(vec![Some(framed(9)), Some(framed(9))]);
        let view = BatchView::parse(&bytes).expect("batch");
        assert_eq!(
            validate_batch(&view, &VALUE_ONLY, oracle),
            BatchVerdict::NeedLookups(vec![(Part::Value, 9)])
        );
        let both = SchemaValidation {
            key: true,
            value: true,
            strategy: SubjectStrategy::TopicName,
        };
        let BatchVerdict::Refused(failure) = validate_batch(&view, &both, oracle) else {
            panic!("raw key refused")
        };
        assert_eq!(failure.part, Part::Key);
        assert_eq!(
            validate_batch(&view, &SchemaValidation::default(), oracle),
            BatchVerdict::Accepted
        );
    }

    /// IDs from 100 on are not in the cache.
    fn unknown_from_100(part: Part, id: u32) -> Verdict {
        if id >= 100 {
            Verdict::Unknown
        } else {
            oracle(part, id)
        }
    }

    #[test]
    fn lookups_are_asked_first_unknown_first_a_bounded_round_at_a_time() {
        // 1,000 distinct unknown IDs (the shape of the hostile batch), after a known
        // one and with a repeat: the first LOOKUPS_PER_ROUND_MAX distinct ones, in record
        // order, and nothing past them is examined (the garbage last record is not reported).
        let mut values = vec![Some(framed(1)), Some(framed(500)), Some(framed(500))];
        values.extend((0..1000).map(|n| Some(framed(1000 + n))));
        values.push(Some(b"no framing".to_vec()));
        let bytes = batch(values);
        let view = BatchView::parse(&bytes).expect("batch");
        let mut expected = vec![(Part::Value, 500)];
        expected.extend((0..LOOKUPS_PER_ROUND_MAX as u32 - 1).map(|n| (Part::Value, 1000 + n)));
        assert_eq!(
            validate_batch(&view, &VALUE_ONLY, unknown_from_100),
            BatchVerdict::NeedLookups(expected)
        );
        // A refused ID before the unknown ones refuses the batch without any lookup.
        let bytes = batch(vec![Some(framed(7)), Some(framed(500))]);
        let view = BatchView::parse(&bytes).expect("batch");
        assert!(matches!(
            validate_batch(&view, &VALUE_ONLY, unknown_from_100),
            BatchVerdict::Refused(ValidationFailure {
                record_index: 0,
                schema_id: Some(7),
                ..
            })
        ));
    }

    #[test]
    fn a_batch_with_more_distinct_ids_than_the_bound_is_refused() {
        let allowed = |_: Part, _: u32| Verdict::Allowed;
        let bound = SCHEMA_IDS_PER_BATCH_MAX as u32;
        // Exactly the bound, each ID twice: accepted.
        let bytes = batch(
            (0..2 * bound)
                .map(|n| Some(framed(1 + n % bound)))
                .collect(),
        );
        let view = BatchView::parse(&bytes).expect("batch");
        assert_eq!(
            validate_batch(&view, &VALUE_ONLY, allowed),
            BatchVerdict::Accepted
        );
        // One more distinct ID: refused at the record that brings it.
        let bytes = batch((0..=bound).map(|n| Some(framed(1 + n))).collect());
        let view = BatchView::parse(&bytes).expect("batch");
        let BatchVerdict::Refused(failure) = validate_batch(&view, &VALUE_ONLY, allowed) else {
            panic!("too many distinct IDs")
        };
        assert_eq!(
            (failure.record_index, failure.schema_id),
            (bound, Some(bound + 1))
        );
        assert!(failure.reason.contains("distinct schema IDs"), "{failure}");
    }

    #[test]
    fn the_oracle_is_asked_once_per_distinct_id() {
        let asked = std::cell::Cell::new(0);
        let counting = |part: Part, id: u32| {
            asked.set(asked.get() + 1);
            oracle(part, id)
        };
        let bytes = batch((0..1000).map(|n| Some(framed(1 + n % 2))).collect());
        let view = BatchView::parse(&bytes).expect("batch");
        assert_eq!(
            validate_batch(&view, &VALUE_ONLY, counting),
            BatchVerdict::Accepted
        );
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn keys_and_values_ask_the_oracle_once_per_distinct_pair_in_record_order() {
        let asked = std::cell::RefCell::new(Vec::new());
        let counting = |part: Part, id: u32| {
            asked.borrow_mut().push((part, id));
            Verdict::Allowed
        };
        let mut builder = BatchBuilder::new();
        for n in 0..1000u32 {
            builder.push(Record {
                key: Some(framed(1 + n % 3)),
                value: Some(framed(1 + n % 2)),
                ..Record::default()
            });
        }
        let bytes = builder.encode().expect("valid");
        let view = BatchView::parse(&bytes).expect("batch");
        let both = SchemaValidation {
            key: true,
            value: true,
            strategy: SubjectStrategy::TopicName,
        };
        assert_eq!(
            validate_batch(&view, &both, counting),
            BatchVerdict::Accepted
        );
        assert_eq!(
            asked.into_inner(),
            vec![
                (Part::Key, 1),
                (Part::Value, 1),
                (Part::Key, 2),
                (Part::Value, 2),
                (Part::Key, 3)
            ]
        );
    }

    #[test]
    fn seen_pairs_stay_sorted_and_distinct_up_to_the_bound() {
        let mut seen = SeenPairs::new();
        // Out of order, keys and values interleaved, with repeats.
        let pairs = [
            (Part::Value, 9),
            (Part::Key, 3),
            (Part::Value, 1),
            (Part::Key, 3),
            (Part::Value, 9),
            (Part::Key, 1),
        ];
        for (part, id) in pairs {
            if !seen.contains(part, id) {
                seen.insert(part, id);
            }
        }
        assert_eq!(
            &seen.pairs[..seen.len()],
            &[
                (Part::Key, 1),
                (Part::Key, 3),
                (Part::Value, 1),
                (Part::Value, 9)
            ]
        );
        assert!(seen.contains(Part::Key, 3) && seen.contains(Part::Value, 9));
        assert!(!seen.contains(Part::Key, 9));
        // Filled to the bound, a further pair is not added (the caller refuses the batch
        // before that).
        let bound = SCHEMA_IDS_PER_BATCH_MAX as u32;
        let mut seen = SeenPairs::new();
        for id in (0..bound).rev() {
            seen.insert(Part::Value, id);
        }
        assert_eq!(seen.len(), SCHEMA_IDS_PER_BATCH_MAX);
        seen.insert(Part::Value, bound);
        assert_eq!(seen.len(), SCHEMA_IDS_PER_BATCH_MAX);
        assert!(!seen.contains(Part::Value, bound));
        assert!((0..bound).all(|id| seen.contains(Part::Value, id)));
        assert!(seen.pairs.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn the_rounds_bound_covers_a_batch_of_the_most_distinct_ids() {
        // Learning everything asked for, a batch of SCHEMA_IDS_PER_BATCH_MAX distinct unknown
        // IDs is decided within VALIDATION_ROUNDS_MAX rounds.
        let bound = SCHEMA_IDS_PER_BATCH_MAX as u32;
        let bytes = batch((0..bound).map(|n| Some(framed(100 + n))).collect());
        let view = BatchView::parse(&bytes).expect("batch");
        let learned = std::cell::RefCell::new(BTreeSet::new());
        let mut rounds = 0;
        let verdict = loop {
            rounds += 1;
            let verdict = validate_batch(&view, &VALUE_ONLY, |_, id| {
                if learned.borrow().contains(&id) {
                    Verdict::Allowed
                } else {
                    Verdict::Unknown
                }
            });
            match verdict {
                BatchVerdict::NeedLookups(missing) => {
                    assert!(missing.len() <= LOOKUPS_PER_ROUND_MAX);
                    learned
                        .borrow_mut()
                        .extend(missing.into_iter().map(|(_, id)| id));
                }
                other => break other,
            }
        };
        assert_eq!(verdict, BatchVerdict::Accepted);
        assert!(rounds <= VALIDATION_ROUNDS_MAX, "{rounds} rounds");
    }

    #[test]
    fn subjects_follow_the_strategies() {
        assert_eq!(
            topic_subject("orders", Part::Value, SubjectStrategy::TopicName).as_deref(),
            Some("orders-value")
        );
        assert_eq!(
            topic_subject("orders", Part::Value, SubjectStrategy::RecordName),
            None
        );
        assert_eq!(
            record_subject(
                "orders",
                Part::Key,
                SubjectStrategy::RecordName,
                "shop.Order"
            ),
            "shop.Order"
        );
        assert_eq!(
            record_subject(
                "orders",
                Part::Value,
                SubjectStrategy::TopicRecordName,
                "shop.Order"
            ),
            "orders-shop.Order"
        );
    }
}
