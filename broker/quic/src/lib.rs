//! herald-quic: the QUIC plumbing both ends of Herald's broker protocol share, so that the
//! broker (herald-broker) and its client (herald-broker-client) agree on it without one
//! depending on the other.
//!
//! What lives here: the ALPN protocol both ends speak ([`ALPN`]), the quinn transport
//! settings both ends use ([`transport`], with the path-MTU discovery bound), the UDP socket
//! with buffers sized for bursts of large requests ([`bind_udp`]), the endpoint over it with
//! large packets where the path carries them ([`endpoint`]), reading a
//! frame's body off a stream into a buffer that grows with the data received ([`read_body`]),
//! certificate fingerprints, which the broker logs and clients pin ([`fingerprint`]), and the
//! TLS crypto provider every endpoint uses ([`crypto_provider`]).
//! TLS configuration (certificates, pinning verifiers) stays with each end. The Raft
//! transport of the cluster will live beside it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::congestion::ControllerFactory;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use sha2::{Digest, Sha256};

/// The TLS crypto provider of every Herald QUIC endpoint (clients, brokers, cluster nodes):
/// ring's, with the TLS 1.3 suite AES-128-GCM preferred to AES-256-GCM. Both are TLS 1.3's
/// standard suites; AES-128 takes 10 AES rounds per block instead of 14, and every byte a
/// cluster produces is encrypted and decrypted three times (client to leader, leader to each
/// follower), so the cheaper suite is a measurable share of a node's CPU. A rustls server
/// takes the client's order, so both ends share this one.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let preferred = cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != preferred);
    Arc::new(provider)
}

/// The ALPN protocol both ends speak.
pub const ALPN: &[u8] = b"herald/1";
/// Largest UDP payload path-MTU discovery may try (IPv4's maximum is 65,507).
pub const MTU_DISCOVERY_UPPER_BOUND_BYTES: u16 = 65_000;
/// Capacity a frame buffer starts with; it grows with the data actually received.
pub const READ_BUFFER_INITIAL_BYTES: usize = 64 * 1024;

/// Receive and send buffer asked for each endpoint's UDP socket. A 1 MiB request arrives as
/// ~700 datagrams in a burst; in the kernel's default buffer (208 KiB on most Linux systems)
/// part of the burst was dropped, and QUIC's loss recovery then held that request back: 451
/// drops in 300 requests of 1 MiB and a slowest 0.1 % of 35-65 ms, against none and 10-17 ms
/// with 4 MiB (bench/RESULTS.md, issue 18). The kernel grants at most `net.core.rmem_max` /
/// `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Below this receive buffer a broker warns that bursts may be dropped.
pub const SOCKET_RECEIVE_BUFFER_WARN_BYTES: usize = 1024 * 1024;

/// Binds a UDP socket for a QUIC endpoint at `addr`, with receive and send buffers of
/// [`SOCKET_BUFFER_BYTES`] or as much of it as the kernel grants. Returns the socket and the
/// receive buffer the kernel reports it granted (Linux reports twice the bytes it counts
/// against, its bookkeeping overhead included).
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<(std::net::UdpSocket, usize)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a kernel that refuses keeps its default, which works, only with more
    // loss under bursts.
    if let Err(error) = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "cannot size the UDP receive buffer");
    }
    if let Err(error) = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "cannot size the UDP send buffer");
    }
    let granted = sock.recv_buffer_size().unwrap_or(0);
    Ok((socket, granted))
}

/// Most bytes one segmented (GSO) send may carry: the kernel refuses a UDP send over 65,507
/// bytes of payload (IPv4's 64 KiB datagram limit) with `EMSGSIZE`.
pub const GSO_SEND_BYTES_MAX: usize = 65_507;
/// Largest UDP payload an endpoint accepts and announces (QUIC's `max_udp_payload_size`);
/// path-MTU discovery grows packets up to it where the path carries them (loopback and
/// jumbo-frame networks), and stays at ~1,472 on Ethernet. Four such packets fill one
/// segmented send. Against quinn's default 1,472 on loopback: 1 KB records produced 1.6-1.8x
/// and consumed 1.5-1.9x as fast, 100 B records 1.2x and 1.5-1.6x (one packet per ~16 KB
/// instead of per ~1.4 KB: less packet processing, header protection and ACKs); 32 KB packets
/// consumed slower again (bench/RESULTS.md, issue 18).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = (GSO_SEND_BYTES_MAX / 4) as u16;

