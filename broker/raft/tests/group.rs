//! Three replicas of one partition under real openraft, connected in process (a router that
//! can cut a node off): a leader is elected, produced batches are acknowledged with their
//! offsets, a leader cut off from the others acknowledges nothing while a new leader goes on,
//! and once healed every replica holds the same batches at the same offsets — the cut-off
//! leader's unacknowledged entry removed (Raft truncation over the segment log).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::MemoryStorage;
use herald_raft::config::{group_config, Timing};
use herald_raft::store::Replica;
use herald_raft::{Applied, Proposal, StateMachine, TypeConfig};
use herald_wire::batch::{batches, BatchBuilder};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{
    ClientWriteError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::BasicNode;

mod common;

use common::stamped;

type Raft = openraft::Raft<TypeConfig, StateMachine<MemoryStorage>>;

#[derive(Debug, thiserror::Error)]
#[error("node {0} is cut off")]
struct CutOff(u64);

/// Delivers RPCs between the nodes of one process, except to or from a cut-off node.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<u64, Raft>>>,
    cut_off: Arc<Mutex<BTreeSet<u64>>>,
}

impl Router {
    fn reach(&self, source: u64, target: u64) -> Result<Raft, Unreachable<TypeConfig>> {
        let cut_off = self.cut_off.lock().expect("lock");
        for node in [source, target] {
            if cut_off.contains(&node) {
                return Err(Unreachable::new(&CutOff(node)));
            }
        }
        drop(cut_off);
        self.nodes
            .lock()
            .expect("lock")
            .get(&target)
            .cloned()
            .ok_or_else(|| Unreachable::new(&CutOff(target)))
    }
}

struct Connection {
    router: Router,
    source: u64,
    target: u64,
}

/// A node's view of the router: knows who sends.
#[derive(Clone)]
struct From {
    router: Router,
    source: u64,
}

