//! The run's reports besides the printed table: `summary.md` (the same table as Markdown, for a
//! CI job summary) and `junit.xml` (for CI test reporting), and what `--rerun-failed` reads back
//! from summary.json. Pure functions over the cells' results.

use std::fmt::Write as _;

use crate::verdict::{CellResult, Verdict};

/// The milestone whose guest time the summary shows: the content's init has run.
const MARKER: &str = "marker";

/// The line above the table: how many cells ended which way, the accelerators used and the
/// run's wall time.
pub fn headline(results: &[CellResult], wall: std::time::Duration) -> String {
    let mut counts: Vec<String> = Vec::new();
    for word in ["passed", "FLAKY", "skipped", "FAILED", "ERROR"] {
        let n = results.iter().filter(|r| r.verdict.word() == word).count();
        if n > 0 {
            counts.push(format!("{n} {}", word.to_lowercase()));
        }
    }
    let mut accels: Vec<&str> = results
        .iter()
        .map(|r| r.accel.as_str())
        .filter(|a| !a.is_empty())
        .collect();
    accels.sort_unstable();
    accels.dedup();
    format!(
        "**vm-test**: {} cells: {}; accelerator {}; wall time {:.0} s\n",
        results.len(),
        counts.join(", "),
        if accels.is_empty() {
            "-".to_owned()
        } else {
            accels.join(" and ")
        },
        wall.as_secs_f64()
    )
}

