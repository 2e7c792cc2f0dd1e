//! Free loopback ports for the nodes of a test or bench cluster ([`free_udp_addrs`],
//! [`free_tcp_addrs`]), and a seeded UDP relay for fault tests, standing in for the network (`tc netem` is not
//! available on these machines): each target (a broker, a cluster node) is reached through
//! a front address of its own here, and every datagram may be dropped, delayed (which
//! reorders them), or never delivered while its pair of nodes is cut apart or while answers
//! are lost. The same seed makes the same sequence of choices; which datagram each choice
//! falls on depends on timing (QUIC's retransmissions, how directions interleave), so a seed
//! does not replay the very same losses.
//!
//! Senders are told apart by address: a cluster node sends from its Raft socket
//! (`--raft-listen`, the real address) to its peers' front addresses (named in `--peers`), and
//! the relay knows those addresses as the nodes; any other sender (a client) is anonymous, up
//! to [`SENDERS_MAX`] per front. Each sender's datagrams are forwarded from a socket of the
//! relay's own, so the target's answers come back through the relay too and go out again from
//! the front address the sender used.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;

/// Largest datagram relayed (QUIC's packets are at most 64 KiB).
const DATAGRAM_BYTES_MAX: usize = 65_536;
/// Senders forwarded per front at once; datagrams from any further one are dropped, so the
/// relay's state stays bounded.
pub const SENDERS_MAX: usize = 64;
/// Pause after a socket error before reading again, so a failing socket does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// Datagrams held back (delayed) at once; past this a datagram to be delayed is dropped, as a
/// full queue of a real network would.
pub const DELAYED_MAX: usize = 4_096;
/// The id [`Relay::single`] gives its one target.
pub const SINGLE: u64 = 1;

/// What the network does to datagrams that are not cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weather {
    /// Chance that a datagram is dropped, 0 to 1.
    pub loss: f64,
    /// Each datagram waits a random time up to this before it is sent on.
    pub delay_max: Duration,
}

struct Rules {
    weather: Weather,
    /// Pairs of nodes (smaller id first) between which nothing passes.
    cut: BTreeSet<(u64, u64)>,
    /// Whether every datagram from a target back to its senders is lost.
    answers_lost: bool,
    rng: StdRng,
    dropped: u64,
    relayed: u64,
    /// Datagrams waiting out their delay now.
    delayed: usize,
}

/// The relay of a whole cluster (dropped with its tasks when the value goes away).
pub struct Relay {
    rules: Arc<Mutex<Rules>>,
    fronts: BTreeMap<u64, SocketAddr>,
    tasks: Tasks,
}

/// The relay's loops, stopped together.
type Tasks = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

