//! The storage-init binary: PID 1 of the mini initramfs. All logic is in the library.

use std::time::Instant;

fn main() {
    let start = Instant::now();
    if !rustix::process::getpid().is_init() {
        // It mounts over /dev, /proc, /sys and /run and deletes the root filesystem's files:
        // only ever as the PID 1 of an initramfs (switch_root also checks for ramfs/tmpfs).
        eprintln!(
            "storage-init: refusing to run: not PID 1 (it is the /init of the mini initramfs)"
        );
        std::process::exit(2);
    }
    let mut log = storage_init::log::Log::new(start);
    let (fatal, emergency) = storage_init::boot::run(&mut log);
    let line = fatal.to_string();
    log.fatal(&line);
    storage_init::emergency::act(emergency, &mut log, &line)
}
