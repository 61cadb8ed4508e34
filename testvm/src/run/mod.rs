//! Boots a [`Machine`], watches its serial console for milestones and fatal patterns, and
//! leaves artifacts behind: `console.log`, `qemu.stderr`, `qemu.cmdline` (to rerun by hand),
//! `qemu.argv` (what ran) and `timings.json`.

mod console;
mod error;
mod host_load;
mod process;
mod qmp;
mod report;
mod sampling;
mod spec;
mod tcg_stats;
mod watch;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use error::{END_MILESTONE, GuestFailure, GuestFailureReason, InfraError, VmError};
pub use host_load::HostLoad;
pub use report::{
    BootReport, Event, MilestoneReached, OUTCOME_PASSED, ReadSample, ReadSampling, Timings,
};
pub use spec::{BootSpec, End, Fatal, Hotplug, MIN_READ_SAMPLING, Milestone, SEND_LINE_END};
pub use tcg_stats::{TcgStats, parse_info_jit};

use crate::machine::{Io, Machine, shell};
use console::{SharedTranscript, TeeReader};
use process::QemuProcess;
use qmp::QmpClient;
use sampling::{ReadSampler, SharedQmp, lock};
use watch::{Seen, Watcher};

/// How long QEMU gets to create its sockets; it does so before loading the kernel.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// How long QEMU gets to exit after QMP `quit` or after closing the console.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed start-up step waits for QEMU to exit before blaming the step itself.
const EXITED_GRACE: Duration = Duration::from_secs(1);

/// How long after a power-button press without effect the harness presses again: a press before
/// the guest listens (systemd-logind not yet watching the button's input device) is lost, as on
/// a real machine.
const PRESS_AGAIN: Duration = Duration::from_secs(15);

/// Console lines kept in a [`GuestFailure`].
const CONSOLE_TAIL_LINES: usize = 40;

/// Names of the files a boot writes into its artifacts directory.
pub mod artifact {
    /// Everything the serial console printed, as the harness read it.
    pub const CONSOLE_LOG: &str = "console.log";
    /// QEMU's own copy of the console (`logfile=`), complete even if the harness died. It can
    /// repeat a character: QEMU 10 logs a serial byte again when a socket write of it is
    /// retried after EAGAIN (a 1-byte write per character fills the socket quickly), so
    /// `console.log` is the one to read.
    pub const QEMU_CONSOLE_LOG: &str = "qemu-console.log";
    /// QEMU's stderr.
    pub const QEMU_STDERR: &str = "qemu.stderr";
    /// One shell line that reruns the boot interactively (console on the terminal).
    pub const QEMU_CMDLINE: &str = "qemu.cmdline";
    /// The shell-quoted command line that actually ran (with sockets).
    pub const QEMU_ARGV: &str = "qemu.argv";
    /// Milestones and outcome, see [`super::Timings`].
    pub const TIMINGS_JSON: &str = "timings.json";
    /// Every QMP message both ways, one line each: `<ms since QEMU start> <- | -> <json>`.
    pub const QMP_LOG: &str = "qmp.log";
    /// Everything above, cleared before a boot.
    pub const ALL: [&str; 7] = [
        QMP_LOG,
        CONSOLE_LOG,
        QEMU_CONSOLE_LOG,
        QEMU_STDERR,
        QEMU_CMDLINE,
        QEMU_ARGV,
        TIMINGS_JSON,
    ];
}

/// Boots `machine`, checks it against `spec` and writes artifacts into `artifacts`.
pub fn boot(machine: &Machine, spec: &BootSpec, artifacts: &Path) -> Result<BootReport, VmError> {
    boot_with_events(machine, spec, artifacts, &mut |_| {})
}

