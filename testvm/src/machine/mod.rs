//! Typed QEMU machines that render their command line; building one has no side effects.

mod board;
mod error;
pub mod fdt;
pub mod shell;

use std::path::{Path, PathBuf};

pub use board::Board;
pub use error::MachineError;

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator: works everywhere, slow; `-cpu max` enables every feature it models.
    Tcg,
    /// Hardware virtualisation through /dev/kvm, with the host's CPU model.
    Kvm,
}

impl Accel {
    /// QEMU's name for it (`-accel kvm`), as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// `-accel` and `-cpu`: the host's CPU under KVM; under TCG a model distribution kernels
    /// accept on the board, or none where the board fixes its CPU.
    fn qemu_args(self, board: Board) -> Vec<&'static str> {
        match (self, board.tcg_cpu()) {
            (Accel::Tcg, Some(cpu)) => vec!["-accel", self.name(), "-cpu", cpu],
            (Accel::Tcg, None) => vec!["-accel", self.name()],
            (Accel::Kvm, _) => vec!["-accel", self.name(), "-cpu", "host"],
        }
    }
}

/// How a disk is attached to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskBus {
    /// A virtio-blk PCI device (`/dev/vdX` in the guest).
    VirtioBlk,
    /// A SCSI disk on a virtio-scsi PCI controller of its own (`/dev/sdX`).
    VirtioScsi,
    /// An NVMe controller whose namespace 1 is the disk (`/dev/nvme0n1`), with this logical
    /// (and physical) block size: 512, or 4096 for a 4Kn drive.
    Nvme { logical_block_size: u32 },
    /// A USB mass-storage device on an xHCI controller of its own (`/dev/sdX`).
    Usb,
    /// An SD card (`/dev/mmcblk0`): in the board's own slot where it has one (the raspi
    /// boards, one card), else in an SDHCI PCI controller of its own. QEMU takes only images
    /// whose size is a power of two, and an SD card has no serial property (its CID register
    /// carries QEMU's fixed one).
    Sd,
}

/// A raw disk image attached to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The raw image on the host.
    pub path: PathBuf,
    /// The controller it hangs off.
    pub bus: DiskBus,
    /// The serial number the guest sees (`/dev/disk/by-id/virtio-<serial>`); virtio-blk keeps
    /// at most 20 bytes (`VIRTIO_BLK_ID_BYTES` in linux/virtio_blk.h).
    pub serial: String,
    /// Attach read-only; the guest sees a write-protected device.
    pub read_only: bool,
    /// A cap on the disk's throughput, to model slow storage; None: as fast as the host.
    pub throttle: Option<Throttle>,
}

/// A QEMU throttle group over one disk: reads and writes share one budget of bytes per second,
/// as they share an SD card's or a USB stick's link, and optionally one of requests per second,
/// as a card's controller or a stick's bulk-only transport serves only so many commands. QEMU
/// lets a burst through, then holds the average (`bps-total`, `iops-total`, each with QEMU's
/// default burst of a tenth of a second's worth, `throttle_fix_bucket`). A request counts once
/// whatever its size, so long sequential reads meet the byte budget and scattered small ones
/// the request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub bytes_per_second: u64,
    pub requests_per_second: Option<u64>,
}

impl DiskBus {
    /// Whether the bus needs a PCI controller on `board` (all but the board's own SD slot).
    fn needs_pci(self, board: Board) -> bool {
        !(self == DiskBus::Sd && board.sd_slot_bus().is_some())
    }
}

