//! The type of the boot filesystem, decided at build time, so the mini initramfs ships the
//! driver that mounts it. In order:
//!
//! 1. the type the caller gives (`--bootfstype`);
//! 2. the type the target's fstab gives for the line `install` took the bootfs from (not
//!    `auto`);
//! 3. the type in the superblock of the device the bootfs names, when this machine has that
//!    device and may read it: `UUID=`, `LABEL=`, `PARTUUID=` and `PARTLABEL=` through udev's
//!    `/dev/disk/by-*` links, a `/dev/…` path as it is; the superblock is read with
//!    storage-init's own probe, the one it uses at boot;
//! 4. else not known (building for another machine is normal): the mini initramfs then ships
//!    the drivers of every filesystem storage-init probes that the target kernel has, so the
//!    type it reads from the superblock at boot can be mounted.
//!
//! 1, 2 and 4 depend only on the inputs; 3 on this machine's devices, which the line
//! [`BootFsType`] prints says. The config keeps `bootfstype` in cases 1 to 3; in case 4
//! storage-init takes the type from the superblock it finds.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use storage_init::config::BootFs;
use storage_init::probe::{
    BTRFS_PROBE_LEN, BTRFS_SUPERBLOCK_OFFSET, PROBE_LEN, Superblock, probe, probe_btrfs,
};

use crate::kernel_config::KernelConfig;
use crate::mini_initramfs::MiniInitramfsReport;
use crate::modules::{KernelModules, ModulesError};

/// Where udev makes the persistent names of block devices.
pub const DEV_DISK: &str = "/dev/disk";

/// The boot filesystem's type and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFsType {
    /// Given by the caller (`--bootfstype`).
    Given(String),
    /// The type column of the fstab line the bootfs was taken from.
    Fstab { fstype: String, fstab: PathBuf },
    /// Read from the superblock of `device`, which `bootfs` names, on this machine.
    Read {
        fstype: String,
        /// How the bootfs was named, for the message (`--bootfs UUID=…`).
        bootfs: String,
        device: PathBuf,
    },
    /// Not known at build time: `why` the device was not read.
    Unknown { why: String },
}

impl BootFsType {
    /// The type, when known: what the config's `bootfstype` says.
    pub fn fstype(&self) -> Option<&str> {
        match self {
            BootFsType::Given(fstype)
            | BootFsType::Fstab { fstype, .. }
            | BootFsType::Read { fstype, .. } => Some(fstype),
            BootFsType::Unknown { .. } => None,
        }
    }
}

/// The start of the one line saying what was chosen and why: `boot filesystem ext4 (from
/// --bootfstype)`, `boot filesystem not known (…)`. For an unknown type the caller says what
/// it ships instead (see [`unknown_line`]).
impl fmt::Display for BootFsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFsType::Given(fstype) => write!(f, "boot filesystem {fstype} (from --bootfstype)"),
            BootFsType::Fstab { fstype, fstab } => {
                write!(f, "boot filesystem {fstype} (from {})", fstab.display())
            }
            BootFsType::Read {
                fstype,
                bootfs,
                device,
            } => write!(
                f,
                "boot filesystem {fstype} (from {bootfs}, read on this machine: {})",
                device.display()
            ),
            BootFsType::Unknown { why } => write!(f, "boot filesystem not known ({why})"),
        }
    }
}

/// The filesystem modules of a mini initramfs, as the boot filesystem's type decides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemModules {
    /// Loaded at start, required: /boot's filesystem when its type is known, the image's, the
    /// overlay, and `loop` and dm-verity where the image needs them
    /// ([`crate::presets::filesystem_modules`]).
    pub required: Vec<String>,
    /// When /boot's type is not known: the modules of every filesystem storage-init probes
    /// that the kernel has, to ship if the kernel has them as modules (a name it has built in
    /// is skipped with a note). Loaded at start and optional (`try`): a driver that fails to
    /// load matters only if /boot turns out to be of its type.
    pub probed: Vec<String>,
    /// The filesystems `probed` mounts, for the message; empty when the type is known.
    pub probed_filesystems: Vec<&'static str>,
}

