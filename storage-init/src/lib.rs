//! storage-init: the PID 1 of the initoverlayfs mini initramfs, as a library so the boot logic
//! runs in unit tests and `builder` can write files through the same types storage-init reads.

pub mod config;
pub mod contract;
