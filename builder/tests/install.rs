//! `builder install` / `uninstall` on `--root` trees laid out as Fedora and as Debian: what
//! changes in /boot, the fallback, the hooks (run for real with sh), a failure midway that
//! leaves the old initramfs bootable, a full or read-only /boot, an install stopped dead at every
//! write, fsync and rename, the undo command that restores the tree exactly, and hooks that call
//! the installed program that wrote them.

mod common;

use common::{builder, have_mkfs};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use builder::compress::InitramfsCompression;
use builder::cpio::Archive;
use sha2::{Digest, Sha256};

const KVER: &str = "6.9.0-test";
const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A systemd-flavoured classic initramfs (as dracut makes), gzip-compressed.
fn classic_initramfs() -> Vec<u8> {
    let mut archive = Archive::new();
    archive
        .add_file(
            "/usr/lib/systemd/systemd",
            0o755,
            b"\x7fELF systemd".to_vec(),
        )
        .unwrap();
    archive
        .add_symlink("/init", "usr/lib/systemd/systemd")
        .unwrap();
    archive
        .add_file("/etc/initrd-release", 0o644, b"NAME=dracut\n".to_vec())
        .unwrap();
    archive
        .add_file("/usr/lib/firmware/blob.bin", 0o644, vec![7u8; 300_000])
        .unwrap();
    InitramfsCompression::Gzip
        .compress(&archive.to_bytes(0).unwrap())
        .unwrap()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Distro {
    Fedora,
    Debian,
}

/// A root tree as the distribution lays it out, with a kernel, its classic initramfs,
/// storage-init and an fstab mounting /boot by UUID.
fn make_root(root: &Path, distro: Distro) -> PathBuf {
    let (os, initramfs) = match distro {
        Distro::Fedora => (
            "NAME=\"Fedora Linux\"\nID=fedora\n",
            format!("boot/initramfs-{KVER}.img"),
        ),
        Distro::Debian => (
            "NAME=\"Debian GNU/Linux\"\nID=debian\n",
            format!("boot/initrd.img-{KVER}"),
        ),
    };
    write(&root.join("etc/os-release"), os);
    write(&root.join("etc/machine-id"), format!("{MACHINE_ID}\n"));
    write(
        &root.join("etc/fstab"),
        "UUID=11111111-2222-3333-4444-555555555555 / ext4 defaults 0 1\n\
         # the boot partition\n\
         UUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee /boot ext4 defaults 0 2\n",
    );
    write(&root.join(&initramfs), classic_initramfs());
    write(&root.join(format!("boot/vmlinuz-{KVER}")), b"kernel");
    write(
        &root.join(format!("boot/config-{KVER}")),
        "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n",
    );
    let modules = root.join("lib/modules").join(KVER);
    let mut dep = String::new();
    for name in [
        "ext4",
        "erofs",
        "overlay",
        "virtio_blk",
        "nvme",
        "loop",
        "dm_verity",
    ] {
        write(
            &modules.join(format!("kernel/{name}.ko")),
            b"\x7fELF module",
        );
        dep.push_str(&format!("kernel/{name}.ko:\n"));
    }
    write(&modules.join("modules.dep"), dep);
    write(
        &modules.join("modules.alias"),
        "alias virtio:d00000002v* virtio_blk\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n",
    );
    write(&modules.join("modules.softdep"), "");
    write(&modules.join("modules.builtin"), "");
    write(
        &root.join("usr/lib/initoverlayfs/storage-init"),
        b"\x7fELF storage-init",
    );
    if distro == Distro::Fedora {
        write(
            &root.join(format!("boot/loader/entries/{MACHINE_ID}-{KVER}.conf")),
            format!(
                "title Fedora Linux ({KVER}) 41\nversion {KVER}\nlinux /vmlinuz-{KVER}\ninitrd /initramfs-{KVER}.img\noptions root=UUID=11111111-2222-3333-4444-555555555555 ro\n"
            ),
        );
    }
    root.join(initramfs)
}

/// Every file under `dir` with its content hash (directories left out).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(
                    relative,
                    hex::encode(Sha256::digest(fs::read(&path).unwrap())),
                );
            }
        }
    }
    out
}

