//! The QEMU command line of every machine × storage bus combination, as insta snapshots
//! (`tests/snapshots/argv__<board>-<bus>.snap`): a change to a device, a property or an option
//! shows up in review as a diff of the exact argv. A combination the board cannot host (a PCI
//! disk on a raspi) snapshots testvm's refusal instead.

use testvm::machine::{Accel, Board, Boot, Disk, DiskBus, GuestReboot, Io, Machine, shell};

/// Every bus, under the name cells use.
const BUSES: [(&str, DiskBus); 6] = [
    ("virtio-blk", DiskBus::VirtioBlk),
    ("virtio-scsi", DiskBus::VirtioScsi),
    (
        "nvme",
        DiskBus::Nvme {
            logical_block_size: 512,
        },
    ),
    (
        "nvme-4kn",
        DiskBus::Nvme {
            logical_block_size: 4096,
        },
    ),
    ("usb", DiskBus::Usb),
    ("sd", DiskBus::Sd),
];

fn machine(board: Board, bus: DiskBus) -> Machine {
    Machine {
        board,
        accel: Accel::Tcg,
        memory_mib: board.fixed_memory_mib().unwrap_or(1024),
        cpus: board.fixed_cpus().unwrap_or(1),
        dtb: board.needs_dtb().then(|| "/fixtures/board.dtb".into()),
        boot: Boot::Direct {
            kernel: "/fixtures/vmlinuz".into(),
            initrd: Some("/cell/mini-initramfs.img".into()),
            cmdline: format!("console={} panic=-1", board.console()),
        },
        disks: vec![Disk {
            path: "/cell/disk.img".into(),
            bus,
            serial: "boot0".into(),
            read_only: bus != DiskBus::Sd,
            throttle: None,
        }],
        hotplug_ports: 0,
        empty_cdroms: 0,
        on_reboot: GuestReboot::ExitQemu,
        icount: None,
    }
}

#[test]
fn every_machine_and_bus() {
    for board in [Board::Q35, Board::Virt, Board::Raspi3b, Board::Raspi4b] {
        for (name, bus) in BUSES {
            let rendered = match machine(board, bus).qemu_args(&Io::Interactive) {
                Ok(argv) => {
                    assert_eq!(argv[0], board.qemu_binary());
                    shell::join(&argv)
                }
                Err(refused) => {
                    // Only a board without PCI may refuse, and only a PCI controller.
                    assert!(
                        !board.has_pci() && bus != DiskBus::Sd,
                        "{board:?} {name}: {refused}"
                    );
                    format!("refused: {refused}")
                }
            };
            insta::assert_snapshot!(format!("{}-{name}", board.machine_type()), rendered);
        }
    }
}

/// A machine that boots again when its guest reboots (the dogfood cell: firmware, bootloader,
/// a read-write disk holding the ESP and the root): no `-no-reboot`, so a guest reboot goes
/// back through the firmware.
#[test]
fn firmware_machine_that_reboots() {
    let machine = Machine {
        on_reboot: GuestReboot::Restart,
        icount: None,
        ..firmware_machine("/cell/disk.img", None)
    };
    let argv = machine.qemu_args(&Io::Interactive).unwrap();
    assert!(!argv.iter().any(|a| a == "-no-reboot"));
    insta::assert_snapshot!("q35-uefi-reboots", shell::join(&argv));
}

/// The benchmark's slow storage: the device sits on a throttle filter node of its own group,
/// over the raw node; reads and writes share the budgets of bytes and of requests.
#[test]
fn throttled_disk() {
    let throttle = testvm::machine::Throttle {
        bytes_per_second: 25_000_000,
        requests_per_second: Some(1_500),
    };
    let machine = firmware_machine("/bench/disk.img", Some(throttle));
    let argv = machine.qemu_args(&Io::Interactive).unwrap();
    insta::assert_snapshot!("q35-uefi-throttled", shell::join(&argv));
}

/// Secure Boot: OVMF's Secure Boot build with an enrolled variable store, SMM on, the flash
/// writable from SMM only (the UKI cells' machine).
#[test]
fn secure_boot_machine() {
    let mut machine = firmware_machine("/cell/build/disk.img", None);
    machine.boot = Boot::Uefi {
        code: "/fixtures/OVMF_CODE_4M.secboot.fd".into(),
        vars: "/cell/build/efivars-enrolled.fd".into(),
        secure_boot: true,
    };
    let argv = machine.qemu_args(&Io::Interactive).unwrap();
    insta::assert_snapshot!("q35-uefi-secure-boot", shell::join(&argv));
}

/// q35 booting OVMF from one read-write virtio-blk disk, as the real chain's machines do.
fn firmware_machine(disk: &str, throttle: Option<testvm::machine::Throttle>) -> Machine {
    Machine {
        boot: Boot::Uefi {
            code: "/fixtures/OVMF_CODE_4M.fd".into(),
            vars: "/cell/build/efivars.fd".into(),
            secure_boot: false,
        },
        dtb: None,
        disks: vec![Disk {
            path: disk.into(),
            bus: DiskBus::VirtioBlk,
            serial: "boot0".into(),
            read_only: false,
            throttle,
        }],
        ..machine(Board::Q35, DiskBus::VirtioBlk)
    }
}
