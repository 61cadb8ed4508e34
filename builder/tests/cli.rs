//! End-to-end checks of the `builder` binary: arguments, `SOURCE_DATE_EPOCH`, error exits.

mod common;

use common::{builder, have_mkfs, have_root};

use std::fs;
use std::path::Path;

/// A kernel tree with one plain module and no dependencies.
fn tiny_tree(root: &Path) {
    let dir = root.join("lib/modules/1.0");
    fs::create_dir_all(dir.join("kernel")).unwrap();
    fs::write(dir.join("kernel/virtio_blk.ko"), b"\x7fELF virtio_blk").unwrap();
    fs::write(dir.join("modules.dep"), "kernel/virtio_blk.ko:\n").unwrap();
    for name in ["modules.softdep", "modules.alias", "modules.builtin"] {
        fs::write(dir.join(name), "").unwrap();
    }
}

#[test]
fn initramfs_then_list() {
    let work = tempfile::tempdir().unwrap();
    tiny_tree(work.path());
    let storage_init = work.path().join("storage-init");
    fs::write(&storage_init, b"\x7fELF").unwrap();
    let build = |output: &Path, epoch: Option<&str>| {
        let mut command = builder();
        command
            .arg("initramfs")
            .arg("--storage-init")
            .arg(&storage_init)
            .arg("--kernel-root")
            .arg(work.path())
            .args(["--kver", "1.0", "--module", "virtio-blk"])
            .args([
                "--bootfs",
                "UUID=ABCD-1234",
                "--bootfstype",
                "ext4",
                "--timeout",
                "5",
            ])
            .arg("-o")
            .arg(output);
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch);
        }
        let result = command.output().unwrap();
        assert!(result.status.success(), "{result:?}");
        String::from_utf8(result.stdout).unwrap()
    };
    let (a, b, c) = (
        work.path().join("a.cpio"),
        work.path().join("b.cpio"),
        work.path().join("c.cpio"),
    );
    let stdout = build(&a, None);
    assert!(
        stdout.contains("load virtio_blk /lib/modules/1.0/kernel/virtio_blk.ko"),
        "{stdout}"
    );
    build(&b, None);
    build(&c, Some("1700000000"));
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap());
    assert!(fs::read(&a).unwrap() != fs::read(&c).unwrap());

    let listed = builder().arg("list").arg(&a).output().unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains("c0600 0:0"), "{listing}");
    assert!(
        listing.contains("/lib/modules/1.0/kernel/virtio_blk.ko"),
        "{listing}"
    );
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let work = tempfile::tempdir().unwrap();
    let check = |args: &[&str], fragment: &str| {
        let result = builder().args(args).output().unwrap();
        // 2 is kept for a wrong command line (clap's usage errors).
        let expected = if fragment.starts_with("--") { 2 } else { 1 };
        assert_eq!(result.status.code(), Some(expected), "{args:?}");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(fragment), "{args:?}: {stderr}");
    };
    let root = work.path().to_str().unwrap();
    check(
        &[
            "modules",
            "--kernel-root",
            root,
            "--kver",
            "9",
            "--module",
            "x",
        ],
        "depmod -b",
    );
    check(
        &[
            "initramfs",
            "--storage-init",
            "/nonexistent",
            "--kernel-root",
            root,
            "--kver",
            "9",
            "--bootfs",
            "vda",
            "-o",
            "/dev/null",
        ],
        "bootfs",
    );
    let not_cpio = work.path().join("x");
    fs::write(&not_cpio, b"junk").unwrap();
    check(
        &["list", not_cpio.to_str().unwrap()],
        "at byte 0: bytes 6a 75 6e 6b is no format the kernel unpacks",
    );
    let out = work.path().join("out");
    for command in [
        vec![
            "unpack",
            not_cpio.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        vec![
            "image",
            "--initramfs",
            not_cpio.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    ] {
        check(
            &command,
            "at byte 0: bytes 6a 75 6e 6b is no format the kernel unpacks",
        );
    }
    check(&["image", "-o", out.to_str().unwrap()], "--source <SOURCE>");
    // A kernel without erofs compression (RHEL 9's kind) refuses a compressed image.
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/config-9.0"), "CONFIG_EROFS_FS=m\n").unwrap();
    check(
        &[
            "image",
            "--source",
            tree.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--kver",
            "9.0",
            "--kernel-root",
            tree.to_str().unwrap(),
            "--compression",
            "lz4hc,11",
        ],
        "cannot read lz4hc,11 erofs images (CONFIG_EROFS_FS_ZIP is not set)",
    );
}

#[test]
fn initramfs_records_the_kernel_and_the_image_it_was_built_with() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    tiny_tree(work.path());
    let storage_init = work.path().join("storage-init");
    fs::write(&storage_init, b"\x7fELF").unwrap();
    let content = work.path().join("content");
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("init"), b"#!/bin/sh\n").unwrap();
    let image = work.path().join("image.erofs");
    let erofs = builder()
        .arg("image")
        .arg("--source")
        .arg(&content)
        .arg("-o")
        .arg(&image)
        .output()
        .unwrap();
    assert!(erofs.status.success(), "{erofs:?}");
    let output = work.path().join("mini.cpio");
    let result = builder()
        .arg("initramfs")
        .arg("--storage-init")
        .arg(&storage_init)
        .arg("--kernel-root")
        .arg(work.path())
        .args(["--kver", "1.0", "--bootfs", "LABEL=boot", "--image"])
        .arg(&image)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert!(result.status.success(), "{result:?}");

    let archive = builder::cpio::read_archive(&fs::read(&output).unwrap()).unwrap();
    let conf = archive
        .iter()
        .find(|e| e.name == "etc/initoverlayfs.conf")
        .expect("the config is in the archive");
    let (config, _) =
        storage_init::config::parse_config(std::str::from_utf8(&conf.data).unwrap()).unwrap();
    let head = fs::read(&image).unwrap();
    let image_uuid = storage_init::probe::probe(&head[..storage_init::probe::PROBE_LEN])
        .unwrap()
        .uuid;
    assert_eq!(config.kernel_release.as_deref(), Some("1.0"));
    assert_eq!(config.image_uuid, Some(image_uuid));

    let not_an_image = builder()
        .arg("initramfs")
        .arg("--storage-init")
        .arg(&storage_init)
        .arg("--kernel-root")
        .arg(work.path())
        .args(["--kver", "1.0", "--bootfs", "LABEL=boot", "--image"])
        .arg(&storage_init)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&not_an_image.stderr);
    assert!(
        !not_an_image.status.success() && stderr.contains("no erofs or ext4 superblock"),
        "{stderr}"
    );
}

