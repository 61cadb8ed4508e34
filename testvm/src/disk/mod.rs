//! Raw GPT disk images with ext4 partitions, built without root, loop devices or partitioning
//! tools, byte-for-byte reproducible for the same inputs.

mod ext4;
mod gpt;
mod vfat;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::guid::Guid;
use ext4::{Ext4Spec, make_ext4};
#[cfg(test)]
use gpt::SECTOR_SIZE;
use gpt::{GptEntry, NAME_UNITS};

/// Partitions start on 1 MiB boundaries, as fdisk, parted and sgdisk place them by default.
const ALIGNMENT_BYTES: u64 = 1 << 20;

/// One MiB, the unit partition sizes are given in.
const MIB: u64 = 1 << 20;

/// Longest ext4 label: `s_volume_name` is 16 bytes (linux/fs/ext4/ext4.h, `EXT4_LABEL_MAX`).
const EXT4_LABEL_MAX: usize = 16;

/// Size of the chunks copied into the disk; all-zero chunks are skipped to keep it sparse.
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// The environment variable of the reproducible-builds convention for "the time of the build".
pub const SOURCE_DATE_EPOCH_ENV: &str = "SOURCE_DATE_EPOCH";

/// The filesystem of a partition, with its identity (`UUID=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    /// ext4 (a Linux filesystem partition), made with e2fsprogs.
    Ext4 {
        /// Filesystem UUID.
        uuid: Guid,
    },
    /// FAT (an EFI System Partition), made in Rust; `UUID=` is the volume id as `XXXX-XXXX`.
    Vfat {
        /// The 32-bit volume id.
        volume_id: u32,
    },
    /// A partition image made elsewhere (a LUKS2 container, an LVM physical volume): the
    /// file [`Partition::contents`] names is copied in as it is, at most [`Partition::size_mib`]
    /// long; the rest of the partition reads as zeros. Its identity is inside the image;
    /// [`Partition::label`] must be empty.
    Image {
        /// The GPT partition type.
        type_guid: Guid,
    },
}

/// A partition and what goes into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (`PARTLABEL=`), at most 36 UTF-16 code units.
    pub name: String,
    /// GPT unique partition GUID (`PARTUUID=`).
    pub part_guid: Guid,
    /// The filesystem and its identity.
    pub filesystem: Filesystem,
    /// Filesystem label (`LABEL=`), at most 16 bytes for ext4 and 11 for vfat.
    pub label: String,
    /// Partition and filesystem size.
    pub size_mib: u64,
    /// Directory whose contents become the filesystem's root; file modes are kept, owners
    /// become root (unless [`Partition::keep_owners`]) and times are clamped to
    /// [`GptDisk::timestamp`]. For [`Filesystem::Image`], the image file.
    pub contents: PathBuf,
    /// Keep the owners (uid, gid) of the source files instead of making everything root's: a
    /// real root filesystem has files of other users (`_apt`, `messagebus`), and its setuid
    /// programs mean something only with their owner. ext4 only (vfat has no owners).
    pub keep_owners: bool,
}

/// A whole disk: a GPT and its partitions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptDisk {
    /// The GPT disk GUID.
    pub disk_guid: Guid,
    /// Partitions, laid out one after the other on 1 MiB boundaries.
    pub partitions: Vec<Partition>,
    /// Seconds since the epoch that every filesystem timestamp is clamped to; see
    /// [`source_date_epoch`].
    pub timestamp: u64,
    /// Round the disk size up to a power of two (QEMU's SD cards take no other size); the
    /// backup GPT still sits at the very end.
    pub power_of_two_size: bool,
    /// The logical block size of the drive the image is for: 512, or 4096 for a 4Kn drive.
    /// The GPT counts in these; filesystems do not care.
    pub sector_size: u64,
}

