//! `cargo xtask bench-storage-init`: boots a cell N times and reports where storage-init's time
//! goes, step by step, from the lines it logs (`storage-init: <step> (<elapsed> ms)`) and the
//! guest's printk clock. Medians with min-max; a benchmark, never a test assertion.
//!
//! Where the cell has a `<cell>-floor` sibling, each run also boots that: the same disk and
//! mini initramfs with `syscall-floor` (storage-init/examples/syscall_floor.rs) as /init, which
//! makes the same mounts, moves and switch-root with none of storage-init's decisions and logs
//! the same steps. The report sets the two side by side: the floor is the kernel's share of
//! each step (under TCG mostly the first translation of the kernel code a syscall runs), the
//! difference is storage-init's.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::cells::read_cells;
use crate::vm_test::{ARTIFACTS_DIR, Verdict, run_cell};

/// The milestone that says the image's init ran (fixtures/cells.toml).
const MARKER: &str = "marker";
/// A cell's floor: the cell of this name suffix, if fixtures/cells.toml has one.
const FLOOR_SUFFIX: &str = "-floor";

/// The PID 1 programs whose step lines the benchmark reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    StorageInit,
    SyscallFloor,
}

impl Program {
    /// Its name in the report.
    fn label(self) -> &'static str {
        match self {
            Program::StorageInit => "storage-init",
            Program::SyscallFloor => "syscall floor",
        }
    }

    /// What each of its log lines starts with.
    fn prefix(self) -> &'static str {
        match self {
            Program::StorageInit => "storage-init: ",
            Program::SyscallFloor => "syscall-floor: ",
        }
    }
}
/// Boots of one run that may fail before the benchmark gives up (a failed boot's console
/// cannot be measured, so it is booted again).
const RETRIES: u32 = 2;
/// Where the report goes.
const REPORT: &str = "target/bench/storage-init.md";
/// Where every boot's console log is kept, as `<cell>-run<k>.log`.
const CONSOLES: &str = "target/bench/storage-init";

/// The phases of one boot, in guest milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Phases {
    /// Kernel start to "Run /init as init process".
    pub kernel: f64,
    /// "Run /init" to storage-init's first line, less the work that line reports: the exec
    /// and page-in of the binary.
    pub exec: f64,
    /// Each step: its name and the milliseconds since the previous step's line, less the time
    /// module loads were under way in between (that is in `modules`).
    pub steps: Vec<(String, f64)>,
    /// The time some module load was under way: the union of the `loaded module` lines'
    /// finit_module intervals (each line ends one and says how long the kernel took: its
    /// relocation, signature check, the driver's init and probe). For a line without that
    /// duration, its time since the line before it.
    pub modules: f64,
    /// Each module's own time (file name without `.ko`), in load order.
    pub module_loads: Vec<(String, f64)>,
    /// storage-init's own work: its first instruction to the exec of init, less module
    /// loading and the wait for the boot device (an 80 ms budget). The search counts
    /// as a wait only when the device was not there at coldplug. For the floor: less its
    /// `untimed` step (config, modules, device search).
    pub own: f64,
    /// The CPU time storage-init reported at exec (user, system), in 10 ms ticks: how much of
    /// its time ran its own instructions, how much the kernel's work in its syscalls.
    pub cpu: Option<(f64, f64)>,
}

/// Step names, by the start of the logged text (storage-init's and the floor's, which logs the
/// same texts for the same syscalls).
const STEP_NAMES: [(&str, &str); 17] = [
    ("untimed:", UNTIMED),
    ("read the first block of", "check-image"),
    ("detached the image", "detach-layers"),
    ("mounted /proc", "api-mounts"),
    ("read config", "config"),
    ("loaded module", "module"),
    ("loaded ", "start-modules"),
    ("coldplug", "coldplug"),
    ("found bootfs", "find-bootfs"),
    ("mounted /dev/", "mount-boot"),
    ("mounted /boot/", "mount-image"),
    // Probing the image's first block and checking its identity: the line says it is not
    // verified (a verified image's checks are part of mount-image).
    ("/boot/", "check-image"),
    ("mounted overlay", "overlay"),
    ("moved /boot", "move-boot"),
    ("moved ", "move-api-mounts"),
    ("switched root", "switch-root"),
    ("exec ", "exec-init"),
];

