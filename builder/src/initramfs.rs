//! Reading an initramfs file in any form the kernel unpacks (`init/initramfs.c`,
//! `unpack_to_rootfs`): newc archives (`070701`, `070702`) and compressed streams, one after
//! another, with NUL padding between them. dracut writes an uncompressed early-microcode archive
//! followed by a compressed main archive; a compressed stream may itself hold several archives.
//! Later entries replace earlier ones with the same path, as when the kernel unpacks them.
//!
//! Every error names the byte offset in the file (for a compressed stream: where the stream
//! starts) and what was found there; no input makes it panic.

use std::io::{self, Read};

use crate::cpio::{self, CpioError, ReadEntry};

/// The formats the kernel can unpack (`CONFIG_RD_*`), by their leading bytes
/// (`lib/decompress.c`, `compressed_formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Newc,
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4Legacy,
    Zstd,
}

impl Format {
    /// Recognises the start of a segment.
    pub fn detect(bytes: &[u8]) -> Option<Format> {
        const MAGICS: [(&[u8], Format); 9] = [
            (b"070701", Format::Newc),
            (b"070702", Format::Newc),
            (&[0x1f, 0x8b], Format::Gzip),
            (&[0x1f, 0x9e], Format::Gzip),
            (b"BZh", Format::Bzip2),
            (&[0x5d, 0x00, 0x00], Format::Lzma),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Format::Xz),
            (&[0x89, b'L', b'Z', b'O', 0x00], Format::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Format::Lz4Legacy),
        ];
        const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
        if bytes.starts_with(&ZSTD) {
            return Some(Format::Zstd);
        }
        MAGICS
            .iter()
            .find(|(magic, _)| bytes.starts_with(magic))
            .map(|(_, format)| *format)
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Newc => "newc cpio",
            Format::Gzip => "gzip",
            Format::Bzip2 => "bzip2",
            Format::Lzma => "lzma",
            Format::Xz => "xz",
            Format::Lzo => "lzo",
            Format::Lz4Legacy => "lz4 (legacy frame)",
            Format::Zstd => "zstd",
        }
    }
}

/// Why an initramfs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(
        "at byte {offset}: {found} is no format the kernel unpacks as an initramfs (newc cpio, or gzip, bzip2, lzma, xz, lzo, lz4, zstd around one)"
    )]
    UnknownFormat { offset: usize, found: String },
    #[error(
        "at byte {offset}: an lzo-compressed segment; builder has no lzo decompressor: re-create the initramfs with another compression (e.g. `dracut --zstd`)"
    )]
    Lzo { offset: usize },
    #[error("at byte {offset}: the {format} stream is corrupt or truncated: {error}")]
    Decompress {
        offset: usize,
        format: &'static str,
        error: io::Error,
    },
    #[error("at byte {offset} ({context}): {error}")]
    Cpio {
        offset: usize,
        context: String,
        error: CpioError,
    },
    #[error("the initramfs holds no archive at all")]
    Empty,
}

/// One segment of the file, for `list` and for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub offset: usize,
    pub format: Format,
    /// Bytes the segment takes in the file.
    pub len: usize,
    /// Archive entries it held (trailers not counted).
    pub entries: usize,
}

/// Everything an initramfs file unpacks to.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    /// In unpacking order; a path repeated later replaces the earlier entry.
    pub entries: Vec<ReadEntry>,
    pub segments: Vec<Segment>,
}

impl Initramfs {
    /// The entries as the unpacked tree has them: the last one of each path, in first-seen order.
    pub fn final_entries(&self) -> Vec<&ReadEntry> {
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        let mut out: Vec<&ReadEntry> = Vec::new();
        for entry in &self.entries {
            let key = entry.name.trim_start_matches('/');
            match index.get(key) {
                Some(&i) => out[i] = entry,
                None => {
                    index.insert(key, out.len());
                    out.push(entry);
                }
            }
        }
        out
    }
}

/// Upper bound on what the compressed segments of one file may expand to, all together: the
/// reader holds them in memory, and past this the input is hostile or no initramfs (a dracut
/// image with every firmware blob is a few hundred MB).
pub const MAX_UNPACKED: u64 = 4 << 30;