/// A kernel whose config unpacks only gzip: `auto` compresses with gzip, zstd is refused with
/// the option that is missing, and `none` always works.
#[test]
fn initramfs_compression_follows_the_kernel() {
    let work = tempfile::tempdir().unwrap();
    tiny_tree(work.path());
    fs::create_dir_all(work.path().join("boot")).unwrap();
    fs::write(
        work.path().join("boot/config-1.0"),
        "CONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_RD_GZIP=y\n",
    )
    .unwrap();
    let storage_init = work.path().join("storage-init");
    fs::write(&storage_init, b"\x7fELF").unwrap();
    let output = work.path().join("mini.img");
    let build = |compression: &str| {
        builder()
            .arg("initramfs")
            .arg("--storage-init")
            .arg(&storage_init)
            .arg("--kernel-root")
            .arg(work.path())
            .args(["--kver", "1.0", "--module", "virtio_blk"])
            .args(["--bootfs", "LABEL=boot", "--bootfstype", "ext4"])
            .args(["--compression", compression])
            .arg("-o")
            .arg(&output)
            .output()
            .unwrap()
    };
    // The filesystems' modules the kernel config calls for.
    let dir = work.path().join("lib/modules/1.0");
    let mut dep = String::from("kernel/virtio_blk.ko:\n");
    for module in ["ext4", "erofs", "overlay"] {
        fs::write(dir.join(format!("kernel/{module}.ko")), b"\x7fELF").unwrap();
        dep.push_str(&format!("kernel/{module}.ko:\n"));
    }
    fs::write(dir.join("modules.dep"), dep).unwrap();
    let auto = build("auto");
    assert!(auto.status.success(), "{auto:?}");
    let stdout = String::from_utf8_lossy(&auto.stdout);
    assert!(stdout.contains("gzip to"), "{stdout}");
    assert_eq!(&fs::read(&output).unwrap()[..2], [0x1f, 0x8b], "gzip magic");
    let listing = builder().arg("list").arg(&output).output().unwrap();
    assert!(listing.status.success(), "{listing:?}");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("/lib/modules/1.0/kernel/ext4.ko"));

    let before = fs::read(&output).unwrap();
    let zstd = build("zstd");
    assert_eq!(zstd.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&zstd.stderr);
    assert!(
        stderr.contains(
            "cannot unpack a zstd initramfs (CONFIG_RD_ZSTD is not set): use none or gzip"
        ),
        "{stderr}"
    );
    assert_eq!(
        fs::read(&output).unwrap(),
        before,
        "a refused build leaves the old file"
    );

    let none = build("none");
    assert!(none.status.success(), "{none:?}");
    assert!(fs::read(&output).unwrap().starts_with(b"070701"));
    let unknown = build("lzo");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown initramfs compression \"lzo\"")
    );
}

