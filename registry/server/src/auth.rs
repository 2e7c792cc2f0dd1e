//! Optional HTTP basic authentication with three roles, configured from a TOML file:
//!
//! ```toml
//! [[user]]
//! name = "ci"
//! password_hash = "pbkdf2-sha256$210000$<salt, base64>$<hash, base64>"   # herald registry hash-password
//! role = "read"        # read | write | admin
//! ```
//!
//! `read` may use every GET plus the non-mutating POSTs (lookup, compatibility); `write` may
//! also register and soft-delete; `admin` may do everything (config, mode, permanent delete).
//!
//! Passwords are stored as salted, iterated PBKDF2-HMAC-SHA256 ([`hash_password`]) and
//! checked in constant time. `password_hash` may also be a broker user's SCRAM-SHA-256
//! stored key (`scram-sha256-stored$...`; `herald user export` prints a user's as a
//! `[[user]]` block; a whole `scram-sha256$...` credential is accepted too), so one password
//! serves both servers. Files written before that hold `password_sha256` (unsalted
//! SHA-256, hex): still accepted, compared in constant time, and named in a warning at load
//! so operators rehash them. A successful check is remembered (keyed by a keyed hash of the
//! credentials, never the password) so that a client sending basic auth with every request
//! pays for PBKDF2 once, not per request.
//!
//! The role a request needs is decided from its method, path and the query parameters as the
//! handlers parse them (`api::flag`), so `permanent=TRUE` is a permanent delete for both.
//!
//! A user may be limited to subjects by prefix (`subjects = ["team-a."]`): then every request
//! naming a subject (`/subjects/{s}…`, `/compatibility/subjects/{s}…`, `/config/{s}`,
//! `/mode/{s}`) must name one with a listed prefix, global changes (`/config`, `/mode`) are
//! refused, and `GET /subjects` lists only the user's subjects. Schemas stay readable by ID
//! (consumers need them), and the other listings by ID still show every subject name.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use herald_auth::acl::{Authorizer, Check, Operation, Principal, ResourceType, CLUSTER_NAME};
use ring::{hmac, pbkdf2, rand as ring_rand};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations for new hashes (OWASP's 2023 figure for PBKDF2-HMAC-SHA256 is 600,000;
/// 210,000 keeps a cold check near 100 ms on a small core, and checks are remembered).
pub const PBKDF2_ITERATIONS: u32 = 210_000;
/// Fewer iterations than this in a users file are refused as too weak.
pub const PBKDF2_ITERATIONS_MIN: u32 = 10_000;
/// More than this is refused: a hostile or mistyped file must not make one check take minutes.
pub const PBKDF2_ITERATIONS_MAX: u32 = 10_000_000;
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;
/// Successful checks remembered; past this, one is forgotten to make room.
pub const VERIFIED_CREDENTIALS_MAX: usize = 1024;
const HASH_PREFIX: &str = "pbkdf2-sha256";
/// The broker's credential texts (`herald_auth::scram::StoredKey::to_text`, and a whole
/// `Credential::to_text`).
const SCRAM_PREFIX: &str = "scram-sha256";

/// The registry roles, as the shared users file stores them.
pub use herald_auth::users::RegistryRole as Role;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    #[serde(default)]
    password_hash: Option<String>,
    /// Legacy: unsalted SHA-256 of the password, hex.
    #[serde(default)]
    password_sha256: Option<String>,
    role: Role,
    /// Subject prefixes the user is limited to; absent: every subject.
    #[serde(default)]
    subjects: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct UsersFile {
    #[serde(rename = "user", default)]
    users: Vec<UserEntry>,
}

/// How a user's password is checked.
#[derive(Debug, Clone)]
enum Secret {
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    LegacySha256([u8; 32]),
    /// The stored key of a broker user's SCRAM-SHA-256 credential (`herald user export` prints
    /// it as a registry user; a whole credential is accepted too): the same password works on
    /// both servers.
    Scram(herald_auth::scram::StoredKey),
}

impl Secret {
    /// PBKDF2 iterations a check of this secret takes.
    fn iterations(&self) -> Option<NonZeroU32> {
        match self {
            Secret::Pbkdf2 { iterations, .. } => Some(*iterations),
            Secret::Scram(credential) => NonZeroU32::new(credential.iterations),
            Secret::LegacySha256(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    secret: Secret,
    identity: Identity,
}

/// The users as last read, and what the dearest check costs.
#[derive(Debug)]
struct UserTable {
    /// Which reading of the users this is: checks remembered under another are not used.
    generation: u64,
    users: Vec<User>,
    /// The most PBKDF2 iterations any user's check takes: every check costs this much, so
    /// that timing tells neither which names exist nor which kind of hash a user has.
    cost_iterations: Option<NonZeroU32>,
}

impl UserTable {
    fn new(generation: u64, users: Vec<User>) -> Self {
        let cost_iterations = users.iter().filter_map(|u| u.secret.iterations()).max();
        Self {
            generation,
            users,
            cost_iterations,
        }
    }

    /// The users of the shared users file: each checked by its SCRAM stored key.
    fn of_shared(generation: u64, users: &herald_auth::users::Users) -> Self {
        Self::new(
            generation,
            users
                .iter()
                .map(|(name, user)| User {
                    name: name.to_owned(),
                    secret: Secret::Scram(user.credential.stored()),
                    identity: Identity {
                        role: user.registry.as_ref().map(|access| access.role),
                        subjects: user
                            .registry
                            .as_ref()
                            .and_then(|access| access.subjects.clone())
                            .map(Into::into),
                        principal: Principal::user(name).ok().map(std::sync::Arc::new),
                    },
                })
                .collect(),
        )
    }
}

/// How often the shared users file is looked at for changes (one `stat`).
pub const USERS_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What an authenticated user may do: a role and the subjects it applies to, and (with the
/// shared users file) the principal that the stored SUBJECT ACLs may grant more to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None`: no registry role (a user of the shared users file without one: only what the
    /// ACLs grant it).
    pub role: Option<Role>,
    /// Subject prefixes the role is limited to; `None`: every subject.
    pub subjects: Option<std::sync::Arc<[String]>>,
    /// `User:<name>`, for users of the shared users file.
    pub principal: Option<std::sync::Arc<Principal>>,
}

impl Identity {
    /// An identity of `role` over every subject.
    pub fn unscoped(role: Role) -> Self {
        Self {
            role: Some(role),
            subjects: None,
            principal: None,
        }
    }

    /// Whether listings need no filtering: an unscoped role, and no stored ACL entry that
    /// could keep the principal from describing a subject.
    pub fn sees_every_subject(&self, acls: Option<&RegistryAcls>) -> bool {
        let unscoped = self.role.is_some() && self.subjects.is_none();
        unscoped
            && match (&self.principal, acls) {
                (Some(principal), Some(acls)) => !acls.may_hide_subjects_from(principal),
                _ => true,
            }
    }

    /// Whether `GET /subjects` shows `subject`: not if a DENY entry keeps the principal from
    /// describing it; else if the role covers it or an ALLOW entry lets it describe it.
    pub fn lists(&self, subject: &str, acls: Option<&RegistryAcls>) -> bool {
        let check = match (acls, &self.principal) {
            (Some(acls), Some(principal)) => acls.authorizer.check(
                principal,
                Operation::Describe,
                ResourceType::Subject,
                subject,
            ),
            _ => Check::NotAllowed,
        };
        match check {
            Check::Denied => false,
            Check::Allowed => true,
            Check::NotAllowed => self.role.is_some() && self.covers(subject),
        }
    }

    /// Whether the identity covers `subject`.
    pub fn covers(&self, subject: &str) -> bool {
        self.subjects
            .as_ref()
            .is_none_or(|prefixes| prefixes.iter().any(|p| subject.starts_with(p.as_str())))
    }
}

/// The stored ACLs as the registry decides with them.
#[derive(Debug)]
pub struct RegistryAcls {
    /// No super users: the registry's admins are its `admin` role.
    authorizer: Authorizer,
    /// Principals (by name; `*` for `User:*`) that some SUBJECT entry allows something: they
    /// may also read what needs no grant (schemas by ID, global settings).
    subject_grantees: std::collections::HashSet<String>,
    /// Principals (by name; `*` for `User:*`) that some SUBJECT entry denies describing
    /// (DESCRIBE or ALL): their subject listings must be filtered whatever their role.
    subject_describe_denied: std::collections::HashSet<String>,
}

impl RegistryAcls {
    fn new(entries: Vec<herald_auth::acl::AclEntry>) -> Result<Self, herald_auth::acl::AclError> {
        use herald_auth::acl::Permission;
        let subject_grantees =
            subject_principals(&entries, |entry| entry.permission == Permission::Allow);
        let subject_describe_denied = subject_principals(&entries, |entry| {
            entry.permission == Permission::Deny
                && matches!(entry.operation, Operation::Describe | Operation::All)
        });
        let authorizer = Authorizer::new(
            herald_auth::acl::Acls::from_entries(entries)?,
            Default::default(),
        )?;
        Ok(Self {
            authorizer,
            subject_grantees,
            subject_describe_denied,
        })
    }

    /// Whether some SUBJECT entry allows `principal` something.
    fn grants_subjects_to(&self, principal: &Principal) -> bool {
        names(&self.subject_grantees, principal)
    }

    /// Whether some SUBJECT entry may keep `principal` from describing a subject.
    fn may_hide_subjects_from(&self, principal: &Principal) -> bool {
        names(&self.subject_describe_denied, principal)
    }
}

/// The principals (by name; `*` for `User:*`) of the SUBJECT entries `keep` selects.
fn subject_principals(
    entries: &[herald_auth::acl::AclEntry],
    keep: impl Fn(&herald_auth::acl::AclEntry) -> bool,
) -> std::collections::HashSet<String> {
    entries
        .iter()
        .filter(|entry| entry.resource_type == ResourceType::Subject && keep(entry))
        .map(|entry| entry.principal.name().to_owned())
        .collect()
}

/// Whether `set` (of principal names) names `principal`, or every user.
fn names(set: &std::collections::HashSet<String>, principal: &Principal) -> bool {
    set.contains(principal.name()) || set.contains(herald_auth::acl::WILDCARD)
}

/// The users, and the checks they have already passed.
///
/// Two sources: a TOML users file ([`AuthConfig::load`], read once), or the users file the
/// broker keeps too ([`AuthConfig::shared`], `users.meta`: SCRAM credentials with each user's
/// registry access), read again when it changes so that `herald user add|passwd|remove|
/// registry` apply to a running registry within [`USERS_RECHECK`].
#[derive(Debug)]
pub struct AuthConfig {
    table: std::sync::RwLock<std::sync::Arc<UserTable>>,
    /// The shared users file, when the users come from it.
    watch: Option<Mutex<herald_auth::users::UsersWatch>>,
    /// The stored ACLs beside the shared users file (`acls.meta`), whose SUBJECT (and
    /// CLUSTER) entries grant registry access; read again when they change.
    acls: Option<Mutex<herald_auth::watch::FileWatch<RegistryAcls>>>,
    /// Numbers the readings of the users.
    generations: std::sync::atomic::AtomicU64,
    /// Keys the remembered credentials: a random key per process, so the map holds no
    /// password-equivalent value.
    cache_key: hmac::Key,
    /// Remembered checks, with the users' reading they were made against.
    verified: Mutex<HashMap<[u8; 32], (u64, Identity)>>,
    /// Password checks running at once (one per core): a flood of made-up credentials costs
    /// at most the cores, and the rest are answered 503 at once.
    checking: std::sync::Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read auth file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid auth file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("auth file {path} defines no users")]
    Empty { path: String },
    #[error("auth file {path}, user '{user}': {reason}")]
    User {
        path: String,
        user: String,
        reason: String,
    },
    #[error("cannot draw random bytes for a salt")]
    Random,
    #[error(transparent)]
    Shared(#[from] herald_auth::users::UsersError),
    #[error("{0}")]
    Acls(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials: 401.
    Unauthenticated,
    /// Valid user, role too low: 403.
    Forbidden,
}

/// A `password_hash` value for `password`: PBKDF2-HMAC-SHA256 with a fresh 16-byte salt and
/// [`PBKDF2_ITERATIONS`].
pub fn hash_password(password: &str) -> Result<String, AuthConfigError> {
    hash_password_with(password, PBKDF2_ITERATIONS)
}

/// [`hash_password`] with a chosen iteration count (tests use the minimum: PBKDF2 is slow
/// in debug builds).
pub fn hash_password_with(password: &str, iterations: u32) -> Result<String, AuthConfigError> {
    let mut salt = [0u8; SALT_BYTES];
    ring_rand::SecureRandom::fill(&ring_rand::SystemRandom::new(), &mut salt)
        .map_err(|_| AuthConfigError::Random)?;
    let iterations = NonZeroU32::new(iterations).ok_or(AuthConfigError::Random)?;
    let mut hash = [0u8; HASH_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    Ok(format!(
        "{HASH_PREFIX}${iterations}${}${}",
        b64.encode(salt),
        b64.encode(hash)
    ))
}

fn parse_hash(text: &str) -> Result<Secret, String> {
    if text.trim_start().starts_with(SCRAM_PREFIX) {
        return herald_auth::scram::StoredKey::parse(text)
            .map(Secret::Scram)
            .map_err(|e| format!("password_hash: {e}"));
    }
    let mut parts = text.split('$');
    let (Some(HASH_PREFIX), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!(
            "password_hash must be {HASH_PREFIX}$<iterations>$<salt>$<hash> (herald registry hash-password prints one)"
        ));
    };
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| format!("password_hash iterations '{iterations}' is not a number"))?;
    if !(PBKDF2_ITERATIONS_MIN..=PBKDF2_ITERATIONS_MAX).contains(&iterations) {
        return Err(format!(
            "password_hash iterations {iterations} is not within {PBKDF2_ITERATIONS_MIN}..={PBKDF2_ITERATIONS_MAX}"
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt = b64
        .decode(salt.trim_end_matches('='))
        .map_err(|e| format!("password_hash salt is not base64: {e}"))?;
    let hash = b64
        .decode(hash.trim_end_matches('='))
        .map_err(|e| format!("password_hash hash is not base64: {e}"))?;
    if salt.len() < 8 || hash.len() != HASH_BYTES {
        return Err(format!(
            "password_hash needs a salt of at least 8 bytes and a {HASH_BYTES}-byte hash"
        ));
    }
    Ok(Secret::Pbkdf2 {
        iterations: NonZeroU32::new(iterations).ok_or("zero iterations")?,
        salt,
        hash,
    })
}

impl AuthConfig {
    pub fn load(path: &Path) -> Result<Self, AuthConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(metadata) = std::fs::metadata(path) {
                if metadata.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %shown, "the users file is readable by others: its hashes allow offline guessing (and SCRAM credentials more); chmod 600 it");
                }
            }
        }
        Self::parse(&text, &shown)
    }

    /// Parses a users file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self, AuthConfigError> {
        let file: UsersFile = toml::from_str(text).map_err(|source| AuthConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if file.users.is_empty() {
            return Err(AuthConfigError::Empty {
                path: path.to_owned(),
            });
        }
        let invalid = |user: &str, reason: String| AuthConfigError::User {
            path: path.to_owned(),
            user: user.to_owned(),
            reason,
        };
        let mut users = Vec::with_capacity(file.users.len());
        let mut legacy = Vec::new();
        for entry in file.users {
            if users.iter().any(|u: &User| u.name == entry.name) {
                return Err(invalid(&entry.name, "defined twice".to_owned()));
            }
            let secret = match (&entry.password_hash, &entry.password_sha256) {
                (Some(hash), None) => parse_hash(hash).map_err(|e| invalid(&entry.name, e))?,
                (None, Some(hex_digest)) => {
                    let digest: [u8; 32] = hex::decode(hex_digest)
                        .ok()
                        .and_then(|bytes| bytes.try_into().ok())
                        .ok_or_else(|| {
                            invalid(
                                &entry.name,
                                "password_sha256 must be 64 hex digits".to_owned(),
                            )
                        })?;
                    legacy.push(entry.name.clone());
                    Secret::LegacySha256(digest)
                }
                _ => {
                    return Err(invalid(
                        &entry.name,
                        "give exactly one of password_hash and password_sha256".to_owned(),
                    ))
                }
            };
            if let Some(prefixes) = &entry.subjects {
                if prefixes.is_empty() || prefixes.iter().any(String::is_empty) {
                    return Err(invalid(
                        &entry.name,
                        "subjects must list non-empty prefixes (leave it out for every subject)"
                            .to_owned(),
                    ));
                }
            }
            users.push(User {
                name: entry.name,
                secret,
                identity: Identity {
                    role: Some(entry.role),
                    subjects: entry.subjects.map(Into::into),
                    principal: None,
                },
            });
        }
        if !legacy.is_empty() {
            tracing::warn!(
                path,
                users = ?legacy,
                "users with unsalted password_sha256: replace each with a password_hash from `herald registry hash-password`"
            );
        }
        Self::with_table(UserTable::new(0, users), None, None)
    }

    /// The users of the users file the broker keeps too (`users.meta`, see
    /// [`herald_auth::users`]): each authenticates with its SCRAM password and may do what its
    /// registry access says (users without one are refused every request, 403). The file is
    /// read again when it changes.
    pub fn shared(path: &Path) -> Result<Self, AuthConfigError> {
        let shown = path.display().to_string();
        if !path.exists() {
            // The broker may create it at its first start.
            tracing::warn!(path = %shown, "the users file does not exist yet: every request is refused until it does (`herald user add`)");
        }
        let mut watch = herald_auth::users::UsersWatch::open(path, USERS_RECHECK)?;
        let (users, _) = watch.current(std::time::Instant::now());
        let table = UserTable::of_shared(0, &users);
        if table.users.iter().all(|u| u.identity.role.is_none()) {
            tracing::warn!(path = %shown, "no user in the users file has a registry role yet: only SUBJECT ACLs grant anything (`herald user registry NAME --role read|write|admin`)");
        }
        let acls_path = path.with_file_name(herald_auth::stored_acls::FILE);
        let acls = herald_auth::watch::FileWatch::load(&acls_path, USERS_RECHECK, read_acls)?;
        Self::with_table(table, Some(Mutex::new(watch)), Some(Mutex::new(acls)))
    }

    fn with_table(
        table: UserTable,
        watch: Option<Mutex<herald_auth::users::UsersWatch>>,
        acls: Option<Mutex<herald_auth::watch::FileWatch<RegistryAcls>>>,
    ) -> Result<Self, AuthConfigError> {
        let mut key = [0u8; 32];
        ring_rand::SecureRandom::fill(&ring_rand::SystemRandom::new(), &mut key)
            .map_err(|_| AuthConfigError::Random)?;
        Ok(Self {
            table: std::sync::RwLock::new(std::sync::Arc::new(table)),
            watch,
            acls,
            generations: std::sync::atomic::AtomicU64::new(1),
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            verified: Mutex::new(HashMap::new()),
            checking: std::sync::Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
        })
    }

    /// The current stored ACLs (with a shared users file).
    pub fn acls(&self) -> Option<std::sync::Arc<RegistryAcls>> {
        let watch = self.acls.as_ref()?;
        let (acls, _) = watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current(std::time::Instant::now());
        Some(acls)
    }

    /// The current users: with a shared users file that changed, read again (and the
    /// remembered checks forgotten, as passwords and access may have changed).
    fn table(&self) -> std::sync::Arc<UserTable> {
        if let Some(watch) = &self.watch {
            // Held until the new table is in place: nobody reads the old one as current after.
            let mut watch = watch.lock().unwrap_or_else(|p| p.into_inner());
            let (users, changed) = watch.current(std::time::Instant::now());
            if changed {
                let generation = self
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let table = std::sync::Arc::new(UserTable::of_shared(generation, &users));
                *self.table.write().unwrap_or_else(|p| p.into_inner()) = table.clone();
                self.verified().clear();
                return table;
            }
        }
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Spends the PBKDF2 iterations a check of `own` iterations (`None`: none) is short of
    /// the table's dearest check, on a throwaway derivation.
    fn pad_cost(table: &UserTable, own: Option<NonZeroU32>, password: &str) {
        let Some(most) = table.cost_iterations else {
            return;
        };
        let short = most.get() - own.map_or(0, NonZeroU32::get).min(most.get());
        if let Some(short) = NonZeroU32::new(short) {
            let mut sink = [0u8; HASH_BYTES];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA256,
                short,
                b"herald-equal-cost",
                password.as_bytes(),
                &mut sink,
            );
        }
    }

    /// The `(name, password)` of a basic `Authorization` header.
    fn credentials(authorization: Option<&str>) -> Option<(String, String)> {
        let encoded = authorization?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        let (name, password) = pair.split_once(':')?;
        Some((name.to_owned(), password.to_owned()))
    }

    fn remembered_key(&self, name: &str, password: &str) -> [u8; 32] {
        // Length-prefixed fields: no (name, password) pair shares another's key.
        let mut context = hmac::Context::with_key(&self.cache_key);
        context.update(&(name.len() as u64).to_be_bytes());
        context.update(name.as_bytes());
        context.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (u64, Identity)>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leave to run one password check, if a core is free for it.
    pub fn check_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.checking.clone().try_acquire_owned().ok()
    }

    /// The role of already-checked credentials, without running PBKDF2 (`None`: not seen, or
    /// no credentials).
    pub fn remembered(&self, authorization: Option<&str>) -> Option<Identity> {
        let (name, password) = Self::credentials(authorization)?;
        // Looks for changes of a shared users file (forgetting what was remembered).
        let generation = self.table().generation;
        let key = self.remembered_key(&name, &password);
        self.verified()
            .get(&key)
            .filter(|(made_against, _)| *made_against == generation)
            .map(|(_, identity)| identity.clone())
    }

    /// Checks the credentials of a basic `Authorization` header; slow (PBKDF2) unless they
    /// were checked before — run it off the async threads.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, Denied> {
        let (name, password) = Self::credentials(authorization).ok_or(Denied::Unauthenticated)?;
        let table = self.table();
        let key = self.remembered_key(&name, &password);
        if let Some((_, identity)) = self
            .verified()
            .get(&key)
            .filter(|(made_against, _)| *made_against == table.generation)
        {
            return Ok(identity.clone());
        }
        let user = table.users.iter().find(|user| user.name == name);
        let matches = match user.map(|u| &u.secret) {
            Some(Secret::Pbkdf2 {
                iterations,
                salt,
                hash,
            }) => {
                Self::pad_cost(&table, Some(*iterations), &password);
                pbkdf2::verify(
                    pbkdf2::PBKDF2_HMAC_SHA256,
                    *iterations,
                    salt,
                    password.as_bytes(),
                    hash,
                )
                .is_ok()
            }
            Some(Secret::LegacySha256(digest)) => {
                let computed: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(computed.ct_eq(digest))
            }
            // SCRAM's stored key is derived from the salted password: derive it again from the
            // password given and compare.
            Some(Secret::Scram(credential)) => {
                Self::pad_cost(&table, NonZeroU32::new(credential.iterations), &password);
                credential.verifies(&password)
            }
            None => {
                // An unknown name costs what the dearest known one does.
                Self::pad_cost(&table, None, &password);
                false
            }
        };
        let identity = user
            .filter(|_| matches)
            .ok_or(Denied::Unauthenticated)?
            .identity
            .clone();
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_CREDENTIALS_MAX {
            if let Some(evicted) = verified.keys().next().copied() {
                verified.remove(&evicted);
            }
        }
        // Remembered against the reading it was checked with: if the users were read again
        // meanwhile, it is never used.
        verified.insert(key, (table.generation, identity.clone()));
        Ok(identity)
    }

    /// Decides a request from its `Authorization` header, method, path and query parameters
    /// (as the handlers parse them; `None` when they do not parse, which needs admin).
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        params: Option<&HashMap<String, String>>,
    ) -> Result<(), Denied> {
        let identity = self.authenticate(authorization)?;
        permit(&identity, self.acls().as_deref(), method, path, params)
    }
}

/// One user of a TOML users file, converted for the shared users file
/// ([`herald_auth::users`]), or why it cannot be.
#[derive(Debug)]
pub struct SharedUser {
    pub name: String,
    pub converted: Result<
        (
            herald_auth::scram::Credential,
            herald_auth::users::RegistryAccess,
        ),
        String,
    >,
}

/// The users of the TOML users file at `path`, converted for the shared users file
/// (`herald user import`). A salted PBKDF2 hash is SCRAM's SaltedPassword for the same
/// password, salt and iteration count, so it converts to a whole SCRAM credential without the
/// password; unsalted legacy digests and SCRAM stored keys (which lack the server key) cannot.
pub fn shared_users_of(path: &Path) -> Result<Vec<SharedUser>, AuthConfigError> {
    let config = AuthConfig::load(path)?;
    let table = config.table();
    Ok(table
        .users
        .iter()
        .map(|user| {
            let credential = match &user.secret {
                Secret::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                } => <[u8; HASH_BYTES]>::try_from(hash.as_slice())
                    .map_err(|_| "the hash is not 32 bytes".to_owned())
                    .and_then(|salted| {
                        herald_auth::scram::Credential::from_salted_password(
                            &salted,
                            salt,
                            iterations.get(),
                        )
                        .map_err(|e| e.to_string())
                    }),
                Secret::LegacySha256(_) => Err(
                    "an unsalted password_sha256 cannot be converted: add the user with `herald user add` and a password".to_owned(),
                ),
                Secret::Scram(_) => Err(
                    "a SCRAM stored key (exported from a broker's users): the user is in that users file already".to_owned(),
                ),
            };
            let converted = credential.and_then(|credential| {
                let identity = user.identity.clone();
                let access = herald_auth::users::RegistryAccess::new(
                    identity.role.ok_or_else(|| "no registry role".to_owned())?,
                    identity
                        .subjects
                        .map(|prefixes| prefixes.to_vec())
                        .unwrap_or_default(),
                )
                .map_err(|e| e.to_string())?;
                Ok((credential, access))
            });
            SharedUser {
                name: user.name.clone(),
                converted,
            }
        })
        .collect())
}