impl Disk {
    /// The argv of this disk on `board`; `index` makes its QEMU node names unique.
    fn qemu_args(&self, index: usize, board: Board) -> Result<Vec<String>, MachineError> {
        if self.bus.needs_pci(board) && !board.has_pci() {
            return Err(MachineError::NoPciBus {
                board,
                bus: self.bus,
            });
        }
        let node = format!("disk{index}");
        let read_only = on_off(self.read_only);
        // A throttled disk: the device sits on a throttle filter over the raw node.
        let raw_node = match self.throttle {
            None => node.clone(),
            Some(_) => format!("{node}-raw"),
        };
        let blockdev = format!(
            "driver=raw,node-name={raw_node},read-only={read_only},\
             file.driver=file,file.filename={},file.read-only={read_only}",
            option_value(&self.path.to_string_lossy()),
        );
        let mut argv = Vec::new();
        if let Some(throttle) = self.throttle {
            argv.extend([
                "-object".to_owned(),
                format!(
                    "throttle-group,id={node}-throttle,x-bps-total={}{}",
                    throttle.bytes_per_second,
                    throttle
                        .requests_per_second
                        .map_or(String::new(), |iops| format!(",x-iops-total={iops}"))
                ),
            ]);
        }
        argv.extend(["-blockdev".to_owned(), blockdev]);
        if self.throttle.is_some() {
            argv.extend([
                "-blockdev".to_owned(),
                format!(
                    "driver=throttle,node-name={node},throttle-group={node}-throttle,file={raw_node}"
                ),
            ]);
        }
        let serial = option_value(&self.serial);
        // Each disk has a controller of its own, named after the disk's node.
        let devices = match self.bus {
            DiskBus::VirtioBlk => vec![format!("virtio-blk-pci,drive={node},serial={serial}")],
            DiskBus::VirtioScsi => vec![
                format!("virtio-scsi-pci,id={node}-scsi"),
                format!("scsi-hd,bus={node}-scsi.0,drive={node},serial={serial}"),
            ],
            DiskBus::Nvme { logical_block_size } => vec![format!(
                "nvme,drive={node},serial={serial},logical_block_size={logical_block_size},physical_block_size={logical_block_size}"
            )],
            DiskBus::Usb => vec![
                format!("qemu-xhci,id={node}-xhci"),
                format!("usb-storage,bus={node}-xhci.0,drive={node},serial={serial}"),
            ],
            DiskBus::Sd => match board.sd_slot_bus() {
                Some(slot) => vec![format!("sd-card,drive={node},bus={slot}")],
                None => vec![
                    format!("sdhci-pci,id={node}-sdhci"),
                    format!("sd-card,drive={node}"),
                ],
            },
        };
        for device in devices {
            argv.extend(["-device".to_owned(), device]);
        }
        Ok(argv)
    }
}

/// The id of hotplug root port `port`.
pub(crate) fn hotplug_port(port: u32) -> String {
    format!("hotplug{port}")
}

impl Disk {
    /// The QMP `blockdev-add` and `device_add` arguments that plug this disk into hotplug root
    /// port `port` of a running machine.
    /// None for a bus whose disk needs a controller of its own (SCSI, USB, SD).
    pub(crate) fn hotplug_arguments(
        &self,
        port: u32,
    ) -> Option<(serde_json::Value, serde_json::Value)> {
        let node = format!("hotplug-disk{port}");
        let blockdev = serde_json::json!({
            "driver": "raw",
            "node-name": node,
            "read-only": self.read_only,
            "file": { "driver": "file", "filename": self.path, "read-only": self.read_only },
        });
        let mut device = serde_json::json!({
            "id": format!("{node}-device"),
            "drive": node,
            "serial": self.serial,
            "bus": hotplug_port(port),
        });
        match self.bus {
            DiskBus::VirtioBlk => device["driver"] = "virtio-blk-pci".into(),
            DiskBus::Nvme { logical_block_size } => {
                device["driver"] = "nvme".into();
                device["logical_block_size"] = logical_block_size.into();
                device["physical_block_size"] = logical_block_size.into();
            }
            DiskBus::VirtioScsi | DiskBus::Usb | DiskBus::Sd => return None,
        }
        Some((blockdev, device))
    }
}

