//! The hooks that redo an install after every kernel or initramfs update: the kernel-install
//! plugin (Fedora, CentOS, kernel-install's bls layout) and Debian's kernel and initramfs
//! hooks.
//!
//! Under kernel-install's `layout=uki` the work moves before the UKI is baked:
//! `59-initoverlayfs.install` converts the staged initramfs (`install --uki-staging`) and
//! `95-initoverlayfs.install`, which works on the bls layout's entry directory, stands aside.
//!
//! They reach a machine one of two ways, as the same scripts:
//! * a package ships them ([`packaged`]) where a package puts them: the plugins in
//!   `/usr/lib/kernel/install.d`, Debian's hooks in `/etc/kernel/post{inst,rm}.d` and
//!   `/etc/initramfs/post-update.d` as conffiles;
//! * `install` writes them ([`write`]) for a hand install, all under `/etc`, unless the
//!   package's are there: a second copy would run every update twice, and a conffile is the
//!   package's to change.
//!
//! Either way a hook runs `install --kver <kver> --no-hooks`, which takes the owner's choices
//! from [`crate::install_conf`], and never fails the kernel's installation: the install keeps
//! the classic initramfs bootable at every step, so the hook says what failed and the kernel
//! boots classic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::install::LayoutKind;
use crate::replace::{ReplaceError, remove_if_present, replace_file};

/// The program path the packages install the builder at, which their hooks call.
pub const PACKAGED_PROGRAM: &str = "/usr/sbin/initoverlayfs";

/// Which hooks a package ships: the kernel-install plugin (RPM), or Debian's hooks (deb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    Deb,
    Rpm,
}

/// One hook: where `install` writes it, where a package ships it, its template.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Under the root, where `install` writes it.
    pub written: &'static str,
    /// Under the root, where a package ships it (the same path for Debian's conffiles).
    pub packaged: &'static str,
    template: &'static str,
    /// The layouts that run it.
    layouts: &'static [LayoutKind],
    /// The package format that ships it.
    format: PackageFormat,
}

/// What the second line of a hook says about its origin; [`remove`] leaves packaged ones.
const WRITTEN_ORIGIN: &str = "Written by `install`, removed by `uninstall`";
const PACKAGED_ORIGIN: &str = "Shipped by the initoverlayfs package";

pub const HOOKS: [Hook; 5] = [
    Hook {
        written: "etc/kernel/install.d/59-initoverlayfs.install",
        packaged: "usr/lib/kernel/install.d/59-initoverlayfs.install",
        template: include_str!("../hooks/59-initoverlayfs.install"),
        layouts: &[LayoutKind::Fedora, LayoutKind::Bls],
        format: PackageFormat::Rpm,
    },
    Hook {
        written: "etc/kernel/install.d/95-initoverlayfs.install",
        packaged: "usr/lib/kernel/install.d/95-initoverlayfs.install",
        template: include_str!("../hooks/95-initoverlayfs.install"),
        layouts: &[LayoutKind::Fedora, LayoutKind::Bls],
        format: PackageFormat::Rpm,
    },
    Hook {
        written: "etc/kernel/postinst.d/zz-initoverlayfs",
        packaged: "etc/kernel/postinst.d/zz-initoverlayfs",
        template: include_str!("../hooks/postinst.d-zz-initoverlayfs"),
        layouts: &[LayoutKind::Debian],
        format: PackageFormat::Deb,
    },
    Hook {
        written: "etc/kernel/postrm.d/zz-initoverlayfs",
        packaged: "etc/kernel/postrm.d/zz-initoverlayfs",
        template: include_str!("../hooks/postrm.d-zz-initoverlayfs"),
        layouts: &[LayoutKind::Debian],
        format: PackageFormat::Deb,
    },
    Hook {
        written: "etc/initramfs/post-update.d/initoverlayfs",
        packaged: "etc/initramfs/post-update.d/initoverlayfs",
        template: include_str!("../hooks/post-update.d-initoverlayfs"),
        layouts: &[LayoutKind::Debian],
        format: PackageFormat::Deb,
    },
];

impl Hook {
    /// The script calling `builder` (a path that needs no shell quoting).
    fn render(&self, builder: &str, origin: &str) -> String {
        self.template
            .replace("@BUILDER@", builder)
            .replace("@ORIGIN@", origin)
    }

    /// Whether the package's copy of this hook is installed under `root`.
    fn is_packaged(&self, root: &Path) -> bool {
        is_packaged_file(&root.join(self.packaged))
    }
}

fn is_packaged_file(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|text| text.contains(PACKAGED_ORIGIN))
}

/// The hooks a package of `format` ships: path in the package, mode, text calling
/// [`PACKAGED_PROGRAM`].
pub fn packaged(format: PackageFormat) -> Vec<(String, u32, Vec<u8>)> {
    HOOKS
        .iter()
        .filter(|hook| hook.format == format)
        .map(|hook| {
            (
                hook.packaged.to_owned(),
                0o755,
                hook.render(PACKAGED_PROGRAM, PACKAGED_ORIGIN).into_bytes(),
            )
        })
        .collect()
}

