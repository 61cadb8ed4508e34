//! What a boot reached: the in-memory report, progress events and `timings.json`.
//!
//! `timings.json` is an API boundary read by the benchmark tooling; this module owns it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A milestone the guest reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneReached {
    /// The milestone's name.
    pub name: String,
    /// Host milliseconds from spawning QEMU to the arrival of the matched text.
    pub host_ms: u64,
    /// The guest's printk timestamp (seconds since the kernel started) of the line holding
    /// the match, if that line carries one.
    pub guest_s: Option<f64>,
    /// The console line holding the match, without its line ending.
    pub line: String,
    /// What the harness typed on the console right after the match ([`super::Milestone::send`]),
    /// without the line end; absent when nothing was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// Bytes the guest had read from all its disks when the harness saw the match (QMP
    /// `query-blockstats`, `rd_bytes` summed over the devices; asked right after the match, so
    /// it may include a few reads made since). Absent when QMP could not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    /// Read requests the guest's disks had completed by then (`rd_operations`, summed the same
    /// way and asked in the same `query-blockstats`). Absent when QMP could not say, and in
    /// files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_requests: Option<u64>,
}

/// The guest's reads sampled over time ([`super::BootSpec::read_sampling`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSampling {
    /// The interval asked for, in milliseconds.
    pub interval_ms: u64,
    /// One entry per answered `query-blockstats`, in order: host times strictly increasing,
    /// both counters never decreasing.
    pub samples: Vec<ReadSample>,
    /// Samples that failed (QMP did not answer in time or answered with an error); the series
    /// simply has a gap there. The end of the socket when QEMU exits is not a failure: it ends
    /// the series.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// The first failure's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the guest had read at one moment, as QMP `query-blockstats` said (summed over the
/// devices' top nodes, as [`MilestoneReached::bytes_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSample {
    /// Host milliseconds from spawning QEMU to the arrival of the answer.
    pub host_ms: u64,
    /// `rd_bytes`.
    pub bytes_read: u64,
    /// `rd_operations`.
    pub read_requests: u64,
}

/// A successful boot.
#[derive(Debug, Clone, PartialEq)]
pub struct BootReport {
    /// Every milestone, in order.
    pub milestones: Vec<MilestoneReached>,
    /// From spawning QEMU to its exit.
    pub wall: Duration,
}

/// Progress of a boot, for a live display.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// QEMU runs.
    QemuStarted {
        /// Its process id (also its process group id).
        pid: u32,
    },
    /// A milestone was reached.
    Milestone(MilestoneReached),
    /// The boot is over; `outcome` as in `timings.json`.
    Finished {
        /// `passed` or `failed: …`.
        outcome: String,
    },
}

/// The content of `timings.json`, written after every boot, failed or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// The milestones reached, in order.
    pub milestones: Vec<MilestoneReached>,
    /// QEMU's exit code; `null` if it was killed by a signal or did not exit by itself.
    pub qemu_exit: Option<i32>,
    /// The VM status QMP reported right after connecting (`running`, `prelaunch`, …).
    pub qmp_status: Option<String>,
    /// `passed`, or `failed: ` and the one-line reason.
    pub outcome: String,
    /// The reads sampled over time, when the spec asked for it; absent otherwise (and in
    /// files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_sampling: Option<ReadSampling>,
    /// How busy the host was from QEMU's start to the last milestone; absent when /proc could
    /// not say or the boot ended early (and in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_load: Option<super::HostLoad>,
    /// TCG's translation counters at the last milestone (`info jit`); absent under KVM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcg: Option<super::TcgStats>,
}

/// The `outcome` text of a passed boot.
pub const OUTCOME_PASSED: &str = "passed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_json_round_trips() {
        let timings = Timings {
            milestones: vec![
                MilestoneReached {
                    name: "kernel".into(),
                    host_ms: 1234,
                    guest_s: Some(2.345678),
                    line: "[    2.345678] Run /init as init process".into(),
                    sent: None,
                    bytes_read: Some(4096),
                    read_requests: Some(12),
                },
                MilestoneReached {
                    name: "shell".into(),
                    host_ms: 2000,
                    guest_s: None,
                    line: "hello".into(),
                    sent: Some("an answer".into()),
                    bytes_read: None,
                    read_requests: None,
                },
            ],
            qemu_exit: Some(0),
            qmp_status: Some("running".into()),
            outcome: OUTCOME_PASSED.into(),
            read_sampling: Some(ReadSampling {
                interval_ms: 100,
                samples: vec![
                    ReadSample {
                        host_ms: 80,
                        bytes_read: 0,
                        read_requests: 0,
                    },
                    ReadSample {
                        host_ms: 181,
                        bytes_read: 4096,
                        read_requests: 12,
                    },
                ],
                failures: 1,
                first_failure: Some("QMP query-blockstats: timed out".into()),
            }),
            host_load: Some(super::super::HostLoad {
                wall_ms: 12_000,
                qemu_cpu_ms: 11_500,
                host_busy_ms: 12_250,
                host_cpus: 2,
            }),
            tcg: Some(super::super::TcgStats {
                tb_count: 46589,
                code_bytes: 26_670_067,
                tb_flushes: 0,
                tb_invalidations: 4578,
                tlb_full_flushes: 0,
                tlb_partial_flushes: 37712,
            }),
        };
        let text = serde_json::to_string_pretty(&timings).unwrap();
        insta::assert_snapshot!(text);
        assert_eq!(serde_json::from_str::<Timings>(&text).unwrap(), timings);
    }

    /// A `timings.json` written before `read_requests` and `read_sampling` existed still
    /// parses, with both absent; a sampling without failures leaves them out.
    #[test]
    fn older_timings_json_still_parses() {
        let older = r#"{
  "milestones": [
    {
      "name": "multi-user",
      "host_ms": 41000,
      "guest_s": 30.5,
      "line": "[   30.500000] systemd[1]: Reached target multi-user.target - Multi-User System.",
      "bytes_read": 71303168
    }
  ],
  "qemu_exit": null,
  "qmp_status": "running",
  "outcome": "passed"
}"#;
        let timings: Timings = serde_json::from_str(older).unwrap();
        assert_eq!(timings.milestones[0].bytes_read, Some(71303168));
        assert_eq!(timings.milestones[0].read_requests, None);
        assert_eq!(timings.read_sampling, None);

        let clean = ReadSampling {
            interval_ms: 250,
            samples: vec![],
            failures: 0,
            first_failure: None,
        };
        assert_eq!(
            serde_json::to_string(&clean).unwrap(),
            r#"{"interval_ms":250,"samples":[]}"#
        );
    }
}
