//! The message trait: what a type tells the SDK so that it can be produced and consumed with
//! registry framing. Generated code implements it; for hand-written types the
//! [`avro_message!`](crate::avro_message) and [`protobuf_message!`](crate::protobuf_message)
//! macros write the impl for a serde type with an Avro schema or a prost message.

use crate::codec::{CodecError, WriterSchema};
pub use crate::schema_info::{SchemaDependency, SchemaFormat, SchemaInfo};

/// A type that can be produced and consumed through the registry. (The methods are named
/// `*_body` so that they never clash with `prost::Message::encode`/`decode` on the same type.)
pub trait Message: Sized + Send + Sync + 'static {
    /// The type's schema (the reader schema when consuming).
    const SCHEMA: SchemaInfo;

    /// Appends the encoded body (no framing) as `writer` describes it.
    fn encode_body(&self, writer: &WriterSchema, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a body (framing already removed) written with `writer`.
    fn decode_body(body: &[u8], writer: &WriterSchema) -> Result<Self, CodecError>;

    /// Bytes that choose the partition (same key, same partition); `None` spreads records.
    fn partition_key(&self) -> Option<Vec<u8>> {
        None
    }

    /// The record's idempotency key; `None` lets the producer mint a UUIDv7.
    fn idempotency_key(&self) -> Option<String> {
        None
    }
}

/// Implements [`Message`] for a serde type with an Avro schema:
/// `herald::avro_message!(Payment, "shop.Payment", PAYMENT_AVSC);`, or with a full
/// [`SchemaInfo`] for a schema with references (its `dependencies` are the referenced
/// schemas, named by the full name of the type each defines, as Confluent names Avro
/// references): `herald::avro_message!(Order, ORDER_INFO);`.
#[macro_export]
macro_rules! avro_message {
    ($type:ty, $full_name:expr, $schema:expr) => {
        $crate::avro_message!($type, $crate::SchemaInfo::avro($full_name, $schema));
    };
    ($type:ty, $info:expr) => {
        impl $crate::Message for $type {
            const SCHEMA: $crate::SchemaInfo = $info;

            fn encode_body(
                &self,
                writer: &$crate::codec::WriterSchema,
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<(), $crate::codec::CodecError> {
                $crate::codec::avro::encode(self, writer, out)
            }

            fn decode_body(
                body: &[u8],
                writer: &$crate::codec::WriterSchema,
            ) -> ::std::result::Result<Self, $crate::codec::CodecError> {
                $crate::codec::avro::decode(body, writer)
            }
        }
    };
}

/// Implements [`Message`] for a prost message declared in the `.proto` text `schema`:
/// `herald::protobuf_message!(OrderCreated, "shop.v1.OrderCreated", ORDERS_PROTO);`
#[macro_export]
macro_rules! protobuf_message {
    ($type:ty, $full_name:expr, $schema:expr) => {
        impl $crate::Message for $type {
            const SCHEMA: $crate::SchemaInfo = $crate::SchemaInfo::protobuf($full_name, $schema);

            fn encode_body(
                &self,
                _writer: &$crate::codec::WriterSchema,
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<(), $crate::codec::CodecError> {
                $crate::codec::protobuf::encode(self, out)
            }

            fn decode_body(
                body: &[u8],
                _writer: &$crate::codec::WriterSchema,
            ) -> ::std::result::Result<Self, $crate::codec::CodecError> {
                $crate::codec::protobuf::decode(body)
            }
        }
    };
}
