//! `herald-bench broker --cluster N`: the same produce and consume workload against a cluster
//! of N `herald broker serve` processes on this machine (every partition replicated to
//! min(3, N) nodes through Raft), run after the single broker's phases of the same run; then
//! failovers (the leader of partition 0 SIGKILLed: time to the first acknowledged produce on
//! its successor) and the cost of idle partitions (CPU of the nodes while a topic of
//! `--idle-partitions` partitions only heartbeats).
//!
//! The nodes authenticate each other with certificates of a CA the bench makes, serve clients
//! one certificate (one fingerprint trusts them all) and run without client authentication
//! (users and ACLs are not replicated yet).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_broker_client::{dialer, Credentials, RequestError, Router, Trust};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::ErrorCode;

use crate::broker::{consume_partitions, encode_batch, herald_binary, Options};
use crate::report::{percentiles, report};

const TOPIC: &str = "bench";
const IDLE_TOPIC: &str = "idle";
/// How long one failover probe's produce may wait before it is given up and sent again (a
/// client's request timeout: the killed leader never answers).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the cluster gets for anything (an election, a restart).
const PATIENCE: Duration = Duration::from_secs(60);

/// One node's process.
struct Node {
    child: Child,
    args: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Node>>,
    listen: Vec<SocketAddr>,
    fingerprint: String,
}

/// Starts `herald` with `args`; the fingerprint its first line announces.
fn spawn(args: &[String]) -> anyhow::Result<(Child, String)> {
    // HERALD_BENCH_NODE_LOG=FILTER keeps each node's log (RUST_LOG=FILTER) in
    // `node-N.log` in the current directory, appended across restarts.
    let (filter, stderr) = match std::env::var("HERALD_BENCH_NODE_LOG") {
        Ok(filter) => {
            let node = args
                .iter()
                .skip_while(|arg| *arg != "--node-id")
                .nth(1)
                .context("no --node-id")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("node-{node}.log"))?;
            (filter, Stdio::from(file))
        }
        Err(_) => ("error".to_owned(), Stdio::null()),
    };
    let mut child = Command::new(herald_binary()?)
        .args(args)
        .env("RUST_LOG", filter)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let fingerprint = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fingerprint="))
        .with_context(|| format!("no fingerprint in '{}'", line.trim()))?
        .to_owned();
    Ok((child, fingerprint))
}

