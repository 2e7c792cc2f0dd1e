//! The HTTP server: the API router wrapped in limits, auth, content negotiation and metrics,
//! plus `/metrics` and `/health`, served (over plain HTTP, or HTTPS with [`RegistryTls`])
//! until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use herald_auth::source::RefusalLog;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::Layer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::timeout::TimeoutLayer;

use crate::api::{router, ApiError};
use crate::auth::{AuthConfig, AuthConfigError, Denied};
use crate::metrics::{RegistryMetrics, UNMATCHED_ROUTE};
use crate::registry::Registry;
use crate::store::{Store, StoreError};

/// Largest request body, in bytes: the schema limit plus room for JSON escaping.
pub const REQUEST_BODY_BYTES_MAX: usize = 4 * herald_schema::SCHEMA_BYTES_MAX;
/// Most bytes of a subject list filtered for a user limited to subject prefixes (a million
/// names of 64 bytes).
pub const SUBJECT_LIST_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Requests handled at once; further requests wait for a slot (and the connections and their
/// streams are bounded too).
pub const REQUESTS_INFLIGHT_MAX: usize = 1024;
/// A request that takes longer is answered 408 (a registration waits for one flush).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections (HTTP or HTTPS) served at once; a connection accepted beyond them is closed at
/// once.
pub const CONNECTIONS_MAX: usize = 1024;
// Waiting for every connection to end takes all the permits at once (a `u32`).
const _: () = assert!(CONNECTIONS_MAX <= u32::MAX as usize);
/// A TLS handshake that takes longer is abandoned and its connection closed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long connections may take to finish the requests they carry; those still
/// open then are aborted.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one source address may hold at once (IPv6 counted by /64): one host cannot
/// take every slot.
pub const CONNECTIONS_PER_SOURCE_MAX: usize = 64;
/// An HTTP/1 connection that sends no complete request header for this long (idle keep-alive
/// included) is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that sends no request this long after it opened (after its TLS handshake over
/// HTTPS) is closed. hyper's header timeout starts only once the HTTP version is known, and
/// the version is read from the first bytes with no deadline: without this, a connection that
/// sends nothing held a slot until [`CONNECTION_AGE_MAX`].
pub const FIRST_REQUEST_TIMEOUT: Duration = HEADER_READ_TIMEOUT;
/// A connection older than this is asked to close (after its requests under way): no
/// connection holds a slot forever, whatever it does.
pub const CONNECTION_AGE_MAX: Duration = Duration::from_secs(600);
/// HTTP/2 streams (requests) one connection may carry at once.
pub const H2_STREAMS_MAX: u32 = 32;
/// HTTP/2 keep-alive: a ping this often, and a connection whose peer does not answer one
/// within [`H2_PING_TIMEOUT`] is closed.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long accepting pauses after an error that is not one connection's (e.g. too many open
/// files), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The HTTP versions offered in the TLS handshake (ALPN), preferred first.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How to run a registry.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP API (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the sled store, created if missing.
    pub data_dir: PathBuf,
    /// Who may use the API.
    pub auth: AuthSource,
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<RegistryTls>,
}

/// Where the registry's basic-auth users come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthSource {
    /// No users: the API is open (meant for loopback).
    #[default]
    Open,
    /// A TOML users file with roles (`herald registry serve --auth-file`), read at start.
    Toml(PathBuf),
    /// The users file the broker keeps too (`users.meta`; `herald registry serve --users`),
    /// read again when it changes.
    Shared(PathBuf),
}

/// The registry's certificate and private key, to serve its API over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM certificate chain: the registry's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate of `cert`.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the registry store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The certificate or key of [`ServerConfig::tls`] cannot be read or used; the message
    /// names the file.
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    metrics: Arc<RegistryMetrics>,
    auth: Option<Arc<AuthConfig>>,
}

/// The complete application: API, `/metrics`, `/health` and every layer but path
/// normalisation (added by [`serve`]).
pub fn app(registry: Arc<Registry>, auth: Option<AuthConfig>) -> Router {
    let shared = Shared {
        registry: registry.clone(),
        metrics: Arc::new(RegistryMetrics::new()),
        auth: auth.map(Arc::new),
    };
    let ops = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .with_state(shared.clone());
    router(registry)
        .merge(ops)
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            record_metrics,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            REQUESTS_INFLIGHT_MAX,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(REQUEST_BODY_BYTES_MAX))
        .layer(middleware::from_fn(negotiate_content_type))
        .layer(middleware::from_fn_with_state(shared, authorize))
}

