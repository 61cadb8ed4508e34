//! For tests: the one rule for a test that cannot run here. A test may skip only when a tool,
//! a privilege or an input that `cargo xtask test` provides is missing, decided before anything
//! runs (a tool not on PATH, not root, a variable not set); a tool that runs and fails fails the
//! test. Under `CI=true` a skip fails too: CI provisions every tool, runs as root and runs
//! `cargo xtask test`, so there a skip would only hide a test that never ran.
//!
//! Compiled into the library's unit tests and, through `#[path]`, into the integration tests,
//! so it depends on nothing of the crate.

use std::path::PathBuf;

/// True when the environment says this is CI (`CI=true`, as GitHub Actions sets it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// The test cannot run here for `reason` (what is missing and how to get it): prints
/// `skipped: <reason>` and lets the caller return, or under `CI=true` fails the test.
pub fn skip_or_fail(reason: &str) {
    assert!(!in_ci(), "{reason}; CI=true forbids skips");
    println!("skipped: {reason}");
}

/// Where `program` is on PATH (an executable file), as `Command::new(program)` finds it.
pub fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// True if `program` is on PATH; otherwise skips (or fails, under CI) naming it and `install`,
/// how to get it.
pub fn have_tool(program: &str, install: &str) -> bool {
    let found = on_path(program).is_some();
    if !found {
        skip_or_fail(&format!("{program} is not on PATH ({install})"));
    }
    found
}

/// True if this process is root; otherwise skips (or fails, under CI) saying `what` needs it.
pub fn have_root(what: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        skip_or_fail(&format!("{what} needs root (run the tests as root)"));
    }
    root
}

/// The value of `name`, an input `cargo xtask test` provides; when it is not set, skips (or
/// fails, under CI) saying so.
pub fn provided(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => {
            skip_or_fail(&format!("{name} is not set (cargo xtask test sets it)"));
            None
        }
        Err(std::env::VarError::NotUnicode(value)) => {
            panic!("{name}={value:?} is not UTF-8: name a path that is")
        }
    }
}
