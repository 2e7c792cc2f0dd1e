//! Protobuf compatibility with Confluent's rules: messages are matched by name at each nesting
//! level, fields by tag number across the whole message (oneof members included), and only
//! the difference types Confluent classes as incompatible are reported. Enum changes, field
//! additions and removals, renames and message moves are wire-safe and pass.

use std::collections::{BTreeMap, HashSet};

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};

use super::ProtobufSchema;
use crate::findings::{Direction, Incompatibility, Rule};

/// Every incompatible difference between `original` and `update`, where data written with
/// `original` must stay readable by `update`. `direction` tells which one is the new schema
/// (Backward: `update`).
pub(crate) fn diff(
    original: &ProtobufSchema,
    update: &ProtobufSchema,
    direction: Direction,
) -> Vec<Incompatibility> {
    let mut differ = Differ {
        direction,
        compared_external: HashSet::new(),
        found: Vec::new(),
    };
    let original_package = original.file().package_name();
    let update_package = update.file().package_name();
    if original_package != update_package {
        differ.report(
            Rule::PackageChanged,
            "#/".to_owned(),
            String::new(),
            Some(original_package.to_owned()),
            Some(update_package.to_owned()),
            "The package of the schema changed".to_owned(),
        );
    }
    differ.compare_message_lists(
        original.file().messages().collect(),
        update.file().messages().collect(),
        "#",
    );
    differ.found
}

/// Confluent's scalar groups: kinds within one group are wire-compatible.
fn scalar_group(kind: &Kind) -> Option<u8> {
    match kind {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            Some(1)
        }
        Kind::Sint32 | Kind::Sint64 => Some(2),
        Kind::String | Kind::Bytes => Some(3),
        Kind::Fixed32 | Kind::Sfixed32 => Some(4),
        Kind::Fixed64 | Kind::Sfixed64 => Some(5),
        Kind::Float => Some(6),
        Kind::Double => Some(7),
        Kind::Message(_) => None,
    }
}

fn kind_name(field: &FieldDescriptor) -> String {
    let base = match field.kind() {
        Kind::Message(message) if field.is_map() => {
            let key = message.map_entry_key_field();
            let value = message.map_entry_value_field();
            return format!("map<{}, {}>", kind_name(&key), kind_name(&value));
        }
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(inner) => inner.full_name().to_owned(),
        scalar => super::scalar_name(&scalar).to_owned(),
    };
    match field.cardinality() {
        Cardinality::Repeated => format!("repeated {base}"),
        Cardinality::Required => format!("required {base}"),
        Cardinality::Optional => base,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldShape {
    Scalar,
    Message,
    Map,
}

fn field_shape(field: &FieldDescriptor) -> FieldShape {
    if field.is_map() {
        FieldShape::Map
    } else if matches!(field.kind(), Kind::Message(_)) {
        FieldShape::Message
    } else {
        FieldShape::Scalar
    }
}

/// The real (non-synthetic) oneof a field belongs to.
fn real_oneof(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|oneof| !oneof.is_synthetic())
        .map(|oneof| oneof.name().to_owned())
}

/// A field label as Confluent's parser (square/wire) records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Required,
    Repeated,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::Optional => "optional",
            Label::Required => "required",
            Label::Repeated => "repeated",
        }
    }
}

/// The label Confluent sees on `field`: `repeated` (maps excluded), `required`, `optional` (proto2,
/// or proto3 with an explicit `optional`), and none for a proto3 field without a label, a member
/// of a real oneof, or a map field.
fn confluent_label(field: &FieldDescriptor) -> Option<Label> {
    if field.is_map() {
        return None;
    }
    match field.cardinality() {
        Cardinality::Repeated => return Some(Label::Repeated),
        Cardinality::Required => return Some(Label::Required),
        Cardinality::Optional => {}
    }
    if real_oneof(field).is_some() {
        return None;
    }
    let proto3 = field
        .parent_file()
        .file_descriptor_proto()
        .syntax
        .as_deref()
        == Some("proto3");
    let explicit_optional = field.field_descriptor_proto().proto3_optional == Some(true);
    if proto3 && !explicit_optional {
        return None;
    }
    Some(Label::Optional)
}