/// Opens the store in `config.data_dir`, binds and serves until `shutdown` completes.
/// `on_bound` receives the bound address (useful with port 0).
pub async fn serve(
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let auth = match &config.auth {
        AuthSource::Open => None,
        AuthSource::Toml(path) => Some(AuthConfig::load(path)?),
        AuthSource::Shared(path) => Some(AuthConfig::shared(path)?),
    };
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let registry = Arc::new(Registry::open(Store::open(&config.data_dir)?)?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), auth = auth.is_some(), tls = tls.is_some(), "registry listening");
    if auth.is_some() && tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "basic-auth passwords (the same as the broker's, with --users) reach this registry in clear text over plain HTTP: serve HTTPS with --tls-cert/--tls-key");
    }
    on_bound(addr);
    let app = NormalizePathLayer::trim_trailing_slash().layer(app(registry, auth));
    let acceptor = tls.map(|tls| tokio_rustls::TlsAcceptor::from(Arc::new(tls)));
    serve_bounded(listener, acceptor, app, shutdown, FIRST_REQUEST_TIMEOUT).await;
    tracing::info!("registry stopped");
    Ok(())
}

/// The rustls configuration (ring provider, no client certificates) serving `tls`.
fn tls_config(tls: &RegistryTls) -> Result<rustls::ServerConfig, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| tls_error(&tls.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&tls.cert, e))?;
    if chain.is_empty() {
        return Err(tls_error(&tls.cert, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| tls_error(&tls.key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServeError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| {
        let reason = format!("cannot be served with the key {}: {e}", tls.key.display());
        tls_error(&tls.cert, reason)
    })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// [`ServeError::Tls`] for the file at `path`.
fn tls_error(path: &Path, reason: impl std::fmt::Display) -> ServeError {
    ServeError::Tls(format!("{}: {reason}", path.display()))
}

/// An accept error that is one connection's trouble only: the next connection is unaffected.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// Serves `app` on `listener` — over HTTPS with `acceptor`, plain HTTP without — until
/// `shutdown` completes, then lets the open connections finish their requests for up to
/// [`DRAIN_TIMEOUT`]. At most [`CONNECTIONS_MAX`] connections at once and
/// [`CONNECTIONS_PER_SOURCE_MAX`] per source; HTTP/1.1 and HTTP/2 (over plain HTTP by prior
/// knowledge, h2c). A connection that sends no request within `first_request_timeout`
/// ([`FIRST_REQUEST_TIMEOUT`]) is closed.
async fn serve_bounded(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: NormalizePath<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    first_request_timeout: Duration,
) {
    let scheme = if acceptor.is_some() { "HTTPS" } else { "HTTP" };
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let per_source = herald_auth::source::SourceSlots::new(CONNECTIONS_PER_SOURCE_MAX);
    let (full_refusals, source_refusals) = (RefusalLog::default(), RefusalLog::default());
    // Turns true at shutdown: every connection then finishes its requests and closes.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let service = TowerToHyperService::new(app);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_MAX)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let http = Arc::new(http);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Ended connections' tasks are collected as we go.
        while tasks.try_join_next().is_some() {}
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(unlogged) = full_refusals.refused(Instant::now()) {
                tracing::warn!(%peer, unlogged, "{CONNECTIONS_MAX} {scheme} connections open: closing a new one (`unlogged`: refusals since the last line)");
            }
            drop(socket);
            continue;
        };
        let Some(slot) = per_source.take(peer.ip()) else {
            if let Some(unlogged) = source_refusals.refused(Instant::now()) {
                tracing::warn!(%peer, unlogged, "{CONNECTIONS_PER_SOURCE_MAX} {scheme} connections open from this source: closing a new one (`unlogged`: refusals since the last line)");
            }
            drop(socket);
            continue;
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let http = http.clone();
        let mut stopping = stopping.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                let deadline = first_request_timeout;
                serve_connection(&http, socket, service, &mut stopping, peer, deadline).await;
                return;
            };
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let deadline = first_request_timeout;
                    serve_connection(&http, stream, service, &mut stopping, peer, deadline).await
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{scheme} connections still open {}s after shutdown: aborting them",
            DRAIN_TIMEOUT.as_secs()
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Serves the requests of one connection until it ends, is [`CONNECTION_AGE_MAX`] old or the
/// server stops (then the requests under way finish first); closes it if no request came
/// within `first_request_timeout`.
async fn serve_connection<S>(
    http: &auto::Builder<TokioExecutor>,
    stream: S,
    service: TowerToHyperService<NormalizePath<Router>>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
    first_request_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Set by the first request the connection makes.
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = hyper::service::service_fn(move |request| {
        seen.store(true, Ordering::Relaxed);
        hyper::service::Service::call(&service, request)
    });
    let silent = async {
        tokio::time::sleep(first_request_timeout).await;
        if requested.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = silent => {
            tracing::debug!(%peer, "no request within {first_request_timeout:?}: closing the connection");
            return;
        }
        // Shutdown (or the server gone), or the connection is old: finish the requests
        // under way, then close.
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = tokio::time::sleep(CONNECTION_AGE_MAX) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection failed");
    }
}

async fn metrics_endpoint(State(shared): State<Shared>) -> Response {
    let (schemas, subjects) = {
        let state = shared.registry.read();
        let live = state
            .subjects
            .keys()
            .filter(|s| state.subject_exists(s, false))
            .count();
        (state.schemas.len() as u64, live as u64)
    };
    shared.metrics.schemas.set(schemas as f64);
    shared.metrics.subjects.set(subjects as f64);
    let text = shared.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn record_metrics(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    shared
        .metrics
        .record(route, &method, response.status(), started.elapsed());
    response
}

/// `GET /subjects` for a user whose list is filtered: only the subjects it may see. The body is
/// a JSON array of names (bounded by the request limits); anything else is a 500, never the
/// unfiltered list.
async fn only_covered_subjects(
    response: Response,
    identity: &crate::auth::Identity,
    acls: Option<&crate::auth::RegistryAcls>,
) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, SUBJECT_LIST_BYTES_MAX).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            "cannot list subjects",
        )
        .into_response();
    };
    let filtered = serde_json::from_slice::<Vec<String>>(&bytes)
        .ok()
        .map(|names| {
            names
                .into_iter()
                .filter(|name| identity.lists(name, acls))
                .collect::<Vec<_>>()
        })
        .and_then(|names| serde_json::to_vec(&names).ok());
    let mut parts = parts;
    match filtered {
        Some(body) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(body))
        }
        // Never the unfiltered list.
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            "cannot list subjects",
        )
        .into_response(),
    }
}

