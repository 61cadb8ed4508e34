//! The VM test cells as data: `fixtures/cells.toml`, parsed and validated.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub const CELLS_TOML: &str = "fixtures/cells.toml";

/// What the erofs image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Static busybox whose /init writes the marker to /dev/kmsg and powers off.
    Busybox,
    /// The same content, but the mini initramfs runs `storage-init --prepare-only` as a service:
    /// its /init is a busybox script standing in for systemd (mount the API filesystems, run
    /// the service, `switch-root /initoverlayfs`).
    PrepareOnly,
}

/// The emulated machine, and so the guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineKind {
    /// x86_64 PC (Q35 chipset).
    #[default]
    Q35,
    /// aarch64 `virt`.
    Virt,
    /// Raspberry Pi 3 Model B (aarch64): storage only on its SD slot, no power-off.
    Raspi3b,
    /// Raspberry Pi 4 Model B (aarch64): storage only on its SD slot, no power-off.
    Raspi4b,
}

impl MachineKind {
    pub fn board(self) -> testvm::machine::Board {
        match self {
            MachineKind::Q35 => testvm::machine::Board::Q35,
            MachineKind::Virt => testvm::machine::Board::Virt,
            MachineKind::Raspi3b => testvm::machine::Board::Raspi3b,
            MachineKind::Raspi4b => testvm::machine::Board::Raspi4b,
        }
    }

    /// The board's device tree in the kernel package (`usr/lib/linux-image-<release>/…`):
    /// the distribution's own, which names the drivers its kernel has. None where QEMU
    /// describes the machine itself.
    pub fn dtb(self) -> Option<&'static str> {
        match self {
            MachineKind::Q35 | MachineKind::Virt => None,
            MachineKind::Raspi3b => Some("broadcom/bcm2837-rpi-3-b.dtb"),
            MachineKind::Raspi4b => Some("broadcom/bcm2711-rpi-4-b.dtb"),
        }
    }

    /// QEMU's name of the guest architecture, as fixtures/kernels.toml's `arch`.
    pub fn arch(self) -> &'static str {
        match self {
            MachineKind::Q35 => "x86_64",
            MachineKind::Virt | MachineKind::Raspi3b | MachineKind::Raspi4b => "aarch64",
        }
    }

    /// Debian's name of the architecture (package ids end with it).
    pub fn debian_arch(self) -> &'static str {
        match self {
            MachineKind::Q35 => "amd64",
            MachineKind::Virt | MachineKind::Raspi3b | MachineKind::Raspi4b => "arm64",
        }
    }
}

/// The bus the boot disk hangs off, and so the storage preset of the cell's mini initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bus {
    #[default]
    VirtioBlk,
    VirtioScsi,
    Nvme,
    /// NVMe with 4096-byte logical blocks (a 4Kn drive).
    #[serde(rename = "nvme-4kn")]
    Nvme4kn,
    /// USB mass storage on xHCI.
    Usb,
    /// An SD card: on SDHCI (PCI), or in the board's own slot on the raspi boards.
    Sd,
}

impl Bus {
    pub fn disk_bus(self) -> testvm::machine::DiskBus {
        use testvm::machine::DiskBus;
        match self {
            Bus::VirtioBlk => DiskBus::VirtioBlk,
            Bus::VirtioScsi => DiskBus::VirtioScsi,
            Bus::Nvme => DiskBus::Nvme {
                logical_block_size: 512,
            },
            Bus::Nvme4kn => DiskBus::Nvme {
                logical_block_size: 4096,
            },
            Bus::Usb => DiskBus::Usb,
            Bus::Sd => DiskBus::Sd,
        }
    }

    /// The drive's logical block size.
    pub fn logical_block_size(self) -> u32 {
        match self.disk_bus() {
            testvm::machine::DiskBus::Nvme { logical_block_size } => logical_block_size,
            _ => 512,
        }
    }

    /// The builder preset whose drivers reach this bus.
    pub fn preset(self) -> builder::presets::StoragePreset {
        use builder::presets::StoragePreset;
        match self {
            Bus::VirtioBlk | Bus::VirtioScsi => StoragePreset::Virtio,
            Bus::Nvme | Bus::Nvme4kn => StoragePreset::Nvme,
            Bus::Usb => StoragePreset::Usb,
            Bus::Sd => StoragePreset::Mmc,
        }
    }
}

/// The boot disk is plugged in while the guest runs instead of at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotplugSpec {
    /// The milestone after which to plug it.
    pub after: String,
    /// Seconds after that milestone.
    pub delay: u64,
}

/// How a cell's VM ends after its last milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellEnd {
    /// The guest powers off by itself.
    #[default]
    PowerOff,
    /// The harness ends QEMU over QMP (a guest that halts, a board that cannot power off).
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// What the README's test command boots: a few minutes.
    Smoke,
    /// What `cargo xtask vm-test` boots by default.
    Default,
}

