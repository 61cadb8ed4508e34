//! The guest's reads sampled over time: a thread that asks QMP `query-blockstats` every
//! interval while the guest boots, so a report can say when the guest read, not only how much
//! it had read by each milestone.
//!
//! The QMP connection is shared with the main loop (milestone figures, hotplug, power button,
//! quit) behind a mutex, held for one command at a time. Best effort throughout: a failed
//! sample is counted and the series goes on; the end of the socket (QEMU exited) ends it.
//! The samples' QMP messages stay out of `qmp.log` (at 100 ms, about 6 MB over a two-minute
//! boot); the series is in `timings.json`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::qmp::QmpClient;
use super::report::{ReadSample, ReadSampling};
use super::spec::MIN_READ_SAMPLING;

/// The QMP connection, shared by the main loop and the sampler.
pub(crate) type SharedQmp = Arc<Mutex<QmpClient>>;

/// Locks the connection for one command. A thread that panicked while holding it left no
/// half-written command behind that matters more than the boot's remaining steps: go on.
pub(crate) fn lock(qmp: &SharedQmp) -> MutexGuard<'_, QmpClient> {
    qmp.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running sampler thread; [`ReadSampler::stop`] ends it and hands over the series.
pub(crate) struct ReadSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<ReadSampling>,
    interval_ms: u64,
}

impl std::fmt::Debug for ReadSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSampler")
            .field("interval_ms", &self.interval_ms)
            .finish_non_exhaustive()
    }
}

impl ReadSampler {
    /// Starts sampling at once, then every `interval` (raised to [`MIN_READ_SAMPLING`]);
    /// host times count from `start` (QEMU's spawn).
    pub(crate) fn start(qmp: SharedQmp, interval: Duration, start: Instant) -> ReadSampler {
        let interval = interval.max(MIN_READ_SAMPLING);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("testvm-read-sampler".into())
            .spawn(move || sample(&qmp, interval, start, &stopped))
            .expect("the OS can start a thread");
        ReadSampler {
            stop,
            thread,
            interval_ms,
        }
    }

    /// Stops the thread (at most one QMP command's time away) and returns what it recorded.
    pub(crate) fn stop(self) -> ReadSampling {
        // The thread may have ended already (socket closed): then nobody listens, fine.
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_else(|_| ReadSampling {
            interval_ms: self.interval_ms,
            samples: Vec::new(),
            failures: 1,
            first_failure: Some("the read-sampling thread panicked".into()),
        })
    }
}

/// The thread's loop: one sample per tick on a fixed grid from its start (a slow answer delays
/// one sample, not the ones after), until told to stop or the socket closes.
fn sample(
    qmp: &SharedQmp,
    interval: Duration,
    start: Instant,
    stopped: &mpsc::Receiver<()>,
) -> ReadSampling {
    let mut sampling = ReadSampling {
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        samples: Vec::new(),
        failures: 0,
        first_failure: None,
    };
    let grid = Instant::now();
    let mut tick = 0u32;
    loop {
        let (answer, closed) = {
            let mut client = lock(qmp);
            let answer = client.block_reads_unlogged();
            (answer, client.closed())
        };
        let host_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        match answer {
            Ok(reads) => push(&mut sampling.samples, host_ms, reads.bytes, reads.requests),
            // QEMU has exited: the series is over, nothing failed.
            Err(_) if closed => break,
            Err(error) => {
                sampling.failures += 1;
                sampling.first_failure.get_or_insert(error.to_string());
            }
        }
        // The next tick still ahead (ticks missed while QMP was slow are skipped).
        let elapsed = grid.elapsed();
        while interval * tick <= elapsed {
            tick += 1;
        }
        match stopped.recv_timeout(interval * tick - elapsed) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    sampling
}

/// Appends a sample unless it would break the series' order: a host time not after the last
/// one's (the same millisecond) or a counter below the last one's (cannot happen with QEMU's
/// monotonic counters; a guard, not a correction).
fn push(samples: &mut Vec<ReadSample>, host_ms: u64, bytes_read: u64, read_requests: u64) {
    if let Some(last) = samples.last()
        && (host_ms <= last.host_ms
            || bytes_read < last.bytes_read
            || read_requests < last.read_requests)
    {
        return;
    }
    samples.push(ReadSample {
        host_ms,
        bytes_read,
        read_requests,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pushes: &[(u64, u64, u64)], expected: &[(u64, u64, u64)]) {
        let mut samples = Vec::new();
        for &(host_ms, bytes, requests) in pushes {
            push(&mut samples, host_ms, bytes, requests);
        }
        let got: Vec<_> = samples
            .iter()
            .map(|s| (s.host_ms, s.bytes_read, s.read_requests))
            .collect();
        assert_eq!(got, expected, "{pushes:?}");
    }

    #[test]
    fn the_series_keeps_its_order() {
        check(&[], &[]);
        check(&[(5, 0, 0), (15, 0, 0)], &[(5, 0, 0), (15, 0, 0)]);
        check(
            &[(5, 0, 0), (5, 512, 1), (16, 512, 1)],
            &[(5, 0, 0), (16, 512, 1)],
        );
        check(
            &[(5, 4096, 8), (15, 1024, 9), (25, 4096, 7), (35, 8192, 9)],
            &[(5, 4096, 8), (35, 8192, 9)],
        );
    }
}
