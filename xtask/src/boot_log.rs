//! What a real-chain boot's console says about where its time went, read after the boot: the
//! kernel's `Freeing initrd memory` line, systemd's marks between the harness's milestones
//! (`initrd-root-fs.target`, `Switching root.`, the real root's start, `sysinit.target`,
//! `basic.target`) and every unit's start and end, in the initrd and in the real root. A
//! switch into another initrd (the systemd of a mini initramfs entering the initoverlayfs,
//! whose systemd says `Running in initrd.` again) keeps the boot in the initrd.
//!
//! systemd writes its log to the kernel's (`systemd.log_target=kmsg`), so each line carries the
//! guest's printk timestamp: `[   12.904479] systemd[1]: Running in initrd.`. Lines without a
//! timestamp (systemd's status output, a program writing to the console) are skipped, as are
//! lines garbled by two writers at once; nothing here fails.

use serde::{Deserialize, Serialize};

/// Everything [`parse`] reads from one console.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootLog {
    pub phases: Phases,
    /// The initramfs file the kernel held until it had unpacked it, in KiB.
    pub initramfs_freed_kib: Option<u64>,
    /// Units that started and ended while systemd ran in the initrd, in the order they ended.
    pub initrd_units: Vec<UnitSpan>,
    /// The same in the real root, up to the end of the console.
    pub root_units: Vec<UnitSpan>,
}

/// `line` without the carriage returns and terminal escapes systemd's status output leaves at
/// the start of the next console line (`ESC [K` erases the line, `ESC M` moves up).
fn without_leading_escapes(mut line: &str) -> &str {
    loop {
        if let Some(rest) = line.strip_prefix('\r') {
            line = rest;
        } else if let Some(rest) = line.strip_prefix("\x1b[") {
            // A control sequence: parameters, then one final byte in `@`..`~` (ECMA-48 5.4).
            match rest.find(|c: char| ('@'..='~').contains(&c)) {
                Some(end) => line = &rest[end + 1..],
                None => return "",
            }
        } else if let Some(rest) = line.strip_prefix('\x1b') {
            let mut chars = rest.chars();
            chars.next();
            line = chars.as_str();
        } else {
            return line;
        }
    }
}

/// `text` without any carriage returns and terminal escapes, wherever they stand (the
/// firmware colours its lines): console text fit for a report.
pub fn without_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['\x1b', '\r']) {
        out.push_str(&rest[..at]);
        rest = without_leading_escapes(&rest[at..]);
    }
    out.push_str(rest);
    out
}

/// The printk timestamp and the message of a kernel-log line: `[   12.904479] text`.
fn printk(line: &str) -> Option<(f64, &str)> {
    let rest = without_leading_escapes(line).strip_prefix('[')?;
    let (stamp, message) = rest.split_once("] ")?;
    let seconds: f64 = stamp.trim().parse().ok()?;
    seconds
        .is_finite()
        .then_some((seconds, message.trim_end_matches('\r')))
}

/// The unit a `Starting …`, `Started …` or `Finished …` message names, with whether it starts
/// or ends a span: `Starting systemd-udevd.service - Rule-based Manager…` → (true, the name).
fn unit_event(message: &str) -> Option<(bool, &str)> {
    let (starts, rest) = if let Some(rest) = message.strip_prefix("Starting ") {
        (true, rest)
    } else if let Some(rest) = message
        .strip_prefix("Started ")
        .or_else(|| message.strip_prefix("Finished "))
    {
        (false, rest)
    } else {
        return None;
    };
    // The unit's name runs to the first space and ends in its type after a dot; a message
    // without a description ends the name with the sentence's dots.
    let name = rest.split(' ').next()?.trim_end_matches('.');
    let (stem, kind) = name.rsplit_once('.')?;
    let is_kind = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase());
    (!stem.is_empty() && is_kind).then_some((starts, name))
}

