//! In-process API tests: every endpoint and error code, through the full middleware stack,
//! with `oneshot` (no sockets) over a real sled store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use herald_registry::{app, Registry, Store};
use serde_json::{json, Value};
use tower::{Layer, ServiceExt};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

struct Api {
    app: NormalizePath<Router>,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir)
    }

    fn open(dir: tempfile::TempDir) -> Self {
        let registry =
            Arc::new(Registry::open(Store::open(dir.path()).expect("store")).expect("registry"));
        Self {
            app: NormalizePathLayer::trim_trailing_slash().layer(app(registry, None)),
            _dir: dir,
        }
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        accept: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let request = request
            .header("Content-Type", "application/octet-stream")
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        let (status, _, body) = self.raw(method, path, text.as_deref(), None).await;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, value)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {value}");
        value
    }

    async fn error(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: u32,
    ) -> String {
        let (actual, value) = self.call(method, path, body).await;
        assert_eq!(actual.as_u16(), status, "{method} {path}: {value}");
        assert_eq!(value["error_code"], json!(code), "{method} {path}: {value}");
        assert_eq!(
            value.as_object().map(|o| o.len()),
            Some(2),
            "error body has exactly two fields: {value}"
        );
        value["message"].as_str().unwrap_or_default().to_owned()
    }

    async fn register(&self, subject: &str, schema: &str) -> u64 {
        let value = self
            .ok(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(json!({"schema": schema})),
            )
            .await;
        value["id"].as_u64().expect("id")
    }
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","namespace":"shop","name":"Order","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"string"}"#;
const NOTE_DEFAULT: &str = r#"{"name":"note","type":"string","default":""}"#;
const COUPON: &str = r#"{"name":"coupon","type":"string"}"#;

