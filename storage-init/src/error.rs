//! The one error type of the boot path: what failed and why, printed as the single
//! `storage-init: FATAL: <what failed>: <why>` line.

use std::fmt;

/// A boot step that failed; the boot cannot go on.
#[derive(Debug)]
pub struct Fatal {
    /// What storage-init was doing, e.g. "mounting /boot (UUID=… on /dev/vda1) read-only".
    pub what: String,
    /// Why it failed, e.g. the errno text, plus what to do when we know it.
    pub why: String,
}

impl Fatal {
    pub fn new(what: impl Into<String>, why: impl fmt::Display) -> Fatal {
        Fatal {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// Attaches "what we were doing" to any displayable error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Fatal>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Fatal> {
        self.map_err(|e| Fatal::new(what(), e))
    }
}
