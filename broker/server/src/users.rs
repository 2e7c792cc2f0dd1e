//! The broker's users: each name with its salted SCRAM-SHA-256 credential
//! ([`herald_auth::scram::Credential`]; no password is stored), in `users.meta` in the data
//! directory (a versioned [`crate::meta`] envelope, rewritten atomically on every change,
//! created 0600 so it is never readable by others). `herald user add|list|remove|passwd` edits it; the broker
//! authenticates connections against it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herald_auth::acl::Principal;
use herald_auth::scram::{Credential, ScramError, ITERATIONS_DEFAULT};
use serde::{Deserialize, Serialize};

use crate::meta;

const FILE: &str = "users.meta";
/// The kind and format version of `users.meta`.
const KIND: meta::Kind = meta::Kind {
    name: "users",
    version: 1,
};
/// Users one broker knows.
pub const USERS_MAX: usize = 10_000;
/// Shortest password accepted (NIST SP 800-63B's minimum for chosen secrets).
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Longest password accepted: a password is hashed on every connection by the client.
pub const PASSWORD_BYTES_MAX: usize = 1024;

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
    #[error("the broker already has {USERS_MAX} users")]
    TooMany,
    #[error("cannot derive the credential: {0}")]
    Credential(#[from] ScramError),
}

/// Version 1 payload of `users.meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UsersV1 {
    users: BTreeMap<String, Credential>,
}

/// The users of one data directory.
#[derive(Debug)]
pub struct Users {
    dir: PathBuf,
    users: BTreeMap<String, Credential>,
}

fn check_name(name: &str) -> Result<(), UsersError> {
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
    /// Where the users of `data_dir` are kept.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Reads the users of `data_dir` (none if the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<Self, UsersError> {
        let path = data_dir.join(FILE);
        let users = match meta::read_enveloped::<UsersV1>(&path, KIND) {
            Ok(stored) => stored.unwrap_or_default().users,
            Err(meta::ReadError::Io { path, source }) => {
                return Err(UsersError::Read {
                    path,
                    reason: source.to_string(),
                })
            }
            Err(e) => return Err(UsersError::Stored(e.to_string())),
        };
        Ok(Self {
            dir: data_dir.to_owned(),
            users,
        })
    }

    /// User names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The stored credential of `name`.
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }

    /// Adds a user with a fresh salted credential.
    pub fn add(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        check_name(name)?;
        check_password(password)?;
        if self.users.contains_key(name) {
            return Err(UsersError::Exists(name.to_owned()));
        }
        if self.users.len() >= USERS_MAX {
            return Err(UsersError::TooMany);
        }
        let credential = Credential::new(password, ITERATIONS_DEFAULT)?;
        self.change(|users| {
            users.insert(name.to_owned(), credential);
        })
    }

    /// Gives an existing user a new password (a new salt too).
    pub fn passwd(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        check_password(password)?;
        if !self.users.contains_key(name) {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        let credential = Credential::new(password, ITERATIONS_DEFAULT)?;
        self.change(|users| {
            users.insert(name.to_owned(), credential);
        })
    }

    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        if !self.users.contains_key(name) {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        self.change(|users| {
            users.remove(name);
        })
    }

    /// Applies `edit` to a copy, writes it, and only then keeps it.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut BTreeMap<String, Credential>),
    ) -> Result<(), UsersError> {
        let mut users = self.users.clone();
        edit(&mut users);
        let payload = UsersV1 { users };
        let write_error = |e: std::io::Error| UsersError::Write {
            path: self.dir.join(FILE).display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(write_error)?;
        let bytes = meta::encode(KIND, &payload).map_err(write_error)?;
        // Readable by its owner only from its creation.
        crate::fs::write_private(&self.dir.join(FILE), &bytes).map_err(write_error)?;
        self.users = payload.users;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use herald_auth::scram::{nonce, ScramClient, ScramServer};

    use super::*;

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
        users.add("alice", "correct horse").expect("add");
        assert!(matches!(
            users.add("alice", "another one"),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            users.add("bob", "short"),
            Err(UsersError::WeakPassword)
        ));
        assert!(matches!(
            users.add("", "long enough"),
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

    #[cfg(unix)]
    #[test]
    fn the_users_file_holds_no_password_and_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::open(dir.path()).expect("open");
        users.add("alice", "correct horse").expect("add");
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