#[tokio::test]
async fn root_contexts_types_and_ops_endpoints() {
    let api = Api::new();
    assert_eq!(api.ok("GET", "/", None).await, json!({}));
    assert_eq!(api.ok("POST", "/", None).await, json!({}));
    assert_eq!(api.ok("GET", "/contexts", None).await, json!(["."]));
    assert_eq!(
        api.ok("GET", "/schemas/types", None).await,
        json!(["AVRO", "PROTOBUF"])
    );
    assert_eq!(
        api.ok("GET", "/health", None).await,
        json!({"status": "ok"})
    );
    assert!(api.ok("GET", "/v1/metadata/version", None).await["version"].is_string());
    api.register("a-value", "\"string\"").await;
    let (status, _, metrics) = api.raw("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("herald_registry_schemas 1"), "{metrics}");
    assert!(
        metrics.contains("route=\"/subjects/{subject}/versions\",method=\"POST\",status=\"200\""),
        "{metrics}"
    );
    api.error("GET", "/no/such/path", None, 404, 404).await;
    api.error("PUT", "/subjects", None, 405, 405).await;
}

#[tokio::test]
async fn content_types() {
    let api = Api::new();
    let (_, content_type, _) = api.raw("GET", "/subjects", None, None).await;
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
    let (_, content_type, _) = api
        .raw("GET", "/subjects", None, Some("application/json"))
        .await;
    assert_eq!(content_type, "application/json");
    let (_, content_type, _) = api
        .raw(
            "GET",
            "/subjects",
            None,
            Some("application/vnd.schemaregistry.v1+json, application/json"),
        )
        .await;
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
}

#[tokio::test]
async fn register_and_read_back_by_id_subject_and_version() {
    let api = Api::new();
    let pretty = "{\n  \"type\": \"record\", \"name\": \"Order\", \"namespace\": \"shop\",\n  \"fields\": [ {\"name\": \"id\", \"type\": \"string\"} ]\n}";
    let id = api.register("orders-value", pretty).await;
    assert_eq!(
        api.register("orders-value", &record(ID)).await,
        id,
        "same content, other layout: same id"
    );
    assert_eq!(
        api.ok("GET", "/subjects/orders-value/versions", None).await,
        json!([1])
    );
    let by_id = api.ok("GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(
        by_id,
        json!({"schema": record(ID)}),
        "compact text, no schemaType for Avro, no empty references"
    );
    let (_, _, raw) = api
        .raw("GET", &format!("/schemas/ids/{id}/schema"), None, None)
        .await;
    assert_eq!(raw, record(ID));
    let version = api
        .ok("GET", "/subjects/orders-value/versions/latest", None)
        .await;
    assert_eq!(
        version,
        json!({"subject": "orders-value", "version": 1, "id": id, "schema": record(ID)})
    );
    assert_eq!(
        api.ok("GET", "/subjects/orders-value/versions/-1", None)
            .await,
        version
    );
    assert_eq!(
        api.ok("GET", "/subjects/orders-value/versions/1", None)
            .await,
        version
    );
    let (_, _, raw) = api
        .raw(
            "GET",
            "/subjects/orders-value/versions/1/schema",
            None,
            None,
        )
        .await;
    assert_eq!(raw, record(ID));
    assert_eq!(
        api.register("copy-value", &record(ID)).await,
        id,
        "content-addressed ids"
    );
    assert_eq!(
        api.ok("GET", &format!("/schemas/ids/{id}/subjects"), None)
            .await,
        json!(["copy-value", "orders-value"])
    );
    assert_eq!(
        api.ok("GET", &format!("/schemas/ids/{id}/versions"), None)
            .await,
        json!([{"subject": "copy-value", "version": 1}, {"subject": "orders-value", "version": 1}])
    );
    assert_eq!(
        api.ok("GET", "/subjects", None).await,
        json!(["copy-value", "orders-value"])
    );
    assert_eq!(
        api.ok("GET", "/subjects?subjectPrefix=ord", None).await,
        json!(["orders-value"])
    );
    assert_eq!(
        api.ok("GET", "/subjects?offset=1&limit=1", None).await,
        json!(["orders-value"])
    );
    let schemas = api.ok("GET", "/schemas?subjectPrefix=orders", None).await;
    assert_eq!(schemas.as_array().map(Vec::len), Some(1));
    assert_eq!(
        api.ok("GET", &format!("/schemas/ids/{id}?fetchMaxId=true"), None)
            .await["maxId"],
        json!(id)
    );
}

#[tokio::test]
async fn read_errors_use_confluent_codes() {
    let api = Api::new();
    api.register("orders-value", &record(ID)).await;
    api.error("GET", "/schemas/ids/999", None, 404, 40403).await;
    api.error("GET", "/schemas/ids/999/schema", None, 404, 40403)
        .await;
    api.error("GET", "/schemas/ids/999/subjects", None, 404, 40403)
        .await;
    api.error("GET", "/schemas/ids/999/versions", None, 404, 40403)
        .await;
    api.error("GET", "/schemas/ids/abc", None, 404, 404).await;
    api.error("GET", "/subjects/nope/versions", None, 404, 40401)
        .await;
    api.error("GET", "/subjects/nope/versions/1", None, 404, 40401)
        .await;
    api.error("GET", "/subjects/orders-value/versions/7", None, 404, 40402)
        .await;
    for bad in ["0", "-2", "x", "2147483648"] {
        api.error(
            "GET",
            &format!("/subjects/orders-value/versions/{bad}"),
            None,
            422,
            42202,
        )
        .await;
    }
}

#[tokio::test]
async fn request_bodies_are_lenient_but_checked() {
    let api = Api::new();
    // Unknown fields (newer clients send metadata, ruleSet...) are ignored.
    let body = json!({"schema": "\"string\"", "metadata": {"properties": {}}, "ruleSet": null, "schemaTagsToAdd": []});
    api.ok("POST", "/subjects/a-value/versions", Some(body))
        .await;
    let (status, _, body) = api
        .raw(
            "POST",
            "/subjects/a-value/versions",
            Some("{not json"),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    assert!(body.contains("\"error_code\":422"), "{body}");
    let (status, _, _) = api
        .raw("POST", "/subjects/a-value/versions", None, None)
        .await;
    assert_eq!(status.as_u16(), 422);
    let message = api
        .error(
            "POST",
            "/subjects/b-value/versions",
            Some(json!({"schema": "{\"type\":\"nope\"}"})),
            422,
            42201,
        )
        .await;
    assert!(message.contains("Invalid schema"), "{message}");
    api.error(
        "POST",
        "/subjects/b-value/versions",
        Some(json!({"schema": "\"string\"", "schemaType": "XML"})),
        422,
        42201,
    )
    .await;
    let message = api
        .error(
            "POST",
            "/subjects/b-value/versions",
            Some(json!({"schema": ""})),
            422,
            42201,
        )
        .await;
    assert!(message.contains("Empty schema"), "{message}");
    api.error(
        "POST",
        "/subjects/a-value/versions",
        Some(json!({"schema": "[\"null\",\"string\"]", "version": 5})),
        422,
        42201,
    )
    .await;
    api.ok(
        "POST",
        "/subjects/a-value/versions",
        Some(json!({"schema": "[\"null\",\"string\"]", "version": 2})),
    )
    .await;
    // An empty schema re-registers the latest live content.
    let latest = api
        .ok("GET", "/subjects/a-value/versions/latest", None)
        .await;
    let again = api
        .ok(
            "POST",
            "/subjects/a-value/versions",
            Some(json!({"schema": ""})),
        )
        .await;
    assert_eq!(again["id"], latest["id"]);
    api.error(
        "POST",
        "/subjects/%01bad/versions",
        Some(json!({"schema": "\"string\""})),
        422,
        42208,
    )
    .await;
    api.error(
        "POST",
        "/subjects/__GLOBAL/versions",
        Some(json!({"schema": "\"string\""})),
        422,
        42208,
    )
    .await;
    let huge = format!(
        "{{\"type\":\"record\",\"name\":\"R\",\"doc\":\"{}\",\"fields\":[]}}",
        "x".repeat(1_100_000)
    );
    api.error(
        "POST",
        "/subjects/c-value/versions",
        Some(json!({"schema": huge})),
        422,
        42209,
    )
    .await;
    let (status, _, _) = api
        .raw(
            "POST",
            "/subjects/c-value/versions",
            Some(&"x".repeat(5 * 1024 * 1024)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn registration_enforces_the_subject_level() {
    let api = Api::new();
    let v1 = api.register("orders-value", &record(ID)).await;
    let message = api
        .error(
            "POST",
            "/subjects/orders-value/versions",
            Some(json!({"schema": record(&format!("{ID},{COUPON}"))})),
            409,
            409,
        )
        .await;
    assert!(
        message.contains("READER_FIELD_MISSING_DEFAULT_VALUE") && message.contains("coupon"),
        "{message}"
    );
    let v2 = api
        .register("orders-value", &record(&format!("{ID},{NOTE_DEFAULT}")))
        .await;
    assert_ne!(v1, v2);
    assert_eq!(
        api.register("orders-value", &record(ID)).await,
        v1,
        "re-registering a live version is idempotent"
    );
    assert_eq!(
        api.ok("GET", "/subjects/orders-value/versions", None).await,
        json!([1, 2])
    );
    api.ok(
        "PUT",
        "/config/orders-value",
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    api.register("orders-value", &record(&format!("{ID},{COUPON}")))
        .await;
    assert_eq!(
        api.ok("GET", "/subjects/orders-value/versions", None).await,
        json!([1, 2, 3])
    );
    // A type change is always incompatible.
    api.ok(
        "PUT",
        "/config/orders-value",
        Some(json!({"compatibility": "BACKWARD"})),
    )
    .await;
    let proto = json!({"schema": "syntax = \"proto3\"; message M { string id = 1; }", "schemaType": "PROTOBUF"});
    let message = api
        .error(
            "POST",
            "/subjects/orders-value/versions",
            Some(proto),
            409,
            409,
        )
        .await;
    assert!(message.contains("different schema type"), "{message}");
}

#[tokio::test]
async fn compatibility_endpoints() {
    let api = Api::new();
    let bad = json!({"schema": record(&format!("{ID},{COUPON}"))});
    let good = json!({"schema": record(&format!("{ID},{NOTE_DEFAULT}"))});
    // Nothing registered: latest and the version-less form are compatible, a number is 40402.
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/x/versions/latest",
            Some(bad.clone())
        )
        .await,
        json!({"is_compatible": true})
    );
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/x/versions",
            Some(bad.clone())
        )
        .await,
        json!({"is_compatible": true})
    );
    api.error(
        "POST",
        "/compatibility/subjects/x/versions/1",
        Some(bad.clone()),
        404,
        40402,
    )
    .await;
    api.register("x", &record(ID)).await;
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/x/versions/",
            Some(good.clone())
        )
        .await,
        json!({"is_compatible": true})
    );
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/x/versions/latest",
            Some(bad.clone())
        )
        .await,
        json!({"is_compatible": false})
    );
    let verbose = api
        .ok(
            "POST",
            "/compatibility/subjects/x/versions/1?verbose=true",
            Some(bad.clone()),
        )
        .await;
    assert_eq!(verbose["is_compatible"], json!(false));
    let messages = verbose["messages"].as_array().expect("messages");
    assert!(
        messages[0]
            .as_str()
            .unwrap_or_default()
            .contains("errorType:'READER_FIELD_MISSING_DEFAULT_VALUE'"),
        "{verbose}"
    );
    assert!(messages
        .last()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .contains("compatibility: 'BACKWARD'"));
    api.error(
        "POST",
        "/compatibility/subjects/x/versions/abc",
        Some(bad.clone()),
        422,
        42202,
    )
    .await;
    let unparsable = json!({"schema": "{\"type\":"});
    api.error(
        "POST",
        "/compatibility/subjects/x/versions",
        Some(unparsable.clone()),
        422,
        42201,
    )
    .await;
    let verbose = api
        .ok(
            "POST",
            "/compatibility/subjects/x/versions?verbose=true",
            Some(unparsable),
        )
        .await;
    assert_eq!(verbose["is_compatible"], json!(false));
    assert_eq!(verbose["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn transitive_levels_check_every_live_version() {
    let api = Api::new();
    api.ok(
        "PUT",
        "/config/t",
        Some(json!({"compatibility": "backward_transitive"})),
    )
    .await;
    api.register("t", &record(ID)).await;
    api.register("t", &record(&format!("{ID},{NOTE_DEFAULT}")))
        .await;
    let dropped_default =
        json!({"schema": record(&format!("{ID},{{\"name\":\"note\",\"type\":\"string\"}}"))});
    // The single-version endpoint compares with one version only (Confluent's behaviour)...
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/t/versions/2",
            Some(dropped_default.clone())
        )
        .await,
        json!({"is_compatible": true})
    );
    // ...registration and the version-less endpoint compare with all of them.
    assert_eq!(
        api.ok(
            "POST",
            "/compatibility/subjects/t/versions",
            Some(dropped_default.clone())
        )
        .await,
        json!({"is_compatible": false})
    );
    let message = api
        .error(
            "POST",
            "/subjects/t/versions",
            Some(dropped_default.clone()),
            409,
            409,
        )
        .await;
    assert!(message.contains("oldSchemaVersion: 1"), "{message}");
    // Soft-deleted versions take no part.
    api.ok("DELETE", "/subjects/t/versions/1", None).await;
    api.ok("POST", "/subjects/t/versions", Some(dropped_default))
        .await;
}

