//! `cargo xtask bench-storage-init`: boots a cell N times and reports where storage-init's time
//! goes, step by step, from the lines it logs (`storage-init: <step> (<elapsed> ms)`) and the
//! guest's printk clock. Medians with min-max; a benchmark, never a test assertion.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::cells::read_cells;
use crate::vm_test::{ARTIFACTS_DIR, Verdict, run_cell};

/// The milestone that says the image's init ran (fixtures/cells.toml).
const MARKER: &str = "marker";
/// Where the report goes.
const REPORT: &str = "target/bench/storage-init.md";

/// The phases of one boot, in guest milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Phases {
    /// Kernel start to "Run /init as init process".
    pub kernel: f64,
    /// "Run /init" to storage-init's first line, less the work that line reports: the exec
    /// and page-in of the binary.
    pub exec: f64,
    /// Each step: its name and the milliseconds since the previous line, less the module
    /// loads logged in between (those are in `modules`).
    pub steps: Vec<(String, f64)>,
    /// Every `loaded module` line's time since the line before it: the kernel's work in
    /// finit_module (relocation, signature check, the driver's init and probe).
    pub modules: f64,
    /// The same, module by module (file name without `.ko`), in load order.
    pub module_loads: Vec<(String, f64)>,
    /// storage-init's own work: its first instruction to the exec of init, less module
    /// loading and the wait for the boot device (the 80 ms budget). The search counts
    /// as a wait only when the device was not there at coldplug.
    pub own: f64,
    /// The CPU time storage-init reported at exec (user, system), in 10 ms ticks: how much of
    /// its time ran its own instructions, how much the kernel's work in its syscalls.
    pub cpu: Option<(f64, f64)>,
}

/// Step names, by the start of the logged text.
const STEP_NAMES: [(&str, &str); 13] = [
    ("mounted /proc", "api-mounts"),
    ("read config", "config"),
    ("loaded module", "module"),
    ("loaded ", "start-modules"),
    ("coldplug", "coldplug"),
    ("found bootfs", "find-bootfs"),
    ("mounted /dev/", "mount-boot"),
    ("mounted /boot/", "mount-image"),
    ("mounted overlay", "overlay"),
    ("moved /boot", "move-boot"),
    ("moved ", "move-api-mounts"),
    ("switched root", "switch-root"),
    ("exec ", "exec-init"),
];

/// Reads the phases from one console log.
pub fn phases(console: &str) -> Option<Phases> {
    let timestamp = |line: &str| -> Option<f64> {
        let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
        inner.trim().parse::<f64>().ok().map(|s| s * 1000.0)
    };
    let run_init = console
        .lines()
        .find(|l| l.contains("Run /init as init process"))
        .and_then(timestamp)?;
    let mut steps: Vec<(String, f64)> = Vec::new();
    let mut first_line: Option<(f64, f64)> = None;
    let mut previous = 0.0;
    let mut modules = 0.0;
    let mut module_loads = Vec::new();
    let mut waited = false;
    let mut cpu = None;
    for line in console.lines() {
        let Some(rest) = line.split("storage-init: ").nth(1) else {
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
            modules += elapsed - previous;
            let file = text.rsplit('/').next().unwrap_or(text);
            let module = file.strip_suffix(".ko").unwrap_or(file);
            module_loads.push((module.to_owned(), elapsed - previous));
        } else {
            if name == "find-bootfs" {
                waited = !text.ends_with(" at coldplug");
            }
            if name == "exec-init" {
                cpu = cpu_time(text);
            }
            steps.push((name.to_owned(), elapsed - previous));
        }
        previous = elapsed;
    }
    let (first_ts, first_elapsed) = first_line?;
    let step = |name: &str| {
        steps
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, ms)| *ms)
    };
    let total = steps.iter().map(|(_, ms)| ms).sum::<f64>();
    let wait = if waited { step("find-bootfs") } else { 0.0 };
    Some(Phases {
        kernel: run_init,
        exec: first_ts - run_init - first_elapsed,
        own: total - wait,
        modules,
        module_loads,
        steps,
        cpu,
    })
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

