//! Reading what one block device holds (its filesystem superblock and, when asked, its
//! partition table entry) with bounded reads: an empty drive is skipped without being opened,
//! and a device that does not answer a read within [`READ_DEADLINE`] is set aside so the search
//! goes on; its answer is still taken if it comes later.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::io::Errno;

use crate::partition::{self, PartitionId};
use crate::probe::{
    BTRFS_PROBE_LEN, BTRFS_SUPERBLOCK_OFFSET, PROBE_LEN, Superblock, probe, probe_btrfs,
};

pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// How long a device may take to answer the probe's reads. A healthy disk answers in
/// microseconds, a slow USB stick in tens of milliseconds; a dead one may hold a read for the
/// SCSI layer's 30 s timeout and retries, which the search must not wait for.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// The probe threads only read a few KiB.
const PROBE_THREAD_STACK: usize = 64 << 10;
/// When sysfs does not say: the sector size of nearly every disk.
const DEFAULT_BLOCK_SIZE: u64 = 512;
/// The usual 128 entries of 128 bytes are 16 KiB; more than 1 MiB is not a table we trust.
const MAX_GPT_ENTRIES_BYTES: usize = 1 << 20;

/// What was learnt of one block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub path: PathBuf,
    /// `None` when the device holds no filesystem we probe (or could not be read).
    pub superblock: Option<Superblock>,
    /// Read only when asked for: PARTUUID=/PARTLABEL= searches, and the listing of a failure.
    pub partition: Option<PartitionId>,
    /// Why nothing could be read, when nothing could.
    pub unreadable: Option<Unreadable>,
    /// A whole disk whose partitions the kernel found: not read, its partitions are the
    /// candidates (a filesystem spanning a partitioned disk is not a layout anyone boots from).
    pub partitioned: bool,
}

/// Why a device's first bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Size 0 in sysfs (an empty card reader: not opened), or ENOMEDIUM from open (an empty
    /// optical drive, whose sysfs size is a placeholder). Inserting a medium sends a uevent.
    NoMedium,
    /// A read still pending after [`READ_DEADLINE`].
    NoAnswer,
    /// open(2) or read(2) failed.
    Error(String),
}

impl BlockDevice {
    fn unreadable(path: PathBuf, why: Unreadable) -> BlockDevice {
        BlockDevice {
            path,
            superblock: None,
            partition: None,
            unreadable: Some(why),
            partitioned: false,
        }
    }
}

impl fmt::Display for BlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        let mut details = Vec::new();
        match &self.unreadable {
            Some(Unreadable::NoMedium) => details.push("no medium".to_owned()),
            Some(Unreadable::NoAnswer) => details.push(format!(
                "no answer to a read within {} s",
                READ_DEADLINE.as_secs()
            )),
            Some(Unreadable::Error(why)) => details.push(format!("unreadable: {why}")),
            None => {}
        }
        if self.partitioned {
            details.push("partitioned".to_owned());
        }
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

/// What the listing of /sys/class/block already says about a device, so its own sysfs
/// directory need not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A partition: it has a medium (its disk's partition table was read) and no partitions.
    Partition,
    /// A whole disk whose partitions the kernel found: not read, its partitions are the
    /// candidates.
    PartitionedDisk,
    /// Not known: sysfs is asked (size 0, partitions).
    Unknown,
}

/// Whether sysfs lists `/dev/<name>` as a partition (it has a `partition` attribute).
pub fn is_partition(name: &str) -> bool {
    Path::new(SYS_CLASS_BLOCK)
        .join(name)
        .join("partition")
        .exists()
}

/// Runs the reads of each device in a thread of its own and waits for it at most
/// [`READ_DEADLINE`]; remembers the devices that did not answer in time.
#[derive(Debug, Default)]
pub struct Inspector {
    pending: Vec<(PathBuf, Arc<Answer>)>,
}

/// Where a probe thread leaves its result. (A Mutex and a Condvar: std's channels would cost
/// the static binary tens of KiB for one message.)
#[derive(Debug, Default)]
struct Answer {
    device: Mutex<Option<BlockDevice>>,
    ready: Condvar,
}

