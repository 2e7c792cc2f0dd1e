//! The Confluent Schema Registry REST API over [`Registry`]. Handlers only extract, call the
//! registry and shape JSON; every rule lives in `registry/`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use herald_schema::{CompatibilityLevel, SchemaType};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ReadError, WriteError};
use crate::model::{ConfigRecord, Mode, SchemaRecord, SchemaReference};
use crate::registry::{Registry, SchemaRequest, SubjectVersion};

/// Shared state of every handler.
pub type AppState = Arc<Registry>;

/// The registry's error body: `{"error_code": N, "message": "..."}` and nothing else.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn from_code(code: u32, message: String) -> Self {
        let status = match code {
            409 | 40900..=40999 => StatusCode::CONFLICT,
            40400..=40499 => StatusCode::NOT_FOUND,
            42200..=42299 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            code,
            message,
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        Self::from_code(error.code(), error.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        Self::from_code(error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(code = self.code, error = %self.message, "request failed");
            "Internal server error: see the registry log".to_owned()
        } else {
            self.message
        };
        (
            self.status,
            Json(json!({"error_code": self.code, "message": message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Builds the API router. Tests call it with `oneshot`; the server wraps it in its layers.
pub fn router(registry: AppState) -> Router {
    Router::new()
        .route("/", get(root).post(root))
        .route("/schemas", get(list_schemas))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_latest),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/mode",
            get(get_global_mode)
                .put(put_global_mode)
                .delete(delete_global_mode),
        )
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .route("/contexts", get(contexts))
        .route("/v1/metadata/version", get(metadata_version))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405,
                "HTTP 405 Method Not Allowed",
            )
        })
        .with_state(registry)
}

// ---- request parsing -------------------------------------------------------------------------

type Params = Query<HashMap<String, String>>;

/// A boolean query parameter as the handlers read it (`true` in any case). Authorization
/// decides from the same parsed parameters with this same function, so the two can never
/// read a request differently.
pub(crate) fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Parses a JSON body whatever its content type, answering bad JSON in the registry's format.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            "Request body is missing",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("Unrecognized or malformed JSON body: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<ReferenceBody>>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    version: Option<i64>,
}

#[derive(Deserialize)]
struct ReferenceBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    version: Option<i64>,
}

fn schema_request(body: &Bytes) -> Result<SchemaRequest, ApiError> {
    let body: SchemaBody = json_body(body)?;
    let schema_type = match body.schema_type.as_deref() {
        None | Some("") => SchemaType::Avro,
        Some(name) => name
            .parse()
            .map_err(|e: herald_schema::UnknownSchemaType| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42201,
                    format!("Invalid schema: {e}"),
                )
            })?,
    };
    let positive = |value: Option<i64>, what: &str| -> Result<Option<u32>, ApiError> {
        match value {
            None => Ok(None),
            Some(number) if (1..=i64::from(i32::MAX)).contains(&number) => Ok(Some(number as u32)),
            Some(number) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("Invalid schema: {what} {number} is not between 1 and 2^31-1"),
            )),
        }
    };
    let references = body
        .references
        .unwrap_or_default()
        .into_iter()
        .map(|reference| SchemaReference {
            name: reference.name,
            subject: reference.subject,
            version: reference.version.unwrap_or(-1),
        })
        .collect();
    Ok(SchemaRequest {
        schema: body.schema.unwrap_or_default(),
        schema_type,
        references,
        id: positive(body.id, "id")?,
        version: positive(body.version.filter(|v| *v != -1), "version")?,
    })
}

fn parse_id(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().map_err(|_| ApiError::not_found())
}

// ---- response shaping ------------------------------------------------------------------------

fn references_json(references: &[SchemaReference]) -> Value {
    Value::Array(
        references
            .iter()
            .map(|r| json!({"name": r.name, "subject": r.subject, "version": r.version}))
            .collect(),
    )
}

