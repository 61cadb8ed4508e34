//! `cargo xtask vm-test`: boots the cells of fixtures/cells.toml and prints a result table.
//! The VM tests of `cargo xtask test` run the same cells through [`run_cell`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::Shell;

use crate::cells::{Cell, CellEnd, Flow, read_cells};
use crate::fixtures::{self, Fetched};
use crate::images;

/// Where every cell's artefacts go: `target/vm-test/<cell>/`.
pub const ARTIFACTS_DIR: &str = "target/vm-test";
/// Guest memory: enough for the kernel and a busybox overlay.
const MEMORY_MIB: u32 = 1024;
/// After the last milestone, how long the guest may take to power off.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);

/// How one cell ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    /// The guest did not do what the cell expects.
    Failed {
        reason: String,
    },
    /// The harness or host broke; says nothing about the guest.
    Error {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    pub cell: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub milestones: Vec<testvm::run::MilestoneReached>,
    /// The package versions actually used (a fallback shows `pinned: false`).
    pub fixtures: Vec<Fetched>,
    /// `kvm` or `tcg`; empty if the cell failed before its VM was set up.
    pub accel: String,
    /// Console lines the severity scan reports without failing the cell (kernel warnings,
    /// storage-init warnings).
    pub warnings: Vec<String>,
    pub artifacts: PathBuf,
}

/// Command-line options of `cargo xtask vm-test`.
#[derive(Debug, Default)]
pub struct Options {
    /// Which cells.
    pub filter: crate::cells::CellFilter,
    pub list: bool,
    pub accel: crate::accel::AccelChoice,
}

pub fn run(sh: &Shell, root: &Path, options: &Options) -> Result<()> {
    let cells: Vec<Cell> = read_cells(root)?
        .into_iter()
        .filter(|c| options.filter.matches(c))
        .collect();
    if options.list {
        for cell in &cells {
            println!("{}", cell.name);
        }
        return Ok(());
    }
    if cells.is_empty() {
        bail!("no cell matches the filter");
    }
    crate::provision::ensure(sh)?;
    let mut results = Vec::new();
    for cell in &cells {
        eprintln!("vm-test: {} ...", cell.name);
        let result = run_cell(sh, root, cell, options.accel);
        eprintln!("vm-test: {} {}", cell.name, verdict_word(&result.verdict));
        results.push(result);
    }
    print_table(&results);
    let dir = root.join(ARTIFACTS_DIR);
    let summary = dir.join("summary.json");
    std::fs::write(&summary, serde_json::to_string_pretty(&results)?)?;
    std::fs::write(dir.join("summary.md"), crate::vm_report::markdown(&results))?;
    std::fs::write(dir.join("junit.xml"), crate::vm_report::junit(&results))?;
    println!(
        "artifacts: {}/<cell>/ (console.log, qemu.cmdline, timings.json); summary: {} (and summary.md, junit.xml)",
        ARTIFACTS_DIR,
        summary.display()
    );
    let bad = results
        .iter()
        .filter(|r| !matches!(r.verdict, Verdict::Passed))
        .count();
    if bad > 0 {
        bail!("{bad} of {} cells did not pass", results.len());
    }
    Ok(())
}

/// Looks a cell up by name and runs it (the VM tests' entry point).
pub fn run_named_cell(name: &str) -> Result<CellResult> {
    let root = project_root();
    let sh = Shell::new()?;
    let cell = read_cells(&root)?
        .into_iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no cell named {name} in {}", crate::cells::CELLS_TOML))?;
    crate::provision::ensure(&sh)?;
    let accel = crate::accel::AccelChoice::from_env()?;
    Ok(run_cell(&sh, &root, &cell, accel))
}

pub fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Builds a cell's artefacts, boots it and judges it. Never panics; every failure is a verdict.
pub fn run_cell(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    accel: crate::accel::AccelChoice,
) -> CellResult {
    let artifacts = root.join(ARTIFACTS_DIR).join(&cell.name);
    let mut result = CellResult {
        cell: cell.name.clone(),
        verdict: Verdict::Passed,
        milestones: Vec::new(),
        fixtures: Vec::new(),
        accel: String::new(),
        warnings: Vec::new(),
        artifacts: artifacts.clone(),
    };
    match boot_cell(sh, root, cell, accel, &artifacts, &mut result) {
        Ok(()) => {}
        Err(CellError::Guest(reason)) => result.verdict = Verdict::Failed { reason },
        Err(CellError::Infra(error)) => {
            result.verdict = Verdict::Error {
                reason: format!("{error:#}"),
            }
        }
    }
    // Best effort: the verdict is already in hand; a missing result.json only loses a copy.
    let _ = std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&result).unwrap_or_default(),
    );
    result
}

