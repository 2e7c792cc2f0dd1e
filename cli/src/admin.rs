//! Day-to-day administration: `herald schema register|get|list|versions|delete|config`,
//! `herald topic create|list|describe|delete` and `herald group list|describe`. Thin wrappers
//! over the registry and broker clients; errors come back as one line. [`BrokerArgs`] is how
//! every broker command finds and authenticates to the broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use herald_auth::local::LOCAL_CREDENTIALS_FILE;
use herald_broker_client::{BrokerClient, ConnectError, Credentials, RequestError, Router, Trust};
use herald_registry_client::{NewSchema, RegistryClient, Version};
use herald_wire::groups::{GroupRequest, GroupResponse};
use herald_wire::messages::{SchemaValidation, SubjectStrategy, TopicConfig, TopicDescription};
use herald_wire::ErrorCode;
use serde_json::json;

/// `herald schema pin`: fetches every pinned version (and what it imports) and writes
/// herald.lock.
async fn pin(
    manifest_path: &Path,
    registry: Option<String>,
    user: Option<String>,
    password: Option<String>,
    registry_ca: Option<PathBuf>,
) -> anyhow::Result<()> {
    let manifest = herald_codegen::Manifest::load(manifest_path)?;
    let Some(pins) = &manifest.registry else {
        anyhow::bail!(
            "{} has no [registry] section with pins to resolve",
            manifest_path.display()
        );
    };
    let url = registry.unwrap_or_else(|| pins.url.clone());
    let client = registry_client(
        &url,
        user.as_deref(),
        password.as_deref(),
        registry_ca.as_deref(),
    )?;
    let lock_path = manifest.lock_path();
    let mut lock = herald_codegen::Lock::load(&lock_path)?;
    // herald-codegen walks the pins and what they import; the registry calls are here.
    let pinned = herald_codegen::resolve_pins(
        &pins.pins,
        async |subject: &str,
               version: u32,
               imported_by: Option<&str>|
               -> anyhow::Result<herald_codegen::FetchedSchema> {
            let found = client
                .version(subject, Version::Number(version))
                .await
                .with_context(|| {
                    let by = imported_by
                        .map(|by| format!(" (imported by {by})"))
                        .unwrap_or_default();
                    format!("{subject} version {version}{by} at {url}")
                })?;
            Ok(herald_codegen::FetchedSchema {
                version: found.version,
                id: found.id,
                schema_type: found.schema_type,
                schema: found.schema,
                references: found
                    .references
                    .into_iter()
                    .map(|reference| herald_codegen::FetchedReference {
                        name: reference.name,
                        subject: reference.subject,
                        version: reference.version,
                    })
                    .collect(),
            })
        },
    )
    .await?;
    herald_codegen::lock_pinned(&mut lock, &pinned, |entry| {
        println!("{} v{} -> id {}", entry.subject, entry.version, entry.id);
    })?;
    let written = lock.save(&lock_path)?;
    println!(
        "{} {}",
        lock_path.display(),
        if written { "updated" } else { "unchanged" }
    );
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct RegistryArgs {
    /// Registry URL.
    #[arg(long, env = "HERALD_REGISTRY", default_value = "http://127.0.0.1:8081")]
    registry: String,
    #[arg(long, env = "HERALD_REGISTRY_USER")]
    user: Option<String>,
    #[arg(long, env = "HERALD_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for an https:// registry, besides
    /// the system's roots.
    #[arg(long, env = "HERALD_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    pub(crate) fn client(&self) -> anyhow::Result<RegistryClient> {
        registry_client(
            &self.registry,
            self.user.as_deref(),
            self.password.as_deref(),
            self.registry_ca.as_deref(),
        )
    }
}

/// The registry flags of the commands that also talk to the broker (`herald produce|consume`):
/// there `--user` is the broker's ([`BrokerArgs`]), so the registry's basic-auth user and
/// password are `--registry-user` and `--registry-password`.
#[derive(clap::Args)]
pub(crate) struct StreamRegistryArgs {
    /// Registry URL.
    #[arg(long, env = "HERALD_REGISTRY", default_value = "http://127.0.0.1:8081")]
    registry: String,
    /// Basic-auth user for the registry.
    #[arg(long, env = "HERALD_REGISTRY_USER")]
    registry_user: Option<String>,
    /// Basic-auth password for the registry.
    #[arg(long, env = "HERALD_REGISTRY_PASSWORD", hide_env_values = true)]
    registry_password: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for an https:// registry, besides
    /// the system's roots.
    #[arg(long, env = "HERALD_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,
}

