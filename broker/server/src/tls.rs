//! TLS for the QUIC endpoint: an operator-supplied certificate and key, or a self-signed pair
//! generated into the data directory on first start. The SHA-256 fingerprint is what clients
//! pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("invalid tls configuration: {0}")]
    Config(String),
}

/// Certificate and key in use, with the certificate's fingerprint.
pub struct Identity {
    pub certificate: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub certificate_path: PathBuf,
    pub fingerprint: String,
}

/// Where the endpoint's certificate and key come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsSource {
    /// A self-signed pair generated into `data_dir/tls/{cert,key}.pem` on first start (and
    /// loaded from there afterwards).
    #[default]
    Generated,
    /// An operator-supplied PEM certificate and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Loads the identity `source` names, generating the self-signed pair when it is missing.
pub fn identity(data_dir: &Path, source: &TlsSource) -> Result<Identity, TlsError> {
    let (cert_path, key_path) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::Generated => {
            let dir = data_dir.join("tls");
            let cert_path = dir.join("cert.pem");
            let key_path = dir.join("key.pem");
            if !cert_path.exists() || !key_path.exists() {
                generate(&dir, &cert_path, &key_path)?;
            }
            tighten(&key_path);
            (cert_path, key_path)
        }
    };
    let read_error = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let certificate =
        CertificateDer::from_pem_file(&cert_path).map_err(|e| read_error(&cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| read_error(&key_path, e))?;
    let fingerprint = herald_quic::fingerprint(certificate.as_ref());
    Ok(Identity {
        certificate,
        key,
        certificate_path: cert_path,
        fingerprint,
    })
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let write_error = |path: &Path, e: std::io::Error| TlsError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let names = vec![
        "localhost".to_owned(),
        "herald".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    crate::fs::write_private(key_path, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|e| write_error(key_path, e))?;
    std::fs::write(cert_path, generated.cert.pem()).map_err(|e| write_error(cert_path, e))?;
    Ok(())
}

/// Narrows a generated key that an older Herald wrote readable by others to 0600.
fn tighten(key_path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(key_path) {
            if metadata.permissions().mode() & 0o077 != 0 {
                match std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600)) {
                    Ok(()) => {
                        tracing::warn!(path = %key_path.display(), "the generated TLS key was readable by others: narrowed to 0600")
                    }
                    Err(error) => {
                        tracing::warn!(path = %key_path.display(), %error, "the generated TLS key is readable by others and cannot be narrowed")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = key_path;
}

/// A stateless-reset key derived from the certificate's private key, so that it is the same
/// after a restart: a client still talking to the previous process gets a reset it
/// recognises and reconnects at once, instead of waiting for its idle timeout.
pub fn reset_key(identity: &Identity) -> Arc<dyn quinn::crypto::HmacKey> {
    let mut material = b"herald stateless reset".to_vec();
    material.extend_from_slice(identity.key.secret_der());
    let digest = ring::digest::digest(&ring::digest::SHA256, &material);
    Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        digest.as_ref(),
    ))
}

/// Most CA certificates read from a client-CA file.
pub const CLIENT_CAS_MAX: usize = 1000;

/// The quinn server configuration for `identity`. With `client_ca` (a PEM file of CA
/// certificates), clients may present a certificate that chains to one of them (and are then
/// authenticated by it); clients without one are still accepted, to authenticate otherwise.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&Path>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = herald_quic::crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let failed = |reason: String| {
                TlsError::Config(format!("client CA {}: {reason}", path.display()))
            };
            let mut roots = rustls::RootCertStore::empty();
            for (index, certificate) in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| failed(e.to_string()))?
                .enumerate()
            {
                if index >= CLIENT_CAS_MAX {
                    return Err(failed(format!("more than {CLIENT_CAS_MAX} certificates")));
                }
                roots
                    .add(certificate.map_err(|e| failed(e.to_string()))?)
                    .map_err(|e| failed(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(failed("no certificate in the file".to_owned()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| failed(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder
        .with_single_cert(vec![identity.certificate.clone()], identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![herald_quic::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(herald_quic::transport()));
    Ok(config)
}

/// The subject of the certificate the peer of `connection` presented (verified against the
/// client CAs), in RFC 2253 form (`CN=orders,OU=payments,O=Acme`: the last RDN first, `,`
/// between RDNs, `+` inside one); `None` when it presented none.
pub fn client_subject(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    subject_of(chain.first()?.as_ref())
}

/// The RFC 2253 subject of a DER certificate.
pub fn subject_of(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = certificate
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let key = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attribute.attr_type().to_id_string());
                    let value = match attribute.as_str() {
                        Ok(text) => escape_rfc2253(text),
                        Err(_) => format!("#{}", hex::encode(attribute.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 2253 section 2.4: special characters backslash-escaped, and a leading `#` or space and
/// a trailing space; control characters as `\XX` (hex), so that a subject never breaks a log
/// line.
fn escape_rfc2253(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        if c.is_control() {
            let mut bytes = [0u8; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                escaped.push_str(&format!("\\{byte:02X}"));
            }
            continue;
        }
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (c == '#' || c == ' '))
            || (index == last && c == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    /// The generated private key is readable by its owner only (it was 0644 under the usual
    /// umask), and one an older Herald left readable is narrowed at start.
    #[test]
    fn the_generated_key_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path().join("tls");
        let key = tls.join("key.pem");
        // Created 0600 (not narrowed after: it must never be readable by others).
        generate(&tls, &tls.join("cert.pem"), &key).expect("generate");
        assert_eq!(mode(&key), 0o600);
        identity(dir.path(), &TlsSource::Generated).expect("load");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        identity(dir.path(), &TlsSource::Generated).expect("load");
        assert_eq!(mode(&key), 0o600);
    }
}

/// The TLS files of a cluster whose nodes run on one machine (`herald cluster up`, tests,
/// benchmarks): the cluster CA, each node's certificate and key for the others (naming
/// `herald-node`), and the one certificate every node serves clients with, so that one
/// fingerprint trusts the whole bootstrap list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClusterTls {
    pub ca: PathBuf,
    /// Node `i + 1`'s certificate and key.
    pub nodes: Vec<(PathBuf, PathBuf)>,
    /// The client-facing certificate and key.
    pub client: (PathBuf, PathBuf),
}

/// Makes (or reuses, when already in `dir`) the TLS files of a local cluster of `nodes`
/// nodes. A kept CA key signs certificates for nodes added later that chain to the kept CA.
pub fn local_cluster_tls(dir: &Path, nodes: u64) -> Result<LocalClusterTls, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let generate_error = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let write = |path: &Path, bytes: &[u8], private: bool| {
        let written = if private {
            herald_meta::write_private(path, bytes).map_err(|e| e.to_string())
        } else {
            std::fs::write(path, bytes).map_err(|e| e.to_string())
        };
        written.map_err(|reason| TlsError::Write {
            path: path.display().to_string(),
            reason,
        })
    };
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let ca_params = || -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(params)
    };
    let ca = if ca_cert.exists() && ca_key.exists() {
        let pem = std::fs::read_to_string(&ca_key).map_err(|e| TlsError::Read {
            path: ca_key.display().to_string(),
            reason: e.to_string(),
        })?;
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::Read {
            path: ca_key.display().to_string(),
            reason: format!("not a private key: {e}"),
        })?;
        Issuer::new(ca_params()?, key)
    } else {
        let key = KeyPair::generate().map_err(generate_error)?;
        let certificate = ca_params()?.self_signed(&key).map_err(generate_error)?;
        write(&ca_key, key.serialize_pem().as_bytes(), true)?;
        write(&ca_cert, certificate.pem().as_bytes(), false)?;
        Issuer::new(ca_params()?, key)
    };
    let mut node_files = Vec::new();
    for node in 1..=nodes {
        let cert = dir.join(format!("node-{node}.pem"));
        let key = dir.join(format!("node-{node}.key"));
        if !cert.exists() || !key.exists() {
            let pair = KeyPair::generate().map_err(generate_error)?;
            let certificate = CertificateParams::new(vec!["herald-node".to_owned()])
                .and_then(|params| params.signed_by(&pair, &ca))
                .map_err(generate_error)?;
            write(&key, pair.serialize_pem().as_bytes(), true)?;
            write(&cert, certificate.pem().as_bytes(), false)?;
        }
        node_files.push((cert, key));
    }
    let client_cert = dir.join("broker.pem");
    let client_key = dir.join("broker.key");
    if !client_cert.exists() || !client_key.exists() {
        let names = ["localhost", "herald", "127.0.0.1", "::1"].map(str::to_owned);
        let generated =
            rcgen::generate_simple_self_signed(names.to_vec()).map_err(generate_error)?;
        write(
            &client_key,
            generated.signing_key.serialize_pem().as_bytes(),
            true,
        )?;
        write(&client_cert, generated.cert.pem().as_bytes(), false)?;
    }
    Ok(LocalClusterTls {
        ca: ca_cert,
        nodes: node_files,
        client: (client_cert, client_key),
    })
}