impl RaftNetworkFactory<TypeConfig> for From {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Connection {
        Connection {
            router: self.router.clone(),
            source: self.source,
            target,
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.source, self.target)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.source, self.target)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.reach(self.source, self.target)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

fn proposal(value: &str) -> Proposal {
    let values = [format!("{value}-a"), format!("{value}-b")];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    Proposal::new(stamped(BatchBuilder::new(), &values, 1_000))
}

/// Every data record a replica holds, as (offset, value).
fn records(replica: &Mutex<Replica<MemoryStorage>>) -> Vec<(i64, String)> {
    let replica = replica.lock().expect("lock");
    let start = replica.log().log_start_offset();
    let read = replica.log().read(start, 64 << 20).expect("read");
    let mut out = Vec::new();
    for view in batches(&read.bytes) {
        let view = view.expect("valid batch");
        if view.is_control() {
            continue;
        }
        for (i, record) in view.records().enumerate() {
            let value = record.expect("record").value.expect("value");
            out.push((
                view.base_offset() + i as i64,
                String::from_utf8(value.to_vec()).expect("utf-8"),
            ));
        }
    }
    out
}

async fn leader_among(rafts: &BTreeMap<u64, Raft>, not: Option<u64>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for (id, raft) in rafts {
            if Some(*id) == not {
                continue;
            }
            let metrics = raft.metrics().borrow_watched().clone();
            if metrics.current_leader == Some(*id) && Some(*id) != not {
                return *id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `value` through whichever node leads (not `not`), again on another leader when the
/// one asked was not leading (nothing was appended then); its acknowledged records.
async fn write(rafts: &BTreeMap<u64, Raft>, not: Option<u64>, value: &str) -> Vec<(i64, String)> {
    loop {
        let leader = leader_among(rafts, not).await;
        match rafts[&leader].client_write(proposal(value)).await {
            Ok(written) => {
                let Applied {
                    base_offset,
                    next_offset,
                } = written.data;
                assert_eq!(next_offset - base_offset, 2);
                return vec![
                    (base_offset, format!("{value}-a")),
                    (base_offset + 1, format!("{value}-b")),
                ];
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("writing {value} failed: {error}"),
        }
    }
}

/// The timing the in-process tests run with: elections in well under a second.
const FAST: Timing = Timing {
    heartbeat_ms: 50,
    election_min_ms: 300,
    election_max_ms: 600,
};

/// Makes nodes 1, 2 and 3 the voters of a fresh group (through node 1).
async fn initialize_three(rafts: &BTreeMap<u64, Raft>) {
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("node-{id}"))))
        .collect();
    rafts[&1].initialize(members).await.expect("initialize");
}

type Replicas = BTreeMap<u64, Arc<Mutex<Replica<MemoryStorage>>>>;

/// Three replicas of one partition over fresh memory storage with `log`, connected through
/// a new router, initialized with all three as voters.
async fn three_replicas(log: LogConfig) -> (Router, BTreeMap<u64, Raft>, Replicas) {
    let config = Arc::new(group_config("orders-0", FAST).expect("config"));
    let router = Router::default();
    let mut rafts = BTreeMap::new();
    let mut replicas = BTreeMap::new();
    for id in 1..=3u64 {
        let replica = Replica::open(MemoryStorage::new(), "orders/0", log).expect("replica");
        let (log, state_machine, shared) = replica.into_raft_storage();
        let from = From {
            router: router.clone(),
            source: id,
        };
        let raft = Raft::new(id, config.clone(), from, log, state_machine)
            .await
            .expect("raft");
        router.nodes.lock().expect("lock").insert(id, raft.clone());
        rafts.insert(id, raft);
        replicas.insert(id, shared);
    }
    initialize_three(&rafts).await;
    (router, rafts, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_fail_over_and_converge() {
    let (router, rafts, replicas) = three_replicas(LogConfig::default()).await;

    // Acknowledged writes: each batch of two records at the offsets its answer names.
    let mut acknowledged: Vec<(i64, String)> = Vec::new();
    for n in 0..20 {
        acknowledged.extend(write(&rafts, None, &format!("first-{n}")).await);
    }
    let leader = leader_among(&rafts, None).await;

    // The leader is cut off: what it is asked to write now is never acknowledged.
    router.cut_off.lock().expect("lock").insert(leader);
    let stale = rafts[&leader].clone();
    let minority = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(3),
            stale.client_write(proposal("minority")),
        )
        .await
    });
    for n in 0..10 {
        acknowledged.extend(write(&rafts, Some(leader), &format!("second-{n}")).await);
    }
    let successor = leader_among(&rafts, Some(leader)).await;
    let minority = minority.await.expect("task");
    assert!(
        !matches!(minority, Ok(Ok(_))),
        "a cut-off leader acknowledged a write"
    );

    // Healed: the old leader follows, its unacknowledged entry cut away.
    router.cut_off.lock().expect("lock").clear();
    let target = rafts[&successor].metrics().borrow_watched().last_log_index;
    for raft in rafts.values() {
        raft.wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(target, "caught up")
            .await
            .expect("every replica catches up");
    }
    let reference = records(&replicas[&successor]);
    for (offset, value) in &acknowledged {
        assert!(
            reference.contains(&(*offset, value.clone())),
            "acknowledged {value} at {offset} is missing"
        );
    }
    assert!(!reference.iter().any(|(_, v)| v.starts_with("minority")));
    for (id, replica) in &replicas {
        assert_eq!(records(replica), reference, "replica {id} differs");
    }
    for raft in rafts.values() {
        raft.shutdown().await.expect("shutdown");
    }
}

/// Steps of one seeded run of [`seeded_faults_keep_every_acknowledged_batch`].
const SIMULATION_STEPS: usize = 60;
/// Seeds run unless `HERALD_SIM_SEED` names one.
const SIMULATION_SEEDS: [u64; 3] = [1, 2, 3];

/// The simulated group: each replica's storage outlives its process.
struct Simulation {
    config: Arc<openraft::Config>,
    router: Router,
    storages: BTreeMap<u64, MemoryStorage>,
    rafts: BTreeMap<u64, Raft>,
    replicas: BTreeMap<u64, Arc<Mutex<Replica<MemoryStorage>>>>,
}

impl Simulation {
    /// Starts (or restarts, from what its storage holds) replica `id`.
    async fn start(&mut self, id: u64) {
        let storage = self.storages.entry(id).or_default().clone();
        let replica = Replica::open(storage, "orders/0", LogConfig::default()).expect("replica");
        let (log, state_machine, shared) = replica.into_raft_storage();
        let from = From {
            router: self.router.clone(),
            source: id,
        };
        let raft = Raft::new(id, self.config.clone(), from, log, state_machine)
            .await
            .expect("raft");
        self.router
            .nodes
            .lock()
            .expect("lock")
            .insert(id, raft.clone());
        self.rafts.insert(id, raft);
        self.replicas.insert(id, shared);
    }

