//! Option values as written: a tokenizer for `.proto` and text-format source, wire's
//! `OptionReader` (`TokParser`) and options rebuilt from `UninterpretedOption`s.

use prost_types::UninterpretedOption;

use super::printer::escape_bytes;
use super::tree::{OptValue, OptionElem};

// ---- option values as written ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Number(String),
    Str(Vec<u8>),
    Punct(char),
}

/// Splits `.proto` or text-format source into tokens, dropping whitespace and comments.
pub(super) fn tokenize(text: &str) -> Vec<Tok> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && next == Some(b'/') {
            while bytes.get(i).is_some_and(|&b| b != b'\n') {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            i += 2;
            while i < bytes.len()
                && !(bytes.get(i) == Some(&b'*') && bytes.get(i + 1) == Some(&b'/'))
            {
                i += 1;
            }
            i = (i + 2).min(bytes.len());
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
            {
                i += 1;
            }
            tokens.push(Tok::Ident(
                text.get(start..i).unwrap_or_default().to_owned(),
            ));
        } else if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|b| b.is_ascii_digit())) {
            let start = i;
            let hex = c == b'0' && matches!(next, Some(b'x' | b'X'));
            while let Some(&b) = bytes.get(i) {
                let previous = if i > start {
                    bytes.get(i - 1).copied()
                } else {
                    None
                };
                let exponent_sign =
                    !hex && matches!(b, b'+' | b'-') && matches!(previous, Some(b'e' | b'E'));
                if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            tokens.push(Tok::Number(
                text.get(start..i).unwrap_or_default().to_owned(),
            ));
        } else if c == b'"' || c == b'\'' {
            let (value, end) = read_string(bytes, i);
            tokens.push(Tok::Str(value));
            i = end;
        } else {
            let ch = text
                .get(i..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or('\u{fffd}');
            tokens.push(Tok::Punct(ch));
            i += ch.len_utf8().max(1);
        }
    }
    tokens
}

/// Reads the string literal opening at `start`; returns its bytes and the index after it.
fn read_string(bytes: &[u8], start: usize) -> (Vec<u8>, usize) {
    let quote = bytes.get(start).copied().unwrap_or(b'"');
    let mut out = Vec::new();
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        if b == quote {
            return (out, i + 1);
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&escape) = bytes.get(i + 1) else {
            return (out, i + 1);
        };
        i += 2;
        match escape {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' | b'X' => {
                let (value, used) = read_digits(bytes, i, 16, 2);
                out.push(u8::try_from(value).unwrap_or(u8::MAX));
                i += used;
            }
            b'0'..=b'7' => {
                let (value, used) = read_digits(bytes, i - 1, 8, 3);
                out.push(u8::try_from(value & 0xff).unwrap_or(u8::MAX));
                i += used.saturating_sub(1);
            }
            b'u' | b'U' => {
                let width = if escape == b'u' { 4 } else { 8 };
                let (value, used) = read_digits(bytes, i, 16, width);
                let ch = char::from_u32(value).unwrap_or('\u{fffd}');
                let mut buffer = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
                i += used;
            }
            other => out.push(other),
        }
    }
    (out, i)
}

/// Up to `max` digits in `radix` from `start`: their value and how many were read.
fn read_digits(bytes: &[u8], start: usize, radix: u32, max: usize) -> (u32, usize) {
    let mut value: u32 = 0;
    let mut used = 0;
    while used < max {
        let Some(digit) = bytes
            .get(start + used)
            .and_then(|&b| char::from(b).to_digit(radix))
        else {
            break;
        };
        value = value.saturating_mul(radix).saturating_add(digit);
        used += 1;
    }
    (value, used)
}

/// Reads option values the way wire's `OptionReader` does.
pub(super) struct TokParser<'t> {
    pub(super) tokens: &'t [Tok],
    pub(super) pos: usize,
}

