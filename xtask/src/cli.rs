//! The command line of `cargo xtask`, parsed into a [`Task`] without doing anything, so a test
//! can check that every command the GitHub workflows run is one xtask accepts. Each task's help
//! comes from one entry of [`TASKS`]: `cargo xtask --help` lists their summaries,
//! `cargo xtask <task> --help` shows one in full.

use anyhow::{Context, Result, anyhow, bail};

use crate::cells::Tier;
use crate::{matrix_doc, vm_test};

/// One task's help.
#[derive(Debug)]
pub struct TaskDoc {
    /// The words after `cargo xtask`.
    pub name: &'static str,
    /// What follows the name in its usage line.
    pub arguments: &'static str,
    /// One line for the list of tasks.
    pub summary: &'static str,
    pub options: &'static [OptionDoc],
    /// Defaults, outputs, exit status: paragraphs separated by a blank line, wrapped when shown.
    pub details: &'static str,
}

/// One option of a task: its spelling with its value, and what it does in a line or two.
#[derive(Debug)]
pub struct OptionDoc {
    pub spelling: &'static str,
    pub help: &'static str,
}

const fn option(spelling: &'static str, help: &'static str) -> OptionDoc {
    OptionDoc { spelling, help }
}

const ACCEL_HELP: &str = "QEMU's accelerator (default: $INITOVERLAYFS_ACCEL, else auto: KVM where \
                          the host and board allow it, else TCG)";