/// [`boot`], reporting progress to `on_event` as it happens.
pub fn boot_with_events(
    machine: &Machine,
    spec: &BootSpec,
    artifacts: &Path,
    on_event: &mut dyn FnMut(&Event),
) -> Result<BootReport, VmError> {
    let mut state = BootState::default();
    let result = run(machine, spec, artifacts, on_event, &mut state);
    state.stop_sampling();
    let outcome = match &result {
        Ok(_) => OUTCOME_PASSED.to_owned(),
        Err(error) => format!("failed: {error}"),
    };
    let timings = Timings {
        milestones: state.reached.clone(),
        qemu_exit: state.qemu_exit,
        qmp_status: state.qmp_status.clone(),
        outcome: outcome.clone(),
        read_sampling: state.read_sampling.clone(),
        host_load: state.host_load,
        tcg: state.tcg,
    };
    let written = write_artifact(artifacts, artifact::TIMINGS_JSON, &timings_json(&timings));
    let console_written = match &state.transcript {
        Some(transcript) => {
            write_artifact(artifacts, artifact::CONSOLE_LOG, &transcript.lock().text())
        }
        None => Ok(()),
    };
    on_event(&Event::Finished { outcome });
    let report = result?;
    written?;
    console_written?;
    Ok(report)
}

/// What a boot collected, kept even when it fails.
#[derive(Debug, Default)]
struct BootState {
    reached: Vec<MilestoneReached>,
    qemu_exit: Option<i32>,
    qmp_status: Option<String>,
    /// What the harness read from the console, once connected.
    transcript: Option<SharedTranscript>,
    /// The read sampler while it runs ([`BootSpec::read_sampling`]).
    sampler: Option<ReadSampler>,
    /// What it recorded, once stopped.
    read_sampling: Option<ReadSampling>,
    /// The host's load over the boot, read at the last milestone.
    host_load: Option<HostLoad>,
    /// TCG's counters at the last milestone.
    tcg: Option<TcgStats>,
}

impl BootState {
    /// Stops the read sampler, if one runs, and keeps its series. Called before QEMU is told
    /// to quit or killed, so no sample races the end; again at the end of every boot.
    fn stop_sampling(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            self.read_sampling = Some(sampler.stop());
        }
    }
}