/// How many console lines may contain a text, checked after a VM whose milestones all passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleCheck {
    pub text: String,
    /// Exactly this many lines.
    #[serde(default)]
    pub count: Option<usize>,
    /// At least this many lines.
    #[serde(default)]
    pub at_least: Option<usize>,
}

impl ConsoleCheck {
    /// None if `console` satisfies the check, else what is wrong.
    pub fn violation(&self, console: &str) -> Option<String> {
        let found = console.lines().filter(|l| l.contains(&self.text)).count();
        match (self.count, self.at_least) {
            (Some(n), _) if found != n => Some(format!(
                "console: {found} line(s) contain {:?}, expected exactly {n}",
                self.text
            )),
            (_, Some(n)) if found < n => Some(format!(
                "console: {found} line(s) contain {:?}, expected at least {n}",
                self.text
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneSpec {
    pub name: String,
    /// Regular expression; `{nonce}` stands for the run's marker.
    pub pattern: String,
    /// Seconds from the previous milestone.
    pub timeout: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub name: String,
    pub tier: Tier,
    /// An `id` of fixtures/kernels.toml.
    pub kernel: String,
    pub flow: Flow,
    /// Appended to the kernel command line.
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub end: CellEnd,
    /// The filesystem of the test disk's /boot.
    #[serde(default)]
    pub boot_fs: crate::images::BootFsKind,
    /// Plug the boot disk in late, over QMP.
    #[serde(default)]
    pub hotplug: Option<HotplugSpec>,
    /// The filesystem of the initoverlayfs image.
    #[serde(default)]
    pub image_fs: crate::images::ImageFsKind,
    /// Guest CPUs (TCG runs each on a host thread of its own).
    #[serde(default = "one_cpu")]
    pub cpus: u32,
    /// Add a CD-ROM drive without a disc (and its drivers to the mini initramfs).
    #[serde(default)]
    pub empty_cdrom: bool,
    /// The boot disk's bus (default virtio-blk).
    #[serde(default)]
    pub bus: Bus,
    /// The machine (default q35); its architecture must be the kernel's.
    #[serde(default)]
    pub machine: MachineKind,
    /// Console patterns that fail the cell at once.
    pub fatal: Vec<String>,
    /// Line counts the whole console must show once the milestones passed.
    #[serde(default)]
    pub console: Vec<ConsoleCheck>,
    pub milestones: Vec<MilestoneSpec>,
}

fn one_cpu() -> u32 {
    1
}

impl Cell {
    pub fn layout(&self) -> crate::images::Layout {
        crate::images::Layout {
            boot_fs: self.boot_fs,
            image_fs: self.image_fs,
            empty_cdrom: self.empty_cdrom,
            uncompressed: self.flow == Flow::PrepareOnly,
            bus: self.bus,
        }
    }

    pub fn milestones(&self, nonce: &str) -> Result<Vec<testvm::run::Milestone>> {
        self.milestones
            .iter()
            .map(|m| {
                let pattern = m.pattern.replace("{nonce}", nonce);
                testvm::run::Milestone::new(&m.name, &pattern, Duration::from_secs(m.timeout))
                    .with_context(|| {
                        format!("cell {}: milestone {}: bad pattern", self.name, m.name)
                    })
            })
            .collect()
    }

    /// The cell's fatal patterns, and those every cell has (`verdict::ALWAYS_FATAL`).
    pub fn fatal(&self) -> Result<Vec<testvm::run::Fatal>> {
        let mut patterns: Vec<&str> = self.fatal.iter().map(String::as_str).collect();
        for always in crate::verdict::ALWAYS_FATAL {
            if !patterns.contains(&always) {
                patterns.push(always);
            }
        }
        patterns
            .into_iter()
            .map(|p| {
                testvm::run::Fatal::new(p, p)
                    .with_context(|| format!("cell {}: bad fatal pattern {p:?}", self.name))
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
struct CellsFile {
    cell: Vec<Cell>,
}

/// Which cells a command runs: `--cell`, `--kernel`, `--arch`, `--tier`.
#[derive(Debug, Clone, Default)]
pub struct CellFilter {
    /// A name pattern: with `*` or `?` a glob over the whole name
    /// (`x86_64-*-nvme-*`), else text the name contains.
    pub name: Option<String>,
    /// An `id` of fixtures/kernels.toml.
    pub kernel: Option<String>,
    /// The guest architecture, the name's first part (`x86_64`, `aarch64`).
    pub arch: Option<String>,
    /// This tier or lower.
    pub tier: Option<Tier>,
}

impl CellFilter {
    pub fn matches(&self, cell: &Cell) -> bool {
        let name_ok = self.name.as_deref().is_none_or(|pattern| {
            if pattern.contains(['*', '?']) {
                glob(pattern.as_bytes(), cell.name.as_bytes())
            } else {
                cell.name.contains(pattern)
            }
        });
        let arch_ok = self
            .arch
            .as_deref()
            .is_none_or(|arch| cell.name.split('-').next() == Some(arch));
        name_ok
            && arch_ok
            && self.kernel.as_deref().is_none_or(|k| cell.kernel == k)
            && self.tier.is_none_or(|t| cell.tier <= t)
    }
}

/// `*` (any run) and `?` (any one byte) over the whole text.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, text) || text.split_first().is_some_and(|(_, t)| glob(pattern, t))
        }
        (Some((b'?', rest)), Some((_, t))) => glob(rest, t),
        (Some((p, rest)), Some((c, t))) if p == c => glob(rest, t),
        _ => false,
    }
}

pub fn read_cells(root: &Path) -> Result<Vec<Cell>> {
    let path = root.join(CELLS_TOML);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: CellsFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for (i, cell) in file.cell.iter().enumerate() {
        if file.cell[..i].iter().any(|c| c.name == cell.name) {
            bail!("{}: cell {} is declared twice", path.display(), cell.name);
        }
        if cell.milestones.is_empty() {
            bail!(
                "{}: cell {} has no milestones: it could not fail",
                path.display(),
                cell.name
            );
        }
        cell.milestones("0")?;
        cell.fatal()?;
        if let Some(check) = cell
            .console
            .iter()
            .find(|c| c.count.is_some() == c.at_least.is_some())
        {
            bail!(
                "{}: cell {}: console check {:?} needs exactly one of count and at_least",
                path.display(),
                cell.name,
                check.text
            );
        }
        if let Some(fixed) = cell.machine.board().fixed_cpus()
            && cell.cpus != one_cpu()
            && cell.cpus != fixed
        {
            bail!(
                "{}: cell {} asks for {} CPUs, but {} always has {fixed}",
                path.display(),
                cell.name,
                cell.cpus,
                cell.machine.board()
            );
        }
        if cell.empty_cdrom && cell.machine != MachineKind::Q35 {
            bail!(
                "{}: cell {} asks for a CD-ROM drive, which only q35 has (on its AHCI controller)",
                path.display(),
                cell.name
            );
        }
    }
    Ok(file.cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_checks() {
        let check = |count, at_least| ConsoleCheck {
            text: "FATAL".into(),
            count,
            at_least,
        };
        let console = "a FATAL b\nnothing\nFATAL again\n";
        assert_eq!(check(Some(2), None).violation(console), None);
        let error = check(Some(1), None).violation(console).unwrap();
        assert!(
            error.contains("2 line(s)") && error.contains("exactly 1"),
            "{error}"
        );
        assert_eq!(check(None, Some(2)).violation(console), None);
        assert!(
            check(None, Some(3))
                .violation(console)
                .unwrap()
                .contains("at least 3")
        );
        assert!(check(Some(0), None).violation("").is_none());
    }

    #[test]
    fn filters() {
        let cells = read_cells(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let names = |filter: CellFilter| -> Vec<String> {
            cells
                .iter()
                .filter(|c| filter.matches(c))
                .map(|c| c.name.clone())
                .collect()
        };
        let nvme = names(CellFilter {
            name: Some("x86_64-*-nvme-*".into()),
            ..CellFilter::default()
        });
        assert_eq!(
            nvme,
            [
                "x86_64-q35-nvme-debian12-6.12-busybox",
                "x86_64-q35-nvme-4kn-debian12-6.12-busybox"
            ]
        );
        let old_kernel = names(CellFilter {
            kernel: Some("debian12-6.1-amd64".into()),
            ..CellFilter::default()
        });
        assert!(
            old_kernel.iter().all(|n| n.contains("6.1-")),
            "{old_kernel:?}"
        );
        assert!(!old_kernel.is_empty());
        let aarch64 = names(CellFilter {
            arch: Some("aarch64".into()),
            ..CellFilter::default()
        });
        assert!(!aarch64.is_empty());
        assert!(
            aarch64.iter().all(|n| n.starts_with("aarch64-")),
            "{aarch64:?}"
        );
        let smoke = names(CellFilter {
            tier: Some(Tier::Smoke),
            ..CellFilter::default()
        });
        assert!(smoke.len() < cells.len() && !smoke.is_empty());
        assert!(glob(b"a*c?", b"abbbcd"));
        assert!(!glob(b"a*c", b"abcd"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn the_committed_cells_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cells = read_cells(&root).unwrap();
        let kernels = crate::fixtures::read_kernels(&root).unwrap();
        for cell in &cells {
            let kernel = kernels
                .kernel
                .iter()
                .find(|k| k.id == cell.kernel)
                .unwrap_or_else(|| panic!("{}: unknown kernel {}", cell.name, cell.kernel));
            assert_eq!(
                kernel.arch,
                cell.machine.arch(),
                "{}: the machine cannot boot the kernel",
                cell.name
            );
            assert!(
                cell.name.starts_with(&format!("{}-", cell.machine.arch())),
                "{}: a cell's name starts with its architecture",
                cell.name
            );
        }
        assert!(cells.iter().any(|c| c.tier == Tier::Smoke));
    }
}
