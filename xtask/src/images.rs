//! Building a cell's boot artefacts from fixtures: the static storage-init, the busybox content
//! tree, its erofs image, the mini initramfs and the GPT disk holding /boot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::disk_spec::{
    BOOT_FS_UUID, BOOT_VFAT_VOLUME_ID, BootFsKind, ImageFsKind, ImageVerity, ROOT_FS_UUID,
    ROOT_PART_GUID, RootStorage,
};
use crate::fixtures::{Fetched, Kernel};
use builder::systemd_initramfs::Pid1;

/// Fixed GUIDs keep the disk image byte-for-byte reproducible.
const DISK_GUID: &str = "6e2b1c3a-7d4f-4a5b-9c8d-0e1f2a3b4c5d";
const BOOT_PART_GUID: &str = "9a8b7c6d-5e4f-4321-8765-43210fedcba9";
/// /boot's partition on a disk that keeps it apart from the ESP ([`build_esp_and_boot_disk`]).
const XBOOT_PART_GUID: &str = "2d7e9f1a-3b5c-4d6e-8f0a-1b2c3d4e5f60";
/// The smallest boot partition: room for the busybox image, the fault cells' extra images, a
/// kernel and a mini initramfs, plus filesystem metadata.
const BOOT_PART_MIB: u64 = 64;
/// The storage preset of every cell's mini initramfs: the boot disk is virtio-blk.
/// The drivers of an empty CD-ROM drive on q35's AHCI controller: both have device aliases, so
/// both are on-demand (ahci for the PCI device at coldplug, sr_mod for the SCSI device that
/// libata's asynchronous port probe creates later, through its uevent).
const CDROM_MODULES: [&str; 2] = ["ahci", "sr_mod"];
/// The writable layer's tmpfs size in the test mini initramfs; the smoke cell checks it.
const OVERLAY_SIZE: &str = "64M";

/// The /init of the busybox content: proves it runs from the overlay and powers off. Its marker
/// goes to /dev/kmsg so it carries the guest's printk timestamp. With `initoverlayfs_test.dmesg`
/// on the command line it prints the kernel log before powering off (for `quiet` boots).
const BUSYBOX_INIT: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
nonce=$($bb sed -n 's/.*initoverlayfs_test\.marker=\([0-9a-z]*\).*/\1/p' /proc/cmdline)
root=$($bb awk '$2 == "/" { print $3 }' /proc/mounts | $bb tail -n 1)
# The overlay's size is its upper layer's (the tmpfs storage-init sized): statfs of / says.
upper=$(( $($bb stat -f -c '%b * %S' /) / 1024 ))k
# storage-init detached its layer mounts: nothing of the image may be mounted on its own.
layers=$($bb awk '$2 ~ "^/run/initoverlayfs"' /proc/mounts | $bb wc -l)
echo "<5>initoverlayfs-test: marker $nonce root=$root upper=$upper layer-mounts=$layers" > /dev/kmsg
# The first read of the probe's data blocks, after storage-init's exec: a verity cell flips a
# byte there, and this line must then never appear.
$bb cat /etc/verity-probe > /dev/null && echo "<5>initoverlayfs-test: read the verity probe" > /dev/kmsg
# A `quiet` boot prints only warnings on the console: replay the kernel log so the harness
# still reads every step, with the guest's timestamps.
case " $($bb cat /proc/cmdline) " in *" initoverlayfs_test.dmesg "*) $bb dmesg ;; esac
$bb sync
$bb poweroff -f
"#;

/// The /init of the `prepare-only` flow's mini initramfs: what systemd does around
/// `initoverlayfs-prepare.service` and `initoverlayfs-switch-root.service`, in busybox sh, with
/// what storage-init left behind reported to /dev/kmsg for the cell to check.
const SERVICE_STAND_IN_INIT: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs -o mode=0755 devtmpfs /dev
$bb mount -t tmpfs -o mode=0755 tmpfs /run
/usr/lib/initoverlayfs/storage-init --prepare-only
echo "<5>initoverlayfs-test: prepare-only exited $?" > /dev/kmsg
root=$($bb awk '$2 == "/initoverlayfs" { print $3 }' /proc/mounts)
boot=$($bb awk '$2 == "/initoverlayfs/boot" { split($4, o, ","); print o[1] }' /proc/mounts)
echo "<5>initoverlayfs-test: /initoverlayfs is $root, its /boot is $boot" > /dev/kmsg
for m in /dev /proc /sys /run; do $bb mount --move $m /initoverlayfs$m; done
exec $bb switch_root /initoverlayfs /init
"#;
/// Where the service units expect the binary.
const SERVICE_STORAGE_INIT: &str = "/usr/lib/initoverlayfs/storage-init";

/// A file on every test /boot that is not a filesystem (`initoverlayfs.fs=corrupt.img`).
pub const CORRUPT_IMAGE: &str = "corrupt.img";
/// A valid erofs image on every test /boot that the mini initramfs does not record
/// (`initoverlayfs.fs=stale.img`).
pub const STALE_IMAGE: &str = "stale.img";
const CORRUPT_IMAGE_LEN: usize = 64 * 1024;

/// Deterministic noise (xorshift64), so the disk stays reproducible.
fn corrupt_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The ext4 image's UUID (fixed: the disk stays reproducible).
const EXT4_IMAGE_UUID: &str = "5e7a1c2b-3d4e-4f50-8a9b-0c1d2e3f4a5b";
/// Room for the busybox content and ext4's metadata.
const EXT4_IMAGE_MIB: u64 = 16;

/// How a cell's disk and images are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    pub boot_fs: BootFsKind,
    pub image_fs: ImageFsKind,
    /// The machine has an empty CD-ROM drive on SATA: ship its drivers (AHCI, SCSI CD-ROM),
    /// which load on demand.
    pub empty_cdrom: bool,
    /// Write the mini initramfs uncompressed, because the flow appends another archive to it:
    /// the kernel's zstd decoder reads frames up to the end of the file, so a zstd archive must
    /// be the last one (dracut, too, puts its uncompressed early-microcode archive first).
    pub uncompressed: bool,
    /// The boot disk's bus: its storage preset goes in the mini initramfs.
    pub bus: crate::cells::Bus,
    /// The boot partition's least size in MiB (0: only what [`boot_partition_mib`] gives),
    /// for a /boot that must take files the guest writes later.
    pub boot_min_mib: u64,
    /// A dm-verity hash tree on the image (and what a fault cell breaks).
    pub verity: ImageVerity,
}

