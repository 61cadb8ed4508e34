//! For tests: running the real tools (mkfs.*, sfdisk) that make the images storage-init reads,
//! and the one rule for a test that cannot run here. A test may skip only when a tool or a
//! privilege is missing, decided before anything runs (a tool not on PATH, not root); a tool
//! that runs and fails fails the test. Under `CI=true` a skip fails too: CI provisions every
//! tool and runs as root, so there a skip would only hide a test that never ran.
//!
//! The one copy of these rules in the workspace: compiled into storage-init's unit tests and,
//! through `#[path]`, into its integration tests and builder's and testvm's tests, so it
//! depends on nothing but `std` and `rustix`. Each user takes what it needs of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// True when the environment says this is CI (`CI=true`, as GitHub Actions sets it).
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// The test cannot run here for `reason` (what is missing and how to get it): prints
/// `skipped: <reason>` and lets the caller return, or under `CI=true` fails the test.
pub(crate) fn skip_or_fail(reason: &str) {
    assert!(!in_ci(), "{reason}; CI=true forbids skips");
    println!("skipped: {reason}");
}

/// Where `program` is on PATH (an executable file), as `Command::new(program)` finds it.
pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
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
pub(crate) fn have_tool(program: &str, install: &str) -> bool {
    let found = on_path(program).is_some();
    if !found {
        skip_or_fail(&format!("{program} is not on PATH ({install})"));
    }
    found
}

/// True if this process is root; otherwise skips (or fails, under CI) saying `what` needs it.
pub(crate) fn have_root(what: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        skip_or_fail(&format!("{what} needs root (run the tests as root)"));
    }
    root
}

/// True if `path`, a file a package installs, exists; otherwise skips (or fails, under CI)
/// naming it and `install`.
pub(crate) fn have_file(path: &Path, install: &str) -> bool {
    let found = path.exists();
    if !found {
        skip_or_fail(&format!("{} is missing ({install})", path.display()));
    }
    found
}

/// The value of `name`, an input `cargo xtask test` provides; when it is not set, skips (or
/// fails, under CI) saying so.
pub(crate) fn provided(name: &str) -> Option<String> {
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

/// Runs `command` (feeding it `stdin`), returning false, after [`skip_or_fail`], only when the
/// program is not on PATH. Any other failure, to start or of the tool itself, fails the test.
pub(crate) fn run(command: &mut Command, stdin: &str) -> bool {
    let program = command.get_program().to_string_lossy().into_owned();
    if !have_tool(&program, "cargo xtask provision installs it") {
        return false;
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("writing to the tool");
    let output = child.wait_with_output().expect("waiting for the tool");
    assert!(
        output.status.success(),
        "{program} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    true
}
