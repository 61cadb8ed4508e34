//! The runtime configuration: `/etc/initoverlayfs.conf` plus `initoverlayfs.<key>=<value>`
//! overrides from the kernel command line. Pure functions over strings; no I/O here.
//!
//! The file format is upstream's: one `key value` per line, separated by whitespace. Comments
//! (`#`), blank lines, CRLF line ends, tabs, trailing spaces and a missing final newline are all
//! accepted. An unknown key is a warning, never an error and never a silent mis-parse.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::verity::{DIGEST_BYTES, Verity};

/// Where the config file lives inside the mini initramfs (upstream's path).
pub const CONFIG_PATH: &str = "/etc/initoverlayfs.conf";

/// Prefix of kernel command-line overrides: `initoverlayfs.timeout=5`.
pub const CMDLINE_PREFIX: &str = "initoverlayfs.";

/// What a config demanding dm-verity keeps from kernel command-line overrides (and
/// `emergency=shell`, see `Config::refuses_from_cmdline`).
const VERITY_LOCKED_KEYS: [&str; 5] = [
    "verity_root_hash",
    "verity_salt",
    "verity_data_blocks",
    "fs",
    "fstype",
];

/// Upstream's default for how long to wait for the boot device.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys upstream reads only at build time; accepted and kept so the file round-trips.
const BUILD_TIME_KEYS: [&str; 4] = [
    "initoverlayfs_builder",
    "initrd_builder",
    "erofs_compression",
    "initoverlayfs_init",
];

/// How the boot filesystem is named (`bootfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFs {
    /// `UUID=…`: the filesystem UUID, lower-case, as blkid prints it.
    Uuid(String),
    /// `LABEL=…`: the filesystem label.
    Label(String),
    /// `PARTUUID=…`: the GPT partition GUID (or MBR `xxxxxxxx-NN`), lower-case.
    PartUuid(String),
    /// `PARTLABEL=…`: the GPT partition name.
    PartLabel(String),
    /// A device path such as `/dev/vda2`.
    Path(PathBuf),
}

/// What `bootfs` accepts, for a value that names no device.
const BOOTFS_FORMS: &str =
    "UUID=<uuid>, LABEL=<label>, PARTUUID=<guid>, PARTLABEL=<name>, /dev/<path>";

/// The filesystem UUIDs storage-init's probes read, as blkid prints them (`probe.rs`).
const UUID_FORMS: &str = "UUID=<8-4-4-4-12 hexadecimal digits> (ext2/3/4, xfs, btrfs, erofs) or UUID=<XXXX-XXXX hexadecimal digits> (a FAT volume id), in either case, as blkid prints them; a filesystem named by its label is LABEL=<label>";

/// The partition UUIDs storage-init's partition table parsers read, as blkid prints them
/// (`partition.rs`).
const PARTUUID_FORMS: &str = "PARTUUID=<8-4-4-4-12 hexadecimal digits> (a GPT partition GUID) or PARTUUID=<xxxxxxxx-NN hexadecimal digits> (an MBR disk signature and partition number), in either case, as blkid prints them; a partition named by its GPT name is PARTLABEL=<name>";

impl BootFs {
    /// Parses a `bootfs` value; on failure, what is wrong with it and the forms accepted in
    /// its place. A `UUID=` or `PARTUUID=` that no probe could ever print is refused here, not
    /// after the search's timeout.
    fn parse(value: &str) -> Result<BootFs, (String, &'static str)> {
        let nonempty = |v: &str, forms: &'static str| {
            if v.is_empty() {
                Err(("the part after '=' is empty".to_owned(), forms))
            } else {
                Ok(v.to_owned())
            }
        };
        if let Some(v) = value.strip_prefix("UUID=") {
            let v = nonempty(v, UUID_FORMS)?;
            if !is_filesystem_uuid(&v) {
                return Err(("not a filesystem UUID".to_owned(), UUID_FORMS));
            }
            Ok(BootFs::Uuid(v.to_ascii_lowercase()))
        } else if let Some(v) = value.strip_prefix("LABEL=") {
            Ok(BootFs::Label(nonempty(v, BOOTFS_FORMS)?))
        } else if let Some(v) = value.strip_prefix("PARTUUID=") {
            let v = nonempty(v, PARTUUID_FORMS)?;
            if !is_partition_uuid(&v) {
                return Err(("not a partition UUID".to_owned(), PARTUUID_FORMS));
            }
            Ok(BootFs::PartUuid(v.to_ascii_lowercase()))
        } else if let Some(v) = value.strip_prefix("PARTLABEL=") {
            Ok(BootFs::PartLabel(nonempty(v, BOOTFS_FORMS)?))
        } else if value.starts_with("/dev/") {
            Ok(BootFs::Path(PathBuf::from(value)))
        } else {
            Err(("it names no device".to_owned(), BOOTFS_FORMS))
        }
    }
}

impl fmt::Display for BootFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFs::Uuid(v) => write!(f, "UUID={v}"),
            BootFs::Label(v) => write!(f, "LABEL={v}"),
            BootFs::PartUuid(v) => write!(f, "PARTUUID={v}"),
            BootFs::PartLabel(v) => write!(f, "PARTLABEL={v}"),
            BootFs::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What storage-init does after its FATAL line (`emergency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emergency {
    /// Stop, repeating the FATAL line every 10 s so a console attached later still shows it.
    #[default]
    Halt,
    /// Power the machine off (what the test harness uses: the VM ends).
    PowerOff,
    /// Reboot.
    Reboot,
    /// Exec `/bin/sh` if the mini initramfs has one, else halt.
    Shell,
    /// Make systemd-boot start `fallback_entry` (the classic initramfs) once, then reboot; halt
    /// when that cannot be arranged (see `emergency.rs`).
    Fallback,
}

impl Emergency {
    const FORMS: &'static str = "halt, poweroff, reboot, shell, fallback";

    fn parse(value: &str) -> Option<Emergency> {
        match value {
            "halt" => Some(Emergency::Halt),
            "poweroff" => Some(Emergency::PowerOff),
            "reboot" => Some(Emergency::Reboot),
            "shell" => Some(Emergency::Shell),
            "fallback" => Some(Emergency::Fallback),
            _ => None,
        }
    }
}

impl fmt::Display for Emergency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Emergency::Halt => "halt",
            Emergency::PowerOff => "poweroff",
            Emergency::Reboot => "reboot",
            Emergency::Shell => "shell",
            Emergency::Fallback => "fallback",
        })
    }
}

/// What storage-init asks the kernel to read ahead of the second stage (`prefetch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// Nothing: every page is read when the second stage first touches it.
    #[default]
    Off,
    /// The whole image file, front to back: one `posix_fadvise(WILLNEED)` on it before it is
    /// mounted. The kernel reads it into the page cache of /boot's filesystem in large
    /// sequential requests while the boot goes on, so the image's scattered reads find it there
    /// (on a FAT /boot, whose random reads walk the cluster chain, that matters most).
    Image,
}

