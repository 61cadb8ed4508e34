//! Unpacking archive entries into a directory the way the kernel unpacks an initramfs into
//! rootfs, but safe against a hostile archive: no path leaves the directory (`..` is refused, a
//! leading `/` means the directory itself), nothing is written through a symlink the archive
//! made, hard links become hard links, device nodes become device nodes (which needs root).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::cpio::{
    PERMISSION_BITS, ReadEntry, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG,
    S_IFSOCK,
};

/// Why an entry cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry {name:?}: {problem}; the archive is corrupt or hostile, nothing was written outside {root}", root = .root.display())]
    UnsafePath {
        name: String,
        problem: String,
        root: PathBuf,
    },
    #[error("archive entry {name:?} has file type {mode:#o}, which no Linux file has")]
    UnknownType { name: String, mode: u32 },
    #[error(
        "archive entry {name:?} is a device node; creating it needs root (run builder as root, e.g. through sudo): {error}"
    )]
    DeviceNeedsRoot { name: String, error: io::Error },
    #[error("unpacking archive entry {name:?} to {path}: {error}", path = .path.display())]
    Io {
        name: String,
        path: PathBuf,
        error: io::Error,
    },
}

/// What was unpacked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    pub nodes: usize,
}

/// The path below `root` an entry name stands for; `None` for the root itself (`.`, `/`).
pub fn relative_path(name: &str) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("it contains '..'".into()),
            Component::Prefix(_) => return Err("it has a path prefix".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks `entries` (in unpacking order: a later entry replaces an earlier one) below `root`,
/// which must exist. Directory modes are applied last, so a read-only directory still gets its
/// contents.
pub fn extract(entries: &[&ReadEntry], root: &Path) -> Result<Extracted, ExtractError> {
    let mut done = Extracted::default();
    let mut links: HashMap<(u32, u32, u32, u32), PathBuf> = HashMap::new();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let is_root = rustix::process::geteuid().is_root();
    for entry in entries {
        let name = entry.name.as_str();
        let unsafe_path = |problem: String| ExtractError::UnsafePath {
            name: name.to_owned(),
            problem,
            root: root.to_owned(),
        };
        let Some(relative) = relative_path(name).map_err(unsafe_path)? else {
            continue;
        };
        let path = root.join(&relative);
        let io_error = |error| ExtractError::Io {
            name: name.to_owned(),
            path: path.clone(),
            error,
        };
        create_parents(root, &relative).map_err(|problem| match problem {
            ParentProblem::Symlink(parent) => unsafe_path(format!(
                "it would be written through {}, a symlink the archive made",
                parent.display()
            )),
            ParentProblem::NotDir(parent) => unsafe_path(format!(
                "its parent {} is not a directory",
                parent.display()
            )),
            ParentProblem::Io(error) => io_error(error),
        })?;
        let kind = entry.mode & S_IFMT;
        let existing = std::fs::symlink_metadata(&path).ok();
        // A later entry replaces an earlier one, except that a directory stays a directory.
        if let Some(existing) = &existing
            && !(existing.is_dir() && kind == S_IFDIR)
        {
            let removed = if existing.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io_error)?;
        }
        match kind {
            S_IFDIR => {
                if !path.is_dir() {
                    std::fs::create_dir(&path).map_err(io_error)?;
                }
                dir_modes.push((path.clone(), entry.mode & PERMISSION_BITS));
                done.dirs += 1;
            }
            S_IFREG => {
                let key = (entry.ino, entry.rdevmajor, entry.rdevminor, entry.mode);
                match links.get(&key).filter(|_| entry.nlink >= 2) {
                    Some(first) => {
                        std::fs::hard_link(first, &path).map_err(io_error)?;
                        // newc stores the data with one of the links only (GNU cpio: the last).
                        if !entry.data.is_empty() {
                            std::fs::write(&path, &entry.data).map_err(io_error)?;
                        }
                        done.hardlinks += 1;
                    }
                    None => {
                        std::fs::write(&path, &entry.data).map_err(io_error)?;
                        if entry.nlink >= 2 {
                            links.insert(key, path.clone());
                        }
                        done.files += 1;
                    }
                }
            }
            S_IFLNK => {
                let target = String::from_utf8_lossy(&entry.data).into_owned();
                symlink(&target, &path).map_err(io_error)?;
                done.symlinks += 1;
            }
            S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {
                let file_type = rustix::fs::FileType::from_raw_mode(kind);
                let device = rustix::fs::makedev(entry.rdevmajor, entry.rdevminor);
                let mode = rustix::fs::Mode::from_raw_mode(entry.mode & PERMISSION_BITS);
                rustix::fs::mknodat(rustix::fs::CWD, &path, file_type, mode, device).map_err(
                    |errno| {
                        let error = io::Error::from(errno);
                        if errno == rustix::io::Errno::PERM && matches!(kind, S_IFCHR | S_IFBLK) {
                            ExtractError::DeviceNeedsRoot {
                                name: name.to_owned(),
                                error,
                            }
                        } else {
                            io_error(error)
                        }
                    },
                )?;
                done.nodes += 1;
            }
            _ => {
                return Err(ExtractError::UnknownType {
                    name: name.to_owned(),
                    mode: entry.mode,
                });
            }
        }
        if is_root {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &path,
                Some(rustix::fs::Uid::from_raw(entry.uid)),
                Some(rustix::fs::Gid::from_raw(entry.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_error(e.into()))?;
        }
        // After the chown, which clears the setuid and setgid bits (dracut ships setuid
        // mount and umount).
        if kind == S_IFREG {
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(entry.mode & PERMISSION_BITS),
            )
            .map_err(io_error)?;
        }
    }
    // Deepest first, so a parent's mode never blocks setting a child's.
    dir_modes.sort_by(|a, b| b.0.cmp(&a.0));
    dir_modes.dedup_by(|a, b| a.0 == b.0);
    for (path, mode) in dir_modes {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(
            |error| ExtractError::Io {
                name: path.display().to_string(),
                path: path.clone(),
                error,
            },
        )?;
    }
    Ok(done)
}

enum ParentProblem {
    Symlink(PathBuf),
    NotDir(PathBuf),
    Io(io::Error),
}

/// Creates the missing parents of `relative` below `root` (mode 0755, as the kernel does),
/// refusing any that is a symlink or not a directory.
fn create_parents(root: &Path, relative: &Path) -> Result<(), ParentProblem> {
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    let mut current = root.to_path_buf();
    for part in parent.components() {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ParentProblem::Symlink(current));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ParentProblem::NotDir(current)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&current).map_err(ParentProblem::Io)?;
            }
            Err(e) => return Err(ParentProblem::Io(e)),
        }
    }
    Ok(())
}