impl Layout {
    /// The layout `cell` asks for.
    pub fn of(cell: &crate::cells::Cell) -> Layout {
        use crate::cells::{DOGFOOD_ESP_MIB, Flow};
        Layout {
            boot_fs: cell.boot_fs,
            image_fs: cell.image_fs,
            verity: cell.verity,
            empty_cdrom: cell.empty_cdrom,
            uncompressed: cell.flow == Flow::PrepareOnly || cell.broken_module.is_some(),
            bus: cell.bus,
            boot_min_mib: if cell.flow == Flow::Dogfood {
                DOGFOOD_ESP_MIB
            } else {
                0
            },
        }
    }
}

/// What a real root cell's second partition holds.
#[derive(Debug, Clone, Copy)]
pub enum RootPartition<'a> {
    /// An ext4 filesystem made here from this directory, owners kept.
    Ext4(&'a Path),
    /// As `Ext4`, with `room_mib` more free space: for a guest that installs packages.
    Ext4WithRoom { dir: &'a Path, room_mib: u64 },
    /// A partition image made elsewhere (`root_storage`'s LUKS2 container or LVM physical
    /// volume), laid in as it is.
    Image {
        path: &'a Path,
        type_guid: testvm::Guid,
    },
}

/// Everything a cell boots from.
#[derive(Debug, Clone)]
pub struct BootArtefacts {
    pub mini_initramfs: PathBuf,
    /// The initoverlayfs image (erofs, or ext4 where the cell says so).
    pub image: PathBuf,
    pub disk: PathBuf,
}

/// Lays out the busybox content tree in `dir` (emptied first).
pub fn busybox_content(busybox: &Fetched, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    for sub in ["bin", "dev", "etc", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    // /boot is left out on purpose: storage-init must create the mountpoint in the overlay.
    let binary = busybox.root.join("bin/busybox");
    std::fs::copy(&binary, dir.join("bin/busybox"))
        .with_context(|| format!("copying {}", binary.display()))?;
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh"))?;
    // Marks the content as an initrd (systemd's initrd mode; storage-init warns without it).
    std::fs::write(
        dir.join("etc/initrd-release"),
        "NAME=\"initoverlayfs-rs busybox test content\"\n",
    )?;
    let init = dir.join("init");
    std::fs::write(&init, BUSYBOX_INIT)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join(VERITY_PROBE), verity_probe())?;
    Ok(())
}

/// A file of the busybox content that only the content's /init reads, after the handover:
/// big enough that its first block is a data block of its own (erofs inlines only a file's
/// tail), starting with a marker that finds it in the uncompressed image.
const VERITY_PROBE: &str = "etc/verity-probe";
const VERITY_PROBE_MARKER: &[u8] = b"initoverlayfs-rs verity probe, a data block of its own\n";
const VERITY_PROBE_LEN: usize = 12 * 1024;

fn verity_probe() -> Vec<u8> {
    let mut bytes = VERITY_PROBE_MARKER.to_vec();
    bytes.extend(corrupt_bytes(VERITY_PROBE_LEN - VERITY_PROBE_MARKER.len()));
    bytes
}

/// Byte 64 of the erofs superblock (at 1024): the first of its volume name.
const EROFS_VOLUME_NAME_BYTE: usize = 1024 + 64;

/// Appends the hash tree to `image` and breaks what `mode` says; returns the parameters the
/// config records.
fn apply_verity(image: &Path, mode: ImageVerity) -> Result<Option<storage_init::verity::Verity>> {
    if mode == ImageVerity::Off {
        return Ok(None);
    }
    let mut verity = builder::verity::append_hash_tree(image)
        .with_context(|| format!("adding the hash tree to {}", image.display()))?;
    let flip = |at: usize| -> Result<()> {
        let mut bytes = std::fs::read(image)?;
        bytes[at] ^= 0x01;
        std::fs::write(image, bytes)?;
        Ok(())
    };
    match mode {
        ImageVerity::Off | ImageVerity::On | ImageVerity::NoDeviceMapper => {}
        ImageVerity::WrongRootHash => {
            let first = u8::from_str_radix(&verity.root_hash[..2], 16)? ^ 0xff;
            verity.root_hash = format!("{first:02x}{}", &verity.root_hash[2..]);
        }
        ImageVerity::FlippedSuperblock => flip(EROFS_VOLUME_NAME_BYTE)?,
        ImageVerity::TruncatedTree => {
            let file = std::fs::OpenOptions::new().write(true).open(image)?;
            let bytes = file.metadata()?.len();
            file.set_len(bytes - storage_init::verity::BLOCK_SIZE)?;
        }
        ImageVerity::FlippedData => {
            let bytes = std::fs::read(image)?;
            let at = bytes
                .windows(VERITY_PROBE_MARKER.len())
                .position(|w| w == VERITY_PROBE_MARKER)
                .with_context(|| {
                    format!(
                        "{}: the verity probe is not stored plainly in it (a compressed image?)",
                        image.display()
                    )
                })?;
            anyhow::ensure!(
                at % storage_init::verity::BLOCK_SIZE as usize == 0,
                "{}: the verity probe starts at byte {at}, not at a block: it may share a block storage-init reads",
                image.display()
            );
            flip(at + 100)?;
        }
    }
    Ok(Some(verity))
}

/// What firmware needs on the ESP to boot a cell the way a machine does: systemd-boot at the
/// removable-media path, a loader.conf that boots the one entry at once, and a Boot Loader
/// Specification entry naming the kernel, the mini initramfs (under Debian's initrd name, as
/// `builder install` puts it) and the command line.
#[derive(Debug, Clone)]
pub struct EspBoot {
    /// systemd-boot's EFI binary.
    pub loader: PathBuf,
    /// Where on the ESP (`EFI/BOOT/BOOTX64.EFI`).
    pub removable_path: String,
    /// The kernel command line of the entry.
    pub cmdline: String,
    /// Instead of systemd-boot and the entry: this Unified Kernel Image (kernel, mini
    /// initramfs and `cmdline` in one file) at `removable_path`, started by firmware itself.
    pub uki: Option<crate::secure_boot::UkiSpec>,
}

/// The entry's file name: Debian's machine-id-less form.
fn bls_entry_name(release: &str) -> String {
    format!("debian-{release}.conf")
}

/// Lays out `esp` (the /boot directory that becomes the ESP) for `boot`, with `kernel`'s
/// vmlinuz and `mini_initramfs` as the entry's files, or, for a UKI, inside the one image.
fn populate_esp(esp: &Path, boot: &EspBoot, kernel: &Kernel, mini_initramfs: &Path) -> Result<()> {
    let release = &kernel.release;
    if let Some(uki) = &boot.uki {
        // Beside the ESP's directory: the scratch files are no part of the disk.
        let scratch = esp.with_file_name("uki");
        let image = scratch.join("uki.efi");
        crate::secure_boot::build_uki(
            uki,
            &kernel.vmlinuz,
            release,
            mini_initramfs,
            &boot.cmdline,
            &scratch,
            &image,
        )
        .with_context(|| format!("building the cell's UKI ({:?})", uki.kind))?;
        copy_into(esp, &image, &boot.removable_path)?;
        return Ok(());
    }
    copy_into(esp, &kernel.vmlinuz, &format!("vmlinuz-{release}"))?;
    copy_into(esp, mini_initramfs, &format!("initrd.img-{release}"))?;
    write_esp_loader(esp, boot, release)
}

/// Copies `from` to `dir/to`, making the directories on the way; returns the bytes copied.
pub(crate) fn copy_into(dir: &Path, from: &Path, to: &str) -> Result<u64> {
    let target = dir.join(to);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &target)
        .with_context(|| format!("copying {} to {}", from.display(), target.display()))
}

