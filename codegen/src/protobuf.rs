//! Protobuf: prost-build generates the message types from protox descriptors (no protoc);
//! this module adds the SDK's `Message` impl for every message, with its schema text, its
//! imports and its Confluent message-index path computed here, at build time.

use std::collections::{BTreeMap, BTreeSet};

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use prost_types::{DescriptorProto, FileDescriptorProto};
use quote::quote;

use crate::tree::{relative_path, ModulePath, ModuleTree};
use crate::{GenerateError, MessageInfo, SchemaKind};

/// One `.proto` file of the compiled set.
#[derive(Debug, Clone)]
pub struct ProtoFile {
    /// The import name (`shop/v1/orders.proto`).
    pub name: String,
    /// Its text (what is registered); `None` for well-known types built into protox.
    pub source: Option<String>,
    /// Where it was read from.
    pub path: Option<std::path::PathBuf>,
    pub descriptor: FileDescriptorProto,
}

pub(crate) fn well_known(name: &str) -> bool {
    name.starts_with("google/protobuf/")
}

/// Module of a package (`shop.v1` → `["shop", "v1"]`), as prost-build names it.
fn package_module(package: &str) -> ModulePath {
    prost_build::Module::from_protobuf_package_name(package)
        .parts()
        .map(str::to_owned)
        .collect()
}

