//! How busy the host was while a guest booted: QEMU's own CPU time beside the host's, so a
//! benchmark can tell a slow guest from a host that was running something else. Under TCG the
//! guest's clock follows the host's, and a busy host slows every guest instruction: a boot
//! next to other work can take twice as long with nothing wrong in the guest.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// `/proc/stat` and `/proc/<pid>/stat` count CPU time in USER_HZ ticks: 100 a second on every
/// architecture Linux runs (`USER_HZ` in the kernel's `asm/param.h`).
const USER_HZ: u64 = 100;

/// The host's CPU time beside QEMU's over a boot, from QEMU's start to the boot's last
/// milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    /// Wall-clock milliseconds covered.
    pub wall_ms: u64,
    /// CPU milliseconds QEMU used (all its threads, user and system).
    pub qemu_cpu_ms: u64,
    /// CPU milliseconds the host's CPUs were busy, QEMU's included (everything but idle and
    /// iowait in `/proc/stat`).
    pub host_busy_ms: u64,
    /// The host's CPUs.
    pub host_cpus: u32,
}

impl HostLoad {
    /// What everything but this QEMU kept busy, on average, in CPUs (another QEMU the
    /// harness runs beside it included).
    pub fn other_cpus(&self) -> f64 {
        if self.wall_ms == 0 {
            return 0.0;
        }
        self.host_busy_ms.saturating_sub(self.qemu_cpu_ms) as f64 / self.wall_ms as f64
    }
}

/// The counters at QEMU's start, to be read again at the end.
#[derive(Debug)]
pub(crate) struct HostLoadProbe {
    pid: u32,
    started: Instant,
    host_busy_ticks: u64,
    host_cpus: u32,
}

impl HostLoadProbe {
    /// Reads the host's counters now; None where /proc cannot say (not Linux, no procfs).
    pub(crate) fn start(pid: u32) -> Option<HostLoadProbe> {
        let (host_busy_ticks, host_cpus) = host_busy(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(HostLoadProbe {
            pid,
            started: Instant::now(),
            host_busy_ticks,
            host_cpus,
        })
    }

    /// The load since [`HostLoadProbe::start`]; None once QEMU is gone (its counters with it).
    pub(crate) fn finish(&self) -> Option<HostLoad> {
        let qemu = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let qemu_ticks = process_cpu(&qemu)?;
        let (host_busy_ticks, _) = host_busy(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let ms = |ticks: u64| ticks * 1000 / USER_HZ;
        Some(HostLoad {
            wall_ms: self.started.elapsed().as_millis() as u64,
            qemu_cpu_ms: ms(qemu_ticks),
            host_busy_ms: ms(host_busy_ticks.saturating_sub(self.host_busy_ticks)),
            host_cpus: self.host_cpus,
        })
    }
}

/// `/proc/stat`'s busy ticks over all CPUs (the `cpu` line less idle and iowait; guest time is
/// inside user already) and the count of `cpuN` lines.
fn host_busy(stat: &str) -> Option<(u64, u32)> {
    let mut lines = stat.lines();
    let total = lines.next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = total
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest guest_nice are inside user, nice).
    let busy = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((busy, u32::try_from(cpus).ok()?))
}

/// A process's user and system ticks from its `/proc/<pid>/stat`: fields 14 and 15
/// (proc_pid_stat(5)), counted after the command name, which is in parentheses and may hold
/// spaces and parentheses itself.
fn process_cpu(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(") ")?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_stat() {
        let check = |stat: &str, expected: Option<(u64, u32)>| {
            assert_eq!(host_busy(stat), expected, "{stat}")
        };
        check(
            "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 2 25 500 10 1 1 1 0 0\ncpu1 50 3 25 500 10 0 1 2 0 0\nintr 1 2 3\n",
            Some((161, 2)),
        );
        check("cpu  1 2 3 4 5 6 7 8\n", Some((27, 0)));
        check("intr 1\n", None);
        check("cpu  1 x 3 4 5 6 7 8\n", None);
        check("cpu  1 2 3\n", None);
    }

    #[test]
    fn process_stat() {
        let check = |stat: &str, expected: Option<u64>| assert_eq!(process_cpu(stat), expected);
        check(
            "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 5 0 99 0",
            Some(1801),
        );
        // A command name with spaces and parentheses.
        check(
            "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 0",
            Some(30),
        );
        check("7 (short) R 1", None);
        check("garbage", None);
    }

    #[test]
    fn other_cpus() {
        let load = HostLoad {
            wall_ms: 10_000,
            qemu_cpu_ms: 9_500,
            host_busy_ms: 19_500,
            host_cpus: 2,
        };
        assert!((load.other_cpus() - 1.0).abs() < 1e-9);
        assert_eq!(HostLoad { wall_ms: 0, ..load }.other_cpus(), 0.0);
        assert_eq!(
            HostLoad {
                host_busy_ms: 100,
                ..load
            }
            .other_cpus(),
            0.0
        );
    }

    /// The probe reads this very process's counters (a stand-in for QEMU).
    #[test]
    fn a_live_process() {
        let probe = HostLoadProbe::start(std::process::id()).expect("Linux has /proc");
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 50 {
            std::hint::black_box(0u64);
        }
        let load = probe.finish().expect("this process is alive");
        assert!(load.wall_ms >= 50, "{load:?}");
        assert!(load.host_cpus >= 1, "{load:?}");
        assert!(
            HostLoadProbe {
                pid: u32::MAX,
                ..probe
            }
            .finish()
            .is_none()
        );
    }
}
