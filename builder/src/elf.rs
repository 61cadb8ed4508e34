//! A small reader of what an ELF executable or shared library needs at run time: its program
//! interpreter (`PT_INTERP`), the libraries it names (`DT_NEEDED`) and where it says to look for
//! them (`DT_RUNPATH`, `DT_RPATH`). Pure and bounds-checked: the bytes come from an initramfs or
//! a root tree we did not build. Layouts from the System V ABI's ELF chapters and `<elf.h>`.

/// `\x7fELF`, the first four bytes of `e_ident`.
const MAGIC: &[u8; 4] = b"\x7fELF";
/// `e_ident[EI_CLASS]`: 1 = `ELFCLASS32`, 2 = `ELFCLASS64`.
const EI_CLASS: usize = 4;
/// `e_ident[EI_DATA]`: 1 = `ELFDATA2LSB`, 2 = `ELFDATA2MSB`.
const EI_DATA: usize = 5;
/// Program header types (`p_type`).
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// Dynamic section tags (`d_tag`).
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// At most this many program headers are read: far above any real object (a handful).
const MAX_PROGRAM_HEADERS: usize = 4096;

/// Why bytes are not an ELF object this reader understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("ELF class or byte order {0} is not 32/64-bit little or big endian")]
    UnknownClass(String),
    #[error("ELF {what} lies outside the file")]
    OutOfBounds { what: &'static str },
    #[error("ELF {what} is malformed: {problem}")]
    Malformed {
        what: &'static str,
        problem: &'static str,
    },
}

/// What the dynamic loader needs to run an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// `e_machine` (62 x86_64, 183 aarch64, …).
    pub machine: u16,
    /// The program interpreter (`PT_INTERP`), e.g. `/lib64/ld-linux-x86-64.so.2`; none for a
    /// shared library or a static executable.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or, where absent, `DT_RPATH`) split at `:`, unexpanded (`$ORIGIN` stays).
    pub search_path: Vec<String>,
}

/// Reads fields of one class and byte order.
#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    wide: bool,
    big_endian: bool,
}

impl Reader<'_> {
    fn slice(&self, offset: u64, len: u64, what: &'static str) -> Result<&[u8], ElfError> {
        let start = usize::try_from(offset).map_err(|_| ElfError::OutOfBounds { what })?;
        let len = usize::try_from(len).map_err(|_| ElfError::OutOfBounds { what })?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(ElfError::OutOfBounds { what })
    }

    fn uint(&self, offset: u64, size: u64, what: &'static str) -> Result<u64, ElfError> {
        let field = self.slice(offset, size, what)?;
        let fold = |acc: u64, byte: &u8| (acc << 8) | u64::from(*byte);
        Ok(if self.big_endian {
            field.iter().fold(0, fold)
        } else {
            field.iter().rev().fold(0, fold)
        })
    }

    fn u16(&self, offset: u64, what: &'static str) -> Result<u64, ElfError> {
        self.uint(offset, 2, what)
    }

    fn u32(&self, offset: u64, what: &'static str) -> Result<u64, ElfError> {
        self.uint(offset, 4, what)
    }

    /// An address, offset or size: 4 bytes in ELF32, 8 in ELF64.
    fn word(&self, offset: u64, what: &'static str) -> Result<u64, ElfError> {
        self.uint(offset, if self.wide { 8 } else { 4 }, what)
    }
}

