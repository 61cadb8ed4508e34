//! Architecture invariants of this crate that a test can check.

/// Workspace crates testvm must not depend on: only xtask ties testvm and builder together.
const FORBIDDEN_DEPENDENCIES: [&str; 3] = ["builder", "storage-init", "xtask"];

#[test]
fn testvm_depends_on_no_workspace_crate() {
    let manifest = include_str!("../Cargo.toml");
    for line in manifest.lines().map(str::trim) {
        for forbidden in FORBIDDEN_DEPENDENCIES {
            let key = line.split(['=', '.', ' ']).next().unwrap_or_default();
            assert_ne!(
                key, forbidden,
                "testvm/Cargo.toml depends on {forbidden}: {line}"
            );
        }
    }
}
