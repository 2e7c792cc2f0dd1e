//! Open files with the real `herald` broker under a low descriptor limit (`ulimit -n 256`, soft
//! and hard, so raising the soft limit at start cannot help): a topic of tiny segments grows
//! to 300 segments, is read back, the broker is SIGKILLed and restarted under the same limit,
//! and every record reads back again.
//!
//! The defect (issue 14): every segment held its three files (`.log`, `.index`, `.timeindex`)
//! open for its whole life, so 300 segments needed 900 descriptors — past 256 the broker failed
//! to roll ("Too many open files") and, restarted, failed to open its partitions at all. Now
//! only each partition's active segment holds files; sealed segments are read through a cache
//! of read handles bounded by a quarter of the limit.

#![cfg(unix)]

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use herald_broker_client::BrokerClient;
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};

/// The broker's descriptor limit, soft and hard.
const OPEN_FILES_LIMIT: usize = 256;
const PARTITIONS: u32 = 2;
/// Batches per partition; each fills a segment of its own (see [`SEGMENT_BYTES`]).
const BATCHES: usize = 150;
const RECORDS_PER_BATCH: usize = 7;
const VALUE_BYTES: usize = 500;
/// The smallest segment a topic may have: one batch of ~3.6 KiB fits, two do not, so every
/// batch rolls the partition to a new segment.
const SEGMENT_BYTES: u64 = 4 * 1024;
const TOPIC: &str = "files";

// Not even one descriptor per segment fits under the limit, let alone the three of before.
const _: () = assert!(PARTITIONS as usize * BATCHES > OPEN_FILES_LIMIT);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_of_many_segments_runs_and_restarts_under_a_low_open_files_limit(
) -> anyhow::Result<()> {
    let batch_bytes = encode(0, 0)?.len() as u64;
    assert!(
        batch_bytes <= SEGMENT_BYTES && 2 * batch_bytes > SEGMENT_BYTES,
        "a batch of {batch_bytes} bytes must fill a segment of its own"
    );
    let dir = tempfile::tempdir()?;
    let broker = start_limited(dir.path())?;
    if let Some((soft, hard)) = open_files_limits(broker.pid()) {
        assert_eq!(
            (soft, hard),
            (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT),
            "the broker runs under the limit"
        );
    }
    let client = broker.client().await?;
    client
        .create_topic(
            TOPIC,
            TopicConfig {
                partitions: PARTITIONS,
                segment_bytes: SEGMENT_BYTES,
                retention: None,
                ..TopicConfig::default()
            },
        )
        .await?;
    let mut producers = Vec::new();
    for partition in 0..PARTITIONS {
        let client = client.clone();
        producers.push(tokio::spawn(async move {
            for batch in 0..BATCHES {
                let (base_offset, _) = client
                    .produce(
                        TOPIC,
                        partition,
                        Durability::Memory,
                        encode(partition, batch)?,
                    )
                    .await
                    .with_context(|| format!("produce batch {batch} to partition {partition}"))?;
                anyhow::ensure!(
                    base_offset == (batch * RECORDS_PER_BATCH) as i64,
                    "partition {partition} batch {batch} stored at {base_offset}"
                );
            }
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let segments = segment_count(&dir.path().join("topics"));
    assert!(
        segments >= PARTITIONS as usize * BATCHES,
        "every batch rolls a segment: {segments} segments"
    );
    for partition in 0..PARTITIONS {
        check_partition(&client, partition).await?;
    }
    client.close();
    broker.kill()?;

    let broker =
        start_limited(dir.path()).context("restart with 300 segments under `ulimit -n 256`")?;
    let client = broker.client().await?;
    for partition in 0..PARTITIONS {
        check_partition(&client, partition).await?;
    }
    if let Some(open) = open_descriptors(broker.pid()) {
        // The active segments' files, the bounded read cache (a quarter of the limit),
        // sockets and the runtime's own: well within the limit however many segments exist.
        assert!(
            open <= OPEN_FILES_LIMIT / 2,
            "{open} descriptors open after reading {segments} segments"
        );
    }
    client.close();
    broker.kill()?;
    Ok(())
}

/// The value of record `index` of `batch` of `partition`, padded to [`VALUE_BYTES`].
fn value(partition: u32, batch: usize, index: usize) -> Vec<u8> {
    let mut value = format!("p{partition}-b{batch}-r{index}-").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

fn encode(partition: u32, batch: usize) -> anyhow::Result<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    for index in 0..RECORDS_PER_BATCH {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value(partition, batch, index)),
            headers: Vec::new(),
        });
    }
    Ok(builder.encode()?)
}

/// Reads the whole partition back: dense offsets, every record's value as produced.
async fn check_partition(client: &BrokerClient, partition: u32) -> anyhow::Result<()> {
    let total = (BATCHES * RECORDS_PER_BATCH) as i64;
    let mut offset = 0i64;
    while offset < total {
        let fetched = client
            .fetch(TOPIC, partition, offset, 256 * 1024, Duration::ZERO, 1)
            .await
            .with_context(|| format!("fetch partition {partition} at {offset}"))?;
        anyhow::ensure!(
            !fetched.batches.is_empty(),
            "partition {partition} ends at {offset}, before {total}"
        );
        for view in batches(&fetched.batches) {
            let view = view.with_context(|| format!("partition {partition} at {offset}"))?;
            anyhow::ensure!(view.base_offset() == offset, "offsets are dense");
            for (i, record) in view.records().enumerate() {
                let record = record?;
                let at = view.base_offset() as usize + i;
                let expected = value(partition, at / RECORDS_PER_BATCH, at % RECORDS_PER_BATCH);
                anyhow::ensure!(
                    record.value == Some(&expected[..]),
                    "partition {partition} offset {at} holds something else"
                );
            }
            offset = view.next_offset();
        }
    }
    anyhow::ensure!(
        offset == total,
        "partition {partition} holds {offset} records"
    );
    Ok(())
}

/// `.log` files anywhere under `dir` (segments, whatever the layout of topic directories).
fn segment_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                segment_count(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "log"))
            }
        })
        .sum()
}

/// `herald broker serve` under the limit, soft and hard, from its first instruction: started
/// through a shell that sets the limit and then becomes the broker (`BrokerProcess::start`
/// spawns the binary directly, under this process's limit).
fn start_limited(data_dir: &Path) -> anyhow::Result<BrokerProcess> {
    BrokerProcess::start_in_shell(
        data_dir,
        // Soft first: a hard limit below the soft one is refused.
        &format!("ulimit -Sn {OPEN_FILES_LIMIT} && ulimit -Hn {OPEN_FILES_LIMIT} || exit 97;"),
    )
    .with_context(|| format!("the broker did not start under `ulimit -n {OPEN_FILES_LIMIT}`"))
}

/// The (soft, hard) open-files limits of process `pid`, where `/proc` tells.
fn open_files_limits(pid: u32) -> Option<(usize, usize)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut numbers = line
        .split_whitespace()
        .filter_map(|word| word.parse::<usize>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Descriptors process `pid` has open, where `/proc` tells.
fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}
