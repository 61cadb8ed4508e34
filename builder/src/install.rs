//! `builder install` and `builder uninstall`: put initoverlayfs on a real machine (or on a tree
//! with `--root`) the way each distribution boots, keep the classic initramfs as a fallback,
//! and undo all of it with one command.
//!
//! Invariant: at every moment of an install, the path the bootloader loads
//! ([`BootLayout::initramfs`]) holds a complete, bootable initramfs: the classic one until the
//! very last rename, the mini initramfs after it, and then the image it needs is already in
//! place. So a failure (full disk, missing tool, power cut) at any step leaves a bootable
//! machine. The order that gives this:
//!
//! 1. check the free space of /boot;
//! 2. build the erofs image into a temporary file in /boot, fsync, rename;
//! 3. build the mini initramfs into a temporary file in /boot, fsync (not yet renamed);
//! 4. link (or copy) the classic initramfs to its fallback name;
//! 5. write the fallback boot entry where the boot loader reads BLS entries;
//! 6. rename the mini initramfs over the classic one;
//! 7. on systemd-boot, count the kernel's entry (`<entry>+<tries>.conf`, see [`crate::bls`]).
//!
//! The fallback entry exists before anything can name it: the mini initramfs's `emergency
//! fallback` (systemd-boot only) reboots into it once after a FATAL line.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bls::{BootLoader, Counter, EntryName};
use crate::compress::InitramfsCompression;
use crate::erofs::ErofsOptions;
use crate::hooks::Written;
use crate::install_conf::{INSTALL_CONF, InstallConfError, KeptOptions};
use crate::kernel_config::{KernelConfig, KernelConfigError};
use crate::mini_initramfs::{MiniInitramfs, MiniInitramfsError};
use crate::modules::KernelModules;
use crate::presets::{StoragePreset, preset_modules};
use crate::replace::{ReplaceError, replace_file, replace_with};

/// Where storage-init is installed on the target, unless `--storage-init` says otherwise.
pub const DEFAULT_STORAGE_INIT: &str = "/usr/lib/initoverlayfs/storage-init";
/// Where the hooks expect this program on the target, unless `--builder-path` says otherwise
/// or it runs from a system program directory ([`default_builder_path`]): the README's
/// hand-installed path.
pub const DEFAULT_BUILDER_PATH: &str = "/usr/local/sbin/initoverlayfs-builder";
/// The directories a program installed on the machine runs from (`/sbin` and `/bin` for
/// systems whose /usr is not merged).
const SYSTEM_PROGRAM_DIRS: [&str; 6] = [
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/sbin",
    "/bin",
];
/// What Linux appends to `/proc/self/exe` once the running file is unlinked, as a package
/// upgrade does when it replaces the program: the new one is at the same path.
const DELETED_SUFFIX: &str = " (deleted)";

/// Where the hooks call this program when `--builder-path` is not given: `running` (the path
/// it runs from, `std::env::current_exe()`) when that is a plain file name in a system program
/// directory, so the packaged `/usr/sbin/initoverlayfs` and the hand-installed
/// `/usr/local/sbin/initoverlayfs-builder` each write hooks that call themselves; else (a build
/// tree, `cargo run`) [`DEFAULT_BUILDER_PATH`]. The name must need no shell quoting: the hooks
/// hold it in double quotes.
pub fn default_builder_path(running: Option<&Path>) -> String {
    let installed = running
        .and_then(Path::to_str)
        .map(|path| path.strip_suffix(DELETED_SUFFIX).unwrap_or(path))
        .and_then(|path| {
            let (dir, name) = path.rsplit_once('/')?;
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
            (plain && SYSTEM_PROGRAM_DIRS.contains(&dir)).then(|| path.to_owned())
        });
    installed.unwrap_or_else(|| DEFAULT_BUILDER_PATH.to_owned())
}
/// Room kept free on /boot beyond what the files need: a full /boot breaks the next kernel
/// update.
const SPARE_BYTES: u64 = 8 << 20;

/// How a distribution lays out what the bootloader loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Fedora, CentOS, RHEL: `/boot/initramfs-<kver>.img`, BLS entries in
    /// `/boot/loader/entries` (GRUB's blscfg), kernel-install plugins.
    Fedora,
    /// Debian, Ubuntu: `/boot/initrd.img-<kver>`, `/etc/kernel/post{inst,rm}.d` hooks and
    /// `/etc/initramfs/post-update.d`.
    Debian,
    /// kernel-install's `layout=bls` (systemd-boot): `$BOOT/<entry-token>/<kver>/initrd`.
    Bls,
}

impl LayoutKind {
    pub const NAMES: &'static str = "fedora, debian, bls";

    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Fedora => "fedora",
            LayoutKind::Debian => "debian",
            LayoutKind::Bls => "bls",
        }
    }
}

impl std::str::FromStr for LayoutKind {
    type Err = String;

