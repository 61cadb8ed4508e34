//! The device-mapper ioctls storage-init needs to put a dm-verity device over the image: no
//! libdevmapper, no veritysetup, only `/dev/mapper/control` and the layouts of
//! `<linux/dm-ioctl.h>`. The requests are built in plain byte buffers by pure functions (unit
//! tested); the `unsafe` is the one ioctl call that hands such a buffer to the kernel.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};

pub const CONTROL: &str = "/dev/mapper/control";

/// `sizeof(struct dm_ioctl)`: the header every request starts with.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const TARGET_SPEC: usize = 40;
const NAME_LEN: usize = 128;
const UUID_LEN: usize = 129;
/// Where `name` and `uuid` sit in `struct dm_ioctl`.
const NAME_AT: usize = 48;
const UUID_AT: usize = NAME_AT + NAME_LEN;
/// The interface version we speak: 4.0.0, which every kernel since 2.6 accepts.
const VERSION: [u32; 3] = [4, 0, 0];
/// What the kernel may write back (the target list): generous for a handful of targets.
const REPLY_BYTES: usize = 16 * 1024;

const DM_IOCTL: u8 = 0xfd;
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_REMOVE: u8 = 4;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;
const DM_LIST_VERSIONS: u8 = 13;

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// Resume without freezing the filesystem on it: it is read-only, and erofs has nothing to
/// flush.
const DM_SKIP_LOCKFS_FLAG: u32 = 1 << 10;
/// Remove the device when its last opener closes it, instead of now (Linux 3.13+).
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

/// One request: the header, then its payload, in 8-byte aligned storage (the kernel reads
/// `u64` fields out of it).
struct Request {
    words: Vec<u64>,
    command: u8,
}

impl Request {
    fn new(command: u8, name: &str, flags: u32, payload: &[u8]) -> Request {
        Request::with_uuid(command, name, "", flags, payload)
    }

    fn with_uuid(command: u8, name: &str, uuid: &str, flags: u32, payload: &[u8]) -> Request {
        let mut bytes = header(name, uuid, flags, payload.len());
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().max(HEADER + REPLY_BYTES), 0);
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut le = [0u8; 8];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(le);
        }
        // data_size covers the whole buffer so the kernel may write its reply into it.
        let size = (words.len() * 8) as u32;
        let mut request = Request { words, command };
        request.bytes_mut()[12..16].copy_from_slice(&size.to_ne_bytes());
        request
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: u64 storage viewed as bytes: same length in bytes, no padding, any bit
        // pattern is a valid u8.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.words.len() * 8) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, exclusively borrowed.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.words.len() * 8)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.bytes()[at..at + 4].try_into().expect("4 bytes"))
    }
}

// SAFETY: the buffer starts with a `struct dm_ioctl` whose data_size is the buffer's length, so
// the kernel reads and writes only inside it; the output is read back from the buffer itself.
unsafe impl Ioctl for &mut Request {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::read_write::<[u8; HEADER]>(DM_IOCTL, self.command)
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        self.words.as_mut_ptr().cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut std::ffi::c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// `struct dm_ioctl` for a request on the device `name` (and `uuid`, when creating it) with
/// `payload_len` bytes after it.
fn header(name: &str, uuid: &str, flags: u32, payload_len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER];
    for (i, v) in VERSION.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    bytes[12..16].copy_from_slice(&((HEADER + payload_len) as u32).to_ne_bytes()); // data_size
    bytes[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes()); // data_start
    let target_count: u32 = if payload_len > 0 { 1 } else { 0 };
    bytes[20..24].copy_from_slice(&target_count.to_ne_bytes());
    bytes[28..32].copy_from_slice(&flags.to_ne_bytes());
    for (text, at, len) in [(name, NAME_AT, NAME_LEN), (uuid, UUID_AT, UUID_LEN)] {
        // NUL-terminated within the field.
        let text = &text.as_bytes()[..text.len().min(len - 1)];
        bytes[at..at + text.len()].copy_from_slice(text);
    }
    bytes
}

/// One `struct dm_target_spec` covering `sectors` from 0, followed by its parameters.
fn target(target_type: &str, sectors: u64, params: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; TARGET_SPEC];
    bytes[8..16].copy_from_slice(&sectors.to_ne_bytes());
    let next = (TARGET_SPEC + params.len() + 1).next_multiple_of(8);
    bytes[20..24].copy_from_slice(&(next as u32).to_ne_bytes());
    bytes[24..24 + target_type.len()].copy_from_slice(target_type.as_bytes());
    bytes.extend_from_slice(params.as_bytes());
    bytes.resize(next, 0);
    bytes
}

/// The target names of a `DM_LIST_VERSIONS` reply: `struct dm_target_versions` records
/// (`next`, `version[3]`, NUL-terminated name) chained by `next` offsets.
fn target_names(reply: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0usize;
    while at + 16 < reply.len() {
        let next = u32::from_ne_bytes(reply[at..at + 4].try_into().expect("4 bytes")) as usize;
        let name = &reply[at + 16..];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        names.push(String::from_utf8_lossy(&name[..end]).into_owned());
        if next == 0 {
            break;
        }
        at += next;
    }
    names
}

/// `/dev/mapper/control`, open.
#[derive(Debug)]
pub struct Control {
    file: File,
}

/// A mapped device storage-init created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedDevice {
    pub name: String,
    pub major: u32,
    pub minor: u32,
}

impl MappedDevice {
    /// Its node, which devtmpfs creates as the kernel names the disk (`dm-<minor>`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/dm-{}", self.minor))
    }
}

