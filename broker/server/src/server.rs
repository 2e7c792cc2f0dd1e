//! The QUIC glue: accept connections (bounded), accept streams, read frames (bounded), hand
//! requests to the [`Broker`], write responses (bounded). Plus the HTTP `/metrics` endpoint
//! and the periodic retention task.
//!
//! Response memory is bounded like request memory, for the answers that can be large. A bulk
//! answer (a fetch's, or any over [`SMALL_RESPONSE_BYTES`]) is held against its connection's
//! budget ([`CONNECTION_RESPONSE_BYTES_MAX`]) and the broker-wide one ([`RESPONSE_BYTES_MAX`])
//! from encoding until quinn has taken all of it. Otherwise a client that opens many fetch
//! streams and never reads them makes the broker keep every answer (up to 8 MiB each). Small
//! answers (acknowledgements, heartbeats, offsets, errors) are not charged: they are bounded by
//! the requests in flight, and must never wait behind other clients' bulk answers. A fetch that
//! finds the broker-wide budget full is answered `Throttled` after [`BROKER_RESPONSE_WAIT_MAX`]
//! instead of queueing behind clients that do not read. Every write has a deadline: a client
//! that takes nothing of a response for [`RESPONSE_WRITE_TIMEOUT`], or takes it slower than
//! [`RESPONSE_WRITE_RATE_MIN`], has its stream reset, so no client holds budget for good. The
//! accounting (`Charge`, `ResponseBudgets`, `write_deadline`) is kept apart from the stream glue
//! and tested on its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_broker_core::groups::GroupConfig;
use herald_metrics::{Counter, Metrics};
use herald_registry_client::RegistryClient;
use herald_wire::frame::{Frame, FrameHeader, FrameKind, FRAME_HEADER_BYTES};
use herald_wire::limits::{FETCH_BYTES_MAX, FRAME_BYTES_MAX};
use herald_wire::messages::ErrorBody;
use herald_wire::{Api, DecodeError, ErrorCode, Request, Response};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::broker::{Broker, THROTTLE_RETRY_AFTER_MS};
use crate::schema_cache::SchemaCache;
use crate::security::access;
use crate::security::{
    Security, SecurityConfig, Session, AUTHENTICATION_CLOSE_CODE, AUTHENTICATION_FAILURE_DELAY,
    AUTHENTICATION_TIMEOUT, UNAUTHENTICATED_FRAME_BYTES_MAX,
};
use crate::tls::{self, TlsSource};
use herald_wire::security::SecurityRequest;

/// Connections served at once; more are refused at the handshake.
pub const CONNECTIONS_MAX: usize = 1024;
/// Connections one source address may hold at once (IPv6 counted by /64): one host cannot
/// take every slot.
pub const CONNECTIONS_PER_SOURCE_MAX: usize = 128;
/// Request bytes one connection may have buffered (frames being read or handled); more wait.
pub const CONNECTION_READ_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(herald_wire::limits::FRAME_BYTES_MAX <= CONNECTION_READ_BYTES_MAX);
/// Requests in flight per connection (from decoding until the response is written); more are
/// answered `Throttled`.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 256;
/// Answers up to this size are not charged to the response budgets: acknowledgements,
/// heartbeats, offsets, errors, most metadata. They are bounded without them: a request's
/// in-flight permit is held until its answer is written, so one connection holds at most
/// [`INFLIGHT_REQUESTS_PER_CONNECTION_MAX`] of them (16 MiB), plus one error answer (a few KiB)
/// per open stream for requests refused before they were in flight; fewer bytes than the
/// requests it may buffer ([`CONNECTION_READ_BYTES_MAX`]), and each unread one is reset at its
/// write deadline. Charging them would make every produce acknowledgement take the broker-wide
/// semaphore (a lock shared by all connections, on the hot path) and wait behind the bulk
/// answers of clients that do not read them: one slow client would hold up everyone.
pub const SMALL_RESPONSE_BYTES: usize = 64 * 1024;
const _: () = assert!(
    INFLIGHT_REQUESTS_PER_CONNECTION_MAX * SMALL_RESPONSE_BYTES <= CONNECTION_READ_BYTES_MAX
);
/// Bulk response bytes one connection may hold encoded and not yet taken by quinn; more wait.
/// 64 MiB is eight maximal fetch responses (`FETCH_BYTES_MAX`, 8 MiB) and as much as the
/// connection-level flow-control window (`herald_quic::transport`, 64 MiB) lets a client have
/// unread: a client that reads keeps its window busy with this much, and more would only
/// queue in the broker's memory. A client that opens many fetch streams and reads none of them
/// holds this much, not 8 MiB per stream. The same size as the request side
/// ([`CONNECTION_READ_BYTES_MAX`]).
pub const CONNECTION_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bulk response bytes the whole broker may hold encoded and not yet taken by quinn. 512 MiB
/// is eight connections' full budgets (64 maximal fetch responses): busy consumers stream at
/// full window side by side. When it is full, a fetch waits at most
/// [`BROKER_RESPONSE_WAIT_MAX`] for room and is then answered `Throttled`, and small answers do
/// not wait for it at all (they are not charged): clients that do not read use up this budget,
/// not other clients' time.
///
/// What it does not count: bytes quinn has taken. quinn keeps them until the client
/// acknowledges them, up to the connection's send window (`herald_quic::transport`, 64 MiB).
/// A client that acknowledges but does not read keeps them in its own memory, not the
/// broker's; one that withholds acknowledgements keeps up to a send window of them in the
/// broker. So response memory is bounded by this budget, plus one send window per connection
/// ([`CONNECTIONS_MAX`] × 64 MiB = 64 GiB at worst, a bound set by quinn's flow and congestion
/// control, not by this budget), plus the small answers (see [`SMALL_RESPONSE_BYTES`]), plus
/// one fetch answer per runtime worker thread between its read and its charge.
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// A response write that makes no progress for this long is given up: the stream is reset and
/// the response's budget released. A client that reads nothing of an answer for 30 s (ten
/// keep-alive periods of `herald_quic::transport`) is not reading it at all, and must not hold
/// its connection's budget (and the other streams waiting for it) for good. It is also the
/// least a write is given in all (see [`RESPONSE_WRITE_RATE_MIN`]).
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest a client may take a response, in bytes per second: a write of `len` bytes is
/// reset after `max(RESPONSE_WRITE_TIMEOUT, len / RESPONSE_WRITE_RATE_MIN)` in all (an 8 MiB
/// answer: 128 s) however it progresses, so that a slow link still reads a whole answer but a
/// client granting a few bytes of flow-control credit just before each no-progress timeout
/// does not hold the answer's budget for good.
pub const RESPONSE_WRITE_RATE_MIN: usize = 64 * 1024;
/// How long a fetch waits for room in the broker-wide budget before it is answered
/// `Throttled`. (Its connection's own budget it waits for as long as that takes: those are the
/// client's own unread answers, back-pressure.) Room normally comes within milliseconds, as
/// writes to clients that read complete; a budget still full after a second is held by clients
/// that do not read, whose writes end only at their deadlines (30 s or more), and other clients
/// are better told to come back (consumers retry after `retry_after_ms`, with backoff) than
/// queued behind them for that long, past their own request timeout (30 s). A fetch is sized
/// by what it may return (its `max_bytes`), not known before it is read: while the budget is
/// full, even a consumer at the end of its partition is told to come back.
pub const BROKER_RESPONSE_WAIT_MAX: Duration = Duration::from_secs(1);
// Every frame fits in one connection's budget, so clamping a charge to the budget (see
// `Charge::of`) only ever concerns a budget configured smaller than a frame.
const _: () = assert!(FRAME_BYTES_MAX <= CONNECTION_RESPONSE_BYTES_MAX);
const _: () = assert!(CONNECTION_RESPONSE_BYTES_MAX <= RESPONSE_BYTES_MAX);
const _: () = assert!(SMALL_RESPONSE_BYTES < FETCH_BYTES_MAX);
// Charges are semaphore permits, acquired by the `u32`.
const _: () = assert!(RESPONSE_BYTES_MAX <= u32::MAX as usize);
/// What a fetch answer adds to its batches: the frame header (16 bytes) and the `Fetched`
/// head (status, high watermark, log start, length: 22 bytes), rounded up.
const FETCH_RESPONSE_OVERHEAD_BYTES: usize = 64;
/// The application error code of a stream reset because the client did not take its response
/// in time (see [`RESPONSE_WRITE_TIMEOUT`] and [`RESPONSE_WRITE_RATE_MIN`]).
const WRITE_TIMEOUT_RESET_CODE: quinn::VarInt = quinn::VarInt::from_u32(1);

