//! Complex storage under the real root (complex storage stays the second stage's job): the
//! real chain's root on a partition of its own, in a LUKS2 container, or on an LVM
//! logical volume. storage-init only reaches /boot; the second stage (dracut's systemd initrd in
//! the erofs image) unlocks or activates the root as a distribution's initrd does.
//!
//! The host never touches device-mapper (no `cryptsetup open`, no `lvchange -ay`: the
//! machines that run the tests, CI runners included, need not have dm, and a test must not
//! leave mappings behind on them). The encrypted or LVM partition is made inside a **helper
//! VM** instead, once per input, and cached by content:
//!
//! * its kernel is the cell's own Debian kernel, booted directly (`-kernel`) under QEMU with a
//!   small initramfs made here: static busybox, the modules that reach a virtio disk and mount
//!   ext4 (decompressed, loaded by `insmod` in dependency order), an `/init`, the recipe and,
//!   for LUKS2, the key file;
//! * disk `vda` (serial [`TARGET_SERIAL`]) is the partition to fill, a raw file; disk `vdb`
//!   (serial [`SOURCE_SERIAL`], read-only) is a GPT disk whose one partition is the plain real
//!   root's ext4 (made by `testvm::disk` from the cached root directory, owners kept, with the
//!   root filesystem UUID every cell uses);
//! * `/init` mounts that ext4 read-only and runs the recipe chrooted in it: the real root is the
//!   Debian tree, so it brings `cryptsetup`, `lvm`, `dd` and the kernel's modules (`/sbin/modprobe`
//!   of the initramfs chroots there, so the kernel's own module requests, dm-crypt's ciphers,
//!   are served too). The recipe formats the target (`cryptsetup luksFormat` / `pvcreate` +
//!   `vgcreate` + `lvcreate`), opens it, copies the ext4 filesystem in with `dd`, closes it;
//!   `/init` syncs, says [`DONE_LINE`] and powers off.
//!
//! Why this helper and not the tree's own dracut initramfs with `init=`: dracut's image has
//! `systemd-cryptsetup` but neither `cryptsetup` (which formats) nor `dd`, and a script given as
//! `init=` would have to live in the real root, which every cell shares. Without udev in the
//! guest, device-mapper nodes are made by libdevmapper itself (`udev_sync = 0`,
//! `udev_rules = 0` for lvm; cryptsetup falls back on its own when udev is not running).
//!
//! The result is **not byte-reproducible**: LUKS2 salts and volume key, LVM's PV/VG/LV ids and
//! its metadata's creation time are random or the guest's clock. That is acceptable for a test
//! disk: the cache key holds every input, so a rebuild differs only in those, and the cells check
//! behaviour (the root unlocks, is on dm-crypt or LVM), not bytes.
//!
//! Cache layout (under [`crate::fixtures::cache_dir`]):
//!
//! ```text
//! root-storage/<arch>-<storage>-<key>/done/root.img      the partition image
//! root-storage/<arch>-<storage>-<key>/helper-vm/         the helper's console.log, qemu.cmdline, ...
//! ```
//!
//! `helper-vm/` is kept (also after a failure, which is an infrastructure error naming its
//! console log).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::debian_tree::RealRoot;
use crate::disk_spec::{LOGICAL_VOLUME, LUKS_UUID, RootStorage, VOLUME_GROUP};
use crate::fixtures::{Fetched, Kernel};

/// PBKDF2 with the fewest iterations cryptsetup accepts: TCG unlocks it in milliseconds, where
/// the default (argon2id, sized to take 2 s on the machine that formats) takes minutes. A test
/// key protects nothing.
const LUKS_PBKDF_ITERATIONS: u32 = 1000;
/// Where the LUKS2 container's data starts: cryptsetup's default for LUKS2 (two 16 KiB
/// headers and the keyslots area, 16 MiB in all), passed explicitly (`--offset`, in 512-byte
/// sectors) so the partition's size follows from the root's whatever cryptsetup's defaults.
const LUKS2_DATA_OFFSET_MIB: u64 = 16;
/// Room LVM takes besides the logical volume: the PV label and metadata area before the first
/// extent (1 MiB) and the rounding of the LV up to whole 4 MiB extents (at most 3 MiB).
const LVM_OVERHEAD_MIB: u64 = 8;

