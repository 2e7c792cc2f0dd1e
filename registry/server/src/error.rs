//! Registry errors, one enum per operation family, each knowing its Confluent error code.

use crate::store::StoreError;

/// Failures of read operations (lookups by subject, version or ID).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    NoSubjectConfig(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    NoSubjectMode(String),
}

impl ReadError {
    pub fn code(&self) -> u32 {
        match self {
            ReadError::SubjectNotFound(_) => 40401,
            ReadError::VersionNotFound(_) => 40402,
            ReadError::SchemaNotFound(_) => 40403,
            ReadError::InvalidVersion(_) => 42202,
            ReadError::NoSubjectConfig(_) => 40408,
            ReadError::NoSubjectMode(_) => 40409,
        }
    }
}

/// Failures of write operations (register, delete, config and mode changes).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", details.join(", "))]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("Schema too large: {size_bytes} bytes, the limit is {limit_bytes} bytes")]
    SchemaTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("Invalid subject name '{0}': subject names must be non-empty, free of control characters and not reserved")]
    InvalidSubject(String),
    #[error("{0}")]
    InvalidLevel(#[from] herald_schema::InvalidLevel),
    #[error("{0}")]
    InvalidMode(#[from] crate::model::InvalidMode),
    #[error("{0}")]
    NotPermitted(String),
    #[error("One or more references exist to the schema {{subject={subject}, version={version}}}")]
    ReferenceExists { subject: String, version: u32 },
    #[error("Schema {id} already exists with a different id {existing} for the same content")]
    IdMismatch { id: u32, existing: u32 },
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Version {version} of subject '{subject}' was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: u32 },
    #[error("Version {version} of subject '{subject}' was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: u32 },
    #[error("no schema IDs left: the registry has allocated 2^31-1 IDs")]
    IdsExhausted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WriteError {
    pub fn code(&self) -> u32 {
        match self {
            WriteError::Read(inner) => inner.code(),
            WriteError::Incompatible { .. } => 409,
            WriteError::InvalidSchema(_) => 42201,
            WriteError::SchemaTooLarge { .. } => 42209,
            WriteError::InvalidSubject(_) => 42208,
            WriteError::InvalidLevel(_) => 42203,
            WriteError::InvalidMode(_) => 42204,
            WriteError::NotPermitted(_) => 42205,
            WriteError::ReferenceExists { .. } => 42206,
            WriteError::IdMismatch { .. } => 42207,
            WriteError::SubjectSoftDeleted(_) => 40404,
            WriteError::SubjectNotSoftDeleted(_) => 40405,
            WriteError::VersionSoftDeleted { .. } => 40406,
            WriteError::VersionNotSoftDeleted { .. } => 40407,
            WriteError::IdsExhausted => 50001,
            WriteError::Store(_) => 50001,
        }
    }
}
