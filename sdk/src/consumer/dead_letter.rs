//! Dead-lettering: a record that cannot be processed goes to the dead-letter topic with the
//! failure headers (or fails the run when dead-lettering is disabled).

use herald_broker_client::RequestError;
use herald_wire::batch::{BatchBuilder, Header, Record};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::{headers, ErrorCode};

use super::{ConsumeError, ConsumedRecord, DeadLetter, RawConsumer, DLQ_MESSAGE_BYTES_MAX};

impl RawConsumer {
    pub(super) fn unprocessable(&self, record: &ConsumedRecord, reason: String) -> ConsumeError {
        ConsumeError::Unprocessable {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            reason,
        }
    }

    pub(super) async fn dead_letter(
        &self,
        record: &ConsumedRecord,
        kind: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumeError> {
        let topic = match &self.config.dead_letter {
            DeadLetter::Disabled => return Err(self.unprocessable(record, reason.to_owned())),
            DeadLetter::Default => format!("{}.dlq", record.topic()),
            DeadLetter::Topic(topic) => topic.clone(),
        };
        let mut message = reason.to_owned();
        if message.len() > DLQ_MESSAGE_BYTES_MAX {
            let mut cut = DLQ_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
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
        match self
            .client
            .produce(&topic, 0, Durability::Fsync, batch.clone())
            .await
        {
            Err(RequestError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }) => {
                match self
                    .client
                    .create_topic(&topic, TopicConfig::default())
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
                    .produce(&topic, 0, Durability::Fsync, batch)
                    .await?;
            }
            result => {
                result?;
            }
        }
        Ok(())
    }
}
