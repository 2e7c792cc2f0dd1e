//! Property tests: every schema is compatible with itself at every level, canonical text is a
//! fixed point of parsing, and layout does not change a fingerprint.

use herald_schema::{check, CompatibilityLevel, ParsedSchema, PreviousVersion, SchemaType};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A random Avro type tree; named types get unique names afterwards.
fn avro_type() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!("null")),
        Just(json!("boolean")),
        Just(json!("int")),
        Just(json!("long")),
        Just(json!("float")),
        Just(json!("double")),
        Just(json!("bytes")),
        Just(json!("string")),
        Just(json!({"type": "int", "logicalType": "date"})),
        Just(json!({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2})),
        prop::collection::btree_set("[A-Z]{1,4}", 1..5)
            .prop_map(|symbols| json!({"type": "enum", "name": "E", "symbols": symbols})),
        (1usize..32).prop_map(|size| json!({"type": "fixed", "name": "F", "size": size})),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|items| json!({"type": "array", "items": items})),
            inner
                .clone()
                .prop_map(|values| json!({"type": "map", "values": values})),
            inner
                .clone()
                .prop_filter("no nested union", |t| !t.is_array() && t != &json!("null"))
                .prop_map(|t| json!(["null", t])),
            prop::collection::vec(inner, 1..5).prop_map(|types| {
                let fields: Vec<Value> = types
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| json!({"name": format!("f{i}"), "type": t}))
                    .collect();
                json!({"type": "record", "name": "R", "fields": fields})
            }),
        ]
    })
}

fn rename_named(value: &mut Value, counter: &mut usize) {
    match value {
        Value::Object(map) => {
            if map.contains_key("name") && map.contains_key("type") && !map.contains_key("items") {
                if let Some(Value::String(kind)) = map.get("type") {
                    if ["record", "enum", "fixed"].contains(&kind.as_str()) {
                        *counter += 1;
                        map.insert("name".into(), json!(format!("T{counter}")));
                    }
                }
            }
            for (_, child) in map.iter_mut() {
                rename_named(child, counter);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| rename_named(child, counter)),
        _ => {}
    }
}

fn avro_schema() -> impl Strategy<Value = String> {
    prop::collection::vec(avro_type(), 1..6).prop_map(|types| {
        let fields: Vec<Value> = types
            .into_iter()
            .enumerate()
            .map(|(i, t)| json!({"name": format!("field{i}"), "type": t}))
            .collect();
        let mut root =
            json!({"type": "record", "name": "Root", "namespace": "prop", "fields": fields});
        let mut counter = 0;
        rename_named(&mut root, &mut counter);
        // Field names are unique per record; record names get renamed, fields keep theirs.
        root.to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn avro_schema_is_compatible_with_itself(text in avro_schema()) {
        let schema = ParsedSchema::parse(SchemaType::Avro, &text, &[]).expect("generated schema parses");
        let previous = [PreviousVersion { version: 1, schema: &schema }];
        for level in CompatibilityLevel::ALL {
            let report = check(&previous, &schema, level);
            prop_assert!(report.is_compatible(), "{level}: {:?}", report.incompatibilities);
        }
    }

    #[test]
    fn avro_canonical_text_is_a_fixed_point(text in avro_schema()) {
        let first = ParsedSchema::parse(SchemaType::Avro, &text, &[]).expect("parses");
        let second = ParsedSchema::parse(SchemaType::Avro, first.canonical_text(), &[]).expect("canonical parses");
        prop_assert_eq!(first.canonical_text(), second.canonical_text());
        prop_assert_eq!(first.fingerprint(), second.fingerprint());
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&text).expect("json")).expect("pretty");
        let third = ParsedSchema::parse(SchemaType::Avro, &pretty, &[]).expect("pretty parses");
        prop_assert_eq!(first.fingerprint(), third.fingerprint());
    }

    #[test]
    fn protobuf_schema_is_compatible_with_itself(kinds in prop::collection::vec(
        prop::sample::select(vec!["int32", "int64", "string", "bytes", "bool", "double", "sint64", "fixed32", "repeated string", "map<string, int64>", "Inner", "optional int32"]),
        1..12,
    )) {
        let fields: String = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| format!("  {kind} f{i} = {};\n", i + 1))
            .collect();
        let text = format!("syntax = \"proto3\";\npackage prop;\nmessage Inner {{ string x = 1; }}\nmessage Root {{\n{fields}}}\n");
        let schema = ParsedSchema::parse(SchemaType::Protobuf, &text, &[]).expect("generated proto parses");
        let previous = [PreviousVersion { version: 1, schema: &schema }];
        for level in CompatibilityLevel::ALL {
            let report = check(&previous, &schema, level);
            prop_assert!(report.is_compatible(), "{level}: {:?}", report.incompatibilities);
        }
        let again = ParsedSchema::parse(SchemaType::Protobuf, schema.canonical_text(), &[]).expect("canonical parses");
        prop_assert_eq!(schema.fingerprint(), again.fingerprint());
    }
}

