//! The QUIC glue: accept connections (bounded), accept streams, read frames (bounded), hand
//! requests to the [`Broker`], write responses (bounded). Plus the HTTP `/metrics` endpoint
//! and the periodic retention task.
//!
//! Response memory is bounded like request memory: an encoded response's bytes are held
//! against its connection's budget ([`CONNECTION_RESPONSE_BYTES_MAX`]) and the broker-wide one
//! ([`RESPONSE_BYTES_MAX`]) until quinn has taken them all, and a write that a client does not
//! read for [`RESPONSE_WRITE_TIMEOUT`] resets its stream. Otherwise a client that opens many
//! fetch streams and never reads them makes the broker keep every answer (up to 8 MiB each).
//! The accounting (`Charge`, `ResponseBudgets`) is kept apart from the stream glue and tested
//! on its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// `bytes::Bytes`, the chunk type quinn's writes take (axum re-exports it; this crate has no
// direct dependency on `bytes`).
use axum::body::Bytes;
use herald_broker_core::groups::GroupConfig;
use herald_metrics::{Counter, Metrics};
use herald_registry_client::RegistryClient;
use herald_wire::frame::{Frame, FrameHeader, FrameKind};
use herald_wire::limits::{FETCH_BYTES_MAX, FRAME_BYTES_MAX};
use herald_wire::messages::ErrorBody;
use herald_wire::{Api, DecodeError, ErrorCode, Request, Response};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::broker::{Broker, THROTTLE_RETRY_AFTER_MS};
use crate::schema_cache::SchemaCache;
use crate::tls::{self, TlsSource};

/// Connections served at once; more are refused at the handshake.
pub const CONNECTIONS_MAX: usize = 1024;
/// Request bytes one connection may have buffered (frames being read or handled); more wait.
pub const CONNECTION_READ_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(herald_wire::limits::FRAME_BYTES_MAX <= CONNECTION_READ_BYTES_MAX);
/// Requests in flight per connection (from decoding until the response is written); more are
/// answered `Throttled`.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 256;
/// Response bytes one connection may hold encoded and not yet taken by quinn; more wait.
/// 64 MiB is eight maximal fetch responses (`FETCH_BYTES_MAX`, 8 MiB) and as much as the
/// connection-level flow-control window (`herald_quic::transport`, 64 MiB) lets a client have
/// unread: a client that reads keeps its window busy with this much, and more would only
/// queue in the broker's memory. A client that opens many fetch streams and reads none of them
/// holds this much, not 8 MiB per stream. The same size as the request side
/// ([`CONNECTION_READ_BYTES_MAX`]).
pub const CONNECTION_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Response bytes the whole broker may hold encoded and not yet taken by quinn; more wait.
/// 512 MiB is eight connections' full budgets (64 maximal fetch responses): busy consumers
/// stream at full window side by side, while the [`CONNECTIONS_MAX`] connections together
/// cannot make the broker hold 64 GiB of answers (1,024 × 64 MiB) a small host does not have.
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// A response write that makes no progress for this long is given up: the stream is reset and
/// the response's budget released. Progress, not the whole write, is timed, so that a slow
/// link reading an 8 MiB answer is not cut off; a client that reads nothing of it for 30 s
/// (ten keep-alive periods of `herald_quic::transport`) is not reading it at all, and must not
/// hold its connection's budget (and the other streams waiting for it) for good.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
// Every frame fits in one connection's budget, so clamping a charge to the budget (see
// `Charge::of`) only ever concerns a budget configured smaller than a frame.
const _: () = assert!(FRAME_BYTES_MAX <= CONNECTION_RESPONSE_BYTES_MAX);
const _: () = assert!(CONNECTION_RESPONSE_BYTES_MAX <= RESPONSE_BYTES_MAX);
// Charges are semaphore permits, acquired by the `u32`.
const _: () = assert!(RESPONSE_BYTES_MAX <= u32::MAX as usize);
/// What a fetch answer adds to its batches: the frame header (16 bytes) and the `Fetched`
/// head (status, high watermark, log start, length: 22 bytes), rounded up.
const FETCH_RESPONSE_OVERHEAD_BYTES: usize = 64;
/// The application error code of a stream reset because the client read none of its response
/// for [`RESPONSE_WRITE_TIMEOUT`].
const WRITE_TIMEOUT_RESET_CODE: quinn::VarInt = quinn::VarInt::from_u32(1);

