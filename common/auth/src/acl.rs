//! Kafka-shaped access control lists, trimmed, as pure logic: the broker and the registry ask
//! an [`Authorizer`] whether a [`Principal`] may perform an [`Operation`] on a named resource
//! and get back a [`Decision`] that says why.
//!
//! # Model
//!
//! - A principal is `User:<name>`. `User:*` is a pattern that matches every user; it may appear
//!   in ACL entries but is never an identity (asking on its behalf is always denied, and it may
//!   not be a super user).
//! - Resources are topics, consumer groups, schema-registry subjects and the cluster (one
//!   resource, named [`CLUSTER_NAME`]).
//! - An [`AclEntry`] names a resource pattern: [`PatternType::Literal`] matches the name exactly
//!   (the literal name `*` matches every resource of the type, as in Kafka);
//!   [`PatternType::Prefixed`] matches every name that starts with it.
//! - Operations: Read, Write, Delete and Alter imply Describe for ALLOW entries; an entry for
//!   `All` matches every operation. A DENY applies to the operation it names only (a DENY of
//!   Write does not deny Describe), and a DENY of `All` denies everything.
//! - Asking for `All` itself (rather than a concrete operation) is matched by `All` entries only,
//!   as in Kafka.
//!
//! # Decision
//!
//! Super users may do everything. Otherwise any matching DENY wins over any matching ALLOW; a
//! matching ALLOW allows; nothing matching denies (default deny).
//!
//! # Cost
//!
//! [`Acls`] indexes entries by resource type, then pattern name (one ordered map for literal
//! names, one for prefixes), then principal name. A decision looks up the literal name, the
//! literal `*`, and walks the prefixed map from the longest candidate prefix downwards: each
//! step is one `O(log n)` range query that either lands on a matching prefix or shortens the
//! probe to the part the nearest stored key shares with the name, so the walk takes at most
//! `matches + 1` steps when stored prefixes do not interleave, and never more than the number of
//! stored prefixes or twice the name's length (names are at most [`RESOURCE_NAME_BYTES_MAX`]
//! bytes). Per matched pattern it reads the rules of the requesting principal and of `User:*` —
//! at most 14 each (one per operation and permission). A decision is therefore
//! `O((steps + 2) · log n + matching rules)`, independent of the entries for other resources and
//! other principals. Listing and removing by filter scan the entries (`O(n)`); adding and
//! removing one entry is `O(log n)`.
//!
//! # Seed file
//!
//! [`AclFile`] deserializes from whatever format the caller reads (the servers use TOML):
//!
//! ```toml
//! [[acl]]
//! principal = "User:alice"
//! resource_type = "topic"      # topic | group | cluster | subject
//! pattern_type = "prefixed"    # literal (the default) | prefixed
//! name = "orders."
//! operation = "write"          # read | write | create | delete | alter | describe | all
//! permission = "allow"         # allow | deny
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries an [`Acls`] set holds at most; adding a new entry beyond is an error.
pub const ACLS_MAX: usize = 100_000;
/// Super users an [`Authorizer`] accepts at most.
pub const SUPER_USERS_MAX: usize = 1_000;
/// Longest topic, group or subject name (or prefix) an entry may name, in bytes (Kafka's 249).
pub const RESOURCE_NAME_BYTES_MAX: usize = 249;
/// Longest principal name, in bytes (after `User:`).
pub const PRINCIPAL_NAME_BYTES_MAX: usize = 256;
/// The name of the cluster resource.
pub const CLUSTER_NAME: &str = "herald";
/// The literal name that matches every resource of a type, and the principal name that matches
/// every user.
pub const WILDCARD: &str = "*";

/// The principal type prefix (the only type: users).
const USER_PREFIX: &str = "User:";
/// Characters of offending input quoted in an error.
const ERROR_EXCERPT_CHARS: usize = 64;

/// Why a principal, entry, filter or seed could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("principal {0:?} is not of the form User:<name>")]
    PrincipalFormat(String),
    #[error("principal name is empty")]
    EmptyPrincipalName,
    #[error("principal name is {len} bytes, more than {max}")]
    PrincipalNameTooLong { len: usize, max: usize },
    #[error("principal name contains a control character")]
    PrincipalControlCharacter,
    #[error("User:* matches every user in an ACL entry; it is not an identity")]
    WildcardPrincipal,
    #[error("{resource_type} name is empty")]
    EmptyResourceName { resource_type: ResourceType },
    #[error("{resource_type} name is {len} bytes, more than {max}")]
    ResourceNameTooLong {
        resource_type: ResourceType,
        len: usize,
        max: usize,
    },
    #[error("{resource_type} name contains a control character")]
    ResourceNameControlCharacter { resource_type: ResourceType },
    #[error("the cluster resource is the literal name \"herald\" (or \"*\"), not {pattern_type} {name:?}")]
    ClusterResource {
        pattern_type: PatternType,
        name: String,
    },
    #[error("unknown {kind} {value:?}")]
    UnknownValue { kind: &'static str, value: String },
    #[error("the ACL set is full: {max} entries")]
    TooManyAcls { max: usize },
    #[error("{count} super users, more than {max}")]
    TooManySuperUsers { count: usize, max: usize },
}

/// At most `chars` characters of `text`, marked when cut.
fn excerpt(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// `text` as one of `values` by its snake_case name, ignoring ASCII case.
fn parse_keyword<T: Copy>(
    text: &str,
    kind: &'static str,
    values: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, AclError> {
    values
        .iter()
        .copied()
        .find(|value| name(*value).eq_ignore_ascii_case(text))
        .ok_or_else(|| AclError::UnknownValue {
            kind,
            value: excerpt(text, ERROR_EXCERPT_CHARS),
        })
}

/// Who is asking (`User:<name>`), or in an ACL entry the users it applies to (`User:*`: all).
///
/// Text form and serde form: `User:<name>`. The name is 1 to [`PRINCIPAL_NAME_BYTES_MAX`]
/// bytes without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    name: String,
}

impl Principal {
    /// The identity of the user `name` (not `*`: that is [`Principal::wildcard`]).
    pub fn user(name: impl Into<String>) -> Result<Self, AclError> {
        let name = name.into();
        if name == WILDCARD {
            return Err(AclError::WildcardPrincipal);
        }
        validate_principal_name(&name)?;
        Ok(Self { name })
    }

    /// `User:*`, which in an ACL entry matches every user.
    pub fn wildcard() -> Self {
        Self {
            name: WILDCARD.to_owned(),
        }
    }

    /// Whether this is `User:*`.
    pub fn is_wildcard(&self) -> bool {
        self.name == WILDCARD
    }

    /// The user name (after `User:`; `*` for the wildcard).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn validate_principal_name(name: &str) -> Result<(), AclError> {
    if name.is_empty() {
        return Err(AclError::EmptyPrincipalName);
    }
    if name.len() > PRINCIPAL_NAME_BYTES_MAX {
        return Err(AclError::PrincipalNameTooLong {
            len: name.len(),
            max: PRINCIPAL_NAME_BYTES_MAX,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(AclError::PrincipalControlCharacter);
    }
    Ok(())
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{USER_PREFIX}{}", self.name)
    }
}

impl FromStr for Principal {
    type Err = AclError;

    /// `User:<name>` or `User:*` (check [`Principal::is_wildcard`] where an identity is meant).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some(name) = text.strip_prefix(USER_PREFIX) else {
            return Err(AclError::PrincipalFormat(excerpt(
                text,
                ERROR_EXCERPT_CHARS,
            )));
        };
        if name == WILDCARD {
            return Ok(Self::wildcard());
        }
        Self::user(name)
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The kinds of resource an ACL entry protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    Subject,
}

impl ResourceType {
    /// Every resource type.
    pub const VALUES: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::Subject,
    ];

    /// The serde and text name (`topic`, `group`, `cluster`, `subject`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::Subject => "subject",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceType {
    type Err = AclError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_keyword(text, "resource type", &Self::VALUES, Self::as_str)
    }
}