/// The filesystem modules for `boot` on `kernel`, with an image of type `image_fstype`
/// (`verified`: under dm-verity).
pub fn filesystem_modules(
    kernel: &KernelConfig,
    boot: &BootFsType,
    image_fstype: &str,
    verified: bool,
) -> FilesystemModules {
    let required =
        crate::presets::filesystem_modules(kernel, boot.fstype(), image_fstype, verified);
    if boot.fstype().is_some() {
        return FilesystemModules {
            required,
            probed: Vec::new(),
            probed_filesystems: Vec::new(),
        };
    }
    let probed = crate::presets::probed_filesystem_modules(kernel)
        .into_iter()
        .filter(|module| !required.contains(module))
        .collect();
    FilesystemModules {
        required,
        probed,
        probed_filesystems: crate::presets::probed_filesystems(kernel),
    }
}

/// What shipping every probed filesystem's drivers added to a mini initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbedCost {
    /// Modules beyond those the build ships anyway (its storage drivers, the image's
    /// filesystem, overlay, …).
    pub modules: usize,
    /// Their bytes in the archive, before compression.
    pub bytes: u64,
}

/// The whole line for an unknown type: `boot filesystem not known (why): shipping the drivers
/// of every filesystem storage-init probes that this kernel has (ext4, vfat, …): +N modules,
/// +X KiB before compression; pass --bootfstype to ship one`.
pub fn unknown_line(boot: &BootFsType, filesystems: &[&str], cost: ProbedCost) -> String {
    format!(
        "{boot}: shipping the drivers of every filesystem storage-init probes that this kernel has ({}): +{} modules, +{} KiB before compression; pass --bootfstype to ship one",
        filesystems.join(", "),
        cost.modules,
        cost.bytes.div_ceil(1024)
    )
}

/// Decides the boot filesystem's type (see the module docs). `given` is `--bootfstype`,
/// `fstab` the type column and path of the fstab line the bootfs came from, `bootfs` the
/// bootfs, named for messages as `named` (`--bootfs UUID=…`); `dev_disk` is where udev's
/// links are ([`DEV_DISK`]).
pub fn decide(
    given: Option<&str>,
    fstab: Option<(&str, &Path)>,
    bootfs: Option<&BootFs>,
    named: &str,
    dev_disk: &Path,
) -> BootFsType {
    if let Some(fstype) = given {
        return BootFsType::Given(fstype.to_owned());
    }
    if let Some((fstype, path)) = fstab
        && is_concrete_fstype(fstype)
    {
        return BootFsType::Fstab {
            fstype: fstype.to_owned(),
            fstab: path.to_owned(),
        };
    }
    let Some(bootfs) = bootfs else {
        return BootFsType::Unknown {
            why: "no bootfs".to_owned(),
        };
    };
    match read_on_this_machine(bootfs, dev_disk) {
        Ok((device, superblock)) => BootFsType::Read {
            fstype: superblock.fstype.to_owned(),
            bootfs: named.to_owned(),
            device,
        },
        Err(why) => BootFsType::Unknown {
            why: format!("{named} {why}"),
        },
    }
}

