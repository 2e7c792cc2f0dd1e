//! The Raft transport between nodes: QUIC with mutual TLS on its own ALPN ([`RAFT_ALPN`]),
//! one connection per node pair shared by every group, one bidirectional stream per RPC.
//!
//! A node's certificate must chain to the cluster's CA ([`NodeTls::cluster_ca`]) on both
//! ends: a server refuses a client without one, a client a server without one. Certificates
//! name [`NODE_SERVER_NAME`], which clients ask for whatever address they dial.
//!
//! An RPC is a request (kind, group name, body) written and finished, then a response
//! (status, body) read to its end, each bounded by [`RAFT_MESSAGE_BYTES_MAX`]. Bodies are
//! JSON for openraft's small messages; entries travel as (term, index, kind, bytes) with a
//! produced batch's bytes as they are ([`crate::rpc`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use herald_broker_core::storage::Storage;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::BasicNode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::rpc::{self, Kind, RpcError};
use crate::store::StateMachine;
use crate::types::TypeConfig;

/// The ALPN protocol nodes speak to each other.
pub const RAFT_ALPN: &[u8] = b"herald-raft/1";
/// The name every node certificate carries and every node dials.
pub const NODE_SERVER_NAME: &str = "herald-node";
/// Largest request or response (an append carries at most `ENTRIES_READ_BYTES_MAX` of
/// batches plus one batch; a snapshot is small).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most groups one node serves.
pub const GROUPS_MAX: usize = 100_000;
/// Most RPCs one peer connection carries at once.
pub const RPC_STREAMS_MAX: u32 = 1024;
/// Client requests other nodes handed on that this node answers at once; past it one is
/// refused (the node link's streams are the Raft traffic's first).
pub const HANDED_ON_REQUESTS_MAX: usize = 256;
/// Longest this node works on a client request another node handed on (the sender waits a
/// little longer, so an answer it gives up on is not worked on for long after).
pub const HANDED_ON_REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
/// How long a node waits for a peer's connection to be set up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the transport could not be set up or an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    #[error("node {node} at {addr}: {reason}")]
    Connect {
        node: u64,
        addr: String,
        reason: String,
    },
    #[error("node {node}: {reason}")]
    Rpc { node: u64, reason: String },
    #[error("node {node} answered: {reason}")]
    Remote { node: u64, reason: String },
    #[error(transparent)]
    Message(#[from] RpcError),
    #[error("this node serves {GROUPS_MAX} groups already")]
    TooManyGroups,
}

/// A node's TLS identity and the CA every node's certificate chains to.
#[derive(Debug)]
pub struct NodeTls {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cluster_ca: Vec<CertificateDer<'static>>,
}

impl NodeTls {
    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in &self.cluster_ca {
            roots
                .add(certificate.clone())
                .map_err(|e| NetError::Tls(format!("cluster CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(NetError::Tls("no cluster CA certificate".to_owned()));
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    herald_quic::crypto_provider()
}

/// The server side of a node's Raft endpoint: TLS 1.3, a client certificate required and
/// verified against the cluster CA.
pub fn server_config(tls: &NodeTls) -> Result<quinn::ServerConfig, NetError> {
    let failed = |e: &dyn std::fmt::Display| NetError::Tls(e.to_string());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(tls.roots()?, provider())
            .build()
            .map_err(|e| failed(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| failed(&e))?;
    config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    config.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(|e| failed(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport()));
    Ok(server)
}

/// The client side of a node's Raft endpoint: presents the node's certificate, trusts
/// servers whose certificate chains to the cluster CA.
pub fn client_config(tls: &NodeTls) -> Result<quinn::ClientConfig, NetError> {
    let failed = |e: &dyn std::fmt::Display| NetError::Tls(e.to_string());
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed(&e))?
        .with_root_certificates(tls.roots()?)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| failed(&e))?;
    config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(|e| failed(&e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport()));
    Ok(client)
}

fn transport() -> quinn::TransportConfig {
    let mut transport = herald_quic::transport();
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(RPC_STREAMS_MAX));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Peers that stop answering are noticed: RPCs time out by themselves, the connection is
    // dropped after this much silence and dialled again.
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    transport
}

type GroupRaft<S> = openraft::Raft<TypeConfig, StateMachine<S>>;

/// Answers a client request handed on by another node ([`Kind::Request`]): the request's
/// bytes in, the response's bytes out, both as the broker encodes them.
pub type RequestHandler = Arc<
    dyn Fn(Vec<u8>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>
        + Send
        + Sync,
>;

/// The groups a node serves, by name: where incoming RPCs go; and who answers client
/// requests handed on by other nodes.
pub struct Groups<S: Storage + Clone + 'static> {
    groups: RwLock<HashMap<String, GroupRaft<S>>>,
    requests: std::sync::OnceLock<RequestHandler>,
    /// Places for handed-on client requests ([`HANDED_ON_REQUESTS_MAX`]).
    request_places: tokio::sync::Semaphore,
}

impl<S: Storage + Clone + 'static> Default for Groups<S> {
    fn default() -> Self {
        Self {
            groups: RwLock::new(HashMap::new()),
            requests: std::sync::OnceLock::new(),
            request_places: tokio::sync::Semaphore::new(HANDED_ON_REQUESTS_MAX),
        }
    }
}

impl<S: Storage + Clone + 'static> Groups<S> {
    /// Sets who answers [`Kind::Request`] RPCs (once; until then they are refused).
    pub fn answer_requests(&self, handler: RequestHandler) {
        let _ = self.requests.set(handler);
    }

