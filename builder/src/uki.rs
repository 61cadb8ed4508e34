//! Unified Kernel Images: the systemd EFI stub with the kernel, the initramfs, the command line
//! and os-release appended as PE sections, byte-for-byte reproducibly, and signed with
//! `sbsign` for Secure Boot.
//!
//! The layout is ukify's (systemd's `ukify.py`, `pe_add_sections`), done in Rust because
//! Debian 12 ships the stub (systemd 252) but not ukify: each new section's file offset is the
//! end of the file rounded up to `FileAlignment`, its raw size its content's rounded up the
//! same, its address the end of the previous section rounded up to `SectionAlignment`; the
//! headers then count the sections, the image size and the initialised data, and the checksum
//! is zeroed (nothing checks it; `sbsign` writes its own). A stub that still carries a COFF
//! symbol table at its end (Debian's does) loses it first, as ukify does: an image file has no
//! use for one, and the new sections go where it was.
//!
//! [`assemble`] is a pure function over bytes; [`write_uki`] and [`sign`] are the file layer.
//!
//! The signature is the one part that is not reproducible: sbsign puts the signing time
//! (PKCS#9 `signingTime`, to the second) among its authenticated attributes and has no option
//! to leave it out. Everything it signs is: [`unsigned_part`] of a signed UKI is the unsigned
//! UKI, byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `MZ`: the DOS header's magic (PE/COFF specification, "MS-DOS Stub").
const DOS_MAGIC: &[u8; 2] = b"MZ";
/// Where the DOS header keeps the offset of the PE signature (`e_lfanew`).
const PE_OFFSET_FIELD: usize = 0x3c;
/// `PE\0\0`.
const PE_SIGNATURE: &[u8; 4] = b"PE\0\0";
/// The COFF file header's size (after the signature).
const COFF_HEADER_LEN: usize = 20;
/// One section header's size.
const SECTION_HEADER_LEN: usize = 40;
/// One COFF symbol table record's size.
const COFF_SYMBOL_LEN: usize = 18;
/// Optional header magics: PE32 and PE32+.
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Offsets of the fields we touch inside the optional header (the same in PE32 and PE32+).
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
/// Where the data directories start: PE32 and PE32+. Entry 4 is the certificate table.
const PE32_DATA_DIRECTORIES: usize = 96;
const PE32_PLUS_DATA_DIRECTORIES: usize = 112;
const CERTIFICATE_TABLE_ENTRY: usize = 4;
/// `IMAGE_FILE_LOCAL_SYMS_STRIPPED`, set once the symbol table is dropped.
const FILE_LOCAL_SYMS_STRIPPED: u16 = 0x0008;
/// Section characteristics: readable initialised data, and readable code (ukify marks `.linux`
/// as code: old kernels entered through the EFI handover protocol run in place).
const SCN_CNT_CODE: u32 = 0x0000_0020;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const SCN_MEM_READ: u32 = 0x4000_0000;

/// What goes into a UKI. Text sections are written as they are (no terminating NUL: the stub
/// takes a section's size as the text's length).
#[derive(Debug, Clone, Copy)]
pub struct UkiParts<'a> {
    /// The systemd EFI stub (`linuxx64.efi.stub`), unsigned.
    pub stub: &'a [u8],
    /// `.osrel`: an os-release file.
    pub os_release: &'a [u8],
    /// `.cmdline`: the kernel command line. Under Secure Boot the stub ignores any other.
    pub cmdline: &'a str,
    /// `.uname`: the kernel release, optional.
    pub uname: Option<&'a str>,
    /// `.initrd`: the initramfs.
    pub initrd: &'a [u8],
    /// `.linux`: the kernel image (bzImage / vmlinuz).
    pub linux: &'a [u8],
}

