//! Following partition leaders: [`Router`] keeps one connection per broker it talks to and a
//! cache of each topic's partition leaders (from the `Metadata` request), so a request for a
//! partition goes to the node that leads it. A single broker answers `Metadata` with no nodes:
//! then every partition goes to the bootstrap connection, as before clusters existed.
//!
//! The cache is only a hint. A request that meets `NotLeader`, or whose connection failed,
//! reports it with [`Router::failed`]: the topic's leaders are forgotten (asked again before
//! the next request) and a failed connection is dropped (dialled again when next needed). A
//! caller retries with its usual backoff; the router never retries on its own, so an
//! idempotent producer's resends stay its own, in order, under the same producer id, epoch and
//! sequences.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_wire::limits::PARTITIONS_PER_TOPIC_MAX;
use herald_wire::messages::TopicMetadata;
use herald_wire::ErrorCode;

use crate::{BrokerClient, ConnectError, Credentials, RequestError, Trust};

/// Topics whose leaders one router remembers (least recently asked forgotten first).
pub const ROUTED_TOPICS_MAX: usize = 1024;
/// Connections to distinct brokers one router keeps (a cluster's nodes).
pub const ROUTED_CONNECTIONS_MAX: usize = 64;
/// How long a metadata lookup waits for the connections it holds before it also asks on a
/// fresh bootstrap connection.
pub const REFRESH_HEDGE_AFTER: Duration = Duration::from_millis(250);
/// How long one dial may take before the request that needed it fails (retryable).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes connections: `None` for any broker of the bootstrap list, `Some(addr)` for that one.
pub type Dial = Arc<
    dyn Fn(
            Option<SocketAddr>,
        ) -> Pin<Box<dyn Future<Output = Result<BrokerClient, ConnectError>> + Send>>
        + Send
        + Sync,
>;

/// A dialer for a bootstrap list: [`BrokerClient::connect_any`] over `bootstrap` for any
/// broker, [`BrokerClient::connect_with`] for a named one, both with `trust` and
/// `credentials` (a cluster's nodes present certificates of one trust and check the same
/// credentials).
pub fn dialer(bootstrap: Vec<SocketAddr>, trust: Trust, credentials: Credentials) -> Dial {
    let bootstrap: Arc<[SocketAddr]> = bootstrap.into();
    Arc::new(move |addr| {
        let (bootstrap, trust, credentials) =
            (bootstrap.clone(), trust.clone(), credentials.clone());
        Box::pin(async move {
            match addr {
                Some(addr) => BrokerClient::connect_with(addr, trust, &credentials).await,
                None => BrokerClient::connect_any(&bootstrap, trust, &credentials).await,
            }
        })
    })
}

/// A connection handed out by [`Router::leader`] or [`Router::any`]; given back to
/// [`Router::failed`] when a request on it failed.
#[derive(Clone)]
pub struct Route {
    pub client: BrokerClient,
    /// The broker this route was picked for (`None`: the bootstrap connection).
    pub node: Option<SocketAddr>,
}

/// One answer to a metadata lookup: from a held connection, or from a fresh bootstrap one.
enum Asked {
    Held(Route, Result<TopicMetadata, RequestError>),
    Fresh(Result<(BrokerClient, TopicMetadata), RequestError>),
}

/// Where a partition's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// The bootstrap connection (a single broker, or a partition without a known leader: the
    /// broker there answers `NotLeader` or serves it).
    Any,
    Node(SocketAddr),
}

#[derive(Default)]
struct State {
    any: Option<BrokerClient>,
    nodes: HashMap<SocketAddr, BrokerClient>,
    /// Each topic's partition destinations, least recently asked at the front.
    topics: VecDeque<(String, Arc<Vec<Destination>>)>,
}

/// See the module documentation.
pub struct Router {
    dial: Dial,
    state: Mutex<State>,
    /// Held while dialling a destination (`None`: any bootstrap broker), so that the requests
    /// that all found a connection missing make one; a broker that does not answer holds up
    /// only the requests meant for it.
    dialing: Mutex<HashMap<Option<SocketAddr>, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether a metadata answer named cluster nodes (see [`Router::is_cluster`]).
    cluster: std::sync::atomic::AtomicBool,
}