#[tokio::test]
async fn lookup() {
    let api = Api::new();
    let id = api.register("orders-value", &record(ID)).await;
    let found = api
        .ok(
            "POST",
            "/subjects/orders-value",
            Some(json!({"schema": record(ID)})),
        )
        .await;
    assert_eq!(
        found,
        json!({"subject": "orders-value", "version": 1, "id": id, "schema": record(ID)})
    );
    api.error(
        "POST",
        "/subjects/missing",
        Some(json!({"schema": record(ID)})),
        404,
        40401,
    )
    .await;
    api.error(
        "POST",
        "/subjects/orders-value",
        Some(json!({"schema": "\"int\""})),
        404,
        40403,
    )
    .await;
    api.error(
        "POST",
        "/subjects/orders-value",
        Some(json!({"schema": "{"})),
        422,
        42201,
    )
    .await;
    api.ok("DELETE", "/subjects/orders-value/versions/1", None)
        .await;
    api.error(
        "POST",
        "/subjects/orders-value",
        Some(json!({"schema": record(ID)})),
        404,
        40401,
    )
    .await;
    let found = api
        .ok(
            "POST",
            "/subjects/orders-value?deleted=true",
            Some(json!({"schema": record(ID)})),
        )
        .await;
    assert_eq!(found["version"], json!(1));
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let api = Api::new();
    api.ok("PUT", "/config/s", Some(json!({"compatibility": "NONE"})))
        .await;
    let id1 = api.register("s", "\"string\"").await;
    api.register("s", "[\"null\",\"string\"]").await;
    assert_eq!(
        api.ok("DELETE", "/subjects/s/versions/1", None).await,
        json!(1)
    );
    api.error("DELETE", "/subjects/s/versions/1", None, 404, 40406)
        .await;
    api.error(
        "DELETE",
        "/subjects/s/versions/2?permanent=true",
        None,
        404,
        40407,
    )
    .await;
    assert_eq!(
        api.ok("GET", "/subjects/s/versions", None).await,
        json!([2])
    );
    assert_eq!(
        api.ok("GET", "/subjects/s/versions?deleted=true", None)
            .await,
        json!([1, 2])
    );
    assert_eq!(
        api.ok("GET", "/subjects/s/versions?deletedOnly=true", None)
            .await,
        json!([1])
    );
    assert_eq!(
        api.ok("GET", "/subjects/s/versions?deletedAsNegative=true", None)
            .await,
        json!([-1, 2])
    );
    api.error("GET", "/subjects/s/versions/1", None, 404, 40402)
        .await;
    assert_eq!(
        api.ok("GET", "/subjects/s/versions/1?deleted=true", None)
            .await["id"],
        json!(id1)
    );
    // Soft-deleted ids stay readable: deserializers depend on it.
    assert_eq!(
        api.ok("GET", &format!("/schemas/ids/{id1}"), None).await["schema"],
        json!("\"string\"")
    );
    // Re-registering soft-deleted content: new version, same id.
    assert_eq!(api.register("s", "\"string\"").await, id1);
    assert_eq!(
        api.ok("GET", "/subjects/s/versions", None).await,
        json!([2, 3])
    );
    api.error("DELETE", "/subjects/s?permanent=true", None, 404, 40405)
        .await;
    assert_eq!(api.ok("DELETE", "/subjects/s", None).await, json!([2, 3]));
    api.error("DELETE", "/subjects/s", None, 404, 40404).await;
    assert_eq!(api.ok("GET", "/subjects", None).await, json!([]));
    assert_eq!(
        api.ok("GET", "/subjects?deleted=true", None).await,
        json!(["s"])
    );
    assert_eq!(
        api.ok("GET", "/subjects?deletedOnly=true", None).await,
        json!(["s"])
    );
    api.ok("PUT", "/config/s", Some(json!({"compatibility": "FULL"})))
        .await;
    assert_eq!(
        api.ok("DELETE", "/subjects/s?permanent=true", None).await,
        json!([1, 2, 3])
    );
    api.error("GET", "/subjects/s/versions?deleted=true", None, 404, 40401)
        .await;
    api.error("GET", "/config/s", None, 404, 40408).await;
    api.error("GET", &format!("/schemas/ids/{id1}"), None, 404, 40403)
        .await;
    api.error("DELETE", "/subjects/s", None, 404, 40401).await;
    // Versions restart at 1, ids are never reused.
    let fresh = api.register("s", "\"string\"").await;
    assert!(fresh > id1);
    assert_eq!(
        api.ok("GET", "/subjects/s/versions", None).await,
        json!([1])
    );
    api.ok("DELETE", "/subjects/s/versions/latest", None).await;
    assert_eq!(
        api.ok("DELETE", "/subjects/s/versions/1?permanent=true", None)
            .await,
        json!(1)
    );
}