impl fmt::Display for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prefetch::Off => "off",
            Prefetch::Image => "image",
        })
    }
}

/// The parsed configuration. Field names follow the config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `bootfs`: the filesystem holding the image. Required at boot.
    pub bootfs: Option<BootFs>,
    /// `bootfs_hint`: a device path tried before any search.
    pub bootfs_hint: Option<PathBuf>,
    /// `bootfstype`: the filesystem type of `bootfs` (e.g. `ext4`); probed when absent.
    pub bootfstype: Option<String>,
    /// `fs`: the image path relative to /boot; default `initoverlayfs-<kver>.img`.
    pub fs: Option<String>,
    /// `fstype`: the image's filesystem type; default `erofs`.
    pub fstype: String,
    /// `timeout`: how long to wait for the boot device, in seconds (ours, not upstream's).
    pub timeout: Duration,
    /// `init`: the program to exec in the new root (ours); else `/init`, then `/sbin/init`.
    pub init: Option<PathBuf>,
    /// `emergency`: what follows a FATAL line (ours); default `halt`.
    pub emergency: Emergency,
    /// `fallback_entry`: the Boot Loader Specification id (the entry's file name, e.g.
    /// `debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf`) of the entry booting the classic
    /// initramfs, which `emergency fallback` makes systemd-boot start once (ours).
    pub fallback_entry: Option<String>,
    /// `overlay_size`: the size of the tmpfs holding the overlay's writable layer, in tmpfs'
    /// `size=` syntax (`512M`, `2G`, `25%`); default: tmpfs' own (half of RAM).
    pub overlay_size: Option<String>,
    /// `overlay`: `on` (the default) puts the tmpfs-backed overlay over the image; `off` makes
    /// the image itself the new root, read-only (ours; a benchmark knob: a second stage that
    /// writes to its root fails without the overlay).
    pub overlay: bool,
    /// `read_ahead_kb`: set the boot device's readahead (its disk's
    /// `queue/read_ahead_kb`) before the image is opened (ours); default: the kernel's.
    pub read_ahead_kb: Option<u32>,
    /// `prefetch`: what of the image to ask the kernel to read ahead, in the background,
    /// before the second stage asks for it (ours); default `off`.
    pub prefetch: Prefetch,
    /// `kernel_release`: the kernel this mini initramfs was built for (ours, written by builder);
    /// a different running kernel is fatal.
    pub kernel_release: Option<String>,
    /// `image_uuid`: the erofs UUID of the image built with this mini initramfs (ours, written by
    /// builder); an image on /boot with another UUID is stale, which is fatal.
    pub image_uuid: Option<String>,
    /// `verity_root_hash`, `verity_salt`, `verity_data_blocks`: the image's dm-verity
    /// parameters (ours, written by `builder … --image` for an image built with `--verity`).
    /// All three or none; see [`Config::verity`].
    pub verity_root_hash: Option<String>,
    pub verity_salt: Option<String>,
    pub verity_data_blocks: Option<u64>,
    /// Upstream's build-time keys, kept verbatim in file order so the file round-trips.
    pub build_time: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bootfs: None,
            bootfs_hint: None,
            bootfstype: None,
            fs: None,
            fstype: "erofs".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            init: None,
            emergency: Emergency::default(),
            fallback_entry: None,
            overlay_size: None,
            overlay: true,
            read_ahead_kb: None,
            prefetch: Prefetch::Off,
            kernel_release: None,
            image_uuid: None,
            verity_root_hash: None,
            verity_salt: None,
            verity_data_blocks: None,
            build_time: Vec::new(),
        }
    }
}

/// Where a key/value pair came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Line `n` (1-based) of the config file.
    File { line: usize },
    /// The kernel command line.
    Cmdline,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { line } => write!(f, "{CONFIG_PATH} line {line}"),
            Source::Cmdline => write!(f, "kernel command line"),
        }
    }
}

/// A value that cannot be used. Fatal at boot: it names the key, the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Source,
    pub key: String,
    pub value: String,
    pub problem: String,
    pub accepted: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: bad value {:?} for key '{}': {}; accepted: {}",
            self.source, self.value, self.key, self.problem, self.accepted
        )
    }
}

impl std::error::Error for ConfigError {}

