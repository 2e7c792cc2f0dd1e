//! Reading what a manifest names: `.proto` and `.avsc` files and pinned schemas from the
//! lock, and finding each topic's schema among them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{
    avro, protobuf, write_if_changed, AvroSource, Error, GenerateError, Lock, Manifest, ProtoFile,
    Topic,
};

/// Everything `generate` needs, already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Compiled `.proto` files, imports included.
    pub proto: Vec<ProtoFile>,
    pub avro: Vec<AvroSource>,
    pub topics: Vec<Topic>,
    /// Registry IDs of pinned subjects (from herald.lock): a topic whose subject is pinned
    /// produces with that ID by default.
    pub pinned_ids: BTreeMap<String, u32>,
}

/// Reads everything a manifest names: `.proto` files through protox (imports resolved from
/// `proto_include`; well-known types built in), `.avsc` files, and pinned schemas from
/// `herald.lock`. Returns the inputs and every file read (for `rerun-if-changed`).
pub fn load_inputs(
    manifest: &Manifest,
    lock: &Lock,
    scratch: &Path,
) -> Result<(Inputs, Vec<PathBuf>), Error> {
    let mut read = Vec::new();
    let mut avro = Vec::new();
    let mut pinned_protos = Vec::new();
    let mut pinned_ids = BTreeMap::new();
    if let Some(registry) = &manifest.registry {
        for pin in &registry.pins {
            let entry = lock
                .get(&pin.subject)
                .filter(|e| e.version == pin.version)
                .ok_or_else(|| Error::MissingPin {
                    subject: pin.subject.clone(),
                    version: pin.version,
                })?;
            pinned_ids.insert(entry.subject.clone(), entry.id);
            if entry.schema_type.eq_ignore_ascii_case("PROTOBUF") {
                pinned_protos.push(entry.clone());
            } else {
                // The texts it references go in beside it (parsed together, so its references
                // resolve), once each.
                for (name, imported) in lock.references_of(entry)? {
                    if !avro.iter().any(|a: &AvroSource| a.text == imported.schema) {
                        avro.push(AvroSource {
                            origin: format!(
                                "herald.lock [{} v{}] ({name})",
                                imported.subject, imported.version
                            ),
                            text: imported.schema.clone(),
                        });
                    }
                }
                avro.push(AvroSource {
                    origin: format!("herald.lock [{} v{}]", entry.subject, entry.version),
                    text: entry.schema.clone(),
                });
            }
        }
    }
    for path in &manifest.schemas.avro {
        let path = manifest.resolve(path);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        read.push(path.clone());
        avro.push(AvroSource {
            origin: path.display().to_string(),
            text,
        });
    }
    let mut includes: Vec<PathBuf> = manifest
        .schemas
        .proto_include
        .iter()
        .map(|p| manifest.resolve(p))
        .collect();
    let mut proto_paths: Vec<PathBuf> = manifest
        .schemas
        .proto
        .iter()
        .map(|p| manifest.resolve(p))
        .collect();
    if !pinned_protos.is_empty() {
        // Pinned Protobuf texts are compiled like local files, from a scratch include dir.
        let dir = scratch.join("herald-pins");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        for entry in &pinned_protos {
            let path = dir.join(format!("{}.proto", entry.subject));
            write_if_changed(&path, entry.schema.as_bytes())?;
            proto_paths.push(path);
            // Its imports go where its import statements look for them.
            for (name, imported) in lock.references_of(entry)? {
                let relative = Path::new(&name);
                if relative.is_absolute()
                    || relative
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(Error::Io {
                        path: name.clone(),
                        message: format!(
                            "import name in herald.lock [{} v{}] is not a plain relative path",
                            entry.subject, entry.version
                        ),
                    });
                }
                let path = dir.join(relative);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                        path: parent.display().to_string(),
                        message: e.to_string(),
                    })?;
                }
                write_if_changed(&path, imported.schema.as_bytes())?;
            }
        }
        includes.push(dir);
    }
    let proto = if proto_paths.is_empty() {
        Vec::new()
    } else {
        if includes.is_empty() {
            includes = proto_paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_owned))
                .collect();
            includes.dedup();
        }
        let mut compiler =
            protox::Compiler::new(&includes).map_err(|e| proto_error(&e, &includes))?;
        compiler.include_imports(true).include_source_info(true);
        for path in &proto_paths {
            compiler
                .open_file(path)
                .map_err(|e| proto_error(&e, &includes))?;
        }
        let descriptors: BTreeMap<String, prost_types::FileDescriptorProto> = compiler
            .file_descriptor_set()
            .file
            .into_iter()
            .map(|f| (f.name().to_owned(), f))
            .collect();
        let mut files = Vec::new();
        for file in compiler.files() {
            if let Some(path) = file.path() {
                read.push(path.to_owned());
            }
            let source = match file.path() {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?),
                None => None,
            };
            files.push(ProtoFile {
                name: file.name().to_owned(),
                source,
                path: file.path().map(Path::to_owned),
                descriptor: descriptors.get(file.name()).cloned().unwrap_or_default(),
            });
        }
        files
    };
    Ok((
        Inputs {
            proto,
            avro,
            topics: manifest.topics.clone(),
            pinned_ids,
        },
        read,
    ))
}

