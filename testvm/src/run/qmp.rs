//! A small QMP client over the `qapi` crate that survives a QEMU newer than its schema.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qapi::{Command, ExecuteError, Qmp, Stream};

use super::error::InfraError;

/// How long one QMP read may block: QEMU answers in milliseconds unless it is wedged.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How many undecodable messages to skip while waiting for one response. qapi 0.15 carries
/// QEMU 9.1's schema: an event or enum value added since fails to deserialize.
const MAX_UNDECODABLE: usize = 16;

type QmpStream = Qmp<Stream<BufReader<Logged<UnixStream>>, Logged<UnixStream>>>;

/// A connected, negotiated QMP session.
pub(crate) struct QmpClient {
    qmp: QmpStream,
    /// Set once a command met the end of the socket (see [`QmpClient::closed`]).
    closed: bool,
    /// While set, messages are not copied into the QMP log (see
    /// [`QmpClient::block_reads_unlogged`]).
    unlogged: Arc<AtomicBool>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QmpClient")
    }
}

impl QmpClient {
    /// Reads the greeting and leaves capabilities negotiation mode. Every message both ways
    /// goes to `log` (the `qmp.log` artifact), one JSON line each, with the milliseconds since
    /// `start` and its direction.
    pub(crate) fn handshake(
        stream: UnixStream,
        log: &Path,
        start: Instant,
    ) -> Result<QmpClient, InfraError> {
        let io = |what| move |source| InfraError::Io { what, source };
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(io("setting the QMP read timeout"))?;
        let reader = stream.try_clone().map_err(io("cloning the QMP socket"))?;
        let log = Arc::new(Mutex::new(
            File::create(log).map_err(io("creating the QMP log"))?,
        ));
        let unlogged = Arc::new(AtomicBool::new(false));
        let mut qmp = Qmp::new(Stream::new(
            BufReader::new(Logged::new(
                reader,
                "<-",
                log.clone(),
                start,
                unlogged.clone(),
            )),
            Logged::new(stream, "->", log, start, unlogged.clone()),
        ));
        qmp.handshake().map_err(|e| qmp_error("handshake", e))?;
        Ok(QmpClient {
            qmp,
            closed: false,
            unlogged,
        })
    }

    /// The VM's run state (`running`, `paused`, …).
    pub(crate) fn status(&mut self) -> Result<String, InfraError> {
        let info = self.execute(&qapi::qmp::query_status {}, "query-status")?;
        Ok(serde_json::to_value(info.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned()))
    }

    /// Plugs `disk` into hotplug root port `port`: `blockdev-add`, then `device_add`.
    pub(crate) fn hotplug(
        &mut self,
        disk: &crate::machine::Disk,
        port: u32,
    ) -> Result<(), InfraError> {
        let (blockdev, device) =
            disk.hotplug_arguments(port)
                .ok_or_else(|| InfraError::HotplugUnsupported {
                    bus: format!("{:?}", disk.bus),
                })?;
        self.execute(&BlockdevAdd(blockdev), "blockdev-add")?;
        self.execute(&DeviceAdd(device), "device_add")?;
        Ok(())
    }

    /// What every block device has read so far (`rd_bytes` and `rd_operations` of
    /// `query-blockstats`, summed). Raw JSON: the typed answer would follow qapi's older schema.
    pub(crate) fn block_reads(&mut self) -> Result<BlockReads, InfraError> {
        let stats = self.execute(&QueryBlockstats {}, "query-blockstats")?;
        Ok(sum_block_reads(&stats))
    }

    /// The monitor's `info jit` (TCG's translation buffer and flush counters), as text.
    pub(crate) fn info_jit(&mut self) -> Result<String, InfraError> {
        let answer = self.execute(
            &HumanMonitorCommand {
                command_line: "info jit".to_owned(),
            },
            "human-monitor-command info jit",
        )?;
        Ok(answer.as_str().unwrap_or_default().to_owned())
    }

