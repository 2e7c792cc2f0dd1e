//! The element tree from a `FileDescriptorProto` (a schema sent as base64), the way
//! Confluent converts one (`ProtobufSchema.toProtoFile`), options read back dynamically.

use std::borrow::Cow;

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FileDescriptor, Kind, MapKey,
    ReflectMessage, Value,
};
use prost_types::field_descriptor_proto::Label as ProtoLabel;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto,
};

use super::printer::{escape_bytes, escape_str};
use super::tree::{
    ConstantElem, EnumElem, ExtendElem, ExtensionsElem, FieldElem, FieldLabel, FileElem,
    MessageElem, OneofElem, OptValue, OptionElem, RangeValue, RpcElem, ServiceElem,
};
use super::types::{index, normalized_type, qualified, written_type};

// ---- from a FileDescriptorProto (ProtobufSchema.toProtoFile) --------------------------------

const FILE_OPTIONS: &[&str] = &[
    "java_package",
    "java_outer_classname",
    "java_multiple_files",
    "java_generate_equals_and_hash",
    "java_string_check_utf8",
    "optimize_for",
    "go_package",
    "cc_generic_services",
    "java_generic_services",
    "py_generic_services",
    "deprecated",
    "cc_enable_arenas",
    "objc_class_prefix",
    "csharp_namespace",
    "swift_prefix",
    "php_class_prefix",
    "php_namespace",
    "php_metadata_namespace",
    "ruby_package",
];
const MESSAGE_OPTIONS: &[&str] = &["no_standard_descriptor_accessor", "deprecated", "map_entry"];
const FIELD_OPTIONS: &[&str] = &[
    "ctype",
    "packed",
    "jstype",
    "deprecated",
    "debug_redact",
    "retention",
    "targets",
];
const ENUM_OPTIONS: &[&str] = &["allow_alias", "deprecated"];
const ENUM_VALUE_OPTIONS: &[&str] = &["deprecated", "debug_redact"];
const SERVICE_OPTIONS: &[&str] = &["deprecated"];
const METHOD_OPTIONS: &[&str] = &["deprecated", "idempotency_level"];

/// Confluent's own options (`confluent.*_meta`) are printed by their fields, not generically.
const CONFLUENT_PREFIX: &str = "confluent.";

pub(super) struct DescriptorBuilder<'a> {
    proto3: bool,
    pool: &'a DescriptorPool,
    /// The same descriptor decoded dynamically, so that options keep their extensions.
    dynamic: Option<DynamicMessage>,
}

/// The `index`-th message of the repeated field `field` of `message`, when set.
fn child<'m>(
    message: Option<&'m DynamicMessage>,
    field: &str,
    index: usize,
) -> Option<&'m DynamicMessage> {
    match message?.get_field_by_name(field)? {
        Cow::Borrowed(Value::List(items)) => match items.get(index)? {
            Value::Message(child) => Some(child),
            _ => None,
        },
        _ => None,
    }
}

/// The `options` of a descriptor message, when set.
fn options_of(message: Option<&DynamicMessage>) -> Option<&DynamicMessage> {
    match message?.get_field_by_name("options")? {
        Cow::Borrowed(Value::Message(options)) => Some(options),
        _ => None,
    }
}

impl<'a> DescriptorBuilder<'a> {
    pub(super) fn new(proto: &FileDescriptorProto, bytes: &[u8], file: &'a FileDescriptor) -> Self {
        let pool = file.parent_pool();
        // The schema's own pool knows its custom options; the global one knows the rest.
        let descriptor = pool
            .get_message_by_name("google.protobuf.FileDescriptorProto")
            .unwrap_or_else(|| FileDescriptorProto::default().descriptor());
        Self {
            proto3: proto.syntax.as_deref() == Some("proto3"),
            pool,
            dynamic: DynamicMessage::decode(descriptor, bytes).ok(),
        }
    }

