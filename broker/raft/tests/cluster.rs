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
use herald_broker_core::storage::faults::{Call, FaultyStorage};
use herald_broker_core::storage::{MemoryStorage, Storage};
use herald_raft::config::Timing;
use herald_raft::net::{self, Groups, Peers};
use herald_raft::node::{Node, NodeConfig, ProposeError, ReplicaStore};
use herald_raft::Proposal;
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

const TIMING: Timing = Timing {
    heartbeat_ms: 100,
    election_min_ms: 500,
    election_max_ms: 1_000,
};

/// `count` node endpoints on 127.0.0.1 with certificates of `ca`, and the peers map naming
/// them as nodes 1, 2, ...
fn endpoints_of(ca: &Ca, count: usize) -> (Vec<quinn::Endpoint>, BTreeMap<u64, String>) {
    let endpoints: Vec<quinn::Endpoint> = (0..count).map(|_| endpoint(&ca.node())).collect();
    let peers = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e.local_addr().expect("addr").to_string()))
        .collect();
    (endpoints, peers)
}

/// `count` in-memory storages whose faults can be switched on, seeded 1, 2, ...
fn faulty_storages(count: u64) -> Vec<FaultyStorage<MemoryStorage>> {
    (0..count)
        .map(|i| FaultyStorage::new(MemoryStorage::new(), i + 1))
        .collect()
}

/// Node `id` on `endpoint`, its replicas in `storage`.
async fn start_node<S: Storage + Clone + 'static>(
    id: u64,
    endpoint: &quinn::Endpoint,
    peers: &BTreeMap<u64, String>,
    storage: S,
    join: bool,
) -> Node<S> {
    let groups = Arc::new(Groups::default());
    tokio::spawn(net::serve(endpoint.clone(), groups.clone()));
    let config = NodeConfig {
        id,
        broker_addr: format!("127.0.0.1:{}", 9000 + id),
        peers: peers.clone(),
        timing: TIMING,
        join,
    };
    Node::start(
        config,
        groups,
        Peers::new(endpoint.clone()),
        ReplicaStore::new(storage, |_| LogConfig::default()),
    )
    .await
    .expect("node starts")
}

/// Nodes 1, 2, ... on `endpoints`, founding the cluster of `peers`, each over its storage;
/// once every one of them sees them all registered.
async fn start_registered<S: Storage + Clone + 'static>(
    endpoints: &[quinn::Endpoint],
    peers: &BTreeMap<u64, String>,
    storages: Vec<S>,
) -> Vec<Node<S>> {
    let mut nodes = Vec::new();
    for (i, (endpoint, storage)) in endpoints.iter().zip(storages).enumerate() {
        nodes.push(start_node(i as u64 + 1, endpoint, peers, storage, false).await);
    }
    for node in &nodes {
        let image = node.image();
        eventually("every node registered", || {
            image.borrow().nodes().len() == nodes.len()
        })
        .await;
    }
    nodes
}