impl Answer {
    fn give(&self, device: BlockDevice) {
        if let Ok(mut slot) = self.device.lock() {
            *slot = Some(device);
            self.ready.notify_all();
        }
    }

    /// The result, waiting for it at most `deadline`.
    fn wait(&self, deadline: Duration) -> Option<BlockDevice> {
        let slot = self.device.lock().ok()?;
        let (mut slot, _) = self
            .ready
            .wait_timeout_while(slot, deadline, |d| d.is_none())
            .ok()?;
        slot.take()
    }

    fn take(&self) -> Option<BlockDevice> {
        self.device.lock().ok()?.take()
    }
}

impl Inspector {
    pub fn inspect(&mut self, path: PathBuf, shape: Shape, with_partition: bool) -> BlockDevice {
        if self.pending.iter().any(|(p, _)| *p == path) {
            return BlockDevice::unreadable(path, Unreadable::NoAnswer);
        }
        if shape == Shape::Unknown && has_no_medium(&path) {
            return BlockDevice::unreadable(path, Unreadable::NoMedium);
        }
        if shape == Shape::PartitionedDisk || (shape == Shape::Unknown && has_partitions(&path)) {
            // Each read costs milliseconds under emulation; this one could find nothing.
            return BlockDevice {
                path,
                superblock: None,
                partition: None,
                unreadable: None,
                partitioned: true,
            };
        }
        let answer = Arc::new(Answer::default());
        let (thread_path, thread_answer) = (path.clone(), Arc::clone(&answer));
        let spawned = std::thread::Builder::new()
            .stack_size(PROBE_THREAD_STACK)
            .spawn(move || thread_answer.give(read_device(thread_path, with_partition)));
        if spawned.is_err() {
            // Out of threads (memory): read in this one, unbounded, rather than not at all.
            return read_device(path, with_partition);
        }
        match answer.wait(READ_DEADLINE) {
            Some(device) => device,
            None => {
                self.pending.push((path.clone(), answer));
                BlockDevice::unreadable(path, Unreadable::NoAnswer)
            }
        }
    }

    /// Whether some device has not answered yet: the caller should come back for it.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The devices that answered since they were set aside.
    pub fn late_answers(&mut self) -> Vec<BlockDevice> {
        let mut answers = Vec::new();
        self.pending.retain(|(_, answer)| match answer.take() {
            Some(device) => {
                answers.push(device);
                false
            }
            None => true,
        });
        answers
    }
}

/// A removable drive without a medium has size 0: opening it may spin up hardware or wait for
/// the drive to report, for nothing.
fn has_no_medium(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    std::fs::read_to_string(Path::new(SYS_CLASS_BLOCK).join(name).join("size"))
        .is_ok_and(|size| size.trim() == "0")
}

/// Whether sysfs lists partitions of this device (`<name>/<name…>/partition`).
fn has_partitions(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(Path::new(SYS_CLASS_BLOCK).join(name)) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name().to_str().is_some_and(|n| n.starts_with(name))
            && e.path().join("partition").exists()
    })
}

/// The reads themselves: the probes of the first 2 KiB, then btrfs at 64 KiB; the partition
/// table entry when asked.
fn read_device(path: PathBuf, with_partition: bool) -> BlockDevice {
    let head = File::open(&path).and_then(|mut file| {
        // Only the probed bytes: a block device's default readahead (128 KiB) would read
        // 64 times more, which costs tens of milliseconds under emulation.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Random);
        let head = read_at(&mut file, 0, PROBE_LEN)?;
        Ok((file, head))
    });
    let (mut file, head) = match head {
        Ok(read) => read,
        // An empty optical drive: its open fails at once (the drive answers TEST UNIT READY).
        Err(e) if e.raw_os_error() == Some(Errno::NOMEDIUM.raw_os_error()) => {
            return BlockDevice::unreadable(path, Unreadable::NoMedium);
        }
        Err(e) => return BlockDevice::unreadable(path, Unreadable::Error(e.to_string())),
    };
    let superblock = probe(&head).or_else(|| {
        let block = read_at(&mut file, BTRFS_SUPERBLOCK_OFFSET, BTRFS_PROBE_LEN).ok()?;
        probe_btrfs(&block)
    });
    drop(file);
    let partition = if with_partition {
        partition_of(&path)
    } else {
        None
    };
    BlockDevice {
        path,
        superblock,
        partition,
        unreadable: None,
        partitioned: false,
    }
}

