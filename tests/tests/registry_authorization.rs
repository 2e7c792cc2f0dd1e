//! The registry's authorization matrix against a real `herald registry serve --auth-file`
//! process: for every endpoint, a caller without the role it needs (no credentials or a wrong
//! password for read endpoints, a reader for write endpoints, a writer for admin endpoints) is
//! refused (401 or 403, with a Confluent-style error body) and nothing changes; with the role
//! the call works. The users file holds broker-style SCRAM credentials, as `herald user
//! export` prints them.

use std::path::Path;

use anyhow::Context;
use herald_tests::{herald_binary, HeraldProcess};

const SCHEMA: &str = r#"{"schema": "\"string\""}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Read,
    Write,
    Admin,
}

const USERS: [(&str, &str, Role); 3] = [
    ("reader", "reader password", Role::Read),
    ("writer", "writer password", Role::Write),
    ("admin", "admin password", Role::Admin),
];

/// Every endpoint: method, path, body, the role it needs. Destructive ones come last and act
/// on subjects of their own.
const ENDPOINTS: &[(&str, &str, Option<&str>, Role)] = &[
    ("GET", "/", None, Role::Read),
    ("GET", "/subjects", None, Role::Read),
    ("GET", "/subjects/s/versions", None, Role::Read),
    ("GET", "/subjects/s/versions/1", None, Role::Read),
    ("GET", "/subjects/s/versions/1/schema", None, Role::Read),
    (
        "GET",
        "/subjects/s/versions/1/referencedby",
        None,
        Role::Read,
    ),
    ("POST", "/subjects/s", Some(SCHEMA), Role::Read),
    ("GET", "/schemas", None, Role::Read),
    ("GET", "/schemas/types", None, Role::Read),
    ("GET", "/schemas/ids/1", None, Role::Read),
    ("GET", "/schemas/ids/1/schema", None, Role::Read),
    ("GET", "/schemas/ids/1/subjects", None, Role::Read),
    ("GET", "/schemas/ids/1/versions", None, Role::Read),
    (
        "POST",
        "/compatibility/subjects/s/versions",
        Some(SCHEMA),
        Role::Read,
    ),
    (
        "POST",
        "/compatibility/subjects/s/versions/latest",
        Some(SCHEMA),
        Role::Read,
    ),
    ("GET", "/config", None, Role::Read),
    ("GET", "/config/s", None, Role::Read),
    ("GET", "/mode", None, Role::Read),
    ("GET", "/mode/s", None, Role::Read),
    ("GET", "/contexts", None, Role::Read),
    ("GET", "/v1/metadata/version", None, Role::Read),
    ("POST", "/subjects/new/versions", Some(SCHEMA), Role::Write),
    (
        "DELETE",
        "/subjects/del-version/versions/1",
        None,
        Role::Write,
    ),
    ("DELETE", "/subjects/del-subject", None, Role::Write),
    (
        "PUT",
        "/config",
        Some(r#"{"compatibility": "FULL"}"#),
        Role::Admin,
    ),
    (
        "PUT",
        "/config/s",
        Some(r#"{"compatibility": "NONE"}"#),
        Role::Admin,
    ),
    ("DELETE", "/config/s", None, Role::Admin),
    ("DELETE", "/config", None, Role::Admin),
    (
        "PUT",
        "/mode/s",
        Some(r#"{"mode": "READONLY"}"#),
        Role::Admin,
    ),
    ("DELETE", "/mode/s", None, Role::Admin),
    (
        "PUT",
        "/mode",
        Some(r#"{"mode": "READWRITE"}"#),
        Role::Admin,
    ),
    (
        "DELETE",
        "/subjects/del-permanent?permanent=true",
        None,
        Role::Admin,
    ),
];

struct Registry {
    _process: HeraldProcess,
    url: String,
    http: reqwest::Client,
}

impl Registry {
    /// (status, body) of `method path` as `user` (name, password).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        user: Option<(&str, &str)>,
    ) -> anyhow::Result<(u16, String)> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{path}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json");
        if let Some((name, password)) = user {
            request = request.basic_auth(name, Some(password));
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<()> {
        let (status, text) = self
            .call(method, path, body, Some((USERS[2].0, USERS[2].1)))
            .await?;
        anyhow::ensure!(status < 300, "{method} {path}: {status} {text}");
        Ok(())
    }

    /// What a refused call could have changed, as the admin reads it.
    async fn state(&self) -> anyhow::Result<String> {
        let admin = Some((USERS[2].0, USERS[2].1));
        let mut state = String::new();
        for path in [
            "/subjects?deleted=true",
            "/config",
            "/config/s",
            "/mode",
            "/mode/s",
            "/subjects/s/versions",
            "/subjects/new/versions",
            "/subjects/del-version/versions?deleted=true",
        ] {
            let (status, body) = self.call("GET", path, None, admin).await?;
            state.push_str(&format!("{path} {status} {body}\n"));
        }
        Ok(state)
    }
}

fn start(dir: &Path) -> anyhow::Result<Registry> {
    let mut file = String::new();
    for (name, password, role) in USERS {
        let credential = herald_auth::scram::Credential::new(password, 4096)?.to_text();
        let role = match role {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        };
        file.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{credential}\"\nrole = \"{role}\"\n"
        ));
    }
    let users = dir.join("users.toml");
    std::fs::write(&users, file)?;
    let _ = herald_binary()?;
    let users = users.to_str().context("utf-8 path")?.to_owned();
    let process = HeraldProcess::start(
        &[
            "registry",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            &users,
        ],
        &dir.join("data"),
        "herald registry listening on ",
    )?;
    let url = process.announced.clone();
    Ok(Registry {
        _process: process,
        url,
        http: reqwest::Client::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registry_endpoint_is_refused_without_its_role_and_works_with_it(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = start(dir.path())?;
    for subject in ["s", "del-version", "del-subject", "del-permanent"] {
        registry
            .admin(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(SCHEMA),
            )
            .await?;
    }
    registry
        .admin("DELETE", "/subjects/del-permanent", None)
        .await?;
    // A subject-level config and mode to read (absent ones are 404s).
    registry
        .admin("PUT", "/config/s", Some(r#"{"compatibility": "BACKWARD"}"#))
        .await?;
    registry
        .admin("PUT", "/mode/s", Some(r#"{"mode": "READWRITE"}"#))
        .await?;

    for &(method, path, body, needed) in ENDPOINTS {
        // Everyone below the role, and strangers.
        let mut refused_as: Vec<(Option<(&str, &str)>, u16)> =
            vec![(None, 401), (Some(("reader", "not the password")), 401)];
        for (name, password, role) in USERS {
            if role < needed {
                refused_as.push((Some((name, password)), 403));
            }
        }
        for (user, expected) in refused_as {
            let before = registry.state().await?;
            let (status, text) = registry.call(method, path, body, user).await?;
            assert_eq!(
                status, expected,
                "{method} {path} as {user:?} (needs {needed:?}): {text}"
            );
            let error: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{method} {path}: not a JSON error: {text}"))?;
            assert!(
                error["error_code"].is_u64() && error["message"].is_string(),
                "{method} {path}: {text}"
            );
            assert_eq!(
                registry.state().await?,
                before,
                "{method} {path} as {user:?}: a refused call changes nothing"
            );
        }
        // The least role that may.
        let (name, password, _) = USERS
            .into_iter()
            .find(|(_, _, role)| *role == needed)
            .context("a user per role")?;
        let (status, text) = registry
            .call(method, path, body, Some((name, password)))
            .await?;
        assert!(
            (200..300).contains(&status),
            "{method} {path} as {name}: {status} {text}"
        );
    }
    Ok(())
}