impl Drop for Relay {
    fn drop(&mut self) {
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// A relay in front of each node of `nodes` (id → its real Raft address), deciding with
    /// a generator seeded with `seed`.
    pub async fn start(nodes: &BTreeMap<u64, SocketAddr>, seed: u64) -> std::io::Result<Self> {
        let rules = Arc::new(Mutex::new(Rules {
            weather: Weather::default(),
            cut: BTreeSet::new(),
            answers_lost: false,
            rng: StdRng::seed_from_u64(seed),
            dropped: 0,
            relayed: 0,
            delayed: 0,
        }));
        let senders: Arc<HashMap<SocketAddr, u64>> =
            Arc::new(nodes.iter().map(|(id, addr)| (*addr, *id)).collect());
        let mut fronts = BTreeMap::new();
        let tasks = Tasks::default();
        for (id, target) in nodes {
            let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            fronts.insert(*id, front.local_addr()?);
            let task = tokio::spawn(front_loop(
                front,
                *id,
                *target,
                senders.clone(),
                rules.clone(),
                tasks.clone(),
            ));
            lock(&tasks).push(task);
        }
        Ok(Self {
            rules,
            fronts,
            tasks,
        })
    }

    /// A relay in front of one target (a broker its clients reach through
    /// [`Relay::front`]`(`[`SINGLE`]`)`).
    pub async fn single(target: SocketAddr, seed: u64) -> std::io::Result<Self> {
        Self::start(&BTreeMap::from([(SINGLE, target)]), seed).await
    }

    /// The address node `id`'s peers reach it at.
    pub fn front(&self, id: u64) -> Option<SocketAddr> {
        self.fronts.get(&id).copied()
    }

    /// The network's loss and delay from now on.
    pub fn set_weather(&self, weather: Weather) {
        lock(&self.rules).weather = weather;
    }

    /// Nothing passes between `node` and any other node until [`Relay::heal`].
    pub fn isolate(&self, node: u64) {
        let mut rules = lock(&self.rules);
        for other in self.fronts.keys().filter(|other| **other != node) {
            rules.cut.insert(pair(node, *other));
        }
    }

    /// Every cut is mended.
    pub fn heal(&self) {
        lock(&self.rules).cut.clear();
    }

    /// Loses (or, with `false`, no longer loses) every datagram from a target back to its
    /// senders: requests still arrive and are handled, their answers never come.
    pub fn lose_answers(&self, lose: bool) {
        lock(&self.rules).answers_lost = lose;
    }

    /// Datagrams dropped so far (cut, answers lost, or the weather's loss).
    pub fn lost(&self) -> u64 {
        lock(&self.rules).dropped
    }
}

/// `count` free UDP ports on 127.0.0.1 (the sockets are closed again before a node binds
/// them: nodes of a cluster must know each other's addresses before they start).
pub fn free_udp_addrs(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    free_addrs(
        count,
        || std::net::UdpSocket::bind("127.0.0.1:0"),
        std::net::UdpSocket::local_addr,
    )
}

/// `count` free TCP ports on 127.0.0.1 (closed again, as [`free_udp_addrs`]).
pub fn free_tcp_addrs(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    free_addrs(
        count,
        || std::net::TcpListener::bind("127.0.0.1:0"),
        std::net::TcpListener::local_addr,
    )
}

/// The addresses of `count` sockets bound at once (so that no two are the same), closed
/// again when this returns.
fn free_addrs<T>(
    count: usize,
    bind: impl Fn() -> std::io::Result<T>,
    address: impl Fn(&T) -> std::io::Result<SocketAddr>,
) -> std::io::Result<Vec<SocketAddr>> {
    let sockets: Vec<T> = (0..count).map(|_| bind()).collect::<Result<_, _>>()?;
    sockets.iter().map(address).collect()
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

/// What becomes of one datagram from `from` to `to`: `None` dropped, else sent after a delay.
fn fate(rules: &Mutex<Rules>, from: Option<u64>, to: u64, answer: bool) -> Option<Duration> {
    let mut rules = lock(rules);
    let cut = (answer && rules.answers_lost)
        || from.is_some_and(|from| rules.cut.contains(&pair(from, to)));
    let weather = rules.weather;
    if cut || (weather.loss > 0.0 && rules.rng.random_bool(weather.loss.min(1.0))) {
        rules.dropped += 1;
        return None;
    }
    let max = u64::try_from(weather.delay_max.as_micros()).unwrap_or(u64::MAX);
    if max == 0 {
        rules.relayed += 1;
        return Some(Duration::ZERO);
    }
    if rules.delayed >= DELAYED_MAX {
        rules.dropped += 1;
        return None;
    }
    rules.relayed += 1;
    rules.delayed += 1;
    Some(Duration::from_micros(rules.rng.random_range(0..max)))
}

/// Sends `datagram` on after `delay` (one counted in [`Rules::delayed`] when not zero).
fn send_later(
    socket: Arc<UdpSocket>,
    datagram: Vec<u8>,
    to: SocketAddr,
    delay: Duration,
    rules: &Arc<Mutex<Rules>>,
) {
    if delay.is_zero() {
        // Sent now, in order; a full socket buffer drops it, as a network would.
        let _ = socket.try_send_to(&datagram, to);
        return;
    }
    let rules = rules.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&datagram, to).await;
        lock(&rules).delayed -= 1;
    });
}

