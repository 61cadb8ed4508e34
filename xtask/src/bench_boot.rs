//! `cargo xtask bench-boot`: the classic initramfs and initoverlayfs side by side, booted the
//! way a machine boots them, for several content sizes and storage speeds.
//!
//! Per content size one ESP is laid out holding everything an installed system has: the
//! kernel, the mini initramfs under the initramfs name, the classic initramfs under the
//! fallback name `builder install` gives it, the erofs image, and two Boot Loader
//! Specification entries. The two chains' disks differ only in `loader.conf`'s default entry,
//! so both pay for the same disk, the same firmware and the same bootloader; the classic chain
//! pays for reading its whole initramfs through the firmware, as it does on hardware.
//!
//! Runs are interleaved (initoverlayfs, classic, initoverlayfs, …) so drift of the host hits
//! both chains; with `--jobs 2` the two boots of a pair run at the same time. Every boot gets
//! a fresh copy of its disk and of the firmware's variable store.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::bench_report::{BootSample, Chain, Figures, RunInfo};
use crate::cells::{Bus, MachineKind};
use crate::fixtures::{self, Kernel};
use crate::images::{self, BootFsKind, Layout};
use crate::root_storage::RootStorage;

/// Where the report and each boot's artefacts go.
pub const BENCH_DIR: &str = "target/bench";
/// The kernel both chains boot unless `--kernel` says otherwise.
pub const DEFAULT_KERNEL: &str = "debian12-6.12-amd64";
/// Guest RAM: the 512 MiB point's classic initramfs is held compressed and unpacked at once.
const MEMORY_MIB: u32 = 2048;

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
    pub runs: u32,
    pub sizes: Vec<ContentSize>,
    pub profiles: Vec<Profile>,
    /// `mkfs.erofs -z` for the image; None: builder's default for the kernel.
    pub erofs_compression: Option<String>,
    /// `mkfs.erofs -C`: the largest compressed physical cluster; None: mkfs.erofs's default.
    pub pcluster_bytes: Option<u32>,
    /// storage-init's `read_ahead_kb` for the boot device; None: the kernel's.
    pub read_ahead_kb: Option<u32>,
    /// storage-init's `overlay`: false mounts the image itself as the read-only root.
    pub overlay: bool,
    /// Boot nothing: render the report again from the last run's `samples.json`.
    pub report_only: bool,
    pub kernel: String,
    /// Boots at a time: 2 runs a pair's two chains side by side.
    pub jobs: usize,
    pub accel: crate::accel::AccelChoice,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runs: 5,
            sizes: ["dracut", "128M", "512M"]
                .iter()
                .map(|s| s.parse().expect("the default sizes parse"))
                .collect(),
            profiles: vec![Profile::Sd, Profile::Nvme],
            erofs_compression: None,
            pcluster_bytes: None,
            read_ahead_kb: None,
            overlay: true,
            report_only: false,
            kernel: DEFAULT_KERNEL.to_owned(),
            jobs: 2,
            accel: crate::accel::AccelChoice::Auto,
        }
    }
}

impl Options {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        let mut command = format!(
            "cargo xtask bench-boot --runs {} --sizes {} --profiles {} --jobs {}",
            self.runs,
            self.sizes
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.profiles
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
            self.jobs
        );
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
        if self.kernel != DEFAULT_KERNEL {
            command.push_str(&format!(" --kernel {}", self.kernel));
        }
        command
    }
}

/// One content size's two disks and what the report needs to know of them.
struct SizePoint {
    size: ContentSize,
    content_bytes: u64,
    /// Kernel + the chain's initramfs file: what the bootloader reads.
    boot_files: [(Chain, u64, PathBuf); 2],
}

