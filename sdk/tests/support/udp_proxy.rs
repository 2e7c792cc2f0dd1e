//! A UDP proxy for fault tests, between QUIC clients and a broker: it forwards datagrams both
//! ways and, when told, loses them. `Faults::lose_answers` loses every datagram from the
//! broker to its clients (the requests still arrive and are handled: only the answers are
//! lost); `Faults::set_loss_per_mille` loses a seeded share of the datagrams either way.
//!
//! Each client address gets its own upstream socket, so the broker sees one peer per client
//! and a client that reconnects from another port is forwarded as well. The proxy binds
//! 127.0.0.1 (the broker's certificate is pinned by fingerprint, not tied to an address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// Largest datagram forwarded: QUIC's path-MTU discovery grows packets up to 65,000 bytes
/// on loopback (`herald_quic::MTU_DISCOVERY_UPPER_BOUND_BYTES`).
pub(crate) const DATAGRAM_BYTES_MAX: usize = 65_535;
/// Client addresses forwarded at once; datagrams from any further one are dropped, so the
/// proxy's state stays bounded.
pub(crate) const CLIENTS_MAX: usize = 64;
/// Pause after a socket error before reading again (a connected socket reports the broker's
/// ICMP "port unreachable" as an error on the next read), so a failing socket does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(5);

/// Which datagrams the proxy loses; changed while it runs.
#[derive(Debug)]
pub(crate) struct Faults {
    /// Lose every datagram from the broker to its clients.
    answers_lost: AtomicBool,
    /// Lose this many per thousand datagrams, either way.
    loss_per_mille: AtomicU32,
    /// xorshift64 states, one per direction, so each direction's sequence of loss decisions
    /// (lose, forward, forward, ...) is the same in every run with the same seed. Which
    /// datagram each decision falls on is not: that depends on timing (how many datagrams
    /// QUIC sends, its retransmissions and acknowledgements, and how the two directions and
    /// the clients interleave), so a seed does not replay the same losses exactly.
    to_broker_rng: Mutex<u64>,
    to_client_rng: Mutex<u64>,
    /// Datagrams lost so far.
    lost: AtomicU64,
}

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToBroker,
    ToClient,
}

impl Faults {
    fn new(seed: u64) -> Self {
        // xorshift never leaves 0, so neither state may start there; the golden-ratio
        // constant gives the other direction a stream of its own.
        let to_client = seed ^ 0x9E37_79B9_7F4A_7C15;
        Self {
            answers_lost: AtomicBool::new(false),
            loss_per_mille: AtomicU32::new(0),
            to_broker_rng: Mutex::new(seed.max(1)),
            to_client_rng: Mutex::new(to_client.max(1)),
            lost: AtomicU64::new(0),
        }
    }

    /// Loses (`true`) or forwards again (`false`) every datagram from the broker.
    pub(crate) fn lose_answers(&self, lose: bool) {
        self.answers_lost.store(lose, Ordering::SeqCst);
    }

    /// Loses `per_mille` of every thousand datagrams either way (0 turns it off).
    pub(crate) fn set_loss_per_mille(&self, per_mille: u32) {
        self.loss_per_mille
            .store(per_mille.min(1_000), Ordering::SeqCst);
    }

    /// Datagrams lost so far.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// Whether to lose the next datagram going `direction`.
    fn lose(&self, direction: Direction) -> bool {
        let blackout = direction == Direction::ToClient && self.answers_lost.load(Ordering::SeqCst);
        let per_mille = u64::from(self.loss_per_mille.load(Ordering::SeqCst));
        let lost = blackout || (per_mille > 0 && self.next_random(direction) % 1_000 < per_mille);
        if lost {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        lost
    }

    fn next_random(&self, direction: Direction) -> u64 {
        let state = match direction {
            Direction::ToBroker => &self.to_broker_rng,
            Direction::ToClient => &self.to_client_rng,
        };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        *state = xorshift(*state);
        *state
    }
}

/// Marsaglia's xorshift64: a small deterministic generator, plenty for picking datagrams.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A running proxy; dropping it stops it (and every per-client task).
pub(crate) struct UdpProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl UdpProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream`, with seeded
    /// loss decisions (no loss until told).
    pub(crate) async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let faults = Arc::new(Faults::new(seed));
        let task = tokio::spawn(forward(front, upstream, faults.clone()));
        Ok(Self { addr, faults, task })
    }

    /// Where clients connect instead of the broker.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards each client's datagrams to the broker through that client's upstream socket; a
/// task per client forwards the broker's datagrams back.
async fn forward(front: Arc<UdpSocket>, upstream: SocketAddr, faults: Arc<Faults>) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped with this task when the proxy stops, which aborts the per-client tasks.
    let mut answering = JoinSet::new();
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let (length, client) = match front.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(_) => {
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let socket = match clients.get(&client) {
            Some(socket) => socket.clone(),
            None => {
                if clients.len() >= CLIENTS_MAX {
                    continue;
                }
                let Ok(socket) = connect_upstream(upstream).await else {
                    continue;
                };
                let socket = Arc::new(socket);
                clients.insert(client, socket.clone());
                answering.spawn(answer(
                    front.clone(),
                    socket.clone(),
                    client,
                    faults.clone(),
                ));
                socket
            }
        };
        if faults.lose(Direction::ToBroker) {
            continue;
        }
        let Some(datagram) = buffer.get(..length) else {
            continue;
        };
        // UDP: a datagram the kernel refuses is as good as lost on the way.
        let _ = socket.send(datagram).await;
    }
}

/// A socket of its own towards the broker, for one client.
async fn connect_upstream(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

/// Forwards the broker's datagrams for `client` back to it, unless they are to be lost.
async fn answer(
    front: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    faults: Arc<Faults>,
) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let length = match socket.recv(&mut buffer).await {
            Ok(length) => length,
            Err(_) => {
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if faults.lose(Direction::ToClient) {
            continue;
        }
        let Some(datagram) = buffer.get(..length) else {
            continue;
        };
        let _ = front.send_to(datagram, client).await;
    }
}
