//! `herald produce` and `herald consume`: JSON lines in and out, through the topic's schema.
//!
//! Produce reads one JSON value per stdin line, encodes it with the subject's latest schema
//! (Avro JSON, or the Protobuf JSON mapping) behind Confluent's framing, and sends it with
//! the SDK's idempotent producer. Consume prints one JSON object per record:
//! `{"partition", "offset", "timestamp", "key", "value"}` with the value decoded through the
//! schema its ID names.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald::consumer::{
    ConsumedRecord, ConsumerConfig, FetchedBuffer, HandlerError, RawConsumer, ResetPolicy,
};
use herald::producer::{ProducerConfig, RawProducer};
use herald::schemas::Schemas;
use herald_registry_client::Version;
use herald_wire::batch::batches;
use herald_wire::messages::OffsetSpec;
use serde_json::json;

use crate::admin::{BrokerArgs, StreamRegistryArgs};

/// Longest stdin line `produce` accepts.
pub(crate) const LINE_BYTES_MAX: usize = 1024 * 1024;
/// Delivery reports `produce` keeps before waiting for the oldest (the producer's own
/// buffer bounds bytes; this bounds the reports of a long stdin).
pub(crate) const PENDING_DELIVERIES_MAX: usize = 10_000;

#[derive(clap::Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    registry: StreamRegistryArgs,
    topic: String,
    /// Subject whose latest schema encodes the values (default `<topic>-value`).
    #[arg(long)]
    subject: Option<String>,
    /// Protobuf: the message to write (default: the file's first message).
    #[arg(long)]
    message: Option<String>,
    /// A top-level field of each value used as the record key (same key, same partition).
    #[arg(long)]
    key_field: Option<String>,
    /// A top-level field whose value becomes the record's idempotency-key header (consumer
    /// inboxes and a topic's dedup window drop repeats).
    #[arg(long)]
    idempotency_field: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    registry: StreamRegistryArgs,
    topic: String,
    /// Consume as a member of this group (committing offsets); without it, read every
    /// partition directly.
    #[arg(long)]
    group: Option<String>,
    /// Where to start without a committed offset: earliest, latest or a timestamp (ms).
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop after this many records (default: follow until interrupted).
    #[arg(long)]
    count: Option<u64>,
}

/// `herald produce TOPIC`.
pub(crate) async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let schemas = Schemas::new(args.registry.client()?);
    let subject = args
        .subject
        .clone()
        .unwrap_or_else(|| format!("{}-value", args.topic));
    let latest = schemas
        .registry()
        .version(&subject, Version::Latest)
        .await
        .with_context(|| format!("no schema for subject '{subject}' (register one first)"))?;
    let schema = schemas
        .dynamic(latest.id, args.message.as_deref())
        .await
        .with_context(|| format!("schema {} of {subject}", latest.id))?;
    let router = args.broker.router().await?;
    let producer = RawProducer::with_router(router, &args.topic, ProducerConfig::default())
        .await
        .with_context(|| format!("cannot produce to '{}'", args.topic))?;
    let mut deliveries = std::collections::VecDeque::new();
    let mut delivered = 0usize;
    let mut failure = None;
    let stdin = std::io::stdin();
    for (number, line) in stdin.lock().lines().enumerate() {
        let line_number = number + 1;
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > LINE_BYTES_MAX {
            failure = Some(format!(
                "line {line_number}: {} bytes, more than {LINE_BYTES_MAX}",
                line.len()
            ));
            break;
        }
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                failure = Some(format!("line {line_number}: not JSON: {e}"));
                break;
            }
        };
        let field_text = |field: &str| match value.get(field) {
            Some(serde_json::Value::String(s)) => Some(s.clone().into_bytes()),
            Some(other) => Some(other.to_string().into_bytes()),
            None => None,
        };
        let key = match &args.key_field {
            Some(field) => match field_text(field) {
                Some(key) => Some(key),
                None => {
                    failure = Some(format!(
                        "line {line_number}: no field '{field}' for the key"
                    ));
                    break;
                }
            },
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(field) = &args.idempotency_field {
            match field_text(field) {
                Some(id) => headers.push(herald_wire::batch::Header {
                    key: herald_wire::headers::IDEMPOTENCY_KEY.to_owned(),
                    value: id,
                }),
                None => {
                    failure = Some(format!(
                        "line {line_number}: no field '{field}' for the idempotency key"
                    ));
                    break;
                }
            }
        }
        let payload = match schema.encode_json(&value) {
            Ok(payload) => payload,
            Err(e) => {
                failure = Some(format!(
                    "line {line_number}: does not match schema {}: {e}",
                    schema.id()
                ));
                break;
            }
        };
        deliveries.push_back(producer.send(key, Some(payload), headers).await?);
        if deliveries.len() > PENDING_DELIVERIES_MAX {
            if let Some(oldest) = deliveries.pop_front() {
                oldest.await.context("a record was not delivered")?;
                delivered += 1;
            }
        }
    }
    // Whatever was accepted before a bad line is still delivered.
    producer.flush().await;
    for delivery in deliveries {
        delivery.await.context("a record was not delivered")?;
        delivered += 1;
    }
    eprintln!(
        "produced {delivered} record(s) to {} with schema {}",
        args.topic,
        schema.id()
    );
    match failure {
        Some(message) => anyhow::bail!("{message} (stopped there; earlier lines were produced)"),
        None => Ok(()),
    }
}

