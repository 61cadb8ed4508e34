//! A kernel module's `.modinfo` section (`key=value` strings, NUL-separated), read straight
//! from the ELF file, so the builder needs no `modinfo` binary and no kmod library. Used for
//! the firmware files a module declares (`MODULE_FIRMWARE`), which must ride along in the mini
//! initramfs when the module probes before the real root is there.
//!
//! The reader checks every offset against the file: a truncated or hostile module gives an
//! error naming what is wrong, never a panic.

/// Why a module's `.modinfo` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModinfoError {
    #[error("not an ELF file")]
    NotElf,
    #[error("ELF {0} is out of the file's bounds")]
    OutOfBounds(&'static str),
    #[error("no .modinfo section")]
    NoModinfo,
}

/// The ELF header fields this reader needs, by class (32- or 64-bit).
struct Layout {
    shoff: (usize, usize),
    shentsize: usize,
    shnum: usize,
    shstrndx: usize,
    sh_offset: (usize, usize),
    sh_size: (usize, usize),
}

const ELF32: Layout = Layout {
    shoff: (0x20, 4),
    shentsize: 0x2e,
    shnum: 0x30,
    shstrndx: 0x32,
    sh_offset: (0x10, 4),
    sh_size: (0x14, 4),
};
const ELF64: Layout = Layout {
    shoff: (0x28, 8),
    shentsize: 0x3a,
    shnum: 0x3c,
    shstrndx: 0x3e,
    sh_offset: (0x18, 8),
    sh_size: (0x20, 8),
};

/// Every `key=value` of the module's `.modinfo`, in file order.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, ModinfoError> {
    let section = section(elf, ".modinfo")?;
    Ok(section
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect())
}

/// The firmware files the module declares (`firmware=` entries), as paths under
/// /lib/firmware.
pub fn firmware(elf: &[u8]) -> Result<Vec<String>, ModinfoError> {
    Ok(modinfo(elf)?
        .into_iter()
        .filter(|(key, _)| key == "firmware")
        .map(|(_, value)| value)
        .collect())
}

fn section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8], ModinfoError> {
    if elf.len() < 0x40 || &elf[..4] != b"\x7fELF" {
        return Err(ModinfoError::NotElf);
    }
    let layout = match elf[4] {
        1 => &ELF32,
        2 => &ELF64,
        _ => return Err(ModinfoError::NotElf),
    };
    let big_endian = match elf[5] {
        1 => false,
        2 => true,
        _ => return Err(ModinfoError::NotElf),
    };
    let read = |offset: usize, len: usize, what: &'static str| -> Result<usize, ModinfoError> {
        let bytes = elf
            .get(
                offset
                    ..offset
                        .checked_add(len)
                        .ok_or(ModinfoError::OutOfBounds(what))?,
            )
            .ok_or(ModinfoError::OutOfBounds(what))?;
        let mut value: u64 = 0;
        for i in 0..len {
            let byte = if big_endian {
                bytes[i]
            } else {
                bytes[len - 1 - i]
            };
            value = (value << 8) | u64::from(byte);
        }
        usize::try_from(value).map_err(|_| ModinfoError::OutOfBounds(what))
    };
    let shoff = read(layout.shoff.0, layout.shoff.1, "section header offset")?;
    let shentsize = read(layout.shentsize, 2, "section header size")?;
    let shnum = read(layout.shnum, 2, "section count")?;
    let shstrndx = read(layout.shstrndx, 2, "section name table index")?;
    let header = |index: usize| -> Result<usize, ModinfoError> {
        index
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or(ModinfoError::OutOfBounds("section header"))
    };
    let slice = |index: usize, what: &'static str| -> Result<&'a [u8], ModinfoError> {
        let at = header(index)?;
        let offset = read(at + layout.sh_offset.0, layout.sh_offset.1, what)?;
        let size = read(at + layout.sh_size.0, layout.sh_size.1, what)?;
        elf.get(
            offset
                ..offset
                    .checked_add(size)
                    .ok_or(ModinfoError::OutOfBounds(what))?,
        )
        .ok_or(ModinfoError::OutOfBounds(what))
    };
    if shstrndx >= shnum {
        return Err(ModinfoError::OutOfBounds("section name table index"));
    }
    let names = slice(shstrndx, "section name table")?;
    for index in 0..shnum {
        let name_offset = read(header(index)?, 4, "section name")?;
        let name = names
            .get(name_offset..)
            .ok_or(ModinfoError::OutOfBounds("section name"))?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return slice(index, "section");
        }
    }
    Err(ModinfoError::NoModinfo)
}