/// systemd-boot, its loader.conf and the one BLS entry on `esp`, which loads
/// `/vmlinuz-<release>` and `/initrd.img-<release>` from the ESP's root (the files themselves
/// are the caller's).
fn write_esp_loader(esp: &Path, boot: &EspBoot, release: &str) -> Result<()> {
    copy_into(esp, &boot.loader, &boot.removable_path)?;
    let entries = esp.join("loader/entries");
    std::fs::create_dir_all(&entries)?;
    let entry = bls_entry_name(release);
    // `timeout 0` boots the default at once; the menu can still be had by holding a key.
    std::fs::write(
        esp.join("loader/loader.conf"),
        format!("timeout 0\ndefault {entry}\n"),
    )?;
    std::fs::write(
        entries.join(&entry),
        format!(
            "title Debian GNU/Linux {release} (initoverlayfs)\n\
             version {release}\n\
             linux /vmlinuz-{release}\n\
             initrd /initrd.img-{release}\n\
             options {}\n",
            boot.cmdline
        ),
    )?;
    Ok(())
}

/// `work/boot`, emptied (a cell's build directory is reused), and the image path in it.
fn empty_boot(work: &Path, kernel: &Kernel) -> Result<(PathBuf, PathBuf)> {
    let boot = work.join("boot");
    if boot.exists() {
        std::fs::remove_dir_all(&boot).with_context(|| format!("emptying {}", boot.display()))?;
    }
    std::fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    let image = boot.join(format!("initoverlayfs-{}.img", kernel.release));
    Ok((boot, image))
}

/// Builds every artefact of a busybox cell into `work`; with `esp`, /boot is also an ESP that
/// firmware boots from.
/// `shell`: a static shell (busybox) the mini initramfs carries as `/bin/sh`, for
/// storage-init's `shell` emergency action (`vm-test --shell`).
pub fn build_busybox_cell(
    storage_init: &Path,
    kernel: &Kernel,
    busybox: &Fetched,
    layout: Layout,
    esp: Option<&EspBoot>,
    shell: Option<&Path>,
    work: &Path,
) -> Result<BootArtefacts> {
    let content = work.join("content");
    busybox_content(busybox, &content)?;
    let (boot, image) = empty_boot(work, kernel)?;
    // For the corrupt-image fault cell: bytes that are no filesystem, the same on every build.
    std::fs::write(boot.join(CORRUPT_IMAGE), corrupt_bytes(CORRUPT_IMAGE_LEN))?;
    let image_uuid = match layout.image_fs {
        ImageFsKind::Erofs => build_erofs(&content, &image)?,
        ImageFsKind::Ext4 => {
            let uuid = EXT4_IMAGE_UUID
                .parse::<testvm::Guid>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            testvm::disk::write_ext4_image(
                &content,
                uuid,
                "initoverlayfs",
                EXT4_IMAGE_MIB,
                testvm::disk::source_date_epoch(),
                &image,
            )
            .with_context(|| format!("building {}", image.display()))?;
            EXT4_IMAGE_UUID.to_owned()
        }
    };
    // For the stale-image fault cell: a valid image, but not the one the mini initramfs records.
    std::fs::write(
        content.join("etc/stale"),
        "built after the mini initramfs\n",
    )?;
    build_erofs(&content, &boot.join(STALE_IMAGE))?;
    finish_cell(
        storage_init,
        kernel,
        layout,
        esp,
        shell,
        None,
        work,
        image,
        &image_uuid,
        None,
    )
}

/// The newc archive of `dir` (owners root, as a packaged initramfs has them): the classic
/// initramfs a generator would make of that content.
fn archive_of_dir(dir: &Path) -> Result<builder::cpio::Archive> {
    fn add(archive: &mut builder::cpio::Archive, dir: &Path, inside: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = format!("{inside}/{}", entry.file_name().to_string_lossy());
            let metadata = std::fs::symlink_metadata(&path)?;
            let mode = metadata.permissions().mode() & 0o7777;
            if metadata.is_symlink() {
                let target = std::fs::read_link(&path)?;
                archive.add_symlink(&name, &target.to_string_lossy())?;
            } else if metadata.is_dir() {
                archive.add_dir(&name, mode)?;
                add(archive, &path, &name)?;
            } else {
                archive.add_file(&name, mode, std::fs::read(&path)?)?;
            }
        }
        Ok(())
    }
    let mut archive = builder::cpio::Archive::new();
    add(&mut archive, dir, "")?;
    Ok(archive)
}