/// How to run a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Schema registry for schema-ID validation; topics that validate need it.
    pub registry_url: Option<String>,
    /// PEM file of certificates to trust for an `https://` registry, besides the platform's
    /// root certificates.
    pub registry_ca: Option<PathBuf>,
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
    /// A response write that makes no progress this long resets its stream, and no write is
    /// reset sooner than this (see [`RESPONSE_WRITE_TIMEOUT`], the default, and
    /// [`RESPONSE_WRITE_RATE_MIN`]).
    pub response_write_timeout: Duration,
    /// Authentication (on by default), super users, ACL seed, client certificates.
    pub security: SecurityConfig,
    /// Set: this broker is a node of a replicated cluster (see `broker::cluster`).
    pub cluster: Option<crate::broker::ClusterConfig>,
}

impl BrokerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            registry_url: None,
            registry_ca: None,
            metrics_listen: None,
            tls: TlsSource::Generated,
            retention_check_interval: Duration::from_secs(30),
            groups: GroupConfig::default(),
            producer_expiry: Duration::from_millis(crate::broker::PRODUCER_EXPIRY_MS as u64),
            response_write_timeout: RESPONSE_WRITE_TIMEOUT,
            security: SecurityConfig::default(),
            cluster: None,
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
    #[error("security: {0}")]
    Security(#[from] crate::security::SecurityError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::broker::ClusterError),
}