/// A protox error as file:line:column: message.
fn proto_error(error: &protox::Error, includes: &[PathBuf]) -> Error {
    use miette::Diagnostic;
    let name = error.file().unwrap_or("<protobuf>");
    // The error names the file as imported; report the path on disk.
    let file = includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .map_or_else(|| name.to_owned(), |path| path.display().to_string());
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match (offset, std::fs::read_to_string(&file).ok()) {
        (Some(offset), Some(text)) => line_column(&text, offset),
        _ => (1, 1),
    };
    Error::Generate(GenerateError::Schema {
        origin: file,
        line,
        column,
        message: error.to_string(),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The schema a topic's records carry, as found among the inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSchema {
    pub topic: String,
    pub subject: String,
    pub schema_type: herald_schema::SchemaType,
    /// The schema text to register or check (the whole `.avsc` or `.proto` file).
    pub text: String,
    /// Where it came from (a path, or the lock entry).
    pub origin: String,
    /// Imported files (Protobuf), dependencies first: import name and text.
    pub references: Vec<herald_schema::ResolvedReference>,
}

/// Finds, for every topic of the inputs, the file that defines its message.
pub fn topic_schemas(inputs: &Inputs) -> Result<Vec<TopicSchema>, GenerateError> {
    use herald_schema::{ResolvedReference, SchemaType};
    let mut found = Vec::new();
    let avro_graph = if inputs.avro.is_empty() {
        None
    } else {
        Some(avro::Graph::new(&avro::parse(&inputs.avro)?))
    };
    for topic in &inputs.topics {
        let avro = avro_graph.as_ref().and_then(|graph| {
            graph
                .roots
                .iter()
                .position(|root| *root == topic.message)
                .map(|index| (graph, index))
        });
        if let Some((graph, index)) = avro {
            let source = &inputs.avro[index];
            let references = graph
                .dependencies(index)
                .into_iter()
                .map(|used| ResolvedReference {
                    name: graph.roots[used].clone(),
                    schema: inputs.avro[used].text.clone(),
                })
                .collect();
            found.push(TopicSchema {
                topic: topic.name.clone(),
                subject: topic.subject(),
                schema_type: SchemaType::Avro,
                text: source.text.clone(),
                origin: source.origin.clone(),
                references,
            });
            continue;
        }
        let proto = inputs.proto.iter().find(|file| {
            !protobuf::well_known(&file.name) && declares(&file.descriptor, &topic.message)
        });
        let Some(file) = proto else {
            return Err(GenerateError::UnknownMessage {
                topic: topic.name.clone(),
                message: topic.message.clone(),
                known: "(see the schema files of herald.toml)".to_owned(),
            });
        };
        let mut references = Vec::new();
        for name in protobuf::dependency_order(&file.name, &inputs.proto)? {
            if let Some(text) = inputs
                .proto
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.source.clone())
            {
                references.push(ResolvedReference { name, schema: text });
            }
        }
        found.push(TopicSchema {
            topic: topic.name.clone(),
            subject: topic.subject(),
            schema_type: SchemaType::Protobuf,
            text: file.source.clone().unwrap_or_default(),
            origin: file
                .path
                .as_ref()
                .map_or_else(|| file.name.clone(), |p| p.display().to_string()),
            references,
        });
    }
    Ok(found)
}

/// Whether a file declares message `full_name` (at any nesting depth).
fn declares(file: &prost_types::FileDescriptorProto, full_name: &str) -> bool {
    fn walk(prefix: &str, messages: &[prost_types::DescriptorProto], target: &str) -> bool {
        messages.iter().any(|m| {
            let name = format!("{prefix}{}", m.name());
            name == target || walk(&format!("{name}."), &m.nested_type, target)
        })
    }
    let prefix = if file.package().is_empty() {
        String::new()
    } else {
        format!("{}.", file.package())
    };
    walk(&prefix, &file.message_type, full_name)
}

/// Compares each topic's local schema with the version locked for its subject and returns
/// one warning per incompatible edit (BACKWARD, the registry's default level).
pub fn lock_warnings(inputs: &Inputs, lock: &Lock) -> Vec<String> {
    use herald_schema::{check_pair, CompatibilityLevel, ParsedSchema};
    let mut warnings = Vec::new();
    let Ok(schemas) = topic_schemas(inputs) else {
        return warnings;
    };
    for local in schemas {
        let Some(entry) = lock.get(&local.subject) else {
            continue;
        };
        let (Ok(old), Ok(new)) = (
            ParsedSchema::parse(local.schema_type, &entry.schema, &local.references),
            ParsedSchema::parse(local.schema_type, &local.text, &local.references),
        ) else {
            continue;
        };
        for problem in check_pair(&old, &new, CompatibilityLevel::Backward) {
            warnings.push(format!(
                "{} ({}): incompatible with {} version {} in herald.lock: {problem}",
                local.origin, local.topic, entry.subject, entry.version
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
