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
//! the network), [`generate`] turns [`Inputs`] into formatted source, and [`compile`] writes
//! it only when its bytes change and tells cargo exactly which files it read.

mod avro;
mod lock;
mod manifest;
mod protobuf;
mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::quote;

pub use avro::AvroSource;
pub use lock::{
    Entry as LockEntry, Lock, LockError, Reference as LockReference, REFERENCE_DEPTH_MAX,
};
pub use manifest::{
    Manifest, ManifestError, Pin, Registry, Schemas, SubjectStrategy, Topic, LOCK_FILE,
};
pub use protobuf::ProtoFile;

use tree::{ident, relative_path, ModuleTree};

/// The name of the generated file in `OUT_DIR`.
pub const OUTPUT_FILE: &str = "herald.rs";

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

/// What codegen knows about a generated message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub module: Vec<String>,
    /// Type path inside its module (`OrderCreated`, `order_created::LineItem`).
    pub rust_type: String,
    /// Schema field name → Rust field name.
    pub fields: BTreeMap<String, String>,
    pub kind: SchemaKind,
}

/// Where a message's schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Protobuf,
    /// An Avro record at the root of a schema text (it can be produced).
    Avro,
    /// An Avro record inside another one (a type, not a topic message).
    AvroNested,
}

/// Everything `generate` needs, already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Compiled `.proto` files, imports included.
    pub proto: Vec<ProtoFile>,
    pub avro: Vec<AvroSource>,
    pub topics: Vec<Topic>,
    /// Registry IDs of pinned subjects (from herald.lock): a topic whose subject is pinned
    /// produces with that ID by default.
    pub pinned_ids: BTreeMap<String, u32>,
}

/// The generated source and the messages it defines.
#[derive(Debug, Clone)]
pub struct Generated {
    pub source: String,
    pub messages: BTreeMap<String, MessageInfo>,
}

/// Turns inputs into the formatted, deterministic content of `herald.rs`.
pub fn generate(inputs: &Inputs) -> Result<Generated, GenerateError> {
    let mut tree = ModuleTree::default();
    let mut messages = protobuf::generate(&inputs.proto, &mut tree)?;
    messages.extend(avro::generate(&inputs.avro, &mut tree)?);
    let mut topics = Vec::new();
    for topic in &inputs.topics {
        topics.push(topic_items(topic, &messages, &inputs.pinned_ids)?);
    }
    let body = tree.tokens();
    let file = quote! {
        #body
        #(#topics)*
    };
    let parsed: syn::File = syn::parse2(file).map_err(|e| GenerateError::Output(e.to_string()))?;
    Ok(Generated {
        source: format!(
            "// @generated by herald-codegen. Do not edit: change the schemas or herald.toml.\n\n{}",
            prettyplease::unparse(&parsed)
        ),
        messages,
    })
}