/// `schemaType` is omitted for Avro and `references` when empty, as older clients expect.
fn schema_fields(record: &SchemaRecord, into: &mut Map<String, Value>) {
    if record.schema_type != SchemaType::Avro {
        into.insert("schemaType".into(), json!(record.schema_type.as_str()));
    }
    if !record.references.is_empty() {
        into.insert("references".into(), references_json(&record.references));
    }
}

fn version_json(found: &SubjectVersion) -> Value {
    let mut object = Map::new();
    object.insert("subject".into(), json!(found.subject));
    object.insert("version".into(), json!(found.version));
    object.insert("id".into(), json!(found.id));
    schema_fields(&found.record, &mut object);
    object.insert("schema".into(), json!(found.record.text));
    Value::Object(object)
}

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

/// The bare schema text of the `/schema` endpoints.
fn raw(text: &str) -> ApiResult {
    let mut response = text.to_owned().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    Ok(response)
}

fn paginate<T>(items: Vec<T>, params: &HashMap<String, String>) -> Vec<T> {
    let offset = params
        .get("offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|limit| *limit >= 0)
        .map(|limit| limit as usize)
        .unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit).collect()
}

// ---- handlers: root, schemas ------------------------------------------------------------------

async fn root() -> Json<Value> {
    Json(json!({}))
}

async fn contexts() -> Json<Value> {
    Json(json!(["."]))
}

async fn metadata_version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "commitId": "herald"}))
}

async fn schema_types() -> Json<Value> {
    Json(json!(["AVRO", "PROTOBUF"]))
}