/// Every task, in the order `cargo xtask --help` lists them.
pub const TASKS: &[TaskDoc] = &[
    TaskDoc {
        name: "vm-test",
        arguments: "[OPTIONS]",
        summary: "boot the VM cells (fixtures/cells.toml) and print a result table",
        options: &[
            option(
                "--cell PATTERN[,PATTERN…]",
                "the cells whose name matches a pattern: with * or ? a glob over the whole \
                 name, else text the name contains",
            ),
            option(
                "--kernel ID",
                "the cells booting this kernel (an id of fixtures/kernels.toml)",
            ),
            option(
                "--arch ARCH",
                "the cells of this guest architecture: x86_64 or aarch64",
            ),
            option(
                "--tier smoke|default|full",
                "the cells of this tier and those below it (default: default; full adds the \
                 slow cells of the real chain)",
            ),
            option("--accel auto|kvm|tcg", ACCEL_HELP),
            option(
                "--jobs N",
                "cells booted at once (default: as many as the host's cores and memory hold)",
            ),
            option(
                "--retries N",
                "boots a failing cell may take again; a pass on a retry is reported as flaky \
                 (default 0)",
            ),
            option(
                "--repeat N",
                "boot every cell N times, round after round; the real chain's side-by-side \
                 tables then show medians (default 1)",
            ),
            option(
                "--list",
                "print the names of the selected cells and boot nothing",
            ),
            option(
                "--rerun-failed",
                "boot only the cells that failed or broke in the last run \
                 (target/vm-test/summary.json), whatever their tier",
            ),
            option(
                "--shell",
                "build the one selected cell as its test would, then boot it with its console \
                 on this terminal: storage-init's FATAL ends in a shell; Ctrl-A X quits",
            ),
            option(
                "--require-fixtures",
                "a cell whose fixture cannot be fetched from here (an unreachable mirror) is an \
                 error of the run (exit 3), not a skip",
            ),
        ],
        details: "Each cell's artefacts go to target/vm-test/<cell>/ (a retried attempt's to \
                  <cell>-attempt<N>/), the run's results to target/vm-test/summary.json, \
                  summary.md, junit.xml and matrix.md.\n\n\
                  Exit status: 0 every cell passed, 1 a guest failed, 3 the harness or host \
                  broke, 2 a wrong command line.",
    },
    TaskDoc {
        name: "matrix-doc",
        arguments: "[OPTIONS]",
        summary: "write docs/matrix.md, the table of every VM cell and its last result",
        options: &[
            option(
                "--summary PATH|none",
                "the vm-test results shown beside the cells (default: \
                 target/vm-test/summary.json where it exists); none: no results",
            ),
            option(
                "--output PATH",
                "the file to write (default: docs/matrix.md)",
            ),
        ],
        details: "The committed docs/matrix.md is made with `cargo xtask matrix-doc --summary \
                  none`: it then depends on fixtures/cells.toml and fixtures/kernels.toml \
                  alone, not on a local run, and xtask's tests fail when it is out of date. To \
                  see the last run's results beside the cells, write them elsewhere: \
                  `cargo xtask matrix-doc --output target/vm-test/matrix.md`.",
    },
    TaskDoc {
        name: "bench-storage-init",
        arguments: "[OPTIONS]",
        summary: "boot one cell N times and report where storage-init's time goes, step by step",
        options: &[
            option(
                "--cell NAME",
                "the cell to boot (default: x86_64-q35-virtio-blk-debian12-6.12-busybox-quiet, \
                 whose quiet console does not dominate what is measured)",
            ),
            option("--runs N", "boots of the cell (default 5)"),
            option(
                "--icount SHIFT",
                "under TCG, the guest's clock counts instructions (2^SHIFT ns each) instead of \
                 following the host's: the first translation of code and the host's other \
                 load cost no guest time (needs TCG: it sets INITOVERLAYFS_ACCEL's choice to \
                 tcg)",
            ),
        ],
        details: "The cell's `-floor` sibling, where it has one, boots beside it: the same \
                  syscalls without storage-init's decisions. The report goes to \
                  target/bench/storage-init.md.",
    },
    TaskDoc {
        name: "bench-boot",
        arguments: "[OPTIONS]",
        summary: "boot initoverlayfs beside the initramfs chains it replaces, per content size \
                  and storage speed",
        options: &[
            option(
                "--runs N",
                "boots of every chain at every size and profile (default 5)",
            ),
            option(
                "--sizes SIZE[,SIZE…]",
                "content sizes: dracut (Debian's dracut initramfs as it is) or MiB unpacked such \
                 as 128M (default: dracut,128M,512M)",
            ),
            option(
                "--profiles NAME[,NAME…]",
                "storage speeds: sd (≈ 25 MB/s, 1500 requests/s), usb2 (≈ 35 MB/s, 1000 \
                 requests/s), nvme (unthrottled) (default: sd)",
            ),
            option(
                "--chains CHAIN[,CHAIN…]",
                "the chains each round boots, in order: classic-gzip, classic-zstd, \
                 squash-erofs, initoverlayfs, floor, initoverlayfs-systemd (default: all)",
            ),
            option("--memory MIB", "guest RAM (default 2048, at least 256)"),
            option("--jobs N", "boots at a time (default 2)"),
            option(
                "--erofs-compression Z",
                "the image's `mkfs.erofs -z` such as lz4 or lzma,9 or none (default: builder's \
                 choice for the kernel)",
            ),
            option(
                "--pcluster-size BYTES",
                "the image's largest compressed physical cluster, `mkfs.erofs -C` (default: \
                 mkfs.erofs's)",
            ),
            option(
                "--read-ahead-kb KB",
                "storage-init's read_ahead_kb for the boot device (default: the kernel's)",
            ),
            option(
                "--overlay on|off",
                "storage-init's overlay; off mounts the image itself as the read-only root \
                 (default: on)",
            ),
            option(
                "--prefetch off|image",
                "storage-init's prefetch: whether it asks the kernel to read the whole image \
                 ahead (default: off)",
            ),
            option(
                "--image-on esp|ext4",
                "where the image lives: on the ESP, or on an ext4 /boot beside it as Debian \
                 lays it out (default: esp)",
            ),
            option(
                "--kernel ID",
                "the kernel every chain boots (default: debian12-6.12-amd64)",
            ),
            option("--accel auto|kvm|tcg", ACCEL_HELP),
            option(
                "--icount SHIFT",
                "TCG only: the guest clock counts instructions, 2^SHIFT ns each (0 to 10), so \
                 a busy host does not stretch guest time",
            ),
            option(
                "--analyze",
                "add systemd-analyze's figures to each run's console.log (after \
                 multi-user.target, outside the measured boot)",
            ),
            option(
                "--profile-kernel",
                "turn the kernel's profiler on (profile=2): each run's console.log gets the most \
                 sampled kernel functions",
            ),
            option(
                "--report-only",
                "boot nothing: render the reports again from the last run's samples.json",
            ),
        ],
        details: "Every chain boots through UEFI firmware and systemd-boot. The reports go to \
                  target/bench/boot.md, boot.csv and boot.svg.",
    },
    TaskDoc {
        name: "test",
        arguments: "[NEXTEST ARGS…]",
        summary: "provision, fetch fixtures, run every test of the workspace with cargo nextest",
        options: &[],
        details: "Every argument but -h and --help goes to `cargo nextest run --workspace \
                  --no-fail-fast` as it is (a filter such as -E 'test(cells)', --no-capture); \
                  after `--`, those too. `cargo nextest run --help` lists nextest's own options.",
    },
    TaskDoc {
        name: "fuzz",
        arguments: "[OPTIONS]",
        summary: "run storage-init's cargo-fuzz targets for N seconds or N executions each",
        options: &[
            option(
                "--seconds N",
                "how long each target runs (default 60 when --runs is not given)",
            ),
            option(
                "--runs N",
                "how many executions each target runs (libFuzzer's -runs); with --seconds too, \
                 a target stops at whichever limit it reaches first",
            ),
            option(
                "--target T",
                "only this target: config, cmdline, module_list, modalias, superblock or \
                 initramfs (default: each in turn, one at a time)",
            ),
        ],
        details: "Needs a nightly toolchain; installs cargo-fuzz where it is missing. New \
                  inputs grow the corpus in storage-init/fuzz/corpus; a crashing input stops \
                  the run and lands in storage-init/fuzz/artifacts/<target>.\n\n\
                  Each target's libFuzzer log goes to target/fuzz/<target>.log. The closing \
                  table gives per target the executions, the time taken, the corpus files \
                  before and after, and libFuzzer's last coverage figure (cov: the code edges \
                  reached).",
    },
    TaskDoc {
        name: "dist",
        arguments: "[OPTIONS]",
        summary: "build the Debian package target/dist/initoverlayfs_<version>_<arch>.deb and \
                  the RPM target/dist/initoverlayfs-<version>-1.<arch>.rpm, reproducibly",
        options: &[
            option(
                "--arch amd64|arm64",
                "the packages' architecture (default: amd64, the RPM's x86_64); arm64's \
                 (the RPM's aarch64) programs are cross-built with the aarch64 toolchain \
                 cargo xtask provision installs",
            ),
            option(
                "--format deb|rpm",
                "build this package only (default: both)",
            ),
        ],
        details: "Builds storage-init (static: musl where its toolchain is installed, else \
                  glibc) and builder (release), then the packages, dpkg-deb's and rpmbuild's: \
                  builder as /usr/sbin/initoverlayfs, storage-init as \
                  /usr/lib/initoverlayfs/storage-init, a man page per command, bash, zsh and \
                  fish completions, the licence and documentation each distribution asks \
                  for; the RPM also the kernel-install plugin, and scriptlets that convert \
                  every kernel on install and undo it on erase. Install them with `apt \
                  install ./target/dist/<file>.deb` or `dnf install ./target/dist/<file>.rpm`.\n\n\
                  Every timestamp in them is SOURCE_DATE_EPOCH (default: the last commit's \
                  time) and every owner root: two builds of one commit give the same bytes. \
                  Needs dpkg-dev (dpkg-shlibdeps), rpm (rpmbuild) and binutils (strip); cargo \
                  xtask provision installs them.",
    },
    TaskDoc {
        name: "provision",
        arguments: "",
        summary: "install the host tools the VM tests need (apt; root or sudo)",
        options: &[],
        details: "",
    },
    TaskDoc {
        name: "fixtures fetch",
        arguments: "",
        summary: "fetch and unpack every pinned package into the cache",
        options: &[],
        details: "",
    },
    TaskDoc {
        name: "fixtures update",
        arguments: "",
        summary: "re-pin fixtures/kernels.toml and packages.toml to what apt offers now",
        options: &[],
        details: "",
    },
];

