//! The reports of `cargo xtask bench-boot`: the data model of one boot's figures and the pure
//! renderings of a run (`boot.csv`, `boot.md`, `boot.svg`, and `samples.json` to re-render from).
//! The runner that boots QEMU lives elsewhere; everything here is strings in, strings out.
//!
//! A run boots several chains (ways of booting the same second-stage content: [`Chain`]); every
//! ratio is a chain's median over the baseline's, [`Chain::BASELINE`], the classic initramfs as
//! dracut makes it by default.

mod csv;
mod markdown;
mod svg;

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

// Parsed from the console by the judge layer; part of every sample.
pub use crate::boot_log::{Phases, UnitSpan};

pub use csv::csv;
pub use markdown::markdown;
pub use svg::svg;

/// A way to boot the same second-stage content, as the benchmark compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Chain {
    /// Kernel + the whole initramfs, gzip-compressed (dracut's choice on Debian), loaded by the
    /// bootloader and unpacked by the kernel.
    #[serde(rename = "classic-gzip", alias = "classic")]
    ClassicGzip,
    /// The same initramfs compressed with zstd (`dracut --compress zstd`).
    #[serde(rename = "classic-zstd")]
    ClassicZstd,
    /// dracut's `squash-erofs` module: the initramfs holds the content as an erofs image, which
    /// its init mounts with an overlay: the kernel unpacks little, but all of it sits in RAM.
    #[serde(rename = "squash-erofs")]
    SquashErofs,
    /// Kernel + mini initramfs; storage-init mounts the erofs second stage from /boot lazily.
    #[serde(rename = "initoverlayfs")]
    Initoverlayfs,
    /// initoverlayfs's mini initramfs and image with the syscall floor as PID 1: the same
    /// mounts and switch-root with none of storage-init's decisions.
    #[serde(rename = "floor")]
    Floor,
    /// initoverlayfs's image with upstream's service flavour of the mini initramfs: systemd
    /// (taken from the same dracut initramfs) as PID 1, storage-init as its `--prepare-only`
    /// service, then `systemctl switch-root`.
    #[serde(rename = "initoverlayfs-systemd")]
    InitoverlayfsSystemd,
}

impl Chain {
    /// Every chain, in the order the reports show them.
    pub const ALL: [Chain; 6] = [
        Chain::ClassicGzip,
        Chain::ClassicZstd,
        Chain::SquashErofs,
        Chain::Initoverlayfs,
        Chain::Floor,
        Chain::InitoverlayfsSystemd,
    ];

    /// What every ratio divides by.
    pub const BASELINE: Chain = Chain::ClassicGzip;

    /// The chains whose initramfs holds the whole content: initoverlayfs's peers.
    pub const PEERS: [Chain; 3] = [Chain::ClassicGzip, Chain::ClassicZstd, Chain::SquashErofs];

    /// Its name on the command line (`--chains`), in file names and in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Chain::ClassicGzip => "classic-gzip",
            Chain::ClassicZstd => "classic-zstd",
            Chain::SquashErofs => "squash-erofs",
            Chain::Initoverlayfs => "initoverlayfs",
            Chain::Floor => "floor",
            Chain::InitoverlayfsSystemd => "initoverlayfs-systemd",
        }
    }

    /// One sentence on what it boots, for the reports' headers.
    pub fn describe(self) -> &'static str {
        match self {
            Chain::ClassicGzip => {
                "the kernel and the whole initramfs, gzip-compressed as dracut makes it on \
Debian, loaded by the bootloader and unpacked by the kernel (the baseline of every ratio)"
            }
            Chain::ClassicZstd => {
                "the same initramfs compressed with zstd (`dracut --compress zstd`)"
            }
            Chain::SquashErofs => {
                "dracut's `squash-erofs` module: the initramfs holds the content as an erofs \
image, mounted under an overlay by a small init before systemd starts; unpacking is cheap, but \
the whole image sits in RAM"
            }
            Chain::Initoverlayfs => {
                "the kernel and a mini initramfs whose PID 1, storage-init, mounts the content as \
an erofs image from /boot and reads it lazily"
            }
            Chain::Floor => {
                "initoverlayfs's mini initramfs and image with the syscall floor as PID 1 (the \
same mounts and switch-root, none of storage-init's decisions): what storage-init could at best \
be"
            }
            Chain::InitoverlayfsSystemd => {
                "initoverlayfs's image, with systemd as the mini initramfs's PID 1 (taken from \
the same dracut initramfs) running storage-init as its `--prepare-only` service, then \
`systemctl switch-root`: upstream's service flavour; its systemd figure is the image's systemd"
            }
        }
    }
}

