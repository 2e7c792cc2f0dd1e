//! What the transport and cluster tests share: a cluster CA that signs node certificates,
//! endpoints on 127.0.0.1, produced batches.

#![allow(dead_code)]

use std::sync::Arc;

use herald_raft::net::{self, NodeTls};
use herald_raft::Proposal;
use herald_wire::batch::{self, BatchBuilder, Record};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct Ca {
    pub(crate) issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Self { issuer }
    }

    /// A node's TLS: a certificate this CA signed for the node name, trusting this CA.
    pub(crate) fn node(&self) -> NodeTls {
        let key = KeyPair::generate().expect("key");
        let certificate = CertificateParams::new(vec![net::NODE_SERVER_NAME.to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("signed");
        NodeTls {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cluster_ca: vec![CertificateDer::from(self.issuer.der().to_vec())],
        }
    }
}

/// A node's Raft endpoint on 127.0.0.1 (server and client side).
pub(crate) fn endpoint(tls: &NodeTls) -> quinn::Endpoint {
    endpoint_at(tls, "127.0.0.1:0".parse().expect("addr"))
}

/// A node's endpoint bound to `addr`.
pub(crate) fn endpoint_at(tls: &NodeTls, addr: std::net::SocketAddr) -> quinn::Endpoint {
    let (socket, _) = herald_quic::bind_udp(addr).expect("udp");
    let mut endpoint = herald_quic::endpoint(
        quinn::EndpointConfig::default(),
        Some(net::server_config(tls).expect("server config")),
        socket,
    )
    .expect("endpoint");
    endpoint.set_default_client_config(net::client_config(tls).expect("client config"));
    endpoint
}

/// A client that trusts the cluster's CA and presents no certificate.
pub(crate) fn anonymous_client(ca: &Ca) -> quinn::ClientConfig {
    let provider = herald_quic::crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.issuer.der().to_vec()))
        .expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![net::RAFT_ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic"),
    ))
}

/// A produced batch of one record holding `value`, its append time stamped.
pub(crate) fn proposal(value: &str) -> Proposal {
    Proposal::new(stamped(BatchBuilder::new(), &[value], 1_000))
}

/// `builder`'s batch (plain or a producer's) of one record per value, its append time
/// stamped `append_time_ms`.
pub(crate) fn stamped(mut builder: BatchBuilder, values: &[&str], append_time_ms: i64) -> Vec<u8> {
    for value in values {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        });
    }
    let mut bytes = builder.encode().expect("batch");
    batch::stamp(&mut bytes, 0, append_time_ms);
    bytes
}