impl Router {
    /// A router dialling with `dial` (see [`dialer`]), starting with `first` as its bootstrap
    /// connection if given.
    pub fn new(dial: Dial, first: Option<BrokerClient>) -> Self {
        Self {
            dial,
            state: Mutex::new(State {
                any: first,
                ..State::default()
            }),
            dialing: Mutex::default(),
            cluster: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the brokers behind this router form a cluster, as far as it has seen (a
    /// metadata answer named nodes). There a lost connection most likely means a failover,
    /// which another node takes over within an election timeout: worth retrying soon.
    pub fn is_cluster(&self) -> bool {
        self.cluster.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The lock held while dialling `destination`.
    fn dialing(&self, destination: Option<SocketAddr>) -> Arc<tokio::sync::Mutex<()>> {
        let mut dialing = self.dialing.lock().unwrap_or_else(|p| p.into_inner());
        if dialing.len() > ROUTED_CONNECTIONS_MAX {
            // Only locks nobody holds or waits for are forgotten.
            dialing.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        dialing.entry(destination).or_default().clone()
    }

    /// A router over one connection and nothing else: every route is `client` (a request for a
    /// partition led elsewhere is answered `NotLeader`, and no other broker is dialled).
    pub fn fixed(client: BrokerClient) -> Self {
        let only = client.clone();
        Self::new(
            Arc::new(move |_| {
                let only = only.clone();
                Box::pin(async move { Ok(only) })
            }),
            Some(client),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bootstrap connection (for requests any broker answers: metadata, producer ids,
    /// topic administration), dialled if there is none.
    pub async fn any(&self) -> Result<Route, RequestError> {
        if let Some(client) = self.state().any.clone() {
            return Ok(Route { client, node: None });
        }
        let lock = self.dialing(None);
        let _dialing = lock.lock().await;
        if let Some(client) = self.state().any.clone() {
            return Ok(Route { client, node: None });
        }
        let client = self.dial(None).await?;
        self.state().any = Some(client.clone());
        Ok(Route { client, node: None })
    }

    /// The connection to the leader of `topic`'s `partition`, as far as the router knows:
    /// the topic's leaders are asked for first if they are not cached.
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<Route, RequestError> {
        let destination = match self.cached(topic) {
            Some(destinations) => destinations.get(partition as usize).copied(),
            None => self.refresh(topic).await?.get(partition as usize).copied(),
        };
        match destination.unwrap_or(Destination::Any) {
            Destination::Any => self.any().await,
            // A leader that cannot be reached has probably been replaced: its partitions are
            // looked up again next time.
            Destination::Node(addr) => self.node(addr).await.inspect_err(|_| self.forget(topic)),
        }
    }

    /// Reports that a request on `route` for `topic` failed with `error`: a `NotLeader` answer
    /// or a failed connection forgets the topic's leaders, and a failed connection is dropped
    /// (if it is still the one in use). Other errors change nothing.
    pub fn failed(&self, topic: &str, route: &Route, error: &RequestError) {
        let connection_lost = error.connection_lost();
        let moved = matches!(
            error.code(),
            Some(ErrorCode::NotLeader | ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)
        );
        if !connection_lost && !moved {
            return;
        }
        let mut state = self.state();
        state.topics.retain(|(name, _)| name != topic);
        if connection_lost {
            let id = route.client.stable_id();
            if state.any.as_ref().is_some_and(|c| c.stable_id() == id) {
                state.any = None;
            }
            state.nodes.retain(|_, client| client.stable_id() != id);
        }
    }

    /// Forgets what the router knows of `topic`'s leaders (after it was deleted or changed).
    pub fn forget(&self, topic: &str) {
        self.state().topics.retain(|(name, _)| name != topic);
    }

    fn cached(&self, topic: &str) -> Option<Arc<Vec<Destination>>> {
        let mut state = self.state();
        let at = state.topics.iter().position(|(name, _)| name == topic)?;
        let entry = state.topics.remove(at)?;
        let destinations = entry.1.clone();
        state.topics.push_back(entry);
        Some(destinations)
    }

    /// Asks where `topic`'s partitions are led and caches the answer: on every connection the
    /// router holds at once (the first answer wins, so a broker that died without a word
    /// holds nothing up), then, if none answered, on a fresh bootstrap connection. A
    /// connection that failed on the way is dropped.
    async fn refresh(&self, topic: &str) -> Result<Arc<Vec<Destination>>, RequestError> {
        let held: Vec<Route> = {
            let state = self.state();
            let mut held: Vec<Route> = state
                .any
                .iter()
                .map(|client| Route {
                    client: client.clone(),
                    node: None,
                })
                .collect();
            for (addr, client) in &state.nodes {
                if !held
                    .iter()
                    .any(|r| r.client.stable_id() == client.stable_id())
                {
                    held.push(Route {
                        client: client.clone(),
                        node: Some(*addr),
                    });
                }
            }
            held
        };
        // If no held connection answers soon (they may all lead to a node that died without a
        // word, which only the idle timeout reveals), a fresh bootstrap connection asks too.
        let hedge_after = if held.is_empty() {
            Duration::ZERO
        } else {
            REFRESH_HEDGE_AFTER
        };
        let mut asking = tokio::task::JoinSet::new();
        for route in held {
            let topic = topic.to_owned();
            asking.spawn(async move {
                let answer = route.client.metadata(&topic).await;
                Asked::Held(route, answer)
            });
        }
        {
            let (dial, topic) = (self.dial.clone(), topic.to_owned());
            asking.spawn(async move {
                tokio::time::sleep(hedge_after).await;
                let client = match tokio::time::timeout(DIAL_TIMEOUT, dial(None)).await {
                    Ok(Ok(client)) => client,
                    Ok(Err(error)) => {
                        return Asked::Fresh(Err(RequestError::Stream(format!(
                            "cannot connect to any broker: {error}"
                        ))))
                    }
                    Err(_) => return Asked::Fresh(Err(RequestError::Timeout(DIAL_TIMEOUT))),
                };
                let answer = client.metadata(&topic).await;
                Asked::Fresh(answer.map(|metadata| (client, metadata)))
            });
        }
        let mut metadata = None;
        let mut last_error = None;
        while let Some(asked) = asking.join_next().await {
            match asked {
                Ok(Asked::Held(_, Ok(answer))) => {
                    metadata = Some(answer);
                    break;
                }
                Ok(Asked::Held(route, Err(error))) => {
                    if !error.connection_lost() {
                        // An answer (an unknown topic, a refusal): the same from any broker.
                        return Err(error);
                    }
                    self.failed(topic, &route, &error);
                    last_error = Some(error);
                }
                Ok(Asked::Fresh(Ok((client, answer)))) => {
                    // The bootstrap connection in use may be the silent one: this one answered.
                    self.state().any = Some(client);
                    metadata = Some(answer);
                    break;
                }
                Ok(Asked::Fresh(Err(error))) => last_error = Some(error),
                Err(_) => {}
            }
        }
        drop(asking);
        let Some(metadata) = metadata else {
            return Err(last_error.unwrap_or(RequestError::Stream(
                "no broker answered the metadata request".to_owned(),
            )));
        };
        if !metadata.nodes.is_empty() {
            self.cluster
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let destinations = Arc::new(destinations(&metadata).await);
        let mut state = self.state();
        state.topics.retain(|(name, _)| name != topic);
        if state.topics.len() >= ROUTED_TOPICS_MAX {
            state.topics.pop_front();
        }
        state
            .topics
            .push_back((topic.to_owned(), destinations.clone()));
        Ok(destinations)
    }

    /// The connection to the broker at `addr`, dialled if there is none.
    async fn node(&self, addr: SocketAddr) -> Result<Route, RequestError> {
        if let Some(client) = self.state().nodes.get(&addr).cloned() {
            return Ok(Route {
                client,
                node: Some(addr),
            });
        }
        let lock = self.dialing(Some(addr));
        let _dialing = lock.lock().await;
        if let Some(client) = self.state().nodes.get(&addr).cloned() {
            return Ok(Route {
                client,
                node: Some(addr),
            });
        }
        let client = self.dial(Some(addr)).await?;
        let mut state = self.state();
        if state.nodes.len() >= ROUTED_CONNECTIONS_MAX {
            // More nodes than a cluster has: forget the others (dialled again when needed).
            state.nodes.clear();
        }
        state.nodes.insert(addr, client.clone());
        Ok(Route {
            client,
            node: Some(addr),
        })
    }

    async fn dial(&self, addr: Option<SocketAddr>) -> Result<BrokerClient, RequestError> {
        match tokio::time::timeout(DIAL_TIMEOUT, (self.dial)(addr)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(RequestError::Stream(match addr {
                Some(addr) => format!("cannot connect to the broker at {addr}: {error}"),
                None => format!("cannot connect to any broker: {error}"),
            })),
            Err(_) => Err(RequestError::Timeout(DIAL_TIMEOUT)),
        }
    }
}

/// Each partition's destination in `metadata`: its leader's address, or the bootstrap
/// connection when the leader is unknown or its address does not resolve (or on a single
/// broker, which names no nodes).
async fn destinations(metadata: &TopicMetadata) -> Vec<Destination> {
    let mut addresses = HashMap::new();
    for node in &metadata.nodes {
        let resolved = match node.addr.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => tokio::net::lookup_host(node.addr.as_str())
                .await
                .ok()
                .and_then(|mut found| found.next()),
        };
        if let Some(addr) = resolved {
            addresses.insert(node.id, addr);
        }
    }
    let count = metadata
        .partitions
        .iter()
        .filter(|p| p.partition < PARTITIONS_PER_TOPIC_MAX)
        .map(|p| p.partition as usize + 1)
        .max()
        .unwrap_or(0);
    let mut destinations = vec![Destination::Any; count];
    for placement in &metadata.partitions {
        if placement.partition >= PARTITIONS_PER_TOPIC_MAX {
            continue;
        }
        if let Some(addr) = placement.leader.and_then(|id| addresses.get(&id)) {
            destinations[placement.partition as usize] = Destination::Node(*addr);
        }
    }
    destinations
}

#[cfg(test)]
mod tests {
    use herald_wire::messages::{NodeAddress, PartitionPlacement};

    use super::*;

    fn placement(partition: u32, leader: Option<u64>) -> PartitionPlacement {
        PartitionPlacement {
            partition,
            leader,
            replicas: vec![1, 2, 3],
        }
    }

    #[tokio::test]
    async fn each_partition_goes_to_its_leaders_address_or_the_bootstrap_connection() {
        let metadata = TopicMetadata {
            nodes: vec![
                NodeAddress {
                    id: 1,
                    addr: "127.0.0.1:7170".to_owned(),
                },
                NodeAddress {
                    id: 2,
                    addr: "127.0.0.1:7172".to_owned(),
                },
            ],
            partitions: vec![
                placement(0, Some(2)),
                // An election under way.
                placement(1, None),
                // A leader whose address this answer does not name.
                placement(2, Some(3)),
                placement(3, Some(1)),
                // Out of any topic's range: ignored, not a giant table.
                placement(u32::MAX, Some(1)),
            ],
        };
        let addr = |text: &str| Destination::Node(text.parse().expect("addr"));
        assert_eq!(
            destinations(&metadata).await,
            [
                addr("127.0.0.1:7172"),
                Destination::Any,
                Destination::Any,
                addr("127.0.0.1:7170"),
            ]
        );
    }

    #[tokio::test]
    async fn a_single_broker_serves_every_partition_on_the_bootstrap_connection() {
        let metadata = TopicMetadata {
            nodes: Vec::new(),
            partitions: (0..3).map(|p| placement(p, None)).collect(),
        };
        assert_eq!(destinations(&metadata).await, [Destination::Any; 3]);
    }
}
