//! Same inputs, same bytes: the image and the mini initramfs built by the `builder` binary in
//! two unrelated directories, from trees created in opposite orders with different timestamps,
//! are byte-identical. And the listing of an image of a fixed tree, as a snapshot.

mod common;

use common::{builder, have_mkfs};

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// One step of making a tree: a path and what goes there.
enum Node {
    Dir(&'static str),
    File(&'static str, &'static [u8], u32),
    Link(&'static str, &'static str),
}

/// Second-stage content: a little systemd-shaped tree.
const CONTENT: &[Node] = &[
    Node::Dir("etc"),
    Node::Dir("usr"),
    Node::Dir("usr/bin"),
    Node::Dir("usr/lib"),
    Node::Dir("usr/lib/systemd"),
    Node::File("etc/initrd-release", b"NAME=test\n", 0o644),
    Node::File("usr/lib/systemd/systemd", b"\x7fELF systemd", 0o755),
    Node::File("usr/bin/sh", b"\x7fELF sh", 0o755),
    Node::Link("init", "usr/lib/systemd/systemd"),
    Node::Link("bin", "usr/bin"),
];

/// A kernel tree: modules, their index, its config.
const KERNEL: &[Node] = &[
    Node::Dir("boot"),
    Node::Dir("lib"),
    Node::Dir("lib/modules"),
    Node::Dir("lib/modules/6.0.0"),
    Node::Dir("lib/modules/6.0.0/kernel"),
    Node::File(
        "boot/config-6.0.0",
        b"CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_RD_ZSTD=y\nCONFIG_RD_GZIP=y\n",
        0o644,
    ),
    Node::File("lib/modules/6.0.0/kernel/ext4.ko", b"\x7fELF ext4", 0o644),
    Node::File("lib/modules/6.0.0/kernel/erofs.ko", b"\x7fELF erofs", 0o644),
    Node::File("lib/modules/6.0.0/kernel/overlay.ko", b"\x7fELF overlay", 0o644),
    Node::File(
        "lib/modules/6.0.0/kernel/virtio_blk.ko",
        b"\x7fELF virtio_blk",
        0o644,
    ),
    Node::File(
        "lib/modules/6.0.0/modules.dep",
        b"kernel/ext4.ko:\nkernel/erofs.ko:\nkernel/overlay.ko:\nkernel/virtio_blk.ko:\n",
        0o644,
    ),
    Node::File(
        "lib/modules/6.0.0/modules.alias",
        b"alias virtio:d00000002v* virtio_blk\n",
        0o644,
    ),
    Node::File("lib/modules/6.0.0/modules.softdep", b"", 0o644),
    Node::File("lib/modules/6.0.0/modules.builtin", b"", 0o644),
];

/// Makes `nodes` under `root`, parents first; `reverse` makes the siblings in the opposite
/// order, so directory entries are created (and listed by readdir) differently. Every mtime is
/// `mtime`.
fn make_tree(root: &Path, nodes: &[Node], reverse: bool, mtime: u64) {
    let mut order: Vec<&Node> = nodes.iter().collect();
    if reverse {
        // Directories stay parents-first; everything else is made in reverse.
        order.sort_by_key(|n| !matches!(n, Node::Dir(_)));
        let split = order.iter().position(|n| !matches!(n, Node::Dir(_)));
        if let Some(split) = split {
            order[split..].reverse();
        }
    }
    for node in order {
        match node {
            Node::Dir(path) => fs::create_dir_all(root.join(path)).unwrap(),
            Node::File(path, bytes, mode) => {
                fs::write(root.join(path), bytes).unwrap();
                fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Link(path, target) => symlink(target, root.join(path)).unwrap(),
        }
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    for node in nodes {
        if let Node::Dir(path) | Node::File(path, _, _) = node {
            let file = fs::File::open(root.join(path)).unwrap();
            file.set_times(fs::FileTimes::new().set_modified(time))
                .unwrap();
        }
    }
}

/// Builds the image and the mini initramfs in `work`; returns their paths.
fn build_all(work: &Path, reverse: bool, mtime: u64) -> (PathBuf, PathBuf) {
    let content = work.join("content");
    let kernel = work.join("kernel");
    make_tree(&content, CONTENT, reverse, mtime);
    make_tree(&kernel, KERNEL, reverse, mtime);
    let storage_init = work.join("storage-init");
    fs::write(&storage_init, b"\x7fELF storage-init").unwrap();
    let run = |command: &mut Command| {
        command.env("SOURCE_DATE_EPOCH", "1700000000");
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    run(builder()
        .current_dir(work)
        .arg("image")
        .arg("--source")
        .arg(&content)
        .args(["--kver", "6.0.0", "--kernel-root"])
        .arg(&kernel));
    let image = work.join("initoverlayfs-6.0.0.img");
    let initramfs = work.join("initramfs-6.0.0.img");
    run(builder()
        .arg("initramfs")
        .arg("--storage-init")
        .arg(&storage_init)
        .arg("--kernel-root")
        .arg(&kernel)
        .args(["--kver", "6.0.0", "--preset", "virtio"])
        .args(["--bootfs", "LABEL=boot", "--bootfstype", "ext4", "--image"])
        .arg(&image)
        .arg("-o")
        .arg(&initramfs));
    (image, initramfs)
}

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn two_builds_in_unrelated_directories_are_identical() {
    if !have_mkfs() {
        return;
    }
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (image_a, initramfs_a) = build_all(first.path(), false, 1_000_000);
    let (image_b, initramfs_b) = build_all(second.path(), true, 2_000_000_000);
    assert_eq!(digest(&image_a), digest(&image_b), "erofs images differ");
    assert_eq!(
        digest(&initramfs_a),
        digest(&initramfs_b),
        "mini initramfs files differ"
    );
    // The kernel unpacks zstd: auto chose it.
    assert_eq!(
        &fs::read(&initramfs_a).unwrap()[..4],
        [0x28, 0xb5, 0x2f, 0xfd]
    );
}

/// The image of the content tree, read back through fsck.erofs: every path, mode, owner and
/// content hash.
#[test]
fn image_listing() {
    if !have_mkfs() {
        return;
    }
    if !common::have_root("listing an erofs image") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (image, _) = build_all(work.path(), false, 0);
    let output = builder().arg("list").arg(&image).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    insta::assert_snapshot!(String::from_utf8(output.stdout).unwrap());
}
