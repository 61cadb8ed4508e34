//! The mini initramfs whose PID 1 is systemd (upstream's service flavour): the storage-init
//! mini initramfs with storage-init moved to `/usr/lib/initoverlayfs/storage-init`, where
//! `initoverlayfs-prepare.service` runs it with `--prepare-only`, and `/init` pointing at
//! systemd. systemd comes from a source that has it (a full systemd initramfs such as dracut's,
//! or a root tree): the programs the units run and their shared libraries, found by reading
//! each object's `PT_INTERP` and `DT_NEEDED` ([`crate::elf`]), and nothing else of the source.
//! The units are storage-init's own (`storage-init/systemd/`), with `initoverlayfs.target` as
//! the default target; `/etc/initrd-release` makes systemd run in initrd mode. Byte-identical
//! on every rebuild from the same inputs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, CpioError, ReadEntry};
use crate::elf;
use crate::mini_initramfs::{INIT_PATH, MiniInitramfs, MiniInitramfsError, MiniInitramfsReport};

/// Which program the mini initramfs runs as PID 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pid1 {
    /// storage-init is `/init`: no udev, no systemd in the first stage.
    #[default]
    StorageInit,
    /// systemd is `/init`, storage-init its `--prepare-only` service; needs --systemd-from.
    Systemd,
}

/// Where the units run storage-init (their `ExecStart=`).
pub const STORAGE_INIT_SERVICE_PATH: &str = "/usr/lib/initoverlayfs/storage-init";
/// systemd itself, where `/init` points.
pub const SYSTEMD_PATH: &str = "/usr/lib/systemd/systemd";
/// Programs taken from the source with their libraries: systemd, and the systemctl that
/// `initoverlayfs-switch-root.service` runs.
const PROGRAMS: [&str; 2] = [SYSTEMD_PATH, "/usr/bin/systemctl"];
/// Taken too where the source has them: systemd 255 and later start every service through
/// `systemd-executor`.
const OPTIONAL_PROGRAMS: [&str; 1] = ["/usr/lib/systemd/systemd-executor"];
/// Where systemd reads the distribution's units.
const UNIT_DIR: &str = "/usr/lib/systemd/system";
/// storage-init's units, as the repository ships them (the packages ship them too, for a
/// distribution's own initramfs generator).
pub const UNITS: [(&str, &str); 3] = [
    (
        "initoverlayfs-prepare.service",
        include_str!("../../storage-init/systemd/initoverlayfs-prepare.service"),
    ),
    (
        "initoverlayfs-switch-root.service",
        include_str!("../../storage-init/systemd/initoverlayfs-switch-root.service"),
    ),
    (
        "initoverlayfs.target",
        include_str!("../../storage-init/systemd/initoverlayfs.target"),
    ),
];
/// The target every boot of this initramfs reaches.
const BOOT_TARGET: &str = "initoverlayfs.target";
/// Names that point at [`BOOT_TARGET`]: systemd starts `initrd.target` in initrd mode, and
/// `default.target` where that is missing or it is told to.
const BOOT_TARGET_ALIASES: [&str; 2] = ["default.target", "initrd.target"];
/// systemd runs in initrd mode only where this exists (`in_initrd()`); storage-init's
/// `--prepare-only` checks it too. os-release points at it, as dracut's does, so the console's
/// "Welcome to" line names this initramfs.
const INITRD_RELEASE: (&str, &str) = (
    "/etc/initrd-release",
    "NAME=\"initoverlayfs\"\nID=initoverlayfs\nPRETTY_NAME=\"initoverlayfs mini initramfs\"\nVARIANT=\"systemd\"\nVARIANT_ID=systemd\n",
);
const OS_RELEASE: &str = "/etc/os-release";
/// Symbolic links followed while resolving one path, as the kernel's limit (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

const EXECUTABLE_MODE: u32 = 0o755;
const DATA_FILE_MODE: u32 = 0o644;

