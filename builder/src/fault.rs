//! Crash points for the install's crash test: with `BUILDER_FAULT_AT=N` in the environment,
//! builder stops dead (`abort`, no cleanup, as a power cut stops it) at the N-th point it
//! passes: after each write, fsync and rename that changes /boot or /etc. Without the variable
//! a point is one relaxed atomic add. `builder/tests/install.rs` stops an install at every
//! point in turn and checks that what is left boots the old chain or the new one, and that
//! `install` run again finishes the job.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms the crash points.
pub const FAULT_AT_ENV: &str = "BUILDER_FAULT_AT";

static PASSED: AtomicU64 = AtomicU64::new(0);

/// The point to stop at, read once.
fn armed() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| std::env::var(FAULT_AT_ENV).ok()?.parse().ok())
}

/// A point where a crash may happen; `what` names it in the last line printed.
pub fn point(what: &str) {
    let passed = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    if armed() == Some(passed) {
        eprintln!("builder: {FAULT_AT_ENV}={passed}: stopping dead {what}");
        std::process::abort();
    }
}
