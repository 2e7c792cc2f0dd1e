//! Schema-ID validation of a batch: every record's key and/or value must carry Confluent
//! framing with a schema ID registered for the topic's subject. Pure: the caller supplies an
//! oracle that knows (from its cache) whether an ID is allowed, and is told which IDs it must
//! still look up when the oracle does not know.

use std::collections::BTreeSet;

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

/// The outcome of checking a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchVerdict {
    Accepted,
    Refused(ValidationFailure),
    /// The oracle must learn these (part, schema ID) pairs first.
    NeedLookups(BTreeSet<(Part, u32)>),
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
pub fn validate_batch(
    batch: &BatchView<'_>,
    validation: &SchemaValidation,
    oracle: impl Fn(Part, u32) -> Verdict,
) -> BatchVerdict {
    if !validation.key && !validation.value {
        return BatchVerdict::Accepted;
    }
    let mut unknown = BTreeSet::new();
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
            match oracle(part, id) {
                Verdict::Allowed => {}
                Verdict::Unknown => {
                    unknown.insert((part, id));
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

#[cfg(test)]
mod tests {
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
            BatchVerdict::NeedLookups([(Part::Value, 9)].into())
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
