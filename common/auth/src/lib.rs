//! herald-auth: who is asking and what they may do, as pure logic shared by the broker, the
//! registry, the CLI and the SDK.
//!
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802 / RFC 7677) as sans-IO client and server state
//!   machines over the exchange's messages, and the salted credentials a server stores.
//! - [`acl`]: Kafka-shaped access control — principals, resource patterns (literal and
//!   prefixed), operations with their implications, allow and deny with deny winning, super
//!   users and default deny — and the decision function.
//! - [`source`]: which source a peer address counts as, for limits per source.
//! - [`local`]: the credential a local `herald up` generates for its first super user.
//! - [`users`]: the users file (`users.meta`) the broker and the registry both read;
//!   [`stored_acls`]: the stored ACLs (`acls.meta`), likewise; [`watch`]: reading such a file
//!   again when it changes.
//!
//! Apart from [`users`], [`stored_acls`] and [`watch`], which read and write their files, nothing here opens a file or a socket
//! or reads a clock (the users watch takes `now`); randomness (nonces, salts) comes from the
//! caller or from `ring`'s system generator where a function says so.

pub mod acl;
pub mod local;
pub mod scram;
pub mod source;
pub mod stored_acls;
pub mod users;
pub mod watch;
