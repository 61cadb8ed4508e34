//! The `builder` command line as clap definitions: parsed by the binary (`main.rs`), and read
//! by `cargo xtask dist`, which makes the package's man pages and shell completions from
//! [`command`] so they list exactly the options the program takes.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::install::LayoutKind;
use crate::presets::StoragePreset;

/// The whole command line, subcommands and all, as clap sees it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The name upstream initoverlayfs's install command has, which the packages link to this
/// program: run under it, the program takes [`UpstreamInstallCli`].
pub const UPSTREAM_INSTALL: &str = "initoverlayfs-install";

/// What `install --help` says of the upstream command (its man page is install's).
const UPSTREAM_INSTALL_HELP: &str = "Invoked as initoverlayfs-install (upstream initoverlayfs's command, a link to this program in the packages), it takes upstream's invocation: initoverlayfs-install [--kver KVER] [-f|--force] [--initoverlayfs-init], and does what `install --kver KVER` does (default: the running kernel). -f and --initoverlayfs-init are accepted and change nothing: the initramfs is always replaced, and storage-init is always the mini initramfs's init.";

/// `initoverlayfs-install` as upstream initoverlayfs is invoked (by people, scripts and its
/// kernel-install plugin): it does what `install --kver <kver>` does.
#[derive(Debug, Parser)]
#[command(
    name = UPSTREAM_INSTALL,
    about = "Install initoverlayfs for a kernel, invoked as upstream initoverlayfs is: the same as `initoverlayfs install --kver KVER`",
    after_help = "Options of upstream's dracut invocation that change nothing here are accepted: -f/--force (the initramfs is always replaced) and --initoverlayfs-init (storage-init is always the mini initramfs's init). The options `initoverlayfs install` was given last are kept in /etc/initoverlayfs/install.conf."
)]
pub struct UpstreamInstallCli {
    /// The kernel release (default: the running kernel's, as `uname -r` prints it).
    #[arg(long)]
    pub kver: Option<String>,
    /// Accepted: the initramfs is always replaced.
    #[arg(short, long)]
    pub force: bool,
    /// Accepted: storage-init, this implementation's own init, is always the mini
    /// initramfs's PID 1.
    #[arg(long)]
    pub initoverlayfs_init: bool,
}

/// [`UpstreamInstallCli`] as clap sees it.
pub fn upstream_install_command() -> clap::Command {
    UpstreamInstallCli::command()
}

