//! The guest side of the boot benchmark's probe: the boot sampler
//! (`storage-init/examples/boot_sampler.rs`, built static) and its two systemd units, laid out
//! as an "instrumentation" tree that is copied both into the initrd's content (dracut
//! `--include <tree> /`) and into the real root, so one set of files serves every boot chain
//! (classic initramfs, dracut's squash-erofs, initoverlayfs).
//!
//! * [`RECORD_UNIT_NAME`] runs `boot-sampler record` from the start of each phase: in the
//!   initrd and again in the real root. It records to [`SAMPLES_FILE`] on /run, which systemd
//!   moves from the initrd into the real root at switch-root, so one file holds both phases.
//!   It has no default dependencies (so it starts in the first batch of jobs) and is wanted by
//!   sysinit.target; its start job finishes with the fork, so nothing waits for it. The initrd's
//!   switch to the real root isolates `initrd-switch-root.target`, which stops every unit
//!   without `IgnoreOnIsolate=yes`: the recorder gets SIGTERM and ends at once. Until the real
//!   root's systemd starts its own, no sample is taken (11.5 s in a TCG boot of the
//!   `…-dracut-uefi` cell: 2.8 s of the initrd's end, 8 s of the real root's systemd starting);
//!   the counters are system-wide, so that stretch's totals are still known. Keeping the
//!   initrd's recorder running instead would keep the initrd's root, and with it storage-init's
//!   read-only /boot mount, alive in the real root. At shutdown it conflicts with
//!   `shutdown.target`, the way default dependencies would have it.
//! * [`DUMP_UNIT_NAME`] runs `boot-sampler dump` once multi-user.target is reached, in the real
//!   root only (`ConditionPathExists=!/etc/initrd-release`): every sample, then
//!   systemd-analyze's figures, onto the kernel log (`xtask::guest_samples` reads them back off
//!   the console). `Type=exec`, not `oneshot`: systemd-analyze refuses to describe a boot that
//!   has not finished, and a oneshot job after multi-user.target would keep it from finishing.
//!
//! The tree holds no systemctl state of its own: the wants links are written here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::Shell;

/// Where the sampler goes, relative to the tree's root (and the guest's `/`).
pub const SAMPLER_PATH: &str = "usr/local/sbin/initoverlayfs-boot-sampler";
/// The samples of both phases (on /run: moved into the real root at switch-root).
pub const SAMPLES_FILE: &str = "/run/initoverlayfs-bench/samples";
/// The sampling interval the record unit asks for: four samples a second, each a few syscalls
/// (under TCG 1.5 to 2.2 ms of guest CPU: see the sampler's module comment).
pub const INTERVAL_MS: u64 = 250;

/// The unit that records (both phases).
pub const RECORD_UNIT_NAME: &str = "initoverlayfs-boot-sampler.service";
/// The unit that writes the samples (and, on request, systemd-analyze's figures) to the kernel
/// log.
pub const DUMP_UNIT_NAME: &str = "initoverlayfs-boot-sampler-dump.service";
/// Where units go in the tree (the administrator's directory: it outranks the distribution's).
const UNIT_DIR: &str = "etc/systemd/system";

/// The record unit's text.
pub fn record_unit() -> String {
    format!(
        "[Unit]
Description=initoverlayfs boot benchmark: sample CPU, memory, reads and pressure over the boot
DefaultDependencies=no
Conflicts=shutdown.target
Before=sysinit.target shutdown.target

[Service]
Type=simple
ExecStart=/{SAMPLER_PATH} record {SAMPLES_FILE} --interval-ms {INTERVAL_MS}

[Install]
WantedBy=sysinit.target
"
    )
}

/// The dump unit's text; with `analyze`, systemd-analyze's figures too (about 25 s of TCG time
/// after multi-user.target).
pub fn dump_unit(analyze: bool) -> String {
    let analyze = if analyze { " --analyze" } else { "" };
    format!(
        "[Unit]
Description=initoverlayfs boot benchmark: the boot's samples and systemd-analyze onto the kernel log
After=multi-user.target
ConditionPathExists=!/etc/initrd-release

[Service]
Type=exec
ExecStart=/{SAMPLER_PATH} dump {SAMPLES_FILE}{analyze}

[Install]
WantedBy=multi-user.target
"
    )
}

