//! The reports of `cargo xtask bench-boot`: the data model of one boot's figures and the pure
//! renderings of a run (`boot.csv`, `boot.md`, `boot.svg`, and `samples.json` to re-render from).
//! The runner that boots QEMU lives elsewhere; everything here is strings in, strings out.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Which boot chain a sample booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    /// Kernel + mini initramfs; storage-init mounts the erofs second stage from /boot lazily.
    Initoverlayfs,
    /// Kernel + the whole initramfs, loaded by the bootloader and unpacked by the kernel.
    Classic,
}

impl Chain {
    /// Both chains, in the order the reports show them.
    pub const ALL: [Chain; 2] = [Chain::Initoverlayfs, Chain::Classic];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Initoverlayfs => "initoverlayfs",
            Chain::Classic => "classic",
        }
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
    /// Bytes the guest read from the boot disk by multi-user (QMP query-blockstats rd_bytes).
    pub bytes_read: Option<u64>,
    /// The same by systemd's `Running in initrd`: where the two chains differ, since what
    /// follows (the real root) is the same for both.
    #[serde(default)]
    pub bytes_read_to_systemd: Option<u64>,
    /// MemTotal - MemAvailable right after the switch to the real root.
    pub mem_used_kib: Option<u64>,
    /// What the bootloader loads: kernel + initramfs file (compressed).
    pub boot_files_bytes: u64,
    /// false: the boot failed; its figures are partial, it is excluded from medians but listed.
    pub passed: bool,
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
/// `bench-boot: [7/60] sd 128M classic run 2: systemd 14.21 s, multi-user 88.02 s, read 173.4 MiB`.
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
    let mib = |v: Option<u64>| v.map_or("-".to_owned(), |b| format!("{:.1} MiB", b as f64 / MIB));
    format!(
        "{head}: systemd {} (read {}), multi-user {} (read {})",
        secs(s.guest.running_in_initrd),
        mib(s.bytes_read_to_systemd),
        secs(s.guest.multi_user),
        mib(s.bytes_read)
    )
}

// ---------------------------------------------------------------------------------------------
// CSV

const CSV_HEADER: &str = "chain,size,content_bytes,profile,run,passed,\
host_kernel_start,host_first_userspace,host_running_in_initrd,host_multi_user,\
guest_kernel_start,guest_first_userspace,guest_running_in_initrd,guest_multi_user,\
bytes_read,mem_used_kib,boot_files_bytes,bytes_read_to_systemd";

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `boot.csv`: a header row, then one row per boot in the samples' order; an empty cell for a
/// figure not reached; seconds with 3 decimals.
pub fn csv(samples: &[BootSample]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let secs = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let count = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        let mut row = vec![
            s.chain.name().to_owned(),
            csv_field(&s.size),
            s.content_bytes.to_string(),
            csv_field(&s.profile),
            s.run.to_string(),
            s.passed.to_string(),
        ];
        for figures in [&s.host, &s.guest] {
            row.extend(figures.named().into_iter().map(|(_, v)| secs(v)));
        }
        row.push(count(s.bytes_read));
        row.push(count(s.mem_used_kib));
        row.push(s.boot_files_bytes.to_string());
        row.push(count(s.bytes_read_to_systemd));
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// Text for a Markdown table cell.
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The storage profile's throttle group as the run set it; None when the run did not say.
fn profile_throttle<'a>(info: &'a RunInfo, profile: &str) -> Option<&'a str> {
    info.throttles
        .iter()
        .find(|(name, _)| name == profile)
        .map(|(_, throttle)| throttle.as_str())
}

/// The accelerator as the reports name it: "TCG", "KVM", or as given.
fn accel_name(accel: &str) -> String {
    match accel {
        "tcg" | "kvm" | "hvf" | "whpx" => accel.to_uppercase(),
        "" => "unknown accelerator".to_owned(),
        other => other.to_owned(),
    }
}

/// `median [min–max]` of seconds, with the count when it is not the run's runs per point.
fn time_cell(stats: Option<Stats>, runs: u32) -> String {
    let Some(st) = stats else {
        return "-".to_owned();
    };
    let mut cell = if st.n == 1 {
        format!("{:.2}", st.median)
    } else {
        format!("{:.2} [{:.2}–{:.2}]", st.median, st.min, st.max)
    };
    if st.n != runs as usize {
        let _ = write!(cell, " (n={})", st.n);
    }
    cell
}

/// The ratio of two medians, initoverlayfs over classic.
fn ratio_cell(a: Option<Stats>, b: Option<Stats>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
        _ => "-".to_owned(),
    }
}

/// A median of bytes in MiB.
fn mib_cell(values: &[f64]) -> String {
    median(values).map_or("-".to_owned(), |v| format!("{:.1}", v / MIB))
}

fn secs_median_cell(values: &[f64]) -> String {
    median(values).map_or("-".to_owned(), |v| format!("{v:.2}"))
}

