//! Data-driven compatibility tests: every `schemas/compat/*.case` file is one case, and the
//! Apicurio conformance data (Apache-2.0, `schemas/conformance/apicurio`) must pass.
//!
//! Case format: `key: value` header lines (`type: avro|protobuf`, `description: ...`), then
//! sections introduced by `=== NAME`: `ref IMPORT-NAME` (a referenced schema, available to
//! every version), `v1`, `v2`, ... (registered versions, oldest first), `new` (the candidate)
//! and `expect`, whose lines read `LEVEL: ok` or `LEVEL: RULE[@path], RULE[@path]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herald_schema::{
    check, CompatibilityLevel, ParsedSchema, PreviousVersion, ResolvedReference, SchemaType,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Case {
    schema_type: SchemaType,
    references: Vec<ResolvedReference>,
    versions: Vec<String>,
    candidate: String,
    expectations: Vec<(CompatibilityLevel, Vec<String>)>,
}

fn parse_case(text: &str) -> Result<Case, String> {
    let mut schema_type = SchemaType::Avro;
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            sections.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        } else if let Some(value) = line.strip_prefix("type:") {
            schema_type = value.trim().parse().map_err(|e| format!("{e}"))?;
        }
    }
    let mut references = Vec::new();
    let mut versions = BTreeMap::new();
    let mut candidate = None;
    let mut expectations = Vec::new();
    for (name, body) in sections {
        if let Some(import) = name.strip_prefix("ref ") {
            references.push(ResolvedReference {
                name: import.trim().to_owned(),
                schema: body,
            });
        } else if let Some(number) = name.strip_prefix('v') {
            let number: u32 = number.parse().map_err(|_| format!("bad section {name}"))?;
            versions.insert(number, body);
        } else if name == "new" {
            candidate = Some(body);
        } else if name == "expect" {
            for line in body.lines().filter(|line| !line.trim().is_empty()) {
                let (level, verdict) = line
                    .split_once(':')
                    .ok_or_else(|| format!("bad expect line '{line}'"))?;
                let level: CompatibilityLevel = level.trim().parse().map_err(|e| format!("{e}"))?;
                let verdict = verdict.trim();
                let rules = if verdict == "ok" {
                    Vec::new()
                } else {
                    verdict
                        .split(',')
                        .map(|rule| rule.trim().to_owned())
                        .collect()
                };
                expectations.push((level, rules));
            }
        } else {
            return Err(format!("unknown section '{name}'"));
        }
    }
    Ok(Case {
        schema_type,
        references,
        versions: versions.into_values().collect(),
        candidate: candidate.ok_or("no 'new' section")?,
        expectations,
    })
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case = parse_case(&text)?;
    if case.expectations.is_empty() {
        return Err("no expectations".to_owned());
    }
    let parse = |text: &str| {
        ParsedSchema::parse(case.schema_type, text, &case.references).map_err(|e| e.to_string())
    };
    let versions = case
        .versions
        .iter()
        .map(|text| parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let candidate = parse(&case.candidate)?;
    let previous: Vec<PreviousVersion<'_>> = versions
        .iter()
        .enumerate()
        .map(|(index, schema)| PreviousVersion {
            version: index as u32 + 1,
            schema,
        })
        .collect();
    let mut failures = Vec::new();
    for (level, expected) in &case.expectations {
        let report = check(&previous, &candidate, *level);
        let mut actual: Vec<(String, String)> = report
            .incompatibilities
            .iter()
            .map(|found| (found.rule.to_string(), found.path.clone()))
            .collect();
        actual.sort();
        let mut expected_rules: Vec<&str> = expected
            .iter()
            .map(|token| token.split('@').next().unwrap_or(token))
            .collect();
        expected_rules.sort();
        let actual_rules: Vec<&str> = actual.iter().map(|(rule, _)| rule.as_str()).collect();
        let paths_match = expected.iter().all(|token| match token.split_once('@') {
            Some((rule, path)) => actual.iter().any(|(r, p)| r == rule && p == path),
            None => true,
        });
        if actual_rules != expected_rules || !paths_match {
            failures.push(format!(
                "{level}: expected {expected:?}, got {:?}",
                report
                    .incompatibilities
                    .iter()
                    .map(|found| format!("{}@{} ({})", found.rule, found.path, found.description))
                    .collect::<Vec<_>>()
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n    "))
    }
}

#[test]
fn every_compat_case_passes() {
    let dir = repo_root().join("schemas/compat");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("schemas/compat exists")
        .map(|entry| entry.expect("readable dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "case"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 80, "only {} cases", paths.len());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            run_case(path)
                .err()
                .map(|error| format!("{}:\n    {error}", path.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}

#[test]
fn apicurio_avro_conformance() {
    let path =
        repo_root().join("schemas/conformance/apicurio/apicurio-avro-compatibility-test-data.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("data file")).expect("json");
    let tests = data["tests"].as_array().expect("tests array");
    assert!(!tests.is_empty());
    for test in tests {
        let id = test["id"].as_str().unwrap_or("?");
        let original = ParsedSchema::parse(SchemaType::Avro, &test["original"].to_string(), &[])
            .expect("original parses");
        let updated = ParsedSchema::parse(SchemaType::Avro, &test["updated"].to_string(), &[])
            .expect("updated parses");
        let previous = [PreviousVersion {
            version: 1,
            schema: &original,
        }];
        let backward = check(&previous, &updated, CompatibilityLevel::Backward).is_compatible();
        let forward = check(&previous, &updated, CompatibilityLevel::Forward).is_compatible();
        let verdict = match (backward, forward) {
            (true, true) => "both",
            (true, false) => "backward",
            (false, false) => "none",
            (false, true) => "forward",
        };
        assert_eq!(
            verdict,
            test["compatibility"].as_str().unwrap_or("?"),
            "case {id}"
        );
    }
}
