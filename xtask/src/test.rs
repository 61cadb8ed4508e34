//! `cargo xtask test`: the README's test command. Provisions the host, fetches the fixtures,
//! then runs every test of the workspace (unit tests and the VM cells) under cargo-nextest.

use std::path::Path;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::fixtures::Kernel;
use crate::provision::find_in_path;

pub fn run(sh: &Shell, root: &Path, extra: &[String]) -> Result<()> {
    crate::provision::ensure(sh)?;
    ensure_nextest(sh)?;
    let kernels = prefetch(sh, root)?;
    let kernel = kernels
        .first()
        .context("fixtures/kernels.toml names no kernel")?;
    let _dir = sh.push_dir(root);
    // builder's kernel awareness is checked against every fixture kernel's real config, where
    // its layout keeps it (Debian's boot/config-<release>, Fedora's lib/modules/<release>/config).
    let configs: Vec<String> = kernels
        .iter()
        .map(|k| {
            builder::kernel_config::KernelConfig::locate(k.modules_root(), &k.release)
                .map(|config| config.source.display().to_string())
                .with_context(|| format!("the config of kernel {}", k.release))
        })
        .collect::<Result<_>>()?;
    let _configs = sh.push_env("BUILDER_REAL_KERNEL_CONFIGS", configs.join(":"));
    // builder's tests of the module closure run against the real kernel tree too.
    let tree = format!("{}:{}", kernel.modules_root().display(), kernel.release);
    let _tree = sh.push_env("BUILDER_REAL_KERNEL_TREE", tree);
    // builder's round trip of a real dracut initramfs, made in a Debian tree for this kernel.
    let dracut = crate::dracut_fixture::dracut_initramfs(sh, kernel)?;
    let _dracut = sh.push_env("BUILDER_REAL_DRACUT_INITRAMFS", &dracut);
    // testvm's own boot tests: the kernel, and an initrd whose /init is busybox (init applet).
    let _kernel = sh.push_env("TESTVM_KERNEL", &kernel.vmlinuz);
    let initrd = busybox_initrd(sh, root)?;
    let _initrd = sh.push_env("TESTVM_INITRD", &initrd);
    cmd!(
        sh,
        "cargo nextest run --workspace --no-fail-fast {extra...}"
    )
    .run()
    .context("cargo nextest run")?;
    Ok(())
}

/// Fetches every fixture once up front, so the VM tests spend their time budget on booting.
/// Returns the kernels in manifest order.
fn prefetch(sh: &Shell, root: &Path) -> Result<Vec<Kernel>> {
    let mut kernels = Vec::new();
    for pin in crate::fixtures::read_kernels(root)?.kernel {
        let kernel = match crate::fixtures::fetch_kernel(sh, &pin) {
            Ok(kernel) => kernel,
            // Not fatal here: the cells using this kernel report it as skipped.
            Err(crate::fixtures::FetchError::Unavailable(reason)) => {
                eprintln!("fixtures: {} skipped: {reason}", pin.id);
                continue;
            }
            Err(crate::fixtures::FetchError::Failed(error)) => return Err(error),
        };
        eprintln!(
            "fixtures: {} {} ready",
            kernel.fetched.package, kernel.fetched.version
        );
        kernels.push(kernel);
    }
    for package in crate::fixtures::read_packages(root)?.package {
        let fetched = crate::fixtures::fetch_deb(sh, &package, false)?;
        eprintln!("fixtures: {} {} ready", fetched.package, fetched.version);
    }
    Ok(kernels)
}

/// `target/testvm-initrd.cpio`: busybox as /init, enough for testvm to reach userspace.
fn busybox_initrd(sh: &Shell, root: &Path) -> Result<std::path::PathBuf> {
    let packages = crate::fixtures::read_packages(root)?;
    let pin = packages
        .package
        .first()
        .context("fixtures/packages.toml names no package")?;
    let busybox = crate::fixtures::fetch_deb(sh, pin, false)?;
    let mut archive = builder::cpio::Archive::new();
    archive.add_file_from_host("/init", 0o755, &busybox.root.join("bin/busybox"))?;
    archive.add_char_device("/dev/console", 0o600, 5, 1)?;
    let path = root.join("target/testvm-initrd.cpio");
    std::fs::write(&path, archive.to_bytes(0)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn ensure_nextest(sh: &Shell) -> Result<()> {
    if find_in_path("cargo-nextest").is_some() {
        return Ok(());
    }
    eprintln!(
        "provision: cargo-nextest missing; installing it with `cargo install cargo-nextest --locked`"
    );
    cmd!(sh, "cargo install cargo-nextest --locked")
        .run()
        .context("installing cargo-nextest")
}
