//! Unit tests of the printer's pieces: number normalisation, escaping, option values as
//! written, indentation and Java's double formatting.

use super::descriptor::java_float_string;
use super::numbers::{normalize_number, round_half_even};
use super::printer::{append_indented, escape_bytes, escape_str};
use super::tokens::{tokenize, Tok, TokParser};
use super::tree::OptValue;

#[test]
fn numbers_normalise_like_decimal_format() {
    for (raw, expected) in [
        ("123", "123"),
        ("0123", "83"),
        ("0x123", "291"),
        ("0123.0", "123"),
        ("123.", "123"),
        ("123.0", "123"),
        ("123.00", "123"),
        ("123e1", "1230"),
        ("123E1", "1230"),
        ("123E+1", "1230"),
        ("123E-1", "12.3"),
        (".123E+3", "123"),
        ("1.23E+3", "1230"),
        ("12.3E+3", "12300"),
        ("123.E+3", "123000"),
        ("123.4E+3", "123400"),
        ("123.45E+3", "123450"),
        ("123.456E+3", "123456"),
        ("123.4567E+2", "12345.67"),
        ("-2.0", "-2"),
        ("-5", "-5"),
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("nan", "nan"),
    ] {
        assert_eq!(normalize_number(raw), expected, "{raw}");
    }
}

#[test]
fn half_even_rounding() {
    assert_eq!(round_half_even("1.0005", 3), "1");
    assert_eq!(round_half_even("1.0015", 3), "1.002");
    assert_eq!(round_half_even("1.00151", 3), "1.002");
    assert_eq!(round_half_even("9.9996", 3), "10");
    assert_eq!(round_half_even("0.5", 3), "0.5");
    assert_eq!(round_half_even("12", 3), "12");
}

#[test]
fn escapes_follow_confluent() {
    assert_eq!(
        escape_str("a\\b\"c'd\ne\u{7}\u{1}"),
        "a\\\\b\\\"c\\'d\\ne\\a\\001"
    );
    assert_eq!(escape_bytes(&[b'a', 0xff]), "a\\377");
}

#[test]
fn aggregate_values_read_like_wire() {
    let tokens = tokenize("(x) = { a: 1 b: \"s\" c { d: true } e: [1, 2] [ext.name]: X a: 3 }");
    let equals = tokens
        .iter()
        .position(|t| *t == Tok::Punct('='))
        .expect("an equals sign");
    let value = TokParser {
        tokens: &tokens,
        pos: equals + 1,
    }
    .value()
    .expect("an aggregate");
    assert_eq!(
        value,
        OptValue::Map(vec![
            (
                "a".to_owned(),
                OptValue::List(vec![
                    OptValue::Number("1".to_owned()),
                    OptValue::Number("3".to_owned())
                ])
            ),
            ("b".to_owned(), OptValue::Str("s".to_owned())),
            (
                "c".to_owned(),
                OptValue::Map(vec![("d".to_owned(), OptValue::Bool("true".to_owned()))])
            ),
            (
                "e".to_owned(),
                OptValue::List(vec![
                    OptValue::Number("1".to_owned()),
                    OptValue::Number("2".to_owned())
                ])
            ),
            ("[ext.name]".to_owned(), OptValue::Enum("X".to_owned())),
        ])
    );
}

#[test]
fn strings_unescape_then_escape() {
    let tokens = tokenize(r#""a\x41\101\u00e9\n" 'b'"#);
    assert_eq!(
        tokens,
        vec![
            Tok::Str("aAA\u{e9}\n".as_bytes().to_vec()),
            Tok::Str(b"b".to_vec())
        ]
    );
}

#[test]
fn indentation_follows_java_split() {
    let mut out = String::new();
    append_indented(&mut out, "a\n\nb\n\n");
    assert_eq!(out, "  a\n  \n  b\n");
    let mut out = String::new();
    append_indented(&mut out, "");
    assert_eq!(out, "  \n");
}

#[test]
fn java_doubles() {
    assert_eq!(java_float_string(1.5, "1.5"), "1.5");
    assert_eq!(java_float_string(2.0, "2"), "2.0");
    assert_eq!(java_float_string(1e10, "10000000000"), "1.0E10");
    assert_eq!(java_float_string(1.5e-5, "0.000015"), "1.5E-5");
}