impl<'a> UkiParts<'a> {
    /// The sections in ukify's order, the kernel last.
    pub fn sections(&self) -> Vec<(&'static str, &'a [u8])> {
        let mut sections = vec![
            (".osrel", self.os_release),
            (".cmdline", self.cmdline.as_bytes()),
        ];
        if let Some(uname) = self.uname {
            sections.push((".uname", uname.as_bytes()));
        }
        sections.push((".initrd", self.initrd));
        sections.push((".linux", self.linux));
        sections
    }
}

/// Why a UKI could not be assembled from these bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UkiError {
    #[error("the stub is not a PE image: {0}")]
    NotPe(&'static str),
    #[error(
        "the stub is already signed (its certificate table is not empty): sign the UKI, not the stub, and assemble from the unsigned stub"
    )]
    SignedStub,
    #[error(
        "the stub's headers ({size_of_headers} bytes) have no room for {new} more section headers after its {existing}: \
         ukify would fail the same way; use a stub linked with room in its headers"
    )]
    NoHeaderRoom {
        size_of_headers: u32,
        existing: usize,
        new: usize,
    },
    #[error("the UKI would exceed 4 GiB, the most a PE image can address")]
    TooLarge,
}

/// A section header's fields, as read or to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

/// The few header fields a UKI's checks need, read from a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeLayout {
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub size_of_initialized_data: u32,
    pub checksum: u32,
    pub pointer_to_symbol_table: u32,
    pub sections: Vec<SectionHeader>,
    /// Byte offsets: the optional header and the section table.
    optional_header: usize,
    section_table: usize,
    coff_header: usize,
    /// The certificate table's data directory entry (file offset of the 8 bytes).
    certificate_directory: usize,
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, UkiError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(UkiError::NotPe("truncated header"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, UkiError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(UkiError::NotPe("truncated header"))
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `value` rounded up to a multiple of `alignment` (a power of two, or any non-zero value).
fn round_up(value: u64, alignment: u32) -> u64 {
    let alignment = u64::from(alignment.max(1));
    value.div_ceil(alignment) * alignment
}

impl PeLayout {
    /// Reads the headers of a PE image.
    pub fn parse(image: &[u8]) -> Result<PeLayout, UkiError> {
        if image.get(..2) != Some(DOS_MAGIC) {
            return Err(UkiError::NotPe("no MZ header"));
        }
        let pe = u32_at(image, PE_OFFSET_FIELD)? as usize;
        if image.get(pe..pe + 4) != Some(PE_SIGNATURE) {
            return Err(UkiError::NotPe("no PE signature"));
        }
        let coff_header = pe + 4;
        let sections = u16_at(image, coff_header + 2)? as usize;
        let pointer_to_symbol_table = u32_at(image, coff_header + 8)?;
        let optional_len = u16_at(image, coff_header + 16)? as usize;
        let optional_header = coff_header + COFF_HEADER_LEN;
        let directories = match u16_at(image, optional_header)? {
            PE32_MAGIC => PE32_DATA_DIRECTORIES,
            PE32_PLUS_MAGIC => PE32_PLUS_DATA_DIRECTORIES,
            _ => return Err(UkiError::NotPe("unknown optional header magic")),
        };
        let certificate_directory = optional_header + directories + 8 * CERTIFICATE_TABLE_ENTRY;
        if certificate_directory + 8 > optional_header + optional_len {
            return Err(UkiError::NotPe(
                "optional header without a certificate table entry",
            ));
        }
        let section_table = optional_header + optional_len;
        let field = |offset| u32_at(image, optional_header + offset);
        let mut layout = PeLayout {
            section_alignment: field(OPT_SECTION_ALIGNMENT)?,
            file_alignment: field(OPT_FILE_ALIGNMENT)?,
            size_of_image: field(OPT_SIZE_OF_IMAGE)?,
            size_of_headers: field(OPT_SIZE_OF_HEADERS)?,
            size_of_initialized_data: field(OPT_SIZE_OF_INITIALIZED_DATA)?,
            checksum: field(OPT_CHECKSUM)?,
            pointer_to_symbol_table,
            sections: Vec::with_capacity(sections),
            optional_header,
            section_table,
            coff_header,
            certificate_directory,
        };
        for index in 0..sections {
            let at = section_table + index * SECTION_HEADER_LEN;
            let name = image
                .get(at..at + 8)
                .ok_or(UkiError::NotPe("truncated section table"))?;
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
            layout.sections.push(SectionHeader {
                name,
                virtual_size: u32_at(image, at + 8)?,
                virtual_address: u32_at(image, at + 12)?,
                size_of_raw_data: u32_at(image, at + 16)?,
                pointer_to_raw_data: u32_at(image, at + 20)?,
                characteristics: u32_at(image, at + 36)?,
            });
        }
        Ok(layout)
    }

    /// The certificate table's (file offset, size): (0, 0) in an unsigned image.
    pub fn certificate_table(&self, image: &[u8]) -> Result<(u32, u32), UkiError> {
        Ok((
            u32_at(image, self.certificate_directory)?,
            u32_at(image, self.certificate_directory + 4)?,
        ))
    }

    /// A section's content as the loader maps it (raw data cut to the virtual size).
    pub fn section_data<'a>(&self, image: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let section = self.sections.iter().find(|s| s.name == name)?;
        let start = section.pointer_to_raw_data as usize;
        let len = section.virtual_size.min(section.size_of_raw_data) as usize;
        image.get(start..start + len)
    }
}

/// The stub with `parts`' sections appended: the UKI, unsigned. The same inputs always give
/// the same bytes.
pub fn assemble(parts: &UkiParts<'_>) -> Result<Vec<u8>, UkiError> {
    let layout = PeLayout::parse(parts.stub)?;
    if layout.certificate_table(parts.stub)? != (0, 0) {
        return Err(UkiError::SignedStub);
    }
    let new = parts.sections();
    let headers_end =
        layout.section_table + (layout.sections.len() + new.len()) * SECTION_HEADER_LEN;
    let first_raw_data = layout
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as usize)
        .min()
        .unwrap_or(usize::MAX);
    if headers_end > layout.size_of_headers as usize || headers_end > first_raw_data {
        return Err(UkiError::NoHeaderRoom {
            size_of_headers: layout.size_of_headers,
            existing: layout.sections.len(),
            new: new.len(),
        });
    }
    let mut image = parts.stub.to_vec();
    strip_symbol_table(&mut image, &layout)?;

    let mut sections = layout.sections.clone();
    let mut initialized_data = u64::from(layout.size_of_initialized_data);
    for (name, data) in new {
        // After the highest section (the last one, in any stub a linker made).
        let end = sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
            .max()
            .ok_or(UkiError::NotPe("no sections"))?;
        let virtual_address = round_up(end, layout.section_alignment);
        let pointer_to_raw_data = round_up(image.len() as u64, layout.file_alignment);
        let size_of_raw_data = round_up(data.len() as u64, layout.file_alignment);
        let fits = |value: u64| u32::try_from(value).map_err(|_| UkiError::TooLarge);
        let header = SectionHeader {
            name: name.to_owned(),
            virtual_size: fits(data.len() as u64)?,
            virtual_address: fits(virtual_address)?,
            size_of_raw_data: fits(size_of_raw_data)?,
            pointer_to_raw_data: fits(pointer_to_raw_data)?,
            characteristics: SCN_MEM_READ
                | if name == ".linux" {
                    SCN_CNT_CODE
                } else {
                    SCN_CNT_INITIALIZED_DATA
                },
        };
        fits(pointer_to_raw_data + size_of_raw_data)?;
        image.resize(pointer_to_raw_data as usize, 0);
        image.extend_from_slice(data);
        image.resize((pointer_to_raw_data + size_of_raw_data) as usize, 0);
        initialized_data += data.len() as u64;
        sections.push(header);
    }

    for (index, section) in sections.iter().enumerate().skip(layout.sections.len()) {
        write_section_header(
            &mut image,
            layout.section_table + index * SECTION_HEADER_LEN,
            section,
        );
    }
    let last = sections.last().ok_or(UkiError::NotPe("no sections"))?;
    let size_of_image = round_up(
        u64::from(last.virtual_address) + u64::from(last.virtual_size),
        layout.section_alignment,
    );
    let count = u16::try_from(sections.len()).map_err(|_| UkiError::TooLarge)?;
    put_u16(&mut image, layout.coff_header + 2, count);
    let opt = layout.optional_header;
    put_u32(
        &mut image,
        opt + OPT_SIZE_OF_IMAGE,
        u32::try_from(size_of_image).map_err(|_| UkiError::TooLarge)?,
    );
    put_u32(
        &mut image,
        opt + OPT_SIZE_OF_INITIALIZED_DATA,
        u32::try_from(initialized_data).map_err(|_| UkiError::TooLarge)?,
    );
    put_u32(&mut image, opt + OPT_CHECKSUM, 0);
    Ok(image)
}

