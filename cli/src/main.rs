//! The `herald` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_broker::BrokerConfig;
use herald_registry::{AuthSource, RegistryTls, ServerConfig};

mod acl;
mod admin;
mod cluster;
mod dlq;
mod schema_check;
mod stream;

/// Herald: a schema-governed event platform.
#[derive(Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything Herald has on one embedded data directory: the schema registry on
    /// 127.0.0.1:8081 and the QUIC broker on 127.0.0.1:7070 (metrics on 127.0.0.1:7071).
    /// The broker requires authentication: on first start it creates the super user `admin`
    /// with a random password in <data-dir>/broker/admin.credentials (readable by you only),
    /// which the CLI and the SDK use when run from the same directory.
    ///
    /// Example: herald up --data-dir ./herald-data
    Up {
        /// Where Herald keeps its data.
        #[arg(long, default_value = "./herald-data")]
        data_dir: PathBuf,
        /// Address of the schema registry's HTTP API.
        #[arg(long, default_value = "127.0.0.1:8081")]
        registry_listen: SocketAddr,
        /// Address of the broker's QUIC endpoint.
        #[arg(long, default_value = "127.0.0.1:7070")]
        broker_listen: SocketAddr,
        /// Address of the broker's HTTP /metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:7071")]
        broker_metrics_listen: SocketAddr,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Cluster commands: a local cluster of brokers for trying replication.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Schema commands.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Topic commands (against the broker).
    Topic {
        #[command(subcommand)]
        command: admin::TopicAdmin,
    },
    /// Consumer-group commands (against the broker).
    Group {
        #[command(subcommand)]
        command: admin::GroupAdmin,
    },
    /// Dead-letter triage: list, inspect and replay records the SDK's consumers gave up on.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Produce JSON lines from stdin, encoded with the topic's schema.
    ///
    /// Example: echo '{"id":"o-1","total":1250}' | herald produce orders --key-field id
    Produce(stream::ProduceArgs),
    /// Print a topic's records as JSON lines, decoded with their schemas.
    ///
    /// Example: herald consume orders --group audit --from earliest --count 10
    Consume(stream::ConsumeArgs),
    /// Print a shell completion script.
    ///
    /// Example: herald completions bash > /etc/bash_completion.d/herald
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Broker commands.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// Schema registry commands.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Users of the broker and the registry: one file in the broker's data directory
    /// (users.meta: SCRAM-SHA-256 credentials, never passwords, and each user's registry
    /// role). The broker reads it; `herald registry serve --users FILE` reads the same file.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Access control lists (against the broker): allow or deny users operations on topics,
    /// groups, subjects and the cluster.
    ///
    /// Example: herald acl add --principal User:alice --resource-type topic --name orders --operation write
    Acl {
        #[command(subcommand)]
        command: acl::AclCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; its password is read from standard input (one line).
    ///
    /// Example: printf %s 'correct horse' | herald user add alice --registry-role write --subject team-a.
    Add {
        name: String,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        #[command(flatten)]
        registry: RegistryAccessArgs,
        #[command(flatten)]
        online: OnlineArgs,
    },
    /// Set what a user may do on the registry (`--role none` takes it away).
    ///
    /// Example: herald user registry alice --role write --subject team-a. --subject shared.
    Registry {
        name: String,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        /// read, write, admin, or none.
        #[arg(long, value_parser = ["read", "write", "admin", "none"])]
        role: String,
        /// Limit the role to subjects with this prefix (repeatable; none: every subject).
        #[arg(long = "subject", value_name = "PREFIX")]
        subjects: Vec<String>,
    },
    /// Move the users of a registry TOML users file (`--auth-file`) into the users file:
    /// salted PBKDF2 hashes convert to SCRAM credentials exactly (same password), with their
    /// roles and subject prefixes. Unsalted legacy hashes cannot be converted and are named.
    ///
    /// Example: herald user import registry-users.toml --data-dir ./herald-data/broker
    Import {
        file: PathBuf,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
    },
    /// List the users, one per line, with their registry access if any.
    List {
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        #[command(flatten)]
        online: OnlineArgs,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        #[command(flatten)]
        online: OnlineArgs,
    },
    /// Give a user a new password, read from standard input (one line).
    Passwd {
        name: String,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        #[command(flatten)]
        online: OnlineArgs,
    },
    /// Print a user as a `[[user]]` block for the registry's users file (`--auth-file`), with
    /// the same SCRAM-SHA-256 credential: the same password then works on both servers.
    ///
    /// Example: herald user export alice --role write --subject team-a. >> registry-users.toml
    Export {
        name: String,
        #[arg(long, default_value = "./herald-data/broker")]
        data_dir: PathBuf,
        /// The registry role: read, write or admin.
        #[arg(long, default_value = "read", value_parser = ["read", "write", "admin"])]
        role: String,
        /// Limit the user to subjects with this prefix (repeatable).
        #[arg(long = "subject", value_name = "PREFIX")]
        subjects: Vec<String>,
    },
}

/// `herald user` against a running broker or cluster instead of a data directory's file.
#[derive(clap::Args)]
struct OnlineArgs {
    /// Change the users of the running broker (or cluster: its users are the same on every
    /// node) named by --broker, over the client protocol (needs ALTER on the cluster; the
    /// password is turned into a SCRAM credential here and never sent), instead of the file
    /// under --data-dir.
    ///
    /// Example: printf %s 'correct horse' | herald user add alice --online --broker 127.0.0.1:7170,127.0.0.1:7172
    #[arg(long)]
    online: bool,
    #[command(flatten)]
    broker: admin::BrokerArgs,
}

/// A user's registry access, as `herald user add` takes it.
#[derive(clap::Args)]
struct RegistryAccessArgs {
    /// What the user may do on the registry: read, write or admin (default: nothing; with
    /// --online, none takes an existing user's role away and leaving it out keeps it).
    #[arg(long, value_parser = ["read", "write", "admin", "none"])]
    registry_role: Option<String>,
    /// Limit the registry role to subjects with this prefix (repeatable).
    #[arg(long = "subject", value_name = "PREFIX", requires = "registry_role")]
    subjects: Vec<String>,
}

/// The registry access `role` (`none`: no access) over `subjects` prefixes.
fn registry_access(
    role: Option<&str>,
    subjects: Vec<String>,
) -> anyhow::Result<Option<herald_auth::users::RegistryAccess>> {
    use herald_auth::users::RegistryAccess;
    match role {
        None | Some("none") => {
            anyhow::ensure!(
                subjects.is_empty(),
                "--subject limits a registry role, so it needs --role read, write or admin (not none)"
            );
            Ok(None)
        }
        Some(role) => Ok(Some(RegistryAccess::new(role.parse()?, subjects)?)),
    }
}

/// One line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

/// `herald user ... --online`: the change over the client protocol; `None` if `command` is
/// not one of those (it edits the users file).
async fn user_online(command: &UserCommand) -> Option<anyhow::Result<()>> {
    use herald_auth::users::{RegistryChange, Users};
    let online = match command {
        UserCommand::Add { online, .. }
        | UserCommand::Passwd { online, .. }
        | UserCommand::Remove { online, .. }
        | UserCommand::List { online, .. } => online,
        _ => return None,
    };
    if !online.online {
        return None;
    }
    let result = async {
        // `add` sets the registry access it is given (a new user without one has none);
        // `passwd` keeps it.
        let registry = match command {
            UserCommand::Add { registry, .. } => {
                let role = registry.registry_role.as_deref();
                match (role, registry_access(role, registry.subjects.clone())?) {
                    (_, Some(access)) => RegistryChange::Set(access),
                    (Some("none"), None) => RegistryChange::Clear,
                    (_, None) => RegistryChange::Keep,
                }
            }
            _ => RegistryChange::Keep,
        };
        let client = online.broker.router().await?.any().await?.client;
        match command {
            UserCommand::Add { name, .. } | UserCommand::Passwd { name, .. } => {
                let credential = Users::credential_for(&password_from_stdin()?)?;
                client
                    .alter_user_with(name, &credential.to_text(), registry)
                    .await?;
                println!("set the credential of user {name}");
            }
            UserCommand::Remove { name, .. } => {
                client.delete_user(name).await?;
                println!("removed user {name}");
            }
            _ => {
                for name in client.list_users().await? {
                    println!("{name}");
                }
            }
        }
        Ok(())
    };
    Some(result.await)
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    use herald_auth::users::Users;
    if let Some(result) = user_online(&command).await {
        return result;
    }
    match command {
        UserCommand::Add {
            name,
            data_dir,
            registry,
            ..
        } => {
            let access = registry_access(registry.registry_role.as_deref(), registry.subjects)?;
            let password = password_from_stdin()?;
            Users::open(&data_dir)?.add(&name, &password, access)?;
            println!("added user {name}");
        }
        UserCommand::Registry {
            name,
            data_dir,
            role,
            subjects,
        } => {
            let access = registry_access(Some(&role), subjects)?;
            Users::open(&data_dir)?.set_registry(&name, access)?;
            println!("set the registry access of {name}");
        }
        UserCommand::Import { file, data_dir } => {
            let mut users = Users::open(&data_dir)?;
            let mut refused = Vec::new();
            let mut converted = Vec::new();
            for entry in herald_registry::auth::shared_users_of(&file)? {
                match entry.converted {
                    Ok((credential, access)) => converted.push((
                        entry.name,
                        herald_auth::users::User {
                            credential,
                            registry: Some(access),
                        },
                    )),
                    Err(reason) => refused.push(format!("{}: {reason}", entry.name)),
                }
            }
            // One change of the file for them all.
            let offered = converted.len();
            let not_inserted = users.insert_many(converted)?;
            let imported = offered - not_inserted.len();
            refused.extend(
                not_inserted
                    .into_iter()
                    .map(|(name, why)| format!("{name}: {why}")),
            );
            println!(
                "imported {imported} users into {}",
                Users::path(&data_dir).display()
            );
            anyhow::ensure!(
                refused.is_empty(),
                "not imported:\n  {}",
                refused.join("\n  ")
            );
        }
        UserCommand::List { data_dir, .. } => {
            for (name, user) in Users::open(&data_dir)?.iter() {
                match &user.registry {
                    None => println!("{name}"),
                    Some(access) => match &access.subjects {
                        None => println!("{name}\tregistry={}", access.role),
                        Some(prefixes) => println!(
                            "{name}\tregistry={} subjects={}",
                            access.role,
                            prefixes.join(",")
                        ),
                    },
                }
            }
        }
        UserCommand::Remove { name, data_dir, .. } => {
            Users::open(&data_dir)?.remove(&name)?;
            println!("removed user {name}");
        }
        UserCommand::Passwd { name, data_dir, .. } => {
            let password = password_from_stdin()?;
            Users::open(&data_dir)?.passwd(&name, &password)?;
            println!("changed the password of {name}");
        }
        UserCommand::Export {
            name,
            data_dir,
            role,
            subjects,
        } => {
            let users = Users::open(&data_dir)?;
            let credential = users
                .credential(&name)
                .with_context(|| format!("no user '{name}' in {}", data_dir.display()))?;
            // TOML strings, quoted and escaped by the TOML serializer.
            let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
            eprintln!("note: the stored key allows offline password guessing; keep the registry's users file readable by its owner only (chmod 600)");
            println!("[[user]]");
            println!("name = {}", quote(&name));
            // The stored key only: the server key would let a reader pose as the broker.
            println!("password_hash = {}", quote(&credential.stored().to_text()));
            println!("role = {}", quote(&role));
            if !subjects.is_empty() {
                let list: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
                println!("subjects = [{}]", list.join(", "));
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Serve the Confluent-compatible schema registry API.
    ///
    /// Example: herald registry serve --listen 127.0.0.1:8081 --data-dir ./herald-data/registry
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Directory of the registry's sled database.
        #[arg(long)]
        data_dir: PathBuf,
        /// The users file the broker keeps (its data directory's users.meta): basic-auth
        /// users are checked against their SCRAM credentials and may do what their registry
        /// role says (`herald user add --registry-role`, `herald user registry`). Changes apply
        /// within a second. Without it or --auth-file the API is open.
        #[arg(long, value_name = "FILE", conflicts_with = "auth_file")]
        users: Option<PathBuf>,
        /// Older TOML file of basic-auth users and roles (`herald user import` moves them into
        /// the users file).
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key); without both, plain
        /// HTTP.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
    },
    /// Print a `password_hash` for a users file: reads the password from standard input (one
    /// line; the newline is not part of it) and prints a salted PBKDF2 hash.
    ///
    /// Example: printf %s 'secret' | herald registry hash-password
    HashPassword,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Check a schema file against the registry or a previous version: the CI step.
    /// Exit codes: 0 compatible (or a new subject), 1 incompatible, 2 usage, parse or
    /// connection error.
    ///
    /// Example: herald schema check --subject orders-value --type avro schemas/order.avsc --registry http://127.0.0.1:8081
    /// Example: herald schema check --subject orders-value schemas/order.avsc --against git:origin/main --format github
    Check(schema_check::CheckArgs),
    #[command(flatten)]
    Admin(admin::SchemaAdmin),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a local cluster of brokers in this process: every partition replicated on up to
    /// three nodes through Raft. Node i's broker listens on 127.0.0.1:(base-port + 2(i-1)), its
    /// Raft endpoint on the port after; certificates for the nodes are generated into
    /// <data-dir>/tls on first start. Clients take the brokers as a bootstrap list.
    ///
    /// Example: herald cluster up --nodes 3 --data-dir ./herald-cluster --insecure-no-auth
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Where the nodes keep their data (node-1, node-2, ... and tls).
        #[arg(long, default_value = "./herald-cluster")]
        data_dir: PathBuf,
        /// Node 1's broker port; the others follow.
        #[arg(long, default_value_t = 7170)]
        base_port: u16,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Nodes (reachable or not), and per partition of every topic its leader, term, replicas
    /// and how far each follower is behind (as its leader reports), against --broker
    /// addresses or the local cluster of --data-dir.
    ///
    /// Example: herald cluster status --data-dir ./herald-cluster
    Status {
        #[command(flatten)]
        broker: admin::BrokerArgs,
        /// A local cluster's directory (`herald cluster up`): its brokers and certificate
        /// instead of --broker and --certificate.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The local cluster's nodes (with --data-dir).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The local cluster's node 1 broker port (with --data-dir).
        #[arg(long, default_value_t = 7170)]
        base_port: u16,
    },
    /// Move a partition to other nodes (e.g. onto a node started with --join): the new
    /// replicas copy the partition as learners, then replace the old ones as its voters, and
    /// the replicas left out delete their copy. With --wait, returns once the move finished.
    ///
    /// Example: herald cluster move --broker 127.0.0.1:7170 --topic orders --partition 0 --replicas 4,2,3 --wait
    Move {
        #[command(flatten)]
        broker: admin::BrokerArgs,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// The node ids to hold the partition, the preferred leader first.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
        /// Wait until every named node holds the partition and no other does.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Remove a node from the cluster for good, once it holds no replica (move its partitions
    /// away first): it leaves the controller (a caught-up node takes its vote), clients stop
    /// being sent to it, and its id is not taken again. Stop its process afterwards.
    ///
    /// Example: herald cluster remove-node --broker 127.0.0.1:7170 --node 1
    RemoveNode {
        #[command(flatten)]
        broker: admin::BrokerArgs,
        /// The node's id.
        #[arg(long)]
        node: u64,
        /// How long to keep asking while the controller has not let the node go yet (its
        /// replacement voter catching up), in seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// Serve the QUIC log broker. Flags override the TOML config file.
    ///
    /// Example: herald broker serve --listen 127.0.0.1:7070 --data-dir ./herald-data/broker --registry http://127.0.0.1:8081
    Serve(BrokerServeArgs),
}

#[derive(clap::Args)]
struct BrokerServeArgs {
    /// TOML file with any of: listen, data_dir, registry, registry_ca, metrics_listen, tls_cert,
    /// tls_key, retention_check_interval_ms, producer_expiry_ms, group_session_timeout_ms,
    /// group_revoke_timeout_ms, group_assignor (range | round_robin), insecure_no_auth,
    /// super_users (list of names), acl_file, client_ca, principal_rules (list).
    #[arg(long)]
    config: Option<PathBuf>,
    /// QUIC address (port 0 picks a free port; the chosen address is printed).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of topics, segments and the generated certificate.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Schema registry URL, needed by topics that validate schema IDs.
    #[arg(long)]
    registry: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for an https:// registry, besides the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// HTTP address of /metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// PEM certificate to serve instead of the generated self-signed one (with --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Running the broker as one node of a replicated cluster.
#[derive(clap::Args, Default)]
struct ClusterArgs {
    /// This node's id in the cluster (with --peers): the broker becomes a cluster node.
    #[arg(long)]
    node_id: Option<u64>,
    /// Every node's Raft address, this one's included: ID=HOST:PORT,ID=HOST:PORT,...
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, SocketAddr)>,
    /// Where this node's Raft endpoint listens (default: its own entry of --peers).
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// PEM certificate of the cluster's CA, which signs every node's certificate.
    #[arg(long, value_name = "FILE")]
    cluster_ca: Option<PathBuf>,
    /// PEM certificate of this node (signed by --cluster-ca, naming herald-node).
    #[arg(long, value_name = "FILE")]
    node_cert: Option<PathBuf>,
    /// PEM private key of --node-cert.
    #[arg(long, value_name = "FILE")]
    node_key: Option<PathBuf>,
    /// Join a running cluster through the other nodes of --peers instead of founding one
    /// with them: the node registers, follows the cluster's metadata, and holds the
    /// partitions moved onto it (herald cluster move).
    #[arg(long)]
    join: bool,
    /// Where clients reach this node's broker, as metadata names it (default: --listen; needed
    /// when that is 0.0.0.0 or translated).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
}

fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("node id '{id}': {e}"))?;
    let addr = addr
        .trim()
        .parse::<SocketAddr>()
        .map_err(|e| format!("address '{addr}': {e}"))?;
    Ok((id, addr))
}

impl ClusterArgs {
    /// The cluster settings from these flags, or where a flag is not given from `file`:
    /// `None` when neither names a node id (not a cluster node).
    fn into_config(
        self,
        file: &BrokerFile,
    ) -> anyhow::Result<Option<herald_broker::broker::ClusterConfig>> {
        let Some(node_id) = self.node_id.or(file.node_id) else {
            let flags = !self.peers.is_empty()
                || self.raft_listen.is_some()
                || self.cluster_ca.is_some()
                || self.node_cert.is_some()
                || self.node_key.is_some()
                || self.join
                || self.advertise.is_some();
            let in_file = file.peers.is_some()
                || file.raft_listen.is_some()
                || file.cluster_ca.is_some()
                || file.node_cert.is_some()
                || file.node_key.is_some()
                || file.join.is_some()
                || file.advertise.is_some();
            anyhow::ensure!(
                !flags && !in_file,
                "cluster settings ({}) need a node id: --node-id, or node_id in --config",
                if flags { "flags" } else { "in --config" }
            );
            return Ok(None);
        };
        let listed = if self.peers.is_empty() {
            file.peers
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|peer| parse_peer(peer).map_err(|e| anyhow::anyhow!("peers in --config: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            self.peers
        };
        let mut peers = std::collections::BTreeMap::new();
        for (id, addr) in listed {
            anyhow::ensure!(
                peers.insert(id, addr).is_none(),
                "the peers (--peers or peers in --config) name node {id} twice"
            );
        }
        let own = peers.get(&node_id).copied().with_context(|| {
            format!("the peers (--peers or peers in --config) must name this node ({node_id}) too")
        })?;
        let (Some(ca), Some(cert), Some(key)) = (
            self.cluster_ca.or_else(|| file.cluster_ca.clone()),
            self.node_cert.or_else(|| file.node_cert.clone()),
            self.node_key.or_else(|| file.node_key.clone()),
        ) else {
            anyhow::bail!(
                "a cluster node needs --cluster-ca, --node-cert and --node-key (nodes authenticate each other with certificates the cluster's CA signed)"
            );
        };
        Ok(Some(herald_broker::broker::ClusterConfig {
            node_id,
            peers,
            raft_listen: self.raft_listen.or(file.raft_listen).unwrap_or(own),
            ca,
            cert,
            key,
            timing: herald_broker::broker::Timing::default(),
            join: self.join || file.join.unwrap_or(false),
            advertise: self.advertise.or_else(|| file.advertise.clone()),
        }))
    }
}

/// How the broker authenticates and authorizes (flags shared by `herald up` and `herald
/// broker serve`).
#[derive(clap::Args, Default)]
struct SecurityArgs {
    /// Turn authentication and ACLs off: every client may do everything. For throwaway
    /// setups only.
    #[arg(long)]
    insecure_no_auth: bool,
    /// A user who may do everything (repeatable; default: admin, the user generated on first
    /// start).
    #[arg(long = "super-user", value_name = "NAME")]
    super_users: Vec<String>,
    /// TOML file of ACL entries ([[acl]] tables) added at start.
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// PEM file of CA certificates: clients presenting a certificate signed by one are
    /// authenticated by it.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// How a client certificate's subject becomes a user name, in order (repeatable):
    /// RULE:<regex>/<replacement>/[L|U] or DEFAULT (the whole subject).
    #[arg(long = "principal-rule", value_name = "RULE")]
    principal_rules: Vec<String>,
}

impl SecurityArgs {
    /// The flags over the config file's values, into `config`.
    fn apply(
        self,
        file: SecurityFile,
        config: &mut herald_broker::SecurityConfig,
    ) -> anyhow::Result<()> {
        let insecure = self.insecure_no_auth || file.insecure_no_auth.unwrap_or(false);
        config.authentication = !insecure;
        let super_users = if self.super_users.is_empty() {
            file.super_users
        } else {
            Some(self.super_users)
        };
        if let Some(names) = super_users {
            config.super_users = names
                .iter()
                .map(|name| {
                    herald_auth::acl::Principal::user(name.as_str())
                        .with_context(|| format!("invalid super user '{name}'"))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        config.acl_seed = self.acl_file.or(file.acl_file);
        config.client_ca = self.client_ca.or(file.client_ca);
        let rules = if self.principal_rules.is_empty() {
            file.principal_rules.unwrap_or_default()
        } else {
            self.principal_rules
        };
        config.principal_rules = herald_broker::security::PrincipalRules::parse(&rules)?;
        if insecure {
            eprintln!(
                "{}",
                style::bad(
                    "WARNING: authentication is off (--insecure-no-auth): anyone who can reach the broker may read, write and delete everything"
                )
            );
        }
        Ok(())
    }
}

/// The security keys of the broker's TOML config file.
#[derive(Default)]
struct SecurityFile {
    insecure_no_auth: Option<bool>,
    super_users: Option<Vec<String>>,
    acl_file: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    principal_rules: Option<Vec<String>>,
}

/// The broker's TOML config file.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BrokerFile {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    registry: Option<String>,
    registry_ca: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    retention_check_interval_ms: Option<u64>,
    group_session_timeout_ms: Option<i64>,
    producer_expiry_ms: Option<u64>,
    group_revoke_timeout_ms: Option<i64>,
    /// "range" or "round_robin".
    group_assignor: Option<String>,
    insecure_no_auth: Option<bool>,
    super_users: Option<Vec<String>>,
    acl_file: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    principal_rules: Option<Vec<String>>,
    // Cluster settings, as the cluster flags.
    node_id: Option<u64>,
    /// "ID=HOST:PORT" for every node, this one's included.
    peers: Option<Vec<String>>,
    raft_listen: Option<SocketAddr>,
    cluster_ca: Option<PathBuf>,
    node_cert: Option<PathBuf>,
    node_key: Option<PathBuf>,
    join: Option<bool>,
    advertise: Option<String>,
}

impl BrokerServeArgs {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let file: BrokerFile = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid broker config {}", path.display()))?
            }
            None => BrokerFile::default(),
        };
        let cluster = self.cluster.into_config(&file)?;
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070)));
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .context("--data-dir (or data_dir in --config) is required")?;
        let mut config = BrokerConfig::new(listen, data_dir);
        config.cluster = cluster;
        let security = SecurityFile {
            insecure_no_auth: file.insecure_no_auth,
            super_users: file.super_users,
            acl_file: file.acl_file,
            client_ca: file.client_ca,
            principal_rules: file.principal_rules,
        };
        self.security.apply(security, &mut config.security)?;
        config.registry_url = self.registry.or(file.registry);
        config.registry_ca = self.registry_ca.or(file.registry_ca);
        config.metrics_listen = self.metrics_listen.or(file.metrics_listen);
        config.tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => herald_broker::TlsSource::Files { cert, key },
            (None, None) => herald_broker::TlsSource::Generated,
            _ => anyhow::bail!(
                "--tls-cert and --tls-key (or tls_cert and tls_key in --config) go together: give both, or neither for a generated self-signed certificate"
            ),
        };
        if let Some(ms) = file.retention_check_interval_ms {
            anyhow::ensure!(ms > 0, "retention_check_interval_ms must be positive");
            config.retention_check_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = file.producer_expiry_ms {
            anyhow::ensure!(ms > 0, "producer_expiry_ms must be positive");
            config.producer_expiry = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = file.group_session_timeout_ms {
            anyhow::ensure!(ms > 0, "group_session_timeout_ms must be positive");
            config.groups.session_timeout_ms = ms;
        }
        if let Some(ms) = file.group_revoke_timeout_ms {
            anyhow::ensure!(ms > 0, "group_revoke_timeout_ms must be positive");
            config.groups.revoke_timeout_ms = ms;
        }
        match file.group_assignor.as_deref() {
            None | Some("range") => {}
            Some("round_robin") => config.groups.assignor = herald_broker::Assignor::RoundRobin,
            Some(other) => {
                anyhow::bail!("group_assignor must be range or round_robin, not '{other}'")
            }
        }
        Ok(config)
    }
}

/// Colour for terminals only: `NO_COLOR` or a redirected stream get plain text.
pub(crate) mod style {
    use std::io::IsTerminal;

    fn enabled(terminal: bool) -> bool {
        terminal && std::env::var_os("NO_COLOR").is_none()
    }

    fn paint(text: &str, code: &str, terminal: bool) -> String {
        if enabled(terminal) {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Red, for stderr.
    pub(crate) fn error(text: &str) -> String {
        paint(text, "1;31", std::io::stderr().is_terminal())
    }

    /// Red, for stdout.
    pub(crate) fn bad(text: &str) -> String {
        paint(text, "1;31", std::io::stdout().is_terminal())
    }

    /// Green, for stdout.
    pub(crate) fn good(text: &str) -> String {
        paint(text, "32", std::io::stdout().is_terminal())
    }

    pub(crate) fn stderr_is_terminal() -> bool {
        enabled(std::io::stderr().is_terminal())
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft warns on every heartbeat a peer that is down misses: its errors
                // only, unless RUST_LOG asks for more.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(style::stderr_is_terminal())
        .init();
    if let Err(error) = real_main() {
        eprintln!("{} {}", style::error("error:"), one_line(&error));
        std::process::exit(1);
    }
}

/// What went wrong, with its causes joined by ": " — a cause whose text the line already ends
/// with (errors that print their source last, `"broker: {0}"`) is not said twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Async worker threads: one fewer than the cores (at least one), unless `TOKIO_WORKER_THREADS`
/// says otherwise. The core left over runs the broker's sync thread, its blocking file work
/// and the clients on the machine; on two cores one worker produced 10-40 % more than two
/// (fewer cross-thread wake-ups per request; bench/RESULTS.md, issue 18).
fn worker_threads(cores: usize, configured: Option<&str>) -> usize {
    configured
        .and_then(|text| text.trim().parse().ok())
        .filter(|&threads: &usize| threads > 0)
        .unwrap_or(cores.saturating_sub(1).max(1))
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(
            cores,
            std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
        ))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Command::Schema {
        command: SchemaCommand::Check(args),
    } = cli.command
    {
        // The CI step has its own exit codes (0 compatible, 1 incompatible, 2 error).
        let code = runtime.block_on(schema_check::run(args));
        std::process::exit(code);
    }
    runtime
        .block_on(run(cli.command))
        .map_err(admin::hint_authentication)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            data_dir,
            registry_listen,
            broker_listen,
            broker_metrics_listen,
            security,
        } => {
            let mut broker_security = herald_broker::SecurityConfig::default();
            security.apply(SecurityFile::default(), &mut broker_security)?;
            // The registry of `herald up` is plain HTTP for this machine's own clients (the
            // broker validates against it without credentials): beyond loopback it would
            // serve everyone, unauthenticated.
            anyhow::ensure!(
                registry_listen.ip().is_loopback() || !broker_security.authentication,
                "herald up serves its registry without authentication or TLS, so only on a loopback address (not {registry_listen}); to serve it beyond this machine run `herald registry serve --users herald-data/broker/users.meta --tls-cert ... --tls-key ...` and the broker with `herald broker serve` (or accept an open registry with --insecure-no-auth)"
            );
            let registry = ServerConfig {
                listen: registry_listen,
                data_dir: data_dir.join("registry"),
                auth: AuthSource::Open,
                // Loopback, for this machine's own clients: plain HTTP.
                tls: None,
            };
            // The broker validates against the registry's address as bound (a port 0 in
            // `--registry-listen` is resolved first).
            let (bound, listening) = tokio::sync::oneshot::channel();
            let registry = serve_registry_then(registry, move |addr| {
                let _ = bound.send(addr);
            });
            tokio::pin!(registry);
            let registry_addr = tokio::select! {
                addr = listening => addr.context("the schema registry did not start")?,
                result = &mut registry => {
                    result?;
                    anyhow::bail!("the schema registry stopped before it was listening");
                }
            };
            let mut broker = BrokerConfig::new(broker_listen, data_dir.join("broker"));
            broker.registry_url = Some(format!("http://{registry_addr}"));
            broker.metrics_listen = Some(broker_metrics_listen);
            broker.security = broker_security;
            let (registry_result, broker_result) = tokio::join!(registry, serve_broker(broker));
            registry_result.and(broker_result)
        }
        Command::Cluster {
            command:
                ClusterCommand::Up {
                    nodes,
                    data_dir,
                    base_port,
                    security,
                },
        } => {
            let mut broker_security = herald_broker::SecurityConfig::default();
            security.apply(SecurityFile::default(), &mut broker_security)?;
            let configs = cluster::configs(nodes, &data_dir, base_port, &broker_security)?;
            let brokers: Vec<String> = configs.iter().map(|c| c.listen.to_string()).collect();
            println!(
                "herald cluster of {nodes} nodes; clients: --broker {}",
                brokers.join(",")
            );
            if broker_security.authentication {
                let credentials = cluster::local_cluster_admin(&data_dir, nodes)?;
                println!(
                    "log in on any node with the admin credentials in {} (--credentials); users added with `herald user add NAME --online` are the same on every node",
                    credentials.display()
                );
            }
            let results = futures::future::join_all(configs.into_iter().map(serve_broker)).await;
            results
                .into_iter()
                .collect::<anyhow::Result<Vec<()>>>()
                .map(|_| ())
        }
        Command::Cluster {
            command:
                ClusterCommand::Status {
                    broker,
                    data_dir,
                    nodes,
                    base_port,
                },
        } => {
            let broker = match data_dir {
                Some(dir) => broker.local_cluster(
                    cluster::local_brokers(nodes, base_port)?,
                    cluster::local_client_certificate(&dir),
                    dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE),
                ),
                None => broker,
            };
            cluster::status(&broker).await
        }
        Command::Cluster {
            command:
                ClusterCommand::Move {
                    broker,
                    topic,
                    partition,
                    replicas,
                    wait,
                    timeout_secs,
                },
        } => {
            let timeout = wait.then(|| std::time::Duration::from_secs(timeout_secs));
            cluster::move_partition(&broker, &topic, partition, &replicas, timeout).await
        }
        Command::Cluster {
            command:
                ClusterCommand::RemoveNode {
                    broker,
                    node,
                    timeout_secs,
                },
        } => {
            cluster::remove_node(&broker, node, std::time::Duration::from_secs(timeout_secs))
                .await?;
            println!("node {node} left the cluster; stop its process");
            Ok(())
        }
        Command::Schema {
            command: SchemaCommand::Check(args),
        } => {
            std::process::exit(schema_check::run(args).await);
        }
        Command::Schema {
            command: SchemaCommand::Admin(command),
        } => admin::schema(command).await,
        Command::Topic { command } => admin::topic(command).await,
        Command::Dlq { command } => dlq::run(command).await,
        Command::Produce(args) => stream::produce(args).await,
        Command::Consume(args) => stream::consume(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut std::io::stdout());
            Ok(())
        }
        Command::Group { command } => admin::group(command).await,
        Command::Broker {
            command: BrokerCommand::Serve(args),
        } => serve_broker(args.into_config()?).await,
        Command::Registry {
            command: RegistryCommand::HashPassword,
        } => {
            let password = password_from_stdin()?;
            println!(
                "password_hash = \"{}\"",
                herald_registry::auth::hash_password(&password)?
            );
            Ok(())
        }
        Command::User { command } => user(command).await,
        Command::Acl { command } => acl::run(command).await,
        Command::Registry {
            command:
                RegistryCommand::Serve {
                    listen,
                    data_dir,
                    users,
                    auth_file,
                    tls_cert,
                    tls_key,
                },
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(RegistryTls { cert, key }),
                (None, None) => None,
                _ => anyhow::bail!(
                    "--tls-cert and --tls-key go together: give both for HTTPS, or neither for plain HTTP"
                ),
            };
            let auth = match (users, auth_file) {
                (Some(users), _) => AuthSource::Shared(users),
                (None, Some(file)) => AuthSource::Toml(file),
                (None, None) => AuthSource::Open,
            };
            serve_registry(ServerConfig {
                listen,
                data_dir,
                auth,
                tls,
            })
            .await
        }
    }
}

