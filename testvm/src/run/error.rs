//! Why a boot failed, split like danobi/vmtest: the harness or host broke (`Infra`) or the
//! guest did not do what the spec asked (`Guest`).

use std::path::PathBuf;
use std::time::Duration;

/// A failed boot.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The harness or host broke; the guest's behaviour is unknown.
    #[error("infra: {0}")]
    Infra(#[from] InfraError),
    /// The guest failed the spec.
    #[error("guest: {0}")]
    Guest(#[from] GuestFailure),
}

impl VmError {
    /// A multi-line account: the one-line summary, then QEMU's stderr or the console tail.
    pub fn detail(&self) -> String {
        match self {
            VmError::Infra(error) => format!("infra: {error}"),
            VmError::Guest(
                failure @ GuestFailure {
                    reason: GuestFailureReason::QemuExited { stderr, .. },
                    ..
                },
            ) if !stderr.is_empty() => format!(
                "guest: {failure}\n--- QEMU stderr ---\n{stderr}\n--- last console lines ---\n{}",
                failure.console_tail
            ),
            VmError::Guest(failure) => format!(
                "guest: {failure}\n--- last console lines ---\n{}",
                failure.console_tail
            ),
        }
    }
}

/// The harness or host broke.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// A file or directory of the artifacts could not be written or read.
    #[error("{path:?}: {source}")]
    Artifacts {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// QEMU could not be spawned.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The binary.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// QEMU exited before the harness connected to it.
    #[error("QEMU exited at start-up ({status}): {stderr}")]
    QemuExitedAtStart {
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// A socket did not accept a connection in time.
    #[error("no connection to {path:?} within {waited:?}")]
    SocketTimeout {
        /// The socket.
        path: PathBuf,
        /// How long the harness tried.
        waited: Duration,
    },
    /// Socket I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The spec asks to hot-plug a disk whose bus needs a controller of its own.
    #[error(
        "hot-plugging a {bus} disk is not supported: a hot-plugged disk must be one PCIe device (virtio-blk or NVMe)"
    )]
    HotplugUnsupported {
        /// The disk's bus, as text.
        bus: String,
    },
    /// The machine asks for what its board cannot host.
    #[error("the machine cannot be rendered: {0}")]
    Machine(#[from] crate::machine::MachineError),
    /// QMP did not answer as expected.
    #[error("QMP {what}: {detail}")]
    Qmp {
        /// The command or step.
        what: &'static str,
        /// The error text.
        detail: String,
    },
}

/// The guest failed the spec.
#[derive(Debug, thiserror::Error)]
#[error("{milestone}: {reason}")]
pub struct GuestFailure {
    /// The milestone that was being waited for (or `end` after the last one).
    pub milestone: String,
    /// What went wrong.
    pub reason: GuestFailureReason,
    /// The last console lines, for the detail view.
    pub console_tail: String,
}

/// What the guest did wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestFailureReason {
    /// The milestone did not show up in time.
    #[error("timed out after {}", seconds(.0))]
    Timeout(Duration),
    /// A fatal pattern matched.
    #[error("{name}: {line}")]
    Fatal {
        /// The fatal pattern's name.
        name: String,
        /// The console line holding the match.
        line: String,
    },
    /// QEMU exited (console EOF) before the milestone.
    #[error("QEMU exited before it ({status}){}", last_line(.stderr))]
    QemuExited {
        /// QEMU's exit status, as text.
        status: String,
        /// QEMU's stderr (e.g. "KVM internal error"), trimmed.
        stderr: String,
    },
    /// After the last milestone, QEMU did not exit by itself in time.
    #[error("did not power off within {}", seconds(.0))]
    DidNotPowerOff(Duration),
}

/// `: ` and the last line of QEMU's stderr, if it wrote anything.
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .last()
        .map(|line| format!(": {line}"))
        .unwrap_or_default()
}

fn seconds(duration: &Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// The name used for [`GuestFailure::milestone`] after the last milestone.
pub const END_MILESTONE: &str = "end";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_display() {
        let failure = GuestFailure {
            milestone: "storage-init".into(),
            reason: GuestFailureReason::Fatal {
                name: "kernel panic".into(),
                line: "[    2.1] Kernel panic - not syncing: VFS".into(),
            },
            console_tail: "a\nb".into(),
        };
        let error = VmError::from(failure);
        assert_eq!(
            error.to_string(),
            "guest: storage-init: kernel panic: [    2.1] Kernel panic - not syncing: VFS"
        );
        assert!(error.detail().ends_with("---\na\nb"));
        let timeout = GuestFailureReason::Timeout(Duration::from_millis(30_000));
        assert_eq!(timeout.to_string(), "timed out after 30.0 s");
    }
}
