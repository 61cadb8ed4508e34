//! Makes a reproducible ext4 filesystem image from a directory with e2fsprogs (there is no ext4
//! writer in Rust): `mkfs.ext4 -d`, then a `debugfs` pass that normalises timestamps and (unless
//! asked to keep them) owners.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::DiskError;
use crate::guid::Guid;

/// e2fsprogs reads this instead of the clock for every time it stores (superblock, inode
/// `crtime`, lost+found). It treats 0 as unset, so callers' epochs below 1 are raised to 1.
const FAKE_TIME_ENV: &str = "E2FSPROGS_FAKE_TIME";

/// What to put into one ext4 image.
#[derive(Debug)]
pub(crate) struct Ext4Spec<'a> {
    pub(crate) fs_uuid: Guid,
    pub(crate) label: &'a str,
    pub(crate) size_bytes: u64,
    pub(crate) contents: &'a Path,
    /// Every timestamp in the image is at most this (seconds since the epoch).
    pub(crate) timestamp: u64,
    /// The filesystem block size, if mke2fs's choice will not do: a drive with 4096-byte
    /// logical blocks cannot mount a filesystem with smaller ones (mke2fs picks 1 KiB for
    /// small filesystems).
    pub(crate) block_size: Option<u64>,
    /// Keep the source files' owners (mkfs.ext4 -d copies them) rather than making them root's.
    pub(crate) keep_owners: bool,
}

/// Writes the filesystem to `image` (created or truncated).
pub(crate) fn make_ext4(spec: &Ext4Spec<'_>, image: &Path) -> Result<(), DiskError> {
    let fake_time = spec.timestamp.max(1).to_string();
    let uuid = spec.fs_uuid.to_string();
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.env(FAKE_TIME_ENV, &fake_time)
        .args(["-q", "-F", "-t", "ext4", "-U", &uuid, "-L", spec.label]);
    if let Some(block_size) = spec.block_size {
        mkfs.arg("-b").arg(block_size.to_string());
    }
    mkfs
        // The directory hash seed is random unless given; the UUID is as good a seed as any.
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(spec.contents)
        .arg(image)
        // mke2fs reads a bare number as 1 KiB blocks; a `k` suffix makes that explicit.
        .arg(format!("{}k", spec.size_bytes / 1024));
    run(&mut mkfs)?;

    // mkfs.ext4 -d copies owners, atime and ctime from the source files: the ctime of a file
    // cannot be set from userspace and reading it moves its atime, so neither is reproducible.
    let script = normalise_script(spec.contents, spec.timestamp, spec.keep_owners)?;
    let script_path = image.with_extension("debugfs");
    fs::write(&script_path, script).map_err(|source| DiskError::Io {
        path: script_path.clone(),
        source,
    })?;
    let mut debugfs = Command::new("debugfs");
    debugfs
        .env(FAKE_TIME_ENV, &fake_time)
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(image);
    let result = run(&mut debugfs);
    // Best effort: a left-over script only costs a small file beside the image.
    let _ = fs::remove_file(&script_path);
    result
}

/// A debugfs script that clamps every entry's times to `timestamp` and, unless `keep_owners`,
/// makes it owned by root.
fn normalise_script(
    contents: &Path,
    timestamp: u64,
    keep_owners: bool,
) -> Result<String, DiskError> {
    let mut entries = Vec::new();
    collect_entries(contents, Path::new("/"), &mut entries)?;
    let mut script = String::new();
    for (fs_path, metadata) in entries {
        let text = fs_path.to_str().filter(|t| !t.contains(['"', '\n']));
        let Some(text) = text else {
            return Err(DiskError::UnsupportedFileName { path: fs_path });
        };
        let time = u64::try_from(metadata.mtime()).unwrap_or(0).min(timestamp);
        let owners = [("uid", "0".to_owned()), ("gid", "0".to_owned())];
        let owners = if keep_owners {
            &owners[..0]
        } else {
            &owners[..]
        };
        let times = [
            ("mtime", format!("@{time}")),
            ("atime", format!("@{time}")),
            ("ctime", format!("@{time}")),
        ];
        for (field, value) in owners.iter().chain(&times) {
            // `sif` works on the path's own inode: a symlink is not followed.
            let _ = writeln!(script, "sif \"{text}\" {field} {value}");
        }
    }
    Ok(script)
}

/// Every entry below `dir` (and `dir` itself as `fs_path`), in sorted order.
fn collect_entries(
    dir: &Path,
    fs_path: &Path,
    out: &mut Vec<(PathBuf, fs::Metadata)>,
) -> Result<(), DiskError> {
    let io = |source| DiskError::Io {
        path: dir.to_owned(),
        source,
    };
    out.push((fs_path.to_owned(), fs::symlink_metadata(dir).map_err(io)?));
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    children.sort_by_key(|entry| entry.file_name());
    for child in children {
        let child_fs_path = fs_path.join(child.file_name());
        let metadata = child.metadata().map_err(io)?;
        if metadata.is_dir() {
            collect_entries(&child.path(), &child_fs_path, out)?;
        } else {
            out.push((child_fs_path, metadata));
        }
    }
    Ok(())
}

/// Runs a tool, turning a failure into an error that quotes its output.
fn run(command: &mut Command) -> Result<(), DiskError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| DiskError::ToolMissing {
        program: program.clone(),
        source,
    })?;
    // debugfs reports a failed `sif` on stderr but still exits 0.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let debugfs_failed = program == "debugfs"
        && stderr
            .lines()
            .any(|line| !line.starts_with("debugfs ") && !line.trim().is_empty());
    if !output.status.success() || debugfs_failed {
        return Err(DiskError::ToolFailed {
            program,
            status: output.status.to_string(),
            stderr: stderr.into_owned(),
        });
    }
    Ok(())
}
