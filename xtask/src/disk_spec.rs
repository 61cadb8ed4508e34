//! What a cell's disk holds, as `fixtures/cells.toml` names it: the filesystem of /boot and of
//! the image, the image's dm-verity, where the real root lives, the program the mini
//! initramfs runs as PID 1, and the fixed identities (UUIDs, GUIDs) every test disk carries so
//! it stays byte-reproducible. Pure values of the spec layer: the build layer (`images`,
//! `root_storage`, `static_build`) makes what they describe.

/// The boot filesystem's UUID on every test disk (what `bootfs UUID=` names).
pub const BOOT_FS_UUID: &str = "3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708";

/// The real root's partition (`root=PARTUUID=`) and filesystem (`root=UUID=`, also inside a
/// LUKS2 container or on a logical volume), on the real chain's disks.
pub const ROOT_PART_GUID: &str = "4c0f9a3e-2b1d-4e6f-9a8b-7c6d5e4f3a2b";
pub const ROOT_FS_UUID: &str = "b7e3c1d2-8f4a-4b5c-9d6e-0f1a2b3c4d5e";

/// The filesystem of the test disk's /boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootFsKind {
    #[default]
    Ext4,
    /// An EFI System Partition, as systemd-boot setups have it.
    Vfat,
}

/// The FAT volume id of a vfat /boot, `UUID=1234-ABCD` as blkid prints it.
pub const BOOT_VFAT_VOLUME_ID: u32 = 0x1234_ABCD;

impl BootFsKind {
    /// What `bootfs UUID=` names and `bootfstype` says.
    pub fn identity(self) -> (String, &'static str) {
        match self {
            BootFsKind::Ext4 => (BOOT_FS_UUID.to_owned(), "ext4"),
            BootFsKind::Vfat => {
                let id = BOOT_VFAT_VOLUME_ID;
                (format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF), "vfat")
            }
        }
    }
}

/// The filesystem of the initoverlayfs image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFsKind {
    #[default]
    Erofs,
    /// `fstype ext4`: mounted through a loop device on every kernel (ext4 needs a block device).
    Ext4,
}

/// Whether a cell's image carries a dm-verity hash tree, and what a fault cell breaks after it
/// was made (`verity` in fixtures/cells.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageVerity {
    /// No hash tree; the config has no root hash (storage-init says the image is unverified).
    #[default]
    Off,
    /// Hash tree appended, root hash in the mini initramfs's config.
    On,
    /// The config's root hash is not the image's.
    WrongRootHash,
    /// A byte of the erofs superblock flipped (its volume name: the UUID stays, so the stale
    /// check passes and dm-verity is what notices).
    FlippedSuperblock,
    /// The image file cut short by the hash tree's last block.
    TruncatedTree,
    /// A byte flipped in the first data block of /etc/verity-probe, which only the second
    /// stage reads (busybox flow).
    FlippedData,
    /// A good image and root hash, but a mini initramfs without the device-mapper modules: a
    /// kernel that cannot verify, which must not boot the image unverified.
    NoDeviceMapper,
}

impl ImageVerity {
    /// Whether the mini initramfs ships dm-verity's modules.
    pub fn ships_modules(self) -> bool {
        !matches!(self, ImageVerity::Off | ImageVerity::NoDeviceMapper)
    }
}

/// Where a real root cell's root filesystem lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootStorage {
    /// An ext4 partition of its own, named by its GPT partition UUID.
    #[default]
    Partition,
    /// ext4 in a LUKS2 container on the partition, unlocked by systemd-cryptsetup in the
    /// second stage with a passphrase the cell types on the console.
    Luks2,
    /// ext4 on a logical volume ([`VOLUME_GROUP`]/[`LOGICAL_VOLUME`]) of a volume group whose
    /// one physical volume is the partition, activated by dracut's lvm module.
    Lvm,
}

/// The LUKS2 container's UUID (`cryptsetup luksFormat --uuid`; `rd.luks.uuid=` names it).
pub const LUKS_UUID: &str = "2d8c6f1e-4b3a-4c5d-9e8f-7a6b5c4d3e2f";
/// The volume group and the logical volume holding the root (`rd.lvm.lv=<vg>/<lv>`).
pub const VOLUME_GROUP: &str = "initoverlayfs";
pub const LOGICAL_VOLUME: &str = "root";

impl RootStorage {
    /// The kernel parameters that name the root: `root=` and what dracut needs to reach it.
    pub fn kernel_params(self) -> String {
        let fs = ROOT_FS_UUID;
        match self {
            RootStorage::Partition => format!("root=PARTUUID={}", ROOT_PART_GUID),
            RootStorage::Luks2 => format!("root=UUID={fs} rd.luks.uuid={LUKS_UUID}"),
            RootStorage::Lvm => {
                format!("root=UUID={fs} rd.lvm.lv={VOLUME_GROUP}/{LOGICAL_VOLUME}")
            }
        }
    }

    /// The root filesystem's source as fstab (and `root=`) names it.
    pub fn fstab_source(self) -> String {
        match self {
            RootStorage::Partition => format!("PARTUUID={}", ROOT_PART_GUID),
            RootStorage::Luks2 | RootStorage::Lvm => {
                format!("UUID={}", ROOT_FS_UUID)
            }
        }
    }

    /// The GPT type of the partition that holds the root.
    pub fn partition_type(self) -> testvm::Guid {
        match self {
            RootStorage::Partition | RootStorage::Luks2 => testvm::Guid::LINUX_FILESYSTEM,
            RootStorage::Lvm => testvm::Guid::LINUX_LVM,
        }
    }

    /// The name cells.toml and the cache use.
    pub fn name(self) -> &'static str {
        match self {
            RootStorage::Partition => "partition",
            RootStorage::Luks2 => "luks2",
            RootStorage::Lvm => "lvm",
        }
    }
}

/// A static program of the storage-init package the mini initramfs can run as PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pid1Binary {
    /// The product.
    #[default]
    StorageInit,
    /// `storage-init/examples/syscall_floor.rs`: the same syscalls without the decisions, the
    /// baseline of `cargo xtask bench-storage-init`.
    SyscallFloor,
    /// `storage-init/examples/boot_sampler.rs`: not a PID 1 but the boot benchmark's guest
    /// probe (`xtask::boot_probe`), built the same way; no cell names it.
    #[serde(skip)]
    BootSampler,
}