/// The floor's step that is neither timed by storage-init's rules nor the floor's business.
const UNTIMED: &str = "untimed";

/// Reads the phases of `program`'s boot from one console log.
pub fn phases(console: &str, program: Program) -> Option<Phases> {
    let timestamp = |line: &str| -> Option<f64> {
        let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
        inner.trim().parse::<f64>().ok().map(|s| s * 1000.0)
    };
    let run_init = console
        .lines()
        .find(|l| l.contains("Run /init as init process"))
        .and_then(timestamp)?;
    // Every step line: its name, text and elapsed time; a module line also its interval.
    let mut lines: Vec<(&str, &str, f64)> = Vec::new();
    let mut intervals: Vec<(f64, f64)> = Vec::new();
    let mut module_loads = Vec::new();
    let mut first_line: Option<(f64, f64)> = None;
    for line in console.lines() {
        let Some(rest) = line.split(program.prefix()).nth(1) else {
            continue;
        };
        let Some((text, elapsed)) = rest.rsplit_once(" (") else {
            continue;
        };
        let Some(elapsed) = elapsed
            .strip_suffix(" ms)")
            .and_then(|e| e.parse::<f64>().ok())
        else {
            continue;
        };
        let name = STEP_NAMES
            .iter()
            .find(|(prefix, _)| text.starts_with(prefix))
            .map_or(text, |(_, name)| name);
        first_line.get_or_insert((timestamp(line)?, elapsed));
        if name == "module" {
            let previous = lines.last().map_or(0.0, |(_, _, at)| *at);
            let (path, took) = match text.rsplit_once(" in ") {
                Some((path, took)) => (
                    path,
                    took.strip_suffix(" ms").and_then(|t| t.parse::<f64>().ok()),
                ),
                None => (text, None),
            };
            let took = took.unwrap_or(elapsed - previous);
            intervals.push((elapsed - took, elapsed));
            let file = path.rsplit('/').next().unwrap_or(path);
            let module = file.strip_suffix(".ko").unwrap_or(file);
            module_loads.push((module.to_owned(), took));
        }
        lines.push((name, text, elapsed));
    }
    let (first_ts, first_elapsed) = first_line?;
    let intervals = union(intervals);
    let busy = |from: f64, to: f64| -> f64 {
        intervals
            .iter()
            .map(|&(start, end)| (end.min(to) - start.max(from)).max(0.0))
            .sum()
    };
    let mut steps: Vec<(String, f64)> = Vec::new();
    let mut waited = false;
    let mut cpu = None;
    let mut previous = 0.0;
    for &(name, text, elapsed) in lines.iter().filter(|(name, _, _)| *name != "module") {
        if name == "find-bootfs" {
            waited = !text.ends_with(" at coldplug");
        }
        if name == "exec-init" {
            cpu = cpu_time(text);
        }
        steps.push((
            name.to_owned(),
            elapsed - previous - busy(previous, elapsed),
        ));
        previous = elapsed;
    }
    let step = |name: &str| {
        steps
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, ms)| *ms)
    };
    let total = steps.iter().map(|(_, ms)| ms).sum::<f64>();
    let wait = if waited { step("find-bootfs") } else { 0.0 } + step(UNTIMED);
    Some(Phases {
        kernel: run_init,
        exec: first_ts - run_init - first_elapsed,
        own: total - wait,
        modules: busy(f64::MIN, f64::MAX),
        module_loads,
        steps,
        cpu,
    })
}

