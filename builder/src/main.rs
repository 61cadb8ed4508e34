//! The `builder` command line: a thin layer over the library (argument parsing, the
//! `SOURCE_DATE_EPOCH` default, printing reports).
//!
//! Timestamps: every command that writes an image uses `SOURCE_DATE_EPOCH` (the
//! reproducible-builds convention) when it is set, and 0 otherwise, so two runs always give the
//! same bytes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use builder::bootfs::BootFsType;
use builder::compress::InitramfsCompression;
use builder::erofs::{ErofsCompression, ErofsOptions, build_erofs};
use builder::install::LayoutKind;
use builder::kernel_config::KernelConfig;
use builder::mini_initramfs::MiniInitramfs;
use builder::modules::KernelModules;
use builder::presets::StoragePreset;

/// The reproducible-builds timestamp variable.

#[derive(Debug, Parser)]
#[command(
    name = "builder",
    about = "Builds initoverlayfs boot artifacts reproducibly",
    after_help = "Exit status: 0 done; 1 the inputs, the tools or the target kernel did not allow it (one \
                  `builder: error:` line says which input and what to do); 2 the command line is wrong."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
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
struct UkiArgs {
    /// The systemd EFI stub (systemd-boot-efi: /usr/lib/systemd/boot/efi/linuxx64.efi.stub).
    #[arg(long, default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")]
    stub: PathBuf,
    /// The kernel image (vmlinuz).
    #[arg(long)]
    kernel: PathBuf,
    /// The initramfs (e.g. the mini initramfs).
    #[arg(long)]
    initrd: PathBuf,
    /// The kernel command line; under Secure Boot the stub ignores any other.
    #[arg(long)]
    cmdline: String,
    /// The os-release file the boot menu names the image by.
    #[arg(long, default_value = "/etc/os-release")]
    os_release: PathBuf,
    /// The kernel release, recorded in a `.uname` section.
    #[arg(long)]
    uname: Option<String>,
    /// The signing key (PEM) for sbsign; with --sign-cert.
    #[arg(long, requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// The certificate (PEM) matching --sign-key, enrolled in the firmware's db.
    #[arg(long, requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// Where to write the UKI (replaced atomically).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The kernel release to install for (`uname -r` for the running one).
    #[arg(long)]
    kver: String,
    /// The tree to install into instead of the live system.
    #[arg(long, default_value = "/", env = "INITOVERLAYFS_ROOT")]
    root: PathBuf,
    /// fedora, debian or bls (kernel-install's layout=bls); default: detected from the tree.
    #[arg(long)]
    layout: Option<LayoutKind>,
    /// The full initramfs to convert (default: the one the bootloader loads now, or the kept
    /// classic one when that is already a mini initramfs).
    #[arg(long, conflicts_with = "dracut")]
    initramfs: Option<PathBuf>,
    /// Make the full initramfs with the system's dracut first (run through chroot with
    /// --root).
    #[arg(long)]
    dracut: bool,
    /// The static storage-init binary (default: <root>/usr/lib/initoverlayfs/storage-init).
    #[arg(long)]
    storage_init: Option<PathBuf>,
    /// Storage drivers to ship (default all-storage): virtio, nvme, usb, mmc, scsi, all-storage.
    #[arg(long = "preset", value_delimiter = ',')]
    presets: Vec<StoragePreset>,
    /// The boot filesystem (default: the fstab line of /boot, or of / when /boot is a
    /// directory of the root filesystem).
    #[arg(long)]
    bootfs: Option<String>,
    /// Filesystem type of the boot filesystem; its driver is shipped. When absent: the type of
    /// the fstab line the bootfs comes from (unless `auto`), else the type in the superblock of
    /// the device the bootfs names, when this machine has it and may read it; else the drivers
    /// of every filesystem storage-init probes. One stderr line says which.
    #[arg(long)]
    bootfstype: Option<String>,
    /// Do not write the kernel-install plugin or the Debian hooks.
    #[arg(long)]
    no_hooks: bool,
    /// This program's path on the target, which the hooks call.
    #[arg(long, default_value = builder::install::DEFAULT_BUILDER_PATH)]
    builder_path: String,
    /// Protect the image with dm-verity: its hash tree appended, its root hash in the mini
    /// initramfs (then sign what carries that, e.g. a UKI). The hooks keep it for every later
    /// kernel and initramfs update.
    #[arg(long)]
    verity: bool,
    /// Boot counting under systemd-boot: how many times the boot loader tries the
    /// initoverlayfs entry before it prefers the classic fallback entry; 0 turns counting off.
    /// Default: kernel-install's /etc/kernel/tries, else 3. Needs systemd-bless-boot, which
    /// marks the entry good once a boot reaches boot-complete.target.
    #[arg(long)]
    tries: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct UninstallArgs {
    /// Only this kernel (repeatable); without it every installed kernel, and the hooks too.
    #[arg(long)]
    kver: Vec<String>,
    /// The tree to work on instead of the live system.
    #[arg(long, default_value = "/", env = "INITOVERLAYFS_ROOT")]
    root: PathBuf,
    /// fedora, debian or bls; default: detected.
    #[arg(long)]
    layout: Option<LayoutKind>,
    /// The kernel is being removed: delete its classic fallback instead of restoring it.
    #[arg(long)]
    kernel_removed: bool,
}

#[derive(Debug, clap::Args)]
struct KernelArgs {
    /// Directory holding lib/modules/<kver> (as given to `depmod -b`) and boot/config-<kver>.
    #[arg(long)]
    kernel_root: PathBuf,
    /// Kernel release of the target (`uname -r`).
    #[arg(long)]
    kver: String,
    /// A module (or alias) to load; repeat or separate with commas. Dependencies are added.
    #[arg(long = "module", value_delimiter = ',')]
    modules: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PresetArgs {
    /// Storage drivers to ship, loaded at boot only for devices that exist: virtio, nvme,
    /// usb, mmc, scsi, all-storage; repeat or separate with commas.
    #[arg(long = "preset", value_delimiter = ',')]
    presets: Vec<StoragePreset>,
}

/// The keys of storage-init's config a build sets (docs/configuration.md).
#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// The boot filesystem: UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=… or /dev/….
    #[arg(long)]
    bootfs: String,
    /// Filesystem type of the boot filesystem; its driver is shipped. When absent: the type in
    /// the superblock of the device --bootfs names, when this machine has it and may read it;
    /// else not known, and the drivers of every filesystem storage-init probes (ext2/3/4,
    /// vfat, xfs, btrfs, erofs) are shipped where the kernel has them as modules. One stderr
    /// line says which.
    #[arg(long)]
    bootfstype: Option<String>,
    /// A device path storage-init tries first.
    #[arg(long)]
    bootfs_hint: Option<String>,
    /// Image path relative to /boot (default at boot: initoverlayfs-<kver>.img).
    #[arg(long)]
    fs: Option<String>,
    /// Filesystem type of the image: erofs (default) or ext4.
    #[arg(long)]
    fstype: Option<String>,
    /// Seconds to wait for the boot device.
    #[arg(long)]
    timeout: Option<u32>,
    /// Program to exec in the new root.
    #[arg(long)]
    init: Option<String>,
    /// What storage-init does after a FATAL error: halt (default), poweroff, reboot, shell, or
    /// fallback (systemd-boot boots --fallback-entry once, then reboot; `install` sets it up).
    #[arg(long)]
    emergency: Option<String>,
    /// The classic fallback's boot entry id (its file name) for `--emergency fallback`.
    #[arg(long)]
    fallback_entry: Option<String>,
    /// Size of the tmpfs under the overlay's upper layer (tmpfs size=, e.g. 50% or 256M).
    #[arg(long)]
    overlay_size: Option<String>,
    /// The image built for this mini initramfs: its UUID is recorded, and storage-init refuses
    /// an image on /boot with another one (a stale image). An image built with `--verity` has
    /// its root hash, salt and size recorded too: storage-init then boots it only through
    /// dm-verity, and the kernel command line cannot turn that off.
    #[arg(long)]
    image: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct InitramfsArgs {
    /// The static storage-init binary.
    #[arg(long)]
    storage_init: PathBuf,
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    presets: PresetArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// auto (zstd, else gzip, else another the kernel unpacks: its CONFIG_RD_* options), none,
    /// zstd, gzip, lz4, xz or bzip2. One the kernel cannot unpack is refused.
    #[arg(long, default_value = "auto")]
    compression: String,
    /// Where to write the archive (replaced atomically).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ConfigCommandArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The kernel release the config is for: storage-init refuses to boot another one.
    #[arg(long)]
    kver: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ImageArgs {
    /// The directory to put in the image.
    #[arg(
        long,
        required_unless_present = "initramfs",
        conflicts_with = "initramfs"
    )]
    source: Option<PathBuf>,
    /// An initramfs file (e.g. dracut's) whose content goes in the image. An initramfs-tools
    /// image is refused: its init cannot switch root from the overlay.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Where to write the image (default with --kver: initoverlayfs-<kver>.img, upstream's
    /// name, in the current directory).
    #[arg(short, long, required_unless_present = "kver")]
    output: Option<PathBuf>,
    /// Compressor and level for mkfs.erofs -z, e.g. lz4hc,11, or none. Default: lz4hc,11 when
    /// the target kernel reads compressed erofs, else none; without a target kernel, none.
    #[arg(long)]
    compression: Option<String>,
    /// The largest compressed physical cluster in bytes (mkfs.erofs -C, e.g. 65536): better
    /// compression, bigger reads. Default: mkfs.erofs's (one block).
    #[arg(long)]
    pcluster_size: Option<u32>,
    /// The target kernel's .config; its erofs support decides (and checks) the compression.
    #[arg(long, conflicts_with = "kver")]
    kernel_config: Option<PathBuf>,
    /// The target kernel release: its config is looked up under --kernel-root
    /// (boot/config-<kver>, then lib/modules/<kver>/config).
    #[arg(long)]
    kver: Option<String>,
    /// The tree holding the target kernel (default /).
    #[arg(long, default_value = "/", requires = "kver")]
    kernel_root: PathBuf,
    /// Keep the files' owners (default: every file owned by root, as upstream builds it).
    #[arg(long)]
    keep_owners: bool,
    /// Append a dm-verity hash tree (and veritysetup's superblock) to the image and print its
    /// root hash; a mini initramfs built with `--image` pointing at it then verifies every
    /// block the boot reads.
    #[arg(long)]
    verity: bool,
}

#[derive(Debug, clap::Args)]
struct ModulesArgs {
    #[command(flatten)]
    kernel: KernelArgs,
}

/// `SOURCE_DATE_EPOCH` if set, else 0.
fn build_time() -> Result<u64> {
    Ok(builder::source_date_epoch()?)
}

/// Builds the config through storage-init's own parser, so what is written is what it reads,
/// with the boot filesystem's type as [`builder::bootfs::decide`] decides it (kept in the
/// config when known).
fn config(
    args: &ConfigArgs,
    kver: Option<&String>,
) -> Result<(storage_init::config::Config, BootFsType)> {
    let timeout = args.timeout.map(|t| t.to_string());
    let image_uuid = args.image.as_deref().map(image_uuid).transpose()?;
    let verity = match &args.image {
        Some(image) => builder::verity::read_verity(image)?,
        None => None,
    };
    let verity_data_blocks = verity.as_ref().map(|v| v.data_blocks.to_string());
    let mut text = String::new();
    for (key, value) in [
        ("bootfs", Some(&args.bootfs)),
        ("bootfstype", args.bootfstype.as_ref()),
        ("bootfs_hint", args.bootfs_hint.as_ref()),
        ("fs", args.fs.as_ref()),
        ("fstype", args.fstype.as_ref()),
        ("timeout", timeout.as_ref()),
        ("init", args.init.as_ref()),
        ("emergency", args.emergency.as_ref()),
        ("fallback_entry", args.fallback_entry.as_ref()),
        ("overlay_size", args.overlay_size.as_ref()),
        ("kernel_release", kver),
        ("image_uuid", image_uuid.as_ref()),
        ("verity_root_hash", verity.as_ref().map(|v| &v.root_hash)),
        ("verity_salt", verity.as_ref().map(|v| &v.salt)),
        ("verity_data_blocks", verity_data_blocks.as_ref()),
    ] {
        if let Some(value) = value {
            if value.contains(['\n', '\r']) {
                bail!("--{key} {value:?}: a value cannot span lines");
            }
            text.push_str(&format!("{key} {value}\n"));
        }
    }
    let (config, warnings) = storage_init::config::parse_config(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid option for the storage-init config")?;
    if let Some(warning) = warnings.first() {
        bail!("unexpected config warning: {warning}");
    }
    let mut config = config;
    let boot = builder::bootfs::decide(
        config.bootfstype.as_deref(),
        None,
        config.bootfs.as_ref(),
        &format!("--bootfs {}", args.bootfs),
        Path::new(builder::bootfs::DEV_DISK),
    );
    config.bootfstype = boot.fstype().map(str::to_owned);
    Ok((config, boot))
}

/// The UUID of an image file, read the way storage-init reads it at boot.
fn image_uuid(image: &Path) -> Result<String> {
    match storage_init::probe::probe_file(image)
        .with_context(|| format!("reading --image {}", image.display()))?
    {
        Some(sb) => Ok(sb.uuid),
        None => bail!(
            "--image {}: no erofs or ext4 superblock in it",
            image.display()
        ),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("builder: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Initramfs(args) => initramfs(&args),
        Command::Uki(args) => uki(&args),
        Command::Image(args) => image(&args),
        Command::Config(args) => {
            let (config, boot) = config(&args.config, args.kver.as_ref())?;
            match boot {
                BootFsType::Unknown { .. } => eprintln!(
                    "builder: {boot}: storage-init takes the type from the superblock it finds"
                ),
                _ => eprintln!("builder: {boot}"),
            }
            print!("{}", config.render());
            Ok(())
        }
        Command::Modules(args) => {
            let kernel = KernelModules::new(&args.kernel.kernel_root, &args.kernel.kver);
            print!("{}", kernel.resolve(&args.kernel.modules)?);
            Ok(())
        }
        Command::Install(args) => {
            let options = builder::install::InstallOptions {
                root: args.root,
                kver: args.kver,
                layout: args.layout,
                initramfs: args.initramfs,
                dracut: args.dracut,
                storage_init: args.storage_init,
                presets: args.presets,
                bootfs: args.bootfs,
                bootfstype: args.bootfstype,
                mtime: build_time()?,
                hooks: !args.no_hooks,
                builder_path: args.builder_path,
                verity: args.verity,
                tries: args.tries,
            };
            let report = builder::install::install(&options)?;
            eprintln!("builder: {}", report.boot_filesystem);
            for step in report.steps {
                println!("{step}");
            }
            let program = std::env::args().next().unwrap_or_default();
            println!(
                "installed initoverlayfs for {}; undo with `{}`",
                options.kver,
                builder::install::undo_hint(&program, &options.root)
            );
            Ok(())
        }
        Command::Uninstall(args) => {
            let all = args.kver.is_empty();
            let kvers = if all {
                builder::install::installed_kernels(&args.root)
            } else {
                args.kver.clone()
            };
            for kver in &kvers {
                for step in
                    builder::install::uninstall(&args.root, kver, args.layout, args.kernel_removed)?
                {
                    println!("{step}");
                }
            }
            if all {
                for step in builder::install::remove_hooks(&args.root)? {
                    println!("{step}");
                }
            }
            println!("uninstalled initoverlayfs for {} kernel(s)", kvers.len());
            Ok(())
        }
        Command::Status { root, layout } => {
            print!("{}", builder::status::Status::read(&root, layout).render());
            Ok(())
        }
        Command::List { path } => {
            print!("{}", builder::listing::list_path(&path)?.1);
            Ok(())
        }
        Command::Unpack { initramfs, output } => {
            let (read, extracted) = builder::image::unpack(&initramfs, &output)?;
            for segment in builder::image::describe_segments(&read) {
                println!("{segment}");
            }
            println!(
                "unpacked into {}: {} files, {} directories, {} symlinks, {} hard links, {} device nodes",
                output.display(),
                extracted.files,
                extracted.dirs,
                extracted.symlinks,
                extracted.hardlinks,
                extracted.nodes
            );
            Ok(())
        }
    }
}

fn uki(args: &UkiArgs) -> Result<()> {
    let files = builder::uki::UkiFiles {
        stub: args.stub.clone(),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        os_release: args.os_release.clone(),
        cmdline: args.cmdline.clone(),
        uname: args.uname.clone(),
    };
    let (Some(key), Some(cert)) = (&args.sign_key, &args.sign_cert) else {
        let size = builder::uki::write_uki(&files, &args.output)?;
        println!("wrote {} ({size} bytes, unsigned)", args.output.display());
        return Ok(());
    };
    // The unsigned image and sbsign's output beside the target, so the rename is atomic.
    let dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".builder-uki")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let unsigned = scratch.path().join("unsigned.efi");
    let signed = scratch.path().join("signed.efi");
    builder::uki::write_uki(&files, &unsigned)?;
    builder::uki::sign(&unsigned, key, cert, &signed)?;
    std::fs::rename(&signed, &args.output)
        .with_context(|| format!("renaming the signed UKI to {}", args.output.display()))?;
    let size = std::fs::metadata(&args.output)?.len();
    println!(
        "wrote {} ({size} bytes, signed with {})",
        args.output.display(),
        cert.display()
    );
    Ok(())
}

fn initramfs(args: &InitramfsArgs) -> Result<()> {
    let (config, boot) = config(&args.config, Some(&args.kernel.kver))?;
    let requested = match args.compression.as_str() {
        "auto" => None,
        name => Some(name.parse::<InitramfsCompression>()?),
    };
    // The filesystems' modules follow the kernel: loop only where erofs cannot mount a file,
    // vfat's codepage and charset as the kernel's defaults name them. So does the compression.
    let mut modules = args.kernel.modules.clone();
    let preset_modules = builder::presets::preset_modules(&args.presets.presets);
    let mut wanted_modules = preset_modules.clone();
    let mut notes = Vec::new();
    let mut probed_filesystems = None;
    let compression = match KernelConfig::locate(&args.kernel.kernel_root, &args.kernel.kver) {
        Ok(kernel) => {
            let filesystems = builder::bootfs::filesystem_modules(
                &kernel,
                &boot,
                &config.fstype,
                config.verity_root_hash.is_some(),
            );
            for module in filesystems.required {
                if !modules.contains(&module) {
                    modules.push(module);
                }
            }
            for module in filesystems.probed {
                if !wanted_modules.contains(&module) {
                    wanted_modules.push(module);
                }
            }
            if boot.fstype().is_none() {
                probed_filesystems = Some(filesystems.probed_filesystems);
            }
            kernel.initramfs_compression(requested)?
        }
        Err(e) => {
            notes.push(format!(
                "{e}; filesystem modules are not added (name them with --module) and the archive is {}",
                if requested.is_some() {
                    "compressed as asked, unchecked"
                } else {
                    "not compressed"
                }
            ));
            requested.unwrap_or(InitramfsCompression::None)
        }
    };
    let inputs = MiniInitramfs {
        storage_init: args.storage_init.clone(),
        config,
        kernel: KernelModules::new(&args.kernel.kernel_root, &args.kernel.kver),
        modules,
        wanted_modules,
        mtime: build_time()?,
        compression,
    };
    let report = inputs.write(&args.output)?;
    let line = match (&boot, probed_filesystems) {
        (BootFsType::Unknown { .. }, Some(filesystems)) => {
            let cost = builder::bootfs::probed_cost(
                &inputs.kernel,
                &inputs.modules,
                &preset_modules,
                &report,
            )?;
            builder::bootfs::unknown_line(&boot, &filesystems, cost)
        }
        (BootFsType::Unknown { .. }, None) => format!(
            "{boot}: without the kernel's config no filesystem driver is shipped; pass --bootfstype and the kernel's config, or name the drivers with --module"
        ),
        _ => boot.to_string(),
    };
    eprintln!("builder: {line}");
    for note in notes {
        println!("note: {note}");
    }
    print!("{}", report.module_list.render());
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "wrote {}: {} entries, {} bytes, {compression} to {} bytes",
        args.output.display(),
        report.entries,
        report.bytes,
        report.compressed_bytes
    );
    Ok(())
}

fn image(args: &ImageArgs) -> Result<()> {
    let requested = args
        .compression
        .as_deref()
        .map(ErofsCompression::parse)
        .transpose()?;
    let kernel = match (&args.kernel_config, &args.kver) {
        (Some(path), _) => Some(KernelConfig::read(path)?),
        (None, Some(kver)) => Some(KernelConfig::locate(&args.kernel_root, kver)?),
        (None, None) => None,
    };
    let compression = match &kernel {
        Some(kernel) => {
            println!("kernel {kernel}");
            kernel.erofs_compression(requested)?
        }
        None => requested.flatten(),
    };
    println!(
        "erofs compression: {}",
        compression.as_ref().map_or("none", |c| c.as_str())
    );
    let output = match (&args.output, &args.kver) {
        (Some(output), _) => output.clone(),
        (None, Some(kver)) => PathBuf::from(format!("initoverlayfs-{kver}.img")),
        (None, None) => bail!("give -o FILE, or --kver for the default name"),
    };
    let options = ErofsOptions {
        mtime: build_time()?,
        compression,
        keep_owners: args.keep_owners,
        pcluster_bytes: args.pcluster_size,
    };
    let report = match (&args.source, &args.initramfs) {
        (Some(source), _) => build_erofs(source, &output, &options)?,
        (None, Some(initramfs)) => {
            let report = builder::image::image_from_initramfs(initramfs, &output, &options)?;
            for segment in &report.segments {
                println!("{segment}");
            }
            if report.flavour == builder::initramfs::Flavour::Unknown {
                eprintln!(
                    "warning: {} has no systemd: its init must switch root the way systemd's switch-root does (busybox switch_root and klibc run-init refuse the overlay)",
                    initramfs.display()
                );
            }
            report.erofs
        }
        (None, None) => bail!("give --source DIR or --initramfs FILE"),
    };
    println!("{}", report.mkfs);
    println!(
        "wrote {}: {} bytes, uuid {}",
        report.output.display(),
        report.bytes,
        report.uuid
    );
    if args.verity {
        let verity = builder::verity::append_hash_tree(&report.output)?;
        let layout = storage_init::verity::TreeLayout::new(verity.data_blocks);
        println!(
            "dm-verity: root hash {}, salt {}, {} data blocks, superblock and hash tree appended at byte {} ({} bytes)",
            verity.root_hash,
            if verity.salt.is_empty() {
                "-"
            } else {
                &verity.salt
            },
            verity.data_blocks,
            verity.data_blocks * storage_init::verity::BLOCK_SIZE,
            layout.image_bytes() - verity.data_blocks * storage_init::verity::BLOCK_SIZE
        );
        println!(
            "dm-verity kernel command line (where the command line, not the mini initramfs, is the signed part): {}",
            builder::verity::cmdline(&verity)
        );
    }
    Ok(())
}
