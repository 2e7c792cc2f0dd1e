//! Protobuf schema text as Confluent prints it (`canonicalString()`) and normalises it
//! (`normalize()`). Expected texts are ported from Confluent's `ProtobufSchemaTest`
//! (adapted where Confluent's parser accepts what protoc rejects, e.g. reserved numbers that
//! clash with fields).

use base64::Engine;
use herald_schema::{ParsedSchema, ResolvedReference, SchemaType};

const CONFLUENT_META: &str = r#"syntax = "proto3";
package confluent;

import "google/protobuf/descriptor.proto";

option java_package = "io.confluent.protobuf";
option java_outer_classname = "MetaProto";

message Meta {
  string doc = 1;
  map<string, string> params = 2;
  repeated string tags = 3;
  repeated Rule rules = 4;
}
message Rule {
  string name = 1;
  string doc = 2;
  string expr = 3;
  string sql = 4;
}

extend google.protobuf.FileOptions {
  Meta file_meta = 1088;
}
extend google.protobuf.MessageOptions {
  Meta message_meta = 1088;
}
extend google.protobuf.FieldOptions {
  Meta field_meta = 1088;
}
extend google.protobuf.EnumOptions {
  Meta enum_meta = 1088;
}
extend google.protobuf.EnumValueOptions {
  Meta enum_value_meta = 1088;
}
"#;

const CONFLUENT_DECIMAL: &str = r#"syntax = "proto3";
package confluent.type;

message Decimal {
  bytes value = 1;
  uint32 precision = 2;
  int32 scale = 3;
}
"#;

fn confluent_references() -> Vec<ResolvedReference> {
    vec![
        ResolvedReference {
            name: "confluent/meta.proto".to_owned(),
            schema: CONFLUENT_META.to_owned(),
        },
        ResolvedReference {
            name: "confluent/type/decimal.proto".to_owned(),
            schema: CONFLUENT_DECIMAL.to_owned(),
        },
    ]
}

fn parse_with(text: &str, references: &[ResolvedReference]) -> ParsedSchema {
    match ParsedSchema::parse(SchemaType::Protobuf, text, references) {
        Ok(schema) => schema,
        Err(error) => panic!("schema does not parse: {error}\n{text}"),
    }
}

fn parse(text: &str) -> ParsedSchema {
    parse_with(text, &[])
}

/// The canonical text parses back to itself, and normalising the normalised text changes
/// nothing. (The normalised text is not always its own canonical text: like Confluent's
/// parser, printing puts `default` and `json_name` after a field's other options.)
fn assert_fixed_points(schema: &ParsedSchema, references: &[ResolvedReference]) {
    let again = parse_with(schema.canonical_text(), references);
    assert_eq!(again.canonical_text(), schema.canonical_text());
    assert_eq!(again.normalized_text(), schema.normalized_text());
    assert_eq!(again.fingerprint(), schema.fingerprint());
    let normalized = schema.normalized_text();
    let reparsed = parse_with(&normalized, references);
    assert_eq!(reparsed.normalized_text(), normalized);
    assert_eq!(
        reparsed.normalized_fingerprint(),
        schema.normalized_fingerprint()
    );
}

