//! The config file parser: never panics; what it accepts renders back to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::config::parse_config;

fuzz_target!(|text: &str| {
    if let Ok((config, _)) = parse_config(text) {
        let (again, warnings) = parse_config(&config.render()).expect("a rendered config parses");
        assert_eq!(again, config);
        assert!(warnings.is_empty());
    }
});
