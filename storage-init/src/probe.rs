//! Superblock probing: recognises a filesystem from the first bytes of a block device and reads
//! its UUID and label. Pure functions over byte slices; the device I/O is in `blockdev`.

use std::fmt;

/// How many bytes from the start of a device the probes of [`probe`] need (ext4's and erofs'
/// superblocks end at 2048).
pub const PROBE_LEN: usize = 2048;
/// Where btrfs keeps its superblock, and how much of it [`probe_btrfs`] needs.
pub const BTRFS_SUPERBLOCK_OFFSET: u64 = 64 * 1024;
pub const BTRFS_PROBE_LEN: usize = 4096;

/// ext2/3/4 superblock layout (Linux `fs/ext4/ext4.h`, `struct ext4_super_block`): the superblock
/// starts 1024 bytes into the device.
mod ext4 {
    pub const SUPERBLOCK_OFFSET: usize = 1024;
    pub const MAGIC_OFFSET: usize = 0x38;
    pub const MAGIC: u16 = 0xEF53;
    pub const UUID_OFFSET: usize = 0x68;
    pub const LABEL_OFFSET: usize = 0x78;
    pub const LABEL_LEN: usize = 16;
    /// `s_feature_compat`, `s_feature_incompat`: tell ext2, ext3 and ext4 apart.
    pub const FEATURE_COMPAT_OFFSET: usize = 0x5C;
    pub const FEATURE_INCOMPAT_OFFSET: usize = 0x60;
    pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
    /// Incompat features only ext4 has (extents, 64bit, flex_bg, …): anything above ext3's set.
    pub const INCOMPAT_EXT3_MASK: u32 = 0x0002 | 0x0004 | 0x0008; // filetype, recover, journal_dev
}

/// EROFS on-disk superblock (Linux `fs/erofs/erofs_fs.h`, `struct erofs_super_block`): 1024
/// bytes into the image, like ext4's.
mod erofs {
    pub const SUPERBLOCK_OFFSET: usize = 1024;
    pub const MAGIC: u32 = 0xE0F5_E1E2;
    pub const UUID_OFFSET: usize = 48;
    pub const VOLUME_NAME_OFFSET: usize = 64;
    pub const VOLUME_NAME_LEN: usize = 16;
}

/// FAT boot sector (Microsoft FAT specification, "BPB" and the extended boot record; the
/// extended fields sit at 0x24 on FAT12/16 and at 0x40 on FAT32).
mod fat {
    pub const BYTES_PER_SECTOR_OFFSET: usize = 0x0B;
    pub const SECTORS_PER_FAT16_OFFSET: usize = 0x16;
    pub const EXTENDED_FAT16: usize = 0x24;
    pub const EXTENDED_FAT32: usize = 0x40;
    /// Offsets inside the extended boot record.
    pub const BOOT_SIGNATURE: usize = 2;
    pub const VOLUME_ID: usize = 3;
    pub const LABEL: usize = 7;
    pub const LABEL_LEN: usize = 11;
    pub const FS_TYPE: usize = 18;
    /// `0x29`: the volume id, label and type fields are present.
    pub const EXTENDED_SIGNATURE: u8 = 0x29;
    pub const SECTOR_SIGNATURE_OFFSET: usize = 510;
    /// What mkfs.fat writes when no label is given.
    pub const NO_LABEL: &str = "NO NAME";
}

/// XFS superblock (`struct xfs_dsb` in `fs/xfs/libxfs/xfs_format.h`), at the device's start.
mod xfs {
    pub const MAGIC: &[u8; 4] = b"XFSB";
    pub const UUID_OFFSET: usize = 32;
    pub const LABEL_OFFSET: usize = 108;
    pub const LABEL_LEN: usize = 12;
}

/// Btrfs superblock (`struct btrfs_super_block` in `include/uapi/linux/btrfs_tree.h`), at
/// 64 KiB.
mod btrfs {
    pub const FSID_OFFSET: usize = 32;
    pub const MAGIC_OFFSET: usize = 64;
    pub const MAGIC: &[u8; 8] = b"_BHRfS_M";
    pub const LABEL_OFFSET: usize = 299;
    pub const LABEL_LEN: usize = 256;
}

/// A filesystem found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The type name `mount` takes: "ext2", "ext3", "ext4".
    pub fstype: &'static str,
    /// Lower-case UUID as blkid prints it.
    pub uuid: String,
    pub label: String,
}

