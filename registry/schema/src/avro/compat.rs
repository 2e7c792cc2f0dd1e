//! Avro schema resolution as a static check, following the Avro specification's resolution
//! rules the way Avro Java's `SchemaCompatibility` (and therefore Confluent) applies them:
//! named types match by unqualified name or by a reader alias, fields match by name or reader
//! alias, promotions int→long→float→double and string↔bytes, every writer union branch must
//! be readable, a reader enum default absorbs unknown writer symbols. Logical types are
//! compared by their underlying type, as Confluent does by default.
//!
//! Unlike `apache_avro::schema_compatibility` it does not stop at the first problem: it walks
//! the whole schema and returns every incompatibility with its location.

use std::collections::HashSet;

use apache_avro::schema::{
    EnumSchema, FixedSchema, InnerDecimalSchema, Name, RecordSchema, UuidSchema,
};
use apache_avro::Schema;

use super::AvroSchema;
use crate::findings::{Direction, Incompatibility, Rule};

/// Every reason why `reader` cannot read data written with `writer`. `direction` says which
/// of the two is the new schema (Backward: the reader).
pub(crate) fn can_read(
    reader: &AvroSchema,
    writer: &AvroSchema,
    direction: Direction,
) -> Vec<Incompatibility> {
    let mut checker = Checker {
        reader,
        writer,
        direction,
        in_progress: HashSet::new(),
        in_progress_log: Vec::new(),
        found: Vec::new(),
    };
    let root_path = reader
        .root()
        .name()
        .map(|name| name.name().to_owned())
        .unwrap_or_default();
    let mut at = At {
        root: root_path,
        steps: Vec::new(),
    };
    checker.compare(reader.root(), writer.root(), &mut at);
    checker.found
}

/// The structural shape of a schema once logical types are stripped to their base types
/// (one mapping of Avro's logical types, shared with codegen).
#[derive(Debug, Clone, Copy)]
pub enum Shape<'s> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(&'s Schema),
    Map(&'s Schema),
    Union(&'s [Schema]),
    Record(&'s RecordSchema),
    Enum(&'s EnumSchema),
    Fixed(&'s FixedSchema),
}

/// The shape of `schema` (a `Ref` must be resolved first).
pub fn shape(schema: &Schema) -> Shape<'_> {
    match schema {
        Schema::Null => Shape::Null,
        Schema::Boolean => Shape::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Shape::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Shape::Long,
        Schema::Float => Shape::Float,
        Schema::Double => Shape::Double,
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => Shape::Bytes,
        Schema::String | Schema::Uuid(UuidSchema::String) => Shape::String,
        Schema::Uuid(UuidSchema::Fixed(fixed)) | Schema::Duration(fixed) => Shape::Fixed(fixed),
        Schema::Decimal(decimal) => match &decimal.inner {
            InnerDecimalSchema::Bytes => Shape::Bytes,
            InnerDecimalSchema::Fixed(fixed) => Shape::Fixed(fixed),
        },
        Schema::Array(array) => Shape::Array(&array.items),
        Schema::Map(map) => Shape::Map(&map.types),
        Schema::Union(union) => Shape::Union(union.variants()),
        Schema::Record(record) => Shape::Record(record),
        Schema::Enum(inner) => Shape::Enum(inner),
        Schema::Fixed(inner) => Shape::Fixed(inner),
        // A `Ref` is resolved before `shape` is called; an unresolvable one is treated as
        // null so that it mismatches everything but itself.
        Schema::Ref { .. } => Shape::Null,
    }
}

/// A short, readable description of a schema for "old vs new".
pub(crate) fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Ref { name } => name.fullname(None),
        Schema::Record(record) => format!("record {}", record.name.fullname(None)),
        Schema::Enum(inner) => format!("enum {} {:?}", inner.name.fullname(None), inner.symbols),
        Schema::Fixed(inner) => format!("fixed {}({})", inner.name.fullname(None), inner.size),
        Schema::Array(array) => format!("array<{}>", describe(&array.items)),
        Schema::Map(map) => format!("map<{}>", describe(&map.types)),
        Schema::Union(union) => {
            let branches: Vec<String> = union.variants().iter().map(describe).collect();
            format!("[{}]", branches.join(", "))
        }
        other => serde_json::to_string(other)
            .map(|text| text.trim_matches('"').to_owned())
            .unwrap_or_else(|_| "?".to_owned()),
    }
}

/// One step of the walk into the reader schema; rendered only when something is reported.
#[derive(Clone, Copy)]
enum Step<'s> {
    Field { index: usize, name: &'s str },
    FieldType,
    Items,
    Values,
    Branch(usize),
}

/// Where the walk is: the root's name and the steps taken from it.
struct At<'s> {
    root: String,
    steps: Vec<Step<'s>>,
}

impl<'s> At<'s> {
    fn enter(&mut self, step: Step<'s>) {
        self.steps.push(step);
    }

    fn leave(&mut self) {
        self.steps.pop();
    }

