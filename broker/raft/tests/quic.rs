//! Three replicas of one partition on three QUIC endpoints on 127.0.0.1 with mutual TLS:
//! they elect a leader and replicate over the real transport, a leader that goes away
//! (endpoint closed, Raft stopped) is replaced and writes go on, and a node whose certificate
//! the cluster's CA did not sign gets no answer; a peer killed and restarted at its address
//! is reached again at once, not after the idle timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::MemoryStorage;
use herald_raft::config::{group_config, Timing};
mod common;

use common::{anonymous_client, endpoint, endpoint_at, proposal, Ca};
use herald_raft::net::{self, GroupNetwork, Groups, NodeTls, Peers};
use herald_raft::store::Replica;
use herald_raft::{StateMachine, TypeConfig};
use herald_wire::batch::batches;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::VoteRequest;
use openraft::BasicNode;

type Raft = openraft::Raft<TypeConfig, StateMachine<MemoryStorage>>;
const GROUP: &str = "orders/0";

struct Node {
    raft: Raft,
    endpoint: quinn::Endpoint,
    replica: Arc<Mutex<Replica<MemoryStorage>>>,
}

async fn start(id: u64, tls: &NodeTls) -> Node {
    start_on(id, endpoint(tls)).await
}

async fn start_on(id: u64, endpoint: quinn::Endpoint) -> Node {
    let timing = Timing {
        heartbeat_ms: 100,
        election_min_ms: 500,
        election_max_ms: 1_000,
    };
    let config = Arc::new(group_config(GROUP, timing).expect("config"));
    let groups = Arc::new(Groups::default());
    tokio::spawn(net::serve(endpoint.clone(), groups.clone()));
    let peers = Peers::new(endpoint.clone());
    let replica =
        Replica::open(MemoryStorage::new(), GROUP, LogConfig::default()).expect("replica");
    let (log, state_machine, shared) = replica.into_raft_storage();
    let raft = Raft::new(
        id,
        config,
        GroupNetwork::new(GROUP, peers),
        log,
        state_machine,
    )
    .await
    .expect("raft");
    groups.insert(GROUP, raft.clone()).expect("group");
    Node {
        raft,
        endpoint,
        replica: shared,
    }
}

async fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    for _ in 0..1_000 {
        for (id, node) in nodes {
            if node.raft.metrics().borrow_watched().current_leader == Some(*id) {
                return *id;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader elected");
}

async fn write(nodes: &BTreeMap<u64, Node>, value: &str) -> i64 {
    loop {
        let id = leader(nodes).await;
        match nodes[&id].raft.client_write(proposal(value)).await {
            Ok(written) => return written.data.base_offset,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("writing {value}: {error}"),
        }
    }
}

fn records(replica: &Mutex<Replica<MemoryStorage>>) -> Vec<(i64, Vec<u8>)> {
    let replica = replica.lock().expect("lock");
    let read = replica.log().read(0, 64 << 20).expect("read");
    batches(&read.bytes)
        .map(|view| view.expect("valid"))
        .filter(|view| !view.is_control())
        .map(|view| {
            let record = view.records().next().expect("a record").expect("valid");
            (view.base_offset(), record.value.expect("value").to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_quic_elect_replicate_and_replace_a_lost_leader() {
    let ca = Ca::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        nodes.insert(id, start(id, &ca.node()).await);
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|(id, node)| {
            let addr = node.endpoint.local_addr().expect("addr").to_string();
            (*id, BasicNode::new(addr))
        })
        .collect();
    nodes[&1]
        .raft
        .initialize(members)
        .await
        .expect("initialize");

    let mut acknowledged = Vec::new();
    for n in 0..30 {
        let value = format!("before-{n}");
        acknowledged.push((write(&nodes, &value).await, value.into_bytes()));
    }
    // The leader goes away: its endpoint closed, its Raft stopped.
    let lost = leader(&nodes).await;
    let gone = nodes.remove(&lost).expect("leader");
    gone.endpoint.close(0u32.into(), b"gone");
    gone.raft.shutdown().await.expect("shutdown");
    for n in 0..30 {
        let value = format!("after-{n}");
        acknowledged.push((write(&nodes, &value).await, value.into_bytes()));
    }
    let target = nodes[&leader(&nodes).await]
        .raft
        .metrics()
        .borrow_watched()
        .last_log_index;
    for node in nodes.values() {
        node.raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(target, "caught up")
            .await
            .expect("survivors catch up");
    }
    let survivors: Vec<_> = nodes.values().map(|node| records(&node.replica)).collect();
    assert_eq!(survivors[0], survivors[1], "the survivors differ");
    for record in &acknowledged {
        assert!(
            survivors[0].contains(record),
            "acknowledged {record:?} is missing"
        );
    }
    // Offsets are dense: one record per batch, control records between them.
    assert_eq!(survivors[0].len(), acknowledged.len());

    // Strangers get no answer, even ones that trust the cluster's CA (so only the node's
    // refusal of their certificate can fail them): one whose certificate another CA signed,
    // and one with no certificate at all.
    let (id, node) = nodes.iter().next().expect("a node");
    let addr = node.endpoint.local_addr().expect("addr").to_string();
    let mut foreign = Ca::new().node();
    foreign.cluster_ca = ca.node().cluster_ca;
    let anonymous = {
        let mut endpoint = endpoint(&foreign);
        endpoint.set_default_client_config(anonymous_client(&ca));
        endpoint
    };
    for stranger in [endpoint(&foreign), anonymous] {
        let mut network = GroupNetwork::new(GROUP, Peers::new(stranger));
        let mut link = network.new_client(*id, &BasicNode::new(addr.clone())).await;
        let refused = link
            .vote(
                VoteRequest::new(openraft::impls::Vote::new(99, 9), None),
                RPCOption::new(Duration::from_secs(4)),
            )
            .await;
        assert!(
            refused.is_err(),
            "a stranger's vote request was answered: {refused:?}"
        );
    }
    for node in nodes.values() {
        node.raft.shutdown().await.expect("shutdown");
    }
}

/// A peer killed and restarted at the same address: the old process sent no close, and the
/// new one does not know the old connection (its stateless resets carry tokens of its own,
/// which the caller ignores). The caller drops a connection on which nothing came back and
/// dials again: the peer answers within a few timed-out calls, not after the transport's
/// 10 s idle timeout.
#[test]
fn a_peer_restarted_at_its_address_is_dialled_again() {
    let ca = Ca::new();
    let tls = ca.node();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let caller = runtime();
    let peers = caller.block_on(async { Peers::new(endpoint(&tls)) });
    let vote = |addr: String, timeout: Duration| {
        let peers = peers.clone();
        caller.block_on(async move {
            let mut network = GroupNetwork::new(GROUP, peers);
            let mut link = network.new_client(2, &BasicNode::new(addr)).await;
            link.vote(
                VoteRequest::new(openraft::impls::Vote::new(1, 1), None),
                RPCOption::new(timeout),
            )
            .await
        })
    };

    // The first process of node 2, on a runtime of its own.
    let first = runtime();
    let node = first.block_on(start(2, &tls));
    let addr = node.endpoint.local_addr().expect("addr");
    vote(addr.to_string(), Duration::from_secs(5)).expect("the first process answers");
    // Killed: its tasks stop where they are, nothing more is sent.
    first.shutdown_timeout(Duration::from_secs(1));
    drop(node);

    let second = runtime();
    let _restarted = second.block_on(async {
        let started = std::time::Instant::now();
        loop {
            match herald_quic::bind_udp(addr) {
                Ok((socket, _)) => {
                    drop(socket);
                    break;
                }
                Err(error) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("{addr} stays taken: {error}"),
            }
        }
        start_on(2, endpoint_at(&tls, addr)).await
    });
    let started = std::time::Instant::now();
    let mut failed = 0;
    loop {
        match vote(addr.to_string(), Duration::from_millis(300)) {
            Ok(_) => break,
            Err(error) => {
                failed += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "the restarted peer is still unreached after {failed} calls: {error}"
                );
            }
        }
    }
}
