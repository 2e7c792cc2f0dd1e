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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use base64::Engine;
use prost::Message;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor,
    FileDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use prost_types::field_descriptor_proto::{Label as ProtoLabel, Type as ProtoType};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto, UninterpretedOption,
};

/// Confluent's largest field number; a range ending there prints as `max`.
const MAX_TAG_VALUE: i32 = 536_870_911;

/// The two texts of a schema.
#[derive(Debug, Clone)]
pub(crate) struct Printed {
    /// `canonicalString()`: stored, served and compared.
    pub(crate) canonical: String,
    /// `normalize().canonicalString()`.
    pub(crate) normalized: String,
}

/// Prints `text` (`.proto` source, or a base64 `FileDescriptorProto`) that compiled into
/// `file`.
pub(crate) fn print(text: &str, file: &FileDescriptor) -> Result<Printed, String> {
    let element = match protox_parse::parse(file.name(), text) {
        Ok(parsed) => SourceBuilder::new(text, &parsed, file).file(&parsed),
        Err(parse_error) => match decode_base64_descriptor(text) {
            Some((bytes, proto)) => DescriptorBuilder::new(&proto, &bytes, file).file(&proto),
            None => return Err(parse_error.to_string()),
        },
    };
    let pool = file.parent_pool();
    Ok(Printed {
        canonical: Printer::new(false, pool, &element).file(&element),
        normalized: Printer::new(true, pool, &element).file(&element),
    })
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

// ---- the element tree (square/wire's `ProtoFileElement`) ------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldLabel {
    Optional,
    Required,
    Repeated,
}

impl FieldLabel {
    fn as_str(self) -> &'static str {
        match self {
            FieldLabel::Optional => "optional",
            FieldLabel::Required => "required",
            FieldLabel::Repeated => "repeated",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct FileElem {
    syntax: Option<String>,
    package: Option<String>,
    imports: Vec<String>,
    public_imports: Vec<String>,
    weak_imports: Vec<String>,
    options: Vec<OptionElem>,
    messages: Vec<MessageElem>,
    enums: Vec<EnumElem>,
    extends: Vec<ExtendElem>,
    services: Vec<ServiceElem>,
}

#[derive(Debug, Clone, Default)]
struct MessageElem {
    name: String,
    reserveds: Vec<Vec<RangeValue>>,
    options: Vec<OptionElem>,
    fields: Vec<FieldElem>,
    oneofs: Vec<OneofElem>,
    groups: Vec<GroupElem>,
    extensions: Vec<ExtensionsElem>,
    extends: Vec<ExtendElem>,
    messages: Vec<MessageElem>,
    enums: Vec<EnumElem>,
}

impl MessageElem {
    /// Confluent's test for a synthetic map entry: an option `map_entry = true`.
    fn is_map_entry(&self) -> bool {
        self.options.iter().any(|option| {
            !option.parenthesized
                && option.name == "map_entry"
                && matches!(&option.value, OptValue::Bool(value) if value.eq_ignore_ascii_case("true"))
        })
    }
}

#[derive(Debug, Clone)]
struct FieldElem {
    label: Option<FieldLabel>,
    /// The type as written (`map<K, V>` for a map field written so).
    ty: String,
    /// The type with fully-qualified names (`.pkg.Msg`, `map<K, .pkg.V>`).
    normalized_ty: String,
    /// The normalised type is a map (the label is then not printed).
    normalized_is_map: bool,
    name: String,
    tag: i32,
    default: Option<OptValue>,
    /// Already escaped.
    json_name: Option<String>,
    options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
struct OneofElem {
    name: String,
    options: Vec<OptionElem>,
    fields: Vec<FieldElem>,
    groups: Vec<GroupElem>,
}

#[derive(Debug, Clone)]
struct GroupElem {
    label: Option<FieldLabel>,
    name: String,
    tag: i32,
    fields: Vec<FieldElem>,
}

#[derive(Debug, Clone)]
struct ExtensionsElem {
    values: Vec<RangeValue>,
    options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
struct ExtendElem {
    name: String,
    normalized_name: String,
    fields: Vec<FieldElem>,
}

/// One value of a `reserved` or `extensions` statement (ranges are inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RangeValue {
    Int(i32),
    Range(i32, i32),
    Name(String),
}

impl RangeValue {
    fn start(&self) -> i32 {
        match self {
            RangeValue::Int(value) | RangeValue::Range(value, _) => *value,
            RangeValue::Name(_) => i32::MAX,
        }
    }

    /// Java's `toString()` of the value (a Kotlin `IntRange` prints as `a..b`).
    fn java_string(&self) -> String {
        match self {
            RangeValue::Int(value) => value.to_string(),
            RangeValue::Range(start, end) => format!("{start}..{end}"),
            RangeValue::Name(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct EnumElem {
    name: String,
    reserveds: Vec<Vec<RangeValue>>,
    options: Vec<OptionElem>,
    constants: Vec<ConstantElem>,
}

#[derive(Debug, Clone)]
struct ConstantElem {
    name: String,
    tag: i32,
    options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
struct ServiceElem {
    name: String,
    options: Vec<OptionElem>,
    rpcs: Vec<RpcElem>,
}

#[derive(Debug, Clone)]
struct RpcElem {
    name: String,
    request: String,
    normalized_request: String,
    request_streaming: bool,
    response: String,
    normalized_response: String,
    response_streaming: bool,
    options: Vec<OptionElem>,
}

/// wire's `OptionElement`: `name` is printed in parentheses when `parenthesized`.
#[derive(Debug, Clone, PartialEq)]
struct OptionElem {
    name: String,
    parenthesized: bool,
    value: OptValue,
}

/// An option value, by wire's `OptionElement.Kind`. Strings are kept escaped, numbers as
/// written.
#[derive(Debug, Clone, PartialEq)]
enum OptValue {
    Str(String),
    Bool(String),
    Enum(String),
    Number(String),
    Map(Vec<(String, OptValue)>),
    List(Vec<OptValue>),
    /// `(a).b = v`: the option `a` whose value is the sub-option `b = v`.
    Option(Box<OptionElem>),
}

// ---- the printer (ProtobufSchemaUtils.toString) --------------------------------------------

struct Printer<'a> {
    normalize: bool,
    pool: &'a DescriptorPool,
    /// Package parts, then the names of the enclosing messages and enums.
    scope: Vec<String>,
}

impl<'a> Printer<'a> {
    fn new(normalize: bool, pool: &'a DescriptorPool, file: &FileElem) -> Self {
        let scope = file
            .package
            .iter()
            .flat_map(|package| package.split('.'))
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            normalize,
            pool,
            scope,
        }
    }

    fn file(&mut self, file: &FileElem) -> String {
        let mut sb = String::new();
        if let Some(syntax) = &file.syntax {
            if !self.normalize || syntax == "proto3" {
                let _ = writeln!(sb, "syntax = \"{syntax}\";");
            }
        }
        if let Some(package) = &file.package {
            let _ = writeln!(sb, "package {package};");
        }
        if !file.imports.is_empty()
            || !file.public_imports.is_empty()
            || !file.weak_imports.is_empty()
        {
            sb.push('\n');
            for import in self.sorted_imports(&file.imports) {
                let _ = writeln!(sb, "import \"{import}\";");
            }
            for import in self.sorted_imports(&file.public_imports) {
                let _ = writeln!(sb, "import public \"{import}\";");
            }
            for import in self.sorted_imports(&file.weak_imports) {
                let _ = writeln!(sb, "import weak \"{import}\";");
            }
        }
        let options = self.filter_options(&file.options);
        if !options.is_empty() {
            sb.push('\n');
            for option in &options {
                sb.push_str(&self.option_statement(option));
            }
        }
        let messages = self.filter_messages(&file.messages);
        if !messages.is_empty() || !file.enums.is_empty() {
            sb.push('\n');
            // Messages keep their order: clients compute message indexes from this text.
            for message in messages {
                self.scope.push(message.name.clone());
                sb.push_str(&self.message(message));
                self.scope.pop();
            }
            for element in &file.enums {
                self.scope.push(element.name.clone());
                sb.push_str(&self.enumeration(element));
                self.scope.pop();
            }
        }
        if !file.extends.is_empty() {
            sb.push('\n');
            for extend in self.grouped_extends(&file.extends) {
                sb.push_str(&self.extend(&extend));
            }
        }
        if !file.services.is_empty() {
            sb.push('\n');
            for service in &file.services {
                sb.push_str(&self.service(service));
            }
        }
        sb
    }

    fn sorted_imports(&self, imports: &[String]) -> Vec<String> {
        let mut imports = imports.to_vec();
        if self.normalize {
            imports.sort();
            imports.dedup();
        }
        imports
    }

    /// Normalisation drops synthetic map entry messages (their fields print as `map<K, V>`).
    fn filter_messages<'m>(&self, messages: &'m [MessageElem]) -> Vec<&'m MessageElem> {
        messages
            .iter()
            .filter(|message| !self.normalize || !message.is_map_entry())
            .collect()
    }

    fn service(&self, service: &ServiceElem) -> String {
        let mut sb = format!("service {} {{", service.name);
        let options = self.filter_options(&service.options);
        if !options.is_empty() {
            sb.push('\n');
            for option in &options {
                append_indented(&mut sb, &self.option_statement(option));
            }
        }
        if !service.rpcs.is_empty() {
            sb.push('\n');
            for rpc in &service.rpcs {
                append_indented(&mut sb, &self.rpc(rpc));
            }
        }
        sb.push_str("}\n");
        sb
    }

    fn rpc(&self, rpc: &RpcElem) -> String {
        let mut sb = format!("rpc {} (", rpc.name);
        if rpc.request_streaming {
            sb.push_str("stream ");
        }
        sb.push_str(if self.normalize {
            &rpc.normalized_request
        } else {
            &rpc.request
        });
        sb.push_str(") returns (");
        if rpc.response_streaming {
            sb.push_str("stream ");
        }
        sb.push_str(if self.normalize {
            &rpc.normalized_response
        } else {
            &rpc.response
        });
        sb.push(')');
        let options = self.filter_options(&rpc.options);
        if !options.is_empty() {
            sb.push_str(" {\n");
            for option in &options {
                append_indented(&mut sb, &self.option_statement(option));
            }
            sb.push('}');
        }
        sb.push_str(";\n");
        sb
    }

    fn enumeration(&self, element: &EnumElem) -> String {
        let mut sb = format!("enum {} {{", element.name);
        if !element.reserveds.is_empty() {
            sb.push('\n');
            for reserved in self.sorted_reserveds(&element.reserveds) {
                append_indented(&mut sb, &self.reserved(&reserved));
            }
        }
        if element.reserveds.is_empty()
            && (!element.options.is_empty() || !element.constants.is_empty())
        {
            sb.push('\n');
        }
        for option in &self.filter_options(&element.options) {
            append_indented(&mut sb, &self.option_statement(option));
        }
        let mut constants: Vec<&ConstantElem> = element.constants.iter().collect();
        if self.normalize {
            constants.sort_by(|a, b| a.tag.cmp(&b.tag).then_with(|| a.name.cmp(&b.name)));
        }
        for constant in constants {
            let mut line = format!("{} = {}", constant.name, constant.tag);
            let options = self.filter_options(&constant.options);
            if !options.is_empty() {
                line.push(' ');
                self.append_option_list(&mut line, &options);
            }
            line.push_str(";\n");
            append_indented(&mut sb, &line);
        }
        sb.push_str("}\n");
        sb
    }

    fn message(&mut self, message: &MessageElem) -> String {
        let mut sb = format!("message {} {{", message.name);
        if !message.reserveds.is_empty() {
            sb.push('\n');
            for reserved in self.sorted_reserveds(&message.reserveds) {
                append_indented(&mut sb, &self.reserved(&reserved));
            }
        }
        let options = self.filter_options(&message.options);
        if !options.is_empty() {
            sb.push('\n');
            for option in &options {
                append_indented(&mut sb, &self.option_statement(option));
            }
        }
        if !message.fields.is_empty() {
            sb.push('\n');
            for field in self.sorted_fields(&message.fields) {
                append_indented(&mut sb, &self.field(field));
            }
        }
        if !message.oneofs.is_empty() {
            sb.push('\n');
            let mut oneofs: Vec<OneofElem> = message.oneofs.clone();
            if self.normalize {
                oneofs.retain(|oneof| !oneof.fields.is_empty());
                for oneof in &mut oneofs {
                    oneof.fields.sort_by_key(|field| field.tag);
                }
                oneofs.sort_by_key(|oneof| oneof.fields.first().map_or(i32::MAX, |f| f.tag));
            }
            for oneof in &oneofs {
                append_indented(&mut sb, &self.oneof(oneof));
            }
        }
        if !message.groups.is_empty() {
            sb.push('\n');
            for group in self.sorted_groups(&message.groups) {
                append_indented(&mut sb, &self.group(group));
            }
        }
        if !message.extensions.is_empty() {
            sb.push('\n');
            let mut extensions: Vec<ExtensionsElem> = message.extensions.clone();
            if self.normalize {
                extensions = extensions
                    .into_iter()
                    .flat_map(|extension| {
                        let options = extension.options.clone();
                        extension
                            .values
                            .into_iter()
                            .map(move |value| ExtensionsElem {
                                values: vec![value],
                                options: options.clone(),
                            })
                    })
                    .collect();
                extensions.sort_by_key(|extension| {
                    extension.values.first().map_or(i32::MAX, RangeValue::start)
                });
            }
            for extension in &extensions {
                append_indented(&mut sb, &self.extensions(extension));
            }
        }
        if !message.extends.is_empty() {
            sb.push('\n');
            for extend in self.grouped_extends(&message.extends) {
                append_indented(&mut sb, &self.extend(&extend));
            }
        }
        let nested = self.filter_messages(&message.messages);
        if !nested.is_empty() || !message.enums.is_empty() {
            sb.push('\n');
            for inner in nested {
                self.scope.push(inner.name.clone());
                let text = self.message(inner);
                self.scope.pop();
                append_indented(&mut sb, &text);
            }
            for inner in &message.enums {
                self.scope.push(inner.name.clone());
                let text = self.enumeration(inner);
                self.scope.pop();
                append_indented(&mut sb, &text);
            }
        }
        sb.push_str("}\n");
        sb
    }

    fn sorted_fields<'f>(&self, fields: &'f [FieldElem]) -> Vec<&'f FieldElem> {
        let mut fields: Vec<&FieldElem> = fields.iter().collect();
        if self.normalize {
            fields.sort_by_key(|field| field.tag);
        }
        fields
    }

    fn sorted_groups<'g>(&self, groups: &'g [GroupElem]) -> Vec<&'g GroupElem> {
        let mut groups: Vec<&GroupElem> = groups.iter().collect();
        if self.normalize {
            groups.sort_by_key(|group| group.tag);
        }
        groups
    }

