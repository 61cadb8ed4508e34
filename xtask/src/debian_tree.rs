//! The Debian trees of the real chain: per architecture and fixture kernel, one Debian
//! bookworm tree built with `mmdebstrap` (systemd, udev, kmod, dracut and what a booted root needs
//! to reach `multi-user.target` on a serial console), the kernel's modules copied in. Two things
//! are made from that one tree, both cached:
//!
//! * the second-stage initramfs: `dracut --no-hostonly --reproducible` run inside the tree for
//!   the kernel, as a distribution's generic image ([`second_stage_initramfs`]; builder turns it
//!   into the erofs image, and the test suite's dracut round trip uses it too);
//! * the real root filesystem, as a directory ([`real_root`]): the tree plus an fstab for the
//!   cell's partitions ([`RootSpec`]) and a systemd that shows its status on the console.
//!
//! Cache layout (under [`cache_dir`]), each entry filled once under its `.lock`, built in `tmp/`,
//! renamed to `done/`, then marked with `.complete`:
//!
//! ```text
//! debian-tree/<arch>-<key>/done/{root/, initrd.img-<release>, packages.txt}
//! debian-root/<arch>-<key>/done/{root/, packages.txt}
//! ```
//!
//! The mirror is the machine's own Debian apt source, read at run time (never written into this
//! repository). `packages.txt` (`dpkg-query`: package, version, architecture) records what the
//! mirror gave: the key cannot hold package versions, which move with the mirror.
//!
//! A foreign architecture (arm64 on an x86_64 host) is built the same way, its maintainer
//! scripts and dracut running under qemu-user through binfmt_misc (`provision::ensure_binfmt`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::fixtures::{COMPLETE, Kernel, cache_dir};

/// The Debian release of the tree.
const SUITE: &str = "bookworm";
/// Besides the essential packages and apt: systemd as init (`systemd-sysv` owns /sbin/init),
/// udev and kmod to load the modules, dracut for the second stage, e2fsprogs for the fsck the
/// fstab asks for, and dbus so systemd-logind starts instead of failing on the way to
/// `multi-user.target`; cryptsetup and lvm2, so the generic (no-hostonly) dracut image unlocks
/// and activates a root on LUKS2 or LVM as a distribution's does; erofs-utils, so the builder
/// runs inside the real root (the dogfooding install). Nothing else: every package costs build
/// time and image size.
const PACKAGES: &str =
    "systemd,systemd-sysv,udev,kmod,dracut,e2fsprogs,dbus,cryptsetup,lvm2,erofs-utils";
/// Bumped whenever the tree's recipe (hooks, flags) changes, so the cache is rebuilt.
const TREE_RECIPE: &str = "v4 --variant=apt, modules copied in, dracut --no-hostonly --reproducible, hostname, empty machine-id, no resolv.conf, apt partial dirs _apt's";
/// Bumped whenever what [`real_root`] adds to the tree changes.
const ROOT_RECIPE: &str = "v6 fstab, ShowStatus=yes, test report unit (root=, dm=) after multi-user.target, memory unit before sysinit.target";
/// The real root's hostname (what the serial console's login prompt shows).
pub const HOSTNAME: &str = "initoverlayfs";
/// The drop-in that makes systemd print its status lines even under `quiet`.
const SHOW_STATUS_DROP_IN: &str = "etc/systemd/system.conf.d/initoverlayfs-rs.conf";

/// The real root's report for the test cells: on one kernel-log line (writes to /dev/kmsg
/// are rate-limited per line), what the early boot left behind once the real root's
/// filesystems are up: /boot's mount (source, type, ro/rw), how many erofs and overlay mounts
/// and loop devices remain, whether the image on /boot can be replaced, as a kernel update
/// would, the root's device, and the device-mapper targets in use (`none`, `CRYPT`, `LVM`,
/// comma-separated): the proof a LUKS2 or LVM root really is one. Ordered after
/// multi-user.target, so what it costs (copying the image, under TCG seconds) stays out of the
/// boot's time to multi-user.target; kernel-log lines reach the serial console whoever owns it.
const REPORT_SCRIPT: &str = r#"#!/bin/sh
boot=$(awk '$2 == "/boot" { split($4, o, ","); print $1 "," $3 "," o[1] }' /proc/mounts)
erofs=$(awk '$3 == "erofs"' /proc/mounts | wc -l)
overlay=$(awk '$3 == "overlay"' /proc/mounts | wc -l)
loops=$(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)
replaced=no
image=$(ls /boot/initoverlayfs-*.img 2>/dev/null | head -n 1)
if [ -n "$image" ] && cp "$image" "$image.new" && mv "$image.new" "$image"; then
    replaced=yes
