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
                },
                MilestoneReached {
                    name: "shell".into(),
                    host_ms: 2000,
                    guest_s: None,
                    line: "hello".into(),
                    sent: Some("an answer".into()),
                    bytes_read: None,
                },
            ],
            qemu_exit: Some(0),
            qmp_status: Some("running".into()),
            outcome: OUTCOME_PASSED.into(),
        };
        let text = serde_json::to_string_pretty(&timings).unwrap();
        insta::assert_snapshot!(text);
        assert_eq!(serde_json::from_str::<Timings>(&text).unwrap(), timings);
    }
}
