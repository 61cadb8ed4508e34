//! A deterministic writer (and a small reader, for listings and tests) of the "newc" cpio format
//! the Linux kernel unpacks as an initramfs.
//!
//! The format is described in the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`: each entry is a 110-byte ASCII
//! header (the magic `070701` and 13 fields of 8 hexadecimal digits), the NUL-terminated path,
//! padding to a multiple of 4 bytes, the data, padding to a multiple of 4 bytes. The archive ends
//! with an entry named `TRAILER!!!`.
//!
//! Determinism: entries are written sorted by path component by component (so a directory comes
//! right before its children), every entry gets the same given mtime, uid and gid 0, device
//! major/minor 0, inode numbers 1, 2, 3… in that order, nlink 2 for directories and 1 otherwise.
//! Missing parent directories are added with mode 0755. Nothing is taken from the host's file
//! metadata: a host file contributes its bytes only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The magic of the "new ASCII" format without checksums (buffer-format.rst: `c_magic`).
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The same header, with a checksum in the `check` field (`cpio -H crc`).
const NEWC_CRC_MAGIC: &[u8; 6] = b"070702";
/// Header length: 6 bytes of magic and 13 fields of 8 hex digits (buffer-format.rst).
const NEWC_HEADER_LEN: usize = 6 + 13 * 8;
/// Headers, names and data are each padded to a multiple of 4 bytes (buffer-format.rst).
const NEWC_ALIGN: usize = 4;
/// The name of the entry that ends the archive (buffer-format.rst).
const TRAILER_NAME: &str = "TRAILER!!!";

/// File type bits of `c_mode`, from the kernel's `include/uapi/linux/stat.h`.
pub(crate) const S_IFMT: u32 = 0o170000;
pub(crate) const S_IFDIR: u32 = 0o040000;
pub(crate) const S_IFREG: u32 = 0o100000;
pub(crate) const S_IFLNK: u32 = 0o120000;
pub(crate) const S_IFCHR: u32 = 0o020000;
pub(crate) const S_IFBLK: u32 = 0o060000;
pub(crate) const S_IFIFO: u32 = 0o010000;
pub(crate) const S_IFSOCK: u32 = 0o140000;
/// Permission bits (including setuid, setgid and sticky).
pub(crate) const PERMISSION_BITS: u32 = 0o7777;
/// The mode of directories created implicitly as parents of an added path.
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Symbolic links carry no meaningful permissions; 0777 is what Linux reports.
const SYMLINK_MODE: u32 = 0o777;
/// Chunk size when streaming a host file into the archive.
const COPY_BUFFER_LEN: usize = 64 * 1024;

/// Why an archive cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error(
        "invalid archive path {path:?}: {problem} (use a path like /etc/initoverlayfs.conf, without '.', '..' or empty components)"
    )]
    InvalidPath { path: String, problem: &'static str },
    #[error(
        "archive path {path:?} is added twice (once as {existing}, once as {new}): add each path once"
    )]
    Duplicate {
        path: String,
        existing: &'static str,
        new: &'static str,
    },
    #[error("archive path {path:?} is inside {parent:?}, which is not a directory in the archive")]
    ParentNotDirectory { path: String, parent: String },
    #[error("reading {host} for archive path {path:?}: {error}")]
    ReadHostFile {
        host: PathBuf,
        path: String,
        error: io::Error,
    },
    #[error(
        "{host} (archive path {path:?}) changed size while being archived ({expected} bytes, then {actual}): do not modify inputs during a build"
    )]
    HostFileChanged {
        host: PathBuf,
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{what} of archive path {path:?} is {value}, more than the newc format's 32-bit field holds"
    )]
    FieldOverflow {
        path: String,
        what: &'static str,
        value: u64,
    },
    #[error("writing the cpio archive: {0}")]
    Write(io::Error),
    #[error("not a newc cpio archive at byte {offset}: {problem}")]
    Malformed { offset: usize, problem: String },
}

/// What an entry is, with what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A regular file with its bytes.
    FileBytes(Vec<u8>),
    /// A regular file whose bytes are read from the host when the archive is written.
    FileFromHost(PathBuf),
    Symlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
}

