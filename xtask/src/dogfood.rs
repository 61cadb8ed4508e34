//! The dogfood cell: `builder install` run inside a booted Debian machine
//! exactly as the README tells a user, then the machine rebooted through its firmware and
//! bootloader, the install undone, and the kernel removed through the distribution.
//!
//! Host side: a Debian root in which the fixture kernel is installed *as a package* (its .deb
//! with `dpkg -i` in the tree, so its postinst runs dracut's kernel hook and writes
//! `/boot/initrd.img-<kver>`, and `apt-get purge` can later remove it through the hooks), cached
//! like the other roots ([`dogfood_root`]); the builder as the README builds it
//! ([`builder_binary`]). Guest side: a oneshot unit running [`GUEST_SCRIPT`] once per boot, its
//! stage kept on the root's disk:
//!
//! 1. classic boot (the dracut initramfs whole): `initoverlayfs-builder install --kver
//!    $(uname -r)`, show what changed in /boot, reboot;
//! 2. through storage-init and the image: prove it; run the kernel's postinst again
//!    (`dpkg-reconfigure`, a kernel update's path: dracut's hook, then ours); then
//!    `initoverlayfs-builder uninstall`, reboot;
//! 3. classic again: install once more (so the removal hooks are in place), `apt-get purge` the
//!    running kernel, check the image, the fallback and the kernel's files are gone, power off.
//!
//! Every line of evidence goes to the kernel log (`<5>`, notice), so it carries the guest's
//! clock on the serial console; each `echo` opens /dev/kmsg afresh, so the per-open-file rate
//! limit never drops one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cells::GuestDriver;
use crate::debian_tree::{
    RootSpec, debian_tree, fill_once, hash, in_chroot, replace_file, root_key,
};
use crate::fixtures::{Kernel, cache_dir};

/// Bumped whenever what [`dogfood_root`] makes changes, so the cache is rebuilt.
const DOGFOOD_RECIPE: &str = "v3 full copy of the tree, linux-base, systemd-boot and the kernel .deb installed with dpkg -i, /boot moved out, real root files";

/// Where the README installs the builder (`builder::install::DEFAULT_BUILDER_PATH`, where the
/// hooks look for it).
pub const GUEST_BUILDER: &str = "usr/local/sbin/initoverlayfs-builder";
/// Where the README installs the static storage-init (`builder::install::DEFAULT_STORAGE_INIT`).
pub const GUEST_STORAGE_INIT: &str = "usr/lib/initoverlayfs/storage-init";

const SCRIPT_PATH: &str = "usr/local/sbin/initoverlayfs-dogfood";
const UNIT_NAME: &str = "initoverlayfs-dogfood.service";
/// After multi-user.target, so every stage starts on a machine that reached it (and says so:
/// `multi-user=active`), and after the real root's report (`debian_tree`), which copies the
/// image the stages rewrite and whose line comes first. Its output also goes to the console,
/// so the builder's and apt's own words are in the cell's console.log.
const UNIT: &str = "[Unit]
Description=initoverlayfs-rs dogfood cell: install, undo, remove the kernel (one stage per boot)
After=multi-user.target initoverlayfs-test-report.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/initoverlayfs-dogfood
TimeoutStartSec=infinity
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// What both guest drivers start with: the stage kept on the root's disk, evidence to the
/// kernel log, what this boot went through, `timed`.
macro_rules! guest_prelude {
    () => {
        r#"#!/bin/sh
# initoverlayfs-rs dogfood cell (xtask/src/dogfood.rs): one stage per boot, the stage kept in
# /var/lib/initoverlayfs-dogfood/stage on the root's disk.
set -u
kver=$(uname -r)
dir=/var/lib/initoverlayfs-dogfood
mkdir -p "$dir"
stage=$(cat "$dir/stage" 2>/dev/null || echo 1)
say() { echo "<5>initoverlayfs-dogfood: $*" > /dev/kmsg; }
fail() { say "FAILED: $*"; systemctl --no-block poweroff; exit 1; }
next() { echo "$1" > "$dir/stage"; sync; }
# This boot's kernel log (log_buf_len on the command line keeps all of it).
# (grep reads it all: with -q, dmesg would complain of the closed pipe.)
has() { if dmesg | grep -F "$1" > /dev/null; then echo yes; else echo no; fi; }
storage_init=$(has 'storage-init: ')
multi_user=$(systemctl is-active multi-user.target)
# /boot as `path:KiB` words: what install, uninstall and the purge change.
boot_files() {
    (cd /boot && find . -type f | sed 's|^\./||' | sort | while read -r f; do
        printf '%s:%s ' "$f" $(( $(stat -c %s "$f") / 1024 ))
    done)
}
hooks() {
    ls /etc/kernel/postinst.d/zz-initoverlayfs /etc/kernel/postrm.d/zz-initoverlayfs \
        /etc/initramfs/post-update.d/initoverlayfs 2>/dev/null | wc -l
}
# systemd-bless-boot runs once boot-complete.target is reached, not necessarily before us.
wait_for_blessing() {
    for _ in $(seq 60); do
        [ "$(systemctl is-active systemd-bless-boot.service)" = active ] && break
        sleep 1
    done
}
# Runs "$@", leaving its exit status in $rc and its duration in $ms.
timed() {
    start=$(date +%s%N)
    "$@"
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
}

"#
    };
}

