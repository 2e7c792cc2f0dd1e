//! Response memory is bounded: a client that opens many fetch streams and reads none of them
//! makes the broker hold at most its connection's response budget (not one 8 MiB answer per
//! stream), other connections are still answered at once (small requests even while clients
//! that do not read fill the broker-wide budget), a write the client does not read is reset
//! after the write timeout, and whatever such a client held is released when its streams are
//! reset or its connection goes away. Observed through `/metrics`
//! (`herald_broker_response_bytes_outstanding`, `herald_broker_response_write_timeouts_total`)
//! and, independently of the accounting under test, through this process's resident heap
//! (the broker runs in-process), over real QUIC, with raw quinn clients for the streams nobody
//! reads.
//!
//! The tests run one at a time (`SERIAL`): the heap is the whole process's, and another test's
//! answers must not count in it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker::server::{CONNECTION_RESPONSE_BYTES_MAX, RESPONSE_BYTES_MAX};
use herald_broker::Bound;
use herald_broker_client::{quic_client_config, Trust};
use herald_metrics::broker::{RESPONSE_BYTES_OUTSTANDING, RESPONSE_WRITE_TIMEOUTS};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::frame::{Frame, FrameHeader, FrameKind};
use herald_wire::limits::{FETCH_BYTES_MAX, FRAME_BYTES_MAX};
use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};
use herald_wire::{Api, ErrorCode, Request};
use support::{now_ms, scrape, RunningBroker};
use tokio::sync::Mutex;

const TOPIC: &str = "bulk";
/// Held by each test for its whole run: they share the process's heap.
static SERIAL: Mutex<()> = Mutex::const_new(());
/// The write timeout of the tests where answers must stay blocked: a request held up behind
/// them then fails the test's own (shorter) timeouts clearly, instead of being released when
/// a stuck write times out.
const BLOCKED_WRITE_TIMEOUT: Duration = Duration::from_secs(600);
/// The runtime worker threads of the tests (`worker_threads` below): each may hold one fetch
/// answer between its read and its charge.
const WORKERS: usize = 4;
/// The connection windows of `herald_quic::transport` (the broker's send window, the
/// client's receive window), which both ends of the first test use. What quinn has taken of
/// the answers is in the broker's send buffer until the client acknowledges it, and then in
/// the client's receive buffer, unread: both in this process, and both at once while in flight.
const QUIC_WINDOW_BYTES: usize = 64 * 1024 * 1024;
/// Room for the rest of what the process allocates meanwhile: packet buffers, `/metrics`
/// scrapes, allocator fragmentation.
const HEAP_SLACK_BYTES: usize = 32 * 1024 * 1024;
/// The receive windows of the clients that fill the broker-wide budget: small, so that this
/// process does not also buffer 64 MiB for each of them.
const SMALL_WINDOW_BYTES: u32 = 1024 * 1024;

/// A broker over `data_dir` (with `/metrics`, retention out of the way) whose response writes
/// time out after `response_write_timeout`. Authentication is off: these clients speak the
/// protocol on raw QUIC streams, and what they measure is memory, not permissions.
async fn start_broker(data_dir: &Path, response_write_timeout: Duration) -> RunningBroker {
    let mut config = support::config(data_dir);
    config.security.authentication = false;
    config.retention_check_interval = Duration::from_secs(3600);
    config.response_write_timeout = response_write_timeout;
    RunningBroker::start_with(config).await
}

/// This process's anonymous resident memory (its heap, beside thread stacks and other
/// anonymous maps), from `/proc/self/status`; `None` where there is none (not Linux). Resident
/// memory, not live bytes, because the workspace forbids unsafe code, and with it a counting
/// global allocator. Its growth from a baseline over-counts what stays allocated by what the
/// allocator keeps after frees (fragmentation: the tests' slack), and under-counts it by what
/// the allocator reuses of what it kept from earlier phases; neither comes near the hundreds
/// of MiB an unbounded broker holds.
fn resident_heap_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let kib = line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kib.parse::<usize>().ok().map(|kib| kib * 1024)
        })
    };
    field("RssAnon:").or_else(|| field("VmRSS:"))
}

