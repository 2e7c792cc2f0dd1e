//! `herald schema|topic|group` administration commands against live registry and broker
//! processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], data_dir: &Path, prefix: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("announces");
    let rest = line
        .trim()
        .strip_prefix(prefix)
        .expect("announcement")
        .to_owned();
    (Server(child), rest)
}

fn herald(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn schema_topic_and_group_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = start(
        &["registry", "serve", "--listen", "127.0.0.1:0"],
        &dir.path().join("registry"),
        "herald registry listening on ",
    );
    let (_broker, announced) = start(
        &["broker", "serve", "--listen", "127.0.0.1:0"],
        &dir.path().join("broker"),
        "herald broker listening on quic://",
    );
    let mut words = announced.split_whitespace();
    let addr = words.next().expect("addr").to_owned();
    let fingerprint = words
        .next()
        .and_then(|w| w.strip_prefix("fingerprint="))
        .expect("fingerprint")
        .to_owned();

    std::fs::write(
        dir.path().join("order.avsc"),
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#,
    )
    .expect("write");
    let registry = ["--registry", registry_url.as_str()];
    let run = |args: &[&str]| herald(dir.path(), args);
    let (code, out, err) = run(&[
        &[
            "schema",
            "register",
            "--subject",
            "orders-value",
            "order.avsc",
        ][..],
        &registry,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, out, _) = run(&[&["schema", "list"][..], &registry].concat());
    assert_eq!((code, out.trim()), (0, "orders-value"));
    let (code, out, _) = run(&[
        &["schema", "versions", "--subject", "orders-value"][..],
        &registry,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"));
    let (code, out, _) = run(&[
        &["schema", "get", "--subject", "orders-value"][..],
        &registry,
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
        &registry,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "FULL"));
    let (code, _, err) = run(&[&["schema", "get", "--subject", "nope"][..], &registry].concat());
    assert_ne!(code, 0);
    assert!(err.contains("40401"), "the registry's code is shown: {err}");
    let (code, out, _) = run(&[
        &["schema", "delete", "--subject", "orders-value"][..],
        &registry,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "1"));

    let broker = [
        "--broker",
        addr.as_str(),
        "--fingerprint",
        fingerprint.as_str(),
    ];
    let (code, out, err) = run(&[
        &["topic", "create", "orders", "--partitions", "3"][..],
        &broker,
    ]
    .concat());
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = run(&[&["topic", "list"][..], &broker].concat());
    assert_eq!((code, out.trim()), (0, "orders"));
    let (code, out, _) = run(&[&["topic", "describe", "orders"][..], &broker].concat());
    assert_eq!(code, 0);
    let described: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));
    let (code, _, err) = run(&[&["topic", "create", "orders"][..], &broker].concat());
    assert_ne!(code, 0);
    assert!(err.contains("TopicAlreadyExists"), "{err}");
    let (code, out, _) = run(&[&["group", "list"][..], &broker].concat());
    assert_eq!((code, out.trim()), (0, ""));
    let (code, _, err) = run(&[&["group", "describe", "nobody"][..], &broker].concat());
    assert_ne!(code, 0);
    assert!(err.contains("unknown group"), "{err}");
    let (code, _, _) = run(&[&["topic", "delete", "orders"][..], &broker].concat());
    assert_eq!(code, 0);
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