fi
root=$(awk '$2 == "/" { print $1 }' /proc/mounts | tail -n 1)
# The device-mapper targets under the machine (dm-crypt: CRYPT-..., LVM: LVM-... in dm/uuid).
dm=$(cat /sys/block/dm-*/dm/uuid 2>/dev/null | cut -d- -f1 | sort -u | paste -s -d, -)
echo "<5>initoverlayfs-test: report boot=$boot erofs=$erofs overlay=$overlay loop=$loops image-replaced=$replaced root=$root dm=${dm:-none}" > /dev/kmsg
"#;
const REPORT_SCRIPT_PATH: &str = "usr/local/sbin/initoverlayfs-test-report";
const REPORT_UNIT: &str = "[Unit]
Description=initoverlayfs-rs test report (what the early boot left behind)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/initoverlayfs-test-report

[Install]
WantedBy=multi-user.target
";
pub(crate) const REPORT_UNIT_NAME: &str = "initoverlayfs-test-report.service";

/// The memory in use right after the switch to the real root (what `bench-boot` reports per
/// chain): the real root's first unit, before sysinit.target, logs MemTotal - MemAvailable. By
/// then the classic chain's initramfs has been freed (systemd empties a tmpfs/ramfs root on
/// switch-root), while initoverlayfs's overlay and erofs page cache live on until unmounted.
const MEMORY_SCRIPT: &str = r#"#!/bin/sh
awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { printf "<5>initoverlayfs-test: memory used=%d kB\n", t - a }' /proc/meminfo > /dev/kmsg
"#;
const MEMORY_SCRIPT_PATH: &str = "usr/local/sbin/initoverlayfs-test-memory";
const MEMORY_UNIT: &str = "[Unit]
Description=initoverlayfs-rs test: memory in use after the switch to the real root
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/initoverlayfs-test-memory

[Install]
WantedBy=sysinit.target
";
pub(crate) const MEMORY_UNIT_NAME: &str = "initoverlayfs-test-memory.service";

/// A Debian architecture the trees can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Debian's name (`--arch=` of mmdebstrap).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture a kernel release is built for, from the suffix Debian
    /// (`6.12.95+deb12-arm64`) and RPM distributions (`6.17.1-300.fc43.aarch64`) give it.
    pub fn of_release(release: &str) -> Result<Arch> {
        let suffix = release.rsplit(['-', '.']).next().unwrap_or_default();
        match suffix {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            _ => bail!(
                "kernel release {release:?} names no architecture the Debian trees are built for \
                 (expected a release ending in amd64, x86_64, arm64 or aarch64)"
            ),
        }
    }
}

/// Where the real root and /boot are, as fstab names them: the cell's disk decides, so these are
/// inputs (and part of the real root's cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootSpec {
    /// The root filesystem's source, e.g. `PARTUUID=…` (what `root=` names too).
    pub root: String,
    /// The root filesystem's type: `ext4`.
    pub root_fstype: String,
    /// /boot's source, e.g. `UUID=…`.
    pub boot: String,
    /// /boot's filesystem type: `ext4` or `vfat`.
    pub boot_fstype: String,
}

impl RootSpec {
    /// The real root's `/etc/fstab`: / and /boot read-write, checked at boot as a distribution
    /// installs them (pass 1 for /, 2 for /boot).
    pub fn fstab(&self) -> String {
        format!(
            "# Written by initoverlayfs-rs (xtask::debian_tree) for a test cell.\n\
             {root}\t/\t{root_fstype}\tdefaults\t0\t1\n\
             {boot}\t/boot\t{boot_fstype}\tdefaults\t0\t2\n",
            root = self.root,
            root_fstype = self.root_fstype,
            boot = self.boot,
            boot_fstype = self.boot_fstype,
        )
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("root", &self.root),
            ("root_fstype", &self.root_fstype),
            ("boot", &self.boot),
            ("boot_fstype", &self.boot_fstype),
        ] {
            if value.is_empty() || value.contains(char::is_whitespace) {
                bail!("RootSpec.{name} = {value:?}: an fstab field must be one non-empty word");
            }
        }
        Ok(())
    }
}

