//! The storage-init binary: PID 1 of the mini initramfs, or with `--prepare-only` a systemd
//! service in a mini initramfs that runs systemd; with `--prefetch`, the background reader PID 1
//! starts for `prefetch image`. All logic is in the library.

use std::time::Instant;

const USAGE: &str = "usage: storage-init               (as PID 1: the /init of a mini initramfs)
       storage-init --prepare-only (as a systemd service in the initramfs: mount the
                                    initoverlayfs on /initoverlayfs, then exit)
       storage-init --prefetch     (started by PID 1 for `prefetch image`: read the image
                                    on standard input ahead, then exit)";

fn main() {
    let start = Instant::now();
    let mut log = storage_init::log::Log::new(start);
    if rustix::process::getpid().is_init() {
        // As PID 1 the arguments are the kernel's init arguments, passed on to the next init.
        let (fatal, emergency) = storage_init::boot::run(&mut log);
        let line = fatal.to_string();
        log.fatal(&line);
        storage_init::emergency::act(&emergency, &mut log, &line)
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--prepare-only"] => match storage_init::boot::prepare_only(&mut log) {
            Ok(()) => std::process::exit(0),
            Err(fatal) => {
                let line = fatal.to_string();
                // Once, through the kernel log (which the journal reads and the console
                // prints); the unit's OnFailure= then takes over.
                log.fatal(&line);
                std::process::exit(1)
            }
        },
        [storage_init::boot::PREFETCH_ARG] => match storage_init::boot::prefetch_stdin(&mut log) {
            Ok(_) => std::process::exit(0),
            // Not the boot's failure: the boot goes on without the read-ahead.
            Err(fatal) => {
                log.warn(&fatal.to_string());
                std::process::exit(1)
            }
        },
        ["--help"] => println!("{USAGE}"),
        _ => {
            // As PID 1 it mounts over /dev, /proc, /sys and /run and deletes the root
            // filesystem's files: only ever as the /init of an initramfs.
            eprintln!("storage-init: refusing to run: not PID 1 and not --prepare-only\n{USAGE}");
            std::process::exit(2)
        }
    }
}
