//! RawConsumer under faults, against a real in-process broker: a handler slower than the
//! group's session timeout keeps its partition (heartbeats go on in their own task); a
//! handler slower than `max_poll_interval` hands its partition over; a broker restart on the
//! same data directory and address does not end the run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::consumer::{
    ConsumeError, ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer, RunSummary,
};
use herald_broker::{BrokerConfig, GroupConfig};
use herald_broker_client::BrokerClient;
use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, TopicConfig};
use support::{any_port, RunningBroker};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the slow handlers below take over their first record: three times the short
/// session below, so the handler outlasts it by far without any timing being tight.
const SLOW: Duration = Duration::from_secs(9);
/// The session timeout of the group whose handler is slower than it: its heartbeats come
/// every second (a third of it), and one is late enough to expire the member only past 2 s,
/// which a loaded CI machine does not reach (with a 1 s session, 667 ms late was enough).
const SHORT_SESSION_MS: i64 = 3_000;
/// Longest any wait below may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Serves `dir` on `listen` with `groups` as its group settings (waiting, if need be, for a
/// broker stopped just before to let go of the address: see [`RunningBroker::start_with`]).
async fn start_broker(dir: &Path, listen: SocketAddr, groups: GroupConfig) -> RunningBroker {
    let mut config = BrokerConfig::new(listen, dir);
    config.groups = groups;
    RunningBroker::start_with(config).await
}

/// An address nothing listens on now, to serve on and come back to after a restart.
fn free_port() -> SocketAddr {
    herald_netfault::free_udp_addrs(1).expect("a free port")[0]
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
    support::produce_numbers(client, topic, partition, Durability::Fsync, values).await;
}

