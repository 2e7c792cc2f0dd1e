//! RawConsumer under faults, against a real in-process broker: a handler slower than the
//! group's session timeout keeps its partition (heartbeats go on in their own task); a
//! handler slower than `max_poll_interval` hands its partition over; a broker restart on the
//! same data directory and address does not end the run.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::consumer::{
    Connector, ConsumeError, ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer, RunSummary,
};
use herald_broker::{serve, Bound, BrokerConfig, GroupConfig, ServeError};
use herald_broker_client::{BrokerClient, Trust};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, TopicConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long the slow handlers below take over their first record.
const SLOW: Duration = Duration::from_secs(3);
/// Longest any wait below may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A broker served in this process.
struct RunningBroker {
    bound: Bound,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningBroker {
    /// Serves `dir` on `listen` with `groups` as its group settings. The address may still be
    /// held for a moment by a broker stopped just before (its endpoint lets go of the socket
    /// once its connections drained): binding is tried again until it is free.
    async fn start(dir: &Path, listen: SocketAddr, groups: GroupConfig) -> Self {
        for _ in 0..100 {
            let mut config = BrokerConfig::new(listen, dir);
            config.groups = groups;
            let (bound_tx, bound_rx) = oneshot::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(
                config,
                move |bound| drop(bound_tx.send(bound)),
                async move { drop(stopped.await) },
            ));
            match bound_rx.await {
                Ok(bound) => {
                    return Self {
                        bound,
                        stop: Some(stop),
                        task,
                    }
                }
                Err(_) => match task.await.expect("the broker task") {
                    Err(ServeError::Bind { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("the broker did not start: {other:?}"),
                },
            }
        }
        panic!("{listen} stayed in use");
    }

    fn trust(&self) -> Trust {
        Trust::Fingerprint(self.bound.fingerprint.clone())
    }

    async fn client(&self) -> BrokerClient {
        BrokerClient::connect(self.bound.addr, self.trust())
            .await
            .expect("connect")
    }

    /// Stops serving (the broker closes its connections) and waits until it stopped.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the broker stops in time")
            .expect("the broker task");
        stopped.expect("the broker served");
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// An address nothing listens on now, to serve on and come back to after a restart.
fn free_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
}

fn groups(session_timeout_ms: i64) -> GroupConfig {
    GroupConfig {
        session_timeout_ms,
        ..GroupConfig::default()
    }
}

/// Produces records whose values are the numbers of `values` to `topic`/`partition`, durably
/// (they must survive a broker restart).
async fn produce(client: &BrokerClient, topic: &str, partition: u32, values: std::ops::Range<u32>) {
    let mut builder = BatchBuilder::new();
    for n in values {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(n.to_string().into_bytes()),
            headers: Vec::new(),
        });
    }
    client
        .produce(
            topic,
            partition,
            Durability::Fsync,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
}

/// The group's member ids, as the coordinator sees them (describing expires the members
/// whose session ran out).
async fn members(client: &BrokerClient, group: &str) -> BTreeSet<String> {
    match client
        .group(GroupRequest::Describe {
            group: group.to_owned(),
        })
        .await
        .expect("describe")
    {
        GroupResponse::Description(description) => description
            .members
            .into_iter()
            .map(|member| member.member_id)
            .collect(),
        other => panic!("{other:?}"),
    }
}

async fn committed(client: &BrokerClient, group: &str, topic: &str) -> Option<i64> {
    match client
        .group(GroupRequest::FetchOffsets {
            group: group.to_owned(),
            partitions: vec![TopicPartition::new(topic, 0)],
        })
        .await
        .expect("fetch offsets")
    {
        GroupResponse::Offsets(offsets) => offsets.first().and_then(|o| o.offset),
        other => panic!("{other:?}"),
    }
}

/// One record handled: by which consumer, and when.
#[derive(Debug, Clone)]
struct Handled {
    consumer: &'static str,
    partition: u32,
    offset: i64,
    start: Instant,
    end: Instant,
}

type Log = Arc<Mutex<Vec<Handled>>>;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Set (to when it started) by the first record a slow handler takes.
type SlowStart = Arc<Mutex<Option<Instant>>>;

/// A handler logging each record it handles as `consumer`; with `slow`, the first record it
/// takes sleeps [`SLOW`] and its start is recorded there.
fn recording(
    consumer: &'static str,
    log: Log,
    slow: Option<SlowStart>,
) -> impl Fn(ConsumedRecord) -> HandlerFuture + Send + Sync + 'static {
    move |record: ConsumedRecord| -> HandlerFuture {
        let log = log.clone();
        let slow = slow.clone();
        let (partition, offset) = (record.partition(), record.offset());
        Box::pin(async move {
            let start = Instant::now();
            let mut sleep = false;
            if let Some(slow) = &slow {
                let mut started = slow.lock().expect("lock");
                if started.is_none() {
                    *started = Some(start);
                    sleep = true;
                }
            }
            if sleep {
                tokio::time::sleep(SLOW).await;
            }
            log.lock().expect("lock").push(Handled {
                consumer,
                partition,
                offset,
                start,
                end: Instant::now(),
            });
            Ok::<(), HandlerError>(())
        })
    }
}

