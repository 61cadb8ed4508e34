//! Coldplug: the devices that existed before storage-init could hear their uevents. Every device
//! in `/sys/bus/<bus>/devices` that has a modalias and no driver is offered to the on-demand
//! modules, for the buses their aliases name only (walking sysfs is slow under emulation: about
//! 90 ms for all of a q35 machine's buses under TCG). One round is enough: the devices a loaded
//! driver creates (the virtio devices behind a PCI virtio transport) announce themselves with
//! uevents, which the search hands to the same drivers.

use std::path::Path;

use crate::log::Log;
use crate::modules::Drivers;

const SYS_BUS: &str = "/sys/bus";

/// What coldplug did, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coldplugged {
    /// Devices seen without a driver.
    pub unbound: usize,
    /// Modules loaded, in order.
    pub loaded: Vec<String>,
}

/// `None` when no shipped module has device aliases: there is nothing to coldplug.
pub fn coldplug(drivers: &mut Drivers<'_>, log: &mut Log) -> Option<Coldplugged> {
    let mut done = Coldplugged::default();
    let buses = drivers.buses()?;
    let unbound = unbound_modaliases(Path::new(SYS_BUS), buses.as_deref());
    done.unbound = unbound.len();
    for modalias in &unbound {
        let loaded = drivers.load_for_device(modalias, log);
        done.loaded.extend(loaded.into_iter().map(str::to_owned));
    }
    Some(done)
}

/// The modaliases of the devices under `sys_bus` (`<bus>/devices/<device>/modalias`) that no
/// driver is bound to, sorted and each once; only those `buses` when given.
pub fn unbound_modaliases(sys_bus: &Path, buses: Option<&[&str]>) -> Vec<String> {
    let mut found = Vec::new();
    let bus_dirs: Vec<std::path::PathBuf> = match buses {
        Some(buses) => buses.iter().map(|b| sys_bus.join(b)).collect(),
        None => match std::fs::read_dir(sys_bus) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => return found,
        },
    };
    for bus in bus_dirs {
        let Ok(devices) = std::fs::read_dir(bus.join("devices")) else {
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
            unbound_modaliases(&root, None),
            ["pci:v00001B36d00000010", "virtio:d00000002v00001AF4"]
        );
        assert_eq!(
            unbound_modaliases(&root, Some(&["virtio", "usb"])),
            ["virtio:d00000002v00001AF4"],
            "only the buses asked for; a missing one is no error"
        );
        assert!(unbound_modaliases(&root.join("missing"), None).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The real /sys of the machine running the tests: every entry looks like a modalias.
    #[test]
    fn reads_the_real_sysfs() {
        for modalias in unbound_modaliases(Path::new(SYS_BUS), None) {
            assert!(modalias.contains(':'), "{modalias}");
        }
    }
}
