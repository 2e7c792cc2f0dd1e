//! The seed scenario, runnable: `cargo run -p checkout-example`.
//!
//! Starts a registry and a broker in-process (on port 0, in a temporary directory; or uses
//! running ones when HERALD_BROKER, HERALD_FINGERPRINT and HERALD_REGISTRY are set), then:
//! checkout publishes `OrderCreated` events with the generated `OrdersProducer`; inventory,
//! email, analytics and loyalty are four consumer groups, each with the generated
//! `OrdersConsumer` and its own pace; one malformed order lands in `orders.dlq`; the example
//! prints the lag of every group as they drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald::{Client, ClientConfig, Credentials, Event, HandlerError, Trust};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::groups::{GroupRequest, GroupResponse};
use herald_wire::messages::{Durability, TopicConfig};

mod events {
    #![allow(unreachable_pub, missing_docs, dead_code, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/herald.rs"));
}

use events::shop::v1::{order_created, OrderCreated};
use events::{common::Money, OrdersConsumer, OrdersProducer};

const ORDERS: u32 = 400;
const GROUPS: [(&str, u64); 4] = [
    ("inventory", 1),
    ("email", 4),
    ("analytics", 0),
    ("loyalty", 8),
];

fn order(n: u32) -> OrderCreated {
    OrderCreated {
        order_id: format!("order-{n:05}"),
        customer_id: format!("customer-{}", n % 37),
        items: vec![order_created::LineItem {
            sku: format!("sku-{}", n % 11),
            quantity: 1 + (n % 3) as i32,
            unit_price: Some(Money {
                currency: "EUR".into(),
                units: 1299,
            }),
        }],
        total: Some(Money {
            currency: "EUR".into(),
            units: 1299 * i64::from(1 + n % 3),
        }),
        channel: order_created::Channel::Web as i32,
        ..OrderCreated::default()
    }
}

/// Registry and broker: the running ones named by the environment, or fresh in-process ones.
async fn servers(dir: &std::path::Path) -> anyhow::Result<ClientConfig> {
    if let (Ok(broker), Ok(fingerprint), Ok(registry)) = (
        std::env::var("HERALD_BROKER"),
        std::env::var("HERALD_FINGERPRINT"),
        std::env::var("HERALD_REGISTRY"),
    ) {
        // HERALD_USER with HERALD_PASSWORD, or the credentials file HERALD_CREDENTIALS (as
        // `herald up` writes), authenticate to a broker that requires it.
        let credentials = match (
            std::env::var("HERALD_USER"),
            std::env::var("HERALD_PASSWORD"),
            std::env::var("HERALD_CREDENTIALS"),
        ) {
            (Ok(user), Ok(password), _) => Credentials::scram(user, password),
            (_, _, Ok(file)) => Credentials::from_local_file(std::path::Path::new(&file))?,
            _ => Credentials::None,
        };
        return Ok(
            ClientConfig::new(broker.parse()?, Trust::Fingerprint(fingerprint), registry)
                .with_credentials(credentials),
        );
    }
    let (registry_tx, registry_rx) = tokio::sync::oneshot::channel();
    let registry_config = herald_registry::ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.join("registry"),
        auth: Default::default(),
        tls: None,
    };
    tokio::spawn(herald_registry::serve(
        registry_config,
        move |addr| {
            let _ = registry_tx.send(addr);
        },
        std::future::pending(),
    ));
    let registry = registry_rx.await.context("registry did not start")?;
    let (broker_tx, broker_rx) = tokio::sync::oneshot::channel();
    let mut broker_config =
        herald_broker::BrokerConfig::new("127.0.0.1:0".parse()?, dir.join("broker"));
    broker_config.registry_url = Some(format!("http://{registry}"));
    tokio::spawn(herald_broker::serve(
        broker_config,
        move |bound| {
            let _ = broker_tx.send(bound);
        },
        std::future::pending(),
    ));
    let bound = broker_rx.await.context("broker did not start")?;
    // The broker requires authentication; on first start it generated an admin credential.
    let credentials =
        Credentials::from_local_file(&dir.join("broker").join(herald::LOCAL_CREDENTIALS_FILE))?;
    println!(
        "registry http://{registry}, broker quic://{} (fingerprint {})",
        bound.addr, bound.fingerprint
    );
    Ok(ClientConfig::new(
        bound.addr,
        Trust::Fingerprint(bound.fingerprint),
        format!("http://{registry}"),
    )
    .with_credentials(credentials))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = Client::connect(servers(dir.path()).await?).await?;
    match client
        .broker()
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 4,
                ..TopicConfig::default()
            },
        )
        .await
    {
        Ok(()) => {}
        Err(e) if e.code() == Some(herald_wire::ErrorCode::TopicAlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }

    // Checkout publishes; order 200 is malformed (a client that skipped the SDK).
    let checkout = OrdersProducer::new(&client).await?;
    for n in 0..ORDERS {
        if n == 200 {
            checkout.flush().await;
            let mut batch = BatchBuilder::new();
            batch.push(Record {
                timestamp_ms: 0,
                key: Some(b"customer-x".to_vec()),
                value: Some(b"{\"order_id\": \"broken\"}".to_vec()),
                headers: Vec::new(),
            });
            client
                .broker()
                .produce("orders", 0, Durability::Memory, batch.encode()?)
                .await?;
        }
        checkout.send(&order(n)).await?;
    }
    checkout.flush().await;
    println!("checkout published {ORDERS} orders (+1 malformed)");

    // Four groups at their own pace.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut runs = Vec::new();
    for (group, pause_ms) in GROUPS {
        let client = client.clone();
        let stop = stop.clone();
        runs.push(tokio::spawn(async move {
            let consumer = OrdersConsumer::new(&client, group);
            consumer
                .run(
                    move |event: Event<OrderCreated>| async move {
                        if pause_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                        }
                        if event.message.items.is_empty() {
                            return Err(HandlerError::Fatal("order without items".into()));
                        }
                        Ok(())
                    },
                    async move { stop.notified().await },
                )
                .await
                .map(|summary| (group, summary))
        }));
    }

    // Lag per group until every group has drained.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut line = String::new();
        let mut drained = true;
        for (group, _) in GROUPS {
            let lag = match client
                .broker()
                .group(GroupRequest::Describe {
                    group: group.into(),
                })
                .await
            {
                Ok(GroupResponse::Description(description))
                    if !description.partitions.is_empty() =>
                {
                    description
                        .partitions
                        .iter()
                        .map(|p| p.lag_records.max(0))
                        .sum::<i64>()
                }
                _ => i64::from(ORDERS) + 1,
            };
            drained &= lag == 0;
            line.push_str(&format!("{group}={lag:<4} "));
        }
        println!("lag: {line}");
        if drained {
            break;
        }
    }
    stop.notify_waiters();
    for run in runs {
        let (group, summary) = run.await??;
        println!(
            "{group}: processed {}, dead-lettered {}",
            summary.processed, summary.dead_lettered
        );
    }
    let dead = client
        .broker()
        .fetch("orders.dlq", 0, 0, 1 << 20, Duration::ZERO, 1)
        .await?;
    for view in herald_wire::batch::batches(&dead.batches) {
        for record in view?.records() {
            let record = record?.to_owned_record();
            let headers: Vec<String> = record
                .headers
                .iter()
                .filter(|h| h.key.starts_with(herald_wire::headers::DLQ_PREFIX))
                .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.value)))
                .collect();
            println!("orders.dlq: {}", headers.join(" "));
        }
    }
    Ok(())
}
