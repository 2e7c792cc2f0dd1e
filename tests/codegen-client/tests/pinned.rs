//! Pinned topics compiled for real: `herald.toml` pins `invoices-value` (Protobuf, importing
//! a locked `billing/v1/amount.proto`) and `ledger-value` (Avro, referencing a locked
//! `ledger.Cents`); build.rs generated their types from the checked-in herald.lock alone.
//! The generated types carry the locked dependencies, encode and decode, and the topic
//! producers default to the pinned schema IDs.

use herald::codec::WriterSchema;
use herald::Message;
use herald_codegen_client::billing::v1::{Amount, Invoice};
use herald_codegen_client::ledger::{Cents, Entry};

fn round_trip<T: Message + PartialEq + std::fmt::Debug>(value: T, id: u32) {
    let references: Vec<_> = T::SCHEMA
        .dependencies
        .iter()
        .map(|d| herald::codec::ResolvedReference {
            name: d.name.to_owned(),
            schema: d.schema.to_owned(),
        })
        .collect();
    let writer = WriterSchema::new(id, &T::SCHEMA, T::SCHEMA.schema, &references)
        .expect("the locked schema parses with its locked dependencies");
    let mut body = Vec::new();
    value.encode_body(&writer, &mut body).expect("encode");
    assert_eq!(T::decode_body(&body, &writer).expect("decode"), value);
}

#[test]
fn a_pinned_protobuf_type_compiles_with_its_locked_import() {
    let names: Vec<&str> = Invoice::SCHEMA
        .dependencies
        .iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["billing/v1/amount.proto"]);
    assert_eq!(Invoice::SCHEMA.imports, ["billing/v1/amount.proto"]);
    round_trip(
        Invoice {
            invoice_id: "inv-7".into(),
            total: Some(Amount {
                currency: "EUR".into(),
                minor_units: 1250,
            }),
        },
        41,
    );
}

#[test]
fn a_pinned_avro_type_compiles_with_its_locked_reference() {
    let names: Vec<&str> = Entry::SCHEMA.dependencies.iter().map(|d| d.name).collect();
    assert_eq!(names, ["ledger.Cents"]);
    round_trip(
        Entry {
            account: "acc-1".into(),
            amount: Cents { value: -300 },
        },
        51,
    );
}

#[test]
fn pinned_topic_producers_write_with_the_locked_ids() {
    let generated =
        std::fs::read_to_string(concat!(env!("OUT_DIR"), "/herald.rs")).expect("generated file");
    assert!(generated.contains("Registration::Pinned(41"), "invoices");
    assert!(generated.contains("Registration::Pinned(51"), "ledger");
}
