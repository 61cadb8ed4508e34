//! The module list parser: never panics; what it accepts renders back to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_init::contract::ModuleList;

fuzz_target!(|text: &str| {
    if let Ok(list) = ModuleList::parse(text) {
        assert_eq!(ModuleList::parse(&list.render()), Ok(list));
    }
});
