//! The boot benchmark's peer initramfs files: what a distribution would boot instead of
//! initoverlayfs, made by one dracut (dracut-ng 106 from bookworm-backports) from one content.
//!
//! Per content (Debian's dracut initramfs as dracut makes it, or grown to a target unpacked size
//! with the packages of `fixtures/bench-content.toml`, plus an optional directory of extra
//! files) three files, each `dracut --no-hostonly --reproducible` for the fixture kernel:
//!
//! * `gzip`: the classic initramfs, `--compress gzip` (dracut's own flags: `gzip -n -9
//!   --rsyncable`, or pigz where installed);
//! * `zstd`: the classic initramfs, `--compress zstd` (dracut's `zstd -15 -q -T0`);
//! * `squash-erofs`: `--add squash-erofs` (the `dracut-squash` package): the content in an erofs
//!   image inside a small initramfs whose `/init` mounts it. dracut leaves that outer archive
//!   uncompressed and, without `--squash-compressor`, the erofs image too: what a distribution
//!   that adds the module gets.
//!
//! In `squash-erofs` the kernel unpacks the outer archive (the image, dash, kmod, util-linux's
//! mount and switch_root with their libraries, the loop, erofs and overlay modules); its
//! `/init` is dracut's `init-squash.sh` under dash: it mounts /proc, /sys, /dev and /run,
//! loads loop, erofs and overlay, loop-mounts `/erofs-root.img` (a file of the initramfs: the
//! image stays in RAM), puts an overlay with a ramfs upper over it and runs
//! `SYSTEMD_IN_INITRD=lenient switch_root /newroot /init`: systemd, from the image.
//!
//! The three differ only in those arguments, so they carry the same files; the grown content
//! and the extra directory go in with `dracut --include <dir> /` (before dracut's squash step,
//! so inside the erofs image for `squash-erofs`). The grown content is chosen against dracut
//! 106's own initramfs (the `gzip` file made without it, the extra files in), so the target is
//! the unpacked size of the whole file; a duplicate file's data counts once, as dracut
//! hard-links duplicates.
//!
//! dracut runs in the *peer tree*: a full copy of the kernel's Debian tree (`debian_tree`)
//! with dracut, dracut-squash and zstd installed from bookworm-backports (a full copy, not hard
//! links: dpkg and apt append to their logs in place). bookworm-backports has no erofs-utils,
//! so `mkfs.erofs` is the tree's 1.5: of dracut's flags (`--exclude-path`, `-E fragments`,
//! `-z` only with `--squash-compressor`) it does not know `-E fragments` and, like every unknown
//! extended option, ignores it silently (fragments apply only to compressed files anyway). Each
//! dracut run sees the tree read-only, with its work directory, the content and the extra files
//! bound in.
//!
//! Cache layout (under [`cache_dir`], each entry filled once under its `.lock`, see
//! `debian_tree::fill_once`):
//!
//! ```text
//! bench-peers/tree-<arch>-<key>/done/{root/, packages.txt}
//! bench-peers/<variant>-<key>/done/{initrd.img, build.json, dracut.log}
//! bench-content/dir-<key>/done/{root/, grown.json}      the grown content (bench_content)
//! ```
//!
//! Same inputs, same bytes: `gzip` and `zstd` are reproducible (dracut `--reproducible`, cpio
//! `--reproducible`, `LC_ALL=C` sorting, `SOURCE_DATE_EPOCH`, file times of the content fixed).
//! `squash-erofs` is not, byte for byte: dracut's `mkfs.erofs` call passes no `-U`, so every
//! image gets a random filesystem UUID (16 bytes of the superblock, and the superblock checksum
//! over it); everything else is the same. The cache makes a built file stable across runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::bench_content::{self, PINS_TOML};
use crate::debian_tree::{Bind, ChrootMounts, DebianTree, debian_tree, fill_once, hash};
use crate::fixtures::{Kernel, RemoveDirOnDrop, cache_dir};

/// Where dracut-ng comes from: Debian 12's own dracut is 059.
const BACKPORTS: &str = "bookworm-backports";
/// What the peer tree adds: dracut-ng and its squash modules, and the compressor dracut needs
/// for `--compress zstd` (dracut-core only recommends it).
const PEER_PACKAGES: [&str; 3] = ["dracut", "dracut-squash", "zstd"];
/// The package whose version names the dracut that made the files.
const DRACUT_PACKAGE: &str = "dracut";
/// dracut-ng's first release number: 059 is the last of the old dracut.
const FIRST_DRACUT_NG: u32 = 100;
/// Bumped whenever what the peer tree is changes.
const TREE_RECIPE: &str = "v1 full copy of the debian tree, bookworm-backports source from the machine's mirror, apt-get install -t bookworm-backports --no-install-recommends, resolv.conf bound for apt only, apt-get clean";
/// Bumped whenever how a peer file is built changes.
const BUILD_RECIPE: &str = "v1 tree read-only, LC_ALL=C, --include content then extra files, times of the extra files SOURCE_DATE_EPOCH";
/// The built file's name inside its cache entry.
const OUT_NAME: &str = "initrd.img";
/// What a cache entry records beside the file.
const BUILD_MANIFEST: &str = "build.json";
/// dracut's output (warnings and errors: it runs with `--quiet`).
const DRACUT_LOG: &str = "dracut.log";
/// Where the build's work directory, the content and the extra files appear in the chroot
/// (under its scratch tmpfs, the tree itself being read-only).
const WORK_INSIDE: &str = "/tmp/peer";
const CONTENT_INSIDE: &str = "/tmp/peer-content";
/// The extra files are staged (times fixed) in the work directory under this name.
const INCLUDE_NAME: &str = "include";
/// The erofs image dracut's squash module puts at the initramfs's root
/// (`modules.d/95squash-erofs/module-setup.sh`).
pub const SQUASH_IMAGE_NAME: &str = "erofs-root.img";

