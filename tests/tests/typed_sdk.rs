//! The typed SDK against real `herald` registry and broker processes: Avro (serde) and
//! Protobuf (prost) messages produced and consumed through the registry, schema evolution
//! resolved on read, a topic that validates schema IDs, an undecodable record dead-lettered
//! with kind `deserialization` while the records behind it are processed, and an
//! idempotency-key header (UUIDv7) on every record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::consumer::HandlerError;
use herald::{Client, ClientConfig, Event, Trust};
use herald_tests::{BrokerProcess, RegistryProcess};
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::headers;
use herald_wire::messages::{Durability, SchemaValidation, TopicConfig};
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
async fn collect<T: herald::Message + Clone>(
    consumer: &herald::Consumer<T>,
    expected: usize,
) -> anyhow::Result<(Vec<Event<T>>, herald::consumer::RunSummary)> {
    let seen: Arc<Mutex<Vec<Event<T>>>> = Arc::default();
    let stop = {
        let seen = seen.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while seen.lock().map_or(0, |s| s.len()) < expected
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let summary = consumer
        .run(
            |event: Event<T>| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .map_err(|_| HandlerError::Fatal("poisoned".into()))?
                        .push(event);
                    Ok(())
                }
            },
            stop,
        )
        .await?;
    let events = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((events, summary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_round_trip_evolve_and_dead_letter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = RegistryProcess::start(&dir.path().join("registry"))?;
    let broker =
        BrokerProcess::start_with(&dir.path().join("broker"), &["--registry", &registry.url])?;
    let client = Client::connect(ClientConfig::new(
        broker.addr,
        Trust::Fingerprint(broker.fingerprint.clone()),
        registry.url.clone(),
    ))
    .await?;
    client
        .broker()
        .create_topic(
            "payments",
            TopicConfig {
                partitions: 2,
                validation: SchemaValidation {
                    value: true,
                    ..SchemaValidation::default()
                },
                ..TopicConfig::default()
            },
        )
        .await?;
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
    assert_eq!(events.len(), 60);
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
    assert_eq!(old.len(), 60);
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
    assert!(refused.is_err(), "unregistered schema ID must be refused");

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
