//! `herald cluster up`: a local cluster of brokers in this process, for trying replication.
//! Node i's broker listens on `base_port + 2(i-1)` and its Raft endpoint on the port after;
//! the cluster's CA and the nodes' certificates (for each other) and the one certificate every
//! node serves clients with (so one fingerprint trusts the whole bootstrap list) are
//! generated into `<data-dir>/tls` on first start and reused after.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_broker::tls::local_cluster_tls;

use anyhow::Context;
use herald_broker::broker::{ClusterConfig, Timing};
use herald_broker::BrokerConfig;

/// Most nodes `cluster up` starts.
pub(crate) const LOCAL_NODES_MAX: u64 = 9;

/// Node `node`'s broker port (or Raft port, the one after) in a local cluster from `base_port`.
fn local_port(base_port: u16, node: u64, raft: bool) -> anyhow::Result<u16> {
    let offset = 2 * node.saturating_sub(1) + u64::from(raft);
    u16::try_from(u64::from(base_port) + offset)
        .ok()
        .context("--base-port leaves no room for the nodes' ports")
}

/// The client addresses of a local cluster's `nodes` brokers.
pub(crate) fn local_brokers(nodes: u64, base_port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    anyhow::ensure!(
        (1..=LOCAL_NODES_MAX).contains(&nodes),
        "--nodes must be within 1..={LOCAL_NODES_MAX}"
    );
    (1..=nodes)
        .map(|node| {
            Ok(SocketAddr::from((
                [127, 0, 0, 1],
                local_port(base_port, node, false)?,
            )))
        })
        .collect()
}

/// The certificate a local cluster's nodes serve clients (see `local_cluster_tls`).
pub(crate) fn local_client_certificate(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("broker.pem")
}

