//! Compatibility levels, the report type and the level-driven walk over previous versions.
//!
//! One primitive does the work: "can `reader` read data written with `writer`", implemented
//! per format in `avro::compat` and `protobuf::compat`. BACKWARD asks it as (new, old),
//! FORWARD as (old, new), FULL both ways (forward findings first, as Confluent lists them).

use std::fmt;
use std::str::FromStr;

pub use crate::findings::{Direction, Incompatibility, Rule};
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