    /// Normalisation splits `reserved` statements into one value each, sorted by number (names
    /// last, by name).
    fn sorted_reserveds(&self, reserveds: &[Vec<RangeValue>]) -> Vec<Vec<RangeValue>> {
        if !self.normalize {
            return reserveds.to_vec();
        }
        let mut split: Vec<Vec<RangeValue>> = reserveds
            .iter()
            .flat_map(|values| values.iter().map(|value| vec![value.clone()]))
            .collect();
        split.sort_by(|a, b| {
            let key = |values: &Vec<RangeValue>| {
                values.first().map_or((i32::MAX, String::new()), |value| {
                    (value.start(), value.java_string())
                })
            };
            key(a).cmp(&key(b))
        });
        split
    }

    /// Normalisation merges `extend` blocks of one scope by their fully-qualified target, in
    /// order of first appearance.
    fn grouped_extends(&self, extends: &[ExtendElem]) -> Vec<ExtendElem> {
        if !self.normalize {
            return extends.to_vec();
        }
        let mut grouped: Vec<ExtendElem> = Vec::new();
        for extend in extends {
            match grouped
                .iter_mut()
                .find(|known| known.name == extend.normalized_name)
            {
                Some(known) => known.fields.extend(extend.fields.iter().cloned()),
                None => grouped.push(ExtendElem {
                    name: extend.normalized_name.clone(),
                    normalized_name: extend.normalized_name.clone(),
                    fields: extend.fields.clone(),
                }),
            }
        }
        grouped
    }

    fn reserved(&self, values: &[RangeValue]) -> String {
        let mut sb = String::from("reserved ");
        sb.push_str(&self.range_values(values));
        sb.push_str(";\n");
        sb
    }

    fn extensions(&self, extension: &ExtensionsElem) -> String {
        let mut sb = String::from("extensions ");
        sb.push_str(&self.range_values(&extension.values));
        let options = self.filter_options(&extension.options);
        if !options.is_empty() {
            sb.push(' ');
            self.append_option_list(&mut sb, &options);
        }
        sb.push_str(";\n");
        sb
    }

    fn range_values(&self, values: &[RangeValue]) -> String {
        let printed: Vec<String> = values
            .iter()
            .map(|value| match value {
                RangeValue::Name(name) => format!("\"{name}\""),
                RangeValue::Int(value) => value.to_string(),
                RangeValue::Range(start, end) if self.normalize && start == end => {
                    start.to_string()
                }
                RangeValue::Range(start, end) if *end < MAX_TAG_VALUE => {
                    format!("{start} to {end}")
                }
                RangeValue::Range(start, _) => format!("{start} to max"),
            })
            .collect();
        printed.join(", ")
    }

    fn oneof(&self, oneof: &OneofElem) -> String {
        let mut sb = format!("oneof {} {{", oneof.name);
        let options = self.filter_options(&oneof.options);
        if !options.is_empty() {
            sb.push('\n');
            for option in &options {
                append_indented(&mut sb, &self.option_statement(option));
            }
        }
        if !oneof.fields.is_empty() {
            sb.push('\n');
            // Already sorted by the caller when normalising.
            for field in &oneof.fields {
                append_indented(&mut sb, &self.field(field));
            }
        }
        if !oneof.groups.is_empty() {
            sb.push('\n');
            for group in self.sorted_groups(&oneof.groups) {
                append_indented(&mut sb, &self.group(group));
            }
        }
        sb.push_str("}\n");
        sb
    }

