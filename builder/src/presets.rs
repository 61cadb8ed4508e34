//! The modules a mini initramfs ships: storage presets (the drivers that reach /boot on one
//! kind of bus, for every architecture the distributions build) and the filesystems the target
//! kernel needs for /boot, the image and the overlay. Preset drivers are shipped on demand
//! (storage-init loads only those whose devices exist) and skipped with a note where a kernel
//! lacks them or has them built in.

use std::fmt;
use std::str::FromStr;

use crate::kernel_config::KernelConfig;

/// A storage bus preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoragePreset {
    /// virtio-blk and virtio-scsi, over PCI or MMIO (VMs).
    Virtio,
    /// NVMe over PCIe.
    Nvme,
    /// USB mass storage (bulk-only and UAS) behind xHCI, EHCI, OHCI, UHCI or DWC2 (Raspberry Pi).
    Usb,
    /// SD/MMC cards and eMMC: SDHCI on PCI and ACPI, and the SoC hosts of the Raspberry Pi.
    Mmc,
    /// SATA (AHCI, PIIX) and SAS/SCSI HBAs found in servers and clouds.
    Scsi,
    /// All of the above.
    AllStorage,
}

const VIRTIO: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
];
const NVME: &[&str] = &["nvme"];
const USB: &[&str] = &[
    "xhci_pci",
    "xhci_plat_hcd",
    "ehci_pci",
    "ehci_platform",
    "ohci_pci",
    "uhci_hcd",
    "dwc2",
    "usb_storage",
    "uas",
    "sd_mod",
];
const MMC: &[&str] = &[
    "sdhci_pci",
    "sdhci_acpi",
    // The Raspberry Pi's SD hosts: the Arasan SDHCI of the BCM2835/7 (and the BCM2711's EMMC2)
    // and the BCM2835's own SDHOST, where the Pi 3 device tree routes the card.
    "sdhci_iproc",
    "bcm2835",
    "sdhci_of_arasan",
    "dw_mmc_rockchip",
    "mmc_block",
    // The card's supplies, where a device tree names them (the Pi 4's EMMC2: `vmmc-supply` a
    // regulator-fixed, `vqmmc-supply` a regulator-gpio). The host's probe waits for them, so
    // without their drivers (modules on Debian's arm64 kernel) the card never appears.
    "fixed",
    "gpio_regulator",
];
const SCSI: &[&str] = &[
    "ahci",
    "ata_piix",
    "sd_mod",
    "virtio_scsi",
    "vmw_pvscsi",
    "hv_storvsc",
    "mpt3sas",
    "megaraid_sas",
    "smartpqi",
];

impl StoragePreset {
    pub const ALL: [StoragePreset; 6] = [
        StoragePreset::Virtio,
        StoragePreset::Nvme,
        StoragePreset::Usb,
        StoragePreset::Mmc,
        StoragePreset::Scsi,
        StoragePreset::AllStorage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StoragePreset::Virtio => "virtio",
            StoragePreset::Nvme => "nvme",
            StoragePreset::Usb => "usb",
            StoragePreset::Mmc => "mmc",
            StoragePreset::Scsi => "scsi",
            StoragePreset::AllStorage => "all-storage",
        }
    }

    /// The driver names, each once.
    pub fn modules(self) -> Vec<&'static str> {
        let lists: &[&[&str]] = match self {
            StoragePreset::Virtio => &[VIRTIO],
            StoragePreset::Nvme => &[NVME],
            StoragePreset::Usb => &[USB],
            StoragePreset::Mmc => &[MMC],
            StoragePreset::Scsi => &[SCSI],
            StoragePreset::AllStorage => &[VIRTIO, NVME, USB, MMC, SCSI],
        };
        let mut modules: Vec<&'static str> = Vec::new();
        for name in lists.iter().flat_map(|l| l.iter()) {
            if !modules.contains(name) {
                modules.push(name);
            }
        }
        modules
    }
}

impl fmt::Display for StoragePreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StoragePreset {
    type Err = String;

    fn from_str(s: &str) -> Result<StoragePreset, String> {
        StoragePreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = StoragePreset::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "no storage preset {s:?}: the presets are {}",
                    names.join(", ")
                )
            })
    }
}

