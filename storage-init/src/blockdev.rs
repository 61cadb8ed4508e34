//! Finding the boot filesystem among the machine's block devices, without udev: one scan of
//! `/sys/class/block` (coldplug), then, only if the device is not there yet, the kernel's
//! uevents for devices that appear or change later (hotplug), each device read through the
//! bounded [`Inspector`]. Without a uevent socket (a kernel built without networking) the scan
//! repeats instead.
//!
//! Invariant: nothing that appears can be missed. The uevent socket opens only when the first
//! scan found nothing (most boots find /boot at once and never pay for a socket); everything
//! that came before it is then looked at once more (coldplug's driver round, then a scan), and
//! everything after it comes as an event.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::BootFs;
use crate::error::Fatal;
pub use crate::inspect::BlockDevice;
use crate::inspect::{Inspector, SYS_CLASS_BLOCK, Shape};
use crate::uevent::UeventSocket;

/// Without uevents: how long to sleep between scans, short against boot time, long enough not
/// to spin a core.
const RESCAN_INTERVAL: Duration = Duration::from_millis(10);
/// While a device that did not answer in time is pending: how often to look for its answer.
const PENDING_INTERVAL: Duration = Duration::from_millis(100);

/// The device found, and how the search came to it (the log says which, so a late disk shows it
/// was found through its uevent).
#[derive(Debug)]
pub struct Found {
    pub device: BlockDevice,
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A scan of /sys/class/block without waiting for any event: the first, or the one after
    /// the uevent socket opened (behind a second coldplug round of drivers).
    Coldplug,
    /// A uevent announcing the device (or its new medium).
    Uevent,
    /// A rescan: after a uevent overflow, without a uevent socket, or a slow device's late answer.
    Rescan,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Coldplug => "at coldplug",
            Via::Uevent => "from a uevent",
            Via::Rescan => "on a rescan",
        })
    }
}

/// What the search needs from the rest of storage-init once the device is not there at once.
pub trait Hotplug {
    /// Offers every device that has no driver (sysfs) to the drivers once more: those that
    /// appeared since the first coldplug (a driver's own children) announced themselves before
    /// anyone listened.
    fn coldplug(&mut self);
    /// Loads what a device announced by a uevent needs (its modalias).
    fn add(&mut self, modalias: &str);
    /// Logs a warning.
    fn warn(&mut self, message: &str);
}

/// Whether `device` is the one `wanted` names.
pub fn matches(wanted: &BootFs, device: &BlockDevice) -> bool {
    let part = device.partition.as_ref();
    match wanted {
        // The config lower-cases UUIDs; FAT's are upper-case, as blkid prints them.
        BootFs::Uuid(uuid) => device
            .superblock
            .as_ref()
            .is_some_and(|sb| sb.uuid.eq_ignore_ascii_case(uuid)),
        BootFs::Label(label) => device
            .superblock
            .as_ref()
            .is_some_and(|sb| sb.label == *label),
        BootFs::Path(p) => *p == device.path,
        BootFs::PartUuid(uuid) => part.is_some_and(|p| p.partuuid == *uuid),
        BootFs::PartLabel(label) => part.is_some_and(|p| p.partlabel.as_ref() == Some(label)),
    }
}

/// One search: what was seen so far, by path, in the order first seen.
struct Search<'a> {
    wanted: &'a BootFs,
    /// Partition tables are read only when the search needs them (PARTUUID=, PARTLABEL=) or to
    /// describe what was seen when it fails: not for every device of every event.
    wants_partition: bool,
    inspector: Inspector,
    seen: Vec<BlockDevice>,
}