/// Packets in the congestion window a connection starts with, as TCP's initial window.
pub const INITIAL_WINDOW_PACKETS: u64 = 10;

/// A QUIC endpoint on `socket` (from [`bind_udp`]) with packets up to
/// [`MAX_UDP_PAYLOAD_BYTES`], whose segmented sends never exceed what the kernel takes.
pub fn endpoint(
    mut config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    socket: std::net::UdpSocket,
) -> io::Result<quinn::Endpoint> {
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "max UDP payload"))?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let socket = Arc::new(SplitSends {
        inner: runtime.wrap_udp_socket(socket)?,
    });
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// A UDP socket that cuts a segmented send larger than [`GSO_SEND_BYTES_MAX`] into sends the
/// kernel takes. quinn batches up to 10 packets per send; with packets larger than 6.5 KB
/// that can exceed what one send may carry, the kernel answers `EMSGSIZE`, and quinn-udp
/// takes that for a lost MTU probe and drops the whole batch silently (loss recovery then
/// stalls the stream: larger packets without this measured 25-30 % slower, not faster).
#[derive(Debug)]
struct SplitSends {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl AsyncUdpSocket for SplitSends {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment = match transmit.segment_size {
            Some(segment) if transmit.contents.len() > GSO_SEND_BYTES_MAX => segment,
            _ => return self.inner.try_send(transmit),
        };
        let per_send = (GSO_SEND_BYTES_MAX / segment).max(1) * segment;
        for (index, contents) in transmit.contents.chunks(per_send).enumerate() {
            let part = Transmit {
                contents,
                segment_size: (contents.len() > segment).then_some(segment),
                ..transmit.clone()
            };
            match self.inner.try_send(&part) {
                Ok(()) => {}
                // Nothing sent yet: quinn waits for the socket and sends the batch again.
                Err(error) if index == 0 => return Err(error),
                // Part sent: the rest counts as lost and QUIC's recovery sends it again.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Reads exactly `length` bytes (already checked against the frame limit) chunk by chunk into
/// one buffer that grows as data arrives: no zero-filling, no up-front allocation of what a
/// peer merely announced.
pub async fn read_body(
    recv: &mut quinn::RecvStream,
    length: usize,
) -> Result<Vec<u8>, quinn::ReadError> {
    let mut body = Vec::with_capacity(length.min(READ_BUFFER_INITIAL_BYTES));
    while body.len() < length {
        match recv.read_chunk(length - body.len(), true).await? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => return Err(quinn::ReadError::ClosedStream),
        }
    }
    Ok(body)
}

/// Transport settings shared by both ends: windows large enough for 8 MiB batches in flight
/// on several streams (a small window is what slows Iggy's QUIC path).
pub fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(64 * 1024 * 1024));
    transport.send_window(64 * 1024 * 1024);
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    // Path-MTU discovery grows packets past the 1,200-byte minimum up to the smaller of this
    // bound and the peer's announced maximum UDP payload (MAX_UDP_PAYLOAD_BYTES, see
    // `endpoint`).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_UPPER_BOUND_BYTES);
    transport.mtu_discovery_config(Some(mtu));
    // A congestion window of ten packets of the path's size to start with (see
    // `TenPackets`).
    transport.congestion_controller_factory(Arc::new(TenPacketsFactory));
    // A dead peer is noticed within 10 s; keep-alives keep a quiet connection open.
    transport.keep_alive_interval(Some(Duration::from_secs(3)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        10_000,
    ))));
    transport
}

/// Builds [`TenPackets`] controllers.
#[derive(Debug)]
struct TenPacketsFactory;

impl ControllerFactory for TenPacketsFactory {
    fn build(
        self: Arc<Self>,
        now: std::time::Instant,
        current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        Box::new(TenPackets {
            inner: cubic(now, current_mtu),
            congested: false,
            now,
        })
    }
}

