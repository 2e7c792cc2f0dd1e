//! herald-quic: the QUIC plumbing both ends of Herald's broker protocol share, so that the
//! broker (herald-broker) and its client (herald-broker-client) agree on it without one
//! depending on the other.
//!
//! What lives here: the ALPN protocol both ends speak ([`ALPN`]), the quinn transport
//! settings both ends use ([`transport`], with the path-MTU discovery bound), reading a
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
