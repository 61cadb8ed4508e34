//! The boot sequence of storage-init as PID 1, step by step. Each step logs its elapsed time;
//! the first failure ends the sequence with a [`Fatal`] that `main` turns into the FATAL line.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::MountFlags;

use crate::blockdev::{self, Found, Hotplug};
use crate::coldplug::{self, Coldplugged};
use crate::config::{self, CONFIG_PATH, Config, Prefetch};
use crate::contract::{MODULE_LIST_PATH, ModuleList};
use crate::emergency::EmergencyPlan;
use crate::error::{Context, Fatal};
use crate::log::Log;
use crate::modules::Drivers;
use crate::mounts::{
    detach, mount_boot_fs, mount_fs, mount_image, mount_overlay, mount_private_tmpfs, move_mount,
};
use crate::probe::{Superblock, probe_file};
use crate::switch_root::switch_root;
use crate::verified_image::{VerifiedImage, mount_verified};

/// Where each mode mounts the boot filesystem (read-only, before moving it to `<new root>/boot`)
/// and the new root (the overlay of the image and a tmpfs).
#[derive(Debug, Clone, Copy)]
struct Layout {
    boot: &'static str,
    sysroot: &'static str,
}

/// PID 1 of the mini initramfs: the initramfs is ours, mount where dracut would.
const PID1: Layout = Layout {
    boot: "/boot",
    sysroot: "/sysroot",
};
/// `--prepare-only` under systemd: touch nothing of PID 1's but our own directories under
/// /run, and the new root at upstream's `/initoverlayfs`, which
/// `systemctl switch-root /initoverlayfs` then enters.
const SERVICE: Layout = Layout {
    boot: "/run/initoverlayfs/boot",
    sysroot: "/initoverlayfs",
};
/// `--prepare-only`'s own private tmpfs, holding [`SERVICE`]`.boot`, [`LOWER`] and [`RW`]:
/// systemd makes every mount shared, and the kernel refuses to move a mount out of a shared
/// parent (`do_move_mount` in fs/namespace.c: EINVAL), so the boot filesystem could not be
/// moved into the new root from systemd's /run. Detached once nothing is mounted in it.
const SERVICE_RUN: &str = "/run/initoverlayfs";
/// The read-only image mount (the overlay's lower layer), detached once the overlay holds it.
pub const LOWER: &str = "/run/initoverlayfs/lower";
/// The tmpfs holding the overlay's upper and work directories. Its own tmpfs, not the initramfs
/// root, which is emptied at switch-root (an upstream defect we do not repeat). Detached, too,
/// once the overlay holds it.
pub const RW: &str = "/run/initoverlayfs/rw";
/// systemd runs in initrd mode only when this file exists in its root.
const INITRD_RELEASE: &str = "/etc/initrd-release";
/// Tried in order when the config names no init.
const DEFAULT_INITS: [&str; 2] = ["/init", "/sbin/init"];

/// The API filesystems every init expects; moved into the new root before switching.
const API_MOUNTS: [(&str, &str, &str, &str); 4] = [
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    ("tmpfs", "/run", "tmpfs", "mode=0755"),
];

/// Runs the whole boot; returns only on failure (on success the process image is replaced),
/// with the emergency action (and its fallback entry) configured as far as the boot got.
pub fn run(log: &mut Log) -> (Fatal, EmergencyPlan) {
    let mut emergency = EmergencyPlan::default();
    match boot(log, &mut emergency) {
        Ok(never) => match never {},
        Err(fatal) => (fatal, emergency),
    }
}

