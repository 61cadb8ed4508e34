//! Logging to the kernel log (`/dev/kmsg`), so every line carries the guest's printk timestamp,
//! and the one FATAL line that must reach the console whatever the log level.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Instant;

const KMSG: &str = "/dev/kmsg";
const CONSOLE: &str = "/dev/console";
/// `off` makes the kernel drop /dev/kmsg writes silently; `on` and `ratelimit` keep them.
const PRINTK_DEVKMSG: &str = "/proc/sys/kernel/printk_devkmsg";
/// First field: the console log level; messages with a lower priority number are printed.
const PRINTK: &str = "/proc/sys/kernel/printk";
/// Unless printk_devkmsg is `on`, the kernel drops /dev/kmsg writes past a burst of 10 per
/// open file in 5 s (`DEFAULT_RATELIMIT_BURST`, `devkmsg_write`). The log opens the device
/// afresh before that, rather than switching the rate limit off for the whole system (which
/// also cost a sysctl read and two writes, ~20 ms of guest time under TCG).
const KMSG_LINES_PER_OPEN: u32 = 10;

/// Syslog priorities from `<linux/kern_levels.h>`.
const KERN_CRIT: u8 = 2;
const KERN_WARNING: u8 = 4;
const KERN_INFO: u8 = 6;

/// The boot log. Lines before /dev is mounted go nowhere but a FATAL line, which falls back to
/// /dev/console (the mini initramfs ships that node).
#[derive(Debug)]
pub struct Log {
    /// The program each line starts with: `storage-init`, or a benchmark's stand-in.
    name: &'static str,
    start: Instant,
    kmsg: Option<File>,
    /// Lines written through the current `kmsg` file.
    lines_on_kmsg: u32,
}

impl Log {
    pub fn new(start: Instant) -> Log {
        Log::named("storage-init", start)
    }

    /// A log whose lines start with `name` instead (`syscall-floor`, the benchmark's
    /// baseline, which must never be mistaken for storage-init).
    pub fn named(name: &'static str, start: Instant) -> Log {
        Log {
            name,
            start,
            kmsg: None,
            lines_on_kmsg: 0,
        }
    }

    /// Opens /dev/kmsg (once /dev is mounted).
    pub fn open_kmsg(&mut self) {
        // Best effort: without /dev/kmsg steps are not logged, but the boot itself can go on and
        // a FATAL line still reaches /dev/console.
        self.kmsg = OpenOptions::new().write(true).open(KMSG).ok();
        self.lines_on_kmsg = 0;
    }

    pub fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Logs a finished step: `storage-init: <step> (<elapsed> ms)`.
    pub fn step(&mut self, step: &str) {
        let line = format!("{}: {step} ({} ms)", self.name, self.elapsed_ms());
        self.kmsg_line(KERN_INFO, &line);
    }

    pub fn warn(&mut self, message: &str) {
        let line = format!("{}: warning: {message}", self.name);
        self.kmsg_line(KERN_WARNING, &line);
    }

    /// Writes the single FATAL line. It goes to the kernel log at KERN_CRIT, which the console
    /// prints unless its log level is 2 or lower; only then, or without /dev/kmsg, is it written
    /// to /dev/console directly, so the console shows it exactly once.
    pub fn fatal(&mut self, message: &str) {
        let line = self.fatal_line(message);
        let logged = self.kmsg_line(KERN_CRIT, &line) && !kmsg_switched_off();
        if (!logged || console_loglevel().is_some_and(|level| level <= KERN_CRIT))
            && let Ok(mut console) = OpenOptions::new().write(true).open(CONSOLE)
        {
            // Best effort: this is the last channel there is.
            let _ = console.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// The FATAL line for `message`, as [`Log::fatal`] prints it.
    pub fn fatal_line(&self, message: &str) -> String {
        format!("{}: FATAL: {message}", self.name)
    }

    fn kmsg_line(&mut self, priority: u8, line: &str) -> bool {
        if self.kmsg.is_some() && self.lines_on_kmsg >= KMSG_LINES_PER_OPEN {
            self.open_kmsg();
        }
        let Some(kmsg) = self.kmsg.as_mut() else {
            return false;
        };
        self.lines_on_kmsg += 1;
        // One write() is one kernel log record; the newline ends it.
        kmsg.write_all(format!("<{priority}>{line}\n").as_bytes())
            .is_ok()
    }
}

/// `printk.devkmsg=off`: writes to /dev/kmsg "succeed" but are dropped.
fn kmsg_switched_off() -> bool {
    std::fs::read_to_string(PRINTK_DEVKMSG).is_ok_and(|v| v.trim() == "off")
}

fn console_loglevel() -> Option<u8> {
    let text = std::fs::read_to_string(PRINTK).ok()?;
    text.split_whitespace().next()?.parse().ok()
}
