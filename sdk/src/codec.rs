//! Payload encoding with Confluent's registry framing: magic byte, schema ID, the Protobuf
//! message-index path, then the Avro or Protobuf body. Framing itself is herald-wire's
//! (`schema_id`); this module pairs it with the schemas a message was written and is read with.

use herald_schema::{ParsedSchema, SchemaType};

/// A schema a writer schema references, resolved to its text (what [`WriterSchema::new`] takes).
pub use herald_schema::ResolvedReference;
use herald_wire::schema_id::{
    read_message_indexes, read_schema_id, write_message_indexes, write_schema_id, FramingError,
};

use crate::schema_info::{SchemaFormat, SchemaInfo};

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("invalid schema for {full_name}: {reason}")]
    Schema { full_name: String, reason: String },
    #[error("cannot encode {full_name}: {reason}")]
    Encode { full_name: String, reason: String },
    #[error("cannot decode {full_name}: {reason}")]
    Decode { full_name: String, reason: String },
    #[error("payload framing: {0}")]
    Framing(#[from] FramingError),
    #[error(
        "record holds message index path {found:?}, but {full_name} is {expected:?} in its schema"
    )]
    WrongMessage {
        full_name: String,
        expected: Vec<i32>,
        found: Vec<i32>,
    },
}

/// The schema a payload is written with (when producing: the registered schema; when
/// consuming: the one its ID names), paired with the local type's schema for resolution.
#[derive(Debug)]
pub struct WriterSchema {
    id: u32,
    full_name: &'static str,
    message_indexes: Vec<i32>,
    /// The framing prefix every payload of this schema starts with (magic byte, ID and, for
    /// Protobuf, the encoded message indexes): written and recognised as bytes.
    prefix: Vec<u8>,
    avro: Option<AvroPair>,
}

fn prefix(id: u32, message_indexes: Option<&[i32]>) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(8);
    write_schema_id(&mut prefix, id);
    if let Some(indexes) = message_indexes {
        write_message_indexes(&mut prefix, indexes);
    }
    prefix
}

#[derive(Debug)]
struct AvroPair {
    writer: apache_avro::Schema,
    reader: apache_avro::Schema,
    /// The named types the writer's references define, each after the ones it uses, then
    /// the writer itself: what resolving its references needs (just the writer without
    /// references).
    writer_schemata: Vec<apache_avro::Schema>,
    /// The same for the reader (the local type's dependencies, then its schema).
    reader_schemata: Vec<apache_avro::Schema>,
    /// Writer and reader are the same schema: serde reads and writes directly, no resolution.
    same: bool,
    /// The writer schema names no type by reference: encoding needs no name table.
    self_contained: bool,
}

/// Whether `schema` contains a reference to a named type (which needs a name table).
fn has_refs(schema: &apache_avro::Schema) -> bool {
    use apache_avro::Schema as S;
    match schema {
        S::Ref { .. } => true,
        S::Record(record) => record.fields.iter().any(|f| has_refs(&f.schema)),
        S::Array(array) => has_refs(&array.items),
        S::Map(map) => has_refs(&map.types),
        S::Union(union) => union.variants().iter().any(has_refs),
        _ => false,
    }
}

