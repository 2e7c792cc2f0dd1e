//! Field and method types as written and normalised (fully-qualified, `map<K, V>`), and
//! small helpers for descriptor paths.

use prost_reflect::{DescriptorPool, Kind};
use prost_types::field_descriptor_proto::Type as ProtoType;
use prost_types::{FieldDescriptorProto, UninterpretedOption};

// ---- types ----------------------------------------------------------------------------------

fn scalar_name(ty: Option<i32>) -> &'static str {
    match ty.and_then(|ty| ProtoType::try_from(ty).ok()) {
        Some(ProtoType::Double) => "double",
        Some(ProtoType::Float) => "float",
        Some(ProtoType::Int64) => "int64",
        Some(ProtoType::Uint64) => "uint64",
        Some(ProtoType::Int32) => "int32",
        Some(ProtoType::Fixed64) => "fixed64",
        Some(ProtoType::Fixed32) => "fixed32",
        Some(ProtoType::Bool) => "bool",
        Some(ProtoType::String) => "string",
        Some(ProtoType::Bytes) => "bytes",
        Some(ProtoType::Uint32) => "uint32",
        Some(ProtoType::Sfixed32) => "sfixed32",
        Some(ProtoType::Sfixed64) => "sfixed64",
        Some(ProtoType::Sint32) => "sint32",
        Some(ProtoType::Sint64) => "sint64",
        Some(ProtoType::Group | ProtoType::Message | ProtoType::Enum) | None => "",
    }
}

/// A field's type as its descriptor spells it.
pub(super) fn written_type(field: &FieldDescriptorProto) -> String {
    match &field.type_name {
        Some(name) if !name.is_empty() => name.clone(),
        _ => scalar_name(field.r#type).to_owned(),
    }
}

fn kind_type_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(message) => format!(".{}", message.full_name()),
        Kind::Enum(enumeration) => format!(".{}", enumeration.full_name()),
        scalar => crate::protobuf::scalar_name(scalar).to_owned(),
    }
}

/// The normalised type of a field whose compiled descriptor names `resolved`: `.full.Name`, or
/// `map<K, V>` (value qualified) when it names a map entry; scalars stay as written.
pub(super) fn normalized_type(
    pool: &DescriptorPool,
    resolved: Option<&str>,
    written: &str,
) -> (String, bool) {
    let Some(resolved) = resolved.filter(|name| !name.is_empty()) else {
        return (written.to_owned(), written.starts_with("map<"));
    };
    let full = resolved.trim_start_matches('.');
    if let Some(message) = pool.get_message_by_name(full) {
        if message.is_map_entry() {
            if let (Some(key), Some(value)) = (message.get_field(1), message.get_field(2)) {
                return (
                    format!(
                        "map<{}, {}>",
                        kind_type_name(&key.kind()),
                        kind_type_name(&value.kind())
                    ),
                    true,
                );
            }
        }
    }
    (format!(".{full}"), false)
}

pub(super) fn qualified(resolved: Option<&str>, written: &str) -> String {
    match resolved.filter(|name| !name.is_empty()) {
        Some(name) => format!(".{}", name.trim_start_matches('.')),
        None => written.to_owned(),
    }
}

pub(super) fn uninterpreted(options: Option<&Vec<UninterpretedOption>>) -> &[UninterpretedOption] {
    options.map_or(&[][..], Vec::as_slice)
}

pub(super) fn path_with(path: &[i32], more: &[i32]) -> Vec<i32> {
    let mut joined = Vec::with_capacity(path.len() + more.len());
    joined.extend_from_slice(path);
    joined.extend_from_slice(more);
    joined
}

pub(super) fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}