fn run(
    machine: &Machine,
    spec: &BootSpec,
    artifacts: &Path,
    on_event: &mut dyn FnMut(&Event),
    state: &mut BootState,
) -> Result<BootReport, VmError> {
    prepare_artifacts(artifacts)?;
    // Unix socket paths are limited to 108 bytes (sun_path in linux/un.h), so the sockets
    // live in a short temporary directory rather than beside the artifacts.
    let sockets = tempfile::Builder::new()
        .prefix("testvm-")
        .tempdir()
        .map_err(|source| InfraError::Io {
            what: "creating the socket directory",
            source,
        })?;
    let io = Io::Sockets {
        serial: sockets.path().join("serial.sock"),
        console_log: artifacts.join(artifact::QEMU_CONSOLE_LOG),
        qmp: sockets.path().join("qmp.sock"),
    };
    let Io::Sockets { serial, qmp, .. } = &io else {
        unreachable!("built just above")
    };
    let argv = machine.qemu_args(&io).map_err(InfraError::from)?;
    let interactive = machine
        .qemu_args(&Io::Interactive)
        .map_err(InfraError::from)?;
    write_artifact(
        artifacts,
        artifact::QEMU_CMDLINE,
        &(shell::join(&interactive) + "\n"),
    )?;
    write_artifact(artifacts, artifact::QEMU_ARGV, &(shell::join(&argv) + "\n"))?;

    let stderr_path = artifacts.join(artifact::QEMU_STDERR);
    let stderr = fs::File::create(&stderr_path).map_err(|source| InfraError::Artifacts {
        path: stderr_path.clone(),
        source,
    })?;
    let start = Instant::now();
    let mut qemu = QemuProcess::spawn(&argv, stderr)?;
    let host_load = host_load::HostLoadProbe::start(qemu.pid());
    on_event(&Event::QemuStarted { pid: qemu.pid() });

    // QEMU checks some options (the kernel file, for one) only after creating its sockets,
    // so a start-up step that fails because QEMU exited is reported with QEMU's stderr.
    let started = start_session(&mut qemu, serial, qmp, artifacts, spec, start);
    let (mut watcher, qmp, status) = match started {
        Ok(session) => session,
        Err(error) => {
            return Err(exited_at_start(&mut qemu, &stderr_path)
                .unwrap_or(error)
                .into());
        }
    };
    state.qmp_status = Some(status);
    state.transcript = Some(watcher.transcript());
    let qmp: SharedQmp = std::sync::Arc::new(std::sync::Mutex::new(qmp));
    if let Some(interval) = spec.read_sampling {
        state.sampler = Some(ReadSampler::start(qmp.clone(), interval, start));
    }

    for milestone in &spec.milestones {
        match watcher.reach(milestone)? {
            Seen::Milestone(mut reached) => {
                // Best effort: a figure for the benchmark, never a reason to fail the boot.
                let reads = lock(&qmp).block_reads().ok();
                reached.bytes_read = reads.map(|r| r.bytes);
                reached.read_requests = reads.map(|r| r.requests);
                on_event(&Event::Milestone(reached.clone()));
                for hotplug in spec.hotplug.iter().filter(|h| h.after == reached.name) {
                    // The console keeps being read meanwhile: rexpect's reader thread buffers it.
                    std::thread::sleep(hotplug.delay);
                    lock(&qmp).hotplug(&hotplug.disk, hotplug.port)?;
                }
                state.reached.push(reached);
            }
            other => {
                return Err(guest_failure(
                    &milestone.name,
                    other,
                    &mut qemu,
                    &watcher,
                    &stderr_path,
                    state,
                ));
            }
        }
    }

    state.host_load = host_load.as_ref().and_then(|probe| probe.finish());
    // Best effort, and only what TCG answers: under KVM `info jit` has no counters.
    if machine.accel == crate::machine::Accel::Tcg {
        state.tcg = lock(&qmp)
            .info_jit()
            .ok()
            .and_then(|text| parse_info_jit(&text));
    }

    match spec.end {
        End::GuestPowersOff { timeout } | End::PowerButton { timeout } => {
            let seen = if matches!(spec.end, End::PowerButton { .. }) {
                let deadline = Instant::now() + timeout;
                loop {
                    lock(&qmp).system_powerdown()?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    match watcher.wait_for(None, left.min(PRESS_AGAIN))? {
                        Seen::Timeout(_) if Instant::now() < deadline => continue,
                        Seen::Timeout(_) => break Seen::Timeout(timeout),
                        seen => break seen,
                    }
                }
            } else {
                watcher.wait_for(None, timeout)?
            };
            if !matches!(seen, Seen::Eof) {
                return Err(guest_failure(
                    END_MILESTONE,
                    seen,
                    &mut qemu,
                    &watcher,
                    &stderr_path,
                    state,
                ));
            }
            let status = qemu.wait_exit(EXIT_TIMEOUT);
            state.stop_sampling();
            state.qemu_exit = status.and_then(|s| s.code());
            if status.is_none() {
                return Err(guest_failure(
                    END_MILESTONE,
                    Seen::Timeout(timeout),
                    &mut qemu,
                    &watcher,
                    &stderr_path,
                    state,
                ));
            }
        }
        End::Quit => {
            // The guest may have powered off by itself already; then the socket is gone and
            // sending `quit` fails, which is fine as long as QEMU has exited.
            state.stop_sampling();
            let quit = match qemu.try_exit() {
                Some(_) => Ok(()),
                None => lock(&qmp).quit(),
            };
            let status = qemu.wait_exit(EXIT_TIMEOUT);
            state.qemu_exit = status.and_then(|s| s.code());
            if status.is_none() {
                quit?;
                return Err(InfraError::Qmp {
                    what: "quit",
                    detail: format!("QEMU still running {EXIT_TIMEOUT:?} after quit"),
                }
                .into());
            }
        }
    }
    Ok(BootReport {
        milestones: state.reached.clone(),
        wall: start.elapsed(),
    })
}

