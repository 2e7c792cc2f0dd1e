//! SDK benchmarks: typed end-to-end throughput (`Producer<T>` / `Consumer<T>` with registry
//! framing, idempotency keys, batching and acknowledgements) against the raw wire client
//! (pre-encoded batches on an ordered pipeline) in the same run, alternating rounds; and the
//! per-message cost of the SDK's serialize + frame against bare prost / apache-avro encoding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use herald::codec::WriterSchema;
use herald::{Client, ClientConfig, Message, Trust};
use herald_broker_client::BrokerClient;
use herald_wire::batch::{batches, BatchWriter};
use herald_wire::messages::{Durability, TopicConfig};
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Clone)]
pub(crate) struct Options {
    /// Records per phase and round.
    #[arg(long, default_value_t = 300_000)]
    records: usize,
    /// on: the broker requires authentication and the bench connects as a user whose requests
    /// are checked against ACLs; off: `--insecure-no-auth`.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    auth: String,
    /// Alternating rounds of raw and typed; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Messages encoded per codec in the per-message overhead phase.
    #[arg(long, default_value_t = 200_000)]
    encode_messages: usize,
}

const ORDERS_PROTO: &str = r#"syntax = "proto3";
package bench.v1;
message OrderCreated {
  string order_id = 1;
  string customer_id = 2;
  int64 total_cents = 3;
  string currency = 4;
  repeated string skus = 5;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct OrderCreated {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(string, tag = "2")]
    customer_id: String,
    #[prost(int64, tag = "3")]
    total_cents: i64,
    #[prost(string, tag = "4")]
    currency: String,
    #[prost(string, repeated, tag = "5")]
    skus: Vec<String>,
}
herald::protobuf_message!(OrderCreated, "bench.v1.OrderCreated", ORDERS_PROTO);

const PAYMENT_AVSC: &str = r#"{"type":"record","name":"Payment","namespace":"bench","fields":[
  {"name":"payment_id","type":"string"},{"name":"order_id","type":"string"},
  {"name":"amount_cents","type":"long"},{"name":"currency","type":"string"},
  {"name":"note","type":["null","string"],"default":null}]}"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    payment_id: String,
    order_id: String,
    amount_cents: i64,
    currency: String,
    note: Option<String>,
}
herald::avro_message!(Payment, "bench.Payment", PAYMENT_AVSC);

fn order(n: usize) -> OrderCreated {
    OrderCreated {
        order_id: format!("order-{n:010}"),
        customer_id: format!("customer-{:06}", n % 100_000),
        total_cents: n as i64 * 7,
        currency: "EUR".into(),
        skus: vec!["sku-0001".into(), "sku-0002".into()],
    }
}

fn payment(n: usize) -> Payment {
    Payment {
        payment_id: format!("payment-{n:010}"),
        order_id: format!("order-{n:010}"),
        amount_cents: n as i64 * 7,
        currency: "EUR".into(),
        note: None,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    encode_overhead(options.encode_messages)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(end_to_end(&options))
}

/// Nanoseconds per call of `f` over `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    Ok(started.elapsed().as_nanos() as f64 / n as f64)
}