/// The guest's driver, one stage per boot. The install and undo commands are the README's, verbatim (without
/// `sudo`: the unit runs as root); a test checks the README still says so.
pub const GUEST_SCRIPT: &str = concat!(
    guest_prelude!(),
    r#"case "$stage" in
1)
    say "boot 1 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 1 went through storage-init"
    say "boot 1 /boot before: $(boot_files)"
    timed initoverlayfs-builder install --kver $(uname -r)
    [ "$rc" = 0 ] || fail "boot 1: install exited $rc"
    say "boot 1 installed exit=$rc in $ms ms hooks=$(hooks)"
    say "boot 1 /boot after: $(boot_files)"
    next 2
    systemctl --no-block reboot
    ;;
2)
    image=$(has "storage-init: mounted /boot/initoverlayfs-$kver.img (erofs")
    overlay=$(has 'storage-init: mounted overlay on /sysroot')
    say "boot 2 storage-init=$storage_init image=$image overlay=$overlay multi-user=$multi_user"
    [ "$storage_init$image$overlay" = yesyesyes ] || fail "boot 2 did not go through storage-init"
    # A kernel update's path: the kernel's postinst again. dracut's hook overwrites
    # initrd.img-<kver> with a fresh classic initramfs, then ours (it sorts after dracut's)
    # converts it: a mini initramfs is in place again and the fallback is the fresh one.
    classic=/boot/initrd.img-$kver.classic
    before=$(stat -c %Y "$classic")
    sleep 2 # vfat keeps times to 2 s
    timed env DEBIAN_FRONTEND=noninteractive dpkg-reconfigure "linux-image-$kver"
    mini=no
    [ "$(stat -c %s "/boot/initrd.img-$kver")" -lt "$(stat -c %s "$classic")" ] && mini=yes
    renewed=no
    [ "$(stat -c %Y "$classic")" -gt "$before" ] && renewed=yes
    say "boot 2 kernel postinst again exit=$rc in $ms ms mini=$mini classic-renewed=$renewed"
    timed initoverlayfs-builder uninstall
    [ "$rc" = 0 ] || fail "boot 2: uninstall exited $rc"
    say "boot 2 uninstalled exit=$rc in $ms ms hooks=$(hooks)"
    say "boot 2 /boot after: $(boot_files)"
    next 3
    systemctl --no-block reboot
    ;;
3)
    say "boot 3 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 3 went through storage-init"
    # Installed again, so that the removal goes through the hooks install puts in place.
    timed initoverlayfs-builder install --kver $(uname -r)
    [ "$rc" = 0 ] || fail "boot 3: install exited $rc"
    say "boot 3 installed again exit=$rc in $ms ms hooks=$(hooks)"
    # The running kernel: linux-base's prerm check lets it go without a question only
    # non-interactively.
    timed env DEBIAN_FRONTEND=noninteractive apt-get purge -y "linux-image-$kver"
    left=
    for f in "initoverlayfs-$kver.img" "initrd.img-$kver.classic" "initrd.img-$kver" \
        "vmlinuz-$kver" "config-$kver" "System.map-$kver" \
        "loader/entries/debian-$kver~initoverlayfs-classic.conf"; do
        [ -e "/boot/$f" ] && left="$left,$f"
    done
    left=${left#,}
    say "boot 3 purged linux-image-$kver exit=$rc in $ms ms left=${left:-none}"
    say "boot 3 /boot after: $(boot_files)"
    next done
    systemctl --no-block poweroff
    ;;
*)
    say "stage $stage: nothing left to do"
    ;;
