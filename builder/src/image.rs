//! The initoverlayfs image made from an initramfs file: read it (any compression, concatenated
//! archives), refuse what cannot work as a second stage, unpack it safely into a scratch
//! directory beside the output, and build the erofs image from that.

use std::path::{Path, PathBuf};

use crate::erofs::{ErofsError, ErofsOptions, ErofsReport, build_erofs};
use crate::extract::{ExtractError, Extracted, extract};
use crate::initramfs::{self, Flavour, Initramfs, InitramfsError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path}: {error}", path = .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}", path = .path.display())]
    Initramfs {
        path: PathBuf,
        error: InitramfsError,
    },
    #[error(
        "{path} is an initramfs-tools image: its /init hands over with klibc run-init or busybox switch_root, which refuse to leave a root that is neither ramfs nor tmpfs, and the initoverlayfs is an overlay. Build a systemd initramfs with dracut (e.g. `dracut --no-hostonly --kver <kver> initrd.img`) and give that instead; `builder list` still shows this one",
        path = .path.display()
    )]
    InitramfsTools { path: PathBuf },
    #[error("{path}: {error}", path = .path.display())]
    Extract { path: PathBuf, error: ExtractError },
    #[error("scratch directory {path}: {error}", path = .path.display())]
    Scratch {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Erofs(#[from] ErofsError),
}

/// What was built, and from what.
#[derive(Debug)]
pub struct ImageReport {
    pub erofs: ErofsReport,
    pub flavour: Flavour,
    pub extracted: Extracted,
    /// One line per segment of the input: offset, format, size, entries.
    pub segments: Vec<String>,
}

/// Reads an initramfs file whole.
pub fn read_initramfs(path: &Path) -> Result<Initramfs, ImageError> {
    let bytes = std::fs::read(path).map_err(|error| ImageError::Read {
        path: path.to_owned(),
        error,
    })?;
    initramfs::read(&bytes).map_err(|error| ImageError::Initramfs {
        path: path.to_owned(),
        error,
    })
}

/// Unpacks `input` into `dir` (which must not exist yet or be empty).
pub fn unpack(input: &Path, dir: &Path) -> Result<(Initramfs, Extracted), ImageError> {
    let initramfs = read_initramfs(input)?;
    std::fs::create_dir_all(dir).map_err(|error| ImageError::Scratch {
        path: dir.to_owned(),
        error,
    })?;
    let extracted =
        extract(&initramfs.final_entries(), dir).map_err(|error| ImageError::Extract {
            path: input.to_owned(),
            error,
        })?;
    Ok((initramfs, extracted))
}

/// Builds the erofs image `output` from the initramfs file `input`, unpacking it into a
/// scratch directory beside the output (same filesystem, and /tmp may be a small tmpfs).
pub fn image_from_initramfs(
    input: &Path,
    output: &Path,
    options: &ErofsOptions,
) -> Result<ImageReport, ImageError> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    image_from_read_initramfs(&read_initramfs(input)?, input, output, options, parent)
}

/// As [`image_from_initramfs`], from an initramfs already read from `input`, unpacking into a
/// scratch directory under `parent` (removed afterwards), e.g. to spare a small /boot the
/// unpacked content.
pub fn image_from_read_initramfs(
    initramfs: &Initramfs,
    input: &Path,
    output: &Path,
    options: &ErofsOptions,
    parent: &Path,
) -> Result<ImageReport, ImageError> {
    let flavour = initramfs::flavour(initramfs.entries.iter().map(|e| e.name.as_str()));
    if flavour == Flavour::InitramfsTools {
        return Err(ImageError::InitramfsTools {
            path: input.to_owned(),
        });
    }
    let scratch = tempfile::Builder::new()
        .prefix(".initoverlayfs-unpack-")
        .tempdir_in(parent)
        .map_err(|error| ImageError::Scratch {
            path: parent.to_owned(),
            error,
        })?;
    let extracted = extract(&initramfs.final_entries(), scratch.path()).map_err(|error| {
        ImageError::Extract {
            path: input.to_owned(),
            error,
        }
    })?;
    let erofs = build_erofs(scratch.path(), output, options)?;
    Ok(ImageReport {
        erofs,
        flavour,
        extracted,
        segments: describe_segments(initramfs),
    })
}

pub fn describe_segments(initramfs: &Initramfs) -> Vec<String> {
    initramfs
        .segments
        .iter()
        .map(|s| {
            format!(
                "segment at byte {}: {}, {} bytes, {} entries",
                s.offset,
                s.format.name(),
                s.len,
                s.entries
            )
        })
        .collect()
}