/// Decodes and renders one record as a JSON line.
async fn render(schemas: &Schemas, record: &ConsumedRecord) -> String {
    let value = match record.value() {
        None => serde_json::Value::Null,
        Some(payload) => match herald::codec::schema_id(payload) {
            Ok(id) => match schemas.dynamic(id, None).await {
                Ok(schema) => schema
                    .decode_json(payload)
                    .unwrap_or_else(|e| json!({"error": e.to_string()})),
                Err(e) => json!({"error": e.to_string()}),
            },
            Err(_) => json!({"raw": String::from_utf8_lossy(payload)}),
        },
    };
    json!({
        "partition": record.partition(),
        "offset": record.offset(),
        "timestamp": record.timestamp_ms(),
        "key": record.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "value": value,
    })
    .to_string()
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// `herald consume TOPIC`.
pub(crate) async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let spec = match args.from.as_str() {
        "earliest" => OffsetSpec::Earliest,
        "latest" => OffsetSpec::Latest,
        other => OffsetSpec::Timestamp(other.parse().with_context(|| {
            format!("--from must be earliest, latest or a timestamp in ms, not '{other}'")
        })?),
    };
    let schemas = Arc::new(Schemas::new(args.registry.client()?));
    let client = args.broker.client().await?;
    let limit = args.count.unwrap_or(u64::MAX);
    if let Some(group) = &args.group {
        let mut config = ConsumerConfig::new(group.clone(), args.topic.clone());
        config.reset = match spec {
            OffsetSpec::Latest => ResetPolicy::Latest,
            OffsetSpec::Timestamp(ms) => ResetPolicy::Timestamp(ms),
            OffsetSpec::Earliest => ResetPolicy::Earliest,
        };
        let printed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = {
            let printed = printed.clone();
            async move {
                while printed.load(std::sync::atomic::Ordering::SeqCst) < limit {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let consumer = RawConsumer::new(client, config);
        consumer
            .run(
                |record| {
                    let (schemas, printed) = (schemas.clone(), printed.clone());
                    async move {
                        if printed.load(std::sync::atomic::Ordering::SeqCst) >= limit {
                            // Count reached: never handled, so never committed; `stop` ends
                            // the run (and drops this wait) before anything else happens.
                            std::future::pending::<()>().await;
                        }
                        print_line(&render(&schemas, &record).await)
                            .map_err(|e| HandlerError::Fatal(e.to_string()))?;
                        printed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok(())
                    }
                },
                stop,
            )
            .await?;
        return Ok(());
    }
    let description = client.describe_topic(&args.topic).await?;
    let mut positions = Vec::new();
    for partition in &description.partitions {
        let (offset, _) = client
            .list_offsets(&args.topic, partition.partition, spec)
            .await?;
        positions.push((partition.partition, offset));
    }
    let mut printed = 0u64;
    while printed < limit {
        let mut progressed = false;
        for (partition, offset) in &mut positions {
            let wait = if description.partitions.len() == 1 {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
            let fetched = client
                .fetch(&args.topic, *partition, *offset, 1 << 20, wait, 1)
                .await?;
            let source = FetchedBuffer::new(args.topic.as_str(), *partition, fetched.batches);
            for view in batches(source.bytes()) {
                let view = view?;
                if view.is_control() {
                    // A replicated partition's own batch: nothing to print, its offsets passed.
                    if printed < limit && view.next_offset() > *offset {
                        *offset = view.next_offset();
                        progressed = true;
                    }
                    continue;
                }
                for (index, record) in view.records().enumerate() {
                    let record_offset = view.base_offset() + index as i64;
                    let record = record?;
                    if record_offset < *offset || printed >= limit {
                        continue;
                    }
                    let consumed = ConsumedRecord::from_view(&source, record_offset, &record)
                        .context("a fetched record outside its buffer")?;
                    print_line(&render(&schemas, &consumed).await)?;
                    printed += 1;
                    *offset = record_offset + 1;
                    progressed = true;
                }
            }
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