esac
"#
);

/// The fallback cell's driver (`guest_driver = "fallback"`), one stage per boot:
///
/// 1. classic: the README's install (under systemd-boot: the entry counted, the fallback entry
///    beside it, `emergency fallback` in the mini initramfs), reboot;
/// 2. through storage-init: wait for systemd-bless-boot to mark the entry good, then break
///    the image (its superblock zeroed, as a bad write would), reboot. storage-init's FATAL
///    line and its one-shot reboot into the fallback entry follow;
/// 3. classic through the fallback entry: `status` says which entry and why; use the entry's
///    tries up as three failed boots would (`+0-3`), reboot;
/// 4. classic again, now by systemd-boot's own order (no storage-init attempt): install again,
///    which rebuilds the image and re-arms the entry, reboot;
/// 5. through storage-init again, no failure recorded: power off.
pub const FALLBACK_SCRIPT: &str = concat!(
    guest_prelude!(),
    r#"entries() { (cd /boot/loader/entries && ls | tr '\n' ' '); }
status() { initoverlayfs-builder status | while IFS= read -r line; do say "$1 status: $line"; done; }
entry=/boot/loader/entries/debian-$kver
case "$stage" in
1)
    say "boot 1 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 1 went through storage-init"
    timed initoverlayfs-builder install --kver $(uname -r)
    [ "$rc" = 0 ] || fail "boot 1: install exited $rc"
    say "boot 1 installed exit=$rc entries: $(entries)"
    next 2
    systemctl --no-block reboot
    ;;
2)
    say "boot 2 storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = yes ] || fail "boot 2 did not go through storage-init"
    wait_for_blessing
    say "boot 2 bless-boot=$(systemctl is-active systemd-bless-boot.service) entries: $(entries)"
    status "boot 2"
    dd if=/dev/zero of="/boot/initoverlayfs-$kver.img" bs=4096 count=1 conv=notrunc,fsync 2>/dev/null
    say "boot 2 broke the image"
    next 3
    systemctl --no-block reboot
    ;;
3)
    say "boot 3 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 3 went through storage-init"
    status "boot 3"
    mv "$entry.conf" "$entry+0-3.conf" && sync
    say "boot 3 used up the tries entries: $(entries)"
    next 4
    systemctl --no-block reboot
    ;;
4)
    say "boot 4 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 4 went through storage-init"
    timed initoverlayfs-builder install --kver $(uname -r)
    [ "$rc" = 0 ] || fail "boot 4: install exited $rc"
    say "boot 4 installed again exit=$rc entries: $(entries)"
    status "boot 4"
    next 5
    systemctl --no-block reboot
    ;;
5)
    say "boot 5 storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = yes ] || fail "boot 5 did not go through storage-init"
    wait_for_blessing
    status "boot 5"
    next done
    systemctl --no-block poweroff
    ;;
*)
    say "stage $stage: nothing left to do"
    ;;
esac
"#
);

/// Where the package cell's .debs are put in the root: the package and a second kernel's.
pub const GUEST_DEBS: &str = "var/cache/initoverlayfs-dogfood";
/// The file in [`GUEST_DEBS`] naming the second kernel's release.
pub const SECOND_KERNEL_FILE: &str = "second-kernel";
/// The second kernel the package cell installs, per architecture: the other Debian 12 kernel.
pub const SECOND_KERNEL: [(&str, &str); 2] = [
    ("x86_64", "debian12-6.1-amd64"),
    ("aarch64", "debian12-6.1-arm64"),
];

