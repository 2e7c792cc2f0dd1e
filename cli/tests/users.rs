//! `herald user add|list|passwd|remove` on a broker data directory, and
//! `herald registry hash-password`, and `herald user export` into the registry's users file.

mod support;

use support::{herald, herald_with_stdin};

#[test]
fn users_are_managed_in_the_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("broker");
    let data = data.to_str().expect("utf-8 path");
    let with_password = |args: &[&str], password: &str| {
        herald_with_stdin(dir.path(), &[], args, &format!("{password}\n"))
    };
    let (code, out, err) = with_password(
        &["user", "add", "alice", "--data-dir", data],
        "correct horse",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "added user alice");
    let (code, _, err) = with_password(
        &["user", "add", "alice", "--data-dir", data],
        "correct horse",
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = with_password(&["user", "add", "bob", "--data-dir", data], "short");
    assert_ne!(code, 0);
    assert!(err.contains("at least 8 characters"), "{err}");
    let (code, out, _) = herald(dir.path(), &["user", "list", "--data-dir", data]);
    assert_eq!((code, out.trim()), (0, "alice"));
    let stored = std::fs::read_to_string(dir.path().join("broker/users.meta")).expect("read");
    assert!(
        !stored.contains("correct horse"),
        "no password is stored: {stored}"
    );
    let (code, _, err) = with_password(
        &["user", "passwd", "alice", "--data-dir", data],
        "battery staple",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = herald(dir.path(), &["user", "remove", "alice", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = herald(dir.path(), &["user", "remove", "alice", "--data-dir", data]);
    assert_ne!(code, 0);
    assert!(err.contains("no user 'alice'"), "{err}");
}

#[test]
fn a_registry_password_hash_is_printed_for_the_users_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) =
        herald_with_stdin(dir.path(), &[], &["registry", "hash-password"], "secret\n");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("password_hash = \"pbkdf2-sha256$210000$"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
}

/// `herald user export` prints a registry users-file entry with the broker's credential, and
/// the registry then accepts the same password.
#[test]
fn an_exported_user_logs_in_to_the_registry_with_the_same_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("broker");
    let data = data.to_str().expect("utf-8");
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &["user", "add", "alice", "--data-dir", data],
        "correct horse battery\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = herald_with_stdin(
        dir.path(),
        &[],
        &[
            "user",
            "export",
            "alice",
            "--data-dir",
            data,
            "--role",
            "write",
            "--subject",
            "team-a.",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("password_hash = \"scram-sha256-stored$"),
        "{out}"
    );
    let users = dir.path().join("registry-users.toml");
    std::fs::write(&users, &out).expect("write");
    let (_registry, url) = registry_serving(dir.path(), "--auth-file", &users);
    let status = |password: &str| registry_status(&url, "alice", password);
    assert_eq!(status("correct horse battery"), Ok(()));
    let wrong = status("wrong horse battery");
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("401")),
        "{wrong:?}"
    );
}

/// A `herald registry serve` process in `dir` with `flag` (`--users` or `--auth-file`) set to
/// `file`: the process and its URL.
fn registry_serving(
    dir: &std::path::Path,
    flag: &str,
    file: &std::path::Path,
) -> (support::Server, String) {
    support::start(
        &[
            "registry",
            "serve",
            "--listen",
            "127.0.0.1:0",
            flag,
            file.to_str().expect("utf-8"),
        ],
        &dir.join("registry"),
        "herald registry listening on ",
    )
}

/// Runs `call` with a registry client logged in as `user`/`password` at `url`.
fn as_user<T, F>(
    url: &str,
    user: &str,
    password: &str,
    call: impl FnOnce(herald_registry_client::RegistryClient) -> F,
) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, herald_registry_client::ClientError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = herald_registry_client::RegistryClient::new(url.to_owned())
        .expect("client")
        .with_basic_auth(user.to_owned(), password.to_owned());
    runtime.block_on(call(client)).map_err(|e| e.to_string())
}

/// The outcome of a `GET /subjects` as `user`/`password` against `url`.
fn registry_status(url: &str, user: &str, password: &str) -> Result<(), String> {
    as_user(url, user, password, |client| async move {
        client.subjects(false).await.map(drop)
    })
}