/// How to run a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Schema registry for schema-ID validation; topics that validate need it.
    pub registry_url: Option<String>,
    /// HTTP address of `/metrics`; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// The endpoint's certificate and key.
    pub tls: TlsSource,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Consumer groups: session and revoke timeouts, assignor.
    pub groups: GroupConfig,
    /// Idempotent-producer state idle this long is forgotten.
    pub producer_expiry: Duration,
    /// A response write that makes no progress this long resets its stream (see
    /// [`RESPONSE_WRITE_TIMEOUT`], the default).
    pub response_write_timeout: Duration,
}

impl BrokerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            registry_url: None,
            metrics_listen: None,
            tls: TlsSource::Generated,
            retention_check_interval: Duration::from_secs(30),
            groups: GroupConfig::default(),
            producer_expiry: Duration::from_millis(crate::broker::PRODUCER_EXPIRY_MS as u64),
            response_write_timeout: RESPONSE_WRITE_TIMEOUT,
        }
    }
}

/// What a started broker tells its caller.
#[derive(Debug, Clone)]
pub struct Bound {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub fingerprint: String,
    pub certificate_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot open the broker's data: {0}")]
    Open(#[from] crate::broker::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid registry URL: {0}")]
    Registry(String),
}

/// Opens the data directory, binds, and serves until `shutdown` completes.
pub async fn serve(
    config: BrokerConfig,
    on_bound: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let identity = tls::identity(&config.data_dir, &config.tls)?;
    let registry = config
        .registry_url
        .as_deref()
        .map(RegistryClient::new)
        .transpose()
        .map_err(|e| ServeError::Registry(e.to_string()))?;
    let broker = Arc::new(Broker::open(
        &config.data_dir,
        SchemaCache::new(registry),
        Metrics::new(),
        config.groups,
        config.producer_expiry.as_millis().min(i64::MAX as u128) as i64,
    )?);
    let socket = std::net::UdpSocket::bind(config.listen).map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::new(tls::reset_key(&identity)),
        Some(tls::server_config(&identity)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = endpoint.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let responses = BrokerResponseBudget::new(RESPONSE_BYTES_MAX);
    let metrics_addr = match config.metrics_listen {
        Some(listen) => Some(
            spawn_metrics(listen, broker.clone(), responses.clone())
                .await
                .map_err(|source| ServeError::Bind {
                    addr: listen,
                    source,
                })?,
        ),
        None => None,
    };
    tracing::info!(%addr, fingerprint = %identity.fingerprint, certificate = %identity.certificate_path.display(), "broker listening (QUIC, ALPN herald/1)");
    on_bound(Bound {
        addr,
        metrics_addr,
        fingerprint: identity.fingerprint.clone(),
        certificate_path: identity.certificate_path.clone(),
    });
    let retention = tokio::spawn(retention_loop(
        broker.clone(),
        config.retention_check_interval,
    ));
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    broker.metrics.connections_refused.increment(1);
                    incoming.refuse();
                    continue;
                };
                let broker = broker.clone();
                let responses = responses.clone();
                let write_timeout = config.response_write_timeout;
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(incoming, broker, responses, write_timeout).await {
                        tracing::debug!(%error, "connection ended");
                    }
                    drop(permit);
                });
            }
        }
    }
    retention.abort();
    endpoint.close(0u32.into(), b"shutting down");
    endpoint.wait_idle().await;
    tracing::info!("broker stopped");
    Ok(())
}

/// What the streams of one connection share.
struct ConnectionState {
    broker: Arc<Broker>,
    /// Requests in flight: [`INFLIGHT_REQUESTS_PER_CONNECTION_MAX`] permits.
    inflight: Arc<Semaphore>,
    /// Request bytes buffered: [`CONNECTION_READ_BYTES_MAX`] permits.
    read_budget: Arc<Semaphore>,
    /// Response bytes held: this connection's budget and the broker's.
    responses: ResponseBudgets,
    /// See [`BrokerConfig::response_write_timeout`].
    write_timeout: Duration,
}

