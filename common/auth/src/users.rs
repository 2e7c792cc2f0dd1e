//! The users file both servers read: each user name with its salted SCRAM-SHA-256
//! [`Credential`] (no password is stored) and, optionally, what the user may do on the schema
//! registry ([`RegistryAccess`]: a role and subject prefixes).
//!
//! It is `users.meta` in the broker's data directory: a versioned [`herald_meta`] envelope,
//! rewritten atomically on every change and created 0600, so it is never readable by others.
//! `herald user add|list|remove|passwd|registry|import` edit it; the broker authenticates
//! connections against it (SCRAM), and the registry, given the same file
//! (`herald registry serve --users`), checks basic-auth passwords against the same credentials
//! and authorizes by the user's registry access. One password, one file, both servers.
//!
//! Format versions: 1 held `{"users": {name: "scram-sha256$…"}}`; 2 (written now) holds
//! `{"users": {name: {"credential": "scram-sha256$…", "registry": {"role": "write",
//! "subjects": ["team-a."]}}}}`. Version 1 files are read unchanged (their users have no
//! registry access) and rewritten as version 2 at the next change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_meta as meta;
use serde::{Deserialize, Serialize};

use crate::acl::Principal;
use crate::local::{LocalCredentials, LOCAL_CREDENTIALS_FILE};
use crate::scram::{Credential, ScramError, ITERATIONS_DEFAULT};

/// The users file's name in a data directory.
pub const FILE: &str = "users.meta";
/// The kind and format version of `users.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "users",
    version: 2,
};
/// Users one file holds.
pub const USERS_MAX: usize = 10_000;
/// Shortest password accepted (NIST SP 800-63B's minimum for chosen secrets).
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Longest password accepted: a password is hashed on every connection by the client.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Subject prefixes one user's registry access may list.
pub const SUBJECT_PREFIXES_MAX: usize = 64;
/// Longest subject prefix.
pub const SUBJECT_PREFIX_BYTES_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Stored(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("invalid user name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("a password must have at least {PASSWORD_CHARS_MIN} characters and at most {PASSWORD_BYTES_MAX} bytes")]
    WeakPassword,
    #[error("user '{0}' already exists (change its password with `herald user passwd`)")]
    Exists(String),
    #[error("no user '{0}'")]
    Unknown(String),
    #[error("the users file already has {USERS_MAX} users")]
    TooMany,
    #[error("invalid registry access: {0}")]
    InvalidAccess(String),
    #[error("cannot derive the credential: {0}")]
    Credential(#[from] ScramError),
}

/// What a user may do on the registry, highest last: `read` may use every GET and the
/// non-mutating POSTs (lookup, compatibility), `write` may also register and soft-delete,
/// `admin` may do everything (config, mode, permanent deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryRole {
    Read,
    Write,
    Admin,
}

impl RegistryRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryRole::Read => "read",
            RegistryRole::Write => "write",
            RegistryRole::Admin => "admin",
        }
    }
}

impl std::fmt::Display for RegistryRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RegistryRole {
    type Err = UsersError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(RegistryRole::Read),
            "write" => Ok(RegistryRole::Write),
            "admin" => Ok(RegistryRole::Admin),
            other => Err(UsersError::InvalidAccess(format!(
                "unknown role '{other}' (read, write or admin)"
            ))),
        }
    }
}

/// A user's access to the registry: a role, over every subject or only over subjects with
/// one of the listed prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAccess {
    pub role: RegistryRole,
    /// Subject prefixes the role is limited to; `None`: every subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
}

impl RegistryAccess {
    /// `role` over subjects with one of `prefixes` (every subject when there are none),
    /// checked as [`RegistryAccess::check`] does.
    pub fn new(role: RegistryRole, prefixes: Vec<String>) -> Result<Self, UsersError> {
        let access = Self {
            role,
            subjects: (!prefixes.is_empty()).then_some(prefixes),
        };
        access.check()?;
        Ok(access)
    }

