//! Unpacking a Debian package in Rust, as `dpkg-deb -x` does: a .deb is an `ar` archive whose
//! `data.tar[.xz|.zst|.gz|.bz2]` member holds the files. The decompressors are builder's (every
//! format the kernel unpacks); the tar reader is the `tar` crate, which refuses entries that
//! would leave the target directory. Ownership is kept when running as root, as dpkg does.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// `ar`'s global header.
const AR_MAGIC: &[u8] = b"!<arch>\n";
/// Each member's header: name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2.
const MEMBER_HEADER: usize = 60;
const SIZE_FIELD: std::ops::Range<usize> = 48..58;
/// Bound on the unpacked data member (a kernel package is about 500 MB).
const MAX_DATA: u64 = 4 << 30;

/// The `data.tar*` member of a .deb: its name and bytes.
fn data_member(deb: &[u8]) -> Result<(&str, &[u8])> {
    if !deb.starts_with(AR_MAGIC) {
        bail!("not a Debian package: no ar header");
    }
    let mut offset = AR_MAGIC.len();
    while offset + MEMBER_HEADER <= deb.len() {
        let header = &deb[offset..offset + MEMBER_HEADER];
        let name = std::str::from_utf8(&header[..16])
            .context("a member name is not text")?
            .trim_end()
            .trim_end_matches('/');
        let size: usize = std::str::from_utf8(&header[SIZE_FIELD])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("member {name:?} at byte {offset}: bad size field"))?;
        let start = offset + MEMBER_HEADER;
        let body = deb
            .get(start..start.checked_add(size).context("member size overflows")?)
            .with_context(|| format!("member {name:?} at byte {offset}: truncated"))?;
        if name.starts_with("data.tar") {
            return Ok((name, body));
        }
        // Members start on even offsets.
        offset = start + size + size % 2;
    }
    bail!("no data.tar member")
}

/// Unpacks the files of `deb` into `dest` (created if needed).
pub fn unpack_deb(deb: &Path, dest: &Path) -> Result<()> {
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let (name, member) = data_member(&bytes).with_context(|| deb.display().to_string())?;
    let tar_bytes = if name == "data.tar" {
        member.to_vec()
    } else {
        builder::initramfs::decompress_stream(member, MAX_DATA)
            .with_context(|| format!("{}: decompressing {name}", deb.display()))?
    };
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(rustix::process::geteuid().is_root());
    archive.set_unpack_xattrs(false);
    archive.unpack(dest).with_context(|| {
        format!(
            "{}: unpacking {name} into {}",
            deb.display(),
            dest.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A package tree with a nested file, an executable, a symlink and a hard link.
    fn package_tree(root: &Path) {
        use std::os::unix::fs::{PermissionsExt, symlink};
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("lib/modules/1.0/kernel")).unwrap();
        std::fs::write(root.join("lib/modules/1.0/kernel/a.ko"), vec![7u8; 100_000]).unwrap();
        std::fs::write(root.join("lib/modules/1.0/modules.order"), "kernel/a.ko\n").unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("usr/bin/tool", root.join("tool-link")).unwrap();
        std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    }

    fn listing(dir: &Path) -> String {
        builder::cpio::listing(&builder::listing::tree_entries(dir).unwrap())
    }

    /// What dpkg-deb itself unpacks, for every compressor it writes.
    #[test]
    fn unpacks_as_dpkg_deb_does() {
        if crate::provision::find_in_path("dpkg-deb").is_none() {
            crate::provision::skip_or_fail(
                "dpkg-deb is not on PATH (cargo xtask provision installs dpkg)",
            );
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        package_tree(&tree);
        for compressor in ["xz", "zstd", "gzip", "none"] {
            let deb = work.path().join(format!("t-{compressor}.deb"));
            let built = Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Z", compressor, "--build"])
                .arg(&tree)
                .arg(&deb)
                .output()
                .unwrap();
            assert!(built.status.success(), "{compressor}: {built:?}");
            let ours = work.path().join(format!("ours-{compressor}"));
            unpack_deb(&deb, &ours).unwrap();
            let theirs = work.path().join(format!("theirs-{compressor}"));
            let extracted = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&theirs)
                .output()
                .unwrap();
            assert!(extracted.status.success(), "{extracted:?}");
            assert_eq!(listing(&ours), listing(&theirs), "{compressor}");
            assert!(ours.join("lib/modules/1.0/kernel/a.ko").is_file());
        }
    }

    #[test]
    fn damaged_packages_are_named() {
        let work = tempfile::tempdir().unwrap();
        let bad = work.path().join("bad.deb");
        std::fs::write(&bad, b"not a deb").unwrap();
        let error = format!(
            "{:#}",
            unpack_deb(&bad, &work.path().join("out")).unwrap_err()
        );
        assert!(
            error.contains("bad.deb") && error.contains("no ar header"),
            "{error}"
        );
        let mut truncated = AR_MAGIC.to_vec();
        truncated.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "data.tar.xz", 0, 0, 0, 100644, 999
            )
            .as_bytes(),
        );
        truncated.extend_from_slice(b"short");
        let error = format!("{:#}", data_member(&truncated).unwrap_err());
        assert!(error.contains("truncated"), "{error}");
    }
}
