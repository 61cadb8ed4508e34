//! storage-init: the PID 1 of the initoverlayfs mini initramfs, as a library so the boot logic
//! runs in unit tests and `builder` writes files through the same types storage-init reads.

pub mod blockdev;
pub mod boot;
pub mod coldplug;
pub mod config;
pub mod contract;
pub mod device_mapper;
pub mod efi_vars;
pub mod emergency;
pub mod error;
pub mod fs_context;
pub mod inspect;
pub mod log;
pub mod loop_device;
pub mod modalias;
pub mod modules;
pub mod mounts;
pub mod partition;
pub mod probe;
pub mod switch_root;
#[cfg(test)]
mod test_tools;
#[cfg(test)]
mod test_tools_tests;
pub mod uevent;
pub mod verified_image;
pub mod verity;
