//! A three-node cluster of real `herald broker serve` processes on 127.0.0.1 (nodes
//! authenticate each other with certificates a test CA signed): a topic created through one
//! node is placed on all three; produced batches go to the partition's leader (the others
//! answer `NotLeader`); the leader is SIGKILLed and restarted, `ROUNDS` times, while the
//! producer moves to whichever node leads. Afterwards every node holds every acknowledged
//! record at its acknowledged offset, and no offset holds two different records on any two
//! nodes. Raise `ROUNDS` locally for a longer loop. Idempotent SDK producers go through the
//! same checks across leader kills and across leader pauses (SIGSTOP longer than an election,
//! then SIGCONT). A consumer group's commits survive SIGKILLs of its coordinator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use herald::producer::{ProduceError, ProducerConfig, RawProducer};
use herald_broker_client::{dialer, BrokerClient, Credentials, Dial, RequestError, Router};
use herald_netfault::{free_tcp_addrs, free_udp_addrs, Relay, Weather};
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::ErrorCode;

const ROUNDS: usize = 3;
/// Leader kills of the idempotent-producer loop; `HERALD_FAILOVER_ROUNDS` raises it locally.
const IDEMPOTENT_ROUNDS_DEFAULT: usize = 3;
/// Leader pauses of the same loop; `HERALD_PAUSE_ROUNDS` raises it locally.
const PAUSE_ROUNDS_DEFAULT: usize = 2;
/// The relay's seed unless `HERALD_RELAY_SEED` names one.
const RELAY_SEED_DEFAULT: u64 = 16;
/// How long a paused leader stays stopped: longer than an election takes (1.5-2 s of silence).
const PAUSE: Duration = Duration::from_secs(4);
const IDEMPOTENT_TOPIC: &str = "payments";
const IDEMPOTENT_PARTITIONS: u32 = 3;
/// Records the producer sends between two kills (so that every partition took records again).
const PROGRESS_RECORDS: u64 = 600;
const BATCHES_PER_ROUND: usize = 15;
const TOPIC: &str = "replicated";

/// The cluster's CA, each node's certificate and key, and the one client-facing certificate
/// every node serves (so that one pinned fingerprint trusts the whole cluster), as `herald
/// cluster up` makes them; their paths.
fn certificates(dir: &Path, nodes: usize) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let tls = herald_broker::tls::local_cluster_tls(dir, nodes as u64)?;
    let show = |path: &Path| path.display().to_string();
    Ok((
        show(&tls.ca),
        tls.nodes
            .iter()
            .map(|(cert, key)| (show(cert), show(key)))
            .collect(),
    ))
}

struct Cluster {
    dir: tempfile::TempDir,
    peers: String,
    ca: String,
    nodes: Vec<(String, String)>,
    /// Each node's client address (kept across restarts).
    listen: Vec<SocketAddr>,
    /// Each node's own Raft address when its peers reach it through a relay.
    raft_listen: Option<Vec<SocketAddr>>,
    /// Each node's `/metrics` address.
    metrics: Vec<SocketAddr>,
    /// More arguments for every node.
    extra: Vec<String>,
    /// Authentication on (every node's users file holds the same admin, written by
    /// [`Cluster::shared_admin`]); off (`--insecure-no-auth`) otherwise.
    auth: bool,
    /// Nodes given their cluster settings in a TOML config file instead of flags.
    in_file: std::collections::BTreeSet<usize>,
    /// What nodes advertise to clients (in their file if they have one, else as a flag).
    advertise: BTreeMap<usize, String>,
}