    /// The JSON pointer into the reader schema, e.g. `/fields/1/type`.
    fn pointer(&self) -> String {
        let mut pointer = String::new();
        for step in &self.steps {
            match step {
                Step::Field { index, .. } => pointer.push_str(&format!("/fields/{index}")),
                Step::FieldType => pointer.push_str("/type"),
                Step::Items => pointer.push_str("/items"),
                Step::Values => pointer.push_str("/values"),
                Step::Branch(index) => pointer.push_str(&format!("/{index}")),
            }
        }
        if pointer.is_empty() {
            pointer.push('/');
        }
        pointer
    }

    /// The readable path, e.g. `Order.items[].price`.
    fn path(&self) -> String {
        let mut path = self.root.clone();
        for step in &self.steps {
            match step {
                Step::Field { name, .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Step::Items => path.push_str("[]"),
                Step::Values => path.push_str("{}"),
                Step::FieldType | Step::Branch(_) => {}
            }
        }
        path
    }
}

struct Checker<'s> {
    reader: &'s AvroSchema,
    writer: &'s AvroSchema,
    direction: Direction,
    /// Named (reader, writer) pairs already being compared: recursion stops there.
    in_progress: HashSet<(String, String)>,
    /// Pairs in the order they were added, so a probe can undo its own additions.
    in_progress_log: Vec<(String, String)>,
    found: Vec<Incompatibility>,
}