/// A signed image without its signature: the certificate table cut off, the header's entry
/// for it and the checksum (which sbsign computes) zeroed. For a UKI that [`assemble`] made
/// and sbsign signed, this is the unsigned UKI again (its size is a multiple of the file
/// alignment, so sbsign added no padding before the table).
pub fn unsigned_part(image: &[u8]) -> Result<Vec<u8>, UkiError> {
    let layout = PeLayout::parse(image)?;
    let (offset, size) = layout.certificate_table(image)?;
    let mut unsigned = image.to_vec();
    if (offset, size) != (0, 0) {
        if offset as usize + size as usize > image.len() {
            return Err(UkiError::NotPe(
                "certificate table beyond the end of the file",
            ));
        }
        unsigned.truncate(offset as usize);
    }
    put_u32(&mut unsigned, layout.certificate_directory, 0);
    put_u32(&mut unsigned, layout.certificate_directory + 4, 0);
    put_u32(&mut unsigned, layout.optional_header + OPT_CHECKSUM, 0);
    Ok(unsigned)
}

/// Drops a COFF symbol table (and its string table) that ends the file, as ukify does; one
/// elsewhere is left alone (the new sections go after it).
fn strip_symbol_table(image: &mut Vec<u8>, layout: &PeLayout) -> Result<(), UkiError> {
    let start = layout.pointer_to_symbol_table as usize;
    if start == 0 {
        return Ok(());
    }
    let symbols = u32_at(image, layout.coff_header + 12)? as usize;
    let strings_at = start + symbols * COFF_SYMBOL_LEN;
    // The string table's first four bytes are its size, themselves included.
    let strings = u32_at(image, strings_at).unwrap_or(0) as usize;
    if strings_at + strings == image.len() || strings_at == image.len() {
        image.truncate(start);
        put_u32(image, layout.coff_header + 8, 0);
        put_u32(image, layout.coff_header + 12, 0);
        let characteristics = u16_at(image, layout.coff_header + 18)?;
        put_u16(
            image,
            layout.coff_header + 18,
            characteristics | FILE_LOCAL_SYMS_STRIPPED,
        );
    }
    Ok(())
}

