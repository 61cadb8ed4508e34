//! `boot.md`: what was measured and how; per storage profile the times, what each chain loaded,
//! read and held, where the time went phase by phase, and CPU against waiting; then the slopes,
//! the crossovers, the gap to the floor and the failed boots.

use std::fmt::Write as _;

use super::{
    BootSample, Chain, CpuSplit, Figure, MB, MIB, RunInfo, Stats, chains, content_bytes,
    crossover_bytes, fit_line, median, medians_by_size, passed_values, profiles, reached, sizes,
    slope_ms_per_100mb, stats, systemd_medians,
};

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
pub(super) fn accel_name(accel: &str) -> String {
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

/// The ratio of two medians: a chain's over the baseline's.
fn ratio_cell(a: Option<f64>, baseline: Option<f64>) -> String {
    match (a, baseline) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

/// A median of bytes in MiB.
fn mib_cell(values: &[f64]) -> String {
    median(values).map_or("-".to_owned(), |v| format!("{:.1}", v / MIB))
}

/// A median of seconds.
fn secs_cell(values: &[f64]) -> String {
    median(values).map_or("-".to_owned(), |v| format!("{v:.2}"))
}

/// A median of a count.
fn count_cell(values: &[f64]) -> String {
    median(values).map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn header(info: &RunInfo, samples: &[BootSample], out: &mut String) {
    out.push_str("# Boot time: initoverlayfs against the initramfs chains it replaces\n\n");
    out.push_str(
        "Ways of booting the same kernel and the same second-stage content (dracut's systemd \
initramfs, as is or grown with real content), all loaded by UEFI firmware and systemd-boot from \
the same disk, which differs between chains only in the boot entry chosen:\n\n",
    );
    let shown = match chains(samples) {
        present if present.is_empty() => Chain::ALL.to_vec(),
        present => present,
    };
    for chain in shown {
        let _ = writeln!(out, "- **{}**: {}.", chain.name(), chain.describe());
    }
    out.push_str(
        "\nEach size is one second-stage content, named as the runner names it; *content* is its \
unpacked bytes (the initramfs's cpio bytes).\n\n",
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
        "Per boot: guest seconds (printk time since the kernel started) to systemd's `Running in \
initrd` and to `multi-user.target`, and to the marks between them that systemd logs; host \
seconds from QEMU's start; bytes and requests read from the boot disk by `Running in initrd` \
and by `multi-user.target` (QMP `query-blockstats` `rd_bytes` and `rd_operations`, asked as the \
line appears on the console, the firmware's and bootloader's reads included); the memory in use \
(MemTotal − MemAvailable), its peak in the initrd and CPU against waiting as the guest's own \
sampler saw them (every quarter second, from /proc). A time cell is the median [min–max] over \
the passed runs (of an even count, the mean of the two middle values), with (n=…) when fewer \
runs than planned count; other cells are medians. Ratios divide a chain's median by `",
    );
    out.push_str(Chain::BASELINE.name());
    out.push_str("`'s. MiB = 2^20 bytes, MB = 10^6 bytes.\n\n");
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

/// A chain's median of `figure` at one point, for ratios.
fn point_median(
    samples: &[BootSample],
    chain: Chain,
    profile: &str,
    size: &str,
    figure: Figure,
) -> Option<f64> {
    median(&passed_values(samples, chain, profile, size, figure))
}

/// The table rows of a profile: every size, then every chain measured at it.
fn rows<'a>(samples: &'a [BootSample], profile: &'a str) -> Vec<(&'a str, Chain)> {
    let chains = chains(samples);
    sizes(samples, profile)
        .into_iter()
        .flat_map(|size| {
            chains
                .iter()
                .filter(move |&&chain| content_bytes(samples, chain, profile, size).is_some())
                .map(move |&chain| (size, chain))
        })
        .collect()
}

/// The guest's marks in boot order, with the names of the phases between them.
const PHASES: [(&str, Figure, Figure); 8] = [
    (
        "kernel",
        |s| s.guest.kernel_start,
        |s| s.guest.first_userspace,
    ),
    (
        "to systemd",
        |s| s.guest.first_userspace,
        |s| s.guest.running_in_initrd,
    ),
    (
        "initrd: to root fs",
        |s| s.guest.running_in_initrd,
        |s| s.phases.initrd_root_fs,
    ),
    (
        "initrd: to switch",
        |s| s.phases.initrd_root_fs,
        |s| s.phases.switch_root,
    ),
    (
        "switch root",
        |s| s.phases.switch_root,
        |s| s.phases.real_root,
    ),
    (
        "root: to sysinit",
        |s| s.phases.real_root,
        |s| s.phases.sysinit,
    ),
    ("root: to basic", |s| s.phases.sysinit, |s| s.phases.basic),
    (
        "root: to multi-user",
        |s| s.phases.basic,
        |s| s.guest.multi_user,
    ),
];

/// The seconds between two marks of one boot, when it reached both.
fn span(s: &BootSample, from: Figure, to: Figure) -> Option<f64> {
    Some(to(s)? - from(s)?)
}

fn profile_tables(info: &RunInfo, samples: &[BootSample], profile: &str, out: &mut String) {
    let throttle = profile_throttle(info, profile).map_or(String::new(), |t| format!(" ({t})"));
    let _ = writeln!(out, "## Storage profile `{}`{throttle}\n", md_cell(profile));
    let rows = rows(samples, profile);
    let values = |chain: Chain, size: &str, figure: Figure| {
        passed_values(samples, chain, profile, size, figure)
    };

    out.push_str(
        "### Time\n\nGuest seconds since the kernel started; host seconds from QEMU's start \
(power-on), which alone hold the firmware's and bootloader's work, the initramfs's load from \
the disk among it.\n\n| size | chain | systemd in initrd | ratio | multi-user.target | ratio | \
power-on to systemd (host) | ratio |\n|---|---|--:|--:|--:|--:|--:|--:|\n",
    );
    let timings: [Figure; 3] = [
        |s| s.guest.running_in_initrd,
        |s| s.guest.multi_user,
        |s| s.host.running_in_initrd,
    ];
    for &(size, chain) in &rows {
        let _ = write!(out, "| {} | {} |", md_cell(size), chain.name());
        for figure in timings {
            let st = stats(&values(chain, size, figure));
            let baseline = point_median(samples, Chain::BASELINE, profile, size, figure);
            let _ = write!(
                out,
                " {} | {} |",
                time_cell(st, info.runs),
                ratio_cell(st.map(|s| s.median), baseline)
            );
        }
        out.push('\n');
    }
    out.push('\n');

    out.push_str(
        "### What each chain loaded, read and held\n\nBoot files: the kernel and the chain's \
initramfs file, what the bootloader reads. Read: from the boot disk, with the read requests \
that carried it. Held until unpacked: the initramfs file in RAM until the kernel has unpacked \
it (`Freeing initrd memory`). Peak in the initrd: the highest memory in use the guest's sampler \
saw before the switch root (the kernel's unpacking, before the sampler starts, is not in it); \
after the switch: the real root's first unit.\n\n| size | chain | content MiB | boot files \
MiB | host s to kernel start | read by systemd MiB | requests | read by multi-user MiB | \
requests | held until unpacked MiB | peak in the initrd MiB | ratio | after the switch root \
MiB |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    type Cell = fn(&[f64]) -> String;
    let loads: [(Figure, Cell); 8] = [
        (|s| Some(s.boot_files_bytes as f64), mib_cell),
        (|s| s.host.kernel_start, secs_cell),
        (|s| s.bytes_read_to_systemd.map(|b| b as f64), mib_cell),
        (|s| s.read_requests_to_systemd.map(|n| n as f64), count_cell),
        (|s| s.bytes_read.map(|b| b as f64), mib_cell),
        (|s| s.read_requests.map(|n| n as f64), count_cell),
        (
            |s| s.initramfs_freed_kib.map(|k| k as f64 * 1024.0),
            mib_cell,
        ),
        (
            |s| s.probe.peak_initrd_kib.map(|k| k as f64 * 1024.0),
            mib_cell,
        ),
    ];
    for &(size, chain) in &rows {
        let content = content_bytes(samples, chain, profile, size)
            .map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / MIB));
        let _ = write!(out, "| {} | {} | {content} |", md_cell(size), chain.name());
        for (figure, cell) in loads {
            let _ = write!(out, " {} |", cell(&values(chain, size, figure)));
        }
        let peak: Figure = |s| s.probe.peak_initrd_kib.map(|k| k as f64);
        let _ = write!(
            out,
            " {} |",
            ratio_cell(
                point_median(samples, chain, profile, size, peak),
                point_median(samples, Chain::BASELINE, profile, size, peak)
            )
        );
        let after: Figure = |s| s.mem_used_kib.map(|k| k as f64 * 1024.0);
        let _ = writeln!(out, " {} |", mib_cell(&values(chain, size, after)));
    }
    out.push('\n');

    out.push_str(
        "### Where the time went\n\nGuest seconds in each phase, the median over the passed \
runs of each boot's own span: *kernel* to `Run /init`; *to systemd*: the first userspace \
program to systemd's `Running in initrd` (storage-init, or squash-erofs's init, or the exec of \
systemd itself); *initrd: to root fs*: to `initrd-root-fs.target`; *initrd: to switch*: to \
`Switching root.`; *switch root*: to the real root's systemd; then the real root's \
`sysinit.target`, `basic.target` and `multi-user.target`.\n\n| size | chain |",
    );
    for (name, _, _) in PHASES {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"--:|".repeat(PHASES.len()));
    out.push('\n');
    for &(size, chain) in &rows {
        let _ = write!(out, "| {} | {} |", md_cell(size), chain.name());
        for (_, from, to) in PHASES {
            let spans: Vec<f64> = super::point(samples, chain, profile, size)
                .filter(|s| s.passed)
                .filter_map(|s| span(s, from, to))
                .collect();
            let _ = write!(out, " {} |", secs_cell(&spans));
        }
        out.push('\n');
    }
    out.push('\n');

    initrd_units_table(samples, profile, out);

    out.push_str(
        "### CPU against waiting\n\nGuest seconds from the kernel's /proc/stat as the guest's \
sampler read it (1 vCPU): *busy* running (user, system, interrupts), *wait* idle with I/O \
outstanding, *idle* otherwise. A guest that misses timer ticks (as TCG's do) accounts less \
than the wall time: compare the shares. *Before*: the kernel's start to the sampler's \
first sample, as systemd starts in the initrd; *initrd*: from there to its last sample before \
the switch root, with the reads from /proc/diskstats in that window; *switch*: from there to \
the real root's first sample (the initrd's end, the switch, the real root's systemd starting); \
*root*: to `multi-user.target`.\n\n| size | chain | before: busy | wait | initrd: busy | wait \
| idle | reads | MiB | switch: busy | wait | root: busy | wait | idle |\n\
|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let cpu_cells = |chain: Chain, size: &str, pick: fn(&BootSample) -> Option<CpuSplit>| {
        let parts: [fn(CpuSplit) -> f64; 3] = [|c| c.busy_s, |c| c.iowait_s, |c| c.idle_s];
        parts.map(|part| {
            let spans: Vec<f64> = super::point(samples, chain, profile, size)
                .filter(|s| s.passed)
                .filter_map(|s| pick(s).map(part))
                .collect();
            secs_cell(&spans)
        })
    };
    for &(size, chain) in &rows {
        let [before_busy, before_wait, _] = cpu_cells(chain, size, |s| s.probe.cpu_before);
        let initrd = cpu_cells(chain, size, |s| s.probe.cpu_initrd);
        let [switch_busy, switch_wait, _] = cpu_cells(chain, size, |s| s.probe.cpu_switch);
        let root = cpu_cells(chain, size, |s| s.probe.cpu_root);
        let requests = count_cell(&values(chain, size, |s| {
            s.probe.reads_initrd.map(|r| r.requests as f64)
        }));
        let bytes = mib_cell(&values(chain, size, |s| {
            s.probe.reads_initrd.map(|r| r.bytes as f64)
        }));
        let _ = writeln!(
            out,
            "| {} | {} | {before_busy} | {before_wait} | {} | {requests} | {bytes} | \
{switch_busy} | {switch_wait} | {} |",
            md_cell(size),
            chain.name(),
            initrd.join(" | "),
            root.join(" | ")
        );
    }
    out.push('\n');
}

/// How many units the table of the initrd's units lists.
const UNITS_SHOWN: usize = 12;

/// The initrd's units at the profile's smallest size (the content as dracut makes it), by how
/// much longer initoverlayfs took for them than the baseline: where a lazily read second stage
/// pays. Without both chains, the longest units.
fn initrd_units_table(samples: &[BootSample], profile: &str, out: &mut String) {
    let Some(&size) = sizes(samples, profile).first() else {
        return;
    };
    let chains = chains(samples);
    let passed = |chain: Chain| {
        super::point(samples, chain, profile, size)
            .filter(|s| s.passed)
            .collect::<Vec<_>>()
    };
    let mut units: Vec<&str> = Vec::new();
    for s in chains.iter().flat_map(|&c| passed(c)) {
        for span in &s.initrd_units {
            if !units.contains(&span.unit.as_str()) {
                units.push(&span.unit);
            }
        }
    }
    if units.is_empty() {
        return;
    }
    let duration = |chain: Chain, unit: &str| {
        let spans: Vec<f64> = passed(chain)
            .iter()
            .filter_map(|s| s.initrd_units.iter().find(|u| u.unit == unit))
            .map(|u| u.end - u.start)
            .collect();
        median(&spans)
    };
    let mut rows: Vec<(f64, &str, Vec<Option<f64>>)> = units
        .into_iter()
        .map(|unit| {
            let medians: Vec<Option<f64>> = chains.iter().map(|&c| duration(c, unit)).collect();
            let of = |chain: Chain| {
                chains
                    .iter()
                    .position(|&c| c == chain)
                    .and_then(|i| medians[i])
            };
            let key = match (of(Chain::Initoverlayfs), of(Chain::BASELINE)) {
                (Some(ours), Some(base)) => ours - base,
                _ => medians.iter().flatten().copied().fold(0.0, f64::max),
            };
            (key, unit, medians)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let _ = write!(
        out,
        "### The initrd's units\n\nAt size {}: each unit's median guest seconds from systemd's \
`Starting` to its `Started` or `Finished` line in the initrd, the {UNITS_SHOWN} that took \
initoverlayfs longest beside {} first.\n\n| unit |",
        md_cell(size),
        Chain::BASELINE.name()
    );
    for chain in &chains {
        let _ = write!(out, " {} |", chain.name());
    }
    out.push_str("\n|---|");
    out.push_str(&"--:|".repeat(chains.len()));
    out.push('\n');
    for (_, unit, medians) in rows.into_iter().take(UNITS_SHOWN) {
        let _ = write!(out, "| `{}` |", md_cell(unit));
        for m in medians {
            let _ = write!(
                out,
                " {} |",
                m.map_or("-".to_owned(), |v| format!("{v:.2}"))
            );
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
two sizes measured.\n\n| profile | chain | guest ms/100 MB | host ms/100 MB | sizes |\n\
|---|---|--:|--:|--:|\n",
    );
    for profile in profiles(samples) {
        for chain in chains(samples) {
            let figures: [Figure; 2] =
                [|s| s.guest.running_in_initrd, |s| s.host.running_in_initrd];
            let mut sizes = 0;
            let slopes = figures.map(|figure| {
                let points: Vec<(f64, f64)> = medians_by_size(samples, chain, profile, figure)
                    .into_iter()
                    .map(|(x, st)| (x, st.median))
                    .collect();
                sizes = sizes.max(points.len());
                slope_ms_per_100mb(&points).map_or("-".to_owned(), |v| format!("{v:.1}"))
            });
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {sizes} |",
                md_cell(profile),
                chain.name(),
                slopes[0],
                slopes[1]
            );
        }
    }
    out.push('\n');
}

/// Where the median time-to-systemd lines of `chain` and `other` meet, with the measured
/// medians beside the fitted verdict.
pub(super) fn crossover_sentence(
    samples: &[BootSample],
    profile: &str,
    chain: Chain,
    other: Chain,
) -> String {
    let medians = [chain, other].map(|c| systemd_medians(samples, c, profile));
    let names = [chain.name(), other.name()];
    let points = |i: usize| -> Vec<(f64, f64)> {
        medians[i].iter().map(|(x, st)| (*x, st.median)).collect()
    };
    let (Some(ours), Some(theirs)) = (fit_line(&points(0)), fit_line(&points(1))) else {
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

    let fitted = match crossover_bytes(theirs, ours) {
        None => {
            let faster = if at(ours, lo) < at(theirs, lo) {
                names[0]
            } else {
                names[1]
            };
            format!(
                "{faster} is faster at every measured size ({range}): the fitted lines are \
parallel."
            )
        }
        Some(x) => {
            // Below the crossing, the chain with the steeper line is the faster one.
            let (below, above) = if theirs.0 > ours.0 {
                (names[1], names[0])
            } else {
                (names[0], names[1])
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
    // the same winner together: "classic-gzip faster at 61 MB; initoverlayfs faster at 195 and
    // 598 MB".
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
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
            format!("{} faster", names[0])
        } else if b < a {
            format!("{} faster", names[1])
        } else {
            "a tie".to_owned()
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
    let present = chains(samples);
    if !present.contains(&Chain::Initoverlayfs) {
        return;
    }
    let peers: Vec<Chain> = Chain::PEERS
        .into_iter()
        .filter(|c| present.contains(c))
        .collect();
    if peers.is_empty() {
        return;
    }
    out.push_str("## Crossover\n\n");
    out.push_str(
        "Where a peer's fitted line of median time to `Running in initrd` meets \
initoverlayfs's (MB = 10^6 bytes of content). Lines fitted over a few sizes; a crossing outside \
the measured sizes is an extrapolation.\n\n",
    );
    for profile in profiles(samples) {
        for &peer in &peers {
            let _ = writeln!(
                out,
                "- `{}`, against {}: {}",
                md_cell(profile),
                peer.name(),
                crossover_sentence(samples, profile, Chain::Initoverlayfs, peer)
            );
        }
    }
    out.push('\n');
}

/// initoverlayfs against the floor: what storage-init's decisions cost on the way to systemd.
fn floor_section(samples: &[BootSample], out: &mut String) {
    let present = chains(samples);
    if !(present.contains(&Chain::Initoverlayfs) && present.contains(&Chain::Floor)) {
        return;
    }
    out.push_str("## initoverlayfs against the floor\n\n");
    out.push_str(
        "The floor boots initoverlayfs's mini initramfs and image with the syscall floor as PID \
1: the same modules, mounts and switch root with none of storage-init's decisions. The gap is \
the difference of the medians, in guest seconds (positive: initoverlayfs later).\n\n| profile \
| size | to systemd: initoverlayfs | floor | gap | to multi-user: initoverlayfs | floor | gap \
|\n|---|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for profile in profiles(samples) {
        for size in sizes(samples, profile) {
            let _ = write!(out, "| `{}` | {} |", md_cell(profile), md_cell(size));
            let figures: [Figure; 2] = [|s| s.guest.running_in_initrd, |s| s.guest.multi_user];
            for figure in figures {
                let [ours, floor] = [Chain::Initoverlayfs, Chain::Floor]
                    .map(|chain| point_median(samples, chain, profile, size, figure));
                let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
                let gap = match (ours, floor) {
                    (Some(a), Some(b)) => format!("{:+.2}", a - b),
                    _ => "-".to_owned(),
                };
                let _ = write!(out, " {} | {} | {gap} |", cell(ours), cell(floor));
            }
            out.push('\n');
        }
    }
    out.push('\n');
}

/// TCG's own work per chain: translations thrown away and TLB flushes, which a guest clock
/// under TCG counts as the guest's time though no real CPU does that work.
fn tcg_section(samples: &[BootSample], out: &mut String) {
    if samples.iter().all(|s| s.tcg.is_none()) {
        return;
    }
    out.push_str("## QEMU's own work under TCG\n\n");
    out.push_str(
        "From QEMU's monitor (`info jit`) at each boot's last milestone, medians: the host \
code TCG holds for the guest's, the translations it threw away because their guest page \
changed, and its partial TLB flushes. A real CPU does none of this; a TCG guest's clock counts \
it as the guest's time.\n\n| profile | size | chain | translated code MiB | translations \
thrown away | TLB flushes |\n|---|---|---|--:|--:|--:|\n",
    );
    for profile in profiles(samples) {
        for (size, chain) in rows(samples, profile) {
            let values = |pick: fn(&super::TcgWork) -> u64| -> Vec<f64> {
                super::point(samples, chain, profile, size)
                    .filter(|s| s.passed)
                    .filter_map(|s| s.tcg.as_ref().map(pick))
                    .map(|v| v as f64)
                    .collect()
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                md_cell(profile),
                md_cell(size),
                chain.name(),
                mib_cell(&values(|t| t.code_bytes)),
                count_cell(&values(|t| t.tb_invalidations)),
                count_cell(&values(|t| t.tlb_partial_flushes)),
            );
        }
    }
    out.push('\n');
}

/// What else the host ran beside each boot: under TCG the guest's clock follows the host's, so a
/// boot beside other work runs slower with nothing wrong in it.
fn host_section(samples: &[BootSample], out: &mut String) {
    if samples.iter().all(|s| s.host_other_cpus.is_none()) {
        return;
    }
    out.push_str(
        "## The host beside the boots

",
    );
    out.push_str(
        "CPUs the host kept busy with anything but the boot's own QEMU, on average from QEMU's \
start to the boot's last milestone (with `--jobs 2`, the run's other boot is one of them: \
about 1 is expected). More than that is load from outside the run, which slows a TCG guest's \
every step.\n\n| profile | chain | median | max |\n|---|---|--:|--:|\n",
    );
    for profile in profiles(samples) {
        for chain in chains(samples) {
            let values: Vec<f64> = samples
                .iter()
                .filter(|s| s.chain == chain && s.profile == profile)
                .filter_map(|s| s.host_other_cpus)
                .collect();
            let max = values.iter().copied().fold(f64::NAN, f64::max);
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                md_cell(profile),
                chain.name(),
                median(&values).map_or("-".to_owned(), |v| format!("{v:.2}")),
                if max.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{max:.2}")
                }
            );
        }
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
        "Left out of the medians above.\n\n| chain | size | profile | run | reached | how it \
failed |\n|---|---|---|--:|---|---|\n",
    );
    for s in failed {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            s.chain.name(),
            md_cell(&s.size),
            md_cell(&s.profile),
            s.run,
            reached(s),
            md_cell(s.failure.as_deref().unwrap_or("-"))
        );
    }
}

/// `boot.md`: what was measured and how, per profile its tables, then the slopes, the
/// crossovers, the gap to the floor, and the failed boots.
pub fn markdown(info: &RunInfo, samples: &[BootSample]) -> String {
    let mut out = String::new();
    header(info, samples, &mut out);
    for profile in profiles(samples) {
        profile_tables(info, samples, profile, &mut out);
    }
    slopes_section(samples, &mut out);
    crossover_section(samples, &mut out);
    floor_section(samples, &mut out);
    tcg_section(samples, &mut out);
    host_section(samples, &mut out);
    failed_section(samples, &mut out);
    out
}