    fn group(&self, group: &GroupElem) -> String {
        let mut sb = String::new();
        if let Some(label) = group.label {
            sb.push_str(label.as_str());
            sb.push(' ');
        }
        let _ = write!(sb, "group {} = {} {{", group.name, group.tag);
        if !group.fields.is_empty() {
            sb.push('\n');
            for field in self.sorted_fields(&group.fields) {
                append_indented(&mut sb, &self.field(field));
            }
        }
        sb.push_str("}\n");
        sb
    }

    fn extend(&self, extend: &ExtendElem) -> String {
        let mut sb = format!("extend {} {{", extend.name);
        if !extend.fields.is_empty() {
            sb.push('\n');
            for field in self.sorted_fields(&extend.fields) {
                append_indented(&mut sb, &self.field(field));
            }
        }
        sb.push_str("}\n");
        sb
    }

    fn field(&self, field: &FieldElem) -> String {
        let mut label = field.label;
        let mut ty = field.ty.as_str();
        if self.normalize {
            ty = field.normalized_ty.as_str();
            if field.normalized_is_map {
                label = None;
            }
        }
        let mut sb = String::new();
        if let Some(label) = label {
            sb.push_str(label.as_str());
            sb.push(' ');
        }
        let _ = write!(sb, "{ty} {} = {}", field.name, field.tag);
        let mut options = field.options.clone();
        if let Some(default) = &field.default {
            options.push(OptionElem {
                name: "default".to_owned(),
                parenthesized: false,
                value: default.clone(),
            });
        }
        if let Some(json_name) = &field.json_name {
            options.push(OptionElem {
                name: "json_name".to_owned(),
                parenthesized: false,
                value: OptValue::Str(json_name.clone()),
            });
        }
        let options = self.filter_options(&options);
        if !options.is_empty() {
            sb.push(' ');
            self.append_option_list(&mut sb, &options);
        }
        sb.push_str(";\n");
        sb
    }

    // ---- options --------------------------------------------------------------------------

    fn option_statement(&self, option: &OptionElem) -> String {
        format!("option {};\n", self.option(option))
    }

    fn option(&self, option: &OptionElem) -> String {
        let mut sb = if option.parenthesized {
            format!("({})", option.name)
        } else {
            option.name.clone()
        };
        match &option.value {
            OptValue::Str(value) => {
                let _ = write!(sb, " = \"{value}\"");
            }
            OptValue::Bool(value) | OptValue::Enum(value) => {
                let _ = write!(sb, " = {value}");
            }
            OptValue::Number(value) => {
                let _ = write!(sb, " = {}", self.number(value));
            }
            OptValue::Option(inner) => {
                sb.push('.');
                sb.push_str(&self.option(inner));
            }
            OptValue::Map(entries) => {
                sb.push_str(" = {\n");
                self.option_map(&mut sb, entries);
                sb.push('}');
            }
            OptValue::List(items) => {
                sb.push_str(" = ");
                let printed: Vec<String> = items.iter().map(|item| self.value(item)).collect();
                append_bracketed(&mut sb, &printed);
            }
        }
        sb
    }

    fn append_option_list(&self, sb: &mut String, options: &[OptionElem]) {
        let printed: Vec<String> = options.iter().map(|option| self.option(option)).collect();
        append_bracketed(sb, &printed);
    }

    fn option_map(&self, sb: &mut String, entries: &[(String, OptValue)]) {
        let entries: Vec<(String, OptValue)> = if self.normalize {
            let mut sorted: BTreeMap<String, OptValue> = BTreeMap::new();
            for (key, value) in entries {
                if matches!(value, OptValue::List(items) if items.is_empty()) {
                    continue;
                }
                let key = match key.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
                    Some(extension) => match self.resolve_extension(extension) {
                        Some(resolved) => format!("[{resolved}]"),
                        None => key.clone(),
                    },
                    None => key.clone(),
                };
                sorted.entry(key).or_insert_with(|| value.clone());
            }
            sorted.into_iter().collect()
        } else {
            entries.to_vec()
        };
        let count = entries.len();
        for (index, (key, value)) in entries.iter().enumerate() {
            let separator = if index + 1 != count { "," } else { "" };
            append_indented(sb, &format!("{key}: {}{separator}", self.value(value)));
        }
    }

    /// `formatOptionMapOrListValue`.
    fn value(&self, value: &OptValue) -> String {
        match value {
            OptValue::Str(text) => format!("\"{text}\""),
            OptValue::Map(entries) => {
                let mut sb = String::from("{\n");
                self.option_map(&mut sb, entries);
                sb.push('}');
                sb
            }
            OptValue::List(items) => match items.as_slice() {
                [single] if self.normalize => self.value(single),
                _ => {
                    let mut sb = String::from("[\n");
                    let count = items.len();
                    for (index, item) in items.iter().enumerate() {
                        let separator = if index + 1 != count { "," } else { "" };
                        append_indented(&mut sb, &format!("{}{separator}", self.value(item)));
                    }
                    sb.push(']');
                    sb
                }
            },
            OptValue::Bool(text) | OptValue::Enum(text) => text.clone(),
            OptValue::Number(text) => self.number(text),
            OptValue::Option(inner) => self.option(inner),
        }
    }

    fn number(&self, raw: &str) -> String {
        if self.normalize {
            normalize_number(raw)
        } else {
            raw.to_owned()
        }
    }

    /// `FormatContext.filterOptions`: when normalising, custom option names are resolved to
    /// full names, `(a).b = v` becomes `(a) = { b: v }`, options are sorted by name and the
    /// values of a non-repeated custom option are merged into one.
    fn filter_options(&self, options: &[OptionElem]) -> Vec<OptionElem> {
        if !self.normalize || options.is_empty() {
            return options.to_vec();
        }
        let mut mapped: Vec<OptionElem> = options
            .iter()
            .map(|option| {
                if option.parenthesized {
                    if let Some(resolved) = self.resolve_extension(&option.name) {
                        return transform(OptionElem {
                            name: resolved,
                            parenthesized: true,
                            value: option.value.clone(),
                        });
                    }
                }
                option.clone()
            })
            .collect();
        mapped.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(mapped.len());
        let mut start = 0;
        while start < mapped.len() {
            let name = mapped[start].name.clone();
            let end = start
                + mapped[start..]
                    .iter()
                    .take_while(|o| o.name == name)
                    .count();
            let group = &mapped[start..end];
            let extension = self
                .pool
                .get_extension_by_name(name.trim_start_matches('.'))
                .filter(|extension| !extension.is_list());
            match (extension, group.split_first()) {
                (Some(extension), Some((first, rest))) => {
                    let mut merged = first.clone();
                    for next in rest {
                        merged = merge_option(&extension, merged, next.clone());
                    }
                    out.push(merged);
                }
                _ => out.extend_from_slice(group),
            }
            start = end;
        }
        out
    }

    /// Confluent's scope walk (`Context.resolve`) for an extension name: absolute with a leading
    /// dot, else tried inside each enclosing scope from the innermost out.
    fn resolve_extension(&self, name: &str) -> Option<String> {
        if let Some(absolute) = name.strip_prefix('.') {
            return self
                .pool
                .get_extension_by_name(absolute)
                .map(|_| absolute.to_owned());
        }
        let mut prefix = self.scope.clone();
        while !prefix.is_empty() {
            let candidate = format!("{}.{name}", prefix.join("."));
            if self.pool.get_extension_by_name(&candidate).is_some() {
                return Some(candidate);
            }
            prefix.pop();
        }
        self.pool
            .get_extension_by_name(name)
            .map(|_| name.to_owned())
    }
}

/// `ProtobufSchema.transform`: an option of kind OPTION becomes a map.
fn transform(option: OptionElem) -> OptionElem {
    match option.value {
        OptValue::Option(inner) => OptionElem {
            name: option.name,
            parenthesized: option.parenthesized,
            value: OptValue::Map(transform_option_map(*inner)),
        },
        value => OptionElem {
            name: option.name,
            parenthesized: option.parenthesized,
            value,
        },
    }
}

fn transform_option_map(option: OptionElem) -> Vec<(String, OptValue)> {
    let key = match option
        .name
        .strip_prefix('(')
        .and_then(|name| name.strip_suffix(')'))
    {
        Some(extension) => format!("[{extension}]"),
        None => option.name,
    };
    let value = match option.value {
        OptValue::Option(inner) => OptValue::Map(transform_option_map(*inner)),
        value => value,
    };
    vec![(key, value)]
}

fn merge_option(
    extension: &ExtensionDescriptor,
    existing: OptionElem,
    replacement: OptionElem,
) -> OptionElem {
    let replacement = transform(replacement);
    match (&existing.value, &replacement.value) {
        (OptValue::Map(existing_map), OptValue::Map(replacement_map)) => {
            let container = match extension.kind() {
                Kind::Message(message) => Some(message),
                _ => None,
            };
            let merged = merge_option_maps(container.as_ref(), existing_map, replacement_map);
            OptionElem {
                name: replacement.name,
                parenthesized: replacement.parenthesized,
                value: OptValue::Map(merged),
            }
        }
        _ => replacement,
    }
}

