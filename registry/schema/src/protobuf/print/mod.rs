//! Confluent's Protobuf schema text: the printer of `ProtobufSchemaUtils.toString` (what
//! Confluent stores, serves and compares as `canonicalString()`) and its normalised variant
//! (`toNormalizedString`, used with `normalize=true`).
//!
//! Confluent prints the element tree its parser (square/wire) builds from the text as written.
//! The same tree is rebuilt here from protox-parse's `FileDescriptorProto` (names and options as
//! written, source positions to recover what a descriptor does not keep: raw option values,
//! `reserved` statements, `extend` blocks), or, for a schema submitted as a base64
//! `FileDescriptorProto`, from the descriptor the way Confluent converts one
//! (`ProtobufSchema.toProtoFile(FileDescriptorProto)`). Normalisation takes fully-qualified names
//! from the compiled descriptor pool.
//!
//! Deliberate differences from Confluent, all so that a printed text always parses back to the
//! same schema: weak imports are printed (Confluent drops them), a `bytes` default is printed as
//! a quoted string (Confluent prints it bare), control characters in strings are escaped as
//! octal, and a custom option set through a dotted path (`(a).b.c = 1`) normalises to nested
//! maps (Confluent emits a `b.c` key that protoc rejects).
//!
//! What lives where:
//! - `tree`: the element tree (square/wire's `ProtoFileElement`).
//! - `printer`: the printer (`ProtobufSchemaUtils.toString`) and its text helpers.
//! - `options`: merging and transforming option values when normalising.
//! - `numbers`: number normalisation (`NumberUtils.createNumber` + `DecimalFormat`).
//! - `tokens`: option values as written (tokenizer, wire's `OptionReader`).
//! - `types`: type names and small path helpers.
//! - `source`: the tree from `.proto` source (wire's parser).
//! - `descriptor`: the tree from a `FileDescriptorProto` (`ProtobufSchema.toProtoFile`).

mod descriptor;
mod numbers;
mod options;
mod printer;
mod source;
mod tokens;
mod tree;
mod types;

use base64::Engine;
use prost::Message;
use prost_reflect::FileDescriptor;
use prost_types::FileDescriptorProto;

use descriptor::DescriptorBuilder;
use printer::Printer;
use source::SourceBuilder;

/// Confluent's largest field number; a range ending there prints as `max`.
const MAX_TAG_VALUE: i32 = 536_870_911;

/// Prints `text` (`.proto` source, or a base64 `FileDescriptorProto`) that compiled into
/// `file`: `canonicalString()` (stored, served and compared), or with `normalize`
/// `normalize().canonicalString()` (only asked for with `normalize=true`).
pub(crate) fn print(text: &str, file: &FileDescriptor, normalize: bool) -> Result<String, String> {
    let element = match protox_parse::parse(file.name(), text) {
        Ok(parsed) => SourceBuilder::new(text, &parsed, file).file(&parsed),
        Err(parse_error) => match decode_base64_descriptor(text) {
            Some((bytes, proto)) => DescriptorBuilder::new(&proto, &bytes, file).file(&proto),
            None => return Err(parse_error.to_string()),
        },
    };
    Ok(Printer::new(normalize, file.parent_pool(), &element).file(&element))
}

/// A `FileDescriptorProto` sent as base64 text (Confluent's Python and Go serializers): its
/// bytes and its decoded form.
fn decode_base64_descriptor(text: &str) -> Option<(Vec<u8>, FileDescriptorProto)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let proto = FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    Some((bytes, proto))
}

#[cfg(test)]
mod tests;
