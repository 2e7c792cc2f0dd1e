//! Dead-lettering: a record that cannot be processed goes to the dead-letter topic with the
//! failure headers (or fails the run when dead-lettering is disabled); a corrupt batch stops
//! the run, or goes there whole as raw bytes and is skipped ([`CorruptBatchPolicy`]).

use std::time::Duration;

use herald_broker_client::RequestError;
use herald_wire::batch::{BatchBuilder, Header, Record};
use herald_wire::groups::TopicPartition;
use herald_wire::limits::VALUE_BYTES_MAX;
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::{headers, ErrorCode};

use super::core::ConsumerCore;
use super::fetched::{base_offset_of, CorruptRange, Corruption};
use super::run::now_ms;
use super::{
    ConsumeError, ConsumedRecord, CorruptBatchPolicy, DeadLetter, FetchedBuffer, RawConsumer,
    CORRUPT_BATCH_ERROR_KIND, DLQ_BATCH_OFFSET_HEADER, DLQ_CHUNKS_HEADER, DLQ_CHUNK_HEADER,
    DLQ_LAST_OFFSET_HEADER, DLQ_MESSAGE_BYTES_MAX,
};

/// Most bytes of a corrupt batch one dead letter carries (a record value's limit); a larger
/// batch is split over several.
const CORRUPT_BATCH_CHUNK_BYTES: usize = VALUE_BYTES_MAX;