fn merge_option_maps(
    container: Option<&MessageDescriptor>,
    existing: &[(String, OptValue)],
    replacement: &[(String, OptValue)],
) -> Vec<(String, OptValue)> {
    let mut merged = existing.to_vec();
    for (key, value) in replacement {
        let field = container.and_then(|message| message.get_field_by_name(key));
        match merged.iter_mut().find(|(known, _)| known == key) {
            Some((_, slot)) => {
                let previous = std::mem::replace(slot, OptValue::List(Vec::new()));
                *slot = merge_option_values(field.as_ref(), previous, value.clone());
            }
            None => merged.push((key.clone(), value.clone())),
        }
    }
    merged
}

/// Two values set for one key: messages of a singular field merge, a singular scalar takes the
/// last value, a repeated field (or one that cannot be resolved) accumulates distinct values.
fn merge_option_values(
    field: Option<&FieldDescriptor>,
    first: OptValue,
    second: OptValue,
) -> OptValue {
    if let Some(field) = field {
        let singular = field.cardinality() != Cardinality::Repeated || field.is_map();
        if singular {
            if let (OptValue::Map(a), OptValue::Map(b), Kind::Message(message)) =
                (&first, &second, field.kind())
            {
                if !field.is_map() {
                    return OptValue::Map(merge_option_maps(Some(&message), a, b));
                }
            }
            return second;
        }
    }
    let mut items: Vec<OptValue> = Vec::new();
    for value in [first, second] {
        let values = match value {
            OptValue::List(values) => values,
            other => vec![other],
        };
        for value in values {
            if !items.contains(&value) {
                items.push(value);
            }
        }
    }
    OptValue::List(items)
}

/// `appendOptions`: one item inline in brackets, more on indented lines.
fn append_bracketed(sb: &mut String, items: &[String]) {
    if let [single] = items {
        sb.push('[');
        sb.push_str(single);
        sb.push(']');
        return;
    }
    sb.push_str("[\n");
    let count = items.len();
    for (index, item) in items.iter().enumerate() {
        let separator = if index + 1 < count { "," } else { "" };
        append_indented(sb, &format!("{item}{separator}"));
    }
    sb.push(']');
}

/// `appendIndented`: every line of `value` indented by two spaces (Java's `split("\n")`, which
/// drops trailing empty lines).
fn append_indented(sb: &mut String, value: &str) {
    let mut lines: Vec<&str> = value.split('\n').collect();
    if !value.is_empty() {
        while lines.last() == Some(&"") {
            lines.pop();
        }
    }
    for line in lines {
        sb.push_str("  ");
        sb.push_str(line);
        sb.push('\n');
    }
}

/// wire/Confluent `escapeChars`, plus octal escapes for other control characters.
fn escape_str(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for ch in input.chars() {
        match ch {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\{:03o}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// [`escape_str`] for bytes; bytes that are not UTF-8 are escaped as octal.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape_str(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\{byte:03o}");
        }
    }
    out
}

// ---- numbers (normalisation) ----------------------------------------------------------------

/// Confluent normalises a number by parsing it with commons-lang `NumberUtils.createNumber`
/// and printing it with a `DecimalFormat` without grouping (at most three decimals, half-even).
/// Anything it cannot parse (`inf`, `nan`) stays as written.
fn normalize_number(raw: &str) -> String {
    java_number(raw).unwrap_or_else(|| raw.to_owned())
}

fn java_number(raw: &str) -> Option<String> {
    let text = raw.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if body.is_empty() {
        return None;
    }
    let signed = |value: u128| {
        if negative && value != 0 {
            format!("-{value}")
        } else {
            value.to_string()
        }
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return u128::from_str_radix(hex, 16).ok().map(signed);
    }
    if body.bytes().all(|b| b.is_ascii_digit()) {
        let value = match body.strip_prefix('0') {
            Some(octal) if !octal.is_empty() => u128::from_str_radix(octal, 8).ok()?,
            _ => body.parse::<u128>().ok()?,
        };
        return Some(signed(value));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        || !body.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mantissa = body.split(['e', 'E']).next().unwrap_or(body);
    let decimals = mantissa
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len());
    let all_zeros = body.bytes().filter(u8::is_ascii_digit).all(|b| b == b'0');
    // createNumber prefers a float when it has at most seven decimals and is representable.
    let float = if decimals <= 7 {
        body.parse::<f32>()
            .ok()
            .filter(|value| value.is_finite() && (*value != 0.0 || all_zeros))
            .map(f64::from)
    } else {
        None
    };
    let value = match float {
        Some(value) => value,
        None => body.parse::<f64>().ok().filter(|value| value.is_finite())?,
    };
    let digits = round_half_even(&format!("{}", value.abs()), 3);
    Some(if negative {
        format!("-{digits}")
    } else {
        digits
    })
}

/// Rounds a plain decimal string to `places` fraction digits, half-even, and drops trailing
/// zeros (and the point when nothing is left after it).
fn round_half_even(digits: &str, places: usize) -> String {
    let (integer, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let (keep, rest) = if fraction.len() > places {
        fraction.split_at(places)
    } else {
        (fraction, "")
    };
    let mut all: Vec<u8> = integer.bytes().chain(keep.bytes()).collect();
    let first = rest.bytes().next().unwrap_or(b'0');
    let tail_nonzero = rest.bytes().skip(1).any(|b| b != b'0');
    let last_odd = all.last().is_some_and(|b| b.wrapping_sub(b'0') % 2 == 1);
    if first > b'5' || (first == b'5' && (tail_nonzero || last_odd)) {
        let mut carry = true;
        for digit in all.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            all.insert(0, b'1');
        }
    }
    let split = all.len().saturating_sub(keep.len());
    let fraction_part = all.split_off(split);
    let mut integer_part = String::from_utf8(all).unwrap_or_default();
    if integer_part.is_empty() {
        integer_part.push('0');
    }
    let fraction_text = String::from_utf8(fraction_part).unwrap_or_default();
    let fraction_text = fraction_text.trim_end_matches('0');
    if fraction_text.is_empty() {
        integer_part
    } else {
        format!("{integer_part}.{fraction_text}")
    }
}

// ---- option values as written ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(String),
    Str(Vec<u8>),
    Punct(char),
}

/// Splits `.proto` or text-format source into tokens, dropping whitespace and comments.
fn tokenize(text: &str) -> Vec<Tok> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && next == Some(b'/') {
            while bytes.get(i).is_some_and(|&b| b != b'\n') {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            i += 2;
            while i < bytes.len()
                && !(bytes.get(i) == Some(&b'*') && bytes.get(i + 1) == Some(&b'/'))
            {
                i += 1;
            }
            i = (i + 2).min(bytes.len());
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
            {
                i += 1;
            }
            tokens.push(Tok::Ident(
                text.get(start..i).unwrap_or_default().to_owned(),
            ));
        } else if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|b| b.is_ascii_digit())) {
            let start = i;
            let hex = c == b'0' && matches!(next, Some(b'x' | b'X'));
            while let Some(&b) = bytes.get(i) {
                let previous = if i > start {
                    bytes.get(i - 1).copied()
                } else {
                    None
                };
                let exponent_sign =
                    !hex && matches!(b, b'+' | b'-') && matches!(previous, Some(b'e' | b'E'));
                if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            tokens.push(Tok::Number(
                text.get(start..i).unwrap_or_default().to_owned(),
            ));
        } else if c == b'"' || c == b'\'' {
            let (value, end) = read_string(bytes, i);
            tokens.push(Tok::Str(value));
            i = end;
        } else {
            let ch = text
                .get(i..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or('\u{fffd}');
            tokens.push(Tok::Punct(ch));
            i += ch.len_utf8().max(1);
        }
    }
    tokens
}

/// Reads the string literal opening at `start`; returns its bytes and the index after it.
fn read_string(bytes: &[u8], start: usize) -> (Vec<u8>, usize) {
    let quote = bytes.get(start).copied().unwrap_or(b'"');
    let mut out = Vec::new();
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        if b == quote {
            return (out, i + 1);
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&escape) = bytes.get(i + 1) else {
            return (out, i + 1);
        };
        i += 2;
        match escape {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' | b'X' => {
                let (value, used) = read_digits(bytes, i, 16, 2);
                out.push(u8::try_from(value).unwrap_or(u8::MAX));
                i += used;
            }
            b'0'..=b'7' => {
                let (value, used) = read_digits(bytes, i - 1, 8, 3);
                out.push(u8::try_from(value & 0xff).unwrap_or(u8::MAX));
                i += used.saturating_sub(1);
            }
            b'u' | b'U' => {
                let width = if escape == b'u' { 4 } else { 8 };
                let (value, used) = read_digits(bytes, i, 16, width);
                let ch = char::from_u32(value).unwrap_or('\u{fffd}');
                let mut buffer = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
                i += used;
            }
            other => out.push(other),
        }
    }
    (out, i)
}