/// One built tree and what was made from it. Everything here is cached and shared: read it,
/// never change it in place.
#[derive(Debug, Clone)]
pub struct DebianTree {
    pub arch: Arch,
    /// The cache key (hex sha256) the tree was built under.
    pub key: String,
    /// The kernel release whose modules the tree holds.
    pub release: String,
    /// The tree itself (owners and modes as Debian installs them).
    pub root: PathBuf,
    /// The dracut initramfs made inside the tree for `release` (not left in the tree's /boot).
    pub initramfs: PathBuf,
    /// `dpkg-query -W` of the tree: `package<TAB>version<TAB>architecture` lines.
    pub packages: PathBuf,
}

/// A real root filesystem for one [`RootSpec`].
#[derive(Debug, Clone)]
pub struct RealRoot {
    /// The cache key (hex sha256) the root was built under: its tree's key, the spec, the
    /// recipe. What is made from the root (an encrypted copy) is keyed by it.
    pub key: String,
    /// The root directory: hard links into the tree's files plus its own `/etc/fstab` and
    /// systemd drop-in. Make the disk with `keep_owners: true` (`testvm::disk::Partition`).
    pub root: PathBuf,
    /// The installed packages, as in [`DebianTree::packages`].
    pub packages: PathBuf,
}

/// The Debian tree for `kernel` (its architecture from its release), built or found in the cache.
pub fn debian_tree(sh: &Shell, kernel: &Kernel) -> Result<DebianTree> {
    let arch = Arch::of_release(&kernel.release)?;
    let epoch = testvm::disk::source_date_epoch();
    let key = tree_key(arch, &kernel.fetched.sha256, &kernel.release, epoch);
    let entry = cache_dir()
        .join("debian-tree")
        .join(format!("{}-{}", arch.debian(), &key[..16]));
    let done = fill_once(&entry, |work| build_tree(sh, arch, kernel, epoch, work))?;
    Ok(DebianTree {
        arch,
        key,
        release: kernel.release.clone(),
        root: done.join("root"),
        initramfs: done.join(initramfs_name(&kernel.release)),
        packages: done.join("packages.txt"),
    })
}

/// The second-stage initramfs for `kernel`: Debian's dracut systemd initramfs, made inside the
/// kernel's [`debian_tree`]. This is what builder turns into the erofs image.
pub fn second_stage_initramfs(sh: &Shell, kernel: &Kernel) -> Result<PathBuf> {
    Ok(debian_tree(sh, kernel)?.initramfs)
}

/// The real root for `kernel`'s tree with `spec`'s fstab, built or found in the cache.
pub fn real_root(sh: &Shell, kernel: &Kernel, spec: &RootSpec) -> Result<RealRoot> {
    spec.validate()?;
    let tree = debian_tree(sh, kernel)?;
    let key = root_key(&tree.key, spec);
    let entry =
        cache_dir()
            .join("debian-root")
            .join(format!("{}-{}", tree.arch.debian(), &key[..16]));
    let done = fill_once(&entry, |work| build_root(sh, &tree, spec, work))?;
    Ok(RealRoot {
        key,
        root: done.join("root"),
        packages: done.join("packages.txt"),
    })
}

pub(crate) fn initramfs_name(release: &str) -> String {
    format!("initrd.img-{release}")
}

/// The tree's cache key: everything that changes what mmdebstrap and dracut make, except the
/// package versions (see the module comment).
fn tree_key(arch: Arch, kernel_sha256: &str, release: &str, epoch: u64) -> String {
    hash(&[
        TREE_RECIPE,
        SUITE,
        arch.debian(),
        PACKAGES,
        kernel_sha256,
        release,
        &epoch.to_string(),
    ])
}

/// The real root's key: its tree's key and the spec.
pub(crate) fn root_key(tree_key: &str, spec: &RootSpec) -> String {
    hash(&[
        ROOT_RECIPE,
        tree_key,
        &spec.root,
        &spec.root_fstype,
        &spec.boot,
        &spec.boot_fstype,
    ])
}

