//! UEFI variables through efivarfs, for `emergency fallback`.
//!
//! efivarfs shows each variable as the file `/sys/firmware/efi/efivars/<Name>-<vendor GUID>`.
//! The file's bytes are the variable's attributes, a 32-bit little-endian integer, followed by
//! its data. A write must carry attributes and data in one write(2) call: efivarfs sets the
//! variable from that one buffer (a second write would replace it with a data-less fragment).
//! efivarfs marks the files of most variables immutable, so replacing one first clears that
//! inode flag.
//!
//! The variables storage-init writes, all with the attributes NON_VOLATILE |
//! BOOTSERVICE_ACCESS | RUNTIME_ACCESS (`0x7`):
//!
//! * `LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f` ([`LOADER_ENTRY_ONE_SHOT`],
//!   systemd's [`LOADER_GUID`]): the Boot Loader Specification id of the entry systemd-boot
//!   starts at the next boot, once (it deletes the variable as it reads it), as a UTF-16LE
//!   string ending in a NUL code unit, like every string variable of systemd-boot.
//! * `InitoverlayfsFatal-d1efdcf3-52ba-4d02-a901-f50019e5e910` ([`INITOVERLAYFS_FATAL`], this
//!   project's [`INITOVERLAYFS_GUID`]): the FATAL line that ended the failed boot, as printed
//!   (`storage-init: FATAL: <what>: <why>`), UTF-8 without a terminating NUL, cut at a character
//!   boundary to at most [`FATAL_MAX_BYTES`]. The next boot's `initoverlayfs-builder status`
//!   reports it.
//!
//! storage-init reads `LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f` ([`LOADER_INFO`]), which
//! systemd-boot sets to its name and version (`systemd-boot 257.9`, UTF-16LE).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::IFlags;
use rustix::io::Errno;
use rustix::mount::MountFlags;

