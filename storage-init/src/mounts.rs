//! The mounts storage-init makes, each with the context a FATAL line needs.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount_change, mount_move, unmount,
};

use crate::config::CONFIG_PATH;
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

/// Mounts a small tmpfs of our own at `target`, private: mounts under it can be moved out
/// whatever the propagation of its parent (systemd makes every mount shared).
pub fn mount_private_tmpfs(target: &Path) -> Result<(), Fatal> {
    mount_fs(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=0700,size=64k",
    )?;
    mount_change(target, MountPropagationFlags::PRIVATE).map_err(|e| {
        Fatal::new(
            format!("making the mount on {} private", target.display()),
            errno_text(e),
        )
    })
}

/// Mounts the boot filesystem on `device` read-only at `target` as `fstype`; `probed` is the
/// type its superblock says, when storage-init recognised it.
pub fn mount_boot_fs(
    device: &str,
    target: &Path,
    fstype: &str,
    probed: Option<&str>,
) -> Result<(), Fatal> {
    let what = || format!("mounting {fstype} {device} on {}", target.display());
    std::fs::create_dir_all(target).context(what)?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    mount(device, target, fstype, flags, boot_fs_options(fstype)).map_err(|failure| {
        Fatal::new(
            what(),
            explain(&failure, fstype, Role::Boot { device, probed }),
        )
    })
}

/// The mount options of the boot filesystem. vfat: the kernel's built-in character table
/// (`iocharset=default`, registered by nls_base on every kernel) instead of the
/// `CONFIG_FAT_DEFAULT_IOCHARSET` one, which is a module on most distribution kernels (Debian:
/// nls_ascii). The names storage-init opens on /boot are ASCII, which every table maps alike,
/// and each module load costs the kernel a signature check (about 0.1 s of instructions for a
/// P-384 key): one module fewer before systemd starts.
pub fn boot_fs_options(fstype: &str) -> &'static str {
    match fstype {
        "vfat" => "iocharset=default",
        _ => "",
    }
}

/// Which of the boot's filesystems a mount is: what a failure of it can be blamed on, and which
/// `builder initramfs` option ships its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// The boot filesystem (`bootfstype`) on `device`, whose superblock says `probed`.
    Boot {
        device: &'a str,
        probed: Option<&'a str>,
    },
    /// The image (`fstype`).
    Image,
    /// The overlay over the image, which builder always ships.
    Overlay,
}

/// The `why` of a FATAL line for a failed mount of `fstype`: the errno and the kernel's
/// messages, and what to do where the user can act on it.
pub fn explain(failure: &MountFailure, fstype: &str, role: Role<'_>) -> String {
    match (failure.errno, role) {
        (Errno::NODEV, _) => format!("{failure}: {}", missing_driver(fstype, role)),
        (Errno::INVAL, Role::Image) => format!(
            "{failure}: the file is not a valid {fstype} image (corrupt or of another type; {fstype} logs its reason just above); rebuild it with `builder image`"
        ),
        _ => failure.to_string(),
    }
}

