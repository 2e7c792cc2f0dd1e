//! `herald schema check` end to end: every exit code in every mode (directory, git revision,
//! registry) and every output format.

use std::path::Path;
use std::process::{Command, Stdio};

mod support;

use support::herald;

const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;
const V2_OK: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}"#;
const V2_BAD: &str = "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"shop\",\"fields\":[\n  {\"name\":\"id\",\"type\":\"string\"},\n  {\"name\":\"coupon\",\"type\":\"string\"}\n]}";

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn against_a_directory_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "old/order.avsc", V1);
    write(dir.path(), "order.avsc", V2_OK);
    let check = |format: &str| {
        herald(
            dir.path(),
            &[
                "schema",
                "check",
                "--subject",
                "orders-value",
                "order.avsc",
                "--against",
                "old",
                "--format",
                format,
            ],
        )
    };
    let (code, out, _) = check("text");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("compatible"), "{out}");

    write(dir.path(), "order.avsc", V2_BAD);
    let (code, out, _) = check("text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INCOMPATIBLE")
            && out.contains("READER_FIELD_MISSING_DEFAULT_VALUE at Order.coupon"),
        "{out}"
    );
    let (code, out, _) = check("json");
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("json output");
    assert_eq!(json["status"], "incompatible");
    assert_eq!(
        json["incompatibilities"][0]["rule"],
        "READER_FIELD_MISSING_DEFAULT_VALUE"
    );
    assert_eq!(
        json["incompatibilities"][0]["line"], 3,
        "the line naming the field"
    );
    let (code, out, _) = check("github");
    assert_eq!(code, 1);
    assert!(out.starts_with("::error file=order.avsc,line=3,title=Incompatible schema change::orders-value: READER_FIELD_MISSING_DEFAULT_VALUE"), "{out}");

    // Levels: FORWARD accepts the added required field (old readers ignore it).
    let (code, _, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "orders-value",
            "order.avsc",
            "--against",
            "old",
            "--level",
            "forward",
        ],
    );
    assert_eq!(code, 0);
    // A file with no previous version is new.
    write(dir.path(), "payment.avsc", V1);
    let (code, out, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "payments-value",
            "payment.avsc",
            "--against",
            "old",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("new subject"), "{out}");
}

#[test]
fn errors_exit_with_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "broken.avsc", "{\"type\": \"record\"");
    for format in ["text", "json", "github"] {
        let (code, out, err) = herald(
            dir.path(),
            &[
                "schema",
                "check",
                "--subject",
                "s",
                "broken.avsc",
                "--against",
                ".",
                "--format",
                format,
            ],
        );
        assert_eq!(code, 2, "{out} {err}");
        assert!(err.contains("broken.avsc"), "{err}");
    }
    let (code, _, err) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "s",
            "missing.avsc",
            "--against",
            ".",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("missing.avsc"), "{err}");
    write(dir.path(), "ok.avsc", V1);
    let (code, _, err) = herald(
        dir.path(),
        &["schema", "check", "--subject", "s", "ok.avsc"],
    );
    assert_eq!(code, 2, "neither --registry nor --against");
    assert!(err.contains("--registry"), "{err}");
    let (code, _, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "s",
            "ok.avsc",
            "--against",
            ".",
            "--level",
            "sideways",
        ],
    );
    assert_eq!(code, 2);
    let (code, _, err) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "s",
            "ok.avsc",
            "--registry",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(code, 2, "an unreachable registry is an error");
    assert!(err.contains("registry"), "{err}");
    let (code, _, _) = herald(dir.path(), &["schema", "check", "--subject", "s"]);
    assert_eq!(code, 2, "usage error");
}

#[test]
fn against_a_git_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["config", "user.email", "ci@example.com"]);
    git(&["config", "user.name", "ci"]);
    write(dir.path(), "schemas/order.avsc", V1);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "v1"]);
    write(dir.path(), "schemas/order.avsc", V2_BAD);
    let (code, out, err) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "orders-value",
            "schemas/order.avsc",
            "--against",
            "git:HEAD",
        ],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.contains("coupon"), "{out}");
    write(dir.path(), "schemas/order.avsc", V2_OK);
    let (code, _, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "orders-value",
            "schemas/order.avsc",
            "--against",
            "git:HEAD",
        ],
    );
    assert_eq!(code, 0);
    write(dir.path(), "schemas/new.avsc", V1);
    let (code, out, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "new-value",
            "schemas/new.avsc",
            "--against",
            "git:HEAD",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("new subject"), "{out}");
    let (code, _, _) = herald(
        dir.path(),
        &[
            "schema",
            "check",
            "--subject",
            "orders-value",
            "schemas/order.avsc",
            "--against",
            "git:no-such-rev",
        ],
    );
    assert_eq!(code, 2);
}