    /// Prefixes must be non-empty (leave the list out for every subject) and within
    /// [`SUBJECT_PREFIXES_MAX`] and [`SUBJECT_PREFIX_BYTES_MAX`].
    pub fn check(&self) -> Result<(), UsersError> {
        let Some(prefixes) = &self.subjects else {
            return Ok(());
        };
        let invalid = |reason: String| Err(UsersError::InvalidAccess(reason));
        if prefixes.is_empty() || prefixes.iter().any(String::is_empty) {
            return invalid(
                "subject prefixes must not be empty (leave them out for every subject)".to_owned(),
            );
        }
        if prefixes.len() > SUBJECT_PREFIXES_MAX {
            return invalid(format!(
                "{} subject prefixes, at most {SUBJECT_PREFIXES_MAX}",
                prefixes.len()
            ));
        }
        if let Some(long) = prefixes.iter().find(|p| p.len() > SUBJECT_PREFIX_BYTES_MAX) {
            return invalid(format!(
                "a subject prefix of {} bytes, at most {SUBJECT_PREFIX_BYTES_MAX}",
                long.len()
            ));
        }
        Ok(())
    }
}

/// What setting a user's credential does to its registry access (a user added with `Keep`
/// has none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistryChange {
    /// The access stays as it is.
    #[default]
    Keep,
    Set(RegistryAccess),
    /// The user may do nothing on the registry.
    Clear,
}

impl RegistryChange {
    /// The access a user has after this change, having had `current`.
    pub fn apply(&self, current: Option<RegistryAccess>) -> Option<RegistryAccess> {
        match self {
            RegistryChange::Keep => current,
            RegistryChange::Set(access) => Some(access.clone()),
            RegistryChange::Clear => None,
        }
    }

    /// The access it sets is valid (see [`RegistryAccess::check`]).
    pub fn check(&self) -> Result<(), UsersError> {
        match self {
            RegistryChange::Set(access) => access.check(),
            RegistryChange::Keep | RegistryChange::Clear => Ok(()),
        }
    }
}

/// One user of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub credential: Credential,
    /// What the user may do on the registry; `None`: nothing (the broker alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAccess>,
}

/// The file's users, each as either version stores it (version 1: the credential's text;
/// version 2: a [`User`] object), decoded one by one so that an error names its user.
#[derive(Deserialize)]
struct UsersIn {
    users: BTreeMap<String, serde_json::Value>,
}

fn decode_user(stored: serde_json::Value) -> Result<User, String> {
    match stored {
        serde_json::Value::String(text) => Credential::parse(&text)
            .map(|credential| User {
                credential,
                registry: None,
            })
            .map_err(|e| e.to_string()),
        object => serde_json::from_value(object).map_err(|e| e.to_string()),
    }
}

#[derive(Serialize)]
struct UsersOut<'a> {
    users: &'a BTreeMap<String, User>,
}

/// The users of one file.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    users: BTreeMap<String, User>,
}

/// Refuses a name that is no user principal's or holds whitespace.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    let invalid = |reason: String| UsersError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    Principal::user(name).map_err(|e| invalid(e.to_string()))?;
    if name.contains(char::is_whitespace) {
        return Err(invalid("no whitespace".to_owned()));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), UsersError> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(UsersError::WeakPassword);
    }
    Ok(())
}