/// An fstab type column that names one filesystem type (not `auto`, not a list).
fn is_concrete_fstype(fstype: &str) -> bool {
    !fstype.is_empty()
        && !matches!(fstype, "auto" | "none" | "swap" | "ignore")
        && fstype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The device `bootfs` names on this machine and the filesystem on it, or why there is none
/// (said after the bootfs, e.g. `is not on this machine (no /dev/disk/by-uuid/…)`).
pub fn read_on_this_machine(
    bootfs: &BootFs,
    dev_disk: &Path,
) -> Result<(PathBuf, Superblock), String> {
    let device = find_device(bootfs, dev_disk)?;
    let file_type = match fs::metadata(&device) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("is not on this machine (no {})", device.display()));
        }
        Err(e) => {
            return Err(format!(
                "cannot be read on this machine ({}: {e})",
                device.display()
            ));
        }
    };
    // A regular file is an image, as a loop device would show it; a character device or a
    // FIFO may block a read or answer anything.
    if !(file_type.is_block_device() || file_type.is_file()) {
        return Err(format!(
            "is not a block device on this machine ({})",
            device.display()
        ));
    }
    let superblock = match read_superblock(&device) {
        Ok(Some(superblock)) => superblock,
        Ok(None) => {
            return Err(format!(
                "holds no filesystem storage-init probes ({})",
                device.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot be read on this machine ({}: {e})",
                device.display()
            ));
        }
    };
    // udev's links are made from these very fields; a mismatch is a stale link.
    let mismatch = match bootfs {
        BootFs::Uuid(uuid) => (!superblock.uuid.eq_ignore_ascii_case(uuid))
            .then(|| format!("UUID {}", superblock.uuid)),
        BootFs::Label(label) => {
            (superblock.label != *label).then(|| format!("label {:?}", superblock.label))
        }
        _ => None,
    };
    if let Some(found) = mismatch {
        return Err(format!(
            "names {}, which holds {found} on this machine",
            device.display()
        ));
    }
    Ok((device, superblock))
}

/// Where `bootfs` is on this machine: the udev link under `dev_disk` (`by-uuid`, `by-label`,
/// `by-partuuid`, `by-partlabel`) that exists, or the `/dev/…` path itself. UUIDs compare
/// without regard to case (udev names a FAT volume's in upper case, the config holds it in
/// lower case); a name is tried as udev encodes it (`\x20` for a space), as it is, and with
/// `_` for what udev replaces.
pub fn find_device(bootfs: &BootFs, dev_disk: &Path) -> Result<PathBuf, String> {
    let (dir, value, any_case) = match bootfs {
        BootFs::Path(path) => return Ok(path.clone()),
        BootFs::Uuid(uuid) => ("by-uuid", uuid, true),
        BootFs::Label(label) => ("by-label", label, false),
        BootFs::PartUuid(uuid) => ("by-partuuid", uuid, true),
        BootFs::PartLabel(label) => ("by-partlabel", label, false),
    };
    let dir = dev_disk.join(dir);
    let mut candidates = vec![udev_encode(value)];
    if !value.contains('/') && value != "." && value != ".." {
        candidates.push(value.clone());
    }
    candidates.push(udev_replace(value));
    for name in &candidates {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_ok() {
            return Ok(link);
        }
    }
    if any_case && let Ok(entries) = fs::read_dir(&dir) {
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.eq_ignore_ascii_case(value))
            .collect();
        names.sort();
        if let Some(name) = names.first() {
            return Ok(dir.join(name));
        }
    }
    Err(format!(
        "is not on this machine (no {})",
        dir.join(&candidates[0]).display()
    ))
}

/// A name as libblkid and udev encode it for a `/dev/disk/by-*` link
/// (`blkid_encode_string`): ASCII letters, digits and `#+-.:=@_` as they are, valid UTF-8
/// beyond ASCII as it is, every other byte as `\xNN`.
pub fn udev_encode(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
    }
    out
}

