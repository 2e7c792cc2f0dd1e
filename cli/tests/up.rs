//! `herald up` (the README's first command) with every address on port 0: the registry and
//! the broker come up on one data directory, the broker validates schema IDs against the
//! registry's address as bound, and a record goes in and out through the CLI.

use std::io::{Read, Write};

mod support;

use support::herald_with_stdin;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}"#;

/// A schema ID the registry `up` started never issued.
const UNREGISTERED_ID: u32 = 0x7f7f;

/// `GET /metrics` over plain HTTP/1.0: (status line, body).
fn get_metrics(addr: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: herald\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[test]
fn up_serves_registry_and_validating_broker_on_one_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("herald-data");
    let (_up, lines) = support::spawn(
        &[
            "up",
            "--registry-listen",
            "127.0.0.1:0",
            "--broker-listen",
            "127.0.0.1:0",
            "--broker-metrics-listen",
            "127.0.0.1:0",
        ],
        &data,
        3,
    );
    let after = |prefix: &str| {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in {lines:?}"))
            .to_owned()
    };
    let url = after("herald registry listening on ");
    let broker = after("herald broker listening on quic://");
    let metrics = after("herald broker metrics on http://");
    let (addr, fingerprint) = support::broker_announcement(&broker);
    assert!(!url.ends_with(":0") && !addr.ends_with(":0"), "{lines:?}");
    assert!(data.join("registry").is_dir() && data.join("broker").is_dir());

    let env = support::server_env(&addr, &fingerprint, &url);
    let run = |args: &[&str], input: &str| herald_with_stdin(dir.path(), &env, args, input);
    support::register(
        &url,
        &[(
            "orders-value",
            herald_registry_client::NewSchema::avro(ORDER),
        )],
    );
    let (code, _, err) = run(&["topic", "create", "orders", "--validate-value"], "");
    assert_eq!(code, 0, "{err}");
    // The broker checks the record's schema ID with the registry `up` started.
    let (code, _, err) = run(&["produce", "orders"], "{\"id\":\"o-1\",\"total\":5}\n");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["consume", "orders", "--count", "1"], "");
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("json line");
    assert_eq!(line["value"], serde_json::json!({"id": "o-1", "total": 5}));

    // A record framed with a schema ID the registry never issued is refused, and not stored.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (refused, high_watermark) = runtime.block_on(async {
        use herald_broker_client::{BrokerClient, Trust};
        use herald_wire::batch::{BatchBuilder, Record};
        use herald_wire::messages::{Durability, OffsetSpec};
        let client = BrokerClient::connect_with(
            addr.parse::<std::net::SocketAddr>()
                .expect("broker address"),
            Trust::Fingerprint(fingerprint.clone()),
            &support::admin_credentials(&data.join("broker")),
        )
        .await
        .expect("connects");
        let mut value = Vec::new();
        herald_wire::schema_id::write_schema_id(&mut value, UNREGISTERED_ID);
        value.extend_from_slice(b"\x06o-2\x0a");
        let mut builder = BatchBuilder::new();
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        });
        let refused = client
            .produce(
                "orders",
                0,
                Durability::Memory,
                builder.encode().expect("batch"),
            )
            .await;
        let (high_watermark, _) = client
            .list_offsets("orders", 0, OffsetSpec::Latest)
            .await
            .expect("latest offset");
        (refused, high_watermark)
    });
    let error = refused.expect_err("an unregistered schema ID is refused");
    assert_eq!(
        error.code(),
        Some(herald_wire::ErrorCode::SchemaValidationFailed),
        "{error}"
    );
    assert!(
        error.to_string().contains(&UNREGISTERED_ID.to_string()),
        "names the ID: {error}"
    );
    assert_eq!(high_watermark, 1, "only the valid record is stored");

    let (status, body) = get_metrics(metrics.trim_end_matches("/metrics"));
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("herald_"), "{body}");
}

/// `herald up` keeps its open, plain-HTTP registry on loopback: asked for another address it
/// refuses before binding anything, saying what to run instead.
#[test]
fn up_refuses_an_open_registry_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = support::herald(
        dir.path(),
        &[
            "up",
            "--data-dir",
            "./data",
            "--registry-listen",
            "0.0.0.0:0",
            "--broker-listen",
            "127.0.0.1:0",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("only on a loopback address") && err.contains("--users"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was started");
}
