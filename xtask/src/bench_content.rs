//! The boot benchmark's bigger initramfs images: Debian's dracut initramfs grown with realistic
//! content (GPU and Wi-Fi firmware, LLVM, Mesa's Vulkan drivers, ICU, language runtimes: the
//! packages pinned in `fixtures/bench-content.toml`) to a target unpacked size.
//!
//! The base file is kept byte for byte; one archive segment is appended, compressed as the base's
//! last segment is (gzip for Debian's dracut), holding the added files as Debian installs them,
//! package after package in pin order, each package's paths in sorted order, until the unpacked
//! size reaches the target. The kernel unpacks concatenated segments one after another, and so
//! does builder's reader, so both the classic boot and `builder image` see base + content.
//!
//! The same selection can be had as a directory instead ([`grown_content_dir`]): the files the
//! appended archive would hold, at the paths it would hold them, for an initramfs generator to
//! include (`dracut --include <dir> /`, see `bench_peers`). dracut hard-links identical files,
//! so there a duplicate's data counts once toward the target.
//!
//! Cache layout (under [`cache_dir`]), each entry filled once under its `.lock` (see
//! `debian_tree::fill_once`):
//!
//! ```text
//! debs/<sha256>/                                  a pinned package, unpacked (as fixtures do)
//! bench-content/<key>/done/{initrd.img, grown.json}
//! bench-content/dir-<key>/done/{root/, grown.json}
//! ```
//!
//! The key covers the base's sha256, the target, the pins file's text, the recipe and
//! `SOURCE_DATE_EPOCH` (the appended archive's mtime, the directory's file times), so a grown
//! file or directory is reproducible from its inputs.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use builder::compress::InitramfsCompression;
use builder::cpio::Archive;
use builder::initramfs::{Format, MAX_UNPACKED};
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::fixtures::{COMPLETE, RemoveDirOnDrop, cache_dir};

/// The pinned packages the content comes from.
pub const PINS_TOML: &str = "fixtures/bench-content.toml";
/// Bumped whenever what is added, or how, changes, so the cache is rebuilt.
const RECIPE: &str = "v1 pin order, sorted paths, no doc/man/lintian, base symlinks followed, dirs 0755, stop at target";
/// Bumped whenever what [`grown_content_dir`] writes, or how, changes.
const DIR_RECIPE: &str = "v2 the selection of RECIPE as a directory, file times SOURCE_DATE_EPOCH, duplicate files' data counted once";
/// The directory's name inside its cache entry.
const DIR_NAME: &str = "root";
/// The grown file's name inside its cache entry.
const GROWN_NAME: &str = "initrd.img";
/// What was added, beside it.
const MANIFEST_NAME: &str = "grown.json";
/// Trees of a package that no initramfs generator copies: documentation and packaging metadata.
const SKIPPED_TREES: [&str; 3] = ["usr/share/doc", "usr/share/man", "usr/share/lintian"];
/// The mode of every directory the appended archive creates.
const DIR_MODE: u32 = 0o755;
/// Symlinks followed while placing one path before giving up (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;
/// A newc header: 6 bytes of magic and 13 fields of 8 hex digits (the kernel's
/// `Documentation/driver-api/early-userspace/buffer-format.rst`).
const NEWC_HEADER_LEN: u64 = 6 + 13 * 8;
/// Names and data are each padded to a multiple of 4 bytes (buffer-format.rst).
const NEWC_ALIGN: u64 = 4;
/// The name of the entry that ends a newc archive (buffer-format.rst).
const NEWC_TRAILER: &str = "TRAILER!!!";

/// A dracut initramfs grown with realistic content to about `target_bytes` unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrownInitramfs {
    /// The initramfs file: the base file's bytes unchanged, then one appended archive segment
    /// (the same compression as the base's last segment) holding the added files.
    pub path: PathBuf,
    /// The unpacked size: the sum of every segment's uncompressed cpio bytes.
    pub unpacked_bytes: u64,
    /// The packages whose files were added, in order (`name version`), the last maybe in part.
    pub added: Vec<String>,
}

/// The grown content as a directory: the files [`GrownInitramfs`] would append to the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrownContent {
    /// The directory (shared and cached: read it, never change it), to be included at `/`.
    pub dir: PathBuf,
    /// The base's unpacked bytes plus what the content adds as a newc archive of its own (its
    /// directories and trailer included), a file whose bytes and mode an earlier added file
    /// has counted as a hard link (header only): dracut hard-links identical files and newc
    /// stores a hard-linked file's data once, so the duplicates among the content's files (29 MB
    /// of firmware at the 512 MiB point) would otherwise leave the initramfs short of the
    /// target. The generator's initramfs differs from this by the parents the base already has.
    pub unpacked_bytes: u64,
    /// The packages whose files were added, in order (`name version`), the last maybe in part.
    pub added: Vec<String>,
}

/// One package of `fixtures/bench-content.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentPin {
    pub package: String,
    pub version: String,
    /// The pool path, relative to the Debian mirror's root.
    pub filename: String,
    pub sha256: String,
}

