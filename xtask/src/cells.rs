//! The VM test cells as data: `fixtures/cells.toml`, parsed and validated.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::disk_spec::{BootFsKind, ImageFsKind, ImageVerity, Pid1Binary, RootStorage};
use crate::pins::{KernelPin, read_kernels};

pub const CELLS_TOML: &str = "fixtures/cells.toml";

/// Kernel command-line key a cell's content echoes back in its marker line (the busybox
/// content's /init; `{nonce}` in a milestone).
pub const MARKER_PARAM: &str = "initoverlayfs_test.marker";

/// Console text that always fails a cell, raced against every milestone and found again by
/// the console scan (`verdict`). Each is something no passing boot prints.
pub const ALWAYS_FATAL: [&str; 5] = [
    "Kernel panic",
    r"Oops[:\s]",
    r"\bBUG: ",
    "Call Trace:",
    "You are in emergency mode|Entering emergency mode",
];

/// What the erofs image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Static busybox whose /init writes the marker to /dev/kmsg and powers off.
    Busybox,
    /// A real second stage: Debian's dracut systemd initramfs (built in an mmdebstrap tree for
    /// the cell's kernel) is the initoverlayfs image; storage-init hands over to its systemd,
    /// which runs in initrd mode from the overlay.
    Dracut,
    /// The baseline beside `dracut`: the same dracut initramfs loaded whole as the machine's
    /// initramfs, the classic way (no storage-init, no image), on the same kernel, machine,
    /// firmware and real root.
    DracutClassic,
    /// Dogfooding (`xtask::dogfood`): a Debian root with the kernel installed as a package
    /// boots the classic way through firmware and bootloader, runs `builder install` as the
    /// README says and reboots through storage-init, undoes it and reboots classic, then
    /// purges the kernel through apt and checks its image is gone. The machine boots again on
    /// a guest reboot; needs `firmware = "uefi"`, `boot_fs = "vfat"`, `real_root = true`.
    Dogfood,
    /// The real chain of `dracut`, with systemd as the mini initramfs's PID 1 (`builder
    /// initramfs --pid1 systemd`, systemd taken from the same dracut initramfs): it runs in
    /// initrd mode, starts `storage-init --prepare-only` as a service and switch-roots into
    /// /initoverlayfs, where the image's systemd carries on as in `dracut`.
    DracutService,
    /// The same content, but the mini initramfs runs `storage-init --prepare-only` as a service:
    /// its /init is a busybox script standing in for systemd (mount the API filesystems, run
    /// the service, `switch-root /initoverlayfs`).
    PrepareOnly,
}

/// What the dogfood flow's guest runs, one stage per boot (`xtask::dogfood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestDriver {
    /// The README's install, a kernel update, the undo, the kernel purged through apt.
    #[default]
    Install,
    /// Automatic fallback: install under systemd-boot, break the image, come back on the
    /// classic entry by itself (once through storage-init's one-shot entry, once through the
    /// boot counter), install again to re-arm.
    Fallback,
    /// The Debian package's life cycle through apt: installed (every kernel converted), a
    /// second kernel package installed and purged through the package's hooks (once with a
    /// failing install, which must leave it classic and say so), then the package purged, with
    /// /boot and /etc compared to the machine before the package, file by file.
    Package,
}

/// The emulated machine, and so the guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineKind {
    /// x86_64 PC (Q35 chipset).
    #[default]
    Q35,
    /// aarch64 `virt`.
    Virt,
    /// Raspberry Pi 3 Model B (aarch64): storage only on its SD slot, no power-off.
    Raspi3b,
    /// Raspberry Pi 4 Model B (aarch64): storage only on its SD slot, no power-off.
    Raspi4b,
}

impl Flow {
    /// The guest reboots on purpose: its machine boots again instead of exiting.
    pub fn reboots(self) -> bool {
        self == Flow::Dogfood
    }
}

/// The dogfood cell's ESP: room for the kernel package's files, the classic initramfs, and
/// what `builder install` adds (the image, the mini initramfs and, vfat having no hard links,
/// a copy of the classic initramfs as the fallback) with its 8 MiB to spare; 512 MiB is what
/// distribution installers commonly give an ESP.
pub const DOGFOOD_ESP_MIB: u64 = 512;

impl MachineKind {
    pub fn board(self) -> testvm::machine::Board {
        match self {
            MachineKind::Q35 => testvm::machine::Board::Q35,
            MachineKind::Virt => testvm::machine::Board::Virt,
            MachineKind::Raspi3b => testvm::machine::Board::Raspi3b,
            MachineKind::Raspi4b => testvm::machine::Board::Raspi4b,
        }
    }

