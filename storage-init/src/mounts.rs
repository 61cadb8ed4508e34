//! The mounts storage-init makes, each with the context a FATAL line needs.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags, mount_move, unmount};

use crate::error::{Context, Fatal};
use crate::fs_context::{MountFailure, mount};

/// Mounts a filesystem at `target`, creating the mountpoint if needed.
pub fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), Fatal> {
    let what = || format!("mounting {fstype} {source} on {}", target.display());
    std::fs::create_dir_all(target).context(what)?;
    mount(source, target, fstype, flags, data).map_err(|failure| Fatal::new(what(), failure))
}

/// How the image got mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageMount {
    /// Straight from the file: file-backed erofs (Linux 6.12+, `CONFIG_EROFS_FS_BACKED_BY_FILE`).
    FileBacked,
    /// Through this loop device (older kernels, or a filesystem that needs a block device).
    Loop(PathBuf),
}

impl fmt::Display for ImageMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageMount::FileBacked => f.write_str("file-backed"),
            ImageMount::Loop(path) => write!(f, "loop device {}", path.display()),
        }
    }
}

/// Mounts the image read-only: from the file where the kernel can, else through a loop device
/// (the kernel answers ENOTBLK when the filesystem needs a block device).
pub fn mount_image(image: &Path, target: &Path, fstype: &str) -> Result<ImageMount, Fatal> {
    let what = || {
        format!(
            "mounting {fstype} {} on {}",
            image.display(),
            target.display()
        )
    };
    std::fs::create_dir_all(target).context(what)?;
    let source = image.to_string_lossy();
    match mount(&source, target, fstype, MountFlags::RDONLY, "") {
        Ok(()) => return Ok(ImageMount::FileBacked),
        Err(MountFailure {
            errno: Errno::NOTBLK,
            ..
        }) => {}
        Err(failure) => return Err(Fatal::new(what(), explain_image_error(failure, fstype))),
    }
    let device = crate::loop_device::attach(image)?;
    let what = || {
        format!(
            "mounting {fstype} {} (on {}) on {}",
            image.display(),
            device.path.display(),
            target.display()
        )
    };
    match mount(
        &device.path.to_string_lossy(),
        target,
        fstype,
        MountFlags::RDONLY,
        "",
    ) {
        // `device` closes here; the mount now holds the loop device, and autoclear detaches it
        // when the image is unmounted, leaving /boot releasable.
        Ok(()) => Ok(ImageMount::Loop(device.path.clone())),
        Err(failure) => Err(Fatal::new(what(), explain_image_error(failure, fstype))),
    }
}

/// The errors a user can act on get a sentence saying what to do.
fn explain_image_error(failure: MountFailure, fstype: &str) -> String {
    match failure.errno {
        Errno::INVAL => format!(
            "{failure}: the file is not a valid {fstype} image (corrupt or of another type; erofs logs its reason just above); rebuild it with `builder erofs`"
        ),
        Errno::NODEV => {
            format!(
                "{failure}: this kernel has no {fstype} filesystem; add its module to the mini initramfs"
            )
        }
        _ => failure.to_string(),
    }
}

/// Detaches the mount at `target` from the tree (`MNT_DETACH`): it stays alive for whatever
/// still holds it (an overlay holds private clones of its layers) and is freed with the last.
pub fn detach(target: &Path) -> Result<(), Fatal> {
    unmount(target, UnmountFlags::DETACH).map_err(|e| {
        Fatal::new(
            format!("detaching the mount on {}", target.display()),
            errno_text(e),
        )
    })
}

/// Moves the mount at `from` to `to` (creating `to` if needed, e.g. /boot in an image lacking it).
pub fn move_mount(from: &Path, to: &Path) -> Result<(), Fatal> {
    let what = || format!("moving mount {} to {}", from.display(), to.display());
    std::fs::create_dir_all(to).context(what)?;
    mount_move(from, to).map_err(|e| Fatal::new(what(), errno_text(e)))
}

/// Overlay mount options, upstream's choice: `volatile` (no syncs: the upper layer is a tmpfs
/// that dies with the boot anyway) and `redirect_dir=on` (directory renames work).
pub fn overlay_options(lower: &Path, upper: &Path, work: &Path, volatile: bool) -> String {
    let mut options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=on",
        lower.display(),
        upper.display(),
        work.display()
    );
    if volatile {
        options.push_str(",volatile");
    }
    options
}

/// Mounts the overlay; retried without `volatile` on EINVAL, as upstream does, for kernels
/// before 5.10 that do not know the option. Returns whether `volatile` was used.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<bool, Fatal> {
    std::fs::create_dir_all(target).context(|| format!("creating {}", target.display()))?;
    let mut volatile = true;
    loop {
        let options = overlay_options(lower, upper, work, volatile);
        let what = || format!("mounting overlay on {} with {options}", target.display());
        match mount("overlay", target, "overlay", MountFlags::empty(), &options) {
            Ok(()) => return Ok(volatile),
            Err(MountFailure {
                errno: Errno::INVAL,
                ..
            }) if volatile => volatile = false,
            Err(failure) => return Err(Fatal::new(what(), failure)),
        }
    }
}

fn errno_text(e: Errno) -> String {
    crate::modules::errno_text(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_match_upstream() {
        let options = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w"), true);
        assert_eq!(
            options,
            "lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=on,volatile"
        );
        let options = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w"), false);
        assert!(!options.contains("volatile"));
    }
}
