//! What follows the FATAL line: the configured emergency action. Never returns.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::system::RebootCommand;

use crate::config::Emergency;
use crate::log::Log;

/// How often `halt` repeats the FATAL line, so a console attached later still shows it.
const HALT_REPEAT: Duration = Duration::from_secs(10);
/// The rescue shell `shell` execs, when the mini initramfs ships one.
const SHELL: &str = "/bin/sh";

/// Carries out `action` after `fatal_line` has been logged once.
pub fn act(action: Emergency, log: &mut Log, fatal_line: &str) -> ! {
    match action {
        Emergency::Halt => {}
        Emergency::PowerOff => reboot(log, RebootCommand::PowerOff),
        Emergency::Reboot => reboot(log, RebootCommand::Restart),
        Emergency::Shell => {
            if Path::new(SHELL).is_file() {
                let error = Command::new(SHELL).exec();
                log.warn(&format!(
                    "emergency shell {SHELL}: {error}; halting instead"
                ));
            } else {
                log.warn(&format!(
                    "emergency shell: no {SHELL} in the mini initramfs; halting instead"
                ));
            }
        }
    }
    // PID 1 must never exit (the kernel would panic and bury the FATAL line).
    loop {
        std::thread::sleep(HALT_REPEAT);
        log.fatal(fatal_line);
    }
}

fn reboot(log: &mut Log, command: RebootCommand) {
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(command) {
        log.warn(&format!(
            "{command:?} failed: {}; halting instead",
            crate::modules::errno_text(e)
        ));
    }
}
