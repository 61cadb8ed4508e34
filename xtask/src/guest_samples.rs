//! The boot sampler's records read back from a console log, and the figures a report derives
//! from them (pure). The sampler (`storage-init/examples/boot_sampler.rs`, whose module
//! comment defines the line) records in the guest over the whole boot; its dump writes the
//! records to the kernel log after multi-user.target:
//!
//! ```text
//! [   40.100000] initoverlayfs-sample: clock t=40.098765
//! [   40.101000] initoverlayfs-sample: v=1 t=3.250012 initrd=1 cpu=… mem=… disk=… psi=… self=812 ck=…
//! [   41.000000] initoverlayfs-analyze: $ systemd-analyze
//! [   41.000100] initoverlayfs-analyze: Startup finished in 2.9s (kernel) + 9.8s (initrd) + 26.6s (userspace) = 39.3s
//! [   41.300000] initoverlayfs-sample: end samples=152
//! ```
//!
//! Console lines can be garbled (another writer cutting in, a lost end): a sample line whose
//! checksum fails, or that lacks a required field, is counted in [`GuestLog::malformed`] and
//! left out. Nothing here panics on any input.

/// What precedes a sample (and the clock and end records) on a console line.
pub const SAMPLE_TAG: &str = "initoverlayfs-sample: ";
/// What precedes a line of systemd-analyze's output.
pub const ANALYZE_TAG: &str = "initoverlayfs-analyze: ";
/// The sample format this parser reads (`v=`).
pub const FORMAT_VERSION: u32 = 1;
/// `/proc/stat` counts in USER_HZ ticks, 100 per second on every architecture Linux runs
/// (`USER_HZ` in the kernel's `asm/param.h`; what `sysconf(_SC_CLK_TCK)` answers).
pub const USER_HZ: f64 = 100.0;
/// `/proc/diskstats` counts sectors of 512 bytes whatever the device's block size
/// (Documentation/admin-guide/iostats.rst).
pub const SECTOR_BYTES: u64 = 512;

/// One sample of the guest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestSample {
    /// `CLOCK_BOOTTIME`, seconds since the kernel started (see [`GuestLog::clock_offset_s`]
    /// for its offset from printk time).
    pub t: f64,
    /// Whether `/etc/initrd-release` existed: the initrd phase.
    pub in_initrd: bool,
    pub cpu: Option<CpuTicks>,
    pub memory: Option<Memory>,
    pub disk: Option<DiskReads>,
    pub pressure: Option<Pressure>,
    /// The sampler process's own CPU time so far, in microseconds. Each phase has its own
    /// process, so it falls back near 0 at the switch to the real root.
    pub sampler_cpu_us: u64,
}

/// `/proc/stat`'s `cpu` total, in USER_HZ ticks summed over the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    /// Ticks the CPUs were running something (guest time is inside `user` already).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }
}

/// `/proc/meminfo`, in KiB (the kernel's "kB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_kib: u64,
    pub available_kib: u64,
    pub free_kib: u64,
    pub shmem_kib: u64,
    pub cached_kib: u64,
}

impl Memory {
    /// MemTotal − MemAvailable: what the machine could not hand out without swapping.
    pub fn used_kib(&self) -> u64 {
        self.total_kib.saturating_sub(self.available_kib)
    }
}

/// `/proc/diskstats` reads, summed over the machine's disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskReads {
    /// Reads completed.
    pub requests: u64,
    /// Sectors read (512 bytes each).
    pub sectors: u64,
    /// Milliseconds spent reading (summed over requests in flight, so it can outrun the clock).
    pub read_ms: u64,
}

/// PSI `total=` counters, microseconds of stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    pub cpu_some_us: u64,
    pub io_some_us: u64,
    pub io_full_us: u64,
    pub memory_some_us: u64,
}

