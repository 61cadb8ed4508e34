//! A GUID Partition Table writer (UEFI spec 2.10 §5): the protective MBR, the primary header
//! and entry array at the start of the disk, and their backup copies at its end.

use crate::guid::Guid;

/// The usual logical block size: QEMU's virtio-blk, NVMe and SCSI disks present 512-byte
/// sectors unless told otherwise (4096 for a 4Kn drive). The tables are laid out in whatever
/// the disk's is: LBA n starts at byte n × sector size.
#[cfg(test)]
pub(crate) const SECTOR_SIZE: u64 = 512;

/// Number of entries in the partition entry array: the minimum the UEFI spec allows
/// (§5.3.1: "a minimum of 16,384 bytes of space must be reserved"), 128 entries of 128 bytes.
const ENTRY_COUNT: u32 = 128;

/// Size of one partition entry (UEFI spec §5.3.3, `SizeOfPartitionEntry`).
const ENTRY_SIZE: u32 = 128;

/// Bytes of the entry array: 128 × 128.
const ENTRY_ARRAY_BYTES: u64 = ENTRY_COUNT as u64 * ENTRY_SIZE as u64;

/// Sectors taken by the entry array: 32 of 512 bytes, 4 of 4096.
const fn entry_array_sectors(sector_size: u64) -> u64 {
    ENTRY_ARRAY_BYTES / sector_size
}

/// Size of the header fields the CRC covers (UEFI spec §5.3.2, `HeaderSize`).
const HEADER_SIZE: u32 = 92;

/// "EFI PART", the header signature (UEFI spec §5.3.2).
const HEADER_SIGNATURE: &[u8; 8] = b"EFI PART";

/// GPT revision 1.0 (UEFI spec §5.3.2).
const HEADER_REVISION: u32 = 0x0001_0000;

/// Partition name length in UTF-16 code units (UEFI spec §5.3.3, 72 bytes).
pub(crate) const NAME_UNITS: usize = 36;

/// Protective MBR: the partition record offset, the OS type of a GPT protective partition and
/// the boot signature (UEFI spec §5.2.3, table 5-2 and 5-3).
const MBR_PARTITION_RECORD_OFFSET: usize = 446;
const MBR_PROTECTIVE_OS_TYPE: u8 = 0xEE;
const MBR_SIGNATURE_OFFSET: usize = 510;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// One partition, in sectors; `last_lba` is inclusive as in the on-disk entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GptEntry {
    pub(crate) type_guid: Guid,
    pub(crate) unique_guid: Guid,
    pub(crate) first_lba: u64,
    pub(crate) last_lba: u64,
    pub(crate) name: String,
}

/// The bytes to place at the start and at the end of a disk of `total_sectors` sectors.
#[derive(Debug)]
pub(crate) struct GptImage {
    /// Protective MBR, primary header and primary entry array: offset 0.
    pub(crate) head: Vec<u8>,
    /// Backup entry array and backup header: the last sectors of the disk.
    pub(crate) tail: Vec<u8>,
    /// Byte offset of `tail`.
    pub(crate) tail_offset: u64,
}

/// The first sector partitions may use: MBR, header, entry array.
pub(crate) const fn first_usable_lba(sector_size: u64) -> u64 {
    2 + entry_array_sectors(sector_size)
}

/// Sectors the backup structures need at the end of the disk: entry array and header.
pub(crate) const fn backup_sectors(sector_size: u64) -> u64 {
    entry_array_sectors(sector_size) + 1
}

/// Lays out the GPT structures for a disk of `total_sectors` sectors of `sector_size` bytes;
/// the caller has checked that entries fit between [`first_usable_lba`] and
/// `total_sectors - backup_sectors - 1` and that names fit.
pub(crate) fn build(
    disk_guid: Guid,
    total_sectors: u64,
    sector_size: u64,
    entries: &[GptEntry],
) -> GptImage {
    let entry_array = entry_array(entries);
    let entries_crc = crc32fast::hash(&entry_array);
    let last_lba = total_sectors - 1;
    let backup_entries_lba = last_lba - entry_array_sectors(sector_size);
    let layout = HeaderLayout {
        disk_guid,
        first_usable: first_usable_lba(sector_size),
        last_usable: backup_entries_lba - 1,
        entries_crc,
        sector_size,
    };
    let primary = header(&layout, 1, last_lba, 2);
    let backup = header(&layout, last_lba, 1, backup_entries_lba);

    let mut head = protective_mbr(total_sectors, sector_size);
    head.extend_from_slice(&primary);
    head.extend_from_slice(&entry_array);

    let mut tail = entry_array;
    tail.extend_from_slice(&backup);
    GptImage {
        head,
        tail,
        tail_offset: backup_entries_lba * sector_size,
    }
}

/// Fields both headers share.
struct HeaderLayout {
    disk_guid: Guid,
    first_usable: u64,
    last_usable: u64,
    entries_crc: u32,
    sector_size: u64,
}

