//! Makes a reproducible FAT filesystem image from a directory tree, in Rust (`fatfs`): a chosen
//! volume id and label, every timestamp the FAT epoch, entries added in sorted order.
//!
//! fatfs 0.3 writes a new directory's `.` and `..` entries each behind a long-name entry,
//! which the FAT specification does not allow (they must be the first two entries, short names
//! only) and fsck.fat rejects. [`repair_dot_entries`] walks the finished filesystem and puts
//! them right, so a tree with subdirectories (an ESP: `EFI/BOOT`, `loader/entries`) comes out
//! as mkfs.fat and mtools would have made it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
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
    fs.unmount().map_err(io_error(image))?;
    repair_dot_entries(&file).map_err(io_error(image))
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
            let sub = dir.create_dir(&name).map_err(io_error(&path))?;
            copy_tree(&sub, &path)?;
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

/// Bytes of one directory entry.
const ENTRY: usize = 32;
/// Attribute byte of a long-name entry, and of a directory.
const ATTR_LONG_NAME: u8 = 0x0F;
const ATTR_DIRECTORY: u8 = 0x10;
/// First name byte of a deleted entry, and of the end of a directory.
const DELETED: u8 = 0xE5;
const END: u8 = 0x00;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// The geometry of a FAT filesystem, from its boot sector (FAT specification, section 3).
struct Geometry {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    /// Byte offset of the first FAT and its length.
    fat_offset: u64,
    fat_bytes: u64,
    /// FAT12/16's fixed root directory region; None on FAT32.
    root_region: Option<(u64, u64)>,
    /// FAT32's root directory cluster.
    root_cluster: u32,
    first_data_byte: u64,
    bits: u8,
}

impl Geometry {
    fn read(file: &File) -> io::Result<Geometry> {
        let mut boot = [0u8; 512];
        file.read_exact_at(&mut boot, 0)?;
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
        let u32_at = |at: usize| {
            u64::from(u32::from_le_bytes(
                boot[at..at + 4].try_into().unwrap_or([0; 4]),
            ))
        };
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = u64::from(boot[13]);
        let reserved = u16_at(14);
        let fats = u64::from(boot[16]);
        let root_entries = u16_at(17);
        let total = match u16_at(19) {
            0 => u32_at(32),
            n => n,
        };
        let fat_sectors = match u16_at(22) {
            0 => u32_at(36),
            n => n,
        };
        if bytes_per_sector == 0 || sectors_per_cluster == 0 || fats == 0 {
            return Err(io::Error::other("not a FAT boot sector"));
        }
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(bytes_per_sector);
        let first_data_sector = reserved + fats * fat_sectors + root_sectors;
        let clusters = total.saturating_sub(first_data_sector) / sectors_per_cluster;
        let bits = if root_entries == 0 {
            32
        } else if clusters < 4085 {
            12
        } else {
            16
        };
        Ok(Geometry {
            bytes_per_sector,
            sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            fat_bytes: fat_sectors * bytes_per_sector,
            root_region: (bits != 32).then(|| {
                (
                    (reserved + fats * fat_sectors) * bytes_per_sector,
                    root_sectors * bytes_per_sector,
                )
            }),
            root_cluster: u32_at(44) as u32,
            first_data_byte: first_data_sector * bytes_per_sector,
            bits,
        })
    }

    fn cluster_bytes(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.first_data_byte + u64::from(cluster.saturating_sub(2)) * self.cluster_bytes()
    }

    /// The cluster after `cluster` in its chain, None at the end.
    fn next(&self, fat: &[u8], cluster: u32) -> Option<u32> {
        let c = cluster as usize;
        let (value, end) = match self.bits {
            12 => {
                let at = c + c / 2;
                let pair = u16::from_le_bytes([*fat.get(at)?, *fat.get(at + 1)?]);
                let v = if c.is_multiple_of(2) {
                    pair & 0x0FFF
                } else {
                    pair >> 4
                };
                (u32::from(v), 0x0FF8)
            }
            16 => (
                u32::from(u16::from_le_bytes([*fat.get(2 * c)?, *fat.get(2 * c + 1)?])),
                0xFFF8,
            ),
            _ => (
                u32::from_le_bytes(fat.get(4 * c..4 * c + 4)?.try_into().ok()?) & 0x0FFF_FFFF,
                0x0FFF_FFF8,
            ),
        };
        (2..end).contains(&value).then_some(value)
    }