    /// [`QmpClient::block_reads`] without its two messages in the QMP log: the read sampler
    /// asks every few milliseconds, and its answers (kilobytes each) would fill the log with
    /// what `timings.json` keeps anyway.
    pub(crate) fn block_reads_unlogged(&mut self) -> Result<BlockReads, InfraError> {
        self.unlogged.store(true, Ordering::Relaxed);
        let reads = self.block_reads();
        self.unlogged.store(false, Ordering::Relaxed);
        reads
    }

    /// Whether an earlier command found the socket closed: QEMU has exited (or is exiting), and
    /// every later command would fail the same way.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Presses the power button: an ACPI event the guest's OS answers by shutting down.
    pub(crate) fn system_powerdown(&mut self) -> Result<(), InfraError> {
        self.execute(&qapi::qmp::system_powerdown {}, "system_powerdown")?;
        Ok(())
    }

    /// Asks QEMU to exit. QEMU may close the socket before or instead of answering, so only
    /// sending the command can fail.
    pub(crate) fn quit(&mut self) -> Result<(), InfraError> {
        self.qmp
            .write_command(&qapi::qmp::quit {})
            .map_err(|e| qmp_error("quit", ExecuteError::Io(e)))?;
        // Best effort: the answer races the socket close; QEMU's exit is what is checked.
        let _ = self.read_response::<qapi::qmp::quit>();
        Ok(())
    }

    fn execute<C: Command>(
        &mut self,
        command: &C,
        what: &'static str,
    ) -> Result<C::Ok, InfraError> {
        let answer = match self.qmp.write_command(command) {
            Ok(()) => self.read_response::<C>(),
            Err(e) => Err(ExecuteError::Io(e)),
        };
        answer.map_err(|e| {
            self.closed |= is_closed(&e);
            qmp_error(what, e)
        })
    }

    /// Reads the response to `C`, skipping messages the schema cannot decode.
    fn read_response<C: Command>(&mut self) -> Result<C::Ok, ExecuteError> {
        let mut skipped = 0;
        loop {
            match self.qmp.read_response::<C>() {
                Err(ExecuteError::Io(e))
                    if e.kind() == io::ErrorKind::InvalidData && skipped < MAX_UNDECODABLE =>
                {
                    skipped += 1;
                }
                other => {
                    // Queued events are not used; drop them so they do not pile up.
                    self.qmp.events().for_each(drop);
                    return other;
                }
            }
        }
    }
}

/// `blockdev-add` with its arguments as JSON: qapi's typed `BlockdevOptions` follows QEMU
/// 9.1's schema, and the raw form is both shorter and version-proof.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct BlockdevAdd(serde_json::Value);

impl Command for BlockdevAdd {
    type Ok = serde_json::Value;
    const NAME: &'static str = "blockdev-add";
    const ALLOW_OOB: bool = false;
}

/// `human-monitor-command`: a monitor command whose answer is the text the monitor prints.
#[derive(Debug, serde::Serialize)]
struct HumanMonitorCommand {
    #[serde(rename = "command-line")]
    command_line: String,
}

impl Command for HumanMonitorCommand {
    type Ok = serde_json::Value;
    const NAME: &'static str = "human-monitor-command";
    const ALLOW_OOB: bool = false;
}

/// `query-blockstats` answered as raw JSON.
#[derive(Debug, serde::Serialize)]
struct QueryBlockstats {}

impl Command for QueryBlockstats {
    type Ok = serde_json::Value;
    const NAME: &'static str = "query-blockstats";
    const ALLOW_OOB: bool = false;
}

/// What the guest's disks have read so far, summed over its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BlockReads {
    /// `rd_bytes`.
    pub(crate) bytes: u64,
    /// `rd_operations`: read requests as the device model completed them (after the guest's
    /// block layer merged adjacent ones, before any split on the host).
    pub(crate) requests: u64,
}

/// The devices' `stats.rd_bytes` and `stats.rd_operations`, summed: one entry per device (its
/// top node), so a throttle filter and the raw node below it are not counted twice.
fn sum_block_reads(stats: &serde_json::Value) -> BlockReads {
    let devices = stats.as_array().map(Vec::as_slice).unwrap_or_default();
    let sum = |field: &str| -> u64 {
        devices
            .iter()
            .filter_map(|d| d["stats"][field].as_u64())
            .sum()
    };
    BlockReads {
        bytes: sum("rd_bytes"),
        requests: sum("rd_operations"),
    }
}