/// quinn's CUBIC starting at [`INITIAL_WINDOW_PACKETS`] packets of `mtu` bytes.
fn cubic(now: std::time::Instant, mtu: u16) -> Box<dyn quinn::congestion::Controller> {
    let mut config = quinn::congestion::CubicConfig::default();
    config.initial_window(INITIAL_WINDOW_PACKETS * u64::from(mtu));
    Arc::new(config).build(now, mtu)
}

/// quinn's CUBIC with an initial window of [`INITIAL_WINDOW_PACKETS`] packets of the path's
/// current size, which keeps up with path-MTU discovery until the first congestion event, as
/// TCP's initial window counts segments (Linux starts a loopback connection at ten 64 KiB
/// segments). quinn's default of 14,720 bytes, raised to two packets once discovery grows
/// them, left two 16 KiB packets on loopback: the first large answer on a connection waited
/// out the peer's 25 ms delayed ACK (29 ms first fetches in half the bench runs;
/// bench/RESULTS.md, issue 18), while a fixed ten 16 KiB packets would be 111 packets on an
/// Ethernet path.
struct TenPackets {
    inner: Box<dyn quinn::congestion::Controller>,
    /// A congestion event happened: the window is CUBIC's alone from then on.
    congested: bool,
    /// The latest time the controller was told of, to build a fresh controller at.
    now: std::time::Instant,
}