/// The package cell's driver (`guest_driver = "package"`), one stage per boot:
///
/// 1. classic: /boot and /etc recorded; the package installed with apt (its postinst converts
///    every kernel), reboot;
/// 2. through storage-init: upstream's `initoverlayfs-install -f --kver`; a second kernel
///    package installed while every install fails (storage-init moved away): the kernel
///    installs, keeps its classic initramfs, and the hook says why; the cause mended, the
///    second kernel converted and then purged through the package's hooks; the package
///    upgraded (a later version: every kernel converted again), removed (every kernel
///    classic, the hooks idle), purged, and /boot and /etc compared with boot 1's record,
///    file by file; reboot;
/// 3. classic, the program gone: power off.
pub const PACKAGE_SCRIPT: &str = concat!(
    guest_prelude!(),
    r#"debs=/var/cache/initoverlayfs-dogfood
second=$(cat "$debs/second-kernel")
storage_init_binary=/usr/lib/initoverlayfs/storage-init
# /boot and /etc, every entry with its type, mode and link target, and every file's sha256.
# Left out: systemd-boot's random seed on the ESP, which it renews at every boot.
state() {
    find /boot /etc -xdev -printf '%y %m %p %l
' | grep -v '^f [0-9]* /boot/loader/random-seed ' | sort
    find /boot /etc -xdev -type f ! -path /boot/loader/random-seed -print0 | sort -z | xargs -0 sha256sum
}
# yes when kernel $1 boots through initoverlayfs: its initrd is a mini initramfs, smaller than
# the classic one kept beside it, and its image is there.
converted() {
    if [ -f "/boot/initrd.img-$1.classic" ] && [ -f "/boot/initoverlayfs-$1.img" ]         && [ "$(stat -c %s "/boot/initrd.img-$1")" -lt "$(stat -c %s "/boot/initrd.img-$1.classic")" ]; then
        echo yes
    else
        echo no
    fi
}
# The package's program, if it is there (by its file: the shell remembers where a command it
# ran was, after the file is gone).
program() { ls /usr/sbin/initoverlayfs 2>/dev/null || echo none; }
# Runs apt-get "$@" non-interactively, its output to the console and to $dir/apt.log.
apt_get() {
    { DEBIAN_FRONTEND=noninteractive apt-get -y --no-install-recommends "$@"; echo $? > "$dir/apt.rc"; } 2>&1 | tee "$dir/apt.log"
    return "$(cat "$dir/apt.rc")"
}
case "$stage" in
1)
    say "boot 1 classic storage-init=$storage_init multi-user=$multi_user"
    [ "$storage_init" = no ] || fail "boot 1 went through storage-init"
    state > "$dir/before"
    timed apt_get install "$debs"/package/initoverlayfs_*.deb
    [ "$rc" = 0 ] || fail "boot 1: apt-get install of the package exited $rc"
    say "boot 1 package installed exit=$rc in $ms ms hooks=$(hooks) converted=$(converted "$kver")"
    next 2
    systemctl --no-block reboot
    ;;
2)
    image=$(has "storage-init: mounted /boot/initoverlayfs-$kver.img (erofs")
    overlay=$(has 'storage-init: mounted overlay on /sysroot')
    say "boot 2 storage-init=$storage_init image=$image overlay=$overlay multi-user=$multi_user"
    [ "$storage_init$image$overlay" = yesyesyes ] || fail "boot 2 did not go through storage-init"
    wait_for_blessing
    timed initoverlayfs-install -f --kver "$kver"
    say "boot 2 initoverlayfs-install exit=$rc converted=$(converted "$kver")"
    # Every install fails while storage-init is away: the kernel package must still install.
    mv "$storage_init_binary" "$storage_init_binary.away"
    timed apt_get install "$debs"/kernel/linux-image-*.deb
    said=no
    grep -F "initoverlayfs: could not make the initoverlayfs boot of $second (the error is above)" "$dir/apt.log" > /dev/null && said=yes
    classic=no
    [ -f "/boot/initrd.img-$second" ] && [ ! -e "/boot/initrd.img-$second.classic" ]         && [ ! -e "/boot/initoverlayfs-$second.img" ] && classic=yes
    say "boot 2 second kernel $second installed with every install failing exit=$rc said=$said classic=$classic"
    mv "$storage_init_binary.away" "$storage_init_binary"
    timed initoverlayfs install --kver "$second"
    say "boot 2 second kernel converted exit=$rc converted=$(converted "$second")"
    timed apt_get purge "linux-image-$second"
    left=
    for f in "initoverlayfs-$second.img" "initrd.img-$second.classic" "initrd.img-$second"         "vmlinuz-$second" "config-$second" "System.map-$second"; do
        [ -e "/boot/$f" ] && left="$left,$f"
    done
    left=${left#,}
    say "boot 2 second kernel purged exit=$rc left=${left:-none}"
    # An upgrade: the postinst converts every kernel again, with the new storage-init.
    timed apt_get install "$debs"/upgrade/initoverlayfs_*.deb
    again=no
    grep -F "installed initoverlayfs for $kver;" "$dir/apt.log" > /dev/null && again=yes
    say "boot 2 package upgraded exit=$rc version=$(dpkg-query -W -f '${Version}' initoverlayfs) converted-again=$again converted=$(converted "$kver")"
    # Removed: every kernel classic again; the hooks (conffiles) stay, idle without the program.
    timed apt_get remove initoverlayfs
    say "boot 2 package removed exit=$rc converted=$(converted "$kver") hooks=$(hooks) program=$(program)"
    timed apt_get purge initoverlayfs
    purged=$rc
    state > "$dir/after"
    diff "$dir/before" "$dir/after" | grep '^[<>]' > "$dir/differences"
    head -n 40 "$dir/differences" | while IFS= read -r line; do say "boot 2 difference: $line"; done
    say "boot 2 package purged exit=$purged converted=$(converted "$kver") differences=$(wc -l < "$dir/differences")"
    next 3
    systemctl --no-block reboot
    ;;
3)
    say "boot 3 classic storage-init=$storage_init multi-user=$multi_user program=$(program)"
    [ "$storage_init" = no ] || fail "boot 3 went through storage-init"
    next done
    systemctl --no-block poweroff
    ;;
