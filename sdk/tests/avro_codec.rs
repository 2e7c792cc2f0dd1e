//! The Avro codec with every type shape codegen emits, through the SDK's own encode/decode
//! (same-schema and resolved paths).

use std::collections::BTreeMap;

use herald::codec::WriterSchema;
use herald::Message;
use serde::{Deserialize, Serialize};

const SCHEMA: &str = r#"{"type":"record","name":"Everything","namespace":"t","fields":[
 {"name":"s","type":"string"},
 {"name":"i","type":"int"},
 {"name":"b","type":"boolean"},
 {"name":"d","type":"double"},
 {"name":"bytes","type":"bytes"},
 {"name":"fixed","type":{"type":"fixed","name":"Hash","size":4}},
 {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
 {"name":"list","type":{"type":"array","items":"long"}},
 {"name":"map","type":{"type":"map","values":"string"}},
 {"name":"maybe","type":["null","string"],"default":null},
 {"name":"late_null","type":["string","null"]},
 {"name":"either","type":["string","long"]},
 {"name":"next","type":["null","Everything"],"default":null},
 {"name":"id","type":{"type":"string","logicalType":"uuid"}},
 {"name":"day","type":{"type":"int","logicalType":"date"}},
 {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}}
]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Color {
    #[serde(rename = "RED")]
    Red,
    #[serde(rename = "GREEN")]
    Green,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Either {
    String(String),
    Long(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    s: String,
    i: i32,
    b: bool,
    d: f64,
    #[serde(with = "apache_avro::serde::bytes")]
    bytes: Vec<u8>,
    #[serde(with = "apache_avro::serde::fixed")]
    fixed: [u8; 4],
    color: Color,
    list: Vec<i64>,
    map: BTreeMap<String, String>,
    maybe: Option<String>,
    late_null: Option<String>,
    either: Either,
    next: Option<Box<Everything>>,
    id: String,
    day: i32,
    at: i64,
}
herald::avro_message!(Everything, "t.Everything", SCHEMA);

fn sample(depth: u32) -> Everything {
    Everything {
        s: "s".into(),
        i: -3,
        b: true,
        d: 1.5,
        bytes: vec![0, 1, 255],
        fixed: [1, 2, 3, 4],
        color: Color::Green,
        list: vec![1, -2],
        map: [("k".to_string(), "v".to_string())].into(),
        maybe: Some("m".into()),
        late_null: None,
        either: if depth.is_multiple_of(2) {
            Either::Long(7)
        } else {
            Either::String("x".into())
        },
        next: (depth > 0).then(|| Box::new(sample(depth - 1))),
        id: "8c2d5d4e-4b1f-4b36-9d0c-2f8a3b1c9e77".into(),
        day: 19_000,
        at: 1_700_000_000_000_000,
    }
}

#[test]
fn every_shape_round_trips() {
    let writer = WriterSchema::new(1, &Everything::SCHEMA, SCHEMA, &[]).expect("schema");
    for depth in 0..3 {
        let value = sample(depth);
        let mut body = Vec::new();
        value.encode_body(&writer, &mut body).expect("encode");
        let back = Everything::decode_body(&body, &writer).expect("decode");
        assert_eq!(back, value);
    }
}

const MONEY_V1: &str = r#"{"type":"record","name":"Money","namespace":"shop","fields":[
 {"name":"cents","type":"long"}]}"#;
const MONEY_V2: &str = r#"{"type":"record","name":"Money","namespace":"shop","fields":[
 {"name":"cents","type":"long"},{"name":"currency","type":"string","default":"EUR"}]}"#;
const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
 {"name":"id","type":"string"},{"name":"total","type":"Money"},
 {"name":"refunds","type":{"type":"array","items":"shop.Money"}}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Money {
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    total: Money,
    refunds: Vec<Money>,
}
herald::avro_message!(
    Order,
    herald::SchemaInfo {
        format: herald::SchemaFormat::Avro,
        full_name: "shop.Order",
        schema: ORDER,
        dependencies: &[herald::SchemaDependency {
            name: "shop.Money",
            schema: MONEY_V1,
            imports: &[],
        }],
        imports: &["shop.Money"],
        message_indexes: None,
    }
);

#[test]
fn a_schema_with_references_round_trips_and_resolves() {
    let order = Order {
        id: "o-1".into(),
        total: Money { cents: 500 },
        refunds: vec![Money { cents: 100 }],
    };
    let reference = |schema: &str| herald_schema::ResolvedReference {
        name: "shop.Money".into(),
        schema: schema.into(),
    };
    // Written and read with the same schemas.
    let same = WriterSchema::new(3, &Order::SCHEMA, ORDER, &[reference(MONEY_V1)]).expect("same");
    let mut body = Vec::new();
    order.encode_body(&same, &mut body).expect("encode");
    assert_eq!(Order::decode_body(&body, &same).expect("decode"), order);
    // A writer whose referenced type evolved: encoding fills the default, reading drops it.
    let evolved =
        WriterSchema::new(4, &Order::SCHEMA, ORDER, &[reference(MONEY_V2)]).expect("evolved");
    let mut body = Vec::new();
    order
        .encode_body(&evolved, &mut body)
        .expect("encode resolved");
    assert!(body.windows(3).any(|w| w == b"EUR"), "default written");
    assert_eq!(
        Order::decode_body(&body, &evolved).expect("decode resolved"),
        order
    );
    // Without its reference the writer schema does not parse.
    assert!(WriterSchema::new(5, &Order::SCHEMA, ORDER, &[]).is_err());
}