/// Everything the sampler left in one console log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuestLog {
    /// The samples, in time order, each once.
    pub samples: Vec<GuestSample>,
    /// systemd-analyze's output lines, in order (each command's first line is `$ <command>`).
    pub analyze: Vec<String>,
    /// The count of the `end samples=<count>` record: how many sample lines the dump wrote.
    /// Absent when the dump did not finish (or its line was lost).
    pub end_count: Option<usize>,
    /// printk time minus `CLOCK_BOOTTIME` at the dump's `clock` record, in seconds: add it to
    /// a sample's `t` to place it on the kernel log's time line. Absent without the record or
    /// its printk prefix.
    pub clock_offset_s: Option<f64>,
    /// Sample lines seen but left out (checksum, version or a required field wrong).
    pub malformed: usize,
}

/// Reads the sampler's records out of `console` (the whole console log).
pub fn parse_console(console: &str) -> GuestLog {
    let mut log = GuestLog::default();
    for line in console.lines() {
        if let Some((before, rest)) = line.split_once(SAMPLE_TAG) {
            if let Some(count) = rest.strip_prefix("end samples=") {
                if let Ok(count) = count.trim_end().parse() {
                    log.end_count = Some(count);
                }
            } else if let Some(t) = rest.strip_prefix("clock t=") {
                if let (Some(printk), Ok(t)) = (printk_seconds(before), t.trim_end().parse::<f64>())
                {
                    log.clock_offset_s = Some(printk - t);
                }
            } else {
                match parse_sample(rest) {
                    Some(sample) => log.samples.push(sample),
                    None => log.malformed += 1,
                }
            }
        } else if let Some((_, rest)) = line.split_once(ANALYZE_TAG) {
            log.analyze.push(rest.trim_end().to_owned());
        }
    }
    log.samples.sort_by(|a, b| a.t.total_cmp(&b.t));
    // A dump seen twice (the console repeated, a log concatenated) gives each sample once.
    log.samples.dedup_by(|a, b| a.t == b.t);
    log
}

/// The printk time of a console line's `[   12.345678] ` prefix (what precedes the tag).
fn printk_seconds(before_tag: &str) -> Option<f64> {
    let (_, stamp) = before_tag.rsplit_once('[')?;
    let (seconds, _) = stamp.split_once(']')?;
    seconds.trim().parse().ok()
}

/// One sample line (after the tag); None unless its checksum, version, `t`, `initrd` and
/// `self` are right and every present field parses.
pub fn parse_sample(line: &str) -> Option<GuestSample> {
    let line = line.trim_end();
    let (body, checksum) = line.rsplit_once(" ck=")?;
    if checksum.len() != 8 || u32::from_str_radix(checksum, 16).ok()? != fnv1a(body.as_bytes()) {
        return None;
    }
    let mut version = None;
    let mut sample = GuestSample {
        t: f64::NAN,
        in_initrd: false,
        cpu: None,
        memory: None,
        disk: None,
        pressure: None,
        sampler_cpu_us: u64::MAX,
    };
    let mut in_initrd = None;
    for field in body.split(' ') {
        let (key, value) = field.split_once('=')?;
        match key {
            "v" => version = Some(value.parse::<u32>().ok()?),
            "t" => sample.t = value.parse().ok().filter(|t: &f64| t.is_finite())?,
            "initrd" => {
                in_initrd = Some(match value {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                })
            }
            "cpu" => {
                let [user, nice, system, idle, iowait, irq, softirq, steal] =
                    numbers::<8>(value, true)?;
                sample.cpu = Some(CpuTicks {
                    user,
                    nice,
                    system,
                    idle,
                    iowait,
                    irq,
                    softirq,
                    steal,
                });
            }
            "mem" => {
                let [total_kib, available_kib, free_kib, shmem_kib, cached_kib] =
                    numbers::<5>(value, false)?;
                sample.memory = Some(Memory {
                    total_kib,
                    available_kib,
                    free_kib,
                    shmem_kib,
                    cached_kib,
                });
            }
            "disk" => {
                let [requests, sectors, read_ms] = numbers::<3>(value, false)?;
                sample.disk = Some(DiskReads {
                    requests,
                    sectors,
                    read_ms,
                });
            }
            "psi" => {
                let [cpu_some_us, io_some_us, io_full_us, memory_some_us] =
                    numbers::<4>(value, false)?;
                sample.pressure = Some(Pressure {
                    cpu_some_us,
                    io_some_us,
                    io_full_us,
                    memory_some_us,
                });
            }
            "self" => sample.sampler_cpu_us = value.parse().ok()?,
            // A field a later sampler adds: not this parser's business.
            _ => {}
        }
    }
    if version != Some(FORMAT_VERSION) || sample.t.is_nan() || sample.sampler_cpu_us == u64::MAX {
        return None;
    }
    sample.in_initrd = in_initrd?;
    Some(sample)
}