/// How the machine gets to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// QEMU loads the kernel and initramfs into guest memory itself (`-kernel`, `-initrd`,
    /// `-append`): the quickest way in, but the initramfs is read before the guest clock
    /// starts, so its cost never shows.
    Direct {
        /// The kernel image.
        kernel: PathBuf,
        /// The initramfs, if any.
        initrd: Option<PathBuf>,
        /// The kernel command line.
        cmdline: String,
    },
    /// UEFI firmware in the board's flash: it runs the bootloader from the boot disk's EFI
    /// System Partition, which loads the kernel and initramfs from the disk, as on hardware.
    Uefi {
        /// The firmware's code, mapped read-only (`OVMF_CODE_4M.fd`, `AAVMF_CODE.fd`).
        code: PathBuf,
        /// This VM's own writable copy of the variable store (boot entries land there).
        vars: PathBuf,
        /// Secure Boot: the firmware verifies what it starts against the keys enrolled in
        /// `vars` (code and store must be a Secure Boot build and an enrolled copy, e.g.
        /// `OVMF_CODE_4M.secboot.fd`). The machine gets System Management Mode and a flash
        /// only SMM code may write, as the firmware requires; only where
        /// [`Board::has_secure_boot`].
        secure_boot: bool,
    },
}

/// What a guest reboot does to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestReboot {
    /// QEMU exits (`-no-reboot`): a test boots once, and a panic with `panic=-1` or a
    /// triple fault ends the VM at once instead of booting again.
    #[default]
    ExitQemu,
    /// The machine resets and boots again through its firmware and bootloader, as hardware
    /// does (QEMU's default): for tests that reboot on purpose, such as an install that
    /// takes effect at the next boot. The test must then watch every boot's milestones, or a
    /// boot loop goes unnoticed until a timeout.
    Restart,
}

/// A whole virtual machine: board, CPU, memory, boot path and disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The emulated board.
    pub board: Board,
    /// How the CPU runs.
    pub accel: Accel,
    /// Guest RAM.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Direct kernel boot, or firmware and bootloader.
    pub boot: Boot,
    /// The device tree (`-dtb`) of a direct boot: required where [`Board::needs_dtb`],
    /// refused on q35 and with firmware (which hands the kernel its own).
    pub dtb: Option<PathBuf>,
    /// Disks, in the order the guest enumerates them.
    pub disks: Vec<Disk>,
    /// Empty PCIe root ports (`hotplug0`, `hotplug1`, …) that disks can be plugged into while
    /// the guest runs (see [`crate::run::Hotplug`]).
    pub hotplug_ports: u32,
    /// What a guest reboot does: exit QEMU (the default) or boot again.
    pub on_reboot: GuestReboot,
    /// CD-ROM drives without a disc on the board's SATA (AHCI) controller: the guest sees a
    /// block device of size 0, as on a machine with an empty optical drive.
    pub empty_cdroms: u32,
    /// Under TCG, the guest's clock from the instructions it executes instead of the host's
    /// (`-icount`); None: the host's clock.
    pub icount: Option<Icount>,
}

/// QEMU's instruction counting (`-icount shift=N`): every guest instruction advances the
/// guest's clock by 2^N ns, so CPU work takes the same guest time whatever else the host runs;
/// while the guest idles (waiting for a disk, a timer), its clock runs with the host's, as
/// without it. TCG only, one vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icount {
    /// Nanoseconds per instruction, as a power of two.
    pub shift: u8,
}

impl Icount {
    /// The largest shift QEMU takes (`MAX_ICOUNT_SHIFT` in its `system/cpu-timers.c`).
    pub const MAX_SHIFT: u8 = 10;
}

/// Where the serial console and the QMP monitor go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Unix sockets for a harness: QEMU waits for a client on `serial` before starting the
    /// guest, so no output is lost; it also copies the console to `console_log`. QMP listens
    /// on `qmp` without waiting.
    Sockets {
        /// Serial console socket.
        serial: PathBuf,
        /// QEMU's own copy of everything the console printed.
        console_log: PathBuf,
        /// QMP socket.
        qmp: PathBuf,
    },
    /// The console and the human monitor on the terminal (Ctrl-A X quits): the line a person
    /// pastes to rerun the same boot by hand.
    Interactive,
}

