//! Authentication and ACL administration (APIs 16-19), kept apart from `messages` so each file
//! stays one concept. Encoded inside the same frames and envelopes.
//!
//! ```text
//! Authenticate  (16)  mechanism: string, message: bytes      -> message: bytes, principal: string ("" until done)
//! CreateAcls    (17)  count: u32, entry*                     -> added: u32
//! DescribeAcls  (18)  filter                                 -> count: u32, entry*
//! DeleteAcls    (19)  filter                                 -> count: u32, entry* (those removed)
//! AlterUser     (22)  name: string, credential: string,
//!                     [registry change]                      -> (empty)
//! DeleteUser    (23)  name: string                           -> (empty)
//! ListUsers     (24)  (empty)                                -> count: u32, name: string*
//!
//! entry  = principal: string, resource type: u8, pattern type: u8, name: string,
//!          operation: u8, permission: u8
//! filter = one presence byte (0 or 1) before each of the entry's six fields
//! registry change = 0 keep | 1 set, role: u8 (0 read, 1 write, 2 admin),
//!          prefix count: u32 (0: every subject), prefix: string* | 2 clear
//!          (keep is sent as nothing, as older clients send it)
//! ```
//!
//! A SCRAM exchange takes two `Authenticate` round trips on one connection (see
//! [`herald_auth::scram`]); the second answer carries the server's signature and the
//! authenticated principal. `AlterUser` carries a SCRAM-SHA-256 credential in its text form
//! (salt, iterations, stored and server keys: never the password), made on the client.

use std::str::FromStr;

use herald_auth::acl::{
    AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType,
    PRINCIPAL_NAME_BYTES_MAX, RESOURCE_NAME_BYTES_MAX,
};

use herald_auth::users::{
    RegistryAccess, RegistryChange, RegistryRole, SUBJECT_PREFIXES_MAX, SUBJECT_PREFIX_BYTES_MAX,
};

use crate::api::Api;
use crate::codec::{put_bytes, put_string, DecodeError, Reader};
use crate::limits::{
    ACLS_LISTED_MAX, ACLS_PER_REQUEST_MAX, AUTH_MESSAGE_BYTES_MAX, CREDENTIAL_TEXT_BYTES_MAX,
    MECHANISM_BYTES_MAX, USERS_LISTED_MAX,
};

/// `User:` plus the longest name.
const PRINCIPAL_TEXT_BYTES_MAX: usize = PRINCIPAL_NAME_BYTES_MAX + 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityRequest {
    /// One step of an authentication exchange.
    Authenticate {
        mechanism: String,
        message: Vec<u8>,
    },
    /// Adds entries (those already present are kept once).
    CreateAcls {
        entries: Vec<AclEntry>,
    },
    /// The entries the filter matches.
    DescribeAcls {
        filter: AclFilter,
    },
    /// Removes the entries the filter matches.
    DeleteAcls {
        filter: AclFilter,
    },
    /// Sets `name`'s credential (its text form), adding the user if new, and changes its
    /// registry access as `registry` says.
    AlterUser {
        name: String,
        credential: String,
        registry: RegistryChange,
    },
    DeleteUser {
        name: String,
    },
    ListUsers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityResponse {
    /// The server's next message; `principal` is set once the exchange has succeeded.
    Authenticated {
        message: Vec<u8>,
        principal: Option<Principal>,
    },
    AclsCreated {
        added: u32,
    },
    Acls(Vec<AclEntry>),
    AclsDeleted(Vec<AclEntry>),
    UserAltered,
    UserDeleted,
    Users(Vec<String>),
}

impl SecurityRequest {
    pub fn api(&self) -> Api {
        match self {
            SecurityRequest::Authenticate { .. } => Api::Authenticate,
            SecurityRequest::CreateAcls { .. } => Api::CreateAcls,
            SecurityRequest::DescribeAcls { .. } => Api::DescribeAcls,
            SecurityRequest::DeleteAcls { .. } => Api::DeleteAcls,
            SecurityRequest::AlterUser { .. } => Api::AlterUser,
            SecurityRequest::DeleteUser { .. } => Api::DeleteUser,
            SecurityRequest::ListUsers => Api::ListUsers,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SecurityRequest::Authenticate { mechanism, message } => {
                put_string(out, mechanism);
                put_bytes(out, message);
            }
            SecurityRequest::CreateAcls { entries } => put_entries(out, entries),
            SecurityRequest::DescribeAcls { filter } | SecurityRequest::DeleteAcls { filter } => {
                put_filter(out, filter)
            }
            SecurityRequest::AlterUser {
                name,
                credential,
                registry,
            } => {
                put_string(out, name);
                put_string(out, credential);
                // Nothing for Keep: a broker from before registry changes reads the request.
                if *registry != RegistryChange::Keep {
                    put_registry_change(out, registry);
                }
            }
            SecurityRequest::DeleteUser { name } => put_string(out, name),
            SecurityRequest::ListUsers => {}
        }
    }

    pub(crate) fn decode(api: Api, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            Api::Authenticate => SecurityRequest::Authenticate {
                mechanism: r.string("mechanism", MECHANISM_BYTES_MAX)?,
                message: r
                    .bytes("authentication message", AUTH_MESSAGE_BYTES_MAX)?
                    .to_vec(),
            },
            Api::CreateAcls => SecurityRequest::CreateAcls {
                entries: read_entries(r, ACLS_PER_REQUEST_MAX)?,
            },
            Api::DescribeAcls => SecurityRequest::DescribeAcls {
                filter: read_filter(r)?,
            },
            Api::DeleteAcls => SecurityRequest::DeleteAcls {
                filter: read_filter(r)?,
            },
            Api::AlterUser => SecurityRequest::AlterUser {
                name: r.string("user name", PRINCIPAL_NAME_BYTES_MAX)?,
                credential: r.string("credential", CREDENTIAL_TEXT_BYTES_MAX)?,
                registry: if r.remaining() == 0 {
                    RegistryChange::Keep
                } else {
                    read_registry_change(r)?
                },
            },
            Api::DeleteUser => SecurityRequest::DeleteUser {
                name: r.string("user name", PRINCIPAL_NAME_BYTES_MAX)?,
            },
            Api::ListUsers => SecurityRequest::ListUsers,
            other => {
                return Err(DecodeError::Invalid {
                    what: "security api",
                    detail: other.name().to_owned(),
                })
            }
        })
    }
}