/// Something worth logging that does not stop the boot (an unknown key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub String);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Sets one key. Unknown keys give a warning and change nothing.
    fn set(
        &mut self,
        source: Source,
        key: &str,
        value: &str,
    ) -> Result<Option<ConfigWarning>, ConfigError> {
        let error = |problem: String, accepted: &'static str| ConfigError {
            source,
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
            accepted,
        };
        match key {
            "bootfs" => {
                let bootfs =
                    BootFs::parse(value).map_err(|(problem, forms)| error(problem, forms))?;
                self.bootfs = Some(bootfs);
            }
            "bootfs_hint" => {
                if !value.starts_with("/dev/") {
                    return Err(error("not a device path".to_owned(), "/dev/<path>"));
                }
                self.bootfs_hint = Some(PathBuf::from(value));
            }
            "bootfstype" => {
                self.bootfstype = Some(fs_type(value).map_err(|p| error(p, FSTYPE_FORMS))?)
            }
            "fs" => {
                if value.is_empty() || value.starts_with('/') || value.split('/').any(|c| c == "..")
                {
                    return Err(error(
                        "must be a path relative to /boot that stays inside it".to_owned(),
                        "a relative path such as initoverlayfs-6.12.0.img",
                    ));
                }
                self.fs = Some(value.to_owned());
            }
            "fstype" => self.fstype = fs_type(value).map_err(|p| error(p, FSTYPE_FORMS))?,
            "timeout" => {
                let seconds: u32 = value.parse().map_err(|_| {
                    error(
                        "not a whole number of seconds".to_owned(),
                        "0 to 4294967295",
                    )
                })?;
                self.timeout = Duration::from_secs(seconds.into());
            }
            "init" => {
                if !value.starts_with('/') {
                    return Err(error(
                        "not an absolute path".to_owned(),
                        "an absolute path such as /sbin/init",
                    ));
                }
                self.init = Some(PathBuf::from(value));
            }
            "overlay_size" => {
                if !is_tmpfs_size(value) {
                    return Err(error(
                        "not a tmpfs size".to_owned(),
                        "a number with an optional k, m, g or % suffix, e.g. 512M or 25%",
                    ));
                }
                self.overlay_size = Some(value.to_owned());
            }
            "overlay" => {
                self.overlay = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(error("neither on nor off".to_owned(), "on, off")),
                }
            }
            "prefetch" => {
                self.prefetch = match value {
                    "off" => Prefetch::Off,
                    "image" => Prefetch::Image,
                    _ => return Err(error("neither off nor image".to_owned(), "off, image")),
                }
            }
            "read_ahead_kb" => {
                let kb: u32 = value.parse().map_err(|_| {
                    error(
                        "not a whole number of KiB".to_owned(),
                        "0 to 4294967295, e.g. 128 or 4096",
                    )
                })?;
                self.read_ahead_kb = Some(kb);
            }
            "kernel_release" => {
                if value.is_empty() || value.contains(['/', ' ']) {
                    return Err(error(
                        "not a kernel release".to_owned(),
                        "a release as uname -r prints it, e.g. 6.12.0-1-amd64",
                    ));
                }
                self.kernel_release = Some(value.to_owned());
            }
            "image_uuid" => {
                if !is_uuid(value) {
                    return Err(error(
                        "not a UUID".to_owned(),
                        "8-4-4-4-12 hexadecimal digits",
                    ));
                }
                self.image_uuid = Some(value.to_ascii_lowercase());
            }
            "verity_root_hash" => {
                self.verity_root_hash = Some(
                    crate::verity::parse_hex(value, DIGEST_BYTES..=DIGEST_BYTES).ok_or_else(
                        || {
                            error(
                                "not a SHA-256 root hash".to_owned(),
                                "64 hexadecimal digits, as `builder image --verity` prints them",
                            )
                        },
                    )?,
                );
            }
            "verity_salt" => {
                let hex = if value == "-" { "" } else { value };
                self.verity_salt =
                    Some(crate::verity::parse_hex(hex, 0..=256).ok_or_else(|| {
                        error(
                            "not a salt".to_owned(),
                            "up to 512 hexadecimal digits (an even number), or - for none",
                        )
                    })?);
            }
            "verity_data_blocks" => {
                let blocks: u64 = value.parse().ok().filter(|&b| b > 0).ok_or_else(|| {
                    error(
                        "not a positive whole number of blocks".to_owned(),
                        "the image's size in 4096-byte blocks before its hash tree, e.g. 2560",
                    )
                })?;
                self.verity_data_blocks = Some(blocks);
            }
            "emergency" => {
                self.emergency = Emergency::parse(value)
                    .ok_or_else(|| error("not an emergency action".to_owned(), Emergency::FORMS))?;
            }
            "fallback_entry" => {
                if let Some(problem) = fallback_entry_problem(value) {
                    return Err(error(problem.to_owned(), FALLBACK_ENTRY_FORMS));
                }
                self.fallback_entry = Some(value.to_owned());
            }
            k if BUILD_TIME_KEYS.contains(&k) => {
                self.build_time.push((k.to_owned(), value.to_owned()));
            }
            _ => {
                return Ok(Some(ConfigWarning(format!(
                    "{source}: unknown key '{key}' ignored"
                ))));
            }
        }
        Ok(None)
    }

    /// The image's dm-verity parameters, once the file and the command line are both read:
    /// `None` without a root hash (an unverified image), an error naming what is missing when
    /// only some of the three keys are set.
    pub fn verity(&self) -> Result<Option<Verity>, String> {
        match (
            &self.verity_root_hash,
            &self.verity_salt,
            self.verity_data_blocks,
        ) {
            (None, None, None) => Ok(None),
            (Some(root_hash), Some(salt), Some(data_blocks)) => Ok(Some(Verity {
                root_hash: root_hash.clone(),
                salt: salt.clone(),
                data_blocks,
            })),
            _ => Err(
                "verity_root_hash, verity_salt and verity_data_blocks go together, and only some are set: write all three (`builder … --image <the --verity image>` does)"
                    .to_owned(),
            ),
        }
    }

    /// Whether the file demands dm-verity, which locks what the kernel command line may change.
    fn demands_verity(&self) -> bool {
        self.verity_root_hash.is_some()
    }

    /// When the config file demands dm-verity, the kernel command line (which a bootloader
    /// prompt can edit) may not turn verification off, point at another image, or ask for a
    /// shell: the mini initramfs, covered by the signature, wins. `emergency=fallback` and
    /// `fallback_entry=` stay allowed: they only pick the boot entry of the next boot, which
    /// whoever edits the command line at the boot loader's prompt can pick there anyway.
    fn refuses_from_cmdline(&self, key: &str, value: &str) -> bool {
        self.demands_verity()
            && (VERITY_LOCKED_KEYS.contains(&key) || (key == "emergency" && value == "shell"))
    }

    /// Renders the file storage-init reads; `parse_config(render())` gives back `self`. (A
    /// config with `emergency fallback` but no `fallback_entry` renders a file storage-init
    /// refuses, as it would refuse the same file written by hand.)
    pub fn render(&self) -> String {
        let mut out = String::from("# initoverlayfs configuration, read by storage-init\n");
        let mut line = |k: &str, v: &dyn fmt::Display| out.push_str(&format!("{k} {v}\n"));
        if let Some(v) = &self.bootfs {
            line("bootfs", v);
        }
        if let Some(v) = &self.bootfs_hint {
            line("bootfs_hint", &v.display());
        }
        if let Some(v) = &self.bootfstype {
            line("bootfstype", v);
        }
        if let Some(v) = &self.fs {
            line("fs", v);
        }
        line("fstype", &self.fstype);
        line("timeout", &self.timeout.as_secs());
        if let Some(v) = &self.init {
            line("init", &v.display());
        }
        line("emergency", &self.emergency);
        if let Some(v) = &self.fallback_entry {
            line("fallback_entry", v);
        }
        if let Some(v) = &self.overlay_size {
            line("overlay_size", v);
        }
        if !self.overlay {
            line("overlay", &"off");
        }
        if let Some(v) = &self.read_ahead_kb {
            line("read_ahead_kb", v);
        }
        if self.prefetch != Prefetch::Off {
            line("prefetch", &self.prefetch);
        }
        if let Some(v) = &self.kernel_release {
            line("kernel_release", v);
        }
        if let Some(v) = &self.image_uuid {
            line("image_uuid", v);
        }
        if let Some(v) = &self.verity_root_hash {
            line("verity_root_hash", v);
        }
        if let Some(v) = &self.verity_salt {
            line("verity_salt", &if v.is_empty() { "-" } else { v });
        }
        if let Some(v) = &self.verity_data_blocks {
            line("verity_data_blocks", v);
        }
        for (k, v) in &self.build_time {
            line(k, v);
        }
        out
    }
}