/// The stored ACLs at `path` (none yet: no entries).
fn read_acls(path: &std::path::Path) -> Result<RegistryAcls, AuthConfigError> {
    let entries =
        herald_auth::stored_acls::read(path).map_err(|e| AuthConfigError::Acls(e.to_string()))?;
    RegistryAcls::new(entries)
        .map_err(|e| AuthConfigError::Acls(format!("{}: {e}", path.display())))
}

/// Whether `identity` may make the request: a DENY entry of the stored ACLs for its principal
/// refuses it; else its role (then its subjects) or ALLOW entries permit it.
pub fn permit(
    identity: &Identity,
    acls: Option<&RegistryAcls>,
    method: &str,
    path: &str,
    params: Option<&HashMap<String, String>>,
) -> Result<(), Denied> {
    // `HEAD /subjects` tells the unfiltered list's length.
    if path == "/subjects" && method == "HEAD" && !identity.sees_every_subject(acls) {
        return Err(Denied::Forbidden);
    }
    let by_acls = match (acls, &identity.principal) {
        (Some(acls), Some(principal)) => match acl_question(method, path, params) {
            AclQuestion::Ask(operations, resource_type, name) => {
                let checks = operations.iter().map(|operation| {
                    acls.authorizer
                        .check(principal, *operation, resource_type, &name)
                });
                let mut allowed = true;
                for check in checks {
                    match check {
                        Check::Denied => return Err(Denied::Forbidden),
                        Check::NotAllowed => allowed = false,
                        Check::Allowed => {}
                    }
                }
                allowed
            }
            AclQuestion::Free => acls.grants_subjects_to(principal),
            AclQuestion::Refused => false,
        },
        _ => false,
    };
    // Parameters that do not parse are decided by the role alone (as an admin operation).
    if by_acls && params.is_some() {
        return Ok(());
    }
    permit_by_role(identity, method, path, params)
}

