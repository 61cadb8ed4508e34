//! cargo xtask: the project's automation as plain Rust, one module per task. A library so the
//! VM tests run the very code `cargo xtask vm-test` runs.

pub mod accel;
pub mod bench_boot;
pub mod bench_content;
pub mod bench_peers;
pub mod bench_report;
pub mod bench_storage_init;
pub mod boot_log;
pub mod boot_probe;
pub mod cells;
pub mod cli;
pub mod deb;
pub mod debian_tree;
pub mod dogfood;
pub mod download;
pub mod dracut_fixture;
pub mod fixtures;
pub mod fuzz;
pub mod guest_samples;
pub mod images;
pub mod matrix_doc;
pub mod provision;
pub mod root_storage;
pub mod rpm;
pub mod rpm_fixture;
pub mod rpm_repo;
pub mod secure_boot;
pub mod static_build;
pub mod test;
pub mod verdict;
pub mod vm_report;
pub mod vm_test;