    fn from_str(name: &str) -> Result<LayoutKind, String> {
        [LayoutKind::Fedora, LayoutKind::Debian, LayoutKind::Bls]
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown layout {name:?}: use {}", Self::NAMES))
    }
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an install or an undo stopped. Whatever the step, the machine still boots (see the
/// module docs).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "cannot tell how {root} boots: no /etc/os-release naming a known distribution, no /boot/initramfs-{kver}.img or /boot/initrd.img-{kver}, no kernel-install bls layout; give --layout ({})",
        LayoutKind::NAMES,
        root = .root.display()
    )]
    UnknownLayout { root: PathBuf, kver: String },
    #[error(
        "no initramfs to convert at {path}: make one with the system's dracut (`dracut --kver {kver} {path}`), or give --initramfs FILE or --dracut",
        path = .path.display()
    )]
    NoInitramfs { path: PathBuf, kver: String },
    #[error(
        "{fstab} has no line for {mount_point} or /: give --bootfs (UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=… or /dev/…)",
        fstab = .fstab.display()
    )]
    NoBootFs { fstab: PathBuf, mount_point: String },
    #[error(
        "not enough space on {dir}: the image, the mini initramfs and the fallback need about {need} MiB with {spare} MiB to spare, {have} MiB are free; free some (old kernels?) and run again: nothing was changed",
        dir = .dir.display(),
        spare = SPARE_BYTES >> 20
    )]
    NoSpace { dir: PathBuf, need: u64, have: u64 },
    #[error(
        "{dir} cannot be written ({why}): install writes the image and the mini initramfs there; remount it read-write (`mount -o remount,rw {dir}`) and run again: nothing was changed",
        dir = .dir.display()
    )]
    ReadOnly { dir: PathBuf, why: String },
    #[error(
        "running dracut for {kver}: {why}; install dracut (initramfs-tools images cannot hand over from an overlay) or give --initramfs FILE"
    )]
    Dracut { kver: String, why: String },
    #[error(
        "storage-init binary {path} is missing: install it there (`install -D -m755 <build>/storage-init {path}`) or give --storage-init",
        path = .path.display()
    )]
    NoStorageInit { path: PathBuf },
    #[error("{path}: {error}", path = .path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Replace(#[from] ReplaceError),
    #[error(transparent)]
    Kernel(#[from] KernelConfigError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    MiniInitramfs(#[from] MiniInitramfsError),
    #[error(transparent)]
    Verity(#[from] crate::verity::VerityError),
    #[error("the storage-init config: {0}")]
    Config(String),
    #[error(
        "{path}, {error}: fix that line or delete the file (the next install writes it again from its options); nothing was changed",
        path = .path.display()
    )]
    InstallConf {
        path: PathBuf,
        error: InstallConfError,
    },
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |error| InstallError::Io {
        path: path.to_owned(),
        error,
    }
}

/// The files of one kernel under one layout, as host paths (inside the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLayout {
    pub kind: LayoutKind,
    /// The root the machine's files are under (`/` on the live system).
    pub root: PathBuf,
    /// `$BOOT` as the target sees it: `/boot`, `/efi` or `/boot/efi`.
    pub boot_mount: String,
    pub kver: String,
    /// The BLS entry token (`bls` layout only).
    pub entry_token: Option<String>,
}

