//! Who is asking and what they may do, for the QUIC server: authentication at connection start
//! (SCRAM-SHA-256 over the `Authenticate` API, or the principal a client certificate maps to),
//! then every request checked against the ACLs before the broker sees it.
//!
//! What lives where:
//! - `mod.rs` (here): [`SecurityConfig`], [`Security`] (users, ACLs, the unknown-user secret,
//!   the failure limiter) and the per-connection [`Session`] with its decision cache.
//! - `access`: what each request needs (pure table).
//! - `acls`: the persisted ACL store.
//! - `limiter`: failed authentications per source address.
//! - `principals`: client-certificate subjects to principals (mapping rules).
//!
//! With authentication off (`--insecure-no-auth`), every connection is `User:ANONYMOUS` and
//! every request is allowed; SCRAM exchanges still verify passwords.

pub mod access;
pub mod acls;
pub mod limiter;
pub mod principals;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use herald_auth::acl::{Operation, Principal, ResourceType};
use herald_auth::local::{LocalCredentials, LOCAL_ADMIN_USER};
use herald_auth::scram::{self, Credential, ScramServer, ScramServerWaiting};
use herald_wire::groups::GroupResponse;
use herald_wire::limits::{ACLS_LISTED_MAX, USERS_LISTED_MAX};
use herald_wire::messages::ErrorBody;
use herald_wire::security::{SecurityRequest, SecurityResponse};
use herald_wire::{ErrorCode, Request, Response};

use crate::metrics::BrokerMetrics;
use crate::producer_ids::ProducerOwner;
use access::{Access, Listing};
use acls::{AclStore, AclStoreError};
use herald_auth::users::{User, Users, UsersError, UsersWatch};
use limiter::FailureLimiter;
pub use principals::{PrincipalRule, PrincipalRules};

/// The secret that keys the fake salts unknown users get (see `herald_auth::scram`).
const SECRET_FILE: &str = "auth.secret";
const SECRET_BYTES: usize = 32;
/// How long a failed authentication waits before it is answered: a password guesser gets a
/// few tries per second per connection at most.
pub const AUTHENTICATION_FAILURE_DELAY: Duration = Duration::from_millis(500);
/// How long an exchange may wait for its final message.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay unauthenticated (when authentication is required) before it
/// is closed: an idle, unauthenticated connection holds a slot for nothing.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame an unauthenticated connection may send, in bytes: an authentication step
/// and its envelope (anything bigger is refused before it is buffered).
pub const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 64 * 1024;
/// Failed authentications one connection may make before it is closed.
pub const FAILURES_PER_CONNECTION_MAX: u32 = 3;
/// Decisions one connection remembers (cleared when full, or when the ACLs change).
pub const DECISIONS_CACHED_MAX: usize = 4096;
/// Producer ids one connection remembers as its principal's (cleared when full).
pub const PRODUCER_IDS_CACHED_MAX: usize = 64;
/// The principal of every connection when authentication is off.
pub const ANONYMOUS: &str = "ANONYMOUS";
/// The QUIC application close code for a connection closed after too many failed
/// authentications.
pub const AUTHENTICATION_CLOSE_CODE: u32 = 2;

/// How the broker decides who is asking and what they may do.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Whether every connection must authenticate (the default). Off: everyone is
    /// `User:ANONYMOUS` and may do everything (throwaway setups only).
    pub authentication: bool,
    /// Principals that may do everything (default `User:admin`).
    pub super_users: BTreeSet<Principal>,
    /// A TOML file of ACL entries added at start (`[[acl]]` tables).
    pub acl_seed: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates are accepted; `None` asks for none.
    pub client_ca: Option<PathBuf>,
    /// How a client certificate's subject becomes a principal.
    pub principal_rules: PrincipalRules,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            authentication: true,
            super_users: Principal::user(LOCAL_ADMIN_USER).into_iter().collect(),
            acl_seed: None,
            client_ca: None,
            principal_rules: PrincipalRules::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Acls(#[from] AclStoreError),
    #[error("cannot prepare {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("the system random generator failed")]
    Random,
}

/// A cluster's users by name, with their credentials.
type ClusterUsers = BTreeMap<String, User>;

/// The cluster's users as a users file holds them; a credential that does not parse is left
/// out (the cluster checked each when it was put).
fn parse_cluster_users(
    users: &BTreeMap<String, herald_broker_core::cluster::ClusterUser>,
) -> ClusterUsers {
    users
        .iter()
        .filter_map(|(name, user)| {
            let credential = Credential::parse(&user.credential).ok()?;
            Some((
                name.clone(),
                User {
                    credential,
                    registry: user.registry.clone(),
                },
            ))
        })
        .collect()
}

