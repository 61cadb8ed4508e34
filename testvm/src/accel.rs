//! Does KVM work here? Opening /dev/kvm is not enough: on a nested host whose virtualisation is
//! incomplete (this project's own development machines), QEMU starts under KVM and the guest
//! kernel then dies at its first unusual instruction with "KVM internal error", QEMU paused and
//! silent. So the probe boots the real kernel under KVM, without a root filesystem, and watches:
//! the kernel reaching the end of its initialisation (its failed root mount) means KVM works.
//! Its banner alone proves little (a few thousand instructions, and a kernel can print it and
//! then die); "KVM internal error", QEMU exiting before that point, or silence means KVM does
//! not work, and the caller falls back to TCG. The verdict is [`judge`]'s, a function of what
//! was seen.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::machine::{Accel, Board};

/// How long a kernel under working KVM needs to reach its root mount, with room to spare
/// (Debian's 6.12 takes 3 s of guest time under TCG, about 1 s under KVM).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// The device QEMU opens for KVM.
const KVM_DEVICE: &str = "/dev/kvm";
/// What QEMU prints when the host's KVM cannot run the guest.
const KVM_INTERNAL_ERROR: &str = "KVM internal error";
/// The kernel's first console line.
const KERNEL_BANNER: &str = "Linux version";
/// What the kernel prints at the end of its initialisation when, as in the probe, it has no
/// root filesystem (init/do_mounts.c): every initcall has run under KVM by then.
const KERNEL_INITIALISED: &str = "VFS: Unable to mount root fs";
/// The probe's files in its scratch directory (xtask keeps them beside the VM tests' artifacts).
const CONSOLE_FILE: &str = "kvm-probe-console.log";
const STDERR_FILE: &str = "kvm-probe-stderr.log";

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// A kernel under KVM reached its console.
    Works,
    /// No KVM to try (no /dev/kvm, no permission).
    Unavailable(String),
    /// KVM is there but a kernel does not run under it.
    Broken(String),
}

impl KvmProbe {
    /// The accelerator to use: KVM if it works, else TCG.
    pub fn accel(&self) -> Accel {
        match self {
            KvmProbe::Works => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }

    /// One line for the run's log.
    pub fn describe(&self) -> String {
        match self {
            KvmProbe::Works => "KVM works: VMs run under KVM".to_owned(),
            KvmProbe::Unavailable(why) => format!("no KVM ({why}): VMs run under TCG"),
            KvmProbe::Broken(why) => {
                format!("KVM is there but does not run a kernel ({why}): VMs run under TCG")
            }
        }
    }
}

/// What the probe has seen of its boot so far.
#[derive(Debug, Clone, Copy)]
struct Evidence<'a> {
    /// The guest's console.
    console: &'a str,
    /// QEMU's stderr.
    stderr: &'a str,
    /// QEMU's exit status, once it has exited.
    exited: Option<ExitStatus>,
    /// The probe's time is up.
    timed_out: bool,
}

/// The verdict on a KVM boot from what was seen of it, or `None` while it is still open. Only
/// a kernel that reached [`KERNEL_INITIALISED`] proves KVM works: QEMU exiting or the time
/// running out before that is a broken KVM, whatever the console showed until then.
fn judge(seen: &Evidence) -> Option<KvmProbe> {
    if seen.stderr.contains(KVM_INTERNAL_ERROR) {
        return Some(KvmProbe::Broken(KVM_INTERNAL_ERROR.to_owned()));
    }
    if seen.console.contains(KERNEL_INITIALISED) {
        return Some(KvmProbe::Works);
    }
    let progress = if seen.console.contains(KERNEL_BANNER) {
        "the kernel printed its banner but did not finish its initialisation"
    } else {
        "no kernel output"
    };
    if let Some(status) = seen.exited {
        let last = seen.stderr.lines().last().unwrap_or("no message");
        return Some(KvmProbe::Broken(format!(
            "QEMU exited ({status}), {progress}: {last}"
        )));
    }
    if seen.timed_out {
        return Some(KvmProbe::Broken(format!(
            "{progress} in {} s",
            PROBE_TIMEOUT.as_secs()
        )));
    }
    None
}