/// One program header's fields that matter here.
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Reads `bytes` as an ELF object. A static executable gives no interpreter and no libraries.
pub fn read_dynamic(bytes: &[u8]) -> Result<Dynamic, ElfError> {
    if bytes.get(..4) != Some(MAGIC) {
        return Err(ElfError::NotElf);
    }
    let ident = |i: usize| bytes.get(i).copied().ok_or(ElfError::NotElf);
    let (wide, big_endian) = match (ident(EI_CLASS)?, ident(EI_DATA)?) {
        (1, 1) => (false, false),
        (1, 2) => (false, true),
        (2, 1) => (true, false),
        (2, 2) => (true, true),
        (class, data) => return Err(ElfError::UnknownClass(format!("{class}/{data}"))),
    };
    let r = Reader {
        bytes,
        wide,
        big_endian,
    };
    // Elf32_Ehdr / Elf64_Ehdr: e_machine at 18; e_phoff at 28 / 32; e_phentsize and e_phnum at
    // 42, 44 / 54, 56.
    let machine = r.u16(18, "header")? as u16;
    let (phoff, phentsize, phnum) = if wide {
        (
            r.word(32, "header")?,
            r.u16(54, "header")?,
            r.u16(56, "header")?,
        )
    } else {
        (
            r.word(28, "header")?,
            r.u16(42, "header")?,
            r.u16(44, "header")?,
        )
    };
    let phnum = usize::try_from(phnum).unwrap_or(usize::MAX);
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::Malformed {
            what: "program header table",
            problem: "too many entries",
        });
    }
    let mut segments = Vec::with_capacity(phnum);
    for index in 0..phnum as u64 {
        let at = phoff
            .checked_add(index * phentsize)
            .ok_or(ElfError::OutOfBounds {
                what: "program header",
            })?;
        const WHAT: &str = "program header";
        // Elf64_Phdr: type 0, flags 4, offset 8, vaddr 16, paddr 24, filesz 32.
        // Elf32_Phdr: type 0, offset 4, vaddr 8, paddr 12, filesz 16.
        let segment = if wide {
            Segment {
                kind: r.u32(at, WHAT)? as u32,
                offset: r.word(at + 8, WHAT)?,
                vaddr: r.word(at + 16, WHAT)?,
                filesz: r.word(at + 32, WHAT)?,
            }
        } else {
            Segment {
                kind: r.u32(at, WHAT)? as u32,
                offset: r.word(at + 4, WHAT)?,
                vaddr: r.word(at + 8, WHAT)?,
                filesz: r.word(at + 16, WHAT)?,
            }
        };
        segments.push(segment);
    }

    let mut dynamic = Dynamic {
        machine,
        ..Dynamic::default()
    };
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let raw = r.slice(interp.offset, interp.filesz, "interpreter")?;
        dynamic.interpreter = Some(c_string(raw, "interpreter")?);
    }
    let Some(table) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok(dynamic);
    };
    let entry_size = if wide { 16 } else { 8 };
    let mut tags = Vec::new();
    let mut at = table.offset;
    let end = table
        .offset
        .checked_add(table.filesz)
        .ok_or(ElfError::OutOfBounds {
            what: "dynamic section",
        })?;
    while at + entry_size <= end {
        let tag = r.word(at, "dynamic section")?;
        let value = r.word(at + entry_size / 2, "dynamic section")?;
        if tag == DT_NULL {
            break;
        }
        tags.push((tag, value));
        at += entry_size;
    }
    let find = |wanted: u64| tags.iter().find(|(tag, _)| *tag == wanted).map(|t| t.1);
    let Some(strtab_address) = find(DT_STRTAB) else {
        return if tags.iter().any(|(tag, _)| *tag == DT_NEEDED) {
            Err(ElfError::Malformed {
                what: "dynamic section",
                problem: "DT_NEEDED without DT_STRTAB",
            })
        } else {
            Ok(dynamic)
        };
    };
    // DT_STRTAB is an address: the loadable segment that holds it says where it is in the file.
    let strtab_offset = segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| strtab_address >= s.vaddr && strtab_address - s.vaddr < s.filesz)
        .map(|s| s.offset + (strtab_address - s.vaddr))
        .ok_or(ElfError::OutOfBounds {
            what: "string table",
        })?;
    let strtab_len = find(DT_STRSZ).ok_or(ElfError::Malformed {
        what: "dynamic section",
        problem: "DT_STRTAB without DT_STRSZ",
    })?;
    let strtab = r.slice(strtab_offset, strtab_len, "string table")?;
    let string = |offset: u64| {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < strtab.len())
            .ok_or(ElfError::OutOfBounds {
                what: "dynamic string",
            })?;
        c_string(&strtab[start..], "dynamic string")
    };
    for (tag, value) in &tags {
        if *tag == DT_NEEDED {
            dynamic.needed.push(string(*value)?);
        }
    }
    // The loader ignores DT_RPATH when DT_RUNPATH is present (ld.so(8)).
    if let Some(path) = find(DT_RUNPATH).or_else(|| find(DT_RPATH)) {
        dynamic.search_path = string(path)?
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Ok(dynamic)
}

/// The NUL-terminated UTF-8 string at the start of `raw`.
fn c_string(raw: &[u8], what: &'static str) -> Result<String, ElfError> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or(ElfError::Malformed {
            what,
            problem: "no terminating NUL",
        })?;
    String::from_utf8(raw[..end].to_vec()).map_err(|_| ElfError::Malformed {
        what,
        problem: "not UTF-8",
    })
}