impl StreamRegistryArgs {
    pub(crate) fn client(&self) -> anyhow::Result<RegistryClient> {
        registry_client(
            &self.registry,
            self.registry_user.as_deref(),
            self.registry_password.as_deref(),
            self.registry_ca.as_deref(),
        )
    }
}

/// A registry client for `url`, with basic auth when both `user` and `password` are given,
/// trusting the certificates of `ca` (a PEM file) for an https:// registry. Every command
/// that talks to the registry gets its client here.
pub(crate) fn registry_client(
    url: &str,
    user: Option<&str>,
    password: Option<&str>,
    ca: Option<&Path>,
) -> anyhow::Result<RegistryClient> {
    let mut client = RegistryClient::new(url)?;
    if let Some(ca) = ca {
        client = client.with_ca_file(ca)?;
    }
    Ok(match (user, password) {
        (Some(user), Some(password)) => client.with_basic_auth(user, password),
        _ => client,
    })
}

#[derive(Subcommand)]
pub(crate) enum SchemaAdmin {
    /// Register a schema file under a subject; prints its ID.
    ///
    /// Example: herald schema register --subject orders-value --type avro schemas/order.avsc
    Register {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        subject: String,
        #[arg(long = "type", default_value = "avro")]
        schema_type: String,
        file: PathBuf,
    },
    /// Print a subject's version (default latest) as JSON.
    ///
    /// Example: herald schema get --subject orders-value --version 2
    Get {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// List subjects, one per line.
    ///
    /// Example: herald schema list --deleted
    List {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        deleted: bool,
    },
    /// List a subject's versions, one per line.
    ///
    /// Example: herald schema versions --subject orders-value
    Versions {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        subject: String,
    },
    /// Delete a subject (or one version); soft unless --permanent.
    ///
    /// Example: herald schema delete --subject orders-value --version 1
    Delete {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        version: Option<u32>,
        #[arg(long)]
        permanent: bool,
    },
    /// Compare two schema files in both directions, offline.
    ///
    /// Example: herald schema diff old/order.avsc schemas/order.avsc
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long = "type", default_value = "avro")]
        schema_type: String,
    },
    /// Resolve the manifest's registry pins into herald.lock (subject, version, ID,
    /// fingerprint, schema text), so builds use them offline. Commit herald.lock.
    ///
    /// Example: herald schema pin --manifest herald.toml
    Pin {
        #[arg(long, default_value = "herald.toml")]
        manifest: PathBuf,
        /// Registry URL (default: the manifest's [registry] url).
        #[arg(long)]
        registry: Option<String>,
        #[arg(long, env = "HERALD_REGISTRY_USER")]
        user: Option<String>,
        #[arg(long, env = "HERALD_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// PEM file of the certificate (or its CA) to trust for an https:// registry, besides
        /// the system's roots.
        #[arg(long, env = "HERALD_REGISTRY_CA", value_name = "FILE")]
        registry_ca: Option<PathBuf>,
    },
    /// Show or set a compatibility level (global without --subject).
    ///
    /// Example: herald schema config --subject orders-value --level FULL_TRANSITIVE
    Config {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        level: Option<String>,
    },
}