fn write_section_header(image: &mut [u8], at: usize, section: &SectionHeader) {
    let mut name = [0u8; 8];
    name[..section.name.len()].copy_from_slice(section.name.as_bytes());
    image[at..at + 8].copy_from_slice(&name);
    put_u32(image, at + 8, section.virtual_size);
    put_u32(image, at + 12, section.virtual_address);
    put_u32(image, at + 16, section.size_of_raw_data);
    put_u32(image, at + 20, section.pointer_to_raw_data);
    // No relocations or line numbers.
    image[at + 24..at + 36].fill(0);
    put_u32(image, at + 36, section.characteristics);
}

/// The files of a UKI, as `builder uki` takes them.
#[derive(Debug, Clone)]
pub struct UkiFiles {
    pub stub: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub os_release: PathBuf,
    pub cmdline: String,
    pub uname: Option<String>,
}

/// Why a UKI could not be written or signed.
#[derive(Debug, thiserror::Error)]
pub enum UkiFileError {
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("assembling the UKI from {}: {error}", stub.display())]
    Assemble {
        stub: PathBuf,
        #[source]
        error: UkiError,
    },
    #[error(transparent)]
    Write(#[from] crate::replace::ReplaceError),
    #[error("running sbsign (from sbsigntool): {0}")]
    Sbsign(String),
}