/// Writes the instrumentation tree into `dir` (created if missing; files already there are
/// replaced, never written through, so `dir` may be a hard-linked copy): the sampler from
/// `sampler_binary`, both units and their wants links; `analyze` as [`dump_unit`] takes it.
pub fn write_instrumentation(dir: &Path, sampler_binary: &Path, analyze: bool) -> Result<()> {
    let sampler = dir.join(SAMPLER_PATH);
    create_parent(&sampler)?;
    remove_if_present(&sampler)?;
    std::fs::copy(sampler_binary, &sampler).with_context(|| {
        format!(
            "copying the boot sampler {} to {}",
            sampler_binary.display(),
            sampler.display()
        )
    })?;
    set_mode(&sampler, 0o755)?;
    let units = dir.join(UNIT_DIR);
    for (name, text, target) in [
        (RECORD_UNIT_NAME, record_unit(), "sysinit.target"),
        (DUMP_UNIT_NAME, dump_unit(analyze), "multi-user.target"),
    ] {
        let unit = units.join(name);
        create_parent(&unit)?;
        remove_if_present(&unit)?;
        std::fs::write(&unit, text).with_context(|| format!("writing {}", unit.display()))?;
        set_mode(&unit, 0o644)?;
        let wants = units.join(format!("{target}.wants"));
        std::fs::create_dir_all(&wants).with_context(|| format!("creating {}", wants.display()))?;
        let link = wants.join(name);
        remove_if_present(&link)?;
        std::os::unix::fs::symlink(format!("../{name}"), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// What ends the dump on the console: the harness's last milestone of a boot.
pub const DUMP_END_PATTERN: &str = r"initoverlayfs-sample: end samples=\d+";

/// The static boot sampler for a guest architecture (QEMU's name: `x86_64`, `aarch64`).
pub fn build_sampler(sh: &Shell, root: &Path, arch: &str) -> Result<PathBuf> {
    crate::static_build::build_binary_for_arch(
        sh,
        root,
        arch,
        crate::disk_spec::Pid1Binary::BootSampler,
    )
}

fn create_parent(path: &Path) -> Result<()> {
    let dir = path.parent().context("a path in the tree has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Removes `path` (a file or link) if it is there: a fresh file never writes through a hard
/// link shared with a cached tree.
fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry under `dir`, sorted: `path mode` for files, `path -> target` for links.
    fn listing(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    out.push(format!("{name} -> {}", target.display()));
                } else if meta.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.push(format!("{name} {:o}", meta.permissions().mode() & 0o7777));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn the_tree_holds_the_sampler_the_units_and_their_links() {
        let work = tempfile::tempdir().unwrap();
        let binary = work.path().join("boot_sampler");
        std::fs::write(&binary, b"\x7fELF sampler").unwrap();
        let tree = work.path().join("instrumentation");
        write_instrumentation(&tree, &binary, false).unwrap();
        // Twice: an existing tree (or a hard-linked one) is replaced, not written through.
        let shared = work.path().join("shared-unit");
        std::fs::write(&shared, "cached tree's file").unwrap();
        let unit = tree.join(UNIT_DIR).join(RECORD_UNIT_NAME);
        std::fs::remove_file(&unit).unwrap();
        std::fs::hard_link(&shared, &unit).unwrap();
        write_instrumentation(&tree, &binary, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&shared).unwrap(),
            "cached tree's file"
        );

        assert_eq!(
            listing(&tree),
            [
                "etc/systemd/system/initoverlayfs-boot-sampler-dump.service 644",
                "etc/systemd/system/initoverlayfs-boot-sampler.service 644",
                "etc/systemd/system/multi-user.target.wants/initoverlayfs-boot-sampler-dump.service -> ../initoverlayfs-boot-sampler-dump.service",
                "etc/systemd/system/sysinit.target.wants/initoverlayfs-boot-sampler.service -> ../initoverlayfs-boot-sampler.service",
                "usr/local/sbin/initoverlayfs-boot-sampler 755",
            ]
        );
        assert_eq!(
            std::fs::read(tree.join(SAMPLER_PATH)).unwrap(),
            b"\x7fELF sampler"
        );
        assert_eq!(std::fs::read_to_string(&unit).unwrap(), record_unit());
    }

    #[test]
    fn a_missing_sampler_is_named() {
        let work = tempfile::tempdir().unwrap();
        let error = write_instrumentation(work.path(), &work.path().join("no-such-binary"), false)
            .unwrap_err();
        assert!(format!("{error:#}").contains("no-such-binary"), "{error:#}");
    }

    /// What the units promise: the recorder in both phases without waiting for anything, the
    /// dump in the real root after multi-user.target without holding the boot open.
    #[test]
    fn the_units_say_what_the_module_promises() {
        let record = record_unit();
        for line in [
            "DefaultDependencies=no",
            "Conflicts=shutdown.target",
            "Type=simple",
            "WantedBy=sysinit.target",
            "ExecStart=/usr/local/sbin/initoverlayfs-boot-sampler record /run/initoverlayfs-bench/samples --interval-ms 250",
        ] {
            assert!(record.lines().any(|l| l == line), "{line} in\n{record}");
        }
        assert!(!record.contains("IgnoreOnIsolate"), "{record}");
        let dump = dump_unit(false);
        for line in [
            "After=multi-user.target",
            "ConditionPathExists=!/etc/initrd-release",
            "Type=exec",
            "WantedBy=multi-user.target",
            "ExecStart=/usr/local/sbin/initoverlayfs-boot-sampler dump /run/initoverlayfs-bench/samples",
        ] {
            assert!(dump.lines().any(|l| l == line), "{line} in\n{dump}");
        }
        assert!(
            dump_unit(true).lines().any(|l| l
                == "ExecStart=/usr/local/sbin/initoverlayfs-boot-sampler dump /run/initoverlayfs-bench/samples --analyze"),
            "{}",
            dump_unit(true)
        );
    }
}
