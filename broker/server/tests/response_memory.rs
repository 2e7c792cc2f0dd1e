//! Response memory is bounded: a client that opens many fetch streams and reads none of them
//! makes the broker hold at most its connection's response budget (not one 8 MiB answer per
//! stream), other connections are still answered at once, a write the client does not read
//! is reset after the write timeout, and whatever such a client held is released when its
//! streams are reset or its connection goes away. Observed through `/metrics`
//! (`herald_broker_response_bytes_outstanding`, `herald_broker_response_write_timeouts_total`)
//! over real QUIC, with a raw quinn client for the streams nobody reads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_broker::server::{CONNECTION_RESPONSE_BYTES_MAX, RESPONSE_WRITE_TIMEOUT};
use herald_broker::{serve, Bound, BrokerConfig};
use herald_broker_client::{BrokerClient, Trust};
use herald_metrics::broker::{RESPONSE_BYTES_OUTSTANDING, RESPONSE_WRITE_TIMEOUTS};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::frame::{Frame, FrameHeader, FrameKind};
use herald_wire::limits::{FETCH_BYTES_MAX, FRAME_BYTES_MAX};
use herald_wire::messages::{Durability, TopicConfig};
use herald_wire::{Api, Request};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::oneshot;

const TOPIC: &str = "bulk";

struct RunningBroker {
    bound: Bound,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    async fn start(data_dir: &Path, response_write_timeout: Duration) -> Self {
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), data_dir);
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.retention_check_interval = Duration::from_secs(3600);
        config.response_write_timeout = response_write_timeout;
        let (bound_tx, bound_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(
                config,
                move |bound| drop(bound_tx.send(bound)),
                async move { drop(stopped.await) },
            )
            .await
            .expect("broker serves");
        });
        let bound = bound_rx.await.expect("broker bound");
        Self {
            bound,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> BrokerClient {
        BrokerClient::connect(
            self.bound.addr,
            Trust::Fingerprint(self.bound.fingerprint.clone()),
        )
        .await
        .expect("connects")
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.bound.metrics_addr.expect("metrics endpoint")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Creates the topic and stores ~10 MiB in 1 MiB batches; returns how many batch bytes a
/// fetch of `FETCH_BYTES_MAX` from offset 0 answers (several MiB).
async fn fill(broker: &RunningBroker) -> usize {
    let client = broker.client().await;
    client
        .create_topic(TOPIC, TopicConfig::default())
        .await
        .expect("create");
    let value = vec![b'x'; 64 * 1024];
    for _ in 0..10 {
        let mut builder = BatchBuilder::new();
        for _ in 0..15 {
            builder.push(Record {
                timestamp_ms: now_ms(),
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
            });
        }
        client
            .produce(
                TOPIC,
                0,
                Durability::Memory,
                builder.encode().expect("batch"),
            )
            .await
            .expect("produce");
    }
    let fetched = client
        .fetch(TOPIC, 0, 0, FETCH_BYTES_MAX as u32, Duration::ZERO, 1)
        .await
        .expect("fetch");
    assert!(
        fetched.batches.len() >= 4 * 1024 * 1024,
        "a large answer: {} bytes",
        fetched.batches.len()
    );
    client.close();
    fetched.batches.len()
}

/// The whole `/metrics` text.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

/// The value of the unlabelled series `name`, if `/metrics` has it.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = scrape(addr).await;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse::<f64>().ok())
}

/// Response bytes the broker holds now; the gauge must exist.
async fn outstanding(addr: SocketAddr) -> f64 {
    metric(addr, RESPONSE_BYTES_OUTSTANDING)
        .await
        .unwrap_or_else(|| panic!("/metrics has no {RESPONSE_BYTES_OUTSTANDING}"))
}

/// Polls `condition` every 50 ms until it holds or `within` passed; whether it held.
async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepts exactly the broker's certificate (by fingerprint), as the real client does.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if herald_quic::fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the broker's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A raw QUIC connection to the broker, with the transport settings the real client uses
/// (so its flow-control windows are the real ones). The endpoint must outlive the connection.
async fn raw_connection(bound: &Bound) -> (quinn::Endpoint, quinn::Connection) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: bound.fingerprint.clone(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![herald_quic::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(herald_quic::transport()));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(bound.addr, "herald")
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, connection)
}

