//! Property tests: every schema is compatible with itself at every level, canonical text is a
//! fixed point of parsing (for Protobuf: Confluent's printed form), normalising is idempotent,
//! and layout does not change a fingerprint. Generated Avro evolutions (a field added or
//! removed, with or without a default, renamed with or without an alias) are judged as the
//! Avro resolution rules say, at every level.
//!
//! The Avro generator emits field defaults (valid for the field's type), aliases on fields and
//! records, and nested records with their own namespace.

use herald_schema::{
    check, CompatReport, CompatibilityLevel, Direction, ParsedSchema, PreviousVersion, Rule,
    SchemaType,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Placeholder alias of a generated record; [`rename_named`] turns it into a unique one.
const RECORD_ALIAS_PLACEHOLDER: &str = "ALIAS";

/// A default value valid for the (generated) Avro type `t`; `seed` varies it. For a union it
/// is a value of the first branch (always `null` here), as the Avro specification requires.
fn default_for(t: &Value, seed: u64) -> Value {
    match t {
        Value::String(primitive) => match primitive.as_str() {
            "boolean" => json!(seed.is_multiple_of(2)),
            "int" | "long" => json!(seed % 100),
            "float" | "double" => json!((seed % 100) as f64 + 0.5),
            "bytes" | "string" => json!("x"),
            _ => Value::Null,
        },
        Value::Array(branches) => branches
            .first()
            .map_or(Value::Null, |first| default_for(first, seed)),
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            // `date` (an int) and `decimal` (bytes).
            Some("int") => json!(seed % 100),
            Some("bytes") => json!("x"),
            Some("enum") => {
                let symbols = map
                    .get("symbols")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if symbols.is_empty() {
                    Value::Null
                } else {
                    symbols[(seed % symbols.len() as u64) as usize].clone()
                }
            }
            Some("fixed") => {
                let size = map.get("size").and_then(Value::as_u64).unwrap_or(0);
                json!("a".repeat(size as usize))
            }
            Some("array") => json!([]),
            Some("map") => json!({}),
            Some("record") => {
                let fields = map
                    .get("fields")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut object = serde_json::Map::new();
                for (i, field) in fields.iter().enumerate() {
                    if let Some(name) = field.get("name").and_then(Value::as_str) {
                        let field_type = field.get("type").cloned().unwrap_or(Value::Null);
                        object.insert(
                            name.to_owned(),
                            default_for(&field_type, seed.wrapping_add(i as u64)),
                        );
                    }
                }
                Value::Object(object)
            }
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// A record field; with `default_seed` it gets a default valid for `t`, with `aliased` the
/// alias `<name>_old` (which no generated field is called).
fn field(name: String, t: Value, default_seed: Option<u64>, aliased: bool) -> Value {
    let default_value = default_seed.map(|seed| default_for(&t, seed));
    let alias = format!("{name}_old");
    let mut field = json!({"name": name, "type": t});
    if let Some(default_value) = default_value {
        field["default"] = default_value;
    }
    if aliased {
        field["aliases"] = json!([alias]);
    }
    field
}

/// A record type; named types (and their aliases) get unique names afterwards.
fn record(name: &str, namespace: Option<String>, aliased: bool, fields: Vec<Value>) -> Value {
    let mut record = json!({"type": "record", "name": name, "fields": fields});
    if let Some(namespace) = namespace {
        record["namespace"] = json!(namespace);
    }
    if aliased {
        record["aliases"] = json!([RECORD_ALIAS_PLACEHOLDER]);
    }
    record
}

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
            (
                prop::collection::vec((inner, prop::option::of(any::<u64>()), any::<bool>()), 1..5),
                any::<bool>(),
                // A nested record sometimes declares its own namespace (its named children
                // then live in it).
                prop::option::of(0u8..4),
            )
                .prop_map(|(fields, aliased, namespace)| {
                    let fields: Vec<Value> = fields
                        .into_iter()
                        .enumerate()
                        .map(|(i, (t, default_seed, alias))| {
                            field(format!("f{i}"), t, default_seed, alias)
                        })
                        .collect();
                    record(
                        "R",
                        namespace.map(|n| format!("prop.nested{n}")),
                        aliased,
                        fields,
                    )
                }),
        ]
    })
}