/// One peer initramfs: how dracut is asked to pack the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Gzip,
    Zstd,
    SquashErofs,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Gzip, Variant::Zstd, Variant::SquashErofs];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Gzip => "gzip",
            Variant::Zstd => "zstd",
            Variant::SquashErofs => "squash-erofs",
        }
    }

    /// The dracut arguments that make this variant; the rest of the command line is shared.
    fn dracut_args(self) -> [&'static str; 2] {
        match self {
            Variant::Gzip => ["--compress", "gzip"],
            Variant::Zstd => ["--compress", "zstd"],
            Variant::SquashErofs => ["--add", "squash-erofs"],
        }
    }
}

/// The peer tree: the kernel's Debian tree with dracut-ng installed.
#[derive(Debug, Clone)]
pub struct PeerTree {
    /// The cache key (hex sha256): the Debian tree's key and [`TREE_RECIPE`].
    pub key: String,
    pub root: PathBuf,
    /// `dpkg-query -W` of the tree: `package<TAB>version<TAB>architecture` lines.
    pub packages: PathBuf,
    /// The installed dracut's version (`106-5~bpo12+1`).
    pub dracut_version: String,
}

/// The three peer initramfs files of one content, cached (read them, never change them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInitramfs {
    pub gzip: PathBuf,
    pub zstd: PathBuf,
    pub squash_erofs: PathBuf,
    /// The content's unpacked size: the sum of the `gzip` file's cpio segments.
    pub unpacked_bytes: u64,
    /// The dracut package's version (`106-5~bpo12+1`).
    pub dracut_version: String,
    /// The content packages whose files were added (`name version`), as
    /// `GrownInitramfs::added`; empty for dracut's own content.
    pub added: Vec<String>,
}

impl PeerInitramfs {
    pub fn path(&self, variant: Variant) -> &Path {
        match variant {
            Variant::Gzip => &self.gzip,
            Variant::Zstd => &self.zstd,
            Variant::SquashErofs => &self.squash_erofs,
        }
    }
}

/// What a cache entry records beside its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BuildManifest {
    variant: String,
    dracut_version: String,
    /// The file's unpacked size (for `squash-erofs` the outer archive's, image included).
    unpacked_bytes: u64,
    /// `squash-erofs` only: the erofs image's size.
    squash_image_bytes: Option<u64>,
}

/// The peer initramfs files for `kernel`: dracut's own content (`target_bytes` None) or grown
/// to `target_bytes` unpacked with the packages of `fixtures/bench-content.toml` (`root` is the
/// project root), `include`'s files added at the initramfs's root in either case. Built in the
/// [`peer_tree`], or found in the cache.
pub fn peer_initramfs(
    sh: &Shell,
    root: &Path,
    kernel: &Kernel,
    target_bytes: Option<u64>,
    include: Option<&Path>,
) -> Result<PeerInitramfs> {
    let (plan, base) = plan(sh, root, kernel, target_bytes, include)?;
    let gzip = match plan.content {
        Some(_) => build_cached(sh, &plan.inputs(Variant::Gzip))?,
        None => base,
    };
    let zstd = build_cached(sh, &plan.inputs(Variant::Zstd))?;
    let squash_erofs = build_cached(sh, &plan.inputs(Variant::SquashErofs))?;
    Ok(PeerInitramfs {
        gzip: gzip.path,
        zstd: zstd.path,
        squash_erofs: squash_erofs.path,
        unpacked_bytes: gzip.manifest.unpacked_bytes,
        dracut_version: plan.tree.dracut_version,
        added: plan.content.map(|c| c.added).unwrap_or_default(),
    })
}

/// What the peer files of one content are built from.
struct Plan {
    tree: PeerTree,
    release: String,
    /// Set with `content` only.
    target_bytes: Option<u64>,
    /// The pins file's text with `content`, else empty.
    pins_text: String,
    content: Option<bench_content::GrownContent>,
    include: Option<PathBuf>,
    include_hash: Option<String>,
    epoch: u64,
}

impl Plan {
    fn inputs(&self, variant: Variant) -> BuildInputs<'_> {
        BuildInputs {
            tree: &self.tree,
            release: &self.release,
            variant,
            target_bytes: self.target_bytes,
            pins_text: &self.pins_text,
            content: self.content.as_ref().map(|c| c.dir.as_path()),
            include: self.include.as_deref(),
            include_hash: self.include_hash.as_deref(),
            epoch: self.epoch,
        }
    }
}