/// Reads `console` (the harness's `console.log`) from the top.
pub fn parse(console: &str) -> BootLog {
    let mut log = BootLog::default();
    let mut switched = false;
    let mut open: Vec<(String, f64)> = Vec::new();
    for line in console.lines() {
        let Some((at, message)) = printk(line) else {
            continue;
        };
        if let Some(size) = message.strip_prefix("Freeing initrd memory: ") {
            log.initramfs_freed_kib = size.strip_suffix('K').and_then(|k| k.parse().ok());
            continue;
        }
        let Some(message) = message.strip_prefix("systemd[1]: ") else {
            continue;
        };
        let phases = &mut log.phases;
        if !switched {
            if message.starts_with("Reached target initrd-root-fs.target") {
                phases.initrd_root_fs.get_or_insert(at);
            } else if message == "Switching root." {
                phases.switch_root = Some(at);
                switched = true;
                // A unit still starting when the initrd ends never ends there.
                open.clear();
                continue;
            }
        } else if message == "Running in initrd." {
            // The switch was into another initrd (a mini initramfs running systemd, switching
            // to the initoverlayfs): the initrd goes on, and its switch is still to come.
            switched = false;
            phases.switch_root = None;
            phases.real_root = None;
        } else if message.starts_with("systemd ") && message.contains(" running in system mode") {
            phases.real_root.get_or_insert(at);
        } else if message.starts_with("Reached target sysinit.target") {
            phases.sysinit.get_or_insert(at);
        } else if message.starts_with("Reached target basic.target") {
            phases.basic.get_or_insert(at);
        }
        if let Some((starts, unit)) = unit_event(message) {
            if starts {
                if !open.iter().any(|(name, _)| name == unit) {
                    open.push((unit.to_owned(), at));
                }
            } else if let Some(index) = open.iter().position(|(name, _)| name == unit) {
                let (unit, start) = open.remove(index);
                let units = match switched {
                    false => &mut log.initrd_units,
                    true => &mut log.root_units,
                };
                units.push(UnitSpan {
                    unit,
                    start,
                    end: at,
                });
            }
        }
    }
    log
}

/// Guest seconds (since the kernel started) to the marks between the harness's milestones,
/// read from systemd's own kernel-log lines on the console (`systemd.log_target=kmsg`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The initrd's systemd reached `initrd-root-fs.target`: the real root is mounted.
    pub initrd_root_fs: Option<f64>,
    /// The initrd's systemd logged `Switching root.`
    pub switch_root: Option<f64>,
    /// The real root's systemd started (its `running in system mode` line).
    pub real_root: Option<f64>,
    /// The real root's `sysinit.target`.
    pub sysinit: Option<f64>,
    /// The real root's `basic.target`.
    pub basic: Option<f64>,
}

