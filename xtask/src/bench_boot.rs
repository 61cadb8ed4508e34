//! `cargo xtask bench-boot`: initoverlayfs and the initramfs chains it replaces side by side,
//! booted the way a machine boots them, for several content sizes and storage speeds.
//!
//! Per content size, one dracut initramfs (made by `bench_peers` with the benchmark's guest
//! sampler in it) is every chain's content: compressed with gzip and with zstd, squashed into
//! dracut's own erofs initramfs, and turned into initoverlayfs's image. One ESP holds
//! everything: the kernel, each chain's initramfs file under the names an installed system
//! gives them, the erofs image, and a Boot Loader Specification entry per chain. The chains'
//! disks differ only in `loader.conf`'s default entry, so all pay for the same disk, firmware
//! and bootloader; a classic chain pays for reading its whole initramfs through the firmware,
//! as it does on hardware.
//!
//! Runs are interleaved (every chain of a size in turn, then the next size, then the next run)
//! so drift of the host hits every chain; with `--jobs 2` two consecutive boots run at the same
//! time. Every boot gets a fresh copy of its disk and of the firmware's variable store. After
//! `multi-user.target`, outside the measured boot, the real root prints what the guest's sampler
//! saw; the report reads it, and systemd's own lines, from the console.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::bench_report::{BootSample, Chain, Figures, RunInfo, SavedRun};
use crate::cells::{Bus, MachineKind};
use crate::disk_spec::{BootFsKind, RootStorage};
use crate::fixtures::{self, Kernel};
use crate::images::{self, Layout};

/// Where the report and each boot's artefacts go.
pub const BENCH_DIR: &str = "target/bench";
/// The kernel both chains boot unless `--kernel` says otherwise.
pub const DEFAULT_KERNEL: &str = "debian12-6.12-amd64";
/// Guest RAM unless `--memory` says otherwise: enough for the 512 MiB point's classic
/// initramfs, held compressed and unpacked at once.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// A machine too small for the classic initramfs at the largest default size: 512 MiB of
/// content unpacked beside its compressed file (≈ 200 MiB with gzip) and the kernel's own
/// ≈ 100 MiB do not fit, while initoverlayfs holds only what it has read.
pub const SMALL_RAM_MIB: u32 = 768;
/// The least `--memory` accepted: the kernel, the mini initramfs and systemd need about this
/// much to reach `multi-user.target` at all (Debian's kernel alone takes ~100 MiB).
pub const MIN_MEMORY_MIB: u32 = 256;

/// A storage speed, modelled by a QEMU throttle group on the boot disk: bytes per second for
/// long reads, requests per second for scattered ones (which initoverlayfs's page reads are and
/// the classic initramfs's one read of its file is not; without the second cap slow storage
/// would flatter initoverlayfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// An SD card: about 25 MB/s and 1,500 requests/s, the SD Association's A1 rating's floor
    /// for random 4 KiB reads (a card without the rating does worse).
    Sd,
    /// A USB 2.0 stick: about 35 MB/s and 1,000 requests/s (each a bulk-only transport command,
    /// data and status round trip, ~1 ms).
    Usb2,
    /// An NVMe drive: as fast as the host serves the image (no throttle).
    Nvme,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Sd, Profile::Usb2, Profile::Nvme];

    /// Its throttle as the reports state it: `≈ 25 MB/s and 1500 requests/s`, `unthrottled`.
    pub fn describe(self) -> String {
        match self.throttle() {
            None => "unthrottled".to_owned(),
            Some(throttle) => {
                let bandwidth = format!("≈ {} MB/s", throttle.bytes_per_second / 1_000_000);
                match throttle.requests_per_second {
                    Some(iops) => format!("{bandwidth} and {iops} requests/s"),
                    None => bandwidth,
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Sd => "sd",
            Profile::Usb2 => "usb2",
            Profile::Nvme => "nvme",
        }
    }

    fn throttle(self) -> Option<testvm::machine::Throttle> {
        let (bytes_per_second, requests_per_second) = match self {
            Profile::Sd => (25_000_000, 1_500),
            Profile::Usb2 => (35_000_000, 1_000),
            Profile::Nvme => return None,
        };
        Some(testvm::machine::Throttle {
            bytes_per_second,
            requests_per_second: Some(requests_per_second),
        })
    }
}

impl std::str::FromStr for Profile {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Profile> {
        Ok(match s {
            "sd" => Profile::Sd,
            "usb2" => Profile::Usb2,
            "nvme" => Profile::Nvme,
            other => bail!("storage profile {other:?}: expected sd, usb2 or nvme"),
        })
    }
}

/// A content size: Debian's dracut initramfs as it is, or grown to about `MiB` unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSize {
    pub label: String,
    /// Unpacked bytes to grow to; None: the initramfs as dracut made it.
    pub target_bytes: Option<u64>,
}

impl std::str::FromStr for ContentSize {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<ContentSize> {
        if s == "dracut" {
            return Ok(ContentSize {
                label: s.to_owned(),
                target_bytes: None,
            });
        }
        let mib: u64 = s
            .strip_suffix('M')
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .with_context(|| {
                format!("content size {s:?}: expected `dracut` or MiB unpacked such as 128M")
            })?;
        Ok(ContentSize {
            label: s.to_owned(),
            target_bytes: Some(mib << 20),
        })
    }
}

