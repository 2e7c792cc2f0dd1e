//! Interop: Confluent's own Python client (`confluent-kafka`, pinned) against the real
//! `herald` binary: registry calls, Avro and Protobuf serializers and deserializers.
//!
//! The client is installed into `target/interop-venv` on first use (`.ci/run` does it up
//! front); this needs `python3` with `venv` and access to PyPI.

use std::path::Path;
use std::process::Command;

use herald_tests::{interop_python as python, RegistryProcess};

#[test]
fn confluent_python_client_works_unchanged() -> anyhow::Result<()> {
    let python = python()?;
    let dir = tempfile::tempdir()?;
    let server = RegistryProcess::start(dir.path())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/confluent_client.py");
    let output = Command::new(python).arg(script).arg(&server.url).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("\n0 passed"), "{stdout}");
    Ok(())
}

#[test]
fn sigterm_shuts_the_registry_down_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = RegistryProcess::start(dir.path())?;
    let status = server.terminate()?;
    assert!(status.success(), "{status}");
    Ok(())
}
