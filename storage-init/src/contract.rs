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
//! The module list format, version 1:
//!
//! ```text
//! initoverlayfs-modules 1
//! # comment
//! load /lib/modules/6.12.0/kernel/fs/jbd2/jbd2.ko
//! try /lib/modules/6.12.0/kernel/arch/x86/crypto/crc32c-intel.ko
//! ```
//!
//! The first line names the format and its version; a reader refuses any other version. Each
//! further line is `load <path>` (the boot cannot go on without it: failure is fatal) or
//! `try <path>` (a soft dependency or one of several alias candidates: failure is a warning).
//! Lines are in load order: every module comes after the modules it depends on.

use std::fmt;
use std::path::PathBuf;

/// Where the module list lives inside the mini initramfs.
pub const MODULE_LIST_PATH: &str = "/usr/lib/initoverlayfs/modules";

/// The format name on the first line of the module list.
const MODULE_LIST_MAGIC: &str = "initoverlayfs-modules";

/// The module list format version this storage-init reads and builder writes.
pub const MODULE_LIST_VERSION: u32 = 1;

/// Whether a module's load failure stops the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Necessity {
    /// `load`: required; a failure is fatal.
    Required,
    /// `try`: optional (softdep, alternative implementation); a failure is a warning.
    Optional,
}

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// Absolute path of the (uncompressed) module file inside the mini initramfs.
    pub path: PathBuf,
    pub necessity: Necessity,
}

/// The ordered module load list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleList {
    pub entries: Vec<ModuleEntry>,
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
            let verb = match entry.necessity {
                Necessity::Required => "load",
                Necessity::Optional => "try",
            };
            out.push_str(&format!("{verb} {}\n", entry.path.display()));
        }
        out
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
        let mut entries = Vec::new();
        for (index, raw) in lines {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |problem: String| ModuleListError {
                line: index + 1,
                problem,
            };
            let (verb, path) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| error(format!("expected '<load|try> <path>', found {line:?}")))?;
            let necessity = match verb {
                "load" => Necessity::Required,
                "try" => Necessity::Optional,
                other => {
                    return Err(error(format!(
                        "unknown verb {other:?}: expected load or try"
                    )));
                }
            };
            let path = path.trim();
            if !path.starts_with('/') {
                return Err(error(format!("module path {path:?} is not absolute")));
            }
            entries.push(ModuleEntry {
                path: PathBuf::from(path),
                necessity,
            });
        }
        Ok(ModuleList { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let list = ModuleList {
            entries: vec![
                ModuleEntry {
                    path: "/lib/modules/k/a.ko".into(),
                    necessity: Necessity::Optional,
                },
                ModuleEntry {
                    path: "/lib/modules/k/b.ko".into(),
                    necessity: Necessity::Required,
                },
            ],
        };
        assert_eq!(ModuleList::parse(&list.render()), Ok(list));
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
        check("", 1, "header");
        check("initoverlayfs-modules 2\n", 1, "rebuild");
        check(
            "initoverlayfs-modules 1\n\nfetch /x.ko\n",
            3,
            "unknown verb",
        );
        check("initoverlayfs-modules 1\nload x.ko\n", 2, "not absolute");
        check("initoverlayfs-modules 1\nload\n", 2, "expected");
    }

    #[test]
    fn comments_and_crlf() {
        let list = ModuleList::parse("initoverlayfs-modules 1\r\n# c\r\ntry /a.ko\r\n").unwrap();
        assert_eq!(list.entries[0].path, PathBuf::from("/a.ko"));
    }
}
