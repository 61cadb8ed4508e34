//! `cargo xtask matrix-doc`: docs/matrix.md, the VM test matrix as a table generated from
//! fixtures/cells.toml (and, when asked, a vm-test run's results), so the document cannot
//! drift from the cells the harness boots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cells::{Cell, Firmware, Flow, Tier};

/// Where the table goes unless `--output` says otherwise, relative to the project root.
pub const MATRIX_MD: &str = "docs/matrix.md";
/// The file vm-test writes its results to, relative to the project root.
pub const LAST_SUMMARY: &str = "target/vm-test/summary.json";
/// The command that makes the committed docs/matrix.md.
pub const REGENERATE: &str = "cargo xtask matrix-doc --summary none";

/// Which vm-test results the table shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SummaryChoice {
    /// [`LAST_SUMMARY`] where it exists, else none.
    #[default]
    LastRun,
    /// None: every cell is "not run".
    None,
    /// This summary.json, which must exist.
    Path(PathBuf),
}

/// `cargo xtask matrix-doc`'s options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub summary: SummaryChoice,
    /// None: [`MATRIX_MD`] under the project root.
    pub output: Option<PathBuf>,
}

/// What the table shows of one vm-test run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Where the results were read from, as the generated file names it.
    pub source: String,
    /// Each cell's results in the order they were booted (several with `vm-test --repeat`),
    /// as summary.json words them: `passed`, `flaky`, `skipped`, `failed`, `error`.
    pub results: BTreeMap<String, Vec<String>>,
}

/// The part of a summary.json entry the table needs; the rest (milestones, fixtures,
/// artefacts) is ignored, so the table does not depend on it.
#[derive(Deserialize)]
struct SummaryEntry {
    cell: String,
    result: String,
}

/// Reads vm-test's summary.json text; `source` names it in errors and in the table.
pub fn parse_summary(source: &str, json: &str) -> Result<Summary> {
    let entries: Vec<SummaryEntry> = serde_json::from_str(json).with_context(|| {
        format!(
            "{source}: not a summary.json of `cargo xtask vm-test` (a list of {{\"cell\", \
             \"result\"}} objects); run vm-test again, or pass --summary none"
        )
    })?;
    let mut results: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in entries {
        results.entry(entry.cell).or_default().push(entry.result);
    }
    Ok(Summary {
        source: source.to_owned(),
        results,
    })
}

pub fn run(root: &Path, options: &Options) -> Result<()> {
    let cells = crate::cells::read_cells(root)?;
    let summary = match &options.summary {
        SummaryChoice::None => None,
        SummaryChoice::LastRun => {
            let path = root.join(LAST_SUMMARY);
            if path.is_file() {
                Some(read_summary(&path, LAST_SUMMARY)?)
            } else {
                None
            }
        }
        SummaryChoice::Path(path) => Some(read_summary(path, &path.display().to_string())?),
    };
    let (output, shown) = match &options.output {
        Some(path) => (path.clone(), path.display().to_string()),
        None => (root.join(MATRIX_MD), MATRIX_MD.to_owned()),
    };
    std::fs::write(&output, render(&cells, summary.as_ref()))
        .with_context(|| format!("writing {shown}"))?;
    match &summary {
        Some(summary) => {
            println!(
                "matrix-doc: {} cells, results from {}, written to {shown}",
                cells.len(),
                summary.source,
            );
            if options.output.is_none() {
                eprintln!(
                    "matrix-doc: the committed {MATRIX_MD} shows no run's results; make it with \
                     `{REGENERATE}`"
                );
            }
        }
        None => println!(
            "matrix-doc: {} cells, no results, written to {shown}",
            cells.len()
        ),
    }
    Ok(())
}

fn read_summary(path: &Path, source: &str) -> Result<Summary> {
    let json = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (a summary.json of `cargo xtask vm-test`; run that first, or pass \
             --summary none)",
            path.display()
        )
    })?;
    parse_summary(source, &json)
}