/// `storage-init --prepare-only`, a systemd service in a mini initramfs that runs systemd: the
/// same steps as PID 1 up to the overlay, into [`SERVICE`]`.sysroot`; no API mounts, no switch.
pub fn prepare_only(log: &mut Log) -> Result<(), Fatal> {
    if !Path::new("/proc/self").exists() || !Path::new("/sys/class").exists() {
        return Err(Fatal::new(
            "preparing /initoverlayfs",
            "/proc and /sys are not mounted: --prepare-only runs as a service under systemd in the initramfs; as the initramfs's /init, run storage-init without arguments",
        ));
    }
    if !Path::new(INITRD_RELEASE).exists() {
        return Err(Fatal::new(
            "preparing /initoverlayfs",
            format!(
                "{INITRD_RELEASE} is missing: --prepare-only runs only in an initramfs (systemd's initrd mode), not on a booted system"
            ),
        ));
    }
    log.open_kmsg();
    mount_private_tmpfs(Path::new(SERVICE_RUN))?;
    log.step(&format!("mounted a private tmpfs on {SERVICE_RUN}"));
    let mut emergency = EmergencyPlan::default();
    let (_, verified) = prepare(log, &mut emergency, SERVICE)?;
    // Its mounts are detached or moved: it would only follow /run into the new root.
    detach(Path::new(SERVICE_RUN))?;
    // The service has read all it reads of the image; systemd's switch-root and the second
    // stage come next.
    if let Some(verified) = &verified {
        arm(verified, log)?;
    }
    log.step(&format!(
        "prepared {root}: ready for `systemctl switch-root {root}`",
        root = SERVICE.sysroot
    ));
    Ok(())
}

/// Mounts [`API_MOUNTS`]: what PID 1 does first.
pub fn mount_api_filesystems() -> Result<(), Fatal> {
    for (source, target, fstype, data) in API_MOUNTS {
        let flags = MountFlags::NOSUID
            | if fstype == "devtmpfs" {
                MountFlags::empty()
            } else {
                MountFlags::NODEV
            };
        mount_fs(source, Path::new(target), fstype, flags, data)?;
    }
    Ok(())
}

/// Moves [`API_MOUNTS`] under `sysroot`, before switching to it.
pub fn move_api_filesystems(sysroot: &Path) -> Result<(), Fatal> {
    for (_, target, _, _) in API_MOUNTS {
        move_mount(Path::new(target), &sysroot.join(&target[1..]))?;
    }
    Ok(())
}

fn boot(log: &mut Log, emergency: &mut EmergencyPlan) -> Result<std::convert::Infallible, Fatal> {
    mount_api_filesystems()?;
    log.open_kmsg();
    // PID 1's CPU time so far includes the kernel's own start-up (initcalls run as PID 1).
    let cpu_at_start = own_cpu_ms();
    log.step("mounted /proc, /sys, /dev, /run");

    let (config, verified) = prepare(log, emergency, PID1)?;
    let sysroot = Path::new(PID1.sysroot);
    move_api_filesystems(sysroot)?;
    log.step("moved /proc, /sys, /dev, /run into the new root");

    switch_root(sysroot)?;
    log.step("switched root");
    if !Path::new(INITRD_RELEASE).exists() {
        log.warn(&format!(
            "the image has no {INITRD_RELEASE}: systemd in it will not run in initrd mode"
        ));
    }

    let init = choose_init(config.init.as_deref(), is_executable)?;
    // storage-init's last read of the image is done: what init reads is the kernel's to guard.
    if let Some(verified) = &verified {
        arm(verified, log)?;
    }
    log.step(&format!(
        "exec {}{}",
        init.display(),
        cpu_since(cpu_at_start)
    ));
    // The kernel hands init the arguments it did not recognise; they belong to the next init.
    let error = Command::new(&init).args(std::env::args_os().skip(1)).exec();
    Err(Fatal::new(format!("executing {}", init.display()), error))
}

fn arm(verified: &VerifiedImage, log: &mut Log) -> Result<(), Fatal> {
    verified.arm()?;
    log.step("dm-verity: panic_on_corruption from here on");
    Ok(())
}

