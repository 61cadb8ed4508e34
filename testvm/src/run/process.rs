//! The QEMU process: spawned in its own process group, killed with the whole group when the
//! guard goes away, so nothing outlives a failed or aborted boot.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::error::InfraError;

/// How often start-up and exit are polled: short against a boot, long against a syscall.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running QEMU, killed (with its process group) on drop.
#[derive(Debug)]
pub(crate) struct QemuProcess {
    child: Child,
    exit: Option<ExitStatus>,
}

impl QemuProcess {
    /// Spawns `argv` with stdin and stdout empty and stderr going to `stderr`.
    pub(crate) fn spawn(argv: &[String], stderr: File) -> Result<QemuProcess, InfraError> {
        let (program, args) = argv.split_first().expect("argv holds the program");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own group, so the guard's kill reaches anything QEMU starts, and a Ctrl-C
            // meant for the harness's terminal does not kill QEMU before the guard records it.
            .process_group(0)
            .spawn()
            .map_err(|source| InfraError::Spawn {
                program: program.clone(),
                source,
            })?;
        Ok(QemuProcess { child, exit: None })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if QEMU has exited.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            // An error here means the child was already reaped, which only this guard does.
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_exit())
    }

    /// Connects to a unix socket QEMU creates, retrying until it exists; fails early, quoting
    /// `stderr_path`, if QEMU exits first.
    pub(crate) fn connect(
        &mut self,
        socket: &Path,
        timeout: Duration,
        stderr_path: &Path,
    ) -> Result<UnixStream, InfraError> {
        let mut exited = None;
        let stream = wait_until(timeout, || {
            if let Some(status) = self.try_exit() {
                exited = Some(status);
                return Some(None);
            }
            UnixStream::connect(socket).ok().map(Some)
        });
        match (stream, exited) {
            (Some(Some(stream)), _) => Ok(stream),
            (_, Some(status)) => Err(InfraError::QemuExitedAtStart {
                status: describe(Some(status)),
                stderr: super::read_stderr(stderr_path),
            }),
            _ => Err(InfraError::SocketTimeout {
                path: socket.to_owned(),
                waited: timeout,
            }),
        }
    }

    /// Kills the process group and reaps QEMU; returns its exit status.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            {
                let pid = rustix::process::Pid::from_child(&self.child);
                // Best effort: the group may already be gone between the check and the kill.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            self.exit = self.child.wait().ok();
        }
        self.exit
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `exit code N`, `killed by signal N` or `still running`.
pub(crate) fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running".to_owned(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => status.to_string(),
        },
    }
}

/// Polls `condition` every [`POLL_INTERVAL`] until it returns `Some` or `timeout` passes.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}
