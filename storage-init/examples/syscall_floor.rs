//! The syscall floor: a stand-in PID 1 for `cargo xtask bench-storage-init` that makes the
//! syscalls of storage-init's boot with none of its decisions, so the benchmark can tell the
//! kernel's share of a step (under TCG, mostly the translation of kernel code run for the first
//! time) from storage-init's own.
//!
//! Timed, as storage-init times them, through the same library calls: the API mounts, /boot,
//! one read of the image's first block, the image, the overlay, the moves, switch-root and the
//! exec of `/init`. Untimed (one `untimed:` line the benchmark leaves out, as it leaves out
//! storage-init's module loads and device wait): reading the config, loading the modules and
//! finding the boot device. No probing of its type, no identity check, no choice of init.
//!
//! Not a product: the mini initramfs of the `*-floor` cell runs it instead of storage-init.
//! Any failure is one FATAL line and a power-off, so the cell ends at once.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::mount::MountFlags;
use storage_init::boot::{
    LOWER, RW, mount_api_filesystems, mount_overlay_root, move_api_filesystems,
};
use storage_init::config::{CONFIG_PATH, Emergency, parse_config};
use storage_init::contract::{MODULE_LIST_PATH, ModuleList};
use storage_init::error::{Context, Fatal};
use storage_init::log::Log;
use storage_init::modules::Drivers;
use storage_init::mounts::{boot_fs_options, detach, mount_fs, mount_image, move_mount};

const SYSROOT: &str = "/sysroot";

fn main() {
    let start = Instant::now();
    let mut log = Log::named("syscall-floor", start);
    let Err(fatal) = boot(&mut log);
    let line = fatal.to_string();
    log.fatal(&line);
    storage_init::emergency::act(&Emergency::PowerOff.into(), &mut log, &line)
}

fn boot(log: &mut Log) -> Result<std::convert::Infallible, Fatal> {
    mount_api_filesystems()?;
    log.open_kmsg();
    let cpu_at_start = storage_init::boot::own_cpu_ms();
    log.step("mounted /proc, /sys, /dev, /run");

    let Untimed {
        device,
        fstype,
        overlay_size,
    } = untimed()?;
    log.step(&format!(
        "untimed: read the config, loaded the modules, found {device}"
    ));

    mount_fs(
        &device,
        Path::new("/boot"),
        &fstype,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        boot_fs_options(&fstype),
    )?;
    log.step(&format!("mounted {device} ({fstype}) read-only on /boot"));

    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let image = PathBuf::from(format!("/boot/initoverlayfs-{release}.img"));
    // storage-init opens the image once and reads its first block to probe it.
    let mut head = [0u8; 4096];
    std::fs::File::open(&image)
        .and_then(|mut file| file.read_exact(&mut head))
        .context(|| format!("reading {}", image.display()))?;
    log.step(&format!("read the first block of {}", image.display()));

    let how = mount_image(&image, Path::new(LOWER), "erofs")?;
    log.step(&format!(
        "mounted {} (erofs, {how}) on {LOWER}",
        image.display()
    ));

    mount_overlay_root(overlay_size.as_deref(), Path::new(SYSROOT))?;
    log.step(&format!("mounted overlay on {SYSROOT}"));
    for layer in [LOWER, RW] {
        detach(Path::new(layer))?;
    }
    log.step("detached the image and upper-layer mounts");

    let sysroot = Path::new(SYSROOT);
    move_mount(Path::new("/boot"), &sysroot.join("boot"))?;
    log.step(&format!("moved /boot to {SYSROOT}/boot"));
    move_api_filesystems(sysroot)?;
    log.step("moved /proc, /sys, /dev, /run into the new root");

    storage_init::switch_root::switch_root(sysroot)?;
    log.step("switched root");
    // The same report as storage-init's exec line, for the benchmark's CPU rows.
    log.step(&format!(
        "exec /init{}",
        storage_init::boot::cpu_since(cpu_at_start)
    ));
    let error = std::process::Command::new("/init")
        .args(std::env::args_os().skip(1))
        .exec();
    Err(Fatal::new("executing /init", error))
}

/// What the timed part needs to know.
struct Untimed {
    /// The boot device's node.
    device: String,
    /// The config's `bootfstype`.
    fstype: String,
    /// The config's `overlay_size`.
    overlay_size: Option<String>,
}

/// What storage-init decides or waits for, done the plain way: the config's bootfs, every
/// module of the list, and the first block device whose superblock matches.
fn untimed() -> Result<Untimed, Fatal> {
    let text = std::fs::read_to_string(CONFIG_PATH).context(|| format!("reading {CONFIG_PATH}"))?;
    let (config, _) = parse_config(&text).map_err(|e| Fatal::new("reading the config", e))?;
    let bootfs = config
        .bootfs
        .ok_or_else(|| Fatal::new("reading the config", "no bootfs"))?;
    let fstype = config
        .bootfstype
        .ok_or_else(|| Fatal::new("reading the config", "no bootfstype"))?;
    let list = std::fs::read_to_string(MODULE_LIST_PATH)
        .context(|| format!("reading {MODULE_LIST_PATH}"))?;
    let list = ModuleList::parse(&list).context(|| "reading the module list".to_owned())?;
    // Lines of the untimed part go nowhere: a log without /dev/kmsg.
    let mut silent = Log::named("syscall-floor", Instant::now());
    let mut drivers = Drivers::new(&list);
    drivers.load_at_start(&mut silent)?;
    storage_init::coldplug::coldplug(&mut drivers, &mut silent, &mut || false);
    let found = storage_init::blockdev::find(
        &bootfs,
        None,
        config.timeout,
        &mut Silently {
            drivers: &mut drivers,
            log: &mut silent,
        },
    )?;
    Ok(Untimed {
        device: found.device.path.to_string_lossy().into_owned(),
        fstype,
        overlay_size: config.overlay_size,
    })
}

/// The search's hotplug, without a word.
struct Silently<'d, 'l> {
    drivers: &'d mut Drivers<'l>,
    log: &'d mut Log,
}

impl storage_init::blockdev::Hotplug for Silently<'_, '_> {
    fn coldplug(&mut self) {
        storage_init::coldplug::coldplug(self.drivers, self.log, &mut || false);
    }

    fn add(&mut self, modalias: &str) {
        self.drivers.load_for_device(modalias, self.log);
    }

    fn warn(&mut self, _: &str) {}
}