async fn serve_registry(config: ServerConfig) -> anyhow::Result<()> {
    serve_registry_then(config, |_| {}).await
}

/// Serves the registry; `on_bound` learns its address once it listens.
async fn serve_registry_then(
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    herald_registry::serve(
        config,
        |addr| {
            println!("herald registry listening on {scheme}://{addr}");
            on_bound(addr);
        },
        shutdown_signal(),
    )
    .await
    .context("the schema registry failed")
}

async fn serve_broker(config: BrokerConfig) -> anyhow::Result<()> {
    herald_broker::serve(
        config,
        |bound| {
            println!(
                "herald broker listening on quic://{} fingerprint={} certificate={}",
                bound.addr,
                bound.fingerprint,
                bound.certificate_path.display()
            );
            if let Some(metrics) = bound.metrics_addr {
                println!("herald broker metrics on http://{metrics}/metrics");
            }
        },
        shutdown_signal(),
    )
    .await
    .context("the broker failed")
}

/// Completes on Ctrl-C or SIGTERM. The signal handlers are installed when this is called,
/// not when the future is first polled: a SIGTERM that arrives while a server is still
/// starting must not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let (trigger, mut triggered) = tokio::sync::watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                    tracing::info!("shutdown requested");
                    let _ = trigger.send(true);
                });
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGTERM/SIGINT")
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = trigger.send(true);
        }
    });
    async move {
        let _ = triggered.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Cluster settings from the config file and flags together, the flags winning; cluster
    /// settings without a node id anywhere are refused instead of starting a single broker.
    #[test]
    fn cluster_settings_merge_from_file_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("broker.toml");
        let serve = |extra: &[&str]| -> anyhow::Result<BrokerConfig> {
            let mut args = vec!["herald", "broker", "serve", "--data-dir", "d", "--config"];
            let path = config.to_str().expect("utf-8");
            args.push(path);
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args)?.command {
                Command::Broker {
                    command: BrokerCommand::Serve(serve),
                } => serve.into_config(),
                _ => anyhow::bail!("not broker serve"),
            }
        };
        std::fs::write(
            &config,
            "peers = [\"1=127.0.0.1:7170\", \"2=127.0.0.1:7172\"]\ncluster_ca = \"ca.pem\"\nnode_cert = \"n.pem\"\nnode_key = \"n.key\"\njoin = true\nadvertise = \"file:1\"\n",
        )
        .expect("config");
        let merged = serve(&["--node-id", "2", "--advertise", "flag:2"])
            .expect("node id by flag, the rest from the file")
            .cluster
            .expect("a cluster node");
        assert_eq!(merged.node_id, 2);
        assert_eq!(merged.peers.len(), 2);
        assert_eq!(
            merged.raft_listen.port(),
            7172,
            "its own entry of the file's peers"
        );
        assert!(merged.join);
        assert_eq!(merged.advertise.as_deref(), Some("flag:2"), "the flag wins");
        let refused = serve(&[]).expect_err("settings without a node id");
        assert!(refused.to_string().contains("node id"), "{refused}");
        std::fs::write(&config, "node_id = 1\n").expect("config");
        let refused = serve(&[]).expect_err("a node without peers");
        assert!(refused.to_string().contains("peers"), "{refused}");
    }

    #[test]
    fn one_core_is_left_to_the_rest_unless_configured() {
        assert_eq!(worker_threads(2, None), 1);
        assert_eq!(worker_threads(1, None), 1);
        assert_eq!(worker_threads(16, None), 15);
        assert_eq!(worker_threads(2, Some("2")), 2);
        assert_eq!(worker_threads(2, Some("0")), 1, "0 is not a thread count");
        assert_eq!(worker_threads(8, Some("many")), 7);
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        /// An error that prints its source, as `#[error("broker: {0}")]` with `#[from]` does.
        #[derive(Debug)]
        struct Wrapping(std::io::Error);
        impl std::fmt::Display for Wrapping {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "broker: {}", self.0)
            }
        }
        impl std::error::Error for Wrapping {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = anyhow::Error::from(Wrapping(std::io::Error::other("disk full")))
            .context("consuming orders");
        assert_eq!(one_line(&error), "consuming orders: broker: disk full");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }

    fn parses(args: &[&str]) -> bool {
        Cli::try_parse_from(std::iter::once("herald").chain(args.iter().copied())).is_ok()
    }

    #[test]
    fn the_command_line_is_consistent() {
        // Duplicate flags (e.g. two flattened `--user`s) and dangling ids panic here.
        Cli::command().debug_assert();
    }

    #[test]
    fn acl_flags_take_keywords_in_any_case() {
        let add = ["acl", "add", "--principal", "User:alice", "--resource-type"];
        let with = |rest: &[&'static str]| -> Vec<&'static str> {
            add.iter().chain(rest).copied().collect()
        };
        assert!(parses(&with(&[
            "Topic",
            "--name",
            "orders",
            "--operation",
            "WRITE",
            "--operation",
            "read"
        ])));
        assert!(parses(&with(&["cluster", "--operation", "alter"])));
        assert!(
            !parses(&with(&["topic", "--name", "orders"])),
            "no operation"
        );
        assert!(!parses(&with(&[
            "table",
            "--name",
            "t",
            "--operation",
            "read"
        ])));
        assert!(!parses(&[
            "acl",
            "add",
            "--principal",
            "alice",
            "--resource-type",
            "topic",
            "--name",
            "o",
            "--operation",
            "read"
        ]));
        assert!(parses(&[
            "acl",
            "list",
            "--principal",
            "User:*",
            "--pattern",
            "prefixed",
            "--json"
        ]));
        assert!(parses(&["acl", "remove", "--all"]));
        assert!(parses(&[
            "produce",
            "orders",
            "--user",
            "alice",
            "--registry-user",
            "reader"
        ]));
    }
}
