//! The element tree from `.proto` source, as wire's parser builds it: protox-parse's
//! `FileDescriptorProto` plus source positions for what a descriptor does not keep.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FileDescriptor};
use prost_types::field_descriptor_proto::{Label as ProtoLabel, Type as ProtoType};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto, UninterpretedOption,
};

use super::printer::{escape_bytes, escape_str};
use super::tokens::{option_from_uninterpreted, scalar_text, tokenize, Tok};
use super::tree::{
    ConstantElem, EnumElem, ExtendElem, ExtensionsElem, FieldElem, FieldLabel, FileElem, GroupElem,
    MessageElem, OneofElem, OptValue, OptionElem, RangeValue, RpcElem, ServiceElem,
};
use super::types::{index, normalized_type, path_with, qualified, uninterpreted, written_type};

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
            // Statements at one path are sorted and do not overlap: the owner is the last
            // one starting at or before the item, if it reaches past it (a binary search;
            // a linear scan per item was quadratic in the statements of a large schema).
            let owner = span.and_then(|(start, end)| {
                statements
                    .partition_point(|(s, _)| *s <= start)
                    .checked_sub(1)
                    .filter(|&i| statements.get(i).is_some_and(|(_, e)| end <= *e))
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

pub(super) struct SourceBuilder<'a> {
    spans: Spans<'a>,
    proto3: bool,
    pool: &'a DescriptorPool,
    compiled: &'a FileDescriptorProto,
}

impl<'a> SourceBuilder<'a> {
    pub(super) fn new(
        text: &'a str,
        parsed: &FileDescriptorProto,
        file: &'a FileDescriptor,
    ) -> Self {
        Self {
            spans: Spans::new(text, parsed),
            proto3: parsed.syntax.as_deref() == Some("proto3"),
            pool: file.parent_pool(),
            compiled: file.file_descriptor_proto(),
        }
    }

    pub(super) fn file(&self, parsed: &FileDescriptorProto) -> FileElem {
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