/// What a request asks of the stored ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AclQuestion {
    /// These operations (each) on this resource.
    Ask(&'static [Operation], ResourceType, String),
    /// What any user with a SUBJECT grant may do: schemas by ID, global reads, the subject
    /// list (filtered to what the user may DESCRIBE).
    Free,
    /// No entry grants it (a subject that does not decode, `HEAD /subjects`, a change across
    /// subjects that is no setting).
    Refused,
}

/// Listings across subjects (every schema, or every subject and version of one ID).
fn spans_subjects(path: &str) -> bool {
    path == "/schemas"
        || (path.starts_with("/schemas/ids/")
            && (path.ends_with("/subjects") || path.ends_with("/versions")))
}

/// `POST /subjects/{subject}`: a lookup (whether a schema is registered), a read.
fn is_subject_lookup(path: &str) -> bool {
    path.starts_with("/subjects/") && path.matches('/').count() == 2
}

/// A mode change (IMPORT lets a registration choose IDs for everyone): not a subject's own.
fn changes_mode(method: &str, path: &str) -> bool {
    path.starts_with("/mode") && !matches!(method, "GET" | "HEAD")
}

/// What a request needs of the ACLs, as Kafka's operations on the SUBJECT it names (or on the
/// cluster, named [`CLUSTER_NAME`], for what spans subjects): reads and lookups READ,
/// registering WRITE, deletes DELETE (a permanent one ALTER as well, as it needs the admin
/// role), a subject's config ALTER; modes and global settings ALTER on the cluster, listings
/// across subjects DESCRIBE on it.
fn acl_question(method: &str, path: &str, params: Option<&HashMap<String, String>>) -> AclQuestion {
    use Operation::{Alter, Delete, Describe, Read, Write};
    let reads = matches!(method, "GET" | "HEAD");
    let cluster =
        |operations| AclQuestion::Ask(operations, ResourceType::Cluster, CLUSTER_NAME.to_owned());
    if spans_subjects(path) {
        return if reads {
            cluster(&[Describe])
        } else {
            AclQuestion::Refused
        };
    }
    if changes_mode(method, path) {
        return cluster(&[Alter]);
    }
    match subject_of(path) {
        Subject::Named(subject) => {
            let permanent = params.is_some_and(|params| crate::api::flag(params, "permanent"));
            let operations: &'static [Operation] = match method {
                "GET" | "HEAD" => &[Read],
                "POST" if path.starts_with("/compatibility/") || is_subject_lookup(path) => &[Read],
                "POST" if path.starts_with("/subjects/") => &[Write],
                "DELETE" if path.starts_with("/subjects/") && permanent => &[Delete, Alter],
                "DELETE" if path.starts_with("/subjects/") => &[Delete],
                _ => &[Alter],
            };
            AclQuestion::Ask(operations, ResourceType::Subject, subject)
        }
        Subject::Undecodable => AclQuestion::Refused,
        Subject::None if path == "/subjects" && method == "HEAD" => AclQuestion::Refused,
        Subject::None if reads => AclQuestion::Free,
        Subject::None => cluster(&[Alter]),
    }
}