impl EntryKind {
    fn describe(&self) -> &'static str {
        match self {
            EntryKind::Directory => "a directory",
            EntryKind::FileBytes(_) | EntryKind::FileFromHost(_) => "a file",
            EntryKind::Symlink { .. } => "a symlink",
            EntryKind::CharDevice { .. } => "a character device",
        }
    }

    fn type_bits(&self) -> u32 {
        match self {
            EntryKind::Directory => S_IFDIR,
            EntryKind::FileBytes(_) | EntryKind::FileFromHost(_) => S_IFREG,
            EntryKind::Symlink { .. } => S_IFLNK,
            EntryKind::CharDevice { .. } => S_IFCHR,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Permission bits only.
    permissions: u32,
    kind: EntryKind,
    /// Added only as the parent of another path; an explicit `add_dir` may still set its mode.
    implicit: bool,
}

/// An archive being assembled. Paths are given absolute (`/etc/x`) or relative (`etc/x`); both
/// name the same entry, written without the leading `/` as the kernel's `gen_init_cpio` does.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Keyed by the path's components, so iteration order is parents before children.
    entries: BTreeMap<Vec<String>, Entry>,
}

pub(crate) fn split_path(path: &str) -> Result<Vec<String>, CpioError> {
    let invalid = |problem| CpioError::InvalidPath {
        path: path.to_owned(),
        problem,
    };
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Err(invalid("it names the archive root"));
    }
    relative
        .split('/')
        .map(|component| match component {
            "" => Err(invalid("it has an empty component")),
            "." | ".." => Err(invalid("it has a '.' or '..' component")),
            c => Ok(c.to_owned()),
        })
        .collect()
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Number of entries, the trailer not counted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, permissions: u32, kind: EntryKind) -> Result<(), CpioError> {
        let components = split_path(path)?;
        for depth in 1..components.len() {
            let parent = &components[..depth];
            match self.entries.get(parent) {
                Some(entry) if entry.kind == EntryKind::Directory => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDirectory {
                        path: path.to_owned(),
                        parent: parent.join("/"),
                    });
                }
                None => {
                    self.entries.insert(
                        parent.to_vec(),
                        Entry {
                            permissions: IMPLICIT_DIR_MODE,
                            kind: EntryKind::Directory,
                            implicit: true,
                        },
                    );
                }
            }
        }
        let new = Entry {
            permissions: permissions & PERMISSION_BITS,
            kind,
            implicit: false,
        };
        match self.entries.get(&components) {
            Some(existing) if existing.implicit && new.kind == EntryKind::Directory => {}
            Some(existing) => {
                return Err(CpioError::Duplicate {
                    path: path.to_owned(),
                    existing: existing.kind.describe(),
                    new: new.kind.describe(),
                });
            }
            None => {}
        }
        self.entries.insert(components, new);
        Ok(())
    }

    /// Removes the entry at `path` (a directory only when nothing lies under it); returns
    /// what it was, if anything.
    pub fn remove(&mut self, path: &str) -> Result<Option<EntryKind>, CpioError> {
        let components = split_path(path)?;
        let has_children = self
            .entries
            .keys()
            .any(|key| key.len() > components.len() && key.starts_with(&components));
        if has_children {
            return Err(CpioError::InvalidPath {
                path: path.to_owned(),
                problem: "it is a directory with entries under it",
            });
        }
        Ok(self.entries.remove(&components).map(|entry| entry.kind))
    }

    /// Adds a directory (and its missing parents).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        self.insert(path, mode, EntryKind::Directory)
    }

    /// Adds a regular file with the given bytes.
    pub fn add_file(&mut self, path: &str, mode: u32, bytes: Vec<u8>) -> Result<(), CpioError> {
        self.insert(path, mode, EntryKind::FileBytes(bytes))
    }

    /// Adds a regular file whose bytes are read from `host` when the archive is written.
    pub fn add_file_from_host(
        &mut self,
        path: &str,
        mode: u32,
        host: &Path,
    ) -> Result<(), CpioError> {
        self.insert(path, mode, EntryKind::FileFromHost(host.to_owned()))
    }

    /// Adds a symbolic link pointing at `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.insert(
            path,
            SYMLINK_MODE,
            EntryKind::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Adds a character device node (no root needed: it is only a header).
    pub fn add_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.insert(path, mode, EntryKind::CharDevice { major, minor })
    }

    /// Writes the archive; returns the number of bytes written.
    pub fn write_to(&self, out: &mut dyn Write, mtime: u64) -> Result<u64, CpioError> {
        let mut writer = CountingWriter { out, written: 0 };
        for (inode, (components, entry)) in (1u64..).zip(&self.entries) {
            let name = components.join("/");
            // Errors show the path as the booted system sees it.
            let shown = format!("/{name}");
            let overflow = |what, value| CpioError::FieldOverflow {
                path: shown.clone(),
                what,
                value,
            };
            let field = |what, value: u64| u32::try_from(value).map_err(|_| overflow(what, value));
            let (size, rdev, nlink) = match &entry.kind {
                EntryKind::Directory => (0, (0, 0), 2),
                EntryKind::FileBytes(bytes) => (bytes.len() as u64, (0, 0), 1),
                EntryKind::FileFromHost(host) => {
                    let len = std::fs::metadata(host)
                        .map_err(|error| CpioError::ReadHostFile {
                            host: host.clone(),
                            path: shown.clone(),
                            error,
                        })?
                        .len();
                    (len, (0, 0), 1)
                }
                EntryKind::Symlink { target } => (target.len() as u64, (0, 0), 1),
                EntryKind::CharDevice { major, minor } => (0, (*major, *minor), 1),
            };
            let header = Header {
                ino: field("inode number", inode)?,
                mode: entry.kind.type_bits() | entry.permissions,
                nlink,
                mtime: field("mtime", mtime)?,
                filesize: field("size", size)?,
                rdevmajor: rdev.0,
                rdevminor: rdev.1,
            };
            header.write(&mut writer, &name)?;
            match &entry.kind {
                EntryKind::Directory | EntryKind::CharDevice { .. } => {}
                EntryKind::FileBytes(bytes) => writer.write_all(bytes).map_err(CpioError::Write)?,
                EntryKind::Symlink { target } => writer
                    .write_all(target.as_bytes())
                    .map_err(CpioError::Write)?,
                EntryKind::FileFromHost(host) => {
                    let read_error = |error| CpioError::ReadHostFile {
                        host: host.clone(),
                        path: shown.clone(),
                        error,
                    };
                    let mut file = File::open(host).map_err(read_error)?;
                    // Copied by hand so read and write errors stay apart; reads go one byte
                    // past the expected size to notice a file that grew.
                    let mut buffer = vec![0u8; COPY_BUFFER_LEN];
                    let mut copied = 0u64;
                    loop {
                        let n = match file.read(&mut buffer) {
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(read_error(e)),
                        };
                        if n == 0 || copied + n as u64 > size {
                            copied += n as u64;
                            break;
                        }
                        writer.write_all(&buffer[..n]).map_err(CpioError::Write)?;
                        copied += n as u64;
                    }
                    if copied != size {
                        return Err(CpioError::HostFileChanged {
                            host: host.clone(),
                            path: shown,
                            expected: size,
                            actual: copied,
                        });
                    }
                }
            }
            writer.pad()?;
        }
        Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        }
        .write(&mut writer, TRAILER_NAME)?;
        writer.out.flush().map_err(CpioError::Write)?;
        Ok(writer.written)
    }

    /// The archive as bytes.
    pub fn to_bytes(&self, mtime: u64) -> Result<Vec<u8>, CpioError> {
        let mut out = Vec::new();
        self.write_to(&mut out, mtime)?;
        Ok(out)
    }
}

