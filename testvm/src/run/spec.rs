//! What a boot must show on the console, and how it must end.

use std::time::Duration;

use regex::Regex;

/// A console pattern the guest must print, within `timeout` of the previous milestone (or of
/// QEMU's start, for the first one).
#[derive(Debug, Clone)]
pub struct Milestone {
    /// Short name for reports and tables (`kernel`, `storage-init`, `systemd`).
    pub name: String,
    /// Matched against the console text as it arrives; the console is Latin-1 decoded, so
    /// match ASCII only.
    pub pattern: Regex,
    /// How long to wait for it, counted from the previous milestone.
    pub timeout: Duration,
    /// Text typed on the serial console as soon as the milestone matched (an answer to a
    /// prompt, e.g. a test disk's passphrase), followed by [`SEND_LINE_END`].
    pub send: Option<String>,
}

/// What ends a [`Milestone::send`] line: the newline of a terminal in line mode. A serial
/// console's tty maps a carriage return to it (`ICRNL`) but passes the newline itself through
/// whatever its input flags, so the newline works in canonical and raw mode alike.
pub const SEND_LINE_END: &str = "\n";

impl Milestone {
    /// A milestone from a pattern text.
    pub fn new(name: &str, pattern: &str, timeout: Duration) -> Result<Milestone, regex::Error> {
        Ok(Milestone {
            name: name.to_owned(),
            pattern: Regex::new(pattern)?,
            timeout,
            send: None,
        })
    }

    /// The milestone, answered with `text` (see [`Milestone::send`]).
    pub fn then_send(self, text: &str) -> Milestone {
        Milestone {
            send: Some(text.to_owned()),
            ..self
        }
    }
}

/// A console pattern that ends the boot as failed as soon as it shows up.
#[derive(Debug, Clone)]
pub struct Fatal {
    /// Short name for reports (`kernel panic`).
    pub name: String,
    /// Matched like [`Milestone::pattern`].
    pub pattern: Regex,
}

impl Fatal {
    /// A fatal pattern from a pattern text.
    pub fn new(name: &str, pattern: &str) -> Result<Fatal, regex::Error> {
        Ok(Fatal {
            name: name.to_owned(),
            pattern: Regex::new(pattern)?,
        })
    }
}

/// How a boot ends once every milestone has been reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The guest powers off (or reboots, on a machine with
    /// [`GuestReboot::ExitQemu`](crate::machine::GuestReboot)) by itself and QEMU exits
    /// within `timeout`; fatal patterns are still watched until then. On a machine that
    /// restarts, only a power-off ends it.
    GuestPowersOff {
        /// How long to wait after the last milestone.
        timeout: Duration,
    },
    /// The harness presses the power button (QMP `system_powerdown`, an ACPI power-button
    /// event; again every 15 s, since a press before the guest listens is lost) and the guest
    /// must shut down cleanly and power off within `timeout`, as a systemd machine does; a
    /// guest that ignores it fails.
    PowerButton {
        /// How long the guest may take to shut down.
        timeout: Duration,
    },
    /// The harness ends QEMU over QMP `quit` (for boards that cannot power off).
    Quit,
}

/// Everything a boot is checked against.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// In the order the guest reaches them.
    pub milestones: Vec<Milestone>,
    /// Raced against every milestone and the end.
    pub fatal: Vec<Fatal>,
    /// What happens after the last milestone.
    pub end: End,
    /// Disks plugged in while the guest runs.
    pub hotplug: Vec<Hotplug>,
    /// When set, the guest's reads are also sampled over time: every interval (at least
    /// [`MIN_READ_SAMPLING`]) from the QMP handshake to the end of the boot, QMP
    /// `query-blockstats`, recorded in `timings.json` ([`super::ReadSampling`]). Best effort: a
    /// failed sample is counted there, never a reason to fail the boot. Off (`None`) by
    /// default: each sample is a QMP round trip on the main loop's connection.
    pub read_sampling: Option<Duration>,
}

/// The shortest read-sampling interval: a QMP round trip takes about a millisecond, and the
/// samples' host times are whole milliseconds that must increase from one to the next.
pub const MIN_READ_SAMPLING: Duration = Duration::from_millis(10);

/// A disk plugged into the running guest over QMP, `delay` after a milestone: a disk that
/// appears late, as USB sticks and slow controllers do.
#[derive(Debug, Clone)]
pub struct Hotplug {
    /// The milestone after which to plug it.
    pub after: String,
    /// How long after that milestone.
    pub delay: Duration,
    pub disk: crate::machine::Disk,
    /// The machine's hotplug root port to use (`0..Machine::hotplug_ports`).
    pub port: u32,
}