/// The first `N` comma-separated numbers of `value`; more are allowed only if `more_allowed`
/// (the cpu line grows with kernels: guest and guest_nice came later).
fn numbers<const N: usize>(value: &str, more_allowed: bool) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut parts = value.split(',');
    for slot in &mut out {
        *slot = parts.next()?.parse().ok()?;
    }
    let rest_ok = if more_allowed {
        parts.all(|p| p.parse::<u64>().is_ok())
    } else {
        parts.next().is_none()
    };
    rest_ok.then_some(out)
}

/// FNV-1a, 32 bits (Fowler, Noll, Vo): the sampler's line checksum.
fn fnv1a(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u32::from(b)).wrapping_mul(PRIME))
}

/// The samples with `from <= t <= to` (`samples` in time order, as [`GuestLog::samples`]).
pub fn window(samples: &[GuestSample], from: f64, to: f64) -> &[GuestSample] {
    let start = samples.partition_point(|s| s.t < from);
    let end = samples.partition_point(|s| s.t <= to).max(start);
    &samples[start..end]
}

/// The first and last sample's time in the initrd, if any sample was taken there.
pub fn initrd_span(samples: &[GuestSample]) -> Option<(f64, f64)> {
    let mut initrd = samples.iter().filter(|s| s.in_initrd);
    let first = initrd.next()?.t;
    let last = initrd.next_back().map_or(first, |s| s.t);
    Some((first, last))
}

/// The highest MemTotal − MemAvailable of the samples in `[from, to]`, in KiB.
pub fn peak_memory_used_kib(samples: &[GuestSample], from: f64, to: f64) -> Option<u64> {
    window(samples, from, to)
        .iter()
        .filter_map(|s| s.memory.map(|m| m.used_kib()))
        .max()
}

/// Where the CPUs' time went between two samples. The kernel accounts CPU time in ticks at
/// its timer interrupt: under TCG, where the guest cannot take every tick, the three add up
/// to less than the wall time times the CPUs (a real boot here: 21.1 CPU-seconds accounted
/// over 30.8 s on one CPU), so compare their shares rather than their sum with the clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSplit {
    /// The samples the figures run between (the first and last of the window).
    pub from: f64,
    pub to: f64,
    /// CPU-seconds running (user, nice, system, irq, softirq, steal).
    pub busy_s: f64,
    /// CPU-seconds idle with a read or write outstanding.
    pub iowait_s: f64,
    /// CPU-seconds idle otherwise.
    pub idle_s: f64,
}

/// The CPU split between the first and the last sample in `[from, to]` that carry CPU
/// figures; None with fewer than two.
pub fn cpu_split(samples: &[GuestSample], from: f64, to: f64) -> Option<CpuSplit> {
    let (first, a, last, b) = ends(window(samples, from, to), |s| s.cpu)?;
    let seconds = |f: fn(&CpuTicks) -> u64| f(&b).saturating_sub(f(&a)) as f64 / USER_HZ;
    Some(CpuSplit {
        from: first,
        to: last,
        busy_s: seconds(CpuTicks::busy),
        iowait_s: seconds(|c| c.iowait),
        idle_s: seconds(|c| c.idle),
    })
}