/// How an entry's name matches resource names.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The name exactly; the literal name `*` matches every resource of the type.
    #[default]
    Literal,
    /// Every name that starts with the entry's name.
    Prefixed,
}

impl PatternType {
    /// Every pattern type.
    pub const VALUES: [PatternType; 2] = [PatternType::Literal, PatternType::Prefixed];

    /// The serde and text name (`literal`, `prefixed`).
    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Literal => "literal",
            PatternType::Prefixed => "prefixed",
        }
    }
}

impl fmt::Display for PatternType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PatternType {
    type Err = AclError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_keyword(text, "pattern type", &Self::VALUES, Self::as_str)
    }
}

/// What a principal wants to do. Displayed in capitals (`WRITE`), serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    /// In an entry: every operation.
    All,
}

impl Operation {
    /// Every operation.
    pub const VALUES: [Operation; 7] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::All,
    ];

    /// The serde and text name (`read`, ..., `all`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::All => "all",
        }
    }

    /// Whether allowing this operation also allows Describe (Kafka: Read, Write, Delete, Alter).
    pub fn implies_describe(self) -> bool {
        matches!(
            self,
            Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
        )
    }

    /// Whether an entry for this operation with `permission` applies to a request for
    /// `requested`: the same operation, `All`, or (ALLOW only) Describe implied.
    fn covers(self, permission: Permission, requested: Operation) -> bool {
        self == requested
            || self == Operation::All
            || (permission == Permission::Allow
                && requested == Operation::Describe
                && self.implies_describe())
    }

    fn label(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::All => "ALL",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Operation {
    type Err = AclError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_keyword(text, "operation", &Self::VALUES, Self::as_str)
    }
}

/// Whether an entry allows or denies. Displayed in capitals, serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

impl Permission {
    /// Both permissions.
    pub const VALUES: [Permission; 2] = [Permission::Allow, Permission::Deny];

    /// The serde and text name (`allow`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Allow => "ALLOW",
            Permission::Deny => "DENY",
        })
    }
}

impl FromStr for Permission {
    type Err = AclError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_keyword(text, "permission", &Self::VALUES, Self::as_str)
    }
}

/// One rule: `permission` for `principal` to perform `operation` on the resources of
/// `resource_type` that `name` matches under `pattern_type`.
///
/// The fields are public; [`Acls::add`] validates (see [`AclEntry::validate`]), and
/// deserializing validates too (unknown fields are rejected; `pattern_type` defaults to
/// `literal`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "AclEntryRaw")]
pub struct AclEntry {
    pub principal: Principal,
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclEntry {
    /// A validated entry.
    pub fn new(
        principal: Principal,
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: impl Into<String>,
        operation: Operation,
        permission: Permission,
    ) -> Result<Self, AclError> {
        let entry = Self {
            principal,
            resource_type,
            pattern_type,
            name: name.into(),
            operation,
            permission,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// The commonest entry: ALLOW `user` to perform `operation` on the resource of
    /// `resource_type` named exactly `name`.
    pub fn allow_literal(
        user: &str,
        resource_type: ResourceType,
        name: impl Into<String>,
        operation: Operation,
    ) -> Result<Self, AclError> {
        Self::new(
            Principal::user(user)?,
            resource_type,
            PatternType::Literal,
            name,
            operation,
            Permission::Allow,
        )
    }

    /// Checks the resource name: for topics, groups and subjects 1 to
    /// [`RESOURCE_NAME_BYTES_MAX`] bytes without control characters; for the cluster the
    /// literal [`CLUSTER_NAME`] or `*`. (The principal is valid by construction.)
    pub fn validate(&self) -> Result<(), AclError> {
        let resource_type = self.resource_type;
        let name = self.name.as_str();
        if resource_type == ResourceType::Cluster {
            if self.pattern_type != PatternType::Literal
                || (name != CLUSTER_NAME && name != WILDCARD)
            {
                return Err(AclError::ClusterResource {
                    pattern_type: self.pattern_type,
                    name: excerpt(name, ERROR_EXCERPT_CHARS),
                });
            }
            return Ok(());
        }
        if name.is_empty() {
            return Err(AclError::EmptyResourceName { resource_type });
        }
        if name.len() > RESOURCE_NAME_BYTES_MAX {
            return Err(AclError::ResourceNameTooLong {
                resource_type,
                len: name.len(),
                max: RESOURCE_NAME_BYTES_MAX,
            });
        }
        if name.chars().any(char::is_control) {
            return Err(AclError::ResourceNameControlCharacter { resource_type });
        }
        Ok(())
    }

    /// Whether this entry applies to `principal` performing `operation` on the resource
    /// `resource_type` `name` (whatever its permission).
    pub fn applies_to(
        &self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        (self.principal == *principal || self.principal.is_wildcard())
            && self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(self.name.as_str()),
            }
            && self.operation.covers(self.permission, operation)
    }
}

impl fmt::Display for AclEntry {
    /// `ALLOW User:alice WRITE topic prefixed:orders.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}:{}",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.pattern_type,
            self.name
        )
    }
}

/// The serde shape of [`AclEntry`] before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclEntryRaw {
    principal: Principal,
    resource_type: ResourceType,
    #[serde(default)]
    pattern_type: PatternType,
    name: String,
    operation: Operation,
    permission: Permission,
}

impl TryFrom<AclEntryRaw> for AclEntry {
    type Error = AclError;

    fn try_from(raw: AclEntryRaw) -> Result<Self, Self::Error> {
        AclEntry::new(
            raw.principal,
            raw.resource_type,
            raw.pattern_type,
            raw.name,
            raw.operation,
            raw.permission,
        )
    }
}

/// A seed file: `[[acl]]` tables, each an [`AclEntry`]. Parse it with the caller's own format
/// crate (e.g. `toml::from_str::<AclFile>`), then [`AclFile::into_acls`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFile {
    #[serde(default)]
    pub acl: Vec<AclEntry>,
}

impl AclFile {
    /// The entries as a set (duplicates collapse); more than [`ACLS_MAX`] distinct entries is
    /// an error.
    pub fn into_acls(self) -> Result<Acls, AclError> {
        Acls::from_entries(self.acl)
    }
}

/// Selects entries like Kafka's `AclBindingFilter`: every field that is set must equal the
/// entry's; unset fields match anything. [`AclFilter::default`] matches every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclFilter {
    pub principal: Option<Principal>,
    pub resource_type: Option<ResourceType>,
    pub pattern_type: Option<PatternType>,
    pub name: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter that matches every entry.
    pub fn any() -> Self {
        Self::default()
    }

    /// Whether `entry` has every field this filter sets.
    pub fn matches(&self, entry: &AclEntry) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| *principal == entry.principal)
            && self
                .resource_type
                .is_none_or(|resource_type| resource_type == entry.resource_type)
            && self
                .pattern_type
                .is_none_or(|pattern_type| pattern_type == entry.pattern_type)
            && self.name.as_ref().is_none_or(|name| *name == entry.name)
            && self
                .operation
                .is_none_or(|operation| operation == entry.operation)
            && self
                .permission
                .is_none_or(|permission| permission == entry.permission)
    }
}

