//! `cargo xtask <task>`: dispatches to one module per task.

use std::process::ExitCode;

use anyhow::Result;
use xshell::Shell;
use xtask::cli::{self, Task};
use xtask::{bench_storage_init, dist, fixtures, fuzz, matrix_doc, provision, test, vm_test};

/// A wrong command line.
const EXIT_USAGE: u8 = 2;
/// vm-test: the harness or the host broke (QEMU would not start, a fixture or tool is
/// missing), apart from guests that failed (1); CI can tell "fix the runner" from "fix the code".
const EXIT_INFRASTRUCTURE: u8 = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match cli::parse(&args) {
        Ok(task) => task,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let is_vm_test = matches!(task, Task::VmTest(_));
    match run(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            match error.downcast_ref::<vm_test::MatrixFailed>() {
                Some(failed) if failed.errors == 0 => ExitCode::FAILURE,
                Some(_) => ExitCode::from(EXIT_INFRASTRUCTURE),
                // vm-test stopped before judging any cell: provisioning, fixtures, the build.
                None if is_vm_test => ExitCode::from(EXIT_INFRASTRUCTURE),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn run(task: Task) -> Result<()> {
    let sh = Shell::new()?;
    let root = vm_test::project_root();
    sh.change_dir(&root);
    match task {
        Task::Help(None) => {
            print!("{}", cli::usage());
            Ok(())
        }
        Task::Help(Some(topic)) => {
            print!("{}", cli::help(&topic));
            Ok(())
        }
        Task::VmTest(options) => vm_test::run(&sh, &root, &options),
        Task::MatrixDoc(options) => matrix_doc::run(&root, &options),
        Task::Test(nextest_args) => test::run(&sh, &root, &nextest_args),
        Task::BenchStorageInit { cell, runs, icount } => {
            bench_storage_init::run(&sh, &root, &cell, runs, icount)
        }
        Task::BenchBoot(options) => xtask::bench_boot::run(&sh, &root, &options),
        Task::Dist { arch, formats } => dist::run(&sh, &root, arch, &formats),
        Task::Provision => provision::ensure(&sh),
        Task::Fuzz { limits, target } => fuzz::run(&sh, &root, limits, target.as_deref()),
        Task::FixturesUpdate => fixtures::update(&sh, &root),
        Task::FixturesFetch => {
            for pin in fixtures::read_kernels(&root)?.kernel {
                let kernel = match fixtures::fetch_kernel(&sh, &pin) {
                    Ok(kernel) => kernel,
                    Err(fixtures::FetchError::Unavailable(reason)) => {
                        println!("{} skipped: {reason}", pin.id);
                        continue;
                    }
                    Err(fixtures::FetchError::Failed(error)) => return Err(error),
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
    }
}
