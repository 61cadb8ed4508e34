//! The boot sampler: a guest program for the boot benchmark that records, every quarter of a
//! second, where the machine's time goes while it boots (CPU busy or waiting, memory, disk
//! reads, pressure), in the initrd and in the real root alike, and later writes what it
//! recorded to the kernel log, where the harness reads it off the serial console.
//!
//! Not a product: `cargo xtask` builds it static (`static_build::Pid1Binary::BootSampler`) and
//! `xtask::boot_probe` installs it with two systemd units. Under TCG every guest instruction
//! is expensive, so a sample is a handful of syscalls on files opened once: one `pread` each of
//! `/proc/stat`, `/proc/meminfo`, `/proc/diskstats` and the pressure files into buffers reused
//! from one sample to the next, one `write` of one line. std and rustix only. Measured in a
//! real boot under TCG (x86_64 q35, Debian 6.12, one vCPU, the `…-dracut-uefi` cell): 1.5 to
//! 2.2 ms of guest CPU per sample, 0.6 s over an 82 s boot to multi-user.target (0.7%); a
//! process's first sample also carries the ~0.1 s systemd spends in the forked child before
//! the exec.
//!
//! * `boot_sampler record <file> [--interval-ms N]` (default 250 ms): appends one line per
//!   sample to `<file>` (its directory created, opened `O_APPEND`, one `write` per line, so a
//!   kill never leaves half a line), until killed. SIGTERM keeps its default action, ending the
//!   process at once: there is nothing to flush, and systemd counts a service that SIGTERM
//!   ends as stopped cleanly, so neither the initrd's switch-root nor a shutdown waits for it.
//! * `boot_sampler dump <file> [--analyze]`: writes a clock line, then every line of `<file>`
//!   to `/dev/kmsg` as `<5>initoverlayfs-sample: <line>` (one record each), then the 20
//!   processes that used the most CPU so far, kernel threads included, as
//!   `<5>initoverlayfs-analyze: cpu <ms> ms pid <pid> <name>`; with the kernel's profiler on
//!   (`profile=2`), the most sampled kernel functions of three stretches of the boot (to the
//!   initrd's first sample, to the real root's, to the dump: `record` copies /proc/profile
//!   at its start) as `<5>initoverlayfs-analyze: profile <stretch> <samples> <function>`,
//!   module code lumped into one line; with `--analyze`,
//!   waits for systemd to call the boot finished (`systemctl is-system-running --wait`, at
//!   most [`BOOT_FINISH_TIMEOUT`]: `systemd-analyze` refuses an unfinished boot), then writes
//!   the output of `systemd-analyze` and `systemd-analyze critical-chain --no-pager
//!   multi-user.target`, where present, as `<5>initoverlayfs-analyze: <line>` (each command
//!   first as `$ <command>`; lines split to fit a kernel record; under TCG the two take about
//!   25 s, hence on request only); and ends with `<5>initoverlayfs-sample: end
//!   samples=<count>`.
//!
//! # The sample line (format 1), parsed by `xtask::guest_samples`
//!
//! ```text
//! v=1 t=12.345678 initrd=1 cpu=U,N,S,I,W,Q,SQ,ST,G,GN mem=T,A,F,SH,C disk=R,SR,MS psi=CS,IS,IF,MS self=US ck=HHHHHHHH
//! ```
//!
//! * `t`: `CLOCK_BOOTTIME` in seconds with microseconds, taken before the files are read.
//!   Both it and the kernel log's printk time count from the kernel's start, but printk uses
//!   `local_clock()` (the scheduler clock) and `CLOCK_BOOTTIME` the timekeeping clock: the two
//!   can differ by milliseconds. The dump's `clock t=<boottime>` record carries both clocks
//!   at one moment (its printk time on the console), so a reader can measure the offset.
//! * `initrd`: 1 if `/etc/initrd-release` exists (systemd's own test for running in an initrd).
//! * `cpu`: the fields of `/proc/stat`'s first `cpu` line as the kernel prints them (USER_HZ
//!   ticks summed over the CPUs: user, nice, system, idle, iowait, irq, softirq, steal, guest,
//!   guest_nice; guest time is also counted in user).
//! * `mem`: `/proc/meminfo`'s MemTotal, MemAvailable, MemFree, Shmem, Cached, in kB.
//! * `disk`: over the machine's disks (entries of `/sys/block` but `loop*`, `ram*`, `dm-*`,
//!   `zram*`, `sr*`, `md*`, `nbd*`: device-mapper and md would count their disks' reads
//!   twice), summed `/proc/diskstats` reads completed, sectors read (512 bytes) and
//!   milliseconds spent reading.
//! * `psi`: the `total=` (microseconds) of `/proc/pressure/cpu` `some`, `io` `some`, `io`
//!   `full` and `memory` `some`; absent when the kernel has no PSI (`psi=0`, or a kernel
//!   built with `CONFIG_PSI_DEFAULT_DISABLED` and booted without `psi=1`).
//! * `self`: this process's CPU time so far (`CLOCK_PROCESS_CPUTIME_ID`), in microseconds:
//!   what the sampling costs. Each phase runs its own process, so it restarts near 0 in the
//!   real root.
//! * `ck`: FNV-1a (32 bits, hex) of the line's bytes before ` ck=`: a console line that
//!   another writer cut into or that lost its end fails it and is dropped by the reader.
//!
//! A field whose file cannot be read is left out; `v`, `t`, `initrd`, `self` and `ck` are
//! always there. A line stays under 400 bytes (the cpu line's 10 fields of at most 20 digits
//! are the longest part), far below a kernel record's limit.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, OFlags};
use rustix::io::Errno;
use rustix::time::{ClockId, Timespec};