impl Control {
    pub fn open() -> std::io::Result<Control> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(CONTROL)?;
        Ok(Control { file })
    }

    fn call(&self, request: &mut Request) -> Result<(), Errno> {
        // SAFETY: see the `Ioctl` impl: a well-formed request sized by its own header.
        unsafe { rustix::ioctl::ioctl(self.file.as_fd(), request) }
    }

    /// The kernel's target types (`DM_LIST_VERSIONS`): those built in and those of loaded modules.
    pub fn targets(&self) -> Result<Vec<String>, Errno> {
        let mut request = Request::new(DM_LIST_VERSIONS, "", 0, &[]);
        self.call(&mut request)?;
        if request.u32_at(28) & DM_BUFFER_FULL_FLAG != 0 {
            return Err(Errno::NOSPC);
        }
        let start = request.u32_at(16) as usize;
        Ok(target_names(&request.bytes()[start..]))
    }

    /// Creates the device `name` with `uuid` (whose prefix up to the first `-` names its owner,
    /// as `CRYPT-` and `LVM-` do), without a table yet.
    pub fn create(&self, name: &str, uuid: &str) -> Result<MappedDevice, Errno> {
        let mut request = Request::with_uuid(DM_DEV_CREATE, name, uuid, 0, &[]);
        self.call(&mut request)?;
        let dev = u64::from_ne_bytes(request.bytes()[40..48].try_into().expect("8 bytes"));
        // `huge_encode_dev`: the kernel's new_encode_dev layout.
        let major = ((dev & 0xfff00) >> 8) as u32;
        let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
        Ok(MappedDevice {
            name: name.to_owned(),
            major,
            minor,
        })
    }

    /// Loads a read-only single-target table into `device`'s inactive slot.
    pub fn load(
        &self,
        device: &MappedDevice,
        target_type: &str,
        sectors: u64,
        params: &str,
    ) -> Result<(), Errno> {
        let payload = target(target_type, sectors, params);
        let mut request = Request::new(DM_TABLE_LOAD, &device.name, DM_READONLY_FLAG, &payload);
        self.call(&mut request)
    }

    /// Makes the loaded table live (`DM_DEV_SUSPEND` without the suspend flag is "resume"; the
    /// kernel suspends first itself when swapping a table under a live device).
    pub fn resume(&self, device: &MappedDevice) -> Result<(), Errno> {
        let mut request = Request::new(DM_DEV_SUSPEND, &device.name, DM_SKIP_LOCKFS_FLAG, &[]);
        self.call(&mut request)
    }

    pub fn remove(&self, device: &MappedDevice) -> Result<(), Errno> {
        let mut request = Request::new(DM_DEV_REMOVE, &device.name, 0, &[]);
        self.call(&mut request)
    }

    /// Has the kernel remove `device` once nothing holds it open any more (the filesystem on
    /// it unmounted): a device-mapper device does not go by itself, and one left over would
    /// keep its loop device, and so the image file and /boot's filesystem, busy.
    pub fn remove_when_unused(&self, device: &MappedDevice) -> Result<(), Errno> {
        let mut request = Request::new(DM_DEV_REMOVE, &device.name, DM_DEFERRED_REMOVE, &[]);
        self.call(&mut request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_struct_dm_ioctl() {
        let bytes = header(
            "initoverlayfs",
            "INITOVERLAYFS-verity",
            DM_READONLY_FLAG,
            80,
        );
        assert_eq!(bytes.len(), 312);
        assert_eq!(&bytes[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 392);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 312);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(bytes[28..32].try_into().unwrap()), 1);
        assert_eq!(&bytes[48..62], b"initoverlayfs\0");
        assert_eq!(&bytes[176..197], b"INITOVERLAYFS-verity\0");
        assert!(bytes[197..305].iter().all(|&b| b == 0));
        // The opcode the kernel's _IOWR(0xfd, 9, struct dm_ioctl) gives: DM_TABLE_LOAD.
        assert_eq!(
            opcode::read_write::<[u8; HEADER]>(DM_IOCTL, DM_TABLE_LOAD),
            0xc138_fd09
        );
    }

    #[test]
    fn a_target_spec_carries_its_parameters() {
        let spec = target("verity", 1024, "1 7:0 7:0");
        assert_eq!(spec.len(), 56, "40 + 10 bytes, aligned to 8");
        assert_eq!(u64::from_ne_bytes(spec[0..8].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(spec[8..16].try_into().unwrap()), 1024);
        assert_eq!(u32::from_ne_bytes(spec[20..24].try_into().unwrap()), 56);
        assert_eq!(&spec[24..31], b"verity\0");
        assert_eq!(&spec[40..50], b"1 7:0 7:0\0");
    }

    #[test]
    fn target_lists_are_read() {
        let mut reply = Vec::new();
        for (name, last) in [("striped", false), ("verity", true)] {
            let next: u32 = if last { 0 } else { 24 };
            reply.extend_from_slice(&next.to_ne_bytes());
            reply.extend_from_slice(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
            let mut n = name.as_bytes().to_vec();
            n.resize(8, 0);
            reply.extend_from_slice(&n);
        }
        assert_eq!(target_names(&reply), ["striped", "verity"]);
        assert!(target_names(&[]).is_empty());
    }

    #[test]
    fn requests_have_room_for_the_reply() {
        let request = Request::new(DM_LIST_VERSIONS, "", 0, &[]);
        assert_eq!(request.u32_at(12) as usize, request.bytes().len());
        assert!(request.bytes().len() >= HEADER + REPLY_BYTES);
        assert_eq!(request.u32_at(20), 0, "no targets in a list request");
    }
}
