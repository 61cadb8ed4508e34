//! Every cell's plan as a snapshot: the QEMU command line and the milestones each cell of
//! fixtures/cells.toml boots with, so a change to the matrix (a cell added, a timeout or a
//! pattern changed, a board's argv) is a reviewable diff in `tests/snapshots/`. Nothing is
//! built or booted: the artefacts are placeholder paths, the kernel is taken to mount erofs
//! from a file (6.12 and later), and the driver checks, which come from the kernel's modules,
//! are left out. `cargo insta review` accepts a change.

use std::path::PathBuf;

use testvm::machine::{Accel, Io};
use xtask::cells::{Firmware, read_cells};
use xtask::plan::{CellArtefacts, Purpose, UefiArtefacts, plan, render};

/// A fixed marker, where a run draws a fresh one per boot.
const NONCE: &str = "n0nce";

fn artefacts(cell: &xtask::cells::Cell) -> CellArtefacts {
    let kernel = PathBuf::from(format!("/cache/{}", cell.kernel));
    let build = PathBuf::from("/artefacts/build");
    CellArtefacts {
        kernel_release: format!("{}-release", cell.kernel),
        erofs_file_backed: true,
        vmlinuz: kernel.join("vmlinuz"),
        initrd: build.join("initrd.img"),
        disk: build.join("disk.img"),
        dtb: cell.machine.dtb().map(|name| kernel.join(name)),
        uefi: (cell.firmware == Firmware::Uefi).then(|| UefiArtefacts {
            firmware_root: PathBuf::from("/cache/firmware"),
            vars: build.join("efivars.fd"),
        }),
        driver_checks: Vec::new(),
    }
}

#[test]
fn every_cell_has_its_plan_snapshot() {
    let root = xtask::vm_test::project_root();
    let cells = read_cells(&root).unwrap();
    assert!(cells.len() > 100, "the matrix has {} cells", cells.len());
    let io = Io::Sockets {
        serial: PathBuf::from("/artefacts/serial.sock"),
        console_log: PathBuf::from("/artefacts/console.log"),
        qmp: PathBuf::from("/artefacts/qmp.sock"),
    };
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for cell in &cells {
            let plan = plan(cell, &artefacts(cell), Accel::Tcg, NONCE, Purpose::Test)
                .unwrap_or_else(|e| panic!("cell {}: {e:#}", cell.name));
            let text = render(&plan, &io).unwrap_or_else(|e| panic!("cell {}: {e:#}", cell.name));
            insta::assert_snapshot!(cell.name.clone(), text);
        }
    });
}

/// The plan follows the accelerator: KVM shortens the milestones' timeouts and changes the
/// argv, so the snapshots (all TCG) are not the only view of a plan.
#[test]
fn kvm_plans_differ_from_tcg_plans_only_in_accel_and_timeouts() {
    let root = xtask::vm_test::project_root();
    let cells = read_cells(&root).unwrap();
    let cell = cells
        .iter()
        .find(|c| c.machine.board().kvm_capable() && c.firmware == Firmware::Direct)
        .expect("a KVM-capable direct-boot cell");
    let tcg = plan(cell, &artefacts(cell), Accel::Tcg, NONCE, Purpose::Test).unwrap();
    let kvm = plan(cell, &artefacts(cell), Accel::Kvm, NONCE, Purpose::Test).unwrap();
    assert_eq!(tcg.spec.milestones.len(), kvm.spec.milestones.len());
    assert!(
        tcg.spec
            .milestones
            .iter()
            .zip(&kvm.spec.milestones)
            .all(|(t, k)| k.timeout <= t.timeout && t.pattern.as_str() == k.pattern.as_str())
    );
    assert_ne!(
        tcg.machine.qemu_args(&Io::Interactive).unwrap(),
        kvm.machine.qemu_args(&Io::Interactive).unwrap()
    );
}

/// A shell boot is the test boot with storage-init's emergency action a shell, every disk
/// present from the start, and no disk left to plug in.
#[test]
fn a_shell_plan_is_the_test_plan_with_a_shell() {
    let root = xtask::vm_test::project_root();
    let cells = read_cells(&root).unwrap();
    for cell in &cells {
        let test = plan(cell, &artefacts(cell), Accel::Tcg, NONCE, Purpose::Test).unwrap();
        let shell = plan(cell, &artefacts(cell), Accel::Tcg, NONCE, Purpose::Shell).unwrap();
        assert!(shell.spec.hotplug.is_empty(), "{}", cell.name);
        assert_eq!(shell.machine.disks.len(), 1, "{}", cell.name);
        if let testvm::machine::Boot::Direct { cmdline, .. } = &shell.machine.boot {
            assert!(
                cmdline.ends_with(xtask::plan::SHELL_EMERGENCY),
                "{}: {cmdline}",
                cell.name
            );
        }
        if cell.hotplug.is_none() {
            assert_eq!(
                test.machine.qemu_args(&Io::Interactive).unwrap().len(),
                shell.machine.qemu_args(&Io::Interactive).unwrap().len(),
                "{}",
                cell.name
            );
        }
    }
}
