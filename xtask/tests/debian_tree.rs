//! The real chain's Debian tree for the first amd64 fixture kernel, built with mmdebstrap (slow
//! the first time; `cargo xtask test` has already built it for builder's dracut round trip, so
//! here it comes from the cache), and what is made from it: the second-stage dracut initramfs and
//! a real root with its fstab.

use std::path::Path;

use xshell::Shell;
use xtask::debian_tree::{self, RootSpec};
use xtask::fixtures;
use xtask::vm_test::project_root;

fn ready() -> bool {
    if !rustix::process::geteuid().is_root() {
        xtask::provision::skip_or_fail("mmdebstrap builds the tree as root (run as root)");
        return false;
    }
    if xtask::provision::find_in_path("mmdebstrap").is_none() {
        xtask::provision::skip_or_fail("no mmdebstrap (cargo xtask provision installs it)");
        return false;
    }
    true
}

#[test]
fn the_amd64_tree_makes_a_dracut_initramfs_and_a_real_root() {
    check_tree("x86_64");
}

/// Not in `cargo xtask test`: the arm64 tree's package scripts and dracut run under qemu-user,
/// which takes minutes (see docs/fixtures.md). Run it with `cargo test -p xtask --test debian_tree --
/// --ignored`.
#[test]
#[ignore = "builds the arm64 tree under qemu-user: minutes the first time"]
fn the_arm64_tree_makes_a_dracut_initramfs_and_a_real_root() {
    check_tree("aarch64");
}

/// Builds (or finds) the tree of the first Debian kernel of `arch` and checks what comes of it.
fn check_tree(arch: &str) {
    if !ready() {
        return;
    }
    let sh = Shell::new().unwrap();
    let pin = fixtures::read_kernels(&project_root())
        .unwrap()
        .kernel
        .into_iter()
        .find(|k| k.arch == arch && k.distro.starts_with("debian"))
        .unwrap_or_else(|| panic!("no {arch} Debian kernel in fixtures/kernels.toml"));
    let kernel = fixtures::fetch_kernel(&sh, &pin).unwrap();
    let started = std::time::Instant::now();
    let tree = debian_tree::debian_tree(&sh, &kernel).unwrap();
    println!(
        "tree {} in {:.1} s",
        tree.root.display(),
        started.elapsed().as_secs_f64()
    );

    // The second stage: a dracut systemd initramfs.
    let bytes = std::fs::read(&tree.initramfs).unwrap();
    let initramfs = builder::initramfs::read(&bytes).unwrap();
    let names: Vec<&str> = initramfs
        .final_entries()
        .into_iter()
        .map(|e| e.name.trim_start_matches('/'))
        .collect();
    // A generic image: it can unlock a LUKS2 root and activate an LVM one.
    for wanted in [
        "usr/lib/systemd/systemd",
        "etc/initrd-release",
        "usr/lib/systemd/systemd-cryptsetup",
        "usr/sbin/lvm",
    ] {
        assert!(
            names.contains(&wanted),
            "no {wanted} in {}",
            tree.initramfs.display()
        );
    }
    assert!(matches!(
        builder::initramfs::flavour(names.iter().copied()),
        builder::initramfs::Flavour::Systemd
    ));
    assert_eq!(
        debian_tree::second_stage_initramfs(&sh, &kernel).unwrap(),
        tree.initramfs
    );

    // The tree: systemd as init, the kernel's modules, nothing left in /boot.
    let root = &tree.root;
    let init = std::fs::read_link(root.join("usr/sbin/init")).unwrap();
    assert!(init.ends_with("lib/systemd/systemd"), "{init:?}");
    assert!(root.join("usr/lib/systemd/systemd").is_file());
    let modules = root.join("usr/lib/modules").join(&kernel.release);
    assert!(
        modules.join("modules.dep").is_file(),
        "{}",
        modules.display()
    );
    assert_eq!(std::fs::read_dir(root.join("boot")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        format!("{}\n", debian_tree::HOSTNAME)
    );
    let packages = std::fs::read_to_string(&tree.packages).unwrap();
    for package in [
        "systemd",
        "systemd-sysv",
        "udev",
        "kmod",
        "dracut",
        "dbus",
        "cryptsetup",
        "lvm2",
        "erofs-utils",
    ] {
        assert!(
            packages
                .lines()
                .any(|l| l.starts_with(&format!("{package}\t"))),
            "{package} missing from {}",
            tree.packages.display()
        );
    }

    // The real root: the tree with this spec's fstab, the tree itself untouched.
    let spec = RootSpec {
        root: "PARTUUID=11223344-5566-4778-899a-abbccddeeff0".into(),
        root_fstype: "ext4".into(),
        boot: "UUID=a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d".into(),
        boot_fstype: "ext4".into(),
    };
    let real = debian_tree::real_root(&sh, &kernel, &spec).unwrap();
    let fstab = std::fs::read_to_string(real.root.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("{}\t/\text4\t", spec.root)),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("{}\t/boot\text4\t", spec.boot)),
        "{fstab}"
    );
    let tree_fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        !tree_fstab.contains(&spec.root),
        "the tree's fstab was written through"
    );
    let show_status = std::fs::read_to_string(
        real.root
            .join("etc/systemd/system.conf.d/initoverlayfs-rs.conf"),
    )
    .unwrap();
    assert!(show_status.contains("ShowStatus=yes"));
    assert!(
        real.root
            .join("usr/lib/modules")
            .join(&kernel.release)
            .is_dir()
    );
    assert_eq!(std::fs::read_to_string(&real.packages).unwrap(), packages);
    assert_owned_by_others(&real.root);
}

/// A real root is not all root's: what `testvm::disk::Partition::keep_owners` exists for.
fn assert_owned_by_others(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let su = std::fs::symlink_metadata(root.join("usr/bin/su")).unwrap();
    assert_ne!(su.mode() & 0o4000, 0, "su lost its setuid bit");
    let shadow = std::fs::symlink_metadata(root.join("etc/shadow")).unwrap();
    assert_ne!(shadow.gid(), 0, "/etc/shadow belongs to group shadow");
}