/// The helper's disks, told apart in the guest by their serials (`/sys/block/vdX/serial`).
const TARGET_SERIAL: &str = "target";
const SOURCE_SERIAL: &str = "source";
/// What the helper prints when the partition is made, and when it is not.
const DONE_LINE: &str = "root-storage-helper: done";
const FAILED_LINE: &str = "root-storage-helper: FAILED";
/// Guest memory of the helper: the kernel, busybox and cryptsetup's PBKDF.
const HELPER_MEMORY_MIB: u32 = 1024;
/// How long the helper may take to format and fill the partition under TCG (the copy of a
/// ~700 MiB root through dm-crypt dominates), and to power off afterwards.
const HELPER_TIMEOUT: Duration = Duration::from_secs(900);
const HELPER_POWER_OFF_TIMEOUT: Duration = Duration::from_secs(60);
/// Bumped whenever the helper's initramfs, `/init` or recipe changes, so the cache is rebuilt.
const RECIPE: &str = "v1 busybox /init, chroot into the real root, luksFormat pbkdf2 / pvcreate vgcreate lvcreate, dd";

/// The helper's `/init` (busybox sh). `@MODULES@` becomes the `insmod` lines; the recipe
/// runs as `/run/recipe.sh` in the chroot, with the disks in `$TARGET` and `$SOURCE`.
const HELPER_INIT: &str = r#"#!/bin/busybox sh
# The root-storage helper VM of initoverlayfs-rs (xtask/src/root_storage.rs): fills disk
# "target" with an encrypted or LVM copy of the ext4 root on disk "source", then powers off.
bb=/bin/busybox
fail() {
    echo "root-storage-helper: FAILED: $*"
    $bb sync
    $bb poweroff -f
}
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
# The kernel starts init without a PATH; the recipe's shell needs one.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The kernel's own module requests (dm-crypt's ciphers) go to the tree's modprobe.
echo /sbin/modprobe > /proc/sys/kernel/modprobe
@MODULES@
disk_of() {
    for serial in /sys/block/vd*/serial; do
        [ "$($bb cat "$serial")" = "$1" ] && { $bb basename "$($bb dirname "$serial")"; return; }
    done
}
for i in $($bb seq 100); do
    target=$(disk_of target)
    source=$(disk_of source)
    [ -n "$target" ] && [ -b "/dev/${source}1" ] && break
    $bb sleep 0.1
done
[ -n "$target" ] && [ -b "/dev/${source}1" ] || fail "no disks with serials target and source"
echo "root-storage-helper: target /dev/$target, source /dev/${source}1"
$bb mount -t ext4 -o ro,noload "/dev/${source}1" /mnt || fail "mounting the source root"
$bb mount -t tmpfs -o mode=0755 tmpfs /mnt/run || fail "mounting /run"
$bb mount -t tmpfs -o mode=1777 tmpfs /mnt/tmp || fail "mounting /tmp"
for api in dev proc sys; do $bb mount -o bind /$api /mnt/$api || fail "binding /$api"; done
$bb cp /recipe.sh /mnt/run/recipe.sh
[ -f /key ] && { $bb cp /key /mnt/run/key; $bb chmod 0600 /mnt/run/key; }
TARGET=/dev/$target SOURCE=/dev/${source}1 $bb chroot /mnt /bin/sh -eu /run/recipe.sh \
    || fail "the recipe exited $?"
$bb sync
echo "root-storage-helper: done"
$bb poweroff -f
"#;

/// `/sbin/modprobe` of the helper's initramfs: the tree's, in its chroot.
const HELPER_MODPROBE: &str =
    "#!/bin/busybox sh\nexec /bin/busybox chroot /mnt /sbin/modprobe \"$@\"\n";

