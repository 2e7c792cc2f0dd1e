//! Compatibility levels, the report type and the level-driven walk over previous versions.
//!
//! One primitive does the work: "can `reader` read data written with `writer`", implemented
//! per format in `avro::compat` and `protobuf::compat`. BACKWARD asks it as (new, old),
//! FORWARD as (old, new), FULL both ways (forward findings first, as Confluent lists them).

use std::fmt;
use std::str::FromStr;

use crate::{ParsedKind, ParsedSchema};

/// How a new schema must relate to the versions registered before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether every live version is compared, not only the newest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compatibility level name that is not one of the seven.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid compatibility level '{0}': valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
pub struct InvalidLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = InvalidLevel;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| InvalidLevel(text.to_owned()))
    }
}

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

/// The outcome of a compatibility check: empty means compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatReport {
    pub level: CompatibilityLevel,
    /// Every incompatibility found against the first failing version.
    pub incompatibilities: Vec<Incompatibility>,
    /// How many previous versions were compared.
    pub versions_checked: usize,
}

impl CompatReport {
    pub fn is_compatible(&self) -> bool {
        self.incompatibilities.is_empty()
    }

    /// The messages for the registry's `verbose=true` answer.
    pub fn messages(&self) -> Vec<String> {
        let mut messages: Vec<String> = self
            .incompatibilities
            .iter()
            .map(Incompatibility::confluent_message)
            .collect();
        if !messages.is_empty() {
            messages.push(format!(
                "{{validateFields: 'false', compatibility: '{}'}}",
                self.level
            ));
        }
        messages
    }
}

/// A registered version the candidate is compared against.
#[derive(Debug, Clone, Copy)]
pub struct PreviousVersion<'a> {
    pub version: u32,
    pub schema: &'a ParsedSchema,
}

/// Checks `candidate` against `previous` (live versions, oldest first) at `level`, with
/// Confluent's semantics: non-transitive levels compare with the newest version only,
/// transitive ones with every version, newest first, stopping at the first version that fails
/// and reporting every incompatibility found against it.
pub fn check(
    previous: &[PreviousVersion<'_>],
    candidate: &ParsedSchema,
    level: CompatibilityLevel,
) -> CompatReport {
    let mut report = CompatReport {
        level,
        incompatibilities: Vec::new(),
        versions_checked: 0,
    };
    if level == CompatibilityLevel::None {
        return report;
    }
    let compared: Box<dyn Iterator<Item = &PreviousVersion<'_>>> = if level.is_transitive() {
        Box::new(previous.iter().rev())
    } else {
        Box::new(previous.last().into_iter())
    };
    for old in compared {
        report.versions_checked += 1;
        let mut found = check_pair(old.schema, candidate, level);
        if !found.is_empty() {
            for incompatibility in &mut found {
                incompatibility.old_version = Some(old.version);
            }
            report.incompatibilities = found;
            break;
        }
    }
    report
}

/// Compares one old schema with the candidate in the directions `level` asks for (its
/// transitivity is irrelevant here). Returns every incompatibility, forward ones first.
pub fn check_pair(
    old: &ParsedSchema,
    new: &ParsedSchema,
    level: CompatibilityLevel,
) -> Vec<Incompatibility> {
    let mut found = Vec::new();
    if level == CompatibilityLevel::None {
        return found;
    }
    match (&old.kind, &new.kind) {
        (ParsedKind::Avro(old), ParsedKind::Avro(new)) => {
            if level.checks_forward() {
                found.extend(crate::avro::compat::can_read(old, new, Direction::Forward));
            }
            if level.checks_backward() {
                found.extend(crate::avro::compat::can_read(new, old, Direction::Backward));
            }
        }
        (ParsedKind::Protobuf(old), ParsedKind::Protobuf(new)) => {
            if level.checks_forward() {
                found.extend(crate::protobuf::compat::diff(new, old, Direction::Forward));
            }
            if level.checks_backward() {
                found.extend(crate::protobuf::compat::diff(old, new, Direction::Backward));
            }
        }
        _ => found.push(Incompatibility {
            rule: Rule::SchemaTypeChanged,
            direction: Direction::Backward,
            path: String::new(),
            location: "/".to_owned(),
            old: Some(old.schema_type().to_string()),
            new: Some(new.schema_type().to_string()),
            description: "Incompatible because of different schema type".to_owned(),
            old_version: None,
        }),
    }
    found
}