*)
    say "stage $stage: nothing left to do"
    ;;
esac
"#
);

/// A Debian root with the fixture kernel installed as a package, its /boot moved out.
#[derive(Debug, Clone)]
pub struct DogfoodRoot {
    /// The root directory (its /boot empty: the ESP is mounted there). Shared and cached: link
    /// or copy it, never write into it.
    pub root: PathBuf,
    /// What the kernel package and dracut's hook put in /boot: `vmlinuz-`, `config-`,
    /// `System.map-` and `initrd.img-<kver>`. It goes onto the ESP.
    pub boot: PathBuf,
    /// `dpkg-query -W` of the root, the kernel package included.
    pub packages: PathBuf,
}

/// The dogfood root for `kernel` and `spec`'s disk, built or found in the cache:
/// `debian-dogfood/<arch>-<key>/done/{root/, boot/, packages.txt}`.
pub fn dogfood_root(sh: &Shell, kernel: &Kernel, spec: &RootSpec) -> Result<DogfoodRoot> {
    let tree = debian_tree(sh, kernel)?;
    let key = dogfood_key(&root_key(&tree.key, spec));
    let entry =
        cache_dir()
            .join("debian-dogfood")
            .join(format!("{}-{}", tree.arch.debian(), &key[..16]));
    let done = fill_once(&entry, |work| build(sh, &tree.root, kernel, spec, work))?;
    Ok(DogfoodRoot {
        root: done.join("root"),
        boot: done.join("boot"),
        packages: done.join("packages.txt"),
    })
}

fn dogfood_key(root_key: &str) -> String {
    hash(&[DOGFOOD_RECIPE, root_key])
}

