//! systemd's kernel-install with `layout=uki`, run for real on a tree with builder's plugins:
//! what a machine whose kernels are UKIs does when a kernel is installed. The initrd generator
//! puts the classic initramfs in the staging area, builder's `59-initoverlayfs.install` turns
//! it into the image (on `$BOOT`) and the mini initramfs (in its place), 60-ukify bakes the UKI
//! (signed with the given key), 90-uki-copy puts it in `$BOOT/EFI/Linux/`.
//!
//! kernel-install, its plugins, ukify and the stub come from systemd 254's packages (pinned in
//! fixtures/packages.toml), run unpacked: bookworm's systemd 252 has no uki layout, and the
//! host's systemd stays as it is. The one stand-in is the initrd generator (dracut's
//! 50-dracut.install on Fedora), a plugin that copies the given classic initramfs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::secure_boot::SigningKeys;

/// The packages of fixtures/packages.toml kernel-install needs.
const PACKAGES: [&str; 3] = [
    "systemd-254-amd64",
    "libsystemd-shared-254-amd64",
    "systemd-boot-efi-254-amd64",
];

/// The entry token of the trees made here (`$BOOT/<token>/<kver>/`, the UKI's file name).
pub const ENTRY_TOKEN: &str = "initoverlayfs-test";

/// systemd 254's kernel-install, unpacked.
#[derive(Debug, Clone)]
pub struct KernelInstall {
    binary: PathBuf,
    /// Holds libsystemd-shared-254.so, which the binary links.
    library_dir: PathBuf,
    /// systemd's own plugins (`60-ukify.install`, `90-uki-copy.install`).
    plugin_dir: PathBuf,
    ukify: PathBuf,
    stub: PathBuf,
}

impl KernelInstall {
    /// Fetches (or finds in the cache) systemd 254's packages.
    pub fn fetch(sh: &Shell, project: &Path) -> Result<KernelInstall> {
        let mut roots = Vec::new();
        for id in PACKAGES {
            roots.push(crate::fixtures::fetch_package(sh, project, id)?.root);
        }
        let found = |root: &Path, relative: &str| -> Result<PathBuf> {
            let path = root.join(relative);
            if !path.exists() {
                bail!("{} is not in its unpacked package", path.display());
            }
            Ok(path)
        };
        Ok(KernelInstall {
            binary: found(&roots[0], "usr/bin/kernel-install")?,
            plugin_dir: found(&roots[0], "usr/lib/kernel/install.d")?,
            library_dir: found(&roots[1], "usr/lib/x86_64-linux-gnu/systemd")?,
            ukify: found(&roots[0], "lib/systemd/ukify")?,
            stub: found(&roots[2], "usr/lib/systemd/boot/efi/linuxx64.efi.stub")?,
        })
    }
}

/// What one kernel's install is made from.
#[derive(Debug, Clone)]
pub struct UkiKernel<'a> {
    pub release: &'a str,
    pub vmlinuz: &'a Path,
    /// The directory holding `lib/modules/<release>` (builder's modules root).
    pub modules_root: &'a Path,
    /// `boot/config-<release>` of the kernel package.
    pub config: &'a Path,
    /// The classic initramfs the initrd generator stands for.
    pub classic_initrd: &'a Path,
}