/// Runs `consumer` on its own task until `stop` turns true.
fn spawn_run(
    consumer: RawConsumer,
    handler: impl Fn(ConsumedRecord) -> HandlerFuture + Send + Sync + 'static,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<RunSummary, ConsumeError>> {
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        consumer.run(handler, stopped).await
    })
}

/// Waits until `ready` gives a value.
async fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many times each (partition, offset) was handled.
fn handled_counts(log: &Log) -> BTreeMap<(u32, i64), usize> {
    let mut counts = BTreeMap::new();
    for handled in log.lock().expect("lock").iter() {
        *counts
            .entry((handled.partition, handled.offset))
            .or_default() += 1;
    }
    counts
}

/// A handler slower than the session timeout: heartbeats go on in their own task, so its
/// member is not expired while it handles, a member joining meanwhile does not get its
/// partition, and every record is handled once, never by two members at the same time.
/// (Before, heartbeats ran only between fetches: the 3 s handler lost its 1 s session and
/// the second member handled the same partition while the first still did.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_slower_than_the_session_timeout_keeps_its_partition() {
    const GROUP: &str = "patient";
    const TOPIC: &str = "slow";
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = RunningBroker::start(dir.path(), any_port(), groups(1_000)).await;
    let admin = broker.client().await;
    admin
        .create_topic(
            TOPIC,
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create");
    for partition in 0..2 {
        produce(&admin, TOPIC, partition, 0..5).await;
    }
    let log: Log = Arc::default();
    let slow: SlowStart = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let first = spawn_run(
        RawConsumer::new(broker.client().await, ConsumerConfig::new(GROUP, TOPIC)),
        recording("first", log.clone(), Some(slow.clone())),
        stopped.clone(),
    );
    let slow_since = wait_for("the slow record", || *slow.lock().expect("lock")).await;
    let first_members = members(&admin, GROUP).await;
    assert_eq!(first_members.len(), 1, "{first_members:?}");
    let first_member = first_members.into_iter().next().expect("one member");

    // Through the slow handling and past it, the first member stays in the group; the
    // second joins once the first's session would have run out without heartbeats.
    let mut second = None;
    while slow_since.elapsed() < SLOW + Duration::from_millis(500) {
        if second.is_none() && slow_since.elapsed() >= Duration::from_millis(1_500) {
            second = Some(spawn_run(
                RawConsumer::new(broker.client().await, ConsumerConfig::new(GROUP, TOPIC)),
                recording("second", log.clone(), None),
                stopped.clone(),
            ));
        }
        let now = members(&admin, GROUP).await;
        assert!(
            now.contains(&first_member),
            "{:?} into a handler slower than the session timeout, its member {first_member} \
             is gone: {now:?}",
            slow_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = second.expect("the second consumer started");
    wait_for("every record handled", || {
        (handled_counts(&log).len() >= 10).then_some(())
    })
    .await;
    // Time for anything handled twice to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    tokio::time::timeout(PATIENCE, first)
        .await
        .expect("the first run ends in time")
        .expect("the first run's task")
        .expect("the first run ends cleanly");
    tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second run ends in time")
        .expect("the second run's task")
        .expect("the second run ends cleanly");

    let counts = handled_counts(&log);
    let expected: BTreeMap<(u32, i64), usize> = (0..2u32)
        .flat_map(|partition| (0..5i64).map(move |offset| ((partition, offset), 1)))
        .collect();
    assert_eq!(counts, expected, "every record handled exactly once");
    let log = log.lock().expect("lock").clone();
    for partition in 0..2u32 {
        let mut handled: Vec<&Handled> = log.iter().filter(|h| h.partition == partition).collect();
        handled.sort_by_key(|h| h.start);
        for pair in handled.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "partition {partition} handled by two at once: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    assert!(
        log.iter().any(|h| h.consumer == "second"),
        "the partition the first let go went to the second: {log:?}"
    );
}

/// A handler slower than `max_poll_interval` is taken for stuck: its member leaves the group
/// (well within the session timeout), stops handling the rest of that fetch, and the other
/// member takes the partition over from the last commit; the first run goes on and ends
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_slower_than_max_poll_interval_hands_its_partition_over() {
    const GROUP: &str = "impatient";
    const TOPIC: &str = "stalled";
    let dir = tempfile::tempdir().expect("tempdir");
    // A session long enough that only the processing limit can move the partition.
    let broker = RunningBroker::start(dir.path(), any_port(), groups(6_000)).await;
    let admin = broker.client().await;
    admin
        .create_topic(TOPIC, TopicConfig::default())
        .await
        .expect("create");
    produce(&admin, TOPIC, 0, 0..5).await;
    let log: Log = Arc::default();
    let slow: SlowStart = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let stuck = ConsumerConfig {
        max_poll_interval: Duration::from_secs(1),
        ..ConsumerConfig::new(GROUP, TOPIC)
    };
    let first = spawn_run(
        RawConsumer::new(broker.client().await, stuck),
        recording("first", log.clone(), Some(slow.clone())),
        stopped.clone(),
    );
    let slow_since = wait_for("the slow record", || *slow.lock().expect("lock")).await;
    let first_members = members(&admin, GROUP).await;
    assert_eq!(first_members.len(), 1, "{first_members:?}");
    let first_member = first_members.into_iter().next().expect("one member");
    let second = spawn_run(
        RawConsumer::new(broker.client().await, ConsumerConfig::new(GROUP, TOPIC)),
        recording("second", log.clone(), None),
        stopped.clone(),
    );
    // The first member leaves while its handler is still at work.
    let mut left = false;
    while slow_since.elapsed() < SLOW {
        if !members(&admin, GROUP).await.contains(&first_member) {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left,
        "the member whose handler passed max_poll_interval left the group"
    );
    wait_for("the second consumer handling every record", || {
        let log = log.lock().expect("lock");
        let offsets: BTreeSet<i64> = log
            .iter()
            .filter(|h| h.consumer == "second")
            .map(|h| h.offset)
            .collect();
        (offsets.len() >= 5).then_some(())
    })
    .await;
    // The first one's slow handler finishes (a stop would cut it short).
    wait_for("the first consumer's slow record handled", || {
        let log = log.lock().expect("lock");
        log.iter().any(|h| h.consumer == "first").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    tokio::time::timeout(PATIENCE, first)
        .await
        .expect("the first run ends in time")
        .expect("the first run's task")
        .expect("the first run goes on after leaving, and ends cleanly");
    tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second run ends in time")
        .expect("the second run's task")
        .expect("the second run ends cleanly");
    let log = log.lock().expect("lock").clone();
    let by_first: Vec<i64> = log
        .iter()
        .filter(|h| h.consumer == "first")
        .map(|h| h.offset)
        .collect();
    assert_eq!(
        by_first,
        [0],
        "the first handled only its slow record: the rest of that fetch was no longer its own"
    );
    let mut by_second: Vec<i64> = log
        .iter()
        .filter(|h| h.consumer == "second")
        .map(|h| h.offset)
        .collect();
    by_second.sort_unstable();
    assert_eq!(
        by_second,
        [0, 1, 2, 3, 4],
        "the second took over from the last commit"
    );
}

/// A broker restart (stopped, then served again on the same data directory and address)
/// does not end the run: the consumer reconnects with backoff, rejoins its group, resumes
/// from the committed offset and handles what is produced after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_survives_a_broker_restart() {
    const GROUP: &str = "survivors";
    const TOPIC: &str = "restarts";
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_port();
    let broker = RunningBroker::start(dir.path(), listen, GroupConfig::default()).await;
    let admin = broker.client().await;
    admin
        .create_topic(TOPIC, TopicConfig::default())
        .await
        .expect("create");
    produce(&admin, TOPIC, 0, 0..5).await;
    let connector: Connector = {
        let trust = broker.trust();
        Arc::new(move || {
            let trust = trust.clone();
            Box::pin(async move {
                BrokerClient::connect(listen, trust)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    };
    let consumer = RawConsumer::with_reconnect(
        broker.client().await,
        connector,
        ConsumerConfig::new(GROUP, TOPIC),
    );
    let log: Log = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let run = spawn_run(consumer, recording("only", log.clone(), None), stopped);
    wait_for("the first records handled", || {
        (handled_counts(&log).len() >= 5).then_some(())
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    while committed(&admin, GROUP, TOPIC).await != Some(5) {
        assert!(Instant::now() < deadline, "offset 5 never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    admin.close();
    broker.stop().await;
    let broker = RunningBroker::start(dir.path(), listen, GroupConfig::default()).await;
    let admin = broker.client().await;
    produce(&admin, TOPIC, 0, 5..10).await;

    let deadline = Instant::now() + PATIENCE;
    loop {
        if run.is_finished() {
            panic!("the run ended at the broker restart: {:?}", run.await);
        }
        if handled_counts(&log).len() >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the records produced after the restart were not handled: {:?}",
            handled_counts(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    let summary = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the run ends in time")
        .expect("the run's task")
        .expect("the run ends cleanly");
    assert!(summary.processed >= 10, "{summary:?}");
    let counts = handled_counts(&log);
    for offset in 0..5 {
        assert_eq!(
            counts.get(&(0, offset)),
            Some(&1),
            "offset {offset} was committed before the restart: handled once"
        );
    }
    for offset in 5..10 {
        assert!(
            counts.contains_key(&(0, offset)),
            "offset {offset} handled after the restart"
        );
    }
}
