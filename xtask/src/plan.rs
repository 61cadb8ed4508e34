//! A cell's plan: the machine QEMU runs and the milestones the harness waits for, from the
//! cell and the artefacts the build layer made. Pure: nothing here touches a file or a
//! process, so every cell's plan is snapshot-tested (`tests/cell_plans.rs`) without building
//! or booting anything, and a change to the matrix shows up as a reviewable diff. Every other
//! machine of the harness (the benchmark's chains, the LUKS/LVM helper VM) starts from
//! [`machine`] too. It needs nothing of the build layer (the artefacts come as data), so the
//! build layer's own VMs can use it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use testvm::machine::{Accel, Boot, Disk, GuestReboot, Machine};
use testvm::run::{BootSpec, End, Hotplug};

use crate::cells::{Bus, Cell, CellEnd, ConsoleCheck, Firmware, Substitutions};

/// Guest memory: enough for the kernel and a busybox overlay.
pub const MEMORY_MIB: u32 = 1024;
/// After the last milestone, how long the guest may take to power off.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a systemd machine may take to shut down after the power button, under TCG.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(90);
/// The shortest milestone timeout under KVM.
const KVM_TIMEOUT_FLOOR: Duration = Duration::from_secs(10);
/// The boot disk's serial number.
const BOOT_DISK_SERIAL: &str = "boot0";

/// What a cell boots from, as the build layer made it.
#[derive(Debug, Clone)]
pub struct CellArtefacts {
    /// `uname -r` of the cell's kernel.
    pub kernel_release: String,
    /// Whether that kernel mounts erofs straight from a file (`CONFIG_EROFS_FS_BACKED_BY_FILE`).
    pub erofs_file_backed: bool,
    /// The kernel and the initramfs QEMU loads itself (direct boot), or the bootloader loads
    /// from the ESP (UEFI).
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// The boot disk.
    pub disk: PathBuf,
    pub dtb: Option<PathBuf>,
    /// The firmware of a UEFI cell.
    pub uefi: Option<UefiArtefacts>,
    /// Console checks the kernel's modules call for (each bus driver loaded once, where the
    /// cell proves its drivers).
    pub driver_checks: Vec<ConsoleCheck>,
}

/// A UEFI cell's firmware: the unpacked firmware package and this boot's variable store.
#[derive(Debug, Clone)]
pub struct UefiArtefacts {
    pub firmware_root: PathBuf,
    pub vars: PathBuf,
}

/// What the run layer boots and the judge layer reads.
#[derive(Debug, Clone)]
pub struct CellPlan {
    pub machine: Machine,
    pub spec: BootSpec,
    /// Checks over the whole console after the boot.
    pub console_checks: Vec<ConsoleCheck>,
}

/// What a boot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Judged against the cell's milestones.
    Test,
    /// A person's console (`vm-test --shell`): storage-init's emergency action is a shell (the
    /// mini initramfs then carries one), and a disk the cell plugs in later is there from the
    /// start, since nobody drives the monitor.
    Shell,
}

/// The command-line word that makes storage-init's emergency action a shell.
pub const SHELL_EMERGENCY: &str = "initoverlayfs.emergency=shell";

