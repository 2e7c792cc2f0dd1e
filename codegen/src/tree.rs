//! The generated file as a tree of modules (Protobuf packages and Avro namespaces share it),
//! each holding items; emitted in sorted order so output is deterministic.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// A module path (`["shop", "v1"]`).
pub(crate) type ModulePath = Vec<String>;

#[derive(Default)]
pub(crate) struct ModuleTree {
    items: Vec<TokenStream>,
    children: BTreeMap<String, ModuleTree>,
}

impl ModuleTree {
    pub(crate) fn push(&mut self, path: &[String], item: TokenStream) {
        match path.split_first() {
            None => self.items.push(item),
            Some((first, rest)) => self
                .children
                .entry(first.clone())
                .or_default()
                .push(rest, item),
        }
    }

    pub(crate) fn tokens(&self) -> TokenStream {
        let items = &self.items;
        let children = self.children.iter().map(|(name, child)| {
            let ident = ident(name);
            let body = child.tokens();
            quote! { pub mod #ident { #body } }
        });
        quote! { #(#items)* #(#children)* }
    }
}

/// An identifier, raw when it is a keyword.
pub(crate) fn ident(name: &str) -> proc_macro2::Ident {
    if syn::parse_str::<syn::Ident>(name).is_ok() {
        format_ident!("{}", name)
    } else {
        format_ident!("r#{}", name)
    }
}

/// A path from module `from` to item `name` in module `to`, relative (`super::...`) so the
/// generated file works wherever it is included.
pub(crate) fn relative_path(from: &[String], to: &[String], name: &str) -> TokenStream {
    let supers = from.iter().map(|_| quote!(super::));
    let segments = to.iter().map(|s| {
        let s = ident(s);
        quote!(#s::)
    });
    let name: TokenStream = name.parse().unwrap_or_else(|_| quote!(invalid_name));
    quote! { #(#supers)* #(#segments)* #name }
}