/// The drivers of `presets` together, each once, in preset order.
pub fn preset_modules(presets: &[StoragePreset]) -> Vec<String> {
    let mut modules: Vec<String> = Vec::new();
    for module in presets.iter().flat_map(|p| p.modules()) {
        if !modules.iter().any(|m| m == module) {
            modules.push(module.to_owned());
        }
    }
    modules
}

/// The modules that mount /boot (`boot_fstype`, when known at build time), the image
/// (`image_fstype`) and the overlay on `kernel`: `loop` where the image cannot be mounted from
/// its file, and for vfat the codepage and charset the kernel's FAT defaults name (it would ask
/// modprobe for them, which the mini initramfs does not have). A `verified` image (a config
/// with a dm-verity root hash) adds dm-verity (and through its dependencies device-mapper) and
/// the loop device it sits on.
pub fn filesystem_modules(
    kernel: &KernelConfig,
    boot_fstype: Option<&str>,
    image_fstype: &str,
    verified: bool,
) -> Vec<String> {
    let mut modules: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !modules.contains(&name) {
            modules.push(name);
        }
    };
    for fstype in boot_fstype.into_iter().chain([image_fstype]) {
        for module in fstype_modules(kernel, fstype) {
            add(module);
        }
    }
    add("overlay".into());
    if verified || image_fstype != "erofs" || !kernel.erofs_file_backed() {
        add("loop".into());
    }
    if verified {
        add("dm_verity".into());
    }
    modules
}

/// The modules that mount a filesystem of type `fstype` on `kernel`: ext2 and ext3 through
/// ext4's driver (which registers them), vfat with the codepage the kernel's FAT default names
/// (it would ask modprobe for it, which the mini initramfs does not have). No charset module:
/// storage-init mounts vfat with the kernel's built-in table
/// ([`storage_init::mounts::boot_fs_options`]).
fn fstype_modules(kernel: &KernelConfig, fstype: &str) -> Vec<String> {
    match fstype {
        "ext2" | "ext3" | "ext4" => vec!["ext4".into()],
        "vfat" | "fat" | "msdos" => {
            let codepage = kernel.value("CONFIG_FAT_DEFAULT_CODEPAGE").unwrap_or("437");
            vec!["vfat".into(), format!("nls_cp{codepage}")]
        }
        other => vec![other.to_owned()],
    }
}

/// The filesystems storage-init's superblock probe recognises (`storage_init::probe`), each
/// with the kernel option of its driver: ext2 and ext3 are mounted by ext4's.
pub const PROBED_FILESYSTEMS: [(&str, &str); 5] = [
    ("ext4", "CONFIG_EXT4_FS"),
    ("vfat", "CONFIG_VFAT_FS"),
    ("xfs", "CONFIG_XFS_FS"),
    ("btrfs", "CONFIG_BTRFS_FS"),
    ("erofs", "CONFIG_EROFS_FS"),
];

/// The filesystems storage-init probes that `kernel` can mount (its config builds their driver
/// in or as a module), in [`PROBED_FILESYSTEMS`] order.
pub fn probed_filesystems(kernel: &KernelConfig) -> Vec<&'static str> {
    PROBED_FILESYSTEMS
        .iter()
        .filter(|(_, option)| kernel.enabled(option))
        .map(|(fstype, _)| *fstype)
        .collect()
}