/// The sampling interval unless `--interval-ms` says otherwise.
const DEFAULT_INTERVAL_MS: u64 = 250;
/// The format version written as `v=`.
const FORMAT_VERSION: u32 = 1;
/// What the dump puts before a sample line (priority 5, notice: shown on the console unless
/// `quiet`, and not a warning).
const SAMPLE_PREFIX: &str = "<5>initoverlayfs-sample: ";
/// What the dump puts before a line of systemd-analyze's output.
const ANALYZE_PREFIX: &str = "<5>initoverlayfs-analyze: ";
/// The longest `/dev/kmsg` write the kernel takes as one record: `LOG_LINE_MAX` (1024 minus
/// the 32-byte prefix room) before Linux 6.10, `PRINTKRB_RECORD_MAX` (1024) since. The
/// older, smaller limit, less the trailing newline.
const KMSG_RECORD_MAX: usize = 992 - 1;
/// How long the dump waits for systemd to call the boot finished before it runs
/// systemd-analyze anyway (which then says the boot is not finished).
const BOOT_FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the dump checks whether `systemctl is-system-running --wait` returned.
const CHILD_POLL: Duration = Duration::from_millis(50);
/// systemd's test for running in an initrd (`in_initrd()`).
const INITRD_RELEASE: &str = "/etc/initrd-release";
/// `/sys/block` entries that are not disks of the machine, or whose reads are their disks'.
const NOT_A_DISK: [&[u8]; 7] = [b"loop", b"ram", b"dm-", b"zram", b"sr", b"md", b"nbd"];
/// The meminfo keys of `mem=`, in order.
const MEMINFO_KEYS: [&[u8]; 5] = [
    b"MemTotal:",
    b"MemAvailable:",
    b"MemFree:",
    b"Shmem:",
    b"Cached:",
];
/// Read buffers: `/proc/stat`'s first line is at its start (the rest, per-CPU lines and the
/// interrupt counts, is not needed); meminfo is about 1.5 KiB; diskstats holds one line of
/// about 100 bytes per block device and partition.
const STAT_BUFFER: usize = 4096;
const MEMINFO_BUFFER: usize = 8192;
const DISKSTATS_BUFFER: usize = 64 * 1024;
const PRESSURE_BUFFER: usize = 256;
/// FNV-1a's 32-bit offset basis and prime (Fowler, Noll, Vo).
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse_args(&args) {
        Ok(Task::Record { file, interval_ms }) => record(Path::new(&file), interval_ms),
        Ok(Task::Dump { file, analyze }) => dump(Path::new(&file), analyze),
        Err(usage) => {
            eprintln!("boot_sampler: {usage}");
            eprintln!(
                "usage: boot_sampler record <file> [--interval-ms N] | boot_sampler dump <file> [--analyze]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("boot_sampler: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Task {
    Record { file: String, interval_ms: u64 },
    Dump { file: String, analyze: bool },
}

fn parse_args(args: &[String]) -> Result<Task, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["record", file] => Ok(Task::Record {
            file: file.to_owned(),
            interval_ms: DEFAULT_INTERVAL_MS,
        }),
        ["record", file, "--interval-ms", ms] => match ms.parse() {
            Ok(interval_ms) if interval_ms > 0 => Ok(Task::Record {
                file: file.to_owned(),
                interval_ms,
            }),
            _ => Err(format!(
                "--interval-ms {ms:?}: expected a positive number of milliseconds"
            )),
        },
        ["dump", file] => Ok(Task::Dump {
            file: file.to_owned(),
            analyze: false,
        }),
        ["dump", file, "--analyze"] => Ok(Task::Dump {
            file: file.to_owned(),
            analyze: true,
        }),
        _ => Err(format!("unexpected arguments {args:?}")),
    }
}

/// The files read at every sample, opened once.
struct Sources {
    stat: Option<OwnedFd>,
    meminfo: Option<OwnedFd>,
    diskstats: Option<OwnedFd>,
    /// cpu, io, memory.
    pressure: Option<[OwnedFd; 3]>,
    sys_block: Option<OwnedFd>,
}

impl Sources {
    fn open() -> Sources {
        let file = |path: &str| {
            rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
        };
        let pressure = match (
            file("/proc/pressure/cpu"),
            file("/proc/pressure/io"),
            file("/proc/pressure/memory"),
        ) {
            (Some(cpu), Some(io), Some(memory)) => Some([cpu, io, memory]),
            _ => None,
        };
        Sources {
            stat: file("/proc/stat"),
            meminfo: file("/proc/meminfo"),
            diskstats: file("/proc/diskstats"),
            pressure,
            sys_block: rustix::fs::open(
                "/sys/block",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok(),
        }
    }
}

/// The buffers a sample is read into and written from, allocated once.
struct Buffers {
    stat: Vec<u8>,
    meminfo: Vec<u8>,
    diskstats: Vec<u8>,
    pressure: Vec<u8>,
    line: Vec<u8>,
    /// Block device names seen in diskstats, and whether each is a disk of the machine (asked
    /// of /sys/block once per name: disks come and go rarely).
    disks: Vec<(Vec<u8>, bool)>,
    sys_name: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            stat: vec![0; STAT_BUFFER],
            meminfo: vec![0; MEMINFO_BUFFER],
            diskstats: vec![0; DISKSTATS_BUFFER],
            pressure: vec![0; PRESSURE_BUFFER],
            line: Vec::with_capacity(512),
            disks: Vec::new(),
            sys_name: Vec::with_capacity(64),
        }
    }
}

