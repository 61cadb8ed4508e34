//! The dm-verity layout of an image, shared by the builder (which writes the hash tree) and
//! storage-init (which hands it to the kernel's `verity` target). Pure arithmetic over the
//! kernel's rules (`drivers/md/dm-verity-target.c`, format version 1).
//!
//! The image file, every size a multiple of [`BLOCK_SIZE`]:
//!
//! ```text
//! block 0 .. data_blocks          the erofs image itself, as mkfs.erofs wrote it
//! block data_blocks               veritysetup's 512-byte superblock, zero-padded to a block
//! block data_blocks + 1 ..        the hash tree, top level first, level 0 (data hashes) last
//! ```
//!
//! `veritysetup verify <image> <image> <root hash> --hash-offset <data_blocks * 4096>` accepts
//! it. The parameters storage-init needs (root hash, salt, data blocks) come from its config,
//! never from the superblock: the config is the signed part.

use std::fmt;

/// Data and hash block size: the page size, and erofs's block size.
pub const BLOCK_SIZE: u64 = 4096;
/// The one hash algorithm: SHA-256, 32-byte digests, 128 of them per hash block.
pub const ALGORITHM: &str = "sha256";
pub const DIGEST_BYTES: usize = 32;
const HASHES_PER_BLOCK_BITS: u32 = 7;

/// What dm-verity is told about one image: the config's `verity_*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// `verity_root_hash`: 64 lower-case hex digits.
    pub root_hash: String,
    /// `verity_salt`: lower-case hex, at most 256 bytes.
    pub salt: String,
    /// `verity_data_blocks`: the image's size in 4096-byte blocks, before the hash tree.
    pub data_blocks: u64,
}

/// What the kernel does when a block read after the handover fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    /// The read fails with EIO (the target's default). storage-init's own reads run in this
    /// mode, so what it reads itself turns into a FATAL line naming the image.
    Eio,
    /// `panic_on_corruption`: the kernel panics (then follows `panic=`). Chosen over
    /// `restart_on_corruption` because a panic leaves the reason on the console and lets the
    /// machine's own `panic=` policy decide between halting and rebooting; a restart on an
    /// image that stays corrupt would loop with nothing on the screen.
    Panic,
}

/// Where each level of the hash tree lies, in blocks from the start of the image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLayout {
    /// Level 0 (hashes of data blocks) first; the last level is a single block.
    pub levels: Vec<Level>,
    /// The first block of the tree (after the superblock): the target's `hash_start_block`.
    pub hash_start_block: u64,
    /// One past the tree's last block: the image file must be at least this many blocks.
    pub end_block: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub first_block: u64,
    pub blocks: u64,
}

impl TreeLayout {
    /// The layout the kernel computes for `data_blocks` (as `verity_ctr` does).
    pub fn new(data_blocks: u64) -> TreeLayout {
        let mut level_count = 0u32;
        if data_blocks > 0 {
            while HASHES_PER_BLOCK_BITS * level_count < 64
                && (data_blocks - 1) >> (HASHES_PER_BLOCK_BITS * level_count) != 0
            {
                level_count += 1;
            }
        }
        let blocks_at = |level: u32| {
            let shift = (level + 1) * HASHES_PER_BLOCK_BITS;
            if shift >= 64 {
                1
            } else {
                (data_blocks + (1u64 << shift) - 1) >> shift
            }
        };
        let hash_start_block = data_blocks + 1;
        let mut levels = vec![
            Level {
                first_block: 0,
                blocks: 0
            };
            level_count as usize
        ];
        // The top level is stored first.
        let mut position = hash_start_block;
        for level in (0..level_count).rev() {
            let blocks = blocks_at(level);
            levels[level as usize] = Level {
                first_block: position,
                blocks,
            };
            position += blocks;
        }
        TreeLayout {
            levels,
            hash_start_block,
            end_block: position,
        }
    }

    /// The smallest image file holding data, superblock and tree, in bytes.
    pub fn image_bytes(&self) -> u64 {
        self.end_block * BLOCK_SIZE
    }
}

impl Verity {
    /// The `verity` target's parameters for an image whose data and tree are both on `device`
    /// (`major:minor`), in dm-verity's table syntax.
    pub fn table(&self, device: &str, on_corruption: OnCorruption) -> String {
        let layout = TreeLayout::new(self.data_blocks);
        let mut table = format!(
            "1 {device} {device} {BLOCK_SIZE} {BLOCK_SIZE} {} {} {ALGORITHM} {} {}",
            self.data_blocks,
            layout.hash_start_block,
            self.root_hash,
            if self.salt.is_empty() {
                "-"
            } else {
                &self.salt
            },
        );
        if on_corruption == OnCorruption::Panic {
            table.push_str(" 1 panic_on_corruption");
        }
        table
    }

    /// The size of the verified device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * (BLOCK_SIZE / 512)
    }
}

impl fmt::Display for Verity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root hash {}", self.root_hash)
    }
}

/// `value` is lower- or upper-case hex of an even length in `bytes`; returns it lower-cased.
pub fn parse_hex(value: &str, bytes: std::ops::RangeInclusive<usize>) -> Option<String> {
    let ok = value.len().is_multiple_of(2)
        && bytes.contains(&(value.len() / 2))
        && value.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data_blocks: u64, levels: &[(u64, u64)], end_block: u64) {
        let layout = TreeLayout::new(data_blocks);
        let got: Vec<(u64, u64)> = layout
            .levels
            .iter()
            .map(|l| (l.first_block, l.blocks))
            .collect();
        assert_eq!(got, levels, "levels for {data_blocks} data blocks");
        assert_eq!(layout.end_block, end_block, "end for {data_blocks}");
        assert_eq!(layout.hash_start_block, data_blocks + 1);
    }

    #[test]
    fn tree_layouts_follow_the_kernel() {
        // One data block: no tree, the root hash is the block's own.
        check(1, &[], 2);
        check(2, &[(3, 1)], 4);
        check(128, &[(129, 1)], 130);
        // 129 blocks: two hash blocks at level 0, one above them, stored first.
        check(129, &[(131, 2), (130, 1)], 133);
        check(
            128 * 128 + 1,
            &[(16389, 129), (16387, 2), (16386, 1)],
            16518,
        );
    }

    #[test]
    fn table_lines() {
        let verity = Verity {
            root_hash: "ab".repeat(32),
            salt: "cd".repeat(32),
            data_blocks: 129,
        };
        assert_eq!(
            verity.table("7:0", OnCorruption::Eio),
            format!(
                "1 7:0 7:0 4096 4096 129 130 sha256 {} {}",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
        assert!(
            verity
                .table("7:0", OnCorruption::Panic)
                .ends_with(" 1 panic_on_corruption")
        );
        let unsalted = Verity {
            salt: String::new(),
            ..verity
        };
        assert!(unsalted.table("7:0", OnCorruption::Eio).ends_with(" -"));
        assert_eq!(unsalted.sectors(), 129 * 8);
    }

    #[test]
    fn hex_values() {
        assert_eq!(parse_hex("ABcd", 1..=2).as_deref(), Some("abcd"));
        assert_eq!(parse_hex("abc", 1..=2), None);
        assert_eq!(parse_hex("zz", 1..=2), None);
        assert_eq!(parse_hex("", 1..=2), None);
        assert_eq!(parse_hex("", 0..=2).as_deref(), Some(""));
    }
}
