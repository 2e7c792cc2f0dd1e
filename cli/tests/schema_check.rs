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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(async {
            herald_registry_client::RegistryClient::new(&url)?
                .register("orders-value", &herald_registry_client::NewSchema::avro(V1))
                .await
        })
        .expect("seed the registry");
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