/// tmpfs' `size=`: digits, then at most one of k, m, g (any case) or %.
fn is_tmpfs_size(value: &str) -> bool {
    let digits = value.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    value.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `value` is groups of hexadecimal digits (either case) of these lengths, joined by
/// `-`.
fn is_hex_groups(value: &str, lengths: &[usize]) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.iter().map(|g| g.len()).eq(lengths.iter().copied())
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `8-4-4-4-12`: a UUID as blkid prints ext2/3/4's, xfs', btrfs', erofs' and a GPT GUID.
fn is_uuid(value: &str) -> bool {
    is_hex_groups(value, &[8, 4, 4, 4, 12])
}

/// A UUID the superblock probes print: the 8-4-4-4-12 form, or a FAT volume id `XXXX-XXXX`.
fn is_filesystem_uuid(value: &str) -> bool {
    is_uuid(value) || is_hex_groups(value, &[4, 4])
}

/// A PARTUUID the partition table parsers print: a GPT partition GUID, or an MBR disk
/// signature and partition number `xxxxxxxx-NN`.
fn is_partition_uuid(value: &str) -> bool {
    is_uuid(value) || is_hex_groups(value, &[8, 2])
}

const FSTYPE_FORMS: &str = "a filesystem type name such as ext4, vfat, xfs, erofs";

const FALLBACK_ENTRY_FORMS: &str = "a Boot Loader Specification entry id: the entry's file name under loader/entries/, ending in .conf, without / or \\, whitespace or control characters, e.g. debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf";

/// What is wrong with a `fallback_entry` value, if anything. systemd-boot names a Type #1 entry
/// by its file name, and `LoaderEntryOneShot` must match that name exactly: a path, or a name
/// the config file's whitespace-separated syntax cannot carry, can never match.
fn fallback_entry_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("it is empty")
    } else if value.contains(['/', '\\']) {
        Some("an entry id is a file name, not a path")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if !value.ends_with(".conf") || value == ".conf" {
        Some("it does not name a .conf entry file")
    } else {
        None
    }
}

fn fs_type(value: &str) -> Result<String, String> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(value.to_owned())
    } else {
        Err("not a filesystem type name".to_owned())
    }
}

/// Parses the config file text.
pub fn parse_config(text: &str) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let mut config = Config::default();
    let mut warnings = Vec::new();
    // The line of the last `emergency` key, for the error of a fallback without its entry.
    let mut emergency_line = None;
    // `lines()` handles a missing final newline and strips one `\r` before each `\n`.
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let source = Source::File { line: index + 1 };
        let (key, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        warnings.extend(config.set(source, key, value)?);
        if key == "emergency" {
            emergency_line = Some((source, value));
        }
    }
    // The file is written at build time, next to the boot entries: a fallback without its
    // entry there is a mistake to refuse now, not a halt to discover on the failing boot.
    if config.emergency == Emergency::Fallback
        && config.fallback_entry.is_none()
        && let Some((source, value)) = emergency_line
    {
        return Err(ConfigError {
            source,
            key: "emergency".to_owned(),
            value: value.to_owned(),
            problem: "fallback needs the entry to fall back to: add `fallback_entry <id>`"
                .to_owned(),
            accepted: FALLBACK_ENTRY_FORMS,
        });
    }
    Ok((config, warnings))
}

/// Splits a kernel command line into parameters the way the kernel's `next_arg()` does:
/// whitespace separates, double quotes group (and are removed), either around the whole
/// parameter or around the value after `=`.
pub fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut started = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_ascii_whitespace() && !in_quotes => {
                if started {
                    params.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        params.push(current);
    }
    params
}

/// Applies `initoverlayfs.<key>=<value>` parameters of the kernel command line on top of
/// `config`. Later parameters win, as with the kernel's own.
pub fn apply_cmdline(
    config: &mut Config,
    cmdline: &str,
) -> Result<Vec<ConfigWarning>, ConfigError> {
    let mut warnings = Vec::new();
    let file = config.clone();
    for param in split_cmdline(cmdline) {
        let Some(rest) = param.strip_prefix(CMDLINE_PREFIX) else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        if file.refuses_from_cmdline(key, value) {
            warnings.push(ConfigWarning(format!(
                "refused the override {CMDLINE_PREFIX}{key}={value} of the kernel command line: {CONFIG_PATH} demands dm-verity, and then the command line cannot change the image, its verification or the emergency shell"
            )));
            continue;
        }
        warnings.extend(config.set(Source::Cmdline, key, value)?);
    }
    Ok(warnings)
}

/// The emergency action the command line may choose for a config file whose text is `text`,
/// when that file does not parse: a file that names a root hash keeps its `halt` over a
/// command-line `shell` even then.
pub fn emergency_from_cmdline_for(text: &str, cmdline: &str) -> Option<Emergency> {
    let demands_verity = text
        .lines()
        .any(|l| l.trim_start().starts_with("verity_root_hash"));
    emergency_from_cmdline(cmdline).filter(|&e| !(demands_verity && e == Emergency::Shell))
}

