//! Shared by the broker's integration tests: a broker served in this process on port 0, and
//! what they read from it.

// Each test binary compiles this module on its own and uses only part of it; what one of
// them leaves unused is not dead code.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_broker::{serve, Bound, BrokerConfig};
use herald_broker_client::{BrokerClient, Credentials, Trust};
use tokio::sync::oneshot;

/// A broker served in this process until [`RunningBroker::stop`] (or until it is dropped).
pub(crate) struct RunningBroker {
    pub(crate) bound: Bound,
    /// The admin credential the broker generated into its data directory (none when
    /// authentication is off).
    pub(crate) credentials: Credentials,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A configuration serving `data_dir` on 127.0.0.1:0, with `/metrics` on 127.0.0.1:0.
pub(crate) fn config(data_dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), data_dir);
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config
}

impl RunningBroker {
    /// Serves `config`; returns once the broker is bound.
    pub(crate) async fn start_with(config: BrokerConfig) -> Self {
        let data_dir = config.data_dir.clone();
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
        let file = data_dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE);
        let credentials = if file.exists() {
            Credentials::from_local_file(&file).expect("the generated credentials")
        } else {
            Credentials::None
        };
        Self {
            bound,
            credentials,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn client(&self) -> BrokerClient {
        BrokerClient::connect_with(
            self.bound.addr,
            Trust::Fingerprint(self.bound.fingerprint.clone()),
            &self.credentials,
        )
        .await
        .expect("connects")
    }

    /// The address of `/metrics` (the configuration asked for it, as [`config`] does).
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        self.bound.metrics_addr.expect("metrics endpoint")
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// The whole `/metrics` text served at `addr`.
pub(crate) async fn scrape(addr: SocketAddr) -> String {
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