/// The plan of one content's peer files, and the `gzip` file of dracut's own content (with
/// `include`'s files), which the grown content is chosen against.
fn plan(
    sh: &Shell,
    root: &Path,
    kernel: &Kernel,
    target_bytes: Option<u64>,
    include: Option<&Path>,
) -> Result<(Plan, Built)> {
    let mut plan = Plan {
        tree: peer_tree(sh, kernel)?,
        release: kernel.release.clone(),
        target_bytes: None,
        pins_text: String::new(),
        content: None,
        include: include.map(Path::to_owned),
        include_hash: include.map(dir_hash).transpose()?,
        epoch: builder::source_date_epoch()?,
    };
    let base = build_cached(sh, &plan.inputs(Variant::Gzip))?;
    if let Some(target) = target_bytes {
        plan.content = bench_content::grown_content_dir(sh, root, &base.path, target)?;
        if plan.content.is_some() {
            let pins = root.join(PINS_TOML);
            plan.pins_text = std::fs::read_to_string(&pins)
                .with_context(|| format!("reading {}", pins.display()))?;
            plan.target_bytes = Some(target);
        }
    }
    Ok((plan, base))
}

/// The peer tree for `kernel`, built or found in the cache.
pub fn peer_tree(sh: &Shell, kernel: &Kernel) -> Result<PeerTree> {
    let base = debian_tree(sh, kernel)?;
    let key = tree_key(&base.key);
    let entry =
        cache_dir()
            .join("bench-peers")
            .join(format!("tree-{}-{}", base.arch.debian(), &key[..16]));
    let done = fill_once(&entry, |work| build_tree(sh, &base, work))?;
    let packages = done.join("packages.txt");
    let listing = std::fs::read_to_string(&packages)
        .with_context(|| format!("reading {}", packages.display()))?;
    Ok(PeerTree {
        key,
        root: done.join("root"),
        dracut_version: dracut_version(&listing).with_context(|| packages.display().to_string())?,
        packages,
    })
}

fn tree_key(debian_tree_key: &str) -> String {
    hash(&[
        TREE_RECIPE,
        debian_tree_key,
        BACKPORTS,
        &PEER_PACKAGES.join(" "),
    ])
}

/// The apt source line of the backports suite, on the machine's own mirror.
fn backports_source(mirror: &str) -> String {
    format!("deb {mirror} {BACKPORTS} main\n")
}

/// The version of [`DRACUT_PACKAGE`] in a `dpkg-query` listing, refused unless it is dracut-ng.
fn dracut_version(listing: &str) -> Result<String> {
    let version = listing
        .lines()
        .find_map(|line| {
            let mut fields = line.split('\t');
            (fields.next() == Some(DRACUT_PACKAGE)).then(|| fields.next())?
        })
        .with_context(|| format!("no {DRACUT_PACKAGE} package installed"))?;
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .with_context(|| format!("{DRACUT_PACKAGE} {version:?}: no release number"))?;
    if major < FIRST_DRACUT_NG {
        bail!(
            "{DRACUT_PACKAGE} {version} is installed, not dracut-ng ({FIRST_DRACUT_NG} or later) \
             from {BACKPORTS}: does the machine's mirror carry {BACKPORTS}?"
        );
    }
    Ok(version.to_owned())
}

