//! Disk-full test with the real `herald` broker on a small tmpfs: produce ~20 KB records until
//! the disk refuses them, free space, produce more. Every acknowledged record must read back
//! at its acknowledged offset — before and after a SIGKILL and restart — and no stored batch
//! may be torn. (The defect: a write cut short by the full disk left its prefix in the
//! segment; later appends went after it while the broker placed them where it started, so
//! reads failed with "truncated: batch needs … more bytes" and recovery cut every record
//! acknowledged after the episode.)
//!
//! Mounting a tmpfs needs root; where `mount` is refused the test says so and passes.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_broker_client::BrokerClient;
use herald_tests::{BrokerProcess, Tmpfs};
use herald_wire::batch::batches;
use herald_wire::messages::{Durability, TopicConfig};

/// The tmpfs: small enough to fill in a second, large enough for the broker's own files.
const DISK_BYTES: u64 = 6 * 1024 * 1024;
/// Freed after the disk filled up: room for the records produced afterwards.
const FILLER_BYTES: usize = 2 * 1024 * 1024;
const RECORD_BYTES: usize = 20 * 1024;
const RECORDS_AFTER: usize = 30;

fn record_batch(value: &str) -> anyhow::Result<Vec<u8>> {
    herald_tests::padded_record(value, RECORD_BYTES)
}

/// Every stored record, offset → the value's tag, failing on any torn or corrupt batch.
async fn read_back(client: &BrokerClient) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut stored = BTreeMap::new();
    let mut offset = 0i64;
    loop {
        let fetched = client
            .fetch("full", 0, offset, 1024 * 1024, Duration::ZERO, 1)
            .await?;
        if fetched.batches.is_empty() {
            return Ok(stored);
        }
        for view in batches(&fetched.batches) {
            let view = view.map_err(|e| anyhow::anyhow!("stored batch at {offset}: {e}"))?;
            anyhow::ensure!(view.base_offset() == offset, "offsets are dense");
            for (i, record) in view.records().enumerate() {
                let value = record?.value.unwrap_or_default().to_vec();
                let tag = String::from_utf8_lossy(&value)
                    .trim_end_matches('.')
                    .to_owned();
                stored.insert(view.base_offset() + i as i64, tag);
            }
            offset = view.next_offset();
        }
    }
}

fn assert_acknowledged_stored(
    acked: &BTreeMap<i64, String>,
    stored: &BTreeMap<i64, String>,
    when: &str,
) {
    for (offset, value) in acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "{when}: acknowledged record at offset {offset} lost or changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_produces_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(disk) = Tmpfs::mount(dir.path(), DISK_BYTES) else {
        println!("skipped: mounting a tmpfs needs root (mount -t tmpfs was refused)");
        return Ok(());
    };
    let data = disk.path.join("data");
    std::fs::create_dir_all(&data)?;
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; FILLER_BYTES])?;

    let broker = BrokerProcess::start(&data)?;
    let client = broker.client().await?;
    client
        .create_topic(
            "full",
            TopicConfig {
                segment_bytes: 512 * 1024,
                ..TopicConfig::default()
            },
        )
        .await?;
    let mut acked = BTreeMap::new();
    let mut refused = None;
    for n in 0..1_000 {
        let value = format!("before-{n}");
        match client
            .produce("full", 0, Durability::Fsync, record_batch(&value)?)
            .await
        {
            Ok((base, _)) => {
                acked.insert(base, value);
            }
            Err(error) => {
                refused = Some(error.to_string());
                break;
            }
        }
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("the disk never filled up"))?;
    println!("refused after {} records: {refused}", acked.len());
    assert!(!acked.is_empty(), "nothing fit on the disk");

    std::fs::remove_file(&filler)?;
    let mut after = 0;
    for n in 0..RECORDS_AFTER {
        let value = format!("after-{n}");
        match client
            .produce("full", 0, Durability::Fsync, record_batch(&value)?)
            .await
        {
            Ok((base, _)) => {
                acked.insert(base, value);
                after += 1;
            }
            Err(error) => {
                println!("after freeing space: {error}");
                break;
            }
        }
    }
    assert_eq!(
        after, RECORDS_AFTER,
        "with space again every produce is acknowledged"
    );
    assert_acknowledged_stored(&acked, &read_back(&client).await?, "with space again");
    client.close();
    broker.kill()?;

    let broker = BrokerProcess::start(&data)?;
    let client = broker.client().await?;
    assert_acknowledged_stored(&acked, &read_back(&client).await?, "after SIGKILL");
    // Restarted, the partition takes produces again.
    for n in 0..RECORDS_AFTER {
        let value = format!("restarted-{n}");
        let (base, _) = client
            .produce("full", 0, Durability::Fsync, record_batch(&value)?)
            .await?;
        acked.insert(base, value);
    }
    assert_acknowledged_stored(&acked, &read_back(&client).await?, "after the restart");
    client.close();
    broker.kill()?;
    drop(disk);
    Ok(())
}