/// Why a disk image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A field does not fit its on-disk format.
    #[error("partition {partition}: {problem}")]
    Invalid {
        /// The partition's GPT name.
        partition: String,
        /// What is wrong.
        problem: String,
    },
    /// A file name the `debugfs` script cannot carry (a double quote or a newline).
    #[error("unsupported file name {path:?} in partition contents")]
    UnsupportedFileName {
        /// The path inside the filesystem.
        path: PathBuf,
    },
    /// An e2fsprogs tool could not be started.
    #[error("cannot run {program} (is e2fsprogs installed?): {source}")]
    ToolMissing {
        /// The program name.
        program: String,
        /// Why it did not start.
        source: io::Error,
    },
    /// An e2fsprogs tool failed.
    #[error("{program} failed ({status}): {stderr}")]
    ToolFailed {
        /// The program name.
        program: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// Reading the contents or writing the image failed.
    #[error("{path:?}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Writes a bare ext4 filesystem image (no partition table) of `contents`, reproducibly, as
/// the partitions are made: for images that are themselves files on a disk (an ext4
/// initoverlayfs image, mounted through a loop device).
pub fn write_ext4_image(
    contents: &Path,
    uuid: Guid,
    label: &str,
    size_mib: u64,
    timestamp: u64,
    image: &Path,
) -> Result<(), DiskError> {
    if label.len() > EXT4_LABEL_MAX {
        return Err(DiskError::Invalid {
            partition: image.display().to_string(),
            problem: format!("label `{label}` longer than {EXT4_LABEL_MAX} bytes"),
        });
    }
    let spec = Ext4Spec {
        fs_uuid: uuid,
        label,
        size_bytes: size_mib * MIB,
        contents,
        timestamp,
        block_size: None,
        keep_owners: false,
    };
    make_ext4(&spec, image)
}

/// `SOURCE_DATE_EPOCH` if it is set to a number, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var(SOURCE_DATE_EPOCH_ENV)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Where one partition lies on the disk, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    first_lba: u64,
    sectors: u64,
}

impl GptDisk {
    /// Writes the image to `path` (replaced atomically: a temporary file in the same
    /// directory is renamed over it). Needs `mkfs.ext4` and `debugfs` from e2fsprogs.
    pub fn write(&self, path: &Path) -> Result<(), DiskError> {
        self.validate()?;
        let (extents, total_sectors) = self.layout();
        let io_error = |source| DiskError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut disk = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
        disk.as_file()
            .set_len(total_sectors * self.sector_size)
            .map_err(io_error)?;

        for (partition, extent) in self.partitions.iter().zip(&extents) {
            let fs_image = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
            let size_bytes = extent.sectors * self.sector_size;
            match partition.filesystem {
                Filesystem::Ext4 { uuid } => {
                    let spec = Ext4Spec {
                        fs_uuid: uuid,
                        label: &partition.label,
                        size_bytes,
                        contents: &partition.contents,
                        timestamp: self.timestamp,
                        block_size: (self.sector_size > 1024).then_some(self.sector_size),
                        keep_owners: partition.keep_owners,
                    };
                    make_ext4(&spec, fs_image.path())?;
                }
                Filesystem::Image { .. } => {
                    let length = std::fs::metadata(&partition.contents)
                        .map_err(|source| DiskError::Io {
                            path: partition.contents.clone(),
                            source,
                        })?
                        .len();
                    if length > size_bytes {
                        return Err(DiskError::Invalid {
                            partition: partition.name.clone(),
                            problem: format!(
                                "image {} is {length} bytes, more than the partition's {size_bytes}",
                                partition.contents.display()
                            ),
                        });
                    }
                }
                Filesystem::Vfat { volume_id } => {
                    vfat::make_vfat(
                        volume_id,
                        &partition.label,
                        size_bytes,
                        self.sector_size,
                        &partition.contents,
                        fs_image.path(),
                    )?;
                }
            }
            let source_path = match partition.filesystem {
                Filesystem::Image { .. } => partition.contents.as_path(),
                _ => fs_image.path(),
            };
            let mut source = File::open(source_path).map_err(|source| DiskError::Io {
                path: source_path.to_owned(),
                source,
            })?;
            copy_sparse(
                &mut source,
                disk.as_file_mut(),
                extent.first_lba * self.sector_size,
            )
            .map_err(io_error)?;
        }

        let entries: Vec<GptEntry> = self
            .partitions
            .iter()
            .zip(&extents)
            .map(|(partition, extent)| GptEntry {
                type_guid: match partition.filesystem {
                    Filesystem::Ext4 { .. } => Guid::LINUX_FILESYSTEM,
                    Filesystem::Vfat { .. } => Guid::EFI_SYSTEM,
                    Filesystem::Image { type_guid } => type_guid,
                },
                unique_guid: partition.part_guid,
                first_lba: extent.first_lba,
                last_lba: extent.first_lba + extent.sectors - 1,
                name: partition.name.clone(),
            })
            .collect();
        let tables = gpt::build(self.disk_guid, total_sectors, self.sector_size, &entries);
        let file = disk.as_file_mut();
        write_at(file, 0, &tables.head).map_err(io_error)?;
        write_at(file, tables.tail_offset, &tables.tail).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        disk.persist(path).map_err(|e| io_error(e.error))?;
        Ok(())
    }

