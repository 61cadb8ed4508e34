//! `cargo xtask vm-test`: boots the cells of fixtures/cells.toml and prints a result table.
//! The VM tests of `cargo xtask test` run the same cells through [`run_cell`].

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::cells::{Cell, Firmware, Flow, read_cells};
use crate::fixtures::{self, Fetched};
use crate::images;
pub use crate::verdict::{CellResult, Verdict};

/// Where every cell's artefacts go: `target/vm-test/<cell>/`.
pub const ARTIFACTS_DIR: &str = "target/vm-test";

/// A `vm-test` run in which some cell did not pass: the error `main` turns into the exit
/// status (1 when only guests failed, 3 when the harness or host broke).
#[derive(Debug)]
pub struct MatrixFailed {
    pub failed: usize,
    pub errors: usize,
    pub cells: usize,
}

impl std::fmt::Display for MatrixFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} cells did not pass: {} failed in the guest, {} broke in the harness or host",
            self.failed + self.errors,
            self.cells,
            self.failed,
            self.errors
        )
    }
}

impl std::error::Error for MatrixFailed {}

/// Command-line options of `cargo xtask vm-test`.
#[derive(Debug, Default)]
pub struct Options {
    /// Which cells.
    pub filter: crate::cells::CellFilter,
    pub list: bool,
    pub accel: crate::accel::AccelChoice,
    /// Cells booted at once; None: as many as the machine's cores and memory hold.
    pub jobs: Option<usize>,
    /// Boots a failing cell may take again; a pass on a retry is reported as flaky.
    pub retries: u32,
    /// Rounds: every cell boots this many times, one round after the other (a cell never runs
    /// beside itself, so its artefacts directory is its own). 0 is read as 1.
    pub repeat: u32,
    /// Boot only the cells that failed (or broke) in the last run's summary.json, whatever
    /// their tier; the other filters still apply.
    pub rerun_failed: bool,
    /// Boot the one selected cell with its console on this terminal instead of judging it.
    pub shell: bool,
    /// A cell whose fixture cannot be fetched from here (an unreachable mirror) is an error of
    /// the run, not a skip: for runners that must reach every mirror.
    pub require_fixtures: bool,
}

/// Host memory a cell needs besides its guest's: QEMU itself, the image builds.
const HOST_OVERHEAD_MIB: u64 = 512;

/// How many cells to boot at once when `--jobs` is not given: one per host core (each TCG
/// vCPU is a host thread kept busy), within the memory the guests need.
fn default_jobs(cells: &[Cell]) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let vcpus = cells
        .iter()
        .map(|c| c.cpus as usize)
        .max()
        .unwrap_or(1)
        .max(1);
    let per_cell_mib = u64::from(crate::plan::MEMORY_MIB) + HOST_OVERHEAD_MIB;
    let by_memory = available_memory_mib().map_or(usize::MAX, |m| (m / per_cell_mib) as usize);
    (cores / vcpus).min(by_memory).max(1)
}

/// MemAvailable of /proc/meminfo, in MiB.
fn available_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

