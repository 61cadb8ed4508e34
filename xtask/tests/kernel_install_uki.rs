//! kernel-install's `layout=uki` with builder's plugins, for real: systemd 254's kernel-install,
//! 60-ukify and 90-uki-copy bake a signed UKI that carries the mini initramfs, with the image on
//! `$BOOT`; `remove` takes both away.

use std::path::Path;

use xshell::{Shell, cmd};
use xtask::kernel_install::{self, KernelInstall, UkiKernel};
use xtask::provision::{find_in_path, skip_or_fail};
use xtask::vm_test::project_root;

const KERNEL: &str = "debian12-6.12-amd64";
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
const BOOTFS: &str = "UUID=1234-ABCD";

/// A classic initramfs (uncompressed newc) of a few files, as an initrd generator makes one.
fn classic_initramfs(path: &Path) {
    let mut archive = builder::cpio::Archive::new();
    archive.add_dir("/usr", 0o755).unwrap();
    archive.add_dir("/usr/lib", 0o755).unwrap();
    archive
        .add_file("/init", 0o755, b"#!/bin/sh\necho second stage\n".to_vec())
        .unwrap();
    archive
        .add_file("/usr/lib/os-release", 0o644, b"ID=test\n".to_vec())
        .unwrap();
    std::fs::write(path, archive.to_bytes(0).unwrap()).unwrap();
}

/// `section` of the PE image `image`, as objcopy extracts it.
fn section(image: &Path, section: &str, out: &Path) -> Vec<u8> {
    let sh = Shell::new().unwrap();
    let only = format!("--only-section={section}");
    cmd!(sh, "objcopy -O binary {only} {image} {out}")
        .quiet()
        .run()
        .unwrap();
    std::fs::read(out).unwrap()
}

#[test]
fn a_signed_uki_carries_the_mini_initramfs_and_remove_takes_it_away() {
    if !rustix::process::geteuid().is_root() {
        skip_or_fail("kernel-install's $BOOT is a bind mount in a mount namespace (run as root)");
        return;
    }
    for (tool, package) in [
        ("unshare", "util-linux"),
        ("sbsign", "sbsigntool"),
        ("sbverify", "sbsigntool"),
        ("objcopy", "binutils"),
        ("openssl", "openssl"),
    ] {
        if find_in_path(tool).is_none() {
            skip_or_fail(&format!(
                "{tool} is missing: install {package} (cargo xtask provision does)"
            ));
            return;
        }
    }
    if !Path::new("/usr/lib/python3/dist-packages/pefile.py").exists() {
        skip_or_fail("ukify needs python3-pefile (cargo xtask provision installs it)");
        return;
    }
    let project = project_root();
    let sh = Shell::new().unwrap();
    let ki = KernelInstall::fetch(&sh, &project).unwrap();
    let kernel = xtask::fixtures::fetch_kernel_by_id(&sh, &project, KERNEL).unwrap();
    let (storage_init, _) = xtask::static_build::build_preferred(&sh, &project).unwrap();
    let builder = xtask::dogfood::builder_binary(&sh, &project).unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = xtask::secure_boot::generate_keys(&sh, &work.path().join("keys")).unwrap();
    let classic = work.path().join("classic.img");
    classic_initramfs(&classic);
    let config = kernel
        .modules_root()
        .join(format!("boot/config-{}", kernel.release));
    let uki_kernel = UkiKernel {
        release: &kernel.release,
        vmlinuz: &kernel.vmlinuz,
        modules_root: kernel.modules_root(),
        config: &config,
        classic_initrd: &classic,
    };
    let tree = work.path().join("tree");
    kernel_install::make_tree(
        &tree,
        &uki_kernel,
        &storage_init,
        &builder,
        BOOTFS,
        CMDLINE,
        Some(&keys),
    )
    .unwrap();

    let (uki, output) = kernel_install::add(&sh, &ki, &tree, &uki_kernel).unwrap();
    assert!(
        output.contains("59-initoverlayfs.install succeeded"),
        "{output}"
    );
    // Signed with the key: what Secure Boot firmware with its certificate in db accepts.
    let cert = &keys.cert;
    cmd!(sh, "sbverify --cert {cert} {uki}")
        .quiet()
        .run()
        .unwrap();
    let cmdline = section(&uki, ".cmdline", &work.path().join("cmdline"));
    assert_eq!(
        String::from_utf8_lossy(&cmdline).trim_matches(['\0', ' ', '\n']),
        CMDLINE
    );
    // The UKI's initramfs is the mini initramfs, naming the image kernel-install's plugin put
    // on $BOOT, by path in the boot filesystem and by UUID.
    let initrd = work.path().join("initrd");
    section(&uki, ".initrd", &initrd);
    let mini = builder::image::read_initramfs(&initrd).unwrap();
    let entries = mini.final_entries();
    let conf = entries
        .iter()
        .find(|e| e.name == "etc/initoverlayfs.conf")
        .expect("the UKI's initramfs is a mini initramfs");
    let (conf, _) =
        storage_init::config::parse_config(&String::from_utf8_lossy(&conf.data)).unwrap();
    let image = kernel_install::image_path(&tree, &kernel.release);
    let uuid = storage_init::probe::probe_file(&image)
        .unwrap()
        .expect("an erofs image")
        .uuid;
    assert_eq!(conf.image_uuid.as_deref(), Some(uuid.as_str()));
    assert_eq!(
        conf.fs.as_deref(),
        Some(
            format!(
                "{}/{}/initoverlayfs.img",
                kernel_install::ENTRY_TOKEN,
                kernel.release
            )
            .as_str()
        )
    );
    assert_eq!(conf.bootfstype.as_deref(), Some("vfat"));
    assert!(
        entries.iter().any(|e| e.name == "init"),
        "storage-init as /init"
    );
    // The image holds the classic initramfs's content (listed through a read-only mount: the
    // test runs as root).
    let (_, listing) = builder::listing::list_path(&image).unwrap();
    assert!(listing.contains("usr/lib/os-release"), "{listing}");

    let output = kernel_install::remove(&sh, &ki, &tree, &kernel.release).unwrap();
    assert!(!uki.exists(), "{output}");
    assert!(!image.exists(), "{output}");
}