/// The entries of one (resource type, pattern type, name, principal): at most one per
/// (operation, permission), so at most 14.
type Rules = Vec<Arc<AclEntry>>;
/// Rules by principal name (`*` for `User:*`).
type ByPrincipal = BTreeMap<String, Rules>;
/// Principals' rules by pattern name.
type PatternMap = BTreeMap<String, ByPrincipal>;

/// The entries of one resource type.
#[derive(Debug, Clone, Default)]
struct TypeIndex {
    literal: PatternMap,
    prefixed: PatternMap,
}

impl TypeIndex {
    fn patterns(&self, pattern_type: PatternType) -> &PatternMap {
        match pattern_type {
            PatternType::Literal => &self.literal,
            PatternType::Prefixed => &self.prefixed,
        }
    }

    fn patterns_mut(&mut self, pattern_type: PatternType) -> &mut PatternMap {
        match pattern_type {
            PatternType::Literal => &mut self.literal,
            PatternType::Prefixed => &mut self.prefixed,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &AclEntry> + '_ {
        self.literal
            .values()
            .chain(self.prefixed.values())
            .flat_map(|by_principal| by_principal.values())
            .flat_map(|rules| rules.iter())
            .map(|rule| &**rule)
    }
}

/// The stored patterns of a prefixed map that are prefixes of a name, longest first.
///
/// Walks down from the greatest key `<=` the probe: a key that is a prefix of the name is a
/// match, and the next candidates are below it; a key that is not shares some `l` bytes with
/// the name, and every prefix of the name longer than `l` would sort between that key and the
/// probe (where there is none), so the probe shrinks to the name's first `l` bytes (kept on a
/// character boundary: stored keys are strings, so a matching key ends on one).
struct PrefixMatches<'a> {
    map: &'a PatternMap,
    name: &'a str,
    /// The inclusive or exclusive upper end of the next range query; `None` when done.
    upper: Option<Bound<&'a str>>,
}

impl<'a> PrefixMatches<'a> {
    fn new(map: &'a PatternMap, name: &'a str) -> Self {
        Self {
            map,
            name,
            upper: Some(Bound::Included(name)),
        }
    }
}

impl<'a> Iterator for PrefixMatches<'a> {
    type Item = &'a ByPrincipal;

    fn next(&mut self) -> Option<Self::Item> {
        let map: &'a PatternMap = self.map;
        let name: &'a str = self.name;
        loop {
            let upper = self.upper?;
            let Some((key, by_principal)) =
                map.range::<str, _>((Bound::Unbounded, upper)).next_back()
            else {
                self.upper = None;
                return None;
            };
            if name.starts_with(key.as_str()) {
                self.upper = Some(Bound::Excluded(key.as_str()));
                return Some(by_principal);
            }
            let common = common_prefix_len(key, name);
            self.upper = match name.get(..common) {
                Some(shorter) if !shorter.is_empty() => Some(Bound::Included(shorter)),
                _ => None,
            };
        }
    }
}

/// The length in bytes of the longest common prefix of `a` and `b`, floored to a character
/// boundary of `b`.
fn common_prefix_len(a: &str, b: &str) -> usize {
    let mut len = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while len > 0 && !b.is_char_boundary(len) {
        len -= 1;
    }
    len
}

/// What the entries say about one request.
enum Verdict<'a> {
    Allow(&'a Arc<AclEntry>),
    Deny(&'a Arc<AclEntry>),
    NoMatch,
}

/// A set of ACL entries, at most [`ACLS_MAX`], indexed for decisions (see the module's
/// "Cost").
#[derive(Debug, Clone, Default)]
pub struct Acls {
    topic: TypeIndex,
    group: TypeIndex,
    cluster: TypeIndex,
    subject: TypeIndex,
    len: usize,
}

impl Acls {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of `entries` (duplicates collapse); an invalid entry, or more than [`ACLS_MAX`]
    /// distinct ones, is an error.
    pub fn from_entries<I: IntoIterator<Item = AclEntry>>(entries: I) -> Result<Self, AclError> {
        let mut acls = Self::new();
        for entry in entries {
            acls.add(entry)?;
        }
        Ok(acls)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn table(&self, resource_type: ResourceType) -> &TypeIndex {
        match resource_type {
            ResourceType::Topic => &self.topic,
            ResourceType::Group => &self.group,
            ResourceType::Cluster => &self.cluster,
            ResourceType::Subject => &self.subject,
        }
    }

    fn table_mut(&mut self, resource_type: ResourceType) -> &mut TypeIndex {
        match resource_type {
            ResourceType::Topic => &mut self.topic,
            ResourceType::Group => &mut self.group,
            ResourceType::Cluster => &mut self.cluster,
            ResourceType::Subject => &mut self.subject,
        }
    }

    /// Whether `entry` is held. `O(log n)`.
    pub fn contains(&self, entry: &AclEntry) -> bool {
        self.table(entry.resource_type)
            .patterns(entry.pattern_type)
            .get(entry.name.as_str())
            .and_then(|by_principal| by_principal.get(entry.principal.name()))
            .is_some_and(|rules| rules.iter().any(|rule| **rule == *entry))
    }

    /// Adds `entry` after validating it: `Ok(true)` if it is new, `Ok(false)` if it was
    /// already held (adding is idempotent, also when the set is full). A new entry beyond
    /// [`ACLS_MAX`] is [`AclError::TooManyAcls`]. `O(log n)`.
    pub fn add(&mut self, entry: AclEntry) -> Result<bool, AclError> {
        entry.validate()?;
        if self.contains(&entry) {
            return Ok(false);
        }
        if self.len >= ACLS_MAX {
            return Err(AclError::TooManyAcls { max: ACLS_MAX });
        }
        let principal = entry.principal.name().to_owned();
        self.table_mut(entry.resource_type)
            .patterns_mut(entry.pattern_type)
            .entry(entry.name.clone())
            .or_default()
            .entry(principal)
            .or_default()
            .push(Arc::new(entry));
        self.len = self.len.saturating_add(1);
        Ok(true)
    }

    /// Removes exactly `entry`; whether it was held. `O(log n)`.
    pub fn remove(&mut self, entry: &AclEntry) -> bool {
        let patterns = self
            .table_mut(entry.resource_type)
            .patterns_mut(entry.pattern_type);
        let name = entry.name.as_str();
        let principal = entry.principal.name();
        let Some(by_principal) = patterns.get_mut(name) else {
            return false;
        };
        let Some(rules) = by_principal.get_mut(principal) else {
            return false;
        };
        let before = rules.len();
        rules.retain(|rule| **rule != *entry);
        let removed = rules.len() != before;
        if rules.is_empty() {
            by_principal.remove(principal);
        }
        if by_principal.is_empty() {
            patterns.remove(name);
        }
        if removed {
            self.len = self.len.saturating_sub(1);
        }
        removed
    }

    /// Removes every entry `filter` matches and returns them (Kafka's DeleteAcls). `O(n)`.
    pub fn remove_matching(&mut self, filter: &AclFilter) -> Vec<AclEntry> {
        let matched = self.list(filter);
        for entry in &matched {
            self.remove(entry);
        }
        matched
    }

    /// The entries `filter` matches, ordered by resource type, pattern type, name, principal.
    /// `O(n)` (only the filter's resource type when it sets one).
    pub fn list(&self, filter: &AclFilter) -> Vec<AclEntry> {
        self.entries_of(filter.resource_type)
            .filter(|entry| filter.matches(entry))
            .cloned()
            .collect()
    }

    /// Every entry, in [`Acls::list`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = &AclEntry> + '_ {
        self.entries_of(None)
    }

    fn entries_of(&self, only: Option<ResourceType>) -> impl Iterator<Item = &AclEntry> + '_ {
        ResourceType::VALUES
            .into_iter()
            .filter(move |resource_type| only.is_none_or(|only| only == *resource_type))
            .flat_map(move |resource_type| self.table(resource_type).iter())
    }

    /// The first matching DENY (the decision), else the first matching ALLOW, for the
    /// principal's own entries and `User:*`'s, on the literal name, the literal `*` and the
    /// matching prefixes (longest first).
    fn verdict<'a>(
        &'a self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &'a str,
    ) -> Verdict<'a> {
        let table = self.table(resource_type);
        let exact = table.literal.get(name);
        let any = if name == WILDCARD {
            None
        } else {
            table.literal.get(WILDCARD)
        };
        let patterns = exact
            .into_iter()
            .chain(any)
            .chain(PrefixMatches::new(&table.prefixed, name));
        let mut allow = None;
        for by_principal in patterns {
            let own = by_principal.get(principal.name());
            let everyone = if principal.is_wildcard() {
                None
            } else {
                by_principal.get(WILDCARD)
            };
            for rule in own.into_iter().chain(everyone).flatten() {
                if !rule.operation.covers(rule.permission, operation) {
                    continue;
                }
                match rule.permission {
                    Permission::Deny => return Verdict::Deny(rule),
                    Permission::Allow => {
                        if allow.is_none() {
                            allow = Some(rule);
                        }
                    }
                }
            }
        }
        match allow {
            Some(rule) => Verdict::Allow(rule),
            None => Verdict::NoMatch,
        }
    }
}

