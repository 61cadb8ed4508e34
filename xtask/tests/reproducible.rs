//! Same inputs, same bytes: the boot artefacts of a cell built twice from the real fixtures
//! (in different directories, with the content's file times disturbed) are byte-identical.

use std::path::Path;

use xshell::Shell;
use xtask::fixtures::{self, sha256_file};
use xtask::images;
use xtask::vm_test::project_root;

#[test]
fn boot_artefacts_are_byte_identical_across_builds() {
    let root = project_root();
    let sh = Shell::new().unwrap();
    xtask::provision::ensure(&sh).unwrap();
    let kernel =
        fixtures::fetch_kernel(&sh, &fixtures::read_kernels(&root).unwrap().kernel[0]).unwrap();
    let busybox_pin = fixtures::read_packages(&root).unwrap().package.remove(0);
    let busybox = fixtures::fetch_deb(&sh, &busybox_pin, false).unwrap();
    let storage_init = xtask::static_build::build_preferred(&sh, &root).unwrap().0;

    let base = root.join("target/reproducible");
    let build = |name: &str| {
        let work = base.join(name);
        let built = images::build_busybox_cell(
            &storage_init,
            &kernel,
            &busybox,
            images::Layout::default(),
            None,
            None,
            &work,
        )
        .unwrap();
        (built, work)
    };
    let (first, _) = build("a");
    // Later mtimes on the content must not leak into the images.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (second, _) = build("b");
    let check = |a: &Path, b: &Path| {
        assert_eq!(
            sha256_file(a).unwrap(),
            sha256_file(b).unwrap(),
            "{} and {} differ",
            a.display(),
            b.display()
        );
    };
    check(&first.mini_initramfs, &second.mini_initramfs);
    check(&first.image, &second.image);
    check(&first.disk, &second.disk);
}