/// `reason` cut to at most [`DLQ_MESSAGE_BYTES_MAX`] bytes (on a character boundary).
fn dead_letter_message(reason: &str) -> String {
    let mut message = reason.to_owned();
    if message.len() > DLQ_MESSAGE_BYTES_MAX {
        let mut cut = DLQ_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

impl RawConsumer {
    pub(super) fn unprocessable(&self, record: &ConsumedRecord, reason: String) -> ConsumeError {
        ConsumeError::Unprocessable {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            reason,
        }
    }

    /// The dead-letter topic for records of `topic`; `None` when dead-lettering is disabled.
    fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        match &self.config.dead_letter {
            DeadLetter::Disabled => None,
            DeadLetter::Default => Some(format!("{topic}.dlq")),
            DeadLetter::Topic(topic) => Some(topic.clone()),
        }
    }

    pub(super) async fn dead_letter(
        &self,
        record: &ConsumedRecord,
        kind: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumeError> {
        let Some(topic) = self.dead_letter_topic(record.topic()) else {
            return Err(self.unprocessable(record, reason.to_owned()));
        };
        let message = dead_letter_message(reason);
        // Failure headers replace earlier ones when a dead letter is dead-lettered again.
        let mut headers: Vec<Header> = record
            .headers()
            .iter()
            .filter(|(key, _)| !key.starts_with(headers::DLQ_PREFIX))
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.to_vec(),
            })
            .collect();
        for (key, value) in [
            (headers::DLQ_TOPIC, record.topic().to_owned()),
            (headers::DLQ_PARTITION, record.partition().to_string()),
            (headers::DLQ_OFFSET, record.offset().to_string()),
            (headers::DLQ_TIMESTAMP, record.timestamp_ms().to_string()),
            (headers::DLQ_GROUP, self.config.group.clone()),
            (headers::DLQ_ERROR_KIND, kind.to_owned()),
            (headers::DLQ_ERROR_MESSAGE, message),
            (headers::DLQ_ATTEMPTS, attempts.to_string()),
        ] {
            headers.push(Header {
                key: key.to_owned(),
                value: value.into_bytes(),
            });
        }
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: record.timestamp_ms(),
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers,
        });
        let batch = builder
            .encode()
            .map_err(|e| self.unprocessable(record, e.to_string()))?;
        self.produce_dead_letter(&topic, batch).await
    }

    /// Appends `batch` to partition 0 of the dead-letter topic `topic`, durably, creating
    /// the topic on first use.
    async fn produce_dead_letter(&self, topic: &str, batch: Vec<u8>) -> Result<(), ConsumeError> {
        match self
            .client
            .produce(topic, 0, Durability::Fsync, batch.clone())
            .await
        {
            Err(RequestError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }) => {
                match self
                    .client
                    .create_topic(topic, TopicConfig::default())
                    .await
                {
                    Ok(())
                    | Err(RequestError::Broker {
                        code: ErrorCode::TopicAlreadyExists,
                        ..
                    }) => {}
                    Err(error) => return Err(error.into()),
                }
                self.client
                    .produce(topic, 0, Durability::Fsync, batch)
                    .await?;
            }
            result => {
                result?;
            }
        }
        Ok(())
    }

    /// Acts on the corrupt batch `corruption` of `partition`, read from `source` (fetched
    /// when the partition ended at `high_watermark`), which the handler got up to (every
    /// record before it was handled). Under [`CorruptBatchPolicy::SkipToDeadLetter`], with a
    /// dead-letter topic and a range that can be relied on, its bytes go to the dead-letter
    /// topic and the core moves past it (`Ok`; the caller commits); otherwise the run's
    /// error. Counted under `herald_consumer_corrupt_batches_total` either way. A request
    /// failing on the way is the round's error (recovered from as any other: the batch is
    /// met again by the fetch after).
    pub(super) async fn corrupt_batch(
        &self,
        partition: &TopicPartition,
        source: &FetchedBuffer,
        corruption: &Corruption,
        high_watermark: i64,
        core: &mut ConsumerCore,
    ) -> Result<(), ConsumeError> {
        let not_skipped = match self.config.on_corrupt_batch {
            CorruptBatchPolicy::Stop => None,
            CorruptBatchPolicy::SkipToDeadLetter => {
                match (self.dead_letter_topic(&partition.topic), &corruption.skip) {
                    (None, _) => Some("dead-lettering is disabled"),
                    (Some(_), Err(why)) => Some(*why),
                    (Some(topic), Ok(range)) => {
                        if self
                            .corrupt_batch_end_confirmed(partition, range, high_watermark)
                            .await?
                        {
                            self.dead_letter_corrupt_batch(
                                &topic, partition, source, corruption, range,
                            )
                            .await?;
                            self.count_corrupt_batch(partition, "dead-lettered");
                            core.on_skipped(partition, range.next_offset);
                            return Ok(());
                        }
                        Some("the batch after it does not start where its header says it ends")
                    }
                }
            }
        };
        self.count_corrupt_batch(partition, "stopped");
        let mut reason = corruption.reason.clone();
        if let Some(why) = not_skipped {
            reason.push_str("; not skipped to the dead-letter topic: ");
            reason.push_str(why);
        }
        Err(ConsumeError::CorruptBatch {
            topic: partition.topic.clone(),
            partition: partition.partition,
            offset: corruption.offset,
            reason,
        })
    }

    fn count_corrupt_batch(&self, partition: &TopicPartition, action: &'static str) {
        // Rare: a handle registered here, not once per partition.
        metrics::counter!(
            crate::metrics::CONSUMER_CORRUPT_BATCHES,
            "topic" => partition.topic.clone(),
            "group" => self.config.group.clone(),
            "partition" => partition.partition.to_string(),
            "action" => action,
        )
        .increment(1);
    }

    /// Whether the corrupt batch `range` of `partition` ends where its header says (its
    /// record count is inside the checksum that failed): the batch after it in the fetch
    /// started there, or the partition ended there (`high_watermark`, when fetched), or the
    /// batch the broker serves from there starts there.
    async fn corrupt_batch_end_confirmed(
        &self,
        partition: &TopicPartition,
        range: &CorruptRange,
        high_watermark: i64,
    ) -> Result<bool, ConsumeError> {
        if range.end_confirmed || range.next_offset == high_watermark {
            return Ok(true);
        }
        if range.next_offset > high_watermark {
            return Ok(false);
        }
        // One byte asked for: the broker serves the first batch whole.
        match self
            .client
            .connection()
            .fetch(
                &partition.topic,
                partition.partition,
                range.next_offset,
                1,
                Duration::ZERO,
                1,
            )
            .await
        {
            Ok(fetched) => Ok(if fetched.batches.is_empty() {
                range.next_offset == fetched.high_watermark
            } else {
                base_offset_of(&fetched.batches) == Some(range.next_offset)
            }),
            Err(RequestError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                ..
            }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Sends the raw bytes of the corrupt batch `range` of `partition` (from `source`) to
    /// the dead-letter topic `topic`: one dead letter per [`CORRUPT_BATCH_CHUNK_BYTES`],
    /// with the failure headers naming the source and the offsets skipped. Sent again whole
    /// if the run fails before moving past it (at-least-once).
    async fn dead_letter_corrupt_batch(
        &self,
        topic: &str,
        partition: &TopicPartition,
        source: &FetchedBuffer,
        corruption: &Corruption,
        range: &CorruptRange,
    ) -> Result<(), ConsumeError> {
        let bytes = source
            .bytes()
            .get(range.start..range.end)
            .unwrap_or_default();
        let chunks: Vec<&[u8]> = bytes.chunks(CORRUPT_BATCH_CHUNK_BYTES).collect();
        let count = chunks.len();
        let message = dead_letter_message(&corruption.reason);
        let timestamp_ms = now_ms();
        for (index, chunk) in chunks.into_iter().enumerate() {
            let headers: Vec<Header> = [
                (headers::DLQ_TOPIC, partition.topic.clone()),
                (headers::DLQ_PARTITION, partition.partition.to_string()),
                (headers::DLQ_OFFSET, corruption.offset.to_string()),
                (DLQ_BATCH_OFFSET_HEADER, range.base_offset.to_string()),
                (DLQ_LAST_OFFSET_HEADER, (range.next_offset - 1).to_string()),
                (headers::DLQ_GROUP, self.config.group.clone()),
                (headers::DLQ_ERROR_KIND, CORRUPT_BATCH_ERROR_KIND.to_owned()),
                (headers::DLQ_ERROR_MESSAGE, message.clone()),
                (headers::DLQ_ATTEMPTS, "0".to_owned()),
                (DLQ_CHUNK_HEADER, index.to_string()),
                (DLQ_CHUNKS_HEADER, count.to_string()),
            ]
            .into_iter()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.into_bytes(),
            })
            .collect();
            let mut builder = BatchBuilder::new();
            builder.push(Record {
                timestamp_ms,
                key: None,
                value: Some(chunk.to_vec()),
                headers,
            });
            let batch = builder.encode().map_err(|e| ConsumeError::CorruptBatch {
                topic: partition.topic.clone(),
                partition: partition.partition,
                offset: corruption.offset,
                reason: format!(
                    "{}; cannot be written to the dead-letter topic: {e}",
                    corruption.reason
                ),
            })?;
            self.produce_dead_letter(topic, batch).await?;
        }
        Ok(())
    }
}