impl Cluster {
    fn start(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        herald_broker::tls::local_cluster_tls(dir.path(), size as u64)?;
        let raft = herald_netfault::free_udp_addrs(size)?;
        let listen = herald_netfault::free_udp_addrs(size)?;
        let peers = raft
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}={addr}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut nodes = Vec::new();
        let mut fingerprint = String::new();
        for node in 1..=size {
            let args: Vec<String> = [
                "broker",
                "serve",
                "--insecure-no-auth",
                "--listen",
                &listen[node - 1].to_string(),
                "--data-dir",
                &path(&format!("data-{node}")),
                "--node-id",
                &node.to_string(),
                "--peers",
                &peers,
                "--cluster-ca",
                &path("ca.pem"),
                "--node-cert",
                &path(&format!("node-{node}.pem")),
                "--node-key",
                &path(&format!("node-{node}.key")),
                "--tls-cert",
                &path("broker.pem"),
                "--tls-key",
                &path("broker.key"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let (child, announced) = spawn(&args)?;
            fingerprint = announced;
            nodes.push(Some(Node { child, args }));
        }
        Ok(Self {
            dir,
            nodes,
            listen,
            fingerprint,
        })
    }

    fn router(&self) -> Arc<Router> {
        Arc::new(self.router_over(self.listen.clone()))
    }

    /// A router that knows only `node` (its metadata answers are that node's view).
    fn router_to(&self, node: u64) -> anyhow::Result<Router> {
        let listen = *self
            .listen
            .get(usize::try_from(node)? - 1)
            .context("no such node")?;
        Ok(self.router_over(vec![listen]))
    }

    fn router_over(&self, bootstrap: Vec<SocketAddr>) -> Router {
        Router::new(
            dialer(
                bootstrap,
                Trust::Fingerprint(self.fingerprint.clone()),
                Credentials::None,
            ),
            None,
        )
    }

    /// SIGKILLs `node`; its arguments, for [`Cluster::restart`].
    fn kill(&mut self, node: u64) -> anyhow::Result<Vec<String>> {
        let slot = self
            .nodes
            .get_mut(usize::try_from(node)? - 1)
            .context("no such node")?;
        let mut killed = slot.take().context("node not running")?;
        killed.child.kill()?;
        killed.child.wait()?;
        Ok(std::mem::take(&mut killed.args))
    }

    fn restart(&mut self, node: u64, args: Vec<String>) -> anyhow::Result<()> {
        let slot = self
            .nodes
            .get_mut(usize::try_from(node)? - 1)
            .context("no such node")?;
        let (child, _) = spawn(&args)?;
        *slot = Some(Node { child, args });
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .flatten()
            .map(|node| node.child.id())
            .collect()
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// Creates `topic` through any node, waiting while the nodes register.
async fn create_topic(router: &Router, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let created = match router.any().await {
            Ok(route) => {
                let created = route
                    .client
                    .create_topic(
                        topic,
                        TopicConfig {
                            partitions,
                            retention: None,
                            segment_bytes: 1 << 30,
                            ..TopicConfig::default()
                        },
                    )
                    .await;
                if let Err(error) = &created {
                    router.failed(topic, &route, error);
                }
                created
            }
            Err(error) => Err(error),
        };
        match created {
            Ok(())
            | Err(RequestError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => return Ok(()),
            Err(error) => {
                anyhow::ensure!(Instant::now() < deadline, "{topic} not created: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until every partition of `topic` has a leader; the leader of each.
async fn leaders(router: &Router, topic: &str, partitions: u32) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(route) = router.any().await {
            match route.client.metadata(topic).await {
                Ok(metadata) => {
                    let leaders: Vec<u64> = metadata
                        .partitions
                        .iter()
                        .filter_map(|p| p.leader)
                        .collect();
                    if leaders.len() == partitions as usize {
                        return Ok(leaders);
                    }
                }
                Err(error) => router.failed(topic, &route, &error),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}: not every partition has a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `batch` to `partition` through its leader, following the cluster until it is
/// acknowledged; each attempt (finding the leader, connecting, the request) is given up after
/// `attempt_timeout`, as a client's request timeout would.
async fn produce(
    router: &Router,
    partition: u32,
    durability: Durability,
    batch: bytes::Bytes,
    attempt_timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let used = std::sync::Mutex::new(None);
        let attempt = async {
            let route = router.leader(TOPIC, partition).await?;
            *used.lock().unwrap_or_else(|p| p.into_inner()) = Some(route.clone());
            let sent = route
                .client
                .produce(TOPIC, partition, durability, batch.clone())
                .await;
            if let Err(error) = &sent {
                router.failed(TOPIC, &route, error);
            }
            sent
        };
        let error = match tokio::time::timeout(attempt_timeout, attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => {
                // Whatever it waited on (a dead leader's connection, a dial) is looked up
                // afresh.
                let error = RequestError::Timeout(attempt_timeout);
                router.forget(TOPIC);
                if let Some(route) = used.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    router.failed(TOPIC, &route, &error);
                }
                error
            }
        };
        anyhow::ensure!(
            error.retryable() && Instant::now() < deadline,
            "produce to {TOPIC}/{partition}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long after `killed` a surviving node (each asked on a connection of its own) names a
/// leader of partition 0 other than `dead`: the election alone, without the client's part.
async fn elected(survivors: &[Router], dead: u64, killed: Instant) -> anyhow::Result<Duration> {
    loop {
        for router in survivors {
            let Ok(route) = router.any().await else {
                continue;
            };
            match route.client.metadata(TOPIC).await {
                Ok(metadata) => {
                    let leader = metadata
                        .partitions
                        .iter()
                        .find(|p| p.partition == 0)
                        .and_then(|p| p.leader);
                    if leader.is_some_and(|leader| leader != dead) {
                        return Ok(killed.elapsed());
                    }
                }
                Err(error) => router.failed(TOPIC, &route, &error),
            }
        }
        anyhow::ensure!(
            killed.elapsed() < PATIENCE,
            "no new leader of {TOPIC}/0 named"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU seconds (user + system) `pid` used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
        + fields.get(12).context("stime")?.parse::<f64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// The nodes' CPU use over `window`, percent of one core per node.
async fn cpu_percent(pids: &[u32], window: Duration) -> anyhow::Result<Vec<f64>> {
    let before: Vec<f64> = pids
        .iter()
        .map(|pid| cpu_seconds(*pid))
        .collect::<Result<_, _>>()?;
    tokio::time::sleep(window).await;
    let after: Vec<f64> = pids
        .iter()
        .map(|pid| cpu_seconds(*pid))
        .collect::<Result<_, _>>()?;
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) / window.as_secs_f64() * 100.0)
        .collect())
}

pub(crate) async fn run(options: &Options, durability: Durability) -> anyhow::Result<()> {
    let size = options.cluster as usize;
    let mut cluster = Cluster::start(size)?;
    let router = cluster.router();
    let partitions = options.partitions;
    create_topic(&router, TOPIC, partitions).await?;
    leaders(&router, TOPIC, partitions).await?;
    let label = format!(
        "herald-cluster{size}-{}",
        match durability {
            Durability::Memory => "memory",
            Durability::Fsync => "fsync",
        }
    );
    println!(
        "# herald cluster: {size} nodes in {}, replication factor {}, {} partition(s), window {}",
        cluster.dir().display(),
        size.min(3),
        partitions,
        options.window
    );

    // Produce at full speed, a window of batches in flight, each to its partition's leader.
    let value = vec![b'x'; options.record_bytes];
    let batch = bytes::Bytes::from(encode_batch(0, options.batch_records, &value, None)?);
    let batch_count = options.records.div_ceil(options.batch_records);
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(batch_count);
    for n in 0..batch_count {
        if in_flight.len() >= options.window {
            if let Some(done) = in_flight.join_next().await {
                latencies.push(done??);
            }
        }
        let (router, batch) = (router.clone(), batch.clone());
        let partition = n as u32 % partitions;
        in_flight.spawn(async move {
            let sent = Instant::now();
            produce(&router, partition, durability, batch, PATIENCE).await?;
            Ok::<_, anyhow::Error>(sent.elapsed())
        });
    }
    while let Some(done) = in_flight.join_next().await {
        latencies.push(done??);
    }
    let produced = batch_count * options.batch_records;
    report(
        &label,
        "produce",
        produced,
        options.record_bytes,
        started.elapsed(),
        latencies,
    );

    // Consume everything back from each partition's leader, one reader per partition.
    let mut readers = Vec::new();
    for partition in 0..partitions {
        readers.push((partition, router.leader(TOPIC, partition).await?.client));
    }
    let started = Instant::now();
    let (consumed, fetch_latencies) =
        consume_partitions(readers, options.fetch_bytes, produced).await?;
    report(
        &label,
        "consume",
        consumed,
        options.record_bytes,
        started.elapsed(),
        fetch_latencies,
    );

    // Failovers: SIGKILL the leader of partition 0, then produce small batches to it
    // (each attempt given up after PROBE_TIMEOUT, as a client's request timeout would) until
    // one is acknowledged by a new leader; then the node is restarted and the cluster
    // settles before the next.
    let probe = bytes::Bytes::from(encode_batch(0, 1, &value, None)?);
    let mut failovers = Vec::new();
    let mut elections = Vec::new();
    for _ in 0..options.failovers {
        let leader = leaders(&router, TOPIC, partitions).await?[0];
        let survivors: Vec<Router> = (1..=size as u64)
            .filter(|node| *node != leader)
            .map(|node| cluster.router_to(node))
            .collect::<anyhow::Result<_>>()?;
        for survivor in &survivors {
            survivor.any().await?;
        }
        // Route partition 0 to its current leader before the kill, as a running producer has.
        produce(&router, 0, durability, probe.clone(), PATIENCE).await?;
        let killed = Instant::now();
        let args = cluster.kill(leader)?;
        let (acked, election) = tokio::join!(
            produce(&router, 0, durability, probe.clone(), PROBE_TIMEOUT),
            elected(&survivors, leader, killed)
        );
        acked?;
        failovers.push(killed.elapsed());
        elections.push(election?);
        cluster.restart(leader, args)?;
        // The restarted node catches up; every partition has a leader again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        leaders(&router, TOPIC, partitions).await?;
    }
    if !failovers.is_empty() {
        let (p50, _, _) = percentiles(failovers.clone());
        let max = failovers.iter().max().copied().unwrap_or_default();
        let (elected_p50, _, _) = percentiles(elections.clone());
        let elected_max = elections.iter().max().copied().unwrap_or_default();
        println!(
            "system={label} phase=failover runs={} p50_ms={p50:.0} max_ms={:.0} elected_p50_ms={elected_p50:.0} elected_max_ms={:.0}",
            failovers.len(),
            max.as_secs_f64() * 1000.0,
            elected_max.as_secs_f64() * 1000.0
        );
    }

    // Idle partitions: CPU of the nodes with only the bench topic, then with a topic of
    // --idle-partitions more partitions that only heartbeat.
    if options.idle_partitions > 0 {
        let window = Duration::from_secs(10);
        let before = cpu_percent(&cluster.pids(), window).await?;
        let started = Instant::now();
        create_topic(&router, IDLE_TOPIC, options.idle_partitions).await?;
        leaders(&router, IDLE_TOPIC, options.idle_partitions).await?;
        let elected = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = cpu_percent(&cluster.pids(), window).await?;
        let show = |cpu: &[f64]| {
            cpu.iter()
                .map(|c| format!("{c:.1}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "system={label} phase=idle_partitions partitions={} leaders_elected_ms={} cpu_percent_per_node_before={} cpu_percent_per_node_after={}",
            options.idle_partitions,
            elected.as_millis(),
            show(&before),
            show(&after)
        );
    }
    Ok(())
}