fn record(file: &Path, interval_ms: u64) -> Result<(), String> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(file)
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    // With the kernel's profiler on (`profile=2`), where the kernel's time went so far: the
    // dump sets each phase's snapshot against the next one's.
    snapshot_profile(file);
    let sources = Sources::open();
    let mut buffers = Buffers::new();
    let interval = timespec_from_ns(interval_ms.saturating_mul(1_000_000));
    let mut next = rustix::time::clock_gettime(ClockId::Boottime);
    loop {
        buffers.line.clear();
        sample(&sources, &mut buffers);
        // One write per line: O_APPEND places it whole at the end. Best effort: a full /run
        // loses this line, not the next one.
        let _ = (&out).write(&buffers.line);
        next = add(next, interval);
        let now = rustix::time::clock_gettime(ClockId::Boottime);
        // Behind schedule (the guest was starved): skip the missed ticks, never burst.
        while !before(now, next) {
            next = add(next, interval);
        }
        // A signal that does not end the process (SIGSTOP's SIGCONT) cuts the sleep short.
        while let Err(Errno::INTR) =
            rustix::thread::clock_nanosleep_absolute(ClockId::Boottime, &next)
        {}
    }
}

/// One sample into `buffers.line`, newline included.
fn sample(sources: &Sources, buffers: &mut Buffers) {
    let t = rustix::time::clock_gettime(ClockId::Boottime);
    let in_initrd = rustix::fs::statat(rustix::fs::CWD, INITRD_RELEASE, AtFlags::empty()).is_ok();
    let line = &mut buffers.line;
    let _ = write!(
        line,
        "v={FORMAT_VERSION} t={}.{:06} initrd={}",
        t.tv_sec,
        t.tv_nsec / 1000,
        u8::from(in_initrd)
    );
    if let Some(text) = read_into(sources.stat.as_ref(), &mut buffers.stat) {
        write_cpu(line, text);
    }
    if let Some(text) = read_into(sources.meminfo.as_ref(), &mut buffers.meminfo) {
        write_meminfo(line, text);
    }
    if let Some(text) = read_into(sources.diskstats.as_ref(), &mut buffers.diskstats) {
        let sys_block = sources.sys_block.as_ref();
        let reads = disk_reads(text, &mut buffers.disks, &mut |name| {
            is_machine_disk(sys_block, name, &mut buffers.sys_name)
        });
        let _ = write!(line, " disk={},{},{}", reads.0, reads.1, reads.2);
    }
    if let Some(files) = &sources.pressure {
        let mut totals = [0u64; 4];
        let mut complete = true;
        for (slot, (file, kind)) in [
            (&files[0], b"some".as_slice()),
            (&files[1], b"some"),
            (&files[1], b"full"),
            (&files[2], b"some"),
        ]
        .into_iter()
        .enumerate()
        {
            match read_into(Some(file), &mut buffers.pressure).and_then(|t| psi_total(t, kind)) {
                Some(total) => totals[slot] = total,
                None => complete = false,
            }
        }
        if complete {
            let [cpu, io, io_full, memory] = totals;
            let _ = write!(line, " psi={cpu},{io},{io_full},{memory}");
        }
    }
    let own = rustix::time::clock_gettime(ClockId::ProcessCPUTime);
    let own_us = own.tv_sec as u64 * 1_000_000 + own.tv_nsec as u64 / 1000;
    let _ = write!(line, " self={own_us}");
    let checksum = fnv1a(line);
    let _ = writeln!(line, " ck={checksum:08x}");
}

/// The file's content from its start, in one `pread` (procfs regenerates a file read at
/// offset 0); None if it cannot be read.
fn read_into<'b>(file: Option<&OwnedFd>, buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = rustix::io::pread(file?, &mut *buffer, 0).ok()?;
    Some(&buffer[..n])
}