/// A one-record batch.
fn one_record() -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: now_ms(),
        key: None,
        value: Some(b"polite".to_vec()),
        headers: Vec::new(),
    });
    builder.encode().expect("batch")
}

/// Creates the topic and stores ~10 MiB in 1 MiB batches; returns how many batch bytes a
/// fetch of `FETCH_BYTES_MAX` from offset 0 answers (several MiB).
async fn fill(broker: &RunningBroker) -> usize {
    let client = broker.client().await;
    client
        .create_topic(TOPIC, TopicConfig::default())
        .await
        .expect("create");
    let value = vec![b'x'; 64 * 1024];
    for _ in 0..10 {
        let mut builder = BatchBuilder::new();
        for _ in 0..15 {
            builder.push(Record {
                timestamp_ms: now_ms(),
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
            });
        }
        client
            .produce(
                TOPIC,
                0,
                Durability::Memory,
                builder.encode().expect("batch"),
            )
            .await
            .expect("produce");
    }
    let fetched = client
        .fetch(TOPIC, 0, 0, FETCH_BYTES_MAX as u32, Duration::ZERO, 1)
        .await
        .expect("fetch");
    assert!(
        fetched.batches.len() >= 4 * 1024 * 1024,
        "a large answer: {} bytes",
        fetched.batches.len()
    );
    client.close();
    fetched.batches.len()
}

/// The value of the unlabelled series `name`, if `/metrics` has it.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = scrape(addr).await;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse::<f64>().ok())
}

/// Response bytes the broker holds now; the gauge must exist.
async fn outstanding(addr: SocketAddr) -> f64 {
    metric(addr, RESPONSE_BYTES_OUTSTANDING)
        .await
        .unwrap_or_else(|| panic!("/metrics has no {RESPONSE_BYTES_OUTSTANDING}"))
}

/// Polls `condition` every 50 ms until it holds or `within` passed; whether it held.
async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the broker comes to hold no response bytes within 30 s; `after` names what
/// should have released them.
async fn assert_released(metrics: SocketAddr, after: &str) {
    let released = eventually(Duration::from_secs(30), move || async move {
        outstanding(metrics).await == 0.0
    })
    .await;
    assert!(
        released,
        "{} response bytes still held after {after}",
        outstanding(metrics).await
    );
}

/// A raw QUIC connection to the broker, with the transport settings the real client uses
/// (so its flow-control windows are the real ones). The endpoint must outlive the connection.
async fn raw_connection(bound: &Bound) -> (quinn::Endpoint, quinn::Connection) {
    raw_connection_with(bound, herald_quic::transport()).await
}

/// A raw QUIC connection whose receive windows (connection and stream) are `window` bytes.
async fn raw_connection_with_window(
    bound: &Bound,
    window: u32,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut transport = herald_quic::transport();
    transport
        .receive_window(quinn::VarInt::from_u32(window))
        .stream_receive_window(quinn::VarInt::from_u32(window));
    raw_connection_with(bound, transport).await
}

/// A raw QUIC connection to the broker with the transport settings `transport`; otherwise
/// configured as the real client is (its pinned certificate, its ALPN).
async fn raw_connection_with(
    bound: &Bound,
    transport: quinn::TransportConfig,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut config = quic_client_config(&Trust::Fingerprint(bound.fingerprint.clone()))
        .expect("QUIC client configuration");
    config.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(bound.addr, "herald")
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, connection)
}

/// Opens `count` streams, each asking for a `FETCH_BYTES_MAX` fetch from offset 0, and reads
/// none of the answers. The receive halves are kept: dropping one would stop its stream.
async fn unread_fetches(
    connection: &quinn::Connection,
    count: u64,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let request = Request::Fetch {
        topic: TOPIC.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: FETCH_BYTES_MAX as u32,
        max_wait_ms: 0,
        min_bytes: 1,
    };
    let mut streams = Vec::new();
    for request_id in 0..count {
        let frame = Frame::encode_with(
            FrameHeader {
                kind: FrameKind::Request,
                api: Api::Fetch as u16,
                request_id,
            },
            request.encoded_len_hint(),
            |out| request.encode(out),
        )
        .expect("a fetch frame");
        let (mut send, recv) = connection.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("request sent");
        send.finish().expect("finish");
        streams.push((send, recv));
    }
    streams
}