impl quinn::congestion::Controller for TenPackets {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.now = now;
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.now = now;
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.now = now;
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.congested = true;
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        // Before any congestion CUBIC is in slow start with nothing but its window to
        // remember, so a fresh one at the larger initial window loses nothing.
        if !self.congested && self.inner.window() < INITIAL_WINDOW_PACKETS * u64::from(new_mtu) {
            self.inner = cubic(self.now, new_mtu);
        } else {
            self.inner.on_mtu_update(new_mtu);
        }
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(TenPackets {
            inner: self.inner.clone_box(),
            congested: self.congested,
            now: self.now,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// SHA-256 of a certificate's DER bytes, hex encoded.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// AES-128-GCM comes first; every other suite of ring's is still offered, in its order.
    #[test]
    fn the_provider_prefers_aes_128_gcm_and_keeps_the_others() {
        use rustls::crypto::ring::{cipher_suite, default_provider};
        let names = |provider: &rustls::crypto::CryptoProvider| -> Vec<rustls::CipherSuite> {
            provider.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        let ours = names(&crypto_provider());
        let ring = names(&default_provider());
        assert_eq!(ours[0], cipher_suite::TLS13_AES_128_GCM_SHA256.suite());
        assert_eq!(ours.len(), ring.len());
        let rest: Vec<_> = ring.iter().filter(|s| **s != ours[0]).copied().collect();
        assert_eq!(ours[1..], rest[..]);
    }

    /// Records what it is asked to send; refuses with `WouldBlock` from the `refuse_from`th send.
    #[derive(Debug, Default)]
    struct Recording {
        sends: Mutex<Vec<(Option<usize>, Vec<u8>)>>,
        refuse_from: Option<usize>,
    }

    impl AsyncUdpSocket for Recording {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            unimplemented!("not polled in these tests")
        }

        fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
            let mut sends = self.sends.lock().expect("lock");
            if self.refuse_from.is_some_and(|from| sends.len() >= from) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            sends.push((transmit.segment_size, transmit.contents.to_vec()));
            Ok(())
        }

        fn poll_recv(
            &self,
            _: &mut Context,
            _: &mut [io::IoSliceMut<'_>],
            _: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }

        fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
            Ok("127.0.0.1:1".parse().expect("addr"))
        }
    }

    /// A splitting socket over a recording one.
    fn split_over_recording() -> (Arc<Recording>, SplitSends) {
        let inner = Arc::new(Recording::default());
        let socket = SplitSends {
            inner: inner.clone(),
        };
        (inner, socket)
    }

    /// (bytes, segment size) of each recorded send.
    fn shapes(sends: &[(Option<usize>, Vec<u8>)]) -> Vec<(usize, Option<usize>)> {
        sends
            .iter()
            .map(|(segment, bytes)| (bytes.len(), *segment))
            .collect()
    }

    fn transmit(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: "127.0.0.1:2".parse().expect("addr"),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    /// The window starts at ten packets of the path's size and follows path-MTU discovery up,
    /// until a congestion event: from then on only CUBIC moves it.
    #[test]
    fn the_initial_window_is_ten_packets_of_the_path_size() {
        let now = std::time::Instant::now();
        let mut controller = Arc::new(TenPacketsFactory).build(now, 1200);
        assert_eq!(controller.window(), 12_000);
        controller.on_mtu_update(1472);
        assert_eq!(controller.window(), 14_720);
        controller.on_mtu_update(MAX_UDP_PAYLOAD_BYTES);
        assert_eq!(controller.window(), 10 * u64::from(MAX_UDP_PAYLOAD_BYTES));
        controller.on_congestion_event(now, now, false, 1000);
        let after_loss = controller.window();
        assert!(after_loss < 10 * u64::from(MAX_UDP_PAYLOAD_BYTES));
        controller.on_mtu_update(20_000);
        assert!(controller.window() < 10 * 20_000, "{}", controller.window());
    }

    /// Ten full-size packets in one batch go out as sends of at most four (what the kernel
    /// takes), in order, each segmented at the packet size; a last short packet stays last.
    #[test]
    fn a_batch_larger_than_one_send_is_cut_into_sends_the_kernel_takes() {
        let (inner, socket) = split_over_recording();
        let segment = usize::from(MAX_UDP_PAYLOAD_BYTES);
        let contents: Vec<u8> = (0..9 * segment + 100).map(|i| (i % 251) as u8).collect();
        socket
            .try_send(&transmit(&contents, Some(segment)))
            .expect("sent");
        let sends = inner.sends.lock().expect("lock");
        let shapes = shapes(&sends);
        assert_eq!(
            shapes,
            [
                (4 * segment, Some(segment)),
                (4 * segment, Some(segment)),
                (segment + 100, Some(segment)),
            ]
        );
        assert!(sends
            .iter()
            .all(|(_, bytes)| bytes.len() <= GSO_SEND_BYTES_MAX));
        let joined: Vec<u8> = sends.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
        assert_eq!(joined, contents);
    }

    /// What fits in one send passes through untouched, a lone last packet unsegmented.
    #[test]
    fn a_batch_that_fits_is_sent_as_it_is() {
        let (inner, socket) = split_over_recording();
        let small = vec![7u8; 10 * 1472];
        socket
            .try_send(&transmit(&small, Some(1472)))
            .expect("sent");
        let segment = usize::from(MAX_UDP_PAYLOAD_BYTES);
        let five = vec![9u8; 4 * segment + 10];
        socket
            .try_send(&transmit(&five, Some(segment)))
            .expect("sent");
        let sends = inner.sends.lock().expect("lock");
        let shapes = shapes(&sends);
        assert_eq!(
            shapes,
            [
                (10 * 1472, Some(1472)),
                (4 * segment, Some(segment)),
                (10, None)
            ]
        );
    }

    /// A full socket before anything went out is reported, so quinn retries the batch; once
    /// part went out the rest is left to loss recovery instead of being sent twice.
    #[test]
    fn a_full_socket_is_reported_only_before_the_first_send() {
        let segment = usize::from(MAX_UDP_PAYLOAD_BYTES);
        let contents = vec![1u8; 8 * segment];
        let refusing = Arc::new(Recording {
            refuse_from: Some(0),
            ..Recording::default()
        });
        let error = SplitSends { inner: refusing }
            .try_send(&transmit(&contents, Some(segment)))
            .expect_err("nothing sent");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        let half = Arc::new(Recording {
            refuse_from: Some(1),
            ..Recording::default()
        });
        SplitSends {
            inner: half.clone(),
        }
        .try_send(&transmit(&contents, Some(segment)))
        .expect("half sent counts as sent");
        assert_eq!(half.sends.lock().expect("lock").len(), 1);
    }

    /// The endpoint's socket gets the buffer asked for, or all the kernel allows
    /// (`net.core.rmem_max`; Linux reports twice what it counts).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_bound_socket_gets_the_receive_buffer_the_kernel_allows() {
        let allowed: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("rmem_max")
            .trim()
            .parse()
            .expect("a number");
        let (socket, granted) = bind_udp("127.0.0.1:0".parse().expect("addr")).expect("binds");
        assert_eq!(granted, 2 * allowed.min(SOCKET_BUFFER_BYTES));
        assert!(socket.local_addr().expect("addr").port() != 0);
    }
}