/// Steps 1-4 of both modes: the config, the modules, the boot device, the image, the overlay on
/// `layout.sysroot` with the boot filesystem moved to its /boot. Returns the config and, for a
/// verified image, its dm-verity device (still answering a bad block with EIO).
fn prepare(
    log: &mut Log,
    emergency: &mut EmergencyPlan,
    layout: Layout,
) -> Result<(Config, Option<VerifiedImage>), Fatal> {
    let config = read_config(log, emergency)?;
    let verity = config
        .verity()
        .map_err(|why| Fatal::new("reading the configuration", why))?;
    check_kernel_release(config.kernel_release.as_deref(), kernel_release())?;
    log.step(&format!(
        "read config: bootfs {}",
        config
            .bootfs
            .as_ref()
            .map_or("unset".into(), |b| b.to_string())
    ));

    let modules = read_module_list()?;
    let mut drivers = Drivers::new(&modules);
    let (loaded, tried) = drivers.load_at_start(log)?;
    log.step(&format!("loaded {loaded} of {tried} modules"));
    // The first round stops at the first bus whose drivers brought new block devices: the
    // search looks at them, and walks the rest only if /boot is not among them.
    let devices_before = blockdev::device_names();
    let new_devices = &mut || blockdev::device_names() != devices_before;
    if let Some(coldplugged) = coldplug::coldplug(&mut drivers, log, new_devices) {
        log_coldplug(log, "coldplug", &coldplugged);
    }

    let Some(bootfs) = config.bootfs.as_ref() else {
        return Err(Fatal::new(
            "finding the boot filesystem",
            format!(
                "no bootfs configured: set 'bootfs UUID=<uuid>' in {CONFIG_PATH} or initoverlayfs.bootfs= on the kernel command line"
            ),
        ));
    };
    let found = blockdev::find(
        bootfs,
        config.bootfs_hint.as_deref(),
        config.timeout,
        &mut DriversOnHotplug {
            drivers: &mut drivers,
            log,
        },
    );
    let Found { device, via } = found.map_err(|mut fatal| {
        let failures = drivers.failures();
        if !failures.is_empty() {
            fatal.why = format!(
                "{}; modules that failed to load: {}",
                fatal.why,
                failures.join("; ")
            );
        }
        fatal
    })?;
    log.step(&format!("found bootfs {bootfs} on {device} {via}"));

    let Some(bootfstype) = config
        .bootfstype
        .as_deref()
        .or(device.superblock.as_ref().map(|sb| sb.fstype))
    else {
        return Err(Fatal::new(
            format!("mounting bootfs {bootfs} ({device})"),
            format!(
                "its filesystem type is not one storage-init recognises: set 'bootfstype <type>' in {CONFIG_PATH}"
            ),
        ));
    };
    let device_path = device.path.to_string_lossy();
    if let Some(kb) = config.read_ahead_kb {
        // Before the image is opened: a file's readahead window is taken from its device's
        // at open.
        match set_read_ahead(&device.path, kb) {
            Ok(attribute) => log.step(&format!("set {attribute} to {kb}")),
            Err(why) => log.warn(&format!(
                "read_ahead_kb {kb} not set on {device_path}: {why}"
            )),
        }
    }
    mount_boot_fs(
        &device_path,
        Path::new(layout.boot),
        bootfstype,
        device.superblock.as_ref().map(|sb| sb.fstype),
    )?;
    log.step(&format!(
        "mounted {device_path} ({bootfstype}) read-only on {}",
        layout.boot
    ));

    let image = image_path(&config, Path::new(layout.boot));
    // One open tells both whether the image is there and what it is.
    let found = match probe_file(&image) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Fatal::new(
                format!("opening the image {}", image.display()),
                format!(
                    "no such file on {bootfs} ({device_path}): build it for kernel {} and install it in /boot",
                    kernel_release()
                ),
            ));
        }
        Err(e) => return Err(e).context(|| format!("reading {}", image.display())),
    };
    check_image_identity(&image, config.image_uuid.as_deref(), found.as_ref())?;
    if config.prefetch == Prefetch::Image {
        // An optimization: an image that cannot be read ahead still boots.
        match start_prefetch(&image) {
            Ok(pid) => log.step(&format!(
                "reading {} ahead in the background (pid {pid})",
                image.display()
            )),
            Err(why) => log.warn(&format!(
                "prefetch of {} not started: {why}",
                image.display()
            )),
        }
    }
    if verity.is_none() {
        log.step(&format!(
            "{} is not verified: no verity_root_hash configured",
            image.display()
        ));
    }
    let mut verified = None;
    let mut mount_the_image = |target: &Path| -> Result<String, Fatal> {
        match &verity {
            Some(verity) => {
                let image = mount_verified(&image, target, &config.fstype, verity)?;
                let how = image.describe();
                verified = Some(image);
                Ok(how)
            }
            None => Ok(mount_image(&image, target, &config.fstype)?.to_string()),
        }
    };
    if !config.overlay {
        // `overlay off`: the image, read-only, is the new root itself.
        let how = mount_the_image(Path::new(layout.sysroot))?;
        log.step(&format!(
            "mounted {} ({}, {how}) on {} (overlay off: read-only root)",
            image.display(),
            config.fstype,
            layout.sysroot
        ));
        // A read-only image without /boot cannot take the boot filesystem's mount: it is
        // detached instead (the image's file keeps it alive; the second stage mounts its own).
        let target = Path::new(layout.sysroot).join("boot");
        if target.is_dir() {
            move_mount(Path::new(layout.boot), &target)?;
            log.step(&format!("moved {} to {}", layout.boot, target.display()));
        } else {
            detach(Path::new(layout.boot))?;
            log.step(&format!(
                "detached {} (the read-only image has no /boot)",
                layout.boot
            ));
        }
        return Ok((config, verified));
    }
    let how = mount_the_image(Path::new(LOWER))?;
    log.step(&format!(
        "mounted {} ({}, {how}) on {LOWER}",
        image.display(),
        config.fstype
    ));

    let volatile = mount_overlay_root(config.overlay_size.as_deref(), Path::new(layout.sysroot))?;
    log.step(&format!(
        "mounted overlay on {}{}",
        layout.sysroot,
        if volatile { "" } else { " (without volatile)" }
    ));
    // The overlay holds private clones of its layers: their own mounts can go. Left under
    // /run, they would move with /run into the real root at the second stage's switch-root
    // and keep the image, and so /boot's filesystem (or the loop device), busy for the life of
    // the machine: the real root could not mount /boot read-write ("would change RO state")
    // and a kernel update could not free the image. Detached, everything of the early boot
    // goes with the overlay when the second stage leaves it.
    for layer in [LOWER, RW] {
        detach(Path::new(layer))?;
    }
    log.step("detached the image and upper-layer mounts (the overlay holds them)");

    let sysroot = Path::new(layout.sysroot);
    move_mount(Path::new(layout.boot), &sysroot.join("boot"))?;
    log.step(&format!("moved {} to {}/boot", layout.boot, layout.sysroot));
    Ok((config, verified))
}

