//! The registry's stored records and their JSON forms on disk.

use std::fmt;
use std::str::FromStr;

use herald_schema::{CompatibilityLevel, SchemaType};
use serde::{Deserialize, Serialize};

/// A reference from one schema to a version of another subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema as stored under its global ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    #[serde(with = "schema_type_text")]
    pub schema_type: SchemaType,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
    /// Hex digest of the schema's meaning plus its references: equal content, equal ID.
    pub content_key: String,
}

impl SchemaRecord {
    /// The body of `GET /schemas/ids/{id}`: `schemaType` omitted for Avro, `references`
    /// omitted when empty (what older clients expect). Rendered once per schema, at insert.
    pub fn id_response_json(&self) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        if self.schema_type != SchemaType::Avro {
            object.insert("schemaType".into(), self.schema_type.as_str().into());
        }
        if !self.references.is_empty() {
            object.insert(
                "references".into(),
                serde_json::to_value(&self.references).unwrap_or_default(),
            );
        }
        object.insert("schema".into(), self.text.clone().into());
        serde_json::to_vec(&object).unwrap_or_default()
    }
}

/// One version of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub id: u32,
    pub deleted: bool,
}

/// Compatibility configuration of the registry or of one subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    #[serde(default, with = "level_text", skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<CompatibilityLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

/// What writes a subject (or the registry) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    #[default]
    Readwrite,
    Readonly,
    Import,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Readwrite => "READWRITE",
            Mode::Readonly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is not one of READWRITE, READONLY, IMPORT.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid mode '{0}': valid values are READWRITE, READONLY and IMPORT")]
pub struct InvalidMode(pub String);

impl FromStr for Mode {
    type Err = InvalidMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "READWRITE" => Ok(Mode::Readwrite),
            "READONLY" | "READONLY_OVERRIDE" => Ok(Mode::Readonly),
            "IMPORT" => Ok(Mode::Import),
            _ => Err(InvalidMode(text.to_owned())),
        }
    }
}

mod schema_type_text {
    use herald_schema::SchemaType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &SchemaType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SchemaType, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod level_text {
    use herald_schema::CompatibilityLevel;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<CompatibilityLevel>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(level) => serializer.serialize_str(level.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<CompatibilityLevel>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