/// Whether the role of `identity` (and its subject prefixes) allow the request.
fn permit_by_role(
    identity: &Identity,
    method: &str,
    path: &str,
    params: Option<&HashMap<String, String>>,
) -> Result<(), Denied> {
    if identity
        .role
        .is_none_or(|role| role < required_role(method, path, params))
    {
        return Err(Denied::Forbidden);
    }
    if identity.subjects.is_none() {
        return Ok(());
    }
    // Listings across subjects show other teams' subject names and schemas; modes are not a
    // team's to change.
    if spans_subjects(path) || changes_mode(method, path) {
        return Err(Denied::Forbidden);
    }
    match subject_of(path) {
        Subject::Named(subject) if identity.covers(&subject) => Ok(()),
        Subject::Named(_) | Subject::Undecodable => Err(Denied::Forbidden),
        // `GET /subjects` is filtered; `HEAD` would tell its unfiltered length.
        Subject::None if path == "/subjects" && method == "HEAD" => Err(Denied::Forbidden),
        // Nothing subject-scoped: reads only (global configuration is not a team's to change).
        Subject::None if matches!(method, "GET" | "HEAD") => Ok(()),
        Subject::None => Err(Denied::Forbidden),
    }
}

/// What subject a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    None,
    /// Percent-decoded as the router decodes path parameters.
    Named(String),
    /// A subject segment that does not decode: refused for limited users (never read as "no
    /// subject").
    Undecodable,
}