/// Why the systemd mini initramfs cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SystemdInitramfsError {
    #[error(transparent)]
    MiniInitramfs(#[from] MiniInitramfsError),
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error(transparent)]
    Write(#[from] crate::replace::ReplaceError),
    #[error("reading the systemd source {path}: {error}", path = .path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("reading the systemd source {path}: {error}", path = .path.display())]
    Initramfs {
        path: PathBuf,
        error: crate::initramfs::InitramfsError,
    },
    #[error(
        "the systemd source {source_path} has no {path}{why}: give a full systemd initramfs (e.g. dracut's) or a root tree with systemd installed",
        source_path = .source_path.display()
    )]
    Missing {
        source_path: PathBuf,
        path: String,
        why: String,
    },
    #[error("{path} in the systemd source: {error}")]
    Elf { path: String, error: elf::ElfError },
    #[error("{path} in the systemd source: more than {MAX_SYMLINKS} symbolic links")]
    SymlinkLoop { path: String },
    #[error("compressing the archive with {compression}: {error}")]
    Compress {
        compression: crate::compress::InitramfsCompression,
        error: io::Error,
    },
}

/// Everything the systemd mini initramfs is made from.
#[derive(Debug, Clone)]
pub struct SystemdInitramfs {
    /// The storage-init flavour's inputs: modules, config, compression, mtime; its storage-init
    /// goes to [`STORAGE_INIT_SERVICE_PATH`].
    pub base: MiniInitramfs,
    /// A systemd initramfs (any compression) or a root directory.
    pub systemd_from: PathBuf,
}

/// What one path of the source is.
enum Node {
    Directory,
    File { mode: u32, bytes: Vec<u8> },
    Symlink(String),
}

/// The source, read through one interface whether it is an archive or a tree.
enum Source {
    /// The final entries of an initramfs, by path without the leading `/`.
    Archive(HashMap<String, ReadEntry>),
    Tree(PathBuf),
}

impl Source {
    fn open(path: &Path) -> Result<Source, SystemdInitramfsError> {
        let read_error = |error| SystemdInitramfsError::Read {
            path: path.to_owned(),
            error,
        };
        if fs::metadata(path).map_err(read_error)?.is_dir() {
            return Ok(Source::Tree(path.to_owned()));
        }
        let bytes = fs::read(path).map_err(read_error)?;
        let initramfs =
            crate::initramfs::read(&bytes).map_err(|error| SystemdInitramfsError::Initramfs {
                path: path.to_owned(),
                error,
            })?;
        let entries = initramfs
            .final_entries()
            .into_iter()
            .map(|entry| (entry.name.trim_start_matches('/').to_owned(), entry.clone()))
            .collect();
        Ok(Source::Archive(entries))
    }

    /// The node at `path` (absolute, without `.` or `..`), not following a final symlink.
    fn node(&self, path: &str) -> Result<Option<Node>, SystemdInitramfsError> {
        let relative = path.trim_start_matches('/');
        match self {
            Source::Archive(entries) => Ok(entries.get(relative).map(|entry| {
                if entry.is_dir() {
                    Node::Directory
                } else if entry.is_symlink() {
                    Node::Symlink(String::from_utf8_lossy(&entry.data).into_owned())
                } else {
                    Node::File {
                        mode: entry.permissions(),
                        bytes: entry.data.clone(),
                    }
                }
            })),
            Source::Tree(root) => {
                let host = root.join(relative);
                let read_error = |error| SystemdInitramfsError::Read {
                    path: host.clone(),
                    error,
                };
                let metadata = match fs::symlink_metadata(&host) {
                    Ok(metadata) => metadata,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    // A path through a regular file: not there, as in an archive.
                    Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                        return Ok(None);
                    }
                    Err(e) => return Err(read_error(e)),
                };
                let file_type = metadata.file_type();
                Ok(Some(if file_type.is_dir() {
                    Node::Directory
                } else if file_type.is_symlink() {
                    let target = fs::read_link(&host).map_err(read_error)?;
                    Node::Symlink(target.to_string_lossy().into_owned())
                } else {
                    Node::File {
                        mode: metadata.permissions().mode() & 0o7777,
                        bytes: fs::read(&host).map_err(read_error)?,
                    }
                }))
            }
        }
    }

    /// Follows every symbolic link on `path` within the source, as the kernel would in a root
    /// of that content: the canonical path, and the links passed on the way (path, target).
    /// `None` when nothing is there.
    fn resolve(&self, path: &str) -> Result<Option<Resolved>, SystemdInitramfsError> {
        let mut pending: VecDeque<String> = components(path).collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = Vec::new();
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(component),
            }
            let here = format!("/{}", done.join("/"));
            match self.node(&here)? {
                None => return Ok(None),
                Some(Node::Symlink(target)) => {
                    if links.len() == MAX_SYMLINKS {
                        return Err(SystemdInitramfsError::SymlinkLoop {
                            path: path.to_owned(),
                        });
                    }
                    done.pop();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for (i, part) in components(&target).enumerate() {
                        pending.insert(i, part);
                    }
                    links.push((here, target));
                }
                Some(Node::Directory | Node::File { .. }) => {}
            }
        }
        Ok(Some(Resolved {
            canonical: format!("/{}", done.join("/")),
            links,
        }))
    }
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_owned)
}

