//! The typed SDK against real `herald` registry and broker processes: Avro (serde) and
//! Protobuf (prost) messages produced and consumed through the registry, schema evolution
//! resolved on read, a topic that validates schema IDs, an undecodable record dead-lettered
//! with kind `deserialization` while the records behind it are processed, and an
//! idempotency-key header (UUIDv7) on every record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::consumer::HandlerError;
use herald::{Client, Event};
use herald_tests::{assert_each_once, collector, create_validating_topic, drain, servers};
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::headers;
use herald_wire::messages::{Durability, TopicConfig};
use serde::{Deserialize, Serialize};

const PAYMENT_V1: &str = r#"{"type":"record","name":"Payment","namespace":"shop","fields":[
  {"name":"id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"note","type":["null","string"],"default":null}]}"#;
const PAYMENT_V2: &str = r#"{"type":"record","name":"Payment","namespace":"shop","fields":[
  {"name":"id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"currency","type":"string","default":"EUR"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    id: String,
    amount_cents: i64,
    note: Option<String>,
}
herald::avro_message!(Payment, "shop.Payment", PAYMENT_V1);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PaymentV2 {
    id: String,
    amount_cents: i64,
    note: Option<String>,
    currency: String,
}
herald::avro_message!(PaymentV2, "shop.Payment", PAYMENT_V2);

const ORDERS_PROTO: &str = r#"syntax = "proto3";
package shop.v1;

message Customer {
  string id = 1;
}

message OrderCreated {
  string order_id = 1;
  int64 total_cents = 2;
  Customer customer = 3;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct Customer {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OrderCreated {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(int64, tag = "2")]
    total_cents: i64,
    #[prost(message, optional, tag = "3")]
    customer: Option<Customer>,
}
herald::protobuf_message!(OrderCreated, "shop.v1.OrderCreated", ORDERS_PROTO);

/// Runs `consumer` until `expected` events arrived (or 30 s passed) and returns them.
async fn collect<T: herald::Message>(
    consumer: &herald::Consumer<T>,
    expected: usize,
) -> anyhow::Result<(Vec<Event<T>>, herald::consumer::RunSummary)> {
    drain(expected, async |seen, stop| {
        Ok(consumer.run(collector(seen), stop).await?)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_round_trip_evolve_and_dead_letter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &["--registry"]).await?;
    let client = &servers.client;
    create_validating_topic(client, "payments", 2).await?;
    client
        .broker()
        .create_topic("orders", TopicConfig::default())
        .await?;

    // Avro v1, then v2 (a field with a default: BACKWARD compatible) on a validating topic.
    let v1 = client.producer::<Payment>("payments").await?;
    let v2 = client.producer::<PaymentV2>("payments").await?;
    assert_ne!(v1.schema_id(), v2.schema_id());
    let mut deliveries = Vec::new();
    for n in 0..50i64 {
        let payment = Payment {
            id: format!("p-{n}"),
            amount_cents: n * 100,
            note: (n % 2 == 0).then(|| format!("note {n}")),
        };
        deliveries.push(v1.send(&payment).await?);
    }
    for n in 50..60i64 {
        let payment = PaymentV2 {
            id: format!("p-{n}"),
            amount_cents: n * 100,
            note: None,
            currency: "USD".into(),
        };
        deliveries.push(v2.send(&payment).await?);
    }
    v1.flush().await;
    v2.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }

    // A v2 reader fills the default into v1 records; a v1 reader drops v2's new field.
    let (events, summary) =
        collect(&client.consumer::<PaymentV2>("payments", "ledger"), 60).await?;
    assert_eq!(summary.dead_lettered, 0);
    assert_each_once(
        events.iter().map(|e| e.message.id.clone()),
        (0..60).map(|n| format!("p-{n}")),
        "payments read by a v2 reader",
    );
    for event in &events {
        let n: i64 = event.message.id[2..].parse()?;
        assert_eq!(event.message.amount_cents, n * 100);
        let currency = if n < 50 { "EUR" } else { "USD" };
        assert_eq!(event.message.currency, currency, "{:?}", event.message);
        let key = event.idempotency_key().expect("idempotency key");
        let uuid = uuid::Uuid::parse_str(key)?;
        assert_eq!(uuid.get_version_num(), 7, "UUIDv7 idempotency key");
    }
    let (old, _) = collect(&client.consumer::<Payment>("payments", "audit"), 60).await?;
    assert_each_once(
        old.iter().map(|e| e.message.id.clone()),
        (0..60).map(|n| format!("p-{n}")),
        "payments read by a v1 reader",
    );
    assert!(old
        .iter()
        .any(|e| e.message.id == "p-4" && e.message.note.as_deref() == Some("note 4")));

    // A record whose ID is not registered for the topic is refused by the broker.
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: 1,
        key: None,
        value: Some(vec![0, 0, 0, 0x7f, 0x7f, 1, 2]),
        headers: Vec::new(),
    });
    let refused = client
        .broker()
        .produce("payments", 0, Durability::Memory, builder.encode()?)
        .await;
    match &refused {
        Err(herald_broker_client::RequestError::Broker { code, message, .. }) => {
            assert_eq!(
                *code,
                herald_wire::ErrorCode::SchemaValidationFailed,
                "unregistered schema ID must be refused by validation: {message}"
            );
            assert!(
                message.contains(&format!("schema ID {}", 0x7f7f)),
                "names the ID: {message}"
            );
        }
        other => panic!("unregistered schema ID must be refused by validation: {other:?}"),
    }

    // Protobuf: 20 orders with one undecodable record in the middle.
    let orders = client.producer::<OrderCreated>("orders").await?;
    let mut sent = Vec::new();
    for n in 0..20i64 {
        if n == 10 {
            orders.flush().await;
            let mut poison = BatchBuilder::new();
            poison.push(Record {
                timestamp_ms: 1,
                key: None,
                value: Some(b"{\"order_id\": \"not protobuf\"}".to_vec()),
                headers: Vec::new(),
            });
            client
                .broker()
                .produce("orders", 0, Durability::Memory, poison.encode()?)
                .await?;
        }
        let order = OrderCreated {
            order_id: format!("o-{n}"),
            total_cents: n,
            customer: Some(Customer {
                id: format!("c-{}", n % 3),
            }),
        };
        sent.push(order.clone());
        orders.send(&order).await?.await?;
    }
    let (events, summary) =
        collect(&client.consumer::<OrderCreated>("orders", "email"), 20).await?;
    let received: Vec<OrderCreated> = events.into_iter().map(|e| e.message).collect();
    assert_eq!(
        received, sent,
        "every order, in order, around the poison record"
    );
    assert_eq!(summary.dead_lettered, 1);
    let dead = client
        .broker()
        .fetch("orders.dlq", 0, 0, 1 << 20, Duration::ZERO, 1)
        .await?;
    let mut found = Vec::new();
    for view in batches(&dead.batches) {
        for record in view?.records() {
            found.push(record?.to_owned_record());
        }
    }
    assert_eq!(found.len(), 1);
    let header = |name: &str| {
        found[0]
            .headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(
        header(headers::DLQ_ERROR_KIND).as_deref(),
        Some("deserialization")
    );
    assert_eq!(header(headers::DLQ_OFFSET).as_deref(), Some("10"));
    assert_eq!(header(headers::DLQ_ATTEMPTS).as_deref(), Some("1"));
    Ok(())
}

/// Runs the interop script with `args`, feeding `input` lines; returns its output lines.
fn confluent(args: &[&str], input: &str) -> anyhow::Result<Vec<String>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/sdk_payloads.py");
    let output = herald_tests::run_with_input(
        std::process::Command::new(herald_tests::interop_python()?)
            .arg(script)
            .args(args),
        input,
    )?;
    anyhow::ensure!(
        output.status.success(),
        "interop script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16)?))
        .collect()
}

/// The values stored in partition 0 of `topic`.
async fn stored_values(client: &Client, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let fetched = client
        .broker()
        .fetch(topic, 0, 0, 1 << 20, Duration::ZERO, 1)
        .await?;
    let mut values = Vec::new();
    for view in batches(&fetched.batches) {
        for record in view?.records() {
            values.push(record?.to_owned_record().value.unwrap_or_default());
        }
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_payloads_interoperate_with_confluent_serializers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &[]).await?;
    let client = &servers.client;
    let registry = &servers.registry;
    for topic in ["pay", "ord"] {
        client
            .broker()
            .create_topic(topic, TopicConfig::default())
            .await?;
    }
    let payments = client.producer::<Payment>("pay").await?;
    let orders = client.producer::<OrderCreated>("ord").await?;
    payments
        .send(&Payment {
            id: "p-1".into(),
            amount_cents: 1250,
            note: Some("gift".into()),
        })
        .await?
        .await?;
    orders
        .send(&OrderCreated {
            order_id: "o-1".into(),
            total_cents: 990,
            customer: Some(Customer { id: "c-9".into() }),
        })
        .await?
        .await?;

    // SDK -> Confluent deserializers.
    let mut lines = String::new();
    for value in stored_values(client, "pay").await? {
        lines += &format!(
            "{{\"format\":\"avro\",\"message\":\"\",\"hex\":\"{}\"}}\n",
            hex(&value)
        );
    }
    for value in stored_values(client, "ord").await? {
        lines += &format!(
            "{{\"format\":\"protobuf\",\"message\":\"shop.v1.OrderCreated\",\"hex\":\"{}\"}}\n",
            hex(&value)
        );
    }
    let decoded = confluent(&[&registry.url, "decode"], &lines)?;
    assert_eq!(
        decoded,
        [
            r#"{"amount_cents": 1250, "id": "p-1", "note": "gift"}"#,
            r#"{"customer": {"id": "c-9"}, "order_id": "o-1", "total_cents": "990"}"#,
        ]
    );

    // Confluent serializers -> SDK consumers.
    let avro = confluent(
        &[&registry.url, "encode", "avro", "pay", "shop.Payment"],
        "{\"id\":\"p-2\",\"amount_cents\":7,\"note\":null}\n",
    )?;
    let proto = confluent(
        &[
            &registry.url,
            "encode",
            "protobuf",
            "ord",
            "shop.v1.OrderCreated",
        ],
        "{\"order_id\":\"o-2\",\"total_cents\":\"5\",\"customer\":{\"id\":\"c-1\"}}\n",
    )?;
    for (topic, payloads) in [("pay", avro), ("ord", proto)] {
        let mut builder = BatchBuilder::new();
        for payload in payloads {
            builder.push(Record {
                timestamp_ms: 1,
                key: None,
                value: Some(unhex(&payload)?),
                headers: Vec::new(),
            });
        }
        client
            .broker()
            .produce(topic, 0, Durability::Memory, builder.encode()?)
            .await?;
    }
    let (events, summary) = collect(&client.consumer::<Payment>("pay", "g"), 2).await?;
    assert_eq!(summary.dead_lettered, 0);
    assert_each_once(
        events.iter().map(|e| e.message.id.clone()),
        ["p-1".to_string(), "p-2".to_string()],
        "payments from the SDK and from Confluent",
    );
    assert_eq!(
        events.last().map(|e| e.message.clone()),
        Some(Payment {
            id: "p-2".into(),
            amount_cents: 7,
            note: None
        })
    );
    let (events, summary) = collect(&client.consumer::<OrderCreated>("ord", "g"), 2).await?;
    assert_eq!(summary.dead_lettered, 0);
    assert_each_once(
        events.iter().map(|e| e.message.order_id.clone()),
        ["o-1".to_string(), "o-2".to_string()],
        "orders from the SDK and from Confluent",
    );
    assert_eq!(
        events.last().map(|e| e.message.clone()),
        Some(OrderCreated {
            order_id: "o-2".into(),
            total_cents: 5,
            customer: Some(Customer { id: "c-1".into() }),
        })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_downstream_opens_the_breaker_and_consumption_resumes() -> anyhow::Result<()> {
    use herald::consumer::ConsumerConfig;
    use herald::policy::backoff::RetryPolicy;
    use herald::policy::breaker::BreakerConfig;
    use std::time::Instant;

    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &[]).await?;
    let client = &servers.client;
    client
        .broker()
        .create_topic("flaky", TopicConfig::default())
        .await?;
    let producer = client.producer::<Payment>("flaky").await?;
    let mut deliveries = Vec::new();
    for n in 0..50i64 {
        let payment = Payment {
            id: format!("p-{n}"),
            amount_cents: n,
            note: None,
        };
        deliveries.push(producer.send(&payment).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }

    let mut config = ConsumerConfig::new("flaky-group", "flaky");
    config.breaker = BreakerConfig {
        window: 10,
        minimum_calls: 4,
        failure_rate_threshold: 0.5,
        open_duration: Duration::from_millis(500),
        half_open_probes: 2,
    };
    config.retry = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        max_attempts: Some(3),
        deadline: None,
    };
    let consumer = client.consumer_with::<Payment>(config);
    const DOWN_FOR: Duration = Duration::from_millis(1500);
    let down_since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let calls_while_down = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let succeeded: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let handler = {
        let (down_since, calls_while_down, succeeded) = (
            down_since.clone(),
            calls_while_down.clone(),
            succeeded.clone(),
        );
        move |event: Event<Payment>| {
            let (down_since, calls_while_down, succeeded) = (
                down_since.clone(),
                calls_while_down.clone(),
                succeeded.clone(),
            );
            async move {
                let down = {
                    let mut since = down_since
                        .lock()
                        .map_err(|_| HandlerError::Fatal("lock".into()))?;
                    if event.message.id == "p-10" && since.is_none() {
                        *since = Some(Instant::now());
                    }
                    since.is_some_and(|t| t.elapsed() < DOWN_FOR)
                };
                if down {
                    calls_while_down.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return Err(HandlerError::Retryable("downstream unavailable".into()));
                }
                succeeded
                    .lock()
                    .map_err(|_| HandlerError::Fatal("lock".into()))?
                    .insert(event.message.id);
                Ok(())
            }
        }
    };
    let summary = {
        let succeeded = succeeded.clone();
        let stop = async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while succeeded.lock().map_or(0, |s| s.len()) < 45 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        consumer.run(handler, stop).await?
    };
    let calls = calls_while_down.load(std::sync::atomic::Ordering::SeqCst);
    // Without the breaker: ~3 attempts per record every ~30 ms, some 150 calls in 1.5 s. With
    // it: the calls that open it, then two probes per 500 ms open period.
    assert!(calls >= 4, "the breaker needed failures to open: {calls}");
    assert!(
        calls <= 20,
        "consumption paused while the breaker was open: {calls} calls"
    );
    assert!(
        summary.dead_lettered <= 6,
        "no dead-letter flood: {summary:?}"
    );
    let processed = succeeded.lock().map_err(|_| anyhow::anyhow!("lock"))?.len() as u64;
    assert_eq!(processed + summary.dead_lettered, 50, "{summary:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_policies_and_subject_strategies() -> anyhow::Result<()> {
    use herald::{ProducerOptions, Registration, SubjectStrategy};
    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &[]).await?;
    let client = &servers.client;
    let registry = &servers.registry;
    client
        .broker()
        .create_topic("ledger", TopicConfig::default())
        .await?;
    let v1 = client.producer::<Payment>("ledger").await?.schema_id();
    let v2 = client.producer::<PaymentV2>("ledger").await?.schema_id();
    assert_ne!(v1, v2);

    // UseLatest: a v1 type writes with v2 (the default fills the new field).
    let latest = client
        .producer_with::<Payment>(
            "ledger",
            ProducerOptions {
                registration: Some(Registration::UseLatest),
                ..ProducerOptions::default()
            },
        )
        .await?;
    assert_eq!(latest.schema_id(), v2);
    // Pinned: a v2 type writes with v1 (the new field is dropped).
    let pinned = client
        .producer_with::<PaymentV2>(
            "ledger",
            ProducerOptions {
                registration: Some(Registration::Pinned(v1)),
                ..ProducerOptions::default()
            },
        )
        .await?;
    assert_eq!(pinned.schema_id(), v1);
    let payment = |n: i64| Payment {
        id: format!("p-{n}"),
        amount_cents: n,
        note: None,
    };
    latest.send(&payment(1)).await?.await?;
    pinned
        .send(&PaymentV2 {
            id: "p-2".into(),
            amount_cents: 2,
            note: None,
            currency: "USD".into(),
        })
        .await?
        .await?;
    let (events, summary) = collect(&client.consumer::<PaymentV2>("ledger", "policies"), 2).await?;
    assert_eq!(summary.dead_lettered, 0);
    let seen: Vec<(String, u32, String)> = events
        .iter()
        .map(|e| {
            (
                e.message.id.clone(),
                e.schema_id,
                e.message.currency.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("p-1".to_string(), v2, "EUR".to_string()),
            ("p-2".to_string(), v1, "EUR".to_string())
        ],
        "written with v2 (default filled) and v1 (currency dropped)"
    );

    // A pinned ID that does not exist fails at start, naming it.
    let missing = client
        .producer_with::<Payment>(
            "ledger",
            ProducerOptions {
                registration: Some(Registration::Pinned(999)),
                ..ProducerOptions::default()
            },
        )
        .await;
    assert!(
        missing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("999")),
        "{:?}",
        missing.err()
    );

    // RecordName / TopicRecordName register under the record's name.
    for (strategy, subject) in [
        (SubjectStrategy::RecordName, "shop.Payment"),
        (SubjectStrategy::TopicRecordName, "ledger-shop.Payment"),
    ] {
        client
            .producer_with::<Payment>(
                "ledger",
                ProducerOptions {
                    subject_strategy: Some(strategy),
                    ..ProducerOptions::default()
                },
            )
            .await?;
        let versions = herald_registry_client::RegistryClient::new(registry.url.clone())?
            .versions(subject)
            .await?;
        assert_eq!(versions, [1], "{subject}");
    }
    Ok(())
}

const MONEY: &str = r#"{"type":"record","name":"Money","namespace":"shop","fields":[
  {"name":"cents","type":"long"},{"name":"currency","type":"string"}]}"#;