pub(crate) async fn schema(command: SchemaAdmin) -> anyhow::Result<()> {
    match command {
        SchemaAdmin::Diff {
            old,
            new,
            schema_type,
        } => {
            let kind: herald_schema::SchemaType = schema_type.parse()?;
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let old_schema = herald_schema::ParsedSchema::parse(kind, &read(&old)?, &[])
                .with_context(|| old.display().to_string())?;
            let new_schema = herald_schema::ParsedSchema::parse(kind, &read(&new)?, &[])
                .with_context(|| new.display().to_string())?;
            for (label, level) in [
                (
                    "backward (new reads old)",
                    herald_schema::CompatibilityLevel::Backward,
                ),
                (
                    "forward (old reads new)",
                    herald_schema::CompatibilityLevel::Forward,
                ),
            ] {
                let findings = herald_schema::check_pair(&old_schema, &new_schema, level);
                if findings.is_empty() {
                    println!("{label}: compatible");
                } else {
                    println!("{label}: {} incompatibilities", findings.len());
                    for finding in findings {
                        println!("  {finding}");
                    }
                }
            }
        }
        SchemaAdmin::Register {
            registry,
            subject,
            schema_type,
            file,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let schema = match schema_type.to_ascii_lowercase().as_str() {
                "avro" => NewSchema::avro(text),
                "protobuf" => NewSchema::protobuf(text),
                other => anyhow::bail!("--type must be avro or protobuf, not '{other}'"),
            };
            let id = registry.client()?.register(&subject, &schema).await?;
            println!("{id}");
        }
        SchemaAdmin::Get {
            registry,
            subject,
            version,
        } => {
            let version = version.map_or(Version::Latest, Version::Number);
            let found = registry.client()?.version(&subject, version).await?;
            let value = json!({"subject": found.subject, "version": found.version, "id": found.id, "schemaType": found.schema_type, "schema": found.schema});
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        SchemaAdmin::List { registry, deleted } => {
            for subject in registry.client()?.subjects(deleted).await? {
                println!("{subject}");
            }
        }
        SchemaAdmin::Versions { registry, subject } => {
            for version in registry.client()?.versions(&subject).await? {
                println!("{version}");
            }
        }
        SchemaAdmin::Delete {
            registry,
            subject,
            version,
            permanent,
        } => {
            let client = registry.client()?;
            match version {
                Some(version) => println!(
                    "{}",
                    client
                        .delete_version(&subject, Version::Number(version), permanent)
                        .await?
                ),
                None => {
                    for version in client.delete_subject(&subject, permanent).await? {
                        println!("{version}");
                    }
                }
            }
        }
        SchemaAdmin::Pin {
            manifest,
            registry,
            user,
            password,
            registry_ca,
        } => pin(&manifest, registry, user, password, registry_ca).await?,
        SchemaAdmin::Config {
            registry,
            subject,
            level,
        } => {
            let client = registry.client()?;
            if let Some(level) = level {
                client
                    .set_compatibility_level(subject.as_deref(), &level)
                    .await?;
            }
            println!("{}", client.compatibility_level(subject.as_deref()).await?);
        }
    }
    Ok(())
}

/// Where `herald up` keeps the broker's data, relative to where it runs.
const LOCAL_BROKER_DATA_DIR: &str = "./herald-data/broker";
/// The environment variable `--user`'s password is read from (never a flag: flags show in
/// `ps`).
const PASSWORD_ENV: &str = "HERALD_PASSWORD";
/// Added to an error the broker gave because the client did not, or could not, authenticate.
const AUTHENTICATION_HINT: &str =
    "the broker requires authentication: run where `herald up` keeps ./herald-data, or pass --user with HERALD_PASSWORD set";

#[derive(clap::Args, Clone)]
pub(crate) struct BrokerArgs {
    /// Broker QUIC address, or a comma-separated bootstrap list of one cluster's brokers (all
    /// are tried at once; the first that answers is used).
    #[arg(
        long,
        env = "HERALD_BROKER",
        default_value = "127.0.0.1:7070",
        value_delimiter = ','
    )]
    broker: Vec<SocketAddr>,
    /// SHA-256 fingerprint of the broker's certificate (as `herald up` prints it).
    #[arg(
        long,
        env = "HERALD_BROKER_FINGERPRINT",
        conflicts_with = "certificate"
    )]
    fingerprint: Option<String>,
    /// The broker's certificate file (default: the one `herald up` generated).
    #[arg(
        long,
        env = "HERALD_BROKER_CERTIFICATE",
        default_value = "./herald-data/broker/tls/cert.pem"
    )]
    certificate: PathBuf,
    /// User to authenticate to the broker as (SCRAM-SHA-256). Its password is read from the
    /// HERALD_PASSWORD environment variable, never from a flag.
    #[arg(long, env = "HERALD_USER", value_name = "NAME")]
    user: Option<String>,
    /// Credentials file (`user = "..."` and `password = "..."` lines) used without --user
    /// [default: ./herald-data/broker/admin.credentials, the super user `herald up` generates,
    /// when that file exists].
    #[arg(long, env = "HERALD_CREDENTIALS", value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Client certificate (PEM) to authenticate with, together with --client-key.
    #[arg(long, env = "HERALD_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "HERALD_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
}

