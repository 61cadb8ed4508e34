//! Builds the initoverlayfs image, an EROFS filesystem, from a directory with erofs-utils'
//! `mkfs.erofs`, reproducibly: the same directory content gives the same bytes, whatever the
//! files' timestamps, owners or the time of the build.
//!
//! How: `-T <mtime>` gives every inode and the superblock one fixed timestamp; `--all-root`
//! makes every file owned by 0:0; `-U <uuid>` sets a filesystem UUID derived from the content
//! ([`content_uuid`]) instead of a random one. `SOURCE_DATE_EPOCH` is removed from mkfs.erofs's
//! environment on purpose: when it is set, erofs-utils (checked with 1.5, Debian 12) only
//! *clamps* timestamps newer than it and keeps older ones, even with `-T`, so two copies of the
//! same tree with different old mtimes gave different images. Checked with erofs-utils 1.5,
//! whose layout does not depend on the order in which the source directory lists its entries.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The program that writes EROFS images, from erofs-utils.
const MKFS_EROFS: &str = "mkfs.erofs";
/// The environment variable of the reproducible-builds specification; see the module docs for
/// why mkfs.erofs must not see it.
const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Why an image cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error(
        "{MKFS_EROFS} not found in PATH: install the erofs-utils package (apt-get install erofs-utils)"
    )]
    MkfsMissing,
    #[error("running {MKFS_EROFS} for {source_dir}: {error}", source_dir = .source_dir.display())]
    Spawn {
        source_dir: PathBuf,
        error: io::Error,
    },
    #[error(
        "{MKFS_EROFS} failed ({status}) building {output} from {source_dir}:\n{stderr}",
        output = .output.display(),
        source_dir = .source_dir.display()
    )]
    MkfsFailed {
        source_dir: PathBuf,
        output: PathBuf,
        status: String,
        stderr: String,
    },
    #[error(
        "invalid erofs compression {value:?}: expected a compressor and optional level such as lz4hc,11 or lz4 (or none)"
    )]
    InvalidCompression { value: String },
    #[error("reading {path} of the image source: {error}", path = .path.display())]
    ReadSource { path: PathBuf, error: io::Error },
    #[error("{path} is not a directory: the erofs image is built from a directory", path = .path.display())]
    NotADirectory { path: PathBuf },
    #[error("removing the old image {path}: {error}", path = .path.display())]
    RemoveOld { path: PathBuf, error: io::Error },
    #[error(
        "{MKFS_EROFS} {version} cannot write {compression} images (it has {available}): install an erofs-utils that has it, or choose one of those"
    )]
    CompressorMissing {
        version: String,
        compression: String,
        available: String,
    },
}

/// What the installed `mkfs.erofs` is and can do, read from what it prints (erofs-utils 1.5
/// has no `--version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsErofs {
    /// `1.5`, `1.8.2`, or `unknown`.
    pub version: String,
    /// The compressors it writes: `lz4`, `lz4hc`, and on newer builds `lzma`, `deflate`,
    /// `libdeflate`, `zstd`.
    pub compressors: Vec<String>,
}

/// Every compressor name erofs-utils has used.
const KNOWN_COMPRESSORS: [&str; 6] = ["lz4", "lz4hc", "lzma", "deflate", "libdeflate", "zstd"];

impl MkfsErofs {
    /// Runs `mkfs.erofs -V` and `mkfs.erofs --help`. Releases since 1.6 print their version
    /// for `-V`; 1.5 has no such option but prints the same banner before it complains.
    pub fn detect() -> Result<MkfsErofs, ErofsError> {
        let mut text = String::new();
        for arg in ["-V", "--help"] {
            let output = Command::new(MKFS_EROFS)
                .arg(arg)
                .output()
                .map_err(|error| match error.kind() {
                    io::ErrorKind::NotFound => ErofsError::MkfsMissing,
                    _ => ErofsError::Spawn {
                        source_dir: PathBuf::from(arg),
                        error,
                    },
                })?;
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.push('\n');
        }
        Ok(MkfsErofs::from_help(&text))
    }

