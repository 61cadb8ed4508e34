//! `builder initramfs` and `builder config` decide the boot filesystem's driver: from
//! `--bootfstype`, else from the device `--bootfs` names when this machine has it, else every
//! filesystem storage-init probes. What ships is checked in the archive, and the one stderr
//! line must name the choice.

mod common;

use common::builder;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KVER: &str = "6.12.0-test";
/// A UUID no machine running these tests has.
const ELSEWHERE: &str = "UUID=0b5e55ed-0000-4000-8000-00000000f00d";

/// A kernel tree with the drivers of every filesystem storage-init probes as modules, and the
/// storage-init stand-in; returns the stand-in's path.
fn filesystems_tree(root: &Path) -> PathBuf {
    let dir = root.join("lib/modules").join(KVER);
    let mut dep = String::new();
    for (module, deps) in [
        ("jbd2", ""),
        ("ext4", " kernel/jbd2.ko"),
        ("fat", ""),
        ("vfat", " kernel/fat.ko"),
        ("nls_cp437", ""),
        ("nls_ascii", ""),
        ("xfs", ""),
        ("btrfs", ""),
        ("erofs", ""),
        ("overlay", ""),
        ("virtio_blk", ""),
    ] {
        let path = dir.join(format!("kernel/{module}.ko"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("\x7fELF {module}")).unwrap();
        dep.push_str(&format!("kernel/{module}.ko:{deps}\n"));
    }
    fs::write(dir.join("modules.dep"), dep).unwrap();
    fs::write(
        dir.join("modules.alias"),
        "alias virtio:d00000002v* virtio_blk\nalias fs-ext4 ext4\n",
    )
    .unwrap();
    for name in ["modules.softdep", "modules.builtin"] {
        fs::write(dir.join(name), "").unwrap();
    }
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::write(
        root.join(format!("boot/config-{KVER}")),
        "CONFIG_EXT4_FS=m\nCONFIG_VFAT_FS=m\nCONFIG_XFS_FS=m\nCONFIG_BTRFS_FS=m\nCONFIG_EROFS_FS=m\n\
         CONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_FAT_DEFAULT_CODEPAGE=437\n\
         CONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n",
    )
    .unwrap();
    let storage_init = root.join("storage-init");
    fs::write(&storage_init, b"\x7fELF storage-init stand-in").unwrap();
    storage_init
}

/// `builder initramfs` for the tree at `root` (kernel `kver`), uncompressed, with `extra`.
fn initramfs(
    root: &Path,
    kver: &str,
    storage_init: &Path,
    output: &Path,
    extra: &[&str],
) -> Output {
    builder()
        .arg("initramfs")
        .arg("--storage-init")
        .arg(storage_init)
        .arg("--kernel-root")
        .arg(root)
        .args([
            "--kver",
            kver,
            "--preset",
            "virtio",
            "--compression",
            "none",
        ])
        .args(extra)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap()
}

/// Stderr of a run that must have succeeded.
fn stderr_of(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The module files in a mini initramfs, by file name (`ext4.ko`).
fn shipped_modules(initramfs: &Path) -> Vec<String> {
    let read = builder::initramfs::read(&fs::read(initramfs).unwrap()).unwrap();
    let mut names: Vec<String> = read
        .final_entries()
        .iter()
        .filter(|e| e.name.ends_with(".ko"))
        .map(|e| e.name.rsplit('/').next().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The config a mini initramfs carries.
fn mini_config(initramfs: &Path) -> storage_init::config::Config {
    let read = builder::initramfs::read(&fs::read(initramfs).unwrap()).unwrap();
    let entry = read
        .final_entries()
        .into_iter()
        .find(|e| e.name == "etc/initoverlayfs.conf")
        .expect("a mini initramfs carries the config")
        .clone();
    storage_init::config::parse_config(std::str::from_utf8(&entry.data).unwrap())
        .unwrap()
        .0
}

/// Unresolvable here and no --bootfstype: every probed filesystem's drivers ship, the config
/// leaves the type to storage-init's probe, the line says so with its cost, and two builds
/// are the same bytes.
#[test]
fn an_unknown_boot_filesystem_ships_every_probed_driver() {
    let work = tempfile::tempdir().unwrap();
    let storage_init = filesystems_tree(work.path());
    let output = work.path().join("mini.cpio");
    let run = initramfs(
        work.path(),
        KVER,
        &storage_init,
        &output,
        &["--bootfs", ELSEWHERE],
    );
    let stderr = stderr_of(&run);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "builder: boot filesystem not known (--bootfs {} is not on this machine (no /dev/disk/by-uuid/",
            ELSEWHERE
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "shipping the drivers of every filesystem storage-init probes that this kernel has (ext4, vfat, xfs, btrfs, erofs): +7 modules, +1 KiB before compression; pass --bootfstype to ship one"
        ),
        "{stderr}"
    );
    assert_eq!(
        shipped_modules(&output),
        [
            "btrfs.ko",
            "erofs.ko",
            "ext4.ko",
            "fat.ko",
            "jbd2.ko",
            "nls_cp437.ko",
            "overlay.ko",
            "vfat.ko",
            "virtio_blk.ko",
            "xfs.ko"
        ]
    );
    assert_eq!(mini_config(&output).bootfstype, None);
    // Optional, loaded at start: one that fails matters only if /boot is of its type.
    let stdout = String::from_utf8(run.stdout).unwrap();
    for module in ["ext4", "vfat", "xfs", "btrfs"] {
        assert!(
            stdout.contains(&format!("try {module} /lib/modules/")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("load erofs /lib/modules/"), "{stdout}");

    let again = work.path().join("again.cpio");
    stderr_of(&initramfs(
        work.path(),
        KVER,
        &storage_init,
        &again,
        &["--bootfs", ELSEWHERE],
    ));
    assert!(fs::read(&output).unwrap() == fs::read(&again).unwrap());
}

#[test]
fn a_given_type_ships_its_driver_alone() {
    let work = tempfile::tempdir().unwrap();
    let storage_init = filesystems_tree(work.path());
    let output = work.path().join("mini.cpio");
    let run = initramfs(
        work.path(),
        KVER,
        &storage_init,
        &output,
        &["--bootfs", ELSEWHERE, "--bootfstype", "xfs"],
    );
    assert_eq!(
        stderr_of(&run),
        "builder: boot filesystem xfs (from --bootfstype)\n"
    );
    assert_eq!(
        shipped_modules(&output),
        ["erofs.ko", "overlay.ko", "virtio_blk.ko", "xfs.ko"]
    );
    assert_eq!(mini_config(&output).bootfstype.as_deref(), Some("xfs"));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(stdout.contains("load xfs /lib/modules/"), "{stdout}");
}

/// `config` decides the same way and says what storage-init does with an unknown type.
#[test]
fn config_says_the_choice() {
    let unknown = builder()
        .args(["config", "--bootfs", ELSEWHERE])
        .output()
        .unwrap();
    let stderr = stderr_of(&unknown);
    assert!(
        stderr.starts_with("builder: boot filesystem not known (")
            && stderr.ends_with(": storage-init takes the type from the superblock it finds\n"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&unknown.stdout).contains("bootfstype"));
    let given = builder()
        .args(["config", "--bootfs", ELSEWHERE, "--bootfstype", "vfat"])
        .output()
        .unwrap();
    assert_eq!(
        stderr_of(&given),
        "builder: boot filesystem vfat (from --bootfstype)\n"
    );
    assert!(String::from_utf8_lossy(&given.stdout).contains("bootfstype vfat\n"));
}

/// A device this machine has: an ext4 image on a loop device, named by its /dev path. Its
/// superblock decides: ext4's driver alone ships, and the config records the type. Needs root
/// for the loop device.
#[test]
fn a_device_on_this_machine_decides() {
    if !common::have_root("attaching a loop device") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let storage_init = filesystems_tree(work.path());
    let image = work.path().join("boot.ext4");
    fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    if !common::run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image), "") {
        return;
    }
    let device = storage_init::loop_device::attach(&image).unwrap();
    let bootfs = device.path.to_str().unwrap().to_owned();
    let output = work.path().join("mini.cpio");
    let run = initramfs(
        work.path(),
        KVER,
        &storage_init,
        &output,
        &["--bootfs", &bootfs],
    );
    drop(device);
    assert_eq!(
        stderr_of(&run),
        format!(
            "builder: boot filesystem ext4 (from --bootfs {bootfs}, read on this machine: {bootfs})\n"
        )
    );
    assert_eq!(
        shipped_modules(&output),
        [
            "erofs.ko",
            "ext4.ko",
            "jbd2.ko",
            "overlay.ko",
            "virtio_blk.ko"
        ]
    );
    assert_eq!(mini_config(&output).bootfstype.as_deref(), Some("ext4"));
}

/// Debian's 6.12 kernel, where ext4, vfat, xfs and btrfs are modules: without a type ext4.ko,
/// xfs.ko and btrfs.ko all ship; with `--bootfstype ext4` only ext4's. Prints what the
/// unknown type costs (docs/builder.md quotes it).
#[test]
fn real_debian_kernel_without_a_type() {
    let Some(value) = common::provided("BUILDER_REAL_KERNEL_TREE") else {
        return;
    };
    let (root, kver) = value
        .split_once(':')
        .unwrap_or_else(|| panic!("BUILDER_REAL_KERNEL_TREE={value}: expected <root>:<kver>"));
    let work = tempfile::tempdir().unwrap();
    let storage_init = work.path().join("storage-init");
    fs::write(&storage_init, b"\x7fELF storage-init stand-in").unwrap();
    let build = |name: &str, extra: &[&str]| {
        let output = work.path().join(name);
        let run = builder()
            .arg("initramfs")
            .arg("--storage-init")
            .arg(&storage_init)
            .args(["--kernel-root", root, "--kver", kver, "--preset", "virtio"])
            .args(["--bootfs", ELSEWHERE])
            .args(extra)
            .arg("-o")
            .arg(&output)
            .output()
            .unwrap();
        let stderr = stderr_of(&run);
        let stdout = String::from_utf8(run.stdout).unwrap();
        let at_start = stdout
            .lines()
            // `else` lines are loaded only where the candidate before them fails.
            .filter(|l| l.starts_with("load ") || l.starts_with("try "))
            .count();
        let summary = stdout.lines().last().unwrap().to_owned();
        (output, stderr, at_start, summary)
    };
    let (all, stderr, all_at_start, all_summary) = build("all.img", &[]);
    assert!(stderr.contains("not known"), "{stderr}");
    assert!(
        stderr.contains("(ext4, vfat, xfs, btrfs, erofs)"),
        "{stderr}"
    );
    let shipped = shipped_modules(&all);
    for module in ["ext4.ko", "vfat.ko", "xfs.ko", "btrfs.ko", "erofs.ko"] {
        assert!(shipped.iter().any(|m| m == module), "{module}: {shipped:?}");
    }
    let (one, stderr, one_at_start, one_summary) = build("ext4.img", &["--bootfstype", "ext4"]);
    assert_eq!(
        stderr,
        "builder: boot filesystem ext4 (from --bootfstype)\n"
    );
    let shipped_one = shipped_modules(&one);
    assert!(shipped_one.iter().any(|m| m == "ext4.ko"));
    for module in ["xfs.ko", "btrfs.ko", "vfat.ko"] {
        assert!(!shipped_one.iter().any(|m| m == module), "{module}");
    }
    println!("--bootfstype ext4: {one_summary}; {one_at_start} modules loaded at start");
    println!("no type known:     {all_summary}; {all_at_start} modules loaded at start");
    println!(
        "{} more modules shipped, {} more loaded at start, {} more bytes on /boot",
        shipped.len() - shipped_one.len(),
        all_at_start - one_at_start,
        fs::metadata(&all).unwrap().len() - fs::metadata(&one).unwrap().len()
    );
}
