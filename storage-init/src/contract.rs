//! The versioned contract between `builder` (which writes the mini initramfs) and storage-init
//! (which reads it at boot). storage-init owns these types; builder writes files only through
//! them, so both sides always agree on the format.
//!
//! What a mini initramfs carries for storage-init:
//! * `/init`: storage-init itself.
//! * [`crate::config::CONFIG_PATH`]: the runtime configuration.
//! * [`MODULE_LIST_PATH`]: the kernel modules to load, in order (this module's [`ModuleList`]).
//! * The module files the list names, uncompressed.
//!
//! The module list format, version 2:
//!
//! ```text
//! initoverlayfs-modules 2
//! # <verb> <name> <path> [<name of a module to load first>...]
//! try crc32c_intel /lib/modules/6.12.0/kernel/arch/x86/crypto/crc32c-intel.ko
//! else crc32c_generic /lib/modules/6.12.0/kernel/crypto/crc32c_generic.ko crc32c_intel
//! load jbd2 /lib/modules/6.12.0/kernel/fs/jbd2/jbd2.ko crc32c_intel crc32c_generic
//! load ext4 /lib/modules/6.12.0/kernel/fs/ext4/ext4.ko jbd2 crc32c_intel crc32c_generic
//! device virtio_blk /lib/modules/6.12.0/kernel/drivers/block/virtio_blk.ko
//! # alias <modalias pattern> <name>
//! alias virtio:d00000002v* virtio_blk
//! ```
//!
//! The first line names the format and its version; a reader refuses any other version. A
//! module line is `load` (loaded at start; the boot cannot go on without it), `try` (loaded at
//! start; a soft dependency or the preferred one of several alias candidates, so a failure is a
//! warning), `else` (the next candidate for the same alias: loaded at start only if the module
//! named first after its path, an earlier candidate, failed to load; a failure is a warning) or
//! `device` (loaded only when a device needs it: when a device without a driver has a modalias
//! that an `alias` line maps to it, at coldplug or from a uevent; a failure is a warning, and
//! the boot device's absence then says the rest). The names after the path are the modules to
//! load before it (hard dependencies and `pre:` soft dependencies); each must be on an earlier
//! line, so the file order is a valid load order and the graph has no cycle. Alias patterns are
//! kmod's (shell globs: `*`, `?`, `[...]`).
//!
//! `else` came after the version number did: a storage-init that predates it refuses the line
//! ("unknown verb"), which no older reader can misread, so the version stayed.

use std::fmt;
use std::path::PathBuf;

/// Where the module list lives inside the mini initramfs.
pub const MODULE_LIST_PATH: &str = "/usr/lib/initoverlayfs/modules";

/// The format name on the first line of the module list.
const MODULE_LIST_MAGIC: &str = "initoverlayfs-modules";

/// The module list format version this storage-init reads and builder writes.
pub const MODULE_LIST_VERSION: u32 = 2;

/// When a module is loaded and what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Necessity {
    /// `device`: only when a device's modalias asks for it; a failure is a warning.
    OnDemand,
    /// `else`: at start, only if the candidate it stands in for (the first of its `after`
    /// names) failed to load: the next provider of an alias (`crc32c_generic` where
    /// `crc32c_intel` finds no SSE4.2). A failure is a warning.
    Fallback,
    /// `try`: at start; optional (softdep, the preferred alias candidate), a failure is a
    /// warning.
    Optional,
    /// `load`: at start; required, a failure is fatal.
    Required,
}

impl Necessity {
    fn verb(self) -> &'static str {
        match self {
            Necessity::Required => "load",
            Necessity::Optional => "try",
            Necessity::Fallback => "else",
            Necessity::OnDemand => "device",
        }
    }

    /// Whether the module is loaded at start, before any device is looked at.
    pub fn at_start(self) -> bool {
        self != Necessity::OnDemand
    }
}

/// One module the mini initramfs ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// Normalised module name (`-` written as `_`), unique in the list.
    pub name: String,
    /// Absolute path of the (uncompressed) module file inside the mini initramfs.
    pub path: PathBuf,
    pub necessity: Necessity,
    /// Modules to load first, each on an earlier line. For a [`Necessity::Fallback`] the first
    /// is the candidate it stands in for.
    pub after: Vec<String>,
}

impl ModuleEntry {
    /// The earlier candidate this `else` module is loaded instead of, when that one fails.
    pub fn stands_in_for(&self) -> Option<&str> {
        match self.necessity {
            Necessity::Fallback => self.after.first().map(String::as_str),
            _ => None,
        }
    }
}

/// A modalias pattern and the module it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAlias {
    pub pattern: String,
    pub module: String,
}

/// The modules of a mini initramfs, in load order, and the modaliases of the on-demand ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleList {
    pub entries: Vec<ModuleEntry>,
    pub aliases: Vec<DeviceAlias>,
}

/// Why a module list cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleListError {
    /// 1-based line number.
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ModuleListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MODULE_LIST_PATH} line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ModuleListError {}