fn install(root: &Path, extra: &[&str]) -> Output {
    let mut command = builder();
    command
        .arg("install")
        .args(["--kver", KVER, "--root"])
        .arg(root);
    if !extra.contains(&"--builder-path") {
        command.args(["--builder-path", "/usr/local/sbin/initoverlayfs-builder"]);
    }
    command.args(extra).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn list(path: &Path) -> String {
    ok(builder().arg("list").arg(path).output().unwrap())
}

fn mini_config(initramfs: &Path) -> storage_init::config::Config {
    let bytes = fs::read(initramfs).unwrap();
    let read = builder::initramfs::read(&bytes).unwrap();
    let conf = read
        .final_entries()
        .into_iter()
        .find(|e| e.name == "etc/initoverlayfs.conf")
        .expect("a mini initramfs carries the config")
        .clone();
    storage_init::config::parse_config(std::str::from_utf8(&conf.data).unwrap())
        .unwrap()
        .0
}

#[test]
fn fedora_install_then_undo() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Fedora);
    let before = snapshot(&root);
    let classic_bytes = fs::read(&initramfs).unwrap();

    let stdout = ok(install(&root, &[]));
    assert!(stdout.contains("layout fedora"), "{stdout}");
    let boot = root.join("boot");
    let image = boot.join(format!("initoverlayfs-{KVER}.img"));
    let classic = boot.join(format!("initramfs-{KVER}.classic.img"));
    assert_eq!(
        fs::read(&classic).unwrap(),
        classic_bytes,
        "the classic one is kept as is"
    );
    // The bootloader's path now holds the mini initramfs, zstd as the kernel allows.
    assert_eq!(
        &fs::read(&initramfs).unwrap()[..4],
        [0x28, 0xb5, 0x2f, 0xfd]
    );
    let config = mini_config(&initramfs);
    assert_eq!(
        config.bootfs.as_ref().unwrap().to_string(),
        "UUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    );
    assert_eq!(config.bootfstype.as_deref(), Some("ext4"));
    assert_eq!(config.kernel_release.as_deref(), Some(KVER));
    assert_eq!(
        config.fs.as_deref(),
        Some(format!("initoverlayfs-{KVER}.img").as_str())
    );
    let head = fs::read(&image).unwrap();
    let probed = storage_init::probe::probe(&head[..storage_init::probe::PROBE_LEN]).unwrap();
    assert_eq!(
        config.image_uuid,
        Some(probed.uuid),
        "the config names this image"
    );
    // The image holds the classic initramfs's files.
    let listing = list(&image);
    assert!(listing.contains("/usr/lib/systemd/systemd"), "{listing}");
    assert!(
        listing.contains("-> usr/lib/systemd/systemd /init"),
        "{listing}"
    );
    // A boot entry for the fallback, beside the kernel's own.
    let entries = boot.join("loader/entries");
    let fallback =
        fs::read_to_string(entries.join(format!("{MACHINE_ID}-{KVER}~initoverlayfs-classic.conf")))
            .unwrap();
    assert!(
        fallback.contains(&format!("initrd /initramfs-{KVER}.classic.img")),
        "{fallback}"
    );
    assert!(fallback.contains("(classic initramfs)"), "{fallback}");
    let own = fs::read_to_string(entries.join(format!("{MACHINE_ID}-{KVER}.conf"))).unwrap();
    assert!(
        own.contains(&format!("initrd /initramfs-{KVER}.img")),
        "unchanged: {own}"
    );
    // GRUB (no systemd-boot here): nothing counted, a failed boot halts.
    assert!(
        stdout.contains("boot counting: off (the boot loader is not systemd-boot)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("on a failed boot: storage-init halts"),
        "{stdout}"
    );
    assert_eq!(config.emergency, storage_init::config::Emergency::Halt);
    // The kernel-install plugin, calling this program where the user put it.
    let plugin = root.join("etc/kernel/install.d/95-initoverlayfs.install");
    let text = fs::read_to_string(&plugin).unwrap();
    assert!(
        text.contains("BUILDER=\"/usr/local/sbin/initoverlayfs-builder\""),
        "{text}"
    );

    // Again: the mini initramfs is recognised, the kept classic one converted again.
    let first = snapshot(&root);
    ok(install(&root, &[]));
    assert_eq!(snapshot(&root), first, "a second install changes nothing");

    // The undo command restores the tree exactly.
    let stdout = ok(builder()
        .arg("uninstall")
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap());
    assert!(
        stdout.contains("restored the classic initramfs"),
        "{stdout}"
    );
    assert_eq!(snapshot(&root), before, "{stdout}");
}

/// Under systemd-boot with systemd-bless-boot: the kernel's entry is counted, the fallback
/// entry sorts after it, the mini initramfs reboots into the fallback on a FATAL line, an
/// install re-arms an entry whose tries are used up, `status` says so, and the undo restores
/// the tree exactly.
#[test]
fn systemd_boot_install_counts_the_entry_and_arms_the_fallback() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Fedora);
    write(&root.join("boot/loader/loader.conf"), "timeout 0\n");
    let before_blesser = snapshot(&root);
    let entries = root.join("boot/loader/entries");
    let plain = entries.join(format!("{MACHINE_ID}-{KVER}.conf"));
    let counted = entries.join(format!("{MACHINE_ID}-{KVER}+3.conf"));
    let fallback_id = format!("{MACHINE_ID}-{KVER}~initoverlayfs-classic.conf");

    // No systemd-bless-boot: no boot would ever be marked good, so nothing is counted; the
    // one-shot fallback needs no blessing and is armed all the same.
    let stdout = ok(install(&root, &["--no-hooks"]));
    assert!(
        stdout.contains("boot counting: off (systemd-bless-boot is not installed"),
        "{stdout}"
    );
    assert!(plain.is_file());
    let config = mini_config(&initramfs);
    assert_eq!(config.emergency, storage_init::config::Emergency::Fallback);
    assert_eq!(config.fallback_entry.as_deref(), Some(fallback_id.as_str()));
    ok(builder()
        .args(["uninstall", "--root"])
        .arg(&root)
        .output()
        .unwrap());
    assert_eq!(snapshot(&root), before_blesser);

    write(&root.join("usr/lib/systemd/systemd-bless-boot"), b"\x7fELF");
    let before = snapshot(&root);
    let stdout = ok(install(&root, &["--no-hooks"]));
    assert!(
        stdout.contains(&format!(
            "boot counting: {} (systemd-boot tries it 3 times",
            counted.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("reboots once into {fallback_id} (systemd-boot:")),
        "{stdout}"
    );
    assert!(counted.is_file() && !plain.exists());
    let fallback = fs::read_to_string(entries.join(&fallback_id)).unwrap();
    assert!(
        fallback.contains(&format!("initrd /initramfs-{KVER}.classic.img")),
        "{fallback}"
    );

    // The boot loader used up the tries; an install (a kernel update's hook, or by hand)
    // gives the entry a fresh trial.
    let used_up = entries.join(format!("{MACHINE_ID}-{KVER}+0-3.conf"));
    fs::rename(&counted, &used_up).unwrap();
    let status = ok(builder()
        .args(["status", "--root"])
        .arg(&root)
        .output()
        .unwrap());
    assert!(
        status.contains(&format!(
            "entry {MACHINE_ID}-{KVER}+0-3.conf: bad: 3 tries failed"
        )),
        "{status}"
    );
    assert!(
        status.contains(&format!("fallback {fallback_id}")),
        "{status}"
    );
    ok(install(&root, &["--no-hooks", "--tries", "5"]));
    assert!(!used_up.exists());
    assert!(
        entries
            .join(format!("{MACHINE_ID}-{KVER}+5.conf"))
            .is_file()
    );

    // --tries 0: counting off, the entry blessed as it was.
    let stdout = ok(install(&root, &["--no-hooks", "--tries", "0"]));
    assert!(
        stdout.contains("boot counting: off (--tries 0)"),
        "{stdout}"
    );

    ok(builder()
        .args(["uninstall", "--root"])
        .arg(&root)
        .output()
        .unwrap());
    assert_eq!(
        snapshot(&root),
        before,
        "the undo restores the tree exactly"
    );
}