/// [`Authorizer::check`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Allowed,
    /// A matching DENY entry refuses it.
    Denied,
    /// No entry allows it (default deny).
    NotAllowed,
}

/// Why a request was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedBy {
    /// The principal is a super user.
    SuperUser,
    /// This ALLOW entry matched (and no DENY did).
    Rule(Arc<AclEntry>),
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedBy {
    /// This DENY entry matched.
    Rule(Arc<AclEntry>),
    /// No entry allows it (default deny).
    NoAllowRule,
    /// The request was made as `User:*`, which is a pattern, not an identity.
    NotAnIdentity,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    Allowed {
        by: AllowedBy,
    },
    /// `reason` is for the client: "User:alice may not WRITE topic orders". `by` is for logs.
    Denied {
        reason: String,
        by: DeniedBy,
    },
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The text for the client when denied.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Denied { reason, .. } => Some(reason),
        }
    }

    /// The entry that decided: the ALLOW that allowed or the DENY that denied.
    pub fn rule(&self) -> Option<&AclEntry> {
        match self {
            Decision::Allowed {
                by: AllowedBy::Rule(rule),
            }
            | Decision::Denied {
                by: DeniedBy::Rule(rule),
                ..
            } => Some(&**rule),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed {
                by: AllowedBy::SuperUser,
            } => f.write_str("allowed: super user"),
            Decision::Allowed {
                by: AllowedBy::Rule(rule),
            } => write!(f, "allowed by {rule}"),
            Decision::Denied { reason, by } => match by {
                DeniedBy::Rule(rule) => write!(f, "{reason} (denied by {rule})"),
                DeniedBy::NoAllowRule => write!(f, "{reason} (no ACL allows it)"),
                DeniedBy::NotAnIdentity => write!(f, "{reason} (User:* is not an identity)"),
            },
        }
    }
}

/// "User:alice may not WRITE topic orders".
fn denial_reason(
    principal: &Principal,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> String {
    format!(
        "{principal} may not {operation} {resource_type} {}",
        excerpt(name, RESOURCE_NAME_BYTES_MAX)
    )
}

/// ACL entries plus super users: the decision function.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    acls: Acls,
    super_users: BTreeSet<Principal>,
}

impl Authorizer {
    /// An authorizer over `acls` in which `super_users` may do everything. More than
    /// [`SUPER_USERS_MAX`] super users, or `User:*` among them, is an error.
    pub fn new(acls: Acls, super_users: BTreeSet<Principal>) -> Result<Self, AclError> {
        if super_users.len() > SUPER_USERS_MAX {
            return Err(AclError::TooManySuperUsers {
                count: super_users.len(),
                max: SUPER_USERS_MAX,
            });
        }
        if super_users.iter().any(Principal::is_wildcard) {
            return Err(AclError::WildcardPrincipal);
        }
        Ok(Self { acls, super_users })
    }

    /// The entries.
    pub fn acls(&self) -> &Acls {
        &self.acls
    }

    /// The entries, to add or remove.
    pub fn acls_mut(&mut self) -> &mut Acls {
        &mut self.acls
    }

    /// The super users.
    pub fn super_users(&self) -> &BTreeSet<Principal> {
        &self.super_users
    }