/// Where a task's option descriptions start, and the width help text is wrapped to.
const OPTION_COLUMN: usize = 32;
const HELP_WIDTH: usize = 100;

/// `cargo xtask --help`: the usage and every task's summary.
pub fn usage() -> String {
    let column = TASKS.iter().map(|t| t.name.len()).max().unwrap_or(0) + 4;
    let mut text = "\
usage: cargo xtask <task> [OPTIONS]
       cargo xtask <task> --help    the task's options (also: cargo xtask help <task>)

tasks:
"
    .to_owned();
    for task in TASKS {
        text.push_str(&hanging(&format!("  {}", task.name), task.summary, column));
    }
    text
}

/// The help of the tasks `topic` names: one task (`vm-test`, `fixtures fetch`), or the tasks
/// sharing its first word (`fixtures`).
pub fn help(topic: &str) -> String {
    TASKS
        .iter()
        .filter(|t| in_topic(t, topic))
        .map(task_help)
        .collect::<Vec<_>>()
        .join("\n")
}

fn in_topic(task: &TaskDoc, topic: &str) -> bool {
    task.name == topic
        || task
            .name
            .strip_prefix(topic)
            .is_some_and(|rest| rest.starts_with(' '))
}

fn task_help(task: &TaskDoc) -> String {
    let mut text = format!("usage: cargo xtask {}", task.name);
    if !task.arguments.is_empty() {
        text.push(' ');
        text.push_str(task.arguments);
    }
    text.push_str("\n\n");
    let mut summary = task.summary.to_owned();
    summary[..1].make_ascii_uppercase();
    text.push_str(&hanging("", &format!("{summary}."), 0));
    text.push_str("\noptions:\n");
    for option in task.options {
        text.push_str(&hanging(
            &format!("  {}", option.spelling),
            option.help,
            OPTION_COLUMN,
        ));
    }
    text.push_str(&hanging("  -h, --help", "print this help", OPTION_COLUMN));
    for paragraph in task.details.split("\n\n").filter(|p| !p.is_empty()) {
        text.push('\n');
        text.push_str(&hanging("", paragraph, 0));
    }
    text
}

/// `head` then `body` from `column` on, wrapped to [`HELP_WIDTH`] with every further line
/// indented to `column`; `body` starts on a line of its own when `head` reaches the column.
fn hanging(head: &str, body: &str, column: usize) -> String {
    let mut text = head.to_owned();
    let mut width = head.chars().count();
    if width + 2 > column && column > 0 {
        text.push('\n');
        width = 0;
    }
    let mut line_empty = true;
    for word in words(body) {
        let len = word.chars().count();
        if !line_empty && width + 1 + len > HELP_WIDTH {
            text.push('\n');
            width = 0;
            line_empty = true;
        }
        if line_empty {
            text.push_str(&" ".repeat(column - width));
            width = column;
        } else {
            text.push(' ');
            width += 1;
        }
        text.push_str(&word);
        width += len;
        line_empty = false;
    }
    text.push('\n');
    text
}

/// The words of `text`, a command in backquotes (`cargo xtask test`) kept as one so no line
/// break splits it.
fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut in_quote = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if in_quote => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
        in_quote ^= word.matches('`').count() % 2 == 1;
    }
    words
}

/// The cell `bench-storage-init` boots unless told otherwise: quiet, so the serial console
/// does not dominate what is measured.
const BENCH_DEFAULT_CELL: &str = "x86_64-q35-virtio-blk-debian12-6.12-busybox-quiet";

/// One invocation of `cargo xtask`.
#[derive(Debug)]
pub enum Task {
    /// Print help: the usage and every task (None), or the tasks of a topic ([`help`]).
    Help(Option<String>),
    VmTest(vm_test::Options),
    MatrixDoc(matrix_doc::Options),
    /// `cargo nextest run` arguments.
    Test(Vec<String>),
    BenchStorageInit {
        cell: String,
        runs: usize,
        /// `-icount shift=N` for every boot (TCG only).
        icount: Option<u8>,
    },
    BenchBoot(crate::bench_boot::Options),
    Fuzz {
        limits: crate::fuzz::Limits,
        target: Option<String>,
    },
    Dist {
        arch: crate::dist::Arch,
        formats: Vec<crate::dist::Format>,
    },
    Provision,
    FixturesFetch,
    FixturesUpdate,
}