/// `config` prints what storage-init will read, and refuses what it would refuse.
#[test]
fn config_prints_what_storage_init_reads() {
    let printed = builder()
        .args([
            "config",
            "--bootfs",
            "PARTLABEL=boot",
            "--timeout",
            "7",
            "--kver",
            "6.12.1",
        ])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let text = String::from_utf8(printed.stdout).unwrap();
    let (config, warnings) = storage_init::config::parse_config(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.kernel_release.as_deref(), Some("6.12.1"));
    assert_eq!(config.timeout.as_secs(), 7);
    assert_eq!(config.bootfs.unwrap().to_string(), "PARTLABEL=boot");

    let bad = builder()
        .args(["config", "--bootfs", "LABEL=x", "--emergency", "explode"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("emergency") && stderr.contains("explode"),
        "{stderr}"
    );
}

/// `image --kver` names the image as upstream does, and `list` reads it back (as root, with
/// fsck.erofs) in the same format as the tree it came from.
#[test]
fn image_default_name_and_listing() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/config-9.1"), "CONFIG_EROFS_FS=m\n").unwrap();
    let content = work.path().join("content");
    fs::create_dir_all(content.join("usr/bin")).unwrap();
    fs::write(content.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::symlink("usr/bin", content.join("bin")).unwrap();
    let result = builder()
        .current_dir(work.path())
        .arg("image")
        .arg("--source")
        .arg(&content)
        .args(["--kver", "9.1", "--kernel-root"])
        .arg(&tree)
        .output()
        .unwrap();
    assert!(result.status.success(), "{result:?}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("mkfs.erofs "), "{stdout}");
    assert!(stdout.contains("erofs compression: none"), "{stdout}");
    let image = work.path().join("initoverlayfs-9.1.img");
    assert!(image.is_file(), "{stdout}");
    if !have_root("listing the image (mounting it)") {
        return;
    }
    let list = |path: &Path| {
        let output = builder().arg("list").arg(path).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    // The image is all-root; the tree is the test's (root here too).
    assert_eq!(list(&image), list(&content));
    assert!(list(&image).contains("l0777 0:0"), "{}", list(&image));
}

/// Owners: root's by default, the tree's with --keep-owners (read back by mounting the image,
/// so root only).
#[test]
fn image_owners() {
    if !have_root("the test (a chown, then a mount of the image)") || !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let content = work.path().join("content");
    fs::create_dir_all(content.join("var/lib/daemon")).unwrap();
    fs::write(content.join("var/lib/daemon/state"), b"x").unwrap();
    std::os::unix::fs::chown(content.join("var/lib/daemon"), Some(1000), Some(1001)).unwrap();
    let build = |image: &Path, extra: &[&str]| {
        let output = builder()
            .arg("image")
            .arg("--source")
            .arg(&content)
            .arg("-o")
            .arg(image)
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let listed = builder().arg("list").arg(image).output().unwrap();
        assert!(listed.status.success(), "{listed:?}");
        String::from_utf8(listed.stdout).unwrap()
    };
    let all_root = build(&work.path().join("a.img"), &[]);
    assert!(
        all_root.contains("d0755 0:0         0 -                       /var/lib/daemon\n"),
        "{all_root}"
    );
    let kept = build(&work.path().join("b.img"), &["--keep-owners"]);
    assert!(
        kept.contains("1000:1001         0 -                       /var/lib/daemon\n"),
        "{kept}"
    );
}

/// `builder uki`: the same inputs give the same bytes (signed: the same bytes but for the
/// signature, which records the signing time); a file that is no PE stub fails with one line;
/// a key without its certificate is a usage error.
#[test]
fn uki_is_reproducible_but_for_the_signature() {
    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    fs::write(dir.join("vmlinuz"), vec![0x4bu8; 5000]).unwrap();
    fs::write(dir.join("initrd"), b"070701 not really").unwrap();
    fs::write(dir.join("os-release"), "ID=test\n").unwrap();
    let uki = |stub: &str, output: &Path, sign: bool| {
        let mut command = builder();
        command
            .args(["uki", "--stub", stub, "--cmdline", "console=ttyS0 quiet"])
            .arg("--kernel")
            .arg(dir.join("vmlinuz"))
            .arg("--initrd")
            .arg(dir.join("initrd"))
            .arg("--os-release")
            .arg(dir.join("os-release"))
            .arg("-o")
            .arg(output);
        if sign {
            command
                .arg("--sign-key")
                .arg(dir.join("db.key"))
                .arg("--sign-cert")
                .arg(dir.join("db.crt"));
        }
        command.output().unwrap()
    };
    let junk = dir.join("junk");
    fs::write(&junk, b"not a PE file").unwrap();
    let result = uki(junk.to_str().unwrap(), &dir.join("x.efi"), false);
    assert_eq!(result.status.code(), Some(1), "{result:?}");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("builder: error:") && stderr.contains("not a PE image: no MZ header"),
        "{stderr}"
    );
    assert!(!dir.join("x.efi").exists());
    let half = builder()
        .args(["uki", "--kernel", "k", "--initrd", "i", "--cmdline", "c"])
        .args(["--sign-key", "k.pem", "-o", "x"])
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(2), "{half:?}");

    if !common::have_file(Path::new(STUB), "apt-get install systemd-boot-efi") {
        return;
    }
    let (a, b) = (dir.join("a.efi"), dir.join("b.efi"));
    for output in [&a, &b] {
        let result = uki(STUB, output, false);
        assert!(result.status.success(), "{result:?}");
    }
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap());

    let provision = "cargo xtask provision installs it";
    if !common::have_tool("openssl", provision) || !common::have_tool("sbsign", provision) {
        return;
    }
    let keys = std::process::Command::new("openssl")
        .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=cli test/", "-keyout"])
        .arg(dir.join("db.key"))
        .arg("-out")
        .arg(dir.join("db.crt"))
        .output()
        .unwrap();
    assert!(keys.status.success(), "openssl req: {keys:?}");
    let (c, d) = (dir.join("c.efi"), dir.join("d.efi"));
    for output in [&c, &d] {
        let result = uki(STUB, output, true);
        assert!(result.status.success(), "{result:?}");
    }
    let unsigned = fs::read(&a).unwrap();
    for signed in [&c, &d] {
        let signed = fs::read(signed).unwrap();
        assert!(signed.len() > unsigned.len());
        assert!(builder::uki::unsigned_part(&signed).unwrap() == unsigned);
    }
}

