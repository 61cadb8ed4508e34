//! A machine its board cannot host: refused before any argv is rendered.

use super::{Board, DiskBus};

/// Why a [`super::Machine`] cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// `-icount` on an accelerator that does not count instructions.
    #[error(
        "instruction counting (-icount) needs TCG: KVM runs the guest's instructions on the host's CPU"
    )]
    IcountNeedsTcg,
    /// A shift QEMU refuses.
    #[error("-icount shift={shift}: QEMU takes 0 to 10 (2^shift ns per instruction)")]
    IcountShift { shift: u8 },
    /// A disk whose controller is a PCI device, on a board without PCI.
    #[error(
        "{board} has no PCI bus for the controller of a {bus:?} disk (its only storage is its own SD slot)"
    )]
    NoPciBus {
        /// The board.
        board: Board,
        /// The disk's bus.
        bus: DiskBus,
    },
    /// More SD cards than the board has slots.
    #[error("{board} has one SD slot, not {cards}")]
    SdSlot {
        /// The board.
        board: Board,
        /// The SD cards asked for.
        cards: usize,
    },
    /// KVM on a board that runs under TCG only.
    #[error("{board} runs under TCG only here: it builds its SoC's own CPU model, not `-cpu host`")]
    NoKvm {
        /// The board.
        board: Board,
    },
    /// A RAM size the board refuses.
    #[error(
        "{board} takes exactly {required} MiB of RAM (QEMU refuses any other size), not {given}"
    )]
    Memory {
        /// The board.
        board: Board,
        /// The board's only size.
        required: u32,
        /// What the machine asked for.
        given: u32,
    },
    /// A CPU count the board refuses.
    #[error("{board} has exactly {required} CPUs (QEMU refuses any other count), not {given}")]
    Cpus {
        /// The board.
        board: Board,
        /// The board's only count.
        required: u32,
        /// What the machine asked for.
        given: u32,
    },
    /// No device tree on a board whose kernel needs one from the caller.
    #[error(
        "{board} needs a device tree (-dtb): QEMU makes none for it; use the kernel package's own"
    )]
    DtbMissing {
        /// The board.
        board: Board,
    },
    /// A device tree on a board that boots from ACPI.
    #[error("{board} takes no device tree (-dtb): it describes itself with ACPI")]
    DtbUnsupported {
        /// The board.
        board: Board,
    },
    /// Firmware boot on a board without UEFI firmware.
    #[error("{board} has no UEFI firmware in QEMU: boot it directly (-kernel, -dtb)")]
    NoUefi {
        /// The board.
        board: Board,
    },
    /// Secure Boot on a board whose firmware cannot enforce it here.
    #[error(
        "{board} cannot boot with Secure Boot here: QEMU guards the variable store with SMM on q35 only"
    )]
    NoSecureBoot {
        /// The board.
        board: Board,
    },
    /// A device tree beside firmware, which gives the kernel its own.
    #[error(
        "{board} boots through UEFI firmware here, which hands the kernel its own device tree: drop -dtb"
    )]
    DtbWithFirmware {
        /// The board.
        board: Board,
    },
    /// Hotplug root ports on a board without PCIe.
    #[error("{board} has no PCIe for hotplug root ports")]
    NoHotplug {
        /// The board.
        board: Board,
    },
    /// CD-ROM drives on a board without the AHCI controller they hang off.
    #[error("{board} has no built-in AHCI controller for CD-ROM drives (only q35 has)")]
    NoCdrom {
        /// The board.
        board: Board,
    },
}
