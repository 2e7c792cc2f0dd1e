//! `herald cluster up`: a local cluster of brokers in this process, for trying replication.
//! Node i's broker listens on `base_port + 2(i-1)` and its Raft endpoint on the port after;
//! the cluster's CA and the nodes' certificates (for each other) and the one certificate every
//! node serves clients with (so one fingerprint trusts the whole bootstrap list) are
//! generated into `<data-dir>/tls` on first start and reused after.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use herald_broker::broker::{ClusterConfig, Timing};
use herald_broker::BrokerConfig;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Most nodes `cluster up` starts.
pub(crate) const LOCAL_NODES_MAX: u64 = 9;

/// The TLS files of a local cluster: (CA certificate, per node (certificate, key)).
fn certificates(dir: &Path, nodes: u64) -> anyhow::Result<(PathBuf, Vec<(PathBuf, PathBuf)>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    // The CA's name and key are all a node certificate's chain needs: a kept CA signs new
    // node certificates that chain to the kept `ca.pem`.
    let ca_params = || -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(params)
    };
    let ca = if ca_cert.exists() && ca_key.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)
            .with_context(|| format!("{} is not a private key", ca_key.display()))?;
        Issuer::new(ca_params()?, key)
    } else {
        let key = KeyPair::generate()?;
        let certificate = ca_params()?.self_signed(&key)?;
        herald_meta::write_private(&ca_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_cert, certificate.pem())?;
        Issuer::new(ca_params()?, key)
    };
    let mut nodes_tls = Vec::new();
    for node in 1..=nodes {
        let cert = dir.join(format!("node-{node}.pem"));
        let key = dir.join(format!("node-{node}.key"));
        if !cert.exists() || !key.exists() {
            let pair = KeyPair::generate()?;
            let certificate =
                CertificateParams::new(vec!["herald-node".to_owned()])?.signed_by(&pair, &ca)?;
            herald_meta::write_private(&key, pair.serialize_pem().as_bytes())?;
            std::fs::write(&cert, certificate.pem())?;
        }
        nodes_tls.push((cert, key));
    }
    Ok((ca_cert, nodes_tls))
}

/// The certificate every node of a local cluster serves clients with (one fingerprint for
/// the whole bootstrap list), made once.
fn client_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("broker.pem");
    let key = dir.join("broker.key");
    if !cert.exists() || !key.exists() {
        let names = ["localhost", "herald", "127.0.0.1", "::1"].map(str::to_owned);
        let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
        herald_meta::write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, generated.cert.pem())?;
    }
    Ok((cert, key))
}

/// The brokers of a local cluster of `nodes`, their data under `data_dir`.
pub(crate) fn configs(
    nodes: u64,
    data_dir: &Path,
    base_port: u16,
    security: &herald_broker::SecurityConfig,
) -> anyhow::Result<Vec<BrokerConfig>> {
    anyhow::ensure!(
        (1..=LOCAL_NODES_MAX).contains(&nodes),
        "--nodes must be within 1..={LOCAL_NODES_MAX}"
    );
    let port = |node: u64, raft: bool| -> anyhow::Result<u16> {
        let offset = 2 * (node - 1) + u64::from(raft);
        u16::try_from(u64::from(base_port) + offset)
            .ok()
            .context("--base-port leaves no room for the nodes' ports")
    };
    let (ca, tls) = certificates(&data_dir.join("tls"), nodes)?;
    let (client_cert, client_key) = client_certificate(&data_dir.join("tls"))?;
    let mut peers = std::collections::BTreeMap::new();
    for node in 1..=nodes {
        peers.insert(node, SocketAddr::from(([127, 0, 0, 1], port(node, true)?)));
    }
    let mut configs = Vec::new();
    for (node, (cert, key)) in (1..=nodes).zip(tls) {
        let listen = SocketAddr::from(([127, 0, 0, 1], port(node, false)?));
        let mut config = BrokerConfig::new(listen, data_dir.join(format!("node-{node}")));
        config.security = security.clone();
        config.tls = herald_broker::TlsSource::Files {
            cert: client_cert.clone(),
            key: client_key.clone(),
        };
        config.cluster = Some(ClusterConfig {
            node_id: node,
            peers: peers.clone(),
            raft_listen: peers[&node],
            ca: ca.clone(),
            cert,
            key,
            timing: Timing::default(),
        });
        configs.push(config);
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports follow the base; the certificates are made once and kept; every node knows every
    /// peer.
    #[test]
    fn a_local_cluster_has_its_ports_certificates_and_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let security = herald_broker::SecurityConfig::default();
        let nodes = configs(3, dir.path(), 7200, &security).expect("configs");
        let listens: Vec<u16> = nodes.iter().map(|c| c.listen.port()).collect();
        assert_eq!(listens, [7200, 7202, 7204]);
        assert_eq!(nodes[0].tls, nodes[2].tls, "one client certificate for all");
        let cluster = nodes[1].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.raft_listen.port(), 7203);
        assert_eq!(cluster.peers.len(), 3);
        let first = std::fs::read(&cluster.cert).expect("certificate");
        let again = configs(3, dir.path(), 7200, &security).expect("configs");
        let cluster = again[1].cluster.as_ref().expect("cluster");
        assert_eq!(std::fs::read(&cluster.cert).expect("certificate"), first);
        assert!(configs(0, dir.path(), 7200, &security).is_err());
        assert!(configs(3, dir.path(), u16::MAX - 2, &security).is_err());
    }
}