impl BootLayout {
    /// Chooses the layout of `root` for `kver`: `kind` if given, else kernel-install's
    /// `layout=bls` (install.conf, or the entry directory already there), else os-release, else
    /// whichever classic initramfs name exists.
    pub fn detect(
        root: &Path,
        kver: &str,
        kind: Option<LayoutKind>,
    ) -> Result<BootLayout, InstallError> {
        let token = entry_token(root);
        let bls_dir = |boot: &str| {
            token
                .as_ref()
                .map(|t| root.join(&boot[1..]).join(t).join(kver))
                .filter(|d| d.is_dir())
        };
        let bls_boot = ["/efi", "/boot", "/boot/efi"]
            .into_iter()
            .find(|b| bls_dir(b).is_some());
        let install_conf = fs::read_to_string(root.join("etc/kernel/install.conf"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim().replace(' ', "") == "layout=bls");
        let os = fs::read_to_string(root.join("etc/os-release")).unwrap_or_default();
        let os_ids: Vec<String> = os
            .lines()
            .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
            .flat_map(|v| {
                v.trim_matches('"')
                    .split(' ')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let has = |ids: &[&str]| os_ids.iter().any(|id| ids.contains(&id.as_str()));
        let kind = match kind {
            Some(kind) => kind,
            None if install_conf || bls_boot.is_some() => LayoutKind::Bls,
            None if has(&["fedora", "rhel", "centos"]) => LayoutKind::Fedora,
            None if has(&["debian", "ubuntu"]) => LayoutKind::Debian,
            None if root.join(format!("boot/initramfs-{kver}.img")).is_file() => LayoutKind::Fedora,
            None if root.join(format!("boot/initrd.img-{kver}")).is_file() => LayoutKind::Debian,
            None => {
                return Err(InstallError::UnknownLayout {
                    root: root.to_owned(),
                    kver: kver.to_owned(),
                });
            }
        };
        let boot_mount = match kind {
            LayoutKind::Bls => bls_boot.unwrap_or("/boot"),
            _ => "/boot",
        };
        Ok(BootLayout {
            kind,
            root: root.to_owned(),
            boot_mount: boot_mount.to_owned(),
            kver: kver.to_owned(),
            entry_token: (kind == LayoutKind::Bls).then(|| token.unwrap_or_else(|| "linux".into())),
        })
    }

    /// `$BOOT` on the host.
    pub fn boot_dir(&self) -> PathBuf {
        self.root.join(&self.boot_mount[1..])
    }

    /// Relative to `$BOOT`: where the files of this kernel go.
    fn relative(&self, file: &str) -> String {
        match (&self.kind, &self.entry_token) {
            (LayoutKind::Bls, Some(token)) => format!("{token}/{}/{file}", self.kver),
            _ => file.to_owned(),
        }
    }

    /// The initramfs the bootloader loads (relative to `$BOOT`).
    pub fn initramfs_name(&self) -> String {
        match self.kind {
            LayoutKind::Fedora => format!("initramfs-{}.img", self.kver),
            LayoutKind::Debian => format!("initrd.img-{}", self.kver),
            LayoutKind::Bls => self.relative("initrd"),
        }
    }

    /// The classic initramfs kept as the fallback (relative to `$BOOT`).
    pub fn classic_name(&self) -> String {
        match self.kind {
            LayoutKind::Fedora => format!("initramfs-{}.classic.img", self.kver),
            LayoutKind::Debian => format!("initrd.img-{}.classic", self.kver),
            LayoutKind::Bls => self.relative("initrd.classic"),
        }
    }

    /// The initoverlayfs image (relative to `$BOOT`): upstream's name, or beside the kernel in
    /// the BLS layout.
    pub fn image_name(&self) -> String {
        match self.kind {
            LayoutKind::Bls => self.relative("initoverlayfs.img"),
            _ => format!("initoverlayfs-{}.img", self.kver),
        }
    }

    pub fn initramfs(&self) -> PathBuf {
        self.boot_dir().join(self.initramfs_name())
    }
    pub fn classic(&self) -> PathBuf {
        self.boot_dir().join(self.classic_name())
    }
    pub fn image(&self) -> PathBuf {
        self.boot_dir().join(self.image_name())
    }

    /// The BLS entries of this kernel (`$BOOT/loader/entries/<stem>[+<counter>].conf` whose stem
    /// ends with the release), not our fallbacks.
    fn entries(&self) -> Vec<PathBuf> {
        let dir = self.boot_dir().join("loader/entries");
        let Ok(read) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut entries: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                !EntryName::is_fallback(&name)
                    && EntryName::parse(&name).is_some_and(|n| n.stem.ends_with(&self.kver))
            })
            .collect();
        entries.sort();
        entries
    }

    /// The fallback entries of `entry`: the one `install` writes, then the older name.
    fn fallback_entries(entry: &Path) -> [PathBuf; 2] {
        let name = entry.file_name().unwrap_or_default().to_string_lossy();
        let stem = EntryName::parse(&name).map_or_else(|| name.to_string(), |n| n.stem);
        [
            entry.with_file_name(format!("{stem}{}", crate::bls::FALLBACK_SUFFIX)),
            entry.with_file_name(format!("{stem}{}", crate::bls::OLD_FALLBACK_SUFFIX)),
        ]
    }
}

/// kernel-install's entry token: /etc/kernel/entry-token, else the machine ID.
fn entry_token(root: &Path) -> Option<String> {
    ["etc/kernel/entry-token", "etc/machine-id"]
        .iter()
        .filter_map(|p| fs::read_to_string(root.join(p)).ok())
        .map(|t| t.trim().to_owned())
        .find(|t| !t.is_empty())
}

/// What `install` is asked to do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub root: PathBuf,
    pub kver: String,
    pub layout: Option<LayoutKind>,
    /// The full (classic) initramfs to convert; default: the one at the layout's path, or the
    /// kept fallback when that path already holds a mini initramfs.
    pub initramfs: Option<PathBuf>,
    /// Regenerate the classic initramfs with the system's dracut first.
    pub dracut: bool,
    /// The storage-init binary on the host; default [`DEFAULT_STORAGE_INIT`] in the root.
    pub storage_init: Option<PathBuf>,
    /// Default: `all-storage`.
    pub presets: Vec<StoragePreset>,
    /// Default: the fstab line of `$BOOT` (or of `/`, with the image under `boot/`).
    pub bootfs: Option<String>,
    /// The boot filesystem's type. Default: the type of the fstab line the bootfs comes from,
    /// else read from the device on this machine, else not known (see [`crate::bootfs`]).
    pub bootfstype: Option<String>,
    pub mtime: u64,
    /// Also install the hooks that redo this after every kernel or initramfs update.
    pub hooks: bool,
    /// This program's path on the target, for the hooks.
    pub builder_path: String,
    /// Give the image a dm-verity hash tree and the mini initramfs its root hash. The hooks
    /// keep it for every later kernel and initramfs update: an update never turns
    /// verification off.
    pub verity: bool,
    /// How many times systemd-boot tries the entry before it prefers the fallback (0: no
    /// counting); default kernel-install's `/etc/kernel/tries`, else [`crate::bls::DEFAULT_TRIES`].
    pub tries: Option<u32>,
    /// kernel-install's staging area under `layout=uki` (`$KERNEL_INSTALL_STAGING_AREA`): the
    /// classic initramfs is its `initrd`, the mini initramfs replaces it there for 60-ukify to
    /// bake into the UKI, and the image goes to `$BOOT/<entry-token>/<kver>/`. No fallback is
    /// kept (the UKI holds one initramfs) and no boot entry is touched.
    pub uki_staging: Option<PathBuf>,
}

impl InstallOptions {
    /// The options of this install that every later one keeps (see [`crate::install_conf`]).
    /// Not kept: `--root` (the hooks run on the target), `--initramfs` and `--dracut` (an
    /// update has just made the initramfs), `--storage-init` (a path on the machine that ran
    /// this install).
    pub fn kept(&self) -> KeptOptions {
        KeptOptions {
            layout: self.layout,
            presets: self.presets.clone(),
            bootfs: self.bootfs.clone(),
            bootfstype: self.bootfstype.clone(),
            verity: self.verity,
            tries: self.tries,
        }
    }
}

/// The options the last install under `root` kept, or none.
pub fn recorded_options(root: &Path) -> Result<KeptOptions, InstallError> {
    let path = root.join(INSTALL_CONF);
    match fs::read_to_string(&path) {
        Ok(text) => {
            KeptOptions::parse(&text).map_err(|error| InstallError::InstallConf { path, error })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(KeptOptions::default()),
        Err(error) => Err(InstallError::Io { path, error }),
    }
}

/// What an install did, step by step, for the user.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub steps: Vec<String>,
    /// The boot filesystem's type, where it came from and, when it is not known, what was
    /// shipped instead: one line.
    pub boot_filesystem: String,
}

