//! `herald schema check`: the compatibility step a CI runs on every pull request.
//!
//! Compares local schema files with what they will replace — the registry's versions (using
//! the registry's own endpoint and level), a directory of the previous files, or the same
//! files at a git revision (read with `git show`, no checkout) — and reports every
//! incompatibility with subject, file, path, rule and old vs new. Exit codes: 0 compatible,
//! 1 incompatible, 2 usage, parse or connection error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use herald_registry_client::{NewSchema, SchemaReference, Version};
use herald_schema::{
    check_pair, CompatibilityLevel, Incompatibility, ParsedSchema, ResolvedReference, SchemaType,
};
use serde_json::json;

/// Exit code: every schema is compatible.
pub(crate) const EXIT_COMPATIBLE: i32 = 0;
/// Exit code: at least one schema is incompatible.
pub(crate) const EXIT_INCOMPATIBLE: i32 = 1;
/// Exit code: bad arguments, unparsable schema, unreachable registry.
pub(crate) const EXIT_ERROR: i32 = 2;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Subject the schema is registered under (e.g. orders-value); with FILE. Without both,
    /// every topic of the manifest is checked.
    #[arg(long, requires = "file")]
    subject: Option<String>,
    /// Schema format.
    #[arg(long = "type", value_enum, default_value = "avro")]
    schema_type: TypeArg,
    /// The new schema file.
    #[arg(requires = "subject")]
    file: Option<PathBuf>,
    /// The manifest whose topics to check (subjects follow each topic's strategy).
    #[arg(long, default_value = "herald.toml", conflicts_with = "file")]
    manifest: PathBuf,
    /// Registry to check against, with the subject's own level.
    #[arg(long, conflicts_with = "against")]
    registry: Option<String>,
    /// Basic-auth user for the registry (or HERALD_REGISTRY_USER).
    #[arg(long, env = "HERALD_REGISTRY_USER")]
    user: Option<String>,
    /// Basic-auth password for the registry (or HERALD_REGISTRY_PASSWORD).
    #[arg(long, env = "HERALD_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for an https:// registry, besides
    /// the system's roots (or HERALD_REGISTRY_CA).
    #[arg(long, env = "HERALD_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// Offline: a directory holding the previous version at the same relative path, or
    /// `git:REV` for the file at a git revision of this repository.
    #[arg(long)]
    against: Option<String>,
    /// Level for offline checks.
    #[arg(long, default_value = "BACKWARD")]
    level: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum TypeArg {
    Avro,
    Protobuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Github,
}

/// The verdict for one schema file.
#[derive(Debug)]
enum Verdict {
    New,
    Compatible,
    /// Structured findings (offline) or the registry's messages.
    Incompatible {
        findings: Vec<Incompatibility>,
        messages: Vec<String>,
    },
}

/// One schema to check: from `--subject FILE` or from a manifest topic.
struct Target {
    subject: String,
    kind: SchemaType,
    /// The file as the user knows it (also where GitHub annotations point).
    file: PathBuf,
    text: String,
    /// Imported files (Protobuf), by import name.
    references: Vec<ResolvedReference>,
    /// Where herald.lock says imports of a pinned schema are registered: import name →
    /// (subject, version). Other imports are looked up under their import name.
    locked: BTreeMap<String, (String, u32)>,
}

/// Runs the check and returns the process exit code (the worst over all targets).
pub(crate) async fn run(args: CheckArgs) -> i32 {
    let targets = match targets(&args) {
        Ok(targets) => targets,
        Err(message) => {
            report_error(&args, None, &message);
            return EXIT_ERROR;
        }
    };
    let mut code = EXIT_COMPATIBLE;
    for target in &targets {
        match verdict(&args, target).await {
            Ok(verdict) => {
                print!("{}", render(&args, target, &verdict));
                if matches!(verdict, Verdict::Incompatible { .. }) {
                    code = code.max(EXIT_INCOMPATIBLE);
                }
            }
            Err(message) => {
                report_error(&args, Some(target), &message);
                code = EXIT_ERROR;
            }
        }
    }
    code
}

fn report_error(args: &CheckArgs, target: Option<&Target>, message: &str) {
    let file = target.map_or_else(|| args.manifest.clone(), |t| t.file.clone());
    match args.format {
        Format::Json => println!(
            "{}",
            json!({"subject": target.map(|t| t.subject.clone()), "file": file, "status": "error", "error": message})
        ),
        Format::Github => println!(
            "::error file={}::{}",
            file.display(),
            escape_github(message)
        ),
        Format::Text => {}
    }
    eprintln!("{} {message}", crate::style::error("error:"));
}