    pub(super) fn file(&self, proto: &FileDescriptorProto) -> FileElem {
        let node = self.dynamic.as_ref();
        let package = proto.package.clone().filter(|package| !package.is_empty());
        let mut element = FileElem {
            syntax: match proto.syntax.as_deref() {
                Some(syntax @ ("proto2" | "proto3")) => Some(syntax.to_owned()),
                _ => None,
            },
            package: package.clone(),
            ..FileElem::default()
        };
        for (i, import) in proto.dependency.iter().enumerate() {
            let i = index(i);
            if proto.public_dependency.contains(&i) {
                element.public_imports.push(import.clone());
            } else if proto.weak_dependency.contains(&i) {
                element.weak_imports.push(import.clone());
            } else {
                element.imports.push(import.clone());
            }
        }
        let scope = package.unwrap_or_default();
        element.options =
            self.dynamic_options(options_of(node), FILE_OPTIONS, Some("confluent.file_meta"));
        element.messages = proto
            .message_type
            .iter()
            .enumerate()
            .map(|(i, message)| {
                self.message(
                    message,
                    child(node, "message_type", i),
                    &join_name(&scope, message.name()),
                )
            })
            .collect();
        element.enums = proto
            .enum_type
            .iter()
            .enumerate()
            .map(|(i, enumeration)| self.enumeration(enumeration, child(node, "enum_type", i)))
            .collect();
        element.extends = self.extends(&proto.extension, node, &scope);
        element.services = proto
            .service
            .iter()
            .enumerate()
            .map(|(i, service)| self.service(service, child(node, "service", i)))
            .collect();
        element
    }