impl std::str::FromStr for Chain {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Chain> {
        Chain::ALL
            .into_iter()
            .find(|chain| chain.name() == s)
            .with_context(|| {
                let names: Vec<&str> = Chain::ALL.iter().map(|c| c.name()).collect();
                format!("boot chain {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// Seconds to each figure; None when the boot never got there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub kernel_start: Option<f64>,
    pub first_userspace: Option<f64>,
    pub running_in_initrd: Option<f64>,
    pub multi_user: Option<f64>,
}

impl Figures {
    /// The figures in boot order with the words the reports use for them.
    fn named(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("kernel start", self.kernel_start),
            ("first userspace", self.first_userspace),
            ("systemd", self.running_in_initrd),
            ("multi-user", self.multi_user),
        ]
    }
}

/// Where a stretch of guest time went, in seconds, from the kernel's /proc/stat counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSplit {
    /// Running: user, nice, system, irq, softirq, steal.
    pub busy_s: f64,
    /// Idle with I/O outstanding.
    pub iowait_s: f64,
    /// Idle otherwise.
    pub idle_s: f64,
}

/// Reads from the guest's disks over a stretch of time, from /proc/diskstats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Reads {
    pub requests: u64,
    pub bytes: u64,
}

/// What the guest's own sampler saw (the benchmark's instrumentation in the content and the
/// real root, every quarter second): absent in runs without it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The highest MemTotal − MemAvailable sampled while in the initrd.
    pub peak_initrd_kib: Option<u64>,
    /// From the kernel's start to the first sample (in the initrd, as systemd starts): the
    /// kernel, unpacking the initramfs, stage one.
    pub cpu_before: Option<CpuSplit>,
    /// From the first sample in the initrd to the last one before the switch root.
    pub cpu_initrd: Option<CpuSplit>,
    /// From the last sample in the initrd to the first in the real root: the end of the
    /// initrd, the switch, the real root's systemd starting (no sampler runs then).
    #[serde(default)]
    pub cpu_switch: Option<CpuSplit>,
    /// From the first sample in the real root to `multi-user.target`.
    pub cpu_root: Option<CpuSplit>,
    /// Reads while in the initrd (same window as `cpu_initrd`).
    pub reads_initrd: Option<Reads>,
}

/// QEMU's own work under TCG for one boot (its monitor's `info jit` at the last milestone):
/// what the guest's clock counts without the guest having asked for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TcgWork {
    /// Host code bytes in the translation buffer.
    pub code_bytes: u64,
    /// Translations thrown away because their guest page changed.
    pub tb_invalidations: u64,
    /// Partial TLB flushes.
    pub tlb_partial_flushes: u64,
}

/// One boot of one chain at one content size on one storage profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootSample {
    pub chain: Chain,
    /// Content size label, e.g. "dracut", "128M", "512M".
    pub size: String,
    /// Unpacked bytes of the second stage (the initramfs's cpio bytes).
    pub content_bytes: u64,
    /// Storage profile: "sd", "usb2", "nvme".
    pub profile: String,
    /// 1-based run index.
    pub run: u32,
    /// Host seconds since QEMU started.
    pub host: Figures,
    /// Guest printk seconds since kernel start (kernel_start is 0.0 when the kernel ran).
    pub guest: Figures,
    /// Guest seconds to the marks of the initrd and the real root, from systemd's lines.
    #[serde(default)]
    pub phases: Phases,
    /// Bytes the guest read from the boot disk by multi-user (QMP query-blockstats rd_bytes).
    pub bytes_read: Option<u64>,
    /// The same by systemd's `Running in initrd`: where the chains differ most, since what
    /// follows (the real root) is the same for all.
    #[serde(default)]
    pub bytes_read_to_systemd: Option<u64>,
    /// Read requests to the boot disk by multi-user (QMP query-blockstats rd_operations).
    #[serde(default)]
    pub read_requests: Option<u64>,
    /// The same by systemd's `Running in initrd`.
    #[serde(default)]
    pub read_requests_to_systemd: Option<u64>,
    /// MemTotal - MemAvailable right after the switch to the real root.
    pub mem_used_kib: Option<u64>,
    /// The initramfs file as the bootloader loaded it, held in RAM until the kernel unpacked
    /// it (`Freeing initrd memory`).
    #[serde(default)]
    pub initramfs_freed_kib: Option<u64>,
    /// The guest sampler's figures.
    #[serde(default)]
    pub probe: Probe,
    /// The units that started and ended while systemd ran in the initrd (systemd's log).
    #[serde(default)]
    pub initrd_units: Vec<UnitSpan>,
    /// What the bootloader loads: kernel + initramfs file (compressed).
    pub boot_files_bytes: u64,
    /// false: the boot failed; its figures are partial, it is excluded from medians but listed.
    pub passed: bool,
    /// How a failed boot failed, as the harness judged it (a fatal line, a milestone that
    /// never came).
    #[serde(default)]
    pub failure: Option<String>,
    /// What TCG threw away and kept over the boot, at its last milestone (none under KVM).
    #[serde(default)]
    pub tcg: Option<TcgWork>,
    /// The host's CPUs busy with anything but this boot's QEMU, on average from QEMU's start to
    /// the last milestone (another boot of the run included): a loaded host slows a TCG guest.
    #[serde(default)]
    pub host_other_cpus: Option<f64>,
}