/// The search's hotplug: storage-init's drivers, and its log.
struct DriversOnHotplug<'d, 'l> {
    drivers: &'d mut Drivers<'l>,
    log: &'d mut Log,
}

impl Hotplug for DriversOnHotplug<'_, '_> {
    fn coldplug(&mut self) {
        if let Some(coldplugged) = coldplug::coldplug(self.drivers, self.log, &mut || false) {
            log_coldplug(self.log, "coldplug again, with uevents", &coldplugged);
        }
    }

    fn add(&mut self, modalias: &str) {
        self.drivers.load_for_device(modalias, self.log);
    }

    fn warn(&mut self, message: &str) {
        self.log.warn(message);
    }
}

/// `<round>: 3 devices without a driver; loaded virtio_blk`.
fn log_coldplug(log: &mut Log, round: &str, coldplugged: &Coldplugged) {
    log.step(&format!(
        "{round}: {} device{} without a driver; loaded {}",
        coldplugged.unbound,
        if coldplugged.unbound == 1 { "" } else { "s" },
        if coldplugged.loaded.is_empty() {
            "no module".to_owned()
        } else {
            coldplugged.loaded.join(", ")
        }
    ));
}

/// Mounts the overlay of the image at [`LOWER`] on `sysroot`, its upper and work directories on
/// a tmpfs of `overlay_size` at [`RW`]. Returns whether the overlay is `volatile`.
pub fn mount_overlay_root(overlay_size: Option<&str>, sysroot: &Path) -> Result<bool, Fatal> {
    let rw_options = match overlay_size {
        Some(size) => format!("mode=0755,size={size}"),
        None => "mode=0755".to_owned(),
    };
    mount_fs(
        "tmpfs",
        Path::new(RW),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        &rw_options,
    )?;
    let (upper, work) = (Path::new(RW).join("upper"), Path::new(RW).join("work"));
    for dir in [&upper, &work] {
        std::fs::create_dir(dir).context(|| format!("creating {}", dir.display()))?;
    }
    mount_overlay(Path::new(LOWER), &upper, &work, sysroot)
}

