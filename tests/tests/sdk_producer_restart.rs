//! The SDK's RawProducer keeps delivering through broker SIGKILLs: it reconnects to the
//! restarted broker, retries with the same producer id and sequence, and every record ends up
//! stored exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::producer::{Connector, ProducerConfig, RawProducer};
use herald_broker_client::Trust;
use herald_tests::BrokerProcess;
use herald_wire::batch::batches;
use herald_wire::messages::TopicConfig;

const RECORDS: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_survives_broker_sigkills_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let broker = BrokerProcess::start_on(dir.path(), listen)?;
    let fingerprint = broker.fingerprint.clone();
    let credentials = broker.credentials.clone();
    let setup = broker.client().await?;
    setup
        .create_topic(
            "payments",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await?;
    setup.close();
    let connector: Connector =
        herald_broker_client::dialer(vec![listen], Trust::Fingerprint(fingerprint), credentials);
    let config = ProducerConfig {
        batch_bytes_max: 4 * 1024,
        ..ProducerConfig::default()
    };
    let producer = RawProducer::with_reconnect(connector, "payments", config).await?;
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            for n in 0..RECORDS {
                let key = format!("account-{}", n % 17).into_bytes();
                deliveries.push((
                    n,
                    producer
                        .send(Some(key), Some(n.to_be_bytes().to_vec()), Vec::new())
                        .await?,
                ));
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            producer.flush().await;
            Ok::<_, herald::producer::ProduceError>(deliveries)
        })
    };
    let mut broker = Some(broker);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        broker.take().expect("running").kill()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        broker = Some(BrokerProcess::start_on(dir.path(), listen)?);
    }
    let deliveries = sender.await??;
    for (n, delivery) in deliveries {
        tokio::time::timeout(Duration::from_secs(90), delivery)
            .await?
            .map_err(|e| anyhow::anyhow!("record {n} not delivered: {e}"))?;
    }
    let check = broker.as_ref().expect("running").client().await?;
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for partition in 0..2 {
        let mut offset = 0;
        loop {
            let fetched = check
                .fetch(
                    "payments",
                    partition,
                    offset,
                    1024 * 1024,
                    Duration::ZERO,
                    1,
                )
                .await?;
            if fetched.batches.is_empty() {
                break;
            }
            for view in batches(&fetched.batches) {
                let view = view?;
                for record in view.records() {
                    let value = record?.value.unwrap_or_default();
                    *seen
                        .entry(u32::from_be_bytes(
                            value
                                .try_into()
                                .map_err(|_| anyhow::anyhow!("value size"))?,
                        ))
                        .or_default() += 1;
                }
                offset = view.next_offset();
            }
        }
    }
    assert_eq!(seen.len() as u32, RECORDS, "every record stored");
    assert!(seen.values().all(|count| *count == 1), "none stored twice");
    Ok(())
}