/// A CentOS Stream 9 kernel: erofs without compression, its config where the RPM layout keeps
/// it (`lib/modules/<kver>/config`). `image --kver` then makes an uncompressed image, the same
/// bytes as `--compression none`.
#[test]
fn a_centos9_like_kernel_gets_an_uncompressed_image() {
    if !have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kver = "5.14.0-600.el9.x86_64";
    let tree = work.path().join("tree");
    let modules = tree.join("lib/modules").join(kver);
    fs::create_dir_all(&modules).unwrap();
    fs::write(
        modules.join("config"),
        "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_XATTR=y\n# CONFIG_EROFS_FS_ZIP is not set\n",
    )
    .unwrap();
    let content = work.path().join("content");
    fs::create_dir_all(content.join("usr/bin")).unwrap();
    // Compressible, so a compressed image could not come out the same.
    fs::write(
        content.join("usr/bin/tool"),
        "initoverlayfs ".repeat(20_000),
    )
    .unwrap();
    let build = |name: &str, extra: &[&str]| -> Vec<u8> {
        let out = work.path().join(name);
        let output = builder()
            .arg("image")
            .arg("--source")
            .arg(&content)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        fs::read(&out).unwrap()
    };
    let for_centos = build(
        "centos.img",
        &["--kver", kver, "--kernel-root", tree.to_str().unwrap()],
    );
    let uncompressed = build("none.img", &["--compression", "none"]);
    let compressed = build("lz4hc.img", &["--compression", "lz4hc,11"]);
    assert_eq!(for_centos, uncompressed);
    assert!(compressed.len() < uncompressed.len());
}