/// A name with what udev's `string_escape=replace` replaces (whitespace, `/`, …) as `_`.
fn udev_replace(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The filesystem at the start of `path` (a block device or an image file), read the way
/// storage-init reads a device at boot: the probes of the first [`PROBE_LEN`] bytes, then
/// btrfs's superblock at 64 KiB.
pub fn read_superblock(path: &Path) -> io::Result<Option<Superblock>> {
    let mut file = fs::File::open(path)?;
    let head = read_up_to(&mut file, PROBE_LEN)?;
    if let Some(superblock) = probe(&head) {
        return Ok(Some(superblock));
    }
    file.seek(SeekFrom::Start(BTRFS_SUPERBLOCK_OFFSET))?;
    let block = read_up_to(&mut file, BTRFS_PROBE_LEN)?;
    Ok(probe_btrfs(&block))
}

/// Up to `len` bytes from the file's position (fewer at its end).
fn read_up_to(file: &mut fs::File, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What shipping the probed filesystems' modules added to the mini initramfs `report` describes:
/// the modules it ships that the closure of `required` and `baseline_wanted` (the same build
/// without them) does not.
pub fn probed_cost(
    kernel: &KernelModules,
    required: &[String],
    baseline_wanted: &[String],
    report: &MiniInitramfsReport,
) -> Result<ProbedCost, ModulesError> {
    let baseline = if required.is_empty() && baseline_wanted.is_empty() {
        Vec::new()
    } else {
        kernel
            .resolve_with_wanted(required, baseline_wanted)?
            .modules
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    let added: Vec<u64> = report
        .module_bytes
        .iter()
        .filter(|(name, _)| !baseline.contains(name))
        .map(|(_, bytes)| *bytes)
        .collect();
    Ok(ProbedCost {
        modules: added.len(),
        bytes: added.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    const UUID: &str = "3f1b2c4d-5e6f-4a1b-8c2d-0123456789ab";

    /// A real ext4 image made by mkfs.ext4, with a known UUID and label; None (after the skip
    /// rule) without the tool.
    fn ext4_image(dir: &Path) -> Option<PathBuf> {
        let image = dir.join("boot.ext4");
        fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let made = crate::test_tools::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-U", UUID, "-L", "my boot"])
                .arg(&image),
            "",
        );
        made.then_some(image)
    }

    #[test]
    fn the_superblock_of_a_real_image() {
        let work = tempfile::tempdir().unwrap();
        let Some(image) = ext4_image(work.path()) else {
            return;
        };
        let superblock = read_superblock(&image).unwrap().unwrap();
        assert_eq!(superblock.fstype, "ext4");
        assert_eq!(superblock.uuid, UUID);
        assert_eq!(superblock.label, "my boot");

        let fat = work.path().join("esp.vfat");
        if !crate::test_tools::run(
            Command::new("mkfs.vfat")
                .args(["-C", "-i", "0badcafe", "-n", "ESP"])
                .arg(&fat)
                .arg("8192"),
            "",
        ) {
            return;
        }
        let superblock = read_superblock(&fat).unwrap().unwrap();
        assert_eq!(
            (superblock.fstype, superblock.uuid.as_str()),
            ("vfat", "0BAD-CAFE")
        );

        // btrfs keeps its superblock at 64 KiB: the second read finds it.
        let btrfs = work.path().join("boot.btrfs");
        fs::File::create(&btrfs)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        if !crate::test_tools::run(Command::new("mkfs.btrfs").arg("-q").arg(&btrfs), "") {
            return;
        }
        assert_eq!(read_superblock(&btrfs).unwrap().unwrap().fstype, "btrfs");

        let empty = work.path().join("empty");
        fs::write(&empty, [0u8; 100]).unwrap();
        assert_eq!(read_superblock(&empty).unwrap(), None, "short and empty");
    }

    /// A temporary directory stands in for /dev/disk: the by-uuid and by-label links lead to a
    /// real image, and the type read from it is the one decided.
    #[test]
    fn a_bootfs_resolved_through_dev_disk() {
        let work = tempfile::tempdir().unwrap();
        let Some(image) = ext4_image(work.path()) else {
            return;
        };
        let dev_disk = work.path().join("disk");
        for dir in ["by-uuid", "by-label", "by-partuuid"] {
            fs::create_dir_all(dev_disk.join(dir)).unwrap();
        }
        symlink(&image, dev_disk.join("by-uuid").join(UUID.to_uppercase())).unwrap();
        symlink(&image, dev_disk.join("by-label/my\\x20boot")).unwrap();
        symlink(&image, dev_disk.join("by-partuuid/0a0b0c0d-01")).unwrap();

        let uuid = BootFs::Uuid(UUID.to_owned());
        let decided = decide(None, None, Some(&uuid), "--bootfs UUID=…", &dev_disk);
        assert_eq!(
            decided,
            BootFsType::Read {
                fstype: "ext4".into(),
                bootfs: "--bootfs UUID=…".into(),
                device: dev_disk.join("by-uuid").join(UUID.to_uppercase()),
            },
            "found without regard to case"
        );
        assert_eq!(decided.fstype(), Some("ext4"));
        assert!(
            decided
                .to_string()
                .starts_with("boot filesystem ext4 (from --bootfs UUID=…, read on this machine: "),
            "{decided}"
        );
        let label = BootFs::Label("my boot".into());
        let (device, _) = read_on_this_machine(&label, &dev_disk).unwrap();
        assert_eq!(device, dev_disk.join("by-label/my\\x20boot"));
        let partuuid = BootFs::PartUuid("0a0b0c0d-01".into());
        assert!(read_on_this_machine(&partuuid, &dev_disk).is_ok());

        // The link of another filesystem: the superblock says so, and nothing is decided.
        fs::remove_file(dev_disk.join("by-label/my\\x20boot")).unwrap();
        symlink(&image, dev_disk.join("by-label/other")).unwrap();
        let other = BootFs::Label("other".into());
        let why = read_on_this_machine(&other, &dev_disk).unwrap_err();
        assert!(why.contains("holds label \"my boot\""), "{why}");

        // Absent here: not known, and the message says which link was looked for.
        let elsewhere = BootFs::Uuid("00000000-0000-0000-0000-000000000000".into());
        let decided = decide(None, None, Some(&elsewhere), "--bootfs UUID=0…", &dev_disk);
        assert_eq!(decided.fstype(), None);
        let line = decided.to_string();
        assert!(
            line.starts_with(
                "boot filesystem not known (--bootfs UUID=0… is not on this machine (no "
            ) && line.contains("by-uuid/00000000-0000-0000-0000-000000000000"),
            "{line}"
        );
        // A missing /dev/disk altogether (a container): the same.
        let none = work.path().join("no-dev-disk");
        assert_eq!(decide(None, None, Some(&uuid), "x", &none).fstype(), None);
    }

    /// The modules that end up in a mini initramfs on Debian's 6.12 kernel: the resolved
    /// type's driver alone, or (not known) every probed filesystem's.
    #[test]
    fn resolved_and_unknown_on_the_real_debian_kernel() {
        use crate::compress::InitramfsCompression;
        use crate::mini_initramfs::MiniInitramfs;
        let Some(kernel) = crate::real_kernel_tree() else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        let Some(image) = ext4_image(work.path()) else {
            return;
        };
        let dev_disk = work.path().join("disk");
        fs::create_dir_all(dev_disk.join("by-uuid")).unwrap();
        symlink(&image, dev_disk.join("by-uuid").join(UUID)).unwrap();
        let kernel_config = KernelConfig::locate(&kernel.root, &kernel.kver).unwrap();
        let storage_init = work.path().join("storage-init");
        fs::write(&storage_init, b"\x7fELF storage-init stand-in").unwrap();
        let shipped = |bootfs: &BootFs| {
            let boot = decide(None, None, Some(bootfs), "bootfs", &dev_disk);
            let filesystems = filesystem_modules(&kernel_config, &boot, "erofs", false);
            let mini = MiniInitramfs {
                storage_init: storage_init.clone(),
                config: storage_init::config::Config {
                    bootfs: Some(bootfs.clone()),
                    bootfstype: boot.fstype().map(str::to_owned),
                    ..Default::default()
                },
                kernel: kernel.clone(),
                modules: filesystems.required,
                wanted_modules: filesystems.probed,
                mtime: 0,
                compression: InitramfsCompression::None,
            };
            let (_, report) = mini.to_bytes().unwrap();
            (boot, report.module_bytes.into_keys().collect::<Vec<_>>())
        };
        let (boot, modules) = shipped(&BootFs::Uuid(UUID.into()));
        assert_eq!(boot.fstype(), Some("ext4"));
        assert!(modules.iter().any(|m| m == "ext4"), "{modules:?}");
        for other in ["xfs", "btrfs", "vfat"] {
            assert!(!modules.iter().any(|m| m == other), "{other}: {modules:?}");
        }
        let (boot, modules) = shipped(&BootFs::Uuid("00000000-0000-0000-0000-000000000000".into()));
        assert_eq!(boot.fstype(), None);
        for every in ["ext4", "xfs", "btrfs", "vfat", "nls_cp437", "erofs"] {
            assert!(modules.iter().any(|m| m == every), "{every}: {modules:?}");
        }
    }

    #[test]
    fn given_and_fstab_types_come_first() {
        let nowhere = Path::new("/nonexistent/dev/disk");
        let uuid = BootFs::Uuid(UUID.into());
        let given = decide(
            Some("xfs"),
            Some(("ext4", Path::new("/etc/fstab"))),
            Some(&uuid),
            "x",
            nowhere,
        );
        assert_eq!(given, BootFsType::Given("xfs".into()));
        assert_eq!(given.to_string(), "boot filesystem xfs (from --bootfstype)");
        let fstab = decide(
            None,
            Some(("vfat", Path::new("/r/etc/fstab"))),
            Some(&uuid),
            "x",
            nowhere,
        );
        assert_eq!(
            fstab.to_string(),
            "boot filesystem vfat (from /r/etc/fstab)"
        );
        // `auto` names no type: the device decides, here not known.
        let auto = decide(
            None,
            Some(("auto", Path::new("/etc/fstab"))),
            Some(&uuid),
            "x",
            nowhere,
        );
        assert_eq!(auto.fstype(), None);
    }

    #[test]
    fn unreadable_devices_are_not_known() {
        let work = tempfile::tempdir().unwrap();
        // A character device is never read (it may block or answer anything).
        let null = BootFs::Path("/dev/null".into());
        let why = read_on_this_machine(&null, work.path()).unwrap_err();
        assert!(why.contains("is not a block device"), "{why}");
        // A device that holds no filesystem storage-init probes.
        let dev_disk = work.path().join("disk");
        fs::create_dir_all(dev_disk.join("by-partlabel")).unwrap();
        fs::write(work.path().join("blank"), vec![0u8; 4096]).unwrap();
        symlink(
            work.path().join("blank"),
            dev_disk.join("by-partlabel/EFI_System"),
        )
        .unwrap();
        let esp = BootFs::PartLabel("EFI System".into());
        let why = read_on_this_machine(&esp, &dev_disk).unwrap_err();
        assert!(
            why.contains("holds no filesystem storage-init probes"),
            "{why}"
        );
    }

    #[test]
    fn udev_names() {
        assert_eq!(udev_encode("my boot/x"), "my\\x20boot\\x2fx");
        assert_eq!(udev_encode("ESP_1.2#+-:=@"), "ESP_1.2#+-:=@");
        assert_eq!(udev_encode("böot"), "böot");
        assert_eq!(udev_encode("a\\b"), "a\\x5cb");
        assert_eq!(udev_replace("EFI System/x"), "EFI_System_x");
    }

    #[test]
    fn the_unknown_line_names_the_cost_and_the_way_out() {
        let line = unknown_line(
            &BootFsType::Unknown {
                why: "--bootfs UUID=x is not on this machine".into(),
            },
            &["ext4", "vfat", "xfs", "btrfs", "erofs"],
            ProbedCost {
                modules: 12,
                bytes: 5000,
            },
        );
        assert_eq!(
            line,
            "boot filesystem not known (--bootfs UUID=x is not on this machine): shipping the drivers of every filesystem storage-init probes that this kernel has (ext4, vfat, xfs, btrfs, erofs): +12 modules, +5 KiB before compression; pass --bootfstype to ship one"
        );
    }
}
