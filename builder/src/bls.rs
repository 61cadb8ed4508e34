//! Boot Loader Specification entries as systemd-boot reads them: names with boot counters, the
//! classic fallback entry beside a kernel's entry, and whether the machine's boot loader can
//! count tries and be told which entry to boot next. Pure, except [`BootLoader::detect`].
//!
//! Automatic fallback, as `install` arms it on a systemd-boot machine:
//! * the kernel's entry is renamed `<stem>+<tries>.conf`: systemd-boot counts every attempt down
//!   in the name (`+2-1`, `+1-2`, `+0-3`) and sorts an entry with none left after all others;
//!   `systemd-bless-boot.service` drops the counter once a boot reaches `boot-complete.target`;
//! * the fallback entry, `<stem>~initoverlayfs-classic.conf`, loads the classic initramfs. It
//!   sorts after the kernel's entry while that one has tries left (systemd-boot orders ids
//!   newest first by version comparison, where `~` sorts before everything, even the end), so
//!   it is never the default by accident, and before it once the tries are used up;
//! * storage-init's `emergency fallback` names the fallback entry: on a FATAL it sets
//!   systemd-boot's `LoaderEntryOneShot` to it and reboots, so the very next boot is classic,
//!   whatever the counter says, and no failure can loop.

use std::fs;
use std::path::Path;

/// Fallback entries end so. The `~` makes systemd-boot sort the fallback after the kernel's own
/// entry (see the module docs); an entry's own name ends with `<kver>.conf` or a counter, so a
/// fallback is never taken for a kernel's entry.
pub const FALLBACK_SUFFIX: &str = "~initoverlayfs-classic.conf";
/// What fallback entries were called before they had to sort after the kernel's entry; still
/// recognised, so `install` replaces and `uninstall` removes them.
pub const OLD_FALLBACK_SUFFIX: &str = ".initoverlayfs-classic.conf";
/// How many times systemd-boot tries a newly installed entry when neither `--tries` nor
/// kernel-install's `/etc/kernel/tries` says otherwise.
pub const DEFAULT_TRIES: u32 = 3;

/// A Type #1 entry's file name, split as systemd-boot splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    /// The name without its counter and without `.conf`.
    pub stem: String,
    /// `+<left>[-<done>]`, when the entry is counted.
    pub counter: Option<Counter>,
}

/// A boot counter: tries left and tries done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub left: u32,
    pub done: u32,
}

impl EntryName {
    /// Parses `<stem>[+<left>[-<done>]].conf`; None for a name that is no entry. A `+` that is
    /// not followed by a counter up to `.conf` belongs to the stem (kernel releases such as
    /// `6.12.95+deb12-amd64` have one).
    pub fn parse(file_name: &str) -> Option<EntryName> {
        let base = file_name.strip_suffix(".conf")?;
        if base.is_empty() {
            return None;
        }
        if let Some((stem, counter)) = base.rsplit_once('+')
            && let Some(counter) = Counter::parse(counter)
            && !stem.is_empty()
        {
            return Some(EntryName {
                stem: stem.to_owned(),
                counter: Some(counter),
            });
        }
        Some(EntryName {
            stem: base.to_owned(),
            counter: None,
        })
    }

    /// Whether this is one of our fallback entries (either name).
    pub fn is_fallback(file_name: &str) -> bool {
        file_name.ends_with(FALLBACK_SUFFIX) || file_name.ends_with(OLD_FALLBACK_SUFFIX)
    }

    /// The file name with `counter` (none: the blessed, uncounted name).
    pub fn with_counter(&self, counter: Option<Counter>) -> String {
        match counter {
            None => format!("{}.conf", self.stem),
            Some(Counter { left, done: 0 }) => format!("{}+{left}.conf", self.stem),
            Some(Counter { left, done }) => format!("{}+{left}-{done}.conf", self.stem),
        }
    }

    /// The file name of this entry's fallback; also its systemd-boot id (ids are file names,
    /// lower-cased: fallbacks are named from stems that already are, as kernel-install's are).
    pub fn fallback(&self) -> String {
        format!("{}{FALLBACK_SUFFIX}", self.stem)
    }