/// One header sector (UEFI spec §5.3.2, table 5-5), CRC filled in.
fn header(layout: &HeaderLayout, my_lba: u64, alternate_lba: u64, entries_lba: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(layout.sector_size as usize);
    h.extend_from_slice(HEADER_SIGNATURE);
    h.extend_from_slice(&HEADER_REVISION.to_le_bytes());
    h.extend_from_slice(&HEADER_SIZE.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // HeaderCRC32, computed below
    h.extend_from_slice(&0u32.to_le_bytes()); // Reserved
    h.extend_from_slice(&my_lba.to_le_bytes());
    h.extend_from_slice(&alternate_lba.to_le_bytes());
    h.extend_from_slice(&layout.first_usable.to_le_bytes());
    h.extend_from_slice(&layout.last_usable.to_le_bytes());
    h.extend_from_slice(&layout.disk_guid.to_gpt_bytes());
    h.extend_from_slice(&entries_lba.to_le_bytes());
    h.extend_from_slice(&ENTRY_COUNT.to_le_bytes());
    h.extend_from_slice(&ENTRY_SIZE.to_le_bytes());
    h.extend_from_slice(&layout.entries_crc.to_le_bytes());
    debug_assert_eq!(h.len(), HEADER_SIZE as usize);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h.resize(layout.sector_size as usize, 0);
    h
}

/// The whole entry array, unused entries zero (UEFI spec §5.3.3, table 5-6).
fn entry_array(entries: &[GptEntry]) -> Vec<u8> {
    let mut array = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (slot, entry) in array.chunks_mut(ENTRY_SIZE as usize).zip(entries) {
        slot[0..16].copy_from_slice(&entry.type_guid.to_gpt_bytes());
        slot[16..32].copy_from_slice(&entry.unique_guid.to_gpt_bytes());
        slot[32..40].copy_from_slice(&entry.first_lba.to_le_bytes());
        slot[40..48].copy_from_slice(&entry.last_lba.to_le_bytes());
        // Attributes (bytes 48..56) stay zero.
        for (unit, bytes) in entry.name.encode_utf16().zip(slot[56..].chunks_mut(2)) {
            bytes.copy_from_slice(&unit.to_le_bytes());
        }
    }
    array
}

/// Sector 0: an MBR with one partition of type 0xEE covering the disk (UEFI spec §5.2.3),
/// padded to the sector size.
fn protective_mbr(total_sectors: u64, sector_size: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; sector_size as usize];
    let size_in_lba = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    let record = &mut mbr[MBR_PARTITION_RECORD_OFFSET..MBR_PARTITION_RECORD_OFFSET + 16];
    record[0] = 0; // BootIndicator: not bootable
    record[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // StartingCHS: the spec's 0x000200
    record[4] = MBR_PROTECTIVE_OS_TYPE;
    record[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // EndingCHS: the spec's "not representable"
    record[8..12].copy_from_slice(&1u32.to_le_bytes()); // StartingLBA
    record[12..16].copy_from_slice(&size_in_lba.to_le_bytes());
    mbr[MBR_SIGNATURE_OFFSET..MBR_SIGNATURE_OFFSET + 2].copy_from_slice(&MBR_SIGNATURE);
    mbr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_partition_image() -> GptImage {
        let entry = GptEntry {
            type_guid: Guid::LINUX_FILESYSTEM,
            unique_guid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            first_lba: 2048,
            last_lba: 4095,
            name: "boot".to_owned(),
        };
        let disk = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".parse().unwrap();
        build(disk, 8192, SECTOR_SIZE, &[entry])
    }

    #[test]
    fn head_and_tail_have_the_expected_sizes() {
        let image = one_partition_image();
        assert_eq!(
            image.head.len() as u64,
            first_usable_lba(SECTOR_SIZE) * SECTOR_SIZE
        );
        assert_eq!(
            image.tail.len() as u64,
            backup_sectors(SECTOR_SIZE) * SECTOR_SIZE
        );
        assert_eq!(
            image.tail_offset + image.tail.len() as u64,
            8192 * SECTOR_SIZE
        );
    }

    /// A 4Kn disk: the header in LBA 1 is at byte 4096, the entry array takes 4 sectors.
    #[test]
    fn four_k_sectors() {
        let entry = GptEntry {
            type_guid: Guid::LINUX_FILESYSTEM,
            unique_guid: Guid::NIL,
            first_lba: 256,
            last_lba: 511,
            name: "boot".to_owned(),
        };
        let image = build(Guid::NIL, 1024, 4096, &[entry]);
        assert_eq!(first_usable_lba(4096), 6);
        assert_eq!(image.head.len(), 6 * 4096);
        assert_eq!(&image.head[4096..4104], HEADER_SIGNATURE);
        assert_eq!(&image.head[510..512], MBR_SIGNATURE);
        assert_eq!(image.tail.len(), 5 * 4096);
        assert_eq!(image.tail_offset + image.tail.len() as u64, 1024 * 4096);
        // FirstUsableLBA in the header counts 4096-byte sectors.
        assert_eq!(
            u64::from_le_bytes(image.head[4096 + 40..4096 + 48].try_into().unwrap()),
            6
        );
    }

    #[test]
    fn header_crc_verifies() {
        let image = one_partition_image();
        for header in [
            &image.head[512..1024],
            &image.tail[image.tail.len() - 512..],
        ] {
            let mut zeroed = header[..HEADER_SIZE as usize].to_vec();
            let stored = u32::from_le_bytes(zeroed[16..20].try_into().unwrap());
            zeroed[16..20].fill(0);
            assert_eq!(crc32fast::hash(&zeroed), stored);
            assert_eq!(&header[0..8], HEADER_SIGNATURE);
        }
    }

    #[test]
    fn name_is_utf16le() {
        let image = one_partition_image();
        let entry = &image.head[1024..1024 + ENTRY_SIZE as usize];
        assert_eq!(&entry[56..64], &[b'b', 0, b'o', 0, b'o', 0, b't', 0]);
        assert_eq!(entry[64], 0);
    }
}
