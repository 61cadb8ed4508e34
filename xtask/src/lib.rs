//! cargo xtask: the project's automation as plain Rust, one module per task. A library so the
//! VM tests run the very code `cargo xtask vm-test` runs.
//!
//! The modules form layers, lowest first; each depends only on its own layer and those below
//! (`tests/layers.rs` fails on an import that points up, or on a cycle).

// spec: pure values parsed from fixtures/*.toml.
pub mod cells;
pub mod disk_spec;
pub mod pins;

// fixtures: host tools, and the pinned packages fetched, verified and cached.
pub mod bench_content;
pub mod deb;
pub mod debian_tree;
pub mod download;
pub mod dracut_fixture;
pub mod fixture_cache;
pub mod fixtures;
pub mod provision;
pub mod rpm;
pub mod rpm_fixture;
pub mod rpm_repo;

// plan: pure, a cell and its artefacts in, the machine and its milestones out; the machine
// every other boot starts from. It needs nothing of build, whose own VMs use it.
pub mod plan;

// build: a cell's or a benchmark chain's artefacts.
pub mod bench_peers;
pub mod boot_probe;
pub mod dogfood;
pub mod images;
pub mod kernel_install;
pub mod root_storage;
pub mod secure_boot;
pub mod static_build;

// run: the accelerator beyond the testvm crate.
pub mod accel;

// judge: pure readings of what a run left.
pub mod boot_log;
pub mod guest_samples;
pub mod verdict;

// report: pure renderings of judged runs.
pub mod bench_report;
pub mod vm_report;

// tasks: `cargo xtask <task>` and its command line.
pub mod bench_boot;
pub mod bench_storage_init;
pub mod cli;
pub mod dist;
pub mod fuzz;
pub mod matrix_doc;
pub mod test;
pub mod vm_test;