impl fmt::Display for Superblock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} UUID={}", self.fstype, self.uuid)?;
        if !self.label.is_empty() {
            write!(f, " LABEL={}", self.label)?;
        }
        Ok(())
    }
}

/// Recognises the filesystem at the start of a file (an image): reads only its first
/// [`PROBE_LEN`] bytes.
pub fn probe_file(path: &std::path::Path) -> std::io::Result<Option<Superblock>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(PROBE_LEN);
    std::fs::File::open(path)?
        .take(PROBE_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(probe(&head))
}

/// Recognises the filesystem at the start of `head` (the first [`PROBE_LEN`] bytes or fewer).
pub fn probe(head: &[u8]) -> Option<Superblock> {
    probe_ext(head)
        .or_else(|| probe_erofs(head))
        .or_else(|| probe_xfs(head))
        .or_else(|| probe_fat(head))
}

/// Recognises btrfs from the [`BTRFS_PROBE_LEN`] bytes at [`BTRFS_SUPERBLOCK_OFFSET`].
pub fn probe_btrfs(block: &[u8]) -> Option<Superblock> {
    if block.get(btrfs::MAGIC_OFFSET..btrfs::MAGIC_OFFSET + 8)? != btrfs::MAGIC {
        return None;
    }
    let uuid = format_uuid(block.get(btrfs::FSID_OFFSET..btrfs::FSID_OFFSET + 16)?);
    let label =
        nul_terminated(block.get(btrfs::LABEL_OFFSET..btrfs::LABEL_OFFSET + btrfs::LABEL_LEN)?);
    Some(Superblock {
        fstype: "btrfs",
        uuid,
        label,
    })
}

fn probe_xfs(head: &[u8]) -> Option<Superblock> {
    if head.get(..4)? != xfs::MAGIC {
        return None;
    }
    let uuid = format_uuid(head.get(xfs::UUID_OFFSET..xfs::UUID_OFFSET + 16)?);
    let label = nul_terminated(head.get(xfs::LABEL_OFFSET..xfs::LABEL_OFFSET + xfs::LABEL_LEN)?);
    Some(Superblock {
        fstype: "xfs",
        uuid,
        label,
    })
}

/// FAT12/16/32. The UUID is the volume id as blkid prints it (`1234-ABCD`); the label is the
/// boot sector's (blkid prefers the root directory's volume entry, which mkfs.fat keeps equal).
fn probe_fat(head: &[u8]) -> Option<Superblock> {
    if head.get(fat::SECTOR_SIGNATURE_OFFSET..fat::SECTOR_SIGNATURE_OFFSET + 2)? != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes(
        head.get(fat::BYTES_PER_SECTOR_OFFSET..fat::BYTES_PER_SECTOR_OFFSET + 2)?
            .try_into()
            .ok()?,
    );
    if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
        return None;
    }
    // FAT32 has no 16-bit FAT size; its extended record sits further on.
    let sectors_per_fat16 = u16::from_le_bytes(
        head.get(fat::SECTORS_PER_FAT16_OFFSET..fat::SECTORS_PER_FAT16_OFFSET + 2)?
            .try_into()
            .ok()?,
    );
    let ext = if sectors_per_fat16 == 0 {
        fat::EXTENDED_FAT32
    } else {
        fat::EXTENDED_FAT16
    };
    let record = head.get(ext..ext + fat::FS_TYPE + 8)?;
    if record[fat::BOOT_SIGNATURE] != fat::EXTENDED_SIGNATURE
        || !record[fat::FS_TYPE..].starts_with(b"FAT")
    {
        return None;
    }
    let id = u32::from_le_bytes(record[fat::VOLUME_ID..fat::VOLUME_ID + 4].try_into().ok()?);
    let label = String::from_utf8_lossy(&record[fat::LABEL..fat::LABEL + fat::LABEL_LEN])
        .trim_end()
        .to_owned();
    let label = if label == fat::NO_LABEL {
        String::new()
    } else {
        label
    };
    Some(Superblock {
        fstype: "vfat",
        uuid: format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF),
        label,
    })
}

fn probe_erofs(head: &[u8]) -> Option<Superblock> {
    let sb = head.get(erofs::SUPERBLOCK_OFFSET..PROBE_LEN)?;
    if u32::from_le_bytes(sb[..4].try_into().ok()?) != erofs::MAGIC {
        return None;
    }
    let uuid = format_uuid(&sb[erofs::UUID_OFFSET..erofs::UUID_OFFSET + 16]);
    let label = nul_terminated(
        &sb[erofs::VOLUME_NAME_OFFSET..erofs::VOLUME_NAME_OFFSET + erofs::VOLUME_NAME_LEN],
    );
    Some(Superblock {
        fstype: "erofs",
        uuid,
        label,
    })
}

fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn probe_ext(head: &[u8]) -> Option<Superblock> {
    let sb = head.get(ext4::SUPERBLOCK_OFFSET..PROBE_LEN)?;
    let magic = u16::from_le_bytes([sb[ext4::MAGIC_OFFSET], sb[ext4::MAGIC_OFFSET + 1]]);
    if magic != ext4::MAGIC {
        return None;
    }
    let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let compat = le32(ext4::FEATURE_COMPAT_OFFSET);
    let incompat = le32(ext4::FEATURE_INCOMPAT_OFFSET);
    let fstype = if incompat & !ext4::INCOMPAT_EXT3_MASK != 0 {
        "ext4"
    } else if compat & ext4::COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    let uuid = format_uuid(&sb[ext4::UUID_OFFSET..ext4::UUID_OFFSET + 16]);
    let label = nul_terminated(&sb[ext4::LABEL_OFFSET..ext4::LABEL_OFFSET + ext4::LABEL_LEN]);
    Some(Superblock {
        fstype,
        uuid,
        label,
    })
}

/// Formats 16 bytes in on-disk order as `8-4-4-4-12` lower-case hex (ext4 stores the UUID as a
/// plain byte string, so no GUID byte swapping applies).
fn format_uuid(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the first 2 KiB of an ext filesystem with the given features.
    fn ext_head(compat: u32, incompat: u32, uuid: [u8; 16], label: &[u8]) -> Vec<u8> {
        let mut head = vec![0u8; PROBE_LEN];
        let sb = &mut head[ext4::SUPERBLOCK_OFFSET..];
        sb[ext4::MAGIC_OFFSET..ext4::MAGIC_OFFSET + 2].copy_from_slice(&ext4::MAGIC.to_le_bytes());
        sb[ext4::FEATURE_COMPAT_OFFSET..][..4].copy_from_slice(&compat.to_le_bytes());
        sb[ext4::FEATURE_INCOMPAT_OFFSET..][..4].copy_from_slice(&incompat.to_le_bytes());
        sb[ext4::UUID_OFFSET..][..16].copy_from_slice(&uuid);
        sb[ext4::LABEL_OFFSET..][..label.len()].copy_from_slice(label);
        head
    }

    const UUID: [u8; 16] = [
        0x3f, 0x1b, 0x2c, 0x4d, 0x5e, 0x6f, 0x47, 0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7,
        0x08,
    ];

    #[test]
    fn ext_variants() {
        let check = |compat, incompat, fstype| {
            let sb = probe(&ext_head(compat, incompat, UUID, b"boot")).expect("probed");
            assert_eq!(sb.fstype, fstype);
            assert_eq!(sb.uuid, "3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708");
            assert_eq!(sb.label, "boot");
        };
        check(0, 0x2, "ext2");
        check(0x4, 0x2, "ext3");
        check(0x4, 0x2 | 0x40 | 0x200, "ext4"); // extents, flex_bg
    }

    #[test]
    fn full_length_label_and_garbage() {
        let sb = probe(&ext_head(0, 0x40, UUID, b"0123456789abcdef")).expect("probed");
        assert_eq!(sb.label, "0123456789abcdef");
        assert_eq!(probe(&[0u8; PROBE_LEN]), None);
        assert_eq!(
            probe(&[0xffu8; 100]),
            None,
            "short reads are not a filesystem"
        );
    }

    /// Makes an image with `mkfs` in a temporary directory, probes it, and checks the result
    /// against `blkid -p` on the same file. Skips (saying so) when the mkfs tool is missing.
    fn check_against_blkid(name: &str, size: &str, mkfs: &[&str]) {
        let dir = std::env::temp_dir().join(format!("storage-init-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let image = dir.join("fs.img");
        let sized = std::process::Command::new("truncate")
            .args(["-s", size])
            .arg(&image)
            .status();
        assert!(
            sized.is_ok_and(|s| s.success()),
            "truncate {}",
            image.display()
        );
        if !crate::test_tools::run(
            std::process::Command::new(mkfs[0])
                .args(&mkfs[1..])
                .arg(&image),
            "",
        ) {
            let _ = std::fs::remove_dir_all(&dir); // best effort: a leftover temp dir is harmless
            return;
        }
        let mut file = std::fs::File::open(&image).expect("open image");
        let mut head = vec![0u8; PROBE_LEN];
        std::io::Read::read_exact(&mut file, &mut head).expect("read head");
        let found = probe(&head).or_else(|| {
            let mut block = vec![0u8; BTRFS_PROBE_LEN];
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(BTRFS_SUPERBLOCK_OFFSET))
                .ok()?;
            std::io::Read::read_exact(&mut file, &mut block).ok()?;
            probe_btrfs(&block)
        });
        let blkid = std::process::Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&image)
            .output()
            .expect("blkid");
        let _ = std::fs::remove_dir_all(&dir); // best effort: a leftover temp dir is harmless
        let blkid = String::from_utf8_lossy(&blkid.stdout).into_owned();
        let field = |key: &str| {
            blkid
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or("")
                .to_owned()
        };
        let found = found.unwrap_or_else(|| panic!("{name}: not recognised; blkid says {blkid}"));
        assert_eq!(found.fstype, field("TYPE"), "{name}");
        assert_eq!(found.uuid, field("UUID"), "{name}");
        assert_eq!(found.label, field("LABEL"), "{name}");
    }

    #[test]
    fn filesystems_probe_as_blkid_sees_them() {
        check_against_blkid(
            "vfat16",
            "64M",
            &["mkfs.vfat", "-i", "1234ABCD", "-n", "MYBOOT"],
        );
        check_against_blkid("vfat12", "8M", &["mkfs.vfat", "-F", "12", "-i", "DEADBEEF"]);
        check_against_blkid(
            "vfat32",
            "64M",
            &["mkfs.vfat", "-F", "32", "-i", "0BADF00D", "-n", "ESP"],
        );
        check_against_blkid(
            "xfs",
            "300M",
            &[
                "mkfs.xfs",
                "-q",
                "-m",
                "uuid=0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9",
                "-L",
                "xboot",
            ],
        );
        check_against_blkid(
            "btrfs",
            "128M",
            &[
                "mkfs.btrfs",
                "-q",
                "-U",
                "11111111-2222-4333-8444-555555555555",
                "-L",
                "bboot",
            ],
        );
        check_against_blkid(
            "ext4",
            "8M",
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-U",
                "3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708",
                "-L",
                "eboot",
            ],
        );
        check_against_blkid("vfat-no-label", "1M", &["mkfs.vfat", "-i", "00000001"]);
    }

    #[test]
    fn real_mkfs_erofs_image() {
        let dir = std::env::temp_dir().join(format!("storage-init-erofs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tree")).expect("create a temporary directory");
        std::fs::write(dir.join("tree/file"), b"content").expect("write a file");
        let image = dir.join("image.erofs");
        // erofs-utils 1.5 has no volume label option: the label stays empty.
        let mut mkfs = std::process::Command::new("mkfs.erofs");
        mkfs.args(["--quiet", "-U", "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"])
            .arg(&image)
            .arg(dir.join("tree"));
        if !crate::test_tools::run(&mut mkfs, "") {
            return;
        }
        let bytes = std::fs::read(&image).expect("read image");
        let _ = std::fs::remove_dir_all(&dir); // best effort: a leftover temp dir is harmless
        let sb = probe(&bytes[..PROBE_LEN]).expect("mkfs.erofs output probes");
        assert_eq!(
            sb,
            Superblock {
                fstype: "erofs",
                uuid: "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9".into(),
                label: String::new()
            }
        );
    }

    #[test]
    fn real_mkfs_ext4_image() {
        // A real superblock from mkfs.ext4, when the tool is there (it is on every CI machine of
        // this project: e2fsprogs is provisioned).
        let dir = std::env::temp_dir().join(format!("storage-init-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let image = dir.join("fs.img");
        let mut mkfs = std::process::Command::new("mkfs.ext4");
        mkfs.args([
            "-q",
            "-F",
            "-U",
            "3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708",
            "-L",
            "bootfs",
        ])
        .arg(&image)
        .arg("8M");
        if !crate::test_tools::run(&mut mkfs, "") {
            return;
        }
        let bytes = std::fs::read(&image).expect("read image");
        let _ = std::fs::remove_dir_all(&dir); // best effort: a leftover temp dir is harmless
        let sb = probe(&bytes[..PROBE_LEN]).expect("mkfs.ext4 output probes");
        assert_eq!(
            sb,
            Superblock {
                fstype: "ext4",
                uuid: "3f1b2c4d-5e6f-4780-91a2-b3c4d5e6f708".into(),
                label: "bootfs".into()
            }
        );
    }
}
