//! The fixture cache every run and every concurrent test process shares: where it is, and the
//! pieces each entry is filled with (under a lock, in a scratch directory removed however the
//! fill ends, completed by a marker written last and a rename).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Overrides where fetched fixtures are cached.
pub const CACHE_ENV: &str = "INITOVERLAYFS_CACHE";

/// Marks a cache entry as complete (written last).
pub(crate) const COMPLETE: &str = ".complete";

/// Where fetched fixtures and everything built from them are cached: `$INITOVERLAYFS_CACHE`,
/// else `initoverlayfs-rs` under the XDG cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("initoverlayfs-rs")
}

/// The one entry of `dir` (the kernel release under a package's `lib/modules`).
pub(crate) fn single_dir_name(dir: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        n => bail!(
            "expected one kernel release under {}, found {n}: {names:?}",
            dir.display()
        ),
    }
}

/// Removes a scratch directory when dropped (the downloaded package itself is never kept).
pub(crate) struct RemoveDirOnDrop(pub(crate) PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
