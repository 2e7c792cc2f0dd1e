//! An idempotent producer retrying through broker SIGKILLs ends with every record stored
//! exactly once, in order: batches that reached the log before the kill but were never
//! acknowledged are recognised on retry by (producer id, epoch, sequence).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_broker_client::BrokerClient;
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::ErrorCode;

const BATCHES: usize = 400;
const RECORDS_PER_BATCH: usize = 5;
const KILLS: usize = 8;

fn batch(producer_id: i64, epoch: i16, index: usize) -> Vec<u8> {
    let mut builder =
        BatchBuilder::new().idempotent(producer_id, epoch, (index * RECORDS_PER_BATCH) as i32);
    for i in 0..RECORDS_PER_BATCH {
        let value = format!("{:06}", index * RECORDS_PER_BATCH + i);
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value.into_bytes()),
            headers: Vec::new(),
        });
    }
    builder.encode().expect("valid batch")
}

async fn connect(broker: &BrokerProcess) -> anyhow::Result<BrokerClient> {
    broker.client().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_sigkills_store_every_record_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::start(dir.path())?;
    let client = connect(&broker).await?;
    client
        .create_topic(
            "exactly-once",
            TopicConfig {
                segment_bytes: 8 * 1024,
                ..TopicConfig::default()
            },
        )
        .await?;
    let (producer_id, epoch) = client.init_producer("checkout").await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let mut broker = Some(broker);
    let mut client = client;
    // Acknowledged batches when each kill landed: every kill must hit the stream mid-way.
    let mut progress_at_kills = Vec::new();
    for kill in 0..=KILLS {
        let sender = {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                // Window of one: the next batch goes only after the previous was acknowledged.
                while acked.load(Ordering::SeqCst) < BATCHES {
                    let index = acked.load(Ordering::SeqCst);
                    match client
                        .produce(
                            "exactly-once",
                            0,
                            Durability::Memory,
                            batch(producer_id, epoch, index),
                        )
                        .await
                    {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) if error.code() == Some(ErrorCode::OutOfOrderSequence) => {
                            return Err(format!("a retry must never be out of order: {error}"));
                        }
                        // The broker died under the send: the next round retries the batch.
                        Err(_) => return Ok(()),
                    }
                }
                Ok(())
            })
        };
        if kill == KILLS {
            let outcome = sender.await?;
            assert_eq!(outcome, Ok(()));
            break;
        }
        // Kill once the stream has moved on by a share of the batches (not by a timer, which
        // may fire after the last batch on a fast machine or before the first on a slow one).
        let threshold = (kill + 1) * BATCHES / (KILLS + 2);
        tokio::time::timeout(Duration::from_secs(60), async {
            while acked.load(Ordering::SeqCst) < threshold {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
        progress_at_kills.push(acked.load(Ordering::SeqCst));
        broker.take().expect("running broker").kill()?;
        // The sender ends on its failed send; a panic or an out-of-order answer fails the
        // test (a sender still waiting on the dead connection is cancelled).
        let mut sender = sender;
        match tokio::time::timeout(Duration::from_secs(3), &mut sender).await {
            Ok(joined) => assert_eq!(joined?, Ok(()), "sender before kill {kill}"),
            Err(_) => {
                sender.abort();
                match sender.await {
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    _ => {}
                }
            }
        }
        client.close();
        let restarted = BrokerProcess::start(dir.path())?;
        client = connect(&restarted).await?;
        broker = Some(restarted);
        // Replay the last acknowledged batch, as a producer whose ack got lost would: it must
        // be recognised, not stored again.
        let last = acked.load(Ordering::SeqCst);
        if last > 0 {
            let (base, _) = client
                .produce(
                    "exactly-once",
                    0,
                    Durability::Memory,
                    batch(producer_id, epoch, last - 1),
                )
                .await?;
            assert_eq!(
                base,
                ((last - 1) * RECORDS_PER_BATCH) as i64,
                "a duplicate is acknowledged with its original offset"
            );
        }
    }
    assert_eq!(progress_at_kills.len(), KILLS);
    assert!(
        progress_at_kills
            .iter()
            .all(|&progress| progress > 0 && progress < BATCHES),
        "every kill landed mid-stream: {progress_at_kills:?}"
    );
    assert!(
        progress_at_kills.windows(2).all(|w| w[0] < w[1]),
        "the stream advanced between kills: {progress_at_kills:?}"
    );
    assert_eq!(acked.load(Ordering::SeqCst), BATCHES);
    let mut values = Vec::new();
    let mut offset = 0i64;
    loop {
        let fetched = client
            .fetch("exactly-once", 0, offset, 1024 * 1024, Duration::ZERO, 1)
            .await?;
        if fetched.batches.is_empty() {
            break;
        }
        for view in batches(&fetched.batches) {
            let view = view?;
            for record in view.records() {
                values
                    .push(String::from_utf8_lossy(record?.value.unwrap_or_default()).into_owned());
            }
            offset = view.next_offset();
        }
    }
    let expected: Vec<String> = (0..BATCHES * RECORDS_PER_BATCH)
        .map(|n| format!("{n:06}"))
        .collect();
    assert_eq!(
        values.len(),
        expected.len(),
        "same count: nothing lost, nothing doubled"
    );
    assert_eq!(values, expected, "same order");
    // A second instance of the named producer fences the first.
    let (same_id, newer) = client.init_producer("checkout").await?;
    assert_eq!((same_id, newer), (producer_id, epoch + 1));
    client
        .produce(
            "exactly-once",
            0,
            Durability::Memory,
            batch(producer_id, newer, 0),
        )
        .await?;
    let zombie = client
        .produce(
            "exactly-once",
            0,
            Durability::Memory,
            batch(producer_id, epoch, BATCHES),
        )
        .await
        .expect_err("fenced");
    assert_eq!(zombie.code(), Some(ErrorCode::ProducerFenced));
    Ok(())
}