fn encode_overhead(n: usize) -> anyhow::Result<()> {
    use prost::Message as _;
    let orders: Vec<OrderCreated> = (0..1024).map(order).collect();
    let payments: Vec<Payment> = (0..1024).map(payment).collect();
    let proto_writer = WriterSchema::new(1, &OrderCreated::SCHEMA, ORDERS_PROTO, &[])?;
    let avro_writer = WriterSchema::new(2, &Payment::SCHEMA, PAYMENT_AVSC, &[])?;
    let avro_schema = apache_avro::Schema::parse_str(PAYMENT_AVSC)?;
    let mut buffer = Vec::with_capacity(256);
    let mut rounds = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        rounds.0.push(per_call(n, |i| {
            buffer.clear();
            orders[i % 1024].encode(&mut buffer)?;
            Ok(())
        })?);
        rounds.1.push(per_call(n, |i| {
            buffer.clear();
            proto_writer.write_prefix(&mut buffer);
            Message::encode_body(&orders[i % 1024], &proto_writer, &mut buffer)?;
            Ok(())
        })?);
        let datum_writer =
            apache_avro::writer::datum::GenericDatumWriter::builder(&avro_schema).build()?;
        rounds.2.push(per_call(n, |i| {
            buffer.clear();
            datum_writer.write_ser(&mut buffer, &payments[i % 1024])?;
            Ok(())
        })?);
        rounds.3.push(per_call(n, |i| {
            buffer.clear();
            avro_writer.write_prefix(&mut buffer);
            Message::encode_body(&payments[i % 1024], &avro_writer, &mut buffer)?;
            Ok(())
        })?);
    }
    let (bare_proto, sdk_proto) = (median(rounds.0), median(rounds.1));
    let (bare_avro, sdk_avro) = (median(rounds.2), median(rounds.3));
    println!(
        "phase=encode codec=protobuf bare_prost_ns={bare_proto:.0} sdk_ns={sdk_proto:.0} overhead_ns={:.0} ratio={:.2}",
        sdk_proto - bare_proto,
        sdk_proto / bare_proto
    );
    println!(
        "phase=encode codec=avro bare_apache_avro_ns={bare_avro:.0} sdk_ns={sdk_avro:.0} overhead_ns={:.0} ratio={:.2}",
        sdk_avro - bare_avro,
        sdk_avro / bare_avro
    );
    Ok(())
}

fn start_registry() -> anyhow::Result<(crate::broker::BenchProcess, String)> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(crate::broker::herald_binary()?)
        .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("herald registry listening on ")
        .context("no address line")?
        .to_owned();
    Ok((crate::broker::BenchProcess::new(child, dir), url))
}

async fn end_to_end(options: &Options) -> anyhow::Result<()> {
    let (_registry, registry_url) = start_registry()?;
    let broker = crate::broker::start_broker_as_user(3000, options.auth == "on").await?;
    let client = Client::connect(
        ClientConfig::new(
            broker.addr,
            Trust::Fingerprint(broker.fingerprint.clone()),
            registry_url,
        )
        .with_credentials(broker.credentials.clone()),
    )
    .await?;
    let n = options.records;
    println!(
        "# sdk: {n} records per phase, {} alternating rounds, 1 partition, durability memory, auth {}",
        options.rounds, options.auth
    );
    let mut results: [Vec<f64>; 7] = Default::default();
    for round in 0..options.rounds {
        let raw_topic = format!("raw-{round}");
        let typed_topic = format!("typed-{round}");
        let raw_e2e_topic = format!("raw-e2e-{round}");
        let typed_e2e_topic = format!("typed-e2e-{round}");
        for topic in [&raw_topic, &typed_topic, &raw_e2e_topic, &typed_e2e_topic] {
            client
                .broker()
                .create_topic(
                    topic,
                    TopicConfig {
                        retention: None,
                        ..TopicConfig::default()
                    },
                )
                .await?;
        }
        // Each phase runs as a task, as application code does.
        let (c, t) = (client.clone(), raw_topic.clone());
        results[0].push(tokio::spawn(async move { raw_produce(c.broker(), &t, n).await }).await??);
        let (c, t) = (client.clone(), typed_topic.clone());
        results[1].push(tokio::spawn(async move { typed_produce(&c, &t, n).await }).await??);
        let (c, t) = (client.clone(), raw_topic.clone());
        results[2].push(
            tokio::spawn(async move {
                let (started, finished) = raw_consume(c.broker(), &t, n).await?;
                Ok::<_, anyhow::Error>(n as f64 / (finished - started).as_secs_f64())
            })
            .await??,
        );
        let (c, t) = (client.clone(), typed_topic.clone());
        results[3].push(
            tokio::spawn(async move {
                typed_consume(&c, &t, &format!("bench-{round}"), n)
                    .await?
                    .rate()
            })
            .await??,
        );
        let (c, t) = (client.clone(), typed_topic.clone());
        results[4].push(
            tokio::spawn(async move { raw_consumer_consume(&c, &t, n, round).await }).await??,
        );
        results[5].push(producer_to_consumer(&client, false, &raw_e2e_topic, n).await?);
        results[6].push(producer_to_consumer(&client, true, &typed_e2e_topic, n).await?);
    }
    let [raw_p, typed_p, raw_c, typed_c, raw_consumer_c, raw_e2e, typed_e2e] = results.map(median);
    println!(
        "phase=produce raw_records_per_s={raw_p:.0} typed_records_per_s={typed_p:.0} typed_vs_raw={:.2}",
        typed_p / raw_p
    );
    println!(
        "phase=consume raw_records_per_s={raw_c:.0} typed_records_per_s={typed_c:.0} typed_vs_raw={:.2} raw_consumer_records_per_s={raw_consumer_c:.0} raw_consumer_vs_raw={:.2}",
        typed_c / raw_c,
        raw_consumer_c / raw_c
    );
    println!(
        "phase=end_to_end raw_records_per_s={raw_e2e:.0} typed_records_per_s={typed_e2e:.0} typed_vs_raw={:.2}",
        typed_e2e / raw_e2e
    );
    Ok(())
}