/// Datagrams to node `id` at `target`, each from a socket of the relay per sender.
async fn front_loop(
    front: Arc<UdpSocket>,
    id: u64,
    target: SocketAddr,
    senders: Arc<HashMap<SocketAddr, u64>>,
    rules: Arc<Mutex<Rules>>,
    tasks: Tasks,
) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let Ok((length, from)) = front.recv_from(&mut buffer).await else {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        let sender = senders.get(&from).copied();
        let back = match backs.get(&from) {
            Some(back) => back.clone(),
            None if backs.len() >= SENDERS_MAX => continue,
            None => {
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let back = Arc::new(socket);
                backs.insert(from, back.clone());
                let task = tokio::spawn(back_loop(
                    back.clone(),
                    front.clone(),
                    from,
                    sender,
                    id,
                    rules.clone(),
                ));
                lock(&tasks).push(task);
                back
            }
        };
        if let Some(delay) = fate(&rules, sender, id, false) {
            send_later(back, buffer[..length].to_vec(), target, delay, &rules);
        }
    }
}

/// Node `id`'s answers to `peer` (node `sender`), sent on from the front address.
async fn back_loop(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    sender: Option<u64>,
    id: u64,
    rules: Arc<Mutex<Rules>>,
) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let Ok((length, _)) = back.recv_from(&mut buffer).await else {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        // From `id` to the sender: the same pair, the other direction.
        let fate = match sender {
            Some(sender) => fate(&rules, Some(id), sender, true),
            None => fate(&rules, None, id, true),
        };
        if let Some(delay) = fate {
            send_later(
                front.clone(),
                buffer[..length].to_vec(),
                peer,
                delay,
                &rules,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(seed: u64, weather: Weather) -> Mutex<Rules> {
        Mutex::new(Rules {
            weather,
            cut: BTreeSet::new(),
            answers_lost: false,
            rng: StdRng::seed_from_u64(seed),
            dropped: 0,
            relayed: 0,
            delayed: 0,
        })
    }

    #[test]
    fn the_same_seed_makes_the_same_choices_and_a_cut_pair_hears_nothing() {
        let weather = Weather {
            loss: 0.3,
            delay_max: Duration::from_millis(5),
        };
        let (a, b) = (rules(7, weather), rules(7, weather));
        let first: Vec<_> = (0..200).map(|_| fate(&a, Some(1), 2, false)).collect();
        let again: Vec<_> = (0..200).map(|_| fate(&b, Some(1), 2, false)).collect();
        assert_eq!(first, again);
        let dropped = first.iter().filter(|fate| fate.is_none()).count();
        assert!(
            (30..90).contains(&dropped),
            "{dropped} of 200 dropped at 30 %"
        );
        assert!(first
            .iter()
            .flatten()
            .all(|delay| *delay < Duration::from_millis(5)));
        // Held back at most DELAYED_MAX at once: past it, dropped.
        let full = rules(
            7,
            Weather {
                loss: 0.0,
                ..weather
            },
        );
        lock(&full).delayed = DELAYED_MAX;
        assert_eq!(fate(&full, Some(1), 2, false), None);
        lock(&full).delayed = DELAYED_MAX - 1;
        assert!(fate(&full, Some(1), 2, false).is_some());

        let calm = rules(7, Weather::default());
        lock(&calm).cut.insert(pair(2, 1));
        assert!((0..50).all(|_| fate(&calm, Some(1), 2, false).is_none()));
        assert!((0..50).all(|_| fate(&calm, Some(2), 1, true).is_none()));
        assert_eq!(fate(&calm, Some(1), 3, false), Some(Duration::ZERO));
        assert_eq!(lock(&calm).dropped, 100);
        lock(&calm).answers_lost = true;
        assert_eq!(fate(&calm, Some(1), 3, true), None);
        assert_eq!(fate(&calm, None, 3, true), None);
        assert_eq!(fate(&calm, None, 3, false), Some(Duration::ZERO));
    }
}
