//! Shared by the SDK's integration tests: a real broker in-process on port 0.

use herald_broker::{serve, BrokerConfig};
use herald_broker_client::{BrokerClient, Trust};

/// Starts a broker over `dir`; it runs until the returned sender is dropped or fired.
pub(crate) async fn broker(
    dir: &std::path::Path,
) -> (BrokerClient, tokio::sync::oneshot::Sender<()>) {
    let config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), dir);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serve(
            config,
            move |bound| drop(bound_tx.send(bound)),
            async move { drop(stopped.await) },
        )
        .await;
    });
    let bound = bound_rx.await.expect("bound");
    (
        BrokerClient::connect(bound.addr, Trust::Fingerprint(bound.fingerprint))
            .await
            .expect("connect"),
        stop,
    )
}