    fn message(
        &self,
        proto: &DescriptorProto,
        node: Option<&DynamicMessage>,
        full_name: &str,
    ) -> MessageElem {
        let descriptor = self.pool.get_message_by_name(full_name);
        let mut element = MessageElem {
            name: proto.name().to_owned(),
            ..MessageElem::default()
        };
        let mut oneof_fields: Vec<Vec<FieldElem>> = vec![Vec::new(); proto.oneof_decl.len()];
        for (k, field) in proto.field.iter().enumerate() {
            let resolved = descriptor
                .as_ref()
                .and_then(|message| message.get_field(u32::try_from(field.number()).unwrap_or(0)))
                .and_then(|f| f.field_descriptor_proto().type_name.clone());
            let oneof = field
                .oneof_index
                .filter(|_| field.proto3_optional != Some(true))
                .and_then(|i| usize::try_from(i).ok());
            let built = self.field(
                field,
                oneof.is_some(),
                options_of(child(node, "field", k)),
                resolved.as_deref(),
            );
            match oneof.and_then(|i| oneof_fields.get_mut(i)) {
                Some(fields) => fields.push(built),
                None => element.fields.push(built),
            }
        }
        element.oneofs = proto
            .oneof_decl
            .iter()
            .zip(oneof_fields)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(oneof, fields)| OneofElem {
                name: oneof.name().to_owned(),
                options: Vec::new(),
                fields,
                groups: Vec::new(),
            })
            .collect();
        element.messages = proto
            .nested_type
            .iter()
            .enumerate()
            .map(|(j, nested)| {
                self.message(
                    nested,
                    child(node, "nested_type", j),
                    &join_name(full_name, nested.name()),
                )
            })
            .collect();
        element.enums = proto
            .enum_type
            .iter()
            .enumerate()
            .map(|(j, nested)| self.enumeration(nested, child(node, "enum_type", j)))
            .collect();
        element.reserveds = proto
            .reserved_range
            .iter()
            .map(|range| {
                vec![inclusive_value(
                    range.start(),
                    range.end().saturating_sub(1),
                )]
            })
            .chain(
                proto
                    .reserved_name
                    .iter()
                    .map(|name| vec![RangeValue::Name(name.clone())]),
            )
            .collect();
        element.extensions = proto
            .extension_range
            .iter()
            .map(|range| ExtensionsElem {
                values: vec![inclusive_value(
                    range.start(),
                    range.end().saturating_sub(1),
                )],
                options: Vec::new(),
            })
            .collect();
        element.options = self.dynamic_options(
            options_of(node),
            MESSAGE_OPTIONS,
            Some("confluent.message_meta"),
        );
        element.extends = self.extends(&proto.extension, node, full_name);
        element
    }

    fn field(
        &self,
        proto: &FieldDescriptorProto,
        in_oneof: bool,
        options: Option<&DynamicMessage>,
        resolved: Option<&str>,
    ) -> FieldElem {
        let label = if in_oneof {
            None
        } else if proto.proto3_optional == Some(true) {
            Some(FieldLabel::Optional)
        } else {
            match proto.label() {
                ProtoLabel::Repeated => Some(FieldLabel::Repeated),
                _ if self.proto3 => None,
                ProtoLabel::Required => Some(FieldLabel::Required),
                ProtoLabel::Optional => Some(FieldLabel::Optional),
            }
        };
        let ty = written_type(proto);
        let (normalized_ty, normalized_is_map) = normalized_type(self.pool, resolved, &ty);
        let default = proto
            .default_value
            .as_ref()
            .filter(|_| !self.proto3)
            .map(|value| match ty.as_str() {
                "string" => OptValue::Str(escape_str(value)),
                // Already C-escaped in a descriptor.
                "bytes" => OptValue::Str(value.clone()),
                "bool" => OptValue::Bool(value.clone()),
                "double" | "float" | "fixed32" | "fixed64" | "int32" | "int64" | "sfixed32"
                | "sfixed64" | "sint32" | "sint64" | "uint32" | "uint64" => {
                    OptValue::Number(value.clone())
                }
                _ => OptValue::Enum(value.clone()),
            });
        FieldElem {
            label,
            ty,
            normalized_ty,
            normalized_is_map,
            name: proto.name().to_owned(),
            tag: proto.number(),
            default,
            json_name: proto.json_name.as_deref().map(escape_str),
            options: self.dynamic_options(options, FIELD_OPTIONS, Some("confluent.field_meta")),
        }
    }

    /// The extensions declared in `parent` (a file or a message, `node` its dynamic form),
    /// grouped by target in order of first appearance.
    fn extends(
        &self,
        fields: &[FieldDescriptorProto],
        node: Option<&DynamicMessage>,
        scope: &str,
    ) -> Vec<ExtendElem> {
        let mut extends: Vec<ExtendElem> = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            let extension = self
                .pool
                .get_extension_by_name(&join_name(scope, field.name()));
            let resolved = extension
                .as_ref()
                .and_then(|e| e.field_descriptor_proto().type_name.clone());
            let built = self.field(
                field,
                false,
                options_of(child(node, "extension", i)),
                resolved.as_deref(),
            );
            let target = field.extendee().to_owned();
            let resolved_target = extension
                .as_ref()
                .map(|e| e.containing_message().full_name().to_owned());
            let normalized_target = qualified(resolved_target.as_deref(), &target);
            match extends.iter_mut().find(|extend| extend.name == target) {
                Some(extend) => extend.fields.push(built),
                None => extends.push(ExtendElem {
                    name: target,
                    normalized_name: normalized_target,
                    fields: vec![built],
                }),
            }
        }
        extends
    }

    fn enumeration(&self, proto: &EnumDescriptorProto, node: Option<&DynamicMessage>) -> EnumElem {
        let constants = proto
            .value
            .iter()
            .enumerate()
            .map(|(k, value)| ConstantElem {
                name: value.name().to_owned(),
                tag: value.number(),
                options: self.dynamic_options(
                    options_of(child(node, "value", k)),
                    ENUM_VALUE_OPTIONS,
                    Some("confluent.enum_value_meta"),
                ),
            })
            .collect();
        EnumElem {
            name: proto.name().to_owned(),
            reserveds: proto
                .reserved_range
                .iter()
                .map(|range| vec![inclusive_value(range.start(), range.end())])
                .chain(
                    proto
                        .reserved_name
                        .iter()
                        .map(|name| vec![RangeValue::Name(name.clone())]),
                )
                .collect(),
            options: self.dynamic_options(
                options_of(node),
                ENUM_OPTIONS,
                Some("confluent.enum_meta"),
            ),
            constants,
        }
    }

    fn service(
        &self,
        proto: &ServiceDescriptorProto,
        node: Option<&DynamicMessage>,
    ) -> ServiceElem {
        let rpcs = proto
            .method
            .iter()
            .enumerate()
            .map(|(j, method)| RpcElem {
                name: method.name().to_owned(),
                request: method.input_type().to_owned(),
                normalized_request: qualified(method.input_type.as_deref(), method.input_type()),
                request_streaming: method.client_streaming(),
                response: method.output_type().to_owned(),
                normalized_response: qualified(method.output_type.as_deref(), method.output_type()),
                response_streaming: method.server_streaming(),
                options: self.dynamic_options(
                    options_of(child(node, "method", j)),
                    METHOD_OPTIONS,
                    None,
                ),
            })
            .collect();
        ServiceElem {
            name: proto.name().to_owned(),
            options: self.dynamic_options(options_of(node), SERVICE_OPTIONS, None),
            rpcs,
        }
    }

    /// Options read back from a descriptor, in Confluent's order: the standard options it
    /// knows, its own `confluent.*_meta` option, then every other custom option.
    fn dynamic_options(
        &self,
        options: Option<&DynamicMessage>,
        known: &[&str],
        meta: Option<&str>,
    ) -> Vec<OptionElem> {
        let Some(options) = options else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in known {
            let Some(field) = options.descriptor().get_field_by_name(name) else {
                continue;
            };
            if !options.has_field(&field) {
                continue;
            }
            let kind = field.kind();
            match options.get_field(&field).as_ref() {
                Value::List(items) => {
                    for item in items {
                        out.push(OptionElem {
                            name: (*name).to_owned(),
                            parenthesized: false,
                            value: dynamic_value(item, &kind),
                        });
                    }
                }
                value => out.push(OptionElem {
                    name: (*name).to_owned(),
                    parenthesized: false,
                    value: dynamic_value(value, &kind),
                }),
            }
        }
        if let Some(meta_name) = meta {
            if let Some(extension) = self.pool.get_extension_by_name(meta_name) {
                if options.has_extension(&extension) {
                    if let Value::Message(message) = options.get_extension(&extension).as_ref() {
                        if let Some(value) = confluent_meta(message) {
                            out.push(OptionElem {
                                name: meta_name.to_owned(),
                                parenthesized: true,
                                value,
                            });
                        }
                    }
                }
            }
        }
        let mut custom: Vec<(u32, ExtensionDescriptor, &Value)> = options
            .extensions()
            .filter(|(extension, _)| !extension.full_name().starts_with(CONFLUENT_PREFIX))
            .map(|(extension, value)| (extension.number(), extension, value))
            .collect();
        custom.sort_by_key(|(number, _, _)| *number);
        for (_, extension, value) in custom {
            let kind = extension.kind();
            let values: Vec<&Value> = match value {
                Value::List(items) => items.iter().collect(),
                other => vec![other],
            };
            for value in values {
                out.push(OptionElem {
                    name: extension.full_name().to_owned(),
                    parenthesized: true,
                    value: dynamic_value(value, &kind),
                });
            }
        }
        out
    }
}

