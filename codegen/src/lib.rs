//! herald-codegen: typed Herald producers and consumers from `.proto` and `.avsc` files, run
//! from a client crate's `build.rs`:
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), herald_codegen::Error> {
//!     herald_codegen::compile("herald.toml")
//! }
//! ```
//!
//! and in the crate: `include!(concat!(env!("OUT_DIR"), "/herald.rs"));`. That brings modules
//! following the Protobuf packages and Avro namespaces (`shop::v1::OrderCreated`), the SDK's
//! `Message` impl for every message, and per `[[topic]]` of the manifest an `XxxProducer`
//! and `XxxConsumer` (topic name in UpperCamelCase).
//!
//! The pipeline is split so that the part worth testing is pure: [`load_inputs`] reads files
//! (protox compiles `.proto` without protoc; pinned schemas come from `herald.lock`, never
//! the network), [`generate()`] turns [`Inputs`] into formatted source, and [`compile`] writes
//! it only when its bytes change and tells cargo exactly which files it read.

mod avro;
mod config;
mod generate;
mod inputs;
mod lock;
mod manifest;
mod protobuf;
mod stamp;
mod topic;
mod tree;

pub use avro::AvroSource;
pub use config::{compile, Config, OUTPUT_FILE};
pub use generate::{generate, Generated, MessageInfo, SchemaKind};
pub use inputs::{load_inputs, lock_warnings, topic_schemas, Inputs, TopicSchema};
pub use lock::{
    lock_pinned, resolve_pins, Entry as LockEntry, FetchedReference, FetchedSchema, Lock,
    LockError, PinError, Reference as LockReference, PINNED_SCHEMAS_MAX, REFERENCE_DEPTH_MAX,
};
pub use manifest::{
    Manifest, ManifestError, Pin, Registry, Schemas, SubjectStrategy, Topic, LOCK_FILE,
};
pub use protobuf::ProtoFile;
pub use stamp::{write_if_changed, STAMP_FILE};

/// Why generation failed (a build error).
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{origin}:{line}:{column}: {message}")]
    Schema {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("protobuf: {0}")]
    Protobuf(String),
    #[error("{record}: {what} are not supported by herald-codegen yet")]
    Unsupported { record: String, what: String },
    #[error("topic '{topic}' names message '{message}', which is not defined; messages: {known}")]
    UnknownMessage {
        topic: String,
        message: String,
        known: String,
    },
    #[error("topic '{topic}': {message} has no field '{field}'; fields: {known}")]
    UnknownField {
        topic: String,
        message: String,
        field: String,
        known: String,
    },
    #[error("generated code does not parse (a herald-codegen bug): {0}")]
    Output(String),
}

/// Why `compile` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("herald.lock has no entry for pinned subject '{subject}' version {version}: run `herald schema pin` (with the registry reachable) and commit herald.lock")]
    MissingPin { subject: String, version: u32 },
    #[error("OUT_DIR is not set: run from a build script, or set Config::out_dir")]
    NoOutDir,
}