/// Connects the console and QMP, and reads the VM status once.
fn start_session(
    qemu: &mut QemuProcess,
    serial: &Path,
    qmp: &Path,
    artifacts: &Path,
    spec: &BootSpec,
    start: Instant,
) -> Result<(Watcher, QmpClient, String), InfraError> {
    let stderr_path = &artifacts.join(artifact::QEMU_STDERR);
    let console = qemu.connect(serial, SOCKET_TIMEOUT, stderr_path)?;
    let transcript = SharedTranscript::default();
    let reader = console.try_clone().map_err(|source| InfraError::Io {
        what: "cloning the console socket",
        source,
    })?;
    let watcher = Watcher::new(
        TeeReader::new(reader, transcript.clone(), start),
        console,
        transcript,
        start,
        &spec.fatal,
    );
    let qmp_stream = qemu.connect(qmp, SOCKET_TIMEOUT, stderr_path)?;
    let mut qmp = QmpClient::handshake(qmp_stream, &artifacts.join(artifact::QMP_LOG), start)?;
    let status = qmp.status()?;
    Ok((watcher, qmp, status))
}

/// If QEMU has exited (or does so within [`EXITED_GRACE`]), the error that says so.
fn exited_at_start(qemu: &mut QemuProcess, stderr_path: &Path) -> Option<InfraError> {
    let status = qemu.wait_exit(EXITED_GRACE)?;
    Some(InfraError::QemuExitedAtStart {
        status: process::describe(Some(status)),
        stderr: read_stderr(stderr_path),
    })
}

/// QEMU's stderr so far without its `info:` lines (the serial socket's "waiting for
/// connection" is always there and would hide the error), trimmed; empty if it cannot be read.
/// The artefact `qemu.stderr` keeps everything.
fn read_stderr(stderr_path: &Path) -> String {
    without_info(&fs::read_to_string(stderr_path).unwrap_or_default())
}

fn without_info(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.contains(": info: "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// Turns what the watcher saw instead of a milestone into a failure, recording QEMU's exit.
fn guest_failure(
    milestone: &str,
    seen: Seen,
    qemu: &mut QemuProcess,
    watcher: &Watcher,
    stderr_path: &Path,
    state: &mut BootState,
) -> VmError {
    let reason = match seen {
        Seen::Fatal { name, line } => GuestFailureReason::Fatal { name, line },
        Seen::Eof => {
            let status = qemu.wait_exit(EXIT_TIMEOUT);
            state.qemu_exit = status.and_then(|s| s.code());
            GuestFailureReason::QemuExited {
                status: process::describe(status),
                stderr: read_stderr(stderr_path),
            }
        }
        Seen::Timeout(after) if milestone == END_MILESTONE => {
            GuestFailureReason::DidNotPowerOff(after)
        }
        Seen::Timeout(after) => GuestFailureReason::Timeout(after),
        Seen::Milestone(_) => unreachable!("a milestone is not a failure"),
    };
    state.stop_sampling();
    // Killing first lets the transcript settle before its tail is taken.
    qemu.kill();
    GuestFailure {
        milestone: milestone.to_owned(),
        reason,
        console_tail: watcher.console_tail(CONSOLE_TAIL_LINES),
    }
    .into()
}

/// Creates the artifacts directory and removes the files of an earlier boot.
fn prepare_artifacts(artifacts: &Path) -> Result<(), InfraError> {
    let error = |path: PathBuf| move |source| InfraError::Artifacts { path, source };
    fs::create_dir_all(artifacts).map_err(error(artifacts.to_owned()))?;
    for name in artifact::ALL {
        let path = artifacts.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(error(path)(e)),
            _ => {}
        }
    }
    Ok(())
}

fn write_artifact(artifacts: &Path, name: &str, content: &str) -> Result<(), InfraError> {
    let path = artifacts.join(name);
    fs::write(&path, content).map_err(|source| InfraError::Artifacts { path, source })
}

fn timings_json(timings: &Timings) -> String {
    serde_json::to_string_pretty(timings).expect("plain data serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_without_qemu_info_lines() {
        let stderr = "qemu-system-x86_64: -chardev socket,id=serial0,path=/tmp/s.sock,server=on: info: QEMU waiting for connection on: disconnected:unix:/tmp/s.sock,server=on\nqemu-system-x86_64: -device sd-card,drive=disk0: Cannot use read-only drive as SD card\n";
        assert_eq!(
            without_info(stderr),
            "qemu-system-x86_64: -device sd-card,drive=disk0: Cannot use read-only drive as SD card"
        );
        assert_eq!(without_info(""), "");
    }
}
