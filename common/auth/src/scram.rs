//! SCRAM-SHA-256 (RFC 5802, with RFC 7677's SHA-256 parameters) the way Kafka's SASL/SCRAM
//! speaks it, as sans-IO state machines: each step takes the peer's message as bytes and returns
//! the next state and the message to send. Nothing here does I/O; randomness comes from
//! [`nonce`] and [`Credential::new`] (ring's system generator) or from the caller.
//!
//! The exchange (`C` client, `S` server):
//!
//! ```text
//! C: n,,n=<user>,r=<client nonce>                           ScramClient::new
//! S: r=<client nonce><server nonce>,s=<salt>,i=<iterations> ScramServer::start
//! C: c=biws,r=<nonce>,p=<client proof>                      ScramClientStarted::step
//! S: v=<server signature>                                   ScramServerWaiting::finish
//!                                                           ScramClientFinal::finish
//! ```
//!
//! What is and is not supported, as in Kafka:
//! - No channel binding: the client sends the gs2 header `n,,` and echoes it as `c=biws`. A
//!   client asking for channel binding (`p=...`) is refused with [`ScramError::ChannelBinding`];
//!   a client sending `y` (it supports binding but thinks the server does not) is accepted, as
//!   RFC 5802 section 6 requires of a server without channel binding, and must echo `y,,`.
//! - An authorization identity (`a=` in the gs2 header) is accepted only if it names the
//!   authenticating user ([`ScramError::AuthzidNotUser`] otherwise).
//! - User names are escaped on the wire (`,` as `=2C`, `=` as `=3D`); any other `=` sequence is
//!   malformed. Neither names nor passwords go through SASLprep (Kafka does not either): a
//!   password is used as its UTF-8 bytes.
//! - Extensions: a reserved mandatory extension (`m=`) is refused; the delegation-token
//!   extension `tokenauth` is refused (Herald has no delegation tokens); other well-formed
//!   extensions (`name=value`) are ignored, as RFC 5802 section 5.1 says.
//! - Every message is at most [`MESSAGE_BYTES_MAX`] bytes and must be UTF-8; malformed input
//!   is an error, never a panic.
//!
//! A server never reveals whether a user exists: for an unknown user
//! [`ScramServer::start`] answers with a fake credential derived from the user name and a
//! caller-held secret (the same salt every time, like a real user's, and the same salt length
//! and iteration count as credentials made by [`Credential::new`] with
//! [`ITERATIONS_DEFAULT`]), and [`ScramServerWaiting::finish`] then fails with
//! [`ScramError::UnknownUserOrBadPassword`], the error a wrong password gets. How long the
//! caller's `lookup` takes for a missing user is the caller's to keep uniform.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use subtle::{Choice, ConstantTimeEq};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// The smallest iteration count accepted anywhere: RFC 7677 section 4 requires at least 4096
/// for SCRAM-SHA-256 (and Kafka refuses fewer).
pub const ITERATIONS_MIN: u32 = 4096;

/// The iteration count for new credentials: twice Kafka's default (4096, the RFC minimum).
///
/// A stolen credential store or a recorded exchange lets an attacker test password guesses
/// offline at `iterations` PBKDF2 rounds each, so more is better; but SCRAM puts that work on
/// the *client*, at every authentication (each connection and reconnection of every producer
/// and consumer), and Kafka's own tools refuse to store SCRAM credentials above 16384
/// iterations. 8192 doubles the guessing cost for a few milliseconds per connection and stays
/// inside Kafka's range. (The registry's HTTP password hashes use far more iterations because
/// a server checks them once per cached credential; SCRAM's trade-off is different.)
pub const ITERATIONS_DEFAULT: u32 = 8192;

/// The largest iteration count accepted anywhere: a server offering more would make a client
/// spend seconds of CPU per connection (a denial of service), and no sane credential needs it.
pub const ITERATIONS_MAX: u32 = 1_000_000;

/// The largest message, in bytes, any step accepts or produces.
pub const MESSAGE_BYTES_MAX: usize = 4096;

/// The length of the salt [`Credential::new`] draws (and of the fake salts for unknown users).
pub const SALT_BYTES: usize = 16;

/// The random bytes in a [`nonce`] (base64-encoded to 32 characters).
pub const NONCE_RANDOM_BYTES: usize = 24;

/// The length of SHA-256 output: stored keys, server keys, proofs and signatures.
pub const KEY_BYTES: usize = 32;

/// The scheme name that starts a credential's text form.
const CREDENTIAL_SCHEME: &str = "scram-sha256";

/// The gs2 header this client sends: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

/// A SHA-256 sized secret or digest.
type Key32 = [u8; KEY_BYTES];