/// ` cpu=` and the numbers of the first line when it is the `cpu` total.
fn write_cpu(line: &mut Vec<u8>, stat: &[u8]) {
    let first = stat.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut fields = fields(first);
    if fields.next() != Some(b"cpu".as_slice()) {
        return;
    }
    line.extend_from_slice(b" cpu=");
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(field);
    }
}

/// ` mem=` and the values of [`MEMINFO_KEYS`], if all are there.
fn write_meminfo(line: &mut Vec<u8>, meminfo: &[u8]) {
    let mut values: [&[u8]; MEMINFO_KEYS.len()] = [&[]; MEMINFO_KEYS.len()];
    for text in meminfo.split(|&b| b == b'\n') {
        let mut fields = fields(text);
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Some(slot) = MEMINFO_KEYS.iter().position(|k| *k == key) {
            values[slot] = value;
        }
    }
    if values.iter().any(|v| v.is_empty()) {
        return;
    }
    line.extend_from_slice(b" mem=");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(value);
    }
}

/// Reads completed, sectors read and milliseconds spent reading, summed over the lines of
/// `/proc/diskstats` whose device `is_disk` says is a disk of the machine (the answers kept
/// in `known`).
fn disk_reads(
    diskstats: &[u8],
    known: &mut Vec<(Vec<u8>, bool)>,
    is_disk: &mut dyn FnMut(&[u8]) -> bool,
) -> (u64, u64, u64) {
    let mut sum = (0u64, 0u64, 0u64);
    for text in diskstats.split(|&b| b == b'\n') {
        let mut fields = fields(text).skip(2);
        let Some(name) = fields.next() else { continue };
        let disk = match known.iter().find(|(n, _)| n == name) {
            Some(&(_, disk)) => disk,
            None => {
                let disk = !NOT_A_DISK.iter().any(|p| name.starts_with(p)) && is_disk(name);
                known.push((name.to_vec(), disk));
                disk
            }
        };
        if !disk {
            continue;
        }
        let mut number = || fields.next().and_then(parse_u64);
        // A line that does not parse whole (cannot happen with the kernel's own text) counts
        // nothing rather than part of itself.
        let (Some(reads), Some(_merged), Some(sectors), Some(ms)) =
            (number(), number(), number(), number())
        else {
            continue;
        };
        sum.0 += reads;
        sum.1 += sectors;
        sum.2 += ms;
    }
    sum
}

/// Whether `/sys/block/<name>` exists: whole disks are there, partitions are not. The kernel
/// names a device with `/` in it (`cciss/c0d0`) with `!` there.
fn is_machine_disk(sys_block: Option<&OwnedFd>, name: &[u8], scratch: &mut Vec<u8>) -> bool {
    let Some(dir) = sys_block else { return false };
    scratch.clear();
    scratch.extend(name.iter().map(|&b| if b == b'/' { b'!' } else { b }));
    rustix::fs::statat(dir, scratch.as_slice(), AtFlags::empty()).is_ok()
}

/// `total=` of the `kind` (`some`, `full`) line of a pressure file.
fn psi_total(pressure: &[u8], kind: &[u8]) -> Option<u64> {
    pressure
        .split(|&b| b == b'\n')
        .filter(|text| fields(text).next() == Some(kind))
        .flat_map(fields)
        .find_map(|field| field.strip_prefix(b"total="))
        .and_then(parse_u64)
}

fn fields(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty())
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

const NS_PER_S: i64 = 1_000_000_000;

fn timespec_from_ns(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / NS_PER_S as u64) as i64,
        tv_nsec: (ns % NS_PER_S as u64) as _,
    }
}

fn add(a: Timespec, b: Timespec) -> Timespec {
    let nsec = a.tv_nsec + b.tv_nsec;
    Timespec {
        tv_sec: a.tv_sec + b.tv_sec + nsec / NS_PER_S,
        tv_nsec: (nsec % NS_PER_S) as _,
    }
}

