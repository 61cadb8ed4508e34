//! Reading an RPM package in Rust, as `rpm2cpio | cpio -idm` does. An RPM (v4 format, which
//! rpm 4.x and rpm 6's default still write) is:
//!
//! * the lead: 96 bytes, magic `ed ab ee db`, kept for `file(1)`; only its magic and its
//!   "header-style signature" field matter;
//! * the signature header, padded to 8 bytes;
//! * the main header (name, version, payload format and compressor, ...);
//! * the payload: a newc cpio archive, compressed (zstd on Fedora and CentOS Stream).
//!
//! A header is `8e ad e8 01`, 4 reserved bytes, the entry count and the store size (both u32
//! big-endian), the 16-byte index entries (tag, type, offset into the store, count), the store.
//! Every length and offset read from the file is bounds-checked: a damaged or hostile package
//! is an error naming the byte offset, never a panic. The decompressors are builder's (those of
//! the kernel's initramfs formats), the cpio reader and the extraction (which never leaves the
//! target directory) are builder's too.

use std::path::Path;

use anyhow::{Context, Result, bail};
use builder::cpio::ReadEntry;

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_LEN: usize = 96;
/// The lead's `signature_type` (bytes 78-79): 5 means a header-structured signature follows.
const HEADER_SIGNATURE_TYPE: u16 = 5;
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// Magic, reserved, entry count, store size.
const HEADER_INTRO_LEN: usize = 16;
const INDEX_ENTRY_LEN: usize = 16;
/// rpm's own sanity bounds on a header (`hdrchkTags`, `hdrchkData` in lib/header.c).
const MAX_ENTRIES: usize = 0xffff;
const MAX_STORE: usize = 256 << 20;
/// Bound on the decompressed payload (a kernel-modules package is a few hundred MB).
const MAX_PAYLOAD: u64 = 4 << 30;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_PAYLOAD_FORMAT: u32 = 1124;
const TAG_PAYLOAD_COMPRESSOR: u32 = 1125;
/// The digest of the compressed payload (rpm >= 4.14) and its algorithm.
const TAG_PAYLOAD_DIGEST: u32 = 5092;
const TAG_PAYLOAD_DIGEST_ALGO: u32 = 5093;
/// In the signature header: the sha256 of the main header (rpm >= 4.6).
const SIGTAG_SHA256: u32 = 273;
/// OpenPGP hash algorithm numbers, as rpm's digest tags use them.
const PGP_SHA256: u32 = 8;
const PGP_SHA384: u32 = 9;
const PGP_SHA512: u32 = 10;
const PGP_SHA224: u32 = 11;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18N_STRING: u32 = 9;

/// What a package says about itself, and where its payload starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// `cpio` (the only format rpm writes for v4 packages).
    pub payload_format: String,
    /// `zstd`, `xz`, `gzip`, `bzip2`, `lzma`.
    pub payload_compressor: String,
    /// Byte offset of the main header in the file.
    pub header_offset: usize,
    /// Byte offset of the payload in the file.
    pub payload_offset: usize,
    /// The package's own digests, checked before the payload is used: the main header's
    /// sha256 (signature header) and the compressed payload's (OpenPGP algorithm, hex).
    pub header_sha256: Option<String>,
    pub payload_digest: Option<(u32, String)>,
}

impl Package {
    /// `name-version-release.arch`, as rpm names a package.
    pub fn nevra(&self) -> String {
        let epoch = self.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        format!(
            "{}-{epoch}{}-{}.{}",
            self.name, self.version, self.release, self.arch
        )
    }
}

/// One header: its index entries and store.
struct Header<'a> {
    entries: &'a [u8],
    store: &'a [u8],
    /// File offset of the header, for messages.
    offset: usize,
}