#[test]
fn protobuf_layout_and_comments_do_not_change_the_fingerprint() {
    let a = "syntax = \"proto3\"; package p; message M { string id = 1; }";
    let b = "syntax = \"proto3\";\n// a comment\npackage p;\n\nmessage M {\n  string id = 1; // the id\n}\n";
    let a = ParsedSchema::parse(SchemaType::Protobuf, a, &[]).expect("a");
    let b = ParsedSchema::parse(SchemaType::Protobuf, b, &[]).expect("b");
    assert_eq!(a.fingerprint(), b.fingerprint());
}

#[test]
fn protobuf_accepts_a_base64_file_descriptor() {
    let text =
        "syntax = \"proto3\"; package p; message M { string id = 1; } message N { M m = 1; }";
    let parsed = ParsedSchema::parse(SchemaType::Protobuf, text, &[]).expect("text");
    let descriptor = parsed
        .serialized_descriptor()
        .expect("protobuf has a descriptor");
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(descriptor);
    let from_descriptor =
        ParsedSchema::parse(SchemaType::Protobuf, &encoded, &[]).expect("base64 descriptor");
    assert_eq!(
        from_descriptor.record_names(),
        vec!["p.M".to_owned(), "p.N".to_owned()]
    );
    let previous = [PreviousVersion {
        version: 1,
        schema: &parsed,
    }];
    assert!(check(
        &previous,
        &from_descriptor,
        CompatibilityLevel::FullTransitive
    )
    .is_compatible());
}

#[test]
fn message_index_paths_follow_confluent() {
    let text = "syntax = \"proto3\"; package p; message A { message Inner { message Deep {} } } enum E { X = 0; } message B {}";
    let parsed = ParsedSchema::parse(SchemaType::Protobuf, text, &[]).expect("parses");
    assert_eq!(
        herald_schema::message_index_path(&parsed, "p.A").expect("A"),
        vec![0]
    );
    assert_eq!(
        herald_schema::message_index_path(&parsed, "p.B").expect("B"),
        vec![1]
    );
    assert_eq!(
        herald_schema::message_index_path(&parsed, "p.A.Inner.Deep").expect("Deep"),
        vec![0, 0, 0]
    );
    let error = herald_schema::message_index_path(&parsed, "p.Missing").expect_err("unknown");
    assert!(error.to_string().contains("p.B"), "{error}");
}

#[test]
fn parse_errors_name_the_problem() {
    let error =
        ParsedSchema::parse(SchemaType::Avro, "{\"type\": \"record\"}", &[]).expect_err("no name");
    assert!(
        error.to_string().starts_with("invalid avro schema"),
        "{error}"
    );
    let error = ParsedSchema::parse(SchemaType::Protobuf, "syntax = \"proto3\"; message {", &[])
        .expect_err("bad");
    assert!(
        error.to_string().contains(":1:"),
        "line and column are given: {error}"
    );
    assert!(matches!(
        ParsedSchema::parse(SchemaType::Avro, "  ", &[]),
        Err(herald_schema::ParseError::Empty)
    ));
}

#[test]
fn schema_type_change_is_incompatible() {
    let avro = ParsedSchema::parse(SchemaType::Avro, "\"string\"", &[]).expect("avro");
    let proto = ParsedSchema::parse(
        SchemaType::Protobuf,
        "syntax = \"proto3\"; message M {}",
        &[],
    )
    .expect("proto");
    let previous = [PreviousVersion {
        version: 1,
        schema: &avro,
    }];
    let report = check(&previous, &proto, CompatibilityLevel::Backward);
    assert_eq!(
        report.incompatibilities[0].rule,
        herald_schema::Rule::SchemaTypeChanged
    );
    assert!(check(&previous, &proto, CompatibilityLevel::None).is_compatible());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Schema text comes from the network: any input gives a schema or a typed error.
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,160}") {
        let _ = ParsedSchema::parse(SchemaType::Avro, &text, &[]);
        let _ = ParsedSchema::parse(SchemaType::Protobuf, &text, &[]);
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(value in arbitrary_json()) {
        let _ = ParsedSchema::parse(SchemaType::Avro, &value.to_string(), &[]);
    }

    /// Base64 `FileDescriptorProto`s are decoded from untrusted bytes too.
    #[test]
    fn arbitrary_descriptor_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = ParsedSchema::parse(SchemaType::Protobuf, &text, &[]);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            "record",
            "enum",
            "fixed",
            "array",
            "map",
            "int",
            "string",
            "null",
            "name",
            "fields",
            "type",
            "symbols",
            "size",
            "items",
            "values",
            "default",
            "logicalType",
            "decimal"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "name",
                    "fields",
                    "symbols",
                    "size",
                    "items",
                    "values",
                    "default",
                    "namespace",
                    "aliases",
                    "logicalType",
                    "precision",
                    "scale"
                ])
                .prop_map(str::to_owned),
                inner,
                0..5,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
