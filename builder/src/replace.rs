//! Replacing a file so that a crash or a full disk at any moment leaves either the old file or
//! the new one, never a mix: write a temporary file beside it, fsync it, rename it over the
//! target, fsync the directory.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be replaced; the old one, if any, is untouched.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {error} (the previous file, if any, is unchanged)", path = .path.display())]
pub struct ReplaceError {
    pub path: PathBuf,
    #[source]
    pub error: io::Error,
}

/// How the temporary files are named: what a run that was stopped dead leaves behind.
pub const TEMPORARY_PREFIX: &str = ".builder-";

/// Writes `bytes` to `path` with permission bits `mode`, atomically.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ReplaceError> {
    replace_with(path, mode, |file| file.write_all(bytes))
}

/// As [`replace_file`], with the content written by `fill`.
pub fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let error = |error| ReplaceError {
        path: path.to_owned(),
        error,
    };
    let mut temporary = temporary_beside(path)?;
    fill(temporary.as_file_mut()).map_err(error)?;
    temporary
        .as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(error)?;
    commit(temporary, path)
}

/// A temporary file in `path`'s directory (so the final rename stays on one filesystem),
/// deleted when dropped: for content another program writes by path (mkfs.erofs).
pub fn temporary_beside(path: &Path) -> Result<tempfile::NamedTempFile, ReplaceError> {
    tempfile::Builder::new()
        .prefix(TEMPORARY_PREFIX)
        .tempfile_in(parent(path))
        .map_err(|error| ReplaceError {
            path: path.to_owned(),
            error,
        })
}

/// Makes `temporary`'s content `path`: fsync it, rename it over `path`, fsync the directory.
pub fn commit(temporary: tempfile::NamedTempFile, path: &Path) -> Result<(), ReplaceError> {
    let error = |error| ReplaceError {
        path: path.to_owned(),
        error,
    };
    // By path: a program that wrote it may have replaced the file the handle opened.
    crate::fault::point("after writing the temporary file");
    File::open(temporary.path())
        .and_then(|f| f.sync_all())
        .map_err(error)?;
    crate::fault::point("after its fsync");
    temporary.persist(path).map_err(|e| error(e.error))?;
    crate::fault::point("after its rename");
    sync_parent(path)?;
    crate::fault::point("after the directory's fsync");
    Ok(())
}

/// fsyncs the directory holding `path`, so a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> Result<(), ReplaceError> {
    File::open(parent(path))
        .and_then(|d| d.sync_all())
        .map_err(|error| ReplaceError {
            path: path.to_owned(),
            error,
        })
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes `path` if it exists.
pub fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd.img");
        fs::write(&path, b"old").unwrap();
        replace_file(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);

        let failed = replace_with(&path, 0o644, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(failed.to_string().contains("initrd.img"), "{failed}");
        assert!(failed.to_string().contains("disk full"), "{failed}");
        assert_eq!(fs::read(&path).unwrap(), b"new", "the old file is intact");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["initrd.img"], "no temporary file left behind");

        assert!(remove_if_present(&path).unwrap());
        assert!(!remove_if_present(&path).unwrap());
    }
}