/// 64 streams whose ~7.5 MiB answers nobody reads: the first few fill the client's 64 MiB
/// connection window, then the broker holds at most one connection budget of answers, a
/// second connection's fetches are answered at once, and closing the connection releases all
/// it held. The gauge is the budget's own count; the process's heap, measured apart from it,
/// grows by at most that budget, plus what quinn has taken (the broker's send window and the
/// client's receive window: the client runs here too), one answer per runtime worker between
/// its read and its charge, and slack: 256 MiB. Before the budgets the broker held every
/// answer: ~450 MiB, plus the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reading_no_answers_holds_at_most_its_connection_budget() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path(), BLOCKED_WRITE_TIMEOUT).await;
    let metrics = broker.metrics_addr();
    let answer_len = fill(&broker).await;
    let budget = CONNECTION_RESPONSE_BYTES_MAX as f64;
    let heap_growth_max = CONNECTION_RESPONSE_BYTES_MAX
        + 2 * QUIC_WINDOW_BYTES
        + WORKERS * FETCH_BYTES_MAX
        + HEAP_SLACK_BYTES;

    let (_endpoint, connection) = raw_connection(&broker.bound).await;
    let heap_before = resident_heap_bytes();
    let mut heap_highest = heap_before;
    let streams = unread_fetches(&connection, 64).await;

    // The answers nobody reads come to hold budget, and never more than one connection's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut highest = 0.0f64;
    while highest < answer_len as f64 && Instant::now() < deadline {
        let held = outstanding(metrics).await;
        assert!(
            held <= budget,
            "{held} response bytes held for one connection; its budget is {budget}"
        );
        highest = highest.max(held);
        heap_highest = heap_highest.max(resident_heap_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        highest >= answer_len as f64,
        "the unread answers never held budget (highest {highest}): the test did not stall the broker"
    );
    // Long enough for every one of the 64 fetches to be read, were they not held back.
    for _ in 0..50 {
        let held = outstanding(metrics).await;
        assert!(
            held <= budget,
            "{held} response bytes held for one connection; its budget is {budget}"
        );
        heap_highest = heap_highest.max(resident_heap_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match (heap_before, heap_highest) {
        (Some(before), Some(highest)) => {
            let grown = highest.saturating_sub(before);
            assert!(
                grown <= heap_growth_max,
                "the process's heap grew by {} MiB with 64 unread answers; at most {} MiB expected \
                 (one connection budget, two QUIC windows, {WORKERS} answers in hand, slack)",
                grown >> 20,
                heap_growth_max >> 20
            );
        }
        _ => eprintln!("no /proc/self/status here: the heap is not measured"),
    }

    // Another connection is answered promptly meanwhile.
    let polite = broker.client().await;
    for _ in 0..3 {
        let fetched = tokio::time::timeout(
            Duration::from_secs(20),
            polite.fetch(TOPIC, 0, 0, FETCH_BYTES_MAX as u32, Duration::ZERO, 1),
        )
        .await
        .expect("answered within 20 s")
        .expect("fetch");
        assert_eq!(fetched.batches.len(), answer_len);
    }
    polite.close();

    // The connection going away releases everything it held or waited for.
    connection.close(0u32.into(), b"done");
    assert_released(metrics, "the connection closed").await;
    drop(streams);
    broker.stop().await;
}

/// With a 1 s write timeout, 16 unread ~7.5 MiB answers (twice what the client's connection
/// window takes) end without the client doing anything: those that fit are delivered, the
/// rest are reset with the write-timeout code and counted, and the budget is empty again
/// while the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_nobody_reads_is_reset_after_the_write_timeout() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path(), Duration::from_secs(1)).await;
    let metrics = broker.metrics_addr();
    let answer_len = fill(&broker).await;
    assert_eq!(
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await,
        Some(0.0),
        "no write has timed out yet"
    );

    let (_endpoint, connection) = raw_connection(&broker.bound).await;
    let mut streams = unread_fetches(&connection, 16).await;

    let timed_out = eventually(Duration::from_secs(20), move || async move {
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await >= Some(1.0)
    })
    .await;
    assert!(timed_out, "no unread answer was reset");
    assert_released(metrics, "the writes timed out").await;

    // Every stream has ended: answered whole, or reset with the write-timeout code.
    let mut delivered: u32 = 0;
    let mut reset: u32 = 0;
    for (_send, recv) in &mut streams {
        match tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(FRAME_BYTES_MAX))
            .await
            .expect("every stream has ended")
        {
            Ok(frame) => {
                assert!(frame.len() > answer_len, "a whole answer");
                delivered += 1;
            }
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                assert_eq!(code, quinn::VarInt::from_u32(1), "the write-timeout code");
                reset += 1;
            }
            Err(other) => panic!("unexpected end of an unread stream: {other}"),
        }
    }
    assert!(reset >= 1, "delivered {delivered}, reset {reset}");
    assert_eq!(
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await,
        Some(f64::from(reset)),
        "each reset is counted once (delivered {delivered})"
    );
    connection.close(0u32.into(), b"done");
    broker.stop().await;
}

