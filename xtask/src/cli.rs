//! The command line of `cargo xtask`, parsed into a [`Task`] without doing anything, so a test
//! can check that every command the GitHub workflows run is one xtask accepts.

use anyhow::{Context, Result, bail};

use crate::cells::Tier;
use crate::vm_test;

pub const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  vm-test [--cell PATTERN[,PATTERN…]] [--kernel ID] [--arch ARCH] [--tier smoke|default|full]
          [--accel auto|kvm|tcg] [--jobs N] [--retries N] [--repeat N] [--list]
                      boot the VM cells (fixtures/cells.toml) and print a result table;
                      --repeat boots them all N times, round after round (the real chain's
                      side-by-side table then shows medians);
                      exit 0 all passed, 1 a guest failed, 3 the harness or host broke
  bench-storage-init [--cell NAME] [--runs N]
                      boot a cell N times (default: the quiet 6.12 smoke cell, 5) and report where
                      storage-init's time goes, step by step, beside the cell's `-floor` sibling
                      (the same syscalls without storage-init) where it has one
                      (target/bench/storage-init.md)
  bench-boot [--runs N] [--sizes dracut,128M,512M] [--profiles sd,usb2,nvme]
             [--chains classic-gzip,classic-zstd,squash-erofs,initoverlayfs,floor]
             [--memory MIB] [--jobs N] [--erofs-compression Z] [--pcluster-size BYTES]
             [--read-ahead-kb KB] [--overlay on|off] [--prefetch off|image]
             [--image-on esp|ext4] [--kernel ID]
             [--accel auto|kvm|tcg] [--icount SHIFT] [--analyze] [--profile-kernel]
             [--report-only]
                      boot initoverlayfs and the initramfs chains it replaces side by side
                      through UEFI firmware and systemd-boot, per content size and storage
                      speed (default: 5 runs of every chain at dracut,128M,512M on sd, 2048 MiB,
                      2 boots at a time); writes target/bench/boot.md, boot.csv and boot.svg;
                      --image-on ext4 puts the image on an ext4 /boot beside the ESP;
                      --icount 1 counts guest time in instructions (TCG only);
                      --analyze adds systemd-analyze's figures to each run's console.log,
                      --profile-kernel the kernel's most sampled functions;
                      --report-only renders them again from the last run's samples.json
  test [NEXTEST ARGS]   provision, fetch fixtures, run every test with cargo nextest
  fuzz [--seconds N] [--target T]
                      run storage-init's cargo-fuzz targets N seconds each (default 60)
  provision             install the host tools the VM tests need (apt; root or sudo)
  fixtures fetch        fetch and unpack every pinned package into the cache
  fixtures update       re-pin fixtures/kernels.toml and packages.toml to what apt offers now
";

/// The cell `bench-storage-init` boots unless told otherwise: quiet, so the serial console
/// does not dominate what is measured.
const BENCH_DEFAULT_CELL: &str = "x86_64-q35-virtio-blk-debian12-6.12-busybox-quiet";

/// One invocation of `cargo xtask`.
#[derive(Debug)]
pub enum Task {
    Help,
    VmTest(vm_test::Options),
    /// `cargo nextest run` arguments.
    Test(Vec<String>),
    BenchStorageInit {
        cell: String,
        runs: usize,
    },
    BenchBoot(crate::bench_boot::Options),
    Fuzz {
        seconds: u64,
        target: Option<String>,
    },
    Provision,
    FixturesFetch,
    FixturesUpdate,
}

/// Parses the arguments after `cargo xtask`. Reads `INITOVERLAYFS_ACCEL` for vm-test's
/// default accelerator.
pub fn parse(args: &[String]) -> Result<Task> {
    let Some((task, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    Ok(match (task.as_str(), rest) {
        ("vm-test", rest) => Task::VmTest(parse_vm_test(rest)?),
        ("test", rest) => Task::Test(rest.to_vec()),
        ("bench-storage-init", rest) => {
            let (mut cell, mut runs) = (BENCH_DEFAULT_CELL.to_owned(), 5);
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--cell" => cell = value(&mut args, "--cell")?,
                    "--runs" => runs = number(&mut args, "--runs")?,
                    other => bail!("bench-storage-init: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            Task::BenchStorageInit { cell, runs }
        }
        ("bench-boot", rest) => Task::BenchBoot(parse_bench_boot(rest)?),
        ("provision", []) => Task::Provision,
        ("fuzz", rest) => {
            let (mut seconds, mut target) = (60, None);
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--seconds" => seconds = number(&mut args, "--seconds")?,
                    "--target" => target = Some(value(&mut args, "--target")?),
                    other => bail!("fuzz: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            Task::Fuzz { seconds, target }
        }
        ("fixtures", [sub]) if sub == "update" => Task::FixturesUpdate,
        ("fixtures", [sub]) if sub == "fetch" => Task::FixturesFetch,
        ("help" | "--help" | "-h", _) => Task::Help,
        _ => bail!("unknown task {:?}\n\n{USAGE}", args.join(" ")),
    })
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
            other => bail!("vm-test: unknown option {other:?}\n\n{USAGE}"),
        }
    }
    // Without --tier, the default tier: the slow `full` cells only when asked for.
    options.filter.tier.get_or_insert(Tier::Default);
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
            "--icount" => {
                let shift: u8 = number(&mut args, "--icount")?;
                if shift > testvm::machine::Icount::MAX_SHIFT {
                    bail!("--icount {shift}: QEMU takes 0 to 10 (2^shift ns per instruction)");
                }
                options.icount = Some(shift);
            }
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
            other => bail!("bench-boot: unknown option {other:?}\n\n{USAGE}"),
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
            "nonsense",
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