/// A full copy of the tree (dpkg appends to logs in place: a hard-linked copy would write
/// through into the shared tree), the kernel package installed in it, /boot moved out.
fn build(sh: &Shell, tree: &Path, kernel: &Kernel, spec: &RootSpec, work: &Path) -> Result<()> {
    let root = work.join("root");
    cmd!(sh, "cp -a --reflink=auto {tree} {root}")
        .quiet()
        .run()
        .with_context(|| format!("copying {} to {}", tree.display(), root.display()))?;
    let debs = root.join("tmp/initoverlayfs-debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let kernel_deb = fetch_kernel_deb(sh, kernel, &debs)?;
    // The kernel package pre-depends on linux-base (its update-symlinks and removal check),
    // which the tree does not have: the mirror's current version, recorded in packages.txt.
    {
        let _cd = sh.push_dir(&debs);
        cmd!(
            sh,
            "apt-get download -q -o APT::Sandbox::User=root linux-base"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("apt-get download linux-base")?;
    }
    let linux_base = single_deb_named(&debs, "linux-base_")?;
    // systemd-boot's OS side (bootctl, systemd-bless-boot and its generator), as a machine
    // booting systemd-boot has it: the version of the tree's systemd, which it depends on
    // exactly. Its hooks stay idle (`bootctl is-installed` finds no EFI/systemd/ on the ESP).
    let version = "${Version}";
    let systemd = cmd!(sh, "chroot {root} dpkg-query -W -f {version} systemd")
        .quiet()
        .read()
        .context("reading the tree's systemd version")?;
    {
        let _cd = sh.push_dir(&debs);
        for package in ["systemd-boot", "systemd-boot-efi"] {
            let wanted = format!("{package}={systemd}");
            cmd!(
                sh,
                "apt-get download -q -o APT::Sandbox::User=root {wanted}"
            )
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("apt-get download {wanted}"))?;
        }
    }
    let systemd_boot = [
        single_deb_named(&debs, "systemd-boot-efi_")?,
        single_deb_named(&debs, "systemd-boot_")?,
    ];
    eprintln!(
        "dogfood: installing {} in a copy of the Debian tree (its postinst runs dracut)",
        kernel.fetched.package
    );
    let started = std::time::Instant::now();
    for deb in [&linux_base, &systemd_boot[0], &systemd_boot[1], &kernel_deb] {
        let inside = Path::new("/").join(deb.strip_prefix(&root)?);
        in_chroot(
            sh,
            &root,
            &format!(
                "DEBIAN_FRONTEND=noninteractive dpkg -i {}",
                inside.display()
            ),
        )
        .with_context(|| format!("dpkg -i {}", deb.display()))?;
    }
    std::fs::remove_dir_all(&debs).with_context(|| format!("removing {}", debs.display()))?;
    eprintln!(
        "dogfood: kernel package installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let release = &kernel.release;
    let initrd = root
        .join("boot")
        .join(crate::debian_tree::initramfs_name(release));
    if !initrd.is_file() {
        bail!(
            "the kernel's postinst left no {} (did dracut's kernel hook run?)",
            initrd.display()
        );
    }
    // The real root's /boot is the ESP, mounted over it: its files go onto the ESP.
    let boot = work.join("boot");
    std::fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    for entry in std::fs::read_dir(root.join("boot"))? {
        let entry = entry?;
        std::fs::rename(entry.path(), boot.join(entry.file_name()))
            .with_context(|| format!("moving {} out of the root", entry.path().display()))?;
    }
    crate::debian_tree::add_real_root_files(&root, spec)?;
    let format = "${binary:Package}\t${Version}\t${Architecture}\n";
    let packages = cmd!(sh, "chroot {root} dpkg-query -W -f {format}")
        .quiet()
        .read()
        .context("listing the dogfood root's packages")?;
    std::fs::write(work.join("packages.txt"), packages + "\n")?;
    Ok(())
}

/// Puts the guest's driver into a cell's copy of the dogfood root (not into the cache: editing
/// the script costs no rebuild): [`GUEST_SCRIPT`] and its unit, enabled. Every file is written
/// fresh, never through a hard link into the cache.
pub fn add_guest_driver(root: &Path, driver: GuestDriver) -> Result<()> {
    let script = root.join(SCRIPT_PATH);
    replace_file(
        &script,
        match driver {
            GuestDriver::Install => GUEST_SCRIPT,
            GuestDriver::Fallback => FALLBACK_SCRIPT,
            GuestDriver::Package => PACKAGE_SCRIPT,
        },
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(|| format!("making {} executable", script.display()))?;
    let units = root.join("etc/systemd/system");
    replace_file(&units.join(UNIT_NAME), UNIT)?;
    let link = units.join("multi-user.target.wants").join(UNIT_NAME);
    let _ = std::fs::remove_file(&link); // absent in the root; a fresh link either way
    std::os::unix::fs::symlink(format!("../{UNIT_NAME}"), &link)
        .with_context(|| format!("enabling {}", link.display()))?;
    Ok(())
}

/// The package cell's second kernel for `arch` (a kernel fixture's id, [`SECOND_KERNEL`]): its
/// own .deb, fetched into `dir`, and its release.
pub fn second_kernel_deb(
    sh: &Shell,
    project: &Path,
    arch: &str,
    dir: &Path,
) -> Result<(PathBuf, String)> {
    let id = SECOND_KERNEL
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, id)| *id)
        .with_context(|| format!("the package cell has no second kernel for {arch}"))?;
    let kernel = crate::fixtures::fetch_kernel_by_id(sh, project, id)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((fetch_kernel_deb(sh, &kernel, dir)?, kernel.release))
}

/// The kernel fixture's own .deb, downloaded again (the fixture cache keeps only its unpacked
/// tree) and checked against the sha256 the fixture was unpacked from.
fn fetch_kernel_deb(sh: &Shell, kernel: &Kernel, dir: &Path) -> Result<PathBuf> {
    let fetched = &kernel.fetched;
    crate::fixtures::apt_download(sh, dir, &fetched.package, &fetched.version)?;
    let name = fetched
        .package
        .split(':')
        .next()
        .unwrap_or(&fetched.package);
    let deb = single_deb_named(dir, &format!("{name}_"))?;
    let sha256 = crate::fixtures::sha256_file(&deb)?;
    if sha256 != fetched.sha256 {
        bail!(
            "{}: sha256 {sha256}, but the kernel fixture was unpacked from {}: refusing to install it",
            deb.display(),
            fetched.sha256
        );
    }
    Ok(deb)
}

fn single_deb_named(dir: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".deb")
        })
        .with_context(|| {
            format!(
                "apt-get download left no {prefix}*.deb in {}",
                dir.display()
            )
        })
}

