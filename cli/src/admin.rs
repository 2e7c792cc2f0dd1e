//! Day-to-day administration: `herald schema register|get|list|versions|delete|config`,
//! `herald topic create|list|describe|delete` and `herald group list|describe`. Thin wrappers
//! over the registry and broker clients; errors come back as one line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use herald_broker_client::{BrokerClient, Trust};
use herald_registry_client::{NewSchema, RegistryClient, Version};
use herald_wire::groups::{GroupRequest, GroupResponse};
use herald_wire::messages::{SchemaValidation, SubjectStrategy, TopicConfig};
use serde_json::json;

/// `herald schema pin`: fetches every pinned version (and what it imports) and writes
/// herald.lock.
async fn pin(
    manifest_path: &Path,
    registry: Option<String>,
    user: Option<String>,
    password: Option<String>,
) -> anyhow::Result<()> {
    let manifest = herald_codegen::Manifest::load(manifest_path)?;
    let Some(pins) = &manifest.registry else {
        anyhow::bail!(
            "{} has no [registry] section with pins to resolve",
            manifest_path.display()
        );
    };
    let url = registry.unwrap_or_else(|| pins.url.clone());
    let mut client = RegistryClient::new(&url)?;
    if let (Some(user), Some(password)) = (user, password) {
        client = client.with_basic_auth(user, password);
    }
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
}

impl RegistryArgs {
    pub(crate) fn client(&self) -> anyhow::Result<RegistryClient> {
        let client = RegistryClient::new(&self.registry)?;
        Ok(match (&self.user, &self.password) {
            (Some(user), Some(password)) => client.with_basic_auth(user.clone(), password.clone()),
            _ => client,
        })
    }
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
        } => pin(&manifest, registry, user, password).await?,
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

#[derive(clap::Args)]
pub(crate) struct BrokerArgs {
    /// Broker QUIC address.
    #[arg(long, env = "HERALD_BROKER", default_value = "127.0.0.1:7070")]
    broker: SocketAddr,
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
}

impl BrokerArgs {
    pub(crate) async fn client(&self) -> anyhow::Result<BrokerClient> {
        let trust = match &self.fingerprint {
            Some(fingerprint) => Trust::Fingerprint(fingerprint.clone()),
            None => Trust::CertificateFile(self.certificate.clone()),
        };
        BrokerClient::connect(self.broker, trust)
            .await
            .with_context(|| format!("cannot connect to the broker at {}", self.broker))
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
            let topic = broker.client().await?.describe_topic(&name).await?;
            let partitions: Vec<serde_json::Value> = topic
                .partitions
                .iter()
                .map(|p| json!({"partition": p.partition, "log_start_offset": p.log_start_offset, "high_watermark": p.high_watermark, "segments": p.segments, "size_bytes": p.size_bytes, "problem": p.problem}))
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
}
