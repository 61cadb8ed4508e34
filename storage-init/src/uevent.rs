//! The kernel's uevents, read from a `NETLINK_KOBJECT_UEVENT` socket: how storage-init learns,
//! without udev and without polling, that a block device appeared or changed (a disk plugged in
//! late, a medium inserted, a partition table re-read).
//!
//! Invariant: the socket is opened before the coldplug round and the scan of `/sys/class/block`
//! that precede the first wait (see blockdev.rs), so a device added after that scan cannot be
//! missed; one added between the opening and the scan is merely seen twice.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::netlink::{KOBJECT_UEVENT, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, bind, recv, socket_with};

/// The multicast group the kernel sends uevents to (udev listens on group 2, fed by udevd).
const KERNEL_GROUP: u32 = 1;
/// Room for a burst of events while storage-init is busy elsewhere (modules loading add dozens).
/// Forced past `rmem_max`, which PID 1 may do; an overflow is still handled, by a full rescan.
const RECEIVE_BUFFER: usize = 4 << 20;
/// One uevent is at most a page of `KEY=value` pairs (UEVENT_BUFFER_SIZE is 2048).
const MESSAGE_MAX: usize = 8192;

/// A kernel uevent, the fields storage-init uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, ...
    pub action: String,
    /// `block`, `pci`, `usb`, ...
    pub subsystem: String,
    /// The device node's name under /dev, for devices that have one (`vda1`).
    pub devname: Option<String>,
    /// The driver match key, for devices a module could drive.
    pub modalias: Option<String>,
}

impl Uevent {
    /// Parses one message: a `<action>@<devpath>` header, then NUL-separated `KEY=value` pairs.
    /// `None` for anything else, such as udevd's re-broadcasts (`libudev` header).
    pub fn parse(message: &[u8]) -> Option<Uevent> {
        let mut fields = message.split(|&b| b == 0);
        let header = std::str::from_utf8(fields.next()?).ok()?;
        let (action, devpath) = header.split_once('@')?;
        if action.is_empty() || !devpath.starts_with('/') {
            return None;
        }
        let mut event = Uevent {
            action: action.to_owned(),
            ..Uevent::default()
        };
        for field in fields {
            let Ok(field) = std::str::from_utf8(field) else {
                continue;
            };
            match field.split_once('=') {
                Some(("SUBSYSTEM", v)) => event.subsystem = v.to_owned(),
                Some(("DEVNAME", v)) if !v.is_empty() => event.devname = Some(v.to_owned()),
                Some(("MODALIAS", v)) if !v.is_empty() => event.modalias = Some(v.to_owned()),
                _ => {}
            }
        }
        Some(event)
    }

    /// An event after which a block device may hold what is searched for.
    pub fn is_block_device_news(&self) -> bool {
        self.subsystem == "block" && matches!(self.action.as_str(), "add" | "change")
    }
}

/// What one wait on the socket brought.
#[derive(Debug, Default)]
pub struct Received {
    pub events: Vec<Uevent>,
    /// The kernel dropped events (the receive buffer overflowed): only a full rescan is safe.
    pub overflowed: bool,
}

