//! Frame reads over a real QUIC connection on 127.0.0.1: a body spanning many packets reads
//! back whole and in order; a stream read to its end is refused past its limit (and read
//! whole at the limit); a stream that ends before the announced length is an error.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const NAME: &str = "herald-test";

/// A server endpoint with a self-signed certificate and a client endpoint trusting it.
fn pair() -> anyhow::Result<(quinn::Endpoint, quinn::Endpoint)> {
    let key = rcgen::KeyPair::generate()?;
    let certificate = rcgen::CertificateParams::new(vec![NAME.to_owned()])?.self_signed(&key)?;
    let der = CertificateDer::from(certificate.der().to_vec());
    let provider = herald_quic::crypto_provider();
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    server.alpn_protocols = vec![herald_quic::ALPN.to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![herald_quic::ALPN.to_vec()];
    let server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server)?,
    ));
    let (socket, _) = herald_quic::bind_udp("127.0.0.1:0".parse()?)?;
    let listening = herald_quic::endpoint(quinn::EndpointConfig::default(), Some(server), socket)?;
    let (socket, _) = herald_quic::bind_udp("127.0.0.1:0".parse()?)?;
    let mut dialing = herald_quic::endpoint(quinn::EndpointConfig::default(), None, socket)?;
    dialing.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client)?,
    )));
    Ok((listening, dialing))
}

/// Sends `bytes` on a new stream from `dialing` to `listening` and hands the receiving side
/// of the stream to `read`: what it returned.
async fn exchange<T: Send + 'static, F>(bytes: Vec<u8>, read: F) -> anyhow::Result<T>
where
    F: FnOnce(quinn::RecvStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
{
    let (listening, dialing) = pair()?;
    let addr = listening.local_addr()?;
    let server = tokio::spawn(async move {
        let connection = listening.accept().await?.await.ok()?;
        let (_send, recv) = connection.accept_bi().await.ok()?;
        let result = read(recv).await;
        Some((result, connection))
    });
    let connection = dialing.connect(addr, NAME)?.await?;
    let (mut send, _recv) = connection.open_bi().await?;
    send.write_all(&bytes).await?;
    send.finish()?;
    let (result, _connection) = server.await?.ok_or_else(|| anyhow::anyhow!("no stream"))?;
    Ok(result)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_many_packets_reads_back_whole() -> anyhow::Result<()> {
    let sent = pattern(1_000_003);
    let read = exchange(sent.clone(), |mut recv| {
        Box::pin(async move { herald_quic::read_body(&mut recv, 1_000_003).await })
    })
    .await?;
    assert_eq!(read?, sent);
    let short = exchange(pattern(10), |mut recv| {
        Box::pin(async move { herald_quic::read_body(&mut recv, 11).await })
    })
    .await?;
    assert!(short.is_err(), "a body shorter than announced was read");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_to_its_end_up_to_its_limit() -> anyhow::Result<()> {
    let sent = pattern(300_000);
    let at_limit = exchange(sent.clone(), |mut recv| {
        Box::pin(async move { herald_quic::read_to_end(&mut recv, 300_000).await })
    })
    .await?;
    assert_eq!(at_limit?, sent);
    let past = exchange(pattern(300_001), |mut recv| {
        Box::pin(async move { herald_quic::read_to_end(&mut recv, 300_000).await })
    })
    .await?;
    assert!(
        matches!(past, Err(quinn::ReadToEndError::TooLong)),
        "{past:?}"
    );
    Ok(())
}