const TIERS: [Tier; 3] = [Tier::Smoke, Tier::Default, Tier::Full];

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Smoke => "smoke",
        Tier::Default => "default",
        Tier::Full => "full",
    }
}

fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::Busybox => "busybox",
        Flow::Dracut => "dracut",
        Flow::DracutClassic => "dracut-classic",
        Flow::DracutService => "dracut-service",
        Flow::Dogfood => "dogfood",
        Flow::PrepareOnly => "prepare-only",
    }
}

/// How the machine reaches the kernel: `direct`, `uefi`, with `UKI` and `Secure Boot` where
/// the cell boots one.
fn firmware_words(cell: &Cell) -> String {
    let mut words = match cell.firmware {
        Firmware::Direct => "direct",
        Firmware::Uefi => "uefi",
    }
    .to_owned();
    if cell.uki.is_some() {
        words.push_str(", UKI");
    }
    if cell.secure_boot {
        words.push_str(", Secure Boot");
    }
    words
}

/// Results in a fixed order, the ones to look at in bold as vm-test's own tables have them.
const RESULT_WORDS: [(&str, &str); 5] = [
    ("passed", "passed"),
    ("flaky", "**flaky**"),
    ("skipped", "skipped"),
    ("failed", "**FAILED**"),
    ("error", "**ERROR**"),
];

fn result_word(result: &str) -> String {
    RESULT_WORDS
        .iter()
        .find(|(word, _)| *word == result)
        .map_or_else(
            || result.replace('|', "\\|"),
            |(_, shown)| (*shown).to_owned(),
        )
}