fn before(a: Timespec, b: Timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

fn dump(file: &Path, analyze: bool) -> Result<(), String> {
    let mut kmsg = OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .map_err(|e| format!("opening /dev/kmsg: {e}"))?;
    let mut record = Vec::with_capacity(1024);
    let now = rustix::time::clock_gettime(ClockId::Boottime);
    record.clear();
    let _ = writeln!(
        record,
        "{SAMPLE_PREFIX}clock t={}.{:06}",
        now.tv_sec,
        now.tv_nsec / 1000
    );
    let _ = kmsg.write(&record);

    // A missing file (the recorder never ran) still gets the analysis and `end samples=0`.
    let mut samples = Vec::new();
    if let Err(error) = File::open(file).and_then(|mut f| f.read_to_end(&mut samples)) {
        eprintln!("boot_sampler: reading {}: {error}", file.display());
    }
    let mut count = 0usize;
    for line in samples.split_inclusive(|&b| b == b'\n') {
        // A line still being written has no newline yet: left out.
        let Some(line) = line.strip_suffix(b"\n") else {
            continue;
        };
        count += write_records(&mut kmsg, &mut record, SAMPLE_PREFIX, line);
    }

    if analyze && wait_for_boot_finished().is_err() {
        let line = format!("boot not finished after {BOOT_FINISH_TIMEOUT:?}");
        write_records(&mut kmsg, &mut record, ANALYZE_PREFIX, line.as_bytes());
    }
    let commands: &[&[&str]] = match analyze {
        false => &[],
        true => &[
            &["systemd-analyze"][..],
            &[
                "systemd-analyze",
                "critical-chain",
                "--no-pager",
                "multi-user.target",
            ],
        ],
    };
    // What used the CPU, by process, kernel threads included (a process that has ended is not
    // there: its time went to its parent when it was reaped).
    let mut processes = processes_by_cpu();
    processes.truncate(TOP_PROCESSES);
    for (cpu_ms, pid, name) in processes {
        let line = format!("cpu {cpu_ms} ms pid {pid} {name}");
        write_records(&mut kmsg, &mut record, ANALYZE_PREFIX, line.as_bytes());
    }
    for line in profile_lines(file) {
        write_records(&mut kmsg, &mut record, ANALYZE_PREFIX, line.as_bytes());
    }
    for command in commands {
        let Some(output) = run(command) else { continue };
        let header = format!("$ {}", command.join(" "));
        write_records(&mut kmsg, &mut record, ANALYZE_PREFIX, header.as_bytes());
        for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            write_records(&mut kmsg, &mut record, ANALYZE_PREFIX, line);
        }
    }
    record.clear();
    let _ = writeln!(record, "{SAMPLE_PREFIX}end samples={count}");
    kmsg.write(&record)
        .map_err(|e| format!("writing to /dev/kmsg: {e}"))?;
    Ok(())
}

/// Writes `text` behind `prefix` as kernel records, as many as it takes to stay within
/// [`KMSG_RECORD_MAX`] (split on character boundaries); returns how many were written.
fn write_records(kmsg: &mut File, record: &mut Vec<u8>, prefix: &str, text: &[u8]) -> usize {
    let mut written = 0;
    for chunk in record_chunks(text, KMSG_RECORD_MAX - prefix.len()) {
        record.clear();
        record.extend_from_slice(prefix.as_bytes());
        record.extend_from_slice(chunk);
        record.push(b'\n');
        // Best effort: a record the kernel refuses is one line missing from the console.
        if kmsg.write(record).is_ok() {
            written += 1;
        }
    }
    written
}

/// `text` in pieces of at most `max` bytes, never splitting a UTF-8 character (a byte that
/// continues one, `10xxxxxx`, does not start a piece). An empty text is one empty piece.
fn record_chunks(text: &[u8], max: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while cut > 1 && rest[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

/// `systemctl is-system-running --wait`: returns once systemd has no more start-up jobs
/// (state `running` or `degraded`); Err after [`BOOT_FINISH_TIMEOUT`]. Without systemctl there
/// is nothing to wait for.
fn wait_for_boot_finished() -> Result<(), ()> {
    let Ok(mut child) = Command::new("systemctl")
        .args(["is-system-running", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Ok(());
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if started.elapsed() < BOOT_FINISH_TIMEOUT => std::thread::sleep(CHILD_POLL),
            _ => {
                // Best effort: it may have exited meanwhile.
                let _ = child.kill();
                let _ = child.wait();
                return Err(());
            }
        }
    }
}

/// `command`'s standard output followed by its standard error, or None if it cannot be run
/// (not installed). Plain text: no colours, no pager, ASCII tree glyphs.
/// The kernel's profile (`/proc/profile`, there with `profile=N` on the command line).
const PROC_PROFILE: &str = "/proc/profile";
/// How many functions the dump names per stretch of the boot, the most sampled first.
const TOP_FUNCTIONS: usize = 30;

/// The snapshot of the profile this process takes at its start, beside the samples: one at the
/// initrd's start, one at the real root's.
fn profile_snapshot_path(samples: &Path, phase: &str) -> std::path::PathBuf {
    samples.with_file_name(format!("profile.{phase}"))
}

/// Copies /proc/profile beside the samples, named for the phase (`initrd` or `root`). Without
/// the profiler there is nothing to copy.
fn snapshot_profile(samples: &Path) {
    let Ok(profile) = std::fs::read(PROC_PROFILE) else {
        return;
    };
    let in_initrd = Path::new(INITRD_RELEASE).exists();
    let path = profile_snapshot_path(samples, if in_initrd { "initrd" } else { "root" });
    // Best effort: a full /run loses the figure, not the boot.
    let _ = std::fs::write(path, profile);
}

/// `/proc/profile` read as its counters: the shift (each counter covers 2^shift bytes of the
/// kernel's text from `_stext`) and the counters; the last one also takes every hit outside the
/// kernel's own text, modules among them (`profile_hit` in kernel/profile.c). The file starts
/// with the bytes per counter, `1 << prof_shift` (`read_profile`).
fn profile_counters(bytes: &[u8]) -> Option<(u32, Vec<u32>)> {
    let (step, counters) = bytes.split_first_chunk::<4>()?;
    let step = u32::from_ne_bytes(*step);
    if !step.is_power_of_two() {
        return None;
    }
    let counters = counters
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((step.trailing_zeros(), counters))
}

/// The kernel's text symbols from `/proc/kallsyms` as (address, name), sorted, with the address
/// of `_stext`.
fn text_symbols(kallsyms: &str) -> (Vec<(u64, String)>, Option<u64>) {
    let mut symbols: Vec<(u64, String)> = kallsyms
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            // Module symbols carry `[module]`: the profile lumps their time into one counter.
            (matches!(kind, "t" | "T") && fields.next().is_none())
                .then(|| (address, name.to_owned()))
        })
        .collect();
    symbols.sort();
    let stext = symbols
        .iter()
        .find(|(_, name)| name == "_stext")
        .map(|s| s.0);
    (symbols, stext)
}