/// What ENODEV from `fsopen` or mount(2) means: the kernel has no driver registered for
/// `fstype`. storage-init loads the mini initramfs's filesystem modules before it mounts
/// anything (a required one that fails is fatal there), so the module was never shipped: this
/// names it and the `builder initramfs` option that adds it.
pub fn missing_driver(fstype: &str, role: Role<'_>) -> String {
    // The ext4 driver serves ext2 and ext3 too (builder ships it for all three).
    let module = match fstype {
        "ext2" | "ext3" => "ext4",
        other => other,
    };
    let option = match role {
        Role::Boot { .. } => format!(" --bootfstype {fstype}"),
        Role::Image => format!(" --fstype {fstype}"),
        Role::Overlay => String::new(),
    };
    let mut why = format!(
        "this kernel has no {fstype} driver: it is not built in, and the mini initramfs has no {module} module to load; rebuild the mini initramfs with `builder initramfs{option} …` to add it"
    );
    if let Role::Boot {
        device,
        probed: Some(probed),
    } = role
        && probed != fstype
    {
        why.push_str(&format!(
            " (but {device} holds {probed}, not {fstype}: if that is the boot filesystem, correct 'bootfstype' in {CONFIG_PATH} or on the kernel command line instead)"
        ));
    }
    why
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
        Err(failure) => return Err(Fatal::new(what(), explain(&failure, fstype, Role::Image))),
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
        Err(failure) => Err(Fatal::new(what(), explain(&failure, fstype, Role::Image))),
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
            Err(failure) => {
                return Err(Fatal::new(
                    what(),
                    explain(&failure, "overlay", Role::Overlay),
                ));
            }
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
    fn vfat_takes_the_built_in_charset_and_nothing_else_takes_options() {
        assert_eq!(boot_fs_options("vfat"), "iocharset=default");
        for fstype in ["ext4", "xfs", "btrfs", "erofs", "msdos"] {
            assert_eq!(boot_fs_options(fstype), "", "{fstype}");
        }
    }

    fn nodev() -> MountFailure {
        MountFailure::from(Errno::NODEV)
    }

    /// A kernel without the filesystem's driver: the FATAL line names the module the mini
    /// initramfs lacks and the command that adds it.
    #[test]
    fn a_missing_driver_names_its_module_and_the_rebuild() {
        let boot = |probed| Role::Boot {
            device: "/dev/vda1",
            probed,
        };
        let line = Fatal::new(
            "mounting ext4 /dev/vda1 on /boot",
            explain(&nodev(), "ext4", boot(Some("ext4"))),
        )
        .to_string();
        assert_eq!(
            line,
            "mounting ext4 /dev/vda1 on /boot: No such device (os error 19): this kernel has no ext4 driver: it is not built in, and the mini initramfs has no ext4 module to load; rebuild the mini initramfs with `builder initramfs --bootfstype ext4 …` to add it"
        );
        // (fstype, role, fragments the why must show, fragments it must not)
        let cases: &[(&str, Role<'_>, &[&str], &[&str])] = &[
            (
                "ext3",
                boot(Some("ext3")),
                &["no ext3 driver", "no ext4 module", "--bootfstype ext3 …`"],
                &["holds"],
            ),
            (
                "xfs",
                boot(None),
                &["no xfs driver", "no xfs module", "--bootfstype xfs …`"],
                &["holds"],
            ),
            (
                "xfs",
                boot(Some("ext4")),
                &[
                    "--bootfstype xfs …`",
                    "(but /dev/vda1 holds ext4, not xfs: if that is the boot filesystem, correct 'bootfstype' in /etc/initoverlayfs.conf",
                ],
                &[],
            ),
            (
                "erofs",
                Role::Image,
                &[
                    "no erofs module",
                    "`builder initramfs --fstype erofs …` to add it",
                ],
                &["bootfstype", "holds"],
            ),
            (
                "overlay",
                Role::Overlay,
                &["no overlay module", "`builder initramfs …` to add it"],
                &["--fstype", "--bootfstype"],
            ),
        ];
        for (fstype, role, shown, not_shown) in cases {
            let why = explain(&nodev(), fstype, *role);
            assert!(
                why.starts_with("No such device (os error 19): this kernel has no "),
                "{why}"
            );
            assert_eq!(
                why,
                format!("{}: {}", nodev(), missing_driver(fstype, *role))
            );
            for fragment in *shown {
                assert!(why.contains(fragment), "{fstype} {role:?}: {why}");
            }
            for fragment in *not_shown {
                assert!(!why.contains(fragment), "{fstype} {role:?}: {why}");
            }
        }
    }

    #[test]
    fn other_failures_keep_their_explanations() {
        let inval = MountFailure::from(Errno::INVAL);
        let why = explain(&inval, "erofs", Role::Image);
        assert!(
            why.contains("not a valid erofs image")
                && why.ends_with("rebuild it with `builder image`"),
            "{why}"
        );
        let boot = Role::Boot {
            device: "/dev/vda1",
            probed: Some("ext4"),
        };
        assert_eq!(explain(&inval, "ext4", boot), inval.to_string());
        let busy = MountFailure::from(Errno::BUSY);
        assert_eq!(explain(&busy, "erofs", Role::Image), busy.to_string());
    }

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