impl<'a> Header<'a> {
    /// Parses the header at `offset`; returns it and the offset just past it.
    fn parse(bytes: &'a [u8], offset: usize, what: &str) -> Result<(Header<'a>, usize)> {
        let intro = bytes
            .get(offset..offset + HEADER_INTRO_LEN)
            .with_context(|| format!("{what} at byte {offset}: truncated"))?;
        if intro[..4] != HEADER_MAGIC {
            bail!(
                "{what} at byte {offset}: magic {:02x?}, expected {HEADER_MAGIC:02x?}",
                &intro[..4]
            );
        }
        let count = be32(&intro[8..12]) as usize;
        let store_len = be32(&intro[12..16]) as usize;
        if count == 0 || count > MAX_ENTRIES {
            bail!("{what} at byte {offset}: {count} index entries, rpm accepts 1 to {MAX_ENTRIES}");
        }
        if store_len > MAX_STORE {
            bail!(
                "{what} at byte {offset}: a {store_len}-byte store, rpm accepts at most {MAX_STORE}"
            );
        }
        // Both bounded above, so no overflow.
        let entries_start = offset + HEADER_INTRO_LEN;
        let store_start = entries_start + count * INDEX_ENTRY_LEN;
        let end = store_start + store_len;
        let entries = bytes.get(entries_start..store_start);
        let store = bytes.get(store_start..end);
        let (Some(entries), Some(store)) = (entries, store) else {
            bail!(
                "{what} at byte {offset}: truncated ({count} entries and {store_len} bytes of store \
                 announced, the file ends at byte {})",
                bytes.len()
            );
        };
        Ok((
            Header {
                entries,
                store,
                offset,
            },
            end,
        ))
    }

    /// The entry for `tag`: its type, offset into the store and count.
    fn find(&self, tag: u32) -> Option<(u32, usize, usize)> {
        self.entries.chunks_exact(INDEX_ENTRY_LEN).find_map(|e| {
            (be32(&e[0..4]) == tag).then(|| {
                (
                    be32(&e[4..8]),
                    be32(&e[8..12]) as usize,
                    be32(&e[12..16]) as usize,
                )
            })
        })
    }

    /// A string tag (the first string of an array or of an i18n string); `None` when absent.
    fn string(&self, tag: u32) -> Result<Option<String>> {
        let Some((kind, offset, count)) = self.find(tag) else {
            return Ok(None);
        };
        let context = || format!("header at byte {}: tag {tag}", self.offset);
        if !matches!(kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18N_STRING) || count == 0 {
            bail!(
                "{}: type {kind} count {count}, expected a string",
                context()
            );
        }
        let rest = self
            .store
            .get(offset..)
            .with_context(|| format!("{}: offset {offset} is past the store", context()))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .with_context(|| format!("{}: the string has no terminating NUL", context()))?;
        let text = std::str::from_utf8(&rest[..len])
            .with_context(|| format!("{}: the string is not UTF-8", context()))?;
        Ok(Some(text.to_owned()))
    }

    fn required_string(&self, tag: u32, name: &str) -> Result<String> {
        self.string(tag)?.with_context(|| {
            format!(
                "header at byte {}: no {name} (tag {tag}); not a binary package?",
                self.offset
            )
        })
    }