/// Where sysfs shows the firmware's UEFI interfaces; absent when the machine did not boot
/// through UEFI.
pub const EFI_DIR: &str = "/sys/firmware/efi";
/// Where efivarfs is mounted (sysfs provides the empty mount point).
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// `EFI_VARIABLE_NON_VOLATILE`: the variable survives a power cycle.
pub const NON_VOLATILE: u32 = 0x1;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`: the boot loader can read it.
pub const BOOTSERVICE_ACCESS: u32 = 0x2;
/// `EFI_VARIABLE_RUNTIME_ACCESS`: the running OS can read it (efivarfs shows it).
pub const RUNTIME_ACCESS: u32 = 0x4;
/// The attributes of every variable storage-init writes (`0x7`), those systemd-boot's are set
/// with.
pub const ATTRIBUTES: u32 = NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS;

/// The vendor GUID of systemd's boot loader interface variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The boot loader's name and version, UTF-16LE (set by systemd-boot).
pub const LOADER_INFO: &str = "LoaderInfo";
/// The entry systemd-boot boots next time, once, UTF-16LE with a NUL.
pub const LOADER_ENTRY_ONE_SHOT: &str = "LoaderEntryOneShot";

/// The vendor GUID of initoverlayfs's own variables.
pub const INITOVERLAYFS_GUID: &str = "d1efdcf3-52ba-4d02-a901-f50019e5e910";
/// The FATAL line of the boot that fell back, UTF-8 without a NUL.
pub const INITOVERLAYFS_FATAL: &str = "InitoverlayfsFatal";
/// At most this many bytes of the FATAL line are stored: firmware variable storage is small
/// (often a few tens of KiB for every variable together), and a full store can keep the
/// firmware from writing its own.
pub const FATAL_MAX_BYTES: usize = 1024;

/// `EFIVARFS_MAGIC` from `<linux/magic.h>`.
const EFIVARFS_MAGIC: u32 = 0xde5e_81e4;

/// The bytes of an efivarfs variable file: `attributes` (32-bit little-endian), then `data`.
pub fn encode_variable(attributes: u32, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + data.len());
    bytes.extend_from_slice(&attributes.to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// An efivarfs variable file's attributes and data; `None` for fewer than 4 bytes.
pub fn decode_variable(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (attributes, data) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*attributes), data))
}

/// `text` as UTF-16LE code units ending in a NUL one: a string variable of systemd-boot.
pub fn encode_utf16_nul(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A UTF-16LE string variable's text, up to its first NUL (or its end, without one); `None`
/// for an odd number of bytes or invalid UTF-16.
pub fn decode_utf16(data: &[u8]) -> Option<String> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// The data of `InitoverlayfsFatal` for `line`: its UTF-8 bytes, cut at a character boundary
/// to at most [`FATAL_MAX_BYTES`].
pub fn fatal_data(line: &str) -> &[u8] {
    let mut end = line.len().min(FATAL_MAX_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line.as_bytes()[..end]
}

/// The efivarfs file of the variable `name` of vendor `guid`.
pub fn variable_path(name: &str, guid: &str) -> PathBuf {
    Path::new(EFIVARS).join(format!("{name}-{guid}"))
}

/// Mounts efivarfs on [`EFIVARS`] unless it is mounted there already. The error says why
/// there are no variables to write: no UEFI boot, no runtime variable services, or a kernel
/// without efivarfs.
pub fn mount_efivarfs() -> Result<(), String> {
    if !Path::new(EFI_DIR).exists() {
        return Err(if Path::new("/sys/firmware").exists() {
            format!(
                "the machine did not boot through UEFI (no {EFI_DIR}): there are no EFI variables"
            )
        } else {
            "sysfs is not mounted on /sys: EFI variables cannot be reached".to_owned()
        });
    }
    if !Path::new(EFIVARS).exists() {
        return Err(format!(
            "the firmware offers no EFI variable services to the running kernel (no {EFIVARS})"
        ));
    }
    // The magic is 32 bits; `f_type`'s width and sign vary by architecture.
    if rustix::fs::statfs(EFIVARS).is_ok_and(|fs| fs.f_type as u32 == EFIVARFS_MAGIC) {
        return Ok(());
    }
    match crate::fs_context::mount(
        "efivarfs",
        Path::new(EFIVARS),
        "efivarfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "",
    ) {
        Ok(()) => Ok(()),
        // Mounted there by someone else in the meantime: as good.
        Err(failure) if failure.errno == Errno::BUSY => Ok(()),
        Err(failure) if failure.errno == Errno::NODEV => Err(format!(
            "mounting efivarfs on {EFIVARS}: {failure}: the kernel lacks efivarfs (the mini initramfs needs the efivarfs module)"
        )),
        Err(failure) => Err(format!("mounting efivarfs on {EFIVARS}: {failure}")),
    }
}

/// The data of the variable `name` of vendor `guid` (without its attributes).
pub fn read(name: &str, guid: &str) -> io::Result<Vec<u8>> {
    let bytes = std::fs::read(variable_path(name, guid))?;
    decode_variable(&bytes)
        .map(|(_, data)| data.to_vec())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "shorter than its attributes"))
}

/// Creates or replaces the variable `name` of vendor `guid` with `data`, with [`ATTRIBUTES`].
pub fn write(name: &str, guid: &str, data: &[u8]) -> io::Result<()> {
    let path = variable_path(name, guid);
    let bytes = encode_variable(ATTRIBUTES, data);
    clear_immutable(&path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        // The write replaces the variable whole; truncating would only touch the inode's size.
        .truncate(false)
        .mode(0o644)
        .open(&path)?;
    // `File::write` is one write(2): efivarfs takes the whole variable from one call.
    let written = file.write(&bytes)?;
    if written != bytes.len() {
        return Err(io::Error::other(format!(
            "short write: {written} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// Clears the immutable flag efivarfs puts on an existing variable's file, which would refuse
/// the open for writing; nothing to do for a variable that does not exist yet.
fn clear_immutable(path: &Path) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = rustix::fs::ioctl_getflags(&file)?;
    if flags.contains(IFlags::IMMUTABLE) {
        rustix::fs::ioctl_setflags(&file, flags - IFlags::IMMUTABLE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_bytes() {
        assert_eq!(
            encode_variable(ATTRIBUTES, b"ab"),
            [0x07, 0, 0, 0, b'a', b'b']
        );
        assert_eq!(encode_variable(0x8000_0001, &[]), [1, 0, 0, 0x80]);
        assert_eq!(
            decode_variable(&[7, 0, 0, 0, 1, 2]),
            Some((ATTRIBUTES, &[1u8, 2][..]))
        );
        assert_eq!(decode_variable(&[7, 0, 0, 0]), Some((7, &[][..])));
        assert_eq!(decode_variable(&[7, 0, 0]), None);
    }

    #[test]
    fn utf16_strings() {
        assert_eq!(encode_utf16_nul(""), [0, 0]);
        assert_eq!(encode_utf16_nul("a.conf"), b"a\0.\0c\0o\0n\0f\0\0\0");
        // Outside the BMP: a surrogate pair.
        assert_eq!(
            encode_utf16_nul("\u{1F600}"),
            [0x3D, 0xD8, 0x00, 0xDE, 0, 0]
        );
        let entry = "debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf";
        assert_eq!(
            decode_utf16(&encode_utf16_nul(entry)).as_deref(),
            Some(entry)
        );
        assert_eq!(
            decode_utf16(&encode_utf16_nul("systemd-boot 257.9")).as_deref(),
            Some("systemd-boot 257.9")
        );
        // Without a NUL, and with bytes after it.
        assert_eq!(decode_utf16(b"h\0i\0").as_deref(), Some("hi"));
        assert_eq!(decode_utf16(b"h\0\0\0x\0").as_deref(), Some("h"));
        assert_eq!(decode_utf16(b"h\0i"), None);
        // A lone surrogate.
        assert_eq!(decode_utf16(&[0x00, 0xD8, 0, 0]), None);
    }

    #[test]
    fn fatal_data_is_bounded_utf8() {
        assert_eq!(
            fatal_data("storage-init: FATAL: x: y"),
            b"storage-init: FATAL: x: y"
        );
        let long = "é".repeat(FATAL_MAX_BYTES);
        let data = fatal_data(&long);
        assert!(data.len() <= FATAL_MAX_BYTES && data.len() >= FATAL_MAX_BYTES - 1);
        assert!(std::str::from_utf8(data).is_ok());
        let odd = format!("x{long}");
        let data = fatal_data(&odd);
        assert_eq!(data.len(), FATAL_MAX_BYTES - 1);
        assert!(std::str::from_utf8(data).is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(
            variable_path(LOADER_ENTRY_ONE_SHOT, LOADER_GUID),
            Path::new(
                "/sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
            )
        );
        assert_eq!(
            variable_path(INITOVERLAYFS_FATAL, INITOVERLAYFS_GUID),
            Path::new(
                "/sys/firmware/efi/efivars/InitoverlayfsFatal-d1efdcf3-52ba-4d02-a901-f50019e5e910"
            )
        );
    }
}