/// What a kernel-install UKI cell is made with besides the kernel: this run's programs.
#[derive(Debug, Clone, Copy)]
pub struct KernelInstallPrograms<'a> {
    pub kernel_install: &'a crate::kernel_install::KernelInstall,
    pub builder: &'a Path,
    pub storage_init: &'a Path,
}

/// Builds a kernel-install UKI cell into `work` (`uki = "kernel-install"`): the busybox content
/// archived as the classic initramfs, systemd's kernel-install (`layout=uki`) run with
/// builder's plugins on a tree whose fstab names the ESP, so the UKI carries the mini
/// initramfs and its image lands in `$BOOT/<entry-token>/<kver>/`; the ESP holds what
/// kernel-install put in `$BOOT` and systemd-boot, signed with the run's key like the UKI.
/// Returns the UKI and the disk.
pub fn build_kernel_install_uki_cell(
    sh: &xshell::Shell,
    kernel: &Kernel,
    busybox: &Fetched,
    programs: KernelInstallPrograms<'_>,
    esp: &EspBoot,
    layout: Layout,
    work: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let keys = esp
        .uki
        .as_ref()
        .and_then(|uki| uki.keys.as_ref())
        .context("a kernel-install UKI is signed with the run's key")?;
    let content = work.join("content");
    busybox_content(busybox, &content)?;
    let classic = work.join("classic-initramfs.img");
    std::fs::write(
        &classic,
        archive_of_dir(&content)?.to_bytes(builder::source_date_epoch()?)?,
    )?;
    let config = kernel
        .modules_root()
        .join(format!("boot/config-{}", kernel.release));
    let uki_kernel = crate::kernel_install::UkiKernel {
        release: &kernel.release,
        vmlinuz: &kernel.vmlinuz,
        modules_root: kernel.modules_root(),
        config: &config,
        classic_initrd: &classic,
    };
    let tree = work.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("emptying {}", tree.display()))?;
    }
    crate::kernel_install::make_tree(
        &tree,
        &uki_kernel,
        programs.storage_init,
        programs.builder,
        &format!("UUID={}", layout.boot_fs.identity().0),
        &esp.cmdline,
        Some(keys),
    )?;
    let (uki, output) =
        crate::kernel_install::add(sh, programs.kernel_install, &tree, &uki_kernel)?;
    std::fs::write(work.join("kernel-install.log"), &output)?;
    let (boot, _) = empty_boot(work, kernel)?;
    let image = crate::kernel_install::image_path(&tree, &kernel.release);
    for file in [&uki, &image] {
        let relative = file.strip_prefix(tree.join("boot"))?;
        copy_into(&boot, file, &relative.to_string_lossy())?;
    }
    let loader = boot.join(&esp.removable_path);
    std::fs::create_dir_all(loader.parent().unwrap())?;
    builder::uki::sign(&esp.loader, &keys.key, &keys.cert, &loader)?;
    // systemd-boot finds the UKI in EFI/Linux by itself; `timeout 0` boots it at once.
    std::fs::create_dir_all(boot.join("loader"))?;
    std::fs::write(
        boot.join("loader/loader.conf"),
        "timeout 0
",
    )?;
    let disk = work.join("disk.img");
    build_boot_disk(&boot, layout, None, &disk)?;
    Ok((uki, disk))
}

/// Builds the artefacts of a cell whose initoverlayfs is a real second stage: the dracut
/// (systemd) initramfs `second_stage`, unpacked into an erofs image as `builder image` does,
/// but uncompressed (`builder image` defaults to lz4hc). `shell` as for [`build_busybox_cell`].
#[allow(clippy::too_many_arguments)] // one call per flow, each naming what it builds
pub fn build_second_stage_cell(
    storage_init: &Path,
    kernel: &Kernel,
    second_stage: &Path,
    pid1: Pid1,
    real_root: Option<RootPartition<'_>>,
    layout: Layout,
    esp: Option<&EspBoot>,
    shell: Option<&Path>,
    work: &Path,
) -> Result<BootArtefacts> {
    let (_, image) = empty_boot(work, kernel)?;
    let options = builder::erofs::ErofsOptions {
        mtime: builder::source_date_epoch()?,
        compression: None,
        // An initramfs's owners are the image's (dracut's are all root, but not by rule).
        keep_owners: true,
        pcluster_bytes: None,
    };
    let report = builder::image::image_from_initramfs(second_stage, &image, &options)
        .with_context(|| {
            format!(
                "building {} from {}",
                image.display(),
                second_stage.display()
            )
        })?;
    let systemd_from = match pid1 {
        Pid1::StorageInit => None,
        Pid1::Systemd => Some(second_stage),
    };
    finish_cell(
        storage_init,
        kernel,
        layout,
        esp,
        shell,
        real_root,
        work,
        image,
        &report.erofs.uuid,
        systemd_from,
    )
}

/// The classic boot beside the real chain: the same second stage, loaded whole as the
/// initramfs (no storage-init, no image), on the same disk layout. Returns the disk.
pub fn build_classic_cell(
    kernel: &Kernel,
    initramfs: &Path,
    real_root: Option<RootPartition<'_>>,
    layout: Layout,
    esp: Option<&EspBoot>,
    work: &Path,
) -> Result<PathBuf> {
    empty_boot(work, kernel)?;
    boot_disk(kernel, initramfs, layout, esp, real_root, work)
}

/// Where a real root cell's fstab finds / and /boot on the disk [`build_boot_disk`] makes,
/// with the root stored as `storage` says.
pub fn root_spec(boot_fs: BootFsKind, storage: RootStorage) -> crate::debian_tree::RootSpec {
    let (boot, boot_fstype) = boot_fs.identity();
    crate::debian_tree::RootSpec {
        root: storage.fstab_source(),
        root_fstype: "ext4".to_owned(),
        boot: format!("UUID={boot}"),
        boot_fstype: boot_fstype.to_owned(),
    }
}