fn known_messages(messages: &BTreeMap<String, MessageInfo>) -> String {
    let names: Vec<&str> = messages
        .iter()
        .filter(|(_, m)| m.kind != SchemaKind::AvroNested)
        .map(|(n, _)| n.as_str())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn topic_items(
    topic: &Topic,
    messages: &BTreeMap<String, MessageInfo>,
    pinned_ids: &BTreeMap<String, u32>,
) -> Result<TokenStream, GenerateError> {
    let info = messages
        .get(&topic.message)
        .filter(|m| m.kind != SchemaKind::AvroNested)
        .ok_or_else(|| GenerateError::UnknownMessage {
            topic: topic.name.clone(),
            message: topic.message.clone(),
            known: known_messages(messages),
        })?;
    let field = |name: &str| {
        info.fields
            .get(name)
            .map(|rust| ident(rust))
            .ok_or_else(|| GenerateError::UnknownField {
                topic: topic.name.clone(),
                message: topic.message.clone(),
                field: name.to_owned(),
                known: info.fields.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    };
    let message_type = relative_path(&[], &info.module, &info.rust_type);
    let base = topic.name.to_upper_camel_case();
    let producer = ident(&format!("{base}Producer"));
    let consumer = ident(&format!("{base}Consumer"));
    let name = &topic.name;
    let strategy = ident(&format!("{:?}", topic.subject_strategy.wire()));
    let (registration, registration_doc) = match pinned_ids.get(&topic.subject()) {
        Some(id) => (
            quote! { options.registration.get_or_insert(::herald::Registration::Pinned(#id)); },
            format!(" A producer with default settings (writes with the pinned schema ID {id})."),
        ),
        None => (
            quote! {},
            " A producer with default settings (registers the schema if needed).".to_owned(),
        ),
    };
    let key = match &topic.key {
        Some(key) => {
            let key = field(key)?;
            quote! { ::core::option::Option::Some(::herald::codegen::KeyPart::key_part(&message.#key).into_bytes()) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let idempotency_key = if topic.idempotency_key.is_empty() {
        quote! { ::core::option::Option::None }
    } else {
        let parts = topic
            .idempotency_key
            .iter()
            .map(|f| field(f))
            .collect::<Result<Vec<_>, _>>()?;
        quote! {
            ::core::option::Option::Some(::herald::codegen::idempotency_key(&[
                #(&message.#parts as &dyn ::herald::codegen::KeyPart),*
            ]))
        }
    };
    let producer_doc = format!(
        " Produces `{}` records to topic `{}`.",
        topic.message, topic.name
    );
    let consumer_doc = format!(
        " Consumes `{}` records of topic `{}` in a consumer group.",
        topic.message, topic.name
    );
    let key_doc = match &topic.key {
        Some(key) => format!(" Partitioned by `{key}`."),
        None => " Spread over partitions (no key field).".to_owned(),
    };
    Ok(quote! {
        #[doc = #producer_doc]
        #[doc = #key_doc]
        pub struct #producer {
            inner: ::herald::Producer<#message_type>,
        }

        impl #producer {
            pub const TOPIC: &'static str = #name;

            #[doc = #registration_doc]
            pub async fn new(client: &::herald::Client) -> ::core::result::Result<Self, ::herald::producer::ProduceError> {
                Self::with_options(client, ::herald::ProducerOptions::default()).await
            }

            /// A producer with explicit batching, retry, breaker and registration settings.
            pub async fn with_options(
                client: &::herald::Client,
                mut options: ::herald::ProducerOptions,
            ) -> ::core::result::Result<Self, ::herald::producer::ProduceError> {
                options.subject_strategy.get_or_insert(::herald::SubjectStrategy::#strategy);
                #registration
                ::core::result::Result::Ok(Self {
                    inner: client.producer_with(Self::TOPIC, options).await?,
                })
            }

            /// Queues `message` (partition key and idempotency key from its fields as the
            /// manifest declares); the returned future resolves to where it landed.
            pub async fn send(
                &self,
                message: &#message_type,
            ) -> ::core::result::Result<::herald::producer::DeliveryFuture, ::herald::producer::ProduceError> {
                let options = ::herald::SendOptions {
                    key: #key,
                    idempotency_key: #idempotency_key,
                    headers: ::std::vec::Vec::new(),
                };
                self.inner.send_with(message, options).await
            }

            /// Sends every pending batch now.
            pub async fn flush(&self) {
                self.inner.flush().await;
            }

            /// The underlying typed producer.
            pub fn inner(&self) -> &::herald::Producer<#message_type> {
                &self.inner
            }
        }

        #[doc = #consumer_doc]
        pub struct #consumer {
            inner: ::herald::Consumer<#message_type>,
        }

        impl #consumer {
            pub const TOPIC: &'static str = #name;

            /// A consumer in `group` with default settings: retries with backoff, the
            /// dead-letter topic `<topic>.dlq`, a circuit breaker.
            pub fn new(client: &::herald::Client, group: &str) -> Self {
                Self::with_config(client, ::herald::consumer::ConsumerConfig::new(group, Self::TOPIC))
            }

            /// A consumer with explicit settings (its topic is always this one).
            pub fn with_config(client: &::herald::Client, mut config: ::herald::consumer::ConsumerConfig) -> Self {
                config.topic = ::std::string::String::from(Self::TOPIC);
                Self { inner: client.consumer_with(config) }
            }

            /// Runs `handler` on every record until `stop` completes.
            pub async fn run<H, F>(
                &self,
                handler: H,
                stop: impl ::core::future::Future<Output = ()>,
            ) -> ::core::result::Result<::herald::consumer::RunSummary, ::herald::consumer::ConsumeError>
            where
                H: Fn(::herald::Event<#message_type>) -> F,
                F: ::core::future::Future<Output = ::core::result::Result<(), ::herald::HandlerError>>,
            {
                self.inner.run(handler, stop).await
            }
        }
    })
}

/// Reads everything a manifest names: `.proto` files through protox (imports resolved from
/// `proto_include`; well-known types built in), `.avsc` files, and pinned schemas from
/// `herald.lock`. Returns the inputs and every file read (for `rerun-if-changed`).
pub fn load_inputs(
    manifest: &Manifest,
    lock: &Lock,
    scratch: &Path,
) -> Result<(Inputs, Vec<PathBuf>), Error> {
    let mut read = Vec::new();
    let mut avro = Vec::new();
    let mut pinned_protos = Vec::new();
    let mut pinned_ids = BTreeMap::new();
    if let Some(registry) = &manifest.registry {
        for pin in &registry.pins {
            let entry = lock
                .get(&pin.subject)
                .filter(|e| e.version == pin.version)
                .ok_or_else(|| Error::MissingPin {
                    subject: pin.subject.clone(),
                    version: pin.version,
                })?;
            pinned_ids.insert(entry.subject.clone(), entry.id);
            if entry.schema_type.eq_ignore_ascii_case("PROTOBUF") {
                pinned_protos.push(entry.clone());
            } else {
                // The texts it references go in beside it (parsed together, so its references
                // resolve), once each.
                for (name, imported) in lock.references_of(entry)? {
                    if !avro.iter().any(|a: &AvroSource| a.text == imported.schema) {
                        avro.push(AvroSource {
                            origin: format!(
                                "herald.lock [{} v{}] ({name})",
                                imported.subject, imported.version
                            ),
                            text: imported.schema.clone(),
                        });
                    }
                }
                avro.push(AvroSource {
                    origin: format!("herald.lock [{} v{}]", entry.subject, entry.version),
                    text: entry.schema.clone(),
                });
            }
        }
    }
    for path in &manifest.schemas.avro {
        let path = manifest.resolve(path);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        read.push(path.clone());
        avro.push(AvroSource {
            origin: path.display().to_string(),
            text,
        });
    }
    let mut includes: Vec<PathBuf> = manifest
        .schemas
        .proto_include
        .iter()
        .map(|p| manifest.resolve(p))
        .collect();
    let mut proto_paths: Vec<PathBuf> = manifest
        .schemas
        .proto
        .iter()
        .map(|p| manifest.resolve(p))
        .collect();
    if !pinned_protos.is_empty() {
        // Pinned Protobuf texts are compiled like local files, from a scratch include dir.
        let dir = scratch.join("herald-pins");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        for entry in &pinned_protos {
            let path = dir.join(format!("{}.proto", entry.subject));
            write_if_changed(&path, entry.schema.as_bytes())?;
            proto_paths.push(path);
            // Its imports go where its import statements look for them.
            for (name, imported) in lock.references_of(entry)? {
                let relative = Path::new(&name);
                if relative.is_absolute()
                    || relative
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(Error::Io {
                        path: name.clone(),
                        message: format!(
                            "import name in herald.lock [{} v{}] is not a plain relative path",
                            entry.subject, entry.version
                        ),
                    });
                }
                let path = dir.join(relative);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                        path: parent.display().to_string(),
                        message: e.to_string(),
                    })?;
                }
                write_if_changed(&path, imported.schema.as_bytes())?;
            }
        }
        includes.push(dir);
    }
    let proto = if proto_paths.is_empty() {
        Vec::new()
    } else {
        if includes.is_empty() {
            includes = proto_paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_owned))
                .collect();
            includes.dedup();
        }
        let mut compiler =
            protox::Compiler::new(&includes).map_err(|e| proto_error(&e, &includes))?;
        compiler.include_imports(true).include_source_info(true);
        for path in &proto_paths {
            compiler
                .open_file(path)
                .map_err(|e| proto_error(&e, &includes))?;
        }
        let descriptors: BTreeMap<String, prost_types::FileDescriptorProto> = compiler
            .file_descriptor_set()
            .file
            .into_iter()
            .map(|f| (f.name().to_owned(), f))
            .collect();
        let mut files = Vec::new();
        for file in compiler.files() {
            if let Some(path) = file.path() {
                read.push(path.to_owned());
            }
            let source = match file.path() {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?),
                None => None,
            };
            files.push(ProtoFile {
                name: file.name().to_owned(),
                source,
                path: file.path().map(Path::to_owned),
                descriptor: descriptors.get(file.name()).cloned().unwrap_or_default(),
            });
        }
        files
    };
    Ok((
        Inputs {
            proto,
            avro,
            topics: manifest.topics.clone(),
            pinned_ids,
        },
        read,
    ))
}

