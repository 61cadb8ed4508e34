//! What a console log says beyond the milestones: after every VM the whole log is scanned
//! against a severity table, so a kernel Oops or an emergency shell that did not happen to
//! interrupt a milestone still fails the cell, and kernel warnings are reported. Also the
//! fatal patterns every cell races its milestones against, besides its own. And the typed
//! outcome of a cell ([`Verdict`], [`CellResult`]) the reports are made from.

use std::path::PathBuf;

use regex::Regex;
use serde::Serialize;

use crate::cells::{ALWAYS_FATAL, ConsoleCheck};
use crate::pins::Fetched;

/// Console text worth reporting that does not fail a cell.
const WARNINGS: [&str; 3] = [r"WARNING: CPU: ", "storage-init: warning: ", "segfault at "];

/// What the scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleScan {
    /// Lines matching a fatal pattern.
    pub fatal: Vec<String>,
    /// Lines matching a warning pattern.
    pub warnings: Vec<String>,
}

/// Scans a whole console log. `expected` are patterns the cell expects (its milestones): a
/// line matching one of them is never counted, so a fault cell's FATAL line is its pass.
pub fn scan_console(console: &str, expected: &[Regex]) -> ConsoleScan {
    let compile = |patterns: &[&str]| -> Vec<Regex> {
        patterns
            .iter()
            .map(|p| Regex::new(p).expect("the severity table's patterns are valid"))
            .collect()
    };
    let (fatal, warnings) = (compile(&ALWAYS_FATAL), compile(&WARNINGS));
    let mut scan = ConsoleScan::default();
    for line in console.lines() {
        if expected.iter().any(|e| e.is_match(line)) {
            continue;
        }
        if fatal.iter().any(|f| f.is_match(line)) {
            scan.fatal.push(line.trim_end().to_owned());
        } else if warnings.iter().any(|w| w.is_match(line)) {
            scan.warnings.push(line.trim_end().to_owned());
        }
    }
    scan
}

/// What the whole console of a boot that reached every milestone says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleJudgement {
    /// Why the cell fails after all: the first fatal line of the scan, else the first
    /// violated console check.
    pub failure: Option<String>,
    /// Lines worth reporting that do not fail the cell.
    pub warnings: Vec<String>,
}

/// Judges the console of a boot that reached every milestone: the severity scan
/// ([`scan_console`], sparing `expected`), then the cell's own `checks`.
pub fn judge_console(
    console: &str,
    expected: &[Regex],
    checks: &[ConsoleCheck],
) -> ConsoleJudgement {
    let scan = scan_console(console, expected);
    let failure = match scan.fatal.first() {
        Some(line) => Some(format!(
            "console: {line} ({} fatal line{} in console.log)",
            scan.fatal.len(),
            if scan.fatal.len() == 1 { "" } else { "s" }
        )),
        None => checks.iter().find_map(|c| c.violation(console)),
    };
    ConsoleJudgement {
        failure,
        warnings: scan.warnings,
    }
}

/// QEMU's stderr naming a host problem rather than a guest one.
pub fn host_problem(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("KVM internal error"))
        .map(|l| format!("{l} (the host's KVM cannot run this guest: use --accel tcg)"))
}

/// How one cell ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    /// Passed on a retry (`--retries`): reported, never silent. `reason` is why the first
    /// attempt did not pass.
    Flaky {
        reason: String,
    },
    /// Not run, and says nothing about the guest: its fixture cannot be fetched here.
    Skipped {
        reason: String,
    },
    /// The guest did not do what the cell expects.
    Failed {
        reason: String,
    },
    /// The harness or host broke; says nothing about the guest.
    Error {
        reason: String,
    },
}

impl Verdict {
    /// Passed, flaky or skipped: nothing for the run to fail on.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Verdict::Passed | Verdict::Flaky { .. } | Verdict::Skipped { .. }
        )
    }

    /// One word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Flaky { .. } => "FLAKY",
            Verdict::Skipped { .. } => "skipped",
            Verdict::Failed { .. } => "FAILED",
            Verdict::Error { .. } => "ERROR",
        }
    }

    /// Why it did not simply pass.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Passed => None,
            Verdict::Flaky { reason }
            | Verdict::Skipped { reason }
            | Verdict::Failed { reason }
            | Verdict::Error { reason } => Some(reason),
        }
    }
}

