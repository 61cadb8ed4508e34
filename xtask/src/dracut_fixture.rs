//! A real dracut initramfs for a fixture kernel, for builder's round trip: the second stage of
//! the real chain, made in the kernel's Debian tree (`debian_tree`), so the test suite and the
//! real-chain cells share one mmdebstrap run. So builder is checked on what a distribution really
//! ships, without depending on the host's userspace or touching the host's own initramfs setup.

use std::path::PathBuf;

use anyhow::Result;
use xshell::Shell;

use crate::fixtures::Kernel;

/// The dracut initramfs for `kernel`, built (or found in the cache).
pub fn dracut_initramfs(sh: &Shell, kernel: &Kernel) -> Result<PathBuf> {
    crate::debian_tree::second_stage_initramfs(sh, kernel)
}
