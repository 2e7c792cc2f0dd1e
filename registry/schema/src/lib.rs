//! herald-schema: parse Avro and Protobuf schemas, give them a canonical form and a
//! fingerprint, and decide whether one schema can replace another.
//!
//! This crate is pure: no sockets, no files, no async runtime, no clock. The registry, the CLI
//! and codegen all call the same [`check`] so that a schema change is judged the same way at
//! build time, in CI and at the registry.
//!
//! What it deliberately does not do: resolve schema references by itself (the caller hands
//! over the referenced schema texts, already fetched), store anything, or know about subjects
//! and versions beyond the version numbers it is given for reporting.

mod avro;
mod compat;
mod findings;
mod protobuf;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use avro::compat::{shape as avro_shape, Shape as AvroShape};
pub use compat::{
    check, check_pair, CompatReport, CompatibilityLevel, Direction, Incompatibility, InvalidLevel,
    PreviousVersion, Rule,
};
pub use protobuf::{message_index_path, ProtobufIndexError};

/// Largest schema text accepted, in bytes. Confluent has no fixed cap; one MiB is far above any
/// real event schema and keeps a single registration from exhausting memory.
pub const SCHEMA_BYTES_MAX: usize = 1024 * 1024;

/// Deepest nesting of references that is resolved before giving up (cycles are refused earlier
/// by the caller; this bounds pathological chains).
pub const REFERENCE_DEPTH_MAX: usize = 32;

/// The schema formats Herald understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaType {
    Avro,
    Protobuf,
}

impl SchemaType {
    /// The name used on the Confluent REST API (`schemaType`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `schemaType` string that names no supported format.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unsupported schema type '{0}': supported types are AVRO and PROTOBUF")]
pub struct UnknownSchemaType(pub String);

impl FromStr for SchemaType {
    type Err = UnknownSchemaType;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            _ => Err(UnknownSchemaType(text.to_owned())),
        }
    }
}

/// A schema that another schema imports, already fetched by the caller.
///
/// `name` is what the importing schema uses to find it: for Avro the full name of the named
/// type it defines, for Protobuf the path in the `import` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedReference {
    pub name: String,
    pub schema: String,
}

/// Why a schema text could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    #[error("schema is empty")]
    Empty,
    #[error("schema is {size_bytes} bytes, more than the limit of {limit_bytes} bytes")]
    TooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("invalid avro schema: {0}")]
    Avro(String),
    #[error("invalid protobuf schema: {0}")]
    Protobuf(String),
}

/// The digest identifying a stored schema text of `schema_type` (what
/// [`ParsedSchema::fingerprint`] is for the canonical text).
pub fn text_fingerprint(schema_type: SchemaType, text: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(schema_type.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hasher.finalize().into()
}

/// A parsed, validated schema together with its canonical text.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    kind: ParsedKind,
    canonical: String,
}

#[derive(Debug, Clone)]
enum ParsedKind {
    Avro(avro::AvroSchema),
    Protobuf(protobuf::ProtobufSchema),
}

impl ParsedSchema {
    /// Parses `text` as a schema of `schema_type`, resolving imports from `references`.
    pub fn parse(
        schema_type: SchemaType,
        text: &str,
        references: &[ResolvedReference],
    ) -> Result<Self, ParseError> {
        if text.trim().is_empty() {
            return Err(ParseError::Empty);
        }
        if text.len() > SCHEMA_BYTES_MAX {
            return Err(ParseError::TooLarge {
                size_bytes: text.len(),
                limit_bytes: SCHEMA_BYTES_MAX,
            });
        }
        match schema_type {
            SchemaType::Avro => {
                let schema = avro::AvroSchema::parse(text, references)?;
                let canonical = schema.canonical_text();
                Ok(Self {
                    kind: ParsedKind::Avro(schema),
                    canonical,
                })
            }
            SchemaType::Protobuf => {
                let schema = protobuf::ProtobufSchema::parse(text, references)?;
                let canonical = schema.canonical_text();
                Ok(Self {
                    kind: ParsedKind::Protobuf(schema),
                    canonical,
                })
            }
        }
    }