impl SecurityResponse {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SecurityResponse::Authenticated { message, principal } => {
                put_bytes(out, message);
                put_string(
                    out,
                    &principal
                        .as_ref()
                        .map(Principal::to_string)
                        .unwrap_or_default(),
                );
            }
            SecurityResponse::AclsCreated { added } => out.extend_from_slice(&added.to_be_bytes()),
            SecurityResponse::Acls(entries) | SecurityResponse::AclsDeleted(entries) => {
                put_entries(out, entries)
            }
            SecurityResponse::UserAltered | SecurityResponse::UserDeleted => {}
            SecurityResponse::Users(names) => {
                out.extend_from_slice(&(names.len() as u32).to_be_bytes());
                for name in names {
                    put_string(out, name);
                }
            }
        }
    }

    pub(crate) fn decode(api: Api, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            Api::Authenticate => {
                let message = r
                    .bytes("authentication message", AUTH_MESSAGE_BYTES_MAX)?
                    .to_vec();
                let principal = r.string("principal", PRINCIPAL_TEXT_BYTES_MAX)?;
                let principal = if principal.is_empty() {
                    None
                } else {
                    Some(parse_principal(&principal)?)
                };
                SecurityResponse::Authenticated { message, principal }
            }
            Api::CreateAcls => SecurityResponse::AclsCreated {
                added: r.u32("added")?,
            },
            Api::DescribeAcls => SecurityResponse::Acls(read_entries(r, ACLS_LISTED_MAX)?),
            Api::DeleteAcls => SecurityResponse::AclsDeleted(read_entries(r, ACLS_LISTED_MAX)?),
            Api::AlterUser => SecurityResponse::UserAltered,
            Api::DeleteUser => SecurityResponse::UserDeleted,
            Api::ListUsers => {
                let count = r.count("users", USERS_LISTED_MAX)?;
                SecurityResponse::Users(
                    (0..count)
                        .map(|_| r.string("user name", PRINCIPAL_NAME_BYTES_MAX))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => {
                return Err(DecodeError::Invalid {
                    what: "security api",
                    detail: other.name().to_owned(),
                })
            }
        })
    }
}

fn parse_principal(text: &str) -> Result<Principal, DecodeError> {
    Principal::from_str(text).map_err(|e| DecodeError::Invalid {
        what: "principal",
        detail: e.to_string(),
    })
}

fn resource_type_code(value: ResourceType) -> u8 {
    match value {
        ResourceType::Topic => 0,
        ResourceType::Group => 1,
        ResourceType::Cluster => 2,
        ResourceType::Subject => 3,
    }
}

fn resource_type(r: &mut Reader<'_>) -> Result<ResourceType, DecodeError> {
    Ok(match r.u8("resource type")? {
        0 => ResourceType::Topic,
        1 => ResourceType::Group,
        2 => ResourceType::Cluster,
        3 => ResourceType::Subject,
        other => return Err(invalid("resource type", other)),
    })
}

fn pattern_type_code(value: PatternType) -> u8 {
    match value {
        PatternType::Literal => 0,
        PatternType::Prefixed => 1,
    }
}