async fn serve_connection(
    incoming: quinn::Incoming,
    broker: Arc<Broker>,
    responses: BrokerResponseBudget,
    write_timeout: Duration,
) -> Result<(), quinn::ConnectionError> {
    let connection = incoming.await?;
    let state = Arc::new(ConnectionState {
        broker,
        inflight: Arc::new(Semaphore::new(INFLIGHT_REQUESTS_PER_CONNECTION_MAX)),
        read_budget: Arc::new(Semaphore::new(CONNECTION_READ_BYTES_MAX)),
        responses: ResponseBudgets::new(CONNECTION_RESPONSE_BYTES_MAX, &responses),
        write_timeout,
    });
    loop {
        let (send, recv) = connection.accept_bi().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_stream(send, recv, state).await {
                tracing::debug!(%error, "stream ended");
            }
        });
    }
}

/// Why serving a stream ended early. Logged at debug level: these are a client's doing.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("unreadable frame: {0}")]
    Frame(String),
    #[error("cannot encode the response: {0}")]
    Encode(#[from] DecodeError),
    #[error("cannot write the response: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the client read nothing of a response for {0:?}; the stream was reset")]
    WriteTimedOut(Duration),
    #[error("the client stopped the stream, or the connection was lost, while its response waited for budget")]
    Abandoned,
    #[error("the response budget is closed: {0}")]
    Budget(#[from] AcquireError),
    #[error("cannot finish the stream: {0}")]
    Finish(#[from] quinn::ClosedStream),
}

/// Serves frames on one stream, in order, until the client finishes it.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn: Arc<ConnectionState>,
) -> Result<(), StreamError> {
    loop {
        let (frame, _read_permit) = match next_frame(&mut recv, &conn.read_budget).await {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(error) => {
                let response = Response::error(
                    ErrorCode::InvalidRequest,
                    format!("unreadable frame: {error}"),
                );
                let header = FrameHeader {
                    kind: FrameKind::Response,
                    api: 0,
                    request_id: 0,
                };
                // Best effort: the stream ends with the frame's error whatever the answer's fate.
                let _ = respond(&mut send, &conn, header, response, None).await;
                return Err(StreamError::Frame(error));
            }
        };
        let header = FrameHeader {
            kind: FrameKind::Response,
            ..frame.header
        };
        // The in-flight permit (`_inflight`) lives until the response is written: a request
        // whose answer waits for budget or for the client to read it is still in flight, so a
        // client cannot pile up answers beyond the in-flight limit by not reading them.
        let (response, refetch, _inflight) = match (frame.header.kind, Api::from_code(frame.header.api)) {
            (FrameKind::Request, Ok(api)) => match Request::decode(api, &frame.body) {
                Ok(request) => match conn.inflight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let refetch = Refetch::of(&request);
                        (conn.broker.handle(request).await, refetch, Some(permit))
                    }
                    Err(_) => (Response::Error(ErrorBody { code: ErrorCode::Throttled, retry_after_ms: THROTTLE_RETRY_AFTER_MS, message: format!("more than {INFLIGHT_REQUESTS_PER_CONNECTION_MAX} requests in flight on this connection") }), None, None),
                },
                Err(error) => (Response::error(ErrorCode::InvalidRequest, format!("bad {} request: {error}", api.name())), None, None),
            },
            (FrameKind::Response, _) => (Response::error(ErrorCode::InvalidRequest, "clients send requests, not responses"), None, None),
            (_, Err(error)) => (Response::error(ErrorCode::UnsupportedVersion, error.to_string()), None, None),
        };
        respond(&mut send, &conn, header, response, refetch).await?;
    }
    send.finish()?;
    Ok(())
}