pub fn run(sh: &Shell, root: &Path, options: &Options) -> Result<()> {
    let failed_last = if options.rerun_failed {
        let summary = root.join(ARTIFACTS_DIR).join("summary.json");
        let json = std::fs::read_to_string(&summary).with_context(|| {
            format!(
                "--rerun-failed reads the last run's {}: run `cargo xtask vm-test` first",
                summary.display()
            )
        })?;
        let failed = crate::vm_report::failed_cells(&json)
            .with_context(|| format!("reading {}", summary.display()))?;
        if failed.is_empty() {
            println!(
                "vm-test: no cell failed in {}: nothing to rerun",
                summary.display()
            );
            return Ok(());
        }
        Some(failed)
    } else {
        None
    };
    let cells: Vec<Cell> = read_cells(root)?
        .into_iter()
        .filter(|c| options.filter.matches(c))
        .filter(|c| {
            failed_last
                .as_ref()
                .is_none_or(|names| names.contains(&c.name))
        })
        .collect();
    if options.shell {
        return match cells.as_slice() {
            [cell] => enter_shell(sh, root, cell, options),
            _ => bail!(
                "--shell enters one cell, and {} match{}: narrow --cell to one name (`--list` \
                 shows them)",
                cells.len(),
                if cells.len() == 1 { "es" } else { "" }
            ),
        };
    }
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
    // Built once up front: parallel cells would otherwise queue on cargo's lock, each.
    let mut arches: Vec<&str> = cells.iter().map(|c| c.machine.arch()).collect();
    arches.dedup();
    for arch in arches {
        crate::static_build::build_for_arch(sh, root, arch)?;
    }
    let jobs = options.jobs.unwrap_or_else(|| default_jobs(&cells));
    eprintln!(
        "vm-test: {} cells, {jobs} at a time{}",
        cells.len(),
        if options.retries > 0 {
            format!(
                ", up to {} retries each (a pass on a retry is reported as flaky)",
                options.retries
            )
        } else {
            String::new()
        }
    );
    let started = std::time::Instant::now();
    let rounds = options.repeat.max(1);
    let mut results = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            eprintln!("vm-test: round {round} of {rounds}");
        }
        let mut round_results = run_cells(root, &cells, options, jobs);
        if round < rounds {
            keep_failed_artifacts(&mut round_results, round);
        }
        results.extend(round_results);
    }
    let wall = started.elapsed();
    print_table(&results);
    let headline = crate::vm_report::headline(&results, wall);
    print!("{}", headline.replace("**", ""));
    let dir = root.join(ARTIFACTS_DIR);
    let summary = dir.join("summary.json");
    let summary_json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&summary, &summary_json)?;
    // The whole matrix with this run's results beside it (docs/matrix.md is the same table
    // without results).
    let matrix = crate::matrix_doc::render(
        &read_cells(root)?,
        Some(&crate::matrix_doc::parse_summary(
            crate::matrix_doc::LAST_SUMMARY,
            &summary_json,
        )?),
    );
    std::fs::write(dir.join("matrix.md"), matrix)?;
    let mut summary_md = format!("{headline}\n{}", crate::vm_report::markdown(&results));
    for pairing in &crate::vm_report::PAIRINGS {
        let Some(table) = crate::vm_report::side_by_side(&results, pairing) else {
            continue;
        };
        let what = if rounds > 1 {
            format!("medians of {rounds} boots, guest seconds since kernel start")
        } else {
            "guest seconds since kernel start".to_owned()
        };
        let title = pairing.title;
        println!("\n{title} ({what}):\n{table}");
        summary_md.push_str(&format!("\n{title} ({what}):\n\n{table}"));
    }
    std::fs::write(dir.join("summary.md"), summary_md)?;
    std::fs::write(dir.join("junit.xml"), crate::vm_report::junit(&results))?;
    println!(
        "artifacts: {}/<cell>/ (console.log, qemu.cmdline, qmp.log, timings.json, result.json); summary: {} (and summary.md, junit.xml, matrix.md)",
        ARTIFACTS_DIR,
        summary.display()
    );
    let count = |f: fn(&Verdict) -> bool| results.iter().filter(|r| f(&r.verdict)).count();
    let failed = count(|v| matches!(v, Verdict::Failed { .. }));
    let errors = count(|v| matches!(v, Verdict::Error { .. }));
    if failed + errors > 0 {
        return Err(MatrixFailed {
            failed,
            errors,
            cells: results.len(),
        }
        .into());
    }
    Ok(())
}

/// The next round boots the same cells into the same directories: a cell that did not pass
/// keeps this round's artefacts under `<cell>-round<N>`.
fn keep_failed_artifacts(results: &mut [CellResult], round: u32) {
    for result in results.iter_mut() {
        if matches!(result.verdict, Verdict::Passed | Verdict::Skipped { .. }) {
            continue;
        }
        if let Some(kept) = keep_artifacts(&result.artifacts, &format!("round{round}")) {
            result.artifacts = kept;
        }
    }
}