/// The directory under a cluster node's data directory with the copy of the cluster's users
/// and ACL entries a registry reads (see [`Security::mirror_dir`]).
pub const CLUSTER_MIRROR_DIR: &str = "cluster";

/// The broker's authentication and authorization.
pub struct Security {
    required: bool,
    users: Mutex<UsersWatch>,
    /// The users file (`herald user` edits it; so does `AlterUser` on a single broker).
    users_path: PathBuf,
    /// A cluster node's users as the cluster keeps them (`None` on a single broker), with
    /// the metadata version they are from: a name there authenticates with the cluster's
    /// credential; the users file adds names the cluster does not have (the node's own
    /// generated admin).
    cluster_users: RwLock<Option<(i64, Arc<ClusterUsers>)>>,
    /// The metadata version the registry's copy of the cluster's users and ACL entries was
    /// last written from (see [`Security::mirror_cluster`]), held while it is written.
    mirrored: Mutex<i64>,
    acls: AclStore,
    secret: [u8; SECRET_BYTES],
    limiter: Mutex<FailureLimiter>,
    rules: PrincipalRules,
    anonymous: Arc<Principal>,
}

impl Security {
    /// Reads users and ACLs from `data_dir`. With authentication required and no user at all,
    /// creates [`LOCAL_ADMIN_USER`] with a random password and writes it to
    /// `data_dir/admin.credentials` (readable by its owner only), where the CLI and the SDK on
    /// this machine find it.
    pub fn open(data_dir: &Path, config: &SecurityConfig) -> Result<Self, SecurityError> {
        let mut users = Users::open(data_dir)?;
        if config.authentication && users.names().next().is_none() {
            let credentials = LocalCredentials::generate().map_err(|_| SecurityError::Random)?;
            let path = users.add_local_admin(&credentials, data_dir)?;
            tracing::warn!(credentials = %path.display(), "no users yet: created user '{}', a super user; its password is in the credentials file (readable by this account only)", credentials.user);
        }
        let acls = AclStore::open(
            data_dir,
            config.super_users.clone(),
            config.acl_seed.as_deref(),
        )?;
        Ok(Self {
            required: config.authentication,
            // Looked at on every authentication: a user added or removed applies at once.
            users: Mutex::new(UsersWatch::open(&Users::path(data_dir), Duration::ZERO)?),
            users_path: Users::path(data_dir),
            cluster_users: RwLock::new(None),
            mirrored: Mutex::new(0),
            acls,
            secret: secret(data_dir)?,
            limiter: Mutex::new(FailureLimiter::default()),
            rules: config.principal_rules.clone(),
            anonymous: Arc::new(Principal::user(ANONYMOUS).map_err(|_| SecurityError::Random)?),
        })
    }

    /// Whether connections must authenticate.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The ACL store.
    pub fn acls(&self) -> &AclStore {
        &self.acls
    }

    /// The state of a new connection from `peer`; `subject` is its client certificate's
    /// subject, if it presented one (it is then authenticated as the principal the rules map
    /// the subject to).
    pub fn session(&self, peer: IpAddr, subject: Option<&str>) -> Session {
        let peer = limiter::source(peer);
        let session = Session {
            peer,
            principal: OnceLock::new(),
            exchange: Mutex::new(Exchange::default()),
            decisions: Mutex::new(Decisions::default()),
            producer_ids: Mutex::new(HashSet::new()),
        };
        if !self.required {
            let _ = session.principal.set(self.anonymous.clone());
        } else if let Some(subject) = subject {
            match self.rules.principal(subject) {
                Some(principal) => {
                    tracing::debug!(%peer, %principal, "authenticated by client certificate");
                    let _ = session.principal.set(Arc::new(principal));
                }
                None => {
                    tracing::warn!(%peer, subject, "no principal for the client certificate's subject; the connection must authenticate otherwise")
                }
            }
        }
        session
    }