fn is_help(arg: &str) -> bool {
    matches!(arg, "--help" | "-h")
}

/// Parses the arguments after `cargo xtask`. Reads `INITOVERLAYFS_ACCEL` for vm-test's and
/// bench-boot's default accelerator.
pub fn parse(args: &[String]) -> Result<Task> {
    let Some((first, rest)) = args.split_first() else {
        return Ok(Task::Help(None));
    };
    if first == "help" || is_help(first) {
        return help_topic(rest);
    }
    let Some(task) = TASKS.iter().find(|t| {
        t.name
            .split(' ')
            .eq(args.iter().take(t.name.split(' ').count()))
    }) else {
        // `fixtures` alone, or with a subtask it does not have.
        if TASKS.iter().any(|t| in_topic(t, first)) {
            if rest.iter().any(|a| is_help(a)) {
                return Ok(Task::Help(Some(first.clone())));
            }
            bail!("{first} needs one of its tasks: run `cargo xtask {first} --help` to see them");
        }
        bail!(
            "unknown task {first:?}: run `cargo xtask --help` to see the tasks\n\n{}",
            usage()
        );
    };
    let rest = &args[task.name.split(' ').count()..];
    // Help wins over every other argument, before any is judged (an unknown option, a bad
    // INITOVERLAYFS_ACCEL). For `test` only up to `--`: what follows is nextest's.
    let wants_help = match task.name {
        "test" => rest.iter().take_while(|a| *a != "--").any(|a| is_help(a)),
        _ => rest.iter().any(|a| is_help(a)),
    };
    if wants_help {
        return Ok(Task::Help(Some(task.name.to_owned())));
    }
    Ok(match task.name {
        "vm-test" => Task::VmTest(parse_vm_test(rest)?),
        "matrix-doc" => Task::MatrixDoc(parse_matrix_doc(rest)?),
        "test" => Task::Test(rest.to_vec()),
        "bench-storage-init" => parse_bench_storage_init(rest)?,
        "bench-boot" => Task::BenchBoot(parse_bench_boot(rest)?),
        "fuzz" => parse_fuzz(rest)?,
        "dist" => parse_dist(rest)?,
        "provision" | "fixtures fetch" | "fixtures update" => {
            if let Some(arg) = rest.first() {
                return Err(unknown(task.name, arg));
            }
            match task.name {
                "provision" => Task::Provision,
                "fixtures fetch" => Task::FixturesFetch,
                _ => Task::FixturesUpdate,
            }
        }
        other => unreachable!("task {other} is in TASKS but has no parser"),
    })
}

/// `cargo xtask help [TASK]`.
fn help_topic(words: &[String]) -> Result<Task> {
    if words.is_empty() {
        return Ok(Task::Help(None));
    }
    let topic = words.join(" ");
    if !TASKS.iter().any(|t| in_topic(t, &topic)) {
        bail!(
            "help: no task {topic:?}: the tasks are {}",
            TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(Task::Help(Some(topic)))
}

/// The error for an argument `task` does not take.
fn unknown(task: &str, arg: &str) -> anyhow::Error {
    let what = if arg.starts_with('-') {
        "unknown option"
    } else {
        "unexpected argument"
    };
    anyhow!("{task}: {what} {arg:?}: run `cargo xtask {task} --help` to see its options")
}

fn parse_bench_storage_init(args: &[String]) -> Result<Task> {
    let (mut cell, mut runs, mut icount) = (BENCH_DEFAULT_CELL.to_owned(), 5, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cell" => cell = value(&mut args, "--cell")?,
            "--runs" => runs = number(&mut args, "--runs")?,
            "--icount" => icount = Some(icount_shift(&mut args)?),
            other => return Err(unknown("bench-storage-init", other)),
        }
    }
    Ok(Task::BenchStorageInit { cell, runs, icount })
}

/// `--icount SHIFT`'s value, in QEMU's range.
fn icount_shift(args: &mut std::slice::Iter<'_, String>) -> Result<u8> {
    let shift: u8 = number(args, "--icount")?;
    if shift > testvm::machine::Icount::MAX_SHIFT {
        bail!("--icount {shift}: QEMU takes 0 to 10 (2^shift ns per instruction)");
    }
    Ok(shift)
}

fn parse_dist(args: &[String]) -> Result<Task> {
    let mut arch = crate::dist::Arch::default();
    let mut formats = crate::dist::Format::ALL.to_vec();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--arch" => arch = crate::dist::Arch::parse(&value(&mut args, "--arch")?)?,
            "--format" => {
                formats = vec![crate::dist::Format::parse(&value(&mut args, "--format")?)?]
            }
            other => return Err(unknown("dist", other)),
        }
    }
    Ok(Task::Dist { arch, formats })
}

fn parse_fuzz(args: &[String]) -> Result<Task> {
    let (mut seconds, mut runs, mut target) = (None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = Some(positive(&mut args, "--seconds")?),
            "--runs" => runs = Some(positive(&mut args, "--runs")?),
            "--target" => target = Some(value(&mut args, "--target")?),
            other => return Err(unknown("fuzz", other)),
        }
    }
    let limits = match (seconds, runs) {
        (None, None) => crate::fuzz::Limits::default(),
        (seconds, runs) => crate::fuzz::Limits { seconds, runs },
    };
    Ok(Task::Fuzz { limits, target })
}