/// Starts `storage-init --prefetch` with `image` as its standard input, and leaves it to run:
/// asking the kernel to read ahead blocks while the device works through the reads, so it is
/// done beside the boot, not in it. The second stage's init, which PID 1 becomes, reaps it.
fn start_prefetch(image: &Path) -> Result<u32, String> {
    let file = std::fs::File::open(image).map_err(|e| format!("opening it: {e}"))?;
    let child = Command::new("/proc/self/exe")
        .arg(PREFETCH_ARG)
        .stdin(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {PREFETCH_ARG}: {e}"))?;
    Ok(child.id())
}

/// The argument that makes storage-init read its standard input ahead ([`prefetch_stdin`]).
pub const PREFETCH_ARG: &str = "--prefetch";

/// `storage-init --prefetch`: reads all of standard input (the image file) front to back into
/// the page cache, and logs when it is done. Returns the bytes read.
///
/// One window at a time, so the image's own reads, which the boot waits for, never queue behind
/// more than a window or two of it on a slow device (asking for all of it at once, with
/// `posix_fadvise(WILLNEED)`, filled an SD card's queue for seconds). The data goes to
/// /dev/null by `sendfile`: into the page cache, without a copy into this process.
pub fn prefetch_stdin(log: &mut Log) -> Result<u64, Fatal> {
    log.open_kmsg();
    let stdin = rustix::stdio::stdin();
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context(|| "opening /dev/null".to_owned())?;
    let mut offset = 0u64;
    loop {
        let mut at = offset;
        let sent = rustix::fs::sendfile(&null, stdin, Some(&mut at), PREFETCH_WINDOW)
            .context(|| format!("reading the image ahead at byte {offset}"))?;
        if sent == 0 {
            break;
        }
        offset += sent as u64;
    }
    log.step(&format!(
        "prefetch: read all {} KiB of the image",
        offset.div_ceil(1024)
    ));
    Ok(offset)
}

/// What the prefetch reads at a time: the kernel's default readahead window
/// (`VM_READAHEAD_PAGES`, 128 KiB); the kernel's own sequential readahead runs a window ahead.
const PREFETCH_WINDOW: usize = 128 * 1024;

/// Writes `kb` into the readahead attribute of `device`'s disk (a partition has none of its
/// own: its disk's queue holds it). Returns the attribute's path.
fn set_read_ahead(device: &Path, kb: u32) -> Result<String, String> {
    let name = device
        .file_name()
        .ok_or_else(|| "no device name".to_owned())?
        .to_string_lossy()
        .into_owned();
    let class = Path::new("/sys/class/block").join(&name);
    let real = std::fs::canonicalize(&class).map_err(|e| format!("{}: {e}", class.display()))?;
    let disk = if real.join("partition").exists() {
        real.parent()
            .ok_or_else(|| format!("{}: no parent disk", real.display()))?
            .to_path_buf()
    } else {
        real
    };
    let attribute = disk.join("queue/read_ahead_kb");
    std::fs::write(&attribute, kb.to_string())
        .map_err(|e| format!("{}: {e}", attribute.display()))?;
    Ok(attribute.display().to_string())
}

/// Reads the config file and the command line; sets `emergency` as soon as it is known, so a
/// malformed value still ends in the configured action (the command line's, else the file's).
fn read_config(log: &mut Log, emergency: &mut EmergencyPlan) -> Result<Config, Fatal> {
    let cmdline =
        std::fs::read_to_string("/proc/cmdline").context(|| "reading /proc/cmdline".to_owned())?;
    let text = match std::fs::read_to_string(CONFIG_PATH) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            if let Some(action) = config::emergency_from_cmdline(&cmdline) {
                emergency.action = action;
            }
            emergency.fallback_entry = config::fallback_entry_for(None, &cmdline);
            return Err(e).context(|| format!("reading {CONFIG_PATH}"));
        }
    };
    // A malformed value still ends in the action the command line chose (unless the file
    // demands dm-verity and the command line asks for a shell); looked for only then.
    let malformed = |error: config::ConfigError, emergency: &mut EmergencyPlan| {
        let file = text.as_deref().unwrap_or("");
        if let Some(action) = config::emergency_from_cmdline_for(file, &cmdline) {
            emergency.action = action;
        }
        emergency.fallback_entry = config::fallback_entry_for(text.as_deref(), &cmdline);
        Fatal::new("reading the configuration", error)
    };
    let (mut config, mut warnings) = match &text {
        Some(text) => config::parse_config(text).map_err(|e| malformed(e, emergency))?,
        None => {
            log.warn(&format!(
                "{CONFIG_PATH} missing: using defaults and the kernel command line"
            ));
            (Config::default(), Vec::new())
        }
    };
    *emergency = EmergencyPlan::of(&config);
    warnings
        .extend(config::apply_cmdline(&mut config, &cmdline).map_err(|e| malformed(e, emergency))?);
    // The file's action, or the command line's where it may override it.
    *emergency = EmergencyPlan::of(&config);
    for warning in warnings {
        log.warn(&warning.0);
    }
    Ok(config)
}