impl Users {
    /// Where the users of the data directory `data_dir` are kept.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Reads the users of the data directory `data_dir` (none if the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<Self, UsersError> {
        Self::open_file(&Self::path(data_dir))
    }

    /// Reads the users file at `path` (none if it does not exist yet).
    pub fn open_file(path: &Path) -> Result<Self, UsersError> {
        let stored = match meta::read_enveloped::<UsersIn>(path, KIND) {
            Ok(stored) => stored.map_or_else(BTreeMap::new, |file| file.users),
            Err(meta::ReadError::Io { path, source }) => {
                return Err(UsersError::Read {
                    path,
                    reason: source.to_string(),
                })
            }
            Err(e) => return Err(UsersError::Stored(e.to_string())),
        };
        let mut users = BTreeMap::new();
        for (name, stored) in stored {
            let user = decode_user(stored).map_err(|e| {
                UsersError::Stored(format!("{}: user '{name}': {e}", path.display()))
            })?;
            if let Some(access) = &user.registry {
                access.check().map_err(|e| {
                    UsersError::Stored(format!("{}: user '{name}': {e}", path.display()))
                })?;
            }
            users.insert(name, user);
        }
        Ok(Self {
            path: path.to_owned(),
            users,
        })
    }

    /// User names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Users with their names, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &User)> {
        self.users.iter().map(|(name, user)| (name.as_str(), user))
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The stored credential of `name`.
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.users.get(name).map(|user| &user.credential)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A fresh salted credential for `password` (refused if too short or too long): what a
    /// client sends a broker to set a user's password, the password staying with it.
    pub fn credential_for(password: &str) -> Result<Credential, UsersError> {
        check_password(password)?;
        Ok(Credential::new(password, ITERATIONS_DEFAULT)?)
    }

    /// Adds a user with a fresh salted credential and, optionally, registry access.
    pub fn add(
        &mut self,
        name: &str,
        password: &str,
        registry: Option<RegistryAccess>,
    ) -> Result<(), UsersError> {
        let credential = Self::credential_for(password)?;
        self.insert(name, credential, registry)
    }

    /// Adds `credentials` as the data directory's first super user (the registry's admin too,
    /// when the registry reads this file) and writes them to `data_dir`'s
    /// [`LOCAL_CREDENTIALS_FILE`], readable by its owner only, where the CLI and the SDK on
    /// this machine find them: that file's path.
    pub fn add_local_admin(
        &mut self,
        credentials: &LocalCredentials,
        data_dir: &Path,
    ) -> Result<PathBuf, UsersError> {
        let registry = RegistryAccess::new(RegistryRole::Admin, Vec::new())?;
        self.add(&credentials.user, &credentials.password, Some(registry))?;
        let path = data_dir.join(LOCAL_CREDENTIALS_FILE);
        meta::write_private(&path, credentials.to_text().as_bytes()).map_err(|e| {
            UsersError::Write {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(path)
    }

    /// Adds a user whose credential was made elsewhere.
    pub fn insert(
        &mut self,
        name: &str,
        credential: Credential,
        registry: Option<RegistryAccess>,
    ) -> Result<(), UsersError> {
        let user = User {
            credential,
            registry,
        };
        match self.insert_many(vec![(name.to_owned(), user)])?.pop() {
            Some((_, refused)) => Err(refused),
            None => Ok(()),
        }
    }

    /// Adds users whose credentials were made elsewhere (`herald user import` converts the
    /// registry's older password hashes), in one change of the file; returns the ones refused
    /// (invalid name or access, already there, past [`USERS_MAX`]) with why.
    pub fn insert_many(
        &mut self,
        new: Vec<(String, User)>,
    ) -> Result<Vec<(String, UsersError)>, UsersError> {
        let mut refused = Vec::new();
        self.change(|users| {
            for (name, user) in new {
                let invalid = check_name(&name).err().or_else(|| {
                    user.registry
                        .as_ref()
                        .and_then(|access| access.check().err())
                });
                let why = match invalid {
                    Some(error) => Some(error),
                    None if users.contains_key(&name) => Some(UsersError::Exists(name.clone())),
                    None if users.len() >= USERS_MAX => Some(UsersError::TooMany),
                    None => None,
                };
                match why {
                    Some(why) => refused.push((name, why)),
                    None => {
                        users.insert(name, user);
                    }
                }
            }
            Ok(())
        })?;
        Ok(refused)
    }

    /// Gives an existing user a new password (a new salt too); its registry access stays.
    pub fn passwd(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        let credential = Self::credential_for(password)?;
        self.change(|users| {
            let user = users
                .get_mut(name)
                .ok_or_else(|| UsersError::Unknown(name.to_owned()))?;
            user.credential = credential;
            Ok(())
        })
    }

    /// Sets a user's credential (made elsewhere: a client over the wire), adding the user if
    /// new, and changes its registry access as `registry` says (a new user with `Keep` has
    /// none), in one change of the file. Whether the user is new.
    pub fn set_credential(
        &mut self,
        name: &str,
        credential: Credential,
        registry: &RegistryChange,
    ) -> Result<bool, UsersError> {
        check_name(name)?;
        registry.check()?;
        let mut added = false;
        self.change(|users| {
            let count = users.len();
            match users.get_mut(name) {
                Some(user) => {
                    user.credential = credential;
                    user.registry = registry.apply(user.registry.take());
                }
                None if count >= USERS_MAX => return Err(UsersError::TooMany),
                None => {
                    added = true;
                    users.insert(
                        name.to_owned(),
                        User {
                            credential,
                            registry: registry.apply(None),
                        },
                    );
                }
            }
            Ok(())
        })?;
        Ok(added)
    }

    /// Sets (or, with `None`, takes away) a user's registry access.
    pub fn set_registry(
        &mut self,
        name: &str,
        registry: Option<RegistryAccess>,
    ) -> Result<(), UsersError> {
        if let Some(access) = &registry {
            access.check()?;
        }
        self.change(|users| {
            let user = users
                .get_mut(name)
                .ok_or_else(|| UsersError::Unknown(name.to_owned()))?;
            user.registry = registry;
            Ok(())
        })
    }

    /// Makes the file hold exactly `users` (a copy of users kept elsewhere: a cluster node
    /// writes the cluster's for a registry to read); nothing is written if it holds them
    /// already. Whether it changed.
    pub fn replace_all(&mut self, users: BTreeMap<String, User>) -> Result<bool, UsersError> {
        for (name, user) in &users {
            check_name(name)?;
            if let Some(access) = &user.registry {
                access.check()?;
            }
        }
        if users.len() > USERS_MAX {
            return Err(UsersError::TooMany);
        }
        let stored = Self::open_file(&self.path)?;
        if stored.users == users {
            self.users = stored.users;
            return Ok(false);
        }
        self.change(|current| {
            *current = users;
            Ok(())
        })?;
        Ok(true)
    }

    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        self.change(|users| {
            users
                .remove(name)
                .map(drop)
                .ok_or_else(|| UsersError::Unknown(name.to_owned()))
        })
    }

    /// Under an exclusive lock on `<file>.lock` (so that two `herald user` commands at once
    /// never lose one's change): reads the file again, applies `edit` to what it holds, writes
    /// the result, and only then keeps it. Nothing is written when `edit` fails.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut BTreeMap<String, User>) -> Result<(), UsersError>,
    ) -> Result<(), UsersError> {
        let write_error = |e: std::io::Error| UsersError::Write {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(write_error)?;
        // Released when `lock` is dropped (closed) at the end of the change.
        lock.lock().map_err(write_error)?;
        let mut users = Self::open_file(&self.path)?.users;
        edit(&mut users)?;
        let bytes = meta::encode(KIND, &UsersOut { users: &users }).map_err(write_error)?;
        // Readable by its owner only from its creation.
        meta::write_private(&self.path, &bytes).map_err(write_error)?;
        self.users = users;
        Ok(())
    }
}

/// A users file as last read, read again when it changes, so `herald user add|passwd|remove`
/// apply to a running server.
pub type UsersWatch = crate::watch::FileWatch<Users>;

impl UsersWatch {
    /// Reads the users file at `path` (none if it does not exist yet) and watches it.
    pub fn open(path: &Path, recheck: Duration) -> Result<Self, UsersError> {
        crate::watch::FileWatch::load(path, recheck, Users::open_file)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::scram::{nonce, ScramClient, ScramServer};

    use super::*;

    /// A credential set over the wire changes the registry access as told (a new user with
    /// `Keep` has none, a new password keeps it, `Clear` takes it away); `replace_all` makes
    /// the file hold exactly what it is given and writes nothing when it holds it already.
    #[test]
    fn credentials_set_elsewhere_change_registry_access_as_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        let credential = || Users::credential_for("correct horse battery").expect("credential");
        let writer =
            RegistryAccess::new(RegistryRole::Write, vec!["team-a.".to_owned()]).expect("access");
        let access = |users: &Users| users.user("alice").and_then(|u| u.registry.clone());
        assert!(users
            .set_credential("alice", credential(), &RegistryChange::Keep)
            .expect("added"));
        assert_eq!(access(&users), None);
        users
            .set_credential("alice", credential(), &RegistryChange::Set(writer.clone()))
            .expect("set");
        assert_eq!(access(&users), Some(writer.clone()));
        users
            .set_credential("alice", credential(), &RegistryChange::Keep)
            .expect("kept");
        assert_eq!(
            access(&Users::open(dir.path()).expect("reread")),
            Some(writer)
        );
        users
            .set_credential("alice", credential(), &RegistryChange::Clear)
            .expect("cleared");
        assert_eq!(access(&users), None);
        let copy = dir.path().join("copy").join(FILE);
        let mut mirror = Users::open_file(&copy).expect("open");
        let wanted: BTreeMap<String, User> = users
            .iter()
            .map(|(name, user)| (name.to_owned(), user.clone()))
            .collect();
        assert!(mirror.replace_all(wanted.clone()).expect("written"));
        assert!(
            !mirror.replace_all(wanted).expect("same"),
            "nothing to write"
        );
        assert!(mirror.replace_all(BTreeMap::new()).expect("emptied"));
        assert!(Users::open_file(&copy).expect("reread").is_empty());
    }

    /// A SCRAM exchange of `user`/`password` against what `users` stores.
    fn authenticates(users: &Users, user: &str, password: &str) -> bool {
        let Ok(client_nonce) = nonce() else {
            return false;
        };
        let Ok((client, first)) = ScramClient::new(user, password, &client_nonce) else {
            return false;
        };
        let server_nonce = nonce().expect("nonce");
        let Ok((server, server_first)) = ScramServer::start(
            &first,
            |name| users.credential(name).cloned(),
            &server_nonce,
            b"test secret test secret test secret",
        ) else {
            return false;
        };
        let Ok((client, client_final)) = client.step(&server_first) else {
            return false;
        };
        let Ok((name, server_final)) = server.finish(&client_final) else {
            return false;
        };
        name == user && client.finish(&server_final).is_ok()
    }

    #[test]
    fn users_are_added_changed_removed_and_kept_across_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse", None).expect("add");
        assert!(matches!(
            users.add("alice", "another one", None),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            users.add("bob", "short", None),
            Err(UsersError::WeakPassword)
        ));
        assert!(matches!(
            users.add("", "long enough", None),
            Err(UsersError::InvalidName { .. })
        ));
        let mut users = Users::open(dir.path()).expect("reopen");
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice"]);
        assert!(authenticates(&users, "alice", "correct horse"));
        assert!(!authenticates(&users, "alice", "wrong horse"));
        users.passwd("alice", "battery staple").expect("passwd");
        assert!(!authenticates(&users, "alice", "correct horse"));
        assert!(authenticates(&users, "alice", "battery staple"));
        users.remove("alice").expect("remove");
        assert!(matches!(users.remove("alice"), Err(UsersError::Unknown(_))));
        assert_eq!(Users::open(dir.path()).expect("reopen").names().count(), 0);
    }

    #[test]
    fn registry_access_is_kept_beside_the_credential_and_survives_a_password_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        let team_a =
            RegistryAccess::new(RegistryRole::Write, vec!["team-a.".to_owned()]).expect("access");
        users
            .add("alice", "correct horse", Some(team_a.clone()))
            .expect("add");
        users.add("bob", "correct horse", None).expect("add");
        users.passwd("alice", "battery staple").expect("passwd");
        let users = Users::open(dir.path()).expect("reopen");
        assert_eq!(
            users.user("alice").and_then(|u| u.registry.clone()),
            Some(team_a)
        );
        assert_eq!(users.user("bob").and_then(|u| u.registry.clone()), None);
        let mut users = users;
        users
            .set_registry(
                "bob",
                Some(RegistryAccess::new(RegistryRole::Admin, Vec::new()).expect("access")),
            )
            .expect("set");
        users.set_registry("alice", None).expect("unset");
        let users = Users::open(dir.path()).expect("reopen");
        assert_eq!(
            users
                .user("bob")
                .and_then(|u| u.registry.as_ref())
                .map(|a| a.role),
            Some(RegistryRole::Admin)
        );
        assert_eq!(users.user("alice").and_then(|u| u.registry.clone()), None);
        assert!(matches!(
            RegistryAccess::new(RegistryRole::Read, vec![String::new()]),
            Err(UsersError::InvalidAccess(_))
        ));
        assert!(matches!(
            RegistryAccess::new(
                RegistryRole::Read,
                vec!["p".to_owned(); SUBJECT_PREFIXES_MAX + 1]
            ),
            Err(UsersError::InvalidAccess(_))
        ));
    }

    /// A file written by the format's first version (credentials alone) is read, its users
    /// without registry access, and is rewritten in the current version at the next change.
    #[test]
    fn a_version_1_file_is_read_and_upgraded_at_the_next_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let credential = Credential::new("correct horse", 4096).expect("credential");
        let v1 = meta::Kind {
            name: "users",
            version: 1,
        };
        let payload = serde_json::json!({ "users": { "alice": credential.to_text() } });
        let bytes = meta::encode(v1, &payload).expect("encode");
        std::fs::write(Users::path(dir.path()), bytes).expect("write");
        let mut users = Users::open(dir.path()).expect("open v1");
        assert!(authenticates(&users, "alice", "correct horse"));
        assert_eq!(users.user("alice").and_then(|u| u.registry.clone()), None);
        users.add("bob", "battery staple", None).expect("add");
        let text = std::fs::read_to_string(Users::path(dir.path())).expect("read");
        assert!(text.contains(r#""version":2"#), "{text}");
        let users = Users::open(dir.path()).expect("open v2");
        assert!(authenticates(&users, "alice", "correct horse"));
        assert!(authenticates(&users, "bob", "battery staple"));
    }

    /// Two handles opened before either changed the file (two `herald user` commands at
    /// once): each change is made to what the file holds then, so neither is lost.
    #[test]
    fn changes_through_stale_handles_are_not_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = Users::open(dir.path()).expect("open");
        let mut second = Users::open(dir.path()).expect("open");
        first.add("alice", "correct horse", None).expect("alice");
        second.add("bob", "battery staple", None).expect("bob");
        assert!(matches!(
            first.add("bob", "another one!", None),
            Err(UsersError::Exists(_))
        ));
        let users = Users::open(dir.path()).expect("reopen");
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice", "bob"]);
    }

    /// An import is one change: what can go in does, what cannot is returned with why.
    #[test]
    fn many_users_go_in_at_once_and_the_refused_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse", None).expect("alice");
        let user = || User {
            credential: Credential::new("battery staple", 4096).expect("credential"),
            registry: None,
        };
        let refused = users
            .insert_many(vec![
                ("alice".to_owned(), user()),
                ("bob".to_owned(), user()),
                ("has space".to_owned(), user()),
            ])
            .expect("insert");
        let names: Vec<&str> = refused.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["alice", "has space"]);
        assert!(matches!(refused[0].1, UsersError::Exists(_)));
        assert!(matches!(refused[1].1, UsersError::InvalidName { .. }));
        let users = Users::open(dir.path()).expect("reopen");
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice", "bob"]);
    }

    #[test]
    fn a_damaged_user_entry_is_refused_naming_the_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payload =
            serde_json::json!({ "users": { "mallory": { "credential": "scram-sha256$1$x$y$z" } } });
        let bytes = meta::encode(KIND, &payload).expect("encode");
        std::fs::write(Users::path(dir.path()), bytes).expect("write");
        let error = Users::open(dir.path()).expect_err("damaged");
        assert!(error.to_string().contains("user 'mallory'"), "{error}");
    }

    #[test]
    fn a_watch_sees_changes_at_most_once_per_recheck() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Users::path(dir.path());
        let mut watch = UsersWatch::open(&path, Duration::from_secs(1)).expect("watch");
        let start = Instant::now();
        assert!(watch.current(start).0.is_empty());
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse", None).expect("add");
        // Within the recheck interval the file is not looked at.
        let (seen, changed) = watch.current(start + Duration::from_millis(500));
        assert!(seen.is_empty() && !changed);
        let (seen, changed) = watch.current(start + Duration::from_secs(1));
        assert!(changed);
        assert_eq!(seen.names().collect::<Vec<_>>(), ["alice"]);
        let (_, changed) = watch.current(start + Duration::from_secs(3));
        assert!(!changed, "an unchanged file is not read again");
    }

    /// A users file damaged while a server runs (a bad edit, a full disk) does not take the
    /// users away: the watch keeps what it read before and reads the file again once mended.
    #[test]
    fn a_watch_keeps_the_users_while_the_file_cannot_be_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Users::path(dir.path());
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse", None).expect("add");
        let mut watch = UsersWatch::open(&path, Duration::ZERO).expect("watch");
        let good = std::fs::read(&path).expect("read");
        std::fs::write(&path, b"{ damaged").expect("damage");
        let (seen, changed) = watch.current(Instant::now());
        assert!(!changed);
        assert_eq!(seen.names().collect::<Vec<_>>(), ["alice"]);
        // Mended (a new inode, as every rewrite makes): read again.
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, good).expect("mend");
        let mut users = Users::open(dir.path()).expect("open");
        users.add("bob", "battery staple", None).expect("add");
        let (seen, changed) = watch.current(Instant::now());
        assert!(changed);
        assert_eq!(seen.names().collect::<Vec<_>>(), ["alice", "bob"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_users_file_holds_no_password_and_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse", None).expect("add");
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("correct horse"), "{text}");
        assert!(text.contains("scram-sha256$"), "{text}");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