/// A number of at least 1: libFuzzer reads 0 seconds as no limit at all.
fn positive(args: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<u64> {
    match number(args, flag)? {
        0 => bail!("{flag} 0: expected at least 1"),
        n => Ok(n),
    }
}

fn parse_matrix_doc(args: &[String]) -> Result<matrix_doc::Options> {
    let mut options = matrix_doc::Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--summary" => {
                options.summary = match value(&mut args, "--summary")?.as_str() {
                    "none" => matrix_doc::SummaryChoice::None,
                    path => matrix_doc::SummaryChoice::Path(path.into()),
                }
            }
            "--output" => options.output = Some(value(&mut args, "--output")?.into()),
            other => return Err(unknown("matrix-doc", other)),
        }
    }
    Ok(options)
}

fn parse_vm_test(args: &[String]) -> Result<vm_test::Options> {
    let mut options = vm_test::Options {
        accel: crate::accel::AccelChoice::from_env()?,
        repeat: 1,
        ..vm_test::Options::default()
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cell" => options.filter.name = Some(value(&mut args, "--cell")?),
            "--kernel" => options.filter.kernel = Some(value(&mut args, "--kernel")?),
            "--arch" => options.filter.arch = Some(value(&mut args, "--arch")?),
            "--tier" => {
                options.filter.tier = Some(match value(&mut args, "--tier")?.as_str() {
                    "smoke" => Tier::Smoke,
                    "default" => Tier::Default,
                    "full" => Tier::Full,
                    other => bail!("--tier {other:?}: expected smoke, default or full"),
                })
            }
            "--list" => options.list = true,
            "--rerun-failed" => options.rerun_failed = true,
            "--shell" => options.shell = true,
            "--require-fixtures" => options.require_fixtures = true,
            "--accel" => options.accel = value(&mut args, "--accel")?.parse()?,
            "--jobs" => {
                let jobs: usize = number(&mut args, "--jobs")?;
                if jobs == 0 {
                    bail!("--jobs 0: at least one cell must run at a time");
                }
                options.jobs = Some(jobs);
            }
            "--retries" => options.retries = number(&mut args, "--retries")?,
            "--repeat" => {
                let repeat: u32 = number(&mut args, "--repeat")?;
                if repeat == 0 {
                    bail!("--repeat 0: every cell boots at least once");
                }
                options.repeat = repeat;
            }
            other => return Err(unknown("vm-test", other)),
        }
    }
    // Without --tier, the default tier: the slow `full` cells only when asked for (a rerun
    // takes the failed cells whatever their tier).
    if !options.rerun_failed {
        options.filter.tier.get_or_insert(Tier::Default);
    }
    Ok(options)
}

fn parse_bench_boot(args: &[String]) -> Result<crate::bench_boot::Options> {
    let mut options = crate::bench_boot::Options {
        accel: crate::accel::AccelChoice::from_env()?,
        ..crate::bench_boot::Options::default()
    };
    let list = |text: String| -> Vec<String> {
        text.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => options.runs = number(&mut args, "--runs")?,
            "--jobs" => options.jobs = number(&mut args, "--jobs")?,
            "--sizes" => {
                options.sizes = list(value(&mut args, "--sizes")?)
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_>>()?
            }
            "--profiles" => {
                options.profiles = list(value(&mut args, "--profiles")?)
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_>>()?
            }
            "--chains" => {
                let mut chains: Vec<crate::bench_report::Chain> = Vec::new();
                for name in list(value(&mut args, "--chains")?) {
                    let chain = name.parse()?;
                    if chains.contains(&chain) {
                        bail!("--chains names {name} twice");
                    }
                    chains.push(chain);
                }
                options.chains = chains;
            }
            "--memory" => options.memory_mib = number(&mut args, "--memory")?,
            "--erofs-compression" => {
                let z = value(&mut args, "--erofs-compression")?;
                builder::erofs::ErofsCompression::parse(&z)
                    .map_err(|e| anyhow::anyhow!("--erofs-compression: {e}"))?;
                options.erofs_compression = Some(z);
            }
            "--pcluster-size" => {
                options.pcluster_bytes = Some(number(&mut args, "--pcluster-size")?)
            }
            "--read-ahead-kb" => {
                options.read_ahead_kb = Some(number(&mut args, "--read-ahead-kb")?)
            }
            "--overlay" => {
                options.overlay = match value(&mut args, "--overlay")?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => bail!("--overlay {other:?}: expected on or off"),
                }
            }
            "--report-only" => options.report_only = true,
            "--analyze" => options.analyze = true,
            "--profile-kernel" => options.profile_kernel = true,
            "--icount" => options.icount = Some(icount_shift(&mut args)?),
            "--prefetch" => {
                options.prefetch = match value(&mut args, "--prefetch")?.as_str() {
                    "off" => storage_init::config::Prefetch::Off,
                    "image" => storage_init::config::Prefetch::Image,
                    other => bail!("--prefetch {other:?}: expected off or image"),
                }
            }
            "--image-on" => {
                options.image_on = match value(&mut args, "--image-on")?.as_str() {
                    "esp" => crate::disk_spec::BootFsKind::Vfat,
                    "ext4" => crate::disk_spec::BootFsKind::Ext4,
                    other => bail!("--image-on {other:?}: expected esp or ext4"),
                }
            }
            "--kernel" => options.kernel = value(&mut args, "--kernel")?,
            "--accel" => options.accel = value(&mut args, "--accel")?.parse()?,
            other => return Err(unknown("bench-boot", other)),
        }
    }
    if options.runs == 0
        || options.jobs == 0
        || options.sizes.is_empty()
        || options.profiles.is_empty()
        || options.chains.is_empty()
    {
        bail!(
            "bench-boot: --runs, --jobs, --sizes, --profiles and --chains need at least one each"
        );
    }
    if options.memory_mib < crate::bench_boot::MIN_MEMORY_MIB {
        bail!(
            "bench-boot: --memory {}: below {} MiB even the mini initramfs's boot cannot reach \
             multi-user.target",
            options.memory_mib,
            crate::bench_boot::MIN_MEMORY_MIB
        );
    }
    Ok(options)
}

