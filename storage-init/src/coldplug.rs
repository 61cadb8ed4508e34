//! Coldplug: the devices that existed before storage-init could hear their uevents. Every device
//! in `/sys/bus/<bus>/devices` that has a modalias and no driver is offered to the on-demand
//! modules, for the buses their aliases name only (walking sysfs is slow under emulation: about
//! 55 ms for all of a q35 machine's buses under TCG, a few for the virtio preset's). One round is
//! enough when the boot device is then there; otherwise the search opens the uevent socket and
//! asks for a second round, for the devices a loaded driver created in the meantime (the virtio
//! devices behind a PCI virtio transport), and later ones announce themselves with uevents.

use std::path::{Path, PathBuf};

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

/// The bus of the devices firmware describes: on a SoC every block of the chip, on a PC a
/// dozen legacy devices; walked after the other controllers' buses.
const PLATFORM_BUS: &str = "platform";
/// Buses of the devices that sit behind a controller (a disk on a SCSI host, a stick on a USB
/// port, a card in an SD slot): walked last, once the controllers' drivers have made them.
const BEHIND_A_CONTROLLER: [&str; 4] = ["mmc", "scsi", "sdio", "usb"];

/// The order of the walk: controllers (PCI, virtio, …), then the platform bus, then the devices
/// behind them; by name within each.
fn walk_order(bus: &str) -> (u8, &str) {
    let rank = if bus == PLATFORM_BUS {
        1
    } else if BEHIND_A_CONTROLLER.contains(&bus) {
        2
    } else {
        0
    };
    (rank, bus)
}

/// Offers the devices without a driver to `drivers`, bus by bus in [`walk_order`], and stops
/// after a bus that brought a driver once `enough` says so (the search has something to look
/// at). `None` when
/// no shipped module has device aliases: there is nothing to coldplug.
pub fn coldplug(
    drivers: &mut Drivers<'_>,
    log: &mut Log,
    enough: &mut dyn FnMut() -> bool,
) -> Option<Coldplugged> {
    let mut done = Coldplugged::default();
    let buses: Vec<PathBuf> = match drivers.buses()? {
        Some(mut buses) => {
            buses.sort_by_key(|bus| walk_order(bus));
            buses
                .iter()
                .map(|bus| Path::new(SYS_BUS).join(bus))
                .collect()
        }
        None => match std::fs::read_dir(SYS_BUS) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        },
    };
    for bus in buses {
        let unbound = unbound_modaliases(&bus);
        done.unbound += unbound.len();
        let before = done.loaded.len();
        for modalias in &unbound {
            let loaded = drivers.load_for_device(modalias, log);
            done.loaded.extend(loaded.into_iter().map(str::to_owned));
        }
        if done.loaded.len() > before && enough() {
            break;
        }
    }
    Some(done)
}

/// The modaliases of the devices of one bus (`<bus>/devices/<device>/modalias`) that no driver
/// is bound to, sorted and each once.
pub fn unbound_modaliases(bus: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(devices) = std::fs::read_dir(bus.join("devices")) else {
        return found;
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
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_first_then_platform_then_what_sits_behind_them() {
        let mut buses = vec!["usb", "scsi", "platform", "virtio", "pci", "mmc", "amba"];
        buses.sort_by_key(|bus| walk_order(bus));
        assert_eq!(
            buses,
            ["amba", "pci", "virtio", "platform", "mmc", "scsi", "usb"]
        );
    }

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
            unbound_modaliases(&root.join("pci")),
            ["pci:v00001B36d00000010"]
        );
        assert_eq!(
            unbound_modaliases(&root.join("virtio")),
            ["virtio:d00000002v00001AF4"],
            "each once"
        );
        assert!(unbound_modaliases(&root.join("cpu")).is_empty());
        assert!(unbound_modaliases(&root.join("empty-bus")).is_empty());
        assert!(unbound_modaliases(&root.join("missing")).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The real /sys of the machine running the tests: every entry looks like a modalias.
    #[test]
    fn reads_the_real_sysfs() {
        for bus in std::fs::read_dir(SYS_BUS).unwrap().flatten() {
            for modalias in unbound_modaliases(&bus.path()) {
                assert!(modalias.contains(':'), "{modalias}");
            }
        }
    }
}
