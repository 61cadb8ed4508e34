//! `cargo xtask <task>`: dispatches to one module per task.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use xshell::Shell;
use xtask::{bench_storage_init, cells::Tier, fixtures, fuzz, provision, test, vm_test};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  vm-test [--cell PATTERN] [--kernel ID] [--arch ARCH] [--tier smoke|default]
          [--accel auto|kvm|tcg] [--list]
                      boot the VM cells (fixtures/cells.toml) and print a result table
  bench-storage-init [--cell NAME] [--runs N]
                      boot a cell N times (default: the quiet 6.12 smoke cell, 5) and report where
                      storage-init's time goes, step by step (target/bench/storage-init.md)
  test [NEXTEST ARGS]   provision, fetch fixtures, run every test with cargo nextest
  fuzz [--seconds N] [--target T]
                      run storage-init's cargo-fuzz targets N seconds each (default 60)
  provision             install the host tools the VM tests need (apt; root or sudo)
  fixtures fetch        fetch and unpack every pinned package into the cache
  fixtures update       re-pin fixtures/kernels.toml and packages.toml to what apt offers now
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    let root = vm_test::project_root();
    sh.change_dir(&root);
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match (task.as_str(), rest) {
        ("vm-test", rest) => vm_test::run(&sh, &root, &parse_vm_test(rest)?),
        ("test", rest) => test::run(&sh, &root, rest),
        ("bench-storage-init", rest) => {
            let (mut cell, mut runs) = (
                "x86_64-q35-virtio-blk-debian12-6.12-busybox-quiet".to_owned(),
                5,
            );
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--cell" => cell = value(&mut args, "--cell")?,
                    "--runs" => {
                        runs = value(&mut args, "--runs")?
                            .parse()
                            .context("--runs takes a number")?
                    }
                    other => bail!("bench-storage-init: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            bench_storage_init::run(&sh, &root, &cell, runs)
        }
        ("provision", []) => provision::ensure(&sh),
        ("fuzz", rest) => {
            let (mut seconds, mut target) = (60, None);
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--seconds" => {
                        seconds = value(&mut args, "--seconds")?
                            .parse()
                            .context("--seconds takes a number")?
                    }
                    "--target" => target = Some(value(&mut args, "--target")?),
                    other => bail!("fuzz: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            fuzz::run(&sh, &root, seconds, target.as_deref())
        }
        ("fixtures", [sub]) if sub == "update" => fixtures::update(&sh, &root),
        ("fixtures", [sub]) if sub == "fetch" => {
            for pin in fixtures::read_kernels(&root)?.kernel {
                let kernel = match fixtures::fetch_kernel(&sh, &pin) {
                    Ok(kernel) => kernel,
                    Err(error) => match fixtures::unavailable(&error) {
                        Some(reason) => {
                            println!("{} skipped: {reason}", pin.id);
                            continue;
                        }
                        None => return Err(error),
                    },
                };
                println!(
                    "{} {} {}",
                    kernel.fetched.id,
                    kernel.fetched.version,
                    kernel.fetched.root.display()
                );
            }
            for package in fixtures::read_packages(&root)?.package {
                let fetched = fixtures::fetch_deb(&sh, &package, false)?;
                println!(
                    "{} {} {}",
                    fetched.id,
                    fetched.version,
                    fetched.root.display()
                );
            }
            Ok(())
        }
        ("help" | "--help" | "-h", _) => {
            print!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown task {:?}\n\n{USAGE}", args.join(" ")),
    }
}

fn parse_vm_test(args: &[String]) -> Result<vm_test::Options> {
    let mut options = vm_test::Options {
        accel: xtask::accel::AccelChoice::from_env()?,
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
                    other => bail!("--tier {other:?}: expected smoke or default"),
                })
            }
            "--list" => options.list = true,
            "--accel" => options.accel = value(&mut args, "--accel")?.parse()?,
            other => bail!("vm-test: unknown option {other:?}\n\n{USAGE}"),
        }
    }
    Ok(options)
}

fn value(args: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<String> {
    match args.next() {
        Some(v) => Ok(v.clone()),
        None => bail!("{flag} needs a value"),
    }
}
