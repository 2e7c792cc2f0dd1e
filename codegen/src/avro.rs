//! Avro: Rust types with serde for records, enums, fixed, unions, arrays, maps and logical
//! types, round-tripping through apache-avro; namespaces become modules, `doc` becomes `///`,
//! recursive references are boxed; every record at the root of a schema file gets the SDK's
//! `Message` impl with that file's text as its schema.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::schema::{Name, RecordSchema, Schema};
use heck::{ToSnakeCase, ToUpperCamelCase};
use herald_schema::AvroShape;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::tree::{ident, relative_path, ModulePath, ModuleTree};
use crate::{GenerateError, MessageInfo, SchemaKind};

/// One `.avsc` text (a file, or a pinned registry version).
#[derive(Debug, Clone)]
pub struct AvroSource {
    /// Where it came from, for error messages (`schemas/payment.avsc`).
    pub origin: String,
    pub text: String,
}

fn full_name(name: &Name) -> String {
    name.fullname(None)
}

fn module_of(name: &Name) -> ModulePath {
    name.namespace()
        .map(|ns| ns.split('.').map(|s| s.to_snake_case()).collect())
        .unwrap_or_default()
}

struct Named<'s> {
    schema: &'s Schema,
}

/// Collects every named type reachable from `schema`, by full name.
fn collect<'s>(schema: &'s Schema, named: &mut BTreeMap<String, Named<'s>>) {
    match schema {
        Schema::Record(record) => {
            let key = full_name(&record.name);
            if named.contains_key(&key) {
                return;
            }
            named.insert(key, Named { schema });
            for field in &record.fields {
                collect(&field.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.entry(full_name(&e.name)).or_insert(Named { schema });
        }
        Schema::Fixed(f) => {
            named.entry(full_name(&f.name)).or_insert(Named { schema });
        }
        Schema::Array(array) => collect(&array.items, named),
        Schema::Map(map) => collect(&map.types, named),
        Schema::Union(union) => {
            for variant in union.variants() {
                collect(variant, named);
            }
        }
        _ => {}
    }
}

/// Records each record's field types reference (to find cycles, which need a `Box`).
fn references(schema: &Schema, out: &mut BTreeSet<String>) {
    match schema {
        Schema::Record(r) => {
            out.insert(full_name(&r.name));
        }
        Schema::Ref { name } => {
            out.insert(full_name(name));
        }
        Schema::Array(a) => references(&a.items, out),
        Schema::Map(m) => references(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// Every named type `schema` mentions by reference (without walking into other types'
/// definitions: a reference is where the name is used, not defined).
fn referenced(schema: &Schema, out: &mut BTreeSet<String>) {
    match schema {
        Schema::Ref { name } => {
            out.insert(full_name(name));
        }
        Schema::Record(r) => r.fields.iter().for_each(|f| referenced(&f.schema, out)),
        Schema::Array(a) => referenced(&a.items, out),
        Schema::Map(m) => referenced(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| referenced(v, out)),
        _ => {}
    }
}

/// Which schema texts use types another text defines: the Avro form of imports. A text's
/// references are named, as Confluent names Avro references, by the full name of the
/// referenced text's root type.
pub(crate) struct Graph {
    /// Root type full name of each text.
    pub(crate) roots: Vec<String>,
    /// Texts each text uses directly (by index).
    direct: Vec<Vec<usize>>,
}

impl Graph {
    pub(crate) fn new(schemas: &[Schema]) -> Self {
        let roots: Vec<String> = schemas
            .iter()
            .map(|schema| match schema {
                Schema::Record(r) => full_name(&r.name),
                Schema::Enum(e) => full_name(&e.name),
                Schema::Fixed(f) => full_name(&f.name),
                _ => String::new(),
            })
            .collect();
        let defined: Vec<BTreeSet<String>> = schemas
            .iter()
            .map(|schema| {
                let mut named = BTreeMap::new();
                collect(schema, &mut named);
                named.into_keys().collect()
            })
            .collect();
        let direct = schemas
            .iter()
            .enumerate()
            .map(|(index, schema)| {
                let mut used = BTreeSet::new();
                referenced(schema, &mut used);
                let mut texts: Vec<usize> = used
                    .iter()
                    .filter(|name| !defined[index].contains(*name))
                    .filter_map(|name| defined.iter().position(|d| d.contains(name)))
                    .filter(|other| *other != index)
                    .collect();
                texts.sort_unstable();
                texts.dedup();
                texts
            })
            .collect();
        Self { roots, direct }
    }

    /// Root names of the texts `index` uses directly.
    pub(crate) fn imports(&self, index: usize) -> Vec<&str> {
        self.direct
            .get(index)
            .map(|texts| texts.iter().map(|t| self.roots[*t].as_str()).collect())
            .unwrap_or_default()
    }

    /// Every text `index` uses, directly or not, each after the ones it uses.
    pub(crate) fn dependencies(&self, index: usize) -> Vec<usize> {
        fn visit(graph: &Graph, at: usize, seen: &mut BTreeSet<usize>, out: &mut Vec<usize>) {
            for next in graph.direct.get(at).into_iter().flatten() {
                if seen.insert(*next) {
                    visit(graph, *next, seen, out);
                    out.push(*next);
                }
            }
        }
        let mut seen = BTreeSet::from([index]);
        let mut out = Vec::new();
        visit(self, index, &mut seen, &mut out);
        out
    }
}

/// Parses every source together (their named types may refer to each other).
pub(crate) fn parse(sources: &[AvroSource]) -> Result<Vec<Schema>, GenerateError> {
    for source in sources {
        if let Err(error) = serde_json::from_str::<serde_json::Value>(&source.text) {
            return Err(GenerateError::Schema {
                origin: source.origin.clone(),
                line: error.line(),
                column: error.column(),
                message: error.to_string(),
            });
        }
    }
    Schema::parse_list(sources.iter().map(|s| s.text.as_str())).map_err(|e| {
        // apache-avro does not say which text failed: find it by parsing alone when possible.
        let origin = sources
            .iter()
            .find(|s| Schema::parse_str(&s.text).is_err())
            .map_or_else(|| "avro schemas".to_owned(), |s| s.origin.clone());
        GenerateError::Schema {
            origin,
            line: 1,
            column: 1,
            message: e.to_string(),
        }
    })
}

struct Context<'s> {
    named: BTreeMap<String, Named<'s>>,
    /// Record → records its fields mention directly.
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Context<'_> {
    /// Whether `from` can reach `to` through record fields.
    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(next) = stack.pop() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                if let Some(edges) = self.edges.get(&next) {
                    stack.extend(edges.iter().cloned());
                }
            }
        }
        false
    }
}