/// The schemas to check: the explicit file, or every topic of the manifest.
fn targets(args: &CheckArgs) -> Result<Vec<Target>, String> {
    if let (Some(subject), Some(file)) = (&args.subject, &args.file) {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        return Ok(vec![Target {
            subject: subject.clone(),
            kind: schema_type(args.schema_type),
            file: file.clone(),
            text,
            references: Vec::new(),
            locked: BTreeMap::new(),
        }]);
    }
    let manifest = herald_codegen::Manifest::load(&args.manifest)
        .map_err(|e| format!("{e} (give --subject S FILE, or a manifest with --manifest PATH)"))?;
    let scratch = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let lock = herald_codegen::Lock::load(&manifest.lock_path()).map_err(|e| e.to_string())?;
    let (inputs, _) =
        herald_codegen::load_inputs(&manifest, &lock, scratch.path()).map_err(|e| e.to_string())?;
    let schemas = herald_codegen::topic_schemas(&inputs).map_err(|e| e.to_string())?;
    if schemas.is_empty() {
        return Err(format!("{} declares no [[topic]]", args.manifest.display()));
    }
    schemas
        .into_iter()
        .map(|schema| {
            let locked = match lock.get(&schema.subject) {
                Some(entry) => lock
                    .references_of(entry)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(name, imported)| (name, (imported.subject.clone(), imported.version)))
                    .collect(),
                None => BTreeMap::new(),
            };
            Ok(Target {
                subject: schema.subject,
                kind: schema.schema_type,
                file: relative_to_cwd(Path::new(&schema.origin)),
                text: schema.text,
                references: schema.references,
                locked,
            })
        })
        .collect()
}

/// `path` relative to the working directory when it is below it (annotations and `git show`
/// want repository paths).
fn relative_to_cwd(path: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    std::env::current_dir()
        .ok()
        .and_then(|cwd| std::fs::canonicalize(cwd).ok())
        .and_then(|cwd| absolute.strip_prefix(cwd).ok().map(Path::to_owned))
        .unwrap_or_else(|| path.to_owned())
}

fn schema_type(arg: TypeArg) -> SchemaType {
    match arg {
        TypeArg::Avro => SchemaType::Avro,
        TypeArg::Protobuf => SchemaType::Protobuf,
    }
}

async fn verdict(args: &CheckArgs, target: &Target) -> Result<Verdict, String> {
    let kind = target.kind;
    let new = ParsedSchema::parse(kind, &target.text, &target.references)
        .map_err(|e| format!("{}: {e}", target.file.display()))?;
    match (&args.registry, &args.against) {
        (Some(url), None) => against_registry(args, target, url).await,
        (None, Some(against)) => {
            let level: CompatibilityLevel = args.level.parse().map_err(|e| format!("{e}"))?;
            let Some(old_text) = previous_text(against, &target.file)? else {
                return Ok(Verdict::New);
            };
            // Imports resolve to their current text on both sides.
            let old = ParsedSchema::parse(kind, &old_text, &target.references)
                .map_err(|e| format!("previous version of {}: {e}", target.file.display()))?;
            let findings = check_pair(&old, &new, level);
            Ok(if findings.is_empty() {
                Verdict::Compatible
            } else {
                Verdict::Incompatible {
                    findings,
                    messages: Vec::new(),
                }
            })
        }
        _ => Err("give either --registry URL or --against DIR|git:REV".to_owned()),
    }
}

async fn against_registry(args: &CheckArgs, target: &Target, url: &str) -> Result<Verdict, String> {
    let client = crate::admin::registry_client(
        url,
        args.user.as_deref(),
        args.password.as_deref(),
        args.registry_ca.as_deref(),
    )
    .map_err(|e| format!("{e:#}"))?;
    match client.versions(&target.subject).await {
        Err(error) if error.code() == Some(40401) => return Ok(Verdict::New),
        Err(error) => return Err(format!("registry {url}: {error}")),
        Ok(_) => {}
    }
    // Imports of a pinned schema are where herald.lock says; others are registered under
    // their import name (as Confluent's serializers do) and checked at their latest version.
    let mut references = Vec::new();
    for reference in &target.references {
        if let Some((subject, version)) = target.locked.get(&reference.name) {
            references.push(SchemaReference {
                name: reference.name.clone(),
                subject: subject.clone(),
                version: i64::from(*version),
            });
            continue;
        }
        let latest = client
            .version(&reference.name, Version::Latest)
            .await
            .map_err(|e| {
                format!(
                    "{} imports {}, which is not registered under subject '{}': {e}",
                    target.file.display(),
                    reference.name,
                    reference.name
                )
            })?;
        references.push(SchemaReference {
            name: reference.name.clone(),
            subject: reference.name.clone(),
            version: i64::from(latest.version),
        });
    }
    let schema = match target.kind {
        SchemaType::Avro => NewSchema::avro(target.text.clone()),
        SchemaType::Protobuf => NewSchema::protobuf(target.text.clone()),
    }
    .with_references(references);
    let answer = client
        .check_compatibility(&target.subject, None, &schema)
        .await
        .map_err(|e| format!("registry {url}: {e}"))?;
    Ok(if answer.is_compatible {
        Verdict::Compatible
    } else {
        // The trailer "{validateFields: ..., compatibility: ...}" is context, not a finding.
        let messages = answer
            .messages
            .into_iter()
            .filter(|m| !m.starts_with("{validateFields"))
            .collect();
        Verdict::Incompatible {
            findings: Vec::new(),
            messages,
        }
    })
}