/// The counters between two snapshots (`before` absent: since boot), summed per function: the
/// most sampled first, the last counter named `[modules and other text]`.
fn profile_by_function(
    before: Option<&[u32]>,
    after: &[u32],
    shift: u32,
    symbols: &[(u64, String)],
    stext: u64,
) -> Vec<(u64, String)> {
    let mut by_name: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let last = after.len().saturating_sub(1);
    for (index, &count) in after.iter().enumerate() {
        let count = u64::from(
            count.saturating_sub(before.and_then(|b| b.get(index).copied()).unwrap_or(0)),
        );
        if count == 0 {
            continue;
        }
        let name = if index == last {
            "[modules and other text]"
        } else {
            let address = stext + ((index as u64) << shift);
            match symbols.partition_point(|(a, _)| *a <= address) {
                0 => "[before _stext]",
                n => symbols[n - 1].1.as_str(),
            }
        };
        *by_name.entry(name).or_default() += count;
    }
    let mut out: Vec<(u64, String)> = by_name
        .into_iter()
        .map(|(name, count)| (count, name.to_owned()))
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out
}

/// A stretch of the boot: its name, the counters at its start (none: the boot's) and at its end.
type Stretch<'a> = (&'a str, Option<&'a [u32]>, Option<&'a [u32]>);

/// The profile's stretches of the boot, each its most sampled functions, as dump lines:
/// `before-initrd` (boot to the initrd's sampler), `initrd` (to the real root's sampler: the
/// initrd and the switch), `root` (to now).
fn profile_lines(samples: &Path) -> Vec<String> {
    let (Ok(now), Ok(kallsyms)) = (
        std::fs::read(PROC_PROFILE),
        std::fs::read_to_string("/proc/kallsyms"),
    ) else {
        return Vec::new();
    };
    let (symbols, Some(stext)) = text_symbols(&kallsyms) else {
        return vec!["profile: no _stext in /proc/kallsyms".to_owned()];
    };
    let read = |phase: &str| {
        std::fs::read(profile_snapshot_path(samples, phase))
            .ok()
            .and_then(|bytes| profile_counters(&bytes))
    };
    let Some((shift, now)) = profile_counters(&now) else {
        return Vec::new();
    };
    let (initrd, root) = (read("initrd"), read("root"));
    let stretches: [Stretch<'_>; 3] = [
        (
            "before-initrd",
            None,
            initrd.as_ref().map(|(_, c)| c.as_slice()),
        ),
        (
            "initrd",
            initrd.as_ref().map(|(_, c)| c.as_slice()),
            root.as_ref().map(|(_, c)| c.as_slice()),
        ),
        (
            "root",
            root.as_ref().map(|(_, c)| c.as_slice()),
            Some(now.as_slice()),
        ),
    ];
    let mut lines = Vec::new();
    for (name, before, after) in stretches {
        let Some(after) = after else { continue };
        let functions = profile_by_function(before, after, shift, &symbols, stext);
        let total: u64 = functions.iter().map(|(count, _)| count).sum();
        lines.push(format!("profile {name} total {total}"));
        for (count, function) in functions.into_iter().take(TOP_FUNCTIONS) {
            lines.push(format!("profile {name} {count} {function}"));
        }
    }
    lines
}

/// How many processes the dump names, the busiest first.
const TOP_PROCESSES: usize = 20;

/// Every process's CPU time (user and system, in ms), pid and name, the busiest first.
fn processes_by_cpu() -> Vec<(u64, u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u32, String)> = entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, ticks) = process_cpu_ticks(&stat)?;
            Some((ticks * 1000 / USER_HZ, pid, name))
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second (`USER_HZ`, `asm/param.h`).
const USER_HZ: u64 = 100;

