//! Shared by the CLI's integration tests: run `herald`, start servers on port 0.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process, killed when dropped.
pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `herald args` in `dir`: (exit code, stdout, stderr).
pub(crate) fn herald(dir: &Path, args: &[&str]) -> (i32, String, String) {
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

/// Starts `herald args --data-dir data_dir` and returns the rest of its first stdout line,
/// which must start with `prefix`.
pub(crate) fn start(args: &[&str], data_dir: &Path, prefix: &str) -> (Server, String) {
    let (server, lines) = spawn(args, data_dir, 1);
    let rest = lines
        .first()
        .and_then(|line| line.strip_prefix(prefix))
        .expect("announcement")
        .to_owned();
    (server, rest)
}

/// Starts `herald args --data-dir data_dir` and returns its first `lines` stdout lines.
pub(crate) fn spawn(args: &[&str], data_dir: &Path, lines: usize) -> (Server, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let server = Server(child);
    let announced = (0..lines)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).expect("announces");
            line.trim().to_owned()
        })
        .collect();
    (server, announced)
}

/// Runs `herald args` in `dir` with `env` and `input` on stdin: (exit code, stdout, stderr).
pub(crate) fn herald_with_stdin(
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    input: &str,
) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("waits");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The admin credential a broker generated into `data_dir` on first start.
pub(crate) fn admin_credentials(data_dir: &Path) -> herald_broker_client::Credentials {
    herald_broker_client::Credentials::from_local_file(
        &data_dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE),
    )
    .expect("the broker generated an admin credential")
}

/// A registry on port 0: (process, URL).
pub(crate) fn registry(data_dir: &Path) -> (Server, String) {
    start(
        &["registry", "serve", "--listen", "127.0.0.1:0"],
        data_dir,
        "herald registry listening on ",
    )
}

/// A broker on port 0: (process, address, certificate fingerprint).
pub(crate) fn broker(data_dir: &Path) -> (Server, String, String) {
    let (server, announced) = start(
        &["broker", "serve", "--listen", "127.0.0.1:0"],
        data_dir,
        "herald broker listening on quic://",
    );
    let (addr, fingerprint) = broker_announcement(&announced);
    (server, addr, fingerprint)
}

/// (address, fingerprint) from what follows `quic://` in a broker's announcement.
pub(crate) fn broker_announcement(announced: &str) -> (String, String) {
    let mut words = announced.split_whitespace();
    let addr = words.next().expect("addr").to_owned();
    let fingerprint = words
        .next()
        .and_then(|w| w.strip_prefix("fingerprint="))
        .expect("fingerprint")
        .to_owned();
    (addr, fingerprint)
}

/// The environment that points `herald` commands at a broker and a registry.
pub(crate) fn server_env<'a>(
    addr: &'a str,
    fingerprint: &'a str,
    registry_url: &'a str,
) -> [(&'static str, &'a str); 3] {
    [
        ("HERALD_BROKER", addr),
        ("HERALD_BROKER_FINGERPRINT", fingerprint),
        ("HERALD_REGISTRY", registry_url),
    ]
}

/// Registers `schemas` in order (subject, schema) at the registry `url`; returns their IDs.
pub(crate) fn register(
    url: &str,
    schemas: &[(&str, herald_registry_client::NewSchema)],
) -> Vec<u32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = herald_registry_client::RegistryClient::new(url).expect("client");
        let mut ids = Vec::new();
        for (subject, schema) in schemas {
            ids.push(client.register(subject, schema).await.expect("register"));
        }
        ids
    })
}
