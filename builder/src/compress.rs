//! Compressing the mini initramfs in a format the target kernel unpacks (`CONFIG_RD_*`),
//! reproducibly: every encoder here writes no timestamp or host name, so the same archive gives
//! the same bytes.
//!
//! Reading is `initramfs.rs`'s job; the tests here round-trip through it, and
//! `tests/initramfs.rs` through the distributions' command-line tools.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use crate::initramfs::Format;

/// How the mini initramfs is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsCompression {
    /// Plain newc: every kernel unpacks it.
    None,
    /// zstd (pure-Rust encoder, its fastest level, about `zstd -1`): fast to unpack.
    Zstd,
    /// gzip, level 9.
    Gzip,
    /// lz4, the legacy frame the kernel reads (`lz4 -l`).
    Lz4,
    /// xz with the CRC32 check, the only check the kernel's decoder is sure to have.
    Xz,
    /// bzip2, level 9.
    Bzip2,
}

/// `auto`'s order of preference among what the kernel unpacks: zstd unpacks fastest for its
/// size, gzip is in every distribution kernel, the rest only if neither is there.
const PREFERENCE: [InitramfsCompression; 5] = [
    InitramfsCompression::Zstd,
    InitramfsCompression::Gzip,
    InitramfsCompression::Lz4,
    InitramfsCompression::Xz,
    InitramfsCompression::Bzip2,
];

/// The names `--compression` accepts besides `auto`.
pub const NAMES: &str = "none, zstd, gzip, lz4, xz, bzip2";

impl InitramfsCompression {
    pub fn name(self) -> &'static str {
        match self {
            InitramfsCompression::None => "none",
            InitramfsCompression::Zstd => "zstd",
            InitramfsCompression::Gzip => "gzip",
            InitramfsCompression::Lz4 => "lz4",
            InitramfsCompression::Xz => "xz",
            InitramfsCompression::Bzip2 => "bzip2",
        }
    }

    /// The format as the kernel (and [`Format::detect`]) knows it.
    pub fn format(self) -> Format {
        match self {
            InitramfsCompression::None => Format::Newc,
            InitramfsCompression::Zstd => Format::Zstd,
            InitramfsCompression::Gzip => Format::Gzip,
            InitramfsCompression::Lz4 => Format::Lz4Legacy,
            InitramfsCompression::Xz => Format::Xz,
            InitramfsCompression::Bzip2 => Format::Bzip2,
        }
    }

    /// The first of [`PREFERENCE`] among `unpacked` (the kernel's `CONFIG_RD_*` formats), else
    /// none.
    pub fn preferred(unpacked: &[Format]) -> InitramfsCompression {
        PREFERENCE
            .into_iter()
            .find(|c| unpacked.contains(&c.format()))
            .unwrap_or(InitramfsCompression::None)
    }

    /// `data` compressed.
    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            InitramfsCompression::None => Ok(data.to_vec()),
            InitramfsCompression::Zstd => Ok(ruzstd::encoding::compress_to_vec(
                data,
                ruzstd::encoding::CompressionLevel::Fastest,
            )),
            InitramfsCompression::Gzip => {
                // GzBuilder writes mtime 0 and no file name unless told otherwise.
                let mut encoder = flate2::GzBuilder::new()
                    .operating_system(UNIX)
                    .write(Vec::new(), flate2::Compression::best());
                encoder.write_all(data)?;
                encoder.finish()
            }
            InitramfsCompression::Lz4 => Ok(crate::initramfs::lz4_legacy_compress(data)),
            InitramfsCompression::Xz => {
                let stream =
                    liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)
                        .map_err(io::Error::other)?;
                let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                encoder.write_all(data)?;
                encoder.finish()
            }
            InitramfsCompression::Bzip2 => {
                let mut encoder =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                encoder.write_all(data)?;
                encoder.finish()
            }
        }
    }
}

/// The gzip header's operating-system byte for Unix (RFC 1952), as gzip(1) writes it.
const UNIX: u8 = 3;

impl fmt::Display for InitramfsCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown compression name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown initramfs compression {0:?}: use auto or one of {NAMES} (lzo and lzma are read, not written)"
)]
pub struct UnknownCompression(String);

impl FromStr for InitramfsCompression {
    type Err = UnknownCompression;

    fn from_str(name: &str) -> Result<InitramfsCompression, UnknownCompression> {
        [InitramfsCompression::None]
            .into_iter()
            .chain(PREFERENCE)
            .find(|c| c.name() == name)
            .ok_or_else(|| UnknownCompression(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive with repetitive and random-looking content, like modules.
    fn sample() -> Vec<u8> {
        let mut archive = crate::cpio::Archive::new();
        archive.add_dir("/lib", 0o755).unwrap();
        let noise: Vec<u8> = (0u32..200_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        archive.add_file("/lib/noise", 0o644, noise).unwrap();
        archive
            .add_file("/lib/text", 0o644, b"storage-init ".repeat(10_000))
            .unwrap();
        archive.to_bytes(0).unwrap()
    }

    fn all() -> impl Iterator<Item = InitramfsCompression> {
        [InitramfsCompression::None].into_iter().chain(PREFERENCE)
    }

    #[test]
    fn round_trips_through_the_initramfs_reader() {
        let archive = sample();
        for compression in all() {
            let packed = compression.compress(&archive).unwrap();
            assert_eq!(
                Format::detect(&packed),
                Some(compression.format()),
                "{compression}"
            );
            let read = crate::initramfs::read(&packed).unwrap();
            assert_eq!(read.segments.len(), 1, "{compression}");
            assert_eq!(read.segments[0].format, compression.format());
            let expected = crate::cpio::read_archive(&archive).unwrap();
            assert_eq!(read.entries, expected, "{compression}");
            if compression != InitramfsCompression::None {
                assert!(
                    packed.len() < archive.len() / 2,
                    "{compression}: {}",
                    packed.len()
                );
            }
            // Reproducible: no timestamps, no host names.
            assert_eq!(
                compression.compress(&archive).unwrap(),
                packed,
                "{compression}"
            );
        }
    }

    #[test]
    fn auto_follows_the_kernel() {
        use Format::*;
        let pick = InitramfsCompression::preferred;
        assert_eq!(
            pick(&[Gzip, Bzip2, Lzma, Xz, Lzo, Lz4Legacy, Zstd]),
            InitramfsCompression::Zstd
        );
        assert_eq!(pick(&[Gzip, Xz]), InitramfsCompression::Gzip);
        assert_eq!(pick(&[Lzo, Xz]), InitramfsCompression::Xz);
        assert_eq!(pick(&[Lzo]), InitramfsCompression::None);
        assert_eq!(pick(&[]), InitramfsCompression::None);
    }

    #[test]
    fn names_parse_back() {
        for compression in all() {
            assert_eq!(
                compression.name().parse::<InitramfsCompression>().unwrap(),
                compression
            );
        }
        let error = "lzo"
            .parse::<InitramfsCompression>()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"lzo\"") && error.contains("zstd"),
            "{error}"
        );
    }
}