/// Producer and consumer at once: the consumer (raw fetch loop, or `Consumer<T>` in a group)
/// is started first and given time to join and long-poll; then the producer (raw pipeline,
/// or `Producer<T>`) sends `n` records. Rate = `n` / time from the producer's start to the
/// consumer's `n`-th record.
async fn producer_to_consumer(
    client: &Client,
    typed: bool,
    topic: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let (c, t) = (client.clone(), topic.to_owned());
    let consumer = tokio::spawn(async move {
        if typed {
            typed_consume(&c, &t, &format!("e2e-{t}"), n)
                .await?
                .finished()
        } else {
            Ok(raw_consume(c.broker(), &t, n).await?.1)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (c, t) = (client.clone(), topic.to_owned());
    let producer = tokio::spawn(async move {
        if typed {
            typed_produce(&c, &t, n).await
        } else {
            raw_produce(c.broker(), &t, n).await
        }
    });
    producer.await??;
    let finished = consumer.await??;
    Ok(n as f64 / (finished - started).as_secs_f64())
}

/// The raw wire client doing by hand what the typed producer does for the application, as
/// well as it can: the same messages encoded with prost behind the same framing, the same
/// UUIDv7 idempotency-key header and wall-clock timestamps, so the same records go over the
/// wire; records encoded straight into the batch (`BatchWriter`), batches of 1000,
/// idempotent, eight in flight on one ordered pipeline.
async fn raw_produce(client: &BrokerClient, topic: &str, n: usize) -> anyhow::Result<f64> {
    use prost::Message as _;
    let writer = WriterSchema::new(1, &OrderCreated::SCHEMA, ORDERS_PROTO, &[])?;
    let producer = client.init_producer("").await?;
    let pipeline = client.pipeline().await?;
    let started = Instant::now();
    let mut waiting = std::collections::VecDeque::new();
    let mut value = Vec::with_capacity(64);
    for first in (0..n).step_by(1000) {
        if waiting.len() >= 8 {
            let answer: tokio::sync::oneshot::Receiver<_> =
                waiting.pop_front().context("window")?;
            crate::broker::check_produced(answer.await??)?;
        }
        let mut batch = BatchWriter::new();
        for i in first..(first + 1000).min(n) {
            value.clear();
            writer.write_prefix(&mut value);
            order(i).encode(&mut value)?;
            let mut key = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let key = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut key);
            let timestamp_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            batch.push(
                timestamp_ms,
                None,
                Some(&value),
                [(herald_wire::headers::IDEMPOTENCY_KEY, key.as_bytes())].into_iter(),
            )?;
        }
        let batch = batch.finish(Some(herald_wire::batch::ProducerStamp {
            id: producer.0,
            epoch: producer.1,
            base_sequence: first as i32,
        }))?;
        let request = herald_wire::Request::Produce {
            topic: topic.into(),
            partition: 0,
            durability: Durability::Memory,
            batch: batch.into(),
        };
        waiting.push_back(pipeline.send(&request).await?);
    }
    while let Some(answer) = waiting.pop_front() {
        crate::broker::check_produced(answer.await??)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `Producer<OrderCreated>::send` per message, every delivery awaited.
async fn typed_produce(client: &Client, topic: &str, n: usize) -> anyhow::Result<f64> {
    let producer = client.producer::<OrderCreated>(topic).await?;
    let started = Instant::now();
    let mut deliveries = std::collections::VecDeque::with_capacity(n);
    for i in 0..n {
        deliveries.push_back(producer.send(&order(i)).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Fetches and decodes every record (framing skipped, prost decode), no group: (started,
/// finished).
async fn raw_consume(
    client: &BrokerClient,
    topic: &str,
    n: usize,
) -> anyhow::Result<(Instant, Instant)> {
    let started = Instant::now();
    let mut consumed = 0usize;
    let mut offset = 0i64;
    while consumed < n {
        let fetched = client
            .fetch(topic, 0, offset, 4 << 20, Duration::from_millis(100), 1)
            .await?;
        for view in batches(&fetched.batches) {
            let view = view?;
            if view.is_control() {
                offset = view.next_offset();
                continue;
            }
            for record in view.records() {
                // What a raw client must do itself: skip the framing, decode the message.
                let value = record?.value.unwrap_or_default();
                let message =
                    <OrderCreated as prost::Message>::decode(value.get(6..).unwrap_or_default())?;
                std::hint::black_box(&message);
                consumed += 1;
            }
            offset = view.next_offset();
        }
    }
    Ok((started, Instant::now()))
}

/// Counts handled records for a consumer run: `stop` completes at `n`; the rate is taken
/// from the first record handled to the `n`-th (joining the group is not throughput).
#[derive(Clone)]
struct Tally {
    seen: Arc<AtomicUsize>,
    first: Arc<std::sync::OnceLock<Instant>>,
    done: Arc<std::sync::OnceLock<Instant>>,
    n: usize,
}

impl Tally {
    fn new(n: usize) -> Self {
        Self {
            seen: Arc::default(),
            first: Arc::default(),
            done: Arc::default(),
            n,
        }
    }

    /// Call once per record handled.
    fn handled(&self) {
        self.first.get_or_init(Instant::now);
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
            let _ = self.done.set(Instant::now());
        }
    }

    fn stop(&self) -> impl std::future::Future<Output = ()> {
        let (seen, n) = (self.seen.clone(), self.n);
        async move {
            while seen.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// When the `n`-th record was handled.
    fn finished(&self) -> anyhow::Result<Instant> {
        self.done
            .get()
            .copied()
            .context("not every record consumed")
    }

    fn rate(&self) -> anyhow::Result<f64> {
        let first = self.first.get().context("nothing consumed")?;
        Ok(self.n as f64 / (self.finished()? - *first).as_secs_f64())
    }
}

/// `Consumer<OrderCreated>::run` in a group: decode, handler, commit per fetch.
async fn typed_consume(
    client: &Client,
    topic: &str,
    group: &str,
    n: usize,
) -> anyhow::Result<Tally> {
    let mut config = herald::consumer::ConsumerConfig::new(group, topic);
    config.fetch_bytes_max = 4 << 20;
    let consumer = client.consumer_with::<OrderCreated>(config);
    let tally = Tally::new(n);
    let counter = tally.clone();
    let summary = consumer
        .run(
            move |event: herald::Event<OrderCreated>| {
                std::hint::black_box(&event.message);
                counter.handled();
                std::future::ready(Ok(()))
            },
            tally.stop(),
        )
        .await?;
    anyhow::ensure!(
        summary.dead_lettered == 0,
        "typed consume dead-lettered {}",
        summary.dead_lettered
    );
    Ok(tally)
}

/// The SDK's `RawConsumer` (group, lanes, breaker, commits) with a handler that only decodes
/// the payload with prost: where the consumer machinery's cost shows, without `Consumer<T>`.
async fn raw_consumer_consume(
    client: &Client,
    topic: &str,
    n: usize,
    round: usize,
) -> anyhow::Result<f64> {
    let mut config = herald::consumer::ConsumerConfig::new(format!("bench-raw-{round}"), topic);
    config.fetch_bytes_max = 4 << 20;
    let consumer = herald::RawConsumer::new(client.broker().clone(), config);
    let tally = Tally::new(n);
    let counter = tally.clone();
    consumer
        .run(
            move |record: herald::consumer::ConsumedRecord| {
                let value = record.value().unwrap_or_default();
                let decoded =
                    <OrderCreated as prost::Message>::decode(value.get(6..).unwrap_or_default())
                        .map(|message| {
                            std::hint::black_box(&message);
                            counter.handled();
                        })
                        .map_err(|e| herald::HandlerError::Fatal(e.to_string()));
                std::future::ready(decoded)
            },
            tally.stop(),
        )
        .await?;
    tally.rate()
}