impl ContentPin {
    fn label(&self) -> String {
        format!("{} {}", self.package, self.version)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentPins {
    deb: Vec<ContentPin>,
}

fn parse_pins(text: &str) -> Result<Vec<ContentPin>> {
    let pins: ContentPins = toml::from_str(text).with_context(|| format!("parsing {PINS_TOML}"))?;
    Ok(pins.deb)
}

/// What a cache entry records beside the grown file.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    unpacked_bytes: u64,
    added: Vec<String>,
}

/// The unpacked size of an initramfs file (sum of its segments' uncompressed cpio bytes).
/// Holds the whole unpacked content in memory once, as builder's reader does.
pub fn unpacked_bytes(initramfs: &Path) -> Result<u64> {
    let bytes =
        std::fs::read(initramfs).with_context(|| format!("reading {}", initramfs.display()))?;
    let segments = builder::initramfs::read_with_limit(&bytes, MAX_UNPACKED)
        .with_context(|| format!("reading {}", initramfs.display()))?
        .segments;
    segments_unpacked_bytes(&bytes, &segments).with_context(|| initramfs.display().to_string())
}

/// The sum of `segments`' uncompressed bytes (`bytes` is the file they were read from).
fn segments_unpacked_bytes(bytes: &[u8], segments: &[builder::initramfs::Segment]) -> Result<u64> {
    let mut total = 0;
    for segment in segments {
        let stream = &bytes[segment.offset..segment.offset + segment.len];
        total += match segment.format {
            Format::Newc => segment.len as u64,
            format => builder::initramfs::decompress_stream(stream, MAX_UNPACKED)
                .with_context(|| {
                    format!(
                        "decompressing the {} segment at byte {}",
                        format.name(),
                        segment.offset
                    )
                })?
                .len() as u64,
        };
    }
    Ok(total)
}

/// `base` grown to about `target_bytes` unpacked (never less; at most one file more).
/// Cached by content under `cache_dir().join("bench-content")`, keyed by the base's sha256, the
/// target, the pins file's content and [`RECIPE`]. Only the packages the target needs are
/// fetched (from the machine's Debian mirror, by pool path, checked against the pin's sha256).
pub fn grown_initramfs(
    sh: &Shell,
    root: &Path,
    base: &Path,
    target_bytes: u64,
) -> Result<GrownInitramfs> {
    let (pins_text, pins) = read_pins(root)?;
    let key = content_key(RECIPE, base, target_bytes, &pins_text)?;
    let entry = cache_dir().join("bench-content").join(&key[..16]);
    // A complete entry (`.complete` is written last) was grown from this very base, so the
    // target was above its size: no need to unpack the base again to find out.
    if !entry.join(COMPLETE).is_file() {
        let base_unpacked = unpacked_bytes(base)?;
        if target_bytes <= base_unpacked {
            return Ok(GrownInitramfs {
                path: base.to_owned(),
                unpacked_bytes: base_unpacked,
                added: Vec::new(),
            });
        }
    }
    let done = crate::debian_tree::fill_once(&entry, |work| {
        eprintln!(
            "bench-content: growing {} to {target_bytes} bytes unpacked",
            base.display()
        );
        // Lazy: a package is fetched only when the ones before it fall short of the target.
        let packages = pins
            .iter()
            .map(|pin| Ok((pin.label(), fetch_pin(sh, pin)?)));
        let (unpacked_bytes, added) = grow(base, packages, target_bytes, &work.join(GROWN_NAME))?;
        write_manifest(work, unpacked_bytes, added)
    })?;
    let manifest = read_manifest(&done)?;
    Ok(GrownInitramfs {
        path: done.join(GROWN_NAME),
        unpacked_bytes: manifest.unpacked_bytes,
        added: manifest.added,
    })
}

/// The files [`grown_initramfs`] would append to `base` for `target_bytes`, as a directory
/// tree for a generator that hard-links identical files (dracut), cached like it
/// (`bench-content/dir-<key>`); None when the base alone reaches the target. The same
/// selection, counting a duplicate's data once as the generator's initramfs stores it, so it
/// may hold a few files more (see [`GrownContent::unpacked_bytes`]). Every file, symlink and directory carries `SOURCE_DATE_EPOCH` as its time, so a
/// generator that keeps times makes the same bytes from it every time.
pub fn grown_content_dir(
    sh: &Shell,
    root: &Path,
    base: &Path,
    target_bytes: u64,
) -> Result<Option<GrownContent>> {
    let (pins_text, pins) = read_pins(root)?;
    let key = content_key(DIR_RECIPE, base, target_bytes, &pins_text)?;
    let entry = cache_dir()
        .join("bench-content")
        .join(format!("dir-{}", &key[..16]));
    if !entry.join(COMPLETE).is_file() && target_bytes <= unpacked_bytes(base)? {
        return Ok(None);
    }
    let done = crate::debian_tree::fill_once(&entry, |work| {
        eprintln!(
            "bench-content: choosing the files that grow {} to {target_bytes} bytes unpacked, as a directory",
            base.display()
        );
        let packages = pins
            .iter()
            .map(|pin| Ok((pin.label(), fetch_pin(sh, pin)?)));
        let dir = work.join(DIR_NAME);
        let (unpacked_bytes, added) = grow_dir(base, packages, target_bytes, &dir)?;
        set_times(sh, &dir, builder::source_date_epoch()?)?;
        write_manifest(work, unpacked_bytes, added)
    })?;
    let manifest = read_manifest(&done)?;
    Ok(Some(GrownContent {
        dir: done.join(DIR_NAME),
        unpacked_bytes: manifest.unpacked_bytes,
        added: manifest.added,
    }))
}

/// The pins file's text and its packages.
fn read_pins(root: &Path) -> Result<(String, Vec<ContentPin>)> {
    let pins_path = root.join(PINS_TOML);
    let pins_text = std::fs::read_to_string(&pins_path)
        .with_context(|| format!("reading {}", pins_path.display()))?;
    let pins = parse_pins(&pins_text)?;
    Ok((pins_text, pins))
}

/// A grown entry's cache key: `recipe`, the base's bytes, the target, the pins and
/// `SOURCE_DATE_EPOCH`.
fn content_key(recipe: &str, base: &Path, target_bytes: u64, pins_text: &str) -> Result<String> {
    Ok(crate::debian_tree::hash(&[
        recipe,
        &crate::fixtures::sha256_file(base)?,
        &target_bytes.to_string(),
        pins_text,
        &builder::source_date_epoch()?.to_string(),
    ]))
}

fn write_manifest(work: &Path, unpacked_bytes: u64, added: Vec<String>) -> Result<()> {
    let manifest = serde_json::to_string_pretty(&Manifest {
        unpacked_bytes,
        added,
    })?;
    std::fs::write(work.join(MANIFEST_NAME), manifest + "\n")
        .with_context(|| format!("writing {MANIFEST_NAME} in {}", work.display()))
}

fn read_manifest(done: &Path) -> Result<Manifest> {
    let manifest_path = done.join(MANIFEST_NAME);
    serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))
}

