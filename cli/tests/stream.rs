//! `herald produce` / `herald consume` against live registry and broker processes: JSON lines
//! in through the topic's Avro or Protobuf schema, JSON lines out, a bad line stops with its
//! line number and loses nothing before it, group consumption resumes from commits.

mod support;

use support::herald_with_stdin;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#;
const REFUND: &str = "syntax = \"proto3\";\npackage shop.v1;\nmessage RefundIssued {\n  string refund_id = 1;\n  int64 cents = 2;\n}\n";

fn values(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("json line")["value"].clone()
        })
        .collect()
}

#[test]
fn produce_and_consume_json_lines_through_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    let (_broker, addr, fingerprint) = support::broker(&dir.path().join("herald-data/broker"));
    let env = support::server_env(&addr, &fingerprint, &url);
    let run = |args: &[&str], input: &str| herald_with_stdin(dir.path(), &env, args, input);
    use herald_registry_client::NewSchema;
    support::register(
        &url,
        &[
            ("orders-value", NewSchema::avro(ORDER)),
            ("refunds-value", NewSchema::protobuf(REFUND)),
        ],
    );
    let (code, _, err) = run(&["topic", "create", "orders", "--partitions", "2"], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["topic", "create", "refunds"], "");
    assert_eq!(code, 0, "{err}");

    // Three good lines, then one that does not match the schema: the three are produced.
    let input = "{\"id\":\"o-1\",\"total\":100,\"note\":\"gift\"}\n{\"id\":\"o-2\",\"total\":200}\n\n{\"id\":\"o-3\",\"total\":300,\"note\":null}\n{\"id\":\"o-4\"}\n";
    let (code, _, err) = run(&["produce", "orders", "--key-field", "id"], input);
    assert_ne!(code, 0);
    assert!(
        err.contains("line 5") && err.contains("does not match schema"),
        "{err}"
    );
    assert!(err.contains("produced 3 record(s)"), "{err}");
    let (code, _, err) = run(&["produce", "orders"], "not json\n");
    assert_ne!(code, 0);
    assert!(err.contains("line 1: not JSON"), "{err}");

    let (code, out, err) = run(&["consume", "orders", "--count", "3"], "");
    assert_eq!(code, 0, "{err}");
    let mut got = values(&out);
    got.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        got,
        vec![
            serde_json::json!({"id": "o-1", "total": 100, "note": "gift"}),
            serde_json::json!({"id": "o-2", "total": 200, "note": null}),
            serde_json::json!({"id": "o-3", "total": 300, "note": null}),
        ]
    );
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("{}")).expect("json");
    assert!(
        first["key"].as_str().is_some_and(|k| k.starts_with("o-")),
        "{first}"
    );

    // In a group: two now, the third next time (offsets were committed).
    let (code, out, err) = run(
        &["consume", "orders", "--group", "audit", "--count", "2"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let mut seen = values(&out);
    assert_eq!(seen.len(), 2);
    let (code, out, err) = run(
        &["consume", "orders", "--group", "audit", "--count", "1"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    seen.extend(values(&out));
    seen.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(seen.len(), 3);
    assert_eq!(seen, got, "every record once across the two runs");

    // A topic with a dedup window drops a repeated idempotency key.
    let (code, _, err) = run(&["topic", "create", "payments", "--dedup-window"], "");
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&["topic", "describe", "payments"], "");
    assert_eq!(code, 0);
    assert!(out.contains("\"dedup_window_ms\": 120000"), "{out}");
    support::register(&url, &[("payments-value", NewSchema::avro(ORDER))]);
    // The repeat of p-1 carries another total: what is stored shows which copy was kept.
    let twice = "{\"id\":\"p-1\",\"total\":5}\n{\"id\":\"p-1\",\"total\":7}\n{\"id\":\"p-2\",\"total\":6}\n";
    let (code, _, err) = run(&["produce", "payments", "--idempotency-field", "id"], twice);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&["topic", "describe", "payments"], "");
    assert_eq!(code, 0);
    let described: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        described["partitions"][0]["high_watermark"], 2,
        "the repeated p-1 was not stored: {out}"
    );
    // The high watermark is 2, so these two are everything stored: the first p-1, then p-2.
    let (code, out, err) = run(&["consume", "payments", "--count", "2"], "");
    assert_eq!(code, 0, "{err}");
    let mut stored: Vec<(i64, i64, serde_json::Value)> = out
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                record["partition"].as_i64().expect("partition"),
                record["offset"].as_i64().expect("offset"),
                record["value"].clone(),
            )
        })
        .collect();
    stored.sort_by_key(|(partition, offset, _)| (*partition, *offset));
    assert_eq!(
        stored,
        vec![
            (
                0,
                0,
                serde_json::json!({"id": "p-1", "total": 5, "note": null})
            ),
            (
                0,
                1,
                serde_json::json!({"id": "p-2", "total": 6, "note": null})
            ),
        ],
        "the stored values in offset order are the de-duplicated input: {out}"
    );

    // Protobuf through its JSON mapping (int64 as a string, as the mapping says).
    let (code, _, err) = run(
        &["produce", "refunds"],
        "{\"refundId\":\"r-1\",\"cents\":\"250\"}\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["consume", "refunds", "--count", "1"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        values(&out),
        vec![serde_json::json!({"refundId": "r-1", "cents": "250"})]
    );
}