/// The next frame on a stream, or `None` when the client finished the stream between frames.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    read_budget: &Arc<Semaphore>,
) -> Result<Option<(Frame, OwnedSemaphorePermit)>, String> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(error.to_string()),
    }
    let length = Frame::announced_length(prefix).map_err(|e| e.to_string())?;
    // Frame bodies buffered by one connection are bounded: a peer announcing large frames on
    // many streams waits here, and QUIC flow control holds its data back meanwhile.
    let permit = read_budget
        .clone()
        .acquire_many_owned(length as u32)
        .await
        .map_err(|e| e.to_string())?;
    let body = herald_quic::read_body(recv, length)
        .await
        .map_err(|e| e.to_string())?;
    Frame::decode_owned(body)
        .map(|frame| Some((frame, permit)))
        .map_err(|e| e.to_string())
}

/// Answers on `send`: encodes `response`, holds its bytes against the response budgets
/// (waiting for room: back-pressure), writes it, and releases the bytes once quinn has taken
/// them all, or the write failed or timed out.
async fn respond(
    send: &mut quinn::SendStream,
    conn: &ConnectionState,
    header: FrameHeader,
    response: Response,
    refetch: Option<Refetch>,
) -> Result<(), StreamError> {
    let (encoded, held) = hold_response(send, conn, header, response, refetch).await?;
    write_response(
        send,
        encoded,
        conn.write_timeout,
        &conn.broker.metrics.response_write_timeouts,
    )
    .await?;
    drop(held);
    Ok(())
}

/// Encodes `response` and holds its bytes against the budgets.
///
/// When the budgets have room the answer is charged at once. When they have none, waiting
/// with the answer in hand would keep its bytes in memory uncounted, as many as there are
/// waiting streams; so a fetch's answer (`refetch`) is dropped instead, the most its read can
/// return is reserved (waiting for room), and the fetch is read again, without a long-poll
/// wait, into the reservation. Other answers wait with their bytes: reading them again could
/// repeat a side effect, and they are small (errors, acknowledgements, metadata). A fetch read
/// twice is counted twice in the per-topic records-out and bytes-out counters and the fetch
/// duration histogram.
///
/// What is not counted: an answer between its read and this charge, at most one per runtime
/// worker thread (the read and the charge have no await between them).
async fn hold_response(
    send: &quinn::SendStream,
    conn: &ConnectionState,
    header: FrameHeader,
    response: Response,
    refetch: Option<Refetch>,
) -> Result<(Encoded, Held), StreamError> {
    let budgets = &conn.responses;
    let encoded = Encoded::new(header, response)?;
    let charge = budgets.charge(encoded.len());
    if let Some(held) = budgets.try_hold(charge) {
        return Ok((encoded, held));
    }
    let Some(refetch) = refetch else {
        let held = hold_unless_stopped(send, budgets, charge).await?;
        return Ok((encoded, held));
    };
    let mut reserve = budgets.refetch_charge(refetch.max_bytes, encoded.len());
    drop(encoded);
    loop {
        let mut held = hold_unless_stopped(send, budgets, reserve).await?;
        let encoded = Encoded::new(header, conn.broker.handle(refetch.request.clone()).await)?;
        let needed = budgets.charge(encoded.len());
        if needed <= reserve {
            held.shrink_to(needed);
            return Ok((encoded, held));
        }
        // A batch larger than `max_bytes` was appended at the offset since the first read
        // (which found less): reserve for it and read again. Each round reserves more, up to
        // the budget, which any answer fits.
        reserve = needed;
    }
}

/// Waits for room for `charge` in the budgets, unless the client stops the stream or the
/// connection is lost meanwhile: no one would read the answer, and the place in the queue is
/// given up.
async fn hold_unless_stopped(
    send: &quinn::SendStream,
    budgets: &ResponseBudgets,
    charge: Charge,
) -> Result<Held, StreamError> {
    let stopped = send.stopped();
    tokio::select! {
        held = budgets.hold(charge) => Ok(held?),
        _ = stopped => Err(StreamError::Abandoned),
    }
}