/// One users file for both servers: a user added with a registry role logs in to a registry
/// serving the broker's users.meta with its broker password; `herald user registry` and
/// `herald user remove` apply to the running registry; `user list` shows the access.
#[test]
fn the_registry_serves_the_brokers_users_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("broker");
    let data = data.to_str().expect("utf-8");
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &[
            "user",
            "add",
            "alice",
            "--data-dir",
            data,
            "--registry-role",
            "write",
            "--subject",
            "team-a.",
        ],
        "correct horse battery\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &["user", "add", "bob", "--data-dir", data],
        "battery staple horse\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = herald(dir.path(), &["user", "list", "--data-dir", data]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["alice\tregistry=write subjects=team-a.", "bob"]
    );
    let users = dir.path().join("broker/users.meta");
    let (_registry, url) = registry_serving(dir.path(), "--users", &users);
    assert_eq!(
        registry_status(&url, "alice", "correct horse battery"),
        Ok(())
    );
    let wrong = registry_status(&url, "alice", "wrong horse battery");
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("401")),
        "{wrong:?}"
    );
    let bob = register_as(&url, "bob", "battery staple horse", "team-b.orders-value");
    assert!(bob.as_ref().is_err_and(|e| e.contains("403")), "{bob:?}");
    let (code, _, err) = herald(
        dir.path(),
        &[
            "user",
            "registry",
            "bob",
            "--role",
            "write",
            "--data-dir",
            data,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = herald(dir.path(), &["user", "remove", "alice", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    // Applied within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let bob = register_as(&url, "bob", "battery staple horse", "team-b.orders-value");
        let alice = registry_status(&url, "alice", "correct horse battery");
        if bob.is_ok() && alice.as_ref().is_err_and(|e| e.contains("401")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "changes not applied: bob {bob:?}, alice {alice:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `herald user import` moves a registry TOML users file into the users file: the same
/// password then works against a registry serving it.
#[test]
fn registry_toml_users_are_imported_with_their_passwords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, hash, err) = herald_with_stdin(
        dir.path(),
        &[],
        &["registry", "hash-password"],
        "old secret pw\n",
    );
    assert_eq!(code, 0, "{err}");
    let toml = dir.path().join("registry-users.toml");
    std::fs::write(
        &toml,
        format!(
            "[[user]]\nname = \"ci\"\n{}role = \"admin\"\n[[user]]\nname = \"old\"\npassword_sha256 = \"{}\"\nrole = \"read\"\n",
            hash.trim_end().to_owned() + "\n",
            "0".repeat(64)
        ),
    )
    .expect("write");
    let data = dir.path().join("broker");
    let data = data.to_str().expect("utf-8");
    let (code, out, err) = herald(
        dir.path(),
        &[
            "user",
            "import",
            toml.to_str().expect("utf-8"),
            "--data-dir",
            data,
        ],
    );
    assert_ne!(code, 0, "a user that cannot convert fails the command");
    assert!(out.contains("imported 1 users"), "{out}");
    assert!(
        err.contains("old: ") && err.contains("password_sha256"),
        "{err}"
    );
    let (_, out, _) = herald(dir.path(), &["user", "list", "--data-dir", data]);
    assert_eq!(out.trim(), "ci\tregistry=admin");
    let users = dir.path().join("broker/users.meta");
    let (_registry, url) = registry_serving(dir.path(), "--users", &users);
    assert_eq!(registry_status(&url, "ci", "old secret pw"), Ok(()));
}

/// Registers an Avro schema to `subject` as `user`/`password` at `url`.
fn register_as(url: &str, user: &str, password: &str, subject: &str) -> Result<u32, String> {
    let schema = herald_registry_client::NewSchema::avro(r#"{"type":"string"}"#);
    as_user(url, user, password, |client| async move {
        client.register(subject, &schema).await
    })
}

/// SUBJECT ACLs granted with `herald acl add` (through the running broker, into its
/// acls.meta) apply to a registry serving the same users: a user without a registry role may
/// register exactly the subjects granted to it, once the grant is made.
#[test]
fn subject_acls_added_through_the_broker_apply_to_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("herald-data/broker");
    // First start: the broker creates `admin`, which the CLI here uses for `acl add`.
    let (_broker, addr, fingerprint) = support::broker(&data);
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[],
        &[
            "user",
            "add",
            "carol",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        "carol's long password\n",
    );
    assert_eq!(code, 0, "{err}");
    let users = data.join("users.meta");
    let (_registry, url) = registry_serving(dir.path(), "--users", &users);
    let carol = |subject: &str| register_as(&url, "carol", "carol's long password", subject);
    let refused = carol("team-c.orders-value");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("403")),
        "{refused:?}"
    );
    let env = [
        ("HERALD_BROKER", addr.as_str()),
        ("HERALD_BROKER_FINGERPRINT", fingerprint.as_str()),
    ];
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &env,
        &[
            "acl",
            "add",
            "--principal",
            "User:carol",
            "--resource-type",
            "subject",
            "--pattern",
            "prefixed",
            "--name",
            "team-c.",
            "--operation",
            "write",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match carol("team-c.orders-value") {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the grant did not apply: {e}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let other = carol("team-d.orders-value");
    assert!(
        other.as_ref().is_err_and(|e| e.contains("403")),
        "{other:?}"
    );
}
