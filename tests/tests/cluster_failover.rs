//! A three-node cluster of real `herald broker serve` processes on 127.0.0.1 (nodes
//! authenticate each other with certificates a test CA signed): a topic created through one
//! node is placed on all three; produced batches go to the partition's leader (the others
//! answer `NotLeader`); the leader is SIGKILLed and restarted, `ROUNDS` times, while the
//! producer moves to whichever node leads. Afterwards every node holds every acknowledged
//! record at its acknowledged offset, and no offset holds two different records on any two
//! nodes. Raise `ROUNDS` locally for a longer loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_broker_client::{BrokerClient, RequestError};
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::ErrorCode;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const ROUNDS: usize = 3;
const BATCHES_PER_ROUND: usize = 15;
const TOPIC: &str = "replicated";

/// Writes the CA's certificate and each node's certificate and key; their paths.
fn certificates(dir: &Path, nodes: usize) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())?;
    let mut out = Vec::new();
    for node in 1..=nodes {
        let key = KeyPair::generate()?;
        let certificate =
            CertificateParams::new(vec!["herald-node".to_owned()])?.signed_by(&key, &ca)?;
        let cert_path = dir.join(format!("node-{node}.pem"));
        let key_path = dir.join(format!("node-{node}.key"));
        std::fs::write(&cert_path, certificate.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        out.push((
            cert_path.display().to_string(),
            key_path.display().to_string(),
        ));
    }
    Ok((ca_path.display().to_string(), out))
}

/// Free UDP ports on 127.0.0.1 for the nodes' Raft endpoints (their peers must know them
/// before they start).
fn raft_addrs(nodes: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let sockets: Vec<std::net::UdpSocket> = (0..nodes)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?)
}

struct Cluster {
    dir: tempfile::TempDir,
    peers: String,
    ca: String,
    nodes: Vec<(String, String)>,
}

impl Cluster {
    fn start(&self, node: usize) -> anyhow::Result<BrokerProcess> {
        let data_dir = self.dir.path().join(format!("node-{node}"));
        std::fs::create_dir_all(&data_dir)?;
        let id = node.to_string();
        let (cert, key) = &self.nodes[node - 1];
        BrokerProcess::start_with(
            &data_dir,
            &[
                "--insecure-no-auth",
                "--node-id",
                &id,
                "--peers",
                &self.peers,
                "--cluster-ca",
                &self.ca,
                "--node-cert",
                cert,
                "--node-key",
                key,
            ],
        )
    }
}

fn batch(value: &str) -> anyhow::Result<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: 1,
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
    });
    Ok(builder.encode()?)
}

/// Produces `value` through whichever node leads partition 0 (trying each in turn while
/// they answer `NotLeader` or cannot be reached); its offset.
async fn produce(clients: &BTreeMap<usize, BrokerClient>, value: &str) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for client in clients.values() {
            match client
                .produce(TOPIC, 0, Durability::Fsync, batch(value)?)
                .await
            {
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

/// Every data record a node serves (committed), as offset → value.
async fn records(client: &BrokerClient) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut out = BTreeMap::new();
    let mut offset = 0i64;
    loop {
        let fetched = client
            .fetch(TOPIC, 0, offset, 1 << 20, Duration::ZERO, 1)
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
    let dir = tempfile::tempdir()?;
    let (ca, nodes) = certificates(dir.path(), 3)?;
    let peers = raft_addrs(3)?
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let cluster = Cluster {
        dir,
        peers,
        ca,
        nodes,
    };
    let mut processes = BTreeMap::new();
    let mut clients = BTreeMap::new();
    for node in 1..=3 {
        let process = cluster.start(node)?;
        clients.insert(node, process.client().await?);
        processes.insert(node, process);
    }
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
            let offset = produce(&clients, &value).await?;
            acked.insert(offset, value);
        }
        let lead = leader(&clients, &mut acked, &format!("probe-{round}")).await?;
        // SIGKILL the leader and go on without it; then bring it back.
        clients.remove(&lead);
        processes.remove(&lead).context("leader process")?.kill()?;
        for n in 0..BATCHES_PER_ROUND {
            let value = format!("round-{round}-after-{n}");
            let offset = produce(&clients, &value).await?;
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
            let stored = records(client).await?;
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
