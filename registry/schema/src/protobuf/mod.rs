//! Protobuf: `.proto` text (or a base64 `FileDescriptorProto`, as Confluent's Python and Go
//! serializers register it) compiled with protox, imports resolved from schema references and
//! from the well-known types.

pub(crate) mod compat;
mod print;

use std::collections::HashMap;

use base64::Engine;
use prost::Message;
use prost_reflect::{DynamicMessage, FileDescriptor, ReflectMessage};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::{ParseError, ParsedKind, ParsedSchema, ResolvedReference};

/// The file name the schema being parsed gets inside its descriptor pool.
const ROOT_FILE_NAME: &str = "herald/root.proto";

/// Deepest message nesting a message-index path may describe (bounds decoding loops).
pub(crate) const MESSAGE_INDEX_DEPTH_MAX: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct ProtobufSchema {
    file: FileDescriptor,
    /// The text as submitted (the normalised print is made from it when asked for).
    source: String,
    /// Confluent's `canonicalString()`: the schema as its printer writes it.
    canonical: String,
}

impl ProtobufSchema {
    pub(crate) fn parse(text: &str, references: &[ResolvedReference]) -> Result<Self, ParseError> {
        let mut memory = MemoryResolver::default();
        for reference in references {
            memory
                .files
                .insert(reference.name.clone(), reference.schema.clone());
        }
        memory
            .files
            .insert(ROOT_FILE_NAME.to_owned(), text.to_owned());
        let mut resolver = ChainFileResolver::new();
        resolver.add(memory);
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler
            .open_file(ROOT_FILE_NAME)
            .map_err(|e| ParseError::Protobuf(format!("{e:?}")))?;
        let pool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(ROOT_FILE_NAME)
            .ok_or_else(|| ParseError::Protobuf("compiled schema has no root file".to_owned()))?;
        let canonical = print::print(text, &file, false).map_err(ParseError::Protobuf)?;
        Ok(Self {
            file,
            source: text.to_owned(),
            canonical,
        })
    }

    pub(crate) fn file(&self) -> &FileDescriptor {
        &self.file
    }

    /// The text Confluent stores, serves and compares: its printer's output (comments and
    /// layout dropped, elements in its fixed order, names and options as written).
    pub(crate) fn canonical_text(&self) -> String {
        self.canonical.clone()
    }

    /// Bytes of schema text this value keeps (the submitted text as well as the print).
    pub(crate) fn text_bytes(&self) -> usize {
        self.canonical.len() + self.source.len()
    }

    /// The printed text with Confluent's normalisation (sorted imports, options and fields,
    /// fully-qualified type names, ...).
    pub(crate) fn normalized_text(&self) -> String {
        // The same text printed once already at parse, so printing it again cannot fail; the
        // canonical text is the fallback all the same.
        print::print(&self.source, &self.file, true).unwrap_or_else(|_| self.canonical.clone())
    }

    /// The compiled `FileDescriptorProto` without source positions, custom (extension) options
    /// included.
    pub(crate) fn descriptor_bytes(&self) -> Vec<u8> {
        let encoded = self.file.encode_to_vec();
        let descriptor = prost_types::FileDescriptorProto::default().descriptor();
        match DynamicMessage::decode(descriptor, encoded.as_slice()) {
            Ok(mut message) => {
                message.clear_field_by_name("source_code_info");
                message.encode_to_vec()
            }
            Err(_) => {
                let mut proto = self.file.file_descriptor_proto().clone();
                proto.source_code_info = None;
                proto.encode_to_vec()
            }
        }
    }

    pub(crate) fn message_names(&self) -> Vec<String> {
        self.file
            .messages()
            .map(|message| message.full_name().to_owned())
            .collect()
    }
}

/// The `.proto` name of a scalar kind (`int32`, `bytes`, ...); message and enum kinds, named
/// by their types, give an empty string.
pub(crate) fn scalar_name(kind: &prost_reflect::Kind) -> &'static str {
    use prost_reflect::Kind;
    match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Message(_) | Kind::Enum(_) => "",
    }
}

/// A message name that a Protobuf schema does not define, or a schema of another format.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtobufIndexError {
    #[error("schema is not a protobuf schema")]
    NotProtobuf,
    #[error("message '{name}' is not defined in the schema; it defines {defined:?}")]
    UnknownMessage { name: String, defined: Vec<String> },
}

/// The Confluent message-index path of `full_name` in `schema`: the position of the top-level
/// message among the file's messages, then the position among nested messages at each level.
pub fn message_index_path(
    schema: &ParsedSchema,
    full_name: &str,
) -> Result<Vec<i32>, ProtobufIndexError> {
    let ParsedKind::Protobuf(proto) = &schema.kind else {
        return Err(ProtobufIndexError::NotProtobuf);
    };
    let mut path = Vec::new();
    let mut candidates: Vec<prost_reflect::MessageDescriptor> = proto.file.messages().collect();
    'descend: while path.len() < MESSAGE_INDEX_DEPTH_MAX {
        for (index, message) in candidates.iter().enumerate() {
            let name = message.full_name();
            if name == full_name {
                path.push(index as i32);
                return Ok(path);
            }
            if full_name.starts_with(name) && full_name.as_bytes().get(name.len()) == Some(&b'.') {
                path.push(index as i32);
                candidates = message.child_messages().collect();
                continue 'descend;
            }
        }
        break;
    }
    Err(ProtobufIndexError::UnknownMessage {
        name: full_name.to_owned(),
        defined: proto.message_names(),
    })
}

/// Serves the schema and its references from memory. A text that is not `.proto` source but
/// decodes as base64 into a `FileDescriptorProto` is taken as that descriptor.
#[derive(Default)]
struct MemoryResolver {
    files: HashMap<String, String>,
}

impl FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let Some(text) = self.files.get(name) else {
            return Err(protox::Error::file_not_found(name));
        };
        match File::from_source(name, text) {
            Ok(file) => Ok(file),
            Err(parse_error) => match decode_descriptor(name, text) {
                Some(file) => Ok(file),
                None => Err(parse_error),
            },
        }
    }
}

fn decode_descriptor(name: &str, text: &str) -> Option<File> {
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let proto = prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    // A base64 string that happens to decode to an empty descriptor is not a schema.
    if proto.message_type.is_empty() && proto.enum_type.is_empty() && proto.service.is_empty() {
        return None;
    }
    // Rename the file to `name` without going through prost types, which would drop the
    // extension (custom) options: a later occurrence of a singular field wins, so appending
    // field 1 (`name`) is enough.
    bytes.push(0x0a);
    let mut length = name.len() as u64;
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            bytes.push(low);
            break;
        }
        bytes.push(low | 0x80);
    }
    bytes.extend_from_slice(name.as_bytes());
    File::decode_file_descriptor_proto(bytes.as_slice()).ok()
}