fn value(args: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<String> {
    match args.next() {
        Some(v) => Ok(v.clone()),
        None => bail!("{flag} needs a value"),
    }
}

fn number<T: std::str::FromStr>(args: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = value(args, flag)?;
    text.parse()
        .with_context(|| format!("{flag} {text:?}: expected a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Task> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn vm_test_options() {
        let Task::VmTest(options) = parse_line(
            "vm-test --cell x86_64-*-nvme-* --jobs 2 --retries 1 --repeat 3 --accel tcg",
        )
        .unwrap() else {
            panic!("not vm-test");
        };
        assert_eq!(options.jobs, Some(2));
        assert_eq!(options.retries, 1);
        assert_eq!(options.repeat, 3);
        assert_eq!(options.filter.name.as_deref(), Some("x86_64-*-nvme-*"));
        for bad in [
            "vm-test --jobs 0",
            "vm-test --repeat 0",
            "vm-test --jobs two",
            "vm-test --tier huge",
            "vm-test --frobnicate",
            "vm-test --cell",
            "fixtures",
            "fixtures fetch now",
            "provision --yes",
            "nonsense",
            "help nonsense",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn bench_boot_options() {
        let Task::BenchBoot(options) = parse_line(
            "bench-boot --runs 3 --sizes dracut,256M --profiles usb2 --erofs-compression lz4 --jobs 1",
        )
        .unwrap() else {
            panic!("not bench-boot");
        };
        assert_eq!(
            options.command(),
            "cargo xtask bench-boot --runs 3 --sizes dracut,256M --profiles usb2 --jobs 1 --erofs-compression lz4"
        );
        let Task::BenchBoot(options) = parse_line(
            "bench-boot --chains initoverlayfs,classic-gzip --memory 768 --image-on ext4",
        )
        .unwrap() else {
            panic!("not bench-boot");
        };
        assert_eq!(
            options.command(),
            "cargo xtask bench-boot --runs 5 --sizes dracut,128M,512M --profiles sd --jobs 2 \
             --chains initoverlayfs,classic-gzip --memory 768 --image-on ext4"
        );
        for bad in [
            "bench-boot --runs 0",
            "bench-boot --sizes 1G",
            "bench-boot --profiles sata",
            "bench-boot --erofs-compression LZ4",
            "bench-boot --profiles ,",
            "bench-boot --overlay maybe",
            "bench-boot --chains classic",
            "bench-boot --chains floor,floor",
            "bench-boot --chains ,",
            "bench-boot --memory 64",
            "bench-boot --image-on vfat",
            "bench-boot --icount 11",
            "bench-boot --prefetch all",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn fuzz_options() {
        use crate::fuzz::Limits;
        let limits = |line: &str| match parse_line(line) {
            Ok(Task::Fuzz { limits, .. }) => limits,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(limits("fuzz"), Limits::default());
        assert_eq!(
            limits("fuzz --runs 10000000"),
            Limits {
                seconds: None,
                runs: Some(10_000_000)
            }
        );
        assert_eq!(
            limits("fuzz --seconds 30"),
            Limits {
                seconds: Some(30),
                runs: None
            }
        );
        assert_eq!(
            limits("fuzz --runs 5 --seconds 30"),
            Limits {
                seconds: Some(30),
                runs: Some(5)
            }
        );
        let Ok(Task::Fuzz { target, .. }) = parse_line("fuzz --target superblock") else {
            panic!("not fuzz");
        };
        assert_eq!(target.as_deref(), Some("superblock"));
        for bad in [
            "fuzz --runs 0",
            "fuzz --seconds 0",
            "fuzz --runs many",
            "fuzz --runs -1",
            "fuzz --runs",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn dist_options() {
        use crate::dist::{Arch, Format};
        let dist = |line: &str| match parse_line(line) {
            Ok(Task::Dist { arch, formats }) => (arch, formats),
            other => panic!("{line}: {other:?}"),
        };
        let both = Format::ALL.to_vec();
        assert_eq!(dist("dist"), (Arch::Amd64, both.clone()));
        assert_eq!(dist("dist --arch amd64"), (Arch::Amd64, both.clone()));
        assert_eq!(dist("dist --arch arm64"), (Arch::Arm64, both));
        assert_eq!(
            dist("dist --format rpm --arch arm64"),
            (Arch::Arm64, vec![Format::Rpm])
        );
        assert_eq!(dist("dist --format deb"), (Arch::Amd64, vec![Format::Deb]));
        for bad in [
            "dist --arch x86_64",
            "dist --arch",
            "dist amd64",
            "dist --format",
            "dist --format tar",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} was accepted");
        }
    }

    fn is_help_of(task: &Result<Task>, topic: &str) -> bool {
        matches!(task, Ok(Task::Help(Some(t))) if t == topic)
    }

    /// Every option each task takes, with a value it takes: the parser must accept each, and
    /// the task's help must name each and no other.
    const ACCEPTED: &[(&str, &[&str])] = &[
        (
            "vm-test",
            &[
                "--cell x86_64-*-nvme-*,sd",
                "--kernel debian12-6.1-amd64",
                "--arch aarch64",
                "--tier full",
                "--accel tcg",
                "--jobs 2",
                "--retries 1",
                "--repeat 2",
                "--list",
                "--rerun-failed",
                "--shell",
                "--require-fixtures",
            ],
        ),
        ("matrix-doc", &["--summary none", "--output target/m.md"]),
        (
            "bench-storage-init",
            &["--cell x86_64-q35", "--runs 9", "--icount 1"],
        ),
        (
            "bench-boot",
            &[
                "--runs 1",
                "--sizes dracut,256M",
                "--profiles usb2,nvme",
                "--chains floor,initoverlayfs",
                "--memory 768",
                "--jobs 1",
                "--erofs-compression lzma,9",
                "--pcluster-size 65536",
                "--read-ahead-kb 128",
                "--overlay off",
                "--prefetch image",
                "--image-on ext4",
                "--kernel debian12-6.1-amd64",
                "--accel kvm",
                "--icount 1",
                "--analyze",
                "--profile-kernel",
                "--report-only",
            ],
        ),
        ("test", &[]),
        ("fuzz", &["--seconds 5", "--runs 1000", "--target config"]),
        ("dist", &["--arch arm64", "--format rpm"]),
        ("provision", &[]),
        ("fixtures fetch", &[]),
        ("fixtures update", &[]),
    ];

    /// The options a task's help lists, by name (`--cell`).
    fn documented(task: &TaskDoc) -> Vec<&'static str> {
        task.options
            .iter()
            .map(|o| o.spelling.split(' ').next().unwrap())
            .collect()
    }

    #[test]
    fn every_task_has_help() {
        assert!(matches!(parse_line(""), Ok(Task::Help(None))));
        assert!(matches!(parse_line("--help"), Ok(Task::Help(None))));
        assert!(matches!(parse_line("help"), Ok(Task::Help(None))));
        for task in TASKS {
            for line in [
                format!("{} --help", task.name),
                format!("{} -h", task.name),
                format!("help {}", task.name),
                format!("--help {}", task.name),
            ] {
                assert!(is_help_of(&parse_line(&line), task.name), "{line}");
            }
            let text = help(task.name);
            assert!(
                text.starts_with(&format!("usage: cargo xtask {}", task.name)),
                "{text}"
            );
            assert!(
                usage().contains(&format!("  {}  ", task.name)),
                "{} missing from the usage",
                task.name
            );
        }
        // Help comes before the other arguments are judged.
        assert!(is_help_of(
            &parse_line("vm-test --frobnicate --help"),
            "vm-test"
        ));
        assert!(is_help_of(
            &parse_line("bench-boot --runs 0 -h"),
            "bench-boot"
        ));
        // The tasks sharing a first word, together.
        assert!(is_help_of(&parse_line("fixtures --help"), "fixtures"));
        assert!(is_help_of(&parse_line("help fixtures"), "fixtures"));
        let fixtures = help("fixtures");
        assert!(fixtures.contains("cargo xtask fixtures fetch"));
        assert!(fixtures.contains("cargo xtask fixtures update"));
        let error = format!("{:#}", parse_line("help nonsense").unwrap_err());
        assert!(
            error.contains("nonsense") && error.contains("vm-test"),
            "{error}"
        );
    }

    #[test]
    fn help_names_every_accepted_option() {
        let tasks: Vec<&str> = ACCEPTED.iter().map(|(task, _)| *task).collect();
        let documented_tasks: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
        assert_eq!(
            tasks, documented_tasks,
            "ACCEPTED and TASKS list other tasks"
        );
        for (task, options) in ACCEPTED {
            let doc = TASKS.iter().find(|t| t.name == *task).unwrap();
            let text = help(task);
            let mut names = Vec::new();
            for option in *options {
                let line = format!("{task} {option}");
                let parsed = parse_line(&line);
                assert!(
                    matches!(parsed, Ok(ref t) if !matches!(t, Task::Help(_))),
                    "`cargo xtask {line}` does not parse: {parsed:?}"
                );
                let name = option.split(' ').next().unwrap();
                assert!(
                    text.lines()
                        .any(|l| l.trim_start().split(' ').next() == Some(name)),
                    "`cargo xtask {task} --help` does not describe {name}:\n{text}"
                );
                names.push(name);
            }
            assert_eq!(
                names,
                documented(doc),
                "{task}: the help lists other options than the parser takes"
            );
        }
    }

    /// ACCEPTED against the parsers themselves: every option a `parse_<task>` function matches
    /// on is in the table, so an option added to a parser without its help fails here.
    #[test]
    fn every_parsed_option_is_in_the_table() {
        let source = include_str!("cli.rs");
        let source = &source[..source.find("#[cfg(test)]").unwrap()];
        let literal = regex::Regex::new(r#""(--[a-z0-9-]+)""#).unwrap();
        let mut parsed = Vec::new();
        for chunk in source.split("\nfn parse_").skip(1) {
            let (function, body) = chunk.split_once('(').unwrap();
            let body = &body[..body.find("\n}\n").unwrap()];
            let task = function.replace('_', "-");
            let mut matched: Vec<&str> = body
                .lines()
                // The patterns of a match arm: left of its `=>`.
                .filter_map(|l| l.split_once("=>").map(|(pattern, _)| pattern))
                .flat_map(|l| literal.captures_iter(l).map(|c| c.get(1).unwrap().as_str()))
                .collect();
            matched.sort_unstable();
            let (_, options) = ACCEPTED
                .iter()
                .find(|(t, _)| *t == task)
                .unwrap_or_else(|| panic!("parse_{function}: no task {task} in ACCEPTED"));
            let mut listed: Vec<&str> = options
                .iter()
                .map(|o| o.split(' ').next().unwrap())
                .collect();
            listed.sort_unstable();
            assert_eq!(matched, listed, "parse_{function} and ACCEPTED differ");
            parsed.push(task);
        }
        for (task, options) in ACCEPTED {
            assert!(
                options.is_empty() || parsed.iter().any(|t| t == task),
                "{task} takes options but has no parse_{} to check",
                task.replace('-', "_")
            );
        }
    }

    #[test]
    fn unknown_option_points_to_the_task_help() {
        for task in TASKS.iter().filter(|t| t.name != "test") {
            for arg in ["--frobnicate", "stray"] {
                let line = format!("{} {arg}", task.name);
                let error = format!("{:#}", parse_line(&line).unwrap_err());
                assert!(
                    error.contains(arg)
                        && error.contains(&format!("`cargo xtask {} --help`", task.name)),
                    "{line}: {error}"
                );
            }
        }
        let error = format!("{:#}", parse_line("fixtures").unwrap_err());
        assert!(error.contains("cargo xtask fixtures --help"), "{error}");
    }

    /// `cargo xtask test --help` is xtask's; nextest gets every other argument, and after `--`
    /// a --help too.
    #[test]
    fn test_help_and_nextest_arguments() {
        assert!(is_help_of(&parse_line("test --help"), "test"));
        assert!(is_help_of(&parse_line("test -E test(cells) -h"), "test"));
        for line in ["test --no-capture -E test(cells)", "test -- --help"] {
            let Ok(Task::Test(args)) = parse_line(line) else {
                panic!("{line} is not a test task");
            };
            assert_eq!(args.join(" "), line.strip_prefix("test ").unwrap());
        }
    }

    /// The defaults the help states are the code's.
    #[test]
    fn help_states_the_defaults() {
        let storage = help("bench-storage-init");
        assert!(storage.contains(BENCH_DEFAULT_CELL), "{storage}");
        let boot = help("bench-boot");
        let defaults = crate::bench_boot::Options::default();
        for expected in [
            crate::bench_boot::DEFAULT_KERNEL.to_owned(),
            format!(
                "default {}, at least {}",
                crate::bench_boot::DEFAULT_MEMORY_MIB,
                crate::bench_boot::MIN_MEMORY_MIB
            ),
            format!("(default {})", defaults.runs),
            format!("boots at a time (default {})", defaults.jobs),
            format!(
                "default: {}",
                defaults
                    .sizes
                    .iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ] {
            assert!(boot.contains(&expected), "{expected} missing:\n{boot}");
        }
        for chain in crate::bench_report::Chain::ALL {
            assert!(boot.contains(chain.name()), "{}", chain.name());
        }
        for profile in crate::bench_boot::Profile::ALL {
            assert!(
                boot.contains(&format!("{} (", profile.name())),
                "{}",
                profile.name()
            );
        }
        let fuzz = help("fuzz");
        assert!(
            fuzz.contains(&format!("(default {} when", crate::fuzz::DEFAULT_SECONDS)),
            "{fuzz}"
        );
        assert!(fuzz.contains(crate::fuzz::LOG_DIR), "{fuzz}");
        for target in crate::fuzz::TARGETS {
            assert!(fuzz.contains(target), "{target}");
        }
        let matrix = help("matrix-doc");
        assert!(matrix.contains(matrix_doc::MATRIX_MD));
        assert!(matrix.contains(matrix_doc::LAST_SUMMARY));
        assert!(matrix.contains(matrix_doc::REGENERATE));
    }

    #[test]
    fn help_fits_in_100_columns() {
        let texts = std::iter::once(usage()).chain(TASKS.iter().map(|t| help(t.name)));
        for text in texts {
            for line in text.lines() {
                assert!(line.chars().count() <= HELP_WIDTH, "too long: {line}");
            }
        }
    }

    /// Every `cargo xtask …` line the GitHub workflows run parses: a renamed task or flag
    /// fails here, not on GitHub.
    #[test]
    fn every_workflow_command_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join(".github/workflows");
        // Workflow expressions stand for a value: any word will do for the parser.
        let expression = regex::Regex::new(r"\$\{\{[^}]*\}\}").unwrap();
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let Some((_, command)) = line.split_once("cargo xtask ") else {
                    continue;
                };
                if line.trim_start().starts_with('#') {
                    continue;
                }
                let command = expression.replace_all(command, "x86_64");
                let words: Vec<String> = command
                    .split_whitespace()
                    .take_while(|w| !matches!(*w, "|" | "&&" | ";" | ">" | ">>" | "2>&1"))
                    .map(|w| w.trim_matches(['"', '\'']).to_owned())
                    .collect();
                parse(&words).unwrap_or_else(|e| {
                    panic!(
                        "{}: `cargo xtask {command}` does not parse: {e:#}",
                        path.display()
                    )
                });
                found += 1;
            }
        }
        assert!(found > 0, "no workflow runs cargo xtask");
    }
}