/// The running kernel must be the one the mini initramfs (and its modules) was built for.
fn check_kernel_release(built_for: Option<&str>, running: &str) -> Result<(), Fatal> {
    match built_for {
        Some(built_for) if built_for != running => Err(Fatal::new(
            "checking the mini initramfs against the running kernel",
            format!(
                "it was built for kernel {built_for} but {running} is running: the mini initramfs is stale; rebuild it with `builder initramfs --kver {running} …`"
            ),
        )),
        _ => Ok(()),
    }
}

/// An image whose UUID differs from the one recorded at build time is stale: never boot it
/// silently. An image without a superblock we know is left for the mount to judge.
fn check_image_identity(
    image: &Path,
    recorded: Option<&str>,
    found: Option<&Superblock>,
) -> Result<(), Fatal> {
    match (recorded, found) {
        (Some(recorded), Some(found)) if found.uuid != recorded => Err(Fatal::new(
            format!("checking the image {}", image.display()),
            format!(
                "its {} UUID is {} but this mini initramfs was built with the image {recorded}: one of them is stale; rebuild both for kernel {} (`builder image`, then `builder initramfs --image …`)",
                found.fstype,
                found.uuid,
                kernel_release()
            ),
        )),
        _ => Ok(()),
    }
}

fn read_module_list() -> Result<ModuleList, Fatal> {
    match std::fs::read_to_string(MODULE_LIST_PATH) {
        Ok(text) => ModuleList::parse(&text).context(|| "reading the module list".to_owned()),
        // A kernel with everything built in needs no list.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModuleList::default()),
        Err(e) => Err(e).context(|| format!("reading {MODULE_LIST_PATH}")),
    }
}

/// The CPU time this process (every thread) has used, user and system milliseconds, so a
/// benchmark can tell storage-init's own instructions from the kernel's work in its syscalls
/// (mounts, module loads). None if /proc cannot say.
pub fn own_cpu_ms() -> Option<(u64, u64)> {
    cpu_ms(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `; cpu user U ms, system S ms`: the CPU time used since `start` (an [`own_cpu_ms`]), for
/// the exec line the benchmark reads; empty if /proc could not say.
pub fn cpu_since(start: Option<(u64, u64)>) -> String {
    match (start, own_cpu_ms()) {
        (Some((user0, system0)), Some((user, system))) => format!(
            "; cpu user {} ms, system {} ms",
            user - user0,
            system - system0
        ),
        _ => String::new(),
    }
}

/// User and system CPU milliseconds from a `/proc/<pid>/stat` line.
fn cpu_ms(stat: &str) -> Option<(u64, u64)> {
    // Clock ticks of utime and stime: `USER_HZ`, 100 on every architecture Linux exports.
    const TICK_MS: u64 = 10;
    // Field 2 (comm) may hold spaces and parentheses: count fields after its last ')'. There
    // the first is field 3, so utime and stime (fields 14 and 15 of proc_pid_stat(5)) are the
    // 12th and 13th.
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user * TICK_MS, system * TICK_MS))
}