/// The header fields that vary; uid, gid, devmajor, devminor and check are always 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

impl Header {
    fn write(&self, writer: &mut CountingWriter<'_>, name: &str) -> Result<(), CpioError> {
        // c_namesize counts the terminating NUL (buffer-format.rst).
        let namesize = name.len() + 1;
        let namesize = u32::try_from(namesize).map_err(|_| CpioError::FieldOverflow {
            path: name.to_owned(),
            what: "name length",
            value: namesize as u64,
        })?;
        let mut text = String::with_capacity(NEWC_HEADER_LEN);
        // Field order of buffer-format.rst: ino, mode, uid, gid, nlink, mtime, filesize,
        // devmajor, devminor, rdevmajor, rdevminor, namesize, check.
        for value in [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.filesize,
            0,
            0,
            self.rdevmajor,
            self.rdevminor,
            namesize,
            0,
        ] {
            // Writing to a String cannot fail.
            let _ = write!(text, "{value:08X}");
        }
        writer.write_all(NEWC_MAGIC).map_err(CpioError::Write)?;
        writer
            .write_all(text.as_bytes())
            .map_err(CpioError::Write)?;
        writer
            .write_all(name.as_bytes())
            .map_err(CpioError::Write)?;
        writer.write_all(&[0]).map_err(CpioError::Write)?;
        writer.pad()
    }
}