fn pattern_type(r: &mut Reader<'_>) -> Result<PatternType, DecodeError> {
    Ok(match r.u8("pattern type")? {
        0 => PatternType::Literal,
        1 => PatternType::Prefixed,
        other => return Err(invalid("pattern type", other)),
    })
}

fn operation_code(value: Operation) -> u8 {
    match value {
        Operation::Read => 0,
        Operation::Write => 1,
        Operation::Create => 2,
        Operation::Delete => 3,
        Operation::Alter => 4,
        Operation::Describe => 5,
        Operation::All => 6,
    }
}

fn operation(r: &mut Reader<'_>) -> Result<Operation, DecodeError> {
    Ok(match r.u8("operation")? {
        0 => Operation::Read,
        1 => Operation::Write,
        2 => Operation::Create,
        3 => Operation::Delete,
        4 => Operation::Alter,
        5 => Operation::Describe,
        6 => Operation::All,
        other => return Err(invalid("operation", other)),
    })
}

fn permission_code(value: Permission) -> u8 {
    match value {
        Permission::Allow => 0,
        Permission::Deny => 1,
    }
}

fn permission(r: &mut Reader<'_>) -> Result<Permission, DecodeError> {
    Ok(match r.u8("permission")? {
        0 => Permission::Allow,
        1 => Permission::Deny,
        other => return Err(invalid("permission", other)),
    })
}

fn invalid(what: &'static str, code: u8) -> DecodeError {
    DecodeError::Invalid {
        what,
        detail: code.to_string(),
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &AclEntry) {
    put_string(out, &entry.principal.to_string());
    out.push(resource_type_code(entry.resource_type));
    out.push(pattern_type_code(entry.pattern_type));
    put_string(out, &entry.name);
    out.push(operation_code(entry.operation));
    out.push(permission_code(entry.permission));
}

fn read_entry(r: &mut Reader<'_>) -> Result<AclEntry, DecodeError> {
    let principal = parse_principal(&r.string("principal", PRINCIPAL_TEXT_BYTES_MAX)?)?;
    let resource_type = resource_type(r)?;
    let pattern_type = pattern_type(r)?;
    let name = r.string("resource name", RESOURCE_NAME_BYTES_MAX)?;
    let operation = operation(r)?;
    let permission = permission(r)?;
    AclEntry::new(
        principal,
        resource_type,
        pattern_type,
        name,
        operation,
        permission,
    )
    .map_err(|e| DecodeError::Invalid {
        what: "ACL entry",
        detail: e.to_string(),
    })
}

/// Writes a user's registry change (see the module's grammar).
pub fn put_registry_change(out: &mut Vec<u8>, change: &RegistryChange) {
    match change {
        RegistryChange::Keep => out.push(0),
        RegistryChange::Set(access) => {
            out.push(1);
            out.push(match access.role {
                RegistryRole::Read => 0,
                RegistryRole::Write => 1,
                RegistryRole::Admin => 2,
            });
            let prefixes = access.subjects.as_deref().unwrap_or_default();
            out.extend_from_slice(&(prefixes.len() as u32).to_be_bytes());
            for prefix in prefixes {
                put_string(out, prefix);
            }
        }
        RegistryChange::Clear => out.push(2),
    }
}

/// Reads what [`put_registry_change`] wrote; an access [`RegistryAccess::check`] refuses is
/// an error.
pub fn read_registry_change(r: &mut Reader<'_>) -> Result<RegistryChange, DecodeError> {
    let invalid = |what: &'static str, detail: String| DecodeError::Invalid { what, detail };
    Ok(match r.u8("registry change")? {
        0 => RegistryChange::Keep,
        1 => {
            let role = match r.u8("registry role")? {
                0 => RegistryRole::Read,
                1 => RegistryRole::Write,
                2 => RegistryRole::Admin,
                other => return Err(invalid("registry role", other.to_string())),
            };
            let count = r.u32("subject prefix count")? as usize;
            if count > SUBJECT_PREFIXES_MAX {
                return Err(invalid(
                    "subject prefix count",
                    format!("{count}, at most {SUBJECT_PREFIXES_MAX}"),
                ));
            }
            let prefixes = (0..count)
                .map(|_| r.string("subject prefix", SUBJECT_PREFIX_BYTES_MAX))
                .collect::<Result<Vec<_>, _>>()?;
            RegistryChange::Set(
                RegistryAccess::new(role, prefixes)
                    .map_err(|e| invalid("registry access", e.to_string()))?,
            )
        }
        2 => RegistryChange::Clear,
        other => return Err(invalid("registry change", other.to_string())),
    })
}

pub fn put_entries(out: &mut Vec<u8>, entries: &[AclEntry]) {
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        put_entry(out, entry);
    }
}