impl Machine {
    /// The whole command line; the first element is the QEMU binary. Paths that are not
    /// UTF-8 are rendered lossily. Fails on what the board cannot host, rather than render
    /// an argv QEMU would refuse or a guest that could never see its disk.
    pub fn qemu_args(&self, io: &Io) -> Result<Vec<String>, MachineError> {
        self.check()?;
        let mut argv: Vec<String> = vec![self.board.qemu_binary().into()];
        let machine = match &self.boot {
            // OVMF's Secure Boot build keeps its variables behind SMM: without it the guest
            // could rewrite the enrolled keys.
            Boot::Uefi {
                secure_boot: true, ..
            } => format!("{},smm=on", self.board.machine_type()),
            _ => self.board.machine_type().to_owned(),
        };
        argv.extend(["-machine".into(), machine]);
        argv.extend(
            self.accel
                .qemu_args(self.board)
                .into_iter()
                .map(String::from),
        );
        argv.extend([
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
        ]);
        // Nothing implicit: no default NIC, VGA, config file or window.
        argv.extend(["-nodefaults", "-no-user-config", "-display", "none"].map(String::from));
        // Unless the test reboots on purpose, a guest reboot or panic ends QEMU instead of
        // booting again.
        if self.on_reboot == GuestReboot::ExitQemu {
            argv.push("-no-reboot".into());
        }
        if let Some(icount) = self.icount {
            argv.extend(["-icount".into(), format!("shift={}", icount.shift)]);
        }
        match &self.boot {
            Boot::Direct {
                kernel,
                initrd,
                cmdline,
            } => {
                argv.extend(["-kernel".into(), path_arg(kernel)]);
                if let Some(initrd) = initrd {
                    argv.extend(["-initrd".into(), path_arg(initrd)]);
                }
                if let Some(dtb) = &self.dtb {
                    argv.extend(["-dtb".into(), path_arg(dtb)]);
                }
                let cmdline = format!("{} {cmdline}", self.board.required_cmdline());
                argv.extend(["-append".into(), cmdline.trim().to_owned()]);
            }
            Boot::Uefi {
                code,
                vars,
                secure_boot,
            } => {
                if *secure_boot {
                    // Only SMM code may write the flash (QEMU's pflash `secure` property).
                    argv.extend(
                        ["-global", "driver=cfi.pflash01,property=secure,value=on"]
                            .map(String::from),
                    );
                }
                // Both boards take the firmware as two flash devices: code, then variables.
                argv.extend([
                    "-drive".into(),
                    format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        option_value(&code.to_string_lossy())
                    ),
                    "-drive".into(),
                    format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        option_value(&vars.to_string_lossy())
                    ),
                ]);
            }
        }
        for (index, disk) in self.disks.iter().enumerate() {
            argv.extend(disk.qemu_args(index, self.board)?);
        }
        for drive in 0..self.empty_cdroms {
            // q35's built-in ICH9 AHCI controller has six ports, `ide.0` to `ide.5`.
            argv.extend([
                "-device".into(),
                format!("ide-cd,bus=ide.{drive},id=cdrom{drive}"),
            ]);
        }
        for port in 0..self.hotplug_ports {
            // q35 has no hotplug on its root bus; each root port is a slot of its own.
            argv.extend([
                "-device".into(),
                format!(
                    "pcie-root-port,id={},chassis={}",
                    hotplug_port(port),
                    port + 1
                ),
            ]);
        }
        argv.extend(io_args(io));
        Ok(argv)
    }

    /// What the board cannot host, found before anything is rendered.
    fn check(&self) -> Result<(), MachineError> {
        let board = self.board;
        if self.accel == Accel::Kvm && !board.kvm_capable() {
            return Err(MachineError::NoKvm { board });
        }
        if let Some(icount) = self.icount {
            if self.accel != Accel::Tcg {
                return Err(MachineError::IcountNeedsTcg);
            }
            if icount.shift > Icount::MAX_SHIFT {
                return Err(MachineError::IcountShift {
                    shift: icount.shift,
                });
            }
        }
        if let Some(required) = board.fixed_memory_mib()
            && self.memory_mib != required
        {
            return Err(MachineError::Memory {
                board,
                required,
                given: self.memory_mib,
            });
        }
        if let Some(required) = board.fixed_cpus()
            && self.cpus != required
        {
            return Err(MachineError::Cpus {
                board,
                required,
                given: self.cpus,
            });
        }
        match &self.boot {
            Boot::Direct { .. } => match (&self.dtb, board.needs_dtb(), board.takes_dtb()) {
                (None, true, _) => return Err(MachineError::DtbMissing { board }),
                (Some(_), _, false) => return Err(MachineError::DtbUnsupported { board }),
                _ => {}
            },
            Boot::Uefi { .. } if !board.has_uefi() => {
                return Err(MachineError::NoUefi { board });
            }
            Boot::Uefi { .. } if self.dtb.is_some() => {
                return Err(MachineError::DtbWithFirmware { board });
            }
            Boot::Uefi {
                secure_boot: true, ..
            } if !board.has_secure_boot() => {
                return Err(MachineError::NoSecureBoot { board });
            }
            Boot::Uefi { .. } => {}
        }
        if self.hotplug_ports > 0 && !board.has_pci() {
            return Err(MachineError::NoHotplug { board });
        }
        if self.empty_cdroms > 0 && board != Board::Q35 {
            return Err(MachineError::NoCdrom { board });
        }
        let sd_cards = self.disks.iter().filter(|d| d.bus == DiskBus::Sd).count();
        if board.sd_slot_bus().is_some() && sd_cards > 1 {
            return Err(MachineError::SdSlot {
                board,
                cards: sd_cards,
            });
        }
        Ok(())
    }
}