/// Installs initoverlayfs for one kernel. See the module docs for the order of the steps.
pub fn install(options: &InstallOptions) -> Result<InstallReport, InstallError> {
    let kept = options.kept().or(&recorded_options(&options.root)?);
    let options = &InstallOptions {
        // The UKI's image lives in the entry directory of kernel-install's bls layout.
        layout: if options.uki_staging.is_some() {
            Some(LayoutKind::Bls)
        } else {
            kept.layout
        },
        presets: kept.presets.clone(),
        bootfs: kept.bootfs.clone(),
        bootfstype: kept.bootfstype.clone(),
        verity: kept.verity,
        tries: kept.tries,
        ..options.clone()
    };
    let layout = BootLayout::detect(&options.root, &options.kver, options.layout)?;
    let mut report = InstallReport::default();
    report.steps.push(format!(
        "layout {} ($BOOT {} in {})",
        layout.kind,
        layout.boot_mount,
        layout.root.display()
    ));
    let storage_init = options
        .storage_init
        .clone()
        .unwrap_or_else(|| options.root.join(&DEFAULT_STORAGE_INIT[1..]));
    if !storage_init.is_file() {
        return Err(InstallError::NoStorageInit { path: storage_init });
    }
    let scratch_parent = [options.root.join("var/tmp"), layout.boot_dir()]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or_else(|| layout.boot_dir());

    // The classic initramfs to convert.
    let regenerated;
    let uki_initrd = options.uki_staging.as_ref().map(|dir| dir.join("initrd"));
    let classic_source = if let Some(initrd) = &uki_initrd {
        initrd.clone()
    } else if options.dracut {
        regenerated = run_dracut(&options.root, &options.kver, &scratch_parent)?;
        report
            .steps
            .push("made the classic initramfs with dracut".to_owned());
        regenerated.path().to_owned()
    } else if let Some(path) = &options.initramfs {
        path.clone()
    } else if is_mini_initramfs(&layout.initramfs()) && layout.classic().is_file() {
        layout.classic()
    } else {
        layout.initramfs()
    };
    if !classic_source.is_file() || is_mini_initramfs(&classic_source) {
        return Err(InstallError::NoInitramfs {
            path: classic_source,
            kver: options.kver.clone(),
        });
    }

    // 1. Space.
    let initramfs = crate::image::read_initramfs(&classic_source)?;
    let unpacked: u64 = initramfs
        .final_entries()
        .iter()
        .map(|e| e.data.len() as u64 + 512)
        .sum();
    let classic_bytes = file_len(&classic_source)?;
    let boot_dir = layout.boot_dir();
    // On /boot: the image (at most the unpacked content), the mini initramfs (smaller than
    // the classic one), the fallback (free when it is a hard link) and the unpacked scratch
    // copy when there is no /var/tmp elsewhere to hold it.
    let fallback = if same_device(&classic_source, &boot_dir) {
        0
    } else {
        classic_bytes
    };
    let scratch = if same_device(&scratch_parent, &boot_dir) {
        unpacked
    } else {
        0
    };
    let need = unpacked + classic_bytes + fallback + scratch;
    check_writable(&boot_dir)?;
    // What a run stopped dead (a power cut) left behind, before the space is counted.
    for dir in [boot_dir.clone(), boot_dir.join("loader/entries")] {
        remove_leftovers(&dir, &mut report)?;
    }
    let have = free_bytes(&boot_dir)?;
    if have < need + SPARE_BYTES {
        return Err(InstallError::NoSpace {
            dir: boot_dir,
            need: need.div_ceil(1 << 20),
            have: have >> 20,
        });
    }

    // 2. The image first: the mini initramfs records its UUID.
    let kernel = KernelConfig::locate(&options.root, &options.kver)?;
    let erofs_options = ErofsOptions {
        mtime: options.mtime,
        compression: kernel.erofs_compression(None)?,
        keep_owners: false,
        pcluster_bytes: None,
    };
    let image = layout.image();
    if let Some(dir) = image.parent() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let temporary_image = crate::replace::temporary_beside(&image)?;
    let built = crate::image::image_from_read_initramfs(
        &initramfs,
        &classic_source,
        temporary_image.path(),
        &erofs_options,
        &scratch_parent,
    )?;
    // Before the rename: the image appears on /boot with its tree or not at all.
    let verity = if options.verity {
        Some(crate::verity::append_hash_tree(temporary_image.path())?)
    } else {
        None
    };
    crate::replace::commit(temporary_image, &image)?;
    report.steps.push(format!(
        "wrote {} ({} bytes, erofs uuid {})",
        image.display(),
        built.erofs.bytes,
        built.erofs.uuid
    ));
    if let Some(verity) = &verity {
        report.steps.push(format!(
            "appended its dm-verity hash tree: root hash {}",
            verity.root_hash
        ));
    }

    // 3. The mini initramfs, in memory until its rename.
    let fstab = layout.root.join("etc/fstab");
    let (bootfs, fstab_type, image_in_bootfs, named) = match &options.bootfs {
        Some(bootfs) => (
            bootfs.clone(),
            None,
            layout.image_name(),
            format!("--bootfs {bootfs}"),
        ),
        None => {
            let (bootfs, fstype, image) = boot_filesystem(&layout)?;
            let named = format!("{bootfs} of {}", fstab.display());
            (bootfs, fstype, image, named)
        }
    };
    let mut text = format!(
        "bootfs {bootfs}\nkernel_release {}\nimage_uuid {}\nfs {image_in_bootfs}\n",
        options.kver, built.erofs.uuid
    );
    if let Some(fstype) = &options.bootfstype {
        text.push_str(&format!("bootfstype {fstype}\n"));
    }
    let (mut config, _) = storage_init::config::parse_config(&text)
        .map_err(|e| InstallError::Config(e.to_string()))?;
    let boot = crate::bootfs::decide(
        config.bootfstype.as_deref(),
        fstab_type.as_deref().map(|t| (t, fstab.as_path())),
        config.bootfs.as_ref(),
        &named,
        Path::new(crate::bootfs::DEV_DISK),
    );
    config.bootfstype = boot.fstype().map(str::to_owned);
    if let Some(verity) = verity {
        config.verity_root_hash = Some(verity.root_hash);
        config.verity_salt = Some(verity.salt);
        config.verity_data_blocks = Some(verity.data_blocks);
    }
    let fallback = plan_fallback(&layout, options)?;
    if let Some(id) = fallback.one_shot_entry() {
        config.emergency = storage_init::config::Emergency::Fallback;
        config.fallback_entry = Some(id);
    }
    let presets = if options.presets.is_empty() {
        vec![StoragePreset::AllStorage]
    } else {
        options.presets.clone()
    };
    let filesystems = crate::bootfs::filesystem_modules(
        &kernel,
        &boot,
        &config.fstype,
        config.verity_root_hash.is_some(),
    );
    let preset_modules = preset_modules(&presets);
    let mut wanted_modules = preset_modules.clone();
    for module in filesystems.probed {
        if !wanted_modules.contains(&module) {
            wanted_modules.push(module);
        }
    }
    if fallback.one_shot_entry().is_some() {
        // storage-init writes LoaderEntryOneShot through efivarfs (a module on Debian).
        wanted_modules.push("efivarfs".to_owned());
    }
    let mini = MiniInitramfs {
        storage_init,
        kernel: KernelModules::new(&options.root, &options.kver),
        modules: filesystems.required,
        config,
        wanted_modules,
        mtime: options.mtime,
        compression: kernel.initramfs_compression(None::<InitramfsCompression>)?,
    };
    let (mini_bytes, mini_report) = mini.to_bytes()?;
    report.boot_filesystem = match boot {
        crate::bootfs::BootFsType::Unknown { .. } => {
            let cost = crate::bootfs::probed_cost(
                &mini.kernel,
                &mini.modules,
                &preset_modules,
                &mini_report,
            )
            .map_err(MiniInitramfsError::from)?;
            crate::bootfs::unknown_line(&boot, &filesystems.probed_filesystems, cost)
        }
        _ => boot.to_string(),
    };

    // Under kernel-install's layout=uki the mini initramfs goes where 60-ukify takes it from
    // (replacing 55-initrd's link, not what it points to); the UKI is the switch.
    if let Some(initrd) = &uki_initrd {
        replace_file(initrd, &mini_bytes, 0o600)?;
        report.steps.push(format!(
            "wrote {} (mini initramfs, {} entries, {} bytes) for the UKI",
            initrd.display(),
            mini_report.entries,
            mini_report.compressed_bytes
        ));
        return Ok(report);
    }

    // 4. The fallback, before the classic initramfs is replaced.
    let classic = layout.classic();
    if classic_source != classic {
        keep_copy(&classic_source, &classic)?;
        report.steps.push(format!(
            "kept the classic initramfs as {}",
            classic.display()
        ));
    }

    // 5. A way back in the boot menu, before anything names it.
    for (entry, text) in &fallback.entries {
        let [path, old_name] = BootLayout::fallback_entries(entry);
        replace_file(&path, text.as_bytes(), 0o644)?;
        report
            .steps
            .push(format!("wrote the fallback entry {}", path.display()));
        if crate::replace::remove_if_present(&old_name).map_err(io_error(&old_name))? {
            report.steps.push(format!("removed {}", old_name.display()));
        }
    }

    // 6. The switch: one rename.
    replace_file(&layout.initramfs(), &mini_bytes, 0o600)?;
    report.steps.push(format!(
        "wrote {} (mini initramfs, {} entries, {} bytes)",
        layout.initramfs().display(),
        mini_report.entries,
        mini_report.compressed_bytes
    ));

    // 7. A fresh trial for the entry: the boot loader counts its tries from here.
    match &fallback.counting {
        Ok(tries) => {
            for (entry, _) in &fallback.entries {
                let counted = count_entry(entry, *tries)?;
                report.steps.push(format!(
                    "boot counting: {} (systemd-boot tries it {tries} times before it prefers the fallback; systemd-bless-boot marks it good at boot-complete.target)",
                    counted.display()
                ));
            }
        }
        Err(why) => {
            report.steps.push(format!("boot counting: off ({why})"));
            if options.tries == Some(0) {
                for (entry, _) in &fallback.entries {
                    if let Some(plain) = uncount_entry(entry)? {
                        report
                            .steps
                            .push(format!("stopped counting {}", plain.display()));
                    }
                }
            }
        }
    }
    report.steps.push(fallback.on_failure(&layout));
    if options.root == Path::new("/")
        && let Ok(true) = crate::efi::clear_last_fatal()
    {
        report
            .steps
            .push("cleared the FATAL line the last failed boot left".to_owned());
    }

    if options.hooks {
        // What a run stopped dead left beside the hooks and the options.
        let written = crate::hooks::HOOKS.iter().map(|h| h.written);
        for file in written.chain([INSTALL_CONF]) {
            if let Some(dir) = layout.root.join(file).parent() {
                remove_leftovers(dir, &mut report)?;
            }
        }
        for hook in crate::hooks::write(&layout.root, layout.kind, &options.builder_path)? {
            report.steps.push(match hook {
                Written::Wrote(path) => format!("hook {}", path.display()),
                Written::Packaged(path) => format!("hook {} (the package's)", path.display()),
            });
        }
        let conf = layout.root.join(INSTALL_CONF);
        let text = kept.to_string();
        if fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str()) {
            if let Some(dir) = conf.parent() {
                fs::create_dir_all(dir).map_err(io_error(dir))?;
            }
            replace_file(&conf, text.as_bytes(), 0o644)?;
            report
                .steps
                .push(format!("kept the install options in {}", conf.display()));
        }
    }
    Ok(report)
}

