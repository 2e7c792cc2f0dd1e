//! Interop: Confluent's own Python client (`confluent-kafka`, pinned) against the real
//! `herald` binary: registry calls, Avro and Protobuf serializers and deserializers.
//!
//! The client is installed into `target/interop-venv` on first use (`.ci/run` does it up
//! front); this needs `python3` with `venv` and access to PyPI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use herald_tests::{target_profile_dir, RegistryProcess};

const CLIENT_REQUIREMENT: &str = "confluent-kafka[avro,protobuf,schemaregistry]==2.16.0";

fn python() -> anyhow::Result<PathBuf> {
    let venv = target_profile_dir()?
        .parent()
        .context("target dir")?
        .join("interop-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("herald-installed");
    if !marker.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", CLIENT_REQUIREMENT]))?;
        std::fs::write(&marker, CLIENT_REQUIREMENT)?;
    }
    Ok(python)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

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