enum CellError {
    Guest(String),
    Infra(anyhow::Error),
}

impl From<anyhow::Error> for CellError {
    fn from(error: anyhow::Error) -> CellError {
        CellError::Infra(error)
    }
}

fn boot_cell(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    accel: crate::accel::AccelChoice,
    artifacts: &Path,
    result: &mut CellResult,
) -> Result<(), CellError> {
    let kernels = fixtures::read_kernels(root)?;
    let pin = kernels
        .kernel
        .iter()
        .find(|k| k.id == cell.kernel)
        .with_context(|| {
            format!(
                "cell {}: no kernel {} in {}",
                cell.name,
                cell.kernel,
                fixtures::KERNELS_TOML
            )
        })?;
    let kernel = fixtures::fetch_kernel(sh, pin)?;
    result.fixtures.push(kernel.fetched.clone());
    let packages = fixtures::read_packages(root)?;
    let busybox_id = format!("busybox-static-{}", cell.machine.debian_arch());
    let busybox_pin = packages
        .package
        .iter()
        .find(|p| p.id == busybox_id)
        .with_context(|| format!("no {busybox_id} in {}", fixtures::PACKAGES_TOML))?;
    let busybox = fixtures::fetch_deb(sh, busybox_pin, false)?;
    result.fixtures.push(busybox.clone());

    let storage_init = crate::static_build::build_for_arch(sh, root, cell.machine.arch())?;
    let built = images::build_busybox_cell(
        &storage_init,
        &kernel,
        &busybox,
        cell.layout(),
        &artifacts.join("build"),
    )?;
    if cell.flow == Flow::PrepareOnly {
        images::add_service_stand_in(&built.mini_initramfs, &storage_init, &busybox)?;
    }

    let nonce = nonce();
    let cmdline = format!(
        "console={} panic=-1 {}={nonce} {}",
        cell.machine.board().console(),
        images::MARKER_PARAM,
        cell.cmdline
    );
    let boot_disk = testvm::machine::Disk {
        path: built.disk.clone(),
        bus: cell.bus.disk_bus(),
        serial: "boot0".to_owned(),
        // QEMU refuses a read-only drive as an SD card; the disk is rebuilt for every run.
        read_only: cell.bus != crate::cells::Bus::Sd,
    };
    let board = cell.machine.board();
    let accel = crate::accel::resolve(accel, board, &kernel.vmlinuz, &root.join(ARTIFACTS_DIR));
    result.accel = accel.name().to_owned();
    let dtb = images::board_dtb(cell.machine, &kernel, &artifacts.join("build"))?;
    let machine = testvm::machine::Machine {
        board,
        accel,
        // A board that models real hardware takes only its own RAM size and CPU count.
        memory_mib: board.fixed_memory_mib().unwrap_or(MEMORY_MIB),
        cpus: board.fixed_cpus().unwrap_or(cell.cpus),
        kernel: kernel.vmlinuz.clone(),
        initrd: Some(built.mini_initramfs.clone()),
        dtb,
        cmdline: cmdline.trim().to_owned(),
        disks: if cell.hotplug.is_some() {
            Vec::new()
        } else {
            vec![boot_disk.clone()]
        },
        hotplug_ports: u32::from(cell.hotplug.is_some()),
        empty_cdroms: u32::from(cell.empty_cdrom),
    };
    let spec = testvm::run::BootSpec {
        milestones: cell.milestones(&nonce)?,
        fatal: cell.fatal()?,
        end: match cell.end {
            CellEnd::PowerOff => testvm::run::End::GuestPowersOff {
                timeout: POWER_OFF_TIMEOUT,
            },
            CellEnd::Quit => testvm::run::End::Quit,
        },
        hotplug: cell
            .hotplug
            .iter()
            .map(|h| testvm::run::Hotplug {
                after: h.after.clone(),
                delay: Duration::from_secs(h.delay),
                disk: boot_disk.clone(),
                port: 0,
            })
            .collect(),
    };
    let mut progress = |event: &testvm::run::Event| match event {
        testvm::run::Event::QemuStarted { pid } => {
            eprintln!("vm-test: {}: QEMU started (pid {pid})", cell.name)
        }
        testvm::run::Event::Milestone(m) => eprintln!(
            "vm-test: {}: {} at {} ms host{}",
            cell.name,
            m.name,
            m.host_ms,
            m.guest_s
                .map_or(String::new(), |s| format!(", {s:.3} s guest"))
        ),
        testvm::run::Event::Finished { .. } => {}
    };
    let outcome = testvm::run::boot_with_events(&machine, &spec, artifacts, &mut progress);
    // A host that cannot run the guest is the harness's problem, whatever the guest showed.
    let stderr = std::fs::read_to_string(artifacts.join("qemu.stderr")).unwrap_or_default();
    if let Some(problem) = crate::verdict::host_problem(&stderr) {
        return Err(CellError::Infra(anyhow::anyhow!(problem)));
    }
    match outcome {
        Ok(report) => {
            result.milestones = report.milestones;
            // The whole log, not only what raced the milestones.
            let console =
                std::fs::read_to_string(artifacts.join(testvm::run::artifact::CONSOLE_LOG))
                    .unwrap_or_default();
            let expected: Vec<regex::Regex> =
                spec.milestones.iter().map(|m| m.pattern.clone()).collect();
            let scan = crate::verdict::scan_console(&console, &expected);
            result.warnings = scan.warnings;
            if let Some(line) = scan.fatal.first() {
                return Err(CellError::Guest(format!(
                    "console: {line} ({} fatal line{} in console.log)",
                    scan.fatal.len(),
                    if scan.fatal.len() == 1 { "" } else { "s" }
                )));
            }
            match cell.console.iter().find_map(|c| c.violation(&console)) {
                Some(violation) => Err(CellError::Guest(violation)),
                None => Ok(()),
            }
        }
        Err(testvm::run::VmError::Guest(failure)) => {
            result.milestones = reached_before_failure(artifacts);
            Err(CellError::Guest(format!(
                "{failure}\n{}",
                failure.console_tail
            )))
        }
        Err(testvm::run::VmError::Infra(error)) => Err(CellError::Infra(anyhow::Error::new(error))),
    }
}