    fn int32(&self, tag: u32) -> Result<Option<u32>> {
        let Some((kind, offset, count)) = self.find(tag) else {
            return Ok(None);
        };
        if kind != TYPE_INT32 || count == 0 {
            bail!(
                "header at byte {}: tag {tag}: type {kind} count {count}, expected an int32",
                self.offset
            );
        }
        let bytes = self
            .store
            .get(offset..offset.saturating_add(4))
            .with_context(|| {
                format!(
                    "header at byte {}: tag {tag}: offset {offset} is past the store",
                    self.offset
                )
            })?;
        Ok(Some(be32(bytes)))
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Reads the lead and both headers of the package in `bytes`.
pub fn read_package(bytes: &[u8]) -> Result<Package> {
    let lead = bytes
        .get(..LEAD_LEN)
        .context("not an RPM package: shorter than the 96-byte lead")?;
    if lead[..4] != LEAD_MAGIC {
        bail!(
            "not an RPM package: lead magic {:02x?}, expected {LEAD_MAGIC:02x?}",
            &lead[..4]
        );
    }
    let signature_type = u16::from_be_bytes([lead[78], lead[79]]);
    if signature_type != HEADER_SIGNATURE_TYPE {
        bail!(
            "RPM lead: signature type {signature_type}, expected {HEADER_SIGNATURE_TYPE} \
             (a package older than rpm 3?)"
        );
    }
    let (signature, signature_end) = Header::parse(bytes, LEAD_LEN, "signature header")?;
    // The signature header is padded to a multiple of 8 bytes; the main header is not.
    let main_start = signature_end.div_ceil(8) * 8;
    let (header, payload_offset) = Header::parse(bytes, main_start, "main header")?;
    Ok(Package {
        name: header.required_string(TAG_NAME, "package name")?,
        epoch: header.int32(TAG_EPOCH)?,
        version: header.required_string(TAG_VERSION, "version")?,
        release: header.required_string(TAG_RELEASE, "release")?,
        arch: header.required_string(TAG_ARCH, "architecture")?,
        // rpm's own defaults when the tags are absent (very old packages).
        payload_format: header
            .string(TAG_PAYLOAD_FORMAT)?
            .unwrap_or_else(|| "cpio".to_owned()),
        payload_compressor: header
            .string(TAG_PAYLOAD_COMPRESSOR)?
            .unwrap_or_else(|| "gzip".to_owned()),
        header_offset: main_start,
        payload_offset,
        header_sha256: signature.string(SIGTAG_SHA256)?,
        payload_digest: match header.string(TAG_PAYLOAD_DIGEST)? {
            // rpm's default when the algorithm tag is absent.
            Some(digest) => Some((
                header.int32(TAG_PAYLOAD_DIGEST_ALGO)?.unwrap_or(PGP_SHA256),
                digest,
            )),
            None => None,
        },
    })
}

/// Checks the digests the package carries of its main header and its compressed payload, as
/// `rpm -K` does (signatures are not checked: the fixture's sha256 is the trust anchor).
fn verify_digests(bytes: &[u8], package: &Package) -> Result<()> {
    use sha2::Digest;
    fn hex_digest(algo: u32, data: &[u8]) -> Option<String> {
        Some(match algo {
            PGP_SHA256 => hex::encode(sha2::Sha256::digest(data)),
            PGP_SHA384 => hex::encode(sha2::Sha384::digest(data)),
            PGP_SHA512 => hex::encode(sha2::Sha512::digest(data)),
            PGP_SHA224 => hex::encode(sha2::Sha224::digest(data)),
            _ => return None,
        })
    }
    if let Some(expected) = &package.header_sha256 {
        let header = bytes
            .get(package.header_offset..package.payload_offset)
            .unwrap_or_default();
        let actual = hex_digest(PGP_SHA256, header).unwrap_or_default();
        if !actual.eq_ignore_ascii_case(expected) {
            bail!(
                "the main header's sha256 is {actual}, the signature header says {expected}: the package is damaged"
            );
        }
    }
    if let Some((algo, expected)) = &package.payload_digest {
        let payload = bytes.get(package.payload_offset..).unwrap_or_default();
        // An algorithm sha2 does not offer (none rpm uses by default) is left unchecked.
        if let Some(actual) = hex_digest(*algo, payload)
            && !actual.eq_ignore_ascii_case(expected)
        {
            bail!(
                "the payload's digest is {actual}, the header says {expected}: the package is damaged or truncated"
            );
        }
    }
    Ok(())
}

/// The decompressed payload: the newc cpio archive.
fn payload_archive(bytes: &[u8], package: &Package) -> Result<Vec<u8>> {
    if package.payload_format != "cpio" {
        bail!(
            "payload format {:?}: only cpio payloads are supported (rpm v4 packages)",
            package.payload_format
        );
    }
    let payload = bytes.get(package.payload_offset..).unwrap_or_default();
    // `%_binary_payload w.ufdio` stores the archive as is, whatever the compressor tag says.
    let stored = payload.starts_with(b"070701") || payload.starts_with(b"070702");
    let archive = match package.payload_compressor.as_str() {
        _ if stored => payload.to_vec(),
        "zstd" | "xz" | "gzip" | "bzip2" | "lzma" => {
            builder::initramfs::decompress_stream(payload, MAX_PAYLOAD).with_context(|| {
                format!(
                    "decompressing the {} payload at byte {}",
                    package.payload_compressor, package.payload_offset
                )
            })?
        }
        other => {
            bail!("payload compressor {other:?} is not supported (zstd, xz, gzip, bzip2, lzma are)")
        }
    };
    match archive.get(..6) {
        Some(b"070701" | b"070702") => Ok(archive),
        // rpm >= 4.12 writes this "stripped" cpio (file index only, metadata in the header)
        // for packages holding a file of 4 GiB or more; no kernel package does.
        Some(b"07070X") => bail!(
            "the payload is rpm's stripped cpio format (07070X, used for files over 4 GiB), \
             which this reader does not support"
        ),
        magic => bail!(
            "the payload is not a newc cpio archive (starts with {:02x?})",
            magic.unwrap_or(&archive)
        ),
    }
}

/// The package's description and the entries of its payload.
pub fn read_entries(bytes: &[u8]) -> Result<(Package, Vec<ReadEntry>)> {
    let package = read_package(bytes)?;
    verify_digests(bytes, &package)?;
    let archive = payload_archive(bytes, &package)?;
    let entries =
        builder::cpio::read_archive(&archive).context("reading the payload's cpio archive")?;
    Ok((package, entries))
}

/// Unpacks the files of the package at `rpm` into `dest` (created if needed), as
/// `rpm2cpio | cpio -idm` does; returns what the package says about itself. Paths are made
/// relative to `dest` and never leave it.
pub fn unpack_rpm(rpm: &Path, dest: &Path) -> Result<Package> {
    let bytes = std::fs::read(rpm).with_context(|| format!("reading {}", rpm.display()))?;
    let (package, entries) = read_entries(&bytes).with_context(|| rpm.display().to_string())?;
    drop(bytes);
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let entries: Vec<_> = entries.iter().collect();
    builder::extract::extract(&entries, dest).with_context(|| {
        format!(
            "{}: unpacking the payload into {}",
            rpm.display(),
            dest.display()
        )
    })?;
    Ok(package)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given string tags, as rpm lays it out.
    fn header(tags: &[(u32, &str)]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut store = Vec::new();
        for (tag, value) in tags {
            entries.extend_from_slice(&tag.to_be_bytes());
            entries.extend_from_slice(&TYPE_STRING.to_be_bytes());
            entries.extend_from_slice(&(store.len() as u32).to_be_bytes());
            entries.extend_from_slice(&1u32.to_be_bytes());
            store.extend_from_slice(value.as_bytes());
            store.push(0);
        }
        let mut out = HEADER_MAGIC.to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(tags.len() as u32).to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend(entries);
        out.extend(store);
        out
    }

    fn package_bytes(payload: &[u8]) -> Vec<u8> {
        let mut out = LEAD_MAGIC.to_vec();
        out.resize(LEAD_LEN, 0);
        out[78..80].copy_from_slice(&HEADER_SIGNATURE_TYPE.to_be_bytes());
        out.extend(header(&[(1000, "sig")]));
        out.resize(out.len().div_ceil(8) * 8, 0);
        out.extend(header(&[
            (TAG_NAME, "kernel-core"),
            (TAG_VERSION, "6.12.0"),
            (TAG_RELEASE, "1.fc43"),
            (TAG_ARCH, "x86_64"),
            (TAG_PAYLOAD_FORMAT, "cpio"),
            (TAG_PAYLOAD_COMPRESSOR, "gzip"),
        ]));
        out.extend_from_slice(payload);
        out
    }

    fn newc(name: &str, data: &[u8]) -> Vec<u8> {
        let mut archive = builder::cpio::Archive::new();
        archive.add_file(name, 0o644, data.to_vec()).unwrap();
        archive.to_bytes(0).unwrap()
    }

    #[test]
    fn a_synthetic_package_reads_and_unpacks() {
        let bytes = package_bytes(&newc("/lib/modules/6.12.0/vmlinuz", b"kernel"));
        let package = read_package(&bytes).unwrap();
        assert_eq!(package.nevra(), "kernel-core-6.12.0-1.fc43.x86_64");
        assert_eq!(package.payload_compressor, "gzip");
        let dir = tempfile::tempdir().unwrap();
        let rpm = dir.path().join("k.rpm");
        std::fs::write(&rpm, &bytes).unwrap();
        unpack_rpm(&rpm, &dir.path().join("out")).unwrap();
        let vmlinuz = dir.path().join("out/lib/modules/6.12.0/vmlinuz");
        assert_eq!(std::fs::read(vmlinuz).unwrap(), b"kernel");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = package_bytes(&newc("/a", b"x"));
        // The trailer entry is 110 + 11 bytes; the 3 bytes aligning it may be missing, as the
        // kernel and cpio(1) accept.
        for len in 0..bytes.len() - 3 {
            let result = read_entries(&bytes[..len]);
            assert!(result.is_err(), "truncated at {len} of {}", bytes.len());
        }
    }

    #[test]
    fn bad_magics_are_named() {
        let mut bytes = package_bytes(&[]);
        bytes[0] = 0;
        let error = format!("{:#}", read_package(&bytes).unwrap_err());
        assert!(error.contains("not an RPM package"), "{error}");
        let mut bytes = package_bytes(&[]);
        bytes[LEAD_LEN] = 0;
        let error = format!("{:#}", read_package(&bytes).unwrap_err());
        assert!(
            error.contains("signature header at byte 96: magic"),
            "{error}"
        );
    }

    #[test]
    fn huge_counts_and_offsets_are_refused() {
        let mut bytes = package_bytes(&[]);
        // The signature header's entry count, then its store size.
        bytes[LEAD_LEN + 8..LEAD_LEN + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        let error = format!("{:#}", read_package(&bytes).unwrap_err());
        assert!(error.contains("index entries"), "{error}");
        let mut bytes = package_bytes(&[]);
        bytes[LEAD_LEN + 12..LEAD_LEN + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        let error = format!("{:#}", read_package(&bytes).unwrap_err());
        assert!(error.contains("store"), "{error}");
        // A string offset past the store: the main header's first entry (the name).
        let mut bytes = package_bytes(&[]);
        let signature_len = HEADER_INTRO_LEN + INDEX_ENTRY_LEN + 4;
        let main = (LEAD_LEN + signature_len).div_ceil(8) * 8;
        let name_offset = main + HEADER_INTRO_LEN + 8;
        bytes[name_offset..name_offset + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let error = format!("{:#}", read_package(&bytes).unwrap_err());
        assert!(error.contains("past the store"), "{error}");
    }

    #[test]
    fn unsupported_payloads_are_named() {
        // A gzip stream holding the stripped cpio magic (`printf 07070X | gzip -n | xxd -i`).
        let stripped_gz = [
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x33, 0x30, 0x37, 0x30,
            0x37, 0x88, 0x00, 0x00, 0x19, 0x26, 0x40, 0xcd, 0x06, 0x00, 0x00, 0x00,
        ];
        let stripped = package_bytes(&stripped_gz);
        let package = read_package(&stripped).unwrap();
        let error = format!("{:#}", payload_archive(&stripped, &package).unwrap_err());
        assert!(error.contains("stripped cpio"), "{error}");
        let garbage = package_bytes(b"not compressed at all");
        let package = read_package(&garbage).unwrap();
        let error = format!("{:#}", payload_archive(&garbage, &package).unwrap_err());
        assert!(error.contains("decompressing the gzip payload"), "{error}");
    }

    /// A package carrying both digests, right or wrong.
    fn package_with_digests(payload: &[u8], damage_payload: bool) -> Vec<u8> {
        use sha2::Digest;
        let main = header(&[
            (TAG_NAME, "t"),
            (TAG_VERSION, "1"),
            (TAG_RELEASE, "1"),
            (TAG_ARCH, "noarch"),
            (
                TAG_PAYLOAD_DIGEST,
                &hex::encode(sha2::Sha256::digest(payload)),
            ),
        ]);
        let mut out = LEAD_MAGIC.to_vec();
        out.resize(LEAD_LEN, 0);
        out[78..80].copy_from_slice(&HEADER_SIGNATURE_TYPE.to_be_bytes());
        out.extend(header(&[(
            SIGTAG_SHA256,
            &hex::encode(sha2::Sha256::digest(&main)),
        )]));
        out.resize(out.len().div_ceil(8) * 8, 0);
        out.extend(main);
        out.extend_from_slice(payload);
        if damage_payload {
            let last = out.len() - 1;
            out[last] ^= 1;
        }
        out
    }

    #[test]
    fn the_packages_own_digests_are_checked() {
        let payload = newc("/a", b"x");
        let good = package_with_digests(&payload, false);
        let (package, entries) = read_entries(&good).unwrap();
        assert!(package.header_sha256.is_some() && package.payload_digest.is_some());
        assert_eq!(entries[0].name, "a");
        let damaged = package_with_digests(&payload, true);
        let error = format!("{:#}", read_entries(&damaged).unwrap_err());
        assert!(error.contains("payload's digest"), "{error}");
        let mut header_damaged = good.clone();
        // The package name's first letter, in the main header's store.
        let name_at = header_damaged
            .windows(2)
            .rposition(|w| w == b"t\0")
            .unwrap();
        header_damaged[name_at] = b'u';
        let error = format!("{:#}", read_entries(&header_damaged).unwrap_err());
        assert!(error.contains("main header's sha256"), "{error}");
    }

    #[test]
    fn paths_never_leave_the_target() {
        // builder's writer refuses `..`, so the hostile archive is written by hand.
        let name = "../escape\0";
        let mut cpio = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            0,
            name.len(),
            0
        )
        .into_bytes();
        cpio.extend_from_slice(name.as_bytes());
        cpio.resize(cpio.len().div_ceil(4) * 4, 0);
        cpio.extend_from_slice(b"x\0\0\0");
        cpio.extend(builder::cpio::Archive::new().to_bytes(0).unwrap()); // the trailer
        let dir = tempfile::tempdir().unwrap();
        let rpm = dir.path().join("hostile.rpm");
        std::fs::write(&rpm, package_bytes(&cpio)).unwrap();
        let out = dir.path().join("sub/out");
        let error = format!("{:#}", unpack_rpm(&rpm, &out).unwrap_err());
        assert!(error.contains("hostile.rpm"), "{error}");
        assert!(!dir.path().join("sub/escape").exists());
    }
}