#[test]
fn confluent_normalization() {
    // ProtobufSchemaTest.testNormalization; package `my.package` renamed (protoc keyword),
    // the meta import added (Confluent knows it implicitly), reserved numbers moved off the
    // fields and enum values reordered so the first is zero (protoc rules).
    let schema = concat!(
        "syntax = \"proto3\";\n",
        "package my.pkg;\n",
        "\n",
        "import \"google/protobuf/timestamp.proto\";\n",
        "import \"confluent/type/decimal.proto\";\n",
        "import \"confluent/meta.proto\";\n",
        "\n",
        "option java_package = \"my.package\";\n",
        "option java_outer_classname = \"Outer\";\n",
        "option java_multiple_files = true;\n",
        "option java_string_check_utf8 = true;\n",
        "option optimize_for = CODE_SIZE;\n",
        "option go_package = \"go.package\";\n",
        "option cc_generic_services = false;\n",
        "option java_generic_services = true;\n",
        "option py_generic_services = false;\n",
        "option cc_enable_arenas = true;\n",
        "option objc_class_prefix = \"objc\";\n",
        "option csharp_namespace = \"csharp\";\n",
        "option swift_prefix = \"swift\";\n",
        "option php_class_prefix = \"php\";\n",
        "option php_namespace = \"php_ns\";\n",
        "option php_metadata_namespace = \"php_md_ns\";\n",
        "option ruby_package = \"ruby\";\n",
        "\n",
        "message Nested {\n",
        "  confluent.type.Decimal test_cflt_decimal = 1 [(confluent.field_meta) = {\n",
        "    params: [\n",
        "      {\n",
        "        value: \"8\",\n",
        "        key: \"precision\"\n",
        "      },\n",
        "      {\n",
        "        value: \"3\",\n",
        "        key: \"scale\"\n",
        "      }\n",
        "    ],\n",
        "    doc: \"test decimal\"\n",
        "  }];\n",
        "  google.protobuf.Timestamp test_timestamp = 2;\n",
        "  map<string, InnerMessage> test_map = 3;\n",
        "\n",
        "  message InnerMessage {\n",
        "    reserved \"foo\", \"bar\";\n",
        "    reserved 14, 15, 19 to 21;\n",
        "    reserved 16, 30, 39 to 41;\n",
        "  \n",
        "    option no_standard_descriptor_accessor = true;\n",
        "    option deprecated = true;\n",
        "  \n",
        "    InnerMessage.DeepMessage deep2 = 4;\n",
        "    Nested.InnerMessage.DeepMessage deep3 = 5;\n",
        "    my.pkg.Nested.InnerMessage.DeepMessage deep4 = 6;\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep5 = 7;\n",
        "    string id = 1 [json_name = \"id\"];\n",
        "    repeated int32 ids = 2 [packed = true];\n",
        "    DeepMessage deep1 = 3;\n",
        "  \n",
        "    oneof some_val {\n",
        "      string one_id = 12;\n",
        "      int32 other_id = 11;\n",
        "    }\n",
        "    oneof some_val2 {\n",
        "      string one_id2 = 13;\n",
        "      int32 other_id2 = 10 [\n",
        "        deprecated = true,\n",
        "        ctype = CORD,\n",
        "        jstype = JS_STRING,\n",
        "        json_name = \"otherId2\"\n",
        "      ];\n",
        "    }\n",
        "  \n",
        "    message DeepMessage {\n",
        "      string id = 1;\n",
        "    }\n",
        "    enum InnerEnum {\n",
        "      reserved 100 to 110;\n",
        "      option allow_alias = true;\n",
        "      ZERO = 0 [deprecated = true];\n",
        "      TWO = 2;\n",
        "      ONE = 1;\n",
        "      ALSO_ZERO = 0;\n",
        "    }\n",
        "  }\n",
        "}\n",
        "enum Status {\n",
        "  ACTIVE = 0;\n",
        "  INACTIVE = 2;\n",
        "  PAUSED = 1;\n",
        "}\n",
        "\n",
        "service MyService {\n",
        "  option deprecated = true;\n",
        "\n",
        "  rpc MyMethod2 (stream Nested) returns (Nested.InnerMessage);\n",
        "  rpc MyMethod1 (Nested.InnerMessage) returns (stream Nested) {\n",
        "    option idempotency_level = NO_SIDE_EFFECTS;\n",
        "    option deprecated = true;\n",
        "  };\n",
        "}\n",
    );
    let normalized = concat!(
        "syntax = \"proto3\";\n",
        "package my.pkg;\n",
        "\n",
        "import \"confluent/meta.proto\";\n",
        "import \"confluent/type/decimal.proto\";\n",
        "import \"google/protobuf/timestamp.proto\";\n",
        "\n",
        "option cc_enable_arenas = true;\n",
        "option cc_generic_services = false;\n",
        "option csharp_namespace = \"csharp\";\n",
        "option go_package = \"go.package\";\n",
        "option java_generic_services = true;\n",
        "option java_multiple_files = true;\n",
        "option java_outer_classname = \"Outer\";\n",
        "option java_package = \"my.package\";\n",
        "option java_string_check_utf8 = true;\n",
        "option objc_class_prefix = \"objc\";\n",
        "option optimize_for = CODE_SIZE;\n",
        "option php_class_prefix = \"php\";\n",
        "option php_metadata_namespace = \"php_md_ns\";\n",
        "option php_namespace = \"php_ns\";\n",
        "option py_generic_services = false;\n",
        "option ruby_package = \"ruby\";\n",
        "option swift_prefix = \"swift\";\n",
        "\n",
        "message Nested {\n",
        "  .confluent.type.Decimal test_cflt_decimal = 1 [(confluent.field_meta) = {\n",
        "    doc: \"test decimal\",\n",
        "    params: [\n",
        "      {\n",
        "        key: \"precision\",\n",
        "        value: \"8\"\n",
        "      },\n",
        "      {\n",
        "        key: \"scale\",\n",
        "        value: \"3\"\n",
        "      }\n",
        "    ]\n",
        "  }];\n",
        "  .google.protobuf.Timestamp test_timestamp = 2;\n",
        "  map<string, .my.pkg.Nested.InnerMessage> test_map = 3;\n",
        "\n",
        "  message InnerMessage {\n",
        "    reserved 14;\n",
        "    reserved 15;\n",
        "    reserved 16;\n",
        "    reserved 19 to 21;\n",
        "    reserved 30;\n",
        "    reserved 39 to 41;\n",
        "    reserved \"bar\";\n",
        "    reserved \"foo\";\n",
        "  \n",
        "    option deprecated = true;\n",
        "    option no_standard_descriptor_accessor = true;\n",
        "  \n",
        "    string id = 1 [json_name = \"id\"];\n",
        "    repeated int32 ids = 2 [packed = true];\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep1 = 3;\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep2 = 4;\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep3 = 5;\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep4 = 6;\n",
        "    .my.pkg.Nested.InnerMessage.DeepMessage deep5 = 7;\n",
        "  \n",
        "    oneof some_val2 {\n",
        "      int32 other_id2 = 10 [\n",
        "        ctype = CORD,\n",
        "        deprecated = true,\n",
        "        json_name = \"otherId2\",\n",
        "        jstype = JS_STRING\n",
        "      ];\n",
        "      string one_id2 = 13;\n",
        "    }\n",
        "    oneof some_val {\n",
        "      int32 other_id = 11;\n",
        "      string one_id = 12;\n",
        "    }\n",
        "  \n",
        "    message DeepMessage {\n",
        "      string id = 1;\n",
        "    }\n",
        "    enum InnerEnum {\n",
        "      reserved 100 to 110;\n",
        "      option allow_alias = true;\n",
        "      ALSO_ZERO = 0;\n",
        "      ZERO = 0 [deprecated = true];\n",
        "      ONE = 1;\n",
        "      TWO = 2;\n",
        "    }\n",
        "  }\n",
        "}\n",
        "enum Status {\n",
        "  ACTIVE = 0;\n",
        "  PAUSED = 1;\n",
        "  INACTIVE = 2;\n",
        "}\n",
        "\n",
        "service MyService {\n",
        "  option deprecated = true;\n",
        "\n",
        "  rpc MyMethod2 (stream .my.pkg.Nested) returns (.my.pkg.Nested.InnerMessage);\n",
        "  rpc MyMethod1 (.my.pkg.Nested.InnerMessage) returns (stream .my.pkg.Nested) {\n",
        "    option deprecated = true;\n",
        "    option idempotency_level = NO_SIDE_EFFECTS;\n",
        "  };\n",
        "}\n",
    );
    let references = confluent_references();
    let parsed = parse_with(schema, &references);
    assert_eq!(parsed.canonical_text(), schema);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &references);
}