/// The table entry of partition `/dev/<name>`, from sysfs: `<name>/partition` holds its number
/// and the sysfs directory's parent is its disk.
pub fn partition_of(path: &Path) -> Option<PartitionId> {
    let name = path.file_name()?.to_str()?;
    let sys = Path::new(SYS_CLASS_BLOCK).join(name);
    let number: u32 = std::fs::read_to_string(sys.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let disk = std::fs::canonicalize(&sys).ok()?;
    let disk = disk.parent()?.file_name()?.to_str()?;
    read_partition_table(disk)
        .into_iter()
        .find(|p| p.number == number)
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
    let Ok(mut dev) = File::open(Path::new("/dev").join(disk)) else {
        return Vec::new();
    };
    let Ok(head) = read_at(&mut dev, 0, 2 * block_size as usize) else {
        return Vec::new();
    };
    let header = head.get(block_size as usize..).unwrap_or(&[]);
    match partition::gpt_entries_location(header, block_size) {
        Some((offset, len)) if len <= MAX_GPT_ENTRIES_BYTES => read_at(&mut dev, offset, len)
            .map(|entries| partition::parse_gpt_entries(&entries, header))
            .unwrap_or_default(),
        Some(_) => Vec::new(),
        None => partition::parse_mbr(&head),
    }
}

/// Reads up to `len` bytes at `offset`; fewer at the end of the device.
fn read_at(file: &mut File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut head = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_devices_say_why() {
        let show = |why| BlockDevice::unreadable("/dev/sr0".into(), why).to_string();
        assert_eq!(show(Unreadable::NoMedium), "/dev/sr0 (no medium)");
        assert_eq!(
            show(Unreadable::NoAnswer),
            "/dev/sr0 (no answer to a read within 2 s)"
        );
        assert_eq!(
            show(Unreadable::Error("EIO".into())),
            "/dev/sr0 (unreadable: EIO)"
        );
    }

    /// A FIFO without a writer blocks open(2) as a dead device blocks read(2): the inspector
    /// must give up after the deadline, then take the answer once a writer comes.
    #[test]
    fn a_device_that_does_not_answer_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("inspect-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("dead");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();

        let mut inspector = Inspector::default();
        let started = std::time::Instant::now();
        let device = inspector.inspect(fifo.clone(), Shape::Unknown, false);
        assert_eq!(device.unreadable, Some(Unreadable::NoAnswer));
        assert!(started.elapsed() >= READ_DEADLINE);
        assert!(inspector.has_pending());
        // Asked again while pending: no second thread, no second wait.
        let again = std::time::Instant::now();
        assert_eq!(
            inspector
                .inspect(fifo.clone(), Shape::Unknown, false)
                .unreadable,
            Some(Unreadable::NoAnswer)
        );
        assert!(again.elapsed() < READ_DEADLINE);

        // The "device" answers: a writer opens the FIFO and closes it (end of file).
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
        let answered = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            inspector.late_answers().pop()
        });
        let answered = answered.expect("the late answer was taken");
        assert_eq!((answered.path, answered.unreadable), (fifo, None));
        assert!(!inspector.has_pending());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_node_is_unreadable_not_fatal() {
        let mut inspector = Inspector::default();
        let device = inspector.inspect("/dev/no-such-disk".into(), Shape::Unknown, true);
        assert!(
            matches!(&device.unreadable, Some(Unreadable::Error(e)) if e.contains("No such file")),
            "{device}"
        );
    }
}