/// `cargo xtask bench-boot`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the reports and every boot's artefacts go, relative to the project root.
    pub dir: PathBuf,
    pub runs: u32,
    pub sizes: Vec<ContentSize>,
    pub profiles: Vec<Profile>,
    /// The chains to boot, in the order each round boots them.
    pub chains: Vec<Chain>,
    /// Guest RAM in MiB: small enough, and the classic chains cannot hold a big initramfs.
    pub memory_mib: u32,
    /// `mkfs.erofs -z` for the image; None: builder's default for the kernel.
    pub erofs_compression: Option<String>,
    /// `mkfs.erofs -C`: the largest compressed physical cluster; None: mkfs.erofs's default.
    pub pcluster_bytes: Option<u32>,
    /// storage-init's `read_ahead_kb` for the boot device; None: the kernel's.
    pub read_ahead_kb: Option<u32>,
    /// storage-init's `overlay`: false mounts the image itself as the read-only root.
    pub overlay: bool,
    /// storage-init's `prefetch`: what of the image it asks the kernel to read ahead.
    pub prefetch: storage_init::config::Prefetch,
    /// Where the image lives: on the ESP itself (vfat, as with systemd-boot and /boot on the
    /// ESP), or on an ext4 /boot of its own beside the ESP (Debian's layout).
    pub image_on: BootFsKind,
    /// Turn the kernel's profiler on (`profile=2`): the console gets the most sampled kernel
    /// functions of each stretch of every boot.
    pub profile_kernel: bool,
    /// Print systemd-analyze's figures after each boot (about 25 s of TCG time after
    /// multi-user.target, outside the measured boot), into each run's console.log.
    pub analyze: bool,
    /// Under TCG, the guest's clock from the instructions it runs (`-icount shift=N`: 2^N ns
    /// each) rather than the host's: CPU work then takes the same guest time however busy the
    /// host is.
    pub icount: Option<u8>,
    /// Boot nothing: render the report again from the last run's `samples.json`.
    pub report_only: bool,
    pub kernel: String,
    /// Boots at a time: 2 runs consecutive boots of a round side by side.
    pub jobs: usize,
    pub accel: crate::accel::AccelChoice,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dir: PathBuf::from(BENCH_DIR),
            runs: 5,
            sizes: DEFAULT_SIZES
                .iter()
                .map(|s| s.parse().expect("the default sizes parse"))
                .collect(),
            profiles: vec![Profile::Sd],
            chains: Chain::ALL.to_vec(),
            memory_mib: DEFAULT_MEMORY_MIB,
            erofs_compression: None,
            pcluster_bytes: None,
            read_ahead_kb: None,
            overlay: true,
            prefetch: storage_init::config::Prefetch::Off,
            image_on: BootFsKind::Vfat,
            analyze: false,
            profile_kernel: false,
            icount: None,
            report_only: false,
            kernel: DEFAULT_KERNEL.to_owned(),
            jobs: 2,
            accel: crate::accel::AccelChoice::Auto,
        }
    }
}

/// The content sizes a run measures unless `--sizes` says otherwise.
const DEFAULT_SIZES: [&str; 3] = ["dracut", "128M", "512M"];

impl Options {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        let names = |items: Vec<&str>| items.join(",");
        let mut command = format!(
            "cargo xtask bench-boot --runs {} --sizes {} --profiles {} --jobs {}",
            self.runs,
            names(self.sizes.iter().map(|s| s.label.as_str()).collect()),
            names(self.profiles.iter().map(|p| p.name()).collect()),
            self.jobs
        );
        if self.chains != Chain::ALL {
            command.push_str(&format!(
                " --chains {}",
                names(self.chains.iter().map(|c| c.name()).collect())
            ));
        }
        if self.memory_mib != DEFAULT_MEMORY_MIB {
            command.push_str(&format!(" --memory {}", self.memory_mib));
        }
        if let Some(z) = &self.erofs_compression {
            command.push_str(&format!(" --erofs-compression {z}"));
        }
        if let Some(bytes) = self.pcluster_bytes {
            command.push_str(&format!(" --pcluster-size {bytes}"));
        }
        if let Some(kb) = self.read_ahead_kb {
            command.push_str(&format!(" --read-ahead-kb {kb}"));
        }
        if !self.overlay {
            command.push_str(" --overlay off");
        }
        if self.prefetch != storage_init::config::Prefetch::Off {
            command.push_str(&format!(" --prefetch {}", self.prefetch));
        }
        if self.image_on == BootFsKind::Ext4 {
            command.push_str(" --image-on ext4");
        }
        if self.analyze {
            command.push_str(" --analyze");
        }
        if self.profile_kernel {
            command.push_str(" --profile-kernel");
        }
        if let Some(shift) = self.icount {
            command.push_str(&format!(" --icount {shift}"));
        }
        if self.kernel != DEFAULT_KERNEL {
            command.push_str(&format!(" --kernel {}", self.kernel));
        }
        command
    }

    /// Whether a chain that boots initoverlayfs's image is in the run.
    fn boots_the_image(&self) -> bool {
        self.chains.iter().any(|c| {
            matches!(
                c,
                Chain::Initoverlayfs | Chain::Floor | Chain::InitoverlayfsSystemd
            )
        })
    }
}

/// One content size's disks (one per chain, differing only in the default boot entry) and what
/// the report needs to know of them.
struct SizePoint {
    size: ContentSize,
    content_bytes: u64,
    /// Per chain: kernel + the chain's initramfs file (what the bootloader reads), its disk.
    disks: Vec<(Chain, u64, PathBuf)>,
}