    /// Kills replica `id` as a power cut would: what it had not synced is lost, partly or
    /// wholly (`torn` picks how much of each file's unsynced tail survives).
    async fn crash(&mut self, id: u64, torn: impl FnMut(usize) -> usize) {
        self.router.nodes.lock().expect("lock").remove(&id);
        if let Some(raft) = self.rafts.remove(&id) {
            raft.shutdown().await.expect("shutdown");
        }
        self.replicas.remove(&id);
        self.storages[&id].crash(torn);
    }
}

/// One write through whoever leads among the reachable nodes, given up after a while (an
/// election may be under way): its acknowledged records, or none.
async fn try_write(
    rafts: &BTreeMap<u64, Raft>,
    not: Option<u64>,
    value: &str,
) -> Vec<(i64, String)> {
    let leader = {
        let mut found = None;
        for (id, raft) in rafts {
            if Some(*id) != not && raft.metrics().borrow_watched().current_leader == Some(*id) {
                found = Some(*id);
            }
        }
        match found {
            Some(leader) => leader,
            None => return Vec::new(),
        }
    };
    let written = tokio::time::timeout(
        Duration::from_secs(2),
        rafts[&leader].client_write(proposal(value)),
    )
    .await;
    match written {
        Ok(Ok(written)) => {
            let Applied { base_offset, .. } = written.data;
            vec![
                (base_offset, format!("{value}-a")),
                (base_offset + 1, format!("{value}-b")),
            ]
        }
        _ => Vec::new(),
    }
}

/// A seeded schedule of faults against three replicas under real openraft, in process:
/// writes through whoever leads, a node cut off and healed, a node crashed (its unsynced
/// bytes torn at a random point) and restarted from its storage. Checked throughout: no two
/// leaders in one term (election safety). Checked at the end, every node healed and caught
/// up: every replica holds the same records at the same offsets, every acknowledged record is
/// among them at its offset, and no record is stored twice. The seed decides the schedule
/// (`HERALD_SIM_SEED=N` runs one; openraft's own election timeouts still vary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_keep_every_acknowledged_batch() {
    use rand::{RngExt, SeedableRng};

    let seeds: Vec<u64> = match std::env::var("HERALD_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("HERALD_SIM_SEED is a number")],
        Err(_) => SIMULATION_SEEDS.to_vec(),
    };
    for seed in seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut sim = Simulation {
            config: Arc::new(group_config("orders-0", FAST).expect("config")),
            router: Router::default(),
            storages: BTreeMap::new(),
            rafts: BTreeMap::new(),
            replicas: BTreeMap::new(),
        };
        for id in 1..=3u64 {
            sim.start(id).await;
        }
        initialize_three(&sim.rafts).await;
        leader_among(&sim.rafts, None).await;

