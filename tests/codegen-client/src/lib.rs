//! The generated events of `herald.toml` (see `build.rs`): what a client crate includes.
#![allow(unreachable_pub, missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/herald.rs"));