/// Assembles the UKI of `files` into `output` (replaced atomically); returns its size.
pub fn write_uki(files: &UkiFiles, output: &Path) -> Result<u64, UkiFileError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| UkiFileError::Read {
            path: path.to_owned(),
            error,
        })
    };
    let stub = read(&files.stub)?;
    let linux = read(&files.kernel)?;
    let initrd = read(&files.initrd)?;
    let os_release = read(&files.os_release)?;
    let uki = assemble(&UkiParts {
        stub: &stub,
        os_release: &os_release,
        cmdline: &files.cmdline,
        uname: files.uname.as_deref(),
        initrd: &initrd,
        linux: &linux,
    })
    .map_err(|error| UkiFileError::Assemble {
        stub: files.stub.clone(),
        error,
    })?;
    crate::replace::replace_file(output, &uki, 0o644)?;
    Ok(uki.len() as u64)
}

/// Signs `unsigned` into `output` with `sbsign` (Authenticode, for Secure Boot's `db`).
/// sbsign records the signing time in the signature, so two signings in different seconds
/// differ in the signature (and the header checksum) only: see [`unsigned_part`].
pub fn sign(unsigned: &Path, key: &Path, cert: &Path, output: &Path) -> Result<(), UkiFileError> {
    let result = Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--output")
        .arg(output)
        .arg(unsigned)
        .output();
    match result {
        Err(error) => Err(UkiFileError::Sbsign(format!(
            "{error} (install sbsigntool: cargo xtask provision)"
        ))),
        Ok(out) if !out.status.success() => Err(UkiFileError::Sbsign(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: headers with room for `room` more sections, one `.text` section,
    /// and optionally a symbol table at the end.
    fn fake_stub(room: usize, symbols: bool) -> Vec<u8> {
        let file_alignment = 0x200u32;
        let pe = 0x80usize;
        let optional_len = 240usize;
        let table = pe + 4 + COFF_HEADER_LEN + optional_len;
        let headers = round_up(
            (table + (1 + room) * SECTION_HEADER_LEN) as u64,
            file_alignment,
        ) as usize;
        let mut image = vec![0u8; headers + 0x200];
        image[..2].copy_from_slice(DOS_MAGIC);
        put_u32(&mut image, PE_OFFSET_FIELD, pe as u32);
        image[pe..pe + 4].copy_from_slice(PE_SIGNATURE);
        let coff = pe + 4;
        put_u16(&mut image, coff, 0x8664);
        put_u16(&mut image, coff + 2, 1);
        put_u16(&mut image, coff + 16, optional_len as u16);
        let opt = coff + COFF_HEADER_LEN;
        put_u16(&mut image, opt, PE32_PLUS_MAGIC);
        put_u32(&mut image, opt + OPT_SECTION_ALIGNMENT, 0x1000);
        put_u32(&mut image, opt + OPT_FILE_ALIGNMENT, file_alignment);
        put_u32(&mut image, opt + OPT_SIZE_OF_IMAGE, 0x2000);
        put_u32(&mut image, opt + OPT_SIZE_OF_HEADERS, headers as u32);
        put_u32(&mut image, opt + OPT_CHECKSUM, 0xdead);
        write_section_header(
            &mut image,
            table,
            &SectionHeader {
                name: ".text".into(),
                virtual_size: 0x123,
                virtual_address: 0x1000,
                size_of_raw_data: 0x200,
                pointer_to_raw_data: headers as u32,
                characteristics: 0x6000_0020,
            },
        );
        image[headers..headers + 4].copy_from_slice(b"code");
        if symbols {
            let end = image.len() as u32;
            put_u32(&mut image, coff + 8, end);
            put_u32(&mut image, coff + 12, 2);
            image.extend_from_slice(&[7u8; 2 * COFF_SYMBOL_LEN]);
            image.extend_from_slice(&9u32.to_le_bytes());
            image.extend_from_slice(b"abcde");
        }
        image
    }

    fn parts(stub: &[u8]) -> UkiParts<'_> {
        UkiParts {
            stub,
            os_release: b"ID=test\n",
            cmdline: "console=ttyS0 quiet",
            uname: Some("6.12.0-test"),
            initrd: &[0x11; 0x345],
            linux: &[0x22; 0x1001],
        }
    }

    /// Every new section holds its content at an aligned offset and address, after the last
    /// one before it, and the headers count them.
    #[test]
    fn sections_land_aligned_with_their_content() {
        for symbols in [false, true] {
            let stub = fake_stub(5, symbols);
            let parts = parts(&stub);
            let uki = assemble(&parts).unwrap();
            let layout = PeLayout::parse(&uki).unwrap();
            let names: Vec<&str> = layout.sections.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(
                names,
                [".text", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
            );
            for (name, data) in parts.sections() {
                assert_eq!(layout.section_data(&uki, name), Some(data), "{name}");
            }
            for pair in layout.sections.windows(2) {
                let (before, after) = (&pair[0], &pair[1]);
                assert_eq!(after.virtual_address % layout.section_alignment, 0);
                assert_eq!(after.pointer_to_raw_data % layout.file_alignment, 0);
                assert_eq!(after.size_of_raw_data % layout.file_alignment, 0);
                assert!(after.virtual_address >= before.virtual_address + before.virtual_size);
                assert!(
                    after.pointer_to_raw_data
                        >= before.pointer_to_raw_data + before.size_of_raw_data
                );
            }
            let last = layout.sections.last().unwrap();
            assert_eq!(
                uki.len() as u32,
                last.pointer_to_raw_data + last.size_of_raw_data
            );
            assert_eq!(
                layout.size_of_image,
                round_up((last.virtual_address + last.virtual_size).into(), 0x1000) as u32
            );
            assert_eq!(layout.checksum, 0);
            assert_eq!(layout.pointer_to_symbol_table, 0);
            assert_eq!(layout.section_data(&uki, ".text").unwrap()[..4], *b"code");
            let linux = layout.sections.iter().find(|s| s.name == ".linux").unwrap();
            assert_eq!(linux.characteristics, SCN_MEM_READ | SCN_CNT_CODE);
            let initrd = layout
                .sections
                .iter()
                .find(|s| s.name == ".initrd")
                .unwrap();
            assert_eq!(
                initrd.characteristics,
                SCN_MEM_READ | SCN_CNT_INITIALIZED_DATA
            );
            assert_eq!(
                layout.size_of_initialized_data as usize,
                parts.sections().iter().map(|(_, d)| d.len()).sum::<usize>()
            );
            // Reproducible: the same inputs, the same bytes.
            assert_eq!(assemble(&parts).unwrap(), uki);
        }
    }

    #[test]
    fn without_uname_there_is_no_uname_section() {
        let stub = fake_stub(4, false);
        let uki = assemble(&UkiParts {
            uname: None,
            ..parts(&stub)
        })
        .unwrap();
        let layout = PeLayout::parse(&uki).unwrap();
        assert_eq!(layout.sections.len(), 5);
        assert!(layout.section_data(&uki, ".uname").is_none());
    }

    #[test]
    fn refusals() {
        let check = |stub: &[u8], expected: UkiError| {
            assert_eq!(assemble(&parts(stub)).unwrap_err(), expected);
        };
        // Headers rounded up to 512 bytes leave room for two more section headers only.
        let tight = fake_stub(0, false);
        check(
            &tight,
            UkiError::NoHeaderRoom {
                size_of_headers: 0x200,
                existing: 1,
                new: 5,
            },
        );
        check(b"ELF", UkiError::NotPe("no MZ header"));
        let mut no_pe = fake_stub(5, false);
        no_pe[0x80] = b'X';
        check(&no_pe, UkiError::NotPe("no PE signature"));
        let mut signed = fake_stub(5, false);
        let layout = PeLayout::parse(&signed).unwrap();
        put_u32(&mut signed, layout.certificate_directory, 0x1000);
        put_u32(&mut signed, layout.certificate_directory + 4, 0x10);
        check(&signed, UkiError::SignedStub);
    }

    /// The real stub, where a test machine has it (systemd-boot-efi).
    const DEBIAN_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    fn debian_stub() -> Option<Vec<u8>> {
        let path = Path::new(DEBIAN_STUB);
        crate::test_tools::have_file(path, "apt-get install systemd-boot-efi")
            .then(|| std::fs::read(path).unwrap_or_else(|e| panic!("{DEBIAN_STUB}: {e}")))
    }

    fn tool(name: &str) -> bool {
        crate::test_tools::have_tool(name, "cargo xtask provision installs it")
    }

    /// binutils reads the UKI made from Debian's stub back: every section, at the offsets we
    /// wrote.
    #[test]
    fn objdump_reads_the_real_stub_uki() {
        let Some(stub) = debian_stub() else { return };
        if !tool("objdump") {
            return;
        }
        let uki = assemble(&parts(&stub)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uki.efi");
        std::fs::write(&path, &uki).unwrap();
        let out = Command::new("objdump")
            .arg("-h")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        let layout = PeLayout::parse(&uki).unwrap();
        for section in &layout.sections[layout.sections.len() - 5..] {
            let line = listing
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(section.name.as_str()))
                .unwrap_or_else(|| panic!("{} missing from:\n{listing}", section.name));
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                u64::from_str_radix(fields[2], 16).unwrap(),
                section.virtual_size.into(),
                "{line}"
            );
            assert_eq!(
                u64::from_str_radix(fields[3], 16).unwrap(),
                section.virtual_address.into(),
                "{line}"
            );
            assert_eq!(
                u64::from_str_radix(fields[5], 16).unwrap(),
                section.pointer_to_raw_data.into(),
                "{line}"
            );
        }
        assert!(listing.contains(".sdmagic"), "{listing}");
    }

    /// A throwaway key pair: (key, cert) in `dir`.
    fn key_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let (key, cert) = (dir.join("db.key"), dir.join("db.crt"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=uki test/",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        (key, cert)
    }

    /// sbsign signs the UKI, sbverify checks the signature with the certificate, and without
    /// its signature a signed UKI is the unsigned one, whenever it was signed.
    #[test]
    fn sign_verifies_and_only_the_signature_varies() {
        let Some(stub) = debian_stub() else { return };
        if !tool("openssl") || !tool("sbsign") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key_pair(dir.path());
        let unsigned = dir.path().join("uki.efi");
        let unsigned_bytes = assemble(&parts(&stub)).unwrap();
        std::fs::write(&unsigned, &unsigned_bytes).unwrap();
        let signed = [dir.path().join("a.efi"), dir.path().join("b.efi")];
        for output in &signed {
            // A second apart: sbsign's signing time then differs between the two.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            sign(&unsigned, &key, &cert, output).unwrap();
            let bytes = std::fs::read(output).unwrap();
            assert!(unsigned_part(&bytes).unwrap() == unsigned_bytes);
        }
        let verify = Command::new("sbverify")
            .arg("--cert")
            .arg(&cert)
            .arg(&signed[0])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let a = std::fs::read(&signed[0]).unwrap();
        let layout = PeLayout::parse(&a).unwrap();
        assert_ne!(layout.certificate_table(&a).unwrap(), (0, 0));
        assert_eq!(
            layout.section_data(&a, ".cmdline"),
            Some(&b"console=ttyS0 quiet"[..])
        );
        let list = Command::new("sbverify")
            .arg("--list")
            .arg(&signed[0])
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
}