impl SizePoint {
    fn disk(&self, chain: Chain) -> Result<(&Path, u64)> {
        self.disks
            .iter()
            .find(|(c, _, _)| *c == chain)
            .map(|(_, bytes, disk)| (disk.as_path(), *bytes))
            .with_context(|| format!("no disk for {} at {}", chain.name(), self.size.label))
    }
}

/// One boot to do.
struct Boot<'a> {
    point: &'a SizePoint,
    profile: Profile,
    chain: Chain,
    run: u32,
}

/// What every boot shares.
struct Bench {
    /// q35 for an amd64 kernel, `virt` for an arm64 one.
    board: testvm::machine::Board,
    kernel: Kernel,
    accel: testvm::machine::Accel,
    icount: Option<testvm::machine::Icount>,
    memory_mib: u32,
    firmware_code: PathBuf,
    pristine_vars: PathBuf,
    runs_dir: PathBuf,
}

/// The programs and trees every size's disks are made of.
struct Parts<'a> {
    kernel: &'a Kernel,
    storage_init: PathBuf,
    floor: Option<PathBuf>,
    /// The real root with the benchmark's instrumentation added.
    real_root: PathBuf,
    loader: PathBuf,
    removable_path: &'a str,
    cmdline: String,
    compression: String,
    pcluster_bytes: Option<u32>,
    image_on: BootFsKind,
}

/// `cargo xtask bench-boot`: boots, writes the reports and prints `boot.md`; fails only when
/// the harness broke or no boot passed.
pub fn run(sh: &Shell, root: &Path, options: &Options) -> Result<()> {
    let bench_dir = root.join(&options.dir);
    if options.report_only {
        let saved = crate::bench_report::read_saved(&bench_dir.join("samples.json"))?;
        crate::bench_report::write_all(&bench_dir, &saved.info, &saved.samples)?;
        print!(
            "{}",
            crate::bench_report::markdown(&saved.info, &saved.samples)
        );
        return Ok(());
    }
    let saved = measure(sh, root, options)?;
    print!(
        "{}",
        crate::bench_report::markdown(&saved.info, &saved.samples)
    );
    eprintln!(
        "bench-boot: report in {}/boot.md, boot.csv and boot.svg",
        bench_dir.display()
    );
    if saved.samples.iter().all(|s| !s.passed) {
        bail!(
            "bench-boot: no boot passed; see the artefacts under {}",
            bench_dir.join("boot/runs").display()
        );
    }
    Ok(())
}