impl Cluster {
    /// Certificates, Raft and client addresses for `nodes` nodes (none started).
    fn new(nodes: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (ca, certificates) = certificates(dir.path(), nodes)?;
        let peers = free_udp_addrs(nodes)?
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}={addr}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            dir,
            peers,
            ca,
            nodes: certificates,
            listen: free_udp_addrs(nodes)?,
            raft_listen: None,
            metrics: free_tcp_addrs(nodes)?,
            extra: Vec::new(),
            auth: false,
            in_file: Default::default(),
            advertise: BTreeMap::new(),
        })
    }

    /// The same with every node's peers reaching it through `relay` started here (seeded
    /// with `seed`).
    async fn relayed(nodes: usize, seed: u64) -> anyhow::Result<(Self, Relay)> {
        let mut cluster = Self::new(nodes)?;
        let own = free_udp_addrs(nodes)?;
        let relay = Relay::start(
            &own.iter()
                .enumerate()
                .map(|(i, addr)| (i as u64 + 1, *addr))
                .collect(),
            seed,
        )
        .await?;
        cluster.peers = (1..=nodes as u64)
            .map(|id| {
                let front = relay.front(id).context("relay front")?;
                Ok(format!("{id}={front}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(",");
        cluster.raft_listen = Some(own);
        Ok((cluster, relay))
    }

    /// Turns authentication on with one admin for every node (as `herald cluster up` does):
    /// the same user in each node's users file and its credentials file, where a test's
    /// broker client finds them.
    fn shared_admin(&mut self) -> anyhow::Result<()> {
        let credentials = herald_auth::local::LocalCredentials::generate()?;
        for node in 1..=self.nodes.len() {
            let data_dir = self.dir.path().join(format!("node-{node}"));
            std::fs::create_dir_all(&data_dir)?;
            herald_auth::users::Users::open(&data_dir)?.add_local_admin(&credentials, &data_dir)?;
        }
        self.auth = true;
        Ok(())
    }

    /// Starts every node: their processes by node number.
    fn start_all(&self) -> anyhow::Result<BTreeMap<usize, BrokerProcess>> {
        (1..=self.nodes.len())
            .map(|node| Ok((node, self.start(node)?)))
            .collect()
    }

    /// Dials any node (or a named one), trusting the certificate every node serves clients.
    fn dialer(&self, processes: &BTreeMap<usize, BrokerProcess>) -> anyhow::Result<Dial> {
        let trust = processes.values().next().context("a node")?.trust();
        Ok(dialer(self.listen.clone(), trust, Credentials::None))
    }

    fn start(&self, node: usize) -> anyhow::Result<BrokerProcess> {
        self.start_with(node, &self.peers, false)
    }

    /// Starts node `node` to join the running cluster, naming `peers` (its own entry too).
    fn start_joining(&self, node: usize, peers: &str) -> anyhow::Result<BrokerProcess> {
        self.start_with(node, peers, true)
    }

    fn start_with(&self, node: usize, peers: &str, join: bool) -> anyhow::Result<BrokerProcess> {
        let data_dir = self.dir.path().join(format!("node-{node}"));
        std::fs::create_dir_all(&data_dir)?;
        let id = node.to_string();
        let (cert, key) = &self.nodes[node - 1];
        let client_cert = self.dir.path().join("broker.pem").display().to_string();
        let client_key = self.dir.path().join("broker.key").display().to_string();
        let raft_listen = self
            .raft_listen
            .as_ref()
            .and_then(|own| own.get(node - 1))
            .map(ToString::to_string);
        let metrics = self.metrics[node - 1].to_string();
        let mut extra = vec!["--metrics-listen", metrics.as_str()];
        if let Some(own) = &raft_listen {
            extra.extend(["--raft-listen", own.as_str()]);
        }
        let mut args = vec!["--tls-cert", &client_cert, "--tls-key", &client_key];
        let config = data_dir.join("cluster.toml").display().to_string();
        let advertised = self.advertise.get(&node);
        if self.in_file.contains(&node) {
            anyhow::ensure!(
                !self.extra.iter().any(|a| a == "--config"),
                "a node configured by its file takes no other --config"
            );
            let list: Vec<String> = peers.split(',').map(|p| format!("{p:?}")).collect();
            let mut text = format!(
                "node_id = {node}\npeers = [{}]\ncluster_ca = {:?}\nnode_cert = {cert:?}\nnode_key = {key:?}\njoin = {join}\n",
                list.join(", "),
                self.ca
            );
            if let Some(own) = &raft_listen {
                text.push_str(&format!("raft_listen = {own:?}\n"));
            }
            if let Some(addr) = advertised {
                text.push_str(&format!("advertise = {addr:?}\n"));
            }
            std::fs::write(&config, text)?;
            args.extend(["--config", config.as_str()]);
        } else {
            args.extend([
                "--node-id",
                &id,
                "--peers",
                peers,
                "--cluster-ca",
                &self.ca,
                "--node-cert",
                cert,
                "--node-key",
                key,
            ]);
            if let Some(addr) = advertised {
                args.extend(["--advertise", addr.as_str()]);
            }
            if join {
                args.push("--join");
            }
        }
        args.extend(extra);
        if !self.auth {
            args.push("--insecure-no-auth");
        }
        args.extend(self.extra.iter().map(String::as_str));
        BrokerProcess::start_on_with(&data_dir, self.listen[node - 1], &args)
    }
}

fn batch(value: &str) -> anyhow::Result<Vec<u8>> {
    herald_tests::one_record(value)
}

/// A connection to each node, by node number.
async fn clients_of(
    processes: &BTreeMap<usize, BrokerProcess>,
) -> anyhow::Result<BTreeMap<usize, BrokerClient>> {
    let mut clients = BTreeMap::new();
    for (node, process) in processes {
        clients.insert(*node, process.client().await?);
    }
    Ok(clients)
}

/// Produces `value` through whichever node leads partition 0 (trying each in turn while
/// they answer `NotLeader` or cannot be reached); its offset. Every other batch asks for
/// `Memory` durability (acknowledged once a majority wrote it, synced or not: a SIGKILL does
/// not lose what the kernel holds).
async fn produce(
    clients: &BTreeMap<usize, BrokerClient>,
    value: &str,
    n: usize,
) -> anyhow::Result<i64> {
    let durability = if n.is_multiple_of(2) {
        Durability::Fsync
    } else {
        Durability::Memory
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for client in clients.values() {
            match client.produce(TOPIC, 0, durability, batch(value)?).await {
                Ok((base, _)) => return Ok(base),
                // A restarted node may not know the topic for a moment (it is reading the
                // cluster's metadata back).
                Err(RequestError::Broker {
                    code: ErrorCode::NotLeader | ErrorCode::Throttled | ErrorCode::UnknownTopic,
                    ..
                }) => {}
                Err(error) if error.retryable() => {}
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no node took {value} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which node leads partition 0: the one that takes a probe write (its value is recorded
/// like any other).
async fn leader(
    clients: &BTreeMap<usize, BrokerClient>,
    acked: &mut BTreeMap<i64, String>,
    probe: &str,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (node, client) in clients {
            if let Ok((base, _)) = client
                .produce(TOPIC, 0, Durability::Fsync, batch(probe)?)
                .await
            {
                acked.insert(base, probe.to_owned());
                return Ok(*node);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every data record a node serves (committed) of partition 0, as offset → value.
async fn records(client: &BrokerClient) -> anyhow::Result<BTreeMap<i64, String>> {
    partition_records(client, TOPIC, 0).await
}

/// Every data record a node serves (committed) of `topic`/`partition`, as offset → value.
async fn partition_records(
    client: &BrokerClient,
    topic: &str,
    partition: u32,
) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut out = BTreeMap::new();
    let mut offset = 0i64;
    loop {
        let fetched = client
            .fetch(topic, partition, offset, 1 << 20, Duration::ZERO, 1)
            .await?;
        if fetched.batches.is_empty() {
            return Ok(out);
        }
        for view in batches(&fetched.batches) {
            let view = view.context("a stored batch is corrupt")?;
            anyhow::ensure!(view.base_offset() == offset, "offsets are dense");
            offset = view.next_offset();
            if view.is_control() {
                continue;
            }
            for (i, record) in view.records().enumerate() {
                let value = record?.value.context("a value")?.to_vec();
                out.insert(view.base_offset() + i as i64, String::from_utf8(value)?);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_of_the_leader() -> anyhow::Result<()> {
    let cluster = Cluster::new(3)?;
    let mut processes = cluster.start_all()?;
    let mut clients = clients_of(&processes).await?;
    // Created through node 2 once the controller has a leader and every node registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match clients[&2]
            .create_topic(TOPIC, TopicConfig::default())
            .await
        {
            Ok(()) => break,
            Err(RequestError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => break,
            Err(error) => {
                anyhow::ensure!(Instant::now() < deadline, "topic not created: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        for n in 0..BATCHES_PER_ROUND {
            let value = format!("round-{round}-{n}");
            let offset = produce(&clients, &value, n).await?;
            acked.insert(offset, value);
        }
        let lead = leader(&clients, &mut acked, &format!("probe-{round}")).await?;
        // SIGKILL the leader and go on without it; then bring it back.
        clients.remove(&lead);
        processes.remove(&lead).context("leader process")?.kill()?;
        for n in 0..BATCHES_PER_ROUND {
            let value = format!("round-{round}-after-{n}");
            let offset = produce(&clients, &value, n).await?;
            acked.insert(offset, value);
        }
        let process = cluster.start(lead)?;
        clients.insert(lead, process.client().await?);
        processes.insert(lead, process);
    }
    // Every node catches up to everything acknowledged.
    let last = *acked.keys().next_back().context("acknowledged records")?;
    for (node, client) in &clients {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // A node just restarted may not have started its replica yet.
            let stored = match records(client).await {
                Ok(stored) => stored,
                Err(error) => {
                    anyhow::ensure!(Instant::now() < deadline, "node {node}: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if stored.keys().next_back().is_some_and(|l| *l >= last) {
                for (offset, value) in &acked {
                    anyhow::ensure!(
                        stored.get(offset) == Some(value),
                        "node {node}: acknowledged {value} at {offset} holds {:?}",
                        stored.get(offset)
                    );
                }
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "node {node} did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every node answers where partition 0 is: its three replicas, a leader among them, and
    // every node's client address.
    let addrs: Vec<String> = processes.values().map(|p| p.addr.to_string()).collect();
    for (node, client) in &clients {
        // A restarted node registers its new address in the background.
        let deadline = Instant::now() + Duration::from_secs(30);
        let metadata = loop {
            let metadata = client.metadata(TOPIC).await?;
            if metadata.nodes.iter().all(|n| addrs.contains(&n.addr)) || Instant::now() > deadline {
                break metadata;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::ensure!(metadata.nodes.len() == 3, "node {node}: {metadata:?}");
        let placement = &metadata.partitions[0];
        anyhow::ensure!(placement.replicas.len() == 3, "node {node}: {metadata:?}");
        anyhow::ensure!(
            placement
                .leader
                .is_some_and(|l| placement.replicas.contains(&l)),
            "node {node}: {metadata:?}"
        );
        anyhow::ensure!(
            metadata.nodes.iter().all(|n| addrs.contains(&n.addr)),
            "node {node}: {metadata:?} names addresses not among {addrs:?}"
        );
    }
    // The leader of partition 0 describes it with its replicas, its term and every
    // follower's lag; a settled cluster has both followers caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = false;
        for client in clients.values() {
            let described = client.describe_topic(TOPIC).await?;
            let replication = described.partitions[0]
                .replication
                .clone()
                .context("a replicated partition describes its replication")?;
            anyhow::ensure!(replication.replicas.len() == 3, "{replication:?}");
            anyhow::ensure!(replication.term > 0, "{replication:?}");
            if replication.followers.len() == 2
                && replication
                    .followers
                    .iter()
                    .all(|f| f.batches_behind == Some(0))
            {
                settled = true;
            }
        }
        if settled {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader reported both followers caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node's /metrics shows its replica's leader, term and high watermark; the
    // leader's also each follower's lag.
    let mut lag_lines = 0;
    for addr in &cluster.metrics {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await?;
        let labels = format!("{{topic=\"{TOPIC}\",partition=\"0\"}}");
        for gauge in [
            "herald_broker_replica_leader",
            "herald_broker_replica_term",
            "herald_broker_replica_high_watermark",
        ] {
            anyhow::ensure!(
                text.contains(&format!("{gauge}{labels}")),
                "{addr}: no {gauge}{labels} in {text}"
            );
        }
        lag_lines += text
            .lines()
            .filter(|l| l.starts_with("herald_broker_replica_follower_lag_batches{"))
            .filter(|l| l.contains(&format!("topic=\"{TOPIC}\"")))
            .count();
    }
    anyhow::ensure!(
        lag_lines >= 2,
        "the leader shows {lag_lines} followers' lag"
    );
    // A node counts what it takes and serves as a single broker does: every node served
    // the reads above, and the last round's writes went to a node not restarted since.
    let mut records_in = 0.0;
    for addr in &cluster.metrics {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await?;
        let labels = format!("{{topic=\"{TOPIC}\"}}");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}{labels} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        records_in += value("herald_broker_records_in_total");
        for served in [
            "herald_broker_records_out_total",
            "herald_broker_bytes_out_total",
        ] {
            anyhow::ensure!(
                value(served) > 0.0,
                "{addr}: {served}{labels} is 0 or missing"
            );
        }
        anyhow::ensure!(
            text.lines().any(
                |l| l.starts_with("herald_broker_fetch_duration_seconds_count")
                    && !l.ends_with(" 0")
            ),
            "{addr}: no fetch durations"
        );
    }
    anyhow::ensure!(
        records_in >= BATCHES_PER_ROUND as f64,
        "the nodes count {records_in} records in"
    );
    // `herald cluster status` names every node and the partition's leader and followers.
    let brokers: Vec<String> = cluster.listen.iter().map(SocketAddr::to_string).collect();
    let fingerprint = processes
        .values()
        .next()
        .context("a node")?
        .fingerprint
        .clone();
    let status = std::process::Command::new(herald_tests::herald_binary()?)
        .args([
            "cluster",
            "status",
            "--broker",
            &brokers.join(","),
            "--fingerprint",
            &fingerprint,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&status.stdout);
    anyhow::ensure!(
        status.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for node in 1..=3 {
        anyhow::ensure!(text.contains(&format!("node {node} at")), "{text}");
    }
    anyhow::ensure!(text.contains(": up"), "{text}");
    anyhow::ensure!(text.contains("0: leader node"), "{text}");
    anyhow::ensure!(text.contains("behind"), "{text}");
    // Past what a replica committed is "not yet", never "out of range" (a consumer would
    // apply its reset policy and skip records a node just restarted has not applied yet).
    for (node, client) in &clients {
        match client
            .fetch(TOPIC, 0, last + 1_000, 1 << 20, Duration::ZERO, 1)
            .await
        {
            Err(RequestError::Broker {
                code: ErrorCode::Throttled,
                ..
            }) => {}
            other => {
                anyhow::bail!("node {node}: a fetch past the committed end answered {other:?}")
            }
        }
    }
    // No offset holds two different records on two nodes.
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    for (node, client) in &clients {
        for (offset, value) in records(client).await? {
            if let Some(other) = seen.insert(offset, value.clone()) {
                anyhow::ensure!(
                    other == value,
                    "node {node}: offset {offset} holds {value}, another node {other}"
                );
            }
        }
    }
    Ok(())
}

/// The replicas of `topic`'s `partition` as the first live node to answer names them.
async fn replicas_of(
    processes: &BTreeMap<usize, BrokerProcess>,
    topic: &str,
    partition: u32,
) -> anyhow::Result<Vec<u64>> {
    placements(processes, topic, partition)
        .await
        .into_iter()
        .flatten()
        .map(|p| p.replicas)
        .next()
        .with_context(|| format!("the replicas of {topic}/{partition}"))
}

/// A node of a four-node cluster that holds none of `replicas`.
fn outsider_of(replicas: &[u64]) -> anyhow::Result<usize> {
    (1..=4usize)
        .find(|node| !replicas.contains(&(*node as u64)))
        .context("a node without a replica")
}

/// How each live node places `partition` of `topic` (`None` where a node did not answer).
async fn placements(
    processes: &BTreeMap<usize, BrokerProcess>,
    topic: &str,
    partition: u32,
) -> Vec<Option<herald_wire::messages::PartitionPlacement>> {
    let mut placements = Vec::new();
    for process in processes.values() {
        let placement = match process.client().await {
            Ok(client) => {
                let metadata = client.metadata(topic).await;
                client.close();
                metadata
                    .ok()
                    .and_then(|m| m.partitions.into_iter().find(|p| p.partition == partition))
            }
            Err(_) => None,
        };
        placements.push(placement);
    }
    placements
}

/// The node leading `partition` of `topic`, as a live node's metadata names it.
async fn leader_of(
    processes: &BTreeMap<usize, BrokerProcess>,
    topic: &str,
    partition: u32,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placements = placements(processes, topic, partition).await;
        if let Some(leader) = placements.into_iter().flatten().find_map(|p| p.leader) {
            return Ok(usize::try_from(leader)?);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}/{partition} has no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `topic`/`partition` from offset 0 on, through whichever node answers, until `stop`:
/// what a consumer saw, in order.
async fn follow(
    router: Arc<Router>,
    topic: &str,
    partition: u32,
    stop: Arc<AtomicBool>,
) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let mut offset = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(route) = router.any().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match route
            .client
            .fetch(
                topic,
                partition,
                offset,
                1 << 20,
                Duration::from_millis(200),
                1,
            )
            .await
        {
            Ok(fetched) => {
                for view in batches(&fetched.batches) {
                    let Ok(view) = view else { break };
                    if view.base_offset() != offset {
                        break;
                    }
                    offset = view.next_offset();
                    if view.is_control() {
                        continue;
                    }
                    for (i, record) in view.records().enumerate() {
                        let value = record
                            .ok()
                            .and_then(|r| r.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                            .unwrap_or_default();
                        seen.push((view.base_offset() + i as i64, value));
                    }
                }
            }
            Err(error) => {
                router.failed(topic, &route, &error);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    seen
}

/// Idempotent producers at `Fsync` over several partitions, through the SDK's leader-following
/// router, while the leader of one partition after another is SIGKILLed and restarted:
/// afterwards every node holds every acknowledged record at its acknowledged offset, no
/// offset holds two different records on two nodes, nothing is stored twice (retries across
/// a failover keep their producer id, epoch and sequence), and what a consumer read during
/// the kills is a prefix of the final log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_lose_and_double_nothing_across_leader_kills() -> anyhow::Result<()> {
    let rounds = env_or("HERALD_FAILOVER_ROUNDS", IDEMPOTENT_ROUNDS_DEFAULT);
    failover_loop(Fault::Kill, rounds).await
}

/// The same loop and checks with the leader paused (SIGSTOP, as a stalled VM or a long GC
/// pause looks) for longer than an election takes, then resumed: the others elect a new
/// leader meanwhile, and the old one, back with a stale term, acknowledges nothing it cannot
/// keep and follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_lose_and_double_nothing_across_leader_pauses() -> anyhow::Result<()> {
    let rounds = env_or("HERALD_PAUSE_ROUNDS", PAUSE_ROUNDS_DEFAULT);
    failover_loop(Fault::Pause, rounds).await
}

/// The leader of one partition after another is cut off from the other nodes (clients still
/// reach it) while the network between the nodes drops 1 % of datagrams and delays each up to
/// 2 ms (reordering them), through a seeded relay: a produce sent straight to the cut-off
/// leader is never acknowledged, the others elect a leader meanwhile, and afterwards the same
/// checks as across kills hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_lose_and_double_nothing_across_network_partitions(
) -> anyhow::Result<()> {
    let rounds = env_or("HERALD_PARTITION_ROUNDS", PAUSE_ROUNDS_DEFAULT);
    failover_loop(Fault::Isolate, rounds).await
}

/// The number in environment variable `name` (a count or seed raised locally), else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What happens to a partition's leader in [`failover_loop`].
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, restarted on the same data and ports 2 s later.
    Kill,
    /// SIGSTOP for [`PAUSE`], then SIGCONT.
    Pause,
    /// Cut off from the other nodes (every datagram between them dropped) for [`PAUSE`],
    /// with the network otherwise lossy and reordering; clients still reach it.
    Isolate,
}

fn signal(process: &BrokerProcess, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([name, &process.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {name} {} failed", process.pid());
    Ok(())
}

/// Whether a node other than `paused` names another node than `paused` as the leader of
/// `partition` before `until`.
async fn elected_without(
    processes: &BTreeMap<usize, BrokerProcess>,
    paused: usize,
    partition: u32,
    until: Instant,
) -> bool {
    while Instant::now() < until {
        for (_, process) in processes.iter().filter(|(node, _)| **node != paused) {
            let asked = tokio::time::timeout(Duration::from_secs(1), async {
                let client = process.client().await.ok()?;
                let metadata = client.metadata(IDEMPOTENT_TOPIC).await.ok();
                client.close();
                metadata?
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .and_then(|p| p.leader)
            })
            .await;
            if let Ok(Some(leader)) = asked {
                if usize::try_from(leader).is_ok_and(|leader| leader != paused) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Creates `topic` with `partitions` through any node, once the cluster can (its controller
/// has a leader and every node registered).
async fn create_topic(router: &Router, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    create_topic_with(router, topic, config).await
}

/// [`create_topic`] with `config`.
async fn create_topic_with(
    router: &Router,
    topic: &str,
    config: TopicConfig,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = match router.any().await {
            Ok(route) => route.client.create_topic(topic, config).await,
            Err(error) => Err(error),
        };
        match created {
            Ok(())
            | Err(RequestError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => return Ok(()),
            Err(error) => {
                anyhow::ensure!(Instant::now() < deadline, "topic not created: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What an idempotent producer acknowledged, (partition, offset, value), and what failed.
type Sent = (Vec<(u32, i64, String)>, Vec<String>);

/// Sends `v-0`, `v-1`, ... through `producer` until `stop`, counting them in `sent`; then
/// flushes and waits for every delivery.
fn spawn_sender(
    producer: Arc<RawProducer>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<anyhow::Result<Sent>> {
    tokio::spawn(async move {
        let mut deliveries = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let value = format!("v-{n}");
            match producer
                .send(None, Some(value.clone().into_bytes()), Vec::new())
                .await
            {
                Ok(delivery) => deliveries.push((value, delivery)),
                Err(ProduceError::CircuitOpen { retry_after }) => {
                    tokio::time::sleep(retry_after.min(Duration::from_secs(1))).await;
                }
                Err(error) => return Err(anyhow::anyhow!("send {value}: {error}")),
            }
            n += 1;
            sent.store(n, Ordering::Relaxed);
            if n.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        producer.flush().await;
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for (value, delivery) in deliveries {
            match delivery.await {
                Ok(landed) => acked.push((landed.partition, landed.offset, value)),
                Err(error) => failed.push(format!("{value}: {error}")),
            }
        }
        Ok((acked, failed))
    })
}

async fn failover_loop(fault: Fault, rounds: usize) -> anyhow::Result<()> {
    let (cluster, relay) = match fault {
        Fault::Isolate => {
            let seed = env_or("HERALD_RELAY_SEED", RELAY_SEED_DEFAULT);
            eprintln!("relay seed {seed} (HERALD_RELAY_SEED replays it)");
            let (cluster, relay) = Cluster::relayed(3, seed).await?;
            relay.set_weather(Weather {
                loss: 0.01,
                delay_max: Duration::from_millis(2),
            });
            (cluster, Some(relay))
        }
        Fault::Kill | Fault::Pause => (Cluster::new(3)?, None),
    };
    let mut processes = cluster.start_all()?;
    let router = Arc::new(Router::new(cluster.dialer(&processes)?, None));
    create_topic(&router, IDEMPOTENT_TOPIC, IDEMPOTENT_PARTITIONS).await?;
    let producer = RawProducer::with_router(
        router.clone(),
        IDEMPOTENT_TOPIC,
        ProducerConfig {
            durability: Durability::Fsync,
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        },
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(follow(router.clone(), IDEMPOTENT_TOPIC, 0, stop.clone()));
    let sender = spawn_sender(producer.clone(), stop.clone(), sent.clone());
    // Before each kill, the producer has moved on since the last one (its sends block once a
    // partition's queue is full, so progress means every partition takes records again).
    let progressed = |since: u64| {
        let sent = sent.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sent.load(Ordering::Relaxed) < since + PROGRESS_RECORDS {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the producer made no progress for 60 s after a failover"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(sent.load(Ordering::Relaxed))
        }
    };
    let mut mark = progressed(0).await?;
    for round in 0..rounds {
        let partition = round as u32 % IDEMPOTENT_PARTITIONS;
        let lead = leader_of(&processes, IDEMPOTENT_TOPIC, partition).await?;
        match fault {
            Fault::Kill => {
                processes.remove(&lead).context("leader process")?.kill()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                processes.insert(lead, cluster.start(lead)?);
            }
            Fault::Isolate => {
                let relay = relay.as_ref().context("no relay")?;
                let cut = processes.get(&lead).context("leader process")?;
                let client = cut.client().await?;
                relay.isolate(lead as u64);
                let isolated = Instant::now();
                // A produce straight to the cut-off leader is never acknowledged: it cannot
                // reach a majority.
                let probe = tokio::time::timeout(
                    PAUSE - Duration::from_millis(500),
                    client.produce(
                        IDEMPOTENT_TOPIC,
                        partition,
                        Durability::Fsync,
                        batch(&format!("minority-{round}"))?,
                    ),
                )
                .await;
                let elected = elected_without(&processes, lead, partition, isolated + PAUSE).await;
                tokio::time::sleep_until((isolated + PAUSE).into()).await;
                relay.heal();
                client.close();
                if let Ok(Ok(acked)) = probe {
                    anyhow::bail!("the cut-off leader {lead} acknowledged a produce: {acked:?}");
                }
                anyhow::ensure!(
                    elected,
                    "no other node led {IDEMPOTENT_TOPIC}/{partition} while node {lead} was cut off"
                );
            }
            Fault::Pause => {
                let paused = processes.get(&lead).context("leader process")?;
                signal(paused, "-STOP")?;
                let stopped = Instant::now();
                // The others elect a leader of their own while this one is stopped.
                let elected = elected_without(&processes, lead, partition, stopped + PAUSE).await;
                tokio::time::sleep_until((stopped + PAUSE).into()).await;
                signal(paused, "-CONT")?;
                anyhow::ensure!(
                    elected,
                    "no other node led {IDEMPOTENT_TOPIC}/{partition} while node {lead} was paused"
                );
            }
        }
        mark = progressed(mark).await?;
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = sender.await??;
    let consumed = reader.await?;
    anyhow::ensure!(
        failed.is_empty(),
        "{} sends failed across the failovers, e.g. {:?}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    anyhow::ensure!(!acked.is_empty(), "nothing acknowledged");
    let mut last = BTreeMap::new();
    for (partition, offset, _) in &acked {
        let entry = last.entry(*partition).or_insert(*offset);
        *entry = (*entry).max(*offset);
    }
    let mut finals: BTreeMap<u32, BTreeMap<i64, String>> = BTreeMap::new();
    for (node, process) in &processes {
        let client = process.client().await?;
        for partition in 0..IDEMPOTENT_PARTITIONS {
            let wanted = last.get(&partition).copied().unwrap_or(-1);
            let deadline = Instant::now() + Duration::from_secs(60);
            let stored = loop {
                let stored = partition_records(&client, IDEMPOTENT_TOPIC, partition).await;
                if let Ok(stored) = stored {
                    if stored.keys().next_back().is_some_and(|l| *l >= wanted) || wanted < 0 {
                        break stored;
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "node {node} did not catch up on partition {partition}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            for (p, offset, value) in &acked {
                if *p == partition {
                    anyhow::ensure!(
                        stored.get(offset) == Some(value),
                        "node {node}: acknowledged {value} at {partition}/{offset} holds {:?}",
                        stored.get(offset)
                    );
                }
            }
            let mut values = std::collections::BTreeSet::new();
            for value in stored.values() {
                anyhow::ensure!(
                    values.insert(value.clone()),
                    "node {node}: {value} is stored twice in partition {partition}"
                );
            }
            let agreed = finals.entry(partition).or_default();
            for (offset, value) in &stored {
                if let Some(other) = agreed.insert(*offset, value.clone()) {
                    anyhow::ensure!(
                        &other == value,
                        "node {node}: {partition}/{offset} holds {value}, another node {other}"
                    );
                }
            }
        }
        client.close();
    }
    let mut across = std::collections::BTreeSet::new();
    for records in finals.values() {
        for value in records.values() {
            anyhow::ensure!(across.insert(value), "{value} is stored in two partitions");
        }
    }
    let partition_zero = finals.get(&0).cloned().unwrap_or_default();
    for (offset, value) in &consumed {
        anyhow::ensure!(
            partition_zero.get(offset) == Some(value),
            "a consumer read {value} at 0/{offset}, which the final log holds as {:?}",
            partition_zero.get(offset)
        );
    }
    eprintln!(
        "{rounds} leader faults ({fault:?}): {} records acknowledged, {} read by the consumer",
        acked.len(),
        consumed.len()
    );
    Ok(())
}

/// Coordinator kills of the consumer-group loop; `HERALD_COORDINATOR_ROUNDS` raises it.
const COORDINATOR_ROUNDS_DEFAULT: usize = 3;
const GROUP: &str = "billing";
const GROUP_TOPIC: &str = "invoices";
const GROUP_TOPIC_PARTITIONS: u32 = 3;

/// `request` answered by the first live node (other than `skip`) that answers anything but a
/// retryable error, tried again for up to 60 s (an election, a coordinator catching up).
async fn group_request(
    processes: &BTreeMap<usize, BrokerProcess>,
    skip: Option<usize>,
    request: GroupRequest,
) -> anyhow::Result<Result<GroupResponse, RequestError>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (node, process) in processes {
            if Some(*node) == skip {
                continue;
            }
            let Ok(client) = process.client().await else {
                continue;
            };
            let answer = client.group(request.clone()).await;
            client.close();
            match answer {
                Err(error) if error.retryable() => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "no answer to {request:?} within 60 s: {error}"
                    );
                }
                answer => return Ok(answer),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node leading `partition` of `topic` once every live node names the same leader and
/// that is its preferred leader (the first replica), which the nodes' balancers move the lead
/// to and then leave it with. (A node just restarted may name itself from its stored vote
/// until it hears from the leader.)
async fn preferred_leader_of(
    processes: &BTreeMap<usize, BrokerProcess>,
    topic: &str,
    partition: u32,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let named: std::collections::BTreeSet<Option<u64>> =
            placements(processes, topic, partition)
                .await
                .into_iter()
                .map(|placement| {
                    placement
                        .and_then(|p| p.leader.filter(|leader| p.replicas.first() == Some(leader)))
                })
                .collect();
        if let [Some(leader)] = named.into_iter().collect::<Vec<_>>()[..] {
            return Ok(usize::try_from(leader)?);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}/{partition} is not led by its preferred leader as every node sees it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Nodes configured by their TOML file (node id, peers, certificates, what to advertise)
/// form a cluster as flag-configured ones do, and metadata names each node where it said
/// clients reach it (in its file for node 1, as a flag for node 2), the others where they
/// listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_configured_by_file_advertise_what_they_are_told() -> anyhow::Result<()> {
    const NAMED: &str = "named";
    let mut cluster = Cluster::new(3)?;
    cluster.in_file = [1, 3].into();
    let told: BTreeMap<usize, String> = [1, 2]
        .into_iter()
        .map(|node| {
            (
                node,
                format!("localhost:{}", cluster.listen[node - 1].port()),
            )
        })
        .collect();
    cluster.advertise = told.clone();
    let processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, NAMED, 1).await?;
    let expected: BTreeMap<u64, String> = (1..=3usize)
        .map(|node| {
            let addr = told
                .get(&node)
                .cloned()
                .unwrap_or_else(|| cluster.listen[node - 1].to_string());
            (node as u64, addr)
        })
        .collect();
    for (node, process) in &processes {
        let client = process.client().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let named: BTreeMap<u64, String> = client
                .metadata(NAMED)
                .await?
                .nodes
                .into_iter()
                .map(|n| (n.id, n.addr))
                .collect();
            if named == expected {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {node} names {named:?}, not {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.close();
    }
    Ok(())
}

/// Joins `GROUP` through a node other than `skip` and heartbeats until the member owns every
/// partition of `GROUP_TOPIC`: its id and epoch.
async fn join_group(
    processes: &BTreeMap<usize, BrokerProcess>,
    skip: Option<usize>,
) -> anyhow::Result<(String, i32)> {
    join_as(processes, skip, GROUP, GROUP_TOPIC, GROUP_TOPIC_PARTITIONS).await
}

/// Joins `group` (through a node other than `skip`) on `topic` and heartbeats until the
/// member owns all `partitions` of it: its id and epoch.
async fn join_as(
    processes: &BTreeMap<usize, BrokerProcess>,
    skip: Option<usize>,
    group: &str,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<(String, i32)> {
    let mut member: Option<(String, i32)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = group_request(
            processes,
            skip,
            GroupRequest::Heartbeat {
                group: group.to_owned(),
                member_id: member.as_ref().map(|(id, _)| id.clone()),
                member_epoch: member.as_ref().map_or(0, |(_, epoch)| *epoch),
                instance_id: None,
                topics: vec![topic.to_owned()],
                owned: Vec::new(),
            },
        )
        .await?;
        match answer {
            Ok(GroupResponse::Assignment {
                member_id,
                member_epoch,
                partitions: assigned,
                ..
            }) => {
                if assigned.len() == partitions as usize {
                    return Ok((member_id, member_epoch));
                }
                member = Some((member_id, member_epoch));
            }
            // The coordinator changed under the join: join again.
            Err(RequestError::Broker {
                code: ErrorCode::UnknownMember | ErrorCode::FencedMemberEpoch,
                ..
            }) => member = None,
            other => anyhow::bail!("joining {group}: {other:?}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "no assignment within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GROUP`'s committed offsets of `GROUP_TOPIC`'s partitions, asked through a node other
/// than `skip`.
async fn committed_offsets(
    processes: &BTreeMap<usize, BrokerProcess>,
    skip: Option<usize>,
) -> anyhow::Result<Vec<Option<i64>>> {
    let asked = (0..GROUP_TOPIC_PARTITIONS)
        .map(|p| TopicPartition::new(GROUP_TOPIC, p))
        .collect();
    match group_request(
        processes,
        skip,
        GroupRequest::FetchOffsets {
            group: GROUP.to_owned(),
            partitions: asked,
        },
    )
    .await?
    {
        Ok(GroupResponse::Offsets(offsets)) => Ok(offsets.iter().map(|o| o.offset).collect()),
        other => anyhow::bail!("fetching {GROUP}'s offsets: {other:?}"),
    }
}

/// Waits until every node lists `GROUP` and answers `acked` as its offsets of
/// `GROUP_TOPIC` (handed on to the coordinator, or its own).
async fn every_node_answers(
    processes: &BTreeMap<usize, BrokerProcess>,
    acked: &[Option<i64>],
) -> anyhow::Result<()> {
    for node in processes.keys().copied().collect::<Vec<_>>() {
        let client = processes[&node].client().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = client.group(GroupRequest::List).await;
            let fetched = client
                .group(GroupRequest::FetchOffsets {
                    group: GROUP.to_owned(),
                    partitions: (0..GROUP_TOPIC_PARTITIONS)
                        .map(|p| TopicPartition::new(GROUP_TOPIC, p))
                        .collect(),
                })
                .await;
            let listed_ok = matches!(&listed, Ok(GroupResponse::Groups(names)) if names.iter().any(|n| n == GROUP));
            let fetched_ok = matches!(&fetched, Ok(GroupResponse::Offsets(offsets))
                if offsets.iter().map(|o| o.offset).collect::<Vec<_>>() == acked);
            if listed_ok && fetched_ok {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {node}: listed {listed:?}, offsets {fetched:?}, acknowledged {acked:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client.close();
    }
    Ok(())
}

/// A coordinator cut off from the other nodes by the relay (clients still reach it)
/// acknowledges no commit sent straight to it; the other two elect a coordinator, where the
/// member goes on committing; once the relay heals, every node (the cut-off one too)
/// answers those commits, and nothing of what the cut-off coordinator was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_coordinator_acknowledges_no_commit() -> anyhow::Result<()> {
    use herald_broker::broker::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    let seed = env_or("HERALD_RELAY_SEED", 11u64);
    let (cluster, relay) = Cluster::relayed(3, seed).await?;
    let processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, GROUP_TOPIC, GROUP_TOPIC_PARTITIONS).await?;
    let shard = group_partition(GROUP, GROUPS_TOPIC_PARTITIONS);
    let coordinator = preferred_leader_of(&processes, GROUPS_TOPIC, shard).await?;
    let commit = |(member_id, member_epoch): &(String, i32), base: i64| GroupRequest::Commit {
        group: GROUP.to_owned(),
        member_id: member_id.clone(),
        member_epoch: *member_epoch,
        offsets: (0..GROUP_TOPIC_PARTITIONS)
            .map(|p| Commit {
                partition: TopicPartition::new(GROUP_TOPIC, p),
                offset: base + i64::from(p),
                metadata: String::new(),
            })
            .collect(),
    };
    let member = join_group(&processes, Some(coordinator)).await?;
    let first = group_request(&processes, Some(coordinator), commit(&member, 100)).await?;
    anyhow::ensure!(
        matches!(first, Ok(GroupResponse::Committed)),
        "the first commit: {first:?}"
    );
    let cut = processes[&coordinator].client().await?;
    relay.isolate(coordinator as u64);
    // Straight to the cut-off coordinator: not acknowledged (its lease runs out; what it
    // writes reaches no majority).
    let probe =
        tokio::time::timeout(Duration::from_secs(10), cut.group(commit(&member, 500))).await;
    anyhow::ensure!(
        !matches!(probe, Ok(Ok(GroupResponse::Committed))),
        "the cut-off coordinator (node {coordinator}) acknowledged a commit"
    );
    // The other two: a new coordinator, which knows the member from its replicated
    // membership: it goes on with the same id and epoch.
    let second = group_request(&processes, Some(coordinator), commit(&member, 200)).await?;
    anyhow::ensure!(
        matches!(second, Ok(GroupResponse::Committed)),
        "a commit through the majority: {second:?}"
    );
    relay.heal();
    cut.close();
    every_node_answers(&processes, &[Some(200), Some(201), Some(202)]).await
}

/// A consumer group's commits go through its coordinator (the leader of the group's partition
/// of the internal groups topic, reached through any node); the coordinator is SIGKILLed
/// (even rounds) or SIGSTOPped until another node leads (odd rounds), and every acknowledged
/// commit must be what the new coordinator answers; the member goes on committing through it
/// with the same id and epoch, then leaves; a paused coordinator that leads again goes by the
/// replicated membership (a member that joined meanwhile commits, the one that left does
/// not). The group is listed on every node and can be deleted at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commits_survive_coordinator_kills() -> anyhow::Result<()> {
    use herald_broker::broker::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    let rounds = env_or("HERALD_COORDINATOR_ROUNDS", COORDINATOR_ROUNDS_DEFAULT);
    let cluster = Cluster::new(3)?;
    let mut processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, GROUP_TOPIC, GROUP_TOPIC_PARTITIONS).await?;
    let shard = group_partition(GROUP, GROUPS_TOPIC_PARTITIONS);
    let mut acked: Vec<Option<i64>> = vec![None; GROUP_TOPIC_PARTITIONS as usize];
    for round in 0..rounds {
        // The coordinator once the balancer has handed the lead back to its preferred node
        // (after the previous round's restart), so that it stays put until killed.
        let coordinator = preferred_leader_of(&processes, GROUPS_TOPIC, shard).await?;
        // Joined and committed through another node: the request is handed on.
        let (member_id, member_epoch) = join_group(&processes, Some(coordinator)).await?;
        for step in 0..3i64 {
            let offsets = (0..GROUP_TOPIC_PARTITIONS)
                .map(|p| Commit {
                    partition: TopicPartition::new(GROUP_TOPIC, p),
                    offset: (round as i64) * 1000 + step * 10 + i64::from(p),
                    metadata: format!("round {round}"),
                })
                .collect::<Vec<_>>();
            let answer = group_request(
                &processes,
                Some(coordinator),
                GroupRequest::Commit {
                    group: GROUP.to_owned(),
                    member_id: member_id.clone(),
                    member_epoch,
                    offsets: offsets.clone(),
                },
            )
            .await?;
            anyhow::ensure!(
                matches!(answer, Ok(GroupResponse::Committed)),
                "round {round}: commit answered {answer:?}"
            );
            acked = offsets.iter().map(|c| Some(c.offset)).collect();
        }
        // Odd rounds pause the coordinator (SIGSTOP) instead: it comes back, and once it
        // leads again it must not take the member it knew before.
        let paused = round % 2 == 1;
        if paused {
            signal(&processes[&coordinator], "-STOP")?;
        } else {
            processes
                .remove(&coordinator)
                .context("coordinator process")?
                .kill()?;
        }
        let others = paused.then_some(coordinator);
        // Every acknowledged commit is what the new coordinator answers.
        let seen = committed_offsets(&processes, others).await?;
        anyhow::ensure!(
            seen == acked,
            "round {round}: after the coordinator (node {coordinator}) was stopped the group's offsets are {seen:?}, acknowledged {acked:?}"
        );
        // The member goes on with the new coordinator: same id, same epoch (its membership
        // is replicated, as its commits are).
        let commit_all = |member: &str, epoch: i32, base: i64| {
            let offsets: Vec<Commit> = (0..GROUP_TOPIC_PARTITIONS)
                .map(|p| Commit {
                    partition: TopicPartition::new(GROUP_TOPIC, p),
                    offset: (round as i64) * 1000 + base + i64::from(p),
                    metadata: format!("round {round}"),
                })
                .collect();
            let acked: Vec<Option<i64>> = offsets.iter().map(|c| Some(c.offset)).collect();
            let request = GroupRequest::Commit {
                group: GROUP.to_owned(),
                member_id: member.to_owned(),
                member_epoch: epoch,
                offsets,
            };
            (request, acked)
        };
        let (request, offsets) = commit_all(&member_id, member_epoch, 500);
        let answer = group_request(&processes, others, request).await?;
        anyhow::ensure!(
            matches!(answer, Ok(GroupResponse::Committed)),
            "round {round}: the member's commit through the new coordinator answered {answer:?}"
        );
        acked = offsets;
        group_request(
            &processes,
            others,
            GroupRequest::Leave {
                group: GROUP.to_owned(),
                member_id: member_id.clone(),
            },
        )
        .await??;
        let refused = |answer: &Result<GroupResponse, RequestError>| {
            matches!(
                answer,
                Err(RequestError::Broker {
                    code: ErrorCode::UnknownMember,
                    ..
                })
            )
        };
        if paused {
            // A member joins while node {coordinator} is stopped; once the node leads again
            // (its balancer takes the lead back) it goes by the replicated membership, not
            // by what it remembers: the newcomer commits, the member that left does not.
            let (newcomer, newcomer_epoch) = join_group(&processes, others).await?;
            signal(&processes[&coordinator], "-CONT")?;
            let back = preferred_leader_of(&processes, GROUPS_TOPIC, shard).await?;
            anyhow::ensure!(back == coordinator, "node {back} leads, not {coordinator}");
            let (stale, _) = commit_all(&member_id, member_epoch, 900);
            let stale = group_request(&processes, None, stale).await?;
            anyhow::ensure!(
                refused(&stale),
                "round {round}: a member that left while node {coordinator} was stopped committed through it: {stale:?}"
            );
            let (request, offsets) = commit_all(&newcomer, newcomer_epoch, 700);
            let answer = group_request(&processes, None, request).await?;
            anyhow::ensure!(
                matches!(answer, Ok(GroupResponse::Committed)),
                "round {round}: the member that joined while node {coordinator} was stopped: {answer:?}"
            );
            acked = offsets;
            group_request(
                &processes,
                None,
                GroupRequest::Leave {
                    group: GROUP.to_owned(),
                    member_id: newcomer,
                },
            )
            .await??;
        }
        if !paused {
            processes.insert(coordinator, cluster.start(coordinator)?);
        }
    }
    // Every node answers the same offsets (handed on to the coordinator or its own) and lists
    // the group.
    every_node_answers(&processes, &acked).await?;
    // The member left: the group can be deleted, and its offsets go with it.
    let deleted = group_request(
        &processes,
        None,
        GroupRequest::Delete {
            group: GROUP.to_owned(),
        },
    )
    .await?;
    anyhow::ensure!(
        matches!(deleted, Ok(GroupResponse::Deleted)),
        "deleting the group: {deleted:?}"
    );
    let after = committed_offsets(&processes, None).await?;
    anyhow::ensure!(
        after.iter().all(Option::is_none),
        "a deleted group's offsets: {after:?}"
    );
    // The groups topic holds every group's offsets: clients neither read nor write it.
    let client = processes
        .values()
        .next()
        .context("a node")?
        .client()
        .await?;
    let read = client
        .fetch(GROUPS_TOPIC, shard, 0, 1 << 20, Duration::ZERO, 1)
        .await;
    let written = client
        .produce(GROUPS_TOPIC, shard, Durability::Fsync, batch("forged")?)
        .await;
    for (what, answer) in [("read", read.map(|_| ())), ("written", written.map(|_| ()))] {
        anyhow::ensure!(
            matches!(
                answer,
                Err(RequestError::Broker {
                    code: ErrorCode::InvalidRequest,
                    ..
                })
            ),
            "the groups topic was {what}: {answer:?}"
        );
    }
    Ok(())
}

/// An SDK consumer in a group, connected to a node that is not its coordinator, handles
/// every acknowledged record while the coordinator is SIGKILLed (and restarted) mid-run; it
/// resumes from the commits acknowledged before the kill: no record below them is handled
/// again. At the end its commits reach every partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_from_its_commits_across_a_coordinator_kill() -> anyhow::Result<()> {
    use herald::consumer::{ConsumedRecord, ConsumerConfig};
    use herald::{HandlerError, RawConsumer};
    use herald_broker::broker::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    const CONSUMING: &str = "ledger";
    const RECORDS: usize = 300;

    let cluster = Cluster::new(3)?;
    let mut processes = cluster.start_all()?;
    let connector = cluster.dialer(&processes)?;
    let router = Arc::new(Router::new(connector.clone(), None));
    create_topic(&router, GROUP_TOPIC, GROUP_TOPIC_PARTITIONS).await?;
    let producer = RawProducer::with_router(
        router.clone(),
        GROUP_TOPIC,
        ProducerConfig {
            durability: Durability::Fsync,
            ..ProducerConfig::default()
        },
    )
    .await?;
    let produce = |from: usize| {
        let producer = producer.clone();
        async move {
            let mut deliveries = Vec::new();
            for n in from..from + RECORDS {
                let value = format!("r-{n}").into_bytes();
                deliveries.push(producer.send(None, Some(value), Vec::new()).await?);
            }
            producer.flush().await;
            let mut acked = Vec::new();
            for delivery in deliveries {
                let landed = delivery.await?;
                acked.push((landed.partition, landed.offset));
            }
            Ok::<_, anyhow::Error>(acked)
        }
    };
    let mut acked = produce(0).await?;

    let shard = group_partition(CONSUMING, GROUPS_TOPIC_PARTITIONS);
    let coordinator = preferred_leader_of(&processes, GROUPS_TOPIC, shard).await?;
    let (&through, _) = processes
        .iter()
        .find(|(node, _)| **node != coordinator)
        .context("a node besides the coordinator")?;
    let consumer = RawConsumer::with_reconnect(
        processes[&through].client().await?,
        connector,
        ConsumerConfig::new(CONSUMING, GROUP_TOPIC),
    );
    let handled: Arc<std::sync::Mutex<Vec<(u32, i64)>>> = Arc::default();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let run = {
        let handled = handled.clone();
        tokio::spawn(async move {
            let handler = move |record: ConsumedRecord| {
                let handled = handled.clone();
                async move {
                    handled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((record.partition(), record.offset()));
                    // Slow enough that the kill lands mid-run.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<(), HandlerError>(())
                }
            };
            consumer
                .run(handler, async move {
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                })
                .await
        })
    };
    let count = |handled: &Arc<std::sync::Mutex<Vec<(u32, i64)>>>| {
        handled.lock().unwrap_or_else(|p| p.into_inner()).len()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&handled) < RECORDS / 3 {
        anyhow::ensure!(Instant::now() < deadline, "the consumer handled nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What was committed (and acknowledged) before the kill.
    let asked: Vec<TopicPartition> = (0..GROUP_TOPIC_PARTITIONS)
        .map(|p| TopicPartition::new(GROUP_TOPIC, p))
        .collect();
    let before = match group_request(
        &processes,
        Some(coordinator),
        GroupRequest::FetchOffsets {
            group: CONSUMING.to_owned(),
            partitions: asked.clone(),
        },
    )
    .await?
    {
        Ok(GroupResponse::Offsets(offsets)) => offsets
            .into_iter()
            .map(|o| (o.partition.partition, o.offset.unwrap_or(0)))
            .collect::<BTreeMap<u32, i64>>(),
        other => anyhow::bail!("offsets before the kill: {other:?}"),
    };
    let handled_before = count(&handled);
    processes
        .remove(&coordinator)
        .context("coordinator process")?
        .kill()?;
    acked.extend(produce(RECORDS).await?);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: std::collections::BTreeSet<(u32, i64)> = handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if acked.iter().all(|record| seen.contains(record)) {
            break;
        }
        anyhow::ensure!(!run.is_finished(), "the run ended early: {:?}", run.await);
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} acknowledged records handled",
            acked.iter().filter(|r| seen.contains(r)).count(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    processes.insert(coordinator, cluster.start(coordinator)?);
    stop.send_replace(true);
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("the run ends")??
        .context("the run ends cleanly")?;
    // Handled again only from the commits acknowledged before the kill on.
    let mut times: BTreeMap<(u32, i64), usize> = BTreeMap::new();
    for record in handled.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        *times.entry(*record).or_default() += 1;
    }
    for ((partition, offset), n) in &times {
        anyhow::ensure!(
            *n == 1 || *offset >= before.get(partition).copied().unwrap_or(0),
            "{GROUP_TOPIC}/{partition} offset {offset} handled {n} times, below the commit {:?} acknowledged before the kill",
            before.get(partition)
        );
    }
    anyhow::ensure!(handled_before > 0 && summary.processed > 0, "{summary:?}");
    // Its commits reach past every partition's last record.
    let mut ends: BTreeMap<u32, i64> = BTreeMap::new();
    for (partition, offset) in &acked {
        let end = ends.entry(*partition).or_default();
        *end = (*end).max(offset + 1);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = group_request(
            &processes,
            None,
            GroupRequest::FetchOffsets {
                group: CONSUMING.to_owned(),
                partitions: asked.clone(),
            },
        )
        .await?;
        let committed: BTreeMap<u32, i64> = match &answer {
            Ok(GroupResponse::Offsets(offsets)) => offsets
                .iter()
                .map(|o| (o.partition.partition, o.offset.unwrap_or(0)))
                .collect(),
            _ => BTreeMap::new(),
        };
        // At or past the last record: the position after it may also pass control batches
        // (a new leader's first entry), which the consumer reads past.
        if ends
            .iter()
            .all(|(p, end)| committed.get(p).is_some_and(|c| c >= end))
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "committed {answer:?}, partition ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The coordinator's /metrics shows the group's lag on each partition: at most the
    // control batches of leader changes after the run stopped (the restarted node takes its
    // leads back).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut lags = Vec::new();
        for addr in &cluster.metrics {
            let Ok(answer) = reqwest::get(format!("http://{addr}/metrics")).await else {
                continue;
            };
            let text = answer.text().await.unwrap_or_default();
            lags.extend(
                text.lines()
                    .filter(|l| l.starts_with("herald_broker_group_lag_records{"))
                    .filter(|l| l.contains(&format!("group=\"{CONSUMING}\"")))
                    .map(str::to_owned),
            );
        }
        let small = |line: &String| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|lag| lag <= 3.0)
        };
        if lags.len() == GROUP_TOPIC_PARTITIONS as usize && lags.iter().all(small) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group's lag as the nodes show it: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A replicated topic that validates its values' schema IDs: its leader checks each batch
/// against the registry before proposing it. A registered ID is stored on every node; an
/// unregistered one and a value without the schema-ID frame are refused, and stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_checks_schema_ids_on_its_leader() -> anyhow::Result<()> {
    use herald_wire::messages::SchemaValidation;
    const VALIDATED: &str = "validated";
    let registry_dir = tempfile::tempdir()?;
    let registry = herald_tests::RegistryProcess::start(registry_dir.path())?;
    let mut cluster = Cluster::new(3)?;
    cluster.extra = vec!["--registry".to_owned(), registry.url.clone()];
    let processes = cluster.start_all()?;
    let clients = clients_of(&processes).await?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    let config = TopicConfig {
        validation: SchemaValidation {
            value: true,
            ..SchemaValidation::default()
        },
        ..TopicConfig::default()
    };
    create_topic_with(&router, VALIDATED, config).await?;
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{VALIDATED}-value/versions",
            registry.url
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"schema": "\"string\""}"#)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = u32::try_from(registered["id"].as_u64().context("a schema id")?)?;
    let framed = |id: u32| {
        let mut value = Vec::new();
        herald_wire::schema_id::write_schema_id(&mut value, id);
        value.extend_from_slice(&[6, b'a', b'b', b'c']);
        value
    };
    // Each value through whichever node leads the partition: its answer.
    let send = |value: Vec<u8>| {
        let clients = &clients;
        async move {
            let mut builder = BatchBuilder::new();
            builder.push(Record {
                timestamp_ms: 1,
                key: None,
                value: Some(value),
                headers: Vec::new(),
            });
            let batch = builder.encode()?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                for client in clients.values() {
                    match client
                        .produce(VALIDATED, 0, Durability::Fsync, batch.clone())
                        .await
                    {
                        Err(RequestError::Broker {
                            code:
                                ErrorCode::NotLeader | ErrorCode::Throttled | ErrorCode::UnknownTopic,
                            ..
                        }) => {}
                        answer => return Ok::<_, anyhow::Error>(answer),
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "no leader took the batch");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (offset, _) = send(framed(id)).await??;
    for (value, what) in [
        (framed(id + 1000), "an unregistered schema ID"),
        (b"plain".to_vec(), "a value without the schema-ID frame"),
    ] {
        let answer = send(value).await?;
        anyhow::ensure!(
            matches!(
                answer,
                Err(RequestError::Broker {
                    code: ErrorCode::SchemaValidationFailed,
                    ..
                })
            ),
            "{what} was answered {answer:?}"
        );
    }
    // Every node holds the one accepted record, and nothing else.
    for (node, client) in &clients {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stored = partition_records(client, VALIDATED, 0).await?;
            if stored.len() == 1 && stored.contains_key(&offset) {
                break;
            }
            anyhow::ensure!(
                stored.len() <= 1 && Instant::now() < deadline,
                "node {node} holds {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// ACL entries are the cluster's (kept by the controller): added through one node, every
/// node lists them; removed through another, gone from every node; a deleted topic's literal
/// grants go with it everywhere while a prefixed DENY stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_entries_are_the_same_on_every_node() -> anyhow::Result<()> {
    use herald_auth::acl::{
        AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType,
    };
    const AUDITED: &str = "audited";
    let cluster = Cluster::new(3)?;
    let processes = cluster.start_all()?;
    let clients = clients_of(&processes).await?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, AUDITED, 1).await?;
    let alice = Principal::user("alice")?;
    let grant = AclEntry::new(
        alice.clone(),
        ResourceType::Topic,
        PatternType::Literal,
        AUDITED,
        Operation::Read,
        Permission::Allow,
    )?;
    let deny = AclEntry::new(
        Principal::user("mallory")?,
        ResourceType::Topic,
        PatternType::Prefixed,
        "aud",
        Operation::Write,
        Permission::Deny,
    )?;
    let group_grant = AclEntry::new(
        alice,
        ResourceType::Group,
        PatternType::Literal,
        "billing",
        Operation::Read,
        Permission::Allow,
    )?;
    let added = clients[&1]
        .create_acls(vec![grant.clone(), deny.clone(), group_grant.clone()])
        .await?;
    anyhow::ensure!(added == 3, "{added} entries added");
    // Every node lists what the cluster has (each follows the controller).
    let everywhere = |expected: Vec<AclEntry>| {
        let clients = &clients;
        async move {
            let mut expected = expected;
            expected.sort();
            for (node, client) in clients {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut listed = client.describe_acls(AclFilter::any()).await?;
                    listed.sort();
                    if listed == expected {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "node {node} lists {listed:?}, the cluster has {expected:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    everywhere(vec![grant.clone(), deny.clone(), group_grant.clone()]).await?;
    let removed = clients[&3]
        .delete_acls(AclFilter {
            resource_type: Some(ResourceType::Group),
            ..AclFilter::any()
        })
        .await?;
    anyhow::ensure!(removed == vec![group_grant], "removed {removed:?}");
    everywhere(vec![grant, deny.clone()]).await?;
    clients[&2].delete_topic(AUDITED).await?;
    everywhere(vec![deny]).await?;
    Ok(())
}

/// With more nodes than replicas, a node holding no replica of a group's partition of the
/// groups topic still answers the group's requests (handing them to a replica, which hands
/// them to the leader) and lists the group, also while one of those replicas is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_groups_replica_answers_through_the_others() -> anyhow::Result<()> {
    use herald_broker::broker::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    let cluster = Cluster::new(4)?;
    let mut processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, GROUP_TOPIC, GROUP_TOPIC_PARTITIONS).await?;
    let shard = group_partition(GROUP, GROUPS_TOPIC_PARTITIONS);
    leader_of(&processes, GROUPS_TOPIC, shard).await?;
    let replicas: Vec<u64> = replicas_of(&processes, GROUPS_TOPIC, shard).await?;
    let outsider = outsider_of(&replicas)?;
    outsiders_name_leaders(&cluster, &processes).await?;
    // Every request goes through the outsider only (the others stay up in `processes`).
    let mut alive: BTreeMap<usize, BrokerProcess> = BTreeMap::new();
    alive.insert(
        outsider,
        processes
            .remove(&outsider)
            .context("the outsider's process")?,
    );
    let (member_id, member_epoch) = join_group(&alive, None).await?;
    let offsets: Vec<Commit> = (0..GROUP_TOPIC_PARTITIONS)
        .map(|p| Commit {
            partition: TopicPartition::new(GROUP_TOPIC, p),
            offset: 40 + i64::from(p),
            metadata: String::new(),
        })
        .collect();
    let committed = group_request(
        &alive,
        None,
        GroupRequest::Commit {
            group: GROUP.to_owned(),
            member_id,
            member_epoch,
            offsets,
        },
    )
    .await?;
    anyhow::ensure!(
        matches!(committed, Ok(GroupResponse::Committed)),
        "commit through node {outsider}: {committed:?}"
    );
    // Its listing names the group, whose partition it holds no replica of.
    let listed = group_request(&alive, None, GroupRequest::List).await?;
    anyhow::ensure!(
        matches!(&listed, Ok(GroupResponse::Groups(names)) if names.iter().any(|n| n == GROUP)),
        "listing through node {outsider}: {listed:?}"
    );
    // The preferred replica (the usual leader) goes down: the outsider still answers.
    let first = usize::try_from(replicas[0])?;
    processes
        .remove(&first)
        .context("the first replica")?
        .kill()?;
    let seen = committed_offsets(&alive, None).await?;
    anyhow::ensure!(
        seen == vec![Some(40), Some(41), Some(42)],
        "through node {outsider} with node {first} down: {seen:?}"
    );
    Ok(())
}

/// For each partition of a topic on four nodes (three replicas each), the node holding no
/// replica of it names a leader among its replicas in its metadata, and a client that knows
/// only that node produces to the partition (a leader named by no one sent such a client
/// back to the same node forever).
async fn outsiders_name_leaders(
    cluster: &Cluster,
    processes: &BTreeMap<usize, BrokerProcess>,
) -> anyhow::Result<()> {
    const SPREAD: &str = "spread";
    let router = Router::new(cluster.dialer(processes)?, None);
    create_topic(&router, SPREAD, 4).await?;
    for partition in 0..4 {
        leader_of(processes, SPREAD, partition).await?;
        let replicas = replicas_of(processes, SPREAD, partition).await?;
        let outsider = outsider_of(&replicas)?;
        let client = processes[&outsider].client().await?;
        let metadata = client.metadata(SPREAD).await?;
        client.close();
        let named = metadata
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .and_then(|p| p.leader);
        anyhow::ensure!(
            named.is_some_and(|leader| replicas.contains(&leader)),
            "node {outsider} names {named:?} as the leader of {SPREAD}/{partition} (replicas {replicas:?})"
        );
        let only = dialer(
            vec![cluster.listen[outsider - 1]],
            processes[&outsider].trust(),
            Credentials::None,
        );
        produce_via(&Router::new(only, None), SPREAD, partition, "outside")
            .await
            .with_context(|| format!("a client of node {outsider} only"))?;
    }
    Ok(())
}

/// Produces `value` to `topic`/`partition` through `router` (following its leader hints,
/// for up to 30 s): the offset.
async fn produce_via(
    router: &Router,
    topic: &str,
    partition: u32,
    value: &str,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let route = router.leader(topic, partition).await?;
        match route
            .client
            .produce(topic, partition, Durability::Fsync, batch(value)?)
            .await
        {
            Ok((offset, _)) => return Ok(offset),
            Err(error) => {
                router.failed(topic, &route, &error);
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "could not produce to {topic}/{partition} within 30 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs the `herald` CLI with `args` and every node as `--broker` (trusting the nodes'
/// certificate), off the runtime's threads: its output.
async fn herald_cli(
    cluster: &Cluster,
    processes: &BTreeMap<usize, BrokerProcess>,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    let brokers: Vec<String> = cluster.listen.iter().map(SocketAddr::to_string).collect();
    let fingerprint = processes
        .values()
        .next()
        .context("a node")?
        .fingerprint
        .clone();
    let mut command = std::process::Command::new(herald_tests::herald_binary()?);
    command.args(args).args([
        "--broker",
        &brokers.join(","),
        "--fingerprint",
        &fingerprint,
    ]);
    Ok(tokio::task::spawn_blocking(move || command.output()).await??)
}

/// The topic the move test moves.
const MOVED: &str = "moved";

/// A fourth node started with `--join` takes a partition moved onto it by `herald cluster
/// move --wait` while an idempotent producer keeps writing to it; the move replaces the
/// partition's preferred leader (which leads it when the move starts). Afterwards every
/// acknowledged record is at its offset on each new replica, nothing failed, every node's
/// metadata names the new replicas, and the replica moved away is deleted from its node's
/// data directory. Then the node moved away from is drained and removed (see
/// [`drain_and_remove`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_onto_a_joining_node_while_it_takes_writes() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(4)?;
    let everyone = cluster.peers.clone();
    cluster.peers = everyone.split(',').take(3).collect::<Vec<_>>().join(",");
    let mut processes: BTreeMap<usize, BrokerProcess> = (1..=3)
        .map(|node| Ok((node, cluster.start(node)?)))
        .collect::<anyhow::Result<_>>()?;
    let router = Arc::new(Router::new(cluster.dialer(&processes)?, None));
    create_topic(&router, MOVED, 1).await?;
    let producer = RawProducer::with_router(
        router.clone(),
        MOVED,
        ProducerConfig {
            durability: Durability::Fsync,
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        },
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = spawn_sender(producer.clone(), stop.clone(), sent.clone());
    let progressed = |since: u64| {
        let sent = sent.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sent.load(Ordering::Relaxed) < since + PROGRESS_RECORDS {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the producer made no progress for 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(sent.load(Ordering::Relaxed))
        }
    };
    let mark = progressed(0).await?;

    processes.insert(4, cluster.start_joining(4, &everyone)?);
    // Once the cluster knows node 4 (it registers through its peers).
    let node_1 = processes[&1].client().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node_1
        .metadata(MOVED)
        .await
        .is_ok_and(|metadata| metadata.nodes.iter().any(|node| node.id == 4))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "node 4 did not register within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node_1.close();
    let before = replicas_of(&processes, MOVED, 0).await?;
    // The preferred leader (the first replica) goes; node 4 comes first.
    let removed = before[0];
    let target: Vec<u64> = std::iter::once(4)
        .chain(before[1..].iter().copied())
        .collect();
    let replicas = target
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let moved = herald_cli(
        &cluster,
        &processes,
        &[
            "cluster",
            "move",
            "--topic",
            MOVED,
            "--partition",
            "0",
            "--replicas",
            &replicas,
            "--wait",
            "--timeout-secs",
            "120",
        ],
    )
    .await?;
    anyhow::ensure!(
        moved.status.success(),
        "cluster move failed: {}{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    anyhow::ensure!(String::from_utf8_lossy(&moved.stdout).contains("moved: nodes"));
    // The producer goes on at the new replicas.
    progressed(mark).await?;
    stop.store(true, Ordering::Relaxed);
    let (landed, failed) = sender.await??;
    let acked: BTreeMap<i64, String> = landed
        .into_iter()
        .map(|(_, offset, value)| (offset, value))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} sends failed across the move, e.g. {:?}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    let last = *acked.keys().next_back().context("nothing acknowledged")?;
    for node in &target {
        let client = processes[&(*node as usize)].client().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let stored = loop {
            let stored = partition_records(&client, MOVED, 0).await?;
            if stored.keys().next_back().is_some_and(|end| *end >= last)
                || Instant::now() > deadline
            {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for (offset, value) in &acked {
            anyhow::ensure!(
                stored.get(offset) == Some(value),
                "node {node}: offset {offset} holds {:?}, acknowledged {value}",
                stored.get(offset)
            );
        }
    }
    for placement in placements(&processes, MOVED, 0).await {
        let placement = placement.context("every node answers")?;
        anyhow::ensure!(
            placement.replicas == target,
            "{placement:?} after the move to {target:?}"
        );
    }
    let gone = cluster
        .dir
        .path()
        .join(format!("node-{removed}"))
        .join(herald_broker::broker::REPLICAS_DIR)
        .join(MOVED)
        .join("0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while gone.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} is still there",
            gone.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain_and_remove(&cluster, processes, removed, &target).await
}

/// Node `removed` (holding no replica of the moved topic any more) leaves the cluster: the
/// CLI's removal is refused, naming what it holds, while it still holds replicas of the
/// groups topic; each of those moves to node 4 (the node SIGKILLed and restarted while
/// they move); then the removal goes through, and every
/// node's metadata leaves it out. Its process is killed and so is another founding node's:
/// the two left (node 4 voting in the controller in the removed node's place) still create
/// a topic and take writes on the moved partition (held by `moved_to`).
async fn drain_and_remove(
    cluster: &Cluster,
    mut processes: BTreeMap<usize, BrokerProcess>,
    removed: u64,
    moved_to: &[u64],
) -> anyhow::Result<()> {
    use herald_broker::broker::{GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    let node = removed.to_string();
    let remove = ["cluster", "remove-node", "--node", node.as_str()];
    let refused = herald_cli(cluster, &processes, &remove).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    anyhow::ensure!(
        !refused.status.success()
            && stderr.contains("still holds")
            && stderr.contains(GROUPS_TOPIC),
        "a removal while node {removed} holds replicas: {stderr}"
    );
    let router = Router::new(cluster.dialer(&processes)?, None);
    let mut moving = Vec::new();
    for partition in 0..GROUPS_TOPIC_PARTITIONS {
        let replicas = replicas_of(&processes, GROUPS_TOPIC, partition).await?;
        if replicas.contains(&removed) {
            let target: Vec<u64> = replicas
                .iter()
                .map(|n| if *n == removed { 4 } else { *n })
                .collect();
            router
                .any()
                .await?
                .client
                .move_partition(GROUPS_TOPIC, partition, &target)
                .await?;
            moving.push(partition);
        }
    }
    anyhow::ensure!(
        !moving.is_empty(),
        "node {removed} held no groups partition"
    );
    // The node being drained crashes mid-move (it leads some of those partitions) and comes
    // back: the moves still finish (whoever leads carries each on).
    let node = usize::try_from(removed)?;
    processes
        .remove(&node)
        .context("the drained node's process")?
        .kill()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    processes.insert(node, cluster.start(node)?);
    let deadline = Instant::now() + Duration::from_secs(120);
    for partition in moving {
        while placements(&processes, GROUPS_TOPIC, partition)
            .await
            .into_iter()
            .any(|p| p.is_none_or(|p| p.replicas.contains(&removed)))
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{GROUPS_TOPIC}/{partition} did not move off node {removed} within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let done = herald_cli(cluster, &processes, &remove).await?;
    anyhow::ensure!(
        done.status.success(),
        "removing node {removed}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for process in processes.values() {
        let client = process.client().await?;
        while client
            .metadata(MOVED)
            .await?
            .nodes
            .iter()
            .any(|n| n.id == removed)
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "a node still names node {removed}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.close();
    }
    let second = *moved_to
        .iter()
        .find(|n| **n != 4)
        .context("another founding node")?;
    for node in [removed, second] {
        processes
            .remove(&usize::try_from(node)?)
            .context("the node's process")?
            .kill()?;
    }
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, "after-removal", 1).await?;
    produce_via(&router, MOVED, 0, "after-removal").await?;
    // The removed node started again is refused by the cluster and stops (it ran on outside
    // the cluster before, answering nothing useful).
    let mut again = cluster.start(usize::try_from(removed)?)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = again.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the removed node {removed}, started again, still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(!status.success(), "the removed node exited with {status}");
    Ok(())
}

/// Users are the cluster's: a user added through one node (as its SCRAM credential, made on
/// the client) authenticates on every node; a new password replaces the old one everywhere;
/// a removed user is refused everywhere; only an operator (ALTER on the cluster) changes
/// users, and every node lists the same ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_the_same_on_every_node() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(3)?;
    cluster.shared_admin()?;
    let processes = cluster.start_all()?;
    let admins = clients_of(&processes).await?;
    let credential = |password: &str| -> anyhow::Result<String> {
        Ok(herald_auth::users::Users::credential_for(password)?.to_text())
    };
    // With `herald user add --online` through node 2, once its controller has a leader.
    let admin_file = cluster
        .dir
        .path()
        .join("node-2")
        .join(herald_auth::local::LOCAL_CREDENTIALS_FILE);
    let (node_2, fingerprint) = (
        processes[&2].addr.to_string(),
        processes[&2].fingerprint.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (node_2, fingerprint, admin_file) =
            (node_2.clone(), fingerprint.clone(), admin_file.clone());
        let added = tokio::task::spawn_blocking(move || {
            herald_tests::run_with_input(
                std::process::Command::new(herald_tests::herald_binary()?)
                    .args(["user", "add", "alice", "--online", "--broker", &node_2])
                    .args(["--registry-role", "write", "--subject", "team-a."])
                    .args(["--fingerprint", &fingerprint, "--credentials"])
                    .arg(&admin_file),
                "correct horse\n",
            )
        })
        .await??;
        if added.status.success() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "herald user add --online failed: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let login = |node: usize, password: &str| {
        let process = &processes[&node];
        let (addr, trust) = (process.addr, process.trust());
        let credentials = Credentials::Scram {
            user: "alice".to_owned(),
            password: password.to_owned().into(),
        };
        async move { BrokerClient::connect_with(addr, trust, &credentials).await }
    };
    // Every node, within a moment (each follows the controller's image).
    let on_every_node = |password: &'static str, works: bool| {
        let login = &login;
        async move {
            for node in 1..=3 {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let result = login(node, password).await;
                    if result.is_ok() == works {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "node {node}: alice with {password:?} {} ({:?})",
                        if works { "is refused" } else { "still logs in" },
                        result.err()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    on_every_node("correct horse", true).await?;
    // Every node keeps a copy of the cluster's users, with their registry roles, where a
    // registry reads them: alice writes team-a. subjects there, and nothing else.
    let mirror = |node: usize| {
        cluster
            .dir
            .path()
            .join(format!("node-{node}"))
            .join(herald_broker::security::CLUSTER_MIRROR_DIR)
            .join(herald_auth::users::FILE)
    };
    let writer = herald_auth::users::RegistryAccess::new(
        herald_auth::users::RegistryRole::Write,
        vec!["team-a.".to_owned()],
    )?;
    for node in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let users = herald_auth::users::Users::open_file(&mirror(node))?;
            if users.user("alice").and_then(|u| u.registry.as_ref()) == Some(&writer) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {node}'s copy of the cluster's users: {:?}",
                users.names().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let users_file = mirror(1).display().to_string();
    let registry = herald_tests::RegistryProcess::start_with(
        &cluster.dir.path().join("registry"),
        &["--users", &users_file],
    )?;
    let http = reqwest::Client::new();
    let register = |subject: &'static str, password: &'static str| {
        let (http, url) = (&http, registry.url.clone());
        async move {
            let status = http
                .post(format!("{url}/subjects/{subject}/versions"))
                .basic_auth("alice", Some(password))
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(r#"{"schema":"\"string\""}"#)
                .send()
                .await?
                .status();
            Ok::<_, anyhow::Error>(status.as_u16())
        }
    };
    let mine = register("team-a.orders-value", "correct horse").await?;
    anyhow::ensure!(mine == 200, "alice registering under team-a.: {mine}");
    let theirs = register("team-b.orders-value", "correct horse").await?;
    anyhow::ensure!(theirs == 403, "alice registering under team-b.: {theirs}");
    // A SUBJECT grant made through the cluster reaches the registry too.
    {
        use herald_auth::acl::{AclEntry, Operation, PatternType, Permission, Principal};
        let grant = AclEntry::new(
            Principal::user("alice")?,
            herald_auth::acl::ResourceType::Subject,
            PatternType::Prefixed,
            "team-b.",
            Operation::Write,
            Permission::Allow,
        )?;
        admins[&2].create_acls(vec![grant]).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let granted = register("team-b.orders-value", "correct horse").await?;
        if granted == 200 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "alice under team-b. after the cluster's grant: {granted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (node, admin) in &admins {
        let names = admin.list_users().await?;
        anyhow::ensure!(
            names.contains(&"alice".to_owned()) && names.contains(&"admin".to_owned()),
            "node {node} lists {names:?}"
        );
    }
    // alice may not change users (she has no ALTER on the cluster).
    let alice = login(3, "correct horse").await?;
    match alice
        .alter_user("mallory", &credential("mallory's own")?)
        .await
    {
        Err(RequestError::Broker {
            code: ErrorCode::NotAuthorized,
            ..
        }) => {}
        other => anyhow::bail!("alice changed users: {other:?}"),
    }
    // A new password, set through node 3, replaces the old one on every node.
    admins[&3]
        .alter_user("alice", &credential("battery staple")?)
        .await?;
    on_every_node("correct horse", false).await?;
    on_every_node("battery staple", true).await?;
    // Removed through node 1: refused everywhere, the registry included.
    admins[&1].delete_user("alice").await?;
    on_every_node("battery staple", false).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = register("team-a.orders-value", "battery staple").await?;
        if status == 401 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the registry still answers a removed user {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match admins[&2].delete_user("alice").await {
        Err(RequestError::Broker {
            code: ErrorCode::InvalidRequest,
            message,
            ..
        }) => anyhow::ensure!(message.contains("alice"), "{message}"),
        other => anyhow::bail!("a second removal answered {other:?}"),
    }
    Ok(())
}

/// A batch whose records carry the idempotency keys `keys` (as values too).
fn keyed(keys: &[&str], producer: Option<(i64, i16, i32)>) -> anyhow::Result<Vec<u8>> {
    let mut builder = match producer {
        Some((id, epoch, sequence)) => BatchBuilder::new().idempotent(id, epoch, sequence),
        None => BatchBuilder::new(),
    };
    for key in keys {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(key.as_bytes().to_vec()),
            headers: vec![herald_wire::batch::Header {
                key: herald_wire::headers::IDEMPOTENCY_KEY.into(),
                value: key.as_bytes().to_vec(),
            }],
        });
    }
    Ok(builder.encode()?)
}

/// Produces `batch` to partition 0 of `topic` through whichever node leads it: the offset of
/// each of its records (dropped duplicates where their first copy is).
async fn produce_keyed(
    processes: &BTreeMap<usize, BrokerProcess>,
    topic: &str,
    batch: Vec<u8>,
) -> anyhow::Result<Vec<i64>> {
    let count = batches(&batch).next().context("a batch")??.record_count() as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for process in processes.values() {
            let Ok(client) = process.client().await else {
                continue;
            };
            let answer = client
                .request(&herald_wire::Request::Produce {
                    topic: topic.to_owned(),
                    partition: 0,
                    durability: Durability::Fsync,
                    batch: batch.clone().into(),
                })
                .await;
            client.close();
            match answer {
                Ok(herald_wire::Response::Produced {
                    base_offset,
                    record_offsets,
                    ..
                }) => {
                    return Ok(if record_offsets.is_empty() {
                        (base_offset..base_offset + count).collect()
                    } else {
                        record_offsets
                    })
                }
                Ok(herald_wire::Response::Error(_)) | Err(_) => {}
                Ok(other) => anyhow::bail!("a produce answered {other:?}"),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no node took the batch within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replicated topic with an idempotency-key window: its leader drops records whose key it
/// stored within the window (pointing them at their first copy), every replica keeps the
/// same window, so after the leader is SIGKILLed the new leader drops the same keys; an
/// idempotent producer's batch of duplicates only moves its sequence on every replica (its
/// next batch is in order, not refused); every node stores the same records at the same
/// offsets, each key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_dedup_window_survives_a_leader_kill() -> anyhow::Result<()> {
    const DEDUPED: &str = "deduped";
    let cluster = Cluster::new(3)?;
    let mut processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic_with(
        &router,
        DEDUPED,
        TopicConfig {
            dedup_window: Some(Duration::from_secs(600)),
            ..TopicConfig::default()
        },
    )
    .await?;
    // Offsets from the first record's (the partition's Raft entries come before it).
    let first = produce_keyed(&processes, DEDUPED, keyed(&["a", "b", "a"], None)?).await?;
    let at = |offsets: Vec<i64>| -> Vec<i64> { offsets.iter().map(|o| o - first[0]).collect() };
    assert_eq!(at(first.clone()), [0, 1, 0]);
    assert_eq!(
        at(produce_keyed(&processes, DEDUPED, keyed(&["b", "c"], None)?).await?),
        [1, 2]
    );
    assert_eq!(
        at(produce_keyed(&processes, DEDUPED, keyed(&["a", "c"], None)?).await?),
        [0, 2],
        "duplicates only: nothing stored"
    );
    let lead = leader_of(&processes, DEDUPED, 0).await?;
    processes.remove(&lead).context("leader")?.kill()?;
    // The new leader's window is the old one's ("d" goes after the new leader's own Raft
    // entry).
    let after = at(produce_keyed(&processes, DEDUPED, keyed(&["c", "d"], None)?).await?);
    anyhow::ensure!(after[0] == 2 && after[1] > 2, "{after:?}");
    processes.insert(lead, cluster.start(lead)?);
    // An idempotent producer: a batch of duplicates only, then its next batch.
    let (id, epoch) = {
        let client = processes
            .values()
            .next()
            .context("a node")?
            .client()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.init_producer("").await {
                Ok(ids) => break ids,
                Err(error) => {
                    anyhow::ensure!(Instant::now() < deadline, "no producer id: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let duplicates = keyed(&["a", "b"], Some((id, epoch, 0)))?;
    assert_eq!(
        at(produce_keyed(&processes, DEDUPED, duplicates).await?),
        [0, 1]
    );
    let next = produce_keyed(&processes, DEDUPED, keyed(&["e"], Some((id, epoch, 2)))?).await?;
    anyhow::ensure!(
        next.len() == 1 && next[0] > first[0] + 3,
        "the next batch is stored: {next:?}"
    );
    // Every node holds each key once, at the same offsets.
    let mut reference: Option<BTreeMap<i64, String>> = None;
    for (node, process) in &processes {
        let client = process.client().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let stored = loop {
            let stored = partition_records(&client, DEDUPED, 0).await?;
            if stored.len() >= 5 || Instant::now() > deadline {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let values: Vec<&str> = stored.values().map(String::as_str).collect();
        anyhow::ensure!(
            values == ["a", "b", "c", "d", "e"],
            "node {node} holds {stored:?}"
        );
        anyhow::ensure!(
            stored.get(&next[0]).map(String::as_str) == Some("e"),
            "node {node}: {stored:?}"
        );
        match &reference {
            None => reference = Some(stored),
            Some(reference) => anyhow::ensure!(
                &stored == reference,
                "node {node} differs: {stored:?} vs {reference:?}"
            ),
        }
    }
    Ok(())
}

/// A node whose disk fills up (its data directory on a small tmpfs, filled with a file) while
/// the cluster takes writes: the other two acknowledge every produce (whichever node led the
/// partition), nothing acknowledged is lost, and once the file is removed the node starts
/// its stopped replicas again by itself (no restart) and holds every acknowledged record at
/// its offset. Needs root to mount the tmpfs; says so and passes where `mount` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_catches_up_once_it_has_room() -> anyhow::Result<()> {
    const FULL: &str = "full";
    const DISK_BYTES: u64 = 24 * 1024 * 1024;
    const RECORD_BYTES: usize = 16 * 1024;
    let cluster = Cluster::new(3)?;
    let third = cluster.dir.path().join("node-3");
    std::fs::create_dir_all(&third)?;
    let Some(disk) = herald_tests::Tmpfs::mount(&third, DISK_BYTES) else {
        println!("skipped: mounting a tmpfs needs root (mount -t tmpfs was refused)");
        return Ok(());
    };
    let processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, FULL, 1).await?;
    let record = |value: &str| herald_tests::padded_record(value, RECORD_BYTES);
    let clients = clients_of(&processes).await?;
    // Through whichever node leads (`produce` tries each in turn).
    let send = |value: String| {
        let clients = &clients;
        async move {
            let batch = record(&value)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                for client in clients.values() {
                    if let Ok((base, _)) = client
                        .produce(FULL, 0, Durability::Fsync, batch.clone())
                        .await
                    {
                        return Ok::<_, anyhow::Error>((base, value));
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no node took {value} within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut acked = BTreeMap::new();
    for n in 0..10 {
        let (base, value) = send(format!("before-{n}")).await?;
        acked.insert(base, value);
    }
    // Node 3's disk fills up.
    let filler = disk.path.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    for n in 0..40 {
        let (base, value) = send(format!("full-{n}")).await?;
        acked.insert(base, value);
    }
    // Node 3 says what keeps its replica from serving (as a single broker reports a fenced
    // log), while writes keep coming.
    let problem_on_3 = || async {
        let client = processes[&3].client().await?;
        let described = client.describe_topic(FULL).await;
        client.close();
        Ok::<_, anyhow::Error>(described?.partitions[0].problem.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut extra = 0;
    let problem = loop {
        if let Some(problem) = problem_on_3().await? {
            break problem;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node 3 describes its replica on a full disk without a problem"
        );
        let (base, value) = send(format!("full-extra-{extra}")).await?;
        acked.insert(base, value);
        extra += 1;
    };
    // The disk's own error, whether the log was fenced or the group stopped.
    anyhow::ensure!(
        problem.contains("No space left") || problem.contains("os error 28"),
        "node 3's problem: {problem}"
    );
    std::fs::remove_file(&filler)?;
    for n in 0..10 {
        let (base, value) = send(format!("after-{n}")).await?;
        acked.insert(base, value);
    }
    let last = *acked.keys().next_back().context("acknowledged records")?;
    let stored_on = |node: usize| {
        let processes = &processes;
        async move {
            let client = processes[&node].client().await?;
            let stored = partition_records(&client, FULL, 0).await;
            client.close();
            stored
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = stored_on(3).await.unwrap_or_default();
        if stored.keys().next_back().is_some_and(|end| *end >= last) || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Caught up, it reports no problem.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(problem) = problem_on_3().await? {
        anyhow::ensure!(Instant::now() < deadline, "node 3 still reports {problem}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in [1, 2] {
        let others = stored_on(node).await?;
        for (offset, value) in &acked {
            anyhow::ensure!(
                others.get(offset) == Some(&format!("{value:.<RECORD_BYTES$}")),
                "node {node} lost {value} at {offset}"
            );
        }
    }
    for (offset, value) in &acked {
        anyhow::ensure!(
            stored.get(offset) == Some(&format!("{value:.<RECORD_BYTES$}")),
            "node 3 holds {:?} at {offset}, acknowledged {value}",
            stored.get(offset).map(|v| v.trim_end_matches('.'))
        );
    }
    // The nodes stop before the tmpfs goes.
    drop(processes);
    drop(disk);
    Ok(())
}

/// The groups topic stays bounded and keeps every commit: a group commits offsets with long
/// metadata until its partition of the groups topic passes its checkpoint size; the
/// coordinator restates the group's offsets and marks a checkpoint, every replica purges
/// the segments before it (each node's copy of the groups topic shrinks), and after the
/// coordinator is SIGKILLed the new one (reading only what is left) answers the last
/// acknowledged commit for every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_topic_is_checkpointed_purged_and_keeps_every_commit() -> anyhow::Result<()> {
    use herald_broker::broker::{group_partition, GROUPS_TOPIC, GROUPS_TOPIC_PARTITIONS};
    const WIDE: &str = "ledger";
    const WIDE_PARTITIONS: u32 = 30;
    const ARCHIVISTS: &str = "archivists";
    const COMMITS: i64 = 60;
    let mut cluster = Cluster::new(3)?;
    let config = cluster.dir.path().join("broker.toml");
    std::fs::write(&config, "retention_check_interval_ms = 500\n")?;
    cluster.extra = vec!["--config".to_owned(), config.display().to_string()];
    let mut processes = cluster.start_all()?;
    let router = Router::new(cluster.dialer(&processes)?, None);
    create_topic(&router, WIDE, WIDE_PARTITIONS).await?;
    let shard = group_partition(ARCHIVISTS, GROUPS_TOPIC_PARTITIONS);
    let coordinator = preferred_leader_of(&processes, GROUPS_TOPIC, shard).await?;
    let (member_id, member_epoch) =
        join_as(&processes, None, ARCHIVISTS, WIDE, WIDE_PARTITIONS).await?;
    let groups_bytes = |node: usize| -> u64 {
        let dir = cluster
            .dir
            .path()
            .join(format!("node-{node}"))
            .join(herald_broker::broker::REPLICAS_DIR)
            .join(GROUPS_TOPIC)
            .join(shard.to_string());
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut largest = 0;
    let owned: Vec<TopicPartition> = (0..WIDE_PARTITIONS)
        .map(|p| TopicPartition::new(WIDE, p))
        .collect();
    for n in 0..COMMITS {
        // A consumer heartbeats while it commits (a slow run must not end its session).
        if n % 10 == 0 {
            let beat = group_request(
                &processes,
                None,
                GroupRequest::Heartbeat {
                    group: ARCHIVISTS.to_owned(),
                    member_id: Some(member_id.clone()),
                    member_epoch,
                    instance_id: None,
                    topics: vec![WIDE.to_owned()],
                    owned: owned.clone(),
                },
            )
            .await?;
            anyhow::ensure!(
                matches!(beat, Ok(GroupResponse::Assignment { .. })),
                "heartbeat before commit {n}: {beat:?}"
            );
        }
        let offsets = (0..WIDE_PARTITIONS)
            .map(|p| Commit {
                partition: TopicPartition::new(WIDE, p),
                offset: n * 1_000 + i64::from(p),
                metadata: format!("{n:0>3000}"),
            })
            .collect::<Vec<_>>();
        let answer = group_request(
            &processes,
            None,
            GroupRequest::Commit {
                group: ARCHIVISTS.to_owned(),
                member_id: member_id.clone(),
                member_epoch,
                offsets,
            },
        )
        .await?;
        anyhow::ensure!(
            matches!(answer, Ok(GroupResponse::Committed)),
            "commit {n}: {answer:?}"
        );
        largest = largest.max(groups_bytes(coordinator));
    }
    anyhow::ensure!(
        largest > 4 << 20,
        "the groups partition grew to {largest} bytes only"
    );
    // Every node's copy shrinks below the checkpoint size.
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in 1..=3 {
        while groups_bytes(node) > 3 << 20 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {node} still holds {} bytes of the groups partition (largest {largest})",
                groups_bytes(node)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    processes
        .remove(&coordinator)
        .context("coordinator")?
        .kill()?;
    let asked: Vec<TopicPartition> = (0..WIDE_PARTITIONS)
        .map(|p| TopicPartition::new(WIDE, p))
        .collect();
    let answer = group_request(
        &processes,
        None,
        GroupRequest::FetchOffsets {
            group: ARCHIVISTS.to_owned(),
            partitions: asked,
        },
    )
    .await?;
    let Ok(GroupResponse::Offsets(offsets)) = answer else {
        anyhow::bail!("fetching the offsets answered {answer:?}");
    };
    for (p, committed) in offsets.iter().enumerate() {
        anyhow::ensure!(
            committed.offset == Some((COMMITS - 1) * 1_000 + p as i64)
                && committed.metadata == format!("{:0>3000}", COMMITS - 1),
            "partition {p}: the new coordinator answers {:?}",
            committed.offset
        );
    }
    Ok(())
}