/// A field's Rust type and the serde attribute it needs.
struct FieldType {
    ty: TokenStream,
    with: Option<&'static str>,
}

/// Generates every named type of `sources` into `tree`; returns the records by full name.
pub(crate) fn generate(
    sources: &[AvroSource],
    tree: &mut ModuleTree,
) -> Result<BTreeMap<String, MessageInfo>, GenerateError> {
    let mut messages = BTreeMap::new();
    if sources.is_empty() {
        return Ok(messages);
    }
    let schemas = parse(sources)?;
    let graph = Graph::new(&schemas);
    let mut named = BTreeMap::new();
    for schema in &schemas {
        collect(schema, &mut named);
    }
    let mut edges = BTreeMap::new();
    for (name, entry) in &named {
        if let Schema::Record(record) = entry.schema {
            let mut out = BTreeSet::new();
            for field in &record.fields {
                references(&field.schema, &mut out);
            }
            edges.insert(name.clone(), out);
        }
    }
    let context = Context { named, edges };
    for (name, entry) in &context.named {
        match entry.schema {
            Schema::Record(record) => {
                let (module, item, fields) = record_item(record, &context)?;
                tree.push(&module, item);
                messages.insert(
                    name.clone(),
                    MessageInfo {
                        module,
                        rust_type: record.name.name().to_upper_camel_case(),
                        fields,
                        kind: SchemaKind::AvroNested,
                    },
                );
            }
            Schema::Enum(e) => {
                let module = module_of(&e.name);
                let ty = ident(&e.name.name().to_upper_camel_case());
                let doc = docs(e.doc.as_deref());
                let variants = e.symbols.iter().map(|symbol| {
                    let variant = ident(&symbol.to_upper_camel_case());
                    quote! { #[serde(rename = #symbol)] #variant }
                });
                tree.push(
                    &module,
                    quote! {
                        #doc
                        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
                            ::herald::codegen::serde::Serialize, ::herald::codegen::serde::Deserialize)]
                        #[serde(crate = "::herald::codegen::serde")]
                        pub enum #ty { #(#variants),* }
                    },
                );
            }
            Schema::Fixed(f) => {
                let module = module_of(&f.name);
                let ty = ident(&f.name.name().to_upper_camel_case());
                let size = f.size;
                let doc = docs(f.doc.as_deref());
                tree.push(
                    &module,
                    quote! {
                        #doc
                        #[doc = "An Avro `fixed`: exactly this many bytes."]
                        pub type #ty = [u8; #size];
                    },
                );
            }
            _ => {}
        }
    }
    // Root records of each text carry the Message impl, with the text as their schema and
    // the texts it uses as its dependencies.
    for (index, (source, schema)) in sources.iter().zip(&schemas).enumerate() {
        let Schema::Record(record) = schema else {
            continue;
        };
        let name = full_name(&record.name);
        let Some(info) = messages.get_mut(&name) else {
            continue;
        };
        info.kind = SchemaKind::Avro;
        let ty = ident(&info.rust_type);
        let text = &source.text;
        let dependencies = graph.dependencies(index);
        let schema_info = if dependencies.is_empty() {
            quote! { ::herald::SchemaInfo::avro(#name, #text) }
        } else {
            let entries = dependencies.iter().map(|used| {
                let name = &graph.roots[*used];
                let text = &sources[*used].text;
                let imports = graph.imports(*used);
                quote! {
                    ::herald::SchemaDependency { name: #name, schema: #text, imports: &[#(#imports),*] }
                }
            });
            let imports = graph.imports(index);
            quote! {
                ::herald::SchemaInfo {
                    format: ::herald::SchemaFormat::Avro,
                    full_name: #name,
                    schema: #text,
                    dependencies: &[#(#entries),*],
                    imports: &[#(#imports),*],
                    message_indexes: ::core::option::Option::None,
                }
            }
        };
        tree.push(
            &info.module,
            quote! {
                impl ::herald::Message for #ty {
                    const SCHEMA: ::herald::SchemaInfo = #schema_info;

                    fn encode_body(
                        &self,
                        writer: &::herald::codec::WriterSchema,
                        out: &mut ::std::vec::Vec<u8>,
                    ) -> ::core::result::Result<(), ::herald::codec::CodecError> {
                        ::herald::codec::avro::encode(self, writer, out)
                    }

                    fn decode_body(
                        body: &[u8],
                        writer: &::herald::codec::WriterSchema,
                    ) -> ::core::result::Result<Self, ::herald::codec::CodecError> {
                        ::herald::codec::avro::decode(body, writer)
                    }
                }
            },
        );
    }
    Ok(messages)
}

fn docs(doc: Option<&str>) -> TokenStream {
    let lines = doc
        .unwrap_or_default()
        .lines()
        .map(|l| format!(" {}", l.trim()))
        .filter(|l| l.trim() != "");
    quote! { #(#[doc = #lines])* }
}

type RecordParts = (ModulePath, TokenStream, BTreeMap<String, String>);

fn record_item(record: &RecordSchema, context: &Context<'_>) -> Result<RecordParts, GenerateError> {
    let module = module_of(&record.name);
    let self_name = full_name(&record.name);
    let ty = ident(&record.name.name().to_upper_camel_case());
    let doc = docs(record.doc.as_deref());
    let mut fields = Vec::new();
    let mut names = BTreeMap::new();
    let mut defaults = Vec::new();
    for field in &record.fields {
        let rust_name = field.name.to_snake_case();
        names.insert(field.name.clone(), rust_name.clone());
        let field_ident = ident(&rust_name);
        let mut unions = Vec::new();
        let FieldType { ty: field_ty, with } = field_type(
            &field.schema,
            &module,
            &self_name,
            context,
            &format!(
                "{}{}",
                record.name.name().to_upper_camel_case(),
                field.name.to_upper_camel_case()
            ),
            &mut unions,
        )?;
        for union in unions {
            defaults.push(union);
        }
        let rename = &field.name;
        let with = with.map(|w| quote!(#[serde(with = #w)]));
        let doc = docs(field.doc.as_deref());
        let default = match field
            .default
            .as_ref()
            .and_then(|d| default_expr(d, &field.schema))
        {
            Some(expr) => {
                let function = format_ident!("default_{}", rust_name);
                let function_path =
                    format!("{}::{}", record.name.name().to_upper_camel_case(), function);
                defaults.push(quote! {
                    impl #ty {
                        #[doc(hidden)]
                        pub fn #function() -> #field_ty { #expr }
                    }
                });
                quote!(#[serde(default = #function_path)])
            }
            None => quote!(),
        };
        fields.push(quote! {
            #doc
            #[serde(rename = #rename)]
            #default
            #with
            pub #field_ident: #field_ty
        });
    }
    let item = quote! {
        #doc
        #[derive(Debug, Clone, PartialEq,
            ::herald::codegen::serde::Serialize, ::herald::codegen::serde::Deserialize)]
        #[serde(crate = "::herald::codegen::serde")]
        pub struct #ty { #(#fields,)* }
        #(#defaults)*
    };
    Ok((module, item, names))
}

/// A field default as a Rust expression, for the simple shapes (others: none).
fn default_expr(default: &serde_json::Value, schema: &Schema) -> Option<TokenStream> {
    use serde_json::Value as J;
    // A nullable union is an Option: its default is for the first branch.
    let (schema, optional) = match schema {
        Schema::Union(u)
            if u.variants().len() == 2
                && u.variants().iter().any(|v| matches!(v, Schema::Null)) =>
        {
            (u.variants().first()?, true)
        }
        // Other unions get no Rust default.
        Schema::Union(_) => return None,
        other => (other, false),
    };
    let value = match (default, schema) {
        (J::Null, Schema::Null) => return Some(quote!(::core::option::Option::None)),
        (J::Array(a), Schema::Array(_)) if a.is_empty() => quote!(::std::vec::Vec::new()),
        (J::Object(o), Schema::Map(_)) if o.is_empty() => {
            quote!(::std::collections::BTreeMap::new())
        }
        (J::Bool(b), _) if matches!(herald_schema::avro_shape(schema), AvroShape::Boolean) => {
            quote!(#b)
        }
        (J::Number(n), _) => match herald_schema::avro_shape(schema) {
            AvroShape::Int => {
                let v = i32::try_from(n.as_i64()?).ok()?;
                quote!(#v)
            }
            AvroShape::Long => {
                let v = n.as_i64()?;
                quote!(#v)
            }
            AvroShape::Double => {
                let v = n.as_f64()?;
                quote!(#v)
            }
            _ => return None,
        },
        (J::String(text), _) if matches!(herald_schema::avro_shape(schema), AvroShape::String) => {
            quote!(::std::string::String::from(#text))
        }
        _ => return None,
    };
    Some(if optional {
        quote!(::core::option::Option::Some(#value))
    } else {
        value
    })
}

fn named_path(name: &Name, from: &[String]) -> TokenStream {
    relative_path(from, &module_of(name), &name.name().to_upper_camel_case())
}

fn field_type(
    schema: &Schema,
    module: &[String],
    record: &str,
    context: &Context<'_>,
    union_name: &str,
    unions: &mut Vec<TokenStream>,
) -> Result<FieldType, GenerateError> {
    let plain = |ty: TokenStream| Ok(FieldType { ty, with: None });
    match schema {
        // Logical types with a Rust type of their own; every other one is its base type.
        Schema::Decimal(_) | Schema::BigDecimal => {
            plain(quote!(::herald::codegen::apache_avro::Decimal))
        }
        Schema::Duration(_) => plain(quote!(::herald::codegen::apache_avro::Duration)),
        Schema::Fixed(f) => Ok(FieldType {
            ty: named_path(&f.name, module),
            with: Some("::herald::codegen::apache_avro::serde::fixed"),
        }),
        Schema::Enum(e) => plain(named_path(&e.name, module)),
        Schema::Record(r) => boxed(
            named_path(&r.name, module),
            &full_name(&r.name),
            record,
            context,
        ),
        Schema::Ref { name } => {
            let target = context.named.get(&full_name(name)).map(|n| n.schema);
            match target {
                Some(Schema::Fixed(_)) => Ok(FieldType {
                    ty: named_path(name, module),
                    with: Some("::herald::codegen::apache_avro::serde::fixed"),
                }),
                _ => boxed(named_path(name, module), &full_name(name), record, context),
            }
        }
        Schema::Array(array) => {
            let inner = field_type(&array.items, module, record, context, union_name, unions)?;
            if inner.with.is_some() {
                return Err(unsupported(record, "arrays of bytes or fixed"));
            }
            let ty = inner.ty;
            plain(quote!(::std::vec::Vec<#ty>))
        }
        Schema::Map(map) => {
            let inner = field_type(&map.types, module, record, context, union_name, unions)?;
            if inner.with.is_some() {
                return Err(unsupported(record, "maps of bytes or fixed"));
            }
            let ty = inner.ty;
            plain(quote!(::std::collections::BTreeMap<::std::string::String, #ty>))
        }
        Schema::Union(union) => {
            let variants = union.variants();
            let non_null: Vec<&Schema> = variants
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            if variants.len() == 2 && non_null.len() == 1 {
                // ["null", T] or [T, "null"]: Option<T>.
                let inner = field_type(non_null[0], module, record, context, union_name, unions)?;
                let ty = inner.ty;
                let with = match inner.with {
                    Some("::herald::codegen::apache_avro::serde::bytes") => {
                        Some("::herald::codegen::apache_avro::serde::bytes_opt")
                    }
                    Some("::herald::codegen::apache_avro::serde::fixed") => {
                        Some("::herald::codegen::apache_avro::serde::fixed_opt")
                    }
                    other => other,
                };
                return Ok(FieldType {
                    ty: quote!(::core::option::Option<#ty>),
                    with,
                });
            }
            // Any other union: an enum whose variants follow the branches in order.
            let enum_ident = ident(&format!("{union_name}Union"));
            let mut items = Vec::new();
            for variant in variants {
                let name = variant_name(variant);
                let variant_ident = ident(&name);
                if matches!(variant, Schema::Null) {
                    items.push(quote!(#variant_ident));
                    continue;
                }
                let inner = field_type(variant, module, record, context, union_name, unions)?;
                if inner.with.is_some() {
                    return Err(unsupported(
                        record,
                        "bytes or fixed inside a multi-branch union",
                    ));
                }
                let ty = inner.ty;
                items.push(quote!(#variant_ident(#ty)));
            }
            let doc = format!(" The branches of an Avro union, in schema order, in `{record}`.");
            unions.push(quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, PartialEq,
                    ::herald::codegen::serde::Serialize, ::herald::codegen::serde::Deserialize)]
                #[serde(crate = "::herald::codegen::serde")]
                pub enum #enum_ident { #(#items),* }
            });
            plain(quote!(#enum_ident))
        }
        // Primitives and the logical types that are their base type (herald-schema's one
        // mapping of Avro's logical types).
        other => match herald_schema::avro_shape(other) {
            AvroShape::Null => plain(quote!(())),
            AvroShape::Boolean => plain(quote!(bool)),
            AvroShape::Int => plain(quote!(i32)),
            AvroShape::Long => plain(quote!(i64)),
            AvroShape::Float => plain(quote!(f32)),
            AvroShape::Double => plain(quote!(f64)),
            AvroShape::String => plain(quote!(::std::string::String)),
            AvroShape::Bytes => Ok(FieldType {
                ty: quote!(::std::vec::Vec<u8>),
                with: Some("::herald::codegen::apache_avro::serde::bytes"),
            }),
            _ => Err(unsupported(record, "uuids stored as fixed")),
        },
    }
}

fn variant_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "Null".into(),
        Schema::Boolean => "Boolean".into(),
        Schema::Int => "Int".into(),
        Schema::Long => "Long".into(),
        Schema::Float => "Float".into(),
        Schema::Double => "Double".into(),
        Schema::Bytes => "Bytes".into(),
        Schema::String => "String".into(),
        Schema::Array(_) => "Array".into(),
        Schema::Map(_) => "Map".into(),
        other => other
            .name()
            .map_or_else(|| "Value".to_owned(), |n| n.name().to_upper_camel_case()),
    }
}

fn boxed(
    path: TokenStream,
    target: &str,
    record: &str,
    context: &Context<'_>,
) -> Result<FieldType, GenerateError> {
    if context.reaches(target, record) {
        Ok(FieldType {
            ty: quote!(::std::boxed::Box<#path>),
            with: None,
        })
    } else {
        Ok(FieldType {
            ty: path,
            with: None,
        })
    }
}

fn unsupported(record: &str, what: &str) -> GenerateError {
    GenerateError::Unsupported {
        record: record.to_owned(),
        what: what.to_owned(),
    }
}