    /// What the counter says, for people.
    pub fn state(&self) -> String {
        match self.counter {
            None => "good (not counted)".to_owned(),
            Some(Counter { left: 0, done }) => {
                format!("bad: {done} tries failed, the boot loader prefers the entries after it")
            }
            Some(Counter { left, done }) => format!(
                "on trial: {left} tries left, {done} done; marked good when a boot reaches boot-complete.target"
            ),
        }
    }
}

impl Counter {
    fn parse(text: &str) -> Option<Counter> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (left, done) = text.split_once('-').unwrap_or((text, "0"));
        if !digits(left) || !digits(done) {
            return None;
        }
        Some(Counter {
            left: left.parse().ok()?,
            done: done.parse().ok()?,
        })
    }
}

/// A BLS entry for the classic initramfs: the same entry with its title marked and its initrd
/// line pointing at `classic` instead of `initramfs` (both relative to `$BOOT`). None if the
/// entry does not load `initramfs`.
pub fn fallback_entry_text(entry: &str, initramfs: &str, classic: &str) -> Option<String> {
    let mut found = false;
    let lines: Vec<String> = entry
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(value) = trimmed.strip_prefix("title") {
                format!("title {} (classic initramfs)", value.trim())
            } else if let Some(value) = trimmed.strip_prefix("initrd")
                && value.trim().trim_start_matches('/') == initramfs
            {
                found = true;
                let slash = if value.trim().starts_with('/') {
                    "/"
                } else {
                    ""
                };
                format!("initrd {slash}{classic}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    found.then(|| lines.join("\n") + "\n")
}

/// The boot loader of a machine, as far as automatic fallback cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootLoader {
    /// systemd-boot: counts tries in entry names and boots `LoaderEntryOneShot` once.
    SystemdBoot { evidence: String },
    /// Anything else (GRUB, with or without BLS entries): no counting, no one-shot entry.
    Other,
}

impl BootLoader {
    /// systemd-boot if `$BOOT` has its `loader/loader.conf` or its binary under `EFI/systemd/`,
    /// or (on the running machine) the firmware variable it sets says it booted this machine.
    pub fn detect(boot_dir: &Path, live: bool) -> BootLoader {
        let loader_conf = boot_dir.join("loader/loader.conf");
        if loader_conf.is_file() {
            return BootLoader::SystemdBoot {
                evidence: format!("{} exists", loader_conf.display()),
            };
        }
        let systemd_dir = boot_dir.join("EFI/systemd");
        if let Ok(read) = fs::read_dir(&systemd_dir)
            && let Some(binary) = read.filter_map(|e| e.ok()).find(|e| {
                let name = e.file_name().to_string_lossy().to_ascii_lowercase();
                name.starts_with("systemd-boot") && name.ends_with(".efi")
            })
        {
            return BootLoader::SystemdBoot {
                evidence: format!("{} exists", binary.path().display()),
            };
        }
        if live
            && let Some(info) = crate::efi::loader_info()
            && info.starts_with("systemd-boot")
        {
            return BootLoader::SystemdBoot {
                evidence: format!("LoaderInfo says {info}"),
            };
        }
        BootLoader::Other
    }
}

/// Where systemd-bless-boot lives in a root, if it is installed (Debian: package
/// `systemd-boot`).
pub fn bless_boot(root: &Path) -> Option<String> {
    [
        "usr/lib/systemd/systemd-bless-boot",
        "lib/systemd/systemd-bless-boot",
    ]
    .into_iter()
    .find(|p| root.join(p).is_file())
    .map(|p| format!("/{p}"))
}

/// kernel-install's `/etc/kernel/tries` in `root`, if it holds a number.
pub fn kernel_install_tries(root: &Path) -> Option<u32> {
    fs::read_to_string(root.join("etc/kernel/tries"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_split_as_systemd_boot_splits_them() {
        let name = |s: &str| EntryName::parse(s).unwrap();
        assert_eq!(
            name("debian-6.12.95+deb12-amd64.conf"),
            EntryName {
                stem: "debian-6.12.95+deb12-amd64".into(),
                counter: None
            }
        );
        assert_eq!(
            name("debian-6.12.95+deb12-amd64+3.conf").counter,
            Some(Counter { left: 3, done: 0 })
        );
        let counted = name("debian-6.12.95+deb12-amd64+2-1.conf");
        assert_eq!(counted.stem, "debian-6.12.95+deb12-amd64");
        assert_eq!(counted.counter, Some(Counter { left: 2, done: 1 }));
        assert_eq!(
            name("x+0-3.conf").counter,
            Some(Counter { left: 0, done: 3 })
        );
        // A `+` without a counter up to `.conf` is part of the stem.
        assert_eq!(name("a+b.conf").counter, None);
        assert_eq!(name("a+3-.conf").counter, None);
        assert_eq!(name("+3.conf").stem, "+3");
        assert_eq!(EntryName::parse("loader.txt"), None);
        assert_eq!(EntryName::parse(".conf"), None);
    }

    #[test]
    fn counters_round_trip() {
        let name = EntryName::parse("e-6.1+2-1.conf").unwrap();
        assert_eq!(name.with_counter(None), "e-6.1.conf");
        assert_eq!(
            name.with_counter(Some(Counter { left: 3, done: 0 })),
            "e-6.1+3.conf"
        );
        assert_eq!(name.with_counter(name.counter), "e-6.1+2-1.conf");
        assert_eq!(name.fallback(), "e-6.1~initoverlayfs-classic.conf");
        assert!(EntryName::is_fallback(&name.fallback()));
        assert!(EntryName::is_fallback("e-6.1.initoverlayfs-classic.conf"));
        assert!(!EntryName::is_fallback("e-6.1.conf"));
    }

    #[test]
    fn states_say_what_the_counter_means() {
        let state = |s: &str| EntryName::parse(s).unwrap().state();
        assert_eq!(state("e.conf"), "good (not counted)");
        assert!(state("e+0-3.conf").starts_with("bad: 3 tries failed"));
        assert!(state("e+2-1.conf").starts_with("on trial: 2 tries left, 1 done"));
    }

    #[test]
    fn fallback_entries() {
        let entry = "title Fedora (6.1)\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /initramfs-6.1.img\noptions root=/dev/vda2\n";
        let fallback =
            fallback_entry_text(entry, "initramfs-6.1.img", "initramfs-6.1.classic.img").unwrap();
        assert_eq!(
            fallback,
            "title Fedora (6.1) (classic initramfs)\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /initramfs-6.1.classic.img\noptions root=/dev/vda2\n"
        );
        assert_eq!(
            fallback_entry_text("title x\ninitrd /other.img\n", "initramfs-6.1.img", "c"),
            None
        );
    }

    #[test]
    fn boot_loaders_are_told_apart_by_what_boot_holds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BootLoader::detect(dir.path(), false), BootLoader::Other);
        fs::create_dir_all(dir.path().join("EFI/systemd")).unwrap();
        fs::write(dir.path().join("EFI/systemd/systemd-bootx64.efi"), b"").unwrap();
        assert!(matches!(
            BootLoader::detect(dir.path(), false),
            BootLoader::SystemdBoot { .. }
        ));
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("loader")).unwrap();
        fs::write(other.path().join("loader/loader.conf"), b"timeout 0\n").unwrap();
        assert!(matches!(
            BootLoader::detect(other.path(), false),
            BootLoader::SystemdBoot { .. }
        ));
    }

    #[test]
    fn tries_and_blessing_come_from_the_root() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(kernel_install_tries(root.path()), None);
        assert_eq!(bless_boot(root.path()), None);
        fs::create_dir_all(root.path().join("etc/kernel")).unwrap();
        fs::write(root.path().join("etc/kernel/tries"), "5\n").unwrap();
        assert_eq!(kernel_install_tries(root.path()), Some(5));
        fs::create_dir_all(root.path().join("lib/systemd")).unwrap();
        fs::write(root.path().join("lib/systemd/systemd-bless-boot"), b"").unwrap();
        assert_eq!(
            bless_boot(root.path()).as_deref(),
            Some("/lib/systemd/systemd-bless-boot")
        );
    }
}