#[tokio::test]
async fn references() {
    let api = Api::new();
    let money = r#"{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"units","type":"long"}]}"#;
    let money_id = api.register("money", money).await;
    let invoice = r#"{"type":"record","name":"Invoice","namespace":"shop","fields":[{"name":"total","type":"shop.Money"}]}"#;
    let body = json!({"schema": invoice, "references": [{"name": "shop.Money", "subject": "money", "version": -1}]});
    let invoice_id = api
        .ok("POST", "/subjects/invoice/versions", Some(body))
        .await["id"]
        .clone();
    let by_id = api
        .ok("GET", &format!("/schemas/ids/{invoice_id}"), None)
        .await;
    assert_eq!(
        by_id["references"],
        json!([{"name": "shop.Money", "subject": "money", "version": 1}]),
        "-1 is stored as the concrete version"
    );
    assert_eq!(
        api.ok("GET", "/subjects/money/versions/1/referencedby", None)
            .await,
        json!([invoice_id])
    );
    api.error("DELETE", "/subjects/money/versions/1", None, 422, 42206)
        .await;
    api.error("DELETE", "/subjects/money", None, 422, 42206)
        .await;
    let dangling = json!({"schema": invoice, "references": [{"name": "shop.Money", "subject": "nope", "version": 1}]});
    let message = api
        .error(
            "POST",
            "/subjects/other/versions",
            Some(dangling),
            422,
            42201,
        )
        .await;
    assert!(message.contains("nope"), "{message}");
    let unresolved = json!({"schema": invoice});
    api.error(
        "POST",
        "/subjects/other/versions",
        Some(unresolved),
        422,
        42201,
    )
    .await;
    // Protobuf imports resolve through references too.
    let common = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\"; package common; message Money { int64 units = 1; }"});
    api.ok(
        "POST",
        "/subjects/common%2Fmoney.proto/versions",
        Some(common),
    )
    .await;
    let order = json!({"schemaType": "PROTOBUF",
        "schema": "syntax = \"proto3\"; package shop; import \"common/money.proto\"; message Order { common.Money total = 1; }",
        "references": [{"name": "common/money.proto", "subject": "common/money.proto", "version": 1}]});
    let order_id = api
        .ok("POST", "/subjects/orders-value/versions", Some(order))
        .await["id"]
        .clone();
    let by_id = api
        .ok("GET", &format!("/schemas/ids/{order_id}"), None)
        .await;
    assert_eq!(by_id["schemaType"], json!("PROTOBUF"));
    assert_eq!(
        by_id["references"][0]["subject"],
        json!("common/money.proto")
    );
    let serialized = api
        .ok(
            "GET",
            &format!("/schemas/ids/{order_id}?format=serialized"),
            None,
        )
        .await;
    assert!(
        !serialized["schema"]
            .as_str()
            .unwrap_or_default()
            .contains("syntax"),
        "base64 descriptor: {serialized}"
    );
    assert_ne!(money_id, 0);
}

