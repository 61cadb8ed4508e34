//! `builder list`: one sorted listing format ([`cpio::listing`]) for every artefact, so a
//! snapshot or a diff compares an initramfs, an erofs image and a directory tree line by line.
//!
//! Initramfs files are read by our own reader. Erofs images are mounted read-only (a loop
//! device) and walked like a directory: the kernel reads them as it will at boot, setuid bits
//! included, which erofs-utils 1.5's `fsck.erofs --extract` drops. Mounting needs root.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::{self, ReadEntry};

/// The erofs superblock's magic (`EROFS_SUPER_MAGIC_V1`), little-endian at byte 1024.
const EROFS_MAGIC: [u8; 4] = 0xE0F5_E1E2_u32.to_le_bytes();
const EROFS_MAGIC_OFFSET: usize = 1024;

/// Why something cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("reading {path}: {error}", path = .path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{path}: {error}", path = .path.display())]
    Parse {
        path: PathBuf,
        error: crate::initramfs::InitramfsError,
    },
    #[error(
        "{path} is an erofs image: listing it needs root, to mount it read-only as the kernel reads it at boot",
        path = .path.display()
    )]
    NeedsRoot { path: PathBuf },
    #[error(
        "mounting the erofs image {path} read-only failed ({status}): {stderr} (the host kernel needs erofs: modprobe erofs)",
        path = .path.display()
    )]
    MountFailed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

/// What a listed path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Initramfs,
    Erofs,
    Directory,
}

/// The sorted listing of an initramfs (any compression, concatenated archives: the last entry
/// of each path, as the kernel unpacks them), an erofs image or a directory.
pub fn list_path(path: &Path) -> Result<(Listed, String), ListError> {
    let read_error = |error| ListError::Read {
        path: path.to_owned(),
        error,
    };
    if fs::metadata(path).map_err(read_error)?.is_dir() {
        return Ok((Listed::Directory, cpio::listing(&tree_entries(path)?)));
    }
    if is_erofs(path).map_err(read_error)? {
        return Ok((Listed::Erofs, list_erofs(path)?));
    }
    let bytes = fs::read(path).map_err(read_error)?;
    let initramfs = crate::initramfs::read(&bytes).map_err(|error| ListError::Parse {
        path: path.to_owned(),
        error,
    })?;
    let mut entries: Vec<ReadEntry> = initramfs.final_entries().into_iter().cloned().collect();
    share_hard_link_data(&mut entries);
    Ok((Listed::Initramfs, cpio::listing(&entries)))
}

/// newc stores a hard-linked file's data with one of its names only (GNU cpio and dracut: the
/// last); the others have size 0. Every name gets the data, as the unpacked tree has it.
/// Links are grouped as `extract` groups them: inode, device numbers and mode.
fn share_hard_link_data(entries: &mut [ReadEntry]) {
    let key = |e: &ReadEntry| (e.ino, e.rdevmajor, e.rdevminor, e.mode);
    let mut data: std::collections::HashMap<_, Vec<u8>> = Default::default();
    for entry in entries.iter().filter(|e| e.is_file() && e.nlink >= 2) {
        if !entry.data.is_empty() {
            data.insert(key(entry), entry.data.clone());
        }
    }
    for entry in entries.iter_mut().filter(|e| e.is_file() && e.nlink >= 2) {
        if entry.data.is_empty()
            && let Some(bytes) = data.get(&key(entry))
        {
            entry.data = bytes.clone();
        }
    }
}

fn is_erofs(path: &Path) -> io::Result<bool> {
    let mut head = Vec::with_capacity(EROFS_MAGIC_OFFSET + EROFS_MAGIC.len());
    fs::File::open(path)?
        .take((EROFS_MAGIC_OFFSET + EROFS_MAGIC.len()) as u64)
        .read_to_end(&mut head)?;
    Ok(head.get(EROFS_MAGIC_OFFSET..) == Some(&EROFS_MAGIC[..]))
}

