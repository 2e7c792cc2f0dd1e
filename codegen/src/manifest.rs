//! `herald.toml`: a client crate's events in one file, read by codegen and the CLI.
//!
//! ```toml
//! [schemas]
//! proto = ["schemas/orders.proto"]
//! proto_include = ["schemas"]
//! avro = ["schemas/payment.avsc"]
//!
//! [[topic]]
//! name = "orders"
//! message = "shop.v1.OrderCreated"
//! key = "order_id"
//! idempotency_key = ["order_id"]
//!
//! [registry]
//! url = "http://127.0.0.1:8081"
//! pins = [{ subject = "payments-value", version = 3 }]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Name of the lock file written beside the manifest.
pub const LOCK_FILE: &str = "herald.lock";

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schemas {
    #[serde(default)]
    pub proto: Vec<PathBuf>,
    #[serde(default)]
    pub proto_include: Vec<PathBuf>,
    #[serde(default)]
    pub avro: Vec<PathBuf>,
}

/// How a topic's subject is named (Confluent's strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-value`
    #[default]
    Topic,
    /// the message's full name
    Record,
    /// `<topic>-<full name>`
    TopicRecord,
}

/// One `[[topic]]`: a topic and the message type its records carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    /// Fully-qualified Protobuf message or Avro record name.
    pub message: String,
    /// Field whose value is the partition key.
    #[serde(default)]
    pub key: Option<String>,
    /// Fields whose values form the idempotency key.
    #[serde(default)]
    pub idempotency_key: Vec<String>,
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,
}

impl Topic {
    /// A topic carrying `message` (a fully-qualified Protobuf message or Avro record).
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            key: None,
            idempotency_key: Vec::new(),
            subject_strategy: SubjectStrategy::Topic,
        }
    }

    /// The field whose value is the partition key.
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = Some(field.into());
        self
    }

    /// The fields whose values form the idempotency key.
    pub fn idempotency_key<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        fields: I,
    ) -> Self {
        self.idempotency_key = fields.into_iter().map(Into::into).collect();
        self
    }

    pub fn subject_strategy(mut self, strategy: SubjectStrategy) -> Self {
        self.subject_strategy = strategy;
        self
    }

    /// The registry subject of this topic's value schema (herald-wire's one derivation, as
    /// the SDK and the broker name it).
    pub fn subject(&self) -> String {
        self.subject_strategy
            .wire()
            .subject(&self.name, "value", &self.message)
    }
}

impl SubjectStrategy {
    /// The same strategy as the wire protocol and the SDK name it.
    pub fn wire(self) -> herald_wire::messages::SubjectStrategy {
        use herald_wire::messages::SubjectStrategy as Wire;
        match self {
            SubjectStrategy::Topic => Wire::TopicName,
            SubjectStrategy::Record => Wire::RecordName,
            SubjectStrategy::TopicRecord => Wire::TopicRecordName,
        }
    }
}

/// A registry version to pin into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub subject: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub url: String,
    #[serde(default)]
    pub pins: Vec<Pin>,
}

/// A parsed `herald.toml`; relative paths are resolved against its directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub schemas: Schemas,
    #[serde(default, rename = "topic")]
    pub topics: Vec<Topic>,
    #[serde(default)]
    pub registry: Option<Registry>,
    /// Directory of the manifest file.
    #[serde(skip)]
    pub root: PathBuf,
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let root = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, root)
    }

    /// Parses manifest text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path, root: PathBuf) -> Result<Self, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        manifest.root = root;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Checks what the format cannot: every topic named, with a message, once.
    pub fn validate(&self, origin: &Path) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let mut names = std::collections::BTreeSet::new();
        for topic in &self.topics {
            if topic.name.is_empty() || topic.message.is_empty() {
                return Err(invalid("every [[topic]] needs a name and a message".into()));
            }
            if !names.insert(topic.name.as_str()) {
                return Err(invalid(format!("topic '{}' is declared twice", topic.name)));
            }
        }
        Ok(())
    }

    /// A manifest path resolved against the manifest's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.root.join(path)
        }
    }

    /// Where the lock file lives.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[schemas]
proto = ["schemas/orders.proto"]
proto_include = ["schemas"]
avro = ["schemas/payment.avsc"]

[[topic]]
name = "orders"
message = "shop.v1.OrderCreated"
key = "order_id"
idempotency_key = ["order_id"]

[[topic]]
name = "payments"
message = "shop.Payment"
subject_strategy = "topic_record"

[registry]
url = "http://127.0.0.1:8081"
pins = [{ subject = "payments-value", version = 3 }]
"#;

    #[test]
    fn parses_the_documented_form() {
        let manifest = Manifest::parse(EXAMPLE, Path::new("herald.toml"), PathBuf::from("/crate"))
            .expect("ok");
        assert_eq!(
            manifest.schemas.proto,
            [PathBuf::from("schemas/orders.proto")]
        );
        assert_eq!(manifest.topics.len(), 2);
        assert_eq!(manifest.topics[0].subject(), "orders-value");
        assert_eq!(manifest.topics[1].subject(), "payments-shop.Payment");
        assert_eq!(manifest.topics[0].key.as_deref(), Some("order_id"));
        let registry = manifest.registry.as_ref().expect("registry");
        assert_eq!(registry.pins[0].version, 3);
        assert_eq!(manifest.lock_path(), PathBuf::from("/crate/herald.lock"));
    }

    #[test]
    fn unknown_keys_and_duplicate_topics_are_errors_naming_the_file() {
        let error = Manifest::parse(
            "[schemas]\nprotos = []\n",
            Path::new("m.toml"),
            PathBuf::new(),
        )
        .expect_err("unknown key");
        assert!(error.to_string().starts_with("m.toml: "), "{error}");
        assert!(error.to_string().contains("protos"), "{error}");
        let twice = "[[topic]]\nname='a'\nmessage='x.A'\n[[topic]]\nname='a'\nmessage='x.B'\n";
        let error = Manifest::parse(twice, Path::new("m.toml"), PathBuf::new()).expect_err("dup");
        assert!(error.to_string().contains("declared twice"), "{error}");
    }
}