/// What the machine's disks read between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reads {
    /// The samples the figures run between.
    pub from: f64,
    pub to: f64,
    /// Reads completed.
    pub requests: u64,
    /// Bytes read (sectors × 512).
    pub bytes: u64,
    /// Seconds spent reading, summed over the requests (overlapping requests add up).
    pub read_s: f64,
}

/// The reads between the first and the last sample in `[from, to]` that carry disk figures;
/// None with fewer than two.
pub fn reads_between(samples: &[GuestSample], from: f64, to: f64) -> Option<Reads> {
    let (first, a, last, b) = ends(window(samples, from, to), |s| s.disk)?;
    Some(Reads {
        from: first,
        to: last,
        requests: b.requests.saturating_sub(a.requests),
        bytes: b.sectors.saturating_sub(a.sectors) * SECTOR_BYTES,
        read_s: b.read_ms.saturating_sub(a.read_ms) as f64 / 1000.0,
    })
}

/// The sampler's own CPU time over the samples, in seconds: the last `self=` of each of its
/// processes (a new one starts where the figure falls), added up. What the probe cost the boot.
pub fn sampler_cpu_s(samples: &[GuestSample]) -> f64 {
    let mut total_us = 0;
    let mut last: Option<u64> = None;
    for sample in samples {
        if let Some(previous) = last
            && sample.sampler_cpu_us < previous
        {
            total_us += previous;
        }
        last = Some(sample.sampler_cpu_us);
    }
    (total_us + last.unwrap_or(0)) as f64 / 1e6
}