/// The modules of every filesystem storage-init probes that `kernel` can mount, each once: what
/// a mini initramfs ships when the type of /boot is not known at build time, so that the type
/// storage-init reads from the device's superblock at boot can be mounted. A driver built into
/// the kernel needs no module (the module closure skips it with a note), nor does a filesystem
/// the kernel's config leaves out.
pub fn probed_filesystem_modules(kernel: &KernelConfig) -> Vec<String> {
    let mut modules: Vec<String> = Vec::new();
    for fstype in probed_filesystems(kernel) {
        for module in fstype_modules(kernel, fstype) {
            if !modules.contains(&module) {
                modules.push(module);
            }
        }
    }
    modules
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn presets_by_name() {
        for preset in StoragePreset::ALL {
            assert_eq!(preset.name().parse::<StoragePreset>(), Ok(preset));
        }
        let error = "sata".parse::<StoragePreset>().unwrap_err();
        assert!(
            error.contains("virtio, nvme, usb, mmc, scsi, all-storage"),
            "{error}"
        );
        assert_eq!(
            preset_modules(&[StoragePreset::Nvme, StoragePreset::Usb, StoragePreset::Nvme])[..2],
            ["nvme", "xhci_pci"]
        );
        let all = StoragePreset::AllStorage.modules();
        assert_eq!(
            all.iter().filter(|m| **m == "sd_mod").count(),
            1,
            "each once"
        );
        for preset in &StoragePreset::ALL[..5] {
            assert!(preset.modules().iter().all(|m| all.contains(m)), "{preset}");
        }
    }

    #[test]
    fn filesystems_follow_the_kernel() {
        let debian612 = KernelConfig::parse(
            "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_BACKED_BY_FILE=y\nCONFIG_FAT_DEFAULT_CODEPAGE=437\nCONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n",
            Path::new("config-6.12"),
        );
        assert_eq!(
            filesystem_modules(&debian612, Some("ext4"), "erofs", false),
            ["ext4", "erofs", "overlay"]
        );
        assert_eq!(
            filesystem_modules(&debian612, Some("ext4"), "erofs", true),
            ["ext4", "erofs", "overlay", "loop", "dm_verity"],
            "dm-verity sits on a loop device even where erofs mounts files"
        );
        assert_eq!(
            filesystem_modules(&debian612, Some("vfat"), "erofs", false),
            ["vfat", "nls_cp437", "erofs", "overlay"]
        );
        assert_eq!(
            filesystem_modules(&debian612, None, "ext4", false),
            ["ext4", "overlay", "loop"],
            "an ext4 image needs a block device"
        );
        let debian61 = KernelConfig::parse("CONFIG_EROFS_FS=m\n", Path::new("config-6.1"));
        assert_eq!(
            filesystem_modules(&debian61, Some("xfs"), "erofs", false),
            ["xfs", "erofs", "overlay", "loop"]
        );
    }
    /// Every type storage-init's probe can return is one of [`PROBED_FILESYSTEMS`] or mounted
    /// by one of their drivers: read from its source, so a filesystem added there and not here
    /// fails this test.
    #[test]
    fn probed_filesystems_follow_storage_init() {
        let source = include_str!("../../storage-init/src/probe.rs");
        let mut returned: Vec<&str> = source
            .split("fstype: \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(source.contains("\"ext2\"") && source.contains("\"ext3\""));
        returned.extend(["ext2", "ext3"]);
        let all = KernelConfig::parse(
            "CONFIG_EXT4_FS=m\nCONFIG_VFAT_FS=m\nCONFIG_XFS_FS=m\nCONFIG_BTRFS_FS=m\nCONFIG_EROFS_FS=m\n",
            Path::new("config"),
        );
        let shipped = probed_filesystem_modules(&all);
        for fstype in returned {
            for module in fstype_modules(&all, fstype) {
                assert!(shipped.contains(&module), "{fstype}: {module} not shipped");
            }
        }
    }

    #[test]
    fn probed_filesystems_the_kernel_has() {
        let debian612 = KernelConfig::parse(
            "CONFIG_EXT4_FS=m\nCONFIG_VFAT_FS=m\nCONFIG_XFS_FS=m\nCONFIG_BTRFS_FS=m\nCONFIG_EROFS_FS=m\nCONFIG_FAT_DEFAULT_CODEPAGE=437\nCONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n",
            Path::new("config-6.12"),
        );
        assert_eq!(
            probed_filesystem_modules(&debian612),
            ["ext4", "vfat", "nls_cp437", "xfs", "btrfs", "erofs"]
        );
        // Built in: still asked for (the closure skips it); left out: not asked for.
        let fedora_like = KernelConfig::parse(
            "CONFIG_EXT4_FS=y\nCONFIG_XFS_FS=m\n# CONFIG_BTRFS_FS is not set\n",
            Path::new("config"),
        );
        assert_eq!(probed_filesystems(&fedora_like), ["ext4", "xfs"]);
        assert_eq!(probed_filesystem_modules(&fedora_like), ["ext4", "xfs"]);
    }
}