/// Every group name the wire allows commits (a 130-byte name could not: its offsets file name
/// passed NAME_MAX), and a commit the broker cannot store fails the command instead of
/// exiting 0 with nothing saved.
#[test]
fn a_long_group_name_commits_and_a_failed_commit_fails_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, url) = support::registry(&dir.path().join("registry"));
    let data = dir.path().join("herald-data/broker");
    let (_broker, addr, fingerprint) = support::broker(&data);
    let env = support::server_env(&addr, &fingerprint, &url);
    let run = |args: &[&str], input: &str| herald_with_stdin(dir.path(), &env, args, input);
    support::register(
        &url,
        &[(
            "orders-value",
            herald_registry_client::NewSchema::avro(ORDER),
        )],
    );
    let (code, _, err) = run(&["topic", "create", "orders"], "");
    assert_eq!(code, 0, "{err}");
    let input = "{\"id\":\"o-1\",\"total\":1}\n{\"id\":\"o-2\",\"total\":2}\n{\"id\":\"o-3\",\"total\":3}\n";
    let (code, _, err) = run(&["produce", "orders"], input);
    assert_eq!(code, 0, "{err}");
    let long = "g".repeat(130);
    let (code, out, err) = run(&["consume", "orders", "--group", &long, "--count", "2"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(values(&out).len(), 2);
    let (code, out, err) = run(&["consume", "orders", "--group", &long, "--count", "1"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        values(&out),
        vec![serde_json::json!({"id": "o-3", "total": 3, "note": null})],
        "the long-named group resumed after its commit"
    );
    // An operator deletes the group (no live members): its offsets go with it, and a new
    // run starts by the reset policy (earliest).
    let (code, _, err) = run(&["group", "delete", &long], "");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["consume", "orders", "--group", &long, "--count", "1"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        values(&out),
        vec![serde_json::json!({"id": "o-1", "total": 1, "note": null})],
        "the deleted group's commits are gone"
    );
    // The broker can no longer store offsets: its groups directory is a file now.
    let groups = data.join("groups");
    std::fs::remove_dir_all(&groups).expect("remove groups");
    std::fs::write(&groups, b"not a directory").expect("block groups");
    let (code, _, err) = run(
        &["consume", "orders", "--group", "other", "--count", "1"],
        "",
    );
    assert_ne!(code, 0, "a failed commit fails the command: {err}");
    assert!(err.contains("cannot persist offsets"), "{err}");
    assert_eq!(
        err.matches("cannot persist offsets").count(),
        1,
        "said once: {err}"
    );
}

#[test]
fn errors_are_one_plain_line_off_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = herald_with_stdin(
        dir.path(),
        &[("HERALD_REGISTRY", "http://127.0.0.1:1")],
        &["produce", "orders"],
        "{}\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains("orders-value"),
        "says which subject: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes off a terminal: {err:?}"
    );
}