/// Builds every chain's disks, boots them as `options` say and writes the reports into
/// `options.dir`; a boot that failed is a sample that did not pass, only a broken harness an
/// error.
pub fn measure(sh: &Shell, root: &Path, options: &Options) -> Result<SavedRun> {
    crate::provision::ensure(sh)?;
    let started = std::time::Instant::now();
    let kernel = fixtures::fetch_kernel_by_id(sh, root, &options.kernel)?;
    let machine_kind = match kernel.release.ends_with("arm64") {
        true => MachineKind::Virt,
        false => MachineKind::Q35,
    };
    let board = machine_kind.board();
    let uefi = machine_kind
        .uefi()
        .with_context(|| format!("{} has no UEFI firmware", machine_kind.name()))?;
    let firmware = fixtures::fetch_package(sh, root, uefi.firmware_package)?.root;
    let loader = fixtures::fetch_package(sh, root, uefi.loader_package)?
        .root
        .join(uefi.loader);

    let bench_dir = root.join(&options.dir);
    let work = bench_dir.join("boot");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let accel = crate::accel::resolve(options.accel, board, &kernel.vmlinuz, &work);
    if options.icount.is_some() && accel != testvm::machine::Accel::Tcg {
        bail!(
            "bench-boot: --icount counts TCG's instructions, and this run would use {}: add \
             --accel tcg",
            accel.name()
        );
    }
    let runs = options.runs;
    let arch = machine_kind.arch();

    let storage_init = crate::static_build::build_for_arch(sh, root, arch)?;
    let floor = match options.chains.contains(&Chain::Floor) {
        true => Some(crate::static_build::build_binary_for_arch(
            sh,
            root,
            arch,
            crate::disk_spec::Pid1Binary::SyscallFloor,
        )?),
        false => None,
    };
    // The same instrumentation in the content of every chain and in the real root: the guest's
    // sampler, its units, and the unit that prints what it saw after multi-user.target.
    let instrumentation = work.join("instrumentation");
    let sampler = crate::boot_probe::build_sampler(sh, root, arch)?;
    crate::boot_probe::write_instrumentation(&instrumentation, &sampler, options.analyze)?;
    let spec = images::root_spec(BootFsKind::Vfat, RootStorage::Partition);
    let real_root = crate::debian_tree::real_root(sh, &kernel, &spec)?;
    let instrumented_root = work.join("real-root");
    instrument_root(sh, &real_root.root, &instrumentation, &instrumented_root)?;
    // storage-init's knobs go on the command line of every entry (the other chains' kernel and
    // systemd ignore them), so all chains boot the same command line. `psi=1`: the sampler's
    // pressure figures (Debian's kernels build PSI in but leave it off).
    let mut cmdline = format!(
        "console={} panic=-1 {} systemd.log_target=kmsg printk.devkmsg=on psi=1",
        board.console(),
        RootStorage::Partition.kernel_params()
    );
    if let Some(kb) = options.read_ahead_kb {
        cmdline.push_str(&format!(" initoverlayfs.read_ahead_kb={kb}"));
    }
    if !options.overlay {
        cmdline.push_str(" initoverlayfs.overlay=off");
    }
    if options.profile_kernel {
        // One counter per 4 bytes of kernel text (kernel/profile.c), sampled at each tick.
        cmdline.push_str(" profile=2");
    }
    if options.prefetch != storage_init::config::Prefetch::Off {
        cmdline.push_str(&format!(" initoverlayfs.prefetch={}", options.prefetch));
    }
    let compression = options
        .erofs_compression
        .clone()
        .unwrap_or_else(|| builder::kernel_config::DEFAULT_EROFS_COMPRESSION.to_owned());
    let parts = Parts {
        kernel: &kernel,
        storage_init,
        floor,
        real_root: instrumented_root,
        loader,
        removable_path: uefi.removable_path,
        cmdline,
        compression: compression.clone(),
        pcluster_bytes: options.pcluster_bytes,
        image_on: options.image_on,
    };

    let mut notes = Vec::new();
    let mut points = Vec::new();
    for size in &options.sizes {
        let content = crate::bench_peers::peer_initramfs(
            sh,
            root,
            &kernel,
            size.target_bytes,
            Some(&instrumentation),
        )?;
        if points.is_empty() {
            notes.push(format!(
                "content: the initramfs of dracut {} (no-hostonly, reproducible) with the \
                 benchmark's sampler, made once per size and compressed per chain",
                content.dracut_version
            ));
        }
        if !content.added.is_empty() {
            notes.push(format!(
                "{}: dracut's initramfs plus the files of {}",
                size.label,
                content.added.join(", ")
            ));
        }
        eprintln!(
            "bench-boot: building the disks of content size {}",
            size.label
        );
        points.push(build_point(
            &work.join(&size.label),
            size,
            &content,
            &options.chains,
            &parts,
            options.boots_the_image(),
        )?);
    }

    let bench = Bench {
        board,
        firmware_code: firmware.join(uefi.code),
        pristine_vars: firmware.join(uefi.vars),
        kernel: kernel.clone(),
        accel,
        icount: options
            .icount
            .map(|shift| testvm::machine::Icount { shift }),
        memory_mib: options.memory_mib,
        runs_dir: work.join("runs"),
    };
    // Interleaved: run by run, every point's chains in turn.
    let mut boots = Vec::new();
    for run in 1..=runs {
        for profile in &options.profiles {
            for point in &points {
                for &chain in &options.chains {
                    boots.push(Boot {
                        point,
                        profile: *profile,
                        chain,
                        run,
                    });
                }
            }
        }
    }
    eprintln!(
        "bench-boot: {} boots ({} runs x {} sizes x {} profiles x {} chains), {} at a time, {}",
        boots.len(),
        runs,
        points.len(),
        options.profiles.len(),
        options.chains.len(),
        options.jobs,
        accel.name()
    );
    let samples = boot_all(&bench, &boots, options.jobs.max(1))?;

    let partitions = match options.image_on {
        BootFsKind::Vfat => "ESP vfat with the image + ext4 root",
        BootFsKind::Ext4 => "ESP vfat + ext4 /boot with the image + ext4 root",
    };
    let info = RunInfo {
        machine: format!(
            "{}, {} vCPU, {} MiB, boot disk on virtio-blk ({partitions}), UEFI ({}) + systemd-boot",
            board.machine_type(),
            1,
            options.memory_mib,
            uefi.firmware_package
        ),
        accel: match options.icount {
            None => accel.name().to_owned(),
            Some(shift) => format!("{} (-icount shift={shift})", accel.name()),
        },
        kernel: bench.kernel.release.clone(),
        qemu: qemu_version(sh, board.qemu_binary()),
        host_cpu: host_cpu(),
        command: options.command(),
        date: cmd!(sh, "date -u +%Y-%m-%dT%H:%MZ")
            .quiet()
            .read()
            .unwrap_or_default(),
        runs,
        throttles: Profile::ALL
            .iter()
            .map(|p| (p.name().to_owned(), p.describe()))
            .collect(),
        notes: {
            notes.insert(
                0,
                format!(
                    "erofs image compression: {compression}; wall time of the whole run: {:.0} min",
                    started.elapsed().as_secs_f64() / 60.0
                ),
            );
            notes
        },
    };
    crate::bench_report::write_all(&bench_dir, &info, &samples)?;
    Ok(SavedRun { info, samples })
}

/// `to`: the real root `from` hard-linked, with the instrumentation's files copied over it as
/// new files (never written through a link into the cached root).
fn instrument_root(sh: &Shell, from: &Path, instrumentation: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("emptying {}", to.display()))?;
    }
    cmd!(sh, "cp -a --link {from} {to}")
        .quiet()
        .run()
        .with_context(|| format!("hard-linking {} to {}", from.display(), to.display()))?;
    // `--remove-destination`: a file that exists in the root is unlinked, not written through.
    let files = instrumentation.join(".");
    cmd!(sh, "cp -a --remove-destination {files} {to}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "copying {} into {}",
                instrumentation.display(),
                to.display()
            )
        })
}

/// The file name of a chain's initramfs on the ESP: the names `builder install` gives them on
/// Debian (the mini initramfs under the initramfs's name, the classic one kept as the
/// fallback), the peers beside them.
fn esp_initrd_name(chain: Chain, installed: &builder::install::BootLayout) -> String {
    match chain {
        Chain::Initoverlayfs => installed.initramfs_name(),
        Chain::ClassicGzip => installed.classic_name(),
        other => format!("{}.{}", installed.initramfs_name(), other.name()),
    }
}

