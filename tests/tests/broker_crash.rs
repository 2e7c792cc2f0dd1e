//! Process-crash test: producers append while the real `herald` broker is SIGKILLed and
//! restarted twenty times. After the last restart every acknowledged record is present at its
//! acknowledged offset, in order, with intact CRCs, and no stored batch is corrupt.
//!
//! What it shows is recovery after a killed *process*: the kernel keeps the page cache, so
//! this passes with `Memory` durability too. The `Fsync` promise (an acknowledgement only
//! after a sync that started after the append) is tested where it can fail: the group-commit
//! unit tests with a fake sync handle, and the log over the crash-simulating storage that
//! drops unsynced bytes (broker/server/src/group_commit.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_client::{BrokerClient, Trust};
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};

const ROUNDS: usize = 20;
const PRODUCERS: usize = 3;
const RECORDS_PER_BATCH: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_of_the_broker_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // offset -> value of every acknowledged record
    let acked: Arc<Mutex<BTreeMap<i64, String>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let seed = u64::from(std::process::id());
    for round in 0..ROUNDS {
        let broker = BrokerProcess::start(dir.path())?;
        let client =
            BrokerClient::connect(broker.addr, Trust::Fingerprint(broker.fingerprint.clone()))
                .await?;
        if round == 0 {
            // Small segments so that rolls happen under the crashes too.
            client
                .create_topic(
                    "crash",
                    TopicConfig {
                        segment_bytes: 16 * 1024,
                        ..TopicConfig::default()
                    },
                )
                .await?;
        }
        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let client = client.clone();
            let acked = acked.clone();
            producers.push(tokio::spawn(async move {
                for n in 0.. {
                    let values: Vec<String> = (0..RECORDS_PER_BATCH)
                        .map(|i| format!("r{round}-p{producer}-b{n}-{i}"))
                        .collect();
                    let mut builder = BatchBuilder::new();
                    for value in &values {
                        builder.push(Record {
                            timestamp_ms: 1,
                            key: None,
                            value: Some(value.clone().into_bytes()),
                            headers: Vec::new(),
                        });
                    }
                    let Ok(batch) = builder.encode() else { break };
                    let Ok((base, _)) = client.produce("crash", 0, Durability::Fsync, batch).await
                    else {
                        break;
                    };
                    let mut acked = acked.lock().expect("lock");
                    for (i, value) in values.into_iter().enumerate() {
                        acked.insert(base + i as i64, value);
                    }
                }
            }));
        }
        let delay = 30
            + (seed
                .wrapping_mul(2862933555777941757)
                .wrapping_add(round as u64 * 3037000493)
                >> 40)
                % 150;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        broker.kill()?;
        // Requests in flight at the kill can never be acknowledged: stop waiting for them.
        for producer in producers {
            producer.abort();
            let _ = producer.await;
        }
        client.close();
    }
    let broker = BrokerProcess::start(dir.path())?;
    let client =
        BrokerClient::connect(broker.addr, Trust::Fingerprint(broker.fingerprint.clone())).await?;
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= ROUNDS * RECORDS_PER_BATCH,
        "too few acknowledged records to mean anything: {}",
        acked.len()
    );
    let mut stored = BTreeMap::new();
    let mut offset = 0i64;
    loop {
        let fetched = client
            .fetch("crash", 0, offset, 1024 * 1024, Duration::ZERO, 1)
            .await?;
        if fetched.batches.is_empty() {
            break;
        }
        for view in batches(&fetched.batches) {
            let view =
                view.map_err(|e| anyhow::anyhow!("corrupt stored batch at offset {offset}: {e}"))?;
            assert_eq!(view.base_offset(), offset, "offsets are dense and in order");
            for (i, record) in view.records().enumerate() {
                let record = record?;
                stored.insert(
                    view.base_offset() + i as i64,
                    String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned(),
                );
            }
            offset = view.next_offset();
        }
    }
    for (offset, value) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "seed {seed}: acknowledged record at offset {offset} lost or changed"
        );
    }
    println!(
        "seed {seed}: {} acknowledged records of {} stored survived {ROUNDS} SIGKILLs",
        acked.len(),
        stored.len()
    );
    Ok(())
}