#[test]
fn confluent_enum_reserved() {
    // ProtobufSchemaTest.testEnumReserved (the `1 to 3` range moved off the enum values).
    let schema = concat!(
        "\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "\n",
        "message FooOptions {\n",
        "  optional string name = 1;\n",
        "  optional FooParameterType type = 2;\n",
        "}\n",
        "enum FooParameterType {\n",
        "  reserved 20, 100 to max;\n",
        "  reserved 10;\n",
        "  reserved 5 to 7;\n",
        "  reserved \"BAD\", \"OLD\";\n",
        "  NUMBER = 1;\n",
        "  STRING = 2;\n",
        "}\n",
    );
    let normalized = concat!(
        "\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "\n",
        "message FooOptions {\n",
        "  optional string name = 1;\n",
        "  optional .FooParameterType type = 2;\n",
        "}\n",
        "enum FooParameterType {\n",
        "  reserved 5 to 7;\n",
        "  reserved 10;\n",
        "  reserved 20;\n",
        "  reserved 100 to max;\n",
        "  reserved \"BAD\";\n",
        "  reserved \"OLD\";\n",
        "  NUMBER = 1;\n",
        "  STRING = 2;\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert_eq!(parsed.canonical_text(), schema);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn confluent_ranges() {
    // ProtobufSchemaTest.testRanges: `n to n` is kept as written, normalised to `n`.
    let schema = concat!(
        "\n",
        "message Money {\n",
        "  reserved 5000 to 6000;\n",
        "  reserved 10000 to 10001;\n",
        "  reserved 20000 to 20000;\n",
        "\n",
        "  optional int64 cents = 1;\n",
        "\n",
        "  extensions 100 to 200;\n",
        "  extensions 1000 to 1001;\n",
        "  extensions 2000 to 2000;\n",
        "\n",
        "  enum MoneyEnum {\n",
        "    reserved 100 to 200;\n",
        "    reserved 1000 to 1001;\n",
        "    reserved 2000 to 2000;\n",
        "    NONE = 0;\n",
        "    CENTS = 1;\n",
        "    DOLLARS = 2;\n",
        "  }\n",
        "}\n",
    );
    let normalized = concat!(
        "\n",
        "message Money {\n",
        "  reserved 5000 to 6000;\n",
        "  reserved 10000 to 10001;\n",
        "  reserved 20000;\n",
        "\n",
        "  optional int64 cents = 1;\n",
        "\n",
        "  extensions 100 to 200;\n",
        "  extensions 1000 to 1001;\n",
        "  extensions 2000;\n",
        "\n",
        "  enum MoneyEnum {\n",
        "    reserved 100 to 200;\n",
        "    reserved 1000 to 1001;\n",
        "    reserved 2000;\n",
        "    NONE = 0;\n",
        "    CENTS = 1;\n",
        "    DOLLARS = 2;\n",
        "  }\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert_eq!(parsed.canonical_text(), schema);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn confluent_normalization_with_extensions() {
    // ProtobufSchemaTest.testNormalizationWithExtensions (package renamed).
    let schema = concat!(
        "package my.pkg;\n",
        "\n",
        "message ExtendedDummy {\n",
        "    // just to namespace the extensions\n",
        "    extend Extended {\n",
        "        optional string extension_normal2 = 101;\n",
        "        optional string extension_normal = 100;\n",
        "    }\n",
        "\n",
        "    message Nested {\n",
        "        // but these are to test insane but legit definitions\n",
        "        extend pkg.Extended {\n",
        "            optional string extension_identifier2 = 103;\n",
        "            optional string extension_identifier = 102;\n",
        "        }\n",
        "        message Oh {\n",
        "            extend my.pkg.Extended {\n",
        "                optional string extension_vault_replace2 = 105;\n",
        "                optional string extension_vault_replace = 104;\n",
        "            }\n",
        "            message My {\n",
        "                extend .my.pkg.Extended {\n",
        "                    optional string extension_fidelius_token2 = 107;\n",
        "                    optional string extension_fidelius_token = 106;\n",
        "                }\n",
        "                message God {\n",
        "                    extend Extended.NestedExtended {\n",
        "                        optional string extension_nested_entity2 = 109;\n",
        "                        optional string extension_nested_entity = 108;\n",
        "                    }\n",
        "                    extend my.pkg.Extended.NestedExtended {\n",
        "                        optional string extension_nested_again2 = 111;\n",
        "                        optional string extension_nested_again = 110;\n",
        "                    }\n",
        "                }\n",
        "            }\n",
        "        }\n",
        "    }\n",
        "}\n",
        "\n",
        "message Extended {\n",
        "    optional string vaulted_data = 1;\n",
        "    optional string field_normal = 2;\n",
        "    extensions 100 to 199;\n",
        "\n",
        "    message NestedExtended {\n",
        "        optional string vaulted_data = 1;\n",
        "        optional string field_normal = 2;\n",
        "        optional string field_vault_replace = 3;\n",
        "        extensions 100 to 199;\n",
        "        extend NestedExtended {\n",
        "            optional string extension_nested_trouble2 = 113;\n",
        "            optional string extension_nested_trouble = 112;\n",
        "        }\n",
        "    }\n",
        "}\n",
    );
    let canonical = concat!(
        "package my.pkg;\n",
        "\n",
        "message ExtendedDummy {\n",
        "  extend Extended {\n",
        "    optional string extension_normal2 = 101;\n",
        "    optional string extension_normal = 100;\n",
        "  }\n",
        "\n",
        "  message Nested {\n",
        "    extend pkg.Extended {\n",
        "      optional string extension_identifier2 = 103;\n",
        "      optional string extension_identifier = 102;\n",
        "    }\n",
        "  \n",
        "    message Oh {\n",
        "      extend my.pkg.Extended {\n",
        "        optional string extension_vault_replace2 = 105;\n",
        "        optional string extension_vault_replace = 104;\n",
        "      }\n",
        "    \n",
        "      message My {\n",
        "        extend .my.pkg.Extended {\n",
        "          optional string extension_fidelius_token2 = 107;\n",
        "          optional string extension_fidelius_token = 106;\n",
        "        }\n",
        "      \n",
        "        message God {\n",
        "          extend Extended.NestedExtended {\n",
        "            optional string extension_nested_entity2 = 109;\n",
        "            optional string extension_nested_entity = 108;\n",
        "          }\n",
        "          extend my.pkg.Extended.NestedExtended {\n",
        "            optional string extension_nested_again2 = 111;\n",
        "            optional string extension_nested_again = 110;\n",
        "          }\n",
        "        }\n",
        "      }\n",
        "    }\n",
        "  }\n",
        "}\n",
        "message Extended {\n",
        "  optional string vaulted_data = 1;\n",
        "  optional string field_normal = 2;\n",
        "\n",
        "  extensions 100 to 199;\n",
        "\n",
        "  message NestedExtended {\n",
        "    optional string vaulted_data = 1;\n",
        "    optional string field_normal = 2;\n",
        "    optional string field_vault_replace = 3;\n",
        "  \n",
        "    extensions 100 to 199;\n",
        "  \n",
        "    extend NestedExtended {\n",
        "      optional string extension_nested_trouble2 = 113;\n",
        "      optional string extension_nested_trouble = 112;\n",
        "    }\n",
        "  }\n",
        "}\n",
    );
    let normalized = concat!(
        "package my.pkg;\n",
        "\n",
        "message ExtendedDummy {\n",
        "  extend .my.pkg.Extended {\n",
        "    optional string extension_normal = 100;\n",
        "    optional string extension_normal2 = 101;\n",
        "  }\n",
        "\n",
        "  message Nested {\n",
        "    extend .my.pkg.Extended {\n",
        "      optional string extension_identifier = 102;\n",
        "      optional string extension_identifier2 = 103;\n",
        "    }\n",
        "  \n",
        "    message Oh {\n",
        "      extend .my.pkg.Extended {\n",
        "        optional string extension_vault_replace = 104;\n",
        "        optional string extension_vault_replace2 = 105;\n",
        "      }\n",
        "    \n",
        "      message My {\n",
        "        extend .my.pkg.Extended {\n",
        "          optional string extension_fidelius_token = 106;\n",
        "          optional string extension_fidelius_token2 = 107;\n",
        "        }\n",
        "      \n",
        "        message God {\n",
        "          extend .my.pkg.Extended.NestedExtended {\n",
        "            optional string extension_nested_entity = 108;\n",
        "            optional string extension_nested_entity2 = 109;\n",
        "            optional string extension_nested_again = 110;\n",
        "            optional string extension_nested_again2 = 111;\n",
        "          }\n",
        "        }\n",
        "      }\n",
        "    }\n",
        "  }\n",
        "}\n",
        "message Extended {\n",
        "  optional string vaulted_data = 1;\n",
        "  optional string field_normal = 2;\n",
        "\n",
        "  extensions 100 to 199;\n",
        "\n",
        "  message NestedExtended {\n",
        "    optional string vaulted_data = 1;\n",
        "    optional string field_normal = 2;\n",
        "    optional string field_vault_replace = 3;\n",
        "  \n",
        "    extensions 100 to 199;\n",
        "  \n",
        "    extend .my.pkg.Extended.NestedExtended {\n",
        "      optional string extension_nested_trouble = 112;\n",
        "      optional string extension_nested_trouble2 = 113;\n",
        "    }\n",
        "  }\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert_eq!(parsed.canonical_text(), canonical);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn confluent_normalization_with_custom_options() {
    // ProtobufSchemaTest.testNormalizationWithExtensions2 (the message option's value changed
    // to fields that exist: Confluent's own test names a type that does not).
    let schema = concat!(
        "syntax = \"proto2\";\n",
        "package io.confluent.kafka.serializers.protobuf.test;\n",
        "\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "\n",
        "message FooBar {\n",
        "  extensions 100 to 200;\n",
        "\n",
        "  optional int32 foo = 1;\n",
        "  optional string bar = 2;\n",
        "  repeated FooBar nested = 3;\n",
        "\n",
        "  message More {\n",
        "    repeated int32 serial = 1;\n",
        "\n",
        "    extend FooBar {\n",
        "      optional string more_string = 150;\n",
        "    }\n",
        "\n",
        "    option (my_message_option) = {foo: 1, bar: \"x\"};\n",
        "  }\n",
        "\n",
        "  extend google.protobuf.EnumOptions {\n",
        "    optional string foobar_string = 71001;\n",
        "  }\n",
        "\n",
        "  enum FooBarBazEnum {\n",
        "    option (FooBar.foobar_string) = \"foobar\";\n",
        "\n",
        "    FOO = 1;\n",
        "    BAR = 2;\n",
        "    BAZ = 3;\n",
        "  }\n",
        "}\n",
        "\n",
        "extend google.protobuf.MessageOptions {\n",
        "  optional FooBar my_message_option = 50001;\n",
        "}\n",
        "\n",
        "extend FooBar {\n",
        "  optional FooBar.FooBarBazEnum ext = 101;\n",
        "  repeated FooBar.FooBarBazEnum rep = 102;\n",
        "}",
    );
    let canonical = concat!(
        "syntax = \"proto2\";\n",
        "package io.confluent.kafka.serializers.protobuf.test;\n",
        "\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "\n",
        "message FooBar {\n",
        "  optional int32 foo = 1;\n",
        "  optional string bar = 2;\n",
        "  repeated FooBar nested = 3;\n",
        "\n",
        "  extensions 100 to 200;\n",
        "\n",
        "  extend google.protobuf.EnumOptions {\n",
        "    optional string foobar_string = 71001;\n",
        "  }\n",
        "\n",
        "  message More {\n",
        "    option (my_message_option) = {\n",
        "      foo: 1,\n",
        "      bar: \"x\"\n",
        "    };\n",
        "  \n",
        "    repeated int32 serial = 1;\n",
        "  \n",
        "    extend FooBar {\n",
        "      optional string more_string = 150;\n",
        "    }\n",
        "  }\n",
        "  enum FooBarBazEnum {\n",
        "    option (FooBar.foobar_string) = \"foobar\";\n",
        "    FOO = 1;\n",
        "    BAR = 2;\n",
        "    BAZ = 3;\n",
        "  }\n",
        "}\n",
        "\n",
        "extend google.protobuf.MessageOptions {\n",
        "  optional FooBar my_message_option = 50001;\n",
        "}\n",
        "extend FooBar {\n",
        "  optional FooBar.FooBarBazEnum ext = 101;\n",
        "  repeated FooBar.FooBarBazEnum rep = 102;\n",
        "}\n",
    );
    let normalized = concat!(
        "package io.confluent.kafka.serializers.protobuf.test;\n",
        "\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "\n",
        "message FooBar {\n",
        "  optional int32 foo = 1;\n",
        "  optional string bar = 2;\n",
        "  repeated .io.confluent.kafka.serializers.protobuf.test.FooBar nested = 3;\n",
        "\n",
        "  extensions 100 to 200;\n",
        "\n",
        "  extend .google.protobuf.EnumOptions {\n",
        "    optional string foobar_string = 71001;\n",
        "  }\n",
        "\n",
        "  message More {\n",
        "    option (io.confluent.kafka.serializers.protobuf.test.my_message_option) = {\n",
        "      bar: \"x\",\n",
        "      foo: 1\n",
        "    };\n",
        "  \n",
        "    repeated int32 serial = 1;\n",
        "  \n",
        "    extend .io.confluent.kafka.serializers.protobuf.test.FooBar {\n",
        "      optional string more_string = 150;\n",
        "    }\n",
        "  }\n",
        "  enum FooBarBazEnum {\n",
        "    option (io.confluent.kafka.serializers.protobuf.test.FooBar.foobar_string) = \"foobar\";\n",
        "    FOO = 1;\n",
        "    BAR = 2;\n",
        "    BAZ = 3;\n",
        "  }\n",
        "}\n",
        "\n",
        "extend .google.protobuf.MessageOptions {\n",
        "  optional .io.confluent.kafka.serializers.protobuf.test.FooBar my_message_option = 50001;\n",
        "}\n",
        "extend .io.confluent.kafka.serializers.protobuf.test.FooBar {\n",
        "  optional .io.confluent.kafka.serializers.protobuf.test.FooBar.FooBarBazEnum ext = 101;\n",
        "  repeated .io.confluent.kafka.serializers.protobuf.test.FooBar.FooBarBazEnum rep = 102;\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert_eq!(parsed.canonical_text(), canonical);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn confluent_complex_custom_options() {
    // Part of ProtobufSchemaTest.testComplexCustomOptions2: dotted option paths become maps
    // and one-element lists collapse when normalised.
    let schema = concat!(
        "syntax = \"proto3\";\n",
        "package com.example.mynamespace;\n",
        "import \"confluent/meta.proto\";\n",
        "import \"confluent/type/decimal.proto\";\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "option java_outer_classname = \"ComplexProto\";\n",
        "message SampleRecord {\n",
        "  int32 my_field1 = 1 [\n",
        "    (confluent.field_meta).tags = \"foo\"\n",
        "  ];\n",
        "  double my_field2 = 2 [(confluent.field_meta) = {\n",
        "    tags: [\n",
        "      \"bar\"\n",
        "    ]\n",
        "  }];\n",
        "  double my_field4 = 4 [(confluent.field_meta) = {\n",
        "    tags: [\n",
        "      \"foo\",\n",
        "      \"bar\"\n",
        "    ]\n",
        "  }];\n",
        "}",
    );
    let canonical = concat!(
        "syntax = \"proto3\";\n",
        "package com.example.mynamespace;\n",
        "\n",
        "import \"confluent/meta.proto\";\n",
        "import \"confluent/type/decimal.proto\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "option java_outer_classname = \"ComplexProto\";\n",
        "\n",
        "message SampleRecord {\n",
        "  int32 my_field1 = 1 [(confluent.field_meta).tags = \"foo\"];\n",
        "  double my_field2 = 2 [(confluent.field_meta) = {\n",
        "    tags: [\n",
        "      \"bar\"\n",
        "    ]\n",
        "  }];\n",
        "  double my_field4 = 4 [(confluent.field_meta) = {\n",
        "    tags: [\n",
        "      \"foo\",\n",
        "      \"bar\"\n",
        "    ]\n",
        "  }];\n",
        "}\n",
    );
    let normalized = concat!(
        "syntax = \"proto3\";\n",
        "package com.example.mynamespace;\n",
        "\n",
        "import \"confluent/meta.proto\";\n",
        "import \"confluent/type/decimal.proto\";\n",
        "\n",
        "option java_outer_classname = \"ComplexProto\";\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "\n",
        "message SampleRecord {\n",
        "  int32 my_field1 = 1 [(confluent.field_meta) = {\n",
        "    tags: \"foo\"\n",
        "  }];\n",
        "  double my_field2 = 2 [(confluent.field_meta) = {\n",
        "    tags: \"bar\"\n",
        "  }];\n",
        "  double my_field4 = 4 [(confluent.field_meta) = {\n",
        "    tags: [\n",
        "      \"foo\",\n",
        "      \"bar\"\n",
        "    ]\n",
        "  }];\n",
        "}\n",
    );
    let references = confluent_references();
    let parsed = parse_with(schema, &references);
    assert_eq!(parsed.canonical_text(), canonical);
    assert_eq!(parsed.normalized_text(), normalized);
    assert_fixed_points(&parsed, &references);
}

#[test]
fn confluent_enum_after_message() {
    // ProtobufSchemaTest.testEnumAfterMessage.
    let schema = concat!(
        "syntax = \"proto3\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "option java_outer_classname = \"TestEnumProtos\";\n",
        "\n",
        "enum Suit {\n",
        "  SPADES = 0;\n",
        "  HEARTS = 1;\n",
        "  DIAMONDS = 2;\n",
        "  CLUBS = 3;\n",
        "}\n",
        "message TestEnum {\n",
        "  int32 suit = 1;\n",
        "}\n",
    );
    let expected = concat!(
        "syntax = \"proto3\";\n",
        "\n",
        "option java_package = \"io.confluent.kafka.serializers.protobuf.test\";\n",
        "option java_outer_classname = \"TestEnumProtos\";\n",
        "\n",
        "message TestEnum {\n",
        "  int32 suit = 1;\n",
        "}\n",
        "enum Suit {\n",
        "  SPADES = 0;\n",
        "  HEARTS = 1;\n",
        "  DIAMONDS = 2;\n",
        "  CLUBS = 3;\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert_eq!(parsed.canonical_text(), expected);
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn confluent_option_escapes() {
    // ProtobufSchemaTest.testOptionEscape (as custom options: protoc knows no such file
    // options).
    let schema = concat!(
        "syntax = \"proto3\";\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "extend google.protobuf.FileOptions {\n",
        "  string text = 50000;\n",
        "}\n",
        "option (text) = \"backslash\\\\ \\\"dq\\\" \\'sq\\' newline\\n bell\\a tab\\t vt\\v\";\n",
        "message M {\n",
        "  bool b = 1;\n",
        "}\n",
    );
    let parsed = parse(schema);
    assert!(
        parsed.canonical_text().contains(
            "option (text) = \"backslash\\\\ \\\"dq\\\" \\'sq\\' newline\\n bell\\a tab\\t vt\\v\";\n"
        ),
        "{}",
        parsed.canonical_text()
    );
    assert_fixed_points(&parsed, &[]);
}

// ---- identity -------------------------------------------------------------------------------

#[test]
fn comments_and_layout_do_not_change_the_canonical_text() {
    let compact = "syntax=\"proto3\";package acme.orders;message Order{string id=1;repeated Line lines=2;message Line{string sku=1;int32 qty=2;}}";
    let commented = concat!(
        "// Orders.\n",
        "syntax = \"proto3\";\n",
        "\n",
        "/* the package */ package acme.orders;\n",
        "\n",
        "message Order {\n",
        "    string id = 1; // the id\n",
        "\n",
        "\n",
        "    repeated Line lines = 2;\n",
        "    // A line.\n",
        "    message Line {\n",
        "        string sku = 1;\n",
        "        int32 qty = 2;\n",
        "    }\n",
        "}\n",
    );
    let expected = concat!(
        "syntax = \"proto3\";\n",
        "package acme.orders;\n",
        "\n",
        "message Order {\n",
        "  string id = 1;\n",
        "  repeated Line lines = 2;\n",
        "\n",
        "  message Line {\n",
        "    string sku = 1;\n",
        "    int32 qty = 2;\n",
        "  }\n",
        "}\n",
    );
    let a = parse(compact);
    let b = parse(commented);
    assert_eq!(a.canonical_text(), expected);
    assert_eq!(b.canonical_text(), expected);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_fixed_points(&a, &[]);
}

#[test]
fn type_spelling_matters_unless_normalised() {
    let short = "syntax = \"proto3\";\npackage acme.orders;\nmessage Order {\n  message Line { string sku = 1; }\n  Line line = 1;\n}\n";
    let full = "syntax = \"proto3\";\npackage acme.orders;\nmessage Order {\n  message Line { string sku = 1; }\n  .acme.orders.Order.Line line = 1;\n}\n";
    let a = parse(short);
    let b = parse(full);
    assert_ne!(a.canonical_text(), b.canonical_text());
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.normalized_text(), b.normalized_text());
    assert_eq!(a.normalized_fingerprint(), b.normalized_fingerprint());
    assert!(a
        .normalized_text()
        .contains("  .acme.orders.Order.Line line = 1;\n"));
}

#[test]
fn field_order_matters_unless_normalised() {
    let a = parse("syntax = \"proto3\";\nmessage M {\n  string a = 1;\n  int64 b = 2;\n}\n");
    let b = parse("syntax = \"proto3\";\nmessage M {\n  int64 b = 2;\n  string a = 1;\n}\n");
    assert_ne!(a.canonical_text(), b.canonical_text());
    assert_eq!(a.normalized_text(), b.normalized_text());
    assert_eq!(
        b.normalized_text(),
        "syntax = \"proto3\";\n\nmessage M {\n  string a = 1;\n  int64 b = 2;\n}\n"
    );
}

#[test]
fn import_order_matters_unless_normalised() {
    let a = parse(concat!(
        "syntax = \"proto3\";\n",
        "import \"google/protobuf/timestamp.proto\";\n",
        "import \"google/protobuf/duration.proto\";\n",
        "message M {\n",
        "  google.protobuf.Timestamp at = 1;\n",
        "  google.protobuf.Duration took = 2;\n",
        "}\n",
    ));
    let b = parse(concat!(
        "syntax = \"proto3\";\n",
        "import \"google/protobuf/duration.proto\";\n",
        "import \"google/protobuf/timestamp.proto\";\n",
        "message M {\n",
        "  google.protobuf.Timestamp at = 1;\n",
        "  google.protobuf.Duration took = 2;\n",
        "}\n",
    ));
    assert_ne!(a.canonical_text(), b.canonical_text());
    assert_eq!(a.normalized_text(), b.normalized_text());
    assert!(a.normalized_text().starts_with(concat!(
        "syntax = \"proto3\";\n",
        "\n",
        "import \"google/protobuf/duration.proto\";\n",
        "import \"google/protobuf/timestamp.proto\";\n",
    )));
}

#[test]
fn proto2_syntax_line_is_dropped_only_when_normalised() {
    let explicit = parse("syntax = \"proto2\";\nmessage M {\n  optional string a = 1;\n}\n");
    let implicit = parse("message M {\n  optional string a = 1;\n}\n");
    assert_eq!(
        explicit.canonical_text(),
        "syntax = \"proto2\";\n\nmessage M {\n  optional string a = 1;\n}\n"
    );
    assert_eq!(
        implicit.canonical_text(),
        "\nmessage M {\n  optional string a = 1;\n}\n"
    );
    assert_ne!(explicit.fingerprint(), implicit.fingerprint());
    assert_eq!(explicit.normalized_text(), implicit.normalized_text());
    assert_eq!(explicit.normalized_text(), implicit.canonical_text());
}

#[test]
fn maps_oneofs_and_labels_print_as_written() {
    let parsed = parse(concat!(
        "syntax = \"proto3\";\n",
        "package p;\n",
        "message M {\n",
        "  oneof choice {\n",
        "    string a = 1;\n",
        "    int32 b = 2;\n",
        "  }\n",
        "  map<string,Inner>   by_key = 3;\n",
        "  optional int32 maybe = 4;\n",
        "  repeated string tags = 5;\n",
        "  message Inner { int32 x = 1; }\n",
        "  enum Kind { KIND_UNSPECIFIED = 0; }\n",
        "  Kind kind = 6;\n",
        "}\n",
    ));
    assert_eq!(
        parsed.canonical_text(),
        concat!(
            "syntax = \"proto3\";\n",
            "package p;\n",
            "\n",
            "message M {\n",
            "  map<string, Inner> by_key = 3;\n",
            "  optional int32 maybe = 4;\n",
            "  repeated string tags = 5;\n",
            "  Kind kind = 6;\n",
            "\n",
            "  oneof choice {\n",
            "    string a = 1;\n",
            "    int32 b = 2;\n",
            "  }\n",
            "\n",
            "  message Inner {\n",
            "    int32 x = 1;\n",
            "  }\n",
            "  enum Kind {\n",
            "    KIND_UNSPECIFIED = 0;\n",
            "  }\n",
            "}\n",
        )
    );
    assert!(parsed
        .normalized_text()
        .contains("  map<string, .p.M.Inner> by_key = 3;\n"));
    assert!(parsed.normalized_text().contains("  .p.M.Kind kind = 6;\n"));
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn option_values_keep_their_spelling_until_normalised() {
    let parsed = parse(concat!(
        "syntax = \"proto2\";\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "extend google.protobuf.FieldOptions {\n",
        "  optional double weight = 50000;\n",
        "  optional uint32 mask = 50001;\n",
        "}\n",
        "message M {\n",
        "  optional double d = 1 [default = 1.50, (weight) = 2.0e3];\n",
        "  optional uint32 u = 2 [(mask) = 0x1F];\n",
        "  optional string s = 3 [default = \"a\\\"b\"];\n",
        "}\n",
    ));
    let canonical = parsed.canonical_text();
    assert!(
        canonical.contains(
            "  optional double d = 1 [\n    (weight) = 2.0e3,\n    default = 1.50\n  ];\n"
        ),
        "{canonical}"
    );
    assert!(
        canonical.contains("  optional uint32 u = 2 [(mask) = 0x1F];\n"),
        "{canonical}"
    );
    assert!(
        canonical.contains("  optional string s = 3 [default = \"a\\\"b\"];\n"),
        "{canonical}"
    );
    let normalized = parsed.normalized_text();
    assert!(
        normalized
            .contains("  optional double d = 1 [\n    default = 1.5,\n    (weight) = 2000\n  ];\n"),
        "{normalized}"
    );
    assert!(
        normalized.contains("  optional uint32 u = 2 [(mask) = 31];\n"),
        "{normalized}"
    );
    assert_fixed_points(&parsed, &[]);
}

#[test]
fn a_base64_descriptor_prints_as_proto_text() {
    let text = concat!(
        "syntax = \"proto3\";\n",
        "package p;\n",
        "message M {\n",
        "  string id = 1;\n",
        "  map<string, int64> counts = 2;\n",
        "  optional int32 maybe = 3;\n",
        "}\n",
    );
    let parsed = parse(text);
    let descriptor = parsed
        .serialized_descriptor()
        .expect("protobuf has a descriptor");
    let encoded = base64::engine::general_purpose::STANDARD.encode(descriptor);
    let from_descriptor = parse(&encoded);
    // Confluent's descriptor conversion: fully-qualified names, map entries as messages,
    // json_name when the descriptor has one.
    assert_eq!(
        from_descriptor.canonical_text(),
        concat!(
            "syntax = \"proto3\";\n",
            "package p;\n",
            "\n",
            "message M {\n",
            "  string id = 1 [json_name = \"id\"];\n",
            "  repeated .p.M.CountsEntry counts = 2 [json_name = \"counts\"];\n",
            "  optional int32 maybe = 3 [json_name = \"maybe\"];\n",
            "\n",
            "  message CountsEntry {\n",
            "    option map_entry = true;\n",
            "  \n",
            "    string key = 1 [json_name = \"key\"];\n",
            "    int64 value = 2 [json_name = \"value\"];\n",
            "  }\n",
            "}\n",
        )
    );
    assert!(from_descriptor
        .normalized_text()
        .contains("  map<string, int64> counts = 2 [json_name = \"counts\"];\n"));
    assert!(!from_descriptor.normalized_text().contains("CountsEntry"));
    assert_fixed_points(&from_descriptor, &[]);
}

#[test]
fn custom_options_survive_the_serialized_descriptor() {
    let text = concat!(
        "syntax = \"proto3\";\n",
        "package p;\n",
        "import \"google/protobuf/descriptor.proto\";\n",
        "extend google.protobuf.MessageOptions {\n",
        "  string owner = 50000;\n",
        "}\n",
        "message M {\n",
        "  option (owner) = \"team-a\";\n",
        "  string id = 1;\n",
        "}\n",
    );
    let parsed = parse(text);
    let descriptor = parsed
        .serialized_descriptor()
        .expect("protobuf has a descriptor");
    let encoded = base64::engine::general_purpose::STANDARD.encode(descriptor);
    let from_descriptor = parse(&encoded);
    assert!(
        from_descriptor
            .canonical_text()
            .contains("  option (p.owner) = \"team-a\";\n"),
        "{}",
        from_descriptor.canonical_text()
    );
}