/// The mini initramfs recording `image`, the ESP's boot files where the cell boots through
/// firmware, and the disk holding `work/boot`.
#[allow(clippy::too_many_arguments)] // one call per flow, each naming what it builds
fn finish_cell(
    storage_init: &Path,
    kernel: &Kernel,
    mut layout: Layout,
    esp: Option<&EspBoot>,
    shell: Option<&Path>,
    real_root: Option<RootPartition<'_>>,
    work: &Path,
    image: PathBuf,
    image_uuid: &str,
    systemd_from: Option<&Path>,
) -> Result<BootArtefacts> {
    let verity = apply_verity(&image, layout.verity)?;
    let mini_initramfs = work.join("mini-initramfs.img");
    // The shell comes in a second archive, which a compressed first one must not precede.
    layout.uncompressed |= shell.is_some();
    build_mini_initramfs(
        storage_init,
        kernel,
        layout,
        image_uuid,
        verity.as_ref(),
        systemd_from,
        &mini_initramfs,
    )?;
    if let Some(shell) = shell {
        add_shell(&mini_initramfs, shell)?;
    }
    let disk = boot_disk(kernel, &mini_initramfs, layout, esp, real_root, work)?;
    Ok(BootArtefacts {
        mini_initramfs,
        image,
        disk,
    })
}

/// `work/disk.img` from `work/boot` (and the real root, if any); with `esp`, /boot is first
/// made an ESP whose boot entry loads `initramfs`.
fn boot_disk(
    kernel: &Kernel,
    initramfs: &Path,
    layout: Layout,
    esp: Option<&EspBoot>,
    real_root: Option<RootPartition<'_>>,
    work: &Path,
) -> Result<PathBuf> {
    let boot = work.join("boot");
    if let Some(esp) = esp {
        populate_esp(&boot, esp, kernel, initramfs)?;
    }
    let disk = work.join("disk.img");
    build_boot_disk(&boot, layout, real_root, &disk)?;
    Ok(disk)
}

/// What goes into the dogfood root for one run: this run's programs and the guest's driver.
#[derive(Debug, Clone, Copy)]
pub struct DogfoodGuest<'a> {
    pub programs: GuestPrograms<'a>,
    pub driver: crate::cells::GuestDriver,
}

/// The package cell's ESP: the kernel's files, its converted pair and a second kernel's (about
/// 60 MiB each) with room to spare.
const PACKAGE_CELL_BOOT_MIB: u64 = 512;
/// The package cell's room in the root for a second kernel: its .deb (70 MiB) and its modules
/// (400 MiB unpacked for Debian's 6.1).
const PACKAGE_CELL_ROOT_ROOM_MIB: u64 = 1024;

/// How this run's programs reach the dogfood root.
#[derive(Debug, Clone, Copy)]
pub enum GuestPrograms<'a> {
    /// builder and storage-init, installed where the README installs them by hand.
    HandInstalled {
        builder: &'a Path,
        storage_init: &'a Path,
    },
    /// .deb files for the guest to install with apt, each in its directory of
    /// `dogfood::GUEST_DEBS` (`package/`, `upgrade/`, `kernel/`), and the second kernel's
    /// release.
    Packages {
        /// The package as `cargo xtask dist` builds it.
        package: &'a Path,
        /// The same, with a later version: what an upgrade installs.
        upgrade: &'a Path,
        /// A second kernel's package.
        kernel: &'a Path,
        second_kernel: &'a str,
    },
}

/// Builds the dogfood cell's disk into `work` (see `xtask::dogfood`): the ESP holds what the
/// kernel package and dracut's hook put in /boot (`vmlinuz-`, `config-`, `System.map-`,
/// `initrd.img-<kver>`: the classic initramfs, whole) and systemd-boot with the entry that
/// loads them; the root is the dogfood root, hard-linked, with the guest's driver and this
/// run's builder and storage-init copied in where the README installs them. Returns the disk.
pub fn build_dogfood_cell(
    kernel: &Kernel,
    dogfood: &crate::dogfood::DogfoodRoot,
    guest: &DogfoodGuest<'_>,
    layout: Layout,
    esp: &EspBoot,
    work: &Path,
) -> Result<PathBuf> {
    let DogfoodGuest { programs, driver } = *guest;
    let (boot, _) = empty_boot(work, kernel)?;
    for entry in std::fs::read_dir(&dogfood.boot)
        .with_context(|| format!("listing {}", dogfood.boot.display()))?
    {
        let entry = entry?;
        copy_into(&boot, &entry.path(), &entry.file_name().to_string_lossy())?;
    }
    write_esp_loader(&boot, esp, &kernel.release)?;
    let root = work.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("emptying {}", root.display()))?;
    }
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--link")
        .arg(&dogfood.root)
        .arg(&root)
        .status()
        .context("running cp")?;
    if !status.success() {
        anyhow::bail!(
            "hard-linking {} to {}: cp {status}",
            dogfood.root.display(),
            root.display()
        );
    }
    crate::dogfood::add_guest_driver(&root, driver)?;
    // Fresh files (never written through a link into the cache).
    match programs {
        GuestPrograms::HandInstalled {
            builder,
            storage_init,
        } => {
            // As `install -m755` makes them.
            for (from, to) in [
                (builder, crate::dogfood::GUEST_BUILDER),
                (storage_init, crate::dogfood::GUEST_STORAGE_INIT),
            ] {
                let target = root.join(to);
                let _ = std::fs::remove_file(&target); // absent in the root: fine
                copy_into(&root, from, to)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        GuestPrograms::Packages {
            package,
            upgrade,
            kernel,
            second_kernel,
        } => {
            let dir = Path::new(crate::dogfood::GUEST_DEBS);
            for (sub, deb) in [
                ("package", package),
                ("upgrade", upgrade),
                ("kernel", kernel),
            ] {
                let name = deb.file_name().context("a .deb path without a file name")?;
                copy_into(&root, deb, &dir.join(sub).join(name).to_string_lossy())?;
            }
            let release = root.join(dir).join(crate::dogfood::SECOND_KERNEL_FILE);
            std::fs::write(&release, format!("{second_kernel}\n"))
                .with_context(|| format!("writing {}", release.display()))?;
        }
    }
    // A second kernel takes room on both: its modules in the root, its kernel, classic
    // initramfs, image and mini initramfs on the ESP.
    let (layout, real_root) = match programs {
        GuestPrograms::HandInstalled { .. } => (layout, RootPartition::Ext4(&root)),
        GuestPrograms::Packages { .. } => (
            Layout {
                boot_min_mib: layout.boot_min_mib.max(PACKAGE_CELL_BOOT_MIB),
                ..layout
            },
            RootPartition::Ext4WithRoom {
                dir: &root,
                room_mib: PACKAGE_CELL_ROOT_ROOM_MIB,
            },
        ),
    };
    let disk = work.join("disk.img");
    build_boot_disk(&boot, layout, Some(real_root), &disk)?;
    Ok(disk)
}

/// A partition that holds `dir` with room to spare: at least [`BOOT_PART_MIB`], else twice the
/// contents (a kernel update writes the new image beside the old before replacing it; a root
/// needs room to run) and 16 MiB for the filesystem's own structures.
pub(crate) fn boot_partition_mib(boot: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            total += if metadata.is_dir() {
                bytes(&entry.path())?
            } else {
                metadata.len()
            };
        }
        Ok(total)
    }
    let contents_mib = bytes(boot)?.div_ceil(1 << 20);
    Ok(BOOT_PART_MIB.max(2 * contents_mib + 16))
}

