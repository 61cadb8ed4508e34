//! dm-verity for the erofs image: the hash tree and veritysetup's superblock appended to the
//! image file (layout in `storage_init::verity`), and the parameters read back from such a file.
//!
//! Reproducible: the salt is a SHA-256 of the image's own bytes (under a domain string), so the
//! same image gives the same salt, tree and root hash, with no randomness and no clock. A salt
//! still does its job here: it differs between any two different images.
//!
//! `veritysetup verify` (cryptsetup) is the test oracle for everything written here.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use storage_init::verity::{ALGORITHM, BLOCK_SIZE, DIGEST_BYTES, TreeLayout, Verity};

const BLOCK: usize = BLOCK_SIZE as usize;
/// veritysetup's on-disk superblock: its signature and size.
const SUPERBLOCK_SIGNATURE: &[u8; 8] = b"verity\0\0";
const SUPERBLOCK_BYTES: usize = 512;
/// Hash format 1: `sha256(salt || block)` (format 0, Chrome OS's, hashes `block || salt`).
const HASH_TYPE: u32 = 1;
/// Where the erofs superblock keeps the image's size in blocks: the superblock sits at byte
/// 1024, and `blocks` (le32) is 36 bytes into it; `blkszbits` (u8) 12 bytes into it.
const EROFS_SUPERBLOCK: usize = 1024;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error(
        "{path}: {bytes} bytes is not a whole number of {BLOCK_SIZE}-byte blocks: dm-verity needs whole blocks (mkfs.erofs writes them; was the file changed?)"
    )]
    NotBlockAligned { path: PathBuf, bytes: u64 },
    #[error(
        "{path}: not an erofs image (dm-verity images are made from the builder's erofs images)"
    )]
    NotErofs { path: PathBuf },
    #[error(
        "{path}: erofs with {block_bytes}-byte blocks; dm-verity images need {BLOCK_SIZE}-byte blocks"
    )]
    BlockSize { path: PathBuf, block_bytes: u64 },
    #[error(
        "{path}: already carries a dm-verity hash tree (after block {data_blocks}); rebuild the image instead of appending a second one"
    )]
    AlreadyVerity { path: PathBuf, data_blocks: u64 },
    #[error(
        "{path}: its dm-verity superblock or hash tree is damaged or truncated ({why}); rebuild the image with `builder image --verity`"
    )]
    Damaged { path: PathBuf, why: String },
}

/// Appends superblock and hash tree to the erofs image at `path`; returns what the config and
/// the kernel command line need.
pub fn append_hash_tree(path: &Path) -> Result<Verity, VerityError> {
    let io = |error| VerityError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let data_blocks = erofs_blocks(&mut file, path)?;
    let bytes = file.metadata().map_err(io)?.len();
    if bytes % BLOCK_SIZE != 0 {
        return Err(VerityError::NotBlockAligned {
            path: path.to_owned(),
            bytes,
        });
    }
    if bytes / BLOCK_SIZE > data_blocks {
        return Err(VerityError::AlreadyVerity {
            path: path.to_owned(),
            data_blocks,
        });
    }
    let (verity, salt, levels) = compute(&mut file, data_blocks).map_err(io)?;
    file.seek(SeekFrom::Start(data_blocks * BLOCK_SIZE))
        .map_err(io)?;
    let mut superblock_block = superblock(&verity, &salt).to_vec();
    superblock_block.resize(BLOCK, 0);
    file.write_all(&superblock_block).map_err(io)?;
    // Top level first, as the kernel expects (see TreeLayout).
    for level in levels.iter().rev() {
        file.write_all(level).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    Ok(verity)
}

/// The verity parameters of an image written by [`append_hash_tree`], recomputed from its data
/// and checked against its tree; `None` for an image without one.
pub fn read_verity(path: &Path) -> Result<Option<Verity>, VerityError> {
    let io = |error| VerityError::Io {
        path: path.to_owned(),
        error,
    };
    let damaged = |why: String| VerityError::Damaged {
        path: path.to_owned(),
        why,
    };
    let mut file = File::open(path).map_err(io)?;
    let data_blocks = erofs_blocks(&mut file, path)?;
    let bytes = file.metadata().map_err(io)?.len();
    if bytes <= data_blocks * BLOCK_SIZE {
        return Ok(None);
    }
    let mut superblock_bytes = [0u8; SUPERBLOCK_BYTES];
    file.seek(SeekFrom::Start(data_blocks * BLOCK_SIZE))
        .map_err(io)?;
    file.read_exact(&mut superblock_bytes).map_err(io)?;
    if &superblock_bytes[..8] != SUPERBLOCK_SIGNATURE {
        return Err(damaged(format!(
            "no verity superblock at byte {}",
            data_blocks * BLOCK_SIZE
        )));
    }
    let (verity, salt, levels) = compute(&mut file, data_blocks).map_err(io)?;
    if superblock_bytes[..] != superblock(&verity, &salt)[..] {
        return Err(damaged(
            "the superblock differs from the image's".to_owned(),
        ));
    }
    let layout = TreeLayout::new(data_blocks);
    if bytes != layout.image_bytes() {
        return Err(damaged(format!(
            "{bytes} bytes where data and tree take {}",
            layout.image_bytes()
        )));
    }
    for (level, computed) in layout.levels.iter().zip(&levels) {
        let mut stored = vec![0u8; computed.len()];
        file.seek(SeekFrom::Start(level.first_block * BLOCK_SIZE))
            .map_err(io)?;
        file.read_exact(&mut stored).map_err(io)?;
        if &stored != computed {
            return Err(damaged(format!(
                "the tree's blocks from {} differ from the image's hashes",
                level.first_block
            )));
        }
    }
    Ok(Some(verity))
}

/// `blocks` of the erofs superblock: the filesystem's size, where the hash tree begins.
fn erofs_blocks(file: &mut File, path: &Path) -> Result<u64, VerityError> {
    let mut head = [0u8; EROFS_SUPERBLOCK + 64];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut head))
        .map_err(|error| VerityError::Io {
            path: path.to_owned(),
            error,
        })?;
    let sb = &head[EROFS_SUPERBLOCK..];
    let le32 = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    // A superblock claiming no blocks is no image either (and would give no tree to hash).
    if le32(0) != EROFS_MAGIC || le32(36) == 0 {
        return Err(VerityError::NotErofs {
            path: path.to_owned(),
        });
    }
    let block_bytes = 1u64 << sb[12].min(63);
    if block_bytes != BLOCK_SIZE {
        return Err(VerityError::BlockSize {
            path: path.to_owned(),
            block_bytes,
        });
    }
    Ok(u64::from(le32(36)))
}

