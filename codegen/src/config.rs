//! The `build.rs` entry points: [`Config`] and [`compile`].

use std::path::{Path, PathBuf};

use crate::stamp::{emit_rerun, Stamp};
use crate::{
    generate, load_inputs, lock_warnings, write_if_changed, Error, Lock, Manifest, Pin, Registry,
    Schemas, Topic, STAMP_FILE,
};

/// The name of the generated file in `OUT_DIR`.
pub const OUTPUT_FILE: &str = "herald.rs";

/// The `build.rs` builder: the same powers as the manifest, in code.
#[derive(Debug, Clone, Default)]
pub struct Config {
    manifest: Option<PathBuf>,
    /// A manifest built in code (`proto`, `avro`, `topic`...), instead of a file.
    inline: Option<Manifest>,
    out_dir: Option<PathBuf>,
    emit_rerun: bool,
}

impl Config {
    pub fn new() -> Self {
        Self {
            manifest: None,
            inline: None,
            out_dir: None,
            emit_rerun: true,
        }
    }

    fn inline(&mut self) -> &mut Manifest {
        self.inline.get_or_insert_with(|| Manifest {
            schemas: Schemas::default(),
            topics: Vec::new(),
            registry: None,
            // Relative paths are the crate's, as in a manifest beside Cargo.toml.
            root: std::env::var_os("CARGO_MANIFEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_default(),
        })
    }

    /// A `.proto` file to compile (in code, instead of a manifest).
    pub fn proto(mut self, path: impl Into<PathBuf>) -> Self {
        self.inline().schemas.proto.push(path.into());
        self
    }

    /// A directory `.proto` imports are resolved from.
    pub fn proto_include(mut self, path: impl Into<PathBuf>) -> Self {
        self.inline().schemas.proto_include.push(path.into());
        self
    }

    /// An `.avsc` file.
    pub fn avro(mut self, path: impl Into<PathBuf>) -> Self {
        self.inline().schemas.avro.push(path.into());
        self
    }

    /// A topic binding (see [`Topic::new`]).
    pub fn topic(mut self, topic: Topic) -> Self {
        self.inline().topics.push(topic);
        self
    }

    /// Pins `subject` at `version` from the registry at `url` (resolved into `herald.lock` by
    /// `herald schema pin`).
    pub fn pin(mut self, url: impl Into<String>, subject: impl Into<String>, version: u32) -> Self {
        let url = url.into();
        let registry = self.inline().registry.get_or_insert_with(|| Registry {
            url: url.clone(),
            pins: Vec::new(),
        });
        registry.url = url;
        registry.pins.push(Pin {
            subject: subject.into(),
            version,
        });
        self
    }

    /// The manifest to read (default `herald.toml` in the crate).
    pub fn manifest(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest = Some(path.into());
        self
    }

    /// Where `herald.rs` goes (default `$OUT_DIR`).
    pub fn out_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(path.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (default yes).
    pub fn emit_rerun_if_changed(mut self, yes: bool) -> Self {
        self.emit_rerun = yes;
        self
    }

    /// Generates `herald.rs`; returns whether it was rewritten.
    pub fn compile(&self) -> Result<bool, Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };
        let (manifest, manifest_path) = match (&self.inline, &self.manifest) {
            (Some(inline), None) => {
                inline.validate(Path::new("build.rs"))?;
                // The in-code configuration is an input like a manifest file: recorded in
                // OUT_DIR so the input stamp covers it.
                let path = out_dir.join("herald.config");
                write_if_changed(&path, format!("{inline:#?}").as_bytes())?;
                (inline.clone(), path)
            }
            (None, manifest) => {
                let path = manifest
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("herald.toml"));
                (Manifest::load(&path)?, path)
            }
            (Some(_), Some(path)) => {
                return Err(Error::Io {
                    path: path.display().to_string(),
                    message: "give either a manifest file or schemas and topics in code, not both"
                        .to_owned(),
                })
            }
        };
        let lock_path = manifest.lock_path();
        let output = out_dir.join(OUTPUT_FILE);
        let stamp_path = out_dir.join(STAMP_FILE);
        // A rebuild whose inputs are byte-for-byte those of the last build does nothing.
        if output.exists() {
            if let Some(stamp) = Stamp::load(&stamp_path) {
                if stamp.is_current(&manifest_path, &lock_path) {
                    if self.emit_rerun {
                        emit_rerun(&manifest_path, &lock_path, &stamp.files, &out_dir);
                    }
                    return Ok(false);
                }
            }
        }
        let lock = Lock::load(&lock_path)?;
        let (inputs, read) = load_inputs(&manifest, &lock, &out_dir)?;
        if self.emit_rerun {
            emit_rerun(&manifest_path, &lock_path, &read, &out_dir);
        }
        for warning in lock_warnings(&inputs, &lock) {
            println!("cargo:warning=herald: {warning}");
        }
        let generated = generate(&inputs)?;
        let written = write_if_changed(&output, generated.source.as_bytes())?;
        Stamp::of(&manifest_path, &lock_path, read).save(&stamp_path)?;
        Ok(written)
    }
}

/// `build.rs` in one line: generates `$OUT_DIR/herald.rs` from the manifest at `manifest`.
pub fn compile(manifest: impl Into<PathBuf>) -> Result<(), Error> {
    Config::new().manifest(manifest).compile().map(drop)
}
