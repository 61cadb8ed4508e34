//! Boots QEMU machines for tests and benchmarks: typed machines that render their command
//! line, reproducible GPT/ext4 disk images, and a runner that watches the serial console for
//! milestones and writes artifacts.
//!
//! Architecture Invariant: this crate depends on no other crate of the workspace.

pub mod accel;
pub mod disk;
pub mod guid;
pub mod machine;
pub mod run;
#[cfg(test)]
#[path = "../../storage-init/src/test_tools.rs"]
mod test_tools;

pub use guid::Guid;
