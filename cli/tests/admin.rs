//! `herald schema|topic|group` administration commands against live registry and broker
//! processes.

mod support;

use support::{broker, herald, registry};

#[test]
fn schema_topic_and_group_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = registry(&dir.path().join("registry"));
    let (_broker, addr, fingerprint) = broker(&dir.path().join("herald-data/broker"));

    std::fs::write(
        dir.path().join("order.avsc"),
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#,
    )
    .expect("write");
    let registry_args = ["--registry", registry_url.as_str()];
    let run = |args: &[&str]| herald(dir.path(), args);
    let (code, out, err) = run(&[
        &[
            "schema",
            "register",
            "--subject",
            "orders-value",
            "order.avsc",
        ][..],
        &registry_args,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, out, _) = run(&[&["schema", "list"][..], &registry_args].concat());
    assert_eq!((code, out.trim()), (0, "orders-value"));
    let (code, out, _) = run(&[
        &["schema", "versions", "--subject", "orders-value"][..],
        &registry_args,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"));
    let (code, out, _) = run(&[
        &["schema", "get", "--subject", "orders-value"][..],
        &registry_args,
    ]
    .concat());
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["id"], 1);
    let (code, out, _) = run(&[
        &[
            "schema",
            "config",
            "--subject",
            "orders-value",
            "--level",
            "full",
        ][..],
        &registry_args,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "FULL"));
    let (code, _, err) =
        run(&[&["schema", "get", "--subject", "nope"][..], &registry_args].concat());
    assert_ne!(code, 0);
    assert!(err.contains("40401"), "the registry's code is shown: {err}");
    let (code, out, _) = run(&[
        &["schema", "delete", "--subject", "orders-value"][..],
        &registry_args,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"));

    let broker_args = [
        "--broker",
        addr.as_str(),
        "--fingerprint",
        fingerprint.as_str(),
    ];
    let (code, out, err) = run(&[
        &["topic", "create", "orders", "--partitions", "3"][..],
        &broker_args,
    ]
    .concat());
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = run(&[&["topic", "list"][..], &broker_args].concat());
    assert_eq!((code, out.trim()), (0, "orders"));
    let (code, out, _) = run(&[&["topic", "describe", "orders"][..], &broker_args].concat());
    assert_eq!(code, 0);
    let described: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));
    let (code, _, err) = run(&[&["topic", "create", "orders"][..], &broker_args].concat());
    assert_ne!(code, 0);
    assert!(err.contains("TopicAlreadyExists"), "{err}");
    let (code, out, _) = run(&[&["group", "list"][..], &broker_args].concat());
    assert_eq!((code, out.trim()), (0, ""));
    let (code, _, err) = run(&[&["group", "describe", "nobody"][..], &broker_args].concat());
    assert_ne!(code, 0);
    assert!(err.contains("unknown group"), "{err}");
    let (code, _, _) = run(&[&["topic", "delete", "orders"][..], &broker_args].concat());
    assert_eq!(code, 0);
    // A bootstrap list whose first broker never answers (a bound socket that reads nothing,
    // as a paused node): the command goes through the one that does.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let list = format!("{},{addr}", silent.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let (code, out, err) = run(&[
        "topic",
        "create",
        "payments",
        "--broker",
        &list,
        "--fingerprint",
        &fingerprint,
    ]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = run(&[&["topic", "list"][..], &broker_args].concat());
    assert_eq!((code, out.trim()), (0, "payments"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the silent broker was waited for: {:?}",
        started.elapsed()
    );
    let (code, _, err) = run(&[
        "topic",
        "list",
        "--broker",
        &addr,
        "--fingerprint",
        &"00".repeat(32),
    ]);
    assert_ne!(code, 0, "a wrong fingerprint is refused");
    assert!(err.contains("cannot connect"), "{err}");
}