struct CountingWriter<'a> {
    out: &'a mut dyn Write,
    written: u64,
}

impl CountingWriter<'_> {
    fn pad(&mut self) -> Result<(), CpioError> {
        let zeros = [0u8; NEWC_ALIGN];
        let rem = (self.written % NEWC_ALIGN as u64) as usize;
        if rem != 0 {
            self.write_all(&zeros[..NEWC_ALIGN - rem])
                .map_err(CpioError::Write)?;
        }
        Ok(())
    }
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The name as stored (normally without a leading `/`).
    pub name: String,
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    /// File contents or symlink target.
    pub data: Vec<u8>,
}

impl ReadEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
    pub fn permissions(&self) -> u32 {
        self.mode & PERMISSION_BITS
    }
}

fn align_up(n: usize) -> usize {
    n.div_ceil(NEWC_ALIGN) * NEWC_ALIGN
}

/// Reads an uncompressed newc archive up to its trailer (anything after it is ignored).
pub fn read_archive(bytes: &[u8]) -> Result<Vec<ReadEntry>, CpioError> {
    read_archive_prefix(bytes).map(|(entries, _)| entries)
}

/// Reads the newc archive at the start of `bytes`; returns its entries and the bytes it took,
/// trailer and padding included (another archive or a compressed stream may follow).
pub fn read_archive_prefix(bytes: &[u8]) -> Result<(Vec<ReadEntry>, usize), CpioError> {
    let mut offset = 0;
    let mut entries = Vec::new();
    let malformed = |offset, problem: String| CpioError::Malformed { offset, problem };
    loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let magic = &rest[..rest.len().min(NEWC_MAGIC.len())];
        // 070702 is newc with a checksum field, which the kernel does not check either.
        if magic != NEWC_MAGIC && magic != NEWC_CRC_MAGIC {
            return Err(malformed(
                offset,
                format!(
                    "magic {:?}, expected 070701 (a compressed initramfs must be decompressed first)",
                    String::from_utf8_lossy(magic)
                ),
            ));
        }
        let header = rest
            .get(..NEWC_HEADER_LEN)
            .ok_or_else(|| malformed(offset, "truncated header".into()))?;
        let mut fields = [0u32; 13];
        for (index, field) in fields.iter_mut().enumerate() {
            let start = NEWC_MAGIC.len() + index * 8;
            let text = std::str::from_utf8(&header[start..start + 8])
                .map_err(|_| malformed(offset + start, "non-ASCII header field".into()))?;
            *field = u32::from_str_radix(text, 16).map_err(|_| {
                malformed(offset + start, format!("header field {text:?} is not hex"))
            })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            _,
            _,
            rdevmajor,
            rdevminor,
            namesize,
            _,
        ] = fields;
        let name_start = offset + NEWC_HEADER_LEN;
        let name_end = name_start + namesize as usize;
        let name_bytes = bytes
            .get(name_start..name_end)
            .ok_or_else(|| malformed(name_start, "truncated name".into()))?;
        let name = String::from_utf8_lossy(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .into_owned();
        let data_start = align_up(name_end);
        let data_end = data_start + filesize as usize;
        if name == TRAILER_NAME {
            return Ok((entries, align_up(data_end).min(bytes.len())));
        }
        let data = bytes
            .get(data_start..data_end)
            .ok_or_else(|| malformed(data_start, format!("truncated data of {name:?}")))?
            .to_vec();
        entries.push(ReadEntry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdevmajor,
            rdevminor,
            data,
        });
        offset = align_up(data_end);
    }
}