#[tokio::test]
async fn config_endpoints() {
    let api = Api::new();
    assert_eq!(
        api.ok("GET", "/config", None).await,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        api.ok("PUT", "/config", Some(json!({"compatibility": "full"})))
            .await,
        json!({"compatibility": "FULL"})
    );
    assert_eq!(
        api.ok("GET", "/config", None).await,
        json!({"compatibilityLevel": "FULL"})
    );
    let message = api
        .error(
            "PUT",
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
            422,
            42203,
        )
        .await;
    assert!(message.contains("backward_transitive"), "{message}");
    api.error("GET", "/config/orders", None, 404, 40408).await;
    assert_eq!(
        api.ok("GET", "/config/orders?defaultToGlobal=true", None)
            .await,
        json!({"compatibilityLevel": "FULL"})
    );
    api.error("DELETE", "/config/orders", None, 404, 40401)
        .await;
    assert_eq!(
        api.ok(
            "PUT",
            "/config/orders",
            Some(json!({"compatibility": "NONE", "normalize": true}))
        )
        .await,
        json!({"compatibility": "NONE", "normalize": true})
    );
    assert_eq!(
        api.ok("GET", "/config/orders", None).await,
        json!({"compatibilityLevel": "NONE", "normalize": true})
    );
    assert_eq!(
        api.ok("DELETE", "/config/orders", None).await,
        json!({"compatibilityLevel": "NONE", "normalize": true})
    );
    assert_eq!(
        api.ok("DELETE", "/config", None).await,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        api.ok("GET", "/config", None).await,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    api.error("PUT", "/config", Some(json!({})), 422, 42203)
        .await;
}

#[tokio::test]
async fn mode_endpoints_and_import() {
    let api = Api::new();
    assert_eq!(
        api.ok("GET", "/mode", None).await,
        json!({"mode": "READWRITE"})
    );
    api.error("GET", "/mode/s", None, 404, 40409).await;
    assert_eq!(
        api.ok("GET", "/mode/s?defaultToGlobal=true", None).await,
        json!({"mode": "READWRITE"})
    );
    api.error(
        "PUT",
        "/mode",
        Some(json!({"mode": "WRITEONLY"})),
        422,
        42204,
    )
    .await;
    api.register("live", "\"string\"").await;
    api.error(
        "POST",
        "/subjects/live/versions",
        Some(json!({"schema": "\"int\"", "id": 50})),
        422,
        42205,
    )
    .await;
    assert_eq!(
        api.ok("PUT", "/mode/live", Some(json!({"mode": "READONLY"})))
            .await,
        json!({"mode": "READONLY"})
    );
    let message = api
        .error(
            "POST",
            "/subjects/live/versions",
            Some(json!({"schema": "\"int\""})),
            422,
            42205,
        )
        .await;
    assert!(message.contains("read-only"), "{message}");
    api.error("DELETE", "/subjects/live", None, 422, 42205)
        .await;
    assert_eq!(
        api.ok("DELETE", "/mode/live", None).await,
        json!({"mode": "READONLY"})
    );
    api.error("DELETE", "/mode/live", None, 404, 40401).await;
    // IMPORT needs an empty registry (or force) and keeps the given ids and versions.
    let message = api
        .error("PUT", "/mode", Some(json!({"mode": "IMPORT"})), 422, 42205)
        .await;
    assert!(message.contains("existing subjects"), "{message}");
    api.ok("PUT", "/mode/imported", Some(json!({"mode": "IMPORT"})))
        .await;
    api.error(
        "POST",
        "/subjects/imported/versions",
        Some(json!({"schema": "\"long\""})),
        422,
        42205,
    )
    .await;
    let body = json!({"schema": "\"long\"", "id": 100, "version": 7});
    assert_eq!(
        api.ok("POST", "/subjects/imported/versions", Some(body))
            .await,
        json!({"id": 100})
    );
    assert_eq!(
        api.ok("GET", "/subjects/imported/versions/7", None).await["id"],
        json!(100)
    );
    let clash = json!({"schema": "\"double\"", "id": 100, "version": 8});
    api.error(
        "POST",
        "/subjects/imported/versions",
        Some(clash),
        422,
        42205,
    )
    .await;
    let mismatch = json!({"schema": "\"long\"", "id": 101, "version": 8});
    api.error(
        "POST",
        "/subjects/imported/versions",
        Some(mismatch),
        422,
        42207,
    )
    .await;
    api.error(
        "PUT",
        "/mode?force=false",
        Some(json!({"mode": "IMPORT"})),
        422,
        42205,
    )
    .await;
    api.ok("PUT", "/mode?force=true", Some(json!({"mode": "IMPORT"})))
        .await;
    assert_eq!(
        api.ok("DELETE", "/mode", None).await,
        json!({"mode": "IMPORT"})
    );
    // Ids allocated after an import never collide with imported ones.
    api.ok("DELETE", "/mode/imported", None).await;
    assert!(api.register("after", "\"boolean\"").await > 100);
}

#[tokio::test]
async fn protobuf_schemas() {
    let api = Api::new();
    let v1 = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage shop.v1;\nmessage Order { string id = 1; int32 qty = 2; }\n"});
    let id = api
        .ok("POST", "/subjects/orders-value/versions", Some(v1))
        .await["id"]
        .clone();
    let commented = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\n// comment\npackage shop.v1;\nmessage Order {\n string id = 1;\n int32 qty = 2; }"});
    assert_eq!(
        api.ok("POST", "/subjects/orders-value/versions", Some(commented))
            .await["id"],
        id
    );
    let bad = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage shop.v1;\nmessage Order { string id = 1; string qty = 2; }\n"});
    let message = api
        .error(
            "POST",
            "/subjects/orders-value/versions",
            Some(bad),
            409,
            409,
        )
        .await;
    assert!(message.contains("FIELD_SCALAR_KIND_CHANGED"), "{message}");
    let broken = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\nmessage {"});
    let message = api
        .error(
            "POST",
            "/subjects/orders-value/versions",
            Some(broken),
            422,
            42201,
        )
        .await;
    assert!(message.contains(":2:"), "line is named: {message}");
}

/// How many registrations race in the concurrency tests.
const RACERS: usize = 64;

/// Runs `RACERS` registrations as real tasks on the (multi-thread) runtime, all released at
/// once by a barrier so their plan and commit phases interleave. `target(i)` names the
/// subject and schema of racer `i`. Returns the IDs in racer order.
async fn race_registrations(
    api: &Arc<Api>,
    target: impl Fn(usize) -> (String, String),
) -> Vec<u64> {
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::with_capacity(RACERS);
    for i in 0..RACERS {
        let api = api.clone();
        let barrier = barrier.clone();
        let (subject, schema) = target(i);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            api.register(&subject, &schema).await
        }));
    }
    // Bounded: a registration path that deadlocks under concurrency fails, not hangs.
    tokio::time::timeout(std::time::Duration::from_secs(60), async move {
        let mut ids = Vec::with_capacity(RACERS);
        for task in tasks {
            ids.push(
                task.await
                    .expect("registration task panicked (a registration failed)"),
            );
        }
        ids
    })
    .await
    .expect("the racing registrations finish within 60 s")
}

