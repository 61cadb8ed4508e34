//! Mounting the image through dm-verity, when the config carries its root hash.
//!
//! The image goes on a read-only loop device, a `verity` target over it (data and hash tree on
//! the same device, see `verity.rs`), and the filesystem is mounted from the mapped device, so
//! the kernel checks every block as it is read and nothing else is read twice.
//!
//! Two phases: while storage-init itself reads the image (the superblock at mount time, the
//! lookups of init and /etc/initrd-release), the target answers a bad block with EIO, so the
//! failure is a FATAL line naming the image and the expected root hash. Just before the exec of
//! init the table is swapped for one with `panic_on_corruption` ([`VerifiedImage::arm`]): from
//! then on a tampered block panics the kernel instead of reaching a program as an error it may
//! ignore.

use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::MountFlags;

use crate::device_mapper::{CONTROL, Control, MappedDevice};
use crate::error::{Context, Fatal};
use crate::fs_context::{MountFailure, mount};
use crate::modules::errno_text;
use crate::verity::{OnCorruption, TreeLayout, Verity};

/// The mapped device's name (`/dev/mapper/initoverlayfs` once udev runs in the second stage).
pub const DEVICE_NAME: &str = "initoverlayfs";
/// Its device-mapper UUID: the prefix names the owner, as `CRYPT-` does veritysetup's.
pub const DEVICE_UUID: &str = "INITOVERLAYFS-verity";

/// The image mounted through dm-verity, still in EIO mode until [`VerifiedImage::arm`].
#[derive(Debug)]
pub struct VerifiedImage {
    control: Control,
    device: MappedDevice,
    verity: Verity,
    loop_device: PathBuf,
    /// The loop device's `major:minor`, as the table names it.
    data_device: String,
    image: PathBuf,
}

impl VerifiedImage {
    /// `dm-verity /dev/dm-0 over /dev/loop0`, for the log line of the mount.
    pub fn describe(&self) -> String {
        format!(
            "dm-verity {} over {}",
            self.device.path().display(),
            self.loop_device.display()
        )
    }

    /// Swaps in the table with `panic_on_corruption`, and marks the device for removal once
    /// unused (so when the second stage leaves the overlay, device, loop device and /boot are
    /// all released). Called once storage-init has read what it reads of the image, just
    /// before init runs.
    pub fn arm(&self) -> Result<(), Fatal> {
        let what = || {
            format!(
                "switching dm-verity on {} to panic_on_corruption",
                self.image.display()
            )
        };
        let params = self.verity.table(&self.data_device, OnCorruption::Panic);
        self.control
            .load(&self.device, "verity", self.verity.sectors(), &params)
            .and_then(|()| self.control.resume(&self.device))
            .and_then(|()| self.control.remove_when_unused(&self.device))
            .map_err(|e| Fatal::new(what(), errno_text(e)))
    }
}

/// `major:minor` of a block device node.
fn device_numbers(path: &Path) -> Result<String, Errno> {
    let stat = rustix::fs::stat(path)?;
    Ok(format!(
        "{}:{}",
        rustix::fs::major(stat.st_rdev),
        rustix::fs::minor(stat.st_rdev)
    ))
}