/// Generates the prost types and `Message` impls of every non-well-known file into `tree`;
/// returns the messages by full name.
pub(crate) fn generate(
    files: &[ProtoFile],
    tree: &mut ModuleTree,
) -> Result<BTreeMap<String, MessageInfo>, GenerateError> {
    let generated: Vec<&ProtoFile> = files.iter().filter(|f| !well_known(&f.name)).collect();
    let mut messages = BTreeMap::new();
    if generated.is_empty() {
        return Ok(messages);
    }
    let mut config = prost_build::Config::new();
    // prost-derive's oneof support names `::prost` whatever `prost_path` says, so the client
    // crate depends on `prost` itself (as every prost user does); well-known types come
    // through herald.
    // Formatting happens once, over the whole generated file.
    config
        .prost_types_path("::herald::codegen::prost_types")
        .btree_map(["."])
        .format(false);
    // prost-build builds its message graph (which decides `Eq`/`Copy` derives and boxing)
    // from the files it is asked to generate, so every file of the set goes in, well-known
    // imports included: a field of type `.google.protobuf.Timestamp` must find its message
    // there. The well-known files are generated under a module of their own and dropped:
    // their types come from prost-types.
    let requests = files
        .iter()
        .map(|file| {
            let module = if well_known(&file.name) {
                prost_build::Module::from_parts([WELL_KNOWN_MODULE, file.name.as_str()])
            } else {
                prost_build::Module::from_protobuf_package_name(file.descriptor.package())
            };
            (module, file.descriptor.clone())
        })
        .collect();
    let modules = run_prost_build(&mut config, requests, &generated)?;
    let mut modules: Vec<_> = modules
        .into_iter()
        .filter(|(module, _)| module.parts().next() != Some(WELL_KNOWN_MODULE))
        .collect();
    modules.sort_by(|a, b| a.0.cmp(&b.0));
    for (module, code) in modules {
        let path: ModulePath = module.parts().map(str::to_owned).collect();
        let parsed: syn::File = syn::parse_str(&code)
            .map_err(|e| GenerateError::Protobuf(format!("prost output does not parse: {e}")))?;
        for item in parsed.items {
            tree.push(&path, quote!(#item));
        }
    }
    // Schema texts once, in a hidden root module; messages point at them.
    let index: BTreeMap<&str, usize> = generated
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    for (i, file) in generated.iter().enumerate() {
        let source = file
            .source
            .clone()
            .ok_or_else(|| GenerateError::Protobuf(format!("no source text for {}", file.name)))?;
        let text_ident = quote::format_ident!("PROTO_{}", i);
        let deps_ident = quote::format_ident!("PROTO_{}_DEPENDENCIES", i);
        let dependencies = dependency_order(&file.name, files)?;
        let entries = dependencies.iter().map(|name| {
            let dep = index.get(name.as_str()).copied().unwrap_or_default();
            let dep_text = quote::format_ident!("PROTO_{}", dep);
            let imports = direct_imports(name, files);
            quote! {
                ::herald::SchemaDependency { name: #name, schema: #dep_text, imports: &[#(#imports),*] }
            }
        });
        let doc = format!("`{}`", file.name);
        tree.push(
            &["__herald".to_owned()],
            quote! {
                #[doc = #doc]
                pub const #text_ident: &str = #source;
                pub const #deps_ident: &[::herald::SchemaDependency] = &[#(#entries),*];
            },
        );
        let module = package_module(file.descriptor.package());
        let imports = direct_imports(&file.name, files);
        let text = relative_path(&module, &["__herald".to_owned()], &text_ident.to_string());
        let deps = relative_path(&module, &["__herald".to_owned()], &deps_ident.to_string());
        let prefix = if file.descriptor.package().is_empty() {
            String::new()
        } else {
            format!("{}.", file.descriptor.package())
        };
        let mut stack: Vec<(Vec<i32>, Vec<String>, &DescriptorProto)> = file
            .descriptor
            .message_type
            .iter()
            .enumerate()
            .map(|(i, m)| (vec![i as i32], Vec::new(), m))
            .collect();
        stack.reverse();
        while let Some((indexes, parents, message)) = stack.pop() {
            if message.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            let full_name = format!(
                "{prefix}{}{}",
                parents.iter().map(|p| format!("{p}.")).collect::<String>(),
                message.name()
            );
            let rust_type = parents
                .iter()
                .map(|p| format!("{}::", p.to_snake_case()))
                .chain([message.name().to_upper_camel_case()])
                .collect::<String>();
            let ty: TokenStream = rust_type
                .parse()
                .map_err(|_| GenerateError::Protobuf(format!("bad type name {rust_type}")))?;
            tree.push(
                &module,
                quote! {
                    impl ::herald::Message for #ty {
                        const SCHEMA: ::herald::SchemaInfo = ::herald::SchemaInfo {
                            format: ::herald::SchemaFormat::Protobuf,
                            full_name: #full_name,
                            schema: #text,
                            dependencies: #deps,
                            imports: &[#(#imports),*],
                            message_indexes: ::core::option::Option::Some(&[#(#indexes),*]),
                        };

                        fn encode_body(
                            &self,
                            _writer: &::herald::codec::WriterSchema,
                            out: &mut ::std::vec::Vec<u8>,
                        ) -> ::core::result::Result<(), ::herald::codec::CodecError> {
                            ::herald::codec::protobuf::encode(self, out)
                        }

                        fn decode_body(
                            body: &[u8],
                            _writer: &::herald::codec::WriterSchema,
                        ) -> ::core::result::Result<Self, ::herald::codec::CodecError> {
                            ::herald::codec::protobuf::decode(body)
                        }
                    }
                },
            );
            let fields = message
                .field
                .iter()
                .map(|f| (f.name().to_owned(), f.name().to_snake_case()))
                .collect();
            messages.insert(
                full_name,
                MessageInfo {
                    module: module.clone(),
                    rust_type,
                    fields,
                    kind: SchemaKind::Protobuf,
                },
            );
            let mut nested_parents = parents.clone();
            nested_parents.push(message.name().to_owned());
            for (j, nested) in message.nested_type.iter().enumerate().rev() {
                let mut nested_indexes = indexes.clone();
                nested_indexes.push(j as i32);
                stack.push((nested_indexes, nested_parents.clone(), nested));
            }
        }
    }
    Ok(messages)
}

/// The module key under which prost-build generates the well-known files (then dropped).
const WELL_KNOWN_MODULE: &str = "__herald_well_known";

/// prost-build's `generate`, with a panic inside it (a prost-build bug met by some input)
/// turned into an error naming the files: a build script never panics.
fn run_prost_build(
    config: &mut prost_build::Config,
    requests: Vec<(prost_build::Module, FileDescriptorProto)>,
    generated: &[&ProtoFile],
) -> Result<std::collections::HashMap<prost_build::Module, String>, GenerateError> {
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.generate(requests)));
    let names = || {
        generated
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match outcome {
        Ok(Ok(modules)) => Ok(modules),
        Ok(Err(e)) => Err(GenerateError::Protobuf(format!("{}: {e}", names()))),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(GenerateError::Protobuf(format!(
                "prost-build failed on {} ({reason}); please report this input as a herald-codegen bug",
                names()
            )))
        }
    }
}

/// The non-well-known imports of `name`.
pub(crate) fn direct_imports(name: &str, files: &[ProtoFile]) -> Vec<String> {
    files
        .iter()
        .find(|f| f.name == name)
        .map(|f| {
            f.descriptor
                .dependency
                .iter()
                .filter(|d| !well_known(d))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Every file `name` imports, directly or not, dependencies first.
pub(crate) fn dependency_order(
    name: &str,
    files: &[ProtoFile],
) -> Result<Vec<String>, GenerateError> {
    fn visit(
        name: &str,
        files: &[ProtoFile],
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), GenerateError> {
        if depth > 64 {
            return Err(GenerateError::Protobuf(format!(
                "imports of {name} nest too deep"
            )));
        }
        for import in direct_imports(name, files) {
            if done.insert(import.clone()) {
                visit(&import, files, done, order, depth + 1)?;
                order.push(import);
            }
        }
        Ok(())
    }
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    visit(name, files, &mut done, &mut order, 0)?;
    Ok(order)
}