/// How a failed initoverlayfs boot of one kernel gets back to its classic initramfs.
struct FallbackPlan {
    /// The kernel's entries that load its initramfs, each with its fallback entry's text.
    entries: Vec<(PathBuf, String)>,
    boot_loader: BootLoader,
    /// The tries systemd-boot counts for the entries, or why nothing is counted.
    counting: Result<u32, String>,
}

fn plan_fallback(
    layout: &BootLayout,
    options: &InstallOptions,
) -> Result<FallbackPlan, InstallError> {
    let mut entries = Vec::new();
    for entry in layout.entries() {
        let text = fs::read_to_string(&entry).map_err(io_error(&entry))?;
        if let Some(fallback) =
            crate::bls::fallback_entry_text(&text, &layout.initramfs_name(), &layout.classic_name())
        {
            entries.push((entry, fallback));
        }
    }
    let boot_loader = BootLoader::detect(&layout.boot_dir(), options.root == Path::new("/"));
    let tries = options
        .tries
        .or_else(|| crate::bls::kernel_install_tries(&layout.root))
        .unwrap_or(crate::bls::DEFAULT_TRIES);
    let counting = if entries.is_empty() {
        Err("no boot loader entry loads this initramfs".to_owned())
    } else if boot_loader == BootLoader::Other {
        Err("the boot loader is not systemd-boot".to_owned())
    } else if tries == 0 {
        Err("--tries 0".to_owned())
    } else if crate::bls::bless_boot(&layout.root).is_none() {
        Err("systemd-bless-boot is not installed, so no boot would ever be marked good (Debian: install the systemd-boot package)".to_owned())
    } else {
        Ok(tries)
    };
    Ok(FallbackPlan {
        entries,
        boot_loader,
        counting,
    })
}