/// The subject a request path names.
pub fn subject_of(path: &str) -> Subject {
    let rest = [
        "/subjects/",
        "/compatibility/subjects/",
        "/config/",
        "/mode/",
    ]
    .iter()
    .find_map(|prefix| path.strip_prefix(prefix));
    let Some(raw) = rest
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty())
    else {
        return Subject::None;
    };
    percent_decode(raw).map_or(Subject::Undecodable, Subject::Named)
}

/// `%XX` sequences decoded; `None` for a malformed sequence or bytes that are not UTF-8 (the
/// router refuses those paths too).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = bytes.get(i + 1..i + 3)?;
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn required_role(method: &str, path: &str, params: Option<&HashMap<String, String>>) -> Role {
    let Some(params) = params else {
        return Role::Admin;
    };
    match method {
        "GET" | "HEAD" => Role::Read,
        "POST" if path.starts_with("/compatibility/") || is_subject_lookup(path) => Role::Read,
        "POST" if path.starts_with("/subjects/") => Role::Write,
        "DELETE" if path.starts_with("/subjects/") && !crate::api::flag(params, "permanent") => {
            Role::Write
        }
        _ => Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        let legacy = hex::encode(Sha256::digest(b"r"));
        let hashed = hash_password_with("b", PBKDF2_ITERATIONS_MIN).expect("hash");
        AuthConfig::parse(
            &format!(
                "[[user]]\nname = \"reader\"\npassword_sha256 = \"{legacy}\"\nrole = \"read\"\n[[user]]\nname = \"boss\"\npassword_hash = \"{hashed}\"\nrole = \"admin\"\n[[user]]\nname = \"writer\"\npassword_hash = \"{}\"\nrole = \"write\"\n",
                hash_password_with("w", PBKDF2_ITERATIONS_MIN).expect("hash")
            ),
            "users.toml",
        )
        .expect("valid config")
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn no_params() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn roles_gate_methods() {
        let config = config();
        let none = no_params();
        let params = Some(&none);
        assert_eq!(
            config.authorize(None, "GET", "/subjects", params),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "wrong")), "GET", "/subjects", params),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            config.authorize(Some(&basic("nobody", "r")), "GET", "/subjects", params),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "GET", "/subjects", params),
            Ok(())
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "POST", "/subjects/a", params),
            Ok(())
        );
        assert_eq!(
            config.authorize(
                Some(&basic("reader", "r")),
                "POST",
                "/compatibility/subjects/a/versions",
                params
            ),
            Ok(())
        );
        assert_eq!(
            config.authorize(
                Some(&basic("reader", "r")),
                "POST",
                "/subjects/a/versions",
                params
            ),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "PUT", "/config", params),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            config.authorize(Some(&basic("boss", "b")), "PUT", "/config", params),
            Ok(())
        );
        assert_eq!(
            config.authorize(Some(&basic("boss", "wrong")), "PUT", "/config", params),
            Err(Denied::Unauthenticated)
        );
    }

    /// The bypass: the role check matched `permanent=true` case-sensitively on the raw path
    /// while the handler read the parameter in any case, so a writer hard-deleted with
    /// `permanent=TRUE`. Both now read the same parsed parameter.
    #[test]
    fn a_permanent_delete_needs_admin_however_it_is_spelled() {
        let config = config();
        let writer = basic("writer", "w");
        for spelling in ["true", "TRUE", "True", "tRuE"] {
            let params = HashMap::from([("permanent".to_owned(), spelling.to_owned())]);
            assert_eq!(
                config.authorize(Some(&writer), "DELETE", "/subjects/x", Some(&params)),
                Err(Denied::Forbidden),
                "permanent={spelling}"
            );
        }
        let soft = HashMap::from([("permanent".to_owned(), "false".to_owned())]);
        assert_eq!(
            config.authorize(Some(&writer), "DELETE", "/subjects/x", Some(&soft)),
            Ok(())
        );
        // Parameters that do not parse are decided as an admin operation.
        assert_eq!(
            config.authorize(Some(&writer), "DELETE", "/subjects/x", None),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn the_brokers_scram_credential_works_as_a_password_hash() {
        let credential = herald_auth::scram::Credential::new(
            "shared password",
            herald_auth::scram::ITERATIONS_MIN,
        )
        .expect("credential")
        .to_text();
        let config = AuthConfig::parse(
            &format!(
                "[[user]]\nname = \"svc\"\npassword_hash = \"{credential}\"\nrole = \"write\"\n"
            ),
            "users.toml",
        )
        .expect("parse");
        assert!(config
            .authenticate(Some(&basic("svc", "shared password")))
            .is_ok());
        assert!(config
            .authenticate(Some(&basic("svc", "another password")))
            .is_err());
        let broken = AuthConfig::parse(
            "[[user]]\nname = \"svc\"\npassword_hash = \"scram-sha256$5$x$y$z\"\nrole = \"read\"\n",
            "users.toml",
        );
        assert!(broken.is_err(), "a malformed credential is refused at load");
    }

    /// The users file the broker keeps serves the registry too: SCRAM passwords, each user's
    /// registry role and prefixes; users without registry access authenticate but may do
    /// nothing; changes apply within USERS_RECHECK, remembered checks included.
    #[test]
    fn the_shared_users_file_decides_and_is_read_again_when_it_changes() {
        use herald_auth::users::{RegistryAccess, Users};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("users");
        let team_a = RegistryAccess::new(Role::Write, vec!["team-a.".to_owned()]).expect("access");
        users
            .add("alice", "correct horse", Some(team_a))
            .expect("alice");
        users.add("bob", "battery staple", None).expect("bob");
        let config = AuthConfig::shared(&Users::path(dir.path())).expect("shared");
        let none = no_params();
        let call = |who: &str, password: &str, method: &str, path: &str| {
            config.authorize(Some(&basic(who, password)), method, path, Some(&none))
        };
        let register = |subject: &str| format!("/subjects/{subject}/versions");
        assert_eq!(
            call("alice", "correct horse", "POST", &register("team-a.x")),
            Ok(())
        );
        assert_eq!(
            call("alice", "correct horse", "POST", &register("team-b.x")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            call("alice", "wrong horse", "GET", "/subjects"),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            call(
                "bob",
                "battery staple",
                "GET",
                "/subjects/team-a.x/versions"
            ),
            Err(Denied::Forbidden),
            "a broker-only user authenticates but is granted nothing here"
        );
        assert_eq!(
            call("bob", "wrong staple", "GET", "/subjects/team-a.x/versions"),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            call("carol", "battery staple", "GET", "/subjects"),
            Err(Denied::Unauthenticated)
        );
        users.passwd("alice", "new password").expect("passwd");
        users
            .set_registry(
                "bob",
                Some(RegistryAccess::new(Role::Read, Vec::new()).expect("access")),
            )
            .expect("grant bob");
        std::thread::sleep(USERS_RECHECK + std::time::Duration::from_millis(100));
        assert_eq!(
            call("alice", "correct horse", "GET", "/subjects"),
            Err(Denied::Unauthenticated),
            "the remembered check of the old password is forgotten"
        );
        assert_eq!(call("alice", "new password", "GET", "/subjects"), Ok(()));
        assert_eq!(
            call(
                "bob",
                "battery staple",
                "GET",
                "/subjects/team-a.x/versions"
            ),
            Ok(())
        );
        assert_eq!(
            call("bob", "battery staple", "POST", &register("team-a.x")),
            Err(Denied::Forbidden)
        );
    }

    /// SUBJECT ACLs stored beside the shared users file grant registry access to users
    /// without (or beyond) a role, DENY entries refuse what a role would allow, the subject
    /// list shows what a user may describe, and grants apply within USERS_RECHECK.
    #[test]
    fn stored_subject_acls_grant_and_deny_registry_access() {
        use herald_auth::acl::{AclEntry, PatternType, Permission};
        use herald_auth::users::{RegistryAccess, Users};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("users");
        users.add("bob", "battery staple", None).expect("bob");
        users.add("dave", "dave's password", None).expect("dave");
        users
            .add(
                "alice",
                "correct horse",
                Some(RegistryAccess::new(Role::Write, Vec::new()).expect("access")),
            )
            .expect("alice");
        let principal = |name: &str| Principal::user(name).expect("principal");
        let entry = |who: &str, pattern, name: &str, operation, permission| {
            AclEntry::new(
                principal(who),
                ResourceType::Subject,
                pattern,
                name,
                operation,
                permission,
            )
            .expect("entry")
        };
        let mut entries = vec![
            entry(
                "bob",
                PatternType::Prefixed,
                "team-b.",
                Operation::Write,
                Permission::Allow,
            ),
            entry(
                "bob",
                PatternType::Prefixed,
                "team-b.",
                Operation::Delete,
                Permission::Allow,
            ),
            entry(
                "alice",
                PatternType::Literal,
                "team-b.secret",
                Operation::Write,
                Permission::Deny,
            ),
        ];
        herald_auth::stored_acls::write(dir.path(), &entries).expect("acls");
        let config = AuthConfig::shared(&Users::path(dir.path())).expect("shared");
        let none = no_params();
        let call = |who: &str, password: &str, method: &str, path: &str| {
            config.authorize(Some(&basic(who, password)), method, path, Some(&none))
        };
        let bob = |method: &str, path: &str| call("bob", "battery staple", method, path);
        let register = |subject: &str| format!("/subjects/{subject}/versions");
        assert_eq!(bob("POST", &register("team-b.orders")), Ok(()));
        assert_eq!(
            bob("POST", &register("team-a.orders")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            bob("GET", &register("team-b.orders")),
            Err(Denied::Forbidden),
            "WRITE does not imply READ"
        );
        assert_eq!(bob("PUT", "/config"), Err(Denied::Forbidden));
        assert_eq!(
            bob("GET", "/schemas/ids/1"),
            Ok(()),
            "schemas by ID are free for users with a subject grant"
        );
        assert_eq!(
            call("dave", "dave's password", "GET", "/schemas/ids/1"),
            Err(Denied::Forbidden),
            "but not for users granted nothing on the registry"
        );
        assert_eq!(bob("DELETE", "/subjects/team-b.orders"), Ok(()));
        let permanent = HashMap::from([("permanent".to_owned(), "true".to_owned())]);
        assert_eq!(
            config.authorize(
                Some(&basic("bob", "battery staple")),
                "DELETE",
                "/subjects/team-b.orders",
                Some(&permanent)
            ),
            Err(Denied::Forbidden),
            "a permanent delete needs ALTER as well"
        );
        assert_eq!(
            call("alice", "correct horse", "HEAD", "/subjects"),
            Ok(()),
            "an unscoped role that no entry keeps from describing sees the whole list"
        );
        assert_eq!(bob("GET", "/schemas"), Err(Denied::Forbidden));
        assert_eq!(
            call("alice", "correct horse", "POST", &register("team-b.orders")),
            Ok(())
        );
        assert_eq!(
            call("alice", "correct horse", "POST", &register("team-b.secret")),
            Err(Denied::Forbidden),
            "a DENY entry wins over the role"
        );
        let identity = config
            .authenticate(Some(&basic("bob", "battery staple")))
            .expect("bob");
        let acls = config.acls();
        assert!(identity.lists("team-b.orders", acls.as_deref()));
        assert!(!identity.lists("team-a.orders", acls.as_deref()));
        entries.push(entry(
            "bob",
            PatternType::Literal,
            "team-a.orders",
            Operation::Read,
            Permission::Allow,
        ));
        herald_auth::stored_acls::write(dir.path(), &entries).expect("acls");
        std::thread::sleep(USERS_RECHECK + std::time::Duration::from_millis(100));
        assert_eq!(bob("GET", &register("team-a.orders")), Ok(()));
        assert!(identity.lists("team-a.orders", config.acls().as_deref()));
        assert!(
            !identity.sees_every_subject(config.acls().as_deref()),
            "a scoped grant"
        );
        // Once an entry may hide a subject from alice, her list is filtered and its length
        // not told.
        let alice = config
            .authenticate(Some(&basic("alice", "correct horse")))
            .expect("alice");
        assert!(alice.sees_every_subject(config.acls().as_deref()));
        entries.push(entry(
            "alice",
            PatternType::Literal,
            "team-b.secret",
            Operation::Describe,
            Permission::Deny,
        ));
        herald_auth::stored_acls::write(dir.path(), &entries).expect("acls");
        std::thread::sleep(USERS_RECHECK + std::time::Duration::from_millis(100));
        assert_eq!(
            call("alice", "correct horse", "HEAD", "/subjects"),
            Err(Denied::Forbidden),
            "the unfiltered list's length is not told"
        );
        let acls = config.acls();
        assert!(!alice.sees_every_subject(acls.as_deref()));
        assert!(!alice.lists("team-b.secret", acls.as_deref()));
        assert!(alice.lists("team-b.orders", acls.as_deref()));
    }

    /// `herald user import`: a salted PBKDF2 hash becomes the SCRAM credential the password
    /// itself would give (both keys), with the role and prefixes; what cannot convert says why.
    #[test]
    fn toml_users_convert_to_shared_users_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        let hashed = hash_password_with("pw for a", PBKDF2_ITERATIONS_MIN).expect("hash");
        let stored = herald_auth::scram::Credential::new("pw", herald_auth::scram::ITERATIONS_MIN)
            .expect("credential")
            .stored()
            .to_text();
        let legacy = hex::encode(Sha256::digest(b"r"));
        std::fs::write(
            &path,
            format!(
                "[[user]]\nname = \"a\"\npassword_hash = \"{hashed}\"\nrole = \"write\"\nsubjects = [\"team-a.\"]\n[[user]]\nname = \"s\"\npassword_hash = \"{stored}\"\nrole = \"read\"\n[[user]]\nname = \"l\"\npassword_sha256 = \"{legacy}\"\nrole = \"read\"\n"
            ),
        )
        .expect("write");
        let converted = shared_users_of(&path).expect("read");
        let outcome = |name: &str| {
            &converted
                .iter()
                .find(|user| user.name == name)
                .expect("listed")
                .converted
        };
        let (credential, access) = outcome("a").as_ref().expect("a converts");
        let from_password = herald_auth::scram::Credential::with_salt(
            "pw for a",
            &credential.salt,
            credential.iterations,
        )
        .expect("derive");
        assert_eq!(credential, &from_password);
        assert_eq!(credential.iterations, PBKDF2_ITERATIONS_MIN);
        assert_eq!(access.role, Role::Write);
        assert_eq!(access.subjects, Some(vec!["team-a.".to_owned()]));
        let stored_reason = outcome("s").as_ref().expect_err("stored key");
        assert!(stored_reason.contains("stored key"), "{stored_reason}");
        let legacy_reason = outcome("l").as_ref().expect_err("legacy");
        assert!(legacy_reason.contains("password_sha256"), "{legacy_reason}");
    }

    #[test]
    fn hashes_are_salted_and_a_checked_password_is_remembered() {
        let first = hash_password_with("same", PBKDF2_ITERATIONS_MIN).expect("hash");
        let second = hash_password_with("same", PBKDF2_ITERATIONS_MIN).expect("hash");
        assert_ne!(first, second, "salted");
        assert!(first.starts_with("pbkdf2-sha256$10000$"), "{first}");
        let config = config();
        assert_eq!(config.remembered(Some(&basic("boss", "b"))), None);
        assert_eq!(
            config.authenticate(Some(&basic("boss", "b"))),
            Ok(Identity::unscoped(Role::Admin))
        );
        assert_eq!(
            config.remembered(Some(&basic("boss", "b"))),
            Some(Identity::unscoped(Role::Admin))
        );
        assert_eq!(config.remembered(Some(&basic("boss", "B"))), None);
    }

    /// Team A's writer evolves team A's subjects only (issue 15: team A cannot evolve team
    /// B's schemas), cannot change global settings, and reads what is global.
    #[test]
    fn a_user_limited_to_subject_prefixes_acts_on_those_only() {
        let config = AuthConfig::parse(
            &format!(
                "[[user]]\nname = \"a\"\npassword_hash = \"{}\"\nrole = \"admin\"\nsubjects = [\"team-a.\"]\n",
                hash_password_with("pw", PBKDF2_ITERATIONS_MIN).expect("hash")
            ),
            "users.toml",
        )
        .expect("valid");
        let a = basic("a", "pw");
        let none = no_params();
        let call = |method: &str, path: &str| config.authorize(Some(&a), method, path, Some(&none));
        assert_eq!(call("POST", "/subjects/team-a.orders/versions"), Ok(()));
        assert_eq!(call("PUT", "/config/team-a.orders"), Ok(()));
        assert_eq!(
            call("POST", "/compatibility/subjects/team-a.orders/versions"),
            Ok(())
        );
        assert_eq!(
            call("POST", "/subjects/team-b.orders/versions"),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            call("DELETE", "/subjects/team-b.orders"),
            Err(Denied::Forbidden)
        );
        assert_eq!(call("PUT", "/mode/team-b.orders"), Err(Denied::Forbidden));
        // Encoded the way the router decodes it.
        assert_eq!(
            call("POST", "/subjects/team-b%2Eorders/versions"),
            Err(Denied::Forbidden)
        );
        assert_eq!(call("POST", "/subjects/%74eam-a.orders/versions"), Ok(()));
        assert_eq!(
            call("PUT", "/config"),
            Err(Denied::Forbidden),
            "global config"
        );
        assert_eq!(call("GET", "/config"), Ok(()));
        assert_eq!(call("GET", "/schemas/ids/1"), Ok(()));
        // Reviewed bypasses: an undecodable subject is not "no subject"; listings across
        // subjects, HEAD of the filtered list and mode changes are refused.
        assert_eq!(
            call("GET", "/subjects/team-b.100%-coverage/versions/latest"),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            call("GET", "/subjects/team-a.%+5x/versions"),
            Err(Denied::Forbidden)
        );
        assert_eq!(call("GET", "/schemas"), Err(Denied::Forbidden));
        assert_eq!(
            call("GET", "/schemas/ids/1/subjects"),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            call("GET", "/schemas/ids/1/versions"),
            Err(Denied::Forbidden)
        );
        assert_eq!(call("HEAD", "/subjects"), Err(Denied::Forbidden));
        assert_eq!(call("PUT", "/mode/team-a.orders"), Err(Denied::Forbidden));
        assert_eq!(call("GET", "/mode/team-a.orders"), Ok(()));
    }

    /// Password checks are bounded by the cores: made-up credentials cannot queue unbounded
    /// PBKDF2 work.
    #[test]
    fn password_checks_at_once_are_bounded() {
        let config = config();
        let held: Vec<_> = std::iter::from_fn(|| config.check_permit())
            .take(1024)
            .collect();
        assert!(!held.is_empty() && held.len() < 1024, "{}", held.len());
        assert!(config.check_permit().is_none());
        drop(held);
        assert!(config.check_permit().is_some());
    }

    #[test]
    fn bad_users_files_are_refused_naming_the_user() {
        for (text, expected) in [
            (
                "[[user]]\nname = \"a\"\nrole = \"read\"\n",
                "exactly one of",
            ),
            (
                "[[user]]\nname = \"a\"\npassword_hash = \"md5$1$x$y\"\nrole = \"read\"\n",
                "password_hash must be",
            ),
            (
                "[[user]]\nname = \"a\"\npassword_hash = \"pbkdf2-sha256$5$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"\nrole = \"read\"\n",
                "iterations 5",
            ),
            (
                "[[user]]\nname = \"a\"\npassword_sha256 = \"abc\"\nrole = \"read\"\n",
                "64 hex digits",
            ),
            (
                "[[user]]\nname = \"a\"\npassword_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"read\"\nsubjects = []\n",
                "non-empty prefixes",
            ),
        ] {
            let error = AuthConfig::parse(text, "users.toml").expect_err(text);
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("'a'"), "{message}");
        }
    }
}