    /// The board's device tree in the kernel package (`usr/lib/linux-image-<release>/…`):
    /// the distribution's own, which names the drivers its kernel has. None where QEMU
    /// describes the machine itself.
    pub fn dtb(self) -> Option<&'static str> {
        match self {
            MachineKind::Q35 | MachineKind::Virt => None,
            MachineKind::Raspi3b => Some("broadcom/bcm2837-rpi-3-b.dtb"),
            MachineKind::Raspi4b => Some("broadcom/bcm2711-rpi-4-b.dtb"),
        }
    }

    /// QEMU's name of the guest architecture, as fixtures/kernels.toml's `arch`.
    pub fn arch(self) -> &'static str {
        self.board().arch()
    }

    /// Debian's name of the architecture (package ids end with it).
    pub fn debian_arch(self) -> &'static str {
        match self.arch() {
            "x86_64" => "amd64",
            _ => "arm64",
        }
    }

    /// The name cells.toml and cell names use: QEMU's machine type.
    pub fn name(self) -> &'static str {
        self.board().machine_type()
    }

    /// Where this machine's UEFI firmware and systemd-boot come from (fixtures/packages.toml);
    /// None for the raspi boards, which QEMU starts without UEFI firmware.
    pub fn uefi(self) -> Option<UefiParts> {
        Some(match self {
            MachineKind::Q35 => UefiParts {
                firmware_package: "ovmf",
                code: "usr/share/OVMF/OVMF_CODE_4M.fd",
                vars: "usr/share/OVMF/OVMF_VARS_4M.fd",
                loader_package: "systemd-boot-efi-amd64",
                loader: "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                removable_path: "EFI/BOOT/BOOTX64.EFI",
                uki_stub: Some("usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
                secure_boot_code: Some("usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
            },
            MachineKind::Virt => UefiParts {
                firmware_package: "qemu-efi-aarch64",
                code: "usr/share/AAVMF/AAVMF_CODE.fd",
                vars: "usr/share/AAVMF/AAVMF_VARS.fd",
                loader_package: "systemd-boot-efi-arm64",
                loader: "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
                removable_path: "EFI/BOOT/BOOTAA64.EFI",
                // The arm64 stub exists, but no UKI has been booted on `virt` here yet.
                uki_stub: None,
                // Debian's AAVMF has no Secure Boot build, and QEMU's `virt` no SMM.
                secure_boot_code: None,
            },
            MachineKind::Raspi3b | MachineKind::Raspi4b => return None,
        })
    }
}

/// A machine's UEFI boot parts: paths are inside the unpacked packages.
#[derive(Debug, Clone, Copy)]
pub struct UefiParts {
    /// The `id` of the firmware package in fixtures/packages.toml.
    pub firmware_package: &'static str,
    /// The firmware code and the pristine variable store, in that package.
    pub code: &'static str,
    pub vars: &'static str,
    /// The `id` of the systemd-boot package and the loader in it.
    pub loader_package: &'static str,
    pub loader: &'static str,
    /// Where firmware looks on an ESP without boot entries of its own (the removable-media
    /// path of the UEFI specification), so the fresh variable store needs no setup.
    pub removable_path: &'static str,
    /// The systemd EFI stub a Unified Kernel Image is assembled from, in the loader package.
    pub uki_stub: Option<&'static str>,
    /// The firmware's Secure Boot build, in the firmware package (its variable store is `vars`
    /// with the test keys enrolled).
    pub secure_boot_code: Option<&'static str>,
}

/// What a cell boots as a Unified Kernel Image (`builder::uki`): the stub, kernel, mini
/// initramfs, command line and os-release in one PE file at the ESP's removable-media path,
/// which firmware starts directly (no systemd-boot, no entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UkiKind {
    /// Signed with the run's test key, which a `secure_boot` cell enrolls in `db`.
    Signed,
    /// Not signed: Secure Boot firmware must refuse it.
    Unsigned,
    /// Signed, then one byte of its kernel (`.linux`) flipped: the signature no longer
    /// matches, and Secure Boot firmware must refuse it.
    Modified,
    /// Made by systemd's kernel-install (`layout=uki`, `xtask::kernel_install`) with
    /// builder's plugins from the busybox content as the classic initramfs, signed by ukify
    /// with the run's key, in `EFI/Linux/` beside its image; systemd-boot (signed too) at the
    /// removable-media path starts it.
    KernelInstall,
}

impl UkiKind {
    /// Whether the image carries a signature (valid or not).
    pub fn signed(self) -> bool {
        self != UkiKind::Unsigned
    }
}

/// How a cell's machine reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// QEMU loads kernel and mini initramfs itself (`-kernel`, `-initrd`, `-append`).
    #[default]
    Direct,
    /// UEFI firmware (OVMF, AAVMF) runs systemd-boot from the ESP, which loads the kernel and
    /// mini initramfs named by a Boot Loader Specification entry, as a machine does. Needs
    /// `boot_fs = "vfat"`: /boot is the ESP.
    Uefi,
}

/// The bus the boot disk hangs off, and so the storage preset of the cell's mini initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bus {
    #[default]
    VirtioBlk,
    VirtioScsi,
    Nvme,
    /// NVMe with 4096-byte logical blocks (a 4Kn drive).
    #[serde(rename = "nvme-4kn")]
    Nvme4kn,
    /// USB mass storage on xHCI.
    Usb,
    /// An SD card: on SDHCI (PCI), or in the board's own slot on the raspi boards.
    Sd,
}

impl Bus {
    pub fn disk_bus(self) -> testvm::machine::DiskBus {
        use testvm::machine::DiskBus;
        match self {
            Bus::VirtioBlk => DiskBus::VirtioBlk,
            Bus::VirtioScsi => DiskBus::VirtioScsi,
            Bus::Nvme => DiskBus::Nvme {
                logical_block_size: 512,
            },
            Bus::Nvme4kn => DiskBus::Nvme {
                logical_block_size: 4096,
            },
            Bus::Usb => DiskBus::Usb,
            Bus::Sd => DiskBus::Sd,
        }
    }

    /// The drive's logical block size.
    pub fn logical_block_size(self) -> u32 {
        match self.disk_bus() {
            testvm::machine::DiskBus::Nvme { logical_block_size } => logical_block_size,
            _ => 512,
        }
    }

    /// The name cells.toml and cell names use.
    pub fn name(self) -> &'static str {
        match self {
            Bus::VirtioBlk => "virtio-blk",
            Bus::VirtioScsi => "virtio-scsi",
            Bus::Nvme => "nvme",
            Bus::Nvme4kn => "nvme-4kn",
            Bus::Usb => "usb",
            Bus::Sd => "sd",
        }
    }

    /// The boot partition as the guest's kernel names it (the boot disk is the only disk of
    /// its kind in a cell).
    pub fn boot_partition(self) -> &'static str {
        match self {
            Bus::VirtioBlk => "/dev/vda1",
            Bus::VirtioScsi | Bus::Usb => "/dev/sda1",
            Bus::Nvme | Bus::Nvme4kn => "/dev/nvme0n1p1",
            Bus::Sd => "/dev/mmcblk0p1",
        }
    }

    /// The drivers between the board and the disk's partitions, controller first: each one a
    /// kernel has as a module must be loaded by storage-init (on demand, from a modalias) for
    /// the disk to appear. Dependencies (nvme-core, sdhci, usb-common) load with them.
    pub fn drivers(self) -> &'static [&'static str] {
        match self {
            Bus::VirtioBlk => &["virtio_pci", "virtio_blk"],
            Bus::VirtioScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            Bus::Nvme | Bus::Nvme4kn => &["nvme"],
            Bus::Usb => &["xhci_pci", "usb_storage", "sd_mod"],
            Bus::Sd => &["sdhci_pci", "mmc_block"],
        }
    }

    /// The builder preset whose drivers reach this bus.
    pub fn preset(self) -> builder::presets::StoragePreset {
        use builder::presets::StoragePreset;
        match self {
            Bus::VirtioBlk | Bus::VirtioScsi => StoragePreset::Virtio,
            Bus::Nvme | Bus::Nvme4kn => StoragePreset::Nvme,
            Bus::Usb => StoragePreset::Usb,
            Bus::Sd => StoragePreset::Mmc,
        }
    }
}

