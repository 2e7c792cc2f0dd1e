//! Shared by the SDK's integration tests: a real broker in-process, on port 0 or on an address
//! of the test's choosing, and what the tests do with it directly (connect, produce, read
//! back).

// Each test binary compiles this module on its own and uses only part of it; what one of
// them leaves unused is not dead code.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use herald::producer::Connector;
use herald_broker::{serve, Bound, BrokerConfig, ServeError};
use herald_broker_client::{BrokerClient, Credentials, Trust};
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::Durability;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest a broker may take to bind its address (see [`RunningBroker::start_with`]) or to
/// stop.
pub(crate) const BROKER_PATIENCE: Duration = Duration::from_secs(60);

/// A broker served in this process. Dropping it stops it without waiting; see
/// [`RunningBroker::stop`].
pub(crate) struct RunningBroker {
    pub(crate) bound: Bound,
    /// The admin credential the broker generated into its data directory.
    pub(crate) credentials: Credentials,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningBroker {
    /// Serves `dir` on a free port of 127.0.0.1 with the default settings.
    pub(crate) async fn start(dir: &Path) -> Self {
        Self::start_with(BrokerConfig::new(any_port(), dir)).await
    }

    /// Serves `config`. Its address may still be held for a moment by a broker stopped just
    /// before (its endpoint lets go of the socket once its connections drained): binding is
    /// tried again until it is free, for up to [`BROKER_PATIENCE`].
    pub(crate) async fn start_with(config: BrokerConfig) -> Self {
        let deadline = Instant::now() + BROKER_PATIENCE;
        while Instant::now() < deadline {
            let (bound_tx, bound_rx) = oneshot::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(
                config.clone(),
                move |bound| drop(bound_tx.send(bound)),
                async move { drop(stopped.await) },
            ));
            match bound_rx.await {
                Ok(bound) => {
                    return Self {
                        bound,
                        credentials: credentials(&config.data_dir),
                        stop,
                        task,
                    }
                }
                Err(_) => match task.await.expect("the broker task") {
                    Err(ServeError::Bind { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("the broker did not start: {other:?}"),
                },
            }
        }
        panic!("{} stayed in use", config.listen);
    }

    /// Trusts this broker's certificate, by its fingerprint.
    pub(crate) fn trust(&self) -> Trust {
        Trust::Fingerprint(self.bound.fingerprint.clone())
    }

    /// A new connection to the broker, as its admin.
    pub(crate) async fn client(&self) -> BrokerClient {
        BrokerClient::connect_with(self.bound.addr, self.trust(), &self.credentials)
            .await
            .expect("connect")
    }

    /// A connector to this broker as its admin (see [`connector`]).
    pub(crate) fn connector(&self) -> Connector {
        connector(self.bound.addr, self.trust(), self.credentials.clone())
    }

    /// Stops serving (the broker closes its connections) and waits until it stopped.
    pub(crate) async fn stop(self) {
        let Self { stop, task, .. } = self;
        let _ = stop.send(());
        let stopped = tokio::time::timeout(BROKER_PATIENCE, task)
            .await
            .expect("the broker stops in time")
            .expect("the broker task");
        stopped.expect("the broker served");
    }
}

/// 127.0.0.1, on a port the system picks when the broker binds.
pub(crate) fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// Starts a broker over `dir` and connects to it; it runs until the returned sender is
/// dropped or fired.
pub(crate) async fn broker(dir: &Path) -> (BrokerClient, oneshot::Sender<()>) {
    let broker = RunningBroker::start(dir).await;
    let client = broker.client().await;
    (client, broker.stop)
}

/// The admin credential a broker generated into `data_dir` (none when authentication is off).
pub(crate) fn credentials(data_dir: &Path) -> Credentials {
    let file = data_dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE);
    if file.exists() {
        Credentials::from_local_file(&file).expect("the generated credentials")
    } else {
        Credentials::None
    }
}

/// Connects to `addr`, trusting the certificate `trust` pins and authenticating with
/// `credentials`, whenever a producer or consumer asks for a new connection.
pub(crate) fn connector(addr: SocketAddr, trust: Trust, credentials: Credentials) -> Connector {
    herald_broker_client::dialer(vec![addr], trust, credentials)
}

/// Produces one batch to `topic`/`partition` whose record values are the numbers of `values`
/// (as decimal text), stored with `durability`.
pub(crate) async fn produce_numbers(
    client: &BrokerClient,
    topic: &str,
    partition: u32,
    durability: Durability,
    values: Range<u32>,
) {
    let mut builder = BatchBuilder::new();
    for n in values {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(n.to_string().into_bytes()),
            headers: Vec::new(),
        });
    }
    client
        .produce(
            topic,
            partition,
            durability,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
}

/// Every record of `partition` from offset 0 to the high watermark, read straight from the
/// broker: (offset, its value as a big-endian u32, `None` when the value is not 4 bytes).
pub(crate) async fn stored_values(
    client: &BrokerClient,
    topic: &str,
    partition: u32,
) -> Vec<(i64, Option<u32>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = client
            .fetch(topic, partition, offset, 1024 * 1024, Duration::ZERO, 1)
            .await
            .expect("fetch");
        if fetched.batches.is_empty() {
            assert_eq!(offset, fetched.high_watermark, "read up to the end");
            return out;
        }
        for view in batches(&fetched.batches) {
            let view = view.expect("valid batch");
            for (index, record) in view.records().enumerate() {
                let record = record.expect("valid record");
                let record_offset = view.base_offset() + index as i64;
                if record_offset < offset {
                    continue;
                }
                let value = record
                    .value
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_be_bytes);
                out.push((record_offset, value));
            }
            offset = view.next_offset();
        }
    }
}