pub fn run(sh: &Shell, root: &Path, cell_name: &str, runs: usize) -> Result<()> {
    let cell = read_cells(root)?
        .into_iter()
        .find(|c| c.name == cell_name)
        .with_context(|| format!("no cell named {cell_name}"))?;
    crate::provision::ensure(sh)?;
    let accel = crate::accel::AccelChoice::from_env()?;
    let mut accel_used = String::new();
    let mut all = Vec::new();
    let mut last_milestones = Vec::new();
    for run in 1..=runs {
        let result = run_cell(sh, root, &cell, accel);
        accel_used.clone_from(&result.accel);
        if !matches!(result.verdict, Verdict::Passed) {
            bail!(
                "run {run}: {} did not pass: {:?}",
                cell.name,
                result.verdict
            );
        }
        // The content's marker: how long until the image's init had run.
        last_milestones.push(
            result
                .milestones
                .iter()
                .find(|m| m.name == MARKER)
                .and_then(|m| Some((m.name.clone(), m.guest_s? * 1000.0))),
        );
        let console = std::fs::read_to_string(
            root.join(ARTIFACTS_DIR)
                .join(&cell.name)
                .join("console.log"),
        )?;
        let phases = phases(&console).context("the console log has no storage-init steps")?;
        eprintln!(
            "bench-storage-init: run {run}/{runs}: own work {:.1} ms",
            phases.own
        );
        all.push(phases);
    }
    let mut report = render(&cell.name, &accel_used, &all);
    let ends: Vec<(String, f64)> = last_milestones.into_iter().flatten().collect();
    if let Some((name, _)) = ends.first() {
        let (median, min, max) = summary(ends.iter().map(|(_, ms)| *ms).collect());
        writeln!(
            report,
            "| kernel start to milestone `{name}` | {median:.1} | {min:.1}-{max:.1} |"
        )
        .expect("writing to a String");
    }
    print!("{report}");
    let path = root.join(REPORT);
    std::fs::create_dir_all(path.parent().unwrap_or(root))?;
    std::fs::write(&path, &report)?;
    eprintln!("report: {}", path.display());
    Ok(())
}

fn render(cell: &str, accel: &str, runs: &[Phases]) -> String {
    let caveat = if accel == "tcg" {
        ": CPU work such as module loading is far slower than on KVM or hardware"
    } else {
        ""
    };
    let mut out = format!(
        "# storage-init, step by step\n\nCell `{cell}`, {} boots, guest clock (printk), accelerator {accel}{caveat}.\n\n| phase | median ms | min-max ms |\n|---|---|---|\n",
        runs.len()
    );
    let mut row = |name: &str, values: Vec<f64>| {
        let (median, min, max) = summary(values);
        writeln!(out, "| {name} | {median:.1} | {min:.1}-{max:.1} |").expect("writing to a String");
    };
    row(
        "kernel start to Run /init",
        runs.iter().map(|p| p.kernel).collect(),
    );
    row(
        "exec of storage-init",
        runs.iter().map(|p| p.exec).collect(),
    );
    if let Some(first) = runs.first() {
        for (index, (name, _)) in first.steps.iter().enumerate() {
            row(
                name,
                runs.iter()
                    .filter_map(|p| p.steps.get(index).map(|(_, ms)| *ms))
                    .collect(),
            );
        }
    }
    row(
        "module loads (every `loaded module` line)",
        runs.iter().map(|p| p.modules).collect(),
    );
    if let Some(first) = runs.first() {
        for (module, _) in &first.module_loads {
            let values = runs
                .iter()
                .filter_map(|p| p.module_loads.iter().find(|(m, _)| m == module))
                .map(|(_, ms)| *ms)
                .collect();
            row(&format!("module {module}"), values);
        }
    }
    row(
        "own work (total less module loads and device wait)",
        runs.iter().map(|p| p.own).collect(),
    );
    let cpu: Vec<(f64, f64)> = runs.iter().filter_map(|p| p.cpu).collect();
    if !cpu.is_empty() {
        row(
            "CPU in user space (storage-init's instructions; 10 ms ticks)",
            cpu.iter().map(|(user, _)| *user).collect(),
        );
        row(
            "CPU in the kernel for storage-init (syscalls, module loads included)",
            cpu.iter().map(|(_, system)| *system).collect(),
        );
    }
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
        let p = phases(CONSOLE).unwrap();
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
        let late = phases(&late).unwrap();
        assert!(
            (late.own - (872.0 - p.modules - 11.0)).abs() < 1e-6,
            "{}",
            late.own
        );
        assert_eq!(p.cpu, Some((20.0, 810.0)));
        assert_eq!(phases("no storage-init here"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(summary(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
