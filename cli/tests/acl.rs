//! `herald acl add|list|remove` and the broker commands' credentials (`--user` with
//! `HERALD_PASSWORD`, the generated admin credential found under ./herald-data) against a live
//! broker process; `--insecure-no-auth` turns authentication off.

mod support;

use support::{broker, herald_with_stdin, start};

const PASSWORD: &str = "alice's long password";

#[test]
fn acls_granted_with_the_cli_decide_what_a_user_may_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("herald-data/broker");
    let (_broker, addr, fingerprint) = broker(&data);
    let data_arg = data.to_str().expect("utf-8 path");
    let target = [
        "--broker",
        addr.as_str(),
        "--fingerprint",
        fingerprint.as_str(),
    ];
    // As the generated admin (./herald-data/broker/admin.credentials, found from `dir`).
    let admin =
        |args: &[&str]| herald_with_stdin(dir.path(), &[], &[args, &target[..]].concat(), "");
    let alice = |args: &[&str]| {
        herald_with_stdin(
            dir.path(),
            &[("HERALD_PASSWORD", PASSWORD)],
            &[args, &["--user", "alice"][..], &target[..]].concat(),
            "",
        )
    };

    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &["user", "add", "alice", "--data-dir", data_arg],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = admin(&["topic", "create", "orders"]);
    assert_eq!(code, 0, "{err}");

    // Nothing granted: refused, naming the operation and the topic; nothing created.
    let (code, _, err) = alice(&["topic", "create", "audit"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("User:alice") && err.contains("CREATE") && err.contains("audit"),
        "{err}"
    );
    let (code, out, _) = admin(&["topic", "list"]);
    assert_eq!(code, 0);
    assert!(!out.contains("audit"), "{out}");
    let (code, out, err) = alice(&["topic", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("orders"), "alice sees no topic yet: {out}");

    let (code, out, err) = admin(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--resource-type",
        "topic",
        "--name",
        "orders",
        "--operation",
        "write",
        "--operation",
        "read",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added 2 ACL entries"), "{out}");
    let (code, out, err) = admin(&["acl", "list", "--principal", "User:alice", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{out}");
    let (code, out, err) = alice(&["topic", "describe", "orders"]);
    assert_eq!(code, 0, "READ and WRITE imply DESCRIBE: {err}");
    assert!(out.contains("orders"), "{out}");

    // A wrong password is an authentication failure, with the hint.
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[("HERALD_PASSWORD", "not alice's password")],
        &[&["topic", "list", "--user", "alice"][..], &target[..]].concat(),
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("authentication"), "{err}");
    // --user without HERALD_PASSWORD says what is missing.
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &[&["topic", "list", "--user", "alice"][..], &target[..]].concat(),
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("HERALD_PASSWORD"), "{err}");

    let (code, _, err) = admin(&["acl", "remove"]);
    assert_ne!(code, 0);
    assert!(err.contains("--all"), "an empty filter is refused: {err}");
    let (code, out, err) = admin(&["acl", "remove", "--principal", "User:alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed 2 ACL entries"), "{out}");
    let (code, _, err) = alice(&["topic", "describe", "orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("DESCRIBE"), "{err}");
}

#[test]
fn without_authentication_anyone_may_do_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("broker");
    let (_broker, announced) = start(
        &[
            "broker",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
        ],
        &data,
        "herald broker listening on quic://",
    );
    let (addr, fingerprint) = support::broker_announcement(&announced);
    assert!(
        !data.join("admin.credentials").exists(),
        "no admin is generated"
    );
    let (code, _, err) = herald_with_stdin(
        elsewhere.path(),
        &[],
        &[
            "topic",
            "create",
            "scratch",
            "--broker",
            &addr,
            "--fingerprint",
            &fingerprint,
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
}