impl BrokerArgs {
    /// How to authenticate to the broker: the client certificate (--client-cert and
    /// --client-key), else --user with the password in HERALD_PASSWORD, else the credentials
    /// file (--credentials, or `herald up`'s when it exists), else not at all.
    pub(crate) fn credentials(&self) -> anyhow::Result<Credentials> {
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                anyhow::ensure!(
                    self.user.is_none(),
                    "--client-cert and --user are two ways to authenticate: give one of them"
                );
                return Ok(Credentials::Certificate {
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "--client-cert and --client-key (HERALD_CLIENT_CERT and HERALD_CLIENT_KEY) go together: give both, or neither"
            ),
        }
        if let Some(user) = &self.user {
            let password = match std::env::var(PASSWORD_ENV) {
                Ok(password) if !password.is_empty() => password,
                Ok(_) | Err(std::env::VarError::NotPresent) => anyhow::bail!(
                    "--user {user} needs its password in the {PASSWORD_ENV} environment variable (it is never a flag: flags show in `ps`)"
                ),
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("{PASSWORD_ENV} is not valid UTF-8")
                }
            };
            return Ok(Credentials::scram(user.clone(), password));
        }
        let (path, explicit) = match &self.credentials {
            Some(path) => (path.clone(), true),
            None => (
                Path::new(LOCAL_BROKER_DATA_DIR).join(LOCAL_CREDENTIALS_FILE),
                false,
            ),
        };
        let exists = path
            .try_exists()
            .with_context(|| format!("cannot look for the credentials file {}", path.display()))?;
        if !exists {
            anyhow::ensure!(
                !explicit,
                "the credentials file {} does not exist",
                path.display()
            );
            return Ok(Credentials::None);
        }
        // The error names the file.
        Ok(Credentials::from_local_file(&path)?)
    }

    /// These arguments pointed at a local cluster's brokers (`herald cluster up`): its
    /// addresses, and the one certificate its nodes serve clients.
    /// The brokers of a local cluster (`herald cluster up`), trusted by its certificate, and
    /// logged in as its admin (`credentials`, when the cluster made one and neither --user nor
    /// --credentials says otherwise).
    pub(crate) fn local_cluster(
        &self,
        brokers: Vec<SocketAddr>,
        certificate: PathBuf,
        credentials: PathBuf,
    ) -> Self {
        let credentials = match (&self.user, &self.credentials) {
            (None, None) if credentials.exists() => Some(credentials),
            _ => self.credentials.clone(),
        };
        Self {
            broker: brokers,
            fingerprint: None,
            certificate,
            credentials,
            ..self.clone()
        }
    }

    fn trust(&self) -> Trust {
        match &self.fingerprint {
            Some(fingerprint) => Trust::Fingerprint(fingerprint.clone()),
            None => Trust::CertificateFile(self.certificate.clone()),
        }
    }

    /// A router over the bootstrap list, starting from a connection made by
    /// [`BrokerArgs::client`]: produce requests go to each partition's leader on a cluster.
    pub(crate) async fn router(&self) -> anyhow::Result<std::sync::Arc<Router>> {
        let first = self.client().await?;
        let dial =
            herald_broker_client::dialer(self.broker.clone(), self.trust(), self.credentials()?);
        Ok(std::sync::Arc::new(Router::new(dial, Some(first))))
    }

    /// A connection to the one broker at `addr`, with these arguments' trust and credentials.
    pub(crate) async fn client_at(&self, addr: SocketAddr) -> anyhow::Result<BrokerClient> {
        Ok(BrokerClient::connect_with(addr, self.trust(), &self.credentials()?).await?)
    }

    pub(crate) async fn client(&self) -> anyhow::Result<BrokerClient> {
        let trust = self.trust();
        let credentials = self.credentials()?;
        let who = match &credentials {
            Credentials::Scram { user, .. } => format!(" as {user}"),
            Credentials::Certificate { cert, .. } => {
                format!(" with the client certificate {}", cert.display())
            }
            Credentials::None => String::new(),
        };
        let addrs = self
            .broker
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        BrokerClient::connect_any(&self.broker, trust, &credentials)
            .await
            .with_context(|| format!("cannot connect to the broker at {addrs}{who}"))
    }
}

