//! `herald dlq list|inspect|replay` against a live broker process holding dead letters in the
//! format the SDK's consumer writes.

use std::process::Command;
use std::time::Duration;

use herald_broker_client::{BrokerClient, Trust};
use herald_wire::batch::{batches, BatchBuilder, Header, Record};
use herald_wire::messages::{Durability, TopicConfig};

mod support;

fn dead_letter(value: &str, kind: &str, offset: i64) -> Record {
    let mut headers = vec![Header {
        key: "trace-id".into(),
        value: b"t-1".to_vec(),
    }];
    for (key, value) in [
        ("herald.dlq.topic", "orders".to_owned()),
        ("herald.dlq.partition", "1".to_owned()),
        ("herald.dlq.offset", offset.to_string()),
        ("herald.dlq.timestamp", "1000".to_owned()),
        ("herald.dlq.group", "billing".to_owned()),
        ("herald.dlq.error-kind", kind.to_owned()),
        ("herald.dlq.error-message", format!("{value} failed")),
        ("herald.dlq.attempts", "3".to_owned()),
    ] {
        headers.push(Header {
            key: key.into(),
            value: value.into_bytes(),
        });
    }
    Record {
        timestamp_ms: 1000,
        key: Some(b"k".to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers,
    }
}

#[test]
fn list_inspect_and_replay_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr, fingerprint) = support::broker(&dir.path().join("herald-data/broker"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(BrokerClient::connect_with(
            addr.parse().expect("addr"),
            Trust::Fingerprint(fingerprint.clone()),
            &support::admin_credentials(&dir.path().join("herald-data/broker")),
        ))
        .expect("connect");
    runtime
        .block_on(async {
            client
                .create_topic(
                    "orders",
                    TopicConfig {
                        partitions: 2,
                        ..TopicConfig::default()
                    },
                )
                .await?;
            client
                .create_topic("orders.dlq", TopicConfig::default())
                .await?;
            let mut builder = BatchBuilder::new();
            builder.push(dead_letter("poison-1", "fatal", 7));
            builder.push(dead_letter("flaky-2", "retries-exhausted", 9));
            client
                .produce(
                    "orders.dlq",
                    0,
                    Durability::Memory,
                    builder.encode().expect("batch"),
                )
                .await
                .map(drop)
        })
        .expect("seed dead letters");

    let herald = |args: &[&str]| {
        // Run where the data directory is: the CLI finds the broker's generated admin
        // credential at ./herald-data/broker/admin.credentials.
        let output = Command::new(env!("CARGO_BIN_EXE_herald"))
            .current_dir(dir.path())
            .args(args)
            .args(["--broker", &addr, "--fingerprint", &fingerprint])
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = herald(&["dlq", "list", "orders"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("orders/1@7\tfatal\tattempts=3\tpoison-1 failed"),
        "{listed}"
    );
    let fatal = herald(&["dlq", "list", "orders", "--error-kind", "fatal"]);
    assert_eq!(fatal.lines().count(), 1, "{fatal}");
    assert_eq!(
        herald(&["dlq", "list", "orders", "--since-ms", "2000"])
            .lines()
            .count(),
        0,
        "time window"
    );
    let inspected = herald(&[
        "dlq",
        "inspect",
        "orders",
        "--error-kind",
        "retries-exhausted",
    ]);
    let json: serde_json::Value = serde_json::from_str(inspected.trim()).expect("json line");
    assert_eq!(json["value"], "flaky-2");
    assert_eq!(json["headers"]["herald.dlq.group"], "billing");
    assert!(
        herald(&["dlq", "replay", "orders", "--dry-run"]).contains("2 records would be replayed")
    );
    assert!(herald(&[
        "dlq",
        "replay",
        "orders",
        "--error-kind",
        "retries-exhausted"
    ])
    .contains("1 records replayed"));

    let fetched = runtime
        .block_on(client.fetch("orders", 1, 0, 1024 * 1024, Duration::ZERO, 1))
        .expect("fetch");
    let replayed: Vec<Record> = batches(&fetched.batches)
        .flat_map(|b| {
            b.expect("valid")
                .records()
                .map(|r| r.expect("record").to_owned_record())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(replayed.len(), 1, "replayed to the original partition");
    assert_eq!(replayed[0].value.as_deref(), Some(&b"flaky-2"[..]));
    assert!(
        replayed[0]
            .headers
            .iter()
            .all(|h| !h.key.starts_with("herald.dlq.")),
        "failure headers are dropped"
    );
    assert!(
        replayed[0].headers.iter().any(|h| h.key == "trace-id"),
        "the record's own headers are kept"
    );
}