/// Mounts `image` read-only on `target` through dm-verity with `verity`'s parameters.
pub fn mount_verified(
    image: &Path,
    target: &Path,
    fstype: &str,
    verity: &Verity,
) -> Result<VerifiedImage, Fatal> {
    let setting_up = || format!("setting up dm-verity for {}", image.display());
    let rebuild = "rebuild the image with `builder image --verity` and the mini initramfs with `--image` pointing at it";

    let layout = TreeLayout::new(verity.data_blocks);
    let bytes = std::fs::metadata(image)
        .context(|| format!("reading {}", image.display()))?
        .len();
    if bytes < layout.image_bytes() {
        return Err(Fatal::new(
            format!("checking the dm-verity hash tree of {}", image.display()),
            format!(
                "the file is {bytes} bytes but its {} data blocks and their hash tree take {}: the hash tree is truncated, or this is not the image the config's {verity} was made for; {rebuild}",
                verity.data_blocks,
                layout.image_bytes()
            ),
        ));
    }

    let control = Control::open().map_err(|e| {
        Fatal::new(
            setting_up(),
            format!(
                "{CONTROL}: {e}: this kernel has no device-mapper (dm-mod), so the image cannot be verified and is not booted; put dm-mod and dm-verity in the mini initramfs (builder adds them for a config with a root hash)"
            ),
        )
    })?;
    let targets = control
        .targets()
        .map_err(|e| Fatal::new(setting_up(), format!("DM_LIST_VERSIONS: {}", errno_text(e))))?;
    if !targets.iter().any(|t| t == "verity") {
        return Err(Fatal::new(
            setting_up(),
            format!(
                "this kernel has no dm-verity target (CONFIG_DM_VERITY; its targets: {}), so the image cannot be verified and is not booted; put dm-verity in the mini initramfs",
                targets.join(", ")
            ),
        ));
    }

    let loop_device = crate::loop_device::attach(image)?;
    let numbers = device_numbers(&loop_device.path).map_err(|e| {
        Fatal::new(
            setting_up(),
            format!("{}: {}", loop_device.path.display(), errno_text(e)),
        )
    })?;
    let device = control.create(DEVICE_NAME, DEVICE_UUID).map_err(|e| {
        Fatal::new(
            setting_up(),
            format!("creating /dev/mapper/{DEVICE_NAME}: {}", errno_text(e)),
        )
    })?;
    let loaded = control
        .load(
            &device,
            "verity",
            verity.sectors(),
            &verity.table(&numbers, OnCorruption::Eio),
        )
        .and_then(|()| control.resume(&device));
    if let Err(e) = loaded {
        // Best effort: the boot ends in a FATAL line anyway; a leftover device only matters
        // to a shell.
        let _ = control.remove(&device);
        let why = match e {
            Errno::TOOBIG => format!(
                "the kernel finds the hash tree too small for {} data blocks (E2BIG): it is truncated; {rebuild}",
                verity.data_blocks
            ),
            _ => format!(
                "the kernel refused the verity table ({}; its reason is in the kernel log just above)",
                errno_text(e)
            ),
        };
        return Err(Fatal::new(setting_up(), why));
    }

    let source = device.path();
    std::fs::create_dir_all(target).context(|| format!("creating {}", target.display()))?;
    let mounted = mount(
        &source.to_string_lossy(),
        target,
        fstype,
        MountFlags::RDONLY,
        "",
    );
    // The table holds the loop device now: its autoclear detaches it when the mapped device
    // goes, so this handle may close.
    let loop_path = loop_device.path.clone();
    drop(loop_device);
    if let Err(failure) = mounted {
        let _ = control.remove(&device);
        let what = format!(
            "mounting {fstype} {} through dm-verity ({})",
            image.display(),
            source.display()
        );
        return Err(Fatal::new(
            what,
            explain(failure, image, fstype, verity, rebuild),
        ));
    }
    Ok(VerifiedImage {
        loop_device: loop_path,
        data_device: numbers,
        control,
        device,
        verity: verity.clone(),
        image: image.to_owned(),
    })
}

fn explain(
    failure: MountFailure,
    image: &Path,
    fstype: &str,
    verity: &Verity,
    rebuild: &str,
) -> String {
    match failure.errno {
        Errno::IO => format!(
            "{failure}: blocks of {} do not match the configured {verity}: the image is corrupt, tampered with, or not the one this mini initramfs was built with (the kernel log above names the block); {rebuild}",
            image.display()
        ),
        Errno::NODEV => crate::mounts::explain(&failure, fstype, crate::mounts::Role::Image),
        _ => failure.to_string(),
    }
}
