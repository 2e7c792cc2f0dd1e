//! RawProducer against a real in-process broker over QUIC.

mod support;

use support::{broker, stored_values};

use std::collections::BTreeMap;
use std::time::Duration;

use herald::partitioner::partition_for_key;
use herald::producer::{ProduceError, ProducerConfig, RawProducer};
use herald_wire::batch::{batches, Header};
use herald_wire::messages::TopicConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_are_batched_partitioned_and_delivered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create");
    let producer = RawProducer::new(
        client.clone(),
        "orders",
        ProducerConfig {
            batch_bytes_max: 16 * 1024,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let mut deliveries = Vec::new();
    // The values sent to each partition, in send order.
    let mut sent_to: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for n in 0..3_000u32 {
        let key = format!("customer-{}", n % 50).into_bytes();
        sent_to
            .entry(partition_for_key(&key, 3))
            .or_default()
            .push(n);
        let header = Header {
            key: "idempotency-key".into(),
            value: n.to_be_bytes().to_vec(),
        };
        let delivery = producer
            .send(
                Some(key.clone()),
                Some(n.to_be_bytes().to_vec()),
                vec![header],
            )
            .await
            .expect("queued");
        deliveries.push((key, n, delivery));
    }
    producer.flush().await;
    let mut per_partition: BTreeMap<u32, Vec<(i64, u32)>> = BTreeMap::new();
    for (key, n, delivery) in deliveries {
        let delivery = tokio::time::timeout(Duration::from_secs(30), delivery)
            .await
            .expect("in time")
            .expect("delivered");
        assert_eq!(
            delivery.partition,
            partition_for_key(&key, 3),
            "same key, same partition"
        );
        per_partition
            .entry(delivery.partition)
            .or_default()
            .push((delivery.offset, n));
    }
    for (partition, mut records) in per_partition {
        records.sort_unstable();
        let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "dense offsets in partition {partition}"
        );
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "send order kept in partition {partition}"
        );
        let fetched = client
            .fetch("orders", partition, 0, 8 * 1024 * 1024, Duration::ZERO, 1)
            .await
            .expect("fetch");
        let first = batches(&fetched.batches)
            .next()
            .expect("a batch")
            .expect("valid");
        assert!(first.producer_id() >= 0, "batches are idempotent");
        // What the partition holds, decoded in offset order, is exactly what was sent to
        // it, in send order: nothing lost, nothing stored twice, nothing reordered.
        let stored = stored_values(&client, "orders", partition).await;
        let stored_offsets: Vec<i64> = stored.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(
            stored_offsets,
            (0..stored.len() as i64).collect::<Vec<_>>(),
            "dense stored offsets in partition {partition}"
        );
        let reported: Vec<(i64, Option<u32>)> = records
            .iter()
            .map(|(offset, n)| (*offset, Some(*n)))
            .collect();
        assert_eq!(
            reported, stored,
            "each delivery reports the offset its value is stored at, partition {partition}"
        );
        let stored_numbers: Vec<Option<u32>> = stored.into_iter().map(|(_, n)| n).collect();
        let expected = sent_to
            .remove(&partition)
            .expect("records were sent to this partition");
        assert_eq!(
            stored_numbers,
            expected.into_iter().map(Some).collect::<Vec<_>>(),
            "partition {partition} stores the sent values in order, exactly once"
        );
    }
    assert!(
        sent_to.is_empty(),
        "a partition records were sent to delivered nothing: {:?}",
        sent_to.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_limits_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    assert!(matches!(
        RawProducer::new(client.clone(), "missing", ProducerConfig::default()).await,
        Err(ProduceError::Setup(_))
    ));
    client
        .create_topic("small", TopicConfig::default())
        .await
        .expect("create");
    let producer = RawProducer::new(
        client,
        "small",
        ProducerConfig {
            buffer_bytes_max: 1024,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let error = producer
        .send(None, Some(vec![0; 4096]), Vec::new())
        .await
        .expect_err("bigger than the buffer");
    assert!(matches!(error, ProduceError::TooLarge { .. }) && !error.retryable());
    let delivery = producer
        .send(None, Some(b"ok".to_vec()), Vec::new())
        .await
        .expect("queued");
    // A record breaking a wire limit fails its own send; the batch it would have joined
    // (holding the record above) is delivered untouched.
    let bad_header = Header {
        key: "k".repeat(300),
        value: Vec::new(),
    };
    let error = producer
        .send(None, Some(b"bad".to_vec()), vec![bad_header])
        .await
        .expect_err("a header key over the limit");
    assert!(
        matches!(&error, ProduceError::InvalidRecord(reason) if reason.contains("header key")),
        "{error}"
    );
    let delivered = tokio::time::timeout(Duration::from_secs(10), delivery)
        .await
        .expect("in time")
        .expect("delivered by the linger timer");
    assert_eq!(delivered.offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_fails_sends_when_asked_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic("full", TopicConfig::default())
        .await
        .expect("create");
    let producer = RawProducer::new(
        client,
        "full",
        ProducerConfig {
            buffer_bytes_max: 1024,
            buffer_full: herald::producer::BufferFull::Fail,
            // Nothing leaves before the test fills the buffer.
            linger: Duration::from_secs(30),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let mut accepted = Vec::new();
    let error = loop {
        match producer.send(None, Some(vec![1; 100]), Vec::new()).await {
            Ok(delivery) => accepted.push(delivery),
            Err(error) => break error,
        }
        assert!(accepted.len() < 100, "the buffer is bounded");
    };
    assert!(
        matches!(error, ProduceError::BufferFull { limit: 1024 }) && error.retryable(),
        "{error}"
    );
    assert!(!accepted.is_empty());
    producer.flush().await;
    for delivery in accepted {
        tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("in time")
            .expect("what was accepted is delivered");
    }
    // Acknowledgements made room again.
    assert!(producer
        .send(None, Some(vec![1; 100]), Vec::new())
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dropped_by_a_dedup_window_report_where_their_first_copy_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic(
            "payments",
            TopicConfig {
                dedup_window: Some(Duration::from_secs(120)),
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create");
    let producer = RawProducer::new(client, "payments", ProducerConfig::default())
        .await
        .expect("producer");
    let send_batch = |keys: &'static [&'static str]| {
        let producer = producer.clone();
        async move {
            let mut deliveries = Vec::new();
            for key in keys {
                let header = Header {
                    key: "idempotency-key".into(),
                    value: key.as_bytes().to_vec(),
                };
                deliveries.push(
                    producer
                        .send(None, Some(key.as_bytes().to_vec()), vec![header])
                        .await
                        .expect("queued"),
                );
            }
            producer.flush().await;
            let mut offsets = Vec::new();
            for delivery in deliveries {
                offsets.push(delivery.await.expect("delivered").offset);
            }
            offsets
        }
    };
    // "a" repeats inside the batch, then "b" repeats from the first batch.
    assert_eq!(send_batch(&["a", "b", "a", "c"]).await, [0, 1, 0, 2]);
    assert_eq!(send_batch(&["b", "d"]).await, [1, 3]);
    assert_eq!(send_batch(&["d", "a"]).await, [3, 0], "only duplicates");
    assert_eq!(send_batch(&["e"]).await, [4]);
}

/// A client given a bootstrap list connects through whichever broker answers (here the
/// first never does: a bound socket that reads nothing, as a paused node), and its connector,
/// which producers and consumers reconnect with, does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connects_and_reconnects_through_a_bootstrap_list() {
    use herald::{Client, ClientConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = support::RunningBroker::start(dir.path()).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let config = ClientConfig::new(broker.bound.addr, broker.trust(), "http://127.0.0.1:9")
        .with_credentials(broker.credentials.clone())
        .with_bootstrap([silent.local_addr().expect("addr"), broker.bound.addr]);
    let started = std::time::Instant::now();
    let client = Client::connect(config).await.expect("connects");
    client
        .broker()
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");
    let again = (client.connector())(None).await.expect("reconnects");
    assert_eq!(again.list_topics().await.expect("list").len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the silent broker was waited for: {:?}",
        started.elapsed()
    );
    broker.stop().await;
}