/// The kernel command line of a cell's boot; `nonce` is the marker unique to it.
pub fn cmdline(cell: &Cell, nonce: &str, purpose: Purpose) -> String {
    let root_param = if cell.real_root {
        cell.root_storage.kernel_params()
    } else {
        String::new()
    };
    let shell = match purpose {
        Purpose::Test => "",
        Purpose::Shell => SHELL_EMERGENCY,
    };
    let words = [
        format!("console={}", cell.machine.board().console()),
        "panic=-1".to_owned(),
        format!("{}={nonce}", crate::cells::MARKER_PARAM),
        root_param,
        cell.cmdline.clone(),
        shell.to_owned(),
    ];
    words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plan of one boot of `cell` under `accel`.
pub fn plan(
    cell: &Cell,
    artefacts: &CellArtefacts,
    accel: Accel,
    nonce: &str,
    purpose: Purpose,
) -> Result<CellPlan> {
    let board = cell.machine.board();
    let boot_disk = Disk {
        path: artefacts.disk.clone(),
        bus: cell.bus.disk_bus(),
        serial: BOOT_DISK_SERIAL.to_owned(),
        // Read-only where the guest has no business writing (storage-init mounts /boot
        // read-only); a real root writes to its disk, and QEMU refuses a read-only SD card.
        // The disk is rebuilt for every run either way.
        read_only: cell.bus != Bus::Sd && !cell.real_root,
        throttle: None,
    };
    let boot = match (cell.firmware, &artefacts.uefi) {
        (Firmware::Direct, _) => Boot::Direct {
            kernel: artefacts.vmlinuz.clone(),
            initrd: Some(artefacts.initrd.clone()),
            cmdline: cmdline(cell, nonce, purpose),
        },
        (Firmware::Uefi, Some(uefi)) => Boot::Uefi {
            code: uefi.firmware_root.join(firmware_code(cell)?),
            vars: uefi.vars.clone(),
            secure_boot: cell.secure_boot,
        },
        (Firmware::Uefi, None) => {
            anyhow::bail!("cell {} boots through UEFI but has no firmware", cell.name)
        }
    };
    let hotplugged = cell.hotplug.is_some() && purpose == Purpose::Test;
    let disks = if hotplugged {
        Vec::new()
    } else {
        vec![boot_disk.clone()]
    };
    let machine = Machine {
        cpus: board.fixed_cpus().unwrap_or(cell.cpus),
        dtb: artefacts.dtb.clone(),
        hotplug_ports: u32::from(hotplugged),
        empty_cdroms: u32::from(cell.empty_cdrom),
        on_reboot: if cell.flow.reboots() || cell.guest_reboots {
            GuestReboot::Restart
        } else {
            GuestReboot::ExitQemu
        },
        ..machine(board, accel, MEMORY_MIB, boot, disks)
    };
    let substitutions = Substitutions::new(
        nonce,
        &artefacts.kernel_release,
        artefacts.erofs_file_backed,
    );
    let mut milestones = cell.milestones(&substitutions)?;
    for milestone in &mut milestones {
        milestone.timeout = scaled_timeout(milestone.timeout, accel);
    }
    let spec = BootSpec {
        milestones,
        fatal: cell.fatal()?,
        end: match cell.end {
            CellEnd::PowerOff => End::GuestPowersOff {
                timeout: POWER_OFF_TIMEOUT,
            },
            CellEnd::PowerButton => End::PowerButton {
                timeout: SHUTDOWN_TIMEOUT,
            },
            CellEnd::Quit => End::Quit,
        },
        hotplug: cell
            .hotplug
            .iter()
            .filter(|_| purpose == Purpose::Test)
            .map(|h| Hotplug {
                after: h.after.clone(),
                delay: Duration::from_secs(h.delay),
                disk: boot_disk.clone(),
                port: 0,
            })
            .collect(),
        read_sampling: None,
    };
    let mut console_checks = cell.console.clone();
    if cell.prove_drivers {
        console_checks.extend(artefacts.driver_checks.iter().cloned());
    }
    Ok(CellPlan {
        machine,
        spec,
        console_checks,
    })
}

/// The plan as text, for a person and for snapshots: QEMU's argv one argument a line (with
/// the console and monitor on `io`), then the milestones, the fatal patterns, the end, the
/// hotplugged disks and the console checks.
pub fn render(plan: &CellPlan, io: &testvm::machine::Io) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::from("qemu:\n");
    let argv = plan.machine.qemu_args(io)?;
    let mut args = argv.iter().peekable();
    while let Some(arg) = args.next() {
        // An option and its value on one line.
        match args.next_if(|value| arg.starts_with('-') && !value.starts_with('-')) {
            Some(value) => writeln!(out, "  {arg} {value}"),
            None => writeln!(out, "  {arg}"),
        }
        .expect("writing to a String");
    }
    out.push_str("milestones:\n");
    for m in &plan.spec.milestones {
        let _ = write!(
            out,
            "  {} /{}/ within {} s",
            m.name,
            m.pattern,
            m.timeout.as_secs()
        );
        if let Some(text) = &m.send {
            let _ = write!(out, ", then type {text:?}");
        }
        out.push('\n');
    }
    out.push_str("fatal:\n");
    for fatal in &plan.spec.fatal {
        let _ = writeln!(out, "  /{}/", fatal.pattern);
    }
    let _ = writeln!(out, "end: {:?}", plan.spec.end);
    for h in &plan.spec.hotplug {
        let _ = writeln!(
            out,
            "hotplug: {} {} s after {}",
            h.disk.serial,
            h.delay.as_secs(),
            h.after
        );
    }
    if !plan.console_checks.is_empty() {
        out.push_str("console checks:\n");
        for check in &plan.console_checks {
            let times = match (check.count, check.at_least) {
                (Some(n), _) => format!("exactly {n}"),
                (None, Some(n)) => format!("at least {n}"),
                (None, None) => "any number of".to_owned(),
            };
            let _ = writeln!(out, "  {times} lines with {:?}", check.text);
        }
    }
    Ok(out)
}

