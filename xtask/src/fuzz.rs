//! `cargo xtask fuzz`: runs storage-init's cargo-fuzz targets (its parsers of the config, the
//! kernel command line, the module list, the modalias globs and uevents, and the superblocks and
//! partition tables it reads from disks, and builder's initramfs reader) for a bounded time or
//! number of executions each, growing the committed corpus in storage-init/fuzz/corpus.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
/// How long each target runs when neither a time nor a number of executions is given.
pub const DEFAULT_SECONDS: u64 = 60;
/// Where each target's full libFuzzer log goes, under the project root.
pub const LOG_DIR: &str = "target/fuzz";

/// When libFuzzer stops a target: at the first of these limits it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `-max_total_time`: seconds of fuzzing.
    pub seconds: Option<u64>,
    /// `-runs`: executions of the target.
    pub runs: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            seconds: Some(DEFAULT_SECONDS),
            runs: None,
        }
    }
}

impl Limits {
    /// libFuzzer's options for these limits.
    pub fn libfuzzer_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(runs) = self.runs {
            args.push(format!("-runs={runs}"));
        }
        if let Some(seconds) = self.seconds {
            args.push(format!("-max_total_time={seconds}"));
        }
        args
    }

    fn describe(&self) -> String {
        match (self.runs, self.seconds) {
            (Some(runs), Some(seconds)) => format!("{runs} executions or {seconds} s"),
            (Some(runs), None) => format!("{runs} executions"),
            (None, Some(seconds)) => format!("{seconds} s"),
            (None, None) => "until stopped".to_owned(),
        }
    }
}

/// What one target's run did.
#[derive(Debug)]
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    time: Duration,
    corpus_before: usize,
    corpus_after: usize,
    coverage: Option<u64>,
}

pub fn run(sh: &Shell, root: &Path, limits: Limits, only: Option<&str>) -> Result<()> {
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
    let crate_dir = root.join("storage-init");
    let log_dir = root.join(LOG_DIR);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let mut summary = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = crate_dir.join("fuzz/corpus").join(target);
        let log_path = log_dir.join(format!("{target}.log"));
        eprintln!(
            "fuzz: {target} for {} (libFuzzer's log: {})",
            limits.describe(),
            log_path.display()
        );
        // Built first, so the time measured is the fuzzing's alone.
        let status = Command::new("cargo")
            .arg(TOOLCHAIN)
            .args(["fuzz", "build", target])
            .current_dir(&crate_dir)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("building fuzz target {target}"))?;
        if !status.success() {
            bail!("building fuzz target {target} failed ({status})");
        }
        let corpus_before = count_files(&corpus)?;
        let started = Instant::now();
        let (success, log) = run_target(&crate_dir, target, &limits, &log_path)?;
        let time = started.elapsed();
        if !success {
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "fuzz target {target} failed (the crashing input is under storage-init/fuzz/artifacts/{target}, \
                 the whole log in {}):\n{}",
                log_path.display(),
                tail.join("\n")
            );
        }
        summary.push(Outcome {
            target,
            executions: executions(&log),
            time,
            corpus_before,
            corpus_after: count_files(&corpus)?,
            coverage: coverage(&log),
        });
    }
    println!("\n{}", table(&summary));
    Ok(())
}

