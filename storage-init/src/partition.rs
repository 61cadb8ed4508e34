//! Partition tables: the GPT (partition GUID and name, for `PARTUUID=` and `PARTLABEL=`) and the
//! MBR disk signature (`PARTUUID=xxxxxxxx-NN`). Pure functions over bytes read from the disk.

/// One partition as `bootfs` can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionId {
    /// 1-based, as the kernel numbers partitions (`/sys/class/block/<part>/partition`).
    pub number: u32,
    /// Lower-case GUID for GPT, `xxxxxxxx-NN` for MBR, as blkid's PARTUUID.
    pub partuuid: String,
    /// The GPT partition name; MBR partitions have none.
    pub partlabel: Option<String>,
}

/// UEFI 2.10 §5.3.2, GPT header: signature, then the fields we need.
mod gpt {
    pub const SIGNATURE: &[u8; 8] = b"EFI PART";
    pub const ENTRIES_LBA_OFFSET: usize = 72;
    pub const ENTRY_COUNT_OFFSET: usize = 80;
    pub const ENTRY_SIZE_OFFSET: usize = 84;
    /// UEFI 2.10 §5.3.3, partition entry: type GUID, unique GUID, …, name (UTF-16LE, 36 units).
    pub const ENTRY_MIN_SIZE: usize = 128;
    /// Entries larger than a 4 KiB block are not something any tool writes.
    pub const ENTRY_MAX_SIZE: usize = 4096;
    pub const UNIQUE_GUID_OFFSET: usize = 16;
    pub const NAME_OFFSET: usize = 56;
    pub const NAME_LEN: usize = 72;
    /// A larger table is corrupt or hostile; 128 entries is the usual size.
    pub const MAX_ENTRIES: u32 = 1024;
}

/// MBR layout (the classic PC boot sector): disk signature, four primary entries, 0x55AA.
mod mbr {
    pub const DISK_SIGNATURE_OFFSET: usize = 440;
    pub const ENTRIES_OFFSET: usize = 446;
    pub const ENTRY_SIZE: usize = 16;
    pub const TYPE_OFFSET: usize = 4;
    pub const BOOT_SIGNATURE_OFFSET: usize = 510;
    /// The protective MBR of a GPT disk has one partition of this type.
    pub const GPT_PROTECTIVE: u8 = 0xEE;
}

/// Where the GPT entries are, from the header at LBA 1: `(byte offset, byte length)`.
pub fn gpt_entries_location(header: &[u8], block_size: u64) -> Option<(u64, usize)> {
    if header.get(..8)? != gpt::SIGNATURE {
        return None;
    }
    let lba = u64::from_le_bytes(
        header
            .get(gpt::ENTRIES_LBA_OFFSET..gpt::ENTRIES_LBA_OFFSET + 8)?
            .try_into()
            .ok()?,
    );
    let count = le32(header, gpt::ENTRY_COUNT_OFFSET)?;
    let size = le32(header, gpt::ENTRY_SIZE_OFFSET)? as usize;
    if count > gpt::MAX_ENTRIES || !(gpt::ENTRY_MIN_SIZE..=gpt::ENTRY_MAX_SIZE).contains(&size) {
        return None;
    }
    Some((lba.checked_mul(block_size)?, count as usize * size))
}

/// Parses GPT entries (`entry_size` from the header: `len / count`); unused entries are skipped.
pub fn parse_gpt_entries(entries: &[u8], header: &[u8]) -> Vec<PartitionId> {
    let Some(size) = le32(header, gpt::ENTRY_SIZE_OFFSET).map(|s| s as usize) else {
        return Vec::new();
    };
    if size < gpt::ENTRY_MIN_SIZE {
        return Vec::new();
    }
    entries
        .chunks_exact(size)
        .enumerate()
        .filter(|(_, entry)| entry[..16].iter().any(|&b| b != 0))
        .map(|(index, entry)| {
            let guid = &entry[gpt::UNIQUE_GUID_OFFSET..gpt::UNIQUE_GUID_OFFSET + 16];
            let name_units: Vec<u16> = entry[gpt::NAME_OFFSET..gpt::NAME_OFFSET + gpt::NAME_LEN]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            PartitionId {
                number: index as u32 + 1,
                partuuid: format_gpt_guid(guid),
                partlabel: Some(String::from_utf16_lossy(&name_units)),
            }
        })
        .collect()
}

