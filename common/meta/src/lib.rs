//! herald-meta: Herald's versioned metadata files (the broker's `topic.meta`, `producers.meta`,
//! group offset files, `acls.meta`, and `users.meta`, which the registry reads too).
//!
//! A file is one line of JSON, an envelope around the payload:
//!
//! ```text
//! {"kind":"producers","version":1,"crc32c":1234567890,"payload":{...}}
//! ```
//!
//! `kind` says which file it is, `version` the payload's format (a reader refuses versions
//! newer than it knows, naming the file), `crc32c` is the CRC-32C of the payload's bytes
//! exactly as they stand in the file (a damaged or hand-edited payload is refused). Files are
//! written with [`write_atomically`] ([`write_private`] for secrets).
//!
//! Files written before the envelope (TSV for producers and offsets, a `CreateTopic` wire
//! body for topics) never start with `{`: [`decode`] answers `None` for them and the caller
//! reads them with its old reader; its next write uses the envelope.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One kind of metadata file and the payload version this broker writes (and the newest it
/// reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("{path}: {kind} metadata format version {found} is newer than this broker reads (up to version {supported}); run a newer Herald or restore the file from a backup")]
    UnsupportedVersion {
        path: String,
        kind: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

impl MetaError {
    pub fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        MetaError::Corrupt {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    kind: &'static str,
    version: u32,
    crc32c: u32,
    payload: &'a RawValue,
}

/// The part of the envelope every version keeps: read first, so that a newer version is
/// refused by its number whatever else it changed.
#[derive(Deserialize)]
struct Header {
    kind: String,
    version: u32,
}

#[derive(Deserialize)]
struct Body<'a> {
    crc32c: u32,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Whether `bytes` hold an envelope (rather than a file written before it).
pub fn is_versioned(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The file's bytes: the envelope around `payload`, at `kind.version`, ending in a newline.
pub fn encode<T: Serialize>(kind: Kind, payload: &T) -> std::io::Result<Vec<u8>> {
    let raw: Box<RawValue> =
        serde_json::value::to_raw_value(payload).map_err(std::io::Error::other)?;
    let envelope = EnvelopeOut {
        kind: kind.name,
        version: kind.version,
        crc32c: crc32c::crc32c(raw.get().as_bytes()),
        payload: &raw,
    };
    let mut bytes = serde_json::to_vec(&envelope).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Why [`read_enveloped`] could not read a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The payload of the envelope at `path`, or `None` when the file does not exist yet. For
/// files that only ever held envelopes: anything else there is corrupt.
pub fn read_enveloped<T: DeserializeOwned>(
    path: &Path,
    kind: Kind,
) -> Result<Option<T>, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReadError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    match decode(path, &bytes, kind)? {
        Some(payload) => Ok(Some(payload)),
        None => Err(MetaError::corrupt(path, format!("not a {} file", kind.name)).into()),
    }
}

/// Writes `payload` in an envelope to `dir/name`, atomically.
pub fn write<T: Serialize>(dir: &Path, name: &str, kind: Kind, payload: &T) -> std::io::Result<()> {
    write_atomically(dir, name, &encode(kind, payload)?)
}

/// Reads the envelope in `bytes` (the contents of `path`, named in errors): `Ok(None)` when
/// the file predates envelopes (the caller reads it the old way), the payload otherwise. The
/// kind must match, the version be within `1..=kind.version` and the CRC agree.
pub fn decode<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    kind: Kind,
) -> Result<Option<T>, MetaError> {
    if !is_versioned(bytes) {
        return Ok(None);
    }
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| MetaError::corrupt(path, format!("not a valid metadata envelope: {e}")))?;
    if header.kind != kind.name {
        return Err(MetaError::corrupt(
            path,
            format!(
                "holds '{}' metadata where '{}' metadata was expected",
                header.kind, kind.name
            ),
        ));
    }
    if header.version > kind.version {
        return Err(MetaError::UnsupportedVersion {
            path: path.display().to_string(),
            kind: kind.name,
            found: header.version,
            supported: kind.version,
        });
    }
    if header.version == 0 {
        return Err(MetaError::corrupt(path, "format version 0 does not exist"));
    }
    let body: Body<'_> = serde_json::from_slice(bytes)
        .map_err(|e| MetaError::corrupt(path, format!("not a valid metadata envelope: {e}")))?;
    let computed = crc32c::crc32c(body.payload.get().as_bytes());
    if computed != body.crc32c {
        return Err(MetaError::corrupt(
            path,
            format!(
                "checksum mismatch: the envelope says crc32c {:#010x}, the payload has {computed:#010x} (damaged or edited by hand)",
                body.crc32c
            ),
        ));
    }
    serde_json::from_str(body.payload.get())
        .map(Some)
        .map_err(|e| {
            MetaError::corrupt(
                path,
                format!(
                    "invalid {} payload (version {}): {e}",
                    kind.name, header.version
                ),
            )
        })
}

/// Writes a secret readable by its owner only (0600 from its creation: never briefly readable
/// by others) to `path`, atomically (a temporary file beside it, synced, renamed, the directory
/// synced).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    // One fixed name, removed first: a temporary a crashed writer left (it may hold a secret)
    // does not linger. Writers of one file are serialised by their callers (users.lock).
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Makes the entries of a directory durable (files created, renamed or removed in it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, synced, renamed over `name`,
/// then the directory synced. Used for `topic.meta`, `producers.meta` and group offsets.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: Kind = Kind {
        name: "example",
        version: 1,
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Example {
        name: String,
        count: u64,
    }

    fn example() -> Example {
        Example {
            name: "tab\tnewline\n{quote\"".to_owned(),
            count: 42,
        }
    }

    fn path() -> &'static Path {
        Path::new("/data/example.meta")
    }

    #[test]
    fn envelopes_round_trip() {
        let bytes = encode(KIND, &example()).expect("encode");
        assert!(is_versioned(&bytes));
        assert!(bytes.ends_with(b"\n"));
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(
            text.starts_with(r#"{"kind":"example","version":1,"crc32c":"#),
            "{text}"
        );
        assert_eq!(
            decode::<Example>(path(), &bytes, KIND).expect("decode"),
            Some(example())
        );
    }

    #[test]
    fn files_without_an_envelope_are_left_to_the_old_reader() {
        let olds: [&[u8]; 4] = [b"3\n1\t0\tcheckout\n", b"", b"\x00\x06orders", b"  \n"];
        for old in olds {
            assert!(!is_versioned(old));
            assert_eq!(decode::<Example>(path(), old, KIND), Ok(None));
        }
    }

    #[test]
    fn a_changed_payload_byte_is_refused_by_the_checksum() {
        let bytes = encode(KIND, &example()).expect("encode");
        let position = bytes
            .windows(10)
            .position(|w| w == br#""count":42"#)
            .expect("count in the payload");
        let mut damaged = bytes.clone();
        damaged[position + 8] = b'5';
        let error = decode::<Example>(path(), &damaged, KIND).expect_err("damaged");
        let message = error.to_string();
        assert!(matches!(error, MetaError::Corrupt { .. }), "{message}");
        assert!(message.contains("/data/example.meta"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
        // Damage that breaks the JSON is refused too.
        let mut broken = bytes;
        broken[1] = b'!';
        let error = decode::<Example>(path(), &broken, KIND).expect_err("broken");
        assert!(error.to_string().contains("is corrupt"), "{error}");
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let newer = Kind {
            name: "example",
            version: 7,
        };
        let bytes = encode(newer, &example()).expect("encode");
        let error = decode::<Example>(path(), &bytes, KIND).expect_err("newer");
        assert_eq!(
            error,
            MetaError::UnsupportedVersion {
                path: "/data/example.meta".to_owned(),
                kind: "example",
                found: 7,
                supported: 1,
            }
        );
        let message = error.to_string();
        assert!(message.contains("/data/example.meta"), "{message}");
        assert!(message.contains("version 7"), "{message}");
        // A future envelope with other fields is still refused by its version.
        let future = br#"{"kind":"example","version":2,"sha256":"ab","payload":[]}"#;
        assert!(matches!(
            decode::<Example>(path(), future, KIND),
            Err(MetaError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn another_kind_or_version_zero_is_refused() {
        let other = Kind {
            name: "other",
            version: 1,
        };
        let bytes = encode(other, &example()).expect("encode");
        let error = decode::<Example>(path(), &bytes, KIND).expect_err("kind");
        assert!(error.to_string().contains("'other'"), "{error}");
        let zero = Kind {
            name: "example",
            version: 0,
        };
        let bytes = encode(zero, &example()).expect("encode");
        assert!(matches!(
            decode::<Example>(path(), &bytes, KIND),
            Err(MetaError::Corrupt { .. })
        ));
    }

    #[test]
    fn write_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "x.meta", KIND, &example()).expect("write");
        let bytes = std::fs::read(dir.path().join("x.meta")).expect("read");
        assert_eq!(
            decode::<Example>(&dir.path().join("x.meta"), &bytes, KIND),
            Ok(Some(example()))
        );
        assert!(!dir.path().join("x.meta.tmp").exists());
    }
}