/// The kernel-install plugin, run by sh the way kernel-install runs it: `add` installs,
/// `remove` deletes what was added (not the distribution's own files).
#[test]
fn kernel_install_plugin_add_and_remove() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Fedora);
    let builder_path = env!("CARGO_BIN_EXE_builder");
    ok(install(&root, &["--builder-path", builder_path]));
    let plugin = root.join("etc/kernel/install.d/95-initoverlayfs.install");
    let boot = root.join("boot");
    fs::remove_file(boot.join(format!("initoverlayfs-{KVER}.img"))).unwrap();
    // What 50-dracut.install does on a kernel update: a fresh classic initramfs.
    fs::write(&initramfs, classic_initramfs()).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new("sh")
            .arg(&plugin)
            .args(args)
            .env("INITOVERLAYFS_ROOT", &root)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
    };
    run(&["add", KVER, "/boot/whatever", "/boot/vmlinuz"]);
    assert!(boot.join(format!("initoverlayfs-{KVER}.img")).is_file());
    assert!(mini_config(&initramfs).kernel_release.is_some());
    run(&["remove", KVER, "/boot/whatever"]);
    assert!(!boot.join(format!("initoverlayfs-{KVER}.img")).exists());
    assert!(!boot.join(format!("initramfs-{KVER}.classic.img")).exists());
    assert!(
        !boot
            .join(format!(
                "loader/entries/{MACHINE_ID}-{KVER}~initoverlayfs-classic.conf"
            ))
            .exists()
    );
    assert!(
        initramfs.exists(),
        "the kernel's own initramfs is kernel-install's to remove"
    );
}