/// The four primary MBR partitions with blkid's `xxxxxxxx-NN` PARTUUIDs; empty when the sector
/// is no MBR or is a GPT's protective MBR.
pub fn parse_mbr(sector: &[u8]) -> Vec<PartitionId> {
    if sector.get(mbr::BOOT_SIGNATURE_OFFSET..mbr::BOOT_SIGNATURE_OFFSET + 2) != Some(&[0x55, 0xAA])
    {
        return Vec::new();
    }
    let Some(signature) = le32(sector, mbr::DISK_SIGNATURE_OFFSET) else {
        return Vec::new();
    };
    let types: Vec<u8> = (0..4)
        .map(|i| sector[mbr::ENTRIES_OFFSET + i * mbr::ENTRY_SIZE + mbr::TYPE_OFFSET])
        .collect();
    if types.contains(&mbr::GPT_PROTECTIVE) {
        return Vec::new();
    }
    types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t != 0)
        .map(|(i, _)| PartitionId {
            number: i as u32 + 1,
            partuuid: format!("{signature:08x}-{:02x}", i + 1),
            partlabel: None,
        })
        .collect()
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// GPT stores GUIDs mixed-endian: the first three fields little-endian, the rest as bytes.
fn format_gpt_guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const SECTOR: u64 = 512;

    /// Reads a real table written by util-linux's sfdisk (provisioned by `cargo xtask`).
    fn sfdisk_image(script: &str) -> Option<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!(
            "storage-init-part-{}-{}",
            std::process::id(),
            script.len()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let image = dir.join("disk.img");
        std::fs::write(&image, vec![0u8; 8 << 20]).ok()?;
        let bytes = crate::test_tools::run(Command::new("sfdisk").arg("-q").arg(&image), script)
            .then(|| std::fs::read(&image).expect("read the disk image"));
        let _ = std::fs::remove_dir_all(&dir); // best effort: a leftover temp dir is harmless
        bytes
    }

    #[test]
    fn gpt_written_by_sfdisk() {
        let script = "label: gpt\n\
            start=2048, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=9A8B7C6D-5E4F-4321-8765-43210FEDCBA9, name=\"boot\"\n\
            start=6144, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=11111111-2222-4333-8444-555555555555, name=\"root fs\"\n";
        let Some(disk) = sfdisk_image(script) else {
            return;
        };
        let header = &disk[SECTOR as usize..2 * SECTOR as usize];
        let (offset, len) = gpt_entries_location(header, SECTOR).expect("a GPT header");
        let parts = parse_gpt_entries(&disk[offset as usize..offset as usize + len], header);
        assert_eq!(
            parts,
            [
                PartitionId {
                    number: 1,
                    partuuid: "9a8b7c6d-5e4f-4321-8765-43210fedcba9".into(),
                    partlabel: Some("boot".into())
                },
                PartitionId {
                    number: 2,
                    partuuid: "11111111-2222-4333-8444-555555555555".into(),
                    partlabel: Some("root fs".into())
                },
            ]
        );
        assert_eq!(
            parse_mbr(&disk[..SECTOR as usize]),
            [],
            "a protective MBR names no partitions"
        );
    }

    #[test]
    fn mbr_written_by_sfdisk() {
        let script = "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=4096, type=83\nstart=6144, size=4096, type=83\n";
        let Some(disk) = sfdisk_image(script) else {
            return;
        };
        let parts = parse_mbr(&disk[..SECTOR as usize]);
        let uuids: Vec<&str> = parts.iter().map(|p| p.partuuid.as_str()).collect();
        assert_eq!(uuids, ["1234abcd-01", "1234abcd-02"]);
        assert_eq!(
            gpt_entries_location(&disk[SECTOR as usize..2 * SECTOR as usize], SECTOR),
            None
        );
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut header = vec![0u8; 512];
        header[..8].copy_from_slice(gpt::SIGNATURE);
        header[gpt::ENTRIES_LBA_OFFSET..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
        header[gpt::ENTRY_COUNT_OFFSET..][..4].copy_from_slice(&128u32.to_le_bytes());
        header[gpt::ENTRY_SIZE_OFFSET..][..4].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(gpt_entries_location(&header, 512), None, "offset overflow");
        header[gpt::ENTRIES_LBA_OFFSET..][..8].copy_from_slice(&2u64.to_le_bytes());
        header[gpt::ENTRY_COUNT_OFFSET..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            gpt_entries_location(&header, 512),
            None,
            "absurd entry count"
        );
        assert_eq!(
            gpt_entries_location(&header[..40], 512),
            None,
            "truncated header"
        );
        assert_eq!(parse_mbr(&[0u8; 100]), []);
    }
}