/// Moves a boot's artefacts to `<dir>-<suffix>`, so the next boot of the cell starts afresh
/// and this one's stay; returns where they went (None, with a message, if they could not).
fn keep_artifacts(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let mut kept = dir.to_path_buf().into_os_string();
    kept.push(format!("-{suffix}"));
    let kept = PathBuf::from(kept);
    let _ = std::fs::remove_dir_all(&kept);
    match std::fs::rename(dir, &kept) {
        Ok(()) => Some(kept),
        Err(error) => {
            eprintln!(
                "vm-test: cannot keep {} as {}: {error}",
                dir.display(),
                kept.display()
            );
            None
        }
    }
}

/// Boots `cells` on `jobs` worker threads, each taking the next cell in order; results come
/// back in the cells' order.
fn run_cells(root: &Path, cells: &[Cell], options: &Options, jobs: usize) -> Vec<CellResult> {
    let shared = RunShared::new(options.accel);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(cells.len()) {
            scope.spawn(|| {
                let sh = match Shell::new() {
                    Ok(sh) => sh,
                    Err(error) => {
                        eprintln!("vm-test: worker cannot start a shell: {error}");
                        return;
                    }
                };
                sh.change_dir(root);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(cell) = cells.get(i) else { break };
                    let mut result = run_with_retries(&sh, root, cell, options, &shared);
                    if options.require_fixtures
                        && let Verdict::Skipped { reason } = &result.verdict
                    {
                        result.verdict = Verdict::Error {
                            reason: format!("{reason} (--require-fixtures)"),
                        };
                    }
                    eprintln!(
                        "vm-test: [{}/{}] {} {}",
                        i + 1,
                        cells.len(),
                        cell.name,
                        verdict_word(&result.verdict)
                    );
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Boots `cell` up to `1 + retries` times until it passes; a pass after a failure is flaky.
fn run_with_retries(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    options: &Options,
    shared: &RunShared,
) -> CellResult {
    let mut first_failure: Option<String> = None;
    let mut earlier = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        eprintln!("vm-test: {} ... (attempt {attempts})", cell.name);
        let mut result = run_cell(sh, root, cell, shared);
        result.attempts = attempts;
        match &result.verdict {
            Verdict::Passed => {
                if let Some(reason) = first_failure {
                    result.verdict = Verdict::Flaky { reason };
                }
                result.earlier_attempts = earlier;
                return result;
            }
            Verdict::Failed { reason } | Verdict::Error { reason }
                if attempts <= options.retries =>
            {
                eprintln!(
                    "vm-test: {} attempt {attempts} did not pass ({}); retrying",
                    cell.name,
                    reason.lines().next().unwrap_or("")
                );
                first_failure.get_or_insert_with(|| reason.clone());
                earlier.extend(keep_artifacts(
                    &result.artifacts,
                    &format!("attempt{attempts}"),
                ));
            }
            _ => {
                result.earlier_attempts = earlier;
                return result;
            }
        }
    }
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
    let shared = RunShared::new(crate::accel::AccelChoice::from_env()?);
    Ok(run_cell(&sh, &root, &cell, &shared))
}

/// `vm-test --shell`: builds `cell` as its test boot would, but with a shell for
/// storage-init's emergency action ([`crate::plan::Purpose::Shell`]), under
/// `target/vm-test/<cell>-shell/`; returns the QEMU command line that puts the guest's console
/// and QEMU's monitor on the terminal.
pub fn shell_argv(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    accel: crate::accel::AccelChoice,
) -> Result<Vec<String>> {
    let artifacts = root
        .join(ARTIFACTS_DIR)
        .join(format!("{}-shell", cell.name));
    let _ = std::fs::remove_dir_all(&artifacts); // a previous shell's; absent is fine
    let mut result = CellResult::new(&cell.name, artifacts.clone());
    let nonce = nonce();
    let purpose = crate::plan::Purpose::Shell;
    let shared = RunShared::new(accel);
    let (built, accel) = match build_cell(
        sh,
        root,
        cell,
        &shared,
        &artifacts,
        &nonce,
        purpose,
        &mut result,
    ) {
        Ok(built) => built,
        Err(CellError::Infra(error)) => return Err(error),
        Err(CellError::Guest(reason) | CellError::Skipped(reason)) => bail!("{reason}"),
    };
    let plan = crate::plan::plan(cell, &built, accel, &nonce, purpose)?;
    Ok(plan.machine.qemu_args(&testvm::machine::Io::Interactive)?)
}

/// Runs [`shell_argv`]'s QEMU on this terminal until it exits.
fn enter_shell(sh: &Shell, root: &Path, cell: &Cell, options: &Options) -> Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        bail!("--shell gives the guest's console to a terminal, and stdin is not one");
    }
    crate::provision::ensure(sh)?;
    crate::static_build::build_for_arch(sh, root, cell.machine.arch())?;
    let argv = shell_argv(sh, root, cell, options.accel)?;
    eprintln!(
        "vm-test: {}: its console is this terminal (Ctrl-A X quits QEMU, Ctrl-A C toggles its \
         monitor). A FATAL line of storage-init ends in a shell ({}); dracut's systemd offers \
         its emergency shell when the second stage fails.\nvm-test: {}",
        cell.name,
        crate::plan::SHELL_EMERGENCY,
        argv.join(" ")
    );
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("starting {}", argv[0]))?;
    eprintln!("vm-test: QEMU exited ({status})");
    Ok(())
}