const INVOICE: &str = r#"{"type":"record","name":"Invoice","namespace":"shop","fields":[
  {"name":"id","type":"string"},{"name":"total","type":"shop.Money"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Money {
    cents: i64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Invoice {
    id: String,
    total: Money,
}
herald::avro_message!(
    Invoice,
    herald::SchemaInfo {
        format: herald::SchemaFormat::Avro,
        full_name: "shop.Invoice",
        schema: INVOICE,
        dependencies: &[herald::SchemaDependency {
            name: "shop.Money",
            schema: MONEY,
            imports: &[],
        }],
        imports: &["shop.Money"],
        message_indexes: None,
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_schemas_with_references_register_and_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &["--registry"]).await?;
    let client = &servers.client;
    create_validating_topic(client, "invoices", 1).await?;
    let producer = client.producer::<Invoice>("invoices").await?;
    // The referenced type is registered under its full name, the invoice with a reference
    // to it (as Confluent's Avro serializer does).
    let registry = herald_registry_client::RegistryClient::new(&servers.registry.url)?;
    let invoice_version = registry
        .version("invoices-value", herald_registry_client::Version::Latest)
        .await?;
    assert_eq!(invoice_version.id, producer.schema_id());
    assert_eq!(invoice_version.references.len(), 1);
    assert_eq!(invoice_version.references[0].subject, "shop.Money");
    let invoice = Invoice {
        id: "i-1".into(),
        total: Money {
            cents: 1250,
            currency: "EUR".into(),
        },
    };
    producer.send(&invoice).await?.await?;
    let (events, summary) = collect(&client.consumer::<Invoice>("invoices", "billing"), 1).await?;
    assert_eq!(summary.dead_lettered, 0);
    assert_each_once(
        events.iter().map(|e| e.message.id.clone()),
        ["i-1".to_string()],
        "invoices",
    );
    assert_eq!(events.first().map(|e| &e.message), Some(&invoice));
    // Confluent's AvroDeserializer resolves the reference through the registry too.
    let stored = stored_values(client, "invoices").await?;
    let line = format!(
        "{{\"format\":\"avro\",\"message\":\"shop.Invoice\",\"hex\":\"{}\"}}\n",
        hex(stored.first().map(Vec::as_slice).unwrap_or_default())
    );
    let decoded = confluent(&[&servers.registry.url, "decode"], &line)?;
    assert_eq!(
        decoded,
        [r#"{"id": "i-1", "total": {"cents": 1250, "currency": "EUR"}}"#]
    );
    Ok(())
}
