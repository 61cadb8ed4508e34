//! Finding the boot filesystem among the machine's block devices, without udev: list
//! `/sys/class/block`, read the first bytes of each device node devtmpfs made, probe them.
//! Devices appear while drivers probe, so the search repeats until the timeout.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::BootFs;
use crate::error::Fatal;
use crate::probe::{PROBE_LEN, Superblock, probe};

const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// How long to sleep between scans: short against boot time, long enough not to spin a core.
const RESCAN_INTERVAL: Duration = Duration::from_millis(10);

/// The device holding the boot filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDevice {
    pub path: PathBuf,
    pub superblock: Superblock,
}

/// One block device seen during the search, for the error message.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    found: Option<Superblock>,
}

/// Whether `sb` (on device `path`) is the one `wanted` names.
pub fn matches(wanted: &BootFs, path: &Path, sb: &Superblock) -> bool {
    match wanted {
        BootFs::Uuid(uuid) => sb.uuid == *uuid,
        BootFs::Label(label) => sb.label == *label,
        BootFs::Path(p) => p == path,
        // Partition table lookups come with the GPT reader (issue 3); `find` refuses them first.
        BootFs::PartUuid(_) | BootFs::PartLabel(_) => false,
    }
}

/// Waits until a device matching `wanted` appears (trying `hint` first on every scan).
pub fn find(wanted: &BootFs, hint: Option<&Path>, timeout: Duration) -> Result<BootDevice, Fatal> {
    if matches!(wanted, BootFs::PartUuid(_) | BootFs::PartLabel(_)) {
        return Err(Fatal::new(
            format!("finding bootfs {wanted}"),
            "PARTUUID= and PARTLABEL= are not supported by this storage-init yet: use UUID=, LABEL= or a /dev path",
        ));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        let candidates = hint
            .map(Path::to_path_buf)
            .into_iter()
            .chain(device_nodes());
        for path in candidates {
            let found = read_head(&path).and_then(|head| probe(&head));
            if let Some(sb) = &found
                && matches(wanted, &path, sb)
            {
                return Ok(BootDevice {
                    path,
                    superblock: sb.clone(),
                });
            }
            let name = path.display().to_string();
            if !seen.iter().any(|s: &Seen| s.name == name) {
                seen.push(Seen { name, found });
            }
        }
        if Instant::now() >= deadline {
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

fn describe(seen: &[Seen]) -> String {
    if seen.is_empty() {
        return "no block devices seen (is the storage driver in the mini initramfs?)".to_owned();
    }
    let mut out = String::from("seen:");
    for s in seen {
        match &s.found {
            Some(sb) => write!(out, " {} ({sb});", s.name),
            None => write!(out, " {} (no known filesystem);", s.name),
        }
        .expect("writing to a String cannot fail");
    }
    out.pop();
    out
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

/// Reads the first bytes of a device; `None` when it cannot be opened or read (no medium, a
/// node not created yet, a dead device), which only means "not this one, not yet".
fn read_head(path: &Path) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    let mut head = vec![0u8; PROBE_LEN];
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

    fn sb(uuid: &str, label: &str) -> Superblock {
        Superblock {
            fstype: "ext4",
            uuid: uuid.into(),
            label: label.into(),
        }
    }

    #[test]
    fn matching() {
        let dev = Path::new("/dev/vda1");
        let check = |wanted: BootFs, expected: bool| {
            assert_eq!(
                matches(&wanted, dev, &sb("aa-bb", "boot")),
                expected,
                "{wanted}"
            )
        };
        check(BootFs::Uuid("aa-bb".into()), true);
        check(BootFs::Uuid("aa-bc".into()), false);
        check(BootFs::Label("boot".into()), true);
        check(BootFs::Label("Boot".into()), false);
        check(BootFs::Path("/dev/vda1".into()), true);
        check(BootFs::Path("/dev/vda2".into()), false);
    }

    #[test]
    fn timeout_lists_what_was_seen() {
        let text = describe(&[
            Seen {
                name: "/dev/vda".into(),
                found: None,
            },
            Seen {
                name: "/dev/vda1".into(),
                found: Some(sb("aa-bb", "boot")),
            },
        ]);
        assert_eq!(
            text,
            "seen: /dev/vda (no known filesystem); /dev/vda1 (ext4 UUID=aa-bb LABEL=boot)"
        );
    }

    #[test]
    fn partition_table_names_are_refused_clearly() {
        let err = find(&BootFs::PartLabel("boot".into()), None, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