impl UpstreamInstallCli {
    /// The `install` command line this invocation stands for; `running` is the running
    /// kernel's release, the default.
    pub fn to_install(&self, running: &str) -> Cli {
        let kver = self.kver.as_deref().unwrap_or(running);
        Cli::parse_from(["initoverlayfs", "install", "--kver", kver])
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "builder",
    about = "Builds initoverlayfs boot artifacts reproducibly",
    after_help = "Exit status: 0 done; 1 the inputs, the tools or the target kernel did not allow it (one \
                  `builder: error:` line says which input and what to do); 2 the command line is wrong."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Build the initoverlayfs image (erofs, through mkfs.erofs from erofs-utils) from a
    /// directory or an initramfs file.
    #[command(alias = "erofs")]
    Image(ImageArgs),
    /// Build the mini initramfs: storage-init as /init, its config, the storage and filesystem
    /// modules, compressed as the kernel allows.
    #[command(alias = "mini-initramfs")]
    Initramfs(InitramfsArgs),
    /// Print the storage-init config (/etc/initoverlayfs.conf) these options give, checked by
    /// storage-init's own parser.
    Config(ConfigCommandArgs),
    /// Print a sorted listing of an initramfs (any compression, concatenated archives: the last
    /// entry of each path, as the kernel unpacks them), an erofs image (mounted read-only:
    /// needs root) or a directory.
    List {
        /// The initramfs, image or directory.
        path: PathBuf,
    },
    /// Unpack an initramfs file (any compression, concatenated archives) into a directory.
    Unpack {
        /// The initramfs file.
        initramfs: PathBuf,
        /// The directory to create and fill.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the module load list computed for a kernel modules tree.
    Modules(ModulesArgs),
    /// Install initoverlayfs for a kernel on this machine (or a tree with --root): the image,
    /// the mini initramfs in the place the bootloader loads, the classic initramfs kept as a
    /// fallback (with a boot entry where the bootloader reads BLS entries), and the hooks that
    /// redo it after every kernel or initramfs update. Under systemd-boot a failed boot falls
    /// back by itself: the entry is counted (--tries) and storage-init reboots into the
    /// fallback entry once.
    #[command(after_long_help = UPSTREAM_INSTALL_HELP)]
    Install(InstallArgs),
    /// Say which boot entry this boot came from and why, the FATAL line the last failed
    /// initoverlayfs boot left, and each installed kernel's entries with their boot counters.
    Status {
        /// The tree to look at instead of the live system (no firmware variables then).
        #[arg(long, default_value = "/", env = "INITOVERLAYFS_ROOT")]
        root: PathBuf,
        /// fedora, debian or bls; default: detected.
        #[arg(long)]
        layout: Option<LayoutKind>,
    },
    /// Undo `install`: the classic initramfs back in place, the image, fallback entries and
    /// (without --kver) the hooks removed.
    Uninstall(UninstallArgs),
    /// Assemble a Unified Kernel Image: the systemd EFI stub with the kernel, the initramfs,
    /// the command line and os-release as PE sections (reproducibly), signed with sbsign when
    /// a key is given.
    Uki(UkiArgs),
}

#[derive(Debug, clap::Args)]
pub struct UkiArgs {
    /// The systemd EFI stub (systemd-boot-efi: /usr/lib/systemd/boot/efi/linuxx64.efi.stub).
    #[arg(long, default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")]
    pub stub: PathBuf,
    /// The kernel image (vmlinuz).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The initramfs (e.g. the mini initramfs).
    #[arg(long)]
    pub initrd: PathBuf,
    /// The kernel command line; under Secure Boot the stub ignores any other.
    #[arg(long)]
    pub cmdline: String,
    /// The os-release file the boot menu names the image by.
    #[arg(long, default_value = "/etc/os-release")]
    pub os_release: PathBuf,
    /// The kernel release, recorded in a `.uname` section.
    #[arg(long)]
    pub uname: Option<String>,
    /// The signing key (PEM) for sbsign; with --sign-cert.
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The certificate (PEM) matching --sign-key, enrolled in the firmware's db.
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Where to write the UKI (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The kernel release to install for (`uname -r` for the running one).
    #[arg(long, required_unless_present = "all")]
    pub kver: Option<String>,
    /// Every kernel that has a classic initramfs where its boot loader loads it (what the
    /// package runs when it is installed or upgraded). A kernel that fails is reported and the
    /// others are still done; it keeps its classic initramfs.
    #[arg(long, conflicts_with_all = ["kver", "initramfs"])]
    pub all: bool,
    /// The tree to install into instead of the live system.
    #[arg(long, default_value = "/", env = "INITOVERLAYFS_ROOT")]
    pub root: PathBuf,
    /// fedora, debian or bls (kernel-install's layout=bls); default: detected from the tree.
    #[arg(long)]
    pub layout: Option<LayoutKind>,
    /// The full initramfs to convert (default: the one the bootloader loads now, or the kept
    /// classic one when that is already a mini initramfs).
    #[arg(long, conflicts_with = "dracut")]
    pub initramfs: Option<PathBuf>,
    /// Make the full initramfs with the system's dracut first (run through chroot with
    /// --root).
    #[arg(long)]
    pub dracut: bool,
    /// The static storage-init binary (default: <root>/usr/lib/initoverlayfs/storage-init).
    #[arg(long)]
    pub storage_init: Option<PathBuf>,
    /// Storage drivers to ship (default all-storage): virtio, nvme, usb, mmc, scsi, all-storage.
    #[arg(long = "preset", value_delimiter = ',')]
    pub presets: Vec<StoragePreset>,
    /// The boot filesystem (default: the fstab line of /boot, or of / when /boot is a
    /// directory of the root filesystem).
    #[arg(long)]
    pub bootfs: Option<String>,
    /// Filesystem type of the boot filesystem; its driver is shipped. When absent: the type of
    /// the fstab line the bootfs comes from (unless `auto`), else the type in the superblock of
    /// the device the bootfs names, when this machine has it and may read it; else the drivers
    /// of every filesystem storage-init probes. One stderr line says which.
    #[arg(long)]
    pub bootfstype: Option<String>,
    /// Do not write the kernel-install plugin or the Debian hooks (nor the install options
    /// they reuse, /etc/initoverlayfs/install.conf): what the hooks themselves run. Hooks a
    /// package installed are never written over.
    #[arg(long)]
    pub no_hooks: bool,
    /// This program's path on the target, which the hooks call (default: the path it runs
    /// from when that is a system program directory, such as the package's
    /// /usr/sbin/initoverlayfs; else /usr/local/sbin/initoverlayfs-builder).
    #[arg(long)]
    pub builder_path: Option<String>,
    /// Protect the image with dm-verity: its hash tree appended, its root hash in the mini
    /// initramfs (then sign what carries that, e.g. a UKI). The hooks keep it for every later
    /// kernel and initramfs update.
    #[arg(long)]
    pub verity: bool,
    /// Boot counting under systemd-boot: how many times the boot loader tries the
    /// initoverlayfs entry before it prefers the classic fallback entry; 0 turns counting off.
    /// Default: kernel-install's /etc/kernel/tries, else 3. Needs systemd-bless-boot, which
    /// marks the entry good once a boot reaches boot-complete.target.
    #[arg(long)]
    pub tries: Option<u32>,
    /// kernel-install's staging area under layout=uki (what its uki plugin passes): convert
    /// its initrd, write the image to $BOOT/<entry-token>/<kver>/ and put the mini initramfs
    /// in the initrd's place, for 60-ukify to bake into the UKI.
    #[arg(long, conflicts_with_all = ["all", "initramfs", "dracut"])]
    pub uki_staging: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Only this kernel (repeatable); without it every installed kernel, and the hooks too.
    #[arg(long)]
    pub kver: Vec<String>,
    /// The tree to work on instead of the live system.
    #[arg(long, default_value = "/", env = "INITOVERLAYFS_ROOT")]
    pub root: PathBuf,
    /// fedora, debian or bls; default: detected.
    #[arg(long)]
    pub layout: Option<LayoutKind>,
    /// The kernel is being removed: delete its classic fallback instead of restoring it.
    #[arg(long)]
    pub kernel_removed: bool,
}

#[derive(Debug, clap::Args)]
pub struct KernelArgs {
    /// Directory holding lib/modules/<kver> (as given to `depmod -b`) and boot/config-<kver>.
    #[arg(long)]
    pub kernel_root: PathBuf,
    /// Kernel release of the target (`uname -r`).
    #[arg(long)]
    pub kver: String,
    /// A module (or alias) to load; repeat or separate with commas. Dependencies are added.
    #[arg(long = "module", value_delimiter = ',')]
    pub modules: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PresetArgs {
    /// Storage drivers to ship, loaded at boot only for devices that exist: virtio, nvme,
    /// usb, mmc, scsi, all-storage; repeat or separate with commas.
    #[arg(long = "preset", value_delimiter = ',')]
    pub presets: Vec<StoragePreset>,
}

/// The keys of storage-init's config a build sets (docs/configuration.md).
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The boot filesystem: UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=… or /dev/….
    #[arg(long)]
    pub bootfs: String,
    /// Filesystem type of the boot filesystem; its driver is shipped. When absent: the type in
    /// the superblock of the device --bootfs names, when this machine has it and may read it;
    /// else not known, and the drivers of every filesystem storage-init probes (ext2/3/4,
    /// vfat, xfs, btrfs, erofs) are shipped where the kernel has them as modules. One stderr
    /// line says which.
    #[arg(long)]
    pub bootfstype: Option<String>,
    /// A device path storage-init tries first.
    #[arg(long)]
    pub bootfs_hint: Option<String>,
    /// Image path relative to /boot (default at boot: initoverlayfs-<kver>.img).
    #[arg(long)]
    pub fs: Option<String>,
    /// Filesystem type of the image: erofs (default) or ext4.
    #[arg(long)]
    pub fstype: Option<String>,
    /// Seconds to wait for the boot device.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Program to exec in the new root.
    #[arg(long)]
    pub init: Option<String>,
    /// What storage-init does after a FATAL error: halt (default), poweroff, reboot, shell, or
    /// fallback (systemd-boot boots --fallback-entry once, then reboot; `install` sets it up).
    #[arg(long)]
    pub emergency: Option<String>,
    /// The classic fallback's boot entry id (its file name) for `--emergency fallback`.
    #[arg(long)]
    pub fallback_entry: Option<String>,
    /// Size of the tmpfs under the overlay's upper layer (tmpfs size=, e.g. 50% or 256M).
    #[arg(long)]
    pub overlay_size: Option<String>,
    /// The image built for this mini initramfs: its UUID is recorded, and storage-init refuses
    /// an image on /boot with another one (a stale image). An image built with `--verity` has
    /// its root hash, salt and size recorded too: storage-init then boots it only through
    /// dm-verity, and the kernel command line cannot turn that off.
    #[arg(long)]
    pub image: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InitramfsArgs {
    /// The static storage-init binary.
    #[arg(long)]
    pub storage_init: PathBuf,
    #[command(flatten)]
    pub kernel: KernelArgs,
    #[command(flatten)]
    pub presets: PresetArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// auto (zstd, else gzip, else another the kernel unpacks: its CONFIG_RD_* options), none,
    /// zstd, gzip, lz4, xz or bzip2. One the kernel cannot unpack is refused.
    #[arg(long, default_value = "auto")]
    pub compression: String,
    /// The mini initramfs's PID 1: storage-init (as /init), or systemd (in initrd mode, with
    /// storage-init as its `--prepare-only` service, then `systemctl switch-root`), for a
    /// first stage that wants udev, Plymouth or TPM unlock. systemd needs --systemd-from.
    #[arg(long, value_enum, default_value = "storage-init")]
    pub pid1: crate::systemd_initramfs::Pid1,
    /// With --pid1 systemd: a full systemd initramfs (e.g. dracut's, any compression) or a
    /// root directory, from which systemd, systemctl and their shared libraries are taken.
    #[arg(long, required_if_eq("pid1", "systemd"))]
    pub systemd_from: Option<PathBuf>,
    /// Where to write the archive (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ConfigCommandArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The kernel release the config is for: storage-init refuses to boot another one.
    #[arg(long)]
    pub kver: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The directory to put in the image.
    #[arg(
        long,
        required_unless_present = "initramfs",
        conflicts_with = "initramfs"
    )]
    pub source: Option<PathBuf>,
    /// An initramfs file (e.g. dracut's) whose content goes in the image. An initramfs-tools
    /// image is refused: its init cannot switch root from the overlay.
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Where to write the image (default with --kver: initoverlayfs-<kver>.img, upstream's
    /// name, in the current directory).
    #[arg(short, long, required_unless_present = "kver")]
    pub output: Option<PathBuf>,
    /// Compressor and level for mkfs.erofs -z, e.g. lz4hc,11, or none. Default: lz4hc,11 when
    /// the target kernel reads compressed erofs, else none; without a target kernel, none.
    #[arg(long)]
    pub compression: Option<String>,
    /// The largest compressed physical cluster in bytes (mkfs.erofs -C, e.g. 65536): better
    /// compression, bigger reads. Default: mkfs.erofs's (one block).
    #[arg(long)]
    pub pcluster_size: Option<u32>,
    /// The target kernel's .config; its erofs support decides (and checks) the compression.
    #[arg(long, conflicts_with = "kver")]
    pub kernel_config: Option<PathBuf>,
    /// The target kernel release: its config is looked up under --kernel-root
    /// (boot/config-<kver>, then lib/modules/<kver>/config).
    #[arg(long)]
    pub kver: Option<String>,
    /// The tree holding the target kernel (default /).
    #[arg(long, default_value = "/", requires = "kver")]
    pub kernel_root: PathBuf,
    /// Keep the files' owners (default: every file owned by root, as upstream builds it).
    #[arg(long)]
    pub keep_owners: bool,
    /// Append a dm-verity hash tree (and veritysetup's superblock) to the image and print its
    /// root hash; a mini initramfs built with `--image` pointing at it then verifies every
    /// block the boot reads.
    #[arg(long)]
    pub verity: bool,
}

#[derive(Debug, clap::Args)]
pub struct ModulesArgs {
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_s_invocations_install_one_kernel() {
        for (argv, kver) in [
            (
                &["initoverlayfs-install", "-f", "--kver", "6.12.1"][..],
                "6.12.1",
            ),
            (
                &[
                    "initoverlayfs-install",
                    "--kver",
                    "6.12.1",
                    "--initoverlayfs-init",
                ],
                "6.12.1",
            ),
            (&["initoverlayfs-install"], "6.1.0-running"),
        ] {
            let upstream = UpstreamInstallCli::try_parse_from(argv).unwrap();
            match upstream.to_install("6.1.0-running").command {
                Command::Install(args) => {
                    assert_eq!(args.kver.as_deref(), Some(kver), "{argv:?}");
                    assert!(!args.all && !args.no_hooks && !args.dracut, "{argv:?}");
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        let error = UpstreamInstallCli::try_parse_from(["initoverlayfs-install", "--kernel", "x"])
            .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    }
}
