//! The emulated boards: QEMU binary, machine type, CPU and RAM rules, console, and which
//! buses and extras each one can host.

use std::fmt;

use super::fdt::DropProperties;

/// The emulated board (and so the QEMU binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// x86_64 PC with the Q35 chipset (PCIe), the one modern distributions target.
    Q35,
    /// QEMU's generic aarch64 board (`virt`): PCIe, a PL011 UART, PSCI power-off.
    Virt,
    /// Raspberry Pi 3 Model B (BCM2837: four Cortex-A53, 1 GiB): no PCI, the SD card in the
    /// SoC's slot, a PL011 UART, no power-off (the guest halts; end it over QMP).
    Raspi3b,
    /// Raspberry Pi 4 Model B (BCM2711: four Cortex-A72, 2 GiB as QEMU models it): no usable
    /// PCIe, the SD card in the EMMC2 slot, no power-off.
    Raspi4b,
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.machine_type())
    }
}

impl Board {
    /// The QEMU system emulator for this board.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Board::Q35 => "qemu-system-x86_64",
            Board::Virt | Board::Raspi3b | Board::Raspi4b => "qemu-system-aarch64",
        }
    }

    pub fn machine_type(self) -> &'static str {
        match self {
            Board::Q35 => "q35",
            Board::Virt => "virt",
            Board::Raspi3b => "raspi3b",
            Board::Raspi4b => "raspi4b",
        }
    }

    /// The CPU model under TCG: every feature QEMU models on x86_64; on `virt` a named core,
    /// which Debian's kernel boots (BRIEF §6). None where the board fixes its SoC's core:
    /// the raspi boards create their own Cortex-A53/A72 whatever `-cpu` says.
    pub(super) fn tcg_cpu(self) -> Option<&'static str> {
        match self {
            Board::Q35 => Some("max"),
            Board::Virt => Some("cortex-a72"),
            Board::Raspi3b | Board::Raspi4b => None,
        }
    }

    /// Whether this crate runs the board under KVM, which it renders as `-cpu host`: the raspi
    /// boards build their SoC's own CPU model (Cortex-A53/A72) whatever `-cpu` says, so they
    /// run under TCG only (an Arm host might run them under KVM; nothing here tries).
    pub fn kvm_capable(self) -> bool {
        matches!(self, Board::Q35 | Board::Virt)
    }

    /// The guest architecture, as Rust (`std::env::consts::ARCH`) and QEMU name it.
    pub fn arch(self) -> &'static str {
        match self {
            Board::Q35 => "x86_64",
            Board::Virt | Board::Raspi3b | Board::Raspi4b => "aarch64",
        }
    }

    /// Whether the board's UEFI firmware can enforce Secure Boot under QEMU: OVMF's Secure Boot
    /// build needs System Management Mode to guard its variables, which QEMU models on q35
    /// (`smm=on`); Debian's AAVMF for `virt` has no such build.
    pub fn has_secure_boot(self) -> bool {
        self == Board::Q35
    }

    /// The kernel's name for the first serial port.
    pub fn console(self) -> &'static str {
        match self {
            Board::Q35 => "ttyS0",
            Board::Virt | Board::Raspi3b | Board::Raspi4b => "ttyAMA0",
        }
    }

    /// The only RAM size the board takes: QEMU models the boards' real memory and refuses any
    /// other `-m` ("Invalid RAM size, should be 1 GiB"). None where any size goes.
    pub fn fixed_memory_mib(self) -> Option<u32> {
        match self {
            Board::Q35 | Board::Virt => None,
            Board::Raspi3b => Some(1024),
            Board::Raspi4b => Some(2048),
        }
    }

    /// The only CPU count the board takes: the raspi SoCs have four cores and QEMU refuses
    /// fewer ("The min CPUs supported by machine 'raspi3b' is 4"). None where any count goes.
    pub fn fixed_cpus(self) -> Option<u32> {
        match self {
            Board::Q35 | Board::Virt => None,
            Board::Raspi3b | Board::Raspi4b => Some(4),
        }
    }

    /// Whether the kernel needs a device tree from the caller (`-dtb`): QEMU generates one
    /// for `virt` (and q35 has ACPI), but on the raspi boards the kernel would find none. The
    /// distribution's own file is the one to use: it names the drivers its kernel has.
    pub fn needs_dtb(self) -> bool {
        matches!(self, Board::Raspi3b | Board::Raspi4b)
    }

    /// What the distribution's device tree must lose to describe the board as QEMU models
    /// it (apply with [`super::fdt::drop_properties`]), as QEMU itself drops the nodes of the
    /// BCM2711 devices it lacks (PCIe, GENET, RNG, thermal).
    ///
    /// raspi4b: the SD card's supplies. The Pi 4 tree powers EMMC2's card through two
    /// regulators on the firmware's GPIO expander, and QEMU's firmware mailbox does not
    /// implement the expander's GPIO calls: both regulators fail to probe ("setup of GPIO
    /// (default) failed: -5") and EMMC2 waits for them for ever ("deferred probe pending:
    /// platform: supplier regulator-sd-io-1v8 not ready"). Without the two properties the host
    /// runs on its fixed 3.3 V, as QEMU's card does.
    pub fn dtb_fixes(self) -> &'static [DropProperties] {
        match self {
            Board::Q35 | Board::Virt | Board::Raspi3b => &[],
            Board::Raspi4b => &[DropProperties {
                compatible: "brcm,bcm2711-emmc2",
                properties: &["vmmc-supply", "vqmmc-supply"],
            }],
        }
    }

    /// Whether `-dtb` means anything on this board (x86 boots from ACPI tables).
    pub(super) fn takes_dtb(self) -> bool {
        self != Board::Q35
    }

    /// Whether QEMU runs UEFI firmware in this board's flash (OVMF on q35, AAVMF on `virt`);
    /// the raspi boards start the kernel the way their GPU firmware would, from `-kernel`.
    pub fn has_uefi(self) -> bool {
        matches!(self, Board::Q35 | Board::Virt)
    }

    /// Whether the board has a PCI(e) bus for controllers and hotplug root ports. QEMU's
    /// raspi3b has none; its raspi4b models the BCM2711's PCIe host only as far as its
    /// registers, with nothing behind it that Linux can use.
    pub fn has_pci(self) -> bool {
        matches!(self, Board::Q35 | Board::Virt)
    }

    /// Kernel command-line parameters any Linux kernel needs on this board as QEMU models it;
    /// rendered before the caller's command line (a later parameter wins). They belong to the
    /// board, not to a test: they work around peripherals QEMU leaves out, whoever boots it.
    ///
    /// raspi4b (BRIEF §6): the BCM2711's L2 interrupt controllers and I2C are missing, so
    /// Debian's `brcmstb_l2_intc_of_init` and `brcmstb_i2c_probe` panic unless their initcalls
    /// are skipped, and `clk_disable_unused` panics on clocks QEMU does not model;
    /// `earlycon` shows the kernel's first lines on the PL011 before its driver is up.
    pub fn required_cmdline(self) -> &'static str {
        match self {
            Board::Q35 | Board::Virt | Board::Raspi3b => "",
            Board::Raspi4b => {
                "initcall_blacklist=brcmstb_l2_driver_init,brcmstb_i2c_driver_init \
                 clk_ignore_unused earlycon=pl011,mmio32,0xfe201000"
            }
        }
    }

    /// The qdev bus of the board's own SD slot: QEMU's `bus=` path (from the system bus, by
    /// device type, then bus name), None on boards without one. The boards also create an
    /// empty card of their own on their GPIO model's bus; these paths keep ours the one the
    /// guest's controller sees (checked with QMP `info qtree` and `qom-get <card> parent_bus`).
    ///
    /// raspi3b: the GPIO model's bus, as a real Pi's pin mux: at reset it moves the first card
    /// there (the last one plugged, ours) to the Arasan SDHCI, and on to SDHOST when the guest
    /// muxes GPIO 48-53 there, as the Raspberry Pi 3 device tree does. Plugged into the SDHCI
    /// directly, the board's empty card would join it and could be the one moved to SDHOST.
    /// raspi4b: the first `generic-sdhci` is EMMC2 (`/machine/soc/peripherals/emmc2`), outside
    /// the pin mux, where the Raspberry Pi 4 device tree expects the card.
    pub(super) fn sd_slot_bus(self) -> Option<&'static str> {
        match self {
            Board::Q35 | Board::Virt => None,
            Board::Raspi3b => Some("/bcm2835_gpio/sd-bus"),
            Board::Raspi4b => Some("/generic-sdhci/sd-bus"),
        }
    }
}