impl FallbackPlan {
    /// The entry storage-init reboots into after a FATAL line: only under systemd-boot, which
    /// honours `LoaderEntryOneShot` (any other loader would boot the failing entry again).
    fn one_shot_entry(&self) -> Option<String> {
        let (entry, _) = self.entries.first()?;
        let BootLoader::SystemdBoot { .. } = self.boot_loader else {
            return None;
        };
        let [fallback, _] = BootLayout::fallback_entries(entry);
        Some(fallback.file_name()?.to_string_lossy().into_owned())
    }

    /// What a failed boot will do, for the user.
    fn on_failure(&self, layout: &BootLayout) -> String {
        match (
            self.one_shot_entry(),
            &self.boot_loader,
            self.entries.first(),
        ) {
            (Some(id), BootLoader::SystemdBoot { evidence }, _) => format!(
                "on a failed boot: storage-init prints its FATAL line, leaves it for `status`, and reboots once into {id} (systemd-boot: {evidence})"
            ),
            (_, _, Some(_)) => format!(
                "on a failed boot: storage-init halts with its FATAL line on the console (the boot loader is not systemd-boot, and a reboot would only fail again); choose the entry marked \"(classic initramfs)\" in the boot menu to boot {}",
                layout.classic_name()
            ),
            _ => format!(
                "on a failed boot: storage-init halts with its FATAL line on the console (no boot loader entry here to fall back through); to boot the classic initramfs, edit the entry in the boot menu to load {} instead of {}",
                layout.classic_name(),
                layout.initramfs_name()
            ),
        }
    }
}

/// Renames `entry` to its name with `tries` tries left and none done; returns the new path.
fn count_entry(entry: &Path, tries: u32) -> Result<PathBuf, InstallError> {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    let Some(parsed) = EntryName::parse(&name) else {
        return Ok(entry.to_owned());
    };
    let counted = entry.with_file_name(parsed.with_counter(Some(Counter {
        left: tries,
        done: 0,
    })));
    if counted != entry {
        fs::rename(entry, &counted).map_err(io_error(&counted))?;
        crate::replace::sync_parent(&counted)?;
        crate::fault::point("after counting the entry");
    }
    Ok(counted)
}

/// Renames a counted `entry` back to its plain name (what a good boot's blessing leaves).
fn uncount_entry(entry: &Path) -> Result<Option<PathBuf>, InstallError> {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    let Some(parsed) = EntryName::parse(&name).filter(|n| n.counter.is_some()) else {
        return Ok(None);
    };
    let plain = entry.with_file_name(parsed.with_counter(None));
    fs::rename(entry, &plain).map_err(io_error(&plain))?;
    crate::replace::sync_parent(&plain)?;
    Ok(Some(plain))
}

/// What `install` tells the user to run to undo everything: `program` as they invoked it
/// (its file name: `initoverlayfs-builder` once installed as the README says), with `--root`
/// only for a tree. Without `--kver`, uninstall also removes the hooks; with it, the hooks
/// would install the next kernel again.
pub fn undo_hint(program: &str, root: &Path) -> String {
    let program = Path::new(program)
        .file_name()
        .map_or_else(|| "builder".into(), |name| name.to_string_lossy());
    if root == Path::new("/") {
        format!("{program} uninstall")
    } else {
        format!("{program} uninstall --root {}", root.display())
    }
}

/// Undoes `install` for one kernel: the classic initramfs back in place (one rename), the
/// image and the fallback entries removed. With `kernel_removed` (the kernel is being
/// uninstalled) the classic fallback is deleted instead of restored.
pub fn uninstall(
    root: &Path,
    kver: &str,
    layout: Option<LayoutKind>,
    kernel_removed: bool,
) -> Result<Vec<String>, InstallError> {
    let layout = BootLayout::detect(root, kver, layout)?;
    let mut steps = Vec::new();
    let classic = layout.classic();
    if classic.is_file() {
        if kernel_removed {
            fs::remove_file(&classic).map_err(io_error(&classic))?;
            steps.push(format!("removed {}", classic.display()));
        } else {
            let initramfs = layout.initramfs();
            fs::rename(&classic, &initramfs).map_err(io_error(&initramfs))?;
            crate::replace::sync_parent(&initramfs)?;
            steps.push(format!(
                "restored the classic initramfs {}",
                initramfs.display()
            ));
        }
    }
    for entry in layout.entries() {
        for fallback in BootLayout::fallback_entries(&entry) {
            if crate::replace::remove_if_present(&fallback).map_err(io_error(&fallback))? {
                steps.push(format!("removed {}", fallback.display()));
            }
        }
        if let Some(plain) = uncount_entry(&entry)? {
            steps.push(format!("stopped counting {}", plain.display()));
        }
    }
    let image = layout.image();
    if crate::replace::remove_if_present(&image).map_err(io_error(&image))? {
        steps.push(format!("removed {}", image.display()));
    }
    Ok(steps)
}