/// The milestones a failed boot did reach, from its timings.json (empty when unreadable).
fn reached_before_failure(artifacts: &Path) -> Vec<testvm::run::MilestoneReached> {
    std::fs::read_to_string(artifacts.join(testvm::run::artifact::TIMINGS_JSON))
        .ok()
        .and_then(|text| serde_json::from_str::<testvm::run::Timings>(&text).ok())
        .map(|timings| timings.milestones)
        .unwrap_or_default()
}

/// A marker unique to this boot, so an old console log can never satisfy the milestone.
fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

fn verdict_word(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Passed => "passed".to_owned(),
        Verdict::Failed { reason } => format!("FAILED: {reason}"),
        Verdict::Error { reason } => format!("ERROR (harness): {reason}"),
    }
}

/// One row per cell: the verdict, then each milestone with its guest time in seconds.
fn print_table(results: &[CellResult]) {
    let width = results
        .iter()
        .map(|r| r.cell.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!();
    println!(
        "{:width$}  {:7}  {:5}  milestones (guest s since kernel start)",
        "cell", "result", "accel"
    );
    for result in results {
        let word = match result.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed { .. } => "FAILED",
            Verdict::Error { .. } => "ERROR",
        };
        let milestones: Vec<String> = result
            .milestones
            .iter()
            .map(|m| match m.guest_s {
                Some(s) => format!("{} {s:.3}", m.name),
                None => format!("{} ?", m.name),
            })
            .collect();
        println!(
            "{:width$}  {word:7}  {:5}  {}",
            result.cell,
            result.accel,
            milestones.join(" | ")
        );
        if let Verdict::Failed { reason } | Verdict::Error { reason } = &result.verdict {
            println!(
                "{:width$}  {:7}  {:5}  {}",
                "",
                "",
                "",
                reason.lines().next().unwrap_or("")
            );
        }
        for warning in &result.warnings {
            println!("{:width$}  {:7}  {:5}  warning: {warning}", "", "", "");
        }
    }
    println!();
}