/// The parameters, salt and tree levels (level 0 first) of an image's first `data_blocks`.
fn compute(
    file: &mut File,
    data_blocks: u64,
) -> io::Result<(Verity, [u8; DIGEST_BYTES], Vec<Vec<u8>>)> {
    let salt = salt_of(file, data_blocks)?;
    let (levels, root_hash) = hash_tree(file, data_blocks, &salt)?;
    let verity = Verity {
        root_hash: hex::encode(root_hash),
        salt: hex::encode(salt),
        data_blocks,
    };
    Ok((verity, salt, levels))
}

/// SHA-256 of the image's data blocks under a domain string: the salt.
fn salt_of(file: &mut File, data_blocks: u64) -> io::Result<[u8; DIGEST_BYTES]> {
    let mut hasher = Sha256::new();
    hasher.update(b"initoverlayfs-verity-salt-v1\0");
    file.seek(SeekFrom::Start(0))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file.take(data_blocks * BLOCK_SIZE));
    io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Every level of the tree (level 0 first, each padded to whole blocks) and the root hash.
fn hash_tree(
    file: &mut File,
    data_blocks: u64,
    salt: &[u8],
) -> io::Result<(Vec<Vec<u8>>, [u8; DIGEST_BYTES])> {
    let salted = {
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher
    };
    let hash = |block: &[u8]| -> [u8; DIGEST_BYTES] {
        let mut hasher = salted.clone();
        hasher.update(block);
        hasher.finalize().into()
    };
    let mut digests = Vec::with_capacity(data_blocks as usize * DIGEST_BYTES);
    file.seek(SeekFrom::Start(0))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file.take(data_blocks * BLOCK_SIZE));
    let mut block = vec![0u8; BLOCK];
    for _ in 0..data_blocks {
        reader.read_exact(&mut block)?;
        digests.extend_from_slice(&hash(&block));
    }
    let layout = TreeLayout::new(data_blocks);
    let mut levels: Vec<Vec<u8>> = Vec::with_capacity(layout.levels.len());
    for level in &layout.levels {
        let mut bytes = std::mem::take(&mut digests);
        bytes.resize(level.blocks as usize * BLOCK, 0);
        digests = bytes.chunks(BLOCK).flat_map(hash).collect();
        levels.push(bytes);
    }
    // What is left is the single digest of the top block (or, with no tree at all, of the one
    // data block).
    let root: [u8; DIGEST_BYTES] = digests[..DIGEST_BYTES].try_into().expect("one digest");
    Ok((levels, root))
}

/// veritysetup's `struct verity_sb` (cryptsetup `lib/verity/verity.c`), little-endian. Its
/// UUID is the salt's first 16 bytes with the version-4 bits set, so it is reproducible too.
fn superblock(verity: &Verity, salt: &[u8]) -> [u8; SUPERBLOCK_BYTES] {
    let mut sb = [0u8; SUPERBLOCK_BYTES];
    sb[..8].copy_from_slice(SUPERBLOCK_SIGNATURE);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes());
    sb[12..16].copy_from_slice(&HASH_TYPE.to_le_bytes());
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&salt[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    sb[16..32].copy_from_slice(&uuid);
    sb[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&verity.data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

/// The kernel command-line parameters that carry `verity` (for a boot where the command line,
/// not the mini initramfs's config, is the signed part).
pub fn cmdline(verity: &Verity) -> String {
    format!(
        "initoverlayfs.verity_root_hash={} initoverlayfs.verity_salt={} initoverlayfs.verity_data_blocks={}",
        verity.root_hash, verity.salt, verity.data_blocks
    )
}