/// Whether the broker refused because the client did not, or could not, authenticate.
fn is_authentication_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(error) = cause.downcast_ref::<RequestError>() {
        return matches!(
            error.code(),
            Some(ErrorCode::NotAuthenticated | ErrorCode::AuthenticationFailed)
        );
    }
    if let Some(error) = cause.downcast_ref::<ConnectError>() {
        return matches!(error, ConnectError::Authentication(_));
    }
    // The SDK may carry the broker's code as text (`{code:?}`).
    let text = cause.to_string();
    text.contains("NotAuthenticated") || text.contains("AuthenticationFailed")
}

/// `error` with [`AUTHENTICATION_HINT`] when the broker refused it for want of
/// authentication; otherwise `error` as it is.
pub(crate) fn hint_authentication(error: anyhow::Error) -> anyhow::Error {
    if error.chain().any(is_authentication_error) {
        error.context(AUTHENTICATION_HINT)
    } else {
        error
    }
}

#[derive(Subcommand)]
pub(crate) enum TopicAdmin {
    /// Create a topic.
    ///
    /// Example: herald topic create orders --partitions 4 --retention-hours 168 --validate-value --dedup-window 120
    Create {
        #[command(flatten)]
        broker: BrokerArgs,
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete segments older than this many hours, or `forever` to keep them; omit to
        /// keep a week.
        #[arg(long, value_parser = parse_retention)]
        retention_hours: Option<Retention>,
        /// Delete the oldest segments while a partition is larger than this.
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[arg(long, default_value_t = 256 * 1024 * 1024)]
        segment_bytes: u64,
        /// Require a registered schema ID on every record value.
        #[arg(long)]
        validate_value: bool,
        /// Require a registered schema ID on every record key.
        #[arg(long)]
        validate_key: bool,
        /// Subject naming: topic (default), record, topic-record.
        #[arg(long, default_value = "topic")]
        strategy: String,
        /// Broker-side dedup on the idempotency-key header: a record whose key was stored
        /// within this many seconds is acknowledged without being stored again.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "120")]
        dedup_window: Option<u64>,
    },
    /// List topics, one per line.
    List {
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Describe a topic's configuration and partitions as JSON.
    Describe {
        #[command(flatten)]
        broker: BrokerArgs,
        name: String,
    },
    /// Delete a topic and all its data.
    Delete {
        #[command(flatten)]
        broker: BrokerArgs,
        name: String,
    },
}

pub(crate) async fn topic(command: TopicAdmin) -> anyhow::Result<()> {
    match command {
        TopicAdmin::Create {
            broker,
            name,
            partitions,
            retention_hours,
            retention_bytes,
            segment_bytes,
            validate_value,
            validate_key,
            strategy,
            dedup_window,
        } => {
            let strategy = match strategy.as_str() {
                "topic" => SubjectStrategy::TopicName,
                "record" => SubjectStrategy::RecordName,
                "topic-record" => SubjectStrategy::TopicRecordName,
                other => {
                    anyhow::bail!("--strategy must be topic, record or topic-record, not '{other}'")
                }
            };
            let mut config = TopicConfig {
                partitions,
                retention_bytes,
                segment_bytes,
                validation: SchemaValidation {
                    key: validate_key,
                    value: validate_value,
                    strategy,
                },
                dedup_window: match dedup_window {
                    Some(0) => anyhow::bail!(
                        "--dedup-window must be at least 1 second (omit it to turn dedup off)"
                    ),
                    seconds => seconds.map(Duration::from_secs),
                },
                ..TopicConfig::default()
            };
            match retention_hours {
                Some(Retention::Forever) => config.retention = None,
                Some(Retention::Hours(hours)) => {
                    config.retention = Some(Duration::from_secs(hours * 3600))
                }
                None => {}
            }
            broker.client().await?.create_topic(&name, config).await?;
            println!("created {name}");
        }
        TopicAdmin::List { broker } => {
            for topic in broker.client().await?.list_topics().await? {
                println!("{}", topic.name);
            }
        }
        TopicAdmin::Describe { broker, name } => {
            let router = broker.router().await?;
            let topic = describe_from_leaders(&router, &name).await?;
            let partitions: Vec<serde_json::Value> = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut value = json!({"partition": p.partition, "log_start_offset": p.log_start_offset, "high_watermark": p.high_watermark, "segments": p.segments, "size_bytes": p.size_bytes, "problem": p.problem});
                    if let Some(replication) = &p.replication {
                        value["leader"] = json!(replication.leader);
                        value["term"] = json!(replication.term);
                        value["replicas"] = json!(replication.replicas);
                        value["followers"] = replication
                            .followers
                            .iter()
                            .map(|f| json!({"node": f.node, "batches_behind": f.batches_behind}))
                            .collect();
                    }
                    value
                })
                .collect();
            let config = &topic.config;
            let value = json!({
                "name": topic.name,
                "id": topic.id.to_string(),
                "partitions": partitions,
                "retention_ms": config.retention.map(|d| d.as_millis() as u64),
                "retention_bytes": config.retention_bytes,
                "segment_bytes": config.segment_bytes,
                "validate_key": config.validation.key,
                "validate_value": config.validation.value,
                "strategy": format!("{:?}", config.validation.strategy),
                "dedup_window_ms": config.dedup_window.map(|d| d.as_millis() as u64),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        TopicAdmin::Delete { broker, name } => {
            broker.client().await?.delete_topic(&name).await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

/// `name` as described by the broker; on a cluster, each partition as its leader describes it
/// (only the leader knows how far each follower is behind; a partition whose leader cannot
/// be reached keeps the first answer's view).
pub(crate) async fn describe_from_leaders(
    router: &Router,
    name: &str,
) -> anyhow::Result<TopicDescription> {
    let mut topic = router.any().await?.client.describe_topic(name).await?;
    let mut by_connection: std::collections::HashMap<usize, TopicDescription> =
        std::collections::HashMap::new();
    for partition in &mut topic.partitions {
        if partition.replication.is_none() {
            continue;
        }
        let Ok(route) = router.leader(name, partition.partition).await else {
            continue;
        };
        let id = route.client.stable_id();
        if let std::collections::hash_map::Entry::Vacant(slot) = by_connection.entry(id) {
            match route.client.describe_topic(name).await {
                Ok(described) => {
                    slot.insert(described);
                }
                Err(error) => {
                    router.failed(name, &route, &error);
                    continue;
                }
            }
        }
        let from_leader = by_connection.get(&id).and_then(|described| {
            described
                .partitions
                .iter()
                .find(|p| p.partition == partition.partition)
        });
        if let Some(from_leader) = from_leader {
            *partition = from_leader.clone();
        }
    }
    Ok(topic)
}

#[derive(Subcommand)]
pub(crate) enum GroupAdmin {
    /// List consumer groups, one per line.
    List {
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Members, assignments, committed offsets and lag (records and seconds) per partition.
    ///
    /// Example: herald group describe email-sender
    Describe {
        #[command(flatten)]
        broker: BrokerArgs,
        group: String,
    },
    /// Delete a group and its committed offsets. Refused while the group has live members:
    /// stop its consumers first (their sessions then expire).
    ///
    /// Example: herald group delete email-sender
    Delete {
        #[command(flatten)]
        broker: BrokerArgs,
        group: String,
    },
}

pub(crate) async fn group(command: GroupAdmin) -> anyhow::Result<()> {
    match command {
        GroupAdmin::Delete { broker, group } => {
            broker
                .client()
                .await?
                .group(GroupRequest::Delete {
                    group: group.clone(),
                })
                .await?;
            println!("deleted group {group}");
        }
        GroupAdmin::List { broker } => {
            if let GroupResponse::Groups(groups) =
                broker.client().await?.group(GroupRequest::List).await?
            {
                for group in groups {
                    println!("{group}");
                }
            }
        }
        GroupAdmin::Describe { broker, group } => {
            let GroupResponse::Description(description) = broker
                .client()
                .await?
                .group(GroupRequest::Describe { group })
                .await?
            else {
                anyhow::bail!("unexpected answer");
            };
            println!(
                "group {} generation {} members {}",
                description.group,
                description.generation,
                description.members.len()
            );
            for member in &description.members {
                let partitions: Vec<String> =
                    member.partitions.iter().map(ToString::to_string).collect();
                println!("  member {}: {}", member.member_id, partitions.join(" "));
            }
            println!(
                "  {:<30} {:>12} {:>12} {:>10} {:>10}",
                "partition", "committed", "end", "lag", "lag_s"
            );
            for lag in &description.partitions {
                let seconds = match lag.lag_ms {
                    Some(ms) => format!("{:.1}", ms as f64 / 1000.0),
                    None => "-".to_owned(),
                };
                // Printed as -1 when nothing was committed, as always.
                let committed = lag
                    .committed
                    .map_or_else(|| "-1".to_owned(), |offset| offset.to_string());
                println!(
                    "  {:<30} {:>12} {:>12} {:>10} {:>10}",
                    lag.partition.to_string(),
                    committed,
                    lag.end_offset,
                    lag.lag_records,
                    seconds
                );
                if let Some(problem) = &lag.problem {
                    println!("    ! {problem}");
                }
            }
        }
    }
    Ok(())
}

/// How long a topic keeps its segments (`--retention-hours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retention {
    Hours(u64),
    Forever,
}

/// Most hours `--retention-hours` takes (about 100 years; more would overflow milliseconds
/// on the broker).
const RETENTION_HOURS_MAX: u64 = 24 * 365 * 100;

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text.eq_ignore_ascii_case("forever") {
        return Ok(Retention::Forever);
    }
    match text.parse::<u64>() {
        Ok(0) => Err(
            "0 hours would delete everything at once; use `forever` to keep segments".to_owned(),
        ),
        Ok(hours) if hours > RETENTION_HOURS_MAX => Err(format!(
            "at most {RETENTION_HOURS_MAX} hours; use `forever` to keep segments"
        )),
        Ok(hours) => Ok(Retention::Hours(hours)),
        Err(_) => Err(format!("'{text}' is not a number of hours or `forever`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_hours_or_forever() {
        assert_eq!(parse_retention("168"), Ok(Retention::Hours(168)));
        assert_eq!(parse_retention("Forever"), Ok(Retention::Forever));
        assert!(parse_retention("0").is_err_and(|e| e.contains("forever")));
        assert!(parse_retention("876001").is_err());
        assert!(parse_retention("a week").is_err());
    }

    #[derive(clap::Parser)]
    struct BrokerOnly {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn broker_args(flags: &[&str]) -> BrokerArgs {
        use clap::Parser;
        let args = std::iter::once("herald").chain(flags.iter().copied());
        BrokerOnly::try_parse_from(args)
            .expect("flags parse")
            .broker
    }

    fn credentials_error(flags: &[&str]) -> String {
        match broker_args(flags).credentials() {
            Ok(_) => panic!("{flags:?} should be refused"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn the_broker_flag_takes_a_bootstrap_list() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("addr");
        assert_eq!(broker_args(&[]).broker, [addr("127.0.0.1:7070")]);
        assert_eq!(
            broker_args(&["--broker", "127.0.0.1:1,127.0.0.2:2"]).broker,
            [addr("127.0.0.1:1"), addr("127.0.0.2:2")]
        );
        assert_eq!(
            broker_args(&["--broker", "127.0.0.1:1", "--broker", "[::1]:3"]).broker,
            [addr("127.0.0.1:1"), addr("[::1]:3")]
        );
    }

    #[test]
    fn client_certificate_and_key_go_together_and_not_with_a_user() {
        assert!(credentials_error(&["--client-cert", "c.pem"]).contains("go together"));
        assert!(credentials_error(&["--client-key", "k.pem"]).contains("go together"));
        assert!(credentials_error(&[
            "--client-cert",
            "c.pem",
            "--client-key",
            "k.pem",
            "--user",
            "alice"
        ])
        .contains("--user"));
        let credentials = broker_args(&["--client-cert", "c.pem", "--client-key", "k.pem"])
            .credentials()
            .expect("a certificate");
        assert!(matches!(
            credentials,
            Credentials::Certificate { cert, key }
                if cert.as_path() == Path::new("c.pem") && key.as_path() == Path::new("k.pem")
        ));
    }

    #[test]
    fn an_explicit_credentials_file_must_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope.credentials");
        let missing = missing.to_str().expect("utf-8 path");
        assert!(credentials_error(&["--credentials", missing]).contains("does not exist"));
    }
}