/// Nine connections that open fetch streams and read nothing fill the broker-wide budget
/// (eight connections' worth); a tenth connection still has its small requests (produce one
/// record, list offsets, describe the topic) answered at once, since small answers are not
/// charged to the budgets, and a bulk fetch of its own is answered too (`Throttled`, after a
/// short wait for room) instead of queueing behind the answers nobody reads. With a 600 s
/// write timeout nothing of theirs is released meanwhile: an answer held up behind them
/// fails the 20 s bounds here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_requests_are_answered_while_other_connections_fill_the_broker_budget() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path(), BLOCKED_WRITE_TIMEOUT).await;
    let metrics = broker.metrics_addr();
    let answer_len = fill(&broker).await;

    // Each connection can hold 8 answers, 9 × 8 more than the 68 the broker-wide budget
    // holds; 12 streams each leave some waiting for room once it is full.
    let mut unread = Vec::new();
    for _ in 0..9 {
        let (endpoint, connection) =
            raw_connection_with_window(&broker.bound, SMALL_WINDOW_BYTES).await;
        let streams = unread_fetches(&connection, 12).await;
        unread.push((endpoint, connection, streams));
    }
    let full = (RESPONSE_BYTES_MAX - 2 * answer_len) as f64;
    let filled = eventually(Duration::from_secs(60), move || async move {
        outstanding(metrics).await >= full
    })
    .await;
    assert!(
        filled,
        "the unread answers hold {} bytes, not the broker-wide budget ({RESPONSE_BYTES_MAX}): \
         the test did not fill it",
        outstanding(metrics).await
    );

    let polite = broker.client().await;
    let within = Duration::from_secs(20);
    let (base_offset, _) = tokio::time::timeout(
        within,
        polite.produce(TOPIC, 0, Durability::Memory, one_record()),
    )
    .await
    .expect("a produce is acknowledged within 20 s while the broker-wide budget is full")
    .expect("produce");
    let (latest, _) =
        tokio::time::timeout(within, polite.list_offsets(TOPIC, 0, OffsetSpec::Latest))
            .await
            .expect("list offsets is answered within 20 s while the broker-wide budget is full")
            .expect("list offsets");
    assert!(
        latest > base_offset,
        "the record is there: latest {latest}, stored at {base_offset}"
    );
    let described = tokio::time::timeout(within, polite.describe_topic(TOPIC))
        .await
        .expect("describe topic is answered within 20 s while the broker-wide budget is full")
        .expect("describe topic");
    assert_eq!(described.name, TOPIC);
    match tokio::time::timeout(
        within,
        polite.fetch(TOPIC, 0, 0, FETCH_BYTES_MAX as u32, Duration::ZERO, 1),
    )
    .await
    .expect("a bulk fetch is answered within 20 s, not queued behind the unread answers")
    {
        Ok(fetched) => assert_eq!(fetched.batches.len(), answer_len),
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::Throttled), "{error}"),
    }
    polite.close();

    // The connections going away release everything they held or waited for.
    for (_endpoint, connection, _streams) in &unread {
        connection.close(0u32.into(), b"done");
    }
    assert_released(metrics, "the connections closed").await;
    drop(unread);
    broker.stop().await;
}
