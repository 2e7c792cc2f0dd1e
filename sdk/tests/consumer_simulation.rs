//! A seeded simulation of producer → broker core → consumer without sockets: a producer
//! appends batches to one `PartitionLog<MemoryStorage>` per partition, a `Group` coordinator
//! assigns the partitions, and simulated consumers, each driven by its `ConsumerCore`,
//! heartbeat, fetch, handle (a failing handler retries later, out of order as key lanes do),
//! rewind what the breaker left, commit, stall (coming back as zombies), crash and join, as
//! time advances. Checked on every commit: a commit never goes back and never passes a record
//! nobody handled; at the end, one healthy consumer takes everything over and catches up, and
//! every record produced was handled (at-least-once).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use herald::consumer::{ConsumerCore, FetchFrom, HeartbeatError, MemberAssignment};
use herald_broker_core::groups::{
    Assignor, Group, GroupConfig, GroupError, Heartbeat, TopicPartition,
};
use herald_broker_core::log::{LogConfig, PartitionLog};
use herald_broker_core::storage::MemoryStorage;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::groups::Commit;

const TOPIC: &str = "orders";
const SEEDS: u64 = 20;
const STEPS: usize = 400;
const SESSION_TIMEOUT_MS: i64 = 1_000;
const REVOKE_TIMEOUT_MS: i64 = 600;
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Heartbeat interval while partitions assigned to a member are still held elsewhere.
const WAITING_INTERVAL_MS: u64 = 20;
const CONSUMERS_MAX: usize = 3;
/// Records a consumer holds per partition before it stops fetching more.
const PENDING_MAX: usize = 16;
const FETCH_BYTES_MAX: usize = 300;

/// xorshift64: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

fn partition(number: u32) -> TopicPartition {
    TopicPartition::new(TOPIC, number)
}

/// How often each path ran, so the assertions are known to guard something.
#[derive(Debug, Default)]
struct Stats {
    produced: usize,
    commits_accepted: usize,
    commits_refused: usize,
    rejoins: usize,
    partitions_moved: usize,
    handler_failures: usize,
    rewinds: usize,
    crashes: usize,
    stalls: usize,
}

/// The broker side: the logs, the coordinator and the committed offsets (as the broker
/// stores them after `authorize_commit`).
struct Broker {
    logs: Vec<PartitionLog<MemoryStorage>>,
    /// The value of the record at each offset, per partition.
    values: Vec<Vec<u64>>,
    group: Group,
    partition_counts: BTreeMap<String, u32>,
    committed: BTreeMap<u32, i64>,
    /// Values of every record handled by some consumer (zombies included).
    handled: BTreeSet<u64>,
    next_value: u64,
    origin: Instant,
    stats: Stats,
}

/// A consumer: its core, the records handed to its handler and not handled yet (by
/// partition, as (offset, value)), and a stall (a pause: no heartbeats, nothing).
struct SimConsumer {
    core: ConsumerCore,
    pending: BTreeMap<u32, Vec<(i64, u64)>>,
    stalled_until: i64,
    /// Back from a stall: it finishes the commit it was in the middle of first.
    waking: bool,
}

impl SimConsumer {
    fn new() -> Self {
        Self {
            core: ConsumerCore::new(),
            pending: BTreeMap::new(),
            stalled_until: 0,
            waking: false,
        }
    }

    /// Records handed out must lie between the committable offset and the position: the
    /// core never counts one of them as done before it is handled.
    fn check(&self, context: &str) {
        for (number, records) in &self.pending {
            if records.is_empty() {
                continue;
            }
            let tp = partition(*number);
            let committable = self
                .core
                .committable(&tp)
                .unwrap_or_else(|| panic!("{context}: records pending on {number} unstarted"));
            let position = self.core.position(&tp).unwrap_or(i64::MIN);
            for (offset, _) in records {
                assert!(
                    committable <= *offset && *offset < position,
                    "{context}: pending {number}@{offset} outside [{committable}, {position})"
                );
            }
        }
    }
}