/// Turns a built mini initramfs into the `prepare-only` flow's: a second newc archive appended
/// to it (the kernel unpacks them in order, a later file replacing an earlier one) carries
/// storage-init at the units' path, busybox, an initrd-release and the stand-in /init.
pub fn add_service_stand_in(
    mini_initramfs: &Path,
    storage_init: &Path,
    busybox: &Fetched,
) -> Result<()> {
    let mut archive = builder::cpio::Archive::new();
    for dir in ["/bin", "/usr", "/usr/lib", "/usr/lib/initoverlayfs"] {
        archive.add_dir(dir, 0o755)?;
    }
    archive.add_file_from_host(SERVICE_STORAGE_INIT, 0o755, storage_init)?;
    archive.add_file_from_host("/bin/busybox", 0o755, &busybox.root.join("bin/busybox"))?;
    archive.add_file(
        "/etc/initrd-release",
        0o644,
        b"NAME=\"initoverlayfs-rs service-mode test initramfs\"\n".to_vec(),
    )?;
    archive.add_file("/init", 0o755, SERVICE_STAND_IN_INIT.as_bytes().to_vec())?;
    append_archive(mini_initramfs, &archive)
}

/// Appends a second newc archive to an uncompressed mini initramfs holding `shell` (a static
/// busybox) as `/bin/busybox` and `/bin/sh`: storage-init's `shell` emergency action execs it.
pub fn add_shell(mini_initramfs: &Path, shell: &Path) -> Result<()> {
    let mut archive = builder::cpio::Archive::new();
    archive.add_dir("/bin", 0o755)?;
    archive.add_file_from_host("/bin/busybox", 0o755, shell)?;
    archive.add_symlink("/bin/sh", "busybox")?;
    append_archive(mini_initramfs, &archive)
}

/// Appends `archive` to a mini initramfs: the kernel unpacks them in order, a later file
/// replacing an earlier one.
fn append_archive(mini_initramfs: &Path, archive: &builder::cpio::Archive) -> Result<()> {
    let bytes = archive.to_bytes(builder::source_date_epoch()?)?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(mini_initramfs)
        .with_context(|| format!("opening {}", mini_initramfs.display()))?;
    std::io::Write::write_all(&mut file, &bytes)
        .with_context(|| format!("appending to {}", mini_initramfs.display()))?;
    Ok(())
}

/// Replaces module `name` of an uncompressed mini initramfs with bytes that are no module, in
/// a second archive at the path the module list names: the kernel refuses it (a fault cell's
/// module that fails to load).
pub fn break_module(mini_initramfs: &Path, name: &str) -> Result<()> {
    let bytes = std::fs::read(mini_initramfs)
        .with_context(|| format!("reading {}", mini_initramfs.display()))?;
    let entries = builder::cpio::read_archive(&bytes)
        .with_context(|| format!("reading {} (uncompressed?)", mini_initramfs.display()))?;
    let file = format!("/{name}.ko");
    let path = entries
        .iter()
        .map(|e| e.name.trim_start_matches('/'))
        .find(|n| n.starts_with("lib/modules/") && n.ends_with(&file))
        .with_context(|| format!("{} ships no module {name}", mini_initramfs.display()))?
        .to_owned();
    let mut archive = builder::cpio::Archive::new();
    archive.add_file(
        &format!("/{path}"),
        0o644,
        b"not a kernel module\n".to_vec(),
    )?;
    append_archive(mini_initramfs, &archive)
}

/// Builds an erofs image of `content`; returns its UUID.
pub fn build_erofs(content: &Path, image: &Path) -> Result<String> {
    let options = builder::erofs::ErofsOptions {
        mtime: builder::source_date_epoch()?,
        compression: None,
        keep_owners: false,
        pcluster_bytes: None,
    };
    let report = builder::erofs::build_erofs(content, image, &options)
        .with_context(|| format!("building {}", image.display()))?;
    Ok(report.uuid)
}

