//! Schema-driven JSON for tools (the CLI's `produce`, `consume` and DLQ views): a registered
//! schema turns JSON into a framed payload and a framed payload back into JSON, without a
//! Rust type. Avro uses its JSON shape (unions as plain values); Protobuf uses the canonical
//! Protobuf JSON mapping (prost-reflect).

use apache_avro::Schema;
use herald_schema::ParsedSchema;
use herald_wire::schema_id::{read_message_indexes, write_message_indexes, write_schema_id};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use crate::codec::CodecError;

/// A registered schema ready to convert JSON.
#[derive(Debug, Clone)]
pub struct DynamicSchema {
    id: u32,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Avro(Schema),
    Protobuf {
        file: prost_reflect::FileDescriptor,
        /// The message produced (the first one unless named).
        message: MessageDescriptor,
        indexes: Vec<i32>,
    },
}

fn error(id: u32, reason: impl ToString) -> CodecError {
    CodecError::Schema {
        full_name: format!("schema {id}"),
        reason: reason.to_string(),
    }
}

impl DynamicSchema {
    /// `message` picks the Protobuf message written by `encode_json` (default: the first one
    /// of the file); decoding follows each payload's message indexes.
    pub fn new(id: u32, parsed: &ParsedSchema, message: Option<&str>) -> Result<Self, CodecError> {
        if let Some((root, _)) = parsed.avro() {
            return Ok(Self {
                id,
                kind: Kind::Avro(root.clone()),
            });
        }
        let file = parsed
            .protobuf_file()
            .ok_or_else(|| error(id, "neither Avro nor Protobuf"))?
            .clone();
        let name = match message {
            Some(name) => name.to_owned(),
            None => parsed
                .record_names()
                .into_iter()
                .next()
                .ok_or_else(|| error(id, "the file declares no message"))?,
        };
        let descriptor = file
            .parent_pool()
            .get_message_by_name(&name)
            .ok_or_else(|| {
                error(
                    id,
                    format!(
                        "no message {name}; the file declares {}",
                        parsed.record_names().join(", ")
                    ),
                )
            })?;
        let indexes = herald_schema::message_index_path(parsed, &name).map_err(|e| error(id, e))?;
        Ok(Self {
            id,
            kind: Kind::Protobuf {
                file,
                message: descriptor,
                indexes,
            },
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// A framed payload from a JSON value.
    pub fn encode_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
        let encode_error = |reason: String| CodecError::Encode {
            full_name: format!("schema {}", self.id),
            reason,
        };
        let mut out = Vec::with_capacity(64);
        write_schema_id(&mut out, self.id);
        match &self.kind {
            Kind::Avro(schema) => {
                let value = apache_avro::types::Value::try_from(json.clone())
                    .and_then(|value| value.resolve(schema))
                    .map_err(|e| encode_error(e.to_string()))?;
                let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                    .build()
                    .map_err(|e| encode_error(e.to_string()))?;
                writer
                    .write_value_ref(&mut out, &value)
                    .map_err(|e| encode_error(e.to_string()))?;
            }
            Kind::Protobuf {
                message, indexes, ..
            } => {
                let dynamic = DynamicMessage::deserialize(message.clone(), json)
                    .map_err(|e| encode_error(e.to_string()))?;
                write_message_indexes(&mut out, indexes);
                dynamic
                    .encode(&mut out)
                    .map_err(|e| encode_error(e.to_string()))?;
            }
        }
        Ok(out)
    }

    /// The JSON value of a framed payload written with this schema.
    pub fn decode_json(&self, payload: &[u8]) -> Result<serde_json::Value, CodecError> {
        let decode_error = |reason: String| CodecError::Decode {
            full_name: format!("schema {}", self.id),
            reason,
        };
        let mut body = payload.get(5..).ok_or(CodecError::Framing(
            herald_wire::schema_id::FramingError::TooShort(payload.len()),
        ))?;
        match &self.kind {
            Kind::Avro(schema) => {
                let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
                    .build()
                    .and_then(|reader| reader.read_value(&mut body))
                    .map_err(|e| decode_error(e.to_string()))?;
                serde_json::Value::try_from(value).map_err(|e| decode_error(e.to_string()))
            }
            Kind::Protobuf { file, .. } => {
                let (indexes, used) =
                    read_message_indexes(body).map_err(|e| CodecError::Framing(e.into()))?;
                let descriptor = message_at(file, &indexes)
                    .ok_or_else(|| decode_error(format!("no message at index path {indexes:?}")))?;
                let dynamic =
                    DynamicMessage::decode(descriptor, body.get(used..).unwrap_or_default())
                        .map_err(|e| decode_error(e.to_string()))?;
                serde_json::to_value(&dynamic).map_err(|e| decode_error(e.to_string()))
            }
        }
    }
}

/// The message a Confluent index path names in `file`.
fn message_at(file: &prost_reflect::FileDescriptor, indexes: &[i32]) -> Option<MessageDescriptor> {
    let (first, rest) = indexes.split_first()?;
    let mut current = file.messages().nth(usize::try_from(*first).ok()?)?;
    for index in rest {
        let child = current
            .child_messages()
            .nth(usize::try_from(*index).ok()?)?;
        current = child;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schema::SchemaType;

    #[test]
    fn avro_json_round_trips() {
        let text = r#"{"type":"record","name":"A","fields":[{"name":"id","type":"string"},{"name":"n","type":["null","long"],"default":null}]}"#;
        let parsed = ParsedSchema::parse(SchemaType::Avro, text, &[]).expect("schema");
        let schema = DynamicSchema::new(7, &parsed, None).expect("dynamic");
        let json = serde_json::json!({"id": "x", "n": 5});
        let payload = schema.encode_json(&json).expect("encode");
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(schema.decode_json(&payload).expect("decode"), json);
        let missing = schema.encode_json(&serde_json::json!({"n": 1}));
        assert!(missing.is_err(), "a required field is missing");
    }

    #[test]
    fn protobuf_json_round_trips_through_message_indexes() {
        let text = "syntax = \"proto3\";\npackage p;\nmessage First { string a = 1; }\nmessage Second { int64 b = 1; repeated string c = 2; }\n";
        let parsed = ParsedSchema::parse(SchemaType::Protobuf, text, &[]).expect("schema");
        let schema = DynamicSchema::new(3, &parsed, Some("p.Second")).expect("dynamic");
        let json = serde_json::json!({"b": "12", "c": ["x", "y"]});
        let payload = schema.encode_json(&json).expect("encode");
        assert_eq!(&payload[5..7], &[2, 2], "index path [1]");
        assert_eq!(schema.decode_json(&payload).expect("decode"), json);
        let unknown = schema.encode_json(&serde_json::json!({"nope": 1}));
        assert!(unknown.is_err());
        assert!(DynamicSchema::new(3, &parsed, Some("p.Third")).is_err());
    }
}