impl WriterSchema {
    /// Pairs the registered schema `text` (with its resolved `references`) under `id` with
    /// the local type described by `info`.
    pub fn new(
        id: u32,
        info: &SchemaInfo,
        text: &str,
        references: &[ResolvedReference],
    ) -> Result<Self, CodecError> {
        let schema_error = |reason: String| CodecError::Schema {
            full_name: info.full_name.to_owned(),
            reason,
        };
        match info.format {
            SchemaFormat::Avro => {
                // A schema with references is parsed after the schemas it references (their
                // named types are what its references name).
                let parse = |dependencies: Vec<&str>, text: &str| {
                    let mut all =
                        apache_avro::Schema::parse_list(dependencies.into_iter().chain([text]))
                            .map_err(|e| schema_error(e.to_string()))?;
                    let main = all
                        .last()
                        .cloned()
                        .ok_or_else(|| schema_error("no schema".to_owned()))?;
                    all.shrink_to_fit();
                    Ok::<_, CodecError>((main, all))
                };
                let (writer, writer_schemata) =
                    parse(references.iter().map(|r| r.schema.as_str()).collect(), text)?;
                let (reader, reader_schemata) = parse(
                    info.dependencies.iter().map(|d| d.schema).collect(),
                    info.schema,
                )?;
                let canonical = |schemata: &[apache_avro::Schema]| {
                    schemata
                        .iter()
                        .map(apache_avro::Schema::canonical_form)
                        .collect::<Vec<_>>()
                };
                let same = canonical(&writer_schemata) == canonical(&reader_schemata);
                let self_contained = !has_refs(&writer);
                Ok(Self {
                    id,
                    full_name: info.full_name,
                    message_indexes: Vec::new(),
                    prefix: prefix(id, None),
                    avro: Some(AvroPair {
                        writer,
                        reader,
                        writer_schemata,
                        reader_schemata,
                        same,
                        self_contained,
                    }),
                })
            }
            SchemaFormat::Protobuf => {
                let parsed = ParsedSchema::parse(SchemaType::Protobuf, text, references)
                    .map_err(|e| schema_error(e.to_string()))?;
                let message_indexes = herald_schema::message_index_path(&parsed, info.full_name)
                    .map_err(|e| schema_error(e.to_string()))?;
                Ok(Self {
                    id,
                    full_name: info.full_name,
                    prefix: prefix(id, Some(&message_indexes)),
                    message_indexes,
                    avro: None,
                })
            }
        }
    }

    /// The registry ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The Protobuf message-index path of the local type in the writer schema.
    pub fn message_indexes(&self) -> &[i32] {
        &self.message_indexes
    }

    /// Writes the framing prefix (magic byte, ID, message indexes for Protobuf).
    pub fn write_prefix(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
    }

    /// The body of a framed Protobuf `payload` after checking its message-index path names
    /// the local type; for Avro, the body after the 5-byte prefix.
    pub fn body<'p>(&self, payload: &'p [u8]) -> Result<&'p [u8], CodecError> {
        let rest = payload
            .get(5..)
            .ok_or(FramingError::TooShort(payload.len()))?;
        if self.avro.is_some() {
            return Ok(rest);
        }
        // The common case: framed exactly as this writer frames (no allocation).
        if let Some(body) = payload.strip_prefix(self.prefix.as_slice()) {
            return Ok(body);
        }
        let (found, used) = read_message_indexes(rest).map_err(FramingError::from)?;
        if found != self.message_indexes {
            return Err(CodecError::WrongMessage {
                full_name: self.full_name.to_owned(),
                expected: self.message_indexes.clone(),
                found,
            });
        }
        Ok(rest.get(used..).unwrap_or_default())
    }
}

/// The schema ID of a framed payload.
pub fn schema_id(payload: &[u8]) -> Result<u32, CodecError> {
    Ok(read_schema_id(payload)?)
}

/// Avro bodies for serde types.
pub mod avro {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::{CodecError, WriterSchema};

    fn pair(writer: &WriterSchema) -> Result<&super::AvroPair, CodecError> {
        writer.avro.as_ref().ok_or_else(|| CodecError::Schema {
            full_name: writer.full_name.to_owned(),
            reason: "the registered schema is not Avro".to_owned(),
        })
    }