/// The union of `intervals` (start, end), as disjoint intervals in order.
fn union(mut intervals: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// `exec /init; cpu user U ms, system S ms`: (U, S).
fn cpu_time(text: &str) -> Option<(f64, f64)> {
    let (_, cpu) = text.split_once("; cpu user ")?;
    let (user, system) = cpu.split_once(" ms, system ")?;
    Some((
        user.parse().ok()?,
        system.strip_suffix(" ms")?.parse().ok()?,
    ))
}

/// One program's boots in a bench run.
struct Series {
    cell: String,
    program: Program,
    phases: Vec<Phases>,
    /// Kernel start to the content's marker, ms.
    ends: Vec<f64>,
}

pub fn run(
    sh: &Shell,
    root: &Path,
    cell_name: &str,
    runs: usize,
    icount: Option<u8>,
) -> Result<()> {
    let cells = read_cells(root)?;
    let find = |name: &str| cells.iter().find(|c| c.name == name);
    let cell = find(cell_name).with_context(|| format!("no cell named {cell_name}"))?;
    let mut subjects = vec![(cell, Program::StorageInit)];
    match find(&format!("{cell_name}{FLOOR_SUFFIX}")) {
        Some(floor) => subjects.push((floor, Program::SyscallFloor)),
        None => eprintln!(
            "bench-storage-init: no cell {cell_name}{FLOOR_SUFFIX}: storage-init alone, without the syscall floor"
        ),
    }
    crate::provision::ensure(sh)?;
    let mut shared = crate::vm_test::RunShared::new(crate::accel::AccelChoice::from_env()?);
    if let Some(shift) = icount {
        // Instructions are counted by TCG alone.
        if shared.accel != crate::accel::AccelChoice::Tcg {
            eprintln!("bench-storage-init: --icount {shift}: booting under TCG");
        }
        shared.accel = crate::accel::AccelChoice::Tcg;
        shared.icount = Some(testvm::machine::Icount { shift });
    }
    let mut accel_used = String::new();
    let mut series: Vec<Series> = subjects
        .iter()
        .map(|(cell, program)| Series {
            cell: cell.name.clone(),
            program: *program,
            phases: Vec::new(),
            ends: Vec::new(),
        })
        .collect();
    // Interleaved, so a host that gets busier part-way slows both alike.
    for run in 1..=runs {
        for ((cell, program), series) in subjects.iter().zip(&mut series) {
            let mut attempt = 1;
            let result = loop {
                let result = run_cell(sh, root, cell, &shared);
                match result.verdict {
                    Verdict::Passed => break result,
                    // A guest failure in a cell that passes otherwise is most often the
                    // console racing the power-off on a loaded host: boot it again, saying so.
                    Verdict::Failed { ref reason } if attempt <= RETRIES => eprintln!(
                        "bench-storage-init: run {run}: {} failed (attempt {attempt}), booting it again: {}",
                        cell.name,
                        reason.lines().next().unwrap_or_default()
                    ),
                    _ => bail!(
                        "run {run}: {} did not pass: {:?}",
                        cell.name,
                        result.verdict
                    ),
                }
                attempt += 1;
            };
            accel_used.clone_from(&result.accel);
            // The content's marker: how long until the image's init had run.
            series.ends.extend(
                result
                    .milestones
                    .iter()
                    .find(|m| m.name == MARKER)
                    .and_then(|m| m.guest_s)
                    .map(|s| s * 1000.0),
            );
            let console = std::fs::read_to_string(
                root.join(ARTIFACTS_DIR)
                    .join(&cell.name)
                    .join("console.log"),
            )?;
            // Each boot's log is kept: the cell's artefacts are those of its last boot only.
            let kept = root
                .join(CONSOLES)
                .join(format!("{}-run{run}.log", cell.name));
            std::fs::create_dir_all(root.join(CONSOLES))?;
            std::fs::write(&kept, &console)
                .with_context(|| format!("writing {}", kept.display()))?;
            let phases = phases(&console, *program).with_context(|| {
                format!(
                    "the console log of {} has no {} steps",
                    cell.name,
                    program.label()
                )
            })?;
            eprintln!(
                "bench-storage-init: run {run}/{runs}: {}: own work {:.1} ms",
                cell.name, phases.own
            );
            series.phases.push(phases);
        }
    }
    if let Some(shift) = icount {
        accel_used.push_str(&format!(" (-icount shift={shift})"));
    }
    let report = render(&accel_used, &series);
    print!("{report}");
    let path = root.join(REPORT);
    std::fs::create_dir_all(path.parent().unwrap_or(root))?;
    std::fs::write(&path, &report)?;
    eprintln!(
        "report: {} (each boot's console log in {CONSOLES})",
        path.display()
    );
    Ok(())
}

/// The report: a row per phase, a column per program and, beside the floor, storage-init's
/// difference from it.
fn render(accel: &str, series: &[Series]) -> String {
    let caveat = if accel.contains("icount") {
        ": the guest's clock counts its instructions, so neither QEMU's translation of new code nor the host's other load is in these figures"
    } else if accel == "tcg" {
        ": CPU work such as module loading is far slower than on KVM or hardware"
    } else {
        ""
    };
    let boots = series.first().map_or(0, |s| s.phases.len());
    let mut out = String::from("# storage-init, step by step\n\n");
    for s in series {
        writeln!(out, "- {}: cell `{}`", s.program.label(), s.cell).expect("writing to a String");
    }
    writeln!(
        out,
        "\n{boots} boots each, interleaved; guest clock (printk), accelerator {accel}{caveat}. Each cell: median (min-max) ms.{}\n",
        if series.len() > 1 {
            " The floor makes storage-init's syscalls without its decisions: its figures are the kernel's share, the last column storage-init's own."
        } else {
            ""
        }
    )
    .expect("writing to a String");
    let mut header = String::from("| phase |");
    let mut rule = String::from("|---|");
    for s in series {
        write!(header, " {} |", s.program.label()).expect("writing to a String");
        rule.push_str("--:|");
    }
    if series.len() > 1 {
        header.push_str(" difference (median) |");
        rule.push_str("--:|");
    }
    writeln!(out, "{header}\n{rule}").expect("writing to a String");

    let mut row = |name: &str, value: &dyn Fn(&Phases) -> Option<f64>, ends: bool| {
        let columns: Vec<Vec<f64>> = series
            .iter()
            .map(|s| {
                if ends {
                    s.ends.clone()
                } else {
                    s.phases.iter().filter_map(value).collect()
                }
            })
            .collect();
        let mut line = format!("| {name} |");
        let mut medians = Vec::new();
        for values in columns {
            if values.is_empty() {
                line.push_str(" - |");
                medians.push(None);
            } else {
                let (median, min, max) = summary(values);
                write!(line, " {median:.1} ({min:.1}-{max:.1}) |").expect("writing to a String");
                medians.push(Some(median));
            }
        }
        if let [first, second] = medians[..] {
            match (first, second) {
                (Some(a), Some(b)) => write!(line, " {:+.1} |", a - b),
                _ => write!(line, " - |"),
            }
            .expect("writing to a String");
        }
        writeln!(out, "{line}").expect("writing to a String");
    };
    row("kernel start to Run /init", &|p| Some(p.kernel), false);
    row("exec of the PID 1 program", &|p| Some(p.exec), false);
    // Steps by name, in storage-init's order, then any only the floor has.
    let mut names: Vec<&str> = Vec::new();
    for s in series {
        for p in &s.phases {
            for (name, _) in &p.steps {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
    }
    for name in names {
        row(
            name,
            &|p| p.steps.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms),
            false,
        );
    }
    row(
        "module loads (the kernel's finit_module time the `loaded module` lines give)",
        &|p| (!p.module_loads.is_empty()).then_some(p.modules),
        false,
    );
    let modules: Vec<String> = series
        .first()
        .and_then(|s| s.phases.first())
        .map(|p| p.module_loads.iter().map(|(m, _)| m.clone()).collect())
        .unwrap_or_default();
    for module in &modules {
        row(
            &format!("module {module}"),
            &|p| {
                p.module_loads
                    .iter()
                    .find(|(m, _)| m == module)
                    .map(|(_, ms)| *ms)
            },
            false,
        );
    }
    row(
        "**own work** (total less module loads, device wait and the floor's untimed step)",
        &|p| Some(p.own),
        false,
    );
    row(
        "CPU in user space (the program's instructions; 10 ms ticks)",
        &|p| p.cpu.map(|(user, _)| user),
        false,
    );
    row(
        "CPU in the kernel for it (syscalls, module loads included)",
        &|p| p.cpu.map(|(_, system)| system),
        false,
    );
    row("kernel start to milestone `marker`", &|_| None, true);
    out
}

/// Median, min and max (the median of an even count is the mean of the middle two).
fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 6.12
[    4.000000] Run /init as init process
[    4.150000] storage-init: mounted /proc, /sys, /dev, /run (20 ms)
[    4.160000] storage-init: read config: bootfs UUID=x (30 ms)
[    4.300000] storage-init: loaded module /lib/modules/k/a.ko (170 ms)
[    4.900000] storage-init: loaded module /lib/modules/k/b.ko (770 ms)
[    4.901000] storage-init: loaded 2 of 2 modules (771 ms)
[    4.910000] storage-init: loaded module /lib/modules/k/c.ko (780 ms)
[    4.920000] storage-init: coldplug: 3 devices without a driver; loaded c (790 ms)
[    4.931000] storage-init: found bootfs UUID=x on /dev/vda1 (ext4 UUID=x) at coldplug (801 ms)
[    4.951000] storage-init: mounted /dev/vda1 (ext4) read-only on /boot (821 ms)
[    4.971000] storage-init: mounted /boot/i.img (erofs, file-backed) on /run/initoverlayfs/lower (841 ms)
[    4.981000] storage-init: mounted overlay on /sysroot (851 ms)
[    4.986000] storage-init: moved /boot to /sysroot/boot (856 ms)
[    4.991000] storage-init: moved /proc, /sys, /dev, /run into the new root (861 ms)
[    5.001000] storage-init: switched root (871 ms)
[    5.002000] storage-init: exec /init; cpu user 20 ms, system 810 ms (872 ms)
";

    #[test]
    fn phases_from_a_console_log() {
        let p = phases(CONSOLE, Program::StorageInit).unwrap();
        assert_eq!(p.kernel, 4000.0);
        assert!((p.exec - 130.0).abs() < 1e-6, "{}", p.exec);
        let names: Vec<&str> = p.steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "api-mounts",
                "config",
                "start-modules",
                "coldplug",
                "find-bootfs",
                "mount-boot",
                "mount-image",
                "overlay",
                "move-boot",
                "move-api-mounts",
                "switch-root",
                "exec-init"
            ]
        );
        assert_eq!(p.modules, 140.0 + 600.0 + 9.0, "three module loads");
        assert_eq!(
            p.module_loads,
            [("a".into(), 140.0), ("b".into(), 600.0), ("c".into(), 9.0)]
        );
        assert_eq!(p.steps[2].1, 1.0, "the summary line, modules taken out");
        assert_eq!(p.steps[3].1, 10.0, "coldplug's walk, virtio_blk taken out");
        assert!(
            (p.own - (872.0 - p.modules)).abs() < 1e-6,
            "found at coldplug: no wait to take out: {}",
            p.own
        );
        let late = CONSOLE.replace(" at coldplug", " from a uevent");
        let late = phases(&late, Program::StorageInit).unwrap();
        assert!(
            (late.own - (872.0 - p.modules - 11.0)).abs() < 1e-6,
            "{}",
            late.own
        );
        assert_eq!(p.cpu, Some((20.0, 810.0)));
        assert_eq!(phases("no storage-init here", Program::StorageInit), None);
    }

    /// Lines that say how long each finit_module took: the time between lines that no load
    /// covers is storage-init's (reading the module list, walking sysfs), and loads on two
    /// CPUs overlap.
    #[test]
    fn module_lines_with_their_kernel_time() {
        let console = "\
[    4.000000] Run /init as init process
[    4.020000] storage-init: mounted /proc, /sys, /dev, /run (20 ms)
[    4.030000] storage-init: read config: bootfs UUID=x (30 ms)
[    4.140000] storage-init: loaded module /lib/modules/k/a.ko in 100.0 ms (140 ms)
[    4.200000] storage-init: loaded module /lib/modules/k/b.ko in 150.5 ms (200 ms)
[    4.201000] storage-init: loaded 2 of 2 modules (201 ms)
[    4.260000] storage-init: loaded module /lib/modules/k/c.ko in 50.0 ms (260 ms)
[    4.262000] storage-init: coldplug: 3 devices without a driver; loaded c (262 ms)
[    4.280000] storage-init: found bootfs UUID=x on /dev/vda1 (ext4 UUID=x) at coldplug (280 ms)
[    4.300000] storage-init: exec /init; cpu user 20 ms, system 810 ms (300 ms)
";
        let p = phases(console, Program::StorageInit).unwrap();
        assert_eq!(
            p.module_loads,
            [("a".into(), 100.0), ("b".into(), 150.5), ("c".into(), 50.0)]
        );
        assert_eq!(p.modules, 160.0 + 50.0, "a and b overlap: 40 to 200 ms");
        let steps: Vec<(&str, f64)> = p.steps.iter().map(|(n, ms)| (n.as_str(), *ms)).collect();
        assert_eq!(
            steps,
            [
                ("api-mounts", 20.0),
                ("config", 10.0),
                ("start-modules", 11.0),
                ("coldplug", 11.0),
                ("find-bootfs", 18.0),
                ("exec-init", 20.0)
            ]
        );
        assert_eq!(p.own, 300.0 - p.modules);
    }

    const FLOOR: &str = "\
[    4.000000] Run /init as init process
[    4.100000] syscall-floor: mounted /proc, /sys, /dev, /run (30 ms)
[    4.900000] syscall-floor: untimed: read the config, loaded the modules, found /dev/vda1 (830 ms)
[    4.940000] syscall-floor: mounted /dev/vda1 (ext4) read-only on /boot (870 ms)
[    4.950000] syscall-floor: read the first block of /boot/i.img (880 ms)
[    4.960000] syscall-floor: mounted /boot/i.img (erofs, file-backed) on /run/initoverlayfs/lower (890 ms)
[    4.980000] syscall-floor: mounted overlay on /sysroot (910 ms)
[    4.982000] syscall-floor: detached the image and upper-layer mounts (912 ms)
[    4.990000] syscall-floor: moved /boot to /sysroot/boot (920 ms)
[    4.995000] syscall-floor: moved /proc, /sys, /dev, /run into the new root (925 ms)
[    5.015000] syscall-floor: switched root (945 ms)
[    5.016000] syscall-floor: exec /init; cpu user 10 ms, system 700 ms (946 ms)
";

    #[test]
    fn the_floor_leaves_out_its_untimed_step() {
        let p = phases(FLOOR, Program::SyscallFloor).unwrap();
        let names: Vec<&str> = p.steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "api-mounts",
                UNTIMED,
                "mount-boot",
                "check-image",
                "mount-image",
                "overlay",
                "detach-layers",
                "move-boot",
                "move-api-mounts",
                "switch-root",
                "exec-init"
            ]
        );
        assert_eq!(p.own, 946.0 - 800.0, "the untimed 800 ms left out");
        assert_eq!(p.cpu, Some((10.0, 700.0)));
        assert!(p.module_loads.is_empty());
        // Each program reads its own lines only.
        assert_eq!(phases(FLOOR, Program::StorageInit), None);
        assert_eq!(phases(CONSOLE, Program::SyscallFloor), None);
    }

    #[test]
    fn the_report_sets_storage_init_beside_its_floor() {
        let series = |program, console, cell: &str| Series {
            cell: cell.to_owned(),
            program,
            phases: vec![phases(console, program).unwrap()],
            ends: vec![5500.0],
        };
        let report = render(
            "tcg",
            &[
                series(Program::StorageInit, CONSOLE, "quiet"),
                series(Program::SyscallFloor, FLOOR, "quiet-floor"),
            ],
        );
        let row = |name: &str| {
            report
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("no row {name} in\n{report}"))
                .to_owned()
        };
        assert!(report.contains("| phase | storage-init | syscall floor | difference (median) |"));
        // storage-init: 872 less 749 of module loads; the floor: 146.
        assert!(
            row("**own work** (total less module loads, device wait and the floor's untimed step)")
                .ends_with("| 123.0 (123.0-123.0) | 146.0 (146.0-146.0) | -23.0 |")
        );
        assert!(row("config").ends_with("| 10.0 (10.0-10.0) | - | - |"));
        assert!(row("check-image").ends_with("| - | 10.0 (10.0-10.0) | - |"));
        assert!(row("mount-boot").ends_with("| 20.0 (20.0-20.0) | 40.0 (40.0-40.0) | -20.0 |"));
        assert!(row("module a").ends_with("| 140.0 (140.0-140.0) | - | - |"));
        // Alone, no difference column.
        let alone = render("kvm", &[series(Program::StorageInit, CONSOLE, "quiet")]);
        assert!(alone.contains("| phase | storage-init |\n"), "{alone}");
        // Each clock says what its figures leave out.
        assert!(report.contains("accelerator tcg: CPU work such as module loading is far slower"));
        let counted = render(
            "tcg (-icount shift=1)",
            &[series(Program::StorageInit, CONSOLE, "quiet")],
        );
        assert!(
            counted.contains(
                "accelerator tcg (-icount shift=1): the guest's clock counts its instructions"
            ),
            "{counted}"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(summary(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