/// A full copy of the Debian tree, the backports source added, [`PEER_PACKAGES`] installed
/// from it, the package list recorded.
fn build_tree(sh: &Shell, base: &DebianTree, work: &Path) -> Result<()> {
    let (from, root) = (&base.root, work.join("root"));
    eprintln!(
        "bench-peers: copying {} and installing {} from {BACKPORTS}",
        from.display(),
        PEER_PACKAGES.join(", ")
    );
    let started = std::time::Instant::now();
    cmd!(sh, "cp -a --reflink=auto {from} {root}")
        .quiet()
        .run()
        .with_context(|| format!("copying {} to {}", from.display(), root.display()))?;
    let mirror = crate::provision::debian_mirror()?;
    let source = root.join(format!("etc/apt/sources.list.d/{BACKPORTS}.list"));
    std::fs::write(&source, backports_source(&mirror))
        .with_context(|| format!("writing {}", source.display()))?;
    // apt needs name resolution, which the tree lacks on purpose (it would make the tree depend
    // on the build machine): the host's, bound over an empty file for this step only.
    let resolv = root.join("etc/resolv.conf");
    std::fs::write(&resolv, "").with_context(|| format!("creating {}", resolv.display()))?;
    let installed = crate::debian_tree::in_chroot_with(
        sh,
        &root,
        &format!(
            "set -e; exec > /dev/null; apt-get update -q; \
             DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends -t {BACKPORTS} {}; \
             apt-get clean",
            PEER_PACKAGES.join(" ")
        ),
        &ChrootMounts {
            binds: vec![Bind {
                host: "/etc/resolv.conf".into(),
                inside: "/etc/resolv.conf".into(),
                writable: false,
            }],
            ..ChrootMounts::default()
        },
    );
    std::fs::remove_file(&resolv).with_context(|| format!("removing {}", resolv.display()))?;
    installed.with_context(|| {
        format!(
            "installing {} from {BACKPORTS} in {} (needs root and the machine's Debian mirror)",
            PEER_PACKAGES.join(", "),
            root.display()
        )
    })?;
    // The real root's /boot is a partition of its own, as in the Debian tree: whatever a
    // package's hook left there goes.
    for entry in std::fs::read_dir(root.join("boot"))? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let format = "${binary:Package}\t${Version}\t${Architecture}\n";
    let packages = cmd!(sh, "chroot {root} dpkg-query -W -f {format}")
        .quiet()
        .read()
        .context("listing the peer tree's packages")?;
    let version = dracut_version(&packages)?;
    std::fs::write(work.join("packages.txt"), packages + "\n")?;
    eprintln!(
        "bench-peers: dracut {version} installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything one peer file is made from.
#[derive(Debug, Clone, Copy)]
struct BuildInputs<'a> {
    tree: &'a PeerTree,
    release: &'a str,
    variant: Variant,
    /// The grown content's target (None: dracut's own content).
    target_bytes: Option<u64>,
    /// The pins file's text when there is grown content, else empty.
    pins_text: &'a str,
    /// The grown content's directory (its path names its cache key).
    content: Option<&'a Path>,
    include: Option<&'a Path>,
    /// [`dir_hash`] of `include`.
    include_hash: Option<&'a str>,
    epoch: u64,
}

/// A built peer file and its manifest.
struct Built {
    path: PathBuf,
    manifest: BuildManifest,
}

/// One peer file's cache key: everything that changes its bytes.
fn build_key(inputs: &BuildInputs) -> String {
    let text = |path: Option<&Path>| path.map_or("none".into(), |p| p.display().to_string());
    hash(&[
        BUILD_RECIPE,
        &inputs.tree.key,
        inputs.release,
        inputs.variant.name(),
        &inputs
            .target_bytes
            .map_or("none".into(), |bytes| bytes.to_string()),
        inputs.pins_text,
        &text(inputs.content),
        inputs.include_hash.unwrap_or("none"),
        &inputs.epoch.to_string(),
    ])
}

fn build_cached(sh: &Shell, inputs: &BuildInputs) -> Result<Built> {
    let key = build_key(inputs);
    let entry =
        cache_dir()
            .join("bench-peers")
            .join(format!("{}-{}", inputs.variant.name(), &key[..16]));
    let done = fill_once(&entry, |work| build(sh, inputs, work).map(drop))?;
    let manifest_path = done.join(BUILD_MANIFEST);
    let manifest = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    Ok(Built {
        path: done.join(OUT_NAME),
        manifest,
    })
}

/// Runs dracut in the peer tree (read-only) for `inputs`, into `work`: `initrd.img`,
/// `build.json`, `dracut.log`.
fn build(sh: &Shell, inputs: &BuildInputs, work: &Path) -> Result<BuildManifest> {
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let _scratch = RemoveDirOnDrop(scratch);
    let mut binds = vec![Bind {
        host: work.to_owned(),
        inside: WORK_INSIDE.into(),
        writable: true,
    }];
    let mut includes = Vec::new();
    if let Some(content) = inputs.content {
        binds.push(Bind {
            host: content.to_owned(),
            inside: CONTENT_INSIDE.into(),
            writable: false,
        });
        includes.push(CONTENT_INSIDE.to_owned());
    }
    let _staged = match inputs.include {
        Some(include) => {
            // A copy with fixed times: dracut keeps the times of what it includes.
            let staged = work.join(INCLUDE_NAME);
            cmd!(sh, "cp -a {include} {staged}")
                .quiet()
                .run()
                .with_context(|| {
                    format!("copying {} to {}", include.display(), staged.display())
                })?;
            bench_content::set_times(sh, &staged, inputs.epoch)?;
            includes.push(format!("{WORK_INSIDE}/{INCLUDE_NAME}"));
            Some(RemoveDirOnDrop(staged))
        }
        None => None,
    };
    let argv = dracut_argv(
        inputs.variant,
        inputs.release,
        &format!("{WORK_INSIDE}/{OUT_NAME}"),
        &format!("{WORK_INSIDE}/scratch"),
        &includes,
        inputs.epoch,
    );
    let command = format!("{} > {WORK_INSIDE}/{DRACUT_LOG} 2>&1", shell_line(&argv)?);
    eprintln!(
        "bench-peers: dracut {} ({}{}{})",
        inputs.tree.dracut_version,
        inputs.variant.name(),
        inputs
            .target_bytes
            .map(|t| format!(", grown to {t} bytes"))
            .unwrap_or_default(),
        if inputs.include.is_some() {
            ", extra files"
        } else {
            ""
        }
    );
    let started = std::time::Instant::now();
    let ran = crate::debian_tree::in_chroot_with(
        sh,
        &inputs.tree.root,
        &command,
        &ChrootMounts {
            read_only: true,
            scratch: true,
            binds,
        },
    );
    let log = std::fs::read_to_string(work.join(DRACUT_LOG)).unwrap_or_default();
    if let Err(error) = ran {
        bail!(
            "dracut ({}) failed in {}: {error:#}\n{}",
            inputs.variant.name(),
            inputs.tree.root.display(),
            log.trim_end()
        );
    }
    // systemd-sysusers, which dracut runs on the initramfs, reports every user and group it
    // creates even under --quiet: the log keeps those lines, the terminal gets the rest.
    for line in log.lines().filter(|l| !l.starts_with("Creating ")) {
        eprintln!("bench-peers: dracut: {line}");
    }
    let out = work.join(OUT_NAME);
    let (unpacked_bytes, squash_image_bytes) = measure(inputs.variant, &out)?;
    let manifest = BuildManifest {
        variant: inputs.variant.name().to_owned(),
        dracut_version: inputs.tree.dracut_version.clone(),
        unpacked_bytes,
        squash_image_bytes,
    };
    std::fs::write(
        work.join(BUILD_MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .with_context(|| format!("writing {BUILD_MANIFEST} in {}", work.display()))?;
    eprintln!(
        "bench-peers: {} in {:.0} s: {} bytes, {unpacked_bytes} unpacked",
        inputs.variant.name(),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&out)
            .with_context(|| format!("dracut left no {}", out.display()))?
            .len(),
    );
    Ok(manifest)
}

/// The file's unpacked size and, for `squash-erofs`, its erofs image's size (refused if
/// missing: then the file is not what the variant promises).
fn measure(variant: Variant, file: &Path) -> Result<(u64, Option<u64>)> {
    let unpacked = bench_content::unpacked_bytes(file)?;
    if variant != Variant::SquashErofs {
        return Ok((unpacked, None));
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let initramfs = builder::initramfs::read_with_limit(&bytes, builder::initramfs::MAX_UNPACKED)
        .with_context(|| format!("reading {}", file.display()))?;
    let image = initramfs
        .final_entries()
        .into_iter()
        .find(|entry| entry.name.trim_start_matches("./") == SQUASH_IMAGE_NAME)
        .with_context(|| {
            format!(
                "{}: no {SQUASH_IMAGE_NAME} (did dracut's squash-erofs module run?)",
                file.display()
            )
        })?;
    Ok((unpacked, Some(image.data.len() as u64)))
}

/// dracut's command line for `variant`: the shared flags, the includes (each at `/`), the
/// variant's two arguments, the kernel and the output file.
fn dracut_argv(
    variant: Variant,
    release: &str,
    out: &str,
    tmpdir: &str,
    includes: &[String],
    epoch: u64,
) -> Vec<String> {
    let mut argv: Vec<String> = [
        "env",
        "LC_ALL=C",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        &format!("SOURCE_DATE_EPOCH={epoch}"),
        "dracut",
        "--quiet",
        "--no-hostonly",
        "--reproducible",
        "--force",
        "--tmpdir",
        tmpdir,
    ]
    .map(str::to_owned)
    .to_vec();
    for include in includes {
        argv.extend(["--include".to_owned(), include.clone(), "/".to_owned()]);
    }
    argv.extend(variant.dracut_args().map(str::to_owned));
    argv.extend(["--kver".to_owned(), release.to_owned(), out.to_owned()]);
    argv
}

/// `argv` as one shell line; every word must be plain (no quoting needed).
fn shell_line(argv: &[String]) -> Result<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+@:/=-~,".contains(c);
    if let Some(word) = argv.iter().find(|w| w.is_empty() || !w.chars().all(plain)) {
        bail!("{word:?}: not a plain word for the dracut command line");
    }
    Ok(argv.join(" "))
}

/// A content hash of the directory `dir`: every entry's path, type, mode, owner and content
/// (or symlink target), in sorted order. Times are left out: the build fixes them.
pub fn dir_hash(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_tree(dir, "", &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn hash_tree(dir: &Path, prefix: &str, hasher: &mut Sha256) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let relative = format!("{prefix}/{}", name.to_string_lossy());
        let metadata = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        hasher.update(relative.as_bytes());
        hasher.update(b"\0");
        hasher.update(
            format!(
                "{:o} {} {}\0",
                metadata.permissions().mode(),
                metadata.uid(),
                metadata.gid()
            )
            .as_bytes(),
        );
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            hash_tree(&path, &relative, hasher)?;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(&path)
                .with_context(|| format!("reading the symlink {}", path.display()))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if file_type.is_file() {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            hasher.update(metadata.len().to_le_bytes());
            std::io::copy(&mut file, hasher)
                .with_context(|| format!("reading {}", path.display()))?;
        } else {
            bail!(
                "{}: only files, directories and symlinks can be included",
                path.display()
            );
        }
        hasher.update(b"\0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where an erofs image's superblock starts (`EROFS_SUPER_OFFSET`, the kernel's
    /// fs/erofs/erofs_fs.h).
    const EROFS_SUPER_OFFSET: usize = 1024;
    /// `struct erofs_super_block`'s `checksum` (crc32c of the superblock), bytes 4..8 of it
    /// (fs/erofs/erofs_fs.h).
    const EROFS_SB_CHECKSUM: std::ops::Range<usize> = 4..8;
    /// `struct erofs_super_block`'s `uuid[16]`, bytes 48..64 of it (fs/erofs/erofs_fs.h).
    const EROFS_SB_UUID: std::ops::Range<usize> = 48..64;

    /// What differs between two builds of `squash-erofs` beyond what `mkfs.erofs` makes up on
    /// every run (the image's UUID and the superblock checksum over it): the names of the entries
    /// that differ, empty when the two are the same build.
    fn squash_differences(a: &[u8], b: &[u8]) -> Result<Vec<String>> {
        let read = |bytes| {
            builder::initramfs::read_with_limit(bytes, builder::initramfs::MAX_UNPACKED)
                .context("reading a squash-erofs initramfs")
        };
        let (a, b) = (read(a)?, read(b)?);
        let mut differences = Vec::new();
        if a.entries.len() != b.entries.len() {
            differences.push(format!(
                "{} entries against {}",
                a.entries.len(),
                b.entries.len()
            ));
        }
        for (a, b) in a.entries.iter().zip(&b.entries) {
            let same = if a.name.trim_start_matches("./") == SQUASH_IMAGE_NAME && a.name == b.name {
                let header = |e: &builder::cpio::ReadEntry| builder::cpio::ReadEntry {
                    data: Vec::new(),
                    ..e.clone()
                };
                header(a) == header(b) && without_erofs_uuid(&a.data) == without_erofs_uuid(&b.data)
            } else {
                a == b
            };
            if !same {
                differences.push(a.name.clone());
            }
        }
        Ok(differences)
    }

    /// An erofs image with its superblock's UUID and checksum zeroed.
    fn without_erofs_uuid(image: &[u8]) -> Vec<u8> {
        let mut image = image.to_vec();
        for range in [EROFS_SB_CHECKSUM, EROFS_SB_UUID] {
            let range = EROFS_SUPER_OFFSET + range.start..EROFS_SUPER_OFFSET + range.end;
            if let Some(bytes) = image.get_mut(range) {
                bytes.fill(0);
            }
        }
        image
    }

    fn check_argv(variant: Variant, includes: &[&str], expected_tail: &str) {
        let includes: Vec<String> = includes.iter().map(|s| s.to_string()).collect();
        let argv = dracut_argv(
            variant,
            "6.12.95+deb12-amd64",
            "/tmp/peer/initrd.img",
            "/tmp/peer/scratch",
            &includes,
            0,
        );
        let line = shell_line(&argv).unwrap();
        let shared = "env LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin SOURCE_DATE_EPOCH=0 \
                      dracut --quiet --no-hostonly --reproducible --force --tmpdir /tmp/peer/scratch";
        assert_eq!(line, format!("{shared} {expected_tail}"));
    }

    #[test]
    fn dracut_argv_per_variant() {
        let kver = "--kver 6.12.95+deb12-amd64 /tmp/peer/initrd.img";
        check_argv(Variant::Gzip, &[], &format!("--compress gzip {kver}"));
        check_argv(Variant::Zstd, &[], &format!("--compress zstd {kver}"));
        check_argv(
            Variant::SquashErofs,
            &[],
            &format!("--add squash-erofs {kver}"),
        );
        check_argv(
            Variant::SquashErofs,
            &["/tmp/peer-content", "/tmp/peer/include"],
            &format!(
                "--include /tmp/peer-content / --include /tmp/peer/include / --add squash-erofs {kver}"
            ),
        );
        // The variants differ in their two arguments only.
        let argv = |variant| {
            dracut_argv(variant, "k", "/o", "/t", &["/c".to_owned()], 0)
                .into_iter()
                .filter(|w| !variant.dracut_args().contains(&w.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(argv(Variant::Gzip), argv(Variant::Zstd));
        assert_eq!(argv(Variant::Gzip), argv(Variant::SquashErofs));
    }

    #[test]
    fn a_word_that_needs_quoting_is_refused() {
        for word in ["a b", "$(x)", "a;b", "'", ""] {
            let error = shell_line(&["dracut".to_owned(), word.to_owned()]).unwrap_err();
            assert!(error.to_string().contains("not a plain word"), "{error}");
        }
    }

    fn tree() -> PeerTree {
        PeerTree {
            key: tree_key("debian"),
            root: "/c/root".into(),
            packages: "/c/packages.txt".into(),
            dracut_version: "106-5~bpo12+1".into(),
        }
    }

    #[test]
    fn the_build_key_follows_every_input() {
        let tree = tree();
        let other_tree = PeerTree {
            key: tree_key("other debian"),
            ..tree.clone()
        };
        let base = BuildInputs {
            tree: &tree,
            release: "6.12.95+deb12-amd64",
            variant: Variant::Gzip,
            target_bytes: Some(512 << 20),
            pins_text: "[[deb]]",
            content: Some(Path::new("/c/bench-content/dir-1/done/root")),
            include: Some(Path::new("/x/include")),
            include_hash: Some("aa"),
            epoch: 0,
        };
        let key = build_key(&base);
        assert_eq!(key, build_key(&base), "a key is a function");
        let changed = [
            BuildInputs {
                tree: &other_tree,
                ..base
            },
            BuildInputs {
                release: "6.1.0-40-amd64",
                ..base
            },
            BuildInputs {
                variant: Variant::Zstd,
                ..base
            },
            BuildInputs {
                variant: Variant::SquashErofs,
                ..base
            },
            BuildInputs {
                target_bytes: Some(128 << 20),
                ..base
            },
            BuildInputs {
                target_bytes: None,
                ..base
            },
            BuildInputs {
                pins_text: "[[deb]] ",
                ..base
            },
            BuildInputs {
                content: Some(Path::new("/c/bench-content/dir-2/done/root")),
                ..base
            },
            BuildInputs {
                include_hash: Some("ab"),
                ..base
            },
            BuildInputs {
                include_hash: None,
                ..base
            },
            BuildInputs { epoch: 1, ..base },
        ];
        for other in changed {
            assert_ne!(key, build_key(&other), "{other:?}");
        }
        // Where the extra files sit is not what they are: only their hash counts.
        assert_eq!(
            key,
            build_key(&BuildInputs {
                include: Some(Path::new("/elsewhere")),
                ..base
            })
        );
    }

    #[test]
    fn the_tree_key_follows_the_debian_tree() {
        assert_eq!(tree_key("a"), tree_key("a"));
        assert_ne!(tree_key("a"), tree_key("b"));
        assert_ne!(tree_key("a"), "a");
    }

    #[test]
    fn backports_on_the_machines_mirror() {
        assert_eq!(
            backports_source("http://mirror.example/debian"),
            "deb http://mirror.example/debian bookworm-backports main\n"
        );
    }

    #[test]
    fn the_dracut_version_comes_from_the_package_list() {
        let check =
            |listing: &str, expected: Result<&str, &str>| match (dracut_version(listing), expected)
            {
                (Ok(version), Ok(expected)) => assert_eq!(version, expected),
                (Err(error), Err(expected)) => {
                    assert!(format!("{error:#}").contains(expected), "{error:#}")
                }
                (got, expected) => panic!("{listing:?}: {got:?}, expected {expected:?}"),
            };
        check(
            "dash\t0.5.12-2\tamd64\ndracut\t106-5~bpo12+1\tall\ndracut-core\t106-5~bpo12+1\tamd64\n",
            Ok("106-5~bpo12+1"),
        );
        check(
            "dracut\t059-4\tall\n",
            Err("dracut 059-4 is installed, not dracut-ng"),
        );
        check(
            "dracut-core\t106-5~bpo12+1\tamd64\n",
            Err("no dracut package"),
        );
        check("dracut\t\tall\n", Err("no release number"));
    }

    #[test]
    fn squash_builds_may_differ_in_the_erofs_uuid_only() {
        let image = |uuid: u8, checksum: u8, data: u8| {
            let mut image = vec![data; 4096];
            let sb = EROFS_SUPER_OFFSET;
            image[sb + EROFS_SB_UUID.start..sb + EROFS_SB_UUID.end].fill(uuid);
            image[sb + EROFS_SB_CHECKSUM.start..sb + EROFS_SB_CHECKSUM.end].fill(checksum);
            image
        };
        let initramfs = |image: Vec<u8>, init: &[u8]| {
            let mut archive = builder::cpio::Archive::new();
            archive.add_file("init", 0o755, init.to_vec()).unwrap();
            archive.add_file(SQUASH_IMAGE_NAME, 0o644, image).unwrap();
            archive.to_bytes(0).unwrap()
        };
        let check = |b: Vec<u8>, expected: &[&str]| {
            let a = initramfs(image(1, 1, 0), b"#!/bin/sh\n");
            assert_eq!(squash_differences(&a, &b).unwrap(), expected);
        };
        check(initramfs(image(1, 1, 0), b"#!/bin/sh\n"), &[]);
        check(initramfs(image(2, 9, 0), b"#!/bin/sh\n"), &[]);
        check(
            initramfs(image(1, 1, 7), b"#!/bin/sh\n"),
            &[SQUASH_IMAGE_NAME],
        );
        check(initramfs(image(2, 9, 0), b"#!/bin/bash\n"), &["init"]);
    }

    #[test]
    fn the_include_hash_follows_content_not_times() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("include");
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("usr/bin/probe"), b"\x7fELF").unwrap();
        std::os::unix::fs::symlink("probe", dir.join("usr/bin/probe-link")).unwrap();
        let base = dir_hash(&dir).unwrap();
        assert_eq!(base, dir_hash(&dir).unwrap());

        let sh = Shell::new().unwrap();
        bench_content::set_times(&sh, &dir, 42).unwrap();
        assert_eq!(base, dir_hash(&dir).unwrap(), "times do not count");

        type Change<'a> = (&'a str, &'a dyn Fn(&Path));
        let changes: [Change; 5] = [
            ("content", &|d| {
                std::fs::write(d.join("usr/bin/probe"), b"\x7fELG").unwrap()
            }),
            ("mode", &|d| {
                std::fs::set_permissions(
                    d.join("usr/bin/probe"),
                    std::fs::Permissions::from_mode(0o755),
                )
                .unwrap()
            }),
            ("name", &|d| {
                std::fs::rename(d.join("usr/bin/probe"), d.join("usr/bin/probf")).unwrap()
            }),
            ("symlink target", &|d| {
                std::fs::remove_file(d.join("usr/bin/probe-link")).unwrap();
                std::os::unix::fs::symlink("probf", d.join("usr/bin/probe-link")).unwrap();
            }),
            ("an empty directory", &|d| {
                std::fs::create_dir(d.join("etc")).unwrap()
            }),
        ];
        for (what, change) in changes {
            let copy = work.path().join(what.replace(' ', "-"));
            cmd!(sh, "cp -a {dir} {copy}").run().unwrap();
            assert_eq!(base, dir_hash(&copy).unwrap(), "{what}: the copy");
            change(&copy);
            assert_ne!(base, dir_hash(&copy).unwrap(), "{what}");
        }
    }

    /// Where dracut records the command line it was run with, in every initramfs it makes.
    const DRACUT_BUILD_PARAMETERS: &str = "usr/lib/dracut/build-parameter.txt";

    fn project_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The sorted listing lines of `path` (an initramfs, an erofs image or a directory).
    fn listing(path: &Path) -> Vec<String> {
        let (_, text) = builder::listing::list_path(path).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// The path a listing line names (its last field), without the leading `/`.
    fn listed_path(line: &str) -> &str {
        line.split_whitespace()
            .last()
            .unwrap_or_default()
            .trim_start_matches('/')
    }

    /// The real thing: the peer files for the amd64 6.12 fixture kernel, dracut's own content
    /// and grown (`BENCH_PEERS_SIZES`, comma-separated `dracut` or MiB, default `dracut,512`),
    /// with a directory of extra files; the three carry the same files, the extra ones inside
    /// the erofs image for squash-erofs; a second build of each makes the same bytes (squash:
    /// but the erofs UUID).
    #[test]
    #[ignore = "needs root, the machine's Debian mirror and minutes (mmdebstrap, apt, dracut)"]
    fn real_peer_initramfs() {
        let sh = Shell::new().unwrap();
        let root = project_root();
        let kernel =
            crate::fixtures::fetch_kernel_by_id(&sh, &root, "debian12-6.12-amd64").unwrap();
        let extra = tempfile::tempdir().unwrap();
        let marker = "usr/lib/bench-peers-probe/marker";
        std::fs::create_dir_all(extra.path().join("usr/lib/bench-peers-probe")).unwrap();
        std::fs::write(extra.path().join(marker), b"extra file\n").unwrap();
        let sizes = std::env::var("BENCH_PEERS_SIZES").unwrap_or_else(|_| "dracut,512".into());
        for size in sizes.split(',').map(str::trim) {
            let target = (size != "dracut").then(|| size.parse::<u64>().unwrap() << 20);
            let started = std::time::Instant::now();
            let peers = peer_initramfs(&sh, &root, &kernel, target, Some(extra.path())).unwrap();
            eprintln!(
                "bench-peers: {size}: dracut {} in {:.0} s, {} bytes unpacked, added {:?}",
                peers.dracut_version,
                started.elapsed().as_secs_f64(),
                peers.unpacked_bytes,
                peers.added
            );
            assert!(peers.dracut_version.starts_with("106"), "{peers:?}");
            for variant in Variant::ALL {
                let path = peers.path(variant);
                let manifest: BuildManifest = serde_json::from_str(
                    &std::fs::read_to_string(path.with_file_name(BUILD_MANIFEST)).unwrap(),
                )
                .unwrap();
                eprintln!(
                    "bench-peers: {size}: {}: {} bytes, {} unpacked, erofs image {:?} bytes",
                    variant.name(),
                    std::fs::metadata(path).unwrap().len(),
                    manifest.unpacked_bytes,
                    manifest.squash_image_bytes
                );
            }
            if let Some(target) = target {
                assert!(!peers.added.is_empty());
                // dracut hard-links identical files, and the content's parent directories that
                // dracut has already are not counted twice: within 1% of the target.
                let off = peers.unpacked_bytes.abs_diff(target);
                assert!(off < target / 100, "{} for {target}", peers.unpacked_bytes);
            }

            // gzip and zstd: the same files (but dracut's record of its own command line).
            let without_parameters = |lines: Vec<String>| -> Vec<String> {
                lines
                    .into_iter()
                    .filter(|l| listed_path(l) != DRACUT_BUILD_PARAMETERS)
                    .collect()
            };
            let gzip = listing(&peers.gzip);
            assert_eq!(
                without_parameters(gzip.clone()),
                without_parameters(listing(&peers.zstd))
            );
            assert!(gzip.iter().any(|l| listed_path(l) == marker));
            assert_eq!(
                bench_content::unpacked_bytes(&peers.zstd).unwrap(),
                peers.unpacked_bytes
            );

            // squash-erofs: a small loader around the erofs image, which holds the content.
            let outer = listing(&peers.squash_erofs);
            assert!(!outer.iter().any(|l| listed_path(l) == marker), "{outer:?}");
            let bytes = std::fs::read(&peers.squash_erofs).unwrap();
            let initramfs = builder::initramfs::read(&bytes).unwrap();
            let entries = initramfs.final_entries();
            let init = entries.iter().find(|e| e.name == "init").unwrap();
            eprintln!(
                "bench-peers: {size}: squash-erofs /init:\n{}",
                String::from_utf8_lossy(&init.data)
            );
            eprintln!(
                "bench-peers: {size}: squash-erofs outer archive: {} entries, segments {:?}",
                entries.len(),
                initramfs
                    .segments
                    .iter()
                    .map(|s| s.format.name())
                    .collect::<Vec<_>>()
            );
            let image = entries
                .iter()
                .find(|e| e.name == SQUASH_IMAGE_NAME)
                .unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let image_path = scratch.path().join(SQUASH_IMAGE_NAME);
            std::fs::write(&image_path, &image.data).unwrap();
            let inside = listing(&image_path);
            assert!(inside.iter().any(|l| listed_path(l) == marker));
            let paths = |lines: &[String]| -> std::collections::BTreeSet<String> {
                lines.iter().map(|l| listed_path(l).to_owned()).collect()
            };
            let (classic, squashed) = (paths(&gzip), paths(&inside));
            let missing: Vec<_> = classic.difference(&squashed).collect();
            let extra_in_image: Vec<_> = squashed.difference(&classic).collect();
            eprintln!(
                "bench-peers: {size}: classic paths not in the erofs image: {missing:?}; \
                 image paths not in the classic: {extra_in_image:?}"
            );
            assert!(missing.len() < 10, "{missing:?}");

            // Same inputs, same bytes: each variant again, into a scratch directory.
            let (plan, _) = plan(&sh, &root, &kernel, target, Some(extra.path())).unwrap();
            for variant in Variant::ALL {
                let again = tempfile::tempdir_in(cache_dir()).unwrap();
                build(&sh, &plan.inputs(variant), again.path()).unwrap();
                let first = std::fs::read(peers.path(variant)).unwrap();
                let second = std::fs::read(again.path().join(OUT_NAME)).unwrap();
                if variant == Variant::SquashErofs {
                    assert_eq!(
                        squash_differences(&first, &second).unwrap(),
                        [] as [&str; 0]
                    );
                    eprintln!(
                        "bench-peers: {size}: squash-erofs rebuilt: identical bytes: {}",
                        first == second
                    );
                } else {
                    assert!(
                        first == second,
                        "{}: a second build differs",
                        variant.name()
                    );
                }
            }
            // Cached: the second call is a lookup.
            assert_eq!(
                peer_initramfs(&sh, &root, &kernel, target, Some(extra.path())).unwrap(),
                peers
            );
        }
    }
}