/// `herald cluster remove-node`: asks the nodes other than `node` (the node itself stops
/// learning what the controller does once it is out), in turn, until one answers that the
/// controller let it go; a node answering "ask again" (the controller has not let it go
/// yet) is asked again until `timeout`.
pub(crate) async fn remove_node(
    broker: &crate::admin::BrokerArgs,
    node: u64,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let router = broker.router().await?;
    let any = router.any().await?.client;
    let mut others: Vec<SocketAddr> = Vec::new();
    for topic in any.list_topics().await? {
        if let Ok(metadata) = any.metadata(&topic.name).await {
            for known in metadata.nodes {
                if known.id != node {
                    if let Ok(addr) = known.addr.parse::<SocketAddr>() {
                        if !others.contains(&addr) {
                            others.push(addr);
                        }
                    }
                }
            }
        }
        if !others.is_empty() {
            break;
        }
    }
    let mut turn = 0usize;
    loop {
        let client = match others.get(turn % others.len().max(1)) {
            Some(addr) => broker.client_at(*addr).await,
            // No other node named yet: whichever the bootstrap list reaches.
            None => Ok(router.any().await?.client),
        };
        turn += 1;
        let answer = match client {
            Ok(client) => client.remove_node(node).await.map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match answer {
            Ok(()) => return Ok(()),
            Err(error) if std::time::Instant::now() < deadline && retryable(&error) => {
                eprintln!("waiting: {error:#}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A failure worth asking again: a retryable broker answer, or a node not reached.
fn retryable(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<herald_broker_client::RequestError>()
        .is_none_or(herald_broker_client::RequestError::retryable)
}

/// How long `cluster status` waits for a node before calling it unreachable.
const STATUS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `herald cluster status`: every node the cluster names (reachable or not), then per
/// partition of every topic its leader, term, replicas and followers' lag.
pub(crate) async fn status(broker: &crate::admin::BrokerArgs) -> anyhow::Result<()> {
    let router = broker.router().await?;
    let any = router.any().await?.client;
    let topics = any.list_topics().await?;
    let mut nodes = std::collections::BTreeMap::new();
    for topic in &topics {
        if let Ok(metadata) = any.metadata(&topic.name).await {
            for node in metadata.nodes {
                nodes.insert(node.id, node.addr);
            }
        }
    }
    if nodes.is_empty() && !topics.is_empty() {
        println!(
            "a single broker (not a cluster) at {}",
            any.remote_address()
        );
    }
    println!("nodes:");
    for (id, addr) in &nodes {
        let reachable = match addr.parse::<SocketAddr>() {
            Ok(addr) => matches!(
                tokio::time::timeout(STATUS_PROBE_TIMEOUT, broker.client_at(addr)).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        println!(
            "  node {id} at {addr}: {}",
            if reachable { "up" } else { "unreachable" }
        );
    }
    if topics.is_empty() {
        println!("no topics");
    }
    for topic in &topics {
        let described = crate::admin::describe_from_leaders(&router, &topic.name).await?;
        println!("{}:", topic.name);
        for p in &described.partitions {
            match &p.replication {
                Some(replication) => {
                    let lag = replication
                        .followers
                        .iter()
                        .map(|f| match f.batches_behind {
                            Some(behind) => format!("node {} {behind} behind", f.node),
                            None => format!("node {} not matched yet", f.node),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    println!(
                        "  {}: leader {} term {} replicas {:?} high watermark {}{}",
                        p.partition,
                        replication
                            .leader
                            .map_or("none".to_owned(), |l| format!("node {l}")),
                        replication.term,
                        replication.replicas,
                        p.high_watermark,
                        if lag.is_empty() {
                            String::new()
                        } else {
                            format!("; followers: {lag}")
                        }
                    );
                }
                None => println!(
                    "  {}: high watermark {}{}",
                    p.partition,
                    p.high_watermark,
                    p.problem
                        .as_deref()
                        .map_or(String::new(), |problem| format!(" ({problem})"))
                ),
            }
        }
    }
    Ok(())
}

/// With authentication on, one admin for the whole local cluster: its credentials in
/// `data_dir/admin.credentials` (made on first start), and the same user in every node's
/// users file, so one login works on every node. Nodes whose users file has users already
/// keep them.
pub(crate) fn local_cluster_admin(data_dir: &Path, nodes: u64) -> anyhow::Result<PathBuf> {
    use herald_auth::local::{LocalCredentials, LOCAL_CREDENTIALS_FILE};
    use herald_auth::users::Users;
    let path = data_dir.join(LOCAL_CREDENTIALS_FILE);
    let credentials = match std::fs::read_to_string(&path) {
        Ok(text) => LocalCredentials::parse(&text)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let credentials = LocalCredentials::generate()?;
            herald_meta::write_private(&path, credentials.to_text().as_bytes())?;
            credentials
        }
        Err(error) => return Err(anyhow::Error::new(error).context(path.display().to_string())),
    };
    for node in 1..=nodes {
        let node_dir = data_dir.join(format!("node-{node}"));
        std::fs::create_dir_all(&node_dir)?;
        let mut users = Users::open(&node_dir)?;
        if users.names().next().is_none() {
            users.add_local_admin(&credentials, &node_dir)?;
        }
    }
    Ok(path)
}

/// How often `cluster move --wait` looks at the partition's replicas.
const MOVE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// `herald cluster move`: records the move; with `wait`, waits until the partition's
/// replicas are `replicas` (the move finished) or `wait` passed.
pub(crate) async fn move_partition(
    broker: &crate::admin::BrokerArgs,
    topic: &str,
    partition: u32,
    replicas: &[u64],
    wait: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let router = broker.router().await?;
    let any = router.any().await?.client;
    any.move_partition(topic, partition, replicas).await?;
    println!("partition {partition} of {topic} moves to nodes {replicas:?}");
    let Some(wait) = wait else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut wanted = replicas.to_vec();
    wanted.sort_unstable();
    loop {
        let metadata = any.metadata(topic).await?;
        let mut now: Vec<u64> = metadata
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.replicas.clone())
            .unwrap_or_default();
        now.sort_unstable();
        if now == wanted {
            println!("moved: nodes {replicas:?} hold partition {partition} of {topic}");
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the move did not finish within {wait:?}: the partition's replicas are still {now:?}"
        );
        tokio::time::sleep(MOVE_POLL_INTERVAL).await;
    }
}

/// The brokers of a local cluster of `nodes`, their data under `data_dir`.
pub(crate) fn configs(
    nodes: u64,
    data_dir: &Path,
    base_port: u16,
    security: &herald_broker::SecurityConfig,
) -> anyhow::Result<Vec<BrokerConfig>> {
    anyhow::ensure!(
        (1..=LOCAL_NODES_MAX).contains(&nodes),
        "--nodes must be within 1..={LOCAL_NODES_MAX}"
    );
    let port = |node: u64, raft: bool| local_port(base_port, node, raft);
    let tls = local_cluster_tls(&data_dir.join("tls"), nodes)?;
    let (ca, (client_cert, client_key)) = (tls.ca, tls.client);
    let mut peers = std::collections::BTreeMap::new();
    for node in 1..=nodes {
        peers.insert(node, SocketAddr::from(([127, 0, 0, 1], port(node, true)?)));
    }
    let mut configs = Vec::new();
    for (node, (cert, key)) in (1..=nodes).zip(tls.nodes) {
        let listen = SocketAddr::from(([127, 0, 0, 1], port(node, false)?));
        let mut config = BrokerConfig::new(listen, data_dir.join(format!("node-{node}")));
        config.security = security.clone();
        config.tls = herald_broker::TlsSource::Files {
            cert: client_cert.clone(),
            key: client_key.clone(),
        };
        config.cluster = Some(ClusterConfig {
            node_id: node,
            peers: peers.clone(),
            raft_listen: peers[&node],
            ca: ca.clone(),
            cert,
            key,
            timing: Timing::default(),
            join: false,
            advertise: None,
        });
        configs.push(config);
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports follow the base; the certificates are made once and kept; every node knows every
    /// peer.
    #[test]
    fn a_local_cluster_has_its_ports_certificates_and_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let security = herald_broker::SecurityConfig::default();
        let nodes = configs(3, dir.path(), 7200, &security).expect("configs");
        let listens: Vec<u16> = nodes.iter().map(|c| c.listen.port()).collect();
        assert_eq!(listens, [7200, 7202, 7204]);
        assert_eq!(nodes[0].tls, nodes[2].tls, "one client certificate for all");
        let cluster = nodes[1].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.raft_listen.port(), 7203);
        assert_eq!(cluster.peers.len(), 3);
        let first = std::fs::read(&cluster.cert).expect("certificate");
        let again = configs(3, dir.path(), 7200, &security).expect("configs");
        let cluster = again[1].cluster.as_ref().expect("cluster");
        assert_eq!(std::fs::read(&cluster.cert).expect("certificate"), first);
        assert!(configs(0, dir.path(), 7200, &security).is_err());
        assert!(configs(3, dir.path(), u16::MAX - 2, &security).is_err());
    }
}