struct Resolved {
    canonical: String,
    links: Vec<(String, String)>,
}

/// What is taken from the source: files by canonical path, and the links that lead to them.
#[derive(Default)]
struct Closure {
    files: BTreeMap<String, (u32, Vec<u8>)>,
    links: BTreeMap<String, String>,
    /// The literal program interpreter paths the kernel opens (`PT_INTERP`), with the
    /// canonical file each resolves to.
    interpreters: BTreeMap<String, String>,
    /// Library names (`DT_NEEDED`) already found, with the path they were found at.
    libraries: BTreeMap<String, String>,
}

/// The Debian multiarch directory of an `e_machine` (the dynamic loader's default search
/// path on Debian and Ubuntu; other distributions use `lib64` or `lib`).
fn multiarch(machine: u16) -> Option<&'static str> {
    // Values from <elf.h>: EM_386 3, EM_ARM 40, EM_X86_64 62, EM_AARCH64 183, EM_RISCV 243.
    match machine {
        3 => Some("i386-linux-gnu"),
        40 => Some("arm-linux-gnueabihf"),
        62 => Some("x86_64-linux-gnu"),
        183 => Some("aarch64-linux-gnu"),
        243 => Some("riscv64-linux-gnu"),
        _ => None,
    }
}

/// Where a library named by `object` is looked for: its run path (`$ORIGIN` expanded), then
/// the default directories, `/usr` first so the usual `/lib -> usr/lib` link is not needed.
fn search_dirs(object: &str, dynamic: &elf::Dynamic) -> Vec<String> {
    let origin = object.rsplit_once('/').map_or("/", |(dir, _)| dir);
    let mut dirs: Vec<String> = dynamic
        .search_path
        .iter()
        .map(|dir| dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        .collect();
    let mut defaults = Vec::new();
    if let Some(triplet) = multiarch(dynamic.machine) {
        defaults.push(format!("/usr/lib/{triplet}"));
        defaults.push(format!("/lib/{triplet}"));
    }
    defaults.extend(["/usr/lib64", "/lib64", "/usr/lib", "/lib"].map(str::to_owned));
    dirs.extend(defaults);
    dirs
}

impl Closure {
    /// Takes `path` and, for an ELF object, its interpreter and libraries, recursively.
    fn take(
        &mut self,
        source: &Source,
        source_path: &Path,
        path: &str,
        why: &str,
    ) -> Result<(), SystemdInitramfsError> {
        let mut queue = VecDeque::from([(path.to_owned(), why.to_owned())]);
        let mut unfound = Vec::new();
        while let Some((path, why)) = queue.pop_front() {
            let missing = || SystemdInitramfsError::Missing {
                source_path: source_path.to_owned(),
                path: path.clone(),
                why: why.clone(),
            };
            let resolved = source.resolve(&path)?.ok_or_else(missing)?;
            if self.files.contains_key(&resolved.canonical) {
                self.links.extend(resolved.links);
                continue;
            }
            let Some(Node::File { mode, bytes }) = source.node(&resolved.canonical)? else {
                return Err(missing());
            };
            self.links.extend(resolved.links);
            if bytes.starts_with(b"\x7fELF") {
                let dynamic =
                    elf::read_dynamic(&bytes).map_err(|error| SystemdInitramfsError::Elf {
                        path: resolved.canonical.clone(),
                        error,
                    })?;
                if let Some(interpreter) = &dynamic.interpreter {
                    let target = source
                        .resolve(interpreter)?
                        .map(|r| r.canonical)
                        .unwrap_or_default();
                    self.interpreters.insert(interpreter.clone(), target);
                    queue.push_back((
                        interpreter.clone(),
                        format!(" (the interpreter of {})", resolved.canonical),
                    ));
                }
                for library in &dynamic.needed {
                    let why = format!(" (needed by {})", resolved.canonical);
                    if library.contains('/') {
                        queue.push_back((library.clone(), why));
                        continue;
                    }
                    // The loader reuses a library already loaded under that name, whoever's
                    // run path found it.
                    if self.libraries.contains_key(library) {
                        continue;
                    }
                    let mut found = None;
                    for dir in search_dirs(&resolved.canonical, &dynamic) {
                        let candidate = format!("{dir}/{library}");
                        if let Some(r) = source.resolve(&candidate)?
                            && matches!(source.node(&r.canonical)?, Some(Node::File { .. }))
                        {
                            found = Some(candidate);
                            break;
                        }
                    }
                    match found {
                        Some(candidate) => {
                            self.libraries.insert(library.clone(), candidate.clone());
                            queue.push_back((candidate, why));
                        }
                        None => unfound.push((library.clone(), why)),
                    }
                }
            }
            self.files.insert(resolved.canonical, (mode, bytes));
        }
        // Found later through another object's run path (loaded before this one), or missing.
        match unfound
            .into_iter()
            .find(|(library, _)| !self.libraries.contains_key(library))
        {
            None => Ok(()),
            Some((library, why)) => Err(SystemdInitramfsError::Missing {
                source_path: source_path.to_owned(),
                path: library,
                why: format!("{why} in its run path or the default library directories"),
            }),
        }
    }
}

impl SystemdInitramfs {
    /// The archive, with the storage-init flavour's report and a note on what came from the
    /// systemd source.
    fn assemble(&self) -> Result<(Archive, MiniInitramfsReport), SystemdInitramfsError> {
        let source = Source::open(&self.systemd_from)?;
        let mut closure = Closure::default();
        for program in PROGRAMS {
            closure.take(&source, &self.systemd_from, program, "")?;
        }
        for program in OPTIONAL_PROGRAMS {
            if source.resolve(program)?.is_some() {
                closure.take(&source, &self.systemd_from, program, "")?;
            }
        }

        let crate::mini_initramfs::Assembled {
            mut archive,
            module_list,
            mut notes,
            module_bytes,
        } = self.base.assemble()?;
        archive.remove(INIT_PATH)?;
        archive.add_file_from_host(
            STORAGE_INIT_SERVICE_PATH,
            EXECUTABLE_MODE,
            &self.base.storage_init,
        )?;
        let taken_bytes: usize = closure.files.values().map(|(_, bytes)| bytes.len()).sum();
        notes.push(format!(
            "systemd from {}: {} files, {taken_bytes} bytes ({})",
            self.systemd_from.display(),
            closure.files.len(),
            closure
                .files
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for (path, (mode, bytes)) in closure.files {
            archive.add_file(&path, mode, bytes)?;
        }
        // A link where the storage-init flavour has a directory (`/lib`, which holds the
        // modules) is left out; the files stay reachable by their canonical paths, and an
        // interpreter behind such a link gets a link of its own below.
        let mut shadowed = Vec::new();
        for (path, target) in &closure.links {
            match archive.add_symlink(path, target) {
                Ok(()) => {}
                Err(CpioError::Duplicate { .. } | CpioError::ParentNotDirectory { .. }) => {
                    shadowed.push(path.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (interpreter, canonical) in &closure.interpreters {
            let behind_shadowed = shadowed
                .iter()
                .any(|link| interpreter.starts_with(&format!("{link}/")));
            if behind_shadowed {
                archive.add_symlink(interpreter, canonical)?;
            }
        }
        for (name, text) in UNITS {
            archive.add_file(
                &format!("{UNIT_DIR}/{name}"),
                DATA_FILE_MODE,
                text.as_bytes().to_vec(),
            )?;
        }
        for alias in BOOT_TARGET_ALIASES {
            archive.add_symlink(&format!("{UNIT_DIR}/{alias}"), BOOT_TARGET)?;
        }
        let (release_path, release) = INITRD_RELEASE;
        archive.add_file(release_path, DATA_FILE_MODE, release.as_bytes().to_vec())?;
        archive.add_symlink(OS_RELEASE, "initrd-release")?;
        archive.add_symlink(INIT_PATH, &SYSTEMD_PATH[1..])?;
        let report = MiniInitramfsReport {
            module_list,
            notes,
            module_bytes,
            entries: archive.len(),
            bytes: 0,
            compressed_bytes: 0,
        };
        Ok((archive, report))
    }

    /// The file's bytes (the archive, compressed as the base says), with its report.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, MiniInitramfsReport), SystemdInitramfsError> {
        let (archive, mut report) = self.assemble()?;
        let bytes = archive.to_bytes(self.base.mtime)?;
        let compressed = self.base.compression.compress(&bytes).map_err(|error| {
            SystemdInitramfsError::Compress {
                compression: self.base.compression,
                error,
            }
        })?;
        report.bytes = bytes.len() as u64;
        report.compressed_bytes = compressed.len() as u64;
        Ok((compressed, report))
    }

    /// Writes the file to `output`, replacing any old one atomically.
    pub fn write(&self, output: &Path) -> Result<MiniInitramfsReport, SystemdInitramfsError> {
        let (bytes, report) = self.to_bytes()?;
        crate::replace::replace_file(output, &bytes, DATA_FILE_MODE)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::InitramfsCompression;
    use crate::elf::test_object;
    use crate::modules::KernelModules;
    use std::os::unix::fs::symlink;
    use storage_init::config::{BootFs, Config};

    /// A root tree laid out as Debian's merged /usr (what dracut copies into its initramfs):
    /// systemd and systemctl with their libraries, the links that lead to them, and programs
    /// and libraries systemd does not need.
    fn synthetic_root(root: &Path) {
        const INTERP: &str = "/lib64/ld-linux-x86-64.so.2";
        const SHARED_DIR: &str = "/usr/lib/x86_64-linux-gnu/systemd";
        let program = |needed: &[&str]| test_object(62, Some(INTERP), needed, Some(SHARED_DIR));
        let library = |needed: &[&str]| test_object(62, None, needed, None);
        for (path, bytes) in [
            (
                "usr/lib/systemd/systemd",
                program(&[
                    "libsystemd-core-252.so",
                    "libsystemd-shared-252.so",
                    "libc.so.6",
                ]),
            ),
            // No run path of its own: the loader has libsystemd-shared loaded already.
            (
                "usr/lib/x86_64-linux-gnu/systemd/libsystemd-core-252.so",
                library(&["libsystemd-shared-252.so", "libc.so.6"]),
            ),
            (
                "usr/bin/systemctl",
                program(&["libsystemd-shared-252.so", "libc.so.6"]),
            ),
            ("usr/bin/bash", program(&["libtinfo.so.6", "libc.so.6"])),
            (
                "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so",
                library(&["libcap.so.2", "libc.so.6"]),
            ),
            (
                "usr/lib/x86_64-linux-gnu/libcap.so.2.66",
                library(&["libc.so.6"]),
            ),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", library(&[])),
            ("usr/lib/x86_64-linux-gnu/libtinfo.so.6", library(&[])),
            (
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                library(&[]),
            ),
            (
                "usr/lib/systemd/system/sysinit.target",
                b"[Unit]\n".to_vec(),
            ),
        ] {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir_all(root.join("usr/lib64")).unwrap();
        for (link, target) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
            (
                "usr/lib64/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            ("usr/lib/x86_64-linux-gnu/libcap.so.2", "libcap.so.2.66"),
        ] {
            symlink(target, root.join(link)).unwrap();
        }
    }

    fn inputs(work: &Path, systemd_from: PathBuf) -> SystemdInitramfs {
        let storage_init = work.join("storage-init");
        fs::write(&storage_init, b"\x7fELF storage-init stand-in").unwrap();
        SystemdInitramfs {
            base: MiniInitramfs {
                storage_init,
                config: Config {
                    bootfs: Some(BootFs::Label("boot".into())),
                    ..Config::default()
                },
                kernel: KernelModules::new(work.join("no-kernel"), "6.12.0-test"),
                modules: Vec::new(),
                wanted_modules: Vec::new(),
                mtime: 0,
                compression: InitramfsCompression::None,
            },
            systemd_from,
        }
    }

    /// The tree as an initramfs, the way dracut would pack it.
    fn pack(root: &Path, output: &Path) {
        let mut archive = Archive::new();
        for entry in crate::listing::tree_entries(root).unwrap() {
            let name = format!("/{}", entry.name);
            if entry.is_dir() {
                archive.add_dir(&name, entry.permissions()).unwrap();
            } else if entry.is_symlink() {
                archive
                    .add_symlink(&name, &String::from_utf8(entry.data).unwrap())
                    .unwrap();
            } else {
                archive
                    .add_file(&name, entry.permissions(), entry.data)
                    .unwrap();
            }
        }
        fs::write(output, archive.to_bytes(0).unwrap()).unwrap();
    }

    #[test]
    fn takes_systemd_and_its_closure_only() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        synthetic_root(&root);
        let from_tree = inputs(work.path(), root.clone());
        let output = work.path().join("mini.cpio");
        let report = from_tree.write(&output).unwrap();
        let (_, listing) = crate::listing::list_path(&output).unwrap();
        insta::assert_snapshot!(listing);
        assert_eq!(report.bytes, fs::metadata(&output).unwrap().len());
        assert!(
            report.notes.iter().any(|n| n.contains("7 files")),
            "{:?}",
            report.notes
        );
        // bash and its library, and the source's other units, stay behind.
        for absent in ["usr/bin/bash", "libtinfo", "sysinit.target"] {
            assert!(!listing.contains(absent), "{absent} was taken");
        }

        // The same content packed as an initramfs gives the same bytes.
        let packed = work.path().join("source.cpio");
        pack(&root, &packed);
        let from_archive = inputs(work.path(), packed);
        assert!(
            from_archive.to_bytes().unwrap().0 == fs::read(&output).unwrap(),
            "an initramfs source and a tree source of the same content differ"
        );
        // Same inputs, same bytes; the mtime is used.
        assert!(from_tree.to_bytes().unwrap().0 == fs::read(&output).unwrap());
        let mut later = from_tree.clone();
        later.base.mtime = 1;
        assert!(later.to_bytes().unwrap().0 != fs::read(&output).unwrap());
    }

    #[test]
    fn units_are_storage_inits_and_the_target_is_the_default() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        synthetic_root(&root);
        let (bytes, _) = inputs(work.path(), root).to_bytes().unwrap();
        let entries = crate::cpio::read_archive(&bytes).unwrap();
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let prepare = String::from_utf8(
            get("usr/lib/systemd/system/initoverlayfs-prepare.service")
                .data
                .clone(),
        )
        .unwrap();
        assert!(
            prepare.contains(&format!(
                "ExecStart={STORAGE_INIT_SERVICE_PATH} --prepare-only"
            )),
            "{prepare}"
        );
        let storage_init = get(&STORAGE_INIT_SERVICE_PATH[1..]);
        assert_eq!(storage_init.data, b"\x7fELF storage-init stand-in");
        assert_eq!(storage_init.permissions(), 0o755);
        for alias in BOOT_TARGET_ALIASES {
            assert_eq!(
                get(&format!("usr/lib/systemd/system/{alias}")).data,
                BOOT_TARGET.as_bytes()
            );
        }
        assert_eq!(get("init").data, b"usr/lib/systemd/systemd");
        // The switch-root unit runs a systemctl the archive has.
        let switch = String::from_utf8(
            get("usr/lib/systemd/system/initoverlayfs-switch-root.service")
                .data
                .clone(),
        )
        .unwrap();
        let exec = switch
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let program = exec.split(' ').next().unwrap();
        assert!(get(&program[1..]).is_file(), "{program}");
        assert!(get("etc/initrd-release").is_file());
        assert!(get("etc/initoverlayfs.conf").is_file());
    }

    /// `/lib` is a directory of the storage-init flavour (its modules): a source's `/lib ->
    /// usr/lib` is left out, and an interpreter reached through it gets its own link.
    #[test]
    fn an_interpreter_behind_a_shadowed_link_is_linked_itself() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        synthetic_root(&root);
        // aarch64's loader is /lib/ld-linux-aarch64.so.1, reached through /lib -> usr/lib.
        let systemd = test_object(
            183,
            Some("/lib/ld-linux-aarch64.so.1"),
            &["libc.so.6"],
            None,
        );
        fs::write(root.join("usr/lib/systemd/systemd"), systemd).unwrap();
        fs::write(
            root.join("usr/lib/ld-linux-aarch64.so.1"),
            test_object(183, None, &[], None),
        )
        .unwrap();
        fs::create_dir_all(root.join("usr/lib/aarch64-linux-gnu")).unwrap();
        fs::write(
            root.join("usr/lib/aarch64-linux-gnu/libc.so.6"),
            test_object(183, None, &[], None),
        )
        .unwrap();
        let (bytes, _) = inputs(work.path(), root).to_bytes().unwrap();
        let entries = crate::cpio::read_archive(&bytes).unwrap();
        let get = |name: &str| entries.iter().find(|e| e.name == name);
        assert!(get("lib").unwrap().is_dir());
        let loader = get("lib/ld-linux-aarch64.so.1").expect("interpreter link");
        assert_eq!(loader.data, b"/usr/lib/ld-linux-aarch64.so.1");
        assert!(get("usr/lib/ld-linux-aarch64.so.1").unwrap().is_file());
        assert!(
            get("usr/lib/aarch64-linux-gnu/libc.so.6")
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let check = |break_root: &dyn Fn(&Path), expected: &[&str]| {
            let work = tempfile::tempdir().unwrap();
            let root = work.path().join("root");
            synthetic_root(&root);
            break_root(&root);
            let err = inputs(work.path(), root)
                .to_bytes()
                .unwrap_err()
                .to_string();
            for part in expected {
                assert!(err.contains(part), "{err:?} lacks {part:?}");
            }
        };
        check(
            &|root| fs::remove_file(root.join("usr/lib/systemd/systemd")).unwrap(),
            &["no /usr/lib/systemd/systemd", "dracut"],
        );
        check(
            &|root| fs::remove_file(root.join("usr/lib/x86_64-linux-gnu/libcap.so.2.66")).unwrap(),
            &[
                "libcap.so.2",
                "needed by /usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so",
            ],
        );
        check(
            &|root| {
                fs::remove_file(root.join("lib64")).unwrap();
                symlink("lib64", root.join("lib64")).unwrap();
            },
            &["more than 40 symbolic links"],
        );
        check(
            &|root| fs::write(root.join("usr/bin/systemctl"), b"\x7fELF\x02").unwrap(),
            &["/usr/bin/systemctl", "ELF"],
        );
    }

    #[test]
    fn a_source_that_is_neither_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let bad = work.path().join("not-an-initramfs");
        fs::write(&bad, b"hello").unwrap();
        let err = inputs(work.path(), bad).to_bytes().unwrap_err().to_string();
        assert!(err.contains("not-an-initramfs"), "{err}");
        let err = inputs(work.path(), work.path().join("nope"))
            .to_bytes()
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
