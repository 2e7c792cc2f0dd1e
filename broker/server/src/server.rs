//! The QUIC glue: accept connections (bounded), accept streams, read frames (bounded), hand
//! requests to the [`Broker`], write responses. Plus the HTTP `/metrics` endpoint and the
//! periodic retention task.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_broker_core::groups::GroupConfig;
use herald_metrics::Metrics;
use herald_registry_client::RegistryClient;
use herald_wire::frame::{Frame, FrameHeader, FrameKind};
use herald_wire::messages::ErrorBody;
use herald_wire::{Api, ErrorCode, Request, Response};
use tokio::sync::Semaphore;

use crate::broker::{Broker, THROTTLE_RETRY_AFTER_MS};
use crate::schema_cache::SchemaCache;
use crate::tls::{self, TlsSource};

/// Connections served at once; more are refused at the handshake.
pub const CONNECTIONS_MAX: usize = 1024;
/// Request bytes one connection may have buffered (frames being read or handled); more wait.
pub const CONNECTION_READ_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(herald_wire::limits::FRAME_BYTES_MAX <= CONNECTION_READ_BYTES_MAX);
/// Requests in flight per connection; more are answered `Throttled`.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 256;

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
    let metrics_addr =
        match config.metrics_listen {
            Some(listen) => Some(spawn_metrics(listen, broker.clone()).await.map_err(
                |source| ServeError::Bind {
                    addr: listen,
                    source,
                },
            )?),
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
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(incoming, broker).await {
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

async fn serve_connection(
    incoming: quinn::Incoming,
    broker: Arc<Broker>,
) -> Result<(), quinn::ConnectionError> {
    let connection = incoming.await?;
    let inflight = Arc::new(Semaphore::new(INFLIGHT_REQUESTS_PER_CONNECTION_MAX));
    let read_budget = Arc::new(Semaphore::new(CONNECTION_READ_BYTES_MAX));
    loop {
        let (send, recv) = connection.accept_bi().await?;
        let broker = broker.clone();
        let inflight = inflight.clone();
        let read_budget = read_budget.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_stream(send, recv, broker, inflight, read_budget).await {
                tracing::debug!(%error, "stream ended");
            }
        });
    }
}

/// Serves frames on one stream, in order, until the client finishes it.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    broker: Arc<Broker>,
    inflight: Arc<Semaphore>,
    read_budget: Arc<Semaphore>,
) -> Result<(), String> {
    loop {
        let (frame, _read_permit) = match next_frame(&mut recv, &read_budget).await {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(error) => {
                let response = Response::error(
                    ErrorCode::InvalidRequest,
                    format!("unreadable frame: {error}"),
                );
                let _ = write_response(
                    &mut send,
                    FrameHeader {
                        kind: FrameKind::Response,
                        api: 0,
                        request_id: 0,
                    },
                    response,
                )
                .await;
                return Err(error);
            }
        };
        let header = FrameHeader {
            kind: FrameKind::Response,
            ..frame.header
        };
        let response = match (frame.header.kind, Api::from_code(frame.header.api)) {
            (FrameKind::Request, Ok(api)) => match Request::decode(api, &frame.body) {
                Ok(request) => match inflight.clone().try_acquire_owned() {
                    Ok(_permit) => broker.handle(request).await,
                    Err(_) => Response::Error(ErrorBody { code: ErrorCode::Throttled, retry_after_ms: THROTTLE_RETRY_AFTER_MS, message: format!("more than {INFLIGHT_REQUESTS_PER_CONNECTION_MAX} requests in flight on this connection") }),
                },
                Err(error) => Response::error(ErrorCode::InvalidRequest, format!("bad {} request: {error}", api.name())),
            },
            (FrameKind::Response, _) => Response::error(ErrorCode::InvalidRequest, "clients send requests, not responses"),
            (_, Err(error)) => Response::error(ErrorCode::UnsupportedVersion, error.to_string()),
        };
        write_response(&mut send, header, response).await?;
    }
    send.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// The next frame on a stream, or `None` when the client finished the stream between frames.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    read_budget: &Arc<Semaphore>,
) -> Result<Option<(Frame, tokio::sync::OwnedSemaphorePermit)>, String> {
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

/// Writes a response frame; a fetch's batches are handed to quinn as they are, uncopied.
async fn write_response(
    send: &mut quinn::SendStream,
    header: FrameHeader,
    response: Response,
) -> Result<(), String> {
    let mut head = Vec::with_capacity(64);
    let tail = response.encode_split(&mut head);
    let body_len = head.len() + tail.as_ref().map_or(0, Vec::len);
    let frame_head = Frame::encode_header(header, body_len).map_err(|e| e.to_string())?;
    let mut first = Vec::with_capacity(frame_head.len() + head.len());
    first.extend_from_slice(&frame_head);
    first.extend_from_slice(&head);
    send.write_chunk(first.into())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(tail) = tail {
        send.write_chunk(tail.into())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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

async fn spawn_metrics(listen: SocketAddr, broker: Arc<Broker>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let broker = broker.clone();
                async move {
                    broker.update_gauges();
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