/// Lays out the ESP for one content size and writes one disk per chain.
fn build_point(
    dir: &Path,
    size: &ContentSize,
    content: &crate::bench_peers::PeerInitramfs,
    chains: &[Chain],
    parts: &Parts<'_>,
    with_image: bool,
) -> Result<SizePoint> {
    let kernel = parts.kernel;
    let release = &kernel.release;
    let esp = dir.join("esp");
    if esp.exists() {
        std::fs::remove_dir_all(&esp).with_context(|| format!("emptying {}", esp.display()))?;
    }
    std::fs::create_dir_all(&esp)?;
    let copy = |from: &Path, to: &str| images::copy_into(&esp, from, to);
    let vmlinuz = copy(&kernel.vmlinuz, &format!("vmlinuz-{release}"))?;
    let installed = builder::install::BootLayout {
        kind: builder::install::LayoutKind::Debian,
        root: esp.clone(),
        boot_mount: "/boot".to_owned(),
        kver: release.clone(),
        entry_token: None,
    };
    // The mini initramfs looks for the filesystem that holds the image.
    let layout = Layout {
        boot_fs: parts.image_on,
        bus: Bus::VirtioBlk,
        ..Layout::default()
    };
    let boot = dir.join("boot");
    let image_dir = match parts.image_on {
        BootFsKind::Vfat => &esp,
        BootFsKind::Ext4 => {
            if boot.exists() {
                std::fs::remove_dir_all(&boot)
                    .with_context(|| format!("emptying {}", boot.display()))?;
            }
            std::fs::create_dir_all(&boot)?;
            &boot
        }
    };
    // The image, from the same dracut initramfs the classic chain boots.
    let mut image_note = String::new();
    let image_uuid = match with_image {
        false => None,
        true => {
            let image = image_dir.join(installed.image_name());
            let options = builder::erofs::ErofsOptions {
                mtime: builder::source_date_epoch()?,
                compression: builder::erofs::ErofsCompression::parse(&parts.compression)
                    .map_err(|e| anyhow::anyhow!("--erofs-compression: {e}"))?,
                keep_owners: true,
                pcluster_bytes: parts.pcluster_bytes,
            };
            let report = builder::image::image_from_initramfs(&content.gzip, &image, &options)
                .with_context(|| {
                    format!(
                        "building {} from {}",
                        image.display(),
                        content.gzip.display()
                    )
                })?;
            image_note = format!(
                ", erofs image {:.1} MiB ({})",
                std::fs::metadata(&image)?.len() as f64 / MIB,
                parts.compression
            );
            Some(report.erofs.uuid)
        }
    };
    let mut initrd_bytes = Vec::new();
    for &chain in chains {
        let name = esp_initrd_name(chain, &installed);
        let bytes = match chain {
            Chain::ClassicGzip => copy(&content.gzip, &name)?,
            Chain::ClassicZstd => copy(&content.zstd, &name)?,
            Chain::SquashErofs => copy(&content.squash_erofs, &name)?,
            Chain::Initoverlayfs | Chain::Floor | Chain::InitoverlayfsSystemd => {
                let pid1 = match chain {
                    Chain::Floor => parts
                        .floor
                        .as_deref()
                        .context("the floor chain needs the syscall floor's build")?,
                    _ => parts.storage_init.as_path(),
                };
                let uuid = image_uuid
                    .as_deref()
                    .context("initoverlayfs's chains need the image")?;
                let mini = dir.join(format!("mini-initramfs-{}.img", chain.name()));
                // The service flavour's systemd comes from the same dracut initramfs.
                let systemd_from =
                    (chain == Chain::InitoverlayfsSystemd).then_some(content.gzip.as_path());
                images::build_mini_initramfs(
                    pid1,
                    kernel,
                    layout,
                    uuid,
                    None,
                    systemd_from,
                    &mini,
                )?;
                copy(&mini, &name)?
            }
        };
        initrd_bytes.push((chain, name, bytes));
    }
    copy(&parts.loader, parts.removable_path)?;
    let entries = esp.join("loader/entries");
    std::fs::create_dir_all(&entries)?;
    for (chain, initrd, _) in &initrd_bytes {
        std::fs::write(
            entries.join(entry_name(*chain, release)),
            format!(
                "title Debian GNU/Linux {release} ({})\nversion {release}\n\
                 linux /vmlinuz-{release}\ninitrd /{initrd}\noptions {}\n",
                chain.name(),
                parts.cmdline
            ),
        )?;
    }

    let mut disks = Vec::new();
    for (chain, _, bytes) in &initrd_bytes {
        std::fs::write(
            esp.join("loader/loader.conf"),
            format!("timeout 0\ndefault {}\n", entry_name(*chain, release)),
        )?;
        let disk = dir.join(format!("disk-{}.img", chain.name()));
        let real_root = Some(images::RootPartition::Ext4(&parts.real_root));
        match parts.image_on {
            BootFsKind::Vfat => images::build_boot_disk(&esp, layout, real_root, &disk)?,
            BootFsKind::Ext4 => {
                images::build_esp_and_boot_disk(&esp, &boot, layout, real_root, &disk)?
            }
        }
        disks.push((*chain, vmlinuz + bytes, disk));
    }
    let files: Vec<String> = initrd_bytes
        .iter()
        .map(|(chain, _, bytes)| format!("{} {:.1} MiB", chain.name(), *bytes as f64 / MIB))
        .collect();
    eprintln!(
        "bench-boot: {}: {:.1} MiB unpacked; initramfs files: {}{image_note}",
        size.label,
        content.unpacked_bytes as f64 / MIB,
        files.join(", "),
    );
    Ok(SizePoint {
        size: size.clone(),
        content_bytes: content.unpacked_bytes,
        disks,
    })
}