/// One Markdown table row per cell: cell, accelerator, verdict, guest seconds to the marker
/// (or the last milestone reached), reason.
pub fn markdown(results: &[CellResult]) -> String {
    let mut out = String::from(
        "| cell | accel | result | guest s to init marker | reason |\n|---|---|---|---|---|\n",
    );
    for result in results {
        let word = match &result.verdict {
            Verdict::Passed => "passed",
            Verdict::Flaky { .. } => "**flaky** (passed on a retry)",
            Verdict::Skipped { .. } => "skipped",
            Verdict::Failed { .. } => "**FAILED**",
            Verdict::Error { .. } => "**ERROR**",
        };
        let reason = result.verdict.reason().unwrap_or("");
        let marker = result
            .milestones
            .iter()
            .find(|m| m.name == MARKER)
            .and_then(|m| m.guest_s)
            .map_or("-".to_owned(), |s| format!("{s:.3}"));
        let reason = reason.lines().next().unwrap_or("").replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{}` | {} | {word} | {marker} | {reason} |",
            result.cell,
            if result.accel.is_empty() {
                "-"
            } else {
                &result.accel
            }
        );
    }
    out
}

/// The milestones of the real chain compared across a pair: systemd starts in the initrd, and
/// the real root is up.
const CHAIN_MILESTONES: [(&str, &str); 2] = [
    ("systemd", "Running in initrd"),
    ("multi-user", "multi-user.target"),
];

/// The classic sibling of a real-chain cell: the same name with the `dracut` flow replaced by
/// `dracut-classic` (how the `[[matrix]]` blocks of fixtures/cells.toml name a pair).
pub fn classic_sibling(cell: &str) -> Option<String> {
    if cell.contains("-dracut-classic") {
        return None;
    }
    let (head, tail) = cell.split_once("-dracut")?;
    (tail.is_empty() || tail.starts_with('-')).then(|| format!("{head}-dracut-classic{tail}"))
}

/// The unverified sibling of a dm-verity cell: the same name without `-verity` (so
/// `…-dracut-verity-uefi` pairs with `…-dracut-uefi`).
pub fn unverified_sibling(cell: &str) -> Option<String> {
    let (head, tail) = cell.split_once("-verity")?;
    (tail.is_empty() || tail.starts_with('-')).then(|| format!("{head}{tail}"))
}

/// Two kinds of cell the summary sets side by side, each cell beside its sibling.
#[derive(Debug)]
pub struct Pairing {
    /// What the table shows, for its heading.
    pub title: &'static str,
    /// The column labels of the cell and of its sibling.
    pub ours: &'static str,
    pub theirs: &'static str,
    pub sibling: fn(&str) -> Option<String>,
}

pub const PAIRINGS: [Pairing; 2] = [
    Pairing {
        title: "The real chain beside the classic one",
        ours: "initoverlayfs",
        theirs: "classic",
        sibling: classic_sibling,
    },
    Pairing {
        title: "dm-verity's cost: each verified cell beside its unverified sibling",
        ours: "verified",
        theirs: "unverified",
        sibling: unverified_sibling,
    },
];

/// The pairs of `pairing` side by side: for every cell whose sibling ran too, the guest
/// seconds (kernel clock) to each of [`CHAIN_MILESTONES`] in both, and the difference (the
/// cell minus its sibling: negative is faster). A cell booted several times (`--repeat`) shows
/// the median of its boots that reached the milestone. None when no pair ran.
pub fn side_by_side(results: &[CellResult], pairing: &Pairing) -> Option<String> {
    let guest = |cell: &str, milestone: &str| {
        let mut seconds: Vec<f64> = results
            .iter()
            .filter(|r| r.cell == cell)
            .filter_map(|r| r.milestones.iter().find(|m| m.name == milestone))
            .filter_map(|m| m.guest_s)
            .collect();
        median(&mut seconds)
    };
    let mut out = String::from("| pair |");
    for (_, label) in CHAIN_MILESTONES {
        let _ = write!(
            out,
            " {label}: {} s | {} s | difference |",
            pairing.ours, pairing.theirs
        );
    }
    out.push_str("\n|---|");
    out.push_str(&"---|---|---|".repeat(CHAIN_MILESTONES.len()));
    out.push('\n');
    let mut rows = 0;
    let mut cells: Vec<&str> = results.iter().map(|r| r.cell.as_str()).collect();
    // Each cell once, in the order of its first result.
    let mut seen = std::collections::HashSet::new();
    cells.retain(|cell| seen.insert(*cell));
    for cell in cells {
        let Some(sibling) = (pairing.sibling)(cell) else {
            continue;
        };
        if !results.iter().any(|r| r.cell == sibling) {
            continue;
        }
        // A pair without the chain's milestones (busybox cells) has nothing to compare.
        let measured = CHAIN_MILESTONES
            .iter()
            .any(|(m, _)| guest(cell, m).is_some() || guest(&sibling, m).is_some());
        if !measured {
            continue;
        }
        let _ = write!(out, "| `{cell}` |");
        for (milestone, _) in CHAIN_MILESTONES {
            let (ours, theirs) = (guest(cell, milestone), guest(&sibling, milestone));
            let shown = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.2}"));
            let difference = match (ours, theirs) {
                (Some(a), Some(b)) => format!("{:+.2} s ({:+.0} %)", a - b, (a - b) / b * 100.0),
                _ => "-".to_owned(),
            };
            let _ = write!(out, " {} | {} | {difference} |", shown(ours), shown(theirs));
        }
        out.push('\n');
        rows += 1;
    }
    (rows > 0).then_some(out)
}

/// The median (the mean of the middle two for an even count); None for no values.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A JUnit XML report: one test case per cell, `failure` for a guest failure, `error` for a
/// harness failure, `skipped`, and `flakyFailure` (the first attempt's) on a cell that passed
/// on a retry, as nextest and Maven Surefire write it; the time is the host's, from QEMU's
/// start to the last milestone.
pub fn junit(results: &[CellResult]) -> String {
    let failures = count(results, |v| matches!(v, Verdict::Failed { .. }));
    let errors = count(results, |v| matches!(v, Verdict::Error { .. }));
    let skipped = count(results, |v| matches!(v, Verdict::Skipped { .. }));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"vm-test\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">\n",
        results.len()
    );
    for result in results {
        let seconds = result
            .milestones
            .last()
            .map_or(0.0, |m| m.host_ms as f64 / 1000.0);
        let _ = write!(
            out,
            "    <testcase classname=\"vm-test\" name=\"{}\" time=\"{seconds:.3}\"",
            xml(&result.cell)
        );
        let tag = match &result.verdict {
            Verdict::Passed => None,
            Verdict::Flaky { reason } => Some(("flakyFailure", reason)),
            Verdict::Skipped { reason } => Some(("skipped", reason)),
            Verdict::Failed { reason } => Some(("failure", reason)),
            Verdict::Error { reason } => Some(("error", reason)),
        };
        match tag {
            None => out.push_str("/>\n"),
            Some((tag, reason)) => {
                let first = reason.lines().next().unwrap_or("");
                let _ = write!(
                    out,
                    ">\n      <{tag} message=\"{}\">{}</{tag}>\n    </testcase>\n",
                    xml(first),
                    xml(reason)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn count(results: &[CellResult], which: impl Fn(&Verdict) -> bool) -> usize {
    results.iter().filter(|r| which(&r.verdict)).count()
}

/// Text escaped for XML attributes and content.
fn xml(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

/// The cells a summary.json (of `vm-test`) records as failed or broken, each once, in the
/// order they first appear: what `--rerun-failed` boots.
pub fn failed_cells(summary_json: &str) -> Result<Vec<String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Entry {
        cell: String,
        result: String,
    }
    let entries: Vec<Entry> = serde_json::from_str(summary_json)?;
    let mut failed: Vec<String> = Vec::new();
    for entry in entries {
        if matches!(entry.result.as_str(), "failed" | "error") && !failed.contains(&entry.cell) {
            failed.push(entry.cell);
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testvm::run::MilestoneReached;

    fn result(cell: &str, verdict: Verdict) -> CellResult {
        CellResult {
            verdict,
            milestones: vec![
                MilestoneReached {
                    name: "kernel".into(),
                    host_ms: 900,
                    guest_s: Some(0.0),
                    line: String::new(),
                    sent: None,
                    bytes_read: None,
                    read_requests: None,
                },
                MilestoneReached {
                    name: MARKER.into(),
                    host_ms: 7_250,
                    guest_s: Some(5.5),
                    line: String::new(),
                    sent: None,
                    bytes_read: None,
                    read_requests: None,
                },
            ],
            accel: "tcg".into(),
            ..CellResult::new(cell, "/a".into())
        }
    }

    /// `--rerun-failed` takes the failed and broken cells, once each, not the flaky, skipped
    /// or passed ones.
    #[test]
    fn the_failures_of_a_summary() {
        let mut results = sample();
        results.push(result(
            "aarch64-virt-sd",
            Verdict::Error {
                reason: "again".into(),
            },
        ));
        let json = serde_json::to_string_pretty(&results).unwrap();
        let failed = failed_cells(&json).unwrap();
        let expected: Vec<String> = results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Failed { .. } | Verdict::Error { .. }))
            .map(|r| r.cell.clone())
            .fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            });
        assert!(expected.len() >= 2, "the sample has failures and errors");
        assert_eq!(failed, expected);
        assert!(failed_cells("{\"not\": \"a list\"}").is_err());
    }

    fn sample() -> Vec<CellResult> {
        vec![
            result("x86_64-q35-nvme", Verdict::Passed),
            result(
                "aarch64-virt-sd",
                Verdict::Failed {
                    reason: "bootfs: timed out after 30 s <no | device>\nconsole tail".into(),
                },
            ),
            result(
                "x86_64-q35-usb",
                Verdict::Error {
                    reason: "QEMU exited at start-up".into(),
                },
            ),
            result(
                "x86_64-q35-sd",
                Verdict::Flaky {
                    reason: "marker: timed out after 30 s".into(),
                },
            ),
            result(
                "x86_64-q35-virtio-blk-fedora43",
                Verdict::Skipped {
                    reason: "cannot fetch kernel-core: mirror unreachable".into(),
                },
            ),
        ]
    }

    #[test]
    fn markdown_table() {
        insta::assert_snapshot!(markdown(&sample()));
    }

    fn chain(cell: &str, systemd: Option<f64>, multi_user: f64) -> CellResult {
        let mut result = result(cell, Verdict::Passed);
        result.milestones = [("systemd", systemd), ("multi-user", Some(multi_user))]
            .into_iter()
            .map(|(name, guest_s)| MilestoneReached {
                name: name.into(),
                host_ms: 0,
                guest_s,
                line: String::new(),
                sent: None,
                bytes_read: None,
                read_requests: None,
            })
            .collect();
        result
    }

    #[test]
    fn classic_siblings() {
        assert_eq!(
            classic_sibling("x86_64-q35-nvme-debian12-6.1-dracut-uefi").as_deref(),
            Some("x86_64-q35-nvme-debian12-6.1-dracut-classic-uefi")
        );
        assert_eq!(
            classic_sibling("a-dracut").as_deref(),
            Some("a-dracut-classic")
        );
        assert_eq!(classic_sibling("a-dracut-classic-uefi"), None);
        assert_eq!(
            classic_sibling("x86_64-q35-nvme-debian12-6.1-busybox"),
            None
        );
        assert_eq!(classic_sibling("a-dracutish"), None);
    }

    #[test]
    fn chains_side_by_side() {
        let chains = |results: &[CellResult]| side_by_side(results, &PAIRINGS[0]);
        assert_eq!(chains(&sample()), None, "no pair, no table");
        let table = chains(&[
            chain("q35-dracut-uefi", Some(6.0), 40.0),
            chain("q35-dracut-classic-uefi", Some(8.0), 50.0),
            chain("virt-dracut-uefi", None, 90.0),
            chain("virt-dracut-classic-uefi", Some(12.0), 100.0),
            chain("lone-dracut-uefi", Some(1.0), 2.0),
        ])
        .unwrap();
        insta::assert_snapshot!(table);
        assert!(
            table.contains("| 6.00 | 8.00 | -2.00 s (-25 %) |"),
            "{table}"
        );
        assert!(
            !table.contains("lone"),
            "a cell without its sibling has no row"
        );

        // Repeated boots (`--repeat`): one row per pair, the medians.
        let table = chains(&[
            chain("q-dracut", Some(6.0), 40.0),
            chain("q-dracut-classic", Some(9.0), 50.0),
            chain("q-dracut", Some(5.0), 44.0),
            chain("q-dracut-classic", Some(7.0), 52.0),
            chain("q-dracut", None, 41.0),
            chain("q-dracut-classic", Some(8.0), 60.0),
        ])
        .unwrap();
        assert_eq!(table.matches("| `q-dracut` |").count(), 1, "{table}");
        assert!(
            table.contains("| 5.50 | 8.00 | -2.50 s (-31 %) | 41.00 | 52.00 | -11.00 s (-21 %) |"),
            "{table}"
        );
    }

    #[test]
    fn verified_cells_beside_unverified_ones() {
        assert_eq!(
            unverified_sibling("x86_64-q35-virtio-blk-debian12-6.12-dracut-verity-uefi").as_deref(),
            Some("x86_64-q35-virtio-blk-debian12-6.12-dracut-uefi")
        );
        assert_eq!(
            unverified_sibling("a-busybox-verity").as_deref(),
            Some("a-busybox")
        );
        assert_eq!(unverified_sibling("a-fault-verityish"), None);
        assert_eq!(unverified_sibling("a-dracut-uefi"), None);
        let table = side_by_side(
            &[
                chain("q-dracut-verity-uefi", Some(6.5), 42.0),
                chain("q-dracut-uefi", Some(6.0), 40.0),
                chain("q-dracut-classic-uefi", Some(8.0), 50.0),
            ],
            &PAIRINGS[1],
        )
        .unwrap();
        assert!(
            table.starts_with(
                "| pair | Running in initrd: verified s | unverified s | difference |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| `q-dracut-verity-uefi` | 6.50 | 6.00 | +0.50 s (+8 %) |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 3, "one pair: {table}");
        let unmeasured = CellResult {
            milestones: Vec::new(),
            ..chain("q-busybox", None, 0.0)
        };
        let pair = [
            CellResult {
                cell: "q-busybox-verity".into(),
                ..unmeasured.clone()
            },
            unmeasured,
        ];
        assert_eq!(
            side_by_side(&pair, &PAIRINGS[1]),
            None,
            "busybox cells have no chain milestones"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn headline_counts() {
        let line = headline(&sample(), std::time::Duration::from_secs(250));
        assert_eq!(
            line,
            "**vm-test**: 5 cells: 1 passed, 1 flaky, 1 skipped, 1 failed, 1 error; accelerator tcg; wall time 250 s\n"
        );
    }

    #[test]
    fn junit_report() {
        let report = junit(&sample());
        insta::assert_snapshot!(report);
        assert!(report.contains("tests=\"5\" failures=\"1\" errors=\"1\" skipped=\"1\""));
        assert!(report.contains("<flakyFailure message=\"marker: timed out after 30 s\">"));
        assert!(report.contains("&lt;no | device&gt;"));
    }
}
