//! The printer of `ProtobufSchemaUtils.toString` (canonical and normalised text) and its
//! text helpers: bracketed option lists, indentation, string and bytes escaping.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::DescriptorPool;

use super::numbers::normalize_number;
use super::options::{merge_option, transform};
use super::tree::{
    ConstantElem, EnumElem, ExtendElem, ExtensionsElem, FieldElem, FileElem, GroupElem,
    MessageElem, OneofElem, OptValue, OptionElem, RangeValue, RpcElem, ServiceElem,
};
use super::MAX_TAG_VALUE;

// ---- the printer (ProtobufSchemaUtils.toString) --------------------------------------------

pub(super) struct Printer<'a> {
    normalize: bool,
    pool: &'a DescriptorPool,
    /// Package parts, then the names of the enclosing messages and enums.
    scope: Vec<String>,
}

impl<'a> Printer<'a> {
    pub(super) fn new(normalize: bool, pool: &'a DescriptorPool, file: &FileElem) -> Self {
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

    pub(super) fn file(&mut self, file: &FileElem) -> String {
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
pub(super) fn append_indented(sb: &mut String, value: &str) {
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
pub(super) fn escape_str(input: &str) -> String {
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
pub(super) fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape_str(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\{byte:03o}");
        }
    }
    out
}