/// One cell's results: `passed`, `passed ×3` after three rounds, `passed 2, **FAILED** 1`.
fn cell_result(results: &[String]) -> String {
    let mut counts: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for result in results {
        let rank = RESULT_WORDS
            .iter()
            .position(|(word, _)| word == result)
            .unwrap_or(RESULT_WORDS.len());
        *counts.entry((rank, result)).or_default() += 1;
    }
    match counts.len() {
        0 => "not run".to_owned(),
        1 => {
            let ((_, result), n) = counts.into_iter().next().expect("one entry");
            if n == 1 {
                result_word(result)
            } else {
                format!("{} ×{n}", result_word(result))
            }
        }
        _ => counts
            .into_iter()
            .map(|((_, result), n)| format!("{} {n}", result_word(result)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// docs/matrix.md for `cells`, with `summary`'s results where given. The same input gives the
/// same bytes: rows are sorted, and nothing of the moment of rendering is written.
pub fn render(cells: &[Cell], summary: Option<&Summary>) -> String {
    let mut out = String::new();
    let command = match summary {
        None => REGENERATE.to_owned(),
        Some(summary) => format!("cargo xtask matrix-doc --summary {}", summary.source),
    };
    let _ = writeln!(
        out,
        "<!-- Generated by `{command}` from fixtures/cells.toml: change the cells there and \
         run it again, rather than editing this file. -->\n"
    );
    out.push_str("# The VM test matrix\n\n");
    out.push_str(
        "Every cell of fixtures/cells.toml: one boot of a machine, storage bus, kernel and \
         content flow that `cargo xtask vm-test` runs and judges by its console milestones. \
         A `[[matrix]]` block there expands into a cell per machine, bus and kernel whose \
         architectures agree (fixtures/kernels.toml).\n\n",
    );
    match summary {
        None => out.push_str(
            "Results: none, so the table does not depend on one machine's last run. \
             `cargo xtask vm-test` writes a run's results to target/vm-test/summary.json, and \
             `cargo xtask matrix-doc --output PATH` renders this table with them.\n\n",
        ),
        Some(summary) => {
            let known = summary
                .results
                .keys()
                .filter(|name| cells.iter().any(|c| &c.name == *name))
                .count();
            let _ = writeln!(
                out,
                "Results: the vm-test run recorded in `{}`, which booted {known} of these \
                 {} cells.\n",
                summary.source,
                cells.len()
            );
            let gone: Vec<String> = summary
                .results
                .keys()
                .filter(|name| !cells.iter().any(|c| &c.name == *name))
                .map(|name| format!("`{name}`"))
                .collect();
            if !gone.is_empty() {
                let _ = writeln!(
                    out,
                    "The run also booted cells fixtures/cells.toml no longer has: {}.\n",
                    gone.join(", ")
                );
            }
        }
    }
    render_counts(&mut out, cells);
    render_rows(&mut out, cells, summary);
    out
}

/// Cells per tier and architecture, and what each `--tier` boots (its tier and those below).
fn render_counts(out: &mut String, cells: &[Cell]) {
    let mut arches: Vec<&str> = cells.iter().map(|c| c.machine.arch()).collect();
    arches.sort_unstable();
    arches.dedup();
    out.push_str("## Cells per tier and architecture\n\n");
    let _ = writeln!(
        out,
        "| tier | {} | cells | `vm-test --tier <tier>` boots |",
        arches.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---:|---:|", "---:|".repeat(arches.len()));
    let count = |tier: Option<Tier>, arch: Option<&str>| {
        cells
            .iter()
            .filter(|c| tier.is_none_or(|t| c.tier == t))
            .filter(|c| arch.is_none_or(|a| c.machine.arch() == a))
            .count()
    };
    for tier in TIERS {
        let per_arch: Vec<String> = arches
            .iter()
            .map(|&arch| count(Some(tier), Some(arch)).to_string())
            .collect();
        let booted = cells.iter().filter(|c| c.tier <= tier).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {booted} |",
            tier_name(tier),
            per_arch.join(" | "),
            count(Some(tier), None)
        );
    }
    let per_arch: Vec<String> = arches
        .iter()
        .map(|&arch| count(None, Some(arch)).to_string())
        .collect();
    let _ = writeln!(
        out,
        "| all | {} | {} | |\n",
        per_arch.join(" | "),
        cells.len()
    );
    out.push_str(
        "`cargo xtask test` boots the smoke cells (the others are its ignored tests), \
         `cargo xtask vm-test` the smoke and default ones, `cargo xtask vm-test --tier full` \
         every cell.\n\n",
    );
}

/// One row per cell, by tier then name.
fn render_rows(out: &mut String, cells: &[Cell], summary: Option<&Summary>) {
    let mut sorted: Vec<&Cell> = cells.iter().collect();
    sorted.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
    out.push_str("## Cells\n\n");
    out.push_str(
        "| cell | arch | machine | bus | kernel | flow | firmware | tier | last result |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for cell in sorted {
        let result = summary
            .and_then(|s| s.results.get(&cell.name))
            .map_or_else(|| "not run".to_owned(), |results| cell_result(results));
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {result} |",
            cell.name,
            cell.machine.arch(),
            cell.machine.name(),
            cell.bus.name(),
            cell.kernel,
            flow_name(cell.flow),
            firmware_words(cell),
            tier_name(cell.tier),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Cells as fixtures/cells.toml writes them, without the milestones the table never shows.
    fn sample_cells() -> Vec<Cell> {
        #[derive(Deserialize)]
        struct File {
            cell: Vec<Cell>,
        }
        let toml = r#"
            [[cell]]
            name = "x86_64-q35-nvme-debian12-6.12-busybox"
            tier = "default"
            kernel = "debian12-6.12-amd64"
            flow = "busybox"
            bus = "nvme"
            fatal = []
            milestones = []

            [[cell]]
            name = "aarch64-virt-sd-debian12-6.12-busybox"
            tier = "default"
            kernel = "debian12-6.12-arm64"
            flow = "busybox"
            machine = "virt"
            bus = "sd"
            fatal = []
            milestones = []

            [[cell]]
            name = "x86_64-q35-virtio-blk-debian12-6.12-busybox"
            tier = "smoke"
            kernel = "debian12-6.12-amd64"
            flow = "busybox"
            fatal = []
            milestones = []

            [[cell]]
            name = "x86_64-q35-virtio-blk-debian12-6.12-dracut-uefi"
            tier = "full"
            kernel = "debian12-6.12-amd64"
            flow = "dracut"
            firmware = "uefi"
            boot_fs = "vfat"
            real_root = true
            fatal = []
            milestones = []

            [[cell]]
            name = "x86_64-q35-virtio-blk-debian12-6.12-busybox-uki-secureboot"
            tier = "default"
            kernel = "debian12-6.12-amd64"
            flow = "busybox"
            firmware = "uefi"
            boot_fs = "vfat"
            uki = "signed"
            secure_boot = true
            fatal = []
            milestones = []
        "#;
        toml::from_str::<File>(toml).unwrap().cell
    }

    /// A summary.json as vm-test writes it, trimmed: a cell booted twice (`--repeat 2`) with
    /// two results, one that passed, and one fixtures/cells.toml no longer has.
    fn sample_summary() -> Summary {
        let json = r#"[
            {"cell": "x86_64-q35-nvme-debian12-6.12-busybox", "result": "passed", "attempts": 1},
            {"cell": "aarch64-virt-sd-debian12-6.12-busybox", "result": "failed",
             "reason": "bootfs: timed out after 30 s", "attempts": 1},
            {"cell": "x86_64-q35-nvme-debian12-6.12-busybox", "result": "flaky",
             "reason": "marker: timed out", "attempts": 2},
            {"cell": "x86_64-q35-virtio-blk-debian12-6.12-busybox", "result": "passed"},
            {"cell": "x86_64-q35-virtio-blk-debian12-6.12-busybox", "result": "passed"},
            {"cell": "x86_64-q35-usb-gone", "result": "error", "reason": "QEMU exited"}
        ]"#;
        parse_summary(LAST_SUMMARY, json).unwrap()
    }

    #[test]
    fn matrix_without_results() {
        insta::assert_snapshot!(render(&sample_cells(), None));
    }

    #[test]
    fn matrix_with_results() {
        insta::assert_snapshot!(render(&sample_cells(), Some(&sample_summary())));
    }

    #[test]
    fn rendering_ignores_the_order_of_its_input() {
        let cells = sample_cells();
        let mut reversed = cells.clone();
        reversed.reverse();
        let summary = sample_summary();
        assert_eq!(
            render(&cells, Some(&summary)),
            render(&reversed, Some(&summary))
        );
    }

    #[test]
    fn repeated_and_mixed_results() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cell_result(&words(&[])), "not run");
        assert_eq!(cell_result(&words(&["passed"])), "passed");
        assert_eq!(cell_result(&words(&["passed"; 3])), "passed ×3");
        assert_eq!(
            cell_result(&words(&["failed", "passed", "passed"])),
            "passed 2, **FAILED** 1"
        );
        assert_eq!(cell_result(&words(&["new|word"])), "new\\|word");
    }

    #[test]
    fn summary_that_is_not_one_names_the_file() {
        let error = parse_summary("old/summary.json", r#"{"cells": 3}"#).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("old/summary.json"), "{message}");
        assert!(message.contains("--summary none"), "{message}");
    }

    /// The real fixtures/cells.toml: one row per cell, each name in exactly one row.
    #[test]
    fn real_matrix_has_a_row_per_cell() {
        let cells = crate::cells::read_cells(&project_root()).unwrap();
        let text = render(&cells, None);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), cells.len());
        for cell in &cells {
            let name = format!("| `{}` |", cell.name);
            assert_eq!(
                rows.iter().filter(|r| r.starts_with(&name)).count(),
                1,
                "{}",
                cell.name
            );
        }
        assert!(rows.iter().all(|r| r.ends_with("| not run |")));
    }

    /// docs/matrix.md is generated, never edited: it must be what the cells render to now.
    #[test]
    fn committed_matrix_is_current() {
        let root = project_root();
        let cells = crate::cells::read_cells(&root).unwrap();
        let committed = std::fs::read_to_string(root.join(MATRIX_MD)).unwrap_or_default();
        assert!(
            committed == render(&cells, None),
            "{MATRIX_MD} is not what fixtures/cells.toml renders to: run `{REGENERATE}` and \
             commit the result"
        );
    }
}
