//! Golden test: `generate()` over the example schemas must produce exactly the checked-in
//! output (review changes to it like code). `UPDATE_GOLDEN=1 cargo test -p herald-codegen`
//! rewrites the expected file.

use std::path::Path;

use herald_codegen::{generate, load_inputs, Lock, Manifest};

#[test]
fn generated_code_matches_the_golden_file() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let manifest = Manifest::load(&dir.join("herald.toml"))?;
    let scratch = tempfile::tempdir()?;
    let (inputs, read) = load_inputs(&manifest, &Lock::default(), scratch.path())?;
    assert!(
        read.iter().any(|p| p.ends_with("common/money.proto")),
        "imports are reported as read: {read:?}"
    );
    let generated = generate(&inputs)?;
    let again = generate(&inputs)?;
    assert_eq!(generated.source, again.source, "deterministic");
    let expected_path = dir.join("expected.rs");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &generated.source)?;
    }
    let expected = std::fs::read_to_string(&expected_path)?;
    assert!(
        generated.source == expected,
        "generated code differs from {} (UPDATE_GOLDEN=1 to accept)",
        expected_path.display()
    );
    for name in [
        "shop.v1.OrderCreated",
        "shop.v1.OrderCreated.LineItem",
        "common.Money",
        "shop.payments.PaymentCaptured",
        "shop.payments.refunds.RefundIssued",
    ] {
        assert!(generated.messages.contains_key(name), "{name}");
    }
    Ok(())
}