async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(auth) = &shared.auth else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(request).await;
    }
    // The query parameters exactly as the handlers parse them.
    let params = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
        request.uri(),
    )
    .ok()
    .map(|query| query.0);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Checked credentials are remembered; a first check runs PBKDF2, off the async threads.
    let role = match auth.remembered(header.as_deref()) {
        Some(role) => Ok(role),
        None => {
            let Some(permit) = auth.check_permit() else {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    50301,
                    "too many password checks at once: retry",
                )
                .into_response();
            };
            let auth = auth.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                auth.authenticate(header.as_deref())
            })
            .await
            .unwrap_or(Err(Denied::Unauthenticated))
        }
    };
    let acls = auth.acls();
    let decision = role.and_then(|identity| {
        crate::auth::permit(
            &identity,
            acls.as_deref(),
            request.method().as_str(),
            path,
            params.as_ref(),
        )
        .map(|()| identity)
    });
    match decision {
        Ok(identity) => {
            let lists_subjects = !identity.sees_every_subject(acls.as_deref())
                && request.method() == axum::http::Method::GET
                && path == "/subjects";
            let response = next.run(request).await;
            if lists_subjects {
                only_covered_subjects(response, &identity, acls.as_deref()).await
            } else {
                response
            }
        }
        Err(Denied::Unauthenticated) => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                40101,
                "Unauthorized: valid basic-auth credentials are required",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"herald\""),
            );
            response
        }
        Err(Denied::Forbidden) => ApiError::new(
            StatusCode::FORBIDDEN,
            40301,
            "Forbidden: neither this user's registry role nor an ACL allows the operation",
        )
        .into_response(),
    }
}

/// Answers in `application/vnd.schemaregistry.v1+json` unless the client only accepts plain
/// `application/json`.
async fn negotiate_content_type(request: Request, next: Next) -> Response {
    let plain_json_only = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.contains("application/json")
                && !accept.contains("schemaregistry")
                && !accept.contains("*/*")
        });
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json && !plain_json_only {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Sends one HTTP/1.1 request on `stream` and reads its answer's head.
    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: registry\r\n\r\n")
            .await
            .expect("request");
        let mut answer = vec![0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    /// A connection that never sends a byte is closed after the first-request timeout (it
    /// held its slot for the connection's whole age before: hyper's header timeout starts only
    /// once the HTTP version is read), while one that made a request stays open past it.
    #[tokio::test]
    async fn a_connection_that_sends_no_request_is_closed_and_one_that_did_is_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = NormalizePathLayer::trim_trailing_slash()
            .layer(Router::new().route("/", axum::routing::get(|| async { "ok" })));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timeout = Duration::from_millis(300);
        let server = tokio::spawn(serve_bounded(
            listener,
            None,
            app,
            async {
                let _ = stopped.await;
            },
            timeout,
        ));
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut active = TcpStream::connect(addr).await.expect("connect");
        assert!(get(&mut active).await.starts_with("HTTP/1.1 200"));
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
            .await
            .expect("the silent connection is closed well before its age limit");
        assert_eq!(closed.expect("an orderly close"), 0);
        // Past the timeout, the connection that made a request still answers.
        tokio::time::sleep(timeout * 2).await;
        assert!(get(&mut active).await.starts_with("HTTP/1.1 200"));
        let _ = stop.send(());
        server.await.expect("server stopped");
    }
}
