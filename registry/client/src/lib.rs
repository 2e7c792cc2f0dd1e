//! herald-registry-client: a typed async client for the Confluent Schema Registry REST API as
//! Herald serves it (and as Confluent does). Used by the broker, SDK, CLI, codegen and tests.
//!
//! It does not cache: callers that need an ID cache (the broker, the SDK) keep their own with
//! their own bounds.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Requests that take longer fail with [`ClientError::Http`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest CA file [`RegistryClient::with_ca_file`] reads, in bytes (a whole public CA
/// bundle is a few hundred KiB).
pub const CA_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an error body.
    #[error("registry error {code} (HTTP {status}): {message}")]
    Registry {
        status: u16,
        code: u32,
        message: String,
    },
    /// No answer: connection refused, timeout, TLS...
    #[error("cannot reach the registry: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer that is not what the API promises.
    #[error("unexpected answer from the registry (HTTP {status}): {reason}")]
    Decode { status: u16, reason: String },
    /// The CA file given to [`RegistryClient::with_ca_file`] cannot be read or holds no
    /// usable PEM certificate.
    #[error("registry CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

impl ClientError {
    /// The registry's error code (40401, 409, 42201...), if the registry answered.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Registry { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Registry { status, .. } => *status >= 500,
            // A certificate the client does not trust will not be trusted on a retry.
            ClientError::Http(error) => !is_certificate_error(error),
            ClientError::Decode { .. } | ClientError::CaFile { .. } => false,
        }
    }
}

/// A reference from one schema to another subject's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema to register, look up or check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSchema {
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
    /// Only in IMPORT mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Only in IMPORT mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

fn avro() -> String {
    "AVRO".to_owned()
}

impl NewSchema {
    pub fn avro(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            schema_type: avro(),
            references: Vec::new(),
            id: None,
            version: None,
        }
    }

    pub fn protobuf(schema: impl Into<String>) -> Self {
        Self {
            schema_type: "PROTOBUF".to_owned(),
            ..Self::avro(schema)
        }
    }

    pub fn with_references(mut self, references: Vec<SchemaReference>) -> Self {
        self.references = references;
        self
    }
}

/// `GET /schemas/ids/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemaById {
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// A version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// `(subject, version)` that uses a schema ID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectAndVersion {
    pub subject: String,
    pub version: u32,
}

/// The answer of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Compatibility {
    pub is_compatible: bool,
    #[serde(default)]
    pub messages: Vec<String>,
}

/// Which version a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Latest,
    Number(u32),
}

impl Version {
    fn segment(self) -> String {
        match self {
            Version::Latest => "latest".to_owned(),
            Version::Number(number) => number.to_string(),
        }
    }
}

/// A client for one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base_url: String,
    basic_auth: Option<(String, String)>,
}