/// Reads every segment of `bytes`.
pub fn read(bytes: &[u8]) -> Result<Initramfs, InitramfsError> {
    read_with_limit(bytes, MAX_UNPACKED)
}

/// [`read`], with another bound on the decompressed bytes (the fuzzer's is small).
pub fn read_with_limit(bytes: &[u8], max_unpacked: u64) -> Result<Initramfs, InitramfsError> {
    let mut initramfs = Initramfs::default();
    let mut budget = max_unpacked;
    read_into(bytes, 0, &mut initramfs, &mut budget)?;
    if initramfs.segments.is_empty() {
        return Err(InitramfsError::Empty);
    }
    Ok(initramfs)
}

/// Reads the segments of `bytes`; `base` is where `bytes` starts in the file (0 for the file
/// itself; inside a decompressed stream, the stream's offset, for messages).
fn read_into(
    bytes: &[u8],
    base: usize,
    out: &mut Initramfs,
    budget: &mut u64,
) -> Result<(), InitramfsError> {
    let mut offset = 0;
    loop {
        // The kernel skips NUL padding (newc archives are padded to 4 bytes, and many tools pad
        // to 512) between segments.
        while bytes.get(offset) == Some(&0) {
            offset += 1;
        }
        let rest = &bytes[offset..];
        if rest.is_empty() {
            return Ok(());
        }
        let at = base + offset;
        let Some(format) = Format::detect(rest) else {
            let shown: Vec<String> = rest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(InitramfsError::UnknownFormat {
                offset: at,
                found: format!("bytes {}", shown.join(" ")),
            });
        };
        let (len, entries) = match format {
            Format::Newc => {
                let (entries, len) =
                    cpio::read_archive_prefix(rest).map_err(|error| InitramfsError::Cpio {
                        offset: at,
                        context: "newc archive".into(),
                        error,
                    })?;
                let count = entries.len();
                out.entries.extend(entries);
                (len, count)
            }
            Format::Lzo => return Err(InitramfsError::Lzo { offset: at }),
            compressed => {
                let (unpacked, len) = decompress(compressed, rest, budget).map_err(|error| {
                    InitramfsError::Decompress {
                        offset: at,
                        format: compressed.name(),
                        error,
                    }
                })?;
                let before = out.entries.len();
                let segments_before = out.segments.len();
                read_into(&unpacked, at, out, budget).map_err(|e| match e {
                    InitramfsError::Cpio { offset, error, .. } => InitramfsError::Cpio {
                        offset,
                        context: format!(
                            "inside the {} stream starting there, byte {} of its content",
                            compressed.name(),
                            offset - at
                        ),
                        error,
                    },
                    other => other,
                })?;
                // The archives inside are reported as part of this segment.
                out.segments.truncate(segments_before);
                (len, out.entries.len() - before)
            }
        };
        out.segments.push(Segment {
            offset: at,
            format,
            len,
            entries,
        });
        offset += len.max(1);
    }
}

/// Decompresses `bytes`, one stream in any format the kernel unpacks (recognised by its
/// magic), into at most `limit` bytes: for other archives packed the same way, such as a
/// .deb's `data.tar.xz`.
pub fn decompress_stream(bytes: &[u8], limit: u64) -> io::Result<Vec<u8>> {
    let format = Format::detect(bytes)
        .filter(|f| !matches!(f, Format::Newc | Format::Lzo))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no gzip, bzip2, lzma, xz, lz4 or zstd stream",
            )
        })?;
    let mut budget = limit;
    Ok(decompress(format, bytes, &mut budget)?.0)
}

