//! Logging to the kernel log (`/dev/kmsg`), so every line carries the guest's printk timestamp,
//! and the one FATAL line that must reach the console whatever the log level.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Instant;

const KMSG: &str = "/dev/kmsg";
const CONSOLE: &str = "/dev/console";
/// Switches off the per-open-file rate limit on /dev/kmsg writes (about 10 lines per 5 s).
const PRINTK_DEVKMSG: &str = "/proc/sys/kernel/printk_devkmsg";
/// First field: the console log level; messages with a lower priority number are printed.
const PRINTK: &str = "/proc/sys/kernel/printk";

/// Syslog priorities from `<linux/kern_levels.h>`.
const KERN_CRIT: u8 = 2;
const KERN_WARNING: u8 = 4;
const KERN_INFO: u8 = 6;

/// The boot log. Lines before /dev is mounted go nowhere but a FATAL line, which falls back to
/// /dev/console (the mini initramfs ships that node).
#[derive(Debug)]
pub struct Log {
    start: Instant,
    kmsg: Option<File>,
    /// The value of printk_devkmsg before we switched it on, restored before exec.
    saved_devkmsg: Option<String>,
}

impl Log {
    pub fn new(start: Instant) -> Log {
        Log {
            start,
            kmsg: None,
            saved_devkmsg: None,
        }
    }

    /// Opens /dev/kmsg (once /dev is mounted) and lifts its rate limit while storage-init runs.
    pub fn open_kmsg(&mut self) {
        // Best effort: without /dev/kmsg steps are not logged, but the boot itself can go on and
        // a FATAL line still reaches /dev/console.
        self.kmsg = OpenOptions::new().write(true).open(KMSG).ok();
        if let Ok(old) = std::fs::read_to_string(PRINTK_DEVKMSG) {
            let old = old.trim().to_owned();
            // The sysctl takes the keyword followed by exactly one newline, else EINVAL.
            match std::fs::write(PRINTK_DEVKMSG, "on\n") {
                Ok(()) if old != "on" => self.saved_devkmsg = Some(old),
                Ok(()) => {}
                Err(e) => self.warn(&format!(
                    "cannot lift the /dev/kmsg rate limit ({PRINTK_DEVKMSG}): {e}"
                )),
            }
        }
    }

    /// Puts printk_devkmsg back as it was (called just before exec of the next init).
    pub fn restore_devkmsg(&mut self) {
        if let Some(old) = self.saved_devkmsg.take()
            && let Err(e) = std::fs::write(PRINTK_DEVKMSG, format!("{old}\n"))
        {
            self.warn(&format!("restoring {PRINTK_DEVKMSG} to {old:?}: {e}"));
        }
    }

    pub fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Logs a finished step: `storage-init: <step> (<elapsed> ms)`.
    pub fn step(&mut self, step: &str) {
        let line = format!("storage-init: {step} ({} ms)", self.elapsed_ms());
        self.kmsg_line(KERN_INFO, &line);
    }

    pub fn warn(&mut self, message: &str) {
        let line = format!("storage-init: warning: {message}");
        self.kmsg_line(KERN_WARNING, &line);
    }

    /// Writes the single FATAL line. It goes to the kernel log at KERN_CRIT, which the console
    /// prints unless its log level is 2 or lower; only then, or without /dev/kmsg, is it written
    /// to /dev/console directly, so the console shows it exactly once.
    pub fn fatal(&mut self, message: &str) {
        let line = format!("storage-init: FATAL: {message}");
        let logged = self.kmsg_line(KERN_CRIT, &line);
        if (!logged || console_loglevel().is_some_and(|level| level <= KERN_CRIT))
            && let Ok(mut console) = OpenOptions::new().write(true).open(CONSOLE)
        {
            // Best effort: this is the last channel there is.
            let _ = console.write_all(format!("{line}\n").as_bytes());
        }
    }

    fn kmsg_line(&mut self, priority: u8, line: &str) -> bool {
        let Some(kmsg) = self.kmsg.as_mut() else {
            return false;
        };
        // One write() is one kernel log record; the newline ends it.
        kmsg.write_all(format!("<{priority}>{line}\n").as_bytes())
            .is_ok()
    }
}

fn console_loglevel() -> Option<u8> {
    let text = std::fs::read_to_string(PRINTK).ok()?;
    text.split_whitespace().next()?.parse().ok()
}