/// Writes an encoded response; a fetch's batches are handed to quinn as they are, uncopied.
/// Each write waits until the client's flow control takes more; one that takes nothing for
/// `timeout` (a client that does not read) resets the stream, counted in `timeouts`, so that
/// the response's budget is released instead of held for good.
async fn write_response(
    send: &mut quinn::SendStream,
    encoded: Encoded,
    timeout: Duration,
    timeouts: &Counter,
) -> Result<(), StreamError> {
    let mut chunks = vec![Bytes::from(encoded.head)];
    if let Some(batches) = encoded.batches.filter(|batches| !batches.is_empty()) {
        chunks.push(Bytes::from(batches));
    }
    let mut written: usize = 0;
    while written < chunks.len() {
        match tokio::time::timeout(timeout, send.write_chunks(&mut chunks[written..])).await {
            Ok(progress) => written += progress?.chunks,
            Err(_) => {
                timeouts.increment(1);
                // Fails only on a stream already finished or reset, which the write would
                // have reported instead of waiting.
                let _ = send.reset(WRITE_TIMEOUT_RESET_CODE);
                return Err(StreamError::WriteTimedOut(timeout));
            }
        }
    }
    Ok(())
}

/// A response frame ready to write: the frame header with the body's head, and a fetch's
/// batches (sent as they are, uncopied).
struct Encoded {
    head: Vec<u8>,
    batches: Option<Vec<u8>>,
}

impl Encoded {
    fn new(header: FrameHeader, response: Response) -> Result<Self, DecodeError> {
        let mut body_head = Vec::with_capacity(64);
        let batches = response.encode_split(&mut body_head);
        let body_len = body_head.len() + batches.as_ref().map_or(0, Vec::len);
        let frame_head = Frame::encode_header(header, body_len)?;
        let mut head = Vec::with_capacity(frame_head.len() + body_head.len());
        head.extend_from_slice(&frame_head);
        head.extend_from_slice(&body_head);
        Ok(Self { head, batches })
    }

    /// The frame's length on the wire, length prefix included.
    fn len(&self) -> usize {
        self.head.len() + self.batches.as_ref().map_or(0, Vec::len)
    }
}

/// A fetch to read again, without a long-poll wait, once its bytes are reserved (see
/// [`hold_response`]).
struct Refetch {
    request: Request,
    max_bytes: u32,
}

impl Refetch {
    /// The fetch `request` without its wait; `None` for other requests (not read again).
    fn of(request: &Request) -> Option<Self> {
        let Request::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            min_bytes,
            ..
        } = request
        else {
            return None;
        };
        Some(Self {
            request: Request::Fetch {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                max_bytes: *max_bytes,
                max_wait_ms: 0,
                min_bytes: *min_bytes,
            },
            max_bytes: *max_bytes,
        })
    }
}

/// What a response is charged against the response budgets, in bytes (semaphore permits).
/// Only arithmetic: the rules, kept apart from the semaphores and streams that follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Charge(u32);

impl Charge {
    /// A response of `len` bytes is charged its length, but never more than `most` (the
    /// smaller budget): a larger response is still served, holding all of the budget, instead
    /// of waiting for room that can never be.
    fn of(len: usize, most: usize) -> Self {
        Self(len.min(most).min(u32::MAX as usize) as u32)
    }

    /// What a fetch whose answer of `answered_len` bytes found no room reserves before it is
    /// read again at the same offset: the most that read can return. That is `max_bytes`
    /// (clamped as the broker clamps it) plus the frame's overhead, or the answer already
    /// read if larger (a first batch larger than `max_bytes` is served whole, and is there
    /// again).
    fn refetch(max_bytes: u32, answered_len: usize, most: usize) -> Self {
        let payload = (max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
        Self::of(
            answered_len.max(payload + FETCH_RESPONSE_OVERHEAD_BYTES),
            most,
        )
    }
}

/// The broker-wide response budget ([`RESPONSE_BYTES_MAX`] bytes), shared by every
/// connection's [`ResponseBudgets`].
#[derive(Clone)]
struct BrokerResponseBudget {
    semaphore: Arc<Semaphore>,
    capacity: usize,
}

impl BrokerResponseBudget {
    fn new(capacity: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Bytes held now, counting those already handed to a response still waiting for the
    /// rest of its charge.
    fn outstanding(&self) -> usize {
        self.capacity
            .saturating_sub(self.semaphore.available_permits())
    }
}

/// The budgets one connection's responses are held against: its own and the broker's. Every
/// response takes its connection's budget first, then the broker's: one order everywhere, so
/// a response never waits for bytes held by one that waits for it.
#[derive(Clone)]
struct ResponseBudgets {
    connection: Arc<Semaphore>,
    broker: Arc<Semaphore>,
    /// The smaller budget's size: no response is charged more (see [`Charge::of`]).
    most: usize,
}

impl ResponseBudgets {
    fn new(connection_capacity: usize, broker: &BrokerResponseBudget) -> Self {
        Self {
            connection: Arc::new(Semaphore::new(connection_capacity)),
            broker: broker.semaphore.clone(),
            most: connection_capacity.min(broker.capacity),
        }
    }