    /// Reads the version from the line naming the program with a version (`mkfs.erofs 1.5`,
    /// `mkfs.erofs (erofs-utils) 1.8.2`) and the compressors from what follows "Available
    /// compressors are:" (one line of commas in 1.5, one per line with levels later).
    pub fn from_help(help: &str) -> MkfsErofs {
        let version = help
            .lines()
            .filter(|line| line.trim_start().starts_with(MKFS_EROFS))
            .filter_map(|line| {
                line.split_whitespace()
                    .last()
                    .filter(|word| word.starts_with(|c: char| c.is_ascii_digit()))
            })
            .next()
            .unwrap_or("unknown")
            .to_owned();
        let mut compressors = Vec::new();
        if let Some((_, listed)) = help.split_once("Available compressors are:") {
            for line in listed.lines() {
                for word in line.split([',', ' ', '\t']) {
                    if KNOWN_COMPRESSORS.contains(&word) && !compressors.iter().any(|c| c == word) {
                        compressors.push(word.to_owned());
                    }
                }
            }
        }
        MkfsErofs {
            version,
            compressors,
        }
    }

    /// Refuses a compression this mkfs.erofs cannot write.
    pub fn check(&self, compression: Option<&ErofsCompression>) -> Result<(), ErofsError> {
        match compression {
            Some(c) if !self.compressors.iter().any(|have| have == c.compressor()) => {
                Err(ErofsError::CompressorMissing {
                    version: self.version.clone(),
                    compression: c.compressor().to_owned(),
                    available: if self.compressors.is_empty() {
                        "no compressor".to_owned()
                    } else {
                        self.compressors.join(", ")
                    },
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for MkfsErofs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MKFS_EROFS} {} (compressors: {})",
            self.version,
            self.compressors.join(", ")
        )
    }
}

/// A compressor for `mkfs.erofs -z`, such as `lz4hc,11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsCompression(String);

impl ErofsCompression {
    /// Parses `lz4hc,11`, `lz4`, or upstream's config form `-zlz4hc,11`. `none` or an empty
    /// value means no compression (`Ok(None)`).
    pub fn parse(value: &str) -> Result<Option<ErofsCompression>, ErofsError> {
        let text = value.trim();
        let text = text.strip_prefix("-z").unwrap_or(text);
        if text.is_empty() || text == "none" {
            return Ok(None);
        }
        let (compressor, level) = match text.split_once(',') {
            Some((c, l)) => (c, Some(l)),
            None => (text, None),
        };
        let compressor_ok = !compressor.is_empty()
            && compressor
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let level_ok = level.is_none_or(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
        if compressor_ok && level_ok {
            Ok(Some(ErofsCompression(text.to_owned())))
        } else {
            Err(ErofsError::InvalidCompression {
                value: value.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The compressor without its level: `lz4hc` of `lz4hc,11`.
    pub fn compressor(&self) -> &str {
        self.0.split(',').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ErofsCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to build an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsOptions {
    /// The timestamp of every inode and of the superblock (seconds since the epoch).
    pub mtime: u64,
    /// `None`: uncompressed.
    pub compression: Option<ErofsCompression>,
    /// Keep the source's owners instead of making every file root's (`--all-root`), for
    /// content that needs other users (a daemon's state directory, say).
    pub keep_owners: bool,
    /// The largest physical cluster of compressed data in bytes (`mkfs.erofs -C`): bigger
    /// clusters compress better but make every read of a compressed block fetch and
    /// decompress more. None: mkfs.erofs's default (one block). Ignored without compression.
    pub pcluster_bytes: Option<u32>,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsReport {
    pub output: PathBuf,
    /// The filesystem UUID written into the image.
    pub uuid: String,
    pub bytes: u64,
    /// The mkfs.erofs that wrote it.
    pub mkfs: MkfsErofs,
}

/// Builds `output` from the directory `source` (an existing `output` is replaced).
pub fn build_erofs(
    source: &Path,
    output: &Path,
    options: &ErofsOptions,
) -> Result<ErofsReport, ErofsError> {
    let mkfs = MkfsErofs::detect()?;
    mkfs.check(options.compression.as_ref())?;
    let uuid = content_uuid(source, options)?;
    match fs::remove_file(output) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(ErofsError::RemoveOld {
                path: output.to_owned(),
                error,
            });
        }
    }
    let mut command = Command::new(MKFS_EROFS);
    command
        .env_remove(SOURCE_DATE_EPOCH)
        .arg(format!("-T{}", options.mtime))
        .arg(format!("-U{uuid}"));
    if !options.keep_owners {
        command.arg("--all-root");
    }
    if let Some(compression) = &options.compression {
        command.arg(format!("-z{compression}"));
        if let Some(bytes) = options.pcluster_bytes {
            command.arg(format!("-C{bytes}"));
        }
    }
    command.arg(output).arg(source);
    let result = command.output().map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            ErofsError::MkfsMissing
        } else {
            ErofsError::Spawn {
                source_dir: source.to_owned(),
                error,
            }
        }
    })?;
    if !result.status.success() {
        return Err(ErofsError::MkfsFailed {
            source_dir: source.to_owned(),
            output: output.to_owned(),
            status: result.status.to_string(),
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_owned(),
        });
    }
    let bytes = fs::metadata(output)
        .map_err(|error| ErofsError::ReadSource {
            path: output.to_owned(),
            error,
        })?
        .len();
    Ok(ErofsReport {
        output: output.to_owned(),
        uuid,
        bytes,
        mkfs,
    })
}

/// The filesystem UUID of an image of `source` built with `options`.
///
/// SHA-256 over the build options (mtime, compression) and a walk of the tree sorted by path
/// bytes, where each entry contributes its relative path, its type, its permission bits, and its
/// content (file bytes, symlink target, or device number); owners only with `keep_owners`.
/// Timestamps are left out because the image does not keep them. The first 16 bytes of the digest are formatted as an
/// RFC 4122 version-4 UUID (version and variant bits set, lower-case), so tools that check
/// those bits accept it.
pub fn content_uuid(source: &Path, options: &ErofsOptions) -> Result<String, ErofsError> {
    let metadata = fs::symlink_metadata(source).map_err(|error| ErofsError::ReadSource {
        path: source.to_owned(),
        error,
    })?;
    if !metadata.is_dir() {
        return Err(ErofsError::NotADirectory {
            path: source.to_owned(),
        });
    }
    let mut hasher = Sha256::new();
    hasher.update(b"initoverlayfs-erofs-uuid-v1\0");
    hasher.update(options.mtime.to_le_bytes());
    if let Some(compression) = &options.compression {
        hasher.update(compression.as_str().as_bytes());
    }
    hasher.update(b"\0");
    // Only when set and used, so the UUIDs of images built without it stay as they were.
    if let (Some(bytes), Some(_)) = (options.pcluster_bytes, &options.compression) {
        hasher.update(format!("pcluster={bytes}\0").as_bytes());
    }
    if options.keep_owners {
        hasher.update(b"owners\0");
    }
    hash_tree(source, Path::new(""), options.keep_owners, &mut hasher)?;
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // RFC 4122 section 4.4: version 4 in the high nibble of byte 6, variant 10 in byte 8.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn hash_tree(
    root: &Path,
    relative: &Path,
    owners: bool,
    hasher: &mut Sha256,
) -> Result<(), ErofsError> {
    let dir = root.join(relative);
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |error| ErofsError::ReadSource { path, error }
    };
    let mut names = fs::read_dir(&dir)
        .map_err(read_error(&dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error(&dir))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let child = relative.join(&name);
        let path = root.join(&child);
        let metadata = fs::symlink_metadata(&path).map_err(read_error(&path))?;
        let file_type = metadata.file_type();
        hasher.update(child.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update((metadata.mode() & 0o7777).to_le_bytes());
        if owners {
            hasher.update(metadata.uid().to_le_bytes());
            hasher.update(metadata.gid().to_le_bytes());
        }
        if file_type.is_dir() {
            hasher.update(b"d");
            hash_tree(root, &child, owners, hasher)?;
            // Marks the end of the directory, so moving a file out of it changes the hash.
            hasher.update(b"\0end\0");
        } else if file_type.is_file() {
            hasher.update(b"f");
            hasher.update(metadata.len().to_le_bytes());
            let mut file = fs::File::open(&path).map_err(read_error(&path))?;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(&path)(e)),
                };
                hasher.update(&buffer[..n]);
            }
        } else if file_type.is_symlink() {
            hasher.update(b"l");
            let target = fs::read_link(&path).map_err(read_error(&path))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else {
            let kind = if file_type.is_char_device() {
                b"c"
            } else if file_type.is_block_device() {
                b"b"
            } else if file_type.is_fifo() {
                b"p"
            } else {
                b"s"
            };
            hasher.update(kind);
            hasher.update(metadata.rdev().to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn have_mkfs() -> bool {
        crate::test_tools::have_tool(MKFS_EROFS, "cargo xtask provision installs erofs-utils")
    }

    /// Writes the same content in a different creation order when `reverse`.
    fn write_tree(dir: &Path, reverse: bool) {
        let mut steps: Vec<fn(&Path)> = vec![
            |d| fs::create_dir_all(d.join("usr/lib")).unwrap(),
            |d| fs::write(d.join("init"), b"#!/bin/sh\nexec /sbin/init\n").unwrap(),
            |d| fs::write(d.join("zz"), vec![0xa5u8; 10_000]).unwrap(),
            |d| symlink("usr/lib", d.join("lib")).unwrap(),
            |d| fs::create_dir_all(d.join("etc")).unwrap(),
            |d| fs::write(d.join("aa"), b"first").unwrap(),
        ];
        if reverse {
            fs::create_dir_all(dir.join("usr/lib")).unwrap();
            steps.reverse();
        }
        for step in steps {
            step(dir);
        }
        fs::write(dir.join("usr/lib/libx.so"), b"\x7fELF...").unwrap();
    }

    fn set_times(dir: &Path, seconds: u64) {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        for name in ["init", "zz", "aa", "usr/lib/libx.so", "usr", "etc"] {
            let file = fs::File::options().read(true).open(dir.join(name)).unwrap();
            file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))
                .unwrap();
        }
    }

    #[test]
    fn images_are_byte_identical_whatever_the_timestamps_and_order() {
        if !have_mkfs() {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        write_tree(&a, false);
        write_tree(&b, true);
        set_times(&a, 1_000_000);
        set_times(&b, 2_000_000_000);
        let options = ErofsOptions {
            mtime: 1_700_000_000,
            compression: None,
            keep_owners: false,
            pcluster_bytes: None,
        };
        let image_a = build_erofs(&a, &work.path().join("a.img"), &options).unwrap();
        let image_b = build_erofs(&b, &work.path().join("b.img"), &options).unwrap();
        assert_eq!(image_a.uuid, image_b.uuid);
        let bytes_a = fs::read(&image_a.output).unwrap();
        // Compared by digest: a failing assert_eq! on images prints megabytes.
        let digest = |path: &Path| hex::encode(Sha256::digest(fs::read(path).unwrap()));
        assert_eq!(digest(&image_a.output), digest(&image_b.output));
        assert_eq!(bytes_a.len() as u64, image_a.bytes);
        // Rebuilding over an existing output gives the same bytes.
        let again = build_erofs(&a, &image_a.output, &options).unwrap();
        assert_eq!(digest(&again.output), hex::encode(Sha256::digest(&bytes_a)));

        let compressed = ErofsOptions {
            compression: ErofsCompression::parse("lz4hc,9").unwrap(),
            ..options
        };
        let c1 = build_erofs(&a, &work.path().join("c1.img"), &compressed).unwrap();
        let c2 = build_erofs(&b, &work.path().join("c2.img"), &compressed).unwrap();
        assert_ne!(c1.uuid, image_a.uuid);
        assert_eq!(digest(&c1.output), digest(&c2.output));

        // A bigger physical cluster: another image and UUID, as reproducible; without
        // compression the option means nothing and changes nothing.
        let clustered = ErofsOptions {
            pcluster_bytes: Some(65536),
            ..compressed.clone()
        };
        let p1 = build_erofs(&a, &work.path().join("p1.img"), &clustered).unwrap();
        let p2 = build_erofs(&b, &work.path().join("p2.img"), &clustered).unwrap();
        assert_ne!(p1.uuid, c1.uuid);
        assert_eq!(digest(&p1.output), digest(&p2.output));
        let plain = ErofsOptions {
            pcluster_bytes: Some(65536),
            ..options.clone()
        };
        assert_eq!(content_uuid(&a, &plain).unwrap(), image_a.uuid);
    }

    #[test]
    fn uuid_follows_content_only() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("t");
        fs::create_dir(&dir).unwrap();
        write_tree(&dir, false);
        let options = ErofsOptions {
            mtime: 0,
            compression: None,
            keep_owners: false,
            pcluster_bytes: None,
        };
        let first = content_uuid(&dir, &options).unwrap();
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "4", "{first}");
        assert!("89ab".contains(&first[19..20]), "{first}");
        set_times(&dir, 123);
        assert_eq!(content_uuid(&dir, &options).unwrap(), first);
        fs::write(dir.join("aa"), b"changed").unwrap();
        assert_ne!(content_uuid(&dir, &options).unwrap(), first);
        let err = content_uuid(&dir.join("aa"), &options).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn mkfs_help_of_each_release() {
        // erofs-utils 1.5 (Debian 12): a banner, compressors on one line.
        let old = "mkfs.erofs 1.5\nmkfs.erofs: invalid option -- 'V'\nusage: [options] FILE DIRECTORY\n -zX[,Y] X=compressor\n\nAvailable compressors are: lz4hc, lz4\n";
        let parsed = MkfsErofs::from_help(old);
        assert_eq!(parsed.version, "1.5");
        assert_eq!(parsed.compressors, ["lz4hc", "lz4"]);
        // Later releases: one compressor per line, with levels.
        let new = "mkfs.erofs (erofs-utils) 1.8.2\nusage: [options] FILE SOURCE(s)\n\nAvailable compressors are:\n  lz4\n  lz4hc [<0..12>, default=9]\n  lzma [<0..109>, default=6]\n  deflate [<0..9>, default=1]\n  zstd [<0..22>, default=3]\n";
        let parsed = MkfsErofs::from_help(new);
        assert_eq!(parsed.version, "1.8.2");
        assert_eq!(
            parsed.compressors,
            ["lz4", "lz4hc", "lzma", "deflate", "zstd"]
        );
        let zstd = ErofsCompression::parse("zstd,3").unwrap();
        assert!(parsed.check(zstd.as_ref()).is_ok());
        let error = MkfsErofs::from_help(old)
            .check(zstd.as_ref())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("mkfs.erofs 1.5 cannot write zstd images (it has lz4hc, lz4)"),
            "{error}"
        );
        assert_eq!(MkfsErofs::from_help("").version, "unknown");
    }

    /// The installed mkfs.erofs is read as its help text says.
    #[test]
    fn installed_mkfs_is_detected() {
        if !have_mkfs() {
            return;
        }
        let mkfs = MkfsErofs::detect().unwrap();
        assert_ne!(mkfs.version, "unknown", "{mkfs:?}");
        assert!(mkfs.compressors.iter().any(|c| c == "lz4"), "{mkfs:?}");
    }

    #[test]
    fn compression_forms() {
        let check = |value: &str, expected: Option<&str>| {
            let parsed = ErofsCompression::parse(value).unwrap();
            assert_eq!(parsed.as_ref().map(|c| c.as_str()), expected, "{value}");
        };
        check("lz4hc,11", Some("lz4hc,11"));
        check("-zlz4hc,11", Some("lz4hc,11"));
        check("lz4", Some("lz4"));
        check("none", None);
        check("", None);
        for bad in ["lz4hc,", "lz4 --x", "lz4,a", ",1", "LZ4"] {
            let err = ErofsCompression::parse(bad).unwrap_err().to_string();
            assert!(err.contains("lz4hc,11"), "{err}");
        }
    }
}