/// The previous version of `file`: from `DIR/<file>` or `git show REV:<file>`; `None` if it
/// did not exist there.
fn previous_text(against: &str, file: &Path) -> Result<Option<String>, String> {
    if let Some(revision) = against.strip_prefix("git:") {
        let output = Command::new("git")
            .args(["show", &format!("{revision}:./{}", file.display())])
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if output.status.success() {
            return String::from_utf8(output.stdout)
                .map(Some)
                .map_err(|_| format!("{} at {revision} is not UTF-8", file.display()));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("does not exist") || stderr.contains("exists on disk, but not in") {
            return Ok(None);
        }
        return Err(format!(
            "git show {revision}:{}: {}",
            file.display(),
            stderr.trim()
        ));
    }
    let path = Path::new(against).join(file.file_name().map(Path::new).unwrap_or(file));
    let relative = Path::new(against).join(file);
    for candidate in [relative, path] {
        if candidate.exists() {
            return std::fs::read_to_string(&candidate)
                .map(Some)
                .map_err(|e| format!("cannot read {}: {e}", candidate.display()));
        }
    }
    Ok(None)
}

/// The 1-based line of the schema file that names the last segment of `path`, else 1.
fn line_of(text: &str, path: &str) -> usize {
    let field = path
        .rsplit(['.', '[', '{'])
        .find(|s| !s.is_empty() && !s.ends_with(']') && !s.ends_with('}'))
        .unwrap_or("");
    if field.is_empty() {
        return 1;
    }
    let quoted = format!("\"{field}\"");
    text.lines()
        .position(|line| {
            line.contains(&quoted)
                || line
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|word| word == field)
        })
        .map_or(1, |index| index + 1)
}

fn escape_github(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn render(args: &CheckArgs, target: &Target, verdict: &Verdict) -> String {
    let file = target.file.display().to_string();
    let text = &target.text;
    let subject = &target.subject;
    match args.format {
        Format::Text => match verdict {
            Verdict::New => format!("{}: new subject ({file}), nothing to compare\n", subject),
            Verdict::Compatible => format!(
                "{}: {} ({file})\n",
                subject,
                crate::style::good("compatible")
            ),
            Verdict::Incompatible { findings, messages } => {
                let mut out = format!(
                    "{}: {} ({file})\n",
                    subject,
                    crate::style::bad("INCOMPATIBLE")
                );
                for finding in findings {
                    out.push_str(&format!(
                        "  {} at {} [{}]: {}\n",
                        finding.rule, finding.path, finding.location, finding.description
                    ));
                    out.push_str(&format!(
                        "    old: {}\n    new: {}\n",
                        finding.old.as_deref().unwrap_or("-"),
                        finding.new.as_deref().unwrap_or("-")
                    ));
                }
                for message in messages {
                    out.push_str(&format!("  {message}\n"));
                }
                out
            }
        },
        Format::Json => {
            let (status, findings, messages) = match verdict {
                Verdict::New => ("new", Vec::new(), Vec::new()),
                Verdict::Compatible => ("compatible", Vec::new(), Vec::new()),
                Verdict::Incompatible { findings, messages } => {
                    ("incompatible", findings.iter().collect(), messages.clone())
                }
            };
            let findings: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| json!({"rule": f.rule.as_str(), "path": f.path, "location": f.location, "old": f.old, "new": f.new, "description": f.description, "line": line_of(text, &f.path)}))
                .collect();
            format!(
                "{}\n",
                json!({"subject": subject, "file": file, "status": status, "incompatibilities": findings, "messages": messages})
            )
        }
        Format::Github => match verdict {
            Verdict::Incompatible { findings, messages } => {
                let mut out = String::new();
                for f in findings {
                    let message = format!(
                        "{}: {} at {}: {} (old: {}, new: {})",
                        subject,
                        f.rule,
                        f.path,
                        f.description,
                        f.old.as_deref().unwrap_or("-"),
                        f.new.as_deref().unwrap_or("-")
                    );
                    out.push_str(&format!(
                        "::error file={file},line={},title=Incompatible schema change::{}\n",
                        line_of(text, &f.path),
                        escape_github(&message)
                    ));
                }
                for m in messages {
                    out.push_str(&format!(
                        "::error file={file},line=1,title=Incompatible schema change::{}\n",
                        escape_github(&format!("{}: {m}", subject))
                    ));
                }
                out
            }
            Verdict::New => format!("::notice file={file}::{} is a new subject\n", subject),
            Verdict::Compatible => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_point_at_the_field() {
        let text = "{\n  \"type\": \"record\",\n  \"name\": \"Order\",\n  \"fields\": [\n    {\"name\": \"coupon\", \"type\": \"string\"}\n  ]\n}";
        assert_eq!(line_of(text, "Order.coupon"), 5);
        assert_eq!(
            line_of(text, "Order.items[]"),
            1,
            "unknown fields fall back to line 1"
        );
        assert_eq!(
            line_of("message M {\n  string qty = 2;\n}", "shop.v1.M.qty"),
            2
        );
    }

    #[test]
    fn github_messages_are_escaped() {
        assert_eq!(escape_github("a\nb%"), "a%0Ab%25");
    }
}