/// How and where the run was made; printed in the reports' headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub machine: String,
    pub accel: String,
    pub kernel: String,
    pub qemu: String,
    pub host_cpu: String,
    pub command: String,
    pub date: String,
    /// Runs per point (chain × size × profile).
    pub runs: u32,
    pub notes: Vec<String>,
    /// Each storage profile's throttle as this run set it (`sd`: `≈ 25 MB/s and 1500
    /// requests/s`), saved with the samples so `--report-only` describes the run that was made,
    /// not the profiles of the code that renders it. Empty in runs saved before it existed.
    #[serde(default)]
    pub throttles: Vec<(String, String)>,
}

/// `samples.json`: everything needed to render the reports again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub info: RunInfo,
    pub samples: Vec<BootSample>,
}

/// Bytes in a MB, the unit of slopes, crossovers and the SVG's x axis (decimal, as disk
/// throughputs are quoted).
const MB: f64 = 1e6;
/// Bytes in a MiB, the unit of the tables' sizes (as `free` and /proc/meminfo count).
const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// Statistics

/// The median; of an even count, the mean of the two middle values. None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Median, extremes and count of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(values: &[f64]) -> Option<Stats> {
    Some(Stats {
        median: median(values)?,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        n: values.len(),
    })
}

/// The least-squares line through `points` (x in bytes, y in seconds): (slope in seconds per
/// byte, intercept in seconds). None with fewer than 2 distinct x.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.is_empty() {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, mean_y - slope * mean_x))
}

/// Milliseconds per 100 MB (10^8 bytes) of the least-squares line through `points` (x in
/// bytes, y in seconds). None with fewer than 2 distinct sizes.
pub fn slope_ms_per_100mb(points: &[(f64, f64)]) -> Option<f64> {
    fit_line(points).map(|(slope, _)| slope * 100.0 * MB * 1000.0)
}

/// The x (bytes) where two lines `(slope in s/byte, intercept in s)` meet; None when they are
/// parallel (or the same line). The meeting point may lie outside the measured sizes, even
/// below zero: the caller says which.
pub fn crossover_bytes(a: (f64, f64), b: (f64, f64)) -> Option<f64> {
    if a.0 == b.0 {
        return None;
    }
    let x = (b.1 - a.1) / (a.0 - b.0);
    x.is_finite().then_some(x)
}

// ---------------------------------------------------------------------------------------------
// Grouping

/// One figure of a boot as a number (seconds, bytes or a count); None when it was not reached.
type Figure = fn(&BootSample) -> Option<f64>;

/// The profiles in the order the samples first name them.
fn profiles(samples: &[BootSample]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        if !seen.contains(&s.profile.as_str()) {
            seen.push(&s.profile);
        }
    }
    seen
}

/// The chains the samples hold, in [`Chain::ALL`]'s order.
fn chains(samples: &[BootSample]) -> Vec<Chain> {
    Chain::ALL
        .into_iter()
        .filter(|chain| samples.iter().any(|s| s.chain == *chain))
        .collect()
}

/// The size labels measured on `profile`, smallest content first.
fn sizes<'a>(samples: &'a [BootSample], profile: &str) -> Vec<&'a str> {
    let mut by_bytes: Vec<(u64, &str)> = Vec::new();
    for s in samples.iter().filter(|s| s.profile == profile) {
        match by_bytes.iter_mut().find(|(_, size)| *size == s.size) {
            Some(entry) => entry.0 = entry.0.min(s.content_bytes),
            None => by_bytes.push((s.content_bytes, &s.size)),
        }
    }
    by_bytes.sort();
    by_bytes.into_iter().map(|(_, size)| size).collect()
}