/// Up to `max` digits in `radix` from `start`: their value and how many were read.
fn read_digits(bytes: &[u8], start: usize, radix: u32, max: usize) -> (u32, usize) {
    let mut value: u32 = 0;
    let mut used = 0;
    while used < max {
        let Some(digit) = bytes
            .get(start + used)
            .and_then(|&b| char::from(b).to_digit(radix))
        else {
            break;
        };
        value = value.saturating_mul(radix).saturating_add(digit);
        used += 1;
    }
    (value, used)
}

/// Reads option values the way wire's `OptionReader` does.
struct TokParser<'t> {
    tokens: &'t [Tok],
    pos: usize,
}

impl TokParser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<Tok> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn eat(&mut self, punct: char) -> bool {
        if self.peek() == Some(&Tok::Punct(punct)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<OptValue> {
        match self.peek()?.clone() {
            Tok::Punct('{') => {
                self.pos += 1;
                self.map('}').map(OptValue::Map)
            }
            Tok::Punct('<') => {
                self.pos += 1;
                self.map('>').map(OptValue::Map)
            }
            Tok::Punct('[') => {
                self.pos += 1;
                self.list().map(OptValue::List)
            }
            Tok::Str(_) => {
                let mut bytes = Vec::new();
                while let Some(Tok::Str(part)) = self.peek() {
                    bytes.extend_from_slice(part);
                    self.pos += 1;
                }
                Some(OptValue::Str(escape_bytes(&bytes)))
            }
            Tok::Punct('-') => {
                self.pos += 1;
                match self.bump()? {
                    Tok::Number(text) | Tok::Ident(text) => {
                        Some(OptValue::Number(format!("-{text}")))
                    }
                    _ => None,
                }
            }
            Tok::Number(text) => {
                self.pos += 1;
                Some(OptValue::Number(text))
            }
            Tok::Ident(text) => {
                self.pos += 1;
                if text == "true" || text == "false" {
                    Some(OptValue::Bool(text))
                } else {
                    Some(OptValue::Enum(text))
                }
            }
            Tok::Punct(_) => None,
        }
    }

    fn map(&mut self, close: char) -> Option<Vec<(String, OptValue)>> {
        let mut entries: Vec<(String, OptValue)> = Vec::new();
        loop {
            if self.eat(close) {
                return Some(entries);
            }
            let key = match self.bump()? {
                Tok::Punct('[') => {
                    let mut name = String::new();
                    loop {
                        match self.bump()? {
                            Tok::Punct(']') => break,
                            Tok::Ident(part) | Tok::Number(part) => name.push_str(&part),
                            Tok::Punct(punct) => name.push(punct),
                            Tok::Str(_) => return None,
                        }
                    }
                    format!("[{name}]")
                }
                Tok::Ident(name) => name,
                _ => return None,
            };
            // `key: value`, or `key { ... }` with the colon left out before a message.
            let value = if self.eat(':') || matches!(self.peek(), Some(Tok::Punct('{' | '<'))) {
                self.value()?
            } else {
                return None;
            };
            match entries.iter_mut().find(|(known, _)| *known == key) {
                Some((_, slot)) => {
                    let previous = std::mem::replace(slot, OptValue::List(Vec::new()));
                    let mut items = match previous {
                        OptValue::List(items) => items,
                        other => vec![other],
                    };
                    match value {
                        OptValue::List(more) => items.extend(more),
                        other => items.push(other),
                    }
                    *slot = OptValue::List(items);
                }
                None => entries.push((key, value)),
            }
            if !self.eat(',') {
                self.eat(';');
            }
        }
    }

    fn list(&mut self) -> Option<Vec<OptValue>> {
        let mut items = Vec::new();
        loop {
            if self.eat(']') {
                return Some(items);
            }
            items.push(self.value()?);
            if self.eat(',') {
                continue;
            }
            return if self.eat(']') { Some(items) } else { None };
        }
    }
}

/// The option `parsed` as written: its name from the descriptor, its value re-read from the
/// source (`raw`, the text of `name = value`) so numbers keep their spelling and aggregates
/// their structure.
fn option_from_uninterpreted(parsed: &UninterpretedOption, raw: Option<&str>) -> OptionElem {
    let value = raw
        .and_then(|raw| {
            let tokens = tokenize(raw);
            let equals = tokens.iter().position(|token| *token == Tok::Punct('='))?;
            TokParser {
                tokens: &tokens,
                pos: equals + 1,
            }
            .value()
        })
        .unwrap_or_else(|| uninterpreted_value(parsed));
    let parts = &parsed.name;
    let (name, parenthesized, rest) = match parts.split_first() {
        Some((first, rest)) if first.is_extension => (first.name_part.clone(), true, rest),
        _ => {
            let plain = parts.iter().take_while(|part| !part.is_extension).count();
            let name: Vec<&str> = parts
                .iter()
                .take(plain)
                .map(|part| part.name_part.as_str())
                .collect();
            (
                name.join("."),
                false,
                parts.get(plain..).unwrap_or_default(),
            )
        }
    };
    let mut value = value;
    for part in rest.iter().rev() {
        let sub_name = if part.is_extension {
            format!("({})", part.name_part)
        } else {
            part.name_part.clone()
        };
        value = OptValue::Option(Box::new(OptionElem {
            name: sub_name,
            parenthesized: false,
            value,
        }));
    }
    OptionElem {
        name,
        parenthesized,
        value,
    }
}

/// The value of an uninterpreted option when its source text is not available.
fn uninterpreted_value(option: &UninterpretedOption) -> OptValue {
    if let Some(identifier) = &option.identifier_value {
        if identifier == "true" || identifier == "false" {
            return OptValue::Bool(identifier.clone());
        }
        return OptValue::Enum(identifier.clone());
    }
    if let Some(value) = option.positive_int_value {
        return OptValue::Number(value.to_string());
    }
    if let Some(value) = option.negative_int_value {
        return OptValue::Number(value.to_string());
    }
    if let Some(value) = option.double_value {
        return OptValue::Number(format!("{value}"));
    }
    if let Some(value) = &option.string_value {
        return OptValue::Str(escape_bytes(value));
    }
    if let Some(aggregate) = &option.aggregate_value {
        let tokens = tokenize(&format!("{{{aggregate}}}"));
        if let Some(value) = (TokParser {
            tokens: &tokens,
            pos: 0,
        })
        .value()
        {
            return value;
        }
    }
    OptValue::Enum(String::new())
}

/// The text of a scalar (a default value) as written: a number, `-inf`, an identifier.
fn scalar_text(raw: &str) -> Option<String> {
    let tokens = tokenize(raw);
    match tokens.as_slice() {
        [Tok::Number(text) | Tok::Ident(text)] => Some(text.clone()),
        [Tok::Punct('-'), Tok::Number(text) | Tok::Ident(text)] => Some(format!("-{text}")),
        _ => None,
    }
}

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
fn written_type(field: &FieldDescriptorProto) -> String {
    match &field.type_name {
        Some(name) if !name.is_empty() => name.clone(),
        _ => scalar_name(field.r#type).to_owned(),
    }
}

fn kind_type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
        Kind::Message(message) => format!(".{}", message.full_name()),
        Kind::Enum(enumeration) => format!(".{}", enumeration.full_name()),
    }
}

/// The normalised type of a field whose compiled descriptor names `resolved`: `.full.Name`, or
/// `map<K, V>` (value qualified) when it names a map entry; scalars stay as written.
fn normalized_type(pool: &DescriptorPool, resolved: Option<&str>, written: &str) -> (String, bool) {
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

fn qualified(resolved: Option<&str>, written: &str) -> String {
    match resolved.filter(|name| !name.is_empty()) {
        Some(name) => format!(".{}", name.trim_start_matches('.')),
        None => written.to_owned(),
    }
}

fn uninterpreted(options: Option<&Vec<UninterpretedOption>>) -> &[UninterpretedOption] {
    options.map_or(&[][..], Vec::as_slice)
}

fn path_with(path: &[i32], more: &[i32]) -> Vec<i32> {
    let mut joined = Vec::with_capacity(path.len() + more.len());
    joined.extend_from_slice(path);
    joined.extend_from_slice(more);
    joined
}

fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

// ---- from source (wire's parser) ------------------------------------------------------------

/// Descriptor tags used in source-code-info paths.
mod tag {
    pub(super) const UNINTERPRETED_OPTION: i32 = 999;
    pub(super) const FILE_MESSAGE_TYPE: i32 = 4;
    pub(super) const FILE_ENUM_TYPE: i32 = 5;
    pub(super) const FILE_SERVICE: i32 = 6;
    pub(super) const FILE_EXTENSION: i32 = 7;
    pub(super) const FILE_OPTIONS: i32 = 8;
    pub(super) const FILE_SYNTAX: i32 = 12;
    pub(super) const MESSAGE_FIELD: i32 = 2;
    pub(super) const MESSAGE_NESTED_TYPE: i32 = 3;
    pub(super) const MESSAGE_ENUM_TYPE: i32 = 4;
    pub(super) const MESSAGE_EXTENSION_RANGE: i32 = 5;
    pub(super) const MESSAGE_EXTENSION: i32 = 6;
    pub(super) const MESSAGE_OPTIONS: i32 = 7;
    pub(super) const MESSAGE_ONEOF_DECL: i32 = 8;
    pub(super) const MESSAGE_RESERVED_RANGE: i32 = 9;
    pub(super) const MESSAGE_RESERVED_NAME: i32 = 10;
    pub(super) const EXTENSION_RANGE_OPTIONS: i32 = 3;
    pub(super) const FIELD_DEFAULT_VALUE: i32 = 7;
    pub(super) const FIELD_OPTIONS: i32 = 8;
    pub(super) const ONEOF_OPTIONS: i32 = 2;
    pub(super) const ENUM_VALUE: i32 = 2;
    pub(super) const ENUM_OPTIONS: i32 = 3;
    pub(super) const ENUM_RESERVED_RANGE: i32 = 4;
    pub(super) const ENUM_RESERVED_NAME: i32 = 5;
    pub(super) const ENUM_VALUE_OPTIONS: i32 = 3;
    pub(super) const SERVICE_METHOD: i32 = 2;
    pub(super) const SERVICE_OPTIONS: i32 = 3;
    pub(super) const METHOD_OPTIONS: i32 = 4;
}

/// Source positions of a parsed file, by descriptor path, as byte ranges of the text.
struct Spans<'a> {
    text: &'a str,
    by_path: HashMap<Vec<i32>, Vec<(usize, usize)>>,
}