/// Runs `cargo fuzz run` on one target, its output written to `log_path` as it comes and
/// libFuzzer's progress lines (at every power of two of executions) echoed. Returns whether it
/// succeeded, and the output.
fn run_target(
    crate_dir: &Path,
    target: &str,
    limits: &Limits,
    log_path: &Path,
) -> Result<(bool, String)> {
    let mut log_file = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new("cargo")
        .arg(TOOLCHAIN)
        .args(["fuzz", "run", target, "--"])
        .args(limits.libfuzzer_args())
        .current_dir(crate_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo fuzz on {target}"))?;
    // libFuzzer writes to stderr; cargo fuzz's own stdout is kept apart, after it.
    let stdout = child.stdout.take().expect("piped stdout");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut log = String::new();
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let line = line.with_context(|| format!("reading cargo fuzz's output on {target}"))?;
        writeln!(log_file, "{line}").with_context(|| format!("writing {}", log_path.display()))?;
        if is_progress(&line) {
            eprintln!("fuzz: {target}: {line}");
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for cargo fuzz on {target}"))?;
    let stdout = stdout_reader.join().unwrap_or_default();
    write!(log_file, "{stdout}").with_context(|| format!("writing {}", log_path.display()))?;
    log.push_str(&stdout);
    Ok((status.success(), log))
}

/// libFuzzer's lines worth showing while it runs: `#1048576 pulse cov: …`, `#… DONE …`.
fn is_progress(line: &str) -> bool {
    line.starts_with('#') && (line.contains("pulse") || line.contains("DONE"))
}

fn count_files(dir: &Path) -> Result<usize> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter(|e| e.is_ok()).count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut text = format!(
        "{:12}  {:>12}  {:>11}  {:>13}  {:>12}  {:>8}\n",
        "target", "executions", "time", "corpus before", "corpus after", "cov"
    );
    let or_unknown = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for o in outcomes {
        text.push_str(&format!(
            "{:12}  {:>12}  {:>11}  {:>13}  {:>12}  {:>8}\n",
            o.target,
            or_unknown(o.executions),
            duration(o.time),
            o.corpus_before,
            o.corpus_after,
            or_unknown(o.coverage),
        ));
    }
    text
}

/// `42 s`, `7m 05s`, `1h 02m 05s`.
fn duration(time: Duration) -> String {
    let s = time.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
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

/// The coverage libFuzzer reports last, the `cov:` of its status lines (`#1048576 pulse  cov:
/// 1123 ft: 4567 corp: 420/17Kb …`): the code edges the inputs reached.
pub fn coverage(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .filter(|l| l.starts_with('#'))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "cov:")?;
            words.next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 50 ft: 51 corp: 1/1b exec/s: 0 rss: 30Mb
#1048576\tpulse  cov: 1123 ft: 4567 corp: 420/17Kb lim: 4096 exec/s: 349525 rss: 480Mb
#10000000\tDONE   cov: 1130 ft: 4601 corp: 431/18Kb lim: 4096 exec/s: 333333 rss: 482Mb
Done 10000000 runs in 30 second(s)
";

    #[test]
    fn libfuzzer_run_counts() {
        assert_eq!(
            executions("#2 INITED\nDone 1234567 runs in 30 second(s)\n"),
            Some(1234567)
        );
        assert_eq!(executions(LOG), Some(10_000_000));
        assert_eq!(executions("crashed"), None);
    }

    #[test]
    fn libfuzzer_coverage_is_the_last_one() {
        assert_eq!(coverage(LOG), Some(1130));
        assert_eq!(coverage("#2\tINITED exec/s: 0\n"), None);
        assert_eq!(coverage("crashed"), None);
    }

    #[test]
    fn progress_lines() {
        let shown: Vec<&str> = LOG.lines().filter(|l| is_progress(l)).collect();
        assert_eq!(shown.len(), 2);
        assert!(shown[0].contains("pulse") && shown[1].contains("DONE"));
    }

    #[test]
    fn limits_become_libfuzzer_options() {
        assert_eq!(Limits::default().libfuzzer_args(), ["-max_total_time=60"]);
        let both = Limits {
            seconds: Some(30),
            runs: Some(1000),
        };
        assert_eq!(both.libfuzzer_args(), ["-runs=1000", "-max_total_time=30"]);
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(42)), "42 s");
        assert_eq!(duration(Duration::from_secs(425)), "7m 05s");
        assert_eq!(duration(Duration::from_secs(3725)), "1h 02m 05s");
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