/// The socket the kernel multicasts uevents on.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Fails on a kernel without networking (`CONFIG_NET=n`); the caller then polls.
    pub fn open() -> Result<UeventSocket, Errno> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(KOBJECT_UEVENT),
        )?;
        // Not fatal: the default buffer works, it only overflows sooner (and that is handled).
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, RECEIVE_BUFFER);
        bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        Ok(UeventSocket { fd })
    }

    /// Waits up to `timeout` for events, then returns every event already queued. An empty
    /// result means the timeout passed.
    pub fn wait(&self, timeout: Duration) -> Result<Received, Errno> {
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
        self.drain()
    }

    /// Reads every queued message without blocking.
    fn drain(&self) -> Result<Received, Errno> {
        let mut received = Received::default();
        let mut buffer = vec![0u8; MESSAGE_MAX];
        loop {
            match recv(&self.fd, &mut buffer[..], RecvFlags::DONTWAIT) {
                Ok((_, len)) => received
                    .events
                    .extend(Uevent::parse(&buffer[..len.min(buffer.len())])),
                Err(Errno::AGAIN) => return Ok(received),
                Err(Errno::INTR) => {}
                Err(Errno::NOBUFS) => received.overflowed = true,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(parts: &[&str]) -> Vec<u8> {
        parts.join("\0").into_bytes()
    }

    #[test]
    fn parses_a_kernel_block_event() {
        let event = Uevent::parse(&message(&[
            "add@/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1",
            "ACTION=add",
            "DEVPATH=/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1",
            "SUBSYSTEM=block",
            "MAJOR=254",
            "MINOR=1",
            "DEVNAME=vda1",
            "DEVTYPE=partition",
            "PARTN=1",
            "SEQNUM=1234",
            "",
        ]))
        .unwrap();
        assert_eq!(
            event,
            Uevent {
                action: "add".into(),
                subsystem: "block".into(),
                devname: Some("vda1".into()),
                modalias: None,
            }
        );
        assert!(event.is_block_device_news());
    }

    #[test]
    fn parses_a_modalias_event() {
        let event = Uevent::parse(&message(&[
            "add@/devices/pci0000:00/0000:00:1c.0/0000:01:00.0",
            "SUBSYSTEM=pci",
            "MODALIAS=pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",
        ]))
        .unwrap();
        assert_eq!(event.subsystem, "pci");
        assert!(event.modalias.unwrap().starts_with("pci:v00001AF4"));
        assert!(
            !Uevent::parse(b"add@/devices/x\0SUBSYSTEM=pci")
                .unwrap()
                .is_block_device_news()
        );
    }

    #[test]
    fn block_news_is_add_or_change() {
        let event = |action: &str| Uevent {
            action: action.into(),
            subsystem: "block".into(),
            ..Uevent::default()
        };
        assert!(event("change").is_block_device_news());
        assert!(!event("remove").is_block_device_news());
    }

    #[test]
    fn ignores_what_is_not_a_kernel_event() {
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"@/devices"), None);
        assert_eq!(Uevent::parse(b"add@devices"), None);
        assert_eq!(Uevent::parse(b"\xff@/x"), None);
        // A field that is not UTF-8 is skipped, not the event.
        let event = Uevent::parse(b"add@/x\0DEVNAME=\xff\0SUBSYSTEM=block").unwrap();
        assert_eq!((event.devname, event.subsystem.as_str()), (None, "block"));
    }

    /// Why the real-socket test cannot run, when opening the socket failed for a reason that is
    /// no fault of storage-init: a missing privilege, or a kernel without netlink uevents.
    /// Every other error is a failure.
    fn socket_unavailable(error: Errno) -> Option<String> {
        match error {
            Errno::PERM | Errno::ACCESS => Some(format!(
                "opening a uevent socket was refused ({error}): run the tests as root"
            )),
            Errno::PROTONOSUPPORT | Errno::AFNOSUPPORT => Some(format!(
                "this kernel has no netlink uevent socket ({error}): run the tests on a kernel with CONFIG_NET"
            )),
            _ => None,
        }
    }

    /// Why the real-socket test cannot run, when writing the uevent trigger failed for want of
    /// a privilege: not root, or a sysfs mounted read-only (an unprivileged container). Every
    /// other error is a failure.
    fn trigger_unavailable(error: &std::io::Error) -> Option<String> {
        match Errno::from_io_error(error) {
            Some(Errno::PERM | Errno::ACCESS | Errno::ROFS) => Some(format!(
                "writing a uevent trigger was refused ({error}): run the tests as root, with sysfs writable"
            )),
            _ => None,
        }
    }

    #[test]
    fn only_a_missing_privilege_or_kernel_support_excuses_the_real_socket_test() {
        for (errno, excused) in [
            (Errno::PERM, true),
            (Errno::ACCESS, true),
            (Errno::PROTONOSUPPORT, true),
            (Errno::AFNOSUPPORT, true),
            (Errno::INVAL, false),
            (Errno::NOBUFS, false),
            (Errno::MFILE, false),
            (Errno::ADDRINUSE, false),
        ] {
            assert_eq!(socket_unavailable(errno).is_some(), excused, "{errno}");
        }
        for (errno, excused) in [
            (Errno::PERM, true),
            (Errno::ACCESS, true),
            (Errno::ROFS, true),
            (Errno::NOENT, false),
            (Errno::INVAL, false),
            (Errno::IO, false),
        ] {
            let error = std::io::Error::from_raw_os_error(errno.raw_os_error());
            assert_eq!(trigger_unavailable(&error).is_some(), excused, "{errno}");
        }
    }

    /// The real socket: asking the kernel to re-send `/dev/null`'s uevent (as `udevadm trigger`
    /// does) must arrive as a `change` event naming it.
    #[test]
    fn receives_a_real_kernel_event() {
        let socket = match UeventSocket::open() {
            Ok(socket) => socket,
            Err(e) => match socket_unavailable(e) {
                Some(reason) => return crate::test_tools::skip_or_fail(&reason),
                None => panic!("opening a uevent socket: {e}"),
            },
        };
        let trigger = "/sys/devices/virtual/mem/null/uevent";
        if let Err(e) = std::fs::write(trigger, "change") {
            match trigger_unavailable(&e) {
                Some(reason) => return crate::test_tools::skip_or_fail(&reason),
                None => panic!("writing {trigger}: {e}"),
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let received = socket.wait(Duration::from_millis(500)).unwrap();
            // Other processes may trigger events too: look for ours among them.
            if received.events.iter().any(|e| {
                e.action == "change" && e.subsystem == "mem" && e.devname.as_deref() == Some("null")
            }) {
                return;
            }
        }
        panic!("no change event for /dev/null within 10 s");
    }
}