impl<'a> Spans<'a> {
    fn new(text: &'a str, parsed: &FileDescriptorProto) -> Self {
        let mut line_starts = vec![0usize];
        for (offset, byte) in text.bytes().enumerate() {
            if byte == b'\n' {
                line_starts.push(offset + 1);
            }
        }
        let offset = |line: i32, column: i32| -> Option<usize> {
            let start = *line_starts.get(usize::try_from(line).ok()?)?;
            Some(start + usize::try_from(column).ok()?)
        };
        let mut by_path: HashMap<Vec<i32>, Vec<(usize, usize)>> = HashMap::new();
        let locations = parsed
            .source_code_info
            .as_ref()
            .map_or(&[][..], |info| info.location.as_slice());
        for location in locations {
            let bounds = match location.span.as_slice() {
                [line, start, end] => offset(*line, *start).zip(offset(*line, *end)),
                [start_line, start, end_line, end] => {
                    offset(*start_line, *start).zip(offset(*end_line, *end))
                }
                _ => None,
            };
            if let Some((start, end)) =
                bounds.filter(|(start, end)| start <= end && *end <= text.len())
            {
                by_path
                    .entry(location.path.clone())
                    .or_default()
                    .push((start, end));
            }
        }
        for spans in by_path.values_mut() {
            spans.sort_unstable();
        }
        Self { text, by_path }
    }

    fn has(&self, path: &[i32]) -> bool {
        self.by_path.contains_key(path)
    }

    fn first(&self, path: &[i32]) -> Option<(usize, usize)> {
        self.by_path.get(path)?.first().copied()
    }

    fn text(&self, path: &[i32]) -> Option<&'a str> {
        let (start, end) = self.first(path)?;
        self.text.get(start..end)
    }

    /// Groups the `count` items at `statement_path + [i]` by the statement (a location at
    /// `statement_path` itself) whose text contains them, in source order. Items outside any
    /// statement form their own group.
    fn statements(&self, statement_path: &[i32], count: usize) -> Vec<Vec<usize>> {
        let statements: &[(usize, usize)] = self
            .by_path
            .get(statement_path)
            .map_or(&[][..], Vec::as_slice);
        let mut groups: Vec<(usize, Vec<usize>)> = statements
            .iter()
            .map(|(start, _)| (*start, Vec::new()))
            .collect();
        let mut loose: Vec<(usize, Vec<usize>)> = Vec::new();
        for item in 0..count {
            let span = self.first(&path_with(statement_path, &[index(item)]));
            let owner = span.and_then(|(start, end)| {
                statements
                    .iter()
                    .position(|(s, e)| *s <= start && end <= *e)
            });
            match (owner, groups.get_mut(owner.unwrap_or(usize::MAX))) {
                (Some(_), Some((_, items))) => items.push(item),
                _ => loose.push((span.map_or(usize::MAX, |(start, _)| start), vec![item])),
            }
        }
        groups.retain(|(_, items)| !items.is_empty());
        groups.extend(loose);
        groups.sort_by_key(|(start, _)| *start);
        groups.into_iter().map(|(_, items)| items).collect()
    }

    fn statement_start(&self, statement_path: &[i32], first_item: usize) -> usize {
        self.first(&path_with(statement_path, &[index(first_item)]))
            .map_or(usize::MAX, |(start, _)| start)
    }
}

struct SourceBuilder<'a> {
    spans: Spans<'a>,
    proto3: bool,
    pool: &'a DescriptorPool,
    compiled: &'a FileDescriptorProto,
}

impl<'a> SourceBuilder<'a> {
    fn new(text: &'a str, parsed: &FileDescriptorProto, file: &'a FileDescriptor) -> Self {
        Self {
            spans: Spans::new(text, parsed),
            proto3: parsed.syntax.as_deref() == Some("proto3"),
            pool: file.parent_pool(),
            compiled: file.file_descriptor_proto(),
        }
    }

    fn file(&self, parsed: &FileDescriptorProto) -> FileElem {
        let compiled = self.compiled;
        let syntax = match parsed.syntax.as_deref() {
            Some(syntax) => Some(syntax.to_owned()),
            // protox-parse records an explicit `syntax = "proto2";` only as a position.
            None if self.spans.has(&[tag::FILE_SYNTAX]) => Some("proto2".to_owned()),
            None => None,
        };
        let mut element = FileElem {
            syntax,
            package: parsed.package.clone().filter(|package| !package.is_empty()),
            ..FileElem::default()
        };
        for (i, import) in parsed.dependency.iter().enumerate() {
            let i = index(i);
            if parsed.public_dependency.contains(&i) {
                element.public_imports.push(import.clone());
            } else if parsed.weak_dependency.contains(&i) {
                element.weak_imports.push(import.clone());
            } else {
                element.imports.push(import.clone());
            }
        }
        element.options = self.options(
            uninterpreted(parsed.options.as_ref().map(|o| &o.uninterpreted_option)),
            &[tag::FILE_OPTIONS],
        );
        for (i, message) in parsed.message_type.iter().enumerate() {
            element.messages.push(self.message(
                message,
                compiled.message_type.get(i),
                &[tag::FILE_MESSAGE_TYPE, index(i)],
            ));
        }
        for (i, enumeration) in parsed.enum_type.iter().enumerate() {
            element
                .enums
                .push(self.enumeration(enumeration, &[tag::FILE_ENUM_TYPE, index(i)]));
        }
        element.extends = self.extends(
            &parsed.extension,
            &compiled.extension,
            &[],
            tag::FILE_EXTENSION,
        );
        for (i, service) in parsed.service.iter().enumerate() {
            element.services.push(self.service(
                service,
                compiled.service.get(i),
                &[tag::FILE_SERVICE, index(i)],
            ));
        }
        element
    }

    /// The options at `options_path` (`element path + [options tag]`).
    fn options(&self, options: &[UninterpretedOption], options_path: &[i32]) -> Vec<OptionElem> {
        options
            .iter()
            .enumerate()
            .map(|(i, option)| {
                let path = path_with(options_path, &[tag::UNINTERPRETED_OPTION, index(i)]);
                option_from_uninterpreted(option, self.spans.text(&path))
            })
            .collect()
    }