impl SizePoint {
    fn disk(&self, chain: Chain) -> (&Path, u64) {
        let (_, bytes, disk) = self
            .boot_files
            .iter()
            .find(|(c, _, _)| *c == chain)
            .expect("both chains have a disk");
        (disk, *bytes)
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
    firmware_code: PathBuf,
    pristine_vars: PathBuf,
    runs_dir: PathBuf,
}

pub fn run(sh: &Shell, root: &Path, options: &Options) -> Result<()> {
    if options.report_only {
        let bench_dir = root.join(BENCH_DIR);
        let saved = crate::bench_report::read_saved(&bench_dir.join("samples.json"))?;
        crate::bench_report::write_all(&bench_dir, &saved.info, &saved.samples)?;
        print!(
            "{}",
            crate::bench_report::markdown(&saved.info, &saved.samples)
        );
        return Ok(());
    }
    crate::provision::ensure(sh)?;
    let started = std::time::Instant::now();
    let pins = fixtures::read_kernels(root)?;
    let pin = pins
        .kernel
        .iter()
        .find(|k| k.id == options.kernel)
        .with_context(|| format!("no kernel {} in {}", options.kernel, fixtures::KERNELS_TOML))?;
    let kernel = fixtures::fetch_kernel(sh, pin)?;
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

    let bench_dir = root.join(BENCH_DIR);
    let work = bench_dir.join("boot");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let accel = crate::accel::resolve(options.accel, board, &kernel.vmlinuz, &work);
    let runs = options.runs;

    let storage_init = crate::static_build::build_for_arch(sh, root, machine_kind.arch())?;
    let base = crate::debian_tree::second_stage_initramfs(sh, &kernel)?;
    let spec = images::root_spec(BootFsKind::Vfat, RootStorage::Partition);
    let real_root = crate::debian_tree::real_root(sh, &kernel, &spec)?;
    // storage-init's knobs go on the command line of both entries (the classic chain's
    // kernel and systemd ignore them), so the two chains boot the same command line.
    let mut cmdline = format!(
        "console={} panic=-1 {} systemd.log_target=kmsg printk.devkmsg=on",
        board.console(),
        RootStorage::Partition.kernel_params()
    );
    if let Some(kb) = options.read_ahead_kb {
        cmdline.push_str(&format!(" initoverlayfs.read_ahead_kb={kb}"));
    }
    if !options.overlay {
        cmdline.push_str(" initoverlayfs.overlay=off");
    }
    let compression = options
        .erofs_compression
        .clone()
        .unwrap_or_else(|| builder::kernel_config::DEFAULT_EROFS_COMPRESSION.to_owned());

    let mut notes = Vec::new();
    let mut points = Vec::new();
    for size in &options.sizes {
        // The unpacked size comes with the grown file (cached beside it); only dracut's own
        // is read here.
        let (initramfs, added, content_bytes) = match size.target_bytes {
            None => (
                base.clone(),
                Vec::new(),
                crate::bench_content::unpacked_bytes(&base)?,
            ),
            Some(target) => {
                let grown = crate::bench_content::grown_initramfs(sh, root, &base, target)?;
                (grown.path, grown.added, grown.unpacked_bytes)
            }
        };
        if !added.is_empty() {
            notes.push(format!(
                "{}: Debian's dracut initramfs plus the files of {}",
                size.label,
                added.join(", ")
            ));
        }
        eprintln!(
            "bench-boot: building the disks of content size {}",
            size.label
        );
        points.push(build_point(
            &work.join(&size.label),
            size,
            &initramfs,
            content_bytes,
            &kernel,
            &storage_init,
            &real_root.root,
            &loader,
            uefi.removable_path,
            &cmdline,
            &compression,
            options.pcluster_bytes,
        )?);
    }

    let bench = Bench {
        board,
        firmware_code: firmware.join(uefi.code),
        pristine_vars: firmware.join(uefi.vars),
        kernel,
        accel,
        runs_dir: work.join("runs"),
    };
    // Interleaved: run by run, every point's pair, initoverlayfs first.
    let mut boots = Vec::new();
    for run in 1..=runs {
        for profile in &options.profiles {
            for point in &points {
                for chain in [Chain::Initoverlayfs, Chain::Classic] {
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
        "bench-boot: {} boots ({} runs x {} sizes x {} profiles x 2 chains), {} at a time, {}",
        boots.len(),
        runs,
        points.len(),
        options.profiles.len(),
        options.jobs,
        accel.name()
    );
    let samples = boot_all(&bench, &boots, options.jobs.max(1))?;

    let info = RunInfo {
        machine: format!(
            "{}, {} vCPU, {MEMORY_MIB} MiB, boot disk on virtio-blk (ESP vfat + ext4 root), UEFI ({}) + systemd-boot",
            board.machine_type(),
            1,
            uefi.firmware_package
        ),
        accel: accel.name().to_owned(),
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
    print!("{}", crate::bench_report::markdown(&info, &samples));
    eprintln!(
        "bench-boot: report in {}/boot.md, boot.csv and boot.svg",
        bench_dir.display()
    );
    if samples.iter().all(|s| !s.passed) {
        bail!(
            "bench-boot: no boot passed; see the artefacts under {}",
            bench.runs_dir.display()
        );
    }
    Ok(())
}

/// Lays out the ESP for one content size and writes its two disks.
#[allow(clippy::too_many_arguments)] // one call, every input named
fn build_point(
    dir: &Path,
    size: &ContentSize,
    initramfs: &Path,
    content_bytes: u64,
    kernel: &Kernel,
    storage_init: &Path,
    real_root: &Path,
    loader: &Path,
    removable_path: &str,
    cmdline: &str,
    compression: &str,
    pcluster_bytes: Option<u32>,
) -> Result<SizePoint> {
    let release = &kernel.release;
    let esp = dir.join("esp");
    if esp.exists() {
        std::fs::remove_dir_all(&esp).with_context(|| format!("emptying {}", esp.display()))?;
    }
    std::fs::create_dir_all(&esp)?;
    let copy = |from: &Path, to: &str| images::copy_into(&esp, from, to);
    let vmlinuz = copy(&kernel.vmlinuz, &format!("vmlinuz-{release}"))?;
    // The names `builder install` gives them on Debian: the mini initramfs under the
    // initramfs's name, the classic one kept as the fallback, the image under upstream's.
    let installed = builder::install::BootLayout {
        kind: builder::install::LayoutKind::Debian,
        root: esp.clone(),
        boot_mount: "/boot".to_owned(),
        kver: release.clone(),
        entry_token: None,
    };
    let (mini_name, classic_name) = (installed.initramfs_name(), installed.classic_name());
    let classic = copy(initramfs, &classic_name)?;
    let image = esp.join(installed.image_name());
    let options = builder::erofs::ErofsOptions {
        mtime: builder::source_date_epoch()?,
        compression: builder::erofs::ErofsCompression::parse(compression)
            .map_err(|e| anyhow::anyhow!("--erofs-compression: {e}"))?,
        keep_owners: true,
        pcluster_bytes,
    };
    let report = builder::image::image_from_initramfs(initramfs, &image, &options)
        .with_context(|| format!("building {} from {}", image.display(), initramfs.display()))?;
    let layout = Layout {
        boot_fs: BootFsKind::Vfat,
        bus: Bus::VirtioBlk,
        ..Layout::default()
    };
    let mini = dir.join("mini-initramfs.img");
    images::build_mini_initramfs(
        storage_init,
        kernel,
        layout,
        &report.erofs.uuid,
        None,
        &mini,
    )?;
    let mini_bytes = copy(&mini, &mini_name)?;
    copy(loader, removable_path)?;
    let entries = esp.join("loader/entries");
    std::fs::create_dir_all(&entries)?;
    let entry = |name: &str, title: &str, initrd: &str| {
        std::fs::write(
            entries.join(name),
            format!(
                "title Debian GNU/Linux {release} ({title})\nversion {release}\n\
                 linux /vmlinuz-{release}\ninitrd /{initrd}\noptions {cmdline}\n"
            ),
        )
    };
    entry(
        &entry_name(Chain::Initoverlayfs, release),
        "initoverlayfs",
        &mini_name,
    )?;
    entry(
        &entry_name(Chain::Classic, release),
        "classic initramfs",
        &classic_name,
    )?;

    let mut boot_files = Vec::new();
    for (chain, initrd_bytes) in [
        (Chain::Initoverlayfs, mini_bytes),
        (Chain::Classic, classic),
    ] {
        std::fs::write(
            esp.join("loader/loader.conf"),
            format!("timeout 0\ndefault {}\n", entry_name(chain, release)),
        )?;
        let disk = dir.join(format!("disk-{}.img", chain.name()));
        images::build_boot_disk(
            &esp,
            layout,
            Some(images::RootPartition::Ext4(real_root)),
            &disk,
        )?;
        boot_files.push((chain, vmlinuz + initrd_bytes, disk));
    }
    let boot_files: [(Chain, u64, PathBuf); 2] = boot_files
        .try_into()
        .map_err(|_| anyhow::anyhow!("two chains, two disks"))?;
    eprintln!(
        "bench-boot: {}: {:.1} MiB unpacked; classic initramfs {:.1} MiB, erofs image {:.1} MiB ({compression}), mini initramfs {:.2} MiB",
        size.label,
        content_bytes as f64 / f64::from(1 << 20),
        classic as f64 / f64::from(1 << 20),
        std::fs::metadata(&image)?.len() as f64 / f64::from(1 << 20),
        mini_bytes as f64 / f64::from(1 << 20),
    );
    Ok(SizePoint {
        size: size.clone(),
        content_bytes,
        boot_files,
    })
}

/// The BLS entry of each chain.
fn entry_name(chain: Chain, release: &str) -> String {
    match chain {
        Chain::Initoverlayfs => format!("debian-{release}.conf"),
        Chain::Classic => format!("debian-{release}-classic.conf"),
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

/// The milestones of one boot: (figure name, pattern, TCG timeout in seconds).
fn milestones(release: &str) -> [(&'static str, String, u64); 6] {
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
    ]
}

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
    let (disk, boot_files_bytes) = boot.point.disk(boot.chain);
    // A fresh copy each boot: the real root writes to its disk (journal, fsck state).
    let scratch = artifacts.join("disk.img");
    std::fs::copy(disk, &scratch)
        .with_context(|| format!("copying {} to {}", disk.display(), scratch.display()))?;
    let vars = artifacts.join("efivars.fd");
    std::fs::copy(&bench.pristine_vars, &vars)
        .with_context(|| format!("copying {}", bench.pristine_vars.display()))?;
    let machine = testvm::machine::Machine {
        board: bench.board,
        accel: bench.accel,
        memory_mib: MEMORY_MIB,
        cpus: 1,
        boot: testvm::machine::Boot::Uefi {
            code: bench.firmware_code.clone(),
            vars,
            secure_boot: false,
        },
        dtb: None,
        disks: vec![testvm::machine::Disk {
            path: scratch.clone(),
            bus: testvm::machine::DiskBus::VirtioBlk,
            serial: "boot0".to_owned(),
            read_only: false,
            throttle: boot.profile.throttle(),
        }],
        hotplug_ports: 0,
        empty_cdroms: 0,
        on_reboot: testvm::machine::GuestReboot::ExitQemu,
    };
    let mut milestone_specs = Vec::new();
    for (name, pattern, seconds) in milestones(&bench.kernel.release) {
        let timeout = crate::vm_test::scaled_timeout(Duration::from_secs(seconds), bench.accel);
        milestone_specs.push(testvm::run::Milestone::new(name, &pattern, timeout)?);
    }
    // The classic chain never runs storage-init; initoverlayfs's must not fail.
    let storage_init_fatal = match boot.chain {
        Chain::Initoverlayfs => "storage-init: FATAL",
        Chain::Classic => "storage-init",
    };
    let mut fatal = vec![testvm::run::Fatal::new("panic", "Kernel panic")?];
    fatal.push(testvm::run::Fatal::new("storage-init", storage_init_fatal)?);
    for always in crate::verdict::ALWAYS_FATAL {
        fatal.push(testvm::run::Fatal::new(always, always)?);
    }
    let spec = testvm::run::BootSpec {
        milestones: milestone_specs,
        fatal,
        end: testvm::run::End::Quit,
        hotplug: Vec::new(),
        read_sampling: None,
    };
    let outcome = testvm::run::boot(&machine, &spec, &artifacts);
    let _ = std::fs::remove_file(&scratch); // a GiB per boot; absent is fine
    let passed = match &outcome {
        Ok(_) => true,
        Err(testvm::run::VmError::Guest(_)) => false,
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
    let reached = |figure: &str| timings.milestones.iter().find(|m| m.name == figure);
    let host = |figure: &str| reached(figure).map(|m| m.host_ms as f64 / 1000.0);
    let guest = |figure: &str| reached(figure).and_then(|m| m.guest_s);
    let mem_used_kib = reached("memory").and_then(|m| {
        let (_, rest) = m.line.split_once("memory used=")?;
        rest.split_once(" kB")?.0.parse().ok()
    });
    Ok(BootSample {
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
            multi_user: guest("multi-user"),
        },
        bytes_read: reached("multi-user").and_then(|m| m.bytes_read),
        bytes_read_to_systemd: reached("systemd").and_then(|m| m.bytes_read),
        mem_used_kib,
        boot_files_bytes,
        passed,
    })
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
            "cargo xtask bench-boot --runs 5 --sizes dracut,128M,512M --profiles sd,nvme --jobs 2"
        );
    }

    /// Every milestone pattern compiles and matches the line it is meant for.
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
        for ((name, pattern, _), line) in milestones("6.12.95+deb12-amd64").iter().zip(lines) {
            let regex = regex::Regex::new(pattern).unwrap();
            assert!(regex.is_match(line), "{name}: {pattern} vs {line}");
        }
    }
}