/// Gives every entry under `dir` (itself included, symlinks themselves) the time `epoch`.
/// Touching an entry leaves its directory's time alone, so one pass does.
pub(crate) fn set_times(sh: &Shell, dir: &Path, epoch: u64) -> Result<()> {
    let date = format!("--date=@{epoch}");
    let placeholder = "{}";
    xshell::cmd!(sh, "find {dir} -exec touch -h {date} {placeholder} +")
        .quiet()
        .run()
        .with_context(|| format!("setting the times under {}", dir.display()))
}

/// Downloads, verifies and unpacks one pinned package into `cache_dir()/debs/<sha256>/` (the
/// fixtures' convention: the unpacked tree, its `.complete` naming the package), or finds it
/// there; the mirror is the machine's Debian apt source. Returns the tree.
fn fetch_pin(sh: &Shell, pin: &ContentPin) -> Result<PathBuf> {
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let lock_path = debs.join(format!("{}.lock", pin.sha256));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Serialises concurrent processes filling the same entry; released when `lock` drops.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let cached = debs.join(&pin.sha256);
    if cached.join(COMPLETE).is_file() {
        return Ok(cached);
    }
    eprintln!("bench-content: fetching {} {}", pin.package, pin.version);
    let work = debs.join(format!("tmp-{}-{}", pin.sha256, std::process::id()));
    let _ = std::fs::remove_dir_all(&work); // a leftover of a killed run; absent is fine
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Removed however this ends: a refused download must not stay in the cache.
    let _work_guard = RemoveDirOnDrop(work.clone());
    let deb = work.join("package.deb");
    // Read only when a package is not in the cache yet: a machine with every package cached
    // needs no apt source.
    let mirror = crate::provision::debian_mirror()?;
    let url = format!("{}/{}", mirror.trim_end_matches('/'), pin.filename);
    crate::download::curl(sh, &url, &deb)?;
    crate::download::verify_sha256(&deb, &url, &pin.sha256, PINS_TOML)?;
    let tree = work.join("tree");
    crate::deb::unpack_deb(&deb, &tree)?;
    std::fs::write(
        tree.join(COMPLETE),
        format!("{} {} {}\n", pin.package, pin.version, pin.sha256),
    )?;
    let _ = std::fs::remove_dir_all(&cached); // an incomplete entry from a killed run
    std::fs::rename(&tree, &cached)
        .with_context(|| format!("moving {} to {}", tree.display(), cached.display()))?;
    Ok(cached)
}

/// Grows `base` with the files of `packages` (label, unpacked tree), in order, into `out`, until
/// the unpacked size reaches `target`. Returns the unpacked size and the labels of the packages
/// whose files were added. `packages` is pulled only as far as the target needs (so a package
/// is fetched only if it is used).
pub(crate) fn grow(
    base: &Path,
    packages: impl IntoIterator<Item = Result<(String, PathBuf)>>,
    target: u64,
    out: &Path,
) -> Result<(u64, Vec<String>)> {
    choose(base, packages, target, Duplicates::Stored)?.finish(out)
}

/// What [`grow`] appends, written as a directory `out` instead (see [`Grower::finish_dir`]),
/// for a generator that hard-links identical files: the same selection in the same order, its
/// duplicates' data counted once, so it may run on past where [`grow`] stops.
pub(crate) fn grow_dir(
    base: &Path,
    packages: impl IntoIterator<Item = Result<(String, PathBuf)>>,
    target: u64,
    out: &Path,
) -> Result<(u64, Vec<String>)> {
    choose(base, packages, target, Duplicates::HardLinked)?.finish_dir(out)
}

/// How the initramfs will store a file whose bytes and mode an earlier added file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplicates {
    /// With its data, as builder's archive writes every file.
    Stored,
    /// As a hard link: newc writes a header and no data for it. dracut hard-links identical
    /// files (util-linux `hardlink`, same content, mode, owner and time: the content's owners
    /// and times are all alike).
    HardLinked,
}

/// The files of `packages` that grow `base` to `target`: the one selection [`grow`] and
/// [`grow_dir`] write.
fn choose(
    base: &Path,
    packages: impl IntoIterator<Item = Result<(String, PathBuf)>>,
    target: u64,
    duplicates: Duplicates,
) -> Result<Grower> {
    let mut grower = Grower::new(base, target)?;
    if duplicates == Duplicates::HardLinked {
        grower.seen_files = Some(HashSet::new());
    }
    let mut packages = packages.into_iter();
    while !grower.reached() {
        let Some(package) = packages.next() else {
            break;
        };
        let (label, tree) = package?;
        grower.add_package(&label, &tree)?;
    }
    grower.check_reached()?;
    Ok(grower)
}

/// What a path is in the unpacked tree (the base's entries, then the added ones).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Directory,
    /// A symlink, with its target.
    Symlink(String),
    /// Anything else: a regular file or a device node.
    Other,
}

