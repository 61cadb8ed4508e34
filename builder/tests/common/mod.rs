//! What the integration tests of the `builder` binary share.

#![allow(dead_code)] // each test file uses its own part

use std::process::Command;

/// The `builder` binary, with none of the caller's environment that changes what it writes.
pub fn builder() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_builder"));
    command.env_remove("SOURCE_DATE_EPOCH");
    command.env_remove("INITOVERLAYFS_ROOT");
    command
}

/// True if mkfs.erofs is installed; prints why a test is skipped otherwise.
pub fn have_mkfs() -> bool {
    let found = Command::new("mkfs.erofs").arg("--help").output().is_ok();
    if !found {
        println!("skipped: mkfs.erofs not installed (apt-get install erofs-utils)");
    }
    found
}
