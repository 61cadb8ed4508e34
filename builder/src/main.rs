//! The `builder` command line: a thin layer over the library (the arguments, whose clap
//! definitions live in `builder::cli`; the `SOURCE_DATE_EPOCH` default; printing reports).
//!
//! Timestamps: every command that writes an image uses `SOURCE_DATE_EPOCH` (the
//! reproducible-builds convention) when it is set, and 0 otherwise, so two runs always give the
//! same bytes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use builder::bootfs::BootFsType;
use builder::cli::{Cli, Command, ConfigArgs, ImageArgs, InitramfsArgs, UkiArgs};
use builder::compress::InitramfsCompression;
use builder::erofs::{ErofsCompression, ErofsOptions, build_erofs};
use builder::kernel_config::KernelConfig;
use builder::mini_initramfs::MiniInitramfs;
use builder::modules::KernelModules;
use builder::systemd_initramfs::{Pid1, SystemdInitramfs};

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

/// `install`: one kernel, or with `--all` every kernel with a classic initramfs, each to the
/// end whatever another's outcome.
fn install(args: builder::cli::InstallArgs) -> Result<()> {
    let options = builder::install::InstallOptions {
        root: args.root,
        kver: args.kver.unwrap_or_default(),
        layout: args.layout,
        initramfs: args.initramfs,
        dracut: args.dracut,
        storage_init: args.storage_init,
        presets: args.presets,
        bootfs: args.bootfs,
        bootfstype: args.bootfstype,
        mtime: build_time()?,
        hooks: !args.no_hooks,
        builder_path: args.builder_path.unwrap_or_else(|| {
            builder::install::default_builder_path(std::env::current_exe().ok().as_deref())
        }),
        verity: args.verity,
        tries: args.tries,
        uki_staging: args.uki_staging,
    };
    let kvers = if args.all {
        builder::install::convertible_kernels(&options.root, options.layout)
    } else {
        vec![options.kver.clone()]
    };
    let program = std::env::args().next().unwrap_or_default();
    let undo = builder::install::undo_hint(&program, &options.root);
    let mut failed = Vec::new();
    for kver in &kvers {
        let options = builder::install::InstallOptions {
            kver: kver.clone(),
            ..options.clone()
        };
        match builder::install::install(&options) {
            Ok(report) => {
                eprintln!("builder: {}", report.boot_filesystem);
                for step in report.steps {
                    println!("{step}");
                }
                println!("installed initoverlayfs for {kver}; undo with `{undo}`");
            }
            Err(error) if args.all => {
                eprintln!("builder: error: {kver}: {error:#}; it boots with its classic initramfs");
                failed.push(kver.as_str());
            }
            Err(error) => return Err(error.into()),
        }
    }
    if args.all && kvers.is_empty() {
        println!("no kernel with a classic initramfs to install for");
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} kernels not installed ({}): see the errors above",
            failed.len(),
            kvers.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let cli = if invoked_as.as_deref() == Some(builder::cli::UPSTREAM_INSTALL) {
        let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        builder::cli::UpstreamInstallCli::parse().to_install(running.trim())
    } else {
        Cli::parse()
    };
    match run(cli) {
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
        Command::Install(args) => install(args),
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
                for path in builder::hooks::remove(&args.root)? {
                    println!("removed {}", path.display());
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
    let report = match (args.pid1, &args.systemd_from) {
        (Pid1::Systemd, Some(systemd_from)) => SystemdInitramfs {
            base: inputs.clone(),
            systemd_from: systemd_from.clone(),
        }
        .write(&args.output)?,
        (Pid1::Systemd, None) => bail!("--pid1 systemd needs --systemd-from"),
        (Pid1::StorageInit, Some(_)) => bail!("--systemd-from is for --pid1 systemd"),
        (Pid1::StorageInit, None) => inputs.write(&args.output)?,
    };
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
