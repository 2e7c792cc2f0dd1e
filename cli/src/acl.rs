//! `herald acl add|list|remove`: the broker's access control lists. An entry allows or denies
//! a principal (`User:<name>`, or `User:*` for every user) one operation on topics, consumer
//! groups, schema subjects or the cluster, named literally or by prefix; a matching deny wins
//! over any allow, and what no entry allows is denied.

use anyhow::Context;
use clap::Subcommand;
use herald_auth::acl::{
    AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME,
};

use crate::admin::BrokerArgs;

/// The filter flags of `herald acl list` and `herald acl remove`: an entry is selected when it
/// has every value given.
#[derive(clap::Args)]
pub(crate) struct AclFilterArgs {
    /// Only the entries of this principal: `User:<name>`, or `User:*` for the entries that
    /// apply to every user.
    #[arg(long, value_name = "User:NAME")]
    principal: Option<Principal>,
    /// Only the entries on this kind of resource: topic, group, cluster or subject.
    #[arg(long)]
    resource_type: Option<ResourceType>,
    /// Only the entries whose name is matched this way: literal or prefixed.
    #[arg(long)]
    pattern: Option<PatternType>,
    /// Only the entries with exactly this resource name (or prefix).
    #[arg(long)]
    name: Option<String>,
    /// Only the entries for this operation: read, write, create, delete, alter, describe or
    /// all.
    #[arg(long)]
    operation: Option<Operation>,
    /// Only the allow, or only the deny, entries.
    #[arg(long)]
    permission: Option<Permission>,
}

impl AclFilterArgs {
    /// Whether no filter flag was given (the filter selects every entry).
    fn is_empty(&self) -> bool {
        self.principal.is_none()
            && self.resource_type.is_none()
            && self.pattern.is_none()
            && self.name.is_none()
            && self.operation.is_none()
            && self.permission.is_none()
    }

    fn into_filter(self) -> AclFilter {
        AclFilter {
            principal: self.principal,
            resource_type: self.resource_type,
            pattern_type: self.pattern,
            name: self.name,
            operation: self.operation,
            permission: self.permission,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum AclCommand {
    /// Add entries: one per --operation, for the principal on the resources --name matches.
    /// Adding an entry that is already there changes nothing.
    ///
    /// Example: herald acl add --principal User:alice --resource-type topic --name orders --operation write --operation read
    Add {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Who the entries apply to: `User:<name>`, or `User:*` for every user.
        #[arg(long, value_name = "User:NAME")]
        principal: Principal,
        /// The kind of resource: topic, group, cluster or subject.
        #[arg(long)]
        resource_type: ResourceType,
        /// The resource name (`*`: every resource of the type), or with `--pattern prefixed`
        /// the prefix. For the cluster it may be omitted (it is `herald`).
        #[arg(long)]
        name: Option<String>,
        /// How --name matches: literal (that name) or prefixed (every name that starts with it).
        #[arg(long, default_value = "literal")]
        pattern: PatternType,
        /// read, write, create, delete, alter, describe or all; repeat it for several.
        #[arg(long = "operation", value_name = "OPERATION", required = true)]
        operations: Vec<Operation>,
        /// allow or deny (a matching deny wins over any allow).
        #[arg(long, default_value = "allow")]
        permission: Permission,
    },
    /// List the entries, or those that have every value given, one per line
    /// (`PERMISSION principal OPERATION type pattern:name`).
    ///
    /// Example: herald acl list --principal User:alice --resource-type topic
    List {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        filter: AclFilterArgs,
        /// Print a JSON array of {principal, resource_type, pattern_type, name, operation,
        /// permission} objects instead.
        #[arg(long)]
        json: bool,
    },
    /// Remove the entries that have every value given (or with --all every entry), and print
    /// them.
    ///
    /// Example: herald acl remove --principal User:alice --resource-type topic --name orders
    Remove {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        filter: AclFilterArgs,
        /// Remove every entry (needed when no filter flag is given).
        #[arg(long)]
        all: bool,
    },
}

/// "1 ACL entry", "2 ACL entries".
fn acl_entries(count: usize) -> String {
    if count == 1 {
        "1 ACL entry".to_owned()
    } else {
        format!("{count} ACL entries")
    }
}

pub(crate) async fn run(command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Add {
            broker,
            principal,
            resource_type,
            name,
            pattern,
            mut operations,
            permission,
        } => {
            let name = match name {
                Some(name) => name,
                None if resource_type == ResourceType::Cluster => CLUSTER_NAME.to_owned(),
                None => anyhow::bail!(
                    "--name is required for {resource_type} entries (the {resource_type} name, or a prefix with --pattern prefixed)"
                ),
            };
            operations.sort_unstable();
            operations.dedup();
            let entries = operations
                .into_iter()
                .map(|operation| {
                    AclEntry::new(
                        principal.clone(),
                        resource_type,
                        pattern,
                        name.clone(),
                        operation,
                        permission,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .context("invalid ACL entry")?;
            let requested = entries.len();
            let added = broker.client().await?.create_acls(entries).await?;
            let added = usize::try_from(added).unwrap_or(usize::MAX);
            let present = requested.saturating_sub(added);
            if present == 0 {
                println!("added {}", acl_entries(added));
            } else {
                println!("added {} ({present} already present)", acl_entries(added));
            }
        }
        AclCommand::List {
            broker,
            filter,
            json,
        } => {
            let mut entries = broker
                .client()
                .await?
                .describe_acls(filter.into_filter())
                .await?;
            entries.sort();
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for entry in &entries {
                    println!("{entry}");
                }
            }
        }
        AclCommand::Remove {
            broker,
            filter,
            all,
        } => {
            if all {
                anyhow::ensure!(
                    filter.is_empty(),
                    "--all removes every ACL: give it without filter flags, or leave it out"
                );
            } else {
                anyhow::ensure!(
                    !filter.is_empty(),
                    "give at least one of --principal, --resource-type, --pattern, --name, --operation, --permission, or --all to remove every ACL"
                );
            }
            let mut removed = broker
                .client()
                .await?
                .delete_acls(filter.into_filter())
                .await?;
            removed.sort();
            for entry in &removed {
                println!("{entry}");
            }
            println!("removed {}", acl_entries(removed.len()));
        }
    }
    Ok(())
}
