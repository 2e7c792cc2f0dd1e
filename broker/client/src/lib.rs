//! herald-broker-client: a minimal async client for Herald's broker over QUIC (quinn).
//!
//! One QUIC connection, one bidirectional stream per request (opening a stream costs no round
//! trip), so any number of requests can be in flight at once. The server's certificate is
//! trusted by pinning: its SHA-256 fingerprint, or the certificate file itself. The SDK
//! builds batching, retries and consumer groups on top of this. The QUIC plumbing shared with
//! the broker (ALPN, transport settings, reading frame bodies, fingerprints) comes from
//! herald-quic and is re-exported here.
//!
//! A broker that requires authentication is connected to with [`BrokerClient::connect_with`]
//! and [`Credentials`]: a user and password run a SCRAM-SHA-256 exchange
//! ([`BrokerClient::authenticate`], two `Authenticate` round trips) right after the handshake,
//! and the connection then acts as the [`Principal`] the broker names; a client certificate is
//! presented in the TLS handshake instead, and the broker maps it to a principal itself. The
//! ACL helpers ([`BrokerClient::create_acls`] and the others) administer who may do what.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_auth::acl::{AclEntry, AclFilter};
use herald_auth::local::{LocalCredentials, LOCAL_CREDENTIALS_BYTES_MAX};
use herald_auth::scram::{self, ScramClient, ScramError};
use herald_wire::frame::{Frame, FrameHeader, FrameKind, FRAME_HEADER_BYTES};
use herald_wire::groups::{GroupRequest, GroupResponse};
use herald_wire::messages::{
    Durability, ErrorBody, OffsetSpec, TopicConfig, TopicDescription, TopicMetadata,
};
use herald_wire::security::{SecurityRequest, SecurityResponse};
use herald_wire::{Api, DecodeError, ErrorCode, Request, Response};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

// The QUIC plumbing the broker shares lives in herald-quic; re-exported so these paths keep
// working for the client's users.
pub use herald_quic::{
    fingerprint, read_body, transport, ALPN, MTU_DISCOVERY_UPPER_BOUND_BYTES,
    READ_BUFFER_INITIAL_BYTES,
};

pub mod router;
pub use router::{dialer, Dial, Route, Router};

/// Who a connection acts as once authenticated (`User:<name>`).
pub use herald_auth::acl::Principal;

/// A request without an answer for this long fails (long polls add their own wait).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the client decides to trust the broker's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Hex SHA-256 of the certificate's DER bytes, as the broker logs it at start.
    Fingerprint(String),
    /// The broker's certificate file (PEM); that exact certificate is pinned.
    CertificateFile(PathBuf),
}

/// Most certificates read from a client certificate chain file.
pub const CLIENT_CERTIFICATE_CHAIN_MAX: usize = 16;

