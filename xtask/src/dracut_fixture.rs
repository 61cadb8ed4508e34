//! A real dracut initramfs for a fixture kernel: a Debian 12 tree built with `mmdebstrap`
//! (systemd, udev, kmod, dracut), the kernel's modules copied in, and dracut run inside it
//! (`--no-hostonly`, as a distribution's generic image). So builder's round trip is checked on
//! what a distribution really ships, without depending on the host's userspace or touching the
//! host's own initramfs setup.
//!
//! The mirror is the machine's own Debian apt source (never written into this repository). The
//! result is cached by a key over the recipe and the kernel package; the tree itself is thrown
//! away (about 370 MB). About a minute on a fresh machine.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::fixtures::{Kernel, cache_dir};

/// The Debian release of the tree, and what goes in it besides the essential packages.
const SUITE: &str = "bookworm";
const PACKAGES: &str = "systemd,systemd-sysv,udev,kmod,dracut";
/// Bumped whenever the recipe changes, so the cache is rebuilt.
const RECIPE: &str = "v1 --variant=apt, dracut --no-hostonly";
const COMPLETE: &str = ".complete";

/// The dracut initramfs for `kernel`, built (or found in the cache).
pub fn dracut_initramfs(sh: &Shell, kernel: &Kernel) -> Result<PathBuf> {
    let key = {
        let mut hasher = Sha256::new();
        for part in [
            RECIPE,
            SUITE,
            PACKAGES,
            &kernel.fetched.sha256,
            &kernel.release,
        ] {
            hasher.update(part.as_bytes());
            hasher.update(b"\0");
        }
        hex::encode(hasher.finalize())
    };
    let dir = cache_dir().join("dracut").join(&key[..16]);
    let output = dir.join(format!("initrd.img-{}", kernel.release));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if dir.join(COMPLETE).is_file() && output.is_file() {
        return Ok(output);
    }

    let mirror = crate::provision::debian_mirror()?;
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree); // a leftover of a killed run
    let release = &kernel.release;
    let modules = kernel.modules_root().join("lib/modules").join(release);
    if !modules.join("modules.dep").is_file() {
        bail!(
            "{}: no modules.dep (the kernel fixture is incomplete)",
            modules.display()
        );
    }
    eprintln!(
        "fixtures: building a Debian {SUITE} tree with mmdebstrap ({PACKAGES}) and a dracut initramfs for {release}"
    );
    let make_dir = r#"mkdir -p "$1/lib/modules""#;
    let copy_modules = format!("copy-in {} /lib/modules", modules.display());
    let run_dracut = format!(
        "chroot \"$1\" dracut --quiet --no-hostonly --force --kver {release} /boot/initrd.img-{release}"
    );
    let copy_out = format!("copy-out /boot/initrd.img-{release} {}", dir.display());
    let result = cmd!(
        sh,
        "mmdebstrap --quiet --variant=apt --include={PACKAGES}
            --customize-hook={make_dir}
            --customize-hook={copy_modules}
            --customize-hook={run_dracut}
            --customize-hook={copy_out}
            {SUITE} {tree} {mirror}"
    )
    .quiet()
    .run()
    .context("building the dracut fixture with mmdebstrap (needs root)");
    let _ = std::fs::remove_dir_all(&tree);
    result?;
    if !output.is_file() {
        bail!("mmdebstrap ran but left no {}", output.display());
    }
    std::fs::write(
        dir.join(COMPLETE),
        format!("{RECIPE}\n{SUITE} {PACKAGES}\n"),
    )?;
    eprintln!("fixtures: dracut initramfs {} ready", output.display());
    Ok(output)
}
