//! HTTPS on the registry's API: a client that trusts the registry's certificate registers a
//! schema and reads it back; a client that does not trust it, and a plain-HTTP client, are
//! refused. Also: unusable certificate and CA files are reported with their paths.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_registry::server::ServeError;
use herald_registry::{serve, RegistryTls, ServerConfig};
use herald_registry_client::{ClientError, NewSchema, RegistryClient};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;

/// A self-signed certificate for `localhost` and 127.0.0.1, written to `dir`: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let cert = dir.join("registry-cert.pem");
    let key = dir.join("registry-key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write the certificate");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write the key");
    (cert, key)
}

fn config(dir: &Path, tls: RegistryTls) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.join("data"),
        auth: Default::default(),
        tls: Some(tls),
    }
}

/// A registry served in this process until `stop` is sent.
struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Served {
    async fn start(config: ServerConfig) -> Self {
        let (bound, listening) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            config,
            move |addr| {
                let _ = bound.send(addr);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let addr = listening.await.expect("the registry listens");
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the registry task")
            .expect("the registry stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_the_certificate_use_the_api_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let served = Served::start(config(
        dir.path(),
        RegistryTls {
            cert: cert.clone(),
            key,
        },
    ))
    .await;
    let port = served.addr.port();

    let trusting = RegistryClient::new(format!("https://127.0.0.1:{port}"))
        .expect("client")
        .with_ca_file(&cert)
        .expect("the certificate as CA");
    let id = trusting
        .register("orders-value", &NewSchema::avro(ORDER))
        .await
        .expect("registers over HTTPS");
    let found = trusting
        .schema_by_id(id)
        .await
        .expect("reads back over HTTPS");
    assert_eq!(found.schema_type, "AVRO");
    assert!(found.schema.contains("\"Order\""), "{}", found.schema);

    let untrusting = RegistryClient::new(format!("https://127.0.0.1:{port}")).expect("client");
    let refused = untrusting.schema_by_id(id).await;
    assert!(
        matches!(refused, Err(ClientError::Http(_))),
        "a client that does not trust the certificate must fail the handshake: {refused:?}"
    );
    assert!(
        refused.as_ref().is_err_and(|e| !e.retryable()),
        "an untrusted certificate is not worth retrying: {refused:?}"
    );

    let plain = RegistryClient::new(format!("http://127.0.0.1:{port}")).expect("client");
    let refused = plain.schema_by_id(id).await;
    assert!(
        refused.is_err(),
        "plain HTTP to the HTTPS port must fail: {refused:?}"
    );

    drop((trusting, untrusting, plain));
    served.stop().await;
}

#[tokio::test]
async fn an_unreadable_certificate_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = self_signed(dir.path());
    let missing = dir.path().join("missing-cert.pem");
    let started = serve(
        config(
            dir.path(),
            RegistryTls {
                cert: missing.clone(),
                key,
            },
        ),
        |_| panic!("must not listen without its certificate"),
        std::future::pending(),
    )
    .await;
    match started {
        Err(ServeError::Tls(message)) => assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
fn a_ca_file_without_certificates_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not-a-certificate.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let client = RegistryClient::new("https://127.0.0.1:1").expect("client");
    match client.with_ca_file(&not_pem) {
        Err(ClientError::CaFile { path, .. }) => assert_eq!(path, not_pem.display().to_string()),
        other => panic!("expected a CA-file error, got {other:?}"),
    }
    let missing = dir.path().join("missing.pem");
    let client = RegistryClient::new("https://127.0.0.1:1").expect("client");
    assert!(matches!(
        client.with_ca_file(&missing),
        Err(ClientError::CaFile { .. })
    ));
}

/// Opens `CONNECTIONS_PER_SOURCE_MAX` silent connections to `addr` and checks that one more
/// from the same source is closed at once; returns the silent ones.
async fn fill_one_source(addr: SocketAddr) -> Vec<tokio::net::TcpStream> {
    use herald_registry::server::CONNECTIONS_PER_SOURCE_MAX;
    use tokio::io::AsyncReadExt;
    let mut silent = Vec::new();
    for _ in 0..CONNECTIONS_PER_SOURCE_MAX {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Give the server time to accept them all.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut byte))
        .await
        .expect("the extra connection is closed at once, not left waiting");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a byte: {read:?}"
    );
    silent
}

/// One source cannot take every HTTPS slot: past `CONNECTIONS_PER_SOURCE_MAX` connections
/// (here silent ones, stuck before their handshake) a new one is closed at once; and a
/// shutdown does not wait for silent connections longer than their handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_a_bounded_number_of_connections_and_silent_ones_do_not_block_shutdown() {
    use herald_registry::server::TLS_HANDSHAKE_TIMEOUT;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let served = Served::start(config(dir.path(), RegistryTls { cert, key })).await;
    let silent = fill_one_source(served.addr).await;
    let started = std::time::Instant::now();
    served.stop().await;
    assert!(
        started.elapsed() < TLS_HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    drop(silent);
}

/// Plain HTTP is bounded like HTTPS (it is what `herald up` serves): past
/// `CONNECTIONS_PER_SOURCE_MAX` silent connections a new one is closed at once, once one of
/// them closes the API answers again, and a shutdown does not wait for the silent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_connections_are_bounded_per_source_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::start(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        auth: Default::default(),
        tls: None,
    })
    .await;
    let mut silent = fill_one_source(served.addr).await;
    // A slot freed is taken again: the API answers.
    silent.pop();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let client = RegistryClient::new(format!("http://{}", served.addr)).expect("client");
    client
        .subjects(false)
        .await
        .expect("served once a slot is free");
    drop(client);
    let started = std::time::Instant::now();
    served.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    drop(silent);
}