/// A minimal ELF64 little-endian file with a `.modinfo` and a section name table.
#[cfg(test)]
pub(crate) fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
    let names = b"\0.modinfo\0.shstrtab\0";
    let mut elf = vec![0u8; 0x40];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    let modinfo_at = elf.len();
    elf.extend_from_slice(modinfo);
    let names_at = elf.len();
    elf.extend_from_slice(names);
    let shoff = elf.len();
    let mut header = |name: u32, offset: usize, size: usize| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
        h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
        elf.extend_from_slice(&h);
    };
    header(0, 0, 0);
    header(1, modinfo_at, modinfo.len());
    header(10, names_at, names.len());
    elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_firmware_entries() {
        let elf = elf_with_modinfo(
            b"license=GPL\0firmware=renesas_usb_fw.mem\0\0firmware=qcom/a.bin\0name=x\0",
        );
        assert_eq!(
            firmware(&elf).unwrap(),
            ["renesas_usb_fw.mem", "qcom/a.bin"]
        );
        assert_eq!(modinfo(&elf).unwrap().len(), 4);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let elf = elf_with_modinfo(b"firmware=a\0");
        assert_eq!(firmware(b"not elf"), Err(ModinfoError::NotElf));
        // Every truncation and every single corrupted byte: an answer, never a panic.
        for len in 0..elf.len() {
            let _ = firmware(&elf[..len]);
        }
        for at in 0..elf.len() {
            let mut bad = elf.clone();
            bad[at] ^= 0xff;
            let _ = firmware(&bad);
        }
        assert!(
            firmware(&elf[..elf.len() - 64]).is_err(),
            "the name table header cut off"
        );
    }

    /// The real Debian kernel's modules, as `modinfo` reads them.
    #[test]
    fn real_modules() {
        let Some(kernel) = crate::real_kernel_tree() else {
            return;
        };
        let dir = kernel.dir();
        let module = |base: &str| {
            ["", ".xz", ".zst"]
                .iter()
                .map(|suffix| dir.join(format!("kernel/{base}.ko{suffix}")))
                .find(|p| p.is_file())
                .map(|p| crate::modules::read_module(&p).unwrap())
        };
        // A module that asks for firmware, where the kernel's config builds it as one (Debian's
        // 6.12 does; its 6.1 leaves it out).
        let config =
            crate::kernel_config::KernelConfig::locate(&kernel.root, &kernel.kver).unwrap();
        match module("drivers/usb/host/xhci-pci-renesas") {
            Some(renesas) => {
                assert_eq!(firmware(&renesas).unwrap(), ["renesas_usb_fw.mem"]);
            }
            None => assert_ne!(
                config.value("CONFIG_USB_XHCI_PCI_RENESAS"),
                Some("m"),
                "the config builds xhci-pci-renesas as a module, but {} has none",
                dir.display()
            ),
        }
        let ext4 = module("fs/ext4/ext4").unwrap();
        let info = modinfo(&ext4).unwrap();
        assert!(
            info.iter().any(|(k, v)| k == "name" && v == "ext4"),
            "{info:?}"
        );
        assert!(firmware(&ext4).unwrap().is_empty());
    }
}