    fn message(
        &self,
        parsed: &DescriptorProto,
        compiled: Option<&DescriptorProto>,
        path: &[i32],
    ) -> MessageElem {
        let mut element = MessageElem {
            name: parsed.name().to_owned(),
            ..MessageElem::default()
        };
        let is_group_field =
            |field: &FieldDescriptorProto| field.r#type == Some(ProtoType::Group as i32);
        // Nested messages that are not written as messages: map entries and group bodies.
        let hidden = |nested: &DescriptorProto| {
            nested.options.as_ref().and_then(|o| o.map_entry) == Some(true)
                || parsed.field.iter().any(|field| {
                    is_group_field(field) && field.type_name.as_deref() == nested.name.as_deref()
                })
        };
        let synthetic = |oneof: usize| {
            parsed.field.iter().any(|field| {
                field.oneof_index == Some(index(oneof)) && field.proto3_optional == Some(true)
            })
        };
        let real_oneof = |field: &FieldDescriptorProto| {
            field
                .oneof_index
                .filter(|_| field.proto3_optional != Some(true))
                .and_then(|i| usize::try_from(i).ok())
        };
        let mut oneof_fields: Vec<Vec<FieldElem>> = vec![Vec::new(); parsed.oneof_decl.len()];
        let mut oneof_groups: Vec<Vec<GroupElem>> = vec![Vec::new(); parsed.oneof_decl.len()];
        for (k, field) in parsed.field.iter().enumerate() {
            let field_path = path_with(path, &[tag::MESSAGE_FIELD, index(k)]);
            let compiled_field = compiled.and_then(|c| c.field.get(k));
            let oneof = real_oneof(field);
            if is_group_field(field) {
                let group = self.group(field, oneof.is_some(), parsed, compiled, path);
                match oneof.and_then(|i| oneof_groups.get_mut(i)) {
                    Some(groups) => groups.push(group),
                    None => element.groups.push(group),
                }
                continue;
            }
            let built = self.field(
                field,
                compiled_field,
                &field_path,
                Some(parsed),
                oneof.is_some(),
            );
            match oneof.and_then(|i| oneof_fields.get_mut(i)) {
                Some(fields) => fields.push(built),
                None => element.fields.push(built),
            }
        }
        for (i, ((oneof, fields), groups)) in parsed
            .oneof_decl
            .iter()
            .zip(oneof_fields)
            .zip(oneof_groups)
            .enumerate()
        {
            if synthetic(i) {
                continue;
            }
            element.oneofs.push(OneofElem {
                name: oneof.name().to_owned(),
                options: self.options(
                    uninterpreted(oneof.options.as_ref().map(|o| &o.uninterpreted_option)),
                    &path_with(
                        path,
                        &[tag::MESSAGE_ONEOF_DECL, index(i), tag::ONEOF_OPTIONS],
                    ),
                ),
                fields,
                groups,
            });
        }
        element.reserveds = self.reserveds(
            path,
            (tag::MESSAGE_RESERVED_RANGE, tag::MESSAGE_RESERVED_NAME),
            parsed
                .reserved_range
                .iter()
                .map(|range| (range.start(), range.end().saturating_sub(1)))
                .collect(),
            &parsed.reserved_name,
        );
        let range_path = path_with(path, &[tag::MESSAGE_EXTENSION_RANGE]);
        for statement in self
            .spans
            .statements(&range_path, parsed.extension_range.len())
        {
            let mut values = Vec::new();
            let mut options = Vec::new();
            for (position, &i) in statement.iter().enumerate() {
                let Some(range) = parsed.extension_range.get(i) else {
                    continue;
                };
                let item_path = path_with(&range_path, &[index(i)]);
                values.push(self.range_value(
                    range.start(),
                    range.end().saturating_sub(1),
                    &item_path,
                ));
                if position == 0 {
                    options = self.options(
                        uninterpreted(range.options.as_ref().map(|o| &o.uninterpreted_option)),
                        &path_with(&item_path, &[tag::EXTENSION_RANGE_OPTIONS]),
                    );
                }
            }
            element.extensions.push(ExtensionsElem { values, options });
        }
        element.extends = self.extends(
            &parsed.extension,
            compiled.map_or(&[][..], |c| c.extension.as_slice()),
            path,
            tag::MESSAGE_EXTENSION,
        );
        for (j, nested) in parsed.nested_type.iter().enumerate() {
            if hidden(nested) {
                continue;
            }
            element.messages.push(self.message(
                nested,
                compiled.and_then(|c| c.nested_type.get(j)),
                &path_with(path, &[tag::MESSAGE_NESTED_TYPE, index(j)]),
            ));
        }
        for (j, nested) in parsed.enum_type.iter().enumerate() {
            element.enums.push(self.enumeration(
                nested,
                &path_with(path, &[tag::MESSAGE_ENUM_TYPE, index(j)]),
            ));
        }
        element.options = self.options(
            uninterpreted(parsed.options.as_ref().map(|o| &o.uninterpreted_option)),
            &path_with(path, &[tag::MESSAGE_OPTIONS]),
        );
        element
    }

    fn group(
        &self,
        field: &FieldDescriptorProto,
        in_oneof: bool,
        owner: &DescriptorProto,
        compiled_owner: Option<&DescriptorProto>,
        owner_path: &[i32],
    ) -> GroupElem {
        let label = if in_oneof {
            None
        } else {
            Some(match field.label() {
                ProtoLabel::Required => FieldLabel::Required,
                ProtoLabel::Repeated => FieldLabel::Repeated,
                ProtoLabel::Optional => FieldLabel::Optional,
            })
        };
        let name = field.type_name.clone().unwrap_or_default();
        let mut fields = Vec::new();
        if let Some(j) = owner
            .nested_type
            .iter()
            .position(|nested| nested.name.as_deref() == Some(name.as_str()))
        {
            let body_path = path_with(owner_path, &[tag::MESSAGE_NESTED_TYPE, index(j)]);
            let compiled_body = compiled_owner.and_then(|c| c.nested_type.get(j));
            if let Some(body) = owner.nested_type.get(j) {
                for (k, inner) in body.field.iter().enumerate() {
                    fields.push(self.field(
                        inner,
                        compiled_body.and_then(|c| c.field.get(k)),
                        &path_with(&body_path, &[tag::MESSAGE_FIELD, index(k)]),
                        Some(body),
                        false,
                    ));
                }
            }
        }
        GroupElem {
            label,
            name,
            tag: field.number(),
            fields,
        }
    }

    fn field(
        &self,
        parsed: &FieldDescriptorProto,
        compiled: Option<&FieldDescriptorProto>,
        path: &[i32],
        owner: Option<&DescriptorProto>,
        in_oneof: bool,
    ) -> FieldElem {
        let map_entry = parsed
            .type_name
            .as_deref()
            .filter(|_| parsed.label() == ProtoLabel::Repeated)
            .and_then(|name| {
                owner?.nested_type.iter().find(|nested| {
                    nested.name.as_deref() == Some(name)
                        && nested.options.as_ref().and_then(|o| o.map_entry) == Some(true)
                })
            });
        let (label, ty) = match map_entry {
            Some(entry) => {
                let key = entry.field.first().map(written_type).unwrap_or_default();
                let value = entry.field.get(1).map(written_type).unwrap_or_default();
                (None, format!("map<{key}, {value}>"))
            }
            None => {
                let label = if in_oneof {
                    None
                } else {
                    match parsed.label() {
                        ProtoLabel::Required => Some(FieldLabel::Required),
                        ProtoLabel::Repeated => Some(FieldLabel::Repeated),
                        ProtoLabel::Optional
                            if !self.proto3 || parsed.proto3_optional == Some(true) =>
                        {
                            Some(FieldLabel::Optional)
                        }
                        ProtoLabel::Optional => None,
                    }
                };
                (label, written_type(parsed))
            }
        };
        let (normalized_ty, normalized_is_map) = normalized_type(
            self.pool,
            compiled.and_then(|c| c.type_name.as_deref()),
            &ty,
        );
        let default = parsed.default_value.as_ref().map(|fallback| {
            let raw = self
                .spans
                .text(&path_with(path, &[tag::FIELD_DEFAULT_VALUE]));
            source_default(parsed, raw, fallback)
        });
        FieldElem {
            label,
            ty,
            normalized_ty,
            normalized_is_map,
            name: parsed.name().to_owned(),
            tag: parsed.number(),
            default,
            json_name: parsed.json_name.as_deref().map(escape_str),
            options: self.options(
                uninterpreted(parsed.options.as_ref().map(|o| &o.uninterpreted_option)),
                &path_with(path, &[tag::FIELD_OPTIONS]),
            ),
        }
    }

    /// The `extend` blocks among `fields` (the extensions at `path + [extension_tag, i]`).
    fn extends(
        &self,
        fields: &[FieldDescriptorProto],
        compiled: &[FieldDescriptorProto],
        path: &[i32],
        extension_tag: i32,
    ) -> Vec<ExtendElem> {
        let block_path = path_with(path, &[extension_tag]);
        let mut extends = Vec::new();
        for block in self.spans.statements(&block_path, fields.len()) {
            let Some(&first) = block.first() else {
                continue;
            };
            let name = fields
                .get(first)
                .and_then(|field| field.extendee.clone())
                .unwrap_or_default();
            let normalized_name = qualified(
                compiled
                    .get(first)
                    .and_then(|field| field.extendee.as_deref()),
                &name,
            );
            let built = block
                .iter()
                .filter_map(|&i| {
                    let field = fields.get(i)?;
                    Some(self.field(
                        field,
                        compiled.get(i),
                        &path_with(&block_path, &[index(i)]),
                        None,
                        false,
                    ))
                })
                .collect();
            extends.push(ExtendElem {
                name,
                normalized_name,
                fields: built,
            });
        }
        extends
    }

    /// `reserved` statements, numbers and names in source order. `ranges` are inclusive.
    fn reserveds(
        &self,
        path: &[i32],
        (range_tag, name_tag): (i32, i32),
        ranges: Vec<(i32, i32)>,
        names: &[String],
    ) -> Vec<Vec<RangeValue>> {
        let range_path = path_with(path, &[range_tag]);
        let name_path = path_with(path, &[name_tag]);
        let mut statements: Vec<(usize, Vec<RangeValue>)> = Vec::new();
        for statement in self.spans.statements(&range_path, ranges.len()) {
            let start = statement
                .first()
                .map_or(usize::MAX, |&i| self.spans.statement_start(&range_path, i));
            let values = statement
                .iter()
                .filter_map(|&i| {
                    let &(first, last) = ranges.get(i)?;
                    Some(self.range_value(first, last, &path_with(&range_path, &[index(i)])))
                })
                .collect();
            statements.push((start, values));
        }
        for statement in self.spans.statements(&name_path, names.len()) {
            let start = statement
                .first()
                .map_or(usize::MAX, |&i| self.spans.statement_start(&name_path, i));
            let values = statement
                .iter()
                .filter_map(|&i| names.get(i).map(|name| RangeValue::Name(name.clone())))
                .collect();
            statements.push((start, values));
        }
        statements.sort_by_key(|(start, _)| *start);
        statements.into_iter().map(|(_, values)| values).collect()
    }

