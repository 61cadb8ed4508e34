//! The probes and partition-table parsers read bytes a disk (or an attacker) chose: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::{partition, probe};

fuzz_target!(|bytes: &[u8]| {
    let _ = probe::probe(bytes);
    let _ = probe::probe_btrfs(bytes);
    let _ = partition::parse_mbr(bytes);
    if bytes.len() >= 512 {
        let (header, entries) = bytes.split_at(512);
        for block_size in [512, 4096] {
            let _ = partition::gpt_entries_location(header, block_size);
        }
        let _ = partition::parse_gpt_entries(entries, header);
    }
});