/// The kernels of `root` that `install --all` converts: those with an initramfs where their
/// boot loader loads it (classic, or a mini one with its classic kept), sorted. A kernel whose
/// initramfs is missing (its package half removed, modules left behind) is not one.
pub fn convertible_kernels(root: &Path, layout: Option<LayoutKind>) -> Vec<String> {
    kernels_where(root, |kver| {
        BootLayout::detect(root, kver, layout)
            .is_ok_and(|l| l.initramfs().is_file() || l.classic().is_file())
    })
}

fn kernels_where(root: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(read) = fs::read_dir(root.join("lib/modules")) else {
        return Vec::new();
    };
    let mut kvers: Vec<String> = read
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|kver| keep(kver))
        .collect();
    kvers.sort();
    kvers
}

/// The kernels of `root` that have an install to undo.
pub fn installed_kernels(root: &Path) -> Vec<String> {
    kernels_where(root, |kver| {
        BootLayout::detect(root, kver, None)
            .is_ok_and(|l| l.image().is_file() || l.classic().is_file())
    })
}

/// Where the target's fstab mounts `$BOOT` (or `/`, when `$BOOT` is a directory of the root
/// filesystem): the bootfs value, its type, and the image's path inside that filesystem.
fn boot_filesystem(layout: &BootLayout) -> Result<(String, Option<String>, String), InstallError> {
    let fstab = layout.root.join("etc/fstab");
    let text = fs::read_to_string(&fstab).unwrap_or_default();
    let line = |mount_point: &str| {
        text.lines()
            .map(|l| {
                l.split('#')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
            })
            .find(|f| f.len() >= 3 && f[1] == mount_point)
            .map(|f| (f[0].to_owned(), f[2].to_owned()))
    };
    if let Some((spec, fstype)) = line(&layout.boot_mount) {
        return Ok((spec, Some(fstype), layout.image_name()));
    }
    if let Some((spec, fstype)) = line("/") {
        let inside = format!("{}/{}", &layout.boot_mount[1..], layout.image_name());
        return Ok((spec, Some(fstype), inside));
    }
    Err(InstallError::NoBootFs {
        fstab,
        mount_point: layout.boot_mount.clone(),
    })
}

/// True if `path` is a mini initramfs (ours): it carries storage-init's module list.
fn is_mini_initramfs(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let Ok(initramfs) = crate::initramfs::read(&bytes) else {
        return false;
    };
    let list = storage_init::contract::MODULE_LIST_PATH.trim_start_matches('/');
    initramfs
        .entries
        .iter()
        .any(|e| e.name.trim_start_matches('/') == list)
}

/// The system's dracut writes a full initramfs for `kver` into a temporary file; in a root
/// other than `/` it runs there through chroot.
fn run_dracut(
    root: &Path,
    kver: &str,
    scratch_parent: &Path,
) -> Result<tempfile::NamedTempFile, InstallError> {
    let output = tempfile::Builder::new()
        .prefix(".initoverlayfs-dracut-")
        .tempfile_in(scratch_parent)
        .map_err(io_error(scratch_parent))?;
    let live = root == Path::new("/");
    let mut command = if live {
        Command::new("dracut")
    } else {
        let mut chroot = Command::new("chroot");
        chroot.arg(root).arg("dracut");
        chroot
    };
    let inside =
        if live {
            output.path().to_owned()
        } else {
            Path::new("/").join(output.path().strip_prefix(root).map_err(|_| {
                InstallError::Dracut {
                    kver: kver.to_owned(),
                    why: format!(
                        "the scratch file {} is outside the root",
                        output.path().display()
                    ),
                }
            })?)
        };
    let result = command
        .args(["--force", "--kver", kver])
        .arg(&inside)
        .output()
        .map_err(|error| InstallError::Dracut {
            kver: kver.to_owned(),
            why: format!("{error}"),
        })?;
    if !result.status.success() {
        return Err(InstallError::Dracut {
            kver: kver.to_owned(),
            why: format!(
                "{}: {}",
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            ),
        });
    }
    Ok(output)
}

/// A second name for `from` at `to`: a hard link where both are on one filesystem, else a
/// copy, replaced atomically either way.
fn keep_copy(from: &Path, to: &Path) -> Result<(), InstallError> {
    // Already a second name for it (an earlier run stopped after this step). The check is
    // needed, not an optimisation: rename(2) of one hard link onto another of the same file
    // does nothing and succeeds, which would leave the temporary name behind.
    if is_same_file(from, to) {
        return Ok(());
    }
    let temporary = to.with_extension("initoverlayfs-tmp");
    let _ = fs::remove_file(&temporary);
    if fs::hard_link(from, &temporary).is_ok() {
        crate::fault::point("after linking the fallback");
        fs::rename(&temporary, to).map_err(io_error(to))?;
        crate::fault::point("after renaming the fallback");
        crate::replace::sync_parent(to)?;
        crate::fault::point("after the directory's fsync");
        return Ok(());
    }
    let mut source = fs::File::open(from).map_err(io_error(from))?;
    replace_with(to, 0o600, |file| io::copy(&mut source, file).map(|_| ()))?;
    Ok(())
}

/// Removes the temporary files of an earlier run that was stopped dead in `dir`: builder's
/// `.builder-*` files (the rename never happened) and a fallback's `*.initoverlayfs-tmp` link.
/// Nothing reads them; an absent directory has none.
fn remove_leftovers(dir: &Path, report: &mut InstallReport) -> Result<(), InstallError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(crate::replace::TEMPORARY_PREFIX)
            || name.ends_with(".initoverlayfs-tmp")
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_error(&path))?;
            report.steps.push(format!(
                "removed {}, left by a run that was stopped",
                path.display()
            ));
        }
    }
    Ok(())
}