impl RegistryClient {
    /// A client for the registry at `base_url` (e.g. `http://127.0.0.1:8081`, or
    /// `https://registry.example:8081`, trusted through the platform's root certificates or
    /// [`RegistryClient::with_ca_file`]).
    pub fn new(base_url: impl Into<String>) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client(Vec::new())?,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            basic_auth: None,
        })
    }

    /// Also trusts the certificates of the PEM file at `path` for an `https://` registry:
    /// the registry's own self-signed certificate, or the CA that signed it. The platform's
    /// root certificates stay trusted; a later call replaces the file given before.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ClientError> {
        let failed = |reason: String| ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = read_bounded(path, CA_FILE_BYTES_MAX).map_err(|e| failed(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(with_causes(&e)))?;
        if roots.is_empty() {
            return Err(failed("no PEM certificate in the file".to_owned()));
        }
        self.http = http_client(roots).map_err(|e| failed(with_causes(&e)))?;
        Ok(self)
    }

    /// Sends HTTP basic-auth credentials with every request.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .http
            .request(method, url)
            .header("Accept", CONTENT_TYPE);
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", CONTENT_TYPE)
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                status: status.as_u16(),
                reason: e.to_string(),
            });
        }
        Err(error_from(status, &bytes))
    }

    // ---- schemas -------------------------------------------------------------------------

    pub async fn register(&self, subject: &str, schema: &NewSchema) -> Result<u32, ClientError> {
        self.register_with(subject, schema, false).await
    }

    pub async fn register_with(
        &self,
        subject: &str,
        schema: &NewSchema,
        normalize: bool,
    ) -> Result<u32, ClientError> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let path = format!(
            "/subjects/{}/versions?normalize={normalize}",
            encode(subject)
        );
        let registered: Registered = self.call(Method::POST, &path, Some(json!(schema))).await?;
        Ok(registered.id)
    }

    pub async fn schema_by_id(&self, id: u32) -> Result<SchemaById, ClientError> {
        self.call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await
    }

    pub async fn subjects_for_id(&self, id: u32) -> Result<Vec<String>, ClientError> {
        self.call(Method::GET, &format!("/schemas/ids/{id}/subjects"), None)
            .await
    }

    pub async fn versions_for_id(&self, id: u32) -> Result<Vec<SubjectAndVersion>, ClientError> {
        self.call(Method::GET, &format!("/schemas/ids/{id}/versions"), None)
            .await
    }

    pub async fn schema_types(&self) -> Result<Vec<String>, ClientError> {
        self.call(Method::GET, "/schemas/types", None).await
    }

    pub async fn lookup(
        &self,
        subject: &str,
        schema: &NewSchema,
    ) -> Result<SubjectVersion, ClientError> {
        self.call(
            Method::POST,
            &format!("/subjects/{}", encode(subject)),
            Some(json!(schema)),
        )
        .await
    }

    // ---- subjects and versions -----------------------------------------------------------

    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, ClientError> {
        self.call(
            Method::GET,
            &format!("/subjects?deleted={include_deleted}"),
            None,
        )
        .await
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, ClientError> {
        self.call(
            Method::GET,
            &format!("/subjects/{}/versions", encode(subject)),
            None,
        )
        .await
    }

    pub async fn version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<SubjectVersion, ClientError> {
        self.call(
            Method::GET,
            &format!(
                "/subjects/{}/versions/{}",
                encode(subject),
                version.segment()
            ),
            None,
        )
        .await
    }

    pub async fn referenced_by(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<Vec<u32>, ClientError> {
        let path = format!(
            "/subjects/{}/versions/{}/referencedby",
            encode(subject),
            version.segment()
        );
        self.call(Method::GET, &path, None).await
    }

    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/subjects/{}?permanent={permanent}", encode(subject)),
            None,
        )
        .await
    }

    pub async fn delete_version(
        &self,
        subject: &str,
        version: Version,
        permanent: bool,
    ) -> Result<u32, ClientError> {
        let path = format!(
            "/subjects/{}/versions/{}?permanent={permanent}",
            encode(subject),
            version.segment()
        );
        self.call(Method::DELETE, &path, None).await
    }

    // ---- compatibility -------------------------------------------------------------------

    /// Checks `schema` against `version` (one version) or, with `None`, the way registration
    /// would (all versions the subject's level asks for).
    pub async fn check_compatibility(
        &self,
        subject: &str,
        version: Option<Version>,
        schema: &NewSchema,
    ) -> Result<Compatibility, ClientError> {
        let path = match version {
            Some(version) => format!(
                "/compatibility/subjects/{}/versions/{}?verbose=true",
                encode(subject),
                version.segment()
            ),
            None => format!(
                "/compatibility/subjects/{}/versions?verbose=true",
                encode(subject)
            ),
        };
        self.call(Method::POST, &path, Some(json!(schema))).await
    }

    // ---- config and mode -----------------------------------------------------------------

    /// The compatibility level of `subject` (its own, else global), or the global one.
    pub async fn compatibility_level(&self, subject: Option<&str>) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(rename = "compatibilityLevel")]
            level: String,
        }
        let path = match subject {
            Some(subject) => format!("/config/{}?defaultToGlobal=true", encode(subject)),
            None => "/config".to_owned(),
        };
        let config: Config = self.call(Method::GET, &path, None).await?;
        Ok(config.level)
    }

    pub async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: &str,
    ) -> Result<(), ClientError> {
        let path = match subject {
            Some(subject) => format!("/config/{}", encode(subject)),
            None => "/config".to_owned(),
        };
        let _: Value = self
            .call(Method::PUT, &path, Some(json!({"compatibility": level})))
            .await?;
        Ok(())
    }

    pub async fn delete_compatibility_level(
        &self,
        subject: Option<&str>,
    ) -> Result<(), ClientError> {
        let path = match subject {
            Some(subject) => format!("/config/{}", encode(subject)),
            None => "/config".to_owned(),
        };
        let _: Value = self.call(Method::DELETE, &path, None).await?;
        Ok(())
    }

    pub async fn mode(&self, subject: Option<&str>) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct ModeBody {
            mode: String,
        }
        let path = match subject {
            Some(subject) => format!("/mode/{}?defaultToGlobal=true", encode(subject)),
            None => "/mode".to_owned(),
        };
        let mode: ModeBody = self.call(Method::GET, &path, None).await?;
        Ok(mode.mode)
    }

    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let path = match subject {
            Some(subject) => format!("/mode/{}?force={force}", encode(subject)),
            None => format!("/mode?force={force}"),
        };
        let _: Value = self
            .call(Method::PUT, &path, Some(json!({"mode": mode})))
            .await?;
        Ok(())
    }
}

