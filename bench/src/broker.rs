//! Broker benchmarks: one producer (a window of in-flight batches), one consumer, over real
//! QUIC to a `herald broker` process started by the bench, then ack latency at fixed rates
//! (`crate::fixed_rate`); optionally the same workload against NATS JetStream (`--peer nats`)
//! in the same run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_broker_client::{BrokerClient, Credentials, Trust};
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};

use crate::broker_nats::Workload;
use crate::fixed_rate::Schedule as FixedRateSchedule;
use crate::report::report;

#[derive(clap::Args, Clone)]
pub(crate) struct Options {
    /// Records produced (and then consumed).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) records: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    pub(crate) record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch_records: usize,
    /// Partitions of the topic (batches go round robin).
    #[arg(long, default_value_t = 1)]
    pub(crate) partitions: u32,
    /// memory or fsync.
    #[arg(long, default_value = "memory")]
    durability: String,
    /// Produce requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) window: usize,
    /// Target rates of the fixed-rate phases, records per second, comma separated. Each phase
    /// sends batches on an open-loop schedule and measures ack latency from each batch's
    /// intended send time. An empty value (`--rates ''`) skips the phases.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_rate,
        default_values_t = [250_000_u64, 500_000, 1_000_000, 2_000_000]
    )]
    rates: Vec<u64>,
    /// Seconds of each fixed-rate phase, at least (0 skips the phases).
    #[arg(long, default_value_t = 10)]
    phase_seconds: u64,
    /// Produce as an idempotent producer (producer id, epoch, sequences), to measure its cost.
    #[arg(long)]
    idempotent: bool,
    /// How produce requests travel: a QUIC stream each (per-request), or one long-lived
    /// stream per partition whose requests the broker answers in order (pipeline; always so
    /// with --idempotent).
    #[arg(long, default_value = "per-request", value_parser = ["per-request", "pipeline"])]
    streams: String,
    /// Bytes each consume fetch asks for (the SDK consumer's default is 1 MiB); the next
    /// fetch is in flight while one is checked
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) fetch_bytes: u32,
    /// Also consume through a consumer group with this many members, and time a rebalance
    /// when one more joins (0 skips both).
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    /// Group session timeout for the group phases (heartbeat interval is a third of it).
    #[arg(long, default_value_t = 3000)]
    group_session_ms: u64,
    /// Also run the workload against this peer: nats, or iggy (with --iggy-dir).
    #[arg(long, value_parser = ["nats", "iggy"])]
    peer: Option<String>,
    /// An Apache Iggy checkout built in release mode (target/release/iggy-server and
    /// iggy-bench), for --peer iggy.
    #[arg(long, value_name = "DIR")]
    iggy_dir: Option<PathBuf>,
    /// on: the broker requires authentication and the bench connects as a user that is not a
    /// super user, so every request is checked against ACLs; off: `--insecure-no-auth`.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    auth: String,
    /// After the single broker, run produce and consume against a cluster of this many
    /// `herald broker serve` processes on this machine (replication factor min(3, N)), then
    /// failovers and idle partitions (0: no cluster).
    #[arg(long, default_value_t = 0)]
    pub(crate) cluster: u32,
    /// Leader kills of the cluster's failover phase.
    #[arg(long, default_value_t = 5)]
    pub(crate) failovers: usize,
    /// Partitions of the idle topic whose heartbeat cost the cluster phase measures (0 skips).
    #[arg(long, default_value_t = 100)]
    pub(crate) idle_partitions: u32,
}

pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.window > 0
            && options.batch_records > 0
            && options.records > 0
            && options.fetch_bytes > 0,
        "--window, --batch-records, --records and --fetch-bytes must be at least 1"
    );
    let durability = match options.durability.as_str() {
        "memory" => Durability::Memory,
        "fsync" => Durability::Fsync,
        other => anyhow::bail!("--durability must be memory or fsync, not '{other}'"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(herald(&options, durability))?;
    if options.cluster > 0 {
        runtime.block_on(crate::broker_cluster::run(&options, durability))?;
    }
    match options.peer.as_deref() {
        None => {}
        Some("iggy") => {
            let dir = options
                .iggy_dir
                .as_deref()
                .context("--peer iggy needs --iggy-dir (an Iggy checkout built in release mode)")?;
            crate::broker_iggy::run(
                &crate::broker_iggy::Workload {
                    records: options.records,
                    record_bytes: options.record_bytes,
                    batch_records: options.batch_records,
                    window: options.window,
                    fsync: durability == Durability::Fsync,
                },
                dir,
            )?;
        }
        Some(_) => runtime.block_on(crate::broker_nats::run(
            &options_view(&options),
            durability == Durability::Fsync,
        ))?,
    }
    Ok(())
}

/// Parses one `--rates` entry; an empty entry (`--rates ''`) is 0, which runs no phase.
fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse()
        .map_err(|e| format!("'{text}' is not a number of records per second: {e}"))
}

fn options_view(options: &Options) -> Workload {
    Workload {
        records: options.records,
        record_bytes: options.record_bytes,
        batch_records: options.batch_records,
        window: options.window,
        schedule: options.schedule(),
    }
}

/// A process the bench started (a Herald broker or registry, or a peer's server) with its
/// temporary directory: killed, and the directory removed, when dropped.
pub(crate) struct BenchProcess {
    pub(crate) child: Child,
    dir: tempfile::TempDir,
}

impl BenchProcess {
    pub(crate) fn new(child: Child, dir: tempfile::TempDir) -> Self {
        Self { child, dir }
    }

    /// The process's temporary directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The broker's data directory (`start_broker` serves `<dir>/data`).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A loopback port free right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    herald_netfault::free_tcp_addrs(1)?
        .first()
        .map(|addr| addr.port())
        .context("no free port")
}

impl Drop for BenchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn herald_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("herald");
    anyhow::ensure!(
        path.exists(),
        "{} not found: cargo build --release -p herald-cli first",
        path.display()
    );
    Ok(path)
}

/// The user the benches connect as when authentication is on.
const BENCH_USER: &str = "bench";
const BENCH_PASSWORD: &str = "bench password, long enough";

/// A broker the bench started, and how to connect to it.
pub(crate) struct StartedBroker {
    /// Kept for its lifetime: dropping it kills the broker.
    pub(crate) _process: BenchProcess,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) fingerprint: String,
    pub(crate) credentials: Credentials,
}

impl StartedBroker {
    pub(crate) async fn client(&self) -> anyhow::Result<BrokerClient> {
        Ok(BrokerClient::connect_with(
            self.addr,
            Trust::Fingerprint(self.fingerprint.clone()),
            &self.credentials,
        )
        .await?)
    }
}

/// Starts a broker; with `auth`, adds [`BENCH_USER`] (with `herald user add`) and grants it
/// everything on every topic and group through ACL entries (literal `*`), as the generated
/// admin, so that its requests take the whole authorization path (a super user would skip
/// the ACLs).
pub(crate) async fn start_broker_as_user(
    group_session_ms: u64,
    auth: bool,
) -> anyhow::Result<StartedBroker> {
    use herald_auth::acl::{AclEntry, Operation, ResourceType};
    let (process, addr, fingerprint) = start_broker(group_session_ms, auth)?;
    if !auth {
        return Ok(StartedBroker {
            _process: process,
            addr,
            fingerprint,
            credentials: Credentials::None,
        });
    }
    let data_dir = process.data_dir();
    let mut child = Command::new(herald_binary()?)
        .args(["user", "add", BENCH_USER, "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("stdin")?,
        format!("{BENCH_PASSWORD}\n").as_bytes(),
    )?;
    anyhow::ensure!(child.wait()?.success(), "herald user add failed");
    let admin = BrokerClient::connect_with(
        addr,
        Trust::Fingerprint(fingerprint.clone()),
        &Credentials::from_local_file(&data_dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE))?,
    )
    .await?;
    let entries = [ResourceType::Topic, ResourceType::Group]
        .into_iter()
        .map(|resource_type| {
            AclEntry::allow_literal(BENCH_USER, resource_type, "*", Operation::All)
        })
        .collect::<Result<Vec<_>, _>>()?;
    admin.create_acls(entries).await?;
    Ok(StartedBroker {
        _process: process,
        addr,
        fingerprint,
        credentials: Credentials::scram(BENCH_USER, BENCH_PASSWORD),
    })
}

