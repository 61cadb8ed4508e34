//! builder's initramfs reader (segment detection, every decompressor, the newc reader): never
//! panics on any file; what it reads, it reads again identically.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Bombs (a few bytes that expand to gigabytes) must hit the bound, not libFuzzer's memory limit.
/// 1 MiB, not more: a bzip2 bomb is decompressed up to the bound, twice, on every execution, and
/// at 64 MiB that left the target at some 300 executions a second.
const MAX_UNPACKED: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let read = |data| builder::initramfs::read_with_limit(data, MAX_UNPACKED);
    if let Ok(first) = read(data) {
        let again = read(data).expect("the same input reads twice");
        assert_eq!(first.entries, again.entries);
        let _ = first.final_entries();
    }
});