/// The hex sha256 of `parts`, each ended by a NUL (so no two lists hash alike): the cache keys.
pub(crate) fn hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\0");
    }
    hex::encode(hasher.finalize())
}

/// Fills the cache entry `entry` once, shared by concurrent processes: under `entry/.lock`, unless
/// `.complete` is there, `build` fills `entry/tmp` (a leftover of a killed run is removed first),
/// which is then renamed to `entry/done` and marked complete. Returns `entry/done`.
pub(crate) fn fill_once(entry: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(entry).with_context(|| format!("creating {}", entry.display()))?;
    let lock_path = entry.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Released when `lock` drops, at the end of this function.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let done = entry.join("done");
    if entry.join(COMPLETE).is_file() {
        return Ok(done);
    }
    let work = entry.join("tmp");
    for stale in [&work, &done] {
        refuse_if_mounted(stale)?;
        remove_tree(stale)?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    if let Err(error) = build(&work) {
        // A failed build leaves nothing half-made behind (unless mmdebstrap left mounts in it:
        // the next run says so); the build's error is what matters.
        if refuse_if_mounted(&work).is_ok() {
            let _ = remove_tree(&work);
        }
        return Err(error);
    }
    std::fs::rename(&work, &done)
        .with_context(|| format!("moving {} to {}", work.display(), done.display()))?;
    std::fs::write(entry.join(COMPLETE), "")
        .with_context(|| format!("marking {} complete", entry.display()))?;
    Ok(done)
}

/// A killed mmdebstrap can leave its chroot's /proc, /sys and /dev mounts behind: removing the
/// tree under them would fail half-way or reach into the host's devices, so stop and say so.
fn refuse_if_mounted(path: &Path) -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let below: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| Path::new(point).starts_with(path))
        .collect();
    if !below.is_empty() {
        bail!(
            "{} still has mounts of a killed build ({}); unmount them with `umount -R` and rerun",
            path.display(),
            below.join(", ")
        );
    }
    Ok(())
}

/// Removes a directory tree; absent is fine.
fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// mmdebstrap hook arguments are split on whitespace: a path with any cannot be passed.
fn hook_path(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains(char::is_whitespace) || text.contains(['\'', '"']) {
        bail!(
            "{text}: mmdebstrap hooks cannot take a path with spaces or quotes; \
             point {} at a directory without them",
            crate::fixtures::CACHE_ENV
        );
    }
    Ok(text.to_owned())
}