/// Racer `i`'s schema: `shop.Order` with its own defaulted field, so every pair is
/// BACKWARD compatible (the reader's extra field has a default) and all are distinct.
fn distinct_record(i: usize) -> String {
    record(&format!(
        r#"{ID},{{"name":"f{i}","type":"int","default":{i}}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_schema_give_one_id_and_one_version() {
    let api = Arc::new(Api::new());
    let ids = race_registrations(&api, |_| ("race".to_owned(), record(ID))).await;
    let first = ids[0];
    assert!(ids.iter().all(|id| *id == first), "{ids:?}");
    assert_eq!(
        api.ok("GET", "/subjects/race/versions", None).await,
        json!([1])
    );
}

/// Distinct schemas raced into one subject: without the write gate, two racers plan against
/// the same state, take the same next ID and the same next version, and one overwrites the
/// other. With it, every racer gets its own ID and its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_distinct_schemas_to_one_subject_get_distinct_ids_and_versions()
{
    let api = Arc::new(Api::new());
    let ids = race_registrations(&api, |i| ("race".to_owned(), distinct_record(i))).await;

    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        RACERS,
        "every distinct schema gets its own id: {ids:?}"
    );

    let expected_versions: Vec<u64> = (1..=RACERS as u64).collect();
    assert_eq!(
        api.ok("GET", "/subjects/race/versions", None).await,
        json!(expected_versions),
        "versions are exactly 1..=N"
    );

    // Each version holds one of the returned ids, no id twice: a bijection versions ↔ ids,
    // and each id's stored schema is the one its racer sent.
    let mut version_ids = Vec::with_capacity(RACERS);
    for version in 1..=RACERS {
        let found = api
            .ok("GET", &format!("/subjects/race/versions/{version}"), None)
            .await;
        let id = found["id"].as_u64().expect("id");
        let racer = ids
            .iter()
            .position(|returned| *returned == id)
            .unwrap_or_else(|| panic!("version {version} holds id {id}, returned to no racer"));
        assert_eq!(
            found["schema"],
            json!(distinct_record(racer)),
            "version {version} (id {id}) holds racer {racer}'s schema"
        );
        version_ids.push(id);
    }
    version_ids.sort_unstable();
    assert_eq!(
        version_ids, unique,
        "versions and returned ids are in bijection"
    );
}

/// Distinct schemas raced into distinct subjects: IDs come from one shared counter, so
/// without the gate two racers take the same next ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_to_distinct_subjects_get_distinct_ids() {
    let api = Arc::new(Api::new());
    let ids = race_registrations(&api, |i| (format!("race-{i}"), distinct_record(i))).await;

    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        RACERS,
        "every distinct schema gets its own id: {ids:?}"
    );

    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            api.ok("GET", &format!("/subjects/race-{i}/versions"), None)
                .await,
            json!([1])
        );
        assert_eq!(
            api.ok("GET", &format!("/schemas/ids/{id}"), None).await,
            json!({"schema": distinct_record(i)}),
            "id {id} holds racer {i}'s schema"
        );
    }
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    {
        let registry =
            Arc::new(Registry::open(Store::open(&path).expect("store")).expect("registry"));
        let api = Api {
            app: NormalizePathLayer::trim_trailing_slash().layer(app(registry, None)),
            _dir: tempfile::tempdir().expect("t"),
        };
        api.register("a", "\"string\"").await;
        api.register("a", "[\"null\",\"string\"]").await;
        api.ok("DELETE", "/subjects/a/versions/1", None).await;
        api.ok("PUT", "/config/a", Some(json!({"compatibility": "FULL"})))
            .await;
        api.ok("PUT", "/mode/b", Some(json!({"mode": "READONLY"})))
            .await;
    }
    let api = Api::open(dir);
    assert_eq!(
        api.ok("GET", "/subjects/a/versions?deletedAsNegative=true", None)
            .await,
        json!([-1, 2])
    );
    assert_eq!(
        api.ok("GET", "/config/a", None).await,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        api.ok("GET", "/mode/b", None).await,
        json!({"mode": "READONLY"})
    );
    assert_eq!(
        api.register("c", "\"int\"").await,
        3,
        "id allocation continues after the highest id"
    );
}