/// What went wrong in a SCRAM exchange or with a stored credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The input does not follow the grammar; `what` names the part.
    #[error("malformed SCRAM input: {what}")]
    Malformed { what: &'static str },
    /// The proof does not verify. Deliberately one variant for both an unknown user and a wrong
    /// password, so that a server cannot tell a client which it was.
    #[error("unknown user or bad password")]
    UnknownUserOrBadPassword,
    /// The nonce does not continue the exchange: the server's does not start with the client's
    /// (or adds nothing to it), or the client-final's is not the server-first's.
    #[error("the nonce does not continue this exchange's nonce")]
    NonceMismatch,
    /// The client asked for channel binding, which is not supported, or its channel-binding
    /// echo (`c=`) is not the base64 of the gs2 header it sent.
    #[error("channel binding is not supported, or the channel-binding echo (c=) does not match the gs2 header")]
    ChannelBinding,
    /// The gs2 header's authorization identity (`a=`) names someone other than the user.
    #[error("the authorization identity (a=) differs from the user; acting as another user is not supported")]
    AuthzidNotUser,
    /// An iteration count outside [`ITERATIONS_MIN`]`..=`[`ITERATIONS_MAX`] (saturated to
    /// `u64::MAX` when it does not even fit).
    #[error("iteration count {iterations} outside {min}..={max}", min = ITERATIONS_MIN, max = ITERATIONS_MAX)]
    IterationsOutOfRange { iterations: u64 },
    /// The server's signature does not verify: the server does not hold this password's keys.
    #[error("the server's signature does not verify")]
    ServerSignature,
    /// The server ended the exchange with `e=<value>`.
    #[error("the server refused the authentication: {0}")]
    ServerError(String),
    /// A message longer than [`MESSAGE_BYTES_MAX`].
    #[error("SCRAM message longer than {max} bytes", max = MESSAGE_BYTES_MAX)]
    TooLong,
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

fn malformed(what: &'static str) -> ScramError {
    ScramError::Malformed { what }
}

/// A fresh nonce: [`NONCE_RANDOM_BYTES`] random bytes from the system generator, base64
/// (32 printable characters, no commas, no padding). Use one for each client-first and each
/// server-first.
pub fn nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; NONCE_RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ScramError::Random)?;
    Ok(B64.encode(bytes))
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// What a server stores for a user: the salt and iteration count it hands the client, and the
/// two keys derived from the salted password (the password itself is not kept).
///
/// Its text form ([`Credential::to_text`], [`Credential::parse`], and serde as that string) is
/// `scram-sha256$<iterations>$<salt base64>$<stored key base64>$<server key base64>`.
/// `Debug` leaves the keys out. `PartialEq` is an ordinary comparison: verification goes through
/// [`ScramServer`], never through `==`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Credential {
    /// A credential for `password` with a fresh random [`SALT_BYTES`]-byte salt.
    /// `iterations` must be in [`ITERATIONS_MIN`]`..=`[`ITERATIONS_MAX`]; use
    /// [`ITERATIONS_DEFAULT`] unless there is a reason not to.
    pub fn new(password: &str, iterations: u32) -> Result<Self, ScramError> {
        checked_iterations(u64::from(iterations))?;
        let mut salt = [0u8; SALT_BYTES];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| ScramError::Random)?;
        Self::with_salt(password, &salt, iterations)
    }

    /// A credential for `password` with the given salt (deterministic: for tests and for
    /// importing known vectors). The salt must not be empty.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Result<Self, ScramError> {
        let rounds = checked_iterations(u64::from(iterations))?;
        if salt.is_empty() {
            return Err(malformed("credential: the salt is empty"));
        }
        let keys = derive_keys(password, salt, rounds);
        Ok(Self {
            salt: salt.to_vec(),
            iterations: rounds.get(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }

    /// A credential from a password already salted and iterated: `salted_password` is
    /// PBKDF2-HMAC-SHA256 of the password with `salt` over `iterations` rounds (SCRAM's
    /// SaltedPassword), which is exactly what the registry's `pbkdf2-sha256$` hashes hold, so
    /// those convert to SCRAM credentials without knowing the password.
    pub fn from_salted_password(
        salted_password: &[u8; KEY_BYTES],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, ScramError> {
        let rounds = checked_iterations(u64::from(iterations))?;
        if salt.is_empty() {
            return Err(malformed("credential: the salt is empty"));
        }
        let keys = keys_of_salted(salted_password);
        Ok(Self {
            salt: salt.to_vec(),
            iterations: rounds.get(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }

    /// The storage form:
    /// `scram-sha256$<iterations>$<salt base64>$<stored key base64>$<server key base64>`.
    pub fn to_text(&self) -> String {
        format!(
            "{CREDENTIAL_SCHEME}${}${}${}${}",
            self.iterations,
            B64.encode(self.salt.as_slice()),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Reads the form [`Credential::to_text`] writes (surrounding whitespace is ignored). The
    /// iteration count must be in range and the salt non-empty.
    pub fn parse(text: &str) -> Result<Self, ScramError> {
        let fields: Vec<&str> = text.trim().split('$').collect();
        let [scheme, iterations, salt, stored_key, server_key] = fields.as_slice() else {
            return Err(malformed(
                "credential: expected scram-sha256$<iterations>$<salt>$<stored key>$<server key>",
            ));
        };
        if *scheme != CREDENTIAL_SCHEME {
            return Err(malformed(
                "credential: unknown scheme, expected scram-sha256",
            ));
        }
        let iterations = parse_iterations(
            iterations,
            "credential: the iteration count is not a positive decimal number",
        )?;
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("credential: the salt is not base64"))?;
        if salt.is_empty() {
            return Err(malformed("credential: the salt is empty"));
        }
        Ok(Self {
            salt,
            iterations: iterations.get(),
            stored_key: key_from_base64(
                stored_key,
                "credential: the stored key is not 32 bytes of base64",
            )?,
            server_key: key_from_base64(
                server_key,
                "credential: the server key is not 32 bytes of base64",
            )?,
        })
    }
}

/// What a server that only checks passwords (a basic-auth login, not a SCRAM exchange) needs
/// of a [`Credential`]: the salt, the iteration count and the stored key — without the server
/// key, so that whoever reads it cannot pose as the broker to SCRAM clients.
///
/// Text form: `scram-sha256-stored$<iterations>$<salt base64>$<stored key base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
}

/// The scheme of [`StoredKey::to_text`].
pub const STORED_KEY_SCHEME: &str = "scram-sha256-stored";

impl Credential {
    /// The part a password-checking server needs (see [`StoredKey`]).
    pub fn stored(&self) -> StoredKey {
        StoredKey {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key,
        }
    }
}

impl StoredKey {
    /// Whether `password` derives this stored key (compared in constant time).
    pub fn verifies(&self, password: &str) -> bool {
        match checked_iterations(u64::from(self.iterations)) {
            Ok(rounds) if !self.salt.is_empty() => {
                let keys = derive_keys(password, &self.salt, rounds);
                bool::from(keys.stored_key.ct_eq(&self.stored_key))
            }
            _ => false,
        }
    }

    /// `scram-sha256-stored$<iterations>$<salt base64>$<stored key base64>`.
    pub fn to_text(&self) -> String {
        format!(
            "{STORED_KEY_SCHEME}${}${}${}",
            self.iterations,
            B64.encode(self.salt.as_slice()),
            B64.encode(self.stored_key)
        )
    }

    /// Reads [`StoredKey::to_text`]'s form, or a whole [`Credential`]'s (keeping what it needs).
    pub fn parse(text: &str) -> Result<Self, ScramError> {
        let text = text.trim();
        if text.starts_with(&format!("{CREDENTIAL_SCHEME}$")) {
            return Credential::parse(text).map(|credential| credential.stored());
        }
        let fields: Vec<&str> = text.split('$').collect();
        let [scheme, iterations, salt, stored_key] = fields.as_slice() else {
            return Err(malformed(
                "stored key: expected scram-sha256-stored$<iterations>$<salt>$<stored key>",
            ));
        };
        if *scheme != STORED_KEY_SCHEME {
            return Err(malformed(
                "stored key: unknown scheme, expected scram-sha256-stored",
            ));
        }
        let iterations = parse_iterations(
            iterations,
            "stored key: the iteration count is not a positive decimal number",
        )?;
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("stored key: the salt is not base64"))?;
        if salt.is_empty() {
            return Err(malformed("stored key: the salt is empty"));
        }
        Ok(Self {
            salt,
            iterations: iterations.get(),
            stored_key: key_from_base64(
                stored_key,
                "stored key: the stored key is not 32 bytes of base64",
            )?,
        })
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("salt", &B64.encode(self.salt.as_slice()))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .finish()
    }
}

impl FromStr for Credential {
    type Err = ScramError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("salt", &B64.encode(self.salt.as_slice()))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl serde::Serialize for Credential {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for Credential {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// The server side. Start with [`ScramServer::start`] on the client-first message.
#[derive(Debug)]
pub struct ScramServer;

impl ScramServer {
    /// Reads the client-first message, looks the user up and returns the state waiting for the
    /// client-final message with the server-first message to send.
    ///
    /// - `lookup` gets the user name as sent, unescaped (not SASLprepped) and returns its
    ///   credential, or `None` for an unknown user.
    /// - `server_nonce` must be fresh for every exchange: use [`nonce`]. It must be non-empty
    ///   printable ASCII without commas.
    /// - `unknown_user_secret` keys the fake credential an unknown user gets, so that the
    ///   exchange looks the same as for a known user (a fixed salt per name, of the length and
    ///   iteration count [`Credential::new`] with [`ITERATIONS_DEFAULT`] gives) and fails only at
    ///   [`ScramServerWaiting::finish`] with [`ScramError::UnknownUserOrBadPassword`]. Give it at
    ///   least 32 random bytes, keep it secret (whoever has it can tell fake salts from real
    ///   ones) and keep it across restarts (if it changes, an unknown user's salt changes,
    ///   which a real user's does not).
    ///
    /// Fails on a malformed client-first ([`ScramError::Malformed`], [`ScramError::TooLong`]),
    /// on a channel-binding request ([`ScramError::ChannelBinding`]), on an authorization
    /// identity other than the user ([`ScramError::AuthzidNotUser`]), and when the stored
    /// credential itself is invalid (iterations out of range, empty salt).
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        server_nonce: &str,
        unknown_user_secret: &[u8],
    ) -> Result<(ScramServerWaiting, Vec<u8>), ScramError> {
        let message = message_text(client_first, "client-first: not UTF-8")?;
        let first = parse_client_first(message)?;
        if !is_printable(server_nonce) {
            return Err(malformed(
                "server nonce: empty, or not printable ASCII without commas",
            ));
        }
        let (credential, known) = match lookup(&first.user) {
            Some(credential) => (credential, true),
            None => (
                unknown_user_credential(&first.user, unknown_user_secret),
                false,
            ),
        };
        checked_iterations(u64::from(credential.iterations))?;
        if credential.salt.is_empty() {
            return Err(malformed("credential: the salt is empty"));
        }
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(credential.salt.as_slice()),
            credential.iterations
        );
        let waiting = ScramServerWaiting {
            user: first.user,
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.client_first_bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            stored_key: credential.stored_key,
            server_key: credential.server_key,
            known,
        };
        Ok((waiting, server_first.into_bytes()))
    }
}

/// The server after sending server-first, waiting for the client-final message.
pub struct ScramServerWaiting {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    stored_key: Key32,
    server_key: Key32,
    known: bool,
}

impl ScramServerWaiting {
    /// The user name the client claims (not yet authenticated; possibly unknown).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Reads the client-final message and verifies the client's proof (in constant time).
    /// On success returns the authenticated user and the server-final message to send.
    ///
    /// Checks, in order: the attributes (`c=`, `r=`, optional extensions, `p=` last), the
    /// channel-binding echo ([`ScramError::ChannelBinding`]), the nonce
    /// ([`ScramError::NonceMismatch`]), then the proof
    /// ([`ScramError::UnknownUserOrBadPassword`], for an unknown user as for a wrong password).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let message = message_text(client_final, "client-final: not UTF-8")?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("client-final: the proof (p=) must come last"))?;
        let mut parts = without_proof.split(',');
        let channel_binding = attribute(
            parts.next(),
            "c=",
            "client-final: the channel binding (c=) must come first",
        )?;
        let nonce = attribute(
            parts.next(),
            "r=",
            "client-final: the nonce (r=) must follow the channel binding",
        )?;
        extension_names(parts, "client-final: an extension must be name=value")?;
        if proof.contains(',') {
            return Err(malformed("client-final: the proof (p=) must come last"));
        }

        let echoed = B64
            .decode(channel_binding)
            .map_err(|_| malformed("client-final: the channel binding is not base64"))?;
        if echoed != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = key_from_base64(proof, "client-final: the proof is not 32 bytes of base64")?;

        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let computed_stored_key = sha256(&client_key);
        let verified =
            ConstantTimeEq::ct_eq(computed_stored_key.as_slice(), self.stored_key.as_slice())
                & Choice::from(u8::from(self.known));
        if !bool::from(verified) {
            return Err(ScramError::UnknownUserOrBadPassword);
        }
        let server_signature = hmac_sha256(&self.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

impl fmt::Debug for ScramServerWaiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerWaiting")
            .field("user", &self.user)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// The parts of a client-first message the server needs.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    client_first_bare: &'a str,
    user: String,
    client_nonce: &'a str,
}

fn parse_client_first(message: &str) -> Result<ClientFirst<'_>, ScramError> {
    let (flag, rest) = message
        .split_once(',')
        .ok_or_else(|| malformed("client-first: no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => {
            return Err(malformed(
                "client-first: the gs2 channel-binding flag must be n",
            ))
        }
    }
    let (authzid, client_first_bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("client-first: the gs2 header must end with a comma"))?;
    let gs2_header = message
        .strip_suffix(client_first_bare)
        .ok_or_else(|| malformed("client-first: no gs2 header"))?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        let name = authzid
            .strip_prefix("a=")
            .ok_or_else(|| malformed("client-first: the gs2 authzid must be a=<name>"))?;
        Some(decode_saslname(
            name,
            "client-first: the authzid is not a valid name",
        )?)
    };

    let mut parts = client_first_bare.split(',');
    let first = parts.next().unwrap_or("");
    if first.starts_with("m=") {
        return Err(malformed(
            "client-first: mandatory extensions (m=) are not supported",
        ));
    }
    let user = attribute(
        Some(first),
        "n=",
        "client-first: the user (n=) must follow the gs2 header",
    )?;
    let user = decode_saslname(user, "client-first: the user name is not a valid name")?;
    let client_nonce = attribute(
        parts.next(),
        "r=",
        "client-first: the nonce (r=) must follow the user",
    )?;
    if !is_printable(client_nonce) {
        return Err(malformed(
            "client-first: the nonce must be printable ASCII without commas",
        ));
    }
    for name in extension_names(parts, "client-first: an extension must be name=value")? {
        if name == "tokenauth" {
            return Err(malformed(
                "client-first: delegation-token authentication (tokenauth) is not supported",
            ));
        }
    }
    if let Some(authzid) = authzid {
        if authzid != user {
            return Err(ScramError::AuthzidNotUser);
        }
    }
    Ok(ClientFirst {
        gs2_header,
        client_first_bare,
        user,
        client_nonce,
    })
}

/// The fake credential an unknown user gets: keyed by the caller's secret, fixed per name, and
/// shaped like [`Credential::new`]'s with [`ITERATIONS_DEFAULT`].
fn unknown_user_credential(user: &str, secret: &[u8]) -> Credential {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let salt = keyed(&key, b"herald scram unknown user: salt\0", user);
    Credential {
        salt: salt[..SALT_BYTES].to_vec(),
        iterations: ITERATIONS_DEFAULT,
        stored_key: keyed(&key, b"herald scram unknown user: stored key\0", user),
        server_key: keyed(&key, b"herald scram unknown user: server key\0", user),
    }
}

/// HMAC(key, label || user). Labels end in NUL, which a user name cannot contain, so label and
/// name never run together ambiguously.
fn keyed(key: &hmac::Key, label: &[u8], user: &str) -> Key32 {
    let mut context = hmac::Context::with_key(key);
    context.update(label);
    context.update(user.as_bytes());
    to_key(context.sign().as_ref())
}

// ---------------------------------------------------------------------------------------------
// Client

/// The client side. Start with [`ScramClient::new`].
#[derive(Debug)]
pub struct ScramClient;

impl ScramClient {
    /// The client-first message for `user` and the state waiting for the server-first.
    /// `client_nonce` must be fresh for every exchange: use [`nonce`].
    ///
    /// Fails if the user name is empty or contains NUL, if the nonce is not printable ASCII
    /// without commas, or if the message would exceed [`MESSAGE_BYTES_MAX`].
    #[allow(clippy::new_ret_no_self)] // starts an exchange: returns its first state and message
    pub fn new(
        user: &str,
        password: &str,
        client_nonce: &str,
    ) -> Result<(ScramClientStarted, Vec<u8>), ScramError> {
        if user.is_empty() || user.contains('\0') {
            return Err(malformed("user name: empty, or contains NUL"));
        }
        if !is_printable(client_nonce) {
            return Err(malformed(
                "client nonce: empty, or not printable ASCII without commas",
            ));
        }
        let client_first_bare = format!("n={},r={}", encode_saslname(user), client_nonce);
        let client_first = format!("{GS2_HEADER}{client_first_bare}");
        if client_first.len() > MESSAGE_BYTES_MAX {
            return Err(ScramError::TooLong);
        }
        let started = ScramClientStarted {
            client_first_bare,
            client_nonce: client_nonce.to_owned(),
            password: zeroize::Zeroizing::new(password.to_owned()),
        };
        Ok((started, client_first.into_bytes()))
    }
}

/// The client after sending client-first, waiting for the server-first message.
pub struct ScramClientStarted {
    client_first_bare: String,
    client_nonce: String,
    /// Wiped from memory when the state is dropped.
    password: zeroize::Zeroizing<String>,
}

impl ScramClientStarted {
    /// Reads the server-first message and returns the state waiting for the server-final
    /// message with the client-final message to send. This is where the client runs PBKDF2.
    ///
    /// Refuses a nonce that does not start with the client's or adds nothing to it
    /// ([`ScramError::NonceMismatch`]), an iteration count outside
    /// [`ITERATIONS_MIN`]`..=`[`ITERATIONS_MAX`] ([`ScramError::IterationsOutOfRange`]), an empty
    /// salt, a mandatory extension and malformed input.
    pub fn step(self, server_first: &[u8]) -> Result<(ScramClientFinal, Vec<u8>), ScramError> {
        let message = message_text(server_first, "server-first: not UTF-8")?;
        let mut parts = message.split(',');
        let first = parts.next().unwrap_or("");
        if first.starts_with("m=") {
            return Err(malformed(
                "server-first: mandatory extensions (m=) are not supported",
            ));
        }
        let nonce = attribute(
            Some(first),
            "r=",
            "server-first: the nonce (r=) must come first",
        )?;
        if !is_printable(nonce) {
            return Err(malformed(
                "server-first: the nonce must be printable ASCII without commas",
            ));
        }
        match nonce.strip_prefix(self.client_nonce.as_str()) {
            Some(server_part) if !server_part.is_empty() => {}
            _ => return Err(ScramError::NonceMismatch),
        }
        let salt = attribute(
            parts.next(),
            "s=",
            "server-first: the salt (s=) must follow the nonce",
        )?;
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("server-first: the salt is not base64"))?;
        if salt.is_empty() {
            return Err(malformed("server-first: the salt is empty"));
        }
        let iterations = attribute(
            parts.next(),
            "i=",
            "server-first: the iteration count (i=) must follow the salt",
        )?;
        let iterations = parse_iterations(
            iterations,
            "server-first: the iteration count is not a positive decimal number",
        )?;
        extension_names(parts, "server-first: an extension must be name=value")?;

        let without_proof = format!("c={},r={}", B64.encode(GS2_HEADER), nonce);
        let keys = derive_keys(&self.password, &salt, iterations);
        let auth_message = format!("{},{},{}", self.client_first_bare, message, without_proof);
        let client_signature = hmac_sha256(&keys.stored_key, auth_message.as_bytes());
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = hmac_sha256(&keys.server_key, auth_message.as_bytes());
        let client_final = format!("{},p={}", without_proof, B64.encode(proof));
        if client_final.len() > MESSAGE_BYTES_MAX {
            return Err(ScramError::TooLong);
        }
        Ok((
            ScramClientFinal { server_signature },
            client_final.into_bytes(),
        ))
    }
}

impl fmt::Debug for ScramClientStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientStarted")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// The client after sending client-final, waiting for the server-final message. Dropping it
/// without [`ScramClientFinal::finish`] skips checking that the server knows the credential.
#[must_use = "finish() checks the server's signature"]
pub struct ScramClientFinal {
    server_signature: Key32,
}

impl ScramClientFinal {
    /// Reads the server-final message: `Ok` if the server's signature verifies (compared in
    /// constant time), [`ScramError::ServerSignature`] if not, [`ScramError::ServerError`] for
    /// `e=<value>`.
    pub fn finish(self, server_final: &[u8]) -> Result<(), ScramError> {
        let message = message_text(server_final, "server-final: not UTF-8")?;
        let mut parts = message.split(',');
        let first = parts.next().unwrap_or("");
        extension_names(parts, "server-final: an extension must be name=value")?;
        if let Some(error) = first.strip_prefix("e=") {
            if error.is_empty() || error.contains('\0') {
                return Err(malformed(
                    "server-final: the error (e=) is empty or contains NUL",
                ));
            }
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let signature = first
            .strip_prefix("v=")
            .ok_or_else(|| malformed("server-final: expected a verifier (v=) or an error (e=)"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| malformed("server-final: the verifier is not base64"))?;
        if signature.is_empty() {
            return Err(malformed("server-final: the verifier is empty"));
        }
        // Slices of different lengths compare unequal (subtle returns early on the length only).
        let verified =
            ConstantTimeEq::ct_eq(signature.as_slice(), self.server_signature.as_slice());
        if !bool::from(verified) {
            return Err(ScramError::ServerSignature);
        }
        Ok(())
    }
}

impl fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientFinal").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar helpers

/// The message as text, after the length bound.
fn message_text<'a>(message: &'a [u8], what: &'static str) -> Result<&'a str, ScramError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(ScramError::TooLong);
    }
    std::str::from_utf8(message).map_err(|_| malformed(what))
}

/// The value of an attribute that must be `part` and start with `prefix` (`"r="`, ...).
fn attribute<'a>(
    part: Option<&'a str>,
    prefix: &str,
    what: &'static str,
) -> Result<&'a str, ScramError> {
    part.and_then(|part| part.strip_prefix(prefix))
        .ok_or_else(|| malformed(what))
}

/// RFC 5802's `printable` (a nonce): `%x21-2B / %x2D-7E`, at least one.
fn is_printable(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
}

/// Checks optional trailing extensions (`name=value`, the name ASCII letters as Kafka allows,
/// the value non-empty without NUL) and returns their names.
fn extension_names<'a>(
    parts: impl Iterator<Item = &'a str>,
    what: &'static str,
) -> Result<Vec<&'a str>, ScramError> {
    let mut names = Vec::new();
    for part in parts {
        let (name, value) = part.split_once('=').ok_or_else(|| malformed(what))?;
        let name_ok = !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphabetic());
        if !name_ok || value.is_empty() || value.contains('\0') {
            return Err(malformed(what));
        }
        names.push(name);
    }
    Ok(names)
}

