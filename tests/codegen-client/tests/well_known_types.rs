//! Every Protobuf well-known type as a field in every position (first, after scalars, in a
//! oneof, repeated, as a map value, inside a nested message) generates code that compiles
//! (this crate's build.rs runs herald-codegen over `schemas/proto/wkt/v1`) and round-trips
//! through the SDK's `Message` impl. Before the message graph knew the well-known types,
//! prost-build panicked in the build script on `string id = 1; Timestamp value = 2;`.

use herald::codec::WriterSchema;
use herald::codegen::prost_types::{self, value::Kind};
use herald::Message;
use herald_codegen_client::wkt::v1 as wkt;

/// Encodes through `Message` (what a producer does) and decodes it back.
fn round_trip<T: Message + PartialEq + std::fmt::Debug>(value: T) {
    let writer = WriterSchema::new(1, &T::SCHEMA, T::SCHEMA.schema, &[]).expect("writer schema");
    let mut body = Vec::new();
    value.encode_body(&writer, &mut body).expect("encode");
    let back = T::decode_body(&body, &writer).expect("decode");
    assert_eq!(back, value);
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 7 }
}

fn value(text: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    }
}

#[test]
fn the_issue_shape_derives_eq_and_round_trips() {
    fn is_eq<T: Eq>() {}
    // string then Timestamp: every field can derive Eq, so prost-build asks about
    // .google.protobuf.Timestamp itself.
    is_eq::<wkt::TimestampAfterScalars>();
    is_eq::<wkt::TimestampFirst>();
    round_trip(wkt::TimestampAfterScalars {
        id: "inv-1".into(),
        count: 3,
        value: Some(timestamp(1_700_000_000)),
    });
}

#[test]
fn timestamps_and_durations_in_every_position() {
    round_trip(wkt::TimestampFirst {
        value: Some(timestamp(1)),
        id: "a".into(),
    });
    round_trip(wkt::TimestampInOneof {
        id: "b".into(),
        choice: Some(wkt::timestamp_in_oneof::Choice::Value(timestamp(2))),
    });
    round_trip(wkt::TimestampRepeated {
        id: "c".into(),
        values: vec![timestamp(3), timestamp(4)],
    });
    round_trip(wkt::TimestampMapValue {
        id: "d".into(),
        values: [("k".to_owned(), timestamp(5))].into(),
    });
    round_trip(wkt::TimestampNested {
        id: "e".into(),
        inner: Some(wkt::timestamp_nested::Inner {
            id: "f".into(),
            value: Some(timestamp(6)),
        }),
    });
    round_trip(wkt::DurationMapValue {
        id: "g".into(),
        values: [(
            "k".to_owned(),
            prost_types::Duration {
                seconds: 9,
                nanos: 1,
            },
        )]
        .into(),
    });
}

#[test]
fn struct_value_any_empty_and_field_mask_in_every_position() {
    let fields: std::collections::BTreeMap<String, prost_types::Value> =
        [("a".to_owned(), value("x"))].into();
    round_trip(wkt::StructFirst {
        value: Some(prost_types::Struct {
            fields: fields.clone(),
        }),
        id: "s".into(),
    });
    round_trip(wkt::ValueInOneof {
        id: "v".into(),
        choice: Some(wkt::value_in_oneof::Choice::Value(value("y"))),
    });
    round_trip(wkt::ListValueRepeated {
        id: "l".into(),
        values: vec![prost_types::ListValue {
            values: vec![value("z")],
        }],
    });
    round_trip(wkt::AnyNested {
        id: "n".into(),
        inner: Some(wkt::any_nested::Inner {
            id: "i".into(),
            value: Some(prost_types::Any {
                type_url: "type.googleapis.com/wkt.v1.TimestampFirst".into(),
                value: vec![1, 2, 3],
            }),
        }),
    });
    round_trip(wkt::EmptyMapValue {
        id: "e".into(),
        values: [("k".to_owned(), ())].into(),
    });
    round_trip(wkt::EmptyRepeated {
        id: "e".into(),
        values: vec![(), ()],
    });
    round_trip(wkt::FieldMaskAfterScalars {
        id: "m".into(),
        count: 1,
        value: Some(prost_types::FieldMask {
            paths: vec!["a.b".into()],
        }),
    });
}

#[test]
fn wrappers_are_optional_primitives_in_every_position() {
    round_trip(wkt::DoubleValueFirst {
        value: Some(1.5),
        id: "d".into(),
    });
    round_trip(wkt::Int64ValueRepeated {
        id: "i".into(),
        values: vec![1, -2],
    });
    round_trip(wkt::StringValueMapValue {
        id: "s".into(),
        values: [("k".to_owned(), "v".to_owned())].into(),
    });
    round_trip(wkt::BoolValueInOneof {
        id: "b".into(),
        choice: Some(wkt::bool_value_in_oneof::Choice::Value(true)),
    });
    round_trip(wkt::BytesValueNested {
        id: "n".into(),
        inner: Some(wkt::bytes_value_nested::Inner {
            id: "i".into(),
            value: Some(vec![0, 1]),
        }),
    });
    round_trip(wkt::UInt32ValueAfterScalars {
        id: "u".into(),
        count: 2,
        value: Some(7),
    });
}