/// One unit's start and end, guest seconds since the kernel started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSpan {
    /// The unit's name: `systemd-udevd.service`.
    pub unit: String,
    pub start: f64,
    pub end: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_wherever_they_stand() {
        assert_eq!(
            without_escapes(
                "kernel: firmware: \x1b[0m\x1b[37m\x1b[40mBdsDxe: failed to start Boot0001: Out of \
                 Resources\r\x1b[K"
            ),
            "kernel: firmware: BdsDxe: failed to start Boot0001: Out of Resources"
        );
        assert_eq!(without_escapes("plain"), "plain");
        assert_eq!(without_escapes("cut \x1b["), "cut ");
    }

    /// A console of a classic boot through the initrd into the real root, shortened, with the
    /// kinds of lines that must be skipped.
    const CONSOLE: &str = "\
BdsDxe: starting Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x3,0x0)
[    0.000000] Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org)
[    2.101000] Freeing initrd memory: 47552K
[    4.500000] Run /init as init process
[    5.000000] systemd[1]: systemd 252.39-1~deb12u1 running in system mode (+PAM +AUDIT)
[    5.100000] systemd[1]: Running in initrd.
[    5.200000] systemd[1]: Starting systemd-udevd.service - Rule-based Manager for Device Events and Files...
[  OK  ] Started systemd-udevd.service - Rule-based Manager for Device Events and Files.
[    6.450000] systemd[1]: Started systemd-udevd.service - Rule-based Manager for Device Events and Files.
[    6.500000] systemd[1]: Reached target sysinit.target - System Initialization.
[    6.600000] systemd[1]: Starting systemd-fsck-root.service - File System Check on /dev/vda2...
[    7.600000] systemd[1]: Finished systemd-fsck-root.service - File System Check on /dev/vda2.
[    8.000000] systemd[1]: Reached target initrd-root-fs.target - Initrd Root File System.
[    8.100000] systemd[1]: Starting initrd-cleanup.service - Cleaning Up and Shutting Down Daemons...
[    8.900000] systemd[1]: Reached target initrd-root-fs.target - Initrd Root File System.
[    9.000000] systemd[1]: Switching root.
[    9.800000] systemd[1]: systemd 252.39-1~deb12u1 running in system mode (+PAM +AUDIT)
[   1garbled0.1] systemd[1]: Reached target sysinit.target
[   10.500000] systemd[1]: Starting systemd-journald.service - Journal Service...
[   11.000000] systemd[1]: Started systemd-journald.service - Journal Service.
[   12.000000] systemd[1]: Reached target sysinit.target - System Initialization.
[   13.250000] systemd[1]: Reached target basic.target - Basic System.
[   20.000000] systemd[1]: Reached target multi-user.target - Multi-User System.
";

    /// The service flavour: a mini initramfs's systemd switches to the initoverlayfs, whose
    /// systemd runs in initrd mode too; the initrd ends at the second switch.
    #[test]
    fn a_switch_into_another_initrd_is_not_the_real_roots() {
        let stage_one = "\
[    1.000000] Run /init as init process
[    1.500000] systemd[1]: systemd 252.39-1~deb12u2 running in system mode (+PAM +AUDIT)
[    1.510000] systemd[1]: Running in initrd.
[    2.000000] systemd[1]: Starting initoverlayfs-prepare.service - Mount the initoverlayfs image from /boot...
[    2.800000] systemd[1]: Finished initoverlayfs-prepare.service - Mount the initoverlayfs image from /boot.
[    3.100000] systemd[1]: Switching root.
[    4.000000] systemd[1]: systemd 252.39-1~deb12u2 running in system mode (+PAM +AUDIT)
";
        let image = CONSOLE
            .lines()
            .skip_while(|line| !line.contains("Running in initrd."))
            .collect::<Vec<_>>()
            .join("\n");
        let log = parse(&format!("{stage_one}{image}"));
        assert_eq!(
            log.phases,
            Phases {
                initrd_root_fs: Some(8.0),
                switch_root: Some(9.0),
                real_root: Some(9.8),
                sysinit: Some(12.0),
                basic: Some(13.25),
            }
        );
        assert_eq!(
            log.initrd_units
                .first()
                .map(|u| (u.unit.as_str(), u.start, u.end)),
            Some(("initoverlayfs-prepare.service", 2.0, 2.8))
        );
        assert_eq!(log.initrd_units.len(), 3);
    }

    #[test]
    fn phases_units_and_the_held_initramfs() {
        let log = parse(CONSOLE);
        assert_eq!(
            log.phases,
            Phases {
                initrd_root_fs: Some(8.0),
                switch_root: Some(9.0),
                real_root: Some(9.8),
                sysinit: Some(12.0),
                basic: Some(13.25),
            },
            "the initrd's sysinit.target is not the real root's; a garbled stamp is skipped"
        );
        assert_eq!(log.initramfs_freed_kib, Some(47_552));
        let span = |unit: &str, start, end| UnitSpan {
            unit: unit.to_owned(),
            start,
            end,
        };
        assert_eq!(
            log.initrd_units,
            [
                span("systemd-udevd.service", 5.2, 6.45),
                span("systemd-fsck-root.service", 6.6, 7.6),
            ],
            "initrd-cleanup never ended before the switch"
        );
        assert_eq!(
            log.root_units,
            [span("systemd-journald.service", 10.5, 11.0)]
        );
    }

    #[test]
    fn messages() {
        let check = |line: &str, expected: Option<(f64, &str)>| assert_eq!(printk(line), expected);
        check(
            "[    9.279862] Run /init as init process",
            Some((9.279862, "Run /init as init process")),
        );
        check("[12345.000001] x\r", Some((12345.000001, "x")));
        check("\r[    1.5] y", Some((1.5, "y")));
        check("\x1b[K[   28.974449] z", Some((28.974449, "z")));
        check("\x1bM\x1b[K[   2.0] w", Some((2.0, "w")));
        check("\x1b[0;32m  OK  \x1b[0m] Started", None);
        check("[  OK  ] Started foo.service.", None);
        check("[    inf] z", None);
        check("no stamp", None);
        check("[    1.0]no space", None);
    }

    #[test]
    fn unit_events() {
        let check = |message: &str, expected: Option<(bool, &str)>| {
            assert_eq!(unit_event(message), expected, "{message}")
        };
        check(
            "Starting systemd-udevd.service - Rule-based Manager for Device Events and Files...",
            Some((true, "systemd-udevd.service")),
        );
        check("Started dev-vda2.device.", Some((false, "dev-vda2.device")));
        check(
            "Started session-1.scope - Session 1 of User root.",
            Some((false, "session-1.scope")),
        );
        check(
            "Finished kmod-static-nodes.service - Create List of Static Device Nodes.",
            Some((false, "kmod-static-nodes.service")),
        );
        check("Starting udev Coldplug all Devices...", None);
        check("Starting .service", None);
        check("Started Foo.Bar baz", None);
        check("Stopped systemd-udevd.service - x.", None);
    }

    #[test]
    fn a_console_without_systemd() {
        assert_eq!(parse(""), BootLog::default());
        assert_eq!(
            parse("[    0.5] Freeing initrd memory: lots\n[ 1.0] systemd[1]: Switching root.\n"),
            BootLog {
                phases: Phases {
                    switch_root: Some(1.0),
                    ..Phases::default()
                },
                ..BootLog::default()
            }
        );
    }
}