impl Broker {
    fn new(partitions: u32, assignor: Assignor) -> Self {
        let config = LogConfig {
            segment_bytes: 2_048,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let logs = (0..partitions)
            .map(|number| {
                PartitionLog::open(MemoryStorage::new(), &format!("{TOPIC}/{number}"), config)
                    .expect("open")
                    .0
            })
            .collect();
        Self {
            logs,
            values: vec![Vec::new(); partitions as usize],
            group: Group::new(GroupConfig {
                session_timeout_ms: SESSION_TIMEOUT_MS,
                revoke_timeout_ms: REVOKE_TIMEOUT_MS,
                assignor,
            }),
            partition_counts: BTreeMap::from([(TOPIC.to_owned(), partitions)]),
            committed: BTreeMap::new(),
            handled: BTreeSet::new(),
            next_value: 0,
            origin: Instant::now(),
            stats: Stats::default(),
        }
    }

    fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    fn at(&self, now_ms: i64) -> Instant {
        self.origin + Duration::from_millis(now_ms as u64)
    }

    fn committed(&self, number: u32) -> i64 {
        self.committed.get(&number).copied().unwrap_or(0)
    }

    /// The producer appends a batch of a few records (unique values) to one partition.
    fn produce(&mut self, rng: &mut Rng, now_ms: i64) {
        let number = rng.below(u64::from(self.partitions())) as usize;
        let count = 1 + rng.below(5);
        let mut builder = BatchBuilder::new();
        let mut values = Vec::new();
        for _ in 0..count {
            let value = self.next_value;
            self.next_value += 1;
            values.push(value);
            builder.push(Record {
                timestamp_ms: now_ms,
                key: Some(format!("key-{}", value % 7).into_bytes()),
                value: Some(value.to_be_bytes().to_vec()),
                headers: Vec::new(),
            });
        }
        let batch = builder.encode().expect("a valid batch");
        let appended = self.logs[number].append(&batch, now_ms).expect("append");
        assert_eq!(appended.base_offset, self.values[number].len() as i64);
        self.values[number].extend(values);
        self.stats.produced += count as usize;
    }

    /// The consumer heartbeats with what its core reports; the answer goes back to the core,
    /// and records of partitions it no longer owns are dropped, as the run loop does.
    fn heartbeat(&mut self, consumer: &mut SimConsumer, now_ms: i64, context: &str) {
        let beat = consumer.core.heartbeat_request();
        let request = Heartbeat {
            member_id: beat.member_id,
            member_epoch: beat.member_epoch,
            instance_id: None,
            topics: BTreeSet::from([TOPIC.to_owned()]),
            owned: beat.owned.into_iter().collect(),
        };
        let now = self.at(now_ms);
        let before: Vec<TopicPartition> = consumer.core.owned().to_vec();
        match self
            .group
            .heartbeat(request, &self.partition_counts, now_ms)
        {
            Ok(assignment) => {
                let interval = if assignment.waiting {
                    WAITING_INTERVAL_MS
                } else {
                    HEARTBEAT_INTERVAL_MS
                };
                consumer.core.on_assignment(
                    MemberAssignment {
                        member_id: assignment.member_id,
                        member_epoch: assignment.member_epoch,
                        partitions: assignment.partitions.into_iter().collect(),
                        heartbeat_interval: Duration::from_millis(interval),
                    },
                    now,
                );
                assert!(!consumer.core.heartbeat_due(now), "{context}: beat again");
            }
            Err(GroupError::UnknownMember(_)) => {
                consumer
                    .core
                    .on_heartbeat_error(HeartbeatError::UnknownMember, now);
                self.stats.rejoins += 1;
            }
            Err(GroupError::FencedMember { .. }) => {
                consumer
                    .core
                    .on_heartbeat_error(HeartbeatError::FencedEpoch, now);
                self.stats.rejoins += 1;
            }
            Err(error) => panic!("{context}: heartbeat refused: {error}"),
        }
        if before.iter().any(|tp| !consumer.core.owns(tp)) {
            self.stats.partitions_moved += 1;
        }
        let core = &consumer.core;
        consumer
            .pending
            .retain(|number, _| core.owns(&partition(*number)));
    }

    /// Fetches the owned partitions (each with probability `percent`) at the core's
    /// positions, looking up the committed offset where the start is unknown.
    fn fetch(&mut self, consumer: &mut SimConsumer, rng: &mut Rng, percent: u64, context: &str) {
        for fetch in consumer.core.fetches() {
            let number = fetch.partition.partition;
            let offset = match fetch.from {
                FetchFrom::Start | FetchFrom::Reset => {
                    let start = self.committed(number);
                    consumer.core.on_start_position(&fetch.partition, start);
                    start
                }
                FetchFrom::Offset(offset) => offset,
            };
            let pending = consumer.pending.entry(number).or_default();
            if pending.len() >= PENDING_MAX || !rng.chance(percent) {
                continue;
            }
            let read = self.logs[number as usize]
                .read(offset, FETCH_BYTES_MAX)
                .unwrap_or_else(|error| panic!("{context}: read {number}@{offset}: {error}"));
            let records = decode(&read.bytes, offset);
            let Some(&(first, _)) = records.first() else {
                continue;
            };
            assert_eq!(first, offset, "{context}: the log has no gaps");
            for (index, (record_offset, value)) in records.iter().enumerate() {
                assert_eq!(*record_offset, offset + index as i64, "{context}: dense");
                assert_eq!(
                    self.values[number as usize].get(*record_offset as usize),
                    Some(value),
                    "{context}: the log returns what was appended"
                );
            }
            consumer
                .core
                .on_fetched(&fetch.partition, first, records.len() as u32);
            pending.extend(records);
        }
        consumer.check(context);
    }

    /// Handles up to `attempts` pending records picked at random (key lanes finish out of
    /// order); each fails with probability `failure_percent` and stays for a retry.
    fn handle(
        &mut self,
        consumer: &mut SimConsumer,
        rng: &mut Rng,
        attempts: usize,
        failure_percent: u64,
        context: &str,
    ) {
        for _ in 0..attempts {
            let busy: Vec<u32> = consumer
                .pending
                .iter()
                .filter(|(_, records)| !records.is_empty())
                .map(|(number, _)| *number)
                .collect();
            if busy.is_empty() {
                break;
            }
            let number = busy[rng.pick(busy.len())];
            let Some(records) = consumer.pending.get_mut(&number) else {
                continue;
            };
            let index = rng.pick(records.len());
            if rng.chance(failure_percent) {
                self.stats.handler_failures += 1;
                continue;
            }
            let (offset, value) = records.remove(index);
            self.handled.insert(value);
            consumer.core.on_handled(&partition(number), offset);
        }
        // A partition whose handed-out records are all handled is done with its fetch.
        for (number, records) in &consumer.pending {
            if records.is_empty() {
                consumer.core.on_fetch_finished(&partition(*number));
            }
        }
        consumer.check(context);
    }

    /// The breaker leaves a partition's unhandled records for later: they are dropped and
    /// fetched again from the committable offset.
    fn rewind(&mut self, consumer: &mut SimConsumer, rng: &mut Rng, context: &str) {
        let busy: Vec<u32> = consumer
            .pending
            .iter()
            .filter(|(_, records)| !records.is_empty())
            .map(|(number, _)| *number)
            .collect();
        if busy.is_empty() {
            return;
        }
        let number = busy[rng.pick(busy.len())];
        consumer.pending.remove(&number);
        let tp = partition(number);
        consumer.core.on_fetch_finished(&tp);
        assert_eq!(
            consumer.core.position(&tp),
            consumer.core.committable(&tp),
            "{context}: a rewind goes back to the committable offset"
        );
        self.stats.rewinds += 1;
    }

    /// Sends the commits the core decides; the coordinator authorizes each (a zombie's is
    /// refused). An accepted commit never goes back and never passes an unhandled record.
    fn commit(&mut self, consumer: &mut SimConsumer, context: &str) {
        for Commit {
            partition: tp,
            offset,
            ..
        } in consumer.core.take_commits()
        {
            let number = tp.partition;
            match self.group.authorize_commit(
                consumer.core.member_id().unwrap_or_default(),
                consumer.core.member_epoch(),
                &tp,
            ) {
                Ok(()) => {
                    let previous = self.committed(number);
                    assert!(
                        offset >= previous,
                        "{context}: commit of {number} went back from {previous} to {offset}"
                    );
                    let values = &self.values[number as usize];
                    assert!(
                        offset <= values.len() as i64,
                        "{context}: commit of {number} at {offset} past the log end"
                    );
                    for at in previous..offset {
                        let value = values[at as usize];
                        assert!(
                            self.handled.contains(&value),
                            "{context}: commit of {number} at {offset} passes {at}, never handled"
                        );
                    }
                    self.committed.insert(number, offset);
                    self.stats.commits_accepted += 1;
                }
                Err(_) => {
                    consumer.core.on_commit_rejected(&tp);
                    consumer.pending.remove(&number);
                    assert!(consumer.core.heartbeat_due(self.at(0)), "{context}");
                    self.stats.commits_refused += 1;
                }
            }
        }
        consumer.check(context);
    }

    /// Whether `consumer` owns every partition and every commit reached the log end.
    fn caught_up(&self, consumer: &SimConsumer) -> bool {
        consumer.core.owned().len() == self.logs.len()
            && (0..self.partitions())
                .all(|number| self.committed(number) == self.logs[number as usize].high_watermark())
    }
}

/// Every record of `bytes` (whole stored batches) from offset `from` on, as (offset, value).
fn decode(bytes: &[u8], from: i64) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    for view in batches(bytes) {
        let view = view.expect("stored batches are valid");
        for (index, record) in view.records().enumerate() {
            let offset = view.base_offset() + index as i64;
            let record = record.expect("a valid record");
            if offset >= from {
                let value = record.value.expect("a value");
                out.push((
                    offset,
                    u64::from_be_bytes(value.try_into().expect("8 bytes")),
                ));
            }
        }
    }
    out
}