/// Without --builder-path the hooks call the program that wrote them when it runs from a system
/// program directory, as the Debian package's /usr/sbin/initoverlayfs does. The binary runs as
/// /usr/local/sbin/initoverlayfs (not the default name, so the default cannot pass for it) from
/// a tmpfs mounted there in a mount namespace of its own: the host's directory stays as it was.
#[test]
fn the_hooks_call_the_program_that_installed_them() {
    if !have_mkfs()
        || !common::have_root("mounting over /usr/local/sbin in a mount namespace")
        || !common::have_tool("unshare", "util-linux")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    make_root(&root, Distro::Debian);
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o size=64m,mode=0755 initoverlayfs-test /usr/local/sbin\n\
         cp \"$1\" /usr/local/sbin/initoverlayfs\n\
         exec /usr/local/sbin/initoverlayfs install --kver {KVER} --root \"$2\" --preset virtio\n"
    );
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_builder"))
        .arg(&root)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("INITOVERLAYFS_ROOT")
        .output()
        .unwrap();
    ok(output);
    for hook in [
        "etc/kernel/postinst.d/zz-initoverlayfs",
        "etc/kernel/postrm.d/zz-initoverlayfs",
        "etc/initramfs/post-update.d/initoverlayfs",
    ] {
        let text = fs::read_to_string(root.join(hook)).unwrap();
        assert!(
            text.contains("BUILDER=\"/usr/local/sbin/initoverlayfs\"\n"),
            "{hook}:\n{text}"
        );
    }
    assert!(
        !Path::new("/usr/local/sbin/initoverlayfs").exists(),
        "the namespace's tmpfs leaked onto the host"
    );
}

#[test]
fn debian_install_hooks_and_undo() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Debian);
    let before = snapshot(&root);
    let builder_path = env!("CARGO_BIN_EXE_builder");
    let stdout = ok(install(
        &root,
        &["--builder-path", builder_path, "--preset", "virtio"],
    ));
    assert!(stdout.contains("layout debian"), "{stdout}");
    let boot = root.join("boot");
    assert!(boot.join(format!("initrd.img-{KVER}.classic")).is_file());
    assert!(boot.join(format!("initoverlayfs-{KVER}.img")).is_file());
    let listing = list(&initramfs);
    assert!(listing.contains("/virtio_blk.ko"), "{listing}");
    assert!(
        !listing.contains("/nvme.ko"),
        "only the virtio preset: {listing}"
    );
    for hook in [
        "etc/kernel/postinst.d/zz-initoverlayfs",
        "etc/kernel/postrm.d/zz-initoverlayfs",
        "etc/initramfs/post-update.d/initoverlayfs",
    ] {
        assert!(root.join(hook).is_file(), "{hook}");
    }
    assert!(
        !root
            .join("etc/kernel/install.d/95-initoverlayfs.install")
            .exists()
    );

    // update-initramfs writes a fresh classic initramfs, then runs post-update.d: the mini
    // initramfs and the image follow, from the new content.
    let mut fresh = Archive::new();
    fresh
        .add_file(
            "/usr/lib/systemd/systemd",
            0o755,
            b"\x7fELF systemd v2".to_vec(),
        )
        .unwrap();
    let fresh = fresh.to_bytes(0).unwrap();
    fs::write(&initramfs, &fresh).unwrap();
    let hook = |relative: &str, args: &[&str]| {
        let output = Command::new("sh")
            .arg(root.join(relative))
            .args(args)
            .env("INITOVERLAYFS_ROOT", &root)
            .output()
            .unwrap();
        assert!(output.status.success(), "{relative}: {output:?}");
    };
    hook(
        "etc/initramfs/post-update.d/initoverlayfs",
        &[KVER, initramfs.to_str().unwrap()],
    );
    assert_eq!(
        fs::read(boot.join(format!("initrd.img-{KVER}.classic"))).unwrap(),
        fresh
    );
    let systemd_v2 = hex::encode(Sha256::digest(b"\x7fELF systemd v2"));
    let listing = list(&boot.join(format!("initoverlayfs-{KVER}.img")));
    assert!(
        listing.contains(&systemd_v2[..16]),
        "the image holds the new content: {listing}"
    );
    // The postinst hook does the same for a new kernel; postrm removes what install added.
    hook(
        "etc/kernel/postrm.d/zz-initoverlayfs",
        &[KVER, "/boot/vmlinuz"],
    );
    assert!(!boot.join(format!("initoverlayfs-{KVER}.img")).exists());
    assert!(!boot.join(format!("initrd.img-{KVER}.classic")).exists());

    // Undo from the original state: install again, then uninstall restores everything.
    fs::write(&initramfs, classic_initramfs()).unwrap();
    ok(install(&root, &["--builder-path", builder_path]));
    ok(builder()
        .arg("uninstall")
        .env("INITOVERLAYFS_ROOT", &root)
        .output()
        .unwrap());
    assert_eq!(snapshot(&root), before);
}

