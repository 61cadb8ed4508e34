//! The round trip on a real dracut initramfs (made by `cargo xtask test` in a Debian tree built
//! with mmdebstrap, named by `BUILDER_REAL_DRACUT_INITRAMFS`): the image builder makes from it
//! passes `fsck.erofs` and, mounted, lists the same paths, types, modes, owners and contents as
//! the archive itself.

mod common;

use common::builder;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn dracut_initramfs_round_trip() {
    let Some(initramfs) = common::provided("BUILDER_REAL_DRACUT_INITRAMFS").map(PathBuf::from)
    else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("initoverlayfs.img");
    let started = Instant::now();
    let stdout = run(builder()
        .arg("image")
        .arg("--initramfs")
        .arg(&initramfs)
        .args(["--compression", "lz4hc,11", "-o"])
        .arg(&image));
    let took = started.elapsed();
    assert!(stdout.contains("segment at byte 0"), "{stdout}");
    let fsck = Command::new("fsck.erofs").arg(&image).output().unwrap();
    assert!(fsck.status.success(), "fsck.erofs: {fsck:?}");
    println!(
        "dracut initramfs {} bytes -> image {} bytes (lz4hc,11) in {:.1} s",
        std::fs::metadata(&initramfs).unwrap().len(),
        std::fs::metadata(&image).unwrap().len(),
        took.as_secs_f64()
    );
    let archive = run(builder().arg("list").arg(&initramfs));
    assert!(archive.contains("/usr/lib/systemd/systemd"), "{archive}");
    if !common::have_root("listing the image (mounting it)") {
        return;
    }
    let mounted = run(builder().arg("list").arg(&image));
    if archive != mounted {
        let differing: Vec<_> = archive
            .lines()
            .zip(mounted.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .collect();
        panic!(
            "the image lists differently ({} vs {} lines): {differing:#?}",
            archive.lines().count(),
            mounted.lines().count()
        );
    }
}
