//! Attaching the image to a loop device, for kernels that cannot mount erofs from a file
//! (before Linux 6.12, e.g. Debian 12's 6.1). The only `unsafe` of storage-init: two ioctls
//! whose argument layouts come from `<linux/loop.h>`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, Setter};

use crate::error::Fatal;

/// `<linux/loop.h>`: configure a loop device in one call (Linux 5.8+).
const LOOP_CONFIGURE: Opcode = 0x4C0A;
/// `<linux/loop.h>`: ask /dev/loop-control for a free device number (its return value).
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
/// `lo_flags`: read-only, and detach by itself once the last user (the erofs mount) is gone,
/// so nothing of storage-init keeps /boot busy after the second stage unmounts the image.
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_NAME_SIZE` and `LO_KEY_SIZE`.
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// How many times a device that another process grabbed first (EBUSY) is skipped for the next.
const ATTEMPTS: usize = 16;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The kernel reads exactly this many bytes; a layout slip would configure garbage.
const _: () = assert!(size_of::<LoopConfig>() == 304);

/// `LOOP_CTL_GET_FREE`: no argument, the device number is the return value.
struct GetFree;

// SAFETY: the opcode takes no argument and does not write through the pointer.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::RANGE)
    }
}

/// A loop device holding the image, read-only with autoclear.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    /// Kept open until the image is mounted: autoclear detaches the device when the last
    /// opener goes, so it must outlive the mount call (the mount then holds it).
    _device: File,
}

/// Attaches `image` to a free loop device.
pub fn attach(image: &Path) -> Result<LoopDevice, Fatal> {
    let what = || format!("attaching {} to a loop device", image.display());
    let backing = File::open(image).map_err(|e| Fatal::new(what(), e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open("/dev/loop-control")
        .map_err(|e| {
            Fatal::new(
                what(),
                format!("/dev/loop-control: {e} (is the loop module in the mini initramfs?)"),
            )
        })?;
    let mut last = Errno::BUSY;
    for _ in 0..ATTEMPTS {
        // SAFETY: GetFree matches LOOP_CTL_GET_FREE, which takes no argument.
        let number = unsafe { rustix::ioctl::ioctl(control.as_fd(), GetFree) }.map_err(|e| {
            Fatal::new(
                what(),
                format!("LOOP_CTL_GET_FREE: {}", crate::modules::errno_text(e)),
            )
        })?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&path)
            .map_err(|e| Fatal::new(what(), format!("{}: {e}", path.display())))?;
        match configure(&device, &backing) {
            Ok(()) => {
                return Ok(LoopDevice {
                    path,
                    _device: device,
                });
            }
            // Someone configured it between GET_FREE and now: take the next one.
            Err(Errno::BUSY) => last = Errno::BUSY,
            Err(e) => {
                return Err(Fatal::new(
                    what(),
                    format!(
                        "LOOP_CONFIGURE on {}: {}",
                        path.display(),
                        crate::modules::errno_text(e)
                    ),
                ));
            }
        }
    }
    Err(Fatal::new(
        what(),
        format!(
            "every free loop device was taken first ({ATTEMPTS} tries, last {})",
            crate::modules::errno_text(last)
        ),
    ))
}

fn configure(device: &File, backing: &File) -> rustix::io::Result<()> {
    let fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(backing)).map_err(|_| Errno::BADF)?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LoopConfig is `struct loop_config` (size checked above), what LOOP_CONFIGURE reads.
    unsafe {
        rustix::ioctl::ioctl(
            device.as_fd(),
            Setter::<LOOP_CONFIGURE, LoopConfig>::new(config),
        )
    }
}