/// The first and last samples of `window` that have `figure`, with their times; None unless
/// they are two different samples.
fn ends<T: Copy>(
    window: &[GuestSample],
    figure: impl Fn(&GuestSample) -> Option<T>,
) -> Option<(f64, T, f64, T)> {
    let first = window.iter().position(|s| figure(s).is_some())?;
    let last = window.iter().rposition(|s| figure(s).is_some())?;
    if first == last {
        return None;
    }
    let (a, b) = (&window[first], &window[last]);
    Some((a.t, figure(a)?, b.t, figure(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample line as the sampler writes it: `body` and its checksum.
    fn line(body: &str) -> String {
        format!("{body} ck={:08x}", fnv1a(body.as_bytes()))
    }

    /// A compact rendering of what was parsed, for the expectations below.
    fn render(log: &GuestLog) -> String {
        let mut out = Vec::new();
        for s in &log.samples {
            let mut text = format!("t={} initrd={}", s.t, u8::from(s.in_initrd));
            if let Some(c) = s.cpu {
                text += &format!(" busy={} iowait={} idle={}", c.busy(), c.iowait, c.idle);
            }
            if let Some(m) = s.memory {
                text += &format!(" used={}", m.used_kib());
            }
            if let Some(d) = s.disk {
                text += &format!(" reads={},{},{}", d.requests, d.sectors, d.read_ms);
            }
            if let Some(p) = s.pressure {
                text += &format!(" io_some={}", p.io_some_us);
            }
            text += &format!(" self={}", s.sampler_cpu_us);
            out.push(text);
        }
        for a in &log.analyze {
            out.push(format!("analyze: {a}"));
        }
        out.push(format!(
            "end={:?} offset={:?} malformed={}",
            log.end_count,
            log.clock_offset_s.map(|o| (o * 1e6).round() / 1e6),
            log.malformed
        ));
        out.join("\n")
    }

    fn check(console: &str, expected: &str) {
        assert_eq!(
            render(&parse_console(console)),
            expected.trim(),
            "{console}"
        );
    }

    /// A line the sampler wrote on this project's build host (its checksum from the sampler's
    /// own code, not this module's), so the two implementations of the format are held to
    /// each other.
    const HOST_LINE: &str = "v=1 t=1371.851374 initrd=0 cpu=208754,0,36784,27221,268,0,331,590,0,0 mem=24683784,22350148,10682432,10220,11323404 disk=147864,7214578,85228 psi=1067440754,19152734,1784781,0 self=1724 ck=d941b43c";

    #[test]
    fn the_samplers_own_line_parses() {
        let sample = parse_sample(HOST_LINE).expect("the sampler's line is well-formed");
        assert_eq!(sample.t, 1371.851374);
        assert!(!sample.in_initrd);
        assert_eq!(sample.disk.unwrap().sectors, 7214578);
        assert_eq!(sample.pressure.unwrap().io_some_us, 19152734);
        assert_eq!(sample.sampler_cpu_us, 1724);
    }

    /// Lines of a real boot's console (the `…-dracut-uefi` cell under TCG): the dump's clock
    /// record, a sample printed after a systemd status line that had not ended its line, the
    /// initrd's last sample and the real root's first, systemd-analyze, the end record.
    #[test]
    fn a_real_console_excerpt() {
        let console = "\
[   82.527572] initoverlayfs-sample: clock t=82.580901\r
         Starting \u{1b}[0;1;39msystemd-update-ut\u{e2}\u{80}\u{a6} Record Runlevel Change in UTMP...\r[   82.924605] initoverlayfs-sample: v=1 t=25.106218 initrd=1 cpu=301,0,1200,3,14,0,19,0,0,0 mem=982676,853588,907088,6208,39392 disk=491,35237,1331 psi=15323641,745862,151148,0 self=157315 ck=e6dcc0cb\r
[   83.970406] initoverlayfs-sample: v=1 t=45.608757 initrd=1 cpu=794,0,2202,34,26,0,67,0,0,0 mem=982676,823304,869484,6344,50316 disk=833,59706,2223 psi=30403796,1185587,280469,2399 self=328112 ck=8b932504\r
[   83.996769] initoverlayfs-sample: v=1 t=57.108614 initrd=0 cpu=1095,0,2730,37,31,0,85,0,0,0 mem=982676,862296,922336,6184,21768 disk=1323,93986,2784 psi=36891336,1303382,349309,2399 self=108868 ck=30ed3795\r
[   93.491820] initoverlayfs-analyze: Startup finished in 8.789s (kernel) + 41.413s (initrd) + 42.982s (userspace) = 1min 33.186s \r
[  106.618093] initoverlayfs-analyze: multi-user.target @32.179s\r
[  106.663668] initoverlayfs-sample: end samples=212\r
";
        check(
            console,
            "
t=25.106218 initrd=1 busy=1520 iowait=14 idle=3 used=129088 reads=491,35237,1331 io_some=745862 self=157315
t=45.608757 initrd=1 busy=3063 iowait=26 idle=34 used=159372 reads=833,59706,2223 io_some=1185587 self=328112
t=57.108614 initrd=0 busy=3910 iowait=31 idle=37 used=120380 reads=1323,93986,2784 io_some=1303382 self=108868
analyze: Startup finished in 8.789s (kernel) + 41.413s (initrd) + 42.982s (userspace) = 1min 33.186s
analyze: multi-user.target @32.179s
end=Some(212) offset=Some(-0.053329) malformed=0
",
        );
        let log = parse_console(console);
        // Across the switch to the real root, where no sampler runs, the counters still give
        // the totals.
        let gap = reads_between(&log.samples, 45.6, 57.2).unwrap();
        assert_eq!((gap.requests, gap.bytes), (490, 17551360));
        assert_eq!(sampler_cpu_s(&log.samples), 0.436_98);
    }

    #[test]
    fn console_lines_become_samples() {
        let a = line(
            "v=1 t=3.250012 initrd=1 cpu=100,5,50,20,10,2,3,0,0,0 mem=500000,400000,380000,1200,20000 disk=10,800,40 psi=1,2,3,4 self=900",
        );
        let b = line(
            "v=1 t=3.500020 initrd=1 cpu=110,5,60,25,30,2,3,0,0,0 mem=500000,380000,360000,1200,40000 disk=30,2400,90 psi=5,6,7,8 self=1800",
        );
        let c = line("v=1 t=9.000000 initrd=0 cpu=400,5,100,200,50,2,3,0 self=300");
        check(
            &format!(
                "[   40.100000] initoverlayfs-sample: clock t=40.098765\n\
                 [   40.101000] initoverlayfs-sample: {b}\n\
                 [   40.102000] initoverlayfs-sample: {a}\n\
                 noise from another writer\n\
                 [   40.103000] initoverlayfs-sample: {c}\n\
                 [   41.000000] initoverlayfs-analyze: $ systemd-analyze\n\
                 [   41.000100] initoverlayfs-analyze: Startup finished in 2.9s (kernel) + 9.8s (initrd) = 12.7s\r\n\
                 [   41.300000] initoverlayfs-sample: end samples=3\n"
            ),
            "
t=3.250012 initrd=1 busy=160 iowait=10 idle=20 used=100000 reads=10,800,40 io_some=2 self=900
t=3.50002 initrd=1 busy=180 iowait=30 idle=25 used=120000 reads=30,2400,90 io_some=6 self=1800
t=9 initrd=0 busy=510 iowait=50 idle=200 self=300
analyze: $ systemd-analyze
analyze: Startup finished in 2.9s (kernel) + 9.8s (initrd) = 12.7s
end=Some(3) offset=Some(0.001235) malformed=0
",
        );
        // Without a printk prefix (printk.time=0) the samples still parse; no offset.
        check(
            &format!("initoverlayfs-sample: {c}\ninitoverlayfs-sample: clock t=1.0\n"),
            "
t=9 initrd=0 busy=510 iowait=50 idle=200 self=300
end=None offset=None malformed=0
",
        );
    }

    #[test]
    fn garbled_lines_are_dropped_not_misread() {
        let good = line("v=1 t=1.000000 initrd=1 disk=1,8,1 self=5");
        let cases = [
            // Cut short by the end of the log or of the line.
            good[..good.len() - 3].to_owned(),
            good.replace(" ck=", " ck"),
            // Another writer's text inside the line.
            good.replace("disk=1,8,1", "disk=1,[  OK  ] Started x,1"),
            // A digit changed in transit.
            good.replace("disk=1,8,1", "disk=1,9,1"),
            // Well-formed but not this format, or missing what every line has.
            line("v=2 t=1.000000 initrd=1 self=5"),
            line("v=1 t=1.000000 self=5"),
            line("v=1 t=1.000000 initrd=2 self=5"),
            line("v=1 t=nan initrd=1 self=5"),
            line("v=1 initrd=1 self=5"),
            line("v=1 t=1.000000 initrd=1"),
            line("v=1 t=1.000000 initrd=1 disk=1,8 self=5"),
            line("v=1 t=1.000000 initrd=1 mem=1,2,3,4,5,6 self=5"),
            line("v=1 t=1.000000 initrd=1 cpu=1,2,3 self=5"),
            line("v=1 t=1.000000 initrd=1 cpu=1,2,3,4,5,6,7,8,x self=5"),
            line("v=1 t=1.000000 initrd=1 bare self=5"),
            String::new(),
            "ck=".to_owned(),
            " ck=zzzzzzzz".to_owned(),
            "\u{fffd}\u{fffd} ck=00000000".to_owned(),
        ];
        for case in &cases {
            assert_eq!(parse_sample(case), None, "{case:?}");
        }
        let console: String = cases
            .iter()
            .map(|c| format!("[    1.0] initoverlayfs-sample: {c}\n"))
            .collect();
        check(
            &(console
                + "initoverlayfs-sample: end samples=x\n[ 5.0 initoverlayfs-sample: clock t=4\n"),
            &format!("end=None offset=None malformed={}", cases.len()),
        );
        // A later field the parser does not know is skipped, not an error.
        check(
            &format!(
                "initoverlayfs-sample: {}\n",
                line("v=1 t=2.000000 initrd=0 zz=1,2 self=7")
            ),
            "
t=2 initrd=0 self=7
end=None offset=None malformed=0
",
        );
    }

    #[test]
    fn a_dump_seen_twice_counts_once() {
        let a = line("v=1 t=1.000000 initrd=1 self=5");
        let text = format!("initoverlayfs-sample: {a}\n");
        assert_eq!(parse_console(&text.repeat(2)).samples.len(), 1);
    }

    /// Samples for the figures: the initrd until 3 s, then the real root.
    fn timeline() -> Vec<GuestSample> {
        let rows: [(f64, bool, u64, u64, u64, u64, u64); 5] = [
            // t, initrd, busy (as user), iowait, idle, MemAvailable, reads (sectors = 8 each)
            (1.0, true, 50, 0, 10, 450_000, 0),
            (2.0, true, 120, 20, 20, 300_000, 100),
            (3.0, true, 200, 50, 30, 350_000, 150),
            (4.0, false, 250, 60, 90, 200_000, 400),
            (5.0, false, 260, 60, 180, 420_000, 410),
        ];
        rows.iter()
            .map(
                |&(t, in_initrd, user, iowait, idle, available, reads)| GuestSample {
                    t,
                    in_initrd,
                    cpu: Some(CpuTicks {
                        user,
                        iowait,
                        idle,
                        ..CpuTicks::default()
                    }),
                    memory: Some(Memory {
                        total_kib: 500_000,
                        available_kib: available,
                        free_kib: 0,
                        shmem_kib: 0,
                        cached_kib: 0,
                    }),
                    disk: Some(DiskReads {
                        requests: reads,
                        sectors: reads * 8,
                        read_ms: reads * 2,
                    }),
                    pressure: None,
                    sampler_cpu_us: (t * 1000.0) as u64 % 3500,
                },
            )
            .collect()
    }

    fn check_figures(from: f64, to: f64, expected: &str) {
        let samples = timeline();
        let peak = peak_memory_used_kib(&samples, from, to);
        let cpu = cpu_split(&samples, from, to).map(|c| {
            format!(
                "{}..{} busy={} iowait={} idle={}",
                c.from, c.to, c.busy_s, c.iowait_s, c.idle_s
            )
        });
        let reads = reads_between(&samples, from, to).map(|r| {
            format!(
                "{}..{} requests={} bytes={} read_s={}",
                r.from, r.to, r.requests, r.bytes, r.read_s
            )
        });
        assert_eq!(
            format!("peak={peak:?} cpu={cpu:?} reads={reads:?}"),
            expected,
            "[{from}, {to}]"
        );
    }

    #[test]
    fn figures_between_two_times() {
        // The initrd phase: its first to its last sample.
        assert_eq!(initrd_span(&timeline()), Some((1.0, 3.0)));
        check_figures(
            1.0,
            3.0,
            r#"peak=Some(200000) cpu=Some("1..3 busy=1.5 iowait=0.5 idle=0.2") reads=Some("1..3 requests=150 bytes=614400 read_s=0.3")"#,
        );
        // Bounds between samples take the samples inside.
        check_figures(
            1.5,
            4.5,
            r#"peak=Some(300000) cpu=Some("2..4 busy=1.3 iowait=0.4 idle=0.7") reads=Some("2..4 requests=300 bytes=1228800 read_s=0.6")"#,
        );
        // One sample is no interval; none is nothing.
        check_figures(4.5, 5.5, "peak=Some(80000) cpu=None reads=None");
        check_figures(6.0, 9.0, "peak=None cpu=None reads=None");
        check_figures(3.0, 1.0, "peak=None cpu=None reads=None");
        assert_eq!(initrd_span(&timeline()[3..]), None);
        assert_eq!(window(&[], 0.0, 1.0), &[]);
    }

    #[test]
    fn the_samplers_cost_adds_up_its_processes() {
        // self= rises 1000, 2000, 3000 in the initrd, then a new process: 500, 1500.
        let samples = timeline();
        let costs: Vec<u64> = samples.iter().map(|s| s.sampler_cpu_us).collect();
        assert_eq!(costs, [1000, 2000, 3000, 500, 1500]);
        assert_eq!(sampler_cpu_s(&samples), 0.0045);
        assert_eq!(sampler_cpu_s(&[]), 0.0);
    }
}