/// Opens the data directory, binds, and serves until `shutdown` completes.
pub async fn serve(
    config: BrokerConfig,
    on_bound: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Before the broker opens its partitions: the file storage sizes its cache of read handles
    // from the limit (see `fs`).
    crate::fs::raise_open_files_limit();
    let identity = tls::identity(&config.data_dir, &config.tls)?;
    let registry = config
        .registry_url
        .as_deref()
        .map(|url| {
            let client = RegistryClient::new(url);
            match &config.registry_ca {
                Some(ca) => client.and_then(|client| client.with_ca_file(ca)),
                None => client,
            }
        })
        .transpose()
        .map_err(|e| ServeError::Registry(e.to_string()))?;
    let broker = Arc::new(Broker::open(
        &config.data_dir,
        SchemaCache::new(registry),
        Metrics::new(),
        config.groups,
        config.producer_expiry.as_millis().min(i64::MAX as u128) as i64,
    )?);
    let security = Arc::new(Security::open(&config.data_dir, &config.security)?);
    if !security.required() {
        tracing::warn!("AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this broker may read, write and delete every topic and group; use it for throwaway setups only");
    }
    let (socket, receive_buffer) =
        herald_quic::bind_udp(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    if receive_buffer < herald_quic::SOCKET_RECEIVE_BUFFER_WARN_BYTES {
        tracing::warn!(
            receive_buffer,
            wanted = herald_quic::SOCKET_BUFFER_BYTES,
            "the kernel granted a small UDP receive buffer: bursts of large requests may be dropped and resent (raise net.core.rmem_max to {} or more)",
            herald_quic::SOCKET_BUFFER_BYTES
        );
    }
    let endpoint = herald_quic::endpoint(
        quinn::EndpointConfig::new(tls::reset_key(&identity)),
        Some(tls::server_config(
            &identity,
            config.security.client_ca.as_deref(),
        )?),
        socket,
    )
    .map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = endpoint.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let cluster = match &config.cluster {
        Some(cluster_config) => {
            let cluster = crate::broker::Cluster::start(
                cluster_config,
                addr,
                &config.data_dir,
                config.producer_expiry.as_millis().min(i64::MAX as u128) as i64,
            )
            .await?;
            broker.attach_cluster(cluster.clone());
            // The cluster's ACLs are the controller's: this node's store follows them, and a
            // seed file's entries are proposed to the controller.
            let seed = match &config.security.acl_seed {
                Some(path) => crate::security::acls::read_seed(path)
                    .map_err(crate::security::SecurityError::from)?,
                None => Vec::new(),
            };
            cluster.serve(&broker, seed);
            tokio::spawn(follow_cluster_acls(cluster.clone(), security.clone()));
            Some(cluster)
        }
        None => None,
    };
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
    let per_source = herald_auth::source::SourceSlots::new(CONNECTIONS_PER_SOURCE_MAX);
    let source_refusals = herald_auth::source::RefusalLog::default();
    tokio::pin!(shutdown);
    // A node the cluster refuses (removed) stops serving: it is no longer part of it.
    let refused = {
        let cluster = cluster.clone();
        async move {
            match cluster {
                Some(cluster) => cluster.refused().await,
                None => std::future::pending().await,
            }
        }
    };
    tokio::pin!(refused);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            reason = &mut refused => {
                tracing::error!(reason, "the cluster refused this node: stopping");
                outcome = Err(ServeError::Cluster(crate::broker::ClusterError::Refused(reason)));
                break;
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    broker.metrics.connections_refused.increment(1);
                    incoming.refuse();
                    continue;
                };
                let Some(slot) = per_source.take(incoming.remote_address().ip()) else {
                    broker.metrics.connections_refused.increment(1);
                    if let Some(unlogged) = source_refusals.refused(std::time::Instant::now()) {
                        tracing::warn!(peer = %incoming.remote_address(), unlogged, "{CONNECTIONS_PER_SOURCE_MAX} connections open from this source: refusing another (`unlogged`: refusals since the last line)");
                    }
                    incoming.refuse();
                    continue;
                };
                let broker = broker.clone();
                let security = security.clone();
                let responses = responses.clone();
                let write_timeout = config.response_write_timeout;
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(incoming, broker, security, responses, write_timeout).await {
                        tracing::debug!(%error, "connection ended");
                    }
                    drop(slot);
                    drop(permit);
                });
            }
        }
    }
    retention.abort();
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    endpoint.close(0u32.into(), b"shutting down");
    endpoint.wait_idle().await;
    tracing::info!("broker stopped");
    outcome
}

/// What the streams of one connection share.
struct ConnectionState {
    broker: Arc<Broker>,
    security: Arc<Security>,
    /// Who is asking, once known.
    session: Session,
    connection: quinn::Connection,
    /// Requests in flight: [`INFLIGHT_REQUESTS_PER_CONNECTION_MAX`] permits.
    inflight: Arc<Semaphore>,
    /// Request bytes buffered: [`CONNECTION_READ_BYTES_MAX`] permits.
    read_budget: Arc<Semaphore>,
    /// Bulk response bytes held: this connection's budget and the broker's.
    responses: ResponseBudgets,
    /// See [`BrokerConfig::response_write_timeout`].
    write_timeout: Duration,
}