/// A type name as the schema means it: names of types defined in the schema's own package
/// are taken relative to it, so a package rename is reported once, not at every field.
fn relative_type_name(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    let full = message.full_name();
    match full.strip_prefix(package) {
        Some(rest) if !package.is_empty() => rest.trim_start_matches('.').to_owned(),
        _ => full.to_owned(),
    }
}

struct Differ {
    direction: Direction,
    /// Pairs of externally defined messages already compared (stops recursion).
    compared_external: HashSet<(String, String)>,
    found: Vec<Incompatibility>,
}

impl Differ {
    fn report(
        &mut self,
        rule: Rule,
        location: String,
        path: String,
        original: Option<String>,
        update: Option<String>,
        description: String,
    ) {
        let (old, new) = match self.direction {
            Direction::Backward => (original, update),
            Direction::Forward => (update, original),
        };
        self.found.push(Incompatibility {
            rule,
            direction: self.direction,
            path,
            location,
            old,
            new,
            description,
            old_version: None,
        });
    }

    fn update_side(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "new",
            Direction::Forward => "old",
        }
    }

    fn original_side(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "old",
            Direction::Forward => "new",
        }
    }

    fn compare_message_lists(
        &mut self,
        original: Vec<MessageDescriptor>,
        update: Vec<MessageDescriptor>,
        location: &str,
    ) {
        for message in original.iter().filter(|message| !message.is_map_entry()) {
            let location = format!("{location}/{}", message.name());
            match update
                .iter()
                .find(|candidate| candidate.name() == message.name())
            {
                Some(updated) => self.compare_message(message, updated, &location),
                None => {
                    let description = format!(
                        "The message '{}' of the {} schema is missing in the {} schema",
                        message.full_name(),
                        self.original_side(),
                        self.update_side()
                    );
                    self.report(
                        Rule::MessageRemoved,
                        location,
                        message.full_name().to_owned(),
                        Some(message.full_name().to_owned()),
                        None,
                        description,
                    );
                }
            }
        }
    }

    fn compare_message(
        &mut self,
        original: &MessageDescriptor,
        update: &MessageDescriptor,
        location: &str,
    ) {
        self.compare_message_lists(
            original.child_messages().collect(),
            update.child_messages().collect(),
            location,
        );
        let update_fields: BTreeMap<u32, FieldDescriptor> = update
            .fields()
            .map(|field| (field.number(), field))
            .collect();
        let original_fields: BTreeMap<u32, FieldDescriptor> = original
            .fields()
            .map(|field| (field.number(), field))
            .collect();

        for (number, field) in &original_fields {
            let field_location = match real_oneof(field) {
                Some(oneof) => format!("{location}/{oneof}/{number}"),
                None => format!("{location}/{number}"),
            };
            let path = format!("{}.{}", original.full_name(), field.name());
            match update_fields.get(number) {
                Some(updated) => self.compare_field(field, updated, field_location, path),
                None => self.field_removed(
                    field,
                    &original_fields,
                    &update_fields,
                    field_location,
                    path,
                ),
            }
        }
        for (number, field) in &update_fields {
            if !original_fields.contains_key(number) && field.cardinality() == Cardinality::Required
            {
                let description = format!(
                    "The required field '{}' (tag {number}) of the {} schema is missing in the {} schema",
                    field.name(),
                    self.update_side(),
                    self.original_side()
                );
                self.report(
                    Rule::RequiredFieldAdded,
                    format!("{location}/{number}"),
                    format!("{}.{}", update.full_name(), field.name()),
                    None,
                    Some(kind_name(field)),
                    description,
                );
            }
        }
        self.check_oneof_moves(&original_fields, update, location);
    }

    fn field_removed(
        &mut self,
        field: &FieldDescriptor,
        original_fields: &BTreeMap<u32, FieldDescriptor>,
        update_fields: &BTreeMap<u32, FieldDescriptor>,
        location: String,
        path: String,
    ) {
        if field.cardinality() == Cardinality::Required {
            let description = format!(
                "The required field '{}' (tag {}) of the {} schema was removed in the {} schema",
                field.name(),
                field.number(),
                self.original_side(),
                self.update_side()
            );
            self.report(
                Rule::RequiredFieldRemoved,
                location,
                path,
                Some(kind_name(field)),
                None,
                description,
            );
            return;
        }
        let Some(oneof) = real_oneof(field) else {
            return;
        };
        // Removing a member while the rest of its oneof survives changes which member a
        // reader sees; removing the whole oneof is a plain deletion.
        let oneof_survives = original_fields.values().any(|other| {
            other.number() != field.number()
                && real_oneof(other).as_deref() == Some(oneof.as_str())
                && update_fields.contains_key(&other.number())
        });
        if oneof_survives {
            let description = format!(
                "The field '{}' (tag {}) was removed from oneof '{oneof}' while the oneof remains in the {} schema",
                field.name(),
                field.number(),
                self.update_side()
            );
            self.report(
                Rule::OneofFieldRemoved,
                location,
                path,
                Some(kind_name(field)),
                None,
                description,
            );
        }
    }

    fn compare_field(
        &mut self,
        original: &FieldDescriptor,
        update: &FieldDescriptor,
        location: String,
        path: String,
    ) {
        let original_shape = field_shape(original);
        let update_shape = field_shape(update);
        if original_shape != update_shape {
            let description = format!(
                "The kind of the field at path '{location}' changed from {original_shape:?} in the {} schema to {update_shape:?} in the {} schema",
                self.original_side(),
                self.update_side()
            );
            self.report(
                Rule::FieldKindChanged,
                location,
                path,
                Some(kind_name(original)),
                Some(kind_name(update)),
                description,
            );
            return;
        }
        match original_shape {
            FieldShape::Scalar => {
                if scalar_group(&original.kind()) != scalar_group(&update.kind()) {
                    let description = format!(
                        "The kind of a SCALAR field at path '{location}' in the {} schema does not match its kind in the {} schema",
                        self.update_side(),
                        self.original_side()
                    );
                    self.report(
                        Rule::FieldScalarKindChanged,
                        location,
                        path,
                        Some(kind_name(original)),
                        Some(kind_name(update)),
                        description,
                    );
                    // Confluent compares labels only when the scalar kind group is unchanged.
                    return;
                }
                self.check_label(original, update, location, path);
            }
            FieldShape::Message => self.compare_named_types(original, update, location, path),
            FieldShape::Map => {
                if let (Kind::Message(original_entry), Kind::Message(update_entry)) =
                    (original.kind(), update.kind())
                {
                    let key_location = format!("{location}/key");
                    self.compare_field(
                        &original_entry.map_entry_key_field(),
                        &update_entry.map_entry_key_field(),
                        key_location,
                        format!("{path}{{key}}"),
                    );
                    self.compare_field(
                        &original_entry.map_entry_value_field(),
                        &update_entry.map_entry_value_field(),
                        format!("{location}/value"),
                        format!("{path}{{}}"),
                    );
                }
            }
        }
    }

    /// Confluent's label rule (`FieldSchemaDiff.compareScalarTypes`): labels are compared only
    /// when both fields have one (see [`confluent_label`]); a change is incompatible for numeric
    /// kinds (enums and bools included) and compatible (`FIELD_STRING_OR_BYTES_LABEL_CHANGED`,
    /// not reported) for strings and bytes. Becoming or ceasing to be `required` is judged here
    /// like any other label change; REQUIRED_FIELD_ADDED/REMOVED only concern added or removed
    /// tags.
    fn check_label(
        &mut self,
        original: &FieldDescriptor,
        update: &FieldDescriptor,
        location: String,
        path: String,
    ) {
        let (Some(before), Some(after)) = (confluent_label(original), confluent_label(update))
        else {
            return;
        };
        if before == after {
            return;
        }
        if matches!(original.kind(), Kind::String | Kind::Bytes) {
            return;
        }
        let description = format!(
            "The label of the numeric field at path '{location}' changed from {} in the {} schema to {} in the {} schema",
            before.as_str(),
            self.original_side(),
            after.as_str(),
            self.update_side()
        );
        self.report(
            Rule::FieldNumericLabelChanged,
            location,
            path,
            Some(kind_name(original)),
            Some(kind_name(update)),
            description,
        );
    }

    fn compare_named_types(
        &mut self,
        original: &FieldDescriptor,
        update: &FieldDescriptor,
        location: String,
        path: String,
    ) {
        let (Kind::Message(original_type), Kind::Message(update_type)) =
            (original.kind(), update.kind())
        else {
            return;
        };
        let original_name = relative_type_name(&original_type);
        let update_name = relative_type_name(&update_type);
        if original_name != update_name {
            let description = format!(
                "The type of the field at path '{location}' changed from '{}' in the {} schema to '{}' in the {} schema",
                original_type.full_name(),
                self.original_side(),
                update_type.full_name(),
                self.update_side()
            );
            self.report(
                Rule::FieldNamedTypeChanged,
                location,
                path,
                Some(original_type.full_name().to_owned()),
                Some(update_type.full_name().to_owned()),
                description,
            );
            return;
        }
        // Types defined in the schema itself are compared where they are declared; types from
        // imports (references) are compared here, once per pair.
        let imported = original_type.parent_file().name() != original.parent_file().name()
            || update_type.parent_file().name() != update.parent_file().name();
        let key = (
            original_type.full_name().to_owned(),
            update_type.full_name().to_owned(),
        );
        if !imported || !self.compared_external.insert(key) {
            return;
        }
        let mut nested = Differ {
            direction: self.direction,
            compared_external: std::mem::take(&mut self.compared_external),
            found: Vec::new(),
        };
        nested.compare_message(
            &original_type,
            &update_type,
            &format!("#/{}", original_type.full_name()),
        );
        self.compared_external = nested.compared_external;
        if !nested.found.is_empty() {
            let reasons: Vec<String> = nested.found.iter().map(ToString::to_string).collect();
            let description = format!(
                "The imported type '{}' of the field at path '{location}' changed incompatibly: {}",
                original_type.full_name(),
                reasons.join("; ")
            );
            self.report(
                Rule::FieldNamedTypeChanged,
                location,
                path,
                Some(original_type.full_name().to_owned()),
                Some(update_type.full_name().to_owned()),
                description,
            );
        }
    }

    /// Fields that joined a oneof: one top-level field moving into a new oneof is safe; two or
    /// more, or a field joining members from another group, create new mutual exclusion.
    fn check_oneof_moves(
        &mut self,
        original_fields: &BTreeMap<u32, FieldDescriptor>,
        update: &MessageDescriptor,
        location: &str,
    ) {
        for oneof in update.oneofs().filter(|oneof| !oneof.is_synthetic()) {
            // Original group of each pre-existing member: None = top level, Some(oneof name).
            let members: Vec<(FieldDescriptor, Option<String>)> = oneof
                .fields()
                .filter_map(|field| {
                    original_fields
                        .get(&field.number())
                        .map(|before| (field.clone(), real_oneof(before)))
                })
                .collect();
            let moved_from_top: Vec<&FieldDescriptor> = members
                .iter()
                .filter(|(_, group)| group.is_none())
                .map(|(field, _)| field)
                .collect();
            let oneof_location = format!("{location}/{}", oneof.name());
            if moved_from_top.len() >= 2 {
                let names: Vec<&str> = moved_from_top.iter().map(|field| field.name()).collect();
                let description = format!(
                    "Fields [{}] were independent in the {} schema and share oneof '{}' in the {} schema",
                    names.join(", "),
                    self.original_side(),
                    oneof.name(),
                    self.update_side()
                );
                self.report(
                    Rule::MultipleFieldsMovedToOneof,
                    oneof_location,
                    format!("{}.{}", update.full_name(), oneof.name()),
                    None,
                    Some(oneof.name().to_owned()),
                    description,
                );
                continue;
            }
            // The group most members came from is the oneof's origin; anyone else joined it.
            let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
            for (_, group) in &members {
                *counts.entry(group.clone()).or_default() += 1;
            }
            if counts.len() < 2 {
                continue;
            }
            let origin: Option<String> = counts
                .iter()
                .filter_map(|(group, count)| group.clone().map(|name| (name, *count)))
                .max_by_key(|(_, count)| *count)
                .map(|(name, _)| name);
            for (field, group) in &members {
                if group.is_some() && *group == origin {
                    continue;
                }
                let description = format!(
                    "The field '{}' (tag {}) joined the existing oneof '{}' in the {} schema",
                    field.name(),
                    field.number(),
                    oneof.name(),
                    self.update_side()
                );
                self.report(
                    Rule::FieldMovedToExistingOneof,
                    format!("{oneof_location}/{}", field.number()),
                    format!("{}.{}", update.full_name(), field.name()),
                    group.clone(),
                    Some(oneof.name().to_owned()),
                    description,
                );
            }
        }
    }
}
