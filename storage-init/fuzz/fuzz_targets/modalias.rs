//! The modalias glob matcher and the uevent parser: neither panics nor stalls on any input, and
//! a pattern without metacharacters matches exactly the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::modalias::glob_match;
use storage_init::uevent::Uevent;

fuzz_target!(|data: &[u8]| {
    let _ = Uevent::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    let matched = glob_match(pattern, subject);
    if !pattern.contains(['*', '?', '[', '\\']) {
        assert_eq!(matched, pattern == subject, "{pattern:?} vs {subject:?}");
    }
    assert!(glob_match("*", subject));
});
