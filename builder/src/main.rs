//! The `builder` command line: a thin layer over the library (argument parsing, the
//! `SOURCE_DATE_EPOCH` default, printing reports).
//!
//! Timestamps: every command that writes an image uses `SOURCE_DATE_EPOCH` (the
//! reproducible-builds convention) when it is set, and 0 otherwise, so two runs always give the
//! same bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use builder::erofs::{ErofsCompression, ErofsOptions, build_erofs};
use builder::kernel_config::KernelConfig;
use builder::mini_initramfs::{MiniInitramfs, list_file};
use builder::modules::KernelModules;
use builder::presets::StoragePreset;

/// The reproducible-builds timestamp variable.

#[derive(Debug, Parser)]
#[command(
    name = "builder",
    about = "Builds initoverlayfs boot artifacts reproducibly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Build the mini initramfs (uncompressed newc cpio) holding storage-init as /init.
    MiniInitramfs(MiniInitramfsArgs),
    /// Build an erofs image from a directory or an initramfs file (needs mkfs.erofs from
    /// erofs-utils).
    Erofs(ErofsArgs),
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
    /// Print a sorted listing of an initramfs or cpio file (any compression, concatenated
    /// archives; the last entry of each path, as the kernel unpacks them).
    List {
        /// The initramfs or cpio file.
        cpio: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct KernelArgs {
    /// Directory holding lib/modules/<kver> (as given to `depmod -b`).
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

#[derive(Debug, clap::Args)]
struct MiniInitramfsArgs {
    /// The static storage-init binary.
    #[arg(long)]
    storage_init: PathBuf,
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    presets: PresetArgs,
    /// The boot filesystem: UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=… or /dev/….
    #[arg(long)]
    bootfs: String,
    /// Filesystem type of the boot filesystem (probed at boot when absent).
    #[arg(long)]
    bootfstype: Option<String>,
    /// A device path storage-init tries first.
    #[arg(long)]
    bootfs_hint: Option<String>,
    /// Image path relative to /boot (default at boot: initoverlayfs-<kver>.img).
    #[arg(long)]
    fs: Option<String>,
    /// Seconds to wait for the boot device.
    #[arg(long)]
    timeout: Option<u32>,
    /// Program to exec in the new root.
    #[arg(long)]
    init: Option<String>,
    /// What storage-init does after a FATAL error: halt (default), poweroff, reboot, shell.
    #[arg(long)]
    emergency: Option<String>,
    /// The image built for this mini initramfs: its UUID is recorded, and storage-init refuses
    /// an image on /boot with another one (a stale image).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Where to write the archive.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ErofsArgs {
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
    /// Where to write the image.
    #[arg(short, long)]
    output: PathBuf,
    /// Compressor and level for mkfs.erofs -z, e.g. lz4hc,11, or none. Default: lz4hc,11 when
    /// the target kernel reads compressed erofs, else none; without a target kernel, none.
    #[arg(long)]
    compression: Option<String>,
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

/// Builds the config through storage-init's own parser, so what is written is what it reads.
fn config(args: &MiniInitramfsArgs) -> Result<storage_init::config::Config> {
    let timeout = args.timeout.map(|t| t.to_string());
    let image_uuid = args.image.as_deref().map(image_uuid).transpose()?;
    let mut text = String::new();
    for (key, value) in [
        ("bootfs", Some(&args.bootfs)),
        ("bootfstype", args.bootfstype.as_ref()),
        ("bootfs_hint", args.bootfs_hint.as_ref()),
        ("fs", args.fs.as_ref()),
        ("timeout", timeout.as_ref()),
        ("init", args.init.as_ref()),
        ("emergency", args.emergency.as_ref()),
        ("kernel_release", Some(&args.kernel.kver)),
        ("image_uuid", image_uuid.as_ref()),
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
    Ok(config)
}

/// The UUID of an image file, read the way storage-init reads it at boot.
fn image_uuid(image: &std::path::Path) -> Result<String> {
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
        Command::MiniInitramfs(args) => {
            let config = config(&args)?;
            // The filesystems' modules follow the kernel: loop only where erofs cannot mount a
            // file, vfat's codepage and charset as the kernel's defaults name them.
            let mut modules = args.kernel.modules.clone();
            let mut notes = Vec::new();
            match KernelConfig::locate(&args.kernel.kernel_root, &args.kernel.kver) {
                Ok(kernel) => {
                    if config.bootfstype.is_none() {
                        notes.push(
                            "no --bootfstype: add the /boot filesystem's module with --module"
                                .to_owned(),
                        );
                    }
                    for module in builder::presets::filesystem_modules(
                        &kernel,
                        config.bootfstype.as_deref(),
                        &config.fstype,
                    ) {
                        if !modules.contains(&module) {
                            modules.push(module);
                        }
                    }
                }
                Err(e) => notes.push(format!(
                    "{e}; filesystem modules are not added: name them with --module"
                )),
            }
            let wanted = builder::presets::preset_modules(&args.presets.presets);
            let inputs = MiniInitramfs {
                storage_init: args.storage_init.clone(),
                config,
                kernel: KernelModules::new(&args.kernel.kernel_root, &args.kernel.kver),
                modules,
                wanted_modules: wanted,
                mtime: build_time()?,
            };
            let report = inputs.write(&args.output)?;
            for note in notes {
                println!("note: {note}");
            }
            print!("{}", report.module_list.render());
            for note in &report.notes {
                println!("note: {note}");
            }
            println!(
                "wrote {}: {} entries, {} bytes",
                args.output.display(),
                report.entries,
                report.bytes
            );
        }
        Command::Erofs(args) => {
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
            let options = ErofsOptions {
                mtime: build_time()?,
                compression,
            };
            let report = match (&args.source, &args.initramfs) {
                (Some(source), _) => build_erofs(source, &args.output, &options)?,
                (None, Some(initramfs)) => {
                    let report =
                        builder::image::image_from_initramfs(initramfs, &args.output, &options)?;
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
                (None, None) => anyhow::bail!("give --source DIR or --initramfs FILE"),
            };
            println!(
                "wrote {}: {} bytes, uuid {}",
                report.output.display(),
                report.bytes,
                report.uuid
            );
        }
        Command::Modules(args) => {
            let kernel = KernelModules::new(&args.kernel.kernel_root, &args.kernel.kver);
            print!("{}", kernel.resolve(&args.kernel.modules)?);
        }
        Command::List { cpio } => print!("{}", list_file(&cpio)?),
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
        }
    }
    Ok(())
}