fn simulate(seed: u64, totals: &mut Stats) {
    let mut rng = Rng::new(seed);
    let partitions = 2 + (seed % 3) as u32;
    let assignor = if seed.is_multiple_of(2) {
        Assignor::Range
    } else {
        Assignor::RoundRobin
    };
    let mut broker = Broker::new(partitions, assignor);
    let mut consumers: Vec<SimConsumer> = (0..1 + rng.below(CONSUMERS_MAX as u64))
        .map(|_| SimConsumer::new())
        .collect();
    let mut now = 0i64;
    for step in 0..STEPS {
        let context = format!("seed {seed} step {step}");
        now += 5 + rng.below(26) as i64;
        match rng.below(100) {
            0..=34 => broker.produce(&mut rng, now),
            35..=37 if !consumers.is_empty() => {
                // A crash: the consumer is gone with what it had not committed; the group
                // expires it after the session timeout.
                let index = rng.pick(consumers.len());
                consumers.remove(index);
                broker.stats.crashes += 1;
            }
            38..=42 if consumers.len() < CONSUMERS_MAX => consumers.push(SimConsumer::new()),
            43..=44 if !consumers.is_empty() => {
                // A pause (GC, a slow handler): often longer than the session.
                let index = rng.pick(consumers.len());
                consumers[index].stalled_until = now + 200 + rng.below(2_000) as i64;
                consumers[index].waking = true;
                broker.stats.stalls += 1;
            }
            _ => {}
        }
        for consumer in consumers.iter_mut() {
            if consumer.stalled_until > now {
                continue;
            }
            if consumer.waking {
                // Back from the pause as a possible zombie: the commit it was in the middle
                // of goes out before it learns it was expired.
                consumer.waking = false;
                broker.commit(consumer, &context);
            }
            if consumer.core.heartbeat_due(broker.at(now)) && rng.chance(90) {
                broker.heartbeat(consumer, now, &context);
            }
            if rng.chance(40) {
                broker.fetch(consumer, &mut rng, 70, &context);
            }
            if rng.chance(60) {
                let attempts = 1 + rng.pick(4);
                broker.handle(consumer, &mut rng, attempts, 20, &context);
            }
            if rng.chance(3) {
                broker.rewind(consumer, &mut rng, &context);
            }
            if rng.chance(30) {
                broker.commit(consumer, &context);
            }
        }
    }
    // Settle: every consumer crashes; once their sessions expired, one healthy consumer joins,
    // takes every partition over from the commits and catches up.
    consumers.clear();
    now += 2 * SESSION_TIMEOUT_MS;
    let context = format!("seed {seed} settle");
    let mut survivor = SimConsumer::new();
    let mut settled = false;
    for _ in 0..2_000 {
        now += 50;
        if survivor.core.heartbeat_due(broker.at(now)) {
            broker.heartbeat(&mut survivor, now, &context);
        }
        broker.fetch(&mut survivor, &mut rng, 100, &context);
        broker.handle(&mut survivor, &mut rng, usize::MAX, 0, &context);
        broker.commit(&mut survivor, &context);
        if broker.caught_up(&survivor) {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "{context}: the survivor never caught up: owns {:?}, committed {:?}",
        survivor.core.owned(),
        broker.committed
    );
    let missing: Vec<u64> = (0..broker.next_value)
        .filter(|value| !broker.handled.contains(value))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: records never handled by any consumer: {missing:?}"
    );
    assert_eq!(
        broker.handled.len() as u64,
        broker.next_value,
        "seed {seed}"
    );
    let stats = &broker.stats;
    totals.produced += stats.produced;
    totals.commits_accepted += stats.commits_accepted;
    totals.commits_refused += stats.commits_refused;
    totals.rejoins += stats.rejoins;
    totals.partitions_moved += stats.partitions_moved;
    totals.handler_failures += stats.handler_failures;
    totals.rewinds += stats.rewinds;
    totals.crashes += stats.crashes;
    totals.stalls += stats.stalls;
}

#[test]
fn seeded_producer_broker_consumer_simulation() {
    let mut totals = Stats::default();
    for seed in 1..=SEEDS {
        simulate(seed, &mut totals);
    }
    // The paths the assertions guard really ran.
    assert!(totals.produced > 1_000, "{totals:?}");
    assert!(totals.commits_accepted > 200, "{totals:?}");
    assert!(totals.handler_failures > 50, "{totals:?}");
    assert!(totals.rewinds > 10, "{totals:?}");
    assert!(totals.crashes > 10, "{totals:?}");
    assert!(totals.stalls > 10, "{totals:?}");
    assert!(totals.rejoins > 0, "{totals:?}");
    assert!(totals.partitions_moved > 0, "{totals:?}");
    assert!(totals.commits_refused > 0, "{totals:?}");
}