/// A protox error as file:line:column: message.
fn proto_error(error: &protox::Error, includes: &[PathBuf]) -> Error {
    use miette::Diagnostic;
    let name = error.file().unwrap_or("<protobuf>");
    // The error names the file as imported; report the path on disk.
    let file = includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .map_or_else(|| name.to_owned(), |path| path.display().to_string());
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match (offset, std::fs::read_to_string(&file).ok()) {
        (Some(offset), Some(text)) => line_column(&text, offset),
        _ => (1, 1),
    };
    Error::Generate(GenerateError::Schema {
        origin: file,
        line,
        column,
        message: error.to_string(),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
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

/// The schema a topic's records carry, as found among the inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSchema {
    pub topic: String,
    pub subject: String,
    pub schema_type: herald_schema::SchemaType,
    /// The schema text to register or check (the whole `.avsc` or `.proto` file).
    pub text: String,
    /// Where it came from (a path, or the lock entry).
    pub origin: String,
    /// Imported files (Protobuf), dependencies first: import name and text.
    pub references: Vec<herald_schema::ResolvedReference>,
}

/// Finds, for every topic of the inputs, the file that defines its message.
pub fn topic_schemas(inputs: &Inputs) -> Result<Vec<TopicSchema>, GenerateError> {
    use herald_schema::{ResolvedReference, SchemaType};
    let mut found = Vec::new();
    let avro_graph = if inputs.avro.is_empty() {
        None
    } else {
        Some(avro::Graph::new(&avro::parse(&inputs.avro)?))
    };
    for topic in &inputs.topics {
        let avro = avro_graph.as_ref().and_then(|graph| {
            graph
                .roots
                .iter()
                .position(|root| *root == topic.message)
                .map(|index| (graph, index))
        });
        if let Some((graph, index)) = avro {
            let source = &inputs.avro[index];
            let references = graph
                .dependencies(index)
                .into_iter()
                .map(|used| ResolvedReference {
                    name: graph.roots[used].clone(),
                    schema: inputs.avro[used].text.clone(),
                })
                .collect();
            found.push(TopicSchema {
                topic: topic.name.clone(),
                subject: topic.subject(),
                schema_type: SchemaType::Avro,
                text: source.text.clone(),
                origin: source.origin.clone(),
                references,
            });
            continue;
        }
        let proto = inputs.proto.iter().find(|file| {
            !protobuf::well_known(&file.name) && declares(&file.descriptor, &topic.message)
        });
        let Some(file) = proto else {
            return Err(GenerateError::UnknownMessage {
                topic: topic.name.clone(),
                message: topic.message.clone(),
                known: "(see the schema files of herald.toml)".to_owned(),
            });
        };
        let mut references = Vec::new();
        for name in protobuf::dependency_order(&file.name, &inputs.proto)? {
            if let Some(text) = inputs
                .proto
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.source.clone())
            {
                references.push(ResolvedReference { name, schema: text });
            }
        }
        found.push(TopicSchema {
            topic: topic.name.clone(),
            subject: topic.subject(),
            schema_type: SchemaType::Protobuf,
            text: file.source.clone().unwrap_or_default(),
            origin: file
                .path
                .as_ref()
                .map_or_else(|| file.name.clone(), |p| p.display().to_string()),
            references,
        });
    }
    Ok(found)
}

/// Whether a file declares message `full_name` (at any nesting depth).
fn declares(file: &prost_types::FileDescriptorProto, full_name: &str) -> bool {
    fn walk(prefix: &str, messages: &[prost_types::DescriptorProto], target: &str) -> bool {
        messages.iter().any(|m| {
            let name = format!("{prefix}{}", m.name());
            name == target || walk(&format!("{name}."), &m.nested_type, target)
        })
    }
    let prefix = if file.package().is_empty() {
        String::new()
    } else {
        format!("{}.", file.package())
    };
    walk(&prefix, &file.message_type, full_name)
}

/// Compares each topic's local schema with the version locked for its subject and returns
/// one warning per incompatible edit (BACKWARD, the registry's default level).
pub fn lock_warnings(inputs: &Inputs, lock: &Lock) -> Vec<String> {
    use herald_schema::{check_pair, CompatibilityLevel, ParsedSchema};
    let mut warnings = Vec::new();
    let Ok(schemas) = topic_schemas(inputs) else {
        return warnings;
    };
    for local in schemas {
        let Some(entry) = lock.get(&local.subject) else {
            continue;
        };
        let (Ok(old), Ok(new)) = (
            ParsedSchema::parse(local.schema_type, &entry.schema, &local.references),
            ParsedSchema::parse(local.schema_type, &local.text, &local.references),
        ) else {
            continue;
        };
        for problem in check_pair(&old, &new, CompatibilityLevel::Backward) {
            warnings.push(format!(
                "{} ({}): incompatible with {} version {} in herald.lock: {problem}",
                local.origin, local.topic, entry.subject, entry.version
            ));
        }
    }
    warnings
}

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

/// The record of a build's inputs in `OUT_DIR`, next to `herald.rs`.
pub const STAMP_FILE: &str = "herald.rs.inputs";

fn emit_rerun(manifest: &Path, lock: &Path, read: &[PathBuf], out_dir: &Path) {
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
struct Stamp {
    files: Vec<PathBuf>,
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

    fn of(manifest: &Path, lock: &Path, files: Vec<PathBuf>) -> Self {
        let digest = Self::digest(manifest, lock, &files);
        Self { files, digest }
    }

    fn is_current(&self, manifest: &Path, lock: &Path) -> bool {
        Self::digest(manifest, lock, &self.files) == self.digest
    }

    fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        let digest = lines.next()?.to_owned();
        Some(Self {
            digest,
            files: lines.map(PathBuf::from).collect(),
        })
    }

    fn save(&self, path: &Path) -> Result<bool, Error> {
        let mut text = format!("{}\n", self.digest);
        for file in &self.files {
            text.push_str(&format!("{}\n", file.display()));
        }
        write_if_changed(path, text.as_bytes())
    }
}

/// `build.rs` in one line: generates `$OUT_DIR/herald.rs` from the manifest at `manifest`.
pub fn compile(manifest: impl Into<PathBuf>) -> Result<(), Error> {
    Config::new().manifest(manifest).compile().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn unknown_message_lists_the_known_ones() {
        let inputs = Inputs {
            avro: vec![AvroSource {
                origin: "a.avsc".into(),
                text: r#"{"type":"record","name":"A","namespace":"x","fields":[{"name":"id","type":"string"}]}"#.into(),
            }],
            topics: vec![Topic {
                name: "t".into(),
                message: "x.B".into(),
                key: None,
                idempotency_key: Vec::new(),
                subject_strategy: SubjectStrategy::Topic,
            }],
            ..Inputs::default()
        };
        let error = generate(&inputs).expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "topic 't' names message 'x.B', which is not defined; messages: x.A"
        );
    }

    #[test]
    fn bad_avro_json_names_file_line_and_column() {
        let inputs = Inputs {
            avro: vec![AvroSource {
                origin: "schemas/bad.avsc".into(),
                text: "{\"type\": \"record\",\n \"name\": }".into(),
            }],
            ..Inputs::default()
        };
        let error = generate(&inputs).expect_err("bad json");
        assert!(
            error.to_string().starts_with("schemas/bad.avsc:2:"),
            "{error}"
        );
    }
}