/// The samples of one point (chain × profile × size), passed or not.
fn point<'a>(
    samples: &'a [BootSample],
    chain: Chain,
    profile: &'a str,
    size: &'a str,
) -> impl Iterator<Item = &'a BootSample> + 'a {
    samples
        .iter()
        .filter(move |s| s.chain == chain && s.profile == profile && s.size == size)
}

/// One figure over the passed boots of a point, Nones left out.
fn passed_values(
    samples: &[BootSample],
    chain: Chain,
    profile: &str,
    size: &str,
    figure: Figure,
) -> Vec<f64> {
    point(samples, chain, profile, size)
        .filter(|s| s.passed)
        .filter_map(figure)
        .collect()
}

/// The content bytes of a point (the smallest, should its runs disagree); None when the point
/// has no samples.
fn content_bytes(samples: &[BootSample], chain: Chain, profile: &str, size: &str) -> Option<u64> {
    point(samples, chain, profile, size)
        .map(|s| s.content_bytes)
        .min()
}

/// (content bytes, median guest seconds to "Running in initrd") per measured size.
fn systemd_medians(samples: &[BootSample], chain: Chain, profile: &str) -> Vec<(f64, Stats)> {
    medians_by_size(samples, chain, profile, |s| s.guest.running_in_initrd)
}

/// Per content size (bytes), the statistics of `figure` over the passed runs.
fn medians_by_size(
    samples: &[BootSample],
    chain: Chain,
    profile: &str,
    figure: Figure,
) -> Vec<(f64, Stats)> {
    sizes(samples, profile)
        .into_iter()
        .filter_map(|size| {
            let bytes = content_bytes(samples, chain, profile, size)?;
            let values = passed_values(samples, chain, profile, size, figure);
            Some((bytes as f64, stats(&values)?))
        })
        .collect()
}

/// What a boot reached: its last guest figure, or the host's kernel start.
fn reached(s: &BootSample) -> String {
    if let Some((name, secs)) = s
        .guest
        .named()
        .into_iter()
        .rev()
        .find_map(|(name, secs)| Some((name, secs?)))
    {
        return format!("{name} at {secs:.2} s (guest)");
    }
    match s.host.kernel_start {
        Some(secs) => format!("kernel start at {secs:.2} s (host)"),
        None => "nothing: the kernel never started".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Progress

/// One line per finished boot for the runner to print, e.g.
/// `bench-boot: [7/60] sd 128M classic-gzip run 2: systemd 14.21 s (read 70.2 MiB in 130
/// requests), multi-user 88.02 s (read 173.4 MiB in 1400 requests)`.
pub fn progress_line(done: usize, total: usize, s: &BootSample) -> String {
    let head = format!(
        "bench-boot: [{done}/{total}] {} {} {} run {}",
        s.profile,
        s.size,
        s.chain.name(),
        s.run
    );
    if !s.passed {
        return format!("{head}: FAILED, reached {}", reached(s));
    }
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
    let read = |bytes: Option<u64>, requests: Option<u64>| {
        let mib = bytes.map_or("-".to_owned(), |b| format!("{:.1} MiB", b as f64 / MIB));
        match requests {
            Some(n) => format!("read {mib} in {n} requests"),
            None => format!("read {mib}"),
        }
    };
    format!(
        "{head}: systemd {} ({}), multi-user {} ({})",
        secs(s.guest.running_in_initrd),
        read(s.bytes_read_to_systemd, s.read_requests_to_systemd),
        secs(s.guest.multi_user),
        read(s.bytes_read, s.read_requests)
    )
}

// ---------------------------------------------------------------------------------------------
// Files

/// Writes `boot.csv`, `boot.md`, `boot.svg` and `samples.json` (the info and the samples, to
/// render the reports again) into `dir`, creating it.
pub fn write_all(dir: &Path, info: &RunInfo, samples: &[BootSample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let saved = SavedRun {
        info: info.clone(),
        samples: samples.to_vec(),
    };
    let json = serde_json::to_string_pretty(&saved).context("serializing the samples")?;
    for (name, text) in [
        ("boot.csv", csv(samples)),
        ("boot.md", markdown(info, samples)),
        ("boot.svg", svg(info, samples)),
        ("samples.json", json + "\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Reads a `samples.json` written by [`write_all`]. Floats may come back an ulp off (serde_json
/// parses without its `float_roundtrip` feature); the reports render the same.
pub fn read_saved(path: &Path) -> anyhow::Result<SavedRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests;