/// The cell's mini initramfs at `output`: storage-init as /init, or with `systemd_from`, systemd
/// (taken from that initramfs) as /init and storage-init as its service.
pub fn build_mini_initramfs(
    storage_init: &Path,
    kernel: &Kernel,
    layout: Layout,
    image_uuid: &str,
    verity: Option<&storage_init::verity::Verity>,
    systemd_from: Option<&Path>,
    output: &Path,
) -> Result<()> {
    let (uuid, fstype) = layout.boot_fs.identity();
    let config = storage_init::config::Config {
        bootfs: Some(storage_init::config::BootFs::Uuid(
            uuid.to_ascii_lowercase(),
        )),
        bootfstype: Some(fstype.to_owned()),
        // A failed boot must end the VM, so a fault cell finishes as soon as it has spoken.
        emergency: storage_init::config::Emergency::PowerOff,
        overlay_size: Some(OVERLAY_SIZE.to_owned()),
        kernel_release: Some(kernel.release.clone()),
        image_uuid: Some(image_uuid.to_owned()),
        verity_root_hash: verity.map(|v| v.root_hash.clone()),
        verity_salt: verity.map(|v| v.salt.clone()),
        verity_data_blocks: verity.map(|v| v.data_blocks),
        fstype: match layout.image_fs {
            ImageFsKind::Erofs => "erofs".to_owned(),
            ImageFsKind::Ext4 => "ext4".to_owned(),
        },
        ..storage_init::config::Config::default()
    };
    let (required, wanted) = modules_for(kernel, layout)?;
    // As `builder initramfs` does by default: the first of zstd, gzip, ... the kernel unpacks.
    let compression = if layout.uncompressed {
        builder::compress::InitramfsCompression::None
    } else {
        builder::kernel_config::KernelConfig::locate(kernel.modules_root(), &kernel.release)?
            .initramfs_compression(None)?
    };
    let spec = builder::mini_initramfs::MiniInitramfs {
        storage_init: storage_init.to_path_buf(),
        config,
        kernel: builder::modules::KernelModules::new(kernel.modules_root(), &kernel.release),
        modules: required,
        wanted_modules: wanted,
        mtime: builder::source_date_epoch()?,
        compression,
    };
    match systemd_from {
        None => spec
            .write(output)
            .map(drop)
            .with_context(|| format!("building {}", output.display()))?,
        Some(systemd_from) => builder::systemd_initramfs::SystemdInitramfs {
            base: spec,
            systemd_from: systemd_from.to_owned(),
        }
        .write(output)
        .map(drop)
        .with_context(|| {
            format!(
                "building {} with systemd from {}",
                output.display(),
                systemd_from.display()
            )
        })?,
    }
    Ok(())
}

/// The modules the mini initramfs loads on `kernel`: the virtio-blk preset and the /boot
/// filesystem's, plus `loop` when the image needs one: erofs before 6.12 (no file-backed
/// The modules of a cell's mini initramfs, as `builder mini-initramfs` chooses them: the
/// filesystems' for this kernel (required) and the storage preset's drivers (on demand), plus
/// the CD-ROM drivers where the cell has one. Returns (required, wanted).
fn modules_for(kernel: &Kernel, layout: Layout) -> Result<(Vec<String>, Vec<String>)> {
    let config =
        builder::kernel_config::KernelConfig::locate(kernel.modules_root(), &kernel.release)?;
    let (_, boot_fstype) = layout.boot_fs.identity();
    let image_fstype = match layout.image_fs {
        ImageFsKind::Erofs => "erofs",
        ImageFsKind::Ext4 => "ext4",
    };
    let required = builder::presets::filesystem_modules(
        &config,
        Some(boot_fstype),
        image_fstype,
        layout.verity.ships_modules(),
    );
    let mut wanted = builder::presets::preset_modules(&[layout.bus.preset()]);
    if layout.empty_cdrom {
        wanted.extend(CDROM_MODULES.iter().map(|m| (*m).to_owned()));
    }
    Ok((required, wanted))
}

/// The GPT boot disk, shaped for the drive on `bus`: a power-of-two size for an SD card,
/// 4096-byte sectors for a 4Kn NVMe drive.
pub fn build_boot_disk(
    boot: &Path,
    layout: Layout,
    real_root: Option<RootPartition<'_>>,
    disk: &Path,
) -> Result<()> {
    let boot = boot_partition(boot, layout.boot_fs)?;
    write_gpt_disk(vec![boot], layout, real_root, disk)
}

/// A boot disk with /boot apart from the ESP, as Debian lays out a UEFI machine: the ESP
/// (vfat, `esp`) holds what the firmware and the bootloader read, the kernel and the initramfs
/// files; /boot (ext4, `boot`, the identity [`BootFsKind::Ext4`] gives) holds the image.
/// `layout.boot_fs` is ignored: the two filesystems are fixed.
pub fn build_esp_and_boot_disk(
    esp: &Path,
    boot: &Path,
    layout: Layout,
    real_root: Option<RootPartition<'_>>,
    disk: &Path,
) -> Result<()> {
    let esp = boot_partition(esp, BootFsKind::Vfat)?;
    let boot = testvm::disk::Partition {
        name: "boot".to_owned(),
        part_guid: guid(XBOOT_PART_GUID)?,
        filesystem: testvm::disk::Filesystem::Ext4 {
            uuid: guid(BOOT_FS_UUID)?,
        },
        label: "boot".to_owned(),
        size_mib: boot_partition_mib(boot)?,
        contents: boot.to_path_buf(),
        keep_owners: false,
    };
    write_gpt_disk(vec![esp, boot], layout, real_root, disk)
}

