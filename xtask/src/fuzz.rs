//! `cargo xtask fuzz`: runs storage-init's cargo-fuzz targets (its parsers of the config, the
//! kernel command line, the module list, and the superblocks and partition tables it reads from
//! disks) for a bounded time each, growing the committed corpus in storage-init/fuzz/corpus.

use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::provision::find_in_path;

/// The targets in storage-init/fuzz/fuzz_targets.
pub const TARGETS: [&str; 6] = [
    "config",
    "cmdline",
    "module_list",
    "modalias",
    "superblock",
    "initramfs",
];
/// libFuzzer needs a nightly compiler (sanitizer coverage flags).
const TOOLCHAIN: &str = "+nightly";

pub fn run(sh: &Shell, root: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    if let Some(target) = only
        && !TARGETS.contains(&target)
    {
        bail!(
            "no fuzz target {target:?}: the targets are {}",
            TARGETS.join(", ")
        );
    }
    if cmd!(sh, "cargo {TOOLCHAIN} --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        bail!("cargo fuzz needs a nightly toolchain: `rustup toolchain install nightly`");
    }
    if find_in_path("cargo-fuzz").is_none() {
        eprintln!(
            "fuzz: cargo-fuzz missing; installing it with `cargo install cargo-fuzz --locked`"
        );
        cmd!(sh, "cargo install cargo-fuzz --locked")
            .run()
            .context("installing cargo-fuzz")?;
    }
    let _dir = sh.push_dir(root.join("storage-init"));
    let mut summary = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let max_time = format!("-max_total_time={seconds}");
        eprintln!("fuzz: {target} for {seconds} s");
        let output = cmd!(sh, "cargo {TOOLCHAIN} fuzz run {target} -- {max_time}")
            .ignore_status()
            .quiet()
            .output()
            .with_context(|| format!("running cargo fuzz on {target}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "fuzz target {target} failed (the crashing input is under storage-init/fuzz/artifacts):\n{}",
                tail.join("\n")
            );
        }
        summary.push((*target, executions(&log)));
    }
    println!("\n{:12}  executions in {seconds} s", "target");
    for (target, runs) in summary {
        println!(
            "{target:12}  {}",
            runs.map_or("?".to_owned(), |n| n.to_string())
        );
    }
    Ok(())
}

/// libFuzzer's closing line: `Done 123456 runs in 30 second(s)`.
pub fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_run_counts() {
        assert_eq!(
            executions("#2 INITED\nDone 1234567 runs in 30 second(s)\n"),
            Some(1234567)
        );
        assert_eq!(executions("crashed"), None);
    }

    #[test]
    fn every_target_has_a_source_and_a_corpus() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../storage-init/fuzz");
        for target in TARGETS {
            assert!(
                fuzz.join(format!("fuzz_targets/{target}.rs")).is_file(),
                "{target}"
            );
            let corpus = fuzz.join("corpus").join(target);
            assert!(
                std::fs::read_dir(&corpus).is_ok_and(|mut d| d.next().is_some()),
                "{} is empty",
                corpus.display()
            );
        }
    }
}