fn io_args(io: &Io) -> Vec<String> {
    match io {
        Io::Sockets {
            serial,
            console_log,
            qmp,
        } => vec![
            // QMP first: QEMU creates chardevs in order and blocks on the serial one until a
            // client connects, so the QMP socket already exists by then.
            "-chardev".into(),
            format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                option_value(&qmp.to_string_lossy())
            ),
            "-mon".into(),
            "chardev=qmp0,mode=control".into(),
            "-chardev".into(),
            format!(
                "socket,id=serial0,path={},server=on,wait=on,logfile={}",
                option_value(&serial.to_string_lossy()),
                option_value(&console_log.to_string_lossy()),
            ),
            "-serial".into(),
            "chardev:serial0".into(),
        ],
        Io::Interactive => vec!["-serial".into(), "mon:stdio".into()],
    }
}

/// A path given as a whole argument (not inside a `key=value,…` list).
fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A value inside QEMU's `key=value,…` option syntax, where a comma is written twice.
fn option_value(value: &str) -> String {
    value.replace(',', ",,")
}

fn on_off(flag: bool) -> &'static str {
    if flag { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            board: Board::Q35,
            accel: Accel::Tcg,
            memory_mib: 512,
            cpus: 2,
            boot: Boot::Direct {
                kernel: "/fake/vmlinuz".into(),
                initrd: Some("/fake/initrd.img".into()),
                cmdline: "console=ttyS0 panic=-1 root=PARTLABEL=boot".into(),
            },
            dtb: None,
            disks: vec![
                Disk {
                    path: "/fake/boot.img".into(),
                    bus: DiskBus::VirtioBlk,
                    serial: "boot".into(),
                    read_only: true,
                    throttle: None,
                },
                Disk {
                    path: "/fake/odd,name.img".into(),
                    bus: DiskBus::VirtioBlk,
                    serial: "data".into(),
                    read_only: false,
                    throttle: None,
                },
            ],
            hotplug_ports: 1,
            empty_cdroms: 1,
            on_reboot: GuestReboot::ExitQemu,
            icount: None,
        }
    }

    /// One disk on every bus there is.
    #[test]
    fn every_bus_command_line() {
        let buses = [
            DiskBus::VirtioScsi,
            DiskBus::Nvme {
                logical_block_size: 512,
            },
            DiskBus::Nvme {
                logical_block_size: 4096,
            },
            DiskBus::Usb,
            DiskBus::Sd,
        ];
        let machine = Machine {
            disks: buses
                .iter()
                .enumerate()
                .map(|(index, bus)| Disk {
                    path: format!("/fake/disk{index}.img").into(),
                    bus: *bus,
                    serial: format!("serial{index}"),
                    read_only: index % 2 == 0,
                    throttle: None,
                })
                .collect(),
            hotplug_ports: 0,
            empty_cdroms: 0,
            ..machine()
        };
        insta::assert_snapshot!(shell::join(&machine.qemu_args(&Io::Interactive).unwrap()));
    }

    #[test]
    fn aarch64_virt_command_line() {
        let machine = Machine {
            board: Board::Virt,
            boot: Boot::Direct {
                kernel: "/fake/vmlinuz".into(),
                initrd: Some("/fake/initrd.img".into()),
                cmdline: "console=ttyAMA0 panic=-1".into(),
            },
            empty_cdroms: 0,
            ..machine()
        };
        insta::assert_snapshot!(shell::join(&machine.qemu_args(&Io::Interactive).unwrap()));
    }

    /// A raspi board: no `-cpu` (the SoC fixes it), its RAM and CPU count, the kernel
    /// package's device tree, the SD card in the board's own slot.
    fn raspi(board: Board) -> Machine {
        Machine {
            board,
            memory_mib: board.fixed_memory_mib().unwrap(),
            cpus: board.fixed_cpus().unwrap(),
            dtb: Some("/fake/broadcom/board.dtb".into()),
            boot: Boot::Direct {
                kernel: "/fake/vmlinuz".into(),
                initrd: Some("/fake/initrd.img".into()),
                cmdline: "console=ttyAMA0 panic=-1".into(),
            },
            disks: vec![Disk {
                path: "/fake/sd.img".into(),
                bus: DiskBus::Sd,
                serial: "boot".into(),
                read_only: false,
                throttle: None,
            }],
            hotplug_ports: 0,
            empty_cdroms: 0,
            ..machine()
        }
    }

    #[test]
    fn raspi3b_command_line() {
        let argv = raspi(Board::Raspi3b).qemu_args(&Io::Interactive).unwrap();
        insta::assert_snapshot!(shell::join(&argv));
    }

    #[test]
    fn raspi4b_command_line() {
        let argv = raspi(Board::Raspi4b).qemu_args(&Io::Interactive).unwrap();
        insta::assert_snapshot!(shell::join(&argv));
    }

    /// What a raspi board cannot host is refused with the reason, never rendered.
    #[test]
    fn raspi_refusals() {
        let refused = |machine: Machine| machine.qemu_args(&Io::Interactive).unwrap_err();
        let pi3 = raspi(Board::Raspi3b);
        let mut pci_disk = pi3.clone();
        pci_disk.disks[0].bus = DiskBus::VirtioBlk;
        assert_eq!(
            refused(pci_disk.clone()),
            MachineError::NoPciBus {
                board: Board::Raspi3b,
                bus: DiskBus::VirtioBlk
            }
        );
        assert!(
            refused(pci_disk)
                .to_string()
                .contains("raspi3b has no PCI bus"),
            "the message names the board"
        );
        let two_cards = Machine {
            disks: vec![pi3.disks[0].clone(), pi3.disks[0].clone()],
            ..pi3.clone()
        };
        assert!(matches!(
            refused(two_cards),
            MachineError::SdSlot { cards: 2, .. }
        ));
        assert_eq!(
            refused(Machine {
                memory_mib: 512,
                ..pi3.clone()
            }),
            MachineError::Memory {
                board: Board::Raspi3b,
                required: 1024,
                given: 512
            }
        );
        assert!(matches!(
            refused(Machine {
                memory_mib: 1024,
                ..raspi(Board::Raspi4b)
            }),
            MachineError::Memory { required: 2048, .. }
        ));
        assert!(matches!(
            refused(Machine {
                accel: Accel::Kvm,
                ..pi3.clone()
            }),
            MachineError::NoKvm { .. }
        ));
        assert!(matches!(
            refused(Machine {
                cpus: 1,
                ..pi3.clone()
            }),
            MachineError::Cpus { required: 4, .. }
        ));
        assert!(matches!(
            refused(Machine {
                dtb: None,
                ..pi3.clone()
            }),
            MachineError::DtbMissing { .. }
        ));
        assert!(matches!(
            refused(Machine {
                hotplug_ports: 1,
                ..pi3.clone()
            }),
            MachineError::NoHotplug { .. }
        ));
        assert!(matches!(
            refused(Machine {
                empty_cdroms: 1,
                ..pi3
            }),
            MachineError::NoCdrom { .. }
        ));
        assert!(matches!(
            refused(Machine {
                dtb: Some("/fake/x.dtb".into()),
                ..machine()
            }),
            MachineError::DtbUnsupported { board: Board::Q35 }
        ));
    }

    #[test]
    fn hotplug_devices() {
        let disk = |bus| Disk {
            path: "/fake/late.img".into(),
            bus,
            serial: "late".into(),
            read_only: true,
            throttle: None,
        };
        let (blockdev, device) = disk(DiskBus::VirtioBlk).hotplug_arguments(0).unwrap();
        assert_eq!(blockdev["node-name"], "hotplug-disk0");
        assert_eq!(device["driver"], "virtio-blk-pci");
        assert_eq!(device["bus"], "hotplug0");
        let (_, device) = disk(DiskBus::Nvme {
            logical_block_size: 4096,
        })
        .hotplug_arguments(1)
        .unwrap();
        assert_eq!(device["driver"], "nvme");
        assert_eq!(device["logical_block_size"], 4096);
        assert_eq!(device["drive"], "hotplug-disk1");
        for bus in [DiskBus::VirtioScsi, DiskBus::Usb, DiskBus::Sd] {
            assert!(disk(bus).hotplug_arguments(0).is_none(), "{bus:?}");
        }
    }

    /// The guest's clock from its instructions: `-icount shift=N` under TCG, refused under KVM
    /// and beyond QEMU's largest shift.
    #[test]
    fn icount() {
        let mut counted = machine();
        counted.icount = Some(Icount { shift: 3 });
        let argv = counted.qemu_args(&Io::Interactive).unwrap();
        let line = shell::join(&argv);
        assert!(line.contains(" -no-reboot -icount shift=3 "), "{line}");
        assert!(!shell::join(&machine().qemu_args(&Io::Interactive).unwrap()).contains("icount"));
        let mut kvm = counted.clone();
        kvm.accel = Accel::Kvm;
        assert!(matches!(
            kvm.qemu_args(&Io::Interactive),
            Err(MachineError::IcountNeedsTcg)
        ));
        counted.icount = Some(Icount { shift: 11 });
        let error = counted.qemu_args(&Io::Interactive).unwrap_err();
        assert!(error.to_string().contains("shift=11"), "{error}");
    }

    #[test]
    fn sockets_command_line() {
        let io = Io::Sockets {
            serial: "/run/t/serial.sock".into(),
            console_log: "/art/console.log".into(),
            qmp: "/run/t/qmp.sock".into(),
        };
        insta::assert_snapshot!(shell::join(&machine().qemu_args(&io).unwrap()));
    }

    #[test]
    fn interactive_command_line() {
        let mut machine = machine();
        machine.accel = Accel::Kvm;
        if let Boot::Direct { initrd, .. } = &mut machine.boot {
            *initrd = None;
        }
        insta::assert_snapshot!(shell::join(&machine.qemu_args(&Io::Interactive).unwrap()));
    }

    /// Firmware where the board has none, or beside a device tree, is refused.
    #[test]
    fn uefi_refusals() {
        let uefi = Boot::Uefi {
            code: "/fw/CODE.fd".into(),
            vars: "/cell/vars.fd".into(),
            secure_boot: false,
        };
        let on_raspi = Machine {
            boot: uefi.clone(),
            dtb: None,
            ..raspi(Board::Raspi3b)
        };
        assert!(matches!(
            on_raspi.qemu_args(&Io::Interactive).unwrap_err(),
            MachineError::NoUefi { .. }
        ));
        let with_dtb = Machine {
            board: Board::Virt,
            boot: uefi,
            dtb: Some("/fake/virt.dtb".into()),
            empty_cdroms: 0,
            hotplug_ports: 0,
            ..machine()
        };
        assert!(matches!(
            with_dtb.qemu_args(&Io::Interactive).unwrap_err(),
            MachineError::DtbWithFirmware { .. }
        ));
    }

    /// Firmware and bootloader: no -kernel, the firmware's code read-only in the first flash
    /// device and the VM's own variable store in the second.
    #[test]
    fn uefi_command_line() {
        for board in [Board::Q35, Board::Virt] {
            let machine = Machine {
                board,
                boot: Boot::Uefi {
                    code: "/fw/CODE.fd".into(),
                    vars: "/cell/odd,vars.fd".into(),
                    secure_boot: false,
                },
                empty_cdroms: 0,
                hotplug_ports: 0,
                ..machine()
            };
            let argv = machine.qemu_args(&Io::Interactive).unwrap();
            assert!(!argv.iter().any(|a| a == "-kernel" || a == "-append"));
            insta::assert_snapshot!(
                format!("uefi_command_line_{}", board.machine_type()),
                shell::join(&argv)
            );
        }
    }

    /// Secure Boot on q35: SMM on the machine, the flash writable only from SMM, the Secure
    /// Boot build of the firmware; refused on a board without it.
    #[test]
    fn secure_boot_command_line() {
        let secure = Boot::Uefi {
            code: "/fw/OVMF_CODE_4M.secboot.fd".into(),
            vars: "/cell/enrolled-vars.fd".into(),
            secure_boot: true,
        };
        let q35 = Machine {
            boot: secure.clone(),
            empty_cdroms: 0,
            hotplug_ports: 0,
            ..machine()
        };
        insta::assert_snapshot!(
            "secure_boot_command_line_q35",
            shell::join(&q35.qemu_args(&Io::Interactive).unwrap())
        );
        let virt = Machine {
            board: Board::Virt,
            ..q35
        };
        assert!(matches!(
            virt.qemu_args(&Io::Interactive).unwrap_err(),
            MachineError::NoSecureBoot { board: Board::Virt }
        ));
    }

    /// Only a machine that exits on a guest reboot gets `-no-reboot`.
    #[test]
    fn reboot_is_opt_in() {
        let has_no_reboot = |on_reboot| {
            Machine {
                on_reboot,
                ..machine()
            }
            .qemu_args(&Io::Interactive)
            .unwrap()
            .iter()
            .any(|a| a == "-no-reboot")
        };
        assert!(has_no_reboot(GuestReboot::ExitQemu));
        assert!(!has_no_reboot(GuestReboot::Restart));
        assert_eq!(GuestReboot::default(), GuestReboot::ExitQemu);
    }
}