fn guid(s: &str) -> Result<testvm::Guid> {
    s.parse::<testvm::Guid>()
        .map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

/// The first partition of a boot disk, from the directory `boot`, with the identity
/// `boot_fs` gives it (what the mini initramfs's config names).
fn boot_partition(boot: &Path, boot_fs: BootFsKind) -> Result<testvm::disk::Partition> {
    Ok(testvm::disk::Partition {
        name: "boot".to_owned(),
        part_guid: guid(BOOT_PART_GUID)?,
        filesystem: match boot_fs {
            BootFsKind::Ext4 => testvm::disk::Filesystem::Ext4 {
                uuid: guid(BOOT_FS_UUID)?,
            },
            BootFsKind::Vfat => testvm::disk::Filesystem::Vfat {
                volume_id: BOOT_VFAT_VOLUME_ID,
            },
        },
        label: "boot".to_owned(),
        size_mib: boot_partition_mib(boot)?,
        contents: boot.to_path_buf(),
        keep_owners: false,
    })
}

/// A distribution's root as an ext4 partition (its owners and setuid bits matter), with
/// `room_mib` beyond [`boot_partition_mib`]'s room.
fn ext4_root(dir: &Path, room_mib: u64) -> Result<testvm::disk::Partition> {
    Ok(testvm::disk::Partition {
        name: "root".to_owned(),
        part_guid: guid(ROOT_PART_GUID)?,
        filesystem: testvm::disk::Filesystem::Ext4 {
            uuid: guid(ROOT_FS_UUID)?,
        },
        label: "root".to_owned(),
        size_mib: boot_partition_mib(dir)? + room_mib,
        contents: dir.to_path_buf(),
        keep_owners: true,
    })
}

/// Writes `partitions`, then the real root's, as a GPT disk shaped for `layout.bus`.
fn write_gpt_disk(
    mut partitions: Vec<testvm::disk::Partition>,
    layout: Layout,
    real_root: Option<RootPartition<'_>>,
    disk: &Path,
) -> Result<()> {
    let bus = layout.bus;
    let power_of_two_size = bus == crate::cells::Bus::Sd;
    let sector_size = bus.logical_block_size().into();
    if let Some(first) = partitions.first_mut() {
        first.size_mib = first.size_mib.max(layout.boot_min_mib);
    }
    match real_root {
        None => {}
        Some(RootPartition::Ext4(dir)) => partitions.push(ext4_root(dir, 0)?),
        Some(RootPartition::Ext4WithRoom { dir, room_mib }) => {
            partitions.push(ext4_root(dir, room_mib)?)
        }
        Some(RootPartition::Image { path, type_guid }) => {
            let bytes = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            partitions.push(testvm::disk::Partition {
                name: "root".to_owned(),
                part_guid: guid(ROOT_PART_GUID)?,
                filesystem: testvm::disk::Filesystem::Image { type_guid },
                label: String::new(),
                size_mib: bytes.div_ceil(1 << 20),
                contents: path.to_path_buf(),
                keep_owners: false,
            });
        }
    }
    let gpt = testvm::disk::GptDisk {
        disk_guid: guid(DISK_GUID)?,
        partitions,
        timestamp: testvm::disk::source_date_epoch(),
        power_of_two_size,
        sector_size,
    };
    gpt.write(disk)
        .with_context(|| format!("building {}", disk.display()))?;
    Ok(())
}

/// The device tree a cell's board boots with: the kernel package's own (`machine.dtb()`),
/// with the board's fix-ups (testvm's `Board::dtb_fixes`) applied when it has any, written
/// into `dir`. None where QEMU describes the machine itself.
pub fn board_dtb(
    machine: crate::cells::MachineKind,
    kernel: &Kernel,
    dir: &Path,
) -> Result<Option<PathBuf>> {
    let Some(name) = machine.dtb() else {
        return Ok(None);
    };
    let source = kernel.dtb(name)?;
    let fixes = machine.board().dtb_fixes();
    if fixes.is_empty() {
        return Ok(Some(source));
    }
    let blob = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
    let (fixed, dropped) = testvm::machine::fdt::drop_properties(&blob, fixes)
        .with_context(|| format!("fixing {}", source.display()))?;
    if dropped == 0 {
        anyhow::bail!(
            "{}: none of the properties {fixes:?} is there: the package's device tree changed, \
             review testvm's Board::dtb_fixes",
            source.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let output = dir.join(
        source
            .file_name()
            .context("a device tree path without a file name")?,
    );
    std::fs::write(&output, fixed).with_context(|| format!("writing {}", output.display()))?;
    Ok(Some(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::{Flow, read_cells};

    /// A cell's layout follows its spec: the prepare-only flow and a broken module append an
    /// archive, so their mini initramfs is uncompressed; the dogfood ESP leaves room for what
    /// the guest installs.
    #[test]
    fn a_cell_s_layout_follows_its_spec() {
        let cells = read_cells(&crate::vm_test::project_root()).unwrap();
        for cell in &cells {
            let layout = Layout::of(cell);
            assert_eq!(layout.boot_fs, cell.boot_fs, "{}", cell.name);
            assert_eq!(layout.verity, cell.verity, "{}", cell.name);
            assert_eq!(layout.bus, cell.bus, "{}", cell.name);
            assert_eq!(
                layout.uncompressed,
                cell.flow == Flow::PrepareOnly || cell.broken_module.is_some(),
                "{}",
                cell.name
            );
            assert_eq!(
                layout.boot_min_mib > 0,
                cell.flow == Flow::Dogfood,
                "{}",
                cell.name
            );
        }
        assert!(cells.iter().any(|c| c.flow == Flow::PrepareOnly));
        assert!(cells.iter().any(|c| c.flow == Flow::Dogfood));
    }

    /// The shell archive lands after the mini initramfs, and the kernel's reading of the file
    /// (every archive in order) sees busybox as /bin/sh beside what was there.
    #[test]
    fn a_shell_is_appended_as_a_second_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mini = dir.path().join("mini.cpio");
        let mut first = builder::cpio::Archive::new();
        first
            .add_file("/init", 0o755, b"storage-init".to_vec())
            .unwrap();
        std::fs::write(&mini, first.to_bytes(0).unwrap()).unwrap();
        let shell = dir.path().join("busybox");
        std::fs::write(&shell, b"\x7fELF busybox").unwrap();
        add_shell(&mini, &shell).unwrap();

        let unpacked = builder::initramfs::read(&std::fs::read(&mini).unwrap()).unwrap();
        assert_eq!(unpacked.segments.len(), 2, "{:?}", unpacked.segments);
        let entry = |name: &str| {
            unpacked
                .final_entries()
                .into_iter()
                .find(|e| e.name.trim_start_matches('/') == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        assert_eq!(entry("init").data, b"storage-init");
        assert_eq!(entry("bin/busybox").data, b"\x7fELF busybox");
        let sh = entry("bin/sh");
        assert_eq!(sh.mode & 0o170000, 0o120000, "a symlink");
        assert_eq!(sh.data, b"busybox");
    }

    /// The fault cells' noise is the same on every build, so their disks stay reproducible.
    #[test]
    fn corrupt_bytes_are_deterministic_noise() {
        let a = corrupt_bytes(4096);
        assert_eq!(a, corrupt_bytes(4096));
        assert_eq!(a.len(), 4096);
        let distinct: std::collections::BTreeSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200, "noise, not a pattern");
        assert!(verity_probe().starts_with(VERITY_PROBE_MARKER));
    }

    /// /boot's partition holds at least twice its contents plus room for metadata.
    #[test]
    fn the_boot_partition_has_room_for_its_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(boot_partition_mib(dir.path()).unwrap(), BOOT_PART_MIB);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/big"), vec![0u8; 100 << 20]).unwrap();
        let mib = boot_partition_mib(dir.path()).unwrap();
        assert!(mib >= 200 + 16, "{mib}");
    }
}
