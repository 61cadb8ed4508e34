//! Coldplug: the devices that existed before storage-init could hear their uevents. Every device
//! in `/sys/bus/*/devices` that has a modalias and no driver is offered to the on-demand
//! modules; a module that binds may create devices of its own (a PCI virtio transport creates
//! the virtio devices behind it), so the walk repeats until a round loads nothing.

use std::path::Path;

use crate::log::Log;
use crate::modules::Drivers;

const SYS_BUS: &str = "/sys/bus";
/// Each round follows one layer of buses (PCI, then virtio, then SCSI...): a handful at most.
const MAX_ROUNDS: usize = 8;

/// What coldplug did, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coldplugged {
    /// Devices seen without a driver (in the last round).
    pub unbound: usize,
    /// Modules loaded, in order.
    pub loaded: Vec<String>,
}

pub fn coldplug(drivers: &mut Drivers<'_>, log: &mut Log) -> Coldplugged {
    let mut done = Coldplugged::default();
    if !drivers.has_aliases() {
        return done;
    }
    for _ in 0..MAX_ROUNDS {
        let unbound = unbound_modaliases(Path::new(SYS_BUS));
        done.unbound = unbound.len();
        let before = done.loaded.len();
        for modalias in &unbound {
            let loaded = drivers.load_for_device(modalias, log);
            done.loaded.extend(loaded.into_iter().map(str::to_owned));
        }
        if done.loaded.len() == before {
            break;
        }
    }
    done
}

/// The modaliases of the devices under `sys_bus` (`<bus>/devices/<device>/modalias`) that no
/// driver is bound to, sorted and each once.
pub fn unbound_modaliases(sys_bus: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(buses) = std::fs::read_dir(sys_bus) else {
        return found;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for device in devices.flatten() {
            let device = device.path();
            if device.join("driver").exists() {
                continue;
            }
            if let Ok(modalias) = std::fs::read_to_string(device.join("modalias")) {
                let modalias = modalias.trim();
                if !modalias.is_empty() {
                    found.push(modalias.to_owned());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs-shaped tree: bound devices and devices without a modalias are left out.
    #[test]
    fn lists_unbound_devices_with_a_modalias() {
        let root = std::env::temp_dir().join(format!("coldplug-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let device = |bus: &str, name: &str, modalias: Option<&str>, bound: bool| {
            let dir = root.join(bus).join("devices").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(m) = modalias {
                std::fs::write(dir.join("modalias"), format!("{m}\n")).unwrap();
            }
            if bound {
                std::fs::create_dir(dir.join("driver")).unwrap();
            }
        };
        device("pci", "0000:00:03.0", Some("pci:v00001AF4d00001042"), true);
        device("pci", "0000:00:04.0", Some("pci:v00001B36d00000010"), false);
        device(
            "virtio",
            "virtio0",
            Some("virtio:d00000002v00001AF4"),
            false,
        );
        device(
            "virtio",
            "virtio1",
            Some("virtio:d00000002v00001AF4"),
            false,
        );
        device("cpu", "cpu0", None, false);
        std::fs::create_dir_all(root.join("empty-bus")).unwrap();
        assert_eq!(
            unbound_modaliases(&root),
            ["pci:v00001B36d00000010", "virtio:d00000002v00001AF4"]
        );
        assert!(unbound_modaliases(&root.join("missing")).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The real /sys of the machine running the tests: every entry looks like a modalias.
    #[test]
    fn reads_the_real_sysfs() {
        for modalias in unbound_modaliases(Path::new(SYS_BUS)) {
            assert!(modalias.contains(':'), "{modalias}");
        }
    }
}