async fn serve_connection(
    incoming: quinn::Incoming,
    broker: Arc<Broker>,
    security: Arc<Security>,
    responses: BrokerResponseBudget,
    write_timeout: Duration,
) -> Result<(), quinn::ConnectionError> {
    let connection = incoming.await?;
    let subject = tls::client_subject(&connection);
    let session = security.session(connection.remote_address().ip(), subject.as_deref());
    let state = Arc::new(ConnectionState {
        broker,
        security,
        session,
        connection: connection.clone(),
        inflight: Arc::new(Semaphore::new(INFLIGHT_REQUESTS_PER_CONNECTION_MAX)),
        read_budget: Arc::new(Semaphore::new(CONNECTION_READ_BYTES_MAX)),
        responses: ResponseBudgets::new(CONNECTION_RESPONSE_BYTES_MAX, &responses),
        write_timeout,
    });
    if state.security.required() && state.session.principal().is_none() {
        // A connection that has not authenticated in time is closed: it would hold one of the
        // broker's connection slots for nothing.
        let state = Arc::downgrade(&state);
        let connection = connection.clone();
        tokio::spawn(async move {
            tokio::time::sleep(AUTHENTICATION_TIMEOUT).await;
            if let Some(state) = state.upgrade() {
                if state.session.principal().is_none() {
                    connection.close(
                        AUTHENTICATION_CLOSE_CODE.into(),
                        b"not authenticated in time",
                    );
                }
            }
        });
    }
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
    #[error("cannot decode the fetch again: {0}")]
    Redecode(DecodeError),
    #[error("cannot write the response: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the client did not take its response within {0:?}; the stream was reset")]
    WriteTimedOut(Duration),
    #[error("the client stopped the stream, or the connection was lost, while its response waited for budget")]
    Abandoned,
    #[error("the response budget is closed: {0}")]
    Budget(#[from] AcquireError),
    #[error("cannot finish the stream: {0}")]
    Finish(#[from] quinn::ClosedStream),
}

/// What a stream answers a frame with.
enum Reply {
    /// A request in flight, for the broker to handle.
    Handle(Request),
    /// An answer made without the broker (an error, or `Throttled`).
    Ready(Response),
}

/// Serves frames on one stream, in order, until the client finishes it.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn: Arc<ConnectionState>,
) -> Result<(), StreamError> {
    loop {
        // Until the connection has authenticated, only frames the size of an authentication
        // step are read: a stranger gets no room to make the broker buffer large requests.
        let frame_most = match conn.session.principal() {
            Some(_) => FRAME_BYTES_MAX,
            None => UNAUTHENTICATED_FRAME_BYTES_MAX,
        };
        let (frame, _read_permit) = match next_frame(&mut recv, &conn.read_budget, frame_most).await
        {
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
                let _ = respond(&mut send, &conn, header, Reply::Ready(response), &[]).await;
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
        let mut body = frame.body;
        let (reply, _inflight) = match (frame.header.kind, Api::from_code(frame.header.api)) {
            (FrameKind::Request, Ok(api)) => match decode_request(api, &mut body) {
                Ok(Request::Security(SecurityRequest::Authenticate { mechanism, message })) => {
                    let step = conn.security.authenticate(&conn.session, &mechanism, &message, std::time::Instant::now(), &conn.broker.metrics);
                    if step.close {
                        // At once: a connection that failed too often gets no further tries
                        // while a delayed answer is pending.
                        conn.connection.close(AUTHENTICATION_CLOSE_CODE.into(), b"too many failed authentications");
                        return Ok(());
                    }
                    if step.failed {
                        tokio::time::sleep(AUTHENTICATION_FAILURE_DELAY).await;
                    }
                    respond(&mut send, &conn, header, Reply::Ready(step.response), &body).await?;
                    continue;
                }
                Ok(request) => match conn.security.admit(&conn.session, &request, &conn.broker.metrics) {
                    Err(refused) => (Reply::Ready(refused), None),
                    Ok(()) => match conn.inflight.clone().try_acquire_owned() {
                    Ok(permit) => (Reply::Handle(request), Some(permit)),
                    Err(_) => (Reply::Ready(Response::Error(ErrorBody { code: ErrorCode::Throttled, retry_after_ms: THROTTLE_RETRY_AFTER_MS, message: format!("more than {INFLIGHT_REQUESTS_PER_CONNECTION_MAX} requests in flight on this connection") })), None),
                    },
                },
                Err(error) => (Reply::Ready(Response::error(ErrorCode::InvalidRequest, format!("bad {} request: {error}", api.name()))), None),
            },
            (FrameKind::Response, _) => (Reply::Ready(Response::error(ErrorCode::InvalidRequest, "clients send requests, not responses")), None),
            (_, Err(error)) => (Reply::Ready(Response::error(ErrorCode::UnsupportedVersion, error.to_string())), None),
        };
        respond(&mut send, &conn, header, reply, &body).await?;
    }
    send.finish()?;
    Ok(())
}

/// Decodes a request frame's body. A produce's batch is taken from it without a copy (the
/// broker stamps it in place), leaving `body` empty; a fetch's body is kept, to be decoded
/// again (see [`Refetch`]).
fn decode_request(api: Api, body: &mut Vec<u8>) -> Result<Request, DecodeError> {
    match api {
        Api::Fetch => Request::decode(api, body),
        _ => Request::decode_owned(api, std::mem::take(body)),
    }
}

/// The next frame on a stream, or `None` when the client finished the stream between frames.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    read_budget: &Arc<Semaphore>,
    most: usize,
) -> Result<Option<(Frame, OwnedSemaphorePermit)>, String> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(error.to_string()),
    }
    let (length, header) = Frame::decode_head(head).map_err(|e| e.to_string())?;
    if length > most {
        return Err(format!(
            "a frame body of {length} bytes before authenticating; at most {most} until then"
        ));
    }
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
    Ok(Some((Frame { header, body }, permit)))
}