/// Names every record, enum and fixed `<prefix><n>` (unique), and a record's placeholder
/// alias `<prefix><n>Old`.
fn rename_named(value: &mut Value, prefix: &str, counter: &mut usize) {
    match value {
        Value::Object(map) => {
            if map.contains_key("name") && map.contains_key("type") && !map.contains_key("items") {
                if let Some(Value::String(kind)) = map.get("type") {
                    if ["record", "enum", "fixed"].contains(&kind.as_str()) {
                        *counter += 1;
                        map.insert("name".into(), json!(format!("{prefix}{counter}")));
                        if map.contains_key("aliases") {
                            map.insert("aliases".into(), json!([format!("{prefix}{counter}Old")]));
                        }
                    }
                }
            }
            for (_, child) in map.iter_mut() {
                rename_named(child, prefix, counter);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| rename_named(child, prefix, counter)),
        _ => {}
    }
}

/// A root record `prop.T1` with fields `field0..`, named types renamed `T<n>`.
fn avro_root() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (avro_type(), prop::option::of(any::<u64>()), any::<bool>()),
            1..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(fields, aliased)| {
            let fields: Vec<Value> = fields
                .into_iter()
                .enumerate()
                .map(|(i, (t, default_seed, alias))| {
                    field(format!("field{i}"), t, default_seed, alias)
                })
                .collect();
            let mut root = record("Root", Some("prop".to_owned()), aliased, fields);
            let mut counter = 0;
            // Field names are unique per record; record names get renamed, fields keep theirs.
            rename_named(&mut root, "T", &mut counter);
            root
        })
}

fn avro_schema() -> impl Strategy<Value = String> {
    avro_root().prop_map(|root| root.to_string())
}

/// A generated root record, the type of a field to add to it (its named types are called
/// `A<n>`, so none clashes with the root's `T<n>`), and a default valid for that type.
fn avro_evolution() -> impl Strategy<Value = (Value, Value, Value)> {
    (avro_root(), avro_type(), any::<u64>()).prop_map(|(root, mut added, seed)| {
        let mut counter = 0;
        rename_named(&mut added, "A", &mut counter);
        let default_value = default_for(&added, seed);
        (root, added, default_value)
    })
}

/// The name of the added field: no generated field is called that (they are `field<n>`,
/// `f<n>` and aliases `<name>_old`).
const ADDED: &str = "added";

fn with_field(root: &Value, field: Value) -> Value {
    let mut root = root.clone();
    if let Some(fields) = root["fields"].as_array_mut() {
        fields.push(field);
    }
    root
}

fn parse_avro(schema: &Value) -> ParsedSchema {
    ParsedSchema::parse(SchemaType::Avro, &schema.to_string(), &[])
        .unwrap_or_else(|e| panic!("generated schema parses: {e}\n{schema}"))
}

/// `new` checked against the single previous version `old` at `level`.
fn check_one(old: &ParsedSchema, new: &ParsedSchema, level: CompatibilityLevel) -> CompatReport {
    check(
        &[PreviousVersion {
            version: 1,
            schema: old,
        }],
        new,
        level,
    )
}

fn checks_backward(level: CompatibilityLevel) -> bool {
    matches!(
        level,
        CompatibilityLevel::Backward
            | CompatibilityLevel::BackwardTransitive
            | CompatibilityLevel::Full
            | CompatibilityLevel::FullTransitive
    )
}

fn checks_forward(level: CompatibilityLevel) -> bool {
    matches!(
        level,
        CompatibilityLevel::Forward
            | CompatibilityLevel::ForwardTransitive
            | CompatibilityLevel::Full
            | CompatibilityLevel::FullTransitive
    )
}