/// One entry of the appended archive, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Added {
    Directory(String),
    /// A file, its mode and where its bytes are.
    File(String, u32, PathBuf),
    /// A symlink and its target.
    Symlink(String, String),
}

/// The appended archive being chosen, with the running unpacked size.
struct Grower {
    base: PathBuf,
    target: u64,
    /// The base's last segment's format: the appended archive's compression.
    last_format: Format,
    /// Every path of the unpacked tree, relative (`usr/lib/x`).
    tree: HashMap<String, Node>,
    /// The appended archive's entries, in order.
    entries: Vec<Added>,
    /// The directories `entries` holds.
    archive_dirs: HashSet<String>,
    /// When duplicates are hard-linked ([`Duplicates::HardLinked`]): the sha256 and mode of
    /// every file added so far.
    seen_files: Option<HashSet<(String, u32)>>,
    /// The base's unpacked bytes.
    base_unpacked: u64,
    /// The appended archive's bytes so far, its trailer included.
    appended: u64,
    added: Vec<String>,
}

impl Grower {
    fn new(base: &Path, target: u64) -> Result<Grower> {
        let bytes = std::fs::read(base).with_context(|| format!("reading {}", base.display()))?;
        let initramfs = builder::initramfs::read_with_limit(&bytes, MAX_UNPACKED)
            .with_context(|| format!("reading {}", base.display()))?;
        let base_unpacked = segments_unpacked_bytes(&bytes, &initramfs.segments)
            .with_context(|| base.display().to_string())?;
        let last_format = initramfs
            .segments
            .last()
            .context("the base has no segment")?
            .format;
        let mut tree = HashMap::new();
        for entry in initramfs.final_entries() {
            let name = entry
                .name
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned();
            if name.is_empty() || name == "." {
                continue;
            }
            let node = if entry.is_dir() {
                Node::Directory
            } else if entry.is_symlink() {
                Node::Symlink(String::from_utf8_lossy(&entry.data).into_owned())
            } else {
                Node::Other
            };
            tree.insert(name, node);
        }
        Ok(Grower {
            base: base.to_owned(),
            target,
            last_format,
            tree,
            entries: Vec::new(),
            seen_files: None,
            archive_dirs: HashSet::new(),
            base_unpacked,
            appended: newc_entry_len(NEWC_TRAILER, 0),
            added: Vec::new(),
        })
    }

    fn total(&self) -> u64 {
        self.base_unpacked + self.appended
    }

    fn reached(&self) -> bool {
        self.total() >= self.target
    }

    /// Adds the regular files and symlinks of the unpacked package `tree`, in sorted path
    /// order, until the target is reached.
    fn add_package(&mut self, label: &str, tree: &Path) -> Result<()> {
        let mut paths = Vec::new();
        walk(tree, "", &mut paths)?;
        for (relative, host) in paths {
            if self.reached() {
                break;
            }
            // The fixtures' marker of a complete cache entry, not the package's.
            if relative == COMPLETE {
                continue;
            }
            if self.add_path(&relative, &host)?
                && self.added.last().map(String::as_str) != Some(label)
            {
                self.added.push(label.to_owned());
            }
        }
        Ok(())
    }