impl TokParser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<Tok> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn eat(&mut self, punct: char) -> bool {
        if self.peek() == Some(&Tok::Punct(punct)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn value(&mut self) -> Option<OptValue> {
        match self.peek()?.clone() {
            Tok::Punct('{') => {
                self.pos += 1;
                self.map('}').map(OptValue::Map)
            }
            Tok::Punct('<') => {
                self.pos += 1;
                self.map('>').map(OptValue::Map)
            }
            Tok::Punct('[') => {
                self.pos += 1;
                self.list().map(OptValue::List)
            }
            Tok::Str(_) => {
                let mut bytes = Vec::new();
                while let Some(Tok::Str(part)) = self.peek() {
                    bytes.extend_from_slice(part);
                    self.pos += 1;
                }
                Some(OptValue::Str(escape_bytes(&bytes)))
            }
            Tok::Punct('-') => {
                self.pos += 1;
                match self.bump()? {
                    Tok::Number(text) | Tok::Ident(text) => {
                        Some(OptValue::Number(format!("-{text}")))
                    }
                    _ => None,
                }
            }
            Tok::Number(text) => {
                self.pos += 1;
                Some(OptValue::Number(text))
            }
            Tok::Ident(text) => {
                self.pos += 1;
                if text == "true" || text == "false" {
                    Some(OptValue::Bool(text))
                } else {
                    Some(OptValue::Enum(text))
                }
            }
            Tok::Punct(_) => None,
        }
    }

    fn map(&mut self, close: char) -> Option<Vec<(String, OptValue)>> {
        let mut entries: Vec<(String, OptValue)> = Vec::new();
        loop {
            if self.eat(close) {
                return Some(entries);
            }
            let key = match self.bump()? {
                Tok::Punct('[') => {
                    let mut name = String::new();
                    loop {
                        match self.bump()? {
                            Tok::Punct(']') => break,
                            Tok::Ident(part) | Tok::Number(part) => name.push_str(&part),
                            Tok::Punct(punct) => name.push(punct),
                            Tok::Str(_) => return None,
                        }
                    }
                    format!("[{name}]")
                }
                Tok::Ident(name) => name,
                _ => return None,
            };
            // `key: value`, or `key { ... }` with the colon left out before a message.
            let value = if self.eat(':') || matches!(self.peek(), Some(Tok::Punct('{' | '<'))) {
                self.value()?
            } else {
                return None;
            };
            match entries.iter_mut().find(|(known, _)| *known == key) {
                Some((_, slot)) => {
                    let previous = std::mem::replace(slot, OptValue::List(Vec::new()));
                    let mut items = match previous {
                        OptValue::List(items) => items,
                        other => vec![other],
                    };
                    match value {
                        OptValue::List(more) => items.extend(more),
                        other => items.push(other),
                    }
                    *slot = OptValue::List(items);
                }
                None => entries.push((key, value)),
            }
            if !self.eat(',') {
                self.eat(';');
            }
        }
    }

    fn list(&mut self) -> Option<Vec<OptValue>> {
        let mut items = Vec::new();
        loop {
            if self.eat(']') {
                return Some(items);
            }
            items.push(self.value()?);
            if self.eat(',') {
                continue;
            }
            return if self.eat(']') { Some(items) } else { None };
        }
    }
}

/// The option `parsed` as written: its name from the descriptor, its value re-read from the
/// source (`raw`, the text of `name = value`) so numbers keep their spelling and aggregates
/// their structure.
pub(super) fn option_from_uninterpreted(
    parsed: &UninterpretedOption,
    raw: Option<&str>,
) -> OptionElem {
    let value = raw
        .and_then(|raw| {
            let tokens = tokenize(raw);
            let equals = tokens.iter().position(|token| *token == Tok::Punct('='))?;
            TokParser {
                tokens: &tokens,
                pos: equals + 1,
            }
            .value()
        })
        .unwrap_or_else(|| uninterpreted_value(parsed));
    let parts = &parsed.name;
    let (name, parenthesized, rest) = match parts.split_first() {
        Some((first, rest)) if first.is_extension => (first.name_part.clone(), true, rest),
        _ => {
            let plain = parts.iter().take_while(|part| !part.is_extension).count();
            let name: Vec<&str> = parts
                .iter()
                .take(plain)
                .map(|part| part.name_part.as_str())
                .collect();
            (
                name.join("."),
                false,
                parts.get(plain..).unwrap_or_default(),
            )
        }
    };
    let mut value = value;
    for part in rest.iter().rev() {
        let sub_name = if part.is_extension {
            format!("({})", part.name_part)
        } else {
            part.name_part.clone()
        };
        value = OptValue::Option(Box::new(OptionElem {
            name: sub_name,
            parenthesized: false,
            value,
        }));
    }
    OptionElem {
        name,
        parenthesized,
        value,
    }
}

/// The value of an uninterpreted option when its source text is not available.
fn uninterpreted_value(option: &UninterpretedOption) -> OptValue {
    if let Some(identifier) = &option.identifier_value {
        if identifier == "true" || identifier == "false" {
            return OptValue::Bool(identifier.clone());
        }
        return OptValue::Enum(identifier.clone());
    }
    if let Some(value) = option.positive_int_value {
        return OptValue::Number(value.to_string());
    }
    if let Some(value) = option.negative_int_value {
        return OptValue::Number(value.to_string());
    }
    if let Some(value) = option.double_value {
        return OptValue::Number(format!("{value}"));
    }
    if let Some(value) = &option.string_value {
        return OptValue::Str(escape_bytes(value));
    }
    if let Some(aggregate) = &option.aggregate_value {
        let tokens = tokenize(&format!("{{{aggregate}}}"));
        if let Some(value) = (TokParser {
            tokens: &tokens,
            pos: 0,
        })
        .value()
        {
            return value;
        }
    }
    OptValue::Enum(String::new())
}

/// The text of a scalar (a default value) as written: a number, `-inf`, an identifier.
pub(super) fn scalar_text(raw: &str) -> Option<String> {
    let tokens = tokenize(raw);
    match tokens.as_slice() {
        [Tok::Number(text) | Tok::Ident(text)] => Some(text.clone()),
        [Tok::Punct('-'), Tok::Number(text) | Tok::Ident(text)] => Some(format!("-{text}")),
        _ => None,
    }
}