pub fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Builds a cell's artefacts, boots it and judges it. Never panics; every failure is a verdict.
pub fn run_cell(sh: &Shell, root: &Path, cell: &Cell, shared: &RunShared) -> CellResult {
    let artifacts = root.join(ARTIFACTS_DIR).join(&cell.name);
    let mut result = CellResult::new(&cell.name, artifacts.clone());
    match boot_cell(sh, root, cell, shared, &artifacts, &mut result) {
        Ok(()) => {}
        Err(CellError::Guest(reason)) => result.verdict = Verdict::Failed { reason },
        Err(CellError::Skipped(reason)) => result.verdict = Verdict::Skipped { reason },
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
    /// A fixture cannot be fetched from this machine.
    Skipped(String),
}

/// What the boots of one run share: the accelerator asked for, and the kernels found
/// unreachable so far, so the cells of one kernel (a whole row of the matrix) ask its mirror
/// once, not once each. Worker threads share it by reference.
#[derive(Debug, Default)]
pub struct RunShared {
    pub accel: crate::accel::AccelChoice,
    /// Every boot's guest clock from its instructions (`-icount`), as bench-storage-init asks.
    pub icount: Option<testvm::machine::Icount>,
    unreachable_kernels: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl RunShared {
    pub fn new(accel: crate::accel::AccelChoice) -> RunShared {
        RunShared {
            accel,
            ..RunShared::default()
        }
    }

    /// The cell's kernel; a kernel that cannot be fetched from here skips the cell.
    fn fetch_kernel(
        &self,
        sh: &Shell,
        pin: &fixtures::KernelPin,
    ) -> Result<fixtures::Kernel, CellError> {
        let unreachable = || {
            self.unreachable_kernels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if let Some(reason) = unreachable().get(&pin.id) {
            return Err(CellError::Skipped(reason.clone()));
        }
        match fixtures::fetch_kernel(sh, pin) {
            Ok(kernel) => Ok(kernel),
            Err(fixtures::FetchError::Unavailable(why)) => {
                let reason = format!("kernel {} cannot be fetched here: {why}", pin.id);
                unreachable().insert(pin.id.clone(), reason.clone());
                Err(CellError::Skipped(reason))
            }
            Err(fixtures::FetchError::Failed(error)) => Err(CellError::Infra(error)),
        }
    }
}

impl From<anyhow::Error> for CellError {
    fn from(error: anyhow::Error) -> CellError {
        CellError::Infra(error)
    }
}

/// One boot of a cell, layer by layer: build its artefacts, plan the machine, run it, judge
/// what it left.
fn boot_cell(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    shared: &RunShared,
    artifacts: &Path,
    result: &mut CellResult,
) -> Result<(), CellError> {
    let nonce = nonce();
    let purpose = crate::plan::Purpose::Test;
    let (built, accel) = build_cell(sh, root, cell, shared, artifacts, &nonce, purpose, result)?;
    result.accel = accel.name().to_owned();
    let mut plan = crate::plan::plan(cell, &built, accel, &nonce, purpose)?;
    plan.machine.icount = shared.icount;
    let mut progress = |event: &testvm::run::Event| match event {
        testvm::run::Event::QemuStarted { pid } => {
            eprintln!("vm-test: {}: QEMU started (pid {pid})", cell.name)
        }
        testvm::run::Event::Milestone(m) => eprintln!(
            "vm-test: {}: {} at {} ms host{}{}",
            cell.name,
            m.name,
            m.host_ms,
            m.guest_s
                .map_or(String::new(), |s| format!(", {s:.3} s guest")),
            // A cell's answers are test data (cells.toml), never secrets.
            m.sent.as_ref().map_or(String::new(), |text| format!(
                "; typed {text:?} and a newline"
            ))
        ),
        testvm::run::Event::Finished { .. } => {}
    };
    let outcome =
        testvm::run::boot_with_events(&plan.machine, &plan.spec, artifacts, &mut progress);
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
            let expected: Vec<regex::Regex> = plan
                .spec
                .milestones
                .iter()
                .map(|m| m.pattern.clone())
                .collect();
            let judged = crate::verdict::judge_console(&console, &expected, &plan.console_checks);
            result.warnings = judged.warnings;
            match judged.failure {
                Some(reason) => Err(CellError::Guest(reason)),
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

/// The build layer's part of a cell: fetches its fixtures (recorded in `result`) and makes
/// everything it boots from, under `artifacts/build`. Returns the artefacts and the
/// accelerator the kernel was found to run under.
#[allow(clippy::too_many_arguments)] // the boot's inputs, and where its record goes
fn build_cell(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    shared: &RunShared,
    artifacts: &Path,
    nonce: &str,
    purpose: crate::plan::Purpose,
    result: &mut CellResult,
) -> Result<(crate::plan::CellArtefacts, testvm::machine::Accel), CellError> {
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
    let kernel = shared.fetch_kernel(sh, pin)?;
    result.fixtures.push(kernel.fetched.clone());
    let busybox_id = format!("busybox-static-{}", cell.machine.debian_arch());
    let busybox = fetch_package(sh, root, &busybox_id, result)?;

    let build = artifacts.join("build");
    let uefi = match cell.firmware {
        Firmware::Direct => None,
        Firmware::Uefi => {
            let cmdline = crate::plan::cmdline(cell, nonce, purpose);
            Some(uefi_parts(sh, root, cell, &build, &cmdline, result)?)
        }
    };

    let storage_init =
        crate::static_build::build_binary_for_arch(sh, root, cell.machine.arch(), cell.pid1)?;
    let esp = uefi.as_ref().map(|(esp, _)| esp);
    let board = cell.machine.board();
    let accel = crate::accel::resolve(
        shared.accel,
        board,
        &kernel.vmlinuz,
        &root.join(ARTIFACTS_DIR),
    );
    // The real root's directory, and the partition image a LUKS2 or LVM root is made into.
    // The dogfood flow brings a root of its own (the kernel installed as a package).
    let real_root = if cell.real_root && cell.flow != Flow::Dogfood {
        let spec = images::root_spec(cell.boot_fs, cell.root_storage);
        let real_root = crate::debian_tree::real_root(sh, &kernel, &spec)?;
        let image = crate::root_storage::root_partition_image(
            cell.root_storage,
            &kernel,
            &busybox,
            board,
            accel,
            &real_root,
            images::boot_partition_mib(&real_root.root)?,
            cell.luks_passphrase.as_deref(),
        )?;
        Some((real_root.root, image))
    } else {
        None
    };
    let root_partition = real_root.as_ref().map(|(dir, image)| match image {
        None => images::RootPartition::Ext4(dir),
        Some(path) => images::RootPartition::Image {
            path,
            type_guid: cell.root_storage.partition_type(),
        },
    });
    let layout = images::Layout::of(cell);
    let busybox_binary = busybox.root.join("bin/busybox");
    let shell = (purpose == crate::plan::Purpose::Shell).then_some(busybox_binary.as_path());
    // What the machine boots: the initramfs the bootloader (or QEMU) loads, and the disk.
    let (initrd, disk) = match cell.flow {
        Flow::Busybox if cell.uki == Some(crate::cells::UkiKind::KernelInstall) => {
            let esp = esp.context("a kernel-install UKI boots through UEFI firmware")?;
            let kernel_install = crate::kernel_install::KernelInstall::fetch(sh, root)?;
            let builder = crate::dogfood::builder_binary(sh, root)?;
            images::build_kernel_install_uki_cell(
                sh,
                &kernel,
                &busybox,
                images::KernelInstallPrograms {
                    kernel_install: &kernel_install,
                    builder: &builder,
                    storage_init: &storage_init,
                },
                esp,
                layout,
                &build,
            )?
        }
        Flow::Busybox | Flow::PrepareOnly => {
            let built = images::build_busybox_cell(
                &storage_init,
                &kernel,
                &busybox,
                layout,
                esp,
                shell,
                &build,
            )?;
            if cell.flow == Flow::PrepareOnly {
                images::add_service_stand_in(&built.mini_initramfs, &storage_init, &busybox)?;
            }
            if let Some(module) = &cell.broken_module {
                images::break_module(&built.mini_initramfs, module)?;
            }
            (built.mini_initramfs, built.disk)
        }
        Flow::Dracut | Flow::DracutService => {
            let second_stage = crate::debian_tree::second_stage_initramfs(sh, &kernel)?;
            let pid1 = match cell.flow {
                Flow::DracutService => builder::systemd_initramfs::Pid1::Systemd,
                _ => builder::systemd_initramfs::Pid1::StorageInit,
            };
            let built = images::build_second_stage_cell(
                &storage_init,
                &kernel,
                &second_stage,
                pid1,
                root_partition,
                layout,
                esp,
                shell,
                &build,
            )?;
            if let Some(module) = &cell.broken_module {
                images::break_module(&built.mini_initramfs, module)?;
            }
            (built.mini_initramfs, built.disk)
        }
        Flow::DracutClassic => {
            let initramfs = crate::debian_tree::second_stage_initramfs(sh, &kernel)?;
            let disk = images::build_classic_cell(
                &kernel,
                &initramfs,
                root_partition,
                layout,
                esp,
                &build,
            )?;
            (initramfs, disk)
        }
        Flow::Dogfood => {
            let esp = esp.context("flow dogfood boots through UEFI firmware")?;
            let spec = images::root_spec(cell.boot_fs, cell.root_storage);
            let dogfood = crate::dogfood::dogfood_root(sh, &kernel, &spec)?;
            let (builder, debs, second_kernel);
            let programs = if cell.guest_driver == crate::cells::GuestDriver::Package {
                // The package as `cargo xtask dist` builds it, the same with a later version
                // (an upgrade), and a second kernel's .deb.
                let meta = crate::dist::Metadata::read(root)?;
                let epoch = crate::dist::source_date_epoch(sh, root)?;
                let arch = crate::dist::Arch::for_machine(&pin.arch)?;
                let binaries = crate::dist::build_binaries(sh, root, arch)?;
                let deb = crate::dist::build_deb(sh, root, &meta, epoch, &binaries, &build)?;
                let later = crate::dist::Metadata {
                    version: format!("{}+upgrade", meta.version),
                    ..meta
                };
                let upgrade_dir = build.join("upgrade");
                std::fs::create_dir_all(&upgrade_dir)
                    .with_context(|| format!("creating {}", upgrade_dir.display()))?;
                let upgrade =
                    crate::dist::build_deb(sh, root, &later, epoch, &binaries, &upgrade_dir)?;
                let second;
                (second, second_kernel) =
                    crate::dogfood::second_kernel_deb(sh, root, &pin.arch, &build.join("debs"))?;
                debs = [deb, upgrade, second];
                images::GuestPrograms::Packages {
                    package: &debs[0],
                    upgrade: &debs[1],
                    kernel: &debs[2],
                    second_kernel: &second_kernel,
                }
            } else {
                builder = crate::dogfood::builder_binary(sh, root)?;
                images::GuestPrograms::HandInstalled {
                    builder: &builder,
                    storage_init: &storage_init,
                }
            };
            let disk = images::build_dogfood_cell(
                &kernel,
                &dogfood,
                &images::DogfoodGuest {
                    programs,
                    driver: cell.guest_driver,
                },
                layout,
                esp,
                &build,
            )?;
            let initramfs = dogfood
                .boot
                .join(crate::debian_tree::initramfs_name(&kernel.release));
            (initramfs, disk)
        }
    };
    let dtb = images::board_dtb(cell.machine, &kernel, &build)?;
    let config =
        builder::kernel_config::KernelConfig::locate(kernel.modules_root(), &kernel.release)
            .with_context(|| format!("reading the config of kernel {}", kernel.release))?;
    let driver_checks = if cell.prove_drivers {
        driver_checks(&kernel, cell.bus)?
    } else {
        Vec::new()
    };
    let artefacts = crate::plan::CellArtefacts {
        kernel_release: kernel.release.clone(),
        erofs_file_backed: config.erofs_file_backed(),
        vmlinuz: kernel.vmlinuz.clone(),
        initrd,
        disk,
        dtb,
        uefi: uefi.map(|(_, firmware)| firmware),
        driver_checks,
    };
    Ok((artefacts, accel))
}

/// The ESP contents and the firmware of a UEFI cell: systemd-boot (or the stub of a UKI) and
/// the firmware come from pinned packages; the variable store is a fresh copy in `build` for
/// every boot, with the run's own key enrolled under Secure Boot.
fn uefi_parts(
    sh: &Shell,
    root: &Path,
    cell: &Cell,
    build: &Path,
    cmdline: &str,
    result: &mut CellResult,
) -> Result<(images::EspBoot, crate::plan::UefiArtefacts)> {
    let parts = cell
        .machine
        .uefi()
        .with_context(|| format!("{} has no UEFI firmware", cell.machine.name()))?;
    let firmware = fetch_package(sh, root, parts.firmware_package, result)?.root;
    let loader_root = fetch_package(sh, root, parts.loader_package, result)?.root;
    let loader = loader_root.join(parts.loader);
    std::fs::create_dir_all(build)?;
    let vars = build.join("efivars.fd");
    let pristine_vars = firmware.join(parts.vars);
    // A Secure Boot or signed-UKI cell makes its own key pair, fresh for every run.
    let keys = if cell.secure_boot || cell.uki.is_some_and(|kind| kind.signed()) {
        Some(crate::secure_boot::generate_keys(sh, &build.join("keys"))?)
    } else {
        None
    };
    if cell.secure_boot {
        let keys = keys.as_ref().context("Secure Boot enrolls the run's key")?;
        crate::secure_boot::enroll(sh, &pristine_vars, keys, &vars)?;
    } else {
        std::fs::copy(&pristine_vars, &vars).with_context(|| {
            format!(
                "copying the pristine variable store of {}",
                parts.firmware_package
            )
        })?;
    }
    let uki = match cell.uki {
        None => None,
        Some(kind) => Some(crate::secure_boot::UkiSpec {
            kind,
            stub: loader_root.join(
                parts
                    .uki_stub
                    .with_context(|| format!("no UKI stub for {}", cell.machine.name()))?,
            ),
            keys: keys.clone(),
        }),
    };
    Ok((
        images::EspBoot {
            loader,
            removable_path: parts.removable_path.to_owned(),
            cmdline: cmdline.to_owned(),
            uki,
        },
        crate::plan::UefiArtefacts {
            firmware_root: firmware,
            vars,
        },
    ))
}

/// Package `id` of fixtures/packages.toml, fetched (or found in the cache) and recorded in the
/// cell's result.
fn fetch_package(sh: &Shell, root: &Path, id: &str, result: &mut CellResult) -> Result<Fetched> {
    let fetched = fixtures::fetch_package(sh, root, id)?;
    result.fixtures.push(fetched.clone());
    Ok(fetched)
}

/// One `loaded module <path>` line for each driver of `bus` that `kernel` has as a module (a
/// built-in one has nothing to load): storage-init loaded it, once.
fn driver_checks(
    kernel: &fixtures::Kernel,
    bus: crate::cells::Bus,
) -> Result<Vec<crate::cells::ConsoleCheck>> {
    let modules = builder::modules::KernelModules::new(kernel.modules_root(), &kernel.release);
    let wanted: Vec<String> = bus.drivers().iter().map(|d| (*d).to_owned()).collect();
    let resolution = modules.resolve_with_wanted(&[], &wanted).with_context(|| {
        format!(
            "resolving the {} drivers of kernel {}",
            bus.name(),
            kernel.release
        )
    })?;
    let mut checks = Vec::new();
    for driver in bus.drivers() {
        let name = builder::modules::normalize_name(driver);
        if let Some(module) = resolution.modules.iter().find(|m| m.name == name) {
            checks.push(crate::cells::ConsoleCheck {
                text: format!(
                    "storage-init: loaded module /lib/modules/{}/{}",
                    kernel.release,
                    module.uncompressed_relative_path()?
                ),
                count: Some(1),
                at_least: None,
            });
        }
    }
    Ok(checks)
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
        Verdict::Flaky { reason } => format!(
            "FLAKY: passed on a retry; the first attempt: {}",
            reason.lines().next().unwrap_or("")
        ),
        Verdict::Skipped { reason } => format!("skipped: {reason}"),
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
        let word = result.verdict.word();
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
        if let Some(reason) = result.verdict.reason() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_round_keeps_what_did_not_pass() {
        let dir = tempfile::tempdir().unwrap();
        let result = |cell: &str, verdict: Verdict| {
            let artifacts = dir.path().join(cell);
            std::fs::create_dir(&artifacts).unwrap();
            std::fs::write(artifacts.join("console.log"), cell).unwrap();
            CellResult {
                verdict,
                accel: "tcg".into(),
                ..CellResult::new(cell, artifacts)
            }
        };
        let mut results = [
            result("good", Verdict::Passed),
            result(
                "bad",
                Verdict::Failed {
                    reason: "marker: timed out".into(),
                },
            ),
        ];
        keep_failed_artifacts(&mut results, 2);
        assert_eq!(results[0].artifacts, dir.path().join("good"));
        assert_eq!(results[1].artifacts, dir.path().join("bad-round2"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("bad-round2/console.log")).unwrap(),
            "bad"
        );
        assert!(
            !dir.path().join("bad").exists(),
            "the next round starts afresh"
        );
    }
}
