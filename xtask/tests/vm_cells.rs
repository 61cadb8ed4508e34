//! The VM cells of fixtures/cells.toml as tests, one per cell, generated from the file (a
//! libtest-mimic harness): `cargo nextest run -E 'test(nvme)'` selects cells like any test.
//! Each boots a real kernel under QEMU through the same code as `cargo xtask vm-test`, whose
//! verdict (milestones, fatal patterns, the console scan and the cell's `console` checks) is
//! the test's. They need root (or sudo) to provision on a fresh machine; `cargo xtask test`
//! provisions and fetches first.
//!
//! Only the `smoke` tier runs by default (the README's test command stays within minutes);
//! the other cells are ignored tests: `cargo nextest run --run-ignored all` runs the whole
//! matrix, as `cargo xtask vm-test` does.

use libtest_mimic::{Arguments, Failed, Trial};
use xtask::vm_test::{Verdict, run_named_cell};

fn check_cell(name: &str, kernel_starts: bool) -> Result<(), Failed> {
    let result = run_named_cell(name).map_err(|e| format!("{name}: {e:#}"))?;
    // A test has no "skipped" outcome decided at run time: a cell whose fixture cannot be
    // fetched here fails, saying so, rather than passing (vm-test's table reports it skipped).
    if let Verdict::Skipped { reason } = &result.verdict {
        return Err(format!("{name}: skipped: {reason}").into());
    }
    if !matches!(result.verdict, Verdict::Passed) {
        return Err(format!(
            "{name}: {:?}\naccelerator: {}\nartifacts: {}",
            result.verdict,
            result.accel,
            result.artifacts.display()
        )
        .into());
    }
    // Firmware and bootloader print before the kernel's clock exists, and systemd's status
    // lines go to the console without it; the kernel's own milestones carry the guest's time.
    // A cell whose firmware must refuse the kernel has none (its fatal patterns see to that).
    if kernel_starts && result.milestones.iter().all(|m| m.guest_s.is_none()) {
        return Err(format!("{name}: no milestone carries a guest timestamp").into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let root = xtask::vm_test::project_root();
    let cells = xtask::cells::read_cells(&root).expect("fixtures/cells.toml");
    let trials = cells
        .into_iter()
        .map(|cell| {
            let smoke = cell.tier == xtask::cells::Tier::Smoke;
            let kernel_starts = cell.kernel_starts();
            let name = cell.name;
            Trial::test(name.clone(), move || check_cell(&name, kernel_starts))
                .with_ignored_flag(!smoke)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
