//! Rebuilding only when needed: the stamp of a build's inputs, writes that keep unchanged
//! files untouched, and the `rerun-if-changed` lines for cargo.

use std::path::{Path, PathBuf};

use crate::Error;

/// The record of a build's inputs in `OUT_DIR`, next to `herald.rs`.
pub const STAMP_FILE: &str = "herald.rs.inputs";

pub(crate) fn emit_rerun(manifest: &Path, lock: &Path, read: &[PathBuf], out_dir: &Path) {
    if !manifest.starts_with(out_dir) {
        println!("cargo:rerun-if-changed={}", manifest.display());
    }
    println!("cargo:rerun-if-changed={}", lock.display());
    for path in read.iter().filter(|p| !p.starts_with(out_dir)) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The program generating (the build script, which links herald-codegen): its size and
/// modification time. Cargo rebuilds and reruns the build script when herald-codegen changes,
/// but the inputs are then unchanged; without this the stamp would keep the output of the
/// older generator.
fn generator_identity() -> String {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|meta| {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{modified}", meta.len())
        })
        .unwrap_or_default()
}

/// Digests of every input of the last build (the generator's version and binary included).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) files: Vec<PathBuf>,
    digest: String,
}

impl Stamp {
    fn digest(manifest: &Path, lock: &Path, files: &[PathBuf]) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(generator_identity().as_bytes());
        for path in [manifest, lock]
            .into_iter()
            .chain(files.iter().map(PathBuf::as_path))
        {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            match std::fs::read(path) {
                Ok(bytes) => {
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                }
                Err(_) => hasher.update(b"<missing>"),
            }
        }
        hex::encode(hasher.finalize())
    }

    pub(crate) fn of(manifest: &Path, lock: &Path, files: Vec<PathBuf>) -> Self {
        let digest = Self::digest(manifest, lock, &files);
        Self { files, digest }
    }

    pub(crate) fn is_current(&self, manifest: &Path, lock: &Path) -> bool {
        Self::digest(manifest, lock, &self.files) == self.digest
    }

    pub(crate) fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        let digest = lines.next()?.to_owned();
        Some(Self {
            digest,
            files: lines.map(PathBuf::from).collect(),
        })
    }

    pub(crate) fn save(&self, path: &Path) -> Result<bool, Error> {
        let mut text = format!("{}\n", self.digest);
        for file in &self.files {
            text.push_str(&format!("{}\n", file.display()));
        }
        write_if_changed(path, text.as_bytes())
    }
}

/// Writes `bytes` to `path` unless it already holds exactly them; returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    std::fs::write(path, bytes).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(true)
}
