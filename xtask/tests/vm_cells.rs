//! The VM cells of fixtures/cells.toml as tests: each boots a real kernel under QEMU through the
//! same code as `cargo xtask vm-test`. They need root (or sudo) to provision on a fresh machine;
//! `cargo xtask test` provisions and fetches first.

use xtask::vm_test::{Verdict, run_named_cell};

fn check_cell(name: &str) -> xtask::vm_test::CellResult {
    let result = run_named_cell(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    match &result.verdict {
        Verdict::Passed => {}
        other => panic!(
            "{name}: {other:?}\nartifacts: {}",
            result.artifacts.display()
        ),
    }
    assert!(
        result.milestones.iter().all(|m| m.guest_s.is_some()),
        "{name}: a milestone has no guest timestamp: {:?}",
        result.milestones
    );
    result
}

fn console_lines_containing(result: &xtask::vm_test::CellResult, needle: &str) -> usize {
    let console =
        std::fs::read_to_string(result.artifacts.join(testvm::run::artifact::CONSOLE_LOG)).unwrap();
    console.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox");
    assert_eq!(console_lines_containing(&result, "storage-init: FATAL"), 0);
    assert_eq!(
        console_lines_containing(&result, "storage-init: warning"),
        0,
        "a clean boot warns of nothing"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_1_busybox() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.1-busybox");
    assert_eq!(
        console_lines_containing(&result, "storage-init: warning"),
        0,
        "a clean boot warns of nothing"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_vfat_boot() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-vfat-boot");
    assert_eq!(
        console_lines_containing(&result, "storage-init: warning"),
        0,
        "a clean boot warns of nothing"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_ext4_image() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-ext4-image");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_partlabel() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-partlabel");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_label() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-label");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_partuuid() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-partuuid");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_device_path() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-device-path");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_hotplug() {
    check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-hotplug");
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_fault_wrong_uuid() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-fault-wrong-uuid");
    assert_eq!(
        console_lines_containing(&result, "storage-init: FATAL"),
        1,
        "exactly one FATAL line"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_fault_image_missing() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-fault-image-missing");
    assert_eq!(
        console_lines_containing(&result, "storage-init: FATAL"),
        1,
        "exactly one FATAL line"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_fault_image_corrupt() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-fault-image-corrupt");
    assert_eq!(
        console_lines_containing(&result, "storage-init: FATAL"),
        1,
        "exactly one FATAL line"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_fault_image_stale() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-fault-image-stale");
    assert_eq!(
        console_lines_containing(&result, "storage-init: FATAL"),
        1,
        "exactly one FATAL line"
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_fault_bad_config_halt() {
    // `halt` repeats the line every 10 s: two occurrences before QMP ends the VM.
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-fault-bad-config-halt");
    assert!(console_lines_containing(&result, "storage-init: FATAL") >= 2);
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_prepare_only() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-prepare-only");
    // Service mode makes no API mounts and does not switch root itself.
    for step in ["storage-init: mounted /proc", "storage-init: switched root"] {
        assert_eq!(console_lines_containing(&result, step), 0, "{step}");
    }
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_quiet() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-quiet");
    // `quiet` keeps the step lines off the console: only the content's replay of the log shows
    // them, once.
    assert_eq!(
        console_lines_containing(&result, "storage-init: mounted /proc"),
        1
    );
    assert_eq!(
        console_lines_containing(&result, "storage-init: exec /init; cpu user "),
        1
    );
}

#[test]
fn cell_x86_64_q35_virtio_blk_debian12_6_12_busybox_smp2() {
    let result = check_cell("x86_64-q35-virtio-blk-debian12-6.12-busybox-smp2");
    assert_eq!(
        console_lines_containing(&result, "storage-init: loaded module"),
        10
    );
}

/// The boot disk on each storage bus, with that bus's builder preset.
#[test]
fn cell_x86_64_q35_virtio_scsi_debian12_6_12_busybox() {
    check_cell("x86_64-q35-virtio-scsi-debian12-6.12-busybox");
}

#[test]
fn cell_x86_64_q35_nvme_debian12_6_12_busybox() {
    check_cell("x86_64-q35-nvme-debian12-6.12-busybox");
}

#[test]
fn cell_x86_64_q35_usb_debian12_6_12_busybox() {
    check_cell("x86_64-q35-usb-debian12-6.12-busybox");
}

#[test]
fn cell_x86_64_q35_sd_debian12_6_12_busybox() {
    check_cell("x86_64-q35-sd-debian12-6.12-busybox");
}

#[test]
fn cell_x86_64_q35_nvme_4kn_debian12_6_12_busybox() {
    check_cell("x86_64-q35-nvme-4kn-debian12-6.12-busybox");
}

#[test]
fn cell_aarch64_virt_virtio_blk_debian12_6_12_busybox() {
    check_cell("aarch64-virt-virtio-blk-debian12-6.12-busybox");
}

#[test]
fn cell_aarch64_virt_virtio_scsi_debian12_6_12_busybox() {
    check_cell("aarch64-virt-virtio-scsi-debian12-6.12-busybox");
}

#[test]
fn cell_aarch64_virt_nvme_debian12_6_12_busybox() {
    check_cell("aarch64-virt-nvme-debian12-6.12-busybox");
}

#[test]
fn cell_aarch64_virt_usb_debian12_6_12_busybox() {
    check_cell("aarch64-virt-usb-debian12-6.12-busybox");
}

#[test]
fn cell_aarch64_virt_sd_debian12_6_12_busybox() {
    check_cell("aarch64-virt-sd-debian12-6.12-busybox");
}
