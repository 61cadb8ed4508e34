//! For tests: running the real tools (mkfs.*, sfdisk) that make the images storage-init reads.
//! A tool that is not installed skips the test, saying so; a tool that runs and fails fails it.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `command` (feeding it `stdin`), returning false, after a "skipped" line, only when the
/// program is not installed.
pub(crate) fn run(command: &mut Command, stdin: &str) -> bool {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: {program} is not installed (cargo xtask provision installs it)");
            return false;
        }
        Err(e) => panic!("starting {program}: {e}"),
    };
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