/// A client of `broker` for the test's own requests, which created `topic` with `partitions`.
async fn admin_with_topic(broker: &RunningBroker, topic: &str, partitions: u32) -> BrokerClient {
    let admin = broker.client().await;
    admin
        .create_topic(
            topic,
            TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create");
    admin
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

/// The group's one member id; it must have exactly one.
async fn only_member(client: &BrokerClient, group: &str) -> String {
    let ids = members(client, group).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.into_iter().next().expect("one member")
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

/// Waits for `run` to end, which it must do cleanly and within [`PATIENCE`]; its summary.
/// `which` names the run in a failure.
async fn ended_cleanly(
    run: JoinHandle<Result<RunSummary, ConsumeError>>,
    which: &str,
) -> RunSummary {
    tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap_or_else(|e| panic!("{which} ends in time: {e:?}"))
        .unwrap_or_else(|e| panic!("{which}'s task: {e:?}"))
        .unwrap_or_else(|e| panic!("{which} ends cleanly: {e:?}"))
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
/// (Before, heartbeats ran only between fetches: a handler slower than the session lost its
/// member, and the second member handled the same partition while the first still did.)
/// The handler takes [`SLOW`] (9 s), three times the [`SHORT_SESSION_MS`] session (3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_slower_than_the_session_timeout_keeps_its_partition() {
    const GROUP: &str = "patient";
    const TOPIC: &str = "slow";
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path(), any_port(), groups(SHORT_SESSION_MS)).await;
    let admin = admin_with_topic(&broker, TOPIC, 2).await;
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
    let first_member = only_member(&admin, GROUP).await;

    // Through the slow handling and past it, the first member stays in the group; the
    // second joins once the first's session would have run out without heartbeats (half a
    // session later, still well within the slow handling).
    let session = Duration::from_millis(SHORT_SESSION_MS.unsigned_abs());
    let mut second = None;
    while slow_since.elapsed() < SLOW + Duration::from_millis(500) {
        if second.is_none() && slow_since.elapsed() >= session + session / 2 {
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
    ended_cleanly(first, "the first run").await;
    ended_cleanly(second, "the second run").await;

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
    let broker = start_broker(dir.path(), any_port(), groups(6_000)).await;
    let admin = admin_with_topic(&broker, TOPIC, 1).await;
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
    let first_member = only_member(&admin, GROUP).await;
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
    // The first one's slow handler finishes (a stop would cut it short), and its member,
    // back from the slow handling, joins again (as a new member).
    wait_for("the first consumer's slow record handled", || {
        let log = log.lock().expect("lock");
        log.iter().any(|h| h.consumer == "first").then_some(())
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = members(&admin, GROUP).await;
        if now.len() == 2 && !now.contains(&first_member) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first consumer never joined again after its slow handling: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    // The first run went on after leaving; it ends cleanly.
    ended_cleanly(first, "the first run").await;
    ended_cleanly(second, "the second run").await;
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
    let broker = start_broker(dir.path(), listen, GroupConfig::default()).await;
    let admin = admin_with_topic(&broker, TOPIC, 1).await;
    produce(&admin, TOPIC, 0, 0..5).await;
    let consumer = RawConsumer::with_reconnect(
        broker.client().await,
        support::connector(listen, broker.trust(), broker.credentials.clone()),
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
    let broker = start_broker(dir.path(), listen, GroupConfig::default()).await;
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
    let summary = ended_cleanly(run, "the run").await;
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

/// A run stopped at any moment of its join leaves no member behind: at the end of a run the
/// heartbeat task is stopped, not aborted, so a join in flight is answered and the run
/// leaves as the member it made. (Before, the task was aborted mid-join: the member the
/// coordinator had made was never left, and held its partitions until its session expired.)
/// The stops are spread over the first milliseconds of the runs, the join's round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_stopped_while_joining_leaves_no_member_behind() {
    use herald_broker_client::RequestError;
    use herald_wire::ErrorCode;

    const GROUP: &str = "hasty";
    const TOPIC: &str = "brief";
    /// The group's member ids (none before the group exists: a describe of a group no
    /// member ever joined is refused).
    async fn members_if_any(client: &BrokerClient) -> BTreeSet<String> {
        match client
            .group(GroupRequest::Describe {
                group: GROUP.to_owned(),
            })
            .await
        {
            Ok(GroupResponse::Description(description)) => description
                .members
                .into_iter()
                .map(|member| member.member_id)
                .collect(),
            Err(RequestError::Broker {
                code: ErrorCode::InvalidRequest,
                ..
            }) => BTreeSet::new(),
            other => panic!("{other:?}"),
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = RunningBroker::start(dir.path()).await;
    let admin = admin_with_topic(&broker, TOPIC, 1).await;
    produce(&admin, TOPIC, 0, 0..3).await;
    let client = broker.client().await;
    for attempt in 0..40u64 {
        let (stop, stopped) = watch::channel(false);
        let run = spawn_run(
            RawConsumer::new(client.clone(), ConsumerConfig::new(GROUP, TOPIC)),
            recording("hasty", Log::default(), None),
            stopped,
        );
        let after = Duration::from_micros(250 * attempt);
        tokio::time::sleep(after).await;
        stop.send_replace(true);
        ended_cleanly(run, "the run").await;
        let behind = members_if_any(&admin).await;
        assert!(
            behind.is_empty(),
            "a run stopped {after:?} after it started left {behind:?} in the group"
        );
    }
}

/// A corrupt batch on the broker's disk (one byte of a record value flipped in the stored
/// segment, so the batch's header and lengths stay intact and its checksum fails): by
/// default the run ends with an error naming it, after handling (and committing) the records
/// before it once; asked to, the consumer sends the batch's bytes to the dead-letter topic
/// and goes on after it. Either way it is counted, and never fetched again and again
/// (before, the consumer fetched it forever: reading stopped silently at the corrupt batch,
/// the position stayed there, and the next fetch brought the same bytes back).
mod corrupt_batches {
    use super::*;

    use std::io::{Seek, SeekFrom, Write};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use herald::consumer::{
        CorruptBatchPolicy, DeadLetter, CORRUPT_BATCH_ERROR_KIND, DLQ_BATCH_OFFSET_HEADER,
        DLQ_CHUNKS_HEADER, DLQ_CHUNK_HEADER, DLQ_LAST_OFFSET_HEADER,
    };
    use herald::metrics::CONSUMER_CORRUPT_BATCHES;
    use herald_wire::batch::{batch_size, batches, BatchView, Record};
    use herald_wire::headers;

    /// Counters by name and labels, recorded for this test binary (the consumer registers
    /// its corrupt-batch counter when it meets one).
    /// A counter's name and labels.
    type CounterKey = (String, Vec<(String, String)>);
    #[derive(Default, Clone)]
    struct Counters(Arc<Mutex<BTreeMap<CounterKey, Arc<AtomicU64>>>>);

    impl Counters {
        /// The recorder of this test binary, installed on first use.
        fn installed() -> &'static Counters {
            static COUNTERS: OnceLock<Counters> = OnceLock::new();
            COUNTERS.get_or_init(|| {
                let counters = Counters::default();
                ::metrics::set_global_recorder(counters.clone())
                    .expect("the only recorder of this test binary");
                counters
            })
        }

        fn cell(&self, key: &::metrics::Key) -> Arc<AtomicU64> {
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            self.0
                .lock()
                .expect("lock")
                .entry((key.name().to_owned(), labels))
                .or_default()
                .clone()
        }

        /// The sum of the counters named `name` carrying all of `labels`.
        fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            self.0
                .lock()
                .expect("lock")
                .iter()
                .filter(|((counter, carried), _)| {
                    counter == name
                        && labels
                            .iter()
                            .all(|(k, v)| carried.iter().any(|(ck, cv)| ck == k && cv == v))
                })
                .map(|(_, value)| value.load(Ordering::SeqCst))
                .sum()
        }

        /// Asserts that one corrupt batch of `topic` partition 0 was counted, for `group` and
        /// as `action`, and nothing else.
        fn assert_counted_once(&self, topic: &str, group: &str, action: &str) {
            let labels = [("topic", topic), ("group", group), ("partition", "0")];
            let counted = [
                ("topic", topic),
                ("group", group),
                ("partition", "0"),
                ("action", action),
            ];
            assert_eq!(self.sum(CONSUMER_CORRUPT_BATCHES, &counted), 1);
            assert_eq!(
                self.sum(CONSUMER_CORRUPT_BATCHES, &labels),
                1,
                "counted once"
            );
        }
    }

    impl ::metrics::Recorder for Counters {
        fn describe_counter(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            ::metrics::Counter::from_arc(self.cell(key))
        }

        fn register_gauge(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            ::metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            ::metrics::Histogram::noop()
        }
    }

    /// The first segment file of `topic`/`partition` under the broker's data directory.
    fn segment(dir: &Path, topic: &str, partition: u32) -> PathBuf {
        dir.join("topics")
            .join(topic)
            .join(partition.to_string())
            .join(format!("{:020}.log", 0))
    }

    /// Damages the stored batch `index` (from 0) of the segment file at `path` in place: one
    /// byte of its first record's value flipped, so its header and lengths stay intact and
    /// its checksum fails. The broker reads the file at every fetch (no cache): the next
    /// fetch serves the damage. Returns the damaged batch's bytes, as now stored.
    fn damage_batch(path: &Path, index: usize) -> Vec<u8> {
        let mut bytes = std::fs::read(path).expect("read the segment");
        let mut start = 0;
        for _ in 0..index {
            start += batch_size(&bytes[start..]).expect("a stored batch");
        }
        let end = start + batch_size(&bytes[start..]).expect("a stored batch");
        let at = {
            let view = BatchView::parse(&bytes[start..end]).expect("intact before");
            let record = view.records().next().expect("a record").expect("readable");
            let value = record.value.expect("a value");
            value.as_ptr() as usize - bytes.as_ptr() as usize
        };
        bytes[at] ^= 0x01;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open the segment");
        file.seek(SeekFrom::Start(at as u64)).expect("seek");
        file.write_all(&bytes[at..=at]).expect("write");
        file.sync_all().expect("sync");
        let damaged = bytes[start..end].to_vec();
        assert!(
            BatchView::parse(&damaged).is_err(),
            "the damaged batch fails its checksum"
        );
        damaged
    }

    /// A broker serving `topic` (one partition) holding three batches of three records
    /// (offsets 0..3, 3..6, 6..9), the second damaged on disk; its bytes as stored.
    async fn damaged_topic(dir: &Path, topic: &str) -> (RunningBroker, BrokerClient, Vec<u8>) {
        let broker = RunningBroker::start(dir).await;
        let admin = admin_with_topic(&broker, topic, 1).await;
        for values in [0..3, 3..6, 6..9] {
            produce(&admin, topic, 0, values).await;
        }
        let damaged = damage_batch(&segment(dir, topic, 0), 1);
        (broker, admin, damaged)
    }

    /// How many times each offset of partition 0 was handled.
    fn handled_once(offsets: impl IntoIterator<Item = i64>) -> BTreeMap<(u32, i64), usize> {
        offsets.into_iter().map(|offset| ((0, offset), 1)).collect()
    }

    /// By default the run ends with `ConsumeError::CorruptBatch` naming the topic, the
    /// partition and the batch's first offset, well within the patience (it does not fetch
    /// the batch again and again: the old consumer never returned), after the records before
    /// it were handled exactly once and committed; the batch is counted as `stopped`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_corrupt_batch_ends_the_run_with_an_error_naming_it() {
        const GROUP: &str = "careful";
        const TOPIC: &str = "damaged";
        let counters = Counters::installed();
        let dir = tempfile::tempdir().expect("tempdir");
        let (broker, admin, _) = damaged_topic(dir.path(), TOPIC).await;
        let log: Log = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let run = spawn_run(
            RawConsumer::new(broker.client().await, ConsumerConfig::new(GROUP, TOPIC)),
            recording("only", log.clone(), None),
            stopped,
        );
        let ended = tokio::time::timeout(PATIENCE, run)
            .await
            .expect("the run ends instead of fetching the corrupt batch forever")
            .expect("the run's task");
        match ended {
            Err(ConsumeError::CorruptBatch {
                topic,
                partition,
                offset,
                reason,
            }) => {
                assert_eq!(
                    (topic.as_str(), partition, offset),
                    (TOPIC, 0, 3),
                    "{reason}"
                );
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("the run ended with {other:?}, not the corrupt batch"),
        }
        assert_eq!(
            handled_counts(&log),
            handled_once(0..3),
            "the records before the corrupt batch, once each; none of it or after it"
        );
        assert_eq!(
            committed(&admin, GROUP, TOPIC).await,
            Some(3),
            "committed up to the corrupt batch"
        );
        counters.assert_counted_once(TOPIC, GROUP, "stopped");
        drop(stop);
    }

    /// With `CorruptBatchPolicy::SkipToDeadLetter` and a dead-letter topic, the records
    /// before and after the corrupt batch are handled (once each, none of the batch's), the
    /// dead-letter topic holds one record: the batch's bytes as stored, with headers naming
    /// the source topic, partition and the offsets skipped; everything is committed and the
    /// run ends cleanly when stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_corrupt_batch_goes_to_the_dead_letter_topic_when_asked() {
        const GROUP: &str = "forgiving";
        const TOPIC: &str = "scratched";
        const DEAD_LETTERS: &str = "scratched-corrupt";
        let counters = Counters::installed();
        let dir = tempfile::tempdir().expect("tempdir");
        let (broker, admin, damaged) = damaged_topic(dir.path(), TOPIC).await;
        let log: Log = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let config = ConsumerConfig {
            on_corrupt_batch: CorruptBatchPolicy::SkipToDeadLetter,
            dead_letter: DeadLetter::Topic(DEAD_LETTERS.to_owned()),
            ..ConsumerConfig::new(GROUP, TOPIC)
        };
        let run = spawn_run(
            RawConsumer::new(broker.client().await, config),
            recording("only", log.clone(), None),
            stopped,
        );
        let deadline = Instant::now() + PATIENCE;
        while committed(&admin, GROUP, TOPIC).await != Some(9) {
            if run.is_finished() {
                panic!("the run ended at the corrupt batch: {:?}", run.await);
            }
            assert!(
                Instant::now() < deadline,
                "offset 9 never committed; handled {:?}",
                handled_counts(&log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send_replace(true);
        let summary = ended_cleanly(run, "the run").await;
        assert_eq!(summary.corrupt_batches, 1, "{summary:?}");
        assert_eq!(summary.processed, 6, "{summary:?}");
        assert_eq!(
            handled_counts(&log),
            handled_once((0..3).chain(6..9)),
            "the records before and after the corrupt batch, once each"
        );

        let fetched = admin
            .fetch(DEAD_LETTERS, 0, 0, 1 << 20, Duration::ZERO, 1)
            .await
            .expect("fetch the dead letters");
        assert_eq!(fetched.high_watermark, 1, "one dead letter, written once");
        let dead: Vec<Record> = batches(&fetched.batches)
            .flat_map(|view| {
                let view = view.expect("a valid dead-letter batch");
                view.records()
                    .map(|record| record.expect("readable").to_owned_record())
                    .collect::<Vec<_>>()
            })
            .collect();
        let [dead] = dead.as_slice() else {
            panic!("one dead letter: {dead:?}")
        };
        assert_eq!(
            dead.value.as_deref(),
            Some(damaged.as_slice()),
            "the corrupt batch's bytes, as stored"
        );
        let header = |name: &str| {
            dead.headers
                .iter()
                .find(|h| h.key == name)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        };
        assert_eq!(header(headers::DLQ_TOPIC).as_deref(), Some(TOPIC));
        assert_eq!(header(headers::DLQ_PARTITION).as_deref(), Some("0"));
        assert_eq!(header(headers::DLQ_OFFSET).as_deref(), Some("3"));
        assert_eq!(header(DLQ_BATCH_OFFSET_HEADER).as_deref(), Some("3"));
        assert_eq!(header(DLQ_LAST_OFFSET_HEADER).as_deref(), Some("5"));
        assert_eq!(header(headers::DLQ_GROUP).as_deref(), Some(GROUP));
        assert_eq!(
            header(headers::DLQ_ERROR_KIND).as_deref(),
            Some(CORRUPT_BATCH_ERROR_KIND)
        );
        assert!(
            header(headers::DLQ_ERROR_MESSAGE).is_some_and(|m| m.contains("checksum")),
            "{:?}",
            header(headers::DLQ_ERROR_MESSAGE)
        );
        assert_eq!(header(DLQ_CHUNK_HEADER).as_deref(), Some("0"));
        assert_eq!(header(DLQ_CHUNKS_HEADER).as_deref(), Some("1"));

        counters.assert_counted_once(TOPIC, GROUP, "dead-lettered");
    }
}