/// `--verity`: the image carries its hash tree (veritysetup agrees), the mini initramfs its
/// root hash and the dm-verity modules, and the hooks keep verity on for the next update, with
/// the owner's other choices (the preset, a bootfs that needs shell quoting).
#[test]
fn a_verity_install_stays_verified_across_updates() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Debian);
    let builder_path = env!("CARGO_BIN_EXE_builder");
    let stdout = ok(install(
        &root,
        &[
            "--builder-path",
            builder_path,
            "--preset",
            "virtio",
            "--bootfs",
            "LABEL=it's boot",
            "--verity",
        ],
    ));
    let image = root.join(format!("boot/initoverlayfs-{KVER}.img"));
    let check = |stdout: &str| {
        let verity = builder::verity::read_verity(&image)
            .unwrap()
            .expect("a hash tree");
        assert!(stdout.contains(&verity.root_hash), "{stdout}");
        assert_eq!(mini_config(&initramfs).verity(), Ok(Some(verity.clone())));
        if Command::new("veritysetup")
            .arg("--version")
            .output()
            .is_ok()
        {
            let output = Command::new("veritysetup")
                .arg("verify")
                .arg(&image)
                .arg(&image)
                .arg(&verity.root_hash)
                .arg(format!("--hash-offset={}", verity.data_blocks * 4096))
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
        }
        let listing = list(&initramfs);
        assert!(listing.contains("/dm_verity.ko"), "{listing}");
        assert!(listing.contains("/loop.ko"), "{listing}");
        assert!(
            !listing.contains("/nvme.ko"),
            "only the virtio preset: {listing}"
        );
        assert_eq!(
            mini_config(&initramfs).bootfs.map(|b| b.to_string()),
            Some("LABEL=it's boot".to_owned())
        );
        verity
    };
    let first = check(&stdout);
    let hook = root.join("etc/initramfs/post-update.d/initoverlayfs");
    let conf = fs::read_to_string(root.join("etc/initoverlayfs/install.conf")).unwrap();
    assert!(
        conf.ends_with("\npreset = virtio\nbootfs = LABEL=it's boot\nverity = yes\n"),
        "{conf}"
    );

    // update-initramfs writes new content; its hook rebuilds both, verified again.
    let mut fresh = Archive::new();
    fresh
        .add_file(
            "/usr/lib/systemd/systemd",
            0o755,
            b"\x7fELF systemd v3".to_vec(),
        )
        .unwrap();
    fs::write(&initramfs, fresh.to_bytes(0).unwrap()).unwrap();
    let output = Command::new("sh")
        .arg(&hook)
        .args([KVER, initramfs.to_str().unwrap()])
        .env("INITOVERLAYFS_ROOT", &root)
        .output()
        .unwrap();
    let second = check(&ok(output));
    assert_ne!(first.root_hash, second.root_hash);

    // Without options the file keeps none: every update takes the defaults.
    let plain = work.path().join("plain");
    make_root(&plain, Distro::Debian);
    ok(install(&plain, &["--builder-path", builder_path]));
    let conf = fs::read_to_string(plain.join("etc/initoverlayfs/install.conf")).unwrap();
    assert!(
        conf.lines().all(|l| l.starts_with('#')),
        "no option chosen: {conf}"
    );
}

/// A failure after the image is written (a filesystem module the kernel tree lacks): the
/// bootloader's initramfs and entries are untouched, and the error says what to do.
#[test]
fn a_failure_midway_leaves_the_old_initramfs_bootable() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Fedora);
    let classic_bytes = fs::read(&initramfs).unwrap();
    let modules = root.join("lib/modules").join(KVER);
    fs::write(
        modules.join("modules.dep"),
        "kernel/erofs.ko:\nkernel/overlay.ko:\nkernel/virtio_blk.ko:\n",
    )
    .unwrap();
    let output = install(&root, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"ext4\""), "{stderr}");
    assert_eq!(fs::read(&initramfs).unwrap(), classic_bytes);
    let boot = root.join("boot");
    assert!(!boot.join(format!("initramfs-{KVER}.classic.img")).exists());
    let entries: Vec<_> = fs::read_dir(boot.join("loader/entries")).unwrap().collect();
    assert_eq!(entries.len(), 1, "no fallback entry for a failed install");
    let leftovers: Vec<String> = fs::read_dir(&boot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The undo command cleans up the image the failed run had written.
    ok(builder()
        .arg("uninstall")
        .args(["--kver", KVER, "--root"])
        .arg(&root)
        .output()
        .unwrap());
    assert!(!boot.join(format!("initoverlayfs-{KVER}.img")).exists());
    assert_eq!(fs::read(&initramfs).unwrap(), classic_bytes);
}