/// Opens `count` streams, each asking for a `FETCH_BYTES_MAX` fetch from offset 0, and reads
/// none of the answers. The receive halves are kept: dropping one would stop its stream.
async fn unread_fetches(
    connection: &quinn::Connection,
    count: u64,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let request = Request::Fetch {
        topic: TOPIC.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: FETCH_BYTES_MAX as u32,
        max_wait_ms: 0,
        min_bytes: 1,
    };
    let mut streams = Vec::new();
    for request_id in 0..count {
        let frame = Frame::encode_with(
            FrameHeader {
                kind: FrameKind::Request,
                api: Api::Fetch as u16,
                request_id,
            },
            request.encoded_len_hint(),
            |out| request.encode(out),
        )
        .expect("a fetch frame");
        let (mut send, recv) = connection.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("request sent");
        send.finish().expect("finish");
        streams.push((send, recv));
    }
    streams
}

/// 64 streams whose ~7.5 MiB answers nobody reads: the first few fill the client's 64 MiB
/// connection window, then the broker holds at most one connection budget of answers (the
/// old code held every answer, ~450 MiB), a second connection's fetches are answered at once,
/// and closing the connection releases all it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reading_no_answers_holds_at_most_its_connection_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = RunningBroker::start(dir.path(), RESPONSE_WRITE_TIMEOUT).await;
    let metrics = broker.metrics_addr();
    let answer_len = fill(&broker).await;
    let budget = CONNECTION_RESPONSE_BYTES_MAX as f64;

    let (_endpoint, connection) = raw_connection(&broker.bound).await;
    let streams = unread_fetches(&connection, 64).await;

    // The answers nobody reads come to hold budget, and never more than one connection's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut highest = 0.0f64;
    while highest < answer_len as f64 && Instant::now() < deadline {
        let held = outstanding(metrics).await;
        assert!(
            held <= budget,
            "{held} response bytes held for one connection; its budget is {budget}"
        );
        highest = highest.max(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        highest >= answer_len as f64,
        "the unread answers never held budget (highest {highest}): the test did not stall the broker"
    );
    for _ in 0..20 {
        let held = outstanding(metrics).await;
        assert!(
            held <= budget,
            "{held} response bytes held for one connection; its budget is {budget}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another connection is answered promptly meanwhile.
    let polite = broker.client().await;
    for _ in 0..3 {
        let fetched = tokio::time::timeout(
            Duration::from_secs(5),
            polite.fetch(TOPIC, 0, 0, FETCH_BYTES_MAX as u32, Duration::ZERO, 1),
        )
        .await
        .expect("answered within 5 s")
        .expect("fetch");
        assert_eq!(fetched.batches.len(), answer_len);
    }
    polite.close();

    // The connection going away releases everything it held or waited for.
    connection.close(0u32.into(), b"done");
    let released = eventually(Duration::from_secs(10), move || async move {
        outstanding(metrics).await == 0.0
    })
    .await;
    assert!(
        released,
        "{} response bytes still held after the connection closed",
        outstanding(metrics).await
    );
    drop(streams);
    broker.stop().await;
}

/// With a 1 s write timeout, 16 unread ~7.5 MiB answers (twice what the client's connection
/// window takes) end without the client doing anything: those that fit are delivered, the
/// rest are reset with the write-timeout code and counted, and the budget is empty again
/// while the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_nobody_reads_is_reset_after_the_write_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = RunningBroker::start(dir.path(), Duration::from_secs(1)).await;
    let metrics = broker.metrics_addr();
    let answer_len = fill(&broker).await;
    assert_eq!(
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await,
        Some(0.0),
        "no write has timed out yet"
    );

    let (_endpoint, connection) = raw_connection(&broker.bound).await;
    let mut streams = unread_fetches(&connection, 16).await;

    let timed_out = eventually(Duration::from_secs(20), move || async move {
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await >= Some(1.0)
    })
    .await;
    assert!(timed_out, "no unread answer was reset");
    let released = eventually(Duration::from_secs(30), move || async move {
        outstanding(metrics).await == 0.0
    })
    .await;
    assert!(
        released,
        "{} response bytes still held after the writes timed out",
        outstanding(metrics).await
    );

    // Every stream has ended: answered whole, or reset with the write-timeout code.
    let mut delivered: u32 = 0;
    let mut reset: u32 = 0;
    for (_send, recv) in &mut streams {
        match tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(FRAME_BYTES_MAX))
            .await
            .expect("every stream has ended")
        {
            Ok(frame) => {
                assert!(frame.len() > answer_len, "a whole answer");
                delivered += 1;
            }
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                assert_eq!(code, quinn::VarInt::from_u32(1), "the write-timeout code");
                reset += 1;
            }
            Err(other) => panic!("unexpected end of an unread stream: {other}"),
        }
    }
    assert!(reset >= 1, "delivered {delivered}, reset {reset}");
    assert_eq!(
        metric(metrics, RESPONSE_WRITE_TIMEOUTS).await,
        Some(f64::from(reset)),
        "each reset is counted once (delivered {delivered})"
    );
    connection.close(0u32.into(), b"done");
    broker.stop().await;
}
