//! Avro: parsing (with references), canonical text, and the named-type table the
//! compatibility checker resolves `Ref`s through.

pub(crate) mod compat;

use std::collections::{HashMap, HashSet};

use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use apache_avro::Schema;

use crate::{ParseError, ResolvedReference};

/// A parsed Avro schema plus every named type it can reach (its own and its references').
#[derive(Debug, Clone)]
pub(crate) struct AvroSchema {
    root: Schema,
    named: HashMap<String, Schema>,
}

impl AvroSchema {
    /// The root schema and the referenced named types.
    pub(crate) fn parts(&self) -> (&Schema, Vec<&Schema>) {
        let mut named: Vec<(&String, &Schema)> = self.named.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        (&self.root, named.into_iter().map(|(_, s)| s).collect())
    }

    pub(crate) fn parse(text: &str, references: &[ResolvedReference]) -> Result<Self, ParseError> {
        let (root, referenced) = if references.is_empty() {
            let root = Schema::parse_str(text).map_err(|e| ParseError::Avro(e.to_string()))?;
            (root, Vec::new())
        } else {
            Schema::parse_str_with_list(text, references.iter().map(|r| r.schema.as_str()))
                .map_err(|e| ParseError::Avro(e.to_string()))?
        };
        // Only types that some `Ref` points at are kept by name: most schemas have none, and
        // a copy of every named type would double the memory of each parsed schema.
        let mut wanted = HashSet::new();
        for schema in referenced.iter().chain(std::iter::once(&root)) {
            collect_refs(schema, &mut wanted);
        }
        let mut named = HashMap::new();
        if !wanted.is_empty() {
            for schema in referenced.iter().chain(std::iter::once(&root)) {
                collect_named(schema, &wanted, &mut named);
            }
        }
        Ok(Self { root, named })
    }

    pub(crate) fn root(&self) -> &Schema {
        &self.root
    }

    /// Follows a `Ref` to its definition; other schemas are returned as they are.
    pub(crate) fn resolve<'s>(&'s self, schema: &'s Schema) -> &'s Schema {
        match schema {
            Schema::Ref { name } => self.named.get(&name.fullname(None)).unwrap_or(schema),
            other => other,
        }
    }

    /// Compact single-line JSON, re-serialised from the parsed schema (Confluent's form).
    pub(crate) fn canonical_text(&self) -> String {
        // Serialising a parsed schema into a String cannot fail: every value is plain JSON.
        serde_json::to_string(&self.root).unwrap_or_default()
    }

    /// Canonical JSON with object keys sorted, so attribute order does not matter.
    pub(crate) fn normalized_text(&self) -> String {
        serde_json::to_value(&self.root)
            .map(|value| value.to_string())
            .unwrap_or_else(|_| self.canonical_text())
    }

    pub(crate) fn record_names(&self) -> Vec<String> {
        match &self.root {
            Schema::Record(record) => vec![record.name.fullname(None)],
            Schema::Enum(schema) => vec![schema.name.fullname(None)],
            Schema::Fixed(schema) => vec![schema.name.fullname(None)],
            Schema::Union(union) => union
                .variants()
                .iter()
                .filter_map(|variant| variant.name().map(|name| name.fullname(None)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn children(schema: &Schema) -> Vec<&Schema> {
    match schema {
        Schema::Record(record) => record.fields.iter().map(|field| &field.schema).collect(),
        Schema::Array(array) => vec![&array.items],
        Schema::Map(map) => vec![&map.types],
        Schema::Union(union) => union.variants().iter().collect(),
        _ => Vec::new(),
    }
}

fn collect_refs(schema: &Schema, wanted: &mut HashSet<String>) {
    if let Schema::Ref { name } = schema {
        wanted.insert(name.fullname(None));
    }
    for child in children(schema) {
        collect_refs(child, wanted);
    }
}

fn collect_named(schema: &Schema, wanted: &HashSet<String>, named: &mut HashMap<String, Schema>) {
    let definition = match schema {
        Schema::Record(record) => Some((record.name.fullname(None), schema.clone())),
        Schema::Enum(inner) => Some((inner.name.fullname(None), schema.clone())),
        Schema::Fixed(inner) | Schema::Duration(inner) => {
            Some((inner.name.fullname(None), Schema::Fixed(inner.clone())))
        }
        Schema::Decimal(decimal) => match &decimal.inner {
            InnerDecimalSchema::Fixed(inner) => {
                Some((inner.name.fullname(None), Schema::Fixed(inner.clone())))
            }
            InnerDecimalSchema::Bytes => None,
        },
        Schema::Uuid(UuidSchema::Fixed(inner)) => {
            Some((inner.name.fullname(None), Schema::Fixed(inner.clone())))
        }
        _ => None,
    };
    if let Some((name, definition)) = definition {
        if wanted.contains(&name) {
            named.insert(name, definition);
        }
    }
    for child in children(schema) {
        collect_named(child, wanted, named);
    }
}