/// One cell's judged run: what the summary, the tables and JUnit are made from.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    pub cell: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Boots it took (more than 1 only with `--retries`).
    pub attempts: u32,
    pub milestones: Vec<testvm::run::MilestoneReached>,
    /// The package versions actually used (a fallback shows `pinned: false`).
    pub fixtures: Vec<Fetched>,
    /// `kvm` or `tcg`; empty if the cell failed before its VM was set up.
    pub accel: String,
    /// Console lines the severity scan reports without failing the cell (kernel warnings,
    /// storage-init warnings).
    pub warnings: Vec<String>,
    pub artifacts: PathBuf,
    /// Where the attempts before the last keep their artefacts (`<cell>-attempt<N>`), with
    /// `--retries`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier_attempts: Vec<PathBuf>,
}

impl CellResult {
    /// A cell about to boot, its artefacts going to `artifacts`: passed until judged.
    pub fn new(cell: &str, artifacts: PathBuf) -> CellResult {
        CellResult {
            cell: cell.to_owned(),
            verdict: Verdict::Passed,
            attempts: 1,
            milestones: Vec::new(),
            fixtures: Vec::new(),
            accel: String::new(),
            warnings: Vec::new(),
            artifacts,
            earlier_attempts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
[    0.000000] Linux version 6.12.95+deb12-amd64
[    4.100000] storage-init: mounted /proc, /sys, /dev, /run (20 ms)
[    5.000000] storage-init: exec /init; cpu user 50 ms, system 700 ms (900 ms)
[    5.500000] initoverlayfs-test: marker abc root=overlay
[    5.600000] reboot: Power down
";

    fn expected(patterns: &[&str]) -> Vec<Regex> {
        patterns.iter().map(|p| Regex::new(p).unwrap()).collect()
    }

    #[test]
    fn a_clean_boot_has_nothing() {
        assert_eq!(scan_console(CLEAN, &[]), ConsoleScan::default());
    }

    #[test]
    fn a_panic_and_an_oops_are_fatal() {
        let log = format!(
            "{CLEAN}[    6.0] Oops: general protection fault, probably for non-canonical address\n[    6.1] Call Trace:\n[    6.2] Kernel panic - not syncing: Attempted to kill init!\n"
        );
        let scan = scan_console(&log, &[]);
        assert_eq!(scan.fatal.len(), 3, "{scan:?}");
        assert!(scan.fatal[2].contains("Kernel panic"));
    }

    #[test]
    fn storage_init_fatal_is_expected_in_a_fault_cell_only() {
        let log = "[ 5.0] storage-init: FATAL: no boot filesystem UUID=x after 5 s\n[ 5.1] reboot: Power down\n";
        // Its own milestone: not a failure.
        assert!(
            scan_console(log, &expected(&["storage-init: FATAL: no boot"]))
                .fatal
                .is_empty()
        );
        // The per-cell fatal list races it in other cells; the scan does not duplicate that.
        assert!(scan_console(log, &[]).fatal.is_empty());
    }

    #[test]
    fn an_emergency_shell_is_fatal() {
        let log = "[ 9.0] systemd[1]: Starting emergency.service\nYou are in emergency mode. After logging in, type \"journalctl -xb\"\n";
        assert_eq!(scan_console(log, &[]).fatal.len(), 1);
    }

    #[test]
    fn warnings_are_reported_not_fatal() {
        let log = format!(
            "{CLEAN}[ 3.0] WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4400\n[ 4.2] storage-init: warning: no uevent socket\n"
        );
        let scan = scan_console(&log, &[]);
        assert!(scan.fatal.is_empty());
        assert_eq!(scan.warnings.len(), 2, "{scan:?}");
    }

    #[test]
    fn a_truncated_log_is_read_as_far_as_it_goes() {
        let log = "[    0.000000] Linux version 6.12\n[    1.0] Oops: 0000 [#1] SM";
        assert_eq!(
            scan_console(log, &[]).fatal,
            ["[    1.0] Oops: 0000 [#1] SM"]
        );
        assert_eq!(scan_console("", &[]), ConsoleScan::default());
    }

    #[test]
    fn a_kvm_internal_error_is_the_hosts() {
        let stderr = "qemu-system-x86_64: info: QEMU waiting for connection\nKVM internal error. Suberror: 1\nextra data[0]: 0x1\n";
        let problem = host_problem(stderr).unwrap();
        assert!(problem.starts_with("KVM internal error") && problem.contains("--accel tcg"));
        assert_eq!(
            host_problem("qemu-system-x86_64: -device sd-card: bad"),
            None
        );
    }
}