/// A user name for the wire: `=` as `=3D`, `,` as `=2C` (in that order).
fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A user name from the wire: non-empty, no NUL, `=` only in `=2C` and `=3D`.
fn decode_saslname(name: &str, what: &'static str) -> Result<String, ScramError> {
    if name.is_empty() {
        return Err(malformed(what));
    }
    let mut decoded = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => decoded.push(','),
                (Some('3'), Some('D')) => decoded.push('='),
                _ => return Err(malformed(what)),
            },
            '\0' | ',' => return Err(malformed(what)),
            c => decoded.push(c),
        }
    }
    Ok(decoded)
}

/// RFC 5802's `posit-number` (no sign, no leading zero), then the range check.
fn parse_iterations(text: &str, what: &'static str) -> Result<NonZeroU32, ScramError> {
    let well_formed = text
        .as_bytes()
        .first()
        .is_some_and(|first| (b'1'..=b'9').contains(first))
        && text.bytes().all(|byte| byte.is_ascii_digit());
    if !well_formed {
        return Err(malformed(what));
    }
    // Only overflow can fail here: all digits.
    checked_iterations(text.parse::<u64>().unwrap_or(u64::MAX))
}

fn checked_iterations(iterations: u64) -> Result<NonZeroU32, ScramError> {
    let out_of_range = ScramError::IterationsOutOfRange { iterations };
    if !(u64::from(ITERATIONS_MIN)..=u64::from(ITERATIONS_MAX)).contains(&iterations) {
        return Err(out_of_range);
    }
    u32::try_from(iterations)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or(out_of_range)
}