    /// Whether `session` may send `request` (not an `Authenticate`, which
    /// [`Security::authenticate`] answers): `Err` is the answer refusing it.
    pub fn admit(
        &self,
        session: &Session,
        request: &Request,
        metrics: &BrokerMetrics,
    ) -> Result<(), Response> {
        let access = access::required(request);
        if access == Access::Open {
            return Ok(());
        }
        let Some(principal) = session.principal.get() else {
            metrics.not_authenticated.increment(1);
            return Err(Response::error(
                ErrorCode::NotAuthenticated,
                format!(
                    "{} needs an authenticated connection: authenticate first (SCRAM-SHA-256 or a client certificate)",
                    request.api().name()
                ),
            ));
        };
        if !self.required {
            return Ok(());
        }
        let Access::All(checks) = access else {
            return Ok(());
        };
        for check in checks {
            if !self.allowed(
                session,
                principal,
                check.resource_type,
                check.name,
                check.operation,
            ) {
                metrics.not_authorized.increment(1);
                let decision = self.acls.with(|authorizer| {
                    authorizer.authorize(
                        principal,
                        check.operation,
                        check.resource_type,
                        check.name,
                    )
                });
                let reason = decision.reason().map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "{principal} may not {} {} {}",
                        check.operation, check.resource_type, check.name
                    )
                });
                tracing::debug!(peer = %session.peer, %reason, "request refused");
                return Err(Response::error(ErrorCode::NotAuthorized, reason));
            }
        }
        Ok(())
    }

    /// Whether `principal` may perform `operation` on the resource, from the session's cache
    /// while the ACLs have not changed.
    fn allowed(
        &self,
        session: &Session,
        principal: &Principal,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        let generation = self.acls.generation();
        let mut decisions = session.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if decisions.generation != generation {
            decisions.clear(generation);
        }
        if let Some(allowed) = decisions.get(resource_type, operation, name) {
            return allowed;
        }
        let allowed = self
            .acls
            .with(|authorizer| authorizer.is_allowed(principal, operation, resource_type, name));
        decisions.insert(resource_type, operation, name, allowed);
        allowed
    }

    /// Whether the session's principal may write under idempotent producer id `id`: an id
    /// handed to another principal, or never handed out, may not be used (it would fence that
    /// producer or write into its sequence); `owner` looks up whom an id was handed to (one
    /// handed out without authentication, or whose owner was forgotten, may be used by any
    /// writer). Ids checked once per connection.
    pub fn may_use_producer_id(
        &self,
        session: &Session,
        id: i64,
        owner: impl FnOnce(i64) -> ProducerOwner,
        metrics: &BrokerMetrics,
    ) -> Result<(), Response> {
        if !self.required || id < 0 {
            return Ok(());
        }
        let mut known = session
            .producer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.contains(&id) {
            return Ok(());
        }
        let Some(principal) = session.principal.get() else {
            return Err(Response::error(
                ErrorCode::NotAuthenticated,
                "produce needs an authenticated connection",
            ));
        };
        match owner(id) {
            ProducerOwner::Principal(owner) if owner != principal.name() => {
                metrics.not_authorized.increment(1);
                Err(Response::error(
                    ErrorCode::NotAuthorized,
                    format!("{principal} may not write as producer id {id}: it was handed to User:{owner}"),
                ))
            }
            ProducerOwner::NeverIssued => {
                metrics.not_authorized.increment(1);
                Err(Response::error(
                    ErrorCode::NotAuthorized,
                    format!("{principal} may not write as producer id {id}: no such id was handed out (ask for one with InitProducer)"),
                ))
            }
            ProducerOwner::NotYetKnown => Err(Response::Error(herald_wire::messages::ErrorBody {
                code: ErrorCode::Throttled,
                retry_after_ms: 100,
                message: format!("producer id {id} is not known to this node yet (it lags the cluster's controller by a moment); retry"),
            })),
            _ => {
                if known.len() >= PRODUCER_IDS_CACHED_MAX {
                    known.clear();
                }
                known.insert(id);
                Ok(())
            }
        }
    }

    /// The principal of `session`, if it has one.
    pub fn principal<'a>(&self, session: &'a Session) -> Option<&'a Principal> {
        session.principal.get().map(|p| p.as_ref())
    }

    /// Keeps in a list answer only what the session's principal may describe.
    pub fn filter(&self, session: &Session, listing: Listing, response: Response) -> Response {
        let Some(principal) = session.principal.get() else {
            return response;
        };
        if !self.required {
            return response;
        }
        match (listing, response) {
            (Listing::Topics, Response::Topics(topics)) => Response::Topics(
                topics
                    .into_iter()
                    .filter(|topic| {
                        self.allowed(
                            session,
                            principal,
                            ResourceType::Topic,
                            &topic.name,
                            Operation::Describe,
                        )
                    })
                    .collect(),
            ),
            (Listing::Groups, Response::Group(GroupResponse::Groups(groups))) => {
                Response::Group(GroupResponse::Groups(
                    groups
                        .into_iter()
                        .filter(|group| {
                            self.allowed(
                                session,
                                principal,
                                ResourceType::Group,
                                group,
                                Operation::Describe,
                            )
                        })
                        .collect(),
                ))
            }
            (_, other) => other,
        }
    }

    /// Keeps in a group description only the partitions of topics the session's principal may
    /// describe (the group's members may read topics it may not see).
    pub fn filter_description(&self, session: &Session, response: Response) -> Response {
        let Some(principal) = session.principal.get() else {
            return response;
        };
        if !self.required {
            return response;
        }
        match response {
            Response::Group(GroupResponse::Description(mut description)) => {
                let visible = |topic: &str| {
                    self.allowed(
                        session,
                        principal,
                        ResourceType::Topic,
                        topic,
                        Operation::Describe,
                    )
                };
                description
                    .partitions
                    .retain(|lag| visible(&lag.partition.topic));
                for member in &mut description.members {
                    member.partitions.retain(|tp| visible(&tp.topic));
                }
                Response::Group(GroupResponse::Description(description))
            }
            other => other,
        }
    }

    /// One step of an authentication exchange on `session`. A failure's answer is to be sent
    /// after [`AUTHENTICATION_FAILURE_DELAY`]; `close` says the connection has failed too often
    /// (then close it at once, without the delay).
    ///
    /// The connection's exchange stays locked for the whole step: two steps racing on two
    /// streams of one connection are taken one after the other, never interleaved.
    pub fn authenticate(
        &self,
        session: &Session,
        mechanism: &str,
        message: &[u8],
        now: Instant,
        metrics: &BrokerMetrics,
    ) -> Step {
        let peer = session.peer;
        if let Err(wait) = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(peer, None, now)
        {
            metrics.authentication_failures.increment(1);
            return Step {
                response: Response::Error(ErrorBody {
                    code: ErrorCode::AuthenticationFailed,
                    retry_after_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
                    message: format!(
                        "too many failed authentications from {peer}; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                }),
                failed: true,
                close: true,
            };
        }
        // Read before the exchange is locked: a reload reads a file.
        let users = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current(now)
            .0;
        let mut exchange = session.exchange.lock().unwrap_or_else(|p| p.into_inner());
        if exchange.failures >= FAILURES_PER_CONNECTION_MAX {
            return Step {
                response: Response::error(
                    ErrorCode::AuthenticationFailed,
                    "too many failed authentications on this connection",
                ),
                failed: true,
                close: true,
            };
        }
        let failed = |exchange: &mut Exchange, user: Option<&str>, reason: String, log: &str| {
            metrics.authentication_failures.increment(1);
            self.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(peer, user, now);
            exchange.waiting = None;
            exchange.failures += 1;
            tracing::warn!(%peer, failures = exchange.failures, "authentication failed: {log}");
            Step {
                response: Response::error(ErrorCode::AuthenticationFailed, reason),
                failed: true,
                close: exchange.failures >= FAILURES_PER_CONNECTION_MAX,
            }
        };
        if session.principal.get().is_some() && self.required {
            return Step::answer(Response::error(
                ErrorCode::InvalidRequest,
                "this connection has already authenticated; open a new connection to authenticate as someone else",
            ));
        }
        if mechanism != scram::MECHANISM {
            return failed(
                &mut exchange,
                None,
                format!(
                    "unsupported mechanism '{}'; this broker speaks {}",
                    mechanism.escape_debug(),
                    scram::MECHANISM
                ),
                "unsupported mechanism",
            );
        }
        // An exchange left waiting too long is over: its credential may since have changed.
        let waiting = exchange
            .waiting
            .take()
            .filter(|(_, _, started)| now.saturating_duration_since(*started) < EXCHANGE_TIMEOUT);
        match waiting {
            None => {
                let nonce = match scram::nonce() {
                    Ok(nonce) => nonce,
                    Err(e) => {
                        return Step::answer(Response::error(ErrorCode::Internal, e.to_string()))
                    }
                };
                let mut used = None;
                let started = ScramServer::start(
                    message,
                    |name| {
                        used = self.credential(&users, name);
                        used.clone()
                    },
                    &nonce,
                    &self.secret,
                );
                match started {
                    Ok((waiting, server_first)) => {
                        // The name is known now: has this source used up its tries for it?
                        let limited = self
                            .limiter
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .check(peer, Some(waiting.user()), now);
                        if let Err(wait) = limited {
                            metrics.authentication_failures.increment(1);
                            return Step {
                                response: Response::Error(ErrorBody {
                                    code: ErrorCode::AuthenticationFailed,
                                    retry_after_ms: wait.as_millis().min(u128::from(u32::MAX))
                                        as u32,
                                    message: format!(
                                        "too many failed authentications for this user from {peer}; try again in {} s",
                                        wait.as_secs().max(1)
                                    ),
                                }),
                                failed: true,
                                close: true,
                            };
                        }
                        exchange.waiting = Some((waiting, used, now));
                        Step::answer(Response::Security(SecurityResponse::Authenticated {
                            message: server_first,
                            principal: None,
                        }))
                    }
                    Err(error) => {
                        failed(&mut exchange, None, error.to_string(), &error.to_string())
                    }
                }
            }
            Some((waiting, used, _)) => {
                let user = waiting.user().to_owned();
                // The credential must still be the one the exchange started with (no
                // `herald user passwd` or `remove` in between).
                let current = self.credential(&users, &user);
                if used.is_some() && current != used {
                    return failed(
                        &mut exchange,
                        Some(&user),
                        "the user's credential changed during the exchange; authenticate again"
                            .to_owned(),
                        "credential changed during the exchange",
                    );
                }
                match waiting.finish(message) {
                    Ok((name, server_final)) => match Principal::user(name) {
                        Ok(principal) => {
                            let principal = Arc::new(principal);
                            if self.required && session.principal.set(principal.clone()).is_err() {
                                return Step::answer(Response::error(
                                    ErrorCode::InvalidRequest,
                                    "this connection has already authenticated",
                                ));
                            }
                            metrics.authentication_successes.increment(1);
                            tracing::info!(%peer, %principal, "authenticated");
                            // With authentication off the connection stays anonymous: say so.
                            let principal = session.principal.get().cloned().unwrap_or(principal);
                            Step::answer(Response::Security(SecurityResponse::Authenticated {
                                message: server_final,
                                principal: Some(principal.as_ref().clone()),
                            }))
                        }
                        Err(error) => failed(
                            &mut exchange,
                            Some(&user),
                            error.to_string(),
                            &error.to_string(),
                        ),
                    },
                    Err(error) => {
                        // The claimed name may be a mistyped password: debug level only.
                        tracing::debug!(%peer, user = %user.escape_debug(), "authentication failed for this name");
                        failed(
                            &mut exchange,
                            Some(&user),
                            error.to_string(),
                            &error.to_string(),
                        )
                    }
                }
            }
        }
    }

    /// Answers an ACL administration request (already admitted). A listing or removal that
    /// matches more than one answer can carry ([`ACLS_LISTED_MAX`]) is refused, changing
    /// nothing.
    pub fn administer(&self, request: SecurityRequest) -> Response {
        let too_many = |count: usize| {
            Response::error(
                ErrorCode::TooLarge,
                format!("{count} ACL entries match, more than one answer lists ({ACLS_LISTED_MAX}); narrow the filter"),
            )
        };
        let stored = |e: AclStoreError| match e {
            AclStoreError::Invalid(e) => Response::error(ErrorCode::InvalidRequest, e.to_string()),
            other => Response::error(ErrorCode::Storage, other.to_string()),
        };
        match request {
            SecurityRequest::CreateAcls { entries } => match self.acls.add(entries) {
                Ok(added) => Response::Security(SecurityResponse::AclsCreated { added }),
                Err(e) => stored(e),
            },
            SecurityRequest::DescribeAcls { filter } => {
                let entries = self.acls.list(&filter);
                if entries.len() > ACLS_LISTED_MAX {
                    return too_many(entries.len());
                }
                Response::Security(SecurityResponse::Acls(entries))
            }
            SecurityRequest::DeleteAcls { filter } => {
                let matching = self.acls.list(&filter).len();
                if matching > ACLS_LISTED_MAX {
                    return too_many(matching);
                }
                match self.acls.remove(&filter) {
                    Ok(removed) => Response::Security(SecurityResponse::AclsDeleted(removed)),
                    Err(e) => stored(e),
                }
            }
            SecurityRequest::AlterUser {
                name,
                credential,
                registry,
            } => {
                let credential = match Credential::parse(&credential) {
                    Ok(credential) => credential,
                    Err(e) => {
                        return Response::error(
                            ErrorCode::InvalidRequest,
                            format!("the credential of user {name}: {e}"),
                        )
                    }
                };
                match Users::open_file(&self.users_path)
                    .and_then(|mut users| users.set_credential(&name, credential, &registry))
                {
                    Ok(_) => Response::Security(SecurityResponse::UserAltered),
                    Err(e) => users_refusal(e),
                }
            }
            SecurityRequest::DeleteUser { name } => {
                match Users::open_file(&self.users_path).and_then(|mut users| users.remove(&name)) {
                    Ok(()) => Response::Security(SecurityResponse::UserDeleted),
                    Err(e) => users_refusal(e),
                }
            }
            SecurityRequest::ListUsers => {
                let names = self.user_names();
                if names.len() > USERS_LISTED_MAX {
                    return Response::error(
                        ErrorCode::TooLarge,
                        format!(
                            "{} users, more than one answer lists ({USERS_LISTED_MAX})",
                            names.len()
                        ),
                    );
                }
                Response::Security(SecurityResponse::Users(names))
            }
            SecurityRequest::Authenticate { .. } => Response::error(
                ErrorCode::InvalidRequest,
                "authentication is answered by the connection, not as administration",
            ),
        }
    }

    /// `name`'s credential: the cluster's if it has the user, else the users file's.
    fn credential(&self, file: &Users, name: &str) -> Option<Credential> {
        let cluster = self
            .cluster_users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|(_, users)| users.get(name).map(|user| user.credential.clone()));
        cluster.or_else(|| file.credential(name).cloned())
    }

    /// Every user name that authenticates here: the cluster's and the users file's.
    fn user_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current(Instant::now())
            .0
            .names()
            .map(str::to_owned)
            .collect();
        if let Some((_, users)) = &*self.cluster_users.read().unwrap_or_else(|p| p.into_inner()) {
            names.extend(users.keys().cloned());
        }
        names.into_iter().collect()
    }

    /// Takes the cluster's users (credential text and registry access by name) as of
    /// metadata version `version`; an older version than the one taken changes nothing (a
    /// late reader cannot bring back a removed user). A credential that does not parse is
    /// left out (the cluster checked each when it was put). Whether they changed.
    pub fn follow_users(
        &self,
        users: &BTreeMap<String, herald_broker_core::cluster::ClusterUser>,
        version: i64,
    ) -> bool {
        let mut current = self
            .cluster_users
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(seen, _)| *seen >= version) {
            return false;
        }
        let parsed = parse_cluster_users(users);
        let changed = current.as_ref().is_none_or(|(_, old)| **old != parsed);
        *current = Some((version, Arc::new(parsed)));
        changed
    }

    /// Where a cluster node keeps a copy of the cluster's users and ACL entries, in the
    /// files a registry reads (`herald registry serve --users <data-dir>/cluster/users.meta`
    /// reads the users with their registry roles, and the SUBJECT ACLs beside them): the
    /// cluster's own copy is its controller's log, which a registry cannot read.
    pub fn mirror_dir(&self) -> PathBuf {
        self.users_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(CLUSTER_MIRROR_DIR)
    }

    /// Brings the registry's copy of the cluster's users and ACL entries (see
    /// [`Security::mirror_dir`]) to `image`, unless it was written from that version or a
    /// later one already (two followers may read images out of order). Files already
    /// holding what they should are not rewritten; a failed write is tried again with the
    /// next image (the version moves on only once both files are written). An image that
    /// has folded nothing yet (version 0) writes nothing: it would empty the copy.
    pub fn mirror_cluster(&self, image: &herald_broker_core::cluster::ClusterImage) {
        let version = image.next_offset();
        let mut mirrored = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
        if version <= *mirrored {
            return;
        }
        let dir = self.mirror_dir();
        let users = parse_cluster_users(image.users());
        let path = dir.join(herald_auth::users::FILE);
        if let Err(error) = Users::open_file(&path).and_then(|mut file| file.replace_all(users)) {
            tracing::error!(%error, path = %path.display(), "the registry's copy of the cluster's users could not be written; tried again at the next change");
            return;
        }
        let entries: Vec<_> = image.acls().iter().cloned().collect();
        let stored = herald_auth::stored_acls::read(&herald_auth::stored_acls::path(&dir));
        if !stored.is_ok_and(|stored| stored == entries) {
            if let Err(error) = herald_auth::stored_acls::write(&dir, &entries) {
                tracing::error!(%error, dir = %dir.display(), "the registry's copy of the cluster's ACL entries could not be written; tried again at the next change");
                return;
            }
        }
        *mirrored = version;
    }

    /// Called before topic `name` is deleted: its literal ALLOW entries go first, so that a
    /// topic created again under the name never inherits them (if the deletion then fails, the
    /// topic is left without them: closed, not open). `Err` is the answer refusing the
    /// deletion when they cannot be removed.
    pub fn deleting_topic(&self, name: &str) -> Result<(), Response> {
        match self.acls.remove_topic(name) {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::info!(
                        topic = name,
                        removed = removed.len(),
                        "ACL grants of the topic being deleted removed"
                    );
                }
                Ok(())
            }
            Err(error) => Err(Response::error(
                ErrorCode::Storage,
                format!("cannot remove the topic's ACL grants, so it is not deleted: {error}"),
            )),
        }
    }
}

