//! What a message type declares about its schema: format, full name, text, dependencies and
//! Protobuf message indexes. Read by the codec and the registration logic; the `Message`
//! trait (which names codec types) re-exports it, so the codec never imports the trait.

/// The schema language of a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaFormat {
    Avro,
    Protobuf,
}

impl SchemaFormat {
    /// The registry's name for it (`schemaType`).
    pub fn registry_name(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "AVRO",
            SchemaFormat::Protobuf => "PROTOBUF",
        }
    }
}

/// A schema another one imports (Protobuf `import "name"`), registered under the subject
/// `name` before the schema that uses it, as Confluent's serializers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaDependency {
    /// The import path.
    pub name: &'static str,
    pub schema: &'static str,
    /// The import paths this dependency itself uses (each listed earlier in the same slice).
    pub imports: &'static [&'static str],
}

/// Everything the SDK needs to know about a message type's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaInfo {
    pub format: SchemaFormat,
    /// Fully-qualified name: Avro record full name or Protobuf message full name.
    pub full_name: &'static str,
    /// Avro schema JSON, or the text of the `.proto` file that declares the message.
    pub schema: &'static str,
    /// Imported schemas, dependencies first (Protobuf; empty for self-contained schemas).
    pub dependencies: &'static [SchemaDependency],
    /// The imports `schema` itself uses (a subset of `dependencies`' names).
    pub imports: &'static [&'static str],
    /// Protobuf message-index path of `full_name` in `schema`, when computed at build time;
    /// `None` makes the SDK compute it once at start.
    pub message_indexes: Option<&'static [i32]>,
}

impl SchemaInfo {
    /// A self-contained Avro schema.
    pub const fn avro(full_name: &'static str, schema: &'static str) -> Self {
        Self {
            format: SchemaFormat::Avro,
            full_name,
            schema,
            dependencies: &[],
            imports: &[],
            message_indexes: None,
        }
    }

    /// A Protobuf message declared in the `.proto` text `schema` (imports only of well-known
    /// types; use the struct form to list dependencies).
    pub const fn protobuf(full_name: &'static str, schema: &'static str) -> Self {
        Self {
            format: SchemaFormat::Protobuf,
            full_name,
            schema,
            dependencies: &[],
            imports: &[],
            message_indexes: None,
        }
    }
}
