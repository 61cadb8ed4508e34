//! The running machine's EFI variables, read (and our own one removed) through efivarfs, which
//! systemd mounts at `/sys/firmware/efi/efivars`: what systemd-boot says it booted and the FATAL line a failed
//! initoverlayfs boot left for the next boot (storage-init's `emergency fallback`). The
//! variables' names and format are storage-init's ([`storage_init::efi_vars`]).

use std::fs;
use std::io;

use storage_init::efi_vars::{self, variable_path};

/// A variable's data (without its attribute word), if it exists and can be read.
fn read(name: &str, guid: &str) -> Option<Vec<u8>> {
    let bytes = fs::read(variable_path(name, guid)).ok()?;
    efi_vars::decode_variable(&bytes).map(|(_, data)| data.to_vec())
}

fn read_string(name: &str) -> Option<String> {
    efi_vars::decode_utf16(&read(name, efi_vars::LOADER_GUID)?)
}

/// systemd-boot's `LoaderInfo`: its name and version, when it booted this machine.
pub fn loader_info() -> Option<String> {
    read_string(efi_vars::LOADER_INFO)
}

/// systemd-boot's `LoaderEntrySelected`: the id of the entry this boot came from.
pub fn loader_entry_selected() -> Option<String> {
    read_string("LoaderEntrySelected")
}

/// The FATAL line the last failed initoverlayfs boot left, if any.
pub fn last_fatal() -> Option<String> {
    let data = read(efi_vars::INITOVERLAYFS_FATAL, efi_vars::INITOVERLAYFS_GUID)?;
    Some(String::from_utf8_lossy(&data).trim_end().to_owned())
}

/// Removes the FATAL line the last failed boot left (a later install has dealt with it).
/// Returns whether there was one. efivarfs marks variables immutable: the flag goes first.
pub fn clear_last_fatal() -> io::Result<bool> {
    let path = variable_path(efi_vars::INITOVERLAYFS_FATAL, efi_vars::INITOVERLAYFS_GUID);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let flags = rustix::fs::ioctl_getflags(&file)?;
    rustix::fs::ioctl_setflags(&file, flags - rustix::fs::IFlags::IMMUTABLE)?;
    drop(file);
    fs::remove_file(&path)?;
    Ok(true)
}