    /// Adds one path of a package (`host` holds it); false if it is left out.
    fn add_path(&mut self, relative: &str, host: &Path) -> Result<bool> {
        let Some(placed) = self.place(relative) else {
            return Ok(false);
        };
        if SKIPPED_TREES
            .iter()
            .any(|skipped| placed == *skipped || placed.starts_with(&format!("{skipped}/")))
            || self.tree.contains_key(&placed)
        {
            return Ok(false);
        }
        let metadata = std::fs::symlink_metadata(host)
            .with_context(|| format!("reading {}", host.display()))?;
        let (node, data_len) = if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(host)
                .with_context(|| format!("reading the symlink {}", host.display()))?;
            let target = target
                .to_str()
                .with_context(|| format!("{}: its target is not UTF-8", host.display()))?
                .to_owned();
            let len = target.len() as u64;
            (Node::Symlink(target), len)
        } else {
            let mut len = metadata.len();
            if let Some(seen) = &mut self.seen_files
                && len > 0
                && !seen.insert((crate::fixtures::sha256_file(host)?, metadata.mode()))
            {
                len = 0;
            }
            (Node::Other, len)
        };
        // The appended archive holds every parent itself, the base's directories too: the
        // kernel creates no parents, and builder's archive writes them anyway.
        let components: Vec<&str> = placed.split('/').collect();
        for depth in 1..components.len() {
            let parent = components[..depth].join("/");
            if self.archive_dirs.contains(&parent) {
                continue;
            }
            self.entries.push(Added::Directory(parent.clone()));
            self.appended += newc_entry_len(&parent, 0);
            self.tree.insert(parent.clone(), Node::Directory);
            self.archive_dirs.insert(parent);
        }
        self.entries.push(match &node {
            Node::Symlink(target) => Added::Symlink(placed.clone(), target.clone()),
            _ => Added::File(
                placed.clone(),
                metadata.permissions().mode(),
                host.to_owned(),
            ),
        });
        self.appended += newc_entry_len(&placed, data_len);
        self.tree.insert(placed, node);
        Ok(true)
    }

    /// Where the package path `relative` lands in the unpacked tree: symlinks among its parents
    /// followed (a package's `lib/firmware/x` goes to `usr/lib/firmware/x` when the base has
    /// `lib -> usr/lib`). None if a parent is a file, or the symlinks lead nowhere sensible.
    fn place(&self, relative: &str) -> Option<String> {
        let mut components: Vec<String> = relative
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect();
        let mut hops = 0;
        'resolve: loop {
            for depth in 1..components.len() {
                match self.tree.get(&components[..depth].join("/")) {
                    None | Some(Node::Directory) => {}
                    Some(Node::Other) => return None,
                    Some(Node::Symlink(target)) => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return None;
                        }
                        let mut resolved: Vec<String> = if target.starts_with('/') {
                            Vec::new()
                        } else {
                            components[..depth - 1].to_vec()
                        };
                        for part in target.split('/') {
                            match part {
                                "" | "." => {}
                                ".." => {
                                    resolved.pop();
                                }
                                part => resolved.push(part.to_owned()),
                            }
                        }
                        resolved.extend_from_slice(&components[depth..]);
                        components = resolved;
                        continue 'resolve;
                    }
                }
            }
            return (!components.is_empty()).then(|| components.join("/"));
        }
    }

    fn check_reached(&self) -> Result<()> {
        if !self.reached() {
            bail!(
                "the packages add up to {} bytes unpacked, short of the target {}: pin more in {PINS_TOML}",
                self.total(),
                self.target
            );
        }
        Ok(())
    }

    /// Writes base ++ the compressed appended archive to `out` (a temporary name, then a
    /// rename). Returns the unpacked size and the packages added.
    fn finish(self, out: &Path) -> Result<(u64, Vec<String>)> {
        let compression = compression_of(self.last_format)
            .with_context(|| format!("{}: its last segment", self.base.display()))?;
        let mut archive = Archive::new();
        for entry in &self.entries {
            match entry {
                Added::Directory(path) => archive.add_dir(path, DIR_MODE)?,
                Added::File(path, mode, host) => archive.add_file_from_host(path, *mode, host)?,
                Added::Symlink(path, target) => archive.add_symlink(path, target)?,
            }
        }
        let cpio = archive.to_bytes(builder::source_date_epoch()?)?;
        if cpio.len() as u64 != self.appended {
            bail!(
                "the appended archive has {} bytes, {} were counted (a bug in the newc size arithmetic)",
                cpio.len(),
                self.appended
            );
        }
        let compressed = compression
            .compress(&cpio)
            .with_context(|| format!("compressing the appended archive ({compression})"))?;
        drop(cpio);
        let base = std::fs::read(&self.base)
            .with_context(|| format!("reading {}", self.base.display()))?;
        let partial = out.with_extension("partial");
        let mut file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        file.write_all(&base)
            .and_then(|()| file.write_all(&compressed))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
        Ok((self.total(), self.added))
    }

    /// Writes what the appended archive would hold as the directory `out` (which must not
    /// exist): its directories with [`DIR_MODE`], its files copied with their packages' modes,
    /// its symlinks. Returns what [`Grower::finish`] would.
    fn finish_dir(self, out: &Path) -> Result<(u64, Vec<String>)> {
        std::fs::create_dir(out).with_context(|| format!("creating {}", out.display()))?;
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", path.display()))
        };
        mode(out, DIR_MODE)?;
        for entry in &self.entries {
            match entry {
                Added::Directory(path) => {
                    let dir = out.join(path);
                    std::fs::create_dir(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    mode(&dir, DIR_MODE)?;
                }
                Added::File(path, file_mode, host) => {
                    let file = out.join(path);
                    std::fs::copy(host, &file).with_context(|| {
                        format!("copying {} to {}", host.display(), file.display())
                    })?;
                    mode(&file, *file_mode)?;
                }
                Added::Symlink(path, target) => {
                    let link = out.join(path);
                    std::os::unix::fs::symlink(target, &link)
                        .with_context(|| format!("creating the symlink {}", link.display()))?;
                }
            }
        }
        Ok((self.total(), self.added))
    }
}

/// The compression that writes `format` (the base's last segment's).
fn compression_of(format: Format) -> Result<InitramfsCompression> {
    [
        InitramfsCompression::None,
        InitramfsCompression::Zstd,
        InitramfsCompression::Gzip,
        InitramfsCompression::Lz4,
        InitramfsCompression::Xz,
        InitramfsCompression::Bzip2,
    ]
    .into_iter()
    .find(|c| c.format() == format)
    .with_context(|| format!("{} is read, not written, by builder", format.name()))
}

/// The bytes one newc entry takes: header and NUL-terminated name padded to 4, data padded to 4.
fn newc_entry_len(name: &str, data_len: u64) -> u64 {
    (NEWC_HEADER_LEN + name.len() as u64 + 1).next_multiple_of(NEWC_ALIGN)
        + data_len.next_multiple_of(NEWC_ALIGN)
}