fn join_name(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn inclusive_value(start: i32, end: i32) -> RangeValue {
    if start == end {
        RangeValue::Int(start)
    } else {
        RangeValue::Range(start, end)
    }
}

/// An option value read from a descriptor (`ProtobufSchema.toOptionValue`).
fn dynamic_value(value: &Value, kind: &Kind) -> OptValue {
    match value {
        Value::Bool(value) => OptValue::Bool(value.to_string()),
        Value::I32(value) => OptValue::Number(value.to_string()),
        Value::I64(value) => OptValue::Number(value.to_string()),
        Value::U32(value) => OptValue::Number(value.to_string()),
        Value::U64(value) => OptValue::Number(value.to_string()),
        Value::F32(value) => {
            OptValue::Number(java_float_string(f64::from(*value), &value.to_string()))
        }
        Value::F64(value) => OptValue::Number(java_float_string(*value, &value.to_string())),
        Value::String(value) => OptValue::Str(escape_str(value)),
        Value::Bytes(value) => OptValue::Str(escape_bytes(value)),
        Value::EnumNumber(number) => OptValue::Enum(match kind {
            Kind::Enum(enumeration) => enumeration
                .get_value(*number)
                .map_or_else(|| number.to_string(), |v| v.name().to_owned()),
            _ => number.to_string(),
        }),
        Value::Message(message) => OptValue::Map(dynamic_map(message)),
        Value::List(items) => {
            OptValue::List(items.iter().map(|item| dynamic_value(item, kind)).collect())
        }
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.get_field(2).map(|f| f.kind()),
                _ => None,
            };
            let mut sorted: Vec<(&MapKey, &Value)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            OptValue::List(
                sorted
                    .into_iter()
                    .map(|(key, value)| {
                        let key = match key {
                            MapKey::Bool(v) => OptValue::Bool(v.to_string()),
                            MapKey::I32(v) => OptValue::Number(v.to_string()),
                            MapKey::I64(v) => OptValue::Number(v.to_string()),
                            MapKey::U32(v) => OptValue::Number(v.to_string()),
                            MapKey::U64(v) => OptValue::Number(v.to_string()),
                            MapKey::String(v) => OptValue::Str(escape_str(v)),
                        };
                        let value = match &value_kind {
                            Some(kind) => dynamic_value(value, kind),
                            None => dynamic_value(value, &Kind::String),
                        };
                        OptValue::Map(vec![("key".to_owned(), key), ("value".to_owned(), value)])
                    })
                    .collect(),
            )
        }
    }
}