impl Search<'_> {
    /// Reads `path` and records it; returns it when it is the one wanted.
    fn consider(&mut self, path: PathBuf, shape: Shape) -> Option<BlockDevice> {
        let device = self.inspector.inspect(path, shape, self.wants_partition);
        self.record(device)
    }

    fn record(&mut self, device: BlockDevice) -> Option<BlockDevice> {
        if matches(self.wanted, &device) {
            return Some(device);
        }
        match self.seen.iter_mut().find(|s| s.path == device.path) {
            Some(known) => *known = device,
            None => self.seen.push(device),
        }
        None
    }

    /// Every device sysfs lists now, `hint` first.
    fn scan(&mut self, hint: Option<&Path>) -> Option<BlockDevice> {
        let names = device_names();
        let partitions: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| crate::inspect::is_partition(name))
            .collect();
        let shape = |path: &Path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if partitions.contains(&name) {
                Shape::Partition
            } else if partitions.iter().any(|p| disk_of(p) == Some(name)) {
                Shape::PartitionedDisk
            } else {
                Shape::Unknown
            }
        };
        let candidates = hint
            .map(Path::to_path_buf)
            .into_iter()
            .chain(names.iter().map(|n| Path::new("/dev").join(n)));
        let mut done: Vec<PathBuf> = Vec::new();
        for path in candidates {
            if done.contains(&path) {
                continue;
            }
            done.push(path.clone());
            // A hint outside /dev's names in sysfs is looked at the careful way.
            let shape = if path.parent() == Some(Path::new("/dev")) {
                shape(&path)
            } else {
                Shape::Unknown
            };
            if let Some(found) = self.consider(path, shape) {
                return Some(found);
            }
        }
        None
    }

    fn late_answers(&mut self) -> Option<BlockDevice> {
        let answers = self.inspector.late_answers();
        answers.into_iter().find_map(|device| self.record(device))
    }

    fn fail(mut self, timeout: Duration) -> Fatal {
        if !self.wants_partition {
            // Only the table entries are missing from what was seen; devices that could not be
            // read are not asked again.
            for device in self.seen.iter_mut().filter(|d| d.unreadable.is_none()) {
                device.partition = crate::inspect::partition_of(&device.path);
            }
        }
        Fatal::new(
            format!("finding bootfs {}", self.wanted),
            format!(
                "no block device matched within {} s; {}",
                timeout.as_secs(),
                describe(&self.seen)
            ),
        )
    }
}

/// Waits until a device matching `wanted` appears (trying `hint` first), for at most
/// `timeout`. Runs after the first coldplug round of drivers: a device that is there is found
/// by the first scan. Otherwise the uevent socket opens, `hotplug` gets a second coldplug round
/// and the devices are scanned again; then every `add` uevent that carries a modalias goes to
/// `hotplug` (to load its driver), so a late disk's controller gets its module and the disk
/// follows.
pub fn find(
    wanted: &BootFs,
    hint: Option<&Path>,
    timeout: Duration,
    hotplug: &mut dyn Hotplug,
) -> Result<Found, Fatal> {
    let deadline = Instant::now() + timeout;
    let mut search = Search {
        wanted,
        wants_partition: matches!(wanted, BootFs::PartUuid(_) | BootFs::PartLabel(_)),
        inspector: Inspector::default(),
        seen: Vec::new(),
    };
    let found = |device, via| Ok(Found { device, via });
    if let Some(device) = search.scan(hint) {
        return found(device, Via::Coldplug);
    }
    // Not there yet: from here on the kernel's uevents say what appears. What came between the
    // first coldplug and the socket is looked at once more.
    let events = match UeventSocket::open() {
        Ok(socket) => Some(socket),
        Err(e) => {
            hotplug.warn(&format!(
                "no uevent socket ({}): rescanning /sys/class/block instead",
                crate::modules::errno_text(e)
            ));
            None
        }
    };
    hotplug.coldplug();
    if let Some(device) = search.scan(hint) {
        return found(device, Via::Coldplug);
    }
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(search.fail(timeout));
        }
        let mut wait = deadline - now;
        if search.inspector.has_pending() {
            wait = wait.min(PENDING_INTERVAL);
        }
        let received = match &events {
            Some(socket) => socket.wait(wait).map_err(|e| {
                Fatal::new("waiting for block devices", format!("reading uevents: {e}"))
            })?,
            None => {
                std::thread::sleep(wait.min(RESCAN_INTERVAL));
                Default::default()
            }
        };
        if (received.overflowed || events.is_none())
            && let Some(device) = search.scan(hint)
        {
            return found(device, Via::Rescan);
        }
        for event in &received.events {
            if let (Some(modalias), "add") = (&event.modalias, event.action.as_str()) {
                hotplug.add(modalias);
            }
        }
        for event in received.events.iter().filter(|e| e.is_block_device_news()) {
            let Some(name) = &event.devname else {
                continue;
            };
            if let Some(device) = search.consider(Path::new("/dev").join(name), Shape::Unknown) {
                return found(device, Via::Uevent);
            }
        }
        if let Some(device) = search.late_answers() {
            return found(device, Via::Rescan);
        }
    }
}

