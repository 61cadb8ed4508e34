//! Finding the boot filesystem among the machine's block devices, without udev: list
//! `/sys/class/block`, read the first bytes of each device node devtmpfs made, probe them.
//! Devices appear while drivers probe, so the search repeats until the timeout.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::BootFs;
use crate::error::Fatal;
use crate::partition::{self, PartitionId};
use crate::probe::{
    BTRFS_PROBE_LEN, BTRFS_SUPERBLOCK_OFFSET, PROBE_LEN, Superblock, probe, probe_btrfs,
};

const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// How long to sleep between scans: short against boot time, long enough not to spin a core.
const RESCAN_INTERVAL: Duration = Duration::from_millis(10);
/// When sysfs does not say: the sector size of nearly every disk.
const DEFAULT_BLOCK_SIZE: u64 = 512;
/// The usual 128 entries of 128 bytes are 16 KiB; more than 1 MiB is not a table we trust.
const MAX_GPT_ENTRIES_BYTES: usize = 1 << 20;

/// The device holding the boot filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDevice {
    pub path: PathBuf,
    /// `None` when a partition matched by PARTUUID/PARTLABEL holds no filesystem we probe;
    /// `bootfstype` then says how to mount it.
    pub superblock: Option<Superblock>,
    pub partition: Option<PartitionId>,
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        let mut details = Vec::new();
        if let Some(sb) = &self.superblock {
            details.push(sb.to_string());
        }
        if let Some(part) = &self.partition {
            details.push(format!("PARTUUID={}", part.partuuid));
            if let Some(label) = &part.partlabel {
                details.push(format!("PARTLABEL={label}"));
            }
        }
        if details.is_empty() {
            details.push("no known filesystem".to_owned());
        }
        write!(f, " ({})", details.join(" "))
    }
}

/// Whether `device` is the one `wanted` names.
pub fn matches(wanted: &BootFs, device: &BootDevice) -> bool {
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

/// Waits until a device matching `wanted` appears (trying `hint` first on every scan).
pub fn find(wanted: &BootFs, hint: Option<&Path>, timeout: Duration) -> Result<BootDevice, Fatal> {
    let deadline = Instant::now() + timeout;
    let wants_partition = matches!(wanted, BootFs::PartUuid(_) | BootFs::PartLabel(_));
    loop {
        let mut seen: Vec<BootDevice> = Vec::new();
        let mut tables = PartitionTables::default();
        let candidates = hint
            .map(Path::to_path_buf)
            .into_iter()
            .chain(device_nodes());
        for path in candidates {
            if seen.iter().any(|s| s.path == path) {
                continue;
            }
            // Partition tables are read only when the search needs them (PARTUUID=,
            // PARTLABEL=) or to describe what was seen when it fails: not on every scan.
            let partition = if wants_partition {
                tables.partition_of(&path)
            } else {
                None
            };
            let device = BootDevice {
                superblock: probe_device(&path),
                partition,
                path,
            };
            if matches(wanted, &device) {
                return Ok(device);
            }
            seen.push(device);
        }
        if Instant::now() >= deadline {
            if !wants_partition {
                for device in &mut seen {
                    device.partition = tables.partition_of(&device.path);
                }
            }
            return Err(Fatal::new(
                format!("finding bootfs {wanted}"),
                format!(
                    "no block device matched within {} s; {}",
                    timeout.as_secs(),
                    describe(&seen)
                ),
            ));
        }
        std::thread::sleep(RESCAN_INTERVAL);
    }
}

fn describe(seen: &[BootDevice]) -> String {
    if seen.is_empty() {
        return "no block devices seen (is the storage driver in the mini initramfs?)".to_owned();
    }
    let listed: Vec<String> = seen.iter().map(BootDevice::to_string).collect();
    format!("seen: {}", listed.join("; "))
}

/// The filesystem on a device: the probes of the first 2 KiB, then btrfs at 64 KiB.
fn probe_device(path: &Path) -> Option<Superblock> {
    let head = read_head(path, 0, PROBE_LEN)?;
    probe(&head).or_else(|| {
        let block = read_head(path, BTRFS_SUPERBLOCK_OFFSET, BTRFS_PROBE_LEN)?;
        probe_btrfs(&block)
    })
}

/// `/dev/<name>` for every entry of /sys/class/block, sorted so scans are repeatable.
fn device_nodes() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(SYS_CLASS_BLOCK) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| Path::new("/dev").join(n))
        .collect()
}

/// The partition tables of the disks seen in one scan, read once per disk.
#[derive(Debug, Default)]
struct PartitionTables {
    by_disk: Vec<(String, Vec<PartitionId>)>,
}

impl PartitionTables {
    /// The table entry of partition `/dev/<name>`, from sysfs: `<name>/partition` holds its
    /// number and the sysfs directory's parent is its disk.
    fn partition_of(&mut self, path: &Path) -> Option<PartitionId> {
        let name = path.file_name()?.to_str()?;
        let sys = Path::new(SYS_CLASS_BLOCK).join(name);
        let number: u32 = std::fs::read_to_string(sys.join("partition"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let disk = std::fs::canonicalize(&sys)
            .ok()?
            .parent()?
            .file_name()?
            .to_str()?
            .to_owned();
        if !self.by_disk.iter().any(|(d, _)| *d == disk) {
            let table = read_partition_table(&disk);
            self.by_disk.push((disk.clone(), table));
        }
        let (_, table) = self.by_disk.iter().find(|(d, _)| *d == disk)?;
        table.iter().find(|p| p.number == number).cloned()
    }
}

/// Reads the GPT of `/dev/<disk>`, else its MBR; empty when it has neither or cannot be read.
fn read_partition_table(disk: &str) -> Vec<PartitionId> {
    let block_size: u64 = std::fs::read_to_string(
        Path::new(SYS_CLASS_BLOCK)
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(DEFAULT_BLOCK_SIZE);
    let dev = Path::new("/dev").join(disk);
    let Some(head) = read_head(&dev, 0, 2 * block_size as usize) else {
        return Vec::new();
    };
    let header = head.get(block_size as usize..).unwrap_or(&[]);
    match partition::gpt_entries_location(header, block_size) {
        Some((offset, len)) if len <= MAX_GPT_ENTRIES_BYTES => read_head(&dev, offset, len)
            .map(|entries| partition::parse_gpt_entries(&entries, header))
            .unwrap_or_default(),
        Some(_) => Vec::new(),
        None => partition::parse_mbr(&head),
    }
}

/// Reads up to `len` bytes at `offset` of a device; `None` when it cannot be opened or read (no
/// medium, a node not created yet, a dead device), which only means "not this one, not yet".
fn read_head(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset)).ok()?;
    }
    let mut head = vec![0u8; len];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    head.truncate(filled);
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(path: &str, sb: Option<(&str, &str)>, part: Option<(&str, &str)>) -> BootDevice {
        BootDevice {
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
    fn timeout_lists_what_was_seen() {
        let text = describe(&[
            device("/dev/vda", None, None),
            device("/dev/vda1", Some(("aa-bb", "boot")), Some(("cc-dd", "esp"))),
        ]);
        assert_eq!(
            text,
            "seen: /dev/vda (no known filesystem); /dev/vda1 (ext4 UUID=aa-bb LABEL=boot PARTUUID=cc-dd PARTLABEL=esp)"
        );
        assert!(describe(&[]).contains("storage driver"));
    }
}