    pub fn insert(&self, name: &str, raft: GroupRaft<S>) -> Result<(), NetError> {
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.len() >= GROUPS_MAX && !groups.contains_key(name) {
            return Err(NetError::TooManyGroups);
        }
        groups.insert(name.to_owned(), raft);
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Option<GroupRaft<S>> {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    pub fn get(&self, name: &str) -> Option<GroupRaft<S>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

/// Accepts peers' connections on `endpoint` (built with [`server_config`]) and answers their
/// RPCs from `groups`, until the endpoint is closed.
pub async fn serve<S: Storage + Clone + 'static>(
    endpoint: quinn::Endpoint,
    groups: Arc<Groups<S>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let groups = groups.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%error, "a Raft peer's connection failed to set up");
                    return;
                }
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                let groups = groups.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(send, recv, &groups).await {
                        tracing::debug!(%error, "a Raft RPC failed");
                    }
                });
            }
        });
    }
}

async fn answer<S: Storage + Clone + 'static>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    groups: &Groups<S>,
) -> Result<(), NetError> {
    let request = bytes::Bytes::from(recv.read_to_end(RAFT_MESSAGE_BYTES_MAX).await.map_err(
        |e| NetError::Rpc {
            node: 0,
            reason: e.to_string(),
        },
    )?);
    let (kind, group, body) = rpc::decode_request(&request)?;
    let response = if kind == Kind::Request {
        match (groups.requests.get(), groups.request_places.try_acquire()) {
            (Some(handler), Ok(_place)) => {
                match tokio::time::timeout(HANDED_ON_REQUEST_TIMEOUT, handler(body.to_vec())).await
                {
                    Ok(answer) => {
                        let mut answered = vec![0u8];
                        answered.extend_from_slice(&answer);
                        answered
                    }
                    Err(_) => rpc::encode_failure(&format!(
                        "not answered within {HANDED_ON_REQUEST_TIMEOUT:?}"
                    )),
                }
            }
            (None, _) => rpc::encode_failure("this node does not answer client requests yet"),
            (Some(_), Err(_)) => rpc::encode_failure(&format!(
                "this node already works on {HANDED_ON_REQUESTS_MAX} requests handed on to it"
            )),
        }
    } else {
        match groups.get(&group) {
            None => rpc::encode_failure(&format!("this node does not serve group {group}")),
            Some(raft) => match kind {
                Kind::Append => {
                    let request = rpc::decode_append(&request.slice_ref(body))?;
                    rpc::encode_answer(raft.append_entries(request).await)
                }
                Kind::Vote => {
                    let request: VoteRequest<TypeConfig> = rpc::decode_json(body)?;
                    rpc::encode_answer(raft.vote(request).await)
                }
                Kind::PreVote => {
                    let request: VoteRequest<TypeConfig> = rpc::decode_json(body)?;
                    rpc::encode_answer(raft.pre_vote(request).await)
                }
                Kind::Snapshot => {
                    let (vote, snapshot) = rpc::decode_snapshot(body)?;
                    rpc::encode_answer(raft.install_full_snapshot(vote, snapshot).await)
                }
                Kind::TransferLeader => {
                    let request: TransferLeaderRequest<TypeConfig> = rpc::decode_json(body)?;
                    rpc::encode_answer(raft.handle_transfer_leader(request).await)
                }
                Kind::Forward => {
                    let proposal = crate::Proposal::new(bytes::Bytes::copy_from_slice(body));
                    rpc::encode_answer(
                        raft.client_write(proposal)
                            .await
                            .map(|written| written.data),
                    )
                }
                Kind::Request => rpc::encode_failure("a client request names no group"),
            },
        }
    };
    send.write_all(&response).await.map_err(|e| NetError::Rpc {
        node: 0,
        reason: e.to_string(),
    })?;
    send.finish().map_err(|e| NetError::Rpc {
        node: 0,
        reason: e.to_string(),
    })?;
    // Wait for the peer to read it all before the stream goes.
    let _ = send.stopped().await;
    Ok(())
}