    /// Checks what the on-disk formats cannot hold, before any tool runs.
    fn validate(&self) -> Result<(), DiskError> {
        for partition in &self.partitions {
            let invalid = |problem: String| DiskError::Invalid {
                partition: partition.name.clone(),
                problem,
            };
            if partition.name.encode_utf16().count() > NAME_UNITS {
                return Err(invalid(format!(
                    "GPT name longer than {NAME_UNITS} UTF-16 units"
                )));
            }
            let label_max = match partition.filesystem {
                Filesystem::Ext4 { .. } => EXT4_LABEL_MAX,
                Filesystem::Vfat { .. } => vfat::LABEL_MAX,
                Filesystem::Image { .. } => 0,
            };
            if partition.label.len() > label_max {
                return Err(invalid(format!(
                    "label `{}` longer than {label_max} bytes",
                    partition.label
                )));
            }
            if partition.size_mib == 0 {
                return Err(invalid("size is 0 MiB".to_owned()));
            }
        }
        Ok(())
    }

    /// Partition extents and the disk size: the first partition at 1 MiB, each next one on
    /// the next 1 MiB boundary, and 1 MiB after the last for the backup GPT.
    fn layout(&self) -> (Vec<Extent>, u64) {
        let sector = self.sector_size;
        let alignment_sectors = ALIGNMENT_BYTES / sector;
        let mut next = alignment_sectors;
        let extents: Vec<Extent> = self
            .partitions
            .iter()
            .map(|partition| {
                let extent = Extent {
                    first_lba: next,
                    sectors: partition.size_mib * MIB / sector,
                };
                next = (next + extent.sectors).next_multiple_of(alignment_sectors);
                extent
            })
            .collect();
        debug_assert!(alignment_sectors > gpt::backup_sectors(sector));
        let total = next + alignment_sectors;
        if self.power_of_two_size {
            (extents, (total * sector).next_power_of_two() / sector)
        } else {
            (extents, total)
        }
    }
}

/// Copies `source` into `target` at `offset`, seeking over all-zero chunks: the target was
/// extended with `set_len`, so they already read as zeros and stay holes.
fn copy_sparse(source: &mut File, target: &mut File, offset: u64) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_CHUNK_BYTES];
    let mut position = offset;
    loop {
        let read = read_full(source, &mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        let chunk = &buffer[..read];
        if chunk.iter().any(|&b| b != 0) {
            write_at(target, position, chunk)?;
        }
        position += read as u64;
    }
}

/// Reads until `buffer` is full or the end of the file.
fn read_full(source: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn write_at(file: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(size_mib: u64) -> Partition {
        Partition {
            name: "p".to_owned(),
            part_guid: Guid::NIL,
            filesystem: Filesystem::Ext4 { uuid: Guid::NIL },
            label: "l".to_owned(),
            size_mib,
            contents: PathBuf::new(),
            keep_owners: false,
        }
    }

    #[test]
    fn layout_aligns_partitions_and_leaves_room_for_the_backup() {
        let disk = GptDisk {
            disk_guid: Guid::NIL,
            partitions: vec![partition(3), partition(5)],
            timestamp: 0,
            power_of_two_size: false,
            sector_size: SECTOR_SIZE,
        };
        let (extents, total) = disk.layout();
        assert_eq!(
            extents,
            [
                Extent {
                    first_lba: 2048,
                    sectors: 3 * 2048
                },
                Extent {
                    first_lba: 4 * 2048,
                    sectors: 5 * 2048
                },
            ]
        );
        assert_eq!(total, 10 * 2048);
        let sd = GptDisk {
            power_of_two_size: true,
            ..disk
        };
        assert_eq!(
            sd.layout(),
            (extents, 16 * 2048),
            "10 MiB rounded up to 16 MiB"
        );
    }

    #[test]
    fn rejects_what_the_formats_cannot_hold() {
        let mut long_name = partition(1);
        long_name.name = "x".repeat(37);
        let mut long_label = partition(1);
        long_label.label = "x".repeat(17);
        for bad in [long_name, long_label, partition(0)] {
            let disk = GptDisk {
                disk_guid: Guid::NIL,
                partitions: vec![bad],
                timestamp: 0,
                power_of_two_size: false,
                sector_size: SECTOR_SIZE,
            };
            assert!(matches!(disk.validate(), Err(DiskError::Invalid { .. })));
        }
    }
}