impl ModuleList {
    /// Renders the file; `ModuleList::parse(&list.render())` gives back `list`.
    pub fn render(&self) -> String {
        let mut out = format!("{MODULE_LIST_MAGIC} {MODULE_LIST_VERSION}\n");
        for entry in &self.entries {
            out.push_str(&format!(
                "{} {} {}",
                entry.necessity.verb(),
                entry.name,
                entry.path.display()
            ));
            for name in &entry.after {
                out.push(' ');
                out.push_str(name);
            }
            out.push('\n');
        }
        for alias in &self.aliases {
            out.push_str(&format!("alias {} {}\n", alias.pattern, alias.module));
        }
        out
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ModuleEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn parse(text: &str) -> Result<ModuleList, ModuleListError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
        let expected = format!("{MODULE_LIST_MAGIC} {MODULE_LIST_VERSION}");
        if header != expected {
            return Err(ModuleListError {
                line: 1,
                problem: format!(
                    "expected the header {expected:?}, found {header:?}: rebuild the mini initramfs with a builder matching this storage-init"
                ),
            });
        }
        let mut list = ModuleList::default();
        for (index, raw) in lines {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |problem: String| ModuleListError {
                line: index + 1,
                problem,
            };
            let mut words = line.split_whitespace();
            let verb = words.next().unwrap_or_default();
            let necessity = match verb {
                "load" => Necessity::Required,
                "try" => Necessity::Optional,
                "else" => Necessity::Fallback,
                "device" => Necessity::OnDemand,
                "alias" => {
                    let (Some(pattern), Some(module), None) =
                        (words.next(), words.next(), words.next())
                    else {
                        return Err(error(format!(
                            "expected 'alias <pattern> <module>', found {line:?}"
                        )));
                    };
                    if list.entry(module).is_none() {
                        return Err(error(format!(
                            "alias {pattern} names {module}, which no earlier line lists"
                        )));
                    }
                    list.aliases.push(DeviceAlias {
                        pattern: pattern.to_owned(),
                        module: module.to_owned(),
                    });
                    continue;
                }
                other => {
                    return Err(error(format!(
                        "unknown verb {other:?}: expected load, try, else, device or alias"
                    )));
                }
            };
            let (Some(name), Some(path)) = (words.next(), words.next()) else {
                return Err(error(format!(
                    "expected '{verb} <name> <path> [<module>...]', found {line:?}"
                )));
            };
            if !path.starts_with('/') {
                return Err(error(format!("module path {path:?} is not absolute")));
            }
            if list.entry(name).is_some() {
                return Err(error(format!("module {name} is listed twice")));
            }
            let after: Vec<String> = words.map(str::to_owned).collect();
            if let Some(missing) = after.iter().find(|dep| list.entry(dep).is_none()) {
                return Err(error(format!(
                    "{name} needs {missing}, which no earlier line lists"
                )));
            }
            if necessity == Necessity::Fallback && after.is_empty() {
                return Err(error(format!(
                    "else {name} names no module it stands in for: expected 'else <name> <path> <earlier candidate> [<module>...]'"
                )));
            }
            list.entries.push(ModuleEntry {
                name: name.to_owned(),
                path: PathBuf::from(path),
                necessity,
                after,
            });
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, necessity: Necessity, after: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: format!("/lib/modules/k/{name}.ko").into(),
            necessity,
            after: after.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn round_trip() {
        let list = ModuleList {
            entries: vec![
                entry("a", Necessity::Optional, &[]),
                entry("b", Necessity::Required, &["a"]),
                entry("c", Necessity::OnDemand, &["a", "b"]),
                entry("d", Necessity::Fallback, &["a"]),
            ],
            aliases: vec![DeviceAlias {
                pattern: "virtio:d00000002v*".into(),
                module: "c".into(),
            }],
        };
        let text = list.render();
        assert!(
            text.contains("device c /lib/modules/k/c.ko a b\n")
                && text.contains("else d /lib/modules/k/d.ko a\n"),
            "{text}"
        );
        assert_eq!(list.entries[3].stands_in_for(), Some("a"));
        assert_eq!(list.entries[1].stands_in_for(), None);
        assert_eq!(ModuleList::parse(&text), Ok(list));
        assert_eq!(
            ModuleList::parse(&ModuleList::default().render()),
            Ok(ModuleList::default())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let check = |text: &str, line: usize, fragment: &str| {
            let err = ModuleList::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.to_string().contains(fragment), "{err}");
        };
        let v2 = "initoverlayfs-modules 2\n";
        check("", 1, "header");
        check("initoverlayfs-modules 1\nload /a.ko\n", 1, "rebuild");
        check(&format!("{v2}\nfetch a /x.ko\n"), 3, "unknown verb");
        check(&format!("{v2}load a x.ko\n"), 2, "not absolute");
        check(&format!("{v2}load\n"), 2, "expected 'load <name> <path>");
        check(&format!("{v2}load a\n"), 2, "expected");
        check(
            &format!("{v2}load a /a.ko b\nload b /b.ko\n"),
            2,
            "no earlier line",
        );
        check(&format!("{v2}load a /a.ko\ntry a /b.ko\n"), 3, "twice");
        check(&format!("{v2}alias pci:* nvme\n"), 2, "no earlier line");
        check(
            &format!("{v2}try a /a.ko\nelse b /b.ko\n"),
            3,
            "stands in for",
        );
        check(&format!("{v2}else b /b.ko c\n"), 2, "no earlier line");
        check(
            &format!("{v2}device nvme /n.ko\nalias pci:*\n"),
            3,
            "expected 'alias",
        );
    }

    #[test]
    fn comments_and_crlf() {
        let list = ModuleList::parse("initoverlayfs-modules 2\r\n# c\r\ntry a /a.ko\r\n").unwrap();
        assert_eq!(list.entries[0].path, PathBuf::from("/a.ko"));
    }

    #[test]
    fn necessity_ranks_on_demand_lowest() {
        assert!(Necessity::Required > Necessity::Optional);
        assert!(Necessity::Optional > Necessity::Fallback);
        assert!(Necessity::Fallback > Necessity::OnDemand);
        assert!(!Necessity::OnDemand.at_start() && Necessity::Optional.at_start());
        assert!(Necessity::Fallback.at_start());
    }
}
