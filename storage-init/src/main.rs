//! The storage-init binary: PID 1 of the mini initramfs. All logic is in the library.

use std::time::{Duration, Instant};

fn main() {
    let start = Instant::now();
    let mut log = storage_init::log::Log::new(start);
    let fatal = storage_init::boot::run(&mut log);
    log.fatal(&fatal.to_string());
    storage_init::emergency::power_off(&mut log);
    // PID 1 must never exit (the kernel would panic and hide the FATAL line above).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