    /// What a response of `len` bytes is charged.
    fn charge(&self, len: usize) -> Charge {
        Charge::of(len, self.most)
    }

    /// What a fetch reserves before it is read again (see [`Charge::refetch`]).
    fn refetch_charge(&self, max_bytes: u32, answered_len: usize) -> Charge {
        Charge::refetch(max_bytes, answered_len, self.most)
    }

    /// Holds `charge` if both budgets have room for it now (and no earlier response is
    /// waiting for that room).
    fn try_hold(&self, charge: Charge) -> Option<Held> {
        let connection = self
            .connection
            .clone()
            .try_acquire_many_owned(charge.0)
            .ok()?;
        let broker = self.broker.clone().try_acquire_many_owned(charge.0).ok()?;
        Some(Held { connection, broker })
    }

    /// Holds `charge`, waiting (in order of arrival) until both budgets have room for it.
    async fn hold(&self, charge: Charge) -> Result<Held, AcquireError> {
        let connection = self.connection.clone().acquire_many_owned(charge.0).await?;
        let broker = self.broker.clone().acquire_many_owned(charge.0).await?;
        Ok(Held { connection, broker })
    }
}

/// Bytes held against both budgets; dropping it releases them.
struct Held {
    connection: OwnedSemaphorePermit,
    broker: OwnedSemaphorePermit,
}

impl Held {
    /// Keeps only `charge` (when the response turned out smaller than what was reserved for
    /// it), releasing the rest.
    fn shrink_to(&mut self, charge: Charge) {
        let excess = self
            .connection
            .num_permits()
            .saturating_sub(charge.0 as usize);
        drop(self.connection.split(excess));
        drop(self.broker.split(excess));
    }
}

async fn retention_loop(broker: Arc<Broker>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let deleted = broker.enforce_retention();
        if deleted > 0 {
            tracing::info!(segments = deleted, "retention deleted segments");
            broker
                .metrics
                .retention_segments_deleted
                .increment(deleted as u64);
        }
    }
}

async fn spawn_metrics(
    listen: SocketAddr,
    broker: Arc<Broker>,
    responses: BrokerResponseBudget,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let broker = broker.clone();
                let responses = responses.clone();
                async move {
                    broker.update_gauges();
                    broker
                        .metrics
                        .response_bytes_outstanding
                        .set(responses.outstanding() as f64);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        broker.metrics.render(),
                    )
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_charged_its_length_clamped_to_the_smaller_budget() {
        assert_eq!(Charge::of(10, 100), Charge(10));
        assert_eq!(Charge::of(100, 100), Charge(100));
        assert_eq!(Charge::of(1000, 100), Charge(100));
        assert_eq!(Charge::of(usize::MAX, usize::MAX), Charge(u32::MAX));
        let budgets = ResponseBudgets::new(60, &BrokerResponseBudget::new(40));
        assert_eq!(
            budgets.charge(50),
            Charge(40),
            "the broker's budget is the smaller"
        );
    }

    #[test]
    fn a_refetch_reserves_the_most_its_read_can_return() {
        let most = usize::MAX;
        let overhead = FETCH_RESPONSE_OVERHEAD_BYTES;
        // What max_bytes allows, when the first answer was smaller (an empty long poll).
        assert_eq!(
            Charge::refetch(1024, 0, most),
            Charge((1024 + overhead) as u32)
        );
        // The first answer, when a first batch larger than max_bytes was served whole.
        assert_eq!(Charge::refetch(1024, 5000, most), Charge(5000));
        // max_bytes clamped as the broker clamps it.
        assert_eq!(
            Charge::refetch(u32::MAX, 0, most),
            Charge((FETCH_BYTES_MAX + overhead) as u32)
        );
        assert_eq!(Charge::refetch(0, 0, most), Charge((1 + overhead) as u32));
        // Never more than the budget.
        assert_eq!(Charge::refetch(u32::MAX, 0, 4096), Charge(4096));
    }

    #[tokio::test]
    async fn a_response_waits_for_room_and_gets_it_when_another_is_released() {
        let broker = BrokerResponseBudget::new(100);
        let budgets = ResponseBudgets::new(60, &broker);
        let first = budgets.try_hold(budgets.charge(50)).expect("room for 50");
        assert_eq!(broker.outstanding(), 50);
        assert!(
            budgets.try_hold(budgets.charge(20)).is_none(),
            "only 10 left"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), budgets.hold(Charge(20)))
                .await
                .is_err(),
            "waits while the connection's budget is taken"
        );
        assert_eq!(broker.outstanding(), 50, "a wait given up holds nothing");
        drop(first);
        assert_eq!(broker.outstanding(), 0);
        let second = tokio::time::timeout(Duration::from_secs(5), budgets.hold(Charge(20)))
            .await
            .expect("room once the first is released")
            .expect("budgets stay open");
        assert_eq!(broker.outstanding(), 20);
        drop(second);
        assert_eq!(broker.outstanding(), 0);
    }

    #[tokio::test]
    async fn a_response_larger_than_the_budget_holds_all_of_it_and_is_served() {
        let broker = BrokerResponseBudget::new(100);
        let budgets = ResponseBudgets::new(60, &broker);
        let charge = budgets.charge(500);
        assert_eq!(charge, Charge(60));
        let held = tokio::time::timeout(Duration::from_secs(5), budgets.hold(charge))
            .await
            .expect("a clamped charge fits an idle budget")
            .expect("budgets stay open");
        assert_eq!(broker.outstanding(), 60);
        assert!(
            budgets.try_hold(Charge(1)).is_none(),
            "it holds the whole budget"
        );
        drop(held);
        assert!(budgets.try_hold(Charge(60)).is_some());
    }

    #[test]
    fn the_broker_budget_bounds_all_connections_together() {
        let broker = BrokerResponseBudget::new(100);
        let one = ResponseBudgets::new(60, &broker);
        let other = ResponseBudgets::new(60, &broker);
        let _held = one.try_hold(Charge(60)).expect("room on one");
        assert!(other.try_hold(Charge(50)).is_none(), "40 left broker-wide");
        assert_eq!(
            other.connection.available_permits(),
            60,
            "a failed hold keeps nothing of the connection's budget"
        );
        let _also = other.try_hold(Charge(40)).expect("room for 40");
        assert_eq!(broker.outstanding(), 100);
    }

    #[test]
    fn shrinking_a_reservation_releases_the_excess_from_both_budgets() {
        let broker = BrokerResponseBudget::new(100);
        let budgets = ResponseBudgets::new(60, &broker);
        let mut held = budgets.try_hold(Charge(50)).expect("room for 50");
        held.shrink_to(Charge(10));
        assert_eq!(broker.outstanding(), 10);
        assert_eq!(budgets.connection.available_permits(), 50);
        held.shrink_to(Charge(20));
        assert_eq!(broker.outstanding(), 10, "shrinking never grows");
        drop(held);
        assert_eq!(broker.outstanding(), 0);
        assert_eq!(budgets.connection.available_permits(), 60);
    }

    #[test]
    fn a_refetch_is_the_fetch_without_its_wait() {
        let fetch = Request::Fetch {
            topic: "t".to_owned(),
            partition: 3,
            offset: 7,
            max_bytes: 1024,
            max_wait_ms: 5000,
            min_bytes: 10,
        };
        let refetch = Refetch::of(&fetch).expect("a fetch is read again");
        assert_eq!(refetch.max_bytes, 1024);
        assert_eq!(
            refetch.request,
            Request::Fetch {
                topic: "t".to_owned(),
                partition: 3,
                offset: 7,
                max_bytes: 1024,
                max_wait_ms: 0,
                min_bytes: 10,
            }
        );
        assert!(Refetch::of(&Request::ListTopics).is_none());
    }
}