pub fn read_entries(r: &mut Reader<'_>, limit: usize) -> Result<Vec<AclEntry>, DecodeError> {
    let count = r.count("ACL entries", limit)?;
    // Each entry takes at least 8 bytes: never reserve more than the body could hold.
    let mut entries = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        entries.push(read_entry(r)?);
    }
    Ok(entries)
}

fn put_present(out: &mut Vec<u8>, present: bool) {
    out.push(u8::from(present));
}

fn present(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid(what, other)),
    }
}

pub fn put_filter(out: &mut Vec<u8>, filter: &AclFilter) {
    put_present(out, filter.principal.is_some());
    if let Some(principal) = &filter.principal {
        put_string(out, &principal.to_string());
    }
    put_present(out, filter.resource_type.is_some());
    if let Some(value) = filter.resource_type {
        out.push(resource_type_code(value));
    }
    put_present(out, filter.pattern_type.is_some());
    if let Some(value) = filter.pattern_type {
        out.push(pattern_type_code(value));
    }
    put_present(out, filter.name.is_some());
    if let Some(name) = &filter.name {
        put_string(out, name);
    }
    put_present(out, filter.operation.is_some());
    if let Some(value) = filter.operation {
        out.push(operation_code(value));
    }
    put_present(out, filter.permission.is_some());
    if let Some(value) = filter.permission {
        out.push(permission_code(value));
    }
}

pub fn read_filter(r: &mut Reader<'_>) -> Result<AclFilter, DecodeError> {
    let mut filter = AclFilter::any();
    if present(r, "principal present")? {
        filter.principal = Some(parse_principal(
            &r.string("principal", PRINCIPAL_TEXT_BYTES_MAX)?,
        )?);
    }
    if present(r, "resource type present")? {
        filter.resource_type = Some(resource_type(r)?);
    }
    if present(r, "pattern type present")? {
        filter.pattern_type = Some(pattern_type(r)?);
    }
    if present(r, "name present")? {
        filter.name = Some(r.string("resource name", RESOURCE_NAME_BYTES_MAX)?);
    }
    if present(r, "operation present")? {
        filter.operation = Some(operation(r)?);
    }
    if present(r, "permission present")? {
        filter.permission = Some(permission(r)?);
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every enum value has its own code and reads back as itself; codes never move.
    #[test]
    fn enum_codes_are_fixed_and_distinct() {
        let check = |codes: Vec<(u8, u8)>| {
            for (expected, actual) in codes {
                assert_eq!(expected, actual);
            }
        };
        check(vec![
            (0, resource_type_code(ResourceType::Topic)),
            (1, resource_type_code(ResourceType::Group)),
            (2, resource_type_code(ResourceType::Cluster)),
            (3, resource_type_code(ResourceType::Subject)),
            (0, pattern_type_code(PatternType::Literal)),
            (1, pattern_type_code(PatternType::Prefixed)),
            (0, operation_code(Operation::Read)),
            (1, operation_code(Operation::Write)),
            (2, operation_code(Operation::Create)),
            (3, operation_code(Operation::Delete)),
            (4, operation_code(Operation::Alter)),
            (5, operation_code(Operation::Describe)),
            (6, operation_code(Operation::All)),
            (0, permission_code(Permission::Allow)),
            (1, permission_code(Permission::Deny)),
        ]);
        for value in ResourceType::VALUES {
            let bytes = [resource_type_code(value)];
            assert_eq!(resource_type(&mut Reader::new(&bytes)).ok(), Some(value));
        }
        for value in PatternType::VALUES {
            let bytes = [pattern_type_code(value)];
            assert_eq!(pattern_type(&mut Reader::new(&bytes)).ok(), Some(value));
        }
        for value in Operation::VALUES {
            let bytes = [operation_code(value)];
            assert_eq!(operation(&mut Reader::new(&bytes)).ok(), Some(value));
        }
        for value in Permission::VALUES {
            let bytes = [permission_code(value)];
            assert_eq!(permission(&mut Reader::new(&bytes)).ok(), Some(value));
        }
    }

    #[test]
    fn an_entry_that_does_not_validate_is_refused_with_the_reason() {
        // A prefixed cluster entry is not an entry (the cluster is one literal resource).
        let mut out = Vec::new();
        put_string(&mut out, "User:alice");
        out.push(resource_type_code(ResourceType::Cluster));
        out.push(pattern_type_code(PatternType::Prefixed));
        put_string(&mut out, "her");
        out.push(operation_code(Operation::Alter));
        out.push(permission_code(Permission::Allow));
        let error = read_entry(&mut Reader::new(&out))
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("cluster")),
            "{error:?}"
        );
    }
}
