//! Three cluster nodes over QUIC on 127.0.0.1: each registers through the controller, a
//! topic created from any node is placed on all three with its partitions' groups started
//! and led, produced batches replicate, producer ids are unique across nodes, a second
//! creation of the name is refused with its reason, and a deletion stops the groups.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{endpoint, proposal, Ca};
use herald_broker_core::cluster::{Command, CommandError, Outcome};
use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::MemoryStorage;
use herald_raft::config::Timing;
use herald_raft::net::{self, Groups, Peers};
use herald_raft::node::{Node, NodeConfig, ReplicaOpener};
use herald_raft::store::Replica;
use herald_wire::messages::{TopicConfig, TopicId};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};

async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..1_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 20 s");
}

fn create(name: &str, partitions: u32, replication_factor: u32) -> Command {
    Command::CreateTopic {
        name: name.to_owned(),
        id: TopicId([7; 16]),
        config: TopicConfig {
            partitions,
            ..TopicConfig::default()
        },
        replication_factor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_place_replicate_and_remove_a_topic() {
    let ca = Ca::new();
    let endpoints: Vec<quinn::Endpoint> = (0..3).map(|_| endpoint(&ca.node())).collect();
    let peers: BTreeMap<u64, String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e.local_addr().expect("addr").to_string()))
        .collect();
    let timing = Timing {
        heartbeat_ms: 100,
        election_min_ms: 500,
        election_max_ms: 1_000,
    };
    let mut nodes = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let groups = Arc::new(Groups::default());
        tokio::spawn(net::serve(endpoint.clone(), groups.clone()));
        let storage = MemoryStorage::new();
        let open: ReplicaOpener<MemoryStorage> =
            Arc::new(move |dir, _config| Replica::open(storage.clone(), dir, LogConfig::default()));
        let config = NodeConfig {
            id: i as u64 + 1,
            broker_addr: format!("127.0.0.1:{}", 9000 + i),
            peers: peers.clone(),
            timing,
        };
        nodes.push(
            Node::start(config, groups, Peers::new(endpoint.clone()), open)
                .await
                .expect("node starts"),
        );
    }
    for node in &nodes {
        let image = node.image();
        eventually("every node registered", || {
            image.borrow().nodes().len() == 3
        })
        .await;
    }

    let outcome = nodes[1]
        .propose(&create("orders", 3, 3))
        .await
        .expect("proposed");
    let Outcome::TopicCreated { replicas } = outcome else {
        panic!("not created: {outcome:?}");
    };
    assert_eq!(replicas.len(), 3);
    let mut leaders: Vec<u64> = replicas.iter().map(|r| r[0]).collect();
    leaders.sort_unstable();
    assert_eq!(leaders, [1, 2, 3], "preferred leaders spread");
    for node in &nodes {
        eventually("the partitions' groups started", || {
            (0..3).all(|p| node.partition("orders", p).is_some())
        })
        .await;
    }

    // Each partition elects a leader; what it acknowledges reaches every replica.
    for partition in 0..3 {
        let mut written = None;
        for _ in 0..500 {
            let leader = nodes.iter().find_map(|node| {
                let group = node.partition("orders", partition)?;
                let metrics = group.raft.metrics().borrow_watched().clone();
                (metrics.current_leader == Some(metrics.id)).then_some(group)
            });
            if let Some(group) = leader {
                match group
                    .raft
                    .client_write(proposal(&format!("p{partition}")))
                    .await
                {
                    Ok(response) => {
                        written = Some(response.log_id.index);
                        break;
                    }
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                    Err(error) => panic!("write to partition {partition}: {error}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let index = written.expect("a partition leader acknowledged");
        for node in &nodes {
            let group = node.partition("orders", partition).expect("group");
            group
                .raft
                .wait(Some(Duration::from_secs(20)))
                .applied_index_at_least(Some(index), "replicated")
                .await
                .expect("every replica applies it");
        }
    }

    // Producer ids come from the controller's one counter: distinct whichever node asks.
    let mut ids = Vec::new();
    for node in &nodes {
        match node
            .propose(&Command::InitProducer {
                name: String::new(),
                owner: None,
            })
            .await
            .expect("id")
        {
            Outcome::Producer { id, .. } => ids.push(id),
            other => panic!("no id: {other:?}"),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // A partition led away from its preferred leader is handed back to it (the balancer):
    // move partition 0's lead to another replica, then wait.
    let preferred = replicas[0][0];
    let current = |nodes: &[Node<MemoryStorage>]| {
        nodes.iter().find_map(|node| {
            let group = node.partition("orders", 0)?;
            let status = group.status();
            (status.leader == Some(node.id())).then_some(node.id())
        })
    };
    let other = replicas[0][1];
    for _ in 0..100 {
        if current(&nodes) == Some(other) {
            break;
        }
        if let Some(leader) = current(&nodes) {
            let group = nodes[leader as usize - 1]
                .partition("orders", 0)
                .expect("group");
            let _ = group.raft.trigger().transfer_leader(other).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(current(&nodes), Some(other), "the lead moved away");
    eventually("the preferred leader leads again", || {
        current(&nodes) == Some(preferred)
    })
    .await;

    let again = nodes[2]
        .propose(&create("orders", 1, 1))
        .await
        .expect("proposed");
    assert_eq!(
        again,
        Outcome::Refused(CommandError::TopicExists("orders".to_owned()))
    );
    let deleted = nodes[0]
        .propose(&Command::DeleteTopic {
            name: "orders".to_owned(),
            id: TopicId([7; 16]),
        })
        .await
        .expect("proposed");
    assert_eq!(deleted, Outcome::TopicDeleted);
    for node in &nodes {
        eventually("the groups stopped", || {
            (0..3).all(|p| node.partition("orders", p).is_none())
        })
        .await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}