/// The machine every boot of the harness starts from: `board` under `accel` booting `boot`
/// from `disks`, with `memory_mib` of RAM and one vCPU unless the board fixes its own (a
/// board that models real hardware takes only its own), no device tree, CD-ROM or hotplug
/// port, the host's clock, and QEMU ending when the guest reboots. Callers change what they
/// need with struct update syntax.
pub fn machine(
    board: testvm::machine::Board,
    accel: Accel,
    memory_mib: u32,
    boot: Boot,
    disks: Vec<Disk>,
) -> Machine {
    Machine {
        board,
        accel,
        memory_mib: board.fixed_memory_mib().unwrap_or(memory_mib),
        cpus: board.fixed_cpus().unwrap_or(1),
        boot,
        dtb: None,
        disks,
        hotplug_ports: 0,
        empty_cdroms: 0,
        icount: None,
        on_reboot: GuestReboot::ExitQemu,
    }
}

/// The firmware code a UEFI cell boots, in its firmware package: the Secure Boot build where
/// the cell enrolls keys.
pub fn firmware_code(cell: &Cell) -> Result<&'static str> {
    let parts = cell
        .machine
        .uefi()
        .with_context(|| format!("{} has no UEFI firmware", cell.machine.name()))?;
    if cell.secure_boot {
        parts
            .secure_boot_code
            .with_context(|| format!("{} has no Secure Boot firmware", cell.machine.name()))
    } else {
        Ok(parts.code)
    }
}

/// A milestone's timeout under `accel`. cells.toml sizes timeouts for TCG on 2 cores; under
/// KVM a guest is several times faster, so a hung boot is reported after a third of the time,
/// but never under [`KVM_TIMEOUT_FLOOR`] (a busy CI runner must not turn slowness into a
/// failure).
pub fn scaled_timeout(tcg: Duration, accel: Accel) -> Duration {
    match accel {
        Accel::Tcg => tcg,
        Accel::Kvm => (tcg / 3).max(KVM_TIMEOUT_FLOOR).min(tcg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A board that models real hardware keeps its own memory and CPU count; others take
    /// what the caller asks and one vCPU.
    #[test]
    fn the_base_machine_respects_fixed_boards() {
        use testvm::machine::Board;
        let boot = || Boot::Direct {
            kernel: "/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        };
        let q35 = machine(Board::Q35, Accel::Tcg, 768, boot(), Vec::new());
        assert_eq!((q35.memory_mib, q35.cpus), (768, 1));
        assert_eq!(q35.on_reboot, GuestReboot::ExitQemu);
        for board in [Board::Raspi3b, Board::Raspi4b] {
            let raspi = machine(board, Accel::Tcg, 768, boot(), Vec::new());
            assert_eq!(Some(raspi.memory_mib), board.fixed_memory_mib());
            assert_eq!(Some(raspi.cpus), board.fixed_cpus());
        }
    }

    #[test]
    fn timeouts_scale_with_the_accelerator() {
        let s = Duration::from_secs;
        assert_eq!(scaled_timeout(s(60), Accel::Tcg), s(60));
        assert_eq!(scaled_timeout(s(60), Accel::Kvm), s(20));
        assert_eq!(scaled_timeout(s(20), Accel::Kvm), s(10));
        assert_eq!(scaled_timeout(s(5), Accel::Kvm), s(5));
    }
}