/// Decompresses the stream at the start of `input`; returns its content and how many bytes of
/// `input` it took (the kernel carries on after it).
fn decompress(format: Format, input: &[u8], budget: &mut u64) -> io::Result<(Vec<u8>, usize)> {
    let mut reader: &[u8] = input;
    let mut out = Vec::new();
    // The lzma/xz header names the dictionary size (up to 4 GiB): bound what liblzma may
    // allocate too, not only what it writes. `xz -9` needs 64 MiB.
    let memlimit = (*budget).clamp(64 << 20, 1 << 30);
    match format {
        Format::Gzip => {
            let mut decoder = flate2::bufread::GzDecoder::new(&mut reader);
            bounded(&mut decoder, &mut out, *budget)?;
        }
        Format::Bzip2 => {
            let mut decoder = bzip2::bufread::BzDecoder::new(&mut reader);
            bounded(&mut decoder, &mut out, *budget)?;
        }
        Format::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(memlimit, 0)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut decoder = liblzma::bufread::XzDecoder::new_stream(&mut reader, stream);
            bounded(&mut decoder, &mut out, *budget)?;
        }
        Format::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(memlimit)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut decoder = liblzma::bufread::XzDecoder::new_stream(&mut reader, stream);
            bounded(&mut decoder, &mut out, *budget)?;
        }
        Format::Zstd => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut reader)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            bounded(&mut decoder, &mut out, *budget)?;
        }
        Format::Lz4Legacy => {
            let (out, len) = lz4_legacy(input, *budget)?;
            *budget -= out.len() as u64;
            return Ok((out, len));
        }
        Format::Newc | Format::Lzo => {
            return Err(io::Error::other("not a compressed format"));
        }
    }
    *budget -= out.len() as u64;
    Ok((out, input.len() - reader.len()))
}

/// Reads all of `decoder` into `out`, refusing more than `limit` bytes.
fn bounded(decoder: &mut dyn Read, out: &mut Vec<u8>, limit: u64) -> io::Result<()> {
    let read = decoder.take(limit + 1).read_to_end(out)?;
    if read as u64 > limit {
        return Err(too_big(limit));
    }
    Ok(())
}

fn too_big(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the file expands past {limit} bytes, more than any initramfs"),
    )
}

/// The lz4 legacy frame (`lz4 -l`, what the kernel's `unlz4` reads): the magic, then blocks of
/// a 32-bit little-endian compressed size and that many bytes, each expanding to at most 8 MiB,
/// up to the end of the input (or a zero size). A repeated magic starts another frame.
fn lz4_legacy(input: &[u8], limit: u64) -> io::Result<(Vec<u8>, usize)> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK_MAX: usize = 8 << 20;
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut out = Vec::new();
    let mut offset = 4;
    let mut block = vec![0u8; BLOCK_MAX];
    while let Some(size) = input.get(offset..offset + 4) {
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        offset += 4;
        if size == MAGIC {
            continue;
        }
        if size == 0 {
            break;
        }
        let compressed = input
            .get(offset..offset + size as usize)
            .ok_or_else(|| invalid(format!("block at byte {} is truncated", offset - 4)))?;
        let len = lz4_flex::block::decompress_into(compressed, &mut block)
            .map_err(|e| invalid(format!("block at byte {}: {e}", offset - 4)))?;
        out.extend_from_slice(&block[..len]);
        if out.len() as u64 > limit {
            return Err(too_big(limit));
        }
        offset += size as usize;
    }
    Ok((out, offset.min(input.len())))
}

/// Makes an lz4 legacy frame (for tests and for writing initramfs images the kernel unpacks).
pub fn lz4_legacy_compress(data: &[u8]) -> Vec<u8> {
    const BLOCK_MAX: usize = 8 << 20;
    let mut out = vec![0x02, 0x21, 0x4c, 0x18];
    for chunk in data.chunks(BLOCK_MAX) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// What made an initramfs, as far as its second-stage handover is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Debian's initramfs-tools: its /init ends in klibc `run-init` (or busybox `switch_root`),
    /// which refuses to switch from a root that is neither ramfs nor tmpfs: not from the overlay.
    InitramfsTools,
    /// systemd is there (dracut's usual image): `systemctl switch-root` works from the overlay.
    Systemd,
    /// Neither: it may work if its init switches root the way systemd does.
    Unknown,
}

/// Recognises the flavour from the unpacked paths.
pub fn flavour<'a>(names: impl IntoIterator<Item = &'a str>) -> Flavour {
    let mut systemd = false;
    for name in names {
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if name == "conf/initramfs.conf" || name.starts_with("scripts/init-top") {
            return Flavour::InitramfsTools;
        }
        systemd |= matches!(name, "usr/lib/systemd/systemd" | "lib/systemd/systemd");
    }
    if systemd {
        Flavour::Systemd
    } else {
        Flavour::Unknown
    }
}