/// How the client proves who it is to the broker.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No identity: for a broker without authentication.
    #[default]
    None,
    /// A user and password, checked with a SCRAM-SHA-256 exchange right after the handshake
    /// (and after every reconnection).
    Scram {
        user: String,
        /// Wiped from memory when dropped.
        password: zeroize::Zeroizing<String>,
    },
    /// A client certificate presented in the TLS handshake, for a broker that maps client
    /// certificates to principals.
    Certificate {
        /// PEM certificate chain, the client's own certificate first.
        cert: PathBuf,
        /// PEM private key of that certificate.
        key: PathBuf,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Scram { user, .. } => f
                .debug_struct("Scram")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Certificate { cert, key } => f
                .debug_struct("Certificate")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

impl Credentials {
    /// A user and password for a SCRAM-SHA-256 exchange.
    pub fn scram(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Scram {
            user: user.into(),
            password: zeroize::Zeroizing::new(password.into()),
        }
    }

    /// The user and password of a local credentials file (the one `herald up` writes as
    /// [`herald_auth::local::LOCAL_CREDENTIALS_FILE`] in the broker's data directory). A file
    /// longer than [`LOCAL_CREDENTIALS_BYTES_MAX`] is refused without being read further.
    pub fn from_local_file(path: &Path) -> Result<Self, ConnectError> {
        use std::io::Read;
        let error = |reason: String| ConnectError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
        // One byte past the limit tells a file at the limit from a longer one.
        let mut text = String::new();
        file.take(LOCAL_CREDENTIALS_BYTES_MAX as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| error(e.to_string()))?;
        if text.len() > LOCAL_CREDENTIALS_BYTES_MAX {
            return Err(error(format!(
                "the file is longer than {LOCAL_CREDENTIALS_BYTES_MAX} bytes"
            )));
        }
        let LocalCredentials { user, password } =
            LocalCredentials::parse(&text).map_err(|e| error(e.to_string()))?;
        Ok(Credentials::Scram { user, password })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("invalid fingerprint '{0}': expected 64 hex characters")]
    Fingerprint(String),
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("cannot create a local endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The credentials file could not be read or parsed.
    #[error("cannot read credentials {path}: {reason}")]
    Credentials { path: String, reason: String },
    /// The connection was made but the broker did not accept the credentials (the text
    /// includes the broker's message), or the broker could not prove it knows them.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A bootstrap list that names no address, or more than [`BOOTSTRAP_ADDRESSES_MAX`].
    #[error("the bootstrap list names {0} brokers: give between 1 and {BOOTSTRAP_ADDRESSES_MAX}")]
    BootstrapList(usize),
    /// No broker of a bootstrap list could be reached: each address with why.
    #[error("no broker of the bootstrap list answered: {}", .0.iter().map(|(addr, reason)| format!("{addr}: {reason}")).collect::<Vec<_>>().join("; "))]
    NoneReachable(Vec<(SocketAddr, String)>),
}

/// Most addresses a bootstrap list may name (each is tried at once).
pub const BOOTSTRAP_ADDRESSES_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("bad answer from the broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("broker error {code:?}: {message}")]
    Broker {
        code: ErrorCode,
        message: String,
        retry_after_ms: u32,
    },
    #[error("unexpected answer to {api}: {answer}")]
    Unexpected { api: &'static str, answer: String },
    /// The client side of an authentication exchange failed: a malformed server message, or
    /// a server signature that does not verify (the broker does not hold the password's keys).
    #[error("authentication exchange failed: {0}")]
    Authentication(String),
}

impl RequestError {
    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            RequestError::Connection(_) | RequestError::Stream(_) | RequestError::Timeout(_) => {
                true
            }
            RequestError::Broker { code, .. } => code.retryable(),
            RequestError::Decode(_)
            | RequestError::Unexpected { .. }
            | RequestError::Authentication(_) => false,
        }
    }

    /// Whether the connection the request went on is gone (or could not be made), rather
    /// than the broker having answered.
    pub fn connection_lost(&self) -> bool {
        matches!(
            self,
            RequestError::Connection(_) | RequestError::Stream(_) | RequestError::Timeout(_)
        )
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Requests one pipeline may have in flight.
pub const PIPELINE_DEPTH_MAX: usize = 64;

type Waiter = (
    u64,
    Api,
    tokio::sync::oneshot::Sender<Result<Response, RequestError>>,
);

/// An ordered request stream; see [`BrokerClient::pipeline`].
pub struct Pipeline {
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Arc<std::sync::Mutex<std::collections::VecDeque<Waiter>>>,
    next_request_id: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    /// Sends `request`; the returned receiver yields its answer. Requests are handled in the
    /// order they were sent.
    pub async fn send(
        &self,
        request: &Request,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Response, RequestError>>, RequestError> {
        let (head, tail) = Frame::encode_with_tail(request_header(request.api(), 0), |out| {
            request.encode_split(out)
        })?;
        self.send_frame(request.api(), head, tail).await
    }

    /// Sends an `api` request whose body `write_body` appends (for a caller that keeps the
    /// request's parts, such as a producer that may resend its batch: nothing is copied into
    /// a `Request` first). `body_bytes_hint` sizes the frame buffer.
    pub async fn send_encoded(
        &self,
        api: Api,
        body_bytes_hint: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Response, RequestError>>, RequestError> {
        let frame = Frame::encode_with(request_header(api, 0), body_bytes_hint, write_body)?;
        self.send_frame(api, frame, None).await
    }

    /// Sends an encoded frame (`head`, then `tail` if any) with the next request ID.
    async fn send_frame(
        &self,
        api: Api,
        mut head: Vec<u8>,
        tail: Option<Bytes>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Response, RequestError>>, RequestError> {
        let mut send = self.send.lock().await;
        // The ID is taken under the stream lock, so IDs go out in order.
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        Frame::set_request_id(&mut head, request_id);
        let (done, answer) = tokio::sync::oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= PIPELINE_DEPTH_MAX {
                return Err(RequestError::Stream(format!(
                    "more than {PIPELINE_DEPTH_MAX} requests in flight on one pipeline"
                )));
            }
            pending.push_back((request_id, api, done));
        }
        write_frame(&mut send, head, tail).await?;
        Ok(answer)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The broker's answer, with an error answer turned into [`RequestError::Broker`] (for
/// answers read from a [`Pipeline`]; the one-shot calls do this themselves).
pub fn refused(response: Response) -> Result<Response, RequestError> {
    match response {
        Response::Error(ErrorBody {
            code,
            retry_after_ms,
            message,
        }) => Err(RequestError::Broker {
            code,
            message,
            retry_after_ms,
        }),
        response => Ok(response),
    }
}

/// What a fetch returned: raw stored batches plus the partition's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Bytes,
}

/// The QUIC client configuration [`BrokerClient::connect`] connects with: TLS 1.3 accepting
/// exactly the certificate `trust` pins, Herald's ALPN, and [`transport`]'s settings, without
/// a client certificate.
///
/// Public only for callers that need a raw quinn connection to the broker, such as tests that
/// open streams and leave their answers unread; everything else should use [`BrokerClient`].
/// Such a caller connects with server name `"herald"` and may replace the transport settings
/// (`quinn::ClientConfig::transport_config`).
pub fn quic_client_config(trust: &Trust) -> Result<quinn::ClientConfig, ConnectError> {
    quic_client_config_with(trust, None)
}

/// [`quic_client_config`], presenting a client certificate when `certificate` names one:
/// `(PEM certificate chain file, PEM private key file)`, at most
/// [`CLIENT_CERTIFICATE_CHAIN_MAX`] certificates, the client's own first.
pub fn quic_client_config_with(
    trust: &Trust,
    certificate: Option<(&Path, &Path)>,
) -> Result<quinn::ClientConfig, ConnectError> {
    let pinned = match trust {
        Trust::Fingerprint(hex_text) => {
            let bytes = hex::decode(hex_text.trim())
                .map_err(|_| ConnectError::Fingerprint(hex_text.clone()))?;
            <[u8; 32]>::try_from(bytes).map_err(|_| ConnectError::Fingerprint(hex_text.clone()))?
        }
        Trust::CertificateFile(path) => fingerprint_of_pem_file(path)?,
    };
    let provider = herald_quic::crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            fingerprint: pinned,
            provider,
        }));
    let mut tls = match certificate {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let (chain, key) = client_certificate(cert_path, key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| certificate_error(cert_path, e))?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = transport();
    // A broker killed outright sends nothing more (QUIC has no kernel state that would reset
    // the connection): the client notices by silence. Keep-alives every second, so that
    // silence means a dead or frozen broker, not a quiet connection, and a partition's
    // requests move to its new leader within seconds of a failover.
    transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(CLIENT_IDLE_TIMEOUT)
            .map_err(|e| ConnectError::Tls(format!("idle timeout: {e}")))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// How often a client connection proves it is alive when it has nothing to send.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long a client connection stays open without hearing from the broker.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// A client certificate chain and its private key, read from PEM files.
fn client_certificate(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConnectError> {
    use rustls::pki_types::pem::PemObject;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for certificate in
        CertificateDer::pem_file_iter(cert_path).map_err(|e| certificate_error(cert_path, e))?
    {
        let certificate = certificate.map_err(|e| certificate_error(cert_path, e))?;
        if chain.len() == CLIENT_CERTIFICATE_CHAIN_MAX {
            return Err(certificate_error(
                cert_path,
                format!("more than {CLIENT_CERTIFICATE_CHAIN_MAX} certificates"),
            ));
        }
        chain.push(certificate);
    }
    if chain.is_empty() {
        return Err(certificate_error(cert_path, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| certificate_error(key_path, e))?;
    Ok((chain, key))
}

fn certificate_error(path: &Path, reason: impl std::fmt::Display) -> ConnectError {
    ConnectError::Certificate {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A connection to one broker.
#[derive(Clone)]
pub struct BrokerClient {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    next_request_id: Arc<AtomicU64>,
    /// Who the connection acts as, once [`BrokerClient::authenticate`] succeeded (shared by
    /// clones: they are the same connection).
    principal: Arc<std::sync::Mutex<Option<Principal>>>,
}

impl BrokerClient {
    /// Connects without credentials: [`BrokerClient::connect_with`] with [`Credentials::None`].
    pub async fn connect(addr: SocketAddr, trust: Trust) -> Result<Self, ConnectError> {
        Self::connect_with(addr, trust, &Credentials::None).await
    }

    /// Connects to whichever broker of `addrs` (a bootstrap list: brokers of one cluster, any
    /// of which may answer) answers first, trying all
    /// at once (a broker that is down costs the handshake timeout, not a turn each), and
    /// authenticates as [`BrokerClient::connect_with`] does. A refused authentication is
    /// reported at once (every broker of a cluster checks the same credentials); if no broker
    /// can be reached, the error names each address and why.
    pub async fn connect_any(
        addrs: &[SocketAddr],
        trust: Trust,
        credentials: &Credentials,
    ) -> Result<Self, ConnectError> {
        if addrs.is_empty() || addrs.len() > BOOTSTRAP_ADDRESSES_MAX {
            return Err(ConnectError::BootstrapList(addrs.len()));
        }
        if let [addr] = addrs {
            return Self::connect_with(*addr, trust, credentials).await;
        }
        // Dropped on return: the attempts still running are aborted.
        let mut attempts = tokio::task::JoinSet::new();
        let mut addr_of = std::collections::HashMap::new();
        for &addr in addrs {
            let (trust, credentials) = (trust.clone(), credentials.clone());
            let task =
                attempts.spawn(async move { Self::connect_with(addr, trust, &credentials).await });
            addr_of.insert(task.id(), addr);
        }
        let mut failures = Vec::new();
        while let Some(attempt) = attempts.join_next_with_id().await {
            match attempt {
                Ok((_, Ok(client))) => return Ok(client),
                Ok((_, Err(error @ ConnectError::Authentication(_)))) => return Err(error),
                Ok((id, Err(error))) => {
                    if let Some(&addr) = addr_of.get(&id) {
                        failures.push((addr, error.to_string()));
                    }
                }
                Err(failed) => {
                    if let Some(&addr) = addr_of.get(&failed.id()) {
                        failures.push((addr, failed.to_string()));
                    }
                }
            }
        }
        failures.sort_by_key(|(addr, _)| addrs.iter().position(|a| a == addr));
        Err(ConnectError::NoneReachable(failures))
    }

    /// Connects and proves who the client is: a SCRAM exchange right after the handshake for
    /// [`Credentials::Scram`] (the connection is closed if it fails), the certificate in the
    /// handshake for [`Credentials::Certificate`].
    pub async fn connect_with(
        addr: SocketAddr,
        trust: Trust,
        credentials: &Credentials,
    ) -> Result<Self, ConnectError> {
        let certificate = match credentials {
            Credentials::Certificate { cert, key } => Some((cert.as_path(), key.as_path())),
            Credentials::None | Credentials::Scram { .. } => None,
        };
        let config = quic_client_config_with(&trust, certificate)?;
        let client = Self::open(addr, config).await?;
        if let Credentials::Scram { user, password } = credentials {
            if let Err(error) = client.authenticate(user, password).await {
                client.close();
                return Err(login_failed(addr, error));
            }
        }
        Ok(client)
    }

    /// A QUIC connection to `addr` with `config`, from a fresh local endpoint.
    async fn open(addr: SocketAddr, config: quinn::ClientConfig) -> Result<Self, ConnectError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| ConnectError::Tls("bind address".into()))?;
        let (socket, _) = herald_quic::bind_udp(bind).map_err(ConnectError::Endpoint)?;
        let mut endpoint = herald_quic::endpoint(quinn::EndpointConfig::default(), None, socket)
            .map_err(ConnectError::Endpoint)?;
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(addr, "herald")
            .map_err(|e| ConnectError::Connect {
                addr,
                reason: e.to_string(),
            })?
            .await
            .map_err(|e| ConnectError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        Ok(Self {
            connection,
            _endpoint: endpoint,
            next_request_id: Arc::new(AtomicU64::new(1)),
            principal: Arc::default(),
        })
    }

    /// Authenticates this connection as `user` with a SCRAM-SHA-256 exchange (two
    /// `Authenticate` round trips; the broker keeps the exchange per connection) and returns
    /// the principal the broker now treats it as. The broker's refusal comes back as
    /// [`RequestError::Broker`] (`AuthenticationFailed`), a server message the client cannot
    /// accept (a server signature that does not verify) as [`RequestError::Authentication`].
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Principal, RequestError> {
        let client_nonce = scram::nonce().map_err(scram_failed)?;
        let (started, client_first) =
            ScramClient::new(user, password, &client_nonce).map_err(scram_failed)?;
        let (server_first, principal) = self.authenticate_step(client_first).await?;
        if let Some(principal) = principal {
            return Err(RequestError::Unexpected {
                api: Api::Authenticate.name(),
                answer: format!("a principal ({principal}) before the exchange finished"),
            });
        }
        // PBKDF2 over the password: thousands of HMACs, kept off the async workers.
        let (waiting, client_final) =
            tokio::task::spawn_blocking(move || started.step(&server_first))
                .await
                .map_err(|e| RequestError::Authentication(format!("key derivation: {e}")))?
                .map_err(scram_failed)?;
        let (server_final, principal) = self.authenticate_step(client_final).await?;
        waiting.finish(&server_final).map_err(scram_failed)?;
        let Some(principal) = principal else {
            return Err(RequestError::Unexpected {
                api: Api::Authenticate.name(),
                answer: "no principal at the end of the exchange".to_owned(),
            });
        };
        *self.principal.lock().unwrap_or_else(|p| p.into_inner()) = Some(principal.clone());
        Ok(principal)
    }

    /// One `Authenticate` round trip: the server's message and, on the last, the principal.
    async fn authenticate_step(
        &self,
        message: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<Principal>), RequestError> {
        let request = Request::Security(SecurityRequest::Authenticate {
            mechanism: scram::MECHANISM.to_owned(),
            message,
        });
        match self.call(request).await? {
            Response::Security(SecurityResponse::Authenticated { message, principal }) => {
                Ok((message, principal))
            }
            other => Err(unexpected(Api::Authenticate, other)),
        }
    }

    /// The QUIC connection's counters (packets, losses, path MTU, round-trip time).
    pub fn transport_stats(&self) -> quinn::ConnectionStats {
        self.connection.stats()
    }

    /// Who this connection acts as: `None` until [`BrokerClient::authenticate`] succeeded
    /// (also for a connection authenticated by its client certificate: the broker names
    /// that principal only in its own logs and decisions).
    pub fn principal(&self) -> Option<Principal> {
        self.principal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends one request on its own stream and waits for the answer. Broker errors come
    /// back as `Ok(Response::Error)`; see the typed helpers for `Err` on them.
    pub async fn request(&self, request: &Request) -> Result<Response, RequestError> {
        let wait = match request {
            Request::Fetch { max_wait_ms, .. } => Duration::from_millis(u64::from(*max_wait_ms)),
            _ => Duration::ZERO,
        };
        let timeout = REQUEST_TIMEOUT + wait;
        tokio::time::timeout(timeout, self.exchange(request))
            .await
            .map_err(|_| RequestError::Timeout(timeout))?
    }

    async fn exchange(&self, request: &Request) -> Result<Response, RequestError> {
        let api = request.api();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (head, tail) = Frame::encode_with_tail(request_header(api, request_id), |out| {
            request.encode_split(out)
        })?;
        let (mut send, mut recv) = self.connection.open_bi().await?;
        write_frame(&mut send, head, tail).await?;
        send.finish()
            .map_err(|e| RequestError::Stream(e.to_string()))?;
        let frame = read_frame(&mut recv).await?;
        if frame.header.request_id != request_id
            || frame.header.kind != FrameKind::Response
            || frame.header.api != api as u16
        {
            return Err(RequestError::Unexpected {
                api: api.name(),
                answer: format!("{:?}", frame.header),
            });
        }
        Ok(Response::decode_owned(api, frame.body)?)
    }

    async fn call(&self, request: Request) -> Result<Response, RequestError> {
        refused(self.request(&request).await?)
    }

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<(), RequestError> {
        self.call(Request::CreateTopic {
            name: name.to_owned(),
            config,
        })
        .await
        .map(drop)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), RequestError> {
        self.call(Request::DeleteTopic {
            name: name.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Moves a cluster partition to `replicas` (node ids, the preferred leader first): `Ok`
    /// once the move is recorded; the partition's leader carries it out in the background.
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u64],
    ) -> Result<(), RequestError> {
        match self
            .call(Request::MovePartition {
                topic: topic.to_owned(),
                partition,
                replicas: replicas.to_vec(),
            })
            .await?
        {
            Response::PartitionMoving => Ok(()),
            other => Err(unexpected(Api::MovePartition, other)),
        }
    }

    /// Removes node `node` from a cluster for good: refused while it holds a replica.
    pub async fn remove_node(&self, node: u64) -> Result<(), RequestError> {
        match self.call(Request::RemoveNode { node }).await? {
            Response::NodeRemoved => Ok(()),
            other => Err(unexpected(Api::RemoveNode, other)),
        }
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, RequestError> {
        match self.call(Request::ListTopics).await? {
            Response::Topics(topics) => Ok(topics),
            other => Err(unexpected(Api::ListTopics, other)),
        }
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, RequestError> {
        match self
            .call(Request::DescribeTopic {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Topic(topic) => Ok(*topic),
            other => Err(unexpected(Api::DescribeTopic, other)),
        }
    }

    /// Appends an encoded batch; returns its base offset and the broker's append time.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        durability: Durability,
        batch: impl Into<Bytes>,
    ) -> Result<(i64, i64), RequestError> {
        match self
            .call(Request::Produce {
                topic: topic.to_owned(),
                partition,
                durability,
                batch: batch.into(),
            })
            .await?
        {
            Response::Produced {
                base_offset,
                append_time_ms,
                ..
            } => Ok((base_offset, append_time_ms)),
            other => Err(unexpected(Api::Produce, other)),
        }
    }

    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        max_wait: Duration,
        min_bytes: u32,
    ) -> Result<Fetched, RequestError> {
        let request = Request::Fetch {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes,
            max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes,
        };
        match self.call(request).await? {
            Response::Fetched {
                high_watermark,
                log_start_offset,
                batches,
            } => Ok(Fetched {
                high_watermark,
                log_start_offset,
                batches,
            }),
            other => Err(unexpected(Api::Fetch, other)),
        }
    }

    /// The offset for `spec` and the timestamp of the record there (-1 if none).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(i64, i64), RequestError> {
        match self
            .call(Request::ListOffsets {
                topic: topic.to_owned(),
                partition,
                spec,
            })
            .await?
        {
            Response::Offset {
                offset,
                timestamp_ms,
            } => Ok((offset, timestamp_ms)),
            other => Err(unexpected(Api::ListOffsets, other)),
        }
    }

    /// An idempotent producer id and epoch; see [`Request::InitProducer`].
    pub async fn init_producer(&self, name: &str) -> Result<(i64, i16), RequestError> {
        match self
            .call(Request::InitProducer {
                name: name.to_owned(),
            })
            .await?
        {
            Response::ProducerInit { producer_id, epoch } => Ok((producer_id, epoch)),
            other => Err(unexpected(Api::InitProducer, other)),
        }
    }

    /// Where `topic`'s partitions are led: on a cluster, each partition's leader and replicas
    /// with the nodes' addresses; on a single broker, no nodes (it serves every partition).
    pub async fn metadata(&self, topic: &str) -> Result<TopicMetadata, RequestError> {
        match self
            .call(Request::Metadata {
                topic: topic.to_owned(),
            })
            .await?
        {
            Response::Metadata(metadata) => Ok(metadata),
            other => Err(unexpected(Api::Metadata, other)),
        }
    }

    /// Opens a pipeline: one stream whose requests the broker handles strictly in order, with
    /// up to `PIPELINE_DEPTH_MAX` in flight. An idempotent producer sends each partition's
    /// batches through one pipeline so that their sequences arrive in order.
    pub async fn pipeline(&self) -> Result<Pipeline, RequestError> {
        let (send, mut recv) = self.connection.open_bi().await?;
        let pending: Arc<std::sync::Mutex<std::collections::VecDeque<Waiter>>> = Arc::default();
        let reader_pending = pending.clone();
        let reader = tokio::spawn(async move {
            loop {
                let frame = read_frame(&mut recv).await;
                let waiter = reader_pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                let Some((request_id, api, done)) = waiter else {
                    return;
                };
                let answer = frame.and_then(|frame| {
                    if frame.header.request_id != request_id || frame.header.api != api as u16 {
                        return Err(RequestError::Unexpected {
                            api: api.name(),
                            answer: format!("{:?}", frame.header),
                        });
                    }
                    Ok(Response::decode_owned(api, frame.body)?)
                });
                let failed = answer.is_err();
                let _ = done.send(answer);
                if failed {
                    // The stream is unusable: fail everything still waiting.
                    for (_, _, done) in reader_pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .drain(..)
                    {
                        let _ = done.send(Err(RequestError::Stream("pipeline broken".to_owned())));
                    }
                    return;
                }
            }
        });
        Ok(Pipeline {
            send: tokio::sync::Mutex::new(send),
            pending,
            next_request_id: self.next_request_id.clone(),
            reader,
        })
    }

    /// Any consumer-group request; group errors come back as `Err`.
    pub async fn group(&self, request: GroupRequest) -> Result<GroupResponse, RequestError> {
        let api = request.api();
        match self.call(Request::Group(request)).await? {
            Response::Group(response) => Ok(response),
            other => Err(unexpected(api, other)),
        }
    }

    /// Adds ACL entries (those already present are kept once); returns how many were new.
    pub async fn create_acls(&self, entries: Vec<AclEntry>) -> Result<u32, RequestError> {
        match self
            .call(Request::Security(SecurityRequest::CreateAcls { entries }))
            .await?
        {
            Response::Security(SecurityResponse::AclsCreated { added }) => Ok(added),
            other => Err(unexpected(Api::CreateAcls, other)),
        }
    }

    /// Sets user `name`'s SCRAM-SHA-256 credential (`Credential::to_text`, made here: the
    /// password never leaves the client), adding the user if new. On a cluster the user is
    /// the same on every node.
    pub async fn alter_user(&self, name: &str, credential: &str) -> Result<(), RequestError> {
        self.alter_user_with(name, credential, herald_auth::users::RegistryChange::Keep)
            .await
    }

    /// [`BrokerClient::alter_user`], changing the user's registry access as `registry` says
    /// (on a cluster, what a registry reading the cluster's users lets the user do).
    pub async fn alter_user_with(
        &self,
        name: &str,
        credential: &str,
        registry: herald_auth::users::RegistryChange,
    ) -> Result<(), RequestError> {
        match self
            .call(Request::Security(SecurityRequest::AlterUser {
                name: name.to_owned(),
                credential: credential.to_owned(),
                registry,
            }))
            .await?
        {
            Response::Security(SecurityResponse::UserAltered) => Ok(()),
            other => Err(unexpected(Api::AlterUser, other)),
        }
    }

    pub async fn delete_user(&self, name: &str) -> Result<(), RequestError> {
        match self
            .call(Request::Security(SecurityRequest::DeleteUser {
                name: name.to_owned(),
            }))
            .await?
        {
            Response::Security(SecurityResponse::UserDeleted) => Ok(()),
            other => Err(unexpected(Api::DeleteUser, other)),
        }
    }

    /// The names of the users that authenticate on the broker this client is connected to.
    pub async fn list_users(&self) -> Result<Vec<String>, RequestError> {
        match self
            .call(Request::Security(SecurityRequest::ListUsers))
            .await?
        {
            Response::Security(SecurityResponse::Users(names)) => Ok(names),
            other => Err(unexpected(Api::ListUsers, other)),
        }
    }

    /// The ACL entries `filter` matches.
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclEntry>, RequestError> {
        match self
            .call(Request::Security(SecurityRequest::DescribeAcls { filter }))
            .await?
        {
            Response::Security(SecurityResponse::Acls(entries)) => Ok(entries),
            other => Err(unexpected(Api::DescribeAcls, other)),
        }
    }

    /// Removes the ACL entries `filter` matches; returns those removed.
    pub async fn delete_acls(&self, filter: AclFilter) -> Result<Vec<AclEntry>, RequestError> {
        match self
            .call(Request::Security(SecurityRequest::DeleteAcls { filter }))
            .await?
        {
            Response::Security(SecurityResponse::AclsDeleted(entries)) => Ok(entries),
            other => Err(unexpected(Api::DeleteAcls, other)),
        }
    }

    pub fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
    }

    /// An id that tells this connection apart from every other of this process (clones share
    /// it: they are the same connection).
    pub fn stable_id(&self) -> usize {
        self.connection.stable_id()
    }

    /// The broker's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }
}

/// Why a login to the broker at `addr` failed: a refusal (the broker refused the credentials,
/// or could not prove it knows them) is [`ConnectError::Authentication`], which another
/// broker would answer alike; a failure that may pass on a retry (the connection dropped, no
/// answer in time, throttled) is a [`ConnectError::Connect`] to that broker, so a bootstrap
/// list goes on to the others.
fn login_failed(addr: SocketAddr, error: RequestError) -> ConnectError {
    match error {
        RequestError::Authentication(reason) => ConnectError::Authentication(reason),
        error if error.retryable() => ConnectError::Connect {
            addr,
            reason: format!("the login did not complete: {error}"),
        },
        error => ConnectError::Authentication(error.to_string()),
    }
}

/// A SCRAM error on the client's side of the exchange.
fn scram_failed(error: ScramError) -> RequestError {
    RequestError::Authentication(error.to_string())
}

fn unexpected(api: Api, answer: Response) -> RequestError {
    RequestError::Unexpected {
        api: api.name(),
        answer: format!("{answer:?}"),
    }
}

/// Reads one length-prefixed frame, refusing lengths over the limit before allocating.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Frame, RequestError> {
    // The head first, then the body into a buffer of its own that the body's decoding keeps
    // (a fetch's batches are a view into it): nothing is moved or copied after the read.
    let mut head = [0u8; FRAME_HEADER_BYTES];
    recv.read_exact(&mut head)
        .await
        .map_err(|e| RequestError::Stream(e.to_string()))?;
    let (length, header) = Frame::decode_head(head)?;
    let body = read_body(recv, length)
        .await
        .map_err(|e| RequestError::Stream(e.to_string()))?;
    Ok(Frame { header, body })
}

/// The header of a request frame for `api` (the ID may be set later).
fn request_header(api: Api, request_id: u64) -> FrameHeader {
    FrameHeader {
        kind: FrameKind::Request,
        api: api as u16,
        request_id,
    }
}

/// Writes a frame's `head` and then its `tail` (a produce's batch) as chunks quinn keeps
/// as they are: neither is copied again on the way out.
async fn write_frame(
    send: &mut quinn::SendStream,
    head: Vec<u8>,
    tail: Option<Bytes>,
) -> Result<(), RequestError> {
    let written = match tail {
        Some(tail) => send.write_all_chunks(&mut [Bytes::from(head), tail]).await,
        None => send.write_chunk(Bytes::from(head)).await,
    };
    written.map_err(|e| RequestError::Stream(e.to_string()))
}

fn fingerprint_of_pem_file(path: &Path) -> Result<[u8; 32], ConnectError> {
    use rustls::pki_types::pem::PemObject;
    let error = |reason: String| ConnectError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let cert = CertificateDer::from_pem_file(path).map_err(|e| error(e.to_string()))?;
    Ok(Sha256::digest(cert.as_ref()).into())
}

/// Accepts exactly one certificate, by fingerprint, and checks handshake signatures with it.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} is not the pinned {}",
                hex::encode(actual),
                hex::encode(self.fingerprint)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login cut short by the transport is a failure to reach that broker (a bootstrap list
    /// tries the others); a refusal is an authentication error (every broker refuses alike).
    #[test]
    fn a_login_cut_short_is_a_connection_failure_and_a_refusal_is_not() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        for transient in [
            RequestError::Stream("connection lost".into()),
            RequestError::Timeout(Duration::from_secs(1)),
            RequestError::Broker {
                code: ErrorCode::Throttled,
                message: "busy".into(),
                retry_after_ms: 10,
            },
        ] {
            let error = login_failed(addr, transient);
            assert!(
                matches!(&error, ConnectError::Connect { addr: a, .. } if *a == addr),
                "{error:?}"
            );
            assert!(
                error.to_string().contains("login did not complete"),
                "{error}"
            );
        }
        for refusal in [
            RequestError::Broker {
                code: ErrorCode::AuthenticationFailed,
                message: "wrong password".into(),
                retry_after_ms: 0,
            },
            RequestError::Authentication("server signature".into()),
        ] {
            let error = login_failed(addr, refusal);
            assert!(
                matches!(error, ConnectError::Authentication(_)),
                "{error:?}"
            );
        }
    }
}