/// Runs mmdebstrap into `work/root`, with dracut and the package list as customize hooks (they
/// need the chroot's /proc and /dev, which mmdebstrap mounts for its hooks).
fn build_tree(sh: &Shell, arch: Arch, kernel: &Kernel, epoch: u64, work: &Path) -> Result<()> {
    crate::provision::ensure_binfmt(sh, arch.debian())?;
    let mirror = crate::provision::debian_mirror()?;
    let release = &kernel.release;
    let modules = kernel.modules_root().join("lib/modules").join(release);
    if !modules.join("modules.dep").is_file() {
        bail!(
            "{}: no modules.dep (the kernel fixture is incomplete; remove it from the cache and rerun)",
            modules.display()
        );
    }
    let modules = hook_path(&modules)?;
    let out = hook_path(work)?;
    let initramfs = initramfs_name(release);
    let hooks = [
        // /lib is a symlink to usr/lib in bookworm: copy-in follows it.
        r#"mkdir -p "$1/lib/modules""#.to_owned(),
        format!("copy-in {modules} /lib/modules"),
        // --reproducible: file times from SOURCE_DATE_EPOCH, sorted archive.
        format!(
            r#"chroot "$1" dracut --quiet --no-hostonly --reproducible --force --kver {release} /boot/{initramfs}"#
        ),
        format!("copy-out /boot/{initramfs} {out}"),
        // The real root's /boot is a partition of its own: the tree's /boot stays empty.
        format!(r#"rm "$1/boot/{initramfs}""#),
        // mmdebstrap copies the host's hostname and resolv.conf in, which would make the tree
        // depend on the build machine: a fixed name, and no resolver (the guests have no network).
        format!(r#"echo {HOSTNAME} > "$1/etc/hostname"; rm -f "$1/etc/resolv.conf""#),
        // Empty, not absent and not "uninitialized": systemd makes up an id at every boot and
        // does not treat the boot as a first boot (no systemd-firstboot prompt on the console).
        r#": > "$1/etc/machine-id""#.to_owned(),
        // apt leaves its `partial` directories to its sandbox user `_apt` only when that user
        // can reach the target (not below a 0700 /root): give them to `_apt`, as an installed
        // system has them, wherever the cache is.
        r#"chroot "$1" chown _apt:root /var/cache/apt/archives/partial /var/lib/apt/lists/partial"#
            .to_owned(),
        format!(
            r#"chroot "$1" dpkg-query -W -f '${{binary:Package}}\t${{Version}}\t${{Architecture}}\n' > {out}/packages.txt"#
        ),
    ];
    let hook_args: Vec<String> = hooks
        .iter()
        .map(|hook| format!("--customize-hook={hook}"))
        .collect();
    let target = work.join("root");
    let arch_arg = format!("--arch={}", arch.debian());
    eprintln!(
        "debian-tree: building Debian {SUITE} {} with mmdebstrap ({PACKAGES}), modules and a dracut initramfs for {release}",
        arch.debian()
    );
    let started = std::time::Instant::now();
    let _epoch = sh.push_env(testvm::disk::SOURCE_DATE_EPOCH_ENV, epoch.to_string());
    cmd!(
        sh,
        "mmdebstrap --quiet --variant=apt {arch_arg} --include={PACKAGES} {hook_args...} {SUITE} {target} {mirror}"
    )
    .quiet()
    .run()
    .with_context(|| {
        format!(
            "building the Debian {} tree for {release} with mmdebstrap (needs root, the mirror of \
             the machine's apt sources and, for a foreign architecture, qemu-user)",
            arch.debian()
        )
    })?;
    for made in [work.join(&initramfs), work.join("packages.txt")] {
        if !made.is_file() {
            bail!("mmdebstrap ran but left no {}", made.display());
        }
    }
    eprintln!(
        "debian-tree: {} ready in {:.0} s",
        work.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The real root: the tree hard-linked (the root shares the tree's files: cheap, and neither is
/// ever written in place), then its own files written over fresh links.
fn build_root(sh: &Shell, tree: &DebianTree, spec: &RootSpec, work: &Path) -> Result<()> {
    let (from, to) = (&tree.root, work.join("root"));
    cmd!(sh, "cp -a --link {from} {to}")
        .quiet()
        .run()
        .with_context(|| format!("hard-linking {} to {}", from.display(), to.display()))?;
    add_real_root_files(&to, spec)?;
    std::fs::copy(&tree.packages, work.join("packages.txt"))
        .with_context(|| format!("copying {}", tree.packages.display()))?;
    Ok(())
}

/// What makes a tree a real root for `spec`'s disk: its fstab, systemd's status on the console
/// and the report unit. Every file is written fresh (never through a hard link into the tree).
pub(crate) fn add_real_root_files(to: &Path, spec: &RootSpec) -> Result<()> {
    replace_file(&to.join("etc/fstab"), &spec.fstab())?;
    // ShowStatus=yes: "Reached target … Multi-User System" reaches the serial console even when
    // the command line says `quiet` (a config setting outranks `quiet`).
    let drop_in = to.join(SHOW_STATUS_DROP_IN);
    if let Some(dir) = drop_in.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    replace_file(&drop_in, "[Manager]\nShowStatus=yes\n")?;
    let script = to.join(REPORT_SCRIPT_PATH);
    if let Some(dir) = script.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (path, text) in [
        (REPORT_SCRIPT_PATH, REPORT_SCRIPT),
        (MEMORY_SCRIPT_PATH, MEMORY_SCRIPT),
    ] {
        let script = to.join(path);
        replace_file(&script, text)?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("making {} executable", script.display()))?;
    }
    let units = to.join("etc/systemd/system");
    replace_file(&units.join(REPORT_UNIT_NAME), REPORT_UNIT)?;
    replace_file(&units.join(MEMORY_UNIT_NAME), MEMORY_UNIT)?;
    enable_unit(&units, "multi-user.target", REPORT_UNIT_NAME)?;
    enable_unit(&units, "sysinit.target", MEMORY_UNIT_NAME)
}

/// `target.wants/unit` in `units`, a fresh link (never one into the tree).
fn enable_unit(units: &Path, target: &str, unit: &str) -> Result<()> {
    let wants = units.join(format!("{target}.wants"));
    std::fs::create_dir_all(&wants).with_context(|| format!("creating {}", wants.display()))?;
    let link = wants.join(unit);
    let _ = std::fs::remove_file(&link); // absent is fine
    std::os::unix::fs::symlink(format!("../{unit}"), &link)
        .with_context(|| format!("enabling {}", link.display()))?;
    Ok(())
}

/// Writes `path` as a new file: unlinked first, so a hard link into the tree is never written
/// through.
pub(crate) fn replace_file(path: &Path, contents: &str) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", path.display()));
        }
        _ => {}
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// What a command run by [`in_chroot_with`] sees besides the tree and its /proc, /sys and /dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChrootMounts {
    /// The tree read-only (a bind mount of itself, remounted): the command cannot write into a
    /// shared cache entry, whatever it tries.
    pub read_only: bool,
    /// Fresh tmpfs mounts on /tmp and /var/tmp: the scratch space a read-only tree lacks, and
    /// the place the mount points of directory [`Bind`]s are made in.
    pub scratch: bool,
    pub binds: Vec<Bind>,
}

/// A host path bound into the chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    pub host: PathBuf,
    /// The absolute path inside the tree. A directory's mount point is made if missing (on a
    /// read-only tree only under the scratch tmpfs); a file's must exist.
    pub inside: String,
    pub writable: bool,
}

/// The mounts of [`in_chroot_with`], then the chroot. Its arguments: the tree, the command,
/// `yes`/`no` for read-only and scratch, then `<host> <inside> <rw|ro>` per bind.
const CHROOT_SCRIPT: &str = r#"set -e
root=$1 command=$2 read_only=$3 scratch=$4
shift 4
if [ "$read_only" = yes ]; then
    mount --bind "$root" "$root"
    mount -o remount,bind,ro "$root"
fi
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
if [ "$scratch" = yes ]; then
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    mount -t tmpfs -o mode=1777 tmpfs "$root/var/tmp"
fi
while [ $# -ge 3 ]; do
    if [ -d "$1" ]; then mkdir -p "$root$2"; fi
    mount --bind "$1" "$root$2"
    if [ "$3" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
    shift 3
done
exec chroot "$root" /bin/sh -c "$command""#;

/// Runs `command` (a shell line) chrooted into `root`, with /proc, /sys and /dev mounted for it
/// in a mount namespace of its own: the mounts vanish with the process, even a killed one, and
/// never show in the host's mount table.
pub(crate) fn in_chroot(sh: &Shell, root: &Path, command: &str) -> Result<()> {
    in_chroot_with(sh, root, command, &ChrootMounts::default())
}

/// [`in_chroot`] with `mounts` set up in the same private namespace.
pub(crate) fn in_chroot_with(
    sh: &Shell,
    root: &Path,
    command: &str,
    mounts: &ChrootMounts,
) -> Result<()> {
    let args = chroot_args(root, command, mounts)?;
    cmd!(
        sh,
        "unshare --mount --propagation private sh -c {CHROOT_SCRIPT} sh {args...}"
    )
    .quiet()
    .run()?;
    Ok(())
}

/// The positional arguments of [`CHROOT_SCRIPT`].
fn chroot_args(root: &Path, command: &str, mounts: &ChrootMounts) -> Result<Vec<String>> {
    let text = |path: &Path| {
        path.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not UTF-8", path.display()))
    };
    let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_owned();
    let mut args = vec![
        text(root)?,
        command.to_owned(),
        yes_no(mounts.read_only),
        yes_no(mounts.scratch),
    ];
    for bind in &mounts.binds {
        if !bind.inside.starts_with('/') || bind.inside.split('/').any(|part| part == "..") {
            bail!(
                "bind mount point {:?}: an absolute path inside the tree, without `..`",
                bind.inside
            );
        }
        args.push(text(&bind.host)?);
        args.push(bind.inside.clone());
        args.push(if bind.writable { "rw" } else { "ro" }.to_owned());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RootSpec {
        RootSpec {
            root: "PARTUUID=11223344-5566-4778-899a-abbccddeeff0".into(),
            root_fstype: "ext4".into(),
            boot: "UUID=a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d".into(),
            boot_fstype: "ext4".into(),
        }
    }

    #[test]
    fn the_root_key_follows_the_spec_and_the_tree() {
        let tree = tree_key(Arch::Amd64, "aa", "6.12.95+deb12-amd64", 0);
        let base = root_key(&tree, &spec());
        assert_eq!(base, root_key(&tree, &spec()), "a key is a function");
        let changed = [
            RootSpec {
                root: "PARTUUID=00000000-5566-4778-899a-abbccddeeff0".into(),
                ..spec()
            },
            RootSpec {
                root_fstype: "xfs".into(),
                ..spec()
            },
            RootSpec {
                boot: "UUID=1234-ABCD".into(),
                ..spec()
            },
            RootSpec {
                boot_fstype: "vfat".into(),
                ..spec()
            },
        ];
        for other in changed {
            assert_ne!(base, root_key(&tree, &other), "{other:?}");
        }
        let other_tree = tree_key(Arch::Arm64, "aa", "6.12.95+deb12-amd64", 0);
        assert_ne!(base, root_key(&other_tree, &spec()));
    }

    #[test]
    fn the_tree_key_follows_arch_kernel_and_epoch() {
        let base = tree_key(Arch::Amd64, "aa", "6.12.95+deb12-amd64", 0);
        for other in [
            tree_key(Arch::Arm64, "aa", "6.12.95+deb12-amd64", 0),
            tree_key(Arch::Amd64, "ab", "6.12.95+deb12-amd64", 0),
            tree_key(Arch::Amd64, "aa", "6.1.0-40-amd64", 0),
            tree_key(Arch::Amd64, "aa", "6.12.95+deb12-amd64", 1),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn fstab_mounts_root_and_boot() {
        assert_eq!(
            spec().fstab().lines().skip(1).collect::<Vec<_>>(),
            [
                "PARTUUID=11223344-5566-4778-899a-abbccddeeff0\t/\text4\tdefaults\t0\t1",
                "UUID=a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d\t/boot\text4\tdefaults\t0\t2",
            ]
        );
        let broken = RootSpec {
            boot: "UUID=a b".into(),
            ..spec()
        };
        let error = broken.validate().unwrap_err().to_string();
        assert!(error.contains("RootSpec.boot"), "{error}");
    }

    #[test]
    fn chroot_arguments() {
        let check = |mounts: ChrootMounts, expected: &[&str]| {
            assert_eq!(
                chroot_args(Path::new("/c/root"), "dracut -f", &mounts).unwrap(),
                expected
            );
        };
        check(
            ChrootMounts::default(),
            &["/c/root", "dracut -f", "no", "no"],
        );
        check(
            ChrootMounts {
                read_only: true,
                scratch: true,
                binds: vec![
                    Bind {
                        host: "/c/work".into(),
                        inside: "/tmp/work".into(),
                        writable: true,
                    },
                    Bind {
                        host: "/c/content".into(),
                        inside: "/tmp/content".into(),
                        writable: false,
                    },
                ],
            },
            &[
                "/c/root",
                "dracut -f",
                "yes",
                "yes",
                "/c/work",
                "/tmp/work",
                "rw",
                "/c/content",
                "/tmp/content",
                "ro",
            ],
        );
        for inside in ["tmp/x", "/tmp/../etc"] {
            let mounts = ChrootMounts {
                binds: vec![Bind {
                    host: "/c/x".into(),
                    inside: inside.into(),
                    writable: false,
                }],
                ..ChrootMounts::default()
            };
            let error = chroot_args(Path::new("/c/root"), "true", &mounts).unwrap_err();
            assert!(error.to_string().contains(inside), "{error}");
        }
    }

    #[test]
    fn arch_from_the_kernel_release() {
        assert_eq!(
            Arch::of_release("6.12.95+deb12-amd64").unwrap(),
            Arch::Amd64
        );
        assert_eq!(Arch::of_release("6.1.0-40-arm64").unwrap(), Arch::Arm64);
        assert_eq!(
            Arch::of_release("6.17.1-300.fc43.aarch64").unwrap(),
            Arch::Arm64
        );
        assert_eq!(
            Arch::of_release("5.14.0-611.el9.x86_64").unwrap(),
            Arch::Amd64
        );
        assert!(Arch::of_release("6.1.0-40-armmp").is_err());
    }
}