/// What a boot from the tree would run: the classic chain (the bootloader's initramfs is the
/// classic one) or the new one (a mini initramfs whose recorded image is on /boot, with the
/// classic one kept as the fallback beside it). Anything else is a machine that cannot boot.
fn boots(root: &Path, distro: Distro, classic_bytes: &[u8]) -> Result<&'static str, String> {
    let boot = root.join("boot");
    let (initramfs, classic) = match distro {
        Distro::Fedora => (
            boot.join(format!("initramfs-{KVER}.img")),
            boot.join(format!("initramfs-{KVER}.classic.img")),
        ),
        Distro::Debian => (
            boot.join(format!("initrd.img-{KVER}")),
            boot.join(format!("initrd.img-{KVER}.classic")),
        ),
    };
    let bytes = fs::read(&initramfs).map_err(|e| format!("{}: {e}", initramfs.display()))?;
    if bytes == classic_bytes {
        return Ok("classic");
    }
    let config = mini_config(&initramfs);
    let name = config
        .fs
        .clone()
        .unwrap_or_else(|| format!("initoverlayfs-{KVER}.img"));
    let image = boot.join(name);
    let head = fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
    let uuid = head
        .get(..storage_init::probe::PROBE_LEN)
        .and_then(storage_init::probe::probe)
        .ok_or_else(|| format!("{} is no filesystem storage-init knows", image.display()))?
        .uuid;
    if config.image_uuid.as_deref() != Some(uuid.as_str()) {
        return Err(format!(
            "the mini initramfs records image {:?}, /boot holds {uuid}",
            config.image_uuid
        ));
    }
    if fs::read(&classic).ok().as_deref() != Some(classic_bytes) {
        return Err(format!("no classic fallback at {}", classic.display()));
    }
    // The entry storage-init reboots into after a FATAL line must be there, loading the
    // classic initramfs, and the kernel's own entry under one name, counted or not.
    if let Some(id) = &config.fallback_entry {
        let entries = boot.join("loader/entries");
        let text = fs::read_to_string(entries.join(id))
            .map_err(|e| format!("the fallback entry {id} the mini initramfs names: {e}"))?;
        let classic_name = classic.file_name().unwrap().to_string_lossy();
        if !text.contains(&format!("initrd /{classic_name}\n")) {
            return Err(format!(
                "the fallback entry {id} does not load {classic_name}"
            ));
        }
        let own = fs::read_dir(&entries)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(&format!("{MACHINE_ID}-{KVER}")) && !name.contains("classic")
            })
            .count();
        if own != 1 {
            return Err(format!(
                "{own} entries of the kernel's own in {}",
                entries.display()
            ));
        }
    }
    Ok("initoverlayfs")
}

/// Makes `root` a systemd-boot machine with systemd-bless-boot: install counts its entry.
fn add_systemd_boot(root: &Path) {
    write(&root.join("boot/loader/loader.conf"), "timeout 0\n");
    write(&root.join("usr/lib/systemd/systemd-bless-boot"), b"\x7fELF");
}

/// An install stopped dead (`abort`, as a power cut stops it) after each of its writes,
/// fsyncs and renames in turn: the tree left behind always boots the old chain or the new
/// one, and `install` run again finishes with the same tree a clean install makes.
#[test]
fn an_install_stopped_anywhere_leaves_a_bootable_machine() {
    if !have_mkfs() {
        return;
    }
    for (distro, systemd_boot) in [
        (Distro::Debian, false),
        (Distro::Fedora, false),
        (Distro::Fedora, true),
    ] {
        let work = tempfile::tempdir().unwrap();
        let clean = work.path().join("clean");
        let initramfs = make_root(&clean, distro);
        if systemd_boot {
            add_systemd_boot(&clean);
        }
        let classic_bytes = fs::read(&initramfs).unwrap();
        ok(install(&clean, &[]));
        let finished = snapshot(&clean);

        let mut seen = BTreeMap::new();
        let mut point = 1;
        loop {
            let root = work.path().join(format!("stopped-{point}"));
            make_root(&root, distro);
            if systemd_boot {
                add_systemd_boot(&root);
            }
            let output = install_stopped_at(&root, point);
            let stopped = !output.status.success();
            if stopped {
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(
                    stderr.contains(&format!("BUILDER_FAULT_AT={point}: stopping dead")),
                    "{distro:?} point {point}: not stopped at a crash point: {output:?}"
                );
                let chain = boots(&root, distro, &classic_bytes).unwrap_or_else(|why| {
                    panic!("{distro:?}: stopped at point {point}, the machine cannot boot: {why}")
                });
                *seen.entry(chain).or_insert(0) += 1;
            }
            ok(install(&root, &[]));
            assert_eq!(
                snapshot(&root),
                finished,
                "{distro:?}: install run again after point {point} did not finish the job"
            );
            fs::remove_dir_all(&root).unwrap();
            if !stopped {
                break;
            }
            point += 1;
            assert!(
                point < 200,
                "{distro:?}: an install has fewer crash points than this"
            );
        }
        eprintln!(
            "{distro:?} (systemd-boot: {systemd_boot}): {} crash points: {seen:?}",
            point - 1
        );
        assert!(point > 10, "{distro:?}: only {} crash points", point - 1);
        assert!(
            seen.contains_key("classic") && seen.contains_key("initoverlayfs"),
            "{distro:?}: the points fall on both sides of the switch: {seen:?}"
        );
    }
}

