//! Kernel command-line splitting and overrides: never panic; quotes are consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::config::{
    Config, Emergency, apply_cmdline, emergency_from_cmdline, parse_config, split_cmdline,
};

/// A config file demanding dm-verity: no command line may loosen it.
const VERITY_CONFIG: &str = "verity_root_hash 5a1f0e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1\nverity_salt -\nverity_data_blocks 8\nfs initoverlayfs.img\n";

fuzz_target!(|line: &str| {
    for param in split_cmdline(line) {
        // Whitespace only separates, outside quotes; quotes themselves never survive.
        assert!(!param.contains('"'), "{param:?}");
    }
    let mut config = Config::default();
    let _ = apply_cmdline(&mut config, line);
    let _ = emergency_from_cmdline(line);

    let (mut locked, _) = parse_config(VERITY_CONFIG).expect("a valid config");
    let before = locked.clone();
    if apply_cmdline(&mut locked, line).is_ok() {
        assert_eq!(locked.verity(), before.verity(), "{line:?}");
        assert_eq!(locked.fs, before.fs, "{line:?}");
        assert_eq!(locked.fstype, before.fstype, "{line:?}");
        assert_ne!(locked.emergency, Emergency::Shell, "{line:?}");
    }
});