    /// One number or range; `n to n` stays a range when it was written so.
    fn range_value(&self, first: i32, last: i32, item_path: &[i32]) -> RangeValue {
        if first != last {
            return RangeValue::Range(first, last);
        }
        let written_as_range = self.spans.text(item_path).is_some_and(|text| {
            tokenize(text)
                .iter()
                .any(|token| *token == Tok::Ident("to".to_owned()))
        });
        if written_as_range {
            RangeValue::Range(first, last)
        } else {
            RangeValue::Int(first)
        }
    }

    fn enumeration(&self, parsed: &EnumDescriptorProto, path: &[i32]) -> EnumElem {
        let constants = parsed
            .value
            .iter()
            .enumerate()
            .map(|(k, value)| ConstantElem {
                name: value.name().to_owned(),
                tag: value.number(),
                options: self.options(
                    uninterpreted(value.options.as_ref().map(|o| &o.uninterpreted_option)),
                    &path_with(path, &[tag::ENUM_VALUE, index(k), tag::ENUM_VALUE_OPTIONS]),
                ),
            })
            .collect();
        EnumElem {
            name: parsed.name().to_owned(),
            reserveds: self.reserveds(
                path,
                (tag::ENUM_RESERVED_RANGE, tag::ENUM_RESERVED_NAME),
                parsed
                    .reserved_range
                    .iter()
                    .map(|range| (range.start(), range.end()))
                    .collect(),
                &parsed.reserved_name,
            ),
            options: self.options(
                uninterpreted(parsed.options.as_ref().map(|o| &o.uninterpreted_option)),
                &path_with(path, &[tag::ENUM_OPTIONS]),
            ),
            constants,
        }
    }

    fn service(
        &self,
        parsed: &ServiceDescriptorProto,
        compiled: Option<&ServiceDescriptorProto>,
        path: &[i32],
    ) -> ServiceElem {
        let rpcs = parsed
            .method
            .iter()
            .enumerate()
            .map(|(j, method)| {
                let compiled_method = compiled.and_then(|c| c.method.get(j));
                RpcElem {
                    name: method.name().to_owned(),
                    request: method.input_type().to_owned(),
                    normalized_request: qualified(
                        compiled_method.and_then(|m| m.input_type.as_deref()),
                        method.input_type(),
                    ),
                    request_streaming: method.client_streaming(),
                    response: method.output_type().to_owned(),
                    normalized_response: qualified(
                        compiled_method.and_then(|m| m.output_type.as_deref()),
                        method.output_type(),
                    ),
                    response_streaming: method.server_streaming(),
                    options: self.options(
                        uninterpreted(method.options.as_ref().map(|o| &o.uninterpreted_option)),
                        &path_with(path, &[tag::SERVICE_METHOD, index(j), tag::METHOD_OPTIONS]),
                    ),
                }
            })
            .collect();
        ServiceElem {
            name: parsed.name().to_owned(),
            options: self.options(
                uninterpreted(parsed.options.as_ref().map(|o| &o.uninterpreted_option)),
                &path_with(path, &[tag::SERVICE_OPTIONS]),
            ),
            rpcs,
        }
    }
}

/// A field's `default` as written, typed as Confluent types it from the field type.
fn source_default(field: &FieldDescriptorProto, raw: Option<&str>, fallback: &str) -> OptValue {
    let raw_scalar = || {
        raw.and_then(scalar_text)
            .unwrap_or_else(|| fallback.to_owned())
    };
    if field
        .type_name
        .as_deref()
        .is_some_and(|name| !name.is_empty())
    {
        return OptValue::Enum(raw_scalar());
    }
    match field.r#type.and_then(|ty| ProtoType::try_from(ty).ok()) {
        Some(ProtoType::String) => OptValue::Str(escape_str(fallback)),
        Some(ProtoType::Bytes) => {
            let bytes = raw.and_then(|raw| {
                let mut bytes = Vec::new();
                for token in tokenize(raw) {
                    match token {
                        Tok::Str(part) => bytes.extend(part),
                        _ => return None,
                    }
                }
                Some(bytes)
            });
            match bytes {
                Some(bytes) => OptValue::Str(escape_bytes(&bytes)),
                None => OptValue::Str(escape_str(fallback)),
            }
        }
        Some(ProtoType::Bool) => OptValue::Bool(raw_scalar()),
        _ => OptValue::Number(raw_scalar()),
    }
}

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

struct DescriptorBuilder<'a> {
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
    fn new(proto: &FileDescriptorProto, bytes: &[u8], file: &'a FileDescriptor) -> Self {
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

    fn file(&self, proto: &FileDescriptorProto) -> FileElem {
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
fn java_float_string(value: f64, shortest: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalise_like_decimal_format() {
        for (raw, expected) in [
            ("123", "123"),
            ("0123", "83"),
            ("0x123", "291"),
            ("0123.0", "123"),
            ("123.", "123"),
            ("123.0", "123"),
            ("123.00", "123"),
            ("123e1", "1230"),
            ("123E1", "1230"),
            ("123E+1", "1230"),
            ("123E-1", "12.3"),
            (".123E+3", "123"),
            ("1.23E+3", "1230"),
            ("12.3E+3", "12300"),
            ("123.E+3", "123000"),
            ("123.4E+3", "123400"),
            ("123.45E+3", "123450"),
            ("123.456E+3", "123456"),
            ("123.4567E+2", "12345.67"),
            ("-2.0", "-2"),
            ("-5", "-5"),
            ("inf", "inf"),
            ("-inf", "-inf"),
            ("nan", "nan"),
        ] {
            assert_eq!(normalize_number(raw), expected, "{raw}");
        }
    }

    #[test]
    fn half_even_rounding() {
        assert_eq!(round_half_even("1.0005", 3), "1");
        assert_eq!(round_half_even("1.0015", 3), "1.002");
        assert_eq!(round_half_even("1.00151", 3), "1.002");
        assert_eq!(round_half_even("9.9996", 3), "10");
        assert_eq!(round_half_even("0.5", 3), "0.5");
        assert_eq!(round_half_even("12", 3), "12");
    }

    #[test]
    fn escapes_follow_confluent() {
        assert_eq!(
            escape_str("a\\b\"c'd\ne\u{7}\u{1}"),
            "a\\\\b\\\"c\\'d\\ne\\a\\001"
        );
        assert_eq!(escape_bytes(&[b'a', 0xff]), "a\\377");
    }

    #[test]
    fn aggregate_values_read_like_wire() {
        let tokens = tokenize("(x) = { a: 1 b: \"s\" c { d: true } e: [1, 2] [ext.name]: X a: 3 }");
        let equals = tokens
            .iter()
            .position(|t| *t == Tok::Punct('='))
            .expect("an equals sign");
        let value = TokParser {
            tokens: &tokens,
            pos: equals + 1,
        }
        .value()
        .expect("an aggregate");
        assert_eq!(
            value,
            OptValue::Map(vec![
                (
                    "a".to_owned(),
                    OptValue::List(vec![
                        OptValue::Number("1".to_owned()),
                        OptValue::Number("3".to_owned())
                    ])
                ),
                ("b".to_owned(), OptValue::Str("s".to_owned())),
                (
                    "c".to_owned(),
                    OptValue::Map(vec![("d".to_owned(), OptValue::Bool("true".to_owned()))])
                ),
                (
                    "e".to_owned(),
                    OptValue::List(vec![
                        OptValue::Number("1".to_owned()),
                        OptValue::Number("2".to_owned())
                    ])
                ),
                ("[ext.name]".to_owned(), OptValue::Enum("X".to_owned())),
            ])
        );
    }

    #[test]
    fn strings_unescape_then_escape() {
        let tokens = tokenize(r#""a\x41\101\u00e9\n" 'b'"#);
        assert_eq!(
            tokens,
            vec![
                Tok::Str("aAA\u{e9}\n".as_bytes().to_vec()),
                Tok::Str(b"b".to_vec())
            ]
        );
    }

    #[test]
    fn indentation_follows_java_split() {
        let mut out = String::new();
        append_indented(&mut out, "a\n\nb\n\n");
        assert_eq!(out, "  a\n  \n  b\n");
        let mut out = String::new();
        append_indented(&mut out, "");
        assert_eq!(out, "  \n");
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_float_string(1.5, "1.5"), "1.5");
        assert_eq!(java_float_string(2.0, "2"), "2.0");
        assert_eq!(java_float_string(1e10, "10000000000"), "1.0E10");
        assert_eq!(java_float_string(1.5e-5, "0.000015"), "1.5E-5");
    }
}