/// lvm without udev: no device list from udev, no waiting for udev, nodes made by lvm itself;
/// no metadata backups (the root is read-only in the helper).
const LVM_CONFIG: &str = "devices { obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } backup { backup = 0 archive = 0 }";

/// The size of the partition that holds a root filesystem of `root_mib`.
fn partition_mib(storage: RootStorage, root_mib: u64) -> u64 {
    match storage {
        RootStorage::Partition => root_mib,
        RootStorage::Luks2 => root_mib + LUKS2_DATA_OFFSET_MIB,
        RootStorage::Lvm => root_mib + LVM_OVERHEAD_MIB,
    }
}

/// The recipe the helper runs in the real root (`sh -eu`, `$TARGET` the disk to fill,
/// `$SOURCE` the ext4 partition, `/run/key` the passphrase), for a root of `root_mib`.
/// None for a plain partition, which needs no helper.
fn recipe(storage: RootStorage, root_mib: u64) -> Option<String> {
    let copy = "dd if=\"$SOURCE\" of=\"$dev\" bs=1M conv=fsync status=none";
    match storage {
        RootStorage::Partition => None,
        RootStorage::Luks2 => Some(format!(
            "set -x\n\
             modprobe -a dm_mod dm_crypt\n\
             cryptsetup luksFormat --batch-mode --disable-locks --type luks2 \
             --pbkdf pbkdf2 --pbkdf-force-iterations {LUKS_PBKDF_ITERATIONS} \
             --offset {offset} --uuid {LUKS_UUID} --key-file /run/key \"$TARGET\"\n\
             cryptsetup open --disable-locks --key-file /run/key \"$TARGET\" root\n\
             dev=/dev/mapper/root\n\
             {copy}\n\
             cryptsetup close --disable-locks root\n\
             cryptsetup luksDump --disable-locks \"$TARGET\" | grep -E '^(Version|UUID|Data segments)|PBKDF|Iterations'\n",
            offset = LUKS2_DATA_OFFSET_MIB * 2048,
        )),
        RootStorage::Lvm => Some(format!(
            "set -x\n\
             modprobe dm_mod\n\
             config='{LVM_CONFIG}'\n\
             lvm pvcreate --config \"$config\" --yes \"$TARGET\"\n\
             lvm vgcreate --config \"$config\" --yes {VOLUME_GROUP} \"$TARGET\"\n\
             lvm lvcreate --config \"$config\" --yes --zero n --wipesignatures n \
             --name {LOGICAL_VOLUME} --size {root_mib}m {VOLUME_GROUP}\n\
             dev=/dev/mapper/{VOLUME_GROUP}-{LOGICAL_VOLUME}\n\
             {copy}\n\
             lvm vgchange --config \"$config\" --activate n {VOLUME_GROUP}\n\
             lvm pvs --config \"$config\" -o pv_name,vg_name,pv_size\n",
        )),
    }
}

/// The root partition image for `storage` holding `real_root` (built once per input, in the
/// helper VM, and cached); None for a plain partition, which `testvm::disk` makes from the
/// directory itself. `root_mib` is the root filesystem's size; the key, the passphrase the
/// container opens with (LUKS2 only).
#[allow(clippy::too_many_arguments)] // the helper's inputs, each part of the cache key
pub fn root_partition_image(
    storage: RootStorage,
    kernel: &Kernel,
    busybox: &Fetched,
    board: testvm::machine::Board,
    accel: testvm::machine::Accel,
    real_root: &RealRoot,
    root_mib: u64,
    passphrase: Option<&str>,
) -> Result<Option<PathBuf>> {
    let Some(recipe) = recipe(storage, root_mib) else {
        return Ok(None);
    };
    if storage == RootStorage::Luks2 && passphrase.is_none_or(str::is_empty) {
        bail!("a LUKS2 root needs a passphrase (luks_passphrase in the cell)");
    }
    let arch = crate::debian_tree::Arch::of_release(&kernel.release)?;
    let key = crate::debian_tree::hash(&[
        RECIPE,
        HELPER_INIT,
        HELPER_MODPROBE,
        &recipe,
        &real_root.key,
        &busybox.sha256,
        &root_mib.to_string(),
        passphrase.unwrap_or_default(),
    ]);
    let entry = crate::fixtures::cache_dir()
        .join("root-storage")
        .join(format!(
            "{}-{}-{}",
            arch.debian(),
            storage.name(),
            &key[..16]
        ));
    let helper_artifacts = entry.join("helper-vm");
    let done = crate::debian_tree::fill_once(&entry, |work| {
        let helper = Helper {
            storage,
            kernel,
            busybox,
            board,
            accel,
            real_root,
            root_mib,
            passphrase,
            recipe: &recipe,
        };
        helper.run(work, &helper_artifacts)
    })?;
    Ok(Some(done.join(IMAGE_NAME)))
}