    /// Appends the Avro binary encoding of `value` under the writer schema. When the writer
    /// schema differs from the type's own (a pinned or latest version), the value is
    /// resolved to it first (defaults filled, promotions applied).
    pub fn encode<T: Serialize>(
        value: &T,
        writer: &WriterSchema,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let error = |reason: String| CodecError::Encode {
            full_name: writer.full_name.to_owned(),
            reason,
        };
        let pair = pair(writer)?;
        if pair.same && pair.self_contained {
            // The common case: no name table to build, serde straight into the buffer.
            apache_avro::write_avro_datum_ref(&pair.writer, &Default::default(), value, out)
                .map_err(|e| error(e.to_string()))?;
            return Ok(());
        }
        let datum_writer = GenericDatumWriter::builder(&pair.writer)
            .schemata(pair.writer_schemata.iter().collect())
            .and_then(|builder| builder.build())
            .map_err(|e| error(e.to_string()))?;
        if pair.same {
            datum_writer
                .write_ser(out, value)
                .map_err(|e| error(e.to_string()))?;
        } else {
            let value = apache_avro::to_value(value)
                .and_then(|v| {
                    v.resolve_schemata(&pair.writer, pair.writer_schemata.iter().collect())
                })
                .map_err(|e| error(e.to_string()))?;
            datum_writer
                .write_value_ref(out, &value)
                .map_err(|e| error(e.to_string()))?;
        }
        Ok(())
    }

    /// Decodes an Avro body written with the writer schema into `T`, resolving it to the
    /// type's own schema when they differ (Avro schema resolution).
    pub fn decode<T: DeserializeOwned>(
        mut body: &[u8],
        writer: &WriterSchema,
    ) -> Result<T, CodecError> {
        let error = |reason: String| CodecError::Decode {
            full_name: writer.full_name.to_owned(),
            reason,
        };
        let pair = pair(writer)?;
        let value = if pair.same {
            GenericDatumReader::builder(&pair.writer)
                .writer_schemata(pair.writer_schemata.iter().collect())
                .and_then(|builder| builder.build())
                .and_then(|r| r.read_value(&mut body))
        } else {
            GenericDatumReader::builder(&pair.writer)
                .writer_schemata(pair.writer_schemata.iter().collect())
                .and_then(|builder| {
                    builder
                        .reader_schema(&pair.reader)
                        .reader_schemata(pair.reader_schemata.iter().collect())
                })
                .and_then(|builder| builder.build())
                .and_then(|r| r.read_value(&mut body))
        }
        .map_err(|e| error(e.to_string()))?;
        if !body.is_empty() {
            return Err(error(format!("{} bytes left after the datum", body.len())));
        }
        apache_avro::from_value(&value).map_err(|e| error(e.to_string()))
    }
}

/// Protobuf bodies for prost messages.
pub mod protobuf {
    use super::CodecError;

    /// Appends the message's Protobuf encoding.
    pub fn encode<M: prost::Message>(message: &M, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.reserve(message.encoded_len());
        message.encode(out).map_err(|e| CodecError::Encode {
            full_name: std::any::type_name::<M>().to_owned(),
            reason: e.to_string(),
        })
    }

    /// Decodes a Protobuf body.
    pub fn decode<M: prost::Message + Default>(body: &[u8]) -> Result<M, CodecError> {
        M::decode(body).map_err(|e| CodecError::Decode {
            full_name: std::any::type_name::<M>().to_owned(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = "syntax = \"proto3\";\npackage t;\nmessage A { string s = 1; }\nmessage B { int64 n = 1; }\n";

    #[test]
    fn protobuf_bodies_are_found_after_any_encoding_of_the_local_path() {
        let writer =
            WriterSchema::new(9, &SchemaInfo::protobuf("t.A", PROTO), PROTO, &[]).expect("schema");
        let mut framed = Vec::new();
        writer.write_prefix(&mut framed);
        framed.extend_from_slice(b"body");
        // Confluent's short form of path [0] (one zero byte): the prefix itself.
        assert_eq!(framed, [0, 0, 0, 0, 9, 0, b'b', b'o', b'd', b'y']);
        assert_eq!(writer.body(&framed).expect("short form"), b"body");
        // The long form of [0] (count 1, index 0) names the same message.
        let long = [0, 0, 0, 0, 9, 2, 0, b'b', b'o', b'd', b'y'];
        assert_eq!(writer.body(&long).expect("long form"), b"body");
        // Path [1] is message B, not the local type.
        let other = [0, 0, 0, 0, 9, 2, 2, b'b'];
        assert!(matches!(
            writer.body(&other),
            Err(CodecError::WrongMessage { .. })
        ));
        assert!(writer.body(&[0, 0, 0]).is_err());
    }
}
