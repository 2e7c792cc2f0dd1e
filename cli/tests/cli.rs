//! The `herald` binary's own command-line behaviour. (Building this test also makes cargo
//! build the binary that the cross-crate tests in `tests/` spawn.)

use std::process::Command;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

#[test]
fn help_lists_the_commands_with_examples() {
    let output = herald()
        .args(["registry", "serve", "--help"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("--data-dir") && text.contains("Example:"),
        "{text}"
    );
    let output = herald().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("up") && text.contains("registry"), "{text}");
}

#[test]
fn bad_arguments_exit_with_a_usage_error() {
    let output = herald()
        .args([
            "registry",
            "serve",
            "--listen",
            "not-an-address",
            "--data-dir",
            "x",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--listen"), "{text}");
}

#[test]
fn an_unusable_data_dir_is_reported() {
    let file = tempfile_path();
    std::fs::write(&file, b"not a directory").expect("write");
    let output = herald()
        .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("data directory"), "{text}");
    let _ = std::fs::remove_file(file);
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-cli-test-{}", std::process::id()))
}

#[test]
fn completions_and_offline_diff() {
    let output = herald()
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("herald"),
        "a bash completion script"
    );
    let dir = std::env::temp_dir().join(format!("herald-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("old.avsc"),
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("new.avsc"),
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#,
    )
    .expect("write");
    let output = herald()
        .args(["schema", "diff"])
        .arg(dir.join("old.avsc"))
        .arg(dir.join("new.avsc"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("backward (new reads old): compatible"),
        "{text}"
    );
    assert!(
        text.contains("forward (old reads new): 1 incompatibilities")
            && text.contains("TYPE_MISMATCH at R.a"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A certificate without its key (or the reverse) is refused before anything starts, naming
/// both flags; `--retention-hours 0` is refused (it would delete everything), `forever` is
/// the way to keep segments.
#[test]
fn half_a_tls_pair_and_zero_retention_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = herald()
        .args(["broker", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.path().join("cert.pem"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--tls-cert and --tls-key"), "{text}");

    let output = herald()
        .args(["topic", "create", "t", "--retention-hours", "0"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("forever"), "{text}");
}
