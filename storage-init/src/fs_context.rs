//! Mounting through the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`, Linux 5.2+),
//! which, unlike mount(2), tells why a mount failed: the filesystem's own messages are read back
//! from the context and go into the FATAL line. Kernels without it (ENOSYS) get mount(2).

use std::fmt;
use std::path::Path;

use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen,
};

/// The fs-context log keeps a handful of messages of at most a few hundred bytes each
/// (`fs/fs_context.c`); one read returns one message.
const MESSAGE_BUFFER: usize = 1024;
const MAX_MESSAGES: usize = 8;

/// A failed mount: the errno and what the filesystem said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFailure {
    pub errno: Errno,
    /// The kernel's messages, without their `e `/`w `/`i ` level prefix.
    pub kernel_messages: Vec<String>,
}

impl fmt::Display for MountFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::modules::errno_text(self.errno))?;
        if !self.kernel_messages.is_empty() {
            write!(f, " (kernel: {})", self.kernel_messages.join("; "))?;
        }
        Ok(())
    }
}

impl From<Errno> for MountFailure {
    fn from(errno: Errno) -> MountFailure {
        MountFailure {
            errno,
            kernel_messages: Vec::new(),
        }
    }
}

/// Mounts `fstype` from `source` on `target`. `options` is mount(2)'s data string
/// (`key=value` and bare flags, comma separated); `flags` may hold RDONLY, NOSUID, NODEV.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    options: &str,
) -> Result<(), MountFailure> {
    let context = match fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(context) => context,
        // Before Linux 5.2 (or with the syscalls filtered): the classic call.
        Err(Errno::NOSYS) => return classic_mount(source, target, fstype, flags, options),
        Err(errno) => return Err(errno.into()),
    };
    configure(&context, source, flags, options).map_err(|errno| failure(&context, errno))?;
    fsconfig_create(&context).map_err(|errno| failure(&context, errno))?;
    let mount = fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, attributes(flags))
        .map_err(|errno| failure(&context, errno))?;
    rustix::mount::move_mount(
        mount.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(MountFailure::from)
}

fn configure(
    context: &OwnedFd,
    source: &str,
    flags: MountFlags,
    options: &str,
) -> Result<(), Errno> {
    fsconfig_set_string(context, "source", source)?;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some((key, value)) => fsconfig_set_string(context, key, value)?,
            None => fsconfig_set_flag(context, option)?,
        }
    }
    if flags.contains(MountFlags::RDONLY) {
        // The superblock read-only too, not just this mount of it.
        fsconfig_set_flag(context, "ro")?;
    }
    Ok(())
}

fn attributes(flags: MountFlags) -> MountAttrFlags {
    let mut attributes = MountAttrFlags::empty();
    for (flag, attribute) in [
        (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
    ] {
        if flags.contains(flag) {
            attributes |= attribute;
        }
    }
    attributes
}

fn failure(context: &OwnedFd, errno: Errno) -> MountFailure {
    MountFailure {
        errno,
        kernel_messages: drain_messages(context),
    }
}

/// Reads the context's messages until it has none left (ENODATA).
fn drain_messages(context: &OwnedFd) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buffer = [0u8; MESSAGE_BUFFER];
    while messages.len() < MAX_MESSAGES {
        match rustix::io::read(context, &mut buffer) {
            Ok(n) if n > 0 => messages.push(strip_level(&String::from_utf8_lossy(&buffer[..n]))),
            _ => break,
        }
    }
    messages
}

/// `e erofs: cannot find valid erofs superblock` -> `erofs: cannot find valid erofs superblock`.
fn strip_level(message: &str) -> String {
    let message = message.trim_end();
    match message.split_once(' ') {
        Some(("e" | "w" | "i", rest)) => rest.to_owned(),
        _ => message.to_owned(),
    }
}

fn classic_mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    options: &str,
) -> Result<(), MountFailure> {
    let data = std::ffi::CString::new(options).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(source, target, fstype, flags, Some(data.as_c_str()))
        .map_err(MountFailure::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_prefixes_are_stripped() {
        assert_eq!(
            strip_level("e erofs: cannot find valid erofs superblock\n"),
            "erofs: cannot find valid erofs superblock"
        );
        assert_eq!(
            strip_level("w overlayfs: upper fs does not support tmpfile"),
            "overlayfs: upper fs does not support tmpfile"
        );
        assert_eq!(strip_level("plain"), "plain");
        assert_eq!(strip_level("erofs: no prefix"), "erofs: no prefix");
    }

    #[test]
    fn failure_shows_errno_and_kernel_messages() {
        let failure = MountFailure {
            errno: Errno::INVAL,
            kernel_messages: vec!["erofs: bad superblock".into()],
        };
        let shown = failure.to_string();
        assert!(
            shown.contains("Invalid argument")
                && shown.ends_with("(kernel: erofs: bad superblock)"),
            "{shown}"
        );
        assert_eq!(
            MountFailure::from(Errno::NODEV).to_string(),
            crate::modules::errno_text(Errno::NODEV)
        );
    }

    #[test]
    fn the_kernel_says_why_an_overlay_mount_fails() {
        // Real syscalls against the host kernel; a mount that cannot succeed, so nothing changes.
        if !crate::test_tools::have_root("mounting") {
            return;
        }
        let target =
            std::env::temp_dir().join(format!("storage-init-fsctx-{}", std::process::id()));
        std::fs::create_dir_all(&target).expect("create a mountpoint");
        let failure = mount(
            "overlay",
            &target,
            "overlay",
            MountFlags::empty(),
            "no_such_option=1",
        )
        .expect_err("cannot mount");
        let _ = std::fs::remove_dir_all(&target); // best effort: a leftover temp dir is harmless
        assert_eq!(failure.errno, Errno::INVAL, "{failure}");
        assert!(
            failure
                .kernel_messages
                .iter()
                .any(|m| m.contains("no_such_option")),
            "the kernel's reason: {failure}"
        );
    }

    #[test]
    fn flags_become_mount_attributes() {
        assert_eq!(
            attributes(MountFlags::RDONLY | MountFlags::NODEV),
            MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV
        );
        assert_eq!(attributes(MountFlags::empty()), MountAttrFlags::empty());
    }
}
