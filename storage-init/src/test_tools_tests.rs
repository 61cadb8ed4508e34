//! The skip rules' own tests, here once: `test_tools.rs` is included by path into other test
//! crates too, which would otherwise run these again each.

use crate::test_tools::*;

#[test]
fn finds_what_is_on_path_only() {
    // `sh` is on every PATH a test runs with; a made-up name is on none.
    assert!(on_path("sh").is_some_and(|p| p.is_absolute()));
    assert_eq!(on_path("no-such-tool-on-any-path"), None);
}

#[test]
fn a_skip_fails_under_ci_and_passes_elsewhere() {
    let skipped = std::panic::catch_unwind(|| skip_or_fail("frobnicate is missing"));
    if in_ci() {
        let message = skipped.expect_err("a skip under CI=true fails");
        let text = message
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert_eq!(text, "frobnicate is missing; CI=true forbids skips");
    } else {
        assert!(skipped.is_ok());
    }
}