#[test]
fn against_a_live_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    write(dir.path(), "order.avsc", V1);
    let check = |format: &str| {
        herald(
            dir.path(),
            &[
                "schema",
                "check",
                "--subject",
                "orders-value",
                "order.avsc",
                "--registry",
                &url,
                "--format",
                format,
            ],
        )
    };
    let (code, out, _) = check("text");
    assert_eq!(code, 0);
    assert!(out.contains("new subject"), "{out}");
    support::register(
        &url,
        &[("orders-value", herald_registry_client::NewSchema::avro(V1))],
    );
    write(dir.path(), "order.avsc", V2_OK);
    assert_eq!(check("text").0, 0);
    write(dir.path(), "order.avsc", V2_BAD);
    let (code, out, _) = check("text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("READER_FIELD_MISSING_DEFAULT_VALUE") && !out.contains("validateFields"),
        "{out}"
    );
    let (code, out, _) = check("json");
    assert_eq!(code, 1);
    assert!(out.contains("\"status\":\"incompatible\""), "{out}");
    let (code, out, _) = check("github");
    assert_eq!(code, 1);
    assert!(out.starts_with("::error file=order.avsc"), "{out}");
}

const MONEY: &str = "syntax = \"proto3\";\npackage common;\nmessage Money {\n  string currency = 1;\n  int64 units = 2;\n}\n";
const ORDERS_V1: &str = "syntax = \"proto3\";\npackage shop.v1;\nimport \"common/money.proto\";\nmessage OrderCreated {\n  string order_id = 1;\n  common.Money total = 2;\n}\n";
const ORDERS_BAD: &str = "syntax = \"proto3\";\npackage shop.v1;\nimport \"common/money.proto\";\nmessage OrderCreated {\n  string order_id = 1;\n  int64 total = 2;\n}\n";
const MANIFEST: &str = "[schemas]\nproto = [\"proto/shop/v1/orders.proto\"]\nproto_include = [\"proto\"]\navro = [\"avro/order.avsc\"]\n\n[[topic]]\nname = \"orders\"\nmessage = \"shop.v1.OrderCreated\"\n\n[[topic]]\nname = \"legacy-orders\"\nmessage = \"shop.Order\"\n";

/// A manifest with a Protobuf topic (with an import) and an Avro topic.
fn manifest_crate(dir: &Path) {
    write(dir, "herald.toml", MANIFEST);
    write(dir, "proto/common/money.proto", MONEY);
    write(dir, "proto/shop/v1/orders.proto", ORDERS_V1);
    write(dir, "avro/order.avsc", V1);
}

#[test]
fn manifest_mode_checks_every_topic_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    manifest_crate(dir.path());
    write(dir.path(), "old/proto/shop/v1/orders.proto", ORDERS_V1);
    write(dir.path(), "old/avro/order.avsc", V1);
    let check = |format: &str| {
        herald(
            dir.path(),
            &["schema", "check", "--against", "old", "--format", format],
        )
    };
    let (code, out, err) = check("text");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("orders-value: compatible (proto/shop/v1/orders.proto)"),
        "{out}"
    );
    assert!(
        out.contains("legacy-orders-value: compatible (avro/order.avsc)"),
        "{out}"
    );

    write(dir.path(), "proto/shop/v1/orders.proto", ORDERS_BAD);
    let (code, out, _) = check("text");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("orders-value: INCOMPATIBLE"), "{out}");
    assert!(out.contains("legacy-orders-value: compatible"), "{out}");
    let (code, out, _) = check("github");
    assert_eq!(code, 1);
    assert!(
        out.contains("::error file=proto/shop/v1/orders.proto,line=6"),
        "{out}"
    );
    let (code, out, _) = check("json");
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "incompatible");

    // A manifest naming a message no file defines is a usage error.
    write(
        dir.path(),
        "herald.toml",
        &MANIFEST.replace("shop.Order\"", "shop.Missing\""),
    );
    let (code, _, err) = check("text");
    assert_eq!(code, 2);
    assert!(err.contains("shop.Missing"), "{err}");
}

#[test]
fn manifest_mode_against_a_registry_resolves_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    manifest_crate(dir.path());
    let check = || herald(dir.path(), &["schema", "check", "--registry", &url]);
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("orders-value: new subject"), "{out}");
    use herald_registry_client::{NewSchema, SchemaReference};
    support::register(
        &url,
        &[
            ("common/money.proto", NewSchema::protobuf(MONEY)),
            (
                "orders-value",
                NewSchema::protobuf(ORDERS_V1).with_references(vec![SchemaReference {
                    name: "common/money.proto".into(),
                    subject: "common/money.proto".into(),
                    version: 1,
                }]),
            ),
            ("legacy-orders-value", NewSchema::avro(V1)),
        ],
    );
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    write(dir.path(), "proto/shop/v1/orders.proto", ORDERS_BAD);
    let (code, out, _) = check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("orders-value: INCOMPATIBLE"), "{out}");
}