#[tokio::test]
async fn basic_auth_roles_are_enforced_through_the_stack() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        "[[user]]\nname = \"reader\"\npassword_sha256 = \"51e98042068c15c3b59877f3ae364f747fddf0e5b15ebd8172d9c0804304512a\"\nrole = \"read\"\n\
         [[user]]\nname = \"writer\"\npassword_sha256 = \"f828b5cac5909cff4ac0c3f8727e498124d75b321fe45e7e5d7c65930876fa44\"\nrole = \"write\"\n\
         [[user]]\nname = \"admin\"\npassword_sha256 = \"b630f5d579dfef28c45ddf5e3c7a65f09ebca4d5b064a70c4203578c8667fdeb\"\nrole = \"admin\"\n",
    )
    .expect("write users");
    let auth = herald_registry::auth::AuthConfig::load(&users).expect("valid users file");
    let registry =
        Arc::new(Registry::open(Store::open(dir.path()).expect("store")).expect("registry"));
    let app = NormalizePathLayer::trim_trailing_slash().layer(app(registry, Some(auth)));
    let call = |method: &str, path: &str, user: Option<(&str, &str)>, body: Option<&str>| {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((name, password)) = user {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
            request = request.header("Authorization", format!("Basic {token}"));
        }
        let request = request
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let app = app.clone();
        async move {
            app.oneshot(request)
                .await
                .expect("infallible")
                .status()
                .as_u16()
        }
    };
    let schema = r#"{"schema": "\"string\""}"#;
    assert_eq!(call("GET", "/subjects", None, None).await, 401);
    assert_eq!(
        call("GET", "/subjects", Some(("reader", "wrong")), None).await,
        401
    );
    assert_eq!(
        call("GET", "/health", None, None).await,
        200,
        "health stays open for probes"
    );
    assert_eq!(
        call("GET", "/subjects", Some(("reader", "reader-pass")), None).await,
        200
    );
    assert_eq!(
        call(
            "POST",
            "/subjects/a/versions",
            Some(("reader", "reader-pass")),
            Some(schema)
        )
        .await,
        403
    );
    assert_eq!(
        call(
            "POST",
            "/subjects/a/versions",
            Some(("writer", "writer-pass")),
            Some(schema)
        )
        .await,
        200
    );
    assert_eq!(
        call(
            "POST",
            "/subjects/a",
            Some(("reader", "reader-pass")),
            Some(schema)
        )
        .await,
        200,
        "lookup is a read"
    );
    assert_eq!(
        call(
            "PUT",
            "/config",
            Some(("writer", "writer-pass")),
            Some(r#"{"compatibility":"NONE"}"#)
        )
        .await,
        403
    );
    assert_eq!(
        call(
            "PUT",
            "/config",
            Some(("admin", "admin-pass")),
            Some(r#"{"compatibility":"NONE"}"#)
        )
        .await,
        200
    );
    assert_eq!(
        call(
            "DELETE",
            "/subjects/a",
            Some(("writer", "writer-pass")),
            None
        )
        .await,
        200
    );
    assert_eq!(
        call(
            "DELETE",
            "/subjects/a?permanent=true",
            Some(("writer", "writer-pass")),
            None
        )
        .await,
        403
    );
    // The handler reads the flag in any case: so does the role check (a writer hard-deleted
    // with permanent=TRUE before).
    for spelling in ["TRUE", "True"] {
        assert_eq!(
            call(
                "DELETE",
                &format!("/subjects/a?permanent={spelling}"),
                Some(("writer", "writer-pass")),
                None
            )
            .await,
            403,
            "permanent={spelling}"
        );
    }
    assert_eq!(
        call(
            "DELETE",
            "/subjects/a?permanent=true",
            Some(("admin", "admin-pass")),
            None
        )
        .await,
        200
    );
}

/// Issue 15: a user limited to subject prefixes evolves its team's subjects only, sees only
/// them in `GET /subjects`, and cannot change global settings.
#[tokio::test]
async fn a_user_limited_to_subject_prefixes_acts_on_those_only() {
    use base64::Engine;
    use herald_registry::auth::{hash_password_with, PBKDF2_ITERATIONS_MIN};
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = |password: &str| hash_password_with(password, PBKDF2_ITERATIONS_MIN).expect("hash");
    let users = format!(
        "[[user]]\nname = \"root\"\npassword_hash = \"{}\"\nrole = \"admin\"\n\
         [[user]]\nname = \"team-a\"\npassword_hash = \"{}\"\nrole = \"write\"\nsubjects = [\"team-a.\"]\n",
        hash("root-pass"),
        hash("a-pass")
    );
    let auth = herald_registry::auth::AuthConfig::parse(&users, "users.toml").expect("users");
    let registry =
        Arc::new(Registry::open(Store::open(dir.path()).expect("store")).expect("registry"));
    let app = NormalizePathLayer::trim_trailing_slash().layer(app(registry, Some(auth)));
    let call = |method: &str, path: &str, user: (&str, &str), body: Option<&str>| {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.0, user.1));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Basic {token}"))
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let schema = r#"{"schema": "\"string\""}"#;
    let root = ("root", "root-pass");
    let team = ("team-a", "a-pass");
    for subject in ["team-a.orders", "team-b.payments"] {
        let path = format!("/subjects/{subject}/versions");
        assert_eq!(call("POST", &path, root, Some(schema)).await.0, 200);
    }
    assert_eq!(
        call(
            "POST",
            "/subjects/team-a.orders/versions",
            team,
            Some(schema)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            "POST",
            "/subjects/team-b.payments/versions",
            team,
            Some(schema)
        )
        .await
        .0,
        403,
        "team A cannot evolve team B's schemas"
    );
    assert_eq!(
        call("DELETE", "/subjects/team-b.payments", team, None)
            .await
            .0,
        403
    );
    assert_eq!(
        call("PUT", "/config", team, Some(r#"{"compatibility":"NONE"}"#))
            .await
            .0,
        403
    );
    let (status, body) = call("GET", "/subjects", team, None).await;
    assert_eq!(status, 200);
    let listed: Vec<String> = serde_json::from_str(&body).expect("json");
    assert_eq!(listed, ["team-a.orders"]);
    let (_, body) = call("GET", "/subjects", root, None).await;
    let listed: Vec<String> = serde_json::from_str(&body).expect("json");
    assert_eq!(listed.len(), 2);
}