fn file_len(path: &Path) -> Result<u64, InstallError> {
    Ok(fs::metadata(path).map_err(io_error(path))?.len())
}

/// Whether `a` and `b` name one file (hard links of one inode).
fn is_same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn same_device(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Refuses a /boot this process cannot write (mounted read-only, or not ours to write) before
/// anything is written there.
fn check_writable(dir: &Path) -> Result<(), InstallError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| InstallError::Io {
        path: dir.to_owned(),
        error: e.into(),
    })?;
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(InstallError::ReadOnly {
            dir: dir.to_owned(),
            why: "mounted read-only".to_owned(),
        });
    }
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|errno| InstallError::ReadOnly {
        dir: dir.to_owned(),
        why: io::Error::from(errno).to_string(),
    })
}

fn free_bytes(dir: &Path) -> Result<u64, InstallError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| InstallError::Io {
        path: dir.to_owned(),
        error: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(kind: LayoutKind) -> BootLayout {
        BootLayout {
            kind,
            root: PathBuf::from("/r"),
            boot_mount: "/boot".into(),
            kver: "6.1.0".into(),
            entry_token: (kind == LayoutKind::Bls).then(|| "abc".to_owned()),
        }
    }

    /// The hooks call the program that installed them when it runs from a system program
    /// directory (the package's, a hand install's), the README's path otherwise.
    #[test]
    fn hooks_call_the_installed_program() {
        let check = |running: Option<&str>, expected: &str| {
            assert_eq!(
                default_builder_path(running.map(Path::new)),
                expected,
                "{running:?}"
            );
        };
        check(Some("/usr/sbin/initoverlayfs"), "/usr/sbin/initoverlayfs");
        check(
            Some("/usr/local/sbin/initoverlayfs-builder"),
            "/usr/local/sbin/initoverlayfs-builder",
        );
        check(Some("/sbin/initoverlayfs"), "/sbin/initoverlayfs");
        // Replaced by an upgrade while it runs: the new program is at the same path.
        check(
            Some("/usr/sbin/initoverlayfs (deleted)"),
            "/usr/sbin/initoverlayfs",
        );
        for elsewhere in [
            None,
            Some("/home/me/initoverlayfs-rs/target/release/builder"),
            Some("/usr/sbin/sub/initoverlayfs"),
            Some("/usr/sbin/"),
            Some("/usr/sbin/a\"b"),
            Some("/usr/sbin/$(reboot)"),
            Some("builder"),
        ] {
            check(elsewhere, DEFAULT_BUILDER_PATH);
        }
    }

    #[test]
    fn names_per_layout() {
        let fedora = layout(LayoutKind::Fedora);
        assert_eq!(fedora.initramfs(), Path::new("/r/boot/initramfs-6.1.0.img"));
        assert_eq!(
            fedora.classic(),
            Path::new("/r/boot/initramfs-6.1.0.classic.img")
        );
        assert_eq!(fedora.image(), Path::new("/r/boot/initoverlayfs-6.1.0.img"));
        let debian = layout(LayoutKind::Debian);
        assert_eq!(debian.initramfs(), Path::new("/r/boot/initrd.img-6.1.0"));
        assert_eq!(
            debian.classic(),
            Path::new("/r/boot/initrd.img-6.1.0.classic")
        );
        let bls = layout(LayoutKind::Bls);
        assert_eq!(bls.initramfs(), Path::new("/r/boot/abc/6.1.0/initrd"));
        assert_eq!(
            bls.image(),
            Path::new("/r/boot/abc/6.1.0/initoverlayfs.img")
        );
    }

    #[test]
    fn fallback_entries() {
        let text = |layout: &BootLayout, entry: &str| {
            crate::bls::fallback_entry_text(entry, &layout.initramfs_name(), &layout.classic_name())
        };
        let entry = "title Fedora Linux (6.1.0) 40\nversion 6.1.0\nlinux /vmlinuz-6.1.0\ninitrd /initramfs-6.1.0.img\noptions root=UUID=x ro\n";
        assert!(
            text(&layout(LayoutKind::Fedora), entry)
                .unwrap()
                .contains("initrd /initramfs-6.1.0.classic.img\n")
        );
        let entry = "title Debian\ninitrd /abc/6.1.0/initrd\n";
        assert!(
            text(&layout(LayoutKind::Bls), entry)
                .unwrap()
                .contains("initrd /abc/6.1.0/initrd.classic")
        );
        // Counted or not, an entry's fallback is named from its stem.
        for entry in ["abc-6.1.0.conf", "abc-6.1.0+3.conf", "abc-6.1.0+0-3.conf"] {
            assert_eq!(
                BootLayout::fallback_entries(&Path::new("/b/loader/entries").join(entry)),
                [
                    PathBuf::from("/b/loader/entries/abc-6.1.0~initoverlayfs-classic.conf"),
                    PathBuf::from("/b/loader/entries/abc-6.1.0.initoverlayfs-classic.conf")
                ]
            );
        }
    }

    #[test]
    fn the_undo_hint_undoes_everything() {
        let check = |program: &str, root: &str, expected: &str| {
            assert_eq!(undo_hint(program, Path::new(root)), expected);
        };
        check(
            "initoverlayfs-builder",
            "/",
            "initoverlayfs-builder uninstall",
        );
        check(
            "/usr/local/sbin/initoverlayfs-builder",
            "/",
            "initoverlayfs-builder uninstall",
        );
        check(
            "target/debug/builder",
            "/srv/image",
            "builder uninstall --root /srv/image",
        );
        check("", "/", "builder uninstall");
    }

    #[test]
    fn layouts_are_named() {
        for kind in [LayoutKind::Fedora, LayoutKind::Debian, LayoutKind::Bls] {
            assert_eq!(kind.name().parse::<LayoutKind>(), Ok(kind));
        }
        assert!(
            "arch"
                .parse::<LayoutKind>()
                .unwrap_err()
                .contains("fedora, debian, bls")
        );
    }
}