#[test]
fn schema_pin_writes_the_lock_from_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    let ids = support::register(
        &url,
        &[
            (
                "payments-value",
                herald_registry_client::NewSchema::avro(V1),
            ),
            (
                "payments-value",
                herald_registry_client::NewSchema::avro(V2_OK),
            ),
        ],
    );
    let id = ids[1];
    write(
        dir.path(),
        "herald.toml",
        &format!("[registry]\nurl = \"{url}\"\npins = [{{ subject = \"payments-value\", version = 2 }}]\n"),
    );
    let (code, out, err) = herald(dir.path(), &["schema", "pin"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("payments-value v2 -> id {id}")),
        "{out}"
    );
    let lock = herald_codegen::Lock::load(&dir.path().join("herald.lock")).expect("lock");
    let entry = lock.get("payments-value").expect("entry");
    assert_eq!((entry.version, entry.id), (2, id));
    assert!(entry.schema.contains("note"));
    assert_eq!(entry.fingerprint.len(), 64);
    let (code, out, _) = herald(dir.path(), &["schema", "pin"]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
    // A pin of a version that does not exist fails, naming it.
    write(
        dir.path(),
        "herald.toml",
        &format!("[registry]\nurl = \"{url}\"\npins = [{{ subject = \"payments-value\", version = 9 }}]\n"),
    );
    let (code, _, err) = herald(dir.path(), &["schema", "pin"]);
    assert_ne!(code, 0);
    assert!(err.contains("payments-value version 9"), "{err}");
}

#[test]
fn schema_pin_locks_what_a_protobuf_schema_imports() {
    const COMMON: &str =
        "syntax = \"proto3\";\npackage shop.v1;\nmessage Money {\n  int64 cents = 1;\n}\n";
    const ORDER: &str = "syntax = \"proto3\";\npackage shop.v1;\nimport \"shop/v1/common.proto\";\nmessage OrderPlaced {\n  string id = 1;\n  Money total = 2;\n}\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    use herald_registry_client::{NewSchema, SchemaReference};
    let ids = support::register(
        &url,
        &[
            ("shop-common", NewSchema::protobuf(COMMON)),
            (
                "orders-value",
                NewSchema::protobuf(ORDER).with_references(vec![SchemaReference {
                    name: "shop/v1/common.proto".into(),
                    subject: "shop-common".into(),
                    version: 1,
                }]),
            ),
        ],
    );
    write(
        dir.path(),
        "herald.toml",
        &format!("[[topic]]\nname = \"orders\"\nmessage = \"shop.v1.OrderPlaced\"\n\n[registry]\nurl = \"{url}\"\npins = [{{ subject = \"orders-value\", version = 1 }}]\n"),
    );
    let (code, out, err) = herald(dir.path(), &["schema", "pin"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("shop-common v1 -> id {}", ids[0])),
        "{out}"
    );
    let lock = herald_codegen::Lock::load(&dir.path().join("herald.lock")).expect("lock");
    let order = lock.get("orders-value").expect("pinned");
    assert_eq!(order.id, ids[1]);
    assert_eq!(order.references.len(), 1);
    assert_eq!(order.fingerprint.len(), 64, "parsed with its import");
    let imported = lock.references_of(order).expect("import locked");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].0, "shop/v1/common.proto");
    // The lock holds the text the registry serves: Confluent's printed canonical form.
    assert_eq!(
        imported[0].1.schema.trim_end(),
        "syntax = \"proto3\";\npackage shop.v1;\n\nmessage Money {\n  int64 cents = 1;\n}"
    );
    // The manifest check compiles the pinned schema from the lock with its import.
    let (code, out, err) = herald(dir.path(), &["schema", "check", "--registry", &url]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn schema_pin_locks_what_an_avro_schema_references() {
    const MONEY: &str = r#"{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"cents","type":"long"}]}"#;
    const INVOICE: &str = r#"{"type":"record","name":"Invoice","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"shop.Money"}]}"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    use herald_registry_client::{NewSchema, SchemaReference};
    support::register(
        &url,
        &[
            ("shop.Money", NewSchema::avro(MONEY)),
            (
                "invoices-value",
                NewSchema::avro(INVOICE).with_references(vec![SchemaReference {
                    name: "shop.Money".into(),
                    subject: "shop.Money".into(),
                    version: 1,
                }]),
            ),
        ],
    );
    write(
        dir.path(),
        "herald.toml",
        &format!("[[topic]]\nname = \"invoices\"\nmessage = \"shop.Invoice\"\n\n[registry]\nurl = \"{url}\"\npins = [{{ subject = \"invoices-value\", version = 1 }}]\n"),
    );
    let (code, out, err) = herald(dir.path(), &["schema", "pin"]);
    assert_eq!(code, 0, "{out}{err}");
    let lock = herald_codegen::Lock::load(&dir.path().join("herald.lock")).expect("lock");
    let invoice = lock.get("invoices-value").expect("pinned");
    assert_eq!(invoice.fingerprint.len(), 64, "parsed with its reference");
    assert_eq!(lock.references_of(invoice).expect("locked").len(), 1);
    let (code, out, err) = herald(dir.path(), &["schema", "check", "--registry", &url]);
    assert_eq!(code, 0, "{out}{err}");
}