        let mut acknowledged: Vec<(i64, String)> = Vec::new();
        let mut leaders_by_term: BTreeMap<u64, u64> = BTreeMap::new();
        let mut cut: Option<u64> = None;
        let mut schedule = Vec::new();
        for step in 0..SIMULATION_STEPS {
            let action = rng.random_range(0..10u32);
            match action {
                0..=5 => {
                    let value = format!("s{seed}-{step}");
                    acknowledged.extend(try_write(&sim.rafts, cut, &value).await);
                    schedule.push(format!("write {value}"));
                }
                6 | 7 if cut.is_none() => {
                    let node = rng.random_range(1..=3u64);
                    sim.router.cut_off.lock().expect("lock").insert(node);
                    cut = Some(node);
                    schedule.push(format!("cut {node}"));
                }
                6 | 7 => {
                    sim.router.cut_off.lock().expect("lock").clear();
                    cut = None;
                    schedule.push("heal".to_owned());
                }
                _ => {
                    // A crash of a node that is not cut off: a majority stays up only if the
                    // cut node (if any) is the one that crashes.
                    let node = cut.unwrap_or_else(|| rng.random_range(1..=3u64));
                    let mut torn_rng = rand::rngs::StdRng::seed_from_u64(rng.random());
                    sim.crash(node, |unsynced| torn_rng.random_range(0..=unsynced))
                        .await;
                    sim.start(node).await;
                    schedule.push(format!("crash {node}"));
                }
            }
            for (id, raft) in &sim.rafts {
                let metrics = raft.metrics().borrow_watched().clone();
                if metrics.current_leader == Some(*id) {
                    let leader = leaders_by_term.entry(metrics.current_term).or_insert(*id);
                    assert_eq!(
                        *leader, *id,
                        "seed {seed}: two leaders in term {} after {schedule:?}",
                        metrics.current_term
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        }

        // Healed, one more write so that the last leader's term has an entry everyone applies.
        sim.router.cut_off.lock().expect("lock").clear();
        acknowledged.extend(write(&sim.rafts, None, &format!("s{seed}-last")).await);
        let leader = leader_among(&sim.rafts, None).await;
        let target = sim.rafts[&leader].metrics().borrow_watched().last_log_index;
        for raft in sim.rafts.values() {
            raft.wait(Some(Duration::from_secs(20)))
                .applied_index_at_least(target, "caught up")
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: not caught up ({e}) after {schedule:?}"));
        }
        let reference = records(&sim.replicas[&leader]);
        for (offset, value) in &acknowledged {
            assert!(
                reference.contains(&(*offset, value.clone())),
                "seed {seed}: acknowledged {value} at {offset} is missing after {schedule:?}"
            );
        }
        let mut values = BTreeSet::new();
        for (_, value) in &reference {
            assert!(values.insert(value), "seed {seed}: {value} is stored twice");
        }
        for (id, replica) in &sim.replicas {
            assert_eq!(
                records(replica),
                reference,
                "seed {seed}: replica {id} differs after {schedule:?}"
            );
        }
        for raft in sim.rafts.values() {
            raft.shutdown().await.expect("shutdown");
        }
    }
}

/// Retention through Raft: every replica purges the whole segments its retention lets go
/// (after a snapshot covering them); a follower cut off meanwhile, whose next entries the
/// others no longer hold, is sent the snapshot, starts its log over where the leader's
/// records went on, and afterwards holds what the others hold, at the same offsets. Nothing
/// retention keeps is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_through_raft_and_a_lagging_follower_gets_the_snapshot() {
    use herald_raft::node::{PartitionGroup, RetentionStep};
    let log_config = LogConfig {
        segment_bytes: 1024,
        retention_ms: None,
        retention_bytes: Some(4096),
        ..LogConfig::default()
    };
    let (router, rafts, replicas) = three_replicas(log_config).await;
    let groups: BTreeMap<u64, PartitionGroup<MemoryStorage>> = rafts
        .iter()
        .map(|(id, raft)| {
            let group = PartitionGroup {
                raft: raft.clone(),
                replica: replicas[id].clone(),
                replicas: vec![1, 2, 3],
                topic_id: herald_wire::messages::TopicId([1; 16]),
            };
            (*id, group)
        })
        .collect();
    let leader = leader_among(&rafts, None).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");

    let mut acknowledged: Vec<(i64, String)> = Vec::new();
    for n in 0..20 {
        acknowledged.extend(write(&rafts, None, &format!("early-{n}")).await);
    }
    router.cut_off.lock().expect("lock").insert(lagging);
    let others: BTreeMap<u64, Raft> = rafts
        .iter()
        .filter(|(id, _)| **id != lagging)
        .map(|(id, raft)| (*id, raft.clone()))
        .collect();
    // An idempotent producer's batch that retention purges before the lagging follower
    // sees it: the snapshot carries the producer's state.
    let producer_batch = stamped(
        BatchBuilder::new().idempotent(42, 0, 0),
        &["p-a", "p-b"],
        1_000,
    );
    let producer_offset = loop {
        let leader = leader_among(&others, None).await;
        match others[&leader]
            .client_write(Proposal::new(producer_batch.clone()))
            .await
        {
            Ok(written) => break written.data.base_offset,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("writing the producer's batch failed: {error}"),
        }
    };
    acknowledged.push((producer_offset, "p-a".to_owned()));
    acknowledged.push((producer_offset + 1, "p-b".to_owned()));
    for n in 0..200 {
        acknowledged.extend(write(&others, None, &format!("late-{n}")).await);
    }
    // Retention on the two that go on, until both purged past the lagging one's log end.
    let lagging_end = groups[&lagging]
        .replica
        .lock()
        .expect("lock")
        .log()
        .next_ordinal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut past = true;
        for group in groups
            .iter()
            .filter(|(id, _)| **id != lagging)
            .map(|(_, group)| group)
        {
            let step = group.enforce_retention(0).await.expect("retention step");
            let start = group
                .replica
                .lock()
                .expect("lock")
                .log()
                .log_start_ordinal();
            past &= start > lagging_end && step != RetentionStep::Snapshot;
        }
        if past {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas did not purge past entry {lagging_end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader_among(&others, None).await;
    let start_offset = groups[&leader]
        .replica
        .lock()
        .expect("lock")
        .log()
        .log_start_offset();
    assert!(start_offset > 0, "retention deleted segments");
    let size = groups[&leader]
        .replica
        .lock()
        .expect("lock")
        .log()
        .size_bytes();
    assert!(
        size < 4096 + 2048,
        "the log is kept near its retention size: {size}"
    );

    // Healed: the lagging follower gets the snapshot and what follows it.
    router.cut_off.lock().expect("lock").clear();
    for n in 0..5 {
        acknowledged.extend(write(&rafts, None, &format!("after-{n}")).await);
    }
    let target = rafts[&leader].metrics().borrow_watched().last_log_index;
    for raft in rafts.values() {
        raft.wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(target, "caught up")
            .await
            .expect("every replica catches up");
    }
    // The lagging follower took the snapshot: its log starts over where the leader's starts
    // (its own old entries and the purged ones are not there; every retained one is).
    let lagging_start = groups[&lagging]
        .replica
        .lock()
        .expect("lock")
        .log()
        .log_start_offset();
    assert_eq!(
        lagging_start, start_offset,
        "the lagging follower starts where the leader's log does (the snapshot ends where retention cut), not later"
    );
    assert!(rafts[&lagging]
        .metrics()
        .borrow_watched()
        .snapshot
        .is_some());
    assert!(
        producer_offset < lagging_start,
        "the producer's batch was purged"
    );
    // The lagging follower never held the producer's batch, yet knows it: a retry of it
    // (were this replica to lead) is a duplicate at its offset.
    let stamp = herald_wire::batch::ProducerStamp {
        id: 42,
        epoch: 0,
        base_sequence: 0,
    };
    assert_eq!(
        groups[&lagging]
            .replica
            .lock()
            .expect("lock")
            .log()
            .producer_check(stamp, 2),
        herald_broker_core::producers::SequenceCheck::Duplicate {
            base_offset: producer_offset
        },
        "the snapshot brought the producer's state"
    );
    let reference = records(&groups[&leader].replica);
    for (offset, value) in acknowledged.iter().filter(|(o, _)| *o >= start_offset) {
        assert!(
            reference.contains(&(*offset, value.clone())),
            "retained {value} at {offset} is missing"
        );
    }
    for (id, group) in &groups {
        let held = records(&group.replica);
        let first = held.first().map(|(offset, _)| *offset).unwrap_or(i64::MAX);
        let common: Vec<_> = reference
            .iter()
            .filter(|(o, _)| *o >= first)
            .cloned()
            .collect();
        assert!(!held.is_empty(), "replica {id} holds nothing");
        assert_eq!(
            held, common,
            "replica {id} differs from the leader where both hold records"
        );
        assert!(
            held.iter().any(|(_, v)| v == "after-4-b"),
            "replica {id} has the records after the heal"
        );
    }
    for raft in rafts.values() {
        raft.shutdown().await.expect("shutdown");
    }
}

/// A leader confirms its lead by its lease: at once while its followers answer, and no more
/// once it has been cut off from them longer than the lease (before it hears of a new term),
/// so what it answers from memory stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_confirming_its_lead() {
    use herald_raft::node::PartitionGroup;
    let (router, rafts, replicas) = three_replicas(LogConfig::default()).await;
    write(&rafts, None, "first").await;
    let leader = leader_among(&rafts, None).await;
    let group = PartitionGroup {
        raft: rafts[&leader].clone(),
        replica: replicas[&leader].clone(),
        replicas: vec![1, 2, 3],
        topic_id: herald_wire::messages::TopicId([1; 16]),
    };
    assert_eq!(group.confirm_lead().await, Ok(()));
    router.cut_off.lock().expect("lock").insert(leader);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if group.confirm_lead().await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a leader cut off for 10 s still confirms its lead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for raft in rafts.values() {
        raft.shutdown().await.expect("shutdown");
    }
}