    pub fn schema_type(&self) -> SchemaType {
        match self.kind {
            ParsedKind::Avro(_) => SchemaType::Avro,
            ParsedKind::Protobuf(_) => SchemaType::Protobuf,
        }
    }

    /// The text stored and served for this schema, as Confluent's `canonicalString()`:
    /// compact re-serialised JSON for Avro, Confluent's printed form for Protobuf (comments and
    /// layout dropped, fields before oneofs before nested types, names and options as written;
    /// a base64 descriptor is printed as `.proto` text). Parsing it again gives it back.
    pub fn canonical_text(&self) -> &str {
        &self.canonical
    }

    /// The normalised text used with `normalize=true`: for Avro, the canonical JSON with every
    /// object's keys sorted; for Protobuf, Confluent's normalised print (imports, options,
    /// fields, enum constants and reserved ranges sorted, type names fully qualified, no
    /// `syntax` line for proto2). Normalising it again changes nothing.
    pub fn normalized_text(&self) -> String {
        match &self.kind {
            ParsedKind::Avro(schema) => schema.normalized_text(),
            ParsedKind::Protobuf(schema) => schema.normalized_text(),
        }
    }

    /// A stable digest of the schema's canonical text (and type): two texts that differ only
    /// in layout, whitespace or comments get the same fingerprint, as Confluent compares
    /// schemas by `canonicalString()`. Used to give the same content the same schema ID.
    pub fn fingerprint(&self) -> [u8; 32] {
        text_fingerprint(self.schema_type(), &self.canonical)
    }

    /// Bytes of schema text this parsed schema keeps in memory (for caches that bound it):
    /// the canonical text, and for Protobuf also the submitted text the normalised print is
    /// made from.
    pub fn text_bytes(&self) -> usize {
        match &self.kind {
            ParsedKind::Avro(_) => self.canonical.len(),
            ParsedKind::Protobuf(schema) => schema.text_bytes(),
        }
    }

    /// The digest of [`ParsedSchema::normalized_text`]: the identity to use with
    /// `normalize=true` (two schemas that normalise alike share it).
    pub fn normalized_fingerprint(&self) -> [u8; 32] {
        text_fingerprint(self.schema_type(), &self.normalized_text())
    }

    /// For Protobuf: the file descriptor as protobuf bytes (Confluent's `format=serialized`).
    pub fn serialized_descriptor(&self) -> Option<Vec<u8>> {
        match &self.kind {
            ParsedKind::Avro(_) => None,
            ParsedKind::Protobuf(schema) => Some(schema.descriptor_bytes()),
        }
    }

    /// The fully-qualified names of the record types (Avro) or top-level messages (Protobuf)
    /// this schema defines, in declaration order; the first is the schema's "record name" for
    /// RecordNameStrategy.
    pub fn record_names(&self) -> Vec<String> {
        match &self.kind {
            ParsedKind::Avro(schema) => schema.record_names(),
            ParsedKind::Protobuf(schema) => schema.message_names(),
        }
    }

    /// The Avro schema and the named types its references define (for tools that encode or
    /// decode values dynamically); `None` for Protobuf.
    pub fn avro(&self) -> Option<(&apache_avro::Schema, Vec<&apache_avro::Schema>)> {
        match &self.kind {
            ParsedKind::Avro(schema) => Some(schema.parts()),
            ParsedKind::Protobuf(_) => None,
        }
    }

    /// The Protobuf file descriptor, its imports in its pool (for dynamic messages); `None`
    /// for Avro.
    pub fn protobuf_file(&self) -> Option<&prost_reflect::FileDescriptor> {
        match &self.kind {
            ParsedKind::Avro(_) => None,
            ParsedKind::Protobuf(schema) => Some(schema.file()),
        }
    }
}