/// A minimal ELF64 little-endian object for tests: one `PT_LOAD` covering the file, `PT_INTERP`
/// when `interpreter` is given, and a `PT_DYNAMIC` naming `needed` and `runpath`.
#[cfg(test)]
pub(crate) fn test_object(
    machine: u16,
    interpreter: Option<&str>,
    needed: &[&str],
    runpath: Option<&str>,
) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let phnum = 2 + usize::from(interpreter.is_some());
    let mut strtab = vec![0u8];
    let mut add = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let mut dynamic: Vec<(u64, u64)> = needed.iter().map(|n| (DT_NEEDED, add(n))).collect();
    if let Some(path) = runpath {
        dynamic.push((DT_RUNPATH, add(path)));
    }
    let interp_at = EHDR + PHDR * phnum;
    let interp: Vec<u8> = interpreter
        .map(|i| [i.as_bytes(), b"\0"].concat())
        .unwrap_or_default();
    let strtab_at = interp_at + interp.len();
    // A virtual address unlike the file offset, so the mapping through PT_LOAD is exercised.
    const BASE: u64 = 0x40_0000;
    dynamic.push((DT_STRTAB, BASE + strtab_at as u64));
    dynamic.push((DT_STRSZ, strtab.len() as u64));
    dynamic.push((DT_NULL, 0));
    let dynamic_at = strtab_at + strtab.len();
    let total = dynamic_at + dynamic.len() * 16;

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[2, 1, 1, 0]);
    out.resize(16, 0);
    out.extend_from_slice(&3u16.to_le_bytes()); // e_type ET_DYN
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR as u16).to_le_bytes());
    out.extend_from_slice(&(PHDR as u16).to_le_bytes());
    out.extend_from_slice(&(phnum as u16).to_le_bytes());
    out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    let mut phdr = |kind: u32, offset: usize, len: usize| {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(BASE + offset as u64).to_le_bytes());
        out.extend_from_slice(&(BASE + offset as u64).to_le_bytes());
        out.extend_from_slice(&(len as u64).to_le_bytes());
        out.extend_from_slice(&(len as u64).to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
    };
    phdr(PT_LOAD, 0, total);
    if interpreter.is_some() {
        phdr(PT_INTERP, interp_at, interp.len());
    }
    phdr(PT_DYNAMIC, dynamic_at, dynamic.len() * 16);
    out.extend_from_slice(&interp);
    out.extend_from_slice(&strtab);
    for (tag, value) in dynamic {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_interpreter_needed_and_runpath() {
        let bytes = test_object(
            62,
            Some("/lib64/ld-linux-x86-64.so.2"),
            &["libsystemd-shared-252.so", "libc.so.6"],
            Some("/usr/lib/x86_64-linux-gnu/systemd:$ORIGIN/../lib"),
        );
        let dynamic = read_dynamic(&bytes).unwrap();
        assert_eq!(
            dynamic,
            Dynamic {
                machine: 62,
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libsystemd-shared-252.so".into(), "libc.so.6".into()],
                search_path: vec![
                    "/usr/lib/x86_64-linux-gnu/systemd".into(),
                    "$ORIGIN/../lib".into()
                ],
            }
        );
    }

    #[test]
    fn a_library_has_no_interpreter() {
        let dynamic = read_dynamic(&test_object(183, None, &["libc.so.6"], None)).unwrap();
        assert_eq!(dynamic.interpreter, None);
        assert_eq!(dynamic.needed, ["libc.so.6"]);
        assert!(dynamic.search_path.is_empty());
    }

    #[test]
    fn refuses_what_is_not_elf_or_is_cut_short() {
        assert_eq!(read_dynamic(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(read_dynamic(b""), Err(ElfError::NotElf));
        let whole = test_object(62, Some("/lib/ld.so"), &["libc.so.6"], None);
        // Every truncation is an error, never a panic or a partial answer.
        for len in 4..whole.len() {
            assert!(read_dynamic(&whole[..len]).is_err(), "cut at {len}");
        }
        let mut odd_class = whole.clone();
        odd_class[EI_CLASS] = 3;
        assert!(matches!(
            read_dynamic(&odd_class),
            Err(ElfError::UnknownClass(_))
        ));
        // A needed name pointing past the string table.
        let mut bad = whole;
        let at = bad.len() - 16 * 4 + 8;
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_dynamic(&bad).is_err());
    }

    /// This test binary itself, where it is linked against glibc: a real linker's output.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn reads_this_test_binary() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let dynamic = read_dynamic(&bytes).unwrap();
        assert!(dynamic.interpreter.is_some(), "{dynamic:?}");
        assert!(
            dynamic.needed.iter().any(|n| n.starts_with("libc.so")),
            "{dynamic:?}"
        );
    }
}
