//! Optional HTTP basic authentication with three roles, configured from a TOML file:
//!
//! ```toml
//! [[user]]
//! name = "ci"
//! password_sha256 = "<hex sha-256 of the password>"
//! role = "read"        # read | write | admin
//! ```
//!
//! `read` may use every GET plus the non-mutating POSTs (lookup, compatibility); `write` may
//! also register and soft-delete; `admin` may do everything (config, mode, permanent delete).

use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    name: String,
    password_sha256: String,
    role: Role,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    #[serde(rename = "user", default)]
    users: Vec<User>,
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
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials: 401.
    Unauthenticated,
    /// Valid user, role too low: 403.
    Forbidden,
}

impl AuthConfig {
    pub fn load(path: &Path) -> Result<Self, AuthConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config: AuthConfig =
            toml::from_str(&text).map_err(|source| AuthConfigError::Parse {
                path: shown.clone(),
                source,
            })?;
        if config.users.is_empty() {
            return Err(AuthConfigError::Empty { path: shown });
        }
        Ok(config)
    }

    /// Decides a request from its `Authorization` header, method and path.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
    ) -> Result<(), Denied> {
        let role = authorization
            .and_then(|header| header.strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            })
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| {
                let (name, password) = pair.split_once(':')?;
                let digest = hex::encode(Sha256::digest(password.as_bytes()));
                self.users
                    .iter()
                    .find(|user| {
                        user.name == name && user.password_sha256.eq_ignore_ascii_case(&digest)
                    })
                    .map(|user| user.role)
            })
            .ok_or(Denied::Unauthenticated)?;
        if role >= required_role(method, path) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }
}

fn required_role(method: &str, path: &str) -> Role {
    let is_subject_lookup = path.starts_with("/subjects/") && path.matches('/').count() == 2;
    match method {
        "GET" | "HEAD" => Role::Read,
        "POST" if path.starts_with("/compatibility/") || is_subject_lookup => Role::Read,
        "POST" if path.starts_with("/subjects/") => Role::Write,
        "DELETE" if path.starts_with("/subjects/") && !path.contains("permanent=true") => {
            Role::Write
        }
        _ => Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        let digest = |password: &str| hex::encode(Sha256::digest(password.as_bytes()));
        toml::from_str(&format!(
            "[[user]]\nname = \"reader\"\npassword_sha256 = \"{}\"\nrole = \"read\"\n[[user]]\nname = \"boss\"\npassword_sha256 = \"{}\"\nrole = \"admin\"\n",
            digest("r"),
            digest("b")
        ))
        .expect("valid config")
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn roles_gate_methods() {
        let config = config();
        assert_eq!(
            config.authorize(None, "GET", "/subjects"),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "wrong")), "GET", "/subjects"),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "GET", "/subjects"),
            Ok(())
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "POST", "/subjects/a"),
            Ok(())
        );
        assert_eq!(
            config.authorize(
                Some(&basic("reader", "r")),
                "POST",
                "/compatibility/subjects/a/versions"
            ),
            Ok(())
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "POST", "/subjects/a/versions"),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            config.authorize(Some(&basic("reader", "r")), "PUT", "/config"),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            config.authorize(Some(&basic("boss", "b")), "PUT", "/config"),
            Ok(())
        );
    }
}
