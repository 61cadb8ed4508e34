//! What the integration tests of the `builder` binary share.

#![allow(dead_code)] // each test file uses its own part

use std::process::Command;

#[path = "../../../storage-init/src/test_tools.rs"]
mod test_tools;
pub(crate) use test_tools::*;

/// The `builder` binary, with none of the caller's environment that changes what it writes.
pub fn builder() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_builder"));
    command.env_remove("SOURCE_DATE_EPOCH");
    command.env_remove("INITOVERLAYFS_ROOT");
    command
}

/// True if mkfs.erofs is on PATH; otherwise skips the test (or fails it, under CI).
pub fn have_mkfs() -> bool {
    have_tool("mkfs.erofs", "cargo xtask provision installs erofs-utils")
}