/// A process's name and its user + system ticks from its `/proc/<pid>/stat` (fields 2, 14 and
/// 15 of proc_pid_stat(5); the name, in parentheses, may hold spaces and parentheses).
fn process_cpu_ticks(stat: &str) -> Option<(String, u64)> {
    let (_, rest) = stat.split_once(" (")?;
    let (name, after) = rest.rsplit_once(") ")?;
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((name.to_owned(), user + system))
}

fn run(command: &[&str]) -> Option<Vec<u8>> {
    let (program, args) = command.split_first()?;
    let output = Command::new(program)
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_UTF8", "0")
        .env("LANG", "C")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut text = output.stdout;
    if !text.ends_with(b"\n") && !text.is_empty() {
        text.push(b'\n');
    }
    text.extend_from_slice(&output.stderr);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stat() {
        let check = |stat: &str, expected: Option<(&str, u64)>| {
            assert_eq!(
                process_cpu_ticks(stat),
                expected.map(|(name, ticks)| (name.to_owned(), ticks)),
                "{stat}"
            )
        };
        check(
            "53 (kworker/u4:2-events_unbound) I 2 0 0 0 -1 69238880 0 0 0 0 3 41 0 0 20 0 1 0 9 0",
            Some(("kworker/u4:2-events_unbound", 44)),
        );
        check(
            "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0",
            Some(("a) b (c)", 30)),
        );
        check("7 (short) R 1", None);
        assert!(
            processes_by_cpu()
                .iter()
                .any(|(_, pid, _)| *pid == std::process::id()),
            "this very process is among them"
        );
    }

    #[test]
    fn kernel_profile() {
        let kallsyms = "ffffffff81000000 T _stext\nffffffff81000000 T startup_64\n\
ffffffff81000040 t clear_page\nffffffff81000080 T memcpy\nffffffff810000c0 d some_data\n\
ffffffffc0000000 t erofs_read_folio\t[erofs]\n";
        let (symbols, stext) = text_symbols(kallsyms);
        assert_eq!(stext, Some(0xffff_ffff_8100_0000));
        assert_eq!(
            symbols.len(),
            4,
            "data and module symbols left out: {symbols:?}"
        );
        let snapshot = |counts: &[u32]| {
            // 16 bytes per counter: a shift of 4.
            let mut bytes = 16u32.to_ne_bytes().to_vec();
            for c in counts {
                bytes.extend(c.to_ne_bytes());
            }
            bytes
        };
        // 16-byte buckets: 0-3 startup_64, 4-7 clear_page, 8-11 memcpy, the last the rest.
        let before = snapshot(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        let after = snapshot(&[1, 1, 0, 0, 5, 1, 0, 0, 3, 0, 0, 0, 7]);
        let (shift, before) = profile_counters(&before).unwrap();
        let (_, after) = profile_counters(&after).unwrap();
        assert_eq!(shift, 4);
        let by_function =
            profile_by_function(Some(&before), &after, shift, &symbols, stext.unwrap());
        let rendered: Vec<String> = by_function
            .iter()
            .map(|(count, name)| format!("{count} {name}"))
            .collect();
        assert_eq!(
            rendered,
            [
                "7 [modules and other text]",
                "4 clear_page",
                "3 memcpy",
                "1 startup_64"
            ]
        );
        assert_eq!(profile_counters(&[1, 2]), None);
        assert_eq!(
            profile_counters(&3u32.to_ne_bytes()),
            None,
            "not a power of two"
        );
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn check_cpu(stat: &str, expected: &str) {
        let mut line = Vec::new();
        write_cpu(&mut line, stat.as_bytes());
        assert_eq!(text(&line), expected, "{stat:?}");
    }

    #[test]
    fn the_cpu_total_line_is_copied() {
        check_cpu(
            "cpu  63716 0 15040 27219 267 0 220 364 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2 3\n",
            " cpu=63716,0,15040,27219,267,0,220,364,0,0",
        );
        // A buffer cut short keeps the first line whole.
        check_cpu(
            "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1",
            " cpu=1,2,3,4,5,6,7,8,9,10",
        );
        check_cpu("cpu0 1 2 3\n", "");
        check_cpu("", "");
    }

    fn check_meminfo(meminfo: &str, expected: &str) {
        let mut line = Vec::new();
        write_meminfo(&mut line, meminfo.as_bytes());
        assert_eq!(text(&line), expected, "{meminfo:?}");
    }

    #[test]
    fn meminfo_keys_are_picked_by_their_whole_name() {
        check_meminfo(
            "MemTotal:         496000 kB\nMemFree:          300000 kB\nMemAvailable:     400000 kB\n\
             Buffers:            1000 kB\nCached:            90000 kB\nSwapCached:            7 kB\n\
             Shmem:              2000 kB\n",
            " mem=496000,400000,300000,2000,90000",
        );
        // A key missing: the field is left out rather than half written.
        check_meminfo("MemTotal: 1 kB\nMemFree: 2 kB\n", "");
    }

    fn check_disks(diskstats: &str, disks: &[&str], expected: (u64, u64, u64)) {
        let mut known = Vec::new();
        let mut asked = Vec::new();
        let reads = disk_reads(diskstats.as_bytes(), &mut known, &mut |name| {
            asked.push(text(name));
            disks.iter().any(|d| d.as_bytes() == name)
        });
        assert_eq!(reads, expected, "{diskstats:?}");
        // The known names are remembered: a second pass asks /sys/block nothing.
        let before = asked.len();
        disk_reads(diskstats.as_bytes(), &mut known, &mut |_| {
            panic!("asked again")
        });
        assert!(asked.len() == before);
        for name in &asked {
            assert!(!NOT_A_DISK.iter().any(|p| name.as_bytes().starts_with(p)));
        }
    }

    #[test]
    fn reads_are_summed_over_whole_disks() {
        let diskstats = "\
   7       0 loop0 5 0 10 1 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 1200 30 96000 850 10 0 80 5 0 900 860 0 0 0 0 0 0
 254       1 vda1 600 10 48000 400 5 0 40 2 0 450 420 0 0 0 0 0 0
 259       0 nvme0n1 100 0 8000 50 0 0 0 0 0 60 50 0 0 0 0 0 0
 253       0 dm-0 1100 0 90000 800 0 0 0 0 0 800 800 0 0 0 0 0 0
  11       0 sr0 3 0 24 1 0 0 0 0 0 1 1 0 0 0 0 0 0
";
        check_disks(
            diskstats,
            &["vda", "nvme0n1", "dm-0", "sr0", "loop0"],
            (1300, 104000, 900),
        );
        check_disks("", &[], (0, 0, 0));
        // Garbage and short lines count nothing and do not stop the sum.
        check_disks(
            "garbage\n 254 0 vda x 0 8 1\n 254 16 vdb 2 0 16 3\n",
            &["vda", "vdb"],
            (2, 16, 3),
        );
    }

    #[test]
    fn pressure_totals() {
        let io = b"some avg10=0.09 avg60=0.15 avg300=0.38 total=4489240\nfull avg10=0.00 avg60=0.00 avg300=0.09 total=1782126\n";
        assert_eq!(psi_total(io, b"some"), Some(4489240));
        assert_eq!(psi_total(io, b"full"), Some(1782126));
        assert_eq!(
            psi_total(
                b"some avg10=0.00 avg60=0.00 avg300=0.00 total=12\n",
                b"full"
            ),
            None
        );
        assert_eq!(psi_total(b"", b"some"), None);
    }

    #[test]
    fn long_output_is_split_on_character_boundaries() {
        assert_eq!(record_chunks(b"", 4), [b"".as_slice()]);
        assert_eq!(
            record_chunks(b"abcdefghij", 4),
            [&b"abcd"[..], b"efgh", b"ij"]
        );
        // "é" is two bytes: never cut between them.
        let e = "aaé".as_bytes();
        assert_eq!(record_chunks(e, 3), [&b"aa"[..], "é".as_bytes()]);
    }

    #[test]
    fn arguments() {
        let args = |line: &str| parse_args(&line.split(' ').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(
            args("record /run/x/samples"),
            Ok(Task::Record {
                file: "/run/x/samples".into(),
                interval_ms: DEFAULT_INTERVAL_MS
            })
        );
        assert_eq!(
            args("record f --interval-ms 100"),
            Ok(Task::Record {
                file: "f".into(),
                interval_ms: 100
            })
        );
        assert!(args("record f --interval-ms 0").is_err());
        assert_eq!(
            args("dump f"),
            Ok(Task::Dump {
                file: "f".into(),
                analyze: false
            })
        );
        assert_eq!(
            args("dump f --analyze"),
            Ok(Task::Dump {
                file: "f".into(),
                analyze: true
            })
        );
        assert!(args("dump f --analyse").is_err());
        assert!(args("dump").is_err());
    }

    /// A real sample of this machine: every field there (the host's kernel has PSI), the
    /// checksum right, the line short, and the sampler's own CPU time rising.
    #[test]
    fn a_sample_of_this_machine() {
        let sources = Sources::open();
        let mut buffers = Buffers::new();
        sample(&sources, &mut buffers);
        let first = text(&buffers.line);
        assert!(first.ends_with('\n'), "{first}");
        let (body, checksum) = first.trim_end().rsplit_once(" ck=").unwrap();
        assert_eq!(format!("{:08x}", fnv1a(body.as_bytes())), checksum);
        assert!(first.len() < 400, "{first}");
        let keys: Vec<&str> = body
            .split(' ')
            .map(|field| field.split_once('=').unwrap().0)
            .collect();
        let mut expected = vec!["v", "t", "initrd", "cpu", "mem", "disk"];
        if Path::new("/proc/pressure/io").exists() {
            expected.push("psi");
        }
        expected.push("self");
        assert_eq!(keys, expected, "{first}");
        assert!(first.starts_with("v=1 t="), "{first}");
        let cpu = body
            .split(' ')
            .find_map(|f| f.strip_prefix("cpu="))
            .unwrap();
        assert!(cpu.split(',').count() >= 8, "{first}");
    }
}