    /// Whether `principal` is a super user.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.contains(principal)
    }

    /// May `principal` perform `operation` on the `resource_type` named `name` (for the cluster:
    /// [`CLUSTER_NAME`])? Super users may; else a matching DENY denies; else a matching ALLOW
    /// allows; else denied. `User:*` is always denied.
    pub fn authorize(
        &self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        let denied = |by: DeniedBy| Decision::Denied {
            reason: denial_reason(principal, operation, resource_type, name),
            by,
        };
        if principal.is_wildcard() {
            return denied(DeniedBy::NotAnIdentity);
        }
        if self.super_users.contains(principal) {
            return Decision::Allowed {
                by: AllowedBy::SuperUser,
            };
        }
        match self.acls.verdict(principal, operation, resource_type, name) {
            Verdict::Allow(rule) => Decision::Allowed {
                by: AllowedBy::Rule(Arc::clone(rule)),
            },
            Verdict::Deny(rule) => denied(DeniedBy::Rule(Arc::clone(rule))),
            Verdict::NoMatch => denied(DeniedBy::NoAllowRule),
        }
    }

    /// [`Authorizer::authorize`]'s answer without building a reason: allowed, refused by a
    /// DENY entry, or allowed by no entry.
    pub fn check(
        &self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Check {
        if principal.is_wildcard() {
            return Check::NotAllowed;
        }
        if self.super_users.contains(principal) {
            return Check::Allowed;
        }
        match self.acls.verdict(principal, operation, resource_type, name) {
            Verdict::Allow(_) => Check::Allowed,
            Verdict::Deny(_) => Check::Denied,
            Verdict::NoMatch => Check::NotAllowed,
        }
    }

    /// [`Authorizer::authorize`]'s answer without building the decision.
    pub fn is_allowed(
        &self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.check(principal, operation, resource_type, name) == Check::Allowed
    }

    /// The `names` (of resources of `resource_type`) that `principal` may Describe, in their
    /// order: what a list API shows.
    pub fn describe_filter<I, S>(
        &self,
        principal: &Principal,
        resource_type: ResourceType,
        names: I,
    ) -> Vec<S>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names
            .into_iter()
            .filter(|name| {
                self.is_allowed(principal, Operation::Describe, resource_type, name.as_ref())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::Operation::{All, Alter, Create, Delete, Describe, Read, Write};
    use super::PatternType::{Literal, Prefixed};
    use super::Permission::{Allow, Deny};
    use super::ResourceType::{Cluster, Group, Subject, Topic};

    fn user(name: &str) -> Principal {
        Principal::user(name).expect("valid user")
    }

    /// `principal` is the text form: "User:alice" or "User:*".
    fn entry(
        principal: &str,
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclEntry {
        AclEntry::new(
            principal.parse().expect("valid principal"),
            resource_type,
            pattern_type,
            name,
            operation,
            permission,
        )
        .expect("valid entry")
    }

    fn with_acls(entries: Vec<AclEntry>) -> Authorizer {
        Authorizer::new(
            Acls::from_entries(entries).expect("valid entries"),
            BTreeSet::new(),
        )
        .expect("valid authorizer")
    }

    #[test]
    fn deny_wins_over_allow() {
        let deny = entry("User:alice", Topic, Prefixed, "ord", Write, Deny);
        let authorizer = with_acls(vec![
            entry("User:alice", Topic, Literal, "orders", Write, Allow),
            entry("User:alice", Topic, Literal, "orders", All, Allow),
            deny.clone(),
        ]);
        let alice = user("alice");
        let decision = authorizer.authorize(&alice, Write, Topic, "orders");
        assert!(!decision.is_allowed());
        assert_eq!(decision.rule(), Some(&deny));
        assert!(matches!(
            decision,
            Decision::Denied {
                by: DeniedBy::Rule(_),
                ..
            }
        ));
        // The DENY names Write only: reading is still allowed through All.
        assert!(authorizer.is_allowed(&alice, Read, Topic, "orders"));

        // A DENY for everyone wins over a user's own ALLOW.
        let authorizer = with_acls(vec![
            entry("User:alice", Topic, Literal, "orders", Read, Allow),
            entry("User:*", Topic, Literal, "*", Read, Deny),
        ]);
        assert!(!authorizer.is_allowed(&alice, Read, Topic, "orders"));
    }

    #[test]
    fn default_deny() {
        let authorizer = Authorizer::default();
        let decision = authorizer.authorize(&user("alice"), Read, Topic, "orders");
        assert_eq!(
            decision,
            Decision::Denied {
                reason: "User:alice may not READ topic orders".to_owned(),
                by: DeniedBy::NoAllowRule,
            }
        );
        // Entries for others, other resources and other operations do not help.
        let authorizer = with_acls(vec![
            entry("User:bob", Topic, Literal, "orders", Read, Allow),
            entry("User:alice", Group, Literal, "orders", Read, Allow),
            entry("User:alice", Topic, Literal, "orders", Write, Allow),
            entry("User:alice", Topic, Literal, "orders2", Read, Allow),
        ]);
        assert!(!authorizer.is_allowed(&user("alice"), Read, Topic, "orders"));
    }

    #[test]
    fn allowing_read_write_delete_or_alter_implies_describe() {
        let alice = user("alice");
        for operation in [Read, Write, Delete, Alter] {
            let authorizer = with_acls(vec![entry(
                "User:alice",
                Topic,
                Literal,
                "orders",
                operation,
                Allow,
            )]);
            assert!(authorizer.is_allowed(&alice, Describe, Topic, "orders"));
            assert!(authorizer.is_allowed(&alice, operation, Topic, "orders"));
        }
        let authorizer = with_acls(vec![entry(
            "User:alice",
            Topic,
            Literal,
            "orders",
            Create,
            Allow,
        )]);
        assert!(!authorizer.is_allowed(&alice, Describe, Topic, "orders"));
        // Describe does not imply anything.
        let authorizer = with_acls(vec![entry(
            "User:alice",
            Topic,
            Literal,
            "orders",
            Describe,
            Allow,
        )]);
        assert!(!authorizer.is_allowed(&alice, Read, Topic, "orders"));
        // A DENY of Read does not deny Describe.
        let authorizer = with_acls(vec![
            entry("User:alice", Topic, Literal, "orders", Describe, Allow),
            entry("User:alice", Topic, Literal, "orders", Read, Deny),
        ]);
        assert!(authorizer.is_allowed(&alice, Describe, Topic, "orders"));
        assert!(!authorizer.is_allowed(&alice, Read, Topic, "orders"));
    }

    #[test]
    fn all_matches_every_operation() {
        let alice = user("alice");
        let authorizer = with_acls(vec![entry(
            "User:alice",
            Subject,
            Literal,
            "orders-value",
            All,
            Allow,
        )]);
        for operation in Operation::VALUES {
            assert!(authorizer.is_allowed(&alice, operation, Subject, "orders-value"));
        }
        let authorizer = with_acls(vec![
            entry("User:alice", Subject, Literal, "orders-value", Write, Allow),
            entry(
                "User:alice",
                Subject,
                Literal,
                "orders-value",
                Describe,
                Allow,
            ),
            entry("User:alice", Subject, Prefixed, "orders", All, Deny),
        ]);
        for operation in Operation::VALUES {
            assert!(!authorizer.is_allowed(&alice, operation, Subject, "orders-value"));
        }
        // Asking for All itself needs an All entry (Kafka).
        let authorizer = with_acls(vec![entry(
            "User:alice",
            Topic,
            Literal,
            "orders",
            Write,
            Allow,
        )]);
        assert!(!authorizer.is_allowed(&alice, All, Topic, "orders"));
    }

    #[test]
    fn literal_prefixed_and_wildcard_names() {
        let alice = user("alice");
        let literal = with_acls(vec![entry(
            "User:alice",
            Topic,
            Literal,
            "orders",
            Read,
            Allow,
        )]);
        assert!(literal.is_allowed(&alice, Read, Topic, "orders"));
        assert!(!literal.is_allowed(&alice, Read, Topic, "orders2"));
        assert!(!literal.is_allowed(&alice, Read, Topic, "order"));
        assert!(!literal.is_allowed(&alice, Read, Group, "orders"));

        let prefixed = with_acls(vec![entry(
            "User:alice",
            Topic,
            Prefixed,
            "ord",
            Read,
            Allow,
        )]);
        assert!(prefixed.is_allowed(&alice, Read, Topic, "ord"));
        assert!(prefixed.is_allowed(&alice, Read, Topic, "orders"));
        assert!(!prefixed.is_allowed(&alice, Read, Topic, "or"));
        assert!(!prefixed.is_allowed(&alice, Read, Topic, "xorders"));

        let every = with_acls(vec![entry("User:alice", Group, Literal, "*", Read, Allow)]);
        assert!(every.is_allowed(&alice, Read, Group, "anything"));
        assert!(every.is_allowed(&alice, Read, Group, "*"));
        assert!(!every.is_allowed(&alice, Read, Topic, "anything"));

        // A prefixed `*` is just the character.
        let star = with_acls(vec![entry("User:alice", Group, Prefixed, "*", Read, Allow)]);
        assert!(star.is_allowed(&alice, Read, Group, "*x"));
        assert!(!star.is_allowed(&alice, Read, Group, "x"));

        // The cluster: literal herald or `*` only.
        let cluster = with_acls(vec![entry(
            "User:alice",
            Cluster,
            Literal,
            CLUSTER_NAME,
            Alter,
            Allow,
        )]);
        assert!(cluster.is_allowed(&alice, Alter, Cluster, CLUSTER_NAME));
        assert!(cluster.is_allowed(&alice, Describe, Cluster, CLUSTER_NAME));
    }

    #[test]
    fn prefix_walk_finds_every_matching_prefix_among_neighbours() {
        let alice = user("alice");
        // Keys that sort between the matching prefixes and the name.
        let authorizer = with_acls(vec![
            entry("User:alice", Topic, Prefixed, "a", Read, Allow),
            entry("User:alice", Topic, Prefixed, "a0", Write, Allow),
            entry("User:alice", Topic, Prefixed, "ab", Delete, Allow),
            entry("User:alice", Topic, Prefixed, "ab0", Alter, Allow),
            entry("User:alice", Topic, Prefixed, "abc", Create, Allow),
            entry("User:alice", Topic, Prefixed, "abcz", All, Allow),
            entry("User:alice", Topic, Prefixed, "é", Read, Allow),
            entry("User:alice", Topic, Prefixed, "ê", Write, Allow),
        ]);
        assert!(authorizer.is_allowed(&alice, Read, Topic, "abcd"));
        assert!(!authorizer.is_allowed(&alice, Write, Topic, "abcd"));
        assert!(authorizer.is_allowed(&alice, Delete, Topic, "abcd"));
        assert!(!authorizer.is_allowed(&alice, Alter, Topic, "abcd"));
        assert!(authorizer.is_allowed(&alice, Create, Topic, "abcd"));
        assert!(!authorizer.is_allowed(&alice, All, Topic, "abcd"));
        // Multi-byte names sharing a first byte.
        assert!(authorizer.is_allowed(&alice, Read, Topic, "éx"));
        assert!(!authorizer.is_allowed(&alice, Write, Topic, "éx"));
        assert!(authorizer.is_allowed(&alice, Write, Topic, "êx"));
        assert!(!authorizer.is_allowed(&alice, Read, Topic, "êx"));
        assert!(!authorizer.is_allowed(&alice, Read, Topic, "ë"));
    }

    #[test]
    fn wildcard_principal() {
        let authorizer = with_acls(vec![entry("User:*", Topic, Literal, "events", Read, Allow)]);
        assert!(authorizer.is_allowed(&user("bob"), Read, Topic, "events"));
        assert!(authorizer.is_allowed(&user("carol"), Describe, Topic, "events"));
        assert!(!authorizer.is_allowed(&user("bob"), Write, Topic, "events"));

        // `User:*` parses (for entries) but is not an identity.
        let wildcard: Principal = "User:*".parse().expect("parses");
        assert!(wildcard.is_wildcard());
        assert_eq!(wildcard, Principal::wildcard());
        assert_eq!(Principal::user("*"), Err(AclError::WildcardPrincipal));
        let decision = authorizer.authorize(&wildcard, Read, Topic, "events");
        assert!(matches!(
            decision,
            Decision::Denied {
                by: DeniedBy::NotAnIdentity,
                ..
            }
        ));
        assert!(!authorizer.is_allowed(&wildcard, Read, Topic, "events"));
        assert_eq!(
            Authorizer::new(Acls::new(), [Principal::wildcard()].into()).err(),
            Some(AclError::WildcardPrincipal)
        );
    }

    #[test]
    fn super_users_may_do_everything() {
        let acls = Acls::from_entries([entry("User:root", Topic, Literal, "*", All, Deny)])
            .expect("valid");
        let authorizer = Authorizer::new(acls, [user("root")].into()).expect("valid");
        assert!(authorizer.is_super_user(&user("root")));
        let decision = authorizer.authorize(&user("root"), Delete, Topic, "orders");
        assert_eq!(
            decision,
            Decision::Allowed {
                by: AllowedBy::SuperUser
            }
        );
        assert!(authorizer.is_allowed(&user("root"), Alter, Cluster, CLUSTER_NAME));
        assert!(!authorizer.is_allowed(&user("alice"), Read, Topic, "orders"));

        let too_many: BTreeSet<Principal> = (0..=SUPER_USERS_MAX)
            .map(|i| user(&format!("u{i}")))
            .collect();
        assert_eq!(
            Authorizer::new(Acls::new(), too_many).err(),
            Some(AclError::TooManySuperUsers {
                count: SUPER_USERS_MAX + 1,
                max: SUPER_USERS_MAX
            })
        );
    }

    #[test]
    fn the_reason_names_principal_operation_resource_type_and_name() {
        let allow = entry("User:alice", Topic, Literal, "orders", Read, Allow);
        let deny = entry("User:alice", Group, Prefixed, "billing", All, Deny);
        let authorizer = with_acls(vec![allow.clone(), deny.clone()]);
        let alice = user("alice");

        let decision = authorizer.authorize(&alice, Write, Topic, "orders");
        assert_eq!(
            decision.reason(),
            Some("User:alice may not WRITE topic orders")
        );
        let decision = authorizer.authorize(&alice, Read, Group, "billing-eu");
        assert_eq!(
            decision.reason(),
            Some("User:alice may not READ group billing-eu")
        );
        assert_eq!(decision.rule(), Some(&deny));
        assert_eq!(
            decision.to_string(),
            "User:alice may not READ group billing-eu \
             (denied by DENY User:alice ALL group prefixed:billing)"
        );
        let decision = authorizer.authorize(&alice, Delete, Subject, "orders-value");
        assert_eq!(
            decision.reason(),
            Some("User:alice may not DELETE subject orders-value")
        );
        let decision = authorizer.authorize(&alice, Alter, Cluster, CLUSTER_NAME);
        assert_eq!(
            decision.reason(),
            Some("User:alice may not ALTER cluster herald")
        );

        let decision = authorizer.authorize(&alice, Read, Topic, "orders");
        assert_eq!(decision.reason(), None);
        assert_eq!(decision.rule(), Some(&allow));
        assert_eq!(
            decision.to_string(),
            "allowed by ALLOW User:alice READ topic literal:orders"
        );
    }

    #[test]
    fn add_is_idempotent_and_remove_is_exact() {
        let mut acls = Acls::new();
        let read = entry("User:alice", Topic, Literal, "orders", Read, Allow);
        assert_eq!(acls.add(read.clone()), Ok(true));
        assert_eq!(acls.add(read.clone()), Ok(false));
        assert_eq!(acls.len(), 1);
        assert!(acls.contains(&read));
        let write = entry("User:alice", Topic, Literal, "orders", Write, Allow);
        assert!(!acls.remove(&write));
        assert!(acls.remove(&read));
        assert!(!acls.remove(&read));
        assert!(acls.is_empty());
        assert_eq!(acls.iter().count(), 0);
        // The emptied buckets are gone.
        assert!(acls.topic.literal.is_empty());
    }

    #[test]
    fn remove_and_list_by_filter() {
        let entries = vec![
            entry("User:alice", Topic, Literal, "orders", Read, Allow),
            entry("User:alice", Topic, Prefixed, "orders", Write, Allow),
            entry("User:alice", Group, Literal, "billing", Read, Allow),
            entry("User:bob", Topic, Literal, "orders", Read, Allow),
            entry("User:bob", Topic, Literal, "orders", Write, Deny),
            entry("User:*", Subject, Literal, "*", Describe, Allow),
        ];
        let mut acls = Acls::from_entries(entries.clone()).expect("valid");
        assert_eq!(acls.list(&AclFilter::any()).len(), entries.len());

        let topics_named_orders = AclFilter {
            resource_type: Some(Topic),
            name: Some("orders".to_owned()),
            ..AclFilter::default()
        };
        assert_eq!(acls.list(&topics_named_orders).len(), 4);
        let literal_orders = AclFilter {
            pattern_type: Some(Literal),
            ..topics_named_orders.clone()
        };
        assert_eq!(acls.list(&literal_orders).len(), 3);

        let alice = AclFilter {
            principal: Some(user("alice")),
            ..AclFilter::default()
        };
        let removed = acls.remove_matching(&alice);
        assert_eq!(removed.len(), 3);
        assert!(removed.iter().all(|entry| entry.principal == user("alice")));
        assert_eq!(acls.len(), 3);
        assert!(acls.list(&alice).is_empty());

        let denies = AclFilter {
            permission: Some(Deny),
            ..AclFilter::default()
        };
        assert_eq!(
            acls.remove_matching(&denies),
            vec![entry("User:bob", Topic, Literal, "orders", Write, Deny)]
        );
        assert_eq!(
            acls.list(&AclFilter::any()),
            vec![
                entry("User:bob", Topic, Literal, "orders", Read, Allow),
                entry("User:*", Subject, Literal, "*", Describe, Allow),
            ]
        );
        assert_eq!(acls.remove_matching(&AclFilter::any()).len(), 2);
        assert!(acls.is_empty());
    }

    #[test]
    fn the_set_is_bounded() {
        let mut acls = Acls::new();
        let alice = user("alice");
        for i in 0..ACLS_MAX {
            let entry = AclEntry::new(alice.clone(), Topic, Literal, format!("t{i}"), Read, Allow)
                .expect("valid");
            assert_eq!(acls.add(entry), Ok(true));
        }
        assert_eq!(acls.len(), ACLS_MAX);
        let extra = entry("User:alice", Topic, Literal, "one-more", Read, Allow);
        assert_eq!(
            acls.add(extra.clone()),
            Err(AclError::TooManyAcls { max: ACLS_MAX })
        );
        // Re-adding a held entry is still fine when full.
        let held = entry("User:alice", Topic, Literal, "t0", Read, Allow);
        assert_eq!(acls.add(held.clone()), Ok(false));
        assert!(acls.remove(&held));
        assert_eq!(acls.add(extra), Ok(true));
        assert_eq!(acls.len(), ACLS_MAX);
    }

    #[test]
    fn principals_parse_and_print() {
        let alice: Principal = "User:alice".parse().expect("parses");
        assert_eq!(alice, user("alice"));
        assert_eq!(alice.to_string(), "User:alice");
        assert_eq!(alice.name(), "alice");
        assert_eq!(
            "User:a:b".parse::<Principal>().map(|p| p.name().to_owned()),
            Ok("a:b".to_owned())
        );
        assert_eq!(
            "User:".parse::<Principal>(),
            Err(AclError::EmptyPrincipalName)
        );
        assert_eq!(
            "user:alice".parse::<Principal>(),
            Err(AclError::PrincipalFormat("user:alice".to_owned()))
        );
        assert_eq!(
            "alice".parse::<Principal>(),
            Err(AclError::PrincipalFormat("alice".to_owned()))
        );
        assert_eq!(
            "User:al\nice".parse::<Principal>(),
            Err(AclError::PrincipalControlCharacter)
        );
        assert_eq!(
            Principal::user("\u{7f}"),
            Err(AclError::PrincipalControlCharacter)
        );
        let long = "x".repeat(PRINCIPAL_NAME_BYTES_MAX + 1);
        assert_eq!(
            Principal::user(long),
            Err(AclError::PrincipalNameTooLong {
                len: PRINCIPAL_NAME_BYTES_MAX + 1,
                max: PRINCIPAL_NAME_BYTES_MAX
            })
        );
        assert!(Principal::user("x".repeat(PRINCIPAL_NAME_BYTES_MAX)).is_ok());
    }

    #[test]
    fn entries_are_validated() {
        let alice = user("alice");
        let make = |resource_type, pattern_type, name: &str| {
            AclEntry::new(
                alice.clone(),
                resource_type,
                pattern_type,
                name,
                Read,
                Allow,
            )
        };
        assert!(make(Topic, Literal, "t".repeat(RESOURCE_NAME_BYTES_MAX).as_str()).is_ok());
        assert_eq!(
            make(
                Topic,
                Prefixed,
                "t".repeat(RESOURCE_NAME_BYTES_MAX + 1).as_str()
            ),
            Err(AclError::ResourceNameTooLong {
                resource_type: Topic,
                len: RESOURCE_NAME_BYTES_MAX + 1,
                max: RESOURCE_NAME_BYTES_MAX
            })
        );
        assert_eq!(
            make(Group, Literal, ""),
            Err(AclError::EmptyResourceName {
                resource_type: Group
            })
        );
        assert_eq!(
            make(Subject, Literal, "a\tb"),
            Err(AclError::ResourceNameControlCharacter {
                resource_type: Subject
            })
        );
        assert!(make(Cluster, Literal, CLUSTER_NAME).is_ok());
        assert!(make(Cluster, Literal, WILDCARD).is_ok());
        assert!(matches!(
            make(Cluster, Literal, "kafka-cluster"),
            Err(AclError::ClusterResource { .. })
        ));
        assert!(matches!(
            make(Cluster, Prefixed, "her"),
            Err(AclError::ClusterResource { .. })
        ));
        // add validates entries built field by field.
        let mut acls = Acls::new();
        let invalid = AclEntry {
            principal: user("alice"),
            resource_type: Topic,
            pattern_type: Literal,
            name: String::new(),
            operation: Read,
            permission: Allow,
        };
        assert_eq!(
            acls.add(invalid),
            Err(AclError::EmptyResourceName {
                resource_type: Topic
            })
        );
        assert!(acls.is_empty());
    }

    #[test]
    fn keywords_parse_ignoring_case() {
        assert_eq!("WRITE".parse::<Operation>(), Ok(Write));
        assert_eq!("describe".parse::<Operation>(), Ok(Describe));
        assert_eq!("Topic".parse::<ResourceType>(), Ok(Topic));
        assert_eq!("prefixed".parse::<PatternType>(), Ok(Prefixed));
        assert_eq!("deny".parse::<Permission>(), Ok(Deny));
        assert_eq!(
            "IdempotentWrite".parse::<Operation>(),
            Err(AclError::UnknownValue {
                kind: "operation",
                value: "IdempotentWrite".to_owned()
            })
        );
        for operation in Operation::VALUES {
            assert_eq!(operation.to_string().parse::<Operation>(), Ok(operation));
        }
    }

    #[test]
    fn seed_files_parse_with_toml() {
        let text = r#"
            [[acl]]
            principal = "User:alice"
            resource_type = "topic"
            pattern_type = "prefixed"
            name = "orders."
            operation = "write"
            permission = "allow"

            [[acl]]
            principal = "User:*"
            resource_type = "subject"
            name = "*"
            operation = "describe"
            permission = "allow"

            [[acl]]
            principal = "User:mallory"
            resource_type = "cluster"
            name = "herald"
            operation = "all"
            permission = "deny"
        "#;
        let file: AclFile = toml::from_str(text).expect("parses");
        assert_eq!(file.acl.len(), 3);
        assert_eq!(
            file.acl[1],
            entry("User:*", Subject, Literal, "*", Describe, Allow)
        );
        let round_trip: AclFile =
            toml::from_str(&toml::to_string(&file).expect("serializes")).expect("parses");
        assert_eq!(round_trip, file);

        let authorizer =
            Authorizer::new(file.into_acls().expect("valid"), BTreeSet::new()).expect("valid");
        assert!(authorizer.is_allowed(&user("alice"), Write, Topic, "orders.eu"));
        assert!(authorizer.is_allowed(&user("bob"), Describe, Subject, "x-value"));
        assert!(!authorizer.is_allowed(&user("mallory"), Describe, Cluster, CLUSTER_NAME));

        assert!(toml::from_str::<AclFile>("")
            .expect("empty file")
            .acl
            .is_empty());
        let invalid = [
            // unknown field
            "[[acl]]\nprincipal = \"User:a\"\nresource_type = \"topic\"\nname = \"t\"\n\
             operation = \"read\"\npermission = \"allow\"\nhost = \"*\"\n",
            // bad principal
            "[[acl]]\nprincipal = \"alice\"\nresource_type = \"topic\"\nname = \"t\"\n\
             operation = \"read\"\npermission = \"allow\"\n",
            // unknown operation
            "[[acl]]\nprincipal = \"User:a\"\nresource_type = \"topic\"\nname = \"t\"\n\
             operation = \"idempotent_write\"\npermission = \"allow\"\n",
            // invalid name
            "[[acl]]\nprincipal = \"User:a\"\nresource_type = \"cluster\"\nname = \"t\"\n\
             operation = \"read\"\npermission = \"allow\"\n",
            // missing permission
            "[[acl]]\nprincipal = \"User:a\"\nresource_type = \"topic\"\nname = \"t\"\n\
             operation = \"read\"\n",
        ];
        for text in invalid {
            assert!(toml::from_str::<AclFile>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn describe_filter_keeps_what_the_principal_may_describe() {
        let authorizer = with_acls(vec![
            entry("User:alice", Topic, Prefixed, "orders.", Read, Allow),
            entry(
                "User:alice",
                Topic,
                Literal,
                "orders.secret",
                Describe,
                Deny,
            ),
            entry("User:alice", Topic, Literal, "payments", Create, Allow),
            entry("User:*", Topic, Literal, "public", Describe, Allow),
        ]);
        let names = vec![
            "orders.eu".to_owned(),
            "orders.secret".to_owned(),
            "payments".to_owned(),
            "public".to_owned(),
            "other".to_owned(),
        ];
        assert_eq!(
            authorizer.describe_filter(&user("alice"), Topic, names.clone()),
            vec!["orders.eu".to_owned(), "public".to_owned()]
        );
        assert_eq!(
            authorizer.describe_filter(&user("bob"), Topic, names.iter().map(String::as_str)),
            vec!["public"]
        );
    }

    // The reference: the rules as stated, scanning every entry.

    fn naive_matches(
        entry: &AclEntry,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let principal_matches =
            entry.principal == *principal || entry.principal.to_string() == "User:*";
        let resource_matches = entry.resource_type == resource_type
            && match entry.pattern_type {
                Literal => entry.name == name || entry.name == "*",
                Prefixed => name.starts_with(&entry.name),
            };
        let operation_matches = entry.operation == operation
            || entry.operation == All
            || (entry.permission == Allow
                && operation == Describe
                && [Read, Write, Delete, Alter].contains(&entry.operation));
        principal_matches && resource_matches && operation_matches
    }

    fn naive_allows(
        entries: &[AclEntry],
        super_users: &BTreeSet<Principal>,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if principal.to_string() == "User:*" {
            return false;
        }
        if super_users.contains(principal) {
            return true;
        }
        let any = |permission: Permission| {
            entries.iter().any(|entry| {
                entry.permission == permission
                    && naive_matches(entry, principal, operation, resource_type, name)
            })
        };
        !any(Deny) && any(Allow)
    }

    const ENTRY_PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:*"];
    /// Topics more often, so that entries and queries meet.
    const RESOURCE_TYPES: &[ResourceType] = &[Topic, Topic, Topic, Group, Cluster, Subject];
    /// Prefixed more often: the walk is what needs exercising.
    const PATTERN_TYPES: &[PatternType] = &[Literal, Prefixed, Prefixed];
    const QUERY_PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:carol", "User:*"];
    const ENTRY_NAMES: &[&str] = &[
        "a", "ab", "abc", "a0", "ab0", "aé", "b", "ba", "*", "é", "éa", "ê", "orders", "ord",
    ];
    const QUERY_NAMES: &[&str] = &[
        "a",
        "ab",
        "abc",
        "abcd",
        "a0",
        "ab0",
        "ab00",
        "aê",
        "b",
        "ba",
        "bab",
        "*",
        "*a",
        "é",
        "éa",
        "éaé",
        "ê",
        "ë",
        "orders",
        "ord",
        "orders.eu",
        "herald",
        "",
        "x",
    ];

    fn entry_strategy() -> impl Strategy<Value = AclEntry> {
        (
            prop::sample::select(ENTRY_PRINCIPALS),
            prop::sample::select(RESOURCE_TYPES),
            prop::sample::select(PATTERN_TYPES),
            prop::sample::select(ENTRY_NAMES),
            prop::sample::select(Operation::VALUES.to_vec()),
            prop::sample::select(Permission::VALUES.to_vec()),
        )
            .prop_map(
                |(principal, resource_type, pattern_type, name, operation, permission)| {
                    let (pattern_type, name) = if resource_type == Cluster {
                        // The cluster is literal herald or `*`.
                        (Literal, if name == "*" { "*" } else { CLUSTER_NAME })
                    } else {
                        (pattern_type, name)
                    };
                    entry(
                        principal,
                        resource_type,
                        pattern_type,
                        name,
                        operation,
                        permission,
                    )
                },
            )
    }

    fn query_strategy() -> impl Strategy<Value = (Principal, Operation, ResourceType, &'static str)>
    {
        (
            prop::sample::select(QUERY_PRINCIPALS),
            prop::sample::select(Operation::VALUES.to_vec()),
            prop::sample::select(RESOURCE_TYPES),
            prop::sample::select(QUERY_NAMES),
        )
            .prop_map(|(principal, operation, resource_type, name)| {
                (
                    principal.parse::<Principal>().expect("valid principal"),
                    operation,
                    resource_type,
                    name,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn authorize_agrees_with_scanning_every_entry(
            entries in prop::collection::vec(entry_strategy(), 0..40),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            bob_is_super in any::<bool>(),
            queries in prop::collection::vec(query_strategy(), 1..48),
        ) {
            let mut acls = Acls::new();
            let mut reference: Vec<AclEntry> = Vec::new();
            for entry in entries {
                let added = acls.add(entry.clone()).expect("valid entry");
                prop_assert_eq!(added, !reference.contains(&entry));
                if added {
                    reference.push(entry);
                }
            }
            for index in removals {
                if reference.is_empty() {
                    break;
                }
                let victim = reference.remove(index.index(reference.len()));
                prop_assert!(acls.remove(&victim));
                prop_assert!(!acls.remove(&victim));
            }
            prop_assert_eq!(acls.len(), reference.len());
            let mut listed = acls.list(&AclFilter::any());
            listed.sort();
            let mut expected_list = reference.clone();
            expected_list.sort();
            prop_assert_eq!(listed, expected_list);

            let super_users: BTreeSet<Principal> = if bob_is_super {
                [user("bob")].into()
            } else {
                BTreeSet::new()
            };
            let authorizer = Authorizer::new(acls, super_users.clone()).expect("valid");
            for (principal, operation, resource_type, name) in queries {
                let expected =
                    naive_allows(&reference, &super_users, &principal, operation, resource_type, name);
                let decision = authorizer.authorize(&principal, operation, resource_type, name);
                prop_assert_eq!(
                    decision.is_allowed(),
                    expected,
                    "{} {} {} {:?}: {}",
                    principal,
                    operation,
                    resource_type,
                    name,
                    decision
                );
                prop_assert_eq!(
                    authorizer.is_allowed(&principal, operation, resource_type, name),
                    expected
                );
                if let Some(rule) = decision.rule() {
                    prop_assert!(naive_matches(rule, &principal, operation, resource_type, name));
                    prop_assert!(reference.contains(rule));
                    let permission = if expected { Allow } else { Deny };
                    prop_assert_eq!(rule.permission, permission);
                }
            }
        }
    }
}
