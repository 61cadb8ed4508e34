//! Makes a reproducible FAT filesystem image from a flat directory, in Rust (`fatfs`): a chosen
//! volume id and label, every timestamp the FAT epoch, entries added in sorted order.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

use super::DiskError;

/// A FAT volume label is 11 bytes in the boot sector (FAT specification, `BS_VolLab`).
pub(crate) const LABEL_MAX: usize = 11;

/// Stamps every directory entry 1980-01-01 00:00, the first instant FAT can store, whatever
/// the clock says: FAT keeps local times with no zone, so a fixed one is the honest choice.
#[derive(Debug)]
struct FatEpoch;

const EPOCH_DATE: Date = Date {
    year: 1980,
    month: 1,
    day: 1,
};

impl TimeProvider for FatEpoch {
    fn get_current_date(&self) -> Date {
        EPOCH_DATE
    }

    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: EPOCH_DATE,
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FAT_EPOCH: FatEpoch = FatEpoch;

/// Writes a FAT filesystem of `size_bytes` holding the tree at `contents` to `image`.
pub(crate) fn make_vfat(
    volume_id: u32,
    label: &str,
    size_bytes: u64,
    sector_size: u64,
    contents: &Path,
    image: &Path,
) -> Result<(), DiskError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DiskError::Io { path, source }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(io_error(image))?;
    file.set_len(size_bytes).map_err(io_error(image))?;
    let mut padded = [b' '; LABEL_MAX];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    // The FAT's logical sector is the drive's: a 4Kn drive mounts no smaller one.
    let bytes_per_sector = u16::try_from(sector_size).map_err(|_| DiskError::Io {
        path: image.to_owned(),
        source: io::Error::other(format!("sector size {sector_size} does not fit FAT")),
    })?;
    let options = FormatVolumeOptions::new()
        .bytes_per_sector(bytes_per_sector)
        .volume_id(volume_id)
        .volume_label(padded);
    fatfs::format_volume(&file, options).map_err(io_error(image))?;
    let fs = FileSystem::new(&file, FsOptions::new().time_provider(&FAT_EPOCH))
        .map_err(io_error(image))?;
    copy_tree(&fs.root_dir(), contents)?;
    fs.unmount().map_err(io_error(image))
}

fn copy_tree<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    source: &Path,
) -> Result<(), DiskError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DiskError::Io { path, source }
    };
    let mut entries: Vec<_> = fs::read_dir(source)
        .map_err(io_error(source))?
        .collect::<io::Result<_>>()
        .map_err(io_error(source))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DiskError::UnsupportedFileName { path: path.clone() })?;
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            // fatfs 0.3 writes a subdirectory's "." and ".." with long-name entries, which
            // fsck.fat rejects; until a writer that gets them right is in, refuse rather than
            // hand the guest a damaged filesystem.
            return Err(DiskError::Invalid {
                partition: path.display().to_string(),
                problem: "subdirectories are not supported on vfat partitions yet (fatfs 0.3 writes their . and .. entries wrongly)".to_owned(),
            });
        } else if kind.is_file() {
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            let mut file = dir.create_file(&name).map_err(io_error(&path))?;
            file.write_all(&bytes).map_err(io_error(&path))?;
        } else {
            // FAT has no symlinks or device nodes.
            return Err(DiskError::UnsupportedFileName { path });
        }
    }
    Ok(())
}