/// Whether the package's hooks are installed under `root` (any of them).
pub fn package_installed(root: &Path) -> bool {
    HOOKS.iter().any(|hook| hook.is_packaged(root))
}

/// What [`write`] did with one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written at this path.
    Wrote(PathBuf),
    /// Left to the package, whose copy is at this path.
    Packaged(PathBuf),
}

/// Writes the hooks of `layout` under `root`, each calling `builder`, except those the package
/// installed.
pub fn write(root: &Path, layout: LayoutKind, builder: &str) -> Result<Vec<Written>, HookError> {
    let mut done = Vec::new();
    for hook in HOOKS.iter().filter(|h| h.layouts.contains(&layout)) {
        if hook.is_packaged(root) {
            done.push(Written::Packaged(root.join(hook.packaged)));
            continue;
        }
        let path = root.join(hook.written);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|error| HookError::Io {
                path: dir.to_owned(),
                error,
            })?;
        }
        replace_file(
            &path,
            hook.render(builder, WRITTEN_ORIGIN).as_bytes(),
            0o755,
        )?;
        done.push(Written::Wrote(path));
    }
    Ok(done)
}

/// Removes the hooks `install` wrote (never the package's), and with them the recorded
/// options when no package keeps them (a package's are removed when it is purged).
pub fn remove(root: &Path) -> Result<Vec<PathBuf>, HookError> {
    let mut removed = Vec::new();
    let mut remove_one = |path: PathBuf| -> Result<(), HookError> {
        if remove_if_present(&path).map_err(|error| HookError::Io {
            path: path.clone(),
            error,
        })? {
            removed.push(path);
        }
        Ok(())
    };
    for hook in &HOOKS {
        let path = root.join(hook.written);
        if !is_packaged_file(&path) {
            remove_one(path)?;
        }
    }
    if !package_installed(root) {
        remove_one(root.join(crate::install_conf::INSTALL_CONF))?;
    }
    Ok(removed)
}

/// Why a hook could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{path}: {error}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error(transparent)]
    Replace(#[from] ReplaceError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_ship_their_format_s_hooks_calling_the_packaged_program() {
        let deb = packaged(PackageFormat::Deb);
        let paths: Vec<&str> = deb.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/kernel/postinst.d/zz-initoverlayfs",
                "etc/kernel/postrm.d/zz-initoverlayfs",
                "etc/initramfs/post-update.d/initoverlayfs",
            ]
        );
        let rpm = packaged(PackageFormat::Rpm);
        let paths: Vec<&str> = rpm.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/lib/kernel/install.d/59-initoverlayfs.install",
                "usr/lib/kernel/install.d/95-initoverlayfs.install",
            ]
        );
        for (path, mode, text) in deb.iter().chain(&rpm) {
            let text = String::from_utf8(text.clone()).unwrap();
            assert_eq!(*mode, 0o755);
            assert!(text.starts_with("#!/bin/sh\n"), "{path}");
            assert!(
                text.contains("BUILDER=\"/usr/sbin/initoverlayfs\"\n"),
                "{path}: {text}"
            );
            assert!(text.contains(PACKAGED_ORIGIN), "{path}");
            assert!(!text.contains('@'), "{path}: a placeholder is left: {text}");
            // A failure never fails the kernel package: every path ends in `exit 0`.
            assert!(text.ends_with("exit 0\n"), "{path}");
        }
    }

    #[test]
    fn install_leaves_the_package_s_hooks_and_uninstall_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for (path, mode, text) in packaged(PackageFormat::Rpm) {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            replace_file(&path, &text, mode).unwrap();
        }
        let done = write(root, LayoutKind::Fedora, "/usr/sbin/initoverlayfs").unwrap();
        let plugins = root.join("usr/lib/kernel/install.d");
        assert_eq!(
            done,
            [
                Written::Packaged(plugins.join("59-initoverlayfs.install")),
                Written::Packaged(plugins.join("95-initoverlayfs.install")),
            ]
        );
        assert!(!root.join(HOOKS[0].written).exists());
        assert!(!root.join(HOOKS[1].written).exists());
        // Debian's hooks are written by install beside a foreign (RPM) plugin.
        let done = write(root, LayoutKind::Debian, "/usr/local/sbin/x").unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        let conf = root.join(crate::install_conf::INSTALL_CONF);
        fs::create_dir_all(conf.parent().unwrap()).unwrap();
        fs::write(&conf, "verity = yes\n").unwrap();
        let removed = remove(root).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(root.join(HOOKS[1].packaged).is_file());
        assert!(conf.is_file(), "the package keeps the options until purged");
    }
}