/// The builder as the README builds it (`cargo build --release -p builder`, with this machine's
/// paths remapped as in every shipped binary, [`crate::static_build::shipped_rustflags`]): a
/// binary linked against the host's glibc, which runs in the guest's Debian 12 root as long as
/// the host's glibc is not newer (the project's hosts are Debian 12 too).
pub fn builder_binary(sh: &Shell, project: &Path) -> Result<PathBuf> {
    let _dir = sh.push_dir(project);
    let cargo = crate::static_build::cargo();
    cmd!(sh, "{cargo} build --quiet --release -p builder")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", crate::static_build::shipped_rustflags(""))
        .run()
        .context("building the builder (cargo build --release -p builder)")?;
    let target = crate::static_build::target_dir(project);
    let binary = target.join("release/builder");
    if !binary.is_file() {
        bail!("cargo built no {}", binary.display());
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest runs the README's install and undo lines word for word (less `sudo`): if the
    /// README changes what it tells a user, the dogfood cell must follow.
    #[test]
    fn the_guest_runs_the_readme_commands() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let command = |verb: &str| -> String {
            let line = readme
                .lines()
                .find(|l| l.starts_with(&format!("sudo initoverlayfs-builder {verb}")))
                .unwrap_or_else(|| {
                    panic!("README has no `sudo initoverlayfs-builder {verb}` line")
                });
            let command = line.split('#').next().unwrap().trim();
            command.strip_prefix("sudo ").unwrap().to_owned()
        };
        let install = command("install");
        assert_eq!(install, "initoverlayfs-builder install --kver $(uname -r)");
        assert!(GUEST_SCRIPT.contains(&format!("timed {install}\n")));
        let uninstall = command("uninstall");
        assert_eq!(uninstall, "initoverlayfs-builder uninstall");
        assert!(GUEST_SCRIPT.contains(&format!("timed {uninstall}\n")));
    }

    #[test]
    fn the_guest_paths_are_the_builders_defaults() {
        assert_eq!(
            format!("/{GUEST_BUILDER}"),
            builder::install::DEFAULT_BUILDER_PATH
        );
        assert_eq!(
            format!("/{GUEST_STORAGE_INIT}"),
            builder::install::DEFAULT_STORAGE_INIT
        );
        assert!(UNIT.contains(&format!("ExecStart=/{SCRIPT_PATH}\n")));
        assert!(UNIT.contains(&format!(
            "After=multi-user.target {}\n",
            crate::debian_tree::REPORT_UNIT_NAME
        )));
    }

    #[test]
    fn the_key_follows_the_root() {
        assert_eq!(dogfood_key("a"), dogfood_key("a"));
        assert_ne!(dogfood_key("a"), dogfood_key("b"));
        // Never the key of the real root it starts from.
        assert_ne!(dogfood_key("a"), "a");
    }
}