/// The content MiB of a size: one figure, or both chains' when they disagree.
fn content_cell(samples: &[BootSample], profile: &str, size: &str) -> String {
    let bytes: Vec<u64> = Chain::ALL
        .iter()
        .filter_map(|&chain| content_bytes(samples, chain, profile, size))
        .collect();
    let distinct: BTreeSet<u64> = bytes.iter().copied().collect();
    if distinct.len() <= 1 {
        bytes
            .first()
            .map_or("-".to_owned(), |&b| format!("{:.1}", b as f64 / MIB))
    } else {
        bytes
            .iter()
            .map(|&b| format!("{:.1}", b as f64 / MIB))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

fn header(info: &RunInfo, out: &mut String) {
    out.push_str("# Boot time: initoverlayfs against the classic initramfs\n\n");
    out.push_str(
        "Two boot chains of the same kernel and the same second-stage content, both loaded by UEFI \
firmware and systemd-boot from the same disk: **initoverlayfs** (the kernel and a mini \
initramfs whose PID 1, storage-init, mounts the second stage as an erofs image from /boot and \
reads it lazily) and **classic** (the kernel and the whole initramfs, loaded by the bootloader \
and unpacked by the kernel). Each size is one second-stage content, named as the runner names \
it; *content* is its unpacked bytes (the initramfs's cpio bytes).\n\n",
    );
    let throttles: Vec<String> = info
        .throttles
        .iter()
        .map(|(profile, throttle)| format!("`{profile}` {throttle}"))
        .collect();
    if throttles.is_empty() {
        out.push_str("The boot disk sits behind a QEMU throttle group, one per storage profile. ");
    } else {
        let _ = write!(
            out,
            "The boot disk sits behind a QEMU throttle group, one per storage profile: {}. ",
            throttles.join(", ")
        );
    }
    out.push_str(
        "Per boot: guest seconds (printk time since the kernel \
started) to systemd's `Running in initrd` and to `multi-user.target`; host seconds from QEMU's \
start to the kernel's start; bytes read from the boot disk by systemd's `Running in initrd` \
and by multi-user.target (QMP `query-blockstats` `rd_bytes`, asked as the line appears on the \
console, the firmware's and bootloader's reads included); memory used (MemTotal − \
MemAvailable) right after the switch to the real root. A time cell is the median \
[min–max] over the passed runs (of an even count, the mean of the two middle values), with \
(n=…) when fewer runs than planned count; other cells are medians. MiB = 2^20 bytes, MB = 10^6 \
bytes.\n\n",
    );
    for (label, value) in [
        ("machine", info.machine.clone()),
        ("accelerator", info.accel.clone()),
        ("kernel", info.kernel.clone()),
        ("QEMU", info.qemu.clone()),
        ("host CPU", info.host_cpu.clone()),
        ("date", info.date.clone()),
        ("runs per point", info.runs.to_string()),
        ("command", format!("`{}`", info.command)),
    ] {
        let _ = writeln!(out, "- {label}: {value}");
    }
    for note in &info.notes {
        let _ = writeln!(out, "- note: {note}");
    }
    out.push('\n');
    if info.accel == "tcg" {
        out.push_str(
            "> **Under TCG** the guest's CPU work (decompressing the initramfs, loading modules, \
systemd itself) is slowed far more than its reads, which come from the host's page cache \
through the throttle. TCG ratios therefore over-weight CPU cost; KVM figures are what a real \
machine is closer to.\n\n",
        );
    }
}

/// One figure of a boot as a number (seconds or bytes); None when it was not reached.
type Figure = fn(&BootSample) -> Option<f64>;
/// A table cell made of a figure's values over a point's passed runs.
type Cell = fn(&[f64]) -> String;

fn profile_tables(info: &RunInfo, samples: &[BootSample], profile: &str, out: &mut String) {
    let throttle = profile_throttle(info, profile).map_or(String::new(), |t| format!(" ({t})"));
    let _ = writeln!(out, "## Storage profile `{}`{throttle}\n", md_cell(profile));
    let sizes = sizes(samples, profile);
    let values = |chain: Chain, size: &str, figure: Figure| {
        passed_values(samples, chain, profile, size, figure)
    };

    out.push_str("Guest seconds since the kernel started.\n\n");
    out.push_str(
        "| size | content MiB | systemd in initrd: initoverlayfs | classic | ratio | \
multi-user.target: initoverlayfs | classic | ratio |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let timings: [Figure; 2] = [|s| s.guest.running_in_initrd, |s| s.guest.multi_user];
    for &size in &sizes {
        let _ = write!(
            out,
            "| {} | {} |",
            md_cell(size),
            content_cell(samples, profile, size)
        );
        for figure in timings {
            let [a, b] = Chain::ALL.map(|chain| stats(&values(chain, size, figure)));
            let _ = write!(
                out,
                " {} | {} | {} |",
                time_cell(a, info.runs),
                time_cell(b, info.runs),
                ratio_cell(a, b)
            );
        }
        out.push('\n');
    }
    out.push_str("\nRatio: initoverlayfs over classic, of the medians.\n\n");

    out.push_str(
        "Host seconds from QEMU's start (power-on) to systemd's `Running in initrd`: the guest \
clock starts with the kernel, so only this figure holds the firmware's and bootloader's work, \
the classic initramfs's load from the disk among it.\n\n| size | power-on to systemd: \
initoverlayfs | classic | ratio |\n|---|--:|--:|--:|\n",
    );
    for &size in &sizes {
        let figure: Figure = |s| s.host.running_in_initrd;
        let [a, b] = Chain::ALL.map(|chain| stats(&values(chain, size, figure)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            md_cell(size),
            time_cell(a, info.runs),
            time_cell(b, info.runs),
            ratio_cell(a, b)
        );
    }
    out.push('\n');

    out.push_str(
        "What the bootloader loaded, when the kernel started, what the boot read, and the memory \
in use after the switch to the real root (medians).\n\n",
    );
    out.push_str(
        "| size | boot files MiB: initoverlayfs | classic | host s to kernel start: initoverlayfs | \
classic | read by systemd in initrd MiB: initoverlayfs | classic | read by multi-user MiB: \
initoverlayfs | classic | memory after switch root MiB: initoverlayfs | classic |\n\
|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let loads: [(Figure, Cell); 5] = [
        (|s| Some(s.boot_files_bytes as f64), mib_cell),
        (|s| s.host.kernel_start, secs_median_cell),
        (|s| s.bytes_read_to_systemd.map(|b| b as f64), mib_cell),
        (|s| s.bytes_read.map(|b| b as f64), mib_cell),
        (|s| s.mem_used_kib.map(|k| k as f64 * 1024.0), mib_cell),
    ];
    for &size in &sizes {
        let _ = write!(out, "| {} |", md_cell(size));
        for (figure, cell) in loads {
            for chain in Chain::ALL {
                let _ = write!(out, " {} |", cell(&values(chain, size, figure)));
            }
        }
        out.push('\n');
    }
    out.push('\n');
}

fn slopes_section(samples: &[BootSample], out: &mut String) {
    out.push_str("## Slopes\n\n");
    out.push_str(
        "Least-squares slope of the median time to `Running in initrd` against the content \
size, in milliseconds per 100 MB of content (MB = 10^6 bytes): guest time (since the kernel \
started) and host time (since power-on, the initramfs's load included); `-` with fewer than \
two sizes measured.\n\n| profile | guest: initoverlayfs ms/100 MB | classic ms/100 MB | \
host: initoverlayfs ms/100 MB | classic ms/100 MB | sizes |\n|---|--:|--:|--:|--:|--:|\n",
    );
    for profile in profiles(samples) {
        let _ = write!(out, "| `{}` |", md_cell(profile));
        let mut counts = Vec::new();
        let figures: [Figure; 2] = [|s| s.guest.running_in_initrd, |s| s.host.running_in_initrd];
        for figure in figures {
            for chain in Chain::ALL {
                let points: Vec<(f64, f64)> = medians_by_size(samples, chain, profile, figure)
                    .into_iter()
                    .map(|(x, st)| (x, st.median))
                    .collect();
                counts.push(points.len().to_string());
                let slope =
                    slope_ms_per_100mb(&points).map_or("-".to_owned(), |v| format!("{v:.1}"));
                let _ = write!(out, " {slope} |");
            }
        }
        counts.dedup();
        let _ = writeln!(out, " {} |", counts.join(" / "));
    }
    out.push('\n');
}

/// Where the median time-to-systemd lines of the two chains meet, with the measured medians
/// beside the fitted verdict.
fn crossover_sentence(samples: &[BootSample], profile: &str) -> String {
    let medians = Chain::ALL.map(|chain| systemd_medians(samples, chain, profile));
    let points = |i: usize| -> Vec<(f64, f64)> {
        medians[i].iter().map(|(x, st)| (*x, st.median)).collect()
    };
    let (Some(iofs), Some(classic)) = (fit_line(&points(0)), fit_line(&points(1))) else {
        return "not enough sizes measured for both chains to fit lines.".to_owned();
    };
    // The sizes both chains were measured at.
    let common: Vec<f64> = medians[0]
        .iter()
        .map(|(x, _)| *x)
        .filter(|x| medians[1].iter().any(|(y, _)| y == x))
        .collect();
    let all_x: Vec<f64> = medians.iter().flatten().map(|(x, _)| *x).collect();
    let lo = all_x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all_x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = format!("{:.0}–{:.0} MB", lo / MB, hi / MB);
    let at = |line: (f64, f64), x: f64| line.0 * x + line.1;

    let fitted = match crossover_bytes(classic, iofs) {
        None => {
            let faster = if at(iofs, lo) < at(classic, lo) {
                "initoverlayfs"
            } else {
                "classic"
            };
            format!(
                "{faster} is faster at every measured size ({range}): the fitted lines are \
parallel."
            )
        }
        Some(x) => {
            // Below the crossing, the chain with the steeper line is the faster one.
            let (below, above) = if classic.0 > iofs.0 {
                ("classic", "initoverlayfs")
            } else {
                ("initoverlayfs", "classic")
            };
            if x <= lo {
                let place = if x <= 0.0 {
                    "at no positive size".to_owned()
                } else {
                    format!(
                        "at {:.0} MB, below the smallest size measured (an extrapolation)",
                        x / MB
                    )
                };
                format!(
                    "{above} is faster at every measured size ({range}); the fitted lines \
cross {place}."
                )
            } else if x >= hi {
                format!(
                    "{below} is faster at every measured size ({range}); the fitted lines \
would cross at {:.0} MB, beyond the largest size measured: an extrapolation, not a \
measurement.",
                    x / MB
                )
            } else {
                format!(
                    "{below} is faster below {:.0} MB, {above} above it: the fitted lines cross \
inside the measured range ({range}).",
                    x / MB
                )
            }
        }
    };
    // What the medians themselves say at each size both chains reached, consecutive sizes with
    // the same winner together: "classic faster at 61 MB; initoverlayfs faster at 195 and 598 MB".
    let mut runs: Vec<(&str, Vec<String>)> = Vec::new();
    for &x in &common {
        let m = |i: usize| {
            medians[i]
                .iter()
                .find(|(y, _)| *y == x)
                .map(|(_, st)| st.median)
        };
        let (Some(a), Some(b)) = (m(0), m(1)) else {
            continue;
        };
        let which = if a < b {
            "initoverlayfs faster"
        } else if b < a {
            "classic faster"
        } else {
            "a tie"
        };
        let size = format!("{:.0}", x / MB);
        match runs.last_mut() {
            Some((last, sizes)) if *last == which => sizes.push(size),
            _ => runs.push((which, vec![size])),
        }
    }
    if runs.is_empty() {
        return fitted;
    }
    let runs: Vec<String> = runs
        .into_iter()
        .map(|(which, sizes)| {
            let sizes = match sizes.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => sizes.concat(),
            };
            format!("{which} at {sizes} MB")
        })
        .collect();
    format!("{fitted} The medians as measured: {}.", runs.join("; "))
}

fn crossover_section(samples: &[BootSample], out: &mut String) {
    out.push_str("## Crossover\n\n");
    out.push_str(
        "Where the classic chain's fitted line of median time to `Running in initrd` meets \
initoverlayfs's (MB = 10^6 bytes of content). Lines fitted over a few sizes; a crossing outside \
the measured sizes is an extrapolation.\n\n",
    );
    for profile in profiles(samples) {
        let _ = writeln!(
            out,
            "- `{}`: {}",
            md_cell(profile),
            crossover_sentence(samples, profile)
        );
    }
    out.push('\n');
}

fn failed_section(samples: &[BootSample], out: &mut String) {
    out.push_str("## Failed boots\n\n");
    let failed: Vec<&BootSample> = samples.iter().filter(|s| !s.passed).collect();
    if failed.is_empty() {
        out.push_str("None: every boot passed.\n");
        return;
    }
    out.push_str(
        "Left out of the medians above.\n\n| chain | size | profile | run | reached |\n|---|---|---|--:|---|\n",
    );
    for s in failed {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            s.chain.name(),
            md_cell(&s.size),
            md_cell(&s.profile),
            s.run,
            reached(s)
        );
    }
}

/// `boot.md`: what was measured and how, per profile a timing table and a loaded/read/memory
/// table, the slopes, the crossovers, and the failed boots.
pub fn markdown(info: &RunInfo, samples: &[BootSample]) -> String {
    let mut out = String::new();
    header(info, &mut out);
    for profile in profiles(samples) {
        profile_tables(info, samples, profile, &mut out);
    }
    slopes_section(samples, &mut out);
    crossover_section(samples, &mut out);
    failed_section(samples, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// SVG

const SVG_WIDTH: f64 = 800.0;
const SVG_HEIGHT: f64 = 500.0;
/// The plot area; the legend sits right of it.
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 590.0;
const PLOT_TOP: f64 = 60.0;
const PLOT_BOTTOM: f64 = 430.0;
const LEGEND_LEFT: f64 = 610.0;
/// Horizontal spacing of the series at one size, so their min–max bars do not hide each other.
const DODGE_PX: f64 = 4.0;

fn chain_colour(chain: Chain) -> &'static str {
    match chain {
        Chain::Initoverlayfs => "#1f6fb4",
        Chain::Classic => "#d1492a",
    }
}

/// The dash pattern of the i-th profile ("" = solid).
fn profile_dash(i: usize) -> &'static str {
    ["", "7 4", "2 3", "9 3 2 3"][i % 4]
}

/// Text for XML character data and attribute values.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick step of 1, 2 or 5 × 10^k giving about `target` ticks up to `max`, and the axis end
/// (a multiple of the step at or above `max`).
fn ticks(max: f64, target: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    } * magnitude;
    (step, (max / step - 1e-9).ceil().max(1.0) * step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{value:.decimals$}")
}

/// One line of the plot: a chain on a profile.
struct Series {
    chain: Chain,
    profile_index: usize,
    label: String,
    /// (content MB, stats in seconds) per size, ascending.
    points: Vec<(f64, Stats)>,
}

/// `boot.svg`: median guest seconds to `Running in initrd` against content MB, one polyline
/// per chain × profile with min–max bars; colour by chain, dashes by profile.
pub fn svg(info: &RunInfo, samples: &[BootSample]) -> String {
    let series: Vec<Series> = profiles(samples)
        .into_iter()
        .enumerate()
        .flat_map(|(profile_index, profile)| {
            Chain::ALL.map(|chain| Series {
                chain,
                profile_index,
                label: format!("{}, {profile}", chain.name()),
                points: systemd_medians(samples, chain, profile)
                    .into_iter()
                    .map(|(x, st)| (x / MB, st))
                    .collect(),
            })
        })
        .collect();
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1.max))
        .fold(0.0, f64::max);
    let (x_step, x_end) = ticks(max_x, 6.0);
    let (y_step, y_end) = ticks(max_y, 6.0);
    let px = |x: f64| PLOT_LEFT + x / x_end * (PLOT_RIGHT - PLOT_LEFT);
    let py = |y: f64| PLOT_BOTTOM - y / y_end * (PLOT_BOTTOM - PLOT_TOP);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="white"/>"#
    );
    let title = format!(
        "initoverlayfs vs classic: guest time to systemd in the initrd, {}",
        accel_name(&info.accel)
    );
    // The machine's first three parts (board, CPUs, RAM): the whole description is boot.md's.
    let machine: Vec<&str> = info.machine.split(", ").take(3).collect();
    let subtitle = format!(
        "median of {} runs per point, bar = min–max · {} · kernel {}",
        info.runs,
        machine.join(", "),
        info.kernel
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        SVG_WIDTH / 2.0,
        xml_escape(&title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="43" text-anchor="middle" fill="#444">{}</text>"##,
        SVG_WIDTH / 2.0,
        xml_escape(&subtitle)
    );

    // Grid, ticks and axes.
    out.push_str(r##"<g stroke="#ddd" stroke-width="1">"##);
    out.push('\n');
    let y_ticks = (y_end / y_step).round() as usize;
    for i in 1..=y_ticks {
        let y = py(i as f64 * y_step);
        let _ = writeln!(
            out,
            r#"<line x1="{PLOT_LEFT:.1}" y1="{y:.1}" x2="{PLOT_RIGHT:.1}" y2="{y:.1}"/>"#
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g stroke="black" stroke-width="1">"#);
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<line x1="{PLOT_LEFT:.1}" y1="{PLOT_BOTTOM:.1}" x2="{PLOT_RIGHT:.1}" y2="{PLOT_BOTTOM:.1}"/>"#
    );
    let _ = writeln!(
        out,
        r#"<line x1="{PLOT_LEFT:.1}" y1="{PLOT_TOP:.1}" x2="{PLOT_LEFT:.1}" y2="{PLOT_BOTTOM:.1}"/>"#
    );
    let x_ticks = (x_end / x_step).round() as usize;
    for i in 0..=x_ticks {
        let x = px(i as f64 * x_step);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{PLOT_BOTTOM:.1}" x2="{x:.1}" y2="{:.1}"/>"#,
            PLOT_BOTTOM + 5.0
        );
    }
    for i in 0..=y_ticks {
        let y = py(i as f64 * y_step);
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{PLOT_LEFT:.1}" y2="{y:.1}"/>"#,
            PLOT_LEFT - 5.0
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g text-anchor="middle">"#);
    out.push('\n');
    for i in 0..=x_ticks {
        let value = i as f64 * x_step;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            px(value),
            PLOT_BOTTOM + 19.0,
            tick_label(value, x_step)
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g text-anchor="end">"#);
    out.push('\n');
    for i in 0..=y_ticks {
        let value = i as f64 * y_step;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            PLOT_LEFT - 8.0,
            py(value) + 4.0,
            tick_label(value, y_step)
        );
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">content size, MB unpacked (MB = 10^6 bytes)</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 40.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">guest seconds to “Running in initrd”</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0
    );

    // The series.
    let n = series.len();
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let dodge = (i as f64 - (n as f64 - 1.0) / 2.0) * DODGE_PX;
        let colour = chain_colour(s.chain);
        let dash = profile_dash(s.profile_index);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(out, "<g><title>{}</title>", xml_escape(&s.label));
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, st)| format!("{:.1},{:.1}", px(*x) + dodge, py(st.median)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>"#,
            points.join(" ")
        );
        for (x, st) in &s.points {
            let x = px(*x) + dodge;
            let (top, bottom) = (py(st.max), py(st.min));
            let _ = writeln!(
                out,
                r#"<path d="M{:.1} {top:.1}H{:.1}M{x:.1} {top:.1}V{bottom:.1}M{:.1} {bottom:.1}H{:.1}" stroke="{colour}" stroke-width="1" fill="none"/>"#,
                x - 3.0,
                x + 3.0,
                x - 3.0,
                x + 3.0
            );
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                py(st.median)
            );
        }
        out.push_str("</g>\n");
    }
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#900">no passed boot reached systemd</text>"##,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0
        );
    }

    // The legend.
    let mut y = PLOT_TOP + 10.0;
    for s in &series {
        let dash = profile_dash(s.profile_index);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<line x1="{LEGEND_LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="2"{dash_attr}/>"#,
            LEGEND_LEFT + 34.0,
            chain_colour(s.chain)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEGEND_LEFT + 42.0,
            y + 4.0,
            xml_escape(&s.label)
        );
        y += 20.0;
    }
    y += 10.0;
    for line in [
        "point: median",
        "bar: min–max over passed runs",
        "series shifted a few px",
        "apart at each size",
    ] {
        let _ = writeln!(
            out,
            r##"<text x="{LEGEND_LEFT:.1}" y="{y:.1}" font-size="11" fill="#444">{line}</text>"##
        );
        y += 15.0;
    }
    out.push_str("</svg>\n");
    out
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
mod tests {
    use super::*;