/// Bytes in a MiB, for the progress lines.
const MIB: f64 = (1 << 20) as f64;

/// The BLS entry of each chain.
fn entry_name(chain: Chain, release: &str) -> String {
    match chain {
        Chain::Initoverlayfs => format!("debian-{release}.conf"),
        other => format!("debian-{release}-{}.conf", other.name()),
    }
}

/// Boots `boots` on `jobs` threads, in order; prints a progress line per boot.
fn boot_all(bench: &Bench, boots: &[Boot<'_>], jobs: usize) -> Result<Vec<BootSample>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let samples: Mutex<Vec<(usize, BootSample)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(boots.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(boot) = boots.get(index) else { break };
                    match boot_one(bench, boot) {
                        Ok(sample) => {
                            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                            eprintln!(
                                "{}",
                                crate::bench_report::progress_line(n, boots.len(), &sample)
                            );
                            samples
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((index, sample));
                        }
                        Err(error) => {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(error);
                            // The harness broke: stop handing out boots.
                            next.store(boots.len(), Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = errors.into_inner().unwrap_or_default().into_iter().next() {
        return Err(error);
    }
    let mut samples = samples.into_inner().unwrap_or_default();
    samples.sort_by_key(|(index, _)| *index);
    Ok(samples.into_iter().map(|(_, s)| s).collect())
}

/// The milestones of one boot: (figure name, pattern, TCG timeout in seconds). The last one
/// comes after the measured boot: the instrumentation printing what the guest's sampler saw.
/// The milestones of a `chain`'s boot. The service flavour's stage-one systemd says `Running in
/// initrd` and `Switching root` first: its `systemd` milestone is the image's systemd, as in the
/// other initoverlayfs chains.
fn milestones(release: &str, chain: Chain) -> Vec<(&'static str, String, u64)> {
    let mut milestones = milestones_of_every_chain(release).to_vec();
    if chain == Chain::InitoverlayfsSystemd {
        let systemd = milestones
            .iter()
            .position(|(name, _, _)| *name == "systemd")
            .unwrap_or(milestones.len());
        milestones.splice(
            systemd..systemd,
            [
                (
                    "stage-one",
                    r"systemd\[1\]: Running in initrd".to_owned(),
                    300,
                ),
                (
                    "switch-to-image",
                    r"systemd\[1\]: Switching root".to_owned(),
                    300,
                ),
            ],
        );
    }
    milestones
}

fn milestones_of_every_chain(release: &str) -> [(&'static str, String, u64); 7] {
    let release = regex::escape(release);
    [
        (
            "firmware",
            "BdsDxe: starting Boot[0-9A-F]+ ".to_owned(),
            300,
        ),
        ("kernel", format!("Linux version {release} "), 300),
        ("userspace", r"Run /init as init process".to_owned(), 400),
        (
            "systemd",
            r"systemd\[1\]: Running in initrd".to_owned(),
            300,
        ),
        (
            "memory",
            r"initoverlayfs-test: memory used=\d+ kB".to_owned(),
            600,
        ),
        (
            "multi-user",
            r"systemd\[1\]: Reached target multi-user\.target".to_owned(),
            400,
        ),
        (
            "samples",
            crate::boot_probe::DUMP_END_PATTERN.to_owned(),
            300,
        ),
    ]
}

/// How often the harness asks QEMU for the boot disk's read counters.
const READ_SAMPLING: Duration = Duration::from_millis(250);

/// Boots once and measures. A guest failure is a sample that did not pass; only a broken
/// harness is an error.
fn boot_one(bench: &Bench, boot: &Boot<'_>) -> Result<BootSample> {
    let name = format!(
        "{}-{}-{}-run{}",
        boot.profile.name(),
        boot.point.size.label,
        boot.chain.name(),
        boot.run
    );
    let artifacts = bench.runs_dir.join(&name);
    std::fs::create_dir_all(&artifacts)?;
    let (disk, boot_files_bytes) = boot.point.disk(boot.chain)?;
    // A fresh copy each boot: the real root writes to its disk (journal, fsck state).
    let scratch = artifacts.join("disk.img");
    std::fs::copy(disk, &scratch)
        .with_context(|| format!("copying {} to {}", disk.display(), scratch.display()))?;
    let vars = artifacts.join("efivars.fd");
    std::fs::copy(&bench.pristine_vars, &vars)
        .with_context(|| format!("copying {}", bench.pristine_vars.display()))?;
    let machine = testvm::machine::Machine {
        icount: bench.icount,
        ..crate::plan::machine(
            bench.board,
            bench.accel,
            bench.memory_mib,
            testvm::machine::Boot::Uefi {
                code: bench.firmware_code.clone(),
                vars,
                secure_boot: false,
            },
            vec![testvm::machine::Disk {
                path: scratch.clone(),
                bus: testvm::machine::DiskBus::VirtioBlk,
                serial: "boot0".to_owned(),
                read_only: false,
                throttle: boot.profile.throttle(),
            }],
        )
    };
    let mut milestone_specs = Vec::new();
    for (name, pattern, seconds) in milestones(&bench.kernel.release, boot.chain) {
        let timeout = crate::plan::scaled_timeout(Duration::from_secs(seconds), bench.accel);
        milestone_specs.push(testvm::run::Milestone::new(name, &pattern, timeout)?);
    }
    // Only initoverlayfs runs storage-init, and it must not fail; the floor must not fail
    // either; in the other chains neither may show up at all.
    let pid1_fatal = match boot.chain {
        Chain::Initoverlayfs => "storage-init: FATAL|syscall-floor",
        Chain::Floor => "syscall-floor: FATAL|storage-init",
        // storage-init runs as systemd's service: never as PID 1 (its `exec` line).
        Chain::InitoverlayfsSystemd => "storage-init: FATAL|storage-init: exec|syscall-floor",
        Chain::ClassicGzip | Chain::ClassicZstd | Chain::SquashErofs => {
            "storage-init|syscall-floor"
        }
    };
    let mut fatal = vec![
        testvm::run::Fatal::new("panic", "Kernel panic")?,
        // The firmware gave up on the boot entry (e.g. the initramfs does not fit in RAM: the
        // line ends in "Out of Resources"); it would go on to its shell and wait there.
        testvm::run::Fatal::new("firmware", "BdsDxe: failed to start Boot")?,
        // Named before the call trace and the panic that follow it, so that a boot that runs
        // out of memory (an initramfs bigger than RAM can hold unpacked) says so.
        testvm::run::Fatal::new("out of memory", "invoked oom-killer|Out of memory")?,
    ];
    fatal.push(testvm::run::Fatal::new("pid 1", pid1_fatal)?);
    for always in crate::cells::ALWAYS_FATAL {
        fatal.push(testvm::run::Fatal::new(always, always)?);
    }
    let spec = testvm::run::BootSpec {
        milestones: milestone_specs,
        fatal,
        end: testvm::run::End::Quit,
        hotplug: Vec::new(),
        read_sampling: Some(READ_SAMPLING),
    };
    let outcome = testvm::run::boot(&machine, &spec, &artifacts);
    let _ = std::fs::remove_file(&scratch); // a GiB per boot; absent is fine
    let (passed, failure) = match &outcome {
        Ok(_) => (true, None),
        Err(testvm::run::VmError::Guest(failure)) => (
            false,
            Some(crate::boot_log::without_escapes(&failure.to_string())),
        ),
        Err(testvm::run::VmError::Infra(error)) => {
            bail!("{name}: the harness broke: {error}")
        }
    };
    // The milestones come from timings.json, written for failed boots too.
    let timings: testvm::run::Timings = serde_json::from_str(
        &std::fs::read_to_string(artifacts.join(testvm::run::artifact::TIMINGS_JSON))
            .with_context(|| format!("{name}: reading timings.json"))?,
    )
    .with_context(|| format!("{name}: parsing timings.json"))?;
    let console = std::fs::read_to_string(artifacts.join(testvm::run::artifact::CONSOLE_LOG))
        .unwrap_or_default(); // a boot that never connected has none: no figures from it
    let sample = sample_of(boot, &timings, &console, boot_files_bytes, passed, failure);
    Ok(sample)
}

/// A boot's figures from what it left behind: the milestones of `timings.json`, and the
/// console (systemd's marks and units, the guest sampler's lines).
fn sample_of(
    boot: &Boot<'_>,
    timings: &testvm::run::Timings,
    console: &str,
    boot_files_bytes: u64,
    passed: bool,
    failure: Option<String>,
) -> BootSample {
    let reached = |figure: &str| timings.milestones.iter().find(|m| m.name == figure);
    let host = |figure: &str| reached(figure).map(|m| m.host_ms as f64 / 1000.0);
    let guest = |figure: &str| reached(figure).and_then(|m| m.guest_s);
    let mem_used_kib = reached("memory").and_then(|m| {
        let (_, rest) = m.line.split_once("memory used=")?;
        rest.split_once(" kB")?.0.parse().ok()
    });
    let log = crate::boot_log::parse(console);
    let multi_user = guest("multi-user");
    BootSample {
        chain: boot.chain,
        size: boot.point.size.label.clone(),
        content_bytes: boot.point.content_bytes,
        profile: boot.profile.name().to_owned(),
        run: boot.run,
        host: Figures {
            kernel_start: host("kernel"),
            first_userspace: host("userspace"),
            running_in_initrd: host("systemd"),
            multi_user: host("multi-user"),
        },
        guest: Figures {
            kernel_start: guest("kernel").or(reached("kernel").map(|_| 0.0)),
            first_userspace: guest("userspace"),
            running_in_initrd: guest("systemd"),
            multi_user,
        },
        phases: log.phases,
        bytes_read: reached("multi-user").and_then(|m| m.bytes_read),
        bytes_read_to_systemd: reached("systemd").and_then(|m| m.bytes_read),
        read_requests: reached("multi-user").and_then(|m| m.read_requests),
        read_requests_to_systemd: reached("systemd").and_then(|m| m.read_requests),
        mem_used_kib,
        initramfs_freed_kib: log.initramfs_freed_kib,
        probe: probe_figures(console, multi_user),
        initrd_units: log.initrd_units,
        boot_files_bytes,
        passed,
        failure,
        host_other_cpus: timings.host_load.map(|l| l.other_cpus()),
        tcg: timings.tcg.map(|t| crate::bench_report::TcgWork {
            code_bytes: t.code_bytes,
            tb_invalidations: t.tb_invalidations,
            tlb_partial_flushes: t.tlb_partial_flushes,
        }),
    }
}

/// The guest sampler's figures, from its lines on the console: windows between its samples
/// (each on `CLOCK_BOOTTIME`; `multi_user` is printk time, moved onto that clock with the
/// dump's clock record).
fn probe_figures(console: &str, multi_user: Option<f64>) -> crate::bench_report::Probe {
    use crate::bench_report::{CpuSplit, Reads};
    use crate::guest_samples as gs;
    let log = gs::parse_console(console);
    let samples = &log.samples;
    let split = |c: gs::CpuSplit| CpuSplit {
        busy_s: c.busy_s,
        iowait_s: c.iowait_s,
        idle_s: c.idle_s,
    };
    let mut probe = crate::bench_report::Probe::default();
    // /proc/stat counts from the kernel's start: the first sample holds everything before it.
    if let Some(cpu) = samples.iter().find_map(|s| s.cpu) {
        probe.cpu_before = Some(CpuSplit {
            busy_s: cpu.busy() as f64 / gs::USER_HZ,
            iowait_s: cpu.iowait as f64 / gs::USER_HZ,
            idle_s: cpu.idle as f64 / gs::USER_HZ,
        });
    }
    if let Some((first, last)) = gs::initrd_span(samples) {
        probe.peak_initrd_kib = gs::peak_memory_used_kib(samples, first, last);
        probe.cpu_initrd = gs::cpu_split(samples, first, last).map(split);
        probe.reads_initrd = gs::reads_between(samples, first, last).map(|r| Reads {
            requests: r.requests,
            bytes: r.bytes,
        });
        if let Some(root) = samples.iter().find(|s| s.t > last && !s.in_initrd) {
            probe.cpu_switch = gs::cpu_split(samples, last, root.t).map(split);
            let end = match (multi_user, log.clock_offset_s) {
                (Some(printk), Some(offset)) => printk - offset,
                _ => f64::INFINITY,
            };
            probe.cpu_root = gs::cpu_split(samples, root.t, end).map(split);
        }
    }
    probe
}

fn qemu_version(sh: &Shell, binary: &str) -> String {
    cmd!(sh, "{binary} --version")
        .quiet()
        .read()
        .ok()
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn host_cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_owned();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("{model}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_profiles_parse() {
        assert_eq!(
            "512M".parse::<ContentSize>().unwrap().target_bytes,
            Some(512 << 20)
        );
        assert_eq!("dracut".parse::<ContentSize>().unwrap().target_bytes, None);
        for bad in ["512", "0M", "1G", "M"] {
            let error = bad.parse::<ContentSize>().unwrap_err().to_string();
            assert!(error.contains("128M"), "{error}");
        }
        assert_eq!("usb2".parse::<Profile>().unwrap(), Profile::Usb2);
        assert!("sata".parse::<Profile>().is_err());
        assert_eq!(Profile::Nvme.throttle(), None);
        assert_eq!(
            Profile::Sd.throttle().and_then(|t| t.requests_per_second),
            Some(1_500),
            "slow storage caps requests too, or scattered page reads would pass for free"
        );
        assert_eq!(Profile::Sd.describe(), "≈ 25 MB/s and 1500 requests/s");
        assert_eq!(Profile::Nvme.describe(), "unthrottled");
        assert_eq!(
            Profile::Sd.throttle().map(|t| t.bytes_per_second),
            Some(25_000_000)
        );
    }

    #[test]
    fn the_default_command_reproduces_the_defaults() {
        assert_eq!(
            Options::default().command(),
            "cargo xtask bench-boot --runs 5 --sizes dracut,128M,512M --profiles sd --jobs 2"
        );
    }

    /// Every milestone pattern compiles and matches the line it is meant for.
    #[test]
    fn the_service_flavours_systemd_figure_is_the_images_systemd() {
        // The service flavour's console (x86_64-q35-virtio-blk-debian12-6.12-dracut-service-uefi).
        let lines = [
            "[    2.101] Run /init as init process",
            "[    6.519631] systemd[1]: Running in initrd.",
            "[    7.802064] storage-init: prepared /initoverlayfs: ready for `systemctl switch-root /initoverlayfs` (789 ms)",
            "[    8.112315] systemd[1]: Switching root.",
            "[    9.862770] systemd[1]: Running in initrd.",
        ];
        let check = |chain: Chain, expected: &[(&str, usize)]| {
            // As the harness reads them: each milestone on a line after the previous one's.
            let mut next = 0;
            let mut matched = Vec::new();
            for (name, pattern, _) in milestones("6.12.95+deb12-amd64", chain) {
                let regex = regex::Regex::new(&pattern).unwrap();
                let Some(at) = (next..lines.len()).find(|&i| regex.is_match(lines[i])) else {
                    continue;
                };
                matched.push((name, at));
                next = at + 1;
            }
            assert_eq!(matched, expected, "{}", chain.name());
        };
        check(
            Chain::InitoverlayfsSystemd,
            &[
                ("userspace", 0),
                ("stage-one", 1),
                ("switch-to-image", 3),
                ("systemd", 4),
            ],
        );
        check(Chain::Initoverlayfs, &[("userspace", 0), ("systemd", 1)]);
    }

    #[test]
    fn milestones_match_their_lines() {
        let lines = [
            "BdsDxe: starting Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)",
            "[    0.000000] Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org)",
            "[    9.279862] Run /init as init process",
            "[   12.904479] systemd[1]: Running in initrd.",
            "[   50.123456] initoverlayfs-test: memory used=123456 kB",
            "[   98.924731] systemd[1]: Reached target multi-user.target - Multi-User System.",
        ];
        for ((name, pattern, _), line) in milestones("6.12.95+deb12-amd64", Chain::Initoverlayfs)
            .iter()
            .zip(lines)
        {
            let regex = regex::Regex::new(pattern).unwrap();
            assert!(regex.is_match(line), "{name}: {pattern} vs {line}");
        }
    }
}