/// A sorted, stable listing of an archive, one entry per line:
/// `<type><mode> <uid>:<gid> <size> <sha256 prefix | -> target | major,minor | -> <path>`,
/// where type is `d`, `f`, `l`, `c`, `b`, `p`, `s` or `?`. Made for snapshot tests.
pub fn listing(entries: &[ReadEntry]) -> String {
    /// Hex digits of the sha256 shown per file: enough to notice any change.
    const HASH_PREFIX_LEN: usize = 16;
    // The root itself (`.`, as dracut stores it) is no entry of a tree: left out, so an
    // archive and the image made from it list alike.
    let mut sorted: Vec<&ReadEntry> = entries
        .iter()
        .filter(|e| !matches!(e.name.trim_start_matches('/'), "" | "."))
        .collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for entry in sorted {
        let kind = match entry.mode & S_IFMT {
            S_IFDIR => 'd',
            S_IFREG => 'f',
            S_IFLNK => 'l',
            S_IFCHR => 'c',
            S_IFBLK => 'b',
            S_IFIFO => 'p',
            S_IFSOCK => 's',
            _ => '?',
        };
        let detail = if entry.is_file() {
            let digest = hex::encode(Sha256::digest(&entry.data));
            format!("sha256:{}", &digest[..HASH_PREFIX_LEN])
        } else if entry.is_symlink() {
            format!("-> {}", String::from_utf8_lossy(&entry.data))
        } else if kind == 'c' || kind == 'b' {
            format!("{},{}", entry.rdevmajor, entry.rdevminor)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{kind}{:04o} {}:{} {:>9} {detail:<23} /{}",
            entry.permissions(),
            entry.uid,
            entry.gid,
            entry.data.len(),
            entry.name.trim_start_matches('/'),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut archive = Archive::new();
        archive
            .add_file("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        archive
            .add_char_device("/dev/console", 0o600, 5, 1)
            .unwrap();
        archive.add_dir("/dev", 0o755).unwrap();
        archive.add_symlink("/bin", "usr/bin").unwrap();
        archive
            .add_file("etc/initoverlayfs.conf", 0o644, b"fstype erofs\n".to_vec())
            .unwrap();
        archive.add_dir("/lib/modules/6.12", 0o700).unwrap();
        archive.add_file("/a-b", 0o644, vec![1, 2, 3]).unwrap();
        archive
    }

    #[test]
    fn remove_takes_one_entry_never_a_directory_with_children() {
        let mut archive = Archive::new();
        archive.add_file("/etc/a", 0o644, b"a".to_vec()).unwrap();
        archive.add_dir("/empty", 0o755).unwrap();
        assert!(matches!(
            archive.remove("/etc"),
            Err(CpioError::InvalidPath { .. })
        ));
        assert_eq!(
            archive.remove("etc/a").unwrap(),
            Some(EntryKind::FileBytes(b"a".to_vec()))
        );
        assert_eq!(archive.remove("/etc/a").unwrap(), None);
        assert_eq!(
            archive.remove("/empty").unwrap(),
            Some(EntryKind::Directory)
        );
        // Once empty, /etc goes too, and the path is free for another kind.
        assert_eq!(archive.remove("/etc").unwrap(), Some(EntryKind::Directory));
        archive.add_symlink("/etc", "usr/etc").unwrap();
        assert_eq!(archive.len(), 1);
    }

    #[test]
    fn writes_sorted_parents_first_with_sequential_inodes() {
        let bytes = sample().to_bytes(1_700_000_000).unwrap();
        assert_eq!(bytes.len() % NEWC_ALIGN, 0);
        let entries = read_archive(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a-b",
                "bin",
                "dev",
                "dev/console",
                "etc",
                "etc/initoverlayfs.conf",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.12"
            ]
        );
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry.ino as usize, index + 1);
            assert_eq!((entry.uid, entry.gid), (0, 0));
            assert_eq!(entry.mtime, 1_700_000_000);
        }
        let console = &entries[3];
        assert!(console.is_char_device());
        assert_eq!((console.rdevmajor, console.rdevminor), (5, 1));
        assert_eq!(console.permissions(), 0o600);
        assert_eq!(entries[1].data, b"usr/bin");
        assert_eq!(entries[6].data, b"#!/bin/sh\n");
        assert_eq!(entries[6].mode, 0o100755);
        assert_eq!(entries[9].mode, 0o040700);
        assert_eq!(entries[8].mode, 0o040755, "implicit parent");
    }

    #[test]
    fn output_is_byte_identical_across_runs_and_insertion_orders() {
        let mut reversed = Archive::new();
        reversed.add_file("/a-b", 0o644, vec![1, 2, 3]).unwrap();
        reversed.add_dir("/lib/modules/6.12", 0o700).unwrap();
        reversed
            .add_file("etc/initoverlayfs.conf", 0o644, b"fstype erofs\n".to_vec())
            .unwrap();
        reversed.add_symlink("/bin", "usr/bin").unwrap();
        reversed
            .add_char_device("/dev/console", 0o600, 5, 1)
            .unwrap();
        reversed
            .add_file("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        let first = sample().to_bytes(0).unwrap();
        assert_eq!(first, sample().to_bytes(0).unwrap());
        assert_eq!(first, reversed.to_bytes(0).unwrap());
    }

    #[test]
    fn host_files_are_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("blob");
        std::fs::write(&host, vec![7u8; 5]).unwrap();
        let mut archive = Archive::new();
        archive.add_file_from_host("/blob", 0o600, &host).unwrap();
        let mut out = Vec::new();
        let written = archive.write_to(&mut out, 0).unwrap();
        assert_eq!(written, out.len() as u64);
        let entries = read_archive(&out).unwrap();
        assert_eq!(entries[0].data, vec![7u8; 5]);

        let mut missing = Archive::new();
        missing
            .add_file_from_host("/x", 0o600, &dir.path().join("nope"))
            .unwrap();
        let err = missing.to_bytes(0).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("\"/x\""), "{err}");
    }

    #[test]
    fn system_cpio_agrees_when_installed() {
        if !crate::test_tools::have_tool("cpio", "cargo xtask provision installs it") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, sample().to_bytes(0).unwrap()).unwrap();
        let output = std::process::Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let listed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(listed.lines().count(), 10, "{listed}");
        assert!(listed.lines().any(|l| l == "dev/console"), "{listed}");
    }

    fn check_error(build: impl FnOnce(&mut Archive) -> Result<(), CpioError>, fragment: &str) {
        let mut archive = Archive::new();
        let err = build(&mut archive).expect_err(fragment).to_string();
        assert!(err.contains(fragment), "{err}");
    }

    #[test]
    fn errors_name_the_path() {
        check_error(|a| a.add_dir("/", 0o755), "root");
        check_error(|a| a.add_dir("/a//b", 0o755), "empty component");
        check_error(|a| a.add_dir("/a/../b", 0o755), "'..'");
        check_error(
            |a| {
                a.add_file("/x", 0o644, vec![])?;
                a.add_file("/x", 0o644, vec![])
            },
            "added twice",
        );
        check_error(
            |a| {
                a.add_file("/x", 0o644, vec![])?;
                a.add_file("/x/y", 0o644, vec![])
            },
            "not a directory",
        );
        let err = sample().to_bytes(u64::from(u32::MAX) + 1).unwrap_err();
        assert!(err.to_string().contains("mtime"), "{err}");
        let err = read_archive(b"\x1f\x8b rest").unwrap_err().to_string();
        assert!(err.contains("decompressed"), "{err}");
    }

    #[test]
    fn listing_shows_type_mode_owner_size_and_content() {
        let entries = read_archive(&sample().to_bytes(0).unwrap()).unwrap();
        let text = listing(&entries);
        let line = |path: &str| {
            text.lines()
                .find(|l| l.ends_with(path))
                .unwrap_or_else(|| panic!("{path} in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(line(" /dev/console"), "c0600 0:0 0 5,1 /dev/console");
        assert_eq!(line(" /bin"), "l0777 0:0 7 -> usr/bin /bin");
        assert_eq!(line(" /dev"), "d0755 0:0 0 - /dev");
        assert!(line(" /init").starts_with("f0755 0:0 10 sha256:"), "{text}");
    }
}
