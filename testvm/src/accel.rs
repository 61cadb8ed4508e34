//! Does KVM work here? Opening /dev/kvm is not enough: on a nested host whose virtualisation is
//! incomplete (this project's own development machines), QEMU starts under KVM and the guest
//! kernel then dies at its first unusual instruction with "KVM internal error", QEMU paused and
//! silent. So the probe boots the real kernel under KVM and watches: the kernel reaching its
//! first console line means KVM works; "KVM internal error", a failed start or silence means it
//! does not, and the caller falls back to TCG.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::machine::{Accel, Board};

/// How long a kernel under working KVM needs to print its banner, with room to spare.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// What QEMU prints when the host's KVM cannot run the guest.
const KVM_INTERNAL_ERROR: &str = "KVM internal error";
/// The kernel's first console line.
const KERNEL_BANNER: &str = "Linux version";

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

/// Boots `kernel` on `board` under KVM, without a root filesystem (it panics and, with
/// `panic=-1` and `-no-reboot`, QEMU exits), and reports what happened. `scratch` holds the
/// console and stderr files.
pub fn probe_kvm(board: Board, kernel: &Path, scratch: &Path) -> KvmProbe {
    if let Err(error) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return KvmProbe::Unavailable(format!("/dev/kvm: {error}"));
    }
    let console = scratch.join("kvm-probe-console.log");
    let stderr_path = scratch.join("kvm-probe-stderr.log");
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
        .arg(format!("file:{}", console.display()))
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
        let seen = |path: &Path, text: &str| {
            fs::read_to_string(path).is_ok_and(|content| content.contains(text))
        };
        if seen(&console, KERNEL_BANNER) {
            break KvmProbe::Works;
        }
        if seen(&stderr_path, KVM_INTERNAL_ERROR) {
            break KvmProbe::Broken(KVM_INTERNAL_ERROR.to_owned());
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            let text = fs::read_to_string(&stderr_path).unwrap_or_default();
            let last = text.lines().last().unwrap_or("no message").to_owned();
            break KvmProbe::Broken(format!("QEMU exited ({status}): {last}"));
        }
        if started.elapsed() > PROBE_TIMEOUT {
            break KvmProbe::Broken(format!("no kernel output in {} s", PROBE_TIMEOUT.as_secs()));
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

    #[test]
    fn the_probe_decides_the_accelerator() {
        assert_eq!(KvmProbe::Works.accel(), Accel::Kvm);
        assert_eq!(KvmProbe::Broken("x".into()).accel(), Accel::Tcg);
        assert!(
            KvmProbe::Broken(KVM_INTERNAL_ERROR.into())
                .describe()
                .contains("run under TCG")
        );
    }

    /// On a real kernel (`TESTVM_KERNEL`, set by `cargo xtask test`), the probe answers
    /// within its timeout, whatever this host's KVM does; it says which.
    #[test]
    fn probe_on_this_host() {
        let Some(kernel) = std::env::var_os("TESTVM_KERNEL") else {
            println!("skipped: TESTVM_KERNEL is not set (cargo xtask test sets it)");
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
    }
}