fn install_stopped_at(root: &Path, point: u32) -> Output {
    let mut command = builder();
    command
        .arg("install")
        .args(["--kver", KVER, "--root"])
        .arg(root)
        .args(["--builder-path", "/usr/local/sbin/initoverlayfs-builder"])
        .env(builder::fault::FAULT_AT_ENV, point.to_string());
    command.output().unwrap()
}

/// A /boot too small for the image: refused before anything is written. Needs root to mount
/// a small tmpfs there.
#[test]
fn a_full_boot_is_refused_before_anything_changes() {
    if !common::have_root("mounting a small /boot") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let boot = root.join("boot");
    fs::create_dir_all(&boot).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &boot,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=4m"),
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(boot.clone());
    let initramfs = make_root(&root, Distro::Debian);
    let before = snapshot(&root);
    let output = install(&root, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not enough space on") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(snapshot(&root), before);
    assert!(initramfs.is_file());
}

/// A read-only /boot (mounted so, or a firmware partition the system keeps read-only): refused
/// before anything is written, saying so. Needs root to mount it.
#[test]
fn a_read_only_boot_is_refused_before_anything_changes() {
    if !common::have_root("mounting a read-only /boot") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Debian);
    let boot = root.join("boot");
    // The populated /boot bound onto itself, then made read-only.
    rustix::mount::mount_bind(&boot, &boot).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(boot.clone());
    rustix::mount::mount_remount(
        &boot,
        rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
        "",
    )
    .unwrap();
    let before = snapshot(&root);
    let output = install(&root, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("read-only") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(snapshot(&root), before);
    assert!(initramfs.is_file());
}

#[test]
fn missing_pieces_are_named() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    make_root(&root, Distro::Fedora);
    fs::remove_file(root.join("usr/lib/initoverlayfs/storage-init")).unwrap();
    let output = install(&root, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("storage-init binary") && stderr.contains("--storage-init"),
        "{stderr}"
    );

    let bare = work.path().join("bare");
    fs::create_dir_all(&bare).unwrap();
    let output = install(&bare, &[]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("give --layout"),
        "{output:?}"
    );

    // --dracut in a tree without dracut: the error names dracut and the way around it.
    write(&root.join("usr/lib/initoverlayfs/storage-init"), b"\x7fELF");
    let output = install(&root, &["--dracut"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("running dracut") && stderr.contains("--initramfs"),
        "{stderr}"
    );
}

/// The boot filesystem's driver follows the same rule as `builder initramfs`: the fstab line's
/// type, else (a `--bootfs` of its own, or an fstab type of `auto`) the device when this
/// machine has it, else every probed filesystem's; `--bootfstype` first, and kept by the hooks.
#[test]
fn install_ships_the_boot_filesystem_driver() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Debian);
    write(
        &root.join(format!("boot/config-{KVER}")),
        "CONFIG_EXT4_FS=m\nCONFIG_XFS_FS=m\nCONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_RD_ZSTD=y\n",
    );
    let modules = root.join("lib/modules").join(KVER);
    write(&modules.join("kernel/xfs.ko"), b"\x7fELF module");
    let mut dep = fs::read_to_string(modules.join("modules.dep")).unwrap();
    dep.push_str("kernel/xfs.ko:\n");
    write(&modules.join("modules.dep"), dep);
    let fstab = root.join("etc/fstab");
    let run = |extra: &[&str]| {
        let output = install(&root, extra);
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let listing = list(&initramfs);
        let shipped = |module: &str| listing.contains(&format!("/{module}.ko\n"));
        (
            stderr,
            shipped("ext4"),
            shipped("xfs"),
            mini_config(&initramfs).bootfstype,
        )
    };

    // The fstab's line for /boot says ext4.
    let (stderr, ext4, xfs, bootfstype) = run(&["--no-hooks"]);
    assert_eq!(
        stderr,
        format!("builder: boot filesystem ext4 (from {})\n", fstab.display())
    );
    assert!(ext4 && !xfs);
    assert_eq!(bootfstype.as_deref(), Some("ext4"));

    // A --bootfs this machine does not have, no type: both drivers, no type in the config.
    let (stderr, ext4, xfs, bootfstype) =
        run(&["--no-hooks", "--bootfs", "LABEL=not on this machine"]);
    assert!(
        stderr.starts_with(
            "builder: boot filesystem not known (--bootfs LABEL=not on this machine is not on this machine (no /dev/disk/by-label/not\\x20on\\x20this\\x20machine)): shipping the drivers of every filesystem storage-init probes that this kernel has (ext4, xfs, erofs): +2 modules"
        ),
        "{stderr}"
    );
    assert!(ext4 && xfs);
    assert_eq!(bootfstype, None);

    // fstab's `auto` names no type: the same.
    let text = fs::read_to_string(&fstab).unwrap();
    write(&fstab, text.replace("/boot ext4", "/boot auto"));
    let (stderr, ext4, xfs, _) = run(&["--no-hooks"]);
    assert!(
        stderr.starts_with(&format!(
            "builder: boot filesystem not known (UUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee of {} is not on this machine",
            fstab.display()
        )),
        "{stderr}"
    );
    assert!(ext4 && xfs);

    // --bootfstype decides, and the hooks keep it.
    let (stderr, ext4, xfs, bootfstype) = run(&[
        "--bootfs",
        "LABEL=boot",
        "--bootfstype",
        "xfs",
        "--builder-path",
        env!("CARGO_BIN_EXE_builder"),
    ]);
    assert_eq!(stderr, "builder: boot filesystem xfs (from --bootfstype)\n");
    assert!(!ext4 && xfs);
    assert_eq!(bootfstype.as_deref(), Some("xfs"));
    let conf = fs::read_to_string(root.join("etc/initoverlayfs/install.conf")).unwrap();
    assert!(
        conf.ends_with("\nbootfs = LABEL=boot\nbootfstype = xfs\n"),
        "{conf}"
    );
}