fn key_from_base64(text: &str, what: &'static str) -> Result<Key32, ScramError> {
    let bytes = B64.decode(text).map_err(|_| malformed(what))?;
    Key32::try_from(bytes.as_slice()).map_err(|_| malformed(what))
}

// ---------------------------------------------------------------------------------------------
// Cryptography (RFC 5802 section 3)

struct DerivedKeys {
    client_key: Key32,
    stored_key: Key32,
    server_key: Key32,
}

/// SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key");
/// StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
fn derive_keys(password: &str, salt: &[u8], iterations: NonZeroU32) -> DerivedKeys {
    let mut salted_password = [0u8; KEY_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted_password,
    );
    keys_of_salted(&salted_password)
}

/// The keys SCRAM derives from a SaltedPassword (RFC 5802 §3).
fn keys_of_salted(salted_password: &Key32) -> DerivedKeys {
    let client_key = hmac_sha256(salted_password, b"Client Key");
    DerivedKeys {
        client_key,
        stored_key: sha256(&client_key),
        server_key: hmac_sha256(salted_password, b"Server Key"),
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Key32 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    to_key(hmac::sign(&key, data).as_ref())
}

fn sha256(data: &[u8]) -> Key32 {
    to_key(digest::digest(&digest::SHA256, data).as_ref())
}

/// The first [`KEY_BYTES`] of a SHA-256 output (which is exactly that long).
fn to_key(bytes: &[u8]) -> Key32 {
    let mut key = [0u8; KEY_BYTES];
    for (out, byte) in key.iter_mut().zip(bytes) {
        *out = *byte;
    }
    key
}

fn xor(a: &Key32, b: &Key32) -> Key32 {
    let mut result = [0u8; KEY_BYTES];
    for ((out, x), y) in result.iter_mut().zip(a).zip(b) {
        *out = x ^ y;
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use base64::Engine as _;
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"the unknown-user secret of these tests, 32+ bytes";

    // RFC 7677 section 3.
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    // StoredKey and ServerKey for "pencil" with that salt (computed independently).
    const RFC_STORED_KEY: &str = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
    const RFC_SERVER_KEY: &str = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    fn rfc_credential() -> &'static Credential {
        static CREDENTIAL: OnceLock<Credential> = OnceLock::new();
        CREDENTIAL.get_or_init(|| {
            Credential::with_salt("pencil", &B64.decode(RFC_SALT).unwrap(), 4096).unwrap()
        })
    }

    fn rfc_lookup(user: &str) -> Option<Credential> {
        (user == "user").then(|| rfc_credential().clone())
    }

    /// The RFC's server after the RFC's client-first.
    fn rfc_server() -> ScramServerWaiting {
        let (waiting, server_first) = ScramServer::start(
            RFC_CLIENT_FIRST.as_bytes(),
            rfc_lookup,
            RFC_SERVER_NONCE,
            SECRET,
        )
        .unwrap();
        assert_eq!(text(server_first), RFC_SERVER_FIRST);
        waiting
    }

    fn rfc_client() -> ScramClientStarted {
        let (started, client_first) = ScramClient::new("user", "pencil", RFC_CLIENT_NONCE).unwrap();
        assert_eq!(text(client_first), RFC_CLIENT_FIRST);
        started
    }

    /// The RFC's client after the RFC's server-first.
    fn rfc_client_final() -> ScramClientFinal {
        let (client_final, message) = rfc_client().step(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(text(message), RFC_CLIENT_FINAL);
        client_final
    }

    /// The server-first the RFC's store answers to `client_first`.
    fn start_rfc(client_first: &str) -> Result<String, ScramError> {
        ScramServer::start(
            client_first.as_bytes(),
            rfc_lookup,
            RFC_SERVER_NONCE,
            SECRET,
        )
        .map(|(_, server_first)| text(server_first))
    }

    /// A client-final computed outside the state machine, for any gs2 header.
    fn client_final_for(
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
        password: &str,
    ) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(fields[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let keys = derive_keys(password, &salt, NonZeroU32::new(iterations).unwrap());
        let without_proof = format!("c={},r={}", B64.encode(gs2_header), nonce);
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let proof = xor(
            &keys.client_key,
            &hmac_sha256(&keys.stored_key, auth_message.as_bytes()),
        );
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn is_malformed<T: fmt::Debug>(result: &Result<T, ScramError>) -> bool {
        matches!(result, Err(ScramError::Malformed { .. }))
    }

    #[test]
    fn rfc7677_credential() {
        let credential = rfc_credential();
        assert_eq!(B64.encode(credential.stored_key), RFC_STORED_KEY);
        assert_eq!(B64.encode(credential.server_key), RFC_SERVER_KEY);
        assert_eq!(
            credential.to_text(),
            format!("scram-sha256$4096${RFC_SALT}${RFC_STORED_KEY}${RFC_SERVER_KEY}")
        );
    }

    #[test]
    fn rfc7677_client_side() {
        rfc_client_final()
            .finish(RFC_SERVER_FINAL.as_bytes())
            .unwrap();
    }

    #[test]
    fn rfc7677_server_side() {
        let (user, server_final) = rfc_server().finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert_eq!(text(server_final), RFC_SERVER_FINAL);
    }

    #[test]
    fn the_test_helper_matches_the_rfc() {
        assert_eq!(
            client_final_for(
                "n,,",
                "n=user,r=rOprNGfwEbeRWgbNEkqO",
                RFC_SERVER_FIRST,
                "pencil"
            ),
            RFC_CLIENT_FINAL
        );
    }

    #[test]
    fn round_trip_with_random_nonces_and_an_escaped_user() {
        let password = "correct horse battery staple";
        let user = "al,i=ce";
        let credential = Credential::new(password, ITERATIONS_MIN).unwrap();
        let (started, client_first) = ScramClient::new(user, password, &nonce().unwrap()).unwrap();
        assert!(text(client_first.clone()).starts_with("n,,n=al=2Ci=3Dce,r="));
        let mut looked_up = None;
        let (waiting, server_first) = ScramServer::start(
            &client_first,
            |name| {
                looked_up = Some(name.to_owned());
                (name == user).then(|| credential.clone())
            },
            &nonce().unwrap(),
            SECRET,
        )
        .unwrap();
        assert_eq!(looked_up.as_deref(), Some(user));
        assert_eq!(waiting.user(), user);
        let (client_final, message) = started.step(&server_first).unwrap();
        let (authenticated, server_final) = waiting.finish(&message).unwrap();
        assert_eq!(authenticated, user);
        client_final.finish(&server_final).unwrap();
    }

    /// An exchange for `user` with `password` against a store holding only "alice": the
    /// server-first message and the server's verdict on the client-final.
    fn attempt(
        user: &str,
        password: &str,
        store: &Credential,
    ) -> (String, Result<(String, Vec<u8>), ScramError>) {
        let (started, client_first) = ScramClient::new(user, password, &nonce().unwrap()).unwrap();
        let (waiting, server_first) = ScramServer::start(
            &client_first,
            |name| (name == "alice").then(|| store.clone()),
            &nonce().unwrap(),
            SECRET,
        )
        .unwrap();
        let (_, client_final) = started.step(&server_first).unwrap();
        (text(server_first), waiting.finish(&client_final))
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let store = Credential::new("right password", ITERATIONS_DEFAULT).unwrap();
        let (right_first, right) = attempt("alice", "right password", &store);
        let (wrong_first, wrong) = attempt("alice", "wrong password", &store);
        let (unknown_first, unknown) = attempt("mallory", "any password", &store);
        assert_eq!(right.unwrap().0, "alice");
        assert_eq!(wrong, Err(ScramError::UnknownUserOrBadPassword));
        assert_eq!(unknown, Err(ScramError::UnknownUserOrBadPassword));
        for server_first in [&right_first, &wrong_first, &unknown_first] {
            let fields: Vec<&str> = server_first.split(',').collect();
            assert_eq!(fields.len(), 3, "{server_first}");
            assert!(fields[0].starts_with("r="), "{server_first}");
            let salt = B64.decode(fields[1].strip_prefix("s=").unwrap()).unwrap();
            assert_eq!(salt.len(), SALT_BYTES, "{server_first}");
            assert_eq!(
                fields[2],
                format!("i={ITERATIONS_DEFAULT}"),
                "{server_first}"
            );
        }
    }

    /// The server-first an unknown `user` gets with `secret`.
    fn server_first_unknown(user: &str, secret: &[u8]) -> String {
        let client_first = format!("n,,n={user},r=abc");
        let (_, message) =
            ScramServer::start(client_first.as_bytes(), |_| None, "def", secret).unwrap();
        text(message)
    }

    #[test]
    fn an_unknown_users_salt_is_fixed_per_name_and_secret() {
        assert_eq!(
            server_first_unknown("mallory", SECRET),
            server_first_unknown("mallory", SECRET)
        );
        assert_ne!(
            server_first_unknown("mallory", SECRET),
            server_first_unknown("trent", SECRET)
        );
        assert_ne!(
            server_first_unknown("mallory", SECRET),
            server_first_unknown("mallory", b"another secret")
        );
    }

    #[test]
    fn tampered_client_final_fails() {
        let flipped_proof = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(
            rfc_server().finish(flipped_proof.as_bytes()),
            Err(ScramError::UnknownUserOrBadPassword)
        );
        let other_nonce = RFC_CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1");
        assert_eq!(
            rfc_server().finish(other_nonce.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        let client_nonce_only = RFC_CLIENT_FINAL.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "");
        assert_eq!(
            rfc_server().finish(client_nonce_only.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        let y_binding = RFC_CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert_eq!(
            rfc_server().finish(y_binding.as_bytes()),
            Err(ScramError::ChannelBinding)
        );
        let no_binding = RFC_CLIENT_FINAL.replace("c=biws,", "");
        assert!(is_malformed(&rfc_server().finish(no_binding.as_bytes())));
        let swapped = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,\
                       p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert!(is_malformed(&rfc_server().finish(swapped.as_bytes())));
        let short_proof =
            RFC_CLIENT_FINAL.replace("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "AAAA");
        assert!(is_malformed(&rfc_server().finish(short_proof.as_bytes())));
        let no_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert!(is_malformed(&rfc_server().finish(no_proof.as_bytes())));
        let after_proof = format!("{RFC_CLIENT_FINAL},x=y");
        assert!(is_malformed(&rfc_server().finish(after_proof.as_bytes())));
        let with_extension = RFC_CLIENT_FINAL.replace(",p=", ",x=y,p=");
        // A well-formed extension is ignored but is part of the signed message: the proof fails.
        assert_eq!(
            rfc_server().finish(with_extension.as_bytes()),
            Err(ScramError::UnknownUserOrBadPassword)
        );
        assert_eq!(
            rfc_server().finish("a".repeat(MESSAGE_BYTES_MAX + 1).as_bytes()),
            Err(ScramError::TooLong)
        );
        assert!(is_malformed(&rfc_server().finish(&[0xff, 0xfe])));
    }

    #[test]
    fn client_first_rules() {
        assert!(start_rfc("n,a=user,n=user,r=abc").is_ok());
        assert!(start_rfc("n,,n=user,r=abc,x=y").is_ok());
        assert!(start_rfc("y,,n=user,r=abc").is_ok());
        assert_eq!(
            start_rfc("n,a=admin,n=user,r=abc"),
            Err(ScramError::AuthzidNotUser)
        );
        assert_eq!(
            start_rfc("p=tls-server-end-point,,n=user,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        for malformed in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "n,b=user,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,r=abc,n=user",
            "n,,n=user",
            "n,,n=,r=abc",
            "n,,n=us=er,r=abc",
            "n,,n=us=2c,r=abc",
            "n,,n=us\0er,r=abc",
            "n,,n=user,r=",
            "n,,n=user,r=a b",
            "n,,n=user,r=abc,",
            "n,,n=user,r=abc,x",
            "n,,n=user,r=abc,1=y",
            "n,,n=user,r=abc,tokenauth=true",
        ] {
            assert!(is_malformed(&start_rfc(malformed)), "{malformed:?}");
        }
        let long = format!("n,,n=user,r={}", "a".repeat(MESSAGE_BYTES_MAX));
        assert_eq!(start_rfc(&long), Err(ScramError::TooLong));
        assert!(is_malformed(&ScramServer::start(
            RFC_CLIENT_FIRST.as_bytes(),
            rfc_lookup,
            "bad,nonce",
            SECRET
        )));
    }

    #[test]
    fn escaped_names_and_authzids_are_unescaped() {
        let mut seen = None;
        let result = ScramServer::start(
            b"n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=abc",
            |name| {
                seen = Some(name.to_owned());
                None
            },
            "def",
            SECRET,
        );
        assert!(result.is_ok());
        assert_eq!(seen.as_deref(), Some("a,b=c"));
    }

    #[test]
    fn the_channel_binding_echo_must_be_the_gs2_header_sent() {
        for gs2_header in ["n,a=user,", "y,,"] {
            let client_first = format!("{gs2_header}n=user,r=abc");
            let (waiting, server_first) =
                ScramServer::start(client_first.as_bytes(), rfc_lookup, "def", SECRET).unwrap();
            let server_first = text(server_first);
            let good = client_final_for(gs2_header, "n=user,r=abc", &server_first, "pencil");
            assert_eq!(waiting.finish(good.as_bytes()).unwrap().0, "user");

            let (waiting, _) =
                ScramServer::start(client_first.as_bytes(), rfc_lookup, "def", SECRET).unwrap();
            let bad = client_final_for("n,,", "n=user,r=abc", &server_first, "pencil");
            assert_eq!(
                waiting.finish(bad.as_bytes()),
                Err(ScramError::ChannelBinding)
            );
        }
    }

    /// The RFC's client's verdict on `server_first`.
    fn step_rfc(server_first: &str) -> Result<(), ScramError> {
        rfc_client().step(server_first.as_bytes()).map(|_| ())
    }

    #[test]
    fn client_refuses_bad_server_first() {
        assert_eq!(
            step_rfc(&RFC_SERVER_FIRST.replace("r=rOpr", "r=xOpr")),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            step_rfc("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            step_rfc(&RFC_SERVER_FIRST.replace("i=4096", "i=4095")),
            Err(ScramError::IterationsOutOfRange { iterations: 4095 })
        );
        assert_eq!(
            step_rfc(&RFC_SERVER_FIRST.replace("i=4096", "i=1000001")),
            Err(ScramError::IterationsOutOfRange {
                iterations: 1_000_001
            })
        );
        assert_eq!(
            step_rfc(&RFC_SERVER_FIRST.replace("i=4096", "i=99999999999999999999999")),
            Err(ScramError::IterationsOutOfRange {
                iterations: u64::MAX
            })
        );
        for malformed in [
            RFC_SERVER_FIRST.replace("i=4096", "i=04096"),
            RFC_SERVER_FIRST.replace("i=4096", "i=+4096"),
            RFC_SERVER_FIRST.replace("i=4096", "i="),
            RFC_SERVER_FIRST.replace(",i=4096", ""),
            RFC_SERVER_FIRST.replace("s=W22ZaJ0SNY7soEsUEjb6gQ==", "s="),
            RFC_SERVER_FIRST.replace("s=W22ZaJ0SNY7soEsUEjb6gQ==", "s=!!!!"),
            format!("m=x,{RFC_SERVER_FIRST}"),
            format!("{RFC_SERVER_FIRST},"),
            "e=other-error".to_owned(),
        ] {
            assert!(is_malformed(&step_rfc(&malformed)), "{malformed:?}");
        }
        // A well-formed extension is ignored.
        assert!(step_rfc(&format!("{RFC_SERVER_FIRST},x=y")).is_ok());
        assert_eq!(
            step_rfc(&"r".repeat(MESSAGE_BYTES_MAX + 1)),
            Err(ScramError::TooLong)
        );
    }

    #[test]
    fn client_refuses_bad_server_final() {
        assert_eq!(
            rfc_client_final().finish(RFC_SERVER_FINAL.replace("v=6rri", "v=6rrj").as_bytes()),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            rfc_client_final().finish(b"v=AAAA"),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            rfc_client_final().finish(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".to_owned()))
        );
        for malformed in ["", "e=", "v=", "v=!!", "x=y", "v=6rri,"] {
            assert!(
                is_malformed(&rfc_client_final().finish(malformed.as_bytes())),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn client_new_refuses_bad_input() {
        assert!(is_malformed(&ScramClient::new("", "pw", "abc")));
        assert!(is_malformed(&ScramClient::new("a\0b", "pw", "abc")));
        assert!(is_malformed(&ScramClient::new("user", "pw", "")));
        assert!(is_malformed(&ScramClient::new("user", "pw", "a,b")));
        assert!(is_malformed(&ScramClient::new("user", "pw", "a b")));
        assert_eq!(
            ScramClient::new(&"u".repeat(MESSAGE_BYTES_MAX), "pw", "abc").map(|_| ()),
            Err(ScramError::TooLong)
        );
    }

    #[test]
    fn nonces_are_printable_and_fresh() {
        let a = nonce().unwrap();
        let b = nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert!(is_printable(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn credential_bounds() {
        assert_eq!(
            Credential::new("pw", ITERATIONS_MIN - 1),
            Err(ScramError::IterationsOutOfRange { iterations: 4095 })
        );
        assert_eq!(
            Credential::new("pw", ITERATIONS_MAX + 1),
            Err(ScramError::IterationsOutOfRange {
                iterations: 1_000_001
            })
        );
        assert!(is_malformed(&Credential::with_salt(
            "pw",
            &[],
            ITERATIONS_MIN
        )));
        let a = Credential::new("pw", ITERATIONS_MIN).unwrap();
        let b = Credential::new("pw", ITERATIONS_MIN).unwrap();
        assert_eq!(a.salt.len(), SALT_BYTES);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(!format!("{a:?}").contains(&B64.encode(a.stored_key)));
    }

    #[test]
    fn credential_text_round_trip() {
        let credential = rfc_credential().clone();
        assert_eq!(
            Credential::parse(&credential.to_text()),
            Ok(credential.clone())
        );
        assert_eq!(
            format!(" {}\n", credential.to_text()).parse::<Credential>(),
            Ok(credential.clone())
        );

        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct User {
            name: String,
            credential: Credential,
        }
        let user = User {
            name: "user".to_owned(),
            credential,
        };
        let toml_text = toml::to_string(&user).unwrap();
        assert!(
            toml_text.contains("credential = \"scram-sha256$4096$"),
            "{toml_text}"
        );
        assert_eq!(toml::from_str::<User>(&toml_text).unwrap(), user);
        let bad =
            toml::from_str::<User>("name = \"a\"\ncredential = \"scram-sha256$1$AA==$x$y\"\n");
        assert!(bad.unwrap_err().to_string().contains("iteration count"));
    }

    /// `text` with its `index`th `$`-separated field replaced by `value`.
    fn replace_field(text: &str, index: usize, value: &str) -> String {
        let mut fields: Vec<&str> = text.split('$').collect();
        fields[index] = value;
        fields.join("$")
    }

    #[test]
    fn a_stored_key_checks_passwords_and_reads_both_forms() {
        let credential = Credential::new("pencil", ITERATIONS_MIN).expect("credential");
        let stored = credential.stored();
        assert!(stored.verifies("pencil"));
        assert!(!stored.verifies("pen"));
        let text = stored.to_text();
        assert!(text.starts_with("scram-sha256-stored$"), "{text}");
        let server_key = B64.encode(credential.server_key);
        assert!(
            !text.contains(&server_key),
            "no server key in the stored form"
        );
        assert_eq!(StoredKey::parse(&text), Ok(stored.clone()));
        assert_eq!(StoredKey::parse(&credential.to_text()), Ok(stored));
        assert!(StoredKey::parse("scram-sha256-stored$4096$$AAAA").is_err());
        assert!(StoredKey::parse("scram-sha256-stored$5$c2FsdA$AAAA").is_err());
    }

    #[test]
    fn credential_parse_errors() {
        let good = rfc_credential().to_text();
        let fields: Vec<&str> = good.split('$').collect();
        let with = |index: usize, value: &str| replace_field(&good, index, value);
        for malformed in [
            String::new(),
            "scram-sha256".to_owned(),
            fields[..4].join("$"),
            format!("{good}$extra"),
            with(0, "scram-sha1"),
            with(1, "many"),
            with(1, "04096"),
            with(1, ""),
            with(2, ""),
            with(2, "not base64!"),
            with(3, "AAAA"),
            with(3, "not base64!"),
            with(4, B64.encode([0u8; 33]).as_str()),
        ] {
            assert!(
                is_malformed(&Credential::parse(&malformed)),
                "{malformed:?}"
            );
        }
        assert_eq!(
            Credential::parse(&with(1, "4095")),
            Err(ScramError::IterationsOutOfRange { iterations: 4095 })
        );
        assert_eq!(
            Credential::parse(&with(1, "1000001")),
            Err(ScramError::IterationsOutOfRange {
                iterations: 1_000_001
            })
        );
    }

    /// `message` with the byte at `index` replaced.
    fn mutate(message: &str, index: prop::sample::Index, byte: u8) -> Vec<u8> {
        let mut bytes = message.as_bytes().to_vec();
        let at = index.index(bytes.len());
        bytes[at] = byte;
        bytes
    }

    proptest! {
        #[test]
        fn server_start_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = ScramServer::start(&bytes, rfc_lookup, RFC_SERVER_NONCE, SECRET);
        }

        #[test]
        fn server_start_never_panics_on_scram_like_text(message in "[a-zA-Z0-9=,+/ .\\x00]{0,120}") {
            let _ = ScramServer::start(message.as_bytes(), rfc_lookup, RFC_SERVER_NONCE, SECRET);
        }

        #[test]
        fn server_start_never_panics_on_a_mutated_client_first(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let message = mutate("n,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO,x=y", index, byte);
            let _ = ScramServer::start(&message, rfc_lookup, RFC_SERVER_NONCE, SECRET);
        }

        #[test]
        fn server_finish_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = rfc_server().finish(&bytes);
        }

        #[test]
        fn server_finish_never_panics_on_a_mutated_client_final(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let _ = rfc_server().finish(&mutate(RFC_CLIENT_FINAL, index, byte));
        }

        #[test]
        fn client_new_never_panics(user in any::<String>(), password in any::<String>(), client_nonce in any::<String>()) {
            let _ = ScramClient::new(&user, &password, &client_nonce);
        }

        #[test]
        fn client_step_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = rfc_client().step(&bytes);
        }

        #[test]
        fn credential_parse_never_panics(text in any::<String>()) {
            let _ = Credential::parse(&text);
        }
    }

    proptest! {
        // Each case runs PBKDF2 (4096 to 9999 iterations: a one-byte change keeps four digits).
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn client_step_never_panics_on_a_mutated_server_first(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let _ = rfc_client().step(&mutate(RFC_SERVER_FIRST, index, byte));
        }

        #[test]
        fn client_finish_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = rfc_client_final().finish(&bytes);
        }

        #[test]
        fn client_finish_never_panics_on_a_mutated_server_final(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let _ = rfc_client_final().finish(&mutate(RFC_SERVER_FINAL, index, byte));
        }
    }
}