async fn schema_by_id(
    State(registry): State<AppState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let id = parse_id(&id)?;
    // `subject` and `referenceFormat` do not change the answer here; `format` and
    // `fetchMaxId` do, and take the slow path.
    if !params.contains_key("format") && !flag(&params, "fetchMaxId") {
        let body = registry.read().id_responses.get(&id).cloned();
        if let Some(body) = body {
            return Ok((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response());
        }
    }
    let record = registry.schema_by_id(id)?;
    let mut object = Map::new();
    schema_fields(&record, &mut object);
    object.insert(
        "schema".into(),
        json!(formatted_text(&registry, id, &record, &params)?),
    );
    if flag(&params, "fetchMaxId") {
        let max = registry.read().schemas.keys().copied().max().unwrap_or(0);
        object.insert("maxId".into(), json!(max));
    }
    ok(Value::Object(object))
}

/// The schema text as `format` asks: `serialized` turns Protobuf into a base64
/// FileDescriptorProto (what Confluent's serializers fetch); anything else is the text.
fn formatted_text(
    registry: &AppState,
    id: u32,
    record: &SchemaRecord,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    Ok(match params.get("format").map(String::as_str) {
        Some("serialized") if record.schema_type == SchemaType::Protobuf => {
            let parsed = registry.parsed(id)?;
            let bytes = parsed.serialized_descriptor().unwrap_or_default();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
        _ => record.text.clone(),
    })
}

async fn raw_schema_by_id(State(registry): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let record = registry.schema_by_id(parse_id(&id)?)?;
    raw(&record.text)
}

async fn subjects_by_id(
    State(registry): State<AppState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let id = parse_id(&id)?;
    let state = registry.read();
    state.schema(id)?;
    let mut subjects: Vec<String> = state
        .usages(id, flag(&params, "deleted"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn versions_by_id(
    State(registry): State<AppState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let id = parse_id(&id)?;
    let state = registry.read();
    state.schema(id)?;
    let usages: Vec<Value> = state
        .usages(id, flag(&params, "deleted"))
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    ok(Value::Array(usages))
}

async fn list_schemas(State(registry): State<AppState>, Query(params): Params) -> ApiResult {
    let prefix = params.get("subjectPrefix").cloned().unwrap_or_default();
    let deleted = flag(&params, "deleted");
    let latest_only = flag(&params, "latestOnly");
    let state = registry.read();
    let mut items = Vec::new();
    for subject in state.subjects.keys().filter(|s| s.starts_with(&prefix)) {
        let versions: Vec<_> = state.versions(subject, deleted).collect();
        let chosen: Vec<_> = if latest_only {
            versions.last().copied().into_iter().collect()
        } else {
            versions
        };
        for (version, record) in chosen {
            let schema = state.schema(record.id)?.clone();
            items.push(version_json(&SubjectVersion {
                subject: subject.clone(),
                version,
                id: record.id,
                record: schema,
            }));
        }
    }
    ok(Value::Array(paginate(items, &params)))
}

// ---- handlers: subjects and versions ------------------------------------------------------------

async fn list_subjects(State(registry): State<AppState>, Query(params): Params) -> ApiResult {
    let prefix = params.get("subjectPrefix").cloned().unwrap_or_default();
    let deleted = flag(&params, "deleted");
    let deleted_only = flag(&params, "deletedOnly");
    let state = registry.read();
    let subjects: Vec<String> = state
        .subjects
        .keys()
        .filter(|subject| subject.starts_with(&prefix))
        .filter(|subject| {
            let live = state.subject_exists(subject, false);
            if deleted_only {
                !live
            } else {
                live || deleted
            }
        })
        .cloned()
        .collect();
    ok(json!(paginate(subjects, &params)))
}

async fn list_versions(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let deleted_only = flag(&params, "deletedOnly");
    let as_negative = flag(&params, "deletedAsNegative");
    let include_deleted = flag(&params, "deleted") || deleted_only || as_negative;
    let state = registry.read();
    if !state.subject_exists(&subject, include_deleted) {
        return Err(ReadError::SubjectNotFound(subject).into());
    }
    let versions: Vec<i64> = state
        .versions(&subject, include_deleted)
        .filter(|(_, record)| !deleted_only || record.deleted)
        .map(|(version, record)| {
            if as_negative && record.deleted {
                -i64::from(version)
            } else {
                i64::from(version)
            }
        })
        .collect();
    ok(json!(paginate(versions, &params)))
}

async fn get_version(
    State(registry): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let found = registry.subject_version(&subject, &version, flag(&params, "deleted"))?;
    let mut body = version_json(&found);
    if params.contains_key("format") {
        body["schema"] = json!(formatted_text(&registry, found.id, &found.record, &params)?);
    }
    ok(body)
}

async fn raw_version(
    State(registry): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let found = registry.subject_version(&subject, &version, flag(&params, "deleted"))?;
    raw(&found.record.text)
}

async fn referenced_by(
    State(registry): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let found = registry.subject_version(&subject, &version, false)?;
    ok(json!(registry.read().referrers(
        &subject,
        found.version,
        false
    )))
}

async fn register(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&body)?;
    let id = registry
        .register(&subject, request, flag(&params, "normalize"))
        .await?;
    ok(json!({"id": id}))
}

async fn lookup(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&body)?;
    let found = registry.lookup(
        &subject,
        &request,
        flag(&params, "normalize"),
        flag(&params, "deleted"),
    )?;
    ok(version_json(&found))
}

async fn delete_subject(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let versions = registry
        .delete_subject(&subject, flag(&params, "permanent"))
        .await?;
    ok(json!(versions))
}

async fn delete_version(
    State(registry): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let version = registry
        .delete_version(&subject, &version, flag(&params, "permanent"))
        .await?;
    ok(json!(version))
}

// ---- handlers: compatibility --------------------------------------------------------------------

async fn compatibility_latest(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    compatibility(&registry, &subject, None, &params, &body)
}

async fn compatibility_version(
    State(registry): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    compatibility(&registry, &subject, Some(&version), &params, &body)
}

fn compatibility(
    registry: &Registry,
    subject: &str,
    version: Option<&str>,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> ApiResult {
    let request = schema_request(body)?;
    let verbose = flag(params, "verbose");
    let outcome = registry.check_compatibility(subject, version, &request, verbose)?;
    let mut object = Map::new();
    object.insert("is_compatible".into(), json!(outcome.is_compatible));
    if verbose {
        object.insert("messages".into(), json!(outcome.messages));
    }
    ok(Value::Object(object))
}

// ---- handlers: config and mode ------------------------------------------------------------------

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default)]
    compatibility: Option<String>,
    #[serde(default, rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
    #[serde(default)]
    normalize: Option<bool>,
}

fn config_json(config: &ConfigRecord, field: &str) -> Value {
    let mut object = Map::new();
    if let Some(level) = config.compatibility {
        object.insert(field.into(), json!(level.as_str()));
    }
    if let Some(normalize) = config.normalize {
        object.insert("normalize".into(), json!(normalize));
    }
    Value::Object(object)
}

fn parse_config(body: &Bytes) -> Result<ConfigRecord, ApiError> {
    let body: ConfigBody = json_body(body)?;
    let compatibility = body
        .compatibility
        .or(body.compatibility_level)
        .map(|text| text.parse::<CompatibilityLevel>())
        .transpose()
        .map_err(|e| ApiError::from(WriteError::from(e)))?;
    if compatibility.is_none() && body.normalize.is_none() {
        return Err(WriteError::from(herald_schema::InvalidLevel(String::new())).into());
    }
    Ok(ConfigRecord {
        compatibility,
        normalize: body.normalize,
    })
}

async fn get_global_config(State(registry): State<AppState>) -> ApiResult {
    ok(config_json(
        &registry.config(None, true)?,
        "compatibilityLevel",
    ))
}

async fn put_global_config(State(registry): State<AppState>, body: Bytes) -> ApiResult {
    let config = parse_config(&body)?;
    registry.set_config(None, config).await?;
    ok(config_json(&config, "compatibility"))
}

async fn delete_global_config(State(registry): State<AppState>) -> ApiResult {
    ok(config_json(
        &registry.delete_config(None).await?,
        "compatibilityLevel",
    ))
}

async fn get_subject_config(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    ok(config_json(
        &registry.config(Some(&subject), flag(&params, "defaultToGlobal"))?,
        "compatibilityLevel",
    ))
}

async fn put_subject_config(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let config = parse_config(&body)?;
    registry.set_config(Some(&subject), config).await?;
    ok(config_json(&config, "compatibility"))
}

async fn delete_subject_config(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult {
    ok(config_json(
        &registry.delete_config(Some(&subject)).await?,
        "compatibilityLevel",
    ))
}

#[derive(Deserialize)]
struct ModeBody {
    #[serde(default)]
    mode: String,
}

fn parse_mode(body: &Bytes) -> Result<Mode, ApiError> {
    let body: ModeBody = json_body(body)?;
    body.mode
        .parse::<Mode>()
        .map_err(|e| ApiError::from(WriteError::from(e)))
}

async fn get_global_mode(State(registry): State<AppState>) -> ApiResult {
    ok(json!({"mode": registry.mode(None, true)?.as_str()}))
}

async fn put_global_mode(
    State(registry): State<AppState>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let mode = parse_mode(&body)?;
    registry
        .set_mode(None, mode, flag(&params, "force"))
        .await?;
    ok(json!({"mode": mode.as_str()}))
}

async fn delete_global_mode(State(registry): State<AppState>) -> ApiResult {
    ok(json!({"mode": registry.delete_mode(None).await?.as_str()}))
}

async fn get_subject_mode(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    ok(json!({"mode": registry.mode(Some(&subject), flag(&params, "defaultToGlobal"))?.as_str()}))
}

async fn put_subject_mode(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let mode = parse_mode(&body)?;
    registry
        .set_mode(Some(&subject), mode, flag(&params, "force"))
        .await?;
    ok(json!({"mode": mode.as_str()}))
}

async fn delete_subject_mode(
    State(registry): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult {
    ok(json!({"mode": registry.delete_mode(Some(&subject)).await?.as_str()}))
}