/// A tree laid out as a machine with `layout=uki`: `/etc/kernel` (install.conf, cmdline,
/// uki.conf with the signing key, entry-token), `/etc/fstab` naming the ESP `bootfs` on /boot,
/// storage-init, the kernel's modules and config, and builder's kernel-install plugins calling
/// `builder`. `$BOOT` is `<tree>/boot`.
pub fn make_tree(
    tree: &Path,
    kernel: &UkiKernel<'_>,
    storage_init: &Path,
    builder: &Path,
    bootfs: &str,
    cmdline: &str,
    keys: Option<&SigningKeys>,
) -> Result<()> {
    let write = |relative: &str, text: &str| -> Result<()> {
        let path = tree.join(relative);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("etc/os-release", "ID=fedora\nNAME=\"initoverlayfs test\"\n")?;
    write("etc/fstab", &format!("{bootfs} /boot vfat defaults 0 2\n"))?;
    write("etc/kernel/entry-token", &format!("{ENTRY_TOKEN}\n"))?;
    write(
        "etc/kernel/install.conf",
        "layout=uki\nuki_generator=ukify\n",
    )?;
    write("etc/kernel/cmdline", &format!("{cmdline}\n"))?;
    if let Some(keys) = keys {
        write(
            "etc/kernel/uki.conf",
            &format!(
                "[UKI]\nSecureBootSigningTool=sbsign\nSecureBootPrivateKey={}\nSecureBootCertificate={}\n",
                keys.key.display(),
                keys.cert.display()
            ),
        )?;
    }
    let modules = tree.join("lib/modules");
    std::fs::create_dir_all(&modules)?;
    let link = modules.join(kernel.release);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(
        kernel.modules_root.join("lib/modules").join(kernel.release),
        &link,
    )
    .with_context(|| format!("linking {}", link.display()))?;
    let boot = tree.join("boot");
    std::fs::create_dir_all(&boot)?;
    std::fs::copy(
        kernel.config,
        boot.join(format!("config-{}", kernel.release)),
    )
    .with_context(|| format!("copying {}", kernel.config.display()))?;
    let target = tree.join(&builder::install::DEFAULT_STORAGE_INIT[1..]);
    std::fs::create_dir_all(target.parent().unwrap())?;
    std::fs::copy(storage_init, &target)
        .with_context(|| format!("copying {}", storage_init.display()))?;
    let builder = builder
        .to_str()
        .context("the builder's path is not UTF-8")?;
    builder::hooks::write(tree, builder::install::LayoutKind::Bls, builder)?;
    Ok(())
}

/// The plugins kernel-install runs, in its order: the stand-in initrd generator, builder's,
/// systemd's.
fn plugins(ki: &KernelInstall, tree: &Path, generator: &Path) -> String {
    let ours = tree.join("etc/kernel/install.d");
    [
        generator.to_path_buf(),
        ours.join("59-initoverlayfs.install"),
        ki.plugin_dir.join("60-ukify.install"),
        ki.plugin_dir.join("90-uki-copy.install"),
        ours.join("95-initoverlayfs.install"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect::<Vec<_>>()
    .join(" ")
}

/// `kernel-install <args>` on `tree`, in a private mount namespace where `<tree>/boot` is a
/// mount point (kernel-install takes nothing else for `$BOOT`); returns its output.
fn run(
    sh: &Shell,
    ki: &KernelInstall,
    tree: &Path,
    plugins: &str,
    args: &[&str],
) -> Result<String> {
    let boot = tree.join("boot");
    let conf = tree.join("etc/kernel");
    let binary = &ki.binary;
    let boot_path = format!("--boot-path={}", boot.display());
    let esp_path = format!("--esp-path={}", boot.display());
    let token = format!("--entry-token=literal:{ENTRY_TOKEN}");
    let script = "mount --make-rprivate / && mount --bind \"$1\" \"$1\" && shift && exec \"$@\"";
    let output = cmd!(
        sh,
        "unshare --mount sh -c {script} sh {boot} {binary} --verbose {boot_path} {esp_path} {token} {args...}"
    )
    // ukify and 60-ukify run on the system's python3, which has python3-pefile.
    .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
    .env("LD_LIBRARY_PATH", &ki.library_dir)
    .env("KERNEL_INSTALL_CONF_ROOT", &conf)
    .env("KERNEL_INSTALL_PLUGINS", plugins)
    .env("KERNEL_INSTALL_UKIFY", &ki.ukify)
    .env("KERNEL_INSTALL_BOOT_STUB", &ki.stub)
    // $BOOT is a directory of the tree, not a partition of its own type.
    .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
    .env("SYSTEMD_RELAX_XBOOTLDR_CHECKS", "1")
    // builder works on the tree.
    .env("INITOVERLAYFS_ROOT", tree)
    .quiet()
    .ignore_status()
    .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!(
            "kernel-install {} failed ({}):\n{text}",
            args.join(" "),
            output.status
        );
    }
    Ok(text)
}

/// Where 90-uki-copy puts the UKI of `release` under `$BOOT`.
pub fn uki_path(tree: &Path, release: &str) -> PathBuf {
    tree.join(format!("boot/EFI/Linux/{ENTRY_TOKEN}-{release}.efi"))
}

/// Where builder's plugin puts the image of `release` under `$BOOT`.
pub fn image_path(tree: &Path, release: &str) -> PathBuf {
    tree.join(format!("boot/{ENTRY_TOKEN}/{release}/initoverlayfs.img"))
}

/// `kernel-install add` of `kernel` on `tree` (made by [`make_tree`]); returns the UKI and
/// kernel-install's output.
pub fn add(
    sh: &Shell,
    ki: &KernelInstall,
    tree: &Path,
    kernel: &UkiKernel<'_>,
) -> Result<(PathBuf, String)> {
    let generator = tree.join("initrd-generator/50-classic-initrd.install");
    std::fs::create_dir_all(generator.parent().unwrap())?;
    std::fs::write(
        &generator,
        format!(
            "#!/bin/sh\n# Stands in for dracut's 50-dracut.install: the classic initramfs, staged.\n\
             [ \"$1\" = add ] || exit 0\ncp '{}' \"$KERNEL_INSTALL_STAGING_AREA/initrd\"\n",
            kernel.classic_initrd.display()
        ),
    )?;
    std::fs::set_permissions(
        &generator,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let vmlinuz = kernel
        .vmlinuz
        .to_str()
        .context("a kernel path that is not UTF-8")?;
    let output = run(
        sh,
        ki,
        tree,
        &plugins(ki, tree, &generator),
        &["add", kernel.release, vmlinuz],
    )?;
    let uki = uki_path(tree, kernel.release);
    if !uki.is_file() {
        bail!("kernel-install add made no {}:\n{output}", uki.display());
    }
    Ok((uki, output))
}

/// `kernel-install remove` of `release` on `tree`; returns kernel-install's output.
pub fn remove(sh: &Shell, ki: &KernelInstall, tree: &Path, release: &str) -> Result<String> {
    let generator = tree.join("initrd-generator/50-classic-initrd.install");
    run(
        sh,
        ki,
        tree,
        &plugins(ki, tree, &generator),
        &["remove", release],
    )
}