/// What was seen, by device path (the order the devices came in depends on timing).
fn describe(seen: &[BlockDevice]) -> String {
    if seen.is_empty() {
        return "no block devices seen (is the storage driver in the mini initramfs?)".to_owned();
    }
    let mut seen: Vec<&BlockDevice> = seen.iter().collect();
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    let listed: Vec<String> = seen.iter().map(|d| d.to_string()).collect();
    format!("seen: {}", listed.join("; "))
}

/// The name of every entry of /sys/class/block, sorted so scans are repeatable.
pub fn device_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(SYS_CLASS_BLOCK) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The disk a partition named `partition` belongs to, by the kernel's naming rule
/// (`disk_name()` in block/partitions/core.c): the disk's name and the number, with a `p`
/// between them when the disk's name ends in a digit (`vda1`, `nvme0n1p1`, `mmcblk0p2`).
fn disk_of(partition: &str) -> Option<&str> {
    let stem = partition.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == partition.len() || stem.is_empty() {
        return None;
    }
    match stem.strip_suffix('p') {
        Some(disk) if disk.ends_with(|c: char| c.is_ascii_digit()) => Some(disk),
        _ => Some(stem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PartitionId;
    use crate::probe::Superblock;

    fn device(path: &str, sb: Option<(&str, &str)>, part: Option<(&str, &str)>) -> BlockDevice {
        BlockDevice {
            path: path.into(),
            superblock: sb.map(|(uuid, label)| Superblock {
                fstype: "ext4",
                uuid: uuid.into(),
                label: label.into(),
            }),
            partition: part.map(|(uuid, label)| PartitionId {
                number: 1,
                partuuid: uuid.into(),
                partlabel: Some(label.into()),
            }),
            unreadable: None,
            partitioned: false,
        }
    }

    #[test]
    fn matching() {
        let boot = device("/dev/vda1", Some(("aa-bb", "boot")), Some(("cc-dd", "esp")));
        let check = |wanted: BootFs, expected: bool| {
            assert_eq!(matches(&wanted, &boot), expected, "{wanted}")
        };
        check(BootFs::Uuid("aa-bb".into()), true);
        check(BootFs::Uuid("aa-bc".into()), false);
        check(BootFs::Uuid("AA-BB".into()), true);
        check(BootFs::Label("boot".into()), true);
        check(BootFs::Label("Boot".into()), false);
        check(BootFs::Path("/dev/vda1".into()), true);
        check(BootFs::Path("/dev/vda2".into()), false);
        check(BootFs::PartUuid("cc-dd".into()), true);
        check(BootFs::PartUuid("aa-bb".into()), false);
        check(BootFs::PartLabel("esp".into()), true);
        check(BootFs::PartLabel("boot".into()), false);
        let bare = device("/dev/vdb", None, None);
        assert!(!matches(&BootFs::Uuid("aa-bb".into()), &bare));
        assert!(!matches(&BootFs::PartLabel("esp".into()), &bare));
    }

    #[test]
    fn partitions_name_their_disk() {
        let check = |partition: &str, disk: Option<&str>| {
            assert_eq!(disk_of(partition), disk, "{partition}")
        };
        check("vda1", Some("vda"));
        check("sda12", Some("sda"));
        check("nvme0n1p1", Some("nvme0n1"));
        check("mmcblk0p2", Some("mmcblk0"));
        check("loop0p1", Some("loop0"));
        check("md127p3", Some("md127"));
        // A `p` only separates after a digit: sdp1 is sdp's first partition.
        check("sdp1", Some("sdp"));
        check("vda", None);
        check("123", None);
    }

    #[test]
    fn timeout_lists_what_was_seen() {
        let text = describe(&[
            device("/dev/vda1", Some(("aa-bb", "boot")), Some(("cc-dd", "esp"))),
            device("/dev/vda", None, None),
        ]);
        assert_eq!(
            text,
            "seen: /dev/vda (no known filesystem); /dev/vda1 (ext4 UUID=aa-bb LABEL=boot PARTUUID=cc-dd PARTLABEL=esp)",
            "by path, whatever came first"
        );
        assert!(describe(&[]).contains("storage driver"));
    }
}
