//! Switching root from the initramfs to the overlay: free the initramfs (its files would stay
//! in RAM forever otherwise), move the new root onto `/`, chroot into it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::io::Errno;

use crate::error::{Context, Fatal};

/// `statfs` magic numbers from `<linux/magic.h>`: the initramfs root is one of these.
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Deletes the initramfs contents, then makes `new_root` the root of the mount namespace.
///
/// Refuses unless `/` is a ramfs or tmpfs, so a mistaken run on a real system deletes nothing.
pub fn switch_root(new_root: &Path) -> Result<(), Fatal> {
    let root_fs = rustix::fs::statfs("/").context(|| "checking the filesystem of /".to_owned())?;
    let magic = root_fs.f_type as i64;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Err(Fatal::new(
            "switching root",
            format!("/ is not an initramfs (filesystem magic {magic:#x}); refusing to delete it"),
        ));
    }
    let root_dev = std::fs::metadata("/")
        .context(|| "reading /".to_owned())?
        .dev();
    delete_tree(Path::new("/"), root_dev)?;
    std::env::set_current_dir(new_root).context(|| format!("entering {}", new_root.display()))?;
    rustix::mount::mount_move(".", "/")
        .map_err(|e| Fatal::new(format!("moving {} onto /", new_root.display()), errno(e)))?;
    rustix::process::chroot(".").map_err(|e| Fatal::new("chroot into the new root", errno(e)))?;
    std::env::set_current_dir("/").context(|| "entering the new /".to_owned())
}

/// Removes everything under `dir` that lives on the device `root_dev`; mount points (other
/// devices) and everything below them are left alone.
fn delete_tree(dir: &Path, root_dev: u64) -> Result<(), Fatal> {
    let entries = std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).context(|| format!("reading {}", path.display()))?;
        if meta.dev() != root_dev {
            continue;
        }
        if meta.is_dir() {
            delete_tree(&path, root_dev)?;
            match std::fs::remove_dir(&path) {
                // A directory that still holds a mount point is kept (the mount is still needed).
                Err(e) if e.raw_os_error() == Some(Errno::NOTEMPTY.raw_os_error()) => {}
                other => other.context(|| format!("removing {}", path.display()))?,
            }
        } else {
            std::fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn errno(e: Errno) -> String {
    crate::modules::errno_text(e)
}