/// The partition image's name in the cache entry.
const IMAGE_NAME: &str = "root.img";

/// Everything one helper boot is made from.
struct Helper<'a> {
    storage: RootStorage,
    kernel: &'a Kernel,
    busybox: &'a Fetched,
    board: testvm::machine::Board,
    accel: testvm::machine::Accel,
    real_root: &'a RealRoot,
    root_mib: u64,
    passphrase: Option<&'a str>,
    recipe: &'a str,
}

impl Helper<'_> {
    /// Builds the helper's inputs in `work`, boots it, and leaves `work/root.img`.
    fn run(&self, work: &Path, artifacts: &Path) -> Result<()> {
        let source = work.join("source.img");
        self.source_disk(&source)?;
        let target = work.join(IMAGE_NAME);
        let target_mib = partition_mib(self.storage, self.root_mib);
        std::fs::File::create(&target)
            .and_then(|file| file.set_len(target_mib << 20))
            .with_context(|| format!("creating {}", target.display()))?;
        let initramfs = work.join("helper-initramfs.img");
        self.initramfs(&initramfs)?;
        let disk = |path: &Path, serial: &str, read_only| testvm::machine::Disk {
            path: path.to_owned(),
            bus: testvm::machine::DiskBus::VirtioBlk,
            serial: serial.to_owned(),
            read_only,
            throttle: None,
        };
        let machine = crate::plan::machine(
            self.board,
            self.accel,
            HELPER_MEMORY_MIB,
            testvm::machine::Boot::Direct {
                kernel: self.kernel.vmlinuz.clone(),
                initrd: Some(initramfs),
                cmdline: format!("console={} panic=-1", self.board.console()),
            },
            vec![
                disk(&target, TARGET_SERIAL, false),
                disk(&source, SOURCE_SERIAL, true),
            ],
        );
        let spec = testvm::run::BootSpec {
            milestones: vec![testvm::run::Milestone::new(
                "done",
                &regex::escape(DONE_LINE),
                HELPER_TIMEOUT,
            )?],
            fatal: vec![
                testvm::run::Fatal::new("helper failed", &regex::escape(FAILED_LINE))?,
                testvm::run::Fatal::new("kernel panic", "Kernel panic")?,
            ],
            end: testvm::run::End::GuestPowersOff {
                timeout: HELPER_POWER_OFF_TIMEOUT,
            },
            hotplug: Vec::new(),
            read_sampling: None,
        };
        eprintln!(
            "root-storage: making the {} root partition ({target_mib} MiB) in a helper VM; its console: {}",
            self.storage.name(),
            artifacts.join(testvm::run::artifact::CONSOLE_LOG).display()
        );
        let started = std::time::Instant::now();
        let booted = testvm::run::boot(&machine, &spec, artifacts);
        // The helper's own inputs are rebuilt from the cache if ever needed again.
        let _ = std::fs::remove_file(&source);
        if let Err(error) = booted {
            bail!(
                "the root-storage helper VM did not make the {} root partition: {}\n(its console: {})",
                self.storage.name(),
                error.detail(),
                artifacts.join(testvm::run::artifact::CONSOLE_LOG).display()
            );
        }
        eprintln!(
            "root-storage: the {} root partition made in {:.0} s",
            self.storage.name(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A GPT disk whose one partition is the plain real root: ext4, owners kept, with the
    /// root filesystem UUID of every cell (so `root=UUID=` finds the copy).
    fn source_disk(&self, path: &Path) -> Result<()> {
        let guid = |s: &str| {
            s.parse::<testvm::Guid>()
                .map_err(|e| anyhow::anyhow!("{s}: {e}"))
        };
        let disk = testvm::disk::GptDisk {
            disk_guid: guid(crate::disk_spec::ROOT_PART_GUID)?,
            partitions: vec![testvm::disk::Partition {
                name: "root".to_owned(),
                part_guid: guid(crate::disk_spec::ROOT_PART_GUID)?,
                filesystem: testvm::disk::Filesystem::Ext4 {
                    uuid: guid(crate::disk_spec::ROOT_FS_UUID)?,
                },
                label: "root".to_owned(),
                size_mib: self.root_mib,
                contents: self.real_root.root.clone(),
                keep_owners: true,
            }],
            timestamp: testvm::disk::source_date_epoch(),
            power_of_two_size: false,
            sector_size: 512,
        };
        disk.write(path)
            .with_context(|| format!("building {}", path.display()))
    }

    /// The helper's initramfs: busybox, the modules that reach the source disk's ext4 (in
    /// load order, decompressed), `/init`, `/sbin/modprobe`, the recipe and the key.
    fn initramfs(&self, path: &Path) -> Result<()> {
        let modules =
            builder::modules::KernelModules::new(self.kernel.modules_root(), &self.kernel.release);
        let resolution = modules
            .resolve(&["virtio_blk".to_owned(), "ext4".to_owned()])
            .with_context(|| {
                format!("resolving the helper's modules of {}", self.kernel.release)
            })?;
        let mut archive = builder::cpio::Archive::new();
        for dir in ["/bin", "/sbin", "/dev", "/proc", "/sys", "/mnt"] {
            archive.add_dir(dir, 0o755)?;
        }
        archive.add_char_device("/dev/console", 0o600, 5, 1)?;
        archive.add_file_from_host(
            "/bin/busybox",
            0o755,
            &self.busybox.root.join("bin/busybox"),
        )?;
        let installed = modules.installed_dir();
        let mut insmod = Vec::new();
        for module in &resolution.modules {
            let bytes = builder::modules::read_module(&resolution.dir.join(&module.relative_path))?;
            let path = format!("{installed}/{}", module.uncompressed_relative_path()?);
            archive.add_file(&path, 0o644, bytes)?;
            insmod.push(insmod_line(&path, module.necessity));
        }
        let init = HELPER_INIT.replace("@MODULES@", &insmod.join("\n"));
        archive.add_file("/init", 0o755, init.into_bytes())?;
        archive.add_file("/sbin/modprobe", 0o755, HELPER_MODPROBE.as_bytes().to_vec())?;
        archive.add_file("/recipe.sh", 0o644, self.recipe.as_bytes().to_vec())?;
        if let Some(passphrase) = self.passphrase {
            // The key file holds the passphrase alone, no newline: what typing it at the
            // prompt gives systemd-cryptsetup.
            archive.add_file("/key", 0o600, passphrase.as_bytes().to_vec())?;
        }
        let bytes = archive.to_bytes(testvm::disk::source_date_epoch())?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

/// The `/init` line that loads one module: a required one must load; an optional one (a soft
/// dependency, such as a faster crc32c) may be refused by this CPU.
fn insmod_line(path: &str, necessity: storage_init::contract::Necessity) -> String {
    match necessity {
        storage_init::contract::Necessity::Required => {
            format!("$bb insmod {path} || fail \"insmod {path}\"")
        }
        _ => {
            format!("$bb insmod {path} || echo \"root-storage-helper: optional {path} not loaded\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_params_name_the_root_and_what_dracut_needs() {
        let check = |storage: RootStorage, expected: &str| {
            assert_eq!(storage.kernel_params(), expected, "{storage:?}");
        };
        check(
            RootStorage::Partition,
            "root=PARTUUID=4c0f9a3e-2b1d-4e6f-9a8b-7c6d5e4f3a2b",
        );
        check(
            RootStorage::Luks2,
            "root=UUID=b7e3c1d2-8f4a-4b5c-9d6e-0f1a2b3c4d5e rd.luks.uuid=2d8c6f1e-4b3a-4c5d-9e8f-7a6b5c4d3e2f",
        );
        check(
            RootStorage::Lvm,
            "root=UUID=b7e3c1d2-8f4a-4b5c-9d6e-0f1a2b3c4d5e rd.lvm.lv=initoverlayfs/root",
        );
    }

    /// fstab names the root as `root=` does: the partition, or the filesystem inside the
    /// container or volume (its UUID is only visible once unlocked or activated).
    #[test]
    fn fstab_names_the_root_as_root_does() {
        for storage in [RootStorage::Partition, RootStorage::Luks2, RootStorage::Lvm] {
            let root = storage.kernel_params();
            let first = root.split_whitespace().next().unwrap();
            assert_eq!(first, format!("root={}", storage.fstab_source()));
            let spec = crate::images::root_spec(crate::disk_spec::BootFsKind::Vfat, storage);
            assert!(
                spec.fstab()
                    .lines()
                    .any(|l| l.starts_with(&format!("{}\t/\text4\t", storage.fstab_source()))),
                "{}",
                spec.fstab()
            );
        }
    }

    #[test]
    fn the_partition_holds_the_root_and_the_container() {
        assert_eq!(partition_mib(RootStorage::Partition, 700), 700);
        assert_eq!(partition_mib(RootStorage::Luks2, 700), 716);
        assert_eq!(partition_mib(RootStorage::Lvm, 700), 708);
        // LVM: 1 MiB before the first extent, the LV rounded up to 4 MiB extents.
        for root_mib in 1..64 {
            let extents = (partition_mib(RootStorage::Lvm, root_mib) - 1) / 4;
            assert!(extents * 4 >= root_mib.next_multiple_of(4), "{root_mib}");
        }
    }

    #[test]
    fn recipes_format_copy_and_close() {
        assert_eq!(recipe(RootStorage::Partition, 700), None);
        let luks = recipe(RootStorage::Luks2, 700).unwrap();
        for needle in [
            "cryptsetup luksFormat --batch-mode --disable-locks --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --offset 32768 --uuid 2d8c6f1e-4b3a-4c5d-9e8f-7a6b5c4d3e2f --key-file /run/key \"$TARGET\"",
            "dd if=\"$SOURCE\" of=\"$dev\"",
            "cryptsetup close",
        ] {
            assert!(luks.contains(needle), "{needle:?} not in\n{luks}");
        }
        let lvm = recipe(RootStorage::Lvm, 700).unwrap();
        for needle in [
            "lvm vgcreate --config \"$config\" --yes initoverlayfs \"$TARGET\"",
            "--name root --size 700m initoverlayfs",
            "dev=/dev/mapper/initoverlayfs-root",
            "udev_sync = 0 udev_rules = 0",
            "--activate n initoverlayfs",
        ] {
            assert!(lvm.contains(needle), "{needle:?} not in\n{lvm}");
        }
        assert!(!lvm.contains("/run/key"));
    }

    #[test]
    fn optional_modules_may_fail_to_load() {
        use storage_init::contract::Necessity;
        assert_eq!(
            insmod_line("/lib/modules/k/ext4.ko", Necessity::Required),
            "$bb insmod /lib/modules/k/ext4.ko || fail \"insmod /lib/modules/k/ext4.ko\""
        );
        assert!(insmod_line("/x.ko", Necessity::Optional).contains("|| echo"));
    }
}
