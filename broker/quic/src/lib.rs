//! herald-quic: the QUIC plumbing both ends of Herald's broker protocol share, so that the
//! broker (herald-broker) and its client (herald-broker-client) agree on it without one
//! depending on the other.
//!
//! What lives here: the ALPN protocol both ends speak ([`ALPN`]), the quinn transport
//! settings both ends use ([`transport`], with the path-MTU discovery bound), the UDP socket
//! with buffers sized for bursts of large requests ([`bind_udp`]), reading a
//! frame's body off a stream into a buffer that grows with the data received ([`read_body`]),
//! and certificate fingerprints, which the broker logs and clients pin ([`fingerprint`]).
//! TLS configuration (certificates, pinning verifiers) stays with each end. The Raft
//! transport of the cluster will live beside it.

use std::time::Duration;

use sha2::{Digest, Sha256};

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
    // Path-MTU discovery may grow packets past the 1,200-byte minimum; in practice it stops at
    // the peer's announced maximum UDP payload, quinn's default 1,472 (the endpoint setting),
    // so loopback runs at Ethernet size too. Raising that setting to 16 KiB measured no
    // better on loopback, and to 65,000 some 30 times worse (bench/RESULTS.md, issue 18):
    // GSO and GRO already batch 1,472-byte datagrams.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_UPPER_BOUND_BYTES);
    transport.mtu_discovery_config(Some(mtu));
    // A dead peer is noticed within 10 s; keep-alives keep a quiet connection open.
    transport.keep_alive_interval(Some(Duration::from_secs(3)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        10_000,
    ))));
    transport
}

/// SHA-256 of a certificate's DER bytes, hex encoded.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

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