fn list_erofs(image: &Path) -> Result<String, ListError> {
    if !rustix::process::geteuid().is_root() {
        return Err(ListError::NeedsRoot {
            path: image.to_owned(),
        });
    }
    let scratch = tempfile::tempdir().map_err(|error| ListError::Read {
        path: std::env::temp_dir(),
        error,
    })?;
    let output = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,loop,nosuid,nodev,noexec"])
        .arg(image)
        .arg(scratch.path())
        .output()
        .map_err(|error| ListError::Read {
            path: image.to_owned(),
            error,
        })?;
    if !output.status.success() {
        return Err(ListError::MountFailed {
            path: image.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mounted = Mounted(scratch.path().to_owned());
    let entries = tree_entries(&mounted.0);
    drop(mounted);
    Ok(cpio::listing(&entries?))
}

/// Unmounts when dropped, whatever the walk did.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every entry under `root` (not `root` itself), with names relative to it.
pub fn tree_entries(root: &Path) -> Result<Vec<ReadEntry>, ListError> {
    let mut entries = Vec::new();
    walk(root, Path::new(""), &mut entries)?;
    Ok(entries)
}

fn walk(root: &Path, relative: &Path, out: &mut Vec<ReadEntry>) -> Result<(), ListError> {
    let dir = root.join(relative);
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |error| ListError::Read { path, error }
    };
    for entry in fs::read_dir(&dir).map_err(read_error(&dir))? {
        let entry = entry.map_err(read_error(&dir))?;
        let name = relative.join(entry.file_name());
        let path = root.join(&name);
        let metadata = fs::symlink_metadata(&path).map_err(read_error(&path))?;
        let file_type = metadata.file_type();
        let data = if file_type.is_file() {
            fs::read(&path).map_err(read_error(&path))?
        } else if file_type.is_symlink() {
            fs::read_link(&path)
                .map_err(read_error(&path))?
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        let (major, minor) = if file_type.is_char_device() || file_type.is_block_device() {
            let rdev = metadata.rdev();
            (rustix::fs::major(rdev), rustix::fs::minor(rdev))
        } else {
            (0, 0)
        };
        out.push(ReadEntry {
            name: name.to_string_lossy().into_owned(),
            ino: 0,
            mode: metadata.mode(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            nlink: 0,
            mtime: 0,
            rdevmajor: major,
            rdevminor: minor,
            data,
        });
        if file_type.is_dir() {
            walk(root, &name, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn a_tree_lists_like_its_archive() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("t");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), b"box\n").unwrap();
        symlink("etc/hostname", root.join("link")).unwrap();
        // Modes as the archive below has them, whatever the umask.
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o644)).unwrap();
        let (kind, listing) = list_path(&root).unwrap();
        assert_eq!(kind, Listed::Directory);

        let mut archive = cpio::Archive::new();
        archive.add_dir("/etc", 0o755).unwrap();
        archive
            .add_file("/etc/hostname", 0o644, b"box\n".to_vec())
            .unwrap();
        archive.add_symlink("/link", "etc/hostname").unwrap();
        let cpio_path = work.path().join("a.cpio");
        fs::write(&cpio_path, archive.to_bytes(0).unwrap()).unwrap();
        let (kind, from_cpio) = list_path(&cpio_path).unwrap();
        assert_eq!(kind, Listed::Initramfs);
        // The tree is owned by whoever runs the test: compare all but the owner column.
        let without_owner = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| {
                    let mut fields: Vec<&str> = l.split_whitespace().collect();
                    fields.remove(1);
                    fields.join(" ")
                })
                .collect()
        };
        assert_eq!(without_owner(&listing), without_owner(&from_cpio));
    }

    #[test]
    fn unreadable_input_is_named() {
        let error = list_path(Path::new("/nonexistent/initrd.img")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/initrd.img"),
            "{error}"
        );
    }
}