/// A users-file change refused or failed, as an answer.
fn users_refusal(error: UsersError) -> Response {
    let code = match &error {
        UsersError::Write { .. } | UsersError::Read { .. } | UsersError::Stored(_) => {
            ErrorCode::Storage
        }
        _ => ErrorCode::InvalidRequest,
    };
    Response::error(code, error.to_string())
}

/// The answer to one authentication step.
#[derive(Debug)]
pub struct Step {
    pub response: Response,
    /// Answer after [`AUTHENTICATION_FAILURE_DELAY`].
    pub failed: bool,
    /// Close the connection once answered.
    pub close: bool,
}

impl Step {
    fn answer(response: Response) -> Self {
        Self {
            response,
            failed: false,
            close: false,
        }
    }
}

/// One connection's authentication state and decisions.
pub struct Session {
    peer: IpAddr,
    /// Set once, when the connection authenticates (or at once: certificate, auth off).
    principal: OnceLock<Arc<Principal>>,
    exchange: Mutex<Exchange>,
    decisions: Mutex<Decisions>,
    /// Producer ids this connection's principal may write under.
    producer_ids: Mutex<HashSet<i64>>,
}

impl Session {
    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.get().map(|p| p.as_ref())
    }
}

#[derive(Default)]
struct Exchange {
    /// The exchange waiting for its final message, the credential it started with (`None`:
    /// an unknown user) and when it started.
    waiting: Option<(ScramServerWaiting, Option<Credential>, Instant)>,
    failures: u32,
}