/// The regular files and symlinks under `dir` (`prefix` its path in the package), in sorted
/// path order, component by component (as the archive writes them); symlinks are not followed.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().into_string().map_err(|name| {
            anyhow::anyhow!("{}: a name that is not UTF-8: {name:?}", dir.display())
        })?;
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, host) in entries {
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = std::fs::symlink_metadata(&host)
            .with_context(|| format!("reading {}", host.display()))?
            .file_type();
        if file_type.is_dir() {
            walk(&host, &relative, out)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            out.push((relative, host));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_pins_parse_in_order() {
        let text = std::fs::read_to_string(root().join(PINS_TOML)).unwrap();
        let pins = parse_pins(&text).unwrap();
        let names: Vec<&str> = pins.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(
            names[..3],
            [
                "firmware-amd-graphics",
                "firmware-misc-nonfree",
                "firmware-iwlwifi"
            ]
        );
        assert_eq!(names.len(), 11);
        for pin in &pins {
            assert_eq!(pin.sha256.len(), 64, "{}", pin.package);
            assert!(pin.filename.starts_with("pool/") && pin.filename.ends_with(".deb"));
        }
    }

    #[test]
    fn newc_sizes_match_the_writer() {
        let mut archive = Archive::new();
        archive.add_dir("usr", DIR_MODE).unwrap();
        archive.add_file("usr/a", 0o644, vec![1; 5]).unwrap();
        archive.add_symlink("usr/bb", "a").unwrap();
        let expected = newc_entry_len("usr", 0)
            + newc_entry_len("usr/a", 5)
            + newc_entry_len("usr/bb", 1)
            + newc_entry_len(NEWC_TRAILER, 0);
        assert_eq!(archive.to_bytes(0).unwrap().len() as u64, expected);
    }

    /// A dracut-like base: merged /usr (`lib -> usr/lib`), a firmware file, gzip-compressed
    /// behind an uncompressed early archive, as dracut writes microcode.
    fn synthetic_base(path: &Path) {
        let mut early = Archive::new();
        early
            .add_file("kernel/x86/microcode/GenuineIntel.bin", 0o644, vec![9; 100])
            .unwrap();
        let mut main = Archive::new();
        main.add_dir("usr/lib/firmware", 0o755).unwrap();
        main.add_symlink("lib", "usr/lib").unwrap();
        main.add_symlink("bin", "usr/bin").unwrap();
        main.add_file(
            "usr/lib/firmware/present.bin",
            0o644,
            b"base's own".to_vec(),
        )
        .unwrap();
        main.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        let mut bytes = early.to_bytes(0).unwrap();
        bytes.extend(
            InitramfsCompression::Gzip
                .compress(&main.to_bytes(0).unwrap())
                .unwrap(),
        );
        std::fs::write(path, bytes).unwrap();
    }

    /// Writes `files` (path, bytes) under `dir`; a path ending in `@target` is a symlink.
    fn package(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        for (path, bytes) in files {
            if let Some((path, target)) = path.split_once('@') {
                std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
                symlink(target, dir.join(path)).unwrap();
            } else {
                std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
                std::fs::write(dir.join(path), bytes).unwrap();
            }
        }
        // The fixtures' cache marker sits at the top of every unpacked package.
        std::fs::write(dir.join(COMPLETE), "p 1 0\n").unwrap();
        dir.to_owned()
    }

    /// Distinct, incompressible-enough content of `len` bytes.
    fn content(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
            .collect()
    }

    #[test]
    fn grows_with_packages_until_the_target() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("base.img");
        synthetic_base(&base);
        let base_unpacked = unpacked_bytes(&base).unwrap();
        let firmware = content(1, 40_000);
        let library = content(2, 30_000);
        let late = content(3, 50_000);
        let first = package(
            &work.path().join("first"),
            &[
                ("lib/firmware/amdgpu/a.bin", &firmware[..]),
                ("lib/firmware/present.bin", &b"package's copy"[..]),
                ("usr/share/doc/first/copyright", &b"text"[..]),
                ("usr/share/man/man1/x.1.gz", &b"man"[..]),
                ("usr/lib/x86_64-linux-gnu/libbig.so.1.2", &library[..]),
                (
                    "usr/lib/x86_64-linux-gnu/libbig.so.1@libbig.so.1.2",
                    &b""[..],
                ),
            ],
        );
        let second = package(
            &work.path().join("second"),
            &[
                ("usr/share/second/a", &late[..]),
                ("usr/share/second/b", &late[..]),
                ("usr/share/second/c", &late[..]),
            ],
        );
        let third = package(
            &work.path().join("third"),
            &[("usr/share/third/x", &late[..])],
        );
        let packages = [
            ("first 1".to_owned(), first),
            ("second 2".to_owned(), second),
            ("third 3".to_owned(), third),
        ];
        // Past the first package and one file of the second: the second is added in part.
        let target = base_unpacked + 90_000;
        let out = work.path().join("grown.img");
        // Packages are pulled only as far as needed: the third is never fetched.
        let lazily = packages[..2]
            .iter()
            .cloned()
            .map(Ok)
            .chain(std::iter::once_with(|| {
                Err(anyhow::anyhow!("the third package was fetched"))
            }));
        let (unpacked, added) = grow(&base, lazily, target, &out).unwrap();
        assert_eq!(added, ["first 1", "second 2"]);
        assert!(unpacked >= target, "{unpacked} < {target}");
        // At most one file more: the last one added, its header and new parents.
        assert!(unpacked < target + late.len() as u64 + 1024, "{unpacked}");
        assert_eq!(unpacked_bytes(&out).unwrap(), unpacked);

        // The base's bytes come first, unchanged; the rest is one gzip segment.
        let bytes = std::fs::read(&out).unwrap();
        let base_bytes = std::fs::read(&base).unwrap();
        assert_eq!(bytes[..base_bytes.len()], base_bytes[..]);
        let initramfs = builder::initramfs::read(&bytes).unwrap();
        let formats: Vec<Format> = initramfs.segments.iter().map(|s| s.format).collect();
        assert_eq!(formats, [Format::Newc, Format::Gzip, Format::Gzip]);

        let entries: HashMap<&str, &builder::cpio::ReadEntry> = initramfs
            .final_entries()
            .into_iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        // lib/ went through the base's `lib -> usr/lib`; the base's own file was kept.
        assert_eq!(entries["usr/lib/firmware/amdgpu/a.bin"].data, firmware);
        assert!(!entries.contains_key("lib/firmware/amdgpu/a.bin"));
        assert!(entries["lib"].is_symlink());
        assert_eq!(entries["usr/lib/firmware/present.bin"].data, b"base's own");
        assert_eq!(
            entries["usr/lib/x86_64-linux-gnu/libbig.so.1.2"].data,
            library
        );
        let link = entries["usr/lib/x86_64-linux-gnu/libbig.so.1"];
        assert!(link.is_symlink());
        assert_eq!(link.data, b"libbig.so.1.2");
        assert_eq!(entries["usr/share/second/a"].data, late);
        for skipped in [
            "usr/share/doc/first/copyright",
            "usr/share/man/man1/x.1.gz",
            "usr/share/second/c",
            "usr/share/third/x",
            COMPLETE,
        ] {
            assert!(!entries.contains_key(skipped), "{skipped}");
        }
        // Each path once, every added path's parents as directories before it.
        let appended_count = initramfs.segments[2].entries;
        let appended = &initramfs.entries[initramfs.entries.len() - appended_count..];
        let mut seen: Vec<&str> = Vec::new();
        for entry in appended {
            assert!(!seen.contains(&entry.name.as_str()), "{} twice", entry.name);
            if let Some((parent, _)) = entry.name.rsplit_once('/') {
                let parent_entry = entries[parent];
                assert!(parent_entry.is_dir(), "{parent}");
                assert!(
                    seen.contains(&parent) || !appended.iter().any(|e| e.name == parent),
                    "{parent} after {}",
                    entry.name
                );
            }
            if entry.is_dir() {
                assert_eq!(entry.permissions(), DIR_MODE, "{}", entry.name);
            }
            seen.push(&entry.name);
        }
        for parent in ["usr/lib/firmware/amdgpu", "usr/share", "usr/share/second"] {
            assert!(entries[parent].is_dir(), "{parent}");
        }
        // No file or symlink twice (directories of the base are restated as parents).
        let names: Vec<&str> = initramfs
            .entries
            .iter()
            .filter(|e| !e.is_dir())
            .map(|e| e.name.as_str())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "a path was added twice: {names:?}"
        );

        // Same inputs, same bytes.
        let again = work.path().join("again.img");
        assert_eq!(
            grow(&base, packages.iter().cloned().map(Ok), target, &again).unwrap(),
            (unpacked, added)
        );
        assert_eq!(std::fs::read(&again).unwrap(), bytes);

        // builder turns the grown file into an erofs image (it reads concatenated segments).
        let image = work.path().join("image.erofs");
        let options = builder::erofs::ErofsOptions {
            mtime: 0,
            compression: None,
            keep_owners: false,
            pcluster_bytes: None,
        };
        let report = builder::image::image_from_initramfs(&out, &image, &options).unwrap();
        assert_eq!(report.segments.len(), 3, "{:?}", report.segments);
        assert!(image.is_file());
    }

    /// The directory holds what the appended archive holds, path for path: the same
    /// selection, the same stopping point, the same modes and symlinks.
    #[test]
    fn the_directory_holds_what_the_archive_appends() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("base.img");
        synthetic_base(&base);
        let late = content(3, 50_000);
        let first = package(
            &work.path().join("first"),
            &[
                ("lib/firmware/amdgpu/a.bin", &content(1, 40_000)[..]),
                ("lib/firmware/present.bin", &b"package's copy"[..]),
                ("usr/share/doc/first/copyright", &b"text"[..]),
                ("usr/bin/tool", &b"#!/bin/sh\n"[..]),
                ("usr/lib/libbig.so.1@libbig.so.1.2", &b""[..]),
            ],
        );
        std::fs::set_permissions(
            first.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let second = package(
            &work.path().join("second"),
            &[
                ("usr/share/second/a", &late[..]),
                ("usr/share/second/b", &late[..]),
            ],
        );
        let packages = [
            ("first 1".to_owned(), first),
            ("second 2".to_owned(), second),
        ];
        let target = unpacked_bytes(&base).unwrap() + 60_000;

        let file = work.path().join("grown.img");
        let from_file = grow(&base, packages.iter().cloned().map(Ok), target, &file).unwrap();
        let dir = work.path().join("content");
        let from_dir = grow_dir(&base, packages.iter().cloned().map(Ok), target, &dir).unwrap();
        assert_eq!(from_dir, from_file);
        assert_eq!(from_dir.1, ["first 1", "second 2"]);

        let bytes = std::fs::read(&file).unwrap();
        let initramfs = builder::initramfs::read(&bytes).unwrap();
        let appended_count = initramfs.segments.last().unwrap().entries;
        let appended = &initramfs.entries[initramfs.entries.len() - appended_count..];
        let archive_listing = builder::cpio::listing(appended);
        let dir_listing = builder::cpio::listing(&builder::listing::tree_entries(&dir).unwrap());
        assert_eq!(dir_listing, archive_listing);
        // Through the base's `lib -> usr/lib`; the second package in part; no documentation.
        assert!(dir.join("usr/lib/firmware/amdgpu/a.bin").is_file());
        assert!(!dir.join("lib").exists());
        assert!(!dir.join("usr/lib/firmware/present.bin").exists());
        assert!(!dir.join("usr/share/doc").exists());
        assert!(dir.join("usr/share/second/a").is_file());
        assert!(!dir.join("usr/share/second/b").exists());
        let mode = |path: &str| {
            std::fs::symlink_metadata(dir.join(path))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("usr/bin/tool"), 0o755);
        assert_eq!(mode("usr/share/second"), DIR_MODE);
        assert_eq!(
            std::fs::read_link(dir.join("usr/lib/libbig.so.1")).unwrap(),
            Path::new("libbig.so.1.2")
        );

        // Every time is SOURCE_DATE_EPOCH's, symlinks' own included.
        let sh = Shell::new().unwrap();
        set_times(&sh, &dir, 12345).unwrap();
        for entry in builder::listing::tree_entries(&dir).unwrap() {
            let metadata = std::fs::symlink_metadata(dir.join(&entry.name)).unwrap();
            assert_eq!(metadata.mtime(), 12345, "{}", entry.name);
        }

        // The directory is written fresh: an existing one is refused, never merged into.
        let error = grow_dir(&base, packages.iter().cloned().map(Ok), target, &dir).unwrap_err();
        assert!(format!("{error:#}").contains("creating"), "{error:#}");
    }

    /// A generator that hard-links identical files stores a duplicate's data once: the
    /// directory counts it so and runs on to the target, where the archive (which stores every
    /// copy) stops sooner. Same bytes with another mode is no duplicate.
    #[test]
    fn duplicates_count_once_in_the_directory() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("base.img");
        synthetic_base(&base);
        let same = content(5, 30_000);
        let package = package(
            &work.path().join("p"),
            &[
                ("usr/share/p/1", &same[..]),
                ("usr/share/p/2", &same[..]),
                ("usr/share/p/3", &same[..]),
                ("usr/share/p/4", &content(6, 30_000)[..]),
                ("usr/share/p/5", &content(7, 30_000)[..]),
            ],
        );
        std::fs::set_permissions(
            package.join("usr/share/p/3"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let packages = [("p 1".to_owned(), package)];
        let target = unpacked_bytes(&base).unwrap() + 65_000;
        let (stored, _) = grow(
            &base,
            packages.iter().cloned().map(Ok),
            target,
            &work.path().join("grown.img"),
        )
        .unwrap();
        let dir = work.path().join("content");
        let (linked, added) =
            grow_dir(&base, packages.iter().cloned().map(Ok), target, &dir).unwrap();
        assert_eq!(added, ["p 1"]);
        let names = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        // The archive: 1, 2 and 3 reach the target. The directory: 2 costs a header only (the
        // same bytes and mode as 1), 3 has a mode of its own, 4 reaches the target.
        let grown =
            builder::initramfs::read(&std::fs::read(work.path().join("grown.img")).unwrap())
                .unwrap();
        let in_archive: Vec<&str> = grown
            .entries
            .iter()
            .filter_map(|e| e.name.strip_prefix("usr/share/p/"))
            .collect();
        assert_eq!(in_archive, ["1", "2", "3"]);
        assert_eq!(names(&dir.join("usr/share/p")), ["1", "2", "3", "4"]);
        assert!(linked >= target && stored >= target);
        assert!(
            linked < target + 30_000 + 1024,
            "{linked}: the duplicate's data was counted"
        );
    }

    #[test]
    fn too_few_packages_is_an_error() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("base.img");
        synthetic_base(&base);
        let small = package(&work.path().join("small"), &[("usr/share/s", &b"tiny"[..])]);
        let target = unpacked_bytes(&base).unwrap() + 1_000_000;
        let error = grow(
            &base,
            [Ok(("small 1".to_owned(), small))],
            target,
            &work.path().join("out"),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("pin more"), "{error:#}");
    }

    /// The real thing: Debian's dracut initramfs for the amd64 6.12 fixture kernel grown to
    /// 128 MiB and 512 MiB (`BENCH_CONTENT_TARGETS_MIB` overrides, comma-separated).
    #[test]
    #[ignore = "downloads ~200 MB of packages"]
    fn grown_real_dracut_initramfs() {
        let sh = Shell::new().unwrap();
        let kernel =
            crate::fixtures::fetch_kernel_by_id(&sh, &root(), "debian12-6.12-amd64").unwrap();
        let base = crate::debian_tree::second_stage_initramfs(&sh, &kernel).unwrap();
        let targets =
            std::env::var("BENCH_CONTENT_TARGETS_MIB").unwrap_or_else(|_| "128".to_owned());
        for mib in targets.split(',') {
            let target = mib.trim().parse::<u64>().unwrap() << 20;
            let start = std::time::Instant::now();
            let grown = grown_initramfs(&sh, &root(), &base, target).unwrap();
            let seconds = start.elapsed().as_secs_f64();
            let compressed = std::fs::metadata(&grown.path).unwrap().len();
            eprintln!(
                "bench-content: {mib} MiB: {} bytes unpacked, {compressed} bytes compressed, {seconds:.1} s, added {:?}",
                grown.unpacked_bytes, grown.added
            );
            assert!(grown.unpacked_bytes >= target);
            // At most one file more (libLLVM, the biggest, is about 110 MB).
            assert!(grown.unpacked_bytes < target + (128 << 20));
            assert_eq!(unpacked_bytes(&grown.path).unwrap(), grown.unpacked_bytes);
            // Cached: the second call is a lookup.
            assert_eq!(grown_initramfs(&sh, &root(), &base, target).unwrap(), grown);
            // builder makes the erofs image from it, base and appended segment alike.
            let work = tempfile::tempdir().unwrap();
            let options = builder::erofs::ErofsOptions {
                mtime: 0,
                compression: None,
                keep_owners: false,
                pcluster_bytes: None,
            };
            let report = builder::image::image_from_initramfs(
                &grown.path,
                &work.path().join("image.erofs"),
                &options,
            )
            .unwrap();
            eprintln!(
                "bench-content: {mib} MiB: erofs image {} bytes; segments {:?}",
                report.erofs.bytes, report.segments
            );
        }
        // Below the base's own size: the base itself.
        let small = grown_initramfs(&sh, &root(), &base, 1).unwrap();
        assert_eq!(small.path, base);
        assert!(small.added.is_empty());
    }
}
