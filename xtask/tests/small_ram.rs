//! A machine whose RAM cannot hold the classic initramfs: 512 MiB of second-stage content on a
//! machine of [`SMALL_RAM_MIB`]. Every chain that loads the whole content into RAM (the
//! classic initramfs, gzip or zstd, and dracut's squash-erofs) must fail to reach
//! `multi-user.target`, and initoverlayfs, which reads the content from /boot as it goes, must
//! reach it. Booted through `bench_boot` (the same disks, firmware and milestones as the
//! benchmark), once per chain; the run's report lands in `target/bench-small-ram/`, its
//! failed-boots table saying how each classic chain failed.
//!
//! How they fail, on Debian 12's 6.12 kernel: the classic initramfs (196 MiB gzip, 144 MiB zstd)
//! is loaded, and the kernel runs out of memory unpacking it ("Out of memory and no killable
//! processes", then "Kernel panic - not syncing: System is deadlocked on memory"); dracut's
//! squash-erofs initramfs (522 MiB) does not even load: the EFI stub cannot allocate it and the
//! firmware gives up on the entry ("Out of Resources"). Each is a fatal console line, not a
//! timeout, and the test asserts that too: a chain that merely crawled would be another finding.

use xshell::Shell;
use xtask::bench_boot::{Options, Profile, SMALL_RAM_MIB, measure};
use xtask::bench_report::Chain;
use xtask::vm_test::project_root;

#[test]
#[ignore = "downloads ~200 MB of content packages, builds 512 MiB initramfs files and boots four \
            machines: 15 minutes and more under TCG; `cargo nextest run --run-ignored all -E \
            'binary(small_ram)'`"]
fn only_initoverlayfs_boots_a_machine_too_small_for_its_initramfs() {
    let root = project_root();
    let sh = Shell::new().unwrap();
    let options = Options {
        dir: "target/bench-small-ram".into(),
        runs: 1,
        sizes: vec!["512M".parse().unwrap()],
        // Unthrottled: what fails here is memory, not patience.
        profiles: vec![Profile::Nvme],
        chains: vec![
            Chain::ClassicGzip,
            Chain::ClassicZstd,
            Chain::SquashErofs,
            Chain::Initoverlayfs,
        ],
        memory_mib: SMALL_RAM_MIB,
        jobs: 1,
        ..Options::default()
    };
    let saved = measure(&sh, &root, &options).unwrap();
    let report = xtask::bench_report::markdown(&saved.info, &saved.samples);
    for chain in &options.chains {
        let sample = saved
            .samples
            .iter()
            .find(|s| s.chain == *chain)
            .unwrap_or_else(|| panic!("no boot of {}\n{report}", chain.name()));
        match chain {
            Chain::Initoverlayfs => assert!(
                sample.passed && sample.guest.multi_user.is_some(),
                "initoverlayfs did not reach multi-user.target in {SMALL_RAM_MIB} MiB: {:?}\n{report}",
                sample.failure
            ),
            peer => {
                assert!(
                    !sample.passed && sample.guest.multi_user.is_none(),
                    "{} reached multi-user.target in {SMALL_RAM_MIB} MiB with 512 MiB of content\n{report}",
                    peer.name()
                );
                let failure = sample.failure.as_deref().unwrap_or_default();
                assert!(
                    !failure.is_empty() && !failure.contains("timed out"),
                    "{} did not fail on a fatal line but: {failure:?}\n{report}",
                    peer.name()
                );
            }
        }
    }
}