    fn info(accel: &str) -> RunInfo {
        RunInfo {
            machine: "q35".into(),
            accel: accel.into(),
            kernel: "6.12.57+deb13-amd64".into(),
            qemu: "10.0.3".into(),
            host_cpu: "AMD EPYC 7B13 (2 cores)".into(),
            command: "cargo xtask bench-boot --runs 3 --profiles sd,nvme".into(),
            date: "2026-11-27".into(),
            runs: 3,
            notes: vec!["synthetic figures for the report's tests".into()],
            throttles: crate::bench_boot::Profile::ALL
                .iter()
                .map(|p| (p.name().to_owned(), p.describe()))
                .collect(),
        }
    }

    /// 2 chains × 3 sizes × 2 profiles × 3 runs, on made-up lines: classic's time to systemd
    /// grows 10× faster with content than initoverlayfs's on `sd`, 2× on `nvme`. The classic
    /// 512M `sd` run 3 failed after systemd; one passed boot has no memory figure.
    fn samples() -> Vec<BootSample> {
        let sizes = [
            ("dracut", 61_234_567u64),
            ("128M", 195_452_295),
            ("512M", 598_105_479),
        ];
        let mut out = Vec::new();
        for profile in ["sd", "nvme"] {
            for (size, bytes) in sizes {
                for chain in Chain::ALL {
                    for run in 1..=3u32 {
                        let mb = bytes as f64 / 1e6;
                        let jitter = [0.0, 0.12, -0.07][run as usize - 1];
                        let (systemd, boot_files, read) = match (chain, profile) {
                            (Chain::Initoverlayfs, "sd") => {
                                (3.4 + 0.003 * mb, 14_000_000u64, 20e6 + 0.15 * bytes as f64)
                            }
                            (Chain::Initoverlayfs, _) => {
                                (3.0 + 0.002 * mb, 14_000_000u64, 20e6 + 0.15 * bytes as f64)
                            }
                            (Chain::Classic, "sd") => (
                                1.0 + 0.03 * mb,
                                12_000_000 + bytes / 3,
                                8e6 + bytes as f64 / 3.0,
                            ),
                            (Chain::Classic, _) => (
                                0.5 + 0.004 * mb,
                                12_000_000 + bytes / 3,
                                8e6 + bytes as f64 / 3.0,
                            ),
                        };
                        let host_kernel = 1.8
                            + boot_files as f64 / if profile == "sd" { 25e6 } else { 400e6 }
                            + jitter / 2.0;
                        let systemd = systemd + jitter;
                        let failed = chain == Chain::Classic
                            && profile == "sd"
                            && size == "512M"
                            && run == 3;
                        let mut sample = BootSample {
                            chain,
                            size: size.into(),
                            content_bytes: bytes,
                            profile: profile.into(),
                            run,
                            host: Figures {
                                kernel_start: Some(host_kernel),
                                first_userspace: Some(host_kernel + 0.9),
                                running_in_initrd: Some(host_kernel + systemd + 0.1),
                                multi_user: Some(host_kernel + systemd + 6.5),
                            },
                            guest: Figures {
                                kernel_start: Some(0.0),
                                first_userspace: Some(0.85 + jitter / 3.0),
                                running_in_initrd: Some(systemd),
                                multi_user: Some(systemd + 6.3 + jitter),
                            },
                            bytes_read: Some(read as u64 + run as u64 * 4096),
                            bytes_read_to_systemd: Some(read as u64 / 3),
                            mem_used_kib: Some(
                                61_440
                                    + if chain == Chain::Classic { 2048 } else { 4096 }
                                    + run as u64,
                            ),
                            boot_files_bytes: boot_files,
                            passed: true,
                        };
                        if failed {
                            sample.passed = false;
                            sample.host.multi_user = None;
                            sample.guest.multi_user = None;
                            sample.bytes_read = None;
                            sample.bytes_read_to_systemd = None;
                            sample.mem_used_kib = None;
                        }
                        if chain == Chain::Initoverlayfs
                            && profile == "nvme"
                            && size == "128M"
                            && run == 2
                        {
                            sample.mem_used_kib = None;
                        }
                        out.push(sample);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn csv_rows() {
        insta::assert_snapshot!(csv(&samples()));
    }

    #[test]
    fn markdown_report() {
        insta::assert_snapshot!(markdown(&info("tcg"), &samples()));
    }

    #[test]
    fn markdown_without_tcg_caveat_or_failures() {
        let passed: Vec<BootSample> = samples().into_iter().filter(|s| s.passed).collect();
        let report = markdown(&info("kvm"), &passed);
        assert!(!report.contains("Under TCG"));
        assert!(report.contains("None: every boot passed."));
    }

    #[test]
    fn svg_plot() {
        insta::assert_snapshot!(svg(&info("tcg"), &samples()));
    }

    /// Parses `text` as XML and returns the root element's name; fails on a syntax error, a
    /// mismatched or missing end tag, a malformed or repeated attribute, an entity XML does not
    /// predefine, or content outside the one root.
    fn check_well_formed(text: &str) -> String {
        use quick_xml::events::{BytesStart, Event};
        let mut reader = quick_xml::Reader::from_str(text);
        let mut depth = 0usize;
        let mut roots = Vec::new();
        let mut element = |e: &BytesStart, depth: usize| {
            for attribute in e.attributes() {
                let attribute = attribute.expect("a well-formed attribute");
                attribute
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .expect("an attribute value with known entities");
            }
            if depth == 0 {
                roots.push(e.name().as_ref().to_owned());
            }
        };
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    element(&e, depth);
                    depth += 1;
                }
                Event::Empty(e) => element(&e, depth),
                Event::End(_) => depth = depth.checked_sub(1).expect("an end tag too many"),
                Event::Text(t) => {
                    assert!(depth > 0 || t.trim().is_empty(), "text outside the root");
                }
                Event::GeneralRef(r) => {
                    assert!(depth > 0, "a reference outside the root");
                    assert!(
                        r.is_char_ref() || ["amp", "lt", "gt", "quot", "apos"].contains(&&*r),
                        "undefined entity &{};",
                        &*r
                    );
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unclosed elements");
        assert_eq!(roots.len(), 1, "exactly one root element: {roots:?}");
        roots.remove(0)
    }

    #[test]
    fn svg_is_well_formed() {
        assert_eq!(check_well_formed(&svg(&info("tcg"), &samples())), "svg");
        // Text that needs escaping, and a run with nothing to plot.
        let mut odd = info("kvm");
        odd.machine = "q35 <pc> & \"friends\"".into();
        let plot = svg(&odd, &[]);
        assert_eq!(check_well_formed(&plot), "svg");
        assert!(plot.contains("q35 &lt;pc&gt; &amp; &quot;friends&quot;"));
        assert!(plot.contains("KVM"));
        assert!(plot.contains("no passed boot reached systemd"));
    }

    #[test]
    fn empty_run_renders() {
        assert_eq!(csv(&[]), format!("{CSV_HEADER}\n"));
        let report = markdown(&info("tcg"), &[]);
        assert!(report.contains("None: every boot passed."));
    }

    #[test]
    fn csv_quotes_fields() {
        let mut s = samples().remove(0);
        s.size = "a,\"b\"".into();
        let row = csv(&[s]);
        assert!(
            row.lines()
                .nth(1)
                .unwrap()
                .starts_with("initoverlayfs,\"a,\"\"b\"\"\",61234567,sd,1,true,")
        );
    }

    #[test]
    fn median_cases() {
        let check = |values: &[f64], expected: Option<f64>| assert_eq!(median(values), expected);
        check(&[], None);
        check(&[4.0], Some(4.0));
        check(&[3.0, 1.0, 2.0], Some(2.0));
        check(&[4.0, 1.0, 3.0, 2.0], Some(2.5));
        check(&[1.0, 10.0], Some(5.5));
        check(&[5.0, 5.0, 1.0, 9.0, 9.0], Some(5.0));
    }

    #[test]
    fn stats_over_values() {
        assert_eq!(
            stats(&[3.0, 1.0, 2.0, 10.0]),
            Some(Stats {
                median: 2.5,
                min: 1.0,
                max: 10.0,
                n: 4
            })
        );
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn slope_on_exact_lines() {
        let check = |points: &[(f64, f64)], expected: Option<f64>| {
            let got = slope_ms_per_100mb(points);
            match (got, expected) {
                (Some(got), Some(expected)) => assert!(
                    (got - expected).abs() < 1e-9,
                    "{points:?}: {got} ms/100 MB, expected {expected}"
                ),
                _ => assert_eq!(got, expected, "{points:?}"),
            }
        };
        // 1 s per 100 MB: 1000 ms.
        check(&[(0.0, 2.0), (100e6, 3.0)], Some(1000.0));
        check(&[(100e6, 3.0), (300e6, 5.0), (200e6, 4.0)], Some(1000.0));
        // 50 ms per 100 MB, from an intercept of 4 s.
        check(&[(50e6, 4.025), (150e6, 4.075), (450e6, 4.225)], Some(50.0));
        // Flat, and falling.
        check(&[(1e6, 7.0), (9e6, 7.0)], Some(0.0));
        check(&[(0.0, 10.0), (200e6, 6.0)], Some(-2000.0));
        // Least squares through points off a line: (0,0), (1,1), (2,1) -> slope 0.5 s/100 MB.
        check(&[(0.0, 0.0), (100e6, 1.0), (200e6, 1.0)], Some(500.0));
        // Fewer than 2 distinct sizes.
        check(&[], None);
        check(&[(5e6, 1.0)], None);
        check(&[(5e6, 1.0), (5e6, 2.0)], None);
    }

    #[test]
    fn fitted_intercept() {
        let (slope, intercept) = fit_line(&[(100e6, 3.0), (300e6, 5.0)]).unwrap();
        assert!((slope - 1e-8).abs() < 1e-20);
        assert!((intercept - 2.0).abs() < 1e-12);
    }

    #[test]
    fn crossover_cases() {
        let check = |a: (f64, f64), b: (f64, f64), expected: Option<f64>| {
            let got = crossover_bytes(a, b);
            match (got, expected) {
                (Some(got), Some(expected)) => {
                    assert!(
                        (got - expected).abs() < 1e-3,
                        "{a:?} {b:?}: {got}, expected {expected}"
                    )
                }
                _ => assert_eq!(got, expected, "{a:?} {b:?}"),
            }
        };
        // Classic 1 s + 30 ms/MB against initoverlayfs 3 s + 2 ms/MB: they meet at 2/0.028 MB.
        check((0.03e-6, 1.0), (0.002e-6, 3.0), Some(2.0 / 0.028e-6));
        // Symmetric in its arguments.
        check((0.002e-6, 3.0), (0.03e-6, 1.0), Some(2.0 / 0.028e-6));
        // y = x/1e8 and y = 2 - x/1e8 meet at 1e8.
        check((1e-8, 0.0), (-1e-8, 2.0), Some(1e8));
        // Meeting below zero is reported as such.
        check((2e-8, 3.0), (1e-8, 2.0), Some(-1e8));
        // Parallel, and the same line: no crossover.
        check((1e-8, 1.0), (1e-8, 2.0), None);
        check((1e-8, 1.0), (1e-8, 1.0), None);
        check((0.0, 1.0), (0.0, 5.0), None);
    }

    /// A profile of two chains on exact lines through the given sizes (MB).
    fn lines(iofs: (f64, f64), classic: (f64, f64), sizes_mb: &[f64]) -> Vec<BootSample> {
        let mut out = Vec::new();
        for (chain, (slope_s_per_mb, intercept)) in
            [(Chain::Initoverlayfs, iofs), (Chain::Classic, classic)]
        {
            for (i, mb) in sizes_mb.iter().enumerate() {
                let mut s = samples().remove(0);
                s.chain = chain;
                s.size = format!("s{i}");
                s.content_bytes = (mb * 1e6) as u64;
                s.profile = "sd".into();
                s.guest.running_in_initrd = Some(intercept + slope_s_per_mb * mb);
                out.push(s);
            }
        }
        out
    }

    #[test]
    fn crossover_sentences() {
        let check = |iofs, classic, sizes_mb: &[f64], expected: &str| {
            let sentence = crossover_sentence(&lines(iofs, classic, sizes_mb), "sd");
            assert_eq!(sentence, expected);
        };
        // Classic 1 s + 30 ms/MB against initoverlayfs 3 s + 2 ms/MB: they cross at 71 MB.
        check(
            (0.002, 3.0),
            (0.03, 1.0),
            &[50.0, 300.0],
            "classic is faster below 71 MB, initoverlayfs above it: the fitted lines cross inside \
the measured range (50–300 MB). The medians as measured: classic faster at 50 MB; \
initoverlayfs faster at 300 MB.",
        );
        check(
            (0.002, 3.0),
            (0.03, 1.0),
            &[100.0, 300.0],
            "initoverlayfs is faster at every measured size (100–300 MB); the fitted lines cross \
at 71 MB, below the smallest size measured (an extrapolation). The medians as measured: \
initoverlayfs faster at 100 and 300 MB.",
        );
        check(
            (0.002, 3.0),
            (0.004, 0.5),
            &[60.0, 200.0, 600.0],
            "classic is faster at every measured size (60–600 MB); the fitted lines would cross \
at 1250 MB, beyond the largest size measured: an extrapolation, not a measurement. The medians \
as measured: classic faster at 60, 200 and 600 MB.",
        );
        check(
            (0.001, 1.0),
            (0.002, 1.5),
            &[100.0, 300.0],
            "initoverlayfs is faster at every measured size (100–300 MB); the fitted lines cross \
at no positive size. The medians as measured: initoverlayfs faster at 100 and 300 MB.",
        );
        // initoverlayfs the steeper line: the sentence turns around.
        check(
            (0.03, 1.0),
            (0.002, 3.0),
            &[50.0, 100.0, 300.0],
            "initoverlayfs is faster below 71 MB, classic above it: the fitted lines cross inside \
the measured range (50–300 MB). The medians as measured: initoverlayfs faster at 50 MB; \
classic faster at 100 and 300 MB.",
        );
        check(
            (0.0, 2.0),
            (0.0, 1.0),
            &[100.0, 300.0],
            "classic is faster at every measured size (100–300 MB): the fitted lines are \
parallel. The medians as measured: classic faster at 100 and 300 MB.",
        );
        check(
            (0.0, 2.0),
            (0.0, 1.0),
            &[100.0],
            "not enough sizes measured for both chains to fit lines.",
        );
    }

    #[test]
    fn progress_lines() {
        let all = samples();
        let passed = all
            .iter()
            .find(|s| {
                s.chain == Chain::Classic && s.profile == "sd" && s.size == "128M" && s.run == 2
            })
            .unwrap();
        assert_eq!(
            progress_line(7, 60, passed),
            "bench-boot: [7/60] sd 128M classic run 2: systemd 6.98 s (read 23.3 MiB), multi-user 13.40 s (read 69.8 MiB)"
        );
        let failed = all.iter().find(|s| !s.passed).unwrap();
        assert_eq!(
            progress_line(36, 36, failed),
            "bench-boot: [36/36] sd 512M classic run 3: FAILED, reached systemd at 18.87 s (guest)"
        );
        let mut never = failed.clone();
        never.guest = Figures::default();
        never.host = Figures::default();
        assert_eq!(
            progress_line(1, 2, &never),
            "bench-boot: [1/2] sd 512M classic run 3: FAILED, reached nothing: the kernel never started"
        );
        let mut host_only = never.clone();
        host_only.host.kernel_start = Some(4.5);
        assert!(progress_line(1, 2, &host_only).ends_with("reached kernel start at 4.50 s (host)"));
    }

    #[test]
    fn saved_run_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (info, samples) = (info("tcg"), samples());
        write_all(dir.path(), &info, &samples).unwrap();
        for name in ["boot.csv", "boot.md", "boot.svg", "samples.json"] {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        // serde_json (without its float_roundtrip feature) may read a float back one ulp off;
        // the reports, which round, come out the same.
        let saved = read_saved(&dir.path().join("samples.json")).unwrap();
        assert_eq!(saved.info, info);
        assert_eq!(saved.samples.len(), samples.len());
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("boot.csv"), csv(&saved.samples));
        assert_eq!(read("boot.md"), markdown(&saved.info, &saved.samples));
        assert_eq!(read("boot.svg"), svg(&saved.info, &saved.samples));
    }

    /// A run saved before the throttles were: re-rendered, it states none rather than the
    /// profiles of the code that renders it.
    #[test]
    fn an_older_saved_run_claims_no_throttle() {
        let mut json = serde_json::to_value(info("tcg")).unwrap();
        json.as_object_mut().unwrap().remove("throttles");
        let older: RunInfo = serde_json::from_value(json).unwrap();
        assert!(older.throttles.is_empty());
        let report = markdown(&older, &samples());
        assert!(!report.contains("requests/s"), "{report}");
        assert!(report.contains("## Storage profile `sd`\n"), "{report}");
        let current = markdown(&info("tcg"), &samples());
        assert!(
            current.contains("## Storage profile `sd` (≈ 25 MB/s and 1500 requests/s)\n"),
            "{current}"
        );
    }
}