/// The set fields of a message option value, by field number; extensions as `[full.name]`.
fn dynamic_map(message: &DynamicMessage) -> Vec<(String, OptValue)> {
    let mut entries: Vec<(u32, String, OptValue)> = message
        .fields()
        .map(|(field, value)| {
            (
                field.number(),
                field.name().to_owned(),
                dynamic_value(value, &field.kind()),
            )
        })
        .chain(message.extensions().map(|(extension, value)| {
            (
                extension.number(),
                format!("[{}]", extension.full_name()),
                dynamic_value(value, &extension.kind()),
            )
        }))
        .collect();
    entries.sort_by_key(|(number, _, _)| *number);
    entries
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .collect()
}

/// `ProtobufSchema.toOption(name, Meta)`: doc, params (value first for precision and scale),
/// tags and rules; nothing when all are empty.
fn confluent_meta(meta: &DynamicMessage) -> Option<OptValue> {
    let string_of = |message: &DynamicMessage, name: &str| -> String {
        message
            .get_field_by_name(name)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut map: Vec<(String, OptValue)> = Vec::new();
    let doc = string_of(meta, "doc");
    if !doc.is_empty() {
        map.push(("doc".to_owned(), OptValue::Str(escape_str(&doc))));
    }
    if let Some(Value::Map(params)) = meta.get_field_by_name("params").as_deref() {
        let mut sorted: Vec<(String, String)> = params
            .iter()
            .filter_map(|(key, value)| match (key, value) {
                (MapKey::String(key), Value::String(value)) => Some((key.clone(), value.clone())),
                _ => None,
            })
            .collect();
        sorted.sort();
        if !sorted.is_empty() {
            let entries = sorted
                .into_iter()
                .map(|(key, value)| {
                    let key_entry = ("key".to_owned(), OptValue::Str(escape_str(&key)));
                    let value_entry = ("value".to_owned(), OptValue::Str(escape_str(&value)));
                    if key == "precision" || key == "scale" {
                        OptValue::Map(vec![value_entry, key_entry])
                    } else {
                        OptValue::Map(vec![key_entry, value_entry])
                    }
                })
                .collect();
            map.push(("params".to_owned(), OptValue::List(entries)));
        }
    }
    if let Some(Value::List(tags)) = meta.get_field_by_name("tags").as_deref() {
        let tags: Vec<OptValue> = tags
            .iter()
            .filter_map(|tag| tag.as_str().map(|tag| OptValue::Str(escape_str(tag))))
            .collect();
        if !tags.is_empty() {
            map.push(("tags".to_owned(), OptValue::List(tags)));
        }
    }
    if let Some(Value::List(rules)) = meta.get_field_by_name("rules").as_deref() {
        let rules: Vec<OptValue> = rules
            .iter()
            .filter_map(|rule| {
                let Value::Message(rule) = rule else {
                    return None;
                };
                let entry: Vec<(String, OptValue)> = ["name", "doc", "expr", "sql"]
                    .iter()
                    .filter_map(|field| {
                        let value = string_of(rule, field);
                        (!value.is_empty())
                            .then(|| ((*field).to_owned(), OptValue::Str(escape_str(&value))))
                    })
                    .collect();
                (!entry.is_empty()).then_some(OptValue::Map(entry))
            })
            .collect();
        if !rules.is_empty() {
            map.push(("rules".to_owned(), OptValue::List(rules)));
        }
    }
    (!map.is_empty()).then_some(OptValue::Map(map))
}

/// Java's `Double.toString`: plain between 10^-3 and 10^7 (always with a fraction digit),
/// computerised scientific notation otherwise. `shortest` is Rust's shortest representation
/// of the same value.
pub(super) fn java_float_string(value: f64, shortest: &str) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        let text = if value > 0.0 { "Infinity" } else { "-Infinity" };
        return text.to_owned();
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        return if shortest.contains('.') {
            shortest.to_owned()
        } else {
            format!("{shortest}.0")
        };
    }
    // Rust's `{:e}` gives the shortest digits too, e.g. `1.5e10` or `1e-5`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_owned()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exponent}")
}