/// `uname -r`, asked once.
fn kernel_release() -> &'static str {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE.get_or_init(|| {
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    })
}

/// `<boot>/<fs>`, by default upstream's `/boot/initoverlayfs-<kernel release>.img`.
fn image_path(config: &Config, boot: &Path) -> PathBuf {
    let name = config
        .fs
        .clone()
        .unwrap_or_else(|| format!("initoverlayfs-{}.img", kernel_release()));
    boot.join(name)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The configured init, else the first of [`DEFAULT_INITS`] that is executable.
fn choose_init(
    configured: Option<&Path>,
    executable: impl Fn(&Path) -> bool,
) -> Result<PathBuf, Fatal> {
    let candidates: Vec<&Path> = match configured {
        Some(path) => vec![path],
        None => DEFAULT_INITS.iter().map(Path::new).collect(),
    };
    candidates.iter().find(|p| executable(p)).map(|p| p.to_path_buf()).ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Fatal::new(
            "finding the init of the image",
            format!("none of {} is an executable file in the image: set 'init <path>' in {CONFIG_PATH}", tried.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_choice() {
        let only = |yes: &'static str| move |p: &Path| p == Path::new(yes);
        assert_eq!(
            choose_init(None, only("/sbin/init")).unwrap(),
            PathBuf::from("/sbin/init")
        );
        assert_eq!(choose_init(None, |_| true).unwrap(), PathBuf::from("/init"));
        assert_eq!(
            choose_init(Some(Path::new("/bin/sh")), only("/bin/sh")).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let err = choose_init(Some(Path::new("/bin/sh")), only("/init")).unwrap_err();
        assert!(
            err.why.contains("/bin/sh") && !err.why.contains("/sbin/init"),
            "{err}"
        );
        let err = choose_init(None, |_| false).unwrap_err();
        assert!(err.why.contains("/init, /sbin/init"), "{err}");
    }

    #[test]
    fn kernel_release_must_match() {
        assert!(check_kernel_release(None, "6.12.0").is_ok());
        assert!(check_kernel_release(Some("6.12.0"), "6.12.0").is_ok());
        let err = check_kernel_release(Some("6.1.0"), "6.12.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("built for kernel 6.1.0 but 6.12.0 is running")
                && err.contains("--kver 6.12.0"),
            "{err}"
        );
    }

    #[test]
    fn image_identity_must_match() {
        let image = Path::new("/boot/initoverlayfs-6.12.img");
        let sb = Superblock {
            fstype: "erofs",
            uuid: "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9".into(),
            label: String::new(),
        };
        assert!(
            check_image_identity(image, None, Some(&sb)).is_ok(),
            "nothing recorded: nothing to check"
        );
        assert!(check_image_identity(image, Some(&sb.uuid), Some(&sb)).is_ok());
        assert!(
            check_image_identity(image, Some(&sb.uuid), None).is_ok(),
            "no superblock: the mount judges"
        );
        let err = check_image_identity(
            image,
            Some("11111111-2222-4333-8444-555555555555"),
            Some(&sb),
        )
        .unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains(&sb.uuid)
                && err.contains("11111111-2222-4333-8444-555555555555")
                && err.contains("stale"),
            "{err}"
        );
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        // A comm with spaces and a ')' must not shift the fields.
        let stat = "1 (a) b) S 0 1 1 0 -1 4194560 97 0 0 0 7 12 0 0 20 0 1 0 3 0";
        assert_eq!(cpu_ms(stat), Some((70, 120)));
        assert_eq!(cpu_ms("1 (init) S 0"), None);
        // The real file of this test process.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ms(&own).is_some(), "{own}");
    }

    #[test]
    fn image_path_defaults_to_upstream_name() {
        let config = Config {
            fs: Some("custom.img".into()),
            ..Config::default()
        };
        assert_eq!(
            image_path(&config, Path::new(PID1.boot)),
            PathBuf::from("/boot/custom.img")
        );
        let default = image_path(&Config::default(), Path::new(PID1.boot));
        let name = default.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("initoverlayfs-") && name.ends_with(".img"),
            "{name}"
        );
        assert!(name.contains(kernel_release()));
    }
}