/// Writes `value` to `topic`'s partition 0 through whichever node leads it: its index.
async fn write_through_leader<S: Storage + Clone + 'static>(
    nodes: &[&Node<S>],
    topic: &str,
    value: &str,
) -> u64 {
    for _ in 0..1_000 {
        let leader = nodes.iter().find_map(|node| {
            let group = node.partition(topic, 0)?;
            (group.leader() == Some(node.id())).then_some(group)
        });
        if let Some(group) = leader {
            match group.raft.client_write(proposal(value)).await {
                Ok(response) => return response.log_id.index,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                Err(error) => panic!("write {value}: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader of {topic}/0 acknowledged {value}");
}

/// The values of the records in a replica, in offset order.
fn values<S: Storage + Clone + 'static>(node: &Node<S>, topic: &str) -> Vec<String> {
    let group = node.partition(topic, 0).expect("a replica");
    let replica = group.replica.lock().expect("replica");
    let read = replica.log().read(0, 1 << 20).expect("read");
    herald_wire::batch::batches(&read.bytes)
        .filter_map(Result::ok)
        .filter(|view| !view.is_control())
        .flat_map(|view| {
            view.records()
                .filter_map(Result::ok)
                .filter_map(|record| {
                    record
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A node started later with `join` registers through its peers, follows the controller as a
/// learner, and takes a partition moved onto it: it gets every record as a learner, the new
/// replicas become the voters (the old preferred leader among those removed), the move is
/// reported finished on every node, the removed replica's data is deleted, and the partition
/// keeps taking writes that reach the new replica. A deleted topic's replicas are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_a_moved_partition_and_the_old_replica_goes() {
    let ca = Ca::new();
    let (endpoints, all) = endpoints_of(&ca, 4);
    let founders: BTreeMap<u64, String> = all.clone().into_iter().take(3).collect();
    let storages: Vec<MemoryStorage> = (0..4).map(|_| MemoryStorage::new()).collect();
    let nodes = start_registered(&endpoints[..3], &founders, storages[..3].to_vec()).await;
    let Outcome::TopicCreated { replicas } = nodes[0]
        .propose(&create("orders", 1, 3))
        .await
        .expect("proposed")
    else {
        panic!("not created");
    };
    assert_eq!(replicas[0][0], 1, "node 1 is the preferred leader");
    let founders_refs: Vec<&Node<MemoryStorage>> = nodes.iter().collect();
    let mut written = Vec::new();
    for i in 0..20 {
        let value = format!("before-{i}");
        write_through_leader(&founders_refs, "orders", &value).await;
        written.push(value);
    }

    let joiner = start_node(4, &endpoints[3], &all, storages[3].clone(), true).await;
    for node in nodes.iter().chain([&joiner]) {
        let image = node.image();
        eventually("every node, the joiner too, sees four nodes", || {
            image.borrow().nodes().len() == 4
        })
        .await;
    }
    assert!(
        joiner.partition("orders", 0).is_none(),
        "nothing is placed on a new node"
    );
    let joined_controller = joiner.controller().metrics().borrow_watched().clone();
    assert!(
        !joined_controller
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == 4),
        "a joining node is the controller's learner, not a voter"
    );

    assert!(
        matches!(
            nodes[1].propose(&Command::RemoveNode { id: 1 }).await,
            Ok(Outcome::Refused(CommandError::NodeHoldsReplicas {
                node: 1,
                ..
            }))
        ),
        "a node holding a replica is not removed"
    );
    let moved = joiner
        .propose(&Command::MovePartition {
            name: "orders".to_owned(),
            id: TopicId([7; 16]),
            partition: 0,
            replicas: vec![4, 2, 3],
        })
        .await
        .expect("proposed");
    assert_eq!(moved, Outcome::MoveStarted);
    for node in nodes.iter().chain([&joiner]) {
        let image = node.image();
        eventually("the move finished", || {
            let image = image.borrow();
            let topic = &image.topics()["orders"];
            topic.replicas[0] == [4, 2, 3] && topic.moves.is_empty()
        })
        .await;
    }
    eventually("node 1 dropped its replica and its data", || {
        nodes[0].partition("orders", 0).is_none() && storages[0].names("orders/0").is_empty()
    })
    .await;
    let group = joiner
        .partition("orders", 0)
        .expect("the joiner holds the partition");
    let voters: Vec<u64> = group
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, [2, 3, 4]);
    assert_eq!(
        values(&joiner, "orders"),
        written,
        "the new replica holds every record"
    );

    let holders: Vec<&Node<MemoryStorage>> = vec![&nodes[1], &nodes[2], &joiner];
    for i in 0..5 {
        let value = format!("after-{i}");
        let index = write_through_leader(&holders, "orders", &value).await;
        written.push(value);
        joiner
            .partition("orders", 0)
            .expect("group")
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(index), "replicated")
            .await
            .expect("the new replica applies it");
    }
    assert_eq!(values(&joiner, "orders"), written);
    assert_eq!(values(&nodes[1], "orders"), written);
    // The preferred leader is the first new replica: the balancer hands it the lead.
    eventually("the new preferred leader leads", || {
        joiner.partition("orders", 0).and_then(|g| g.leader()) == Some(4)
    })
    .await;

    let deleted = nodes[1]
        .propose(&Command::DeleteTopic {
            name: "orders".to_owned(),
            id: TopicId([7; 16]),
        })
        .await
        .expect("proposed");
    assert_eq!(deleted, Outcome::TopicDeleted);
    for (node, storage) in [&nodes[1], &nodes[2], &joiner]
        .into_iter()
        .zip(&storages[1..])
    {
        eventually("a deleted topic's replicas are removed", || {
            node.partition("orders", 0).is_none() && storage.names("orders/0").is_empty()
        })
        .await;
    }

    // Node 1, holding nothing now, leaves: the controller's voters become 2, 3 and the
    // joiner (a caught-up learner takes the removed voter's place).
    assert_eq!(
        nodes[1]
            .propose(&Command::RemoveNode { id: 1 })
            .await
            .expect("proposed"),
        Outcome::NodeRemoved
    );
    for node in [&nodes[1], &nodes[2], &joiner] {
        let image = node.image();
        eventually("node 1 is gone from every image", || {
            image.borrow().nodes().keys().copied().collect::<Vec<_>>() == [2, 3, 4]
        })
        .await;
    }
    let controller = nodes[1].controller();
    eventually(
        "the controller's members are 2, 3 and 4, all voters",
        || {
            let metrics = controller.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            membership.voter_ids().collect::<Vec<_>>() == [2, 3, 4]
                && membership.nodes().count() == 3
                && membership.get_joint_config().len() == 1
        },
    )
    .await;
    // With nodes 1 and 2 gone, nodes 3 and 4 are a majority of the controller's voters:
    // a change still commits (it could not if node 4 were still a learner).
    nodes[0].shutdown().await;
    nodes[1].shutdown().await;
    assert!(matches!(
        joiner.propose(&create("later", 1, 1)).await,
        Ok(Outcome::TopicCreated { .. })
    ));
    for node in nodes.into_iter().chain([joiner]) {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_place_replicate_and_remove_a_topic() {
    let ca = Ca::new();
    let (endpoints, peers) = endpoints_of(&ca, 3);
    let storages = (0..3).map(|_| MemoryStorage::new()).collect();
    let nodes = start_registered(&endpoints, &peers, storages).await;

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

    // A proposal that would read back as one of openraft's own entries (a control batch
    // other than a sequence marker) is refused with its reason, and the group goes on: a
    // log store that failed to decode it would have stopped the group.
    let leader = nodes
        .iter()
        .find_map(|node| {
            let group = node.partition("orders", 0)?;
            (group.leader() == Some(node.id())).then_some(group)
        })
        .expect("partition 0 led");
    let mut writer = herald_wire::batch::BatchWriter::new();
    writer
        .push(
            0,
            Some(herald_raft::entry::BLANK_KEY),
            None,
            std::iter::empty(),
        )
        .expect("record");
    let control = Proposal::new(bytes::Bytes::from(
        writer.finish_control().expect("control batch"),
    ));
    match leader.propose(control).await {
        Err(ProposeError::Failed(reason)) => {
            assert!(reason.contains("attributes"), "reason: {reason}")
        }
        other => panic!("a control batch was not refused: {other:?}"),
    }
    let index = write_through_leader(&nodes.iter().collect::<Vec<_>>(), "orders", "after").await;
    for node in &nodes {
        let group = node.partition("orders", 0).expect("group");
        group
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(index), "replicated after the refusal")
            .await
            .expect("the group still replicates");
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

/// A follower whose disk fills up stops its replica of the partition (openraft stops a group
/// whose log store fails a write) while the other two go on acknowledging; once the disk has
/// room again the node starts the replica again from its storage, without a process
/// restart, and it catches up: it holds every record the others acknowledged meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_filled_comes_back_once_it_has_room() {
    let ca = Ca::new();
    let (endpoints, peers) = endpoints_of(&ca, 3);
    let storages = faulty_storages(3);
    let nodes = start_registered(&endpoints, &peers, storages.clone()).await;
    let outcome = nodes[0]
        .propose(&create("orders", 1, 3))
        .await
        .expect("proposed");
    assert!(
        matches!(outcome, Outcome::TopicCreated { .. }),
        "{outcome:?}"
    );
    let all: Vec<&Node<FaultyStorage<MemoryStorage>>> = nodes.iter().collect();
    let mut written = Vec::new();
    for i in 0..10 {
        let value = format!("before-{i}");
        write_through_leader(&all, "orders", &value).await;
        written.push(value);
    }
    // Node 1, the preferred leader, leads; node 3's disk fills up.
    eventually("node 1 leads", || {
        nodes[0].partition("orders", 0).and_then(|g| g.leader()) == Some(1)
    })
    .await;
    storages[2].fail_rate(Call::Append, 1_000_000);
    let healthy: Vec<&Node<FaultyStorage<MemoryStorage>>> = nodes[..2].iter().collect();
    for i in 0..10 {
        let value = format!("full-{i}");
        write_through_leader(&healthy, "orders", &value).await;
        written.push(value);
    }
    eventually("node 3's replica stopped on the failed write", || {
        nodes[2]
            .partition("orders", 0)
            .is_none_or(|group| group.raft.metrics().borrow_watched().running_state.is_err())
    })
    .await;
    storages[2].heal();
    for i in 0..5 {
        let value = format!("after-{i}");
        write_through_leader(&healthy, "orders", &value).await;
        written.push(value);
    }
    eventually("node 3's replica is back and holds every record", || {
        nodes[2]
            .partition("orders", 0)
            .is_some_and(|group| group.raft.metrics().borrow_watched().running_state.is_ok())
            && values(&nodes[2], "orders") == written
    })
    .await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// A node whose disk fills up while the controller commits a change stops its controller
/// replica (openraft stops the group on the failed write) while the other two go on; once
/// the disk has room again the node starts its controller again from its storage, without a
/// process restart, catches up and applies every change made meanwhile (its metadata names
/// the topics created while it was out, and it runs their partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_replica_whose_disk_filled_comes_back_once_it_has_room() {
    let ca = Ca::new();
    let (endpoints, peers) = endpoints_of(&ca, 3);
    let storages = faulty_storages(3);
    let nodes = start_registered(&endpoints, &peers, storages.clone()).await;
    let created = |outcome: Result<Outcome, _>| {
        assert!(
            matches!(outcome, Ok(Outcome::TopicCreated { .. })),
            "{outcome:?}"
        )
    };
    created(nodes[0].propose(&create("before", 1, 3)).await);
    storages[2].fail_rate(Call::Append, 1_000_000);
    created(nodes[0].propose(&create("during", 1, 2)).await);
    eventually("node 3's controller stopped on the failed write", || {
        nodes[2]
            .controller()
            .metrics()
            .borrow_watched()
            .running_state
            .is_err()
    })
    .await;
    storages[2].heal();
    created(nodes[1].propose(&create("after", 1, 3)).await);
    let image = nodes[2].image();
    eventually(
        "node 3 applied every change and runs the new partition",
        || {
            let image = image.borrow();
            ["before", "during", "after"]
                .iter()
                .all(|name| image.topics().contains_key(*name))
                && nodes[2].partition("after", 0).is_some()
                && nodes[2]
                    .controller()
                    .metrics()
                    .borrow_watched()
                    .running_state
                    .is_ok()
        },
    )
    .await;
    // It takes part again: a change proposed through it is applied everywhere.
    created(nodes[2].propose(&create("through-3", 1, 3)).await);
    for node in &nodes {
        let image = node.image();
        eventually("every node applied the change made through node 3", || {
            image.borrow().topics().contains_key("through-3")
        })
        .await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// A move onto a node that went away stays under way (its learner never catches up); moving
/// the partition back to the replicas it has calls it off, and the leader drops the learner
/// it added, so it stops sending it entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_onto_a_lost_node_is_called_off_and_its_learner_dropped() {
    let ca = Ca::new();
    let (endpoints, all) = endpoints_of(&ca, 4);
    let founders: BTreeMap<u64, String> = all.clone().into_iter().take(3).collect();
    let storages: Vec<MemoryStorage> = (0..3).map(|_| MemoryStorage::new()).collect();
    let nodes = start_registered(&endpoints[..3], &founders, storages).await;
    let joiner = start_node(4, &endpoints[3], &all, MemoryStorage::new(), true).await;
    let image = joiner.image();
    eventually("the joiner registered", || {
        image.borrow().nodes().len() == 4
    })
    .await;
    assert!(matches!(
        nodes[0]
            .propose(&create("orders", 1, 3))
            .await
            .expect("proposed"),
        Outcome::TopicCreated { .. }
    ));
    let refs: Vec<&Node<MemoryStorage>> = nodes.iter().collect();
    write_through_leader(&refs, "orders", "first").await;
    // The joiner goes away before the move.
    joiner.shutdown().await;
    let current = nodes[0].image().borrow().topics()["orders"].replicas[0].clone();
    let target: Vec<u64> = std::iter::once(4)
        .chain(current[1..].iter().copied())
        .collect();
    let move_to = |replicas: Vec<u64>| Command::MovePartition {
        name: "orders".to_owned(),
        id: TopicId([7; 16]),
        partition: 0,
        replicas,
    };
    assert_eq!(
        nodes[1].propose(&move_to(target)).await.expect("proposed"),
        Outcome::MoveStarted
    );
    let learner_of = |node: &Node<MemoryStorage>| {
        node.partition("orders", 0).is_some_and(|group| {
            let metrics = group.raft.metrics().borrow_watched().clone();
            metrics.current_leader == Some(node.id())
                && metrics
                    .membership_config
                    .membership()
                    .nodes()
                    .any(|(id, _)| *id == 4)
        })
    };
    eventually("the leader added node 4 as a learner", || {
        nodes.iter().any(learner_of)
    })
    .await;
    assert_eq!(
        nodes[2]
            .propose(&move_to(current.clone()))
            .await
            .expect("proposed"),
        Outcome::MoveCancelled
    );
    eventually("the learner is dropped", || {
        nodes.iter().any(|node| {
            node.partition("orders", 0).is_some_and(|group| {
                let metrics = group.raft.metrics().borrow_watched().clone();
                metrics.current_leader == Some(node.id())
                    && !metrics
                        .membership_config
                        .membership()
                        .nodes()
                        .any(|(id, _)| *id == 4)
            })
        })
    })
    .await;
    assert_eq!(
        nodes[0].image().borrow().topics()["orders"].replicas[0],
        current
    );
    write_through_leader(&refs, "orders", "after").await;
    for node in nodes {
        node.shutdown().await;
    }
}