/// Decisions made for one connection under one generation of the ACLs.
#[derive(Default)]
struct Decisions {
    generation: u64,
    len: usize,
    by_kind: HashMap<(ResourceType, Operation), HashMap<String, bool>>,
}

impl Decisions {
    fn clear(&mut self, generation: u64) {
        self.generation = generation;
        self.len = 0;
        self.by_kind.clear();
    }

    fn get(&self, resource_type: ResourceType, operation: Operation, name: &str) -> Option<bool> {
        self.by_kind
            .get(&(resource_type, operation))?
            .get(name)
            .copied()
    }

    fn insert(
        &mut self,
        resource_type: ResourceType,
        operation: Operation,
        name: &str,
        allowed: bool,
    ) {
        if self.len >= DECISIONS_CACHED_MAX {
            let generation = self.generation;
            self.clear(generation);
        }
        self.len += 1;
        self.by_kind
            .entry((resource_type, operation))
            .or_default()
            .insert(name.to_owned(), allowed);
    }
}

/// The secret in `data_dir/auth.secret`, created (0600) on first use.
fn secret(data_dir: &Path) -> Result<[u8; SECRET_BYTES], SecurityError> {
    let path = data_dir.join(SECRET_FILE);
    let io = |e: std::io::Error| SecurityError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            <[u8; SECRET_BYTES]>::try_from(bytes.as_slice()).map_err(|_| SecurityError::Io {
                path: path.display().to_string(),
                reason: format!("expected {SECRET_BYTES} bytes, found {}", bytes.len()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; SECRET_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| SecurityError::Random)?;
            std::fs::create_dir_all(data_dir).map_err(io)?;
            crate::fs::write_private(&path, &bytes).map_err(io)?;
            Ok(bytes)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use herald_auth::local::LOCAL_CREDENTIALS_FILE;
    use herald_auth::scram::{nonce, ScramClient, MECHANISM};
    use herald_metrics::Metrics;
    use proptest::prelude::*;

    use super::*;

    fn security(dir: &Path) -> Security {
        Security::open(dir, &SecurityConfig::default()).expect("open")
    }

    fn local() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn first_start_generates_an_admin_whose_credentials_authenticate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let security = security(dir.path());
        let metrics = BrokerMetrics::new(Metrics::new());
        let text = std::fs::read_to_string(dir.path().join(LOCAL_CREDENTIALS_FILE)).expect("file");
        let credentials = LocalCredentials::parse(&text).expect("parse");
        let session = security.session(local(), None);
        let (client, first) = ScramClient::new(
            &credentials.user,
            &credentials.password,
            &nonce().expect("nonce"),
        )
        .expect("client");
        let step = security.authenticate(&session, MECHANISM, &first, Instant::now(), &metrics);
        let Response::Security(SecurityResponse::Authenticated {
            message,
            principal: None,
        }) = step.response
        else {
            panic!("{:?}", step.response);
        };
        let (client, last) = client.step(&message).expect("step");
        let step = security.authenticate(&session, MECHANISM, &last, Instant::now(), &metrics);
        let Response::Security(SecurityResponse::Authenticated {
            message,
            principal: Some(principal),
        }) = step.response
        else {
            panic!("{:?}", step.response);
        };
        client
            .finish(&message)
            .expect("the server proved it knows the key");
        assert_eq!(principal.to_string(), "User:admin");
        assert_eq!(session.principal(), Some(&principal));
        // Reopening keeps the users (no second admin, no new file).
        drop(security);
        let again = super::tests::security(dir.path());
        drop(again);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCAL_CREDENTIALS_FILE)).expect("file"),
            text
        );
    }

    #[test]
    fn an_exchange_fails_if_the_password_changes_before_it_finishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let security = security(dir.path());
        let metrics = BrokerMetrics::new(Metrics::new());
        Users::open(dir.path())
            .expect("users")
            .add("alice", "first password", None)
            .expect("add");
        let session = security.session(local(), None);
        let (client, first) =
            ScramClient::new("alice", "first password", &nonce().expect("nonce")).expect("client");
        let step = security.authenticate(&session, MECHANISM, &first, Instant::now(), &metrics);
        let Response::Security(SecurityResponse::Authenticated { message, .. }) = step.response
        else {
            panic!("{:?}", step.response);
        };
        let (_, last) = client.step(&message).expect("step");
        // Changed meanwhile: same size, maybe the same second (the watch also compares inodes).
        Users::open(dir.path())
            .expect("users")
            .passwd("alice", "other password")
            .expect("passwd");
        let step = security.authenticate(&session, MECHANISM, &last, Instant::now(), &metrics);
        assert!(step.failed, "{:?}", step.response);
        assert!(session.principal().is_none());
    }

    #[test]
    fn with_authentication_off_everyone_is_anonymous_and_no_admin_is_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SecurityConfig {
            authentication: false,
            ..SecurityConfig::default()
        };
        let security = Security::open(dir.path(), &config).expect("open");
        assert!(!dir.path().join(LOCAL_CREDENTIALS_FILE).exists());
        let session = security.session(local(), None);
        assert_eq!(
            session.principal().map(ToString::to_string).as_deref(),
            Some("User:ANONYMOUS")
        );
        let metrics = BrokerMetrics::new(Metrics::new());
        assert!(security
            .admit(
                &session,
                &Request::DeleteTopic { name: "t".into() },
                &metrics
            )
            .is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Malformed or forged authentication messages, at either step, fail cleanly: no
        /// panic, an `AuthenticationFailed` answer, and no principal.
        #[test]
        fn malformed_authentication_messages_never_panic_nor_authenticate(
            first in proptest::collection::vec(any::<u8>(), 0..300),
            last in proptest::collection::vec(any::<u8>(), 0..300),
            user in "[a-z]{1,8}",
            use_real_first in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let security = security(dir.path());
            let metrics = BrokerMetrics::new(Metrics::new());
            let session = security.session(local(), None);
            let first = if use_real_first {
                ScramClient::new(&user, "password", "abcdefgh").expect("client").1
            } else {
                first
            };
            let step = security.authenticate(&session, MECHANISM, &first, Instant::now(), &metrics);
            if !step.failed {
                let step = security.authenticate(&session, MECHANISM, &last, Instant::now(), &metrics);
                prop_assert!(step.failed);
                let refused = matches!(
                    step.response,
                    Response::Error(ErrorBody { code: ErrorCode::AuthenticationFailed, .. })
                );
                prop_assert!(refused, "{:?}", step.response);
            }
            prop_assert!(session.principal().is_none());
        }
    }
}