    /// The clusters of the chain starting at `first`, bounded by the FAT's size (a loop in a
    /// damaged chain cannot run forever).
    fn chain(&self, fat: &[u8], first: u32) -> Vec<u32> {
        let limit = fat.len() * 8 / usize::from(self.bits);
        let mut chain = vec![first];
        while let Some(next) = self.next(fat, *chain.last().unwrap_or(&first)) {
            if chain.len() > limit {
                break;
            }
            chain.push(next);
        }
        chain
    }
}

/// Rewrites each subdirectory's first entries to the specification's `.`, `..` (short names
/// only, `..` of a top-level directory pointing at cluster 0); the long-name entries fatfs put
/// before them become deleted entries. Idempotent.
pub(crate) fn repair_dot_entries(file: &File) -> io::Result<()> {
    let geometry = Geometry::read(file)?;
    let mut fat = vec![0u8; geometry.fat_bytes as usize];
    file.read_exact_at(&mut fat, geometry.fat_offset)?;
    let root = match geometry.root_region {
        Some((offset, len)) => read_at(file, offset, len)?,
        None => read_chain(file, &geometry, &fat, geometry.root_cluster)?,
    };
    repair_children(file, &geometry, &fat, &root, true)
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

fn read_chain(file: &File, geometry: &Geometry, fat: &[u8], first: u32) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for cluster in geometry.chain(fat, first) {
        bytes.extend(read_at(
            file,
            geometry.cluster_offset(cluster),
            geometry.cluster_bytes(),
        )?);
    }
    Ok(bytes)
}

/// Repairs every subdirectory listed in `entries` (a directory's bytes), then its children.
fn repair_children(
    file: &File,
    geometry: &Geometry,
    fat: &[u8],
    entries: &[u8],
    parent_is_root: bool,
) -> io::Result<()> {
    for entry in entries.chunks_exact(ENTRY) {
        match entry[0] {
            END => break,
            DELETED => continue,
            _ => {}
        }
        let attributes = entry[11];
        let name = &entry[..11];
        if attributes == ATTR_LONG_NAME
            || attributes & ATTR_DIRECTORY == 0
            || name == DOT
            || name == DOTDOT
        {
            continue;
        }
        let cluster = u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
            | u32::from(u16::from_le_bytes([entry[26], entry[27]]));
        let offset = geometry.cluster_offset(cluster);
        let mut head = read_at(file, offset, 4 * ENTRY as u64)?;
        let slot = |i: usize| i * ENTRY..(i + 1) * ENTRY;
        let is_long = |bytes: &[u8], i: usize| bytes[i * ENTRY + 11] == ATTR_LONG_NAME;
        let named = |bytes: &[u8], i: usize, n: &[u8; 11]| &bytes[i * ENTRY..i * ENTRY + 11] == n;
        if is_long(&head, 0) && named(&head, 1, DOT) && is_long(&head, 2) && named(&head, 3, DOTDOT)
        {
            let (lfn_dot, dot) = (head[slot(0)].to_vec(), head[slot(1)].to_vec());
            let (lfn_dotdot, dotdot) = (head[slot(2)].to_vec(), head[slot(3)].to_vec());
            head[slot(0)].copy_from_slice(&dot);
            head[slot(1)].copy_from_slice(&dotdot);
            head[slot(2)].copy_from_slice(&lfn_dot);
            head[slot(3)].copy_from_slice(&lfn_dotdot);
            head[2 * ENTRY] = DELETED;
            head[3 * ENTRY] = DELETED;
        } else if !(named(&head, 0, DOT) && named(&head, 1, DOTDOT)) {
            return Err(io::Error::other(format!(
                "directory at cluster {cluster} does not start with . and .."
            )));
        }
        if parent_is_root {
            // `..` of a top-level directory is cluster 0, also on FAT32 (whose root has one).
            for at in [ENTRY + 20, ENTRY + 21, ENTRY + 26, ENTRY + 27] {
                head[at] = 0;
            }
        }
        file.write_all_at(&head, offset)?;
        let children = read_chain(file, geometry, fat, cluster)?;
        repair_children(file, geometry, fat, &children, false)?;
    }
    Ok(())
}