/// Whether `error` says the socket is gone: QEMU closed it (exited), so no answer will come.
fn is_closed(error: &ExecuteError) -> bool {
    matches!(
        error,
        ExecuteError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected
        )
    )
}

/// `device_add` with its arguments as JSON (driver properties are free-form).
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct DeviceAdd(serde_json::Value);

impl Command for DeviceAdd {
    type Ok = serde_json::Value;
    const NAME: &'static str = "device_add";
    const ALLOW_OOB: bool = false;
}

/// One direction of the QMP socket, copied line by line into the shared log. QMP frames
/// every message as one line of JSON; a partial line waits for its end.
pub(crate) struct Logged<S> {
    inner: S,
    direction: &'static str,
    log: Arc<Mutex<File>>,
    start: Instant,
    pending: Vec<u8>,
    /// Shared with the client: while set, complete lines are dropped instead of logged.
    unlogged: Arc<AtomicBool>,
}

impl<S> Logged<S> {
    fn new(
        inner: S,
        direction: &'static str,
        log: Arc<Mutex<File>>,
        start: Instant,
        unlogged: Arc<AtomicBool>,
    ) -> Self {
        Logged {
            inner,
            direction,
            log,
            start,
            pending: Vec::new(),
            unlogged,
        }
    }

    /// Logs the complete lines of `bytes`. Best effort: a full disk must not fail the boot,
    /// the transcript is a diagnostic.
    fn record(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.is_empty() || self.unlogged.load(Ordering::Relaxed) {
                continue;
            }
            let ms = self.start.elapsed().as_millis();
            if let Ok(mut log) = self.log.lock() {
                let _ = writeln!(log, "{ms:>8} {} {text}", self.direction);
            }
        }
    }
}

impl<S: Read> Read for Logged<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.record(&buf[..n]);
        Ok(n)
    }
}

impl<S: Write> Write for Logged<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.record(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn qmp_error(what: &'static str, error: ExecuteError) -> InfraError {
    InfraError::Qmp {
        what,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(answer: serde_json::Value, bytes: u64, requests: u64) {
        assert_eq!(
            sum_block_reads(&answer),
            BlockReads { bytes, requests },
            "{answer}"
        );
    }

    /// The shape QEMU 10 answers with (trimmed): one entry per device, its parents nested (a
    /// throttle filter's raw node counts the same reads again, so it must not be added).
    #[test]
    fn block_reads_sum_the_devices_only() {
        check(
            serde_json::json!([
                { "device": "", "qdev": "/machine/peripheral-anon/device[0]/virtio-backend",
                  "node-name": "disk0",
                  "stats": { "rd_bytes": 1000, "rd_operations": 7, "wr_bytes": 5, "wr_operations": 1 },
                  "parent": { "node-name": "disk0-raw",
                              "stats": { "rd_bytes": 1000, "rd_operations": 7 } } },
                { "device": "", "node-name": "disk1", "stats": { "rd_bytes": 24, "rd_operations": 3 } },
                { "device": "cd0", "stats": {} },
            ]),
            1024,
            10,
        );
        // A device without reads yet, and one whose stats lack the counter.
        check(
            serde_json::json!([
                { "device": "", "stats": { "rd_bytes": 0, "rd_operations": 0 } },
                { "device": "", "stats": { "rd_bytes": 512 } },
            ]),
            512,
            0,
        );
        // Not an array (an error answer's shape): nothing.
        check(serde_json::json!({}), 0, 0);
        check(serde_json::json!([]), 0, 0);
    }

    #[test]
    fn a_closed_socket_is_told_apart_from_other_errors() {
        let io = |kind| ExecuteError::Io(io::Error::new(kind, "test"));
        assert!(is_closed(&io(io::ErrorKind::UnexpectedEof)));
        assert!(is_closed(&io(io::ErrorKind::BrokenPipe)));
        assert!(!is_closed(&io(io::ErrorKind::WouldBlock)));
        assert!(!is_closed(&io(io::ErrorKind::InvalidData)));
    }
}