impl<'s> Checker<'s> {
    fn reader_side(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "new",
            Direction::Forward => "old",
        }
    }

    fn writer_side(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "old",
            Direction::Forward => "new",
        }
    }

    fn report(
        &mut self,
        rule: Rule,
        at: &At,
        reader: Option<String>,
        writer: Option<String>,
        description: String,
    ) {
        let (old, new) = match self.direction {
            Direction::Backward => (writer, reader),
            Direction::Forward => (reader, writer),
        };
        self.found.push(Incompatibility {
            rule,
            direction: self.direction,
            path: at.path(),
            location: at.pointer(),
            old,
            new,
            description,
            old_version: None,
        });
    }

    /// True when `reader` can read `writer`; leaves no trace (used to pick a reader union
    /// branch).
    fn readable(&mut self, reader: &'s Schema, writer: &'s Schema) -> bool {
        let found_mark = self.found.len();
        let log_mark = self.in_progress_log.len();
        let mut at = At {
            root: String::new(),
            steps: Vec::new(),
        };
        self.compare(reader, writer, &mut at);
        let readable = self.found.len() == found_mark;
        self.found.truncate(found_mark);
        for key in self.in_progress_log.drain(log_mark..) {
            self.in_progress.remove(&key);
        }
        readable
    }

    fn compare(&mut self, reader: &'s Schema, writer: &'s Schema, at: &mut At<'s>) {
        let reader = self.reader.resolve(reader);
        let writer = self.writer.resolve(writer);
        match (shape(reader), shape(writer)) {
            (_, Shape::Union(branches)) if !matches!(shape(reader), Shape::Union(_)) => {
                // Every branch the writer may have used must be readable.
                for (index, branch) in branches.iter().enumerate() {
                    at.enter(Step::Branch(index));
                    self.compare(reader, branch, at);
                    at.leave();
                }
            }
            (Shape::Union(_), Shape::Union(writer_branches)) => {
                for (index, branch) in writer_branches.iter().enumerate() {
                    at.enter(Step::Branch(index));
                    self.compare_union_reader(reader, branch, at);
                    at.leave();
                }
            }
            (Shape::Union(_), _) => self.compare_union_reader(reader, writer, at),
            (Shape::Null, Shape::Null)
            | (Shape::Boolean, Shape::Boolean)
            | (Shape::Int, Shape::Int)
            | (Shape::Long, Shape::Long | Shape::Int)
            | (Shape::Float, Shape::Float | Shape::Long | Shape::Int)
            | (Shape::Double, Shape::Double | Shape::Float | Shape::Long | Shape::Int)
            | (Shape::Bytes, Shape::Bytes | Shape::String)
            | (Shape::String, Shape::String | Shape::Bytes) => {}
            (Shape::Array(reader_items), Shape::Array(writer_items)) => {
                at.enter(Step::Items);
                self.compare(reader_items, writer_items, at);
                at.leave();
            }
            (Shape::Map(reader_values), Shape::Map(writer_values)) => {
                at.enter(Step::Values);
                self.compare(reader_values, writer_values, at);
                at.leave();
            }
            (Shape::Fixed(reader_fixed), Shape::Fixed(writer_fixed)) => {
                self.check_name(
                    &reader_fixed.name,
                    &reader_fixed.aliases,
                    &writer_fixed.name,
                    at,
                );
                if reader_fixed.size != writer_fixed.size {
                    let description = format!(
                        "The size of the fixed type at path '{}' is {} in the {} schema and {} in the {} schema",
                        at.pointer(),
                        reader_fixed.size,
                        self.reader_side(),
                        writer_fixed.size,
                        self.writer_side()
                    );
                    self.report(
                        Rule::FixedSizeMismatch,
                        at,
                        Some(reader_fixed.size.to_string()),
                        Some(writer_fixed.size.to_string()),
                        description,
                    );
                }
            }
            (Shape::Enum(reader_enum), Shape::Enum(writer_enum)) => {
                self.check_name(
                    &reader_enum.name,
                    &reader_enum.aliases,
                    &writer_enum.name,
                    at,
                );
                self.check_enum_symbols(reader_enum, writer_enum, at);
            }
            (Shape::Record(reader_record), Shape::Record(writer_record)) => {
                self.check_name(
                    &reader_record.name,
                    &reader_record.aliases,
                    &writer_record.name,
                    at,
                );
                let key = (
                    reader_record.name.fullname(None),
                    writer_record.name.fullname(None),
                );
                if self.in_progress.insert(key.clone()) {
                    self.in_progress_log.push(key);
                    self.compare_records(reader_record, writer_record, at);
                }
            }
            _ => {
                let description = format!(
                    "The type at path '{}' is '{}' in the {} schema, which cannot read '{}' of the {} schema",
                    at.pointer(),
                    describe(reader),
                    self.reader_side(),
                    describe(writer),
                    self.writer_side()
                );
                self.report(
                    Rule::TypeMismatch,
                    at,
                    Some(describe(reader)),
                    Some(describe(writer)),
                    description,
                );
            }
        }
    }

    /// A reader union reading one (non-union) writer type: some branch must read it.
    fn compare_union_reader(&mut self, reader: &'s Schema, writer: &'s Schema, at: &mut At<'s>) {
        let Shape::Union(branches) = shape(reader) else {
            return self.compare(reader, writer, at);
        };
        if branches.iter().any(|branch| self.readable(branch, writer)) {
            return;
        }
        let description = format!(
            "The {} union at path '{}' has no branch that can read type '{}' of the {} schema",
            self.reader_side(),
            at.pointer(),
            describe(self.writer.resolve(writer)),
            self.writer_side()
        );
        self.report(
            Rule::MissingUnionBranch,
            at,
            Some(describe(reader)),
            Some(describe(writer)),
            description,
        );
    }

    fn check_name(
        &mut self,
        reader: &Name,
        aliases: &Option<Vec<apache_avro::schema::Alias>>,
        writer: &Name,
        at: &At,
    ) {
        if reader.name() == writer.name() {
            return;
        }
        let writer_full = writer.fullname(None);
        let aliased = aliases.iter().flatten().any(|alias| {
            alias.fullname(reader.namespace()) == writer_full || alias.name() == writer_full
        });
        if aliased {
            return;
        }
        let description = format!(
            "The name of the type at path '{}' is '{}' in the {} schema and '{}' in the {} schema",
            at.pointer(),
            reader.fullname(None),
            self.reader_side(),
            writer_full,
            self.writer_side()
        );
        self.report(
            Rule::NameMismatch,
            at,
            Some(reader.fullname(None)),
            Some(writer_full),
            description,
        );
    }

    fn check_enum_symbols(&mut self, reader: &EnumSchema, writer: &EnumSchema, at: &At) {
        let missing: Vec<&String> = writer
            .symbols
            .iter()
            .filter(|symbol| !reader.symbols.contains(symbol))
            .collect();
        if missing.is_empty() {
            return;
        }
        let reader_default_usable = reader
            .default
            .as_ref()
            .is_some_and(|default| reader.symbols.contains(default));
        if reader_default_usable {
            return;
        }
        let missing_list = missing
            .iter()
            .map(|symbol| symbol.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let description = format!(
            "The {} enum at path '{}' lacks symbols [{}] of the {} schema and has no default",
            self.reader_side(),
            at.pointer(),
            missing_list,
            self.writer_side()
        );
        self.report(
            Rule::MissingEnumSymbols,
            at,
            Some(format!("{:?}", reader.symbols)),
            Some(format!("{:?}", writer.symbols)),
            description,
        );
    }

    fn compare_records(
        &mut self,
        reader: &'s RecordSchema,
        writer: &'s RecordSchema,
        at: &mut At<'s>,
    ) {
        for (index, reader_field) in reader.fields.iter().enumerate() {
            // Only the reader's aliases count (the writer's own aliases are not used), so the
            // writer is searched by declared field name, not through its alias-aware lookup.
            let writer_field = std::iter::once(&reader_field.name)
                .chain(reader_field.aliases.iter())
                .find_map(|name| writer.fields.iter().find(|field| &field.name == name));
            at.enter(Step::Field {
                index,
                name: &reader_field.name,
            });
            match writer_field {
                Some(writer_field) => {
                    at.enter(Step::FieldType);
                    self.compare(&reader_field.schema, &writer_field.schema, at);
                    at.leave();
                }
                None if reader_field.default.is_none() => {
                    let description = format!(
                        "The field '{}' at path '{}' in the {} schema has no default value and is missing in the {} schema",
                        reader_field.name,
                        at.pointer(),
                        self.reader_side(),
                        self.writer_side()
                    );
                    self.report(
                        Rule::ReaderFieldMissingDefaultValue,
                        at,
                        Some(format!(
                            "{}: {}",
                            reader_field.name,
                            describe(&reader_field.schema)
                        )),
                        None,
                        description,
                    );
                }
                None => {}
            }
            at.leave();
        }
    }
}