/// An update hook whose install fails (here: storage-init was deleted) does not fail the
/// kernel's installation: it exits 0, says what failed and what to run, and the fresh classic
/// initramfs update-initramfs wrote stays where the boot loader loads it.
#[test]
fn a_failing_update_hook_leaves_the_kernel_booting_classic_and_says_so() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let initramfs = make_root(&root, Distro::Debian);
    let builder_path = env!("CARGO_BIN_EXE_builder");
    ok(install(&root, &["--builder-path", builder_path]));
    fs::remove_file(root.join("usr/lib/initoverlayfs/storage-init")).unwrap();
    // update-initramfs writes a fresh classic initramfs, then runs its post-update hooks.
    let fresh = classic_initramfs();
    fs::write(&initramfs, &fresh).unwrap();
    let output = Command::new("sh")
        .arg(root.join("etc/initramfs/post-update.d/initoverlayfs"))
        .args([KVER, initramfs.to_str().unwrap()])
        .env("INITOVERLAYFS_ROOT", &root)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("storage-init binary") && stderr.contains("is missing"),
        "the install's own error first: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "initoverlayfs: could not make the initoverlayfs boot of {KVER} (the error is above); it boots with its classic initramfs. Fix the cause, then run: {builder_path} install --kver {KVER}"
        )),
        "{stderr}"
    );
    assert_eq!(
        fs::read(&initramfs).unwrap(),
        fresh,
        "the classic initramfs boots"
    );
    assert_eq!(boots(&root, Distro::Debian, &fresh), Ok("classic"));
}

/// `install --all` (what the package runs): every kernel with an initramfs, each to the end;
/// one that fails is named, keeps its classic initramfs, and makes the exit status 1; a kernel
/// without an initramfs is not one.
#[test]
fn install_all_does_every_kernel_and_names_the_ones_that_failed() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    make_root(&root, Distro::Debian);
    let modules = root.join("lib/modules");
    // A second kernel whose install fails: its build configuration is missing.
    let broken = "6.9.1-test";
    copy_dir(&modules.join(KVER), &modules.join(broken));
    let broken_initrd = root.join(format!("boot/initrd.img-{broken}"));
    fs::write(&broken_initrd, classic_initramfs()).unwrap();
    // Modules left by a removed kernel, without an initramfs.
    copy_dir(&modules.join(KVER), &modules.join("6.8.0-gone"));
    let output = builder()
        .args(["install", "--all", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains(&format!("installed initoverlayfs for {KVER}")),
        "{stdout}"
    );
    assert!(!stdout.contains("6.8.0-gone") && !stderr.contains("6.8.0-gone"));
    assert!(
        stderr.contains(&format!("builder: error: {broken}: "))
            && stderr.contains("it boots with its classic initramfs"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(&format!(
            "builder: error: 1 of 2 kernels not installed ({broken}): see the errors above\n"
        )),
        "{stderr}"
    );
    assert_eq!(
        fs::read(&broken_initrd).unwrap(),
        classic_initramfs(),
        "untouched"
    );
    assert!(
        root.join(format!("boot/initoverlayfs-{KVER}.img"))
            .is_file()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            write(&target, fs::read(entry.path()).unwrap());
        }
    }
}