/// This node's connections to its peers, one per peer, dialled on first use and again after
/// one is lost.
pub struct Peers {
    endpoint: quinn::Endpoint,
    /// Each peer's connection behind a lock of its own: dialling a peer that is down (which
    /// takes up to [`CONNECT_TIMEOUT`]) holds up only the RPCs to that peer.
    connections: std::sync::Mutex<HashMap<u64, Slot>>,
}

/// One peer's connection, once dialled.
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

impl Peers {
    /// Peers reached from `endpoint` (its default client config from [`client_config`]).
    pub fn new(endpoint: quinn::Endpoint) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            connections: std::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn connection(&self, node: u64, addr: &str) -> Result<quinn::Connection, NetError> {
        let connect_failed = |reason: String| NetError::Connect {
            node,
            addr: addr.to_owned(),
            reason,
        };
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_default()
            .clone();
        let mut connection_slot = slot.lock().await;
        if let Some(connection) = connection_slot.as_ref() {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        let socket: SocketAddr = addr
            .parse()
            .map_err(|e: std::net::AddrParseError| connect_failed(e.to_string()))?;
        let connecting = self
            .endpoint
            .connect(socket, NODE_SERVER_NAME)
            .map_err(|e| connect_failed(e.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_failed("timed out".to_owned()))?
            .map_err(|e| connect_failed(e.to_string()))?;
        *connection_slot = Some(connection.clone());
        Ok(connection)
    }

    /// Sends one request to `node` and reads its answer, within `timeout`.
    ///
    /// A connection on which nothing at all arrived while the request waited is closed (the
    /// next call dials again): its peer is down, or was restarted and no longer knows the
    /// connection (a restarted node cannot even reset it: its reset tokens are new), and it
    /// would otherwise stay in use until the idle timeout, with every vote and append to a
    /// live node lost meanwhile. A peer that is merely slow still sends acknowledgements and
    /// keeps its connection.
    async fn call(
        &self,
        node: u64,
        addr: &str,
        mut request: Vec<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let failed = |reason: String| NetError::Rpc { node, reason };
        let timed_out = || failed(format!("no answer within {timeout:?}"));
        let deadline = tokio::time::Instant::now() + timeout;
        let connection = tokio::time::timeout_at(deadline, self.connection(node, addr))
            .await
            .map_err(|_| timed_out())??;
        let heard = connection.stats().udp_rx.datagrams;
        let exchange = async {
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| failed(e.to_string()))?;
            send.write_all_chunks(&mut request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            send.finish().map_err(|e| failed(e.to_string()))?;
            recv.read_to_end(RAFT_MESSAGE_BYTES_MAX)
                .await
                .map_err(|e| failed(e.to_string()))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(answer) => answer,
            Err(_) => {
                if connection.stats().udp_rx.datagrams == heard {
                    connection.close(quinn::VarInt::from_u32(0), b"peer silent");
                }
                Err(timed_out())
            }
        }
    }
}

impl Peers {
    /// Sends a `kind` request with `body` for group `group` to `node` at `addr`: the body of
    /// its answer (a failure the peer reports is [`NetError::Remote`]).
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        node: u64,
        addr: &str,
        kind: Kind,
        group: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let request = rpc::encode_request(kind, group, body)?;
        self.ask_chunks(node, addr, vec![request.into()], timeout)
            .await
    }

    /// [`Peers::ask`] of a request already encoded, as the chunks it is sent in.
    async fn ask_chunks(
        &self,
        node: u64,
        addr: &str,
        request: Vec<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let response = self.call(node, addr, request, timeout).await?;
        rpc::decode_response(&response)
            .map(<[u8]>::to_vec)
            .map_err(|e| match e {
                RpcError::Remote(reason) => NetError::Remote { node, reason },
                other => NetError::Message(other),
            })
    }

    /// [`Peers::ask`], the answer decoded from JSON.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        node: u64,
        addr: &str,
        kind: Kind,
        group: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<T, NetError> {
        let answer = self.ask(node, addr, kind, group, body, timeout).await?;
        Ok(rpc::decode_json(&answer)?)
    }

    /// Hands a client request (`request`: its bytes as the broker encodes them) to `node` at
    /// `addr`, which answers it as its own: the response's bytes.
    pub async fn request(
        &self,
        node: u64,
        addr: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        self.ask(node, addr, Kind::Request, "", request, timeout)
            .await
    }

    /// Hands `proposal` to group `group`'s leader, node `leader` at `addr`: what it was
    /// applied as, once committed there.
    pub async fn forward(
        &self,
        leader: u64,
        addr: &str,
        group: &str,
        proposal: &crate::Proposal,
        timeout: Duration,
    ) -> Result<crate::Applied, NetError> {
        self.exchange(leader, addr, Kind::Forward, group, &proposal.batch, timeout)
            .await
    }
}

/// What a group's Raft uses to reach the other replicas: the node's [`Peers`], addressed by
/// the group's membership (each node's `BasicNode::addr` is its Raft address).
#[derive(Clone)]
pub struct GroupNetwork {
    group: String,
    peers: Arc<Peers>,
}

impl GroupNetwork {
    pub fn new(group: &str, peers: Arc<Peers>) -> Self {
        Self {
            group: group.to_owned(),
            peers,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = Link;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Link {
        Link {
            group: self.group.clone(),
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// One group's link to one peer.
pub struct Link {
    group: String,
    target: u64,
    addr: String,
    peers: Arc<Peers>,
}

impl Link {
    /// One RPC to the peer: `body` (its encoding may have failed) out, the answer decoded.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        body: Result<Vec<u8>, RpcError>,
        timeout: Duration,
    ) -> Result<T, NetError> {
        self.peers
            .exchange(self.target, &self.addr, kind, &self.group, &body?, timeout)
            .await
    }

    /// A `kind` request whose body is `request` as JSON, within the call's soft deadline.
    async fn ask_json<Q: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        request: &Q,
        option: RPCOption,
    ) -> Result<T, RPCError<TypeConfig>> {
        self.ask(kind, rpc::encode_json(request), option.soft_ttl())
            .await
            .map_err(unreachable)
    }
}

fn unreachable(error: NetError) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&error))
}

impl RaftNetworkV2<TypeConfig> for Link {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // The batches go out as they are held (shared with the log's recent entries), not
        // copied into one message.
        let chunks = rpc::append_request_chunks(&self.group, &request)
            .map_err(|e| unreachable(NetError::Message(e)))?;
        let answer = self
            .peers
            .ask_chunks(self.target, &self.addr, chunks, option.soft_ttl())
            .await
            .map_err(unreachable)?;
        rpc::decode_json(&answer).map_err(|e| unreachable(NetError::Message(e)))
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_json(Kind::Vote, &request, option).await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_json(Kind::PreVote, &request, option).await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_json(Kind::TransferLeader, &request, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let body = rpc::encode_snapshot(&vote, &snapshot);
        self.ask(Kind::Snapshot, body, option.soft_ttl())
            .await
            .map_err(|error| StreamingError::Unreachable(Unreachable::new(&error)))
    }
}