/// A file QEMU writes, as far as it has written it (empty before it exists).
fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Boots `kernel` on `board` under KVM, without a root filesystem (it panics and, with
/// `panic=-1` and `-no-reboot`, QEMU exits), and reports what happened. `scratch` holds the
/// console and stderr files.
pub fn probe_kvm(board: Board, kernel: &Path, scratch: &Path) -> KvmProbe {
    probe_with_device(Path::new(KVM_DEVICE), board, kernel, scratch)
}

/// [`probe_kvm`] with the KVM device named: its tests try one that is missing.
fn probe_with_device(device: &Path, board: Board, kernel: &Path, scratch: &Path) -> KvmProbe {
    if let Err(error) = OpenOptions::new().read(true).write(true).open(device) {
        return KvmProbe::Unavailable(format!("{}: {error}", device.display()));
    }
    let console_path = scratch.join(CONSOLE_FILE);
    let stderr_path = scratch.join(STDERR_FILE);
    let stderr = match File::create(&stderr_path) {
        Ok(file) => file,
        Err(error) => return KvmProbe::Unavailable(format!("{}: {error}", stderr_path.display())),
    };
    let mut qemu = match Command::new(board.qemu_binary())
        .args([
            "-machine",
            board.machine_type(),
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args([
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg(format!("console={} panic=-1", board.console()))
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return KvmProbe::Unavailable(format!("{}: {error}", board.qemu_binary())),
    };
    let started = Instant::now();
    let verdict = loop {
        let timed_out = started.elapsed() > PROBE_TIMEOUT;
        // The status before the files: once QEMU has exited, they hold all it wrote.
        let exited = qemu.try_wait().ok().flatten();
        let (console, stderr) = (read_lossy(&console_path), read_lossy(&stderr_path));
        let seen = Evidence {
            console: &console,
            stderr: &stderr,
            exited,
            timed_out,
        };
        if let Some(verdict) = judge(&seen) {
            break verdict;
        }
        std::thread::sleep(POLL);
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_probe_decides_the_accelerator() {
        assert_eq!(KvmProbe::Works.accel(), Accel::Kvm);
        assert_eq!(KvmProbe::Broken("x".into()).accel(), Accel::Tcg);
        assert_eq!(KvmProbe::Unavailable("x".into()).accel(), Accel::Tcg);
        assert!(
            KvmProbe::Broken(KVM_INTERNAL_ERROR.into())
                .describe()
                .contains("run under TCG")
        );
    }

    /// Consoles as the probe sees them: Debian 6.12's first line, and its last lines without
    /// a root filesystem.
    const BANNER: &str =
        "[    0.000000] Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org)\n";
    const INITIALISED: &str = "[    3.183129] VFS: Cannot open root device \"\" or unknown-block(0,0): error -6\n\
        [    3.188409] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";

    const MSR_ABORT: &str = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069\n\
        qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: Assertion failed.\n";
    const INTERNAL_ERROR: &str = "KVM internal error. Suberror: 1\nemulation failure\n";

    fn seen<'a>(
        console: &'a str,
        stderr: &'a str,
        exited: Option<i32>,
        timed_out: bool,
    ) -> Evidence<'a> {
        Evidence {
            console,
            stderr,
            // A raw wait status: an exit code shifted up, or a signal number.
            exited: exited.map(ExitStatus::from_raw),
            timed_out,
        }
    }

    /// What was seen of a boot → the accelerator it leads to, `None` while the probe waits on.
    #[test]
    fn the_verdict_follows_the_evidence() {
        const EXIT_0: Option<i32> = Some(0);
        const EXIT_1: Option<i32> = Some(1 << 8);
        const SIGABRT: Option<i32> = Some(6);
        let started = format!("{BANNER}[    0.100000] Command line: console=ttyS0\n");
        let whole = format!("{BANNER}{INITIALISED}");
        let (tcg, kvm) = (Some(Accel::Tcg), Some(Accel::Kvm));
        // Kept as a table, one boot a line (rustfmt would spread each over five).
        #[rustfmt::skip]
        let cases = [
            ("QEMU just started", seen("", "", None, false), None),
            ("the banner, still booting", seen(&started, "", None, false), None),
            ("QEMU fails at start", seen("", "no kernel\n", EXIT_1, false), tcg),
            ("QEMU aborts on the host's KVM", seen("", MSR_ABORT, SIGABRT, false), tcg),
            ("KVM internal error, QEMU paused", seen("", INTERNAL_ERROR, None, false), tcg),
            ("banner, KVM internal error", seen(BANNER, INTERNAL_ERROR, None, false), tcg),
            ("banner, then QEMU dies", seen(&started, MSR_ABORT, SIGABRT, false), tcg),
            ("banner, then QEMU exits", seen(&started, "", EXIT_0, false), tcg),
            ("banner, then silence", seen(&started, "", None, true), tcg),
            ("silence", seen("", "", None, true), tcg),
            ("initialised, QEMU still up", seen(&whole, "", None, false), kvm),
            ("initialised, panicked, exited", seen(&whole, "", EXIT_0, false), kvm),
            ("initialised as time ran out", seen(&whole, "", None, true), kvm),
            ("initialised, KVM internal error", seen(&whole, INTERNAL_ERROR, None, false), tcg),
        ];
        for (what, evidence, expected) in cases {
            let verdict = judge(&evidence);
            assert_eq!(
                verdict.as_ref().map(KvmProbe::accel),
                expected,
                "{what}: {verdict:?}"
            );
        }
        // The reason names how far the kernel got and what QEMU said last.
        let died = judge(&seen(BANNER, MSR_ABORT, SIGABRT, false));
        let Some(KvmProbe::Broken(why)) = died else {
            panic!("{died:?}");
        };
        assert!(
            why.contains("printed its banner") && why.contains("kvm_buf_set_msrs"),
            "{why}"
        );
    }

    /// No KVM device: nothing is started, and the VMs run under TCG.
    #[test]
    fn a_missing_kvm_device_is_tcg() {
        let scratch = tempfile::tempdir().unwrap();
        let device = scratch.path().join("kvm");
        let probe = probe_with_device(&device, Board::Q35, Path::new("/vmlinuz"), scratch.path());
        let KvmProbe::Unavailable(why) = &probe else {
            panic!("{probe:?}");
        };
        assert!(why.contains(&*device.to_string_lossy()), "{why}");
        assert_eq!(probe.accel(), Accel::Tcg);
        assert!(
            !scratch.path().join(STDERR_FILE).exists(),
            "QEMU was started"
        );
    }

    /// A device that opens but a QEMU that cannot boot (here: no such kernel) is a broken KVM,
    /// judged as soon as QEMU exits.
    #[test]
    fn qemu_failing_under_kvm_is_tcg() {
        let qemu = Board::Q35.qemu_binary();
        if !crate::test_tools::have_tool(qemu, "cargo xtask provision installs it") {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let missing = scratch.path().join("no-such-kernel");
        let probe = probe_with_device(Path::new("/dev/null"), Board::Q35, &missing, scratch.path());
        let KvmProbe::Broken(why) = &probe else {
            panic!("{probe:?}");
        };
        assert!(
            why.contains("QEMU exited") && why.contains("no kernel output"),
            "{why}"
        );
        assert_eq!(probe.accel(), Accel::Tcg);
        assert!(started.elapsed() < PROBE_TIMEOUT, "{why}");
    }

    /// On a real kernel (`TESTVM_KERNEL`, set by `cargo xtask test`), the probe answers
    /// within its timeout, and its answer is the one this host allows: TCG where /dev/kvm
    /// cannot be opened; where it can, KVM exactly when the kernel finished its initialisation
    /// on the console the probe kept.
    #[test]
    fn probe_on_this_host() {
        let Some(kernel) = crate::test_tools::provided("TESTVM_KERNEL") else {
            return;
        };
        let scratch = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let probe = probe_kvm(Board::Q35, Path::new(&kernel), scratch.path());
        println!(
            "{} ({:.1} s)",
            probe.describe(),
            started.elapsed().as_secs_f64()
        );
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(5));
        match OpenOptions::new().read(true).write(true).open(KVM_DEVICE) {
            Err(_) => assert!(matches!(probe, KvmProbe::Unavailable(_)), "{probe:?}"),
            Ok(_) => {
                let console = read_lossy(&scratch.path().join(CONSOLE_FILE));
                assert_eq!(
                    probe == KvmProbe::Works,
                    console.contains(KERNEL_INITIALISED),
                    "{probe:?}, console:\n{console}"
                );
            }
        }
        if std::env::consts::ARCH != "x86_64" {
            // A q35 guest on another architecture cannot use the host's KVM.
            assert_eq!(probe.accel(), Accel::Tcg, "{probe:?}");
        }
    }
}
