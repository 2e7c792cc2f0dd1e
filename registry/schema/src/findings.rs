//! What a compatibility check finds: the direction a comparison ran, the rule broken (named
//! as Confluent names it) and one incompatibility with its path. Shared by the per-format
//! checkers (`avro::compat`, `protobuf::compat`) and the level-driven walk (`compat`), which
//! therefore do not import each other both ways.

use std::fmt;
use std::str::FromStr;

/// Which way a comparison ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema reads data written with the old one.
    Backward,
    /// The old schema reads data written with the new one.
    Forward,
}

/// The rule an incompatibility breaks, named as Confluent names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    SchemaTypeChanged,
    // Avro (Avro Java `SchemaCompatibility` incompatibility types).
    NameMismatch,
    FixedSizeMismatch,
    MissingEnumSymbols,
    ReaderFieldMissingDefaultValue,
    TypeMismatch,
    MissingUnionBranch,
    // Protobuf (Confluent's protobuf diff types that are not compatible).
    PackageChanged,
    MessageRemoved,
    FieldKindChanged,
    FieldScalarKindChanged,
    FieldNamedTypeChanged,
    FieldNumericLabelChanged,
    RequiredFieldAdded,
    RequiredFieldRemoved,
    OneofFieldRemoved,
    MultipleFieldsMovedToOneof,
    FieldMovedToExistingOneof,
}

impl Rule {
    /// The stable upper-snake-case name (Confluent's `errorType`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SchemaTypeChanged => "SCHEMA_TYPE_CHANGED",
            Rule::NameMismatch => "NAME_MISMATCH",
            Rule::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
            Rule::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            Rule::ReaderFieldMissingDefaultValue => "READER_FIELD_MISSING_DEFAULT_VALUE",
            Rule::TypeMismatch => "TYPE_MISMATCH",
            Rule::MissingUnionBranch => "MISSING_UNION_BRANCH",
            Rule::PackageChanged => "PACKAGE_CHANGED",
            Rule::MessageRemoved => "MESSAGE_REMOVED",
            Rule::FieldKindChanged => "FIELD_KIND_CHANGED",
            Rule::FieldScalarKindChanged => "FIELD_SCALAR_KIND_CHANGED",
            Rule::FieldNamedTypeChanged => "FIELD_NAMED_TYPE_CHANGED",
            Rule::FieldNumericLabelChanged => "FIELD_NUMERIC_LABEL_CHANGED",
            Rule::RequiredFieldAdded => "REQUIRED_FIELD_ADDED",
            Rule::RequiredFieldRemoved => "REQUIRED_FIELD_REMOVED",
            Rule::OneofFieldRemoved => "ONEOF_FIELD_REMOVED",
            Rule::MultipleFieldsMovedToOneof => "MULTIPLE_FIELDS_MOVED_TO_ONEOF",
            Rule::FieldMovedToExistingOneof => "FIELD_MOVED_TO_EXISTING_ONEOF",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const ALL: [Rule; 18] = [
            Rule::SchemaTypeChanged,
            Rule::NameMismatch,
            Rule::FixedSizeMismatch,
            Rule::MissingEnumSymbols,
            Rule::ReaderFieldMissingDefaultValue,
            Rule::TypeMismatch,
            Rule::MissingUnionBranch,
            Rule::PackageChanged,
            Rule::MessageRemoved,
            Rule::FieldKindChanged,
            Rule::FieldScalarKindChanged,
            Rule::FieldNamedTypeChanged,
            Rule::FieldNumericLabelChanged,
            Rule::RequiredFieldAdded,
            Rule::RequiredFieldRemoved,
            Rule::OneofFieldRemoved,
            Rule::MultipleFieldsMovedToOneof,
            Rule::FieldMovedToExistingOneof,
        ];
        ALL.into_iter()
            .find(|rule| rule.as_str() == text)
            .ok_or_else(|| format!("unknown rule '{text}'"))
    }
}

/// One reason why the candidate cannot replace a previous version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub rule: Rule,
    pub direction: Direction,
    /// Readable path into the schema, e.g. `Order.items[].price` or `shop.v1.Order.price`.
    pub path: String,
    /// Confluent-style location: a JSON pointer for Avro (`/fields/1/type`), `#/Msg/3` for
    /// Protobuf.
    pub location: String,
    /// What the old schema has there (type, symbols, size...), if anything.
    pub old: Option<String>,
    /// What the new schema has there, if anything.
    pub new: Option<String>,
    /// One sentence in terms of "old" and "new" schema.
    pub description: String,
    /// The version compared against, when known.
    pub old_version: Option<u32>,
}

impl Incompatibility {
    /// The message in Confluent's `verbose=true` shape, so existing tooling parses it.
    pub fn confluent_message(&self) -> String {
        let mut message = format!(
            "{{errorType:'{}', description:'{}', additionalInfo:'{}'}}",
            self.rule, self.description, self.path
        );
        if let Some(version) = self.old_version {
            message.push_str(&format!(" {{oldSchemaVersion: {version}}}"));
        }
        message
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.rule, self.path, self.description)?;
        match (&self.old, &self.new) {
            (Some(old), Some(new)) => write!(f, " (old: {old}, new: {new})"),
            (Some(old), None) => write!(f, " (old: {old})"),
            (None, Some(new)) => write!(f, " (new: {new})"),
            (None, None) => Ok(()),
        }
    }
}