/// Whether `error` comes from a TLS certificate the client refused (or the server's refusal
/// of the client's): a configuration problem, not a passing one. rustls' error sits in the
/// chain, possibly inside an `io::Error` (whose `source` skips it, so it is unwrapped here).
fn is_certificate_error(error: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(tls) = rustls_error(current) {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        rustls::AlertDescription::BadCertificate
                            | rustls::AlertDescription::UnknownCA
                            | rustls::AlertDescription::CertificateRequired
                    )
            );
        }
        next = current.source();
    }
    false
}

/// `error` as rustls' error, looking inside `io::Error`s wrapped in one another (at most a
/// few: the depth is bounded).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = error;
    for _ in 0..8 {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

/// The HTTP client of every call: [`REQUEST_TIMEOUT`], and `extra_roots` trusted besides the
/// platform's root certificates.
fn http_client(extra_roots: Vec<reqwest::Certificate>) -> Result<reqwest::Client, reqwest::Error> {
    extra_roots
        .into_iter()
        .fold(
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT),
            reqwest::ClientBuilder::add_root_certificate,
        )
        .build()
}

/// The file at `path`, refused if longer than `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// `error` and its causes, joined by ": " (reqwest's own message is only its kind).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

fn error_from(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: u32,
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => ClientError::Registry {
            status: status.as_u16(),
            code: error.error_code,
            message: error.message,
        },
        Err(_) => ClientError::Registry {
            status: status.as_u16(),
            code: u32::from(status.as_u16()),
            message: String::from_utf8_lossy(body).chars().take(512).collect(),
        },
    }
}

/// Percent-encodes a subject for use as one path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_encoded_as_one_segment() {
        assert_eq!(encode("orders-value"), "orders-value");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(encode(":.ctx:x"), "%3A.ctx%3Ax");
    }

    #[test]
    fn error_bodies_keep_the_registry_code() {
        let error = error_from(
            StatusCode::NOT_FOUND,
            br#"{"error_code":40401,"message":"Subject 'x' not found."}"#,
        );
        assert_eq!(error.code(), Some(40401));
        assert!(!error.retryable());
        let error = error_from(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(error.code(), Some(502));
        assert!(error.retryable());
    }
}