/// The fallback entry for a config file whose text is `text` (`None`: unreadable), when that
/// file does not parse as a whole: the command line's last valid `initoverlayfs.fallback_entry=`,
/// else the file's last valid `fallback_entry` line, so a command-line `emergency=fallback`
/// still has its entry.
pub fn fallback_entry_for(text: Option<&str>, cmdline: &str) -> Option<String> {
    let valid = |v: &&str| fallback_entry_problem(v).is_none();
    let from_cmdline = split_cmdline(cmdline)
        .iter()
        .filter_map(|p| {
            p.strip_prefix(CMDLINE_PREFIX)?
                .strip_prefix("fallback_entry=")
        })
        .filter(valid)
        .map(str::to_owned)
        .next_back();
    from_cmdline.or_else(|| {
        text?
            .lines()
            .filter_map(|l| {
                let (key, value) = l.trim().split_once(|c: char| c.is_ascii_whitespace())?;
                (key == "fallback_entry").then(|| value.trim())
            })
            .filter(valid)
            .map(str::to_owned)
            .next_back()
    })
}

/// The last valid `initoverlayfs.emergency=` of the command line: what to do when the config
/// itself cannot be read.
pub fn emergency_from_cmdline(cmdline: &str) -> Option<Emergency> {
    split_cmdline(cmdline)
        .iter()
        .filter_map(|p| p.strip_prefix(CMDLINE_PREFIX)?.strip_prefix("emergency="))
        .filter_map(Emergency::parse)
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_file(text: &str, expect: impl FnOnce(&Config)) {
        let (config, _) = parse_config(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        expect(&config);
    }

    #[test]
    fn upstream_forms_parse() {
        check_file("bootfs UUID=ABCD-1234\n", |c| {
            assert_eq!(c.bootfs, Some(BootFs::Uuid("abcd-1234".into())))
        });
        check_file("bootfs\tLABEL=boot\r\nbootfstype ext4\r\n", |c| {
            assert_eq!(c.bootfs, Some(BootFs::Label("boot".into())));
            assert_eq!(c.bootfstype.as_deref(), Some("ext4"));
        });
        // Upstream's parser chopped the last character of a file without a final newline.
        check_file("fs initoverlayfs-6.12.img", |c| {
            assert_eq!(c.fs.as_deref(), Some("initoverlayfs-6.12.img"))
        });
        check_file("  # comment\n\n   fstype   erofs   \n", |c| {
            assert_eq!(c.fstype, "erofs")
        });
        check_file("bootfs_hint /dev/vda2\nbootfs PARTLABEL=boot", |c| {
            assert_eq!(c.bootfs_hint, Some(PathBuf::from("/dev/vda2")));
            assert_eq!(c.bootfs, Some(BootFs::PartLabel("boot".into())));
        });
        check_file(
            "bootfs PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            |c| {
                assert_eq!(
                    c.bootfs,
                    Some(BootFs::PartUuid(
                        "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
                    ))
                )
            },
        );
        check_file("erofs_compression -zlz4hc,11\n", |c| {
            assert_eq!(
                c.build_time,
                vec![("erofs_compression".into(), "-zlz4hc,11".into())]
            )
        });
        check_file("timeout 5", |c| {
            assert_eq!(c.timeout, Duration::from_secs(5))
        });
        check_file("overlay off\nread_ahead_kb 4096\n", |c| {
            assert!(!c.overlay);
            assert_eq!(c.read_ahead_kb, Some(4096));
        });
        check_file("overlay on", |c| assert!(c.overlay));
    }

    #[test]
    fn unknown_key_is_a_warning() {
        let (config, warnings) = parse_config("colour blue\nfstype ext4\n").unwrap();
        assert_eq!(config.fstype, "ext4");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].0.contains("line 1") && warnings[0].0.contains("colour"),
            "{warnings:?}"
        );
    }

    fn check_error(text: &str, key: &str, fragment: &str) {
        let err = parse_config(text).expect_err(text);
        assert_eq!(err.key, key);
        let shown = err.to_string();
        assert!(shown.contains(fragment), "{shown}");
    }

    #[test]
    fn bad_values_name_key_value_and_forms() {
        check_error("timeout soon", "timeout", "\"soon\"");
        check_error("\n\ntimeout -1", "timeout", "line 3");
        check_error("bootfs vda2", "bootfs", "UUID=<uuid>");
        check_error("bootfs UUID=", "bootfs", "empty");
        check_error("fs /etc/passwd", "fs", "relative");
        check_error("fs ../x.img", "fs", "inside");
        check_error("fstype ext4;rm", "fstype", "filesystem type");
        check_error("init sbin/init", "init", "absolute");
        check_error("overlay maybe", "overlay", "on, off");
        check_error("read_ahead_kb 4M", "read_ahead_kb", "KiB");
        check_error(
            "emergency panic",
            "emergency",
            "halt, poweroff, reboot, shell, fallback",
        );
        check_error("verity_root_hash abc", "verity_root_hash", "64 hexadecimal");
        check_error(
            &format!("verity_root_hash {}", "g".repeat(64)),
            "verity_root_hash",
            "SHA-256",
        );
        check_error("verity_salt 123", "verity_salt", "even number");
        check_error("verity_data_blocks 0", "verity_data_blocks", "positive");
        check_error("verity_data_blocks -5", "verity_data_blocks", "4096-byte");
    }

    /// Every `bootfs` form, good and bad, from the config file and the command line alike: a
    /// UUID or PARTUUID no probe could print is refused at parse time, naming the key, the value
    /// and the forms it could take.
    #[test]
    fn bootfs_values() {
        // (value, what it parses to, or the fragments the error must show)
        let good: &[(&str, BootFs)] = &[
            (
                "UUID=3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708",
                BootFs::Uuid("3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708".into()),
            ),
            (
                "UUID=3F1B2C4D-5E6F-4780-91A2-B3C4D5E6F708",
                BootFs::Uuid("3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708".into()),
            ),
            ("UUID=1234-ABCD", BootFs::Uuid("1234-abcd".into())),
            ("UUID=0bad-f00d", BootFs::Uuid("0bad-f00d".into())),
            (
                "PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                BootFs::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into()),
            ),
            (
                "PARTUUID=5a1f0e2d-01",
                BootFs::PartUuid("5a1f0e2d-01".into()),
            ),
            (
                "PARTUUID=5A1F0E2D-0C",
                BootFs::PartUuid("5a1f0e2d-0c".into()),
            ),
            ("LABEL=not-a-uuid", BootFs::Label("not-a-uuid".into())),
            ("LABEL=my boot", BootFs::Label("my boot".into())),
            (
                "PARTLABEL=EFI System",
                BootFs::PartLabel("EFI System".into()),
            ),
            ("/dev/vda1", BootFs::Path("/dev/vda1".into())),
        ];
        const UUID_ERROR: &[&str] = &[
            "not a filesystem UUID",
            "8-4-4-4-12 hexadecimal digits",
            "XXXX-XXXX hexadecimal digits",
            "FAT volume id",
            "LABEL=<label>",
        ];
        const PARTUUID_ERROR: &[&str] = &[
            "not a partition UUID",
            "GPT partition GUID",
            "xxxxxxxx-NN hexadecimal digits",
            "MBR disk signature",
            "PARTLABEL=<name>",
        ];
        let bad: &[(&str, &[&str])] = &[
            ("UUID=not-a-uuid", UUID_ERROR),
            ("UUID=boot", UUID_ERROR),
            ("UUID=aaaa", UUID_ERROR),
            ("UUID=ABCD", UUID_ERROR),
            ("UUID=1234ABCD", UUID_ERROR),
            ("UUID=1234-ABC", UUID_ERROR),
            ("UUID=1234-ABCDE", UUID_ERROR),
            ("UUID=123g-abcd", UUID_ERROR),
            ("UUID=3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f70", UUID_ERROR),
            ("UUID=3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f7080", UUID_ERROR),
            ("UUID=3f1b2c4d5e6f478091a2b3c4d5e6f708", UUID_ERROR),
            ("UUID={3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708}", UUID_ERROR),
            ("UUID=3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f7zz", UUID_ERROR),
            // An NTFS serial number (16 hex digits): no probe of storage-init's reads NTFS.
            ("UUID=0123456789ABCDEF", UUID_ERROR),
            // An MBR PARTUUID is not a filesystem UUID.
            ("UUID=5a1f0e2d-01", UUID_ERROR),
            ("UUID=", &["the part after '=' is empty", "8-4-4-4-12"]),
            ("PARTUUID=not-a-uuid", PARTUUID_ERROR),
            ("PARTUUID=1234-ABCD", PARTUUID_ERROR),
            ("PARTUUID=5a1f0e2d-1", PARTUUID_ERROR),
            ("PARTUUID=5a1f0e2d-001", PARTUUID_ERROR),
            ("PARTUUID=5a1f0e2-01", PARTUUID_ERROR),
            ("PARTUUID=5a1f0e2d-0g", PARTUUID_ERROR),
            (
                "PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de",
                PARTUUID_ERROR,
            ),
            (
                "PARTUUID=",
                &["the part after '=' is empty", "GPT partition GUID"],
            ),
            ("LABEL=", &["the part after '=' is empty", "UUID=<uuid>"]),
            (
                "PARTLABEL=",
                &["the part after '=' is empty", "UUID=<uuid>"],
            ),
            (
                "vda1",
                &["it names no device", "UUID=<uuid>, LABEL=<label>"],
            ),
            (
                "uuid=3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708",
                &["it names no device"],
            ),
        ];
        for (value, expected) in good {
            let (config, _) = parse_config(&format!("bootfs {value}\n"))
                .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(config.bootfs.as_ref(), Some(expected), "{value:?}");
            let mut from_cmdline = Config::default();
            apply_cmdline(
                &mut from_cmdline,
                &format!("initoverlayfs.bootfs=\"{value}\""),
            )
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(from_cmdline.bootfs.as_ref(), Some(expected), "{value:?}");
            // What it renders parses back to the same.
            let (again, _) = parse_config(&config.render()).unwrap();
            assert_eq!(again, config, "{value:?}");
        }
        for (value, fragments) in bad {
            let file = parse_config(&format!("bootfs {value}"));
            let mut config = Config::default();
            let cmdline = apply_cmdline(&mut config, &format!("initoverlayfs.bootfs=\"{value}\""));
            for (source, result) in [("file", file.map(|_| ())), ("cmdline", cmdline.map(|_| ()))] {
                let err = result.expect_err(&format!("{value:?} from the {source}"));
                assert_eq!(err.key, "bootfs");
                let shown = err.to_string();
                assert!(
                    shown.contains(&format!("{value:?}"))
                        && shown.contains("'bootfs'")
                        && fragments.iter().all(|f| shown.contains(f)),
                    "{value:?} from the {source}: {shown}"
                );
            }
        }
    }

    /// What the probes and the partition table parsers print for a device is what `bootfs`
    /// accepts: the `found bootfs` and FATAL lines list them, and a user copies them from there.
    #[test]
    fn probed_identities_parse() {
        let accepts = |value: String| {
            let (config, _) = parse_config(&format!("bootfs {value}\n"))
                .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert!(
                config
                    .bootfs
                    .is_some_and(|b| b.to_string().eq_ignore_ascii_case(&value)),
                "{value}"
            );
        };
        let mut ext = vec![0u8; crate::probe::PROBE_LEN];
        ext[1024 + 0x38..][..2].copy_from_slice(&0xEF53u16.to_le_bytes());
        ext[1024 + 0x68..][..16].copy_from_slice(&[0xa5; 16]);
        let sb = crate::probe::probe(&ext).expect("an ext superblock");
        accepts(format!("UUID={}", sb.uuid));

        let mut fat = vec![0u8; crate::probe::PROBE_LEN];
        fat[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        fat[0x16..0x18].copy_from_slice(&32u16.to_le_bytes());
        fat[0x24 + 2] = 0x29;
        fat[0x24 + 3..0x24 + 7].copy_from_slice(&0xABCD_0123u32.to_le_bytes());
        fat[0x24 + 7..0x24 + 18].copy_from_slice(b"NO NAME    ");
        fat[0x24 + 18..0x24 + 26].copy_from_slice(b"FAT16   ");
        fat[510..512].copy_from_slice(&[0x55, 0xAA]);
        let sb = crate::probe::probe(&fat).expect("a FAT boot sector");
        assert_eq!(sb.uuid, "ABCD-0123");
        accepts(format!("UUID={}", sb.uuid));

        let mut mbr = vec![0u8; 512];
        mbr[440..444].copy_from_slice(&0x5A1F_0E2Du32.to_le_bytes());
        for i in 0..4 {
            mbr[446 + i * 16 + 4] = 0x83;
        }
        mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
        let mut gpt_header = vec![0u8; 92];
        gpt_header[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut gpt_entry = vec![0u8; 128];
        gpt_entry[..16].copy_from_slice(&[0x0f; 16]);
        gpt_entry[16..32].copy_from_slice(&[0xc3; 16]);
        let gpt = crate::partition::parse_gpt_entries(&gpt_entry, &gpt_header);
        let partitions = crate::partition::parse_mbr(&mbr);
        assert_eq!((gpt.len(), partitions.len()), (1, 4));
        for partition in gpt.into_iter().chain(partitions) {
            accepts(format!("PARTUUID={}", partition.partuuid));
        }
    }

    const VERITY_FILE: &str = "bootfs UUID=1234-aaaa\nverity_root_hash ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\nverity_salt -\nverity_data_blocks 10\n";

    #[test]
    fn verity_keys_go_together() {
        let (config, _) = parse_config(VERITY_FILE).unwrap();
        let verity = config.verity().unwrap().unwrap();
        assert_eq!(verity.root_hash, "ab".repeat(32));
        assert_eq!(verity.salt, "");
        assert_eq!(verity.data_blocks, 10);
        assert_eq!(Config::default().verity(), Ok(None));
        let (partial, _) = parse_config("verity_data_blocks 10\n").unwrap();
        assert!(partial.verity().unwrap_err().contains("go together"));
    }

    /// A config demanding dm-verity keeps the image, its verification and the emergency action
    /// from the command line; everything else may still be overridden.
    #[test]
    fn a_verity_config_refuses_overrides() {
        let (mut config, _) = parse_config(VERITY_FILE).unwrap();
        let before = config.clone();
        let warnings = apply_cmdline(
            &mut config,
            &format!(
                "initoverlayfs.verity_root_hash={} initoverlayfs.verity_salt=- initoverlayfs.fs=other.img initoverlayfs.fstype=ext4 initoverlayfs.emergency=shell initoverlayfs.timeout=3 initoverlayfs.emergency=reboot",
                "cd".repeat(32)
            ),
        )
        .unwrap();
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| w.0.contains("refused")),
            "{warnings:?}"
        );
        assert!(warnings[2].0.contains("initoverlayfs.fs=other.img"));
        assert_eq!(config.verity(), before.verity());
        assert_eq!(config.fs, None);
        assert_eq!(config.fstype, "erofs");
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.emergency, Emergency::Reboot);

        // Without a root hash in the file, the command line may set one (a signed command
        // line, say) and override it again.
        let (mut plain, _) = parse_config("bootfs UUID=1234-aaaa\n").unwrap();
        let warnings = apply_cmdline(
            &mut plain,
            &format!(
                "initoverlayfs.verity_root_hash={} initoverlayfs.verity_salt=00 initoverlayfs.verity_data_blocks=4 initoverlayfs.emergency=shell",
                "cd".repeat(32)
            ),
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(plain.verity().unwrap().unwrap().data_blocks, 4);
        assert_eq!(plain.emergency, Emergency::Shell);
    }

    #[test]
    fn a_verity_config_keeps_its_emergency_even_unparsed() {
        let cmdline = "initoverlayfs.emergency=shell";
        assert_eq!(emergency_from_cmdline_for(VERITY_FILE, cmdline), None);
        assert_eq!(
            emergency_from_cmdline_for("bootfs UUID=1234-aaaa\n", cmdline),
            Some(Emergency::Shell)
        );
        assert_eq!(
            emergency_from_cmdline_for(VERITY_FILE, "initoverlayfs.emergency=poweroff"),
            Some(Emergency::PowerOff)
        );
    }

    const ENTRY: &str = "debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf";

    #[test]
    fn fallback_entry_values() {
        for entry in [ENTRY, "a.conf", "fedora-42~fallback.conf", "é.conf"] {
            let (config, _) =
                parse_config(&format!("emergency fallback\nfallback_entry {entry}\n"))
                    .unwrap_or_else(|e| panic!("{entry:?}: {e}"));
            assert_eq!(config.emergency, Emergency::Fallback);
            assert_eq!(config.fallback_entry.as_deref(), Some(entry));
            let (again, warnings) = parse_config(&config.render()).unwrap();
            assert_eq!(again, config);
            assert!(warnings.is_empty());
            let mut from_cmdline = Config::default();
            apply_cmdline(
                &mut from_cmdline,
                &format!("initoverlayfs.fallback_entry={entry}"),
            )
            .unwrap();
            assert_eq!(from_cmdline.fallback_entry.as_deref(), Some(entry));
        }
        // (value, what the error says is wrong); quoted on the command line, which can carry
        // whitespace the file cannot.
        let bad = [
            ("", "empty"),
            ("entries/a.conf", "not a path"),
            ("/loader/entries/a.conf", "not a path"),
            ("a\\b.conf", "not a path"),
            ("a b.conf", "whitespace"),
            ("a\tb.conf", "whitespace"),
            ("a\u{1}b.conf", "control"),
            ("a\u{7f}.conf", "control"),
            ("a.efi", "does not name a .conf"),
            ("a.conf.bak", "does not name a .conf"),
            (".conf", "does not name a .conf"),
        ];
        for (value, problem) in bad {
            let mut config = Config::default();
            let err = apply_cmdline(
                &mut config,
                &format!("initoverlayfs.fallback_entry=\"{value}\""),
            )
            .expect_err(value);
            assert_eq!(err.key, "fallback_entry");
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("{value:?}"))
                    && shown.contains("'fallback_entry'")
                    && shown.contains(problem)
                    && shown.contains("Boot Loader Specification entry id"),
                "{value:?}: {shown}"
            );
            if !value.contains(char::is_whitespace) {
                let err = parse_config(&format!("fallback_entry {value}\n")).expect_err(value);
                assert!(err.to_string().contains(problem), "{value:?}: {err}");
            }
        }
    }

    /// The file is written with the boot entries: `emergency fallback` there needs its entry.
    #[test]
    fn a_fallback_in_the_file_needs_its_entry() {
        let err = parse_config("bootfs UUID=1234-aaaa\nemergency fallback\n").unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.source),
            ("emergency", Source::File { line: 2 })
        );
        let shown = err.to_string();
        assert!(
            shown.contains("\"fallback\"") && shown.contains("add `fallback_entry <id>`"),
            "{shown}"
        );
        // In either order; and a later action replaces the fallback.
        for text in [
            format!("fallback_entry {ENTRY}\nemergency fallback\n"),
            format!("emergency fallback\nfallback_entry {ENTRY}\n"),
        ] {
            let (config, _) = parse_config(&text).unwrap();
            assert_eq!(config.emergency, Emergency::Fallback);
        }
        assert!(parse_config("emergency fallback\nemergency halt\n").is_ok());
        // The command line may ask for it without an entry: the action then halts.
        let (mut config, _) = parse_config("bootfs UUID=1234-aaaa\n").unwrap();
        apply_cmdline(&mut config, "initoverlayfs.emergency=fallback").unwrap();
        assert_eq!(
            (config.emergency, config.fallback_entry),
            (Emergency::Fallback, None)
        );
    }

    /// Falling back picks the next boot's entry, which the boot loader's prompt can pick
    /// anyway: a verity config lets the command line choose it.
    #[test]
    fn a_verity_config_allows_a_fallback() {
        let (mut config, _) = parse_config(VERITY_FILE).unwrap();
        let warnings = apply_cmdline(
            &mut config,
            &format!("initoverlayfs.emergency=fallback initoverlayfs.fallback_entry={ENTRY}"),
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.emergency, Emergency::Fallback);
        assert_eq!(config.fallback_entry.as_deref(), Some(ENTRY));
        assert_eq!(
            emergency_from_cmdline_for(VERITY_FILE, "initoverlayfs.emergency=fallback"),
            Some(Emergency::Fallback)
        );
    }

    #[test]
    fn fallback_entry_of_an_unparsed_file() {
        let file = format!("fallback_entry {ENTRY}\ntimeout soon\n");
        assert!(parse_config(&file).is_err());
        assert_eq!(
            fallback_entry_for(Some(&file), "quiet").as_deref(),
            Some(ENTRY)
        );
        // The command line's valid value wins; an invalid one is passed over.
        let cmdline = "initoverlayfs.fallback_entry=b.conf initoverlayfs.fallback_entry=a/b.conf";
        assert_eq!(
            fallback_entry_for(Some(&file), cmdline).as_deref(),
            Some("b.conf")
        );
        assert_eq!(fallback_entry_for(None, cmdline).as_deref(), Some("b.conf"));
        assert_eq!(fallback_entry_for(None, "quiet"), None);
        assert_eq!(fallback_entry_for(Some("fallback_entry x.efi\n"), ""), None);
    }

    #[test]
    fn cmdline_splits_like_the_kernel() {
        let check =
            |line: &str, expected: &[&str]| assert_eq!(split_cmdline(line), expected, "{line}");
        check("", &[]);
        check("  ro  quiet\n", &["ro", "quiet"]);
        check("a=\"b c\" d", &["a=b c", "d"]);
        check("\"a=b c\" d", &["a=b c", "d"]);
        check("x=\"\"", &["x="]);
    }

    #[test]
    fn cmdline_overrides_file() {
        let (mut config, _) = parse_config("bootfs UUID=1234-aaaa\ntimeout 30\n").unwrap();
        let warnings = apply_cmdline(
            &mut config,
            "BOOT_IMAGE=/vmlinuz root=/dev/sda initoverlayfs.bootfs=UUID=5678-BBBB initoverlayfs.timeout=5 initoverlayfs.nope=1",
        )
        .unwrap();
        assert_eq!(config.bootfs, Some(BootFs::Uuid("5678-bbbb".into())));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(warnings.len(), 1);
        let err = apply_cmdline(&mut config, "initoverlayfs.timeout=x").unwrap_err();
        assert_eq!(err.source, Source::Cmdline);
    }

    #[test]
    fn emergency_hint_from_cmdline() {
        let check =
            |line: &str, expected| assert_eq!(emergency_from_cmdline(line), expected, "{line}");
        check("quiet", None);
        check("initoverlayfs.emergency=reboot", Some(Emergency::Reboot));
        check(
            "initoverlayfs.emergency=shell initoverlayfs.emergency=bogus",
            Some(Emergency::Shell),
        );
        check(
            "initoverlayfs.emergency=halt initoverlayfs.emergency=poweroff",
            Some(Emergency::PowerOff),
        );
    }

    #[test]
    fn prefetch_values() {
        let check = |text: &str, expected: Option<Prefetch>| {
            let parsed = parse_config(text).ok().map(|(config, _)| config.prefetch);
            assert_eq!(parsed, expected, "{text}");
        };
        check("", Some(Prefetch::Off));
        check("prefetch off\n", Some(Prefetch::Off));
        check("prefetch image\n", Some(Prefetch::Image));
        check("prefetch all\n", None);
        check("prefetch\n", None);
    }

    #[test]
    fn render_round_trips() {
        let config = Config {
            bootfs: Some(BootFs::Uuid("0123-abcd".into())),
            bootfs_hint: Some("/dev/vda1".into()),
            bootfstype: Some("ext4".into()),
            fs: Some("initoverlayfs-6.12.img".into()),
            fstype: "erofs".into(),
            timeout: Duration::from_secs(7),
            init: Some("/init".into()),
            emergency: Emergency::Fallback,
            fallback_entry: Some("debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf".into()),
            overlay_size: Some("25%".into()),
            overlay: false,
            read_ahead_kb: Some(4096),
            prefetch: Prefetch::Image,
            kernel_release: Some("6.12.95+deb12-amd64".into()),
            image_uuid: Some("0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9".into()),
            verity_root_hash: Some("ab".repeat(32)),
            verity_salt: Some(String::new()),
            verity_data_blocks: Some(2560),
            build_time: vec![("erofs_compression".into(), "-zlz4hc,11".into())],
        };
        let (parsed, warnings) = parse_config(&config.render()).unwrap();
        assert_eq!(parsed, config);
        assert!(warnings.is_empty());
        let (parsed, _) = parse_config(&Config::default().render()).unwrap();
        assert_eq!(parsed, Config::default());
    }
}