/// The boot disk is plugged in while the guest runs instead of at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotplugSpec {
    /// The milestone after which to plug it.
    pub after: String,
    /// Seconds after that milestone.
    pub delay: u64,
}

/// How a cell's VM ends after its last milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellEnd {
    /// The guest powers off by itself.
    #[default]
    PowerOff,
    /// The harness presses the power button (QMP `system_powerdown`) and the guest must shut
    /// down and power off by itself: the clean end of a systemd machine.
    PowerButton,
    /// The harness ends QEMU over QMP (a guest that halts, a board that cannot power off).
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// What the README's test command boots: a few minutes.
    Smoke,
    /// What `cargo xtask vm-test` boots by default.
    Default,
    /// Adds the slow cells of the real chain (systemd from a dracut second stage); booted only
    /// with `--tier full`.
    Full,
}

/// How many console lines may contain a text, checked after a VM whose milestones all passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleCheck {
    pub text: String,
    /// Exactly this many lines.
    #[serde(default)]
    pub count: Option<usize>,
    /// At least this many lines.
    #[serde(default)]
    pub at_least: Option<usize>,
}

impl ConsoleCheck {
    /// None if `console` satisfies the check, else what is wrong.
    pub fn violation(&self, console: &str) -> Option<String> {
        let found = console.lines().filter(|l| l.contains(&self.text)).count();
        match (self.count, self.at_least) {
            (Some(n), _) if found != n => Some(format!(
                "console: {found} line(s) contain {:?}, expected exactly {n}",
                self.text
            )),
            (_, Some(n)) if found < n => Some(format!(
                "console: {found} line(s) contain {:?}, expected at least {n}",
                self.text
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneSpec {
    pub name: String,
    /// Regular expression; `{nonce}` stands for the run's marker.
    pub pattern: String,
    /// Seconds from the previous milestone.
    pub timeout: u64,
    /// Typed on the console (and a newline) as soon as the milestone matched: the answer to
    /// the prompt it matched. `{luks_passphrase}` stands for the cell's [`Cell::luks_passphrase`].
    #[serde(default)]
    pub send: Option<String>,
}

/// The placeholder of a milestone's `send` text for the cell's LUKS2 passphrase.
const LUKS_PASSPHRASE_PLACEHOLDER: &str = "{luks_passphrase}";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub name: String,
    pub tier: Tier,
    /// An `id` of fixtures/kernels.toml.
    pub kernel: String,
    pub flow: Flow,
    /// Appended to the kernel command line.
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub end: CellEnd,
    /// The filesystem of the test disk's /boot.
    #[serde(default)]
    pub boot_fs: BootFsKind,
    /// Plug the boot disk in late, over QMP.
    #[serde(default)]
    pub hotplug: Option<HotplugSpec>,
    /// The filesystem of the initoverlayfs image.
    #[serde(default)]
    pub image_fs: ImageFsKind,
    /// A dm-verity hash tree on the image, its root hash in the config (`on`), or one of the
    /// faults: `wrong-root-hash`, `flipped-superblock`, `truncated-tree`, `flipped-data`,
    /// `no-device-mapper`.
    #[serde(default)]
    pub verity: ImageVerity,
    /// Guest CPUs (TCG runs each on a host thread of its own).
    #[serde(default = "one_cpu")]
    pub cpus: u32,
    /// Flow `dracut`: a second partition holds a real Debian root (systemd, an fstab mounting
    /// it and /boot), which the second stage mounts and switches to (`root=` is added).
    #[serde(default)]
    pub real_root: bool,
    /// With `real_root`: where the root filesystem lives (default: a partition of its own;
    /// `luks2`, `lvm`: inside a LUKS2 container or on a logical volume, which the second stage
    /// unlocks or activates).
    #[serde(default)]
    pub root_storage: RootStorage,
    /// With `root_storage = "luks2"`: the container's passphrase, a test key of no value. The
    /// cell types it at systemd-cryptsetup's prompt (a milestone whose `send` is
    /// `{luks_passphrase}`).
    #[serde(default)]
    pub luks_passphrase: Option<String>,
    /// Add a CD-ROM drive without a disc (and its drivers to the mini initramfs).
    #[serde(default)]
    pub empty_cdrom: bool,
    /// The boot disk's bus (default virtio-blk).
    #[serde(default)]
    pub bus: Bus,
    /// The machine (default q35); its architecture must be the kernel's.
    #[serde(default)]
    pub machine: MachineKind,
    /// Direct kernel boot (default) or UEFI firmware and bootloader.
    #[serde(default)]
    pub firmware: Firmware,
    /// With `firmware = "uefi"`: boot a Unified Kernel Image from the ESP instead of
    /// systemd-boot and a loader entry.
    #[serde(default)]
    pub uki: Option<UkiKind>,
    /// With `firmware = "uefi"`: the firmware's Secure Boot build, with a key pair made for
    /// the run enrolled as PK, KEK and db (the key that signs a `signed` UKI).
    #[serde(default)]
    pub secure_boot: bool,
    /// The mini initramfs's /init: storage-init (default) or `syscall-floor`, the baseline
    /// `cargo xtask bench-storage-init` boots beside it (x86_64, flow busybox, a plain erofs
    /// image booted directly).
    #[serde(default)]
    pub pid1: Pid1Binary,
    /// Console patterns that fail the cell at once.
    pub fatal: Vec<String>,
    /// Line counts the whole console must show once the milestones passed.
    #[serde(default)]
    pub console: Vec<ConsoleCheck>,
    /// Require a `loaded module` line for each of the bus's drivers ([`Bus::drivers`]) that
    /// the cell's kernel has as a module: the proof that storage-init brought the disk up.
    /// Set on every cell a `[[matrix]]` generates.
    #[serde(default)]
    pub prove_drivers: bool,
    /// A guest reboot restarts the machine (firmware and kernel again) instead of ending the
    /// boot: for storage-init's `reboot` emergency action. The dogfood flow always restarts.
    #[serde(default)]
    pub guest_reboots: bool,
    /// A module of the mini initramfs (its name, `ext4`) replaced by bytes that are no module,
    /// in a second archive (the mini initramfs then uncompressed): the kernel refuses to load
    /// it. Flows busybox and dracut, booted directly.
    #[serde(default)]
    pub broken_module: Option<String>,
    /// What the dogfood flow's guest does, one stage per boot (`xtask::dogfood`): `install`
    /// (the default: install, update, undo, purge) or `fallback` (install, break the image,
    /// come back on the classic entry by itself, re-arm).
    #[serde(default)]
    pub guest_driver: GuestDriver,
    pub milestones: Vec<MilestoneSpec>,
}

fn one_cpu() -> u32 {
    1
}

/// What the placeholders of a milestone pattern stand for in one boot, known once the kernel
/// is unpacked. Values are regular expressions.
#[derive(Debug, Clone)]
pub struct Substitutions {
    /// `{nonce}`: the boot's unique marker.
    pub nonce: String,
    /// `{kernel_release}`: `uname -r` of the cell's kernel.
    pub kernel_release: String,
    /// `{image_mount}`: how storage-init must mount the image on this kernel: `file-backed`
    /// where the kernel has `CONFIG_EROFS_FS_BACKED_BY_FILE`, else through a loop device.
    pub image_mount: String,
}

impl Substitutions {
    /// For a kernel with (`true`) or without file-backed erofs mounts.
    pub fn new(nonce: &str, kernel_release: &str, erofs_file_backed: bool) -> Substitutions {
        Substitutions {
            nonce: regex::escape(nonce),
            kernel_release: regex::escape(kernel_release),
            image_mount: if erofs_file_backed {
                "file-backed".to_owned()
            } else {
                "loop device /dev/loop[0-9]+".to_owned()
            },
        }
    }

    fn apply(&self, pattern: &str) -> String {
        pattern
            .replace("{nonce}", &self.nonce)
            .replace("{kernel_release}", &self.kernel_release)
            .replace("{image_mount}", &self.image_mount)
    }
}

/// A block of cells declared as a product: every machine × bus × kernel whose architectures
/// agree becomes a cell named `<arch>-<machine>-<bus>-<kernel>-<flow>` (the kernel's id
/// without its architecture suffix; `-uefi` appended when the block boots through firmware),
/// with these milestones. `{partition}` in a pattern is the bus's boot partition
/// (`/dev/nvme0n1p1`); the run-time placeholders are [`Substitutions`]. The remaining fields
/// are [`Cell`]'s, the same for every cell of the block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    pub tier: Tier,
    pub flow: Flow,
    pub machines: Vec<MachineKind>,
    pub buses: Vec<Bus>,
    /// `id`s of fixtures/kernels.toml.
    pub kernels: Vec<String>,
    /// Globs over generated names (as `--cell` takes them): combinations left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub boot_fs: BootFsKind,
    #[serde(default)]
    pub real_root: bool,
    #[serde(default)]
    pub end: CellEnd,
    /// Default true: every generated cell proves storage-init loaded its bus's drivers. Off for
    /// a flow without storage-init (`dracut-classic`).
    #[serde(default = "yes")]
    pub prove_drivers: bool,
    pub fatal: Vec<String>,
    #[serde(default)]
    pub console: Vec<ConsoleCheck>,
    pub milestones: Vec<MilestoneSpec>,
}

fn yes() -> bool {
    true
}

impl MatrixSpec {
    /// The cells of this block, in machine, bus, kernel order.
    fn expand(&self, kernels: &[KernelPin]) -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        for &machine in &self.machines {
            for &bus in &self.buses {
                for id in &self.kernels {
                    let pin = kernels
                        .iter()
                        .find(|k| &k.id == id)
                        .with_context(|| format!("[[matrix]]: unknown kernel {id}"))?;
                    if pin.arch != machine.arch() {
                        continue;
                    }
                    let cell = self.cell(machine, bus, id);
                    if self
                        .exclude
                        .iter()
                        .any(|pattern| glob(pattern.as_bytes(), cell.name.as_bytes()))
                    {
                        continue;
                    }
                    cells.push(cell);
                }
            }
        }
        if cells.is_empty() {
            bail!(
                "[[matrix]]: no machine runs any of the kernels {:?}",
                self.kernels
            );
        }
        Ok(cells)
    }

    fn cell(&self, machine: MachineKind, bus: Bus, kernel: &str) -> Cell {
        // `debian12-6.12-amd64` → `debian12-6.12`: the name already starts with the arch.
        let short = kernel.rsplit_once('-').map_or(kernel, |(head, _)| head);
        let flow = match self.flow {
            Flow::Busybox => "busybox",
            Flow::Dracut => "dracut",
            Flow::DracutClassic => "dracut-classic",
            Flow::DracutService => "dracut-service",
            Flow::PrepareOnly => "prepare-only",
            Flow::Dogfood => "dogfood",
        };
        let firmware = match self.firmware {
            Firmware::Direct => "",
            Firmware::Uefi => "-uefi",
        };
        Cell {
            name: format!(
                "{}-{}-{}-{short}-{flow}{firmware}",
                machine.arch(),
                machine.name(),
                bus.name()
            ),
            tier: self.tier,
            kernel: kernel.to_owned(),
            flow: self.flow,
            cmdline: self.cmdline.clone(),
            end: self.end,
            boot_fs: self.boot_fs,
            hotplug: None,
            image_fs: Default::default(),
            verity: Default::default(),
            cpus: one_cpu(),
            empty_cdrom: false,
            real_root: self.real_root,
            root_storage: Default::default(),
            luks_passphrase: None,
            bus,
            machine,
            firmware: self.firmware,
            uki: None,
            secure_boot: false,
            pid1: Default::default(),
            fatal: self.fatal.clone(),
            console: self.console.clone(),
            prove_drivers: self.prove_drivers,
            guest_reboots: false,
            broken_module: None,
            guest_driver: GuestDriver::default(),
            milestones: self
                .milestones
                .iter()
                .map(|m| MilestoneSpec {
                    pattern: m.pattern.replace("{partition}", bus.boot_partition()),
                    ..m.clone()
                })
                .collect(),
        }
    }
}

impl Cell {
    /// Whether the cell's kernel runs at all: not where Secure Boot firmware must refuse the
    /// image (an unsigned or tampered UKI), so no milestone has the guest's clock.
    pub fn kernel_starts(&self) -> bool {
        !matches!(self.uki, Some(UkiKind::Unsigned | UkiKind::Modified))
    }

    pub fn milestones(&self, substitutions: &Substitutions) -> Result<Vec<testvm::run::Milestone>> {
        self.milestones
            .iter()
            .map(|m| {
                let pattern = substitutions.apply(&m.pattern);
                let milestone =
                    testvm::run::Milestone::new(&m.name, &pattern, Duration::from_secs(m.timeout))
                        .with_context(|| {
                            format!("cell {}: milestone {}: bad pattern", self.name, m.name)
                        })?;
                Ok(match &m.send {
                    Some(text) => milestone.then_send(&self.send_text(text)?),
                    None => milestone,
                })
            })
            .collect()
    }

    /// A milestone's `send` text with the placeholder filled in.
    fn send_text(&self, text: &str) -> Result<String> {
        if !text.contains(LUKS_PASSPHRASE_PLACEHOLDER) {
            return Ok(text.to_owned());
        }
        let passphrase = self.luks_passphrase.as_deref().with_context(|| {
            format!(
                "cell {}: a milestone sends {LUKS_PASSPHRASE_PLACEHOLDER}, but the cell has no luks_passphrase",
                self.name
            )
        })?;
        Ok(text.replace(LUKS_PASSPHRASE_PLACEHOLDER, passphrase))
    }

    /// The cell's fatal patterns, and those every cell has ([`ALWAYS_FATAL`]), except
    /// one a milestone of the cell spells out: the dm-verity fault cell expects its kernel
    /// panic (any other panic still fails it, through the console scan).
    pub fn fatal(&self) -> Result<Vec<testvm::run::Fatal>> {
        let mut patterns: Vec<&str> = self.fatal.iter().map(String::as_str).collect();
        for always in ALWAYS_FATAL {
            let regex = regex::Regex::new(always).expect("the severity table's patterns are valid");
            let expected = self.milestones.iter().any(|m| regex.is_match(&m.pattern));
            if !expected && !patterns.contains(&always) {
                patterns.push(always);
            }
        }
        patterns
            .into_iter()
            .map(|p| {
                testvm::run::Fatal::new(p, p)
                    .with_context(|| format!("cell {}: bad fatal pattern {p:?}", self.name))
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CellsFile {
    #[serde(default)]
    matrix: Vec<MatrixSpec>,
    #[serde(default)]
    cell: Vec<Cell>,
}

/// Which cells a command runs: `--cell`, `--kernel`, `--arch`, `--tier`.
#[derive(Debug, Clone, Default)]
pub struct CellFilter {
    /// A name pattern: with `*` or `?` a glob over the whole name
    /// (`x86_64-*-nvme-*`), else text the name contains.
    pub name: Option<String>,
    /// An `id` of fixtures/kernels.toml.
    pub kernel: Option<String>,
    /// The guest architecture, the name's first part (`x86_64`, `aarch64`).
    pub arch: Option<String>,
    /// This tier or lower.
    pub tier: Option<Tier>,
}

impl CellFilter {
    pub fn matches(&self, cell: &Cell) -> bool {
        // Several patterns, comma-separated: any of them (a cell and its sibling, say).
        let name_ok = self.name.as_deref().is_none_or(|patterns| {
            patterns.split(',').any(|pattern| {
                if pattern.contains(['*', '?']) {
                    glob(pattern.as_bytes(), cell.name.as_bytes())
                } else {
                    cell.name.contains(pattern)
                }
            })
        });
        let arch_ok = self
            .arch
            .as_deref()
            .is_none_or(|arch| cell.name.split('-').next() == Some(arch));
        name_ok
            && arch_ok
            && self.kernel.as_deref().is_none_or(|k| cell.kernel == k)
            && self.tier.is_none_or(|t| cell.tier <= t)
    }
}

/// `*` (any run) and `?` (any one byte) over the whole text.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, text) || text.split_first().is_some_and(|(_, t)| glob(pattern, t))
        }
        (Some((b'?', rest)), Some((_, t))) => glob(rest, t),
        (Some((p, rest)), Some((c, t))) if p == c => glob(rest, t),
        _ => false,
    }
}

pub fn read_cells(root: &Path) -> Result<Vec<Cell>> {
    let path = root.join(CELLS_TOML);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: CellsFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let kernels = read_kernels(root)?.kernel;
    for (i, cell) in file.cell.iter().enumerate() {
        if file.cell[..i].iter().any(|c| c.name == cell.name) {
            bail!("{}: cell {} is declared twice", path.display(), cell.name);
        }
    }
    // Generated cells first, in declaration order; a `[[cell]]` of the same name takes the
    // generated one's place (a combination that deserves closer milestones), the others follow.
    let mut cells = Vec::new();
    for spec in &file.matrix {
        for generated in spec
            .expand(&kernels)
            .with_context(|| format!("in {}", path.display()))?
        {
            if cells.iter().any(|c: &Cell| c.name == generated.name) {
                bail!(
                    "{}: two [[matrix]] blocks generate cell {}",
                    path.display(),
                    generated.name
                );
            }
            let explicit = file.cell.iter().find(|c| c.name == generated.name);
            cells.push(explicit.cloned().unwrap_or(generated));
        }
    }
    for cell in &file.cell {
        if !cells.iter().any(|c| c.name == cell.name) {
            cells.push(cell.clone());
        }
    }
    for cell in &cells {
        if cell.milestones.is_empty() {
            bail!(
                "{}: cell {} has no milestones: it could not fail",
                path.display(),
                cell.name
            );
        }
        cell.milestones(&Substitutions::new("0", "6.12.0-test", true))?;
        cell.fatal()?;
        if let Some(check) = cell
            .console
            .iter()
            .find(|c| c.count.is_some() == c.at_least.is_some())
        {
            bail!(
                "{}: cell {}: console check {:?} needs exactly one of count and at_least",
                path.display(),
                cell.name,
                check.text
            );
        }
        if cell.firmware == Firmware::Uefi && cell.machine.uefi().is_none() {
            bail!(
                "{}: cell {} asks for UEFI firmware, which QEMU has no image of for {}",
                path.display(),
                cell.name,
                cell.machine.name()
            );
        }
        if cell.firmware == Firmware::Uefi && cell.boot_fs != BootFsKind::Vfat {
            bail!(
                "{}: cell {} boots through UEFI firmware, which reads the bootloader from the ESP: \
                 it needs boot_fs = \"vfat\"",
                path.display(),
                cell.name
            );
        }
        if let Err(why) = check_uki_and_secure_boot(cell) {
            bail!("{}: cell {}: {why}", path.display(), cell.name);
        }
        if cell.flow == Flow::Dogfood
            && !(cell.firmware == Firmware::Uefi
                && cell.boot_fs == BootFsKind::Vfat
                && cell.real_root
                && cell.end == CellEnd::PowerOff)
        {
            bail!(
                "{}: cell {}: flow dogfood boots a real root through firmware and powers off \
                 by itself: it needs firmware = \"uefi\", boot_fs = \"vfat\", real_root = true \
                 and the default end",
                path.display(),
                cell.name
            );
        }
        if let Some(fixed) = cell.machine.board().fixed_cpus()
            && cell.cpus != one_cpu()
            && cell.cpus != fixed
        {
            bail!(
                "{}: cell {} asks for {} CPUs, but {} always has {fixed}",
                path.display(),
                cell.name,
                cell.cpus,
                cell.machine.board()
            );
        }
        if cell.root_storage != RootStorage::Partition && !cell.real_root {
            bail!(
                "{}: cell {} sets root_storage, which only a cell with real_root = true has",
                path.display(),
                cell.name
            );
        }
        let luks2 = cell.root_storage == RootStorage::Luks2;
        if luks2 != cell.luks_passphrase.is_some() {
            bail!(
                "{}: cell {}: luks_passphrase goes with root_storage = \"luks2\", and only with it",
                path.display(),
                cell.name
            );
        }
        if let Err(why) = check_pid1(cell) {
            bail!("{}: cell {}: {why}", path.display(), cell.name);
        }
        if cell.broken_module.is_some()
            && !(matches!(cell.flow, Flow::Busybox | Flow::Dracut)
                && cell.firmware == Firmware::Direct)
        {
            bail!(
                "{}: cell {}: broken_module replaces a module of a mini initramfs QEMU loads \
                 itself: it needs flow busybox or dracut and direct boot",
                path.display(),
                cell.name
            );
        }
        if cell.guest_driver != GuestDriver::Install && cell.flow != Flow::Dogfood {
            bail!(
                "{}: cell {}: guest_driver chooses what the dogfood flow's guest does: it needs \
                 flow = \"dogfood\"",
                path.display(),
                cell.name
            );
        }
        if cell.empty_cdrom && cell.machine != MachineKind::Q35 {
            bail!(
                "{}: cell {} asks for a CD-ROM drive, which only q35 has (on its AHCI controller)",
                path.display(),
                cell.name
            );
        }
    }
    Ok(cells)
}

/// The syscall floor makes the syscalls of storage-init's plainest boot only, on the x86_64
/// build (storage-init/examples/syscall_floor.rs).
fn check_pid1(cell: &Cell) -> Result<(), String> {
    let plain = cell.machine == MachineKind::Q35
        && cell.flow == Flow::Busybox
        && cell.firmware == Firmware::Direct
        && cell.image_fs == ImageFsKind::Erofs
        && cell.verity == ImageVerity::Off
        && cell.hotplug.is_none();
    if cell.pid1 == Pid1Binary::SyscallFloor && !plain {
        return Err(
            "pid1 = \"syscall-floor\" makes storage-init's plainest boot only: it needs \
             machine q35, flow busybox, direct boot, an erofs image without verity and no hotplug"
                .into(),
        );
    }
    Ok(())
}

/// What a UKI or Secure Boot cell needs: firmware (UEFI, on a machine with a stub and a
/// Secure Boot build), a flow whose ESP the harness lays out, and for an image that must be
/// refused, the firmware that refuses it.
fn check_uki_and_secure_boot(cell: &Cell) -> Result<(), String> {
    if cell.uki.is_none() && !cell.secure_boot {
        return Ok(());
    }
    if cell.firmware != Firmware::Uefi {
        return Err(
            "uki and secure_boot boot through firmware: they need firmware = \"uefi\"".into(),
        );
    }
    let parts = cell.machine.uefi();
    if cell.uki.is_some() && parts.and_then(|p| p.uki_stub).is_none() {
        return Err(format!("no UKI stub is known for {}", cell.machine.name()));
    }
    if cell.secure_boot && parts.and_then(|p| p.secure_boot_code).is_none() {
        return Err(format!(
            "{} has no Secure Boot firmware here",
            cell.machine.name()
        ));
    }
    if cell.uki.is_some() && cell.flow == Flow::Dogfood {
        return Err("the dogfood flow boots what its own install put on the ESP, not a UKI".into());
    }
    if cell.uki == Some(UkiKind::KernelInstall)
        && (cell.flow != Flow::Busybox || cell.machine.arch() != "x86_64")
    {
        return Err(
            "a kernel-install UKI is made from the busybox content with systemd 254's amd64 \
             packages: flow = \"busybox\" on x86_64"
                .into(),
        );
    }
    if matches!(cell.uki, Some(UkiKind::Unsigned | UkiKind::Modified)) && !cell.secure_boot {
        return Err(
            "an unsigned or modified UKI is only refused under Secure Boot: set secure_boot = true"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `check_uki_and_secure_boot` case: the cell's extra TOML lines, and the error's
    /// expected text (None: accepted).
    fn check_uki(extra: &str, expected: Option<&str>) {
        check_with(check_uki_and_secure_boot, extra, expected);
    }

    /// One case of a cell check: a busybox cell (unless `extra` names the flow) with `extra`'s
    /// TOML lines, and the error's expected text (None: accepted).
    fn check_with(check: fn(&Cell) -> Result<(), String>, extra: &str, expected: Option<&str>) {
        let flow = if extra.contains("flow =") {
            ""
        } else {
            "flow = \"busybox\""
        };
        let cell: Cell = toml::from_str(&format!(
            r#"
            name = "x86_64-q35-virtio-blk-debian12-6.12-busybox-uki"
            tier = "default"
            kernel = "debian12-6.12-amd64"
            {flow}
            fatal = []
            milestones = [{{ name = "m", pattern = "x", timeout = 1 }}]
            {extra}
            "#
        ))
        .unwrap();
        match (check(&cell), expected) {
            (Ok(()), None) => {}
            (Err(error), Some(text)) => assert!(error.contains(text), "{extra}: {error}"),
            (result, _) => panic!("{extra}: {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn uki_and_secure_boot_fields() {
        check_uki("", None);
        check_uki("firmware = \"uefi\"\nuki = \"signed\"", None);
        check_uki(
            "firmware = \"uefi\"\nuki = \"signed\"\nsecure_boot = true",
            None,
        );
        check_uki(
            "firmware = \"uefi\"\nuki = \"unsigned\"\nsecure_boot = true",
            None,
        );
        check_uki(
            "firmware = \"uefi\"\nuki = \"modified\"\nsecure_boot = true",
            None,
        );
        check_uki("uki = \"signed\"", Some("firmware = \"uefi\""));
        check_uki("secure_boot = true", Some("firmware = \"uefi\""));
        check_uki(
            "firmware = \"uefi\"\nuki = \"unsigned\"",
            Some("secure_boot = true"),
        );
        check_uki(
            "firmware = \"uefi\"\nuki = \"modified\"",
            Some("secure_boot = true"),
        );
        check_uki(
            "firmware = \"uefi\"\nmachine = \"virt\"\nuki = \"signed\"",
            Some("no UKI stub"),
        );
        check_uki(
            "firmware = \"uefi\"\nmachine = \"virt\"\nsecure_boot = true",
            Some("no Secure Boot firmware"),
        );
        check_uki(
            "firmware = \"uefi\"\nflow = \"dogfood\"\nuki = \"signed\"",
            Some("dogfood"),
        );
    }

    #[test]
    fn the_syscall_floor_boots_the_plainest_cell_only() {
        let floor = "pid1 = \"syscall-floor\"";
        check_with(check_pid1, floor, None);
        check_with(
            check_pid1,
            "pid1 = \"storage-init\"\nflow = \"dracut\"",
            None,
        );
        for other in [
            "flow = \"dracut\"",
            "machine = \"virt\"",
            "firmware = \"uefi\"",
            "image_fs = \"ext4\"",
            "verity = \"on\"",
        ] {
            check_with(
                check_pid1,
                &format!("{floor}\n{other}"),
                Some("plainest boot only"),
            );
        }
    }

    #[test]
    fn console_checks() {
        let check = |count, at_least| ConsoleCheck {
            text: "FATAL".into(),
            count,
            at_least,
        };
        let console = "a FATAL b\nnothing\nFATAL again\n";
        assert_eq!(check(Some(2), None).violation(console), None);
        let error = check(Some(1), None).violation(console).unwrap();
        assert!(
            error.contains("2 line(s)") && error.contains("exactly 1"),
            "{error}"
        );
        assert_eq!(check(None, Some(2)).violation(console), None);
        assert!(
            check(None, Some(3))
                .violation(console)
                .unwrap()
                .contains("at least 3")
        );
        assert!(check(Some(0), None).violation("").is_none());
    }

    #[test]
    fn filters() {
        let cells = read_cells(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let names = |filter: CellFilter| -> Vec<String> {
            cells
                .iter()
                .filter(|c| filter.matches(c))
                .map(|c| c.name.clone())
                .collect()
        };
        let nvme = names(CellFilter {
            name: Some("x86_64-*-nvme-*debian*".into()),
            tier: Some(Tier::Default),
            ..CellFilter::default()
        });
        assert_eq!(
            nvme,
            [
                "x86_64-q35-nvme-debian12-6.12-busybox",
                "x86_64-q35-nvme-debian12-6.1-busybox",
                "x86_64-q35-nvme-4kn-debian12-6.12-busybox",
                "x86_64-q35-nvme-4kn-debian12-6.1-busybox",
            ]
        );
        let old_kernel = names(CellFilter {
            kernel: Some("debian12-6.1-amd64".into()),
            ..CellFilter::default()
        });
        assert!(
            old_kernel.iter().all(|n| n.contains("6.1-")),
            "{old_kernel:?}"
        );
        assert!(!old_kernel.is_empty());
        let aarch64 = names(CellFilter {
            arch: Some("aarch64".into()),
            ..CellFilter::default()
        });
        assert!(!aarch64.is_empty());
        assert!(
            aarch64.iter().all(|n| n.starts_with("aarch64-")),
            "{aarch64:?}"
        );
        let smoke = names(CellFilter {
            tier: Some(Tier::Smoke),
            ..CellFilter::default()
        });
        assert!(smoke.len() < cells.len() && !smoke.is_empty());
        let pair = names(CellFilter {
            name: Some(
                "x86_64-q35-virtio-blk-debian12-6.12-dracut-uefi,*6.12-dracut-verity-uefi".into(),
            ),
            ..CellFilter::default()
        });
        assert_eq!(
            pair,
            [
                "x86_64-q35-virtio-blk-debian12-6.12-dracut-uefi",
                "x86_64-q35-virtio-blk-debian12-6.12-dracut-verity-uefi",
            ]
        );
        assert!(glob(b"a*c?", b"abbbcd"));
        assert!(!glob(b"a*c", b"abcd"));
        assert!(glob(b"*", b""));
    }

    /// The product covers every combination whose architectures agree, names each after its
    /// parts, fills in the partition, and yields to a hand-written cell of the same name.
    #[test]
    fn matrix_expansion() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let kernels = read_kernels(&root).unwrap().kernel;
        let spec: MatrixSpec = toml::from_str(
            r#"
            tier = "default"
            flow = "busybox"
            machines = ["q35", "virt"]
            buses = ["nvme", "sd"]
            kernels = ["debian12-6.12-amd64", "debian12-6.12-arm64", "debian12-6.1-amd64"]
            fatal = ["Kernel panic"]
            milestones = [{ name = "bootfs", pattern = "on {partition} ", timeout = 5 }]
            "#,
        )
        .unwrap();
        let cells = spec.expand(&kernels).unwrap();
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x86_64-q35-nvme-debian12-6.12-busybox",
                "x86_64-q35-nvme-debian12-6.1-busybox",
                "x86_64-q35-sd-debian12-6.12-busybox",
                "x86_64-q35-sd-debian12-6.1-busybox",
                "aarch64-virt-nvme-debian12-6.12-busybox",
                "aarch64-virt-sd-debian12-6.12-busybox",
            ]
        );
        assert!(cells.iter().all(|c| c.prove_drivers));
        assert_eq!(cells[2].milestones[0].pattern, "on /dev/mmcblk0p1 ");
        assert_eq!(cells[4].machine, MachineKind::Virt);
        assert_eq!(cells[4].kernel, "debian12-6.12-arm64");

        // A real-chain block: firmware in the name, the block's fields on every cell, exclusions.
        let chain: MatrixSpec = toml::from_str(
            r#"
            tier = "full"
            flow = "dracut-classic"
            machines = ["q35", "virt"]
            buses = ["virtio-blk", "nvme"]
            kernels = ["debian12-6.12-amd64", "debian12-6.12-arm64"]
            exclude = ["aarch64-*-nvme-*"]
            cmdline = "printk.devkmsg=on"
            firmware = "uefi"
            boot_fs = "vfat"
            real_root = true
            end = "power-button"
            prove_drivers = false
            fatal = ["Kernel panic"]
            milestones = [{ name = "report", pattern = "boot={partition},", timeout = 5 }]
            "#,
        )
        .unwrap();
        let cells = chain.expand(&kernels).unwrap();
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x86_64-q35-virtio-blk-debian12-6.12-dracut-classic-uefi",
                "x86_64-q35-nvme-debian12-6.12-dracut-classic-uefi",
                "aarch64-virt-virtio-blk-debian12-6.12-dracut-classic-uefi",
            ]
        );
        for cell in &cells {
            assert_eq!(cell.firmware, Firmware::Uefi);
            assert_eq!(cell.boot_fs, BootFsKind::Vfat);
            assert_eq!(cell.end, CellEnd::PowerButton);
            assert_eq!(cell.cmdline, "printk.devkmsg=on");
            assert!(cell.real_root && !cell.prove_drivers);
        }
        assert_eq!(cells[1].milestones[0].pattern, "boot=/dev/nvme0n1p1,");

        let unknown: MatrixSpec = toml::from_str(
            r#"
            tier = "default"
            flow = "busybox"
            machines = ["q35"]
            buses = ["nvme"]
            kernels = ["debian99"]
            fatal = []
            milestones = []
            "#,
        )
        .unwrap();
        let error = format!("{:#}", unknown.expand(&kernels).unwrap_err());
        assert!(error.contains("unknown kernel debian99"), "{error}");

        // The committed file: the smoke cell of a generated name is the hand-written one.
        let committed = read_cells(&root).unwrap();
        let smoke = committed
            .iter()
            .find(|c| c.name == "x86_64-q35-virtio-blk-debian12-6.12-busybox")
            .unwrap();
        assert_eq!(smoke.tier, Tier::Smoke);
        assert_eq!(committed.iter().filter(|c| c.name == smoke.name).count(), 1);
    }

    #[test]
    fn substitutions_escape_and_choose_the_mount() {
        let file_backed = Substitutions::new("ab.c", "6.12.95+deb12-amd64", true);
        assert_eq!(
            file_backed.apply("{nonce} {kernel_release} ({image_mount})"),
            "ab\\.c 6\\.12\\.95\\+deb12\\-amd64 (file-backed)"
        );
        let loop_device = Substitutions::new("x", "6.1.0-56-amd64", false);
        let pattern = regex::Regex::new(&loop_device.apply("erofs, {image_mount}\\)")).unwrap();
        assert!(pattern.is_match("erofs, loop device /dev/loop0)"));
        assert!(!pattern.is_match("erofs, file-backed)"));
    }

    /// A milestone's `send` reaches testvm with the cell's passphrase filled in; a cell
    /// without one cannot send it.
    #[test]
    fn send_fills_in_the_passphrase() {
        let cell = |passphrase: &str| -> Cell {
            toml::from_str(&format!(
                r#"
                name = "x86_64-q35-virtio-blk-debian12-6.12-dracut-luks2-uefi"
                tier = "full"
                kernel = "debian12-6.12-amd64"
                flow = "dracut"
                real_root = true
                root_storage = "luks2"
                {passphrase}
                fatal = []
                milestones = [
                    {{ name = "systemd", pattern = "Running in initrd", timeout = 60 }},
                    {{ name = "passphrase", pattern = "Please enter passphrase", timeout = 60, send = "{{luks_passphrase}}" }},
                    {{ name = "literal", pattern = "login:", timeout = 60, send = "root" }},
                ]
                "#
            ))
            .unwrap()
        };
        let with_key = cell(r#"luks_passphrase = "test key""#);
        assert_eq!(with_key.root_storage, RootStorage::Luks2);
        let substitutions = Substitutions::new("0", "6.12.0-test", true);
        let sends: Vec<Option<String>> = with_key
            .milestones(&substitutions)
            .unwrap()
            .into_iter()
            .map(|m| m.send)
            .collect();
        assert_eq!(sends, [None, Some("test key".into()), Some("root".into())]);
        let error = format!("{:#}", cell("").milestones(&substitutions).unwrap_err());
        assert!(error.contains("no luks_passphrase"), "{error}");
    }

    #[test]
    fn the_committed_cells_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cells = read_cells(&root).unwrap();
        let kernels = read_kernels(&root).unwrap();
        for cell in &cells {
            let kernel = kernels
                .kernel
                .iter()
                .find(|k| k.id == cell.kernel)
                .unwrap_or_else(|| panic!("{}: unknown kernel {}", cell.name, cell.kernel));
            assert_eq!(
                kernel.arch,
                cell.machine.arch(),
                "{}: the machine cannot boot the kernel",
                cell.name
            );
            assert!(
                cell.name.starts_with(&format!("{}-", cell.machine.arch())),
                "{}: a cell's name starts with its architecture",
                cell.name
            );
        }
        assert!(cells.iter().any(|c| c.tier == Tier::Smoke));
    }
}