/// `report` fails with exactly one incompatibility: READER_FIELD_MISSING_DEFAULT_VALUE for the
/// root field `field`, found in `direction`.
fn assert_missing_default(
    report: &CompatReport,
    field: &str,
    direction: Direction,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        report.incompatibilities.len(),
        1,
        "{}: {:?}",
        report.level,
        report.incompatibilities
    );
    let found = &report.incompatibilities[0];
    prop_assert_eq!(found.rule, Rule::ReaderFieldMissingDefaultValue);
    prop_assert_eq!(found.direction, direction);
    let suffix = format!(".{field}");
    prop_assert!(found.path.ends_with(&suffix), "{}: {}", report.level, found);
    prop_assert!(
        report
            .messages()
            .iter()
            .any(|m| m.contains("READER_FIELD_MISSING_DEFAULT_VALUE")),
        "{:?}",
        report.messages()
    );
    Ok(())
}

/// `report` is compatible.
fn assert_compatible(report: &CompatReport, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        report.is_compatible(),
        "{what} at {}: {:?}",
        report.level,
        report.incompatibilities
    );
    Ok(())
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
        // The canonical text (Confluent's printed form) is a fixed point of parsing, and
        // normalising is idempotent.
        let again = ParsedSchema::parse(SchemaType::Protobuf, schema.canonical_text(), &[]).expect("canonical parses");
        prop_assert_eq!(schema.canonical_text(), again.canonical_text());
        prop_assert_eq!(schema.fingerprint(), again.fingerprint());
        let normalized = ParsedSchema::parse(SchemaType::Protobuf, &schema.normalized_text(), &[]).expect("normalized parses");
        prop_assert_eq!(normalized.normalized_text(), schema.normalized_text());
        prop_assert_eq!(normalized.normalized_fingerprint(), schema.normalized_fingerprint());
        // Reordering fields changes the canonical text but not the normalised one.
        let reversed: String = kinds
            .iter()
            .enumerate()
            .rev()
            .map(|(i, kind)| format!("  {kind} f{i} = {};\n", i + 1))
            .collect();
        let text = format!("syntax = \"proto3\";\npackage prop;\nmessage Inner {{ string x = 1; }}\nmessage Root {{\n{reversed}}}\n");
        let reordered = ParsedSchema::parse(SchemaType::Protobuf, &text, &[]).expect("reordered proto parses");
        prop_assert_eq!(reordered.normalized_text(), schema.normalized_text());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A new field with a default: the new schema reads old data (BACKWARD: the reader fills
    /// it in), the old one ignores it (FORWARD). Dropping it again is compatible both ways too.
    #[test]
    fn avro_adding_a_field_with_a_default_is_compatible_at_every_level(
        (root, added, default_value) in avro_evolution()
    ) {
        let plain = parse_avro(&root);
        let extended = parse_avro(&with_field(
            &root,
            json!({"name": ADDED, "type": added, "default": default_value}),
        ));
        for level in CompatibilityLevel::ALL {
            assert_compatible(&check_one(&plain, &extended, level), "adding a defaulted field")?;
            assert_compatible(&check_one(&extended, &plain, level), "dropping a defaulted field")?;
        }
    }

    /// A new field without a default: BACKWARD fails (the new reader has nothing to fill it
    /// with), FORWARD holds (the old reader ignores it). The reverse evolution (old has the
    /// field without a default, new drops it) fails FORWARD only.
    #[test]
    fn avro_adding_a_field_without_a_default_breaks_backward_only(
        (root, added, _default) in avro_evolution()
    ) {
        let plain = parse_avro(&root);
        let extended = parse_avro(&with_field(&root, json!({"name": ADDED, "type": added})));
        for level in CompatibilityLevel::ALL {
            let report = check_one(&plain, &extended, level);
            if checks_backward(level) {
                assert_missing_default(&report, ADDED, Direction::Backward)?;
            } else {
                assert_compatible(&report, "adding a field without a default")?;
            }
            let report = check_one(&extended, &plain, level);
            if checks_forward(level) {
                assert_missing_default(&report, ADDED, Direction::Forward)?;
            } else {
                assert_compatible(&report, "dropping a field without a default")?;
            }
        }
    }

    /// Removing an existing field that has no default: the new reader ignores the writer's
    /// extra field (BACKWARD holds), the old reader misses it (FORWARD fails). Had it a
    /// default, the removal is compatible at every level.
    #[test]
    fn avro_removing_a_field_without_a_default_breaks_forward_only(
        root in avro_root(),
        index in any::<prop::sample::Index>(),
        default_seed in any::<u64>(),
    ) {
        let mut old = root;
        let fields = old["fields"].as_array_mut().expect("fields");
        let k = index.index(fields.len());
        let name = fields[k]["name"].as_str().expect("field name").to_owned();
        if let Some(removed) = fields[k].as_object_mut() {
            removed.remove("default");
        }
        let mut new = old.clone();
        new["fields"].as_array_mut().expect("fields").remove(k);
        let (old_parsed, new_parsed) = (parse_avro(&old), parse_avro(&new));
        for level in CompatibilityLevel::ALL {
            let report = check_one(&old_parsed, &new_parsed, level);
            if checks_forward(level) {
                assert_missing_default(&report, &name, Direction::Forward)?;
            } else {
                assert_compatible(&report, "removing a field without a default")?;
            }
        }
        let default_value = default_for(&old["fields"][k]["type"], default_seed);
        old["fields"][k]["default"] = default_value;
        let old_parsed = parse_avro(&old);
        for level in CompatibilityLevel::ALL {
            assert_compatible(&check_one(&old_parsed, &new_parsed, level), "removing a defaulted field")?;
        }
    }

    /// Renaming a field is BACKWARD compatible when the new name carries the old one as an
    /// alias (the reader finds the writer's field through it), and not without the alias.
    #[test]
    fn avro_renaming_a_field_needs_a_reader_alias(
        root in avro_root(),
        index in any::<prop::sample::Index>(),
    ) {
        let mut old = root;
        let fields = old["fields"].as_array_mut().expect("fields");
        let k = index.index(fields.len());
        let name = fields[k]["name"].as_str().expect("field name").to_owned();
        if let Some(renamed) = fields[k].as_object_mut() {
            renamed.remove("default");
            renamed.remove("aliases");
        }
        let mut aliased = old.clone();
        aliased["fields"][k]["name"] = json!(ADDED);
        aliased["fields"][k]["aliases"] = json!([name]);
        let mut bare = old.clone();
        bare["fields"][k]["name"] = json!(ADDED);
        let old_parsed = parse_avro(&old);
        let report = check_one(&old_parsed, &parse_avro(&aliased), CompatibilityLevel::Backward);
        assert_compatible(&report, "renaming a field with its old name as alias")?;
        let report = check_one(&old_parsed, &parse_avro(&bare), CompatibilityLevel::Backward);
        assert_missing_default(&report, ADDED, Direction::Backward)?;
    }
}

#[test]
fn protobuf_layout_and_comments_do_not_change_the_fingerprint() {
    let a = "syntax = \"proto3\"; package p; message M { string id = 1; }";
    let b = "syntax = \"proto3\";\n// a comment\npackage p;\n\nmessage M {\n  string id = 1; // the id\n}\n";
    let a = ParsedSchema::parse(SchemaType::Protobuf, a, &[]).expect("a");
    let b = ParsedSchema::parse(SchemaType::Protobuf, b, &[]).expect("b");
    assert_eq!(a.canonical_text(), b.canonical_text());
    assert_eq!(
        a.canonical_text(),
        "syntax = \"proto3\";\npackage p;\n\nmessage M {\n  string id = 1;\n}\n"
    );
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