pub(crate) fn start_broker(
    group_session_ms: u64,
    auth: bool,
) -> anyhow::Result<(BenchProcess, std::net::SocketAddr, String)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("group_session_timeout_ms = {group_session_ms}\n"),
    )?;
    let mut child = Command::new(herald_binary()?)
        .args(["broker", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(if auth {
            &[][..]
        } else {
            &["--insecure-no-auth"][..]
        })
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let rest = line
        .trim()
        .strip_prefix("herald broker listening on quic://")
        .context("no address line")?;
    let mut words = rest.split_whitespace();
    let addr = words.next().context("addr")?.parse()?;
    let fingerprint = words
        .next()
        .and_then(|w| w.strip_prefix("fingerprint="))
        .context("fingerprint")?
        .to_owned();
    Ok((BenchProcess::new(child, dir), addr, fingerprint))
}

pub(crate) fn encode_batch(
    first: usize,
    count: usize,
    value: &[u8],
    producer: Option<(i64, i16)>,
) -> anyhow::Result<Vec<u8>> {
    let mut builder = match producer {
        // One partition per sequence space: the bench's sequences count records per partition.
        Some((id, epoch)) => BatchBuilder::new().idempotent(id, epoch, first as i32),
        None => BatchBuilder::new(),
    };
    for n in 0..count {
        builder.push(Record {
            timestamp_ms: (first + n) as i64,
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        });
    }
    Ok(builder.encode()?)
}

async fn herald(options: &Options, durability: Durability) -> anyhow::Result<()> {
    let broker = start_broker_as_user(options.group_session_ms, options.auth == "on").await?;
    let client = broker.client().await?;
    client
        .create_topic(
            "bench",
            TopicConfig {
                partitions: options.partitions,
                retention: None,
                segment_bytes: 1 << 30,
                ..TopicConfig::default()
            },
        )
        .await?;
    let value = vec![b'x'; options.record_bytes];
    let batch_count = options.records.div_ceil(options.batch_records);
    let label = format!(
        "herald-{}{}",
        options.durability,
        if options.idempotent {
            "-idempotent"
        } else if options.streams == "pipeline" {
            "-pipeline"
        } else {
            ""
        }
    );
    let producer = if options.idempotent {
        Some(client.init_producer("bench").await?)
    } else {
        None
    };
    println!("# herald: {} records of {} bytes in batches of {}, {} partition(s), window {}, durability {}, auth {}, streams {}", options.records, options.record_bytes, options.batch_records, options.partitions, options.window, options.durability, options.auth, if options.idempotent { "pipeline" } else { options.streams.as_str() });

    // Produce at full speed with a window of in-flight batches.
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(batch_count);
    if producer.is_some() || options.streams == "pipeline" {
        // Each partition's batches go through one ordered pipeline (for an idempotent
        // producer, so that their sequences arrive in order); the window is shared across
        // partitions.
        let prepared = bytes::Bytes::from(encode_batch(0, options.batch_records, &value, None)?);
        let mut pipelines = Vec::new();
        for _ in 0..options.partitions {
            pipelines.push(client.pipeline().await?);
        }
        let mut waiting = std::collections::VecDeque::new();
        for n in 0..batch_count {
            if waiting.len() >= options.window {
                let (sent, answer): (Instant, tokio::sync::oneshot::Receiver<_>) =
                    waiting.pop_front().context("window")?;
                check_produced(answer.await??)?;
                latencies.push(Instant::elapsed(&sent));
            }
            let partition = n as u32 % options.partitions;
            let first_in_partition = (n / options.partitions as usize) * options.batch_records;
            let batch = match producer {
                Some(producer) => encode_batch(
                    first_in_partition,
                    options.batch_records,
                    &value,
                    Some(producer),
                )?
                .into(),
                None => prepared.clone(),
            };
            let request = herald_wire::Request::Produce {
                topic: "bench".into(),
                partition,
                durability,
                batch,
            };
            let sent = Instant::now();
            waiting.push_back((sent, pipelines[partition as usize].send(&request).await?));
        }
        while let Some((sent, answer)) = waiting.pop_front() {
            check_produced(answer.await??)?;
            latencies.push(sent.elapsed());
        }
    } else {
        // One batch encoded up front and sent again and again (the broker gives each its own
        // offsets), as Iggy's bench re-sends one prepared batch: the produce phase measures
        // the transport and the broker, not the encoder sharing their cores.
        let prepared = bytes::Bytes::from(encode_batch(0, options.batch_records, &value, None)?);
        for n in 0..batch_count {
            if in_flight.len() >= options.window {
                if let Some(done) = in_flight.join_next().await {
                    latencies.push(done??);
                }
            }
            let batch = prepared.clone();
            spawn_produce(
                &mut in_flight,
                &client,
                n as u32 % options.partitions,
                durability,
                batch,
            );
        }
        while let Some(done) = in_flight.join_next().await {
            latencies.push(done??);
        }
    }
    let produced = batch_count * options.batch_records;
    report(
        &label,
        "produce",
        produced,
        options.records_bytes(),
        started.elapsed(),
        latencies,
    );

    // Consume everything back, checking every CRC and counting records: one reader per
    // partition, all at once, each on a connection of its own (as Iggy's bench runs one
    // consumer, with its own client, per producer), each with the next fetch in flight while
    // it checks the last one (as the SDK's consumer prefetches).
    let mut reader_clients = vec![client.clone()];
    for _ in 1..options.partitions {
        reader_clients.push(broker.client().await?);
    }
    let started = Instant::now();
    let (consumed, fetch_latencies) = consume_partitions(
        (0..options.partitions).zip(reader_clients).collect(),
        options.fetch_bytes,
        produced,
    )
    .await?;
    if options.consumers > 0 {
        let mut clients = Vec::new();
        for _ in 0..options.consumers {
            clients.push(broker.client().await?);
        }
        let group = format!("bench-{}", options.consumers);
        crate::broker_groups::consume(
            &clients,
            &group,
            options.consumers,
            produced,
            options.record_bytes,
            &label,
        )
        .await?;
    }
    report(
        &label,
        "consume",
        consumed,
        options.records_bytes(),
        started.elapsed(),
        fetch_latencies,
    );

    // Ack latency at fixed rates: batches due on an open-loop schedule, each one's latency from
    // its intended send time. Not idempotent whatever `--idempotent` says (as the system name
    // tells); one pre-encoded batch is cloned per send so the bench's own CPU stays low.
    let schedule = options.schedule();
    if !schedule.is_empty() {
        let batch = encode_batch(0, options.batch_records, &value, None)?;
        let sender = client.clone();
        let partitions = u64::from(options.partitions.max(1));
        let send = move |index: u64| {
            let client = sender.clone();
            let batch = batch.clone();
            let partition = (index % partitions) as u32;
            async move {
                client
                    .produce("bench", partition, durability, batch)
                    .await
                    .with_context(|| format!("produce to partition {partition}"))?;
                Ok::<(), anyhow::Error>(())
            }
        };
        crate::fixed_rate::run_phases(
            &format!("herald-{}", options.durability),
            &schedule,
            None,
            send,
        )
        .await?;
    }
    if options.consumers > 0 {
        if options.partitions as usize > options.consumers {
            crate::broker_groups::rebalance(
                &client,
                options.consumers,
                &label,
                Duration::from_millis(options.group_session_ms / 3),
            )
            .await?;
            if options.consumers >= 2 {
                crate::broker_groups::rebalance_on_death(
                    &client,
                    options.consumers,
                    options.partitions,
                    &label,
                    Duration::from_millis(options.group_session_ms / 3),
                )
                .await?;
            }
        } else {
            println!(
                "# rebalance skipped: with {} partition(s) a member joining {} would stay idle",
                options.partitions, options.consumers
            );
        }
    }
    client.close();
    Ok(())
}

/// Reads `partition` from offset 0 to its end, checking every batch's CRC and counting its
/// records, with the next fetch in flight while one is checked. Returns the records read and
/// each fetch's latency.
/// Reads every partition back at once, one reader each (`readers`: partition and the
/// connection to read it on), and checks that `expected` records came; the records read and
/// every fetch's latency.
pub(crate) async fn consume_partitions(
    readers: Vec<(u32, BrokerClient)>,
    fetch_bytes: u32,
    expected: usize,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let mut running = tokio::task::JoinSet::new();
    for (partition, reader) in readers {
        running.spawn(consume_partition(reader, partition, fetch_bytes));
    }
    let mut consumed = 0usize;
    let mut fetch_latencies = Vec::new();
    while let Some(read) = running.join_next().await {
        let (records, latencies) = read??;
        consumed += records;
        fetch_latencies.extend(latencies);
    }
    anyhow::ensure!(
        consumed == expected,
        "consumed {consumed} of {expected} records"
    );
    Ok((consumed, fetch_latencies))
}

async fn consume_partition(
    client: BrokerClient,
    partition: u32,
    fetch_bytes: u32,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let fetch = |offset: i64| {
        let client = client.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let fetched = client
                .fetch("bench", partition, offset, fetch_bytes, Duration::ZERO, 1)
                .await;
            (fetched, sent.elapsed())
        })
    };
    let mut consumed = 0;
    let mut latencies = Vec::new();
    let mut next = fetch(0);
    loop {
        let (fetched, latency) = next.await?;
        let fetched = fetched?;
        latencies.push(latency);
        // Where the next fetch starts, from the batch headers alone (as the SDK's consumer
        // finds it); then it goes out before this one's records are checked.
        let Some(end) = herald_wire::batch::next_offset_after(&fetched.batches) else {
            return Ok((consumed, latencies));
        };
        next = fetch(end);
        // Let the next fetch go out before checking this one: on one worker thread the
        // request (and quinn's connection driver sending it) would otherwise wait for the check.
        tokio::task::yield_now().await;
        for view in batches(&fetched.batches) {
            let view = view?;
            if !view.is_control() {
                consumed += view.records().filter(|r| r.is_ok()).count();
            }
        }
    }
}

/// Sends one produce in the background; the task yields its ack latency.
fn spawn_produce(
    in_flight: &mut tokio::task::JoinSet<anyhow::Result<Duration>>,
    client: &BrokerClient,
    partition: u32,
    durability: Durability,
    batch: bytes::Bytes,
) {
    let client = client.clone();
    in_flight.spawn(async move {
        let sent = Instant::now();
        client
            .produce("bench", partition, durability, batch)
            .await?;
        Ok(sent.elapsed())
    });
}

pub(crate) fn check_produced(response: herald_wire::Response) -> anyhow::Result<()> {
    match response {
        herald_wire::Response::Produced { .. } => Ok(()),
        other => anyhow::bail!("produce failed: {other:?}"),
    }
}

impl Options {
    fn records_bytes(&self) -> usize {
        self.record_bytes
    }

    fn schedule(&self) -> FixedRateSchedule {
        FixedRateSchedule::new(&self.rates, self.phase_seconds, self.batch_records)
    }
}
