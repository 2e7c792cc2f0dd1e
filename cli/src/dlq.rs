//! `herald dlq list|inspect|replay`: triage dead-lettered records (written by the SDK's
//! consumer to `<topic>.dlq` with `herald.dlq.*` failure headers) and replay a selection back
//! to the original topic after a fix.

use std::time::Duration;

use clap::Subcommand;
use herald_broker_client::BrokerClient;
use herald_wire::batch::{batches, BatchBuilder, Header, Record};
use herald_wire::headers;
use herald_wire::messages::Durability;
use serde_json::json;

use crate::admin::BrokerArgs;

/// Records read from a dead-letter partition per fetch.
const DLQ_FETCH_BYTES: u32 = 4 * 1024 * 1024;

#[derive(clap::Args, Clone)]
pub(crate) struct Selection {
    /// The original topic (its dead letters are in `<topic>.dlq`).
    topic: String,
    /// Dead-letter topic, if not `<topic>.dlq`.
    #[arg(long)]
    dlq: Option<String>,
    /// Only records whose error kind is this (fatal, retries-exhausted, ...).
    #[arg(long)]
    error_kind: Option<String>,
    /// Only records dead-lettered from an original record at or after this time (ms since epoch).
    #[arg(long)]
    since_ms: Option<i64>,
    /// Only records before this time (ms since epoch).
    #[arg(long)]
    until_ms: Option<i64>,
}

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
    /// One line per dead-lettered record: dlq offset, original position, kind, message.
    ///
    /// Example: herald dlq list orders --error-kind fatal
    List {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        selection: Selection,
    },
    /// Every failure header and the payload of the selected records, as JSON lines.
    Inspect {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        selection: Selection,
    },
    /// Send the selected records back to their original topic and partition (without the
    /// failure headers). `--dry-run` only counts.
    ///
    /// Example: herald dlq replay orders --error-kind retries-exhausted --dry-run
    Replay {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        dry_run: bool,
    },
}

struct DeadLetter {
    dlq_offset: i64,
    record: Record,
}

impl DeadLetter {
    fn header(&self, key: &str) -> Option<String> {
        self.record
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    }
}

async fn read(client: &BrokerClient, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
    let topic = selection
        .dlq
        .clone()
        .unwrap_or_else(|| format!("{}.dlq", selection.topic));
    let description = client
        .describe_topic(&topic)
        .await
        .map_err(|e| anyhow::anyhow!("dead-letter topic {topic}: {e}"))?;
    let mut found = Vec::new();
    for partition in description.partitions {
        let mut offset = partition.log_start_offset;
        while offset < partition.high_watermark {
            let fetched = client
                .fetch(
                    &topic,
                    partition.partition,
                    offset,
                    DLQ_FETCH_BYTES,
                    Duration::ZERO,
                    1,
                )
                .await?;
            if fetched.batches.is_empty() {
                break;
            }
            for view in batches(&fetched.batches) {
                let view = view?;
                if view.is_control() {
                    offset = view.next_offset();
                    continue;
                }
                for (index, record) in view.records().enumerate() {
                    let dlq_offset = view.base_offset() + index as i64;
                    if dlq_offset >= offset {
                        found.push(DeadLetter {
                            dlq_offset,
                            record: record?.to_owned_record(),
                        });
                    }
                }
                offset = view.next_offset();
            }
        }
    }
    found.retain(|dead| {
        let kind_ok = selection
            .error_kind
            .as_ref()
            .is_none_or(|kind| dead.header(headers::DLQ_ERROR_KIND).as_ref() == Some(kind));
        let time = dead
            .header(headers::DLQ_TIMESTAMP)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(dead.record.timestamp_ms);
        kind_ok
            && selection.since_ms.is_none_or(|since| time >= since)
            && selection.until_ms.is_none_or(|until| time < until)
    });
    Ok(found)
}

pub(crate) async fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { broker, selection } => {
            let client = broker.client().await?;
            for dead in read(&client, &selection).await? {
                println!(
                    "{}\t{}/{}@{}\t{}\tattempts={}\t{}",
                    dead.dlq_offset,
                    dead.header(headers::DLQ_TOPIC).unwrap_or_default(),
                    dead.header(headers::DLQ_PARTITION).unwrap_or_default(),
                    dead.header(headers::DLQ_OFFSET).unwrap_or_default(),
                    dead.header(headers::DLQ_ERROR_KIND).unwrap_or_default(),
                    dead.header(headers::DLQ_ATTEMPTS).unwrap_or_default(),
                    dead.header(headers::DLQ_ERROR_MESSAGE)
                        .unwrap_or_default()
                        .replace('\n', " "),
                );
            }
        }
        DlqCommand::Inspect { broker, selection } => {
            let client = broker.client().await?;
            for dead in read(&client, &selection).await? {
                let headers: serde_json::Map<String, serde_json::Value> = dead
                    .record
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), json!(String::from_utf8_lossy(&h.value))))
                    .collect();
                let line = json!({
                    "dlq_offset": dead.dlq_offset,
                    "timestamp_ms": dead.record.timestamp_ms,
                    "key": dead.record.key.as_deref().map(String::from_utf8_lossy),
                    "value": dead.record.value.as_deref().map(String::from_utf8_lossy),
                    "headers": headers,
                });
                println!("{line}");
            }
        }
        DlqCommand::Replay {
            broker,
            selection,
            dry_run,
        } => {
            let client = broker.client().await?;
            let selected = read(&client, &selection).await?;
            let total = selected.len();
            if dry_run {
                println!("{total} records would be replayed to {}", selection.topic);
                return Ok(());
            }
            for (done, dead) in selected.into_iter().enumerate() {
                let partition: u32 = dead
                    .header(headers::DLQ_PARTITION)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let headers: Vec<Header> = dead
                    .record
                    .headers
                    .iter()
                    .filter(|h| !h.key.starts_with(headers::DLQ_PREFIX))
                    .cloned()
                    .collect();
                let mut builder = BatchBuilder::new();
                builder.push(Record {
                    headers,
                    ..dead.record
                });
                client
                    .produce(
                        &selection.topic,
                        partition,
                        Durability::Fsync,
                        builder.encode()?,
                    )
                    .await?;
                eprint!("\rreplayed {}/{total}", done + 1);
            }
            if total > 0 {
                eprintln!();
            }
            println!("{total} records replayed to {}", selection.topic);
        }
    }
    Ok(())
}