/// Answers on `send`: gets the answer (from the broker for a request in flight), holds its
/// bytes against the response budgets if it is bulk, writes it, and releases the bytes once
/// quinn has taken them all, or the write failed or missed its deadline. `body` is the
/// request frame's body, for a fetch to be decoded again (see [`Refetch`]).
async fn respond(
    send: &mut quinn::SendStream,
    conn: &ConnectionState,
    header: FrameHeader,
    reply: Reply,
    body: &[u8],
) -> Result<(), StreamError> {
    let (encoded, held) = match reply {
        Reply::Handle(request) => answer(send, conn, header, request, body).await?,
        Reply::Ready(response) => {
            let encoded = Encoded::new(header, response)?;
            let held = hold_answer(send, &conn.responses, encoded.len()).await?;
            (encoded, held)
        }
    };
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

/// Holds an answer of `len` bytes already in hand that is not read again (anything but a
/// fetch's): nothing if it is small (see [`SMALL_RESPONSE_BYTES`]), otherwise its charge,
/// waiting for room in both budgets unless the client stops the stream. Bulk ones are rare
/// (large metadata listings); they wait with their bytes in hand, since throwing one away and
/// asking the broker again could repeat a side effect.
async fn hold_answer(
    send: &quinn::SendStream,
    budgets: &ResponseBudgets,
    len: usize,
) -> Result<Option<Held>, StreamError> {
    let Some(charge) = budgets.charge(len) else {
        return Ok(None);
    };
    if let Some(held) = budgets.try_hold(charge) {
        return Ok(Some(held));
    }
    unless_stopped(send, budgets.hold(charge)).await.map(Some)
}

/// Has the broker answer `request` and holds the answer's bytes against the budgets (nothing
/// for a small answer).
///
/// A fetch's answer can be 8 MiB, and is never waited for in hand (as many as there are
/// waiting streams, uncounted): when the budgets have no room for the most the fetch can
/// return (or it does not wait anyway), that much is reserved first and the fetch is read
/// into it, without its long-poll wait (holding budget while waiting for data would lock out
/// the answers that are ready); see [`fetch_into_reservation`]. A fetch that found room
/// long-polls as asked and is charged when it returns; if another stream took the room
/// meanwhile, its answer is dropped and read again into a reservation.
///
/// So a fetch is read twice only when it was read without a reservation and its answer then
/// found no room (another stream took it after the check, or a first batch larger than a
/// small `max_bytes` made the answer bulk), or when such a batch was appended at the offset
/// between a reservation and its read. It is then counted twice in the per-topic records-out
/// and bytes-out counters and the fetch duration histogram, which `Broker::fetch` records as it
/// reads; counting only the answer sent needs `Broker::fetch` to hand its counts back instead.
///
/// What is not counted: an answer between its read and its charge, at most one per runtime
/// worker thread (the read returns and is charged with no await between them).
async fn answer(
    send: &quinn::SendStream,
    conn: &ConnectionState,
    header: FrameHeader,
    mut request: Request,
    body: &[u8],
) -> Result<(Encoded, Option<Held>), StreamError> {
    let budgets = &conn.responses;
    let fetch = Refetch::of(&request, body);
    if let Some(fetch) = fetch {
        if is_bulk(fetch_answer_bytes_most(fetch.max_bytes, 0)) {
            let reserve = budgets.refetch_charge(fetch.max_bytes, 0);
            if !fetch.long_poll || !budgets.has_room(reserve) {
                without_wait(&mut request);
                return fetch_into_reservation(send, conn, header, fetch, Some(request), reserve)
                    .await;
            }
        }
    }
    let encoded = Encoded::new(header, handle(conn, request).await)?;
    let Some(fetch) = fetch else {
        let held = hold_answer(send, budgets, encoded.len()).await?;
        return Ok((encoded, held));
    };
    let Some(charge) = budgets.charge(encoded.len()) else {
        return Ok((encoded, None));
    };
    if let Some(held) = budgets.try_hold(charge) {
        return Ok((encoded, Some(held)));
    }
    // Another stream took the room since the check (or a batch larger than `max_bytes` made
    // the answer bulk): not waited for in hand, but read again into a reservation.
    let reserve = budgets.refetch_charge(fetch.max_bytes, encoded.len());
    drop(encoded);
    fetch_into_reservation(send, conn, header, fetch, None, reserve).await
}

/// Handles an admitted request: ACL administration here, everything else by the broker, with
/// list answers kept to what the principal may describe and a deleted topic's ACL entries
/// removed with it.
async fn handle(conn: &ConnectionState, request: Request) -> Response {
    match request {
        // A cluster's ACLs and users change through its controller; listings come from
        // this node's copy, which follows it.
        Request::Security(
            request @ (herald_wire::security::SecurityRequest::CreateAcls { .. }
            | herald_wire::security::SecurityRequest::DeleteAcls { .. }
            | herald_wire::security::SecurityRequest::AlterUser { .. }
            | herald_wire::security::SecurityRequest::DeleteUser { .. }),
        ) if conn.broker.cluster().is_some() => {
            let Some(cluster) = conn.broker.cluster() else {
                return conn.security.administer(request);
            };
            let answer = cluster.administer(request).await;
            follow_cluster_security(&cluster.image(), &conn.security);
            answer
        }
        Request::Security(request) => conn.security.administer(request),
        Request::InitProducer { name } => {
            let owner = conn
                .session
                .principal()
                .filter(|_| conn.security.required());
            conn.broker.init_producer(&name, owner).await
        }
        request => {
            let listing = access::listing(&request);
            // (A cluster's controller removes a deleted topic's grants itself.)
            if let Request::DeleteTopic { name } = &request {
                if conn.broker.cluster().is_some() {
                } else if let Err(refused) = conn.security.deleting_topic(name) {
                    return refused;
                }
            }
            if let Request::Produce { batch, .. } = &request {
                if let Some(header) = herald_wire::BatchHeader::read(batch) {
                    if let Err(refused) = conn.security.may_use_producer_id(
                        &conn.session,
                        header.producer_id,
                        |id| conn.broker.producer_owner(id),
                        &conn.broker.metrics,
                    ) {
                        return refused;
                    }
                }
            }
            let describes_group = matches!(
                &request,
                Request::Group(herald_wire::groups::GroupRequest::Describe { .. })
            );
            // A fetch may wait (long poll) up to a minute: a grant revoked meanwhile must not
            // let its answer through. The check is the connection's cached decision.
            let recheck = match &request {
                Request::Fetch { .. } => Some(request.clone()),
                _ => None,
            };
            let response = conn.broker.handle(request).await;
            if let Some(fetch) = recheck {
                if let Err(refused) =
                    conn.security
                        .admit(&conn.session, &fetch, &conn.broker.metrics)
                {
                    return refused;
                }
            }
            let response = if describes_group {
                conn.security.filter_description(&conn.session, response)
            } else {
                response
            };
            match listing {
                Some(listing) => conn.security.filter(&conn.session, listing, response),
                None => response,
            }
        }
    }
}

/// Reserves `reserve` (waiting for room: back-pressure), then reads the fetch into it: the
/// fetch `request` without its wait, or, when `None`, decoded again from its frame. The
/// answer keeps only what it needs of the reservation, or none of it if it is small.
///
/// A fetch waits for its connection's budget as long as that takes (those are its own
/// client's unread answers), but for the broker-wide budget only [`BROKER_RESPONSE_WAIT_MAX`]:
/// then it is answered `Throttled`, a small answer that waits for nothing.
async fn fetch_into_reservation(
    send: &quinn::SendStream,
    conn: &ConnectionState,
    header: FrameHeader,
    fetch: Refetch<'_>,
    mut request: Option<Request>,
    mut reserve: Charge,
) -> Result<(Encoded, Option<Held>), StreamError> {
    let budgets = &conn.responses;
    loop {
        let held = match budgets.try_hold(reserve) {
            Some(held) => Some(held),
            None => {
                unless_stopped(send, budgets.hold_within(reserve, BROKER_RESPONSE_WAIT_MAX)).await?
            }
        };
        let Some(mut held) = held else {
            tracing::debug!(
                bytes = reserve.0,
                "fetch throttled: the broker-wide response budget stayed full"
            );
            return Ok((Encoded::new(header, broker_budget_full())?, None));
        };
        let request = match request.take() {
            Some(request) => request,
            None => fetch.request().map_err(StreamError::Redecode)?,
        };
        let encoded = Encoded::new(header, conn.broker.handle(request).await)?;
        match budgets.charge(encoded.len()) {
            // Small after all: not charged, and the reservation (`held`) released here.
            None => return Ok((encoded, None)),
            Some(needed) if needed <= reserve => {
                held.shrink_to(needed);
                return Ok((encoded, Some(held)));
            }
            // Larger than reserved: a first batch larger than `max_bytes` (served whole) is at
            // the offset, appended since the answer that sized the reservation if there was
            // one. Reserve for it and read again: each round reserves more, up to the budget,
            // which any answer fits.
            Some(needed) => reserve = needed,
        }
    }
}

/// The answer to a fetch that found the broker-wide response budget full for
/// [`BROKER_RESPONSE_WAIT_MAX`].
fn broker_budget_full() -> Response {
    Response::Error(ErrorBody {
        code: ErrorCode::Throttled,
        retry_after_ms: THROTTLE_RETRY_AFTER_MS,
        message: format!(
            "the broker's response budget stayed full for {} ms",
            BROKER_RESPONSE_WAIT_MAX.as_millis()
        ),
    })
}

/// Waits for `hold`, unless the client stops the stream or the connection is lost meanwhile:
/// no one would read the answer, and the place in the queue is given up.
async fn unless_stopped<T>(
    send: &quinn::SendStream,
    hold: impl Future<Output = Result<T, AcquireError>>,
) -> Result<T, StreamError> {
    let stopped = send.stopped();
    tokio::select! {
        held = hold => Ok(held?),
        _ = stopped => Err(StreamError::Abandoned),
    }
}

/// Writes an encoded response; a fetch's batches are handed to quinn as they are, uncopied.
/// Each write waits until the client's flow control takes more. The stream is reset (counted
/// in `timeouts`), and the response's budget released, when the client takes nothing for
/// `stall`, or has not taken all of it by its deadline (see [`write_deadline`]): a client
/// that does not read, or reads a trickle, does not hold budget for good.
async fn write_response(
    send: &mut quinn::SendStream,
    encoded: Encoded,
    stall: Duration,
    timeouts: &Counter,
) -> Result<(), StreamError> {
    let started = Instant::now();
    let deadline = saturating_after(started, write_deadline(encoded.len(), stall));
    let (mut chunks, count) = encoded.into_chunks();
    let mut written: usize = 0;
    while written < count {
        let give_up = deadline.min(saturating_after(Instant::now(), stall));
        match tokio::time::timeout_at(give_up, send.write_chunks(&mut chunks[written..count])).await
        {
            Ok(progress) => written += progress?.chunks,
            Err(_) => {
                timeouts.increment(1);
                // Fails only on a stream already finished or reset, which the write would
                // have reported instead of waiting.
                let _ = send.reset(WRITE_TIMEOUT_RESET_CODE);
                return Err(StreamError::WriteTimedOut(started.elapsed()));
            }
        }
    }
    Ok(())
}

/// How long writing a response of `len` bytes may take in all: `floor` (the no-progress
/// timeout), or what [`RESPONSE_WRITE_RATE_MIN`] needs for it if longer.
fn write_deadline(len: usize, floor: Duration) -> Duration {
    let at_min_rate =
        Duration::from_millis((len as u64).saturating_mul(1000) / RESPONSE_WRITE_RATE_MIN as u64);
    floor.max(at_min_rate)
}

/// `from + after`, or about thirty years from `from` where that overflows (as tokio does for a
/// timeout too long to represent).
fn saturating_after(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// A response frame ready to write: the frame header with the body's head, and a fetch's
/// batches (sent as they are, uncopied).
struct Encoded {
    head: Vec<u8>,
    batches: Option<Bytes>,
}

impl Encoded {
    fn new(header: FrameHeader, response: Response) -> Result<Self, DecodeError> {
        let (head, batches) = Frame::encode_with_tail(header, |out| response.encode_split(out))?;
        Ok(Self { head, batches })
    }

    /// The frame's length on the wire, length prefix included.
    fn len(&self) -> usize {
        self.head.len() + self.batches.as_ref().map_or(0, Bytes::len)
    }

    /// The chunks to hand quinn, and how many of them count: the head, then the batches if
    /// any. A fixed array: writing allocates no list of chunks.
    fn into_chunks(self) -> ([Bytes; 2], usize) {
        match self.batches {
            Some(batches) if !batches.is_empty() => ([Bytes::from(self.head), batches], 2),
            _ => ([Bytes::from(self.head), Bytes::new()], 1),
        }
    }
}

/// A fetch as its answer's accounting sees it: the most it may return, whether it long-polls,
/// and the frame body it was decoded from, to decode it again only when it must be read again
/// (rare), instead of copying it (its topic name) on every fetch.
#[derive(Clone, Copy)]
struct Refetch<'a> {
    body: &'a [u8],
    max_bytes: u32,
    long_poll: bool,
}

impl<'a> Refetch<'a> {
    /// The fetch `request`, decoded from `body`; `None` for other requests (never read again).
    fn of(request: &Request, body: &'a [u8]) -> Option<Self> {
        match request {
            Request::Fetch {
                max_bytes,
                max_wait_ms,
                ..
            } => Some(Self {
                body,
                max_bytes: *max_bytes,
                long_poll: *max_wait_ms > 0,
            }),
            _ => None,
        }
    }

    /// The fetch decoded again from its frame, without its wait.
    fn request(&self) -> Result<Request, DecodeError> {
        let mut request = Request::decode(Api::Fetch, self.body)?;
        without_wait(&mut request);
        Ok(request)
    }
}

/// Drops a fetch's long-poll wait: it answers with what is there now.
fn without_wait(request: &mut Request) {
    if let Request::Fetch { max_wait_ms, .. } = request {
        *max_wait_ms = 0;
    }
}

/// Whether an answer of `len` bytes is charged to the response budgets (see
/// [`SMALL_RESPONSE_BYTES`]).
fn is_bulk(len: usize) -> bool {
    len > SMALL_RESPONSE_BYTES
}

/// The most a fetch of `max_bytes` can answer, frame included, given that a read at the same
/// offset answered `answered_len` bytes: `max_bytes` (clamped as the broker clamps it) plus
/// the frame's overhead, or the answer already read if larger (a first batch larger than
/// `max_bytes` is served whole, and is there again).
fn fetch_answer_bytes_most(max_bytes: u32, answered_len: usize) -> usize {
    let payload = (max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
    answered_len.max(payload + FETCH_RESPONSE_OVERHEAD_BYTES)
}

/// What a bulk response is charged against the response budgets, in bytes (semaphore
/// permits). Only arithmetic: the rules, kept apart from the semaphores and streams that
/// follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Charge(u32);

impl Charge {
    /// A response of `len` bytes is charged its length, but never more than `most` (the
    /// smaller budget): a larger response is still served, holding all of the budget, instead
    /// of waiting for room that can never be.
    fn of(len: usize, most: usize) -> Self {
        Self(len.min(most).min(u32::MAX as usize) as u32)
    }

    /// What a fetch reserves before it is read (again): the most that read can return (see
    /// [`fetch_answer_bytes_most`]).
    fn refetch(max_bytes: u32, answered_len: usize, most: usize) -> Self {
        Self::of(fetch_answer_bytes_most(max_bytes, answered_len), most)
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

/// The budgets one connection's bulk responses are held against: its own and the broker's.
/// Every response takes its connection's budget first, then the broker's: one order
/// everywhere, so a response never waits for bytes held by one that waits for it.
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

    /// What a response of `len` bytes is charged; `None` for a small one, which is not (see
    /// [`SMALL_RESPONSE_BYTES`]).
    fn charge(&self, len: usize) -> Option<Charge> {
        is_bulk(len).then(|| Charge::of(len, self.most))
    }

    /// What a fetch reserves before it is read (see [`Charge::refetch`]).
    fn refetch_charge(&self, max_bytes: u32, answered_len: usize) -> Charge {
        Charge::refetch(max_bytes, answered_len, self.most)
    }

    /// Whether both budgets have room for `charge` now. Only a hint (another stream may take
    /// the room next): it decides whether a fetch reserves before it reads.
    fn has_room(&self, charge: Charge) -> bool {
        let needed = charge.0 as usize;
        self.connection.available_permits() >= needed && self.broker.available_permits() >= needed
    }

    /// Holds `charge` if both budgets have room for it now.
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

    /// Holds `charge`, waiting as long as it takes for the connection's budget but at most
    /// `broker_wait` for the broker's; `None` (holding nothing) if the broker's had no room
    /// by then.
    async fn hold_within(
        &self,
        charge: Charge,
        broker_wait: Duration,
    ) -> Result<Option<Held>, AcquireError> {
        let connection = self.connection.clone().acquire_many_owned(charge.0).await?;
        let broker = self.broker.clone().acquire_many_owned(charge.0);
        match tokio::time::timeout(broker_wait, broker).await {
            Ok(broker) => Ok(Some(Held {
                connection,
                broker: broker?,
            })),
            Err(_) => Ok(None),
        }
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

/// Keeps this node's ACL store the same as the cluster's (every change the controller's log
/// makes, made here), until the node stops.
async fn follow_cluster_acls(cluster: Arc<crate::broker::Cluster>, security: Arc<Security>) {
    let mut image = cluster.image_watch();
    loop {
        let current = image.borrow_and_update().clone();
        follow_cluster_security(&current, &security);
        if image.changed().await.is_err() {
            return;
        }
    }
}

/// Takes the cluster's ACL entries and users as `image` has them.
fn follow_cluster_security(image: &herald_broker_core::cluster::ClusterImage, security: &Security) {
    if let Err(error) = security.acls().follow(image.acls(), image.next_offset()) {
        tracing::error!(%error, "the cluster's ACL entries could not be taken");
    }
    security.follow_users(image.users(), image.next_offset());
    security.mirror_cluster(image);
}

async fn retention_loop(broker: Arc<Broker>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        // A cluster's partitions purge through Raft (whole segments, every replica alike).
        if let Some(cluster) = broker.cluster().cloned() {
            cluster.enforce_retention().await;
        }
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
            budgets.charge(SMALL_RESPONSE_BYTES + 1),
            Some(Charge(40)),
            "the broker's budget is the smaller"
        );
    }

    #[test]
    fn small_answers_are_not_charged() {
        let budgets = ResponseBudgets::new(
            CONNECTION_RESPONSE_BYTES_MAX,
            &BrokerResponseBudget::new(RESPONSE_BYTES_MAX),
        );
        assert_eq!(budgets.charge(0), None);
        assert_eq!(budgets.charge(100), None, "an acknowledgement");
        assert_eq!(budgets.charge(SMALL_RESPONSE_BYTES), None);
        assert_eq!(
            budgets.charge(SMALL_RESPONSE_BYTES + 1),
            Some(Charge((SMALL_RESPONSE_BYTES + 1) as u32))
        );
        // A fetch is bulk by what it may return, not by what it returned.
        assert!(is_bulk(fetch_answer_bytes_most(FETCH_BYTES_MAX as u32, 0)));
        assert!(!is_bulk(fetch_answer_bytes_most(1024, 0)));
        assert!(is_bulk(fetch_answer_bytes_most(
            1024,
            SMALL_RESPONSE_BYTES + 1
        )));
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
        let first = budgets.try_hold(Charge(50)).expect("room for 50");
        assert_eq!(broker.outstanding(), 50);
        assert!(budgets.try_hold(Charge(20)).is_none(), "only 10 left");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), budgets.hold(Charge(20)))
                .await
                .is_err(),
            "waits while the connection's budget is taken"
        );
        // The wait was handed the 10 permits left before it was given up: it returned them.
        assert_eq!(
            budgets.connection.available_permits(),
            10,
            "a wait given up holds nothing"
        );
        assert_eq!(broker.outstanding(), 50);
        drop(first);
        assert_eq!(broker.outstanding(), 0);
        assert_eq!(budgets.connection.available_permits(), 60);
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
        let charge = budgets
            .charge(SMALL_RESPONSE_BYTES * 2)
            .expect("a bulk answer is charged");
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
        assert!(!other.has_room(Charge(50)), "no room broker-wide");
        assert!(other.has_room(Charge(40)));
        assert!(!one.has_room(Charge(1)), "no room on its connection");
        let _also = other.try_hold(Charge(40)).expect("room for 40");
        assert_eq!(broker.outstanding(), 100);
    }

    #[tokio::test]
    async fn a_fetch_waits_for_the_broker_budget_only_so_long() {
        let broker = BrokerResponseBudget::new(100);
        let one = ResponseBudgets::new(60, &broker);
        let other = ResponseBudgets::new(60, &broker);
        let held = one.try_hold(Charge(60)).expect("room on one");
        let given_up = tokio::time::timeout(
            Duration::from_secs(5),
            other.hold_within(Charge(50), Duration::from_millis(20)),
        )
        .await
        .expect("the broker-wide wait is bounded")
        .expect("budgets stay open");
        assert!(given_up.is_none(), "no room broker-wide within the wait");
        assert_eq!(
            other.connection.available_permits(),
            60,
            "a fetch given up holds nothing of its connection's budget"
        );
        assert_eq!(
            broker.outstanding(),
            60,
            "nor of the broker's (the 40 left were handed to the wait, and returned)"
        );
        drop(held);
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            other.hold_within(Charge(50), Duration::from_secs(5)),
        )
        .await
        .expect("room at once")
        .expect("budgets stay open");
        assert!(got.is_some());
        assert_eq!(broker.outstanding(), 50);
    }

    #[tokio::test]
    async fn a_fetch_waits_for_its_connection_budget_as_long_as_it_takes() {
        let broker = BrokerResponseBudget::new(100);
        let budgets = ResponseBudgets::new(60, &broker);
        let first = budgets.try_hold(Charge(50)).expect("room for 50");
        // The broker's budget has room; the connection's does not: the short broker-wide
        // bound does not apply, and the wait goes on (back-pressure on the client itself).
        assert!(
            tokio::time::timeout(
                Duration::from_millis(50),
                budgets.hold_within(Charge(20), Duration::from_millis(1)),
            )
            .await
            .is_err(),
            "still waiting for the connection's budget"
        );
        assert_eq!(budgets.connection.available_permits(), 10);
        drop(first);
        let held = tokio::time::timeout(
            Duration::from_secs(5),
            budgets.hold_within(Charge(20), Duration::from_millis(1)),
        )
        .await
        .expect("room once the first is released")
        .expect("budgets stay open");
        assert!(held.is_some());
        assert_eq!(broker.outstanding(), 20);
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
    fn a_write_has_the_timeout_or_what_the_minimum_rate_needs_in_all() {
        let floor = Duration::from_secs(30);
        assert_eq!(write_deadline(0, floor), floor);
        assert_eq!(write_deadline(SMALL_RESPONSE_BYTES, floor), floor);
        assert_eq!(
            write_deadline(FETCH_BYTES_MAX, floor),
            Duration::from_secs(128),
            "8 MiB at 64 KiB/s"
        );
        assert_eq!(
            write_deadline(FETCH_BYTES_MAX, Duration::from_secs(600)),
            Duration::from_secs(600),
            "never less than the no-progress timeout"
        );
        assert_eq!(
            write_deadline(RESPONSE_WRITE_RATE_MIN / 2, Duration::ZERO),
            Duration::from_millis(500)
        );
        // No overflow, whatever the length.
        assert!(write_deadline(usize::MAX, floor) > Duration::from_secs(1 << 30));
        let now = Instant::now();
        assert!(saturating_after(now, Duration::MAX) > now);
    }

    #[test]
    fn an_answer_is_written_as_one_or_two_chunks() {
        let header = FrameHeader {
            kind: FrameKind::Response,
            api: Api::Fetch as u16,
            request_id: 7,
        };
        let fetched = |batches: Vec<u8>| Response::Fetched {
            high_watermark: 1,
            log_start_offset: 0,
            batches: batches.into(),
        };
        let encoded = Encoded::new(header, fetched(vec![1; 1000])).expect("encodes");
        let len = encoded.len();
        let (chunks, count) = encoded.into_chunks();
        assert_eq!(count, 2);
        assert_eq!(chunks[1].len(), 1000, "the batches, as they are");
        assert_eq!(chunks[0].len() + chunks[1].len(), len);
        let (chunks, count) = Encoded::new(header, fetched(Vec::new()))
            .expect("encodes")
            .into_chunks();
        assert_eq!((count, chunks[1].len()), (1, 0), "no empty chunk to write");
        let (_, count) = Encoded::new(header, Response::error(ErrorCode::Throttled, "later"))
            .expect("encodes")
            .into_chunks();
        assert_eq!(count, 1);
    }

    #[test]
    fn a_refetch_is_decoded_again_without_its_wait() {
        let fetch = Request::Fetch {
            topic: "t".to_owned(),
            partition: 3,
            offset: 7,
            max_bytes: 1024,
            max_wait_ms: 5000,
            min_bytes: 10,
        };
        let mut body = Vec::new();
        fetch.encode(&mut body);
        let refetch = Refetch::of(&fetch, &body).expect("a fetch may be read again");
        assert_eq!(refetch.max_bytes, 1024);
        assert!(refetch.long_poll);
        assert_eq!(
            refetch.request().expect("decodes"),
            Request::Fetch {
                topic: "t".to_owned(),
                partition: 3,
                offset: 7,
                max_bytes: 1024,
                max_wait_ms: 0,
                min_bytes: 10,
            }
        );
        let mut at_once = fetch.clone();
        without_wait(&mut at_once);
        assert!(!Refetch::of(&at_once, &body).expect("a fetch").long_poll);
        assert!(Refetch::of(&Request::ListTopics, &[]).is_none());
    }
}
