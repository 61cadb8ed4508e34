//! Kernel command-line splitting and overrides: never panic; quotes are consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::config::{Config, apply_cmdline, emergency_from_cmdline, split_cmdline};

fuzz_target!(|line: &str| {
    for param in split_cmdline(line) {
        // Whitespace only separates, outside quotes; quotes themselves never survive.
        assert!(!param.contains('"'), "{param:?}");
    }
    let mut config = Config::default();
    let _ = apply_cmdline(&mut config, line);
    let _ = emergency_from_cmdline(line);
});
