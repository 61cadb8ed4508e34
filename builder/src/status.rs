//! `builder status`: which entry this boot came from and why, the last failed boot's FATAL
//! line, and each installed kernel's entry with its boot counter. Reading is separate from
//! rendering ([`Status::render`] is pure).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::bls::EntryName;
use crate::install::{BootLayout, LayoutKind, installed_kernels};

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// systemd-boot's `LoaderInfo`, when it booted this machine.
    pub loader: Option<String>,
    /// systemd-boot's `LoaderEntrySelected`: the entry this boot came from.
    pub selected: Option<String>,
    /// The FATAL line the last failed initoverlayfs boot left.
    pub last_fatal: Option<String>,
    pub kernels: Vec<KernelStatus>,
}

/// One installed kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelStatus {
    pub kver: String,
    /// The image's path, if it is there.
    pub image: Option<String>,
    /// The file names of the kernel's own entries.
    pub entries: Vec<String>,
    /// The file names of its fallback entries.
    pub fallbacks: Vec<String>,
}

impl Status {
    /// Reads the firmware variables (only for the live system, `root` = `/`) and the installed
    /// kernels of `root`.
    pub fn read(root: &Path, layout: Option<LayoutKind>) -> Status {
        let live = root == Path::new("/");
        let kernels = installed_kernels(root)
            .into_iter()
            .filter_map(|kver| {
                let layout = BootLayout::detect(root, &kver, layout).ok()?;
                let names = |fallbacks: bool| -> Vec<String> {
                    let dir = layout.boot_dir().join("loader/entries");
                    let mut names: Vec<String> = fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            EntryName::parse(n).is_some_and(|e| e.stem.contains(&kver))
                                && EntryName::is_fallback(n) == fallbacks
                        })
                        .collect();
                    names.sort();
                    names
                };
                Some(KernelStatus {
                    image: layout
                        .image()
                        .is_file()
                        .then(|| layout.image().display().to_string()),
                    entries: names(false),
                    fallbacks: names(true),
                    kver,
                })
            })
            .collect();
        Status {
            loader: live.then(crate::efi::loader_info).flatten(),
            selected: live.then(crate::efi::loader_entry_selected).flatten(),
            last_fatal: live.then(crate::efi::last_fatal).flatten(),
            kernels,
        }
    }

    /// What this boot was, in a few words.
    fn this_boot(&self) -> String {
        let Some(selected) = &self.selected else {
            return "not known (no LoaderEntrySelected: the boot loader is not systemd-boot, or efivarfs is not mounted)".to_owned();
        };
        if EntryName::is_fallback(selected) {
            let why = if self.last_fatal.is_some() {
                "initoverlayfs failed, see the last failure"
            } else {
                "chosen in the menu, or the initoverlayfs entry has no tries left"
            };
            return format!("{selected} (classic fallback: {why})");
        }
        let ours = self.kernels.iter().any(|k| {
            k.entries
                .iter()
                .any(|e| e.eq_ignore_ascii_case(selected) || stem_of(e) == stem_of(selected))
        });
        if ours {
            format!("{selected} (initoverlayfs)")
        } else {
            format!("{selected} (not an initoverlayfs entry)")
        }
    }

    /// The report, one fact per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "boot loader: {}",
            self.loader
                .as_deref()
                .unwrap_or("not known (no LoaderInfo)")
        );
        let _ = writeln!(out, "this boot: {}", self.this_boot());
        // Not the FATAL line verbatim: a console searched for FATAL lines would count it again.
        let _ = writeln!(
            out,
            "last failure: {}",
            self.last_fatal.as_deref().map_or_else(
                || "none recorded".to_owned(),
                |line| format!(
                    "storage-init stopped: {}",
                    line.strip_prefix("storage-init: FATAL: ").unwrap_or(line)
                )
            )
        );
        if self.kernels.is_empty() {
            let _ = writeln!(out, "no kernel has initoverlayfs installed");
        }
        for kernel in &self.kernels {
            let _ = writeln!(
                out,
                "kernel {}: image {}",
                kernel.kver,
                kernel.image.as_deref().unwrap_or("missing")
            );
            for entry in &kernel.entries {
                let state = EntryName::parse(entry)
                    .map(|e| e.state())
                    .unwrap_or_default();
                let _ = writeln!(out, "  entry {entry}: {state}");
            }
            for fallback in &kernel.fallbacks {
                let _ = writeln!(out, "  fallback {fallback}");
            }
        }
        out
    }
}

fn stem_of(name: &str) -> String {
    EntryName::parse(&name.to_ascii_lowercase()).map_or_else(|| name.to_owned(), |e| e.stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> KernelStatus {
        KernelStatus {
            kver: "6.12.95+deb12-amd64".into(),
            image: Some("/boot/initoverlayfs-6.12.95+deb12-amd64.img".into()),
            entries: vec!["debian-6.12.95+deb12-amd64+0-3.conf".into()],
            fallbacks: vec!["debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf".into()],
        }
    }

    #[test]
    fn a_fallen_back_boot_says_why() {
        let status = Status {
            loader: Some("systemd-boot 252.39-1~deb12u2".into()),
            selected: Some("debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf".into()),
            last_fatal: Some("storage-init: FATAL: mounting the image: Invalid argument".into()),
            kernels: vec![kernel()],
        };
        insta::assert_snapshot!(status.render(), @r"
        boot loader: systemd-boot 252.39-1~deb12u2
        this boot: debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf (classic fallback: initoverlayfs failed, see the last failure)
        last failure: storage-init stopped: mounting the image: Invalid argument
        kernel 6.12.95+deb12-amd64: image /boot/initoverlayfs-6.12.95+deb12-amd64.img
          entry debian-6.12.95+deb12-amd64+0-3.conf: bad: 3 tries failed, the boot loader prefers the entries after it
          fallback debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf
        ");
    }

    #[test]
    fn an_initoverlayfs_boot_is_named_by_its_counted_entry() {
        let mut kernel = kernel();
        kernel.entries = vec!["debian-6.12.95+deb12-amd64+2-1.conf".into()];
        let status = Status {
            loader: None,
            selected: Some("debian-6.12.95+deb12-amd64+2-1.conf".into()),
            last_fatal: None,
            kernels: vec![kernel],
        };
        let text = status.render();
        assert!(
            text.contains("this boot: debian-6.12.95+deb12-amd64+2-1.conf (initoverlayfs)\n"),
            "{text}"
        );
        assert!(text.contains("last failure: none recorded\n"), "{text}");
        assert!(text.contains("on trial: 2 tries left, 1 done"), "{text}");
        let unknown = Status::default().render();
        assert!(unknown.contains("this boot: not known"), "{unknown}");
        assert!(
            unknown.contains("no kernel has initoverlayfs installed"),
            "{unknown}"
        );
    }
}
