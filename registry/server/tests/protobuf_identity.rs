//! Protobuf schema identity as Confluent decides it: by the printed canonical text. Two
//! texts that differ only in layout or comments are one schema; two that differ in how a
//! type reference is written (`Line` vs `.acme.orders.Order.Line`) are two, unless both are
//! registered with `normalize=true`. A store written under the older key scheme is rekeyed
//! at open, so re-registering a stored schema still answers its ID.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_registry::model::{SchemaRecord, VersionRecord};
use herald_registry::store::Op;
use herald_registry::{app, Registry, Store};
use herald_schema::SchemaType;
use serde_json::{json, Value};
use tower::ServiceExt;

const SHORT: &str = r#"syntax = "proto3";
package acme.orders;

message Order {
  message Line {
    string sku = 1;
  }
  string id = 1;
  repeated Line lines = 2;
}
"#;

const QUALIFIED: &str = r#"syntax = "proto3";
package acme.orders;

message Order {
  message Line {
    string sku = 1;
  }
  string id = 1;
  repeated .acme.orders.Order.Line lines = 2;
}
"#;

/// SHORT with comments and another layout: the same canonical text.
const SHORT_RELAID: &str = "// Orders.\nsyntax=\"proto3\";package acme.orders;\n\n\nmessage Order { /* one line */ message Line { string sku = 1; }\n  string   id = 1;   repeated Line lines = 2; }";

async fn call(
    registry: &Arc<Registry>,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app(registry.clone(), None)
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn register(registry: &Arc<Registry>, subject: &str, schema: &str, normalize: bool) -> u64 {
    let path = format!("/subjects/{subject}/versions?normalize={normalize}");
    let (status, body) = call(
        registry,
        "POST",
        &path,
        json!({"schemaType": "PROTOBUF", "schema": schema}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["id"].as_u64().expect("id")
}

async fn versions(registry: &Arc<Registry>, subject: &str) -> Value {
    let request = Request::builder()
        .uri(format!("/subjects/{subject}/versions"))
        .body(Body::empty())
        .expect("request");
    let response = app(registry.clone(), None)
        .oneshot(request)
        .await
        .expect("infallible");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

fn open(dir: &std::path::Path) -> Arc<Registry> {
    Arc::new(Registry::open(Store::open(dir).expect("store")).expect("registry"))
}

#[tokio::test]
async fn a_type_reference_written_otherwise_is_a_new_version_unless_normalized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());

    // Layout and comments do not matter: one schema.
    let short = register(&registry, "orders-value", SHORT, false).await;
    assert_eq!(
        register(&registry, "orders-value", SHORT_RELAID, false).await,
        short
    );
    assert_eq!(versions(&registry, "orders-value").await, json!([1]));

    // The spelling of a type reference does: a second schema, a second version.
    let qualified = register(&registry, "orders-value", QUALIFIED, false).await;
    assert_ne!(qualified, short);
    assert_eq!(versions(&registry, "orders-value").await, json!([1, 2]));

    // The stored text is the printed canonical form.
    let (status, body) = call(
        &registry,
        "GET",
        &format!("/schemas/ids/{short}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = body["schema"].as_str().expect("schema text");
    assert!(!text.contains("//") && !text.contains("/*"), "{text}");
    assert!(text.contains("repeated Line lines = 2;"), "{text}");

    // Normalised, both spellings are one schema.
    let first = register(&registry, "normalized-value", SHORT, true).await;
    assert_eq!(
        register(&registry, "normalized-value", QUALIFIED, true).await,
        first
    );
    assert_eq!(
        register(&registry, "normalized-value", SHORT_RELAID, true).await,
        first
    );
    assert_eq!(versions(&registry, "normalized-value").await, json!([1]));
    // ... and a lookup with normalize finds it whichever spelling is sent.
    let (status, body) = call(
        &registry,
        "POST",
        "/subjects/normalized-value?normalize=true",
        json!({"schemaType": "PROTOBUF", "schema": SHORT}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"].as_u64(), Some(first));
}

#[tokio::test]
async fn a_store_of_the_older_key_scheme_is_rekeyed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // As an older Herald stored it: the submitted text and a descriptor-based key,
        // no key-scheme marker.
        let store = Store::open(dir.path()).expect("store");
        let record = SchemaRecord {
            schema_type: SchemaType::Protobuf,
            text: SHORT.trim().to_owned(),
            references: Vec::new(),
            content_key: "0".repeat(64),
        };
        store
            .commit_blocking(&[
                Op::PutSchema(7, record),
                Op::PutVersion(
                    "orders-value".to_owned(),
                    1,
                    VersionRecord {
                        id: 7,
                        deleted: false,
                    },
                ),
                Op::NextId(8),
            ])
            .expect("commit");
    }
    let registry = open(dir.path());
    assert_eq!(register(&registry, "orders-value", SHORT, false).await, 7);
    assert_eq!(
        register(&registry, "orders-value", SHORT_RELAID, false).await,
        7
    );
    assert_eq!(versions(&registry, "orders-value").await, json!([1]));
    drop(registry);
    // The rekeying was stored: a second open does not need it and answers the same.
    let registry = open(dir.path());
    assert_eq!(register(&registry, "orders-value", SHORT, false).await, 7);
}
